//! One storage shard as the router sees it: in this process (`facedb serve`'s local shards,
//! called directly) or another (`facedb shard`, called over HTTP with pooled keep-alive
//! connections).
//!
//! Every call is bounded twice: a shard takes at most `max_inflight` calls at once (more wait
//! for a permit), and a call, waiting included, fails after the `overall` timeout. A shard
//! that stops answering thus holds at most `max_inflight` of the router's requests, each for
//! at most the timeout, and requests that do not need it never wait for it.
//!
//! A remote shard is verified before its first use and again after every failure to reach it:
//! its cluster record must be the router's, and its schema and facen size the cluster's (see
//! [`super::Cluster`]). Once verified, every call carries the record the router expects
//! ([`crate::durable::cluster::HEADER`]) and the shard refuses a call meant for another (421
//! `WRONG_SHARD`): a shard restarted on an empty or another shard's data dir, even between two
//! calls that both succeeded in reaching a process at its address, is refused on the first
//! call that reaches it, before it does anything. Such a refusal counts as a failure to reach
//! the shard, so the next call verifies it again and names what is wrong.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tokio::sync::Semaphore;

use crate::api::shard;
use crate::durable::Database;
use crate::error::{Error, ErrorKind};
use crate::search::Query;
use crate::store::{Face, FaceUpdate};

/// Why a shard call did not succeed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The shard answered with an error of its own (a duplicate id, a gallery not found...).
    Refused(Error),
    /// The shard could not be used and did nothing: no connection, not verified, or it refused a
    /// call meant for another shard.
    Unavailable(String),
    /// The call may have reached the shard but no proper answer came (no answer in time, the
    /// connection cut, nonsense): the shard may have done what it was asked.
    Unanswered(String),
}

impl Failure {
    /// The error a client sees: the shard's own, or 503 `STORAGE_ERROR` naming the shard.
    pub fn into_error(self, shard: &str) -> Error {
        match self {
            Failure::Refused(error) => error,
            Failure::Unavailable(message) | Failure::Unanswered(message) => Error::storage(shard, message),
        }
    }

    /// What went wrong, without the shard's name.
    pub fn message(&self) -> &str {
        match self {
            Failure::Refused(error) => &error.message,
            Failure::Unavailable(message) | Failure::Unanswered(message) => message,
        }
    }

    /// The shard's own error kind; `None` when the shard could not be used.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Failure::Refused(error) => Some(error.kind),
            Failure::Unavailable(_) | Failure::Unanswered(_) => None,
        }
    }

    /// Whether the shard could not be used (rather than refusing the request itself).
    pub fn is_unavailable(&self) -> bool {
        self.kind().is_none()
    }
}

pub type Outcome<T> = Result<T, Failure>;

/// Where a shard runs.
pub enum Backend {
    Local(Arc<Database>),
    Remote { client: reqwest::Client, base: url::Url },
}

pub struct Shard {
    /// The shard's `master` URL as configured, or `local shard K`: how errors name it.
    pub name: String,
    pub backend: Backend,
    permits: Semaphore,
    timeout: Duration,
    /// Whether the shard was checked since it last failed to answer (local ones always are).
    verified: AtomicBool,
    /// One verification of this shard at a time (two requests must not claim it twice).
    pub verifying: tokio::sync::Mutex<()>,
    /// The record this shard was verified with, as the [`crate::durable::cluster::HEADER`] sent with
    /// every call but those of the verification itself; `None` until it was seen with one.
    expected: parking_lot::Mutex<Option<reqwest::header::HeaderValue>>,
}

/// A search's answer from one shard: its results (JSON faces with `id` and `score`) and its
/// `X-search-stat`.
pub struct Found {
    pub results: Vec<Json>,
    pub stat: String,
}

impl Shard {
    pub fn local(name: String, database: Arc<Database>) -> Shard {
        Shard {
            name,
            backend: Backend::Local(database),
            permits: Semaphore::new(Semaphore::MAX_PERMITS),
            timeout: Duration::from_secs(3600),
            verified: AtomicBool::new(true),
            verifying: tokio::sync::Mutex::new(()),
            expected: parking_lot::Mutex::new(None),
        }
    }

