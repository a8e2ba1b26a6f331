//! Filters: every operator on every field type (id, unsigned, string, set[string],
//! set[unsigned]), their combination with AND, and the 400s for operators a type does not have,
//! unknown operators and fields, wrong argument types, bad `like` patterns and empty ranges.
//!
//! All tests search the same seven faces (each test in a gallery of its own):
//!
//! | id | cam_id | person_name | person_id | tags | lists |
//! |---|---|---|---|---|---|
//! | 1 | école | Straße | 5 | a, b | 1, 5 |
//! | 2 | ÉCOLE | STRASSE | 10 | b, c | 10 |
//! | 3 | ecole | strasse | 777 | | |
//! | 4 | abc | Ünïcödé | u64::MAX | abc, xyz | 0, u64::MAX |
//! | 5 | (no meta: '' / 0 / []) | | | | |
//! | u64::MAX | xabcx | straße | 2^63 | École | 3, 7 (sent as 7, 7, 3) |
//! | B = 9223372036854776000 | abcd | ünïcödé | 777 | a | 5, 100; m:timestamp 1848, m:cam_id a9f7 |

use serde_json::{json, Value};

use crate::common::{assert_error, face_r, facen, rand_vec, shared, Server, DIM};

const MAX: u64 = u64::MAX;
const B: u64 = 9_223_372_036_854_776_000;
const H: u64 = 1 << 63;
const ALL: [u64; 7] = [1, 2, 3, 4, 5, B, MAX];

fn fixture(s: &Server, prefix: &str) -> String {
    let g = s.new_gallery(prefix);
    s.add_ok(
        &g,
        &json!([
            face_r(1, json!({"cam_id": "école", "person_name": "Straße", "person_id": 5, "tags": ["a", "b"], "lists": [1, 5]})),
            face_r(2, json!({"cam_id": "ÉCOLE", "person_name": "STRASSE", "person_id": 10, "tags": ["b", "c"], "lists": [10]})),
            face_r(3, json!({"cam_id": "ecole", "person_name": "strasse", "person_id": 777, "tags": [], "lists": []})),
            face_r(4, json!({"cam_id": "abc", "person_name": "Ünïcödé", "person_id": MAX, "tags": ["xyz", "abc"], "lists": [MAX, 0]})),
            {"id": 5, "facen": facen(&rand_vec(5, DIM))},
            face_r(MAX, json!({"cam_id": "xabcx", "person_name": "straße", "person_id": H, "tags": ["École"], "lists": [7, 7, 3]})),
            face_r(B, json!({"cam_id": "abcd", "person_name": "ünïcödé", "person_id": 777, "tags": ["a"], "lists": [5, 100],
                             "m:timestamp": 1848, "m:cam_id": "a9f7"})),
        ]),
    );
    g
}

/// Runs `(filter, expected ids)` cases against gallery `g`.
fn check(s: &Server, g: &str, cases: Vec<(Value, Vec<u64>)>) {
    for (filter, want) in cases {
        assert_eq!(s.filter_ids(g, filter.clone()), want, "filter {filter}");
    }
}

fn meta(field: &str, ops: Value) -> Value {
    json!({"meta": {field: ops}})
}

