//! The harness: start the real `facedb` binary, talk to it over HTTP, and build faces.
//!
//! Every test drives the server exactly as a client would: a child process started with
//! `facedb serve --listen 127.0.0.1:0 ...`, whose address is read from the one line it prints
//! on stdout (`facedb listening on http://HOST:PORT`), and plain HTTP/1 requests sent with
//! `ureq`. Nothing of the crate's own code is used, so the tests check the wire contract of
//! `spec.md` and nothing else.
//!
//! Most tests share one server ([`shared`]) and isolate themselves with a gallery of their own
//! ([`Server::new_gallery`] gives unique names); that keeps the suite fast and also runs the
//! server under concurrent clients. Tests that need special flags, or that look at global state
//! (the gallery list), start their own [`Server`].
//!
//! A server started by the harness is wrapped in a tiny `sh` watchdog that kills it as soon as
//! the test process goes away (its stdin pipe closes), so a shared server held in a `static`
//! (never dropped) or a test run interrupted half-way never leaves a stray process behind.
//! Dropping a [`Server`] closes that pipe and reaps the child.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_facedb");

/// The small schema that holds every meta key used by the seed's direct-API examples.
pub const EXAMPLE_SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/example.yaml");

/// Default `--facen-size`.
pub const DIM: usize = 128;

/// How long a server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The prefix of the line a started server prints on stdout.
const LISTENING: &str = "facedb listening on http://";

/// Runs `"$@"` (the server) in the background and kills it when this shell's stdin reaches
/// end of file, i.e. when the test process closes the pipe or dies; then removes the server's
/// temp dir (`$FACEDB_IT_TMP`, if set), which a server held in a `static` cannot do on drop.
/// The shell itself waits for the server and exits with its status, so a server that fails
/// to start is seen at once. The reader runs with stdout/stderr on /dev/null so it never holds
/// the output pipes open.
const WATCHDOG: &str = r#"exec 3<&0
"$@" </dev/null &
pid=$!
{
  while read -r line; do :; done
  kill -KILL "$pid" 2>/dev/null
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  if [ -n "$FACEDB_IT_TMP" ]; then rm -rf "$FACEDB_IT_TMP"; fi
} <&3 >/dev/null 2>&1 &
exec 3<&-
wait "$pid"
"#;

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub fn next_unique() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "facedb-it-{}-{}-{}-{}",
            label,
            std::process::id(),
            next_unique(),
            nanos
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside this directory and returns the full path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// A running `facedb serve`.
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    base: String,
    stderr: Arc<Mutex<String>>,
    watchdog: bool,
    _dir: Option<TempDir>,
}

/// What a server that did not come up left behind.
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// The shared server: example schema, default flags.
pub fn shared() -> &'static Server {
    static SHARED: OnceLock<Server> = OnceLock::new();
    SHARED.get_or_init(|| Server::start(&[]))
}

/// The standard arguments: any port, a fresh data dir, the example schema.
pub fn standard_args(dir: &TempDir) -> Vec<String> {
    serve_args(dir, Path::new(EXAMPLE_SCHEMA))
}

/// `serve` on any port with `dir` as data dir and the given schema file.
pub fn serve_args(dir: &TempDir, schema: &Path) -> Vec<String> {
    vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.path().display().to_string(),
        // No face models: they take a second and ~100 MB per worker to load, and only the
        // detection tests need them (they start servers of their own).
        "--extract-workers".into(),
        "0".into(),
        // Last: some tests replace the schema path.
        "--schema".into(),
        schema.display().to_string(),
    ]
}

fn drain<R: Read + Send + 'static>(r: R, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => into.lock().unwrap().push_str(&line),
            }
        }
    })
}

impl Server {
    /// Starts a server with the standard arguments plus `extra` (later flags win in clap only
    /// if repeated flags are allowed, so `extra` should not repeat a standard flag).
    pub fn start(extra: &[&str]) -> Server {
        let dir = TempDir::new("srv");
        let mut args = standard_args(&dir);
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::launch(&args, Some(dir), true).unwrap_or_else(|f| {
            panic!(
                "facedb did not start (args {args:?}): status {:?}\nstdout:\n{}\nstderr:\n{}",
                f.status, f.stdout, f.stderr
            )
        })
    }

