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

pub mod cluster;
mod snapshots;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::engine::op::{self, CodecError};
use crate::engine::{self, Applied, Engine, EngineConfig, Op};
use crate::index::gallery_index::IndexOverrides;
use crate::replica::{self, LogEnd, LogStore, Node, NodeConfig};
use crate::schema::Schema;
use crate::snapshot;
use crate::store::{Face, FaceUpdate, Gallery};
use crate::wal::recover::{read_log_each, segments, ReadOptions};
use crate::wal::writer::WalConfig;
use crate::wal::{self, Entry, WalMode};

pub use snapshots::{info_json as snapshot_json, SnapshotInfo};

/// What a database refuses or fails at.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The engine refused the write (nothing was logged): a deterministic answer to the request.
    #[error(transparent)]
    Refused(#[from] engine::Error),
    /// The log could not be written: what is on disk is not known, and no later write is taken.
    #[error("write-ahead log: {0}")]
    Log(Arc<wal::Error>),
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Writes are refused since an earlier failure (the log, or an apply that failed).
    #[error("{0}")]
    Stopped(String),
    /// The data directory cannot be used or recovered as it is; the message says what to do.
    #[error("{0}")]
    Unrecoverable(String),
}

impl From<wal::Error> for Error {
    fn from(e: wal::Error) -> Error {
        Error::Log(Arc::new(e))
    }
}

impl From<replica::Error> for Error {
    fn from(e: replica::Error) -> Error {
        match e {
            replica::Error::Log(e) => Error::Log(e),
            replica::Error::Stopped(message) => Error::Stopped(message),
            e @ (replica::Error::Raft(_) | replica::Error::NotApplied(_) | replica::Error::NotLeader(_)) => {
                Error::Stopped(e.to_string())
            }
        }
    }
}

impl Error {
    /// Whether the request itself was refused (as opposed to a failure of the server).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Refused(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    node: Node,
    config: DurableConfig,
    recovery: Recovery,
    snapshots: snapshots::Snapshots,
    /// Held for the life of the database: no other server may open the directory (none for
    /// a database in memory).
    lock: Option<File>,
}

