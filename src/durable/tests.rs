//! The node loop: group commit, one apply path live and at recovery, refusals that never
//! reach the log, and the memory limit.

use std::sync::atomic::Ordering;

use super::*;
use crate::schema::MetaValue;
use crate::test_dir::TestDir;
use crate::wal::recover::read_log;

fn schema() -> Schema {
    Schema::from_yaml("- {id: 1, name: cam, field_type: string}\n", "test").unwrap()
}

fn engine_config() -> EngineConfig {
    EngineConfig { facen_size: 2, ..EngineConfig::default() }
}

fn durable(dir: &Path, mode: WalMode) -> DurableConfig {
    DurableConfig {
        data_dir: dir.to_owned(),
        wal_mode: mode,
        wal_segment_bytes: 1 << 20,
        checkpoint_interval: None,
        checkpoint_count: 2,
        force_recovery: false,
    }
}

fn face(id: u64, t: u64) -> Face {
    Face { id, vector: vec![id as f32, t as f32], meta: vec![MetaValue::String(format!("t{t}"))] }
}

fn faces_of(engine: &Engine) -> Vec<Face> {
    let mut all: Vec<Face> = (0..112).filter_map(|id| engine.get_face("g", id).ok()).collect();
    all.sort_by_key(|f| f.id);
    all
}

/// Many threads racing on the same few ids: whatever the log accepted replays onto a fresh
/// engine, through the same `Engine::apply`, without a refusal, to the same faces. That holds
/// only if every write was checked against the writes logged before it and memory changed in
/// log order.
#[test]
fn racing_writers_leave_a_log_that_replays_to_the_same_state() {
    let temp = TestDir::new("engine-race");
    let database = Database::open(schema(), engine_config(), durable(&temp.0, WalMode::Write)).unwrap();
    database.create_gallery("g").unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let database = database.clone();
            std::thread::spawn(move || {
                let mut x = t * 7919 + 1;
                let mut accepted = 0;
                for _ in 0..300 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = x % 12;
                    let result = match (x >> 32) % 3 {
                        0 => database.add_faces("g", vec![face(id, t), face(id + 100, t)]),
                        1 => database.delete_faces("g", vec![id, id + 100]),
                        _ => {
                            let update = FaceUpdate { id, vector: Some(vec![1.0, t as f32]), meta: vec![] };
                            database.update_faces("g", vec![update]).map(drop)
                        }
                    };
                    accepted += u32::from(result.is_ok());
                }
                accepted
            })
        })
        .collect();
    let accepted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(accepted > 100, "only {accepted} writes were accepted: the race did not happen");
    let log = read_log(&temp.0.join("wal"), &ReadOptions::default()).unwrap();
    // The configuration, the gallery, and every accepted write: no refusal was logged. Besides
    // them, the empty entry the replica's election at start began its term with.
    let writes: Vec<&Entry> = log.entries.iter().filter(|entry| !entry.payload.is_empty()).collect();
    assert_eq!(writes.len() as u32, accepted + 2);
    assert_eq!(log.entries.len() - writes.len(), 1, "one empty entry: the election at start");
    let replayed = Engine::new(schema(), engine_config());
    for entry in writes {
        let op = op::decode(&entry.payload).unwrap();
        replayed.apply(entry.index, op).unwrap_or_else(|e| panic!("entry {}: {e}", entry.index));
    }
    assert_eq!(faces_of(&replayed), faces_of(database.engine()));
    assert_eq!(replayed.counted_faces(), database.counted_faces());
    assert_eq!(replayed.applied_index(), database.applied_index());
}

