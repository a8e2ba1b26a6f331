//! `proto/openapi.yaml` against the real servers: every operation of the document is called,
//! with requests that succeed and requests that fail, and every answer is checked against what
//! the document says of that operation.
//!
//! The document is read once ([`Doc`]); each response and request-body schema is compiled into
//! a JSON Schema 2020-12 validator (OpenAPI 3.1's dialect) over the document's `components`, so
//! that `$ref`s resolve as in the document. A [`Checker`] then takes each real answer: it finds
//! the path template the request path matches (a literal segment before a parameter, as the
//! server's router does) and the operation of the method, and requires
//!
//! - the status to be listed for the operation (`default` stands only for 5xx failures of the
//!   server itself, so every status the test provokes must be listed explicitly);
//! - a body only where the response has content, of a documented content type, valid against
//!   its schema, with `error.code` equal to the status;
//! - the documented response headers (a required one present, each valid against its schema);
//! - for a 2xx answer, the JSON request that got it valid against the operation's request
//!   body: what the server accepts, the document must accept;
//! - a method the path does not document to answer 405 with an `Allow` header listing exactly
//!   the documented methods, and a path outside the document 404, both with the error body.
//!
//! Every expected status is also asserted, so that each request exercises what it is there for.
//! Failures are collected and reported together, and the test fails as well if an operation of
//! the document was never called. The servers, in parallel threads:
//!
//! - `facedb serve` with the default schema (43 fields, so every face has empty sets) on one
//!   local shard: every galleries and faces operation, success and error, 413 under a small
//!   `--max-body-bytes`, single-shard status and snapshots, and every undocumented method of
//!   every path (405);
//! - `facedb serve --shards 2` with the example schema and a small `--memory-limit`: status and
//!   snapshots per shard (before and once every shard has a snapshot), 507;
//! - a `facedb router` over two `facedb shard`s: the same API through the router, a shard's
//!   `/v2/admin/cluster` (claimed, and a lone unclaimed shard's `cluster: null`), `X-Facedb-Cluster`
//!   on every shard operation (421 `WRONG_SHARD`, 400), and with a shard on an empty data dir,
//!   then killed: 503 `STORAGE_ERROR`, `ignore_errors` with `failed_shards`, per-shard errors in
//!   the status;
//! - detection on the real models (as `detect.rs`, they must be in `models/`: `tools/setup.sh`):
//!   `facedb serve` with models (detect, enrolling by detection, `GET /uploads/...`) and
//!   `facedb extract` (403 without `--allow-return-facen`, 413 past `--body-image-length`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

use crate::common::*;

const DOCUMENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/openapi.yaml");

/// The methods tried on every path to check the 405s.
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

// ---------------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------------

/// A path of the document: its template split into segments, and its operations by method.
struct PathItem {
    template: String,
    /// `None` for a `{parameter}` segment.
    segments: Vec<Option<String>>,
    /// Upper-case method to the JSON pointer of its operation.
    operations: BTreeMap<String, String>,
}

/// The OpenAPI document, with a validator for every schema a response or request may be
/// checked against, by the JSON pointer of the schema in the document.
struct Doc {
    root: Value,
    paths: Vec<PathItem>,
    validators: HashMap<String, jsonschema::Validator>,
}

/// `/` and `~` escaped for a JSON pointer.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

impl Doc {
    fn load() -> Doc {
        let text = std::fs::read_to_string(DOCUMENT).unwrap_or_else(|e| panic!("{DOCUMENT}: {e}"));
        Doc::parse(&text)
    }

    fn parse(text: &str) -> Doc {
        let root: Value = serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{DOCUMENT} is not YAML: {e}"));
        assert_eq!(root["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true), "an OpenAPI 3.1 document");
        let mut doc = Doc { paths: Vec::new(), validators: HashMap::new(), root };
        let paths = doc.root["paths"].as_object().expect("paths").clone();
        for (template, item) in &paths {
            let segments = template
                .split('/')
                .skip(1)
                .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_owned()))
                .collect();
            let mut operations = BTreeMap::new();
            for method in ["get", "post", "put", "delete", "patch", "head", "options"] {
                if item.get(method).is_some() {
                    let pointer = format!("/paths/{}/{method}", escape(template));
                    doc.compile_operation(&pointer);
                    operations.insert(method.to_uppercase(), pointer);
                }
            }
            doc.paths.push(PathItem { template: template.clone(), segments, operations });
        }
        doc.compile("/components/schemas/ErrorBody");
        doc
    }

    /// The object at `pointer`, and where it is once a `$ref` is followed.
    fn deref(&self, pointer: &str) -> (String, &Value) {
        let value = self.root.pointer(pointer).unwrap_or_else(|| panic!("nothing at {pointer}"));
        match value.get("$ref").and_then(Value::as_str) {
            Some(target) => {
                let target = target.strip_prefix('#').unwrap_or_else(|| panic!("a remote $ref at {pointer}"));
                self.deref(target)
            }
            None => (pointer.to_owned(), value),
        }
    }

