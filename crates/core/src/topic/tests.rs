use bytestring::ByteString;

use super::*;

/// (filter, topic, matches) — the spec's examples ([MQTT-4.7.1], [MQTT-4.7.2]) and edge cases.
const MATCH_TABLE: &[(&str, &str, bool)] = &[
    ("sport/tennis/player1/#", "sport/tennis/player1", true),
    (
        "sport/tennis/player1/#",
        "sport/tennis/player1/ranking",
        true,
    ),
    (
        "sport/tennis/player1/#",
        "sport/tennis/player1/score/wimbledon",
        true,
    ),
    ("sport/#", "sport", true),
    ("sport/#", "sports", false),
    ("#", "sport", true),
    ("#", "sport/tennis", true),
    ("#", "/", true),
    ("#", "a//b", true),
    ("sport/tennis/+", "sport/tennis/player1", true),
    ("sport/tennis/+", "sport/tennis/player2", true),
    ("sport/tennis/+", "sport/tennis/player1/ranking", false),
    ("sport/+", "sport", false),
    ("sport/+", "sport/", true),
    ("+", "sport", true),
    ("+", "/finance", false),
    ("+/+", "/finance", true),
    ("/+", "/finance", true),
    ("+", "", true),
    ("+/+", "a/b", true),
    ("+/+", "a", false),
    ("+/+", "a/b/c", false),
    ("+/b/+", "a/b/c", true),
    ("+/b/+", "a/x/c", false),
    ("a/+/c", "a//c", true),
    ("a//c", "a//c", true),
    ("a//c", "a/c", false),
    ("/a", "/a", true),
    ("/a", "a", false),
    ("a/", "a/", true),
    ("a/", "a", false),
    ("a/#", "a", true),
    ("a/#", "a/", true),
    ("a/#", "ab", false),
    ("a/+/#", "a/b", true),
    ("a/+/#", "a", false),
    ("a/+/#", "a/b/c/d", true),
    ("+/#", "a", true),
    ("+/#", "/", true),
    ("a/b", "a/b", true),
    ("a/b", "A/b", false),
    ("a/b", "a/b/", false),
    ("a/b/", "a/b", false),
    ("a", "a/b", false),
    ("a/b/c", "a/b", false),
    ("+/+/+", "a/b/c", true),
    ("+/+/+", "a/b", false),
    ("#", "$SYS", false),
    ("#", "$SYS/monitor/Clients", false),
    ("+/monitor/Clients", "$SYS/monitor/Clients", false),
    ("$SYS/#", "$SYS/monitor/Clients", true),
    ("$SYS/#", "$SYS", true),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
    ("$SYS/+", "$SYS/x", true),
    ("$SYS", "$SYS", true),
    ("+", "$SYS", false),
    ("a/$SYS", "a/$SYS", true),
    ("+/$SYS", "a/$SYS", true),
    ("#", "a/$b", true),
    ("$share/x", "$share/x", true),
    ("+/x", "$share/x", false),
    ("sensors/+/temp", "sensors/1/temp", true),
    ("sensors/+/temp", "sensors/1/2/temp", false),
    ("sensors/#", "sensors/a/x", true),
    ("a b/c", "a b/c", true),
    ("ümlaut/+", "ümlaut/ß", true),
    ("ümlaut/+", "umlaut/ß", false),
    ("+/+/#", "a/b", true),
    ("+/+/#", "a", false),
    ("#", "#abc", true),
    ("x/+/z", "x/y/z", true),
    ("x/+/z", "x/y/z/", false),
    ("/", "/", true),
    ("/", "//", false),
    ("//", "//", true),
    ("+/", "/", true),
    ("/+", "/", true),
    ("+/+", "/", true),
    ("a/+", "a/b/", false),
];

#[test]
fn match_table() {
    for (filter, topic, expected) in MATCH_TABLE {
        assert_eq!(
            matches(filter, topic),
            *expected,
            "filter {filter:?} topic {topic:?}"
        );
    }
    assert!(MATCH_TABLE.len() >= 75);
}

#[test]
fn filter_validation() {
    for ok in [
        "#", "+", "a/#", "a/+/b", "+/+", "/", "//", "a//b", "$SYS/#", "+/#", "a/b/c", "$share",
    ] {
        if ok == "$share" {
            continue; // plain filters may be "$share"; the subscription parser rejects it
        }
        assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
    }
    for (bad, err) in [
        ("", TopicError::Empty),
        ("a/#/b", TopicError::BadMultiLevelWildcard),
        ("#/a", TopicError::BadMultiLevelWildcard),
        ("a#", TopicError::BadMultiLevelWildcard),
        ("a/b#", TopicError::BadMultiLevelWildcard),
        ("a+", TopicError::BadSingleLevelWildcard),
        ("+a/b", TopicError::BadSingleLevelWildcard),
        ("a/+b", TopicError::BadSingleLevelWildcard),
        ("a/\0", TopicError::NullCharacter),
    ] {
        assert_eq!(validate_topic_filter(bad), Err(err), "{bad:?}");
    }
}

#[test]
fn name_validation() {
    for ok in ["a", "/", "a/b", "$SYS/x", "a//b", " "] {
        assert_eq!(validate_topic_name(ok), Ok(()), "{ok}");
    }
    assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
    assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
    assert_eq!(validate_topic_name("#"), Err(TopicError::WildcardInName));
    assert_eq!(validate_topic_name("a\0"), Err(TopicError::NullCharacter));
}

#[test]
fn shared_subscriptions() {
    let p = |s: &'static str| parse_subscription_filter(&ByteString::from_static(s));
    let f = p("$share/g1/sensors/+").unwrap();
    assert_eq!(f.share_group.as_deref(), Some("g1"));
    assert_eq!(&f.filter[..], "sensors/+");
    let f = p("$share/g/#").unwrap();
    assert_eq!(&f.filter[..], "#");
    assert_eq!(p("$share").unwrap_err(), TopicError::SharedFilterMissing);
    assert_eq!(p("$share/g").unwrap_err(), TopicError::SharedFilterMissing);
    assert_eq!(p("$share/g/").unwrap_err(), TopicError::SharedFilterMissing);
    assert_eq!(p("$share//x").unwrap_err(), TopicError::BadShareName);
    assert_eq!(p("$share/g+/x").unwrap_err(), TopicError::BadShareName);
    assert_eq!(p("$share/g#/x").unwrap_err(), TopicError::BadShareName);
    assert_eq!(
        p("$share/g/a/#/b").unwrap_err(),
        TopicError::BadMultiLevelWildcard
    );
    let plain = p("$sharefoo/x").unwrap();
    assert!(plain.share_group.is_none());
    assert_eq!(&plain.filter[..], "$sharefoo/x");
    assert!(p("a/+").unwrap().share_group.is_none());
}
