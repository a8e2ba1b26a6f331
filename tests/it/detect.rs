//! Face detection and extraction on the real dlib models and the real test photos (fetched by
//! `tools/setup.sh` into `models/` and `tests/images/`): same person or not by the documented
//! threshold, enrolling and searching by detection among 10,000 other facens, photo formats and
//! orientations, every limit, and the deny-list on URLs and redirects.

use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use facedb::extract::SAME_PERSON_SCORE;
use image::{ImageFormat, RgbImage};
use serde_json::{json, Value};

use crate::common::*;

/// A test photo from the PyPI package face_recognition 1.3.0.
fn photo(name: &str) -> Vec<u8> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/images")).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run tools/setup.sh", path.display()))
}

fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), format).expect("encode");
    bytes
}

/// A photo without a face: smooth colour gradients with some texture.
fn face_free_photo() -> Vec<u8> {
    let image = RgbImage::from_fn(640, 480, |x, y| {
        let texture = ((x * 7919 + y * 104_729) % 23) as u8;
        image::Rgb([(x / 3) as u8 ^ texture, (y / 2) as u8, ((x + y) / 5) as u8])
    });
    encode(&image, ImageFormat::Png)
}

/// `facedb serve` with the models loaded (`workers` workers) and `extra` flags.
fn start(workers: usize, extra: &[&str]) -> Server {
    let dir = TempDir::new("detect");
    let mut args = standard_args(&dir);
    let at = args.iter().position(|a| a == "--extract-workers").expect("standard args set the workers");
    args[at + 1] = workers.to_string();
    args.extend(["--models-dir".to_string(), models_dir()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::launch(&args, Some(dir), true).unwrap_or_else(|f| panic!("facedb did not start: {f:?}"))
}

/// The shared detection server: facens may be returned; the default deny-list.
fn detector() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| start(2, &["--allow-return-facen"]))
}

fn detect(server: &Server, query: &str, body: &[u8]) -> Value {
    let r = server.post_bytes(&format!("/v2/detect{query}"), body, Some("image/jpeg"));
    assert_eq!(r.status, 200, "detect{query}: {}", r.body);
    r.json()
}

fn faces(response: &Value) -> Vec<Value> {
    response["faces"].as_array().unwrap_or_else(|| panic!("no faces array in {response}")).clone()
}

/// The one face of a photo, asserting there is exactly one.
fn one_face(server: &Server, query: &str, body: &[u8]) -> Value {
    let found = faces(&detect(server, query, body));
    assert_eq!(found.len(), 1, "detect{query}: {found:?}");
    found[0].clone()
}

fn bbox(face: &Value) -> [i64; 4] {
    let b = &face["bbox"];
    ["left", "top", "right", "bottom"].map(|k| b[k].as_i64().unwrap_or_else(|| panic!("bbox.{k} in {face}")))
}

fn iou(a: [i64; 4], b: [i64; 4]) -> f64 {
    let area = |r: [i64; 4]| ((r[2] - r[0] + 1).max(0) * (r[3] - r[1] + 1).max(0)) as f64;
    let inter = [a[0].max(b[0]), a[1].max(b[1]), a[2].min(b[2]), a[3].min(b[3])];
    let overlap = if inter[2] < inter[0] || inter[3] < inter[1] { 0.0 } else { area(inter) };
    overlap / (area(a) + area(b) - overlap)
}

fn euclidean(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>().sqrt()
}

fn facen_of(server: &Server, name: &str) -> Vec<f32> {
    let face = one_face(server, "?return_facen=true", &photo(name));
    decode_facen(face["facen"].as_str().unwrap_or_else(|| panic!("no facen in {face}")))
}

