//! Synthetic faces and queries, reproducible from one seed.
//!
//! Real face feature vectors are not uniform noise: faces of one person (or of similar
//! people) lie close together. The generator mimics that with `clusters` random unit
//! centroids; a vector is a centroid plus gaussian noise (about 0.6 of the centroid's length),
//! normalised to unit length, so that two vectors of one cluster have a cosine near 0.7 and
//! vectors of different clusters near 0. Queries are drawn the same way from a separate
//! stream: similar to stored faces, never identical to one.
//!
//! Every vector is a pure function of (seed, stream, index), so that a gallery can be built
//! batch by batch without the harness keeping its own copy of it, and so that the in-process
//! and the HTTP galleries of one size hold exactly the same faces.
//!
//! Metadata: `bucket` is `id % 10` (a `set: [3]` filter on it keeps 10% of the gallery) and
//! `cam` is `cam{id % 50}` (a dictionary-coded string column, stored but not filtered on).

use facedb::schema::{MetaValue, Schema};
use facedb::store::Face;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;

/// The schema of the bench gallery, as YAML (the server reads it from a file).
pub const SCHEMA_YAML: &str = "- {id: 1, name: bucket, field_type: unsigned, default: 0}\n\
                               - {id: 2, name: cam, field_type: string, default: ''}\n";

/// `bucket` takes values `0..BUCKETS`; filtering on one keeps `1/BUCKETS` of the faces.
pub const BUCKETS: u64 = 10;
/// `cam` takes `CAMS` distinct values.
pub const CAMS: u64 = 50;

/// Length of the noise added to a (unit) centroid.
const NOISE: f32 = 0.6;

/// Streams of the generator: stored faces and queries never share a vector.
const FACES: u64 = 1;
const QUERIES: u64 = 2;

pub fn schema() -> anyhow::Result<Schema> {
    Schema::from_yaml(SCHEMA_YAML, "bench").map_err(anyhow::Error::msg)
}

pub fn bucket(id: u64) -> u64 {
    id % BUCKETS
}

pub fn cam(id: u64) -> String {
    format!("cam{}", id % CAMS)
}

/// The metadata filter of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum MetaFilter {
    /// Every face is a candidate.
    None,
    /// `bucket` in `[3]`: 10% of the faces are candidates.
    TenPercent,
}

impl MetaFilter {
    pub fn label(self) -> &'static str {
        match self {
            MetaFilter::None => "none",
            MetaFilter::TenPercent => "10% (bucket)",
        }
    }
}

/// The body of a top-`limit` similarity search for `vector`, best score first.
pub fn search_body(vector: &[f32], limit: usize, filter: MetaFilter) -> serde_json::Value {
    let facen = serde_json::json!({ "data": facedb::facen::encode(vector) });
    let filter = match filter {
        MetaFilter::None => serde_json::json!({ "facen": facen }),
        MetaFilter::TenPercent => serde_json::json!({ "facen": facen, "meta": { "bucket": { "set": [3] } } }),
    };
    serde_json::json!({ "limit": limit, "sort": "-score", "filter": filter })
}

/// A `faces/add` body for `faces`, written directly (all values are numbers, base64 and
/// `camN`, none needs escaping).
pub fn add_body(faces: &[Face]) -> String {
    use std::fmt::Write as _;
    let per_face = faces.first().map_or(0, |f| f.vector.len() * 4 * 4 / 3 + 80);
    let mut body = String::with_capacity(faces.len() * per_face + 2);
    body.push('[');
    for (i, face) in faces.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(
            body,
            r#"{{"id":{},"facen":"{}","meta":{{"bucket":{},"cam":"{}"}}}}"#,
            face.id,
            facedb::facen::encode(&face.vector),
            bucket(face.id),
            cam(face.id)
        );
    }
    body.push(']');
    body
}

/// The deterministic vector source.
pub struct DataGen {
    seed: u64,
    dim: usize,
    clusters: usize,
    /// `clusters` unit vectors, row-major.
    centroids: Vec<f32>,
}

impl DataGen {
    pub fn new(seed: u64, dim: usize, clusters: usize) -> DataGen {
        let clusters = clusters.max(1);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix(seed, 0, 0));
        let mut centroids = Vec::with_capacity(clusters * dim);
        for _ in 0..clusters {
            let mut c = gaussian_vector(&mut rng, dim, 1.0);
            normalise(&mut c);
            centroids.extend_from_slice(&c);
        }
        DataGen { seed, dim, clusters, centroids }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn vector(&self, stream: u64, index: u64) -> Vec<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix(self.seed, stream, index));
        let cluster = rng.random_range(0..self.clusters);
        let centroid = &self.centroids[cluster * self.dim..(cluster + 1) * self.dim];
        let sigma = NOISE / (self.dim as f32).sqrt();
        let mut v = gaussian_vector(&mut rng, self.dim, sigma);
        for (x, c) in v.iter_mut().zip(centroid) {
            *x += c;
        }
        normalise(&mut v);
        v
    }

    /// The stored face with this id.
    pub fn face(&self, id: u64) -> Face {
        Face {
            id,
            vector: self.vector(FACES, id),
            meta: vec![MetaValue::Unsigned(bucket(id)), MetaValue::String(cam(id))],
        }
    }

    /// Faces `ids`, generated on all cores.
    pub fn faces(&self, ids: std::ops::Range<u64>) -> Vec<Face> {
        ids.into_par_iter().map(|id| self.face(id)).collect()
    }

    /// The `i`-th query vector.
    pub fn query(&self, i: u64) -> Vec<f32> {
        self.vector(QUERIES, i)
    }
}

/// One 64-bit seed from (seed, stream, index), well mixed (SplitMix64 finaliser).
fn mix(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `dim` independent N(0, sigma²) values (Box–Muller).
fn gaussian_vector(rng: &mut Xoshiro256PlusPlus, dim: usize, sigma: f32) -> Vec<f32> {
    let mut v = Vec::with_capacity(dim + 1);
    while v.len() < dim {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
        v.push((r * cos) as f32 * sigma);
        v.push((r * sin) as f32 * sigma);
    }
    v.truncate(dim);
    v
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn reproducible_and_clustered() {
        let gen = DataGen::new(7, 128, 4);
        assert_eq!(gen.face(12), DataGen::new(7, 128, 4).face(12));
        assert_ne!(gen.face(12).vector, gen.query(12));
        // With 4 clusters many pairs share one: the best match of a query is close.
        let best = (0..200).map(|id| cosine(&gen.query(0), &gen.face(id).vector)).fold(f32::MIN, f32::max);
        assert!(best > 0.5, "best cosine {best}");
        assert!(best < 0.999, "a query is never a stored vector");
    }
}
