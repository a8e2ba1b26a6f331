//! The log on its own: what is appended is read back; a torn tail is told from corruption;
//! segments rotate. (Group commit is the node loop's: `durable/tests.rs`.)

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

// Format 2: terms and kinds, an empty entry folded into the next record, cutting a suffix off,
// and format-1 segments read as they were.

fn entry(term: u64, kind: u8, payload: &[u8]) -> crate::wal::writer::Appended<'_> {
    crate::wal::writer::Appended { term, kind, payload }
}

fn read_all(dir: &Path) -> Vec<Entry> {
    read_after(dir, 0)
}

fn read_after(dir: &Path, after: u64) -> Vec<Entry> {
    crate::wal::recover::read_log(dir, &strict(after)).unwrap().entries
}

#[test]
fn entries_keep_their_term_and_kind() {
    use crate::wal::kind;
    let dir = Dir::new("wal-kinds");
    let mut wal = Wal::open(config(&dir.0, WalMode::Fsync, 1 << 20), 1, 1).unwrap();
    wal.write(
        1,
        &[entry(3, kind::NORMAL, b"a"), entry(3, kind::CONF_CHANGE_V2, b"cc"), entry(4, kind::NORMAL, b"")],
        true,
    )
    .unwrap();
    let error = wal.write(2, &[entry(4, kind::NORMAL, b"x")], true).unwrap_err().to_string();
    assert!(error.contains("from index 2, but the log's next index is 4"), "{error}");
    drop(wal);
    let read: Vec<(u64, u64, u8, Vec<u8>)> =
        read_all(&dir.0).into_iter().map(|e| (e.index, e.term, e.kind, e.payload)).collect();
    assert_eq!(
        read,
        [
            (1, 3, kind::NORMAL, b"a".to_vec()),
            (2, 3, kind::CONF_CHANGE_V2, b"cc".to_vec()),
            (3, 4, kind::NORMAL, vec![])
        ]
    );
}

#[test]
fn a_deferred_empty_entry_rides_on_the_next_record() {
    use crate::wal::kind;
    let dir = Dir::new("wal-deferred");
    let mut wal = Wal::open(config(&dir.0, WalMode::Fsync, 1 << 20), 5, 1).unwrap();
    wal.defer_empty(2).unwrap();
    assert_eq!(wal.last_index(), 5);
    wal.write(6, &[entry(2, kind::NORMAL, b"first write")], true).unwrap();
    wal.write(7, &[entry(2, kind::NORMAL, b"second")], true).unwrap();
    // An empty entry of another term than the next write gets a record of its own, and so does
    // the first of two in a row.
    wal.defer_empty(3).unwrap();
    wal.defer_empty(4).unwrap();
    wal.defer_empty(5).unwrap();
    wal.write(11, &[entry(6, kind::NORMAL, b"third")], true).unwrap();
    drop(wal);
    let path = &segments(&dir.0)[0];
    assert_eq!(record_offsets(path).len() - 1, 6, "records: 6 and 7, 8, 9, 10 and 11");
    let read: Vec<(u64, u64, Vec<u8>)> =
        read_after(&dir.0, 4).into_iter().map(|e| (e.index, e.term, e.payload)).collect();
    let expected: Vec<(u64, u64, Vec<u8>)> = vec![
        (5, 2, vec![]),
        (6, 2, b"first write".to_vec()),
        (7, 2, b"second".to_vec()),
        (8, 3, vec![]),
        (9, 4, vec![]),
        (10, 5, vec![]),
        (11, 6, b"third".to_vec()),
    ];
    assert_eq!(read[0].0, 5);
    assert_eq!(read, expected);
    // Deferred and never followed by a write: not on disk, and the log ends before it.
    let dir = Dir::new("wal-deferred-lost");
    let mut wal = Wal::open(config(&dir.0, WalMode::Fsync, 1 << 20), 1, 1).unwrap();
    append(&mut wal, add(1));
    wal.defer_empty(2).unwrap();
    // A rotation (a checkpoint) meanwhile: the new segment is named by the empty entry.
    wal.rotate().unwrap();
    drop(wal);
    assert_eq!(read_all(&dir.0).len(), 1);
    assert_eq!(segments(&dir.0).last().map(|p| first_index(p)), Some(2));
    // A snapshot at 2 took the empty entry: the log goes on at 3, without the empty segment 2.
    let copy = Dir::new("wal-deferred-snapshot");
    for file in segments(&dir.0) {
        std::fs::copy(&file, copy.0.join(file.file_name().unwrap())).unwrap();
    }
    let mut wal = Wal::open(config(&copy.0, WalMode::Fsync, 1 << 20), 3, 1).unwrap();
    append(&mut wal, add(3));
    drop(wal);
    assert_eq!(segments(&copy.0).iter().map(|p| first_index(p)).collect::<Vec<_>>(), [1, 3]);
    let after_snapshot = crate::wal::recover::read_log(&copy.0, &strict(2)).unwrap();
    assert_eq!(indices(&after_snapshot), [3]);
    let mut wal = Wal::open(config(&dir.0, WalMode::Fsync, 1 << 20), 2, 1).unwrap();
    wal.defer_empty(3).unwrap();
    wal.rotate().unwrap();
    wal.write(3, &[entry(3, kind::NORMAL, b"after")], true).unwrap();
    drop(wal);
    let indices: Vec<(u64, u64)> = read_all(&dir.0).iter().map(|e| (e.index, e.term)).collect();
    assert_eq!(indices, [(1, 1), (2, 3), (3, 3)]);
}

