//! A search through the index: the planner's sample, the filtered walk, the candidates for the
//! exact re-rank.
//!
//! Runs under the gallery's read lock (the caller holds it), so face ids map to rows of the
//! snapshot taken under the same lock. A walk's predicate looks a face up (`locate`) and tests
//! the query's conditions on its row, with each chunk's conditions compiled the first time the
//! walk meets the chunk. The candidates (the walk's `ef` best plus every tail face) go back as
//! rows grouped by chunk, for `search::run` to filter, score exactly and order: the same code
//! that answers exact searches, which is why an indexed answer can only miss faces, never
//! return one that an exact search would not.

use std::cell::OnceCell;
use std::sync::Arc;

use super::planner::SAMPLE_ROWS;
use crate::index::gallery_index::IndexView;
use crate::search::filter::ChunkFilter;
use crate::search::Condition;
use crate::store::chunk::Chunk;
use crate::store::Gallery;

/// Chunks the selectivity sample spreads over.
const SAMPLE_CHUNKS: usize = 32;

/// The query's conditions, compiled per chunk on first use.
pub struct LazyFilters<'a> {
    chunks: &'a [Arc<Chunk>],
    conditions: &'a [Condition],
    compiled: Vec<OnceCell<ChunkFilter<'a>>>,
}

impl<'a> LazyFilters<'a> {
    pub fn new(chunks: &'a [Arc<Chunk>], conditions: &'a [Condition]) -> LazyFilters<'a> {
        LazyFilters { chunks, conditions, compiled: (0..chunks.len()).map(|_| OnceCell::new()).collect() }
    }

    fn filter(&self, chunk: usize) -> &ChunkFilter<'a> {
        self.compiled[chunk].get_or_init(|| ChunkFilter::new(&self.chunks[chunk], self.conditions))
    }

    pub fn passes(&self, chunk: u32, row: u32) -> bool {
        self.conditions.is_empty() || self.filter(chunk as usize).passes(row)
    }

    /// The share of faces that pass, estimated on about [`SAMPLE_ROWS`] rows spread evenly over
    /// up to [`SAMPLE_CHUNKS`] chunks.
    pub fn passing_share(&self) -> f64 {
        let chunks = self.chunks.len();
        if chunks == 0 || self.conditions.is_empty() {
            return 1.0;
        }
        let picked = chunks.min(SAMPLE_CHUNKS);
        let per_chunk = (SAMPLE_ROWS / picked).max(1);
        let (mut tested, mut passed) = (0usize, 0usize);
        for i in 0..picked {
            let chunk = i * chunks / picked;
            let rows = self.chunks[chunk].len();
            if rows == 0 {
                continue;
            }
            let step = (rows / per_chunk).max(1);
            for row in (0..rows).step_by(step).take(per_chunk) {
                tested += 1;
                passed += usize::from(self.passes(chunk as u32, row as u32));
            }
        }
        if tested == 0 {
            return 1.0;
        }
        passed as f64 / tested as f64
    }
}

/// The rows to re-rank: the walk's `ef` best faces that pass the conditions, and the tail.
/// Sorted by chunk and row, without repeats.
pub fn candidates(
    gallery: &Gallery,
    filters: &LazyFilters<'_>,
    view: &IndexView,
    query: &[f32],
    ef: usize,
    filtered: bool,
) -> Vec<(u32, u32)> {
    let allow = |id: u64| gallery.locate(id).is_some_and(|at| filters.passes(at.chunk, at.row));
    let found = view.graph.search(query, ef, if filtered { Some(&allow) } else { None });
    let mut rows: Vec<(u32, u32)> = found
        .into_iter()
        .map(|(id, _)| id)
        .chain(view.tail.iter().copied())
        .filter_map(|id| gallery.locate(id))
        .map(|at| (at.chunk, at.row))
        .collect();
    rows.sort_unstable();
    rows.dedup();
    rows
}
