//! The workloads and the closed-loop runner that drives them.
//!
//! A run is a list of operations and a client concurrency `c`: `c` threads each open a
//! [`Session`], make one untimed request (to open the connection), wait for the others, then
//! take operations `t, t + c, t + 2c, ...` of the list one after another, each starting as soon
//! as the previous one answered (closed loop). Every operation is timed from the call to its
//! return into the thread's HDR histogram of its kind; failures are counted (and the first few
//! messages kept), never retried, and do not stop the run. Throughput is operations over the
//! wall time from the start signal to the last thread's end.
//!
//! Workloads:
//!
//! - `ingest`: the dataset in batches (`--ingest-batch` faces per request) into an empty
//!   gallery; one operation per batch.
//! - `search`: top-k by score, one search per query of the dataset.
//! - `threshold`: every face scoring at least the dataset's threshold (at most `K_TRUTH`).
//! - `filtered`: top-k among the faces whose `bucket` passes a range, one run per selectivity.
//! - `mixed`: 90% top-k searches, 10% writes; each client alternates its writes between adding
//!   one face (a copy, under a new id, of a face that is in no query's top `K_TRUTH`, so the
//!   truth stays valid) and deleting the face it added last; a client that ends with an add
//!   pending deletes it, untimed, so the gallery is as before.

use std::collections::BTreeMap;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde::Serialize;

use crate::backend::{Backend, QuerySet, Session};
use crate::metrics::Latencies;
use crate::progress::Progress;

/// Error messages kept per run.
const KEPT_ERRORS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Ingest,
    Search,
    Threshold,
    Filtered,
    Mixed,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Ingest => "ingest",
            Workload::Search => "search",
            Workload::Threshold => "threshold",
            Workload::Filtered => "filtered",
            Workload::Mixed => "mixed",
        }
    }
}

/// One operation of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Add prepared ingest batch `i`.
    AddBatch(usize),
    /// Run prepared search `query` of `set`.
    Search(QuerySet, usize),
    /// Mixed write number `w`: add one face, or delete the one this client added last.
    Write(usize),
}

/// The kinds of operations, each with its own latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Batch,
    Search,
    Add,
    Delete,
}

/// The operations of a mixed run over `queries` queries: `ops` operations, every 10th a write.
pub fn mixed_ops(queries: usize, ops: usize) -> Vec<Op> {
    let mut writes = 0;
    (0..ops)
        .map(|i| {
            if i % 10 == 9 {
                writes += 1;
                Op::Write(writes - 1)
            } else {
                Op::Search(QuerySet::TopK, i % queries.max(1))
            }
        })
        .collect()
}

/// What one run measured.
pub struct RunOutcome {
    pub wall: Duration,
    pub latencies: BTreeMap<OpKind, Latencies>,
    pub failed: BTreeMap<OpKind, u64>,
    pub errors: Vec<String>,
    /// Every answered search: its set, its query and the ids found.
    pub answers: Vec<(QuerySet, usize, Vec<u64>)>,
    /// Searches per `X-search-stat` value (HTTP only).
    pub search_stats: BTreeMap<String, u64>,
}

impl RunOutcome {
    pub fn total_failed(&self) -> u64 {
        self.failed.values().sum()
    }

    pub fn ops_done(&self) -> u64 {
        self.latencies.values().map(Latencies::count).sum()
    }
}

/// One thread's share of a run.
struct ThreadOutcome {
    latencies: BTreeMap<OpKind, Latencies>,
    failed: BTreeMap<OpKind, u64>,
    errors: Vec<String>,
    answers: Vec<(QuerySet, usize, Vec<u64>)>,
    search_stats: BTreeMap<String, u64>,
}

impl ThreadOutcome {
    fn new() -> ThreadOutcome {
        ThreadOutcome {
            latencies: BTreeMap::new(),
            failed: BTreeMap::new(),
            errors: Vec::new(),
            answers: Vec::new(),
            search_stats: BTreeMap::new(),
        }
    }

    fn record(&mut self, kind: OpKind, latency: Duration) -> Result<()> {
        match self.latencies.get_mut(&kind) {
            Some(l) => l.record(latency),
            None => {
                let mut l = Latencies::new()?;
                l.record(latency);
                self.latencies.insert(kind, l);
            }
        }
        Ok(())
    }

