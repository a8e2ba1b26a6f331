//! The file format of the log.
//!
//! A log is a directory of segments, each named by the index of its first entry
//! (`00000000000000000001.wal`), so that sorting the names sorts the log. A segment is:
//!
//! ```text
//! header (24 bytes): magic "FACEDBWL" | format version u32 LE | reserved u32 (0) | first index u64 LE
//! records:           length u32 LE | crc32 u32 LE (of the payload) | payload (length bytes)
//! ```
//!
//! The payload is one [`Entry`]: its index, term and kind, then its bytes (see `codec.rs`);
//! entries follow each other with consecutive indices. A record whose kind carries
//! `codec::EMPTY_BEFORE` stands for two entries: an empty one at its index - 1, then itself.
//! This build writes format 2 and reads 1 and 2 (format 1 has no kind byte). [`scan`] reads a
//! segment back and classifies its end:
//!
//! - a record cut short at the end of the file is a **torn tail** (the process died while
//!   writing it): [`Scan::torn_at`] gives the offset to truncate the file to. A file shorter
//!   than the header is torn at 0: it was created, but its header never fully written;
//! - anything else wrong (bad magic or version, a header whose first index is not the file
//!   name's, a CRC mismatch, a payload shorter than index and term, a gap in the indices, a length beyond
//!   [`MAX_RECORD`]) is **corruption**, reported with the file and the byte offset.
//!
//! Only the last segment of a log may have a torn tail; recovery enforces that. A length field
//! damaged so that it points past the end of the file looks like a torn write; it is told
//! apart when a whole record follows it (a torn write leaves nothing whole after it), so only
//! damage to the length of the last record passes for a torn tail.
//!
//! [`scan_forced`] (for `--force-recovery`) skips what [`scan`] stops at, and says what it
//! skipped. After a bad record it searches forward byte by byte for the next offset where a
//! whole record starts. Only an offset whose length field fits in the file costs a CRC, and
//! that CRC is computed from a table of prefix CRCs in time independent of the record's length
//! (see `Records::crc`), so a search through a large segment stays linear: a flipped byte in
//! a 64 MB segment costs milliseconds, not a CRC of the rest of the file at every offset.

use std::path::{Path, PathBuf};

use crate::wal::{codec, kind, Entry, Error, Result};

pub const MAGIC: [u8; 8] = *b"FACEDBWL";
/// The format this build writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format this build reads.
pub const OLDEST_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 24;
pub const RECORD_HEADER_LEN: usize = 8;
/// The largest record a reader accepts; a longer length field is corruption.
pub const MAX_RECORD: usize = 1 << 30;

/// The file name of the segment whose first entry has `first_index`.
pub fn file_name(first_index: u64) -> String {
    format!("{first_index:020}.wal")
}

/// The first index of a segment, from its file name.
pub fn first_index_of(name: &str) -> Option<u64> {
    name.strip_suffix(".wal").filter(|n| n.len() == 20).and_then(|n| n.parse().ok())
}

pub fn header(first_index: u64) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&first_index.to_le_bytes());
    header
}

/// Appends the record whose payload is the concatenation of `parts` to `out` (the log writer
/// passes an entry's index and term, then its op encoded by the request thread).
pub fn push_record(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let mut crc = crc32fast::Hasher::new();
    parts.iter().for_each(|part| crc.update(part));
    let len: usize = parts.iter().map(|part| part.len()).sum();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    parts.iter().for_each(|part| out.extend_from_slice(part));
}

/// What a segment holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// The index of the segment's first entry: from the header, or from the file name when
    /// the header is cut short or (forced scan) bad.
    pub first_index: u64,
    pub entries: Vec<Entry>,
    /// Where each entry's record begins, in the file (an empty entry a record stands for too
    /// has that record's offset).
    pub offsets: Vec<u64>,
    /// The segment's format version (0 when its header could not be read).
    pub version: u32,
    /// Where the torn last record begins, if the file ends inside one. `Some(0)`: the file
    /// ends inside the header (created, but the header never fully written), so it holds
    /// nothing.
    pub torn_at: Option<u64>,
    /// What a forced scan passed over, in file order (always empty for [`scan`]).
    pub skipped: Vec<Skipped>,
    /// The file's length in bytes.
    pub len: u64,
}

