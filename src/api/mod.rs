//! The galleries API v2 over HTTP: the original product's "direct API" of a storage shard.
//!
//! Paths, methods and statuses are the original's (see `docs/api.md`). Bodies are read as
//! JSON whatever their Content-Type, because the original's examples post with `curl --data`.
//! Work that scales with the data (adds, deletes, updates, searches) runs on tokio's blocking
//! pool so that it never stalls the reactor. Every error, including unknown paths, wrong
//! methods and oversized bodies, is answered with the one body of [`Error`].

pub mod detect;
mod errors;
pub mod shard;
pub mod wire;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRef, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodFilter, MethodRouter};
use axum::Router;
use serde_json::{json, Value as Json};

use crate::durable::cluster::{self, ClusterRecord};
use crate::durable::Database;
use crate::engine::{check_gallery_name, GalleryInfo};
use crate::error::{Error, ErrorKind};
use crate::search::parse::parse_query;
use detect::FrontEnd;

/// HTTP settings of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { max_body_bytes: 32 << 20 }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(kind = ?self.kind, "{}", self.message);
        }
        (status, axum::Json(json!({ "error": self }))).into_response()
    }
}

type Reply = Result<Response, Error>;

/// The request body as JSON (an empty body is `null`), whatever the Content-Type.
pub(crate) struct JsonBody(pub(crate) Json);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                // `finish` refuses a body over the limit before this is reached.
                Error::new(413, ErrorKind::BadParam, "the request body is too large (max_body_bytes)")
                    .with_param("body")
            } else {
                Error::malformed(format!("cannot read the request body: {rejection}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Json::Null));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| Error::malformed(format!("the request body is not valid JSON: {e}")))
    }
}

/// The `{name}` path segment, checked as a gallery name.
pub(crate) struct GalleryName(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for GalleryName {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::bad_param("name", format!("bad gallery name in the path: {e}")))?;
        check_gallery_name(&name)?;
        Ok(GalleryName(name))
    }
}

/// The `{name}/{id}` path segments of `faces/get`: a gallery name and a face id.
pub(crate) struct FacePath(pub(crate) String, pub(crate) u64);

impl<S: Send + Sync> FromRequestParts<S> for FacePath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((name, id)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::bad_param("name", format!("bad gallery name or face id in the path: {e}")))?;
        check_gallery_name(&name)?;
        let id = id.parse::<u64>().map_err(|_| {
            Error::bad_param("id", "the face id in the path must be an integer from 0 to 18446744073709551615")
                .with_value(id)
        })?;
        Ok(FacePath(name, id))
    }
}

/// Runs engine work (or file reads) on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::internal(format!("a request task failed: {e}")))?
}

fn empty(status: StatusCode) -> Response {
    status.into_response()
}

fn json_reply(body: Json) -> Response {
    axum::Json(body).into_response()
}

/// `POST /v2/galleries/add/{name}`, with an optional body of index parameters for the gallery.
async fn gallery_add(
    State(database): State<Arc<Database>>,
    GalleryName(name): GalleryName,
    JsonBody(body): JsonBody,
) -> Reply {
    blocking(move || shard::create_gallery(&database, &name, &body)).await?;
    Ok(empty(StatusCode::OK))
}

