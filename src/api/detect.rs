//! The detection endpoints (`POST /v2/detect`, `GET /uploads/{name}`), and the references to
//! detections and stored faces that `faces/add` and `faces/search` accept in place of a facen.
//!
//! References are resolved by rewriting the request body into the plain form (a base64 facen)
//! before the usual parser reads it, so the galleries API keeps one parser, and a router that
//! forwards to shards can resolve the same way.
//!
//! Detection runs in this process ([`Extractor`]), or in another one (`facedb extract`, named
//! by a router's `extraction-api`): then photos are forwarded there with `return_facen`, and
//! the facens that come back are kept in this process's own detection cache, under ids of its
//! own, exactly as a local detection would be ([`RemoteExtraction`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value as Json};

use crate::error::{Error, ErrorKind, Result};
use crate::extract::cache::{CachedFace, DetectionCache};
use crate::extract::dlib::Rect;
use crate::extract::uploads::Uploads;
use crate::extract::{DetectOptions, Detection, Detector, Extractor};
use crate::facen;
use crate::schema::Schema;

/// The front-end's parts as the API sees them.
pub struct FrontEnd {
    /// `None` when the models could not be loaded: `reason` says why.
    pub extractor: Option<Arc<Extractor>>,
    pub reason: String,
    /// Where normalized face images go (`None`: not kept, as in `facedb extract`).
    pub uploads: Option<Uploads>,
    /// Detection by another process instead of `extractor`.
    pub remote: Option<RemoteExtraction>,
    /// The setting that allows `return_facen`, as the 403 refusing it names it: a flag of
    /// `serve` and `extract`, a key of a router's config.
    pub return_facen_setting: &'static str,
}

/// Detection by a `facedb extract` elsewhere (a router's `extraction-api`).
pub struct RemoteExtraction {
    pub client: reqwest::Client,
    /// The service's base URL (`http://host:18666/`).
    pub url: url::Url,
    /// The detections (with their facens) found through it.
    pub cache: DetectionCache,
    pub allow_return_facen: bool,
    pub body_image_length: usize,
}

impl FrontEnd {
    /// A front-end without detection; `reason` says why.
    pub fn without_detection(reason: impl Into<String>, uploads: Option<Uploads>) -> FrontEnd {
        FrontEnd {
            extractor: None,
            reason: reason.into(),
            uploads,
            remote: None,
            return_facen_setting: "--allow-return-facen",
        }
    }

    fn extractor(&self) -> Result<&Arc<Extractor>> {
        self.extractor.as_ref().ok_or_else(|| {
            Error::new(503, ErrorKind::ExtractionError, format!("face detection is not available: {}", self.reason))
        })
    }

    /// A detection of this process's cache (local or remote detection).
    fn cached(&self, id: &str) -> Option<CachedFace> {
        match (&self.remote, &self.extractor) {
            (Some(remote), _) => remote.cache.get(id),
            (None, Some(extractor)) => extractor.detection(id),
            (None, None) => None,
        }
    }
}

/// The detection routes over a front-end.
pub fn routes(front: Arc<FrontEnd>) -> Router {
    let limit = body_limit(&front);
    Router::new()
        .route("/v2/detect", post(detect))
        .route("/uploads/{name}", get(upload))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(front)
}

/// The largest detect body: multipart framing around the largest photo accepted.
pub(crate) fn body_limit(front: &FrontEnd) -> usize {
    photo_limit(front) + (64 << 10)
}

/// The refusal of a photo over the limit.
pub(crate) fn photo_too_large(front: &FrontEnd) -> Error {
    too_large(photo_limit(front))
}

fn photo_limit(front: &FrontEnd) -> usize {
    match (&front.remote, &front.extractor) {
        (Some(remote), _) => remote.body_image_length,
        (None, Some(extractor)) => extractor.config().body_image_length,
        (None, None) => 32 << 20,
    }
}

/// Reads `true`/`on`/`1`/empty and `false`/`off`/`0`, as the original's query flags.
fn flag(name: &str, value: &str) -> Result<bool> {
    match value {
        "" | "true" | "on" | "1" | "yes" => Ok(true),
        "false" | "off" | "0" | "no" => Ok(false),
        _ => Err(Error::bad_param(name, format!("{name} must be true or false (on or off)")).with_value(value)),
    }
}

