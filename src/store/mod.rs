//! The storage engine of a shard: named galleries of faces held in memory, changed through
//! the write-ahead log.
//!
//! [`Engine`] is what the HTTP API and the bench harness call. It owns the galleries and the
//! schema and facen size every gallery shares. A write goes:
//!
//! 1. **encode** the operation for the log, in the calling thread (no lock held);
//! 2. take the gallery's **writer mutex** and **check** the write against the gallery as it
//!    will be once the writes already logged are applied (the [`Pending`] overlay), and against
//!    the memory limit;
//! 3. **submit** it to the log with the closure that applies it, and release the mutex;
//! 4. **wait**: the log thread writes (and in `fsync` mode syncs) a whole round of writes at
//!    once, then applies them in log order, then answers.
//!
//! So concurrent writers, to one gallery or to many, share fsyncs; memory changes in log order;
//! and no reader sees a write before it is durable. A write applies to a gallery one slice of
//! [`WRITE_SLICE`] faces at a time under the gallery's RwLock, which a search takes only long
//! enough to take a snapshot (see `gallery.rs`): a large batch never keeps searches waiting for
//! more than one slice. A search may see a batch partly applied, never one that is refused.
//!
//! Gallery create and delete are serialised by one mutex; a gallery being deleted refuses new
//! face writes at once (404), and the writes logged before its delete are applied before it.
//! [`Engine::replay`] applies logged entries at start, without logging them again.

pub mod chunk;
pub mod column;
pub mod gallery;
#[cfg(test)]
mod index_tests;
mod indexer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, ErrorKind, Result};
use crate::index::gallery_index::{GalleryIndex, IndexOverrides, IndexSettings, IndexStatus};
use crate::index::planner::{self, Plan, Situation};
use crate::index::search::{candidates, LazyFilters};
use crate::schema::{FieldType, Schema};
use crate::search::{self, Hit, Query};
use crate::snapshot::GalleryImage;
use crate::wal::codec::{encode_op_ref, OpRef};
use crate::wal::writer::{Waiter, Wal, WalConfig};
use crate::wal::{Entry, Op};
pub use chunk::Face;
pub use gallery::{FaceUpdate, Gallery, Pending, Snapshot};

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

/// A gallery and its locks.
struct GalleryHandle {
    /// Serialises the checks of writes to this gallery; holds what they will change.
    writer: Mutex<Pending>,
    state: RwLock<Gallery>,
    /// Set when a delete of the gallery is logged: later writes get 404.
    deleted: AtomicBool,
    /// The graph and the faces not in it yet; follows `state` (changed under its write lock).
    index: GalleryIndex,
}

impl GalleryHandle {
    fn new(gallery: Gallery, index: GalleryIndex) -> Arc<GalleryHandle> {
        Arc::new(GalleryHandle {
            writer: Mutex::new(Pending::default()),
            state: RwLock::new(gallery),
            deleted: AtomicBool::new(false),
            index,
        })
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

    /// Faces whose vector an update changed: the graph must see them again.
    fn revectored(&self, updates: &[FaceUpdate]) {
        let changed: Vec<u64> = updates.iter().filter(|u| u.vector.is_some()).map(|u| u.id).collect();
        if !changed.is_empty() {
            self.index.removed(&changed);
            self.index.added(changed.into_iter());
        }
    }
}

/// What the log thread's apply closures change.
struct Shared {
    facen_size: usize,
    schema: RwLock<Arc<Schema>>,
    galleries: RwLock<BTreeMap<String, Arc<GalleryHandle>>>,
    /// Faces stored, plus those that logged adds will store: what the memory limit counts.
    faces: AtomicU64,
    index: IndexSettings,
}

impl Shared {
    fn set_schema(&self, schema: Schema) {
        let schema = Arc::new(schema);
        for handle in self.galleries.read().values() {
            handle.state.write().reshape(schema.clone());
        }
        *self.schema.write() = schema;
    }
}

pub struct Engine {
    config: EngineConfig,
    shared: Arc<Shared>,
    log: OnceLock<Wal>,
    /// Serialises gallery create and delete.
    ddl: Mutex<()>,
}

impl Engine {
    /// An engine whose writes are kept in memory only (a log in mode `none`).
    pub fn new(schema: Schema, config: EngineConfig) -> Result<Engine> {
        let engine = Engine::recovering(schema, config);
        engine.start_log(Wal::open(WalConfig::in_memory(), 1, 1).map_err(Error::internal)?)?;
        Ok(engine)
    }

