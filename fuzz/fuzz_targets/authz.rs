//! The BrokerAuthorization matcher (edgemq_security::authz): patterns with wildcards and
//! `{principal.*}` variables against topics, filters and principals.
//! Invariants: no panic; `Pattern::parse` accepts exactly the patterns the reference accepts;
//! a publish is allowed iff some publish pattern, with the principal's values substituted,
//! matches the topic (reference matcher); a subscription allowed by a pattern never lets the
//! client receive a topic the pattern does not match (no widening); a literal pattern equal
//! to the topic allows it; `authorize_prepared` agrees with `authorize`.
#![no_main]

#[path = "common.rs"]
mod common;

use arbitrary::Arbitrary;
use bytestring::ByteString;
use common::*;
use edgemq_core::auth::{Action, Authorizer, Principal};
use edgemq_security::authz::{Pattern, Policy, Rule};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum PatternSpec {
    Filter(Filter),
    /// Levels mixing literals, wildcards and variables.
    Levels(Vec<u8>),
    Raw(String),
}

const VAR_LEVELS: &[&str] = &[
    "a",
    "b",
    "",
    "+",
    "#",
    "$SYS",
    "{principal.clientId}",
    "{principal.username}",
    "{principal.attributes.floor}",
    "{principal.attributes.}",
    "{principal.attributes.missing}",
    "{principal.clientid}",
    "x{principal.clientId}",
];

impl PatternSpec {
    fn text(&self) -> String {
        match self {
            PatternSpec::Filter(Filter(f)) => f.clone(),
            PatternSpec::Raw(s) => s.clone(),
            PatternSpec::Levels(v) => v
                .iter()
                .take(6)
                .map(|b| VAR_LEVELS[usize::from(*b) % VAR_LEVELS.len()])
                .collect::<Vec<_>>()
                .join("/"),
        }
    }
}

const VALUES: &[&str] = &["a", "b", "", "+", "#", "a/b", "$SYS", "c"];

#[derive(Arbitrary, Debug)]
struct Input {
    client_id: u8,
    username: Option<u8>,
    floor: Option<u8>,
    publish: Vec<PatternSpec>,
    subscribe: Vec<PatternSpec>,
    connect_client_ids: Vec<String>,
    topics: Vec<Topic>,
    filters: Vec<Filter>,
}

fn value(v: u8) -> &'static str {
    VALUES[usize::from(v) % VALUES.len()]
}

/// Reference parse: a non-empty pattern whose levels are each a wildcard, one of the three
/// variable forms (whole level; attribute name non-empty, without `{`, `}`, `+`, `#`) or a
/// literal without `{`, `}`, `+`, `#`; `#` only last.
fn ref_parse(raw: &str) -> bool {
    let levels: Vec<&str> = raw.split('/').collect();
    !raw.is_empty()
        && levels.iter().enumerate().all(|(i, l)| {
            let var = *l == "{principal.clientId}"
                || *l == "{principal.username}"
                || l
                    .strip_prefix("{principal.attributes.")
                    .and_then(|r| r.strip_suffix('}'))
                    .is_some_and(|n| !n.is_empty() && !n.contains(['{', '}', '+', '#']));
            match *l {
                "#" => i == levels.len() - 1,
                "+" => true,
                _ => var || !l.contains(['{', '}', '+', '#']),
            }
        })
}

/// Reference substitution: the pattern with each variable level replaced by the principal's
/// value, or None when a value is missing or could widen the match (empty, `+`, `#`, `/`).
fn ref_resolve(raw: &str, p: &Principal) -> Option<String> {
    let safe = |v: &str| (!v.is_empty() && !v.contains(['+', '#', '/'])).then(|| v.to_string());
    let mut out = Vec::new();
    for l in raw.split('/') {
        let v = if l == "{principal.clientId}" {
            safe(&p.client_id)?
        } else if l == "{principal.username}" {
            safe(p.username.as_deref()?)?
        } else if let Some(name) = l
            .strip_prefix("{principal.attributes.")
            .and_then(|r| r.strip_suffix('}'))
            .filter(|n| !n.is_empty())
        {
            safe(&p.attributes.iter().find(|(k, _)| k == name)?.1)?
        } else {
            l.to_string()
        };
        out.push(v);
    }
    Some(out.join("/"))
}

