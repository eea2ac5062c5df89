"""Harness for the paho-mqtt suite: the real `edgemq` binary, real paho-mqtt 2.x clients.

Run by `crates/edgemq/tests/paho.rs` (`cargo test -p edgemq --test paho`), or directly:

    EDGEMQ_BIN=target/debug/edgemq python3 -m pytest tests/python -q -p no:cacheprovider

Every test gets its own broker (`broker` fixture, or `start_broker(*serve_args)` for extra
`serve` flags), started on a free port; its stderr log is kept for assertions and printed when
a test fails. Waits are for concrete events (CONNACK, SUBACK, PUBACK, a message, a log line)
with generous upper bounds; nothing relies on a sleep for something to have happened. Where a
test shows that something does NOT happen it watches for it over `QUIET` seconds, so a
correct broker always passes.

Set `EDGEMQ_TEST_AGAINST=mosquitto` to run the suite against Debian's mosquitto instead, to
check that a test asserts the specification rather than edgemq's own behaviour: tests that need
edgemq flags or log lines skip there, and where mosquitto 2.0.11 deviates from the
specification the test says so and skips (`broker.not_on_mosquitto(why)`).

Test modules import the helpers below with `from conftest import ...` (pytest's default
"prepend" import mode puts this directory on sys.path).
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import signal
import socket
import struct
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

try:
    import paho.mqtt
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode
    from paho.mqtt.subscribeoptions import SubscribeOptions
except ImportError as e:  # pragma: no cover - reported by paho.rs as well
    raise SystemExit(f'paho-mqtt 2.x is required: python3 -m pip install "paho-mqtt>=2,<3" ({e})')

if int(paho.mqtt.__version__.split(".")[0]) != 2:
    raise SystemExit(f"paho-mqtt 2.x is required, found {paho.mqtt.__version__}")

MQTTv311 = mqtt.MQTTv311
MQTTv5 = mqtt.MQTTv5

#: Upper bound for anything that should happen (generous: CI machines are slow).
WAIT = 10.0
#: How long "nothing arrives" is watched for. Absence can only be shown over a window.
QUIET = 1.0

ROOT = Path(__file__).resolve().parents[2]

#: "edgemq" (default) or "mosquitto" (see the module docstring).
AGAINST = os.environ.get("EDGEMQ_TEST_AGAINST", "edgemq")


def edgemq_bin() -> str:
    path = os.environ.get("EDGEMQ_BIN") or str(ROOT / "target" / "debug" / "edgemq")
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"edgemq binary not found at {path!r}: set EDGEMQ_BIN or run `cargo build -p edgemq`",
            pytrace=False,
        )
    return path


_ids = itertools.count(1)


def uid(prefix: str = "c") -> str:
    """A client id / topic component unique within the run."""
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


# --------------------------------------------------------------------------------------------
# The broker process


class Broker:
    """`edgemq serve --listen 127.0.0.1:0 --log-level debug <args>`, killed at teardown."""

    LISTENING = re.compile(r"\blistening\b.*\baddr=(\d+\.\d+\.\d+\.\d+):(\d+)")

    def __init__(self, args: tuple[str, ...] = (), tmp: Path | None = None):
        self.args = list(args)
        self.data_dir: str | None = None
        self.mosquitto = AGAINST == "mosquitto"
        if self.mosquitto:
            if args:
                pytest.skip(f"edgemq-only flags {' '.join(args)} (EDGEMQ_TEST_AGAINST=mosquitto)")
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            assert tmp is not None
            conf = tmp / "mosquitto.conf"
            conf.write_text(
                f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                "log_dest stderr\nlog_type all\n"
            )
            cmd = ["mosquitto", "-c", str(conf)]
        else:
            cmd = [edgemq_bin(), "serve", "--listen", "127.0.0.1:0", "--log-level", "debug", *args]
            # Each broker keeps its durable state in a directory of its own.
            if "--data-dir" not in args and "--in-memory" not in args:
                self.data_dir = tempfile.mkdtemp(prefix="edgemq-pytest-")
                cmd += ["--data-dir", self.data_dir]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self.clients: list[Client] = []
        self.raws: list[RawClient] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if self.mosquitto:
            self.wait_log(r"mosquitto version .* running", timeout=30)
            self.host, self.port = "127.0.0.1", port
        else:
            m = self.wait_log(self.LISTENING, timeout=30)
            self.host, self.port = m.group(1), int(m.group(2))

    def edgemq_only(self, why: str = "checks an edgemq log line") -> None:
        """Skip the rest of the test when running against mosquitto."""
        if self.mosquitto:
            pytest.skip(f"edgemq-only: {why}")

    def not_on_mosquitto(self, why: str) -> None:
        """mosquitto 2.0.11 deviates from the specification here: skip against it."""
        if self.mosquitto:
            pytest.skip(f"mosquitto 2.0.11 deviates: {why}")

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    # -- log ---------------------------------------------------------------------------------

    def log(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    def log_lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def wait_log(self, pattern: str | re.Pattern, timeout: float = WAIT, start: int = 0) -> re.Match:
        """Wait for a log line (from line index `start`) matching `pattern`."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = start
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    break
                self._cond.wait(left)
        tail = "\n".join(self._lines[-60:])
        raise AssertionError(f"broker log has no line matching {rx.pattern!r} within {timeout}s; tail:\n{tail}")

    def log_mark(self) -> int:
        """Index to pass as `start` to `wait_log` to only look at lines logged from now on."""
        with self._cond:
            return len(self._lines)

    def wait_disconnected(self, client_id: str, start: int = 0) -> None:
        """Wait until the broker has ended the connection of `client_id` (its task has logged
        `client disconnected`): its session no longer takes deliveries as an online one."""
        if self.mosquitto:
            cid = re.escape(client_id)
            self.wait_log(rf"Client {cid} (disconnected|closed its connection)", start=start)
            return
        self.wait_log(rf"client_id={re.escape(client_id)}[ }}].*client disconnected", start=start)

    def wait_session_expired(self, client_id: str, start: int = 0) -> None:
        """Wait until the broker logs that the offline session of `client_id` expired."""
        cid = re.escape(client_id)
        if self.mosquitto:
            self.wait_log(rf"Expiring client {cid} due to timeout", start=start)
        else:
            self.wait_log(rf"session expired.*client_id={cid}\b", start=start)

    # -- clients -----------------------------------------------------------------------------

    def client(self, client_id: str | None = None, version: int = MQTTv5, **kw: Any) -> "Client":
        """A paho client, connected (CONNACK received) unless `connect=False`."""
        c = Client(self, uid("c") if client_id is None else client_id, version, **kw)
        self.clients.append(c)
        return c

    def raw(self) -> "RawClient":
        r = RawClient(self.host, self.port)
        self.raws.append(r)
        return r

    # -- lifecycle ---------------------------------------------------------------------------

    def terminate(self, timeout: float = WAIT) -> int:
        """SIGTERM; wait for the exit and return the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"edgemq did not exit within {timeout}s of SIGTERM; log:\n{self.log()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for c in self.clients:
            c.close()
        for r in self.raws:
            r.close()
        self._reader.join(5)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def start_broker(request):
    """Factory: `start_broker("--max-packet-size", "1000")` starts a broker with extra flags."""
    brokers: list[Broker] = []

    def start(*args: str) -> Broker:
        tmp = request.getfixturevalue("tmp_path") if AGAINST == "mosquitto" else None
        b = Broker(tuple(args), tmp)
        brokers.append(b)
        return b

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for b in brokers:
        b.close()
        if failed:
            print(f"---- {AGAINST} {' '.join(b.args)} log (last 80 lines) ----")
            print("\n".join(b.log_lines()[-80:]))


@pytest.fixture
def broker(start_broker) -> Broker:
    """A broker with default settings."""
    return start_broker()


@pytest.fixture(params=[MQTTv311, MQTTv5], ids=["v311", "v5"])
def mqtt_version(request) -> int:
    """Run the test once with an MQTT 3.1.1 client and once with an MQTT 5 client."""
    return request.param


# --------------------------------------------------------------------------------------------
# paho clients


@dataclass
class Msg:
    """A message as paho delivered it to on_message."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int
    properties: Any = None

    def prop(self, name: str, default: Any = None) -> Any:
        if self.properties is None:
            return default
        return getattr(self.properties, name, default)


