//! An entry as a record's payload.
//!
//! ```text
//! format 2: index u64 LE | term u64 LE | kind u8 | bytes
//! format 1: index u64 LE | term u64 LE | bytes              (every entry of kind 0, normal)
//! ```
//!
//! Index, term and kind are fixed-width and first so that the writer stamps them onto bytes
//! the caller has already encoded: the commit thread only copies bytes. The kind is raft-rs's
//! `EntryType` (0 normal, 1 conf change, 2 conf change v2), so a Raft entry round-trips with no
//! table; its high bit ([`EMPTY_BEFORE`]) says that the record also stands for an empty normal
//! entry at `index - 1` of the same term (see [`crate::wal::writer::Wal::defer_empty`]).

use crate::wal::{kind, Entry};

/// Bytes before an entry's own in a format-2 record's payload.
pub const STAMP_LEN: usize = 17;
/// The same in format 1 (no kind byte).
pub const STAMP_LEN_V1: usize = 16;
/// The kind byte's flag: an empty normal entry of the same term precedes this one.
pub const EMPTY_BEFORE: u8 = 0x80;

/// The index, term and kind part of a format-2 payload.
pub fn stamp(index: u64, term: u64, kind: u8) -> [u8; STAMP_LEN] {
    let mut stamp = [0u8; STAMP_LEN];
    stamp[..8].copy_from_slice(&index.to_le_bytes());
    stamp[8..16].copy_from_slice(&term.to_le_bytes());
    stamp[16] = kind;
    stamp
}

/// A record's payload, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub entry: Entry,
    /// The record also stands for an empty normal entry at `entry.index - 1`, same term.
    pub empty_before: bool,
}

/// The entry of a record's payload in segment format `version`; an error says what is wrong
/// (shorter than the stamp, an unknown kind, an empty entry before index 1).
pub fn decode(version: u32, bytes: &[u8]) -> Result<Decoded, String> {
    let stamp_len = if version == 1 { STAMP_LEN_V1 } else { STAMP_LEN };
    if bytes.len() < stamp_len {
        return Err(format!("a record of {} bytes, shorter than index, term and kind", bytes.len()));
    }
    let word = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let (index, term) = (word(0), word(8));
    let byte = if version == 1 { kind::NORMAL } else { bytes[16] };
    let (kind, empty_before) = (byte & !EMPTY_BEFORE, byte & EMPTY_BEFORE != 0);
    if !kind::is_known(kind) {
        return Err(format!("entry {index} has an unknown kind {kind}"));
    }
    if empty_before && index < 2 {
        return Err(format!("entry {index} says an empty entry precedes it"));
    }
    let entry = Entry { index, term, kind, payload: bytes[stamp_len..].to_vec() };
    Ok(Decoded { entry, empty_before })
}

/// An entry as a format-2 record's payload.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let mut payload = stamp(entry.index, entry.term, entry.kind).to_vec();
    payload.extend_from_slice(&entry.payload);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_and_a_short_payload_or_unknown_kind_is_refused() {
        let entry = Entry { index: 7, term: 2, kind: kind::CONF_CHANGE_V2, payload: vec![5, 1, b'g'] };
        assert_eq!(decode(2, &encode(&entry)), Ok(Decoded { entry: entry.clone(), empty_before: false }));
        assert!(decode(2, &[0; 16]).unwrap_err().contains("shorter"));
        let mut flagged = encode(&entry);
        flagged[16] |= EMPTY_BEFORE;
        assert_eq!(decode(2, &flagged).map(|d| d.empty_before), Ok(true));
        flagged[16] = 9;
        assert!(decode(2, &flagged).unwrap_err().contains("unknown kind 9"));
        // Format 1: no kind byte; the bytes after the term are the entry's.
        let v1 = [&7u64.to_le_bytes()[..], &1u64.to_le_bytes(), &[9, 9]].concat();
        let read = decode(1, &v1).unwrap();
        assert_eq!(read.entry, Entry { index: 7, term: 1, kind: kind::NORMAL, payload: vec![9, 9] });
        assert!(decode(1, &[0; 15]).is_err());
    }
}
