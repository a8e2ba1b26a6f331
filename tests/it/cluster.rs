//! The router: `facedb router` in front of `facedb shard`s, checked against a single shard.
//!
//! A router must answer exactly as one shard holding all the faces would (same results, same
//! order, ties by id), page through a gallery split over shards without losing or repeating a
//! face, keep batches all-or-nothing across shards, and name the shard that fails: 503
//! `STORAGE_ERROR`, or partial results with `ignore_errors`. A shard is killed (`kill -9`),
//! restarted on the same data dir and port, or stopped (`SIGSTOP`) to see the router cope. The
//! harness is [`Cluster`]; where a face lives is `facedb::router::shard_of`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use facedb::router::shard_of;
use serde_json::{json, Value};

use crate::common::{
    assert_error, error_message, face, face_r, facen, next_unique, rand_vec, start_shard, Cluster, Resp, Server,
    StartFailure, TempDir, Timeouts, DIM,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A search's `results`, asserting 200 and no other key than `results` and `next_page`.
fn found(server: &Server, gallery: &str, body: &Value) -> Vec<Value> {
    let r = server.search(gallery, body);
    assert_eq!(r.status, 200, "search {body} on {gallery}: {}", r.body);
    let v = r.json();
    let keys: Vec<&String> = v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().collect();
    assert!(keys.iter().all(|k| *k == "results" || *k == "next_page"), "search {body}: keys {keys:?}");
    v["results"].as_array().unwrap_or_else(|| panic!("no results array in {v}")).clone()
}

/// The ids of search results, in order.
fn ids(results: &[Value]) -> Vec<u64> {
    results.iter().map(|f| f["id"].as_u64().unwrap_or_else(|| panic!("result without an id: {f}"))).collect()
}

/// The ids (ascending) of a gallery as `server` has them.
fn stored_ids(server: &Server, gallery: &str) -> Vec<u64> {
    ids(&found(server, gallery, &json!({"limit": 10000})))
}

/// The ids among `ids` that live on shard `shard` of `shards`.
fn on_shard(ids: &[u64], shard: usize, shards: usize) -> Vec<u64> {
    ids.iter().copied().filter(|&id| shard_of(id, shards) == shard).collect()
}

/// Faces with random vectors and a `person_id` equal to the id.
fn faces_of(ids: &[u64]) -> Value {
    Value::Array(ids.iter().map(|&id| face(id, &rand_vec(id, DIM), json!({"person_id": id}))).collect())
}

/// Asserts every shard of `cluster` holds exactly its part of `ids` in `gallery`.
fn assert_placed(cluster: &Cluster, gallery: &str, ids: &[u64]) {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    for i in 0..cluster.len() {
        assert_eq!(stored_ids(cluster.shard(i), gallery), on_shard(&sorted, i, cluster.len()), "faces of shard {i}");
    }
}

/// Asserts `r` is a 200 with partial results: `results`, `failed_shards` and maybe `next_page`,
/// naming `url` alone with a message. Returns the results.
fn partial(r: &Resp, url: &str) -> Vec<Value> {
    assert_eq!(r.status, 200, "ignore_errors search: {}", r.body);
    let v = r.json();
    let keys: BTreeSet<&str> =
        v.as_object().expect("an object").keys().map(String::as_str).filter(|k| *k != "next_page").collect();
    assert_eq!(keys, BTreeSet::from(["results", "failed_shards"]), "{v}");
    let failed = v["failed_shards"].as_array().unwrap_or_else(|| panic!("failed_shards is not an array: {v}"));
    assert_eq!(failed.len(), 1, "{v}");
    assert_eq!(failed[0]["shard"], json!(url), "{v}");
    assert!(failed[0]["message"].as_str().is_some_and(|m| !m.is_empty()), "failed_shards[0].message: {v}");
    v["results"].as_array().expect("results").clone()
}

/// A search with `?ignore_errors=true`.
fn search_ignoring_errors(server: &Server, gallery: &str, body: &Value) -> Resp {
    server.post_json(&format!("/v2/faces/search/{gallery}?ignore_errors=true"), body)
}

/// Asserts `results` are in the order of `sort` (`id`, `-id`, or `-score`), ties by id.
fn assert_ordered(results: &[Value], sort: &str) {
    for pair in results.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (ia, ib) = (a["id"].as_u64().expect("id"), b["id"].as_u64().expect("id"));
        let ordered = match sort {
            "id" => ia < ib,
            "-id" => ia > ib,
            _ => {
                let (sa, sb) = (a["score"].as_f64().expect("score"), b["score"].as_f64().expect("score"));
                sa > sb || (sa == sb && ia < ib)
            }
        };
        assert!(ordered, "not in {sort} order: {a} then {b}");
    }
}

/// Follows `next_page` from the first page of `body` with pages of `size`; returns every
/// result in order and the number of pages. Only a full page may have a `next_page`, and a
/// full page must have one.
fn walk(server: &Server, gallery: &str, body: &Value, size: usize) -> (Vec<Value>, usize) {
    let mut all = Vec::new();
    let mut page: Option<String> = None;
    for pages in 1..=1000 {
        let mut request = body.clone();
        request["limit"] = json!(size);
        if let Some(cursor) = &page {
            request["page"] = json!(cursor);
        }
        let r = server.search(gallery, &request);
        assert_eq!(r.status, 200, "page {pages} of {request}: {}", r.body);
        let v = r.json();
        let results = v["results"].as_array().unwrap_or_else(|| panic!("page {pages}: {v}"));
        assert!(results.len() <= size, "page {pages} has {} results", results.len());
        all.extend(results.iter().cloned());
        match v.get("next_page") {
            Some(Value::String(cursor)) if !cursor.is_empty() => {
                assert_eq!(results.len(), size, "page {pages} is not full but has a next_page");
                page = Some(cursor.clone());
            }
            None => {
                assert!(results.len() < size, "page {pages} is full but has no next_page: {v}");
                return (all, pages);
            }
            Some(other) => panic!("page {pages}: next_page {other}"),
        }
    }
    panic!("more than 1000 pages of {body}")
}

