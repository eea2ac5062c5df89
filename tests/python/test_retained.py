"""Retained messages with paho-mqtt: storage, replacement, deletion, the RETAIN flag on
delivery, and the v5 Retain As Published / Retain Handling subscription options."""

import pytest

from conftest import MQTTv5, uid


def test_retained_message_delivered_to_new_subscriber(broker, mqtt_version):
    """A retained message is stored [MQTT-3.3.1-5] and sent to a new subscription with
    RETAIN 1 (3.1.1 [MQTT-3.3.1-6]/[MQTT-3.3.1-8]; 5.0 [MQTT-3.3.1-9] with Retain Handling
    0), at min(published QoS, granted QoS); a newer retained message replaces it."""
    t = uid("ret")
    pub = broker.client(version=mqtt_version)
    pub.publish(t, b"old", qos=1, retain=True)
    pub.publish(t, b"new", qos=2, retain=True)
    sub = broker.client(version=mqtt_version)
    sub.subscribe(t, 1)
    m = sub.expect()
    assert (m.topic, m.payload, m.retain, m.qos) == (t, b"new", True, 1)
    # Only the newest one was kept: a live marker is the next message.
    pub.publish(t, b"live", qos=1)
    m = sub.expect()
    assert (m.payload, m.retain) == (b"live", False)


def test_retained_messages_for_wildcard_subscription(broker, mqtt_version):
    """Every retained message matching a wildcard filter is sent on subscribe."""
    root = uid("retw")
    pub = broker.client(version=mqtt_version)
    for leaf in ("a", "b", "c/d"):
        pub.publish(f"{root}/{leaf}", leaf.encode(), qos=1, retain=True)
    pub.publish(f"{root}/not-retained", b"x", qos=1)
    sub = broker.client(version=mqtt_version)
    sub.subscribe(f"{root}/#", 1)
    got = sorted((m.topic, m.payload, m.retain) for m in sub.expect_n(3))
    assert got == [(f"{root}/a", b"a", True), (f"{root}/b", b"b", True), (f"{root}/c/d", b"c/d", True)]
    pub.publish(f"{root}/marker", b"marker", qos=1)
    assert sub.expect().payload == b"marker"


def test_empty_retained_payload_deletes_retained_message(broker, mqtt_version):
    """A retained PUBLISH with an empty payload removes the retained message and is not stored
    itself (3.1.1 [MQTT-3.3.1-10]/[MQTT-3.3.1-11]; 5.0 [MQTT-3.3.1-6]/[MQTT-3.3.1-7]); it is
    still delivered to current subscribers as a normal message."""
    t = uid("del")
    pub = broker.client(version=mqtt_version)
    pub.publish(t, b"kept", qos=1, retain=True)
    current = broker.client(version=mqtt_version)
    current.subscribe(t, 1)
    assert current.expect().payload == b"kept"
    pub.publish(t, b"", qos=1, retain=True)
    m = current.expect()
    assert m.payload == b""
    late = broker.client(version=mqtt_version)
    late.subscribe(t, 1)
    pub.publish(t, b"marker", qos=1)
    m = late.expect()  # a retained message would have been queued before the marker
    assert (m.payload, m.retain) == (b"marker", False)


def test_non_retained_publish_does_not_touch_retained_message(broker, mqtt_version):
    """3.1.1 [MQTT-3.3.1-12] / 5.0 [MQTT-3.3.1-8]: RETAIN 0 neither stores nor replaces."""
    t = uid("keep")
    pub = broker.client(version=mqtt_version)
    pub.publish(t, b"retained", qos=1, retain=True)
    pub.publish(t, b"plain", qos=1, retain=False)
    sub = broker.client(version=mqtt_version)
    sub.subscribe(t, 1)
    m = sub.expect()
    assert (m.payload, m.retain) == (b"retained", True)


def test_live_message_has_retain_0(broker, mqtt_version):
    """A retained PUBLISH forwarded to an existing subscription has RETAIN 0 (3.1.1
    [MQTT-3.3.1-9]; 5.0 [MQTT-3.3.1-12] with Retain As Published 0, the default)."""
    t = uid("live")
    sub = broker.client(version=mqtt_version)
    sub.subscribe(t, 1)
    broker.client(version=mqtt_version).publish(t, b"r", qos=1, retain=True)
    m = sub.expect()
    assert (m.payload, m.retain) == (b"r", False)


def test_v5_retain_as_published(broker):
    """[MQTT-3.3.1-13]: with Retain As Published 1, the forwarded RETAIN flag is the published
    one; with 0 it is 0 [MQTT-3.3.1-12]."""
    t = uid("rap")
    rap = broker.client(version=MQTTv5)
    rap.subscribe(t, 1, retain_as_published=True)
    plain = broker.client(version=MQTTv5)
    plain.subscribe(t, 1, retain_as_published=False)
    pub = broker.client(version=MQTTv5)
    pub.publish(t, b"retained", qos=1, retain=True)
    pub.publish(t, b"not", qos=1, retain=False)
    assert [(m.payload, m.retain) for m in rap.expect_n(2)] == [(b"retained", True), (b"not", False)]
    assert [(m.payload, m.retain) for m in plain.expect_n(2)] == [(b"retained", False), (b"not", False)]


@pytest.mark.parametrize(
    "handling, first, again",
    [
        (0, True, True),  # [MQTT-3.3.1-9]: on every subscribe
        (1, True, False),  # [MQTT-3.3.1-10]: only if the subscription did not exist
        (2, False, False),  # [MQTT-3.3.1-11]: never
    ],
    ids=["rh0-always", "rh1-if-new", "rh2-never"],
)
def test_v5_retain_handling(broker, handling, first, again):
    """Retain Handling 0/1/2: whether retained messages are sent when subscribing, and when
    subscribing again to an existing subscription."""
    t = uid("rh")
    pub = broker.client(version=MQTTv5)
    pub.publish(t, b"retained", qos=1, retain=True)
    sub = broker.client(version=MQTTv5)
    for n, expected in ((1, first), (2, again)):
        sub.subscribe(t, 1, retain_handling=handling)
        # The retained message follows the SUBACK [MQTT-3.8.4-4]; a marker published after
        # the SUBACK is queued behind it, so the first message shows whether it was sent.
        marker = f"marker{n}".encode()
        pub.publish(t, marker, qos=1)
        got = [(m.payload, m.retain) for m in sub.until(marker)]
        want = ([(b"retained", True)] if expected else []) + [(marker, False)]
        assert got == want, f"subscribe #{n} with Retain Handling {handling}"
