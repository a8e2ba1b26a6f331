//! A gallery's index: its graph, the faces not in the graph yet (the tail), and how the two
//! follow the gallery's writes.
//!
//! The gallery stays the truth: a search re-ranks whatever the graph proposes with the
//! gallery's own vectors and metadata, under the gallery's read lock, so a face deleted or
//! changed since the graph saw it can never come back stale (see `engine::Engine::search`). What
//! the index must guarantee is completeness: **every face of the gallery is either a live node
//! of the graph with its current vector, or in the tail**, which searches score exactly.
//!
//! - **Writes** call [`GalleryIndex::added`] and [`GalleryIndex::removed`] from the commit
//!   thread (`Engine::apply`), under the gallery's write lock: an added face (or a changed vector) enters the tail with a
//!   fresh sequence number; a deleted one leaves the tail and becomes a tombstone in the graph.
//!   Both are a hash-map operation: writes never wait for the graph.
//! - **The indexer** (one background thread per engine, `store`) calls [`GalleryIndex::step`]:
//!   it moves up to [`STEP_FACES`] faces from the tail into the graph (in parallel on the rayon
//!   pool), then takes them off the tail only if their sequence number is unchanged, so a face
//!   changed or deleted meanwhile is not lost. Under a steady write load the tail therefore
//!   stays around one step's worth of faces.
//! - **Builds**: the first time a gallery reaches `min_faces`, and whenever tombstones pass
//!   `rebuild_share` of the graph, a new graph is built from a copy of the gallery taken under
//!   its read lock, without holding any lock, while searches go on with the old one (or with
//!   exact scans when there is none). Deletes that arrive meanwhile are recorded and applied to
//!   the new graph before it is swapped in.
//! - **Growth**: a graph has a fixed capacity; a step that needs more copies it into one twice
//!   as large and swaps the copy in.
//!
//! Lock order: gallery → tail → removals → graph.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;

use super::graph::{Graph, GraphParams};
use crate::store::Gallery;

/// Faces moved from the tail into the graph per step.
pub const STEP_FACES: usize = 5_000;
/// Inserts of a step or build run in parallel from this many faces on.
const PARALLEL_FACES: usize = 256;

/// The shape of a gallery's graph and the width of its searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexParams {
    /// Links per node (`M`; layer 0 keeps `2·M`).
    pub m: usize,
    /// Candidates weighed when a face is linked.
    pub ef_construction: usize,
    /// Candidates a search collects before the exact re-rank.
    pub ef_search: usize,
}

impl Default for IndexParams {
    fn default() -> Self {
        IndexParams { m: 32, ef_construction: 200, ef_search: 128 }
    }
}

impl IndexParams {
    /// Checks the values a request or a flag gave; names the wrong one.
    pub fn check(&self) -> Result<(), (&'static str, usize, &'static str)> {
        if !(4..=128).contains(&self.m) {
            return Err(("m", self.m, "between 4 and 128"));
        }
        if !(8..=4096).contains(&self.ef_construction) {
            return Err(("ef_construction", self.ef_construction, "between 8 and 4096"));
        }
        if !(1..=10_000).contains(&self.ef_search) {
            return Err(("ef_search", self.ef_search, "between 1 and 10000"));
        }
        Ok(())
    }
}

/// The index parameters one gallery was created with (`POST /v2/galleries/add/:name` with a
/// body): each one given replaces the server's (`--index-m`, ...); the others follow the
/// server's, also after a restart with other flags. Logged with the gallery's creation and
/// kept in snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexOverrides {
    pub m: Option<usize>,
    pub ef_construction: Option<usize>,
    pub ef_search: Option<usize>,
}

impl IndexOverrides {
    pub fn is_empty(&self) -> bool {
        *self == IndexOverrides::default()
    }

    /// `base` with the values given here.
    pub fn apply(&self, base: IndexParams) -> IndexParams {
        IndexParams {
            m: self.m.unwrap_or(base.m),
            ef_construction: self.ef_construction.unwrap_or(base.ef_construction),
            ef_search: self.ef_search.unwrap_or(base.ef_search),
        }
    }
}

/// When a gallery gets a graph and when it is rebuilt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexSettings {
    pub params: IndexParams,
    /// A gallery gets a graph once it holds this many faces (smaller ones are scanned).
    pub min_faces: usize,
    /// The graph is rebuilt when this share of its nodes are tombstones.
    pub rebuild_share: f64,
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings { params: IndexParams::default(), min_faces: 20_000, rebuild_share: 0.2 }
    }
}

/// The faces not in the graph: id → sequence number of their last add, and the order to index
/// them in (entries whose number changed since are skipped).
#[derive(Default)]
struct Tail {
    /// Whether a graph exists or is being built: before that, every face is unindexed anyway.
    tracking: bool,
    faces: HashMap<u64, u64>,
    queue: VecDeque<(u64, u64)>,
    next: u64,
}

