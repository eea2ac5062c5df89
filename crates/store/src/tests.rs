use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;

use edgemq_codec::QoS;
use edgemq_core::message::Message;
use edgemq_core::session::{Delivery, OutgoingState};

use crate::{Recovery, SessionRecord, Store, StoreError, SyncPolicy, FILE_NAME};

fn delivery(topic: &'static str, qos: QoS) -> Delivery {
    let message = Message::broker_generated(
        ByteString::from_static(topic),
        Bytes::from_static(b"payload"),
        qos,
        false,
    );
    Delivery::plain(Arc::new(message), qos)
}

fn session() -> SessionRecord {
    SessionRecord {
        expiry_interval: 3600,
        disconnected_at: None,
        subscriptions: Vec::new(),
        will: None,
        epoch: 1,
    }
}

fn open(dir: &std::path::Path) -> (Store, crate::Recovered) {
    Store::open(dir, SyncPolicy::Always, Recovery::Quarantine).expect("store opens")
}

#[test]
fn what_was_committed_is_read_back_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let client = ByteString::from_static("sub-1");
    let (store, recovered) = open(dir.path());
    assert!(recovered.sessions.is_empty());
    store.put_session(&client, session());
    let queued = store.enqueue(&client, delivery("a/1", QoS::AtLeastOnce), false);
    let sent = store.enqueue(&client, delivery("a/2", QoS::ExactlyOnce), false);
    let acked = store.enqueue(&client, delivery("a/3", QoS::AtLeastOnce), false);
    store.sent(
        &client,
        sent.stored.unwrap(),
        7,
        OutgoingState::AwaitingPubRec,
    );
    store.remove(&client, acked.stored.unwrap());
    store.incoming_qos2(&client, 42, true);
    store.retain(&Arc::new(Message::broker_generated(
        ByteString::from_static("r/1"),
        Bytes::from_static(b"kept"),
        QoS::AtLeastOnce,
        true,
    )));
    store.close();
    drop(store);

    let (_store, recovered) = open(dir.path());
    assert_eq!(recovered.sessions.len(), 1);
    let s = &recovered.sessions[0];
    assert_eq!(s.client_id, client);
    assert_eq!(s.queued, vec![(queued.stored.unwrap(), QoS::AtLeastOnce)]);
    assert_eq!(s.inflight.len(), 1);
    assert_eq!(s.inflight[0].0, 7);
    assert_eq!(s.inflight[0].1, OutgoingState::AwaitingPubRec);
    assert_eq!(&*s.inflight[0].2.message.topic, "a/2");
    assert_eq!(s.incoming_qos2, vec![42]);
    assert_eq!(recovered.retained.len(), 1);
    assert_eq!(&recovered.retained[0].payload[..], b"kept");
    assert!(recovered.next_seq > sent.stored.unwrap());
    let _ = acked;
}

#[tokio::test]
async fn a_ticket_is_reached_once_its_operations_are_committed_and_loads_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let client = ByteString::from_static("c");
    let (store, _) = open(dir.path());
    let d = store.enqueue(&client, delivery("t", QoS::AtLeastOnce), false);
    let ticket = store.ticket();
    let mut committed = store.committed();
    committed.wait_for(|c| *c >= ticket).await.unwrap();
    let loaded = store
        .load(&client, vec![d.stored.unwrap(), 999])
        .await
        .unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(&*loaded[0].message.topic, "t");
    store.close();
}

#[test]
fn a_damaged_file_is_quarantined_and_the_store_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), vec![0xA5; 64 * 1024]).unwrap();
    let (store, recovered) = open(dir.path());
    let aside = recovered.quarantined.expect("moved aside");
    assert!(aside.exists());
    assert!(aside
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("state.redb.damaged-"));
    assert!(recovered.sessions.is_empty());
    store.close();

    std::fs::write(dir.path().join(FILE_NAME), b"not a database").unwrap();
    match Store::open(dir.path(), SyncPolicy::Always, Recovery::Strict) {
        Err(StoreError::Damaged { .. }) => {}
        other => panic!(
            "strict recovery refuses a damaged store, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[test]
fn a_store_in_use_is_refused_not_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    match Store::open(dir.path(), SyncPolicy::Always, Recovery::Quarantine) {
        Err(StoreError::InUse { .. }) => {}
        other => panic!("expected InUse, got {:?}", other.map(|_| ())),
    }
    store.close();
}

#[test]
fn sync_policies_parse() {
    assert_eq!("always".parse::<SyncPolicy>(), Ok(SyncPolicy::Always));
    assert_eq!("never".parse::<SyncPolicy>(), Ok(SyncPolicy::Never));
    assert_eq!(
        "interval-ms=10".parse::<SyncPolicy>(),
        Ok(SyncPolicy::IntervalMs(10))
    );
    assert_eq!(
        "interval-ms 10".parse::<SyncPolicy>(),
        Ok(SyncPolicy::IntervalMs(10))
    );
    assert!("interval-ms=0".parse::<SyncPolicy>().is_err());
    assert!("sometimes".parse::<SyncPolicy>().is_err());
}

/// Poll `f` for up to `secs` seconds.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    f()
}

