//! Faces: add, delete and update, their validation, and the rule that a refused request
//! changes nothing.
//!
//! Stored faces are read back with a search on their id (`Server::fetch`), which returns the
//! whole face dict `{"id","facen","meta"}` with every schema field.

use serde_json::{json, Value};

use crate::common::{
    assert_error, assert_error_lenient, decode_facen, error_message, face, face_r, facen, full_meta, rand_vec, shared,
    vec_with, Server, DIM,
};

const EITHER: &[&str] = &["BAD_PARAM", "MALFORMED_REQUEST"];

// ---------------------------------------------------------------------------------------------
// add
// ---------------------------------------------------------------------------------------------

#[test]
fn add_then_read_back_the_whole_face() {
    let s = shared();
    let g = s.new_gallery("add_read");
    let v = rand_vec(1, DIM);
    let meta = json!({"cam_id": "223900", "person_name": "Mary Ostin"});
    s.add_ok(&g, &json!([face(10, &v, meta.clone())]));
    assert_eq!(s.count(&g), 1);
    assert_eq!(s.fetch(&g, 10), json!({"id": 10, "facen": facen(&v), "meta": full_meta(meta)}));
    // an empty batch adds nothing and is fine
    s.add_ok(&g, &json!([]));
    assert_eq!(s.count(&g), 1);
}

