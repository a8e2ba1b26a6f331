//! Ground truth and recall.
//!
//! The truth is computed by the harness itself, in plain f64 code that shares nothing with the
//! engine: every query against every candidate face, inner product (= cosine: the vectors are
//! unit) summed in f64, the best [`K_TRUTH`] kept, best first, ties by id ascending. Queries
//! are spread over all cores in blocks of [`QUERY_BLOCK`], so each face's row is converted to
//! f64 once per block and stays in cache while the block's queries are scored.
//!
//! One set per filter: `plain` (every face) and one per selectivity of [`FILTERS`] (a `bucket`
//! range). Each set is cached in the dataset's `truth/` directory as `<set>.ivecs` (ids) and
//! `<set>.scores.fvecs` (scores, computed in f64, stored as f32), and reused when present.
//!
//! Recall follows the rule shared with the Python peers ([`recall_at_k`]); threshold searches
//! have their own measure ([`threshold_recall`]).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::dataset::{Dataset, K_TRUTH};
use crate::progress::Progress;
use crate::vecs;

/// Queries scored together against each face row.
const QUERY_BLOCK: usize = 8;
/// Scores within this distance of the k-th truth score count as ties.
pub const TIE_TOLERANCE: f64 = 1e-6;

/// A filtered query set: `bucket` in `[0, bucket_max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Selectivity {
    /// The set's name in `truth/`: `sel-1pct`.
    pub name: &'static str,
    /// As shown in tables: `1%`.
    pub label: &'static str,
    pub bucket_max: u64,
}

/// The filtered query sets: 0.1%, 1%, 10%, 50% and 100% of the faces pass.
pub const FILTERS: [Selectivity; 5] = [
    Selectivity { name: "sel-0.1pct", label: "0.1%", bucket_max: 0 },
    Selectivity { name: "sel-1pct", label: "1%", bucket_max: 9 },
    Selectivity { name: "sel-10pct", label: "10%", bucket_max: 99 },
    Selectivity { name: "sel-50pct", label: "50%", bucket_max: 499 },
    Selectivity { name: "sel-100pct", label: "100%", bucket_max: 999 },
];

/// The truth of one query set: per query, ids and scores, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub ids: Vec<Vec<u32>>,
    pub scores: Vec<Vec<f32>>,
}

impl Truth {
    pub fn row(&self, query: usize) -> (&[u32], &[f32]) {
        (&self.ids[query], &self.scores[query])
    }
}

/// A face scored against a query. The order is "worse is greater": lower score, or equal score
/// and larger id, so a max-heap keeps the worst kept entry on top.
#[derive(Debug, Clone, Copy)]
struct Scored {
    score: f64,
    id: u32,
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        other.score.total_cmp(&self.score).then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

/// Inner product in f64 with four independent sums.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut sums = [0.0f64; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4.remainder().iter().zip(b4.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a4.zip(b4) {
        sums[0] += x[0] * y[0];
        sums[1] += x[1] * y[1];
        sums[2] += x[2] * y[2];
        sums[3] += x[3] * y[3];
    }
    (sums[0] + sums[1]) + (sums[2] + sums[3]) + tail
}

