//! The router: one galleries API v2 over many shards (the original's `sf-api` in front of its
//! Tarantool shards).
//!
//! A face lives on shard [`shard_of`]`(id, n)`. Writes go to the shards that own their faces;
//! gallery creation and deletion go to every shard; searches go to every shard (or, under an
//! id `set`, to those owning the ids) in parallel, and their answers, each the shard's best
//! `limit`, are merged by the search's order with ties by id, exactly as one shard orders
//! them. Paging cursors (`next_page`, `page`) are positions in that order, which the shards
//! accept too, so a page costs every shard at most `limit` results.
//!
//! Batches are all or nothing across shards: the router checks the whole batch first (the
//! shards' schema and facen size, read from them at start), then writes; if a shard refuses,
//! what the others wrote is undone (faces added are deleted, faces deleted are added back,
//! updated faces get their old values), so a client sees what one shard would have done.
//!
//! `facedb router` reaches its shards over HTTP ([`shard`]); `facedb serve` runs the same
//! router over shards in its own process.

pub mod config;
pub mod placement;
pub mod shard;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use axum::extract::{DefaultBodyLimit, FromRef, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::join_all;
use serde_json::{json, Value as Json};

use crate::api::detect::{self, FrontEnd};
use crate::api::{self, wire, FacePath, GalleryName, JsonBody};
use crate::durable::cluster::ClusterRecord;
use crate::error::{Error, ErrorKind};
use crate::schema::Schema;
use crate::search::parse::parse_query;
use crate::search::{rank, Cursor, Query};
pub use placement::shard_of;
use shard::{Failure, Found, Outcome, Shard};

/// What every shard of a cluster shares: checked when each shard is first reached.
pub struct Shape {
    pub schema: Arc<Schema>,
    schema_yaml: String,
    pub facen_size: usize,
    pub max_search_limit: usize,
}

impl Shape {
    pub fn new(schema: Arc<Schema>, facen_size: usize, max_search_limit: usize) -> Shape {
        Shape { schema_yaml: schema.to_yaml(), schema, facen_size, max_search_limit }
    }
}

/// The shards and what the router knows of them.
pub struct Cluster {
    shards: Vec<Shard>,
    shape: OnceLock<Shape>,
    /// The cluster id that remote shards record (learned from them, or made up for new ones).
    id: parking_lot::Mutex<Option<String>>,
}

impl Cluster {
    /// Shards in this process, whose shape is known.
    pub fn local(shards: Vec<Shard>, shape: Shape) -> Cluster {
        let cluster = Cluster::remote(shards);
        let _ = cluster.shape.set(shape);
        cluster
    }

