//! What a shard knows of its cluster, kept in its data directory beside the log: its record,
//! and `facedb serve`'s local layout. (Where a face lives is the router's: `router::shard_of`.)
//!
//! **Cluster record.** A shard that a router claims records its place in the cluster in
//! `DATA_DIR/cluster.json`: `{"id": "<cluster id>", "shard": i, "shards": n}`. A router refuses
//! to start when its shard list disagrees with the records (another order, another count, or
//! shards of two clusters), because its placement would then look for faces on the wrong
//! shards. `facedb serve` records its local layout the same way in `DATA_DIR/layout.json`.
//!
//! **Every call checked.** A router sends the record it expects with every call to a claimed
//! shard, in the header [`HEADER`] (`<id>/<shard>/<shards>`), and the shard refuses a call
//! whose expectation is not its record (421 `WRONG_SHARD`) before doing anything. A shard
//! restarted on an empty data dir, or on another shard's, is thus refused on the router's very
//! next call, whatever happened in between: the check does not rely on the router having seen
//! the shard go away.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is wrong with a cluster record, a layout, their files, or a [`HEADER`] value.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A field of a record that makes no sense: its name and why (the value in it).
    #[error("{field}: {why}")]
    Field { field: &'static str, why: String },
    /// A [`HEADER`] value not of the form `<id>/<shard>/<shards>`.
    #[error("{HEADER} must be <cluster id>/<shard>/<shards>, not {value:?}")]
    HeaderForm { value: String },
    /// A [`HEADER`] value of the right form naming a record that makes no sense.
    #[error("{HEADER}: {error}")]
    HeaderRecord { error: Box<ClusterError> },
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    /// A file that is not the JSON of its record (unknown keys included).
    #[error("{}: not a valid record: {error}", path.display())]
    NotARecord { path: PathBuf, error: serde_json::Error },
    #[error("cannot create {}: {error}", path.display())]
    CreateDir { path: PathBuf, error: io::Error },
    #[error("cannot write {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
    /// A layout of no shards, read from or about to be written to `path`.
    #[error(
        "{}: shards: 0 is too small; a data dir has at least one local shard (write {{\"shards\": N}} with N the \
         number of shard-K directories, or 1 when there are none)",
        path.display()
    )]
    NoShards { path: PathBuf },
    /// A data dir with local shard directories whose `layout.json` is gone.
    #[error(
        "{}: has local shard directories (shard-0, ...) but no layout.json saying how many; restore \
         layout.json ({{\"shards\": N}} with N the number of shard-K directories)",
        dir.display()
    )]
    NoLayout { dir: PathBuf },
}

/// A shard's place in its cluster, as recorded in its data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterRecord {
    /// The cluster's id, shared by all its shards.
    pub id: String,
    /// This shard's position in the router's list (0-based).
    pub shard: usize,
    /// How many shards the cluster has.
    pub shards: usize,
}

impl ClusterRecord {
    /// Checks the fields make sense: a position inside the count, a non-empty id.
    pub fn check(&self) -> Result<(), ClusterError> {
        if self.id.trim().is_empty() {
            return Err(ClusterError::Field { field: "id", why: "the cluster id is empty".into() });
        }
        // It travels in a header (`HEADER`).
        if !self.id.bytes().all(|b| b.is_ascii_graphic()) {
            let why = format!("the cluster id {:?} must be printable ASCII without spaces", self.id);
            return Err(ClusterError::Field { field: "id", why });
        }
        if self.shards == 0 || self.shard >= self.shards {
            let why = format!("{} is not a position in a cluster of {} shards", self.shard, self.shards);
            return Err(ClusterError::Field { field: "shard", why });
        }
        Ok(())
    }
}

/// The header in which a router names the shard it means to call: [`ClusterRecord::to_header`].
pub const HEADER: &str = "x-facedb-cluster";

