//! A benchmark run: the profiles, the flow for each dataset, the checks, the output files.
//!
//! For every dataset of the run: generate it (or reuse it), load it, read or compute its
//! ground truth, then for each mode (HTTP, in-process) load the gallery with the `ingest`
//! workload at each client concurrency (a fresh gallery each time; the last one stays), run
//! the search workloads at each concurrency, and note the memory; then run the peers if asked.
//! A mode that fails (a server that does not start, a lost connection) is reported and the
//! run goes on. At the end the checks decide the exit status, and `--out DIR` receives
//! `results.json`, `results.md` and the plots.
//!
//! The HTTP mode talks to `facedb serve`, or with `--shards N` to a `facedb router` in front of
//! N `facedb shard` processes (`cluster.rs`): the same workloads and checks; the memory is then
//! the sum of the processes, each also reported, and the wait for the graph waits for every
//! shard's graph.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use facedb::index::IndexOverrides;

use crate::backend::{Backend, IndexPart, QuerySet, SearchParams};
use crate::dataset::{self, Dataset, DatasetSpec, Kind, K_TRUTH};
use crate::machine::{self, Machine};
use crate::metrics::ms;
use crate::peers;
use crate::plot;
use crate::progress::Progress;
use crate::report::{
    self, Check, DatasetReport, IndexWait, MemoryRecord, Mode, PeersReport, ProcessMemory, Results, RunRecord,
    SettingsRecord,
};
use crate::server::{self, ProcMemory};
use crate::truth::{self, Truth, TruthSets, FILTERS};
use crate::workload::{self, Op, OpKind, RunOutcome, Workload};

/// Latencies above this fail the "sane latencies" check.
const SANE_P99_MS: f64 = 1000.0;
/// The recall a search answered through the HNSW index must reach (issue 5's target); searches
/// the planner ran as exact scans must reach 1.
const INDEX_RECALL: f64 = 0.99;

/// What a run's recall is held to: 1 when every search was an exact scan, [`INDEX_RECALL`] when
/// any went through the index (the server's `X-search-stat`, counted per run).
fn required_recall(run: &RunRecord) -> f64 {
    if run.search_stats.get("with_index").is_some_and(|&n| n > 0) {
        INDEX_RECALL
    } else {
        1.0 - 1e-9
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// ≈20k faces of 128-d, concurrency 1 and 2, no peers: under a minute; the CI smoke test.
    Quick,
    /// 1M faces of 128-d and 200k of 512-d, concurrency 1 to 8, with the peers: about an hour.
    Full,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Full => "full",
        }
    }

    pub fn datasets(self) -> Vec<DatasetSpec> {
        let cone = |dim, count| DatasetSpec {
            kind: Kind::Cone,
            dim,
            count,
            samples_per_identity: dataset::DEFAULT_SAMPLES_PER_IDENTITY,
            queries: dataset::DEFAULT_QUERIES,
            seed: dataset::DEFAULT_SEED,
        };
        match self {
            Profile::Quick => vec![cone(128, 20_000)],
            Profile::Full => vec![cone(128, 1_000_000), cone(512, 200_000)],
        }
    }

    pub fn concurrency(self) -> Vec<usize> {
        match self {
            Profile::Quick => vec![1, 2],
            Profile::Full => vec![1, 2, 4, 8],
        }
    }

    pub fn peers(self) -> PeersChoice {
        match self {
            Profile::Quick => PeersChoice::Off,
            Profile::Full => PeersChoice::Try,
        }
    }
}

/// Whether to run the peers, and whether their failure fails the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeersChoice {
    Off,
    /// Run them; if they cannot run, say so and go on.
    Try,
    /// `--peers`: run them; if they cannot run, the run fails.
    Required,
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub profile: Profile,
    pub datasets: Vec<DatasetSpec>,
    pub data_root: PathBuf,
    pub out: Option<PathBuf>,
    pub modes: Vec<Mode>,
    pub workloads: Vec<Workload>,
    pub concurrency: Vec<usize>,
    pub k: usize,
    pub ingest_batch: usize,
    pub warmup: usize,
    pub target: Option<String>,
    /// `--shards N`: the HTTP mode starts N `facedb shard` processes and a `facedb router`
    /// instead of `facedb serve`.
    pub shards: Option<usize>,
    pub facedb_bin: Option<PathBuf>,
    pub peers: PeersChoice,
    pub peers_threads: usize,
    pub peers_script: PathBuf,
    pub peers_args: Vec<String>,
    /// The bench gallery's index parameters (`m` and `ef_construction` are the peers' too).
    pub index: IndexOverrides,
}

