//! The rules of SUBSCRIBE and UNSUBSCRIBE, free of I/O: which filters are refused and with
//! which code, what is granted, and whether retained messages follow. The broker asks the
//! authorization policy and the subscription index and carries out the result.

use bytestring::ByteString;

use edgemq_codec::{ProtocolVersion, QoS, ReasonCode, RetainHandling, SubscriptionOptions};

use crate::limits::{Limit, Limits};
use crate::protocol::Violation;
use crate::topic::{level_count, parse_subscription_filter, SubscriptionFilter, TopicError};

/// Why one filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a valid filter [MQTT-4.7.1], [MQTT-4.8.2-1].
    Invalid(TopicError),
    /// Deeper than `max_topic_levels`.
    TooDeep,
    /// Beyond `max_filters_per_packet` in its packet.
    BeyondCount,
    /// A new subscription beyond `max_subscriptions_per_session`.
    BeyondSession,
    /// A new subscription beyond `max_subscriptions` in the broker.
    BeyondBroker,
    /// The authorization policy denies it.
    NotAuthorized,
}

impl Refusal {
    /// Its SUBACK code: v5's own [MQTT-3.9.3], v3's one failure code 0x80 [MQTT-3.9.3-2].
    pub fn suback(self, version: ProtocolVersion) -> ReasonCode {
        if !version.is_v5() {
            return ReasonCode::UnspecifiedError;
        }
        match self {
            Refusal::Invalid(_) | Refusal::TooDeep => ReasonCode::TopicFilterInvalid,
            Refusal::BeyondCount | Refusal::BeyondSession | Refusal::BeyondBroker => {
                ReasonCode::QuotaExceeded
            }
            Refusal::NotAuthorized => ReasonCode::NotAuthorized,
        }
    }

    /// Its UNSUBACK code (v5 only: a v3 UNSUBACK has none).
    pub fn unsuback(self) -> ReasonCode {
        match self {
            Refusal::BeyondCount => ReasonCode::UnspecifiedError,
            Refusal::NotAuthorized => ReasonCode::NotAuthorized,
            _ => ReasonCode::TopicFilterInvalid,
        }
    }

    /// The limit it is counted under, if one refused it.
    pub fn limit(self) -> Option<Limit> {
        match self {
            Refusal::TooDeep => Some(Limit::TopicLevels),
            Refusal::BeyondCount => Some(Limit::FiltersPerPacket),
            Refusal::BeyondSession => Some(Limit::SubscriptionsPerSession),
            Refusal::BeyondBroker => Some(Limit::Subscriptions),
            Refusal::Invalid(_) | Refusal::NotAuthorized => None,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(e) => write!(f, "{e}"),
            Refusal::TooDeep => write!(f, "deeper than max-topic-levels"),
            Refusal::BeyondCount => write!(f, "beyond max-filters-per-packet"),
            Refusal::BeyondSession => write!(f, "beyond max-subscriptions-per-session"),
            Refusal::BeyondBroker => write!(f, "beyond max-subscriptions"),
            Refusal::NotAuthorized => write!(f, "not authorized"),
        }
    }
}

/// The `index`th filter of a SUBSCRIBE, before authorization: its parsed form, or why it is
/// refused; a violation ends the connection.
pub fn check(
    index: usize,
    raw: &ByteString,
    options: &SubscriptionOptions,
    limits: &Limits,
) -> Result<Result<SubscriptionFilter, Refusal>, Violation> {
    if index >= limits.max_filters_per_packet {
        return Ok(Err(Refusal::BeyondCount));
    }
    let filter = match parse_subscription_filter(raw) {
        Ok(f) => f,
        Err(e) => return Ok(Err(Refusal::Invalid(e))),
    };
    if level_count(&filter.filter) > limits.max_topic_levels {
        return Ok(Err(Refusal::TooDeep));
    }
    if filter.share_group.is_some() && options.no_local {
        return Err(Violation::protocol(
            "[MQTT-3.8.3-4] No Local on a shared subscription",
        ));
    }
    Ok(Ok(filter))
}

/// The `index`th filter of an UNSUBSCRIBE: within the count and the depth. (One that is
/// not a valid filter names no subscription: 0x11 No subscription existed.)
pub fn check_unsubscribe(index: usize, raw: &ByteString, limits: &Limits) -> Result<(), Refusal> {
    if index >= limits.max_filters_per_packet {
        return Err(Refusal::BeyondCount);
    }
    let depth = match parse_subscription_filter(raw) {
        Ok(f) => level_count(&f.filter),
        Err(_) => level_count(raw),
    };
    if depth > limits.max_topic_levels {
        return Err(Refusal::TooDeep);
    }
    Ok(())
}

/// A new subscription (not a replacement of one the session holds) within the session's
/// and the broker's budgets.
pub fn within_budgets(
    replaces: bool,
    session_holds: usize,
    broker_holds: usize,
    limits: &Limits,
) -> Result<(), Refusal> {
    if replaces {
        return Ok(());
    }
    if session_holds >= limits.max_subscriptions_per_session {
        return Err(Refusal::BeyondSession);
    }
    if broker_holds >= limits.max_subscriptions {
        return Err(Refusal::BeyondBroker);
    }
    Ok(())
}

/// The QoS granted: what was asked, up to Maximum QoS [MQTT-3.2.2-9].
pub fn granted(requested: QoS, limits: &Limits) -> QoS {
    requested.min(limits.maximum_qos)
}

/// Whether the retained messages matching a new subscription are sent: by its Retain
/// Handling [MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11]; never to a shared
/// subscription [MQTT-4.8.2-?] (MQTT 5 §4.8.2: retained messages are not sent to one).
pub fn sends_retained(
    filter: &SubscriptionFilter,
    handling: RetainHandling,
    existed: bool,
) -> bool {
    filter.share_group.is_none()
        && match handling {
            RetainHandling::SendOnSubscribe => true,
            RetainHandling::SendIfNew => !existed,
            RetainHandling::DoNotSend => false,
        }
}

/// The refusals of one packet, for one summary line and the counters.
#[derive(Debug, Default)]
pub struct Tally {
    pub invalid: u64,
    pub too_deep: u64,
    pub beyond_count: u64,
    pub beyond_session: u64,
    pub beyond_broker: u64,
    /// The first refused filter and why.
    pub first: Option<(ByteString, Refusal)>,
}

impl Tally {
    /// Note a refusal (authorization denials are logged by the policy, not here).
    pub fn note(&mut self, raw: &ByteString, refusal: Refusal) {
        let counter = match refusal {
            Refusal::Invalid(_) => &mut self.invalid,
            Refusal::TooDeep => &mut self.too_deep,
            Refusal::BeyondCount => &mut self.beyond_count,
            Refusal::BeyondSession => &mut self.beyond_session,
            Refusal::BeyondBroker => &mut self.beyond_broker,
            Refusal::NotAuthorized => return,
        };
        *counter += 1;
        if self.first.is_none() {
            self.first = Some((raw.clone(), refusal));
        }
    }

    pub fn total(&self) -> u64 {
        self.invalid + self.too_deep + self.beyond_count + self.beyond_session + self.beyond_broker
    }

    /// Per limit, how many filters it refused.
    pub fn by_limit(&self) -> [(Limit, u64); 4] {
        [
            (Limit::TopicLevels, self.too_deep),
            (Limit::FiltersPerPacket, self.beyond_count),
            (Limit::SubscriptionsPerSession, self.beyond_session),
            (Limit::Subscriptions, self.beyond_broker),
        ]
    }
}

#[cfg(test)]
#[path = "subscribe_tests.rs"]
mod tests;
