//! The storage engine of a shard: named galleries of faces held in memory.
//!
//! [`Engine`] is what the HTTP API and the bench harness call. It owns the galleries and the
//! schema and facen size every gallery shares. Gallery-level operations (create, delete,
//! list) take the engine's map lock; face operations take only their gallery's locks:
//!
//! - a **writer mutex** that serialises the writes to one gallery, so that a batch checked
//!   whole (every id free, every id present) stays valid while it is applied;
//! - the gallery's **RwLock**, which a write takes for one slice of [`WRITE_SLICE`] faces at a
//!   time and a search only long enough to take a snapshot (see `gallery.rs`). A large batch
//!   thus never keeps searches waiting for more than one slice. A search may see a batch
//!   partly applied, never a batch that is then refused.
//!
//! Data lives in memory only; durability comes with the write-ahead log.

pub mod chunk;
pub mod column;
pub mod gallery;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::schema::Schema;
use crate::search::{self, Hit, Query};
pub use chunk::Face;
pub use gallery::{FaceUpdate, Gallery};

/// Settings every gallery of an engine shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// float32 components per facen.
    pub facen_size: usize,
    /// The largest `limit` a search may ask for.
    pub max_search_limit: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { facen_size: 128, max_search_limit: 10_000 }
    }
}

/// A gallery's name and size, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GalleryInfo {
    pub name: String,
    pub faces: usize,
}

/// Gallery names are `[A-Za-z0-9_-]{1,64}`: they become file names, and none can leave the
/// data directory.
pub fn check_gallery_name(name: &str) -> Result<()> {
    let valid =
        (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Error::bad_param("name", "a gallery name is 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
            .with_value(name))
    }
}

/// Faces a write applies under one hold of the gallery's write lock.
pub const WRITE_SLICE: usize = 1024;

/// A gallery and its locks.
struct GalleryHandle {
    writer: Mutex<()>,
    state: RwLock<Gallery>,
}

pub struct Engine {
    schema: Arc<Schema>,
    config: EngineConfig,
    galleries: RwLock<BTreeMap<String, Arc<GalleryHandle>>>,
}

impl Engine {
    pub fn new(schema: Schema, config: EngineConfig) -> Engine {
        Engine { schema: Arc::new(schema), config, galleries: RwLock::new(BTreeMap::new()) }
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn gallery(&self, name: &str) -> Result<Arc<GalleryHandle>> {
        check_gallery_name(name)?;
        self.galleries.read().get(name).cloned().ok_or_else(|| Error::gallery_not_found(name))
    }

    pub fn create_gallery(&self, name: &str) -> Result<()> {
        check_gallery_name(name)?;
        let mut galleries = self.galleries.write();
        if galleries.contains_key(name) {
            return Err(Error::conflict("gallery already exists").with_param("name").with_value(name));
        }
        let gallery = Gallery::new(self.schema.clone(), self.config.facen_size);
        let handle = GalleryHandle { writer: Mutex::new(()), state: RwLock::new(gallery) };
        galleries.insert(name.to_owned(), Arc::new(handle));
        Ok(())
    }

    pub fn delete_gallery(&self, name: &str) -> Result<()> {
        check_gallery_name(name)?;
        match self.galleries.write().remove(name) {
            Some(_) => Ok(()),
            None => Err(Error::gallery_not_found(name)),
        }
    }

    /// The number of faces in a gallery.
    pub fn gallery_size(&self, name: &str) -> Result<usize> {
        Ok(self.gallery(name)?.state.read().len())
    }

    /// All galleries in name order.
    pub fn list_galleries(&self) -> Vec<GalleryInfo> {
        let galleries: Vec<(String, Arc<GalleryHandle>)> =
            self.galleries.read().iter().map(|(name, g)| (name.clone(), g.clone())).collect();
        galleries.into_iter().map(|(name, g)| GalleryInfo { name, faces: g.state.read().len() }).collect()
    }

    /// Adds faces, all or none. Vectors must have `facen_size` components and meta one
    /// value per schema field, of its type (the wire layer builds them so).
    pub fn add_faces(&self, name: &str, faces: &[Face]) -> Result<()> {
        let gallery = self.gallery(name)?;
        let _writer = gallery.writer.lock();
        gallery.state.read().check_add(faces)?;
        for slice in faces.chunks(WRITE_SLICE) {
            gallery.state.write().insert(slice);
        }
        Ok(())
    }

    /// Deletes faces, all or none (an id given twice is deleted once).
    pub fn delete_faces(&self, name: &str, ids: &[u64]) -> Result<()> {
        let gallery = self.gallery(name)?;
        let _writer = gallery.writer.lock();
        gallery.state.read().check_delete(ids)?;
        for slice in ids.chunks(WRITE_SLICE) {
            gallery.state.write().remove(slice);
        }
        Ok(())
    }

    /// Updates faces, all or none; returns them as they are now, in request order.
    pub fn update_faces(&self, name: &str, updates: &[FaceUpdate]) -> Result<Vec<Face>> {
        let gallery = self.gallery(name)?;
        let _writer = gallery.writer.lock();
        gallery.state.read().check_update(updates)?;
        let mut faces = Vec::with_capacity(updates.len());
        for slice in updates.chunks(WRITE_SLICE) {
            faces.extend(gallery.state.write().apply(slice));
        }
        Ok(faces)
    }

    pub fn get_face(&self, name: &str, id: u64) -> Result<Face> {
        self.gallery(name)?.state.read().get(id).ok_or_else(|| Error::face_not_found(id))
    }

    pub fn search(&self, name: &str, query: &Query) -> Result<Vec<Hit>> {
        let gallery = self.gallery(name)?;
        let (snapshot, candidates) = {
            let gallery = gallery.state.read();
            // An id `set` smaller than the gallery: look the faces up instead of scanning.
            let candidates = query.id_set().filter(|ids| ids.len() < gallery.len()).map(|ids| {
                let mut found: Vec<(u32, u32)> =
                    ids.iter().filter_map(|&id| gallery.locate(id)).map(|at| (at.chunk, at.row)).collect();
                found.sort_unstable();
                group_by_chunk(&found)
            });
            (gallery.snapshot(), candidates)
        };
        Ok(search::run(&snapshot, query, candidates.as_deref()))
    }
}

fn group_by_chunk(sorted: &[(u32, u32)]) -> Vec<(u32, Vec<u32>)> {
    let mut groups: Vec<(u32, Vec<u32>)> = Vec::new();
    for &(chunk, row) in sorted {
        match groups.last_mut() {
            Some((last, rows)) if *last == chunk => rows.push(row),
            _ => groups.push((chunk, vec![row])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gallery_names_cannot_leave_the_data_dir() {
        for bad in ["", "a.b", "..", "a/b", "é", &"x".repeat(65)] {
            assert_eq!(check_gallery_name(bad).unwrap_err().param.as_deref(), Some("name"), "{bad:?}");
        }
        for good in ["testgal", "123", "A_b-9", &"x".repeat(64)] {
            assert!(check_gallery_name(good).is_ok(), "{good:?}");
        }
    }
}