/// The query string of `/v2/detect`.
/// `allow_return_facen` is off unless `setting` turns it on.
fn detect_options(query: Option<&str>, allow_return_facen: bool, setting: &str) -> Result<(DetectOptions, bool)> {
    let mut detector = Detector::Hog;
    let mut upsample = None;
    let (mut facen, mut return_facen, mut autorotate) = (false, false, false);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "facen" => facen = flag(&key, &value)?,
            "return_facen" => return_facen = flag(&key, &value)?,
            "autorotate" => autorotate = flag(&key, &value)?,
            "gender" | "age" | "emotions" | "beard" | "glasses3" | "liveness" => {
                if flag(&key, &value)? {
                    return Err(Error::new(
                        501,
                        ErrorKind::NotImplemented,
                        format!("{key} needs a face attribute model; this server has none (only face detection and facens)"),
                    )
                    .with_param(key.as_ref()));
                }
            }
            "detector" => {
                detector = Detector::parse(&value).ok_or_else(|| {
                    Error::bad_param("detector", "detector must be hog, cnn (or nnd) or normalized").with_value(value.as_ref())
                })?
            }
            "upsample" => {
                let n = value.parse::<u32>().ok().filter(|n| *n <= 3).ok_or_else(|| {
                    Error::bad_param("upsample", "upsample must be 0, 1, 2 or 3 (each doubles the photo's sides)")
                        .with_value(value.as_ref())
                })?;
                upsample = Some(n);
            }
            other => {
                return Err(Error::bad_param(
                    other,
                    format!("unknown query parameter {other:?}; detect takes facen, return_facen, autorotate, detector, upsample"),
                ))
            }
        }
    }
    if return_facen && !allow_return_facen {
        return Err(Error::new(
            403,
            ErrorKind::BadParam,
            format!("return_facen is turned off on this server ({setting} allows it)"),
        )
        .with_param("return_facen"));
    }
    let upsample = upsample.unwrap_or(detector.default_upsample());
    Ok((DetectOptions { detector, upsample, facen: facen || return_facen, autorotate }, return_facen))
}

fn too_large(limit: usize) -> Error {
    Error::new(413, ErrorKind::BadParam, format!("the photo is larger than {limit} bytes (body_image_length)"))
        .with_param("image")
}

/// The photo of a detect request: the raw body, the multipart field `photo`, or fetched from
/// the `url` of a JSON body `{"url": "..."}`.
async fn photo_bytes(request: Request, extractor: &Extractor) -> Result<Vec<u8>> {
    let limit = extractor.config().body_image_length;
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
    if multipart {
        let mut form = Multipart::from_request(request, &())
            .await
            .map_err(|e| Error::malformed(format!("cannot read the multipart body: {e}")))?;
        loop {
            let field = form.next_field().await.map_err(|e| multipart_error(&e, limit))?;
            let Some(field) = field else {
                return Err(Error::bad_param("photo", "the multipart body has no field named photo"));
            };
            if field.name() == Some("photo") {
                let bytes = field.bytes().await.map_err(|e| multipart_error(&e, limit))?;
                if bytes.len() > limit {
                    return Err(too_large(limit));
                }
                return Ok(bytes.to_vec());
            }
        }
    }
    let body = axum::body::to_bytes(request.into_body(), limit + 1).await.map_err(|_| too_large(limit))?;
    if body.len() > limit {
        return Err(too_large(limit));
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(Error::bad_param(
            "image",
            "no photo: send it as the body, as a multipart field photo, or as JSON {\"url\": \"...\"}",
        )),
        Some(b'{') => {
            let json: Json = serde_json::from_slice(&body)
                .map_err(|e| Error::malformed(format!("the request body is not valid JSON: {e}")))?;
            let object =
                json.as_object().ok_or_else(|| Error::malformed("the JSON body must be {\"url\": \"...\"}"))?;
            if let Some(key) = object.keys().find(|k| k.as_str() != "url") {
                return Err(Error::bad_param(
                    key.as_str(),
                    format!("unknown key {key:?}; the JSON body is {{\"url\": \"...\"}}"),
                ));
            }
            let url = object
                .get("url")
                .and_then(Json::as_str)
                .ok_or_else(|| Error::bad_param("url", "url must be a string"))?;
            extractor.fetch(url).await
        }
        Some(_) => Ok(body.to_vec()),
    }
}

fn multipart_error(e: &axum::extract::multipart::MultipartError, limit: usize) -> Error {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limit)
    } else {
        Error::malformed(format!("cannot read the multipart body: {e}"))
    }
}

