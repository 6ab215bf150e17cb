//! Byte-rate windows and throttle time, as Kafka's quota metrics compute them.
//!
//! A rate is measured over `quota.window.num` samples of `quota.window.size.seconds` each
//! (Kafka's defaults: 11 and 1 s). Samples older than all the windows are forgotten. The rate
//! is the bytes of the live samples over the time they span, counted as at least
//! `window_num - 1` full windows (so a fresh entity is not throttled for its first burst as if
//! it had been measured over a few milliseconds). When a recording pushes the rate `r` over
//! the bound `q`, the throttle is the time for the rate to fall back to `q`:
//! `(r - q) / q * span`, bounded by the whole measured time (`window_num * window_size`).
//!
//! ```text
//!   samples: [ s0 | s1 | ... | s10 ]   each window_size_ms wide, reused oldest-first
//!   rate     = sum(bytes) / max(now - oldest_start, (num - 1) * size)
//!   throttle = (rate - bound) / bound * span      (when rate > bound)
//! ```

/// Kafka's `quota.window.num` default.
pub const WINDOW_NUM: usize = 11;
/// Kafka's `quota.window.size.seconds` default, in ms.
pub const WINDOW_SIZE_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// When the sample's window started; `None`: unused.
    start_ms: Option<u64>,
    bytes: f64,
}

/// One entity's byte-rate samples.
#[derive(Debug, Clone)]
pub struct RateWindows {
    samples: [Sample; WINDOW_NUM],
    window_ms: u64,
}

impl Default for RateWindows {
    fn default() -> Self {
        RateWindows::new(WINDOW_SIZE_MS)
    }
}

impl RateWindows {
    pub fn new(window_ms: u64) -> RateWindows {
        assert!(window_ms > 0, "a window has a length");
        RateWindows {
            samples: [Sample::default(); WINDOW_NUM],
            window_ms,
        }
    }

    fn span_limit_ms(&self) -> u64 {
        self.window_ms * WINDOW_NUM as u64
    }

    /// Forgets samples whose window ended more than all the windows ago.
    fn purge(&mut self, now_ms: u64) {
        let limit = self.span_limit_ms();
        for s in &mut self.samples {
            if s.start_ms
                .is_some_and(|start| now_ms.saturating_sub(start) >= limit)
            {
                *s = Sample::default();
            }
        }
    }

    /// Adds `bytes` at `now_ms` (times never go backwards for one entity in practice; an
    /// earlier time lands in the current sample).
    pub fn record(&mut self, now_ms: u64, bytes: f64) {
        self.purge(now_ms);
        let window_ms = self.window_ms;
        let current = self.samples.iter_mut().find(|s| {
            s.start_ms
                .is_some_and(|start| now_ms < start.saturating_add(window_ms))
        });
        match current {
            Some(s) => s.bytes += bytes,
            None => {
                // A new window: an unused slot, else the oldest one.
                let slot = self
                    .samples
                    .iter_mut()
                    .min_by_key(|s| s.start_ms.map_or(0, |t| t + 1))
                    .expect("there are samples");
                *slot = Sample {
                    start_ms: Some(now_ms),
                    bytes,
                };
            }
        }
    }

    /// The time the rate is measured over at `now_ms`, in ms.
    fn span_ms(&self, now_ms: u64) -> u64 {
        let oldest = self
            .samples
            .iter()
            .filter_map(|s| s.start_ms)
            .min()
            .unwrap_or(now_ms);
        let elapsed = now_ms.saturating_sub(oldest);
        let full = elapsed / self.window_ms;
        let min_full = WINDOW_NUM as u64 - 1;
        if full < min_full {
            elapsed + (min_full - full) * self.window_ms
        } else {
            elapsed
        }
    }

    /// Bytes per second at `now_ms`.
    pub fn rate(&mut self, now_ms: u64) -> f64 {
        self.purge(now_ms);
        let total: f64 = self.samples.iter().map(|s| s.bytes).sum();
        total / (self.span_ms(now_ms) as f64 / 1000.0)
    }

    /// How long, in ms, until the rate is back at `bound` (0 when it is not over it).
    pub fn throttle_ms(&mut self, now_ms: u64, bound: f64) -> u64 {
        let rate = self.rate(now_ms);
        if bound <= 0.0 {
            // A zero quota allows nothing: always the longest throttle while bytes flow.
            return if rate > 0.0 { self.span_limit_ms() } else { 0 };
        }
        if rate <= bound {
            return 0;
        }
        let span = self.span_ms(now_ms) as f64;
        let throttle = ((rate - bound) / bound * span).ceil();
        (throttle as u64).min(self.span_limit_ms())
    }

    /// Records `bytes` at `now_ms` and answers the throttle they cause under `bound`.
    pub fn record_and_throttle(&mut self, now_ms: u64, bytes: f64, bound: f64) -> u64 {
        self.record(now_ms, bytes);
        self.throttle_ms(now_ms, bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_the_bound_nothing_is_throttled() {
        let mut w = RateWindows::default();
        // 10 windows' worth at exactly the bound: the span is 10 s.
        assert_eq!(w.record_and_throttle(0, 1000.0, 100.0), 0);
        assert_eq!(w.rate(0), 100.0);
    }

    #[test]
    fn over_the_bound_throttles_until_the_rate_is_back() {
        let mut w = RateWindows::default();
        // 2000 bytes over a 10 s span: 200 B/s against 100 B/s; (200-100)/100 * 10 s = 10 s.
        let t = w.record_and_throttle(0, 2000.0, 100.0);
        assert_eq!(t, 10_000);
        // The estimate is Kafka's: the padded span keeps the rate up until the burst's window
        // leaves the measured time, one window after the throttle ends.
        assert!(w.throttle_ms(t, 100.0) > 0);
        assert_eq!(w.throttle_ms(t + WINDOW_SIZE_MS, 100.0), 0);
    }

    #[test]
    fn throttle_is_bounded_and_old_bytes_are_forgotten() {
        let mut w = RateWindows::default();
        let t = w.record_and_throttle(0, 1e12, 1.0);
        assert_eq!(t, WINDOW_NUM as u64 * WINDOW_SIZE_MS);
        assert_eq!(w.rate(WINDOW_NUM as u64 * WINDOW_SIZE_MS), 0.0);
    }

    #[test]
    fn samples_roll_over_oldest_first() {
        let mut w = RateWindows::default();
        for second in 0..30u64 {
            w.record(second * 1000, 100.0);
        }
        // Only the last 11 windows count, over an 11 s (well, 10 s + elapsed) span.
        let rate = w.rate(29_000);
        assert!((rate - 110.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn a_zero_bound_throttles_any_bytes() {
        let mut w = RateWindows::default();
        assert_eq!(w.throttle_ms(0, 0.0), 0);
        assert!(w.record_and_throttle(0, 1.0, 0.0) > 0);
    }
}