fuzz_target!(|input: Input| {
    let principal = Principal {
        client_id: ByteString::from(value(input.client_id)),
        username: input.username.map(|u| ByteString::from(value(u))),
        attributes: input
            .floor
            .map(|f| vec![("floor".to_string(), value(f).to_string())])
            .unwrap_or_default(),
    };
    let mut publish = Vec::new();
    let mut publish_raw = Vec::new();
    let mut subscribe = Vec::new();
    let mut subscribe_raw = Vec::new();
    for (specs, patterns, raws) in [
        (&input.publish, &mut publish, &mut publish_raw),
        (&input.subscribe, &mut subscribe, &mut subscribe_raw),
    ] {
        for spec in specs.iter().take(4) {
            let text = spec.text();
            let parsed = Pattern::parse(&text);
            assert_eq!(parsed.is_ok(), ref_parse(&text), "Pattern::parse({text:?}): {parsed:?}");
            if let Ok(p) = parsed {
                assert_eq!(p.as_str(), text);
                patterns.push(p);
                raws.push(text);
            }
        }
    }
    let rule = Rule {
        client_ids: vec![principal.client_id.to_string()],
        usernames: Vec::new(),
        attributes: Vec::new(),
        connect: true,
        connect_client_ids: input.connect_client_ids.iter().take(4).cloned().collect(),
        publish,
        subscribe,
    };
    // A second rule that never applies: its patterns must not leak.
    let other = Rule {
        client_ids: vec!["nobody\u{1}".into()],
        usernames: Vec::new(),
        attributes: vec![Default::default()],
        connect: true,
        connect_client_ids: Vec::new(),
        publish: vec![Pattern::parse("#").expect("#")],
        subscribe: vec![Pattern::parse("#").expect("#")],
    };
    let policy = Policy::new("fuzz", vec![other, rule]);
    let prepared = policy.prepare(&principal);

    let _ = policy.authorize(&principal, Action::Connect);
    let _ = policy.explain(&principal, Action::Connect);

    for Topic(topic) in input.topics.iter().take(8) {
        let action = Action::Publish { topic };
        let allowed = policy.authorize(&principal, action);
        assert_eq!(
            allowed,
            policy.authorize_prepared(&principal, &prepared, action),
            "authorize vs authorize_prepared, publish {topic:?}"
        );
        let _ = policy.explain(&principal, action);
        if ref_valid_name(topic) {
            let want = publish_raw
                .iter()
                .any(|raw| ref_resolve(raw, &principal).is_some_and(|f| ref_matches(&f, topic)));
            assert_eq!(allowed, want, "publish {topic:?} with patterns {publish_raw:?}, {principal:?}");
            // A literal subscribe pattern equal to the topic allows subscribing to it.
            // (Not for `$share/…` names: as a filter that is a shared subscription.)
            let plain = ref_parse_subscription(topic).is_some_and(|(g, _)| g.is_none());
            if plain && subscribe_raw.iter().any(|r| r == topic && !r.contains('{')) {
                assert!(
                    policy.authorize(&principal, Action::Subscribe { filter: topic }),
                    "subscribe {topic:?} with a literal pattern equal to it"
                );
            }
        }
    }
    for Filter(filter) in input.filters.iter().take(8) {
        let action = Action::Subscribe { filter };
        let allowed = policy.authorize(&principal, action);
        assert_eq!(
            allowed,
            policy.authorize_prepared(&principal, &prepared, action),
            "authorize vs authorize_prepared, subscribe {filter:?}"
        );
        let _ = policy.explain(&principal, action);
        let Some((_, plain)) = ref_parse_subscription(filter) else {
            continue;
        };
        if !allowed {
            continue;
        }
        // No widening: every topic the filter matches is matched by an allowed pattern.
        for Topic(topic) in input.topics.iter().take(8) {
            if ref_valid_name(topic) && ref_matches(&plain, topic) {
                let covered = subscribe_raw.iter().any(|raw| {
                    ref_resolve(raw, &principal).is_some_and(|f| ref_matches(&f, topic))
                });
                assert!(
                    covered,
                    "subscribe {filter:?} allowed by {subscribe_raw:?} for {principal:?}, but {topic:?} is not covered"
                );
            }
        }
    }
});
