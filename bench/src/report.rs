//! What a run reports: the records of `results.json`, and their Markdown form
//! (`results.md`, also printed on stdout).
//!
//! Over-HTTP and in-process figures are kept in separate sections: the first include the
//! loopback, JSON both ways and the server's thread hand-offs, the second are the engine alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::dataset::Manifest;
use crate::machine::Machine;
use crate::metrics::{mib, ms, thousands, LatencySummary};
use crate::peers::{Crosscheck, PeerRecord};
use crate::workload::{OpKind, Workload};

/// Where a workload ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
pub enum Mode {
    /// Over HTTP against `facedb serve` (started by the harness, or `--target`), or a
    /// `facedb router` in front of `facedb shard` processes (`--shards`).
    #[serde(rename = "http")]
    Http,
    /// The library called directly.
    #[serde(rename = "in-process")]
    InProcess,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::InProcess => "in-process",
        }
    }
}

/// Everything one `facedb-bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub format: &'static str,
    pub profile: String,
    /// The command line, as given.
    pub command: String,
    /// UTC, when the run started.
    pub date: String,
    pub commit: Option<String>,
    /// `release` or `debug`: how the harness (and so the in-process engine) was built.
    pub build: &'static str,
    pub machine: Machine,
    pub settings: SettingsRecord,
    pub datasets: Vec<DatasetReport>,
    pub checks: Vec<Check>,
    pub passed: bool,
    pub wall_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettingsRecord {
    pub k: usize,
    pub concurrency: Vec<usize>,
    pub ingest_batch: usize,
    pub modes: Vec<Mode>,
    pub workloads: Vec<Workload>,
    pub warmup: usize,
    pub target: Option<String>,
    /// `--shards N`: the HTTP workloads went through a `facedb router` in front of N
    /// `facedb shard` processes (null: `facedb serve`, or `--target`).
    pub shards: Option<usize>,
    pub peers: String,
    pub peers_threads: usize,
    /// Rayon's global pool: the threads one in-process search may use.
    pub engine_threads: usize,
    /// The bench gallery's index parameters (the body of its creation).
    pub index: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetReport {
    pub name: String,
    pub dir: String,
    pub manifest: Manifest,
    pub generated_now: bool,
    /// Generating (or finding) and loading the dataset.
    pub prepare_s: f64,
    pub truth_sets_computed: usize,
    pub truth_computed_s: f64,
    /// The score threshold of the `threshold` workload.
    pub threshold: f64,
    /// Whether the mixed workload's adds are known never to enter a top-k (so its recall
    /// must stay 1).
    pub mixed_recall_checked: bool,
    pub runs: Vec<RunRecord>,
    pub memory: Vec<MemoryRecord>,
    /// How long the graph took to hold every face once the ingest was over, per mode.
    pub index_waits: Vec<IndexWait>,
    pub peers: PeersReport,
    /// Failures that stopped a mode (a server that did not start, ...).
    pub errors: Vec<String>,
}

/// The wait for the bench gallery's graph after the ingest (the searches start after it).
#[derive(Debug, Clone, Serialize)]
pub struct IndexWait {
    pub mode: Mode,
    pub seconds: f64,
    /// The gallery's `indexes` entry of the status when the graph was complete.
    pub status: serde_json::Value,
}

/// One workload at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub mode: Mode,
    pub workload: Workload,
    /// The filtered set (`sel-1pct`), for `filtered`.
    pub filter: Option<String>,
    /// The share of faces passing the filter (`1%`).
    pub selectivity: Option<String>,
    pub concurrency: usize,
    /// In-process runs pinned to a rayon pool of this many threads (else the global pool).
    pub engine_threads: Option<usize>,
    /// `limit` of the searches (top-k) or of the threshold searches.
    pub limit: Option<usize>,
    pub threshold: Option<f64>,
    /// Ingest: faces per batch.
    pub batch: Option<usize>,
    /// Operations that succeeded.
    pub ops: u64,
    pub failed: u64,
    pub wall_s: f64,
    /// Operations per second (searches + writes for mixed; batches for ingest).
    pub throughput: f64,
    pub faces_per_s: Option<f64>,
    /// Per kind of operation: `batch`, `search`, `add`, `delete`.
    pub latency: BTreeMap<OpKind, LatencySummary>,
    /// Mean over answered searches of recall@k (threshold: share of the faces above it found).
    pub recall: Option<f64>,
    pub recall_min: Option<f64>,
    /// Threshold: results below the threshold (should be 0).
    pub threshold_extras: Option<u64>,
    /// Mean number of results per search.
    pub mean_results: Option<f64>,
    /// Searches per `X-search-stat` value (HTTP).
    pub search_stats: BTreeMap<String, u64>,
    pub gallery_size_after: Option<u64>,
    pub errors: Vec<String>,
}

