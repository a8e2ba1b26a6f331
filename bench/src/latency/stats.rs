//! Latency summaries: percentiles of a sample of timings, and how they are printed.
//!
//! Percentiles are nearest-rank on the sorted sample (p99 of 200 timings is the 198th
//! smallest), so every figure is a latency that was actually observed.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl Summary {
    /// `None` for an empty sample.
    pub fn of(mut sample: Vec<Duration>) -> Option<Summary> {
        if sample.is_empty() {
            return None;
        }
        sample.sort_unstable();
        let total: Duration = sample.iter().sum();
        Some(Summary {
            count: sample.len(),
            p50: percentile(&sample, 50.0),
            p90: percentile(&sample, 90.0),
            p99: percentile(&sample, 99.0),
            max: sample[sample.len() - 1],
            mean: total / sample.len() as u32,
        })
    }
}

/// Nearest rank: the smallest value with at least `p`% of the sample at or below it.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with a precision that suits the magnitude (the harness's format).
pub fn ms(d: Duration) -> String {
    crate::metrics::ms(d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let sample: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        let s = Summary::of(sample).unwrap();
        assert_eq!(s.p50, Duration::from_millis(100));
        assert_eq!(s.p90, Duration::from_millis(180));
        assert_eq!(s.p99, Duration::from_millis(198));
        assert_eq!(s.max, Duration::from_millis(200));
        let one = Summary::of(vec![Duration::from_millis(3)]).unwrap();
        assert_eq!((one.p50, one.p99), (Duration::from_millis(3), Duration::from_millis(3)));
        assert!(Summary::of(Vec::new()).is_none());
    }
}