#[test]
fn obama_photos_are_one_person_and_biden_another() {
    let server = detector();
    let [obama, obama2, obama3, biden] =
        ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"].map(|n| facen_of(server, n));
    assert_eq!(obama.len(), 128);
    for (other, name) in [(&obama2, "obama2"), (&obama3, "obama3")] {
        let (d, s) = (euclidean(&obama, other), cosine(&obama, other));
        assert!(d < 0.6, "obama-{name}: dlib distance {d}");
        assert!(s >= f64::from(SAME_PERSON_SCORE), "obama-{name}: cosine {s}");
    }
    for other in [&obama, &obama2, &obama3] {
        let (d, s) = (euclidean(&biden, other), cosine(&biden, other));
        assert!(d > 0.6, "biden: dlib distance {d}");
        assert!(s < f64::from(SAME_PERSON_SCORE), "biden: cosine {s}");
    }
    // The same photo gives the same facen.
    assert_eq!(facen_of(server, "obama.jpg"), obama);
}

#[test]
fn a_photo_without_a_face_gives_no_faces() {
    let server = detector();
    for detector in ["hog", "cnn"] {
        let response = detect(server, &format!("?detector={detector}&facen=true"), &face_free_photo());
        assert_eq!(faces(&response), Vec::<Value>::new(), "{detector}");
        assert_eq!(response["orientation"], 1);
    }
}

#[test]
fn both_detectors_find_the_face_with_a_score() {
    let server = detector();
    let hog = one_face(server, "?detector=hog", &photo("obama.jpg"));
    let cnn = one_face(server, "?detector=cnn", &photo("obama.jpg"));
    assert!(iou(bbox(&hog), bbox(&cnn)) > 0.4, "hog {hog} cnn {cnn}");
    for face in [&hog, &cnn] {
        assert!(face["detection_score"].as_f64().is_some_and(|s| s > 0.0), "{face}");
        assert!(face["id"].as_str().is_some_and(|id| !id.is_empty()), "{face}");
        assert!(face.get("facen").is_none(), "a facen only with return_facen: {face}");
        let [l, t, r, b] = bbox(face);
        assert!(0 <= l && l < r && r < 910 && 0 <= t && t < b && b < 1137, "{face}");
    }
    // As a multipart field `photo`, the same face.
    let boundary = "facedb-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"obama.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend(photo("obama.jpg"));
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = server.post_bytes("/v2/detect", &body, Some(&format!("multipart/form-data; boundary={boundary}")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(bbox(&faces(&r.json())[0]), bbox(&hog));
    // The stages are timed in a Server-Timing header.
    assert!(r.header("server-timing").is_some_and(|t| t.contains("detect;dur=")), "{:?}", r.headers);
}

/// JPEG with an EXIF APP1 segment saying `orientation`, inserted after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend([0, 1]); // one IFD entry
    tiff.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1]); // Orientation, SHORT, count 1
    tiff.extend(orientation.to_be_bytes());
    tiff.extend([0, 0, 0, 0, 0, 0]); // padding, no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend([0xff, 0xe1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_applied_and_autorotate_finds_turned_faces() {
    let server = detector();
    let upright = image::load_from_memory(&photo("obama.jpg")).unwrap().to_rgb8();
    let (w, h) = (i64::from(upright.width()), i64::from(upright.height()));
    let expected = bbox(&one_face(server, "", &encode(&upright, ImageFormat::Jpeg)));
    // Stored turned a quarter left, with EXIF orientation 6 ("turn 90° right to display").
    let stored = image::imageops::rotate270(&upright);
    let response = detect(server, "", &with_exif_orientation(&encode(&stored, ImageFormat::Jpeg), 6));
    assert_eq!(response["orientation"], 6);
    let found = faces(&response);
    assert_eq!(found.len(), 1, "{response}");
    assert!(iou(bbox(&found[0]), expected) > 0.7, "{found:?} vs {expected:?}");
    // Upside down without EXIF: found only with autorotate, boxed in the photo as sent.
    let upside_down = encode(&image::imageops::rotate180(&upright), ImageFormat::Jpeg);
    assert_eq!(faces(&detect(server, "", &upside_down)), Vec::<Value>::new());
    let turned = one_face(server, "?autorotate=on", &upside_down);
    let mapped = [w - 1 - expected[2], h - 1 - expected[3], w - 1 - expected[0], h - 1 - expected[1]];
    assert!(iou(bbox(&turned), mapped) > 0.7, "{turned} vs {mapped:?}");
}

