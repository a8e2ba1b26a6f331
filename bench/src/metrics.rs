//! Latency histograms and their summaries.
//!
//! Every timed operation is recorded in nanoseconds into an HDR histogram (3 significant
//! digits, 1 ns to 1 hour), one per client thread and kind of operation, merged when the run
//! ends. Summaries give p50/p95/p99 (the histogram's value at that quantile: within 0.1% of a
//! latency actually observed), the maximum and the mean, in milliseconds.

use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies of one kind of operation.
#[derive(Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Latencies {
    pub fn new() -> Result<Latencies> {
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).context("creating a latency histogram")?;
        Ok(Latencies { histogram })
    }

    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.histogram.saturating_record(nanos);
    }

    pub fn merge(&mut self, other: &Latencies) -> Result<()> {
        self.histogram.add(&other.histogram).context("merging latency histograms")
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// `None` when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.histogram.is_empty() {
            return None;
        }
        let ms = |nanos: u64| nanos as f64 / 1e6;
        Some(LatencySummary {
            count: self.histogram.len(),
            p50_ms: ms(self.histogram.value_at_quantile(0.50)),
            p95_ms: ms(self.histogram.value_at_quantile(0.95)),
            p99_ms: ms(self.histogram.value_at_quantile(0.99)),
            max_ms: ms(self.histogram.max()),
            mean_ms: self.histogram.mean() / 1e6,
        })
    }
}

/// Percentiles of a latency sample, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Milliseconds with a precision that suits the magnitude.
pub fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merge() {
        let mut a = Latencies::new().unwrap();
        let mut b = Latencies::new().unwrap();
        for i in 1..=100u64 {
            let target = if i % 2 == 0 { &mut a } else { &mut b };
            target.record(Duration::from_millis(i));
        }
        a.merge(&b).unwrap();
        let s = a.summary().unwrap();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert!((s.mean_ms - 50.5).abs() < 0.1, "{s:?}");
        assert!(Latencies::new().unwrap().summary().is_none());
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(ms(0.01234), "0.012");
    }
}
