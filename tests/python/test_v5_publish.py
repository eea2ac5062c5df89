"""MQTT 5 PUBLISH features with paho-mqtt: property pass-through, message expiry, topic
aliases from the client, subscription identifiers, No Local."""

import time

from conftest import MQTTv5, MQTTv311, PacketTypes, props, uid


def test_v5_publish_properties_forwarded_unchanged(broker):
    """User Properties unaltered with order and repeats kept [MQTT-3.3.2-17], [MQTT-3.3.2-18];
    Response Topic [MQTT-3.3.2-15], Correlation Data [MQTT-3.3.2-16], Content Type
    [MQTT-3.3.2-20] and Payload Format Indicator [MQTT-3.3.2-4] unaltered; Message Expiry
    Interval forwarded as what is left of it [MQTT-3.3.2-6]."""
    t = uid("props")
    sub = broker.client(version=MQTTv5)
    sub.subscribe(t, 1)
    pub = broker.client(version=MQTTv5)
    user = [("b", "2"), ("a", "1"), ("b", "2"), ("a", "3"), ("ключ", "значение")]
    p = props(
        PacketTypes.PUBLISH,
        UserProperty=user,
        ResponseTopic=t + "/reply",
        CorrelationData=b"\x00\x01corr\xff",
        ContentType="application/json; charset=utf-8",
        PayloadFormatIndicator=1,
        MessageExpiryInterval=60,
    )
    pub.publish(t, '{"t": 21.5}'.encode(), qos=1, properties=p)
    m = sub.expect()
    assert m.payload == b'{"t": 21.5}'
    assert m.prop("UserProperty") == user
    assert m.prop("ResponseTopic") == t + "/reply"
    assert m.prop("CorrelationData") == b"\x00\x01corr\xff"
    assert m.prop("ContentType") == "application/json; charset=utf-8"
    assert m.prop("PayloadFormatIndicator") == 1
    assert 0 < m.prop("MessageExpiryInterval") <= 60
    # Per-hop properties are not forwarded: no Topic Alias, and no Subscription Identifier
    # for a subscription made without one.
    assert m.prop("TopicAlias") is None
    assert m.prop("SubscriptionIdentifier") is None


def test_v5_message_without_properties_arrives_without_them(broker):
    """A PUBLISH without properties is forwarded without any (no expiry invented)."""
    t = uid("noprops")
    sub = broker.client(version=MQTTv5)
    sub.subscribe(t, 1)
    broker.client(version=MQTTv5).publish(t, b"x", qos=1)
    m = sub.expect()
    for name in ("UserProperty", "ResponseTopic", "CorrelationData", "ContentType",
                 "PayloadFormatIndicator", "MessageExpiryInterval"):
        assert m.prop(name) is None, name


def test_v5_properties_reach_v311_subscriber_as_plain_message(broker):
    """A v5 message with properties reaches a 3.1.1 subscriber as topic + payload + QoS."""
    t = uid("mixed")
    sub = broker.client(version=MQTTv311)
    sub.subscribe(t, 1)
    p = props(PacketTypes.PUBLISH, UserProperty=[("k", "v")], ContentType="text/plain")
    broker.client(version=MQTTv5).publish(t, b"hello", qos=1, properties=p)
    m = sub.expect()
    assert (m.topic, m.payload, m.qos) == (t, b"hello", 1)