impl RunRecord {
    pub fn search_latency(&self) -> Option<&LatencySummary> {
        self.latency.get(&OpKind::Search)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryRecord {
    pub mode: Mode,
    /// `server` (the facedb process), `cluster` (the shards and the router, summed) or
    /// `harness` (this process, holding the engine).
    pub process: String,
    /// `after ingest` or `at end`.
    pub point: String,
    pub vm_rss_bytes: u64,
    pub vm_hwm_bytes: u64,
    /// In-process: VmRSS growth from before the engine existed (≈ the engine's memory).
    pub growth_bytes: Option<i64>,
    /// `cluster`: each process (`shard 0`, ..., `router`); the figures above are their sums.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessMemory>,
}

/// One process of a cluster's memory record.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessMemory {
    pub name: String,
    pub vm_rss_bytes: u64,
    pub vm_hwm_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeersReport {
    /// `not run: ...`, `ran`, `failed: ...`.
    pub status: String,
    pub file: Option<String>,
    pub records: Vec<PeerRecord>,
    pub crosscheck: Option<Crosscheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

fn opt_ms(summary: Option<&LatencySummary>, pick: fn(&LatencySummary) -> f64) -> String {
    summary.map_or_else(|| "-".to_owned(), |s| ms(pick(s)))
}

fn recall_text(recall: Option<f64>) -> String {
    match recall {
        Some(r) if r >= 1.0 => "1.0".to_owned(),
        Some(r) => format!("{r:.4}"),
        None => "-".to_owned(),
    }
}

fn stats_text(stats: &BTreeMap<String, u64>) -> String {
    if stats.is_empty() {
        return "-".to_owned();
    }
    stats.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

fn rate(x: f64) -> String {
    if x >= 100.0 {
        thousands(x.round() as u64)
    } else {
        format!("{x:.1}")
    }
}

/// The Markdown report.
pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let machine = &results.machine;
    let _ = writeln!(out, "# facedb-bench results\n");
    let _ = writeln!(
        out,
        "Profile `{}`, {}, commit `{}`, {} build; {} cores ({}), {} of memory; wall time {:.0} s.\n",
        results.profile,
        results.date,
        results.commit.as_deref().unwrap_or("unknown"),
        results.build,
        machine.nproc,
        machine.cpu_model.as_deref().unwrap_or("unknown CPU"),
        machine
            .memory_bytes
            .map_or_else(|| "unknown".to_owned(), |b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)),
        results.wall_s
    );
    let s = &results.settings;
    let _ = writeln!(out, "Command: `{}`\n", results.command);
    let _ = writeln!(
        out,
        "k = {}, client concurrency {:?}, ingest batches of {} faces, {} untimed searches before each mode's runs, \
         in-process searches on rayon's pool of {} threads{}{}.\n",
        s.k,
        s.concurrency,
        s.ingest_batch,
        s.warmup,
        s.engine_threads,
        s.target.as_ref().map_or_else(String::new, |t| format!("; HTTP target {t}")),
        s.shards.map_or_else(String::new, |n| format!(
            "; over HTTP through `facedb router` in front of {n} `facedb shard` processes"
        ))
    );
    for dataset in &results.datasets {
        dataset_markdown(&mut out, dataset, s.k, s.engine_threads, s.shards);
    }
    let _ = writeln!(out, "## Checks\n");
    for check in &results.checks {
        let mark = if check.passed { "pass" } else { "FAIL" };
        let _ = writeln!(
            out,
            "- **{mark}**: {}{}",
            check.name,
            if check.detail.is_empty() { String::new() } else { format!(" ({})", check.detail) }
        );
    }
    let _ = writeln!(out, "\nResult: {}", if results.passed { "PASSED" } else { "FAILED" });
    out
}

fn dataset_markdown(out: &mut String, d: &DatasetReport, k: usize, engine_threads: usize, shards: Option<usize>) {
    let m = &d.manifest;
    let _ = writeln!(out, "## {}\n", d.name);
    let mut line = format!(
        "{} data, {} faces × {}-d float32 ({} identities × {}), {} queries, seed {}.",
        m.kind.name(),
        thousands(m.count as u64),
        m.dim,
        thousands(m.identities as u64),
        m.samples_per_identity,
        thousands(m.queries as u64),
        m.seed
    );
    let c = &m.measured;
    if let Some(same) = c.same_identity {
        let _ = write!(line, " Cosines: same identity {:.3} (p5–p95 {:.3}–{:.3}),", same.mean, same.p05, same.p95);
    } else {
        line.push_str(" Cosines:");
    }
    let dd = c.different_identity;
    let _ = write!(line, " different identities {:.3} ({:.3}–{:.3})", dd.mean, dd.p05, dd.p95);
    if let Some(q) = c.query_to_own_identity {
        let _ = write!(line, ", query to a sample of its identity {:.3}", q.mean);
    }
    let _ = write!(
        line,
        ". Dataset {} ({:.1} s with loading); ground truth: {}. Threshold searches: score ≥ {} (the median score at rank {k}).",
        if d.generated_now { "generated now" } else { "reused" },
        d.prepare_s,
        if d.truth_sets_computed == 0 {
            "all sets cached".to_owned()
        } else {
            format!("{} sets computed in {:.1} s", d.truth_sets_computed, d.truth_computed_s)
        },
        d.threshold
    );
    let _ = writeln!(out, "{line}\n");
    for error in &d.errors {
        let _ = writeln!(out, "**Error**: {error}\n");
    }
    for mode in [Mode::Http, Mode::InProcess] {
        let runs: Vec<&RunRecord> = d.runs.iter().filter(|r| r.mode == mode).collect();
        if runs.is_empty() {
            continue;
        }
        let title = match (mode, shards) {
            (Mode::Http, None) => {
                "Over HTTP (client-side latency: loopback, JSON both ways, the server's hand-offs)".to_owned()
            }
            (Mode::Http, Some(n)) => format!(
                "Over HTTP through `facedb router` in front of {n} `facedb shard` processes (client-side latency: \
                 loopback, JSON both ways, the router's fan-out to the shards and merge)"
            ),
            (Mode::InProcess, _) => {
                "In-process (engine only: `engine.search` / `add_faces` / `delete_faces` called directly)".to_owned()
            }
        };
        let _ = writeln!(out, "### {title}\n");
        for wait in d.index_waits.iter().filter(|w| w.mode == mode) {
            let s = &wait.status;
            let _ = writeln!(
                out,
                "HNSW graph (m {}, ef_construction {}, ef_search {}): complete {:.1} s after the ingest ended \
                 ({} faces, {} builds, {} bytes of graph per face); the searches below ran after it.\n",
                s["m"], s["ef_construction"], s["ef_search"], wait.seconds, s["live"], s["builds"], s["bytes_per_face"]
            );
        }
        mode_markdown(out, &runs, k);
        let memory: Vec<&MemoryRecord> = d.memory.iter().filter(|r| r.mode == mode).collect();
        if !memory.is_empty() {
            let _ = writeln!(out, "Memory:");
            for r in memory {
                let whose = match r.mode {
                    Mode::Http if !r.processes.is_empty() => format!(
                        "{} processes summed (VmHWM: the sum of each one's peak): {}",
                        r.processes.len(),
                        r.processes
                            .iter()
                            .map(|p| format!("{} VmRSS {}, VmHWM {}", p.name, mib(p.vm_rss_bytes), mib(p.vm_hwm_bytes)))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    Mode::Http => "server (the engine, its HTTP layer and its allocator)".to_owned(),
                    Mode::InProcess => format!(
                        "harness (the dataset, request payloads and the engine; VmRSS grew {} since before the engine, \
                         an upper estimate of the engine's memory)",
                        mib(r.growth_bytes.unwrap_or(0).max(0) as u64)
                    ),
                };
                let _ = writeln!(
                    out,
                    "- {}: VmRSS {}, VmHWM {}; {whose}",
                    r.point,
                    mib(r.vm_rss_bytes),
                    mib(r.vm_hwm_bytes)
                );
            }
            out.push('\n');
        }
    }
    peers_markdown(out, d, engine_threads);
    if !d.runs.is_empty() {
        let _ = writeln!(
            out,
            "Plots: [recall vs QPS](recall-qps-{0}.svg), [latency vs concurrency](latency-{0}.svg)\n",
            d.name
        );
    }
}

fn mode_markdown(out: &mut String, runs: &[&RunRecord], k: usize) {
    let ingest: Vec<&&RunRecord> = runs.iter().filter(|r| r.workload == Workload::Ingest).collect();
    if !ingest.is_empty() {
        let _ = writeln!(out, "Ingest (times per batch request, in ms):\n");
        out.push_str("| concurrency | batch | faces | s | faces/s | p50 | p95 | p99 | max | failed |\n");
        out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in ingest {
            let l = r.latency.get(&OpKind::Batch);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} |",
                r.concurrency,
                r.batch.unwrap_or(0),
                r.gallery_size_after.map_or_else(|| "-".to_owned(), thousands),
                r.wall_s,
                r.faces_per_s.map_or_else(|| "-".to_owned(), rate),
                opt_ms(l, |s| s.p50_ms),
                opt_ms(l, |s| s.p95_ms),
                opt_ms(l, |s| s.p99_ms),
                opt_ms(l, |s| s.max_ms),
                r.failed
            );
        }
        out.push('\n');
    }
    let searches: Vec<&&RunRecord> = runs
        .iter()
        .filter(|r| matches!(r.workload, Workload::Search | Workload::Threshold | Workload::Filtered))
        .collect();
    if !searches.is_empty() {
        let _ = writeln!(out, "Searches (latency in ms; recall@{k}, threshold: share of the faces above it found):\n");
        out.push_str("| workload | filter | concurrency | QPS | p50 | p95 | p99 | max | recall | results | failed | X-search-stat |\n");
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for r in searches {
            let l = r.search_latency();
            let workload = match (r.workload, r.engine_threads) {
                (Workload::Threshold, _) => format!("threshold ≥ {}", r.threshold.unwrap_or(0.0)),
                (w, Some(t)) => format!("{} ({t} engine thread{})", w.name(), if t == 1 { "" } else { "s" }),
                (w, None) => w.name().to_owned(),
            };
            let mut recall = recall_text(r.recall);
            if let Some(extras) = r.threshold_extras.filter(|&e| e > 0) {
                let _ = write!(recall, " ({extras} below)");
            }
            let _ = writeln!(
                out,
                "| {workload} | {} | {} | {} | {} | {} | {} | {} | {recall} | {} | {} | {} |",
                r.selectivity.as_deref().unwrap_or("-"),
                r.concurrency,
                rate(r.throughput),
                opt_ms(l, |s| s.p50_ms),
                opt_ms(l, |s| s.p95_ms),
                opt_ms(l, |s| s.p99_ms),
                opt_ms(l, |s| s.max_ms),
                r.mean_results.map_or_else(|| "-".to_owned(), |m| format!("{m:.1}")),
                r.failed,
                stats_text(&r.search_stats)
            );
        }
        out.push('\n');
    }
    let mixed: Vec<&&RunRecord> = runs.iter().filter(|r| r.workload == Workload::Mixed).collect();
    if !mixed.is_empty() {
        let _ = writeln!(out, "Mixed: 90% top-{k} searches, 10% single-face adds and deletes (latency in ms):\n");
        out.push_str("| concurrency | ops/s | search p50 | search p99 | add p50 | add p99 | delete p50 | delete p99 | max | recall | failed | X-search-stat |\n");
        out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for r in mixed {
            let (s, a, d) =
                (r.latency.get(&OpKind::Search), r.latency.get(&OpKind::Add), r.latency.get(&OpKind::Delete));
            let max = r.latency.values().map(|l| l.max_ms).fold(0.0, f64::max);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.concurrency,
                rate(r.throughput),
                opt_ms(s, |x| x.p50_ms),
                opt_ms(s, |x| x.p99_ms),
                opt_ms(a, |x| x.p50_ms),
                opt_ms(a, |x| x.p99_ms),
                opt_ms(d, |x| x.p50_ms),
                opt_ms(d, |x| x.p99_ms),
                ms(max),
                recall_text(r.recall),
                r.failed,
                stats_text(&r.search_stats)
            );
        }
        out.push('\n');
    }
    for r in runs {
        for e in &r.errors {
            let _ = writeln!(
                out,
                "- error in {} {} at concurrency {}: {e}",
                r.workload.name(),
                r.selectivity.as_deref().unwrap_or(""),
                r.concurrency
            );
        }
    }
}

