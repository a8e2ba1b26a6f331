//! The HNSW index over HTTP: `X-search-stat`, `"exact": true`, the index flags, and answers
//! through the graph equal to exact ones on a gallery the graph covers.

use serde_json::{json, Value};

use crate::common::*;

/// A server whose galleries get a graph from the first face, with a search wider than the
/// test galleries (the "ef high": the walk then reaches every face it can).
fn indexed_server() -> Server {
    Server::start(&["--index-min-faces", "0", "--index-m", "16", "--index-ef-search", "2000"])
}

/// `gallery`'s index status on each shard of the server (`serve` spreads faces over local
/// shards; the status of several shards is `{"shards": [{"shard", "status"}]}`).
fn indexes(server: &Server, gallery: &str) -> Vec<Value> {
    let status = server.get("/v2/admin/status").json();
    match status["shards"].as_array() {
        Some(shards) => shards.iter().map(|s| s["status"]["indexes"][gallery].clone()).collect(),
        None => vec![status["indexes"][gallery].clone()],
    }
}

/// Waits until `gallery`'s graphs hold `faces` faces together and none wait in a tail; answers
/// the first shard's index status.
fn wait_indexed(server: &Server, gallery: &str, faces: u64) -> Value {
    let started = std::time::Instant::now();
    loop {
        let shards = indexes(server, gallery);
        let live: u64 = shards.iter().map(|index| index["live"].as_u64().unwrap_or(0)).sum();
        if live == faces && shards.iter().all(|index| index["tail"] == json!(0)) {
            return shards[0].clone();
        }
        assert!(started.elapsed().as_secs() < 60, "not indexed after 60 s: {shards:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn search_body(v: &[f32], limit: usize, exact: Option<bool>, filter_meta: Option<Value>) -> Value {
    let mut filter = json!({"facen": {"data": facen(v), "score": [-1, 1]}});
    if let Some(meta) = filter_meta {
        filter["meta"] = meta;
    }
    let mut body = json!({"limit": limit, "sort": "-score", "filter": filter});
    if let Some(exact) = exact {
        body["exact"] = json!(exact);
    }
    body
}

#[test]
fn searches_say_whether_they_used_the_index_and_agree_with_exact_ones() {
    let server = indexed_server();
    let gallery = server.new_gallery("idx");
    let faces: Vec<Value> =
        (0..1500).map(|id| face(id, &rand_vec(id, DIM), json!({"cam_id": format!("cam{}", id % 2)}))).collect();
    for batch in faces.chunks(500) {
        server.add_ok(&gallery, &json!(batch));
    }
    let index = wait_indexed(&server, &gallery, 1500);
    assert!(index["bytes_per_face"].as_u64().is_some_and(|b| b > DIM as u64 / 4), "{index}");

    for seed in 10_000..10_020 {
        let q = rand_vec(seed, DIM);
        for meta in [None, Some(json!({"cam_id": {"set": ["cam0"]}}))] {
            let indexed = server.search(&gallery, &search_body(&q, 10, None, meta.clone()));
            assert_eq!(indexed.status, 200, "{}", indexed.json());
            assert_eq!(indexed.header("x-search-stat"), Some("with_index"));
            let exact = server.search(&gallery, &search_body(&q, 10, Some(true), meta));
            assert_eq!(exact.header("x-search-stat"), Some("without_index"));
            let ids_and_scores = |r: &Resp| -> Vec<(Value, Value)> {
                results(r).iter().map(|h| (h["id"].clone(), h["score"].clone())).collect()
            };
            assert_eq!(ids_and_scores(&indexed), ids_and_scores(&exact));
        }
    }
    // Id order and an upper score bound are answered by the scan.
    let by_id =
        json!({"limit": 5, "sort": "id", "filter": {"facen": {"data": facen(&rand_vec(1, DIM)), "score": [0.1, 1]}}});
    assert_eq!(server.search(&gallery, &by_id).header("x-search-stat"), Some("without_index"));
    let capped = search_body(&rand_vec(2, DIM), 5, None, None);
    let mut capped = capped;
    capped["filter"]["facen"]["score"] = json!([-1, 0.5]);
    assert_eq!(server.search(&gallery, &capped).header("x-search-stat"), Some("without_index"));
}

#[test]
fn a_deleted_face_is_never_answered_by_the_index() {
    let server = indexed_server();
    let gallery = server.new_gallery("idxdel");
    let faces: Vec<Value> = (0..600).map(|id| face(id, &rand_vec(id, DIM), json!({}))).collect();
    server.add_ok(&gallery, &json!(faces));
    wait_indexed(&server, &gallery, 600);
    for id in 0..30u64 {
        assert_eq!(server.delete_faces(&gallery, &json!([id])).status, 200);
        let found = server.search(&gallery, &search_body(&rand_vec(id, DIM), 3, None, None));
        assert_eq!(found.header("x-search-stat"), Some("with_index"));
        assert!(results(&found).iter().all(|r| r["id"] != json!(id)), "deleted face {id} answered");
    }
}

#[test]
fn exact_must_be_a_boolean_and_index_flags_are_checked() {
    let server = shared();
    let gallery = server.new_gallery("idxbad");
    let r = server.search(&gallery, &json!({"exact": "yes"}));
    assert_error(&r, 400, "BAD_PARAM", Some("exact"), Some(&json!("yes")));
    let r = server.search(&gallery, &json!({"exact": true}));
    assert_eq!((r.status, r.header("x-search-stat")), (200, Some("without_index")));

    let dir = TempDir::new("idxflags");
    let mut args = standard_args(&dir);
    args.extend(["--index-m".to_owned(), "1000".to_owned()]);
    let Err(failure) = Server::launch(&args, Some(dir), false) else { panic!("--index-m 1000 was accepted") };
    assert!(failure.stderr.contains("index_m: 1000"), "{}", failure.stderr);
}

/// A gallery add's body of index parameters is checked whole: a bad one is a 400 naming the
/// parameter and its value, and no gallery is created.
#[test]
fn bad_index_parameters_create_no_gallery() {
    let server = shared();
    let cases = [
        (json!({"m": 1000}), "BAD_PARAM", Some("m"), Some(json!(1000))),
        (json!({"M": 2}), "BAD_PARAM", Some("m"), Some(json!(2))),
        (json!({"ef_search": 0}), "BAD_PARAM", Some("ef_search"), Some(json!(0))),
        (json!({"ef_construction": 5000}), "BAD_PARAM", Some("ef_construction"), Some(json!(5000))),
        (json!({"ef_search": "wide"}), "BAD_PARAM", Some("ef_search"), Some(json!("wide"))),
        (json!({"ef_search": -1}), "BAD_PARAM", Some("ef_search"), Some(json!(-1))),
        (json!({"efSearch": 64}), "BAD_PARAM", Some("efSearch"), None),
        (json!([16]), "MALFORMED_REQUEST", None, Some(json!([16]))),
    ];
    for (body, kind, param, value) in cases {
        let r = server.post_json("/v2/galleries/add/badindex", &body);
        assert_error(&r, 400, kind, param, value.as_ref());
        assert_eq!(server.get("/v2/galleries/get/badindex").status, 404, "no gallery after {body}");
    }
    let r = server.post("/v2/galleries/add/badindex", "{\"m\": 16");
    assert_error(&r, 400, "MALFORMED_REQUEST", None, None);
    assert_eq!(server.get("/v2/galleries/get/badindex").status, 404);
    // An empty object, or nulls, are no parameters at all.
    for body in [json!({}), json!({"m": null, "ef_search": null})] {
        let gallery = format!("emptyindex_{}", next_unique());
        assert_eq!(server.post_json(&format!("/v2/galleries/add/{gallery}"), &body).status, 200);
        for index in indexes(server, &gallery) {
            assert_eq!((&index["m"], index.get("overrides")), (&json!(32), None), "{body}: {index}");
        }
    }
}
