//! Search: the two paths, empty bodies, the facen filter and its score (the cosine
//! similarity), sort orders and their ties, and `limit`.

use serde_json::{json, Value};

use crate::common::{
    assert_error, assert_error_lenient, cosine, face, face_r, facen, rand_vec, shared, vec_with, Server, DIM,
};

const EITHER: &[&str] = &["BAD_PARAM", "MALFORMED_REQUEST"];

/// Two orthonormal f64 vectors of `DIM` floats (Gram-Schmidt on two random ones).
fn orthonormal_pair(seed: u64) -> (Vec<f64>, Vec<f64>) {
    let a: Vec<f64> = rand_vec(seed, DIM).iter().map(|&x| x as f64).collect();
    let b: Vec<f64> = rand_vec(seed + 1, DIM).iter().map(|&x| x as f64).collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let q: Vec<f64> = a.iter().map(|x| x / norm(&a)).collect();
    let d: f64 = q.iter().zip(&b).map(|(x, y)| x * y).sum();
    let r: Vec<f64> = b.iter().zip(&q).map(|(y, x)| y - d * x).collect();
    let nr = norm(&r);
    (q, r.iter().map(|x| x / nr).collect())
}

/// A vector whose cosine with `q` is `c` (`q`, `r` orthonormal), scaled by `scale`.
fn at_cos(q: &[f64], r: &[f64], c: f64, scale: f64) -> Vec<f32> {
    let s = (1.0 - c * c).sqrt();
    q.iter().zip(r).map(|(x, y)| ((x * c + y * s) * scale) as f32).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn both_search_paths_and_the_stat_header() {
    let s = shared();
    let g = s.new_gallery("paths");
    let v = vec_with(&[1.0, 2.0]);
    s.add_ok(&g, &json!([face(3, &v, json!({})), face(1, &v, json!({"cam_id": "one"})), face(2, &v, json!({}))]));
    let bodies = [json!({}), json!({"filter": {"facen": {"data": facen(&v)}}})];
    for path in [format!("/v2/faces/search/{g}"), format!("/v2/{g}/search")] {
        for body in &bodies {
            let r = s.post(&path, &body.to_string());
            assert_eq!(r.status, 200, "{path} {body}: {}", r.body);
            assert_eq!(r.header("X-search-stat"), Some("without_index"), "{path}");
            let v = r.json();
            assert_eq!(keys(&v), vec!["results"]);
            let ids: Vec<u64> =
                v["results"].as_array().expect("results").iter().map(|f| f["id"].as_u64().expect("id")).collect();
            assert_eq!(ids, vec![1, 2, 3], "{path} {body}");
        }
    }
    // the whole face dict; a score only with a facen filter
    let plain = s.search_ok(&g, &json!({}));
    assert_eq!(
        plain[0],
        json!({"id": 1, "facen": facen(&v), "meta": crate::common::full_meta(json!({"cam_id": "one"}))})
    );
    let scored = s.search_ok(&g, &bodies[1]);
    for f in &scored {
        assert_eq!(keys(f), vec!["facen", "id", "meta", "score"]);
    }
}

#[test]
fn empty_bodies_and_null_filters_match_everything() {
    let s = shared();
    let g = s.new_gallery("empty_body");
    s.add_ok(&g, &json!([face_r(30, json!({})), face_r(10, json!({})), face_r(20, json!({}))]));
    let path = format!("/v2/faces/search/{g}");
    let mut responses = vec![s.post_empty(&path), s.post(&path, "")];
    for body in [
        "{}",
        " { } ",
        r#"{"filter": null}"#,
        r#"{"filter": {}}"#,
        r#"{"filter": {"facen": null, "id": null, "meta": null}}"#,
        r#"{"filter": {"id": {}, "meta": {}}}"#,
    ] {
        responses.push(s.post(&path, body));
    }
    for r in responses {
        assert_eq!(r.status, 200, "{}", r.body);
        let ids: Vec<u64> =
            r.json()["results"].as_array().expect("results").iter().map(|f| f["id"].as_u64().expect("id")).collect();
        assert_eq!(ids, vec![10, 20, 30]);
        assert!(!r.body.contains("\"score\""), "no score without facen: {}", r.body);
    }
}

#[test]
fn score_is_the_cosine_similarity() {
    let s = shared();
    let g = s.new_gallery("cosine");
    let q = rand_vec(1000, DIM);
    let mut vectors: Vec<(u64, Vec<f32>)> = (1..=6).map(|i| (i, rand_vec(i * 31, DIM))).collect();
    vectors.push((7, q.iter().map(|x| x * 3.0).collect())); // same direction: 1
    vectors.push((8, q.iter().map(|x| -x).collect())); // opposite: -1
    vectors.push((9, vec![0.0; DIM])); // zero vector: 0
    vectors.push((10, q.iter().zip(rand_vec(5, DIM)).map(|(a, b)| a + 0.3 * b).collect()));
    vectors.push((11, q.iter().map(|x| x * 1e-3).collect())); // small, same direction
    s.add_ok(&g, &json!(vectors.iter().map(|(id, v)| face(*id, v, json!({}))).collect::<Vec<_>>()));

    let res = s.search_ok(&g, &json!({"filter": {"facen": {"data": facen(&q)}}}));
    assert_eq!(res.len(), vectors.len(), "default score range [-1, 1] keeps all");
    let mut prev = f64::INFINITY;
    for f in &res {
        let id = f["id"].as_u64().expect("id");
        let score = f["score"].as_f64().expect("score is a number");
        let v = &vectors.iter().find(|(i, _)| *i == id).expect("known id").1;
        let want = cosine(&q, v);
        assert!((score - want).abs() <= 1e-4, "face {id}: score {score} vs cosine {want}");
        assert!((-1.0..=1.0).contains(&score), "clamped: {score}");
        assert!(score <= prev, "-score order by default");
        prev = score;
    }
    let score_of =
        |id: u64| res.iter().find(|f| f["id"] == json!(id)).expect("present")["score"].as_f64().expect("score");
    assert!(score_of(7) > 0.9999);
    assert!(score_of(8) < -0.9999);
    assert_eq!(score_of(9), 0.0, "a zero vector scores 0");

    // a zero query scores 0 against everything; ties go by id ascending
    let res = s.search_ok(&g, &json!({"filter": {"facen": {"data": facen(&vec![0.0; DIM])}}}));
    let ids: Vec<u64> = res.iter().map(|f| f["id"].as_u64().expect("id")).collect();
    assert_eq!(ids, (1..=11).collect::<Vec<u64>>());
    assert!(res.iter().all(|f| f["score"].as_f64() == Some(0.0)));
}

#[test]
fn score_range_keeps_the_exact_copy_and_drops_the_rest() {
    let s = shared();
    let g = s.new_gallery("threshold");
    let (q, r) = orthonormal_pair(42);
    let query = f32s(&q);
    let faces = [
        (1u64, query.iter().map(|x| x * 2.0).collect()), // a copy scaled by 2 (exactly)
        (2, at_cos(&q, &r, 0.9, 1.0)),
        (3, at_cos(&q, &r, 0.7, 7.0)),
        (4, at_cos(&q, &r, 0.3, 0.5)),
        (5, at_cos(&q, &r, 0.0, 1.0)),
        (6, at_cos(&q, &r, -0.6, 1.0)),
        (7, at_cos(&q, &r, -1.0, 1.0)),
        (8, query.clone()), // the very same floats
    ];
    s.add_ok(&g, &json!(faces.iter().map(|(id, v)| face(*id, v, json!({}))).collect::<Vec<_>>()));
    let search =
        |score: Value| s.search_ids(&g, &json!({"filter": {"facen": {"data": facen(&query), "score": score}}}));
    assert_eq!(search(json!([0.99, 1])), vec![1, 8]);
    assert_eq!(search(json!([0.5, 1])), vec![1, 8, 2, 3]);
    assert_eq!(search(json!([0.2, 0.8])), vec![3, 4]);
    assert_eq!(search(json!([-0.5, 0.5])), vec![4, 5]);
    assert_eq!(search(json!([-1, -0.5])), vec![6, 7]);
    assert_eq!(search(json!([-1, 1])), vec![1, 8, 2, 3, 4, 5, 6, 7]);
    assert_eq!(search(json!([0.95, 0.98])), Vec::<u64>::new());
    // integer bounds are numbers too
    assert_eq!(search(json!([-1, 1])).len(), 8);
    assert_eq!(search(json!([0.1, 1])), vec![1, 8, 2, 3, 4]);
}

#[test]
fn equal_scores_are_ordered_by_id() {
    let s = shared();
    let g = s.new_gallery("ties");
    let q = rand_vec(77, DIM);
    let other = rand_vec(78, DIM);
    s.add_ok(
        &g,
        &json!([
            face(9, &other, json!({})),
            face(2, &other, json!({})),
            face(u64::MAX, &other, json!({})),
            face(7, &q, json!({})),
            face(5, &other, json!({})),
            face(0, &other, json!({})),
        ]),
    );
    let body = |extra: Value| {
        let mut b = json!({"filter": {"facen": {"data": facen(&q)}}});
        if let Some(o) = extra.as_object() {
            for (k, v) in o {
                b[k] = v.clone();
            }
        }
        b
    };
    let all = vec![7, 0, 2, 5, 9, u64::MAX];
    assert_eq!(s.search_ids(&g, &body(json!({}))), all);
    assert_eq!(s.search_ids(&g, &body(json!({"sort": "-score"}))), all);
    assert_eq!(s.search_ids(&g, &body(json!({"sort": {"score": -1}}))), all);
    assert_eq!(s.search_ids(&g, &body(json!({"limit": 3}))), vec![7, 0, 2]);
    let scores: Vec<f64> =
        s.search_ok(&g, &body(json!({}))).iter().map(|f| f["score"].as_f64().expect("score")).collect();
    assert!(scores[1..].iter().all(|x| *x == scores[1]), "same vectors, same score: {scores:?}");
}

#[test]
fn sort_orders() {
    let s = shared();
    let g = s.new_gallery("sorts");
    let ids: [u64; 6] =
        [9_223_372_036_854_775_807, 0, u64::MAX, 9_223_372_036_854_776_000, 1, 9_223_372_036_854_775_808];
    let mut asc = ids.to_vec();
    asc.sort();
    let desc: Vec<u64> = asc.iter().rev().copied().collect();
    // cosine with the query decreases with the position in `asc` shuffled by a fixed map
    let (q, r) = orthonormal_pair(5);
    let cos_for = |id: u64| match asc.iter().position(|x| *x == id).expect("id") {
        0 => 0.1,
        1 => 0.9,
        2 => -0.4,
        3 => 0.5,
        4 => 0.95,
        _ => 0.0,
    };
    s.add_ok(
        &g,
        &json!(ids.iter().map(|&id| face(id, &at_cos(&q, &r, cos_for(id), 1.0), json!({}))).collect::<Vec<_>>()),
    );
    let by_score = vec![asc[4], asc[1], asc[3], asc[0], asc[5], asc[2]];
    let fac = json!({"data": facen(&f32s(&q))});

    let cases: Vec<(Value, Vec<u64>)> = vec![
        (json!({}), asc.clone()),
        (json!({"sort": "id"}), asc.clone()),
        (json!({"sort": {"id": 1}}), asc.clone()),
        (json!({"sort": "-id"}), desc.clone()),
        (json!({"sort": {"id": -1}}), desc.clone()),
        (json!({"sort": "-id", "limit": 2}), desc[..2].to_vec()),
        (json!({"filter": {"facen": fac}}), by_score.clone()),
        (json!({"filter": {"facen": fac}, "sort": "-score"}), by_score.clone()),
        (json!({"filter": {"facen": fac}, "sort": {"score": -1}}), by_score.clone()),
        (json!({"filter": {"facen": fac}, "sort": "id"}), asc.clone()),
        (json!({"filter": {"facen": fac}, "sort": {"id": 1}}), asc.clone()),
        (json!({"filter": {"facen": fac}, "sort": "-id"}), desc.clone()),
        (json!({"filter": {"facen": fac}, "sort": {"id": -1}}), desc.clone()),
        (json!({"filter": {"facen": fac}, "sort": "-id", "limit": 3}), desc[..3].to_vec()),
        (json!({"filter": {"facen": fac}, "sort": "-score", "limit": 2}), by_score[..2].to_vec()),
    ];
    for (body, want) in cases {
        assert_eq!(s.search_ids(&g, &body), want, "{body}");
        let res = s.search_ok(&g, &body);
        let has_facen = body["filter"]["facen"].is_object();
        for f in &res {
            assert_eq!(f.get("score").is_some(), has_facen, "{body}: {f}");
        }
    }

    // sorts that are not allowed
    for body in [
        json!({"sort": "-score"}),
        json!({"sort": {"score": -1}}),
        json!({"sort": "bogus"}),
        json!({"sort": ""}),
        json!({"sort": "score"}),
        json!({"sort": 5}),
        json!({"sort": {"name": 1}}),
        json!({"filter": {"facen": fac}, "sort": {"score": 1}}),
        json!({"filter": {"facen": fac}, "sort": "bogus"}),
    ] {
        let r = s.search(&g, &body);
        assert_error_lenient(&r, 400, EITHER, Some("sort"), None);
        assert_eq!(r.json()["error"]["param"], json!("sort"), "{body}");
    }
    let r = s.search(&g, &json!({"sort": "-score"}));
    assert_error(&r, 400, "BAD_PARAM", Some("sort"), None);
}

#[test]
fn limit_defaults_to_1000_and_is_bounded() {
    let s = shared();
    let g = s.new_gallery("limit");
    let q = vec_with(&[1.0]);
    // 1100 faces in one batch; face i has cosine decreasing with i against `q`
    let faces: Vec<Value> = (0..1100u64).map(|i| face(i, &vec_with(&[1.0, i as f32 / 100.0]), json!({}))).collect();
    s.add_ok(&g, &json!(faces));
    assert_eq!(s.count(&g), 1100);

    let all: Vec<u64> = (0..1100).collect();
    assert_eq!(s.search_ids(&g, &json!({})), all[..1000].to_vec());
    assert_eq!(s.search_ids(&g, &json!({"limit": 1100})), all);
    assert_eq!(s.search_ids(&g, &json!({"limit": 10000})), all);
    assert_eq!(s.search_ids(&g, &json!({"limit": 1})), vec![0]);
    assert_eq!(s.search_ids(&g, &json!({"limit": 0})), Vec::<u64>::new());
    assert_eq!(s.search_ids(&g, &json!({"limit": 0, "filter": {"facen": {"data": facen(&q)}}})), Vec::<u64>::new());
    assert_eq!(s.search_ids(&g, &json!({"sort": "-id", "limit": 3})), vec![1099, 1098, 1097]);
    // with a facen filter the default limit also applies, best scores first
    let res = s.search_ids(&g, &json!({"filter": {"facen": {"data": facen(&q)}}}));
    assert_eq!(res, all[..1000].to_vec());
    assert_eq!(s.search_ids(&g, &json!({"limit": 5, "filter": {"facen": {"data": facen(&q)}}})), vec![0, 1, 2, 3, 4]);

    let r = s.search(&g, &json!({"limit": 10001}));
    assert_error(&r, 400, "BAD_PARAM", Some("limit"), None);
    for bad in [json!(-1), json!("5"), json!(1.5), json!([1])] {
        let r = s.search(&g, &json!({ "limit": bad }));
        assert_error_lenient(&r, 400, EITHER, Some("limit"), None);
    }
}

#[test]
fn max_search_limit_flag() {
    let s = Server::start(&["--max-search-limit", "5"]);
    s.create_gallery("g");
    s.add_ok("g", &json!((1..=8u64).map(|i| face_r(i, json!({}))).collect::<Vec<_>>()));
    assert_eq!(s.search_ids("g", &json!({"limit": 5})), vec![1, 2, 3, 4, 5]);
    assert_eq!(s.search_ids("g", &json!({"limit": 3})), vec![1, 2, 3]);
    let r = s.search("g", &json!({"limit": 6}));
    assert_error(&r, 400, "BAD_PARAM", Some("limit"), None);
    let r = s.search("g", &json!({"limit": 1000}));
    assert_error(&r, 400, "BAD_PARAM", Some("limit"), None);
}

#[test]
fn facen_filter_errors() {
    let s = shared();
    let g = s.new_gallery("facen_filter_err");
    s.add_ok(&g, &json!([face_r(1, json!({}))]));
    let good = facen(&rand_vec(1, DIM));
    let mut nan = rand_vec(1, DIM);
    nan[0] = f32::NAN;
    let mut inf = rand_vec(1, DIM);
    inf[5] = f32::NEG_INFINITY;

    for fac in [json!({}), json!({"score": [0.5, 1]})] {
        let r = s.search(&g, &json!({"filter": {"facen": fac}}));
        assert_error_lenient(&r, 400, EITHER, Some("filter.facen.data"), None);
        assert_eq!(r.json()["error"]["param"], json!("filter.facen.data"));
    }
    for fac in [
        json!({"data": "@@@"}),
        json!({"data": facen(&rand_vec(1, 3))}),
        json!({"data": facen(&rand_vec(1, DIM + 1))}),
        json!({"data": ""}),
        json!({"data": facen(&nan)}),
        json!({"data": facen(&inf)}),
    ] {
        let r = s.search(&g, &json!({"filter": {"facen": fac}}));
        assert_error(&r, 400, "BAD_PARAM", Some("filter.facen.data"), None);
    }
    for fac in [json!({"data": null}), json!({"data": 5})] {
        let r = s.search(&g, &json!({"filter": {"facen": fac}}));
        assert_error_lenient(&r, 400, EITHER, Some("filter.facen.data"), None);
    }
    for score in [
        json!([0.9, 0.1]),
        json!([0.5]),
        json!([]),
        json!([0.1, 0.5, 0.9]),
        json!(["a", 1]),
        json!([0, "1"]),
        json!("x"),
        json!(0.5),
        json!({"lo": 0}),
    ] {
        let r = s.search(&g, &json!({"filter": {"facen": {"data": good, "score": score}}}));
        assert_error_lenient(&r, 400, EITHER, Some("filter.facen.score"), None);
        assert_eq!(r.json()["error"]["param"], json!("filter.facen.score"), "score {score}");
    }
    let r = s.search(&g, &json!({"filter": {"facen": {"data": good, "score": [0.9, 0.1]}}}));
    assert_error(&r, 400, "BAD_PARAM", Some("filter.facen.score"), None);
}

#[test]
fn search_bad_bodies_and_unknown_gallery() {
    let s = shared();
    let g = s.new_gallery("search_bad");
    for body in ["not json", "{", "{\"limit\": }"] {
        let r = s.post(&format!("/v2/faces/search/{g}"), body);
        assert_error(&r, 400, "MALFORMED_REQUEST", None, None);
    }
    for body in ["[]", "5", "\"x\"", "{\"filter\": 5}", "{\"filter\": {\"id\": 5}}"] {
        let r = s.post(&format!("/v2/faces/search/{g}"), body);
        assert_error_lenient(&r, 400, EITHER, None, None);
    }
    for path in ["/v2/faces/search/no_such_gallery_for_search", "/v2/no_such_gallery_for_search/search"] {
        let r = s.post(path, "{}");
        assert_error(&r, 404, "GALLERY_NOT_FOUND", None, None);
    }
}

#[test]
fn facen_size_flag_changes_the_vector_length() {
    let s = Server::start(&["--facen-size", "4"]);
    s.create_gallery("small");
    let a = [1.0f32, 0.0, 0.0, 0.0];
    let b = [1.0f32, 1.0, 0.0, 0.0];
    let c = [0.0f32, 0.0, -2.0, 0.5];
    s.add_ok("small", &json!([face(1, &a, json!({})), face(2, &b, json!({})), face(3, &c, json!({}))]));
    // 128 floats are now the wrong length
    let r = s.add_faces("small", &json!([face_r(4, json!({}))]));
    assert_error(&r, 400, "BAD_PARAM", Some("facen"), Some(&json!(4)));
    assert_eq!(s.count("small"), 3);

    let res = s.search_ok("small", &json!({"filter": {"facen": {"data": facen(&b)}}}));
    let got: Vec<(u64, f64)> =
        res.iter().map(|f| (f["id"].as_u64().expect("id"), f["score"].as_f64().expect("score"))).collect();
    assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 1, 3]);
    for (id, score) in got {
        let v = [a, b, c][id as usize - 1];
        assert!((score - cosine(&b, &v)).abs() < 1e-4, "{id}: {score}");
    }
    assert_eq!(s.fetch("small", 3)["facen"], json!(facen(&c)));

    let r = s.search("small", &json!({"filter": {"facen": {"data": facen(&rand_vec(1, DIM))}}}));
    assert_error(&r, 400, "BAD_PARAM", Some("filter.facen.data"), None);
}
