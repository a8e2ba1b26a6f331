//! Entries to bytes and back: serde + bincode 2.0.1 (standard config: little-endian, varint
//! integers). The only place that knows the encoding.

use crate::wal::Entry;

pub fn encode(entry: &Entry) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(entry, bincode::config::standard()).map_err(|e| format!("cannot encode entry: {e}"))
}

pub fn decode(bytes: &[u8]) -> Result<Entry, String> {
    let (entry, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| format!("cannot decode entry: {e}"))?;
    if used != bytes.len() {
        return Err(format!("entry decoded from {used} of {} bytes", bytes.len()));
    }
    Ok(entry)
}
