//! The log on its own: what is appended is read back; a torn tail is told from corruption;
//! segments rotate. (Group commit is the commit loop's: `durable/tests.rs`.)

use std::path::{Path, PathBuf};

use crate::engine::op::{self, Op};
use crate::schema::MetaValue;
use crate::store::Face;
use crate::wal::segment::{self, scan};
use crate::wal::writer::{Wal, WalConfig};
use crate::wal::{Entry, WalMode};

use crate::test_dir::TestDir as Dir;

fn config(dir: &Path, mode: WalMode, segment_bytes: u64) -> WalConfig {
    WalConfig { dir: dir.to_path_buf(), mode, segment_bytes }
}

fn add(id: u64) -> Op {
    let face = Face { id, vector: vec![id as f32, -0.5, 1e-30], meta: vec![MetaValue::String(format!("cam{id}"))] };
    Op::AddFaces { gallery: "g".into(), faces: vec![face] }
}

/// Logs one op; returns its index.
fn append(wal: &mut Wal, op: Op) -> u64 {
    wal.append(&[&op::encode(&op).unwrap()]).unwrap()
}

fn op_of(entry: &Entry) -> Op {
    op::decode(&entry.payload).unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn appended_entries_are_read_back_in_order() {
    let dir = Dir::new("wal-roundtrip");
    let mut wal = Wal::open(config(&dir.0, WalMode::Fsync, 1 << 20), 1, 1).unwrap();
    assert_eq!(append(&mut wal, Op::CreateGallery { name: "g".into() }), 1);
    for id in 0..5 {
        assert_eq!(append(&mut wal, add(id)), id + 2);
    }
    assert_eq!(append(&mut wal, Op::DeleteFaces { gallery: "g".into(), ids: vec![u64::MAX, 3] }), 7);
    drop(wal);
    let files = segments(&dir.0);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].file_name().unwrap().to_str().unwrap(), "00000000000000000001.wal");
    let read = scan(&files[0]).unwrap();
    assert_eq!((read.first_index, read.torn_at, read.entries.len()), (1, None, 7));
    assert_eq!(op_of(&read.entries[3]), add(2));
    assert!(read.entries.iter().all(|e| e.term == 1));
}

