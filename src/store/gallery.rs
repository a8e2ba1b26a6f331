//! A gallery: the faces of one name, in copy-on-write chunks.
//!
//! Faces live in [`Chunk`]s of a few thousand rows held by `Arc`. A search takes a
//! [`Snapshot`] (a clone of the chunk list: one reference count per chunk, microseconds under
//! the gallery's lock) and scans it with no lock held, so a long scan never holds up writers.
//! A write takes the lock briefly and changes the chunks it touches with `Arc::make_mut`: a
//! chunk that no search holds is changed in place, one that a search holds is copied first
//! (about a millisecond for 4 MiB), and the search goes on with the old copy. Every batch is
//! checked whole (by the engine, `engine/check.rs`) before anything changes, so a snapshot sees all
//! of a batch or none of it.
//!
//! Deleting a face moves the last face of its chunk into its place, so chunks stay dense;
//! new faces go to the first chunk with room.

use std::collections::BTreeSet;
use std::sync::Arc;

use foldhash::HashMap as FastMap;

use super::Malformed;
use crate::schema::{MetaValue, Schema};
use crate::store::chunk::{Chunk, Face};
use crate::store::column::Column;

/// Where a face is: chunk and row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub chunk: u32,
    pub row: u32,
}

/// A change to a stored face: a new vector and/or new values for some fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaceUpdate {
    pub id: u64,
    pub vector: Option<Vec<f32>>,
    /// (field position in the schema, new value)
    pub meta: Vec<(usize, MetaValue)>,
}

/// The chunks of a gallery at one moment; scanning it needs no lock.
pub type Snapshot = Vec<Arc<Chunk>>;

#[derive(Debug)]
pub struct Gallery {
    schema: Arc<Schema>,
    dim: usize,
    chunk_rows: usize,
    chunks: Vec<Arc<Chunk>>,
    /// Face id → where it is. Searches through the graph look up every face they consider
    /// here, so the hash is foldhash (a few ns per u64) rather than SipHash.
    locations: FastMap<u64, Location>,
    /// Chunks with fewer than `chunk_rows` faces.
    with_room: BTreeSet<u32>,
}

/// Rows per chunk: about 4 MiB of vectors, at least 1024 rows.
fn rows_per_chunk(dim: usize) -> usize {
    ((4 << 20) / (dim.max(1) * 4)).max(1024)
}

impl Gallery {
    pub fn new(schema: Arc<Schema>, dim: usize) -> Gallery {
        Gallery {
            schema,
            dim,
            chunk_rows: rows_per_chunk(dim),
            chunks: Vec::new(),
            locations: FastMap::default(),
            with_room: BTreeSet::new(),
        }
    }

    /// A gallery of chunks loaded from a snapshot. Fails on an id stored twice or a chunk whose
    /// shape does not fit the schema and facen size.
    pub fn from_chunks(schema: Arc<Schema>, dim: usize, chunks: Vec<Chunk>) -> Result<Gallery, Malformed> {
        let mut gallery = Gallery::new(schema, dim);
        gallery.locations.reserve(chunks.iter().map(Chunk::len).sum());
        for chunk in chunks.into_iter().filter(|chunk| !chunk.is_empty()) {
            if chunk.dim() != dim {
                return Err(Malformed(format!("a chunk has {}-d vectors; facens are {dim}-d", chunk.dim())));
            }
            chunk.check_schema(&gallery.schema)?;
            let index = gallery.chunks.len() as u32;
            for (row, &id) in chunk.ids.iter().enumerate() {
                if gallery.locations.insert(id, Location { chunk: index, row: row as u32 }).is_some() {
                    return Err(Malformed(format!("face {id} is stored twice")));
                }
            }
            if chunk.len() < gallery.chunk_rows {
                gallery.with_room.insert(index);
            }
            gallery.chunks.push(Arc::new(chunk));
        }
        Ok(gallery)
    }

    pub fn len(&self) -> usize {
        self.locations.len()
    }