def test_v5_expired_message_not_delivered_and_remaining_expiry_counts_down(broker):
    """While a persistent session is offline: a message whose Message Expiry Interval passes is
    not delivered [MQTT-3.3.2-5]; one that has not expired is delivered with the interval
    minus the time it waited [MQTT-3.3.2-6]. The same for retained messages sent to a new
    subscription (3.3.2.3.3)."""
    t = uid("expiry")
    cid = uid("sub")
    sub = broker.client(cid, MQTTv5, clean=True, session_expiry=60)
    sub.subscribe(t, 1)
    sub.disconnect()
    broker.wait_disconnected(cid)
    pub = broker.client(version=MQTTv5)
    pub.publish(t, b"short", qos=1, properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish(t, b"long", qos=1, properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=30))
    # Retained messages expire too: no longer sent to new subscriptions once expired.
    expiring = props(PacketTypes.PUBLISH, MessageExpiryInterval=1)
    pub.publish(t + "/ret-short", b"ret-short", qos=1, retain=True, properties=expiring)
    lasting = props(PacketTypes.PUBLISH, MessageExpiryInterval=30)
    pub.publish(t + "/ret-long", b"ret-long", qos=1, retain=True, properties=lasting)
    sent = time.monotonic()
    time.sleep(1.6)  # more than the 1 s expiry of the "short" ones: they must be gone
    waited = time.monotonic() - sent
    again = broker.client(cid, MQTTv5, clean=False, session_expiry=60)
    assert again.connack.session_present is True
    m = again.expect()
    assert m.payload == b"long"
    # At least `waited` seconds passed in the server: what is left is at most 30 - waited,
    # rounded up to whole seconds.
    assert 1 <= m.prop("MessageExpiryInterval") <= 30 - int(waited)
    pub.publish(t, b"marker", qos=1)
    assert again.expect().payload == b"marker"
    late = broker.client(version=MQTTv5)
    late.subscribe(t + "/+", 1)
    m = late.expect()
    assert (m.payload, m.retain) == (b"ret-long", True)
    assert 1 <= m.prop("MessageExpiryInterval") <= 30 - int(waited)
    pub.publish(t + "/marker", b"marker", qos=1)
    assert late.expect().payload == b"marker"


