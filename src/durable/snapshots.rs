//! Taking snapshots: on request, and every `checkpoint_interval` seconds.
//!
//! A snapshot starts with a checkpoint on the node thread (see `crate::replica::node`): between two
//! rounds of writes, it takes the chunk lists of every gallery (reference counts only) and
//! starts a new log segment. The writes after it go on at once; a chunk they change is copied
//! first (copy-on-write), so the snapshot writes the image of that one moment while the shard
//! keeps serving. Once the file is renamed into place, snapshots beyond `checkpoint_count` are
//! deleted, and so are the log segments that only hold entries the oldest kept snapshot has
//! (until there are `checkpoint_count` snapshots, the whole log is kept).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value as Json};

use super::{Database, DurableConfig, Error};
use crate::engine::op::{self, Op};
use crate::replica;
use crate::snapshot;
use crate::wal::recover::prune;
use crate::wal::writer::sync_dir;

/// A snapshot written.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    /// The last log index it holds.
    pub index: u64,
    pub path: PathBuf,
    pub bytes: u64,
    pub faces: u64,
    pub seconds: f64,
    /// `false` when nothing was written since the last snapshot, which is then kept as is.
    pub written: bool,
}

#[derive(Debug, Default)]
struct Progress {
    taken: u64,
    last: Option<SnapshotInfo>,
    last_error: Option<String>,
    under_way_since: Option<Instant>,
}

pub(super) struct Snapshots {
    dir: PathBuf,
    /// Held while a snapshot is taken: one at a time.
    taking: Mutex<Option<u64>>,
    progress: Mutex<Progress>,
}

impl Snapshots {
    pub(super) fn new(dir: PathBuf, last_index: Option<u64>) -> Snapshots {
        Snapshots { dir, taking: Mutex::new(last_index), progress: Mutex::new(Progress::default()) }
    }

    pub(super) fn take(&self, database: &Database) -> Result<SnapshotInfo, Error> {
        let mut last_index = self.taking.lock();
        let started = Instant::now();
        self.progress.lock().under_way_since = Some(started);
        let result = self.write(database, *last_index, started);
        let mut progress = self.progress.lock();
        progress.under_way_since = None;
        match &result {
            Ok(info) => {
                *last_index = Some(info.index);
                progress.taken += u64::from(info.written);
                progress.last = Some(info.clone());
                progress.last_error = None;
            }
            Err(e) => {
                tracing::error!("snapshot failed: {e}");
                progress.last_error = Some(e.to_string());
            }
        }
        result
    }

    fn write(&self, database: &Database, last_index: Option<u64>, started: Instant) -> Result<SnapshotInfo, Error> {
        let (engine, config) = (&database.engine, &database.config);
        let replica::Checkpoint { index, term, images: taken } = database.node.checkpoint().wait()?;
        if last_index == Some(index) {
            let path = self.dir.join(snapshot::file_name(index));
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let faces = taken.iter().map(|g| g.chunks.iter().map(|c| c.len() as u64).sum::<u64>()).sum();
            return Ok(SnapshotInfo { index, path, bytes, faces, seconds: 0.0, written: false });
        }
        let facen_size = engine.config().facen_size;
        let recorded = op::encode(&Op::Configure { schema: engine.schema().to_yaml(), facen_size: facen_size as u64 })?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| snapshot::Error::file(&self.dir, format!("cannot create the snapshot directory: {e}")))?;
        let written = snapshot::write(&self.dir, index, term, &recorded, facen_size, &taken)?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(index, faces = written.faces, bytes = written.bytes, seconds, file = %written.path.display(), "snapshot written");
        self.retire_old(config)?;
        Ok(SnapshotInfo {
            index,
            path: written.path,
            bytes: written.bytes,
            faces: written.faces,
            seconds,
            written: true,
        })
    }

    /// Deletes the snapshots beyond `checkpoint_count` and the log before the oldest kept one.
    fn retire_old(&self, config: &DurableConfig) -> Result<(), Error> {
        let kept = snapshot::list(&self.dir)?;
        let excess = kept.len().saturating_sub(config.checkpoint_count);
        for (_, path) in &kept[..excess] {
            std::fs::remove_file(path)
                .map_err(|e| snapshot::Error::file(path, format!("cannot delete the old snapshot: {e}")))?;
            tracing::info!(file = %path.display(), "deleted an old snapshot (checkpoint_count)");
        }
        if excess > 0 {
            sync_dir(&self.dir)?;
        }
        // Until `checkpoint_count` snapshots exist, the empty database at index 0 counts as
        // the oldest one: the whole log is kept, so a corrupt first snapshot loses nothing.
        if kept.len() < config.checkpoint_count {
            return Ok(());
        }
        if let Some((oldest, _)) = kept.get(excess) {
            let removed = prune(&config.data_dir.join("wal"), oldest + 1)?;
            if !removed.is_empty() {
                tracing::info!(segments = removed.len(), "deleted log segments older than the oldest kept snapshot");
            }
        }
        Ok(())
    }

    pub(super) fn status(&self, config: &DurableConfig) -> Json {
        let progress = self.progress.lock();
        let files: Vec<Json> = snapshot::list(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .map(|(index, path)| json!({"index": index, "file": path.display().to_string(), "bytes": file_len(&path)}))
            .collect();
        json!({
            "dir": self.dir.display().to_string(),
            "checkpoint_interval": config.checkpoint_interval.map_or(0, |d| d.as_secs()),
            "checkpoint_count": config.checkpoint_count,
            "under_way_seconds": progress.under_way_since.map(|t| t.elapsed().as_secs_f64()),
            "taken": progress.taken,
            "last": progress.last.as_ref().map(info_json),
            "last_error": progress.last_error,
            "files": files,
        })
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

pub fn info_json(info: &SnapshotInfo) -> Json {
    json!({
        "index": info.index,
        "file": info.path.display().to_string(),
        "bytes": info.bytes,
        "faces": info.faces,
        "seconds": info.seconds,
        "written": info.written,
    })
}

/// Starts the thread that takes a snapshot every `checkpoint_interval`; it ends with the
/// database.
pub(super) fn start_timer(database: &Arc<Database>) {
    let Some(interval) = database.config.checkpoint_interval else { return };
    let weak: Weak<Database> = Arc::downgrade(database);
    let spawned = std::thread::Builder::new().name("facedb-checkpoint".into()).spawn(move || loop {
        let deadline = Instant::now() + interval;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200).min(interval));
            if weak.strong_count() == 0 {
                return;
            }
        }
        let Some(database) = weak.upgrade() else { return };
        // Errors are logged and shown in the status; the next interval tries again.
        let _ = database.snapshot();
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the checkpoint thread: {e}; snapshots are taken only on request");
    }
}