/// Exact top-`k` of every query (`queries`, row-major) over the faces of `base` (row `i` is
/// face `i`), or only over `candidates` (ascending ids) when given.
pub fn exact_top_k(
    base: &[f32],
    dim: usize,
    queries: &[f32],
    candidates: Option<&[u32]>,
    k: usize,
    progress: Option<&Progress>,
) -> Truth {
    let rows: Vec<(Vec<u32>, Vec<f32>)> = queries
        .par_chunks(QUERY_BLOCK * dim)
        .flat_map_iter(|block| {
            let block_f64: Vec<f64> = block.iter().map(|&x| f64::from(x)).collect();
            let block_queries: Vec<&[f64]> = block_f64.chunks_exact(dim).collect();
            let mut heaps: Vec<BinaryHeap<Scored>> =
                block_queries.iter().map(|_| BinaryHeap::with_capacity(k + 1)).collect();
            let mut row = vec![0.0f64; dim];
            let mut visit = |id: u32| {
                let start = id as usize * dim;
                row.iter_mut().zip(&base[start..start + dim]).for_each(|(r, &x)| *r = f64::from(x));
                for (query, heap) in block_queries.iter().zip(heaps.iter_mut()) {
                    let scored = Scored { score: dot(query, &row), id };
                    if heap.len() < k {
                        heap.push(scored);
                    } else if heap.peek().is_some_and(|worst| scored < *worst) {
                        heap.pop();
                        heap.push(scored);
                    }
                }
            };
            match candidates {
                Some(ids) => ids.iter().for_each(|&id| visit(id)),
                None => (0..(base.len() / dim) as u32).for_each(&mut visit),
            }
            if let Some(progress) = progress {
                progress.inc(block_queries.len());
            }
            heaps.into_iter().map(|heap| {
                let best_first = heap.into_sorted_vec();
                (best_first.iter().map(|s| s.id).collect(), best_first.iter().map(|s| s.score as f32).collect())
            })
        })
        .collect();
    let (ids, scores) = rows.into_iter().unzip();
    Truth { ids, scores }
}

/// The ids of the faces that pass a selectivity filter, ascending.
pub fn passing(dataset: &Dataset, filter: &Selectivity) -> Vec<u32> {
    dataset.meta.iter().enumerate().filter(|(_, m)| m.bucket <= filter.bucket_max).map(|(id, _)| id as u32).collect()
}

/// Every query set's truth for a dataset.
pub struct TruthSets {
    pub plain: Truth,
    /// In the order of [`FILTERS`].
    pub filtered: Vec<Truth>,
    /// Time spent computing (zero when everything came from the cache).
    pub computed_in: Duration,
    /// How many sets were computed now (the others were read from `truth/`).
    pub computed_sets: usize,
}

/// Reads the cached truth of every query set, computing (and caching) what is missing.
pub fn load_or_compute(dataset: &Dataset) -> Result<TruthSets> {
    let truth_dir = dataset.dir.join("truth");
    std::fs::create_dir_all(&truth_dir).with_context(|| format!("creating {}", truth_dir.display()))?;
    let mut computed_in = Duration::ZERO;
    let mut computed_sets = 0;
    let mut one_set = |name: &str, candidates: Option<&[u32]>| -> Result<Truth> {
        if let Some(truth) = read_cached(&truth_dir, name, dataset)? {
            return Ok(truth);
        }
        let started = Instant::now();
        let progress = Progress::new(
            format!("ground truth {name} of {} ({} queries)", dataset.manifest.name, dataset.query_count()),
            dataset.query_count(),
        );
        let truth = exact_top_k(&dataset.base, dataset.dim(), &dataset.queries, candidates, K_TRUTH, Some(&progress));
        drop(progress);
        write(&truth_dir, name, &truth)?;
        computed_in += started.elapsed();
        computed_sets += 1;
        Ok(truth)
    };
    let plain = one_set("plain", None)?;
    let mut filtered = Vec::with_capacity(FILTERS.len());
    for filter in &FILTERS {
        let ids = passing(dataset, filter);
        let truth = if ids.len() == dataset.count() {
            // Every face passes: the plain truth is this set's truth (same computation).
            if read_cached(&truth_dir, filter.name, dataset)?.is_none() {
                write(&truth_dir, filter.name, &plain)?;
            }
            plain.clone()
        } else {
            one_set(filter.name, Some(&ids))?
        };
        filtered.push(truth);
    }
    Ok(TruthSets { plain, filtered, computed_in, computed_sets })
}

