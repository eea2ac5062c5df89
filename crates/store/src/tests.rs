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
    let queued = store.enqueue(&client, delivery("a/1", QoS::AtLeastOnce));
    let sent = store.enqueue(&client, delivery("a/2", QoS::ExactlyOnce));
    let acked = store.enqueue(&client, delivery("a/3", QoS::AtLeastOnce));
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
    let d = store.enqueue(&client, delivery("t", QoS::AtLeastOnce));
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
