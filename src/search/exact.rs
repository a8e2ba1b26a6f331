//! Exact search: filter, score, keep the best.
//!
//! Each chunk is scanned on its own: its conditions are compiled ([`ChunkFilter`]), each row
//! that passes is scored against the query (one SIMD dot product with `simsimd`, times the
//! row's stored inverse norm: the cosine similarity, clamped to [-1, 1]), and kept in a
//! bounded heap of the best `limit` rows. Large galleries spread their chunks over all cores
//! with rayon and merge the heaps; small ones stay on the calling thread.
//!
//! Order is a single `u128` rank per row, smaller is better: the sort key in the high half,
//! the id in the low half for the tie-break (id ascending), so the heap compares integers.

use std::collections::BinaryHeap;
use std::sync::Arc;

use rayon::prelude::*;
use simsimd::SpatialSimilarity;

use crate::search::filter::ChunkFilter;
use crate::search::{Query, Sort};
use crate::store::chunk::{Chunk, Face};

/// Galleries with fewer faces are scanned on the calling thread only.
const PARALLEL_MIN_ROWS: usize = 65_536;

/// A face found, with its score when the query had a facen.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub face: Face,
    pub score: Option<f32>,
}

/// How a chunk is scanned: every row, some rows (those passing a filter), or every row scored
/// but only those marked kept.
enum Rows<'a> {
    All,
    Some(&'a [u32]),
    Dense(&'a [bool]),
}

/// More than 1/DENSE_DIVISOR of a chunk's rows passing the filter: score them all in order.
const DENSE_DIVISOR: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    rank: u128,
    chunk: u32,
    row: u32,
    score: u32,
}

/// The best `k` entries seen so far; the heap's top is the worst of them.
struct TopK {
    k: usize,
    heap: BinaryHeap<Entry>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK { k, heap: BinaryHeap::with_capacity(k.min(4096) + 1) }
    }

    /// Whether an entry of this rank would be kept.
    #[inline]
    fn admits(&self, rank: u128) -> bool {
        self.heap.len() < self.k || self.heap.peek().is_some_and(|worst| rank < worst.rank)
    }

    #[inline]
    fn push(&mut self, entry: Entry) {
        if self.heap.len() < self.k {
            self.heap.push(entry);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if entry.rank < worst.rank {
                *worst = entry;
            }
        }
    }

    fn merge(mut self, other: TopK) -> TopK {
        for entry in other.heap {
            self.push(entry);
        }
        self
    }
}

/// Maps a score to a u32 whose order is the score's order, so higher scores rank first.
#[inline]
fn score_key(score: f32) -> u64 {
    let bits = (score + 0.0).to_bits(); // -0.0 + 0.0 == +0.0: one key for zero
    let ascending = if bits >> 31 == 1 { !bits } else { bits | (1 << 31) };
    u64::from(!ascending)
}

/// A result's place in `sort` order, smaller first: the sort key in the high half, the id in
/// the low half (ties by id ascending). Routers merge the shards' results by it.
#[inline]
pub fn rank(sort: Sort, id: u64, score: f32) -> u128 {
    match sort {
        Sort::IdAscending => u128::from(id),
        Sort::IdDescending => u128::from(!id),
        Sort::ScoreDescending => (u128::from(score_key(score)) << 64) | u128::from(id),
    }
}

/// Cosine similarity from the dot product and both inverse norms (in f64, so that an exact
/// copy scores 1), clamped to [-1, 1].
#[inline]
pub fn cosine(query: &[f32], vector: &[f32], inverse_norms: f64) -> f32 {
    let dot = <f32 as SpatialSimilarity>::dot(query, vector).unwrap_or(0.0);
    ((dot * inverse_norms) as f32).clamp(-1.0, 1.0)
}

