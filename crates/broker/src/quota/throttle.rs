//! Rate windows and throttle time, as Kafka's quota metrics compute them.
//!
//! A rate is measured over `quota.window.num` samples of `quota.window.size.seconds` each
//! (Kafka's defaults: 11 and 1 s; [`WindowConfig`]). Samples older than all the windows are
//! forgotten. The rate is the amount recorded in the live samples (bytes, or request time in
//! percent-seconds) over the time they span, counted as at least `window_num - 1` full windows
//! (so a fresh entity is not throttled for its first burst as if it had been measured over a
//! few milliseconds), and at least 1 ms. When a recording pushes the rate `r` over the bound
//! `q`, the throttle is the time for the rate to fall back to `q`: `(r - q) / q * span`,
//! bounded by a maximum the caller gives (byte rates: the whole measured time,
//! `window_num * window_size`; request time: one window).
//!
//! ```text
//!   samples: [ s0 | s1 | ... | s10 ]   each window_size_ms wide, reused oldest-first
//!   rate     = sum(amount) / max(now - oldest_start, (num - 1) * size, 1 ms)
//!   throttle = min((rate - bound) / bound * span, max)      (when rate > bound)
//! ```

/// Kafka's `quota.window.num` default.
pub const WINDOW_NUM: usize = 11;
/// Kafka's `quota.window.size.seconds` default, in ms.
pub const WINDOW_SIZE_MS: u64 = 1000;

/// How rates are measured: `num` samples of `size_ms` each (`quota.window.num`,
/// `quota.window.size.seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    pub num: usize,
    pub size_ms: u64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            num: WINDOW_NUM,
            size_ms: WINDOW_SIZE_MS,
        }
    }
}

impl WindowConfig {
    /// The whole measured time: the longest byte-rate throttle.
    pub fn span_limit_ms(&self) -> u64 {
        self.size_ms.saturating_mul(self.num as u64)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// When the sample's window started; `None`: unused.
    start_ms: Option<u64>,
    amount: f64,
}

/// One entity's samples of one rate.
#[derive(Debug, Clone)]
pub struct RateWindows {
    samples: Vec<Sample>,
    window_ms: u64,
}

impl Default for RateWindows {
    fn default() -> Self {
        RateWindows::new(WindowConfig::default())
    }
}

impl RateWindows {
    pub fn new(config: WindowConfig) -> RateWindows {
        assert!(config.size_ms > 0, "a window has a length");
        assert!(config.num > 0, "a rate has a window");
        RateWindows {
            samples: vec![Sample::default(); config.num],
            window_ms: config.size_ms,
        }
    }

