//! `edgemq-bench`: a low-overhead MQTT load generator. It shares the machine's cores with the
//! broker under test, so every client batches its writes into one reused buffer and the
//! per-message path does not allocate.
//!
//! Scenarios: `pairs`, `fanin`, `fanout`, `latency`, `storm`. Each run prints one JSON line:
//! delivered msgs/s counted at subscribers, lost and duplicated messages, latency
//! percentiles, and the broker's CPU% and CPU time per delivered message (from /proc when
//! `--broker-pid` is given).
//! Every payload starts with (publisher index u32, sequence u64, send time ns u64).

mod client;
mod report;
mod scenarios;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "edgemq-bench", about = "MQTT broker load generator")]
pub struct Cli {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub addr: SocketAddr,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub protocol: u8,
    /// QoS of publishes and subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size in bytes (at least 20: the header carries index, sequence and time).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Unacknowledged QoS 1/2 publishes per publisher.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// PID of the broker, for CPU% and RSS from /proc.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// User name in every CONNECT (with --password): measures authenticated connects.
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    /// Password in every CONNECT.
    #[arg(long, requires = "username")]
    pub password: Option<String>,
    /// Connect over TLS, trusting the CA certificate(s) in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// With --tls-ca: the name the broker's certificate must carry.
    #[arg(long, default_value = "localhost", requires = "tls_ca")]
    pub tls_server_name: String,
    /// Subscribers keep a persistent session: they connect with Clean Start 0 and, in MQTT 5,
    /// this Session Expiry Interval (seconds); in MQTT 3.1.1, Clean Session 0 (the interval
    /// is not sent). A broker with durable state then stores their QoS 1/2 messages.
    #[arg(long, value_name = "SECS")]
    pub session_expiry: Option<u32>,
    /// Label printed in the report (e.g. the broker's name).
    #[arg(long, default_value = "broker")]
    pub label: String,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// N publisher/subscriber pairs, each pair on its own topic.
    Pairs {
        #[arg(long, default_value_t = 100)]
        n: usize,
    },
    /// P publishers → 1 wildcard subscriber.
    Fanin {
        #[arg(long, default_value_t = 50)]
        p: usize,
    },
    /// 1 publisher → S subscribers of the same topic.
    Fanout {
        #[arg(long, default_value_t = 100)]
        s: usize,
    },
    /// One rate-limited publisher and one subscriber; latency percentiles.
    Latency {
        /// Messages per second.
        #[arg(long, default_value_t = 500)]
        rate: u32,
    },
    /// C idle connections: connects/s and broker memory per connection.
    Storm {
        #[arg(long, default_value_t = 10_000)]
        c: usize,
        /// Connections opened at once.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
    },
}

impl Cli {
    pub fn publish_time(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.1))
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.payload >= client::HEADER_LEN,
        "--payload must be at least {}",
        client::HEADER_LEN
    );
    // Two worker threads: the machine has two cores, shared with the broker.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(scenarios::run(&cli))?;
    println!("{}", report.to_json());
    Ok(())
}

impl Cli {
    /// `--username` and `--password`, when given.
    pub fn credentials(&self) -> Option<(String, String)> {
        self.username.clone().zip(self.password.clone())
    }

    pub fn target(&self) -> anyhow::Result<client::Target> {
        client::Target::new(self.addr, self.tls_ca.as_deref(), &self.tls_server_name)
    }
}