#[test]
fn facen_round_trip_is_byte_identical() {
    let s = shared();
    let g = s.new_gallery("roundtrip");
    let mut v = rand_vec(7, DIM);
    let specials = [
        -0.0f32,
        0.0,
        f32::from_bits(1),           // smallest subnormal
        -f32::from_bits(1),          // negative subnormal
        f32::MIN_POSITIVE / 4.0,     // subnormal
        f32::from_bits(0x007f_ffff), // largest subnormal
        f32::MIN_POSITIVE,
        f32::MAX,
        -f32::MAX,
        1e38,
        -3.0e38,
        123_456_790.0,
        f32::EPSILON,
        1.0 + f32::EPSILON,
    ];
    v[..specials.len()].copy_from_slice(&specials);
    s.add_ok(&g, &json!([face(1, &v, json!({}))]));

    let back = s.fetch(&g, 1);
    assert_eq!(back["facen"], json!(facen(&v)), "same base64 text");
    let decoded = decode_facen(back["facen"].as_str().expect("facen string"));
    let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    assert_eq!(bits(&decoded), bits(&v), "same bits, -0.0 and subnormals included");

    // the update echo returns the same text too
    let r = s.update_faces(&g, &json!([{"id": 1}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["facen"], json!(facen(&v)));
}

/// A facen may be sent as a JSON array of numbers (each taken as the nearest float32) in adds,
/// updates and searches; answers give it in base64.
#[test]
fn a_facen_given_as_an_array_of_numbers() {
    let s = shared();
    let g = s.new_gallery("array_facen");
    let v = rand_vec(11, DIM);
    s.add_ok(&g, &json!([{"id": 3, "facen": v, "meta": {"cam_id": "a"}}]));
    assert_eq!(s.fetch(&g, 3)["facen"], json!(facen(&v)));
    let r = s.search(&g, &json!({"limit": 1, "filter": {"facen": {"data": v}}}));
    assert_eq!(r.status, 200, "{}", r.body);
    let hit = &r.json()["results"][0];
    assert_eq!((hit["id"].clone(), hit["score"].as_f64().map(|x| x > 0.9999)), (json!(3), Some(true)), "{hit}");
    let w = rand_vec(12, DIM);
    let r = s.post_json(&format!("/v2/faces/update/{g}"), &json!([{"id": 3, "facen": w}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["facen"], json!(facen(&w)));
    let r = s.search(&g, &json!({"filter": {"facen": {"data": [0.5, 1.0]}}}));
    assert_error(&r, 400, "BAD_PARAM", Some("filter.facen.data"), None);
    assert!(error_message(&r).contains(&format!("2 numbers, expected {DIM}")), "{}", r.body);
}

/// `GET /v2/faces/get/{name}/{id}`: one face as stored, or the error naming what is missing.
#[test]
fn get_one_face_by_id() {
    let s = shared();
    let g = s.new_gallery("get_face");
    let v = rand_vec(21, DIM);
    let meta = json!({"cam_id": "223900", "person_id": 7});
    s.add_ok(&g, &json!([face(u64::MAX, &v, meta.clone()), face(5, &v, json!({}))]));
    let r = s.get(&format!("/v2/faces/get/{g}/{}", u64::MAX));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"id": u64::MAX, "facen": facen(&v), "meta": full_meta(meta)}));
    assert_eq!(r.json(), s.fetch(&g, u64::MAX), "the face a search by id gives");
    assert_error(&s.get(&format!("/v2/faces/get/{g}/6")), 404, "NOT_FOUND", Some("id"), Some(&json!(6)));
    let missing = format!("{g}_none");
    assert_error(&s.get(&format!("/v2/faces/get/{missing}/5")), 404, "GALLERY_NOT_FOUND", Some("name"), None);
    for bad in ["-1", "18446744073709551616", "1.5", "x"] {
        let r = s.get(&format!("/v2/faces/get/{g}/{bad}"));
        assert_error(&r, 400, "BAD_PARAM", Some("id"), Some(&json!(bad)));
    }
    assert_error(&s.get("/v2/faces/get/bad.name/5"), 400, "BAD_PARAM", Some("name"), None);
    let r = s.post_empty(&format!("/v2/faces/get/{g}/5"));
    assert_error(&r, 405, "MALFORMED_REQUEST", Some("method"), None);
    assert_eq!(r.header("allow"), Some("GET"), "{:?}", r.headers);
}

#[test]
fn facen_padding_is_optional_and_comes_back_padded() {
    let s = shared();
    let g = s.new_gallery("padding");
    let v = rand_vec(3, DIM);
    let padded = facen(&v);
    assert!(padded.ends_with('='), "512 bytes need one pad char");
    let unpadded = padded.trim_end_matches('=').to_string();
    s.add_ok(&g, &json!([{"id": 1, "facen": unpadded, "meta": {}}, {"id": 2, "facen": padded}]));
    assert_eq!(s.fetch(&g, 1)["facen"], json!(padded));
    assert_eq!(s.fetch(&g, 2)["facen"], json!(padded));
}

#[test]
fn meta_defaults_nulls_sets_and_types() {
    let s = shared();
    let g = s.new_gallery("meta");
    let max = u64::MAX;
    s.add_ok(
        &g,
        &json!([
            // no meta at all
            {"id": 1, "facen": facen(&rand_vec(1, DIM))},
            // empty meta
            face_r(2, json!({})),
            // nulls take the default
            face_r(3, json!({"cam_id": null, "person_id": null, "tags": null, "lists": null})),
            // every field set; sets de-duplicated and sorted
            face_r(4, json!({
                "cam_id": "Ünïcödé ÉCOLE straße",
                "person_name": "Mary Ostin",
                "person_id": max,
                "timestamp": 1_600_000_000u64,
                "photo_hash": "abc\"quote\\backslash",
                "m:timestamp": 1848,
                "m:cam_id": "a9f7a973-f07e-469d-a3bd-41ddd510b26f",
                "normalized_id": "1_b9pkrf00mjt6h1vmq1kg.png",
                "feat": "{\"score\":0.123}",
                "tags": ["b", "a", "b", "", "école"],
                "lists": [5, 1, 5, max, 0],
            })),
            // explicit defaults equal missing fields
            face_r(5, json!({"cam_id": "", "person_id": 0, "tags": [], "lists": []})),
        ]),
    );
    assert_eq!(s.count(&g), 5);
    for id in [1, 2, 3, 5] {
        assert_eq!(s.fetch(&g, id)["meta"], full_meta(json!({})), "face {id}");
    }
    assert_eq!(
        s.fetch(&g, 4)["meta"],
        json!({
            "cam_id": "Ünïcödé ÉCOLE straße",
            "person_name": "Mary Ostin",
            "person_id": max,
            "timestamp": 1_600_000_000u64,
            "photo_hash": "abc\"quote\\backslash",
            "m:timestamp": 1848,
            "m:cam_id": "a9f7a973-f07e-469d-a3bd-41ddd510b26f",
            "normalized_id": "1_b9pkrf00mjt6h1vmq1kg.png",
            "feat": "{\"score\":0.123}",
            "tags": ["", "a", "b", "école"],
            "lists": [0, 1, 5, max],
        })
    );
}

#[test]
fn ids_at_the_edges_of_u64() {
    let s = shared();
    let g = s.new_gallery("edge_ids");
    let ids: [u64; 6] =
        [0, 1, 9_223_372_036_854_775_807, 9_223_372_036_854_775_808, 9_223_372_036_854_776_000, u64::MAX];
    // sent as literal JSON text so no float conversion can happen on the client side
    let f = facen(&rand_vec(9, DIM));
    let body = format!(
        "[{}]",
        ids.iter().map(|id| format!(r#"{{"id": {id}, "facen": "{f}"}}"#)).collect::<Vec<_>>().join(",")
    );
    let r = s.post(&format!("/v2/faces/add/{g}"), &body);
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(s.count(&g), 6);
    for id in ids {
        assert_eq!(s.fetch(&g, id)["id"], json!(id));
    }
    let r = s.search(&g, &json!({}));
    assert!(r.body.contains("18446744073709551615"), "{}", r.body);
    assert!(r.body.contains("9223372036854776000"), "{}", r.body);
    assert!(r.body.contains("9223372036854775807"), "{}", r.body);
    assert_eq!(s.search_ids(&g, &json!({})), ids.to_vec());
}

#[test]
fn bad_ids_are_refused_and_change_nothing() {
    let s = shared();
    let g = s.new_gallery("bad_ids");
    let f = facen(&rand_vec(11, DIM));
    for bad in ["-1", "18446744073709551616", "1.5", "\"5\"", "null", "[1]"] {
        let body = format!(r#"[{{"id": 7, "facen": "{f}"}}, {{"id": {bad}, "facen": "{f}"}}]"#);
        let r = s.post(&format!("/v2/faces/add/{g}"), &body);
        assert_error_lenient(&r, 400, EITHER, Some("id"), None);
        assert_eq!(s.count(&g), 0, "id {bad}");
    }
    // no id at all
    let body = format!(r#"[{{"id": 7, "facen": "{f}"}}, {{"facen": "{f}"}}]"#);
    let r = s.post(&format!("/v2/faces/add/{g}"), &body);
    assert_error_lenient(&r, 400, EITHER, Some("id"), None);
    assert_eq!(s.count(&g), 0);
    assert_eq!(s.search_ids(&g, &json!({})), Vec::<u64>::new());
}

/// What the server must answer for one bad face.
struct Expect {
    status: u16,
    kind: &'static str,
    param: &'static str,
    value: Option<Value>,
}

fn bad400(param: &'static str, value: Option<Value>) -> Expect {
    Expect { status: 400, kind: "BAD_PARAM", param, value }
}

#[test]
fn a_bad_face_in_a_batch_adds_nothing() {
    let s = shared();
    let g = s.new_gallery("bad_batch");
    let original = face_r(1, json!({"cam_id": "kept", "person_id": 42}));
    s.add_ok(&g, &json!([original]));
    let before = s.fetch(&g, 1);

    let bad_id: u64 = 9_223_372_036_854_776_000;
    let good = |id: u64| face_r(id, json!({"cam_id": "good"}));
    let mut nan = rand_vec(2, DIM);
    nan[17] = f32::NAN;
    let mut inf = rand_vec(2, DIM);
    inf[0] = f32::INFINITY;
    let mut ninf = rand_vec(2, DIM);
    ninf[127] = f32::NEG_INFINITY;
    let ok_facen = facen(&rand_vec(5, DIM));

    let facen_err = || bad400("facen", Some(json!(bad_id)));
    let with_facen = |f: &str| json!({"id": bad_id, "facen": f});
    let with_meta = |m: Value| json!({"id": bad_id, "facen": ok_facen, "meta": m});

    let cases: Vec<(&str, Value, Expect)> = vec![
        ("bad base64", with_facen("@@@@not*base64!!"), facen_err()),
        ("base64 with a space inside", with_facen(&format!("{} {}", &ok_facen[..8], &ok_facen[8..])), facen_err()),
        ("127 floats", with_facen(&facen(&rand_vec(2, DIM - 1))), facen_err()),
        ("129 floats", with_facen(&facen(&rand_vec(2, DIM + 1))), facen_err()),
        ("3 bytes", with_facen("AAAA"), facen_err()),
        ("empty facen", with_facen(""), facen_err()),
        ("NaN", with_facen(&facen(&nan)), facen_err()),
        ("+inf", with_facen(&facen(&inf)), facen_err()),
        ("-inf", with_facen(&facen(&ninf)), facen_err()),
        ("array of 127 numbers", json!({"id": bad_id, "facen": rand_vec(2, DIM - 1)}), facen_err()),
        ("array with a string", json!({"id": bad_id, "facen": vec!["0.5"; DIM]}), facen_err()),
        ("array with 1e39, past float32", json!({"id": bad_id, "facen": vec![1e39; DIM]}), facen_err()),
        ("facen an object", json!({"id": bad_id, "facen": {"data": ok_facen}}), facen_err()),
        ("facen missing", json!({"id": bad_id, "meta": {}}), bad400("facen", None)),
        ("facen null", json!({"id": bad_id, "facen": null}), bad400("facen", None)),
        ("unknown meta key", with_meta(json!({"cam_id": "x", "nope": 1})), bad400("meta.nope", None)),
        ("unsigned <- string", with_meta(json!({"person_id": "abc"})), bad400("meta.person_id", Some(json!("abc")))),
        (
            "unsigned <- digits string",
            with_meta(json!({"person_id": "12"})),
            bad400("meta.person_id", Some(json!("12"))),
        ),
        ("unsigned <- negative", with_meta(json!({"person_id": -1})), bad400("meta.person_id", Some(json!(-1)))),
        ("unsigned <- fraction", with_meta(json!({"timestamp": 1.5})), bad400("meta.timestamp", Some(json!(1.5)))),
        ("unsigned <- bool", with_meta(json!({"m:timestamp": true})), bad400("meta.m:timestamp", Some(json!(true)))),
        ("string <- number", with_meta(json!({"cam_id": 223900})), bad400("meta.cam_id", Some(json!(223900)))),
        ("string <- array", with_meta(json!({"person_name": ["a"]})), bad400("meta.person_name", Some(json!(["a"])))),
        ("set[string] <- string", with_meta(json!({"tags": "a"})), bad400("meta.tags", Some(json!("a")))),
        (
            "set[string] <- number element",
            with_meta(json!({"tags": ["a", 1]})),
            bad400("meta.tags", Some(json!(["a", 1]))),
        ),
        ("set[unsigned] <- number", with_meta(json!({"lists": 5})), bad400("meta.lists", Some(json!(5)))),
        (
            "set[unsigned] <- negative element",
            with_meta(json!({"lists": [1, -1]})),
            bad400("meta.lists", Some(json!([1, -1]))),
        ),
        (
            "set[unsigned] <- string element",
            with_meta(json!({"lists": ["1"]})),
            bad400("meta.lists", Some(json!(["1"]))),
        ),
        (
            "id already stored",
            json!({"id": 1, "facen": ok_facen}),
            Expect { status: 409, kind: "CONFLICT", param: "id", value: Some(json!(1)) },
        ),
    ];

    for (what, bad, expect) in cases {
        for position in 0..3 {
            let mut batch = vec![good(501), good(502)];
            batch.insert(position, bad.clone());
            let r = s.add_faces(&g, &json!(batch));
            assert_error(&r, expect.status, expect.kind, Some(expect.param), expect.value.as_ref());
            if expect.param == "facen" && expect.value.is_some() {
                assert!(
                    error_message(&r).contains(&bad_id.to_string()),
                    "{what}: the message names the face id: {}",
                    r.body
                );
            }
            assert_eq!(s.count(&g), 1, "{what} at {position}: count unchanged");
            assert_eq!(
                s.filter_ids(&g, json!({"id": {"set": [501, 502, bad_id]}})),
                Vec::<u64>::new(),
                "{what} at {position}: the good faces were not added"
            );
            assert_eq!(s.fetch(&g, 1), before, "{what}: face 1 unchanged");
        }
    }

    // the same id twice in one batch
    for batch in [json!([good(501), good(777), good(502), good(777)]), json!([good(777), good(777)])] {
        let r = s.add_faces(&g, &batch);
        assert_error(&r, 409, "CONFLICT", Some("id"), Some(&json!(777)));
        assert_eq!(s.count(&g), 1);
        assert_eq!(s.filter_ids(&g, json!({"id": {"set": [501, 502, 777]}})), Vec::<u64>::new());
    }

    // and after all that, the good faces go in
    s.add_ok(&g, &json!([good(501), good(502)]));
    assert_eq!(s.count(&g), 3);
}

#[test]
fn add_body_that_is_not_a_face_array() {
    let s = shared();
    let g = s.new_gallery("malformed_add");
    for body in ["", "not json", "[{", "{}", "{\"id\": 1}", "5", "[5]", "[[1]]", "[\"x\"]"] {
        let r = s.post(&format!("/v2/faces/add/{g}"), body);
        assert_error_lenient(&r, 400, EITHER, None, None);
    }
    // meta that is not an object
    let f = facen(&rand_vec(1, DIM));
    let r = s.add_faces(&g, &json!([{"id": 1, "facen": f, "meta": 5}]));
    assert_error_lenient(&r, 400, EITHER, None, None);
    let r = s.add_faces(&g, &json!([{"id": 1, "facen": f, "meta": ["cam_id"]}]));
    assert_error_lenient(&r, 400, EITHER, None, None);
    assert_eq!(s.count(&g), 0);
}

#[test]
fn add_to_unknown_gallery_is_404() {
    let s = shared();
    let r = s.add_faces("no_such_gallery_for_add", &json!([face_r(1, json!({}))]));
    assert_error(&r, 404, "GALLERY_NOT_FOUND", None, None);
    let r = s.get("/v2/galleries/get/no_such_gallery_for_add");
    assert_eq!(r.status, 404, "add did not create the gallery");
}

// ---------------------------------------------------------------------------------------------
// delete
// ---------------------------------------------------------------------------------------------

#[test]
fn delete_faces_with_duplicates_and_missing_ids() {
    let s = shared();
    let g = s.new_gallery("delete");
    let ids = [1u64, 2, 3, 4, 5, u64::MAX];
    s.add_ok(&g, &json!(ids.iter().map(|&i| face_r(i, json!({}))).collect::<Vec<_>>()));

    // duplicates are fine and deleted once
    let r = s.delete_faces(&g, &json!([2, 4, 2]));
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(s.count(&g), 4);
    assert_eq!(s.search_ids(&g, &json!({})), vec![1, 3, 5, u64::MAX]);

    // one missing id: 404 NOT_FOUND naming it, and nothing is deleted
    for (body, missing) in [
        (json!([1, 99]), 99u64),
        (json!([99, 1]), 99),
        (json!([3, 2]), 2), // 2 is gone already
        (json!([5, 5, 1234567890123u64]), 1234567890123),
    ] {
        let r = s.delete_faces(&g, &body);
        assert_error(&r, 404, "NOT_FOUND", Some("id"), Some(&json!(missing)));
        assert_eq!(s.count(&g), 4, "{body}");
        assert_eq!(s.search_ids(&g, &json!({})), vec![1, 3, 5, u64::MAX], "{body}");
    }

    // the largest id
    let r = s.post(&format!("/v2/faces/delete/{g}"), "[18446744073709551615]");
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(s.search_ids(&g, &json!({})), vec![1, 3, 5]);

    // an empty list deletes nothing
    let r = s.delete_faces(&g, &json!([]));
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(s.count(&g), 3);

    // a deleted id can be added again
    s.add_ok(&g, &json!([face_r(2, json!({}))]));
    assert_eq!(s.search_ids(&g, &json!({})), vec![1, 2, 3, 5]);
}

#[test]
fn delete_bad_bodies_and_unknown_gallery() {
    let s = shared();
    let g = s.new_gallery("delete_bad");
    s.add_ok(&g, &json!([face_r(1, json!({}))]));
    for body in ["", "nope", "{}", "1", "[\"1\"]", "[-1]", "[1.5]", "[{\"id\":1}]"] {
        let r = s.post(&format!("/v2/faces/delete/{g}"), body);
        assert_error_lenient(&r, 400, EITHER, None, None);
        assert_eq!(s.count(&g), 1, "{body:?}");
    }
    let r = s.delete_faces("no_such_gallery_for_delete", &json!([1]));
    assert_error(&r, 404, "GALLERY_NOT_FOUND", None, None);
}

// ---------------------------------------------------------------------------------------------
// update
// ---------------------------------------------------------------------------------------------

/// A gallery with faces 7 and 9 (and 8, which updates never touch).
fn update_fixture(s: &Server, prefix: &str) -> (String, Vec<f32>, Vec<f32>) {
    let g = s.new_gallery(prefix);
    let v7 = rand_vec(70, DIM);
    let v9 = rand_vec(90, DIM);
    s.add_ok(
        &g,
        &json!([
            face(7, &v7, json!({"cam_id": "c7", "person_id": 5, "tags": ["x"], "m:timestamp": 1})),
            face_r(8, json!({"cam_id": "c8"})),
            face(9, &v9, json!({"cam_id": "c9", "person_name": "Nine", "lists": [3, 1]})),
        ]),
    );
    (g, v7, v9)
}

#[test]
fn update_one_face_returns_its_whole_dict() {
    let s = shared();
    let (g, v7, _) = update_fixture(s, "upd_one");
    let r = s.update_faces(&g, &json!([{"id": 7, "meta": {"person_id": 6, "cam_id": null, "tags": ["z", "y", "z"]}}]));
    assert_eq!(r.status, 200, "{}", r.body);
    let expected = json!({
        "id": 7,
        "facen": facen(&v7),
        "meta": full_meta(json!({"cam_id": "c7", "person_id": 6, "tags": ["y", "z"], "m:timestamp": 1})),
    });
    assert_eq!(r.json(), expected);
    // and the stored face is what the update said
    assert_eq!(s.fetch(&g, 7), expected);
    assert_eq!(s.filter_ids(&g, json!({"meta": {"person_id": {"set": [6]}}})), vec![7]);
    assert_eq!(s.filter_ids(&g, json!({"meta": {"person_id": {"set": [5]}}})), Vec::<u64>::new());
    assert_eq!(s.count(&g), 3);
}

#[test]
fn update_null_and_absent_mean_unchanged() {
    let s = shared();
    let (g, v7, _) = update_fixture(s, "upd_null");
    let before = s.fetch(&g, 7);
    for body in [
        json!([{"id": 7}]),
        json!([{"id": 7, "facen": null}]),
        json!([{"id": 7, "meta": null}]),
        json!([{"id": 7, "meta": {}}]),
        json!([{"id": 7, "facen": null, "meta": {"cam_id": null, "person_id": null, "tags": null, "lists": null}}]),
    ] {
        let r = s.update_faces(&g, &body);
        assert_eq!(r.status, 200, "{body}: {}", r.body);
        assert_eq!(r.json(), before, "{body}");
        assert_eq!(s.fetch(&g, 7), before, "{body}");
    }
    assert_eq!(before["facen"], json!(facen(&v7)));
}

#[test]
fn update_facen_replaces_the_vector() {
    let s = shared();
    let (g, v7, _) = update_fixture(s, "upd_facen");
    let new_v = rand_vec(700, DIM);
    let r = s.update_faces(&g, &json!([{"id": 7, "facen": facen(&new_v)}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["facen"], json!(facen(&new_v)));
    assert_eq!(r.json()["meta"], full_meta(json!({"cam_id": "c7", "person_id": 5, "tags": ["x"], "m:timestamp": 1})));
    // search sees the new vector, not the old one
    let found = |v: &[f32]| s.search_ids(&g, &json!({"filter": {"facen": {"data": facen(v), "score": [0.99, 1]}}}));
    assert_eq!(found(&new_v), vec![7]);
    assert_eq!(found(&v7), Vec::<u64>::new());
}

#[test]
fn update_several_faces_returns_results_in_request_order() {
    let s = shared();
    let (g, v7, v9) = update_fixture(s, "upd_many");
    let r = s.update_faces(
        &g,
        &json!([
            {"id": 9, "meta": {"person_name": "Nine again", "lists": [2, 2]}},
            {"id": 7, "facen": null, "meta": {"m:timestamp": 1848}},
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"results": [
            {"id": 9, "facen": facen(&v9), "meta": full_meta(json!({"cam_id": "c9", "person_name": "Nine again", "lists": [2]}))},
            {"id": 7, "facen": facen(&v7), "meta": full_meta(json!({"cam_id": "c7", "person_id": 5, "tags": ["x"], "m:timestamp": 1848}))},
        ]})
    );
    // an empty array
    let r = s.update_faces(&g, &json!([]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"results": []}));
}

#[test]
fn a_refused_update_changes_nothing() {
    let s = shared();
    let (g, _, _) = update_fixture(s, "upd_refused");
    let before: Vec<Value> = s.search_ok(&g, &json!({}));
    let ok_change = json!({"id": 7, "meta": {"cam_id": "CHANGED", "person_id": 1000}});
    let mut nan = rand_vec(1, DIM);
    nan[3] = f32::NAN;

    // a missing id: 404 NOT_FOUND
    for body in [json!([ok_change, {"id": 12345, "meta": {"cam_id": "x"}}]), json!([{"id": 12345}, ok_change])] {
        let r = s.update_faces(&g, &body);
        assert_error_lenient(&r, 404, &["NOT_FOUND"], Some("id"), Some(&json!(12345)));
        assert_eq!(s.search_ok(&g, &json!({})), before, "{body}");
    }
    // a bad face: 400 and the same validation as add
    let cases: Vec<(Value, &str, Option<Value>)> = vec![
        (json!({"id": 9, "facen": "***"}), "facen", Some(json!(9))),
        (json!({"id": 9, "facen": facen(&rand_vec(1, 3))}), "facen", Some(json!(9))),
        (json!({"id": 9, "facen": facen(&nan)}), "facen", Some(json!(9))),
        (json!({"id": 9, "meta": {"nope": "x"}}), "meta.nope", None),
        (json!({"id": 9, "meta": {"person_id": "x"}}), "meta.person_id", Some(json!("x"))),
        (json!({"id": 9, "meta": {"tags": [1]}}), "meta.tags", Some(json!([1]))),
        (json!({"id": 9, "meta": {"lists": [-5]}}), "meta.lists", Some(json!([-5]))),
    ];
    for (bad, param, value) in cases {
        for body in [json!([ok_change, bad]), json!([bad, ok_change])] {
            let r = s.update_faces(&g, &body);
            assert_error(&r, 400, "BAD_PARAM", Some(param), value.as_ref());
            assert_eq!(s.search_ok(&g, &json!({})), before, "{body}");
        }
    }
    // the same id twice
    let r =
        s.update_faces(&g, &json!([ok_change, {"id": 8, "meta": {"cam_id": "y"}}, {"id": 7, "meta": {"cam_id": "z"}}]));
    assert_error_lenient(&r, 400, &["BAD_PARAM"], Some("id"), Some(&json!(7)));
    assert_eq!(s.search_ok(&g, &json!({})), before);

    // not a face array
    for body in ["", "x", "{}", "[1]", "[{\"meta\": {}}]"] {
        let r = s.post(&format!("/v2/faces/update/{g}"), body);
        assert_error_lenient(&r, 400, EITHER, None, None);
    }
    assert_eq!(s.search_ok(&g, &json!({})), before);

    // unknown gallery
    let r = s.update_faces("no_such_gallery_for_update", &json!([{"id": 1}]));
    assert_error(&r, 404, "GALLERY_NOT_FOUND", None, None);
}

#[test]
fn update_result_has_no_score_and_every_field() {
    let s = shared();
    let g = s.new_gallery("upd_shape");
    let v = vec_with(&[1.0, 2.0, 3.0]);
    s.add_ok(&g, &json!([face(u64::MAX, &v, json!({}))]));
    let r = s.update_faces(&g, &json!([{"id": u64::MAX, "meta": {"feat": "f"}}]));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let obj = v.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, vec!["facen", "id", "meta"]);
    assert_eq!(v["id"], json!(u64::MAX));
    assert_eq!(v["meta"], full_meta(json!({"feat": "f"})));
}