/// Under each sync policy, a write error does not end the writer: the batch is kept (its
/// ticket is not reached: nothing is acknowledged), the store says it is degraded and counts
/// the failures, what is submitted meanwhile joins the batch, and once writes succeed again
/// everything commits, with no reopen of the store, and is read back after one.
#[test]
fn a_failed_commit_is_held_and_retried_until_the_disk_takes_it() {
    for policy in [
        SyncPolicy::Always,
        SyncPolicy::IntervalMs(5),
        SyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let client = ByteString::from_static("sub");
        let (store, _) = Store::open(dir.path(), policy, Recovery::Quarantine).unwrap();
        store.put_session(&client, session());
        let before = store.enqueue(&client, delivery("before", QoS::AtLeastOnce), false);
        let ticket = store.ticket();
        assert!(eventually(10, || *store.committed().borrow() >= ticket));
        assert_eq!(store.health(), crate::Health::Ok);

        store.inject_write_errors(true);
        let during = store.enqueue(&client, delivery("during", QoS::AtLeastOnce), false);
        let held = store.ticket();
        assert!(
            eventually(10, || matches!(
                store.health(),
                crate::Health::Degraded { .. }
            )),
            "{policy}: degraded"
        );
        let error = match store.health() {
            crate::Health::Degraded { error, .. } => error,
            other => panic!("{other:?}"),
        };
        assert!(error.contains("No space left"), "{policy}: {error}");
        assert!(!store.is_failed(), "degraded is not failed");
        // Retries go on and fail; the ticket is never reached meanwhile.
        assert!(eventually(10, || store.failed_commits() >= 3));
        assert!(
            *store.committed().borrow() < held,
            "{policy}: released early"
        );
        let later = store.enqueue(&client, delivery("later", QoS::ExactlyOnce), false);
        let load = store.load(&client, vec![during.stored.unwrap()]);
        let last = store.ticket();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            *store.committed().borrow() < held,
            "{policy}: released early"
        );
        assert!(store.pending() >= 3);

        store.inject_write_errors(false);
        assert!(
            eventually(10, || *store.committed().borrow() >= last),
            "{policy}: recovered"
        );
        assert_eq!(store.health(), crate::Health::Ok);
        assert!(!store.is_failed());
        let loaded = load.blocking_recv().unwrap();
        assert_eq!(&*loaded[0].message.topic, "during");
        // And it goes on working.
        let after = store.enqueue(&client, delivery("after", QoS::AtLeastOnce), false);
        let t = store.ticket();
        assert!(eventually(10, || *store.committed().borrow() >= t));
        store.close();
        drop(store);

        let (store, recovered) = open(dir.path());
        let queued: Vec<u64> = recovered.sessions[0].queued.iter().map(|q| q.0).collect();
        let expect: Vec<u64> = [before, during, later, after]
            .iter()
            .map(|d| d.stored.unwrap())
            .collect();
        assert_eq!(queued, expect, "{policy}");
        store.close();
    }
}

/// While degraded, the waiting operations are bounded: beyond the bound the store gives up
/// as it did before retries existed (failed, every waiter released to refuse), and nothing
/// it had committed is lost.
#[test]
fn beyond_the_backlog_bound_a_degraded_store_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let client = ByteString::from_static("sub");
    let (store, _) = Store::open_with(
        dir.path(),
        SyncPolicy::Always,
        Recovery::Quarantine,
        (50, usize::MAX),
    )
    .unwrap();
    store.put_session(&client, session());
    let kept = store.enqueue(&client, delivery("kept", QoS::AtLeastOnce), false);
    let ticket = store.ticket();
    assert!(eventually(10, || *store.committed().borrow() >= ticket));
    store.inject_write_errors(true);
    store.enqueue(&client, delivery("first", QoS::AtLeastOnce), false);
    assert!(eventually(10, || matches!(
        store.health(),
        crate::Health::Degraded { .. }
    )));
    for _ in 0..100 {
        store.enqueue(&client, delivery("more", QoS::AtLeastOnce), false);
    }
    assert!(eventually(10, || store.is_failed()));
    assert!(matches!(store.health(), crate::Health::Failed { .. }));
    assert_eq!(*store.committed().borrow(), u64::MAX);
    store.close();
    drop(store);

    let (store, recovered) = open(dir.path());
    let queued: Vec<u64> = recovered.sessions[0].queued.iter().map(|q| q.0).collect();
    assert_eq!(queued, vec![kept.stored.unwrap()]);
    store.close();
}