fn write(truth_dir: &Path, name: &str, truth: &Truth) -> Result<()> {
    let ids: Vec<Vec<i32>> = truth.ids.iter().map(|row| row.iter().map(|&id| id as i32).collect()).collect();
    vecs::write_fvecs(&truth_dir.join(format!("{name}.scores.fvecs")), truth.scores.iter().map(Vec::as_slice))?;
    // The ids file last: its presence says the set is complete.
    vecs::write_ivecs(&truth_dir.join(format!("{name}.ivecs")), ids.iter().map(Vec::as_slice))
}

/// The cached set, if both files are there and fit the dataset.
fn read_cached(truth_dir: &Path, name: &str, dataset: &Dataset) -> Result<Option<Truth>> {
    let ids_path = truth_dir.join(format!("{name}.ivecs"));
    let scores_path = truth_dir.join(format!("{name}.scores.fvecs"));
    if !ids_path.is_file() || !scores_path.is_file() {
        return Ok(None);
    }
    let ids = vecs::read_ivecs_rows(&ids_path)?;
    let scores = vecs::read_fvecs_rows(&scores_path)?;
    let fits = ids.len() == dataset.query_count()
        && scores.len() == ids.len()
        && ids.iter().zip(&scores).all(|(i, s)| {
            i.len() == s.len() && i.len() <= K_TRUTH && i.iter().all(|&id| id >= 0 && (id as usize) < dataset.count())
        });
    if !fits {
        eprintln!("{}: does not fit the dataset; computing it again", ids_path.display());
        return Ok(None);
    }
    let ids = ids.into_iter().map(|row| row.into_iter().map(|id| id as u32).collect()).collect();
    let truth = Truth { ids, scores };
    if let Err(e) = check_order(&truth) {
        eprintln!("{}: {e}; computing it again", ids_path.display());
        return Ok(None);
    }
    Ok(Some(truth))
}

/// Recall@k of a result list (ids, best first) against a truth row, the rule shared with the
/// peers: with `m = min(k, |T|)`, if `m = 0` the recall is 1 when the result is empty, else 0;
/// otherwise the correct ids are every id of the truth row whose score is at least
/// `score(T[m-1]) - 1e-6` (ties at the k-th place do not penalise either choice), and the recall
/// is `min(1, |R[:k] ∩ correct| / m)`.
pub fn recall_at_k(result: &[u64], truth_ids: &[u32], truth_scores: &[f32], k: usize) -> f64 {
    let m = k.min(truth_ids.len());
    if m == 0 {
        return if result.is_empty() { 1.0 } else { 0.0 };
    }
    let cutoff = f64::from(truth_scores[m - 1]) - TIE_TOLERANCE;
    let correct: HashSet<u64> = truth_ids
        .iter()
        .zip(truth_scores)
        .filter(|(_, &score)| f64::from(score) >= cutoff)
        .map(|(&id, _)| u64::from(id))
        .collect();
    let found: HashSet<u64> = result.iter().take(k).copied().filter(|id| correct.contains(id)).collect();
    (found.len() as f64 / m as f64).min(1.0)
}

/// How a threshold search (`score >= threshold`, at most `limit` results) compares with the
/// truth row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdRecall {
    /// Share of the faces that had to be found that were found.
    pub recall: f64,
    /// Results that should not have been there (below the threshold by more than 1e-6).
    pub extras: usize,
}