#[test]
fn truncate_from_cuts_a_suffix_across_segments_and_the_log_goes_on_from_there() {
    use crate::wal::kind;
    let dir = Dir::new("wal-truncate");
    let mut wal = Wal::open(config(&dir.0, WalMode::Fsync, 200), 1, 1).unwrap();
    for id in 0..12 {
        append(&mut wal, add(id));
    }
    let files = segments(&dir.0);
    assert!(files.len() >= 3, "{files:?}");
    let second = first_index(&files[1]);
    // Inside the first segment: every later segment goes.
    let cut = second - 1;
    wal.truncate_from(cut).unwrap();
    assert_eq!(wal.last_index(), cut - 1);
    wal.write(cut, &[entry(2, kind::NORMAL, b"new"), entry(2, kind::NORMAL, b"newer")], true).unwrap();
    let read = read_all(&dir.0);
    assert_eq!(read.iter().map(|e| e.index).collect::<Vec<_>>(), (1..=cut + 1).collect::<Vec<_>>());
    assert_eq!((read[cut as usize - 1].term, read[cut as usize].payload.as_slice()), (2, &b"newer"[..]));
    assert_eq!(segments(&dir.0).len(), 2, "the first segment, cut, and the one the new entries started");
    // At a segment's first entry: the segment goes whole. Past the end: nothing changes.
    wal.truncate_from(cut).unwrap();
    wal.truncate_from(cut + 10).unwrap();
    assert_eq!(read_all(&dir.0).len() as u64, cut - 1);
    assert_eq!(segments(&dir.0).len(), 2, "the first segment and an empty one at {cut}");
    // A deferred empty entry is cut without touching the files.
    wal.defer_empty(5).unwrap();
    wal.truncate_from(cut).unwrap();
    wal.write(cut, &[entry(6, kind::NORMAL, b"last")], true).unwrap();
    drop(wal);
    let read = read_all(&dir.0);
    assert_eq!((read.len() as u64, read.last().map(|e| e.term)), (cut, Some(6)));
}

#[test]
fn format_1_segments_are_read_and_the_log_continues_in_format_2() {
    use crate::wal::segment::push_record;
    let dir = Dir::new("wal-v1");
    std::fs::create_dir_all(&dir.0).unwrap();
    // A segment as the previous build wrote it: version 1, payloads without a kind byte.
    let mut bytes = segment::header(1).to_vec();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    for index in 1..=3u64 {
        let op = op::encode(&add(index)).unwrap();
        push_record(&mut bytes, &[&index.to_le_bytes(), &1u64.to_le_bytes(), &op]);
    }
    std::fs::write(dir.0.join(segment::file_name(1)), &bytes).unwrap();
    let read = scan(&dir.0.join(segment::file_name(1))).unwrap();
    assert_eq!((read.version, read.entries.len()), (1, 3));
    let mut wal = Wal::open(config(&dir.0, WalMode::Fsync, 1 << 20), 4, 1).unwrap();
    append(&mut wal, add(4));
    drop(wal);
    let read = read_all(&dir.0);
    assert_eq!(read.iter().map(op_of).collect::<Vec<_>>(), (1..=4).map(add).collect::<Vec<_>>());
    assert!(read.iter().all(|e| e.kind == crate::wal::kind::NORMAL && e.term == 1));
    assert_eq!(scan(&dir.0.join(segment::file_name(4))).unwrap().version, 2);
}
