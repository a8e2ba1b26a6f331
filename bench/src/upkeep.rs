//! `facedb-bench index-upkeep`: how a gallery's HNSW graph keeps up with it (issue 5),
//! in-process, on the engine's own indexer thread.
//!
//! 1. **Build as at a restart.** Loads `--count` faces of a dataset into a fresh engine whose
//!    galleries get a graph only once they hold that many faces, then times the one build that
//!    follows. That is the build a restart runs: the graph is not saved (docs/storage.md), and a
//!    gallery loaded whole gets one build of all its faces.
//! 2. **Steady writes.** For each `--rates` value, adds new faces (the dataset's vectors again,
//!    under new ids) at that rate for `--seconds`, a batch every [`TICK`], while a sampler reads
//!    the index's tail (faces written but not in the graph yet, which searches scan exactly)
//!    every [`TICK`]. Reports the tail's largest and mean size, and how long it took to drain
//!    once the writes stopped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use facedb::durable::Database;
use facedb::engine::{Engine, EngineConfig};
use facedb::index::{IndexParams, IndexSettings};
use facedb::store::Face;

use crate::backend::{engine_face, schema};
use crate::dataset::Dataset;
use crate::machine;
use crate::progress::Progress;

/// How often a batch is added and the tail sampled.
const TICK: Duration = Duration::from_millis(20);
const GALLERY: &str = "upkeep";

#[derive(Args)]
pub struct UpkeepArgs {
    /// A dataset directory under --data-root, by name (`facedb-bench prepare` writes them).
    #[arg(long, value_name = "NAME", default_value = "cone-d128-n1000000-s42")]
    dataset: String,
    /// Where datasets live [default: target/bench-data].
    #[arg(long, value_name = "DIR")]
    data_root: Option<PathBuf>,
    /// Faces loaded before the build [default: the whole dataset].
    #[arg(long)]
    count: Option<usize>,
    /// The graph's M.
    #[arg(long, default_value_t = 48)]
    m: usize,
    /// The graph's ef_construction.
    #[arg(long, default_value_t = 400)]
    ef_construction: usize,
    /// Steady write rates to try, faces per second, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "FACES/S,...", default_values_t = [500, 1000, 2000, 4000])]
    rates: Vec<usize>,
    /// How long each rate runs.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

/// One steady-write run.
struct RateRun {
    rate: usize,
    added: usize,
    achieved: f64,
    tail_max: usize,
    tail_mean: f64,
    /// From the last write to an empty tail; `None` if it did not drain within the limit.
    drained_s: Option<f64>,
}

pub fn run(args: UpkeepArgs, command: String) -> Result<()> {
    let root = args.data_root.clone().unwrap_or_else(machine::default_data_root);
    let dataset = Dataset::load(&root.join(&args.dataset))?;
    let count = args.count.unwrap_or(dataset.count());
    if count == 0 || count > dataset.count() {
        bail!("--count must be from 1 to the dataset's {} faces", dataset.count());
    }
    let params = IndexParams { m: args.m, ef_construction: args.ef_construction, ..IndexParams::default() };
    if let Err((param, value, range)) = params.check() {
        bail!("--{}: {value} is not {range}", param.replace('_', "-"));
    }
    let config = EngineConfig {
        facen_size: dataset.dim(),
        index: IndexSettings { params, min_faces: count, ..IndexSettings::default() },
        ..EngineConfig::default()
    };
    let engine = Database::in_memory(schema()?, config)?;
    engine.create_gallery(GALLERY)?;
    let schema = engine.schema();
    let face = |id: u64| {
        engine_face(
            &schema,
            id,
            dataset.vector(id as usize % dataset.count()),
            &dataset.meta[id as usize % dataset.count()],
        )
    };

    let started = Instant::now();
    {
        let progress = Progress::new(format!("loading {count} faces"), count);
        for start in (0..count).step_by(10_000) {
            let end = (start + 10_000).min(count);
            let batch = (start..end).map(|id| face(id as u64)).collect::<Result<Vec<Face>>>()?;
            engine.add_faces(GALLERY, batch)?;
            progress.inc(end - start);
        }
    }
    let loaded = Instant::now();
    eprintln!("loaded {count} faces in {:.1} s; waiting for the graph", started.elapsed().as_secs_f64());
    wait_drained(&engine, count, Duration::from_secs(7200), true)?;
    let build_s = loaded.elapsed().as_secs_f64();
    let status = engine.index_status(GALLERY)?;
    eprintln!("graph of {count} faces built in {build_s:.1} s: {}", serde_json::to_string(&status)?);

    let mut runs = Vec::new();
    let mut next_id = count as u64;
    for &rate in &args.rates {
        let run = steady(&engine, &face, &mut next_id, rate, Duration::from_secs(args.seconds))?;
        eprintln!(
            "{} faces/s asked, {:.0} done: tail max {}, mean {:.0}, drained {}",
            run.rate,
            run.achieved,
            run.tail_max,
            run.tail_mean,
            run.drained_s.map_or_else(|| "not within 10 min".to_owned(), |s| format!("in {s:.2} s"))
        );
        runs.push(run);
    }

    let machine = machine::Machine::describe();
    println!("# Index upkeep\n");
    println!(
        "`{command}` on {}: {} cores, {}, commit {}.\n",
        machine::now_utc(),
        machine.nproc,
        machine.cpu_model.as_deref().unwrap_or("unknown CPU"),
        machine::commit(&machine::repo_root()).unwrap_or_else(|| "?".to_owned())
    );
    println!(
        "Graph M {} ef_construction {}; {} × {}-d faces of {}.\n",
        args.m,
        args.ef_construction,
        count,
        dataset.dim(),
        args.dataset
    );
    println!("- Build of all {count} faces at once (as at a restart): **{build_s:.1} s**.");
    let bytes_per_face = status.graph.map_or(0, |g| g.bytes_per_face);
    println!("- Graph memory: {bytes_per_face} bytes per face.\n");
    println!("Steady writes, {} s per rate, a batch every {} ms:\n", args.seconds, TICK.as_millis());
    println!("| faces/s asked | faces/s done | added | tail max | tail mean | drained after the writes |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        println!(
            "| {} | {:.0} | {} | {} | {:.0} | {} |",
            r.rate,
            r.achieved,
            r.added,
            r.tail_max,
            r.tail_mean,
            r.drained_s.map_or_else(|| "no (10 min)".to_owned(), |s| format!("{s:.2} s"))
        );
    }
    Ok(())
}