/// What a search uses: the graph and the faces it does not hold yet.
pub struct IndexView {
    pub graph: Arc<Graph>,
    pub tail: Vec<u64>,
    pub params: IndexParams,
}

/// Figures for the status endpoint.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct IndexStatus {
    /// The parameters in force (the server's, with the gallery's overrides).
    #[serde(flatten)]
    pub params: IndexParams,
    /// The gallery gets a graph from this many faces on (`--index-min-faces`).
    pub min_faces: usize,
    /// The parameters the gallery was created with, when any.
    #[serde(skip_serializing_if = "IndexOverrides::is_empty")]
    pub overrides: IndexOverrides,
    /// The graph's figures, once it has one.
    #[serde(flatten)]
    pub graph: Option<GraphStatus>,
}

/// A graph's figures.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GraphStatus {
    pub nodes: usize,
    pub live: usize,
    pub tombstones: usize,
    pub tail: usize,
    pub capacity: usize,
    /// Bytes of the graph per live face (codes, links, ids, flags; capacity included).
    pub bytes_per_face: usize,
    pub builds: u64,
}

pub struct GalleryIndex {
    /// The server's settings with the gallery's overrides applied.
    settings: IndexSettings,
    overrides: IndexOverrides,
    dim: usize,
    tail: Mutex<Tail>,
    /// While a build runs: the faces deleted since its copy was taken.
    removals: Mutex<Option<Vec<u64>>>,
    graph: RwLock<Option<Arc<Graph>>>,
    builds: AtomicU64,
}

impl GalleryIndex {
    pub fn new(dim: usize, server: IndexSettings, overrides: IndexOverrides) -> GalleryIndex {
        GalleryIndex {
            settings: IndexSettings { params: overrides.apply(server.params), ..server },
            overrides,
            dim,
            tail: Mutex::new(Tail::default()),
            removals: Mutex::new(None),
            graph: RwLock::new(None),
            builds: AtomicU64::new(0),
        }
    }

    pub fn settings(&self) -> IndexSettings {
        self.settings
    }

    pub fn overrides(&self) -> IndexOverrides {
        self.overrides
    }

    fn graph(&self) -> Option<Arc<Graph>> {
        self.graph.read().clone()
    }

    /// Faces written (added, or given a new vector): they go to the tail.
    pub fn added(&self, ids: impl Iterator<Item = u64>) {
        let mut tail = self.tail.lock();
        if !tail.tracking {
            return;
        }
        for id in ids {
            tail.next += 1;
            let seq = tail.next;
            tail.faces.insert(id, seq);
            tail.queue.push_back((id, seq));
        }
    }

    /// Faces deleted (or about to get a new vector): off the tail, tombstones in the graph.
    pub fn removed(&self, ids: &[u64]) {
        {
            let mut tail = self.tail.lock();
            if !tail.tracking {
                return;
            }
            for id in ids {
                tail.faces.remove(id);
            }
        }
        self.forget(ids);
    }

    fn forget(&self, ids: &[u64]) {
        let mut removals = self.removals.lock();
        if let Some(graph) = self.graph() {
            for &id in ids {
                graph.remove(id);
            }
        }
        if let Some(recorded) = removals.as_mut() {
            recorded.extend_from_slice(ids);
        }
    }

    /// Whether face `id` is in the tail or a live node of the graph: what every face of the
    /// gallery must be.
    pub fn holds(&self, id: u64) -> bool {
        self.tail.lock().faces.contains_key(&id) || self.graph().is_some_and(|graph| graph.holds(id))
    }

    /// The graph and the tail, for a search; `None` while there is no graph.
    pub fn view(&self) -> Option<IndexView> {
        // The tail first: a face leaves it only after it is in the graph read next.
        let tail: Vec<u64> = self.tail.lock().faces.keys().copied().collect();
        let graph = self.graph()?;
        Some(IndexView { graph, tail, params: self.settings.params })
    }

    pub fn status(&self) -> IndexStatus {
        let graph = self.graph().map(|graph| {
            let tail = self.tail.lock().faces.len();
            let live = graph.live();
            GraphStatus {
                nodes: graph.nodes(),
                live,
                tombstones: graph.dead(),
                tail,
                capacity: graph.capacity(),
                bytes_per_face: graph.bytes_per_slot() * graph.capacity() / live.max(1),
                builds: self.builds.load(Ordering::Relaxed),
            }
        });
        IndexStatus {
            params: self.settings.params,
            min_faces: self.settings.min_faces,
            overrides: self.overrides,
            graph,
        }
    }

