//! Back-pressure: a publisher faster than a live subscriber is slowed to the subscriber's
//! pace (the broker stops reading the publisher's socket) instead of the subscriber's queue
//! overflowing and its policy dropping messages.
//!
//! Nothing here asserts a duration: the subscriber pauses only to let its queue fill, and
//! the assertions are about what arrives.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::time::Duration;

use edgemq_testkit::broker::Broker;
use edgemq_testkit::raw::*;

const MESSAGES: u32 = 20_000;
/// 20,000 × 512 bytes: far more than the socket buffers and the 100-message queue hold.
const PAYLOAD: usize = 512;

fn payload(i: u32) -> Vec<u8> {
    let mut p = i.to_be_bytes().to_vec();
    p.resize(PAYLOAD, b'x');
    p
}

/// A v3.1.1 client subscribed to `bp/t` at QoS 0.
fn subscriber(addr: std::net::SocketAddr, client_id: &str) -> RawClient {
    let mut c = RawClient::v311(addr, client_id);
    c.send(&subscribe(1, None, &[("bp/t", 0)]));
    assert_eq!(
        c.read_packet(),
        vec![0x90, 0x03, 0x00, 0x01, 0x00],
        "SUBACK"
    );
    c
}

/// A publisher thread writing all [`MESSAGES`] at once (blocking while the broker holds it
/// back), then a PINGREQ whose PINGRESP shows the broker has read every PUBLISH before it.
fn publish_all(addr: std::net::SocketAddr, client_id: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut p = RawClient::v311(addr, client_id);
        let mut all = Vec::with_capacity(MESSAGES as usize * (PAYLOAD + 8));
        for i in 0..MESSAGES {
            all.extend(publish_v311("bp/t", 0, 0, &payload(i)));
        }
        p.send(&all);
        p.send(&[0xC0, 0x00]);
        p.expect_packet(&[0xD0, 0x00]);
    })
}

#[test]
fn fast_publisher_is_held_back_instead_of_overflowing_a_live_subscriber() {
    if !Broker::edgemq_only() {
        return; // mosquitto drops beyond max_queued_messages: that is what this guards against
    }
    // A queue of 100 with drop-oldest: without back-pressure most messages would be dropped.
    let b = Broker::start_with(&["--max-queued-messages", "100"]);
    let mut sub = subscriber(b.addr, "slow-subscriber");
    let publisher = publish_all(b.addr, "fast-publisher");

    // Not reading for a moment lets the subscriber's socket, write buffer and queue fill.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..MESSAGES {
        let m = sub.expect_publish(false);
        assert_eq!(
            m.payload[..4],
            i.to_be_bytes(),
            "message {i} missing or out of order (QoS 0 messages from one publisher keep their order [MQTT-4.6.0-6]); broker log:\n{}",
            b.log()
        );
    }
    publisher.join().unwrap();
    assert!(
        !b.log().contains("message dropped for subscriber"),
        "a live subscriber's messages were dropped:\n{}",
        b.log()
    );
}

#[test]
fn a_subscriber_that_stops_reading_holds_publishers_back_only_for_a_while() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start_with(&["--max-queued-messages", "100"]);
    let stuck = subscriber(b.addr, "stuck-subscriber");
    let mut healthy = subscriber(b.addr, "healthy-subscriber");
    let publisher = publish_all(b.addr, "publisher");
    // `stuck` never reads again: after the publisher's patience it stops holding it back,
    // its own queue overflows (drop-oldest), and the healthy subscriber gets everything.
    for i in 0..MESSAGES {
        let m = healthy.expect_publish(false);
        assert_eq!(
            m.payload[..4],
            i.to_be_bytes(),
            "message {i} missing or out of order"
        );
    }
    publisher.join().unwrap();
    assert!(
        b.wait_for_log("subscriber is not keeping up", Duration::from_secs(10)),
        "the stalled subscriber is named in the log:\n{}",
        b.log()
    );
    assert!(b
        .log()
        .contains("client_id=stuck-subscriber reason=\"queue_full_drop_oldest\""));
    drop(stuck);
}
