//! The log on its own: what is appended is read back; a torn tail is told from corruption;
//! concurrent writers share fsyncs; segments rotate.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::schema::MetaValue;
use crate::store::Face;
use crate::wal::segment::{self, scan};
use crate::wal::writer::{Wal, WalConfig};
use crate::wal::{Op, WalMode};

struct Dir(PathBuf);

impl Dir {
    fn new(label: &str) -> Dir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("facedb-wal-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Path, mode: WalMode, segment_bytes: u64) -> WalConfig {
    WalConfig { dir: dir.to_path_buf(), mode, segment_bytes }
}

fn add(id: u64) -> Op {
    let face = Face { id, vector: vec![id as f32, -0.5, 1e-30], meta: vec![MetaValue::String(format!("cam{id}"))] };
    Op::AddFaces { gallery: "g".into(), faces: vec![face] }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn appended_entries_are_read_back_in_order() {
    let dir = Dir::new("roundtrip");
    let wal = Wal::open(config(&dir.0, WalMode::Fsync, 1 << 20), 1, 1).unwrap();
    assert_eq!(wal.append(Op::CreateGallery { name: "g".into() }).unwrap(), 1);
    for id in 0..5 {
        assert_eq!(wal.append(add(id)).unwrap(), id + 2);
    }
    assert_eq!(wal.append(Op::DeleteFaces { gallery: "g".into(), ids: vec![u64::MAX, 3] }).unwrap(), 7);
    drop(wal);
    let files = segments(&dir.0);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].file_name().unwrap().to_str().unwrap(), "00000000000000000001.wal");
    let read = scan(&files[0]).unwrap();
    assert_eq!((read.first_index, read.torn_at, read.entries.len()), (1, None, 7));
    assert_eq!(read.entries[3].op, add(2));
    assert!(read.entries.iter().all(|e| e.term == 1));
}

#[test]
fn a_record_cut_short_is_a_torn_tail() {
    let dir = Dir::new("torn");
    let wal = Wal::open(config(&dir.0, WalMode::Write, 1 << 20), 1, 1).unwrap();
    for id in 0..3 {
        wal.append(add(id)).unwrap();
    }
    drop(wal);
    let path = &segments(&dir.0)[0];
    let full = std::fs::read(path).unwrap();
    let before_last = {
        let read = scan(path).unwrap();
        assert_eq!(read.entries.len(), 3);
        // Each record here has the same size: find the start of the third.
        let record = (full.len() - segment::HEADER_LEN) / 3;
        (segment::HEADER_LEN + 2 * record) as u64
    };
    for cut in [1, 5, 9] {
        std::fs::write(path, &full[..full.len() - cut]).unwrap();
        let read = scan(path).unwrap();
        assert_eq!((read.entries.len(), read.torn_at), (2, Some(before_last)), "cut {cut} bytes");
    }
}

#[test]
fn a_flipped_byte_is_corruption_named_by_file_and_offset() {
    let dir = Dir::new("corrupt");
    let wal = Wal::open(config(&dir.0, WalMode::Write, 1 << 20), 10, 2).unwrap();
    for id in 0..3 {
        wal.append(add(id)).unwrap();
    }
    drop(wal);
    let path = &segments(&dir.0)[0];
    let mut bytes = std::fs::read(path).unwrap();
    let record = (bytes.len() - segment::HEADER_LEN) / 3;
    let second = segment::HEADER_LEN + record;
    bytes[second + segment::RECORD_HEADER_LEN + 2] ^= 0x40;
    std::fs::write(path, &bytes).unwrap();
    let error = scan(path).unwrap_err();
    assert!(error.contains("00000000000000000010.wal") && error.contains(&format!("byte {second}")), "{error}");
    assert!(error.contains("checksum"), "{error}");
    bytes[0] = b'X';
    std::fs::write(path, &bytes).unwrap();
    assert!(scan(path).unwrap_err().contains("bad magic"));
}

#[test]
fn concurrent_writers_share_fsyncs() {
    let dir = Dir::new("group");
    let wal = Arc::new(Wal::open(config(&dir.0, WalMode::Fsync, 1 << 30), 1, 1).unwrap());
    let writers: Vec<_> = (0..16u64)
        .map(|w| {
            let wal = wal.clone();
            std::thread::spawn(move || (0..20).map(|i| wal.append(add(w * 100 + i)).unwrap()).collect::<Vec<u64>>())
        })
        .collect();
    let mut indices: Vec<u64> = writers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    indices.sort_unstable();
    assert_eq!(indices, (1..=320).collect::<Vec<u64>>(), "every append got its own index, no gaps");
    let (records, fsyncs) = (wal.stats().records.load(Ordering::Relaxed), wal.stats().fsyncs.load(Ordering::Relaxed));
    assert_eq!(records, 320);
    assert!(fsyncs < records, "group commit: {records} records in {fsyncs} fsyncs");
}

