//! Where the workloads run: a facedb server over HTTP, or the library in-process.
//!
//! A [`Backend`] holds the payloads of a dataset prepared in the form its target takes, so that
//! nothing but the operation itself is timed: JSON bodies for HTTP (searches, ingest batches,
//! the single-face adds of the mixed workload), parsed [`Query`]s and [`Face`]s for the
//! engine. Search bodies are the same JSON in both cases (the in-process ones go through the
//! server's own `parse_query`), so both answer the same question.
//!
//! Each client thread opens a [`Session`]: its own HTTP connection, or a reference to the
//! engine. Over HTTP the backend either starts `facedb serve` itself (on a temporary data dir
//! and a free port; killed when the backend is dropped), or with `--shards N` a local cluster
//! of N `facedb shard` processes behind a `facedb router` (`cluster.rs`; the workloads talk to
//! the router), or talks to `--target URL`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use facedb::durable::Database;
use facedb::engine::EngineConfig;
use facedb::index::IndexOverrides;
use facedb::schema::{MetaValue, Schema};
use facedb::search::parse::parse_query;
use facedb::search::Query;
use facedb::store::Face;
use serde_json::json;

use crate::client::{Client, SearchAnswer};
use crate::cluster::Cluster;
use crate::dataset::{Dataset, FaceMeta, K_TRUTH, SCHEMA_YAML};
use crate::server::{ProcMemory, Server};
use crate::truth::FILTERS;

/// The largest `limit` the in-process engine accepts (the server's default).
const MAX_SEARCH_LIMIT: usize = 10_000;

/// A set of search requests: one per query of the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuerySet {
    /// Top-k by score, no filter.
    TopK,
    /// Every face scoring at least the threshold (at most `K_TRUTH` of them), no filter.
    Threshold,
    /// Top-k among the faces passing `FILTERS[i]`.
    Filtered(usize),
}

/// The parameters of the search sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchParams {
    /// `limit` of top-k searches.
    pub k: usize,
    /// The score threshold of the threshold set.
    pub threshold: f64,
    /// `"exact": true`: scan even where the planner would walk the graph.
    pub exact: bool,
}

/// The body of query `vector`'s search in `set`.
pub fn search_body(vector: &[f32], set: QuerySet, params: SearchParams) -> serde_json::Value {
    let mut facen = json!({ "data": facedb::facen::encode(vector) });
    let mut limit = params.k;
    if set == QuerySet::Threshold {
        facen["score"] = json!([params.threshold, 1.0]);
        limit = K_TRUTH;
    }
    let mut filter = json!({ "facen": facen });
    if let QuerySet::Filtered(i) = set {
        filter["meta"] = json!({ "bucket": { "range": [0, FILTERS[i].bucket_max] } });
    }
    let mut body = json!({ "limit": limit, "sort": "-score", "filter": filter });
    if params.exact {
        body["exact"] = json!(true);
    }
    body
}

/// A `faces/add` body: `[{"id", "facen", "meta": {"bucket", "cam_id", "tags"}}, ...]`.
pub fn add_body<'a>(faces: impl IntoIterator<Item = (u64, &'a [f32], &'a FaceMeta)>) -> Result<String> {
    let mut body = String::from("[");
    for (i, (id, vector, meta)) in faces.into_iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let cam_id = serde_json::to_string(&meta.cam_id).context("encoding a cam_id")?;
        let tags = serde_json::to_string(&meta.tags).context("encoding tags")?;
        // Writing to a String cannot fail.
        let _ = write!(
            body,
            r#"{{"id":{id},"facen":"{}","meta":{{"bucket":{},"cam_id":{cam_id},"tags":{tags}}}}}"#,
            facedb::facen::encode(vector),
            meta.bucket
        );
    }
    body.push(']');
    Ok(body)
}

/// The bench schema, parsed.
pub fn schema() -> Result<Schema> {
    Schema::from_yaml(SCHEMA_YAML, "bench schema").map_err(anyhow::Error::msg)
}

