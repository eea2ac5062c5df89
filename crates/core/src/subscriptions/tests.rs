use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytestring::ByteString;
use edgemq_codec::RetainHandling;

use super::*;
use crate::topic::{matches, parse_subscription_filter};

#[derive(Debug, Clone)]
struct Sub {
    key: SessionKey,
    available: Arc<AtomicBool>,
}

impl Sub {
    fn new(key: SessionKey) -> Self {
        Sub {
            key,
            available: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl SubscriberHandle for Sub {
    fn key(&self) -> SessionKey {
        self.key
    }
    fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }
}

fn filter(s: &str) -> SubscriptionFilter {
    parse_subscription_filter(&ByteString::from(s)).unwrap()
}

fn opts(qos: QoS, id: Option<u32>) -> StoredOptions {
    StoredOptions {
        options: SubscriptionOptions {
            qos,
            ..Default::default()
        },
        subscription_id: id,
    }
}

fn route(
    index: &SubscriptionIndex<Sub>,
    topic: &str,
    publisher: Option<SessionKey>,
) -> Vec<Route<Sub>> {
    let mut out = Vec::new();
    index.route(topic, publisher, &mut out);
    out.sort_by_key(|r| (r.share_group.is_some(), r.subscriber.key));
    out
}

#[test]
fn overlapping_filters_give_one_route_with_max_qos_and_all_ids() {
    let index = SubscriptionIndex::new();
    let s = Sub::new(1);
    index.subscribe(&filter("a/+"), s.clone(), opts(QoS::AtMostOnce, Some(2)));
    index.subscribe(&filter("a/#"), s.clone(), opts(QoS::ExactlyOnce, Some(1)));
    index.subscribe(&filter("a/b"), s, opts(QoS::AtLeastOnce, None));
    index.subscribe(&filter("a/b"), Sub::new(2), opts(QoS::AtMostOnce, None));
    let routes = route(&index, "a/b", None);
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].subscriber.key, 1);
    assert_eq!(routes[0].qos, QoS::ExactlyOnce, "[MQTT-3.3.4-2]");
    assert_eq!(&routes[0].subscription_ids[..], &[1, 2], "[MQTT-3.3.4-3]");
    assert_eq!(routes[1].subscriber.key, 2);
}

#[test]
fn resubscribe_replaces_and_reports_existing() {
    let index = SubscriptionIndex::new();
    assert!(!index.subscribe(&filter("t"), Sub::new(1), opts(QoS::AtMostOnce, None)));
    assert!(
        index.subscribe(&filter("t"), Sub::new(1), opts(QoS::AtLeastOnce, None)),
        "[MQTT-3.8.4-3]"
    );
    assert_eq!(index.len(), 1);
    assert_eq!(route(&index, "t", None)[0].qos, QoS::AtLeastOnce);
}

#[test]
fn no_local_skips_only_the_publisher() {
    let index = SubscriptionIndex::new();
    let mut o = opts(QoS::AtMostOnce, None);
    o.options.no_local = true;
    index.subscribe(&filter("t"), Sub::new(1), o);
    index.subscribe(&filter("t"), Sub::new(2), o);
    let routes = route(&index, "t", Some(1));
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].subscriber.key, 2);
    assert_eq!(route(&index, "t", None).len(), 2);
}

