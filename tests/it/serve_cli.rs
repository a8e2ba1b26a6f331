//! The `facedb serve` command line: schema files that must be refused (the process exits
//! non-zero and stderr names the field), custom and default schemas, `--config` YAML with flags
//! winning over it, and graceful shutdown (exit status 0) on SIGTERM and SIGINT.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::common::{
    assert_error, face, facen, full_meta, rand_vec, serve_args, standard_args, Server, TempDir, DIM, EXAMPLE_SCHEMA,
};

/// Starts `facedb serve` with `schema_yaml` as its schema; returns (exit status, stderr) of a
/// server that refused to start, and fails the test if it started.
fn refused(schema_yaml: &str) -> (Option<i32>, String) {
    let dir = TempDir::new("badschema");
    let schema = dir.write("schema.yaml", schema_yaml);
    let args = serve_args(&dir, &schema);
    match Server::launch(&args, Some(dir), true) {
        Ok(s) => panic!("facedb started with a bad schema:\n{schema_yaml}\nstderr: {}", s.stderr()),
        Err(f) => {
            assert!(!f.stdout.contains("listening"), "no listening line: {}", f.stdout);
            (f.status.and_then(|s| s.code()), f.stderr)
        }
    }
}

#[test]
fn bad_schema_files_stop_the_server_and_name_the_field() {
    let cases: [(&str, &str, &[&str]); 9] = [
        (
            "duplicate name",
            "- {id: 1, name: cam_id, field_type: string, default: ''}\n\
             - {id: 2, name: dupe_name, field_type: unsigned, default: 0}\n\
             - {id: 3, name: dupe_name, field_type: string, default: ''}\n",
            &["dupe_name"],
        ),
        (
            "duplicate id",
            "- {id: 1, name: first_field, field_type: string, default: ''}\n\
             - {id: 1, name: second_field, field_type: string, default: ''}\n",
            &["first_field", "second_field"],
        ),
        (
            "unknown field_type",
            "- {id: 1, name: cam_id, field_type: string, default: ''}\n\
             - {id: 2, name: weird_field, field_type: float, default: 0}\n",
            &["weird_field"],
        ),
        (
            "unsigned default not a number",
            "- {id: 1, name: count_field, field_type: unsigned, default: abc}\n",
            &["count_field"],
        ),
        (
            "unsigned default digits with junk",
            "- {id: 1, name: junk_field, field_type: unsigned, default: \"12x\"}\n",
            &["junk_field"],
        ),
        (
            "unsigned default negative",
            "- {id: 1, name: neg_field, field_type: unsigned, default: -5}\n",
            &["neg_field"],
        ),
        (
            "unsigned default above u64::MAX",
            "- {id: 1, name: big_field, field_type: unsigned, default: \"18446744073709551616\"}\n",
            &["big_field"],
        ),
        (
            "set[unsigned] default with a string",
            "- {id: 1, name: setu_field, field_type: \"set[unsigned]\", default: [1, x]}\n",
            &["setu_field"],
        ),
        (
            "set[string] default a number",
            "- {id: 1, name: sets_field, field_type: \"set[string]\", default: 5}\n",
            &["sets_field"],
        ),
    ];
    for (what, yaml, names) in cases {
        let (code, stderr) = refused(yaml);
        assert!(code.is_some_and(|c| c != 0), "{what}: exit status {code:?}; stderr: {stderr}");
        assert!(names.iter().any(|n| stderr.contains(n)), "{what}: stderr should name {names:?}: {stderr}");
    }
}

#[test]
fn missing_or_unreadable_schema_file_stops_the_server() {
    let dir = TempDir::new("noschema");
    let missing = dir.path().join("no-such-schema.yaml");
    let args = serve_args(&dir, &missing);
    let f = match Server::launch(&args, None, true) {
        Ok(_) => panic!("started without its schema file"),
        Err(f) => f,
    };
    assert!(f.status.and_then(|s| s.code()).is_some_and(|c| c != 0));
    assert!(f.stderr.contains("no-such-schema.yaml"), "{}", f.stderr);

    // not YAML of the right shape
    let (code, _) = refused("this: is: not: a list\n");
    assert!(code.is_some_and(|c| c != 0));
    let (code, _) = refused("- {id: 1, field_type: string, default: ''}\n");
    assert!(code.is_some_and(|c| c != 0));
}

