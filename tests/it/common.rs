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
//!
//! A [`Cluster`] is `facedb shard` processes behind a `facedb router`, each a [`Server`], for
//! the tests of the router (`cluster.rs`): shards can be killed, restarted on the same data dir
//! and port, or stopped with `SIGSTOP`. With `FACEDB_IT_CLUSTER=1`, [`shared`] is a router over
//! three shards, and the tests that use it check the router against the single node's contract.

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

/// The face models' directory (`FACEDB_MODELS_DIR`, or `models/` of the repository); a test
/// that needs them fails, saying how to get them, when they are not there.
pub fn models_dir() -> String {
    let dir = std::env::var("FACEDB_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models")));
    assert!(
        dir.join("dlib_face_recognition_resnet_model_v1.dat").exists(),
        "the face models are not in {}: run tools/setup.sh",
        dir.display()
    );
    dir.display().to_string()
}

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

/// The shared server: example schema, default flags. With `FACEDB_IT_CLUSTER=1` it is a
/// `facedb router` over 3 `facedb shard`s instead (see [`Cluster`]), so that every test written
/// against one server also checks the router.
pub fn shared() -> &'static Server {
    if cluster_mode() {
        return shared_cluster().router();
    }
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
        self.raw_request_claiming(head, body.len(), body)
    }

    /// A raw request whose Content-Length says `claimed` bytes, whatever `body` holds.
    pub fn raw_request_claiming(&self, head: &str, claimed: usize, body: &[u8]) -> Resp {
        let addr = self.base.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut bytes =
            format!("{head}\r\nHost: {addr}\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n").into_bytes();
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

// ---------------------------------------------------------------------------------------------
// A cluster: storage shards behind a router
// ---------------------------------------------------------------------------------------------

/// Whether `FACEDB_IT_CLUSTER=1` asks for the suite to run through a router (see [`shared`]).
pub fn cluster_mode() -> bool {
    std::env::var("FACEDB_IT_CLUSTER").is_ok_and(|v| v == "1")
}

/// The shared cluster of [`shared`] under `FACEDB_IT_CLUSTER=1`: 3 shards and a router, alive
/// as long as the test process.
fn shared_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start_for_process(3))
}

/// `facedb shard` on `127.0.0.1:port` (0: any) with `data_dir` and the example schema.
pub fn shard_args(data_dir: &Path, port: u16) -> Vec<String> {
    vec![
        "shard".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--schema".into(),
        EXAMPLE_SCHEMA.into(),
    ]
}

/// A lone `facedb shard` on any port with a fresh data dir: the single-node reference the
/// cluster tests compare a router with.
pub fn start_shard() -> Server {
    let dir = TempDir::new("shard");
    let args = shard_args(dir.path(), 0);
    Server::launch(&args, Some(dir), true)
        .unwrap_or_else(|f| panic!("facedb shard did not start (args {args:?}): {f:?}"))
}

/// Sends `sig` (`KILL`, `STOP`, `CONT`...) to `pid` with `kill(1)` (the tests have no `libc`).
pub fn send_signal(pid: u32, sig: &str) {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{sig} {pid}: {status}");
}

impl Server {
    /// The pid of the `facedb` process itself: the child, or under the watchdog the shell's
    /// child running the binary (found in `/proc`).
    pub fn server_pid(&self) -> u32 {
        let shell = self.child.id();
        if !self.watchdog {
            return shell;
        }
        let entries = std::fs::read_dir("/proc").expect("read /proc");
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // "pid (comm) state ppid ...": comm may hold spaces, so split at the last ')'.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let comm = &stat[open + 1..close];
            let ppid = stat[close + 1..].split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok());
            if ppid == Some(shell) && comm == "facedb" {
                return pid;
            }
        }
        panic!("no facedb process under the watchdog shell {shell}")
    }
}

/// The router's per-shard timeouts (`storage-api.timeouts`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response_header: Duration,
    pub overall: Duration,
}

impl Default for Timeouts {
    /// The contract's example: connect 1 s, response header and overall 2 s.
    fn default() -> Timeouts {
        Timeouts::overall(Duration::from_secs(2))
    }
}

impl Timeouts {
    /// `overall` for the response header and the whole call; connect at most 1 s.
    pub fn overall(overall: Duration) -> Timeouts {
        Timeouts { connect: overall.min(Duration::from_secs(1)), response_header: overall, overall }
    }
}

/// A duration as the router's YAML writes it: `2s`, `1500ms`.
fn yaml_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A router config file (`facedb router --config FILE`), in the seed's sf-api shape.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The shards' `master` URLs, in placement order.
    pub shards: Vec<String>,
    pub timeouts: Timeouts,
    /// More YAML lines inside `storage-api:` (indented by 2).
    pub storage_api_extra: String,
    /// More top-level YAML.
    pub extra: String,
}

