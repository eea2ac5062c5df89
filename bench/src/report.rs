//! The one-line machine-readable report, and broker CPU/memory readings from /proc.

use std::fmt::Write as _;

/// Everything a run reports. Fields that do not apply to a scenario stay `None`.
#[derive(Debug, Default)]
pub struct Report {
    pub label: String,
    pub scenario: &'static str,
    pub protocol: u8,
    pub qos: u8,
    pub payload: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub seconds: f64,
    pub sent: u64,
    pub acked: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub msgs_per_sec: f64,
    pub latency_us: Option<Percentiles>,
    pub broker_cpu_pct: Option<f64>,
    /// Broker CPU time (user + system) over the measured window per message delivered
    /// (duplicates not counted), in microseconds: throughput scenarios only.
    pub broker_cpu_us_per_msg: Option<f64>,
    pub connects_per_sec: Option<f64>,
    pub rss_before_kb: Option<u64>,
    pub rss_after_kb: Option<u64>,
    pub rss_per_conn_bytes: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    /// From unsorted samples (sorted in place).
    pub fn from_samples(samples: &mut [u64]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Some(Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        })
    }
}

impl Report {
    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        let mut field = |k: &str, v: String| {
            if s.len() > 1 {
                s.push(',');
            }
            let _ = write!(s, "\"{k}\":{v}");
        };
        field("label", format!("\"{}\"", self.label.replace('"', "'")));
        field("scenario", format!("\"{}\"", self.scenario));
        field("protocol", self.protocol.to_string());
        field("qos", self.qos.to_string());
        field("payload", self.payload.to_string());
        field("publishers", self.publishers.to_string());
        field("subscribers", self.subscribers.to_string());
        field("seconds", format!("{:.3}", self.seconds));
        field("sent", self.sent.to_string());
        field("acked", self.acked.to_string());
        field("expected", self.expected.to_string());
        field("delivered", self.delivered.to_string());
        field("lost", self.lost.to_string());
        field("duplicates", self.duplicates.to_string());
        field("msgs_per_sec", format!("{:.0}", self.msgs_per_sec));
        if let Some(p) = self.latency_us {
            field("p50_us", p.p50.to_string());
            field("p99_us", p.p99.to_string());
            field("p999_us", p.p999.to_string());
            field("max_us", p.max.to_string());
        }
        let opt =
            |v: Option<f64>, prec: usize| v.map_or("null".to_string(), |v| format!("{v:.prec$}"));
        field("broker_cpu_pct", opt(self.broker_cpu_pct, 1));
        if self.connects_per_sec.is_none() {
            field("broker_cpu_us_per_msg", opt(self.broker_cpu_us_per_msg, 3));
        }
        if self.connects_per_sec.is_some() {
            field("connects_per_sec", opt(self.connects_per_sec, 0));
            field(
                "rss_before_kb",
                self.rss_before_kb.map_or("null".into(), |v| v.to_string()),
            );
            field(
                "rss_after_kb",
                self.rss_after_kb.map_or("null".into(), |v| v.to_string()),
            );
            field("rss_per_conn_bytes", opt(self.rss_per_conn_bytes, 0));
        }
        s.push('}');
        s
    }
}

/// utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size in KiB (/proc/PID/status VmRSS).
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Linux reports /proc times in USER_HZ, 100 on every mainstream architecture.
pub const TICKS_PER_SEC: f64 = 100.0;