    /// One unit of background work: a build when one is due, else a step of the tail.
    /// Returns whether there was work.
    pub fn step(&self, gallery: &RwLock<Gallery>) -> bool {
        let due = match self.graph() {
            None => gallery.read().len() >= self.settings.min_faces,
            Some(graph) => {
                graph.nodes() >= 1000 && graph.dead() as f64 > self.settings.rebuild_share * graph.nodes() as f64
            }
        };
        if due {
            self.build(gallery);
            return true;
        }
        self.index_tail(gallery)
    }

    /// Builds a new graph from the gallery's chunks as they are now and swaps it in. The chunks
    /// are copy-on-write: holding them costs no copy, and the gallery's lock is held only while
    /// taking them, not while the graph is built.
    fn build(&self, gallery: &RwLock<Gallery>) {
        let (chunks, tail_then) = {
            let gallery = gallery.read();
            let mut tail = self.tail.lock();
            tail.tracking = true;
            *self.removals.lock() = Some(Vec::new());
            (gallery.snapshot(), tail.faces.clone())
        };
        let faces: Vec<(u64, &[f32])> =
            chunks.iter().flat_map(|chunk| (0..chunk.len()).map(|row| (chunk.id(row), chunk.vector(row)))).collect();
        let capacity = faces.len() + faces.len() / 4 + 1024;
        let graph = Graph::new(self.dim, self.graph_params(), capacity);
        let missed = insert_all(&graph, &faces);
        drop(faces);
        drop(chunks);
        {
            let mut removals = self.removals.lock();
            for id in removals.take().unwrap_or_default() {
                graph.remove(id);
            }
            *self.graph.write() = Some(Arc::new(graph));
        }
        let mut tail = self.tail.lock();
        for (id, seq) in tail_then {
            if tail.faces.get(&id) == Some(&seq) {
                tail.faces.remove(&id);
            }
        }
        drop(tail);
        // Not reached with the capacity above; if it were, the faces would stay findable.
        self.added(missed.into_iter());
        self.builds.fetch_add(1, Ordering::Relaxed);
    }

    fn graph_params(&self) -> GraphParams {
        GraphParams { m: self.settings.params.m, ef_construction: self.settings.params.ef_construction }
    }

    /// Moves up to [`STEP_FACES`] faces from the tail into the graph.
    fn index_tail(&self, gallery: &RwLock<Gallery>) -> bool {
        let Some(mut graph) = self.graph() else { return false };
        let batch: Vec<(u64, u64)> = {
            let mut tail = self.tail.lock();
            let mut batch = Vec::new();
            while batch.len() < STEP_FACES {
                let Some((id, seq)) = tail.queue.pop_front() else { break };
                if tail.faces.get(&id) == Some(&seq) {
                    batch.push((id, seq));
                }
            }
            batch
        };
        if batch.is_empty() {
            return false;
        }
        let faces: Vec<(u64, Vec<f32>)> = {
            let gallery = gallery.read();
            let chunks = gallery.snapshot();
            batch
                .iter()
                .filter_map(|&(id, _)| {
                    gallery.locate(id).map(|at| (id, chunks[at.chunk as usize].vector(at.row as usize).to_vec()))
                })
                .collect()
        };
        if graph.nodes() + faces.len() > graph.capacity() {
            let _removals = self.removals.lock();
            let grown = Arc::new(graph.grown((graph.capacity() * 2).max(graph.nodes() + faces.len() + 1024)));
            *self.graph.write() = Some(grown.clone());
            graph = grown;
        }
        let borrowed: Vec<(u64, &[f32])> = faces.iter().map(|(id, vector)| (*id, vector.as_slice())).collect();
        let missed = insert_all(&graph, &borrowed);
        let mut tail = self.tail.lock();
        let mut gone = Vec::new();
        for (id, seq) in batch {
            if missed.contains(&id) {
                tail.queue.push_back((id, seq));
                continue;
            }
            match tail.faces.get(&id) {
                Some(&now) if now == seq => {
                    tail.faces.remove(&id);
                }
                Some(_) => {}          // changed again: still in the tail, its new vector comes next
                None => gone.push(id), // deleted meanwhile: the graph must not keep it
            }
        }
        drop(tail);
        if !gone.is_empty() {
            self.forget(&gone);
        }
        true
    }
}

/// Inserts faces into a graph, in parallel when there are many; returns the ids that did not
/// fit (none when the caller made room, as it does).
fn insert_all(graph: &Graph, faces: &[(u64, &[f32])]) -> HashSet<u64> {
    let insert = |&(id, vector): &(u64, &[f32])| graph.insert(id, vector).err().map(|_| id);
    if faces.len() >= PARALLEL_FACES {
        faces.par_iter().filter_map(insert).collect()
    } else {
        faces.iter().filter_map(insert).collect()
    }
}
