//! A database in a data directory: the engine, its write-ahead log and its snapshots.
//!
//! ```text
//! DATA_DIR/
//!   LOCK                      held (flock) by the running server: one server per directory
//!   wal/00000000000000000001.wal ...   the log, in segments named by their first index
//!   snapshots/00000000000000004242.snap ...   snapshots named by the last index they hold
//! ```
//!
//! [`Database::open`] recovers: the newest snapshot that reads back whole, then the log after
//! it. A corrupt snapshot is reported and the next older one tried (the log is kept from the
//! oldest kept snapshot on, so that works). The schema and facen size the data was written
//! with are recorded (the first log entry of a new database, and every snapshot), compared
//! with the configured ones, and an added field is applied and logged; any other difference
//! stops the start with the difference shown. Then the log is opened for writes and, if asked,
//! a thread takes snapshots every `checkpoint_interval` seconds (see `snapshots.rs`).

mod snapshots;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::schema::Schema;
use crate::snapshot;
use crate::store::{Engine, EngineConfig, Gallery};
use crate::wal::recover::{read_log_each, segments, ReadOptions};
use crate::wal::writer::{Wal, WalConfig};
use crate::wal::{codec, Entry, Op, WalMode};

pub use snapshots::{info_json as snapshot_json, SnapshotInfo};

/// The Raft term of a single node.
const TERM: u64 = 1;

/// How a database keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableConfig {
    pub data_dir: PathBuf,
    pub wal_mode: WalMode,
    pub wal_segment_bytes: u64,
    /// Between automatic snapshots; `None`: only on request.
    pub checkpoint_interval: Option<Duration>,
    /// Snapshots kept, at least 1.
    pub checkpoint_count: usize,
    pub force_recovery: bool,
}

/// What the start found and did, for the log and `GET /v2/admin/status`.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// The snapshot loaded: its index and file.
    pub snapshot: Option<(u64, PathBuf)>,
    /// Snapshots that could not be read, with why.
    pub bad_snapshots: Vec<String>,
    /// Their indices and files; after a successful start they are renamed to `*.snap.corrupt`,
    /// out of the way of retention and of later starts.
    pub unreadable: Vec<(u64, PathBuf)>,
    pub replayed: usize,
    pub truncated: Option<(PathBuf, u64)>,
    /// Log records skipped by `--force-recovery`: file, offset, bytes, why.
    pub skipped: Vec<(PathBuf, u64, u64, String)>,
    pub schema_added: Vec<String>,
    pub seconds: f64,
}

pub struct Database {
    engine: Arc<Engine>,
    config: DurableConfig,
    recovery: Recovery,
    snapshots: snapshots::Snapshots,
    /// Held for the life of the database: no other server may open the directory.
    _lock: File,
}