#[test]
fn id_operators() {
    let s = shared();
    let g = fixture(s, "f_id");
    let id = |ops: Value| json!({ "id": ops });
    check(
        s,
        &g,
        vec![
            (id(json!({"range": [2, 4]})), vec![2, 3, 4]),
            (id(json!({"range": [4, B]})), vec![4, 5, B]),
            (id(json!({"range": [B, MAX]})), vec![B, MAX]),
            (id(json!({"range": [H, B]})), vec![B]),
            (id(json!({"range": [0, MAX]})), ALL.to_vec()),
            (id(json!({"range": [6, 6]})), vec![]),
            (id(json!({"range": [3, 3]})), vec![3]),
            (json!({"id": {"range": [922_337_203_685_400_000u64, 9_223_372_036_854_999_000u64]}}), vec![B]),
            (id(json!({"set": [3, 1, MAX, 99]})), vec![1, 3, MAX]),
            (id(json!({"set": [B]})), vec![B]),
            (id(json!({"set": [B - 1, B + 1]})), vec![]),
            (id(json!({"set": []})), vec![]),
            (id(json!({"subset": [3]})), vec![3]),
            (id(json!({"subset": [3, 3]})), vec![3]),
            (id(json!({"subset": [3, 4]})), vec![]),
            (id(json!({"subset": []})), ALL.to_vec()),
            (id(json!({"range": [1, 4], "set": [4, 5, 1]})), vec![1, 4]),
        ],
    );
    // the id range of the seed's search example, sent as literal text
    let r = s.post(
        &format!("/v2/faces/search/{g}"),
        r#"{"filter": {"id": {"range": [922337203685400000, 9223372036854999000]}}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("9223372036854776000"), "{}", r.body);
}

#[test]
fn unsigned_operators() {
    let s = shared();
    let g = fixture(s, "f_unsigned");
    let pid = |ops: Value| meta("person_id", ops);
    check(
        s,
        &g,
        vec![
            (pid(json!({"range": [5, 777]})), vec![1, 2, 3, B]),
            (pid(json!({"range": [444, 999]})), vec![3, B]),
            (pid(json!({"range": [H, MAX]})), vec![4, MAX]),
            (pid(json!({"range": [0, 0]})), vec![5]),
            (pid(json!({"range": [MAX, MAX]})), vec![4]),
            (pid(json!({"set": [777, 0]})), vec![3, 5, B]),
            (pid(json!({"set": [H]})), vec![MAX]),
            (pid(json!({"set": []})), vec![]),
            (pid(json!({"subset": [777]})), vec![3, B]),
            (pid(json!({"subset": [777, 5]})), vec![]),
            (pid(json!({"subset": []})), ALL.to_vec()),
            (pid(json!({"range": [0, 800], "set": [777, 5]})), vec![1, 3, B]),
            (meta("m:timestamp", json!({"range": [1000, 2000]})), vec![B]),
            (meta("m:timestamp", json!({"set": [0]})), vec![1, 2, 3, 4, 5, MAX]),
            (meta("timestamp", json!({"subset": [0]})), ALL.to_vec()),
        ],
    );
}

#[test]
fn string_operators() {
    let s = shared();
    let g = fixture(s, "f_string");
    let cam = |ops: Value| meta("cam_id", ops);
    check(
        s,
        &g,
        vec![
            (cam(json!({"set": ["école", "abc"]})), vec![1, 4]),
            (cam(json!({"set": [""]})), vec![5]),
            (cam(json!({"set": ["ABC", "Ecole"]})), vec![]),
            (cam(json!({"set": []})), vec![]),
            (cam(json!({"subset": ["abc"]})), vec![4]),
            (cam(json!({"subset": ["abc", "abc"]})), vec![4]),
            (cam(json!({"subset": ["abc", "abcd"]})), vec![]),
            (cam(json!({"subset": []})), ALL.to_vec()),
            (cam(json!({"like": "abc%"})), vec![4, B]),
            (cam(json!({"like": "%abc"})), vec![4]),
            (cam(json!({"like": "%abc%"})), vec![4, B, MAX]),
            (cam(json!({"like": "abc"})), vec![4]),
            (cam(json!({"like": "ab"})), vec![]),
            (cam(json!({"like": ""})), vec![5]),
            (cam(json!({"like": "école"})), vec![1]),
            (cam(json!({"like": "%COLE"})), vec![2]),
            (cam(json!({"like": "%cole"})), vec![1, 3]),
            (cam(json!({"like": "é%"})), vec![1]),
            (cam(json!({"like": "%c%"})), vec![1, 3, 4, B, MAX]),
            (cam(json!({"ilike": "ABC%"})), vec![4, B]),
            (cam(json!({"ilike": "%ABC"})), vec![4]),
            (cam(json!({"ilike": "%BC%"})), vec![4, B, MAX]),
            (cam(json!({"like": "%c%", "set": ["abc", "ecole", "abcd"]})), vec![3, 4, B]),
            (meta("m:cam_id", json!({"like": "a9%"})), vec![B]),
            (meta("photo_hash", json!({"set": [""]})), ALL.to_vec()),
        ],
    );
}

#[test]
fn ilike_is_unicode_case_insensitive() {
    let s = shared();
    let g = fixture(s, "f_ilike");
    let cam = |ops: Value| meta("cam_id", ops);
    let name = |ops: Value| meta("person_name", ops);
    check(
        s,
        &g,
        vec![
            // "ÉCOLE".to_lowercase() == "école"; "ecole" has no accent
            (cam(json!({"ilike": "ÉCOLE"})), vec![1, 2]),
            (cam(json!({"ilike": "école"})), vec![1, 2]),
            (cam(json!({"ilike": "%COLE"})), vec![1, 2, 3]),
            (cam(json!({"ilike": "ÉC%"})), vec![1, 2]),
            (cam(json!({"ilike": "%CO%"})), vec![1, 2, 3]),
            (cam(json!({"like": "ÉCOLE"})), vec![2]),
            // ß lower-cases to itself, not to "ss"; ẞ (U+1E9E) lower-cases to ß
            (name(json!({"ilike": "straße"})), vec![1, MAX]),
            (name(json!({"ilike": "STRAẞE"})), vec![1, MAX]),
            (name(json!({"ilike": "STRASSE"})), vec![2, 3]),
            (name(json!({"ilike": "%ße"})), vec![1, MAX]),
            (name(json!({"like": "Straße"})), vec![1]),
            (name(json!({"like": "straße"})), vec![MAX]),
            (name(json!({"ilike": "ÜNÏCÖDÉ"})), vec![4, B]),
            (name(json!({"ilike": "%ÖDÉ"})), vec![4, B]),
            (name(json!({"like": "Ünï%"})), vec![4]),
            (name(json!({"like": "%ödé"})), vec![4, B]),
        ],
    );
}

#[test]
fn set_of_strings_operators() {
    let s = shared();
    let g = fixture(s, "f_set_str");
    let tags = |ops: Value| meta("tags", ops);
    check(
        s,
        &g,
        vec![
            // set: shares an element
            (tags(json!({"set": ["b"]})), vec![1, 2]),
            (tags(json!({"set": ["c", "xyz"]})), vec![2, 4]),
            (tags(json!({"set": ["nope"]})), vec![]),
            (tags(json!({"set": []})), vec![]),
            // subset: holds all
            (tags(json!({"subset": ["a", "b"]})), vec![1]),
            (tags(json!({"subset": ["a"]})), vec![1, B]),
            (tags(json!({"subset": ["b", "a", "b"]})), vec![1]),
            (tags(json!({"subset": ["a", "c"]})), vec![]),
            (tags(json!({"subset": []})), ALL.to_vec()),
            // like / ilike: any element matches
            (tags(json!({"like": "a%"})), vec![1, 4, B]),
            (tags(json!({"like": "%c"})), vec![2, 4]),
            (tags(json!({"like": "%y%"})), vec![4]),
            (tags(json!({"like": "b"})), vec![1, 2]),
            (tags(json!({"like": "école"})), vec![]),
            (tags(json!({"ilike": "école"})), vec![MAX]),
            (tags(json!({"ilike": "ÉCO%"})), vec![MAX]),
            (tags(json!({"ilike": "B"})), vec![1, 2]),
            (tags(json!({"like": "B"})), vec![]),
            (tags(json!({"like": "a%", "subset": ["a"]})), vec![1, B]),
        ],
    );
}

#[test]
fn set_of_unsigned_operators() {
    let s = shared();
    let g = fixture(s, "f_set_uns");
    let lists = |ops: Value| meta("lists", ops);
    check(
        s,
        &g,
        vec![
            // range: any element in range
            (lists(json!({"range": [4, 6]})), vec![1, B]),
            (lists(json!({"range": [0, 0]})), vec![4]),
            (lists(json!({"range": [8, 99]})), vec![2]),
            (lists(json!({"range": [MAX, MAX]})), vec![4]),
            (lists(json!({"range": [0, MAX]})), vec![1, 2, 4, B, MAX]),
            (lists(json!({"range": [101, H]})), vec![]),
            // set: shares an element
            (lists(json!({"set": [7, 10]})), vec![2, MAX]),
            (lists(json!({"set": [0]})), vec![4]),
            (lists(json!({"set": []})), vec![]),
            // subset: holds all
            (lists(json!({"subset": [3, 7]})), vec![MAX]),
            (lists(json!({"subset": [5]})), vec![1, B]),
            (lists(json!({"subset": [5, 100]})), vec![B]),
            (lists(json!({"subset": [5, 7]})), vec![]),
            (lists(json!({"subset": []})), ALL.to_vec()),
            (lists(json!({"range": [1, 6], "subset": [100]})), vec![B]),
        ],
    );
    // stored de-duplicated and sorted
    assert_eq!(s.fetch(&g, MAX)["meta"]["lists"], json!([3, 7]));
    assert_eq!(s.fetch(&g, 4)["meta"]["lists"], json!([0, MAX]));
    assert_eq!(s.fetch(&g, 4)["meta"]["tags"], json!(["abc", "xyz"]));
}

#[test]
fn fields_and_operators_combine_with_and() {
    let s = shared();
    let g = fixture(s, "f_and");
    check(
        s,
        &g,
        vec![
            (
                json!({"id": {"range": [1, 5]}, "meta": {"person_id": {"range": [5, 777]}, "cam_id": {"ilike": "%cole"}}}),
                vec![1, 2, 3],
            ),
            (
                json!({"id": {"range": [1, 5]}, "meta": {"person_id": {"range": [5, 777]}, "cam_id": {"ilike": "%cole"}, "tags": {"set": ["b"]}}}),
                vec![1, 2],
            ),
            (
                json!({"id": {"range": [1, 5]}, "meta": {"person_id": {"range": [5, 777]}, "cam_id": {"ilike": "%cole"}, "tags": {"set": ["b"]}, "lists": {"subset": [10]}}}),
                vec![2],
            ),
            (json!({"id": {"set": [1, 2, 3]}, "meta": {"lists": {"set": [100]}}}), vec![]),
            (json!({"id": {"range": [B, MAX], "subset": [B]}, "meta": {"person_name": {"ilike": "ü%"}}}), vec![B]),
            (json!({"meta": {"person_id": {"set": [777]}, "cam_id": {"set": ["12767", "8632", "abcd"]}}}), vec![B]),
        ],
    );
    // meta filters AND a facen filter, with sort and limit
    let all = s.search_ok(&g, &json!({}));
    let q = all.iter().find(|f| f["id"] == json!(3)).expect("face 3")["facen"].clone();
    let body = json!({"filter": {"facen": {"data": q, "score": [0.99, 1]}, "meta": {"person_id": {"set": [777]}}}});
    assert_eq!(s.search_ids(&g, &body), vec![3]);
    let body = json!({"filter": {"facen": {"data": q}, "meta": {"person_id": {"set": [777]}}}, "sort": "-id"});
    assert_eq!(s.search_ids(&g, &body), vec![B, 3]);
    let body = json!({"filter": {"facen": {"data": q}, "meta": {"person_id": {"set": [777]}}}, "limit": 1});
    assert_eq!(s.search_ids(&g, &body), vec![3]);
}

#[test]
fn bad_filters_are_400_naming_the_param() {
    let s = shared();
    let g = fixture(s, "f_errors");
    let cases: Vec<(Value, &str)> = vec![
        // operators a type does not have
        (json!({"id": {"like": "1%"}}), "filter.id.like"),
        (json!({"id": {"ilike": "1"}}), "filter.id.ilike"),
        (meta("person_id", json!({"like": "5"})), "filter.meta.person_id.like"),
        (meta("person_id", json!({"ilike": "5"})), "filter.meta.person_id.ilike"),
        (meta("cam_id", json!({"range": ["a", "b"]})), "filter.meta.cam_id.range"),
        (meta("cam_id", json!({"range": [1, 2]})), "filter.meta.cam_id.range"),
        (meta("tags", json!({"range": [1, 2]})), "filter.meta.tags.range"),
        (meta("lists", json!({"like": "1"})), "filter.meta.lists.like"),
        (meta("lists", json!({"ilike": "1%"})), "filter.meta.lists.ilike"),
        // unknown operators and fields
        (json!({"id": {"between": [1, 2]}}), "filter.id.between"),
        (meta("cam_id", json!({"between": ["a", "b"]})), "filter.meta.cam_id.between"),
        (meta("person_id", json!({"gte": 5})), "filter.meta.person_id.gte"),
        (meta("nope", json!({"set": ["x"]})), "filter.meta.nope"),
        (meta("m:nope", json!({"range": [1, 2]})), "filter.meta.m:nope"),
        // wrong argument types
        (json!({"id": {"set": ["1"]}}), "filter.id.set"),
        (json!({"id": {"set": 5}}), "filter.id.set"),
        (json!({"id": {"subset": [-1]}}), "filter.id.subset"),
        (json!({"id": {"range": [1]}}), "filter.id.range"),
        (json!({"id": {"range": [1, 2, 3]}}), "filter.id.range"),
        (json!({"id": {"range": ["1", "2"]}}), "filter.id.range"),
        (json!({"id": {"range": [1.5, 2]}}), "filter.id.range"),
        (meta("person_id", json!({"set": ["a"]})), "filter.meta.person_id.set"),
        (meta("person_id", json!({"range": [1.5, 3]})), "filter.meta.person_id.range"),
        (meta("person_id", json!({"subset": "5"})), "filter.meta.person_id.subset"),
        (meta("cam_id", json!({"set": [1]})), "filter.meta.cam_id.set"),
        (meta("cam_id", json!({"subset": [null]})), "filter.meta.cam_id.subset"),
        (meta("cam_id", json!({"like": 5})), "filter.meta.cam_id.like"),
        (meta("cam_id", json!({"like": ["a%"]})), "filter.meta.cam_id.like"),
        (meta("cam_id", json!({"ilike": null})), "filter.meta.cam_id.ilike"),
        (meta("tags", json!({"subset": "a"})), "filter.meta.tags.subset"),
        (meta("tags", json!({"set": [1]})), "filter.meta.tags.set"),
        (meta("lists", json!({"set": ["1"]})), "filter.meta.lists.set"),
        (meta("lists", json!({"range": [-1, 5]})), "filter.meta.lists.range"),
        // `%` anywhere but at the ends
        (meta("cam_id", json!({"like": "a%c"})), "filter.meta.cam_id.like"),
        (meta("cam_id", json!({"like": "a%b%"})), "filter.meta.cam_id.like"),
        (meta("cam_id", json!({"like": "%a%b"})), "filter.meta.cam_id.like"),
        (meta("cam_id", json!({"ilike": "é%c"})), "filter.meta.cam_id.ilike"),
        (meta("tags", json!({"like": "x%y"})), "filter.meta.tags.like"),
        // ranges with lo > hi
        (json!({"id": {"range": [5, 3]}}), "filter.id.range"),
        (json!({"id": {"range": [MAX, 0]}}), "filter.id.range"),
        (meta("person_id", json!({"range": [10, 5]})), "filter.meta.person_id.range"),
        (meta("lists", json!({"range": [9, 1]})), "filter.meta.lists.range"),
    ];
    for (filter, param) in cases {
        let r = s.search(&g, &json!({ "filter": filter }));
        assert_error(&r, 400, "BAD_PARAM", Some(param), None);
        assert!(r.json()["error"].get("value").is_some(), "filter {filter}: the error names the value: {}", r.body);
        // a bad filter on the other path is refused the same way
        let r2 = s.post(&format!("/v2/{g}/search"), &json!({ "filter": filter }).to_string());
        assert_eq!(r2.status, 400, "{filter}");
        assert_eq!(r2.json()["error"]["param"], json!(param), "{filter}");
    }
}
