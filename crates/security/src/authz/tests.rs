//! Table-driven decisions: (rule, principal, action, topic) → allowed?

use std::collections::BTreeMap;

use bytestring::ByteString;

use super::*;

fn principal(client_id: &str, username: Option<&str>, attrs: &[(&str, &str)]) -> Principal {
    Principal {
        client_id: ByteString::from(client_id),
        username: username.map(ByteString::from),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn pats(v: &[&str]) -> Vec<Pattern> {
    v.iter().map(|p| Pattern::parse(p).unwrap()).collect()
}

/// One rule for everyone named below: client "c1", user "u1", or attributes floor=f1.
fn rule(publish: &[&str], subscribe: &[&str]) -> Rule {
    Rule {
        client_ids: vec!["c1".into()],
        usernames: vec!["u1".into()],
        attributes: vec![BTreeMap::from([("floor".to_string(), "f1".to_string())])],
        connect: true,
        connect_client_ids: vec![],
        publish: pats(publish),
        subscribe: pats(subscribe),
    }
}

#[derive(Clone, Copy)]
enum A {
    Pub(&'static str),
    Sub(&'static str),
    Connect,
}

#[test]
fn decision_table() {
    let c1 = principal("c1", None, &[]);
    let u1 = principal("other", Some("u1"), &[]);
    let floor = principal("dev-7", None, &[("floor", "f1"), ("site", "s1")]);
    let stranger = principal("x", Some("nobody"), &[("floor", "f2")]);
    let odd_id = principal("a/b", Some("u1"), &[]);
    let plus_id = principal("+", Some("u1"), &[]);
    let hash_user = principal("h", Some("#"), &[]);
    let empty_attr = principal("e", Some("u1"), &[("floor", "")]);
    let c1_attr = principal("c1", None, &[("org", "contoso")]);

    #[rustfmt::skip]
    let cases: Vec<(&str, Rule, &Principal, A, bool)> = vec![
        // Principal matching (OR of fields; a map needs all its pairs).
        ("client id listed", rule(&["t"], &[]), &c1, A::Pub("t"), true),
        ("user name listed", rule(&["t"], &[]), &u1, A::Pub("t"), true),
        ("attribute map matches", rule(&["t"], &[]), &floor, A::Pub("t"), true),
        ("nobody listed", rule(&["t"], &[]), &stranger, A::Pub("t"), false),
        ("connect granted", rule(&[], &[]), &c1, A::Connect, true),
        ("connect for a stranger", rule(&[], &[]), &stranger, A::Connect, false),
        // Literal and wildcard topics.
        ("exact topic", rule(&["a/b"], &[]), &c1, A::Pub("a/b"), true),
        ("other topic", rule(&["a/b"], &[]), &c1, A::Pub("a/c"), false),
        ("longer topic", rule(&["a/b"], &[]), &c1, A::Pub("a/b/c"), false),
        ("shorter topic", rule(&["a/b"], &[]), &c1, A::Pub("a"), false),
        ("plus one level", rule(&["a/+"], &[]), &c1, A::Pub("a/x"), true),
        ("plus not two levels", rule(&["a/+"], &[]), &c1, A::Pub("a/x/y"), false),
        ("plus matches an empty level", rule(&["a/+"], &[]), &c1, A::Pub("a/"), true),
        ("hash many levels", rule(&["a/#"], &[]), &c1, A::Pub("a/x/y/z"), true),
        ("hash includes the parent", rule(&["a/#"], &[]), &c1, A::Pub("a"), true),
        ("hash everything", rule(&["#"], &[]), &c1, A::Pub("x/y"), true),
        ("empty levels are levels", rule(&["a//b"], &[]), &c1, A::Pub("a//b"), true),
        ("empty level is not a missing level", rule(&["a//b"], &[]), &c1, A::Pub("a/b"), false),
        ("leading slash", rule(&["/telemetry/+"], &[]), &c1, A::Pub("/telemetry/x"), true),
        // $-topics are not matched by leading wildcards [MQTT-4.7.2-1].
        ("hash does not grant $SYS", rule(&["#"], &[]), &c1, A::Pub("$SYS/x"), false),
        ("plus does not grant $SYS", rule(&["+/x"], &[]), &c1, A::Pub("$SYS/x"), false),
        ("$SYS named explicitly", rule(&["$SYS/#"], &[]), &c1, A::Pub("$SYS/broker/x"), true),
        ("subscribe # does not cover $SYS/#", rule(&[], &["#"]), &c1, A::Sub("$SYS/#"), false),
        // Subscribe: the filter must be equal to or narrower than a pattern.
        ("same filter", rule(&[], &["a/+"]), &c1, A::Sub("a/+"), true),
        ("narrower literal", rule(&[], &["a/+"]), &c1, A::Sub("a/b"), true),
        ("wider hash refused", rule(&[], &["a/+"]), &c1, A::Sub("a/#"), false),
        ("plus not covered by literal", rule(&[], &["a/b"]), &c1, A::Sub("a/+"), false),
        ("hash covers hash", rule(&[], &["a/#"]), &c1, A::Sub("a/b/#"), true),
        ("hash covers plus", rule(&[], &["a/#"]), &c1, A::Sub("a/+/c"), true),
        ("hash at root covers anything", rule(&[], &["#"]), &c1, A::Sub("+/+"), true),
        ("filter # not covered by +", rule(&[], &["+"]), &c1, A::Sub("#"), false),
        ("shared subscription by its filter", rule(&[], &["a/+"]), &c1, A::Sub("$share/g/a/b"), true),
        ("shared subscription outside", rule(&[], &["a/+"]), &c1, A::Sub("$share/g/b/c"), false),
        ("publish rule does not grant subscribe", rule(&["a"], &[]), &c1, A::Sub("a"), false),
        ("subscribe rule does not grant publish", rule(&[], &["a"]), &c1, A::Pub("a"), false),
        // Variables fill whole levels with the principal's values.
        ("clientId variable", rule(&["t/{principal.clientId}"], &[]), &c1, A::Pub("t/c1"), true),
        ("clientId variable, other id", rule(&["t/{principal.clientId}"], &[]), &c1, A::Pub("t/c2"), false),
        ("username variable", rule(&["u/{principal.username}/#"], &[]), &u1, A::Pub("u/u1/x"), true),
        ("attribute variable", rule(&["f/{principal.attributes.floor}/+"], &[]), &floor, A::Pub("f/f1/temp"), true),
        ("attribute variable, other floor", rule(&["f/{principal.attributes.floor}/+"], &[]), &floor, A::Pub("f/f2/temp"), false),
        ("attribute subscribe", rule(&[], &["cmd/{principal.attributes.site}/#"]), &floor, A::Sub("cmd/s1/+"), true),
        // Missing or unsafe values never widen access.
        ("missing attribute", rule(&["f/{principal.attributes.building}"], &[]), &floor, A::Pub("f/"), false),
        ("missing attribute, any literal", rule(&["f/{principal.attributes.building}"], &[]), &floor, A::Pub("f/b1"), false),
        ("missing user name", rule(&["u/{principal.username}"], &[]), &c1_attr, A::Pub("u/"), false),
        ("empty attribute value", rule(&["f/{principal.attributes.floor}"], &[]), &empty_attr, A::Pub("f/"), false),
        ("client id with a slash", rule(&["t/{principal.clientId}"], &[]), &odd_id, A::Pub("t/a/b"), false),
        ("client id '+'", rule(&[], &["t/{principal.clientId}"]), &plus_id, A::Sub("t/+"), false),
        ("client id '+' literal topic", rule(&["t/{principal.clientId}"], &[]), &plus_id, A::Pub("t/x"), false),
        ("user name '#'", rule(&[], &["u/{principal.username}"]), &hash_user, A::Sub("u/#"), false),
        ("another pattern still applies", rule(&["t/{principal.attributes.none}", "t/ok"], &[]), &floor, A::Pub("t/ok"), true),
    ];
    assert!(cases.len() >= 40, "{}", cases.len());
    for (name, r, p, a, want) in cases {
        let policy = Policy::new("test", vec![r]);
        let action = match a {
            A::Pub(t) => Action::Publish { topic: t },
            A::Sub(f) => Action::Subscribe { filter: f },
            A::Connect => Action::Connect,
        };
        let got = matches!(policy.decide(p, action), Decision::Allowed { .. });
        assert_eq!(got, want, "{name}: {}", policy.explain(p, action));
        // The per-connection fast path decides the same.
        let prepared = policy.prepare(p);
        assert_eq!(
            policy.authorize_prepared(p, &prepared, action),
            want,
            "{name} (prepared)"
        );
    }
}

#[test]
fn explanations_name_the_rule_or_say_none_matched() {
    let policy = Policy::new(
        "p",
        vec![
            rule(&["a"], &[]),
            Rule {
                client_ids: vec!["c1".into()],
                usernames: vec![],
                attributes: vec![],
                connect: false,
                connect_client_ids: vec![],
                publish: pats(&["b/#"]),
                subscribe: vec![],
            },
        ],
    );
    let c1 = principal("c1", None, &[]);
    assert_eq!(
        policy.explain(&c1, Action::Publish { topic: "b/x" }),
        "allowed by BrokerAuthorization/p rules[1]"
    );
    assert_eq!(
        policy.explain(&c1, Action::Publish { topic: "z" }),
        "denied by BrokerAuthorization/p: no rule matched; rules for this client: rules[0] (Publish on a); rules[1] (Publish on b/#)"
    );
    let stranger = principal("x", None, &[]);
    assert!(policy
        .explain(&stranger, Action::Connect)
        .ends_with("no rule matched (no rule names this client id, user name or attributes)"));
    // Counting: explanations do not count; decisions do.
    let _ = policy.decide(&c1, Action::Publish { topic: "a" });
    let _ = policy.decide(&c1, Action::Publish { topic: "z" });
    assert_eq!(policy.counters(), (vec![1, 0], 1));
}

#[test]
fn patterns_reject_partial_variables() {
    assert!(Pattern::parse("a/pre{principal.clientId}").is_err());
    assert!(Pattern::parse("a/#/b").is_err());
    assert!(Pattern::parse("a/b+").is_err());
    assert!(Pattern::parse("{principal.attributes.x}/#").is_ok());
}

/// Patterns security once compiled although the configuration loader refused them: the
/// one parser now refuses them here too (fail closed).
#[test]
fn patterns_check_refused_are_refused_here() {
    for raw in [
        "",
        "f/{principal.attributes.a+b}",
        "f/{principal.attributes.x}}",
        "f/{principal.attributes.{x}",
    ] {
        assert!(Pattern::parse(raw).is_err(), "{raw:?}");
    }
}

#[test]
fn connect_client_ids_narrow_the_connect_grant() {
    let mut r = rule(&[], &[]);
    r.connect_client_ids = vec!["c*".into(), "exact-{principal.username}".into()];
    let policy = Policy::new("p", vec![r]);
    let ok = |id: &str, user: Option<&str>| {
        let mut p = principal(id, user, &[("floor", "f1")]);
        p.client_id = ByteString::from(id);
        matches!(policy.decide(&p, Action::Connect), Decision::Allowed { .. })
    };
    assert!(ok("c1", None));
    assert!(ok("c-anything", None));
    assert!(ok("exact-u1", Some("u1")));
    assert!(!ok("exact-u2", Some("u1")));
    assert!(!ok("d1", None));
    assert!(!ok("exact-", None), "a missing user name never matches");
}
