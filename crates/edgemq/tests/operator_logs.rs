//! Logs a person can read: the Broker resource's log level is honoured, a configuration
//! error is printed once, weak ports are warned about once (not again on every reload),
//! and credentials on a port without TLS are called out.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::process::Command;

use edgemq_testkit::broker::{free_port, run_with_timeout, Broker};
use edgemq_testkit::fixtures::*;

fn broker_resource(level: &str) -> String {
    format!("apiVersion: {V1}\nkind: Broker\nmetadata:\n  name: default\nspec:\n  diagnostics:\n    logs:\n      level: {level}\n")
}

#[test]
fn broker_diagnostics_log_level_is_honoured_and_followed_on_reload() {
    let d = Dirs::new();
    let port = free_port();
    d.write(
        "listeners.yaml",
        &listener("plain", "ClusterIp", &plain_port(port)),
    );
    d.write("broker.yaml", &broker_resource("debug"));
    let b = Broker::start_config_default_log(&d.config, &d.data, 1);
    assert!(
        b.wait_for_log("log level set by Broker diagnostics.logs.level", WAIT),
        "{}",
        b.log()
    );
    // A debug-level line only the configured level lets through.
    d.write("extra.yaml", "# touched\n");
    assert!(
        b.wait_for_log("DEBUG", WAIT),
        "no debug line at level debug:\n{}",
        b.log()
    );
    // Back to error: a reload applies it; the anonymous-port warning is not repeated.
    d.write("broker.yaml", &broker_resource("error"));
    assert!(
        b.wait_for_log("to=\"error\"", WAIT) || b.wait_for_log("to=error", WAIT),
        "{}",
        b.log()
    );
    let anonymous = b.log().matches("admits anonymous clients").count();
    assert_eq!(anonymous, 1, "warned once for the one port:\n{}", b.log());
}

#[test]
fn weak_ports_are_warned_once_and_clear_text_credentials_are_named() {
    let d = Dirs::new();
    let (open_port, pw_port) = (free_port(), free_port());
    let pw = plain_port(pw_port).replace(
        "      protocol: Mqtt\n",
        "      protocol: Mqtt\n      authenticationRef: passwords\n",
    );
    d.write(
        "open.yaml",
        &listener("open", "ClusterIp", &plain_port(open_port)),
    );
    d.write("secure.yaml", &listener("secure", "ClusterIp", &pw));
    d.write(
        "authentication.yaml",
        &format!("apiVersion: {V1}\nkind: BrokerAuthentication\nmetadata:\n  name: passwords\nspec:\n  authenticationMethods:\n    - method: UsernamePassword\n      usernamePasswordSettings:\n        secretRef: passwords-db\n"),
    );
    d.write("secrets/passwords-db/passwords.toml", PASSWORDS_TOML);
    let mut b = Broker::start_config(&d.config, &d.data, 2, &[]);
    let clear = format!("BrokerListener/secure port {pw_port} (127.0.0.1:{pw_port}): UsernamePassword credentials cross the network in clear text");
    assert!(b.wait_for_log(&clear, WAIT), "{}", b.log());
    // Two reloads (SIGHUP) that change nothing about the ports.
    for _ in 0..2 {
        let applied = b.log().matches("configuration applied").count();
        Command::new("kill")
            .args(["-HUP", &b.pid().to_string()])
            .status()
            .unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        while b.log().matches("configuration applied").count() == applied {
            assert!(
                std::time::Instant::now() < deadline,
                "no reload:\n{}",
                b.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let log = b.log();
    assert_eq!(log.matches("admits anonymous clients").count(), 1, "{log}");
    assert_eq!(log.matches("in clear text").count(), 1, "{log}");
    b.terminate();
}

#[test]
fn a_configuration_error_is_printed_once() {
    let d = Dirs::new();
    let port = free_port();
    let broken = plain_port(port).replace(
        "      protocol: Mqtt\n",
        "      protocol: Mqtt\n      authenticationRef: nowhere\n",
    );
    d.write("listeners.yaml", &listener("l", "ClusterIp", &broken));
    let (code, _, err) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_edgemq")).args([
            "serve",
            "--config",
            d.config.to_str().unwrap(),
            "--data-dir",
            d.data.to_str().unwrap(),
        ]),
        WAIT,
    );
    assert_eq!(code, Some(1), "{err}");
    let problem = err
        .lines()
        .find(|l| l.contains("nowhere"))
        .unwrap_or_else(|| panic!("the problem is named:\n{err}"));
    let text = &problem[problem.find("listeners.yaml").unwrap()..];
    assert_eq!(err.matches(text).count(), 1, "printed once:\n{err}");
}