@dataclass
class Disconnected:
    from_server: bool  # a DISCONNECT packet arrived (v5), rather than the socket closing
    reason: int
    properties: Any = None


@dataclass
class ConnAck:
    session_present: bool
    reason: int
    properties: Any = None

    def prop(self, name: str, default: Any = None) -> Any:
        if self.properties is None:
            return default
        return getattr(self.properties, name, default)


def props(packet_type: int, **values: Any) -> Properties:
    """paho Properties: props(PacketTypes.PUBLISH, UserProperty=[("a", "1")], ContentType="x")."""
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def disconnect_reason(code: int) -> ReasonCode:
    return ReasonCode(PacketTypes.DISCONNECT, identifier=code)


class _Waiter:
    """Results keyed by packet id, filled by paho callbacks, awaited by the test thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._results: dict[int, Any] = {}

    def put(self, key: int, value: Any) -> None:
        with self._cond:
            self._results[key] = value
            self._cond.notify_all()

    def take(self, key: int, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while key not in self._results:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} for packet id {key} within {timeout}s")
                self._cond.wait(left)
            return self._results.pop(key)


class Client:
    """A paho-mqtt 2.x client (CallbackAPIVersion.VERSION2) running its network loop in a
    thread, recording everything the broker sends into queues.

    `clean` is Clean Session (3.1.1) or Clean Start (5). It never reconnects by itself.
    """

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        version: int = MQTTv5,
        *,
        clean: bool = True,
        session_expiry: int | None = None,
        keepalive: int = 60,
        will: dict | None = None,
        receive_maximum: int | None = None,
        max_packet_size: int | None = None,
        manual_ack: bool = False,
        connect: bool = True,
        expect_reason: int = 0,
    ):
        self.broker = broker
        self.client_id = client_id
        self.version = version
        self.clean = clean
        self.keepalive = keepalive
        self.messages: queue.Queue[Msg] = queue.Queue()
        self.connacks: queue.Queue[ConnAck] = queue.Queue()
        self.disconnects: queue.Queue[Disconnected] = queue.Queue()
        self._subacks = _Waiter()
        self._unsubacks = _Waiter()
        self._pubacks = _Waiter()
        self._loop_started = False
        self.m = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=version,
            clean_session=(clean if version != MQTTv5 else None),
            reconnect_on_failure=False,
            manual_ack=manual_ack,
        )
        self.m.on_connect = self._on_connect
        self.m.on_message = self._on_message
        self.m.on_disconnect = self._on_disconnect
        self.m.on_subscribe = self._on_subscribe
        self.m.on_unsubscribe = self._on_unsubscribe
        self.m.on_publish = self._on_publish
        if will is not None:
            self.m.will_set(
                will["topic"],
                will.get("payload"),
                will.get("qos", 0),
                will.get("retain", False),
                will.get("properties"),
            )
        self.connect_props = None
        if version == MQTTv5:
            p = Properties(PacketTypes.CONNECT)
            if session_expiry is not None:
                p.SessionExpiryInterval = session_expiry
            if receive_maximum is not None:
                p.ReceiveMaximum = receive_maximum
            if max_packet_size is not None:
                p.MaximumPacketSize = max_packet_size
            self.connect_props = p
        self.connack: ConnAck | None = None
        if connect:
            self.connect(expect_reason=expect_reason)

    # -- callbacks (paho's thread) -----------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connacks.put(ConnAck(bool(flags.session_present), int(reason_code.value), properties))

    def _on_message(self, client, userdata, message):
        self.messages.put(
            Msg(
                topic=message.topic,
                payload=bytes(message.payload),
                qos=message.qos,
                retain=bool(message.retain),
                dup=bool(message.dup),
                mid=message.mid,
                properties=getattr(message, "properties", None),
            )
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnects.put(
            Disconnected(bool(flags.is_disconnect_packet_from_server), int(reason_code.value), properties)
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self._subacks.put(mid, [int(rc.value) for rc in reason_codes])

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        self._unsubacks.put(mid, [int(rc.value) for rc in reason_codes])

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._pubacks.put(mid, int(reason_code.value))

    # -- operations (test thread) ------------------------------------------------------------

    def connect(self, expect_reason: int = 0) -> ConnAck:
        kw: dict[str, Any] = {}
        if self.version == MQTTv5:
            kw["clean_start"] = self.clean
            kw["properties"] = self.connect_props
        self.m.connect(self.broker.host, self.broker.port, self.keepalive, **kw)
        self.m.loop_start()
        self._loop_started = True
        try:
            ack = self.connacks.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no CONNACK within {WAIT}s") from None
        assert ack.reason == expect_reason, (
            f"{self.client_id}: CONNACK reason 0x{ack.reason:02X}, expected 0x{expect_reason:02X}"
        )
        self.connack = ack
        return ack

    def subscribe(
        self,
        topic: str,
        qos: int = 1,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        subscription_id: int | None = None,
    ) -> list[int]:
        """SUBSCRIBE one filter; wait for the SUBACK; return its reason codes / granted QoS."""
        if self.version == MQTTv5:
            opts = SubscribeOptions(
                qos=qos,
                noLocal=no_local,
                retainAsPublished=retain_as_published,
                retainHandling=retain_handling,
            )
            p = None
            if subscription_id is not None:
                p = props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=subscription_id)
            rc, mid = self.m.subscribe(topic, options=opts, properties=p)
        else:
            rc, mid = self.m.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe {topic}: {rc}"
        return self._subacks.take(mid, WAIT, "SUBACK")

    def unsubscribe(self, topic: str) -> list[int]:
        rc, mid = self.m.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        return self._unsubacks.take(mid, WAIT, "UNSUBACK")

    def publish(
        self,
        topic: str,
        payload: bytes | str | None = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        wait: bool = True,
    ) -> int | None:
        """PUBLISH; for QoS 1/2 wait for the PUBACK/PUBCOMP (the broker has routed the message
        by then) and return its reason code (always 0 in 3.1.1). QoS 0: wait until written."""
        info = self.m.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if not wait:
            # Fire and forget (the test watches for the broker's reaction). paho may report
            # NO_CONN when the broker answered this very packet with DISCONNECT before
            # publish() returned: the packet was sent, and the test's wait_disconnect()
            # checks the outcome.
            assert info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN), f"publish {topic}: {info.rc}"
            return None
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish {topic}: {info.rc}"
        return self._pubacks.take(info.mid, WAIT, "PUBACK/PUBCOMP")

    def ack(self, msg: Msg) -> None:
        """Manual acknowledgement (client created with manual_ack=True)."""
        assert self.m.ack(msg.mid, msg.qos) == mqtt.MQTT_ERR_SUCCESS

    def expect(self, timeout: float = WAIT) -> Msg:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout}s") from None

    def expect_n(self, n: int, timeout: float = WAIT) -> list[Msg]:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            try:
                out.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: {len(out)} of {n} messages within {timeout}s: "
                    f"{[m.payload for m in out]}"
                ) from None
        return out

    def until(self, payload: bytes, timeout: float = WAIT) -> list[Msg]:
        """Messages up to and including the first one whose payload is `payload`."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: no {payload!r} within {timeout}s; got {[m.payload for m in out]}"
                ) from None
            out.append(m)
            if m.payload == payload:
                return out

    def expect_none(self, window: float = QUIET) -> None:
        try:
            m = self.messages.get(timeout=window)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message {m}")

    def wait_disconnect(self, timeout: float = WAIT) -> Disconnected:
        try:
            d = self.disconnects.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: still connected after {timeout}s") from None
        self._stop_loop()
        return d

    def disconnect(self, reason: int | None = None, properties: Properties | None = None) -> None:
        """DISCONNECT (v5: with `reason`, default 0x00) and wait until paho has closed."""
        if self.version == MQTTv5 and (reason is not None or properties is not None):
            self.m.disconnect(reasoncode=disconnect_reason(reason or 0), properties=properties)
        else:
            self.m.disconnect()
        self.wait_disconnect()

    def drop(self) -> None:
        """Close the network connection without DISCONNECT (an abnormal close for the broker)."""
        sock = self.m.socket()
        assert sock is not None, "not connected"
        sock.shutdown(socket.SHUT_RDWR)
        d = self.wait_disconnect()
        assert not d.from_server

    def freeze(self) -> None:
        """Stop paho's network loop but keep the connection open: from now on the client
        sends nothing (no PINGREQ) and reads nothing."""
        self._stop_loop()
        assert self.m.socket() is not None, "not connected"

    def _stop_loop(self) -> None:
        if self._loop_started:
            self._loop_started = False
            self.m.loop_stop()

    def close(self) -> None:
        try:
            sock = self.m.socket()
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._stop_loop()


