//! How long things live: the connection (keep-alive), the session (resumed or new at
//! CONNECT, kept or ended when the connection ends) and the will (published now, later, or
//! never). The runtime keeps the timers and the session registry; these functions decide.

use std::time::{Duration, Instant};

use edgemq_codec::ReasonCode;

use crate::protocol::Violation;

/// Session Expiry Interval meaning "never expires" [MQTT-3.1.2-11].
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// The client's Keep Alive, in seconds (0: the server does not check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive(pub u16);

/// What to do when the keep-alive timer fires.
#[derive(Debug, PartialEq, Eq)]
pub enum KeepAliveCheck {
    /// Not expired (or not ours to judge): wait until then.
    WaitUntil(Instant),
    /// Nothing arrived for 1.5 × Keep Alive: disconnect with this.
    Expired(Violation),
}

impl KeepAlive {
    pub fn is_on(self) -> bool {
        self.0 > 0
    }

    /// 1.5 × Keep Alive after the last packet from the client [MQTT-3.1.2-22].
    pub fn deadline(self, last_read: Instant) -> Instant {
        last_read + Duration::from_millis(u64::from(self.0) * 1500)
    }

    /// The timer fired at `now`. While the server is not reading (its output is backed up,
    /// or the client is held back), the silence is the server's, so the timer waits again
    /// (at least a second, so a stalled connection does not spin).
    pub fn check(self, now: Instant, last_read: Instant, reading: bool) -> KeepAliveCheck {
        let deadline = self.deadline(last_read);
        if deadline > now || !reading {
            return KeepAliveCheck::WaitUntil(deadline.max(now + Duration::from_secs(1)));
        }
        KeepAliveCheck::Expired(Violation::new(
            ReasonCode::KeepAliveTimeout,
            "[MQTT-3.1.2-22] keep-alive timeout",
        ))
    }
}

/// Whether CONNECT continues the existing session: it does unless the client starts clean
/// [MQTT-3.1.2-4] or there is none to continue (none, or it ended with its connection
/// because its expiry was 0) [MQTT-3.1.2-5]. This is CONNACK's Session Present
/// [MQTT-3.2.2-2].
pub fn resumes(clean_start: bool, previous_expiry: Option<u32>) -> bool {
    !clean_start && previous_expiry.is_some_and(|expiry| expiry != 0)
}

/// A client reconnects while its old session waits offline with a delayed will: a
/// reconnection cancels it, unless the client starts clean, which ends the old session and
/// so publishes it [MQTT-3.1.3-9]. True: publish it now.
pub fn pending_will_goes(clean_start: bool) -> bool {
    clean_start
}

/// When an offline session with `expiry` seconds ends, counted from `now`; `None`: never
/// [MQTT-3.1.2-11].
pub fn session_ends(now: Instant, expiry: u32) -> Option<Instant> {
    (expiry != NEVER_EXPIRES).then(|| now + Duration::from_secs(u64::from(expiry)))
}

/// How a connection ended, as far as its will is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// DISCONNECT from the client; `with_will` for v5 reason 0x04.
    Disconnect { with_will: bool },
    /// Closed by the network, the client, a violation, a timeout or the server's shutdown.
    Lost,
    /// Another connection took the session; it starts clean or resumes it.
    TakenOver { new_clean_start: bool },
}

/// When a will goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WillTiming {
    Never,
    Now,
    /// This many seconds from the end of the connection, unless the client reconnects first.
    After(u32),
}

/// What becomes of a will with `delay` (Will Delay Interval) when a connection whose session
/// has `expiry` ends as `ending`.
///
/// - A DISCONNECT 0x00 removes it [MQTT-3.1.2-10]; 0x04 publishes it.
/// - Otherwise it goes when the delay passes or the session ends, whichever is first
///   [MQTT-3.1.3-9]: at once with no delay or a session that ends with its connection.
/// - On takeover the old connection is closed [MQTT-3.1.4-3]: if its session ends (expiry
///   0, or the new connection starts clean) the will goes now; if the new connection
///   resumes it, the session has not ended and the client is back, so a delayed will
///   never goes.
pub fn will_timing(ending: Ending, delay: u32, expiry: u32) -> WillTiming {
    match ending {
        Ending::Disconnect { with_will: false } => WillTiming::Never,
        Ending::TakenOver { new_clean_start } => {
            if new_clean_start || expiry == 0 || delay == 0 {
                WillTiming::Now
            } else {
                WillTiming::Never
            }
        }
        Ending::Disconnect { with_will: true } | Ending::Lost => {
            if expiry == 0 || delay == 0 {
                WillTiming::Now
            } else {
                WillTiming::After(delay.min(expiry))
            }
        }
    }
}

#[cfg(test)]
#[path = "lifetime_tests.rs"]
mod tests;
