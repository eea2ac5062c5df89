//! Authentication-bypass matrix: hand-built CONNECT/AUTH packets against a port whose chain
//! is UsernamePassword (the AIO documentation's passwords.toml). Every attempt must be
//! refused, asserted by the exact CONNACK reason code (MQTT 5) or return code (3.1.1).
//! Certificate cases are in `authn_x509.rs`; token cases in `authn_chain.rs` and
//! `crates/security/tests/sat.rs`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use edgemq_testkit::broker::{free_port, Broker};
use edgemq_testkit::fixtures::*;
use edgemq_testkit::raw;
use edgemq_testkit::raw::{connect_raw, flags, lp, p_str, packet, prop, props, RawClient};

const CLIENT1_HASH: &str = "$pbkdf2-sha512$i=100000,l=64$HqJwOCHweNk1pLryiu3RsA$KVSvxKYcibIG5S5n55RvxKRTdAAfCUtBJoy5IuFzdSZyzkwvUcU+FPawEWFPn+06JyZsndfRTfpiEh+2eSJLkg";

const BAD_USER_OR_PASSWORD: u8 = 0x86;
const NOT_AUTHORIZED: u8 = 0x87;
const BAD_AUTH_METHOD: u8 = 0x8C;
const MALFORMED: u8 = 0x81;

/// The broker, its address, and its configuration folder (removed when dropped).
fn start() -> (Broker, std::net::SocketAddr, Dirs) {
    let d = Dirs::new();
    let port = free_port();
    d.write(
        "l.yaml",
        &listener(
            "pw",
            "ClusterIp",
            &plain_port(port).replace(
                "      protocol: Mqtt\n",
                "      protocol: Mqtt\n      authenticationRef: passwords\n",
            ),
        ),
    );
    d.write("a.yaml", &format!("apiVersion: {V1}\nkind: BrokerAuthentication\nmetadata:\n  name: passwords\nspec:\n  authenticationMethods:\n    - method: UsernamePassword\n      usernamePasswordSettings:\n        secretRef: passwords-db\n"));
    d.write("secrets/passwords-db/passwords.toml", PASSWORDS_TOML);
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    let addr = b.addr;
    (b, addr, d)
}

/// A CONNECT with optional user name / password bytes and v5 properties.
fn connect(level: u8, user: Option<&[u8]>, pass: Option<&[u8]>, v5_props: &[u8]) -> Vec<u8> {
    let mut f = flags::CLEAN;
    let mut payload = lp(b"bypass");
    if let Some(u) = user {
        f |= flags::USERNAME;
        payload.extend(lp(u));
    }
    if let Some(p) = pass {
        f |= flags::PASSWORD;
        payload.extend(lp(p));
    }
    let props = (level == 5).then_some(v5_props);
    connect_raw(b"MQTT", level, f, 0, props, &payload)
}

fn refused(addr: std::net::SocketAddr, level: u8, bytes: &[u8], code: u8, case: &str) {
    let mut c = RawClient::open(addr);
    c.send(bytes);
    let ack = c.expect_connack(level == 5);
    assert_eq!(ack.code, code, "{case}: expected {code:#04x}, got {ack:?}");
}

fn no_props() -> Vec<u8> {
    raw::no_props()
}

fn method(name: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut items = vec![p_str(prop::AUTHENTICATION_METHOD, name.as_bytes())];
    if let Some(d) = data {
        items.push(p_str(prop::AUTHENTICATION_DATA, d));
    }
    props(&items)
}