/// Adds faces at `rate` per second for `length` while sampling the tail.
fn steady(
    engine: &Database,
    face: &dyn Fn(u64) -> Result<Face>,
    next_id: &mut u64,
    rate: usize,
    length: Duration,
) -> Result<RateRun> {
    let per_tick = rate as f64 * TICK.as_secs_f64();
    let started = Instant::now();
    let (mut owed, mut added, mut tails) = (0.0f64, 0usize, Vec::new());
    let mut tick = started;
    while started.elapsed() < length {
        owed += per_tick;
        let n = owed.floor() as usize;
        owed -= n as f64;
        if n > 0 {
            let batch = (*next_id..*next_id + n as u64).map(face).collect::<Result<Vec<Face>>>()?;
            *next_id += n as u64;
            engine.add_faces(GALLERY, batch).context("a steady add")?;
            added += n;
        }
        tails.push(tail(engine)?);
        tick += TICK;
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let achieved = added as f64 / started.elapsed().as_secs_f64();
    let stopped = Instant::now();
    let total = engine.gallery_size(GALLERY)?;
    let drained = wait_drained(engine, total, Duration::from_secs(600), false).is_ok();
    let tail_max = tails.iter().copied().max().unwrap_or(0);
    let tail_mean = tails.iter().sum::<usize>() as f64 / tails.len().max(1) as f64;
    Ok(RateRun {
        rate,
        added,
        achieved,
        tail_max,
        tail_mean,
        drained_s: drained.then(|| stopped.elapsed().as_secs_f64()),
    })
}

/// Faces written but not in the graph (all of them while there is no graph).
fn tail(engine: &Engine) -> Result<usize> {
    let status = engine.index_status(GALLERY)?;
    Ok(match status.graph {
        Some(graph) => graph.tail,
        None => engine.gallery_size(GALLERY)?,
    })
}

/// Waits until the graph holds all `faces` and the tail is empty.
fn wait_drained(engine: &Engine, faces: usize, limit: Duration, show: bool) -> Result<()> {
    let started = Instant::now();
    let mut progress = show.then(|| Progress::new("building the graph", faces));
    loop {
        let graph = engine.index_status(GALLERY)?.graph;
        if graph.is_some_and(|g| g.live == faces && g.tail == 0) {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("the graph does not hold the {faces} faces after {limit:?}: {graph:?}");
        }
        if let Some(progress) = progress.as_mut() {
            progress.update(graph.map_or(0, |g| g.live));
        }
        std::thread::sleep(TICK);
    }
}