/// A face as the engine takes it (meta in schema order).
pub fn engine_face(schema: &Schema, id: u64, vector: &[f32], meta: &FaceMeta) -> Result<Face> {
    let mut values: Vec<MetaValue> = schema.fields().iter().map(|f| f.default.clone()).collect();
    let mut set = |name: &str, value: MetaValue| -> Result<()> {
        let position = schema.position(name).with_context(|| format!("the bench schema has no {name}"))?;
        values[position] = value;
        Ok(())
    };
    set("bucket", MetaValue::Unsigned(meta.bucket))?;
    set("cam_id", MetaValue::String(meta.cam_id.clone()))?;
    let mut tags = meta.tags.clone();
    tags.sort_unstable();
    tags.dedup();
    set("tags", MetaValue::StringSet(tags))?;
    Ok(Face { id, vector: vector.to_vec(), meta: values })
}

/// The processes the harness started for the HTTP backend.
pub enum Started {
    /// `facedb serve`.
    Serve(Server),
    /// `--shards N`: the shards and the router.
    Cluster(Cluster),
}

/// One database process's part of the bench gallery: its faces and its index figures (the
/// gallery's `indexes` entry of its status).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexPart {
    pub faces: u64,
    pub status: serde_json::Value,
}

/// The server side of the HTTP backend.
pub struct HttpTarget {
    base_url: String,
    /// Present when the harness started the server.
    server: Option<Started>,
    searches: HashMap<QuerySet, Vec<String>>,
    batches: Vec<String>,
    mixed_adds: Vec<String>,
}

pub struct InProcessTarget {
    engine: Arc<Database>,
    /// When set, searches run inside this rayon pool (a pool of one thread pins a search to
    /// one core); otherwise on rayon's global pool.
    pool: Option<rayon::ThreadPool>,
    searches: HashMap<QuerySet, Vec<Query>>,
    batches: Vec<Vec<Face>>,
    mixed_adds: Vec<Face>,
}

pub enum BackendKind {
    Http(HttpTarget),
    InProcess(InProcessTarget),
}

pub struct Backend {
    kind: BackendKind,
    gallery: String,
    /// Ids of the mixed workload's adds, by write number.
    mixed_ids: Vec<u64>,
}

impl Backend {
    /// Over HTTP: the server at `target`, or a `facedb serve` started from `bin`, or with
    /// `shards` a router in front of that many shards started from `bin`.
    pub fn http(
        target: Option<&str>,
        bin: Option<&Path>,
        shards: Option<usize>,
        dim: usize,
        gallery: &str,
    ) -> Result<Backend> {
        let (base_url, server) = match (target, bin) {
            (Some(url), _) => (url.trim_end_matches('/').to_owned(), None),
            (None, Some(bin)) => match shards {
                None => {
                    let server = Server::start(bin, dim, SCHEMA_YAML)?;
                    (server.base_url().to_owned(), Some(Started::Serve(server)))
                }
                Some(n) => {
                    let cluster = Cluster::start(bin, n, dim, SCHEMA_YAML)?;
                    (cluster.base_url().to_owned(), Some(Started::Cluster(cluster)))
                }
            },
            (None, None) => bail!("no server to talk to: give --target URL or build the facedb binary"),
        };
        let target =
            HttpTarget { base_url, server, searches: HashMap::new(), batches: Vec::new(), mixed_adds: Vec::new() };
        Ok(Backend { kind: BackendKind::Http(target), gallery: gallery.to_owned(), mixed_ids: Vec::new() })
    }

    /// The library called directly, with a fresh engine.
    pub fn in_process(dim: usize, gallery: &str) -> Result<Backend> {
        let config = EngineConfig { facen_size: dim, max_search_limit: MAX_SEARCH_LIMIT, ..EngineConfig::default() };
        let engine = Database::in_memory(schema()?, config)?;
        let target = InProcessTarget {
            engine,
            pool: None,
            searches: HashMap::new(),
            batches: Vec::new(),
            mixed_adds: Vec::new(),
        };
        Ok(Backend { kind: BackendKind::InProcess(target), gallery: gallery.to_owned(), mixed_ids: Vec::new() })
    }