impl ClusterRecord {
    /// The record as the value of [`HEADER`]: `<id>/<shard>/<shards>`.
    pub fn to_header(&self) -> String {
        format!("{}/{}/{}", self.id, self.shard, self.shards)
    }

    /// Reads a value of [`HEADER`] (the id may itself hold slashes: the last two parts are the
    /// numbers).
    pub fn from_header(text: &str) -> Result<ClusterRecord, ClusterError> {
        let bad = || ClusterError::HeaderForm { value: text.to_owned() };
        let mut parts = text.rsplitn(3, '/');
        let (shards, shard, id) = (parts.next(), parts.next(), parts.next());
        let (Some(shards), Some(shard), Some(id)) = (shards, shard, id) else { return Err(bad()) };
        let record = ClusterRecord {
            id: id.to_owned(),
            shard: shard.parse().map_err(|_| bad())?,
            shards: shards.parse().map_err(|_| bad())?,
        };
        record.check().map_err(|error| ClusterError::HeaderRecord { error: Box::new(error) })?;
        Ok(record)
    }

    /// How the record reads in messages: `shard 1 of 3 of cluster 9f2c...`.
    pub fn describe(&self) -> String {
        format!("shard {} of {} of cluster {}", self.shard, self.shards, self.id)
    }
}

/// The file of a shard's cluster record.
pub fn record_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster.json")
}

/// Reads the record of a data dir; `None` when the shard was never claimed.
pub fn read_record(data_dir: &Path) -> Result<Option<ClusterRecord>, ClusterError> {
    read_json(&record_path(data_dir))
}

/// Writes a record atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write_record(data_dir: &Path, record: &ClusterRecord) -> Result<(), ClusterError> {
    write_json(&record_path(data_dir), record)
}

/// How `facedb serve` lays out its local shards: `DATA_DIR/layout.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Local shards; with one the data dir itself is the shard (as before layouts existed),
    /// with more, shard `k` lives in `DATA_DIR/shard-k`.
    pub shards: usize,
}

impl Layout {
    /// The seed's rule for the number of shards of a host: one per 2000 MB of memory, at most
    /// one per core, at least one.
    pub fn for_host(memory_mb: u64, cores: usize) -> Layout {
        Layout { shards: ((memory_mb / 2000) as usize).min(cores).max(1) }
    }

    /// The data directory of local shard `k`.
    pub fn shard_dir(&self, data_dir: &Path, k: usize) -> PathBuf {
        if self.shards == 1 {
            data_dir.to_owned()
        } else {
            data_dir.join(format!("shard-{k}"))
        }
    }
}

/// The file of a data dir's local layout.
pub fn layout_path(data_dir: &Path) -> PathBuf {
    data_dir.join("layout.json")
}

/// The layout a data dir was created with: `None` for a new directory, `Some(1 shard)` for one
/// made before layouts were recorded (it has a log at its top). A recorded layout of 0 shards
/// is refused: nothing could be placed on it.
pub fn read_layout(data_dir: &Path) -> Result<Option<Layout>, ClusterError> {
    let path = layout_path(data_dir);
    match read_json::<Layout>(&path)? {
        Some(Layout { shards: 0 }) => return Err(ClusterError::NoShards { path }),
        Some(recorded) => return Ok(Some(recorded)),
        None => {}
    }
    if data_dir.join("shard-0").is_dir() {
        return Err(ClusterError::NoLayout { dir: data_dir.to_owned() });
    }
    let legacy = ["wal", "snapshots"].iter().any(|d| data_dir.join(d).is_dir());
    Ok(legacy.then_some(Layout { shards: 1 }))
}

pub fn write_layout(data_dir: &Path, layout: &Layout) -> Result<(), ClusterError> {
    let path = layout_path(data_dir);
    if layout.shards == 0 {
        return Err(ClusterError::NoShards { path });
    }
    write_json(&path, layout)
}

