//! facedb's own HNSW graph (`facedb::index::Graph`) as a [`Candidate`].
//!
//! - Build: `Graph::new(dim, M, ef_construction)` with room for every face, then `insert` from
//!   the probe's rayon pool, 1,000 faces per task (the graph takes concurrent inserts).
//! - Search: the graph walks its 8-bit codes and returns its best `ef` faces; they are then
//!   re-ranked by the exact float dot product with the dataset's vectors (what the engine does
//!   with the gallery's vectors) and cut to `k`.
//! - Deletes are the graph's own tombstones.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, Result};
use facedb::index::{Graph, GraphParams};
use rayon::prelude::*;
use simsimd::SpatialSimilarity;

use super::candidate::{Allow, Candidate, Deletes};
use crate::dataset::Dataset;
use crate::progress::Progress;

/// Faces per rayon task during the build.
const ADD_CHUNK: usize = 1000;

pub struct FacedbIndex<'a> {
    graph: Graph,
    dataset: &'a Dataset,
    ef: AtomicUsize,
}

impl<'a> FacedbIndex<'a> {
    pub fn build(
        dataset: &'a Dataset,
        m: usize,
        ef_construction: usize,
        pool: &rayon::ThreadPool,
    ) -> Result<FacedbIndex<'a>> {
        let count = dataset.count();
        let graph = Graph::new(dataset.dim(), GraphParams { m, ef_construction }, count);
        let progress = Progress::new(format!("facedb M={m} efC={ef_construction}: adding {count} faces"), count);
        let ids: Vec<usize> = (0..count).collect();
        pool.install(|| {
            ids.par_chunks(ADD_CHUNK).try_for_each(|chunk| -> Result<()> {
                for &id in chunk {
                    graph
                        .insert(id as u64, dataset.vector(id))
                        .map_err(|_| anyhow!("facedb: the graph is full at face {id}"))?;
                }
                progress.inc(chunk.len());
                Ok(())
            })
        })?;
        Ok(FacedbIndex { graph, dataset, ef: AtomicUsize::new(64) })
    }

    /// The walk's candidates re-ranked by the exact similarity, best `k`.
    fn rerank(&self, query: &[f32], found: Vec<(u64, f32)>, k: usize) -> Vec<u64> {
        let mut exact: Vec<(f64, u64)> = found
            .into_iter()
            .map(|(id, _)| {
                (<f32 as SpatialSimilarity>::dot(query, self.dataset.vector(id as usize)).unwrap_or(0.0), id)
            })
            .collect();
        exact.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        exact.into_iter().take(k).map(|(_, id)| id).collect()
    }
}

impl Candidate for FacedbIndex<'_> {
    fn set_ef(&self, ef: usize) {
        self.ef.store(ef, Ordering::Relaxed);
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<u64>> {
        let ef = self.ef.load(Ordering::Relaxed).max(k);
        Ok(self.rerank(query, self.graph.search(query, ef, None), k))
    }

    fn filtered_search(&self, query: &[f32], k: usize, allow: Allow<'_>) -> Result<Vec<u64>> {
        let ef = self.ef.load(Ordering::Relaxed).max(k);
        Ok(self.rerank(query, self.graph.search(query, ef, Some(&|id| allow(id))), k))
    }

    fn deletes(&self) -> Deletes {
        Deletes::Native
    }

    fn remove(&self, id: u64) -> Result<()> {
        if self.graph.remove(id) {
            Ok(())
        } else {
            Err(anyhow!("facedb: face {id} is not in the graph"))
        }
    }

    fn size(&self) -> usize {
        self.graph.live()
    }

    fn memory_bytes(&self) -> Option<u64> {
        Some((self.graph.bytes_per_slot() * self.graph.capacity()) as u64)
    }

    fn links(&self) -> Option<String> {
        let s = self.graph.link_stats();
        Some(format!(
            "{:.1} links per face (max {}), {} faces unreachable from the entry point",
            s.mean_out_degree, s.max_out_degree, s.unreachable
        ))
    }

    fn acceleration(&self) -> Option<String> {
        Some("simsimd i8 dot (runtime dispatch) for the walk, f32 dot for the re-rank".to_owned())
    }
}