async fn gallery_delete(State(database): State<Arc<Database>>, GalleryName(name): GalleryName) -> Reply {
    blocking(move || shard::delete_gallery(&database, &name)).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn gallery_get(State(database): State<Arc<Database>>, GalleryName(name): GalleryName) -> Reply {
    let faces = shard::gallery_size(&database, &name)?;
    Ok(json_reply(json!({ "faces": faces })))
}

fn gallery_list_json(galleries: impl Iterator<Item = GalleryInfo>) -> Response {
    let results: Vec<Json> = galleries.map(|g| json!({ "name": g.name, "faces": g.faces })).collect();
    json_reply(json!({ "results": results }))
}

async fn gallery_list(State(database): State<Arc<Database>>) -> Reply {
    Ok(gallery_list_json(shard::list_galleries(&database).into_iter()))
}

/// A `from` or `to` of `/stat/list`: a gallery number from 1.
pub(crate) fn gallery_position(param: &str, text: &str) -> Result<usize, Error> {
    text.parse::<usize>().ok().filter(|&n| n >= 1).ok_or_else(|| {
        Error::bad_param(
            param,
            format!("{param} must be a gallery number from 1 (galleries are numbered in name order)"),
        )
        .with_value(text)
    })
}

/// `GET /stat/list/{from}/{to}`: galleries number `from` to `to` (1-based) in name order.
async fn stat_list(State(database): State<Arc<Database>>, Path((from, to)): Path<(String, String)>) -> Reply {
    let (from, to) = (gallery_position("from", &from)?, gallery_position("to", &to)?);
    let galleries = shard::list_galleries(&database).into_iter().skip(from - 1).take((to + 1).saturating_sub(from));
    Ok(gallery_list_json(galleries))
}

async fn faces_add(
    State(database): State<Arc<Database>>,
    State(front): State<Arc<FrontEnd>>,
    GalleryName(name): GalleryName,
    JsonBody(body): JsonBody,
) -> Reply {
    blocking(move || {
        let engine = database.engine();
        let (schema, dim) = (engine.schema(), engine.config().facen_size);
        let body = detect::resolve_add(body, &front, &schema, dim)?;
        let faces = wire::new_faces(&body, &schema, dim)?;
        shard::add_faces(&database, &name, faces)
    })
    .await?;
    Ok(empty(StatusCode::OK))
}

/// `GET /v2/faces/get/{name}/{id}`: one face as it is stored.
async fn faces_get(State(database): State<Arc<Database>>, FacePath(name, id): FacePath) -> Reply {
    Ok(json_reply(shard::get_face(&database, &name, id)?))
}

async fn faces_delete(
    State(database): State<Arc<Database>>,
    GalleryName(name): GalleryName,
    JsonBody(body): JsonBody,
) -> Reply {
    let ids = wire::face_ids(&body)?;
    blocking(move || shard::delete_faces(&database, &name, ids)).await?;
    Ok(empty(StatusCode::OK))
}

async fn faces_update(
    State(database): State<Arc<Database>>,
    GalleryName(name): GalleryName,
    JsonBody(body): JsonBody,
) -> Reply {
    let reply = blocking(move || {
        let engine = database.engine();
        let updates = wire::face_updates(&body, &engine.schema(), engine.config().facen_size)?;
        let count = updates.len();
        let mut faces = shard::update_faces(&database, &name, updates)?;
        // One face: its dict, as the original answers; several: {"results": [...]}.
        Ok(match (count, faces.pop()) {
            (1, Some(face)) => face,
            (_, last) => {
                faces.extend(last);
                json!({ "results": faces })
            }
        })
    })
    .await?;
    Ok(json_reply(reply))
}

async fn faces_search(
    State(database): State<Arc<Database>>,
    State(front): State<Arc<FrontEnd>>,
    GalleryName(name): GalleryName,
    JsonBody(body): JsonBody,
) -> Reply {
    let (body, plan) = blocking(move || {
        let config = database.config();
        let body = detect::resolve_search(body, &front, config.facen_size, |gallery, id| {
            database.get_face(gallery, id).map(|face| face.vector.to_vec()).map_err(Error::from)
        })?;
        let query = parse_query(&body, &database.schema(), config.facen_size, config.max_search_limit)?;
        let found = shard::search(&database, &name, &query)?;
        let mut body = json!({ "results": found.results });
        if let Some(next_page) = found.next_page {
            body["next_page"] = Json::from(next_page);
        }
        Ok((body, found.plan))
    })
    .await?;
    let mut response = json_reply(body);
    response.headers_mut().insert("x-search-stat", HeaderValue::from_static(plan.stat()));
    Ok(response)
}

async fn unknown_path(uri: Uri) -> Error {
    let path = uri.path();
    let gallery_path = ["/v2/galleries/", "/v2/faces/"].iter().any(|p| path.starts_with(p));
    if gallery_path && path.ends_with('/') && path.matches('/').count() == 4 {
        return Error::bad_param("name", "the gallery name in the path is empty").with_value("");
    }
    Error::new(404, ErrorKind::NotFound, format!("no such endpoint: {path}")).with_param("path").with_value(path)
}

async fn wrong_method(method: axum::http::Method, uri: Uri) -> Response {
    let error = Error::new(405, ErrorKind::MalformedRequest, format!("{method} is not allowed on {}", uri.path()))
        .with_param("method")
        .with_value(method.as_str());
    let mut response = error.into_response();
    let path = uri.path();
    let allow = if ["/stat/", "/uploads/", "/v2/faces/get/"].iter().any(|p| path.starts_with(p)) {
        "GET"
    } else if path.starts_with("/v2/galleries/get/")
        || ["/v2/galleries/list", "/v2/admin/status", "/v2/admin/cluster"].contains(&path)
    {
        "GET, POST"
    } else {
        "POST"
    };
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// What the handlers share: the database, the detection front-end, and the shard's cluster record (read at start, replaced by a claim).
#[derive(Clone)]
struct AppState {
    database: Arc<Database>,
    front: Arc<FrontEnd>,
    record: Arc<parking_lot::RwLock<Option<ClusterRecord>>>,
}

impl FromRef<AppState> for Arc<FrontEnd> {
    fn from_ref(state: &AppState) -> Arc<FrontEnd> {
        state.front.clone()
    }
}

impl FromRef<AppState> for Arc<Database> {
    fn from_ref(state: &AppState) -> Arc<Database> {
        state.database.clone()
    }
}

/// `GET /v2/admin/status`: the log's counters, what recovery did, snapshots, memory.
async fn admin_status(State(database): State<Arc<Database>>) -> Reply {
    let status = blocking(move || Ok(database.status())).await?;
    Ok(json_reply(status))
}

/// `POST /v2/admin/snapshot`: takes a snapshot now and answers once it is on disk.
async fn admin_snapshot(State(database): State<Arc<Database>>) -> Reply {
    Ok(json_reply(blocking(move || shard::snapshot(&database)).await?))
}

/// `GET /v2/admin/cluster`: what a router needs of a shard: its cluster record, the facen size,
/// the schema and the search limit, and how many faces and galleries it holds (an unclaimed
/// shard with faces cannot join a cluster, nor an empty one beside claimed shards with galleries).
async fn cluster_get(State(state): State<AppState>) -> Reply {
    let record = state.record.read().clone();
    Ok(json_reply(shard_info(&state.database, record.as_ref())))
}

fn shard_info(database: &Database, record: Option<&ClusterRecord>) -> Json {
    let engine = database.engine();
    json!({
        "cluster": record,
        "facen_size": engine.config().facen_size,
        "max_search_limit": engine.config().max_search_limit,
        "schema": engine.schema().to_yaml(),
        "faces": engine.counted_faces(),
        "galleries": engine.list_galleries().len(),
    })
}

/// `POST /v2/admin/cluster` `{"id", "shard", "shards"}`: a router claims the shard. Claiming
/// again with the same record is a no-op; another record is a 409.
async fn cluster_claim(State(state): State<AppState>, JsonBody(body): JsonBody) -> Reply {
    let record: ClusterRecord = serde_json::from_value(body.clone()).map_err(|e| {
        Error::malformed(format!("a cluster claim is {{\"id\": text, \"shard\": n, \"shards\": n}}: {e}"))
            .with_value(body)
    })?;
    record.check().map_err(|e| Error::bad_param("shard", e.to_string()))?;
    let held = state.record.clone();
    let dir = state.database.data_dir().to_owned();
    let record = blocking(move || {
        // Under the write lock: two claims at once cannot both write.
        let mut held = held.write();
        match &*held {
            Some(held) if *held == record => {}
            Some(held) => {
                return Err(Error::conflict(format!("this shard is already {}", held.describe()))
                    .with_value(serde_json::to_value(held).unwrap_or_default()))
            }
            None => {
                cluster::write_record(&dir, &record).map_err(|e| Error::internal(e.to_string()))?;
                *held = Some(record.clone());
            }
        }
        Ok(record)
    })
    .await?;
    Ok(json_reply(shard_info(&state.database, Some(&record))))
}

/// Refuses a call a router meant for another shard: its [`cluster::HEADER`] must name this
/// shard's record. Calls without the header (a client talking to the shard directly) pass.
async fn expect_cluster(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(value) = request.headers().get(cluster::HEADER) else { return next.run(request).await };
    let expected = match value
        .to_str()
        .map_err(|e| e.to_string())
        .and_then(|text| ClusterRecord::from_header(text).map_err(|e| e.to_string()))
    {
        Ok(expected) => expected,
        Err(e) => return Error::bad_param(cluster::HEADER, e).into_response(),
    };
    let held = state.record.read().clone();
    if held.as_ref() == Some(&expected) {
        return next.run(request).await;
    }
    let what = match held {
        Some(held) => format!("this shard is {}", held.describe()),
        None => "this shard belongs to no cluster (started on a new, empty data dir?)".to_owned(),
    };
    Error::new(
        421,
        ErrorKind::WrongShard,
        format!("{what}, but the request was sent to {}; nothing was done", expected.describe()),
    )
    .with_param(cluster::HEADER)
    .with_value(expected.to_header())
    .into_response()
}

/// An endpoint of the galleries API v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Status,
    Snapshot,
    GalleryAdd,
    GalleryDelete,
    GalleryGet,
    GalleryList,
    StatList,
    FacesAdd,
    FacesGet,
    FacesDelete,
    FacesUpdate,
    FacesSearch,
}

const GET: MethodFilter = MethodFilter::GET;
const POST: MethodFilter = MethodFilter::POST;
const GET_POST: MethodFilter = MethodFilter::GET.or(MethodFilter::POST);

/// The galleries API v2: every path, the endpoint that answers it and the methods it takes. A
/// shard (here) and a router (`router/mod.rs`) answer the same table, each with its handlers.
const GALLERIES_API: &[(&str, Endpoint, MethodFilter)] = &[
    ("/v2/admin/status", Endpoint::Status, GET_POST),
    ("/v2/admin/snapshot", Endpoint::Snapshot, POST),
    ("/v2/galleries/add/{name}", Endpoint::GalleryAdd, POST),
    ("/v2/galleries/{name}", Endpoint::GalleryAdd, POST),
    ("/v2/galleries/delete/{name}", Endpoint::GalleryDelete, POST),
    ("/v2/galleries/get/{name}", Endpoint::GalleryGet, GET_POST),
    ("/v2/galleries/list", Endpoint::GalleryList, GET_POST),
    ("/stat/list/{from}/{to}", Endpoint::StatList, GET),
    ("/v2/faces/add/{name}", Endpoint::FacesAdd, POST),
    ("/v2/faces/get/{name}/{id}", Endpoint::FacesGet, GET),
    ("/v2/faces/delete/{name}", Endpoint::FacesDelete, POST),
    ("/v2/faces/update/{name}", Endpoint::FacesUpdate, POST),
    ("/v2/faces/search/{name}", Endpoint::FacesSearch, POST),
    ("/v2/{name}/search", Endpoint::FacesSearch, POST),
];

/// The routes of [`GALLERIES_API`], each answered by `answer(endpoint, methods)`.
pub(crate) fn galleries_api<S: Clone + Send + Sync + 'static>(
    answer: impl Fn(Endpoint, MethodFilter) -> MethodRouter<S>,
) -> Router<S> {
    GALLERIES_API
        .iter()
        .fold(Router::new(), |routes, &(path, endpoint, methods)| routes.route(path, answer(endpoint, methods)))
}