    fn span_limit_ms(&self) -> u64 {
        self.window_ms.saturating_mul(self.samples.len() as u64)
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

    /// Adds `amount` at `now_ms` (times never go backwards for one entity in practice; an
    /// earlier time lands in the current sample).
    pub fn record(&mut self, now_ms: u64, amount: f64) {
        self.purge(now_ms);
        let window_ms = self.window_ms;
        let current = self.samples.iter_mut().find(|s| {
            s.start_ms
                .is_some_and(|start| now_ms < start.saturating_add(window_ms))
        });
        match current {
            Some(s) => s.amount += amount,
            None => {
                // A new window: an unused slot, else the oldest one.
                let slot = self
                    .samples
                    .iter_mut()
                    .min_by_key(|s| s.start_ms.map_or(0, |t| t + 1))
                    .expect("there are samples");
                *slot = Sample {
                    start_ms: Some(now_ms),
                    amount,
                };
            }
        }
    }

    /// The time the rate is measured over at `now_ms`, in ms (at least 1).
    fn span_ms(&self, now_ms: u64) -> u64 {
        let oldest = self
            .samples
            .iter()
            .filter_map(|s| s.start_ms)
            .min()
            .unwrap_or(now_ms);
        let elapsed = now_ms.saturating_sub(oldest);
        let full = elapsed / self.window_ms;
        let min_full = self.samples.len() as u64 - 1;
        let span = if full < min_full {
            elapsed + (min_full - full) * self.window_ms
        } else {
            elapsed
        };
        span.max(1)
    }

    /// The amount per second at `now_ms`.
    pub fn rate(&mut self, now_ms: u64) -> f64 {
        self.purge(now_ms);
        let total: f64 = self.samples.iter().map(|s| s.amount).sum();
        total / (self.span_ms(now_ms) as f64 / 1000.0)
    }

    /// How long, in ms, until the rate is back at `bound` (0 when it is not over it), at most
    /// `max_ms`.
    pub fn throttle_ms(&mut self, now_ms: u64, bound: f64, max_ms: u64) -> u64 {
        let rate = self.rate(now_ms);
        if bound <= 0.0 {
            // A zero quota allows nothing: always the longest throttle while anything flows.
            return if rate > 0.0 { max_ms } else { 0 };
        }
        if rate <= bound {
            return 0;
        }
        let span = self.span_ms(now_ms) as f64;
        let throttle = ((rate - bound) / bound * span).ceil();
        (throttle as u64).min(max_ms)
    }

    /// Records `amount` at `now_ms` and answers the throttle it causes under `bound`, at most
    /// `max_ms`.
    pub fn record_and_throttle(
        &mut self,
        now_ms: u64,
        amount: f64,
        bound: f64,
        max_ms: u64,
    ) -> u64 {
        self.record(now_ms, amount);
        self.throttle_ms(now_ms, bound, max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = WINDOW_NUM as u64 * WINDOW_SIZE_MS;

    #[test]
    fn under_the_bound_nothing_is_throttled() {
        let mut w = RateWindows::default();
        // 10 windows' worth at exactly the bound: the span is 10 s.
        assert_eq!(w.record_and_throttle(0, 1000.0, 100.0, MAX), 0);
        assert_eq!(w.rate(0), 100.0);
    }

    #[test]
    fn over_the_bound_throttles_until_the_rate_is_back() {
        let mut w = RateWindows::default();
        // 2000 bytes over a 10 s span: 200 B/s against 100 B/s; (200-100)/100 * 10 s = 10 s.
        let t = w.record_and_throttle(0, 2000.0, 100.0, MAX);
        assert_eq!(t, 10_000);
        // The estimate is Kafka's: the padded span keeps the rate up until the burst's window
        // leaves the measured time, one window after the throttle ends.
        assert!(w.throttle_ms(t, 100.0, MAX) > 0);
        assert_eq!(w.throttle_ms(t + WINDOW_SIZE_MS, 100.0, MAX), 0);
    }

    #[test]
    fn throttle_is_bounded_and_old_bytes_are_forgotten() {
        let mut w = RateWindows::default();
        let t = w.record_and_throttle(0, 1e12, 1.0, MAX);
        assert_eq!(t, MAX);
        assert_eq!(w.rate(MAX), 0.0);
        // A smaller bound (the request-time quota's: one window) wins.
        assert_eq!(w.record_and_throttle(MAX, 1e12, 1.0, 1000), 1000);
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
        assert_eq!(w.throttle_ms(0, 0.0, MAX), 0);
        assert_eq!(w.record_and_throttle(0, 1.0, 0.0, MAX), MAX);
    }

    #[test]
    fn the_window_config_sets_the_measured_time() {
        // quota.window.num=2, quota.window.size.seconds=5: a fresh entity's burst is measured
        // over one 5 s window, and samples live 10 s.
        let config = WindowConfig {
            num: 2,
            size_ms: 5000,
        };
        let mut w = RateWindows::new(config);
        // 1000 over 5 s = 200/s against 100/s: (200-100)/100 * 5 s.
        assert_eq!(
            w.record_and_throttle(0, 1000.0, 100.0, config.span_limit_ms()),
            5000
        );
        // Recorded again in the next window: 2000 over 6 s (elapsed, one full window).
        w.record(6000, 1000.0);
        assert!((w.rate(6000) - 2000.0 / 6.0).abs() < 1e-9);
        // Both windows forgotten once 10 s passed since the second began.
        assert_eq!(w.rate(16_000), 0.0);
        // One window of 1 s: the span is what elapsed, at least 1 ms (never a division by 0).
        let mut one = RateWindows::new(WindowConfig {
            num: 1,
            size_ms: 1000,
        });
        one.record(0, 10.0);
        assert_eq!(one.rate(0), 10_000.0);
        assert_eq!(one.throttle_ms(0, 10_000.0, 1000), 0);
        assert_eq!(one.throttle_ms(0, 5_000.0, 1000), 1);
    }
}
