//! Entries to bytes and back. The only place that knows the encoding.
//!
//! A payload is `index u64 LE | term u64 LE | op`, the op in serde + bincode 2.0.1 (standard
//! config: little-endian, varint integers). Index and term are fixed-width and first so that
//! the writer thread can stamp them onto an op the calling thread has already encoded: the
//! expensive part (a batch of a thousand faces) is encoded in parallel by the request threads,
//! and the log thread only copies bytes.

use crate::wal::{Entry, Op};

/// Bytes before the op in a payload.
pub const STAMP_LEN: usize = 16;

pub fn encode_op(op: &Op) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(op, bincode::config::standard()).map_err(|e| format!("cannot encode entry: {e}"))
}

/// The index and term part of a payload.
pub fn stamp(index: u64, term: u64) -> [u8; STAMP_LEN] {
    let mut stamp = [0u8; STAMP_LEN];
    stamp[..8].copy_from_slice(&index.to_le_bytes());
    stamp[8..].copy_from_slice(&term.to_le_bytes());
    stamp
}

/// An op encoded alone (as [`encode_op`] writes it).
pub fn decode_op(bytes: &[u8]) -> Result<Op, String> {
    // The limit keeps a damaged length prefix from asking for a huge allocation.
    let config = bincode::config::standard().with_limit::<{ 1 << 30 }>();
    let (op, used) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| format!("cannot decode entry: {e}"))?;
    if used != bytes.len() {
        return Err(format!("entry decoded from {used} of {} bytes", bytes.len()));
    }
    Ok(op)
}

pub fn encode(entry: &Entry) -> Result<Vec<u8>, String> {
    let mut payload = stamp(entry.index, entry.term).to_vec();
    payload.extend(encode_op(&entry.op)?);
    Ok(payload)
}

pub fn decode(bytes: &[u8]) -> Result<Entry, String> {
    if bytes.len() < STAMP_LEN {
        return Err(format!("cannot decode entry: {} bytes, shorter than index and term", bytes.len()));
    }
    let word = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let (index, term) = (word(0), word(8));
    Ok(Entry { index, term, op: decode_op(&bytes[STAMP_LEN..])? })
}

/// An [`Op`] that borrows its data, so that a request's faces are encoded without a copy.
/// It encodes exactly as the `Op` of the same variant (checked by a test), which is what
/// [`decode`] reads back.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub enum OpRef<'a> {
    Configure { schema: &'a str, facen_size: u64 },
    CreateGallery { name: &'a str },
    DeleteGallery { name: &'a str },
    AddFaces { gallery: &'a str, faces: &'a [crate::store::Face] },
    UpdateFaces { gallery: &'a str, updates: &'a [crate::store::FaceUpdate] },
    DeleteFaces { gallery: &'a str, ids: &'a [u64] },
    CreateIndexedGallery { name: &'a str, index: crate::index::gallery_index::IndexOverrides },
}

pub fn encode_op_ref(op: OpRef<'_>) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(op, bincode::config::standard()).map_err(|e| format!("cannot encode entry: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::gallery_index::IndexOverrides;
    use crate::schema::MetaValue;
    use crate::store::{Face, FaceUpdate};

    #[test]
    fn a_borrowed_op_encodes_as_the_owned_one() {
        let faces =
            vec![Face { id: u64::MAX, vector: vec![0.5, -1.0], meta: vec![MetaValue::StringSet(vec!["é".into()])] }];
        let updates = vec![FaceUpdate { id: 3, vector: None, meta: vec![(1, MetaValue::Unsigned(9))] }];
        let overrides = IndexOverrides { m: Some(48), ef_construction: None, ef_search: Some(64) };
        let pairs = [
            (
                OpRef::Configure { schema: "- {}", facen_size: 128 },
                Op::Configure { schema: "- {}".into(), facen_size: 128 },
            ),
            (OpRef::CreateGallery { name: "g" }, Op::CreateGallery { name: "g".into() }),
            (OpRef::DeleteGallery { name: "g" }, Op::DeleteGallery { name: "g".into() }),
            (
                OpRef::CreateIndexedGallery { name: "g", index: overrides },
                Op::CreateIndexedGallery { name: "g".into(), index: overrides },
            ),
            (
                OpRef::AddFaces { gallery: "g", faces: &faces },
                Op::AddFaces { gallery: "g".into(), faces: faces.clone() },
            ),
            (
                OpRef::UpdateFaces { gallery: "g", updates: &updates },
                Op::UpdateFaces { gallery: "g".into(), updates: updates.clone() },
            ),
            (
                OpRef::DeleteFaces { gallery: "g", ids: &[1, 2] },
                Op::DeleteFaces { gallery: "g".into(), ids: vec![1, 2] },
            ),
        ];
        for (borrowed, owned) in pairs {
            assert_eq!(encode_op_ref(borrowed).unwrap(), encode_op(&owned).unwrap(), "{owned:?}");
        }
        let entry = Entry { index: 7, term: 2, op: Op::DeleteFaces { gallery: "g".into(), ids: vec![5] } };
        assert_eq!(decode(&encode(&entry).unwrap()).unwrap(), entry);
    }
}
