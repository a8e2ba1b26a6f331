//! Galleries: create, get, list, delete, `/stat/list/{from}/{to}`, and gallery names.

use serde_json::{json, Value};

use crate::common::{assert_error, face_r, pct, shared, Server};

#[test]
fn gallery_lifecycle() {
    let s = shared();
    let g = s.new_gallery("life");

    // get: GET and POST both answer {"faces":N}
    for method in ["GET", "POST"] {
        let r = s.request(method, &format!("/v2/galleries/get/{g}"), None, None);
        assert_eq!(r.status, 200, "{method} get: {}", r.body);
        assert_eq!(r.json(), json!({"faces": 0}));
    }

    s.add_ok(&g, &json!([face_r(1, json!({})), face_r(2, json!({}))]));
    let r = s.post_empty(&format!("/v2/galleries/get/{g}"));
    assert_eq!(r.json(), json!({"faces": 2}));

    // delete: 204, empty body
    let r = s.post_empty(&format!("/v2/galleries/delete/{g}"));
    assert_eq!((r.status, r.body.as_str()), (204, ""));

    // gone: get and delete are 404 GALLERY_NOT_FOUND
    let r = s.get(&format!("/v2/galleries/get/{g}"));
    assert_error(&r, 404, "GALLERY_NOT_FOUND", None, None);
    let r = s.post_empty(&format!("/v2/galleries/get/{g}"));
    assert_error(&r, 404, "GALLERY_NOT_FOUND", None, None);
    let r = s.post_empty(&format!("/v2/galleries/delete/{g}"));
    assert_error(&r, 404, "GALLERY_NOT_FOUND", None, None);

    // created again, it is empty: the old faces went with the gallery
    s.create_gallery(&g);
    assert_eq!(s.count(&g), 0);
    assert_eq!(s.search_ids(&g, &json!({})), Vec::<u64>::new());
    // and the old ids can be added again
    s.add_ok(&g, &json!([face_r(1, json!({}))]));
    assert_eq!(s.count(&g), 1);
}

#[test]
fn gallery_add_twice_is_409_with_exact_body() {
    let s = shared();
    let g = s.new_gallery("twice");
    let r = s.post_empty(&format!("/v2/galleries/add/{g}"));
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json(),
        json!({"error": {"code": 409, "kind": "CONFLICT", "message": "gallery already exists",
                         "param": "name", "value": g}})
    );
    // the existing gallery is untouched
    assert_eq!(s.count(&g), 0);
}

#[test]
fn gallery_add_with_a_body_is_fine() {
    // curl --data '' or a stray body: the gallery add ignores nothing harmful
    let s = shared();
    let name = format!("withbody_{}", std::process::id());
    let r = s.post(&format!("/v2/galleries/add/{name}"), "");
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(s.count(&name), 0);
}

#[test]
fn gallery_names_valid_edge_cases() {
    let s = shared();
    let long64: String = "n".repeat(60) + &format!("{:04}", std::process::id() % 10_000);
    assert_eq!(long64.len(), 64);
    for name in [long64.as_str(), "A-Za-z_0-9-edge", "-", "_", "0", "UPPER_lower-123"] {
        let r = s.post_empty(&format!("/v2/galleries/add/{name}"));
        assert_eq!((r.status, r.body.as_str()), (200, ""), "name {name:?}");
        assert_eq!(s.count(name), 0, "name {name:?}");
        let r = s.post_empty(&format!("/v2/galleries/delete/{name}"));
        assert_eq!(r.status, 204, "name {name:?}");
    }
}

