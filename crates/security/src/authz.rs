//! Authorization: a `BrokerAuthorization` policy over Connect / Publish / Subscribe.
//!
//! Rules only grant; whatever no rule allows is denied. A rule applies to a client when any
//! of its principal fields matches (client id listed, user name listed, or one attribute map
//! entirely among the client's attributes). Topic patterns use MQTT wildcards and the
//! variables `{principal.clientId}`, `{principal.username}`, `{principal.attributes.NAME}`,
//! each filling one whole level; a variable whose value is missing, empty, or contains `+`,
//! `#` or `/` makes its pattern match nothing — it can never widen access.
//!
//! Pure and lock-free: `decide` runs on the publish path. Allow counters per rule are
//! relaxed atomics (for the metrics endpoint to come).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use edgemq_core::auth::{Action, Authorizer, Prepared, Principal};

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub client_ids: Vec<String>,
    pub usernames: Vec<String>,
    pub attributes: Vec<BTreeMap<String, String>>,
    pub connect: bool,
    /// Connect only for these client ids (exact, or a prefix ending in `*`; variables are
    /// replaced first); empty = any client the rule applies to.
    pub connect_client_ids: Vec<String>,
    pub publish: Vec<Pattern>,
    pub subscribe: Vec<Pattern>,
}

use edgemq_formats::topic_pattern::Level;
/// Topic patterns are parsed by edgemq-formats, the parser `check` uses too.
pub use edgemq_formats::topic_pattern::{PatternError, TopicPattern as Pattern};

/// The pattern as it applies to `p`: variables replaced by the principal's values
/// (`telemetry/floor1/dev1`). A variable without a usable value stays as written, with
/// why the pattern matches nothing: `telemetry/{principal.attributes.floor}/dev1 (matches
/// nothing: no attribute floor)`.
fn resolved_for(pattern: &Pattern, p: &Principal) -> String {
    let mut out = Vec::with_capacity(pattern.levels().len());
    let mut missing = Vec::new();
    for (level, raw) in pattern.levels().iter().zip(pattern.as_str().split('/')) {
        match resolve(level, p) {
            Some(Resolved::Literal(s)) => out.push(s.to_string()),
            Some(Resolved::Plus) => out.push("+".into()),
            Some(Resolved::Hash) => out.push("#".into()),
            None => {
                out.push(raw.to_string());
                missing.push(match level {
                    Level::Username => "no usable user name".to_string(),
                    Level::Attribute(name) => format!("no usable attribute {name}"),
                    _ => "the client id cannot fill a level".to_string(),
                });
            }
        }
    }
    let text = out.join("/");
    if missing.is_empty() {
        text
    } else {
        format!("{text} (matches nothing: {})", missing.join(", "))
    }
}

/// One level of a pattern with the principal's value in place of a variable; `None` when
/// the value is missing or could widen the match.
fn resolve<'a>(level: &'a Level, p: &'a Principal) -> Option<Resolved<'a>> {
    Some(match level {
        Level::Literal(s) => Resolved::Literal(s),
        Level::Plus => Resolved::Plus,
        Level::Hash => Resolved::Hash,
        Level::ClientId => Resolved::Literal(safe(&p.client_id)?),
        Level::Username => Resolved::Literal(safe(p.username.as_deref()?)?),
        Level::Attribute(name) => Resolved::Literal(safe(
            p.attributes
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())?,
        )?),
    })
}

/// A substituted value may only name one concrete level.
fn safe(value: &str) -> Option<&str> {
    (!value.is_empty() && !value.contains(['+', '#', '/'])).then_some(value)
}

#[derive(Debug, Clone, Copy)]
enum Resolved<'a> {
    Literal(&'a str),
    Plus,
    Hash,
}

/// Does the pattern, resolved for `p` level by level (no allocation), match a topic name
/// [MQTT-4.7]? Leading wildcards do not match `$`-topics [MQTT-4.7.2-1].
fn matches_topic(pattern: &Pattern, p: &Principal, topic: &str) -> bool {
    if topic.starts_with('$') && matches!(pattern.levels().first(), Some(Level::Plus | Level::Hash))
    {
        return false;
    }
    let mut levels = topic.split('/');
    for level in pattern.levels() {
        match resolve(level, p) {
            None => return false,
            Some(Resolved::Hash) => return true,
            Some(Resolved::Plus) => {
                if levels.next().is_none() {
                    return false;
                }
            }
            Some(Resolved::Literal(s)) => match levels.next() {
                Some(l) if l == s => {}
                _ => return false,
            },
        }
    }
    levels.next().is_none()
}