/// [`galleries_api`] answered by the handlers in scope where it is used: a module that serves
/// the galleries API names its handlers after the endpoints (`gallery_add`, `faces_search`...).
macro_rules! galleries_routes {
    () => {
        $crate::api::galleries_api(|endpoint, methods| {
            use axum::routing::on;
            use $crate::api::Endpoint;
            match endpoint {
                Endpoint::Status => on(methods, admin_status),
                Endpoint::Snapshot => on(methods, admin_snapshot),
                Endpoint::GalleryAdd => on(methods, gallery_add),
                Endpoint::GalleryDelete => on(methods, gallery_delete),
                Endpoint::GalleryGet => on(methods, gallery_get),
                Endpoint::GalleryList => on(methods, gallery_list),
                Endpoint::StatList => on(methods, stat_list),
                Endpoint::FacesAdd => on(methods, faces_add),
                Endpoint::FacesGet => on(methods, faces_get),
                Endpoint::FacesDelete => on(methods, faces_delete),
                Endpoint::FacesUpdate => on(methods, faces_update),
                Endpoint::FacesSearch => on(methods, faces_search),
            }
        })
    };
}
pub(crate) use galleries_routes;

/// The API's routes over a database and a detection front-end; fails when the database's
/// cluster record cannot be read.
pub fn router(
    database: Arc<Database>,
    config: &ApiConfig,
    front: Arc<FrontEnd>,
) -> Result<Router, cluster::ClusterError> {
    let record = cluster::read_record(database.data_dir())?;
    let state = AppState { database, front: front.clone(), record: Arc::new(parking_lot::RwLock::new(record)) };
    let admin = Router::new().route("/v2/admin/cluster", get(cluster_get).post(cluster_claim));
    let galleries = galleries_routes!()
        .layer(axum::middleware::from_fn_with_state(state.clone(), expect_cluster))
        .merge(admin)
        // Checked before routing (`finish`), with the same limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    let limits = BodyLimits::new(Some(config.max_body_bytes), &front);
    Ok(finish(galleries.merge(detect::routes(front)), limits))
}

