//! A shard's answers: each operation of the galleries API on one database, shaped as the API
//! answers it. The HTTP handlers (`api/mod.rs`) and the router's local shards
//! (`router/shard.rs`) both call these, so a shard in this process answers exactly as one over
//! HTTP.

use serde_json::Value as Json;

use super::wire;
use crate::durable::Database;
use crate::engine::GalleryInfo;
use crate::error::{Error, Result};
use crate::search::planner::Plan;
use crate::search::{Cursor, Query};
use crate::store::{Face, FaceUpdate};

/// `galleries/add/{name}`, with the optional body of index parameters.
pub fn create_gallery(database: &Database, name: &str, body: &Json) -> Result<()> {
    let overrides = wire::index_overrides(body, database.config().index.params)?;
    Ok(database.create_indexed_gallery(name, overrides)?)
}

pub fn delete_gallery(database: &Database, name: &str) -> Result<()> {
    Ok(database.delete_gallery(name)?)
}

/// `galleries/get/{name}`: the gallery's face count.
pub fn gallery_size(database: &Database, name: &str) -> Result<usize> {
    Ok(database.gallery_size(name)?)
}

/// `galleries/list`: every gallery in name order.
pub fn list_galleries(database: &Database) -> Vec<GalleryInfo> {
    database.list_galleries()
}

pub fn add_faces(database: &Database, name: &str, faces: Vec<Face>) -> Result<()> {
    Ok(database.add_faces(name, faces)?)
}

/// `faces/get/{name}/{id}`: the face as stored.
pub fn get_face(database: &Database, name: &str, id: u64) -> Result<Json> {
    let face = database.get_face(name, id)?;
    Ok(wire::face_json(&face, None, &database.schema()))
}

pub fn delete_faces(database: &Database, name: &str, ids: Vec<u64>) -> Result<()> {
    Ok(database.delete_faces(name, ids)?)
}

/// `faces/update/{name}`: the faces as they are now, in request order.
pub fn update_faces(database: &Database, name: &str, updates: Vec<FaceUpdate>) -> Result<Vec<Json>> {
    let faces = database.update_faces(name, updates)?;
    let schema = database.schema();
    Ok(faces.iter().map(|face| wire::face_json(face, None, &schema)).collect())
}

/// A search's answer: the faces found (with `score`), the cursor of the next page when the
/// page is full, and the plan (`X-search-stat`).
pub struct Found {
    pub results: Vec<Json>,
    pub next_page: Option<String>,
    pub plan: Plan,
}

pub fn search(database: &Database, name: &str, query: &Query) -> Result<Found> {
    let (hits, plan) = database.search(name, query)?;
    let schema = database.schema();
    let next_page = hits
        .last()
        .filter(|_| hits.len() == query.limit)
        .map(|last| Cursor::at(query.sort, last.face.id, last.score).encode());
    let results = hits.iter().map(|hit| wire::face_json(&hit.face, hit.score, &schema)).collect();
    Ok(Found { results, next_page, plan })
}

/// `admin/snapshot`: takes a snapshot now.
pub fn snapshot(database: &Database) -> Result<Json> {
    let info = database.snapshot().map_err(|e| Error::internal(format!("snapshot failed: {e}")))?;
    Ok(crate::durable::snapshot_json(&info))
}