/// A shutdown while degraded does not hang: the store gives up what it could not commit
/// (never acknowledged) and `close` returns.
#[test]
fn close_while_degraded_returns() {
    let dir = tempfile::tempdir().unwrap();
    let client = ByteString::from_static("sub");
    let (store, _) = open(dir.path());
    store.inject_write_errors(true);
    store.put_session(&client, session());
    assert!(eventually(10, || store.failed_commits() >= 1));
    let started = std::time::Instant::now();
    store.close();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(store.is_failed());
}

fn committed(store: &Store) {
    let t = store.ticket();
    assert!(eventually(10, || *store.committed().borrow() >= t));
}

fn big(topic: &'static str, size: usize) -> Arc<Message> {
    Arc::new(Message::broker_generated(
        ByteString::from_static(topic),
        Bytes::from(vec![7u8; size]),
        QoS::AtLeastOnce,
        false,
    ))
}

/// A message queued for many sessions is stored once; a client id is stored once per
/// session, however many messages are queued for it (issue: 2,000 persistent sessions made
/// the store 3,241 × the bytes published).
#[test]
fn a_message_for_many_sessions_is_stored_once_and_client_ids_once_per_session() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let empty = store.usage();
    let clients: Vec<ByteString> = (0..200)
        .map(|i| ByteString::from(format!("{}-{i}", "c".repeat(10_000))))
        .collect();
    for c in &clients {
        store.put_session(c, session());
    }
    committed(&store);
    let sessions = store.usage() - empty;
    assert!(sessions < 200 * 10_100, "{sessions}");
    let message = big("fan/out", 100_000);
    for _ in 0..20 {
        for c in &clients {
            store.enqueue(c, Delivery::plain(message.clone(), QoS::AtLeastOnce), true);
        }
    }
    committed(&store);
    let queued = store.usage() - empty - sessions;
    // 4,000 deliveries of one 100 kB message: the message once, ~50 bytes a delivery.
    assert!(queued < 100_000 + 4000 * 80, "{queued}");
    let file = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
    assert!(file < 20_000_000, "file {file}");
    let usage = store.usage();
    store.close();
    drop(store);

    let (store, recovered) = open(dir.path());
    assert_eq!(
        store.usage(),
        usage,
        "the count is the same after a restart"
    );
    assert_eq!(recovered.sessions.len(), 200);
    assert!(recovered.sessions.iter().all(|s| s.queued.len() == 20));
    // Loads share one copy of the message.
    let keys: Vec<u64> = recovered.sessions[0].queued.iter().map(|q| q.0).collect();
    let a = store
        .load(&recovered.sessions[0].client_id, keys)
        .blocking_recv()
        .unwrap();
    let keys: Vec<u64> = recovered.sessions[1].queued.iter().map(|q| q.0).collect();
    let b = store
        .load(&recovered.sessions[1].client_id, keys)
        .blocking_recv()
        .unwrap();
    assert_eq!((a.len(), b.len()), (20, 20));
    assert!(Arc::ptr_eq(&a[0].message, &b[19].message));
    assert_eq!(a[0].message.payload.len(), 100_000);

    // Ending the sessions frees the message with the last of them.
    for s in &recovered.sessions {
        store.delete_session(&s.client_id);
    }
    committed(&store);
    assert_eq!(store.usage(), empty, "nothing is left");
    store.close();
    drop(store);
    let (store, recovered) = open(dir.path());
    assert!(recovered.sessions.is_empty());
    assert_eq!(store.usage(), empty);
    store.close();
}

/// Acknowledged (removed) deliveries release their message; one delivered to every session
/// is deleted, one still queued for a session is kept.
#[test]
fn a_message_lives_as_long_as_a_delivery_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let (a, b) = (ByteString::from_static("a"), ByteString::from_static("b"));
    store.put_session(&a, session());
    store.put_session(&b, session());
    committed(&store);
    let base = store.usage();
    let m = big("t", 50_000);
    let da = store.enqueue(&a, Delivery::plain(m.clone(), QoS::AtLeastOnce), true);
    let db = store.enqueue(&b, Delivery::plain(m.clone(), QoS::ExactlyOnce), true);
    committed(&store);
    assert!(store.usage() - base > 50_000);
    store.remove(&a, da.stored.unwrap());
    committed(&store);
    assert!(store.usage() - base > 50_000, "b still holds it");
    store.sent(&b, db.stored.unwrap(), 3, OutgoingState::AwaitingPubComp);
    committed(&store);
    // Awaiting PUBCOMP, only the identifier is kept.
    assert!(store.usage() - base < 100, "{}", store.usage() - base);
    store.close();
    drop(store);
    let (_store, recovered) = open(dir.path());
    let b = recovered
        .sessions
        .iter()
        .find(|s| &*s.client_id == "b")
        .unwrap();
    assert_eq!(b.inflight.len(), 1);
    assert_eq!(b.inflight[0].0, 3);
}