/// How large a request body may be: `max_body_bytes` for the galleries API, the photo limit
/// (`body_image_length`, plus room for a multipart envelope) for `/v2/detect`. One check,
/// before routing, so that every refusal of a body states the limit that applies to it.
#[derive(Clone)]
pub(crate) struct BodyLimits {
    /// `None` on a server without the galleries API (`facedb extract`).
    json: Option<usize>,
    photo: usize,
    photo_too_large: Error,
}

impl BodyLimits {
    pub(crate) fn new(max_body_bytes: Option<usize>, front: &FrontEnd) -> BodyLimits {
        BodyLimits {
            json: max_body_bytes,
            photo: detect::body_limit(front),
            photo_too_large: detect::photo_too_large(front),
        }
    }

    /// The limit of a path and the refusal of a body over it.
    fn of(&self, path: &str) -> (usize, Error) {
        match self.json {
            Some(limit) if !path.starts_with("/v2/detect") => (limit, body_too_large(limit)),
            _ => (self.photo, self.photo_too_large.clone()),
        }
    }
}

/// The refusal of a galleries API body over `max_body_bytes`.
fn body_too_large(limit: usize) -> Error {
    Error::new(413, ErrorKind::BadParam, format!("the request body is larger than {limit} bytes (max_body_bytes)"))
        .with_param("body")
}