impl Database {
    /// Opens (or creates) the database in `config.data_dir` for a server configured with
    /// `schema` and `engine_config`.
    pub fn open(schema: Schema, engine_config: EngineConfig, config: DurableConfig) -> Result<Arc<Database>> {
        let started = Instant::now();
        let lock = lock_data_dir(&config.data_dir)?;
        let (wal_dir, snapshot_dir) = (config.data_dir.join("wal"), config.data_dir.join("snapshots"));
        let removed = snapshot::remove_temp_files(&snapshot_dir)?;
        if removed > 0 {
            tracing::warn!(removed, "removed unfinished snapshot files (a crash while a snapshot was written)");
        }
        let mut recovery = Recovery::default();
        let Recovered { engine, next_index, last_term, recorded } =
            recover(&schema, &engine_config, &config, &mut recovery)?;
        let added = match &recorded {
            Some(recorded) => check_schema(recorded, &schema, &config.data_dir)?,
            None => Vec::new(),
        };
        let wal_config = WalConfig { dir: wal_dir, mode: config.wal_mode, segment_bytes: config.wal_segment_bytes };
        let engine = Arc::new(engine);
        // Everything recovered is applied: a replica set of one commits what its log holds.
        let applied = LogEnd { index: next_index - 1, term: last_term };
        let store = LogStore::open(wal_config, applied, Vec::new(), 1, vec![1])?;
        let node = Node::start(engine.clone(), store, NodeConfig::single())?;
        let last_snapshot = recovery.snapshot.as_ref().map(|(index, _)| *index);
        let database = Database {
            engine,
            node,
            snapshots: snapshots::Snapshots::new(snapshot_dir, last_snapshot),
            config,
            recovery: Recovery::default(),
            lock: Some(lock),
        };
        if recorded.is_none() {
            database.write(database.configuration(&schema))?;
        } else if !added.is_empty() {
            database.write(database.configuration(&schema))?;
            tracing::info!(added = ?added, "schema: added fields; every stored face has their defaults");
        }
        recovery.schema_added = added;
        set_aside(&recovery.unreadable)?;
        recovery.seconds = started.elapsed().as_secs_f64();
        let engine = &database.engine;
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
        engine.start_indexer();
        let database = Arc::new(Database { recovery, ..database });
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

    /// A database whose writes are kept in memory only: no data directory, no log on disk, no
    /// snapshots (the library and the bench harness in one process).
    pub fn in_memory(schema: Schema, engine_config: EngineConfig) -> Result<Arc<Database>> {
        let config = DurableConfig {
            data_dir: PathBuf::new(),
            wal_mode: WalMode::None,
            wal_segment_bytes: u64::MAX,
            checkpoint_interval: None,
            checkpoint_count: 1,
            force_recovery: false,
        };
        let engine = Arc::new(Engine::new(schema.clone(), engine_config));
        let store = LogStore::open(WalConfig::in_memory(), LogEnd { index: 0, term: 0 }, Vec::new(), 1, vec![1])?;
        let node = Node::start(engine.clone(), store, NodeConfig::single())?;
        let database = Database {
            engine,
            node,
            snapshots: snapshots::Snapshots::new(PathBuf::new(), None),
            config,
            recovery: Recovery::default(),
            lock: None,
        };
        database.write(database.configuration(&schema))?;
        database.engine.start_indexer();
        Ok(Arc::new(database))
    }

    fn configuration(&self, schema: &Schema) -> Op {
        Op::Configure { schema: schema.to_yaml(), facen_size: self.engine.config().facen_size as u64 }
    }

    /// Checks a write, logs it and applies it; answers once it is applied (and, in `fsync`
    /// mode, on disk). A refused write changes nothing and is not logged.
    pub fn write(&self, op: Op) -> Result<Applied> {
        // Encoded before any lock is taken: concurrent writers encode in parallel.
        let payload = op::encode(&op)?;
        let mut checked = self.engine.check(&op)?;
        let waiter = self.node.submit(op, payload);
        checked.queued();
        let applied = waiter.wait();
        drop(checked);
        Ok(applied?)
    }

    pub fn create_gallery(&self, name: &str) -> Result<()> {
        self.create_indexed_gallery(name, IndexOverrides::default())
    }

    /// Creates a gallery whose index takes `index`'s parameters instead of the server's (the
    /// caller checked them).
    pub fn create_indexed_gallery(&self, name: &str, index: IndexOverrides) -> Result<()> {
        let name = name.to_owned();
        let op = if index.is_empty() { Op::CreateGallery { name } } else { Op::CreateIndexedGallery { name, index } };
        self.write(op).map(drop)
    }

    pub fn delete_gallery(&self, name: &str) -> Result<()> {
        self.write(Op::DeleteGallery { name: name.to_owned() }).map(drop)
    }

    /// Adds faces, all or none. Vectors must have `facen_size` components and meta one value
    /// per schema field, of its type (the wire layer builds them so).
    pub fn add_faces(&self, gallery: &str, faces: Vec<Face>) -> Result<()> {
        self.write(Op::AddFaces { gallery: gallery.to_owned(), faces }).map(drop)
    }

    /// Deletes faces, all or none (one missing id is refused).
    pub fn delete_faces(&self, gallery: &str, ids: Vec<u64>) -> Result<()> {
        self.write(Op::DeleteFaces { gallery: gallery.to_owned(), ids }).map(drop)
    }

    /// Updates faces, all or none; returns them as they are now, in request order.
    pub fn update_faces(&self, gallery: &str, updates: Vec<FaceUpdate>) -> Result<Vec<Face>> {
        match self.write(Op::UpdateFaces { gallery: gallery.to_owned(), updates })? {
            Applied::Updated(faces) => Ok(faces),
            Applied::Done => Ok(Vec::new()),
        }
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
    pub fn snapshot(&self) -> Result<SnapshotInfo> {
        if self.lock.is_none() {
            return Err(Error::Unrecoverable("a database in memory takes no snapshots".to_owned()));
        }
        self.snapshots.take(self)
    }

    /// Counters and state for `GET /v2/admin/status`.
    pub fn status(&self) -> Json {
        let engine = &self.engine;
        let log = {
            let stats = self.node.stats();
            let records = stats.records.load(std::sync::atomic::Ordering::Relaxed);
            let fsyncs = stats.fsyncs.load(std::sync::atomic::Ordering::Relaxed);
            json!({
                "mode": self.node.mode().name(),
                "records": records,
                "fsyncs": fsyncs,
                "records_per_fsync": if fsyncs > 0 { records as f64 / fsyncs as f64 } else { 0.0 },
                "bytes": stats.bytes.load(std::sync::atomic::Ordering::Relaxed),
                "last_index": stats.last_index.load(std::sync::atomic::Ordering::Relaxed),
            })
        };
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

/// Reads go straight to the engine: `database.search(...)` is `database.engine().search(...)`.
impl std::ops::Deref for Database {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.engine
    }
}

/// Renames unreadable snapshots to `NAME.snap.corrupt`: kept for inspection, but no longer
/// listed, so that retention never keeps one as the newest snapshot.
fn set_aside(unreadable: &[(u64, PathBuf)]) -> Result<()> {
    for (_, path) in unreadable {
        let aside = path.with_extension("snap.corrupt");
        std::fs::rename(path, &aside).map_err(|e| {
            Error::Unrecoverable(format!("cannot rename the unreadable snapshot {} aside: {e}", path.display()))
        })?;
        tracing::warn!(file = %aside.display(), "set the unreadable snapshot aside");
    }
    if let Some(dir) = unreadable.first().and_then(|(_, path)| path.parent()) {
        crate::wal::writer::sync_dir(dir)?;
    }
    Ok(())
}

/// Creates the data directory if need be and takes its lock.
fn lock_data_dir(dir: &Path) -> Result<File> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Unrecoverable(format!("cannot create the data directory {}: {e}", dir.display())))?;
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::Unrecoverable(format!("cannot open {}: {e}", path.display())))?;
    file.try_lock().map_err(|e| {
        Error::Unrecoverable(match e {
            std::fs::TryLockError::WouldBlock => format!(
                "the data directory {} is in use by another facedb process (it holds {})",
                dir.display(),
                path.display()
            ),
            std::fs::TryLockError::Error(e) => format!("cannot lock {}: {e}", path.display()),
        })
    })?;
    Ok(file)
}