    fn fail(&mut self, kind: OpKind, error: &anyhow::Error) {
        *self.failed.entry(kind).or_default() += 1;
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(format!("{kind:?}: {error:#}"));
        }
    }
}

/// Runs `ops` against `backend` with `concurrency` client threads.
pub fn run(backend: &Backend, concurrency: usize, ops: &[Op], label: &str) -> Result<RunOutcome> {
    let concurrency = concurrency.max(1);
    let progress = Progress::new(label, ops.len());
    let start = Barrier::new(concurrency + 1);
    let (outcomes, wall) = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..concurrency)
            .map(|t| {
                let (start, progress) = (&start, &progress);
                scope.spawn(move || {
                    let mut session = backend.session();
                    let connected = session.connect();
                    start.wait();
                    connected?;
                    client_loop(&mut session, ops.iter().skip(t).step_by(concurrency), progress)
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        let outcomes: Vec<Result<ThreadOutcome>> = threads
            .into_iter()
            .map(|thread| thread.join().unwrap_or_else(|_| Err(anyhow!("a client thread panicked"))))
            .collect();
        (outcomes, started.elapsed())
    });
    drop(progress);
    let mut total = RunOutcome {
        wall,
        latencies: BTreeMap::new(),
        failed: BTreeMap::new(),
        errors: Vec::new(),
        answers: Vec::new(),
        search_stats: BTreeMap::new(),
    };
    for outcome in outcomes {
        let outcome = outcome?;
        for (kind, latencies) in outcome.latencies {
            match total.latencies.get_mut(&kind) {
                Some(l) => l.merge(&latencies)?,
                None => {
                    total.latencies.insert(kind, latencies);
                }
            }
        }
        for (kind, n) in outcome.failed {
            *total.failed.entry(kind).or_default() += n;
        }
        for (stat, n) in outcome.search_stats {
            *total.search_stats.entry(stat).or_default() += n;
        }
        total.errors.extend(outcome.errors);
        total.answers.extend(outcome.answers);
    }
    total.errors.truncate(KEPT_ERRORS);
    Ok(total)
}

fn client_loop<'a>(
    session: &mut Session<'_>,
    ops: impl Iterator<Item = &'a Op>,
    progress: &Progress,
) -> Result<ThreadOutcome> {
    let mut out = ThreadOutcome::new();
    // The face this client added last in the mixed workload, not deleted yet.
    let mut pending: Option<u64> = None;
    for op in ops {
        match *op {
            Op::AddBatch(batch) => {
                let started = Instant::now();
                match session.add_batch(batch) {
                    Ok(()) => out.record(OpKind::Batch, started.elapsed())?,
                    Err(e) => out.fail(OpKind::Batch, &e),
                }
            }
            Op::Search(set, query) => {
                let started = Instant::now();
                match session.search(set, query) {
                    Ok(answer) => {
                        out.record(OpKind::Search, started.elapsed())?;
                        if let Some(stat) = answer.search_stat {
                            *out.search_stats.entry(stat).or_default() += 1;
                        }
                        out.answers.push((set, query, answer.ids));
                    }
                    Err(e) => out.fail(OpKind::Search, &e),
                }
            }
            Op::Write(write) => match pending.take() {
                Some(id) => {
                    let started = Instant::now();
                    match session.delete(id) {
                        Ok(()) => out.record(OpKind::Delete, started.elapsed())?,
                        Err(e) => out.fail(OpKind::Delete, &e),
                    }
                }
                None => {
                    let started = Instant::now();
                    match session.add_mixed(write) {
                        Ok(id) => {
                            out.record(OpKind::Add, started.elapsed())?;
                            pending = Some(id);
                        }
                        Err(e) => out.fail(OpKind::Add, &e),
                    }
                }
            },
        }
        progress.inc(1);
    }
    if let Some(id) = pending {
        if let Err(e) = session.delete(id) {
            out.fail(OpKind::Delete, &e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_is_nine_searches_to_one_write() {
        let ops = mixed_ops(3, 20);
        assert_eq!(ops[0], Op::Search(QuerySet::TopK, 0));
        assert_eq!(ops[4], Op::Search(QuerySet::TopK, 1));
        assert_eq!(ops[9], Op::Write(0));
        assert_eq!(ops[19], Op::Write(1));
        assert_eq!(ops.iter().filter(|op| matches!(op, Op::Write(_))).count(), 2);
    }
}