/// Runs the benchmark; returns the results (already written and printed).
pub fn run(settings: &Settings, command: String) -> Result<Results> {
    let started = Instant::now();
    let date = machine::now_utc();
    let root = machine::repo_root();
    let bin = match settings.modes.contains(&Mode::Http) && settings.target.is_none() {
        true => Some(server::facedb_bin(settings.facedb_bin.as_deref())?),
        false => None,
    };
    if let Some(out) = &settings.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    let mut datasets = Vec::new();
    for spec in &settings.datasets {
        datasets.push(run_dataset(settings, spec, bin.as_deref())?);
    }
    let checks = checks(settings, &datasets);
    let passed = checks.iter().all(|c| c.passed);
    let results = Results {
        format: "facedb-bench results 1",
        profile: settings.profile.name().to_owned(),
        command,
        date,
        commit: machine::commit(&root),
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        machine: Machine::describe(),
        settings: SettingsRecord {
            k: settings.k,
            concurrency: settings.concurrency.clone(),
            ingest_batch: settings.ingest_batch,
            modes: settings.modes.clone(),
            workloads: settings.workloads.clone(),
            warmup: settings.warmup,
            target: settings.target.clone(),
            shards: settings.shards,
            peers: format!("{:?}", settings.peers).to_lowercase(),
            peers_threads: settings.peers_threads,
            engine_threads: rayon::current_num_threads(),
            index: serde_json::json!(settings.index),
        },
        datasets,
        checks,
        passed,
        wall_s: started.elapsed().as_secs_f64(),
    };
    let markdown = report::markdown(&results);
    if let Some(out) = &settings.out {
        let json = serde_json::to_string_pretty(&results).context("encoding results.json")?;
        std::fs::write(out.join("results.json"), json)
            .with_context(|| format!("writing {}/results.json", out.display()))?;
        std::fs::write(out.join("results.md"), &markdown)
            .with_context(|| format!("writing {}/results.md", out.display()))?;
        for d in &results.datasets {
            plot::dataset_plots(out, d, settings.k).with_context(|| format!("plotting {}", d.name))?;
        }
    }
    print!("{markdown}");
    Ok(results)
}

fn run_dataset(settings: &Settings, spec: &DatasetSpec, bin: Option<&Path>) -> Result<DatasetReport> {
    let started = Instant::now();
    let (dir, generated_now) = dataset::ensure(&settings.data_root, spec)?;
    let dataset = Dataset::load(&dir)?;
    let prepare_s = started.elapsed().as_secs_f64();
    let name = dataset.manifest.name.clone();
    let measured = &dataset.manifest.measured;
    eprintln!(
        "{name}: {} in {prepare_s:.1} s ({}); cosines: same identity {}, different identities {:.3}",
        if generated_now { "generated" } else { "reused" },
        dir.display(),
        measured.same_identity.map_or_else(|| "-".to_owned(), |s| format!("{:.3}", s.mean)),
        measured.different_identity.mean
    );
    let truth = truth::load_or_compute(&dataset)?;
    if truth.computed_sets > 0 {
        eprintln!(
            "{name}: ground truth, {} sets computed in {:.1} s",
            truth.computed_sets,
            truth.computed_in.as_secs_f64()
        );
    }
    let threshold = threshold_for(&truth.plain, settings.k);
    let mixed = workload::mixed_ops(dataset.query_count(), dataset.query_count());
    let writes = mixed.iter().filter(|op| matches!(op, Op::Write(_))).count();
    let (sources, mixed_recall_checked) = churn_sources(&dataset, &truth.plain, settings.k, writes);
    let mut report = DatasetReport {
        name: name.clone(),
        dir: dir.display().to_string(),
        manifest: dataset.manifest.clone(),
        generated_now,
        prepare_s,
        truth_sets_computed: truth.computed_sets,
        truth_computed_s: truth.computed_in.as_secs_f64(),
        threshold,
        mixed_recall_checked,
        runs: Vec::new(),
        memory: Vec::new(),
        index_waits: Vec::new(),
        peers: PeersReport { status: String::new(), file: None, records: Vec::new(), crosscheck: None },
        errors: Vec::new(),
    };
    let context =
        DatasetContext { settings, dataset: &dataset, truth: &truth, threshold, mixed: &mixed, sources: &sources };
    for &mode in &settings.modes {
        if let Err(e) = run_mode(&context, mode, bin, &mut report) {
            eprintln!("{name}: {}: {e:#}", mode.name());
            report.errors.push(format!("{}: {e:#}", mode.name()));
        }
    }
    report.peers = run_peers(settings, &dataset);
    Ok(report)
}