#[test]
fn a_record_cut_short_is_a_torn_tail() {
    let dir = Dir::new("wal-torn");
    let mut wal = Wal::open(config(&dir.0, WalMode::Write, 1 << 20), 1, 1).unwrap();
    for id in 0..3 {
        append(&mut wal, add(id));
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
    let dir = Dir::new("wal-corrupt");
    let mut wal = Wal::open(config(&dir.0, WalMode::Write, 1 << 20), 10, 2).unwrap();
    for id in 0..3 {
        append(&mut wal, add(id));
    }
    drop(wal);
    let path = &segments(&dir.0)[0];
    let mut bytes = std::fs::read(path).unwrap();
    let record = (bytes.len() - segment::HEADER_LEN) / 3;
    let second = segment::HEADER_LEN + record;
    bytes[second + segment::RECORD_HEADER_LEN + 2] ^= 0x40;
    std::fs::write(path, &bytes).unwrap();
    let error = scan(path).unwrap_err().to_string();
    assert!(error.contains("00000000000000000010.wal") && error.contains(&format!("byte {second}")), "{error}");
    assert!(error.contains("checksum"), "{error}");
    bytes[0] = b'X';
    std::fs::write(path, &bytes).unwrap();
    assert!(scan(path).unwrap_err().to_string().contains("bad magic"));
}

#[test]
fn segments_rotate_by_size_and_are_named_by_their_first_index() {
    let dir = Dir::new("wal-rotate");
    let mut wal = Wal::open(config(&dir.0, WalMode::Write, 200), 1, 1).unwrap();
    for id in 0..12 {
        append(&mut wal, add(id));
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
    let dir = Dir::new("wal-none");
    let mut wal = Wal::open(config(&dir.0.join("log"), WalMode::None, 1 << 20), 1, 1).unwrap();
    assert_eq!(append(&mut wal, add(1)), 1);
    drop(wal);
    assert!(!dir.0.join("log").exists());
}

#[test]
fn a_log_is_read_back_across_segments_and_replayed() {
    use crate::engine::{Engine, EngineConfig};
    use crate::schema::Schema;
    use crate::wal::recover::{read_log, ReadOptions};
    let dir = Dir::new("wal-replay");
    let mut wal = Wal::open(config(&dir.0, WalMode::Fsync, 200), 1, 1).unwrap();
    append(&mut wal, Op::CreateGallery { name: "g".into() });
    for id in 0..10 {
        append(&mut wal, add(id));
    }
    append(&mut wal, Op::DeleteFaces { gallery: "g".into(), ids: vec![3, 4] });
    drop(wal);
    let log = read_log(&dir.0, &ReadOptions::default()).unwrap();
    assert_eq!((log.entries.len(), log.next_index, log.truncated.clone()), (12, 13, None));
    let schema = Schema::from_yaml("- {id: 1, name: cam, field_type: string}\n", "t").unwrap();
    let engine = Engine::new(schema, EngineConfig { facen_size: 3, max_search_limit: 10, ..EngineConfig::default() });
    for entry in &log.entries {
        engine.apply(entry.index, op_of(entry)).unwrap();
    }
    assert_eq!(engine.gallery_size("g").unwrap(), 8);
    assert_eq!(engine.get_face("g", 7).unwrap().meta, vec![MetaValue::String("cam7".into())]);
    // The writer continues where the log ends.
    let mut wal = Wal::open(config(&dir.0, WalMode::Fsync, 200), log.next_index, 1).unwrap();
    assert_eq!(append(&mut wal, add(99)), 13);
}

#[test]
fn a_torn_tail_is_cut_off_only_in_the_last_segment() {
    use crate::wal::recover::{read_log, ReadOptions};
    let dir = Dir::new("wal-recover-torn");
    let mut wal = Wal::open(config(&dir.0, WalMode::Write, 200), 1, 1).unwrap();
    for id in 0..8 {
        append(&mut wal, add(id));
    }
    drop(wal);
    drop_empty_last_segment(&dir.0);
    let files = segments(&dir.0);
    assert!(files.len() >= 2);
    let last = files.last().unwrap();
    let full = std::fs::read(last).unwrap();
    std::fs::write(last, &full[..full.len() - 3]).unwrap();
    let log = read_log(&dir.0, &ReadOptions::default()).unwrap();
    assert_eq!(log.entries.len(), 7);
    assert!(log.truncated.as_ref().is_some_and(|(path, _)| path == last));
    assert!(std::fs::metadata(last).unwrap().len() < full.len() as u64 - 3, "the torn record is cut off the file");
    assert_eq!(read_log(&dir.0, &ReadOptions::default()).unwrap().truncated, None, "a second start finds a clean log");
    // The same cut in an earlier segment is corruption.
    let first = &files[0];
    let bytes = std::fs::read(first).unwrap();
    std::fs::write(first, &bytes[..bytes.len() - 3]).unwrap();
    let error = read_log(&dir.0, &ReadOptions::default()).unwrap_err().to_string();
    assert!(error.contains("not the last") || error.contains("starts at index"), "{error}");
}

// Recovery: reading after a snapshot, `--force-recovery`, a segment created but never written,
// pruning.

/// The last append may have rotated into a new segment that holds only its header: removes it,
/// so that the last segment holds records.
fn drop_empty_last_segment(dir: &Path) {
    if let Some(last) = segments(dir).last() {
        if std::fs::metadata(last).unwrap().len() == segment::HEADER_LEN as u64 {
            std::fs::remove_file(last).unwrap();
        }
    }
}

/// Appends faces `0..count` (indices `1..=count`) into segments of about `segment_bytes`, and
/// returns the segment files; the last one holds records.
fn write_log(dir: &Path, count: u64, segment_bytes: u64) -> Vec<PathBuf> {
    let mut wal = Wal::open(config(dir, WalMode::Write, segment_bytes), 1, 1).unwrap();
    for id in 0..count {
        assert_eq!(append(&mut wal, add(id)), id + 1);
    }
    drop(wal);
    drop_empty_last_segment(dir);
    segments(dir)
}

/// Where each record of a segment starts, and the file's length (from the length fields, which
/// are the segment format; the payload is `codec.rs`'s business).
fn record_offsets(path: &Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap();
    let mut offsets = vec![segment::HEADER_LEN];
    while let Some(&at) = offsets.last().filter(|&&at| at < bytes.len()) {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        offsets.push(at + segment::RECORD_HEADER_LEN + len);
    }
    offsets
}

fn first_index(path: &Path) -> u64 {
    segment::first_index_of(path.file_name().unwrap().to_str().unwrap()).unwrap()
}

fn indices(log: &crate::wal::recover::Log) -> Vec<u64> {
    log.entries.iter().map(|entry| entry.index).collect()
}

fn forced(after: u64) -> crate::wal::recover::ReadOptions {
    crate::wal::recover::ReadOptions { after, force: true }
}

fn strict(after: u64) -> crate::wal::recover::ReadOptions {
    crate::wal::recover::ReadOptions { after, force: false }
}

#[test]
fn a_forced_read_skips_a_bad_record_and_returns_the_others() {
    use crate::wal::recover::read_log;
    let dir = Dir::new("wal-force-record");
    let files = write_log(&dir.0, 5, 1 << 20);
    assert_eq!(files.len(), 1);
    let path = &files[0];
    let clean = std::fs::read(path).unwrap();
    let offsets = record_offsets(path);
    assert_eq!(offsets.len(), 6, "five records and the end: {offsets:?}");
    let (third, fourth) = (offsets[2], offsets[3]);
    let damages: [(&str, usize, u8); 5] = [
        ("a payload byte", third + segment::RECORD_HEADER_LEN + 5, 0x40),
        ("the checksum", third + 4, 0x01),
        ("the length's high byte: absurd length", third + 3, 0x80),
        ("the length's low byte: a length that fits", third, 0x01),
        ("the length's third byte: past the end of the file", third + 2, 0x10),
    ];
    for (what, at, flip) in damages {
        let mut bytes = clean.clone();
        bytes[at] ^= flip;
        std::fs::write(path, &bytes).unwrap();
        // Without --force-recovery: an error naming the file and the offset of the bad record.
        let error = read_log(&dir.0, &strict(0)).unwrap_err().to_string();
        assert!(
            error.contains("00000000000000000001.wal") && error.contains(&format!("byte {third}:")),
            "{what}: {error}"
        );
        if what.contains("past the end") {
            // Not taken for a torn write: a whole record follows.
            assert!(error.contains(&format!("a whole record follows at byte {fourth}")), "{error}");
        }
        // With it: the other four entries, and the bad record's bytes, skipped.
        let log = read_log(&dir.0, &forced(0)).unwrap();
        assert_eq!(indices(&log), [1, 2, 4, 5], "{what}");
        assert_eq!(log.skipped.len(), 1, "{what}: {:?}", log.skipped);
        let skipped = &log.skipped[0];
        assert_eq!(
            (&skipped.file, skipped.offset, skipped.bytes),
            (path, third as u64, (fourth - third) as u64),
            "{what}"
        );
        assert_eq!((log.next_index, log.truncated.clone()), (6, None), "{what}");
        assert_eq!(std::fs::read(path).unwrap(), bytes, "{what}: a forced read changes nothing in the file");
    }
}

#[test]
fn a_forced_read_cuts_bad_bytes_off_the_end_of_the_last_segment() {
    use crate::wal::recover::read_log;
    let dir = Dir::new("wal-force-tail");
    let files = write_log(&dir.0, 4, 1 << 20);
    let path = &files[0];
    let offsets = record_offsets(path);
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offsets[3] + segment::RECORD_HEADER_LEN + 1] ^= 0x40;
    std::fs::write(path, &bytes).unwrap();
    // A whole last record with a bad checksum is not a torn write: an error without the flag.
    let error = read_log(&dir.0, &strict(0)).unwrap_err().to_string();
    assert!(error.contains(&format!("byte {}: record checksum mismatch", offsets[3])), "{error}");
    let log = read_log(&dir.0, &forced(0)).unwrap();
    assert_eq!(indices(&log), [1, 2, 3]);
    assert_eq!((log.skipped[0].offset, log.skipped[0].bytes), (offsets[3] as u64, (offsets[4] - offsets[3]) as u64));
    // Nothing after it can be read, and the writer starts a new segment after this one, where
    // the bad bytes would stop every later start: they are cut off.
    assert_eq!(log.truncated, Some((path.clone(), offsets[3] as u64)));
    assert_eq!(std::fs::metadata(path).unwrap().len(), offsets[3] as u64);
    let log = read_log(&dir.0, &strict(0)).unwrap();
    assert_eq!((indices(&log), log.next_index), (vec![1, 2, 3], 4));
}

#[test]
fn a_forced_read_skips_a_middle_segment_whose_header_is_bad() {
    use crate::wal::recover::read_log;
    let dir = Dir::new("wal-force-header");
    let files = write_log(&dir.0, 12, 200);
    assert!(files.len() >= 3, "{files:?}");
    let middle = &files[1];
    let mut bytes = std::fs::read(middle).unwrap();
    bytes[0] = b'X';
    std::fs::write(middle, &bytes).unwrap();
    let error = read_log(&dir.0, &strict(0)).unwrap_err().to_string();
    assert!(error.starts_with(&format!("{}: byte 0: ", middle.display())) && error.contains("bad magic"), "{error}");
    let log = read_log(&dir.0, &forced(0)).unwrap();
    let lost = first_index(&files[1])..first_index(&files[2]);
    assert_eq!(indices(&log), (1..=12).filter(|index| !lost.contains(index)).collect::<Vec<u64>>());
    assert_eq!(log.skipped.len(), 1, "{:?}", log.skipped);
    let skipped = &log.skipped[0];
    assert_eq!((&skipped.file, skipped.offset, skipped.bytes), (middle, 0, bytes.len() as u64));
    assert!(skipped.reason.contains("bad magic"), "{}", skipped.reason);
    assert_eq!(log.next_index, 13);
}

#[test]
fn a_last_segment_without_a_whole_header_is_removed() {
    use crate::wal::recover::read_log;
    let dir = Dir::new("wal-short-header");
    let files = write_log(&dir.0, 6, 200);
    // A crash right after the next segment was created, before its header was all written.
    for written in [0, 10, segment::HEADER_LEN - 1] {
        let short = dir.0.join(segment::file_name(7));
        std::fs::write(&short, &segment::header(7)[..written]).unwrap();
        let log = read_log(&dir.0, &strict(0)).unwrap();
        assert_eq!((indices(&log), log.next_index), ((1..=6).collect(), 7), "{written} bytes");
        assert_eq!(log.truncated, Some((short.clone(), 0)));
        assert!(!short.exists(), "{written} bytes: the segment is removed");
    }
    // The writer creates it again.
    let mut wal = Wal::open(config(&dir.0, WalMode::Write, 200), 7, 1).unwrap();
    assert_eq!(append(&mut wal, add(6)), 7);
    drop(wal);
    assert_eq!(indices(&read_log(&dir.0, &strict(0)).unwrap()), (1..=7).collect::<Vec<u64>>());
    // A segment with a cut header that is not the last is corruption.
    std::fs::write(&files[0], &segment::header(1)[..10]).unwrap();
    let error = read_log(&dir.0, &strict(0)).unwrap_err().to_string();
    assert!(error.starts_with(&format!("{}: byte 0: segment header cut short", files[0].display())), "{error}");
    let log = read_log(&dir.0, &forced(0)).unwrap();
    assert_eq!(indices(&log), (first_index(&files[1])..=7).collect::<Vec<u64>>());
    assert_eq!((log.skipped[0].offset, log.skipped[0].bytes), (0, 10));
}

#[test]
fn reading_after_a_snapshot_returns_the_later_entries_and_skips_older_segments() {
    use crate::wal::recover::read_log;
    let dir = Dir::new("wal-after");
    let files = write_log(&dir.0, 12, 200);
    assert!(files.len() >= 3, "{files:?}");
    let second = first_index(&files[1]);
    // The middle of the first segment, the end of the first segment, the middle of the second,
    // the last entry, and a snapshot newer than the log (its end was lost in `write` mode).
    for after in [0, 2, second - 1, second, 12, 20] {
        let log = read_log(&dir.0, &strict(after)).unwrap();
        assert_eq!(indices(&log), (after + 1..=12).collect::<Vec<u64>>(), "after {after}");
        assert_eq!(log.next_index, 13.max(after + 1), "after {after}");
    }
    // A segment that ends before the snapshot is not read: damage in it does not matter.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[0] = b'X';
    std::fs::write(&files[0], &bytes).unwrap();
    assert_eq!(indices(&read_log(&dir.0, &strict(second - 1)).unwrap()), (second..=12).collect::<Vec<u64>>());
    assert!(read_log(&dir.0, &strict(second - 2)).unwrap_err().to_string().contains("bad magic"));
    // The log must reach back to the snapshot.
    std::fs::remove_file(&files[0]).unwrap();
    let error = read_log(&dir.0, &strict(second - 2)).unwrap_err().to_string();
    assert!(
        error.contains(&format!("starts at index {second}, but recovery needs the log from index {}", second - 1)),
        "{error}"
    );
    let log = read_log(&dir.0, &forced(0)).unwrap();
    assert_eq!(indices(&log), (second..=12).collect::<Vec<u64>>());
    assert_eq!((log.skipped.len(), log.skipped[0].offset, log.skipped[0].bytes), (1, 0, 0));
    assert!(
        log.skipped[0].reason.starts_with(&format!("entries 1 to {} are missing", second - 1)),
        "{:?}",
        log.skipped
    );
}

#[test]
fn prune_deletes_the_segments_before_the_oldest_kept_snapshot_and_nothing_more() {
    use crate::wal::recover::{prune, read_log};
    let dir = Dir::new("wal-prune");
    assert_eq!(prune(&dir.0.join("missing"), 100).unwrap(), Vec::<PathBuf>::new());
    let files = write_log(&dir.0, 12, 200);
    assert!(files.len() >= 3, "{files:?}");
    let (second, third) = (first_index(&files[1]), first_index(&files[2]));
    // keep_from = the oldest kept snapshot's index + 1.
    assert_eq!(
        prune(&dir.0, second - 1).unwrap(),
        Vec::<PathBuf>::new(),
        "the first segment holds entry {}",
        second - 1
    );
    assert_eq!(prune(&dir.0, second).unwrap(), vec![files[0].clone()]);
    assert_eq!(indices(&read_log(&dir.0, &strict(second - 1)).unwrap()), (second..=12).collect::<Vec<u64>>());
    assert_eq!(prune(&dir.0, third + 1).unwrap(), vec![files[1].clone()]);
    assert_eq!(indices(&read_log(&dir.0, &strict(third)).unwrap()), (third + 1..=12).collect::<Vec<u64>>());
    // Never the last segment, even when a snapshot covers all of it.
    prune(&dir.0, 1000).unwrap();
    assert_eq!(segments(&dir.0), [files.last().unwrap().clone()]);
    let log = read_log(&dir.0, &strict(12)).unwrap();
    assert_eq!((log.entries.len(), log.next_index), (0, 13));
}

/// A 64 MB segment of incompressible records with a damaged length field in the middle: the
/// forced read must resynchronise in linear time. Run with
/// `cargo test --release --lib wal::tests::resync_is_fast -- --ignored --nocapture`.
#[test]
#[ignore = "a timing check: 64 MB, meant for a release build"]
fn resync_is_fast_in_a_large_segment() {
    use crate::wal::recover::read_log;
    let dir = Dir::new("wal-resync-speed");
    let mut wal = Wal::open(config(&dir.0, WalMode::Write, 1 << 30), 1, 1).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // 64 records of 1 MB: random bits, so that many offsets have a length field that fits.
    for id in 0..64 {
        let faces = (0..512)
            .map(|n| Face {
                id: id * 1000 + n,
                vector: (0..512).map(|_| f32::from_bits(random() as u32)).collect(),
                meta: vec![],
            })
            .collect();
        append(&mut wal, Op::AddFaces { gallery: "g".into(), faces });
    }
    drop(wal);
    let path = &segments(&dir.0)[0];
    let offsets = record_offsets(path);
    let started = std::time::Instant::now();
    assert_eq!(read_log(&dir.0, &forced(0)).unwrap().entries.len(), 64);
    let clean = started.elapsed().as_secs_f64();
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offsets[32] + 2] ^= 0x01;
    std::fs::write(path, &bytes).unwrap();
    let started = std::time::Instant::now();
    let log = read_log(&dir.0, &forced(0)).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!("{} MB read in {clean:.3} s; with one resync in {seconds:.3} s", bytes.len() >> 20);
    assert_eq!((log.entries.len(), log.skipped.len()), (63, 1));
    assert_eq!(log.skipped[0].offset, offsets[32] as u64);
}