#[test]
fn gallery_names_invalid_are_400_bad_param_name() {
    let s = shared();
    let long65 = "x".repeat(65);
    for name in ["a.b", "../x", long65.as_str(), "sp ace", "ünï", "semi;colon", "a%b", "a+b"] {
        let path = format!("/v2/galleries/add/{}", pct(name));
        let r = s.post_empty(&path);
        assert_error(&r, 400, "BAD_PARAM", Some("name"), Some(&json!(name)));
    }
    // the empty name
    let r = s.post_empty("/v2/galleries/add/");
    assert_error(&r, 400, "BAD_PARAM", Some("name"), Some(&json!("")));

    // none of them exists now
    let listed: Vec<String> = s.post_empty("/v2/galleries/list").json()["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|g| g["name"].as_str().expect("name").to_string())
        .collect();
    for bad in ["a.b", "../x", "x", "..", "", "sp ace", long65.as_str()] {
        assert!(!listed.iter().any(|n| n == bad), "{bad:?} was created");
    }
}

#[test]
fn get_and_delete_unknown_gallery_is_404() {
    let s = shared();
    for (method, path) in [
        ("GET", "/v2/galleries/get/no_such_gallery_anywhere"),
        ("POST", "/v2/galleries/get/no_such_gallery_anywhere"),
        ("POST", "/v2/galleries/delete/no_such_gallery_anywhere"),
    ] {
        let r = s.request(method, path, None, None);
        assert_error(&r, 404, "GALLERY_NOT_FOUND", None, None);
    }
}

#[test]
fn list_on_shared_server_contains_own_gallery_in_name_order() {
    let s = shared();
    let g = s.new_gallery("listed");
    s.add_ok(&g, &json!([face_r(5, json!({})), face_r(6, json!({})), face_r(7, json!({}))]));
    for method in ["GET", "POST"] {
        let r = s.request(method, "/v2/galleries/list", None, None);
        assert_eq!(r.status, 200, "{method}: {}", r.body);
        let v = r.json();
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{v}");
        let list = v["results"].as_array().expect("results");
        let names: Vec<&str> = list.iter().map(|e| e["name"].as_str().expect("name")).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "list is in name order");
        let mine: Vec<&Value> = list.iter().filter(|e| e["name"] == json!(g)).collect();
        assert_eq!(mine, vec![&json!({"name": g, "faces": 3})]);
    }
}

/// Galleries `alpha`(1 face), `beta10`(0), `beta2`(2), `delta`(0), `gamma`(3) on a server of
/// their own.
fn five_galleries() -> Server {
    let s = Server::start(&[]);
    for (name, n) in [("gamma", 3u64), ("beta2", 2), ("alpha", 1), ("delta", 0), ("beta10", 0)] {
        s.create_gallery(name);
        let faces: Vec<Value> = (0..n).map(|i| face_r(i, json!({}))).collect();
        if n > 0 {
            s.add_ok(name, &json!(faces));
        }
    }
    s
}

fn entry(name: &str, faces: u64) -> Value {
    json!({"name": name, "faces": faces})
}

#[test]
fn list_exact_on_fresh_server() {
    let s = Server::start(&[]);
    let r = s.post_empty("/v2/galleries/list");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"results": []}));
    drop(s);

    let s = five_galleries();
    let expected = json!({"results": [
        entry("alpha", 1), entry("beta10", 0), entry("beta2", 2), entry("delta", 0), entry("gamma", 3)
    ]});
    for method in ["GET", "POST"] {
        let r = s.request(method, "/v2/galleries/list", None, None);
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(r.json(), expected, "{method}");
    }
    // after a delete the list follows
    assert_eq!(s.post_empty("/v2/galleries/delete/beta2").status, 204);
    let r = s.post_empty("/v2/galleries/list");
    assert_eq!(
        r.json(),
        json!({"results": [entry("alpha", 1), entry("beta10", 0), entry("delta", 0), entry("gamma", 3)]})
    );
}

#[test]
fn stat_list_ranges() {
    let s = five_galleries();
    let all = vec![entry("alpha", 1), entry("beta10", 0), entry("beta2", 2), entry("delta", 0), entry("gamma", 3)];
    let cases: Vec<(&str, Vec<Value>)> = vec![
        ("/stat/list/1/99", all.clone()),
        ("/stat/list/1/5", all.clone()),
        ("/stat/list/1/1", all[0..1].to_vec()),
        ("/stat/list/2/3", all[1..3].to_vec()),
        ("/stat/list/4/99", all[3..5].to_vec()),
        ("/stat/list/5/5", all[4..5].to_vec()),
        ("/stat/list/6/10", vec![]),
        ("/stat/list/4/2", vec![]),
        ("/stat/list/99/1", vec![]),
    ];
    for (path, expected) in cases {
        let r = s.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.json(), json!({ "results": expected }), "{path}");
    }
    for path in [
        "/stat/list/0/3",
        "/stat/list/1/0",
        "/stat/list/0/0",
        "/stat/list/a/3",
        "/stat/list/1/x",
        "/stat/list/-1/3",
        "/stat/list/1.5/3",
    ] {
        let r = s.get(path);
        assert_error(&r, 400, "BAD_PARAM", None, None);
    }
}