/// `POST /v2/detect` through another process: the request goes on as it came (asking for the
/// facens when the client wants them, to keep them here); the answer's faces are cached here
/// under ids of this process, and lose their facens unless the client asked for them.
async fn forward(
    front: &FrontEnd,
    remote: &RemoteExtraction,
    query: Option<&str>,
    request: Request<Body>,
) -> Result<Response> {
    let (options, return_facen) = detect_options(query, remote.allow_return_facen, front.return_facen_setting)?;
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    let limit = remote.body_image_length + (64 << 10);
    let body =
        axum::body::to_bytes(request.into_body(), limit).await.map_err(|_| too_large(remote.body_image_length))?;
    let mut url = remote.url.join("v2/detect").map_err(|e| Error::internal(format!("extraction-api: {e}")))?;
    {
        let mut pairs = url.query_pairs_mut();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if key != "return_facen" && key != "facen" {
                pairs.append_pair(&key, &value);
            }
        }
        if options.facen {
            pairs.append_pair("return_facen", "true");
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let service = remote.url.as_str();
    let unavailable = |e: &dyn std::fmt::Display| {
        Error::new(503, ErrorKind::ExtractionError, format!("the extraction service {service} failed: {e}"))
            .with_param("extraction-api")
            .with_value(service)
    };
    let mut request = remote.client.post(url).body(body);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let response = request.send().await.map_err(|e| unavailable(&e))?;
    let status = response.status();
    let timing = response.headers().get("server-timing").cloned();
    let bytes = response.bytes().await.map_err(|e| unavailable(&e))?;
    if status == StatusCode::FORBIDDEN && options.facen {
        return Err(unavailable(
            &"it refuses return_facen, which the router needs to keep the facens of detections: \
             start it with --allow-return-facen",
        ));
    }
    if !status.is_success() {
        // The service's own answer (a bad photo, 413, OVER_CAPACITY): the client's to see.
        return Ok((status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response());
    }
    let mut answer: Json = serde_json::from_slice(&bytes).map_err(|e| unavailable(&format!("not JSON ({e})")))?;
    for face in answer.get_mut("faces").and_then(Json::as_array_mut).into_iter().flatten() {
        let facen = match face.get("facen").and_then(Json::as_str) {
            Some(text) => Some(Arc::new(facen::decode_any(text).map_err(|e| unavailable(&e))?)),
            None => None,
        };
        let number = |key: &str| face["bbox"][key].as_i64().unwrap_or(0);
        let bbox = Rect { left: number("left"), top: number("top"), right: number("right"), bottom: number("bottom") };
        let score = face["detection_score"].as_f64().unwrap_or(0.0);
        let id = remote.cache.insert(CachedFace { bbox, score, facen, chip_png: None });
        face["id"] = Json::from(id);
        if !return_facen {
            if let Some(object) = face.as_object_mut() {
                object.remove("facen");
            }
        }
    }
    let mut response = axum::Json(answer).into_response();
    if let Some(timing) = timing {
        response.headers_mut().insert("server-timing", timing);
    }
    Ok(response)
}

/// `POST /v2/detect`.
async fn detect(State(front): State<Arc<FrontEnd>>, uri: Uri, request: Request<Body>) -> Result<Response> {
    if let Some(remote) = &front.remote {
        return forward(&front, remote, uri.query(), request).await;
    }
    let extractor = front.extractor()?;
    let (options, return_facen) =
        detect_options(uri.query(), extractor.config().allow_return_facen, front.return_facen_setting)?;
    let bytes = photo_bytes(request, extractor).await?;
    let detection = extractor.detect(bytes, options).await?;
    let mut response = axum::Json(detection_json(&detection, return_facen)).into_response();
    let t = detection.timings;
    let timing = format!(
        "queue;dur={:.2}, decode;dur={:.2}, detect;dur={:.2}, landmarks;dur={:.2}, chip;dur={:.2}, descriptor;dur={:.2}, total;dur={:.2}",
        t.queue, t.decode, t.detect, t.landmarks, t.chip, t.descriptor, t.total
    );
    if let Ok(value) = HeaderValue::from_str(&timing) {
        response.headers_mut().insert("server-timing", value);
    }
    Ok(response)
}

fn detection_json(detection: &Detection, return_facen: bool) -> Json {
    let faces: Vec<Json> = detection
        .faces
        .iter()
        .map(|face| {
            let mut object = json!({
                "id": face.id,
                "bbox": {"left": face.bbox.left, "top": face.bbox.top, "right": face.bbox.right, "bottom": face.bbox.bottom},
                "detection_score": face.score,
            });
            if let (true, Some(facen)) = (return_facen, &face.facen) {
                object["facen"] = Json::from(facen::encode(facen));
            }
            object
        })
        .collect();
    json!({ "orientation": detection.orientation, "faces": faces })
}

/// `GET /uploads/{name}`: a normalized face image.
async fn upload(State(front): State<Arc<FrontEnd>>, Path(name): Path<String>) -> Result<Response> {
    let uploads = front.uploads.clone().ok_or_else(|| {
        Error::new(404, ErrorKind::NotFound, "this server keeps no normalized face images").with_param("name")
    })?;
    let bytes = super::blocking(move || uploads.read(&name)).await?;
    Ok(([(header::CONTENT_TYPE, "image/png")], bytes).into_response())
}

/// A cached detection with a facen of the server's size.
struct DetectionSample {
    facen: Arc<Vec<f32>>,
    chip_png: Option<Arc<Vec<u8>>>,
}

/// The facen of a cached detection, checked against the server's facen size.
fn detection_facen(front: &FrontEnd, id: &Json, param: &str, dim: usize) -> Result<DetectionSample> {
    let id = id.as_str().ok_or_else(|| {
        Error::bad_param(param, format!("{param} must be the string id a detection returned")).with_value(id.clone())
    })?;
    let face = front.cached(id).ok_or_else(|| {
        let why = match (&front.remote, &front.extractor) {
            (None, None) => format!("face detection is not available: {}", front.reason),
            _ => "unknown, or expired from the detection cache".to_owned(),
        };
        Error::new(404, ErrorKind::NotFound, format!("no detection {id:?}: {why}")).with_param(param).with_value(id)
    })?;
    let facen = face.facen.ok_or_else(|| {
        Error::bad_param(param, format!("detection {id:?} has no facen: call /v2/detect with facen=true"))
            .with_value(id)
    })?;
    if facen.len() != dim {
        return Err(Error::bad_param(
            param,
            format!("detection {id:?} has a {}-d facen but this server's facen_size is {dim}", facen.len()),
        )
        .with_value(id));
    }
    Ok(DetectionSample { facen, chip_png: face.chip_png })
}

/// `faces/add` with `{"id", "detection": "<id>", "meta"}` items: each becomes a face with the
/// detection's facen, its chip stored and named in `meta.normalized_id` when the schema has
/// that field and the request does not set it.
pub fn resolve_add(body: Json, front: &FrontEnd, schema: &Schema, dim: usize) -> Result<Json> {
    let Json::Array(items) = body else { return Ok(body) };
    let keeps_chips = schema.position("normalized_id").is_some();
    let mut resolved = Vec::with_capacity(items.len());
    for mut item in items {
        if let Some(object) = item.as_object_mut() {
            if let Some(reference) = object.remove("detection") {
                let id = object.get("id").cloned().unwrap_or(Json::Null);
                if object.contains_key("facen") {
                    return Err(Error::bad_param(
                        "detection",
                        format!("face {id}: give a facen or a detection, not both"),
                    )
                    .with_value(id));
                }
                let sample = detection_facen(front, &reference, "detection", dim)?;
                object.insert("facen".into(), Json::from(facen::encode(&sample.facen)));
                if let (true, Some(chip), Some(uploads)) = (keeps_chips, sample.chip_png, &front.uploads) {
                    let meta = object.entry("meta").or_insert_with(|| Json::Object(Map::new()));
                    if let Some(meta) = meta.as_object_mut() {
                        if meta.get("normalized_id").is_none_or(|v| v.is_null() || v == "") {
                            meta.insert("normalized_id".into(), Json::from(uploads.store(&chip)?));
                        }
                    }
                }
            }
        }
        resolved.push(item);
    }
    Ok(Json::Array(resolved))
}

/// A search whose `filter.facen` is `{"detection": "<id>", "score"}` or
/// `{"face": {"gallery", "id"}, "score"}`: the sample becomes that facen. `stored` looks a
/// stored face's facen up (its errors `GALLERY_NOT_FOUND` and `NOT_FOUND` are reported as
/// `SOURCE_GALLERY` and `SOURCE_NOT_FOUND`).
pub fn resolve_search(
    mut body: Json,
    front: &FrontEnd,
    dim: usize,
    stored: impl FnOnce(&str, u64) -> Result<Vec<f32>>,
) -> Result<Json> {
    let Some(sample) = body.get_mut("filter").and_then(|f| f.get_mut("facen")).and_then(Json::as_object_mut) else {
        return Ok(body);
    };
    let given = ["data", "detection", "face"].iter().filter(|k| sample.contains_key(**k)).count();
    if given > 1 {
        return Err(Error::bad_param("filter.facen", "filter.facen takes one of data, detection or face"));
    }
    let vector = if let Some(reference) = sample.remove("detection") {
        detection_facen(front, &reference, "filter.facen.detection", dim)?.facen.to_vec()
    } else if let Some(reference) = sample.remove("face") {
        stored_facen(&reference, stored)?
    } else {
        return Ok(body);
    };
    sample.insert("data".into(), Json::from(facen::encode(&vector)));
    Ok(body)
}

const FACE_PARAM: &str = "filter.facen.face";

/// The `{"gallery", "id"}` of a search by stored face, when it is one and well formed (a
/// router fetches that face from its shard before resolving).
pub fn face_reference(body: &Json) -> Option<(String, u64)> {
    let reference = body.get("filter")?.get("facen")?.get("face")?;
    Some((reference.get("gallery")?.as_str()?.to_owned(), reference.get("id")?.as_u64()?))
}

/// The facen of a stored face named `{"gallery": "g", "id": 5}`.
fn stored_facen(reference: &Json, stored: impl FnOnce(&str, u64) -> Result<Vec<f32>>) -> Result<Vec<f32>> {
    let bad = || {
        Error::bad_param(FACE_PARAM, "filter.facen.face must be {\"gallery\": name, \"id\": face id}")
            .with_value(reference.clone())
    };
    let gallery = reference.get("gallery").and_then(Json::as_str).ok_or_else(bad)?;
    let id = reference.get("id").and_then(Json::as_u64).ok_or_else(bad)?;
    match stored(gallery, id) {
        Ok(vector) => Ok(vector),
        Err(e) if e.kind == ErrorKind::GalleryNotFound => {
            Err(Error::new(404, ErrorKind::SourceGallery, format!("the sample's gallery {gallery:?} does not exist"))
                .with_param(FACE_PARAM)
                .with_value(reference.clone()))
        }
        Err(e) if e.kind == ErrorKind::NotFound => Err(Error::new(
            404,
            ErrorKind::SourceNotFound,
            format!("the sample face {id} is not in gallery {gallery:?}"),
        )
        .with_param(FACE_PARAM)
        .with_value(reference.clone())),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_flags_take_true_and_on() {
        let (options, ret) =
            detect_options(Some("facen=on&autorotate=true&detector=cnn&upsample=2"), false, "--allow-return-facen")
                .unwrap();
        assert_eq!(options, DetectOptions { detector: Detector::Cnn, upsample: 2, facen: true, autorotate: true });
        assert!(!ret);
        let (options, _) = detect_options(None, false, "--allow-return-facen").unwrap();
        assert_eq!(options, DetectOptions { detector: Detector::Hog, upsample: 1, facen: false, autorotate: false });
        let (options, ret) = detect_options(Some("return_facen=true"), true, "--allow-return-facen").unwrap();
        assert!(options.facen && ret);
    }

    #[test]
    fn bad_flags_are_named() {
        let err = detect_options(Some("return_facen=on"), false, "--allow-return-facen").unwrap_err();
        assert_eq!((err.code, err.param.as_deref()), (403, Some("return_facen")));
        assert!(err.message.contains("--allow-return-facen"));
        let err = detect_options(Some("gender=on"), false, "--allow-return-facen").unwrap_err();
        assert_eq!((err.code, err.kind), (501, ErrorKind::NotImplemented));
        assert!(detect_options(Some("age=off"), false, "--allow-return-facen").is_ok());
        let err = detect_options(Some("upsample=9"), false, "--allow-return-facen").unwrap_err();
        assert_eq!(err.param.as_deref(), Some("upsample"));
        let err = detect_options(Some("detector=mtcnn"), false, "--allow-return-facen").unwrap_err();
        assert_eq!(err.param.as_deref(), Some("detector"));
        let err = detect_options(Some("facen=maybe"), false, "--allow-return-facen").unwrap_err();
        assert_eq!(err.param.as_deref(), Some("facen"));
        let err = detect_options(Some("colour=on"), false, "--allow-return-facen").unwrap_err();
        assert_eq!(err.param.as_deref(), Some("colour"));
    }
}