impl RouterConfig {
    pub fn new(shards: Vec<String>, timeouts: Timeouts) -> RouterConfig {
        RouterConfig { shards, timeouts, storage_api_extra: String::new(), extra: String::new() }
    }

    pub fn yaml(&self) -> String {
        let t = &self.timeouts;
        let mut y = String::from("listen: 127.0.0.1:0\nstorage-api:\n");
        let _ = writeln!(
            y,
            "  timeouts: {{connect: {}, response_header: {}, overall: {}, idle_connection: 10s}}",
            yaml_duration(t.connect),
            yaml_duration(t.response_header),
            yaml_duration(t.overall)
        );
        y.push_str("  max-idle-conns-per-host: 20\n");
        y.push_str(&self.storage_api_extra);
        y.push_str("  shards:\n");
        for url in &self.shards {
            let _ = writeln!(y, "    - master: {url}\n      slave: ''");
        }
        // No in-process detection: the models take a second and ~100 MB to load.
        y.push_str("extract: {workers: 0}\n");
        y.push_str(&self.extra);
        y
    }
}

/// One storage shard of a [`Cluster`]: its process (absent while killed), data dir and port,
/// which a restart keeps.
struct ClusterShard {
    server: Option<Server>,
    port: u16,
    data_dir: PathBuf,
    /// Owned here, so that the data outlives a kill; `None` when the watchdog removes it.
    _dir: Option<TempDir>,
}

/// `n` `facedb shard` processes and a `facedb router` over them, all on loopback ports and
/// under the watchdog. A shard can be killed (`kill -9`), restarted on the same data dir and
/// port, or stopped (`SIGSTOP`); the router can be restarted with another shard list.
pub struct Cluster {
    // Fields drop in order: the router, then the shards, then the config files.
    router: Option<Server>,
    shards: Vec<ClusterShard>,
    timeouts: Timeouts,
    /// Where router configs are written; `None` for the cluster of [`shared`], whose one config
    /// goes with its router's watchdog.
    config_dir: Option<TempDir>,
}

/// A shard stopped with `SIGSTOP`; dropping this sends `SIGCONT`, so a failing test never
/// leaves a stopped process behind.
pub struct Stopped {
    pid: u32,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-CONT").arg(self.pid.to_string()).status();
    }
}