    /// Shards to be verified on first contact ([`Cluster::start`] verifies those that answer).
    pub fn remote(shards: Vec<Shard>) -> Cluster {
        Cluster { shards, shape: OnceLock::new(), id: parking_lot::Mutex::new(None) }
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Asks every remote shard what it recorded, and refuses (an error naming the shard and
    /// what it recorded) when the shard list disagrees; claims the new shards. Shards that do
    /// not answer are only warned about: they are verified when they first answer.
    pub async fn start(&self) -> Result<(), String> {
        let infos = join_all(self.shards.iter().map(Shard::info)).await;
        let mut ids: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (shard, info) in self.shards.iter().zip(&infos) {
            if let Some(id) = info.as_ref().ok().and_then(|i| i["cluster"]["id"].as_str()) {
                ids.entry(id.to_owned()).or_default().push(&shard.name);
            }
        }
        if ids.len() > 1 {
            let groups: Vec<String> =
                ids.iter().map(|(id, names)| format!("{} in cluster {id}", names.join(", "))).collect();
            return Err(format!(
                "storage-api.shards lists shards of different clusters: {}; list the shards of one cluster",
                groups.join("; ")
            ));
        }
        *self.id.lock() = ids.into_keys().next();
        let everyone_answered = infos.iter().all(Result::is_ok);
        // Shards with a record first: a list that disagrees with them is refused before any new
        // shard is claimed with the wrong count.
        let (claimed, new): (Vec<_>, Vec<_>) =
            infos.into_iter().enumerate().partition(|(_, info)| info.as_ref().is_ok_and(|i| !i["cluster"].is_null()));
        for (k, info) in claimed.into_iter().chain(new) {
            let name = &self.shards[k].name;
            match info {
                Ok(info) if info["cluster"].is_null() && !everyone_answered => {
                    tracing::warn!(
                        shard = %name,
                        "new, and claimed once every shard has answered (one that has not may already belong to a cluster)"
                    );
                }
                // A new shard the router cannot take (one that holds faces, or a lost shard back
                // empty) does not stop the others from being served: its requests get a 503
                // naming it, and it is checked again on each.
                Ok(info) if info["cluster"].is_null() => {
                    if let Err(e) = self.admit(k, &info).await {
                        tracing::error!(shard = %name, "not taken into the cluster: {e}");
                    }
                }
                Ok(info) => self.admit(k, &info).await.map_err(|e| format!("storage-api.shards[{k}] ({name}): {e}"))?,
                Err(failure) => {
                    let error = failure.into_error(name);
                    tracing::warn!(shard = %name, "not reachable at start, checked when it answers: {}", error.message);
                }
            }
        }
        Ok(())
    }

    /// Checks a shard's answer to `GET admin/cluster` against the router's list, and claims it
    /// when it was never claimed. The error says what disagrees (the caller names the shard).
    async fn admit(&self, k: usize, info: &Json) -> Result<(), String> {
        let shard = &self.shards[k];
        let n = self.shards.len();
        let facen_size = info["facen_size"].as_u64().unwrap_or(0) as usize;
        let schema_yaml = info["schema"].as_str().unwrap_or_default();
        let shape = match self.shape.get() {
            Some(shape) => shape,
            None => {
                let schema = Schema::from_yaml(schema_yaml, &shard.name)?;
                let limit = info["max_search_limit"].as_u64().unwrap_or(0) as usize;
                let _ = self.shape.set(Shape::new(Arc::new(schema), facen_size, limit));
                self.shape.get().ok_or("no shape")?
            }
        };
        if facen_size != shape.facen_size {
            return Err(format!(
                "has facen_size {facen_size}, the cluster {}; every shard must have the same",
                shape.facen_size
            ));
        }
        let limit = info["max_search_limit"].as_u64().unwrap_or(0) as usize;
        if limit != shape.max_search_limit {
            return Err(format!(
                "has max_search_limit {limit}, the cluster {}; every shard must have the same",
                shape.max_search_limit
            ));
        }
        if schema_yaml != shape.schema_yaml {
            return Err("has another metadata schema than the cluster's first shard".to_owned());
        }
        let record: Option<ClusterRecord> = serde_json::from_value(info["cluster"].clone())
            .map_err(|e| format!("answered a bad cluster record: {e}"))?;
        let record = match record {
            Some(record) => {
                let mut id = self.id.lock();
                let expected = id.get_or_insert_with(|| record.id.clone());
                if record.id != *expected || record.shard != k || record.shards != n {
                    return Err(format!(
                        "was created as {}, but the router lists it as shard {k} of {n} of cluster {expected}: \
                         placement would look for faces on the wrong shards; list the shards in the order and \
                         number they were created with",
                        record.describe()
                    ));
                }
                record
            }
            None if shard.was_recorded() => {
                return Err("came back without its cluster record (started on another data dir?); the faces \
                            placed on it would be missing; start it on its own data dir"
                    .to_owned());
            }
            None => {
                let faces = info["faces"].as_u64().unwrap_or(0);
                if faces > 0 && n > 1 {
                    return Err(format!(
                        "holds {faces} faces but belongs to no cluster: its faces were not placed by this \
                         router's rule; start it on an empty data dir and add the faces through the router"
                    ));
                }
                let id = self.cluster_id_for_new_shard(k).await?;
                let claim = ClusterRecord { id, shard: k, shards: n };
                let body = serde_json::to_value(&claim).map_err(|e| e.to_string())?;
                shard.claim(&body).await.map_err(|f| f.into_error(&shard.name).message)?;
                tracing::info!(shard = %shard.name, "claimed as {}", claim.describe());
                claim
            }
        };
        shard.verified_as(&record);
        Ok(())
    }

    /// The cluster id new shard `k` is claimed under: the id the other shards record, or a new
    /// one. Only once every shard has answered: one that has not may hold the cluster's record,
    /// and a made-up id would split the cluster in two. Refused when a shard of the cluster holds
    /// a gallery: galleries are made on every shard, and a cluster's shards are claimed before
    /// any is made, so an empty shard without a record beside them is one of theirs back on a
    /// new data dir, whatever the router saw before (it may have been restarted meanwhile).
    async fn cluster_id_for_new_shard(&self, k: usize) -> Result<String, String> {
        let infos = join_all(self.shards.iter().map(Shard::info)).await;
        let mut recorded = None;
        let mut with_galleries = Vec::new();
        for (position, (shard, info)) in self.shards.iter().zip(infos).enumerate() {
            match info {
                Ok(info) => {
                    if let Some(id) = info["cluster"]["id"].as_str() {
                        let record = &info["cluster"];
                        if record["shard"] != json!(position) || record["shards"] != json!(self.shards.len()) {
                            return Err(format!(
                                "is new, but shard {} was created as shard {} of {} (the router lists it as shard \
                                 {position} of {}); list the shards in the order and number they were created with",
                                shard.name,
                                record["shard"],
                                record["shards"],
                                self.shards.len()
                            ));
                        }
                        recorded.get_or_insert_with(|| id.to_owned());
                        if info["galleries"].as_u64().unwrap_or(0) > 0 {
                            with_galleries.push(shard.name.as_str());
                        }
                    }
                }
                Err(failure) => {
                    return Err(format!(
                        "is new and is claimed once every shard has answered, but shard {} has not (it may \
                         already belong to a cluster): {}",
                        shard.name,
                        failure.message()
                    ))
                }
            }
        }
        let id = self.id.lock().get_or_insert_with(|| recorded.unwrap_or_else(new_cluster_id)).clone();
        if !with_galleries.is_empty() {
            let claim = ClusterRecord { id: id.clone(), shard: k, shards: self.shards.len() };
            return Err(format!(
                "belongs to no cluster, but {} of cluster {id} already hold galleries: it must be a shard of this \
                 cluster back on a new, empty data dir, and the faces placed on it would be missing. Start it on \
                 its own data dir; if that data is lost for good, claim it by hand to go on without its faces: \
                 curl -X POST {}admin/cluster --data '{}'",
                with_galleries.join(", "),
                self.shards[k].name,
                serde_json::to_string(&claim).map_err(|e| e.to_string())?
            ));
        }
        Ok(id)
    }

    /// Makes sure shard `k` was verified since it last failed; an unreachable or mismatched
    /// shard is a failure naming it.
    async fn ready(&self, k: usize) -> Outcome<()> {
        let shard = &self.shards[k];
        if shard.is_verified() {
            return Ok(());
        }
        let _one = shard.verifying.lock().await;
        if shard.is_verified() {
            return Ok(());
        }
        let info = shard.info().await?;
        self.admit(k, &info).await.map_err(Failure::Unavailable)
    }

    /// The schema and sizes; before any shard answered, a 503.
    async fn shape(&self) -> Result<&Shape, Error> {
        if let Some(shape) = self.shape.get() {
            return Ok(shape);
        }
        let mut failures = Vec::new();
        for k in 0..self.shards.len() {
            match self.ready(k).await {
                Ok(()) => break,
                Err(failure) => failures.push(failure.into_error(&self.shards[k].name).message),
            }
        }
        self.shape.get().ok_or_else(|| {
            Error::new(503, ErrorKind::StorageError, format!("no shard has answered yet: {}", failures.join("; ")))
        })
    }

    /// Runs `call` on the shards `targets`, all at once; answers in the same order.
    async fn each<'a, T, F, Fut>(&'a self, targets: &[usize], mut call: F) -> Vec<(usize, Outcome<T>)>
    where
        F: FnMut(usize, &'a Shard) -> Fut,
        Fut: std::future::Future<Output = Outcome<T>> + 'a,
    {
        let calls = targets.iter().map(|&k| {
            let shard = &self.shards[k];
            let work = call(k, shard);
            async move {
                // Verifying (after a failure) and the call share the shard's timeout: a request
                // never waits longer than that for one shard.
                let both = async {
                    self.ready(k).await?;
                    work.await
                };
                let outcome = tokio::time::timeout(shard.timeout(), both).await.unwrap_or_else(|_| {
                    shard.unreachable();
                    Err(Failure::Unanswered(format!("no answer within {:?}", shard.timeout())))
                });
                (k, outcome)
            }
        });
        join_all(calls).await
    }

    fn all(&self) -> Vec<usize> {
        (0..self.shards.len()).collect()
    }

    fn error(&self, k: usize, failure: Failure) -> Error {
        failure.into_error(&self.shards[k].name)
    }

    /// Groups items by the shard of their id.
    fn place<T>(&self, items: impl IntoIterator<Item = (u64, T)>) -> BTreeMap<usize, Vec<T>> {
        let mut groups: BTreeMap<usize, Vec<T>> = BTreeMap::new();
        for (id, item) in items {
            groups.entry(shard_of(id, self.shards.len())).or_default().push(item);
        }
        groups
    }
}

/// A new cluster's id: time and process, hashed.
fn new_cluster_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

#[derive(Clone)]
struct RouterState {
    cluster: Arc<Cluster>,
    front: Arc<FrontEnd>,
}

impl FromRef<RouterState> for Arc<FrontEnd> {
    fn from_ref(state: &RouterState) -> Arc<FrontEnd> {
        state.front.clone()
    }
}

type Reply = Result<Response, Error>;

/// The first failure of a fan-out as the client's error, unless every target succeeded.
fn first_failure<T>(cluster: &Cluster, outcomes: Vec<(usize, Outcome<T>)>) -> Result<Vec<(usize, T)>, Error> {
    let mut done = Vec::with_capacity(outcomes.len());
    for (k, outcome) in outcomes {
        match outcome {
            Ok(value) => done.push((k, value)),
            Err(failure) => return Err(cluster.error(k, failure)),
        }
    }
    Ok(done)
}

/// Names the shards that failed and why: `URL (cannot connect: ...); URL (...)`.
fn named(cluster: &Cluster, failed: &[(usize, Failure)]) -> String {
    failed.iter().map(|(k, f)| format!("{} ({})", cluster.shards[*k].name, f.message())).collect::<Vec<_>>().join("; ")
}

/// `POST /v2/galleries/add/{name}` (and `POST /v2/galleries/{name}`): on every shard. 409 only
/// when every shard had it; a shard that failed is named and a retry completes the rest.
async fn gallery_add(
    State(state): State<RouterState>,
    GalleryName(name): GalleryName,
    JsonBody(body): JsonBody,
) -> Reply {
    let cluster = &state.cluster;
    let outcomes = cluster.each(&cluster.all(), |_, shard| shard.create_gallery(&name, &body)).await;
    let (mut created, mut conflicts, mut failed) = (0, Vec::new(), Vec::new());
    for (k, outcome) in outcomes {
        match outcome {
            Ok(()) => created += 1,
            Err(Failure::Refused(e)) if e.kind == ErrorKind::Conflict => conflicts.push(e),
            Err(failure) => failed.push((k, failure)),
        }
    }
    if let Some((k, failure)) =
        failed.first().filter(|(_, f)| f.kind().is_some() && created == 0 && conflicts.is_empty())
    {
        // Every shard refused the request itself (bad index parameters): the shard's error.
        return Err(cluster.error(*k, failure.clone()));
    }
    if !failed.is_empty() {
        let message = format!(
            "gallery {name:?} is on {} of {} shards; it could not be created on {}; retry to complete it",
            created + conflicts.len(),
            cluster.shards.len(),
            named(cluster, &failed)
        );
        let shard = cluster.shards[failed[0].0].name.as_str();
        return Err(Error::new(503, ErrorKind::StorageError, message).with_param("shard").with_value(shard));
    }
    match (created, conflicts.pop()) {
        (0, Some(conflict)) => Err(conflict),
        _ => Ok(StatusCode::OK.into_response()),
    }
}

/// `POST /v2/galleries/delete/{name}`: on every shard; 404 only when no shard had it.
async fn gallery_delete(State(state): State<RouterState>, GalleryName(name): GalleryName) -> Reply {
    let cluster = &state.cluster;
    let outcomes = cluster.each(&cluster.all(), |_, shard| shard.delete_gallery(&name)).await;
    let (mut deleted, mut missing, mut failed) = (0, None, Vec::new());
    for (k, outcome) in outcomes {
        match outcome {
            Ok(()) => deleted += 1,
            Err(Failure::Refused(e)) if e.kind == ErrorKind::GalleryNotFound => missing = Some(e),
            Err(failure) => failed.push((k, failure)),
        }
    }
    if let Some((k, _)) = failed.first() {
        let message = format!(
            "gallery {name:?} could not be deleted on {}; it is gone from the others; retry to complete it",
            named(cluster, &failed)
        );
        return Err(Error::new(503, ErrorKind::StorageError, message)
            .with_param("shard")
            .with_value(cluster.shards[*k].name.as_str()));
    }
    match (deleted, missing) {
        (0, Some(missing)) => Err(missing),
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// `GET|POST /v2/galleries/get/{name}`: faces summed over the shards.
async fn gallery_get(State(state): State<RouterState>, GalleryName(name): GalleryName) -> Reply {
    let cluster = &state.cluster;
    let outcomes = cluster.each(&cluster.all(), |_, shard| shard.gallery_size(&name)).await;
    let (mut faces, mut found, mut missing) = (0u64, false, None);
    for (k, outcome) in outcomes {
        match outcome {
            Ok(n) => (faces, found) = (faces + n, true),
            Err(Failure::Refused(e)) if e.kind == ErrorKind::GalleryNotFound => missing = Some(e),
            Err(failure) => return Err(cluster.error(k, failure)),
        }
    }
    match (found, missing) {
        (false, Some(missing)) => Err(missing),
        _ => Ok(axum::Json(json!({ "faces": faces })).into_response()),
    }
}

/// Every gallery of any shard with its faces summed, in name order.
async fn all_galleries(cluster: &Cluster) -> Result<Vec<(String, u64)>, Error> {
    let outcomes = cluster.each(&cluster.all(), |_, shard| shard.list_galleries()).await;
    let mut galleries: BTreeMap<String, u64> = BTreeMap::new();
    for (_, list) in first_failure(cluster, outcomes)? {
        for (name, faces) in list {
            *galleries.entry(name).or_default() += faces;
        }
    }
    Ok(galleries.into_iter().collect())
}

fn gallery_list_json(galleries: impl Iterator<Item = (String, u64)>) -> Response {
    let results: Vec<Json> = galleries.map(|(name, faces)| json!({ "name": name, "faces": faces })).collect();
    axum::Json(json!({ "results": results })).into_response()
}

async fn gallery_list(State(state): State<RouterState>) -> Reply {
    Ok(gallery_list_json(all_galleries(&state.cluster).await?.into_iter()))
}

/// `GET /stat/list/{from}/{to}`.
async fn stat_list(State(state): State<RouterState>, Path((from, to)): Path<(String, String)>) -> Reply {
    let (from, to) = (api::gallery_position("from", &from)?, api::gallery_position("to", &to)?);
    let galleries = all_galleries(&state.cluster).await?;
    Ok(gallery_list_json(galleries.into_iter().skip(from - 1).take((to + 1).saturating_sub(from))))
}

/// The faces of `ids` that exist on shard `k` (as JSON), for the checks and undo of deletes
/// and updates.
async fn existing(cluster: &Cluster, k: usize, name: &str, ids: &[u64]) -> Outcome<Vec<Json>> {
    let shape = cluster.shape.get().ok_or_else(|| Failure::Unavailable("no shape yet".into()))?;
    let mut faces = Vec::with_capacity(ids.len());
    for part in ids.chunks(shape.max_search_limit.max(1)) {
        let body = json!({ "filter": { "id": { "set": part } }, "limit": part.len(), "exact": true });
        let query =
            parse_query(&body, &shape.schema, shape.facen_size, shape.max_search_limit).map_err(Failure::Refused)?;
        let Found { results, .. } = cluster.shards[k].search(name, &body, &query).await?;
        faces.extend(results);
    }
    Ok(faces)
}

/// Checks that every id exists (404 naming the first missing one, in request order), and
/// answers the faces as they are, by shard.
async fn check_exist(
    cluster: &Cluster,
    name: &str,
    groups: &BTreeMap<usize, Vec<u64>>,
    order: &[u64],
) -> Result<HashMap<usize, Vec<Json>>, Error> {
    let targets: Vec<usize> = groups.keys().copied().collect();
    let outcomes = cluster.each(&targets, |k, _| existing(cluster, k, name, &groups[&k])).await;
    let found: HashMap<usize, Vec<Json>> = first_failure(cluster, outcomes)?.into_iter().collect();
    let present: std::collections::HashSet<u64> =
        found.values().flatten().filter_map(|face| face["id"].as_u64()).collect();
    if let Some(&id) = order.iter().find(|id| !present.contains(id)) {
        return Err(Error::face_not_found(id));
    }
    Ok(found)
}

/// Undoes the part of a batch that some shards did, and builds the error for the part that
/// failed: the failed shard's error, with a note when the undo did not work everywhere.
async fn undo<T, F, Fut>(cluster: &Cluster, done: &[(usize, T)], failed: Failed, what: &str, revert: F) -> Error
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Outcome<()>>,
{
    let outcomes = join_all(done.iter().map(|&(k, _)| {
        let work = revert(k);
        async move { (k, work.await) }
    }))
    .await;
    let stuck: Vec<(usize, Failure)> = outcomes.into_iter().filter_map(|(k, o)| o.err().map(|f| (k, f))).collect();
    let (k, failure) = failed;
    let note = match failure {
        Failure::Refused(_) => None,
        Failure::Unavailable(_) => Some(format!("; the {what} was undone on the other shards")),
        Failure::Unanswered(_) => Some(format!(
            "; the {what} was undone on the other shards, but this shard may have applied its part before it failed"
        )),
    };
    let mut error = cluster.error(k, failure);
    error.message.push_str(&note.unwrap_or_default());
    if !stuck.is_empty() {
        error.message.push_str(&format!("; undoing the {what} failed on {}", named(cluster, &stuck)));
    }
    error
}

/// Splits the outcomes of a batch into the shards that did their part and the first failure.
/// A shard's failure, by its position.
type Failed = (usize, Failure);

fn split<T>(outcomes: Vec<(usize, Outcome<T>)>) -> (Vec<(usize, T)>, Option<Failed>) {
    let (mut done, mut failed) = (Vec::new(), None);
    for (k, outcome) in outcomes {
        match outcome {
            Ok(value) => done.push((k, value)),
            Err(failure) => {
                // A refusal (the client's error) explains more than an unreachable shard.
                if failed.as_ref().is_none_or(|(_, f): &Failed| f.kind().is_none()) {
                    failed = Some((k, failure));
                }
            }
        }
    }
    (done, failed)
}

/// `POST /v2/faces/add/{name}`: checked whole, split by placement, undone everywhere if a
/// shard refuses.
async fn faces_add(
    State(state): State<RouterState>,
    GalleryName(name): GalleryName,
    JsonBody(body): JsonBody,
) -> Reply {
    let cluster = &state.cluster;
    let shape = cluster.shape().await?;
    let (schema, dim, front) = (shape.schema.clone(), shape.facen_size, state.front.clone());
    let (faces, items) = api::blocking(move || {
        let body = detect::resolve_add(body, &front, &schema, dim)?;
        let faces = wire::new_faces(&body, &schema, dim)?;
        let Json::Array(items) = body else { return Err(Error::malformed("the body must be an array of faces")) };
        Ok((faces, items))
    })
    .await?;
    let groups = cluster.place(faces.into_iter().zip(items).map(|(face, item)| (face.id, (face, item))));
    let ids: BTreeMap<usize, Vec<u64>> =
        groups.iter().map(|(&k, group)| (k, group.iter().map(|(face, _)| face.id).collect())).collect();
    let targets: Vec<usize> = groups.keys().copied().collect();
    let mut groups = groups;
    let outcomes =
        cluster.each(&targets, |k, shard| shard.add_faces(&name, groups.remove(&k).unwrap_or_default())).await;
    let (done, failed) = split(outcomes);
    if let Some(failed) = failed {
        let revert = |k: usize| cluster.shards[k].delete_faces(&name, ids[&k].clone());
        return Err(undo(cluster, &done, failed, "add", revert).await);
    }
    Ok(StatusCode::OK.into_response())
}

/// `POST /v2/faces/delete/{name}`: every id must exist; faces deleted by one shard are added
/// back if another fails.
async fn faces_delete(
    State(state): State<RouterState>,
    GalleryName(name): GalleryName,
    JsonBody(body): JsonBody,
) -> Reply {
    let cluster = &state.cluster;
    let shape = cluster.shape().await?;
    let order = wire::face_ids(&body)?;
    let groups = cluster.place(order.iter().map(|&id| (id, id)));
    let before = check_exist(cluster, &name, &groups, &order).await?;
    let targets: Vec<usize> = groups.keys().copied().collect();
    let outcomes = cluster.each(&targets, |k, shard| shard.delete_faces(&name, groups[&k].clone())).await;
    let (done, failed) = split(outcomes);
    if let Some(failed) = failed {
        let name = name.as_str();
        let revert = |k: usize| {
            let faces = Json::Array(before.get(&k).cloned().unwrap_or_default());
            let restored = wire::new_faces(&faces, &shape.schema, shape.facen_size);
            async move {
                let Json::Array(items) = faces else { return Ok(()) };
                let restored = restored.map_err(Failure::Refused)?;
                cluster.shards[k].add_faces(name, restored.into_iter().zip(items).collect()).await
            }
        };
        return Err(undo(cluster, &done, failed, "delete", revert).await);
    }
    Ok(StatusCode::OK.into_response())
}

/// `POST /v2/faces/update/{name}`: every id must exist; faces updated by one shard get their
/// old values back if another fails.
async fn faces_update(
    State(state): State<RouterState>,
    GalleryName(name): GalleryName,
    JsonBody(body): JsonBody,
) -> Reply {
    let cluster = &state.cluster;
    let shape = cluster.shape().await?;
    let updates = wire::face_updates(&body, &shape.schema, shape.facen_size)?;
    let Json::Array(items) = body else { return Err(Error::malformed("the body must be an array of faces")) };
    let order: Vec<u64> = updates.iter().map(|u| u.id).collect();
    let positions = cluster.place(order.iter().enumerate().map(|(i, &id)| (id, i)));
    let groups: BTreeMap<usize, Vec<u64>> =
        positions.iter().map(|(&k, at)| (k, at.iter().map(|&i| order[i]).collect())).collect();
    let before = check_exist(cluster, &name, &groups, &order).await?;
    let mut slots: Vec<Option<(crate::store::FaceUpdate, Json)>> = updates.into_iter().zip(items).map(Some).collect();
    let targets: Vec<usize> = positions.keys().copied().collect();
    let outcomes = cluster
        .each(&targets, |k, shard| {
            let part = positions[&k].iter().filter_map(|&i| slots[i].take()).collect();
            shard.update_faces(&name, part)
        })
        .await;
    let (done, failed) = split(outcomes);
    if let Some(failed) = failed {
        let name = name.as_str();
        let revert = |k: usize| {
            let faces = Json::Array(before.get(&k).cloned().unwrap_or_default());
            let restored = wire::face_updates(&faces, &shape.schema, shape.facen_size);
            async move {
                let Json::Array(items) = faces else { return Ok(()) };
                let restored = restored.map_err(Failure::Refused)?;
                cluster.shards[k].update_faces(name, restored.into_iter().zip(items).collect()).await.map(drop)
            }
        };
        return Err(undo(cluster, &done, failed, "update", revert).await);
    }
    let mut answers: Vec<Json> = vec![Json::Null; order.len()];
    for (k, faces) in done {
        for (&i, face) in positions[&k].iter().zip(faces) {
            answers[i] = face;
        }
    }
    // One face: its dict, as a shard answers; several: {"results": [...]}.
    let reply = if answers.len() == 1 { answers.pop().unwrap_or_default() } else { json!({ "results": answers }) };
    Ok(axum::Json(reply).into_response())
}

/// `GET /v2/faces/get/{name}/{id}`: from the shard that holds the face.
async fn faces_get(State(state): State<RouterState>, FacePath(name, id): FacePath) -> Reply {
    let cluster = &state.cluster;
    let k = shard_of(id, cluster.shards.len());
    let outcomes = cluster.each(&[k], |_, shard| shard.get_face(&name, id)).await;
    let face = first_failure(cluster, outcomes)?.pop().map(|(_, face)| face).unwrap_or_default();
    Ok(axum::Json(face).into_response())
}

/// Whether `ignore_errors` is on, from the query string or the body.
fn ignore_errors(raw_query: Option<&str>, body: &Json) -> Result<bool, Error> {
    let from_query = raw_query.into_iter().flat_map(|q| q.split('&')).find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == "ignore_errors").then(|| value.to_owned())
    });
    if let Some(value) = from_query {
        return match value.as_str() {
            "" | "true" | "on" | "1" | "yes" => Ok(true),
            "false" | "off" | "0" | "no" => Ok(false),
            _ => Err(Error::bad_param("ignore_errors", "ignore_errors must be true or false").with_value(value)),
        };
    }
    match body.get("ignore_errors") {
        None | Some(Json::Null) => Ok(false),
        Some(Json::Bool(on)) => Ok(*on),
        Some(other) => {
            Err(Error::bad_param("ignore_errors", "ignore_errors must be true or false").with_value(other.clone()))
        }
    }
}

/// The facen of a stored face, from the shard that holds it.
async fn stored_facen(cluster: &Cluster, gallery: &str, id: u64) -> Result<Vec<f32>, Error> {
    let k = shard_of(id, cluster.shards.len());
    let ids = [id];
    let outcomes = cluster.each(&[k], |k, _| existing(cluster, k, gallery, &ids)).await;
    let found = first_failure(cluster, outcomes)?.pop().map(|(_, faces)| faces).unwrap_or_default();
    let face = found.first().ok_or_else(|| Error::face_not_found(id))?;
    let shape = cluster.shape().await?;
    let text = face["facen"].as_str().unwrap_or_default();
    crate::facen::decode(text, shape.facen_size)
        .map_err(|e| Error::internal(format!("shard {k} answered a bad facen: {e}")))
}

/// `POST /v2/faces/search/{name}`: every shard (or those owning an id `set`), merged.
async fn faces_search(
    State(state): State<RouterState>,
    GalleryName(name): GalleryName,
    RawQuery(raw_query): RawQuery,
    JsonBody(mut body): JsonBody,
) -> Reply {
    let cluster = &state.cluster;
    let shape = cluster.shape().await?;
    let ignore = ignore_errors(raw_query.as_deref(), &body)?;
    if let Some(map) = body.as_object_mut() {
        map.remove("ignore_errors");
    }
    let sample = match detect::face_reference(&body) {
        Some((gallery, id)) => Some(stored_facen(cluster, &gallery, id).await),
        None => None,
    };
    let (front, dim) = (state.front.clone(), shape.facen_size);
    let body = api::blocking(move || {
        detect::resolve_search(body, &front, dim, |_, _| sample.unwrap_or_else(|| Err(Error::internal("no sample"))))
    })
    .await?;
    let query = parse_query(&body, &shape.schema, shape.facen_size, shape.max_search_limit)?;
    let targets: Vec<usize> = match query.id_set() {
        Some(ids) => cluster.place(ids.iter().map(|&id| (id, ()))).into_keys().collect(),
        None => cluster.all(),
    };
    let outcomes = cluster.each(&targets, |_, shard| shard.search(&name, &body, &query)).await;
    let (mut found, mut failed, mut stats) = (Vec::new(), Vec::new(), Vec::new());
    for (k, outcome) in outcomes {
        match outcome {
            Ok(Found { results, stat }) => {
                found.extend(results);
                if !stat.is_empty() {
                    stats.push(stat);
                }
            }
            Err(failure) if ignore && failure.is_unavailable() => failed.push((k, failure)),
            Err(failure) => return Err(cluster.error(k, failure)),
        }
    }
    let mut reply = merge(found, &query);
    if ignore && !failed.is_empty() {
        let names: Vec<Json> = failed
            .into_iter()
            .map(|(k, f)| json!({ "shard": cluster.shards[k].name, "message": cluster.error(k, f).message }))
            .collect();
        reply["failed_shards"] = Json::Array(names);
    }
    let mut response = axum::Json(reply).into_response();
    stats.sort_unstable();
    stats.dedup();
    let stat = match stats.as_slice() {
        [one] => one.clone(),
        [] => "without_index".to_owned(),
        _ => "mixed".to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&stat) {
        response.headers_mut().insert("x-search-stat", value);
    }
    Ok(response)
}

/// The best `limit` of the shards' results in the query's order (ties by id), and the cursor
/// of the next page when this one is full.
fn merge(found: Vec<Json>, query: &Query) -> Json {
    let mut ranked: Vec<(u128, Json)> = found
        .into_iter()
        .map(|face| {
            let id = face["id"].as_u64().unwrap_or_default();
            let score = score_of(&face);
            (rank(query.sort, id, score.unwrap_or(0.0)), face)
        })
        .collect();
    ranked.sort_unstable_by_key(|(rank, _)| *rank);
    ranked.truncate(query.limit);
    let next_page = ranked.last().filter(|_| ranked.len() == query.limit).map(|(_, face)| {
        let id = face["id"].as_u64().unwrap_or_default();
        Cursor::at(query.sort, id, score_of(face)).encode()
    });
    let results: Vec<Json> = ranked.into_iter().map(|(_, face)| face).collect();
    let mut reply = json!({ "results": results });
    if let Some(next_page) = next_page {
        reply["next_page"] = Json::from(next_page);
    }
    reply
}

/// A result's score as the f32 the shard computed (its JSON number is the f32's shortest
/// decimal form, which reads back as exactly that f32).
fn score_of(face: &Json) -> Option<f32> {
    face.get("score").filter(|s| s.is_number()).and_then(|s| s.to_string().parse::<f32>().ok())
}

/// `GET /v2/admin/status`: one shard's status as it is; several, side by side.
async fn admin_status(State(state): State<RouterState>) -> Reply {
    let cluster = &state.cluster;
    let outcomes = join_all(cluster.shards.iter().map(Shard::status)).await;
    if let [single] = outcomes.as_slice() {
        return single.clone().map(|s| axum::Json(s).into_response()).map_err(|f| cluster.error(0, f));
    }
    let (mut faces, mut shards) = (0, Vec::new());
    for (shard, outcome) in cluster.shards.iter().zip(outcomes) {
        match outcome {
            Ok(status) => {
                faces += status["faces"].as_u64().unwrap_or(0);
                shards.push(json!({ "shard": shard.name, "status": status }));
            }
            Err(failure) => shards.push(json!({ "shard": shard.name, "error": failure.into_error(&shard.name) })),
        }
    }
    Ok(axum::Json(json!({ "shards": shards, "faces": faces })).into_response())
}

/// `POST /v2/admin/snapshot`: every shard takes one.
async fn admin_snapshot(State(state): State<RouterState>) -> Reply {
    let cluster = &state.cluster;
    let outcomes = cluster.each(&cluster.all(), |_, shard| shard.snapshot()).await;
    let mut done = first_failure(cluster, outcomes)?;
    if done.len() == 1 {
        return Ok(axum::Json(done.remove(0).1).into_response());
    }
    let shards: Vec<Json> =
        done.into_iter().map(|(k, info)| json!({ "shard": cluster.shards[k].name, "snapshot": info })).collect();
    Ok(axum::Json(json!({ "shards": shards })).into_response())
}

/// The router's routes: the galleries API v2 of a shard over the cluster, and detection.
pub fn routes(cluster: Arc<Cluster>, max_body_bytes: usize, front: Arc<FrontEnd>) -> axum::Router {
    let state = RouterState { cluster, front: front.clone() };
    let galleries = api::galleries_routes!()
        // Checked before routing (`api::finish`), with the same limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    let limits = api::BodyLimits::new(Some(max_body_bytes), &front);
    api::finish(galleries.merge(detect::routes(front)), limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::Sort;

    fn query(sort: Sort, limit: usize) -> Query {
        let facen = (sort == Sort::ScoreDescending).then(|| crate::search::FacenFilter {
            vector: vec![1.0],
            inverse_norm: 1.0,
            min_score: -1.0,
            max_score: 1.0,
        });
        Query { limit, sort, facen, conditions: Vec::new(), exact: true, after: None }
    }

    fn ids(reply: &Json) -> Vec<u64> {
        reply["results"].as_array().unwrap().iter().map(|f| f["id"].as_u64().unwrap()).collect()
    }

    #[test]
    fn merged_results_follow_the_sort_with_ties_by_id() {
        // Three shards' answers, each in its own order; 0.1f32 and 0.3f32 tie across shards.
        let found = vec![
            json!({"id": 9, "score": 0.3f32}),
            json!({"id": 4, "score": 0.1f32}),
            json!({"id": 2, "score": 0.3f32}),
            json!({"id": 7, "score": 0.9f32}),
            json!({"id": 1, "score": 0.1f32}),
        ];
        let reply = merge(found.clone(), &query(Sort::ScoreDescending, 4));
        assert_eq!(ids(&reply), vec![7, 2, 9, 1]);
        let cursor = Cursor::decode(reply["next_page"].as_str().unwrap()).unwrap();
        assert_eq!(cursor, Cursor::Score(0.1, 1));
        let reply = merge(found.clone(), &query(Sort::ScoreDescending, 5));
        assert_eq!(ids(&reply), vec![7, 2, 9, 1, 4]);
        let reply = merge(found.clone(), &query(Sort::ScoreDescending, 6));
        assert!(reply.get("next_page").is_none(), "a page that is not full has no next page");
        assert_eq!(ids(&merge(found.clone(), &query(Sort::IdDescending, 3))), vec![9, 7, 4]);
        assert_eq!(ids(&merge(found, &query(Sort::IdAscending, 10))), vec![1, 2, 4, 7, 9]);
    }

    #[test]
    fn scores_read_back_as_the_shards_f32() {
        for score in [0.1f32, 0.907, -0.2617436, 1.0, 0.99999994] {
            let face = crate::api::wire::face_json(
                &crate::store::Face { id: 1, vector: vec![0.0], meta: Vec::new() },
                Some(score),
                &Schema::from_yaml("[]", "test").unwrap(),
            );
            let text = serde_json::to_string(&face).unwrap();
            assert_eq!(score_of(&serde_json::from_str(&text).unwrap()), Some(score), "{text}");
        }
    }

    #[test]
    fn ignore_errors_from_the_query_or_the_body() {
        assert!(ignore_errors(Some("ignore_errors=true"), &Json::Null).unwrap());
        assert!(ignore_errors(Some("a=1&ignore_errors"), &Json::Null).unwrap());
        assert!(!ignore_errors(Some("ignore_errors=off"), &json!({"ignore_errors": true})).unwrap());
        assert!(ignore_errors(None, &json!({"ignore_errors": true})).unwrap());
        assert!(!ignore_errors(None, &json!({})).unwrap());
        let e = ignore_errors(Some("ignore_errors=maybe"), &Json::Null).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("ignore_errors"));
    }
}
