//! An HNSW graph over 8-bit codes: concurrent inserts, tombstones, filtered walks.
//!
//! The layout follows hnswlib, the reference implementation, whose speed comes from doing
//! little per visited node: every node has a slot number; its codes ([`Codes`]) and its layer-0
//! links sit in flat arrays indexed by slot, so a walk touches two cache-friendly places per
//! node and allocates nothing but its heaps. Nodes on higher layers (1 in `M`) have their upper
//! link lists in a separate, lazily set box.
//!
//! - **Links** are `AtomicU32`s: `[count, id, id, ...]` per node and layer, `2·M` ids on layer 0
//!   and `M` above. Writers change a node's list under that node's lock (striped: a node maps to
//!   one of [`LOCK_STRIPES`] mutexes), storing the ids before the count, with Release; readers
//!   take no lock and read the count, then the ids, with Acquire. A reader that races a rewrite
//!   may see a mix of the old and the new list: every id in it is a published node either way,
//!   which is all a walk needs (hnswlib makes the same trade).
//! - **Insert** (the HNSW paper's algorithm 1, with the neighbour-selection heuristic of its
//!   algorithm 4): draw a level, descend greedily to it, then on each layer take
//!   `ef_construction` candidates, keep the diverse ones, link both ways, and prune a
//!   neighbour's list with the same heuristic when it overflows. Inserts run in parallel from
//!   any number of threads; each reserves a slot with an atomic counter.
//! - **Every node stays reachable** on layer 0, which face-like data (hubs, tight clusters)
//!   otherwise breaks: a list the heuristic leaves short is filled with the closest candidates
//!   it set aside (`select`); each node counts the lists that hold it (`in_links`); a new node
//!   no neighbour kept is forced into a neighbour's list (`force_link`), and a pruned list
//!   never drops the last link to a node (`keep_only_holders`).
//! - **Deletes** are tombstones: the node stays in the graph (walks pass through it, so the
//!   graph stays connected) but is never returned. The owner rebuilds the graph when too many
//!   pile up. Inserting a face id again (an update) tombstones its old node.
//! - **Search** walks layer 0 with a beam of `ef` and returns the best `ef` nodes by the
//!   approximate similarity, for the caller to re-rank exactly. A filtered search walks through
//!   every node but only collects those that are alive and pass the predicate, so the beam
//!   keeps going until `ef` passing nodes are found (the caller raises `ef` for selective
//!   filters, or scans instead: that is the planner's choice).
//! - **Capacity** is fixed at creation (the arrays never move, so readers need no lock);
//!   [`Graph::grown`] copies the graph into a larger one, which the owner swaps in.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use foldhash::HashMap;
use parking_lot::Mutex;

use super::codes::{Coded, Codes};
use super::visited::{with_visited, Visited};

/// Number of mutexes guarding link lists (a node uses `slot % LOCK_STRIPES`).
const LOCK_STRIPES: usize = 4096;
/// The highest layer a node can be drawn on.
const MAX_LEVEL: u8 = 16;
/// A link list holds at least `1 / MIN_FILL_DIVISOR` of its room: when the heuristic keeps
/// fewer, the closest candidates it set aside fill it up to that (see `select`).
const MIN_FILL_DIVISOR: usize = 4;
/// Layer-0 lists an inserted node is put in, displacing others if it must (see `link`).
const MIN_IN_LINKS: usize = 2;
/// `entry` when the graph is empty.
const NO_ENTRY: u64 = u64::MAX;

/// Shape of a graph: links per node and the width of the insert-time search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphParams {
    /// Links per node on the upper layers; layer 0 has twice as many.
    pub m: usize,
    /// Candidates considered when linking a new node.
    pub ef_construction: usize,
}

/// A node and its approximate similarity to the query (higher is closer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub similarity: f32,
    pub node: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    /// Closer first in a max-heap; ties by the lower slot.
    fn cmp(&self, other: &Scored) -> CmpOrdering {
        self.similarity.total_cmp(&other.similarity).then_with(|| other.node.cmp(&self.node))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Scored) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// [`Scored`] ordered the other way: the top of a max-heap of these is the farthest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Farthest(std::cmp::Reverse<Scored>);

impl Farthest {
    fn new(scored: Scored) -> Farthest {
        Farthest(std::cmp::Reverse(scored))
    }