/// Bytes a forced read passed over, or entries it found missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub file: PathBuf,
    /// Where the skipped bytes begin. 0 is the header: the whole segment was skipped.
    pub offset: u64,
    /// How many bytes were passed over. 0: no byte is bad, but entries are missing before
    /// `offset` (the indices jump); `reason` says which.
    pub bytes: u64,
    pub reason: String,
}

/// Reads a whole segment. Errors name the file and the byte offset.
pub fn scan(path: &Path) -> Result<Scan> {
    read(path, None)
}

/// Reads a whole segment for `--force-recovery`: every entry that can be read, with index `from`
/// or above, and what was skipped. Bad records are passed over (see [`Scan::skipped`]); a
/// bad header skips the whole file (one [`Skipped`] at offset 0 and no entries). Fails only
/// when the file cannot be read.
///
/// After a bad record, the scan resynchronises: it searches forward byte by byte for the next
/// offset where a whole record starts (a length that fits in the file, a matching CRC, an
/// index not below the one expected) and continues from there. A record whose
/// index jumps ahead without bad bytes before it is kept, and the gap recorded with `bytes: 0`.
/// A record cut short at the end of the file is a torn tail (as in [`scan`]) only if no whole
/// record follows its start; otherwise it is a bad record too.
pub fn scan_forced(path: &Path, from: u64) -> Result<Scan> {
    read(path, Some(from))
}

fn read(path: &Path, forced_from: Option<u64>) -> Result<Scan> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("{}: cannot read", path.display()), e))?;
    let named = path.file_name().and_then(|name| name.to_str()).and_then(first_index_of);
    let located =
        |offset: usize, problem: String| Error::Corrupt { file: path.to_owned(), offset: offset as u64, problem };
    let mut scan = Scan {
        first_index: named.unwrap_or(0),
        entries: Vec::new(),
        offsets: Vec::new(),
        version: 0,
        torn_at: None,
        skipped: Vec::new(),
        len: bytes.len() as u64,
    };
    if bytes.len() < HEADER_LEN && named.is_some() {
        // Created, but the header never fully written: a torn segment with nothing in it.
        scan.torn_at = Some(0);
        return Ok(scan);
    }
    match (check_header(&bytes, named), forced_from) {
        (Ok((first_index, version)), _) => (scan.first_index, scan.version) = (first_index, version),
        (Err((offset, problem)), None) => return Err(located(offset, problem)),
        (Err((_, problem)), Some(_)) => {
            let reason = format!("bad segment header ({problem}); the whole segment is skipped");
            scan.skipped.push(Skipped { file: path.to_path_buf(), offset: 0, bytes: scan.len, reason });
            return Ok(scan);
        }
    }
    let mut records = Records { bytes: &bytes, version: scan.version, prefix_crcs: Vec::new() };
    let forced = forced_from.is_some();
    let mut next = forced_from.map_or(scan.first_index, |from| from.max(scan.first_index));
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let (problem, torn) = match records.at(at) {
            Record::Whole { decoded, end } if first_of(&decoded) == next || (forced && first_of(&decoded) > next) => {
                let first = first_of(&decoded);
                if first != next {
                    let reason = format!("entries {next} to {} are missing: the index jumps", first - 1);
                    scan.skipped.push(Skipped { file: path.to_path_buf(), offset: at as u64, bytes: 0, reason });
                }
                next = decoded.entry.index.saturating_add(1);
                push(&mut scan, decoded, at);
                at = end;
                continue;
            }
            Record::Whole { decoded, .. } => {
                (format!("entry index {} where {next} was expected", first_of(&decoded)), false)
            }
            Record::Bad(problem) => (problem, false),
            Record::Torn(problem) => (problem, true),
        };
        // A forced scan looks for a whole record after the bad one. A record cut short is a
        // torn tail only if none follows: a torn write leaves nothing whole after it, but a
        // damaged length field that points past the end of the file may.
        match if forced || torn { records.resync(at + 1, next) } else { None } {
            Some(found) if forced => {
                skip(&mut scan, path, at, found.at, problem);
                next = found.decoded.entry.index.saturating_add(1);
                push(&mut scan, found.decoded, found.at);
                at = found.end;
            }
            Some(found) => {
                let problem =
                    format!("{problem}, but a whole record follows at byte {}: damage, not a torn write", found.at);
                return Err(located(at, problem));
            }
            None if torn => {
                scan.torn_at = Some(at as u64);
                break;
            }
            None if forced => {
                skip(&mut scan, path, at, bytes.len(), problem);
                break;
            }
            None => return Err(located(at, problem)),
        }
    }
    Ok(scan)
}

