//! The yardstick: facedb's own exact search, in-process on one thread, for each query set.
//!
//! The dataset is loaded into a fresh in-process engine (the harness's [`Backend`], bench
//! schema and metadata), and each query set (plain, each filter) is searched with the same
//! request bodies the main harness sends, inside a rayon pool of one thread, measured like a
//! sweep point. Its QPS is what an index must beat to be worth walking (the sweep's stopping
//! rule), and its recall must be 1 (a check of the truth and of the filters' meaning).

use anyhow::{Context, Result};
use facedb::index::IndexOverrides;
use serde::Serialize;

use super::sweep::{measure, Budget, Point};
use crate::backend::{Backend, QuerySet, SearchParams};
use crate::dataset::Dataset;
use crate::progress::Progress;
use crate::truth::{TruthSets, FILTERS};

/// Faces per add call while the engine is loaded.
const LOAD_BATCH: usize = 10_000;

/// The exact scan of one query set.
#[derive(Debug, Clone, Serialize)]
pub struct ExactRecord {
    /// `plain` or the filter's truth set name (`sel-1pct`).
    pub set: String,
    /// `-` or `1%`.
    pub label: String,
    pub point: Point,
}

/// Measures the exact scan of the plain set and of `filters` (indexes into [`FILTERS`]).
pub fn measure_exact(
    dataset: &Dataset,
    truth: &TruthSets,
    filters: &[usize],
    k: usize,
    budget: Budget,
) -> Result<Vec<ExactRecord>> {
    let mut backend = Backend::in_process(dataset.dim(), "ann-probe-exact")?;
    backend.recreate_gallery(&IndexOverrides::default())?;
    let batches = backend.prepare_ingest(dataset, LOAD_BATCH)?;
    {
        let progress = Progress::new(format!("exact scan: loading {} faces into the engine", dataset.count()), batches);
        let mut session = backend.session();
        for batch in 0..batches {
            session.add_batch(batch).context("loading the in-process engine")?;
            progress.inc(1);
        }
    }
    backend.drop_ingest();
    let mut sets = vec![QuerySet::TopK];
    sets.extend(filters.iter().map(|&i| QuerySet::Filtered(i)));
    backend.prepare_searches(dataset, &sets, SearchParams { k, threshold: 0.0, exact: true })?;
    backend.set_engine_threads(Some(1))?;
    let mut records = Vec::new();
    let mut session = backend.session();
    for set in sets {
        let (name, label, set_truth) = match set {
            QuerySet::Filtered(i) => (FILTERS[i].name, FILTERS[i].label, &truth.filtered[i]),
            _ => ("plain", "-", &truth.plain),
        };
        let point =
            measure(0, dataset.query_count(), set_truth, k, budget, &|_| false, |q| Ok(session.search(set, q)?.ids))?;
        eprintln!(
            "exact scan {name}: {:.1} QPS, p50 {:.3} ms, recall@{k} {:.4} ({} queries)",
            point.qps, point.latency.p50_ms, point.recall, point.queries
        );
        records.push(ExactRecord { set: name.to_owned(), label: label.to_owned(), point });
    }
    Ok(records)
}