/// A store written by format 1 (every record keyed by client id, every delivery with its own
/// message) is migrated at start-up: nothing is lost, and it is in format 2 afterwards.
#[test]
fn a_format_1_store_is_migrated() {
    use crate::migrate::{INCOMING_V1, INFLIGHT_V1, QUEUE_V1};
    use crate::record::{self, Clock};
    use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::now();
    {
        let db = redb::Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut sessions = txn.open_table(crate::writer::SESSIONS).unwrap();
            let mut v1 = vec![1u8];
            v1.extend_from_slice(&record::encode_session_v2(&session(), 0, clock)[9..]);
            sessions.insert("old-client", &v1[..]).unwrap();
            let mut queue = txn.open_table(QUEUE_V1).unwrap();
            let v1 = |d: &Delivery| {
                let mut raw = bytes::BytesMut::new();
                record::encode_delivery_inline(d, clock, &mut raw);
                raw
            };
            let d1 = delivery("q/1", QoS::AtLeastOnce);
            let d2 = delivery("q/2", QoS::ExactlyOnce);
            queue.insert(("old-client", 5), &v1(&d1)[..]).unwrap();
            queue.insert(("old-client", 6), &v1(&d2)[..]).unwrap();
            queue.insert(("gone-client", 7), &v1(&d1)[..]).unwrap();
            let mut inflight = txn.open_table(INFLIGHT_V1).unwrap();
            inflight
                .insert(("old-client", 6), &record::encode_inflight(9, 1)[..])
                .unwrap();
            let mut incoming = txn.open_table(INCOMING_V1).unwrap();
            incoming.insert(("old-client", 11), ()).unwrap();
        }
        txn.commit().unwrap();
    }
    let (store, recovered) = open(dir.path());
    assert_eq!(recovered.damaged_records, 0);
    assert_eq!(recovered.sessions.len(), 1);
    let s = &recovered.sessions[0];
    assert_eq!(&*s.client_id, "old-client");
    assert_eq!(s.queued, vec![(5, QoS::AtLeastOnce)]);
    assert_eq!(s.inflight.len(), 1);
    assert_eq!(
        (s.inflight[0].0, &*s.inflight[0].2.message.topic),
        (9, "q/2")
    );
    assert_eq!(s.incoming_qos2, vec![11]);
    assert!(recovered.next_seq > 6);
    let loaded = store.load(&s.client_id, vec![5]).blocking_recv().unwrap();
    assert_eq!(&*loaded[0].message.topic, "q/1");
    let usage = store.usage();
    store.close();
    drop(store);
    {
        let db = redb::Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_read().unwrap();
        let names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n == "queue" || n == "inflight" || n == "incoming_qos2"),
            "{names:?}"
        );
        let queue = txn.open_table(crate::writer::QUEUE).unwrap();
        assert_eq!(queue.len().unwrap(), 2, "the orphan's delivery is gone");
    }
    let (store, recovered) = open(dir.path());
    assert_eq!(recovered.sessions[0].queued.len(), 1);
    assert_eq!(store.usage(), usage);
    store.close();
}

/// A store whose sessions format 2 wrote (no epoch) opens with every epoch 0; a session
/// stored again is written in format 3 and keeps its epoch across a reopen.
#[test]
fn a_format_2_session_reads_as_epoch_0_and_is_rewritten_with_its_epoch() {
    use crate::record::{self, Clock};
    use redb::ReadableDatabase;
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::now();
    {
        let db = redb::Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut sessions = txn.open_table(crate::writer::SESSIONS).unwrap();
            let v2 = record::encode_session_v2(&session(), 1, clock);
            sessions.insert("old-client", &v2[..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let (store, recovered) = open(dir.path());
    assert_eq!(recovered.damaged_records, 0);
    assert_eq!(recovered.sessions.len(), 1);
    let s = &recovered.sessions[0];
    assert_eq!((&*s.client_id, s.record.epoch), ("old-client", 0));
    let client = s.client_id.clone();
    let mut next = s.record.clone();
    next.epoch = s.record.epoch + 1;
    store.put_session(&client, next);
    store.close();
    drop(store);
    {
        let db = redb::Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_read().unwrap();
        let sessions = txn.open_table(crate::writer::SESSIONS).unwrap();
        let raw = sessions.get("old-client").unwrap().unwrap();
        assert_eq!(raw.value()[0], 3, "rewritten in format 3");
    }
    let (store, recovered) = open(dir.path());
    assert_eq!(recovered.sessions[0].record.epoch, 1);
    store.close();
}