#[test]
fn normalized_chips_are_described_without_detection() {
    let server = detector();
    let g = server.new_gallery("chips");
    let face = one_face(server, "?facen=true", &photo("obama.jpg"));
    server.add_ok(&g, &json!([{"id": 1, "detection": face["id"]}]));
    let name = server.fetch(&g, 1)["meta"]["normalized_id"].as_str().expect("normalized_id is set").to_owned();
    assert_eq!(server.post_bytes(&format!("/uploads/{name}"), b"", None).status, 405);
    let png = get_png(server, &format!("/uploads/{name}"));
    let decoded = image::load_from_memory(&png).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (150, 150));
    let normalized = one_face(server, "?detector=normalized&return_facen=true", &png);
    assert_eq!(bbox(&normalized), [0, 0, 149, 149]);
    let again = decode_facen(normalized["facen"].as_str().unwrap());
    let original = facen_of(server, "obama.jpg");
    assert!(cosine(&again, &original) > 0.99, "{}", cosine(&again, &original));
    assert_error(&server.get("/uploads/../data"), 404, "NOT_FOUND", None, None);
}

/// GETs a PNG, asserting 200 and its content type.
fn get_png(server: &Server, path: &str) -> Vec<u8> {
    let url = format!("{}{path}", server.base_url());
    let mut response = ureq::get(&url).call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("image/png"));
    response.body_mut().with_config().limit(16 << 20).read_to_vec().expect("body")
}