    /// In-process: run searches inside a rayon pool of `threads` threads (`None`: the global
    /// pool). No effect over HTTP.
    pub fn set_engine_threads(&mut self, threads: Option<usize>) -> Result<()> {
        if let BackendKind::InProcess(local) = &mut self.kind {
            local.pool = match threads {
                Some(n) => {
                    Some(rayon::ThreadPoolBuilder::new().num_threads(n).build().context("building a rayon pool")?)
                }
                None => None,
            };
        }
        Ok(())
    }

    /// The memory of the processes the harness started, named: `server` (`facedb serve`), or
    /// `shard 0`, ..., `router`. `None` when it started none, or one cannot be read.
    pub fn server_memory(&self) -> Option<Vec<(String, ProcMemory)>> {
        match &self.kind {
            BackendKind::Http(http) => match http.server.as_ref()? {
                Started::Serve(server) => Some(vec![("server".to_owned(), server.memory()?)]),
                Started::Cluster(cluster) => cluster.memory(),
            },
            BackendKind::InProcess(_) => None,
        }
    }

    /// The last `lines` lines of the log of the processes the harness started (for error
    /// reports): the server's, or each cluster process's under its name.
    pub fn server_log_tail(&self, lines: usize) -> Option<String> {
        match &self.kind {
            BackendKind::Http(http) => match http.server.as_ref()? {
                Started::Serve(server) => Some(server.stderr_tail(lines)),
                Started::Cluster(cluster) => Some(cluster.log_tail(lines)),
            },
            BackendKind::InProcess(_) => None,
        }
    }

    /// Deletes the bench gallery if it exists and creates it empty, with `index`'s parameters.
    pub fn recreate_gallery(&self, index: &IndexOverrides) -> Result<()> {
        match &self.kind {
            BackendKind::Http(http) => {
                let client = Client::new(&http.base_url);
                client.delete_gallery_if_any(&self.gallery)?;
                client.create_indexed_gallery(&self.gallery, index)
            }
            BackendKind::InProcess(local) => {
                // A gallery that does not exist yet cannot be deleted: that is fine.
                let _ = local.engine.delete_gallery(&self.gallery);
                local.engine.create_indexed_gallery(&self.gallery, *index).context("creating the bench gallery")
            }
        }
    }

    /// The bench gallery's index figures, per database process: one part (`indexes.<gallery>`
    /// of the server's status), or one per shard of a cluster, each read from the shard
    /// itself (a graph is a shard's own).
    pub fn index_parts(&self) -> Result<Vec<IndexPart>> {
        // One process's status: its own, or (`facedb serve` with local shards) one per shard
        // under `shards[k].status`.
        let parts = |url: &str| -> Result<Vec<IndexPart>> {
            let status = Client::new(url).status()?;
            let statuses: Vec<&serde_json::Value> = match status["shards"].as_array() {
                Some(shards) => shards.iter().map(|shard| &shard["status"]).collect(),
                None => vec![&status],
            };
            statuses.into_iter().map(|status| self.index_part(url, status)).collect()
        };
        match &self.kind {
            BackendKind::Http(HttpTarget { server: Some(Started::Cluster(cluster)), .. }) => {
                Ok(cluster.shard_base_urls().into_iter().map(parts).collect::<Result<Vec<_>>>()?.concat())
            }
            BackendKind::Http(http) => parts(&http.base_url),
            BackendKind::InProcess(local) => Ok(vec![IndexPart {
                faces: local.engine.gallery_size(&self.gallery)? as u64,
                status: json!(local.engine.index_status(&self.gallery)?),
            }]),
        }
    }

    /// The bench gallery's entry in one database's status (`indexes.<gallery>`, with its
    /// `faces` there).
    fn index_part(&self, url: &str, status: &serde_json::Value) -> Result<IndexPart> {
        let entry = &status["indexes"][&self.gallery];
        let Some(faces) = entry["faces"].as_u64() else {
            let keys: Vec<&String> = status.as_object().map(|o| o.keys().collect()).unwrap_or_default();
            bail!(
                "the status of {url} has no index figures for the gallery (indexes.{} with its faces), so the \
                 harness cannot wait for its graph; the status's keys: {keys:?}",
                self.gallery
            );
        };
        Ok(IndexPart { faces, status: entry.clone() })
    }

