//! The scenarios. Throughput scenarios share one shape: subscribers connect and subscribe
//! first, then publishers publish for the configured time, then the run waits (bounded) for
//! deliveries to drain, and loss/duplicates are computed per (subscriber, publisher) from
//! the sequence numbers in the payloads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use edgemq_codec::{Packet, PubResponse, QoS};

use crate::client::{nanos_since, parse_header, qos_of, version_of, Client, Stamp};
use crate::report::{cpu_ticks, rss_kb, Percentiles, Report, TICKS_PER_SEC};
use crate::{Cli, Scenario};

/// Who publishes where and who expects what.
struct Plan {
    /// Topic per publisher.
    publishers: Vec<ByteString>,
    /// (filter, indexes of the publishers whose messages this subscriber must receive).
    subscribers: Vec<(String, Vec<u32>)>,
    /// Messages per second per publisher; `None` = as fast as the window allows.
    rate: Option<u32>,
    record_latency: bool,
}

pub async fn run(cli: &Cli) -> anyhow::Result<Report> {
    let plan = match cli.scenario.clone() {
        Scenario::Pairs { n } => Plan {
            publishers: (0..n)
                .map(|i| ByteString::from(format!("bench/pairs/{i}")))
                .collect(),
            subscribers: (0..n)
                .map(|i| (format!("bench/pairs/{i}"), vec![i as u32]))
                .collect(),
            rate: None,
            record_latency: false,
        },
        Scenario::Fanin { p } => Plan {
            publishers: (0..p)
                .map(|i| ByteString::from(format!("bench/fanin/{i}")))
                .collect(),
            subscribers: vec![("bench/fanin/+".to_string(), (0..p as u32).collect())],
            rate: None,
            record_latency: false,
        },
        Scenario::Fanout { s } => Plan {
            publishers: vec![ByteString::from_static("bench/fanout")],
            subscribers: (0..s)
                .map(|_| ("bench/fanout".to_string(), vec![0]))
                .collect(),
            rate: None,
            record_latency: false,
        },
        Scenario::Latency { rate } => Plan {
            publishers: vec![ByteString::from_static("bench/latency")],
            subscribers: vec![("bench/latency".to_string(), vec![0])],
            rate: Some(rate.max(1)),
            record_latency: true,
        },
        Scenario::Storm { c, concurrency } => return storm(cli, c, concurrency).await,
    };
    throughput(cli, plan).await
}

/// What a subscriber saw.
#[derive(Default)]
struct SubResult {
    delivered: u64,
    duplicates: u64,
    /// Distinct sequence numbers seen, per expected publisher.
    seen: Vec<Vec<u64>>,
    latencies_us: Vec<u64>,
}