/// Whether `server`'s stderr mentions `text` (ignoring case) within 2 s: it is read by another
/// thread, which may lag behind the listening line.
fn stderr_says(server: &Server, text: &str) -> bool {
    let text = text.to_lowercase();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if server.stderr().to_lowercase().contains(&text) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts a router did not start: it exited with a failure status.
fn assert_refused(started: Result<Server, StartFailure>, what: &str) -> StartFailure {
    match started {
        Ok(router) => panic!("the router started with {what}; stderr:\n{}", router.stderr()),
        Err(failure) => {
            assert!(
                failure.status.is_some_and(|s| !s.success()),
                "{what}: the router did not exit non-zero: {failure:?}"
            );
            failure
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Same answers as one shard
// ---------------------------------------------------------------------------------------------

/// Face number `i` of the comparison gallery: mostly small ids, some near 2^63.
fn varied_id(i: u64) -> u64 {
    if i.is_multiple_of(97) {
        9_000_000_000_000_000_000 + i
    } else {
        i * 7 + 3
    }
}

/// One face in 13 is an exact copy of one of five vectors, so scores tie.
fn varied_vector(i: u64) -> Vec<f32> {
    if i.is_multiple_of(13) {
        rand_vec(1_000 + i % 5, DIM)
    } else {
        rand_vec(50_000 + i, DIM)
    }
}

/// Meta from the example schema, varied so that each filter of the comparison selects
/// between 1% and 50% of the faces.
fn varied_meta(i: u64) -> Value {
    const CAMS: [&str; 7] = ["cam-A", "cam-B", "cam-C", "lobby", "gate-1", "gate-2", "Gate-3"];
    const NAMES: [&str; 7] = ["Mary Ostin", "mary jones", "John Smith", "Ann Lee", "Bob Ray", "Li Wei", "Olga K"];
    const TAGS: [&str; 4] = ["blue", "outdoor", "Indoor", "red"];
    let bits = i / 3;
    let tags: Vec<&str> = TAGS.iter().enumerate().filter(|(b, _)| (bits >> b) & 1 == 1).map(|(_, t)| *t).collect();
    json!({
        "cam_id": CAMS[(i % 7) as usize],
        "person_name": NAMES[(i / 7 % 7) as usize],
        "person_id": i % 100,
        "timestamp": 1_600_000_000 + (i * 7919) % 100_000,
        "tags": tags,
        "lists": [i % 10, 20 + i % 3],
    })
}

/// A router over 3 shards answers every kind of search exactly as one `facedb shard` holding
/// the same 3000 faces: the same `results`, JSON-equal (ids, facens, meta, scores, order,
/// ties by id), for score searches with limits 1, 10 and 100, id orders, every filter
/// operator on meta, id ranges and sets, score ranges, and limit 0. Each shard holds exactly
/// the faces `shard_of` places on it.
#[test]
fn router_answers_as_one_shard() {
    let cluster = Cluster::start(3);
    let router = cluster.router();
    let single = start_shard();
    let gallery = router.new_gallery("equal");
    single.create_gallery(&gallery);

    let all: Vec<u64> = (0..3000).collect();
    for chunk in all.chunks(500) {
        let faces: Vec<Value> = chunk.iter().map(|&i| face(varied_id(i), &varied_vector(i), varied_meta(i))).collect();
        router.add_ok(&gallery, &json!(faces));
        single.add_ok(&gallery, &json!(faces));
    }
    let all_ids: Vec<u64> = all.iter().map(|&i| varied_id(i)).collect();
    assert_eq!(router.count(&gallery), 3000);
    assert_placed(&cluster, &gallery, &all_ids);

    let q1 = facen(&rand_vec(1_000, DIM)); // a copy of one in 65 faces: ties at the top
    let q2 = facen(&rand_vec(424_242, DIM));
    let id_set: Vec<u64> = (0..3000).step_by(50).map(varied_id).chain([5, 6, 8_999_999_999_999_999_999]).collect();
    // (search, whether it is a filter that must select 1-50% of the faces)
    let searches = [
        (json!({"exact": true, "limit": 1, "filter": {"facen": {"data": q1}}}), false),
        (json!({"exact": true, "limit": 10, "filter": {"facen": {"data": q1}}}), false),
        (json!({"exact": true, "limit": 100, "filter": {"facen": {"data": q1}}}), false),
        (json!({"exact": true, "limit": 100, "filter": {"facen": {"data": q2}}}), false),
        (json!({"exact": true, "limit": 10, "sort": "-score", "filter": {"facen": {"data": q2}}}), false),
        (json!({"sort": "id", "limit": 200}), false),
        (json!({"sort": "-id", "limit": 200}), false),
        (json!({"sort": {"id": -1}, "limit": 1}), false),
        (json!({}), false),
        (json!({"limit": 0}), false),
        (json!({"limit": 0, "filter": {"facen": {"data": q2}}}), false),
        (json!({"limit": 10000, "filter": {"meta": {"person_id": {"range": [10, 29]}}}}), true),
        (json!({"limit": 10000, "sort": "-id", "filter": {"meta": {"cam_id": {"set": ["cam-A", "lobby"]}}}}), true),
        (json!({"limit": 10000, "filter": {"meta": {"tags": {"subset": ["blue", "outdoor"]}}}}), true),
        (json!({"limit": 10000, "filter": {"meta": {"person_id": {"subset": [7]}}}}), true),
        (json!({"limit": 10000, "filter": {"meta": {"cam_id": {"like": "gate-%"}}}}), true),
        (
            json!({"limit": 10000, "filter": {"meta": {"cam_id": {"ilike": "GATE-%"}, "person_name": {"like": "%o%"}}}}),
            true,
        ),
        (json!({"limit": 10000, "filter": {"meta": {"person_name": {"ilike": "mary%"}}}}), true),
        (json!({"limit": 10000, "filter": {"meta": {"tags": {"ilike": "in%"}, "lists": {"set": [3, 21]}}}}), true),
        (json!({"limit": 10000, "filter": {"meta": {"lists": {"range": [5, 6]}, "tags": {"set": ["red"]}}}}), true),
        (json!({"limit": 10000, "filter": {"meta": {"timestamp": {"range": [1_600_000_000, 1_600_020_000]}}}}), true),
        (json!({"limit": 10000, "filter": {"id": {"range": [1000, 4000]}}}), true),
        (json!({"limit": 10000, "sort": "-id", "filter": {"id": {"set": id_set}}}), true),
        (json!({"limit": 10000, "exact": true, "filter": {"facen": {"data": q2, "score": [0.1, 1]}}}), true),
        (json!({"limit": 10000, "exact": true, "filter": {"facen": {"data": q2, "score": [-1, -0.15]}}}), true),
        (
            json!({"limit": 50, "exact": true,
                   "filter": {"facen": {"data": q2, "score": [-0.05, 0.05]}, "meta": {"cam_id": {"set": ["cam-B"]}}}}),
            false,
        ),
        (json!({"limit": 10000, "sort": "id", "filter": {"facen": {"data": q1, "score": [0.99, 1]}}}), true),
        (
            json!({"limit": 10000, "sort": "-id",
                   "filter": {"facen": {"data": q2, "score": [0.05, 1]}, "id": {"range": [0, 10000]}}}),
            false,
        ),
    ];
    // The ten best for q1 all tie (exact copies): their order is the id tie-break alone.
    let top = found(&single, &gallery, &searches[1].0);
    assert!(top.iter().all(|f| f["score"] == top[0]["score"]) && top.len() == 10, "{top:?}");
    for (search, selective) in &searches {
        let expected = found(&single, &gallery, search);
        let got = found(router, &gallery, search);
        assert!(
            got == expected,
            "search {search}: the router's {} results differ from one shard's {}",
            got.len(),
            expected.len()
        );
        if *selective {
            assert!((30..=1500).contains(&expected.len()), "search {search} selects {} of 3000 faces", expected.len());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paging
// ---------------------------------------------------------------------------------------------

/// Face number `i` of the paged gallery: one in three is an exact copy of one of four vectors
/// (about 84 faces each, more than a page, spread over every shard), so long runs tie.
fn paged_face(i: u64) -> Value {
    let v = if i.is_multiple_of(3) { rand_vec(2_000 + i % 4, DIM) } else { rand_vec(70_000 + i, DIM) };
    face(i * 3 + 1, &v, json!({"person_id": i % 100}))
}

/// Following `next_page` through a router returns every face of a 3-shard gallery exactly
/// once, in the order of the sort (`id`, `-id`, and score with ties by id), in pages of 37
/// (which does not divide 1003), and the walk equals one big search and the same walk on a
/// single `facedb shard`. A shard alone pages with the same cursors.
#[test]
fn paging_walks_the_whole_gallery_exactly_once() {
    const FACES: u64 = 1003;
    const PAGE: usize = 37;
    let cluster = Cluster::start(3);
    let router = cluster.router();
    let single = start_shard();
    let gallery = router.new_gallery("paged");
    single.create_gallery(&gallery);
    let faces: Vec<Value> = (0..FACES).map(paged_face).collect();
    router.add_ok(&gallery, &json!(faces));
    single.add_ok(&gallery, &json!(faces));
    for i in 0..3 {
        assert!(cluster.shard(i).count(&gallery) as usize >= 5 * PAGE, "shard {i} holds less than 5 pages");
    }

    let q = facen(&rand_vec(2_001, DIM)); // a copy of 84 faces
    let walks = [
        ("id", json!({"sort": "id"}), FACES as usize),
        ("-id", json!({"sort": "-id"}), FACES as usize),
        ("-score", json!({"exact": true, "filter": {"facen": {"data": q}}}), FACES as usize),
        ("-score", json!({"exact": true, "filter": {"facen": {"data": q, "score": [-0.1, 1]}}}), 0),
        ("-id", json!({"sort": "-id", "filter": {"meta": {"person_id": {"range": [0, 49]}}}}), 0),
    ];
    for (sort, body, total) in &walks {
        let (paged, pages) = walk(router, &gallery, body, PAGE);
        let (single_paged, _) = walk(&single, &gallery, body, PAGE);
        let mut big_body = body.clone();
        big_body["limit"] = json!(5000);
        let big = found(router, &gallery, &big_body);
        let single_big = found(&single, &gallery, &big_body);

        let paged_ids = ids(&paged);
        let distinct: BTreeSet<u64> = paged_ids.iter().copied().collect();
        assert_eq!(distinct.len(), paged_ids.len(), "walk {body}: an id came twice");
        if *total > 0 {
            assert_eq!(paged_ids.len(), *total, "walk {body}");
            assert_eq!(pages, total.div_ceil(PAGE), "walk {body}: pages");
        } else {
            assert!(paged.len() > 2 * PAGE, "walk {body}: only {} results", paged.len());
        }
        assert_ordered(&paged, sort);
        assert!(single_big == single_paged, "walk {body}: one shard's walk differs from its big search");
        assert!(big == single_big, "walk {body}: the router's big search differs from one shard's");
        assert!(paged == big, "walk {body}: the router's walk differs from its big search");
    }

    // A shard of the cluster pages alone too: its walk is its big search.
    let shard = cluster.shard(0);
    for (sort, body, _) in &walks {
        let (paged, pages) = walk(shard, &gallery, body, PAGE);
        let mut big_body = body.clone();
        big_body["limit"] = json!(5000);
        assert!(paged == found(shard, &gallery, &big_body), "shard 0's walk {body} differs from its big search");
        assert_ordered(&paged, sort);
        assert!(pages >= 2, "shard 0's walk {body}: {pages} pages");
    }
}

// ---------------------------------------------------------------------------------------------
// A shard down
// ---------------------------------------------------------------------------------------------

/// A shard killed with `kill -9`: a search answers 503 `STORAGE_ERROR` naming the shard's URL;
/// with `ignore_errors` (query parameter or body field) 200 with the faces of the live shards
/// and `failed_shards` naming it; a search whose `id` set lives on live shards needs no
/// `ignore_errors`. Restarted on its port and data dir, the shard is used again at once, with
/// no router restart, and has kept its faces.
#[test]
fn a_killed_shard_is_named_skipped_and_used_again_once_back() {
    let mut cluster = Cluster::start(3);
    let gallery = cluster.router().new_gallery("killed");
    let all: Vec<u64> = (1..=300).collect();
    cluster.router().add_ok(&gallery, &faces_of(&all));
    assert_eq!(stored_ids(cluster.router(), &gallery), all);

    cluster.kill_shard(1);
    let url = cluster.shard_url(1);
    let live: Vec<u64> = all.iter().copied().filter(|&id| shard_of(id, 3) != 1).collect();
    let router = cluster.router();

    let r = router.search(&gallery, &json!({"limit": 1000}));
    assert_error(&r, 503, "STORAGE_ERROR", Some("shard"), Some(&json!(url)));
    assert!(error_message(&r).contains(&url), "{}", r.body);
    let r = router.search(&gallery, &json!({"filter": {"id": {"set": on_shard(&all, 1, 3)}}}));
    assert_error(&r, 503, "STORAGE_ERROR", Some("shard"), Some(&json!(url)));

    let r = search_ignoring_errors(router, &gallery, &json!({"limit": 1000}));
    assert_eq!(ids(&partial(&r, &url)), live, "?ignore_errors=true");
    let r = router.search(&gallery, &json!({"limit": 1000, "ignore_errors": true}));
    assert_eq!(ids(&partial(&r, &url)), live, "\"ignore_errors\": true");

    // A score search over the live shards ranks as the same search restricted to their ids,
    // which only asks the shards that hold them and so needs no ignore_errors.
    let q = facen(&rand_vec(7, DIM));
    let r = router.search(&gallery, &json!({"limit": 50, "ignore_errors": true, "filter": {"facen": {"data": q}}}));
    let ranked = partial(&r, &url);
    let restricted =
        found(router, &gallery, &json!({"limit": 50, "filter": {"facen": {"data": q}, "id": {"set": live}}}));
    assert_eq!(ranked, restricted);
    assert_eq!(ranked.len(), 50);

    cluster.restart_shard(1);
    let router = cluster.router();
    let r = router.search(&gallery, &json!({"limit": 1000}));
    assert_eq!(r.status, 200, "the first search after the restart: {}", r.body);
    assert_eq!(ids(&found(router, &gallery, &json!({"limit": 1000}))), all);
    let more: Vec<u64> = (301..=330).collect();
    router.add_ok(&gallery, &faces_of(&more));
    assert_eq!(router.count(&gallery), 330);
    assert_placed(&cluster, &gallery, &[all, more].concat());
}

/// A shard stopped with `SIGSTOP` (alive, but answering nothing): searches with
/// `ignore_errors` answer within the router's timeout (plus slack) with the live shards'
/// faces, even 40 at once from 8 threads; without it, a 503 naming the shard. Requests that do
/// not need the shard (adding faces that live elsewhere, a search by `id` set of such faces)
/// answer at once. After `SIGCONT` everything is whole again.
#[test]
fn a_stopped_shard_costs_the_timeout_only_to_requests_that_need_it() {
    let timeouts = Timeouts::overall(Duration::from_secs(1));
    let slack = |extra_ms: u64| timeouts.overall + Duration::from_millis(extra_ms);
    let cluster = Cluster::start_with(3, timeouts);
    let router = cluster.router();
    let gallery = router.new_gallery("stopped");
    let all: Vec<u64> = (1..=200).collect();
    router.add_ok(&gallery, &faces_of(&all));
    let url = cluster.shard_url(1);
    let live: Vec<u64> = all.iter().copied().filter(|&id| shard_of(id, 3) != 1).collect();
    let elsewhere: Vec<u64> = (1000..).filter(|&id| shard_of(id, 3) != 1).take(20).collect();

    let stopped = cluster.stop_shard(1);

    let started = Instant::now();
    let r = router.search(&gallery, &json!({"limit": 1000, "ignore_errors": true}));
    let took = started.elapsed();
    assert_eq!(ids(&partial(&r, &url)), live);
    assert!(took < slack(1500), "an ignore_errors search took {took:?}");

    let started = Instant::now();
    let r = router.search(&gallery, &json!({"limit": 1000}));
    let took = started.elapsed();
    assert_error(&r, 503, "STORAGE_ERROR", Some("shard"), Some(&json!(url)));
    assert!(took < slack(1500), "a search took {took:?} to fail");

    let started = Instant::now();
    router.add_ok(&gallery, &faces_of(&elsewhere));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "adding faces of the live shards took {took:?}");

    let started = Instant::now();
    let got = ids(&found(router, &gallery, &json!({"filter": {"id": {"set": elsewhere}}})));
    let took = started.elapsed();
    assert_eq!(got, elsewhere);
    assert!(took < Duration::from_secs(1), "a search by ids of the live shards took {took:?}");

    let live_now: Vec<u64> = live.iter().chain(&elsewhere).copied().collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    for _ in 0..5 {
                        let started = Instant::now();
                        let r = router.search(&gallery, &json!({"limit": 1000, "ignore_errors": true}));
                        let took = started.elapsed();
                        assert_eq!(ids(&partial(&r, &url)), live_now);
                        assert!(took < slack(2000), "a concurrent ignore_errors search took {took:?}");
                    }
                })
            })
            .collect();
        for worker in workers {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });

    drop(stopped);
    let whole: Vec<u64> = all.iter().chain(&elsewhere).copied().collect();
    let r = router.search(&gallery, &json!({"limit": 1000}));
    assert_eq!(r.status, 200, "the first search after SIGCONT: {}", r.body);
    assert_eq!(ids(&found(router, &gallery, &json!({"limit": 1000}))), whole);
    assert_placed(&cluster, &gallery, &whole);
}

/// Creating or deleting a gallery while a shard is down answers 503 naming the shard; once the
/// shard is back, the same request completes it (200 / 204), and only then does a repeat
/// answer 409 / 404. `galleries/get` and `galleries/list` sum the shards' face counts.
#[test]
fn gallery_create_and_delete_with_a_shard_down_complete_on_retry() {
    let mut cluster = Cluster::start(3);
    let name = format!("gdown_{}", next_unique());
    let other = format!("gother_{}", next_unique());
    cluster.router().create_gallery(&other);

    cluster.kill_shard(2);
    let r = cluster.router().post_empty(&format!("/v2/galleries/add/{name}"));
    assert_error(&r, 503, "STORAGE_ERROR", Some("shard"), Some(&json!(cluster.shard_url(2))));
    cluster.restart_shard(2);
    let router = cluster.router();
    let r = router.post_empty(&format!("/v2/galleries/add/{name}"));
    assert_eq!((r.status, r.body.as_str()), (200, ""), "the retried create");
    let r = router.post_empty(&format!("/v2/galleries/add/{name}"));
    assert_error(&r, 409, "CONFLICT", Some("name"), Some(&json!(name)));

    let ids: Vec<u64> = (1..=100).collect();
    router.add_ok(&name, &faces_of(&ids));
    router.add_ok(&other, &faces_of(&ids[..7]));
    let per_shard: Vec<u64> = (0..3).map(|i| cluster.shard(i).count(&name)).collect();
    for (i, n) in per_shard.iter().enumerate() {
        assert_eq!(*n as usize, on_shard(&ids, i, 3).len(), "faces on shard {i}");
    }
    assert_eq!(router.count(&name), per_shard.iter().sum::<u64>());
    assert_eq!(router.count(&name), 100);

    // The list: each gallery with the sum of the shards' counts, in name order.
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..3 {
        let r = cluster.shard(i).get("/v2/galleries/list");
        assert_eq!(r.status, 200, "{}", r.body);
        for g in r.json()["results"].as_array().expect("results") {
            *sums.entry(g["name"].as_str().expect("name").to_string()).or_default() +=
                g["faces"].as_u64().expect("faces");
        }
    }
    let expected: Vec<Value> = sums.iter().map(|(n, f)| json!({"name": n, "faces": f})).collect();
    assert_eq!(expected.len(), 2, "{expected:?}");
    let r = router.get("/v2/galleries/list");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"results": expected}));

    cluster.kill_shard(0);
    let r = cluster.router().post_empty(&format!("/v2/galleries/delete/{name}"));
    assert_error(&r, 503, "STORAGE_ERROR", Some("shard"), Some(&json!(cluster.shard_url(0))));
    cluster.restart_shard(0);
    let router = cluster.router();
    let r = router.post_empty(&format!("/v2/galleries/delete/{name}"));
    assert_eq!((r.status, r.body.as_str()), (204, ""), "the retried delete");
    let r = router.post_empty(&format!("/v2/galleries/delete/{name}"));
    assert_error(&r, 404, "GALLERY_NOT_FOUND", None, None);
    for i in 0..3 {
        assert_error(&cluster.shard(i).get(&format!("/v2/galleries/get/{name}")), 404, "GALLERY_NOT_FOUND", None, None);
    }
    assert_eq!(router.count(&other), 7);
}

