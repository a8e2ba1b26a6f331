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
//! The payload is one encoded [`Entry`] (see `codec.rs`); entries follow each other with
//! consecutive indices. [`scan`] reads a segment back and classifies its end:
//!
//! - a record cut short at the end of the file is a **torn tail** (the process died while
//!   writing it): [`Scan::torn_at`] gives the offset to truncate the file to;
//! - anything else wrong (bad magic or version, a CRC mismatch, an undecodable payload, a gap
//!   in the indices, a length beyond [`MAX_RECORD`]) is **corruption**, reported with the file
//!   and the byte offset.
//!
//! Only the last segment of a log may have a torn tail; recovery enforces that. A length field
//! damaged so that it points past the end of the file cannot be told from a torn write.

use std::path::Path;

use crate::wal::{codec, Entry};

pub const MAGIC: [u8; 8] = *b"FACEDBWL";
pub const FORMAT_VERSION: u32 = 1;
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

/// Appends the record of `payload` to `out`.
pub fn push_record(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What a segment holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    pub first_index: u64,
    pub entries: Vec<Entry>,
    /// Where the torn last record begins, if the file ends inside one.
    pub torn_at: Option<u64>,
}

/// Reads a whole segment. Errors name the file and the byte offset.
pub fn scan(path: &Path) -> Result<Scan, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    scan_bytes(&bytes).map_err(|(offset, problem)| format!("{}: byte {offset}: {problem}", path.display()))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn scan_bytes(bytes: &[u8]) -> Result<Scan, (usize, String)> {
    if bytes.len() < HEADER_LEN {
        // Created but the header never fully written: a torn segment with nothing in it.
        return Err((0, format!("segment header is {} bytes, expected {HEADER_LEN}", bytes.len())));
    }
    if bytes[..8] != MAGIC {
        return Err((0, "not a facedb log segment (bad magic)".to_owned()));
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err((8, format!("log format version {version}, this build reads {FORMAT_VERSION}")));
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[16..24]);
    let first_index = u64::from_le_bytes(first);
    let mut scan = Scan { first_index, entries: Vec::new(), torn_at: None };
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        if bytes.len() - at < RECORD_HEADER_LEN {
            scan.torn_at = Some(at as u64);
            break;
        }
        let len = u32_at(bytes, at) as usize;
        if len > MAX_RECORD {
            return Err((at, format!("record length {len} is larger than {MAX_RECORD}")));
        }
        let payload_at = at + RECORD_HEADER_LEN;
        if bytes.len() - payload_at < len {
            scan.torn_at = Some(at as u64);
            break;
        }
        let payload = &bytes[payload_at..payload_at + len];
        let crc = u32_at(bytes, at + 4);
        if crc32fast::hash(payload) != crc {
            return Err((at, "record checksum mismatch (crc32)".to_owned()));
        }
        let entry = codec::decode(payload).map_err(|e| (at, e))?;
        let expected = first_index + scan.entries.len() as u64;
        if entry.index != expected {
            return Err((at, format!("entry index {} where {expected} was expected", entry.index)));
        }
        scan.entries.push(entry);
        at = payload_at + len;
    }
    Ok(scan)
}