    pub fn remote(base: url::Url, client: reqwest::Client, max_inflight: usize, timeout: Duration) -> Shard {
        Shard {
            name: base.to_string(),
            backend: Backend::Remote { client, base },
            permits: Semaphore::new(max_inflight.max(1)),
            timeout,
            verified: AtomicBool::new(false),
            verifying: tokio::sync::Mutex::new(()),
            expected: parking_lot::Mutex::new(None),
        }
    }

    /// How long a call may take, waiting for a permit included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_verified(&self) -> bool {
        self.verified.load(Ordering::Acquire)
    }

    pub fn set_verified(&self, verified: bool) {
        self.verified.store(verified, Ordering::Release);
    }

    /// Marks the shard verified as holding `record`: its calls carry it from now on.
    pub fn verified_as(&self, record: &crate::durable::cluster::ClusterRecord) {
        *self.expected.lock() = reqwest::header::HeaderValue::from_str(&record.to_header()).ok();
        self.set_verified(true);
    }

    /// Whether the shard was seen with its cluster record: if it comes back without one, it
    /// came back on another data dir, which must not be claimed in its place.
    pub fn was_recorded(&self) -> bool {
        self.expected.lock().is_some()
    }

    /// Runs `work` on the shard: with a permit, within the timeout; an unreachable remote shard
    /// is marked for verification.
    async fn bounded<T>(&self, work: impl std::future::Future<Output = Outcome<T>>) -> Outcome<T> {
        let run = async {
            let _permit = self.permits.acquire().await.map_err(|_| Failure::Unavailable("shutting down".into()))?;
            work.await
        };
        let outcome = match tokio::time::timeout(self.timeout, run).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Unanswered(format!("no answer within {:?}", self.timeout))),
        };
        if outcome.as_ref().is_err_and(Failure::is_unavailable) {
            self.unreachable();
        }
        outcome
    }

    /// After a failure to reach it, a remote shard is verified again before its next use (it
    /// may come back as another process, on another data dir).
    pub fn unreachable(&self) {
        if matches!(self.backend, Backend::Remote { .. }) {
            self.set_verified(false);
        }
    }

    /// A request to a remote shard: `path` is relative to its base URL (`galleries/add/g`).
    /// Every request but those of the verification (`admin/cluster`) names the shard's record.
    async fn http(&self, method: reqwest::Method, path: &str, body: Option<&Json>) -> Outcome<(Json, Option<String>)> {
        let Backend::Remote { client, base } = &self.backend else {
            return Err(Failure::Unavailable("not a remote shard".into()));
        };
        let url = base.join(path).map_err(|e| Failure::Unavailable(format!("bad path {path:?}: {e}")))?;
        let mut request = client.request(method, url);
        if path != "admin/cluster" {
            let expected = self.expected.lock().clone();
            let expected = expected.ok_or_else(|| Failure::Unavailable("not verified yet".into()))?;
            request = request.header(crate::durable::cluster::HEADER, expected);
        }
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(|e| Failure::Unavailable(e.to_string()))?;
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(bytes);
        }
        let response = request.send().await.map_err(|e| {
            // Without a connection nothing was sent; past that, the shard may have done it.
            if e.is_connect() {
                Failure::Unavailable(describe(&e))
            } else {
                Failure::Unanswered(describe(&e))
            }
        })?;
        let status = response.status();
        let stat = response.headers().get("x-search-stat").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = response.bytes().await.map_err(|e| Failure::Unanswered(describe(&e)))?;
        let json: Json = if bytes.iter().all(u8::is_ascii_whitespace) {
            Json::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| Failure::Unanswered(format!("answered {status} with a body that is not JSON ({e})")))?
        };
        if status.is_success() {
            return Ok((json, stat));
        }
        match json.get("error").cloned().map(serde_json::from_value::<Error>) {
            // Not the shard the router verified: as if it could not be reached, so that it is
            // verified again before its next call.
            Some(Ok(error)) if error.kind == ErrorKind::WrongShard => {
                Err(Failure::Unavailable(format!("refused the call: {}", error.message)))
            }
            Some(Ok(error)) => Err(Failure::Refused(error)),
            _ => Err(Failure::Unanswered(format!("answered {status}: {json}"))),
        }
    }

    /// On the blocking pool (local shards do engine work there).
    async fn on_blocking<T: Send + 'static>(
        database: &Arc<Database>,
        work: impl FnOnce(&Database) -> Result<T, Error> + Send + 'static,
    ) -> Outcome<T> {
        let database = database.clone();
        match tokio::task::spawn_blocking(move || work(&database)).await {
            Ok(result) => result.map_err(Failure::Refused),
            Err(e) => Err(Failure::Unavailable(format!("the shard's task failed: {e}"))),
        }
    }

    /// `GET /v2/admin/cluster`.
    pub async fn info(&self) -> Outcome<Json> {
        self.bounded(async {
            match &self.backend {
                Backend::Local(_) => Err(Failure::Unavailable("a local shard has no cluster record".into())),
                Backend::Remote { .. } => Ok(self.http(reqwest::Method::GET, "admin/cluster", None).await?.0),
            }
        })
        .await
    }

    /// `POST /v2/admin/cluster`.
    pub async fn claim(&self, record: &Json) -> Outcome<Json> {
        self.bounded(async { Ok(self.http(reqwest::Method::POST, "admin/cluster", Some(record)).await?.0) }).await
    }

    pub async fn create_gallery(&self, name: &str, body: &Json) -> Outcome<()> {
        self.bounded(async {
            match &self.backend {
                Backend::Local(database) => {
                    let (name, body) = (name.to_owned(), body.clone());
                    Shard::on_blocking(database, move |db| shard::create_gallery(db, &name, &body)).await
                }
                Backend::Remote { .. } => {
                    let path = format!("galleries/add/{name}");
                    self.http(reqwest::Method::POST, &path, Some(body)).await.map(drop)
                }
            }
        })
        .await
    }

    pub async fn delete_gallery(&self, name: &str) -> Outcome<()> {
        self.bounded(async {
            match &self.backend {
                Backend::Local(database) => {
                    let name = name.to_owned();
                    Shard::on_blocking(database, move |db| shard::delete_gallery(db, &name)).await
                }
                Backend::Remote { .. } => {
                    let path = format!("galleries/delete/{name}");
                    self.http(reqwest::Method::POST, &path, None).await.map(drop)
                }
            }
        })
        .await
    }

    /// The galleries and their face counts.
    pub async fn list_galleries(&self) -> Outcome<Vec<(String, u64)>> {
        self.bounded(async {
            match &self.backend {
                Backend::Local(database) => {
                    Ok(shard::list_galleries(database).into_iter().map(|g| (g.name, g.faces as u64)).collect())
                }
                Backend::Remote { .. } => {
                    let (json, _) = self.http(reqwest::Method::GET, "galleries/list", None).await?;
                    let items = json.get("results").and_then(Json::as_array).ok_or_else(|| {
                        Failure::Unavailable(format!("galleries/list answered without results: {json}"))
                    })?;
                    items
                        .iter()
                        .map(|item| {
                            let name = item.get("name").and_then(Json::as_str);
                            let faces = item.get("faces").and_then(Json::as_u64);
                            match (name, faces) {
                                (Some(name), Some(faces)) => Ok((name.to_owned(), faces)),
                                _ => Err(Failure::Unavailable(format!("galleries/list answered {item}"))),
                            }
                        })
                        .collect()
                }
            }
        })
        .await
    }

    pub async fn gallery_size(&self, name: &str) -> Outcome<u64> {
        self.bounded(async {
            match &self.backend {
                Backend::Local(database) => {
                    shard::gallery_size(database, name).map(|n| n as u64).map_err(Failure::Refused)
                }
                Backend::Remote { .. } => {
                    let (json, _) = self.http(reqwest::Method::GET, &format!("galleries/get/{name}"), None).await?;
                    json.get("faces")
                        .and_then(Json::as_u64)
                        .ok_or_else(|| Failure::Unavailable(format!("galleries/get answered {json}")))
                }
            }
        })
        .await
    }

    /// Adds faces (each as the engine's face and as its JSON), all or none.
    pub async fn add_faces(&self, name: &str, faces: Vec<(Face, Json)>) -> Outcome<()> {
        self.bounded(async {
            match &self.backend {
                Backend::Local(database) => {
                    let name = name.to_owned();
                    let faces: Vec<Face> = faces.into_iter().map(|(face, _)| face).collect();
                    Shard::on_blocking(database, move |db| shard::add_faces(db, &name, faces)).await
                }
                Backend::Remote { .. } => {
                    let body = Json::Array(faces.into_iter().map(|(_, json)| json).collect());
                    self.http(reqwest::Method::POST, &format!("faces/add/{name}"), Some(&body)).await.map(drop)
                }
            }
        })
        .await
    }

    /// One face as stored (JSON).
    pub async fn get_face(&self, name: &str, id: u64) -> Outcome<Json> {
        self.bounded(async {
            match &self.backend {
                Backend::Local(database) => shard::get_face(database, name, id).map_err(Failure::Refused),
                Backend::Remote { .. } => {
                    Ok(self.http(reqwest::Method::GET, &format!("faces/get/{name}/{id}"), None).await?.0)
                }
            }
        })
        .await
    }

    pub async fn delete_faces(&self, name: &str, ids: Vec<u64>) -> Outcome<()> {
        self.bounded(async {
            match &self.backend {
                Backend::Local(database) => {
                    let name = name.to_owned();
                    Shard::on_blocking(database, move |db| shard::delete_faces(db, &name, ids)).await
                }
                Backend::Remote { .. } => {
                    let path = format!("faces/delete/{name}");
                    self.http(reqwest::Method::POST, &path, Some(&json!(ids))).await.map(drop)
                }
            }
        })
        .await
    }

    /// Updates faces, all or none; answers them as they are now (JSON), in request order.
    pub async fn update_faces(&self, name: &str, updates: Vec<(FaceUpdate, Json)>) -> Outcome<Vec<Json>> {
        let count = updates.len();
        self.bounded(async {
            match &self.backend {
                Backend::Local(database) => {
                    let name = name.to_owned();
                    let updates: Vec<FaceUpdate> = updates.into_iter().map(|(update, _)| update).collect();
                    Shard::on_blocking(database, move |db| shard::update_faces(db, &name, updates)).await
                }
                Backend::Remote { .. } => {
                    let body = Json::Array(updates.into_iter().map(|(_, json)| json).collect());
                    let path = format!("faces/update/{name}");
                    let (json, _) = self.http(reqwest::Method::POST, &path, Some(&body)).await?;
                    // One face comes back as itself, several as {"results": [...]}.
                    match (count, json.get("results").and_then(Json::as_array)) {
                        (1, _) => Ok(vec![json]),
                        (_, Some(results)) => Ok(results.clone()),
                        _ => Err(Failure::Unavailable(format!("faces/update answered {json}"))),
                    }
                }
            }
        })
        .await
    }

    /// Runs a search: a local shard runs `query`, a remote one is sent `body` (the same search).
    pub async fn search(&self, name: &str, body: &Json, query: &Query) -> Outcome<Found> {
        self.bounded(async {
            match &self.backend {
                Backend::Local(database) => {
                    let (name, query) = (name.to_owned(), query.clone());
                    Shard::on_blocking(database, move |db| {
                        let found = shard::search(db, &name, &query)?;
                        Ok(Found { results: found.results, stat: found.plan.stat().to_owned() })
                    })
                    .await
                }
                Backend::Remote { .. } => {
                    let path = format!("faces/search/{name}");
                    let (mut json, stat) = self.http(reqwest::Method::POST, &path, Some(body)).await?;
                    match json.get_mut("results").map(Json::take) {
                        Some(Json::Array(results)) => Ok(Found { results, stat: stat.unwrap_or_default() }),
                        _ => Err(Failure::Unavailable(format!("faces/search answered without results: {json}"))),
                    }
                }
            }
        })
        .await
    }

    /// `GET /v2/admin/status`.
    pub async fn status(&self) -> Outcome<Json> {
        self.bounded(async {
            match &self.backend {
                Backend::Local(database) => Shard::on_blocking(database, |db| Ok(db.status())).await,
                Backend::Remote { .. } => Ok(self.http(reqwest::Method::GET, "admin/status", None).await?.0),
            }
        })
        .await
    }

    /// `POST /v2/admin/snapshot`.
    pub async fn snapshot(&self) -> Outcome<Json> {
        self.bounded(async {
            match &self.backend {
                Backend::Local(database) => Shard::on_blocking(database, shard::snapshot).await,
                Backend::Remote { .. } => Ok(self.http(reqwest::Method::POST, "admin/snapshot", None).await?.0),
            }
        })
        .await
    }
}

/// A transport error in a few words: refused, timed out, reset.
fn describe(error: &reqwest::Error) -> String {
    let what = if error.is_connect() {
        "cannot connect"
    } else if error.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    if cause.is_empty() {
        format!("{what}: {error}")
    } else {
        format!("{what}: {cause}")
    }
}
