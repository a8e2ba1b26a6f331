//! `facedb-bench`: the benchmark harness of facedb.
//!
//! `facedb-bench --profile quick|full [--out DIR]` runs the whole benchmark (`harness.rs`):
//! face-like datasets written once in the format shared with the Python peers (`dataset.rs`,
//! `vecs.rs`), ground truth in plain f64 (`truth.rs`), the workloads ingest / search /
//! threshold / filtered / mixed at each client concurrency (`workload.rs`) over HTTP against
//! `facedb serve` (or, with `--shards N`, a `facedb router` in front of N `facedb shard`
//! processes: `cluster.rs`) and in-process against the library (`backend.rs`), HDR latency
//! percentiles (`metrics.rs`), recall against the truth, server memory, the peers FAISS and
//! hnswlib (`peers.rs`), and the results as JSON, Markdown (`report.rs`) and SVG plots (`plot.rs`).
//! It exits non-zero when a check fails (failed requests, recall of exact search below 1,
//! insane latencies...).
//!
//! Subcommands beside it: `prepare` (datasets and ground truth only, e.g. for the peers),
//! `durability` (the figures of issue 4: ingest per `wal_mode`, snapshot write time and size,
//! write stalls during a snapshot, restart times; `durability/`), and the earlier measurements
//! `search` and `add-under-load` (`latency/`), whose figures are in `docs/benchmarks.md`, and
//! `ann-probe` (`ann_probe/`): the candidate HNSW crates of issue 5 measured side by side.

mod ann_probe;
mod backend;
mod client;
mod cluster;
mod dataset;
mod durability;
mod extract;
mod harness;
mod latency;
mod machine;
mod metrics;
mod peers;
mod plot;
mod progress;
mod report;
mod server;
mod truth;
mod upkeep;
mod vecs;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use facedb::index::IndexOverrides;

use crate::dataset::{DatasetSpec, Kind};
use crate::harness::{PeersChoice, Profile, Settings};
use crate::report::Mode;
use crate::workload::Workload;

#[derive(Parser)]
#[command(
    name = "facedb-bench",
    about = "The benchmark harness of facedb: datasets, ground truth, workloads over HTTP and in-process, \
             recall, latency percentiles, plots, peers side by side",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Write the datasets of a profile and their ground truth (nothing else); prints their dirs.
    Prepare(DataArgs),
    /// Durability (issue 4): ingest rate per wal_mode, snapshot write time and size, the
    /// longest write stall during a snapshot, restart time from a snapshot and from the log.
    Durability(durability::DurabilityArgs),
    /// (Earlier issue) exact top-k search latency: unfiltered and 10%-filtered, one core, all
    /// cores, HTTP.
    Search(latency::SearchArgs),
    /// (Earlier issue) latency of single-face adds while searches run back to back.
    AddUnderLoad(latency::AddArgs),
    /// The HNSW crates of issue 5 (hnsw_rs, usearch) on a dataset: build, plain and filtered
    /// ef sweeps (single-thread QPS, p50/p99, recall@k), deletes, usearch save/load/view.
    AnnProbe(ann_probe::AnnProbeArgs),
    /// How the HNSW graph keeps up (issue 5): the build of a whole gallery (as at a restart)
    /// and the tail of unindexed faces under steady writes.
    IndexUpkeep(upkeep::UpkeepArgs),
    /// Face detection and extraction (issue 6): median latency of each stage and of a whole
    /// 640x480 photo with one face, HOG and CNN, in-process and over HTTP.
    Extract(extract::ExtractArgs),
}

/// Changes to a profile's datasets, and where datasets live: shared by the subcommands that
/// take a dataset.
#[derive(Args)]
pub struct SpecOverrides {
    /// Data kind instead of the profile's.
    #[arg(long, value_enum)]
    kind: Option<Kind>,
    /// Vector dimension instead of the profile's.
    #[arg(long)]
    dim: Option<usize>,
    /// Number of faces instead of the profile's.
    #[arg(long)]
    count: Option<usize>,
    /// Samples per identity (cone) [default: 10].
    #[arg(long)]
    samples_per_identity: Option<usize>,
    /// Number of queries [default: 1000].
    #[arg(long)]
    queries: Option<usize>,
    /// Seed of the generator [default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// Where datasets are written and reused [default: target/bench-data].
    #[arg(long, value_name = "DIR")]
    data_root: Option<PathBuf>,
}