async fn throughput(cli: &Cli, plan: Plan) -> anyhow::Result<Report> {
    let version = version_of(cli.protocol);
    let credentials = cli.credentials();
    let target = cli.target()?;
    let qos = qos_of(cli.qos);
    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut subs = JoinSet::new();
    for (i, (filter, expected)) in plan.subscribers.iter().enumerate() {
        let mut client = Client::connect(
            &target,
            &format!("bench-sub-{i}"),
            version,
            credentials.as_ref(),
            cli.session_expiry,
        )
        .await?;
        client.subscribe(filter, qos).await?;
        let expected = expected.clone();
        let received = received.clone();
        let stop = stop_rx.clone();
        let max_publisher = plan.publishers.len();
        let record = plan.record_latency;
        subs.spawn(async move {
            subscriber(client, max_publisher, received, stop, epoch, record)
                .await
                .map(|r| (i, expected, r))
        });
    }
    let mut pubs = Vec::new();
    for i in 0..plan.publishers.len() {
        pubs.push(
            Client::connect(
                &target,
                &format!("bench-pub-{i}"),
                version,
                credentials.as_ref(),
                None,
            )
            .await?,
        );
    }

    let cpu_start = cli.broker_pid.and_then(cpu_ticks);
    let started = Instant::now();
    let deadline = started + cli.publish_time();
    let mut publishers = JoinSet::new();
    for (i, client) in pubs.into_iter().enumerate() {
        let topic = plan.publishers[i].clone();
        let args = PublisherArgs {
            index: i as u32,
            topic,
            qos,
            payload: cli.payload,
            window: cli.window.max(1),
            deadline,
            rate: plan.rate,
            epoch,
        };
        publishers.spawn(publisher(client, args));
    }
    let mut sent = vec![0u64; plan.publishers.len()];
    let mut acked = vec![0u64; plan.publishers.len()];
    while let Some(r) = publishers.join_next().await {
        let (index, s, a) = r??;
        sent[index as usize] = s;
        acked[index as usize] = a;
    }
    let published = Instant::now();

    // Expected deliveries: QoS ≥ 1 counts what the broker acknowledged; QoS 0 what was sent.
    let basis = if qos == QoS::AtMostOnce {
        &sent
    } else {
        &acked
    };
    let expected: u64 = plan
        .subscribers
        .iter()
        .map(|(_, pubs)| pubs.iter().map(|p| basis[*p as usize]).sum::<u64>())
        .sum();
    // Drain: until everything expected arrived, or no progress for 2 s, at most 30 s.
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    let mut last = received.load(Ordering::Relaxed);
    let mut last_progress = Instant::now();
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = received.load(Ordering::Relaxed);
        if now != last {
            last = now;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let finished = Instant::now();
    let cpu_end = cli.broker_pid.and_then(cpu_ticks);
    let _ = stop_tx.send(true);

    let mut report = Report {
        label: cli.label.clone(),
        scenario: scenario_name(&cli.scenario),
        protocol: cli.protocol,
        qos: cli.qos,
        payload: cli.payload,
        publishers: plan.publishers.len(),
        subscribers: plan.subscribers.len(),
        sent: sent.iter().sum(),
        acked: acked.iter().sum(),
        expected,
        ..Default::default()
    };
    let mut latencies = Vec::new();
    while let Some(r) = subs.join_next().await {
        let (_index, expected_publishers, r) = r??;
        report.delivered += r.delivered;
        report.duplicates += r.duplicates;
        latencies.extend_from_slice(&r.latencies_us);
        // Lost: sequence numbers below the publisher's expected count never seen here.
        for p in expected_publishers {
            let want = basis[p as usize];
            let bits = r.seen.get(p as usize).map(Vec::as_slice).unwrap_or(&[]);
            report.lost += want - count_below(bits, want);
        }
    }
    let window = finished.duration_since(started).as_secs_f64();
    let active = published.duration_since(started).as_secs_f64().max(1e-9);
    report.seconds = active;
    // Throughput over the whole delivery window (publishing plus drain of what was sent).
    let unique = report.delivered - report.duplicates;
    report.msgs_per_sec = unique as f64 / window.max(1e-9);
    report.latency_us = Percentiles::from_samples(&mut latencies);
    if let (Some(a), Some(b)) = (cpu_start, cpu_end) {
        let cpu_secs = b.saturating_sub(a) as f64 / TICKS_PER_SEC;
        report.broker_cpu_pct = Some(cpu_secs / window * 100.0);
        // The same window as msgs/s: publishing plus the drain of what was sent.
        report.broker_cpu_us_per_msg = (unique > 0).then(|| cpu_secs * 1e6 / unique as f64);
    }
    Ok(report)
}

fn scenario_name(s: &Scenario) -> &'static str {
    match s {
        Scenario::Pairs { .. } => "pairs",
        Scenario::Fanin { .. } => "fanin",
        Scenario::Fanout { .. } => "fanout",
        Scenario::Latency { .. } => "latency",
        Scenario::Storm { .. } => "storm",
    }
}

struct PublisherArgs {
    index: u32,
    topic: ByteString,
    qos: QoS,
    payload: usize,
    window: usize,
    deadline: Instant,
    rate: Option<u32>,
    epoch: Instant,
}

/// Publish until the deadline; returns (index, sent, acknowledged).
async fn publisher(mut client: Client, a: PublisherArgs) -> anyhow::Result<(u32, u64, u64)> {
    let mut scratch = BytesMut::with_capacity(a.payload * 64);
    let mut seq = 0u64;
    let mut acked = 0u64;
    let mut inflight = 0usize;
    let interval = a.rate.map(|r| Duration::from_secs_f64(1.0 / f64::from(r)));
    let mut next_send = Instant::now();
    const BATCH: usize = 32;
    while Instant::now() < a.deadline {
        let mut batch = 0;
        while batch < BATCH && (a.qos == QoS::AtMostOnce || inflight < a.window) {
            if let Some(every) = interval {
                if Instant::now() < next_send {
                    break;
                }
                next_send += every;
            }
            let packet_id = (a.qos != QoS::AtMostOnce).then(|| (seq % 65_535) as u16 + 1);
            let stamp = Stamp {
                publisher: a.index,
                seq,
                sent_ns: nanos_since(a.epoch),
            };
            client.publish(&a.topic, a.qos, packet_id, stamp, a.payload, &mut scratch)?;
            seq += 1;
            batch += 1;
            if a.qos != QoS::AtMostOnce {
                inflight += 1;
            }
        }
        client.flush().await?;
        if a.qos != QoS::AtMostOnce {
            if inflight >= a.window {
                client.fill().await?;
            } else {
                let _ = client.stream.try_read_buf(&mut client.rbuf);
            }
            handle_acks(&mut client, &mut inflight, &mut acked)?;
            client.flush().await?;
        }
        if let Some(_every) = interval {
            let now = Instant::now();
            if next_send > now {
                tokio::time::sleep(next_send - now).await;
            }
        } else if a.qos == QoS::AtMostOnce {
            // Let other tasks (subscribers) run between batches.
            tokio::task::yield_now().await;
        }
    }
    // Wait (bounded) for the remaining acknowledgements.
    let until = Instant::now() + Duration::from_secs(20);
    while inflight > 0 && Instant::now() < until {
        match tokio::time::timeout(Duration::from_secs(2), client.fill()).await {
            Ok(Ok(())) => {}
            _ => break,
        }
        handle_acks(&mut client, &mut inflight, &mut acked)?;
        client.flush().await?;
    }
    Ok((a.index, seq, acked))
}