/// Does the pattern (resolved for `p`) cover every topic `filter` can match (filter equal
/// to or narrower than the pattern)?
fn covers_filter(pattern: &Pattern, p: &Principal, filter: &str) -> bool {
    // A filter starting with a literal `$…` level is only covered by a pattern that names
    // it: leading wildcards never match `$`-topics.
    if filter.starts_with('$')
        && matches!(pattern.levels().first(), Some(Level::Plus | Level::Hash))
    {
        return false;
    }
    let mut f = filter.split('/');
    for level in pattern.levels() {
        match resolve(level, p) {
            None => return false,
            Some(Resolved::Hash) => return true,
            Some(Resolved::Plus) => match f.next() {
                Some("#") | None => return false,
                Some(_) => {}
            },
            Some(Resolved::Literal(s)) => match f.next() {
                Some(l) if l == s => {}
                _ => return false,
            },
        }
    }
    f.next().is_none()
}

/// A Connect `clientIds` entry against the principal's client id.
fn client_id_matches(pattern: &str, p: &Principal) -> bool {
    let mut text = pattern.to_string();
    for (var, value) in [
        ("{principal.clientId}", Some(&*p.client_id)),
        ("{principal.username}", p.username.as_deref()),
    ] {
        if text.contains(var) {
            match value.and_then(safe) {
                Some(v) => text = text.replace(var, v),
                None => return false,
            }
        }
    }
    if text.contains('{') {
        // An attribute or unknown variable: never widen access.
        let mut resolved = text.clone();
        for (k, v) in &p.attributes {
            let var = format!("{{principal.attributes.{k}}}");
            if resolved.contains(&var) {
                match safe(v) {
                    Some(v) => resolved = resolved.replace(&var, v),
                    None => return false,
                }
            }
        }
        if resolved.contains('{') {
            return false;
        }
        text = resolved;
    }
    match text.strip_suffix('*') {
        Some(prefix) => p.client_id.starts_with(prefix),
        None => *p.client_id == *text,
    }
}

/// The topic filter a subscription is authorized on: shared subscriptions by their filter.
fn subscription_filter(filter: &str) -> &str {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map(|(_, f)| f).unwrap_or(""),
        None => filter,
    }
}

impl Rule {
    /// Whether the rule applies to this principal (its fields are OR-ed).
    pub fn applies_to(&self, p: &Principal) -> bool {
        self.client_ids.iter().any(|c| c == &*p.client_id)
            || p.username
                .as_deref()
                .is_some_and(|u| self.usernames.iter().any(|n| n == u))
            || self.attributes.iter().any(|map| {
                !map.is_empty()
                    && map
                        .iter()
                        .all(|(k, v)| p.attributes.iter().any(|(ak, av)| ak == k && av == v))
            })
    }

    /// Whether the rule allows the action (assuming it applies to the principal).
    fn allows(&self, p: &Principal, action: Action<'_>) -> bool {
        match action {
            Action::Connect => {
                self.connect
                    && (self.connect_client_ids.is_empty()
                        || self
                            .connect_client_ids
                            .iter()
                            .any(|pattern| client_id_matches(pattern, p)))
            }
            Action::Publish { topic } => {
                self.publish.iter().any(|pat| matches_topic(pat, p, topic))
            }
            Action::Subscribe { filter } => {
                let filter = subscription_filter(filter);
                !filter.is_empty()
                    && self
                        .subscribe
                        .iter()
                        .any(|pat| covers_filter(pat, p, filter))
            }
        }
    }
}

/// The outcome of a decision, with the rule that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by `rules[index]`.
    Allowed { rule: usize },
    /// No rule allowed it.
    Denied,
}

