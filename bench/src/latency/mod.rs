//! The measurements of the earlier issue (exact-search latency; single-face adds under search
//! load), kept as the subcommands `search` and `add-under-load` so that the figures of
//! `docs/benchmarks.md` ("Exact search latency", "Single-face adds under search load") can be
//! reproduced with the commands written there.
//!
//! * `search`: exact top-k similarity search over galleries of synthetic 128-d faces
//!   (`data.rs`), with no metadata filter and with a filter that keeps 10% of the faces.
//!   Each configuration is timed three ways: in-process pinned to one thread (a one-thread
//!   rayon pool), in-process on rayon's global pool (all cores), and over HTTP against a
//!   `facedb serve` process started by the bench. The HTTP figure is one client sending one
//!   search at a time; the server then scans with all cores.
//! * `add-under-load`: single-face adds (one face per request) while one or more threads
//!   search the gallery back to back (`underload.rs`), over HTTP and in-process.
//!
//! Timings are wall-clock `Instant` differences per operation; summaries are nearest-rank
//! percentiles (`stats.rs`). Everything is seeded, so two runs measure the same work.

mod data;
mod http;
mod inproc;
mod stats;
mod underload;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use facedb::store::Face;

use self::data::{DataGen, MetaFilter};
use self::stats::{ms, Summary};
use crate::client::Client;
use crate::metrics::thousands;
use crate::server::{self, Server};

/// The figures to report against.
const SEARCH_TARGET: Duration = Duration::from_millis(25);
const SEARCH_TARGET_SIZE: usize = 1_000_000;
const ADD_P99_TARGET: Duration = Duration::from_millis(20);

#[derive(Args)]
pub struct Common {
    /// Seed of all generated data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Clusters the generated vectors are drawn around.
    #[arg(long, default_value_t = 1000)]
    clusters: usize,
    /// float32 components per vector.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Results per search (`limit`).
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// The facedb server binary [default: `facedb` next to this executable].
    #[arg(long, value_name = "PATH")]
    facedb_bin: Option<PathBuf>,
    /// A smoke run: small galleries and few operations (explicit flags still win).
    #[arg(long)]
    quick: bool,
}

