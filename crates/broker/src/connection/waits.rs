//! What the connection loop waits on besides its socket: signals from outside, the store,
//! and the one deadline arm.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

use edgemq_core::session::Delivery;

use super::{ControlSlot, Loading};
use crate::sessions::Control;

/// Resolves when `future` does; never when there is none. (Rare waits — a back-pressure
/// pause, a credentials expiry — are boxed only while they exist, not carried by every
/// connection's task.)
pub(super) async fn fires<F: Future<Output = ()> + ?Sized>(future: &mut Option<Pin<Box<F>>>) {
    match future {
        Some(future) => future.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Something from outside the connection.
pub(super) enum Signal {
    /// From the registry: a takeover, or an operator's request.
    Control(Control),
    Shutdown,
    /// The listener's authorization policy changed.
    PolicyChanged,
}

pub(super) async fn signal(
    control: &ControlSlot,
    shutdown: &mut watch::Receiver<bool>,
    authz_changes: &mut watch::Receiver<u64>,
) -> Signal {
    tokio::select! {
        biased;
        control = control.recv() => Signal::Control(control),
        _ = shutdown.changed() => Signal::Shutdown,
        _ = authz_changes.changed() => Signal::PolicyChanged,
    }
}

/// The store committed further, or read deliveries back.
pub(super) enum StoreEvent {
    Committed(u64),
    Loaded(Vec<Delivery>),
}

pub(super) async fn store_event(
    committed: &mut Option<watch::Receiver<u64>>,
    holding: bool,
    loading: &mut Option<Loading>,
) -> StoreEvent {
    tokio::select! {
        biased;
        c = changed(committed), if holding => StoreEvent::Committed(c),
        loaded = load_done(loading) => StoreEvent::Loaded(loaded),
    }
}

/// A deadline that passed.
pub(super) enum Due {
    /// The subscriber queue (or the memory pressure) that held this publisher back eased,
    /// or the patience ran out.
    Relieved,
    /// The credentials' expiry.
    Credentials,
    /// The keep-alive timer (the deadline itself may have moved since it was set).
    KeepAlive,
}

pub(super) async fn deadline(
    held_back: &mut Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    credentials: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    keep_alive: Pin<&mut tokio::time::Sleep>,
    keep_alive_on: bool,
) -> Due {
    tokio::select! {
        biased;
        () = fires(held_back) => Due::Relieved,
        () = fires(credentials) => Due::Credentials,
        () = keep_alive, if keep_alive_on => Due::KeepAlive,
    }
}

/// The next value of a commit watch (never resolves without a store). A closed watch reads
/// as everything committed: the writer stops only after committing what it was given, or
/// after a failure, which `on_commit` checks first.
pub(super) async fn changed(committed: &mut Option<watch::Receiver<u64>>) -> u64 {
    match committed {
        Some(rx) => match rx.changed().await {
            Ok(()) => *rx.borrow_and_update(),
            Err(_) => u64::MAX,
        },
        None => std::future::pending().await,
    }
}

/// Deliveries read back from the store (empty if the store stopped).
pub(super) async fn load_done(loading: &mut Option<Loading>) -> Vec<Delivery> {
    match loading {
        Some(l) => (&mut l.reply).await.unwrap_or_default(),
        None => std::future::pending().await,
    }
}
