//! Datasets that look like faces, generated once from a seed and reused.
//!
//! A dataset is a directory in the format shared with the Python peers (`bench/peers/`),
//! documented in `docs/benchmarks.md` ("Dataset format"): `manifest.json`, `base.fvecs`
//! (face `i` is row `i`), `queries.fvecs`, `base_meta.jsonl` and, computed later by
//! `truth.rs`, `truth/*.ivecs` + `truth/*.scores.fvecs`.
//!
//! Two kinds of data:
//!
//! - **cone**: real face embeddings live in a narrow cone, two different people still score
//!   ≈0.6–0.85 and two photos of one person ≈0.95. Every identity's centroid is
//!   `α·c + √(1−α²)·u`: a common unit direction `c` shared by all, `α` drawn per identity in
//!   [`ALPHA_MIN`, `ALPHA_MAX`], and `u` a random unit direction orthogonal to `c`, so two
//!   centroids have a cosine of about `α₁·α₂`. A sample is its centroid plus gaussian noise of
//!   length [`CONE_NOISE`], renormalised, which puts same-identity pairs at about
//!   `1 / (1 + CONE_NOISE²)` ≈ 0.95. Faces are interleaved: face `i` is a sample of identity
//!   `i % identities`. Queries are fresh samples of identities drawn at random.
//! - **uniform**: every face and every query independently uniform on the unit sphere, the
//!   hard case for approximate indexes (neighbours are barely closer than anyone else).
//!
//! Metadata per face, independent of its vector: `bucket` uniform in 0..999 (a `range [0, 9]`
//! filter keeps 1%), `cam_id` `cam-<n>` with n uniform in 0..99, `tags` each of [`TAGS`] with
//! probability 0.2.
//!
//! Every value is a pure function of (seed, stream, index), so generation runs on all cores
//! in blocks and gives the same bytes whatever the block size. A directory is written under
//! a temporary name and renamed into place, so a dataset is either whole or absent.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::progress::Progress;
use crate::vecs::{self, AtomicFile};

/// The version of the directory format (`manifest.json`'s `format_version`).
pub const FORMAT_VERSION: u32 = 1;
/// The version of this generator: a dataset written by another version is regenerated.
pub const GENERATOR_VERSION: u32 = 1;
/// Ids per query in `truth/*.ivecs`.
pub const K_TRUTH: usize = 100;

/// `bucket` takes values `0..BUCKETS`.
pub const BUCKETS: u64 = 1000;
/// `cam_id` takes values `cam-0` .. `cam-{CAMERAS-1}`.
pub const CAMERAS: u64 = 100;
/// The vocabulary of `tags`; each tag is on a face with probability [`TAG_PROBABILITY`].
pub const TAGS: [&str; 6] = ["beard", "glasses", "hat", "mask", "night", "outdoor"];
const TAG_PROBABILITY: f64 = 0.2;

/// The range of the weight of the common direction in a cone centroid.
pub const ALPHA_MIN: f64 = 0.80;
pub const ALPHA_MAX: f64 = 0.95;
/// The length of the gaussian noise added to a (unit) centroid in the cone kind.
pub const CONE_NOISE: f64 = 0.229;

/// The schema of the bench galleries, as YAML (the server reads it from a file).
pub const SCHEMA_YAML: &str = "- {id: 1, name: bucket, field_type: unsigned, default: 0}\n\
                               - {id: 2, name: cam_id, field_type: string, default: ''}\n\
                               - {id: 3, name: tags, field_type: 'set[string]', default: []}\n";

/// Streams of the generator: no two kinds of values share random numbers.
const STREAM_COMMON: u64 = 1;
const STREAM_CENTROID: u64 = 2;
const STREAM_FACE: u64 = 3;
const STREAM_META: u64 = 4;
const STREAM_QUERY: u64 = 5;
const STREAM_PAIRS: u64 = 6;

/// Faces generated (in parallel) per block before they are written.
const BLOCK: usize = 65_536;
/// Pairs sampled to measure the cosines written to the manifest.
const MEASURED_PAIRS: usize = 4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Face-like: identities around centroids that share a common direction.
    Cone,
    /// Independent uniform random unit vectors (faces and queries).
    Uniform,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cone => "cone",
            Kind::Uniform => "uniform",
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    pub kind: Kind,
    pub dim: usize,
    pub count: usize,
    /// Cone only (uniform has one vector per identity).
    pub samples_per_identity: usize,
    pub queries: usize,
    pub seed: u64,
}

