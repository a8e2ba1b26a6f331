//! The graph's copy of the vectors: 8-bit codes of the unit vector, one scale per face.
//!
//! A face's unit vector `x` is stored as `code_i = round(x_i / s)` with `s = max|x_i| / 127`,
//! so every code uses the whole `i8` range; the similarity of two faces is then approximately
//! `dot(code_a, code_b) · s_a · s_b` (an integer dot product: simsimd's VNNI kernel on this
//! machine). A 128-d face takes 132 bytes instead of 512, a quarter of the memory traffic of a
//! graph walk, whose cost is mostly cache misses on the vectors of the nodes it visits. The
//! rounding error (about 0.002 on a cosine) only decides which nodes the walk visits; the
//! caller re-ranks the candidates the walk returns with the exact float vectors.
//!
//! Codes are written once, by the thread that reserved the slot, before the slot's node is
//! linked into the graph, and never change after: see [`Codes::write`].

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};

use simsimd::SpatialSimilarity;

/// A vector quantised for the walk: its codes and its scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Coded {
    pub codes: Vec<i8>,
    pub scale: f32,
}

impl Coded {
    /// Quantises `vector` after scaling it to unit length; a zero vector gets zero codes.
    pub fn new(vector: &[f32]) -> Coded {
        let norm = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
        let largest = vector.iter().fold(0.0f64, |m, &x| m.max(f64::from(x).abs()));
        if norm == 0.0 || largest == 0.0 || !norm.is_finite() {
            return Coded { codes: vec![0; vector.len()], scale: 0.0 };
        }
        let step = largest / norm / 127.0;
        let codes = vector.iter().map(|&x| (f64::from(x) / norm / step).round().clamp(-127.0, 127.0) as i8).collect();
        Coded { codes, scale: step as f32 }
    }
}

/// Approximate similarity of two coded vectors.
#[inline]
pub fn similarity(a: &[i8], scale_a: f32, b: &[i8], scale_b: f32) -> f32 {
    let dot = <i8 as SpatialSimilarity>::dot(a, b).unwrap_or(0.0);
    dot as f32 * scale_a * scale_b
}

/// Fixed-capacity storage of coded vectors, written once per slot and read concurrently.
pub struct Codes {
    dim: usize,
    codes: Box<[UnsafeCell<i8>]>,
    scales: Box<[AtomicU32]>,
}

// SAFETY: a slot's codes are written by one thread only (the one that reserved the slot, see
// `write`) before any other thread can learn the slot's number, and only read after that; the
// publication goes through a Release store / Acquire load of the node id in the graph's links
// or entry point, which orders the code writes before the reads.
unsafe impl Sync for Codes {}

impl Codes {
    pub fn new(dim: usize, capacity: usize) -> Codes {
        Codes {
            dim,
            codes: (0..dim * capacity).map(|_| UnsafeCell::new(0)).collect(),
            scales: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Stores the codes of `slot`.
    ///
    /// # Safety
    /// The caller reserved `slot` for itself and has not yet published it: no other thread reads
    /// or writes it until the caller links it into the graph after this call.
    pub unsafe fn write(&self, slot: usize, coded: &Coded) {
        debug_assert_eq!(coded.codes.len(), self.dim);
        let start = slot * self.dim;
        let cells = &self.codes[start..start + self.dim];
        for (cell, &code) in cells.iter().zip(&coded.codes) {
            // SAFETY: exclusive access to the slot, by the caller's contract.
            unsafe { *cell.get() = code };
        }
        self.scales[slot].store(coded.scale.to_bits(), Ordering::Release);
    }

    /// The codes of a published slot.
    #[inline]
    pub fn get(&self, slot: usize) -> &[i8] {
        let start = slot * self.dim;
        let cells = &self.codes[start..start + self.dim];
        // SAFETY: `UnsafeCell<i8>` has the layout of `i8`, and a published slot is never
        // written again (see the `Sync` impl), so a shared view of it is sound.
        unsafe { std::slice::from_raw_parts(cells.as_ptr().cast::<i8>(), self.dim) }
    }

    #[inline]
    pub fn scale(&self, slot: usize) -> f32 {
        f32::from_bits(self.scales[slot].load(Ordering::Acquire))
    }

    /// Asks the CPU to start loading a slot's codes (the next node a walk will score).
    #[inline]
    pub fn prefetch(&self, slot: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let start = slot * self.dim;
            if let Some(cells) = self.codes.get(start..start + self.dim) {
                let pointer = cells.as_ptr().cast::<i8>();
                let mut offset = 0;
                while offset < self.dim {
                    // SAFETY: a prefetch is only a hint; the address is inside the slot.
                    unsafe {
                        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(pointer.add(offset))
                    };
                    offset += 64;
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// Approximate similarity of a query and a published slot.
    #[inline]
    pub fn similarity(&self, query: &Coded, slot: usize) -> f32 {
        similarity(&query.codes, query.scale, self.get(slot), self.scale(slot))
    }

    /// Approximate similarity of two published slots.
    #[inline]
    pub fn between(&self, a: usize, b: usize) -> f32 {
        similarity(self.get(a), self.scale(a), self.get(b), self.scale(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn codes_approximate_the_cosine() {
        let a = [0.3f32, -0.2, 0.9, 0.1, 0.05, -0.6, 0.2, 0.0];
        let b = [0.25f32, -0.1, 0.8, 0.3, 0.0, -0.5, 0.1, 0.2];
        let exact: f32 = unit(&a).iter().zip(unit(&b)).map(|(x, y)| x * y).sum();
        let (ca, cb) = (Coded::new(&a), Coded::new(&b));
        let approx = similarity(&ca.codes, ca.scale, &cb.codes, cb.scale);
        assert!((approx - exact).abs() < 0.01, "{approx} vs {exact}");
        assert_eq!(ca.codes.iter().map(|c| c.unsigned_abs()).max(), Some(127));
        // Scale does not matter: codes describe the direction.
        let doubled: Vec<f32> = a.iter().map(|x| x * 2.0).collect();
        assert_eq!(Coded::new(&doubled), ca);
    }

    #[test]
    fn zero_and_non_finite_vectors_get_zero_codes() {
        assert_eq!(Coded::new(&[0.0; 4]), Coded { codes: vec![0; 4], scale: 0.0 });
        assert_eq!(Coded::new(&[f32::INFINITY, 1.0]).scale, 0.0);
    }

    #[test]
    fn stored_codes_read_back() {
        let codes = Codes::new(3, 2);
        let coded = Coded::new(&[1.0, -2.0, 0.5]);
        // SAFETY: single-threaded test; slot 1 is ours.
        unsafe { codes.write(1, &coded) };
        assert_eq!(codes.get(1), coded.codes.as_slice());
        assert_eq!(codes.scale(1), coded.scale);
        assert_eq!(codes.get(0), &[0, 0, 0]);
        assert!((codes.similarity(&coded, 1) - 1.0).abs() < 0.01);
    }
}
