//! Warnings caused by what one client sends, rate-limited per connection.

use std::time::{Duration, Instant};

/// At most one line a second per connection, each with the number of lines left out before
/// it, so a client sending bad packets in a loop (or one packet of 200,000 bad filters)
/// cannot turn its bandwidth into log volume.
#[derive(Default)]
pub(super) struct Warnings {
    last: Option<Instant>,
    suppressed: u64,
}

impl Warnings {
    /// `Some(left out since the last line)` if a line may be written at `now`.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if due {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_left_out() {
        let mut w = Warnings::default();
        let t = Instant::now();
        assert_eq!(w.admit(t), Some(0));
        assert_eq!(w.admit(t), None);
        assert_eq!(w.admit(t + Duration::from_millis(999)), None);
        assert_eq!(w.admit(t + Duration::from_secs(1)), Some(2));
    }
}
