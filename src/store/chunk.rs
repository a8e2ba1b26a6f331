//! A chunk: a few thousand faces stored column by column.
//!
//! Vectors of a chunk lie in one contiguous row-major buffer so that a scan streams through
//! memory; beside them are the ids, each vector's inverse norm (for cosine scores) and one
//! metadata [`Column`] per schema field. A chunk is small enough (about 4 MiB of vectors) that
//! copying it is cheap, which is what lets a gallery share chunks with running searches and
//! copy one only when a write touches it (see `gallery.rs`).

use crate::facen;
use crate::schema::{MetaValue, Schema};
use crate::store::column::Column;
use crate::store::Malformed;

/// The largest capacity [`Chunk::from_parts`] reserves, in faces: 64 MiB of vectors or 1024
/// faces, whichever is more. It bounds a capacity read from a file and is above a gallery's
/// rows per chunk (4 MiB of vectors or 1024 faces).
pub(crate) fn max_capacity(dim: usize) -> usize {
    ((64 << 20) / (4 * dim.max(1))).max(1024)
}

/// A face as the engine stores it: metadata in schema field order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Face {
    pub id: u64,
    pub vector: Vec<f32>,
    pub meta: Vec<MetaValue>,
}

#[derive(Debug)]
pub struct Chunk {
    dim: usize,
    pub(crate) ids: Vec<u64>,
    vectors: Vec<f32>,
    inverse_norms: Vec<f64>,
    pub(crate) columns: Vec<Column>,
}

/// A copy keeps the original's capacity: the copy a write makes of a chunk that a search
/// holds is usually the one new faces go to, and must not reallocate again on the next push.
impl Clone for Chunk {
    fn clone(&self) -> Chunk {
        let rows = self.ids.capacity().max(self.ids.len());
        let mut copy = Chunk {
            dim: self.dim,
            ids: Vec::with_capacity(rows),
            vectors: Vec::with_capacity(rows * self.dim),
            inverse_norms: Vec::with_capacity(rows),
            columns: self.columns.clone(),
        };
        copy.ids.extend_from_slice(&self.ids);
        copy.vectors.extend_from_slice(&self.vectors);
        copy.inverse_norms.extend_from_slice(&self.inverse_norms);
        copy
    }
}

impl Chunk {
    pub fn new(schema: &Schema, dim: usize, capacity: usize) -> Chunk {
        Chunk {
            dim,
            ids: Vec::with_capacity(capacity),
            vectors: Vec::with_capacity(capacity * dim),
            inverse_norms: Vec::with_capacity(capacity),
            columns: schema.fields().iter().map(|f| Column::new(f.field_type)).collect(),
        }
    }

    /// A chunk from its parts, as a snapshot gives them back: `ids.len()` faces, their vectors
    /// (row-major, `dim` floats each), their inverse norms and one column per schema field. The
    /// lengths must agree. Room is reserved for `capacity` faces (the rows per chunk of the
    /// gallery, so that filling the chunk does not reallocate), up to [`max_capacity`].
    pub(crate) fn from_parts(
        dim: usize,
        mut ids: Vec<u64>,
        mut vectors: Vec<f32>,
        mut inverse_norms: Vec<f64>,
        mut columns: Vec<Column>,
        capacity: usize,
    ) -> Result<Chunk, Malformed> {
        let rows = ids.len();
        if Some(vectors.len()) != rows.checked_mul(dim) {
            return Err(malformed!("{} floats of vectors for {rows} faces of {dim} floats", vectors.len()));
        }
        if inverse_norms.len() != rows {
            return Err(malformed!("{} inverse norms for {rows} faces", inverse_norms.len()));
        }
        if let Some((field, column)) = columns.iter().enumerate().find(|(_, c)| c.len() != rows) {
            return Err(malformed!("column {field} has {} rows for {rows} faces", column.len()));
        }
        let room = capacity.min(max_capacity(dim)).saturating_sub(rows);
        if room > 0 {
            ids.reserve_exact(room);
            vectors.reserve_exact(room.saturating_mul(dim));
            inverse_norms.reserve_exact(room);
            for column in &mut columns {
                column.reserve(room);
            }
        }
        Ok(Chunk { dim, ids, vectors, inverse_norms, columns })
    }

    /// Whether the columns are those of `schema`: one per field, of the field's type.
    pub fn check_schema(&self, schema: &Schema) -> Result<(), Malformed> {
        let fields = schema.fields();
        if self.columns.len() != fields.len() {
            return Err(malformed!("{} columns for {} schema fields", self.columns.len(), fields.len()));
        }
        for (field, column) in fields.iter().zip(&self.columns) {
            if column.field_type() != field.field_type {
                return Err(malformed!(
                    "field {:?} is {} in the schema but {} in the chunk",
                    field.name,
                    field.field_type.name(),
                    column.field_type().name()
                ));
            }
        }
        Ok(())
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How many faces the chunk holds without reallocating.
    pub fn capacity(&self) -> usize {
        self.ids.capacity()
    }

    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// Every vector, row after row.
    pub fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    pub fn inverse_norms(&self) -> &[f64] {
        &self.inverse_norms
    }

    /// One column per schema field.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn id(&self, row: usize) -> u64 {
        self.ids[row]
    }

    pub fn vector(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dim..(row + 1) * self.dim]
    }

    pub fn inverse_norm(&self, row: usize) -> f64 {
        self.inverse_norms[row]
    }

    /// Appends a face and returns its row.
    pub fn push(&mut self, face: &Face) -> usize {
        debug_assert_eq!(face.vector.len(), self.dim);
        self.ids.push(face.id);
        self.vectors.extend_from_slice(&face.vector);
        self.inverse_norms.push(facen::inverse_norm(&face.vector));
        for (column, value) in self.columns.iter_mut().zip(&face.meta) {
            column.push(value);
        }
        self.ids.len() - 1
    }

    pub fn set_vector(&mut self, row: usize, vector: &[f32]) {
        self.vectors[row * self.dim..(row + 1) * self.dim].copy_from_slice(vector);
        self.inverse_norms[row] = facen::inverse_norm(vector);
    }

    pub fn set_meta(&mut self, row: usize, field: usize, value: &MetaValue) {
        self.columns[field].set(row, value);
    }

    /// Removes `row`; the last row moves into its place. Returns the id of the face that moved,
    /// if one did.
    pub fn swap_remove(&mut self, row: usize) -> Option<u64> {
        let last = self.ids.len() - 1;
        self.ids.swap_remove(row);
        self.inverse_norms.swap_remove(row);
        if row != last {
            self.vectors.copy_within(last * self.dim..(last + 1) * self.dim, row * self.dim);
        }
        self.vectors.truncate(last * self.dim);
        for column in &mut self.columns {
            column.swap_remove(row);
        }
        (row != last).then(|| self.ids[row])
    }

    /// The whole face at `row`.
    pub fn face(&self, row: usize) -> Face {
        Face {
            id: self.ids[row],
            vector: self.vector(row).to_vec(),
            meta: self.columns.iter().map(|c| c.get(row)).collect(),
        }
    }
}