# --------------------------------------------------------------------------------------------
# Raw MQTT over a socket, for what paho will not do (stay silent, hold a QoS 2 PUBLISH
# unanswered).

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


@dataclass
class RawPacket:
    type: int
    flags: int
    body: bytes
    # PUBLISH only
    topic: str = ""
    packet_id: int | None = None
    payload: bytes = b""
    qos: int = 0
    dup: bool = False
    retain: bool = False
    raw_props: bytes = field(default=b"", repr=False)

    @property
    def reason(self) -> int:
        """v5 reason code of CONNACK/DISCONNECT (DISCONNECT without a body = 0x00)."""
        if self.type == CONNACK:
            return self.body[1]
        return self.body[0] if self.body else 0

    def properties(self) -> dict[int, list]:
        """v5 properties of a CONNACK / DISCONNECT / PUBLISH: {identifier: [values]}."""
        if self.type == PUBLISH:
            return parse_properties(self.raw_props)
        start = 2 if self.type == CONNACK else 1
        if len(self.body) <= start:
            return {}
        n, used = read_varint(self.body, start)
        return parse_properties(self.body[start + used : start + used + n])


_BYTE = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_TWO = {0x13, 0x21, 0x22, 0x23}
_FOUR = {0x02, 0x11, 0x18, 0x27}
_STR = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F}
_BIN = {0x09, 0x16}


