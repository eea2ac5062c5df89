//! The SUBSCRIBE / UNSUBSCRIBE rules of `subscribe`: each test names its statement.

use bytestring::ByteString;

use edgemq_codec::{ProtocolVersion, QoS, ReasonCode, RetainHandling, SubscriptionOptions};

use super::*;

fn limits() -> Limits {
    Limits {
        max_filters_per_packet: 2,
        max_topic_levels: 3,
        max_subscriptions_per_session: 2,
        max_subscriptions: 3,
        maximum_qos: QoS::AtLeastOnce,
        ..Limits::default()
    }
}

fn raw(s: &str) -> ByteString {
    ByteString::from(s)
}

fn opts() -> SubscriptionOptions {
    SubscriptionOptions::default()
}

#[test]
fn mqtt_4_7_1_an_invalid_filter_is_0x8f_in_v5_and_0x80_in_v3() {
    for bad in ["a/#/b", "a+", "$share/g", "$share//a", ""] {
        let r = check(0, &raw(bad), &opts(), &limits())
            .unwrap()
            .unwrap_err();
        assert!(matches!(r, Refusal::Invalid(_)), "{bad}");
        assert_eq!(
            r.suback(ProtocolVersion::V5),
            ReasonCode::TopicFilterInvalid
        );
        // [MQTT-3.9.3-2] v3 has one failure code.
        assert_eq!(
            r.suback(ProtocolVersion::V3_1_1),
            ReasonCode::UnspecifiedError
        );
    }
}

#[test]
fn a_filter_deeper_than_the_limit_is_refused_and_counted() {
    let r = check(0, &raw("a/b/c/d"), &opts(), &limits())
        .unwrap()
        .unwrap_err();
    assert_eq!(r, Refusal::TooDeep);
    assert_eq!(r.limit(), Some(Limit::TopicLevels));
    // The depth of a shared subscription is its filter's.
    assert!(check(0, &raw("$share/g/a/b/c"), &opts(), &limits())
        .unwrap()
        .is_ok());
}

#[test]
fn filters_beyond_the_count_per_packet_get_0x97() {
    let r = check(2, &raw("a"), &opts(), &limits())
        .unwrap()
        .unwrap_err();
    assert_eq!(r, Refusal::BeyondCount);
    assert_eq!(r.suback(ProtocolVersion::V5), ReasonCode::QuotaExceeded);
    assert_eq!(
        check_unsubscribe(2, &raw("a"), &limits()),
        Err(Refusal::BeyondCount)
    );
    assert_eq!(
        Refusal::BeyondCount.unsuback(),
        ReasonCode::UnspecifiedError
    );
}

#[test]
fn mqtt_3_8_3_4_no_local_on_a_shared_subscription_is_a_protocol_error() {
    let no_local = SubscriptionOptions {
        no_local: true,
        ..opts()
    };
    let v = check(0, &raw("$share/g/a"), &no_local, &limits()).unwrap_err();
    assert_eq!(v.reason, ReasonCode::ProtocolError);
    assert!(check(0, &raw("a"), &no_local, &limits()).unwrap().is_ok());
}

#[test]
fn new_subscriptions_within_the_session_and_broker_budgets_replacements_always() {
    let l = limits();
    assert_eq!(within_budgets(false, 1, 0, &l), Ok(()));
    assert_eq!(within_budgets(false, 2, 0, &l), Err(Refusal::BeyondSession));
    assert_eq!(within_budgets(false, 0, 3, &l), Err(Refusal::BeyondBroker));
    assert_eq!(within_budgets(true, 2, 3, &l), Ok(()), "a replacement");
    assert_eq!(
        Refusal::BeyondSession.suback(ProtocolVersion::V5),
        ReasonCode::QuotaExceeded
    );
}

#[test]
fn mqtt_3_2_2_9_the_granted_qos_is_at_most_maximum_qos() {
    assert_eq!(granted(QoS::ExactlyOnce, &limits()), QoS::AtLeastOnce);
    assert_eq!(granted(QoS::AtMostOnce, &limits()), QoS::AtMostOnce);
}

#[test]
fn mqtt_3_3_1_9_to_11_retain_handling_decides_whether_retained_messages_follow() {
    let plain = check(0, &raw("a/+"), &opts(), &limits()).unwrap().unwrap();
    let shared = check(0, &raw("$share/g/a"), &opts(), &limits())
        .unwrap()
        .unwrap();
    assert!(sends_retained(
        &plain,
        RetainHandling::SendOnSubscribe,
        true
    ));
    assert!(sends_retained(&plain, RetainHandling::SendIfNew, false));
    assert!(!sends_retained(&plain, RetainHandling::SendIfNew, true));
    assert!(!sends_retained(&plain, RetainHandling::DoNotSend, false));
    // §4.8.2: no retained messages to a shared subscription.
    assert!(!sends_retained(
        &shared,
        RetainHandling::SendOnSubscribe,
        false
    ));
}

#[test]
fn mqtt_3_11_3_an_unsubscribe_filter_that_is_not_valid_names_no_subscription() {
    assert_eq!(check_unsubscribe(0, &raw("a/#/b"), &limits()), Ok(()));
    assert_eq!(
        check_unsubscribe(0, &raw("a/b/c/d"), &limits()),
        Err(Refusal::TooDeep)
    );
    assert_eq!(Refusal::TooDeep.unsuback(), ReasonCode::TopicFilterInvalid);
}

#[test]
fn a_tally_counts_each_kind_and_keeps_the_first() {
    let mut t = Tally::default();
    t.note(
        &raw("x/#/y"),
        Refusal::Invalid(crate::topic::TopicError::Empty),
    );
    t.note(&raw("deep"), Refusal::TooDeep);
    t.note(&raw("denied"), Refusal::NotAuthorized);
    assert_eq!(t.total(), 2, "denials are the policy's to log");
    assert_eq!(t.first.as_ref().map(|(r, _)| r.as_ref()), Some("x/#/y"));
    assert_eq!(t.by_limit()[0], (Limit::TopicLevels, 1));
}
