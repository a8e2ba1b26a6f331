//! Errors that belong to no single endpoint: unknown paths (404 NOT_FOUND), wrong methods
//! (405 MALFORMED_REQUEST), bodies over `--max-body-bytes` (413 BAD_PARAM `body`), a missing
//! gallery on every face endpoint, and the content type (ignored: a body is JSON whatever the
//! header says, as the seed sends everything with `curl --data`).

use serde_json::json;

use crate::common::{assert_error, error_message, face, face_r, shared, Server};

#[test]
fn unknown_paths_are_404_not_found() {
    let s = shared();
    for path in [
        "/",
        "/v2",
        "/v2/",
        "/v3/galleries/list",
        "/v2/galleries/list/extra",
        "/v2/galleries/frob/x",
        "/v2/faces/frob/x",
        "/v2/faces/add/g/extra",
        "/v2/faces/search/g/extra",
        "/stat/list/1",
        "/stat/list/1/2/3",
        "/stat",
        "/favicon.ico",
        "/V2/galleries/list",
    ] {
        for method in ["GET", "POST"] {
            let r = s.request(method, path, None, None);
            assert_error(&r, 404, "NOT_FOUND", None, None);
        }
    }
}

#[test]
fn wrong_methods_are_405() {
    let s = shared();
    let g = s.new_gallery("methods");
    s.add_ok(&g, &json!([face_r(1, json!({}))]));
    let cases = [
        ("GET", format!("/v2/faces/add/{g}")),
        ("GET", format!("/v2/faces/delete/{g}")),
        ("GET", format!("/v2/faces/update/{g}")),
        ("GET", format!("/v2/faces/search/{g}")),
        ("GET", format!("/v2/{g}/search")),
        ("GET", "/v2/galleries/add/method_probe".to_string()),
        ("GET", format!("/v2/galleries/delete/{g}")),
        ("PUT", "/v2/galleries/list".to_string()),
        ("DELETE", format!("/v2/galleries/get/{g}")),
        ("DELETE", format!("/v2/galleries/delete/{g}")),
        ("PATCH", format!("/v2/faces/update/{g}")),
        ("PUT", format!("/v2/faces/add/{g}")),
        ("DELETE", "/stat/list/1/99".to_string()),
    ];
    for (method, path) in cases {
        let r = s.request(method, &path, None, None);
        assert_error(&r, 405, "MALFORMED_REQUEST", None, None);
    }
    // none of them did anything
    assert_eq!(s.count(&g), 1);
    assert_eq!(s.get("/v2/galleries/get/method_probe").status, 404);
}

#[test]
fn missing_gallery_on_every_face_endpoint() {
    let s = shared();
    let g = "never_created_gallery";
    let f = face_r(1, json!({}));
    for (path, body) in [
        (format!("/v2/faces/add/{g}"), json!([f])),
        (format!("/v2/faces/delete/{g}"), json!([1])),
        (format!("/v2/faces/update/{g}"), json!([{"id": 1}])),
        (format!("/v2/faces/search/{g}"), json!({})),
        (format!("/v2/{g}/search"), json!({})),
        (format!("/v2/galleries/get/{g}"), json!({})),
        (format!("/v2/galleries/delete/{g}"), json!({})),
    ] {
        let r = s.post_json(&path, &body);
        assert_error(&r, 404, "GALLERY_NOT_FOUND", None, None);
    }
}