fn scan_chunk(top: &mut TopK, query: &Query, chunk_index: usize, chunk: &Chunk, candidates: Option<&[u32]>) {
    let filter = ChunkFilter::new(chunk, &query.conditions);
    if filter.rejects_all() || chunk.is_empty() {
        return;
    }
    // Filter first, then score the rows that passed in a tight loop of their own: mixing the
    // two keeps the CPU from having more than one vector load in flight (measured: 1M faces
    // with a 10% filter went from 17.9 to 10.8 ms on one core). When many rows pass, reading
    // their vectors scattered costs more than streaming them all: then every vector is scored
    // in order and only passing rows are kept (200k faces, 50% filter: see docs/decisions.md).
    let passed: Vec<u32>;
    let mask: Vec<bool>;
    let rows = match candidates {
        None if filter.is_empty() => Rows::All,
        None => {
            passed = filter.select(0..chunk.len() as u32, chunk.len());
            if query.facen.is_some() && passed.len() * DENSE_DIVISOR > chunk.len() {
                let mut dense = vec![false; chunk.len()];
                passed.iter().for_each(|&r| dense[r as usize] = true);
                mask = dense;
                Rows::Dense(&mask)
            } else {
                Rows::Some(&passed)
            }
        }
        Some(candidates) => {
            passed = filter.select(candidates.iter().copied(), candidates.len());
            Rows::Some(&passed)
        }
    };
    // The score of a row, or None when it is outside the query's score range.
    let score_of = |row: usize| match &query.facen {
        Some(facen) => {
            let score = cosine(&facen.vector, chunk.vector(row), facen.inverse_norm * chunk.inverse_norm(row));
            (facen.min_score..=facen.max_score).contains(&score).then_some(score)
        }
        None => Some(0.0),
    };
    let after = query.after.map(|cursor| cursor.rank(query.sort));
    let mut keep = |row: usize, score: f32| {
        let rank = rank(query.sort, chunk.id(row), score);
        if top.admits(rank) && after.is_none_or(|after| rank > after) {
            top.push(Entry { rank, chunk: chunk_index as u32, row: row as u32, score: score.to_bits() });
        }
    };
    match rows {
        Rows::All => (0..chunk.len()).for_each(|row| score_of(row).into_iter().for_each(|s| keep(row, s))),
        Rows::Some(rows) => {
            rows.iter().map(|&r| r as usize).for_each(|row| score_of(row).into_iter().for_each(|s| keep(row, s)))
        }
        Rows::Dense(mask) => (0..chunk.len()).for_each(|row| {
            let score = score_of(row);
            if mask[row] {
                score.into_iter().for_each(|s| keep(row, s));
            }
        }),
    }
}

/// Runs `query` over a snapshot. With `candidates` (rows per chunk index, from an id
/// look-up) only those rows are looked at.
pub fn run(chunks: &[Arc<Chunk>], query: &Query, candidates: Option<&[(u32, Vec<u32>)]>) -> Vec<Hit> {
    if query.limit == 0 {
        return Vec::new();
    }
    let top = match candidates {
        Some(groups) => {
            let mut top = TopK::new(query.limit);
            for (chunk_index, rows) in groups {
                let chunk = &chunks[*chunk_index as usize];
                scan_chunk(&mut top, query, *chunk_index as usize, chunk, Some(rows));
            }
            top
        }
        None => {
            let total: usize = chunks.iter().map(|c| c.len()).sum();
            if total >= PARALLEL_MIN_ROWS && chunks.len() > 1 {
                chunks
                    .par_iter()
                    .enumerate()
                    .fold(
                        || TopK::new(query.limit),
                        |mut top, (i, chunk)| {
                            scan_chunk(&mut top, query, i, chunk, None);
                            top
                        },
                    )
                    .reduce(|| TopK::new(query.limit), TopK::merge)
            } else {
                let mut top = TopK::new(query.limit);
                for (i, chunk) in chunks.iter().enumerate() {
                    scan_chunk(&mut top, query, i, chunk, None);
                }
                top
            }
        }
    };
    let mut entries = top.heap.into_vec();
    entries.sort_unstable();
    entries
        .into_iter()
        .map(|e| Hit {
            face: chunks[e.chunk as usize].face(e.row as usize),
            score: query.facen.as_ref().map(|_| f32::from_bits(e.score)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_keys_order_scores_descending() {
        let scores = [1.0f32, 0.5, 1e-30, 0.0, -0.0, -1e-30, -0.5, -1.0];
        let keys: Vec<u64> = scores.iter().map(|&s| score_key(s)).collect();
        for pair in keys.windows(2) {
            assert!(pair[0] <= pair[1], "{keys:?}");
        }
        assert_eq!(score_key(0.0), score_key(-0.0));
    }

    #[test]
    fn top_k_keeps_the_best() {
        let mut top = TopK::new(3);
        for rank in [5u128, 1, 9, 3, 7, 2] {
            if top.admits(rank) {
                top.push(Entry { rank, chunk: 0, row: 0, score: 0 });
            }
        }
        let mut kept: Vec<u128> = top.heap.into_iter().map(|e| e.rank).collect();
        kept.sort();
        assert_eq!(kept, vec![1, 2, 3]);
    }
}