/// A BrokerAuthorization's policy.
pub struct Policy {
    name: String,
    rules: Vec<Rule>,
    allowed: Vec<AtomicU64>,
    denied: AtomicU64,
}

impl Policy {
    pub fn new(name: impl Into<String>, rules: Vec<Rule>) -> Policy {
        Policy {
            name: name.into(),
            allowed: rules.iter().map(|_| AtomicU64::new(0)).collect(),
            rules,
            denied: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Decide, and count the decision.
    pub fn decide(&self, p: &Principal, action: Action<'_>) -> Decision {
        let decision = self.evaluate(p, action);
        match decision {
            Decision::Allowed { rule } => {
                if let Some(c) = self.allowed.get(rule) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            Decision::Denied => {
                self.denied.fetch_add(1, Ordering::Relaxed);
            }
        }
        decision
    }

    /// Decide without counting (for explanations).
    pub fn evaluate(&self, p: &Principal, action: Action<'_>) -> Decision {
        self.rules
            .iter()
            .position(|rule| rule.applies_to(p) && rule.allows(p, action))
            .map_or(Decision::Denied, |rule| Decision::Allowed { rule })
    }

    /// Human explanation of a decision: which rule allowed it, or why nothing did.
    pub fn explain(&self, p: &Principal, action: Action<'_>) -> String {
        match self.evaluate(p, action) {
            Decision::Allowed { rule } => {
                format!("allowed by BrokerAuthorization/{} rules[{rule}]", self.name)
            }
            Decision::Denied => {
                let applying: Vec<String> = self
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.applies_to(p))
                    .map(|(i, r)| format!("rules[{i}] ({})", r.summary(p, action)))
                    .collect();
                if applying.is_empty() {
                    format!(
                        "denied by BrokerAuthorization/{}: no rule matched (no rule names this client id, user name or attributes)",
                        self.name
                    )
                } else {
                    format!(
                        "denied by BrokerAuthorization/{}: no rule matched; rules for this client: {}",
                        self.name,
                        applying.join("; ")
                    )
                }
            }
        }
    }

    /// (rule index, allowed count) and the number of denials.
    pub fn counters(&self) -> (Vec<u64>, u64) {
        (
            self.allowed
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            self.denied.load(Ordering::Relaxed),
        )
    }
}

impl Rule {
    /// What the rule grants this principal for the kind of `action`, with the principal's
    /// values filled into the patterns.
    fn summary(&self, p: &Principal, action: Action<'_>) -> String {
        let list = |v: &[Pattern]| {
            if v.is_empty() {
                "nothing".to_string()
            } else {
                v.iter()
                    .map(|pat| resolved_for(pat, p))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        match action {
            Action::Connect => format!(
                "Connect {}",
                if self.connect {
                    "allowed"
                } else {
                    "not granted"
                }
            ),
            Action::Publish { .. } => format!("Publish on {}", list(&self.publish)),
            Action::Subscribe { .. } => format!("Subscribe on {}", list(&self.subscribe)),
        }
    }
}

impl Authorizer for Policy {
    fn authorize(&self, principal: &Principal, action: Action<'_>) -> bool {
        matches!(self.decide(principal, action), Decision::Allowed { .. })
    }

    fn prepare(&self, principal: &Principal) -> Prepared {
        Prepared(Some(
            self.rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.applies_to(principal))
                .filter_map(|(i, _)| u32::try_from(i).ok())
                .collect(),
        ))
    }

    fn authorize_prepared(
        &self,
        principal: &Principal,
        prepared: &Prepared,
        action: Action<'_>,
    ) -> bool {
        let Some(applying) = &prepared.0 else {
            return self.authorize(principal, action);
        };
        // Same order as `decide`: the first applying rule that allows decides.
        for &i in applying.iter() {
            let i = i as usize;
            if self
                .rules
                .get(i)
                .is_some_and(|r| r.allows(principal, action))
            {
                if let Some(c) = self.allowed.get(i) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                return true;
            }
        }
        self.denied.fetch_add(1, Ordering::Relaxed);
        false
    }

    fn explain(&self, principal: &Principal, action: Action<'_>) -> String {
        Policy::explain(self, principal, action)
    }
}

#[cfg(test)]
mod tests;