#[derive(Args)]
pub struct SearchArgs {
    /// Gallery sizes, comma-separated [default: 100000,1000000; --quick: 10000,70000].
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    sizes: Option<Vec<usize>>,
    /// Timed searches per configuration [default: 200; --quick: 30].
    #[arg(long)]
    queries: Option<usize>,
    /// Untimed searches before the timed ones [default: 20; --quick: 5].
    #[arg(long)]
    warmup: Option<usize>,
    /// Where searches run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [SearchMode::OneCore, SearchMode::AllCores, SearchMode::Http])]
    modes: Vec<SearchMode>,
    /// Metadata filters, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [MetaFilter::None, MetaFilter::TenPercent])]
    filters: Vec<MetaFilter>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
pub struct AddArgs {
    /// Faces in the gallery before the adds [default: 1000000; --quick: 70000].
    #[arg(long)]
    size: Option<usize>,
    /// Timed single-face adds per configuration [default: 2000; --quick: 200].
    #[arg(long)]
    adds: Option<usize>,
    /// Threads searching back to back during the adds, comma-separated: one run per value
    /// (0: no searches, the baseline).
    #[arg(long, value_delimiter = ',', default_values_t = [1])]
    search_threads: Vec<usize>,
    /// Pause between two adds, in milliseconds (0: back to back).
    #[arg(long, default_value_t = 5)]
    add_pause_ms: u64,
    /// Where the adds and searches run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [AddMode::Http, AddMode::InProcess])]
    modes: Vec<AddMode>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SearchMode {
    /// In-process, inside a one-thread rayon pool.
    OneCore,
    /// In-process, on rayon's global pool.
    AllCores,
    /// Over HTTP against `facedb serve`.
    Http,
}

impl SearchMode {
    fn label(self) -> String {
        match self {
            SearchMode::OneCore => "in-process, 1 thread".to_owned(),
            SearchMode::AllCores => format!("in-process, {} threads", rayon::current_num_threads()),
            SearchMode::Http => "HTTP, 1 client".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AddMode {
    /// Over HTTP against `facedb serve`.
    Http,
    /// Threads calling the engine directly.
    InProcess,
}

impl AddMode {
    fn label(self) -> &'static str {
        match self {
            AddMode::Http => "HTTP",
            AddMode::InProcess => "in-process",
        }
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "?".to_owned(), |b| format!("{} MiB", b >> 20))
}

fn environment_line() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("available parallelism {cores}, rayon global pool {} threads", rayon::current_num_threads())
}

struct LoadRow {
    size: usize,
    place: &'static str,
    time: Duration,
    peak_rss: Option<u64>,
}

fn load_table(loads: &[LoadRow]) -> String {
    let mut out = String::from(
        "| faces | loaded | time in add calls | faces/s | peak RSS of the process holding the gallery |\n|---:|---|---:|---:|---:|\n",
    );
    for l in loads {
        let rate = l.size as f64 / l.time.as_secs_f64().max(1e-9);
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} s | {} | {} |",
            thousands(l.size as u64),
            l.place,
            l.time.as_secs_f64(),
            thousands(rate as u64),
            mib(l.peak_rss)
        );
    }
    out
}

struct SearchRow {
    size: usize,
    filter: MetaFilter,
    mode: SearchMode,
    summary: Summary,
}

pub fn search(args: SearchArgs) -> Result<()> {
    let c = &args.common;
    let sizes =
        args.sizes.clone().unwrap_or_else(|| if c.quick { vec![10_000, 70_000] } else { vec![100_000, 1_000_000] });
    let queries = args.queries.unwrap_or(if c.quick { 30 } else { 200 });
    let warmup = args.warmup.unwrap_or(if c.quick { 5 } else { 20 });
    if queries == 0 || sizes.contains(&0) {
        bail!("--queries and every --sizes value must be at least 1");
    }
    let in_process: Vec<SearchMode> = args.modes.iter().copied().filter(|&m| m != SearchMode::Http).collect();
    // Find the server binary before spending minutes on in-process runs.
    let bin = match args.modes.contains(&SearchMode::Http) {
        true => Some(server::facedb_bin(c.facedb_bin.as_deref())?),
        false => None,
    };
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().context("building a one-thread pool")?;
    let gen = DataGen::new(c.seed, c.dim, c.clusters);
    eprintln!("{}", environment_line());

    let mut rows: Vec<SearchRow> = Vec::new();
    let mut loads: Vec<LoadRow> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    for &size in &sizes {
        // The ids the first query of each filter finds in-process, to compare with HTTP.
        let mut reference: HashMap<MetaFilter, Vec<u64>> = HashMap::new();
        if !in_process.is_empty() {
            let engine = inproc::new_engine(c.dim)?;
            let time = inproc::load(&engine, &gen, size)?;
            loads.push(LoadRow {
                size,
                place: "in-process",
                time,
                peak_rss: server::peak_rss_bytes("/proc/self/status"),
            });
            inproc::check_exact_match(&engine, &gen, size as u64 / 2)?;
            for &filter in &args.filters {
                let parsed = inproc::queries(&engine, &gen, queries, c.limit, filter)?;
                reference.insert(filter, inproc::search_ids(&engine, &parsed[0])?);
                for &mode in &in_process {
                    let pool = (mode == SearchMode::OneCore).then_some(&one_thread);
                    let summary =
                        Summary::of(inproc::time_searches(&engine, &parsed, warmup, pool)?).context("no timings")?;
                    report_search_row(&SearchRow { size, filter, mode, summary });
                    rows.push(SearchRow { size, filter, mode, summary });
                }
            }
        }
        if let Some(bin) = &bin {
            let server = Server::start(bin, c.dim, data::SCHEMA_YAML)?;
            let client = Client::new(server.base_url());
            let time = http::load(&client, &gen, size)?;
            let stored = client.gallery_size(inproc::GALLERY)?;
            if stored != size as u64 {
                bail!("the server holds {stored} faces after loading {size}");
            }
            let probe = gen.face(size as u64 / 2);
            let found = http::search(&client, &data::search_body(&probe.vector, 1, MetaFilter::None).to_string())?;
            if found.first() != Some(&probe.id) {
                bail!("over HTTP, searching face {} by its own vector found {found:?}", probe.id);
            }
            for &filter in &args.filters {
                let bodies: Vec<String> = (0..queries as u64)
                    .map(|i| data::search_body(&gen.query(i), c.limit, filter).to_string())
                    .collect();
                let ids = http::search(&client, &bodies[0])?;
                if let Some(expected) = reference.get(&filter).filter(|expected| **expected != ids) {
                    warnings.push(format!(
                        "{size} faces, filter {}: HTTP found {ids:?}, in-process {expected:?}",
                        filter.label()
                    ));
                }
                let summary = Summary::of(http::time_searches(&client, &bodies, warmup)?).context("no timings")?;
                let mode = SearchMode::Http;
                report_search_row(&SearchRow { size, filter, mode, summary });
                rows.push(SearchRow { size, filter, mode, summary });
            }
            loads.push(LoadRow { size, place: "HTTP (server process)", time, peak_rss: server.peak_rss_bytes() });
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Exact search latency\n\n{}-d float32, top-{} by score (`sort: -score`), seed {}, {} clusters; \
         {queries} timed searches per row after {warmup} untimed; {}. Times in ms.\n",
        c.dim,
        c.limit,
        c.seed,
        c.clusters,
        environment_line()
    );
    out.push_str(
        "| faces | meta filter | run | p50 | p90 | p99 | max | mean |\n|---:|---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        let s = &r.summary;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            thousands(r.size as u64),
            r.filter.label(),
            r.mode.label(),
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max),
            ms(s.mean)
        );
    }
    let target = rows
        .iter()
        .find(|r| r.size == SEARCH_TARGET_SIZE && r.filter == MetaFilter::None && r.mode == SearchMode::OneCore);
    if let Some(r) = target {
        let verdict = if r.summary.p50 <= SEARCH_TARGET { "met" } else { "MISSED" };
        let _ = writeln!(
            out,
            "\nTarget: 1,000,000 faces, no filter, in-process on one core, p50 <= {} ms: measured {} ms, {verdict}.",
            SEARCH_TARGET.as_millis(),
            ms(r.summary.p50)
        );
    }
    let _ = writeln!(out, "\n### Loading\n\n{}", load_table(&loads));
    for w in &warnings {
        let _ = writeln!(out, "WARNING: results differ between in-process and HTTP: {w}");
    }
    print!("{out}");
    Ok(())
}

