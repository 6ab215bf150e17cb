//! At most one INFO line per interval for a kind of event that a misbehaving client repeats:
//! a client with the wrong `security.protocol` reconnects every few tens of milliseconds,
//! and each refusal deserves to be visible once, not to flood the log. The others go to
//! DEBUG, and the next INFO line says how many there were.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often a throttled kind of line is logged at INFO.
pub const INFO_EVERY: Duration = Duration::from_secs(10);

/// One kind of throttled line.
pub struct LogThrottle {
    /// Milliseconds since [`epoch`] (plus one, so 0 means never) of the last INFO line.
    last_info_ms: AtomicU64,
    /// Lines sent to DEBUG since then.
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl LogThrottle {
    pub const fn new() -> Self {
        LogThrottle {
            last_info_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this occurrence is to be logged at INFO (`n` occurrences went to DEBUG
    /// since the last INFO line), `None` when at DEBUG.
    pub fn admit(&self) -> Option<u64> {
        let now_ms = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        self.admit_at(now_ms)
    }

    fn admit_at(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_info_ms.load(Ordering::Relaxed);
        let every_ms = INFO_EVERY.as_millis() as u64;
        let due = last == 0 || now_ms.saturating_sub(last) >= every_ms;
        if due
            && self
                .last_info_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_is_info_then_debug_until_the_interval_passes() {
        let throttle = LogThrottle::new();
        let every = INFO_EVERY.as_millis() as u64;
        assert_eq!(throttle.admit_at(5), Some(0));
        assert_eq!(throttle.admit_at(6), None);
        assert_eq!(throttle.admit_at(every), None);
        assert_eq!(throttle.admit_at(every + 5), Some(2));
        assert_eq!(throttle.admit_at(every + 6), None);
    }
}