    /// Starts `facedb` with exactly `args`. With `watchdog` the process is wrapped so that it
    /// dies with the test process; without, the child is the server itself (for signal tests).
    pub fn launch(args: &[String], dir: Option<TempDir>, watchdog: bool) -> Result<Server, StartFailure> {
        let mut cmd = if watchdog {
            let mut c = Command::new("sh");
            c.arg("-c").arg(WATCHDOG).arg("facedb-watchdog").arg(BIN);
            c
        } else {
            Command::new(BIN)
        };
        if let (true, Some(d)) = (watchdog, &dir) {
            cmd.env("FACEDB_IT_TMP", d.path());
        }
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn facedb");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout pipe");
        let stderr_pipe = child.stderr.take().expect("stderr pipe");

        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_thread = drain(stderr_pipe, stderr.clone());

        // Read stdout until the listening line, then keep draining it in the background.
        let stdout_buf = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let out_buf = stdout_buf.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let mut tx = Some(tx);
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        out_buf.lock().unwrap().push_str(&line);
                        if let Some(pos) = line.find(LISTENING) {
                            let addr = line[pos + LISTENING.len()..].trim().to_string();
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(addr);
                            }
                        }
                    }
                }
            }
        });

        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                let addr = addr.trim_end_matches('/').to_string();
                Ok(Server { child, stdin, base: format!("http://{addr}"), stderr, watchdog, _dir: dir })
            }
            Err(_) => {
                // Stdout closed (the process is gone or going) or it took too long.
                let status = wait_timeout(&mut child, Duration::from_secs(10));
                if status.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                drop(stdin);
                let _ = stderr_thread.join();
                let stdout = stdout_buf.lock().unwrap().clone();
                let stderr = stderr.lock().unwrap().clone();
                Err(StartFailure { status, stdout, stderr })
            }
        }
    }

    /// `http://HOST:PORT` of the server.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The child's pid (the server itself only when launched without the watchdog).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the process to exit on its own (after a signal, say).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_timeout(&mut self.child, timeout)
    }

    // -- HTTP -----------------------------------------------------------------------------

    /// Any request. `body: None` sends no body at all. Panics on a transport error.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>, content_type: Option<&str>) -> Resp {
        self.try_request(method, path, body, content_type)
            .unwrap_or_else(|e| panic!("{method} {path}: transport error {e}\nserver stderr:\n{}", self.stderr()))
    }

    /// Any request; a transport error comes back as `Err`.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<Resp, String> {
        self.try_request_bytes(method, path, body.map(str::as_bytes), content_type)
    }

    /// POST with a binary body (a photo, a multipart form); panics on a transport error.
    pub fn post_bytes(&self, path: &str, body: &[u8], content_type: Option<&str>) -> Resp {
        self.try_request_bytes("POST", path, Some(body), content_type)
            .unwrap_or_else(|e| panic!("POST {path}: transport error {e}\nserver stderr:\n{}", self.stderr()))
    }

    /// Any request with a binary body; a transport error comes back as `Err`.
    pub fn try_request_bytes(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: Option<&str>,
    ) -> Result<Resp, String> {
        let url = format!("{}{}", self.base, path);
        let mut b = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        let result = match body {
            Some(bytes) => agent().run(b.body(bytes.to_vec()).map_err(|e| e.to_string())?),
            None => agent().run(b.body(()).map_err(|e| e.to_string())?),
        };
        let mut resp = result.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(512 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| format!("reading body: {e}"))?;
        Ok(Resp { status, headers, body })
    }

    /// Sends `head` (request line and headers, without the blank line) and `body` over a
    /// fresh TCP connection with `Connection: close`, tolerating a server that answers and
    /// closes before it has read the whole body (as it may for a body that is too large).
    pub fn raw_request(&self, head: &str, body: &[u8]) -> Resp {
        let addr = self.base.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut bytes =
            format!("{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
                .into_bytes();
        bytes.extend_from_slice(body);
        let _ = stream.write_all(&bytes);
        let _ = stream.flush();
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
        parse_raw_response(&buf).unwrap_or_else(|| panic!("unparsable response: {:?}", String::from_utf8_lossy(&buf)))
    }

    /// POST with a body, sent like `curl --data` (form content type; the server reads JSON
    /// whatever the content type says).
    pub fn post(&self, path: &str, body: &str) -> Resp {
        self.request("POST", path, Some(body), Some("application/x-www-form-urlencoded"))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.post(path, &body.to_string())
    }

    /// POST without a body (`curl -X POST`).
    pub fn post_empty(&self, path: &str) -> Resp {
        self.request("POST", path, None, None)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, None, None)
    }

    // -- API shortcuts ----------------------------------------------------------------------

    /// Creates a gallery with a unique name starting with `prefix` and returns the name.
    pub fn new_gallery(&self, prefix: &str) -> String {
        let name = format!("{}_{}", prefix, next_unique());
        assert!(name.len() <= 64, "gallery name too long: {name}");
        self.create_gallery(&name);
        name
    }

    /// `POST /v2/galleries/add/{name}`, asserting 200 with an empty body.
    pub fn create_gallery(&self, name: &str) {
        let r = self.post_empty(&format!("/v2/galleries/add/{name}"));
        assert_eq!((r.status, r.body.as_str()), (200, ""), "creating gallery {name}");
    }

    pub fn add_faces(&self, gallery: &str, faces: &Value) -> Resp {
        self.post_json(&format!("/v2/faces/add/{gallery}"), faces)
    }

    /// Adds faces, asserting 200 with an empty body.
    pub fn add_ok(&self, gallery: &str, faces: &Value) {
        let r = self.add_faces(gallery, faces);
        assert_eq!((r.status, r.body.as_str()), (200, ""), "adding faces to {gallery}");
    }

    pub fn delete_faces(&self, gallery: &str, ids: &Value) -> Resp {
        self.post_json(&format!("/v2/faces/delete/{gallery}"), ids)
    }

    pub fn update_faces(&self, gallery: &str, faces: &Value) -> Resp {
        self.post_json(&format!("/v2/faces/update/{gallery}"), faces)
    }

    pub fn search(&self, gallery: &str, body: &Value) -> Resp {
        self.post_json(&format!("/v2/faces/search/{gallery}"), body)
    }

    /// Searches and returns the `results` array, asserting 200.
    pub fn search_ok(&self, gallery: &str, body: &Value) -> Vec<Value> {
        let r = self.search(gallery, body);
        assert_eq!(r.status, 200, "search {body} on {gallery}: {}", r.body);
        results(&r)
    }

    /// Searches and returns the ids of the results, in order.
    pub fn search_ids(&self, gallery: &str, body: &Value) -> Vec<u64> {
        self.search_ok(gallery, body).iter().map(|f| f["id"].as_u64().expect("result id is a u64")).collect()
    }

    /// Ids found by a `filter` (other keys default).
    pub fn filter_ids(&self, gallery: &str, filter: Value) -> Vec<u64> {
        self.search_ids(gallery, &json!({ "filter": filter }))
    }

    /// One stored face, read back with a search on its id.
    pub fn fetch(&self, gallery: &str, id: u64) -> Value {
        let r = self.search_ok(gallery, &json!({"filter": {"id": {"set": [id]}}}));
        assert_eq!(r.len(), 1, "face {id} in {gallery}: {r:?}");
        r[0].clone()
    }

    /// Face count from `/v2/galleries/get/{name}`.
    pub fn count(&self, gallery: &str) -> u64 {
        let r = self.get(&format!("/v2/galleries/get/{gallery}"));
        assert_eq!(r.status, 200, "get {gallery}: {}", r.body);
        let v = r.json();
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{v}");
        v["faces"].as_u64().expect("faces is a number")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing the watchdog's stdin kills the server; then reap the shell.
        drop(self.stdin.take());
        let grace = if self.watchdog { 5 } else { 0 };
        if wait_timeout(&mut self.child, Duration::from_secs(grace)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `child` until it exits or `timeout` passes.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .max_redirects(0)
            .build()
            .into()
    })
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// An HTTP response: status, headers (names lower-cased), body text.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    /// The body parsed as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}); status {}: {:?}", self.status, self.body))
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// The `results` array of a search/list/update response.
pub fn results(r: &Resp) -> Vec<Value> {
    let v = r.json();
    // A full page of a search also carries the cursor of the next one.
    let keys: Option<Vec<&str>> = v.as_object().map(|o| o.keys().map(String::as_str).collect());
    let expected = keys.as_deref() == Some(&["results"]) || keys.as_deref() == Some(&["next_page", "results"]);
    assert!(expected, "expected exactly {{\"results\": [...]}} (and a next_page string), got {v}");
    if let Some(cursor) = v.get("next_page") {
        assert!(cursor.as_str().is_some_and(|c| !c.is_empty()), "next_page is not a cursor: {v}");
    }
    v["results"].as_array().unwrap_or_else(|| panic!("no results array in {v}")).clone()
}