impl Cluster {
    /// `n` shards and a router with the default timeouts (overall 2 s).
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, Timeouts::default())
    }

    /// `n` shards and a router with the given timeouts.
    pub fn start_with(n: usize, timeouts: Timeouts) -> Cluster {
        let mut cluster = Cluster::shards_only(n, timeouts, true);
        cluster.start_router(&(0..n).collect::<Vec<_>>()).unwrap_or_else(|f| panic!("the router did not start: {f:?}"));
        cluster
    }

    /// `n` shards and no router yet (see [`Cluster::start_router`]).
    fn shards_only(n: usize, timeouts: Timeouts, keep_dirs: bool) -> Cluster {
        let shards = (0..n)
            .map(|_| {
                let dir = TempDir::new("shard");
                let data_dir = dir.path().to_path_buf();
                let args = shard_args(&data_dir, 0);
                // A shard the cluster never restarts lets the watchdog remove its dir.
                let (keep, give) = if keep_dirs { (Some(dir), None) } else { (None, Some(dir)) };
                let server = Server::launch(&args, give, true)
                    .unwrap_or_else(|f| panic!("facedb shard did not start (args {args:?}): {f:?}"));
                let port = port_of(server.base_url());
                ClusterShard { server: Some(server), port, data_dir, _dir: keep }
            })
            .collect();
        let config_dir = keep_dirs.then(|| TempDir::new("router"));
        Cluster { router: None, shards, timeouts, config_dir }
    }

    /// The cluster of [`shared`]: held in a static, never dropped, so the watchdogs remove the
    /// shards' data dirs and the router's config when the test process ends.
    fn start_for_process(n: usize) -> Cluster {
        let mut cluster = Cluster::shards_only(n, Timeouts::default(), false);
        let dir = TempDir::new("router");
        let file = dir.write("router.yaml", &cluster.config(&(0..n).collect::<Vec<_>>()).yaml());
        let router = Server::launch(&router_args(&file), Some(dir), true)
            .unwrap_or_else(|f| panic!("the router did not start: {f:?}"));
        cluster.router = Some(router);
        cluster
    }

    /// The router: every [`Server`] request helper works on it.
    pub fn router(&self) -> &Server {
        self.router.as_ref().expect("the router is running")
    }

    /// Shard `i` itself, to check what it holds.
    pub fn shard(&self, i: usize) -> &Server {
        self.shards[i].server.as_ref().unwrap_or_else(|| panic!("shard {i} is not running"))
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Shard `i`'s URL as the router's config gives it (and its errors name it):
    /// `http://127.0.0.1:PORT/v2/`.
    pub fn shard_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}/v2/", self.shards[i].port)
    }

    pub fn shard_urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.shard_url(i)).collect()
    }

    /// A config over the shards `order` (positions in this cluster) with this cluster's timeouts.
    pub fn config(&self, order: &[usize]) -> RouterConfig {
        RouterConfig::new(order.iter().map(|&i| self.shard_url(i)).collect(), self.timeouts)
    }

    /// Starts a router with `config` (the current one, if any, keeps running).
    pub fn launch_router(&self, config: &RouterConfig) -> Result<Server, StartFailure> {
        let dir = self.config_dir.as_ref().expect("this cluster starts no other router");
        let file = dir.write(&format!("router-{}.yaml", next_unique()), &config.yaml());
        Server::launch(&router_args(&file), None, true)
    }

    /// Stops the router, if one runs.
    pub fn stop_router(&mut self) {
        drop(self.router.take());
    }

    /// Replaces the router with one over the shards `order`.
    pub fn start_router(&mut self, order: &[usize]) -> Result<(), StartFailure> {
        self.stop_router();
        let config = self.config(order);
        self.router = Some(self.launch_router(&config)?);
        Ok(())
    }

    /// `kill -9` of shard `i`; returns once it is gone.
    pub fn kill_shard(&mut self, i: usize) {
        let mut server = self.shards[i].server.take().unwrap_or_else(|| panic!("shard {i} is not running"));
        send_signal(server.server_pid(), "KILL");
        assert!(server.wait_exit(Duration::from_secs(10)).is_some(), "shard {i} did not die of kill -9");
    }

    /// `SIGTERM` of shard `i`; returns once it has shut down.
    pub fn terminate_shard(&mut self, i: usize) {
        let mut server = self.shards[i].server.take().unwrap_or_else(|| panic!("shard {i} is not running"));
        send_signal(server.server_pid(), "TERM");
        let status = server.wait_exit(Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "shard {i} did not shut down on SIGTERM: {status:?}");
    }

    /// Shard `i`'s data dir.
    pub fn shard_dir(&self, i: usize) -> PathBuf {
        self.shards[i].data_dir.clone()
    }

    /// Starts shard `i` again on its data dir and port (killing it first if it runs).
    pub fn restart_shard(&mut self, i: usize) {
        let dir = self.shard_dir(i);
        self.restart_shard_on(i, &dir);
    }

    /// Starts shard `i`'s process again on its port but on `data_dir` (an empty dir, or another
    /// shard's, which must be stopped), killing it first if it runs. A later
    /// [`Cluster::restart_shard`] goes back to its own data dir.
    pub fn restart_shard_on(&mut self, i: usize, data_dir: &Path) {
        if self.shards[i].server.is_some() {
            self.kill_shard(i);
        }
        let shard = &self.shards[i];
        let args = shard_args(data_dir, shard.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        let server = loop {
            match Server::launch(&args, None, true) {
                Ok(server) => break server,
                // The port may take a moment to be free again.
                Err(f) if Instant::now() < deadline && f.stderr.contains("in use") => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(f) => panic!("shard {i} did not restart (args {args:?}): {f:?}"),
            }
        };
        self.shards[i].server = Some(server);
    }

    /// Replaces shard `i` by an empty one on the same port: killed, its data dir emptied, and
    /// started again (a lost disk, replaced).
    pub fn wipe_shard(&mut self, i: usize) {
        if self.shards[i].server.is_some() {
            self.kill_shard(i);
        }
        let dir = &self.shards[i].data_dir;
        std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        self.restart_shard(i);
    }

    /// `SIGSTOP` of shard `i` until the returned guard is dropped (`SIGCONT`).
    #[must_use = "the shard is continued when the guard is dropped"]
    pub fn stop_shard(&self, i: usize) -> Stopped {
        let pid = self.shard(i).server_pid();
        send_signal(pid, "STOP");
        Stopped { pid }
    }
}

/// `facedb router --config FILE`.
fn router_args(config: &Path) -> Vec<String> {
    vec!["router".into(), "--config".into(), config.display().to_string()]
}

/// The port of `http://HOST:PORT`.
fn port_of(base: &str) -> u16 {
    base.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {base}"))
}