fn peers_markdown(out: &mut String, d: &DatasetReport, engine_threads: usize) {
    let p = &d.peers;
    let _ = writeln!(out, "### Peers (FAISS, hnswlib: same files, queries, k)\n");
    if let Some(check) = &p.crosscheck {
        let _ = writeln!(
            out,
            "Ground truth cross-checked against FAISS IndexFlatIP {}: recall@{} {}, largest score difference {}{}{}.\n",
            check.faiss_version.as_deref().unwrap_or(""),
            check.k,
            recall_text(Some(check.recall)),
            check.max_score_diff.map_or_else(|| "?".to_owned(), |x| format!("{x:.1e}")),
            check
                .ties_beyond_truth
                .filter(|&t| t > 0)
                .map_or_else(String::new, |t| format!(", {t} queries with a near-tie past the truth's last place")),
            if check.truth_holds() { "" } else { ": **the truth does not hold**" }
        );
    }
    if p.records.is_empty() {
        let _ = writeln!(out, "Peers {}.\n", p.status);
        return;
    }
    let _ = writeln!(
        out,
        "QPS: one query at a time, one after another (peers: on one thread whatever `threads` is; facedb: \
         concurrency 1, the engine's pool noted); batch QPS: all queries in one call on `threads` threads \
         (facedb: the in-process run at that concurrency). Latency in ms.\n"
    );
    out.push_str("| engine | params | threads | build s | QPS | batch QPS | p50 | p95 | p99 | recall@k |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let threads = p.records.first().map_or(1, |r| r.threads);
    let single: Vec<&RunRecord> =
        d.runs.iter().filter(|r| r.workload == Workload::Search && r.concurrency == 1).collect();
    let batch = d.runs.iter().find(|r| {
        r.mode == Mode::InProcess
            && r.workload == Workload::Search
            && r.concurrency == threads
            && r.engine_threads.is_none()
    });
    for r in &single {
        let l = r.search_latency();
        let (label, batch_qps) = match (r.mode, r.engine_threads) {
            (Mode::Http, _) => ("the server's threads".to_owned(), "-".to_owned()),
            (Mode::InProcess, Some(t)) => (format!("engine pool of {t}"), "-".to_owned()),
            (Mode::InProcess, None) => (
                "engine on rayon's global pool".to_owned(),
                batch.map_or_else(|| "-".to_owned(), |b| rate(b.throughput)),
            ),
        };
        let _ = writeln!(
            out,
            "| facedb ({}; {}) | {label} | {} | - | {} | {batch_qps} | {} | {} | {} | {} |",
            r.mode.name(),
            stats_text(&r.search_stats),
            r.engine_threads
                .or((r.mode == Mode::InProcess).then_some(engine_threads))
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
            rate(r.throughput),
            opt_ms(l, |s| s.p50_ms),
            opt_ms(l, |s| s.p95_ms),
            opt_ms(l, |s| s.p99_ms),
            recall_text(r.recall)
        );
    }
    let mut records: Vec<&PeerRecord> = p.records.iter().collect();
    records.sort_by(|a, b| a.engine.cmp(&b.engine).then(a.ef().total_cmp(&b.ef())));
    for r in records {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            r.engine,
            r.params_label(),
            r.threads,
            r.build_s,
            rate(r.qps),
            r.batch_qps.map_or_else(|| "-".to_owned(), rate),
            ms(r.p50_ms),
            ms(r.p95_ms),
            ms(r.p99_ms),
            recall_text(Some(r.recall))
        );
    }
    let _ = writeln!(out, "\nPeers {}{}.\n", p.status, p.file.as_ref().map_or_else(String::new, |f| format!(" ({f})")));
    ratio_markdown(out, &single, &p.records);
}

