//! The engine: a shard's galleries as a state machine that changes only by applying logged
//! operations.
//!
//! Every write is an [`Op`]. It goes (the node loop is `crate::replica`'s):
//!
//! 1. **check** ([`Engine::check`]): against the galleries as they will be once the writes
//!    already checked are applied (the [`Pending`] overlay) and against the memory limit.
//!    A refusal ends here and never reaches the log. The returned [`Checked`] holds the
//!    gallery's writer lock until the op is queued for the log, so writes to a gallery are
//!    logged in the order they were checked; a gallery create or delete holds the engine's
//!    gallery lock until it is applied;
//! 2. **log**: appended, with the writes queued beside it, in one write and one fsync;
//! 3. **apply** ([`Engine::apply`]): the only mutation, in log order, on the commit thread, and
//!    the same call at recovery. It checks the op again against the stored faces alone: a
//!    write checked in step 1 passes, and a log that does not fit the state it is replayed onto
//!    is told.
//!
//! No reader sees a write before it is logged. A write applies to a gallery one slice of
//! [`WRITE_SLICE`] faces at a time under the gallery's RwLock, which a search takes only long
//! enough to take a snapshot (see `store/gallery.rs`): a large batch never keeps searches
//! waiting for more than one slice. A search may see a batch partly applied, never one that is
//! refused.
//!
//! A gallery being deleted refuses new face writes at once (404); the writes logged before its
//! delete are applied before it.

pub mod check;
pub mod error;
#[cfg(test)]
mod index_tests;
mod indexer;
pub mod op;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{ArcMutexGuard, Mutex, RawMutex, RwLock};

use crate::index::gallery_index::{GalleryIndex, IndexOverrides, IndexSettings, IndexStatus};
use crate::schema::{FieldType, Schema};
use crate::search::indexed::{candidates, LazyFilters};
use crate::search::planner::{self, Plan, Situation};
use crate::search::{self, Hit, Query};
use crate::store::chunk::Chunk;
use crate::store::{Face, FaceUpdate, Gallery};
pub use check::Pending;
pub use error::{Error, Result};
pub use op::Op;

/// Settings every gallery of an engine shares.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// float32 components per facen.
    pub facen_size: usize,
    /// The largest `limit` a search may ask for.
    pub max_search_limit: usize,
    /// Adds that would take the estimated memory of the faces past this fail with 507.
    pub memory_limit: Option<u64>,
    /// When galleries get a graph, and its parameters.
    pub index: IndexSettings,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { facen_size: 128, max_search_limit: 10_000, memory_limit: None, index: IndexSettings::default() }
    }
}

/// A gallery's name and size, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GalleryInfo {
    pub name: String,
    pub faces: usize,
}

/// A gallery as a snapshot writes it: its chunks at one moment (see [`Engine::images`]).
#[derive(Debug, Clone)]
pub struct GalleryImage {
    pub name: String,
    /// The index parameters the gallery was created with.
    pub index: IndexOverrides,
    pub chunks: Vec<Arc<Chunk>>,
}

/// Gallery names are `[A-Za-z0-9_-]{1,64}`: they become file names, and none can leave the
/// data directory.
pub fn check_gallery_name(name: &str) -> Result<()> {
    let valid =
        (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid("name", "a gallery name is 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'", name))
    }
}

/// Faces a write applies under one hold of the gallery's write lock.
pub const WRITE_SLICE: usize = 1024;

/// The memory a face is counted for against `--memory-limit`: its vector, id, inverse norm,
/// its entry in the id map, and a fixed slot per metadata field (a dictionary code for a
/// string, the value for an unsigned, the vector header for a set). Distinct strings and set
/// elements are not counted.
pub fn face_bytes(schema: &Schema, facen_size: usize) -> u64 {
    let meta: usize = schema
        .fields()
        .iter()
        .map(|f| match f.field_type {
            FieldType::String => 4,
            FieldType::Unsigned => 8,
            FieldType::StringSet | FieldType::UnsignedSet => 24,
        })
        .sum();
    (facen_size * 4 + 8 + 8 + 32 + meta) as u64
}

/// What applying an op gives back.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Done,
    /// An update's faces as they are now, in request order.
    Updated(Vec<Face>),
}