impl SpecOverrides {
    /// `spec` with every flag given here applied.
    pub fn apply(&self, mut spec: DatasetSpec) -> DatasetSpec {
        spec.kind = self.kind.unwrap_or(spec.kind);
        spec.dim = self.dim.unwrap_or(spec.dim);
        spec.count = self.count.unwrap_or(spec.count);
        spec.samples_per_identity = self.samples_per_identity.unwrap_or(spec.samples_per_identity);
        spec.queries = self.queries.unwrap_or(spec.queries);
        spec.seed = self.seed.unwrap_or(spec.seed);
        spec
    }

    pub fn data_root(&self) -> PathBuf {
        self.data_root.clone().unwrap_or_else(machine::default_data_root)
    }
}

/// Which datasets: a profile's, optionally changed by the flags (each flag applies to every
/// dataset of the profile).
#[derive(Args)]
struct DataArgs {
    /// The datasets, concurrency levels and peers of the run.
    #[arg(long, value_enum, required = true)]
    profile: Option<Profile>,
    #[command(flatten)]
    overrides: SpecOverrides,
}

impl DataArgs {
    fn profile(&self) -> Result<Profile> {
        match self.profile {
            Some(p) => Ok(p),
            None => bail!("give --profile quick or --profile full"),
        }
    }

    fn datasets(&self) -> Result<Vec<DatasetSpec>> {
        let mut specs: Vec<DatasetSpec> = Vec::new();
        for spec in self.profile()?.datasets() {
            let spec = self.overrides.apply(spec);
            spec.check()?;
            if !specs.contains(&spec) {
                specs.push(spec);
            }
        }
        Ok(specs)
    }

