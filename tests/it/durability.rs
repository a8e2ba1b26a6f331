//! Durability through the real binary: the write-ahead log, snapshots and recovery at start.
//!
//! Every test owns a fresh data directory ([`Db`]) and starts `facedb serve` on it several
//! times, as an operator would: write over HTTP, stop the server (SIGTERM, or the harness's
//! kill when a [`Server`] is dropped), damage or keep the files, start again, and compare what
//! the API returns with what it returned before. The files are read and damaged with the
//! formats of `docs/storage.md` (a log segment: a 24-byte header, then records
//! `[len u32][crc32 u32][payload]`; snapshots: `snapshots/<20-digit index>.snap`); what the
//! server found at start is read from `GET /v2/admin/status`.
//!
//! Facens are 8 floats (`--facen-size 8`) and the schema is `schema/example.yaml`, so files
//! stay small and the whole module runs in a few seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{
    assert_error, face, facen, rand_vec, results, serve_args, Server, StartFailure, TempDir, EXAMPLE_SCHEMA,
};

/// `--facen-size` of every test here.
const FACEN: usize = 8;

/// Size of a log segment's header.
const SEGMENT_HEADER: u64 = 24;

// ---------------------------------------------------------------------------------------------
// A data directory and the server on it
// ---------------------------------------------------------------------------------------------

/// A data directory, and the flags every start of a server on it gets.
struct Db {
    dir: TempDir,
    flags: Vec<String>,
}

impl Db {
    fn new(label: &str, flags: &[&str]) -> Db {
        Db { dir: TempDir::new(label), flags: flags.iter().map(|s| s.to_string()).collect() }
    }