/// A unit vector at cosine `c` from the unit vector `u`, in a random direction.
fn at_cosine(u: &[f32], c: f64, seed: u64) -> Vec<f32> {
    let noise = rand_vec(seed, u.len());
    let along: f64 = noise.iter().zip(u).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
    let orth: Vec<f64> = noise.iter().zip(u).map(|(a, b)| f64::from(*a) - along * f64::from(*b)).collect();
    let norm = orth.iter().map(|x| x * x).sum::<f64>().sqrt();
    let s = (1.0 - c * c).sqrt();
    u.iter().zip(&orth).map(|(a, o)| (c * f64::from(*a) + s * o / norm) as f32).collect()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

#[test]
fn enrolled_by_detection_found_by_detection_among_10000() {
    let server = detector();
    let g = server.new_gallery("enroll");
    let obama = unit(&facen_of(server, "obama.jpg"));
    // 9,800 random facens and 200 near-misses of obama, just under the threshold.
    let threshold = f64::from(SAME_PERSON_SCORE);
    for chunk in 0..10u64 {
        let batch: Vec<Value> = (0..1000u64)
            .map(|i| {
                let id = 1000 + chunk * 1000 + i;
                let v =
                    if i < 20 { at_cosine(&obama, threshold - 0.02 - 0.003 * i as f64, id) } else { rand_vec(id, 128) };
                face(id, &v, json!({}))
            })
            .collect();
        server.add_ok(&g, &Value::Array(batch));
    }
    let detection = |name: &str| one_face(server, "?facen=true", &photo(name))["id"].clone();
    server.add_ok(
        &g,
        &json!([
            {"id": 1, "detection": detection("obama.jpg"), "meta": {"person_name": "obama"}},
            {"id": 2, "detection": detection("biden.jpg"), "meta": {"person_name": "biden"}}
        ]),
    );
    assert_eq!(server.count(&g), 10_002);
    for probe in ["obama2.jpg", "obama3.jpg"] {
        let hits = server.search_ok(
            &g,
            &json!({"limit": 10_000, "filter": {"facen": {"detection": detection(probe), "score": [-1, 1]}}}),
        );
        assert_eq!(hits[0]["id"], 1, "{probe}: {:?}", &hits[..3]);
        let score = |id: u64| hits.iter().find(|h| h["id"] == id).and_then(|h| h["score"].as_f64()).unwrap();
        assert!(score(1) >= threshold, "{probe}: obama scores {}", score(1));
        assert!(score(2) < threshold, "{probe}: biden scores {}", score(2));
        // Above the threshold, obama alone.
        let matches = server
            .search_ids(&g, &json!({"filter": {"facen": {"detection": detection(probe), "score": [threshold, 1]}}}));
        assert_eq!(matches, vec![1], "{probe}");
    }
    // Faces like a stored face: obama's own facen finds obama first, at 1.
    let hits = server.search_ok(&g, &json!({"limit": 2, "filter": {"facen": {"face": {"gallery": g, "id": 1}}}}));
    assert_eq!(hits[0]["id"], 1);
    assert!(hits[0]["score"].as_f64().unwrap() > 0.9999);
    let r = server.search(&g, &json!({"filter": {"facen": {"face": {"gallery": g, "id": 77}}}}));
    assert_error(&r, 404, "SOURCE_NOT_FOUND", Some("filter.facen.face"), None);
    let r = server.search(&g, &json!({"filter": {"facen": {"face": {"gallery": "nope", "id": 1}}}}));
    assert_error(&r, 404, "SOURCE_GALLERY", Some("filter.facen.face"), None);
    let r = server.search(&g, &json!({"filter": {"facen": {"detection": "no-such-detection"}}}));
    assert_error(&r, 404, "NOT_FOUND", Some("filter.facen.detection"), None);
    // A detection made without facen=true cannot be enrolled, and nothing is added.
    let bare = one_face(server, "", &photo("obama2.jpg"));
    let r = server.add_faces(&g, &json!([{"id": 3, "detection": bare["id"]}]));
    assert_error(&r, 400, "BAD_PARAM", Some("detection"), None);
    assert!(error_message(&r).contains("facen=true"), "{}", r.body);
    assert_eq!(server.count(&g), 10_002);
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let server = detector();
    // Refused from the query alone (the photo is not read: a tiny body keeps the client from
    // writing into a closed connection).
    let r = server.post_bytes("/v2/detect?gender=on", b"x", None);
    assert_error(&r, 501, "NOT_IMPLEMENTED", Some("gender"), None);
    let r = server.post_bytes("/v2/detect?detector=mtcnn", b"x", None);
    assert_error(&r, 400, "BAD_PARAM", Some("detector"), None);
    let r = server.post_bytes("/v2/detect", b"GIF89a\x01\x00\x01\x00", None);
    assert_error(&r, 400, "BAD_PARAM", Some("image"), None);
    let truncated = &photo("obama.jpg")[..20_000];
    let r = server.post_bytes("/v2/detect", truncated, None);
    assert_error(&r, 400, "BAD_PARAM", Some("image"), None);
    assert!(error_message(&r).contains("corrupt"), "{}", r.body);
    let r = server.post_bytes("/v2/detect", b"", None);
    assert_error(&r, 400, "BAD_PARAM", Some("image"), None);
    let r = server.post_bytes("/v2/detect", b"{\"url\": 5}", None);
    assert_error(&r, 400, "BAD_PARAM", Some("url"), None);
    let r = server.post_bytes("/v2/detect", b"{\"url\": \"ftp://example.com/a.jpg\"}", None);
    assert_error(&r, 400, "BAD_PARAM", Some("url"), None);
    // Without --allow-return-facen, return_facen is forbidden.
    let plain = start(1, &[]);
    let r = plain.post_bytes("/v2/detect?return_facen=on", b"x", None);
    assert_error(&r, 403, "BAD_PARAM", Some("return_facen"), None);
    assert!(error_message(&r).contains("(--allow-return-facen allows it)"), "{}", r.body);
    // A refusal comes after the body is read: a client still sending a large photo gets the
    // answer, not a broken pipe.
    let large = vec![0xffu8; 4 << 20];
    for query in ["?return_facen=on", "?upsample=9"] {
        let r = plain.post_bytes(&format!("/v2/detect{query}"), &large, Some("image/jpeg"));
        assert_eq!(r.status / 100, 4, "{query}: {}", r.body);
    }
}

#[test]
fn size_limits_hold() {
    let server = start(
        1,
        &[
            "--body-image-length",
            "200000",
            "--max-image-side",
            "1000",
            "--max-image-pixels",
            "500000",
            "--url-length",
            "64",
        ],
    );
    // obama3.jpg is 595,944 bytes. The server answers before reading it all: a raw request
    // tolerates that.
    let r = server.raw_request("POST /v2/detect HTTP/1.1\r\nContent-Type: image/jpeg", &photo("obama3.jpg"));
    assert_error(&r, 413, "BAD_PARAM", Some("image"), None);
    let wide = encode(&RgbImage::new(1001, 10), ImageFormat::Png);
    let r = server.post_bytes("/v2/detect", &wide, None);
    assert_error(&r, 400, "BAD_PARAM", Some("image"), None);
    assert!(error_message(&r).contains("max_image_side"), "{}", r.body);
    let big = encode(&RgbImage::new(1000, 501), ImageFormat::Png);
    let r = server.post_bytes("/v2/detect", &big, None);
    assert!(error_message(&r).contains("max_image_pixels"), "{}", r.body);
    let url = format!("http://example.com/{}.jpg", "a".repeat(60));
    let r = server.post_bytes("/v2/detect", json!({ "url": url }).to_string().as_bytes(), None);
    assert_error(&r, 400, "BAD_PARAM", Some("url"), None);
    assert!(error_message(&r).contains("url_length"), "{}", r.body);
    // obama.jpg (910x1137, 279,922 bytes) is over the body limit; the same photo scaled to
    // 640x480 fits every limit.
    let small = image::load_from_memory(&photo("obama.jpg")).unwrap().resize_exact(
        640,
        480,
        image::imageops::FilterType::Triangle,
    );
    let r = server.post_bytes("/v2/detect", &encode(&small.to_rgb8(), ImageFormat::Jpeg), None);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn detection_runs_on_a_scaled_copy_with_boxes_in_the_photo_pixels() {
    let small = start(1, &["--detect-max-side", "500"]);
    let scaled = bbox(&one_face(&small, "", &photo("obama.jpg")));
    let full = bbox(&one_face(detector(), "", &photo("obama.jpg")));
    assert!(iou(scaled, full) > 0.6, "{scaled:?} vs {full:?}");
}

#[test]
fn a_full_queue_answers_over_capacity() {
    let server = start(1, &["--extract-queue", "1"]);
    let body = photo("obama.jpg");
    let responses: Vec<Resp> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..6).map(|_| s.spawn(|| server.post_bytes("/v2/detect?detector=cnn", &body, None))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert!(statuses.contains(&200), "{statuses:?}");
    let refused = responses.iter().find(|r| r.status == 503).unwrap_or_else(|| panic!("no 503 in {statuses:?}"));
    assert_error(refused, 503, "OVER_CAPACITY", None, None);
    let r = server.post_bytes("/v2/detect", &photo("obama.jpg"), None);
    assert_eq!(r.status, 200, "the queue drains: {}", r.body);
}

/// A tiny HTTP server on `ip`: `/photo.jpg` is obama.jpg, `/to/<url>` redirects to `<url>`,
/// `/slow` never answers.
fn photo_server(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).expect("bind the photo server");
    let address = listener.local_addr().unwrap();
    let jpeg = photo("obama.jpg");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let jpeg = jpeg.clone();
            std::thread::spawn(move || serve_one(stream, &jpeg));
        }
    });
    address
}

