//! Topic names, topic filters and matching ([MQTT-4.7]).
//!
//! Rules enforced: topic names and filters are at least one character [MQTT-4.7.3-1];
//! topic names contain no wildcard [MQTT-4.7.0-1]; `#` stands alone as the last level
//! [MQTT-4.7.1-1]; `+` occupies a whole level [MQTT-4.7.1-2]; filters starting with a
//! wildcard do not match topics starting with `$` [MQTT-4.7.2-1]; empty levels are
//! significant (`a//b`, `/a`); matching is case-sensitive byte-wise.
//! Shared subscriptions: `$share/{ShareName}/{filter}` where ShareName is at least one
//! character and contains no `/`, `+` or `#` [MQTT-4.8.2-1], [MQTT-4.8.2-2], and the filter
//! part is a valid non-empty filter.

/// Why a topic or filter was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("[MQTT-4.7.3-1] topic is empty")]
    Empty,
    #[error("[MQTT-4.7.0-1] wildcard character in a topic name")]
    WildcardInName,
    #[error("[MQTT-4.7.1-1] '#' must be the last level and stand alone")]
    BadMultiLevelWildcard,
    #[error("[MQTT-4.7.1-2] '+' must occupy a whole level")]
    BadSingleLevelWildcard,
    #[error("[MQTT-4.8.2-1] shared subscription share name is empty or contains '/', '+' or '#'")]
    BadShareName,
    #[error("[MQTT-4.8.2-2] shared subscription has no topic filter")]
    SharedFilterMissing,
    #[error("[MQTT-1.5.4-2] topic contains U+0000")]
    NullCharacter,
}

/// A validated subscription filter as written in SUBSCRIBE/UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriptionFilter {
    /// `Some(share name)` for `$share/{group}/{filter}`.
    pub share_group: Option<bytestring::ByteString>,
    /// The topic filter that is matched (without the `$share/{group}/` prefix).
    pub filter: bytestring::ByteString,
}

/// Validate a PUBLISH / will topic name.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Validate a plain topic filter (no `$share/` handling).
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    if filter.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_none() => {}
            "+" => {}
            _ if level.contains('#') => return Err(TopicError::BadMultiLevelWildcard),
            _ if level.contains('+') => return Err(TopicError::BadSingleLevelWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// Parse and validate a SUBSCRIBE/UNSUBSCRIBE filter, recognising `$share/{group}/{filter}`.
/// Note `$share` alone or `$share/group` without a filter is an error; `$sharefoo/x` is an
/// ordinary filter.
pub fn parse_subscription_filter(
    raw: &bytestring::ByteString,
) -> Result<SubscriptionFilter, TopicError> {
    let Some(rest) = raw.strip_prefix("$share/") else {
        if raw.as_ref() as &str == "$share" {
            return Err(TopicError::SharedFilterMissing);
        }
        validate_topic_filter(raw)?;
        return Ok(SubscriptionFilter {
            share_group: None,
            filter: raw.clone(),
        });
    };
    let (group, filter) = rest
        .split_once('/')
        .ok_or(TopicError::SharedFilterMissing)?;
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(TopicError::BadShareName);
    }
    if filter.is_empty() {
        return Err(TopicError::SharedFilterMissing);
    }
    validate_topic_filter(filter)?;
    // Slices of the original string share its buffer: no copy.
    let group_start = "$share/".len();
    let filter_start = group_start + group.len() + 1;
    Ok(SubscriptionFilter {
        share_group: Some(raw.slice_ref(&raw[group_start..group_start + group.len()])),
        filter: raw.slice_ref(&raw[filter_start..]),
    })
}

/// How many levels a topic name or filter has (`a/b` and `/b` have 2). For a shared
/// subscription, pass the filter part.
pub fn level_count(topic: &str) -> usize {
    topic.bytes().filter(|b| *b == b'/').count() + 1
}

/// Does `filter` (valid) match `topic` (valid name)?
pub fn matches(filter: &str, topic: &str) -> bool {
    // Filters starting with a wildcard do not match `$` topics [MQTT-4.7.2-1].
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