#[test]
fn segments_rotate_by_size_and_are_named_by_their_first_index() {
    let dir = Dir::new("rotate");
    let wal = Wal::open(config(&dir.0, WalMode::Write, 200), 1, 1).unwrap();
    for id in 0..12 {
        wal.append(add(id)).unwrap();
    }
    drop(wal);
    let files = segments(&dir.0);
    assert!(files.len() > 2, "{files:?}");
    let mut next = 1;
    for file in files {
        let read = scan(&file).unwrap();
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(segment::first_index_of(&name), Some(next));
        assert_eq!(read.first_index, next);
        next += read.entries.len() as u64;
    }
    assert_eq!(next, 13);
}

#[test]
fn mode_none_writes_nothing() {
    let dir = Dir::new("none");
    let wal = Wal::open(config(&dir.0.join("log"), WalMode::None, 1 << 20), 1, 1).unwrap();
    assert_eq!(wal.append(add(1)).unwrap(), 1);
    drop(wal);
    assert!(!dir.0.join("log").exists());
}

#[test]
fn a_log_is_read_back_across_segments_and_replayed() {
    use crate::schema::Schema;
    use crate::store::{Engine, EngineConfig};
    use crate::wal::recover::{read_log, replay};
    let dir = Dir::new("replay");
    let wal = Wal::open(config(&dir.0, WalMode::Fsync, 200), 1, 1).unwrap();
    wal.append(Op::CreateGallery { name: "g".into() }).unwrap();
    for id in 0..10 {
        wal.append(add(id)).unwrap();
    }
    wal.append(Op::DeleteFaces { gallery: "g".into(), ids: vec![3, 4] }).unwrap();
    drop(wal);
    let log = read_log(&dir.0, 1).unwrap();
    assert_eq!((log.entries.len(), log.next_index, log.truncated.clone()), (12, 13, None));
    let schema = Schema::from_yaml("- {id: 1, name: cam, field_type: string}\n", "t").unwrap();
    let engine = Engine::new(schema, EngineConfig { facen_size: 3, max_search_limit: 10 });
    replay(&engine, &log.entries).unwrap();
    assert_eq!(engine.gallery_size("g").unwrap(), 8);
    assert_eq!(engine.get_face("g", 7).unwrap().meta, vec![MetaValue::String("cam7".into())]);
    // The writer continues where the log ends.
    let wal = Wal::open(config(&dir.0, WalMode::Fsync, 200), log.next_index, 1).unwrap();
    assert_eq!(wal.append(add(99)).unwrap(), 13);
}

#[test]
fn a_torn_tail_is_cut_off_only_in_the_last_segment() {
    use crate::wal::recover::read_log;
    let dir = Dir::new("recover-torn");
    let wal = Wal::open(config(&dir.0, WalMode::Write, 200), 1, 1).unwrap();
    for id in 0..8 {
        wal.append(add(id)).unwrap();
    }
    drop(wal);
    let files = segments(&dir.0);
    assert!(files.len() >= 2);
    let last = files.last().unwrap();
    let full = std::fs::read(last).unwrap();
    std::fs::write(last, &full[..full.len() - 3]).unwrap();
    let log = read_log(&dir.0, 1).unwrap();
    assert_eq!(log.entries.len(), 7);
    assert!(log.truncated.as_ref().is_some_and(|(path, _)| path == last));
    assert!(std::fs::metadata(last).unwrap().len() < full.len() as u64 - 3, "the torn record is cut off the file");
    assert_eq!(read_log(&dir.0, 1).unwrap().truncated, None, "a second start finds a clean log");
    // The same cut in an earlier segment is corruption.
    let first = &files[0];
    let bytes = std::fs::read(first).unwrap();
    std::fs::write(first, &bytes[..bytes.len() - 3]).unwrap();
    let error = read_log(&dir.0, 1).unwrap_err();
    assert!(error.contains("not the last") || error.contains("starts at index"), "{error}");
}
