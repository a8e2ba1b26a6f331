//! The peers: FAISS (`IndexFlatIP`, `IndexHNSWFlat`) and hnswlib run by `bench/peers/run.sh`
//! on the same dataset files, queries, k and threads.
//!
//! `run.sh bench --dataset DIR --k K --threads T --out FILE.json` writes a JSON list of
//! records, one per (engine, ef); `run.sh crosscheck --dataset DIR --k 100` checks the
//! harness's ground truth against FAISS `IndexFlatIP` and writes `DIR/truth/crosscheck.json`
//! (it exits 1 when the check is not clean, after writing the file). The script's output goes
//! to the harness's stderr, so that stdout keeps only the results.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One record of `run.sh bench`: the contract with the peers (other fields are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub engine: String,
    #[serde(default)]
    pub params: serde_json::Value,
    pub threads: usize,
    pub k: usize,
    pub build_s: f64,
    pub qps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub recall: f64,
    /// All queries in one call on `threads` threads, when the peers measured it.
    #[serde(default)]
    pub batch_qps: Option<f64>,
}

impl PeerRecord {
    /// The swept parameter, for labels: `ef_search=64`, `ef=64`, or nothing.
    pub fn params_label(&self) -> String {
        match &self.params {
            serde_json::Value::Object(map) => {
                map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
            }
            _ => String::new(),
        }
    }

    /// The value of the ef being swept, to order a curve.
    pub fn ef(&self) -> f64 {
        ["ef_search", "ef"]
            .iter()
            .find_map(|key| self.params.get(*key).and_then(serde_json::Value::as_f64))
            .unwrap_or(0.0)
    }
}

/// `truth/crosscheck.json`, the fields the harness reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crosscheck {
    pub k: usize,
    pub recall: f64,
    #[serde(default)]
    pub max_score_diff: Option<f64>,
    #[serde(default)]
    pub faiss_version: Option<String>,
    #[serde(default)]
    pub ok: Option<bool>,
    /// Queries where the truth lacks a face FAISS found scoring clearly above its last place.
    #[serde(default)]
    pub truth_missed: Option<u64>,
    #[serde(default)]
    pub faiss_misordered: Option<u64>,
    #[serde(default)]
    pub ties_beyond_truth: Option<u64>,
}

impl Crosscheck {
    /// Whether the truth stands: recall 1, or every difference explained by FAISS's float32
    /// order or by near-ties past the truth's last place, none by a face the truth missed.
    pub fn truth_holds(&self) -> bool {
        self.recall >= 1.0 || (self.truth_missed == Some(0) && self.max_score_diff.is_some_and(|d| d < 1e-4))
    }
}

fn run_script(script: &Path, args: &[String]) -> Result<()> {
    if !script.is_file() {
        bail!("the peers script {} does not exist", script.display());
    }
    let stderr = std::io::stderr().as_fd().try_clone_to_owned().context("duplicating stderr")?;
    let status = Command::new(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} {} failed ({status})", script.display(), args.join(" "));
    }
    Ok(())
}

/// Runs `run.sh bench` and reads its records.
pub fn bench(
    script: &Path,
    dataset_dir: &Path,
    k: usize,
    threads: usize,
    extra_args: &[String],
    out_file: &Path,
) -> Result<Vec<PeerRecord>> {
    let mut args: Vec<String> = vec![
        "bench".into(),
        "--dataset".into(),
        dataset_dir.display().to_string(),
        "--k".into(),
        k.to_string(),
        "--threads".into(),
        threads.to_string(),
        "--out".into(),
        out_file.display().to_string(),
    ];
    args.extend(extra_args.iter().cloned());
    run_script(script, &args)?;
    read_records(out_file)
}

/// Reads a peers result file.
pub fn read_records(path: &Path) -> Result<Vec<PeerRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a list of peer records", path.display()))
}

/// The cross-check of the dataset's truth: read from `truth/crosscheck.json` when it is newer
/// than the truth, else made now with `run.sh crosscheck`. A run that exits non-zero after
/// writing the file still gives its figures (the caller judges them).
pub fn crosscheck(script: &Path, dataset_dir: &Path) -> Result<Crosscheck> {
    let file = dataset_dir.join("truth").join("crosscheck.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (modified(&file), modified(&dataset_dir.join("truth").join("plain.ivecs"))) {
        (Some(check), Some(truth)) => check >= truth,
        _ => false,
    };
    if !fresh {
        let _ = std::fs::remove_file(&file);
        let args: Vec<String> = vec![
            "crosscheck".into(),
            "--dataset".into(),
            dataset_dir.display().to_string(),
            "--k".into(),
            "100".into(),
        ];
        let ran = run_script(script, &args);
        if !file.is_file() {
            ran?;
            bail!("{} did not write {}", script.display(), file.display());
        }
        if let Err(e) = ran {
            eprintln!("peers crosscheck: {e:#} (its figures follow in the results)");
        }
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a crosscheck result", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_contract_fields_and_ignores_the_rest() {
        let text = r#"[{"engine": "faiss-hnsw", "params": {"M": 16, "ef_construction": 200, "ef_search": 64},
            "threads": 2, "k": 10, "build_s": 17.05, "qps": 9524.0, "p50_ms": 0.102, "p95_ms": 0.124,
            "p99_ms": 0.164, "recall": 0.9997, "queries": 1000, "versions": {"faiss": "1.15.1"}},
            {"engine": "faiss-flat", "params": {"M": null, "ef_construction": null, "ef_search": null},
            "threads": 2, "k": 10, "build_s": 0.1, "qps": 60.0, "p50_ms": 16.0, "p95_ms": 17.0,
            "p99_ms": 18.0, "recall": 1.0, "batch_qps": 120.0}]"#;
        let records: Vec<PeerRecord> = serde_json::from_str(text).unwrap();
        assert_eq!(records[0].ef(), 64.0);
        assert_eq!(records[0].params_label(), "M=16 ef_construction=200 ef_search=64");
        assert_eq!(records[1].params_label(), "");
        assert_eq!(records[1].batch_qps, Some(120.0));
        let check: Crosscheck = serde_json::from_str(
            r#"{"k": 100, "recall": 0.99999, "max_score_diff": 6.6e-07, "ok": false, "truth_missed": 0,
                "faiss_misordered": 0, "ties_beyond_truth": 1}"#,
        )
        .unwrap();
        assert!(check.truth_holds());
        assert!(!Crosscheck { truth_missed: Some(1), ..check }.truth_holds());
    }
}