    fn compile_operation(&mut self, operation: &str) {
        let responses: Vec<String> = self
            .root
            .pointer(&format!("{operation}/responses"))
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("no responses at {operation}"))
            .keys()
            .cloned()
            .collect();
        for status in responses {
            let (at, response) = self.deref(&format!("{operation}/responses/{status}"));
            let media: Vec<String> =
                response["content"].as_object().map(|c| c.keys().cloned().collect()).unwrap_or_default();
            let headers: Vec<String> =
                response["headers"].as_object().map(|h| h.keys().cloned().collect()).unwrap_or_default();
            for media in media.iter().filter(|m| *m == "application/json") {
                self.compile(&format!("{at}/content/{}/schema", escape(media)));
            }
            for header in headers {
                let (header_at, _) = self.deref(&format!("{at}/headers/{}", escape(&header)));
                self.compile(&format!("{header_at}/schema"));
            }
        }
        if self.root.pointer(&format!("{operation}/requestBody")).is_some() {
            let (at, body) = self.deref(&format!("{operation}/requestBody"));
            if body.pointer("/content/application~1json/schema").is_some() {
                self.compile(&format!("{at}/content/application~1json/schema"));
            }
        }
    }

    /// A validator for the schema at `pointer`: the schema with the document's `components`
    /// beside it, so that its `#/components/...` references resolve.
    fn compile(&mut self, pointer: &str) {
        if self.validators.contains_key(pointer) {
            return;
        }
        let mut schema = self.root.pointer(pointer).cloned().unwrap_or_else(|| panic!("no schema at {pointer}"));
        let object = schema.as_object_mut().unwrap_or_else(|| panic!("the schema at {pointer} is not an object"));
        object.insert("components".into(), self.root["components"].clone());
        let validator =
            jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("the schema at {pointer}: {e}"));
        self.validators.insert(pointer.to_owned(), validator);
    }

    /// The errors of `instance` against the schema at `pointer`; empty when it is valid.
    fn errors(&self, pointer: &str, instance: &Value) -> Vec<String> {
        let validator = self.validators.get(pointer).unwrap_or_else(|| panic!("no validator for {pointer}"));
        if validator.is_valid(instance) {
            return Vec::new();
        }
        // Every failing keyword, also inside oneOf alternatives: the one that fails the top
        // alone ("not valid under any of the schemas") says nothing of why.
        let evaluation = validator.evaluate(instance);
        let errors = evaluation
            .iter_errors()
            .map(|e| short(&format!("{:?}: {} [{}]", e.instance_location.as_str(), e.error, e.schema_location)));
        errors.collect()
    }

    /// The path of the document a request path falls under: at the first segment where two
    /// templates differ, a literal one wins over a parameter (as the server's router).
    fn find(&self, path: &str) -> Option<&PathItem> {
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let matches = |item: &&PathItem| {
            item.segments.len() == segments.len()
                && item.segments.iter().zip(&segments).all(|(t, s)| t.as_deref().is_none_or(|t| t == *s))
        };
        self.paths
            .iter()
            .filter(matches)
            .min_by_key(|item| item.segments.iter().map(Option::is_none).collect::<Vec<_>>())
    }

    /// Every operation of the document, as (template, METHOD).
    fn operations(&self) -> BTreeSet<(String, String)> {
        self.paths.iter().flat_map(|p| p.operations.keys().map(|m| (p.template.clone(), m.clone()))).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Checking answers
// ---------------------------------------------------------------------------------------------

/// Checks real answers against the document and records what was covered and what failed.
struct Checker<'d> {
    doc: &'d Doc,
    scenario: &'static str,
    /// (template, METHOD, status) of every answer of a documented operation.
    seen: BTreeSet<(String, String, u16)>,
    /// Templates whose undocumented methods were answered (405).
    refused_methods: BTreeSet<String>,
    failures: Vec<String>,
    answers: usize,
}

fn short(text: &str) -> String {
    let mut end = text.len().min(400);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end < text.len() {
        format!("{}...", &text[..end])
    } else {
        text.to_owned()
    }
}