/// The index of the first entry a record stands for.
fn first_of(decoded: &codec::Decoded) -> u64 {
    decoded.entry.index - u64::from(decoded.empty_before)
}

/// Adds the entries of the record at `at` to the scan.
fn push(scan: &mut Scan, decoded: codec::Decoded, at: usize) {
    if decoded.empty_before {
        let entry = &decoded.entry;
        scan.entries.push(Entry { index: entry.index - 1, term: entry.term, kind: kind::NORMAL, payload: Vec::new() });
        scan.offsets.push(at as u64);
    }
    scan.entries.push(decoded.entry);
    scan.offsets.push(at as u64);
}

fn skip(scan: &mut Scan, path: &Path, from: usize, to: usize, reason: String) {
    scan.skipped.push(Skipped { file: path.to_path_buf(), offset: from as u64, bytes: (to - from) as u64, reason });
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks a segment's header and returns its first index and format version; `named` is the
/// file name's.
fn check_header(bytes: &[u8], named: Option<u64>) -> Result<(u64, u32), (usize, String)> {
    if bytes.len() < HEADER_LEN {
        return Err((0, format!("segment header is {} bytes, expected {HEADER_LEN}", bytes.len())));
    }
    if bytes[..8] != MAGIC {
        return Err((0, "not a facedb log segment (bad magic)".to_owned()));
    }
    let version = u32_at(bytes, 8);
    if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err((
            8,
            format!("log format version {version}, this build reads {OLDEST_VERSION} to {FORMAT_VERSION}"),
        ));
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[16..24]);
    let first_index = u64::from_le_bytes(first);
    if let Some(named) = named.filter(|&named| named != first_index) {
        return Err((16, format!("header says first index {first_index}, the file name {named}")));
    }
    Ok((first_index, version))
}

/// What is at an offset of a segment.
enum Record {
    Whole {
        decoded: codec::Decoded,
        end: usize,
    },
    /// The file ends inside the record.
    Torn(String),
    Bad(String),
}

/// A record found by [`Records::resync`].
struct Found {
    at: usize,
    decoded: codec::Decoded,
    end: usize,
}

/// The bytes of a segment, read record by record.
struct Records<'a> {
    bytes: &'a [u8],
    /// The segment's format version: how payloads decode.
    version: u32,
    /// `prefix_crcs[k]` is the CRC of `bytes[..k * CRC_STRIDE]`; built by the first
    /// [`crc`](Records::crc) of a long range.
    prefix_crcs: Vec<u32>,
}

const CRC_STRIDE: usize = 1024;

