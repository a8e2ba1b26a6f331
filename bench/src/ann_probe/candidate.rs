//! The indexes under test, behind one interface: what the probe asks of an HNSW crate.
//!
//! Each candidate is built once per `M` from the dataset's faces (face `i` under id `i`), then
//! searched one query at a time on the calling thread. Ids are `u64` here (usearch's keys);
//! hnsw_rs's `usize` ids are converted at its edge.
//!
//! The two crates differ on deletes: usearch removes a key (the node stays in the graph as a
//! tombstone that searches walk through but never return); hnsw_rs has no delete, so a
//! deleted face can only be hidden by the search's filter (the same mechanism a metadata
//! filter uses). [`Deletes`] says which one a candidate has.

use anyhow::Result;
use serde::Serialize;

/// The crates the probe knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
pub enum Crate {
    /// hnsw_rs 0.3.5 (pure Rust), with an inner-product distance over simsimd that never panics.
    #[value(name = "hnsw_rs")]
    #[serde(rename = "hnsw_rs")]
    HnswRs,
    /// usearch 2.x (Rust binding of the USearch C++ engine), metric IP, f32 vectors.
    #[value(name = "usearch")]
    #[serde(rename = "usearch")]
    Usearch,
    /// facedb's own graph (`facedb::index`): 8-bit codes for the walk, exact re-rank.
    #[value(name = "facedb")]
    #[serde(rename = "facedb")]
    Facedb,
}

impl Crate {
    pub fn name(self) -> &'static str {
        match self {
            Crate::HnswRs => "hnsw_rs",
            Crate::Usearch => "usearch",
            Crate::Facedb => "facedb",
        }
    }
}

/// How a candidate forgets a face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deletes {
    /// The crate removes the id itself (`remove`); plain searches then skip it.
    Native,
    /// No delete: every search must pass a filter that rejects the deleted ids.
    ViaFilter,
}

/// A predicate over ids: `true` keeps the face.
pub type Allow<'a> = &'a (dyn Fn(u64) -> bool + Sync);

/// An HNSW index under test.
pub trait Candidate {
    /// The search width (`ef` / `expansion_search`) of the following searches.
    fn set_ef(&self, ef: usize);

    /// The ids of the (approximately) `k` nearest faces, best first.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<u64>>;

    /// As [`Candidate::search`], among the faces `allow` keeps (the crate's own filtered search).
    fn filtered_search(&self, query: &[f32], k: usize, allow: Allow<'_>) -> Result<Vec<u64>>;

    fn deletes(&self) -> Deletes;

    /// Removes a face ([`Deletes::Native`] only).
    fn remove(&self, id: u64) -> Result<()>;

    /// Faces the index holds (for hnsw_rs: points inserted; it never forgets one).
    fn size(&self) -> usize;

    /// The crate's own figure of its memory, when it has one.
    fn memory_bytes(&self) -> Option<u64>;

    /// Which SIMD kernels the crate says it uses, when it says.
    fn acceleration(&self) -> Option<String>;

    /// How the graph's bottom layer is linked, when the crate lets us look.
    fn links(&self) -> Option<String> {
        None
    }
}
