"""Broker limits with paho-mqtt: Maximum Packet Size (both directions), Maximum QoS, and the
bounded per-session queue with its overflow policy."""

import re

import pytest

from conftest import MQTTv5, MQTTv311, uid


def test_v5_max_packet_size_advertised_and_enforced_0x95(start_broker):
    """--max-packet-size 1000 → CONNACK Maximum Packet Size 1000; a client sending a larger
    packet (a protocol violation, [MQTT-3.2.2-15]) gets DISCONNECT 0x95 (Packet too large) and
    is closed; a packet within the limit is fine."""
    b = start_broker("--max-packet-size", "1000")
    t = uid("big")
    sub = b.client(version=MQTTv5)
    sub.subscribe(t, 1)
    c = b.client(version=MQTTv5)
    assert c.connack.prop("MaximumPacketSize") == 1000
    c.publish(t, b"x" * 900, qos=1)
    assert sub.expect().payload == b"x" * 900
    c.publish(t, b"x" * 2000, qos=1, wait=False)
    d = c.wait_disconnect()
    assert (d.from_server, d.reason) == (True, 0x95)
    # Nothing of the refused packet reached the subscriber.
    b.client(version=MQTTv5).publish(t, b"marker", qos=1)
    assert sub.expect().payload == b"marker"


def test_v311_packet_above_max_packet_size_closes(start_broker):
    """3.1.1 has no Maximum Packet Size property; the server closes the connection."""
    b = start_broker("--max-packet-size", "1000")
    c = b.client(version=MQTTv311)
    c.publish(uid("big"), b"x" * 2000, qos=1, wait=False)
    d = c.wait_disconnect()
    assert d.from_server is False


def test_v5_client_maximum_packet_size_respected(broker):
    """[MQTT-3.1.2-24]: the server does not send a packet larger than the client's Maximum
    Packet Size; [MQTT-3.1.2-25]: it drops the message for that client as if sent. Other
    subscribers still get it."""
    t = uid("clientmax")
    small = broker.client(version=MQTTv5, max_packet_size=200)
    small.subscribe(t, 1)
    big = broker.client(version=MQTTv5)
    big.subscribe(t, 1)
    pub = broker.client(version=MQTTv5)
    pub.publish(t, b"y" * 500, qos=1)
    pub.publish(t, b"small", qos=1)
    assert small.expect().payload == b"small"  # the large one would have come first
    assert [m.payload for m in big.expect_n(2)] == [b"y" * 500, b"small"]


def test_v5_maximum_qos_1_publish_qos2_gets_disconnect_0x9b(start_broker):
    """--maximum-qos 1: CONNACK Maximum QoS 1 [MQTT-3.2.2-9]; a QoS 2 PUBLISH anyway
    (against [MQTT-3.2.2-11]) → DISCONNECT 0x9B (QoS not supported, 3.2.2.3.4); QoS 1 works."""
    b = start_broker("--maximum-qos", "1")
    t = uid("maxqos")
    sub = b.client(version=MQTTv5)
    sub.subscribe(t, 1)
    c = b.client(version=MQTTv5)
    assert c.connack.prop("MaximumQoS") == 1
    assert c.publish(t, b"q1", qos=1) == 0
    assert sub.expect().payload == b"q1"
    c.publish(t, b"q2", qos=2, wait=False)
    d = c.wait_disconnect()
    assert (d.from_server, d.reason) == (True, 0x9B)
    b.client(version=MQTTv5).publish(t, b"marker", qos=1)
    assert sub.expect().payload == b"marker"  # the QoS 2 message was not routed


def test_maximum_qos_1_downgrades_subscriptions(start_broker, mqtt_version):
    """--maximum-qos 1: SUBSCRIBE asking QoS 2 is still accepted (5.0 [MQTT-3.2.2-10]); the
    SUBACK grants QoS 1 (5.0 [MQTT-3.8.4-7]) and messages arrive at QoS 1."""
    b = start_broker("--maximum-qos", "1")
    t = uid("grant")
    sub = b.client(version=mqtt_version)
    assert sub.subscribe(t, 2) == [1]
    b.client(version=mqtt_version).publish(t, b"m", qos=1)
    m = sub.expect()
    assert (m.payload, m.qos) == (b"m", 1)


@pytest.mark.parametrize(
    "policy, kept, reason",
    [
        ("drop-new", [0, 1, 2], "queue_full_drop_new"),
        ("drop-oldest", [7, 8, 9], "queue_full_drop_oldest"),
    ],
    ids=["drop-new", "drop-oldest"],
)
def test_offline_queue_overflow_policy(start_broker, mqtt_version, policy, kept, reason):
    """--max-queued-messages 3: an offline persistent session keeps 3 QoS 1 messages of 10;
    drop-new keeps the first 3, drop-oldest the last 3; the broker logs the drops (first one
    per session) with the subscriber and the reason."""
    b = start_broker("--max-queued-messages", "3", "--overflow-policy", policy)
    t = uid("overflow")
    cid = uid("sub")
    kw = {"session_expiry": 300} if mqtt_version == MQTTv5 else {}
    sub = b.client(cid, mqtt_version, clean=False, **kw)
    sub.subscribe(t, 1)
    sub.disconnect()
    b.wait_disconnected(cid)
    pub = b.client(version=MQTTv5)
    for i in range(10):
        pub.publish(t, f"m{i}".encode(), qos=1)
    b.wait_log(
        rf'message dropped for subscriber.*client_id={re.escape(cid)}\b.*reason="?{reason}\b'
    )
    again = b.client(cid, mqtt_version, clean=False, **kw)
    assert again.connack.session_present is True
    # The queue was drained into the first write, before the CONNACK reached us: the marker
    # is queued after whatever was kept.
    pub.publish(t, b"marker", qos=1)
    got = [m.payload for m in again.until(b"marker")]
    assert got == [f"m{i}".encode() for i in kept] + [b"marker"]


def test_v5_queue_overflow_disconnect_policy_0x97(start_broker):
    """--overflow-policy disconnect: a connected subscriber whose queue overflows (it does not
    acknowledge, so messages wait behind its Receive Maximum) is disconnected with 0x97 (Quota
    exceeded)."""
    b = start_broker("--max-queued-messages", "3", "--overflow-policy", "disconnect")
    t = uid("quota")
    sub = b.client(version=MQTTv5, receive_maximum=1, manual_ack=True)
    sub.subscribe(t, 1)
    pub = b.client(version=MQTTv5)
    pub.publish(t, b"m0", qos=1)
    assert sub.expect().payload == b"m0"  # in flight, never acknowledged
    for i in range(1, 5):  # 3 fit in the queue, the 4th overflows
        pub.publish(t, f"m{i}".encode(), qos=1)
    d = sub.wait_disconnect()
    assert (d.from_server, d.reason) == (True, 0x97)
