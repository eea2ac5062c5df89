//! Retained messages owed to SUBSCRIBEs, waiting to be sent after the SUBACK, under the
//! client's window, each at most once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::message::Message;
use crate::session::Delivery;
use edgemq_codec::QoS;

/// A retained message waiting to be sent after a SUBSCRIBE, with what its subscription
/// grants (kept small: a `#` subscription can match every retained message).
pub struct RetainedItem {
    pub message: Arc<Message>,
    pub qos: QoS,
    pub subscription_id: Option<u32>,
}

impl RetainedItem {
    /// The delivery: at the lower of the message's and the subscription's QoS, with RETAIN
    /// set (3.1.1 [MQTT-3.3.1-8]; in v5 Retain Handling decides which are sent).
    pub fn into_delivery(self) -> Delivery {
        let mut subscription_ids = smallvec::SmallVec::new();
        subscription_ids.extend(self.subscription_id);
        Delivery {
            qos: self.message.qos.min(self.qos),
            message: self.message,
            retain: true,
            subscription_ids,
            share_group: None,
            stored: None,
        }
    }
}

/// The retained messages still to send, each at most once: a SUBSCRIBE with thousands of
/// overlapping filters, or many SUBSCRIBEs sent before the client reads, cost one entry per
/// retained message, never one per filter. The backlog is thus bounded by the retained store.
#[derive(Default)]
pub struct RetainedBacklog {
    items: VecDeque<RetainedItem>,
    /// Where each waiting message is, by address (an `Arc` in `items` keeps its address
    /// taken): its position counted from the first item ever added.
    queued: HashMap<usize, u64>,
    /// Items taken from the front so far.
    popped: u64,
}

fn key(message: &Arc<Message>) -> usize {
    Arc::as_ptr(message) as usize
}

impl RetainedBacklog {
    /// Add what one SUBSCRIBE owes: each filter's matches with its grant. A message matched
    /// by several filters of the packet goes once, at the highest QoS granted
    /// [MQTT-3.3.4-2]. One still waiting from an earlier SUBSCRIBE is not added again; it
    /// takes the newer subscription's identifier (re-subscribing replaces a subscription's
    /// options [MQTT-3.8.4-3]) and the higher of the two QoS.
    pub fn add(&mut self, found: impl IntoIterator<Item = RetainedItem>) {
        let mut in_packet: HashSet<usize> = HashSet::new();
        for item in found {
            let k = key(&item.message);
            let fresh = in_packet.insert(k);
            match self.queued.get(&k) {
                Some(&at) => {
                    let kept = &mut self.items[(at - self.popped) as usize];
                    kept.qos = kept.qos.max(item.qos);
                    if fresh {
                        kept.subscription_id = item.subscription_id;
                    }
                }
                None => {
                    self.queued.insert(k, self.popped + self.items.len() as u64);
                    self.items.push_back(item);
                }
            }
        }
    }

    pub fn front(&self) -> Option<&RetainedItem> {
        self.items.front()
    }

    pub fn pop_front(&mut self) -> Option<RetainedItem> {
        let item = self.items.pop_front()?;
        self.popped += 1;
        self.queued.remove(&key(&item.message));
        if self.items.is_empty() {
            // An idle connection keeps no table.
            self.queued = HashMap::new();
        }
        Some(item)
    }

    /// Everything still waiting (the connection is ending).
    pub fn take_all(&mut self) -> VecDeque<RetainedItem> {
        self.queued = HashMap::new();
        self.popped += self.items.len() as u64;
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use bytestring::ByteString;

    use super::*;

    fn retained(topic: &str) -> Arc<Message> {
        Arc::new(Message::broker_generated(
            ByteString::from(topic),
            Bytes::from_static(b"v"),
            QoS::ExactlyOnce,
            true,
        ))
    }

    fn item(message: &Arc<Message>, qos: QoS) -> RetainedItem {
        RetainedItem {
            message: message.clone(),
            qos,
            subscription_id: None,
        }
    }

    fn with_id(mut item: RetainedItem, id: u32) -> RetainedItem {
        item.subscription_id = Some(id);
        item
    }

    /// 3.1.1 [MQTT-3.3.1-8]: the Server MUST set the RETAIN flag to 1 if a message is sent
    /// as a result of a new subscription being made by a Client. It goes at the lower of
    /// the message's and the subscription's QoS, with the subscription's identifier
    /// [MQTT-3.3.4-3].
    #[test]
    fn a_retained_message_sent_on_subscribe_has_retain_set() {
        let message = retained("a");
        let delivery = with_id(item(&message, QoS::AtLeastOnce), 9).into_delivery();
        assert!(delivery.retain);
        assert_eq!(delivery.qos, QoS::AtLeastOnce);
        assert_eq!(&delivery.subscription_ids[..], &[9]);
        let delivery = item(&message, QoS::ExactlyOnce).into_delivery();
        assert_eq!(delivery.qos, QoS::ExactlyOnce);
        let mut qos0 = Message::clone(&message);
        qos0.qos = QoS::AtMostOnce;
        let delivery = item(&Arc::new(qos0), QoS::ExactlyOnce).into_delivery();
        assert_eq!(delivery.qos, QoS::AtMostOnce);
    }

    /// 10,000 overlapping filters in one SUBSCRIBE owe each retained message once, at the
    /// highest QoS granted; a later SUBSCRIBE adds nothing already waiting but gives it its
    /// identifier.
    #[test]
    fn each_message_waits_once() {
        let (a, b) = (retained("a"), retained("b"));
        let mut backlog = RetainedBacklog::default();
        backlog.add((0..10_000).flat_map(|i| {
            let qos = match i {
                7 => QoS::AtLeastOnce,
                _ => QoS::AtMostOnce,
            };
            [
                with_id(item(&a, qos), 1),
                with_id(item(&b, QoS::AtMostOnce), 1),
            ]
        }));
        let first = backlog.pop_front().unwrap();
        assert!(Arc::ptr_eq(&first.message, &a));
        assert_eq!(first.qos, QoS::AtLeastOnce);
        let second = [
            with_id(item(&a, QoS::AtMostOnce), 2),
            with_id(item(&b, QoS::ExactlyOnce), 2),
        ];
        backlog.add(second);
        let sent: Vec<_> = std::iter::from_fn(|| backlog.pop_front())
            .map(|i| (i.message.topic.to_string(), i.qos, i.subscription_id))
            .collect();
        let expected = [
            ("b".to_string(), QoS::ExactlyOnce, Some(2)),
            ("a".to_string(), QoS::AtMostOnce, Some(2)),
        ];
        assert_eq!(sent, expected);
    }
}