/// The defaults that do not appear in a dataset's name.
pub const DEFAULT_SAMPLES_PER_IDENTITY: usize = 10;
pub const DEFAULT_QUERIES: usize = 1000;
pub const DEFAULT_SEED: u64 = 42;

impl DatasetSpec {
    pub fn identities(&self) -> usize {
        match self.kind {
            Kind::Cone => self.count.div_ceil(self.samples_per_identity.max(1)).max(1),
            Kind::Uniform => self.count,
        }
    }

    pub fn samples(&self) -> usize {
        match self.kind {
            Kind::Cone => self.samples_per_identity,
            Kind::Uniform => 1,
        }
    }

    /// `cone-d128-n20000-s42`, with `-spi<S>` / `-q<Q>` when they are not the defaults.
    pub fn name(&self) -> String {
        let mut name = format!("{}-d{}-n{}-s{}", self.kind.name(), self.dim, self.count, self.seed);
        if self.kind == Kind::Cone && self.samples_per_identity != DEFAULT_SAMPLES_PER_IDENTITY {
            let _ = write!(name, "-spi{}", self.samples_per_identity);
        }
        if self.queries != DEFAULT_QUERIES {
            let _ = write!(name, "-q{}", self.queries);
        }
        name
    }

    pub fn check(&self) -> Result<()> {
        if !(2..=65_536).contains(&self.dim) {
            bail!("dataset dimension {} is out of range (2 to 65536)", self.dim);
        }
        if self.count == 0 || self.count > i32::MAX as usize {
            bail!("dataset size {} is out of range (1 to {})", self.count, i32::MAX);
        }
        if self.queries == 0 {
            bail!("a dataset needs at least one query");
        }
        if self.kind == Kind::Cone && self.samples_per_identity == 0 {
            bail!("samples per identity must be at least 1");
        }
        Ok(())
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub kind: Kind,
    pub dim: usize,
    pub count: usize,
    pub identities: usize,
    pub samples_per_identity: usize,
    pub queries: usize,
    pub seed: u64,
    pub k_truth: usize,
    pub metric: String,
    /// How the data was made (the harness's own details).
    pub generator: GeneratorInfo,
    /// Cosines measured on the written data.
    pub measured: MeasuredCosines,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorInfo {
    pub program: String,
    pub version: u32,
    pub description: String,
    /// Cone: the length of the noise added to a unit centroid.
    pub noise_length: Option<f64>,
    /// Cone: the range of the common direction's weight in a centroid.
    pub alpha_range: Option<[f64; 2]>,
    pub queries: String,
    pub face_to_identity: String,
    pub metadata: MetadataInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataInfo {
    pub schema_yaml: String,
    pub bucket: String,
    pub cam_id: String,
    pub tags: String,
}

/// Mean and 5th/95th percentiles of cosines of sampled pairs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CosineStats {
    pub pairs: usize,
    pub mean: f64,
    pub p05: f64,
    pub p95: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasuredCosines {
    /// Two stored samples of one identity (cone only).
    pub same_identity: Option<CosineStats>,
    /// Two stored faces of different identities.
    pub different_identity: CosineStats,
    /// A query and a stored sample of its identity (cone only).
    pub query_to_own_identity: Option<CosineStats>,
}

impl Manifest {
    /// Whether the dataset on disk is what `spec` asks for.
    pub fn matches(&self, spec: &DatasetSpec) -> bool {
        self.format_version == FORMAT_VERSION
            && self.generator.version == GENERATOR_VERSION
            && self.kind == spec.kind
            && self.dim == spec.dim
            && self.count == spec.count
            && self.samples_per_identity == spec.samples()
            && self.identities == spec.identities()
            && self.queries == spec.queries
            && self.seed == spec.seed
            && self.k_truth == K_TRUTH
            && self.metric == "ip"
    }
}

/// Metadata of one face, as in `base_meta.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaceMeta {
    pub bucket: u64,
    pub cam_id: String,
    pub tags: Vec<String>,
}

/// A dataset in memory.
pub struct Dataset {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// `count × dim`, row-major; face `i` is row `i`.
    pub base: Vec<f32>,
    /// `queries × dim`, row-major.
    pub queries: Vec<f32>,
    pub meta: Vec<FaceMeta>,
}

impl Dataset {
    pub fn dim(&self) -> usize {
        self.manifest.dim
    }

    pub fn count(&self) -> usize {
        self.manifest.count
    }

    pub fn query_count(&self) -> usize {
        self.manifest.queries
    }

    pub fn vector(&self, id: usize) -> &[f32] {
        &self.base[id * self.dim()..(id + 1) * self.dim()]
    }

    pub fn query(&self, index: usize) -> &[f32] {
        &self.queries[index * self.dim()..(index + 1) * self.dim()]
    }

    /// Reads a dataset directory and checks its files against its manifest.
    pub fn load(dir: &Path) -> Result<Dataset> {
        let manifest = read_manifest(dir)?;
        let progress = Progress::new(format!("loading dataset {}", manifest.name), manifest.count * 2);
        let (dim, base) = vecs::read_fvecs_matrix(&dir.join("base.fvecs"))?;
        progress.inc(manifest.count);
        if dim != manifest.dim || base.len() != manifest.count * manifest.dim {
            bail!(
                "{}: base.fvecs holds {} values of dimension {dim}; the manifest says {} × {}",
                dir.display(),
                base.len(),
                manifest.count,
                manifest.dim
            );
        }
        let (dim, queries) = vecs::read_fvecs_matrix(&dir.join("queries.fvecs"))?;
        if dim != manifest.dim || queries.len() != manifest.queries * manifest.dim {
            bail!(
                "{}: queries.fvecs holds {} values of dimension {dim}; the manifest says {} × {}",
                dir.display(),
                queries.len(),
                manifest.queries,
                manifest.dim
            );
        }
        let meta = read_meta(&dir.join("base_meta.jsonl"), &progress)?;
        drop(progress);
        if meta.len() != manifest.count {
            bail!("{}: base_meta.jsonl has {} lines, expected {}", dir.display(), meta.len(), manifest.count);
        }
        Ok(Dataset { dir: dir.to_owned(), manifest, base, queries, meta })
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a manifest of this harness", path.display()))
}

fn read_meta(path: &Path, progress: &Progress) -> Result<Vec<FaceMeta>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut meta = Vec::new();
    for (number, line) in BufReader::with_capacity(1 << 20, file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let face: FaceMeta =
            serde_json::from_str(&line).with_context(|| format!("{} line {}", path.display(), number + 1))?;
        meta.push(face);
        if meta.len() % 65_536 == 0 {
            progress.inc(65_536);
        }
    }
    Ok(meta)
}

/// The dataset directory for `spec`: reused if its manifest matches and its files are whole,
/// generated (replacing whatever was there) otherwise. Returns the directory and whether it
/// was generated now.
pub fn ensure(root: &Path, spec: &DatasetSpec) -> Result<(PathBuf, bool)> {
    spec.check()?;
    let dir = root.join(spec.name());
    if let Ok(manifest) = read_manifest(&dir) {
        if manifest.matches(spec) && files_are_whole(&dir, &manifest) {
            return Ok((dir, false));
        }
        eprintln!("{}: the dataset on disk does not match; generating it again", dir.display());
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let partial = root.join(format!(".{}.partial-{}", spec.name(), std::process::id()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let written = generate(&partial, spec);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing the old {}", dir.display()))?;
    }
    std::fs::rename(&partial, &dir).with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
    Ok((dir, true))
}

fn files_are_whole(dir: &Path, manifest: &Manifest) -> bool {
    let size = |name: &str| std::fs::metadata(dir.join(name)).map(|m| m.len()).ok();
    let row_bytes = 4 + 4 * manifest.dim as u64;
    size("base.fvecs") == Some(manifest.count as u64 * row_bytes)
        && size("queries.fvecs") == Some(manifest.queries as u64 * row_bytes)
        && size("base_meta.jsonl").is_some()
}

/// Writes every file of the dataset into `dir`.
fn generate(dir: &Path, spec: &DatasetSpec) -> Result<()> {
    let gen = Generator::new(spec);
    let progress = Progress::new(format!("generating dataset {} ({} faces)", spec.name(), spec.count), spec.count);
    let mut base = AtomicFile::create(&dir.join("base.fvecs"))?;
    let mut meta = AtomicFile::create(&dir.join("base_meta.jsonl"))?;
    for start in (0..spec.count).step_by(BLOCK) {
        let end = (start + BLOCK).min(spec.count);
        let block: Vec<(Vec<f32>, String)> = (start..end)
            .into_par_iter()
            .map(|id| -> Result<(Vec<f32>, String)> {
                let line = serde_json::to_string(&gen.face_meta(id)).context("encoding face metadata")?;
                Ok((gen.face_vector(id), line))
            })
            .collect::<Result<_>>()?;
        for (vector, line) in &block {
            vecs::write_f32_row(base.writer(), vector).context("writing base.fvecs")?;
            meta.writer().write_all(line.as_bytes()).context("writing base_meta.jsonl")?;
            meta.writer().write_all(b"\n").context("writing base_meta.jsonl")?;
        }
        progress.inc(end - start);
    }
    base.commit()?;
    meta.commit()?;
    let queries: Vec<Vec<f32>> = (0..spec.queries).into_par_iter().map(|j| gen.query(j).0).collect();
    vecs::write_fvecs(&dir.join("queries.fvecs"), queries.iter().map(Vec::as_slice))?;
    let manifest = gen.manifest();
    let mut file = AtomicFile::create(&dir.join("manifest.json"))?;
    let text = serde_json::to_string_pretty(&manifest).context("encoding the manifest")?;
    file.writer().write_all(text.as_bytes()).context("writing manifest.json")?;
    file.commit()
}

/// The deterministic source of every vector and metadata value of a dataset.
pub struct Generator {
    spec: DatasetSpec,
    identities: usize,
    /// Cone: `identities × dim` unit centroids, row-major.
    centroids: Vec<f64>,
}

impl Generator {
    pub fn new(spec: &DatasetSpec) -> Generator {
        let dim = spec.dim;
        let identities = spec.identities();
        let centroids = match spec.kind {
            Kind::Uniform => Vec::new(),
            Kind::Cone => {
                let mut rng = rng_for(spec.seed, STREAM_COMMON, 0);
                let mut common = gaussian_vector(&mut rng, dim, 1.0);
                normalise(&mut common);
                let common = &common;
                let rows: Vec<Vec<f64>> = (0..identities)
                    .into_par_iter()
                    .map(|identity| {
                        let mut rng = rng_for(spec.seed, STREAM_CENTROID, identity as u64);
                        let alpha = ALPHA_MIN + (ALPHA_MAX - ALPHA_MIN) * rng.random::<f64>();
                        let mut u = gaussian_vector(&mut rng, dim, 1.0);
                        let along = dot(&u, common);
                        u.iter_mut().zip(common).for_each(|(x, c)| *x -= along * c);
                        normalise(&mut u);
                        let beta = (1.0 - alpha * alpha).sqrt();
                        u.iter().zip(common).map(|(x, c)| alpha * c + beta * x).collect()
                    })
                    .collect();
                rows.concat()
            }
        };
        Generator { spec: spec.clone(), identities, centroids }
    }

    fn centroid(&self, identity: usize) -> &[f64] {
        &self.centroids[identity * self.spec.dim..(identity + 1) * self.spec.dim]
    }

    /// A fresh sample of `identity` (cone) drawn from `rng`.
    fn sample(&self, identity: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<f32> {
        let dim = self.spec.dim;
        let mut v = gaussian_vector(rng, dim, CONE_NOISE / (dim as f64).sqrt());
        v.iter_mut().zip(self.centroid(identity)).for_each(|(x, c)| *x += c);
        unit_f32(&mut v)
    }

    pub fn identity_of_face(&self, id: usize) -> usize {
        id % self.identities
    }

    pub fn face_vector(&self, id: usize) -> Vec<f32> {
        let mut rng = rng_for(self.spec.seed, STREAM_FACE, id as u64);
        match self.spec.kind {
            Kind::Cone => self.sample(self.identity_of_face(id), &mut rng),
            Kind::Uniform => unit_f32(&mut gaussian_vector(&mut rng, self.spec.dim, 1.0)),
        }
    }

    pub fn face_meta(&self, id: usize) -> FaceMeta {
        let mut rng = rng_for(self.spec.seed, STREAM_META, id as u64);
        let bucket = rng.random_range(0..BUCKETS);
        let cam_id = format!("cam-{}", rng.random_range(0..CAMERAS));
        let tags = TAGS.iter().filter(|_| rng.random::<f64>() < TAG_PROBABILITY).map(|t| (*t).to_owned()).collect();
        FaceMeta { bucket, cam_id, tags }
    }

    /// Query `j` and, for the cone kind, the identity it is a sample of.
    pub fn query(&self, j: usize) -> (Vec<f32>, Option<usize>) {
        let mut rng = rng_for(self.spec.seed, STREAM_QUERY, j as u64);
        match self.spec.kind {
            Kind::Cone => {
                let identity = rng.random_range(0..self.identities);
                (self.sample(identity, &mut rng), Some(identity))
            }
            Kind::Uniform => (unit_f32(&mut gaussian_vector(&mut rng, self.spec.dim, 1.0)), None),
        }
    }

    /// Cosines of sampled pairs of the data as generated.
    pub fn measure(&self) -> MeasuredCosines {
        let spec = &self.spec;
        let mut rng = rng_for(spec.seed, STREAM_PAIRS, 0);
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum::<f64>();
        let mut different = Vec::with_capacity(MEASURED_PAIRS);
        while different.len() < MEASURED_PAIRS && spec.count > 1 {
            let (a, b) = (rng.random_range(0..spec.count), rng.random_range(0..spec.count));
            if self.identity_of_face(a) != self.identity_of_face(b) {
                different.push(cos(&self.face_vector(a), &self.face_vector(b)));
            }
        }
        let mut same = Vec::new();
        let mut query_to_own = Vec::new();
        if spec.kind == Kind::Cone {
            // Faces `i` and `i + identities` are two samples of one identity.
            if spec.count > self.identities {
                for _ in 0..MEASURED_PAIRS {
                    let a = rng.random_range(0..spec.count - self.identities);
                    same.push(cos(&self.face_vector(a), &self.face_vector(a + self.identities)));
                }
            }
            for j in 0..spec.queries.min(MEASURED_PAIRS) {
                if let (query, Some(identity)) = self.query(j) {
                    // Face `identity` is the identity's first sample (it exists: identity < count).
                    query_to_own.push(cos(&query, &self.face_vector(identity)));
                }
            }
        }
        MeasuredCosines {
            same_identity: cosine_stats(same),
            different_identity: cosine_stats(different).unwrap_or(CosineStats {
                pairs: 0,
                mean: 0.0,
                p05: 0.0,
                p95: 0.0,
            }),
            query_to_own_identity: cosine_stats(query_to_own),
        }
    }

    pub fn manifest(&self) -> Manifest {
        let spec = &self.spec;
        let cone = spec.kind == Kind::Cone;
        let description = if cone {
            "cone: identity centroids alpha*c + sqrt(1-alpha^2)*u (c a common unit direction, alpha uniform in \
             alpha_range, u a random unit direction orthogonal to c); a sample is its centroid plus gaussian noise \
             of length noise_length, renormalised"
        } else {
            "uniform: every face independently uniform on the unit sphere (normalised gaussian vectors)"
        };
        Manifest {
            format_version: FORMAT_VERSION,
            name: spec.name(),
            kind: spec.kind,
            dim: spec.dim,
            count: spec.count,
            identities: self.identities,
            samples_per_identity: spec.samples(),
            queries: spec.queries,
            seed: spec.seed,
            k_truth: K_TRUTH,
            metric: "ip".to_owned(),
            generator: GeneratorInfo {
                program: "facedb-bench".to_owned(),
                version: GENERATOR_VERSION,
                description: description.to_owned(),
                noise_length: cone.then_some(CONE_NOISE),
                alpha_range: cone.then_some([ALPHA_MIN, ALPHA_MAX]),
                queries: if cone {
                    "fresh samples (new noise) of identities drawn uniformly at random".to_owned()
                } else {
                    "independent uniform random unit vectors".to_owned()
                },
                face_to_identity: if cone {
                    "face i is a sample of identity i % identities".to_owned()
                } else {
                    "every face is its own identity".to_owned()
                },
                metadata: MetadataInfo {
                    schema_yaml: SCHEMA_YAML.to_owned(),
                    bucket: format!("unsigned, uniform in 0..{} (range [0, n-1] keeps n/{BUCKETS})", BUCKETS - 1),
                    cam_id: format!("string cam-<n>, n uniform in 0..{}", CAMERAS - 1),
                    tags: format!("set[string]: each of {TAGS:?} with probability {TAG_PROBABILITY}"),
                },
            },
            measured: self.measure(),
        }
    }
}

fn cosine_stats(mut sample: Vec<f64>) -> Option<CosineStats> {
    if sample.is_empty() {
        return None;
    }
    sample.sort_by(f64::total_cmp);
    let at = |q: f64| sample[((q * (sample.len() - 1) as f64).round() as usize).min(sample.len() - 1)];
    Some(CosineStats {
        pairs: sample.len(),
        mean: sample.iter().sum::<f64>() / sample.len() as f64,
        p05: at(0.05),
        p95: at(0.95),
    })
}

/// A generator seeded from (seed, stream, index), well mixed (SplitMix64 finaliser).
fn rng_for(seed: u64, stream: u64, index: u64) -> Xoshiro256PlusPlus {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    Xoshiro256PlusPlus::seed_from_u64(z ^ (z >> 31))
}

/// `dim` independent N(0, sigma²) values (Box–Muller).
fn gaussian_vector(rng: &mut Xoshiro256PlusPlus, dim: usize, sigma: f64) -> Vec<f64> {
    let mut v = Vec::with_capacity(dim + 1);
    while v.len() < dim {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
        v.push(r * cos * sigma);
        v.push(r * sin * sigma);
    }
    v.truncate(dim);
    v
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalise(v: &mut [f64]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// `v` normalised (in f64), as float32.
fn unit_f32(v: &mut [f64]) -> Vec<f32> {
    normalise(v);
    v.iter().map(|&x| x as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: Kind, count: usize) -> DatasetSpec {
        DatasetSpec { kind, dim: 128, count, samples_per_identity: 10, queries: 50, seed: 7 }
    }

    #[test]
    fn cone_data_has_the_shape_of_faces() {
        let gen = Generator::new(&spec(Kind::Cone, 4000));
        let m = gen.measure();
        let same = m.same_identity.unwrap();
        assert!((0.93..0.97).contains(&same.mean), "{m:?}");
        let different = m.different_identity;
        assert!((0.65..0.80).contains(&different.mean), "{m:?}");
        assert!(different.p05 > 0.55 && different.p95 < 0.9, "{m:?}");
        assert!((0.93..0.97).contains(&m.query_to_own_identity.unwrap().mean), "{m:?}");
        let v = gen.face_vector(3);
        let norm: f64 = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum();
        assert!((norm - 1.0).abs() < 1e-6);
        assert_eq!(v, Generator::new(&spec(Kind::Cone, 4000)).face_vector(3));
    }

    #[test]
    fn uniform_data_is_spread_out() {
        let m = Generator::new(&spec(Kind::Uniform, 1000)).measure();
        assert!(m.same_identity.is_none());
        assert!(m.different_identity.mean.abs() < 0.02, "{m:?}");
    }

    #[test]
    fn written_once_then_reused() {
        let root = tempfile::tempdir().unwrap();
        let small = DatasetSpec { dim: 8, count: 300, queries: 20, ..spec(Kind::Cone, 300) };
        let (dir, generated) = ensure(root.path(), &small).unwrap();
        assert!(generated);
        assert_eq!(dir.file_name().unwrap(), "cone-d8-n300-s7-q20");
        let data = Dataset::load(&dir).unwrap();
        assert_eq!((data.count(), data.dim(), data.query_count()), (300, 8, 20));
        assert_eq!(data.vector(5), Generator::new(&small).face_vector(5).as_slice());
        assert!(data.meta.iter().all(|m| m.bucket < BUCKETS && m.cam_id.starts_with("cam-")));
        assert!(!ensure(root.path(), &small).unwrap().1, "a matching dataset is reused");
        // A damaged file is noticed and the dataset written again.
        std::fs::write(dir.join("queries.fvecs"), b"").unwrap();
        assert!(ensure(root.path(), &small).unwrap().1);
    }
}
