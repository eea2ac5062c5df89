//! Shared by the targets: topic/filter generators biased towards colliding levels (so
//! filters actually match topics), and a reference model of MQTT topic rules written
//! straight from the specification (MQTT 5.0 §4.7, §4.8.2), independent of edgemq_core.
#![allow(dead_code)]

use arbitrary::{Arbitrary, Result, Unstructured};

/// Levels topics are built from: few, so that generated filters and topics collide.
const NAME_LEVELS: &[&str] = &["a", "b", "c", "", "$SYS", "$share", "x y", "é"];
/// Levels filters are built from: the name levels, wildcards and near-wildcards.
const FILTER_LEVELS: &[&str] = &[
    "a", "b", "c", "", "$SYS", "+", "#", "+", "#", "a+", "#b", "$share", "é",
];

fn join(u: &mut Unstructured<'_>, levels: &[&str], max: usize) -> Result<String> {
    let n = u.int_in_range(1..=max)?;
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            out.push('/');
        }
        out.push_str(levels[u.choose_index(levels.len())?]);
    }
    Ok(out)
}

/// A topic name (mostly valid, sometimes any string).
#[derive(Debug, Clone)]
pub struct Topic(pub String);

impl<'a> Arbitrary<'a> for Topic {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(1, 10)? {
            return Ok(Topic(String::arbitrary(u)?));
        }
        Ok(Topic(join(u, NAME_LEVELS, 5)?))
    }
}

/// A topic filter (mostly built from levels, sometimes `$share/{group}/…`, sometimes raw).
#[derive(Debug, Clone)]
pub struct Filter(pub String);

impl<'a> Arbitrary<'a> for Filter {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(1, 10)? {
            return Ok(Filter(String::arbitrary(u)?));
        }
        let body = join(u, FILTER_LEVELS, 5)?;
        if u.ratio(1, 5)? {
            let group = ["g", "h", "", "g+", "#"][u.choose_index(5)?];
            return Ok(Filter(format!("$share/{group}/{body}")));
        }
        Ok(Filter(body))
    }
}

/// Reference: a valid topic name [MQTT-4.7.3-1], [MQTT-4.7.0-1], [MQTT-1.5.4-2].
pub fn ref_valid_name(t: &str) -> bool {
    !t.is_empty() && !t.contains('\0') && !t.contains('+') && !t.contains('#')
}

/// Reference: a valid plain topic filter: `+` alone in its level, `#` alone and last.
pub fn ref_valid_filter(f: &str) -> bool {
    if f.is_empty() || f.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = f.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| match *l {
        "+" => true,
        "#" => i == levels.len() - 1,
        other => !other.contains('+') && !other.contains('#'),
    })
}

/// Reference: `$share/{group}/{filter}` parsing → (group, filter) or None if invalid.
pub fn ref_parse_subscription(raw: &str) -> Option<(Option<String>, String)> {
    if let Some(rest) = raw.strip_prefix("$share/") {
        let (group, filter) = rest.split_once('/')?;
        if group.is_empty() || group.contains('+') || group.contains('#') {
            return None;
        }
        if !ref_valid_filter(filter) {
            return None;
        }
        return Some((Some(group.to_string()), filter.to_string()));
    }
    if raw == "$share" || !ref_valid_filter(raw) {
        return None;
    }
    Some((None, raw.to_string()))
}

/// Reference matcher, recursive over levels (MQTT 4.7.1): `#` matches the parent level and
/// any number of levels below; `+` exactly one level; filters starting with a wildcard never
/// match topics starting with `$` [MQTT-4.7.2-1].
pub fn ref_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    fn rec(f: &[&str], t: &[&str]) -> bool {
        match (f.first(), t.first()) {
            (Some(&"#"), _) => f.len() == 1,
            (None, None) => true,
            (Some(&"+"), Some(_)) => rec(&f[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => rec(&f[1..], &t[1..]),
            _ => false,
        }
    }
    rec(&f, &t)
}