def read_varint(buf: bytes, i: int) -> tuple[int, int]:
    """(value, bytes used) of the Variable Byte Integer at buf[i:]."""
    value, mult, used = 0, 1, 0
    while True:
        b = buf[i + used]
        value += (b & 0x7F) * mult
        mult *= 128
        used += 1
        if not b & 0x80:
            return value, used


def parse_properties(buf: bytes) -> dict[int, list]:
    out: dict[int, list] = {}
    i = 0
    while i < len(buf):
        ident, used = read_varint(buf, i)
        i += used
        if ident in _BYTE:
            v, i = buf[i], i + 1
        elif ident in _TWO:
            v, i = struct.unpack(">H", buf[i : i + 2])[0], i + 2
        elif ident in _FOUR:
            v, i = struct.unpack(">I", buf[i : i + 4])[0], i + 4
        elif ident == 0x0B:
            v, used = read_varint(buf, i)
            i += used
        elif ident in _STR or ident in _BIN:
            n = struct.unpack(">H", buf[i : i + 2])[0]
            v = buf[i + 2 : i + 2 + n]
            v = v.decode() if ident in _STR else v
            i += 2 + n
        elif ident == 0x26:
            n = struct.unpack(">H", buf[i : i + 2])[0]
            k = buf[i + 2 : i + 2 + n].decode()
            i += 2 + n
            n = struct.unpack(">H", buf[i : i + 2])[0]
            v = (k, buf[i + 2 : i + 2 + n].decode())
            i += 2 + n
        else:
            raise AssertionError(f"unknown property 0x{ident:02X} in {buf!r}")
        out.setdefault(ident, []).append(v)
    return out