impl Database {
    /// Opens (or creates) the database in `config.data_dir` for a server configured with
    /// `schema` and `engine_config`.
    pub fn open(schema: Schema, engine_config: EngineConfig, config: DurableConfig) -> Result<Arc<Database>, String> {
        let started = Instant::now();
        let lock = lock_data_dir(&config.data_dir)?;
        let (wal_dir, snapshot_dir) = (config.data_dir.join("wal"), config.data_dir.join("snapshots"));
        let removed = snapshot::remove_temp_files(&snapshot_dir)?;
        if removed > 0 {
            tracing::warn!(removed, "removed unfinished snapshot files (a crash while a snapshot was written)");
        }
        let mut recovery = Recovery::default();
        let (engine, next_index, recorded) = recover(&schema, &engine_config, &config, &mut recovery)?;
        let added = match &recorded {
            Some(recorded) => check_schema(recorded, &schema, &config.data_dir)?,
            None => Vec::new(),
        };
        let wal_config = WalConfig { dir: wal_dir, mode: config.wal_mode, segment_bytes: config.wal_segment_bytes };
        engine.start_log(Wal::open(wal_config, next_index, TERM)?).map_err(|e| e.message)?;
        if recorded.is_none() {
            engine.record_configuration().map_err(|e| e.message)?;
        } else if !added.is_empty() {
            engine.change_schema(schema).map_err(|e| e.message)?;
            tracing::info!(added = ?added, "schema: added fields; every stored face has their defaults");
        }
        recovery.schema_added = added;
        set_aside(&recovery.unreadable)?;
        recovery.seconds = started.elapsed().as_secs_f64();
        if let Some(limit) = engine_config.memory_limit {
            if engine.memory_used() > limit {
                tracing::warn!(
                    used = engine.memory_used(),
                    limit,
                    "the stored faces are over --memory-limit: adds will fail with 507 until faces are deleted"
                );
            }
        }
        tracing::info!(
            faces = engine.counted_faces(),
            snapshot = ?recovery.snapshot.as_ref().map(|(index, _)| index),
            replayed = recovery.replayed,
            seconds = recovery.seconds,
            "recovered"
        );
        let last_snapshot = recovery.snapshot.as_ref().map(|(index, _)| *index);
        let database = Arc::new(Database {
            engine: Arc::new(engine),
            snapshots: snapshots::Snapshots::new(snapshot_dir, last_snapshot),
            config,
            recovery,
            _lock: lock,
        });
        if !database.recovery.skipped.is_empty() {
            // The skipped records stay in the log; a snapshot past them lets the next start do
            // without --force-recovery.
            match database.snapshot() {
                Ok(info) => {
                    tracing::warn!(index = info.index, "--force-recovery: took a snapshot past the skipped records")
                }
                Err(e) => tracing::error!("--force-recovery: the snapshot after recovery failed: {e}"),
            }
        }
        snapshots::start_timer(&database);
        Ok(database)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The directory the database lives in.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Takes a snapshot now (waiting for one under way to finish first).
    pub fn snapshot(&self) -> Result<SnapshotInfo, String> {
        self.snapshots.take(&self.engine, &self.config)
    }

    /// Counters and state for `GET /v2/admin/status`.
    pub fn status(&self) -> Json {
        let engine = &self.engine;
        let log = engine.log().ok().map(|wal| {
            let stats = wal.stats();
            let records = stats.records.load(std::sync::atomic::Ordering::Relaxed);
            let fsyncs = stats.fsyncs.load(std::sync::atomic::Ordering::Relaxed);
            json!({
                "mode": mode_name(wal.mode()),
                "records": records,
                "fsyncs": fsyncs,
                "records_per_fsync": if fsyncs > 0 { records as f64 / fsyncs as f64 } else { 0.0 },
                "bytes": stats.bytes.load(std::sync::atomic::Ordering::Relaxed),
                "last_index": stats.last_index.load(std::sync::atomic::Ordering::Relaxed),
            })
        });
        let recovery = &self.recovery;
        let galleries = engine.list_galleries();
        json!({
            "data_dir": self.config.data_dir.display().to_string(),
            "galleries": galleries.len(),
            "faces": galleries.iter().map(|g| g.faces as u64).sum::<u64>(),
            "memory": {
                "used_bytes": engine.memory_used(),
                "limit_bytes": engine.config().memory_limit,
            },
            "wal": log,
            "recovery": {
                "snapshot_index": recovery.snapshot.as_ref().map(|(index, _)| index),
                "snapshot_file": recovery.snapshot.as_ref().map(|(_, path)| path.display().to_string()),
                "bad_snapshots": recovery.bad_snapshots,
                "replayed_records": recovery.replayed,
                "truncated": recovery.truncated.as_ref().map(|(path, offset)| json!({"file": path.display().to_string(), "offset": offset})),
                "skipped_records": recovery.skipped.len(),
                "skipped": recovery.skipped.iter().map(|(path, offset, bytes, reason)| json!({
                    "file": path.display().to_string(), "offset": offset, "bytes": bytes, "reason": reason,
                })).collect::<Vec<_>>(),
                "schema_added_fields": recovery.schema_added,
                "seconds": recovery.seconds,
            },
            "snapshots": self.snapshots.status(&self.config),
            "indexes": galleries.iter().filter_map(|g| {
                let mut status = json!(engine.index_status(&g.name).ok()?);
                // The gallery's faces here, beside the graph's `live`: how far the graph is.
                status.as_object_mut()?.insert("faces".to_owned(), json!(g.faces));
                Some((g.name.clone(), status))
            }).collect::<serde_json::Map<String, Json>>(),
        })
    }
}

fn mode_name(mode: WalMode) -> &'static str {
    match mode {
        WalMode::None => "none",
        WalMode::Write => "write",
        WalMode::Fsync => "fsync",
    }
}