    fn args(&self, schema: &Path, facen_size: usize, extra: &[&str]) -> Vec<String> {
        let mut args = serve_args(&self.dir, schema);
        // One local shard: these tests read and damage the database's own files (wal/,
        // snapshots/ at the top of the data dir) and its status.
        args.extend(["--shards".to_string(), "1".to_string()]);
        args.extend(["--facen-size".to_string(), facen_size.to_string()]);
        args.extend(self.flags.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn launch(&self, schema: &Path, facen_size: usize, extra: &[&str], watchdog: bool) -> Result<Server, StartFailure> {
        Server::launch(&self.args(schema, facen_size, extra), None, watchdog)
    }

    /// Starts a server with the example schema, 8-float facens and `extra` flags; panics with
    /// its stderr if it does not come up.
    fn start(&self, extra: &[&str]) -> Server {
        self.start_with(Path::new(EXAMPLE_SCHEMA), FACEN, extra)
    }

    fn start_with(&self, schema: &Path, facen_size: usize, extra: &[&str]) -> Server {
        self.launch(schema, facen_size, extra, true).unwrap_or_else(|f| {
            panic!(
                "expected facedb to start on {} (extra flags {extra:?}): status {:?}\nstderr:\n{}",
                self.dir.path().display(),
                f.status,
                f.stderr
            )
        })
    }

    /// Starts the server itself, without the watchdog, so that it can be sent SIGTERM.
    fn start_signalable(&self) -> Server {
        self.launch(Path::new(EXAMPLE_SCHEMA), FACEN, &[], false)
            .unwrap_or_else(|f| panic!("expected facedb to start: status {:?}\nstderr:\n{}", f.status, f.stderr))
    }

    /// Starts a server that must refuse to start; returns its stderr.
    fn refused(&self, extra: &[&str]) -> String {
        self.refused_with(Path::new(EXAMPLE_SCHEMA), FACEN, extra)
    }

    fn refused_with(&self, schema: &Path, facen_size: usize, extra: &[&str]) -> String {
        match self.launch(schema, facen_size, extra, true) {
            Ok(s) => panic!(
                "expected facedb to refuse to start (schema {}, facen size {facen_size}, flags {extra:?}), \
                 but it started; stderr:\n{}",
                schema.display(),
                s.stderr()
            ),
            Err(f) => {
                assert_eq!(
                    f.status.and_then(|s| s.code()),
                    Some(1),
                    "expected exit status 1 (docs/operations.md); stderr:\n{}",
                    f.stderr
                );
                assert!(!f.stdout.contains("listening"), "expected no listening line, got {:?}", f.stdout);
                f.stderr
            }
        }
    }

    fn wal_dir(&self) -> PathBuf {
        self.dir.path().join("wal")
    }

    /// The log segments, oldest first.
    fn segments(&self) -> Vec<(u64, PathBuf)> {
        numbered_files(&self.wal_dir(), "wal")
    }

    /// The snapshot files, oldest first.
    fn snapshots(&self) -> Vec<(u64, PathBuf)> {
        numbered_files(&self.dir.path().join("snapshots"), "snap")
    }

    /// The newest log segment.
    fn last_segment(&self) -> PathBuf {
        let segments = self.segments();
        let (_, path) = segments.last().expect("expected at least one log segment");
        path.clone()
    }
}

/// The files of `dir` named `<20 digits>.<ext>`, with their number, in order.
fn numbered_files(dir: &Path, ext: &str) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(&format!(".{ext}"))?;
            (stem.len() == 20).then(|| stem.parse().ok()).flatten().map(|n| (n, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Stops a server started with [`Db::start_signalable`] with SIGTERM and expects exit 0.
fn stop_gracefully(mut s: Server) {
    let sent = Command::new("kill").arg("-TERM").arg(s.pid().to_string()).status().expect("run kill");
    assert!(sent.success(), "expected kill -TERM {} to succeed", s.pid());
    let status = s.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|st| st.success()),
        "expected exit status 0 after SIGTERM, got {status:?}; stderr:\n{}",
        s.stderr()
    );
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

fn status(s: &Server) -> Value {
    let r = s.get("/v2/admin/status");
    assert_eq!(r.status, 200, "expected 200 from GET /v2/admin/status, got {}", r.body);
    r.json()
}

/// `POST /v2/admin/snapshot`, expecting 200.
fn snapshot(s: &Server) -> Value {
    let r = s.post_empty("/v2/admin/snapshot");
    assert_eq!(r.status, 200, "expected 200 from POST /v2/admin/snapshot, got {}", r.body);
    r.json()
}

/// Every gallery with every face (id, facen, meta), as the API returns them.
fn dump(s: &Server) -> BTreeMap<String, Vec<Value>> {
    let list = s.get("/v2/galleries/list");
    assert_eq!(list.status, 200, "expected 200 from the gallery list, got {}", list.body);
    results(&list)
        .iter()
        .map(|g| {
            let name = g["name"].as_str().expect("gallery name is a string").to_string();
            let faces = s.search_ok(&name, &json!({"limit": 10000}));
            (name, faces)
        })
        .collect()
}

fn ids(faces: &[Value]) -> Vec<u64> {
    faces.iter().map(|f| f["id"].as_u64().expect("face id")).collect()
}

/// The vector of face `id` (a second `version` gives another one, for updates).
fn vector(id: u64, version: u64) -> Vec<f32> {
    rand_vec(id.wrapping_mul(7919) ^ (version << 40), FACEN)
}

fn face_of(id: u64) -> Value {
    face(
        id,
        &vector(id, 0),
        json!({"person_id": id, "person_name": format!("person {id}"), "tags": [format!("t{}", id % 3)]}),
    )
}

fn faces(ids: impl IntoIterator<Item = u64>) -> Value {
    Value::Array(ids.into_iter().map(face_of).collect())
}

/// Galleries created and deleted, faces added, updated and deleted, one request each; checks
/// the result and returns the number of writes (each is one log record).
fn write_workload(s: &Server) -> usize {
    s.create_gallery("people");
    s.create_gallery("scratch");
    s.create_gallery("visitors");
    s.add_ok("people", &faces(1..=5));
    s.add_ok("people", &faces(6..=10));
    s.add_ok("scratch", &faces([1, 2]));
    s.add_ok("visitors", &faces([100, 101, 102]));
    let updated = s.update_faces(
        "people",
        &json!([
            {"id": 2, "facen": facen(&vector(2, 1)), "meta": {"person_name": "renamed", "tags": ["x", "a"]}},
            {"id": 3, "meta": {"lists": [9, 3]}},
        ]),
    );
    assert_eq!(updated.status, 200, "expected the update to succeed: {}", updated.body);
    let deleted = s.delete_faces("people", &json!([4, 7]));
    assert_eq!((deleted.status, deleted.body.as_str()), (200, ""), "expected faces 4 and 7 deleted");
    let dropped = s.post_empty("/v2/galleries/delete/scratch");
    assert_eq!(dropped.status, 204, "expected gallery scratch deleted: {}", dropped.body);
    let deleted = s.delete_faces("visitors", &json!([101]));
    assert_eq!((deleted.status, deleted.body.as_str()), (200, ""), "expected face 101 deleted");
    s.create_gallery("scratch");
    s.add_ok("scratch", &faces([2, 50]));
    check_workload(&dump(s));
    13
}

/// What [`write_workload`] leaves.
fn check_workload(state: &BTreeMap<String, Vec<Value>>) {
    assert_eq!(
        state.keys().collect::<Vec<_>>(),
        ["people", "scratch", "visitors"],
        "expected the galleries left by the workload"
    );
    assert_eq!(ids(&state["scratch"]), [2, 50], "expected only the faces of the re-created scratch");
    assert_eq!(ids(&state["people"]), [1, 2, 3, 5, 6, 8, 9, 10], "expected the faces of people");
    assert_eq!(ids(&state["visitors"]), [100, 102], "expected the faces of visitors");
    let two = &state["people"][1];
    assert_eq!(two["facen"], json!(facen(&vector(2, 1))), "expected face 2's updated facen");
    assert_eq!(two["meta"]["person_name"], json!("renamed"), "expected face 2's updated name");
    assert_eq!(two["meta"]["tags"], json!(["a", "x"]), "expected face 2's updated tags");
    assert_eq!(two["meta"]["person_id"], json!(2), "expected face 2's person_id unchanged");
    assert_eq!(state["people"][2]["meta"]["lists"], json!([3, 9]), "expected face 3's updated lists");
    assert_eq!(state["people"][3]["facen"], json!(facen(&vector(5, 0))), "expected face 5's facen as added");
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// The records of a log segment: (offset, payload length).
fn wal_records(path: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).expect("read segment");
    let mut at = SEGMENT_HEADER as usize;
    let mut records = Vec::new();
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        records.push((at as u64, len as u64));
        at += 8 + len;
    }
    assert_eq!(at, bytes.len(), "expected {} to end with a whole record", path.display());
    records
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read file to damage");
    bytes[offset as usize] ^= 0x5A;
    std::fs::write(path, bytes).expect("write damaged file");
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(len)).expect("truncate file");
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("file metadata").len()
}

// ---------------------------------------------------------------------------------------------
// Restarts
// ---------------------------------------------------------------------------------------------

/// Writes, a graceful stop, a restart with every write there; then one more write, a kill,
/// and a restart with that write there too.
fn restart_keeps_every_acknowledged_write(mode: &str) {
    let db = Db::new(&format!("restart-{mode}"), &["--wal-mode", mode]);
    let s = db.start_signalable();
    let writes = write_workload(&s);
    let before = dump(&s);
    stop_gracefully(s);

    let s = db.start(&[]);
    assert_eq!(dump(&s), before, "expected every acknowledged write back after a restart in {mode} mode");
    let st = status(&s);
    assert_eq!(st["wal"]["mode"], json!(mode), "expected the log mode in the status");
    assert_eq!(st["recovery"]["snapshot_index"], Value::Null, "expected no snapshot to be loaded");
    // The first record is the schema and facen size of the new database.
    assert_eq!(st["recovery"]["replayed_records"], json!(writes + 1), "expected every write replayed from the log");
    s.add_ok("visitors", &faces([103]));
    let before = dump(&s);
    drop(s);

    let s = db.start(&[]);
    assert_eq!(dump(&s), before, "expected the write before a kill back after a restart in {mode} mode");
    assert_eq!(s.fetch("visitors", 103)["facen"], json!(facen(&vector(103, 0))), "expected face 103's facen");
}

#[test]
fn restart_keeps_every_acknowledged_write_in_write_mode() {
    restart_keeps_every_acknowledged_write("write");
}

#[test]
fn restart_keeps_every_acknowledged_write_in_fsync_mode() {
    restart_keeps_every_acknowledged_write("fsync");
}

#[test]
fn with_wal_mode_none_only_a_snapshot_survives_a_restart() {
    let db = Db::new("mode-none", &["--wal-mode", "none"]);
    let s = db.start(&[]);
    write_workload(&s);
    drop(s);
    let s = db.start(&[]);
    assert_eq!(dump(&s), BTreeMap::new(), "expected no gallery after a restart with --wal-mode none and no snapshot");
    assert_eq!(status(&s)["wal"]["mode"], json!("none"), "expected the log mode in the status");

    write_workload(&s);
    let taken = snapshot(&s);
    assert_eq!(taken["written"], json!(true), "expected a snapshot written: {taken}");
    let at_snapshot = dump(&s);
    s.add_ok("visitors", &faces([200]));
    drop(s);

    let s = db.start(&[]);
    assert_eq!(dump(&s), at_snapshot, "expected the snapshot's data (and not the write after it) after a restart");
    assert_eq!(status(&s)["recovery"]["snapshot_index"], taken["index"], "expected the snapshot loaded");
    // Writes go on after the snapshot's index, and a new snapshot holds them.
    s.add_ok("visitors", &faces([201]));
    let taken_again = snapshot(&s);
    assert!(
        taken_again["index"].as_u64() > taken["index"].as_u64(),
        "expected the second snapshot after the first: {taken_again} vs {taken}"
    );
    let expected = dump(&s);
    drop(s);
    let s = db.start(&[]);
    assert_eq!(dump(&s), expected, "expected the second snapshot's data after a restart");
}

// ---------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------

#[test]
fn restart_loads_the_snapshot_and_replays_only_the_log_after_it() {
    let db = Db::new("snap-log", &[]);
    let s = db.start(&[]);
    write_workload(&s);
    let taken = snapshot(&s);
    let index = taken["index"].as_u64().expect("snapshot index");
    assert_eq!(taken["written"], json!(true), "expected a snapshot written: {taken}");
    assert_eq!(taken["faces"], json!(12), "expected the snapshot to hold the 12 faces: {taken}");
    let file = PathBuf::from(taken["file"].as_str().expect("snapshot file"));
    assert_eq!(file_name(&file), format!("{index:020}.snap"), "expected the snapshot named by its index");
    assert_eq!(taken["bytes"].as_u64(), Some(file_len(&file)), "expected the snapshot's size in bytes");
    let again = snapshot(&s);
    assert_eq!(
        (&again["index"], &again["written"]),
        (&json!(index), &json!(false)),
        "expected no new snapshot when nothing was written: {again}"
    );

    s.create_gallery("late");
    s.add_ok("late", &faces([1, 2, 3]));
    s.add_ok("people", &faces([11]));
    // Faces the snapshot holds, changed after it.
    let r = s.update_faces("people", &json!([{"id": 1, "facen": facen(&vector(1, 1)), "meta": {"feat": "after"}}]));
    assert_eq!(r.status, 200, "expected the update to succeed: {}", r.body);
    let r = s.delete_faces("people", &json!([3]));
    assert_eq!(r.status, 200, "expected the delete to succeed: {}", r.body);
    let r = s.delete_faces("late", &json!([2]));
    assert_eq!(r.status, 200, "expected the delete to succeed: {}", r.body);
    let before = dump(&s);
    drop(s);
    // A snapshot a crash left half-written is not used, and is removed.
    let leftover = db.dir.path().join("snapshots").join(format!("{:020}.snap.tmp", index + 100));
    std::fs::write(&leftover, b"half a snapshot").expect("write a leftover .tmp snapshot");

    let s = db.start(&[]);
    assert_eq!(dump(&s), before, "expected the snapshot plus the log after it to give every write back");
    let recovery = &status(&s)["recovery"];
    assert_eq!(recovery["snapshot_index"], json!(index), "expected recovery from the snapshot: {recovery}");
    assert_eq!(
        recovery["snapshot_file"],
        json!(file.display().to_string()),
        "expected the snapshot's file: {recovery}"
    );
    assert_eq!(recovery["replayed_records"], json!(6), "expected only the 6 writes after the snapshot replayed");
    assert!(!leftover.exists(), "expected the leftover {} removed at start", leftover.display());
    assert_eq!(s.fetch("people", 1)["facen"], json!(facen(&vector(1, 1))), "expected face 1's facen as updated");

    // Restarts without writes in between change nothing.
    drop(s);
    for _ in 0..3 {
        let s = db.start(&[]);
        assert_eq!(dump(&s), before, "expected the same data after a restart without writes");
    }
}

#[test]
fn only_checkpoint_count_snapshots_are_kept_and_the_log_before_the_oldest_is_deleted() {
    let db = Db::new("retention", &["--checkpoint-count", "2", "--wal-segment-bytes", "4096"]);
    let s = db.start(&[]);
    s.create_gallery("g");
    let mut taken: Vec<u64> = Vec::new();
    let mut next_id = 0u64;
    for round in 0..4 {
        for _ in 0..3 {
            s.add_ok("g", &faces(next_id..next_id + 50));
            next_id += 50;
        }
        let info = snapshot(&s);
        taken.push(info["index"].as_u64().expect("snapshot index"));
        let snapshots: Vec<u64> = db.snapshots().iter().map(|(i, _)| *i).collect();
        let segments: Vec<u64> = db.segments().iter().map(|(i, _)| *i).collect();
        if round == 0 {
            assert_eq!(snapshots, taken, "expected the one snapshot taken");
            assert_eq!(
                segments.first(),
                Some(&1),
                "expected the whole log kept while there are fewer than 2 snapshots"
            );
            assert!(segments.len() >= 3, "expected 150 faces to fill several 4096-byte segments: {segments:?}");
        } else {
            assert_eq!(snapshots, taken[taken.len() - 2..], "expected only the 2 newest snapshots kept");
            let oldest = snapshots[0];
            assert!(
                segments[0] > 1 && segments[0] <= oldest + 1,
                "expected the log to start after index 1 and at or before {} (the oldest snapshot + 1): {segments:?}",
                oldest + 1
            );
            assert!(
                segments.get(1).is_none_or(|&second| second > oldest + 1),
                "expected no segment left that holds only entries before the oldest snapshot {oldest}: {segments:?}"
            );
        }
    }
    s.add_ok("g", &faces(next_id..next_id + 10));
    let before = dump(&s);
    drop(s);

    let s = db.start(&[]);
    assert_eq!(before["g"].len(), 610, "expected 610 faces written");
    assert_eq!(dump(&s), before, "expected everything back after the old snapshots and log were deleted");
    let recovery = &status(&s)["recovery"];
    assert_eq!(recovery["snapshot_index"], json!(taken[3]), "expected the newest snapshot loaded: {recovery}");
    assert_eq!(recovery["replayed_records"], json!(1), "expected the one write after it replayed: {recovery}");
}

#[test]
fn checkpoint_interval_takes_snapshots_on_its_own() {
    let db = Db::new("interval", &["--checkpoint-interval", "1"]);
    let s = db.start(&[]);
    s.create_gallery("g");
    s.add_ok("g", &faces(1..=20));
    let started = Instant::now();
    let last = loop {
        let st = status(&s);
        if st["snapshots"]["last"]["faces"] == json!(20) {
            break st["snapshots"]["last"].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "expected a snapshot of the 20 faces within 6 s with --checkpoint-interval 1: {}",
            st["snapshots"]
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let index = last["index"].as_u64().expect("snapshot index");
    assert!(
        db.snapshots().iter().any(|(i, _)| *i == index),
        "expected the file of snapshot {index} in the snapshot directory: {:?}",
        db.snapshots()
    );
    assert_eq!(status(&s)["snapshots"]["checkpoint_interval"], json!(1), "expected the interval in the status");
    drop(s);
    let s = db.start(&[]);
    assert!(
        status(&s)["recovery"]["snapshot_index"].as_u64() >= Some(index),
        "expected recovery from the automatic snapshot"
    );
    assert_eq!(s.count("g"), 20, "expected the 20 faces back");
}

// ---------------------------------------------------------------------------------------------
// Damaged files
// ---------------------------------------------------------------------------------------------

/// A gallery `g` and faces 1..=n, one add each; returns the state.
fn one_face_per_record(db: &Db, n: u64) -> BTreeMap<String, Vec<Value>> {
    let s = db.start(&[]);
    s.create_gallery("g");
    for id in 1..=n {
        s.add_ok("g", &faces([id]));
    }
    dump(&s)
}

#[test]
fn a_corrupt_log_record_stops_the_start_unless_forced() {
    let db = Db::new("bad-record", &[]);
    let mut expected = one_face_per_record(&db, 8);
    let segment = db.last_segment();
    let records = wal_records(&segment);
    // Records: the configuration, the gallery, then face k in record k + 1.
    assert_eq!(records.len(), 10, "expected 10 records in {}", segment.display());
    let (offset, len) = records[5];
    flip_byte(&segment, offset + 8 + len / 2);

    let stderr = db.refused(&[]);
    assert!(
        stderr.contains(&file_name(&segment))
            && stderr.contains(&format!("byte {offset}"))
            && stderr.contains("--force-recovery"),
        "expected the error to name {}, byte {offset} and --force-recovery; stderr:\n{stderr}",
        file_name(&segment)
    );

    let s = db.start(&["--force-recovery"]);
    let recovery = status(&s)["recovery"].clone();
    assert!(recovery["skipped_records"].as_u64() >= Some(1), "expected a skipped record: {recovery}");
    let skipped = &recovery["skipped"][0];
    assert!(
        skipped["file"].as_str().is_some_and(|f| f.ends_with(&file_name(&segment)))
            && skipped["offset"] == json!(offset),
        "expected the skipped record at {} byte {offset}: {recovery}",
        file_name(&segment)
    );
    expected.get_mut("g").expect("gallery g").retain(|f| f["id"] != json!(4));
    assert_eq!(dump(&s), expected, "expected every face but 4 (in the damaged record) after a forced start");

    // The forced start took a snapshot past the damaged record: the next start needs no force.
    let snapshots = db.snapshots();
    assert_eq!(snapshots.len(), 1, "expected the forced start to take a snapshot past the skipped record");
    s.add_ok("g", &faces([9]));
    let expected = dump(&s);
    assert_eq!(ids(&expected["g"]), [1, 2, 3, 5, 6, 7, 8, 9], "expected face 9 added after the forced start");
    drop(s);
    let s = db.start(&[]);
    assert_eq!(dump(&s), expected, "expected a plain start from the snapshot taken by the forced one");
    let recovery = status(&s)["recovery"].clone();
    assert_eq!(recovery["snapshot_index"], json!(snapshots[0].0), "expected that snapshot loaded: {recovery}");
    assert_eq!(recovery["skipped_records"], json!(0), "expected nothing skipped: {recovery}");
}

#[test]
fn a_torn_tail_is_cut_off_and_only_the_torn_write_is_lost() {
    let db = Db::new("torn", &[]);
    let mut expected = one_face_per_record(&db, 6);
    let segment = db.last_segment();
    let records = wal_records(&segment);
    let (last, _) = *records.last().expect("records");
    truncate(&segment, file_len(&segment) - 3);

    let s = db.start(&[]);
    let truncated = status(&s)["recovery"]["truncated"].clone();
    assert!(
        truncated["file"].as_str().is_some_and(|f| f.ends_with(&file_name(&segment))),
        "expected the status to name the truncated segment {}: {truncated}",
        file_name(&segment)
    );
    assert_eq!(truncated["offset"], json!(last), "expected the segment cut where its last record started");
    assert_eq!(file_len(&segment), last, "expected the torn record cut off the file");
    expected.get_mut("g").expect("gallery g").retain(|f| f["id"] != json!(6));
    assert_eq!(dump(&s), expected, "expected every face but the torn last one (6)");

    s.add_ok("g", &faces([6]));
    drop(s);
    let s = db.start(&[]);
    assert_eq!(status(&s)["recovery"]["truncated"], Value::Null, "expected nothing to cut on the next start");
    assert_eq!(ids(&dump(&s)["g"]), [1, 2, 3, 4, 5, 6], "expected face 6 added again after the torn tail");
}

/// Two snapshots, writes around them, then the newest snapshot damaged by `damage`: the start
/// uses the older one and the log after it.
fn a_corrupt_newest_snapshot_falls_back_to_the_older_one(label: &str, damage: fn(&Path)) {
    let db = Db::new(label, &["--checkpoint-count", "2"]);
    let s = db.start(&[]);
    s.create_gallery("g");
    s.add_ok("g", &faces(1..=10));
    let older = snapshot(&s)["index"].as_u64().expect("snapshot index");
    s.add_ok("g", &faces(11..=20));
    s.create_gallery("h");
    let newer = snapshot(&s);
    s.add_ok("h", &faces(21..=25));
    let before = dump(&s);
    drop(s);
    let newer_file = PathBuf::from(newer["file"].as_str().expect("snapshot file"));
    damage(&newer_file);

    let s = db.start(&[]);
    assert_eq!(dump(&s), before, "expected every write back from the older snapshot and the log ({label})");
    let recovery = status(&s)["recovery"].clone();
    assert_eq!(recovery["snapshot_index"], json!(older), "expected the older snapshot loaded ({label}): {recovery}");
    let bad = recovery["bad_snapshots"].as_array().cloned().unwrap_or_default();
    assert!(
        bad.iter().any(|b| b.as_str().is_some_and(|b| b.contains(&file_name(&newer_file)))),
        "expected bad_snapshots to name {} ({label}): {recovery}",
        file_name(&newer_file)
    );
}

#[test]
fn a_newest_snapshot_with_a_flipped_byte_falls_back_to_the_older_one() {
    a_corrupt_newest_snapshot_falls_back_to_the_older_one("snap-flip", |path| flip_byte(path, file_len(path) / 2));
}

#[test]
fn a_truncated_newest_snapshot_falls_back_to_the_older_one() {
    a_corrupt_newest_snapshot_falls_back_to_the_older_one("snap-cut", |path| truncate(path, file_len(path) - 100));
}

#[test]
fn a_corrupt_only_snapshot_falls_back_to_the_whole_log() {
    let db = Db::new("only-snap", &[]);
    let s = db.start(&[]);
    let writes = write_workload(&s);
    let taken = snapshot(&s);
    s.add_ok("people", &faces([20, 21]));
    let before = dump(&s);
    drop(s);
    let file = PathBuf::from(taken["file"].as_str().expect("snapshot file"));
    flip_byte(&file, file_len(&file) / 2);

    let s = db.start(&[]);
    assert_eq!(dump(&s), before, "expected every write back from the whole log");
    let recovery = status(&s)["recovery"].clone();
    assert_eq!(recovery["snapshot_index"], Value::Null, "expected no snapshot loaded: {recovery}");
    assert!(!recovery["bad_snapshots"].as_array().is_none_or(Vec::is_empty), "expected a bad snapshot: {recovery}");
    assert_eq!(
        recovery["replayed_records"],
        json!(writes + 2),
        "expected the whole log replayed (configuration, workload, one add): {recovery}"
    );
}

#[test]
fn snapshots_taken_under_concurrent_writes_lose_and_repeat_nothing() {
    let db = Db::new("snap-race", &["--checkpoint-count", "2", "--wal-segment-bytes", "4096"]);
    let s = db.start(&[]);
    for t in 0..4 {
        s.create_gallery(&format!("w{t}"));
    }
    let done = AtomicBool::new(false);
    let taken = std::thread::scope(|scope| {
        let snapshots = scope.spawn(|| {
            let mut taken = 0;
            while !done.load(Ordering::Relaxed) || taken < 2 {
                snapshot(&s);
                taken += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            taken
        });
        let writers: Vec<_> = (0..4u64)
            .map(|t| {
                let s = &s;
                scope.spawn(move || {
                    let gallery = format!("w{t}");
                    for i in 0..60u64 {
                        s.add_ok(&gallery, &faces([i]));
                        if i % 3 == 2 {
                            let r =
                                s.update_faces(&gallery, &json!([{"id": i - 1, "meta": {"feat": format!("u{i}")}}]));
                            assert_eq!(r.status, 200, "expected the update of {i} to succeed: {}", r.body);
                        }
                        if i % 5 == 4 {
                            let r = s.delete_faces(&gallery, &json!([i - 2]));
                            assert_eq!(r.status, 200, "expected the delete of {} to succeed: {}", i - 2, r.body);
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("writer thread");
        }
        done.store(true, Ordering::Relaxed);
        snapshots.join().expect("snapshot thread")
    });
    assert!(taken >= 2, "expected several snapshots taken while writing, got {taken}");
    let before = dump(&s);
    assert!(before.values().all(|g| g.len() == 48), "expected 48 faces in each gallery");
    drop(s);

    let s = db.start(&[]);
    assert_eq!(dump(&s), before, "expected every write back from the newest snapshot and the log after it");
    drop(s);
    // The older snapshot and the log after it must give the same.
    let (_, newest) = db.snapshots().last().cloned().expect("a snapshot");
    flip_byte(&newest, file_len(&newest) / 2);
    let s = db.start(&[]);
    assert_eq!(dump(&s), before, "expected every write back from the older snapshot and the log after it");
}

#[test]
fn with_one_snapshot_kept_a_corrupt_snapshot_never_starts_with_data_missing() {
    let db = Db::new("one-snap", &["--checkpoint-count", "1", "--wal-segment-bytes", "4096"]);
    let s = db.start(&[]);
    s.create_gallery("g");
    for round in 0..2u64 {
        for batch in 0..3u64 {
            let from = round * 150 + batch * 50;
            s.add_ok("g", &faces(from..from + 50));
        }
        snapshot(&s);
    }
    s.add_ok("g", &faces(300..305));
    let before = dump(&s);
    drop(s);
    let segments = db.segments();
    assert!(segments[0].0 > 1, "expected the log before the only snapshot deleted: {segments:?}");
    let snapshots = db.snapshots();
    assert_eq!(snapshots.len(), 1, "expected one snapshot kept: {snapshots:?}");
    let (_, only) = &snapshots[0];
    flip_byte(only, file_len(only) / 2);

    // Nothing holds the data before the log's start any more: refusing is right, starting
    // with part of the data is not.
    let stderr = db.refused(&[]);
    assert!(
        stderr.contains(&file_name(only)),
        "expected the error to name the damaged snapshot {}; stderr:\n{stderr}",
        file_name(only)
    );
    let forced = db.launch(Path::new(EXAMPLE_SCHEMA), FACEN, &["--force-recovery"], true);
    if let Ok(s) = forced {
        assert_eq!(dump(&s), before, "expected a forced start to refuse rather than start with data missing");
    }
}

#[test]
fn with_wal_mode_none_an_unreadable_only_snapshot_stops_the_start() {
    let db = Db::new("none-bad-snap", &["--wal-mode", "none"]);
    let s = db.start(&[]);
    write_workload(&s);
    let file = PathBuf::from(snapshot(&s)["file"].as_str().expect("snapshot file"));
    drop(s);
    flip_byte(&file, file_len(&file) / 2);
    // Without a log the snapshot is the only copy of the data: starting empty (and taking new
    // snapshots next to the damaged one) must not happen without --force-recovery.
    let stderr = db.refused(&[]);
    assert!(
        stderr.contains(&file_name(&file)),
        "expected the error to name the damaged snapshot {}; stderr:\n{stderr}",
        file_name(&file)
    );
}

#[test]
fn a_snapshot_taken_after_falling_back_past_a_damaged_one_is_kept() {
    let db = Db::new("none-retire", &["--wal-mode", "none"]);
    let s = db.start(&["--checkpoint-count", "2"]);
    s.create_gallery("g");
    s.add_ok("g", &faces(1..=3));
    snapshot(&s);
    // More log indices after the older snapshot than the writes after the restart will take.
    for id in 4..=8 {
        s.add_ok("g", &faces([id]));
    }
    let damaged = PathBuf::from(snapshot(&s)["file"].as_str().expect("snapshot file"));
    drop(s);
    flip_byte(&damaged, file_len(&damaged) / 2);

    // The older snapshot alone would lose the faces after it: a plain start refuses, naming
    // the damaged file; --force-recovery accepts the loss.
    let stderr = db.refused(&["--checkpoint-count", "1"]);
    assert!(
        stderr.contains(&file_name(&damaged)) && stderr.contains("--force-recovery"),
        "expected the refusal to name {} and --force-recovery; stderr:\n{stderr}",
        file_name(&damaged)
    );
    let s = db.start(&["--checkpoint-count", "1", "--force-recovery"]);
    assert_eq!(s.count("g"), 3, "expected the 3 faces of the older snapshot");
    assert!(
        !damaged.exists() && damaged.with_extension("snap.corrupt").exists(),
        "expected the damaged snapshot set aside as .snap.corrupt; files: {:?}",
        db.snapshots()
    );
    s.create_gallery("h");
    s.add_ok("h", &faces([1]));
    let taken = snapshot(&s);
    assert_eq!(taken["written"], json!(true), "expected a snapshot written: {taken}");
    let file = PathBuf::from(taken["file"].as_str().expect("snapshot file"));
    assert!(
        file.exists(),
        "expected the snapshot just written ({}) kept, not deleted in favour of the damaged {}; files: {:?}",
        file_name(&file),
        file_name(&damaged),
        db.snapshots()
    );
    let before = dump(&s);
    drop(s);
    let s = db.start(&["--checkpoint-count", "1"]);
    assert_eq!(dump(&s), before, "expected the data of the last snapshot after a restart");
}

// ---------------------------------------------------------------------------------------------
// Schema and facen size
// ---------------------------------------------------------------------------------------------

/// The example schema with two fields added.
fn schema_with_added_fields() -> String {
    let base = std::fs::read_to_string(EXAMPLE_SCHEMA).expect("read the example schema");
    format!(
        "{base}- id: 12\n  name: \"rank\"\n  field_type: \"unsigned\"\n  default: 7\n\
         - id: 13\n  name: \"zone\"\n  field_type: \"string\"\n  default: \"nowhere\"\n"
    )
}

#[test]
fn a_schema_that_adds_fields_is_applied_and_recorded() {
    let db = Db::new("schema-add", &[]);
    let schemas = TempDir::new("schemas");
    let added = schemas.write("added.yaml", &schema_with_added_fields());
    let s = db.start(&[]);
    s.create_gallery("g");
    s.add_ok("g", &faces(1..=3));
    // Part in a snapshot with the old schema, part in the log after it.
    snapshot(&s);
    s.add_ok("g", &faces([5]));
    let before = dump(&s);
    drop(s);
    // Another facen size is refused from the log's record too (no snapshot yet).
    let stderr = db.refused_with(&added, 12, &[]);
    assert!(stderr.contains("facen"), "expected the error to name the facen size; stderr:\n{stderr}");

    let s = db.start_with(&added, FACEN, &[]);
    let recovery = status(&s)["recovery"].clone();
    assert_eq!(recovery["schema_added_fields"], json!(["rank", "zone"]), "expected the added fields: {recovery}");
    for (old, now) in before["g"].iter().zip(&dump(&s)["g"]) {
        let mut expected = old.clone();
        expected["meta"]["rank"] = json!(7);
        expected["meta"]["zone"] = json!("nowhere");
        assert_eq!(now, &expected, "expected the stored face with the new fields at their defaults");
    }
    s.add_ok("g", &json!([face(4, &vector(4, 0), json!({"rank": 9, "zone": "north"}))]));
    let r = s.update_faces("g", &json!([{"id": 1, "meta": {"rank": 3}}]));
    assert_eq!(r.status, 200, "expected an update of the new field to succeed: {}", r.body);
    let expected = dump(&s);
    drop(s);

    // The old snapshot, then the log: the schema change is replayed before the writes after it.
    let s = db.start_with(&added, FACEN, &[]);
    assert_eq!(status(&s)["recovery"]["schema_added_fields"], json!([]), "expected a clean second start");
    assert_eq!(dump(&s), expected, "expected the faces with the new fields after a restart");
    snapshot(&s);
    drop(s);
    // From a snapshot, which records the new schema.
    let s = db.start_with(&added, FACEN, &[]);
    assert_eq!(status(&s)["recovery"]["schema_added_fields"], json!([]), "expected a clean start from the snapshot");
    assert_eq!(dump(&s), expected, "expected the faces with the new fields from the snapshot");
    let g = &dump(&s)["g"];
    assert_eq!(
        g.iter().map(|f| f["meta"]["rank"].clone()).collect::<Vec<_>>(),
        [json!(3), json!(7), json!(7), json!(9), json!(7)],
        "expected ranks 3 (face 1, updated), 7, 7 (defaults), 9 (face 4, added), 7 (default)"
    );
}

#[test]
fn a_changed_or_removed_field_or_another_facen_size_stops_the_start() {
    let db = Db::new("schema-diff", &[]);
    let schemas = TempDir::new("schemas");
    let base = std::fs::read_to_string(EXAMPLE_SCHEMA).expect("read the example schema");
    let s = db.start(&[]);
    s.create_gallery("g");
    s.add_ok("g", &faces(1..=3));
    let before = dump(&s);
    snapshot(&s);
    s.add_ok("g", &faces([4]));
    let before_with_4 = dump(&s);
    drop(s);
    assert_eq!(before["g"].len() + 1, before_with_4["g"].len(), "expected face 4 added after the snapshot");

    let changed = base.replace(
        "name: \"person_id\"\n  field_type: \"unsigned\"\n  default: 0",
        "name: \"person_id\"\n  field_type: \"string\"\n  default: ''",
    );
    assert_ne!(changed, base, "expected the example schema to have person_id as unsigned with default 0");
    let stderr = db.refused_with(&schemas.write("changed.yaml", &changed), FACEN, &[]);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("person_id")).collect();
    assert!(
        lines.iter().any(|l| l.contains("unsigned")) && lines.iter().any(|l| l.contains("string")),
        "expected the difference shown: person_id as unsigned and as string; stderr:\n{stderr}"
    );

    let removed = base.replace("- id: 9\n  name: \"feat\"\n  field_type: \"string\"\n  default: ''\n", "");
    assert_ne!(removed, base, "expected the example schema to have the field feat");
    let stderr = db.refused_with(&schemas.write("removed.yaml", &removed), FACEN, &[]);
    assert!(
        stderr.lines().any(|l| l.contains("feat") && l.contains("removed")),
        "expected the difference shown: feat removed; stderr:\n{stderr}"
    );

    let stderr = db.refused_with(Path::new(EXAMPLE_SCHEMA), 12, &[]);
    let line = stderr.lines().find(|l| l.starts_with("facedb:")).unwrap_or_default();
    let numbers: Vec<&str> = line.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).collect();
    assert!(
        line.contains("facen") && numbers.contains(&"8") && numbers.contains(&"12"),
        "expected the error to name the facen size and both sizes, 8 (recorded) and 12; stderr:\n{stderr}"
    );

    // The refused starts changed nothing.
    let s = db.start(&[]);
    assert_eq!(dump(&s), before_with_4, "expected the data intact after the refused starts");
}

// ---------------------------------------------------------------------------------------------
// Memory limit
// ---------------------------------------------------------------------------------------------

#[test]
fn memory_limit_refuses_a_batch_that_would_pass_it_and_changes_nothing() {
    let db = Db::new("memory", &[]);
    let s = db.start(&["--memory-limit", "512M"]);
    s.create_gallery("g");
    s.add_ok("g", &faces(1..=10));
    let memory = status(&s)["memory"].clone();
    assert_eq!(memory["limit_bytes"], json!(512u64 << 20), "expected 512M read as 512 MiB: {memory}");
    let used = memory["used_bytes"].as_u64().expect("used_bytes");
    assert!(used > 0 && used.is_multiple_of(10), "expected 10 faces of equal size counted: {memory}");
    let per_face = used / 10;
    assert!(per_face >= FACEN as u64 * 4, "expected a face to count at least its vector: {per_face}");
    drop(s);

    // Room for exactly 5 more.
    let limit = 15 * per_face;
    let s = db.start(&["--memory-limit", &limit.to_string()]);
    let memory = status(&s)["memory"].clone();
    assert_eq!(memory["used_bytes"], json!(used), "expected the recovered faces counted: {memory}");
    assert_eq!(memory["limit_bytes"], json!(limit), "expected the limit in the status: {memory}");

    let r = s.add_faces("g", &faces(11..=16));
    assert_error(&r, 507, "INSUFFICIENT_STORAGE", Some("memory_limit"), None);
    assert_eq!(s.count("g"), 10, "expected nothing of the refused batch added");
    assert_eq!(s.filter_ids("g", json!({"id": {"range": [1, 100]}})).len(), 10, "expected searches to keep working");
    s.create_gallery("other");
    let r = s.add_faces("other", &faces([1]));
    assert_eq!(r.status, 200, "expected one face to fit in another gallery: {}", r.body);
    let r = s.add_faces("g", &faces(11..=15));
    assert_error(&r, 507, "INSUFFICIENT_STORAGE", Some("memory_limit"), None);
    let r = s.delete_faces("other", &json!([1]));
    assert_eq!(r.status, 200, "expected the delete to succeed: {}", r.body);

    s.add_ok("g", &faces(11..=15));
    assert_eq!(s.count("g"), 15, "expected the 5 faces that fit added");
    assert_error(&s.add_faces("g", &faces([16])), 507, "INSUFFICIENT_STORAGE", Some("memory_limit"), None);
    let r = s.delete_faces("g", &json!([1, 2]));
    assert_eq!(r.status, 200, "expected the delete to succeed: {}", r.body);
    s.add_ok("g", &faces([16, 17]));
    assert_error(&s.add_faces("g", &faces([18])), 507, "INSUFFICIENT_STORAGE", Some("memory_limit"), None);
    assert_eq!(status(&s)["memory"]["used_bytes"], json!(limit), "expected the memory used at the limit");

    // Adds refused for other reasons take no room.
    let r = s.delete_faces("g", &json!([16]));
    assert_eq!(r.status, 200, "expected the delete to succeed: {}", r.body);
    for _ in 0..3 {
        assert_eq!(s.add_faces("g", &faces([3])).status, 409, "expected an add of a stored id refused");
        assert_eq!(s.add_faces("g", &faces([30, 30])).status, 409, "expected an add of one id twice refused");
        let r = s.add_faces("g", &json!([{"id": 30, "facen": "AAAA"}]));
        assert_eq!(r.status, 400, "expected an add of a bad facen refused: {}", r.body);
        assert_eq!(s.add_faces("nowhere", &faces([30])).status, 404, "expected an add to a missing gallery refused");
    }
    assert_eq!(status(&s)["memory"]["used_bytes"], json!(14 * per_face), "expected refused adds to take no room");
    s.add_ok("g", &faces([30]));
    assert_error(&s.add_faces("g", &faces([31])), 507, "INSUFFICIENT_STORAGE", Some("memory_limit"), None);

    // Deleting a gallery frees its faces' room.
    let r = s.post_empty("/v2/galleries/delete/g");
    assert_eq!(r.status, 204, "expected the gallery deleted: {}", r.body);
    assert_eq!(status(&s)["memory"]["used_bytes"], json!(0), "expected no memory used once the gallery is gone");
    s.create_gallery("g2");
    s.add_ok("g2", &faces(1..=15));
    assert_error(&s.add_faces("g2", &faces([16])), 507, "INSUFFICIENT_STORAGE", Some("memory_limit"), None);
    drop(s);

    let s = db.start(&["--memory-limit", &limit.to_string()]);
    assert_eq!(status(&s)["memory"]["used_bytes"], json!(limit), "expected the same memory used after a restart");
    assert_error(&s.add_faces("g2", &faces([16])), 507, "INSUFFICIENT_STORAGE", Some("memory_limit"), None);
    assert_eq!(s.count("g2"), 15, "expected the 15 faces after a restart");
    snapshot(&s);
    drop(s);

    // A limit below what is stored: the start recovers everything (from the snapshot), and adds
    // wait for deletes.
    let small = 10 * per_face;
    let s = db.start(&["--memory-limit", &small.to_string()]);
    assert_eq!(s.count("g2"), 15, "expected all 15 faces recovered under a smaller limit");
    assert_eq!(status(&s)["memory"]["used_bytes"], json!(limit), "expected the snapshot's faces counted");
    assert_error(&s.add_faces("g2", &faces([16])), 507, "INSUFFICIENT_STORAGE", Some("memory_limit"), None);
    let r = s.delete_faces("g2", &json!([1, 2, 3, 4, 5, 6]));
    assert_eq!(r.status, 200, "expected the delete to succeed: {}", r.body);
    s.add_ok("g2", &faces([16]));
    assert_error(&s.add_faces("g2", &faces([17])), 507, "INSUFFICIENT_STORAGE", Some("memory_limit"), None);
}

// ---------------------------------------------------------------------------------------------
// Group commit
// ---------------------------------------------------------------------------------------------

/// Runs 16 client threads of 20 single-face adds each (`gallery(t)` for thread t) and returns
/// the log records and fsyncs they took.
fn concurrent_adds(s: &Server, gallery: impl Fn(u64) -> String + Sync) -> (u64, u64) {
    let counters = |st: &Value| (st["wal"]["records"].as_u64().unwrap_or(0), st["wal"]["fsyncs"].as_u64().unwrap_or(0));
    let (records0, fsyncs0) = counters(&status(s));
    std::thread::scope(|scope| {
        for t in 0..16u64 {
            let gallery = &gallery;
            scope.spawn(move || {
                for i in 0..20 {
                    s.add_ok(&gallery(t), &faces([t * 100 + i]));
                }
            });
        }
    });
    let (records1, fsyncs1) = counters(&status(s));
    (records1 - records0, fsyncs1 - fsyncs0)
}

#[test]
fn concurrent_adds_share_fsyncs() {
    let db = Db::new("group-commit", &["--wal-mode", "fsync"]);
    let s = db.start(&[]);
    s.create_gallery("one");
    let (records, fsyncs) = concurrent_adds(&s, |_| "one".to_string());
    println!(
        "one gallery: {records} records, {fsyncs} fsyncs, {:.2} records per fsync",
        records as f64 / fsyncs as f64
    );
    assert_eq!(s.count("one"), 320, "expected every add acknowledged and stored");
    assert!(records >= 320, "expected at least 320 records logged, got {records}");
    assert!(fsyncs < records, "expected fewer fsyncs than records (group commit): {fsyncs} fsyncs, {records} records");

    for t in 0..16 {
        s.create_gallery(&format!("g{t}"));
    }
    let (records, fsyncs) = concurrent_adds(&s, |t| format!("g{t}"));
    println!(
        "16 galleries: {records} records, {fsyncs} fsyncs, {:.2} records per fsync",
        records as f64 / fsyncs as f64
    );
    for t in 0..16 {
        assert_eq!(s.count(&format!("g{t}")), 20, "expected 20 faces in g{t}");
    }
    assert!(records >= 320, "expected at least 320 records logged, got {records}");
    assert!(fsyncs < records, "expected fewer fsyncs than records (group commit): {fsyncs} fsyncs, {records} records");
    let before = dump(&s);
    drop(s);
    let s = db.start(&[]);
    assert_eq!(dump(&s), before, "expected every concurrent add back after a restart");
}

// ---------------------------------------------------------------------------------------------
// Starts that fail
// ---------------------------------------------------------------------------------------------

#[test]
fn a_second_server_on_the_same_data_dir_fails_naming_it() {
    let db = Db::new("lock", &[]);
    let s = db.start(&[]);
    s.create_gallery("g");
    let stderr = db.refused(&[]);
    let dir = db.dir.path().display().to_string();
    assert!(
        stderr.contains(&dir) && stderr.contains("in use"),
        "expected the error to name {dir} and say it is in use; stderr:\n{stderr}"
    );
    assert_eq!(s.count("g"), 0, "expected the first server to keep serving");
    drop(s);
    let s = db.start(&[]);
    assert_eq!(s.count("g"), 0, "expected a start once the first server is gone");
}

/// The `facedb:` line of a start refused for a bad flag value.
fn refused_flag(flag: &str, value: &str) -> String {
    let db = Db::new("badflag", &[]);
    let stderr = db.refused(&[flag, value]);
    assert!(
        db.segments().is_empty() && db.snapshots().is_empty(),
        "expected nothing written to the data directory by a start refused for {flag} {value}"
    );
    stderr.lines().find(|l| l.starts_with("facedb:")).unwrap_or(&stderr).to_string()
}

#[test]
fn bad_durability_flag_values_stop_the_start_naming_the_setting_and_value() {
    for (flag, value, setting) in [
        ("--wal-mode", "sync", "wal_mode"),
        ("--memory-limit", "12X", "memory_limit"),
        ("--wal-segment-bytes", "100", "wal_segment_bytes"),
    ] {
        let line = refused_flag(flag, value);
        assert!(
            line.contains(setting) && line.contains(value),
            "expected the error to name {setting} and {value:?}, got: {line}"
        );
    }
}

#[test]
fn checkpoint_count_0_stops_the_start_naming_the_setting_and_value() {
    let line = refused_flag("--checkpoint-count", "0");
    let numbers: Vec<&str> = line.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).collect();
    assert!(
        line.contains("checkpoint_count") && numbers.contains(&"0"),
        "expected the error to name checkpoint_count and the value 0, got: {line}"
    );
}

/// `POST /v2/galleries/add/:name` with index parameters: those given stay the gallery's after
/// restarts from the log and from a snapshot; the others follow the server's flags.
#[test]
fn a_gallerys_index_parameters_survive_restarts() {
    let db = Db::new("index-params", &[]);
    let params = |s: &Server, gallery: &str| {
        let index = &status(s)["indexes"][gallery];
        [&index["m"], &index["ef_construction"], &index["ef_search"]].map(|v| v.as_u64().unwrap_or(0))
    };
    let s = db.start(&["--index-m", "12"]);
    let r = s.post_json("/v2/galleries/add/tuned", &json!({"m": 24, "ef_search": 300}));
    assert_eq!(r.status, 200, "expected 200 from a gallery add with index parameters, got {}", r.body);
    s.create_gallery("plain");
    assert_eq!(params(&s, "tuned"), [24, 200, 300], "m and ef_search given, ef_construction the default");
    assert_eq!(params(&s, "plain"), [12, 200, 128], "the server's --index-m");
    drop(s);

    let s = db.start(&["--index-m", "16", "--index-ef-construction", "100"]);
    assert_eq!(params(&s, "tuned"), [24, 100, 300], "after a restart from the log, with other flags");
    assert_eq!(params(&s, "plain"), [16, 100, 128], "a gallery without parameters follows the flags");
    assert_eq!(snapshot(&s)["written"], json!(true));
    drop(s);

    let s = db.start(&[]);
    assert_eq!(status(&s)["recovery"]["snapshot_index"].as_u64().map(|i| i > 0), Some(true), "loaded a snapshot");
    assert_eq!(params(&s, "tuned"), [24, 200, 300], "after a restart from the snapshot");
    assert_eq!(params(&s, "plain"), [32, 200, 128]);
}