#[test]
fn every_bypass_attempt_is_refused_with_the_right_reason_code() {
    let (_b, addr, _dirs) = start();
    let np = no_props();
    let long = vec![b'x'; 65_535];
    let cases: Vec<(&str, u8, Vec<u8>, u8)> = vec![
        (
            "empty password",
            5,
            connect(5, Some(b"client1"), Some(b""), &np),
            BAD_USER_OR_PASSWORD,
        ),
        (
            "password without user name (v5 allows the flags)",
            5,
            connect(5, None, Some(b"password"), &np),
            NOT_AUTHORIZED,
        ),
        (
            "user name without password",
            5,
            connect(5, Some(b"client1"), None, &np),
            NOT_AUTHORIZED,
        ),
        (
            "no credentials at all",
            5,
            connect(5, None, None, &np),
            NOT_AUTHORIZED,
        ),
        (
            "password with a trailing NUL byte",
            5,
            connect(5, Some(b"client1"), Some(b"password\0"), &np),
            BAD_USER_OR_PASSWORD,
        ),
        (
            "password with a trailing newline",
            5,
            connect(5, Some(b"client1"), Some(b"password\n"), &np),
            BAD_USER_OR_PASSWORD,
        ),
        (
            "user name in another case",
            5,
            connect(5, Some(b"Client1"), Some(b"password"), &np),
            BAD_USER_OR_PASSWORD,
        ),
        (
            "user name with a trailing space",
            5,
            connect(5, Some(b"client1 "), Some(b"password"), &np),
            BAD_USER_OR_PASSWORD,
        ),
        (
            "the stored hash sent as the password",
            5,
            connect(5, Some(b"client1"), Some(CLIENT1_HASH.as_bytes()), &np),
            BAD_USER_OR_PASSWORD,
        ),
        (
            "another user's password",
            5,
            connect(5, Some(b"client1"), Some(b"password2"), &np),
            BAD_USER_OR_PASSWORD,
        ),
        (
            "unknown user with a known password",
            5,
            connect(5, Some(b"admin"), Some(b"password"), &np),
            BAD_USER_OR_PASSWORD,
        ),
        (
            "$sat user name on a port without token auth",
            5,
            connect(5, Some(b"$sat"), Some(b"password"), &np),
            NOT_AUTHORIZED,
        ),
        (
            "sat:// prefix on a port without token auth",
            5,
            connect(5, Some(b"sat://client1"), Some(b"password"), &np),
            NOT_AUTHORIZED,
        ),
        (
            "K8S-SAT enhanced method on a port without it",
            5,
            connect(5, None, None, &method("K8S-SAT", Some(b"eyJhbGciOi"))),
            BAD_AUTH_METHOD,
        ),
        (
            "unknown enhanced method with valid credentials",
            5,
            connect(
                5,
                Some(b"client1"),
                Some(b"password"),
                &method("SCRAM-SHA-1", None),
            ),
            BAD_AUTH_METHOD,
        ),
        (
            "empty enhanced method name",
            5,
            connect(5, Some(b"client1"), Some(b"password"), &method("", None)),
            BAD_AUTH_METHOD,
        ),
        (
            "64 KiB password",
            5,
            connect(5, Some(b"client1"), Some(&long), &np),
            BAD_USER_OR_PASSWORD,
        ),
        (
            "64 KiB unknown user name",
            5,
            connect(5, Some(&long), Some(b"password"), &np),
            BAD_USER_OR_PASSWORD,
        ),
        (
            "NUL in the user name",
            5,
            connect(5, Some(b"client1\0"), Some(b"password"), &np),
            MALFORMED,
        ),
        (
            "v3.1.1 wrong password",
            4,
            connect(4, Some(b"client1"), Some(b"nope"), &[]),
            4,
        ),
        (
            "v3.1.1 another user's password",
            4,
            connect(4, Some(b"client2"), Some(b"password"), &[]),
            4,
        ),
        ("v3.1.1 no credentials", 4, connect(4, None, None, &[]), 5),
    ];
    assert!(cases.len() >= 20);
    for (case, level, bytes, code) in &cases {
        refused(addr, *level, bytes, *code, case);
    }
}

#[test]
fn an_admitted_client_cannot_switch_identity_or_reauthenticate_without_a_method() {
    let (_b, addr, _dirs) = start();
    // Admitted as client1 ...
    let mut c = RawClient::open(addr);
    c.send(&connect(
        5,
        Some(b"client1"),
        Some(b"password"),
        &no_props(),
    ));
    assert_eq!(c.expect_connack(true).code, 0);
    // ... a second CONNECT as client2 is a protocol error [MQTT-3.1.0-2] ...
    c.send(&connect(
        5,
        Some(b"client2"),
        Some(b"password2"),
        &no_props(),
    ));
    let got = c.expect_closed();
    assert_eq!(
        got.last().map(|p| p[0]),
        Some(0xE0),
        "DISCONNECT expected: {got:?}"
    );
    assert_eq!(got.last().map(|p| p[2]), Some(0x82), "{got:?}");
    // ... and so is AUTH on a connection that did not use enhanced authentication.
    let mut c = RawClient::open(addr);
    c.send(&connect(
        5,
        Some(b"client1"),
        Some(b"password"),
        &no_props(),
    ));
    assert_eq!(c.expect_connack(true).code, 0);
    let mut body = vec![0x19];
    body.extend(method("K8S-SAT", Some(b"token")));
    c.send(&packet(0xF0, &body));
    let got = c.expect_closed();
    assert_eq!(
        got.last().map(|p| (p[0], p[2])),
        Some((0xE0, 0x82)),
        "{got:?}"
    );
}

#[test]
fn the_right_password_is_admitted_in_both_versions() {
    let (_b, addr, _dirs) = start();
    for level in [4u8, 5] {
        let mut c = RawClient::open(addr);
        let props = if level == 5 { no_props() } else { Vec::new() };
        c.send(&connect(
            level,
            Some(b"client2"),
            Some(b"password2"),
            &props,
        ));
        assert_eq!(c.expect_connack(level == 5).code, 0, "level {level}");
    }
}
