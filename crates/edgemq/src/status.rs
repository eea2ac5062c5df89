//! `edgemq status`: the admin API's overview, printed for an SSH session on the device.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The broker's admin port (serve --admin-listen).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// The admin token, if the admin port has one.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
}

pub fn status(args: &StatusArgs) -> ExitCode {
    match overview(args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edgemq status: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn overview(args: &StatusArgs) -> anyhow::Result<String> {
    let token = match &args.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--admin-token-file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let body = get(args.admin, "/api/v1/overview", token.as_deref())?;
    let v: serde_json::Value = serde_json::from_str(&body).context("the overview is not JSON")?;
    Ok(render(&v))
}

/// One HTTP/1.1 GET on loopback or a trusted network (the admin port speaks plain HTTP).
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot reach the admin port at {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("{path}: HTTP {status}: {}", body.trim());
    }
    Ok(body.to_string())
}

fn render(v: &serde_json::Value) -> String {
    let n = |key: &str| v[key].as_u64().unwrap_or(0);
    let mut out = format!(
        "edgemq {}  up {}s\nclients   {} connected (max {}), {} sessions, {} subscriptions\n",
        v["version"].as_str().unwrap_or("?"),
        n("uptime_secs"),
        n("clients_connected"),
        n("clients_maximum"),
        n("sessions"),
        n("subscriptions"),
    );
    out += &format!(
        "messages  {} received, {} sent; {} bytes in, {} bytes out\nretained  {} messages, {} bytes\n",
        n("messages_received"),
        n("messages_sent"),
        n("bytes_received"),
        n("bytes_sent"),
        n("retained_messages"),
        n("retained_bytes"),
    );
    out += &format!(
        "store     {} ({} of {} bytes)\nmemory    {} of {} bytes\n",
        v["store"]["state"].as_str().unwrap_or("?"),
        v["store"]["bytes"].as_u64().unwrap_or(0),
        v["store"]["budget_bytes"].as_u64().unwrap_or(0),
        v["memory"]["accounted_bytes"].as_u64().unwrap_or(0),
        v["memory"]["budget_bytes"].as_u64().unwrap_or(0),
    );
    out += &format!("drops     {} total", n("drops_total"));
    if let Some(drops) = v["drops"].as_object() {
        for (reason, count) in drops.iter().filter(|(_, c)| c.as_u64() != Some(0)) {
            out += &format!(", {reason} {count}");
        }
    }
    out.push('\n');
    out
}
