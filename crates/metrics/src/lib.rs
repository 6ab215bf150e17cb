//! Metrics as plain atomics, and the Prometheus text format (version 0.0.4) to expose them.
//!
//! Strata knows its label sets in advance (APIs and versions from the served table, listeners
//! from the config, topics from the metadata image), so a metric is a struct field or an
//! element of a vector laid out once, and recording is one or a few relaxed atomic adds: no
//! registry lookup, hashing or lock on the paths that count. Rendering walks whatever the
//! owner holds and writes it through an [`Exposition`], which keeps each family's HELP and
//! TYPE lines, escapes label values and formats numbers as Prometheus parses them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new() -> Self {
        Gauge(AtomicI64::new(0))
    }

    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Request and I/O latencies, seconds: from half a millisecond to a minute (long polls land
/// in the top buckets).
pub const REQUEST_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Storage latencies (fsync, group commit), seconds: from 100 µs to 5 s.
pub const STORAGE_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Long operations (cleaner passes), seconds: from 10 ms to 15 minutes.
pub const LONG_SECONDS: &[f64] = &[0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];

/// Counts (partitions per flush round and the like): powers of two up to 4096.
pub const COUNTS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// A histogram with fixed upper bounds. Buckets are stored non-cumulative and summed at
/// render time, so `_count` and the `+Inf` bucket always agree. The sum is kept in integer
/// units of `1 / scale` (nanoseconds for durations), so recording stays an atomic add.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the overflow bucket.
    buckets: Box<[AtomicU64]>,
    sum_units: AtomicU64,
    scale: f64,
}

impl Histogram {
    /// A histogram of durations, observed with [`Histogram::observe_duration`].
    pub fn seconds(bounds: &'static [f64]) -> Self {
        Self::with_scale(bounds, 1e9)
    }

    /// A histogram of whole counts, observed with [`Histogram::observe_count`].
    pub fn counts(bounds: &'static [f64]) -> Self {
        Self::with_scale(bounds, 1.0)
    }

    fn with_scale(bounds: &'static [f64], scale: f64) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds increase");
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_units: AtomicU64::new(0),
            scale,
        }
    }

    pub fn observe_duration(&self, d: Duration) {
        let secs = d.as_secs_f64();
        self.bucket_for(secs).fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_units.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn observe_count(&self, n: u64) {
        self.bucket_for(n as f64).fetch_add(1, Ordering::Relaxed);
        self.sum_units.fetch_add(n, Ordering::Relaxed);
    }

    fn bucket_for(&self, value: f64) -> &AtomicU64 {
        let i = self.bounds.partition_point(|b| *b < value);
        &self.buckets[i]
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the observations, in the histogram's unit.
    pub fn sum(&self) -> f64 {
        self.sum_units.load(Ordering::Relaxed) as f64 / self.scale
    }

    /// `(upper bound, cumulative count)` for each bound, then `(+Inf, count)`.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Ordering::Relaxed);
            out.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), total));
        }
        out
    }
}

/// A family's type, as its `# TYPE` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes families in the text exposition format. Each family is opened once with
/// [`Exposition::family`] and its samples follow it; opening a family twice is a bug that
/// debug builds catch (Prometheus rejects a scrape whose family appears twice).
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    current: Option<(String, Kind)>,
    #[cfg(debug_assertions)]
    seen: std::collections::HashSet<String>,
}

pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    pub fn new() -> Self {
        Exposition::default()
    }

    /// Starts a family: its HELP and TYPE lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        #[cfg(debug_assertions)]
        assert!(
            self.seen.insert(name.to_string()),
            "family {name} written twice"
        );
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        self.current = Some((name.to_string(), kind));
    }

    /// A sample of the current counter or gauge family.
    pub fn sample(&mut self, labels: Labels<'_>, value: f64) {
        let (name, kind) = self
            .current
            .clone()
            .expect("family opened before its samples");
        debug_assert!(kind != Kind::Histogram, "histograms are written whole");
        self.line(&name, "", labels, None, value);
    }

    /// A sample of an integer-valued counter or gauge.
    pub fn sample_int(&mut self, labels: Labels<'_>, value: i64) {
        self.sample(labels, value as f64);
    }

    /// The current histogram family's series for `labels`: its buckets, `_sum` and `_count`.
    pub fn histogram(&mut self, labels: Labels<'_>, h: &Histogram) {
        let (name, kind) = self
            .current
            .clone()
            .expect("family opened before its samples");
        debug_assert!(kind == Kind::Histogram, "{name} is not a histogram");
        let buckets = h.cumulative();
        let count = buckets.last().map(|(_, c)| *c).unwrap_or(0);
        for (bound, cumulative) in buckets {
            let le = format_value(bound);
            self.line(&name, "_bucket", labels, Some(&le), cumulative as f64);
        }
        self.line(&name, "_sum", labels, None, h.sum());
        self.line(&name, "_count", labels, None, count as f64);
    }

    fn line(&mut self, name: &str, suffix: &str, labels: Labels<'_>, le: Option<&str>, v: f64) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            self.out.push('{');
            let mut first = true;
            let le_pair = le.map(|le| ("le", le));
            for (k, v) in labels.iter().copied().chain(le_pair) {
                if !first {
                    self.out.push(',');
                }
                first = false;
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&format_value(v));
        self.out.push('\n');
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Prometheus's number syntax: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_with_help_type_and_escaped_labels() {
        let c = Counter::new();
        c.add(3);
        c.inc();
        let g = Gauge::new();
        g.set(-2);
        let mut e = Exposition::new();
        e.family(
            "strata_things_total",
            Kind::Counter,
            "Things.\nTwo lines \\ one slash.",
        );
        e.sample_int(&[("topic", "a\"b\\c\nd")], c.get() as i64);
        e.sample_int(&[], 0);
        e.family("strata_level", Kind::Gauge, "Level.");
        e.sample_int(&[("x", "1"), ("y", "2")], g.get());
        e.sample(&[], 0.25);
        assert_eq!(
            e.finish(),
            "# HELP strata_things_total Things.\\nTwo lines \\\\ one slash.\n\
             # TYPE strata_things_total counter\n\
             strata_things_total{topic=\"a\\\"b\\\\c\\nd\"} 4\n\
             strata_things_total 0\n\
             # HELP strata_level Level.\n\
             # TYPE strata_level gauge\n\
             strata_level{x=\"1\",y=\"2\"} -2\n\
             strata_level 0.25\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_inf_equal_to_count() {
        static BOUNDS: &[f64] = &[0.001, 0.01, 0.1];
        let h = Histogram::seconds(BOUNDS);
        h.observe_duration(Duration::from_micros(500)); // <= 0.001
        h.observe_duration(Duration::from_millis(1)); // == 0.001: le is inclusive
        h.observe_duration(Duration::from_millis(50));
        h.observe_duration(Duration::from_secs(2)); // overflow
        let mut e = Exposition::new();
        e.family("d_seconds", Kind::Histogram, "D.");
        e.histogram(&[("api", "Produce")], &h);
        assert_eq!(
            e.finish(),
            "# HELP d_seconds D.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{api=\"Produce\",le=\"0.001\"} 2\n\
             d_seconds_bucket{api=\"Produce\",le=\"0.01\"} 2\n\
             d_seconds_bucket{api=\"Produce\",le=\"0.1\"} 3\n\
             d_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 4\n\
             d_seconds_sum{api=\"Produce\"} 2.0515\n\
             d_seconds_count{api=\"Produce\"} 4\n"
        );
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn count_histograms_sum_whole_units() {
        let h = Histogram::counts(COUNTS);
        h.observe_count(3);
        h.observe_count(5000);
        assert_eq!(h.sum(), 5003.0);
        let c = h.cumulative();
        assert_eq!(c[2], (4.0, 1));
        assert_eq!(c.last(), Some(&(f64::INFINITY, 2)));
    }

    #[test]
    fn numbers_as_prometheus_reads_them() {
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(12.0), "12");
        assert_eq!(format_value(-3.0), "-3");
        assert_eq!(format_value(0.0001), "0.0001");
        assert_eq!(format_value(1e20), "100000000000000000000");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "written twice")]
    fn a_family_twice_is_caught() {
        let mut e = Exposition::new();
        e.family("x", Kind::Gauge, "X.");
        e.family("x", Kind::Gauge, "X.");
    }
}