/// Total memory of this host in MB (from /proc/meminfo), if it can be read.
pub fn host_memory_mb() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, ClusterError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| ClusterError::NotARecord { path: path.to_owned(), error }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(ClusterError::Read { path: path.to_owned(), error }),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ClusterError> {
    let write_error = |error| ClusterError::Write { path: path.to_owned(), error };
    // The paths written are files in a data dir: they have one.
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|error| ClusterError::CreateDir { path: dir.to_owned(), error })?;
    let text = serde_json::to_vec_pretty(value).map_err(|e| write_error(e.into()))?;
    let temporary = path.with_extension("json.tmp");
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(&text)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_rule_and_records() {
        assert_eq!(Layout::for_host(24_000, 2).shards, 2);
        assert_eq!(Layout::for_host(1_000, 8).shards, 1);
        assert_eq!(Layout::for_host(9_000, 16).shards, 4);
        let dir = crate::test_dir::TestDir::new("cluster");
        assert_eq!(read_layout(&dir.0).unwrap(), None);
        write_layout(&dir.0, &Layout { shards: 3 }).unwrap();
        assert_eq!(read_layout(&dir.0).unwrap(), Some(Layout { shards: 3 }));
        assert_eq!(read_record(&dir.0).unwrap(), None);
        let record = ClusterRecord { id: "a/b".into(), shard: 1, shards: 3 };
        assert_eq!(record.to_header(), "a/b/1/3");
        assert_eq!(ClusterRecord::from_header("a/b/1/3").unwrap(), record);
        assert!(ClusterRecord::from_header("abc/3/3").is_err(), "a position outside the count");
        assert!(ClusterRecord::from_header("abc/x/3").is_err());
        assert!(ClusterRecord::from_header("1/3").is_err());
        assert!(ClusterRecord { id: "a b".into(), shard: 0, shards: 1 }.check().is_err(), "not a header value");
        let record = ClusterRecord { id: "c1".into(), shard: 2, shards: 3 };
        write_record(&dir.0, &record).unwrap();
        assert_eq!(read_record(&dir.0).unwrap(), Some(record));
        assert!(ClusterRecord { id: "c".into(), shard: 3, shards: 3 }.check().is_err());
    }

    #[test]
    fn a_layout_of_no_shards_is_refused_naming_the_file_the_key_and_the_value() {
        let dir = crate::test_dir::TestDir::new("cluster-no-shards");
        let path = layout_path(&dir.0);
        fs::write(&path, "{\"shards\": 0}\n").unwrap();
        let error = read_layout(&dir.0).unwrap_err().to_string();
        assert!(error.starts_with(&format!("{}: shards: 0 is too small", path.display())), "{error}");
        let error = write_layout(&dir.0, &Layout { shards: 0 }).unwrap_err().to_string();
        assert!(error.starts_with(&format!("{}: shards: 0 is too small", path.display())), "{error}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = crate::test_dir::TestDir::new("cluster-bad-files");
        fs::write(layout_path(&dir.0), "{\"shards\": 2, \"shard\": 1}").unwrap();
        let error = read_layout(&dir.0).unwrap_err().to_string();
        assert!(error.starts_with(&format!("{}: not a valid record: ", layout_path(&dir.0).display())), "{error}");
        fs::remove_file(layout_path(&dir.0)).unwrap();
        fs::create_dir(dir.0.join("shard-0")).unwrap();
        let error = read_layout(&dir.0).unwrap_err().to_string();
        assert!(error.starts_with(&format!("{}: has local shard directories", dir.0.display())), "{error}");
        assert_eq!(
            ClusterRecord::from_header("a/3/3").unwrap_err().to_string(),
            "x-facedb-cluster: shard: 3 is not a position in a cluster of 3 shards"
        );
        assert_eq!(
            ClusterRecord::from_header("1/3").unwrap_err().to_string(),
            "x-facedb-cluster must be <cluster id>/<shard>/<shards>, not \"1/3\""
        );
    }
}