class RawClient:
    """A socket speaking hand-built MQTT."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=WAIT)
        self.buf = b""
        self.version = 5
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connect(
        self,
        client_id: str,
        version: int = 5,
        keepalive: int = 60,
        clean: bool = True,
        session_expiry: int | None = None,
    ) -> RawPacket:
        self.version = version
        vh = mqtt_str("MQTT") + bytes([version, 0x02 if clean else 0x00]) + struct.pack(">H", keepalive)
        if version == 5:
            p = b""
            if session_expiry is not None:
                p += b"\x11" + struct.pack(">I", session_expiry)
            vh += varint(len(p)) + p
        self.send(packet(0x10, vh + mqtt_str(client_id)))
        ack = self.read()
        assert ack is not None and ack.type == CONNACK, f"expected CONNACK, got {ack}"
        return ack

    def subscribe(self, topic_filter: str, qos: int, packet_id: int = 1) -> RawPacket:
        body = struct.pack(">H", packet_id)
        if self.version == 5:
            body += b"\x00"
        body += mqtt_str(topic_filter) + bytes([qos])
        self.send(packet(0x82, body))
        ack = self.read()
        assert ack is not None and ack.type == SUBACK, f"expected SUBACK, got {ack}"
        return ack

    def read(self, timeout: float = WAIT) -> RawPacket | None:
        """The next packet, or None if the broker closed the connection. Raises
        AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no packet within {timeout}s")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError(f"no packet within {timeout}s") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if self.buf:
                    raise AssertionError(f"connection closed inside a packet: {self.buf!r}")
                self.closed = True
                return None
            self.buf += chunk

    def _parse(self) -> RawPacket | None:
        if len(self.buf) < 2:
            return None
        length, mult, i = 0, 1, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        if len(self.buf) < i + length:
            return None
        first, body = self.buf[0], self.buf[i : i + length]
        self.buf = self.buf[i + length :]
        p = RawPacket(type=first >> 4, flags=first & 0x0F, body=body)
        if p.type == PUBLISH:
            p.dup, p.qos, p.retain = bool(first & 0x08), (first >> 1) & 0x03, bool(first & 0x01)
            n = struct.unpack(">H", body[:2])[0]
            p.topic = body[2 : 2 + n].decode()
            j = 2 + n
            if p.qos:
                p.packet_id = struct.unpack(">H", body[j : j + 2])[0]
                j += 2
            if self.version == 5:
                plen, used = read_varint(body, j)
                p.raw_props = body[j + used : j + used + plen]
                j += used + plen
            p.payload = body[j:]
        return p

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