    fn get(self) -> Scored {
        self.0 .0
    }
}

/// What [`Graph::link_stats`] measures.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkStats {
    pub nodes: usize,
    pub mean_out_degree: f64,
    pub max_out_degree: usize,
    /// Nodes no node links to on layer 0.
    pub without_in_links: usize,
    /// Nodes a layer-0 walk from the entry point cannot reach.
    pub unreachable: usize,
}

/// A graph insert failed because every slot is used: grow the graph and insert again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

pub struct Graph {
    params: GraphParams,
    /// Layer-0 links per node: `2·M`.
    m0: usize,
    /// `1 / ln(M)`: the level distribution's scale.
    level_scale: f64,
    capacity: usize,
    /// Slots handed out (some may still be being written).
    reserved: AtomicUsize,
    codes: Codes,
    faces: Box<[AtomicU64]>,
    levels: Box<[AtomicU8]>,
    /// `capacity × (1 + 2·M)`: count then ids, per node.
    links0: Box<[AtomicU32]>,
    /// Layers 1..=level of a node, `level × (1 + M)`, set before the node is published.
    upper: Box<[OnceLock<Box<[AtomicU32]>>]>,
    dead: Box<[AtomicBool]>,
    /// Layer-0 lists that hold each node: a node none holds cannot be reached by any walk.
    in_links: Box<[AtomicU32]>,
    dead_count: AtomicUsize,
    locks: Box<[Mutex<()>]>,
    /// `slot | level << 32` of the entry point, or [`NO_ENTRY`].
    entry: AtomicU64,
    /// Held while the entry point may change (a node drawn above the top layer).
    entry_lock: Mutex<()>,
    /// Face id to its live slot.
    slots: Mutex<HashMap<u64, u32>>,
}

impl Graph {
    pub fn new(dim: usize, params: GraphParams, capacity: usize) -> Graph {
        let m = params.m.max(2);
        let params = GraphParams { m, ef_construction: params.ef_construction.max(m) };
        let m0 = 2 * m;
        Graph {
            params,
            m0,
            level_scale: 1.0 / (m as f64).ln(),
            capacity,
            reserved: AtomicUsize::new(0),
            codes: Codes::new(dim, capacity),
            faces: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            levels: (0..capacity).map(|_| AtomicU8::new(0)).collect(),
            links0: (0..capacity * (m0 + 1)).map(|_| AtomicU32::new(0)).collect(),
            upper: (0..capacity).map(|_| OnceLock::new()).collect(),
            dead: (0..capacity).map(|_| AtomicBool::new(false)).collect(),
            in_links: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            dead_count: AtomicUsize::new(0),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            entry: AtomicU64::new(NO_ENTRY),
            entry_lock: Mutex::new(()),
            slots: Mutex::new(HashMap::default()),
        }
    }

    pub fn params(&self) -> GraphParams {
        self.params
    }

