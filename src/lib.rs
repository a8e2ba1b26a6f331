//! facedb: a dedicated biometric vector database.
//!
//! Galleries of faces (a u64 id, a float32 feature vector, typed metadata per a schema) held
//! in memory and searched by similarity under metadata filters. The crate is the engine; the
//! `facedb` binary is a thin command line over it.
//!
//! - [`schema`]: the metadata fields and their types, loaded from YAML.
//! - [`facen`]: feature vectors on the wire (base64 of little-endian float32).
//! - [`store`]: the [`Engine`](store::Engine) and its galleries, chunks and columns.
//! - [`index`]: the HNSW graph that answers searches of large galleries.
//! - [`search`]: queries, filters and the exact SIMD scan.
//! - [`api`]: the galleries API v2 over HTTP.
//! - [`config`] and [`server`]: settings of `facedb serve` and running it.

pub mod api;
pub mod cluster;
pub mod config;
pub mod durable;
pub mod error;
pub mod extract;
pub mod facen;
pub mod index;
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