    /// An engine that takes no writes until [`start_log`](Self::start_log): recovery fills it
    /// with [`replay`](Self::replay) and [`insert_gallery`](Self::insert_gallery) first.
    pub fn recovering(schema: Schema, config: EngineConfig) -> Engine {
        let shared = Shared {
            facen_size: config.facen_size,
            schema: RwLock::new(Arc::new(schema)),
            galleries: RwLock::new(BTreeMap::new()),
            faces: AtomicU64::new(0),
            index: config.index,
        };
        Engine { config, shared: Arc::new(shared), log: OnceLock::new(), ddl: Mutex::new(()) }
    }

    /// Writes go through `log` from now on, and the indexer starts building graphs.
    pub fn start_log(&self, log: Wal) -> Result<()> {
        self.log.set(log).map_err(|_| Error::internal("the engine's log is already started"))?;
        indexer::start(Arc::downgrade(&self.shared));
        Ok(())
    }

    pub fn log(&self) -> Result<&Wal> {
        self.log.get().ok_or_else(|| Error::internal("the database is still starting: writes are not open yet"))
    }

    /// The schema faces are stored in.
    pub fn schema(&self) -> Arc<Schema> {
        self.shared.schema.read().clone()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Faces stored (and about to be): what the memory limit counts.
    pub fn counted_faces(&self) -> u64 {
        self.shared.faces.load(Ordering::Relaxed)
    }

    /// The estimated bytes of the stored faces (see [`face_bytes`]).
    pub fn memory_used(&self) -> u64 {
        self.counted_faces() * face_bytes(&self.schema(), self.config.facen_size)
    }

    fn gallery(&self, name: &str) -> Result<Arc<GalleryHandle>> {
        check_gallery_name(name)?;
        self.shared.galleries.read().get(name).cloned().ok_or_else(|| Error::gallery_not_found(name))
    }

    /// Submits a checked write to the log; returns its waiter.
    fn submit(&self, op: OpRef<'_>, apply: impl FnOnce() + Send + 'static) -> Result<Waiter> {
        let payload = encode_op_ref(op).map_err(Error::internal)?;
        Ok(self.log()?.submit(payload, Box::new(move |_| apply())))
    }

    /// Counts `faces` more against the memory limit, or refuses with 507.
    fn reserve(&self, faces: usize) -> Result<()> {
        let Some(limit) = self.config.memory_limit else {
            self.shared.faces.fetch_add(faces as u64, Ordering::Relaxed);
            return Ok(());
        };
        let per_face = face_bytes(&self.schema(), self.config.facen_size);
        self.shared
            .faces
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                now.checked_add(faces as u64).filter(|&total| total.saturating_mul(per_face) <= limit)
            })
            .map(drop)
            .map_err(|now| {
                Error::new(
                    507,
                    ErrorKind::InsufficientStorage,
                    format!(
                        "memory limit: adding {faces} faces would take the {now} faces stored to about {} bytes, \
                         over the {limit} bytes of --memory-limit (about {per_face} bytes a face); \
                         delete faces or raise the limit",
                        (now + faces as u64) * per_face
                    ),
                )
                .with_param("memory_limit")
                .with_value(limit)
            })
    }

    pub fn create_gallery(&self, name: &str) -> Result<()> {
        self.create_indexed_gallery(name, IndexOverrides::default())
    }

    /// Creates a gallery whose index takes `index`'s parameters instead of the server's (the
    /// caller checked them).
    pub fn create_indexed_gallery(&self, name: &str, index: IndexOverrides) -> Result<()> {
        check_gallery_name(name)?;
        let _ddl = self.ddl.lock();
        if self.shared.galleries.read().contains_key(name) {
            return Err(Error::conflict("gallery already exists").with_param("name").with_value(name));
        }
        let (shared, owned) = (self.shared.clone(), name.to_owned());
        let op =
            if index.is_empty() { OpRef::CreateGallery { name } } else { OpRef::CreateIndexedGallery { name, index } };
        let waiter = self.submit(op, move || shared.create(owned, index))?;
        acknowledged(waiter)
    }

