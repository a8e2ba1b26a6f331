//! The JSON forms of faces: request bodies into engine types, engine types into responses.
//!
//! Everything a client sends is checked here against the schema and the facen size, and a
//! batch is read whole before the engine sees any of it, so one bad face refuses the batch.
//! Errors name the face id and the parameter (`facen`, `meta.person_id`, ...).

use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::facen;
use crate::index::gallery_index::{IndexOverrides, IndexParams};
use crate::schema::{MetaValue, Schema};
use crate::store::{Face, FaceUpdate};

fn array<'a>(body: &'a Json, what: &str) -> Result<&'a Vec<Json>> {
    body.as_array().ok_or_else(|| Error::malformed(format!("the request body must be a JSON array of {what}")))
}

fn face_object(item: &Json, index: usize) -> Result<&Map<String, Json>> {
    let object = item.as_object().ok_or_else(|| {
        Error::malformed(format!("face #{index} of the array is not an object {{\"id\", \"facen\", \"meta\"}}"))
    })?;
    if let Some(key) = object.keys().find(|k| !["id", "facen", "meta"].contains(&k.as_str())) {
        return Err(Error::bad_param(
            key.as_str(),
            format!("face #{index}: unknown key {key:?}; a face has id, facen, meta"),
        ));
    }
    Ok(object)
}

fn face_id(object: &Map<String, Json>, index: usize) -> Result<u64> {
    match object.get("id") {
        Some(id) => id.as_u64().ok_or_else(|| {
            Error::bad_param("id", format!("face #{index}: id must be an integer from 0 to 18446744073709551615"))
                .with_value(id.clone())
        }),
        None => Err(Error::bad_param("id", format!("face #{index} has no id"))),
    }
}

fn vector(value: &Json, id: u64, dim: usize) -> Result<Vec<f32>> {
    facen::from_json(value, dim).map_err(|e| Error::bad_param("facen", format!("face {id}: {e}")).with_value(id))
}

/// The meta values a client gave, by schema position; `null` values are skipped.
fn meta_values(object: &Map<String, Json>, id: u64, schema: &Schema) -> Result<Vec<(usize, MetaValue)>> {
    let meta = match object.get("meta") {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::Object(meta)) => meta,
        Some(other) => {
            return Err(Error::bad_param("meta", format!("face {id}: meta must be an object")).with_value(other.clone()))
        }
    };
    let mut values = Vec::with_capacity(meta.len());
    for (key, value) in meta {
        let param = format!("meta.{key}");
        let position = schema.position(key).ok_or_else(|| {
            Error::bad_param(&param, format!("face {id}: unknown meta field {key:?} (not in the schema)"))
                .with_value(key.as_str())
        })?;
        if value.is_null() {
            continue;
        }
        let field = &schema.fields()[position];
        let typed = field.value_from_json(value).map_err(|e| {
            Error::bad_param(&param, format!("face {id}: meta field {key:?}: {e}")).with_value(value.clone())
        })?;
        values.push((position, typed));
    }
    Ok(values)
}

/// Reads the body of `faces/add`: every face needs an id and a facen; missing meta fields
/// take the schema's defaults.
pub fn new_faces(body: &Json, schema: &Schema, dim: usize) -> Result<Vec<Face>> {
    let items = array(body, "faces {\"id\", \"facen\", \"meta\"}")?;
    let mut faces = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let object = face_object(item, index)?;
        let id = face_id(object, index)?;
        let vector = match object.get("facen") {
            None | Some(Json::Null) => {
                return Err(Error::bad_param("facen", format!("face {id} has no facen")).with_value(id));
            }
            Some(value) => vector(value, id, dim)?,
        };
        let mut meta: Vec<MetaValue> = schema.fields().iter().map(|f| f.default.clone()).collect();
        for (position, value) in meta_values(object, id, schema)? {
            meta[position] = value;
        }
        faces.push(Face { id, vector, meta });
    }
    Ok(faces)
}

/// Reads the body of `faces/update`: absent or null facen and meta values stay as they are.
pub fn face_updates(body: &Json, schema: &Schema, dim: usize) -> Result<Vec<FaceUpdate>> {
    let items = array(body, "faces {\"id\", \"facen\", \"meta\"}")?;
    let mut updates = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let object = face_object(item, index)?;
        let id = face_id(object, index)?;
        let vector = match object.get("facen") {
            None | Some(Json::Null) => None,
            Some(value) => Some(vector(value, id, dim)?),
        };
        let meta = meta_values(object, id, schema)?;
        updates.push(FaceUpdate { id, vector, meta });
    }
    Ok(updates)
}

/// Reads the body of `faces/delete`: an array of ids.
pub fn face_ids(body: &Json) -> Result<Vec<u64>> {
    array(body, "face ids")?
        .iter()
        .map(|id| {
            id.as_u64().ok_or_else(|| {
                Error::bad_param("id", "a face id is an integer from 0 to 18446744073709551615").with_value(id.clone())
            })
        })
        .collect()
}

/// A face as answered: `{"id", "facen", "meta": {every field}}`, and `score` for search hits.
pub fn face_json(face: &Face, score: Option<f32>, schema: &Schema) -> Json {
    let meta: Map<String, Json> =
        schema.fields().iter().zip(&face.meta).map(|(field, value)| (field.name.clone(), value.to_json())).collect();
    let mut object = Map::new();
    object.insert("id".into(), Json::from(face.id));
    object.insert("facen".into(), Json::from(facen::encode(&face.vector)));
    object.insert("meta".into(), Json::Object(meta));
    if let Some(score) = score {
        // Through the f32's shortest decimal form, so 0.9964f32 is written 0.9964, not 0.99640000104904.
        let score: f64 = score.to_string().parse().unwrap_or(f64::from(score));
        object.insert("score".into(), Json::from(score));
    }
    Json::Object(object)
}

/// The optional body of `POST /v2/galleries/add/:name`: `{"m", "ef_construction",
/// "ef_search"}`, each optional (`null` is not given), checked against `server` (the parameters
/// they replace).
pub fn index_overrides(body: &Json, server: IndexParams) -> Result<IndexOverrides> {
    let object = match body {
        Json::Null => return Ok(IndexOverrides::default()),
        Json::Object(object) => object,
        other => {
            return Err(Error::malformed(
                "the body of a gallery add is empty or an object {\"m\", \"ef_construction\", \"ef_search\"}",
            )
            .with_value(other.clone()))
        }
    };
    let mut overrides = IndexOverrides::default();
    for (key, value) in object {
        let slot = match key.as_str() {
            "m" | "M" => &mut overrides.m,
            "ef_construction" => &mut overrides.ef_construction,
            "ef_search" => &mut overrides.ef_search,
            _ => {
                return Err(Error::bad_param(
                    key.as_str(),
                    format!("unknown key {key:?}; a gallery's index takes m, ef_construction, ef_search"),
                ))
            }
        };
        if value.is_null() {
            continue; // as if not given
        }
        let number = value.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| {
            Error::bad_param(key.as_str(), format!("{key} must be a positive integer")).with_value(value.clone())
        })?;
        *slot = Some(number);
    }
    overrides.apply(server).check().map_err(|(param, value, range)| {
        Error::bad_param(param, format!("{param} must be {range}")).with_value(value)
    })?;
    Ok(overrides)
}
