"""Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 section 4.8.2) with paho-mqtt."""

import queue
import time

import pytest

from conftest import PUBLISH, PUBREL, QUIET, WAIT, MQTTv5, SubscribeOptions, packet, uid


def _collect(members, want, timeout=WAIT):
    """Drain `members` until every payload in `want` has arrived at one of them; return the
    messages each received, {member index: [Msg]}."""
    got = {i: [] for i in range(len(members))}
    deadline = time.monotonic() + timeout
    while {m.payload for ms in got.values() for m in ms} < set(want):
        if time.monotonic() > deadline:
            seen = {i: [m.payload for m in ms] for i, ms in got.items()}
            raise AssertionError(f"not all of {sorted(want)} arrived: {seen}")
        for i, c in enumerate(members):
            try:
                got[i].append(c.messages.get(timeout=0.02))
            except queue.Empty:
                pass
    return got


def _payloads(msgs):
    return [m.payload for m in msgs]


def test_v5_shared_subscription_delivers_each_message_to_one_member(broker):
    """4.8.2: each message matching a shared subscription goes to exactly one member of the
    group; a non-shared subscription to the same topic still gets every message; two groups
    each get every message. (edgemq picks members round-robin, so both members of a group get
    some.)"""
    t = uid("share")
    a, b = broker.client(version=MQTTv5), broker.client(version=MQTTv5)
    assert a.subscribe(f"$share/g1/{t}", 1) == [1]
    assert b.subscribe(f"$share/g1/{t}", 0) == [0]
    other_group = broker.client(version=MQTTv5)
    other_group.subscribe(f"$share/g2/{t}", 1)
    plain = broker.client(version=MQTTv5)
    plain.subscribe(t, 1)
    pub = broker.client(version=MQTTv5)
    want = [f"m{i:02}".encode() for i in range(20)]
    for p in want:
        pub.publish(t, p, qos=1)
    got = {i: _payloads(ms) for i, ms in _collect([a, b], want).items()}
    # Exactly once across the group: no duplicates within the watch window either.
    a.expect_none(QUIET)
    b.expect_none(0)
    assert sorted(got[0] + got[1]) == want
    assert got[0] and got[1], f"round-robin: both members get messages: {got}"
    # edgemq keeps publication order per member (not required for shared subscriptions,
    # [MQTT-4.6.0-6] is about non-shared ones).
    assert got[0] == sorted(got[0]) and got[1] == sorted(got[1])
    assert [m.payload for m in other_group.expect_n(20)] == want
    assert [m.payload for m in plain.expect_n(20)] == want


def test_v5_shared_subscription_respects_member_granted_qos(broker):
    """[MQTT-4.8.2-3]: a message sent to a member uses that member's granted QoS."""
    t = uid("shareqos")
    a, b = broker.client(version=MQTTv5), broker.client(version=MQTTv5)
    a.subscribe(f"$share/g/{t}", 0)
    b.subscribe(f"$share/g/{t}", 2)
    pub = broker.client(version=MQTTv5)
    want = [f"m{i}".encode() for i in range(6)]
    for p in want:
        pub.publish(t, p, qos=2)
    got = _collect([a, b], want)
    assert {m.qos for m in got[0]} <= {0} and {m.qos for m in got[1]} <= {2}
    assert sorted(_payloads(got[0] + got[1])) == want


@pytest.mark.parametrize("expiry", [0, 300], ids=["session-ends", "session-kept"])
def test_v5_shared_member_leaving_hands_unacked_messages_to_others(broker, expiry):
    """4.8.2: when a member's connection breaks with QoS 1 messages sent but unacknowledged (and
    more queued behind its Receive Maximum), the server may, and when the session ends should,
    send them to another member of the group. edgemq hands them over at once: the other
    member ends up with every message."""
    if expiry:
        broker.edgemq_only("handing over while the session is kept is optional (4.8.2: MAY)")
    else:
        broker.not_on_mosquitto("keeps a closed member's messages (4.8.2: SHOULD hand over)")
    t = uid("sharego")
    leaver_id = uid("leaver")
    leaver = broker.client(
        leaver_id, MQTTv5, session_expiry=expiry or None, receive_maximum=2, manual_ack=True
    )
    leaver.subscribe(f"$share/g/{t}", 1)
    stayer = broker.client(version=MQTTv5)
    stayer.subscribe(f"$share/g/{t}", 1)
    pub = broker.client(version=MQTTv5)
    want = [f"m{i:02}".encode() for i in range(10)]
    for p in want:
        pub.publish(t, p, qos=1)
    # The leaver holds its Receive Maximum (2) unacknowledged; the rest of its share waits.
    held = [m.payload for m in leaver.expect_n(2)]
    leaver.expect_none(QUIET / 2)
    leaver.drop()
    broker.wait_disconnected(leaver_id)
    got = _payloads(_collect([stayer], want)[0])
    stayer.expect_none(QUIET / 2)  # and no duplicates after that
    assert set(held) <= set(got)
    assert sorted(got) == want, f"each message once to the remaining member: {got}"