#[test]
fn concurrent_writers_share_fsyncs() {
    let temp = TestDir::new("commit-group");
    let database = Database::open(schema(), engine_config(), durable(&temp.0, WalMode::Fsync)).unwrap();
    database.create_gallery("g").unwrap();
    let writers: Vec<_> = (0..16u64)
        .map(|w| {
            let database = database.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    database.add_faces("g", vec![face(w * 100 + i, w)]).unwrap();
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(database.gallery_size("g").unwrap(), 320);
    let stats = database.node.stats();
    let (records, fsyncs) = (stats.records.load(Ordering::Relaxed), stats.fsyncs.load(Ordering::Relaxed));
    assert_eq!(records, 322, "the configuration, the gallery, 320 adds");
    assert!(fsyncs < records, "group commit: {records} records in {fsyncs} fsyncs");
    // The election's empty entry at 1 (on no record of its own), then the 322 records.
    assert_eq!(stats.last_index.load(Ordering::Relaxed), 323, "indices without gaps");
}

#[test]
fn a_refused_write_is_not_logged_and_the_next_start_sees_what_was_acknowledged() {
    let temp = TestDir::new("commit-refused");
    {
        let database = Database::open(schema(), engine_config(), durable(&temp.0, WalMode::Write)).unwrap();
        database.create_gallery("g").unwrap();
        database.add_faces("g", vec![face(1, 0), face(2, 0)]).unwrap();
        let refused = database.add_faces("g", vec![face(3, 0), face(1, 0)]).unwrap_err();
        assert!(matches!(refused, Error::Refused(engine::Error::FaceExists(1))), "{refused:?}");
        assert!(database.create_gallery("g").unwrap_err().is_refusal());
        database.delete_faces("g", vec![2]).unwrap();
        let updated = database.update_faces("g", vec![FaceUpdate { id: 1, vector: None, meta: vec![] }]).unwrap();
        assert_eq!(updated, vec![face(1, 0)]);
        assert_eq!(database.node.stats().records.load(Ordering::Relaxed), 5);
    }
    let database = Database::open(schema(), engine_config(), durable(&temp.0, WalMode::Write)).unwrap();
    assert_eq!(database.recovery().replayed, 5);
    assert_eq!(faces_of(database.engine()), vec![face(1, 0)]);
    assert_eq!(database.counted_faces(), 1);
}

#[test]
fn an_add_past_the_memory_limit_is_refused_whole() {
    let per_face = engine::face_bytes(&schema(), 2);
    let config = EngineConfig { memory_limit: Some(per_face * 3), ..engine_config() };
    let database = Database::in_memory(schema(), config).unwrap();
    database.create_gallery("g").unwrap();
    let face = |id| Face { id, vector: vec![1.0, 0.0], meta: vec![MetaValue::String(String::new())] };
    database.add_faces("g", vec![face(1), face(2)]).unwrap();
    let refused = database.add_faces("g", vec![face(3), face(4)]).unwrap_err();
    assert!(matches!(refused, Error::Refused(engine::Error::MemoryLimit { limit, .. }) if limit == per_face * 3));
    assert_eq!(database.gallery_size("g").unwrap(), 2);
    database.add_faces("g", vec![face(3)]).unwrap();
    database.delete_faces("g", vec![1]).unwrap();
    database.add_faces("g", vec![face(4)]).unwrap();
    assert_eq!(database.memory_used(), per_face * 3);
}

/// A write the engine accepted but cannot apply (here: its face deleted behind the commit
/// loop's back) stops writes instead of letting memory and the log diverge; reads go on.
#[test]
fn a_logged_write_that_cannot_apply_stops_writes_but_not_reads() {
    let database = Database::in_memory(schema(), engine_config()).unwrap();
    database.create_gallery("g").unwrap();
    database.add_faces("g", vec![face(1, 0)]).unwrap();
    let engine = database.engine().clone();
    let delete = Op::DeleteFaces { gallery: "g".into(), ids: vec![1] };
    let mut checked = engine.check(&delete).unwrap();
    checked.queued();
    engine.apply(99, delete.clone()).unwrap();
    let stopped =
        database.node.submit(delete.clone(), op::encode(&delete).unwrap()).wait().map_err(Error::from).unwrap_err();
    assert!(matches!(&stopped, Error::Stopped(m) if m.contains("cannot be applied")), "{stopped}");
    drop(checked);
    let later = database.create_gallery("h").unwrap_err();
    assert!(matches!(&later, Error::Stopped(_)), "{later}");
    assert_eq!(database.gallery_size("g").unwrap(), 0, "reads go on");
}

/// A replica set of one elects itself at every start, in a new term, and its log still holds
/// one record per write: the new term's empty first entry rides on the next write's record.
#[test]
fn each_start_is_a_new_term_and_the_log_keeps_one_record_per_write() {
    use crate::wal::segment;
    let temp = TestDir::new("replica-restarts");
    let wal_dir = temp.0.join("wal");
    let records = |dir: &Path| -> usize { recover_segments(dir).iter().map(|path| count_records(path)).sum() };
    for start in 1..=3u64 {
        let database = Database::open(schema(), engine_config(), durable(&temp.0, WalMode::Fsync)).unwrap();
        if start == 1 {
            database.create_gallery("g").unwrap();
        }
        database.add_faces("g", vec![face(start, 0)]).unwrap();
        database.add_faces("g", vec![face(start + 10, 0)]).unwrap();
        drop(database);
        // The configuration and the gallery, then two adds per start.
        assert_eq!(records(&wal_dir), 2 + 2 * start as usize, "after start {start}");
        let log = read_log(&wal_dir, &ReadOptions::default()).unwrap();
        let terms: Vec<u64> = log.entries.iter().map(|entry| entry.term).collect();
        let empties: Vec<u64> = log.entries.iter().filter(|e| e.payload.is_empty()).map(|e| e.term).collect();
        assert_eq!(empties, (1..=start).collect::<Vec<_>>(), "one empty entry per start, each its own term");
        assert!(terms.windows(2).all(|pair| pair[0] <= pair[1]), "{terms:?}");
    }
    let database = Database::open(schema(), engine_config(), durable(&temp.0, WalMode::Fsync)).unwrap();
    let ids: Vec<u64> = faces_of(database.engine()).iter().map(|f| f.id).collect();
    assert_eq!(ids, [1, 2, 3, 11, 12, 13]);
    // The hard state beside the log, its last record: this start's term, voted for itself.
    let state = std::fs::read(wal_dir.join("raft.state")).unwrap();
    assert!(state.len() >= segment::HEADER_LEN + segment::RECORD_HEADER_LEN + 24);
    let last = &state[state.len() - 24..];
    assert_eq!((&last[..8], &last[8..16]), (&4u64.to_le_bytes()[..], &1u64.to_le_bytes()[..]));
}

fn recover_segments(dir: &Path) -> Vec<PathBuf> {
    crate::wal::recover::segments(dir).unwrap().into_iter().map(|(_, path)| path).collect()
}

/// The records of a segment, by their length fields.
fn count_records(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let (mut at, mut count) = (crate::wal::segment::HEADER_LEN, 0);
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += crate::wal::segment::RECORD_HEADER_LEN + len;
        count += 1;
    }
    count
}
