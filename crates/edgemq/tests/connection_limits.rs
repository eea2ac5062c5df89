//! Connection limits through the real binary (issue 17, "connections"): open connections in
//! total and per source address, the connection rate per address, WebSocket frames no
//! larger than the maximum packet size, and a descriptor limit that cannot be reached
//! before `--max-connections`. A connection beyond a limit is closed at accept without
//! anything read or sent; after each case a fresh client is served.
//!
//! Nothing here waits on a clock except the rate window (one second).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgemq_testkit::broker::Broker;
use edgemq_testkit::fixtures::{listener, Dirs};
use edgemq_testkit::raw::*;

/// Idle sockets must outlive the test, whatever its speed: no CONNECT timeout in the way.
const NO_CONNECT_TIMEOUT: [&str; 2] = ["--connect-timeout", "3600"];

/// Open a socket and send a 3.1.1 CONNECT; true if a CONNACK (accepted) came back, false
/// if the broker closed the connection without a byte.
fn try_connect(addr: SocketAddr, client_id: &str) -> (bool, RawClient) {
    let mut c = RawClient::open(addr);
    c.send_lenient(&connect_v311(client_id, flags::CLEAN, 0));
    match c.next_event(WAIT) {
        Event::Packet(p) => {
            assert_eq!(p, CONNACK_OK, "unexpected answer to CONNECT");
            (true, c)
        }
        Event::Closed => (false, c),
        Event::TimedOut => panic!("no CONNACK and no close within {WAIT:?}"),
    }
}

