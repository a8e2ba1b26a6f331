//! The logged operation: one [`Op`] per write, and its bytes.
//!
//! The log (`crate::wal`) stores entries of bytes; what they mean is here. An op is encoded in
//! the request thread (the expensive part: a batch of a thousand faces), before the write is
//! checked, so that the node loop only copies bytes. The encoding is serde + bincode 2.0.1
//! (standard config: little-endian, varint integers); nothing else in the crate knows it.
//! Variants are only ever appended: their position is their tag in logs and snapshots already
//! written.

use serde::{Deserialize, Serialize};

use crate::index::gallery_index::IndexOverrides;
use crate::store::{Face, FaceUpdate};

/// A change to the database, as logged and as applied ([`Engine::apply`](super::Engine::apply)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// The schema (as [`Schema::to_yaml`](crate::schema::Schema::to_yaml)) and facen size the
    /// entries after it are written in: the first entry of a new database, and again after an
    /// allowed schema change.
    Configure {
        schema: String,
        facen_size: u64,
    },
    CreateGallery {
        name: String,
    },
    DeleteGallery {
        name: String,
    },
    AddFaces {
        gallery: String,
        faces: Vec<Face>,
    },
    UpdateFaces {
        gallery: String,
        updates: Vec<FaceUpdate>,
    },
    DeleteFaces {
        gallery: String,
        ids: Vec<u64>,
    },
    /// A gallery created with index parameters of its own (one created without is a
    /// `CreateGallery`).
    CreateIndexedGallery {
        name: String,
        index: IndexOverrides,
    },
}

/// Bytes that are not an op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode entry: {0}")]
    Encode(String),
    #[error("cannot decode entry: {0}")]
    Decode(String),
    #[error("entry decoded from {used} of {len} bytes")]
    Trailing { used: usize, len: usize },
}

pub fn encode(op: &Op) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(op, bincode::config::standard()).map_err(|e| CodecError::Encode(e.to_string()))
}

pub fn decode(bytes: &[u8]) -> Result<Op, CodecError> {
    // The limit keeps a damaged length prefix from asking for a huge allocation.
    let config = bincode::config::standard().with_limit::<{ 1 << 30 }>();
    let (op, used) = bincode::serde::decode_from_slice(bytes, config).map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing { used, len: bytes.len() });
    }
    Ok(op)
}

impl Op {
    /// The schema and facen size a `Configure` records.
    pub fn configuration(&self) -> Option<(&str, u64)> {
        match self {
            Op::Configure { schema, facen_size } => Some((schema, *facen_size)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::MetaValue;

    /// The bytes of each variant as logs written before this module existed hold them: an op's
    /// encoding never changes.
    #[test]
    fn ops_encode_as_logs_on_disk_hold_them() {
        let faces =
            vec![Face { id: u64::MAX, vector: vec![0.5, -1.0], meta: vec![MetaValue::StringSet(vec!["é".into()])] }];
        let updates = vec![FaceUpdate { id: 3, vector: None, meta: vec![(1, MetaValue::Unsigned(9))] }];
        let overrides = IndexOverrides { m: Some(48), ef_construction: None, ef_search: Some(64) };
        let ops = [
            Op::Configure { schema: "- {}".into(), facen_size: 128 },
            Op::CreateGallery { name: "g".into() },
            Op::DeleteGallery { name: "g".into() },
            Op::AddFaces { gallery: "g".into(), faces },
            Op::UpdateFaces { gallery: "g".into(), updates },
            Op::DeleteFaces { gallery: "g".into(), ids: vec![1, 2] },
            Op::CreateIndexedGallery { name: "g".into(), index: overrides },
        ];
        let tags: Vec<u8> = ops.iter().map(|op| encode(op).unwrap()[0]).collect();
        assert_eq!(tags, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(encode(&ops[1]).unwrap(), [1, 1, b'g']);
        assert_eq!(encode(&ops[5]).unwrap(), [5, 1, b'g', 2, 1, 2]);
        for op in ops {
            assert_eq!(decode(&encode(&op).unwrap()).unwrap(), op);
        }
        let mut trailing = encode(&Op::CreateGallery { name: "g".into() }).unwrap();
        trailing.push(0);
        assert_eq!(decode(&trailing), Err(CodecError::Trailing { used: 3, len: 4 }));
    }
}
