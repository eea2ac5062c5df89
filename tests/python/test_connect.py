"""CONNECT / CONNACK with paho-mqtt: Session Present and the v5 CONNACK properties."""

from conftest import MQTTv5, MQTTv311, uid


def test_connack_session_present_false_on_clean_start(broker, mqtt_version):
    """3.1.1 [MQTT-3.2.2-1] / 5.0 [MQTT-3.2.2-2]: accepted with Clean Session / Clean Start 1
    → Session Present 0, even when a session for the client id exists."""
    cid = uid("clean")
    kw = {"session_expiry": 60} if mqtt_version == MQTTv5 else {}
    first = broker.client(cid, mqtt_version, clean=False, **kw)
    first.subscribe(uid("t"), 1)
    first.disconnect()
    c = broker.client(cid, mqtt_version, clean=True)
    assert c.connack.session_present is False
    assert c.connack.reason == 0


def test_connack_session_present_true_when_resuming(broker, mqtt_version):
    """3.1.1 [MQTT-3.2.2-2] / 5.0 [MQTT-3.2.2-3]: Clean Session / Clean Start 0 with stored
    session state → Session Present 1; without stored state → 0. v5 keeps the session only with
    a Session Expiry Interval > 0 [MQTT-3.1.2-23]; 3.1.1 Clean Session 0 keeps it."""
    cid = uid("resume")
    kw = {"session_expiry": 60} if mqtt_version == MQTTv5 else {}
    first = broker.client(cid, mqtt_version, clean=False, **kw)
    assert first.connack.session_present is False  # nothing stored yet
    first.disconnect()
    broker.wait_disconnected(cid)
    again = broker.client(cid, mqtt_version, clean=False, **kw)
    assert again.connack.session_present is True
    assert again.connack.reason == 0


def test_v5_connack_advertises_default_limits(broker):
    """v5 CONNACK properties with the default limits: Receive Maximum 100, Maximum Packet Size
    1048576, Topic Alias Maximum 64; no Maximum QoS (2 is supported, [MQTT-3.2.2-9] only asks
    for it below 2); no Assigned Client Identifier when the client gave one; no Server Keep
    Alive when the client's keep-alive is accepted [MQTT-3.2.2-22]."""
    broker.edgemq_only("edgemq's default limits")
    c = broker.client(version=MQTTv5)
    ack = c.connack
    assert ack.prop("ReceiveMaximum") == 100
    assert ack.prop("MaximumPacketSize") == 1048576
    assert ack.prop("TopicAliasMaximum") == 64
    assert ack.prop("MaximumQoS") is None
    assert ack.prop("AssignedClientIdentifier") is None
    assert ack.prop("ServerKeepAlive") is None
    # Absent means available; if sent they must say 1.
    for name in (
        "RetainAvailable",
        "WildcardSubscriptionAvailable",
        "SubscriptionIdentifierAvailable",
        "SharedSubscriptionAvailable",
    ):
        assert ack.prop(name, 1) == 1, name


def test_v5_connack_advertises_configured_limits(start_broker):
    """--receive-maximum, --topic-alias-maximum, --max-packet-size and --maximum-qos 1 show in
    the v5 CONNACK (Maximum QoS: [MQTT-3.2.2-9])."""
    b = start_broker(
        "--receive-maximum", "7", "--topic-alias-maximum", "5", "--max-packet-size", "2048",
        "--maximum-qos", "1",
    )
    ack = b.client(version=MQTTv5).connack
    assert ack.prop("ReceiveMaximum") == 7
    assert ack.prop("TopicAliasMaximum") == 5
    assert ack.prop("MaximumPacketSize") == 2048
    assert ack.prop("MaximumQoS") == 1


def test_v5_empty_client_id_gets_assigned_identifier(broker):
    """[MQTT-3.1.3-6], [MQTT-3.2.2-16]: a zero-length client id is given a unique one, returned
    as Assigned Client Identifier; two such clients get different ones."""
    a = broker.client("", MQTTv5)
    b = broker.client("", MQTTv5)
    ida = a.connack.prop("AssignedClientIdentifier")
    idb = b.connack.prop("AssignedClientIdentifier")
    assert ida and idb and ida != idb
    # The assigned id is the client's id from now on: the broker logs it for the connection.
    if not broker.mosquitto:
        broker.wait_log(rf"client connected.*client_id={ida}\b")


def test_v311_empty_client_id_with_clean_session_is_accepted(broker):
    """3.1.1 [MQTT-3.1.3-6]/[MQTT-3.1.3-7]: a zero-length client id with Clean Session 1 is
    accepted (return code 0) and works."""
    c = broker.client("", MQTTv311, clean=True)
    assert c.connack.reason == 0
    assert c.connack.session_present is False
    t = uid("t")
    c.subscribe(t, 1)
    c.publish(t, b"hi", qos=1)
    assert c.expect().payload == b"hi"


def test_v5_server_keep_alive_when_capped(start_broker):
    """--max-keep-alive 5: a client asking 60 s (or 0 = none) is told Server Keep Alive 5
    [MQTT-3.2.2-21]; a client asking 3 s keeps it, and no Server Keep Alive is sent
    [MQTT-3.2.2-22]."""
    b = start_broker("--max-keep-alive", "5")
    assert b.client(version=MQTTv5, keepalive=60).connack.prop("ServerKeepAlive") == 5
    assert b.client(version=MQTTv5, keepalive=0).connack.prop("ServerKeepAlive") == 5
    assert b.client(version=MQTTv5, keepalive=3).connack.prop("ServerKeepAlive") is None


def test_v5_will_qos_above_maximum_qos_is_refused_0x9b(start_broker):
    """[MQTT-3.2.2-12]: a Will QoS the server does not support → CONNACK 0x9B (QoS not
    supported) and the connection is closed."""
    b = start_broker("--maximum-qos", "1")
    c = b.client(
        version=MQTTv5,
        will={"topic": uid("will"), "payload": b"w", "qos": 2},
        expect_reason=0x9B,
    )
    assert c.connack.session_present is False  # [MQTT-3.2.2-6]
    c.wait_disconnect()


def test_v5_session_expiry_above_cap_is_returned_in_connack(start_broker):
    """--max-session-expiry 30: a client asking 3600 s is told the Session Expiry Interval the
    server uses (3.2.2.3.2: the server returns its value when it differs)."""
    b = start_broker("--max-session-expiry", "30")
    ack = b.client(version=MQTTv5, clean=True, session_expiry=3600).connack
    assert ack.prop("SessionExpiryInterval") == 30
    ack = b.client(version=MQTTv5, clean=True, session_expiry=10).connack
    assert ack.prop("SessionExpiryInterval") is None

