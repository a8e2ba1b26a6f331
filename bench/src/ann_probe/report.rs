//! What `ann-probe` reports: the records of `ann-probe.json` and their Markdown form
//! (`ann-probe.md`, also printed on stdout).

use std::fmt::Write as _;

use serde::Serialize;

use super::candidate::{Crate, Deletes};
use super::exact::ExactRecord;
use super::sweep::{Point, Sweep};
use crate::dataset::MeasuredCosines;
use crate::machine::Machine;
use crate::metrics::{mib, ms, thousands};

/// The recall issue 5 asks for.
pub const RECALL_TARGET: f64 = 0.99;

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub format: &'static str,
    pub command: String,
    pub date: String,
    pub commit: Option<String>,
    pub build: &'static str,
    pub machine: Machine,
    pub versions: Versions,
    pub dataset: DatasetRecord,
    pub settings: SettingsRecord,
    /// facedb's exact scan per query set (empty with `--exact-queries 0`).
    pub exact: Vec<ExactRecord>,
    pub runs: Vec<RunRecord>,
    pub wall_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub hnsw_rs: &'static str,
    pub usearch: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetRecord {
    pub name: String,
    pub dir: String,
    pub kind: String,
    pub count: usize,
    pub dim: usize,
    pub queries: usize,
    pub measured: MeasuredCosines,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettingsRecord {
    pub k: usize,
    pub crates: Vec<Crate>,
    pub m: Vec<usize>,
    pub ef_construction: usize,
    pub ef: Vec<usize>,
    /// The filters' truth set names (`sel-1pct`).
    pub filters: Vec<String>,
    pub build_threads: usize,
    pub warmup: usize,
    pub min_queries: usize,
    pub point_seconds: f64,
    pub delete_share: f64,
    pub steps: Vec<String>,
}

/// One crate at one `M`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    #[serde(rename = "crate")]
    pub krate: Crate,
    pub m: usize,
    pub ef_construction: usize,
    pub build: Option<BuildRecord>,
    /// Why the run ended early (a failed build), if it did.
    pub error: Option<String>,
    pub plain: Option<Sweep>,
    pub filtered: Vec<FilteredSweep>,
    pub persistence: Option<PersistRecord>,
    /// Why save / load / view failed, if it did.
    pub persistence_error: Option<String>,
    pub deletes: Option<DeleteRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildRecord {
    pub seconds: f64,
    pub threads: usize,
    /// Growth of the process's VmRSS over the build (after returning freed memory to the OS).
    pub rss_growth_bytes: Option<u64>,
    /// The crate's own figure (usearch `memory_usage`).
    pub crate_memory_bytes: Option<u64>,
    pub acceleration: Option<String>,
    /// How the bottom layer is linked (facedb's graph only).
    pub links: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FilteredSweep {
    pub set: String,
    pub label: String,
    /// Faces passing the filter.
    pub passing: usize,
    pub exact_qps: Option<f64>,
    pub sweep: Sweep,
}

#[derive(Debug, Clone, Serialize)]
pub struct PersistRecord {
    pub file_bytes: u64,
    pub save_s: f64,
    pub load_s: f64,
    pub load_rss_growth_bytes: Option<u64>,
    pub view_s: f64,
    /// The `ef` the copies were searched with.
    pub ef: usize,
    pub original: Point,
    pub loaded: Point,
    pub viewed: Point,
    /// Queries compared, and how many got the same ids from the copy as from the original.
    pub compared: usize,
    pub loaded_identical: usize,
    pub viewed_identical: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeleteRecord {
    pub method: Deletes,
    pub removed: usize,
    /// Time of all `remove` calls (native deletes only).
    pub remove_s: Option<f64>,
    /// The index's size after the removals (native deletes only).
    pub size_after: Option<usize>,
    /// `derived` (the stored truth without the removed faces) or `computed` (exact, again).
    pub truth: &'static str,
    pub sweep: Sweep,
}

fn exact_qps_of(results: &Results, set: &str) -> Option<f64> {
    results.exact.iter().find(|e| e.set == set).map(|e| e.point.qps)
}

fn point_row(out: &mut String, lead: &str, p: &Point) {
    let _ = writeln!(
        out,
        "| {lead} | {} | {} | {} | {} | {:.4} | {:.2} | {} | {} | {} | {} |",
        p.ef,
        qps(p.qps),
        ms(p.latency.p50_ms),
        ms(p.latency.p99_ms),
        p.recall,
        p.recall_min,
        p.below_half,
        p.short_answers,
        p.forbidden_returned,
        p.queries
    );
}

fn qps(value: f64) -> String {
    if value >= 100.0 {
        thousands(value.round() as u64)
    } else {
        format!("{value:.1}")
    }
}

fn sweep_notes(out: &mut String, lead: &str, sweep: &Sweep) {
    if let Some((ef, reason)) = sweep.stopped {
        let _ = writeln!(out, "| {lead} | stopped after ef={ef}: {} | | | | | | | | | |", reason.describe());
    }
    if let Some(e) = &sweep.error {
        let _ = writeln!(out, "| {lead} | **failed**: {} | | | | | | | | | |", e.replace('|', "/"));
    }
}

const POINT_HEADER: &str = "| crate, M | ef | QPS | p50 ms | p99 ms | recall@k | min recall | queries < 0.5 | short answers | forbidden ids returned | queries |\n\
                            |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

/// "QPS @ ef" of the fastest point at the recall target, or the best recall reached.
fn best_cell(sweep: Option<&Sweep>) -> String {
    let Some(sweep) = sweep else { return "-".to_owned() };
    match (sweep.best_at(RECALL_TARGET), sweep.max_recall()) {
        (Some(p), _) => format!("**{}** @ ef {} (p99 {} ms)", qps(p.qps), p.ef, ms(p.latency.p99_ms)),
        (None, Some(p)) => format!("not reached: max {:.3} @ ef {} ({} QPS)", p.recall, p.ef, qps(p.qps)),
        (None, None) => match &sweep.error {
            Some(_) => "failed".to_owned(),
            None => "-".to_owned(),
        },
    }
}

pub fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let d = &r.dataset;
    let _ = writeln!(out, "# ann-probe: HNSW crates on {}\n", d.name);
    let _ = writeln!(
        out,
        "`{}`  \n{} · commit {} · {} build · {} cores ({}) · hnsw_rs {} · usearch {} · wall {:.0} s\n",
        r.command,
        r.date,
        r.commit.as_deref().unwrap_or("?"),
        r.build,
        r.machine.nproc,
        r.machine.cpu_model.as_deref().unwrap_or("?"),
        r.versions.hnsw_rs,
        r.versions.usearch,
        r.wall_s
    );
    let same = d.measured.same_identity.map_or_else(|| "-".to_owned(), |s| format!("{:.3}", s.mean));
    let _ = writeln!(
        out,
        "Dataset: {} faces × {}-d, {} ({} queries); cosines: same identity {same}, different identities {:.3}.  \n\
         Settings: k = {}, ef_construction = {}, build threads {}; every search one query at a time on one thread; \
         per point {} warmup searches, then the queries until all ran or {} s passed (at least {}). \
         A sweep stops once recall ≥ 0.999 or QPS falls below the exact scan's for the same query set.\n",
        thousands(d.count as u64),
        d.dim,
        d.kind,
        d.queries,
        d.measured.different_identity.mean,
        r.settings.k,
        r.settings.ef_construction,
        r.settings.build_threads,
        r.settings.warmup,
        r.settings.point_seconds,
        r.settings.min_queries
    );

    // Summary first: the figures the decision needs.
    let _ = writeln!(out, "## Summary: fastest single-thread QPS at recall@{} ≥ {RECALL_TARGET}\n", r.settings.k);
    let mut header = String::from("| crate | M | plain");
    let mut rule = String::from("|---|---:|---");
    for f in &r.settings.filters {
        let label = r.runs.iter().flat_map(|run| &run.filtered).find(|s| &s.set == f).map_or(f.as_str(), |s| &s.label);
        let _ = write!(header, " | filter {label}");
        rule.push_str("|---");
    }
    let _ = writeln!(out, "{header} | after deletes |\n{rule}|---|");
    for run in &r.runs {
        let mut row = format!("| {} | {} | {}", run.krate.name(), run.m, best_cell(run.plain.as_ref()));
        for f in &r.settings.filters {
            let sweep = run.filtered.iter().find(|s| &s.set == f).map(|s| &s.sweep);
            let _ = write!(row, " | {}", best_cell(sweep));
        }
        let _ = writeln!(row, " | {} |", best_cell(run.deletes.as_ref().map(|d| &d.sweep)));
        out.push_str(&row);
    }
    if !r.exact.is_empty() {
        let cells: Vec<String> = r
            .exact
            .iter()
            .map(|e| format!("{} {} QPS", if e.set == "plain" { "plain" } else { &e.label }, qps(e.point.qps)))
            .collect();
        let _ = writeln!(out, "\nfacedb exact scan, one thread: {}.", cells.join(", "));
    }
    out.push('\n');

    let _ = writeln!(out, "## Build\n");
    let _ = writeln!(
        out,
        "| crate | M | efC | build s | faces/s | VmRSS growth | crate's memory figure | bytes/face (RSS) | SIMD |\n|---|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    let mut linked = Vec::new();
    for run in &r.runs {
        match &run.build {
            Some(b) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} |",
                    run.krate.name(),
                    run.m,
                    run.ef_construction,
                    b.seconds,
                    thousands((d.count as f64 / b.seconds.max(1e-9)) as u64),
                    b.rss_growth_bytes.map_or_else(|| "-".to_owned(), mib),
                    b.crate_memory_bytes.map_or_else(|| "-".to_owned(), mib),
                    b.rss_growth_bytes.map_or_else(|| "-".to_owned(), |g| (g / d.count.max(1) as u64).to_string()),
                    b.acceleration.as_deref().unwrap_or("-")
                );
                if let Some(links) = &b.links {
                    linked.push(format!("- {} M={} efC={}: {links}", run.krate.name(), run.m, run.ef_construction));
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | **failed**: {} | | | | | |",
                    run.krate.name(),
                    run.m,
                    run.ef_construction,
                    run.error.as_deref().unwrap_or("?").replace('|', "/")
                );
            }
        }
    }
    out.push('\n');
    if !linked.is_empty() {
        let _ = writeln!(out, "Layer 0 of the graph:\n\n{}\n", linked.join("\n"));
    }

    if !r.exact.is_empty() {
        let _ = writeln!(out, "## Exact scan (facedb in-process, one thread)\n");
        let _ =
            writeln!(out, "| query set | QPS | p50 ms | p99 ms | recall@k | queries |\n|---|---:|---:|---:|---:|---:|");
        for e in &r.exact {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.4} | {} |",
                if e.set == "plain" { "plain" } else { &e.label },
                qps(e.point.qps),
                ms(e.point.latency.p50_ms),
                ms(e.point.latency.p99_ms),
                e.point.recall,
                e.point.queries
            );
        }
        out.push('\n');
    }

    let _ = writeln!(out, "## Plain search\n");
    out.push_str(POINT_HEADER);
    for run in &r.runs {
        let lead = format!("{} M={}", run.krate.name(), run.m);
        if let Some(sweep) = &run.plain {
            sweep.points.iter().for_each(|p| point_row(&mut out, &lead, p));
            sweep_notes(&mut out, &lead, sweep);
        }
    }
    out.push('\n');

    for set in &r.settings.filters {
        let Some(first) = r.runs.iter().flat_map(|run| &run.filtered).find(|s| &s.set == set) else { continue };
        let exact = exact_qps_of(r, set).map_or_else(|| "not measured".to_owned(), |q| format!("{} QPS", qps(q)));
        let _ = writeln!(
            out,
            "## Filtered search, {} of the faces pass ({} faces; exact scan {exact})\n",
            first.label,
            thousands(first.passing as u64)
        );
        out.push_str(POINT_HEADER);
        for run in &r.runs {
            let lead = format!("{} M={}", run.krate.name(), run.m);
            if let Some(f) = run.filtered.iter().find(|s| &s.set == set) {
                f.sweep.points.iter().for_each(|p| point_row(&mut out, &lead, p));
                sweep_notes(&mut out, &lead, &f.sweep);
            }
        }
        out.push('\n');
    }

    if r.runs.iter().any(|run| run.deletes.is_some()) {
        let _ = writeln!(
            out,
            "## Deletes: {:.0}% of the faces removed, then plain searches\n",
            r.settings.delete_share * 100.0
        );
        let _ = writeln!(
            out,
            "| crate, M | how | removed | remove s | index size after | truth |\n|---|---|---:|---:|---:|---|"
        );
        for run in &r.runs {
            if let Some(del) = &run.deletes {
                let _ = writeln!(
                    out,
                    "| {} M={} | {} | {} | {} | {} | {} |",
                    run.krate.name(),
                    run.m,
                    match del.method {
                        Deletes::Native => "`remove` (tombstone in the graph)",
                        Deletes::ViaFilter => "no delete: the search filter rejects removed ids",
                    },
                    thousands(del.removed as u64),
                    del.remove_s.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}")),
                    del.size_after.map_or_else(|| "-".to_owned(), |n| thousands(n as u64)),
                    del.truth
                );
            }
        }
        out.push('\n');
        out.push_str(POINT_HEADER);
        for run in &r.runs {
            if let Some(del) = &run.deletes {
                let lead = format!("{} M={}", run.krate.name(), run.m);
                del.sweep.points.iter().for_each(|p| point_row(&mut out, &lead, p));
                sweep_notes(&mut out, &lead, &del.sweep);
            }
        }
        out.push('\n');
    }

    if r.runs.iter().any(|run| run.persistence.is_some() || run.persistence_error.is_some()) {
        let _ = writeln!(out, "## usearch: save, load, view (memory-mapped)\n");
        let _ = writeln!(
            out,
            "| M | file | save s | load s | load RSS growth | view s | ef | QPS original / loaded / viewed | recall original / loaded / viewed | same answers loaded / viewed |\n\
             |---:|---:|---:|---:|---:|---:|---:|---|---|---|"
        );
        for run in &r.runs {
            if let Some(e) = &run.persistence_error {
                let _ = writeln!(out, "| {} | **failed**: {} | | | | | | | | |", run.m, e.replace('|', "/"));
            }
            if let Some(p) = &run.persistence {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.2} | {:.2} | {} | {:.3} | {} | {} / {} / {} | {:.4} / {:.4} / {:.4} | {}/{} / {}/{} |",
                    run.m,
                    mib(p.file_bytes),
                    p.save_s,
                    p.load_s,
                    p.load_rss_growth_bytes.map_or_else(|| "-".to_owned(), mib),
                    p.view_s,
                    p.ef,
                    qps(p.original.qps),
                    qps(p.loaded.qps),
                    qps(p.viewed.qps),
                    p.original.recall,
                    p.loaded.recall,
                    p.viewed.recall,
                    p.loaded_identical,
                    p.compared,
                    p.viewed_identical,
                    p.compared
                );
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LatencySummary;

    fn point(ef: usize, recall: f64, qps: f64) -> Point {
        let latency = LatencySummary { count: 1, p50_ms: 1.0, p95_ms: 1.0, p99_ms: 1.5, max_ms: 2.0, mean_ms: 1.0 };
        Point {
            ef,
            queries: 1,
            qps,
            latency,
            recall,
            recall_min: recall,
            below_half: 0,
            short_answers: 0,
            forbidden_returned: 0,
        }
    }

    #[test]
    fn best_cells() {
        let sweep = Sweep { points: vec![point(16, 0.9, 2000.0), point(64, 0.995, 800.0)], stopped: None, error: None };
        assert_eq!(best_cell(Some(&sweep)), "**800** @ ef 64 (p99 1.50 ms)");
        let low = Sweep { points: vec![point(16, 0.9, 2000.0)], stopped: None, error: None };
        assert_eq!(best_cell(Some(&low)), "not reached: max 0.900 @ ef 16 (2,000 QPS)");
        let failed = Sweep { points: vec![], stopped: None, error: Some("boom".into()) };
        assert_eq!(best_cell(Some(&failed)), "failed");
        assert_eq!(best_cell(None), "-");
        assert_eq!((qps(12.345), qps(1234.4)), ("12.3".to_owned(), "1,234".to_owned()));
    }
}
