//! One sweep point (a query set searched at one `ef`, one query at a time), and the sweep over
//! `ef` with its stopping rule.
//!
//! A point runs `warmup` untimed searches (the last queries of the set), then the queries in
//! order, each timed alone on the calling thread, until every query ran or, once
//! `min_queries` ran, `max_seconds` have passed (so a slow configuration costs a bounded time;
//! the point says how many queries it measured). QPS is the measured queries over the wall
//! time of the timed loop; latencies go through the harness's HDR histograms; recall@k is the
//! harness's rule ([`truth::recall_at_k`]), averaged over the measured queries.
//!
//! A sweep tries the `ef` values in increasing order and stops after the first point that
//! makes larger values pointless ([`stop_reason`]): recall already ≥ [`RECALL_ENOUGH`], or
//! fewer queries per second than the exact scan of the same query set (a planner would scan).

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::metrics::{Latencies, LatencySummary};
use crate::truth::{self, Truth};

/// Recall at which a sweep stops: larger `ef` cannot show anything more.
pub const RECALL_ENOUGH: f64 = 0.999;

/// How long a point may run.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub warmup: usize,
    pub min_queries: usize,
    pub max_seconds: f64,
}

/// One query set searched at one `ef`.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub ef: usize,
    /// Queries measured (all of the set unless the time budget cut it).
    pub queries: usize,
    pub qps: f64,
    pub latency: LatencySummary,
    /// Mean recall@k over the measured queries.
    pub recall: f64,
    /// The worst query's recall@k.
    pub recall_min: f64,
    /// Queries whose recall@k is below 0.5. On cone data a query's top 10 are mostly its
    /// identity's samples, so these are walks that never reached the identity's cluster.
    pub below_half: usize,
    /// Answers with fewer ids than `min(k, truth row length)`.
    pub short_answers: usize,
    /// Ids returned that must never come back (deleted faces, or faces failing the filter).
    pub forbidden_returned: usize,
}

/// Why a sweep stopped before its last `ef`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Recall reached [`RECALL_ENOUGH`].
    RecallReached,
    /// Slower than the exact scan of the same query set.
    SlowerThanExact,
}

impl StopReason {
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::RecallReached => "recall ≥ 0.999",
            StopReason::SlowerThanExact => "slower than the exact scan",
        }
    }
}

/// Whether a sweep should stop after `point`, and why.
pub fn stop_reason(point: &Point, exact_qps: Option<f64>) -> Option<StopReason> {
    if point.recall >= RECALL_ENOUGH {
        Some(StopReason::RecallReached)
    } else if exact_qps.is_some_and(|exact| point.qps < exact) {
        Some(StopReason::SlowerThanExact)
    } else {
        None
    }
}

/// A sweep over `ef`.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub points: Vec<Point>,
    /// Set when the sweep stopped before its last `ef`: after which `ef`, and why.
    pub stopped: Option<(usize, StopReason)>,
    /// The error (or the crate's panic) that ended the sweep, if any.
    pub error: Option<String>,
}

impl Sweep {
    /// The fastest point whose recall is at least `target`.
    pub fn best_at(&self, target: f64) -> Option<&Point> {
        self.points.iter().filter(|p| p.recall >= target).max_by(|a, b| a.qps.total_cmp(&b.qps))
    }

    /// The highest recall reached.
    pub fn max_recall(&self) -> Option<&Point> {
        self.points.iter().max_by(|a, b| a.recall.total_cmp(&b.recall))
    }
}

/// Runs `point_at(ef)` for each `ef` (in increasing order) until [`stop_reason`] says stop;
/// an error ends the sweep and is kept in it.
pub fn sweep(efs: &[usize], exact_qps: Option<f64>, mut point_at: impl FnMut(usize) -> Result<Point>) -> Sweep {
    let mut efs = efs.to_vec();
    efs.sort_unstable();
    efs.dedup();
    let mut result = Sweep { points: Vec::new(), stopped: None, error: None };
    for (i, &ef) in efs.iter().enumerate() {
        match point_at(ef) {
            Ok(point) => {
                let reason = stop_reason(&point, exact_qps);
                result.points.push(point);
                if let Some(reason) = reason {
                    if i + 1 < efs.len() {
                        result.stopped = Some((ef, reason));
                    }
                    break;
                }
            }
            Err(e) => {
                result.error = Some(format!("ef={ef}: {e:#}"));
                break;
            }
        }
    }
    result
}

