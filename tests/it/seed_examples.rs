//! The original product's direct API examples ("Direct API Requests to Tarantool" in its
//! administrator's guide), replayed request for request, each with the exact response.
//!
//! The request texts are the guide's own, sent as `curl --data` sends them (form content type,
//! the body verbatim), with two repairs where the guide's text is broken: its facens are
//! truncated base64 (`qgI3vZRv/z...NpO9MdHavWlWuT0=`), so full 128-float facens are used (their
//! first four floats are the guide's, so they still start `qgI3vZRv/z0BQTk9rcir`), and the add
//! example's trailing comma after `"person_name": "Mary Ostin"` is dropped. Everything else is
//! kept: the id 9223372036854776000 (above i64::MAX), the `/v2/testgal/search` path,
//! `"sort": {"score": -1}`, `"facen": null` in the update, and the meta key `m:timestamp`.
//! Each test has a server of its own so that the gallery list is exactly the guide's.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::{assert_error, cosine, facen, full_meta, rand_vec, Server, DIM};

/// The facen the guide searches with: its first four floats decoded from the guide's text,
/// the rest filled in like a real (roughly unit-length) feature vector.
fn seed_query() -> Vec<f32> {
    let head = base64::engine::general_purpose::STANDARD.decode("qgI3vZRv/z0BQTk9rcirOw==").expect("base64");
    let mut v: Vec<f32> = rand_vec(2823, DIM).iter().map(|x| x * 0.15).collect();
    for (i, c) in head.chunks_exact(4).enumerate() {
        v[i] = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    v
}

/// A face close to the query (cosine about 0.996, as in the guide's answer).
fn near_query() -> Vec<f32> {
    seed_query().iter().zip(rand_vec(3217, DIM)).map(|(q, n)| q + 0.085 * 0.15 * n).collect()
}

const MARY: u64 = 9_223_372_036_854_776_000;
/// The face the guide's search finds: person 777 on camera 8632, id inside the id range.
const FOUND: u64 = 9_223_372_036_854_775_808;

#[test]
fn seed_faces_add_search_list_get_and_delete_on_testgal() {
    let s = Server::start(&[]);
    let q = seed_query();
    assert!(facen(&q).starts_with("qgI3vZRv/z0BQTk9rcir"));

    // Create Gallery
    // curl -D - -X POST -s 'http://localhost:8001/v2/galleries/add/testgal'
    let r = s.post_empty("/v2/galleries/add/testgal");
    assert_eq!((r.status, r.body.as_str()), (200, ""));

    // Add Face
    // curl -D - -s 'http://localhost:8001/v2/faces/add/testgal' --data '[ ... ]'
    let add_body = format!(
        "[\n {{\n \"id\": 9223372036854776000,\n \"facen\": \"{}\",\n \"meta\": {{\n \"cam_id\": \"223900\",\n \"person_name\": \"Mary Ostin\"\n }}\n }}\n]",
        facen(&q)
    );
    let r = s.post("/v2/faces/add/testgal", &add_body);
    assert_eq!((r.status, r.body.as_str()), (200, ""), "HTTP 200 and empty body");

    // the face the search example finds
    let found = near_query();
    let r = s.post(
        "/v2/faces/add/testgal",
        &json!([{"id": FOUND, "facen": facen(&found), "meta": {"person_id": 777, "cam_id": "8632"}}]).to_string(),
    );
    assert_eq!((r.status, r.body.as_str()), (200, ""));

    // Face Search
    // curl -D - -s 'http://localhost:8001/v2/testgal/search' --data '{ ... }'
    let search_body = format!(
        "\n{{\n \"limit\": 2,\n \"sort\": {{\n \"score\": -1\n }},\n \"filter\": {{\n \"facen\": {{\n \"data\": \"{}\",\n \"score\": [0.75, 1]\n }},\n \"id\": {{\n \"range\": [922337203685400000, 9223372036854999000]\n }},\n \"meta\": {{\n \"person_id\": {{\n \"range\": [444, 999]\n }},\n \"cam_id\": {{\n \"set\": [\"12767\", \"8632\", \"23989\"]\n }}\n }}\n }}\n}}",
        facen(&q)
    );
    let r = s.post("/v2/testgal/search", &search_body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("X-search-stat"), Some("without_index"));
    let mut got = r.json();
    let score = got["results"][0]["score"].as_f64().expect("a score");
    let want_score = cosine(&q, &found);
    assert!(
        (score - want_score).abs() < 1e-4 && (0.99..1.0).contains(&want_score),
        "score {score} vs cosine {want_score}"
    );
    got["results"][0].as_object_mut().expect("face").remove("score");
    assert_eq!(
        got,
        json!({"results": [{
            "id": FOUND,
            "facen": facen(&found),
            "meta": full_meta(json!({"person_id": 777, "cam_id": "8632"})),
        }]})
    );
    assert!(r.body.contains("9223372036854775808"), "{}", r.body);

    // the same search at /v2/faces/search/testgal, and Mary is found once the meta filter goes
    let r = s.post("/v2/faces/search/testgal", &search_body);
    assert_eq!(r.status, 200);
    let r = s.post_json(
        "/v2/testgal/search",
        &json!({"limit": 2, "sort": {"score": -1}, "filter": {"facen": {"data": facen(&q), "score": [0.75, 1]}}}),
    );
    let ids: Vec<u64> =
        r.json()["results"].as_array().expect("results").iter().map(|f| f["id"].as_u64().expect("id")).collect();
    assert_eq!(ids, vec![MARY, FOUND]);
    assert!(r.body.contains("9223372036854776000"), "{}", r.body);
    let mary = &r.json()["results"][0];
    assert_eq!(mary["facen"], json!(facen(&q)));
    assert_eq!(mary["meta"], full_meta(json!({"cam_id": "223900", "person_name": "Mary Ostin"})));

    // List Galleries
    // curl -D - -s -X POST http://localhost:8001/v2/galleries/list
    let r = s.post_empty("/v2/galleries/list");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"results": [{"name": "testgal", "faces": 2}]}));

    // Get Gallery Info
    // curl -D - -s -X POST http://localhost:8001/v2/galleries/get/testgal
    let r = s.post_empty("/v2/galleries/get/testgal");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"faces": 2}));

    // Remove Face (the four faces are added first)
    // curl -D - -s 'http://localhost:8001/v2/faces/delete/testgal' --data '[1, 4, 922, 3]'
    let more: Vec<Value> =
        [1u64, 3, 4, 922].iter().map(|&id| json!({"id": id, "facen": facen(&rand_vec(id, DIM))})).collect();
    s.add_ok("testgal", &json!(more));
    assert_eq!(s.count("testgal"), 6);
    let r = s.post("/v2/faces/delete/testgal", "[1, 4, 922, 3]");
    assert_eq!((r.status, r.body.as_str()), (200, ""), "HTTP 200 and empty body");
    assert_eq!(s.post_empty("/v2/galleries/get/testgal").json(), json!({"faces": 2}));
    // "HTTP 404 if a face with the given id is not found in the gallery"
    let r = s.post("/v2/faces/delete/testgal", "[1, 4, 922, 3]");
    assert_error(&r, 404, "NOT_FOUND", Some("id"), None);

    // List gallery names on a shard: http://<host:port>/stat/list/1/99
    let r = s.get("/stat/list/1/99");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"results": [{"name": "testgal", "faces": 2}]}));
}

