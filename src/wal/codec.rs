//! An entry as a record's payload: `index u64 LE | term u64 LE | bytes`. Index and term are
//! fixed-width and first so that the writer stamps them onto bytes the caller has already
//! encoded: the commit thread only copies bytes.

use crate::wal::Entry;

/// Bytes before an entry's own in a record's payload.
pub const STAMP_LEN: usize = 16;

/// The index and term part of a payload.
pub fn stamp(index: u64, term: u64) -> [u8; STAMP_LEN] {
    let mut stamp = [0u8; STAMP_LEN];
    stamp[..8].copy_from_slice(&index.to_le_bytes());
    stamp[8..].copy_from_slice(&term.to_le_bytes());
    stamp
}

/// The entry of a record's payload; `None` when it is shorter than index and term.
pub fn decode(bytes: &[u8]) -> Option<Entry> {
    if bytes.len() < STAMP_LEN {
        return None;
    }
    let word = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    Some(Entry { index: word(0), term: word(8), payload: bytes[STAMP_LEN..].to_vec() })
}

/// An entry as a record's payload.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let mut payload = stamp(entry.index, entry.term).to_vec();
    payload.extend_from_slice(&entry.payload);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_and_a_short_payload_is_none() {
        let entry = Entry { index: 7, term: 2, payload: vec![5, 1, b'g'] };
        assert_eq!(decode(&encode(&entry)), Some(entry));
        assert_eq!(decode(&[0; 15]), None);
    }
}
