//! Fixtures for tests that run `edgemq serve --config`: a configuration folder, resource
//! builders, and mosquitto_sub / mosquitto_pub wrappers.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::broker::run_with_timeout;

pub const WAIT: Duration = Duration::from_secs(20);

/// A configuration folder and a data dir, removed at the end of the test.
pub struct Dirs {
    _root: tempfile::TempDir,
    pub config: PathBuf,
    pub data: PathBuf,
}

impl Default for Dirs {
    fn default() -> Self {
        Self::new()
    }
}

impl Dirs {
    pub fn new() -> Dirs {
        let root = tempfile::tempdir().expect("tempdir");
        let config = root.path().join("config");
        let data = root.path().join("data");
        std::fs::create_dir_all(&config).unwrap();
        Dirs {
            config,
            data,
            _root: root,
        }
    }

    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.config.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Write-then-rename so the watcher never sees half a file.
        let tmp = path.with_extension("tmp~");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// `edgemq serve` on this configuration and data dir, run to completion (on a
    /// configuration it must refuse): exit code and everything it printed.
    pub fn serve_to_exit(&self) -> (Option<i32>, String) {
        let (code, out, err) = crate::broker::edgemq(&[
            "serve",
            "--config",
            self.config.to_str().unwrap(),
            "--data-dir",
            self.data.to_str().unwrap(),
        ]);
        (code, format!("{out}{err}"))
    }

    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self._root.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

// ---------------------------------------------------------------------------------------
// mosquitto clients
// ---------------------------------------------------------------------------------------

/// A running `mosquitto_sub -d` printing `topic payload` lines.
pub struct Sub {
    child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Sub {
    pub fn start(addr: SocketAddr, topic: &str, tls: &[&str]) -> Sub {
        let port = addr.port().to_string();
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-d", "-V", "5", "-h", "127.0.0.1"])
            .args(["-p", &port, "-t", topic, "-q", "1", "-F", "%t %p"])
            .args(tls)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (Debian package mosquitto-clients)");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let sub = Sub { child, lines };
        sub.wait_for("SUBACK");
        sub
    }

    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("mosquitto_sub never printed {needle:?}"),
            }
        }
    }

    /// The next delivered message line (`topic payload`), skipping debug lines.
    pub fn message(&self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if !is_debug_line(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("mosquitto_sub received nothing"),
            }
        }
    }
}

/// `mosquitto_sub -d` chatter: `Client … sending/received …` and `Subscribed (mid: …)`.
pub fn is_debug_line(line: &str) -> bool {
    line.starts_with("Client ") || line.starts_with("Subscribed (mid")
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto_pub -V VERSION -h 127.0.0.1 -p PORT -i CLIENT_ID ARGS` within [`WAIT`]:
/// (exit code, everything it printed).
pub fn run_mosquitto_pub(
    port: u16,
    version: &str,
    client_id: &str,
    args: &[&str],
) -> (Option<i32>, String) {
    let (code, out, err) = run_with_timeout(
        Command::new("mosquitto_pub")
            .args(["-V", version, "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-i", client_id])
            .args(args),
        WAIT,
    );
    (code, format!("{out}{err}"))
}

pub fn publish(
    addr: SocketAddr,
    topic: &str,
    message: &str,
    tls: &[&str],
) -> (Option<i32>, String) {
    let port = addr.port().to_string();
    let (code, out, err) = run_with_timeout(
        Command::new("mosquitto_pub")
            .args(["-V", "5", "-h", "127.0.0.1", "-p", &port, "-q", "1"])
            .args(["-t", topic, "-m", message])
            .args(tls),
        WAIT,
    );
    (code, format!("{out}{err}"))
}

pub fn publish_ok(addr: SocketAddr, topic: &str, message: &str, tls: &[&str]) {
    let (code, out) = publish(addr, topic, message, tls);
    assert_eq!(code, Some(0), "mosquitto_pub failed: {out}");
}

// ---------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------

pub const V1: &str = "mqttbroker.iotoperations.azure.com/v1";

pub fn listener(name: &str, service: &str, ports: &str) -> String {
    format!(
        "apiVersion: {V1}\nkind: BrokerListener\nmetadata:\n  name: {name}\nspec:\n  brokerRef: default\n  serviceType: {service}\n  ports:\n{ports}"
    )
}

pub fn plain_port(port: u16) -> String {
    format!("    - port: {port}\n      protocol: Mqtt\n")
}

pub fn auto_tls_port(port: u16, extra: &str) -> String {
    format!(
        "    - port: {port}\n      protocol: Mqtt\n      tls:\n        mode: Automatic\n        certManagerCertificateSpec:\n          issuerRef: {{group: cert-manager.io, kind: ClusterIssuer, name: azure-iot-operations-aio-certificate-issuer}}\n          san: {{dns: [localhost], ip: [127.0.0.1]}}\n{extra}"
    )
}

pub fn manual_tls_port(port: u16, secret: &str) -> String {
    format!(
        "    - port: {port}\n      protocol: Mqtt\n      tls:\n        mode: Manual\n        manual: {{secretRef: {secret}}}\n"
    )
}

pub fn tls_args(cafile: &Path) -> Vec<String> {
    vec!["--cafile".into(), cafile.to_str().unwrap().into()]
}

pub fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The AIO documentation's `passwords.toml` test vectors: client1/password (floor1, site1)
/// and client2/password2 (floor2, site1), PBKDF2-SHA512 with 100,000 iterations.
pub const PASSWORDS_TOML: &str = r#"[client1]
password = "$pbkdf2-sha512$i=100000,l=64$HqJwOCHweNk1pLryiu3RsA$KVSvxKYcibIG5S5n55RvxKRTdAAfCUtBJoy5IuFzdSZyzkwvUcU+FPawEWFPn+06JyZsndfRTfpiEh+2eSJLkg"
[client1.attributes]
floor = "floor1"
site = "site1"

[client2]
password = "$pbkdf2-sha512$i=100000,l=64$+H7jXzcEbq2kkyvpxtxePQ$jTzW6fSesiuNRLMIkDDAzBEILk7iyyDZ3rjlEwQap4UJP4TaCR+EXQXNukO7qNJWlPPP8leNnJDCBgX/255Ezw"
[client2.attributes]
floor = "floor2"
site = "site1"
"#;