/// A write that passed its check, holding what keeps later checks right until it is logged:
/// the gallery's writer lock (drop it with [`queued`](Self::queued) once the op is queued for
/// the log) and, for a gallery create or delete, the engine's gallery lock (until dropped,
/// once the op is applied).
#[must_use = "a checked write must be queued for the log while it is held"]
pub struct Checked {
    galleries: Option<ArcMutexGuard<RawMutex, ()>>,
    writer: Option<ArcMutexGuard<RawMutex, Pending>>,
}

impl Checked {
    /// The op is queued for the log: later writes to its gallery may be checked.
    pub fn queued(&mut self) {
        self.writer.take();
    }
}

/// A gallery and its locks.
struct GalleryHandle {
    /// Serialises the checks of writes to this gallery; holds what they will change.
    writer: Arc<Mutex<Pending>>,
    state: RwLock<Gallery>,
    /// Set when a delete of the gallery is checked: later writes get 404.
    deleted: AtomicBool,
    /// The graph and the faces not in it yet; follows `state` (changed under its write lock).
    index: GalleryIndex,
}

impl GalleryHandle {
    fn new(gallery: Gallery, index: GalleryIndex) -> Arc<GalleryHandle> {
        Arc::new(GalleryHandle {
            writer: Arc::new(Mutex::new(Pending::default())),
            state: RwLock::new(gallery),
            deleted: AtomicBool::new(false),
            index,
        })
    }

    /// Takes the writer lock for a write: refuses if the gallery's delete is checked.
    fn writer(&self, name: &str) -> Result<ArcMutexGuard<RawMutex, Pending>> {
        let pending = self.writer.lock_arc();
        if self.deleted.load(Ordering::SeqCst) {
            return Err(Error::GalleryNotFound(name.to_owned()));
        }
        Ok(pending)
    }

    fn insert(&self, faces: &[Face]) {
        let mut state = self.state.write();
        state.insert(faces);
        self.index.added(faces.iter().map(|f| f.id));
    }

    /// Removes faces; returns how many there were.
    fn remove(&self, ids: &[u64]) -> usize {
        let mut state = self.state.write();
        let removed = state.remove(ids);
        self.index.removed(ids);
        removed
    }

    /// Applies updates; returns the faces as they are now.
    fn update(&self, updates: &[FaceUpdate]) -> Vec<Face> {
        let mut state = self.state.write();
        let faces = state.apply(updates);
        // Faces whose vector changed: the graph must see them again.
        let changed: Vec<u64> = updates.iter().filter(|u| u.vector.is_some()).map(|u| u.id).collect();
        if !changed.is_empty() {
            self.index.removed(&changed);
            self.index.added(changed.into_iter());
        }
        faces
    }
}

/// The state the indexer thread shares with the engine.
struct Shared {
    galleries: RwLock<BTreeMap<String, Arc<GalleryHandle>>>,
}

pub struct Engine {
    config: EngineConfig,
    schema: RwLock<Arc<Schema>>,
    shared: Arc<Shared>,
    /// Faces stored, plus those that checked adds will store: what the memory limit counts.
    faces: AtomicU64,
    /// Serialises gallery creates and deletes from their check until they are applied.
    ddl: Arc<Mutex<()>>,
    /// The index of the last log entry applied.
    applied: AtomicU64,
    indexing: AtomicBool,
}

impl Engine {
    /// An empty engine. Recovery fills it ([`restore`](Self::restore), [`apply`](Self::apply))
    /// before writes are taken; [`start_indexer`](Self::start_indexer) starts building graphs.
    pub fn new(schema: Schema, config: EngineConfig) -> Engine {
        Engine {
            config,
            schema: RwLock::new(Arc::new(schema)),
            shared: Arc::new(Shared { galleries: RwLock::new(BTreeMap::new()) }),
            faces: AtomicU64::new(0),
            ddl: Arc::new(Mutex::new(())),
            applied: AtomicU64::new(0),
            indexing: AtomicBool::new(false),
        }
    }

    /// Starts the background thread that builds and extends the galleries' graphs (once).
    pub fn start_indexer(&self) {
        if !self.indexing.swap(true, Ordering::SeqCst) {
            indexer::start(Arc::downgrade(&self.shared));
        }
    }