#[test]
fn custom_schema_defaults() {
    let dir = TempDir::new("customschema");
    let schema = dir.write(
        "schema.yaml",
        "- {id: 1, name: big, field_type: unsigned, default: \"10000000000000000000\"}\n\
         - {id: 2, name: small, field_type: unsigned, default: 7}\n\
         - {id: 3, name: s, field_type: string, default: 'x'}\n\
         - {id: 4, name: empty_set, field_type: \"set[unsigned]\", default: {}}\n\
         - {id: 5, name: list_set, field_type: \"set[string]\", default: [a, b]}\n\
         - {id: 6, name: bracket_set, field_type: \"set[unsigned]\", default: []}\n\
         - {id: 7, name: u_list, field_type: \"set[unsigned]\", default: [1, 2]}\n\
         - id: 8\n  name: block_style\n  field_type: set[string]\n  default: []\n",
    );
    let mut args = standard_args(&dir);
    let n = args.len();
    args[n - 1] = schema.display().to_string();
    let s = Server::launch(&args, Some(dir), true).expect("starts with a good schema");
    s.create_gallery("g");
    s.add_ok(
        "g",
        &json!([{"id": 1, "facen": facen(&rand_vec(1, DIM))}, face(2, &rand_vec(2, DIM), json!({"big": 1, "u_list": [9]}))]),
    );
    assert_eq!(
        s.fetch("g", 1)["meta"],
        json!({"big": 10_000_000_000_000_000_000u64, "small": 7, "s": "x", "empty_set": [],
               "list_set": ["a", "b"], "bracket_set": [], "u_list": [1, 2], "block_style": []})
    );
    assert_eq!(
        s.fetch("g", 2)["meta"],
        json!({"big": 1, "small": 7, "s": "x", "empty_set": [],
               "list_set": ["a", "b"], "bracket_set": [], "u_list": [9], "block_style": []})
    );
    // the example schema's fields are not known here
    let r = s.add_faces("g", &json!([face(3, &rand_vec(3, DIM), json!({"cam_id": "x"}))]));
    assert_error(&r, 400, "BAD_PARAM", Some("meta.cam_id"), None);
}

#[test]
fn default_schema_is_the_seeds_43_fields() {
    let dir = TempDir::new("defaultschema");
    let args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.path().display().to_string(),
    ];
    let s = Server::launch(&args, Some(dir), true).expect("starts without --schema");
    s.create_gallery("g");
    s.add_ok("g", &json!([{"id": 1, "facen": facen(&rand_vec(1, DIM)), "meta": {"m:camera": 12}}]));
    let meta = s.fetch("g", 1)["meta"].clone();
    let obj = meta.as_object().expect("meta object");
    assert_eq!(obj.len(), 43, "{meta}");
    assert_eq!(meta["normalized_id"], json!(""));
    assert_eq!(meta["feat"], json!(""));
    assert_eq!(meta["m:camera"], json!(12));
    assert_eq!(meta["m:confidence"], json!(10_000_000_000_000_000_000u64));
    assert_eq!(meta["m:quality"], json!(10_000_000_000_000_000_000u64));
    assert_eq!(meta["m:matched_lists"], json!([]));
    assert_eq!(meta["m:source_photo_name"], json!(""));
    // the example schema's own keys are not in it
    let r = s.add_faces("g", &json!([face(2, &rand_vec(2, DIM), json!({"person_name": "Mary Ostin"}))]));
    assert_error(&r, 400, "BAD_PARAM", Some("meta.person_name"), None);
}

#[test]
fn config_file_and_flags_over_it() {
    let dir = TempDir::new("config");
    let config = dir.write(
        "facedb.yaml",
        &format!(
            "listen: \"127.0.0.1:0\"\ndata_dir: \"{}\"\nschema: \"{}\"\nfacen_size: 4\n\
             max_body_bytes: 100000\nmax_search_limit: 5\n",
            dir.path().display(),
            EXAMPLE_SCHEMA
        ),
    );
    let config = config.display().to_string();

    // the file alone
    let s = Server::launch(&["serve".into(), "--config".into(), config.clone()], None, true)
        .expect("starts from the config file");
    s.create_gallery("g");
    s.add_ok("g", &json!((1..=8u64).map(|i| face(i, &[1.0, i as f32, 0.0, 0.0], json!({}))).collect::<Vec<_>>()));
    assert_eq!(s.fetch("g", 1)["meta"], full_meta(json!({})), "example schema");
    let r = s.add_faces("g", &json!([face(9, &rand_vec(9, DIM), json!({}))]));
    assert_error(&r, 400, "BAD_PARAM", Some("facen"), Some(&json!(9)));
    assert_eq!(s.search_ids("g", &json!({"limit": 5})).len(), 5);
    let r = s.search("g", &json!({"limit": 6}));
    assert_error(&r, 400, "BAD_PARAM", Some("limit"), None);
    let over = format!("{{}}{}", " ".repeat(100_000));
    let r = s.raw_request("POST /v2/faces/search/g HTTP/1.1", over.as_bytes());
    assert_error(&r, 413, "BAD_PARAM", Some("body"), None);
    drop(s);

    // flags win over the file (a new data dir: the first one holds 4-d facens)
    let other = TempDir::new("config-flags");
    let s = Server::launch(
        &[
            "serve".into(),
            "--config".into(),
            config,
            "--max-search-limit".into(),
            "7".into(),
            "--facen-size".into(),
            "8".into(),
            "--data-dir".into(),
            other.path().display().to_string(),
        ],
        None,
        true,
    )
    .expect("starts from the config file and flags");
    s.create_gallery("g");
    let eight: Vec<_> =
        (1..=9u64).map(|i| face(i, &[1.0, i as f32, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0], json!({}))).collect();
    s.add_ok("g", &json!(eight));
    let r = s.add_faces("g", &json!([face(10, &[1.0, 2.0, 3.0, 4.0], json!({}))]));
    assert_error(&r, 400, "BAD_PARAM", Some("facen"), Some(&json!(10)));
    assert_eq!(s.search_ids("g", &json!({"limit": 7})).len(), 7);
    let r = s.search("g", &json!({"limit": 8}));
    assert_error(&r, 400, "BAD_PARAM", Some("limit"), None);
}

