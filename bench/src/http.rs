//! Over HTTP: the real `facedb` binary, started by the bench, driven with `ureq`.
//!
//! [`Server::start`] runs `facedb serve --listen 127.0.0.1:0` with a fresh data directory and
//! the bench schema written to a temporary directory, waits for the line
//! `facedb listening on http://HOST:PORT` (stdout goes to a file that is polled, so no pipe
//! can ever fill up or close under the server), and kills the process when dropped, also
//! when the bench fails half-way.
//!
//! Each client thread has its own [`Client`]: a `ureq` agent, which keeps its connection
//! alive between requests. A timing is client-side: from sending a request whose body was
//! serialised beforehand to having read and parsed the whole response, so it includes the
//! loopback round trip, the server's JSON parsing and encoding, and its thread hand-offs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;

use crate::data::{self, DataGen};
use crate::inproc::{BATCH, GALLERY};
use crate::progress::Progress;

const LISTENING: &str = "facedb listening on http://";
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Large enough for a load batch of 10,000 faces (about 7.5 MB of JSON) with room to spare.
const MAX_BODY_BYTES: usize = 256 << 20;

/// The `facedb` binary: `--facedb-bin`, or the one next to this executable.
pub fn facedb_bin(flag: Option<&Path>) -> Result<PathBuf> {
    let path = match flag {
        Some(path) => path.to_owned(),
        None => std::env::current_exe().context("cannot find the bench's own path")?.with_file_name("facedb"),
    };
    if !path.is_file() {
        bail!(
            "the facedb binary {} does not exist: build it (cargo build --release -p facedb) or pass --facedb-bin",
            path.display()
        );
    }
    Ok(path)
}

/// A running `facedb serve`; dropping it kills the process.
pub struct Server {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Server {
    pub fn start(bin: &Path, dim: usize) -> Result<Server> {
        let dir = tempfile::Builder::new().prefix("facedb-bench-").tempdir().context("creating a temp dir")?;
        let schema = dir.path().join("schema.yaml");
        std::fs::write(&schema, data::SCHEMA_YAML).with_context(|| format!("writing {}", schema.display()))?;
        let stdout = File::create(dir.path().join("stdout.log")).context("creating the server's stdout log")?;
        let stderr = File::create(dir.path().join("stderr.log")).context("creating the server's stderr log")?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--schema")
            .arg(&schema)
            .arg("--facen-size")
            .arg(dim.to_string())
            .arg("--max-body-bytes")
            .arg(MAX_BODY_BYTES.to_string())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        // From here on the guard owns the process: any error below kills it.
        let mut server = Server { child, base: String::new(), dir };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = std::fs::read_to_string(server.dir.path().join("stdout.log")).unwrap_or_default();
            if let Some(address) = out.lines().find_map(|line| line.strip_prefix(LISTENING)) {
                server.base = format!("http://{}", address.trim().trim_end_matches('/'));
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait().context("waiting for facedb")? {
                bail!("facedb exited ({status}) before listening; its stderr:\n{}", server.stderr_log());
            }
            if Instant::now() > deadline {
                bail!(
                    "facedb did not print its listening line in {START_TIMEOUT:?}; its stderr:\n{}",
                    server.stderr_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        Client::new(&self.base)
    }

    /// The server's peak resident memory so far, from `/proc` (Linux only).
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        peak_rss_bytes(&format!("/proc/{}/status", self.child.id()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Best effort: the process may have died already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmHWM` of a `/proc/<pid>/status` file, in bytes.
pub fn peak_rss_bytes(status_file: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_file).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One client thread's connection to the server.
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    pub fn new(base: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        Client { agent, base: base.to_owned() }
    }

    /// POSTs `body` (JSON) and returns the response body; anything but 200 is an error.
    pub fn post(&self, path: &str, body: &str) -> Result<String> {
        let url = format!("{}{path}", self.base);
        let mut response = self
            .agent
            .post(&url)
            .content_type("application/json")
            .send(body)
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES as u64)
            .read_to_string()
            .with_context(|| format!("POST {path}: reading the response"))?;
        if status != 200 {
            let shown: String = text.chars().take(2000).collect();
            bail!("POST {path}: HTTP {status}: {shown}");
        }
        Ok(text)
    }

    pub fn create_gallery(&self) -> Result<()> {
        self.post(&format!("/v2/galleries/add/{GALLERY}"), "").map(drop)
    }

    pub fn add(&self, body: &str) -> Result<()> {
        self.post(&format!("/v2/faces/add/{GALLERY}"), body).map(drop)
    }

    /// Runs a search and returns the ids found, best first.
    pub fn search(&self, body: &str) -> Result<Vec<u64>> {
        let text = self.post(&format!("/v2/faces/search/{GALLERY}"), body)?;
        let json: Json = serde_json::from_str(&text).context("the search response is not JSON")?;
        let results = json["results"].as_array().context("the search response has no results array")?;
        results.iter().map(|r| r["id"].as_u64().context("a search result has no integer id")).collect()
    }

    pub fn gallery_size(&self) -> Result<u64> {
        let text = self.post(&format!("/v2/galleries/get/{GALLERY}"), "")?;
        let json: Json = serde_json::from_str(&text).context("the gallery info is not JSON")?;
        json["faces"].as_u64().context("the gallery info has no faces count")
    }
}

/// Creates the gallery and adds faces `0..size` in batches of [`BATCH`]; returns the time
/// spent in the requests (generation and serialisation excluded).
pub fn load(client: &Client, gen: &DataGen, size: usize) -> Result<Duration> {
    client.create_gallery()?;
    let mut progress = Progress::new(format!("loading {size} faces over HTTP"), size);
    let mut posting = Duration::ZERO;
    let mut done = 0;
    while done < size {
        let end = (done + BATCH).min(size);
        let body = data::add_body(&gen.faces(done as u64..end as u64));
        let started = Instant::now();
        client.add(&body).with_context(|| format!("adding faces {done}..{end}"))?;
        posting += started.elapsed();
        done = end;
        progress.update(done);
    }
    Ok(posting)
}

/// Times each search of `bodies` after `warmup` untimed ones.
pub fn time_searches(client: &Client, bodies: &[String], warmup: usize) -> Result<Vec<Duration>> {
    for body in bodies.iter().cycle().take(warmup) {
        client.search(body)?;
    }
    let mut timings = Vec::with_capacity(bodies.len());
    for body in bodies {
        let started = Instant::now();
        let ids = client.search(body)?;
        timings.push(started.elapsed());
        std::hint::black_box(ids);
    }
    Ok(timings)
}
