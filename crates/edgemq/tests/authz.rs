//! Authorization with real clients: the AIO documentation's example policy
//! (`aio-docs/authz-v1`: username/password attributes feeding `{principal.*}` topics),
//! enforcement on CONNECT, PUBLISH, SUBSCRIBE and wills in MQTT 5 and 3.1.1, a reload that
//! revokes a subscription, denials that name the rule, and `edgemq authz explain`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::net::SocketAddr;
use std::process::Command;

use edgemq_security::password::PasswordHash;
use edgemq_testkit::broker::{free_port, run_with_timeout, Broker};
use edgemq_testkit::fixtures::*;
use edgemq_testkit::raw;
use edgemq_testkit::raw::{connect_raw, flags, lp, RawClient};

const EXAMPLE: &str =
    include_str!("../../config/tests/fixtures/examples/aio-docs/authz-v1/config.yaml");

/// client1 (site1, floor1), client2 (site1, floor2) as in the documentation, and client3
/// with no attributes. Cheap hashes: this is about authorization.
fn passwords() -> String {
    let h = |p: &str| PasswordHash::new(p.as_bytes(), 1000).unwrap().to_phc();
    format!(
        "[client1]\npassword = \"{}\"\n[client1.attributes]\nfloor = \"floor1\"\nsite = \"site1\"\n\n[client2]\npassword = \"{}\"\n[client2.attributes]\nfloor = \"floor2\"\nsite = \"site1\"\n\n[client3]\npassword = \"{}\"\n",
        h("password"),
        h("password2"),
        h("password3")
    )
}

struct Setup {
    d: Dirs,
    b: Broker,
    port: u16,
}

fn start() -> Setup {
    start_with(&[])
}

