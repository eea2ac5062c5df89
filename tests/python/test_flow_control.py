"""Flow control (MQTT 5 section 4.9) with paho-mqtt's manual acknowledgements."""

import pytest

from conftest import QUIET, MQTTv5, MQTTv311, uid


@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize(
    "version, window_from",
    [(MQTTv5, "client"), (MQTTv311, "broker")],
    ids=["v5-client-receive-maximum", "v311-broker-receive-maximum"],
)
def test_unacknowledged_publishes_limited_to_receive_maximum(start_broker, version, window_from, qos):
    """[MQTT-3.3.4-9], [MQTT-4.9.0-2]: the server sends no more than Receive Maximum QoS 1/2
    PUBLISHes that the client has not acknowledged (PUBACK / PUBCOMP); each acknowledgement
    lets one more through, in order. v5: the client's Receive Maximum (3) from CONNECT;
    3.1.1 has no such property and edgemq uses --receive-maximum (3) as the window."""
    window = 3
    if window_from == "client":
        b = start_broker()
        sub = b.client(version=version, receive_maximum=window, manual_ack=True)
    else:
        b = start_broker("--receive-maximum", str(window))
        sub = b.client(version=version, manual_ack=True)
    t = uid("flow")
    sub.subscribe(t, qos)
    pub = b.client(version=MQTTv5)
    want = [f"m{i}".encode() for i in range(10)]
    for p in want:
        pub.publish(t, p, qos=qos)  # all routed: the broker holds what it may not send yet
    received = sub.expect_n(window)
    # The window is full: nothing more arrives until something is acknowledged.
    sub.expect_none(QUIET)
    b.not_on_mosquitto("sends more than Receive Maximum once acknowledgements flow")
    acked = 0
    while len(received) < len(want):
        sub.ack(received[acked])
        acked += 1
        received.append(sub.expect())
        # Unacknowledged = handed to us (including any already waiting in the queue) - acked.
        assert len(received) + sub.messages.qsize() - acked <= window
    assert [m.payload for m in received] == want
    assert {m.qos for m in received} == {qos}
    for m in received[acked:]:
        sub.ack(m)
    # Everything acknowledged: new messages flow freely again.
    pub.publish(t, b"after", qos=qos)
    assert sub.expect().payload == b"after"


def test_v5_qos0_not_limited_by_receive_maximum(start_broker):
    """Receive Maximum limits only QoS 1/2 (3.1.2.11.3): QoS 0 messages still flow while the
    QoS 1 window is full (messages behind a waiting QoS 1 message keep their order)."""
    b = start_broker()
    sub = b.client(version=MQTTv5, receive_maximum=1, manual_ack=True)
    t0, t1 = uid("q0"), uid("q1")
    sub.subscribe(t0, 0)
    sub.subscribe(t1, 1)
    pub = b.client(version=MQTTv5)
    pub.publish(t1, b"held", qos=1)
    held = sub.expect()
    assert held.payload == b"held"
    for i in range(5):
        pub.publish(t0, f"free{i}".encode(), qos=0)
    assert [m.payload for m in sub.expect_n(5)] == [f"free{i}".encode() for i in range(5)]
    sub.ack(held)


def test_v5_resent_publishes_on_resume_respect_new_receive_maximum(broker):
    """[MQTT-4.9.0-1]/[MQTT-4.9.0-2]: the send quota starts at the Receive Maximum of the new
    connection and every QoS > 0 PUBLISH sent counts, re-sent ones included: a session resumed
    with 5 unacknowledged messages by a client with Receive Maximum 2 gets 2 of them (DUP 1,
    [MQTT-4.4.0-1]), then one more per acknowledgement, in order."""
    broker.not_on_mosquitto("re-sends every unacknowledged PUBLISH on resume, beyond Receive Maximum")
    t = uid("resume-rm")
    cid = uid("sub")
    sub = broker.client(cid, MQTTv5, session_expiry=300, receive_maximum=5, manual_ack=True)
    sub.subscribe(t, 1)
    pub = broker.client(version=MQTTv5)
    want = [f"m{i}".encode() for i in range(8)]
    for p in want:
        pub.publish(t, p, qos=1)
    assert [m.payload for m in sub.expect_n(5)] == want[:5]
    sub.drop()
    broker.wait_disconnected(cid)
    again = broker.client(cid, MQTTv5, clean=False, session_expiry=300, receive_maximum=2, manual_ack=True)
    assert again.connack.session_present is True
    received = again.expect_n(2)
    again.expect_none(QUIET)
    assert [(m.payload, m.dup) for m in received] == [(b"m0", True), (b"m1", True)]
    acked = 0
    while len(received) < len(want):
        again.ack(received[acked])
        acked += 1
        received.append(again.expect())
        assert len(received) + again.messages.qsize() - acked <= 2
    assert [m.payload for m in received] == want
