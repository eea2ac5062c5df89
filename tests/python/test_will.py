"""Will messages with paho-mqtt (`will_set`): when they are published and when not."""

import time

from conftest import QUIET, MQTTv5, PacketTypes, props, uid


def _watcher(broker, topic, version=MQTTv5):
    w = broker.client(version=version)
    w.subscribe(topic, 2)
    return w


def test_will_sent_on_abnormal_close(broker, mqtt_version):
    """The will is published when the network connection closes without DISCONNECT
    (3.1.1 [MQTT-3.1.2-8]; 5.0 [MQTT-3.1.2-8]), with its topic, payload and QoS, as a
    non-retained message (3.1.1 [MQTT-3.1.2-16]; 5.0 [MQTT-3.1.2-14])."""
    t = uid("will")
    watcher = _watcher(broker, t)
    c = broker.client(version=mqtt_version, will={"topic": t, "payload": b"gone", "qos": 1})
    c.drop()
    m = watcher.expect()
    assert (m.topic, m.payload, m.qos, m.retain) == (t, b"gone", 1, False)


def test_v5_will_properties_forwarded(broker):
    """3.1.3.2: the will's Content Type, Response Topic, Correlation Data and User Properties
    are sent with the Will Message."""
    t = uid("willp")
    watcher = _watcher(broker, t)
    wp = props(
        PacketTypes.WILLMESSAGE,
        ContentType="text/plain",
        ResponseTopic=t + "/r",
        CorrelationData=b"\x01\x02",
        UserProperty=[("x", "1"), ("y", "2"), ("x", "3")],
        PayloadFormatIndicator=1,
    )
    c = broker.client(version=MQTTv5, will={"topic": t, "payload": b"bye", "qos": 1, "properties": wp})
    c.drop()
    m = watcher.expect()
    assert m.payload == b"bye"
    assert m.prop("ContentType") == "text/plain"
    assert m.prop("ResponseTopic") == t + "/r"
    assert m.prop("CorrelationData") == b"\x01\x02"
    assert m.prop("UserProperty") == [("x", "1"), ("y", "2"), ("x", "3")]
    assert m.prop("PayloadFormatIndicator") == 1


def test_will_not_sent_on_normal_disconnect(broker, mqtt_version):
    """DISCONNECT (5.0: reason 0x00) removes the will without publishing it (3.1.1
    [MQTT-3.1.2-10]; 5.0 [MQTT-3.14.4-3])."""
    t = uid("nowill")
    watcher = _watcher(broker, t)
    cid = uid("c")
    c = broker.client(cid, mqtt_version, will={"topic": t, "payload": b"will", "qos": 1})
    c.disconnect()
    broker.wait_disconnected(cid)
    broker.client(version=MQTTv5).publish(t, b"marker", qos=1)
    assert watcher.expect().payload == b"marker"
    watcher.expect_none(QUIET)


def test_v5_will_sent_on_disconnect_with_will_message_0x04(broker):
    """DISCONNECT with reason 0x04 (Disconnect with Will Message): the will is published
    (3.14.2.1)."""
    t = uid("will04")
    watcher = _watcher(broker, t)
    c = broker.client(version=MQTTv5, will={"topic": t, "payload": b"w04", "qos": 2})
    c.disconnect(reason=0x04)
    m = watcher.expect()
    assert (m.payload, m.qos) == (b"w04", 2)


def test_will_retain(broker, mqtt_version):
    """Will Retain 1: the will is published as a retained message (3.1.1 [MQTT-3.1.2-17];
    5.0 [MQTT-3.1.2-15]): a later subscriber gets it with RETAIN 1."""
    t = uid("willret")
    c = broker.client(version=mqtt_version, will={"topic": t, "payload": b"offline", "qos": 1, "retain": True})
    watcher = _watcher(broker, t)
    c.drop()
    assert watcher.expect().payload == b"offline"
    late = broker.client(version=mqtt_version)
    late.subscribe(t, 1)
    m = late.expect()
    assert (m.payload, m.retain) == (b"offline", True)


def test_v5_will_delay_interval_delays_the_will(broker):
    """3.1.3.2.2: with Will Delay Interval 1 s the will is published no earlier than 1 s after
    the connection is lost [MQTT-3.1.2-8] (the session lasts longer than that)."""
    t = uid("delay")
    watcher = _watcher(broker, t)
    wp = props(PacketTypes.WILLMESSAGE, WillDelayInterval=1)
    c = broker.client(
        version=MQTTv5, session_expiry=60, will={"topic": t, "payload": b"late", "qos": 1, "properties": wp}
    )
    lost = time.monotonic()
    c.drop()
    m = watcher.expect()
    assert m.payload == b"late"
    assert time.monotonic() - lost >= 1.0