/// [`start`] with extra `serve` arguments.
fn start_with(extra: &[&str]) -> Setup {
    let d = Dirs::new();
    let port = free_port();
    d.write(
        "config.yaml",
        &EXAMPLE
            .replace("port: 1884", &format!("port: {port}"))
            .replace("serviceType: LoadBalancer", "serviceType: ClusterIp"),
    );
    d.write("secrets/passwords-db/passwords.toml", &passwords());
    let b = Broker::start_config(&d.config, &d.data, 1, extra);
    Setup { d, b, port }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn mosquitto_pub(
    port: u16,
    version: &str,
    id: &str,
    user: &str,
    pw: &str,
    topic: &str,
    extra: &[&str],
) -> (Option<i32>, String) {
    let mut args = vec!["-q", "1", "-u", user, "-P", pw, "-t", topic, "-m", id];
    args.extend_from_slice(extra);
    run_mosquitto_pub(port, version, id, &args)
}

/// A raw CONNECT with credentials at `level`; returns the client after a successful CONNACK.
fn raw_login(port: u16, level: u8, id: &str, user: &str, pw: &str) -> (RawClient, u8) {
    let mut c = RawClient::open(addr(port));
    let mut payload = lp(id.as_bytes());
    payload.extend(lp(user.as_bytes()));
    payload.extend(lp(pw.as_bytes()));
    let props = (level == 5).then_some(&[0u8][..]);
    c.send(&connect_raw(
        b"MQTT",
        level,
        flags::CLEAN | flags::USERNAME | flags::PASSWORD,
        0,
        props,
        &payload,
    ));
    let ack = c.expect_connack(level == 5);
    (c, ack.code)
}

#[test]
fn connect_publish_and_subscribe_follow_the_documentation_policy() {
    let s = start();
    // client2 may subscribe to telemetry/# (rule 2) and sees what client1 publishes on its
    // own floor/client-id topic (rule 1).
    let sub = Sub::start(
        addr(s.port),
        "telemetry/#",
        &["-u", "client2", "-P", "password2", "-i", "watcher"],
    );
    let (code, out) = mosquitto_pub(
        s.port,
        "5",
        "c1",
        "client1",
        "password",
        "telemetry/floor1/c1",
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(sub.message(), "telemetry/floor1/c1 c1");

    // PUBLISH outside the pattern: v5 PUBACK 0x87, not delivered.
    let (mut c, code) = raw_login(s.port, 5, "c1", "client1", "password");
    assert_eq!(code, 0);
    c.send(&raw::publish_v5("telemetry/floor2/c1", 1, 7, &[0], b"x"));
    let ack = c.read_packet();
    assert_eq!(
        ack,
        vec![0x40, 0x03, 0x00, 0x07, 0x87],
        "PUBACK 0x87 expected"
    );
    assert!(
        s.b.wait_for_log("action=\"publish\" topic=\"telemetry/floor2/c1\"", WAIT),
        "{}",
        s.b.log()
    );
    assert!(
        s.b.wait_for_log(
            "rules for this client: rules[0] (Publish on telemetry/floor1/c1)",
            WAIT
        ),
        "{}",
        s.b.log()
    );
    // The variable is the client id: another client id's topic is refused too.
    c.send(&raw::publish_v5(
        "telemetry/floor1/someone-else",
        1,
        8,
        &[0],
        b"x",
    ));
    assert_eq!(c.read_packet()[4], 0x87);
    // MQTT 3.1.1: acknowledged (no reason codes) and not delivered; a later allowed message
    // is the next one the subscriber sees.
    let (mut c3, code) = raw_login(s.port, 4, "c1-311", "client1", "password");
    assert_eq!(code, 0);
    c3.send(&raw::publish_v311(
        "telemetry/floor2/c1-311",
        1,
        9,
        b"denied",
    ));
    assert_eq!(c3.read_packet(), vec![0x40, 0x02, 0x00, 0x09]);
    c3.send(&raw::publish_v311(
        "telemetry/floor1/c1-311",
        1,
        10,
        b"allowed",
    ));
    assert_eq!(c3.read_packet(), vec![0x40, 0x02, 0x00, 0x0A]);
    assert_eq!(sub.message(), "telemetry/floor1/c1-311 allowed");

    // SUBSCRIBE per filter: v5 0x87 / v3 0x80 next to granted ones.
    c.send(&raw::subscribe(
        11,
        Some(&[0]),
        &[
            ("commands/floor1/#", 1),
            ("commands/floor2/#", 1),
            ("$share/g/commands/floor1/x", 1),
        ],
    ));
    assert_eq!(
        c.read_packet(),
        vec![0x90, 0x06, 0x00, 0x0B, 0x00, 0x01, 0x87, 0x01]
    );
    c3.send(&raw::subscribe(
        12,
        None,
        &[("commands/floor2/#", 0), ("commands/floor1/+", 0)],
    ));
    assert_eq!(c3.read_packet(), vec![0x90, 0x04, 0x00, 0x0C, 0x80, 0x00]);

    // CONNECT: client3 has no attributes, so no rule grants Connect: v5 0x87, v3 rc 5.
    assert_eq!(raw_login(s.port, 5, "c3", "client3", "password3").1, 0x87);
    assert_eq!(raw_login(s.port, 4, "c3", "client3", "password3").1, 5);
    assert!(
        s.b.wait_for_log(
            "no rule matched (no rule names this client id, user name or attributes)",
            WAIT
        ),
        "{}",
        s.b.log()
    );
    let _ = &s.d;
}

#[test]
fn wills_are_checked_when_they_would_be_published() {
    let s = start();
    let sub = Sub::start(
        addr(s.port),
        "telemetry/#",
        &["-u", "client2", "-P", "password2", "-i", "watcher"],
    );
    // Two clients with wills, killed without DISCONNECT: the one on a forbidden topic is
    // dropped (and logged), the allowed one is delivered.
    let will = |id: &str, topic: &str| {
        Command::new("mosquitto_sub")
            .args([
                "-V",
                "5",
                "-h",
                "127.0.0.1",
                "-p",
                &s.port.to_string(),
                "-i",
                id,
                "-u",
                "client1",
                "-P",
                "password",
            ])
            .args([
                "-t",
                "commands/floor1/x",
                "--will-topic",
                topic,
                "--will-payload",
                id,
                "--will-qos",
                "1",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut forbidden = will("w-bad", "telemetry/floor2/w-bad");
    assert!(
        s.b.wait_for_log("client_id=w-bad", WAIT) || s.b.wait_for_log("client_id=\"w-bad\"", WAIT),
        "{}",
        s.b.log()
    );
    forbidden.kill().unwrap();
    let _ = forbidden.wait();
    assert!(
        s.b.wait_for_log("topic=\"telemetry/floor2/w-bad\"", WAIT),
        "{}",
        s.b.log()
    );
    let mut allowed = will("w-ok", "telemetry/floor1/w-ok");
    assert!(
        s.b.wait_for_log("client_id=w-ok", WAIT) || s.b.wait_for_log("client_id=\"w-ok\"", WAIT),
        "{}",
        s.b.log()
    );
    allowed.kill().unwrap();
    let _ = allowed.wait();
    // The first message the watcher gets is the allowed will: the forbidden one never came.
    assert_eq!(sub.message(), "telemetry/floor1/w-ok w-ok");
}

#[test]
fn a_reload_that_changes_the_policy_revokes_subscriptions_at_once() {
    let s = start();
    // The watcher holds telemetry/# and telemetry/floor1/#.
    let sub = Sub::start(
        addr(s.port),
        "telemetry/#",
        &[
            "-u",
            "client2",
            "-P",
            "password2",
            "-i",
            "watcher",
            "-t",
            "telemetry/floor1/#",
        ],
    );
    // New policy: client2 may only subscribe to telemetry/floor1/#.
    s.d.write(
        "config.yaml",
        &EXAMPLE
            .replace("port: 1884", &format!("port: {}", s.port))
            .replace("serviceType: LoadBalancer", "serviceType: ClusterIp")
            .replace(
                "              - \"telemetry/#\"",
                "              - \"telemetry/floor1/#\"",
            ),
    );
    assert!(
        s.b.wait_for_log("subscription revoked", WAIT),
        "{}",
        s.b.log()
    );
    assert!(s.b.log().contains("filter=telemetry/#"), "{}", s.b.log());
    // client2 publishes on floor2 (only the revoked filter matches), then client1 on floor1
    // (the kept filter): the watcher's next message is the floor1 one.
    let (code, out) = mosquitto_pub(
        s.port,
        "5",
        "p2",
        "client2",
        "password2",
        "telemetry/floor2/p2",
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = mosquitto_pub(
        s.port,
        "5",
        "p1",
        "client1",
        "password",
        "telemetry/floor1/p1",
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(sub.message(), "telemetry/floor1/p1 p1");
}

#[test]
fn authz_explain_decides_without_a_broker() {
    let d = Dirs::new();
    d.write("config.yaml", EXAMPLE);
    d.write("secrets/passwords-db/passwords.toml", &passwords());
    let explain = |args: &[&str]| {
        let (code, out, err) = run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_edgemq"))
                .args([
                    "authz",
                    "explain",
                    "--config",
                    d.config.to_str().unwrap(),
                    "--port",
                    "1884",
                ])
                .args(args),
            WAIT,
        );
        (code, format!("{out}{err}"))
    };
    let (code, out) = explain(&[
        "--client-id",
        "c1",
        "--username",
        "client1",
        "--attr",
        "site=site1",
        "--attr",
        "floor=floor1",
        "--publish",
        "telemetry/floor1/c1",
    ]);
    assert_eq!(
        (code, out.trim()),
        (
            Some(0),
            "allowed: allowed by BrokerAuthorization/my-authz-policies rules[0]"
        )
    );
    let (code, out) = explain(&[
        "--client-id",
        "c1",
        "--attr",
        "site=site1",
        "--publish",
        "telemetry/floor1/c1",
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("denied: denied by BrokerAuthorization/my-authz-policies: no rule matched; rules for this client: rules[0]"), "{out}");
    let (code, out) = explain(&[
        "--client-id",
        "x",
        "--username",
        "client2",
        "--subscribe",
        "telemetry/+/t",
    ]);
    assert_eq!(
        (code, out.trim()),
        (
            Some(0),
            "allowed: allowed by BrokerAuthorization/my-authz-policies rules[1]"
        )
    );
    let (code, out) = explain(&["--client-id", "x", "--connect"]);
    assert_eq!(code, Some(1), "{out}");
    let (code, _, out) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_edgemq")).args([
            "authz",
            "explain",
            "--config",
            d.config.to_str().unwrap(),
            "--port",
            "9",
            "--client-id",
            "x",
            "--connect",
        ]),
        WAIT,
    );
    assert_eq!(code, Some(2), "{out}");
}

/// The v1beta1 shapes: `authorizationEnabled` on the listener, `listenerRef` and
/// `enableCache` on the BrokerAuthorization.
#[test]
fn v1beta1_authorization_form_is_enforced() {
    let d = Dirs::new();
    let port = free_port();
    d.write(
        "legacy.yaml",
        &format!(
            "apiVersion: mq.iotoperations.azure.com/v1beta1\nkind: BrokerListener\nmetadata:\n  name: legacy\nspec:\n  brokerRef: broker\n  serviceType: clusterIp\n  port: {port}\n  authenticationEnabled: true\n  authorizationEnabled: true\n---\napiVersion: mq.iotoperations.azure.com/v1beta1\nkind: BrokerAuthentication\nmetadata:\n  name: authn\nspec:\n  listenerRef: [legacy]\n  authenticationMethods:\n    - usernamePassword: {{secretName: passwords-db}}\n---\napiVersion: mq.iotoperations.azure.com/v1beta1\nkind: BrokerAuthorization\nmetadata:\n  name: authz\nspec:\n  listenerRef: [legacy]\n  authorizationPolicies:\n    enableCache: true\n    rules:\n      - principals:\n          usernames: [client1]\n        brokerResources:\n          - method: Connect\n          - method: Publish\n            topics: [\"legacy/{{principal.username}}/#\"]\n          - method: Subscribe\n            topics: [\"legacy/#\"]\n"
        ),
    );
    d.write("secrets/passwords-db/passwords.toml", &passwords());
    let _b = Broker::start_config(&d.config, &d.data, 1, &[]);
    let sub = Sub::start(
        addr(port),
        "legacy/#",
        &["-u", "client1", "-P", "password", "-i", "legacy-sub"],
    );
    let (mut c, code) = raw_login(port, 5, "legacy-pub", "client1", "password");
    assert_eq!(code, 0);
    c.send(&raw::publish_v5("legacy/client2/x", 1, 1, &[0], b"no"));
    assert_eq!(c.read_packet(), vec![0x40, 0x03, 0x00, 0x01, 0x87]);
    c.send(&raw::publish_v5("legacy/client1/x", 1, 2, &[0], b"yes"));
    assert_eq!(c.read_packet()[..4], [0x40, 0x02, 0x00, 0x02]);
    assert_eq!(sub.message(), "legacy/client1/x yes");
    // client2 is authenticated but no rule lets it connect.
    assert_eq!(raw_login(port, 5, "c2", "client2", "password2").1, 0x87);
}

#[test]
fn authz_explain_over_the_admin_api_decides_as_the_running_policy() {
    if !Broker::edgemq_only() {
        return;
    }
    let Setup { d, b, port } = start_with(&["--admin-listen", "127.0.0.1:0"]);
    let admin = b.admin_addr("admin");
    let listeners = edgemq_testkit::http::get(admin, "/api/v1/listeners").json();
    let name = listeners["listeners"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(listeners["listeners"][0]["port"], port, "{listeners}");
    let explain = |username: &str, topic: &str| {
        let body = serde_json::json!({
            "listener": name, "client_id": "c1", "username": username,
            "attributes": { "site": "site1", "floor": "floor1" },
            "action": "publish", "topic": topic,
        });
        edgemq_testkit::http::post_json(admin, "/api/v1/authz/explain", None, &body).json()
    };
    let allowed = explain("client1", "telemetry/floor1/c1");
    assert_eq!(allowed["allowed"], true, "{allowed}");
    assert_eq!(
        allowed["explanation"],
        "allowed by BrokerAuthorization/my-authz-policies rules[0]"
    );
    let denied = explain("client1", "telemetry/floor2/c1");
    assert_eq!(denied["allowed"], false, "{denied}");
    // The configuration report names the folder and the load's outcome.
    let config = edgemq_testkit::http::get(admin, "/api/v1/config").json();
    assert_eq!(config["last_load"]["outcome"], "applied", "{config}");
    assert_eq!(config["source"], d.config.display().to_string());
    assert_eq!(config["limits"]["max_topic_levels"], 200, "{config}");
}