@pytest.mark.parametrize("expiry", [0, 300], ids=["session-ends", "session-kept"])
def test_v5_shared_qos2_in_flight_stays_with_its_member(broker, expiry):
    """[MQTT-4.8.2-4]: if the connection breaks while a QoS 2 message is being delivered to the
    chosen member, the server MUST complete the delivery to that client when it reconnects;
    [MQTT-4.8.2-5]: if its session ends first, the server MUST NOT send the message to any
    other subscribed client. A raw member receives a QoS 2 PUBLISH, never answers PUBREC, and
    its connection drops: the other member must not receive that message; with a kept session,
    the member gets it again (DUP 1, same packet id [MQTT-4.4.0-1]) when it comes back."""
    t = uid("share2")
    cid = uid("raw")
    raw = broker.raw()
    assert raw.connect(cid, 5, clean=True, session_expiry=expiry).reason == 0
    assert raw.subscribe(f"$share/g/{t}", 2).body[-1] == 2
    other = broker.client(version=MQTTv5)
    other.subscribe(f"$share/g/{t}", 2)
    pub = broker.client(version=MQTTv5)
    # Publish until the raw member has been handed one (round-robin: within two).
    held = None
    for i in range(4):
        pub.publish(t, f"q{i}".encode(), qos=2)
        try:
            p = raw.read(timeout=QUIET)
        except AssertionError:
            continue
        assert p is not None and p.type == PUBLISH and p.qos == 2
        held = p
        break
    assert held is not None, "the raw member never got a message"
    sent = {f"q{j}".encode() for j in range(i + 1)}
    others = sent - {held.payload}
    # The other member gets its own share, and nothing else.
    got = sorted(m.payload for m in other.expect_n(len(others)))
    assert got == sorted(others)
    raw.close()
    broker.wait_disconnected(cid)
    other.expect_none(QUIET)
    if expiry:
        back = broker.raw()
        ack = back.connect(cid, 5, clean=False, session_expiry=expiry)
        assert ack.body[0] & 0x01, "session present"
        p = back.read()
        assert p is not None and p.type == PUBLISH
        assert (p.payload, p.packet_id, p.dup, p.qos) == (held.payload, held.packet_id, True, 2)
        back.send(packet(0x50, held.packet_id.to_bytes(2, "big")))  # PUBREC
        rel = back.read()
        assert rel is not None and rel.type == PUBREL


def test_v5_shared_subscription_no_local_is_protocol_error(broker):
    """[MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error → DISCONNECT
    0x82."""
    broker.not_on_mosquitto("accepts No Local on a shared subscription")
    c = broker.client(version=MQTTv5)
    c.m.subscribe(f"$share/g/{uid('t')}", options=SubscribeOptions(qos=1, noLocal=True))
    d = c.wait_disconnect()
    assert (d.from_server, d.reason) == (True, 0x82)


def test_v5_retained_message_not_sent_to_new_shared_subscription(broker):
    """3.3.1.3: retained messages are sent when a new *Non-shared* Subscription is made; a
    shared subscription gets none (later retained publishes are delivered as usual)."""
    broker.not_on_mosquitto("sends retained messages to a new shared subscription")
    t = uid("shareret")
    pub = broker.client(version=MQTTv5)
    pub.publish(t, b"retained", qos=1, retain=True)
    member = broker.client(version=MQTTv5)
    member.subscribe(f"$share/g/{t}", 1)
    pub.publish(t, b"live", qos=1)
    m = member.expect()  # a retained message would have been queued before it
    assert (m.payload, m.retain) == (b"live", False)
