//! What `facedb-bench durability` reports: the records of `durability.json` and their
//! Markdown form (`durability.md`, also printed on stdout).

use std::fmt::Write as _;

use serde::Serialize;

use crate::machine::Machine;
use crate::metrics::{mib, ms, thousands, LatencySummary};

/// Readiness from a snapshot (issue 4).
pub const READY_TARGET_S: f64 = 2.0;
/// The longest write stall while a snapshot is written (issue 4).
pub const STALL_TARGET_MS: f64 = 50.0;

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub format: &'static str,
    pub command: String,
    /// UTC, when the run started.
    pub date: String,
    pub commit: Option<String>,
    pub build: &'static str,
    pub machine: Machine,
    /// `/proc/loadavg` when the run started and when it ended: other work on the machine.
    pub load_average: [Option<String>; 2],
    pub disk: Disk,
    pub settings: Settings,
    pub ingest: Vec<IngestRecord>,
    pub storage: Storage,
    pub snapshots: Vec<SnapshotRecord>,
    pub stalls: Vec<StallRecord>,
    pub restarts: Vec<RestartRecord>,
    pub wall_s: f64,
}

/// Where the server's data directories were, and what is known of the disk under them.
#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    pub data_root: String,
    pub device: Option<String>,
    pub mount_point: Option<String>,
    pub filesystem: Option<String>,
    pub mount_options: Option<String>,
    /// `/sys/block/<dev>/queue/rotational` (virtio disks say 1 whatever backs them).
    pub rotational: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub dataset: String,
    pub schema: &'static str,
    pub dim: usize,
    pub faces: usize,
    pub ingest_faces: usize,
    pub batch: usize,
    pub modes: Vec<&'static str>,
    pub writers: Vec<usize>,
    pub large_mode: &'static str,
    pub large_writers: usize,
    pub stall_batch: usize,
    pub stall_rounds: usize,
    pub stall_modes: Vec<&'static str>,
    pub baseline_s: f64,
    pub cold_restarts: bool,
    /// Restarts per kind and cache state.
    pub restarts: usize,
}

/// One timed ingest into a fresh server.
#[derive(Debug, Clone, Serialize)]
pub struct IngestRecord {
    pub wal_mode: &'static str,
    pub writers: usize,
    pub faces: u64,
    pub batch: usize,
    pub seconds: f64,
    pub faces_per_s: f64,
    /// Latency of one batch request.
    pub batch_latency: Option<LatencySummary>,
    /// From `GET /v2/admin/status` after the ingest (the gallery's creation and the recorded
    /// configuration are records too).
    pub wal_records: Option<u64>,
    pub wal_fsyncs: Option<u64>,
    pub records_per_fsync: Option<f64>,
    /// Size of `DATA_DIR/wal` after the ingest, before any snapshot.
    pub log_bytes: u64,
    pub log_bytes_per_face: f64,
    /// The large run (the one the snapshots, stalls and restarts use).
    pub large: bool,
}

/// Disk bytes per face, from the large run.
#[derive(Debug, Clone, Serialize)]
pub struct Storage {
    pub faces: u64,
    pub log_bytes: u64,
    pub log_bytes_per_face: f64,
    pub snapshot_bytes: u64,
    pub snapshot_faces: u64,
    pub snapshot_bytes_per_face: f64,
    /// Raw float32 vector bytes per face (`4 × dim`), for scale.
    pub vector_bytes_per_face: u64,
}

/// One `POST /v2/admin/snapshot`.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRecord {
    pub wal_mode: &'static str,
    /// The stall round it was taken in (`None`: with nothing else running).
    pub round: Option<usize>,
    /// What else ran meanwhile.
    pub during: String,
    pub index: u64,
    pub faces: u64,
    pub bytes: u64,
    pub bytes_per_face: f64,
    /// The server's own `seconds` (checkpoint to the renamed, synced file).
    pub server_s: f64,
    /// The request's wall time, as the client saw it.
    pub request_s: f64,
}

/// Adds back to back, with or without a snapshot being written.
#[derive(Debug, Clone, Serialize)]
pub struct StallRecord {
    pub wal_mode: &'static str,
    /// `no snapshot (baseline)`, `overlapping the snapshot` (one per round, and all rounds
    /// together), `same runs, outside the snapshot`.
    pub adds: String,
    /// Which snapshot, for the rows of one snapshot.
    pub round: Option<usize>,
    pub faces_per_add: usize,
    pub latency: Option<LatencySummary>,
    /// How long the adds ran (for the snapshot's rows, the snapshot request's wall time).
    pub window_s: f64,
    /// Overlapping the snapshot: its longest adds, longest first, as (start relative to the
    /// snapshot request in ms, latency in ms).
    pub longest: Vec<(f64, f64)>,
}