impl<'d> Checker<'d> {
    fn new(doc: &'d Doc, scenario: &'static str) -> Checker<'d> {
        Checker {
            doc,
            scenario,
            seen: BTreeSet::new(),
            refused_methods: BTreeSet::new(),
            failures: Vec::new(),
            answers: 0,
        }
    }

    // -- requests -------------------------------------------------------------------------

    /// Sends a request, checks the answer, and asserts (by recording a failure) its status.
    fn call(
        &mut self,
        server: &Server,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: Option<&str>,
        want: u16,
    ) -> Resp {
        let r = server
            .try_request_bytes(method, path, body, content_type)
            .unwrap_or_else(|e| panic!("[{}] {method} {path}: transport error {e}", self.scenario));
        self.check(method, path, body, &r, want);
        r
    }

    fn get(&mut self, server: &Server, path: &str, want: u16) -> Resp {
        self.call(server, "GET", path, None, None, want)
    }

    fn post(&mut self, server: &Server, path: &str, body: &Value, want: u16) -> Resp {
        self.call(server, "POST", path, Some(body.to_string().as_bytes()), Some("application/json"), want)
    }

    /// POST of a body as written (not necessarily JSON), sent like `curl --data`.
    fn post_text(&mut self, server: &Server, path: &str, body: &str, want: u16) -> Resp {
        self.call(server, "POST", path, Some(body.as_bytes()), Some("application/x-www-form-urlencoded"), want)
    }

    fn post_empty(&mut self, server: &Server, path: &str, want: u16) -> Resp {
        self.call(server, "POST", path, None, None, want)
    }

    /// POST of a binary body (a photo) with its content type.
    fn post_bytes_as(&mut self, server: &Server, path: &str, body: &[u8], content_type: &str, want: u16) -> Resp {
        self.call(server, "POST", path, Some(body), Some(content_type), want)
    }

    /// A request with extra header lines (`Name: value\r\n...`, without the last CRLF).
    fn with_headers(
        &mut self,
        server: &Server,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
        want: u16,
    ) -> Resp {
        let head = match headers {
            "" => format!("{method} {path} HTTP/1.1"),
            headers => format!("{method} {path} HTTP/1.1\r\n{headers}"),
        };
        let r = server.raw_request(&head, body);
        self.check(method, path, Some(body), &r, want);
        r
    }

    // -- checks ---------------------------------------------------------------------------

    fn fail(&mut self, what: String) {
        self.failures.push(format!("[{}] {what}", self.scenario));
    }

    /// Checks one answer to `method path` (with the request body `request`).
    fn check(&mut self, method: &str, path: &str, request: Option<&[u8]>, r: &Resp, want: u16) {
        self.answers += 1;
        let context = format!("{method} {path} answered {} {}", r.status, short(&r.body));
        if r.status != want {
            self.fail(format!("{context}: expected status {want}"));
        }
        let bare = path.split('?').next().unwrap_or(path);
        let Some(item) = self.doc.find(bare) else {
            if r.status != 404 {
                self.fail(format!("{context}: a path outside the document must answer 404"));
            }
            self.check_json(&context, "/components/schemas/ErrorBody", r);
            return;
        };
        let Some(operation) = item.operations.get(method) else {
            if r.status != 405 {
                self.fail(format!("{context}: a method {} does not document must answer 405", item.template));
            }
            let documented: BTreeSet<&str> = item.operations.keys().map(String::as_str).collect();
            let allowed: BTreeSet<&str> =
                r.header("allow").unwrap_or_default().split(',').map(str::trim).filter(|m| !m.is_empty()).collect();
            if allowed != documented {
                self.fail(format!("{context}: Allow is {allowed:?}, the document has {documented:?}"));
            }
            self.check_json(&context, "/components/schemas/ErrorBody", r);
            self.refused_methods.insert(item.template.clone());
            return;
        };
        let template = item.template.clone();
        self.seen.insert((template.clone(), method.to_owned(), r.status));
        let status = r.status.to_string();
        let listed = self.doc.root.pointer(&format!("{operation}/responses/{status}")).is_some();
        let key = if listed {
            status
        } else if r.status >= 500 && self.doc.root.pointer(&format!("{operation}/responses/default")).is_some() {
            "default".to_owned()
        } else {
            self.fail(format!("{context}: status {} is not documented for {method} {template}", r.status));
            return;
        };
        let (at, response) = self.doc.deref(&format!("{operation}/responses/{key}"));
        let response = response.clone();
        self.check_headers(&context, &at, &response, r);
        match response.get("content").and_then(Value::as_object) {
            None if !r.body.is_empty() => {
                self.fail(format!("{context}: the document gives response {key} of {method} {template} no body"))
            }
            None => {}
            Some(content) => {
                let media =
                    r.header("content-type").map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
                match media {
                    Some(media) if content.contains_key(&media) => {
                        if media == "application/json" {
                            self.check_json(&context, &format!("{at}/content/application~1json/schema"), r);
                        }
                    }
                    other => self.fail(format!(
                        "{context}: content type {other:?}, the document has {:?}",
                        content.keys().collect::<Vec<_>>()
                    )),
                }
            }
        }
        if (200..300).contains(&r.status) {
            self.check_request(&context, operation, request);
        }
    }

    fn check_headers(&mut self, context: &str, at: &str, response: &Value, r: &Resp) {
        let Some(headers) = response.get("headers").and_then(Value::as_object) else { return };
        for name in headers.keys() {
            let (header_at, header) = self.doc.deref(&format!("{at}/headers/{}", escape(name)));
            match r.header(name) {
                None if header["required"] == json!(true) => self.fail(format!("{context}: no header {name}")),
                None => {}
                Some(value) => {
                    let errors = self.doc.errors(&format!("{header_at}/schema"), &json!(value));
                    if !errors.is_empty() {
                        self.fail(format!("{context}: header {name}: {value:?}: {}", errors.join("; ")));
                    }
                }
            }
        }
    }

    /// The answer's body against the schema at `pointer`, and an error's code against the status.
    fn check_json(&mut self, context: &str, pointer: &str, r: &Resp) {
        let body: Value = match serde_json::from_str(&r.body) {
            Ok(body) => body,
            Err(e) => return self.fail(format!("{context}: the body is not JSON: {e}")),
        };
        let errors = self.doc.errors(pointer, &body);
        if !errors.is_empty() {
            self.fail(format!("{context}: invalid against {pointer}: {}", errors.join("; ")));
        }
        if let Some(code) = body.pointer("/error/code") {
            if code != &json!(r.status) {
                self.fail(format!("{context}: error.code {code} is not the status"));
            }
        }
    }

    /// What the server accepted, the document must accept: a JSON request body of a 2xx answer
    /// against the operation's request body schema.
    fn check_request(&mut self, context: &str, operation: &str, request: Option<&[u8]>) {
        let Some(bytes) = request.filter(|b| !b.iter().all(u8::is_ascii_whitespace)) else { return };
        let Ok(body) = serde_json::from_slice::<Value>(bytes) else { return };
        if self.doc.root.pointer(&format!("{operation}/requestBody")).is_none() {
            return;
        }
        let (at, request_body) = self.doc.deref(&format!("{operation}/requestBody"));
        if request_body.pointer("/content/application~1json/schema").is_none() {
            return;
        }
        let errors = self.doc.errors(&format!("{at}/content/application~1json/schema"), &body);
        if !errors.is_empty() {
            self.fail(format!(
                "{context}: the server accepted the request {}, which the document refuses: {}",
                short(&body.to_string()),
                errors.join("; ")
            ));
        }
    }

    fn merge(&mut self, other: Checker<'d>) {
        self.seen.extend(other.seen);
        self.refused_methods.extend(other.refused_methods);
        self.failures.extend(other.failures);
        self.answers += other.answers;
    }

    /// The operations of the document no answer came from.
    fn never_called(&self) -> Vec<String> {
        let called: BTreeSet<(String, String)> = self.seen.iter().map(|(t, m, _)| (t.clone(), m.clone())).collect();
        self.doc.operations().difference(&called).map(|(t, m)| format!("{m} {t}")).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// A face whose facen is a JSON array of numbers rather than base64.
fn face_numbers(id: u64, meta: Value) -> Value {
    json!({"id": id, "facen": rand_vec(id ^ 0x0A0A, DIM), "meta": meta})
}

/// A JSON body larger than `bytes`.
fn large_body(bytes: usize) -> String {
    format!("[{}0]", "0,".repeat(bytes / 2 + 1))
}

/// Fills a template's parameters with sample values.
fn sample_path(template: &str) -> String {
    template
        .split('/')
        .map(|s| match s {
            "{from}" | "{to}" | "{id}" => "1".to_owned(),
            "{name}" if template.starts_with("/uploads/") => format!("{}.png", "0".repeat(64)),
            s if s.starts_with('{') => "people".to_owned(),
            s => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `facedb serve` on the embedded default schema: `serve_args` without its last two
/// arguments (`--schema FILE`), plus `extra`.
fn serve_default_schema(extra: &[&str]) -> Server {
    let dir = TempDir::new("openapi");
    let mut args = serve_args(&dir, std::path::Path::new(EXAMPLE_SCHEMA));
    args.truncate(args.len() - 2);
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::launch(&args, Some(dir), true).unwrap_or_else(|f| panic!("facedb serve did not start: {f:?}"))
}

/// The galleries and faces API, success and error, on `s`, in gallery `g` (created here).
/// `meta` is a valid meta object of the server's schema; `big` a body past its max_body_bytes,
/// when it has a small one.
fn galleries_and_faces(ck: &mut Checker, s: &Server, g: &str, meta: &Value, big: Option<&str>) {
    ck.post_empty(s, &format!("/v2/galleries/add/{g}"), 200);
    ck.post_empty(s, &format!("/v2/galleries/add/{g}"), 409);
    ck.post_empty(s, "/v2/galleries/add/bad.name", 400);
    ck.post(s, &format!("/v2/galleries/add/{g}_tuned"), &json!({"m": 48, "ef_search": 256}), 200);
    ck.post(s, &format!("/v2/galleries/add/{g}_bad"), &json!({"m": 2}), 400);
    ck.post_empty(s, &format!("/v2/galleries/{g}_alias"), 200);
    ck.post_empty(s, &format!("/v2/galleries/{g}_alias"), 409);
    ck.post_empty(s, "/v2/galleries/bad.name", 400);

    let add = format!("/v2/faces/add/{g}");
    ck.post(s, &add, &json!([face_r(1, meta.clone()), face_numbers(2, json!({})), face_r(3, json!({}))]), 200);
    ck.post(s, &add, &json!([face_r(1, json!({}))]), 409);
    ck.post(s, &add, &json!([{"id": 4, "facen": "abc"}]), 400);
    ck.post(s, &add, &json!([{"id": 4, "facen": [0.5, 1.0]}]), 400);
    ck.post(s, &add, &json!([face_r(4, json!({"no_such_field": 1}))]), 400);
    ck.post_text(s, &add, "not json", 400);
    ck.post(s, "/v2/faces/add/nowhere", &json!([face_r(4, json!({}))]), 404);

    let get = |id: &str| format!("/v2/faces/get/{g}/{id}");
    let face = ck.get(s, &get("1"), 200).json();
    ck.get(s, &get("2"), 200);
    ck.get(s, &get("99"), 404);
    ck.get(s, &get("abc"), 400);
    ck.get(s, &get("18446744073709551616"), 400);
    ck.get(s, "/v2/faces/get/nowhere/1", 404);
    ck.get(s, "/v2/faces/get/bad.name/1", 400);

    let update = format!("/v2/faces/update/{g}");
    ck.post(s, &update, &json!([{"id": 1, "meta": meta}]), 200);
    ck.post(s, &update, &json!([{"id": 1, "facen": null}, {"id": 2, "facen": rand_vec(7, DIM)}]), 200);
    ck.post(s, &update, &json!([{"id": 3, "facen": face["facen"], "meta": {}}]), 200);
    ck.post(s, &update, &json!([]), 200);
    ck.post(s, &update, &json!([{"id": 99}]), 404);
    ck.post(s, &update, &json!([{"id": 1}, {"id": 1}]), 400);
    ck.post(s, "/v2/faces/update/nowhere", &json!([{"id": 1}]), 404);

    let search = format!("/v2/faces/search/{g}");
    let sample = rand_vec(1 ^ 0x5EED, DIM);
    ck.post_empty(s, &search, 200);
    ck.post(s, &search, &json!({}), 200);
    ck.post(s, &search, &json!(null), 200);
    ck.post(s, &search, &json!({"limit": 2, "sort": "-id"}), 200);
    let page = ck.post(s, &search, &json!({"limit": 1, "sort": {"id": 1}}), 200).json();
    ck.post(s, &search, &json!({"limit": 1, "sort": {"id": 1}, "page": page["next_page"]}), 200);
    ck.post(s, &search, &json!({"filter": {"facen": {"data": facen(&sample), "score": [-1, 1]}}, "limit": 2}), 200);
    ck.post(s, &search, &json!({"filter": {"facen": {"data": sample}}, "sort": {"score": -1}, "exact": true}), 200);
    ck.post(s, &search, &json!({"filter": {"facen": {"face": {"gallery": g, "id": 2}}}}), 200);
    ck.post(s, &search, &json!({"filter": {"id": {"range": [1, 2], "set": [1, 2, 3]}, "meta": null}}), 200);
    ck.post(s, &search, &json!({"limit": null, "sort": null, "filter": null, "page": null, "exact": null}), 200);
    ck.post(s, &format!("{search}?ignore_errors=true"), &json!({"ignore_errors": true}), 200);
    ck.post(s, &search, &json!({"limit": 100_000_000}), 400);
    ck.post(s, &search, &json!({"filter": {"facen": {"data": [1.0]}}}), 400);
    ck.post(s, &search, &json!({"sort": "-score"}), 400);
    ck.post(s, &search, &json!({"page": "not a cursor"}), 400);
    ck.post(s, &format!("{search}?ignore_errors=maybe"), &json!({}), 400);
    ck.post(s, &search, &json!({"filter": {"facen": {"face": {"gallery": "nowhere", "id": 1}}}}), 404);
    ck.post(s, &search, &json!({"filter": {"facen": {"face": {"gallery": g, "id": 99}}}}), 404);
    ck.post(s, &search, &json!({"filter": {"facen": {"detection": "nope"}}}), 404);
    ck.post(s, "/v2/faces/search/nowhere", &json!({}), 404);
    ck.post(s, "/v2/faces/search/bad.name", &json!({}), 400);
    ck.post(s, &format!("/v2/{g}/search"), &json!({"limit": 1}), 200);
    ck.post(s, &format!("/v2/{g}/search"), &json!({"limit": -1}), 400);
    ck.post(s, "/v2/nowhere/search", &json!({}), 404);

    ck.get(s, &format!("/v2/galleries/get/{g}"), 200);
    ck.post_empty(s, &format!("/v2/galleries/get/{g}"), 200);
    ck.get(s, "/v2/galleries/get/nowhere", 404);
    ck.post_empty(s, "/v2/galleries/get/nowhere", 404);
    ck.get(s, "/v2/galleries/get/bad.name", 400);
    ck.post_empty(s, "/v2/galleries/get/bad.name", 400);
    ck.get(s, "/v2/galleries/list", 200);
    ck.post_empty(s, "/v2/galleries/list", 200);
    ck.get(s, "/stat/list/1/2", 200);
    ck.get(s, "/stat/list/3/2", 200);
    ck.get(s, "/stat/list/0/2", 400);
    ck.get(s, "/stat/list/1/x", 400);

    let delete = format!("/v2/faces/delete/{g}");
    ck.post(s, &delete, &json!([3, 3]), 200);
    ck.post(s, &delete, &json!([3]), 404);
    ck.post(s, &delete, &json!({"id": 1}), 400);
    ck.post(s, "/v2/faces/delete/nowhere", &json!([1]), 404);
    ck.post_empty(s, &format!("/v2/galleries/delete/{g}_alias"), 204);
    ck.post_empty(s, &format!("/v2/galleries/delete/{g}_alias"), 404);
    ck.post_empty(s, "/v2/galleries/delete/bad.name", 400);

    if let Some(big) = big {
        for path in [
            format!("/v2/galleries/add/{g}_big"),
            format!("/v2/galleries/{g}_big"),
            add,
            update,
            search,
            format!("/v2/{g}/search"),
            delete,
        ] {
            ck.post_text(s, &path, big, 413);
        }
    }
}

/// `facedb serve` on the default schema and one local shard.
fn serve_default(doc: &Doc) -> Checker<'_> {
    let mut ck = Checker::new(doc, "serve, default schema");
    let s = &serve_default_schema(&["--shards", "1", "--max-body-bytes", "8192"]);
    let meta = json!({"m:camera": 7, "m:matched_lists": [5, 3, 5], "m:f_gender_class": "female", "feat": null});
    galleries_and_faces(&mut ck, s, "people", &meta, Some(&large_body(8192)));
    ck.get(s, "/v2/admin/status", 200);
    ck.post_empty(s, "/v2/admin/status", 200);
    ck.post_empty(s, "/v2/admin/snapshot", 200);
    ck.post_empty(s, "/v2/admin/snapshot", 200);
    ck.get(s, "/v2/admin/status", 200);
    ck.get(s, "/v2/admin/cluster", 404);
    ck.post(s, "/v2/admin/cluster", &json!({"id": "c", "shard": 0, "shards": 1}), 404);
    ck.post_bytes_as(s, "/v2/detect", b"\xff\xd8\xff", "image/jpeg", 503);
    ck.get(s, &format!("/uploads/{}.png", "0".repeat(64)), 404);
    ck.get(s, "/uploads/..%2Fdata", 404);
    ck.get(s, "/v2/no/such/path", 404);
    ck.post_empty(s, "/v2/galleries", 404);
    // A Content-Length past every endpoint's limit is refused before the request is routed.
    for item in &doc.paths {
        let path = sample_path(&item.template);
        for method in item.operations.keys() {
            let r = s.raw_request_claiming(&format!("{method} {path} HTTP/1.1"), 1 << 30, b"");
            ck.check(method, &path, None, &r, 413);
            let param = if item.template == "/v2/detect" { "image" } else { "body" };
            if r.json()["error"]["param"] != json!(param) {
                ck.fail(format!("{method} {path} with a 1 GiB body: {} (param {param} expected)", r.body));
            }
        }
    }
    // max_body_bytes holds on every galleries path, also one that reads no body.
    ck.call(s, "GET", "/v2/galleries/list", Some(large_body(8192).as_bytes()), None, 413);
    // Every method a path does not document: 405 with its Allow.
    for item in doc.paths.iter().filter(|p| p.template != "/v2/admin/cluster") {
        let path = sample_path(&item.template);
        for method in METHODS.iter().filter(|m| !item.operations.contains_key(**m)) {
            ck.call(s, method, &path, None, None, 405);
        }
    }
    ck
}

/// `facedb serve --shards 2` on the example schema, with a memory limit.
fn serve_two_shards(doc: &Doc) -> Checker<'_> {
    let mut ck = Checker::new(doc, "serve --shards 2");
    let s = &Server::start(&["--shards", "2", "--memory-limit", "200000"]);
    let meta = json!({"cam_id": "cam-A", "tags": ["b", "a", "b"], "lists": [], "person_id": 777});
    ck.post_empty(s, "/v2/galleries/add/demo", 200);
    let faces: Vec<Value> = (1..=6).map(|id| face_r(id, meta.clone())).collect();
    ck.post(s, "/v2/faces/add/demo", &json!(faces), 200);
    ck.post(s, "/v2/faces/search/demo", &json!({"filter": {"facen": {"data": rand_vec(1 ^ 0x5EED, DIM)}}}), 200);
    ck.post(s, "/v2/faces/search/demo?ignore_errors", &json!({"limit": 3}), 200);
    ck.get(s, "/v2/faces/get/demo/4", 200);
    ck.post(s, "/v2/faces/update/demo", &json!([{"id": 4, "meta": {"tags": []}}, {"id": 5}]), 200);
    ck.get(s, "/v2/admin/status", 200);
    ck.post_empty(s, "/v2/admin/snapshot", 200);
    // Every shard has a snapshot now.
    ck.get(s, "/v2/admin/status", 200);
    ck.post_empty(s, "/v2/admin/status", 200);
    ck.post_empty(s, "/v2/admin/snapshot", 200);
    let many: Vec<Value> = (100..1100).map(|id| face_r(id, json!({}))).collect();
    ck.post(s, "/v2/faces/add/demo", &json!(many), 507);
    ck
}

/// A router over two shards, the shards themselves, and a lone unclaimed shard.
fn cluster(doc: &Doc) -> Checker<'_> {
    let mut ck = Checker::new(doc, "router and shards");
    let mut cluster = Cluster::start(2);
    let lone = start_shard();
    let meta = json!({"person_name": "Mary", "lists": [9, 1]});
    galleries_and_faces(&mut ck, cluster.router(), "crowd", &meta, None);
    let r = cluster.router();
    ck.get(r, "/v2/admin/status", 200);
    ck.post_empty(r, "/v2/admin/snapshot", 200);
    ck.get(r, "/v2/admin/cluster", 404);

    // A shard of the cluster, talked to directly.
    let s0 = cluster.shard(0);
    let held = ck.get(s0, "/v2/admin/cluster", 200).json()["cluster"].clone();
    ck.post(s0, "/v2/admin/cluster", &held, 200);
    let other = json!({"id": "another", "shard": 0, "shards": 2});
    ck.post(s0, "/v2/admin/cluster", &other, 409);
    ck.post(s0, "/v2/admin/cluster", &json!({"id": "", "shard": 0, "shards": 2}), 400);
    ck.post(s0, "/v2/admin/cluster", &json!({"id": "x", "shard": 2, "shards": 2}), 400);
    ck.post(s0, "/v2/admin/cluster", &json!({"id": "a b", "shard": 0, "shards": 2}), 400);
    ck.post(s0, "/v2/admin/cluster", &json!([1]), 400);
    ck.call(s0, "PUT", "/v2/admin/cluster", None, None, 405);
    let header = |record: &Value| {
        format!("X-Facedb-Cluster: {}/{}/{}", record["id"].as_str().unwrap_or(""), record["shard"], record["shards"])
    };
    ck.with_headers(s0, "GET", "/v2/galleries/list", &header(&held), b"", 200);
    ck.with_headers(s0, "POST", "/v2/faces/search/crowd", &header(&held), b"{}", 200);
    ck.with_headers(s0, "GET", "/v2/admin/status", "X-Facedb-Cluster: c/x/2", b"", 400);
    // Every operation a shard checks the header of refuses another shard's record, and a
    // header that is not a record.
    let elsewhere = format!("X-Facedb-Cluster: {}/1/2", held["id"].as_str().unwrap_or(""));
    for item in doc
        .paths
        .iter()
        .filter(|p| !["/v2/admin/cluster", "/v2/detect", "/uploads/{name}"].contains(&p.template.as_str()))
    {
        let path = sample_path(&item.template).replace("people", "crowd");
        for method in item.operations.keys() {
            ck.with_headers(s0, method, &path, &elsewhere, b"{}", 421);
            ck.with_headers(s0, method, &path, "X-Facedb-Cluster: nonsense", b"{}", 400);
        }
        // A method the path does not take is refused as such, header or not.
        ck.with_headers(s0, "PUT", &path, &elsewhere, b"", 405);
    }
    ck.post_bytes_as(s0, "/v2/detect", b"\xff\xd8\xff", "image/jpeg", 503);
    ck.get(s0, &format!("/uploads/{}.png", "0".repeat(64)), 404);

    // A lone shard no router has claimed.
    ck.get(&lone, "/v2/admin/cluster", 200);
    ck.with_headers(&lone, "GET", "/v2/galleries/list", "X-Facedb-Cluster: lone/0/1", b"", 421);
    ck.post(&lone, "/v2/admin/cluster", &json!({"id": "lone", "shard": 0, "shards": 1}), 200);
    ck.get(&lone, "/v2/admin/cluster", 200);
    ck.with_headers(&lone, "GET", "/v2/galleries/list", "X-Facedb-Cluster: lone/0/1", b"", 200);

    // A router over one shard answers that shard's status, or its error.
    let mut single = Cluster::start(1);
    ck.get(single.router(), "/v2/admin/status", 200);
    single.kill_shard(0);
    ck.get(single.router(), "/v2/admin/status", 503);
    ck.post_empty(single.router(), "/v2/admin/status", 503);

    // Faces of shard 1, for batches that need it.
    let more: Vec<Value> = (10..30).map(|id| face_r(id, json!({}))).collect();
    ck.post(cluster.router(), "/v2/faces/add/crowd", &json!(more), 200);
    let on_shard_1: Vec<Value> = ck.post(cluster.shard(1), "/v2/faces/search/crowd", &json!({}), 200).json()["results"]
        .as_array()
        .map(|faces| faces.iter().map(|f| f["id"].clone()).collect())
        .unwrap_or_default();
    assert!(!on_shard_1.is_empty(), "shard 1 holds none of 20 faces");
    let (some, update) = (&on_shard_1[..1], json!([{"id": on_shard_1[0]}, {"id": 1}]));

    // Shard 1 restarted on an empty data dir: it refuses the router's calls (WRONG_SHARD), which
    // the router answers as a shard it cannot use; then shard 1 is killed outright.
    cluster.wipe_shard(1);
    for round in ["wrong shard", "killed"] {
        let r = cluster.router();
        ck.post(r, "/v2/faces/search/crowd", &json!({}), 503);
        ck.post(r, "/v2/faces/search/crowd?ignore_errors=on", &json!({}), 200);
        ck.post(r, "/v2/crowd/search", &json!({"ignore_errors": true, "limit": 1}), 200);
        ck.get(r, "/v2/admin/status", 200);
        ck.post_empty(r, "/v2/admin/snapshot", 503);
        ck.post_empty(r, &format!("/v2/galleries/add/{}", round.replace(' ', "_")), 503);
        ck.post_empty(r, "/v2/galleries/delete/crowd_tuned", 503);
        ck.post_empty(r, &format!("/v2/galleries/{}_alias", round.replace(' ', "_")), 503);
        ck.post(r, "/v2/crowd/search", &json!({}), 503);
        ck.get(r, "/v2/galleries/get/crowd", 503);
        ck.post_empty(r, "/v2/galleries/get/crowd", 503);
        ck.get(r, "/v2/galleries/list", 503);
        ck.post_empty(r, "/v2/galleries/list", 503);
        ck.get(r, "/stat/list/1/9", 503);
        let new: Vec<Value> = (50..70).map(|id| face_r(id, json!({}))).collect();
        ck.post(r, "/v2/faces/add/crowd", &json!(new), 503);
        ck.post(r, "/v2/faces/delete/crowd", &json!(some), 503);
        ck.post(r, "/v2/faces/update/crowd", &update, 503);
        ck.get(r, &format!("/v2/faces/get/crowd/{}", some[0]), 503);
        if round == "wrong shard" {
            cluster.kill_shard(1);
        }
    }
    ck
}

fn photo(name: &str) -> Vec<u8> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/images")).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run tools/setup.sh", path.display()))
}

