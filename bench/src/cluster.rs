//! A local cluster for the HTTP workloads (`--shards N`): N `facedb shard` processes and one
//! `facedb router` in front of them, all on free loopback ports.
//!
//! [`Cluster::start`] makes a temporary work directory holding the bench schema and one
//! directory per shard (`shard-0/data`, its logs), starts every shard with the storage flags
//! `facedb serve` gets from the harness (no detection flags: a shard has none), waits for each
//! listening line, writes the router's configuration with the shards' addresses
//! (`router/router.yaml`, see [`router_config`]) and starts the router, waiting for its
//! listening line too (it may wait for shards that are still recovering).
//!
//! The harness drives the router exactly as it drives `facedb serve`: the same API. It reads
//! the shards directly for two things only, which belong to processes and not to the API:
//! their memory, and the index figures of their part of the gallery. Every process is a
//! [`Server`], killed when dropped; a start that fails half-way kills what it had started, and
//! a dropped cluster kills the router first, then the shards.

use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::server::{self, ProcMemory, Server, MAX_BODY_BYTES, START_TIMEOUT};

/// The router's timeouts towards the shards. `overall` bounds one shard request: an ingest
/// batch or a search under load stays far below it.
const TIMEOUTS: &str = "{connect: 5s, response_header: 30s, overall: 35s, idle_connection: 10s}";
/// Idle connections the router keeps to each shard: above any client concurrency of the bench.
const MAX_IDLE_CONNS_PER_HOST: usize = 64;

/// A running router and its shards; dropping it kills them all.
pub struct Cluster {
    // Declared (so dropped) before the shards: the router goes first.
    router: Server,
    shards: Vec<Server>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `shards` shards for vectors of `dim` components and the metadata schema
    /// `schema_yaml`, then the router over them.
    pub fn start(bin: &Path, shards: usize, dim: usize, schema_yaml: &str) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("facedb-bench-cluster-").tempdir().context("creating a temp dir")?;
        let schema = dir.path().join("schema.yaml");
        std::fs::write(&schema, schema_yaml).with_context(|| format!("writing {}", schema.display()))?;

        // All shards start at once; each is then waited for.
        let mut started = Vec::with_capacity(shards);
        for i in 0..shards {
            let shard_dir = dir.path().join(format!("shard-{i}"));
            std::fs::create_dir_all(&shard_dir).with_context(|| format!("creating {}", shard_dir.display()))?;
            let mut args: Vec<OsString> = vec!["shard".into()];
            args.extend(server::storage_args(&shard_dir.join("data"), &schema, dim));
            started.push(Server::launch(bin, &format!("facedb shard {i}"), &args, &shard_dir)?);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for shard in &mut started {
            shard.wait_listening(deadline)?;
        }

        let router_dir = dir.path().join("router");
        std::fs::create_dir_all(&router_dir).with_context(|| format!("creating {}", router_dir.display()))?;
        let config = router_dir.join("router.yaml");
        let urls: Vec<String> = started.iter().map(|s| shard_url(s.base_url())).collect();
        std::fs::write(&config, router_config(&urls)).with_context(|| format!("writing {}", config.display()))?;
        let args: Vec<OsString> = vec!["router".into(), "--config".into(), config.into()];
        let mut router = Server::launch(bin, "facedb router", &args, &router_dir)?;
        router.wait_listening(Instant::now() + START_TIMEOUT)?;
        Ok(Cluster { router, shards: started, _dir: dir })
    }

    /// The router's `http://127.0.0.1:PORT`: where the workloads go.
    pub fn base_url(&self) -> &str {
        self.router.base_url()
    }

    /// Each shard's `http://127.0.0.1:PORT`, in the router's order.
    pub fn shard_base_urls(&self) -> Vec<&str> {
        self.shards.iter().map(Server::base_url).collect()
    }

    /// The memory of every process now, named (`shard 0`, ..., `router`); `None` if one of
    /// them cannot be read (it has died).
    pub fn memory(&self) -> Option<Vec<(String, ProcMemory)>> {
        let mut processes: Vec<(String, ProcMemory)> = Vec::with_capacity(self.shards.len() + 1);
        for (i, shard) in self.shards.iter().enumerate() {
            processes.push((format!("shard {i}"), shard.memory()?));
        }
        processes.push(("router".to_owned(), self.router.memory()?));
        Some(processes)
    }

    /// The last `lines` lines of each process's log, under its name (router first).
    pub fn log_tail(&self, lines: usize) -> String {
        std::iter::once(&self.router)
            .chain(&self.shards)
            .map(|p| (p.name(), p.stderr_tail(lines)))
            .filter(|(_, tail)| !tail.is_empty())
            .map(|(name, tail)| format!("{name}:\n{tail}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A shard as the router's configuration names it: `http://127.0.0.1:PORT/v2/`.
fn shard_url(base_url: &str) -> String {
    format!("{}/v2/", base_url.trim_end_matches('/'))
}

/// The router's configuration (`facedb router --config`, the seed's sf-api shape): a free
/// loopback port, the shards `shard_urls` in this order (the order is the placement of the
/// faces), bodies as large as the shards take, no face detection and no image store.
pub fn router_config(shard_urls: &[String]) -> String {
    let mut yaml = String::from("listen: 127.0.0.1:0\n");
    yaml.push_str(&format!("max-body-bytes: {MAX_BODY_BYTES}\n"));
    yaml.push_str("storage-api:\n");
    yaml.push_str(&format!("  timeouts: {TIMEOUTS}\n"));
    yaml.push_str(&format!("  max-idle-conns-per-host: {MAX_IDLE_CONNS_PER_HOST}\n"));
    yaml.push_str("  shards:\n");
    for url in shard_urls {
        // Single-quoted YAML scalars: nothing to escape but the quote itself.
        yaml.push_str(&format!("    - master: '{}'\n      slave: ''\n", url.replace('\'', "''")));
    }
    // Detection would load face models (a second and 100 MB) for nothing, and the image store
    // would be a directory relative to the bench's working directory.
    yaml.push_str("extract: {workers: 0}\nnormalized-storage: {enabled: false}\n");
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_config_is_yaml_naming_every_shard_in_order() {
        let urls = vec![shard_url("http://127.0.0.1:40001"), shard_url("http://127.0.0.1:40002/")];
        let text = router_config(&urls);
        let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(config["listen"].as_str(), Some("127.0.0.1:0"));
        let api = &config["storage-api"];
        let shards: Vec<(&str, &str)> = api["shards"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|s| (s["master"].as_str().unwrap(), s["slave"].as_str().unwrap()))
            .collect();
        assert_eq!(shards, [("http://127.0.0.1:40001/v2/", ""), ("http://127.0.0.1:40002/v2/", "")]);
        assert_eq!(api["timeouts"]["overall"].as_str(), Some("35s"));
        assert_eq!(api["max-idle-conns-per-host"].as_u64(), Some(MAX_IDLE_CONNS_PER_HOST as u64));
        assert_eq!(config["max-body-bytes"].as_u64(), Some(MAX_BODY_BYTES as u64));
        assert_eq!(config["extract"]["workers"].as_u64(), Some(0));
        assert_eq!(config["normalized-storage"]["enabled"].as_bool(), Some(false));
    }
}
