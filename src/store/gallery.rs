//! A gallery: the faces of one name, in copy-on-write chunks.
//!
//! Faces live in [`Chunk`]s of a few thousand rows held by `Arc`. A search takes a
//! [`Snapshot`] (a clone of the chunk list: one reference count per chunk, microseconds under
//! the gallery's lock) and scans it with no lock held, so a long scan never holds up writers.
//! A write takes the lock briefly and changes the chunks it touches with `Arc::make_mut`: a
//! chunk that no search holds is changed in place, one that a search holds is copied first
//! (about a millisecond for 4 MiB), and the search goes on with the old copy. Every batch is
//! checked whole before anything changes, so a snapshot sees all of a batch or none of it.
//!
//! Deleting a face moves the last face of its chunk into its place, so chunks stay dense;
//! new faces go to the first chunk with room.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use foldhash::HashMap as FastMap;

use crate::error::{Error, Result};
use crate::schema::{FieldType, MetaValue, Schema};
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

/// Faces that writes already checked and logged, but not yet applied, add or delete.
///
/// A write is checked against the gallery *as it will be* once every earlier write is applied:
/// the stored faces, overlaid with this. Each write marks the ids it adds or deletes with a
/// ticket, and clears its marks when it is applied (unless a later write marked them again).
#[derive(Debug, Default)]
pub struct Pending {
    next_ticket: u64,
    ids: HashMap<u64, (bool, u64)>,
}

impl Pending {
    /// Whether `id` will exist once the pending writes are applied, if one of them touches it.
    pub fn exists(&self, id: u64) -> Option<bool> {
        self.ids.get(&id).map(|&(exists, _)| exists)
    }

    /// Marks `ids` as added (`exists`) or deleted by the next write; returns its ticket.
    pub fn mark(&mut self, ids: impl Iterator<Item = u64>, exists: bool) -> u64 {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        for id in ids {
            self.ids.insert(id, (exists, ticket));
        }
        ticket
    }