    /// Moves every face to `schema`, which has the fields of the current one and maybe more
    /// (anywhere in the list): a new field gets its default on every face.
    pub fn reshape(&mut self, schema: Arc<Schema>) {
        for chunk in &mut self.chunks {
            let chunk = Arc::make_mut(chunk);
            let mut old: Vec<Option<Column>> = std::mem::take(&mut chunk.columns).into_iter().map(Some).collect();
            chunk.columns = schema
                .fields()
                .iter()
                .map(|field| {
                    let kept = self.schema.position(&field.name).and_then(|at| old.get_mut(at)).and_then(Option::take);
                    kept.unwrap_or_else(|| {
                        let mut column = Column::new(field.field_type);
                        for _ in 0..chunk.ids.len() {
                            column.push(&field.default);
                        }
                        column
                    })
                })
                .collect();
        }
        self.schema = schema;
    }

    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.chunks.clone()
    }

    pub fn locate(&self, id: u64) -> Option<Location> {
        self.locations.get(&id).copied()
    }

    pub fn get(&self, id: u64) -> Option<Face> {
        let at = self.locate(id)?;
        Some(self.chunks[at.chunk as usize].face(at.row as usize))
    }

    pub fn contains(&self, id: u64) -> bool {
        self.locations.contains_key(&id)
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The facen size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Adds faces, which the engine checked: well-formed, none stored, none twice.
    pub fn insert(&mut self, faces: &[Face]) {
        self.locations.reserve(faces.len());
        for face in faces {
            let chunk_index = self.chunk_with_room();
            let chunk = Arc::make_mut(&mut self.chunks[chunk_index as usize]);
            let row = chunk.push(face) as u32;
            if chunk.len() >= self.chunk_rows {
                self.with_room.remove(&chunk_index);
            }
            self.locations.insert(face.id, Location { chunk: chunk_index, row });
        }
    }

    fn chunk_with_room(&mut self) -> u32 {
        if let Some(&index) = self.with_room.first() {
            return index;
        }
        self.chunks.push(Arc::new(Chunk::new(&self.schema, self.dim, self.chunk_rows)));
        let index = (self.chunks.len() - 1) as u32;
        self.with_room.insert(index);
        index
    }

    /// Removes the faces of these ids that are stored; returns how many it removed.
    pub fn remove(&mut self, ids: &[u64]) -> usize {
        let before = self.locations.len();
        for id in ids {
            let Some(at) = self.locations.remove(id) else { continue };
            let chunk = Arc::make_mut(&mut self.chunks[at.chunk as usize]);
            if let Some(moved) = chunk.swap_remove(at.row as usize) {
                self.locations.insert(moved, at);
            }
            self.with_room.insert(at.chunk);
        }
        before - self.locations.len()
    }

    /// Applies updates, which the engine checked; returns the faces as they are now, in order.
    pub fn apply(&mut self, updates: &[FaceUpdate]) -> Vec<Face> {
        let mut updated = Vec::with_capacity(updates.len());
        for update in updates {
            let Some(at) = self.locate(update.id) else { continue };
            let chunk = Arc::make_mut(&mut self.chunks[at.chunk as usize]);
            if let Some(vector) = &update.vector {
                chunk.set_vector(at.row as usize, vector);
            }
            for (field, value) in &update.meta {
                chunk.set_meta(at.row as usize, *field, value);
            }
            updated.push(chunk.face(at.row as usize));
        }
        updated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::from_yaml("- {id: 1, name: cam, field_type: string, default: ''}\n", "test").unwrap())
    }

    fn face(id: u64) -> Face {
        Face { id, vector: vec![id as f32, 1.0], meta: vec![MetaValue::String(format!("cam{}", id % 3))] }
    }

    #[test]
    fn deletes_keep_locations_right_across_chunks() {
        let mut gallery = Gallery::new(schema(), 2);
        gallery.chunk_rows = 4;
        let faces: Vec<Face> = (0..10).map(face).collect();
        gallery.insert(&faces);
        assert_eq!(gallery.chunks.len(), 3);
        gallery.remove(&[0, 5, 9, 5]);
        assert_eq!(gallery.len(), 7);
        for id in [1, 2, 3, 4, 6, 7, 8] {
            assert_eq!(gallery.get(id), Some(face(id)), "face {id}");
        }
        // New faces fill the holes first.
        gallery.insert(&[face(100)]);
        assert_eq!(gallery.locate(100).unwrap().chunk, 0);
    }

    #[test]
    fn a_write_copies_a_chunk_that_a_snapshot_holds() {
        let mut gallery = Gallery::new(schema(), 2);
        gallery.insert(&[face(1)]);
        let snapshot = gallery.snapshot();
        gallery.insert(&[face(2)]);
        assert_eq!(snapshot[0].len(), 1);
        assert_eq!(gallery.snapshot()[0].len(), 2);
    }
}
