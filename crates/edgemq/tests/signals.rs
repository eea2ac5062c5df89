//! Signals and exit codes as an operator meets them: SIGUSR1/SIGUSR2 log the broker's state
//! and never end it; usage errors exit 1 (`shared/spec` README: 0 ok, 1 configuration or
//! usage error, 2 runtime failure).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::process::Command;
use std::time::Duration;

use edgemq_testkit::broker::{run_with_timeout, Broker};
use edgemq_testkit::raw;

const WAIT: Duration = Duration::from_secs(20);

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

#[test]
fn sigusr1_and_sigusr2_log_the_state_and_the_broker_keeps_serving() {
    if !Broker::edgemq_only() {
        return;
    }
    let b = Broker::start();
    let mut sub = raw::RawClient::v311(b.addr, "usr-sub");
    sub.send(&raw::subscribe(1, None, &[("usr/#", 0)]));
    sub.read_packet();
    for name in ["USR1", "USR2"] {
        signal(b.pid(), name);
        assert!(
            b.wait_for_log(&format!("signal=\"SIG{name}\""), WAIT),
            "no state line for SIG{name}:\n{}",
            b.log()
        );
    }
    let line = b
        .log()
        .lines()
        .find(|l| l.contains("signal=\"SIGUSR1\""))
        .unwrap()
        .to_string();
    assert!(
        line.contains("sessions=1") && line.contains("subscriptions=1"),
        "{line}"
    );
    // Still serving: a new client publishes to the subscriber.
    let mut publisher = raw::RawClient::v311(b.addr, "usr-pub");
    publisher.send(&raw::publish_v311("usr/x", 0, 0, b"alive"));
    let p = sub.read_packet();
    assert_eq!(p[0] >> 4, 3, "PUBLISH after the signals");
}

#[test]
fn usage_errors_exit_1() {
    for args in [
        &["serve", "--no-such-flag"][..],
        &["serve", "--max-topic-levels", "0"],
        &["no-such-command"],
    ] {
        let (code, _, err) =
            run_with_timeout(Command::new(env!("CARGO_BIN_EXE_edgemq")).args(args), WAIT);
        assert_eq!(code, Some(1), "edgemq {args:?}: {err}");
        assert!(!err.is_empty(), "edgemq {args:?} says why on stderr");
    }
    let (code, out, _) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_edgemq")).arg("--help"),
        WAIT,
    );
    assert_eq!(code, Some(0), "--help: {out}");
}