/// Recall of a threshold search. When the truth row is full (`limit` entries) and all of them
/// pass the threshold, the answer is cut by the limit: the measure is then [`recall_at_k`]
/// with `k = limit`. Otherwise the faces that must be found are the truth's faces scoring at
/// least `threshold + 1e-6` (those within 1e-6 of the threshold may be found or not), and the
/// recall is the share of them found (1 when there are none). `limit` must not exceed the
/// truth's length (K_TRUTH).
pub fn threshold_recall(
    result: &[u64],
    truth_ids: &[u32],
    truth_scores: &[f32],
    threshold: f64,
    limit: usize,
) -> ThresholdRecall {
    let allowed: HashSet<u64> = truth_ids
        .iter()
        .zip(truth_scores)
        .filter(|(_, &s)| f64::from(s) >= threshold - TIE_TOLERANCE)
        .map(|(&id, _)| u64::from(id))
        .collect();
    let result: HashSet<u64> = result.iter().copied().collect();
    let extras = result.iter().filter(|id| !allowed.contains(id)).count();
    let capped = truth_ids.len() >= limit
        && truth_scores.get(limit.saturating_sub(1)).is_some_and(|&s| f64::from(s) >= threshold - TIE_TOLERANCE);
    if capped {
        let ranked: Vec<u64> = result.iter().copied().collect();
        return ThresholdRecall { recall: recall_at_k(&ranked, truth_ids, truth_scores, limit), extras };
    }
    let required: Vec<u64> = truth_ids
        .iter()
        .zip(truth_scores)
        .filter(|(_, &s)| f64::from(s) >= threshold + TIE_TOLERANCE)
        .map(|(&id, _)| u64::from(id))
        .collect();
    let recall = if required.is_empty() {
        1.0
    } else {
        required.iter().filter(|id| result.contains(id)).count() as f64 / required.len() as f64
    };
    ThresholdRecall { recall, extras }
}

