//! In-process measurements: the library's [`Engine`] called directly, no HTTP, no JSON on
//! the timed path.
//!
//! The gallery is loaded with `add_faces` in batches of [`BATCH`]. Search bodies are parsed
//! into [`Query`]s before the clock starts, so a timing is exactly one `engine.search` call:
//! snapshot, filter, score, top-k, and the copy of the `limit` hits.
//!
//! Where a search runs decides how many cores it gets: the engine scans galleries of 65,536
//! faces or more with rayon's `par_iter`, on the pool of whatever thread calls it. Called
//! inside a one-thread pool's `install`, a search is pinned to one core; called from an
//! ordinary thread, it uses rayon's global pool (one thread per core).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use facedb::durable::Database;
use facedb::engine::{Engine, EngineConfig};
use facedb::search::parse::parse_query;
use facedb::search::Query;
use facedb::store::Face;

use super::data::{self, DataGen, MetaFilter};
use crate::progress::Progress;

/// The gallery every measurement uses.
pub const GALLERY: &str = "bench";
/// Faces per `add_faces` call (and per HTTP request) while loading.
pub const BATCH: usize = 10_000;
const MAX_SEARCH_LIMIT: usize = 10_000;

/// A fresh engine with the bench schema and an empty gallery.
pub fn new_engine(dim: usize) -> Result<Arc<Database>> {
    let config = EngineConfig { facen_size: dim, max_search_limit: MAX_SEARCH_LIMIT, ..EngineConfig::default() };
    let engine = Database::in_memory(data::schema()?, config)?;
    engine.create_gallery(GALLERY)?;
    Ok(engine)
}

/// Adds faces `0..size`; returns the time spent in `add_faces` (generation excluded).
pub fn load(engine: &Database, gen: &DataGen, size: usize) -> Result<Duration> {
    let mut progress = Progress::new(format!("loading {size} faces in-process"), size);
    let mut adding = Duration::ZERO;
    let mut done = 0;
    while done < size {
        let end = (done + BATCH).min(size);
        let faces = gen.faces(done as u64..end as u64);
        let started = Instant::now();
        engine.add_faces(GALLERY, faces).context("adding a batch of faces")?;
        adding += started.elapsed();
        done = end;
        progress.update(done);
    }
    Ok(adding)
}

/// Queries `0..count` as parsed searches.
pub fn queries(engine: &Engine, gen: &DataGen, count: usize, limit: usize, filter: MetaFilter) -> Result<Vec<Query>> {
    (0..count as u64)
        .map(|i| {
            let body = data::search_body(&gen.query(i), limit, filter);
            Ok(parse_query(&body, &engine.schema(), gen.dim(), MAX_SEARCH_LIMIT)?)
        })
        .collect()
}

/// The ids a search finds, best first.
pub fn search_ids(engine: &Engine, query: &Query) -> Result<Vec<u64>> {
    Ok(engine.search(GALLERY, query)?.0.into_iter().map(|hit| hit.face.id).collect())
}

/// Times each of `queries` after running the first `warmup` of them untimed. With a
/// `pool`, the searches run inside it.
pub fn time_searches(
    engine: &Engine,
    queries: &[Query],
    warmup: usize,
    pool: Option<&rayon::ThreadPool>,
) -> Result<Vec<Duration>> {
    let run = || -> Result<Vec<Duration>> {
        for query in queries.iter().cycle().take(warmup) {
            engine.search(GALLERY, query)?;
        }
        let mut timings = Vec::with_capacity(queries.len());
        for query in queries {
            let started = Instant::now();
            let hits = engine.search(GALLERY, query)?;
            timings.push(started.elapsed());
            std::hint::black_box(hits);
        }
        Ok(timings)
    };
    match pool {
        Some(pool) => pool.install(run),
        None => run(),
    }
}

/// Checks that a stored face is found first, with score 1, when searched with its own vector.
pub fn check_exact_match(engine: &Engine, gen: &DataGen, id: u64) -> Result<()> {
    let face: Face = gen.face(id);
    let body = data::search_body(&face.vector, 1, MetaFilter::None);
    let query = parse_query(&body, &engine.schema(), gen.dim(), MAX_SEARCH_LIMIT)?;
    let (hits, _) = engine.search(GALLERY, &query)?;
    match hits.first() {
        Some(hit) if hit.face.id == id && hit.score.is_some_and(|s| s > 0.9999) => Ok(()),
        other => {
            let found = other.map(|hit| (hit.face.id, hit.score));
            anyhow::bail!("searching face {id} by its own vector found (id, score) {found:?}")
        }
    }
}
