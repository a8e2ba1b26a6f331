//! `facedb-bench durability`: the figures of issue 4 (write-ahead log, snapshots, recovery),
//! measured against the release `facedb serve` process on real data directories.
//!
//! The run, in order:
//!
//! 1. **Bulk ingest per `wal_mode`.** For each mode and each writer count, a fresh server on a
//!    fresh data directory takes `--ingest-faces` faces in batches of `--batch` from `W`
//!    connections at once (closed loop, bodies prepared before the clock starts), as the main
//!    harness's `ingest` workload does. Reported: faces/s, batch latency, and from the status
//!    the log's records and fsyncs (group commit shows as records per fsync above 1 with
//!    several writers), and the log's size on disk per face.
//! 2. **The large run** (`--faces`, 1M by default, in `--large-mode`, fsync by default): a fresh
//!    server ingests every face with the most writers; the log's size is read before any
//!    snapshot (log bytes per face).
//! 3. **Restart from the log only**: SIGTERM, start again on the same directory, time to the
//!    listening line; then the same with the directory's files dropped from the page cache
//!    (`--restarts` times each, alternating).
//! 4. **Snapshot write time**: `POST /v2/admin/snapshot` with nothing else running; its file
//!    size gives the snapshot's bytes per face.
//! 5. **Write stall** (`stall.rs`): one connection adds faces back to back for
//!    `--baseline-seconds` (the baseline), then `--stall-rounds` times while a snapshot is
//!    written; the adds that overlap the snapshot request give the stall figures. This runs in
//!    each of `--stall-modes` (the server restarted on the same data in that mode), the large
//!    run's own mode last: its adds after the last snapshot are the log tail of the next step.
//! 6. **Restart from the snapshot** (plus that tail), warm and cold.
//!
//! Every restart checks that the gallery holds every face added so far. The data directories
//! live under `--out DIR/data` (or `target/bench-data/durability-<pid>`) and are deleted at
//! the end unless `--keep-data`. The data is the main harness's face-like cone dataset with
//! its schema and metadata (`bucket`, `cam_id`, `tags`; `dataset.rs`). The results go to
//! stdout as Markdown and, with `--out`, to `durability.md` and `durability.json`.

mod process;
mod report;
mod stall;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rayon::prelude::*;
use serde_json::Value as Json;

use self::process::{Node, NodeConfig};
use self::report::{
    Disk, IngestRecord, RestartRecord, Results, Settings, SnapshotRecord, StallRecord, Storage, FROM_LOG,
    FROM_SNAPSHOT, NO_SNAPSHOT, OUTSIDE, OVERLAPPING,
};
use crate::backend::add_body;
use crate::client::Client;
use crate::dataset::{self, Dataset, DatasetSpec, Kind, SCHEMA_YAML};
use crate::machine::{self, Machine};
use crate::metrics::{thousands, Latencies};
use crate::progress::Progress;
use crate::server;

/// The gallery every run writes to.
const GALLERY: &str = "durability";
/// Adds run this long before the snapshot request is sent, and after its answer.
const STALL_LEAD: Duration = Duration::from_secs(1);

/// `--wal-mode` of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WalMode {
    /// Nothing is logged: memory only.
    None,
    /// Written to the log (the page cache) before the answer.
    Write,
    /// Written and fdatasync'ed before the answer.
    Fsync,
}

impl WalMode {
    pub fn name(self) -> &'static str {
        match self {
            WalMode::None => "none",
            WalMode::Write => "write",
            WalMode::Fsync => "fsync",
        }
    }
}