    pub fn dim(&self) -> usize {
        self.codes.dim()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Nodes in the graph, live and dead.
    pub fn nodes(&self) -> usize {
        self.reserved.load(Ordering::Acquire).min(self.capacity)
    }

    /// Nodes marked deleted.
    pub fn dead(&self) -> usize {
        self.dead_count.load(Ordering::Acquire)
    }

    /// Faces a search can return.
    pub fn live(&self) -> usize {
        self.nodes().saturating_sub(self.dead())
    }

    /// The face id of a slot.
    pub fn face(&self, slot: u32) -> u64 {
        self.faces[slot as usize].load(Ordering::Acquire)
    }

    /// Bytes the graph holds per slot of capacity (codes, scale, links, face id, flags), not
    /// counting the rare upper layers and the id map.
    pub fn bytes_per_slot(&self) -> usize {
        self.dim() + 4 + (self.m0 + 1) * 4 + 8 + 1 + 1 + 4 + 24
    }

    fn level_for(&self, slot: usize) -> u8 {
        // A hash of the slot, as a uniform draw in (0, 1]: levels are reproducible.
        let mut x = (slot as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        let uniform = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        (-uniform.ln() * self.level_scale).floor().min(f64::from(MAX_LEVEL)) as u8
    }

    fn lock(&self, slot: u32) -> parking_lot::MutexGuard<'_, ()> {
        self.locks[slot as usize % LOCK_STRIPES].lock()
    }

    /// The link list of `slot` on `level`: `[count, ids...]`.
    fn links(&self, slot: u32, level: u8) -> &[AtomicU32] {
        let slot = slot as usize;
        if level == 0 {
            return &self.links0[slot * (self.m0 + 1)..(slot + 1) * (self.m0 + 1)];
        }
        let width = self.params.m + 1;
        let start = (level as usize - 1) * width;
        match self.upper[slot].get() {
            Some(lists) if start + width <= lists.len() => &lists[start..start + width],
            _ => &[],
        }
    }

    /// Copies the ids of a link list into `out`.
    fn read_links(&self, slot: u32, level: u8, out: &mut Vec<u32>) {
        out.clear();
        let list = self.links(slot, level);
        let Some((count, ids)) = list.split_first() else { return };
        let count = (count.load(Ordering::Acquire) as usize).min(ids.len());
        out.extend(ids[..count].iter().map(|id| id.load(Ordering::Acquire)));
    }

    /// Replaces a link list whose ids were `old` (the caller holds the node's lock and read
    /// `old` under it), keeping the layer-0 in-link counts.
    fn write_links(&self, slot: u32, level: u8, ids: &[u32], old: &[u32]) {
        let list = self.links(slot, level);
        let Some((count, slots)) = list.split_first() else { return };
        let n = ids.len().min(slots.len());
        for (cell, &id) in slots.iter().zip(&ids[..n]) {
            cell.store(id, Ordering::Release);
        }
        count.store(n as u32, Ordering::Release);
        if level == 0 {
            let ids = &ids[..n];
            if ids.starts_with(old) {
                // Appended entries (the common case, `add_link` with room): no list scans.
                for &added in &ids[old.len()..] {
                    self.in_links[added as usize].fetch_add(1, Ordering::AcqRel);
                }
                return;
            }
            for &gone in old.iter().filter(|id| !ids.contains(id)) {
                self.in_links[gone as usize].fetch_sub(1, Ordering::AcqRel);
            }
            for &added in ids.iter().filter(|id| !old.contains(id)) {
                self.in_links[added as usize].fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    fn entry_point(&self) -> Option<(u32, u8)> {
        let entry = self.entry.load(Ordering::Acquire);
        (entry != NO_ENTRY).then_some((entry as u32, (entry >> 32) as u8))
    }

    /// Adds face `id` (an update when it is already in: its old node becomes a tombstone).
    pub fn insert(&self, id: u64, vector: &[f32]) -> Result<u32, Full> {
        let coded = Coded::new(vector);
        let slot = self.reserved.fetch_add(1, Ordering::AcqRel);
        if slot >= self.capacity {
            self.reserved.fetch_sub(1, Ordering::AcqRel);
            return Err(Full);
        }
        // SAFETY: the slot came from the counter, so it is ours alone, and nothing links to it yet.
        unsafe { self.codes.write(slot, &coded) };
        self.faces[slot].store(id, Ordering::Release);
        let level = self.level_for(slot);
        self.levels[slot].store(level, Ordering::Release);
        if level > 0 {
            let lists = (0..level as usize * (self.params.m + 1)).map(|_| AtomicU32::new(0)).collect();
            let _ = self.upper[slot].set(lists);
        }
        let slot = slot as u32;
        self.link(slot, level, &coded);
        if let Some(old) = self.slots.lock().insert(id, slot) {
            self.kill(old);
        }
        Ok(slot)
    }

    /// Connects a written node to the graph.
    fn link(&self, slot: u32, level: u8, coded: &Coded) {
        let entry_guard = match self.entry_point() {
            Some((_, top)) if level <= top => None,
            _ => Some(self.entry_lock.lock()),
        };
        let Some((entry, top)) = self.entry_point() else {
            // The first node: it is the entry point.
            self.entry.store(u64::from(slot) | u64::from(level) << 32, Ordering::Release);
            return;
        };
        let mut nearest = Scored { similarity: self.codes.similarity(coded, entry as usize), node: entry };
        for layer in (level + 1..=top).rev() {
            nearest = self.greedy(coded, nearest, layer);
        }
        let mut found = vec![nearest];
        let mut scratch = Vec::new();
        for layer in (0..=level.min(top)).rev() {
            let candidates = with_visited(self.capacity, |visited| {
                self.walk(coded, &found, self.params.ef_construction, layer, visited, &|_| true)
            });
            let limit = if layer == 0 { self.m0 } else { self.params.m };
            let chosen = self.select(&candidates, limit);
            self.set_links(slot, layer, &chosen, limit, &mut scratch);
            for neighbour in &chosen {
                self.add_link(neighbour.node, slot, neighbour.similarity, layer, limit, &mut scratch);
            }
            if layer == 0 {
                // The heuristic may have kept the new node out of every neighbour's full list
                // (a face far from all but a few "hub" faces that everyone links to): then
                // nothing leads to it and no walk can ever return it. Make room for it.
                for neighbour in &chosen {
                    if self.in_links[slot as usize].load(Ordering::Acquire) as usize >= MIN_IN_LINKS {
                        break;
                    }
                    self.force_link(neighbour.node, slot, &mut scratch);
                }
            }
            found = candidates;
        }
        if entry_guard.is_some() && level > top {
            self.entry.store(u64::from(slot) | u64::from(level) << 32, Ordering::Release);
        }
    }

    /// Sets the links of a node being inserted on `layer`. Another insert may already have
    /// linked back to it there (it reached the node through a higher layer): those links are
    /// kept, and the union pruned with the heuristic if it is too long.
    fn set_links(&self, slot: u32, layer: u8, chosen: &[Scored], limit: usize, scratch: &mut Vec<u32>) {
        let _guard = self.lock(slot);
        self.read_links(slot, layer, scratch);
        let mut all: Vec<Scored> = chosen.to_vec();
        for &other in scratch.iter() {
            if !all.iter().any(|s| s.node == other) {
                all.push(Scored { similarity: self.codes.between(slot as usize, other as usize), node: other });
            }
        }
        let ids: Vec<u32> = if all.len() > limit {
            all.sort_unstable_by(|a, b| b.cmp(a));
            self.select(&all, limit).iter().map(|s| s.node).collect()
        } else {
            all.iter().map(|s| s.node).collect()
        };
        self.write_links(slot, layer, &ids, scratch);
    }

    /// Puts `new` in the layer-0 list of `node` even when the list is full, in place of the
    /// entry most other lists also hold (one that keeps at least one other in-link).
    fn force_link(&self, node: u32, new: u32, scratch: &mut Vec<u32>) {
        let _guard = self.lock(node);
        self.read_links(node, 0, scratch);
        if scratch.contains(&new) {
            return;
        }
        let mut ids = scratch.clone();
        if ids.len() < self.m0 {
            ids.push(new);
        } else {
            let most_held =
                ids.iter().enumerate().map(|(i, &id)| (self.in_links[id as usize].load(Ordering::Acquire), i)).max();
            match most_held {
                Some((held, i)) if held > 1 => ids[i] = new,
                _ => return,
            }
        }
        self.write_links(node, 0, &ids, scratch);
    }

    /// Adds `new` to the links of `node` on `layer`, pruning the list when it is full.
    fn add_link(&self, node: u32, new: u32, similarity: f32, layer: u8, limit: usize, scratch: &mut Vec<u32>) {
        let _guard = self.lock(node);
        self.read_links(node, layer, scratch);
        if scratch.contains(&new) {
            return;
        }
        if scratch.len() < limit {
            scratch.push(new);
            let ids: &[u32] = scratch;
            self.write_links(node, layer, ids, &ids[..ids.len() - 1]);
            return;
        }
        let mut candidates: Vec<Scored> = scratch
            .iter()
            .map(|&other| Scored { similarity: self.codes.between(node as usize, other as usize), node: other })
            .collect();
        candidates.push(Scored { similarity, node: new });
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        let mut kept: Vec<u32> = self.select(&candidates, limit).iter().map(|s| s.node).collect();
        if layer == 0 {
            self.keep_only_holders(&mut kept, scratch, new);
        }
        self.write_links(node, layer, &kept, scratch);
    }

    /// A pruned layer-0 list must not drop the last link to a node: such an entry takes the
    /// place of the last kept entry that another list also holds.
    fn keep_only_holders(&self, kept: &mut [u32], old: &[u32], new: u32) {
        // Lists other than this one that hold `id` (`new` is not in this list yet).
        let held_elsewhere = |id: u32| {
            let held = self.in_links[id as usize].load(Ordering::Acquire);
            if id == new {
                held
            } else {
                held.saturating_sub(1)
            }
        };
        let orphans: Vec<u32> =
            old.iter().copied().filter(|id| !kept.contains(id) && held_elsewhere(*id) == 0).collect();
        for orphan in orphans {
            match kept.iter().rposition(|&id| held_elsewhere(id) > 0) {
                Some(i) => kept[i] = orphan,
                None => return,
            }
        }
    }

    /// The neighbour-selection heuristic: from candidates sorted closest first, keep one only
    /// if it is closer to the base node than to every one kept before it, up to `limit`; then,
    /// if that kept fewer than `limit / MIN_FILL_DIVISOR`, the closest of the others up to that.
    ///
    /// The fill is for face-like data, which has hubs: faces close to almost everyone (a large
    /// share of the direction all faces have in common). For a face far from the hubs, every
    /// candidate after the first hub is closer to that hub than to the face, so the plain
    /// heuristic keeps one link; the face's reverse link in the hub's full list is pruned too,
    /// and nothing leads to the face. On 200k cone faces at M 32 the plain rule left 2,769
    /// faces unreachable and recall@10 stopped at 0.975; with the fill, 26 and 0.998
    /// (docs/decisions.md §7).
    fn select(&self, candidates: &[Scored], limit: usize) -> Vec<Scored> {
        let mut kept: Vec<Scored> = Vec::with_capacity(limit);
        for candidate in candidates {
            if kept.len() == limit {
                break;
            }
            // Vamana's relaxed rule (keep unless `d(q, c) ≥ α·d(k, c)`, α = 1.15) was measured on
            // the cone data: recall@10 fell from 0.96 to 0.53 at ef 128 (docs/decisions.md §7).
            let diverse = kept
                .iter()
                .all(|k| self.codes.between(k.node as usize, candidate.node as usize) < candidate.similarity);
            if diverse {
                kept.push(*candidate);
            }
        }
        let fill = limit / MIN_FILL_DIVISOR;
        if kept.len() < fill {
            for candidate in candidates {
                if kept.len() >= fill {
                    break;
                }
                if !kept.iter().any(|k| k.node == candidate.node) {
                    kept.push(*candidate);
                }
            }
        }
        kept
    }

    /// Greedy descent on one upper layer: move to the closest neighbour until none is closer.
    fn greedy(&self, query: &Coded, mut best: Scored, layer: u8) -> Scored {
        let mut links = Vec::with_capacity(self.params.m);
        loop {
            let mut moved = false;
            self.read_links(best.node, layer, &mut links);
            for &next in &links {
                let similarity = self.codes.similarity(query, next as usize);
                if similarity > best.similarity {
                    best = Scored { similarity, node: next };
                    moved = true;
                }
            }
            if !moved {
                return best;
            }
        }
    }

    /// Beam search on one layer from `starts`: the best `ef` nodes that `keep` accepts, closest
    /// first. Nodes `keep` rejects are walked through but not collected.
    fn walk(
        &self,
        query: &Coded,
        starts: &[Scored],
        ef: usize,
        layer: u8,
        visited: &mut Visited,
        keep: &dyn Fn(u32) -> bool,
    ) -> Vec<Scored> {
        let mut frontier: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef * 2);
        let mut best: BinaryHeap<Farthest> = BinaryHeap::with_capacity(ef + 1);
        for &start in starts {
            if visited.insert(start.node) {
                frontier.push(start);
                if keep(start.node) {
                    best.push(Farthest::new(start));
                    if best.len() > ef {
                        best.pop();
                    }
                }
            }
        }
        let mut links = Vec::with_capacity(self.m0);
        while let Some(current) = frontier.pop() {
            if best.len() >= ef && best.peek().is_some_and(|f| current.similarity < f.get().similarity) {
                break;
            }
            self.read_links(current.node, layer, &mut links);
            links.retain(|&next| visited.insert(next));
            // Start loading every neighbour's codes before scoring the first: the walk's time
            // is mostly these cache misses, and the CPU overlaps them when asked at once.
            for &next in &links {
                self.codes.prefetch(next as usize);
            }
            for &next in &links {
                let similarity = self.codes.similarity(query, next as usize);
                let bound = best.peek().map(|f| f.get().similarity);
                if best.len() < ef || bound.is_some_and(|b| similarity > b) {
                    let scored = Scored { similarity, node: next };
                    frontier.push(scored);
                    if keep(next) {
                        best.push(Farthest::new(scored));
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                }
            }
        }
        let mut found: Vec<Scored> = best.into_iter().map(Farthest::get).collect();
        found.sort_unstable_by(|a, b| b.cmp(a));
        found
    }

    /// The (about) `ef` faces closest to `query` among the live ones `allow` accepts (all live
    /// ones when `None`), closest first, with their approximate similarity.
    pub fn search(&self, query: &[f32], ef: usize, allow: Option<&dyn Fn(u64) -> bool>) -> Vec<(u64, f32)> {
        let Some((entry, top)) = self.entry_point() else { return Vec::new() };
        let coded = Coded::new(query);
        let mut nearest = Scored { similarity: self.codes.similarity(&coded, entry as usize), node: entry };
        for layer in (1..=top).rev() {
            nearest = self.greedy(&coded, nearest, layer);
        }
        let keep = |slot: u32| {
            !self.dead[slot as usize].load(Ordering::Acquire) && allow.is_none_or(|allow| allow(self.face(slot)))
        };
        let found = with_visited(self.capacity, |visited| self.walk(&coded, &[nearest], ef.max(1), 0, visited, &keep));
        found.into_iter().map(|s| (self.face(s.node), s.similarity)).collect()
    }

    /// How the nodes are linked on layer 0, for diagnosis: out-degrees, nodes no other node
    /// links to, and nodes a walk from the entry point can never reach.
    pub fn link_stats(&self) -> LinkStats {
        let nodes = self.nodes();
        let mut in_degree = vec![0u32; nodes];
        let mut links = Vec::with_capacity(self.m0);
        let mut out_total = 0usize;
        let mut out_max = 0usize;
        for slot in 0..nodes as u32 {
            self.read_links(slot, 0, &mut links);
            out_total += links.len();
            out_max = out_max.max(links.len());
            for &next in &links {
                if let Some(d) = in_degree.get_mut(next as usize) {
                    *d += 1;
                }
            }
        }
        let mut reached = vec![false; nodes];
        let mut stack = Vec::new();
        if let Some((entry, _)) = self.entry_point() {
            reached[entry as usize] = true;
            stack.push(entry);
        }
        while let Some(slot) = stack.pop() {
            self.read_links(slot, 0, &mut links);
            for &next in &links {
                if let Some(seen) = reached.get_mut(next as usize) {
                    if !*seen {
                        *seen = true;
                        stack.push(next);
                    }
                }
            }
        }
        LinkStats {
            nodes,
            mean_out_degree: out_total as f64 / nodes.max(1) as f64,
            max_out_degree: out_max,
            without_in_links: in_degree.iter().filter(|&&d| d == 0).count(),
            unreachable: reached.iter().filter(|&&r| !r).count(),
        }
    }

    fn kill(&self, slot: u32) {
        if !self.dead[slot as usize].swap(true, Ordering::AcqRel) {
            self.dead_count.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Whether face `id` is a live node.
    pub fn holds(&self, id: u64) -> bool {
        self.slots.lock().get(&id).is_some_and(|&slot| !self.dead[slot as usize].load(Ordering::Acquire))
    }

    /// Marks face `id` deleted; returns whether it was in the graph.
    pub fn remove(&self, id: u64) -> bool {
        match self.slots.lock().remove(&id) {
            Some(slot) => {
                self.kill(slot);
                true
            }
            None => false,
        }
    }

    /// A copy with room for `capacity` nodes. No insert may run during the copy.
    pub fn grown(&self, capacity: usize) -> Graph {
        let grown = Graph::new(self.dim(), self.params, capacity.max(self.capacity));
        let nodes = self.nodes();
        for slot in 0..nodes {
            let coded = Coded { codes: self.codes.get(slot).to_vec(), scale: self.codes.scale(slot) };
            // SAFETY: `grown` is not shared yet.
            unsafe { grown.codes.write(slot, &coded) };
            grown.faces[slot].store(self.faces[slot].load(Ordering::Acquire), Ordering::Release);
            grown.levels[slot].store(self.levels[slot].load(Ordering::Acquire), Ordering::Release);
            grown.dead[slot].store(self.dead[slot].load(Ordering::Acquire), Ordering::Release);
            grown.in_links[slot].store(self.in_links[slot].load(Ordering::Acquire), Ordering::Release);
            if let Some(lists) = self.upper[slot].get() {
                let copy = lists.iter().map(|a| AtomicU32::new(a.load(Ordering::Acquire))).collect();
                let _ = grown.upper[slot].set(copy);
            }
        }
        let width = self.m0 + 1;
        for (to, from) in grown.links0.iter().zip(&self.links0[..nodes * width]) {
            to.store(from.load(Ordering::Acquire), Ordering::Release);
        }
        grown.reserved.store(nodes, Ordering::Release);
        grown.dead_count.store(self.dead(), Ordering::Release);
        grown.entry.store(self.entry.load(Ordering::Acquire), Ordering::Release);
        *grown.slots.lock() = self.slots.lock().clone();
        grown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reproducible unit vectors: `count` faces in `dim` dimensions.
    fn vectors(count: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        (0..count)
            .map(|_| {
                let v: Vec<f32> = (0..dim).map(|_| next()).collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / n).collect()
            })
            .collect()
    }

    /// A graph of `faces` (face `i` under id `i`), inserted one by one.
    fn built(faces: &[Vec<f32>], dim: usize, params: GraphParams, capacity: usize) -> Graph {
        let graph = Graph::new(dim, params, capacity);
        for (id, v) in faces.iter().enumerate() {
            graph.insert(id as u64, v).unwrap();
        }
        graph
    }

    fn exact_top(faces: &[Vec<f32>], query: &[f32], k: usize, allow: impl Fn(u64) -> bool) -> Vec<u64> {
        let mut scored: Vec<(f32, u64)> = faces
            .iter()
            .enumerate()
            .filter(|(i, _)| allow(*i as u64))
            .map(|(i, v)| (v.iter().zip(query).map(|(a, b)| a * b).sum(), i as u64))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(k).map(|(_, id)| id).collect()
    }

    fn params() -> GraphParams {
        GraphParams { m: 12, ef_construction: 100 }
    }

    fn recall(graph: &Graph, faces: &[Vec<f32>], queries: &[Vec<f32>], ef: usize, allow: &dyn Fn(u64) -> bool) -> f64 {
        let k = 10;
        let mut hits = 0;
        let mut total = 0;
        for query in queries {
            let truth = exact_top(faces, query, k, allow);
            let found: Vec<u64> = graph.search(query, ef, Some(allow)).into_iter().map(|(id, _)| id).collect();
            assert!(found.iter().all(|&id| allow(id)), "a search returned a face the filter rejects");
            hits += truth.iter().filter(|id| found.contains(id)).count();
            total += truth.len();
        }
        hits as f64 / total as f64
    }

    /// Face-like data: `identities` people with `per_identity` samples each (face `i` is a
    /// sample of person `i % identities`), every person's centre `α·c + √(1−α²)·u` around one
    /// common direction `c` with `α` in [0.8, 0.95], samples at a cosine of about 0.95 to each
    /// other. People with a large `α` are close to everyone: hubs.
    fn cone(identities: usize, per_identity: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut uniform = vectors(identities * (per_identity + 1) + 1, dim, seed).into_iter();
        let common = uniform.next().unwrap();
        let centres: Vec<Vec<f32>> = (0..identities)
            .map(|i| {
                let u = uniform.next().unwrap();
                let along: f32 = u.iter().zip(&common).map(|(a, b)| a * b).sum();
                let mut u: Vec<f32> = u.iter().zip(&common).map(|(a, b)| a - along * b).collect();
                let n = u.iter().map(|x| x * x).sum::<f32>().sqrt();
                u.iter_mut().for_each(|x| *x /= n);
                let alpha = 0.8 + 0.15 * (i as f32 / identities as f32);
                let beta = (1.0 - alpha * alpha).sqrt();
                common.iter().zip(&u).map(|(c, x)| alpha * c + beta * x).collect()
            })
            .collect();
        (0..identities * per_identity)
            .map(|i| {
                let noise = uniform.next().unwrap();
                let v: Vec<f32> = centres[i % identities].iter().zip(&noise).map(|(c, x)| c + 0.25 * x).collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / n).collect()
            })
            .collect()
    }

    #[test]
    fn every_face_of_clustered_data_can_be_reached() {
        // On such data the plain heuristic leaves many faces with one link (to a hub whose full
        // list then drops them): no walk reaches them. Filled lists and forced in-links do.
        let faces = cone(1000, 10, 128, 11);
        let graph = built(&faces, 128, GraphParams { m: 16, ef_construction: 100 }, faces.len());
        let stats = graph.link_stats();
        assert!(stats.mean_out_degree >= 8.0, "{stats:?}");
        assert!(stats.unreachable * 1000 <= stats.nodes, "{stats:?}");
        let queries: Vec<Vec<f32>> = faces.iter().step_by(50).cloned().collect();
        let found = recall(&graph, &faces, &queries, 128, &|_| true);
        assert!(found >= 0.99, "recall {found} {stats:?}");
    }

    #[test]
    fn a_wide_search_finds_the_exact_neighbours() {
        let faces = vectors(2000, 16, 1);
        let graph = built(&faces, 16, params(), 2000);
        let queries = vectors(50, 16, 2);
        assert!(recall(&graph, &faces, &queries, 200, &|_| true) >= 0.99);
        assert_eq!(graph.live(), 2000);
    }

    #[test]
    fn parallel_inserts_build_a_searchable_graph() {
        let faces = vectors(3000, 16, 3);
        let graph = Graph::new(16, params(), 3000);
        std::thread::scope(|scope| {
            for part in 0..4 {
                let (graph, faces) = (&graph, &faces);
                scope.spawn(move || {
                    for id in (part..faces.len()).step_by(4) {
                        graph.insert(id as u64, &faces[id]).unwrap();
                    }
                });
            }
        });
        assert_eq!(graph.nodes(), 3000);
        assert!(recall(&graph, &faces, &vectors(50, 16, 4), 200, &|_| true) >= 0.98);
    }

    #[test]
    fn filtered_and_deleted_faces_are_never_returned() {
        let faces = vectors(2000, 16, 5);
        let graph = built(&faces, 16, params(), 2000);
        for id in (0..2000).step_by(3) {
            assert!(graph.remove(id));
        }
        assert!(!graph.remove(0), "a second remove finds nothing");
        let alive = |id: u64| !id.is_multiple_of(3);
        let queries = vectors(30, 16, 6);
        // Plain search skips the tombstones by itself.
        for query in &queries {
            assert!(graph.search(query, 50, None).iter().all(|&(id, _)| alive(id)));
        }
        assert!(recall(&graph, &faces, &queries, 200, &alive) >= 0.98);
        let even_and_alive = |id: u64| id.is_multiple_of(2) && alive(id);
        assert!(recall(&graph, &faces, &queries, 300, &even_and_alive) >= 0.98);
    }

    #[test]
    fn reinserting_a_face_replaces_it() {
        let faces = vectors(500, 8, 7);
        let graph = built(&faces, 8, params(), 600);
        let moved = &faces[1];
        graph.insert(0, moved).unwrap();
        let found = graph.search(moved, 20, None);
        assert_eq!(found.iter().filter(|(id, _)| *id == 0).count(), 1, "one node for face 0");
        assert!(found.iter().take(2).any(|&(id, _)| id == 0));
        assert_eq!(graph.live(), 500);
        assert_eq!(graph.dead(), 1);
    }

    #[test]
    fn a_full_graph_refuses_and_a_grown_copy_takes_more() {
        let faces = vectors(300, 8, 8);
        let graph = Graph::new(8, params(), 200);
        for (id, v) in faces.iter().take(200).enumerate() {
            graph.insert(id as u64, v).unwrap();
        }
        assert_eq!(graph.insert(200, &faces[200]), Err(Full));
        graph.remove(5);
        let grown = graph.grown(400);
        for (id, v) in faces.iter().enumerate().skip(200) {
            grown.insert(id as u64, v).unwrap();
        }
        assert_eq!((grown.nodes(), grown.live()), (300, 299));
        assert!(recall(&grown, &faces, &vectors(20, 8, 9), 100, &|id| id != 5) >= 0.98);
    }

    #[test]
    fn an_empty_graph_finds_nothing() {
        let graph = Graph::new(4, params(), 10);
        assert!(graph.search(&[1.0, 0.0, 0.0, 0.0], 10, None).is_empty());
    }
}