/// What recovery rebuilt.
struct Recovered {
    engine: Engine,
    /// The index the next log entry gets.
    next_index: u64,
    /// The term of the entry before it.
    last_term: u64,
    /// The recorded schema (`None`: a new database).
    recorded: Option<Schema>,
}

/// Loads the newest readable snapshot and replays the log after it.
fn recover(
    schema: &Schema,
    engine_config: &EngineConfig,
    config: &DurableConfig,
    recovery: &mut Recovery,
) -> Result<Recovered> {
    let snapshot_dir = config.data_dir.join("snapshots");
    let mut candidates = snapshot::list(&snapshot_dir)?;
    let recovered = load_and_replay(&mut candidates, schema, engine_config, config, recovery)?;
    let next_index = recovered.next_index;
    // Every snapshot that could not be read held writes up to its index: recovery must reach
    // at least that far, or those writes are lost.
    let reached = next_index - 1;
    let Some(&(newest_bad, ref path)) = recovery.unreadable.iter().max_by_key(|(index, _)| *index) else {
        return Ok(recovered);
    };
    if newest_bad <= reached {
        return Ok(recovered);
    }
    let loss = format!(
        "snapshot {} (index {newest_bad}) cannot be read, and what is left (older snapshots and the log) reaches \
         only index {reached}: the writes from {} to {newest_bad} would be lost",
        path.display(),
        reached + 1
    );
    if !config.force_recovery {
        return Err(Error::Unrecoverable(format!(
            "cannot recover everything: {loss} ({}). Put back the snapshot from a backup, or start with \
             --force-recovery to accept the loss.",
            recovery.bad_snapshots.join("; ")
        )));
    }
    tracing::error!("--force-recovery: {loss}; starting without them");
    // New entries and snapshots must sort after the unreadable one.
    Ok(Recovered { next_index: next_index.max(newest_bad + 1), ..recovered })
}

/// Tries the snapshots newest first; replays the log after the first that reads back.
fn load_and_replay(
    candidates: &mut Vec<(u64, PathBuf)>,
    schema: &Schema,
    engine_config: &EngineConfig,
    config: &DurableConfig,
    recovery: &mut Recovery,
) -> Result<Recovered> {
    let wal_dir = config.data_dir.join("wal");
    let first_logged = segments(&wal_dir)?.first().map(|(first, _)| *first);
    loop {
        let Some((index, path)) = candidates.pop() else {
            // No snapshot (left): the whole log, which must then start at the beginning.
            if !recovery.bad_snapshots.is_empty() && first_logged.is_some_and(|first| first > 1) {
                return Err(Error::Unrecoverable(format!(
                    "cannot recover: no snapshot could be read ({}) and the log in {} starts at index {}, not 1",
                    recovery.bad_snapshots.join("; "),
                    wal_dir.display(),
                    first_logged.unwrap_or(1)
                )));
            }
            let engine = Engine::new(schema.clone(), engine_config.clone());
            return replay_log(engine, (0, 0), None, config, recovery);
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
                recovery.bad_snapshots.push(e.to_string());
                recovery.unreadable.push((index, path));
                continue;
            }
        };
        let unreadable = || Error::Unrecoverable(format!("{}: the recorded schema cannot be read", path.display()));
        let recorded = op::decode(&loaded.config).map_err(|_| unreadable())?;
        let (text, facen_size) = recorded.configuration().ok_or_else(unreadable)?;
        check_facen_size(facen_size, engine_config.facen_size, &path)?;
        let recorded_schema = Schema::from_yaml(text, &path.display().to_string()).map_err(Error::Unrecoverable)?;
        let engine = Engine::new(recorded_schema.clone(), engine_config.clone());
        let shared = Arc::new(recorded_schema.clone());
        for loaded_gallery in loaded.galleries {
            let name = loaded_gallery.name;
            let gallery = Gallery::from_chunks(shared.clone(), engine_config.facen_size, loaded_gallery.chunks)
                .map_err(|e| Error::Unrecoverable(format!("{}: gallery {name:?}: {e}", path.display())))?;
            engine
                .restore(index, &name, gallery, loaded_gallery.index)
                .map_err(|e| Error::Unrecoverable(format!("{}: {e}", path.display())))?;
        }
        recovery.snapshot = Some((index, path));
        return replay_log(engine, (index, loaded.term), Some(recorded_schema), config, recovery);
    }
}