#[derive(Args)]
pub struct DurabilityArgs {
    /// Faces of the large run (snapshots, stalls, restarts).
    #[arg(long, default_value_t = 1_000_000)]
    faces: usize,
    /// float32 components per vector.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Faces per ingest request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Faces of each ingest run (per wal_mode and writer count), at most --faces.
    #[arg(long, default_value_t = 200_000)]
    ingest_faces: usize,
    /// wal_modes of the ingest runs, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [WalMode::None, WalMode::Write, WalMode::Fsync])]
    modes: Vec<WalMode>,
    /// Concurrent client connections of the ingest runs, comma-separated; the large run uses
    /// the most.
    #[arg(long, value_delimiter = ',', value_name = "W,...", default_values_t = [1, 4])]
    writers: Vec<usize>,
    /// wal_mode of the large run.
    #[arg(long, value_enum, default_value_t = WalMode::Fsync)]
    large_mode: WalMode,
    /// Faces per add request in the stall measurement.
    #[arg(long, default_value_t = 1)]
    stall_batch: usize,
    /// Snapshots taken while adds run, per stall mode.
    #[arg(long, default_value_t = 3)]
    stall_rounds: usize,
    /// wal_modes the stall is measured in, on the large run's data (the server is restarted in
    /// each), comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [WalMode::Fsync, WalMode::Write])]
    stall_modes: Vec<WalMode>,
    /// Seconds of back-to-back adds without a snapshot (the stall baseline), per stall mode.
    #[arg(long, default_value_t = 5.0)]
    baseline_seconds: f64,
    /// Restarts of each kind (from the log, from a snapshot) and cache state (warm, cold).
    #[arg(long, default_value_t = 2)]
    restarts: usize,
    /// Skip the restarts with the data files dropped from the page cache.
    #[arg(long)]
    no_cold: bool,
    /// Write durability.md and durability.json here; the data directories go to DIR/data.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Where datasets live [default: target/bench-data].
    #[arg(long, value_name = "DIR")]
    data_root: Option<PathBuf>,
    /// Keep the server data directories at the end.
    #[arg(long)]
    keep_data: bool,
    /// Seed of the dataset.
    #[arg(long, default_value_t = dataset::DEFAULT_SEED)]
    seed: u64,
    /// The facedb server binary [default: `facedb` next to this executable].
    #[arg(long, value_name = "PATH")]
    facedb_bin: Option<PathBuf>,
}

