//! The `$SYS` tree on time the test controls (see `virtual_time.rs`): every interval the
//! broker publishes its counters, and the load averages follow Mosquitto's smoothing.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed assertion

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use edgemq_broker::{Bus, Limits};

/// The retained `$SYS/broker/<name>` payload, if any.
fn value(bus: &Bus, name: &str) -> Option<String> {
    let mut found = Vec::new();
    let topic = format!("$SYS/broker/{name}");
    bus.sys_retained.matching(&topic, bus.now(), &mut found);
    let message = found.first()?;
    Some(String::from_utf8(message.payload.to_vec()).unwrap())
}

/// Let `secs` of virtual time pass, and the `$SYS` task run.
async fn pass(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn published_at_once_then_every_interval_with_smoothed_loads() {
    let bus: Arc<Bus> = Bus::new(Limits::default(), None);
    let task = edgemq_broker::sys::spawn(&bus, Duration::from_secs(10));
    pass(0).await;
    assert_eq!(value(&bus, "uptime").as_deref(), Some("0 seconds"));
    assert_eq!(
        value(&bus, "load/publish/received/1min").as_deref(),
        Some("0.00")
    );
    // 600 client PUBLISHes a minute, for one minute.
    for _ in 0..6 {
        bus.stats.publishes_received.fetch_add(100, Relaxed);
        pass(10).await;
    }
    assert_eq!(value(&bus, "uptime").as_deref(), Some("60 seconds"));
    assert_eq!(
        value(&bus, "publish/messages/received").as_deref(),
        Some("600")
    );
    let load = |name: &str| -> f64 { value(&bus, name).unwrap().parse().unwrap() };
    // One minute at rate r: the 1-minute average is r(1 - e^-1), the 5-minute r(1 - e^-0.2).
    let one = load("load/publish/received/1min");
    let five = load("load/publish/received/5min");
    assert!(
        (one - 600.0 * (1.0 - (-1.0f64).exp())).abs() < 0.01,
        "{one}"
    );
    assert!(
        (five - 600.0 * (1.0 - (-0.2f64).exp())).abs() < 0.01,
        "{five}"
    );
    assert_eq!(
        value(&bus, "load/messages/received/1min").as_deref(),
        Some("0.00")
    );
    // Its own messages are not counted as received, nor held with the clients' retained ones.
    assert_eq!(value(&bus, "messages/received").as_deref(), Some("0"));
    assert_eq!(bus.retained.len(), 0);
    // A quiet minute: the 1-minute average decays by e^-1.
    pass(60).await;
    let quiet = load("load/publish/received/1min");
    assert!((quiet - one * (-1.0f64).exp()).abs() < 0.02, "{quiet}");
    task.abort();
}
