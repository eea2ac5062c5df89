"""Sessions with paho-mqtt: persistent sessions, clean start, session expiry, re-delivery on
resumption, and client-id takeover."""

from conftest import QUIET, MQTTv5, MQTTv311, PacketTypes, props, uid


def _persistent(mqtt_version, **kw):
    """Client options for a session that outlives the connection."""
    if mqtt_version == MQTTv5:
        kw.setdefault("session_expiry", 300)
    return kw


def test_persistent_session_queues_qos1_and_qos2_while_offline(broker, mqtt_version):
    """3.1.1 [MQTT-3.1.2-4]/[MQTT-3.1.2-5]; 5.0 [MQTT-3.1.2-5], [MQTT-3.1.2-23]: the session
    (subscriptions and QoS 1/2 messages published while offline) is kept and resumed; the
    messages arrive at their QoS, in order, before newer ones. (QoS 0 messages may or may not be
    kept; this test does not look at them.)"""
    t = uid("offline")
    cid = uid("sub")
    sub = broker.client(cid, mqtt_version, clean=False, **_persistent(mqtt_version))
    sub.subscribe(t, 2)
    sub.disconnect()
    broker.wait_disconnected(cid)
    pub = broker.client(version=mqtt_version)
    for i in range(5):
        pub.publish(t, f"m{i}".encode(), qos=1 + i % 2)
    again = broker.client(cid, mqtt_version, clean=False, **_persistent(mqtt_version))
    assert again.connack.session_present is True
    pub.publish(t, b"after", qos=1)
    got = [(m.payload, m.qos) for m in again.expect_n(6)]
    # paho hands a QoS 2 message to on_message at PUBREL, a QoS 1 one at PUBLISH: order is
    # only observable per QoS [MQTT-4.6.0-5].
    assert [p for p, q in got if q == 1] == [b"m0", b"m2", b"m4", b"after"]
    assert [p for p, q in got if q == 2] == [b"m1", b"m3"]


def test_clean_start_discards_session(broker, mqtt_version):
    """3.1.1 [MQTT-3.1.2-6] / 5.0 [MQTT-3.1.2-4]: Clean Session / Clean Start 1 discards the
    stored session: Session Present 0, queued messages dropped, subscriptions gone."""
    t = uid("discard")
    cid = uid("sub")
    sub = broker.client(cid, mqtt_version, clean=False, **_persistent(mqtt_version))
    sub.subscribe(t, 1)
    sub.disconnect()
    broker.wait_disconnected(cid)
    pub = broker.client(version=MQTTv5)
    assert pub.publish(t, b"queued", qos=1) == 0x00  # the offline session matched
    fresh = broker.client(cid, mqtt_version, clean=True)
    assert fresh.connack.session_present is False
    # v5 PUBACK 0x10 (No matching subscribers): the old subscription is gone.
    assert pub.publish(t, b"after", qos=1) == 0x10
    fresh.subscribe(t + "/marker", 1)
    pub.publish(t + "/marker", b"marker", qos=1)
    assert fresh.expect().payload == b"marker"  # "queued" would have come first


def test_unacknowledged_qos1_redelivered_with_dup_on_resume(broker, mqtt_version):
    """[MQTT-4.4.0-1]: on resuming a session the server re-sends unacknowledged QoS 1
    PUBLISHes with DUP 1 [MQTT-3.3.1-1], before anything new."""
    t = uid("dup")
    cid = uid("sub")
    sub = broker.client(cid, mqtt_version, clean=False, manual_ack=True, **_persistent(mqtt_version))
    sub.subscribe(t, 1)
    pub = broker.client(version=mqtt_version)
    pub.publish(t, b"unacked", qos=1)
    first = sub.expect()
    assert (first.payload, first.dup) == (b"unacked", False)
    sub.drop()  # never acknowledged
    broker.wait_disconnected(cid)
    again = broker.client(cid, mqtt_version, clean=False, **_persistent(mqtt_version))
    assert again.connack.session_present is True
    m = again.expect()
    assert (m.payload, m.qos, m.dup) == (b"unacked", 1, True)
    # Acknowledged now (automatic ack): not sent a third time.
    pub.publish(t, b"next", qos=1)
    m = again.expect()
    assert (m.payload, m.dup) == (b"next", False)


