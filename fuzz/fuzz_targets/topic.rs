//! Topic rules against a reference model written from the specification (common.rs):
//! `validate_topic_name`, `validate_topic_filter`, `parse_subscription_filter`, `matches`;
//! then the sharded `SubscriptionIndex` (subscribe / unsubscribe / route) and the
//! `RetainedStore` (set / delete / matching) against a plain list-based model.
#![no_main]

#[path = "common.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use arbitrary::Arbitrary;
use bytes::Bytes;
use bytestring::ByteString;
use common::*;
use edgemq_codec::{QoS, RetainHandling, SubscriptionOptions};
use edgemq_core::message::Message;
use edgemq_core::retained::RetainedStore;
use edgemq_core::subscriptions::{
    Route, Router, StoredOptions, SubscriberHandle, SubscriptionIndex,
};
use edgemq_core::topic::{
    matches, parse_subscription_filter, validate_topic_filter, validate_topic_name,
};
use libfuzzer_sys::fuzz_target;

#[derive(Clone, Debug)]
struct Handle(u64);

impl SubscriberHandle for Handle {
    fn key(&self) -> u64 {
        self.0
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Check the pure functions on one filter and one topic.
    Check(Filter, Topic),
    Subscribe {
        key: u8,
        filter: Filter,
        qos: u8,
        no_local: bool,
        sub_id: Option<u8>,
    },
    Unsubscribe {
        key: u8,
        filter: Filter,
    },
    Route {
        topic: Topic,
        publisher: Option<u8>,
    },
    Retain {
        topic: Topic,
        payload: u8,
    },
    Retained(Filter),
}

/// The model of the index: (group, filter, key) → options.
type Model = BTreeMap<(Option<String>, String, u64), (QoS, bool, Option<u32>)>;

fn qos(v: u8) -> QoS {
    QoS::from_u8(v % 3).unwrap_or_default()
}

fn check_pure(filter: &str, topic: &str) {
    let name_ok = validate_topic_name(topic).is_ok();
    assert_eq!(name_ok, ref_valid_name(topic), "validate_topic_name({topic:?})");
    let filter_ok = validate_topic_filter(filter).is_ok();
    assert_eq!(filter_ok, ref_valid_filter(filter), "validate_topic_filter({filter:?})");
    let parsed = parse_subscription_filter(&ByteString::from(filter))
        .ok()
        .map(|f| (f.share_group.map(|g| g.to_string()), f.filter.to_string()));
    assert_eq!(parsed, ref_parse_subscription(filter), "parse_subscription_filter({filter:?})");
    if filter_ok && name_ok {
        assert_eq!(
            matches(filter, topic),
            ref_matches(filter, topic),
            "matches({filter:?}, {topic:?})"
        );
        // A topic name is a filter that matches exactly itself.
        assert!(matches(topic, topic), "matches({topic:?}, itself)");
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let index: SubscriptionIndex<Handle> = SubscriptionIndex::new();
    let mut model: Model = BTreeMap::new();
    let retained = RetainedStore::new();
    let mut retained_model: BTreeMap<String, Bytes> = BTreeMap::new();
    let now = Instant::now();

    for op in ops.into_iter().take(256) {
        match op {
            Op::Check(Filter(f), Topic(t)) => check_pure(&f, &t),
            Op::Subscribe { key, filter: Filter(f), qos: q, no_local, sub_id } => {
                let Ok(parsed) = parse_subscription_filter(&ByteString::from(f.as_str())) else {
                    continue;
                };
                let key = u64::from(key % 4);
                let options = StoredOptions {
                    options: SubscriptionOptions {
                        qos: qos(q),
                        no_local,
                        retain_as_published: false,
                        retain_handling: RetainHandling::SendOnSubscribe,
                    },
                    subscription_id: sub_id.map(|s| u32::from(s % 4) + 1),
                };
                let model_key = (
                    parsed.share_group.as_ref().map(|g| g.to_string()),
                    parsed.filter.to_string(),
                    key,
                );
                let existed = index.subscribe(&parsed, Handle(key), options);
                let model_existed = model
                    .insert(model_key, (qos(q), no_local, options.subscription_id))
                    .is_some();
                assert_eq!(existed, model_existed, "subscribe({f:?}) existed");
                assert_eq!(index.len(), model.len(), "index.len() after subscribe({f:?})");
            }
            Op::Unsubscribe { key, filter: Filter(f) } => {
                let Ok(parsed) = parse_subscription_filter(&ByteString::from(f.as_str())) else {
                    continue;
                };
                let key = u64::from(key % 4);
                let removed = index.unsubscribe(&parsed, key);
                let model_removed = model
                    .remove(&(
                        parsed.share_group.as_ref().map(|g| g.to_string()),
                        parsed.filter.to_string(),
                        key,
                    ))
                    .is_some();
                assert_eq!(removed, model_removed, "unsubscribe({f:?}, {key}) removed");
                assert_eq!(index.len(), model.len(), "index.len() after unsubscribe({f:?})");
            }
            Op::Route { topic: Topic(t), publisher } => {
                if !ref_valid_name(&t) {
                    continue;
                }
                let publisher = publisher.map(|p| u64::from(p % 4));
                let mut out: Vec<Route<Handle>> = Vec::new();
                index.route(&t, publisher, &mut out);
                check_route(&model, &t, publisher, &out);
            }
            Op::Retain { topic: Topic(t), payload } => {
                if !ref_valid_name(&t) {
                    continue;
                }
                // Payload 0 is the empty payload: deletes [MQTT-3.3.1-6].
                let payload = if payload % 4 == 0 {
                    Bytes::new()
                } else {
                    Bytes::from(vec![payload])
                };
                // Unlimited store: nothing is refused.
                let kept = retained.set(Arc::new(Message::broker_generated(
                    ByteString::from(t.as_str()),
                    payload.clone(),
                    QoS::AtMostOnce,
                    true,
                )));
                assert!(kept.is_ok(), "an unlimited retained store refused {t:?}");
                if payload.is_empty() {
                    retained_model.remove(&t);
                } else {
                    retained_model.insert(t, payload);
                }
                assert_eq!(retained.len(), retained_model.len(), "retained.len()");
            }
            Op::Retained(Filter(f)) => {
                if !ref_valid_filter(&f) {
                    continue;
                }
                let mut out = Vec::new();
                retained.matching(&f, now, &mut out);
                let mut got: Vec<(String, Bytes)> = out
                    .iter()
                    .map(|m| (m.topic.to_string(), m.payload.clone()))
                    .collect();
                got.sort();
                let want: Vec<(String, Bytes)> = retained_model
                    .iter()
                    .filter(|(t, _)| ref_matches(&f, t))
                    .map(|(t, p)| (t.clone(), p.clone()))
                    .collect();
                assert_eq!(got, want, "retained.matching({f:?})");
            }
        }
    }
});

fn check_route(model: &Model, topic: &str, publisher: Option<u64>, out: &[Route<Handle>]) {
    // Non-shared: one route per subscriber with max QoS and the union of identifiers.
    let mut want: BTreeMap<u64, (QoS, BTreeSet<u32>)> = BTreeMap::new();
    // Shared: one route per matching (group, filter) that has members.
    let mut want_shared: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
    for ((group, filter, key), (q, no_local, id)) in model {
        if !ref_matches(filter, topic) {
            continue;
        }
        match group {
            None => {
                if *no_local && Some(*key) == publisher {
                    continue;
                }
                let e = want.entry(*key).or_insert((QoS::AtMostOnce, BTreeSet::new()));
                e.0 = e.0.max(*q);
                e.1.extend(*id);
            }
            Some(g) => {
                want_shared
                    .entry((g.clone(), filter.clone()))
                    .or_default()
                    .insert(*key);
            }
        }
    }
    let mut got: BTreeMap<u64, (QoS, BTreeSet<u32>)> = BTreeMap::new();
    let mut got_shared: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in out {
        match &r.share_group {
            None => {
                let ids: BTreeSet<u32> = r.subscription_ids.iter().copied().collect();
                assert_eq!(
                    ids.len(),
                    r.subscription_ids.len(),
                    "route({topic:?}): duplicate subscription ids {:?}",
                    r.subscription_ids
                );
                let prev = got.insert(r.subscriber.0, (r.qos, ids));
                assert!(prev.is_none(), "route({topic:?}): two routes for subscriber {}", r.subscriber.0);
            }
            Some(g) => got_shared.entry(g.to_string()).or_default().push(r.subscriber.0),
        }
    }
    assert_eq!(got, want, "route({topic:?}, publisher {publisher:?}): non-shared routes");
    // Shared routes: as many per group as matching filters of that group, each to a member.
    let mut want_count: BTreeMap<String, usize> = BTreeMap::new();
    for (g, _) in want_shared.keys() {
        *want_count.entry(g.clone()).or_default() += 1;
    }
    let got_count: BTreeMap<String, usize> =
        got_shared.iter().map(|(g, v)| (g.clone(), v.len())).collect();
    assert_eq!(got_count, want_count, "route({topic:?}): shared routes per group");
    for (g, members) in &got_shared {
        for m in members {
            assert!(
                want_shared.iter().any(|((wg, _), keys)| wg == g && keys.contains(m)),
                "route({topic:?}): shared group {g} routed to non-member {m}"
            );
        }
    }
}
