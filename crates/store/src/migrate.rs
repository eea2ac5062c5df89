//! Format 1 → format 2, once, at start-up. Format 1 keyed every queued, in-flight and QoS 2
//! record by the client id; format 2 numbers each session and keys its records by the
//! number (see `writer`). The migration
//! runs in the start-up transaction: it commits with the rest of recovery or not at all.

use std::collections::HashMap;

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use crate::record::{self, Clock};
use crate::recover::Failure;
use crate::writer::{INCOMING, INFLIGHT, QUEUE, SESSIONS};

pub(crate) const QUEUE_V1: TableDefinition<'static, (&'static str, u64), &'static [u8]> =
    TableDefinition::new("queue");
pub(crate) const INFLIGHT_V1: TableDefinition<'static, (&'static str, u64), &'static [u8]> =
    TableDefinition::new("inflight");
pub(crate) const INCOMING_V1: TableDefinition<'static, (&'static str, u16), ()> =
    TableDefinition::new("incoming_qos2");

/// Migrate what format 1 left, if anything.
pub(crate) fn to_v2(txn: &WriteTransaction, clock: Clock) -> Result<(), Failure> {
    let old: Vec<String> = txn
        .list_tables()?
        .map(|t| t.name().to_string())
        .filter(|n| [QUEUE_V1.name(), INFLIGHT_V1.name(), INCOMING_V1.name()].contains(&n.as_str()))
        .collect();
    let numbers = number_sessions(txn, clock)?;
    if old.is_empty() {
        return Ok(());
    }
    let queued = move_queue(txn, &numbers)?;
    move_inflight(txn, &numbers)?;
    // (Opening a table creates it: all three go, whichever existed.)
    txn.delete_table(QUEUE_V1)?;
    txn.delete_table(INFLIGHT_V1)?;
    txn.delete_table(INCOMING_V1)?;
    tracing::info!(
        sessions = numbers.len(),
        queued_messages = queued,
        "store: records of format 1 were migrated to format 2 (sessions numbered; records keyed by the number)"
    );
    Ok(())
}

/// Give every format 1 session a number; every session's number by client id.
fn number_sessions(txn: &WriteTransaction, clock: Clock) -> Result<HashMap<String, u64>, Failure> {
    let mut table = txn.open_table(SESSIONS)?;
    let mut numbers = HashMap::new();
    let mut unnumbered = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        match record::decode_session(value.value(), clock) {
            Ok((_, Some(n))) => {
                numbers.insert(key.value().to_owned(), n);
            }
            Ok((session, None)) => unnumbered.push((key.value().to_owned(), session)),
            // Left for recovery to report and remove.
            Err(_) => {}
        }
    }
    let first = numbers.values().max().map_or(1, |n| n + 1);
    for (number, (client, session)) in (first..).zip(unnumbered) {
        let raw = record::encode_session(&session, number, clock);
        table.insert(client.as_str(), &raw[..])?;
        numbers.insert(client, number);
    }
    Ok(numbers)
}

/// A format 1 delivery carries its own copy of the message, as format 2 still writes a
/// message queued for one session: the record moves as it is, under its session's number.
/// (Copies of one message were not told apart in format 1; each stays a copy of its own.)
/// Whether it decodes is checked with everything else queued, after the move.
fn move_queue(txn: &WriteTransaction, numbers: &HashMap<String, u64>) -> Result<usize, Failure> {
    let old = txn.open_table(QUEUE_V1)?;
    let mut queue = txn.open_table(QUEUE)?;
    let mut moved = 0;
    for entry in old.iter()? {
        let (k, value) = entry?;
        let (client, seq) = k.value();
        if let Some(&number) = numbers.get(client) {
            queue.insert((number, seq), value.value())?;
            moved += 1;
        }
    }
    Ok(moved)
}

fn move_inflight(txn: &WriteTransaction, numbers: &HashMap<String, u64>) -> Result<(), Failure> {
    let old = txn.open_table(INFLIGHT_V1)?;
    let mut inflight = txn.open_table(INFLIGHT)?;
    for entry in old.iter()? {
        let (k, value) = entry?;
        let (client, seq) = k.value();
        if let Some(&number) = numbers.get(client) {
            inflight.insert((number, seq), value.value())?;
        }
    }
    let old = txn.open_table(INCOMING_V1)?;
    let mut incoming = txn.open_table(INCOMING)?;
    for entry in old.iter()? {
        let (k, _) = entry?;
        let (client, packet_id) = k.value();
        if let Some(&number) = numbers.get(client) {
            incoming.insert((number, packet_id), ())?;
        }
    }
    Ok(())
}
