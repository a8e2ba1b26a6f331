//! The approximate nearest-neighbour index of a gallery: an HNSW graph over 8-bit codes.
//!
//! - [`codes`]: the graph's quantised copy of the vectors.
//! - [`visited`]: the per-thread visited set of a walk.
//! - [`graph`]: the HNSW graph itself: concurrent inserts, tombstones, filtered walks.
//! - [`gallery_index`]: a gallery's graph plus the faces not in it yet, kept in step with the
//!   gallery's writes, built and rebuilt in the background.
//!
//! Why our own graph and not a crate: see docs/decisions.md §7.

pub mod codes;
pub mod gallery_index;
pub mod graph;
pub mod visited;

pub use gallery_index::{IndexOverrides, IndexParams, IndexSettings};
pub use graph::{Full, Graph, GraphParams, LinkStats};