/// How a shard goes away before it comes back on the wrong data dir.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Term,
    Kill,
}

fn stop(cluster: &mut Cluster, i: usize, how: Stop) {
    match how {
        Stop::Term => cluster.terminate_shard(i),
        Stop::Kill => cluster.kill_shard(i),
    }
}

/// Asserts that the router refuses shard `i` (back on a data dir that is not its own): a
/// search, the gallery list, a gallery create and an add of a face it would hold are each a 503
/// naming it once, whose message says one of `why`; the router logs it; and the shard itself was
/// left as it was (no gallery made there, no face added).
fn assert_refused_shard(cluster: &Cluster, i: usize, gallery: &str, why: &[&str], variant: &str) {
    let url = cluster.shard_url(i);
    let router = cluster.router();
    let shard = cluster.shard(i);
    let held = |what: &str| {
        let r = shard.get("/v2/admin/cluster");
        assert_eq!(r.status, 200, "{variant}: {}", r.body);
        r.json()[what].clone()
    };
    let (faces_before, record_before) = (held("faces"), held("cluster"));
    let refused = |r: &Resp, what: &str| {
        assert_error(r, 503, "STORAGE_ERROR", Some("shard"), Some(&json!(url)));
        let message = error_message(r);
        assert!(
            why.iter().any(|w| message.contains(w)),
            "{variant}, {what}: the message should say {why:?}: {}",
            r.body
        );
        assert_eq!(message.matches(&url).count(), 1, "{variant}, {what}: the URL once: {}", r.body);
    };
    refused(&router.search(gallery, &json!({"limit": 1000})), "search");
    refused(&router.get("/v2/galleries/list"), "galleries/list");
    let fork = format!("fork_{}", next_unique());
    refused(&router.post_empty(&format!("/v2/galleries/add/{fork}")), "galleries/add");
    let id = (1_000_000..).find(|&id| shard_of(id, cluster.len()) == i).expect("an id of the shard");
    refused(&router.add_faces(gallery, &faces_of(&[id])), "faces/add");
    assert!(stderr_says(router, &url), "{variant}: the router should log the refused shard");
    assert_error(&shard.get(&format!("/v2/galleries/get/{fork}")), 404, "GALLERY_NOT_FOUND", None, None);
    assert_eq!(held("faces"), faces_before, "{variant}: faces were added to the refused shard");
    assert_eq!(held("cluster"), record_before, "{variant}: the refused shard's record changed");
}