/// Renames unreadable snapshots to `NAME.snap.corrupt`: kept for inspection, but no longer
/// listed, so that retention never keeps one as the newest snapshot.
fn set_aside(unreadable: &[(u64, PathBuf)]) -> Result<(), String> {
    for (_, path) in unreadable {
        let aside = path.with_extension("snap.corrupt");
        std::fs::rename(path, &aside)
            .map_err(|e| format!("cannot rename the unreadable snapshot {} aside: {e}", path.display()))?;
        tracing::warn!(file = %aside.display(), "set the unreadable snapshot aside");
    }
    if let Some(dir) = unreadable.first().and_then(|(_, path)| path.parent()) {
        crate::wal::writer::sync_dir(dir)?;
    }
    Ok(())
}

/// Creates the data directory if need be and takes its lock.
fn lock_data_dir(dir: &Path) -> Result<File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    file.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => {
            format!(
                "the data directory {} is in use by another facedb process (it holds {})",
                dir.display(),
                path.display()
            )
        }
        std::fs::TryLockError::Error(e) => format!("cannot lock {}: {e}", path.display()),
    })?;
    Ok(file)
}

/// The schema and facen size a snapshot or the log records.
fn configuration(op: &Op) -> Option<(&str, u64)> {
    match op {
        Op::Configure { schema, facen_size } => Some((schema, *facen_size)),
        _ => None,
    }
}

/// Loads the newest readable snapshot and replays the log after it. Returns the engine, the
/// next log index and the recorded schema (`None`: a new database).
fn recover(
    schema: &Schema,
    engine_config: &EngineConfig,
    config: &DurableConfig,
    recovery: &mut Recovery,
) -> Result<(Engine, u64, Option<Schema>), String> {
    let snapshot_dir = config.data_dir.join("snapshots");
    let mut candidates = snapshot::list(&snapshot_dir)?;
    let (engine, next_index, recorded) = load_and_replay(&mut candidates, schema, engine_config, config, recovery)?;
    // Every snapshot that could not be read held writes up to its index: recovery must reach
    // at least that far, or those writes are lost.
    let reached = next_index - 1;
    let Some(&(newest_bad, ref path)) = recovery.unreadable.iter().max_by_key(|(index, _)| *index) else {
        return Ok((engine, next_index, recorded));
    };
    if newest_bad <= reached {
        return Ok((engine, next_index, recorded));
    }
    let loss = format!(
        "snapshot {} (index {newest_bad}) cannot be read, and what is left (older snapshots and the log) reaches \
         only index {reached}: the writes from {} to {newest_bad} would be lost",
        path.display(),
        reached + 1
    );
    if !config.force_recovery {
        return Err(format!(
            "cannot recover everything: {loss} ({}). Put back the snapshot from a backup, or start with \
             --force-recovery to accept the loss.",
            recovery.bad_snapshots.join("; ")
        ));
    }
    tracing::error!("--force-recovery: {loss}; starting without them");
    // New entries and snapshots must sort after the unreadable one.
    Ok((engine, next_index.max(newest_bad + 1), recorded))
}

