//! The engine with its indexes: answers through the graph against exact answers, deletes and
//! updates under the index, and a rebuild racing searches and writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::durable::Database;
use crate::index::{IndexParams, IndexSettings};
use crate::schema::MetaValue;
use crate::search::{Condition, FacenFilter, Op as SearchOp, Sort, Target};

const DIM: usize = 16;

fn schema() -> Schema {
    Schema::from_yaml("- {id: 1, name: bucket, field_type: unsigned, default: 0}\n", "test").unwrap()
}

/// An engine behind the node loop, in memory: writes are checked, logged and applied.
fn engine(settings: IndexSettings) -> Arc<Database> {
    Database::in_memory(schema(), EngineConfig { facen_size: DIM, index: settings, ..EngineConfig::default() }).unwrap()
}

fn settings(ef_search: usize) -> IndexSettings {
    IndexSettings { params: IndexParams { m: 16, ef_construction: 100, ef_search }, min_faces: 0, rebuild_share: 0.2 }
}

/// Reproducible pseudo-random vectors.
struct Vectors(u64);

impl Vectors {
    fn next(&mut self) -> Vec<f32> {
        (0..DIM)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }
}

fn face(id: u64, vector: Vec<f32>) -> Face {
    Face { id, vector, meta: vec![MetaValue::Unsigned(id % 10)] }
}

fn query(vector: Vec<f32>, limit: usize, conditions: Vec<Condition>, exact: bool) -> Query {
    let norm = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    let facen = FacenFilter { vector, inverse_norm: 1.0 / norm, min_score: -1.0, max_score: 1.0 };
    Query { limit, sort: Sort::ScoreDescending, facen: Some(facen), conditions, exact, after: None }
}

fn under_five() -> Vec<Condition> {
    vec![Condition { target: Target::Field(0), op: SearchOp::Range { min: 0, max: 4 } }]
}

