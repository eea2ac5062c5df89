//! Username/password authentication with real clients: the `passwords.toml` of the AIO
//! documentation (its two test vectors), in the v1 (edgemq extension) and v1beta1 forms,
//! reason codes in MQTT 5 and 3.1.1, attributes, cache, and reload of the password file
//! without dropping connected clients.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::process::Command;

use edgemq_testkit::broker::{free_port, Broker};
use edgemq_testkit::fixtures::*;

fn v1_authentication() -> String {
    format!("apiVersion: {V1}\nkind: BrokerAuthentication\nmetadata:\n  name: passwords\nspec:\n  authenticationMethods:\n    - method: UsernamePassword\n      usernamePasswordSettings:\n        secretRef: passwords-db\n")
}

fn v1beta1_resources(port: u16) -> String {
    format!(
        "apiVersion: mq.iotoperations.azure.com/v1beta1\nkind: BrokerListener\nmetadata:\n  name: legacy\nspec:\n  brokerRef: broker\n  serviceType: clusterIp\n  port: {port}\n  authenticationEnabled: true\n---\napiVersion: mq.iotoperations.azure.com/v1beta1\nkind: BrokerAuthentication\nmetadata:\n  name: authn\nspec:\n  listenerRef: [legacy]\n  authenticationMethods:\n    - usernamePassword: {{secretName: passwords-db}}\n"
    )
}

/// A broker with one plain port authenticated by passwords.toml.
fn start(d: &Dirs) -> (Broker, u16) {
    let port = free_port();
    d.write(
        "listeners.yaml",
        &listener(
            "secure",
            "ClusterIp",
            &plain_port(port).replace(
                "      protocol: Mqtt\n",
                "      protocol: Mqtt\n      authenticationRef: passwords\n",
            ),
        ),
    );
    d.write("authentication.yaml", &v1_authentication());
    d.write("secrets/passwords-db/passwords.toml", PASSWORDS_TOML);
    let b = Broker::start_config(&d.config, &d.data, 1, &[]);
    (b, port)
}

/// mosquitto_pub with credentials; (exit code, output).
fn pub_as(
    port: u16,
    version: &str,
    client_id: &str,
    user: Option<(&str, &str)>,
) -> (Option<i32>, String) {
    let mut args = vec!["-q", "1", "-t", "auth/pw", "-m", client_id];
    if let Some((u, p)) = user {
        args.extend(["-u", u, "-P", p]);
    }
    run_mosquitto_pub(port, version, client_id, &args)
}

#[test]
fn documentation_vectors_admit_their_users_and_refuse_others_with_reason_codes() {
    let d = Dirs::new();
    let (b, port) = start(&d);
    let sub_port = port;
    // A subscriber authenticated as client2 sees what client1 publishes.
    let sub = Sub::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], sub_port)),
        "auth/#",
        &["-u", "client2", "-P", "password2"],
    );
    let (code, out) = pub_as(port, "5", "pub-ok", Some(("client1", "password")));
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(sub.message(), "auth/pw pub-ok");
    assert!(
        b.wait_for_log("floor=floor1", WAIT),
        "attributes of client1:\n{}",
        b.log()
    );

    // MQTT 5: wrong password / unknown user → 0x86; no credentials → 0x87.
    let (code, out) = pub_as(port, "5", "wrong-pw", Some(("client1", "password2")));
    assert_ne!(code, Some(0));
    assert!(out.contains("Bad User Name or Password"), "{out}");
    let (code, out) = pub_as(port, "5", "unknown", Some(("nobody", "password")));
    assert_ne!(code, Some(0));
    assert!(out.contains("Bad User Name or Password"), "{out}");
    let (code, out) = pub_as(port, "5", "anonymous", None);
    assert_ne!(code, Some(0));
    assert!(out.contains("Not authorized"), "{out}");
    // MQTT 3.1.1: return codes 4 and 5.
    let (code, out) = pub_as(port, "mqttv311", "wrong-311", Some(("client1", "nope")));
    assert_ne!(code, Some(0));
    assert!(out.contains("bad user name or password"), "{out}");
    let (code, out) = pub_as(port, "mqttv311", "anon-311", None);
    assert_ne!(code, Some(0));
    assert!(out.contains("not authorised"), "{out}");
    let (code, out) = pub_as(port, "mqttv311", "ok-311", Some(("client2", "password2")));
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(sub.message(), "auth/pw ok-311");

    // Never a password in the log.
    for secret in ["password2", "\"password\"", "nope"] {
        assert!(
            !b.log().contains(secret),
            "{secret} appears in the log:\n{}",
            b.log()
        );
    }
    assert!(
        b.wait_for_log("wrong password for user \"client1\"", WAIT),
        "{}",
        b.log()
    );
    assert!(
        b.wait_for_log("unknown user \"nobody\"", WAIT),
        "{}",
        b.log()
    );
}