/// Asserts the one error shape of spec.md:
/// `{"error":{"code":<status>,"kind":..,"message":..,"param"?:..,"value"?:..}}`.
/// `param`/`value` are checked when given (`Some`), and `param: Some(..)` also requires it to
/// be present.
pub fn assert_error(r: &Resp, status: u16, kind: &str, param: Option<&str>, value: Option<&Value>) {
    let ctx = format!("response {} {:?}", r.status, r.body);
    assert_eq!(r.status, status, "status; {ctx}");
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("error body is not JSON ({e}); {ctx}"));
    let top = v.as_object().unwrap_or_else(|| panic!("not an object; {ctx}"));
    assert_eq!(top.len(), 1, "only the `error` key at the top; {ctx}");
    let e = v["error"].as_object().unwrap_or_else(|| panic!("no error object; {ctx}"));
    for k in e.keys() {
        assert!(
            ["code", "kind", "message", "param", "value"].contains(&k.as_str()),
            "unexpected key {k} in error; {ctx}"
        );
    }
    assert_eq!(e.get("code"), Some(&json!(status)), "error.code; {ctx}");
    assert_eq!(e.get("kind"), Some(&json!(kind)), "error.kind; {ctx}");
    let msg = e.get("message").and_then(|m| m.as_str());
    assert!(msg.is_some_and(|m| !m.is_empty()), "error.message must be a non-empty string; {ctx}");
    if let Some(p) = param {
        assert_eq!(e.get("param"), Some(&json!(p)), "error.param; {ctx}");
    }
    if let Some(val) = value {
        assert_eq!(e.get("value"), Some(val), "error.value; {ctx}");
    }
}