/// Replays the log after `after` (the snapshot's index and term) onto `engine`, each entry
/// through [`Engine::apply`].
fn replay_log(
    engine: Engine,
    (after, after_term): (u64, u64),
    mut recorded: Option<Schema>,
    config: &DurableConfig,
    recovery: &mut Recovery,
) -> Result<Recovered> {
    let wal_dir = config.data_dir.join("wal");
    let mut replayed = 0;
    let mut last_term = after_term;
    let log = read_log_each(&wal_dir, &ReadOptions { after, force: config.force_recovery }, |entry| {
        // Records: an empty entry (a new Raft term's first) rides on the next record.
        replayed += usize::from(!entry.payload.is_empty());
        last_term = entry.term;
        replay_entry(&engine, entry, &mut recorded, config.force_recovery)
    })
    .map_err(|e| match (config.force_recovery, e) {
        (false, Error::Log(e)) => Error::Unrecoverable(format!(
            "{e}; if the log is damaged, --force-recovery (force_recovery: true) starts anyway, skipping and \
             reporting what cannot be read (the writes in it are lost)"
        )),
        (_, e) => e,
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
    Ok(Recovered { engine, next_index: log.next_index, last_term, recorded })
}

fn replay_entry(engine: &Engine, entry: Entry, recorded: &mut Option<Schema>, force: bool) -> Result<()> {
    let index = entry.index;
    if entry.kind != wal::kind::NORMAL || entry.payload.is_empty() {
        // A Raft leader's first entry (empty) or a membership change: nothing for the engine.
        engine.skip(index);
        return Ok(());
    }
    let applied = op::decode(&entry.payload).map_err(Error::from).and_then(|op| {
        if let Some((text, facen_size)) = op.configuration() {
            check_facen_size(facen_size, engine.config().facen_size, Path::new("the log"))?;
            *recorded = Some(Schema::from_yaml(text, &format!("log entry {index}")).map_err(Error::Unrecoverable)?);
        }
        engine.apply(index, op).map(drop).map_err(Error::from)
    });
    match applied {
        Ok(()) => Ok(()),
        Err(e @ Error::Unrecoverable(_)) => Err(e),
        // Records skipped before this one may have created what it needs.
        Err(e) if force => {
            tracing::warn!(index, "--force-recovery: log entry cannot be replayed ({e}); skipped");
            Ok(())
        }
        Err(e) => Err(Error::Unrecoverable(format!("log entry {index}: cannot replay: {e}"))),
    }
}

fn check_facen_size(recorded: u64, configured: usize, source: &Path) -> Result<()> {
    if recorded == configured as u64 {
        return Ok(());
    }
    Err(Error::Unrecoverable(format!(
        "facen_size: the data was written with {recorded}-d facens ({}), but the server is configured with {configured}; \
         start with --facen-size {recorded}, or use another --data-dir",
        source.display()
    )))
}

/// The fields `configured` adds to `recorded`; any other difference is an error showing it.
fn check_schema(recorded: &Schema, configured: &Schema, data_dir: &Path) -> Result<Vec<String>> {
    recorded.additions_in(configured).map_err(|diff| {
        Error::Unrecoverable(format!(
            "schema: the configured schema differs from the one the data in {} was written with, \
             and not only by added fields:\n{diff}\nStart with the recorded schema, or add fields only.",
            data_dir.display()
        ))
    })
}
