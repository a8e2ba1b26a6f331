//! hnsw_rs 0.3.5 as a [`Candidate`].
//!
//! - Distance: [`InnerProduct`], `1 − a·b` over simsimd's f32 dot, clamped at 0. hnsw_rs's own
//!   `DistDot` asserts `1 − a·b ≥ 0`, which fails on unit vectors whose f32 self-dot rounds
//!   above 1 (`../shared/design/CRATES.md`); hnsw_rs also asserts every distance is ≥ 0 in
//!   its search loop, so the clamp is needed, not cosmetic.
//! - Build: `parallel_insert_slice` (rayon) inside the probe's pool, 10,000 faces per call so
//!   progress can be shown; `max_layer` 16 (hnsw_rs's maximum). Layer 0 keeps `2·M` links, as
//!   hnswlib and usearch do.
//! - Search: `search` / `search_filter` with a closure. There is no delete: deleted faces are
//!   hidden with the filter ([`Deletes::ViaFilter`]).
//! - hnsw_rs has `assert!`s and `unwrap()`s on its search path; a panic is caught here and
//!   becomes an error (the probe reports it and goes on).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, bail, Result};
use hnsw_rs::prelude::{Distance, Hnsw};
use simsimd::SpatialSimilarity;

use super::candidate::{Allow, Candidate, Deletes};
use crate::dataset::Dataset;
use crate::progress::Progress;

/// hnsw_rs's highest layer count.
const MAX_LAYER: usize = 16;
/// Faces per `parallel_insert_slice` call.
const INSERT_CHUNK: usize = 10_000;

/// Cosine distance of unit vectors: `1 − a·b`, never negative, never NaN.
#[derive(Debug, Clone, Copy, Default)]
pub struct InnerProduct;

impl Distance<f32> for InnerProduct {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let dot = <f32 as SpatialSimilarity>::dot(a, b).unwrap_or(0.0);
        // `max` returns the other operand when one is NaN, so the result is never NaN.
        ((1.0 - dot) as f32).max(0.0)
    }
}

pub struct HnswRsIndex {
    hnsw: Hnsw<'static, f32, InnerProduct>,
    ef: AtomicUsize,
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

impl HnswRsIndex {
    pub fn build(dataset: &Dataset, m: usize, ef_construction: usize, pool: &rayon::ThreadPool) -> Result<HnswRsIndex> {
        if !(2..=255).contains(&m) {
            bail!("hnsw_rs needs M from 2 to 255, not {m}");
        }
        let count = dataset.count();
        let hnsw = Hnsw::<f32, InnerProduct>::new(m, count, MAX_LAYER, ef_construction, InnerProduct);
        let progress = Progress::new(format!("hnsw_rs M={m} efC={ef_construction}: inserting {count} faces"), count);
        for start in (0..count).step_by(INSERT_CHUNK) {
            let end = (start + INSERT_CHUNK).min(count);
            let items: Vec<(&[f32], usize)> = (start..end).map(|id| (dataset.vector(id), id)).collect();
            catch_unwind(AssertUnwindSafe(|| pool.install(|| hnsw.parallel_insert_slice(&items)))).map_err(|p| {
                anyhow!("hnsw_rs panicked while inserting faces {start}..{end}: {}", panic_message(&*p))
            })?;
            progress.inc(end - start);
        }
        Ok(HnswRsIndex { hnsw, ef: AtomicUsize::new(64) })
    }
}

impl Candidate for HnswRsIndex {
    fn set_ef(&self, ef: usize) {
        self.ef.store(ef, Ordering::Relaxed);
    }

    fn search(&self, query: &[f32], k: usize) -> Result<Vec<u64>> {
        let ef = self.ef.load(Ordering::Relaxed);
        let found = catch_unwind(AssertUnwindSafe(|| self.hnsw.search(query, k, ef)))
            .map_err(|p| anyhow!("hnsw_rs search panicked (ef={ef}): {}", panic_message(&*p)))?;
        Ok(found.iter().map(|n| n.d_id as u64).collect())
    }

    fn filtered_search(&self, query: &[f32], k: usize, allow: Allow<'_>) -> Result<Vec<u64>> {
        let ef = self.ef.load(Ordering::Relaxed);
        let filter = |id: &usize| allow(*id as u64);
        let found = catch_unwind(AssertUnwindSafe(|| self.hnsw.search_filter(query, k, ef, Some(&filter))))
            .map_err(|p| anyhow!("hnsw_rs search_filter panicked (ef={ef}): {}", panic_message(&*p)))?;
        Ok(found.iter().map(|n| n.d_id as u64).collect())
    }

    fn deletes(&self) -> Deletes {
        Deletes::ViaFilter
    }

    fn remove(&self, _id: u64) -> Result<()> {
        bail!("hnsw_rs has no delete")
    }

    fn size(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    fn memory_bytes(&self) -> Option<u64> {
        None
    }

    fn acceleration(&self) -> Option<String> {
        Some("simsimd dot (runtime dispatch), called by the probe's distance".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_product_distance_never_panics_or_goes_negative() {
        // A unit vector whose f32 self-dot rounds above 1 (hnsw_rs's DistDot asserts on it).
        let mut v: Vec<f32> = (0..128).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        assert!(InnerProduct.eval(&v, &v) >= 0.0);
        assert!(InnerProduct.eval(&v, &v) < 1e-5);
        let minus: Vec<f32> = v.iter().map(|x| -x).collect();
        assert!((InnerProduct.eval(&v, &minus) - 2.0).abs() < 1e-5);
        let nan = vec![f32::NAN; 128];
        assert_eq!(InnerProduct.eval(&v, &nan), 0.0);
        // Lengths that differ: simsimd refuses, the distance is 1 (as for orthogonal vectors).
        assert_eq!(InnerProduct.eval(&v, &v[..64]), 1.0);
    }

    #[test]
    fn finds_the_nearest_on_a_tiny_index() {
        let dim = 8;
        let vectors: Vec<Vec<f32>> = (0..200)
            .map(|i| {
                let mut v: Vec<f32> = (0..dim).map(|j| ((i * 7 + j * 13) % 17) as f32 - 8.0).collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= n);
                v
            })
            .collect();
        let hnsw = Hnsw::<f32, InnerProduct>::new(8, vectors.len(), MAX_LAYER, 64, InnerProduct);
        for (id, v) in vectors.iter().enumerate() {
            hnsw.insert_slice((v, id));
        }
        let index = HnswRsIndex { hnsw, ef: AtomicUsize::new(200) };
        let found = index.search(&vectors[42], 1).unwrap();
        assert_eq!(index.search(&vectors[42], 1).unwrap().len(), 1);
        // Several faces may be at distance 0 (the generator repeats vectors): the first one
        // found is one of them.
        let best = found[0] as usize;
        assert!(InnerProduct.eval(&vectors[42], &vectors[best]) < 1e-6);
        let odd = |id: u64| id % 2 == 1;
        let filtered = index.filtered_search(&vectors[42], 5, &odd).unwrap();
        assert!(!filtered.is_empty() && filtered.iter().all(|id| id % 2 == 1), "{filtered:?}");
    }
}