/// One restart on the large run's data directory.
#[derive(Debug, Clone, Serialize)]
pub struct RestartRecord {
    /// `log only` or `snapshot + log tail`.
    pub from: String,
    /// `warm` (the files in the page cache, as after a clean stop) or `cold` (the data
    /// directory's files dropped from the page cache first).
    pub cache: &'static str,
    pub faces: u64,
    /// The snapshot recovery loaded (`recovery.snapshot_file` of the status): its size.
    pub snapshot_bytes: Option<u64>,
    /// The whole log on disk (`DATA_DIR/wal`); recovery reads only the segments after the
    /// snapshot.
    pub log_bytes: u64,
    /// From the spawn to the `facedb listening` line.
    pub ready_s: f64,
    /// `recovery.seconds` of the status.
    pub recovery_s: Option<f64>,
    pub replayed_records: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// The server's memory right after it listened.
    pub vm_rss_bytes: Option<u64>,
    pub vm_hwm_bytes: Option<u64>,
    /// The SIGTERM stop before this start.
    pub stop_s: f64,
}

fn rate(x: f64) -> String {
    thousands(x.round() as u64)
}

fn opt<T>(value: Option<T>, show: impl Fn(T) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), show)
}

fn lat(summary: Option<&LatencySummary>, pick: fn(&LatencySummary) -> f64) -> String {
    opt(summary, |s| ms(pick(s)))
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// The Markdown report.
pub fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let s = &r.settings;
    let _ = writeln!(out, "# facedb durability figures (issue 4)\n");
    let _ = writeln!(out, "`{}`\n", r.command);
    let m = &r.machine;
    let _ = writeln!(
        out,
        "{} · commit {} · {} build · {} cores, {} · {} RAM · kernel {}  ",
        r.date,
        r.commit.as_deref().unwrap_or("?"),
        r.build,
        m.nproc,
        m.cpu_model.as_deref().unwrap_or("unknown CPU"),
        opt(m.memory_bytes, mib),
        m.kernel.as_deref().unwrap_or("?"),
    );
    let _ = writeln!(
        out,
        "Load average (1, 5, 15 min) at the start {}, at the end {}.  ",
        r.load_average[0].as_deref().unwrap_or("?"),
        r.load_average[1].as_deref().unwrap_or("?")
    );
    let d = &r.disk;
    let _ = writeln!(
        out,
        "Data on {} ({}, {}{}), under `{}`.  ",
        d.device.as_deref().unwrap_or("?"),
        d.filesystem.as_deref().unwrap_or("?"),
        d.mount_options.as_deref().unwrap_or("?"),
        opt(d.rotational, |rot| format!(", rotational {}", u8::from(rot))),
        d.data_root
    );
    let _ = writeln!(
        out,
        "Dataset {} ({} schema: bucket, cam_id, tags), {}-d float32; wall time {:.0} s.\n",
        s.dataset, s.schema, s.dim, r.wall_s
    );

    let _ = writeln!(out, "## Bulk ingest\n");
    let _ = writeln!(
        out,
        "Batches of {} faces (`POST /v2/faces/add`, bodies prepared beforehand), each run on a fresh server and data \
         directory; `writers` concurrent connections. Log records and fsyncs from `GET /v2/admin/status`; log bytes \
         = size of `DATA_DIR/wal` after the ingest.\n",
        s.batch
    );
    let _ = writeln!(
        out,
        "| wal_mode | faces | writers | faces/s | batch p50 ms | batch p99 ms | batch max ms | log records | fsyncs | records/fsync | log bytes/face |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for i in &r.ingest {
        let b = i.batch_latency.as_ref();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            i.wal_mode,
            thousands(i.faces),
            i.writers,
            rate(i.faces_per_s),
            lat(b, |s| s.p50_ms),
            lat(b, |s| s.p99_ms),
            lat(b, |s| s.max_ms),
            opt(i.wal_records, thousands),
            opt(i.wal_fsyncs, thousands),
            opt(i.records_per_fsync, |x| format!("{x:.2}")),
            i.log_bytes_per_face,
        );
    }

    let st = &r.storage;
    let _ = writeln!(out, "\n## Disk bytes per face\n");
    let _ = writeln!(out, "| what | faces | bytes | bytes/face |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| log (`wal/`, {} mode, after the ingest, before any snapshot) | {} | {} | {:.1} |",
        s.large_mode,
        thousands(st.faces),
        thousands(st.log_bytes),
        st.log_bytes_per_face
    );
    let _ = writeln!(
        out,
        "| snapshot file | {} | {} | {:.1} |",
        thousands(st.snapshot_faces),
        thousands(st.snapshot_bytes),
        st.snapshot_bytes_per_face
    );
    let _ = writeln!(out, "| raw float32 vector, for scale | | | {} |", st.vector_bytes_per_face);

    let _ = writeln!(out, "\n## Snapshot write time\n");
    let _ = writeln!(
        out,
        "`POST /v2/admin/snapshot`: the server's `seconds` (checkpoint to the synced, renamed file) and the \
         request's wall time.\n"
    );
    let _ = writeln!(out, "| wal_mode | during | faces | bytes | server `seconds` | request wall s |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|");
    for snap in &r.snapshots {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} | {:.2} |",
            snap.wal_mode,
            snap.during,
            thousands(snap.faces),
            thousands(snap.bytes),
            snap.server_s,
            snap.request_s
        );
    }

    let _ = writeln!(out, "\n## Write stall while a snapshot is written\n");
    let _ = writeln!(
        out,
        "One connection adds {} face(s) per request back to back: first for {} s without a snapshot (the baseline), \
         then {} times from 1 s before `POST /v2/admin/snapshot` to 1 s after its answer. An add overlaps the \
         snapshot when it was under way at any time between sending the request and its answer. In each mode the \
         server was restarted on the large run's data directory with that `--wal-mode`.\n",
        s.stall_batch, s.baseline_s, s.stall_rounds
    );
    let _ = writeln!(out, "| wal_mode | adds | count | p50 ms | p99 ms | max ms | over s |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for stall in &r.stalls {
        let l = stall.latency.as_ref();
        let adds = match stall.round {
            Some(round) => format!("overlapping snapshot {round}"),
            None => stall.adds.clone(),
        };
        let _ = writeln!(
            out,
            "| {} | {adds} | {} | {} | {} | {} | {:.2} |",
            stall.wal_mode,
            opt(l, |l| thousands(l.count)),
            lat(l, |s| s.p50_ms),
            lat(l, |s| s.p99_ms),
            lat(l, |s| s.max_ms),
            stall.window_s
        );
    }
    let rounds: Vec<&StallRecord> = r.stalls.iter().filter(|s| s.round.is_some()).collect();
    if !rounds.is_empty() {
        let _ = writeln!(
            out,
            "\nThe longest adds overlapping each snapshot (latency, and when the add was sent relative to the \
             snapshot request):\n"
        );
        for row in &rounds {
            let shown: Vec<String> =
                row.longest.iter().map(|(at, latency)| format!("{} ms at {at:+.0} ms", ms(*latency))).collect();
            let _ = writeln!(out, "- {} snapshot {}: {}", row.wal_mode, row.round.unwrap_or(0), shown.join(", "));
        }
    }
    for mode in &s.stall_modes {
        let worst = rounds
            .iter()
            .filter(|row| row.wal_mode == *mode)
            .filter_map(|row| row.latency.as_ref().map(|l| l.max_ms))
            .fold(None, |worst: Option<f64>, max| Some(worst.map_or(max, |w| w.max(max))));
        let sizes: Vec<u64> =
            r.snapshots.iter().filter(|x| x.wal_mode == *mode && x.round.is_some()).map(|x| x.faces).collect();
        if let (Some(worst), Some(least), Some(most)) = (worst, sizes.iter().min(), sizes.iter().max()) {
            let _ = writeln!(
                out,
                "\nTarget: longest write stall during a snapshot <= {STALL_TARGET_MS} ms ({mode} mode, worst of {} \
                 snapshots of {} to {} faces): measured {} ms, {}.",
                sizes.len(),
                thousands(*least),
                thousands(*most),
                ms(worst),
                met(worst <= STALL_TARGET_MS)
            );
        }
    }

    let _ = writeln!(out, "\n## Restart\n");
    let _ = writeln!(
        out,
        "SIGTERM, then `facedb serve` again on the same directory; ready = from the spawn to the `facedb listening` \
         line (printed after recovery). Cold: the data directory's files dropped from the page cache before the \
         start (`sync`, then `dd iflag=nocache count=0` per file). Memory read right after the listening line.\n"
    );
    let _ = writeln!(
        out,
        "| from | cache | faces | snapshot read | log on disk | ready s | recovery.seconds | replayed records | VmRSS | VmHWM | stop s |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for restart in &r.restarts {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {:.2} |",
            restart.from,
            restart.cache,
            thousands(restart.faces),
            opt(restart.snapshot_bytes, mib),
            mib(restart.log_bytes),
            restart.ready_s,
            opt(restart.recovery_s, |x| format!("{x:.2}")),
            opt(restart.replayed_records, thousands),
            opt(restart.vm_rss_bytes, mib),
            opt(restart.vm_hwm_bytes, mib),
            restart.stop_s
        );
    }
    for cache in ["warm", "cold"] {
        let runs: Vec<&RestartRecord> =
            r.restarts.iter().filter(|x| x.from == FROM_SNAPSHOT && x.cache == cache).collect();
        let Some(worst) = runs.iter().map(|x| x.ready_s).reduce(f64::max) else { continue };
        let shown: Vec<String> = runs.iter().map(|x| format!("{:.2} s", x.ready_s)).collect();
        let _ = writeln!(
            out,
            "\nTarget: ready <= {READY_TARGET_S} s from a snapshot ({cache} cache, {} faces): measured {}, {}.",
            thousands(runs[0].faces),
            shown.join(", "),
            met(worst <= READY_TARGET_S)
        );
    }
    out
}

/// The names of the stall and restart rows.
pub const OVERLAPPING: &str = "overlapping the snapshot";
pub const OUTSIDE: &str = "same runs, outside the snapshots";
pub const NO_SNAPSHOT: &str = "no snapshot (baseline)";
pub const FROM_LOG: &str = "log only";
pub const FROM_SNAPSHOT: &str = "snapshot + log tail";
