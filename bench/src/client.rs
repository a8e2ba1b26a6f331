//! One client connection to a facedb server over HTTP (`ureq`, blocking).
//!
//! Each client thread has its own [`Client`]: a `ureq` agent, which keeps its connection alive
//! between requests. Any status but the expected 2xx is an error that quotes the answer.
//! Search answers are parsed only as far as the harness needs: the ids in order, and the
//! `X-search-stat` header (how the server ran the search: `without_index` for an exact scan).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use facedb::index::IndexOverrides;
use serde::Deserialize;

use crate::server::MAX_BODY_BYTES;

/// The answer to a search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchAnswer {
    /// Ids found, best first.
    pub ids: Vec<u64>,
    /// The `X-search-stat` header, if the server sent one.
    pub search_stat: Option<String>,
}

#[derive(Deserialize)]
struct SearchReply {
    results: Vec<SearchHit>,
}

/// A result of a search; `facen`, `meta` and `score` are skipped.
#[derive(Deserialize)]
struct SearchHit {
    id: u64,
}

#[derive(Deserialize)]
struct GalleryInfo {
    faces: u64,
}

/// A response: its status, body and search stat.
struct Reply {
    status: u16,
    text: String,
    search_stat: Option<String>,
}

/// One client thread's connection to the server.
pub struct Client {
    agent: ureq::Agent,
    base_url: String,
}

impl Client {
    /// A client of the server at `base_url` (`http://HOST:PORT`, no trailing slash needed).
    pub fn new(base_url: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        Client { agent, base_url: base_url.trim_end_matches('/').to_owned() }
    }

    fn send(&self, path: &str, body: &str) -> Result<Reply> {
        let url = format!("{}{path}", self.base_url);
        let mut response = self
            .agent
            .post(&url)
            .content_type("application/json")
            .send(body)
            .with_context(|| format!("POST {path}"))?;
        let status = response.status().as_u16();
        let search_stat = response.headers().get("x-search-stat").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES as u64)
            .read_to_string()
            .with_context(|| format!("POST {path}: reading the response"))?;
        Ok(Reply { status, text, search_stat })
    }

    /// POSTs `body` (JSON) and returns the response; anything but 200 is an error.
    fn post(&self, path: &str, body: &str) -> Result<Reply> {
        let reply = self.send(path, body)?;
        if reply.status != 200 {
            let shown: String = reply.text.chars().take(2000).collect();
            bail!("POST {path}: HTTP {}: {shown}", reply.status);
        }
        Ok(reply)
    }

    pub fn create_gallery(&self, gallery: &str) -> Result<()> {
        self.post(&format!("/v2/galleries/add/{gallery}"), "").map(drop)
    }

    /// Creates a gallery with index parameters of its own.
    pub fn create_indexed_gallery(&self, gallery: &str, index: &IndexOverrides) -> Result<()> {
        let body = serde_json::to_string(index).context("encoding the index parameters")?;
        self.post(&format!("/v2/galleries/add/{gallery}"), &body).map(drop)
    }

    /// Deletes a gallery; one that does not exist is not an error.
    pub fn delete_gallery_if_any(&self, gallery: &str) -> Result<()> {
        let path = format!("/v2/galleries/delete/{gallery}");
        let reply = self.send(&path, "")?;
        match reply.status {
            200 | 204 | 404 => Ok(()),
            status => {
                let shown: String = reply.text.chars().take(2000).collect();
                bail!("POST {path}: HTTP {status}: {shown}")
            }
        }
    }

    /// `POST /v2/faces/add/{gallery}` with a prepared body (a JSON array of faces).
    pub fn add(&self, gallery: &str, body: &str) -> Result<()> {
        self.post(&format!("/v2/faces/add/{gallery}"), body).map(drop)
    }

    /// `POST /v2/faces/delete/{gallery}` with a JSON array of ids.
    pub fn delete(&self, gallery: &str, body: &str) -> Result<()> {
        self.post(&format!("/v2/faces/delete/{gallery}"), body).map(drop)
    }

    /// Runs a search (a prepared JSON body).
    pub fn search(&self, gallery: &str, body: &str) -> Result<SearchAnswer> {
        let reply = self.post(&format!("/v2/faces/search/{gallery}"), body)?;
        let parsed: SearchReply =
            serde_json::from_str(&reply.text).context("the search response is not {\"results\": [{\"id\", ...}]}")?;
        Ok(SearchAnswer { ids: parsed.results.into_iter().map(|hit| hit.id).collect(), search_stat: reply.search_stat })
    }

    /// `POST /v2/admin/status`: the server's durability counters.
    pub fn status(&self) -> Result<serde_json::Value> {
        let reply = self.post("/v2/admin/status", "")?;
        serde_json::from_str(&reply.text).context("the status is not JSON")
    }

    /// `POST /v2/admin/snapshot`: returns once the snapshot is on disk.
    pub fn snapshot(&self) -> Result<serde_json::Value> {
        let reply = self.post("/v2/admin/snapshot", "")?;
        serde_json::from_str(&reply.text).context("the snapshot answer is not JSON")
    }

    pub fn gallery_size(&self, gallery: &str) -> Result<u64> {
        let reply = self.post(&format!("/v2/galleries/get/{gallery}"), "")?;
        let info: GalleryInfo = serde_json::from_str(&reply.text).context("the gallery info has no faces count")?;
        Ok(info.faces)
    }
}
