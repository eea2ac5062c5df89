//! Authorization topic patterns: MQTT topic filters in which a whole level may be one of the
//! variables `{principal.clientId}`, `{principal.username}` or
//! `{principal.attributes.NAME}`. Matching (and filling the variables in) is edgemq-security's.

/// One level of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Level {
    Literal(String),
    Plus,
    Hash,
    ClientId,
    Username,
    Attribute(String),
}

/// A topic pattern, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    raw: String,
    levels: Vec<Level>,
}

/// Why a pattern is refused. `level` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("a topic must not be empty")]
    Empty,
    #[error("topic \"{topic}\": '#' must be a whole level and the last one")]
    Hash { topic: String, level: usize },
    #[error("topic \"{topic}\": '+' must be a whole level")]
    Plus { topic: String, level: usize },
    #[error("topic \"{topic}\": a variable must fill a whole level, like {{principal.clientId}}")]
    PartialVariable { topic: String, level: usize },
    #[error(
        "topic \"{topic}\": unknown variable {{{variable}}}; expected {{principal.clientId}}, \
         {{principal.username}} or {{principal.attributes.NAME}}"
    )]
    UnknownVariable {
        topic: String,
        level: usize,
        variable: String,
    },
}

impl TopicPattern {
    pub fn parse(raw: &str) -> Result<TopicPattern, PatternError> {
        if raw.is_empty() {
            return Err(PatternError::Empty);
        }
        let count = raw.split('/').count();
        let levels = raw
            .split('/')
            .enumerate()
            .map(|(i, text)| level(text, i + 1 == count).map_err(|e| e.at(raw, i + 1)))
            .collect::<Result<_, _>>()?;
        Ok(TopicPattern {
            raw: raw.to_owned(),
            levels,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn levels(&self) -> &[Level] {
        &self.levels
    }
}

/// What is wrong with one level, before the topic and position are known.
enum Bad {
    Hash,
    Plus,
    Partial,
    Unknown(String),
}

impl Bad {
    fn at(self, topic: &str, level: usize) -> PatternError {
        let topic = topic.to_owned();
        match self {
            Bad::Hash => PatternError::Hash { topic, level },
            Bad::Plus => PatternError::Plus { topic, level },
            Bad::Partial => PatternError::PartialVariable { topic, level },
            Bad::Unknown(variable) => PatternError::UnknownVariable {
                topic,
                level,
                variable,
            },
        }
    }
}

fn level(text: &str, last: bool) -> Result<Level, Bad> {
    match text {
        "+" => Ok(Level::Plus),
        "#" if last => Ok(Level::Hash),
        _ if text.contains('#') => Err(Bad::Hash),
        // Wildcards inside a variable's braces too: an attribute name with `+` is refused
        // rather than half-read as a wildcard.
        _ if text.contains('+') => Err(Bad::Plus),
        _ if text.contains(['{', '}']) => variable(text),
        _ => Ok(Level::Literal(text.to_owned())),
    }
}

/// `{principal.…}` filling the whole level, with nothing else in braces.
fn variable(text: &str) -> Result<Level, Bad> {
    let name = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .filter(|v| !v.contains(['{', '}']))
        .ok_or(Bad::Partial)?;
    match name {
        "principal.clientId" => Ok(Level::ClientId),
        "principal.username" => Ok(Level::Username),
        _ => match name.strip_prefix("principal.attributes.") {
            Some(attribute) if !attribute.is_empty() => Ok(Level::Attribute(attribute.to_owned())),
            _ => Err(Bad::Unknown(name.to_owned())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(raw: &str) -> Vec<Level> {
        TopicPattern::parse(raw).unwrap().levels().to_vec()
    }

    #[test]
    fn wildcards_variables_and_literals() {
        assert_eq!(
            levels("t/{principal.attributes.floor}/{principal.clientId}/+/#"),
            [
                Level::Literal("t".into()),
                Level::Attribute("floor".into()),
                Level::ClientId,
                Level::Plus,
                Level::Hash
            ]
        );
        assert_eq!(levels("#"), [Level::Hash]);
        assert_eq!(
            levels("u/{principal.username}"),
            [Level::Literal("u".into()), Level::Username]
        );
        // Empty levels are levels, as in MQTT.
        assert_eq!(levels("a//b").len(), 3);
        assert_eq!(TopicPattern::parse("a/+").unwrap().as_str(), "a/+");
    }

    #[test]
    fn each_error_with_its_level() {
        let hash = |level| PatternError::Hash {
            topic: "a/#/b".into(),
            level,
        };
        assert_eq!(TopicPattern::parse(""), Err(PatternError::Empty));
        assert_eq!(TopicPattern::parse("a/#/b"), Err(hash(2)));
        assert!(matches!(
            TopicPattern::parse("a/b#"),
            Err(PatternError::Hash { level: 2, .. })
        ));
        assert!(matches!(
            TopicPattern::parse("a/x+"),
            Err(PatternError::Plus { level: 2, .. })
        ));
        for partial in [
            "a/pre{principal.clientId}",
            "{principal.clientId}x",
            "a/{{x}}",
            "a/}",
        ] {
            assert!(
                matches!(
                    TopicPattern::parse(partial),
                    Err(PatternError::PartialVariable { .. })
                ),
                "{partial}"
            );
        }
        for (raw, var) in [
            ("a/{principal.password}", "principal.password"),
            ("a/{principal.attributes.}", "principal.attributes."),
            ("{clientId}", "clientId"),
        ] {
            let Err(PatternError::UnknownVariable { variable, .. }) = TopicPattern::parse(raw)
            else {
                panic!("{raw} must be refused");
            };
            assert_eq!(variable, var);
        }
    }

    /// Where security's parser once read an attribute name, the stricter rule now refuses.
    #[test]
    fn odd_attribute_names_are_refused() {
        assert!(matches!(
            TopicPattern::parse("f/{principal.attributes.a+b}"),
            Err(PatternError::Plus { .. })
        ));
        assert!(matches!(
            TopicPattern::parse("f/{principal.attributes.x}}"),
            Err(PatternError::PartialVariable { .. })
        ));
    }

    #[test]
    fn messages() {
        let msg = |raw: &str| TopicPattern::parse(raw).unwrap_err().to_string();
        assert_eq!(
            msg("a/#/b"),
            "topic \"a/#/b\": '#' must be a whole level and the last one"
        );
        assert_eq!(
            msg("x/{principal.password}"),
            "topic \"x/{principal.password}\": unknown variable {principal.password}; expected \
             {principal.clientId}, {principal.username} or {principal.attributes.NAME}"
        );
        assert_eq!(
            msg("a/pre{principal.clientId}"),
            "topic \"a/pre{principal.clientId}\": a variable must fill a whole level, like \
             {principal.clientId}"
        );
    }
}