fn serve_one(mut stream: TcpStream, jpeg: &[u8]) {
    let mut line = String::new();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).map_or(true, |n| n == 0) || header.trim().is_empty() {
            break;
        }
    }
    if path == "/slow" {
        std::thread::sleep(Duration::from_secs(30));
        return;
    }
    let head = if path == "/photo.jpg" {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            jpeg.len()
        )
    } else if let Some(target) = path.strip_prefix("/to/") {
        format!("HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    let _ = stream.write_all(head.as_bytes());
    if path == "/photo.jpg" {
        let _ = stream.write_all(jpeg);
    }
}

fn detect_url(server: &Server, url: &str) -> Resp {
    server.post_bytes("/v2/detect", json!({ "url": url }).to_string().as_bytes(), Some("application/json"))
}

#[test]
fn urls_are_fetched_but_never_from_denied_networks() {
    let allowed = photo_server("127.0.0.1");
    let denied = photo_server("127.0.0.2");
    // Here only 127.0.0.2 is denied, so the photo server on 127.0.0.1 may be fetched.
    let server = start(1, &["--deny-networks", "127.0.0.2/32", "--fetch-timeout", "1"]);
    let r = detect_url(&server, &format!("http://{allowed}/photo.jpg"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(faces(&r.json()).len(), 1);
    let r = detect_url(&server, &format!("http://{denied}/photo.jpg"));
    assert_error(&r, 400, "BAD_PARAM", Some("url"), None);
    assert!(error_message(&r).contains("127.0.0.2 is in deny_networks"), "{}", r.body);
    // A redirect from the allowed server to the denied one is refused at the hop.
    let r = detect_url(&server, &format!("http://{allowed}/to/http://{denied}/photo.jpg"));
    assert_error(&r, 400, "BAD_PARAM", Some("url"), None);
    assert!(error_message(&r).contains("deny_networks"), "{}", r.body);
    // 0.0.0.0 reaches this host whatever the list says: always refused, also at a redirect.
    let r = detect_url(&server, &format!("http://0.0.0.0:{}/photo.jpg", allowed.port()));
    assert_error(&r, 400, "BAD_PARAM", Some("url"), None);
    let r = detect_url(&server, &format!("http://{allowed}/to/http://0.0.0.0:{}/photo.jpg", allowed.port()));
    assert_error(&r, 400, "BAD_PARAM", Some("url"), None);
    // A redirect to an allowed address is followed.
    let r = detect_url(&server, &format!("http://{allowed}/to/http://{allowed}/photo.jpg"));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = detect_url(&server, &format!("http://{allowed}/slow"));
    assert_error(&r, 400, "BAD_PARAM", Some("url"), None);
    assert!(error_message(&r).contains("timed out"), "{}", r.body);
    let r = detect_url(&server, &format!("http://{allowed}/missing.jpg"));
    assert!(error_message(&r).contains("404"), "{}", r.body);

    // With the default deny-list, loopback is refused by address and by name.
    let server = detector();
    let r = detect_url(server, &format!("http://{allowed}/photo.jpg"));
    assert_error(&r, 400, "BAD_PARAM", Some("url"), None);
    assert!(error_message(&r).contains("127.0.0.1 is in deny_networks (127.0.0.0/8)"), "{}", r.body);
    let r = detect_url(server, &format!("http://localhost:{}/photo.jpg", allowed.port()));
    assert_error(&r, 400, "BAD_PARAM", Some("url"), None);
    assert!(error_message(&r).contains("localhost resolves to"), "{}", r.body);
    let r = detect_url(server, &format!("http://[::1]:{}/photo.jpg", allowed.port()));
    assert_error(&r, 400, "BAD_PARAM", Some("url"), None);
}

#[test]
fn facedb_extract_serves_detection_alone() {
    let args: Vec<String> = [
        "extract",
        "--listen",
        "127.0.0.1:0",
        "--extract-workers",
        "1",
        "--keep-buffers",
        "--models-dir",
        &models_dir(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let server = Server::launch(&args, None, true).unwrap_or_else(|f| panic!("facedb extract did not start: {f:?}"));
    let face = one_face(&server, "?facen=true", &photo("obama.jpg"));
    assert!(face["id"].as_str().is_some());
    assert_error(&server.post("/v2/faces/search/g", "{}"), 404, "NOT_FOUND", Some("path"), None);
    // Without the models it refuses to start, naming the file.
    let args: Vec<String> =
        ["extract", "--listen", "127.0.0.1:0", "--models-dir", "/nonexistent"].iter().map(|s| s.to_string()).collect();
    let failure = Server::launch(&args, None, true).err().expect("extract without models fails");
    assert!(
        failure.stderr.contains("shape_predictor_5_face_landmarks.dat") && failure.stderr.contains("tools/setup.sh"),
        "{}",
        failure.stderr
    );
}

/// A router whose `extraction-api` names a `facedb extract` (started with
/// `--allow-return-facen`) sends photos there, keeps the facens of the detections itself, and
/// enrolls and searches by them over its shards. Clients see facens only when they ask and the
/// router allows it; a detection made without facens cannot be enrolled; a service that is gone
/// is a 503 naming it.
#[test]
fn a_router_detects_through_its_extraction_api() {
    let args: Vec<String> = [
        "extract",
        "--listen",
        "127.0.0.1:0",
        "--extract-workers",
        "1",
        "--allow-return-facen",
        "--models-dir",
        &models_dir(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let extract = Server::launch(&args, None, true).unwrap_or_else(|f| panic!("facedb extract did not start: {f:?}"));
    let cluster = Cluster::start(2);
    let mut config = cluster.config(&[0, 1]);
    config.extra = format!("extraction-api:\n  extraction-api: {}\n", extract.base_url());
    let router = cluster.launch_router(&config).unwrap_or_else(|f| panic!("the router did not start: {f:?}"));

    let face = one_face(&router, "?facen=true", &photo("obama.jpg"));
    assert!(face.get("facen").is_none(), "a facen the client did not ask for: {face}");
    let gallery = router.new_gallery("remote");
    router.add_ok(&gallery, &json!([{"id": 1, "detection": face["id"]}]));
    let biden = one_face(&router, "?facen=true", &photo("biden.jpg"));
    router.add_ok(&gallery, &json!([{"id": 2, "detection": biden["id"]}]));
    let sample = one_face(&router, "?facen=true", &photo("obama2.jpg"));
    let found = router.search_ok(&gallery, &json!({"filter": {"facen": {"detection": sample["id"]}}, "limit": 2}));
    assert_eq!(found[0]["id"], json!(1), "{found:?}");
    assert!(found[0]["score"].as_f64().unwrap() >= f64::from(SAME_PERSON_SCORE), "{found:?}");
    assert!(found[1]["score"].as_f64().unwrap() < f64::from(SAME_PERSON_SCORE), "{found:?}");

    let r = router.post_bytes("/v2/detect?return_facen=true", &photo("obama.jpg"), Some("image/jpeg"));
    assert_error(&r, 403, "BAD_PARAM", Some("return_facen"), None);
    assert!(error_message(&r).contains("limits.allow-return-facen"), "a router's setting: {}", r.body);
    let r = router.post_bytes("/v2/detect?return_facen=true", &vec![0xffu8; 4 << 20], Some("image/jpeg"));
    assert_error(&r, 403, "BAD_PARAM", Some("return_facen"), None);
    let plain = one_face(&router, "", &photo("obama3.jpg"));
    let r = router.add_faces(&gallery, &json!([{"id": 3, "detection": plain["id"]}]));
    assert_error(&r, 400, "BAD_PARAM", Some("detection"), Some(&plain["id"]));
    assert!(error_message(&r).contains("facen=true"), "{}", r.body);

    let service = extract.base_url().to_string();
    drop(extract);
    let r = router.post_bytes("/v2/detect?facen=true", &photo("obama.jpg"), Some("image/jpeg"));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"]["kind"], json!("EXTRACTION_ERROR"), "{}", r.body);
    assert!(error_message(&r).contains(&service), "{}", r.body);
}
