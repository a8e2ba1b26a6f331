//! facedb: a dedicated biometric vector database.
//!
//! Galleries of faces (a u64 id, a float32 feature vector, typed metadata per a schema) held
//! in memory and searched by similarity under metadata filters. The crate is the engine; the
//! `facedb` binary is a thin command line over it.
//!
//! The layers, each using only those before it (`tools/check-layers.sh` checks it):
//!
//! - [`schema`], [`facen`], [`error`]: the metadata fields, feature vectors on the wire, and
//!   the API's error.
//! - [`store`]: the data: galleries, chunks and columns.
//! - [`index`]: the HNSW graph of a gallery.
//! - [`search`]: queries, filters, the planner, the exact SIMD scan and the walk of the graph.
//! - [`engine`]: the [`Engine`](engine::Engine): a shard's galleries as a state machine, changed
//!   only by [`Engine::apply`](engine::Engine::apply) of a logged [`Op`](engine::Op).
//! - [`wal`] and [`snapshot`]: the log of entries of bytes, and images of the galleries.
//! - [`replica`]: Raft (raft-rs) over that log: the node loop that logs writes with group
//!   commit, applies what is committed and answers.
//! - [`durable`]: a [`Database`](durable::Database): recovery and writes (check, then the node
//!   loop); a shard's cluster record and local layout.
//! - [`api`], [`router`], [`extract`]: the galleries API v2 over HTTP, the router over shards
//!   (and placement), face detection.
//! - [`config`] and [`server`]: settings and running the commands.

pub mod api;
pub mod config;
pub mod durable;
pub mod engine;
pub mod error;
pub mod extract;
pub mod facen;
pub mod index;
pub mod replica;
pub mod router;
pub mod schema;
pub mod search;
pub mod server;
pub mod snapshot;
pub mod store;
#[cfg(test)]
mod test_dir;
pub mod wal;

pub use error::{Error, ErrorKind, Result};
