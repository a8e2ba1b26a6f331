//! Write stalls: the latency of adds sent back to back while a snapshot is written, against
//! the same adds without one.
//!
//! One client sends small adds (one face, or a few) one after another over one connection,
//! each prepared just before it is sent and timed from the call to the parsed answer; the
//! start of each add (from a common epoch) and its latency are kept. An add *overlaps* the
//! snapshot when it started before the snapshot's request was answered and finished after the
//! request was sent: whatever the snapshot made a writer wait for (the checkpoint on the log
//! thread, copying a chunk that the snapshot holds, the disk busy with the snapshot's file)
//! shows in one of those adds. The stall figure is the longest of them.

use std::time::{Duration, Instant};

use crate::backend::add_body;
use crate::client::Client;
use crate::dataset::Dataset;
use crate::metrics::{Latencies, LatencySummary};
use anyhow::{Context, Result};

/// One add: when it was sent (from the run's epoch) and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddTiming {
    pub start: Duration,
    pub latency: Duration,
}

impl AddTiming {
    fn end(&self) -> Duration {
        self.start + self.latency
    }
}

/// A span of time from the run's epoch, e.g. from sending the snapshot request to its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Duration,
    pub end: Duration,
}

/// The latencies of the adds that overlap `window` (started before its end and ended after its
/// start), and of the others.
pub fn split(timings: &[AddTiming], window: Window) -> (Vec<Duration>, Vec<Duration>) {
    let (during, outside): (Vec<&AddTiming>, Vec<&AddTiming>) =
        timings.iter().partition(|t| t.start < window.end && t.end() > window.start);
    (during.iter().map(|t| t.latency).collect(), outside.iter().map(|t| t.latency).collect())
}

/// The `n` longest adds that overlap `window`, longest first, as (start of the add relative to
/// the window's start in ms, negative when it began before, latency in ms): where in the
/// snapshot the writers waited.
pub fn longest(timings: &[AddTiming], window: Window, n: usize) -> Vec<(f64, f64)> {
    let mut during: Vec<&AddTiming> =
        timings.iter().filter(|t| t.start < window.end && t.end() > window.start).collect();
    during.sort_by(|a, b| b.latency.cmp(&a.latency).then(a.start.cmp(&b.start)));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    during.iter().take(n).map(|t| (ms(t.start) - ms(window.start), ms(t.latency))).collect()
}

/// p50/p95/p99/max/mean of `latencies`; `None` when there are none.
pub fn summary(latencies: &[Duration]) -> Result<Option<LatencySummary>> {
    let mut histogram = Latencies::new()?;
    for &latency in latencies {
        histogram.record(latency);
    }
    Ok(histogram.summary())
}

/// Adds faces back to back over `client` into `gallery` while `keep_going()` says so, `batch`
/// faces per request, with ids from `first_id` on. Face `id` is a copy of the dataset's face
/// `id % count` (vector and metadata) under the new id. Returns every add's timing from `epoch`.
pub fn add_back_to_back(
    client: &Client,
    gallery: &str,
    data: &Dataset,
    first_id: u64,
    batch: usize,
    epoch: Instant,
    keep_going: impl Fn() -> bool,
) -> Result<Vec<AddTiming>> {
    let mut timings = Vec::new();
    let mut id = first_id;
    while keep_going() {
        let ids = id..id + batch as u64;
        let body = add_body(ids.clone().map(|id| {
            let source = (id % data.count() as u64) as usize;
            (id, data.vector(source), &data.meta[source])
        }))?;
        let start = epoch.elapsed();
        let sent = Instant::now();
        client.add(gallery, &body).with_context(|| format!("adding faces {}..{}", ids.start, ids.end))?;
        timings.push(AddTiming { start, latency: sent.elapsed() });
        id = ids.end;
    }
    Ok(timings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn add(start: u64, latency: u64) -> AddTiming {
        AddTiming { start: ms(start), latency: ms(latency) }
    }

    #[test]
    fn adds_overlapping_the_window_are_the_ones_that_started_before_its_end_and_ended_after_its_start() {
        let timings = [
            add(0, 5),    // ends before the window
            add(5, 5),    // ends exactly when the window starts: outside
            add(8, 4),    // starts before, ends inside
            add(12, 3),   // inside
            add(15, 200), // starts inside, ends after: the stall
            add(215, 2),  // starts after the window
            add(100, 1),  // inside (timings need not be in order)
        ];
        let window = Window { start: ms(10), end: ms(150) };
        let (during, outside) = split(&timings, window);
        assert_eq!(during, vec![ms(4), ms(3), ms(200), ms(1)]);
        assert_eq!(outside, vec![ms(5), ms(5), ms(2)]);
        assert_eq!(longest(&timings, window, 2), vec![(5.0, 200.0), (-2.0, 4.0)]);
        // An add that spans the whole window overlaps it.
        assert_eq!(split(&[add(0, 500)], window).0, vec![ms(500)]);
        // An empty window (no snapshot time at all) still catches an add running across it.
        assert_eq!(split(&[add(0, 20), add(30, 1)], Window { start: ms(10), end: ms(10) }).0, vec![ms(20)]);
    }

    #[test]
    fn summary_reports_the_longest_add_as_the_stall() {
        let latencies: Vec<Duration> = (1..=99).map(|_| ms(1)).chain([ms(250)]).collect();
        let s = summary(&latencies).unwrap().unwrap();
        assert_eq!(s.count, 100);
        assert!((s.max_ms - 250.0).abs() < 0.5, "{s:?}");
        assert!((s.p50_ms - 1.0).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 1.0).abs() < 0.01, "the 99th of 100 is still 1 ms: {s:?}");
        assert!(summary(&[]).unwrap().is_none());
    }
}