/// Tries the snapshots newest first; replays the log after the first that reads back.
fn load_and_replay(
    candidates: &mut Vec<(u64, PathBuf)>,
    schema: &Schema,
    engine_config: &EngineConfig,
    config: &DurableConfig,
    recovery: &mut Recovery,
) -> Result<(Engine, u64, Option<Schema>), String> {
    let wal_dir = config.data_dir.join("wal");
    let first_logged = segments(&wal_dir)?.first().map(|(first, _)| *first);
    loop {
        let Some((index, path)) = candidates.pop() else {
            // No snapshot (left): the whole log, which must then start at the beginning.
            if !recovery.bad_snapshots.is_empty() && first_logged.is_some_and(|first| first > 1) {
                return Err(format!(
                    "cannot recover: no snapshot could be read ({}) and the log in {} starts at index {}, not 1",
                    recovery.bad_snapshots.join("; "),
                    wal_dir.display(),
                    first_logged.unwrap_or(1)
                ));
            }
            let engine = Engine::recovering(schema.clone(), engine_config.clone());
            return replay_log(engine, 0, None, config, recovery);
        };
        if first_logged.is_some_and(|first| first > index + 1) {
            recovery.bad_snapshots.push(format!(
                "{}: the log after it is gone (the log starts at index {})",
                path.display(),
                first_logged.unwrap_or(0)
            ));
            continue;
        }
        let loaded = match snapshot::read(&path) {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!("snapshot {}: {e}; falling back to the one before", path.display());
                recovery.bad_snapshots.push(e);
                recovery.unreadable.push((index, path));
                continue;
            }
        };
        let recorded = codec::decode_op(&loaded.config)
            .ok()
            .and_then(|op| configuration(&op).map(|(text, size)| (text.to_owned(), size)))
            .ok_or_else(|| format!("{}: the recorded schema cannot be read", path.display()))?;
        check_facen_size(recorded.1, engine_config.facen_size, &path)?;
        let recorded_schema = Schema::from_yaml(&recorded.0, &path.display().to_string())?;
        let engine = Engine::recovering(recorded_schema.clone(), engine_config.clone());
        let shared = Arc::new(recorded_schema.clone());
        for loaded in loaded.galleries {
            let name = loaded.name;
            let gallery = Gallery::from_chunks(shared.clone(), engine_config.facen_size, loaded.chunks)
                .map_err(|e| format!("{}: gallery {name:?}: {e}", path.display()))?;
            engine
                .insert_gallery(&name, gallery, loaded.index)
                .map_err(|e| format!("{}: {}", path.display(), e.message))?;
        }
        recovery.snapshot = Some((index, path));
        return replay_log(engine, index, Some(recorded_schema), config, recovery);
    }
}

/// Replays the log after `after` onto `engine`.
fn replay_log(
    engine: Engine,
    after: u64,
    mut recorded: Option<Schema>,
    config: &DurableConfig,
    recovery: &mut Recovery,
) -> Result<(Engine, u64, Option<Schema>), String> {
    let wal_dir = config.data_dir.join("wal");
    let mut replayed = 0;
    let log = read_log_each(&wal_dir, &ReadOptions { after, force: config.force_recovery }, |entry| {
        replayed += 1;
        replay_entry(&engine, &entry, &mut recorded, config.force_recovery)
    })
    .map_err(|e| match config.force_recovery {
        true => e,
        false => format!(
            "{e}; if the log is damaged, --force-recovery (force_recovery: true) starts anyway, skipping and \
             reporting what cannot be read (the writes in it are lost)"
        ),
    })?;
    recovery.replayed = replayed;
    recovery.truncated = log.truncated.clone();
    recovery.skipped = log.skipped.iter().map(|s| (s.file.clone(), s.offset, s.bytes, s.reason.clone())).collect();
    if !recovery.skipped.is_empty() {
        tracing::warn!(
            skipped = recovery.skipped.len(),
            "--force-recovery: skipped corrupt log records; the writes in them are lost"
        );
    }
    Ok((engine, log.next_index, recorded))
}

fn replay_entry(engine: &Engine, entry: &Entry, recorded: &mut Option<Schema>, force: bool) -> Result<(), String> {
    if let Some((text, facen_size)) = configuration(&entry.op) {
        check_facen_size(facen_size, engine.config().facen_size, Path::new("the log"))?;
        *recorded = Some(Schema::from_yaml(text, &format!("log entry {}", entry.index))?);
    }
    match engine.replay(entry) {
        Ok(()) => Ok(()),
        // Records skipped before this one may have created what it needs.
        Err(e) if force => {
            tracing::warn!(
                index = entry.index,
                "--force-recovery: log entry cannot be replayed ({}); skipped",
                e.message
            );
            Ok(())
        }
        Err(e) => Err(format!("log entry {}: cannot replay: {}", entry.index, e.message)),
    }
}

fn check_facen_size(recorded: u64, configured: usize, source: &Path) -> Result<(), String> {
    if recorded == configured as u64 {
        return Ok(());
    }
    Err(format!(
        "facen_size: the data was written with {recorded}-d facens ({}), but the server is configured with {configured}; \
         start with --facen-size {recorded}, or use another --data-dir",
        source.display()
    ))
}

/// The fields `configured` adds to `recorded`; any other difference is an error showing it.
fn check_schema(recorded: &Schema, configured: &Schema, data_dir: &Path) -> Result<Vec<String>, String> {
    recorded.additions_in(configured).map_err(|diff| {
        format!(
            "schema: the configured schema differs from the one the data in {} was written with, \
             and not only by added fields:\n{diff}\nStart with the recorded schema, or add fields only.",
            data_dir.display()
        )
    })
}