/// The server data directories of a run; deleted when dropped unless kept.
struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl RunDir {
    fn fresh(path: PathBuf, keep: bool) -> Result<RunDir> {
        if path.exists() {
            std::fs::remove_dir_all(&path).with_context(|| format!("removing the old {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunDir { path, keep })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// What every server of the run shares.
struct Setup {
    bin: PathBuf,
    dim: usize,
    schema: PathBuf,
    root: PathBuf,
}

impl Setup {
    /// A fresh data directory `label` and how to start a server on it.
    fn node_config(&self, label: &str, wal_mode: WalMode) -> Result<NodeConfig> {
        let data_dir = self.root.join(label);
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).with_context(|| format!("removing {}", data_dir.display()))?;
        }
        Ok(NodeConfig {
            bin: self.bin.clone(),
            data_dir,
            schema: self.schema.clone(),
            dim: self.dim,
            wal_mode,
            log_file: self.root.join(format!("{label}.log")),
        })
    }
}

pub fn run(args: DurabilityArgs, command: String) -> Result<()> {
    let started = Instant::now();
    let date = machine::now_utc();
    let load_at_start = load_average();
    if args.faces == 0 || args.batch == 0 || args.stall_batch == 0 || args.stall_rounds == 0 || args.restarts == 0 {
        bail!("--faces, --batch, --stall-batch, --stall-rounds and --restarts must be at least 1");
    }
    if args.writers.is_empty() || args.writers.contains(&0) || args.modes.is_empty() {
        bail!("give at least one --modes value and --writers counts of at least 1");
    }
    if args.large_mode == WalMode::None || args.stall_modes.contains(&WalMode::None) {
        bail!(
            "--large-mode and --stall-modes cannot be none: the large run restarts from its log, and faces added \
             without a log after the last snapshot would be lost at the next restart"
        );
    }
    let ingest_faces = args.ingest_faces.min(args.faces);
    let large_writers = args.writers.iter().copied().max().unwrap_or(1);
    let bin = server::facedb_bin(args.facedb_bin.as_deref())?;
    let data_root = args.data_root.clone().unwrap_or_else(machine::default_data_root);
    let spec = DatasetSpec {
        kind: Kind::Cone,
        dim: args.dim,
        count: args.faces,
        samples_per_identity: dataset::DEFAULT_SAMPLES_PER_IDENTITY,
        queries: dataset::DEFAULT_QUERIES,
        seed: args.seed,
    };
    let (dir, _) = dataset::ensure(&data_root, &spec)?;
    let data = Dataset::load(&dir)?;

    let root = match &args.out {
        Some(out) => out.join("data"),
        None => data_root.join(format!("durability-{}", std::process::id())),
    };
    let run_dir = RunDir::fresh(root, args.keep_data)?;
    let schema = run_dir.path.join("schema.yaml");
    std::fs::write(&schema, SCHEMA_YAML).with_context(|| format!("writing {}", schema.display()))?;
    let ctx = Setup { bin, dim: args.dim, schema, root: run_dir.path.clone() };
    let disk = describe_disk(&run_dir.path);

    let bodies = prepare_bodies(&data, args.faces, args.batch)?;
    let mut ingest = Vec::new();
    {
        let separate;
        let ingest_bodies: &[String] = if ingest_faces.is_multiple_of(args.batch) || ingest_faces == args.faces {
            &bodies[..ingest_faces.div_ceil(args.batch)]
        } else {
            separate = prepare_bodies(&data, ingest_faces, args.batch)?;
            &separate
        };
        for &mode in &args.modes {
            for &writers in &args.writers {
                let config = ctx.node_config(&format!("ingest-{}-w{writers}", mode.name()), mode)?;
                let node = Node::start(&config)?;
                let record = ingest_into(&node, &config, ingest_bodies, ingest_faces as u64, writers, args.batch)?;
                node.stop()?;
                std::fs::remove_dir_all(&config.data_dir)
                    .with_context(|| format!("removing {}", config.data_dir.display()))?;
                ingest.push(record);
            }
        }
    }

    // The large run: one data directory for the snapshots, the stall and the restarts.
    let config = ctx.node_config("large", args.large_mode)?;
    let node = Node::start(&config)?;
    let mut large = ingest_into(&node, &config, &bodies, args.faces as u64, large_writers, args.batch)?;
    large.large = true;
    drop(bodies);
    let mut faces = args.faces as u64;
    let (log_bytes, log_bytes_per_face) = (large.log_bytes, large.log_bytes_per_face);
    ingest.push(large);

    // Warm and cold alternate, `--restarts` times, so that an effect of the order shows.
    let caches: Vec<bool> =
        (0..args.restarts).flat_map(|_| if args.no_cold { vec![false] } else { vec![false, true] }).collect();
    let mut restarts = Vec::new();
    let mut node = node;
    for &cold in &caches {
        let (restarted, record) = restart(node, &config, FROM_LOG, cold, faces)?;
        node = restarted;
        restarts.push(record);
    }

    let admin = Client::new(node.base_url());
    let idle = timed_snapshot(&admin, args.large_mode.name(), None, "nothing else")?;
    let snapshot_bytes_per_face = idle.bytes_per_face;
    let storage = Storage {
        faces: args.faces as u64,
        log_bytes,
        log_bytes_per_face,
        snapshot_bytes: idle.bytes,
        snapshot_faces: idle.faces,
        snapshot_bytes_per_face,
        vector_bytes_per_face: 4 * args.dim as u64,
    };
    let mut snapshots = vec![idle];

    // The large run's own mode last, so that the log tail of the restarts is written in it.
    let mut stall_modes: Vec<WalMode> = Vec::new();
    for &mode in &args.stall_modes {
        if !stall_modes.contains(&mode) {
            stall_modes.push(mode);
        }
    }
    stall_modes.sort_by_key(|&mode| mode == args.large_mode);
    let mut stalls = Vec::new();
    let mut current = args.large_mode;
    for &mode in &stall_modes {
        if mode != current {
            node.stop()?;
            node = Node::start(&NodeConfig { wal_mode: mode, ..config.clone() })?;
            current = mode;
        }
        let (client, admin) = (Client::new(node.base_url()), Client::new(node.base_url()));
        let plan = StallPlan {
            first_id: faces,
            batch: args.stall_batch,
            baseline_s: args.baseline_seconds,
            rounds: args.stall_rounds,
            wal_mode: mode,
        };
        let (rows, taken, added) = measure_stall(&client, &admin, &data, &plan)?;
        faces += added;
        stalls.extend(rows);
        snapshots.extend(taken);
    }

    for &cold in &caches {
        let (restarted, record) = restart(node, &config, FROM_SNAPSHOT, cold, faces)?;
        node = restarted;
        restarts.push(record);
    }
    node.stop()?;

    let results = Results {
        format: "facedb-bench durability 1",
        command,
        date,
        commit: machine::commit(&machine::repo_root()),
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        machine: Machine::describe(),
        load_average: [load_at_start, load_average()],
        disk,
        settings: Settings {
            dataset: spec.name(),
            schema: "bench",
            dim: args.dim,
            faces: args.faces,
            ingest_faces,
            batch: args.batch,
            modes: args.modes.iter().map(|m| m.name()).collect(),
            writers: args.writers.clone(),
            large_mode: args.large_mode.name(),
            large_writers,
            stall_batch: args.stall_batch,
            stall_rounds: args.stall_rounds,
            stall_modes: stall_modes.iter().map(|m| m.name()).collect(),
            baseline_s: args.baseline_seconds,
            cold_restarts: !args.no_cold,
            restarts: args.restarts,
        },
        ingest,
        storage,
        snapshots,
        stalls,
        restarts,
        wall_s: started.elapsed().as_secs_f64(),
    };
    let markdown = report::markdown(&results);
    print!("{markdown}");
    if let Some(out) = &args.out {
        let md = out.join("durability.md");
        std::fs::write(&md, &markdown).with_context(|| format!("writing {}", md.display()))?;
        let json = out.join("durability.json");
        let text = serde_json::to_string_pretty(&results).context("encoding the results")?;
        std::fs::write(&json, text).with_context(|| format!("writing {}", json.display()))?;
        eprintln!("wrote {} and {}", md.display(), json.display());
    }
    Ok(())
}

/// The `faces/add` bodies of faces `0..count` in batches of `batch`.
fn prepare_bodies(data: &Dataset, count: usize, batch: usize) -> Result<Vec<String>> {
    let ranges: Vec<(usize, usize)> = (0..count).step_by(batch).map(|s| (s, (s + batch).min(count))).collect();
    let progress = Progress::new(format!("preparing {} request bodies of {batch} faces", ranges.len()), ranges.len());
    ranges
        .par_iter()
        .map(|&(start, end)| {
            let body = add_body((start..end).map(|id| (id as u64, data.vector(id), &data.meta[id])));
            progress.inc(1);
            body
        })
        .collect()
}

/// Creates the gallery and sends `bodies` from `writers` connections at once (writer `t` sends
/// bodies `t, t + writers, ...`), timed from the start signal to the last answer.
fn ingest_into(
    node: &Node,
    config: &NodeConfig,
    bodies: &[String],
    faces: u64,
    writers: usize,
    batch: usize,
) -> Result<IngestRecord> {
    let label = format!("ingest {} faces, wal_mode {}, {writers} writer(s)", thousands(faces), config.wal_mode.name());
    Client::new(node.base_url()).create_gallery(GALLERY)?;
    let progress = Progress::new(label.clone(), bodies.len());
    let start = Barrier::new(writers + 1);
    let (began, outcomes) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|t| {
                let (start, progress) = (&start, &progress);
                scope.spawn(move || -> Result<(Latencies, Instant)> {
                    let client = Client::new(node.base_url());
                    let mut latencies = Latencies::new()?;
                    start.wait();
                    for (i, body) in bodies.iter().enumerate().skip(t).step_by(writers) {
                        let sent = Instant::now();
                        client.add(GALLERY, body).with_context(|| format!("ingest batch {i}"))?;
                        latencies.record(sent.elapsed());
                        progress.inc(1);
                    }
                    Ok((latencies, Instant::now()))
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        let outcomes: Vec<Result<(Latencies, Instant)>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a writer panicked"))))
            .collect();
        (began, outcomes)
    });
    drop(progress);
    let mut latencies = Latencies::new()?;
    let mut ended = began;
    for outcome in outcomes {
        let (own, end) = outcome?;
        latencies.merge(&own)?;
        ended = ended.max(end);
    }
    let seconds = ended.duration_since(began).as_secs_f64();
    let status = Client::new(node.base_url()).status()?;
    let records = number(&status, "/wal/records");
    let fsyncs = number(&status, "/wal/fsyncs");
    let log_bytes = process::dir_bytes(&config.data_dir.join("wal"))?;
    let record = IngestRecord {
        wal_mode: config.wal_mode.name(),
        writers,
        faces,
        batch,
        seconds,
        faces_per_s: faces as f64 / seconds.max(1e-9),
        batch_latency: latencies.summary(),
        wal_records: records,
        wal_fsyncs: fsyncs,
        records_per_fsync: match (records, fsyncs) {
            (Some(r), Some(f)) if f > 0 => Some(r as f64 / f as f64),
            _ => None,
        },
        log_bytes,
        log_bytes_per_face: log_bytes as f64 / faces as f64,
        large: false,
    };
    eprintln!(
        "{label}: {:.2} s, {} faces/s; log {} records, {} fsyncs, {:.0} bytes/face",
        seconds,
        thousands(record.faces_per_s.round() as u64),
        records.map_or_else(|| "-".to_owned(), thousands),
        fsyncs.map_or_else(|| "-".to_owned(), thousands),
        record.log_bytes_per_face
    );
    Ok(record)
}

/// Stops `node` (SIGTERM), optionally drops its files from the page cache, and starts the
/// server again on the same directory; checks that the gallery holds `faces` faces.
fn restart(node: Node, config: &NodeConfig, from: &str, cold: bool, faces: u64) -> Result<(Node, RestartRecord)> {
    let stop = node.stop()?;
    if cold {
        process::drop_from_page_cache(&config.data_dir)?;
    }
    let log_bytes = process::dir_bytes(&config.data_dir.join("wal"))?;
    let node = Node::start(config)?;
    let memory = node.memory();
    let status = Client::new(node.base_url()).status()?;
    let found = Client::new(node.base_url()).gallery_size(GALLERY)?;
    if found != faces {
        bail!("after the restart ({from}) the gallery holds {found} faces; {faces} were added");
    }
    let record = RestartRecord {
        from: from.to_owned(),
        cache: if cold { "cold" } else { "warm" },
        faces,
        snapshot_bytes: status
            .pointer("/recovery/snapshot_file")
            .and_then(Json::as_str)
            .and_then(|file| std::fs::metadata(file).ok())
            .map(|m| m.len()),
        log_bytes,
        ready_s: node.ready().as_secs_f64(),
        recovery_s: status.pointer("/recovery/seconds").and_then(Json::as_f64),
        replayed_records: number(&status, "/recovery/replayed_records"),
        snapshot_index: number(&status, "/recovery/snapshot_index"),
        vm_rss_bytes: memory.map(|m| m.vm_rss_bytes),
        vm_hwm_bytes: memory.map(|m| m.vm_hwm_bytes),
        stop_s: stop.as_secs_f64(),
    };
    eprintln!(
        "restart from {from} ({} cache): ready in {:.2} s (recovery {:.2} s, {} records replayed), {} faces",
        record.cache,
        record.ready_s,
        record.recovery_s.unwrap_or(f64::NAN),
        record.replayed_records.map_or_else(|| "-".to_owned(), thousands),
        thousands(faces)
    );
    Ok((node, record))
}

/// `POST /v2/admin/snapshot`, timed; `during` says what else ran.
fn timed_snapshot(
    admin: &Client,
    wal_mode: &'static str,
    round: Option<usize>,
    during: &str,
) -> Result<SnapshotRecord> {
    let sent = Instant::now();
    let answer = admin.snapshot()?;
    let request_s = sent.elapsed().as_secs_f64();
    if answer.get("written").and_then(Json::as_bool) != Some(true) {
        bail!("the snapshot was not written (nothing changed since the last one?): {answer}");
    }
    let field = |name: &str| {
        number(&answer, &format!("/{name}")).with_context(|| format!("the snapshot answer has no {name}: {answer}"))
    };
    let (faces, bytes) = (field("faces")?, field("bytes")?);
    let record = SnapshotRecord {
        wal_mode,
        round,
        during: during.to_owned(),
        index: field("index")?,
        faces,
        bytes,
        bytes_per_face: bytes as f64 / faces.max(1) as f64,
        server_s: answer.get("seconds").and_then(Json::as_f64).context("the snapshot answer has no seconds")?,
        request_s,
    };
    eprintln!(
        "snapshot ({during}): {} faces, {} bytes, {:.2} s in the server, {:.2} s for the request",
        thousands(faces),
        thousands(bytes),
        record.server_s,
        request_s
    );
    Ok(record)
}

/// How the stall is measured.
struct StallPlan {
    first_id: u64,
    batch: usize,
    baseline_s: f64,
    rounds: usize,
    wal_mode: WalMode,
}

/// The baseline (adds without a snapshot for `baseline_s`), then `rounds` times adds while a
/// snapshot is written. Returns the stall rows, the snapshots and the number of faces added.
fn measure_stall(
    client: &Client,
    admin: &Client,
    data: &Dataset,
    plan: &StallPlan,
) -> Result<(Vec<StallRecord>, Vec<SnapshotRecord>, u64)> {
    let (batch, mode) = (plan.batch, plan.wal_mode.name());
    let row = |adds: String, round: Option<usize>, latencies: &[Duration], window_s: f64| -> Result<StallRecord> {
        Ok(StallRecord {
            wal_mode: mode,
            adds,
            round,
            faces_per_add: batch,
            latency: stall::summary(latencies)?,
            window_s,
            longest: Vec::new(),
        })
    };
    let epoch = Instant::now();
    let deadline = epoch + Duration::from_secs_f64(plan.baseline_s);
    let baseline =
        stall::add_back_to_back(client, GALLERY, data, plan.first_id, batch, epoch, || Instant::now() < deadline)?;
    let mut added = (baseline.len() * batch) as u64;
    let all: Vec<Duration> = baseline.iter().map(|t| t.latency).collect();
    let mut rows = vec![row(NO_SNAPSHOT.to_owned(), None, &all, plan.baseline_s)?];
    let (mut snapshots, mut all_during, mut all_outside, mut during_s) = (Vec::new(), Vec::new(), Vec::new(), 0.0);
    for round in 1..=plan.rounds {
        let stop = AtomicBool::new(false);
        let epoch = Instant::now();
        let first_id = plan.first_id + added;
        let (timings, snapshot) = std::thread::scope(|scope| {
            let adder = scope.spawn(|| {
                stall::add_back_to_back(client, GALLERY, data, first_id, batch, epoch, || !stop.load(Ordering::Relaxed))
            });
            let snapshot = (|| -> Result<(SnapshotRecord, stall::Window)> {
                std::thread::sleep(STALL_LEAD);
                let start = epoch.elapsed();
                let during = format!("adds of {batch} face(s) back to back ({mode}), round {round}");
                let record = timed_snapshot(admin, mode, Some(round), &during)?;
                let window = stall::Window { start, end: epoch.elapsed() };
                std::thread::sleep(STALL_LEAD);
                Ok((record, window))
            })();
            stop.store(true, Ordering::Relaxed);
            let timings = adder.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the adding thread panicked")));
            (timings, snapshot)
        });
        let (timings, (snapshot, window)) = (timings?, snapshot?);
        added += (timings.len() * batch) as u64;
        let (during, outside) = stall::split(&timings, window);
        let window_s = (window.end - window.start).as_secs_f64();
        let mut overlapping = row(OVERLAPPING.to_owned(), Some(round), &during, window_s)?;
        overlapping.longest = stall::longest(&timings, window, 5);
        if let Some(s) = &overlapping.latency {
            eprintln!(
                "adds during snapshot {round} ({mode}): {} adds, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                s.count, s.p50_ms, s.p99_ms, s.max_ms
            );
        }
        rows.push(overlapping);
        snapshots.push(snapshot);
        all_during.extend(during);
        all_outside.extend(outside);
        during_s += window_s;
    }
    if plan.rounds > 1 {
        rows.push(row(format!("{OVERLAPPING}s, all {}", plan.rounds), None, &all_during, during_s)?);
    }
    let outside_s = (STALL_LEAD * 2).as_secs_f64() * plan.rounds as f64;
    rows.push(row(OUTSIDE.to_owned(), None, &all_outside, outside_s)?);
    Ok((rows, snapshots, added))
}

/// The first three fields of `/proc/loadavg`.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// An unsigned number at `pointer` of a JSON answer.
fn number(json: &Json, pointer: &str) -> Option<u64> {
    json.pointer(pointer).and_then(Json::as_u64)
}

/// The mount that holds `dir`, from `/proc/mounts`, and whether its disk says it rotates.
fn describe_disk(dir: &Path) -> Disk {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mount = mount_of(&mounts, &canonical);
    let rotational = mount.as_ref().and_then(|m| rotational(&m.device));
    Disk {
        data_root: canonical.display().to_string(),
        device: mount.as_ref().map(|m| m.device.clone()),
        mount_point: mount.as_ref().map(|m| m.mount_point.clone()),
        filesystem: mount.as_ref().map(|m| m.filesystem.clone()),
        mount_options: mount.as_ref().map(|m| m.options.clone()),
        rotational,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    device: String,
    mount_point: String,
    filesystem: String,
    options: String,
}

/// The entry of a `/proc/mounts` text with the longest mount point that contains `path`.
fn mount_of(mounts: &str, path: &Path) -> Option<Mount> {
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [device, mount_point, filesystem, options, ..] = fields[..] else { return None };
            path.starts_with(mount_point).then(|| Mount {
                device: device.to_owned(),
                mount_point: mount_point.to_owned(),
                filesystem: filesystem.to_owned(),
                options: options.to_owned(),
            })
        })
        .max_by_key(|m| m.mount_point.len())
}

/// `/sys/class/block/<dev>/queue/rotational` of a `/dev/...` device, or of the disk of a
/// partition.
fn rotational(device: &str) -> Option<bool> {
    let name = device.strip_prefix("/dev/")?;
    let disk = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let disk = if disk != name && disk.ends_with('p') && disk.len() > 1 { &disk[..disk.len() - 1] } else { disk };
    [name, disk].iter().find_map(|n| {
        let text = std::fs::read_to_string(format!("/sys/class/block/{n}/queue/rotational")).ok()?;
        Some(text.trim() == "1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mount_holding_a_directory() {
        let mounts = "proc /proc proc rw 0 0\n/dev/vda / ext4 rw,relatime 0 0\ntmpfs /tmp tmpfs rw 0 0\n\
                      /dev/nvme0n1p2 /work/data xfs rw,noatime 0 0\n";
        let root = mount_of(mounts, Path::new("/work/main/target/bench-data")).unwrap();
        assert_eq!((root.device.as_str(), root.filesystem.as_str()), ("/dev/vda", "ext4"));
        let data = mount_of(mounts, Path::new("/work/data/durability")).unwrap();
        assert_eq!((data.mount_point.as_str(), data.options.as_str()), ("/work/data", "rw,noatime"));
        // `/work/database` is not under `/work/data`: paths compare by components.
        assert_eq!(mount_of(mounts, Path::new("/work/database")).unwrap().mount_point, "/");
        assert_eq!(mount_of(mounts, Path::new("/tmp/x")).unwrap().filesystem, "tmpfs");
        assert!(mount_of("", Path::new("/")).is_none());
    }
}