/// A shard restarted on a data dir that is not its own (a new, empty one, or another shard's)
/// is refused by the router with a 503 naming it on the very first request, whether it was
/// stopped with SIGTERM or kill -9, and whether or not a request reached the router while it
/// was down: every call carries the record the router expects, and the shard checks it before
/// doing anything. Back on its own data dir, it is used again at once.
#[test]
fn a_shard_back_on_another_data_dir_is_refused_whatever_happened_in_between() {
    let mut cluster = Cluster::start(3);
    let gallery = cluster.router().new_gallery("moved");
    let all: Vec<u64> = (1..=60).collect();
    cluster.router().add_ok(&gallery, &faces_of(&all));
    let whole = |cluster: &Cluster, variant: &str| {
        let r = cluster.router().search(&gallery, &json!({"limit": 1000}));
        assert_eq!(r.status, 200, "{variant}: back on its own data dir: {}", r.body);
        assert_eq!(ids(&found(cluster.router(), &gallery, &json!({"limit": 1000}))), all, "{variant}");
    };
    for how in [Stop::Term, Stop::Kill] {
        for request_between in [false, true] {
            let variant = format!("{how:?}, request in between: {request_between}, empty data dir");
            stop(&mut cluster, 2, how);
            if request_between {
                let r = cluster.router().search(&gallery, &json!({"limit": 1000}));
                assert_error(&r, 503, "STORAGE_ERROR", Some("shard"), Some(&json!(cluster.shard_url(2))));
            }
            let empty = TempDir::new("empty-shard");
            cluster.restart_shard_on(2, empty.path());
            // The shard's own refusal, or the router's verification after it.
            let why = ["belongs to no cluster", "without its cluster record"];
            assert_refused_shard(&cluster, 2, &gallery, &why, &variant);
            // Still refused on the next requests: verified again, it is not the shard the router knows.
            assert_refused_shard(&cluster, 2, &gallery, &why[1..], &variant);
            cluster.restart_shard(2);
            whole(&cluster, &variant);

            let variant = format!("{how:?}, request in between: {request_between}, shards 1 and 2 swapped");
            stop(&mut cluster, 1, how);
            stop(&mut cluster, 2, how);
            if request_between {
                let r = cluster.router().search(&gallery, &json!({"limit": 1000}));
                assert_error(&r, 503, "STORAGE_ERROR", Some("shard"), Some(&json!(cluster.shard_url(1))));
            }
            let (dir_1, dir_2) = (cluster.shard_dir(1), cluster.shard_dir(2));
            cluster.restart_shard_on(1, &dir_2);
            cluster.restart_shard_on(2, &dir_1);
            assert_refused_shard(&cluster, 1, &gallery, &["shard 2 of 3"], &variant);
            cluster.kill_shard(1);
            cluster.kill_shard(2);
            cluster.restart_shard(1);
            cluster.restart_shard(2);
            whole(&cluster, &variant);
        }
    }
}