impl Records<'_> {
    fn at(&self, at: usize) -> Record {
        let bytes = self.bytes;
        if bytes.len() - at < RECORD_HEADER_LEN {
            return Record::Torn(format!("the file ends inside a record header ({} bytes)", bytes.len() - at));
        }
        let len = u32_at(bytes, at) as usize;
        if len > MAX_RECORD {
            return Record::Bad(format!("record length {len} is larger than {MAX_RECORD}"));
        }
        let payload_at = at + RECORD_HEADER_LEN;
        if bytes.len() - payload_at < len {
            return Record::Torn(format!("record length {len} runs past the end of the file"));
        }
        let payload = &bytes[payload_at..payload_at + len];
        if crc32fast::hash(payload) != u32_at(bytes, at + 4) {
            return Record::Bad("record checksum mismatch (crc32)".to_owned());
        }
        match codec::decode(self.version, payload) {
            Ok(decoded) => Record::Whole { decoded, end: payload_at + len },
            Err(problem) => Record::Bad(problem),
        }
    }

    /// The first offset from `from` on where a whole record starts whose entry has index `next`
    /// or above.
    fn resync(&mut self, from: usize, next: u64) -> Option<Found> {
        let bytes = self.bytes;
        let last = bytes.len().checked_sub(RECORD_HEADER_LEN)?;
        for at in from..=last {
            let len = u32_at(bytes, at) as usize;
            let payload_at = at + RECORD_HEADER_LEN;
            // Most offsets fail this; only a length that fits costs a CRC.
            if len > MAX_RECORD || len > bytes.len() - payload_at {
                continue;
            }
            if self.crc(payload_at, payload_at + len) != u32_at(bytes, at + 4) {
                continue;
            }
            match codec::decode(self.version, &bytes[payload_at..payload_at + len]) {
                Ok(decoded) if first_of(&decoded) >= next => return Some(Found { at, decoded, end: payload_at + len }),
                _ => {}
            }
        }
        None
    }

    /// The CRC of `bytes[from..to]`, in time independent of the range's length: CRC-32 is
    /// linear, so `crc(a..b) = crc(..b) ^ crc(..a) followed by b - a zero bytes`, and crc32fast's
    /// `combine` appends zero bytes in O(log n). Without this, a resynchronising search would
    /// cost a CRC of up to the rest of the file at every offset whose length field fits.
    fn crc(&mut self, from: usize, to: usize) -> u32 {
        if to - from <= 4 * CRC_STRIDE {
            return crc32fast::hash(&self.bytes[from..to]);
        }
        if self.prefix_crcs.is_empty() {
            let mut state = 0;
            self.prefix_crcs.reserve(self.bytes.len() / CRC_STRIDE + 1);
            self.prefix_crcs.push(state);
            for block in self.bytes.chunks_exact(CRC_STRIDE) {
                let mut hasher = crc32fast::Hasher::new_with_initial(state);
                hasher.update(block);
                state = hasher.finalize();
                self.prefix_crcs.push(state);
            }
        }
        let mut shifted = crc32fast::Hasher::new_with_initial(self.prefix_crc(from));
        shifted.combine(&crc32fast::Hasher::new_with_initial_len(0, (to - from) as u64));
        self.prefix_crc(to) ^ shifted.finalize()
    }

    /// The CRC of `bytes[..at]`.
    fn prefix_crc(&self, at: usize) -> u32 {
        let block = at / CRC_STRIDE;
        let mut hasher = crc32fast::Hasher::new_with_initial(self.prefix_crcs[block]);
        hasher.update(&self.bytes[block * CRC_STRIDE..at]);
        hasher.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::Records;

    #[test]
    fn the_crc_of_a_range_is_computed_from_prefix_crcs() {
        let bytes: Vec<u8> = (0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut records = Records { bytes: &bytes, version: super::FORMAT_VERSION, prefix_crcs: Vec::new() };
        for (from, to) in
            [(0, 20_000), (1, 19_999), (1023, 5_121), (4096, 8_193), (17, 17), (3, 4_200), (5_000, 20_000)]
        {
            assert_eq!(records.crc(from, to), crc32fast::hash(&bytes[from..to]), "{from}..{to}");
        }
        assert!(!records.prefix_crcs.is_empty(), "long ranges used the table");
    }
}