#[test]
fn seed_update_on_sandbox() {
    let s = Server::start(&[]);
    s.create_gallery("sandbox");
    let v = rand_vec(1, DIM);
    let before = json!({
        "m:timestamp": 1500,
        "normalized_id": "1_b9pkrf00mjt6h1vmq1kg.png",
        "m:cam_id": "a9f7a973-f07e-469d-a3bd-41ddd510b26f",
        "feat": "{\"score\":0.123}",
    });
    s.add_ok("sandbox", &json!([{"id": 1, "facen": facen(&v), "meta": before}]));

    // Edit Face Metadata and Feature Vector
    // curl -D - -s 'http://localhost:8001/v2/faces/update/sandbox'
    //      --data '[{"id":1,"facen":null,"meta":{"m:timestamp":1848}}]'
    let r = s.post("/v2/faces/update/sandbox", r#"[{"id":1,"facen":null,"meta":{"m:timestamp":1848}}]"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let expected = json!({
        "id": 1,
        "facen": facen(&v),
        "meta": full_meta(json!({
            "m:timestamp": 1848,
            "normalized_id": "1_b9pkrf00mjt6h1vmq1kg.png",
            "m:cam_id": "a9f7a973-f07e-469d-a3bd-41ddd510b26f",
            "feat": "{\"score\":0.123}",
        })),
    });
    assert_eq!(r.json(), expected, "all face parameters, including not updated");
    assert_eq!(s.fetch("sandbox", 1), expected);

    // "HTTP 404 and error description if a face with the given id doesn't exist"
    let r = s.post("/v2/faces/update/sandbox", r#"[{"id":2,"facen":null,"meta":{"m:timestamp":1848}}]"#);
    assert_error(&r, 404, "NOT_FOUND", None, None);
}

#[test]
fn seed_create_and_remove_gallery_123() {
    let s = Server::start(&[]);

    // Create Gallery: curl -D - -X POST -s 'http://localhost:8001/v2/galleries/add/123'
    let r = s.post_empty("/v2/galleries/add/123");
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    // ... and again: the guide's answer, 409 Conflict "gallery already exists"
    let r = s.post_empty("/v2/galleries/add/123");
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json(),
        json!({"error": {"code": 409, "kind": "CONFLICT", "message": "gallery already exists",
                         "param": "name", "value": "123"}})
    );

    // Remove Gallery: curl -D - -X POST -s 'http://localhost:8001/v2/galleries/delete/123'
    let r = s.post_empty("/v2/galleries/delete/123");
    assert_eq!((r.status, r.body.as_str()), (204, ""), "204 No content");
    assert_eq!(s.post_empty("/v2/galleries/list").json(), json!({"results": []}));
    let r = s.post_empty("/v2/galleries/delete/123");
    assert_error(&r, 404, "GALLERY_NOT_FOUND", None, None);
}