/// The API's answers to unknown paths and wrong methods, on a router of routes.
/// Every request's body is read whole (at most the limit of its path, see [`BodyLimits`])
/// before routing: a refusal made before a handler reads the body (a bad gallery name or query
/// parameter, an unknown path, a wrong method) then reaches a client still sending a large body,
/// instead of a connection closed under it.
pub(crate) fn finish(routes: Router, limits: BodyLimits) -> Router {
    routes.fallback(unknown_path).method_not_allowed_fallback(wrong_method).layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let (limit, too_large) = limits.of(request.uri().path());
            read_body_first(request, next, limit, too_large)
        },
    ))
}

async fn read_body_first(request: Request, next: Next, limit: usize, too_large: Error) -> Response {
    let (parts, body) = request.into_parts();
    // A Content-Length over the limit is refused at once, before any of the body is read.
    if axum::body::HttpBody::size_hint(&body).lower() > limit as u64 {
        return too_large.into_response();
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Err(e) if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) => {
            too_large.into_response()
        }
        // The client went away mid-body (or sent broken chunks).
        Err(e) => Error::malformed(format!("cannot read the request body: {e}")).into_response(),
    }
}

/// The routes of `facedb extract`: detection alone, no galleries.
pub fn extract_router(front: Arc<FrontEnd>) -> Router {
    let limits = BodyLimits::new(None, &front);
    finish(detect::routes(front), limits)
}
