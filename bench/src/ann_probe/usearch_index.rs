//! usearch 2.x as a [`Candidate`], and its persistence (save, load, memory-mapped view).
//!
//! - Index: metric `IP` (distance `1 − a·b`, the vectors are unit), f32 vectors (no
//!   quantisation: the comparison with hnsw_rs and hnswlib is on the same data), connectivity
//!   `M` (`2·M` links on layer 0), `expansion_add` = ef_construction.
//! - Build: `reserve_capacity_and_threads(count, threads + 1)` (usearch keeps one search/insert
//!   context per thread; the extra one is the calling thread's), then `add` from the probe's
//!   rayon pool, 1,000 faces per task.
//! - Search: `change_expansion_search(ef)` once per sweep point (`set_ef`), then `search` /
//!   `filtered_search` with a closure; a removed key is skipped by both.
//! - Errors come back from C++ as `cxx::Exception`, turned into `anyhow` errors with the step.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rayon::prelude::*;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::candidate::{Allow, Candidate, Deletes};
use crate::dataset::Dataset;
use crate::progress::Progress;

/// Faces per rayon task during the build.
const ADD_CHUNK: usize = 1000;

pub struct UsearchIndex {
    index: Index,
}

fn options(dim: usize, m: usize, ef_construction: usize) -> IndexOptions {
    IndexOptions {
        dimensions: dim,
        metric: MetricKind::IP,
        quantization: ScalarKind::F32,
        connectivity: m,
        expansion_add: ef_construction,
        expansion_search: 64,
        multi: false,
    }
}

impl UsearchIndex {
    pub fn build(
        dataset: &Dataset,
        m: usize,
        ef_construction: usize,
        pool: &rayon::ThreadPool,
    ) -> Result<UsearchIndex> {
        let count = dataset.count();
        let index = Index::new(&options(dataset.dim(), m, ef_construction))
            .map_err(|e| anyhow!("usearch: creating an index (M={m}, efC={ef_construction}): {e}"))?;
        index
            .reserve_capacity_and_threads(count, pool.current_num_threads() + 1)
            .map_err(|e| anyhow!("usearch: reserving {count} faces: {e}"))?;
        let progress = Progress::new(format!("usearch M={m} efC={ef_construction}: adding {count} faces"), count);
        let ids: Vec<usize> = (0..count).collect();
        pool.install(|| {
            ids.par_chunks(ADD_CHUNK).try_for_each(|chunk| -> Result<()> {
                for &id in chunk {
                    index.add(id as u64, dataset.vector(id)).map_err(|e| anyhow!("usearch: adding face {id}: {e}"))?;
                }
                progress.inc(chunk.len());
                Ok(())
            })
        })?;
        Ok(UsearchIndex { index })
    }

    /// Writes the index to `path`; returns the time `save` took.
    pub fn save(&self, path: &Path) -> Result<Duration> {
        let name = path.to_str().context("the index path is not UTF-8")?;
        let started = Instant::now();
        self.index.save(name).map_err(|e| anyhow!("usearch: saving {name}: {e}"))?;
        Ok(started.elapsed())
    }

    /// Reads a saved index into memory (`Index::restore`: header, then `load`).
    pub fn load(path: &Path) -> Result<UsearchIndex> {
        let name = path.to_str().context("the index path is not UTF-8")?;
        let index = Index::restore(name).map_err(|e| anyhow!("usearch: loading {name}: {e}"))?;
        Ok(UsearchIndex { index })
    }

    /// Maps a saved index read-only (`Index::restore_view`: the vectors and graph stay in the file).
    pub fn view(path: &Path) -> Result<UsearchIndex> {
        let name = path.to_str().context("the index path is not UTF-8")?;
        let index = Index::restore_view(name).map_err(|e| anyhow!("usearch: viewing {name}: {e}"))?;
        Ok(UsearchIndex { index })
    }

    /// Makes room for searches from `threads` threads at once (a loaded index has one context).
    pub fn reserve_threads(&self, threads: usize) -> Result<()> {
        self.index
            .reserve_capacity_and_threads(self.index.capacity().max(self.index.size()), threads)
            .map_err(|e| anyhow!("usearch: reserving search threads: {e}"))
    }
}

impl Candidate for UsearchIndex {
    fn set_ef(&self, ef: usize) {
        self.index.change_expansion_search(ef);
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<u64>> {
        let matches = self.index.search(query, k).map_err(|e| anyhow!("usearch: search: {e}"))?;
        Ok(matches.keys)
    }

    fn filtered_search(&self, query: &[f32], k: usize, allow: Allow<'_>) -> Result<Vec<u64>> {
        let matches =
            self.index.filtered_search(query, k, allow).map_err(|e| anyhow!("usearch: filtered_search: {e}"))?;
        Ok(matches.keys)
    }

    fn deletes(&self) -> Deletes {
        Deletes::Native
    }

    fn remove(&self, id: u64) -> Result<()> {
        let removed = self.index.remove(id).map_err(|e| anyhow!("usearch: removing {id}: {e}"))?;
        if removed != 1 {
            return Err(anyhow!("usearch: removing {id} removed {removed} vectors, expected 1"));
        }
        Ok(())
    }

    fn size(&self) -> usize {
        self.index.size()
    }

    fn memory_bytes(&self) -> Option<u64> {
        Some(self.index.memory_usage() as u64)
    }

    fn acceleration(&self) -> Option<String> {
        Some(self.index.hardware_acceleration())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_search_filter_remove_save_load_view() {
        let dim = 8;
        let index = Index::new(&options(dim, 8, 64)).unwrap();
        index.reserve_capacity_and_threads(100, 2).unwrap();
        let unit = |i: usize| -> Vec<f32> {
            let mut v: Vec<f32> = (0..dim).map(|j| ((i * 7 + j * 13) % 17) as f32 - 8.0 + i as f32 * 0.01).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= n);
            v
        };
        for i in 0..100 {
            index.add(i as u64, &unit(i)).unwrap();
        }
        let probe = UsearchIndex { index };
        probe.set_ef(100);
        assert_eq!(probe.search(&unit(42), 1).unwrap(), vec![42]);
        let odd = |id: u64| id % 2 == 1;
        let found = probe.filtered_search(&unit(42), 5, &odd).unwrap();
        assert_eq!(found.len(), 5);
        assert!(found.iter().all(|id| id % 2 == 1));
        probe.remove(42).unwrap();
        assert!(probe.remove(42).is_err(), "a second remove finds nothing");
        assert!(!probe.search(&unit(42), 10).unwrap().contains(&42));
        assert_eq!(probe.size(), 99);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.usearch");
        probe.save(&path).unwrap();
        for copy in [UsearchIndex::load(&path).unwrap(), UsearchIndex::view(&path).unwrap()] {
            copy.reserve_threads(2).unwrap();
            copy.set_ef(100);
            assert_eq!(copy.size(), 99);
            assert_eq!(copy.search(&unit(7), 3).unwrap(), probe.search(&unit(7), 3).unwrap());
            assert!(!copy.search(&unit(42), 10).unwrap().contains(&42));
        }
    }
}