fn handle_acks(client: &mut Client, inflight: &mut usize, acked: &mut u64) -> anyhow::Result<()> {
    while let Some(packet) = client.try_packet()? {
        match packet {
            Packet::PubAck(_) | Packet::PubComp(_) => {
                *inflight = inflight.saturating_sub(1);
                *acked += 1;
            }
            Packet::PubRec(rec) => client.send(&Packet::PubRel(PubResponse::new(rec.packet_id)))?,
            _ => {}
        }
    }
    Ok(())
}

async fn subscriber(
    mut client: Client,
    publishers: usize,
    received: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
    epoch: Instant,
    record_latency: bool,
) -> anyhow::Result<SubResult> {
    let mut r = SubResult {
        seen: vec![Vec::new(); publishers],
        ..Default::default()
    };
    loop {
        while let Some(packet) = client.try_packet()? {
            match packet {
                Packet::Publish(p) => {
                    client.ack(&p)?;
                    if let Some((publisher, seq, sent_ns)) = parse_header(p.payload.clone()) {
                        r.delivered += 1;
                        received.fetch_add(1, Ordering::Relaxed);
                        if let Some(bits) = r.seen.get_mut(publisher as usize) {
                            let (word, bit) = ((seq / 64) as usize, seq % 64);
                            if bits.len() <= word {
                                bits.resize(word + 1, 0);
                            }
                            if bits[word] & (1 << bit) != 0 {
                                r.duplicates += 1;
                            }
                            bits[word] |= 1 << bit;
                        }
                        if record_latency {
                            r.latencies_us
                                .push(nanos_since(epoch).saturating_sub(sent_ns) / 1000);
                        }
                    }
                }
                Packet::PubRel(rel) => {
                    client.send(&Packet::PubComp(PubResponse::new(rel.packet_id)))?
                }
                _ => {}
            }
        }
        client.flush().await?;
        tokio::select! {
            _ = stop.changed() => return Ok(r),
            filled = client.fill() => filled?,
        }
    }
}

/// How many bits below `limit` are set.
fn count_below(bits: &[u64], limit: u64) -> u64 {
    let mut n = 0u64;
    for (w, word) in bits.iter().enumerate() {
        let base = w as u64 * 64;
        if base >= limit {
            break;
        }
        let valid = (limit - base).min(64);
        let mask = if valid == 64 {
            u64::MAX
        } else {
            (1u64 << valid) - 1
        };
        n += u64::from((word & mask).count_ones());
    }
    n
}

/// Open `c` idle connections, `concurrency` at a time; report connects/s and broker RSS.
async fn storm(cli: &Cli, c: usize, concurrency: usize) -> anyhow::Result<Report> {
    let version = version_of(cli.protocol);
    let credentials = cli.credentials();
    let target = cli.target()?;
    let rss_before = cli.broker_pid.and_then(rss_kb);
    let cpu_start = cli.broker_pid.and_then(cpu_ticks);
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..c {
        let gate = gate.clone();
        let target = target.clone();
        let credentials = credentials.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            Client::connect(
                &target,
                &format!("bench-storm-{i}"),
                version,
                credentials.as_ref(),
                None,
            )
            .await
        });
    }
    let mut clients = Vec::with_capacity(c);
    let mut failed = 0u64;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(client)) => clients.push(client),
            _ => failed += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Release client-side buffers; the broker should now be at its idle footprint.
    for client in &mut clients {
        client.rbuf = BytesMut::new();
        client.wbuf = BytesMut::new();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = cli.broker_pid.and_then(rss_kb);
    let cpu_end = cli.broker_pid.and_then(cpu_ticks);
    let connected = clients.len();
    let mut report = Report {
        label: cli.label.clone(),
        scenario: "storm",
        protocol: cli.protocol,
        subscribers: connected,
        seconds: elapsed,
        lost: failed,
        connects_per_sec: Some(connected as f64 / elapsed.max(1e-9)),
        rss_before_kb: rss_before,
        rss_after_kb: rss_after,
        ..Default::default()
    };
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        if connected > 0 {
            report.rss_per_conn_bytes =
                Some((a.saturating_sub(b) * 1024) as f64 / connected as f64);
        }
    }
    if let (Some(a), Some(b)) = (cpu_start, cpu_end) {
        report.broker_cpu_pct = Some((b - a) as f64 / TICKS_PER_SEC / (elapsed + 1.0) * 100.0);
    }
    drop(clients);
    Ok(report)
}