    fn data_root(&self) -> PathBuf {
        self.overrides.data_root()
    }
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Write results.json, results.md and the SVG plots (and the peers' records) here.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Run the HTTP workloads against this server instead of starting `facedb serve`
    /// (it must use the bench schema and the dataset's dimension; the harness creates and
    /// finally deletes the gallery `bench-<dataset>`).
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// Run the HTTP workloads against a `facedb router` in front of N `facedb shard` processes
    /// (all started by the harness) instead of `facedb serve`.
    #[arg(long, value_name = "N", conflicts_with_all = ["target", "in_process"])]
    shards: Option<usize>,
    /// The facedb server binary [default: `facedb` next to this executable].
    #[arg(long, value_name = "PATH")]
    facedb_bin: Option<PathBuf>,
    /// Where the workloads run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Mode::Http, Mode::InProcess])]
    modes: Vec<Mode>,
    /// Only in-process (the library called directly): short for --modes in-process.
    #[arg(long, conflicts_with = "modes")]
    in_process: bool,
    /// Client concurrency levels, comma-separated [default: the profile's].
    #[arg(long, value_delimiter = ',', value_name = "C,...")]
    concurrency: Option<Vec<usize>>,
    /// Workloads, comma-separated (the gallery is loaded even without `ingest`).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Workload::Ingest, Workload::Search, Workload::Threshold, Workload::Filtered, Workload::Mixed])]
    workloads: Vec<Workload>,
    /// Results per top-k search.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Faces per ingest request.
    #[arg(long, default_value_t = 1000)]
    ingest_batch: usize,
    /// Untimed searches before each mode's search workloads.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Run the peers (FAISS, hnswlib) and fail if they cannot run [default: tried by the
    /// full profile, a failure only reported].
    #[arg(long, conflicts_with = "no_peers")]
    peers: bool,
    /// Do not run the peers.
    #[arg(long)]
    no_peers: bool,
    /// Threads the peers build and batch-search with [default: the number of cores].
    #[arg(long)]
    peers_threads: Option<usize>,
    /// The peers' entry point [default: bench/peers/run.sh of this repository].
    #[arg(long, value_name = "PATH")]
    peers_script: Option<PathBuf>,
    /// An extra argument for `run.sh bench` (repeat for several: --peers-arg=--efs --peers-arg=16,64).
    #[arg(long = "peers-arg", value_name = "ARG", allow_hyphen_values = true)]
    peers_args: Vec<String>,
    /// `m` of the bench gallery's HNSW graph (its creation body), and the peers' `M`.
    #[arg(long, default_value_t = 48)]
    index_m: usize,
    /// `ef_construction` of the bench gallery's graph, and the peers'.
    #[arg(long, default_value_t = 400)]
    index_ef_construction: usize,
    /// `ef_search` of the bench gallery [default: the server's].
    #[arg(long)]
    index_ef_search: Option<usize>,
}

fn bench(args: BenchArgs) -> Result<bool> {
    let profile = args.data.profile()?;
    let concurrency = args.concurrency.clone().unwrap_or_else(|| profile.concurrency());
    if concurrency.is_empty() || concurrency.contains(&0) {
        bail!("--concurrency levels must be at least 1");
    }
    if args.k == 0 || args.k > dataset::K_TRUTH {
        bail!("--k must be from 1 to {}", dataset::K_TRUTH);
    }
    let modes = if args.in_process { vec![Mode::InProcess] } else { args.modes.clone() };
    if let Some(shards) = args.shards {
        if shards == 0 {
            bail!("--shards must be at least 1");
        }
        if !modes.contains(&Mode::Http) {
            bail!("--shards applies to the http mode: add it to --modes");
        }
    }
    let peers = if args.peers {
        PeersChoice::Required
    } else if args.no_peers {
        PeersChoice::Off
    } else {
        profile.peers()
    };
    let settings = Settings {
        profile,
        datasets: args.data.datasets()?,
        data_root: args.data.data_root(),
        out: args.out.clone(),
        modes,
        workloads: args.workloads.clone(),
        concurrency,
        k: args.k,
        ingest_batch: args.ingest_batch.max(1),
        warmup: args.warmup,
        target: args.target.clone(),
        shards: args.shards,
        facedb_bin: args.facedb_bin.clone(),
        peers,
        peers_threads: args
            .peers_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        peers_script: args.peers_script.clone().unwrap_or_else(|| machine::repo_root().join("bench/peers/run.sh")),
        peers_args: args.peers_args.clone(),
        index: IndexOverrides {
            m: Some(args.index_m),
            ef_construction: Some(args.index_ef_construction),
            ef_search: args.index_ef_search,
        },
    };
    let results = harness::run(&settings, command_line())?;
    Ok(results.passed)
}

/// This run's command line as it could be typed again (`facedb-bench ...`).
fn command_line() -> String {
    let args = std::env::args().skip(1).map(|a| if a.contains(' ') { format!("'{a}'") } else { a });
    std::iter::once("facedb-bench".to_owned()).chain(args).collect::<Vec<_>>().join(" ")
}

fn prepare(args: DataArgs) -> Result<()> {
    let root = args.data_root();
    for spec in args.datasets()? {
        let (dir, _) = dataset::ensure(&root, &spec)?;
        let data = dataset::Dataset::load(&dir)?;
        truth::load_or_compute(&data)?;
        println!("{}", dir.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        None => bench(cli.bench),
        Some(Command::Prepare(args)) => prepare(args).map(|()| true),
        Some(Command::Durability(args)) => durability::run(args, command_line()).map(|()| true),
        Some(Command::Search(args)) => latency::search(args).map(|()| true),
        Some(Command::AddUnderLoad(args)) => latency::add_under_load(args).map(|()| true),
        Some(Command::AnnProbe(args)) => ann_probe::run(args, command_line()).map(|()| true),
        Some(Command::IndexUpkeep(args)) => upkeep::run(args, command_line()).map(|()| true),
        Some(Command::Extract(args)) => extract::run(args, command_line()).map(|()| true),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("facedb-bench: some checks failed (see \"Checks\" above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("facedb-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