/// The recall the index comparison is made at (issue 5).
const RATIO_RECALL: f64 = 0.99;

/// facedb's one-query-at-a-time QPS over hnswlib's at the smallest `ef` reaching
/// [`RATIO_RECALL`], on one thread.
fn ratio_markdown(out: &mut String, single: &[&RunRecord], peers: &[PeerRecord]) {
    if !peers.iter().any(|r| r.engine == "hnswlib") {
        let _ = writeln!(out, "hnswlib did not run: no ratio.\n");
        return;
    }
    let Some(hnswlib) = peers
        .iter()
        .filter(|r| r.engine == "hnswlib" && r.recall >= RATIO_RECALL)
        .min_by(|a, b| a.ef().total_cmp(&b.ef()))
    else {
        let _ = writeln!(out, "hnswlib did not reach recall {RATIO_RECALL} at any ef: no ratio.\n");
        return;
    };
    let mut parts = Vec::new();
    for r in single.iter().filter(|r| r.mode == Mode::Http || r.engine_threads == Some(1)) {
        let recall = r.recall.unwrap_or(0.0);
        let ratio = r.throughput / hnswlib.qps.max(1e-9);
        let shortfall = if recall < RATIO_RECALL { format!(", but at recall {recall:.4}") } else { String::new() };
        parts.push(format!("{} {ratio:.2}×{shortfall}", r.mode.name()));
    }
    let _ = writeln!(
        out,
        "facedb's QPS over hnswlib's ({}, recall {:.4}, {} QPS on one thread): {}.\n",
        hnswlib.params_label(),
        hnswlib.recall,
        rate(hnswlib.qps),
        parts.join("; ")
    );
}