    pub fn delete_gallery(&self, name: &str) -> Result<()> {
        let _ddl = self.ddl.lock();
        let handle = self.gallery(name)?;
        let waiter = {
            let _writer = handle.writer.lock();
            handle.deleted.store(true, Ordering::SeqCst);
            let (shared, owned) = (self.shared.clone(), name.to_owned());
            self.submit(OpRef::DeleteGallery { name }, move || shared.delete(&owned))
                .inspect_err(|_| handle.deleted.store(false, Ordering::SeqCst))?
        };
        acknowledged(waiter)
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

    /// Takes a gallery's writer mutex for a write: refuses if its delete is logged.
    fn writer<'a>(name: &str, handle: &'a GalleryHandle) -> Result<parking_lot::MutexGuard<'a, Pending>> {
        let pending = handle.writer.lock();
        if handle.deleted.load(Ordering::SeqCst) {
            return Err(Error::gallery_not_found(name));
        }
        Ok(pending)
    }

    /// Adds faces, all or none. Vectors must have `facen_size` components and meta one
    /// value per schema field, of its type (the wire layer builds them so).
    pub fn add_faces(&self, name: &str, faces: Vec<Face>) -> Result<()> {
        let handle = self.gallery(name)?;
        let log = self.log()?;
        let waiter = {
            let mut pending = Engine::writer(name, &handle)?;
            handle.state.read().check_add(&faces, &pending)?;
            self.reserve(faces.len())?;
            let ticket = pending.mark(faces.iter().map(|f| f.id), true);
            let payload = encode_op_ref(OpRef::AddFaces { gallery: name, faces: &faces });
            let payload = payload.inspect_err(|_| self.unreserve(faces.len())).map_err(Error::internal)?;
            let target = handle.clone();
            log.submit(
                payload,
                Box::new(move |_| {
                    for slice in faces.chunks(WRITE_SLICE) {
                        target.insert(slice);
                    }
                    target.writer.lock().settle(faces.iter().map(|f| f.id), ticket);
                }),
            )
        };
        acknowledged(waiter)
    }

    fn unreserve(&self, faces: usize) {
        self.shared.faces.fetch_sub(faces as u64, Ordering::Relaxed);
    }

    /// Deletes faces, all or none (an id given twice is deleted once).
    pub fn delete_faces(&self, name: &str, ids: Vec<u64>) -> Result<()> {
        let handle = self.gallery(name)?;
        let log = self.log()?;
        let waiter = {
            let mut pending = Engine::writer(name, &handle)?;
            handle.state.read().check_delete(&ids, &pending)?;
            let ticket = pending.mark(ids.iter().copied(), false);
            let payload = encode_op_ref(OpRef::DeleteFaces { gallery: name, ids: &ids }).map_err(Error::internal)?;
            let (target, shared) = (handle.clone(), self.shared.clone());
            log.submit(
                payload,
                Box::new(move |_| {
                    for slice in ids.chunks(WRITE_SLICE) {
                        let removed = target.remove(slice);
                        shared.faces.fetch_sub(removed as u64, Ordering::Relaxed);
                    }
                    target.writer.lock().settle(ids.iter().copied(), ticket);
                }),
            )
        };
        acknowledged(waiter)
    }

    /// Updates faces, all or none; returns them as they are now, in request order.
    pub fn update_faces(&self, name: &str, updates: Vec<FaceUpdate>) -> Result<Vec<Face>> {
        let handle = self.gallery(name)?;
        let log = self.log()?;
        let (result, updated) = mpsc::sync_channel(1);
        let waiter = {
            let pending = Engine::writer(name, &handle)?;
            handle.state.read().check_update(&updates, &pending)?;
            let payload =
                encode_op_ref(OpRef::UpdateFaces { gallery: name, updates: &updates }).map_err(Error::internal)?;
            let target = handle.clone();
            log.submit(
                payload,
                Box::new(move |_| {
                    let mut faces = Vec::with_capacity(updates.len());
                    for slice in updates.chunks(WRITE_SLICE) {
                        let mut state = target.state.write();
                        faces.extend(state.apply(slice));
                        target.revectored(slice);
                    }
                    let _ = result.send(faces);
                }),
            )
        };
        acknowledged(waiter)?;
        updated.recv().map_err(|_| Error::internal("an applied update did not return its faces"))
    }

    /// Logs a new schema that only adds fields to the current one (the caller checked), and
    /// gives every stored face the new fields' defaults.
    pub fn change_schema(&self, schema: Schema) -> Result<()> {
        let text = schema.to_yaml();
        let shared = self.shared.clone();
        let op = OpRef::Configure { schema: &text, facen_size: self.config.facen_size as u64 };
        acknowledged(self.submit(op, move || shared.set_schema(schema))?)
    }

    /// Logs the schema and facen size of a new database.
    pub fn record_configuration(&self) -> Result<()> {
        let text = self.schema().to_yaml();
        let op = OpRef::Configure { schema: &text, facen_size: self.config.facen_size as u64 };
        acknowledged(self.submit(op, || {})?)
    }

    /// Applies a logged entry at start. Faces are checked as when they were first written; a
    /// failing check means the log does not fit the state it is replayed onto.
    pub fn replay(&self, entry: &Entry) -> Result<()> {
        match &entry.op {
            Op::Configure { schema, facen_size } => {
                if *facen_size != self.config.facen_size as u64 {
                    return Err(Error::internal(format!(
                        "the log changes the facen size to {facen_size}; this database has {}",
                        self.config.facen_size
                    )));
                }
                self.shared.set_schema(Schema::from_yaml(schema, "the logged schema").map_err(Error::internal)?);
            }
            Op::CreateGallery { name } => self.replay_create(name, IndexOverrides::default())?,
            Op::CreateIndexedGallery { name, index } => self.replay_create(name, *index)?,
            Op::DeleteGallery { name } => {
                self.gallery(name)?;
                self.shared.delete(name);
            }
            Op::AddFaces { gallery, faces } => {
                let handle = self.gallery(gallery)?;
                handle.state.write().add(faces)?;
                handle.index.added(faces.iter().map(|f| f.id));
                self.shared.faces.fetch_add(faces.len() as u64, Ordering::Relaxed);
            }
            Op::UpdateFaces { gallery, updates } => {
                let handle = self.gallery(gallery)?;
                handle.state.write().update(updates)?;
                handle.revectored(updates);
            }
            Op::DeleteFaces { gallery, ids } => {
                let handle = self.gallery(gallery)?;
                let mut state = handle.state.write();
                state.check_delete(ids, &Pending::default())?;
                let removed = state.remove(ids);
                handle.index.removed(ids);
                self.shared.faces.fetch_sub(removed as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn replay_create(&self, name: &str, index: IndexOverrides) -> Result<()> {
        if self.shared.galleries.read().contains_key(name) {
            return Err(Error::conflict("gallery already exists").with_param("name").with_value(name));
        }
        self.shared.create(name.to_owned(), index);
        Ok(())
    }

    /// Adds a whole gallery (loaded from a snapshot) while recovering.
    pub fn insert_gallery(&self, name: &str, gallery: Gallery, index: IndexOverrides) -> Result<()> {
        check_gallery_name(name)?;
        let mut galleries = self.shared.galleries.write();
        if galleries.contains_key(name) {
            return Err(Error::conflict("gallery appears twice").with_param("name").with_value(name));
        }
        self.shared.faces.fetch_add(gallery.len() as u64, Ordering::Relaxed);
        let index = GalleryIndex::new(self.config.facen_size, self.shared.index, index);
        galleries.insert(name.to_owned(), GalleryHandle::new(gallery, index));
        Ok(())
    }

    /// The chunks of every gallery at the point between two log rounds where every write up to
    /// the returned index is applied and no later one: what a snapshot writes. With a log in a
    /// file, the log also starts a new segment there.
    pub fn checkpoint(&self) -> Result<(u64, Vec<GalleryImage>)> {
        let (sender, images) = mpsc::sync_channel(1);
        let shared = self.shared.clone();
        let waiter = self.log()?.barrier(
            true,
            Box::new(move |_| {
                let galleries = shared.galleries.read();
                let taken: Vec<GalleryImage> = galleries
                    .iter()
                    .map(|(name, handle)| GalleryImage {
                        name: name.clone(),
                        index: handle.index.overrides(),
                        chunks: handle.state.read().snapshot(),
                    })
                    .collect();
                let _ = sender.send(taken);
            }),
        );
        let index = waiter.wait().map_err(|e| Error::internal(format!("write-ahead log: {e}")))?;
        let taken = images.recv().map_err(|_| Error::internal("the checkpoint did not run"))?;
        Ok((index, taken))
    }

    pub fn get_face(&self, name: &str, id: u64) -> Result<Face> {
        self.gallery(name)?.state.read().get(id).ok_or_else(|| Error::face_not_found(id))
    }

    /// Runs a search the way the planner chooses (see `index::planner`); returns the hits and
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

impl Shared {
    fn create(&self, name: String, overrides: IndexOverrides) {
        let gallery = Gallery::new(self.schema.read().clone(), self.facen_size);
        let index = GalleryIndex::new(self.facen_size, self.index, overrides);
        self.galleries.write().insert(name, GalleryHandle::new(gallery, index));
    }

    fn delete(&self, name: &str) {
        if let Some(handle) = self.galleries.write().remove(name) {
            self.faces.fetch_sub(handle.state.read().len() as u64, Ordering::Relaxed);
        }
    }
}

/// Waits for a submitted write; a log failure is a 500 that names the log.
fn acknowledged(waiter: Waiter) -> Result<()> {
    waiter.wait().map(drop).map_err(|e| Error::internal(format!("write-ahead log: {e}")))
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
    use crate::schema::MetaValue;
    use crate::wal::recover::{read_log, ReadOptions};
    use crate::wal::WalMode;

    fn schema() -> Schema {
        Schema::from_yaml("- {id: 1, name: cam, field_type: string}\n", "test").unwrap()
    }

    fn config() -> EngineConfig {
        EngineConfig { facen_size: 2, ..EngineConfig::default() }
    }

    /// Many threads racing on the same few ids: whatever the log accepted replays onto a fresh
    /// engine without a refusal, to the same faces. That holds only if every write was checked
    /// against the writes logged before it and memory changed in log order.
    #[test]
    fn racing_writers_leave_a_log_that_replays_to_the_same_state() {
        let temp = crate::test_dir::TestDir::new("engine-race");
        let dir = temp.0.clone();
        let engine = Arc::new(Engine::recovering(schema(), config()));
        let wal = WalConfig { dir: dir.clone(), mode: WalMode::Write, segment_bytes: 1 << 20 };
        engine.start_log(Wal::open(wal, 1, 1).unwrap()).unwrap();
        engine.create_gallery("g").unwrap();
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let engine = engine.clone();
                std::thread::spawn(move || {
                    let mut x = t * 7919 + 1;
                    let mut accepted = 0;
                    for _ in 0..300 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let id = x % 12;
                        let face = |id: u64| Face {
                            id,
                            vector: vec![id as f32, t as f32],
                            meta: vec![MetaValue::String(format!("t{t}"))],
                        };
                        let result = match (x >> 32) % 3 {
                            0 => engine.add_faces("g", vec![face(id), face(id + 100)]),
                            1 => engine.delete_faces("g", vec![id, id + 100]),
                            _ => {
                                let update = FaceUpdate { id, vector: Some(vec![1.0, t as f32]), meta: vec![] };
                                engine.update_faces("g", vec![update]).map(drop)
                            }
                        };
                        accepted += u32::from(result.is_ok());
                    }
                    accepted
                })
            })
            .collect();
        let accepted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(accepted > 100, "only {accepted} writes were accepted: the race did not happen");
        let log = read_log(&dir, &ReadOptions::default()).unwrap();
        let replayed = Engine::recovering(schema(), config());
        for entry in &log.entries {
            replayed.replay(entry).unwrap_or_else(|e| panic!("entry {}: {}", entry.index, e.message));
        }
        let faces = |engine: &Engine| {
            let mut all: Vec<Face> = (0..112).filter_map(|id| engine.get_face("g", id).ok()).collect();
            all.sort_by_key(|f| f.id);
            all
        };
        assert_eq!(faces(&replayed), faces(&engine));
        assert_eq!(replayed.counted_faces(), engine.counted_faces());
    }

    #[test]
    fn an_add_past_the_memory_limit_is_refused_whole() {
        let per_face = face_bytes(&schema(), 2);
        let engine = Engine::new(schema(), EngineConfig { memory_limit: Some(per_face * 3), ..config() }).unwrap();
        engine.create_gallery("g").unwrap();
        let face = |id| Face { id, vector: vec![1.0, 0.0], meta: vec![MetaValue::String(String::new())] };
        engine.add_faces("g", vec![face(1), face(2)]).unwrap();
        let refused = engine.add_faces("g", vec![face(3), face(4)]).unwrap_err();
        assert_eq!((refused.code, refused.param.as_deref()), (507, Some("memory_limit")));
        assert_eq!(engine.gallery_size("g").unwrap(), 2);
        engine.add_faces("g", vec![face(3)]).unwrap();
        engine.delete_faces("g", vec![1]).unwrap();
        engine.add_faces("g", vec![face(4)]).unwrap();
        assert_eq!(engine.memory_used(), per_face * 3);
    }

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