/// A fresh client is served: the broker frees a place once it has seen a close, so retry
/// (bounded) until it has; the refused attempts in between are closed at once.
fn served_eventually(addr: SocketAddr, client_id: &str) -> RawClient {
    let deadline = Instant::now() + WAIT;
    loop {
        let (ok, c) = try_connect(addr, client_id);
        if ok {
            return c;
        }
        assert!(Instant::now() < deadline, "no place freed within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The counter summary the broker logs on SIGUSR1 contains `needle`.
fn counter_logged(b: &Broker, needle: &str) -> bool {
    let _ = Command::new("kill")
        .args(["-USR1", &b.pid().to_string()])
        .status();
    b.wait_for_log(needle, WAIT)
}

#[test]
fn idle_sockets_beyond_max_connections_are_refused_and_closing_frees_places() {
    if !Broker::edgemq_only() {
        return;
    }
    let mut args = vec!["--max-connections", "50"];
    args.extend(NO_CONNECT_TIMEOUT);
    let b = Broker::start_with(&args);
    // 50 idle sockets: nothing sent. The broker accepts in arrival order, so they hold
    // the 50 places before the 51st is looked at.
    let mut idle: Vec<RawClient> = (0..50).map(|_| RawClient::open(b.addr)).collect();
    let (ok, mut refused) = try_connect(b.addr, "51st");
    assert!(
        !ok,
        "the 51st connection was served beyond --max-connections 50"
    );
    refused.expect_closed_silently();
    assert!(
        b.wait_for_log("max_connections(50)=", WAIT),
        "no refusal line in the log:\n{}",
        b.log()
    );
    assert!(
        counter_logged(&b, "refusals=[max_connections="),
        "{}",
        b.log()
    );

    // Close 10 idle sockets: 10 fresh clients are served, the 11th is refused again.
    idle.truncate(40);
    let fresh: Vec<RawClient> = (0..10)
        .map(|i| served_eventually(b.addr, &format!("fresh-{i}")))
        .collect();
    let (ok, _) = try_connect(b.addr, "one-too-many");
    assert!(
        !ok,
        "served beyond --max-connections 50 after places were reused"
    );
    drop(idle);
    // The served clients work.
    let mut probe = fresh.into_iter().next().unwrap();
    probe.ping();
    served_eventually(b.addr, "after").ping();
}

/// A connection from another loopback address (Linux routes all of 127/8 to lo).
fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let stream = tcp_from(src, to);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

#[test]
fn per_address_limit_leaves_other_addresses_served() {
    if !Broker::edgemq_only() {
        return;
    }
    let mut args = vec!["--max-connections-per-address", "5"];
    args.extend(NO_CONNECT_TIMEOUT);
    let b = Broker::start_with(&args);
    let mut idle: Vec<RawClient> = (0..5).map(|_| RawClient::open(b.addr)).collect();
    let (ok, mut refused) = try_connect(b.addr, "sixth");
    assert!(!ok, "a 6th connection from 127.0.0.1 was served");
    refused.expect_closed_silently();

    // Another source address is not affected.
    let mut other = connect_from("127.0.0.2", b.addr);
    other
        .write_all(&connect_v311("other-address", flags::CLEAN, 0))
        .unwrap();
    let mut connack = [0u8; 4];
    other
        .read_exact(&mut connack)
        .expect("CONNACK for 127.0.0.2");
    assert_eq!(connack, CONNACK_OK);

    assert!(
        b.wait_for_log("max_connections_per_address(5)=", WAIT),
        "{}",
        b.log()
    );
    assert!(
        counter_logged(&b, "max_connections_per_address=1"),
        "{}",
        b.log()
    );
    // One closed: a fresh client from 127.0.0.1 is served.
    idle.pop();
    served_eventually(b.addr, "fresh").ping();
}

#[test]
fn connect_rate_per_address_refuses_a_burst_and_recovers_after_a_second() {
    if !Broker::edgemq_only() {
        return;
    }
    let rate = 3;
    let b = Broker::start_with(&["--max-connect-rate-per-address", "3"]);
    // A burst of 20 sockets at once, then a CONNECT on each.
    let started = Instant::now();
    let mut burst: Vec<RawClient> = (0..20).map(|_| RawClient::open(b.addr)).collect();
    let mut served = 0;
    for (i, c) in burst.iter_mut().enumerate() {
        c.send_lenient(&connect_v311(&format!("burst-{i}"), flags::CLEAN, 0));
        match c.next_event(WAIT) {
            Event::Packet(p) => {
                assert_eq!(p, CONNACK_OK);
                served += 1;
            }
            Event::Closed => {}
            Event::TimedOut => panic!("no answer within {WAIT:?}"),
        }
    }
    // The bucket holds `rate` and refills `rate` a second: what the burst may get.
    let allowed = rate + (started.elapsed().as_secs_f64() * f64::from(rate)).ceil() as u32;
    assert!(served >= rate, "only {served} of a burst of 20 were served");
    assert!(
        served <= allowed,
        "{served} of a burst of 20 served at {rate}/s (at most {allowed} in {:?})",
        started.elapsed()
    );
    assert!(
        b.wait_for_log("max_connect_rate_per_address(3/s)=", WAIT),
        "{}",
        b.log()
    );
    assert!(
        counter_logged(&b, "max_connect_rate_per_address="),
        "{}",
        b.log()
    );
    // The rate window: after a second the address has its connections back.
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, mut c) = try_connect(b.addr, "after-a-second");
    assert!(ok, "refused a second after the burst");
    c.ping();
}

/// `n` idle sockets (nothing sent) on `addr`, each accepted: the broker takes them in
/// arrival order, so they hold their places before a later connection is looked at.
fn idle_sockets(addr: SocketAddr, n: usize) -> Vec<RawClient> {
    (0..n).map(|_| RawClient::open(addr)).collect()
}

/// A free port below the ephemeral range (32768 up on Linux), distinct from those already
/// `taken`: the many client sockets the tests of this file open in parallel take ephemeral
/// ports, one of which could be a port `edgemq_testkit::free_port` returned before the broker binds.
fn free_low_port(taken: &mut Vec<u16>) -> u16 {
    let start = 20_000 + (std::process::id() % 10_000) as u16;
    (0..10_000u16)
        .map(|i| 20_000 + (start - 20_000 + i) % 10_000)
        .find(|p| !taken.contains(p) && std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .inspect(|p| taken.push(*p))
        .expect("a free port below the ephemeral range")
}

#[test]
fn a_listener_beyond_its_connection_limit_refuses_at_accept_and_other_listeners_are_served() {
    if !Broker::edgemq_only() {
        return;
    }
    // Two listeners: `capped` with its own limit (the BrokerListener port's edgemq
    // extension maxConnections: 3), `flagged` under --max-connections-per-listener 5.
    let d = Dirs::new();
    let mut taken = Vec::new();
    let (capped_port, flagged_port) = (free_low_port(&mut taken), free_low_port(&mut taken));
    let capped_yaml = |max: usize| {
        listener(
            "capped",
            "ClusterIp",
            &format!("    - port: {capped_port}\n      maxConnections: {max}\n"),
        )
    };
    d.write("capped.yaml", &capped_yaml(3));
    d.write(
        "flagged.yaml",
        &listener(
            "flagged",
            "ClusterIp",
            &format!("    - port: {flagged_port}\n"),
        ),
    );
    let mut args = vec!["--max-connections-per-listener", "5"];
    args.extend(NO_CONNECT_TIMEOUT);
    let b = Broker::start_config(&d.config, &d.data, 2, &args);
    let capped = b.listener_addr("capped");
    let flagged = b.listener_addr("flagged");

    // The port's own limit: the 4th connection is closed at accept, nothing sent (like
    // Mosquitto's per-listener max_connections; no CONNACK: nothing is read).
    let mut on_capped = idle_sockets(capped, 3);
    let (ok, mut refused) = try_connect(capped, "capped-4th");
    assert!(
        !ok,
        "a 4th connection was served on a port with maxConnections 3"
    );
    refused.expect_closed_silently();
    assert!(
        b.wait_for_log("max_connections_per_listener(3)=1", WAIT),
        "no refusal line for the capped port:\n{}",
        b.log()
    );
    // The other listener is not affected by it, and has the command line's limit.
    let mut on_flagged = idle_sockets(flagged, 4);
    let (ok, mut c) = try_connect(flagged, "flagged-5th");
    assert!(ok, "the 5th connection on the other listener was refused");
    c.ping();
    on_flagged.push(c);
    let (ok, mut refused) = try_connect(flagged, "flagged-6th");
    assert!(
        !ok,
        "a 6th connection was served under --max-connections-per-listener 5"
    );
    refused.expect_closed_silently();
    assert!(
        b.wait_for_log("max_connections_per_listener(5)=1", WAIT),
        "no refusal line for the flagged port:\n{}",
        b.log()
    );
    let line = b
        .log()
        .lines()
        .find(|l| l.contains("max_connections_per_listener(5)="))
        .unwrap()
        .to_string();
    assert!(
        line.contains("listener=flagged") && line.contains(&format!("port={flagged_port}")),
        "{line}"
    );
    assert!(
        counter_logged(&b, "max_connections_per_listener=2"),
        "{}",
        b.log()
    );

    // Closing connections gives their places back: a fresh client is served on each.
    on_capped.pop();
    let mut capped_fresh = served_eventually(capped, "capped-fresh");
    capped_fresh.ping();
    on_flagged.truncate(3);
    served_eventually(flagged, "flagged-fresh").ping();

    // A raised maxConnections applies on reload, in place: the port is not restarted
    // (its connections stay) and a 4th connection is now served.
    let log_before = b.log().len();
    d.write("capped.yaml", &capped_yaml(4));
    let deadline = Instant::now() + WAIT;
    while !b.log()[log_before..].contains("configuration applied") {
        assert!(Instant::now() < deadline, "no reload:\n{}", b.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let reload = b.log()[log_before..].to_string();
    assert!(
        reload.contains("restarted=[]"),
        "the port was restarted for a new maxConnections:\n{reload}"
    );
    capped_fresh.ping();
    let (ok, mut c) = try_connect(capped, "capped-4th-after-reload");
    assert!(ok, "refused under the reloaded maxConnections 4");
    c.ping();
    drop(on_capped);
}

// ---------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------

/// Open a WebSocket (subprotocol mqtt) to `addr` by hand.
fn ws_open(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_nodelay(true).unwrap();
    write!(
        s,
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte)
            .expect("WebSocket handshake response");
        response.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    s
}

/// A client frame header (masked with a zero key, so the payload goes as is).
fn ws_header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xFFFF => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// CONNECT in one binary frame; the CONNACK must come back in one.
fn ws_mqtt_round_trip(addr: SocketAddr) {
    let mut s = ws_open(addr);
    let connect = connect_v311("ws-fresh", flags::CLEAN, 0);
    let mut frame = ws_header(true, 0x2, connect.len() as u64);
    frame.extend_from_slice(&connect);
    s.write_all(&frame).unwrap();
    let mut answer = [0u8; 6];
    s.read_exact(&mut answer).expect("CONNACK over WebSocket");
    assert_eq!(answer, [0x82, 4, 0x20, 0x02, 0x00, 0x00]);
}

/// Write `total` bytes of payload; how many went before the connection failed.
fn stream_payload(s: &mut TcpStream, total: usize) -> usize {
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0;
    while written < total {
        let n = chunk.len().min(total - written);
        match s.write(&chunk[..n]) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    written
}

#[test]
fn websocket_frames_larger_than_the_maximum_packet_are_refused_unbuffered() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let ws = edgemq_testkit::broker::free_port();
    d.write(
        "listeners.yaml",
        &listener(
            "ws",
            "ClusterIp",
            &format!("    - port: {ws}\n      protocol: WebSockets\n"),
        ),
    );
    let b = Broker::start_config(&d.config, &d.data, 1, &["--max-packet-size", "65536"]);
    let addr = b.listener_addr("ws");
    ws_mqtt_round_trip(addr);
    let rss_before = b.rss_kib();

    // One 15 MiB frame: below tungstenite's own 16 MiB default (which the broker used to
    // accept, buffering it whole), far above the 64 KiB maximum packet. Refused from its
    // header: the broker closes, and the rest cannot be written (socket buffers hold
    // less than 15 MiB).
    const BIG: usize = 15 << 20;
    let mut s = ws_open(addr);
    s.write_all(&ws_header(true, 0x2, BIG as u64)).unwrap();
    let written = stream_payload(&mut s, BIG);
    assert!(
        written < BIG,
        "the broker took a whole {BIG}-byte frame on a 65536-byte maximum packet"
    );

    // A message fragmented into frames each under the limit, together over it.
    let mut s = ws_open(addr);
    let part = vec![0u8; 40 * 1024];
    let mut first = ws_header(false, 0x2, part.len() as u64);
    first.extend_from_slice(&part);
    let mut second = ws_header(true, 0x0, part.len() as u64);
    second.extend_from_slice(&part);
    let _ = s.write_all(&first);
    let _ = s.write_all(&second);
    let mut rest = Vec::new();
    let closed = match s.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(
        closed,
        "an 80 KiB fragmented message did not end the connection"
    );

    let rss_after = b.rss_kib();
    eprintln!("15 MiB frame: {written} bytes written before the close; RSS {rss_before} -> {rss_after} KiB");
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    ws_mqtt_round_trip(addr);
}

// ---------------------------------------------------------------------------------------
// File descriptors
// ---------------------------------------------------------------------------------------

/// `edgemq serve` under `prlimit --nofile=SOFT:HARD`; the listening address and the log.
struct Limited {
    child: std::process::Child,
    addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    _data: Dirs,
}

impl Limited {
    fn start(nofile: &str, extra: &[&str]) -> Limited {
        use std::io::BufRead;
        let data = Dirs::new();
        let mut child = Command::new("prlimit")
            .arg(format!("--nofile={nofile}"))
            .arg(env!("CARGO_BIN_EXE_edgemq"))
            .arg("serve")
            // With --config the listeners come from the folder.
            .args(if extra.contains(&"--config") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .arg("--in-memory")
            .args(["--data-dir", data.data.to_str().unwrap()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prlimit (util-linux)");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("listening") {
                    if let Some(a) = line.split(" addr=").nth(1) {
                        let a = a.split_whitespace().next().unwrap_or_default();
                        let _ = tx.send(a.trim_matches('"').to_string());
                    }
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("not listening:\n{}", log.lock().unwrap()))
            .parse()
            .unwrap();
        Limited {
            child,
            addr,
            log,
            _data: data,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_low_descriptor_limit_is_raised_to_the_hard_limit() {
    if !Broker::edgemq_only() {
        return;
    }
    // Soft 256, hard 4096: 1,000 connections + the reserve fit under the hard limit.
    let b = Limited::start(
        "256:4096",
        &[
            "--max-connections",
            "1000",
            "--max-connect-rate-per-address",
            "100000",
        ],
    );
    assert!(
        b.log().contains("raised the open-file limit"),
        "{}",
        b.log()
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", b.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(soft >= 1064, "soft limit still {soft}: {line}");
    // 300 idle sockets (more than the old soft limit) do not lock a client out.
    let idle: Vec<RawClient> = (0..300).map(|_| RawClient::open(b.addr)).collect();
    let (ok, mut c) = try_connect(b.addr, "beyond-old-limit");
    assert!(ok, "refused with 300 idle sockets:\n{}", b.log());
    c.ping();
    drop(idle);
}

#[test]
fn a_descriptor_limit_below_max_connections_lowers_it_and_new_clients_are_not_locked_out() {
    if !Broker::edgemq_only() {
        return;
    }
    // Hard limit 128: max-connections 1000 cannot be met; the broker takes 128 - 64 = 64.
    let mut args = vec!["--max-connections", "1000"];
    args.extend(NO_CONNECT_TIMEOUT);
    let b = Limited::start("128:128", &args);
    assert!(
        b.log().contains("connections are limited to 64"),
        "{}",
        b.log()
    );
    let mut idle: Vec<RawClient> = (0..64).map(|_| RawClient::open(b.addr)).collect();
    let (ok, _) = try_connect(b.addr, "65th");
    assert!(!ok, "the 65th connection was served on 128 descriptors");
    // Never out of descriptors: the refusals are logged, not accept errors.
    let deadline = Instant::now() + WAIT;
    while !b.log().contains("max_connections(64)=") {
        assert!(Instant::now() < deadline, "{}", b.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!b.log().contains("accept failed"), "{}", b.log());
    idle.pop();
    served_eventually(b.addr, "fresh").ping();
}

/// A Broker resource's maxConnections is held to the open-file limit too (the flag is, above).
#[test]
fn a_broker_resource_max_connections_is_held_to_the_descriptor_limit() {
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let port = edgemq_testkit::broker::free_port();
    d.write(
        "listeners.yaml",
        &listener(
            "l",
            "ClusterIp",
            &edgemq_testkit::fixtures::plain_port(port),
        ),
    );
    d.write(
        "broker.yaml",
        &format!(
            "apiVersion: {}\nkind: Broker\nmetadata:\n  name: default\nspec:\n  advanced:\n    clients:\n      maxConnections: 1000\n",
            edgemq_testkit::fixtures::V1
        ),
    );
    let b = Limited::start("128:128", &["--config", d.config.to_str().unwrap()]);
    assert!(
        b.log()
            .contains("Broker maxConnections is above what the open-file limit allows")
            && b.log().contains("limited to 64"),
        "{}",
        b.log()
    );
    let mut idle: Vec<RawClient> = (0..64).map(|_| RawClient::open(b.addr)).collect();
    let (ok, _) = try_connect(b.addr, "65th-configured");
    assert!(!ok, "the 65th connection was served on 128 descriptors");
    idle.pop();
    served_eventually(b.addr, "fresh-configured").ping();
}

#[test]
fn a_websocket_text_frame_closes_the_connection_without_a_connack() {
    // [MQTT-6.0.0-1] MQTT Control Packets MUST be sent in WebSocket binary data frames. If
    // any other type of data frame is received the recipient MUST close the Network
    // Connection.
    if !Broker::edgemq_only() {
        return;
    }
    let d = Dirs::new();
    let ws = edgemq_testkit::broker::free_port();
    let port = format!("    - port: {ws}\n      protocol: WebSockets\n");
    d.write("listeners.yaml", &listener("ws", "ClusterIp", &port));
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    let addr = b.listener_addr("ws");
    let mut s = ws_open(addr);
    let connect = connect_v311("text-frame", flags::CLEAN, 0);
    let mut frame = ws_header(true, 0x1, connect.len() as u64);
    frame.extend_from_slice(&connect);
    s.write_all(&frame).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    // At most a WebSocket close frame (opcode 8), never a binary frame with a CONNACK.
    assert!(
        rest.is_empty() || rest[0] & 0x0F == 0x8,
        "expected a close, got {rest:02x?}"
    );
    // The broker still serves binary frames.
    ws_mqtt_round_trip(addr);
}