    /// The schema faces are stored in.
    pub fn schema(&self) -> Arc<Schema> {
        self.schema.read().clone()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The index of the last log entry applied (0: none).
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// Faces stored (and about to be): what the memory limit counts.
    pub fn counted_faces(&self) -> u64 {
        self.faces.load(Ordering::Relaxed)
    }

    /// The estimated bytes of the stored faces (see [`face_bytes`]).
    pub fn memory_used(&self) -> u64 {
        self.counted_faces() * face_bytes(&self.schema(), self.config.facen_size)
    }

    fn gallery(&self, name: &str) -> Result<Arc<GalleryHandle>> {
        check_gallery_name(name)?;
        self.shared.galleries.read().get(name).cloned().ok_or_else(|| Error::GalleryNotFound(name.to_owned()))
    }

    /// Checks a write against the state as it will be once the writes already checked are
    /// applied. A write that passes is queued for the log while the returned [`Checked`] is
    /// held; one refused changes nothing.
    pub fn check(&self, op: &Op) -> Result<Checked> {
        let mut checked = Checked { galleries: None, writer: None };
        match op {
            Op::Configure { schema, facen_size } => {
                self.check_facen_size(*facen_size)?;
                Schema::from_yaml(schema, "the new schema").map_err(Error::Unfit)?;
            }
            Op::CreateGallery { name } | Op::CreateIndexedGallery { name, .. } => {
                check_gallery_name(name)?;
                checked.galleries = Some(self.ddl.lock_arc());
                if self.shared.galleries.read().contains_key(name) {
                    return Err(Error::GalleryExists(name.clone()));
                }
            }
            Op::DeleteGallery { name } => {
                checked.galleries = Some(self.ddl.lock_arc());
                let handle = self.gallery(name)?;
                checked.writer = Some(handle.writer(name)?);
                handle.deleted.store(true, Ordering::SeqCst);
            }
            Op::AddFaces { gallery, faces } => {
                let handle = self.gallery(gallery)?;
                let mut pending = handle.writer(gallery)?;
                check::check_add(&handle.state.read(), faces, &pending)?;
                self.reserve(faces.len())?;
                pending.mark(faces.iter().map(|f| f.id), true);
                checked.writer = Some(pending);
            }
            Op::UpdateFaces { gallery, updates } => {
                let handle = self.gallery(gallery)?;
                let pending = handle.writer(gallery)?;
                check::check_update(&handle.state.read(), updates, &pending)?;
                checked.writer = Some(pending);
            }
            Op::DeleteFaces { gallery, ids } => {
                let handle = self.gallery(gallery)?;
                let mut pending = handle.writer(gallery)?;
                check::check_delete(&handle.state.read(), ids, &pending)?;
                pending.mark(ids.iter().copied(), false);
                checked.writer = Some(pending);
            }
        }
        Ok(checked)
    }

    /// Undoes what [`check`](Self::check) reserved for a write that was not logged (the log
    /// failed): its pending marks, its memory, a gallery's delete mark.
    pub fn abandon(&self, op: &Op) {
        match op {
            Op::AddFaces { gallery, faces } => {
                if let Ok(handle) = self.gallery(gallery) {
                    handle.writer.lock().settle(faces.iter().map(|f| f.id));
                }
                self.faces.fetch_sub(faces.len() as u64, Ordering::Relaxed);
            }
            Op::DeleteFaces { gallery, ids } => {
                if let Ok(handle) = self.gallery(gallery) {
                    handle.writer.lock().settle(ids.iter().copied());
                }
            }
            Op::DeleteGallery { name } => {
                if let Ok(handle) = self.gallery(name) {
                    handle.deleted.store(false, Ordering::SeqCst);
                }
            }
            Op::Configure { .. }
            | Op::CreateGallery { .. }
            | Op::CreateIndexedGallery { .. }
            | Op::UpdateFaces { .. } => {}
        }
    }

    /// Applies the logged op of entry `index`: the only change to the galleries, live (in log
    /// order, on the commit thread) and at recovery. Refuses an op that does not fit the state
    /// (checked as [`check`](Self::check) does, without pending writes), changing nothing.
    pub fn apply(&self, index: u64, op: Op) -> Result<Applied> {
        let applied = match op {
            Op::Configure { schema, facen_size } => {
                self.check_facen_size(facen_size)?;
                let schema = Schema::from_yaml(&schema, "the logged schema").map_err(Error::Unfit)?;
                self.set_schema(schema);
                Applied::Done
            }
            Op::CreateGallery { name } => self.create(name, IndexOverrides::default())?,
            Op::CreateIndexedGallery { name, index } => self.create(name, index)?,
            Op::DeleteGallery { name } => {
                self.gallery(&name)?;
                if let Some(handle) = self.shared.galleries.write().remove(&name) {
                    self.faces.fetch_sub(handle.state.read().len() as u64, Ordering::Relaxed);
                }
                Applied::Done
            }
            Op::AddFaces { gallery, faces } => {
                let handle = self.gallery(&gallery)?;
                check::check_add(&handle.state.read(), &faces, Pending::none())?;
                for slice in faces.chunks(WRITE_SLICE) {
                    handle.insert(slice);
                }
                // A checked add counted its faces already; a replayed one did not.
                let reserved = handle.writer.lock().settle(faces.iter().map(|f| f.id));
                self.faces.fetch_add((faces.len() - reserved) as u64, Ordering::Relaxed);
                Applied::Done
            }
            Op::UpdateFaces { gallery, updates } => {
                let handle = self.gallery(&gallery)?;
                check::check_update(&handle.state.read(), &updates, Pending::none())?;
                let mut faces = Vec::with_capacity(updates.len());
                for slice in updates.chunks(WRITE_SLICE) {
                    faces.extend(handle.update(slice));
                }
                Applied::Updated(faces)
            }
            Op::DeleteFaces { gallery, ids } => {
                let handle = self.gallery(&gallery)?;
                check::check_delete(&handle.state.read(), &ids, Pending::none())?;
                for slice in ids.chunks(WRITE_SLICE) {
                    let removed = handle.remove(slice);
                    self.faces.fetch_sub(removed as u64, Ordering::Relaxed);
                }
                handle.writer.lock().settle(ids.iter().copied());
                Applied::Done
            }
        };
        self.applied.store(index, Ordering::SeqCst);
        Ok(applied)
    }

    /// An entry with nothing for the engine was applied at `index` (a Raft leader's empty
    /// first entry, a membership change): only the applied index moves.
    pub fn skip(&self, index: u64) {
        self.applied.store(index, Ordering::SeqCst);
    }

    fn check_facen_size(&self, facen_size: u64) -> Result<()> {
        if facen_size != self.config.facen_size as u64 {
            return Err(Error::Unfit(format!(
                "the log changes the facen size to {facen_size}; this database has {}",
                self.config.facen_size
            )));
        }
        Ok(())
    }

    fn set_schema(&self, schema: Schema) {
        let schema = Arc::new(schema);
        for handle in self.shared.galleries.read().values() {
            handle.state.write().reshape(schema.clone());
        }
        *self.schema.write() = schema;
    }

    fn create(&self, name: String, overrides: IndexOverrides) -> Result<Applied> {
        check_gallery_name(&name)?;
        let mut galleries = self.shared.galleries.write();
        if galleries.contains_key(&name) {
            return Err(Error::GalleryExists(name));
        }
        let gallery = Gallery::new(self.schema(), self.config.facen_size);
        let index = GalleryIndex::new(self.config.facen_size, self.config.index, overrides);
        galleries.insert(name, GalleryHandle::new(gallery, index));
        Ok(Applied::Done)
    }

    /// Puts back a whole gallery (from a snapshot at `index`) while recovering.
    pub fn restore(&self, index: u64, name: &str, gallery: Gallery, overrides: IndexOverrides) -> Result<()> {
        check_gallery_name(name)?;
        let mut galleries = self.shared.galleries.write();
        if galleries.contains_key(name) {
            return Err(Error::Unfit(format!("gallery {name:?} appears twice")));
        }
        self.faces.fetch_add(gallery.len() as u64, Ordering::Relaxed);
        let graph = GalleryIndex::new(self.config.facen_size, self.config.index, overrides);
        galleries.insert(name.to_owned(), GalleryHandle::new(gallery, graph));
        self.applied.store(index, Ordering::SeqCst);
        Ok(())
    }

    /// The chunks of every gallery as they are now: what a snapshot writes. The node loop
    /// takes them between two rounds of writes, when every entry up to
    /// [`applied_index`](Self::applied_index) is applied and no later one.
    pub fn images(&self) -> Vec<GalleryImage> {
        let galleries = self.shared.galleries.read();
        galleries
            .iter()
            .map(|(name, handle)| GalleryImage {
                name: name.clone(),
                index: handle.index.overrides(),
                chunks: handle.state.read().snapshot(),
            })
            .collect()
    }

    /// Counts `faces` more against the memory limit, or refuses with 507.
    fn reserve(&self, faces: usize) -> Result<()> {
        let Some(limit) = self.config.memory_limit else {
            self.faces.fetch_add(faces as u64, Ordering::Relaxed);
            return Ok(());
        };
        let per_face = face_bytes(&self.schema(), self.config.facen_size);
        self.faces
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                now.checked_add(faces as u64).filter(|&total| total.saturating_mul(per_face) <= limit)
            })
            .map(drop)
            .map_err(|now| Error::MemoryLimit {
                message: format!(
                    "memory limit: adding {faces} faces would take the {now} faces stored to about {} bytes, \
                     over the {limit} bytes of --memory-limit (about {per_face} bytes a face); \
                     delete faces or raise the limit",
                    (now + faces as u64) * per_face
                ),
                limit,
            })
    }

    /// The number of faces in a gallery.
    pub fn gallery_size(&self, name: &str) -> Result<usize> {
        Ok(self.gallery(name)?.state.read().len())
    }

    /// All galleries in name order.
    pub fn list_galleries(&self) -> Vec<GalleryInfo> {
        let galleries: Vec<(String, Arc<GalleryHandle>)> =
            self.shared.galleries.read().iter().map(|(name, g)| (name.clone(), g.clone())).collect();
        galleries.into_iter().map(|(name, g)| GalleryInfo { name, faces: g.state.read().len() }).collect()
    }

    pub fn get_face(&self, name: &str, id: u64) -> Result<Face> {
        self.gallery(name)?.state.read().get(id).ok_or(Error::FaceNotFound(id))
    }

    /// Runs a search the way the planner chooses (see `search::planner`); returns the hits and
    /// the plan.
    pub fn search(&self, name: &str, query: &Query) -> Result<(Vec<Hit>, Plan)> {
        let handle = self.gallery(name)?;
        let gallery = handle.state.read();
        let snapshot = gallery.snapshot();
        // An id `set` smaller than the gallery: look the faces up instead of scanning.
        if let Some(ids) = query.id_set().filter(|ids| ids.len() < gallery.len()) {
            let mut found: Vec<(u32, u32)> =
                ids.iter().filter_map(|&id| gallery.locate(id)).map(|at| (at.chunk, at.row)).collect();
            drop(gallery);
            found.sort_unstable();
            let hits = search::run(&snapshot, query, Some(&group_by_chunk(&found)));
            return Ok((hits, Plan::Exact("an id set")));
        }
        let view = handle.index.view();
        let filters = LazyFilters::new(&snapshot, &query.conditions);
        let situation = Situation {
            faces: gallery.len(),
            tail: view.as_ref().map(|v| v.tail.len()),
            ef_search: view.as_ref().map_or(0, |v| v.params.ef_search),
            scan_rows: handle.index.settings().min_faces,
        };
        let plan = planner::plan(query, &situation, || filters.passing_share());
        let rows = match (plan, &view, &query.facen) {
            (Plan::Index { ef }, Some(view), Some(facen)) => {
                Some(candidates(&gallery, &filters, view, &facen.vector, ef, !query.conditions.is_empty()))
            }
            _ => None,
        };
        drop(gallery);
        let hits = match rows {
            Some(rows) => search::run(&snapshot, query, Some(&group_by_chunk(&rows))),
            None => search::run(&snapshot, query, None),
        };
        Ok((hits, plan))
    }

    /// A gallery's index parameters, and its graph's figures once it has one.
    pub fn index_status(&self, name: &str) -> Result<IndexStatus> {
        Ok(self.gallery(name)?.index.status())
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
            assert!(
                matches!(check_gallery_name(bad), Err(Error::Invalid { ref param, .. }) if param == "name"),
                "{bad:?}"
            );
        }
        for good in ["testgal", "123", "A_b-9", &"x".repeat(64)] {
            assert!(check_gallery_name(good).is_ok(), "{good:?}");
        }
    }
}