/// Measures one point: `search(q)` for the queries `q < count` of the set, against `truth`.
/// `forbidden` marks ids that must never be returned.
pub fn measure(
    ef: usize,
    count: usize,
    truth: &Truth,
    k: usize,
    budget: Budget,
    forbidden: &dyn Fn(u64) -> bool,
    mut search: impl FnMut(usize) -> Result<Vec<u64>>,
) -> Result<Point> {
    for q in count.saturating_sub(budget.warmup)..count {
        search(q)?;
    }
    let mut latencies = Latencies::new()?;
    let mut answers: Vec<Vec<u64>> = Vec::with_capacity(count);
    let started = Instant::now();
    for q in 0..count {
        let one = Instant::now();
        let ids = search(q)?;
        latencies.record(one.elapsed());
        answers.push(ids);
        if answers.len() >= budget.min_queries && started.elapsed().as_secs_f64() >= budget.max_seconds {
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let measured = answers.len();
    let mut recall_sum = 0.0;
    let mut recall_min: f64 = 1.0;
    let mut below_half = 0;
    let mut short_answers = 0;
    let mut forbidden_returned = 0;
    for (q, ids) in answers.iter().enumerate() {
        let (truth_ids, truth_scores) = truth.row(q);
        let recall = truth::recall_at_k(ids, truth_ids, truth_scores, k);
        recall_sum += recall;
        recall_min = recall_min.min(recall);
        below_half += usize::from(recall < 0.5);
        if ids.len() < k.min(truth_ids.len()) {
            short_answers += 1;
        }
        forbidden_returned += ids.iter().filter(|&&id| forbidden(id)).count();
    }
    Ok(Point {
        ef,
        queries: measured,
        qps: if wall > 0.0 { measured as f64 / wall } else { f64::INFINITY },
        latency: latencies.summary().unwrap_or(LatencySummary {
            count: 0,
            p50_ms: 0.0,
            p95_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
            mean_ms: 0.0,
        }),
        recall: if measured > 0 { recall_sum / measured as f64 } else { 0.0 },
        recall_min: if measured > 0 { recall_min } else { 0.0 },
        below_half,
        short_answers,
        forbidden_returned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;

    fn point(ef: usize, recall: f64, qps: f64) -> Point {
        Point {
            ef,
            queries: 10,
            qps,
            latency: LatencySummary { count: 10, p50_ms: 1.0, p95_ms: 1.0, p99_ms: 1.0, max_ms: 1.0, mean_ms: 1.0 },
            recall,
            recall_min: recall,
            below_half: 0,
            short_answers: 0,
            forbidden_returned: 0,
        }
    }

    #[test]
    fn the_stopping_rule() {
        assert_eq!(stop_reason(&point(16, 0.999, 10.0), Some(100.0)), Some(StopReason::RecallReached));
        assert_eq!(stop_reason(&point(16, 1.0, 1000.0), None), Some(StopReason::RecallReached));
        assert_eq!(stop_reason(&point(16, 0.95, 99.0), Some(100.0)), Some(StopReason::SlowerThanExact));
        assert_eq!(stop_reason(&point(16, 0.95, 100.0), Some(100.0)), None);
        assert_eq!(stop_reason(&point(16, 0.9989, 5.0), None), None, "no exact figure: only recall stops");
    }

    #[test]
    fn a_sweep_stops_at_the_first_reason_and_keeps_errors() {
        // Recall grows with ef; QPS falls: 16 → 0.9 @ 1000, 32 → 0.99 @ 500, 64 → 0.9995 @ 250.
        let at = |ef: usize| -> Result<Point> {
            let (recall, qps) = match ef {
                16 => (0.9, 1000.0),
                32 => (0.99, 500.0),
                64 => (0.9995, 250.0),
                _ => (1.0, 100.0),
            };
            Ok(point(ef, recall, qps))
        };
        let s = sweep(&[128, 16, 64, 32, 32], None, at);
        assert_eq!(s.points.iter().map(|p| p.ef).collect::<Vec<_>>(), vec![16, 32, 64]);
        assert_eq!(s.stopped, Some((64, StopReason::RecallReached)));
        assert_eq!(s.best_at(0.99).map(|p| p.ef), Some(32));
        assert_eq!(s.max_recall().map(|p| p.ef), Some(64));
        // The exact scan does 600 QPS: ef=32 (500) is already slower.
        let s = sweep(&[16, 32, 64], Some(600.0), at);
        assert_eq!(s.points.len(), 2);
        assert_eq!(s.stopped, Some((32, StopReason::SlowerThanExact)));
        assert!(s.best_at(0.999).is_none());
        // Stopping on the last ef is no early stop.
        let s = sweep(&[16, 64], None, at);
        assert_eq!(s.stopped, None);
        // An error ends the sweep and is reported.
        let s = sweep(&[16, 32], None, |ef| if ef == 32 { bail!("boom") } else { at(ef) });
        assert_eq!((s.points.len(), s.error.as_deref()), (1, Some("ef=32: boom")));
    }

    #[test]
    fn measure_counts_recall_short_answers_and_forbidden_ids() {
        let truth =
            Truth { ids: vec![vec![1, 2], vec![3, 4], vec![]], scores: vec![vec![0.9, 0.8], vec![0.9, 0.8], vec![]] };
        let budget = Budget { warmup: 1, min_queries: 1, max_seconds: 100.0 };
        // The warmup (query 2) takes the first answer; then queries 0, 1, 2 get theirs.
        let mut answers = vec![vec![], vec![1, 2], vec![3], vec![]].into_iter();
        let p = measure(7, 3, &truth, 2, budget, &|id| id == 3, |_| Ok(answers.next().unwrap_or_default())).unwrap();
        assert_eq!((p.ef, p.queries), (7, 3));
        assert!((p.recall - (1.0 + 0.5 + 1.0) / 3.0).abs() < 1e-12, "{p:?}");
        assert_eq!((p.recall_min, p.below_half, p.short_answers, p.forbidden_returned), (0.5, 0, 1, 1));
        assert_eq!(p.latency.count, 3);
        // A budget of no time stops after min_queries.
        let budget = Budget { warmup: 0, min_queries: 2, max_seconds: 0.0 };
        let p = measure(7, 3, &truth, 2, budget, &|_| false, |_| Ok(vec![1, 2])).unwrap();
        assert_eq!(p.queries, 2);
    }
}
