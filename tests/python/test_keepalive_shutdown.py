"""Keep-alive enforcement (raw sockets: paho always pings) and graceful shutdown (paho)."""

import time

from conftest import CONNACK, DISCONNECT, PINGREQ, PINGRESP, WAIT, MQTTv5, MQTTv311, packet, uid

#: Upper bound for the keep-alive disconnection of a 1 s keep-alive (1.5 s by the spec).
KEEPALIVE_BOUND = 5.0


def _silent_until_closed(raw):
    """Read until the broker closes; return (packets before the close, seconds waited)."""
    start = time.monotonic()
    got = []
    while True:
        p = raw.read(timeout=WAIT)
        if p is None:
            return got, time.monotonic() - start
        got.append(p)


def _assert_bound(broker, waited):
    if broker.mosquitto:
        return  # mosquitto 2.0.11 checks keep-alives on a coarse timer (~5 s for 1 s)
    assert waited <= KEEPALIVE_BOUND, waited


def _assert_keep_alive_disconnect(broker, got):
    """The server may send DISCONNECT 0x8D before closing (4.13); edgemq does."""
    seen = [(p.type, p.reason) for p in got]
    if broker.mosquitto:
        assert seen in ([], [(DISCONNECT, 0x8D)]), seen
    else:
        assert seen == [(DISCONNECT, 0x8D)]


def test_v311_keep_alive_timeout_closes_connection(broker):
    """3.1.1 [MQTT-3.1.2-24]: keep-alive 1 s and then silence → the server closes the
    connection after 1.5 × keep-alive (asserted: not before the keep-alive, within 5 s),
    without sending anything (3.1.1 has no DISCONNECT from the server)."""
    raw = broker.raw()
    start = time.monotonic()
    ack = raw.connect(uid("ka"), version=4, keepalive=1)
    assert ack.body == b"\x00\x00"
    got, _ = _silent_until_closed(raw)
    waited = time.monotonic() - start
    assert got == []
    assert waited >= 1.0, waited
    _assert_bound(broker, waited)


def test_v5_keep_alive_timeout_disconnect_0x8d(broker):
    """5.0 [MQTT-3.1.2-22]: keep-alive 1 s and then silence → the connection is closed after
    1.5 × keep-alive (asserted: not before the keep-alive, within 5 s); edgemq first sends
    DISCONNECT 0x8D (Keep Alive timeout)."""
    raw = broker.raw()
    start = time.monotonic()
    ack = raw.connect(uid("ka"), version=5, keepalive=1)
    assert ack.type == CONNACK and ack.reason == 0
    got, _ = _silent_until_closed(raw)
    waited = time.monotonic() - start
    assert waited >= 1.0, waited
    _assert_bound(broker, waited)
    _assert_keep_alive_disconnect(broker, got)


def test_v5_server_keep_alive_is_enforced(start_broker):
    """[MQTT-3.2.2-21]: with --max-keep-alive 1 a client asking for no keep-alive (0) is told
    Server Keep Alive 1 and is held to it: silence → DISCONNECT 0x8D."""
    b = start_broker("--max-keep-alive", "1")
    raw = b.raw()
    ack = raw.connect(uid("ka"), version=5, keepalive=0)
    assert ack.reason == 0
    assert ack.properties().get(0x13) == [1]  # Server Keep Alive
    got, waited = _silent_until_closed(raw)
    _assert_keep_alive_disconnect(b, got)
    _assert_bound(b, waited)


def test_pingreq_answered(broker):
    """[MQTT-3.12.4-1]: PINGREQ → PINGRESP (and it counts as activity)."""
    raw = broker.raw()
    raw.connect(uid("ping"), version=5, keepalive=60)
    raw.send(packet(PINGREQ << 4, b""))
    p = raw.read()
    assert p is not None and p.type == PINGRESP


def test_sigterm_disconnects_clients_and_exits_0(broker):
    """SIGTERM: graceful shutdown. An MQTT 5 client gets DISCONNECT 0x8B (Server shutting
    down, 4.13: the server may say why it closes); a 3.1.1 client is closed; the broker exits
    with status 0."""
    v5 = broker.client(version=MQTTv5)
    v311 = broker.client(version=MQTTv311)
    assert broker.terminate() == 0
    d = v5.wait_disconnect()
    if not broker.mosquitto:  # mosquitto 2.0.11 just closes (0x8B is optional, 4.13)
        assert (d.from_server, d.reason) == (True, 0x8B)
        broker.wait_log(r"shutting down")
    d = v311.wait_disconnect()
    assert d.from_server is False
