"""PUBLISH → SUBSCRIBE round trips with paho-mqtt, MQTT 3.1.1 and 5.0."""

import pytest

from conftest import MQTTv5, uid


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_round_trip_at_each_qos(broker, mqtt_version, qos):
    """A message published at QoS 0/1/2 to a QoS 2 subscription arrives once, unchanged, at the
    published QoS, with DUP 0 (5.0 [MQTT-4.3.1-1], [MQTT-4.3.2-2], [MQTT-4.3.3-2]) and
    RETAIN 0."""
    t = uid("rt") + "/a/b"
    sub = broker.client(version=mqtt_version)
    assert sub.subscribe(t, 2) == [2]
    pub = broker.client(version=mqtt_version)
    payload = bytes(range(256)) * 4
    pub.publish(t, payload, qos=qos)
    m = sub.expect()
    assert (m.topic, m.payload, m.qos, m.retain, m.dup) == (t, payload, qos, False, False)
    # Exactly once: a marker sent after it is the next thing to arrive.
    pub.publish(t, b"marker", qos=qos)
    assert sub.expect().payload == b"marker"


def test_qos_downgraded_to_subscription_qos(broker, mqtt_version):
    """3.1.1 [MQTT-3.8.4-6] / 5.0 [MQTT-3.8.4-8]: delivered QoS = min(published QoS, granted
    QoS), for every pair of published and subscribed QoS."""
    t = uid("down")
    subs = {}
    for sq in (0, 1, 2):
        subs[sq] = broker.client(version=mqtt_version)
        assert subs[sq].subscribe(t, sq) == [sq]
    pub = broker.client(version=mqtt_version)
    for pq in (0, 1, 2):
        pub.publish(t, f"q{pq}".encode(), qos=pq)
    for sq, sub in subs.items():
        got = [(m.payload, m.qos) for m in sub.expect_n(3)]
        assert got == [(f"q{pq}".encode(), min(pq, sq)) for pq in (0, 1, 2)], f"subscription QoS {sq}"


@pytest.mark.parametrize("qos", [1, 2])
def test_order_preserved_for_100_messages(broker, mqtt_version, qos):
    """[MQTT-4.6.0-6]: every topic is an Ordered Topic for non-shared subscriptions: 100
    QoS 1 / QoS 2 messages from one publisher arrive in the order published, each once."""
    t = uid("order")
    sub = broker.client(version=mqtt_version)
    sub.subscribe(t, qos)
    pub = broker.client(version=mqtt_version)
    infos = [pub.m.publish(t, f"{i:03}".encode(), qos=qos) for i in range(100)]
    for info in infos:
        info.wait_for_publish(10)
    msgs = sub.expect_n(100)
    assert [m.payload for m in msgs] == [f"{i:03}".encode() for i in range(100)]
    assert {(m.qos, m.dup) for m in msgs} == {(qos, False)}
    # No duplicates: the next message after the 100 is a marker sent after them.
    pub.publish(t, b"end", qos=qos)
    assert sub.expect().payload == b"end"


def test_wildcards_match(broker, mqtt_version):
    """`+` matches exactly one level, `#` the parent and any number of levels (4.7.1)."""
    root = uid("wild")
    plus = broker.client(version=mqtt_version)
    plus.subscribe(f"{root}/+/temp", 1)
    hash_ = broker.client(version=mqtt_version)
    hash_.subscribe(f"{root}/#", 1)
    pub = broker.client(version=mqtt_version)
    for t in (f"{root}/a/temp", f"{root}/a/b/temp", f"{root}", f"{root}/x"):
        pub.publish(t, t.encode(), qos=1)
    pub.publish(f"{root}/end/temp", b"end", qos=1)
    assert [m.topic for m in plus.until(b"end")] == [f"{root}/a/temp", f"{root}/end/temp"]
    assert [m.topic for m in hash_.until(b"end")] == [
        f"{root}/a/temp", f"{root}/a/b/temp", root, f"{root}/x", f"{root}/end/temp",
    ]


def test_dollar_topics_not_matched_by_leading_wildcards(broker, mqtt_version):
    """[MQTT-4.7.2-1]: filters starting with `#` or `+` do not match topic names starting with
    `$`; a filter that names the `$` level does."""
    name = uid("dollar")
    wild = broker.client(version=mqtt_version)
    wild.subscribe("#", 1)
    wild.subscribe(f"+/{name}", 1)
    explicit = broker.client(version=mqtt_version)
    explicit.subscribe(f"$x{name}/#", 1)
    pub = broker.client(version=mqtt_version)
    pub.publish(f"$x{name}/{name}", b"dollar", qos=1)  # routed before the PUBACK
    pub.publish(f"plain/{name}", b"plain", qos=1)
    # The `$` message would have been queued before the plain one: the plain one comes first.
    m = wild.expect()
    assert (m.topic, m.payload) == (f"plain/{name}", b"plain")
    m = explicit.expect()
    assert (m.topic, m.payload) == (f"$x{name}/{name}", b"dollar")


def test_unsubscribe_stops_delivery(broker, mqtt_version):
    """[MQTT-3.10.4-2]: after UNSUBACK no new message matching the filter is delivered."""
    t = uid("unsub")
    sub = broker.client(version=mqtt_version)
    sub.subscribe(t, 1)
    sub.subscribe(t + "/marker", 1)
    rcs = sub.unsubscribe(t)
    if mqtt_version == MQTTv5:
        assert rcs == [0x00]
    pub = broker.client(version=MQTTv5)
    # v5 PUBACK 0x10: no matching subscribers at all.
    assert pub.publish(t, b"gone", qos=1) == 0x10
    pub.publish(t + "/marker", b"marker", qos=1)
    assert sub.expect().payload == b"marker"