#[test]
fn v1beta1_username_password_form_works() {
    let d = Dirs::new();
    let port = free_port();
    d.write("legacy.yaml", &v1beta1_resources(port));
    d.write("secrets/passwords-db/passwords.toml", PASSWORDS_TOML);
    let _b = Broker::start_config(&d.config, &d.data, 1, &[]);
    let (code, out) = pub_as(port, "5", "legacy-ok", Some(("client2", "password2")));
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = pub_as(port, "5", "legacy-bad", Some(("client2", "password")));
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("Bad User Name or Password"), "{out}");
}

#[test]
fn a_new_password_file_applies_to_new_connections_and_keeps_connected_clients() {
    let d = Dirs::new();
    let (b, port) = start(&d);
    let sub = Sub::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "auth/#",
        &["-u", "client1", "-P", "password"],
    );
    // client2 is removed from the file.
    let only_client1: String = PASSWORDS_TOML
        .split("\n\n[client2]")
        .next()
        .unwrap()
        .to_string()
        + "\n";
    d.write("secrets/passwords-db/passwords.toml", &only_client1);
    assert!(b.wait_for_log("configuration applied", WAIT), "{}", b.log());
    let (code, out) = pub_as(port, "5", "removed", Some(("client2", "password2")));
    assert_ne!(code, Some(0), "client2 still admitted: {out}");
    assert!(out.contains("Bad User Name or Password"), "{out}");
    // The subscriber connected before the change is still there.
    let (code, out) = pub_as(port, "5", "still", Some(("client1", "password")));
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(sub.message(), "auth/pw still");
}

#[test]
fn a_flood_of_wrong_passwords_does_not_stop_message_traffic() {
    let d = Dirs::new();
    let (b, port) = start(&d);
    let sub = Sub::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "auth/#",
        &["-u", "client1", "-P", "password"],
    );
    // 30 concurrent CONNECTs with wrong passwords (each costs a full PBKDF2 verification).
    let flood: Vec<_> = (0..30)
        .map(|i| {
            Command::new("mosquitto_pub")
                .args(["-V", "5", "-h", "127.0.0.1", "-p", &port.to_string()])
                .args([
                    "-i",
                    &format!("flood-{i}"),
                    "-u",
                    "client1",
                    "-P",
                    &format!("guess-{i}"),
                ])
                .args(["-t", "auth/flood", "-m", "x"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Meanwhile an authenticated client (cached credentials) publishes and is delivered.
    for i in 0..5 {
        let (code, out) = pub_as(
            port,
            "5",
            &format!("during-{i}"),
            Some(("client1", "password")),
        );
        assert_eq!(code, Some(0), "{out}");
        assert_eq!(sub.message(), format!("auth/pw during-{i}"));
    }
    for mut child in flood {
        let status = child.wait().unwrap();
        assert!(!status.success(), "a wrong password was admitted");
    }
    assert!(!b.log().contains("guess-"), "a password reached the log");
}