def test_v5_will_delay_ends_with_session(broker):
    """[MQTT-3.1.2-8]: the will goes at the earlier of the Will Delay Interval and the end of
    the session: Will Delay 600 s, Session Expiry 0 → published at once on the abnormal close."""
    broker.not_on_mosquitto("waits for the Will Delay although the session ended")
    t = uid("delayend")
    watcher = _watcher(broker, t)
    wp = props(PacketTypes.WILLMESSAGE, WillDelayInterval=600)
    c = broker.client(version=MQTTv5, will={"topic": t, "payload": b"now", "qos": 1, "properties": wp})
    c.drop()
    assert watcher.expect().payload == b"now"


def test_v5_will_delay_cancelled_by_reconnect(broker):
    """[MQTT-3.1.3-9]: if the client reconnects to its session before the Will Delay Interval
    has passed, the will is not sent."""
    t = uid("cancel")
    watcher = _watcher(broker, t)
    cid = uid("c")
    wp = props(PacketTypes.WILLMESSAGE, WillDelayInterval=3)
    c = broker.client(
        cid, MQTTv5, session_expiry=60, will={"topic": t, "payload": b"will", "qos": 1, "properties": wp}
    )
    lost = time.monotonic()
    c.drop()
    broker.wait_disconnected(cid)
    again = broker.client(cid, MQTTv5, clean=False, session_expiry=60)
    assert again.connack.session_present is True
    reconnected = time.monotonic() - lost
    assert reconnected < 3, f"reconnecting took {reconnected:.1f}s (the test needs < 3 s)"
    # Watch past the end of the delay (3 s after the loss) plus a margin.
    watcher.expect_none(max(0.0, 3 - (time.monotonic() - lost)) + QUIET)
    again.disconnect()


def test_v5_will_on_takeover(broker):
    """A connection taken over by a new one with the same client id is closed by the server
    [MQTT-3.1.4-3]; its will (no delay) is published (3.1.4: "If the existing Client has a
    Will Message, that Will Message is published as described in section 3.1.2.5")."""
    t = uid("takewill")
    watcher = _watcher(broker, t)
    cid = uid("c")
    old = broker.client(cid, MQTTv5, will={"topic": t, "payload": b"taken", "qos": 1})
    broker.client(cid, MQTTv5)
    d = old.wait_disconnect()
    if not broker.mosquitto:  # mosquitto 2.0.11 closes without DISCONNECT 0x8E
        assert (d.from_server, d.reason) == (True, 0x8E)
    assert watcher.expect().payload == b"taken"


def test_v5_will_with_delay_not_sent_when_takeover_resumes_session(broker):
    """[MQTT-3.1.3-9]: a takeover that resumes the session (Clean Start 0) is a new network
    connection to the session before the Will Delay Interval has passed: the old
    connection's will is not sent."""
    t = uid("takedelay")
    watcher = _watcher(broker, t)
    cid = uid("c")
    wp = props(PacketTypes.WILLMESSAGE, WillDelayInterval=1)
    old = broker.client(
        cid, MQTTv5, session_expiry=60, will={"topic": t, "payload": b"will", "qos": 1, "properties": wp}
    )
    new = broker.client(cid, MQTTv5, clean=False, session_expiry=60)
    assert new.connack.session_present is True
    d = old.wait_disconnect()
    if not broker.mosquitto:  # mosquitto 2.0.11 closes without DISCONNECT 0x8E
        assert (d.from_server, d.reason) == (True, 0x8E)
    watcher.expect_none(1 + QUIET)  # past the 1 s delay


def test_will_sent_on_keep_alive_timeout(broker, mqtt_version):
    """A client that goes silent past 1.5 × its keep-alive is disconnected "as if the network
    had failed" (3.1.1 [MQTT-3.1.2-24] / 5.0 [MQTT-3.1.2-22]): its will is published."""
    t = uid("kawill")
    watcher = _watcher(broker, t)
    c = broker.client(version=mqtt_version, keepalive=1, will={"topic": t, "payload": b"silent", "qos": 1})
    c.freeze()
    m = watcher.expect()
    assert m.payload == b"silent"


def test_will_sent_when_server_closes_for_protocol_violation(start_broker, mqtt_version):
    """3.1.1 3.1.2.5 ("the Server closes the Network Connection because of a protocol error")
    / 5.0 [MQTT-3.1.2-8]: a connection the server closes for a violation (here a packet above
    the Maximum Packet Size) publishes the will."""
    b = start_broker("--max-packet-size", "1000")
    t = uid("violwill")
    watcher = _watcher(b, t)
    c = b.client(version=mqtt_version, will={"topic": t, "payload": b"violated", "qos": 1})
    c.publish(uid("big"), b"x" * 2000, qos=1, wait=False)
    c.wait_disconnect()
    assert watcher.expect().payload == b"violated"