    /// Removes the bench gallery (from a `--target` server when the runs are over).
    pub fn delete_gallery(&self) -> Result<()> {
        match &self.kind {
            BackendKind::Http(http) => Client::new(&http.base_url).delete_gallery_if_any(&self.gallery),
            BackendKind::InProcess(local) => {
                let _ = local.engine.delete_gallery(&self.gallery);
                Ok(())
            }
        }
    }

    pub fn gallery_size(&self) -> Result<u64> {
        match &self.kind {
            BackendKind::Http(http) => Client::new(&http.base_url).gallery_size(&self.gallery),
            BackendKind::InProcess(local) => Ok(local.engine.gallery_size(&self.gallery)? as u64),
        }
    }

    /// Prepares one search per query and set.
    pub fn prepare_searches(&mut self, dataset: &Dataset, sets: &[QuerySet], params: SearchParams) -> Result<()> {
        for &set in sets {
            let bodies = (0..dataset.query_count()).map(|q| search_body(dataset.query(q), set, params));
            match &mut self.kind {
                BackendKind::Http(http) => {
                    http.searches.insert(set, bodies.map(|b| b.to_string()).collect());
                }
                BackendKind::InProcess(local) => {
                    let engine = &local.engine;
                    let parsed = bodies
                        .map(|body| parse_query(&body, &engine.schema(), dataset.dim(), MAX_SEARCH_LIMIT))
                        .collect::<Result<Vec<Query>, _>>()
                        .context("parsing a search body")?;
                    local.searches.insert(set, parsed);
                }
            }
        }
        Ok(())
    }

    /// Prepares the whole dataset as batches of `batch` faces; returns the number of batches.
    pub fn prepare_ingest(&mut self, dataset: &Dataset, batch: usize) -> Result<usize> {
        let batch = batch.max(1);
        let ranges: Vec<(usize, usize)> =
            (0..dataset.count()).step_by(batch).map(|start| (start, (start + batch).min(dataset.count()))).collect();
        match &mut self.kind {
            BackendKind::Http(http) => {
                use rayon::prelude::*;
                http.batches = ranges
                    .par_iter()
                    .map(|&(start, end)| {
                        add_body((start..end).map(|id| (id as u64, dataset.vector(id), &dataset.meta[id])))
                    })
                    .collect::<Result<_>>()?;
                Ok(http.batches.len())
            }
            BackendKind::InProcess(local) => {
                let schema = &local.engine.schema();
                local.batches = ranges
                    .iter()
                    .map(|&(start, end)| {
                        (start..end)
                            .map(|id| engine_face(schema, id as u64, dataset.vector(id), &dataset.meta[id]))
                            .collect::<Result<Vec<Face>>>()
                    })
                    .collect::<Result<_>>()?;
                Ok(local.batches.len())
            }
        }
    }

    /// Frees the ingest payloads.
    pub fn drop_ingest(&mut self) {
        match &mut self.kind {
            BackendKind::Http(http) => http.batches = Vec::new(),
            BackendKind::InProcess(local) => local.batches = Vec::new(),
        }
    }

    /// Prepares the mixed workload's single-face adds: write `w` adds a copy of face
    /// `sources[w]` under id `first_id + w`.
    pub fn prepare_mixed(&mut self, dataset: &Dataset, first_id: u64, sources: &[usize]) -> Result<()> {
        self.mixed_ids = (0..sources.len() as u64).map(|w| first_id + w).collect();
        let ids = &self.mixed_ids;
        match &mut self.kind {
            BackendKind::Http(http) => {
                http.mixed_adds = sources
                    .iter()
                    .zip(ids)
                    .map(|(&source, &id)| add_body([(id, dataset.vector(source), &dataset.meta[source])]))
                    .collect::<Result<_>>()?;
            }
            BackendKind::InProcess(local) => {
                let schema = &local.engine.schema();
                local.mixed_adds = sources
                    .iter()
                    .zip(ids)
                    .map(|(&source, &id)| engine_face(schema, id, dataset.vector(source), &dataset.meta[source]))
                    .collect::<Result<_>>()?;
            }
        }
        Ok(())
    }

    /// A connection for one client thread.
    pub fn session(&self) -> Session<'_> {
        match &self.kind {
            BackendKind::Http(http) => {
                Session::Http { backend: self, target: http, client: Client::new(&http.base_url) }
            }
            BackendKind::InProcess(local) => Session::InProcess { backend: self, target: local },
        }
    }
}