fn signal_exits_zero(signal: &str) {
    let dir = TempDir::new("signal");
    let args = standard_args(&dir);
    // launched directly (no watchdog) so the pid is the server's own
    let mut s = Server::launch(&args, Some(dir), false).expect("starts");
    s.create_gallery("g");
    s.add_ok("g", &json!([face(1, &rand_vec(1, DIM), json!({}))]));
    let st = Command::new("kill").arg(format!("-{signal}")).arg(s.pid().to_string()).status().expect("run kill");
    assert!(st.success(), "kill -{signal}");
    let status = s.wait_exit(Duration::from_secs(15));
    assert!(status.is_some(), "still running 15 s after SIG{signal}; stderr: {}", s.stderr());
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit status after SIG{signal}: {status:?}; stderr: {}",
        s.stderr()
    );
}

#[test]
fn sigterm_shuts_down_with_status_0() {
    signal_exits_zero("TERM");
}

#[test]
fn sigint_shuts_down_with_status_0() {
    signal_exits_zero("INT");
}

/// The local shards of `serve`: a new data dir gets the seed's number, max(min(memory MB //
/// 2000, cores), 1), or `--shards N`, recorded in layout.json; the faces are spread over them
/// by `shard_of`; the dir keeps its layout on any later start (another `--shards` is refused,
/// naming the setting), and its faces.
#[test]
fn serve_records_its_local_shards_and_keeps_them() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let memory_mb: usize = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .expect("MemTotal")
        / 1024;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = TempDir::new("layout-default");
    let s = Server::launch(&standard_args(&dir), None, true).expect("starts");
    let layout: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("layout.json")).expect("layout.json"))
            .expect("layout.json is JSON");
    assert_eq!(layout, json!({"shards": (memory_mb / 2000).min(cores).max(1)}));
    drop(s);

    let dir = TempDir::new("layout-three");
    let mut args = standard_args(&dir);
    args.extend(["--shards".to_string(), "3".to_string()]);
    let s = Server::launch(&args, None, true).expect("starts with --shards 3");
    s.create_gallery("g");
    let ids: Vec<u64> = (1..=60).collect();
    let faces: Vec<_> = ids.iter().map(|&id| face(id, &rand_vec(id, DIM), json!({}))).collect();
    s.add_ok("g", &json!(faces));
    let status = s.get("/v2/admin/status").json();
    let shards = status["shards"].as_array().expect("the status of 3 local shards").clone();
    assert_eq!(shards.len(), 3, "{status}");
    for (k, shard) in shards.iter().enumerate() {
        let placed = ids.iter().filter(|&&id| facedb::router::shard_of(id, 3) == k).count();
        assert_eq!(shard["status"]["faces"], json!(placed), "local shard {k}: {status}");
        assert!(dir.path().join(format!("shard-{k}")).join("wal").is_dir(), "shard-{k}/wal");
    }
    drop(s);

    args.truncate(args.len() - 2);
    args.extend(["--shards".to_string(), "2".to_string()]);
    let Err(failure) = Server::launch(&args, None, true) else { panic!("--shards 2 on a 3-shard data dir started") };
    assert!(
        failure.stderr.contains("shards: the data dir") && failure.stderr.contains("3 local shards"),
        "{}",
        failure.stderr
    );

    args.truncate(args.len() - 2);
    let s = Server::launch(&args, None, true).expect("starts again without --shards");
    assert_eq!(s.search_ids("g", &json!({"limit": 100})), ids);
    drop(s);
    drop(dir);
}

/// A layout.json of no shards (written by hand, or damaged) is refused at start: nothing could
/// be placed on it. The message names the file, the key and the value.
#[test]
fn a_layout_of_no_shards_stops_the_server() {
    let dir = TempDir::new("layout-zero");
    let layout = dir.write("layout.json", "{\"shards\": 0}\n");
    let args = standard_args(&dir);
    let failure = match Server::launch(&args, Some(dir), true) {
        Ok(s) => panic!("started on a layout of 0 shards; stderr: {}", s.stderr()),
        Err(f) => f,
    };
    assert!(failure.status.and_then(|s| s.code()).is_some_and(|c| c != 0), "exit status {:?}", failure.status);
    assert!(!failure.stdout.contains("listening"), "no listening line: {}", failure.stdout);
    assert!(
        failure.stderr.contains(&format!("{}: shards: 0 is too small", layout.display())),
        "stderr should name the file, the key and the value: {}",
        failure.stderr
    );
}
