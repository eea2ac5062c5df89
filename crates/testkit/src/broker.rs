//! Shared integration-test harness: start the real `edgemq` binary on a free loopback port
//! and stop it when the test ends.
//!
//! Set `EDGEMQ_TEST_AGAINST=mosquitto` to run the same suites against Debian's mosquitto
//! (to check that a test asserts the specification rather than our own behaviour); tests
//! that need edgemq-only flags call [`Broker::edgemq_only`] and are skipped there.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `edgemq` executable the harness runs. A library cannot use
/// `env!("CARGO_BIN_EXE_edgemq")`, so: `$EDGEMQ_TEST_BIN` if set, else
/// `$CARGO_BIN_EXE_edgemq` if Cargo set it at run time, else `edgemq` in the folder above the
/// test executable's `deps` folder, where Cargo puts the package's binaries (it builds them
/// before it runs a package's integration tests).
pub fn binary() -> PathBuf {
    for var in ["EDGEMQ_TEST_BIN", "CARGO_BIN_EXE_edgemq"] {
        if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return PathBuf::from(path);
        }
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe
        .parent()
        .expect("the test executable's folder")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("edgemq{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "no edgemq binary at {} (set EDGEMQ_TEST_BIN)",
        bin.display()
    );
    bin
}

/// Run `edgemq ARGS` to completion within [`crate::fixtures::WAIT`]; returns (status code,
/// stdout, stderr).
pub fn edgemq(args: &[&str]) -> (Option<i32>, String, String) {
    run_with_timeout(Command::new(binary()).args(args), crate::fixtures::WAIT)
}

/// A running broker. Killed on drop.
pub struct Broker {
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<String>>,
    listening: Arc<Mutex<Vec<(String, SocketAddr)>>>,
    _tmp: Option<std::path::PathBuf>,
}

impl Broker {
    /// Start `edgemq serve --listen 127.0.0.1:0 <extra>` and wait until it is listening.
    pub fn start() -> Broker {
        Self::start_with(&[])
    }

    /// Start with extra `serve` arguments (e.g. `["--max-packet-size", "1000"]`). Unless
    /// they name a data dir (or `--in-memory`), the broker gets a fresh one of its own,
    /// removed when it stops.
    pub fn start_with(extra: &[&str]) -> Broker {
        Self::start_listening("127.0.0.1:0", extra)
    }

    /// Like [`Broker::start_with`], listening on `listen` (e.g. a port from [`free_port`], to
    /// restart a broker where its clients expect it).
    pub fn start_listening(listen: &str, extra: &[&str]) -> Broker {
        if against_mosquitto() {
            return Self::start_mosquitto();
        }
        let mut args = vec!["serve", "--listen", listen, "--log-level", "debug"];
        args.extend_from_slice(extra);
        let own_dir = !extra
            .iter()
            .any(|a| *a == "--data-dir" || *a == "--in-memory");
        let data = own_dir.then(fresh_data_dir);
        if let Some(dir) = &data {
            args.extend(["--data-dir", dir.to_str().unwrap()]);
        }
        let mut broker = Self::spawn(&args, 1);
        broker._tmp = data;
        broker
    }

    /// Start `edgemq serve --config DIR --data-dir DATA <extra>` and wait until `ports`
    /// listening lines were logged.
    pub fn start_config(
        dir: &std::path::Path,
        data: &std::path::Path,
        ports: usize,
        extra: &[&str],
    ) -> Broker {
        let mut args = vec![
            "serve",
            "--config",
            dir.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--log-level",
            "debug",
        ];
        args.extend_from_slice(extra);
        Self::spawn(&args, ports)
    }

    /// Like [`Broker::start_config`] without `--log-level`: the level comes from the
    /// configuration (or is info).
    pub fn start_config_default_log(
        dir: &std::path::Path,
        data: &std::path::Path,
        ports: usize,
    ) -> Broker {
        let args = [
            "serve",
            "--config",
            dir.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ];
        Self::spawn(&args, ports)
    }