/// A router started afresh over a cluster whose shard 2 lost its data dir (replaced by an empty
/// one) does not claim that shard: the others hold galleries, which a cluster only has once all
/// its shards were claimed. The router starts, logs it, answers 503 naming the shard (with the
/// way to claim it by hand), and serves the others with `ignore_errors`. Claimed by hand as the
/// message says, the shard is used again, without the faces it lost.
#[test]
fn a_restarted_router_does_not_claim_a_lost_shard_back_empty() {
    let mut cluster = Cluster::start(3);
    let gallery = cluster.router().new_gallery("lost");
    let all: Vec<u64> = (1..=60).collect();
    cluster.router().add_ok(&gallery, &faces_of(&all));
    cluster.stop_router();
    cluster.wipe_shard(2);
    cluster.start_router(&[0, 1, 2]).unwrap_or_else(|f| panic!("the router with a lost shard: {f:?}"));
    let url = cluster.shard_url(2);
    let router = cluster.router();
    assert!(stderr_says(router, "already hold galleries"), "{}", router.stderr());
    let r = router.search(&gallery, &json!({"limit": 1000}));
    assert_error(&r, 503, "STORAGE_ERROR", Some("shard"), Some(&json!(url)));
    assert!(error_message(&r).contains("already hold galleries"), "{}", r.body);
    let r = search_ignoring_errors(router, &gallery, &json!({"limit": 1000}));
    let kept: Vec<u64> = all.iter().copied().filter(|&id| shard_of(id, 3) != 2).collect();
    assert_eq!(ids(&partial(&r, &url)), kept);
    let held = |cluster: &Cluster| cluster.shard(2).get("/v2/admin/cluster").json()["cluster"].clone();
    assert_eq!(held(&cluster), Value::Null, "the lost shard was claimed");

    // The message's command, as an operator would run it.
    let message = error_message(&router.search(&gallery, &json!({"limit": 1000})));
    let claim = message.rsplit_once("--data '").map(|(_, c)| c.trim_end_matches('\'')).expect("a claim command");
    let r = cluster.shard(2).post("/v2/admin/cluster", claim);
    assert_eq!(r.status, 200, "{}", r.body);
    // The gallery is still missing there (its faces are lost): created again through the router.
    let r = cluster.router().post_empty(&format!("/v2/galleries/add/{gallery}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ids(&found(cluster.router(), &gallery, &json!({"limit": 1000}))), kept);
}

// ---------------------------------------------------------------------------------------------
// Batches across shards
// ---------------------------------------------------------------------------------------------

/// A batch of faces spread over all shards is all-or-nothing: one id already stored makes it
/// 409 naming that id and leaves no other face of the batch on any shard; a bad facen in the
/// last face is a 400 naming `facen` and writes nothing anywhere. The same batch without the
/// stored id then goes in whole.
#[test]
fn a_batch_add_across_shards_is_all_or_nothing() {
    let cluster = Cluster::start(3);
    let router = cluster.router();
    let gallery = router.new_gallery("batch");
    let stored = 17u64;
    router.add_ok(&gallery, &faces_of(&[stored]));

    let batch: Vec<u64> = (1..=30).collect();
    let shards: BTreeSet<usize> = batch.iter().map(|&id| shard_of(id, 3)).collect();
    assert_eq!(shards.len(), 3, "the batch spans every shard");
    let r = router.add_faces(&gallery, &faces_of(&batch));
    assert_error(&r, 409, "CONFLICT", Some("id"), Some(&json!(stored)));
    assert_placed(&cluster, &gallery, &[stored]);
    assert_eq!(router.count(&gallery), 1);

    let fresh: Vec<u64> = (101..=130).collect();
    let mut faces = faces_of(&fresh);
    faces[29]["facen"] = json!(facen(&[0.5; 7]));
    let r = router.add_faces(&gallery, &faces);
    assert_error(&r, 400, "BAD_PARAM", Some("facen"), Some(&json!(130)));
    assert_placed(&cluster, &gallery, &[stored]);

    let rest: Vec<u64> = batch.iter().copied().filter(|&id| id != stored).collect();
    router.add_ok(&gallery, &faces_of(&rest));
    assert_placed(&cluster, &gallery, &batch);
}

/// Deletes and updates spanning every shard work, and update answers in request order; an
/// unknown id anywhere in the batch is a 404 naming it, and nothing is deleted or changed on
/// any shard.
#[test]
fn delete_and_update_across_shards_are_all_or_nothing() {
    let cluster = Cluster::start(3);
    let router = cluster.router();
    let gallery = router.new_gallery("delupd");
    let all: Vec<u64> = (1..=30).collect();
    router.add_ok(&gallery, &faces_of(&all));

    let doomed: Vec<u64> = (1..=10).collect();
    assert_eq!(doomed.iter().map(|&id| shard_of(id, 3)).collect::<BTreeSet<_>>().len(), 3);
    let r = router.delete_faces(&gallery, &json!(doomed));
    assert_eq!((r.status, r.body.as_str()), (200, ""), "delete");
    let left: Vec<u64> = (11..=30).collect();
    assert_placed(&cluster, &gallery, &left);

    let r = router.delete_faces(&gallery, &json!([11, 12, 13, 999_999, 14, 15]));
    assert_error(&r, 404, "NOT_FOUND", Some("id"), Some(&json!(999_999)));
    assert_placed(&cluster, &gallery, &left);

    let changed: Vec<u64> = vec![16, 11, 15, 12, 14, 13];
    assert_eq!(changed.iter().map(|&id| shard_of(id, 3)).collect::<BTreeSet<_>>().len(), 3);
    let updates: Vec<Value> =
        changed.iter().map(|id| json!({"id": id, "meta": {"person_name": format!("p{id}")}})).collect();
    let r = router.update_faces(&gallery, &json!(updates));
    assert_eq!(r.status, 200, "update: {}", r.body);
    let answered = r.json()["results"].as_array().expect("results").clone();
    assert_eq!(ids(&answered), changed, "update answers in request order");
    for (id, f) in changed.iter().zip(&answered) {
        assert_eq!(f["meta"]["person_name"], json!(format!("p{id}")));
        assert_eq!(f["meta"]["person_id"], json!(id));
        let on_its_shard = cluster.shard(shard_of(*id, 3)).fetch(&gallery, *id);
        assert_eq!(&on_its_shard, f, "face {id} on its shard");
    }
    let r = router.update_faces(&gallery, &json!([{"id": 20, "meta": {"person_id": 2020}}]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["meta"]["person_id"], json!(2020), "one face: the face itself");

    let before: Vec<Value> = found(router, &gallery, &json!({"limit": 1000}));
    let r = router.update_faces(
        &gallery,
        &json!([{"id": 21, "meta": {"person_name": "x"}}, {"id": 999_999, "meta": {"person_name": "x"}},
                {"id": 22, "meta": {"person_name": "x"}}, {"id": 23, "meta": {"person_name": "x"}}]),
    );
    assert_error(&r, 404, "NOT_FOUND", Some("id"), Some(&json!(999_999)));
    assert_eq!(found(router, &gallery, &json!({"limit": 1000})), before, "a refused update changed faces");
    for i in 0..3 {
        let on_shard_faces = found(cluster.shard(i), &gallery, &json!({"limit": 1000}));
        let expected: Vec<Value> =
            before.iter().filter(|f| shard_of(f["id"].as_u64().unwrap_or(0), 3) == i).cloned().collect();
        assert_eq!(on_shard_faces, expected, "faces of shard {i}");
    }
}

/// `POST /v2/galleries/{name}` creates a gallery on every shard, as `/v2/galleries/add/{name}`.
#[test]
fn post_galleries_name_is_an_alias_of_add() {
    let cluster = Cluster::start(3);
    let router = cluster.router();
    let name = format!("alias_{}", next_unique());
    let r = router.post_empty(&format!("/v2/galleries/{name}"));
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(router.count(&name), 0);
    for i in 0..3 {
        assert_eq!(cluster.shard(i).count(&name), 0, "shard {i}");
    }
    let r = router.post_empty(&format!("/v2/galleries/{name}"));
    assert_error(&r, 409, "CONFLICT", Some("name"), Some(&json!(name)));
    router.add_ok(&name, &json!([face_r(1, json!({}))]));
    assert_eq!(router.count(&name), 1);
}

// ---------------------------------------------------------------------------------------------
// Starting a router
// ---------------------------------------------------------------------------------------------

/// A router refuses to start over shards claimed in another order, or over some of them only,
/// naming a shard; it refuses an unknown config key, naming it; it starts with a documented
/// but unused key (`cache.memcache`), with a warning. None of that disturbs the cluster.
#[test]
fn a_router_refuses_a_shard_list_that_disagrees_with_the_shards() {
    let mut cluster = Cluster::start(3);
    let gallery = cluster.router().new_gallery("claimed");
    let all: Vec<u64> = (1..=60).collect();
    cluster.router().add_ok(&gallery, &faces_of(&all));
    cluster.stop_router();

    // The shard's address, however the URL around it is written.
    let port = |i: usize| cluster.shard_url(i).trim_start_matches("http://").trim_end_matches("/v2/").to_string();
    let failure = assert_refused(cluster.launch_router(&cluster.config(&[1, 0, 2])), "the shards in another order");
    assert!(
        failure.stderr.contains(&port(0)) || failure.stderr.contains(&port(1)),
        "stderr names neither misplaced shard ({} or {}):\n{}",
        cluster.shard_url(0),
        cluster.shard_url(1),
        failure.stderr
    );

    let failure = assert_refused(cluster.launch_router(&cluster.config(&[0, 1])), "2 of the 3 shards");
    let urls = cluster.shard_urls();
    assert!(
        (0..2).any(|i| failure.stderr.contains(&port(i))),
        "stderr names neither shard of {urls:?}:\n{}",
        failure.stderr
    );

    let mut config = cluster.config(&[0, 1, 2]);
    config.storage_api_extra = "  shard: []\n".into();
    let failure = assert_refused(cluster.launch_router(&config), "storage-api.shard");
    assert!(failure.stderr.contains("storage-api.shard"), "stderr does not name the key:\n{}", failure.stderr);

    let mut config = cluster.config(&[0, 1, 2]);
    config.extra = "cache: {type: memcache, memcache: {nodes: [127.0.0.1:11211]}}\n".into();
    let router = cluster.launch_router(&config).unwrap_or_else(|f| panic!("the router with a memcache cache: {f:?}"));
    assert!(stderr_says(&router, "memcache"), "no warning about memcache:\n{}", router.stderr());
    assert_eq!(stored_ids(&router, &gallery), all);
    drop(router);

    cluster.start_router(&[0, 1, 2]).unwrap_or_else(|f| panic!("the right order: {f:?}"));
    assert_eq!(stored_ids(cluster.router(), &gallery), all);
}

/// A router started while one of its shards is down starts anyway, with a warning naming the
/// shard; requests that need the shard answer 503 naming it until it is back, and then it is
/// used without a router restart.
#[test]
fn a_router_starts_with_a_shard_down_and_uses_it_once_up() {
    let mut cluster = Cluster::start(3);
    let gallery = cluster.router().new_gallery("late");
    let all: Vec<u64> = (1..=90).collect();
    cluster.router().add_ok(&gallery, &faces_of(&all));
    cluster.stop_router();
    cluster.kill_shard(2);
    let url = cluster.shard_url(2);

    cluster.start_router(&[0, 1, 2]).unwrap_or_else(|f| panic!("the router with shard 2 down: {f:?}"));
    let port = url.trim_start_matches("http://").trim_end_matches("/v2/");
    assert!(stderr_says(cluster.router(), port), "no warning names {url}:\n{}", cluster.router().stderr());
    let r = cluster.router().search(&gallery, &json!({"limit": 1000}));
    assert_error(&r, 503, "STORAGE_ERROR", Some("shard"), Some(&json!(url)));
    let r = search_ignoring_errors(cluster.router(), &gallery, &json!({"limit": 1000}));
    assert_eq!(ids(&partial(&r, &url)), all.iter().copied().filter(|&id| shard_of(id, 3) != 2).collect::<Vec<_>>());

    cluster.restart_shard(2);
    assert_eq!(stored_ids(cluster.router(), &gallery), all);
}

/// A new shard is claimed only once every shard of the list has answered: a router started while
/// the shards that hold the cluster's record are down does not make up another cluster for the
/// new one (which would then refuse the real shards); it claims it into their cluster once they
/// are back.
#[test]
fn a_new_shard_is_claimed_into_the_cluster_once_every_shard_answers() {
    let mut cluster = Cluster::start(3);
    let record = |cluster: &Cluster, i: usize| cluster.shard(i).get("/v2/admin/cluster").json()["cluster"].clone();
    let id = record(&cluster, 0)["id"].clone();
    assert!(id.is_string(), "{id}");
    cluster.stop_router();
    cluster.wipe_shard(2);
    assert_eq!(record(&cluster, 2), Value::Null);
    cluster.kill_shard(0);
    cluster.kill_shard(1);

    cluster.start_router(&[0, 1, 2]).unwrap_or_else(|f| panic!("the router with shards 0 and 1 down: {f:?}"));
    let router = cluster.router();
    assert!(stderr_says(router, "claimed once every shard has answered"), "{}", router.stderr());
    let r = router.get("/v2/galleries/list");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(record(&cluster, 2), Value::Null, "shard 2 was claimed while shards 0 and 1 were down");

    cluster.restart_shard(0);
    cluster.restart_shard(1);
    let r = cluster.router().get("/v2/galleries/list");
    assert_eq!(r.status, 200, "{}", r.body);
    let joined = record(&cluster, 2);
    assert_eq!((&joined["id"], &joined["shard"], &joined["shards"]), (&id, &json!(2), &json!(3)), "{joined}");
}