/// Detection on the real models: `facedb serve` with them, and `facedb extract`.
fn detection(doc: &Doc) -> Checker<'_> {
    let mut ck = Checker::new(doc, "detection");
    let models = models_dir();
    let dir = TempDir::new("openapi-detect");
    let mut args = standard_args(&dir);
    let at = args.iter().position(|a| a == "--extract-workers").expect("standard args set the workers");
    args[at + 1] = "1".into();
    args.extend(["--models-dir".into(), models.clone(), "--allow-return-facen".into()]);
    let s = &Server::launch(&args, Some(dir), true).unwrap_or_else(|f| panic!("facedb serve did not start: {f:?}"));
    let extract_args: Vec<String> = [
        "extract",
        "--listen",
        "127.0.0.1:0",
        "--extract-workers",
        "1",
        "--body-image-length",
        "200000",
        "--models-dir",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([models])
    .collect();
    let x =
        &Server::launch(&extract_args, None, true).unwrap_or_else(|f| panic!("facedb extract did not start: {f:?}"));

    let obama = photo("obama.jpg");
    let found = ck.post_bytes_as(s, "/v2/detect?facen=true", &obama, "image/jpeg", 200).json();
    let detection = found["faces"][0]["id"].clone();
    ck.post_bytes_as(s, "/v2/detect?return_facen=true&detector=hog&upsample=0", &obama, "image/jpeg", 200);
    ck.post_bytes_as(s, "/v2/detect?gender=on", b"x", "image/jpeg", 501);
    ck.post_bytes_as(s, "/v2/detect?detector=mtcnn", b"x", "image/jpeg", 400);
    ck.post_bytes_as(s, "/v2/detect", b"GIF89a\x01\x00\x01\x00", "image/gif", 400);
    ck.post(s, "/v2/detect", &json!({"url": 5}), 400);
    ck.post(s, "/v2/detect", &json!({"url": "http://127.0.0.1:1/a.jpg"}), 400);
    ck.post_empty(s, "/v2/galleries/add/seen", 200);
    ck.post(s, "/v2/faces/add/seen", &json!([{"id": 1, "detection": detection, "meta": {"cam_id": "door"}}]), 200);
    ck.post(s, "/v2/faces/add/seen", &json!([{"id": 2, "detection": "nope"}]), 404);
    ck.post(s, "/v2/faces/search/seen", &json!({"filter": {"facen": {"detection": detection}}}), 200);
    let face = ck.get(s, "/v2/faces/get/seen/1", 200).json();
    let chip = face["meta"]["normalized_id"].as_str().unwrap_or_default().to_owned();
    // Over a raw connection: the harness reads bodies as text, and a PNG is not.
    ck.with_headers(s, "GET", &format!("/uploads/{chip}"), "", b"", 200);
    ck.get(s, &format!("/uploads/{}.png", "0".repeat(64)), 404);
    ck.get(s, "/uploads/not-an-image", 404);

    ck.post_bytes_as(x, "/v2/detect", &photo("obama2.jpg"), "image/jpeg", 200);
    ck.post_bytes_as(x, "/v2/detect?return_facen=on", b"x", "image/jpeg", 403);
    let r = x.raw_request("POST /v2/detect HTTP/1.1\r\nContent-Type: image/jpeg", &obama);
    ck.check("POST", "/v2/detect", None, &r, 413);
    ck.get(x, &format!("/uploads/{}.png", "0".repeat(64)), 404);
    ck.post(x, "/v2/faces/search/seen", &json!({}), 404);
    ck
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn every_answer_of_every_endpoint_is_as_the_document_says() {
    let started = Instant::now();
    let doc = Doc::load();
    let scenarios: [fn(&Doc) -> Checker<'_>; 4] = [serve_default, serve_two_shards, cluster, detection];
    let mut all = Checker::new(&doc, "all");
    std::thread::scope(|scope| {
        let handles: Vec<_> = scenarios.iter().map(|scenario| scope.spawn(|| scenario(&doc))).collect();
        for handle in handles {
            match handle.join() {
                Ok(checker) => all.merge(checker),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    let mut by_operation: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for (template, method, status) in &all.seen {
        by_operation.entry(format!("{method} {template}")).or_default().insert(*status);
    }
    println!("{} answers checked in {:.1?}; statuses seen per operation:", all.answers, started.elapsed());
    for item in &doc.paths {
        for (method, pointer) in &item.operations {
            let operation = format!("{method} {}", item.template);
            let seen = by_operation.get(&operation).cloned().unwrap_or_default();
            let documented = doc.root.pointer(&format!("{pointer}/responses")).and_then(Value::as_object);
            let unseen: Vec<&String> = documented
                .into_iter()
                .flat_map(|r| r.keys())
                .filter(|s| s.parse().map_or(true, |s| !seen.contains(&s)))
                .collect();
            println!("  {operation}: {seen:?} (documented, not provoked: {unseen:?})");
        }
    }
    println!("405 with Allow checked on: {:?}", all.refused_methods);
    for missing in all.never_called() {
        all.failures.push(format!("{missing}: never called"));
    }
    assert!(all.failures.is_empty(), "{} mismatches with {DOCUMENT}:\n{}", all.failures.len(), all.failures.join("\n"));
}

/// The checker itself, on answers made up to break each rule: it must refuse every one.
#[test]
fn the_checker_refuses_answers_the_document_does_not_describe() {
    let doc = Doc::load();
    let answer = |status: u16, headers: &[(&str, &str)], body: &str| Resp {
        status,
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        body: body.to_owned(),
    };
    let json = [("content-type", "application/json")];
    let search = [("content-type", "application/json"), ("x-search-stat", "without_index")];
    let cases: Vec<(&str, &str, Resp)> = vec![
        ("GET", "/v2/galleries/get/g", answer(200, &json, r#"{"faces": 1, "extra": 2}"#)),
        ("GET", "/v2/galleries/get/g", answer(200, &json, r#"{"faces": -1}"#)),
        (
            "GET",
            "/v2/galleries/get/g",
            answer(418, &json, r#"{"error": {"code": 418, "kind": "CONFLICT", "message": "m"}}"#),
        ),
        (
            "GET",
            "/v2/galleries/get/g",
            answer(404, &json, r#"{"error": {"code": 400, "kind": "NOT_FOUND", "message": "m"}}"#),
        ),
        (
            "GET",
            "/v2/galleries/get/g",
            answer(404, &json, r#"{"error": {"code": 404, "kind": "LOST", "message": "m"}}"#),
        ),
        ("GET", "/v2/galleries/get/g", answer(200, &[("content-type", "text/plain")], r#"{"faces": 1}"#)),
        ("POST", "/v2/faces/add/g", answer(200, &json, r#"{"added": 1}"#)),
        ("POST", "/v2/faces/search/g", answer(200, &json, r#"{"results": []}"#)),
        (
            "POST",
            "/v2/faces/search/g",
            answer(200, &[("content-type", "application/json"), ("x-search-stat", "guess")], r#"{"results": []}"#),
        ),
        (
            "POST",
            "/v2/faces/search/g",
            answer(200, &search, r#"{"results": [{"id": 1, "facen": "AAAA", "meta": {"s": [1, 1]}}]}"#),
        ),
        ("POST", "/v2/faces/update/g", answer(200, &json, r#"{"id": 1, "facen": "AAAA", "meta": {}, "score": 1}"#)),
        ("GET", "/v2/admin/status", answer(200, &json, r#"{"faces": 0, "shards": []}"#)),
        (
            "GET",
            "/v2/admin/cluster",
            answer(
                200,
                &json,
                r#"{"cluster": {"id": "c"}, "facen_size": 128, "max_search_limit": 1, "schema": "", "faces": 0}"#,
            ),
        ),
        (
            "PUT",
            "/v2/galleries/list",
            answer(
                405,
                &[("content-type", "application/json"), ("allow", "GET")],
                r#"{"error": {"code": 405, "kind": "MALFORMED_REQUEST", "message": "m"}}"#,
            ),
        ),
        ("GET", "/v2/nowhere", answer(200, &json, r#"{}"#)),
    ];
    for (method, path, r) in cases {
        let mut ck = Checker::new(&doc, "made up");
        ck.check(method, path, None, &r, r.status);
        assert!(!ck.failures.is_empty(), "{method} {path} {} {} passed", r.status, r.body);
    }
    // A request the server took but the document refuses.
    let mut ck = Checker::new(&doc, "made up");
    let r = answer(200, &[], "");
    ck.check("POST", "/v2/faces/add/g", Some(br#"[{"id": -1, "facen": "AAAA"}]"#), &r, 200);
    assert!(!ck.failures.is_empty(), "a refused request passed");
    // And a valid answer passes, while the operations never called are named.
    let mut ck = Checker::new(&doc, "made up");
    ck.check("GET", "/v2/galleries/get/g", None, &answer(200, &json, r#"{"faces": 3}"#), 200);
    assert_eq!(ck.failures, Vec::<String>::new());
    let never = ck.never_called();
    assert!(
        never.contains(&"GET /v2/galleries/list".to_owned())
            && !never.contains(&"GET /v2/galleries/get/{name}".to_owned()),
        "{never:?}"
    );
}