#[test]
fn dollar_topics_and_wildcards() {
    let index = SubscriptionIndex::new();
    index.subscribe(&filter("#"), Sub::new(1), opts(QoS::AtMostOnce, None));
    index.subscribe(&filter("+/x"), Sub::new(2), opts(QoS::AtMostOnce, None));
    index.subscribe(&filter("$SYS/#"), Sub::new(3), opts(QoS::AtMostOnce, None));
    let keys = |t: &str| {
        route(&index, t, None)
            .iter()
            .map(|r| r.subscriber.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys("$SYS/x"), vec![3], "[MQTT-4.7.2-1]");
    assert_eq!(keys("a/x"), vec![1, 2]);
    assert_eq!(keys("a"), vec![1]);
}

#[test]
fn shared_group_round_robin_prefers_available() {
    let index = SubscriptionIndex::new();
    let a = Sub::new(1);
    let b = Sub::new(2);
    index.subscribe(
        &filter("$share/g/t/+"),
        a.clone(),
        opts(QoS::AtLeastOnce, None),
    );
    index.subscribe(
        &filter("$share/g/t/+"),
        b.clone(),
        opts(QoS::AtLeastOnce, None),
    );
    index.subscribe(&filter("t/+"), Sub::new(3), opts(QoS::AtMostOnce, None));
    let mut counts = [0; 3];
    for _ in 0..10 {
        let routes = route(&index, "t/1", None);
        assert_eq!(
            routes.len(),
            2,
            "one member of the group plus the plain subscriber"
        );
        let shared = routes.iter().find(|r| r.share_group.is_some()).unwrap();
        assert_eq!(shared.share_group.as_deref(), Some("g"));
        counts[shared.subscriber.key as usize] += 1;
    }
    assert_eq!(counts[1], 5);
    assert_eq!(counts[2], 5);
    a.available.store(false, Ordering::Relaxed);
    for _ in 0..4 {
        let routes = route(&index, "t/1", None);
        assert_eq!(
            routes
                .iter()
                .find(|r| r.share_group.is_some())
                .unwrap()
                .subscriber
                .key,
            2
        );
    }
    // With nobody available, a member is still chosen (its session queues the message).
    b.available.store(false, Ordering::Relaxed);
    assert!(route(&index, "t/1", None)
        .iter()
        .any(|r| r.share_group.is_some()));
    let other = index.route_shared_excluding("g", "t/9", 2).unwrap();
    assert_eq!(other.subscriber.key, 1);
    assert!(index.route_shared_excluding("nope", "t/9", 2).is_none());
}

#[test]
fn shared_and_plain_subscription_of_one_client_are_separate() {
    let index = SubscriptionIndex::new();
    index.subscribe(
        &filter("$share/g/t"),
        Sub::new(1),
        opts(QoS::AtLeastOnce, None),
    );
    index.subscribe(&filter("t"), Sub::new(1), opts(QoS::AtMostOnce, None));
    assert_eq!(route(&index, "t", None).len(), 2);
}

#[test]
fn unsubscribe_prunes() {
    let index = SubscriptionIndex::new();
    index.subscribe(&filter("a/b/c"), Sub::new(1), opts(QoS::AtMostOnce, None));
    index.subscribe(
        &filter("$share/g/a/b/c"),
        Sub::new(1),
        opts(QoS::AtMostOnce, None),
    );
    assert!(index.unsubscribe(&filter("a/b/c"), 1));
    assert!(!index.unsubscribe(&filter("a/b/c"), 1));
    assert!(!index.unsubscribe(&filter("a/b"), 1));
    assert!(index.unsubscribe(&filter("$share/g/a/b/c"), 1));
    assert!(index.is_empty());
    for shard in &index.shards {
        assert!(read(shard).is_empty(), "empty nodes pruned");
    }
    let _ = RetainHandling::DoNotSend;
}

#[test]
fn route_agrees_with_matches() {
    let filters = [
        "#", "+", "a/#", "a/+", "+/b", "a/b", "/+", "+/+/+", "$SYS/#", "a//b", "+/#", "b/+/#",
    ];
    let topics = [
        "a", "a/b", "a/b/c", "b", "/", "/a", "$SYS/x", "a//b", "b/x/y", "b/x", "$a",
    ];
    let index = SubscriptionIndex::new();
    for (i, f) in filters.iter().enumerate() {
        index.subscribe(&filter(f), Sub::new(i as u64), opts(QoS::AtMostOnce, None));
    }
    for t in topics {
        let got: Vec<u64> = route(&index, t, None)
            .iter()
            .map(|r| r.subscriber.key)
            .collect();
        let want: Vec<u64> = filters
            .iter()
            .enumerate()
            .filter(|(_, f)| matches(f, t))
            .map(|(i, _)| i as u64)
            .collect();
        assert_eq!(got, want, "topic {t}");
    }
}

#[test]
fn concurrent_subscribe_and_route() {
    let index = Arc::new(SubscriptionIndex::new());
    let mut threads = Vec::new();
    for t in 0..4u64 {
        let index = index.clone();
        threads.push(std::thread::spawn(move || {
            for i in 0..500u64 {
                let f = filter(&format!("load/{}/+", i % 7));
                index.subscribe(&f, Sub::new(t * 1000 + i), opts(QoS::AtMostOnce, None));
                let mut out = Vec::new();
                index.route(&format!("load/{}/x", i % 7), None, &mut out);
                assert!(!out.is_empty());
                index.unsubscribe(&f, t * 1000 + i);
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    assert!(index.is_empty());
}

mod prop {
    use proptest::prelude::*;

    use super::*;

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just(String::new()),
            Just("$x".to_string())
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..4)
            .prop_map(|l| l.join("/"))
            .prop_filter("topic names are not empty", |t| !t.is_empty())
    }

    fn filter_str() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(prop_oneof![level(), Just("+".to_string())], 1..4),
            any::<bool>(),
        )
            .prop_map(|(mut l, hash)| {
                if hash {
                    l.push("#".to_string());
                }
                l.join("/")
            })
            .prop_filter("filters are not empty", |f| !f.is_empty())
    }

    proptest! {
        #[test]
        fn route_matches_brute_force(filters in proptest::collection::vec(filter_str(), 1..12), t in topic()) {
            let index = SubscriptionIndex::new();
            for (i, f) in filters.iter().enumerate() {
                index.subscribe(&super::filter(f), Sub::new(i as u64), opts(QoS::AtMostOnce, None));
            }
            let mut got: Vec<u64> = route(&index, &t, None).iter().map(|r| r.subscriber.key).collect();
            got.sort_unstable();
            let mut want: Vec<u64> = filters.iter().enumerate().filter(|(_, f)| matches(f, &t)).map(|(i, _)| i as u64).collect();
            want.sort_unstable();
            prop_assert_eq!(got, want);
        }

        /// Unsubscribing (which prunes nodes and clears a node's wildcard marks) leaves
        /// exactly the remaining filters matching [MQTT-4.7.1-2] [MQTT-4.7.1-3].
        #[test]
        fn route_after_unsubscribes_matches_brute_force(
            filters in proptest::collection::vec(filter_str(), 1..12),
            gone in proptest::collection::vec(any::<bool>(), 12),
            t in topic(),
        ) {
            let index = SubscriptionIndex::new();
            for (i, f) in filters.iter().enumerate() {
                index.subscribe(&super::filter(f), Sub::new(i as u64), opts(QoS::AtMostOnce, None));
            }
            for (i, f) in filters.iter().enumerate().filter(|(i, _)| gone[*i]) {
                index.unsubscribe(&super::filter(f), i as u64);
            }
            let mut got: Vec<u64> = route(&index, &t, None).iter().map(|r| r.subscriber.key).collect();
            got.sort_unstable();
            let mut want: Vec<u64> = filters.iter().enumerate()
                .filter(|(i, f)| !gone[*i] && matches(f, &t)).map(|(i, _)| i as u64).collect();
            want.sort_unstable();
            prop_assert_eq!(got, want);
        }
    }
}

/// No operation recurses once per level: 100,000 levels on a test thread's 2 MiB stack.
#[test]
fn deep_filters_are_stack_safe() {
    let index = SubscriptionIndex::new();
    let deep = "/".repeat(99_999);
    let shared = filter(&format!("$share/g/{deep}"));
    index.subscribe(&filter(&deep), Sub::new(1), opts(QoS::AtMostOnce, None));
    index.subscribe(
        &filter(&format!("{deep}/#")),
        Sub::new(2),
        opts(QoS::AtMostOnce, None),
    );
    index.subscribe(&shared, Sub::new(3), opts(QoS::AtMostOnce, None));
    let plus = format!("+{}", "/+".repeat(99_999));
    index.subscribe(&filter(&plus), Sub::new(4), opts(QoS::AtMostOnce, None));
    assert_eq!(route(&index, &deep, None).len(), 4);
    assert!(index.unsubscribe(&filter(&deep), 1));
    assert!(index.unsubscribe(&shared, 3));
    assert_eq!(route(&index, &deep, None).len(), 2);
    drop(index);
}

#[test]
fn unsubscribe_prunes_only_the_empty_branch() {
    let index = SubscriptionIndex::new();
    index.subscribe(&filter("a/b/c/d"), Sub::new(1), opts(QoS::AtMostOnce, None));
    index.subscribe(&filter("a/b"), Sub::new(2), opts(QoS::AtMostOnce, None));
    index.subscribe(&filter("a/b/x"), Sub::new(3), opts(QoS::AtMostOnce, None));
    assert!(index.unsubscribe(&filter("a/b/c/d"), 1));
    assert!(!index.unsubscribe(&filter("a/b/c/d"), 1));
    assert!(!index.unsubscribe(&filter("a/b/c"), 1));
    assert_eq!(route(&index, "a/b", None).len(), 1);
    assert_eq!(route(&index, "a/b/x", None).len(), 1);
    assert!(index.unsubscribe(&filter("a/b"), 2));
    assert_eq!(route(&index, "a/b/x", None).len(), 1);
    assert!(index.unsubscribe(&filter("a/b/x"), 3));
    assert!(index.is_empty());
    let shard = read(index.shard_for("a"));
    assert!(shard.children.is_empty(), "every empty node pruned");
}

/// [MQTT-3.3.4-3] with many overlapping subscriptions: one route, every identifier once,
/// folded in O(n log n) (20,000 identifiers took 1.6 s when each fold re-sorted).
#[test]
fn many_overlapping_identifiers_fold_into_one_route() {
    let index = SubscriptionIndex::new();
    let s = Sub::new(1);
    let levels = 15;
    for mask in 0u32..20_000 {
        let f: Vec<&str> = (0..levels)
            .map(|i| if mask & (1 << i) != 0 { "+" } else { "l" })
            .collect();
        index.subscribe(
            &filter(&f.join("/")),
            s.clone(),
            opts(QoS::AtMostOnce, Some(mask % 5_000 + 1)),
        );
    }
    let topic = vec!["l"; levels].join("/");
    let routes = route(&index, &topic, None);
    assert_eq!(routes.len(), 1);
    let ids: Vec<u32> = (1..=5_000).collect();
    assert_eq!(&routes[0].subscription_ids[..], &ids[..]);
}

#[test]
fn shared_subscriptions_are_counted_apart() {
    let index = SubscriptionIndex::new();
    let shared = filter("$share/g/t");
    index.subscribe(&filter("t"), Sub::new(1), opts(QoS::AtMostOnce, None));
    index.subscribe(&shared, Sub::new(1), opts(QoS::AtMostOnce, None));
    index.subscribe(&shared, Sub::new(2), opts(QoS::AtMostOnce, None));
    // Subscribing again replaces: not counted twice.
    index.subscribe(&shared, Sub::new(2), opts(QoS::AtLeastOnce, None));
    assert_eq!((index.len(), index.shared_len()), (3, 2));
    assert!(index.unsubscribe(&shared, 1));
    assert!(!index.unsubscribe(&shared, 1));
    assert!(index.unsubscribe(&filter("t"), 1));
    assert_eq!((index.len(), index.shared_len()), (1, 1));
}