/// Waits until the gallery's graph holds every face (the tail is empty).
fn wait_indexed(engine: &Engine, name: &str, faces: usize) {
    let started = Instant::now();
    loop {
        let status = engine.index_status(name).unwrap().graph;
        if status.is_some_and(|s| s.tail == 0 && s.live == faces) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not indexed after 60 s: {status:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ids_and_scores(hits: &[Hit]) -> Vec<(u64, Option<f32>)> {
    hits.iter().map(|h| (h.face.id, h.score)).collect()
}

#[test]
fn a_wide_graph_search_answers_as_the_exact_scan() {
    // "ef high": wider than the gallery, so the walk reaches every face the graph links to.
    let engine = engine(settings(4000));
    engine.create_gallery("g").unwrap();
    let mut vectors = Vectors(1);
    let faces: Vec<Face> = (0..3000).map(|id| face(id, vectors.next())).collect();
    engine.add_faces("g", faces).unwrap();
    wait_indexed(&engine, "g", 3000);
    for _ in 0..40 {
        let v = vectors.next();
        for conditions in [vec![], under_five()] {
            let (indexed, plan) = engine.search("g", &query(v.clone(), 10, conditions.clone(), false)).unwrap();
            assert!(matches!(plan, Plan::Index { .. }), "{plan:?}");
            let (exact, plan) = engine.search("g", &query(v.clone(), 10, conditions, true)).unwrap();
            assert_eq!(plan, Plan::Exact("exact requested"));
            assert_eq!(ids_and_scores(&indexed), ids_and_scores(&exact));
        }
    }
}

#[test]
fn deleted_and_changed_faces_are_never_answered_stale() {
    let engine = engine(settings(200));
    engine.create_gallery("g").unwrap();
    let mut vectors = Vectors(2);
    let faces: Vec<Face> = (0..2000).map(|id| face(id, vectors.next())).collect();
    let kept = faces.clone();
    engine.add_faces("g", faces).unwrap();
    wait_indexed(&engine, "g", 2000);
    // Each face's own vector finds it first; delete half of those, move the other half away.
    for f in kept.iter().take(200) {
        if f.id % 2 == 0 {
            engine.delete_faces("g", vec![f.id]).unwrap();
        } else {
            let moved = vectors.next();
            engine.update_faces("g", vec![FaceUpdate { id: f.id, vector: Some(moved), meta: vec![] }]).unwrap();
        }
        // At once, before the indexer ran: the answer already reflects the write.
        let (hits, plan) = engine.search("g", &query(f.vector.clone(), 5, vec![], false)).unwrap();
        assert!(matches!(plan, Plan::Index { .. }));
        if f.id % 2 == 0 {
            assert!(hits.iter().all(|h| h.face.id != f.id), "deleted face {} answered", f.id);
        } else if let Some(hit) = hits.iter().find(|h| h.face.id == f.id) {
            let stored = engine.get_face("g", f.id).unwrap();
            assert_eq!(hit.face.vector, stored.vector, "face {} answered with its old vector", f.id);
            assert!(hit.score < Some(0.99));
        }
    }
    // The moved faces are found at their new place, through the graph once indexed.
    wait_indexed(&engine, "g", 1900);
    for f in kept.iter().take(200).filter(|f| f.id % 2 == 1) {
        let stored = engine.get_face("g", f.id).unwrap();
        let (hits, _) = engine.search("g", &query(stored.vector.clone(), 1, vec![], false)).unwrap();
        assert_eq!(hits[0].face.id, f.id);
    }
}

#[test]
fn a_face_is_found_at_once_and_enters_the_graph_soon() {
    let engine = engine(settings(100));
    engine.create_gallery("g").unwrap();
    let mut vectors = Vectors(3);
    engine.add_faces("g", (0..1000).map(|id| face(id, vectors.next())).collect()).unwrap();
    wait_indexed(&engine, "g", 1000);
    let v = vectors.next();
    engine.add_faces("g", vec![face(5000, v.clone())]).unwrap();
    let (hits, plan) = engine.search("g", &query(v, 1, vec![], false)).unwrap();
    assert!(matches!(plan, Plan::Index { .. }));
    assert_eq!(hits[0].face.id, 5000);
    wait_indexed(&engine, "g", 1001);
}

#[test]
fn a_rebuild_during_searches_and_writes_loses_nothing() {
    let engine = engine(IndexSettings { rebuild_share: 0.1, ..settings(200) });
    engine.create_gallery("g").unwrap();
    let mut vectors = Vectors(4);
    let first: Vec<Face> = (0..3000).map(|id| face(id, vectors.next())).collect();
    engine.add_faces("g", first).unwrap();
    wait_indexed(&engine, "g", 3000);
    let builds_before = engine.index_status("g").unwrap().graph.unwrap().builds;
    let done = Arc::new(AtomicBool::new(false));
    // Searchers: a face whose delete was acknowledged before the search began is never answered.
    let deleted_below = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let searchers: Vec<_> = (0..2)
        .map(|s| {
            let (engine, done, deleted_below) = (engine.clone(), done.clone(), deleted_below.clone());
            std::thread::spawn(move || {
                let mut vectors = Vectors(100 + s);
                let mut searches = 0;
                while !done.load(Ordering::Acquire) {
                    let gone = deleted_below.load(Ordering::Acquire);
                    let (hits, _) = engine.search("g", &query(vectors.next(), 20, vec![], false)).unwrap();
                    assert!(hits.iter().all(|h| h.face.id >= gone), "a deleted face was answered");
                    searches += 1;
                }
                searches
            })
        })
        .collect();
    // The writer deletes the oldest faces and adds new ones: tombstones pass 10%, rebuilds run.
    let mut next = 3000u64;
    for round in 0..30u64 {
        let gone: Vec<u64> = (round * 50..round * 50 + 50).collect();
        engine.delete_faces("g", gone).unwrap();
        deleted_below.store(round * 50 + 50, Ordering::Release);
        let added: Vec<Face> = (next..next + 50).map(|id| face(id, vectors.next())).collect();
        next += 50;
        engine.add_faces("g", added).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::Release);
    let searches: usize = searchers.into_iter().map(|s| s.join().unwrap()).sum();
    assert!(searches > 50, "only {searches} searches ran");
    wait_indexed(&engine, "g", 3000);
    let status = engine.index_status("g").unwrap().graph.unwrap();
    assert!(status.builds > builds_before, "no rebuild ran: {status:?}");
    // Every live face is a live node of the graph (the tail is empty), and no deleted one is.
    let handle = engine.gallery("g").unwrap();
    let missing: Vec<u64> = (1500..next).filter(|&id| !handle.index.holds(id)).collect();
    assert!(missing.is_empty(), "faces neither in the graph nor in the tail: {missing:?}");
    let kept: Vec<u64> = (0..1500).filter(|&id| handle.index.holds(id)).collect();
    assert!(kept.is_empty(), "deleted faces still live in the graph: {kept:?}");
    // And the graph answers: a face's own vector finds it first (a walk may miss a face it
    // holds, as HNSW recall is below 1; most must be found).
    let found = (1500..next)
        .step_by(7)
        .filter(|&id| {
            let stored = engine.get_face("g", id).unwrap();
            let (hits, plan) = engine.search("g", &query(stored.vector.clone(), 1, vec![], false)).unwrap();
            assert!(matches!(plan, Plan::Index { .. }));
            hits[0].face.id == id
        })
        .count();
    assert!(found * 100 >= 95 * (next - 1500).div_ceil(7) as usize, "only {found} faces found by their own vector");
}