/// What every run of a dataset shares.
struct DatasetContext<'a> {
    settings: &'a Settings,
    dataset: &'a Dataset,
    truth: &'a TruthSets,
    threshold: f64,
    mixed: &'a [Op],
    sources: &'a [usize],
}

impl DatasetContext<'_> {
    fn params(&self) -> SearchParams {
        SearchParams { k: self.settings.k, threshold: self.threshold, exact: false }
    }

    fn truth_of(&self, set: QuerySet) -> &Truth {
        match set {
            QuerySet::TopK | QuerySet::Threshold => &self.truth.plain,
            QuerySet::Filtered(i) => &self.truth.filtered[i],
        }
    }
}

/// The threshold of the threshold workload: the median over queries of the truth's score at
/// rank k, rounded to 3 decimals (so about k faces pass on average).
fn threshold_for(plain: &Truth, k: usize) -> f64 {
    let mut kth: Vec<f64> =
        plain.scores.iter().filter_map(|row| row.get(k.max(1) - 1).or(row.last())).map(|&s| f64::from(s)).collect();
    if kth.is_empty() {
        return 0.5;
    }
    kth.sort_by(f64::total_cmp);
    (kth[kth.len() / 2] * 1000.0).round() / 1000.0
}

/// The faces the mixed workload adds copies of: faces in no query's plain truth, scoring below
/// every query's k-th truth score by more than 1e-4, so that a copy never belongs in a top-k
/// answer and the truth stays valid. Returns one source per write and whether such faces were
/// found (if not, any faces are used and mixed recall is not checked).
fn churn_sources(dataset: &Dataset, plain: &Truth, k: usize, writes: usize) -> (Vec<usize>, bool) {
    if writes == 0 {
        return (Vec::new(), true);
    }
    let count = dataset.count();
    let in_truth: HashSet<u32> = plain.ids.iter().flatten().copied().collect();
    let kth: Vec<f64> = plain
        .scores
        .iter()
        .map(|row| row.get(k.max(1) - 1).or(row.last()).map_or(f64::NEG_INFINITY, |&s| f64::from(s)))
        .collect();
    let stride = if gcd(7919, count) == 1 { 7919 } else { 1 };
    let mut pool = Vec::new();
    for i in 0..count.min(writes * 50) {
        let id = (i * stride + 13) % count;
        if in_truth.contains(&(id as u32)) {
            continue;
        }
        let face = dataset.vector(id);
        let clear = (0..dataset.query_count()).all(|q| {
            let score: f64 = face.iter().zip(dataset.query(q)).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
            score < kth[q] - 1e-4
        });
        if clear {
            pool.push(id);
            if pool.len() == writes {
                break;
            }
        }
    }
    if pool.is_empty() {
        return ((0..writes).map(|w| w % count).collect(), false);
    }
    ((0..writes).map(|w| pool[w % pool.len()]).collect(), true)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn run_mode(cx: &DatasetContext<'_>, mode: Mode, bin: Option<&Path>, report: &mut DatasetReport) -> Result<()> {
    let settings = cx.settings;
    let dataset = cx.dataset;
    let gallery = format!("bench-{}", dataset.manifest.name);
    let before = ProcMemory::of_self();
    let mut backend = match mode {
        Mode::Http => Backend::http(settings.target.as_deref(), bin, settings.shards, dataset.dim(), &gallery)?,
        Mode::InProcess => Backend::in_process(dataset.dim(), &gallery)?,
    };
    let result = mode_workloads(cx, mode, &mut backend, before, report);
    if settings.target.is_some() && mode == Mode::Http {
        // Leave the target as it was.
        if let Err(e) = backend.delete_gallery() {
            eprintln!("could not delete gallery {gallery} from the target: {e:#}");
        }
    }
    result.map_err(|e| match backend.server_log_tail(20) {
        Some(tail) => e.context(format!("the server's last log lines:\n{tail}")),
        None => e,
    })
}

fn memory_record(mode: Mode, backend: &Backend, point: &str, before: Option<ProcMemory>) -> Option<MemoryRecord> {
    match mode {
        Mode::Http => {
            let processes = backend.server_memory()?;
            // `facedb serve` alone, or the processes of a cluster summed, each one listed.
            let (process, listed) = match processes.as_slice() {
                [(name, _)] => (name.clone(), Vec::new()),
                _ => ("cluster".to_owned(), processes.clone()),
            };
            Some(MemoryRecord {
                mode,
                process,
                point: point.into(),
                vm_rss_bytes: processes.iter().map(|(_, m)| m.vm_rss_bytes).sum(),
                vm_hwm_bytes: processes.iter().map(|(_, m)| m.vm_hwm_bytes).sum(),
                growth_bytes: None,
                processes: listed
                    .into_iter()
                    .map(|(name, m)| ProcessMemory { name, vm_rss_bytes: m.vm_rss_bytes, vm_hwm_bytes: m.vm_hwm_bytes })
                    .collect(),
            })
        }
        Mode::InProcess => ProcMemory::of_self().map(|m| MemoryRecord {
            mode,
            process: "harness".into(),
            point: point.into(),
            vm_rss_bytes: m.vm_rss_bytes,
            vm_hwm_bytes: m.vm_hwm_bytes,
            growth_bytes: before.map(|b| m.vm_rss_bytes as i64 - b.vm_rss_bytes as i64),
            processes: Vec::new(),
        }),
    }
}

fn mode_workloads(
    cx: &DatasetContext<'_>,
    mode: Mode,
    backend: &mut Backend,
    before: Option<ProcMemory>,
    report: &mut DatasetReport,
) -> Result<()> {
    let settings = cx.settings;
    let dataset = cx.dataset;
    let name = &dataset.manifest.name;
    let label = |what: &str, c: usize| format!("{name} {}: {what}, concurrency {c}", mode.name());

    // Ingest: a fresh gallery per concurrency level; the last one stays for the searches.
    let batches = backend.prepare_ingest(dataset, settings.ingest_batch)?;
    let ops: Vec<Op> = (0..batches).map(Op::AddBatch).collect();
    let measured = settings.workloads.contains(&Workload::Ingest);
    let levels = if measured { settings.concurrency.clone() } else { vec![1] };
    for &c in &levels {
        backend.recreate_gallery(&settings.index)?;
        let outcome = workload::run(backend, c, &ops, &label("ingest", c))?;
        let size = backend.gallery_size().ok();
        if measured {
            let mut record = base_record(mode, Workload::Ingest, c, &outcome);
            record.batch = Some(settings.ingest_batch);
            record.gallery_size_after = size;
            record.faces_per_s = size.map(|n| n as f64 / outcome.wall.as_secs_f64().max(1e-9));
            announce(name, &record);
            report.runs.push(record);
        }
    }
    backend.drop_ingest();
    report.memory.extend(memory_record(mode, backend, "after ingest", before));
    if let Some(wait) = wait_indexed(backend, mode, &format!("{name} {}", mode.name()))? {
        eprintln!("{name} {}: graph complete {:.1} s after the ingest: {}", mode.name(), wait.seconds, wait.status);
        report.index_waits.push(wait);
        report.memory.extend(memory_record(mode, backend, "graph built", before));
    }

    let mut sets = vec![QuerySet::TopK, QuerySet::Threshold];
    sets.extend((0..FILTERS.len()).map(QuerySet::Filtered));
    backend.prepare_searches(dataset, &sets, cx.params())?;
    backend.prepare_mixed(dataset, dataset.count() as u64, cx.sources)?;
    let queries = dataset.query_count();
    let warmup: Vec<Op> = (0..settings.warmup).map(|i| Op::Search(QuerySet::TopK, i % queries)).collect();
    if !warmup.is_empty() {
        workload::run(backend, 1, &warmup, &format!("{name} {}: warm-up", mode.name()))?;
    }

    for &workload in &settings.workloads {
        let variants: Vec<(Option<QuerySet>, Vec<Op>)> = match workload {
            Workload::Ingest => continue,
            Workload::Search | Workload::Threshold => {
                let set = if workload == Workload::Search { QuerySet::TopK } else { QuerySet::Threshold };
                vec![(Some(set), (0..queries).map(|q| Op::Search(set, q)).collect())]
            }
            Workload::Filtered => (0..FILTERS.len())
                .map(|i| {
                    let set = QuerySet::Filtered(i);
                    (Some(set), (0..queries).map(|q| Op::Search(set, q)).collect())
                })
                .collect(),
            Workload::Mixed => vec![(None, cx.mixed.to_vec())],
        };
        for (set, ops) in &variants {
            let what = match set {
                Some(QuerySet::Filtered(i)) => format!("filtered {}", FILTERS[*i].label),
                _ => workload.name().to_owned(),
            };
            for &c in &settings.concurrency {
                let outcome = workload::run(backend, c, ops, &label(&what, c))?;
                let record = search_record(cx, mode, workload, *set, c, None, &outcome, backend)?;
                announce(name, &record);
                report.runs.push(record);
            }
            if workload == Workload::Search && mode == Mode::InProcess {
                // One query at a time on one engine thread: the peers' terms.
                backend.set_engine_threads(Some(1))?;
                let outcome = workload::run(backend, 1, ops, &label("search on 1 engine thread", 1));
                backend.set_engine_threads(None)?;
                let record = search_record(cx, mode, workload, *set, 1, Some(1), &outcome?, backend)?;
                announce(name, &record);
                report.runs.push(record);
            }
        }
    }
    report.memory.extend(memory_record(mode, backend, "at end", before));
    Ok(())
}

/// Waits until the bench gallery's graph holds every face (nothing left in its tail), so that
/// the searches measure the index and not the exact scans that answer while it is built.
/// With shards, every shard's graph (each holds its part of the gallery). `None` when the
/// gallery (every shard's part) is too small to get a graph.
fn wait_indexed(backend: &Backend, mode: Mode, what: &str) -> Result<Option<IndexWait>> {
    let started = Instant::now();
    let mut progress: Option<Progress> = None;
    loop {
        let parts = backend.index_parts()?;
        let number = |part: &IndexPart, key: &str| part.status[key].as_u64();
        let graphed: Vec<&IndexPart> =
            parts.iter().filter(|p| number(p, "min_faces").is_none_or(|min| p.faces >= min)).collect();
        if graphed.is_empty() {
            return Ok(None);
        }
        let faces: u64 = graphed.iter().map(|p| p.faces).sum();
        let live: u64 = graphed.iter().map(|p| number(p, "live").unwrap_or(0)).sum();
        let status = combined_index_status(&parts);
        if graphed.iter().all(|p| number(p, "live").unwrap_or(0) == p.faces && number(p, "tail") == Some(0)) {
            let seconds = started.elapsed().as_secs_f64();
            return Ok(Some(IndexWait { mode, seconds, status }));
        }
        if started.elapsed() > INDEX_WAIT_LIMIT {
            bail!("{what}: the graph holds {live} of {faces} faces after {INDEX_WAIT_LIMIT:?}: {status}");
        }
        progress
            .get_or_insert_with(|| Progress::new(format!("{what}: waiting for the graph"), faces as usize))
            .update(live as usize);
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The index figures of a gallery spread over several processes, as one status: the first
/// part's parameters, the graphs' counts summed, `bytes_per_face` averaged over the live faces,
/// and each part under `shards` (with its `faces`). One part: its status as it is.
fn combined_index_status(parts: &[IndexPart]) -> serde_json::Value {
    let [first, ..] = parts else { return serde_json::Value::Null };
    if parts.len() == 1 {
        return first.status.clone();
    }
    let mut combined = first.status.clone();
    let Some(fields) = combined.as_object_mut() else { return combined };
    for key in ["faces", "nodes", "live", "tombstones", "tail", "capacity", "builds"] {
        if parts.iter().any(|p| p.status.get(key).is_some()) {
            let sum: u64 = parts.iter().filter_map(|p| p.status[key].as_u64()).sum();
            fields.insert(key.to_owned(), sum.into());
        }
    }
    let live: u64 = parts.iter().filter_map(|p| p.status["live"].as_u64()).sum();
    let bytes: u64 = parts
        .iter()
        .map(|p| p.status["bytes_per_face"].as_u64().unwrap_or(0) * p.status["live"].as_u64().unwrap_or(0))
        .sum();
    if let Some(per_face) = bytes.checked_div(live) {
        fields.insert("bytes_per_face".to_owned(), per_face.into());
    }
    let shards = parts
        .iter()
        .map(|p| {
            let mut status = p.status.clone();
            if let Some(fields) = status.as_object_mut() {
                fields.insert("faces".to_owned(), p.faces.into());
            }
            status
        })
        .collect();
    fields.insert("shards".to_owned(), serde_json::Value::Array(shards));
    combined
}

/// The longest [`wait_indexed`] waits.
const INDEX_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(3600);

fn base_record(mode: Mode, workload: Workload, concurrency: usize, outcome: &RunOutcome) -> RunRecord {
    let ops = outcome.ops_done();
    RunRecord {
        mode,
        workload,
        filter: None,
        selectivity: None,
        concurrency,
        engine_threads: None,
        limit: None,
        threshold: None,
        batch: None,
        ops,
        failed: outcome.total_failed(),
        wall_s: outcome.wall.as_secs_f64(),
        throughput: ops as f64 / outcome.wall.as_secs_f64().max(1e-9),
        faces_per_s: None,
        latency: outcome.latencies.iter().filter_map(|(kind, l)| Some((*kind, l.summary()?))).collect(),
        recall: None,
        recall_min: None,
        threshold_extras: None,
        mean_results: None,
        search_stats: outcome.search_stats.clone(),
        gallery_size_after: None,
        errors: outcome.errors.clone(),
    }
}

#[allow(clippy::too_many_arguments)]
fn search_record(
    cx: &DatasetContext<'_>,
    mode: Mode,
    workload: Workload,
    set: Option<QuerySet>,
    concurrency: usize,
    engine_threads: Option<usize>,
    outcome: &RunOutcome,
    backend: &Backend,
) -> Result<RunRecord> {
    let k = cx.settings.k;
    let mut record = base_record(mode, workload, concurrency, outcome);
    record.engine_threads = engine_threads;
    record.limit = Some(if set == Some(QuerySet::Threshold) { K_TRUTH } else { k });
    if let Some(QuerySet::Filtered(i)) = set {
        record.filter = Some(FILTERS[i].name.to_owned());
        record.selectivity = Some(FILTERS[i].label.to_owned());
    }
    if set == Some(QuerySet::Threshold) {
        record.threshold = Some(cx.threshold);
    }
    let mut recalls = Vec::with_capacity(outcome.answers.len());
    let mut extras = 0u64;
    let mut results = 0usize;
    for (set, query, ids) in &outcome.answers {
        let (truth_ids, truth_scores) = cx.truth_of(*set).row(*query);
        results += ids.len();
        recalls.push(match set {
            QuerySet::Threshold => {
                let r = truth::threshold_recall(ids, truth_ids, truth_scores, cx.threshold, K_TRUTH);
                extras += r.extras as u64;
                r.recall
            }
            _ => truth::recall_at_k(ids, truth_ids, truth_scores, k),
        });
    }
    if !recalls.is_empty() {
        record.recall = Some(recalls.iter().sum::<f64>() / recalls.len() as f64);
        record.recall_min = recalls.iter().copied().reduce(f64::min);
        record.mean_results = Some(results as f64 / recalls.len() as f64);
    }
    if set == Some(QuerySet::Threshold) {
        record.threshold_extras = Some(extras);
    }
    if workload == Workload::Mixed {
        record.gallery_size_after = Some(backend.gallery_size()?);
    }
    Ok(record)
}

/// One line per run on stderr, as the runs go.
fn announce(dataset: &str, r: &RunRecord) {
    let main_kind = if r.workload == Workload::Ingest { OpKind::Batch } else { OpKind::Search };
    let latency = r.latency.get(&main_kind).map_or_else(String::new, |l| {
        format!(", {main_kind:?} p50 {} ms p99 {} ms", ms(l.p50_ms), ms(l.p99_ms)).to_lowercase()
    });
    let mut line = format!(
        "{dataset} {} {}{}{} c={}: {:.0} ops/s{latency}",
        r.mode.name(),
        r.workload.name(),
        r.selectivity.as_deref().map_or_else(String::new, |s| format!(" {s}")),
        r.engine_threads.map_or_else(String::new, |t| format!(" ({t} engine thread)")),
        r.concurrency,
        r.throughput
    );
    if let Some(rate) = r.faces_per_s {
        line.push_str(&format!(", {rate:.0} faces/s"));
    }
    if let Some(recall) = r.recall {
        line.push_str(&format!(", recall {recall:.4}"));
    }
    if r.failed > 0 {
        line.push_str(&format!(", {} FAILED", r.failed));
    }
    eprintln!("{line}");
}

fn run_peers(settings: &Settings, dataset: &Dataset) -> PeersReport {
    let mut report = PeersReport { status: String::new(), file: None, records: Vec::new(), crosscheck: None };
    if settings.peers == PeersChoice::Off {
        report.status = "not run (give --peers to run them)".into();
        return report;
    }
    let script = &settings.peers_script;
    if !script.is_file() {
        report.status = format!("not run: {} is missing", script.display());
        warn_peers(settings, &report.status);
        return report;
    }
    match peers::crosscheck(script, &dataset.dir) {
        Ok(check) => report.crosscheck = Some(check),
        Err(e) => eprintln!("peers crosscheck of {}: {e:#}", dataset.manifest.name),
    }
    let file = match &settings.out {
        Some(out) => out.join(format!("peers-{}.json", dataset.manifest.name)),
        None => std::env::temp_dir().join(format!("facedb-bench-peers-{}.json", dataset.manifest.name)),
    };
    // The peers' graphs get facedb's shape; `--peers-arg` comes after, so it can change it.
    let mut args = Vec::new();
    if let Some(m) = settings.index.m {
        args.extend(["--M".to_owned(), m.to_string()]);
    }
    if let Some(ef_construction) = settings.index.ef_construction {
        args.extend(["--ef-construction".to_owned(), ef_construction.to_string()]);
    }
    args.extend(settings.peers_args.iter().cloned());
    match peers::bench(script, &dataset.dir, settings.k, settings.peers_threads, &args, &file) {
        Ok(records) => {
            report.status = format!("ran ({} records)", records.len());
            report.records = records;
            report.file = Some(file.display().to_string());
        }
        Err(e) => {
            report.status = format!("failed: {e:#}");
            warn_peers(settings, &report.status);
        }
    }
    report
}

fn warn_peers(settings: &Settings, status: &str) {
    if settings.peers == PeersChoice::Required {
        eprintln!("ERROR: --peers was given and the peers {status}");
    } else {
        eprintln!("peers {status}; going on without them");
    }
}

/// The checks that decide the exit status.
fn checks(settings: &Settings, datasets: &[DatasetReport]) -> Vec<Check> {
    let k = settings.k;
    let mut checks = Vec::new();
    let where_ = |d: &DatasetReport, r: &RunRecord| {
        format!(
            "{} {} {}{} c={}",
            d.name,
            r.mode.name(),
            r.workload.name(),
            r.selectivity.as_deref().map_or_else(String::new, |s| format!(" {s}")),
            r.concurrency
        )
    };
    let mut check = |name: String, offenders: Vec<String>| {
        let passed = offenders.is_empty();
        let mut detail: Vec<String> = offenders.into_iter().take(8).collect();
        if !passed && detail.len() == 8 {
            detail.push("...".into());
        }
        checks.push(Check { name, passed, detail: detail.join("; ") });
    };
    let runs = || datasets.iter().flat_map(|d| d.runs.iter().map(move |r| (d, r)));

    let errors: Vec<String> =
        datasets.iter().flat_map(|d| d.errors.iter().map(move |e| format!("{}: {e}", d.name))).collect();
    check("every mode ran to the end".into(), errors);

    let failed: Vec<String> =
        runs().filter(|(_, r)| r.failed > 0).map(|(d, r)| format!("{}: {} failed", where_(d, r), r.failed)).collect();
    check("no failed requests".into(), failed);

    let exact: Vec<String> = runs()
        .filter(|(_, r)| matches!(r.workload, Workload::Search | Workload::Filtered))
        .filter(|(_, r)| r.recall.is_none_or(|x| x < required_recall(r)))
        .map(|(d, r)| format!("{}: recall {:?}", where_(d, r), r.recall))
        .collect();
    check(
        format!("recall@{k} = 1.0 of exact search, plain and every filter (≥ {INDEX_RECALL} where the index answered)"),
        exact,
    );

    let threshold: Vec<String> = runs()
        .filter(|(_, r)| r.workload == Workload::Threshold)
        .filter(|(_, r)| r.recall.is_none_or(|x| x < required_recall(r)) || r.threshold_extras.unwrap_or(0) > 0)
        .map(|(d, r)| format!("{}: recall {:?}, {} below", where_(d, r), r.recall, r.threshold_extras.unwrap_or(0)))
        .collect();
    check(
        format!("threshold searches find every face above the threshold (≥ {INDEX_RECALL} through the index) and none below"),
        threshold,
    );

    let mixed: Vec<String> = runs()
        .filter(|(d, r)| r.workload == Workload::Mixed && d.mixed_recall_checked)
        .filter(|(_, r)| r.recall.is_none_or(|x| x < required_recall(r)))
        .map(|(d, r)| format!("{}: recall {:?}", where_(d, r), r.recall))
        .collect();
    check(
        format!(
            "recall@{k} stays 1.0 (≥ {INDEX_RECALL} through the index) while the mixed workload adds and deletes faces"
        ),
        mixed,
    );

    let slow: Vec<String> = runs()
        .flat_map(|(d, r)| {
            r.latency
                .iter()
                .filter(|(kind, l)| **kind != OpKind::Batch && l.p99_ms >= SANE_P99_MS)
                .map(move |(kind, l)| format!("{}: {kind:?} p99 {} ms", where_(d, r), ms(l.p99_ms)))
        })
        .collect();
    check(format!("latencies sane: p99 < {SANE_P99_MS:.0} ms for every search, add and delete"), slow);

    let sizes: Vec<String> = runs()
        .filter(|(d, r)| r.gallery_size_after.is_some_and(|n| n != d.manifest.count as u64))
        .map(|(d, r)| format!("{}: {:?} faces, expected {}", where_(d, r), r.gallery_size_after, d.manifest.count))
        .collect();
    check("the gallery holds every face after each ingest and after the mixed workload".into(), sizes);

    for d in datasets {
        if let Some(c) = &d.peers.crosscheck {
            let offenders = if c.truth_holds() {
                Vec::new()
            } else {
                vec![format!("recall {} , truth_missed {:?}", c.recall, c.truth_missed)]
            };
            check(format!("{}: ground truth agrees with FAISS IndexFlatIP", d.name), offenders);
        }
    }
    if settings.peers == PeersChoice::Required {
        let offenders: Vec<String> = datasets
            .iter()
            .filter(|d| d.peers.records.is_empty())
            .map(|d| format!("{}: {}", d.name, d.peers.status))
            .collect();
        check("the peers ran (--peers)".into(), offenders);
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_the_median_kth_score() {
        let plain = Truth {
            ids: vec![vec![1, 2], vec![3, 4], vec![5, 6]],
            scores: vec![vec![0.99, 0.95], vec![0.9, 0.8], vec![0.97, 0.9]],
        };
        assert_eq!(threshold_for(&plain, 2), 0.9);
        assert_eq!(threshold_for(&plain, 1), 0.97);
        // Rows shorter than k use their last score.
        assert_eq!(threshold_for(&plain, 10), 0.9);
    }

    #[test]
    fn index_figures_of_shards_combine_into_one_status() {
        let part = |faces: u64, live: u64, tail: u64, bytes_per_face: u64| IndexPart {
            faces,
            status: serde_json::json!({
                "m": 48, "ef_construction": 400, "ef_search": 64, "min_faces": 1000,
                "nodes": live, "live": live, "tombstones": 0, "tail": tail, "capacity": live,
                "bytes_per_face": bytes_per_face, "builds": 1
            }),
        };
        // One part (facedb serve): its status as it is.
        assert_eq!(combined_index_status(&[part(10, 10, 0, 300)]), part(10, 10, 0, 300).status);
        let combined = combined_index_status(&[part(3000, 3000, 0, 300), part(1000, 900, 100, 500)]);
        assert_eq!((combined["m"].as_u64(), combined["min_faces"].as_u64()), (Some(48), Some(1000)));
        assert_eq!((combined["live"].as_u64(), combined["tail"].as_u64()), (Some(3900), Some(100)));
        assert_eq!(combined["builds"].as_u64(), Some(2));
        // (3000 × 300 + 900 × 500) / 3900.
        assert_eq!(combined["bytes_per_face"].as_u64(), Some(346));
        assert_eq!(combined["shards"][1]["faces"].as_u64(), Some(1000));
        assert_eq!(combined["shards"][1]["live"].as_u64(), Some(900));
    }

    #[test]
    fn a_tiny_in_process_run_passes_its_checks_and_writes_its_files() {
        let data_root = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let spec =
            DatasetSpec { kind: Kind::Cone, dim: 16, count: 2000, samples_per_identity: 10, queries: 30, seed: 3 };
        let settings = Settings {
            profile: Profile::Quick,
            datasets: vec![spec],
            data_root: data_root.path().to_owned(),
            out: Some(out.path().to_owned()),
            modes: vec![Mode::InProcess],
            workloads: vec![
                Workload::Ingest,
                Workload::Search,
                Workload::Threshold,
                Workload::Filtered,
                Workload::Mixed,
            ],
            concurrency: vec![1, 2],
            k: 10,
            ingest_batch: 300,
            warmup: 5,
            target: None,
            shards: None,
            facedb_bin: None,
            peers: PeersChoice::Off,
            peers_threads: 1,
            peers_script: PathBuf::from("/nonexistent"),
            peers_args: Vec::new(),
            index: IndexOverrides { m: Some(16), ef_construction: Some(100), ef_search: None },
        };
        let results = run(&settings, "test".into()).unwrap();
        assert!(results.passed, "{:#?}", results.checks);
        let d = &results.datasets[0];
        // ingest ×2, search ×2 + 1 pinned, threshold ×2, filtered 5×2, mixed ×2.
        assert_eq!(d.runs.len(), 2 + 3 + 2 + 10 + 2);
        assert!(d.mixed_recall_checked);
        let mixed = d.runs.iter().find(|r| r.workload == Workload::Mixed).unwrap();
        assert_eq!((mixed.ops, mixed.failed, mixed.gallery_size_after), (30, 0, Some(2000)));
        for file in
            ["results.json", "results.md", "recall-qps-cone-d16-n2000-s3-q30.svg", "latency-cone-d16-n2000-s3-q30.svg"]
        {
            assert!(out.path().join(file).is_file(), "{file}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap()).unwrap();
        assert_eq!(json["datasets"][0]["runs"][0]["workload"], "ingest");
        assert_eq!(json["passed"], true);
        // The truth was cached next to the dataset, in the shared format.
        assert!(data_root.path().join("cone-d16-n2000-s3-q30/truth/sel-1pct.ivecs").is_file());
    }
}