    /// Spawn edgemq with `args`; wait for `listening` log lines from `ports` listeners.
    fn spawn(args: &[&str], ports: usize) -> Broker {
        let mut child = Command::new(binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edgemq");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let listening = Arc::new(Mutex::new(Vec::new()));
        let (log2, listening2) = (log.clone(), listening.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(found) = parse_listening(&line) {
                    listening2.lock().unwrap().push(found);
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while listening.lock().unwrap().len() < ports {
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "edgemq did not report {ports} listening address(es); log:\n{}",
                    log.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let addr = listening.lock().unwrap()[0].1;
        Broker {
            addr,
            child,
            log,
            listening,
            _tmp: None,
        }
    }

    /// The address the listener `name` is bound to (the first one if it has several ports).
    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        self.listening
            .lock()
            .unwrap()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {name} in the log:\n{}", self.log()))
    }

    /// The address of the admin port (`--admin-listen`) with `role` (`admin`, or `metrics`
    /// for the Broker resource's prometheusPort), from its `admin port open` log line.
    pub fn admin_addr(&self, role: &str) -> SocketAddr {
        let deadline = Instant::now() + crate::fixtures::WAIT;
        loop {
            let log = self.log();
            if let Some(addr) = parse_admin_addr(&log, role) {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no admin port ({role}) in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every (listener, address) logged as listening so far (restarts included).
    pub fn listening(&self) -> Vec<(String, SocketAddr)> {
        self.listening.lock().unwrap().clone()
    }

    fn start_mosquitto() -> Broker {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("edgemq-mosq-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf).unwrap();
        writeln!(
            f,
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false"
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .args(["-c", conf.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker {
            addr,
            child,
            log: Arc::new(Mutex::new(String::new())),
            listening: Arc::new(Mutex::new(vec![("mosquitto".into(), addr)])),
            _tmp: Some(dir),
        }
    }

    /// Call first in a test that depends on edgemq-only flags or log lines; returns false
    /// (and the test should return early) when running against mosquitto.
    pub fn edgemq_only() -> bool {
        !against_mosquitto()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// Everything the broker has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait (bounded) until the log contains `needle`; returns whether it did.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The OS process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (as a crash or power cut would stop it) and wait until it is gone.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident memory of the broker process in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Send SIGTERM and wait for exit (bounded); returns the exit status code if it exited.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self._tmp {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn against_mosquitto() -> bool {
    std::env::var("EDGEMQ_TEST_AGAINST").is_ok_and(|v| v == "mosquitto")
}

/// `... listening listener=NAME addr=127.0.0.1:PORT ...` → (NAME, address).
/// The address of the admin port with `role` from its `admin port open addr=… role=…` log
/// line; an unspecified address (0.0.0.0) is reached on loopback.
pub fn parse_admin_addr(log: &str, role: &str) -> Option<SocketAddr> {
    let wanted = format!("role={role}");
    let line = log
        .lines()
        .find(|l| l.contains("admin port open") && l.contains(&wanted))?;
    let rest = &line[line.find(" addr=")? + " addr=".len()..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let addr: SocketAddr = rest[..end].trim_matches('"').parse().ok()?;
    if addr.ip().is_unspecified() {
        return Some(SocketAddr::from(([127, 0, 0, 1], addr.port())));
    }
    Some(addr)
}

fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    if !line.contains("listening") {
        return None;
    }
    let field = |key: &str| -> Option<String> {
        let start = line.find(key)? + key.len();
        let rest = &line[start..];
        let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
        Some(rest[..end].trim_matches('"').to_string())
    };
    let addr = field(" addr=")?.parse().ok()?;
    Some((field(" listener=").unwrap_or_default(), addr))
}

/// A new, empty directory under the system temp dir.
pub fn fresh_data_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("edgemq-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A free loopback port (bind to 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run a command to completion with a time limit; returns (status code, stdout, stderr).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().ok();
    let (stdout, stderr) = out
        .map(|o| {
            (
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap_or_default();
    (status, stdout, stderr)
}