/// Checks that a truth's rows are best first (scores never increase) and list an id once.
/// Equal stored scores may come in any id order: the order was decided in f64, and two f64
/// scores can round to one f32.
pub fn check_order(truth: &Truth) -> Result<()> {
    for (q, (ids, scores)) in truth.ids.iter().zip(&truth.scores).enumerate() {
        if let Some(i) = (1..scores.len()).find(|&i| scores[i - 1] < scores[i]) {
            bail!("truth row {q} is out of order at {i}");
        }
        let distinct: HashSet<u32> = ids.iter().copied().collect();
        if distinct.len() != ids.len() {
            bail!("truth row {q} lists an id twice");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_on_a_hand_made_case_with_ties() {
        // Truth: 7 (0.9), 3 (0.8), 5 (0.8), 1 (0.7), 2 (0.6).
        let ids = [7, 3, 5, 1, 2];
        let scores = [0.9, 0.8, 0.8, 0.7, 0.6];
        // k = 2: the 2nd place is a tie between 3 and 5; either is right.
        assert_eq!(recall_at_k(&[7, 3], &ids, &scores, 2), 1.0);
        assert_eq!(recall_at_k(&[7, 5], &ids, &scores, 2), 1.0);
        assert_eq!(recall_at_k(&[5, 3], &ids, &scores, 2), 1.0);
        assert_eq!(recall_at_k(&[7, 1], &ids, &scores, 2), 0.5);
        // Only the first k results count; a duplicate counts once.
        assert_eq!(recall_at_k(&[1, 2, 7], &ids, &scores, 2), 0.0);
        assert_eq!(recall_at_k(&[7, 7], &ids, &scores, 2), 0.5);
        // k = 3: 7, 3, 5 (cutoff 0.8); 1 is not correct.
        assert!((recall_at_k(&[7, 3, 1], &ids, &scores, 3) - 2.0 / 3.0).abs() < 1e-12);
        // A score within 1e-6 of the k-th is a tie too.
        assert_eq!(recall_at_k(&[9], &[8, 9], &[0.5, 0.4999995], 1), 1.0);
        assert_eq!(recall_at_k(&[9], &[8, 9], &[0.5, 0.499], 1), 0.0);
        // Fewer truth entries than k (a selective filter): m = |T|.
        assert_eq!(recall_at_k(&[3, 7], &[7, 3], &[0.9, 0.8], 10), 1.0);
        assert_eq!(recall_at_k(&[3], &[7, 3], &[0.9, 0.8], 10), 0.5);
        // Nothing passes: only an empty answer is right.
        assert_eq!(recall_at_k(&[], &[], &[], 10), 1.0);
        assert_eq!(recall_at_k(&[4], &[], &[], 10), 0.0);
    }

    #[test]
    fn threshold_recall_on_a_hand_made_case() {
        let ids = [7, 3, 5, 1];
        let scores = [0.95, 0.92, 0.9, 0.5];
        let at = |result: &[u64]| threshold_recall(result, &ids, &scores, 0.9, 100);
        // 7 and 3 must be found; 5 sits on the threshold (optional); 1 is below.
        assert_eq!(at(&[7, 3]), ThresholdRecall { recall: 1.0, extras: 0 });
        assert_eq!(at(&[7, 3, 5]), ThresholdRecall { recall: 1.0, extras: 0 });
        assert_eq!(at(&[7]), ThresholdRecall { recall: 0.5, extras: 0 });
        assert_eq!(at(&[7, 3, 1]), ThresholdRecall { recall: 1.0, extras: 1 });
        assert_eq!(threshold_recall(&[], &ids, &scores, 0.99, 100), ThresholdRecall { recall: 1.0, extras: 0 });
        // Every truth entry passes and the row is full: the limit cut the answer.
        assert_eq!(threshold_recall(&[7, 3], &[7, 3], &[0.95, 0.92], 0.5, 2).recall, 1.0);
        assert_eq!(threshold_recall(&[7, 5], &[7, 3], &[0.95, 0.92], 0.5, 2).recall, 0.5);
    }

    #[test]
    fn truth_of_a_hand_made_dataset() {
        // 2-d faces; the query is (1, 0), so a face's score is its first component.
        let base = [
            1.0, 0.0, // 0: 1.0
            0.0, 1.0, // 1: 0.0
            0.6, 0.8, // 2: 0.6
            0.8, 0.6, // 3: 0.8
            0.8, -0.6, // 4: 0.8 (ties with 3; 3 first)
            -1.0, 0.0, // 5: -1.0
        ];
        let queries = [1.0, 0.0, 0.0, 1.0];
        let truth = exact_top_k(&base, 2, &queries, None, 3, None);
        assert_eq!(truth.ids[0], vec![0, 3, 4]);
        assert_eq!(truth.scores[0], vec![1.0, 0.8, 0.8]);
        // Second query (0, 1): 1 (1.0), then 2 (0.8), then 3 (0.6).
        assert_eq!(truth.ids[1], vec![1, 2, 3]);
        check_order(&truth).unwrap();
        // Equal stored scores in any id order are fine (decided in f64); rising scores and
        // repeated ids are not.
        check_order(&Truth { ids: vec![vec![5, 2]], scores: vec![vec![0.5, 0.5]] }).unwrap();
        assert!(check_order(&Truth { ids: vec![vec![5, 2]], scores: vec![vec![0.4, 0.5]] }).is_err());
        assert!(check_order(&Truth { ids: vec![vec![5, 5]], scores: vec![vec![0.5, 0.4]] }).is_err());
        // Only some faces are candidates (a filter): fewer than k may pass.
        let filtered = exact_top_k(&base, 2, &queries, Some(&[1, 4, 5]), 5, None);
        assert_eq!(filtered.ids[0], vec![4, 1, 5]);
        assert_eq!(filtered.scores[0], vec![0.8, 0.0, -1.0]);
        assert_eq!(filtered.ids[1], vec![1, 5, 4]);
        // More queries than one block, all scored.
        let many: Vec<f32> = (0..20).flat_map(|i| if i % 2 == 0 { [1.0, 0.0] } else { [0.0, 1.0] }).collect();
        let truth = exact_top_k(&base, 2, &many, None, 1, None);
        assert_eq!(truth.ids.len(), 20);
        assert!(truth.ids.iter().enumerate().all(|(q, row)| row == &vec![if q % 2 == 0 { 0 } else { 1 }]));
    }

    #[test]
    fn f64_dot_handles_any_length() {
        let a: Vec<f64> = (0..7).map(f64::from).collect();
        assert_eq!(dot(&a, &a), (0..7).map(|x| f64::from(x * x)).sum::<f64>());
    }
}