def test_v5_topic_alias_from_client(broker):
    """3.3.2.3.4: a PUBLISH with a topic and Topic Alias sets the alias; a later PUBLISH with
    an empty topic and that alias goes to the same topic [MQTT-3.3.2-12]. Subscribers always
    receive the full topic name, without the publisher's alias."""
    t = uid("alias") + "/long/topic/name"
    sub = broker.client(version=MQTTv5)
    sub.subscribe(t, 1)
    pub = broker.client(version=MQTTv5)
    assert pub.connack.prop("TopicAliasMaximum") >= 1
    pub.publish(t, b"first", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    pub.publish("", b"second", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    pub.publish("", b"third", qos=0, properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    got = [(m.topic, m.payload, m.prop("TopicAlias")) for m in sub.expect_n(3)]
    assert got == [(t, b"first", None), (t, b"second", None), (t, b"third", None)]
    # Re-mapping the alias to another topic is allowed.
    t2 = t + "/2"
    sub.subscribe(t2, 1)
    pub.publish(t2, b"remapped", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    pub.publish("", b"via-alias", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    got = [(m.topic, m.payload) for m in sub.expect_n(2)]
    assert got == [(t2, b"remapped"), (t2, b"via-alias")]


def test_v5_topic_alias_is_per_connection(broker):
    """[MQTT-3.3.2-7]: alias mappings do not carry over to another connection: an empty topic
    with an alias the new connection never set → DISCONNECT 0x82 (Protocol Error) or 0x94
    (Topic Alias invalid)."""
    t = uid("alias")
    cid = uid("pub")
    pub = broker.client(cid, MQTTv5)
    pub.publish(t, b"x", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=3))
    pub.disconnect()
    pub2 = broker.client(cid, MQTTv5)
    pub2.publish("", b"y", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=3), wait=False)
    d = pub2.wait_disconnect()
    assert d.from_server and d.reason in (0x82, 0x94)


def test_v5_subscription_identifiers_in_delivered_publish(broker):
    """[MQTT-3.3.4-3]: the Subscription Identifier of the matching subscription is sent with
    the message. Overlapping subscriptions: the message is delivered at the highest of their
    QoS [MQTT-3.3.4-2]; a single copy carries all their identifiers [MQTT-3.3.4-4] (order not
    significant), extra copies (allowed) each carry their own [MQTT-3.3.4-5]. edgemq sends a
    single copy."""
    root = uid("subid")
    sub = broker.client(version=MQTTv5)
    sub.subscribe(f"{root}/+", 0, subscription_id=42)
    sub.subscribe(f"{root}/#", 1, subscription_id=268435455)  # the largest identifier
    sub.subscribe(f"{root}/x/only", 1)  # no identifier
    pub = broker.client(version=MQTTv5)
    pub.publish(f"{root}/a", b"both", qos=1)
    pub.publish(f"{root}/x/y", b"hash-only", qos=1)
    pub.publish(f"{root}/x/only", b"two", qos=1)
    pub.publish(f"{root}/marker", b"marker", qos=1)
    got = sub.until(b"marker")
    both = [m for m in got if m.payload == b"both"]
    if len(both) == 1:
        assert sorted(both[0].prop("SubscriptionIdentifier")) == [42, 268435455]
        assert both[0].qos == 1
    else:
        assert sorted(i for m in both for i in m.prop("SubscriptionIdentifier")) == [42, 268435455]
        assert all(len(m.prop("SubscriptionIdentifier")) == 1 for m in both)
        assert max(m.qos for m in both) == 1
    if not broker.mosquitto:
        assert len(both) == 1, "edgemq delivers one copy for overlapping subscriptions"
    hash_only = [m for m in got if m.payload == b"hash-only"]
    assert [m.prop("SubscriptionIdentifier") for m in hash_only] == [[268435455]]
    # A subscription without an identifier adds none: copies carry only the other's.
    two = [m for m in got if m.payload == b"two"]
    assert [m.prop("SubscriptionIdentifier") for m in two if m.prop("SubscriptionIdentifier")] == [
        [268435455]
    ]
    if not broker.mosquitto:
        assert len(two) == 1


def test_v5_subscription_identifier_on_retained_message(broker):
    """The identifier of the subscription is also sent on the retained messages that
    subscribing delivers (3.8.2.1.2: it is associated with the subscription)."""
    t = uid("subid-ret")
    broker.client(version=MQTTv5).publish(t, b"kept", qos=1, retain=True)
    sub = broker.client(version=MQTTv5)
    sub.subscribe(t, 1, subscription_id=7)
    m = sub.expect()
    assert (m.payload, m.retain, m.prop("SubscriptionIdentifier")) == (b"kept", True, [7])


def test_v5_resubscribe_replaces_subscription_identifier(broker):
    """[MQTT-3.8.4-3]: subscribing again to the same filter replaces the subscription, with its
    new identifier (one copy per message)."""
    t = uid("resub")
    sub = broker.client(version=MQTTv5)
    sub.subscribe(t, 1, subscription_id=1)
    sub.subscribe(t, 1, subscription_id=2)
    pub = broker.client(version=MQTTv5)
    pub.publish(t, b"a", qos=1)
    pub.publish(t, b"b", qos=1)
    got = [(m.payload, m.prop("SubscriptionIdentifier")) for m in sub.expect_n(2)]
    assert got == [(b"a", [2]), (b"b", [2])]


def test_v5_no_local(broker):
    """[MQTT-3.8.3-3]: with No Local, the client's own messages are not sent back to it;
    other clients' messages are. Without No Local they are."""
    t = uid("nolocal")
    me = broker.client(version=MQTTv5)
    me.subscribe(t, 1, no_local=True)
    echo = broker.client(version=MQTTv5)
    echo.subscribe(t, 1)
    echo.publish(t, b"echo-own", qos=1)
    me.publish(t, b"own", qos=1)  # routed (and not to `me`) before its PUBACK
    broker.client(version=MQTTv5).publish(t, b"other", qos=1)
    # "own" would have been queued between the other two.
    assert [m.payload for m in me.expect_n(2)] == [b"echo-own", b"other"]
    assert [m.payload for m in echo.expect_n(3)] == [b"echo-own", b"own", b"other"]