def test_v5_session_expiry_zero_ends_session_with_connection(broker):
    """3.1.2.11.2: Session Expiry Interval absent (0) → the session ends when the connection
    closes: Clean Start 0 afterwards finds no session."""
    t = uid("exp0")
    cid = uid("sub")
    sub = broker.client(cid, MQTTv5, clean=True)
    sub.subscribe(t, 1)
    sub.disconnect()
    broker.wait_disconnected(cid)
    pub = broker.client(version=MQTTv5)
    # The subscription went with the session (this PUBACK can come before the registry has
    # removed the session only if routing still saw it; wait for the reconnect instead).
    again = broker.client(cid, MQTTv5, clean=False, session_expiry=60)
    assert again.connack.session_present is False
    assert pub.publish(t, b"x", qos=1) == 0x10


def test_v5_session_expires_after_interval(broker):
    """[MQTT-4.1.0-2]: the session is discarded once the Session Expiry Interval has passed
    after the connection closed (here 1 s; the broker logs `session expired`)."""
    t = uid("exp1")
    cid = uid("sub")
    sub = broker.client(cid, MQTTv5, clean=True, session_expiry=1)
    sub.subscribe(t, 1)
    mark = broker.log_mark()
    sub.disconnect()
    broker.wait_session_expired(cid, start=mark)
    pub = broker.client(version=MQTTv5)
    assert pub.publish(t, b"x", qos=1) == 0x10  # subscriptions gone with the session
    again = broker.client(cid, MQTTv5, clean=False, session_expiry=60)
    assert again.connack.session_present is False


def test_v5_disconnect_can_shorten_session_expiry_to_zero(broker):
    """3.14.2.2.2: a Session Expiry Interval in DISCONNECT replaces the one from CONNECT:
    60 at CONNECT, 0 at DISCONNECT → the session ends with the connection."""
    t = uid("disc0")
    cid = uid("sub")
    sub = broker.client(cid, MQTTv5, clean=True, session_expiry=60)
    sub.subscribe(t, 1)
    sub.disconnect(reason=0, properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    broker.wait_disconnected(cid)
    again = broker.client(cid, MQTTv5, clean=False, session_expiry=60)
    assert again.connack.session_present is False


def test_v5_takeover_old_connection_gets_0x8e(broker):
    """[MQTT-3.1.4-3]: a second connection with the same client id → the existing one gets
    DISCONNECT 0x8E (Session taken over) and is closed; the new one is accepted."""
    cid = uid("dup")
    old = broker.client(cid, MQTTv5)
    new = broker.client(cid, MQTTv5)
    assert new.connack.reason == 0
    d = old.wait_disconnect()
    broker.not_on_mosquitto("closes a taken-over connection without DISCONNECT 0x8E")
    assert d.from_server is True
    assert d.reason == 0x8E
    # The new connection works.
    t = uid("t")
    new.subscribe(t, 1)
    new.publish(t, b"ok", qos=1)
    assert new.expect().payload == b"ok"


def test_v311_takeover_closes_old_connection(broker):
    """3.1.1 [MQTT-3.1.4-2]: the server disconnects the existing client with that client id
    (no DISCONNECT packet exists in 3.1.1 for that)."""
    cid = uid("dup")
    old = broker.client(cid, MQTTv311)
    new = broker.client(cid, MQTTv311)
    assert new.connack.reason == 0
    d = old.wait_disconnect()
    assert d.from_server is False


def test_takeover_resumes_persistent_session(broker, mqtt_version):
    """Taking over with Clean Session / Clean Start 0 resumes the session: Session Present 1
    [MQTT-3.2.2-2]/[MQTT-3.2.2-3], subscriptions kept, and the old connection receives no more
    messages."""
    t = uid("takesess")
    cid = uid("sub")
    old = broker.client(cid, mqtt_version, clean=False, **_persistent(mqtt_version))
    old.subscribe(t, 1)
    new = broker.client(cid, mqtt_version, clean=False, **_persistent(mqtt_version))
    assert new.connack.session_present is True
    old.wait_disconnect()
    broker.client(version=mqtt_version).publish(t, b"to-new", qos=1)
    m = new.expect()
    assert m.payload == b"to-new"
    old.expect_none(0)


def test_takeover_with_clean_start_discards_session(broker, mqtt_version):
    """Taking over with Clean Session / Clean Start 1: the old session is discarded (Session
    Present 0, no subscriptions)."""
    t = uid("takeclean")
    cid = uid("sub")
    old = broker.client(cid, mqtt_version, clean=False, **_persistent(mqtt_version))
    old.subscribe(t, 1)
    new = broker.client(cid, mqtt_version, clean=True)
    assert new.connack.session_present is False
    old.wait_disconnect()
    assert broker.client(version=MQTTv5).publish(t, b"x", qos=1) == 0x10
    new.expect_none(QUIET / 2)
