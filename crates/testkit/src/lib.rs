//! Shared harness for edgemq's integration tests (a dev-dependency only):
//!
//! - [`broker`]: start the real `edgemq` binary on port 0 (or a free port) and stop it at the
//!   end of the test; run `edgemq` commands with a time limit.
//! - [`in_process`]: a broker inside the test process on port 0, its limits set in code, and
//!   [`in_process::Target`], which is that broker or the one `EDGEMQ_TEST_AGAINST` names.
//! - [`history`]: a history checker (lost, duplicated, unexpected, reordered messages) on
//!   Jepsen's model, for crash and fault-injection tests.
//! - [`http`]: a minimal HTTP/1.1 client for the admin port.
//! - [`python`]: the Python (pytest) suites run against the binary.
//! - [`raw`]: a raw MQTT client, byte-exact packets in and out.
//! - [`fixtures`]: configuration folders, resource builders, mosquitto client wrappers and
//!   the documentation's password file.
//! - [`pki`]: a certificate factory (edgemq-tls for generated chains, openssl for the
//!   operators' recipes).

// A test harness: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

pub mod broker;
pub mod fixtures;
pub mod history;
pub mod http;
pub mod in_process;
pub mod pki;
pub mod python;
pub mod raw;

pub use broker::{binary, edgemq, free_port, fresh_data_dir, run_with_timeout, Broker};
pub use in_process::{Endpoint, InProcess, Target};