/// `error.message` of an error response.
pub fn error_message(r: &Resp) -> String {
    r.json()["error"]["message"].as_str().unwrap_or_default().to_string()
}

// ---------------------------------------------------------------------------------------------
// Faces
// ---------------------------------------------------------------------------------------------

/// A facen as the API wants it: standard base64 (padded) of little-endian f32s.
pub fn facen(v: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The inverse of [`facen`].
pub fn decode_facen(s: &str) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("facen {s:?} is not standard base64: {e}"));
    assert_eq!(bytes.len() % 4, 0, "facen byte length {}", bytes.len());
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A deterministic pseudo-random vector of `n` floats in [-1, 1) (splitmix64 of `seed`).
pub fn rand_vec(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A vector of `DIM` floats: zeros except the given leading values.
pub fn vec_with(head: &[f32]) -> Vec<f32> {
    let mut v = vec![0.0f32; DIM];
    v[..head.len()].copy_from_slice(head);
    v
}

/// Cosine similarity computed in f64 (0 for a zero vector), the test's own oracle.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na.sqrt() * nb.sqrt())).clamp(-1.0, 1.0)
    }
}

/// `{"id": id, "facen": facen(v), "meta": meta}`
pub fn face(id: u64, v: &[f32], meta: Value) -> Value {
    json!({"id": id, "facen": facen(v), "meta": meta})
}

/// A face with a pseudo-random 128-float vector derived from its id.
pub fn face_r(id: u64, meta: Value) -> Value {
    face(id, &rand_vec(id ^ 0x5EED, DIM), meta)
}

/// The example schema's meta with every field at its default, then `overrides` applied.
pub fn full_meta(overrides: Value) -> Value {
    let mut m = json!({
        "cam_id": "",
        "person_name": "",
        "person_id": 0,
        "timestamp": 0,
        "photo_hash": "",
        "m:timestamp": 0,
        "m:cam_id": "",
        "normalized_id": "",
        "feat": "",
        "tags": [],
        "lists": [],
    });
    if let Some(o) = overrides.as_object() {
        for (k, v) in o {
            m[k] = v.clone();
        }
    }
    m
}

/// Percent-encodes everything but unreserved characters (for gallery names in paths).
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Like [`assert_error`] for cases where spec.md fixes the status but leaves the rest open:
/// `kinds` lists the acceptable kinds, and `param`/`value` are checked only if the server
/// sends them.
pub fn assert_error_lenient(r: &Resp, status: u16, kinds: &[&str], param: Option<&str>, value: Option<&Value>) {
    let ctx = format!("response {} {:?}", r.status, r.body);
    assert_eq!(r.status, status, "status; {ctx}");
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("error body is not JSON ({e}); {ctx}"));
    let kind = v["error"]["kind"].as_str().unwrap_or_default().to_string();
    assert!(kinds.contains(&kind.as_str()), "error.kind; {ctx}");
    assert_error(r, status, &kind, None, None);
    if let (Some(p), Some(got)) = (param, v["error"].get("param")) {
        assert_eq!(got, &json!(p), "error.param; {ctx}");
    }
    if let (Some(val), Some(got)) = (value, v["error"].get("value")) {
        assert_eq!(got, val, "error.value; {ctx}");
    }
}

/// Parses a raw HTTP/1.1 response (Content-Length, chunked, or close-delimited body).
fn parse_raw_response(buf: &[u8]) -> Option<Resp> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut rest = &buf[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let body: Vec<u8> = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut out = Vec::new();
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = String::from_utf8_lossy(&rest[..nl]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..).unwrap_or(&[]);
        }
        out
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        rest.get(..len)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}