#[test]
fn bodies_are_json_whatever_the_content_type() {
    let s = shared();
    let g = s.new_gallery("ctype");
    let path = format!("/v2/faces/add/{g}");
    let content_types = [
        Some("application/json"),
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("application/octet-stream"),
        None,
    ];
    for (i, ct) in content_types.iter().enumerate() {
        let body = json!([face_r(i as u64, json!({"cam_id": "x"}))]).to_string();
        let r = s.request("POST", &path, Some(&body), *ct);
        assert_eq!((r.status, r.body.as_str()), (200, ""), "content type {ct:?}");
    }
    assert_eq!(s.count(&g), content_types.len() as u64);
    for ct in content_types {
        let r = s.request(
            "POST",
            &format!("/v2/faces/search/{g}"),
            Some(r#"{"filter": {"meta": {"cam_id": {"set": ["x"]}}}, "limit": 2}"#),
            ct,
        );
        assert_eq!(r.status, 200, "{ct:?}: {}", r.body);
        assert_eq!(r.json()["results"].as_array().map(|a| a.len()), Some(2));
    }
    // responses are JSON
    let r = s.post_empty("/v2/galleries/list");
    assert!(r.header("content-type").is_some_and(|v| v.starts_with("application/json")), "{:?}", r.headers);
    let r = s.post_empty("/v2/galleries/get/never_created_gallery");
    assert!(r.header("content-type").is_some_and(|v| v.starts_with("application/json")), "{:?}", r.headers);
}

/// A request refused before its body matters (a bad gallery name or query parameter, an unknown
/// path or gallery, a wrong method) is answered to a client that writes its whole large body
/// before it reads: the server reads the body first, so the connection is not closed under it.
#[test]
fn refusals_reach_clients_still_sending_a_large_body() {
    let s = shared();
    let g = s.new_gallery("large-bodies");
    let batch: Vec<_> = (0..8000u64).map(|i| face_r(i, json!({"cam_id": "padding"}))).collect();
    let body = json!(batch).to_string();
    assert!(body.len() > 1 << 20, "{}", body.len());
    let cases = [
        ("POST", "/v2/faces/add/bad%20name".to_string(), 400),
        ("POST", format!("/v2/faces/search/{g}?ignore_errors=maybe"), 400),
        ("POST", "/v2/faces/add/no-such-gallery".to_string(), 404),
        ("POST", "/v2/no/such/endpoint".to_string(), 404),
        ("PUT", format!("/v2/faces/add/{g}"), 405),
    ];
    for (method, path, status) in cases {
        let r = s
            .try_request_bytes(method, &path, Some(body.as_bytes()), Some("application/json"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
    }
    assert_eq!(s.count(&g), 0);
    // A body claimed larger than the limit is refused at once, without being read, with the
    // same message (the same limit) as one found too large as it is read.
    let r = s.raw_request_claiming(&format!("POST /v2/faces/add/{g} HTTP/1.1"), 1 << 30, b"[]");
    assert_error(&r, 413, "BAD_PARAM", Some("body"), None);
    assert!(error_message(&r).contains("bytes (max_body_bytes)"), "{}", r.body);
}

#[test]
fn body_over_max_body_bytes_is_413() {
    let s = Server::start(&["--max-body-bytes", "1024", "--facen-size", "4"]);
    s.create_gallery("g");

    // exactly at the limit: fine
    let at_limit = format!("{{}}{}", " ".repeat(1022));
    assert_eq!(at_limit.len(), 1024);
    let r = s.post("/v2/faces/search/g", &at_limit);
    assert_eq!(r.status, 200, "{}", r.body);

    // one byte more: 413, stating the limit; a body claimed far larger gets the same words
    let over = format!("{{}}{}", " ".repeat(1023));
    let r = s.raw_request("POST /v2/faces/search/g HTTP/1.1", over.as_bytes());
    assert_error(&r, 413, "BAD_PARAM", Some("body"), None);
    assert_eq!(error_message(&r), "the request body is larger than 1024 bytes (max_body_bytes)");
    let r = s.raw_request_claiming("POST /v2/faces/search/g HTTP/1.1", 1 << 30, b"{}");
    assert_eq!(error_message(&r), "the request body is larger than 1024 bytes (max_body_bytes)");

    // a face batch that is too large adds nothing
    let batch: Vec<_> = (0..60u64).map(|i| face(i, &[1.0, i as f32, 0.0, 0.5], json!({"cam_id": "padding"}))).collect();
    let big = json!(batch).to_string();
    assert!(big.len() > 1024);
    let r = s.raw_request("POST /v2/faces/add/g HTTP/1.1", big.as_bytes());
    assert_error(&r, 413, "BAD_PARAM", Some("body"), None);
    assert_eq!(s.count("g"), 0);

    // a much larger one, too (the server need not read it all)
    let huge = vec![b' '; 256 * 1024];
    let r = s.raw_request("POST /v2/faces/add/g HTTP/1.1", &huge);
    assert_error(&r, 413, "BAD_PARAM", Some("body"), None);
    assert_eq!(s.count("g"), 0);

    // a small batch goes in
    s.add_ok("g", &json!(batch[..3]));
    assert_eq!(s.count("g"), 3);

    // update and delete are limited the same way
    let upd: Vec<_> = (0..3u64).map(|i| json!({"id": i, "meta": {"cam_id": "x".repeat(500)}})).collect();
    let r = s.raw_request("POST /v2/faces/update/g HTTP/1.1", json!(upd).to_string().as_bytes());
    assert_error(&r, 413, "BAD_PARAM", Some("body"), None);
    let ids = format!("[0{}]", ", 0".repeat(400));
    let r = s.raw_request("POST /v2/faces/delete/g HTTP/1.1", ids.as_bytes());
    assert_error(&r, 413, "BAD_PARAM", Some("body"), None);
    assert_eq!(s.count("g"), 3);
    assert_eq!(s.fetch("g", 0)["meta"]["cam_id"], json!("padding"));

    // and the server still answers normally afterwards
    let r = s.post("/v2/faces/search/g", "{}");
    assert_eq!(r.status, 200);
}