fn report_search_row(r: &SearchRow) {
    let s = &r.summary;
    eprintln!(
        "{} faces, filter {}, {}: p50 {} ms, p99 {} ms",
        thousands(r.size as u64),
        r.filter.label(),
        r.mode.label(),
        ms(s.p50),
        ms(s.p99)
    );
}

struct AddRow {
    mode: AddMode,
    size: usize,
    search_threads: usize,
    adds: Summary,
    searches: Option<Summary>,
    elapsed: Duration,
}

/// Searches cycle through this many distinct queries during the adds.
const LOAD_QUERIES: usize = 200;

pub fn add_under_load(args: AddArgs) -> Result<()> {
    let c = &args.common;
    let size = args.size.unwrap_or(if c.quick { 70_000 } else { 1_000_000 });
    let adds = args.adds.unwrap_or(if c.quick { 200 } else { 2000 });
    let pause = Duration::from_millis(args.add_pause_ms);
    if adds == 0 {
        bail!("--adds must be at least 1");
    }
    let bin = match args.modes.contains(&AddMode::Http) {
        true => Some(server::facedb_bin(c.facedb_bin.as_deref())?),
        false => None,
    };
    let gen = DataGen::new(c.seed, c.dim, c.clusters);
    eprintln!("{}", environment_line());

    let mut rows: Vec<AddRow> = Vec::new();
    let mut loads: Vec<LoadRow> = Vec::new();
    for &mode in &args.modes {
        // New faces get ids from `size` on, `adds` more for every run.
        let mut next_id = size as u64;
        match mode {
            AddMode::InProcess => {
                let engine = inproc::new_engine(c.dim)?;
                let time = inproc::load(&engine, &gen, size)?;
                inproc::check_exact_match(&engine, &gen, size as u64 / 2)?;
                let queries = inproc::queries(&engine, &gen, LOAD_QUERIES, c.limit, MetaFilter::None)?;
                for &threads in &args.search_threads {
                    let faces: Vec<Face> = gen.faces(next_id..next_id + adds as u64);
                    let engine = &engine;
                    let queries = &queries;
                    let result = underload::run(
                        threads,
                        |_| {
                            Ok(move |call: usize| -> Result<()> {
                                engine.search(inproc::GALLERY, &queries[call % queries.len()])?;
                                Ok(())
                            })
                        },
                        adds,
                        pause,
                        |k| Ok(engine.add_faces(inproc::GALLERY, vec![faces[k].clone()])?),
                    )?;
                    next_id += adds as u64;
                    let stored = engine.gallery_size(inproc::GALLERY)?;
                    if stored as u64 != next_id {
                        bail!("the gallery holds {stored} faces, expected {next_id}");
                    }
                    rows.push(add_row(mode, size, threads, result)?);
                }
                loads.push(LoadRow {
                    size,
                    place: "in-process",
                    time,
                    peak_rss: server::peak_rss_bytes("/proc/self/status"),
                });
            }
            AddMode::Http => {
                let Some(bin) = &bin else { bail!("no facedb binary") };
                let server = Server::start(bin, c.dim, data::SCHEMA_YAML)?;
                let client = Client::new(server.base_url());
                let time = http::load(&client, &gen, size)?;
                let bodies: Vec<String> = (0..LOAD_QUERIES as u64)
                    .map(|i| data::search_body(&gen.query(i), c.limit, MetaFilter::None).to_string())
                    .collect();
                for &threads in &args.search_threads {
                    let add_bodies: Vec<String> =
                        gen.faces(next_id..next_id + adds as u64).chunks(1).map(data::add_body).collect();
                    let (server, bodies) = (&server, &bodies);
                    let result = underload::run(
                        threads,
                        |_| {
                            let client = Client::new(server.base_url());
                            Ok(move |call: usize| http::search(&client, &bodies[call % bodies.len()]).map(drop))
                        },
                        adds,
                        pause,
                        |k| client.add(inproc::GALLERY, &add_bodies[k]),
                    )?;
                    next_id += adds as u64;
                    let stored = client.gallery_size(inproc::GALLERY)?;
                    if stored != next_id {
                        bail!("the server holds {stored} faces, expected {next_id}");
                    }
                    rows.push(add_row(mode, size, threads, result)?);
                }
                loads.push(LoadRow { size, place: "HTTP (server process)", time, peak_rss: server.peak_rss_bytes() });
            }
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Single-face adds under search load\n\n{} faces of {}-d float32 before the adds; each add is one face \
         (one request over HTTP); {} ms pause between adds; searches are top-{} by score, no filter, \
         back to back; {}. Times in ms.\n",
        thousands(size as u64),
        c.dim,
        args.add_pause_ms,
        c.limit,
        environment_line()
    );
    out.push_str(
        "| run | search threads | adds | add p50 | add p90 | add p99 | add max | searches done | search p50 | search p99 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        let a = &r.adds;
        let (done, s50, s99) = match &r.searches {
            Some(s) => (s.count.to_string(), ms(s.p50), ms(s.p99)),
            None => ("0".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {done} | {s50} | {s99} |",
            r.mode.label(),
            r.search_threads,
            a.count,
            ms(a.p50),
            ms(a.p90),
            ms(a.p99),
            ms(a.max),
        );
    }
    out.push('\n');
    for r in &rows {
        let verdict = if r.adds.p99 <= ADD_P99_TARGET { "met" } else { "MISSED" };
        let _ = writeln!(
            out,
            "Target: add p99 <= {} ms ({}, {} search thread(s), {} faces, {:.1} s of adds): measured {} ms, {verdict}.",
            ADD_P99_TARGET.as_millis(),
            r.mode.label(),
            r.search_threads,
            thousands(r.size as u64),
            r.elapsed.as_secs_f64(),
            ms(r.adds.p99)
        );
    }
    let _ = writeln!(out, "\n### Loading\n\n{}", load_table(&loads));
    print!("{out}");
    Ok(())
}

fn add_row(mode: AddMode, size: usize, search_threads: usize, result: underload::UnderLoad) -> Result<AddRow> {
    let row = AddRow {
        mode,
        size,
        search_threads,
        adds: Summary::of(result.adds).context("no add timings")?,
        searches: Summary::of(result.searches),
        elapsed: result.elapsed,
    };
    eprintln!(
        "{}, {} search thread(s): add p50 {} ms, p99 {} ms, max {} ms",
        mode.label(),
        search_threads,
        ms(row.adds.p50),
        ms(row.adds.p99),
        ms(row.adds.max)
    );
    Ok(row)
}
