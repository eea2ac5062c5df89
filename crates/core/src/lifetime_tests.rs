//! The rules of `lifetime`, without sockets or clocks: each test names its statement.

use std::time::{Duration, Instant};

use edgemq_codec::ReasonCode;

use super::*;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn keep_alive_expires_after_one_and_a_half_times_its_value() {
    // [MQTT-3.1.2-22] If the Keep Alive value is non-zero and the Server does not receive
    // an MQTT Control Packet from the Client within one and a half times the Keep Alive
    // time period, it MUST close the Network Connection to the Client as if the network
    // had failed.
    let keep_alive = KeepAlive(10);
    let read = Instant::now();
    assert_eq!(keep_alive.deadline(read), read + 15 * SECOND);
    let early = read + 14 * SECOND;
    assert_eq!(
        keep_alive.check(early, read, true),
        KeepAliveCheck::WaitUntil(read + 15 * SECOND)
    );
    match keep_alive.check(read + 15 * SECOND, read, true) {
        KeepAliveCheck::Expired(v) => {
            assert_eq!(v.reason, ReasonCode::KeepAliveTimeout);
            assert!(v.rule.contains("MQTT-3.1.2-22"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn keep_alive_zero_is_off() {
    // [MQTT-3.1.2-22] applies to a non-zero value only; 0 switches the mechanism off.
    assert!(!KeepAlive(0).is_on());
    assert!(KeepAlive(1).is_on());
}

#[test]
fn silence_while_the_server_is_not_reading_is_not_the_clients() {
    // Output backed up or the client held back: the server stopped reading, so a packet
    // may be waiting unread. The timer waits again, at least a second.
    let read = Instant::now();
    let late = read + 60 * SECOND;
    assert_eq!(
        KeepAlive(10).check(late, read, false),
        KeepAliveCheck::WaitUntil(late + SECOND)
    );
}

#[test]
fn session_present_only_when_an_existing_session_is_resumed() {
    // [MQTT-3.1.2-4] Clean Start 1: discard any existing session, start a new one.
    // [MQTT-3.1.2-5] Clean Start 0 and a session exists: resume it.
    // [MQTT-3.2.2-2] Session Present 1 if the Server resumes a session, else 0.
    assert!(resumes(false, Some(60)));
    assert!(resumes(false, Some(NEVER_EXPIRES)));
    assert!(!resumes(true, Some(60)));
    assert!(!resumes(false, None), "nothing to resume");
    // A session with expiry 0 ended with its connection (taken over, or not yet cleaned
    // up): there is nothing to resume [MQTT-3.1.2-5].
    assert!(!resumes(false, Some(0)));
}

#[test]
fn never_expiring_sessions_have_no_end() {
    // [MQTT-3.1.2-11] ... If the Session Expiry Interval is 0xFFFFFFFF (UINT_MAX), the
    // Session does not expire.
    let now = Instant::now();
    assert_eq!(session_ends(now, NEVER_EXPIRES), None);
    assert_eq!(session_ends(now, 30), Some(now + 30 * SECOND));
}

#[test]
fn a_normal_disconnect_discards_the_will() {
    // [MQTT-3.1.2-10] The Will Message MUST be removed from the stored Session State in the
    // Server once it has been published or the Server has received a DISCONNECT packet
    // with a Reason Code of 0x00 (Normal disconnection) from the Client.
    let ending = Ending::Disconnect { with_will: false };
    assert_eq!(will_timing(ending, 0, 0), WillTiming::Never);
    assert_eq!(will_timing(ending, 30, 600), WillTiming::Never);
    // 0x04 Disconnect with Will Message publishes it.
    let with_will = Ending::Disconnect { with_will: true };
    assert_eq!(will_timing(with_will, 0, 600), WillTiming::Now);
}

#[test]
fn a_delayed_will_goes_at_the_earlier_of_its_delay_and_the_sessions_end() {
    // [MQTT-3.1.3-9] ... the Server MUST NOT send the Will Message until the Will Delay
    // Interval has passed or the Session ends, whichever happens first.
    assert_eq!(will_timing(Ending::Lost, 30, 600), WillTiming::After(30));
    assert_eq!(will_timing(Ending::Lost, 600, 30), WillTiming::After(30));
    assert_eq!(will_timing(Ending::Lost, 0, 600), WillTiming::Now);
    // Session Expiry 0: the session ends with the connection, so the will goes at once.
    assert_eq!(will_timing(Ending::Lost, 30, 0), WillTiming::Now);
    assert_eq!(
        will_timing(Ending::Lost, 30, NEVER_EXPIRES),
        WillTiming::After(30)
    );
}

#[test]
fn a_reconnection_cancels_a_pending_will_unless_it_starts_clean() {
    // [MQTT-3.1.3-9] A new connection to the session before the delay passes stops the
    // will; a clean start ends the old session, which sends it.
    assert!(!pending_will_goes(false));
    assert!(pending_will_goes(true));
}

#[test]
fn the_will_on_takeover_follows_the_old_sessions_end() {
    // [MQTT-3.1.4-3] The Server sends a DISCONNECT to the existing Client (0x8E) and
    // closes its connection; the will follows [MQTT-3.1.3-9].
    let resumed = Ending::TakenOver {
        new_clean_start: false,
    };
    let clean = Ending::TakenOver {
        new_clean_start: true,
    };
    // The session ends: it had expiry 0, or the new connection starts clean.
    assert_eq!(will_timing(resumed, 30, 0), WillTiming::Now);
    assert_eq!(will_timing(clean, 30, 600), WillTiming::Now);
    // A persistent session resumed: not ended, the client is back; a delayed will never goes.
    assert_eq!(will_timing(resumed, 30, 600), WillTiming::Never);
    // Without a delay the will goes as on any other loss of the connection.
    assert_eq!(will_timing(resumed, 0, 600), WillTiming::Now);
}