    /// Clears the marks of the write with `ticket`, now applied.
    pub fn settle(&mut self, ids: impl Iterator<Item = u64>, ticket: u64) {
        for id in ids {
            if self.ids.get(&id).is_some_and(|&(_, marked_by)| marked_by == ticket) {
                self.ids.remove(&id);
            }
        }
    }
}

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
    pub fn from_chunks(schema: Arc<Schema>, dim: usize, chunks: Vec<Chunk>) -> Result<Gallery, String> {
        let mut gallery = Gallery::new(schema, dim);
        gallery.locations.reserve(chunks.iter().map(Chunk::len).sum());
        for chunk in chunks.into_iter().filter(|chunk| !chunk.is_empty()) {
            if chunk.dim() != dim {
                return Err(format!("a chunk has {}-d vectors; facens are {dim}-d", chunk.dim()));
            }
            chunk.check_schema(&gallery.schema)?;
            let index = gallery.chunks.len() as u32;
            for (row, &id) in chunk.ids.iter().enumerate() {
                if gallery.locations.insert(id, Location { chunk: index, row: row as u32 }).is_some() {
                    return Err(format!("face {id} is stored twice"));
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

    /// Whether face `id` exists once the `pending` writes are applied.
    fn will_exist(&self, id: u64, pending: &Pending) -> bool {
        pending.exists(id).unwrap_or_else(|| self.locations.contains_key(&id))
    }

    /// Adds all faces or none: an id already stored, or twice in the batch, is a conflict.
    pub fn add(&mut self, faces: &[Face]) -> Result<()> {
        self.check_add(faces, &Pending::default())?;
        self.insert(faces);
        Ok(())
    }

    /// Whether `faces` can be added after the `pending` writes: well-formed, no id stored or
    /// twice in the batch.
    pub fn check_add(&self, faces: &[Face], pending: &Pending) -> Result<()> {
        let mut seen = HashSet::with_capacity(faces.len());
        for face in faces {
            self.check_vector(face.id, &face.vector)?;
            if face.meta.len() != self.schema.fields().len() {
                return Err(Error::bad_param(
                    "meta",
                    format!(
                        "face {}: {} meta values for {} schema fields",
                        face.id,
                        face.meta.len(),
                        self.schema.fields().len()
                    ),
                )
                .with_value(face.id));
            }
            for (position, value) in face.meta.iter().enumerate() {
                self.check_meta(face.id, position, value)?;
            }
            if self.will_exist(face.id, pending) {
                return Err(Error::conflict(format!("face {} already exists", face.id))
                    .with_param("id")
                    .with_value(face.id));
            }
            if !seen.insert(face.id) {
                return Err(Error::conflict(format!("face {} appears twice in the request", face.id))
                    .with_param("id")
                    .with_value(face.id));
            }
        }
        Ok(())
    }

    /// Adds faces that [`check_add`](Self::check_add) accepted.
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

    /// The wire layer builds faces that pass these checks; they guard the library API.
    fn check_vector(&self, id: u64, vector: &[f32]) -> Result<()> {
        if vector.len() != self.dim || vector.iter().any(|x| !x.is_finite()) {
            return Err(Error::bad_param(
                "facen",
                format!("face {id}: a facen is {} finite float32 values, got {}", self.dim, vector.len()),
            )
            .with_value(id));
        }
        Ok(())
    }

    fn check_meta(&self, id: u64, position: usize, value: &MetaValue) -> Result<()> {
        let field = self.schema.fields().get(position);
        let fits = field.is_some_and(|field| {
            matches!(
                (field.field_type, value),
                (FieldType::String, MetaValue::String(_))
                    | (FieldType::Unsigned, MetaValue::Unsigned(_))
                    | (FieldType::StringSet, MetaValue::StringSet(_))
                    | (FieldType::UnsignedSet, MetaValue::UnsignedSet(_))
            )
        });
        if fits {
            return Ok(());
        }
        let param = field.map_or_else(|| format!("meta[{position}]"), |f| format!("meta.{}", f.name));
        Err(Error::bad_param(param, format!("face {id}: {value:?} does not fit the schema field")).with_value(id))
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

    /// Deletes all the faces or none: one missing id is `NOT_FOUND` and nothing is deleted.
    /// An id given twice is deleted once.
    pub fn delete(&mut self, ids: &[u64]) -> Result<()> {
        self.check_delete(ids, &Pending::default())?;
        self.remove(ids);
        Ok(())
    }

    /// Whether every face exists after the `pending` writes.
    pub fn check_delete(&self, ids: &[u64], pending: &Pending) -> Result<()> {
        match ids.iter().find(|&&id| !self.will_exist(id, pending)) {
            Some(&missing) => Err(Error::face_not_found(missing)),
            None => Ok(()),
        }
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

    /// Applies all updates or none, and returns the updated faces in request order.
    pub fn update(&mut self, updates: &[FaceUpdate]) -> Result<Vec<Face>> {
        self.check_update(updates, &Pending::default())?;
        Ok(self.apply(updates))
    }

    /// Whether every face exists after the `pending` writes, none is named twice, and the new
    /// values fit.
    pub fn check_update(&self, updates: &[FaceUpdate], pending: &Pending) -> Result<()> {
        let mut seen = HashSet::with_capacity(updates.len());
        for update in updates {
            if let Some(vector) = &update.vector {
                self.check_vector(update.id, vector)?;
            }
            for (position, value) in &update.meta {
                self.check_meta(update.id, *position, value)?;
            }
            if !self.will_exist(update.id, pending) {
                return Err(Error::face_not_found(update.id));
            }
            if !seen.insert(update.id) {
                return Err(Error::bad_param("id", format!("face {} appears twice in the request", update.id))
                    .with_value(update.id));
            }
        }
        Ok(())
    }

    /// Applies updates that [`check_update`](Self::check_update) accepted; returns the faces
    /// as they are now.
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
        gallery.add(&faces).unwrap();
        assert_eq!(gallery.chunks.len(), 3);
        gallery.delete(&[0, 5, 9, 5]).unwrap();
        assert_eq!(gallery.len(), 7);
        for id in [1, 2, 3, 4, 6, 7, 8] {
            assert_eq!(gallery.get(id), Some(face(id)), "face {id}");
        }
        // New faces fill the holes first.
        gallery.add(&[face(100)]).unwrap();
        assert_eq!(gallery.locate(100).unwrap().chunk, 0);
    }

    #[test]
    fn failed_batches_change_nothing() {
        let mut gallery = Gallery::new(schema(), 2);
        gallery.add(&[face(1), face(2)]).unwrap();
        let before = gallery.snapshot();
        assert_eq!(gallery.add(&[face(3), face(1)]).unwrap_err().code, 409);
        assert_eq!(gallery.add(&[face(4), face(4)]).unwrap_err().code, 409);
        assert_eq!(gallery.delete(&[1, 7]).unwrap_err().code, 404);
        let short = Face { id: 5, vector: vec![1.0], meta: face(5).meta };
        assert_eq!(gallery.add(&[short]).unwrap_err().param.as_deref(), Some("facen"));
        let mistyped = Face { id: 6, vector: vec![1.0, 2.0], meta: vec![MetaValue::Unsigned(3)] };
        assert_eq!(gallery.add(&[mistyped]).unwrap_err().param.as_deref(), Some("meta.cam"));
        let update = FaceUpdate { id: 1, vector: None, meta: vec![(0, MetaValue::Unsigned(1))] };
        assert_eq!(gallery.update(&[update]).unwrap_err().param.as_deref(), Some("meta.cam"));
        let update = FaceUpdate { id: 9, vector: None, meta: vec![] };
        assert_eq!(gallery.update(&[update]).unwrap_err().code, 404);
        assert_eq!(gallery.len(), 2);
        assert!(Arc::ptr_eq(&before[0], &gallery.snapshot()[0]), "no chunk was touched");
    }

    #[test]
    fn a_write_copies_a_chunk_that_a_snapshot_holds() {
        let mut gallery = Gallery::new(schema(), 2);
        gallery.add(&[face(1)]).unwrap();
        let snapshot = gallery.snapshot();
        gallery.add(&[face(2)]).unwrap();
        assert_eq!(snapshot[0].len(), 1);
        assert_eq!(gallery.snapshot()[0].len(), 2);
    }
}