/// One client thread's way to the backend.
pub enum Session<'a> {
    Http { backend: &'a Backend, target: &'a HttpTarget, client: Client },
    InProcess { backend: &'a Backend, target: &'a InProcessTarget },
}

impl Session<'_> {
    /// An untimed request that opens the connection.
    pub fn connect(&mut self) -> Result<()> {
        match self {
            Session::Http { backend, client, .. } => client.gallery_size(&backend.gallery).map(drop),
            Session::InProcess { .. } => Ok(()),
        }
    }

    /// Adds prepared ingest batch `batch`.
    pub fn add_batch(&mut self, batch: usize) -> Result<()> {
        match self {
            Session::Http { backend, target, client } => {
                let body = target.batches.get(batch).context("no such ingest batch")?;
                client.add(&backend.gallery, body)
            }
            Session::InProcess { backend, target } => {
                let faces = target.batches.get(batch).context("no such ingest batch")?;
                Ok(target.engine.add_faces(&backend.gallery, faces.clone())?)
            }
        }
    }

    /// Runs prepared search `query` of `set`.
    pub fn search(&mut self, set: QuerySet, query: usize) -> Result<SearchAnswer> {
        match self {
            Session::Http { backend, target, client } => {
                let body = target.searches.get(&set).and_then(|b| b.get(query)).context("no such prepared search")?;
                client.search(&backend.gallery, body)
            }
            Session::InProcess { backend, target } => {
                let parsed = target.searches.get(&set).and_then(|q| q.get(query)).context("no such prepared search")?;
                let search = || target.engine.search(&backend.gallery, parsed);
                let (hits, plan) = match &target.pool {
                    Some(pool) => pool.install(search)?,
                    None => search()?,
                };
                let search_stat = Some(plan.stat().to_owned());
                Ok(SearchAnswer { ids: hits.into_iter().map(|hit| hit.face.id).collect(), search_stat })
            }
        }
    }

    /// Makes prepared mixed write `write` (one face); returns the id added.
    pub fn add_mixed(&mut self, write: usize) -> Result<u64> {
        match self {
            Session::Http { backend, target, client } => {
                let body = target.mixed_adds.get(write).context("no such prepared add")?;
                client.add(&backend.gallery, body)?;
                Ok(backend.mixed_ids[write])
            }
            Session::InProcess { backend, target } => {
                let face = target.mixed_adds.get(write).context("no such prepared add")?;
                target.engine.add_faces(&backend.gallery, vec![face.clone()])?;
                Ok(face.id)
            }
        }
    }

    /// Deletes one face.
    pub fn delete(&mut self, id: u64) -> Result<()> {
        match self {
            Session::Http { backend, client, .. } => client.delete(&backend.gallery, &format!("[{id}]")),
            Session::InProcess { backend, target } => Ok(target.engine.delete_faces(&backend.gallery, vec![id])?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_as_the_server_parses_them() {
        let schema = schema().unwrap();
        let params = SearchParams { k: 10, threshold: 0.9, exact: false };
        let vector = [0.6f32, 0.8];
        let q = parse_query(&search_body(&vector, QuerySet::Threshold, params), &schema, 2, 10_000).unwrap();
        assert_eq!(q.limit, K_TRUTH);
        assert_eq!(q.facen.as_ref().map(|f| (f.min_score, f.max_score)), Some((0.9, 1.0)));
        let q = parse_query(&search_body(&vector, QuerySet::Filtered(1), params), &schema, 2, 10_000).unwrap();
        assert_eq!((q.limit, q.conditions.len()), (10, 1));
        let meta = FaceMeta { bucket: 7, cam_id: "cam-3".into(), tags: vec!["mask".into(), "hat".into()] };
        let body: serde_json::Value = serde_json::from_str(&add_body([(5, &vector[..], &meta)]).unwrap()).unwrap();
        let faces = facedb::api::wire::new_faces(&body, &schema, 2).unwrap();
        assert_eq!(faces[0], engine_face(&schema, 5, &vector, &meta).unwrap());
    }
}
