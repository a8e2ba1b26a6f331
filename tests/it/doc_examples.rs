//! The documentation's examples, run: every shell example of README.md, docs/api.md,
//! docs/detection.md and docs/operations.md is run against a fresh server, in the order of its
//! document (a document's examples build on each other, as for a reader following it), and its
//! output is compared with the output the document shows. One test per document.
//!
//! **What is an example.** The documents are read as markdown. A fenced block of language `sh`
//! (or `bash`) is run with `bash` from the repository root; one of language `python` with
//! `python3`. The block that follows it with only blank lines between, of no language or
//! `json`, is its output, compared with the block's stdout (its stderr is shown when it fails).
//! A command without an output block must still exit 0; every command runs under
//! `set -eo pipefail`, with a reader's environment (`PATH`, `HOME`, no proxies), in a process
//! group of its own that is killed when it ends (or after 2 minutes), so that nothing it
//! started stays behind. Shell variables and functions carry over from one block to
//! the next (the runner saves them after each block and loads them before the next), so
//! `F1=$(facen 1)` in one block serves the later ones. Every other block (a config file, a
//! request body's shape, a server start command) must say why it is not run, with an HTML
//! comment right above it: `<!-- not run: a config file for a production host -->`. A block
//! that is neither run nor marked fails the test, and the report counts the skipped blocks and
//! lists their reasons.
//!
//! **The servers.** Each test starts what its document says (`serve` with the example schema
//! for api.md, the default schema for the README, the models for detection.md, shards and a
//! router for operations.md) on free loopback ports, each with a data dir in a fresh temp dir.
//! Where a document writes one of their addresses (`127.0.0.1:18411`, `127.0.0.1:8101`...),
//! commands get the real one; in outputs the real addresses and data dirs read as the document
//! writes them (`data-example/shard-0`).
//!
//! **Comparing.** HTTP headers are compared only where the document shows some: of a response
//! head (`curl -D -`) only the headers the document lists are kept, names in any case. The rest
//! is compared as a sequence of items: a JSON value (which may span lines; whitespace outside
//! strings does not count, so a pretty-printed value equals its compact form, nor do the
//! trailing zeros of a number's fraction: `1.0` is `1`, as jq 1.6 writes it) or a line of text.
//! The masking vocabulary, for what changes from run to run (ids, timings, paths, facens):
//!
//! - `...` inside a JSON string stands for any text of that string: `"message":"..."` matches
//!   any message, `"id":"..."` any detection id, `"AACAPwAA...AAAA="` a facen by its ends;
//! - `...` anywhere else stands for any text within the item: `{"faces":250112,...}`,
//!   `"results":[...]`; a line of just `...` stands for any number of items;
//! - `$NAME` stands for the value of the shell variable `NAME` set by an earlier block
//!   (`"facen":"$F1"`);
//! - `<!-- mask: seconds bytes -->` right above a command: the values of these JSON keys are not
//!   compared (they are shown as they were in one run).
//!
//! Nothing else is masked: keys come in the order the server writes them. Run one document with
//! `cargo test --test it doc_examples::api -- --nocapture` (the report lists the blocks not run).

use std::collections::{BTreeSet, HashMap};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{models_dir, wait_timeout, Server, TempDir, EXAMPLE_SCHEMA};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The longest one block may run.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn readme() {
    // `tools/serve.sh`: the default schema, the default number of local shards.
    let mut walk = Walk::new("README.md");
    walk.serve("127.0.0.1:18411", "data", &["serve", "--extract-workers", "0"]);
    walk.run();
}

#[test]
fn api() {
    // The document's start command, with 2 local shards whatever the host (it says so), and a
    // lone `facedb shard` for the examples of a shard's cluster record.
    let mut walk = Walk::new("docs/api.md");
    walk.serve(
        "127.0.0.1:18411",
        "data-example",
        &["serve", "--schema", EXAMPLE_SCHEMA, "--shards", "2", "--extract-workers", "0"],
    );
    walk.serve("127.0.0.1:8101", "data-8101", &["shard", "--schema", EXAMPLE_SCHEMA]);
    walk.run();
}

#[test]
fn detection() {
    let models = models_dir();
    for photo in ["obama.jpg", "obama2.jpg", "biden.jpg"] {
        let path = Path::new(REPO).join("tests/images").join(photo);
        assert!(path.exists(), "{} is missing: run tools/setup.sh", path.display());
    }
    let mut walk = Walk::new("docs/detection.md");
    walk.serve("127.0.0.1:18411", "data", &["serve", "--models-dir", &models]);
    walk.run();
}

#[test]
fn operations() {
    // "A cluster on one host": two shards and a router over them.
    let mut walk = Walk::new("docs/operations.md");
    walk.serve("127.0.0.1:8101", "data-8101", &["shard", "--schema", EXAMPLE_SCHEMA]);
    walk.serve("127.0.0.1:8102", "data-8102", &["shard", "--schema", EXAMPLE_SCHEMA]);
    walk.router("127.0.0.1:18411", &["127.0.0.1:8101", "127.0.0.1:8102"]);
    walk.run();
}

// ---------------------------------------------------------------------------------------------
// A document's walk-through
// ---------------------------------------------------------------------------------------------

/// One document, its servers, and the shell state its blocks have built so far.
struct Walk {
    /// The document, relative to the repository root.
    doc: &'static str,
    servers: Vec<Server>,
    /// `(as the document writes it, as it really is)`: addresses and data dirs.
    rewrites: Vec<(String, String)>,
    /// Scripts, outputs and the saved shell state.
    work: TempDir,
    /// The shell variables after the last block, for `$NAME` in outputs.
    vars: HashMap<String, String>,
}

impl Walk {
    fn new(doc: &'static str) -> Walk {
        for tool in ["bash", "curl", "jq", "python3"] {
            let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
            assert!(found.is_ok_and(|s| s.success()), "{tool} is needed to run the docs' examples: run tools/setup.sh");
        }
        let work = TempDir::new("doc-work");
        std::fs::write(work.path().join("state.sh"), "").expect("write the shell state");
        Walk { doc, servers: Vec::new(), rewrites: Vec::new(), work, vars: HashMap::new() }
    }

    /// Starts `facedb ARGS` on a free port with a data dir in a fresh temp dir; the document
    /// calls it `addr` and its data dir `data_dir`.
    fn serve(&mut self, addr: &str, data_dir: &str, args: &[&str]) {
        let dir = TempDir::new("doc");
        let real_data = dir.path().join("data");
        let mut full: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        full.extend(["--listen".into(), "127.0.0.1:0".into(), "--data-dir".into(), real_data.display().to_string()]);
        let server = Server::launch(&full, Some(dir), true).unwrap_or_else(|f| {
            panic!("{}: facedb did not start (args {full:?}): {f:?}", self.doc);
        });
        self.rewrites.push((data_dir.to_string(), real_data.display().to_string()));
        self.add_server(addr, server);
    }

    /// Starts `facedb router` over the servers the document calls `shards`, with the default
    /// timeouts and no detection; the document calls it `addr`.
    fn router(&mut self, addr: &str, shards: &[&str]) {
        let dir = TempDir::new("doc-router");
        let mut yaml = String::from("storage-api:\n  shards:\n");
        for shard in shards {
            yaml.push_str(&format!("  - master: http://{}/v2/\n    slave: ''\n", self.real(shard)));
        }
        yaml.push_str(&format!(
            "normalized-storage:\n  dir: {}\nextract:\n  workers: 0\n",
            dir.path().join("uploads").display()
        ));
        let config = dir.write("router.yaml", &yaml);
        let args: Vec<String> = vec![
            "router".into(),
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        let server = Server::launch(&args, Some(dir), true).unwrap_or_else(|f| {
            panic!("{}: the router did not start ({yaml}): {f:?}", self.doc);
        });
        self.add_server(addr, server);
    }

    fn add_server(&mut self, addr: &str, server: Server) {
        let real = server.base_url().trim_start_matches("http://").to_string();
        self.rewrites.push((addr.to_string(), real));
        // Longest first, so that no rewrite touches a part of a longer one.
        self.rewrites.sort_by_key(|(_, real)| std::cmp::Reverse(real.len()));
        self.servers.push(server);
    }

    /// The real address of what the document calls `addr`.
    fn real(&self, addr: &str) -> String {
        self.rewrites.iter().find(|(doc, _)| doc == addr).map(|(_, real)| real.clone()).unwrap_or_else(|| addr.into())
    }

    /// Runs every example of the document, in order; fails with every mismatch.
    fn run(&mut self) {
        let started = Instant::now();
        let path = Path::new(REPO).join(self.doc);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let plan = plan(&text).unwrap_or_else(|e| panic!("{}:{e}", self.doc));
        let mut failures = Vec::new();
        for example in &plan.examples {
            if let Err(e) = self.run_example(example) {
                failures.push(format!("{}:{}: {e}", self.doc, example.line));
            }
        }
        let mut report = format!(
            "{}: {} examples run, {} failed, {} blocks not run, in {:.1} s",
            self.doc,
            plan.examples.len(),
            failures.len(),
            plan.skipped.len(),
            started.elapsed().as_secs_f64()
        );
        for (line, reason) in &plan.skipped {
            report.push_str(&format!("\n  not run, line {line}: {reason}"));
        }
        println!("{report}");
        if !failures.is_empty() {
            let mut servers = String::new();
            for server in &self.servers {
                servers.push_str(&format!("\n--- stderr of {}:\n{}", server.base_url(), tail(&server.stderr(), 40)));
            }
            panic!("{report}\n\n{}\n{servers}", failures.join("\n\n"));
        }
    }

    fn run_example(&mut self, example: &Example) -> Result<(), String> {
        let mut code = example.code.clone();
        for (doc, real) in &self.rewrites {
            if doc.contains(':') {
                code = code.replace(doc.as_str(), real);
            }
        }
        let (status, stdout, stderr) = self.execute(example.python, &code)?;
        let mut got = stdout.replace("\r\n", "\n");
        for (doc, real) in &self.rewrites {
            got = got.replace(real.as_str(), doc);
        }
        if !status {
            return Err(format!("the command failed\n--- command:\n{code}\n--- stdout:\n{got}\n--- stderr:\n{stderr}"));
        }
        let Some(expected) = &example.expected else { return Ok(()) };
        let expected = substitute(expected, &self.vars);
        compare(&expected, &got, &example.masks).map_err(|e| format!("{e}\n--- the whole output:\n{got}"))
    }

    /// Runs `code` with bash (with the saved shell state) or python3 from the repository root;
    /// returns (success, stdout, stderr).
    fn execute(&mut self, python: bool, code: &str) -> Result<(bool, String, String), String> {
        let work = self.work.path();
        let (state, vars) = (work.join("state.sh"), work.join("vars"));
        let (program, script) = if python {
            ("python3", code.to_string())
        } else {
            let save = SAVE_STATE
                .replace("{state}", &state.display().to_string())
                .replace("{vars}", &vars.display().to_string());
            let load = format!(
                "__doc_base=\" $(compgen -v | tr '\\n' ' ') \"\nset -eo pipefail\nsource '{}'\n",
                state.display()
            );
            ("bash", format!("{load}{code}\n{save}"))
        };
        let script_path = work.join("block");
        let (out_path, err_path) = (work.join("stdout"), work.join("stderr"));
        std::fs::write(&script_path, script).map_err(|e| e.to_string())?;
        let file = |p: &Path| std::fs::File::create(p).map_err(|e| e.to_string());
        let mut command = Command::new(program);
        command
            .arg(&script_path)
            .current_dir(REPO)
            // Its own process group, so that whatever it started goes with it (below).
            .process_group(0)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(file(&out_path)?)
            .stderr(file(&err_path)?);
        // A reader's environment, without proxies (the servers are on loopback).
        for (key, value) in std::env::vars() {
            let keep = ["PATH", "HOME", "USER", "TMPDIR", "LANG", "LC_ALL", "XDG_CACHE_HOME"].contains(&key.as_str())
                || key.starts_with("PYENV");
            if keep {
                command.env(key, value);
            }
        }
        let mut child = command.spawn().map_err(|e| format!("{program}: {e}"))?;
        let status = wait_timeout(&mut child, BLOCK_TIMEOUT);
        kill_group(&child);
        if status.is_none() {
            let _ = child.wait();
        }
        let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        let (stdout, mut stderr) = (read(&out_path), read(&err_path));
        if status.is_none() {
            stderr.push_str(&format!("\n(killed after {BLOCK_TIMEOUT:?})"));
        }
        if !python && status.is_some_and(|s| s.success()) {
            self.vars = read_vars(&std::fs::read(&vars).unwrap_or_default());
        }
        Ok((status.is_some_and(|s| s.success()), stdout, stderr))
    }
}

/// Kills the process group of `child` (a block run with `process_group(0)`): whatever it left
/// running in the background, or all of it after the timeout. With `libc::kill` on the group's
/// id, never through kill(1): procps' `kill -KILL -PGID` reads the group as options and
/// signals every process of the user (`kill(-1, ...)`).
fn kill_group(child: &std::process::Child) {
    let Ok(group) = libc::pid_t::try_from(child.id()) else { return };
    if group > 1 {
        // SAFETY: kill(2) with a negative pid signals only the processes of that group.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

/// Appended to every shell block: saves the functions and the variables the blocks made (not
/// those bash starts with, `__doc_base`) for the next block, and writes them NUL-separated to
/// `{vars}` for `$NAME` in outputs.
const SAVE_STATE: &str = r#"
__doc_keep() {
  case "$__doc_base" in *" $1 "*) return 1 ;; esac
  case "$1" in _*|BASH*|FUNCNAME|PIPESTATUS) return 1 ;; esac
}
{ declare -f | sed '/^__doc_keep ()/,/^}/d'
  for __v in $(compgen -v); do if __doc_keep "$__v"; then declare -p "$__v"; fi; done
} > '{state}.new'
mv '{state}.new' '{state}'
for __v in $(compgen -v); do if __doc_keep "$__v"; then printf '%s\0%s\0' "$__v" "${!__v}"; fi; done > '{vars}'
"#;

fn read_vars(bytes: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.split('\0');
    let mut vars = HashMap::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        vars.insert(name.to_string(), value.to_string());
    }
    vars
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `$NAME` replaced by the value of the shell variable `NAME`, where it is one.
fn substitute(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        match vars.get(&after[..len]) {
            Some(value) if len > 0 => out.push_str(value),
            _ => out.push_str(&rest[at..at + 1 + len]),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// The markdown: blocks, examples, skips
// ---------------------------------------------------------------------------------------------

/// A fenced block of the document.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    text: String,
    /// The HTML comments right above it (blank lines between allowed), without `<!--`/`-->`.
    notes: Vec<String>,
    /// Only blank lines since the previous block.
    adjacent: bool,
}

#[derive(Debug)]
struct Example {
    line: usize,
    python: bool,
    code: String,
    expected: Option<String>,
    masks: Vec<String>,
}

#[derive(Debug, Default)]
struct Plan {
    examples: Vec<Example>,
    /// (line, reason) of the blocks not run.
    skipped: Vec<(usize, String)>,
}

fn blocks(doc: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut blocks = Vec::new();
    let mut last_close: Option<usize> = None;
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            i += 1;
            continue;
        };
        let (open, indent) = (i, lines[i].len() - trimmed.len());
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && lines[i].trim() != "```" {
            let line = lines[i];
            let spaces = line.len() - line.trim_start_matches(' ').len();
            body.push(&line[spaces.min(indent)..]);
            i += 1;
        }
        if i == lines.len() {
            return Err(format!("{}: a block that is not closed", open + 1));
        }
        let mut notes = Vec::new();
        let mut j = open;
        while j > 0 {
            let above = lines[j - 1].trim();
            if let Some(note) = above.strip_prefix("<!--").and_then(|n| n.strip_suffix("-->")) {
                notes.push(note.trim().to_string());
            } else if !above.is_empty() {
                break;
            }
            j -= 1;
        }
        notes.reverse();
        let adjacent = last_close.is_some_and(|c| lines[c + 1..open].iter().all(|l| l.trim().is_empty()));
        blocks.push(Block {
            line: open + 1,
            lang: info.trim().to_string(),
            text: body.join("\n") + "\n",
            notes,
            adjacent,
        });
        last_close = Some(i);
        i += 1;
    }
    Ok(blocks)
}

/// Which blocks run, with which output, and which are skipped why.
fn plan(doc: &str) -> Result<Plan, String> {
    let blocks = blocks(doc)?;
    let mut plan = Plan::default();
    let mut i = 0;
    while i < blocks.len() {
        let block = &blocks[i];
        let command = ["sh", "bash", "python"].contains(&block.lang.as_str());
        let output = blocks.get(i + 1).filter(|next| {
            command && next.adjacent && next.notes.is_empty() && ["", "json"].contains(&next.lang.as_str())
        });
        let mut not_run = None;
        let mut masks = Vec::new();
        for note in &block.notes {
            if let Some(reason) = note.strip_prefix("not run:") {
                if reason.trim().is_empty() {
                    return Err(format!("{}: `not run:` without a reason", block.line));
                }
                not_run = Some(reason.trim().to_string());
            } else if let Some(keys) = note.strip_prefix("mask:") {
                masks.extend(keys.split([' ', ',']).filter(|k| !k.is_empty()).map(String::from));
            }
        }
        if let Some(reason) = not_run {
            plan.skipped.push((block.line, reason));
        } else if command {
            plan.examples.push(Example {
                line: block.line,
                python: block.lang == "python",
                code: block.text.clone(),
                expected: output.map(|o| o.text.clone()),
                masks,
            });
        } else {
            return Err(format!(
                "{}: a ```{} block that is neither run nor marked `<!-- not run: why -->` (an output block \
                 follows its command with only blank lines between)",
                block.line, block.lang
            ));
        }
        i += if output.is_some() { 2 } else { 1 };
    }
    Ok(plan)
}

// ---------------------------------------------------------------------------------------------
// Comparing an output with the document's
// ---------------------------------------------------------------------------------------------

/// Whether `line` is an HTTP status line (`HTTP/1.1 200 OK`).
fn is_status_line(line: &str) -> bool {
    line.starts_with("HTTP/")
        && line
            .split_whitespace()
            .nth(1)
            .is_some_and(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
}

/// The text with its response heads reduced to the headers `keep` names (all, when `None`),
/// and header names lower-cased; also the names seen.
fn heads(text: &str, keep: Option<&BTreeSet<String>>) -> (String, BTreeSet<String>) {
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    let mut in_head = false;
    // A body without a final newline, then the next response of the same block.
    let split = text.replace("}HTTP/", "}\nHTTP/").replace("]HTTP/", "]\nHTTP/");
    for line in split.lines() {
        if is_status_line(line) {
            in_head = true;
        } else if line.trim().is_empty() {
            in_head = false;
        } else if in_head {
            if let Some((name, value)) = line.split_once(':') {
                let name = name.trim().to_ascii_lowercase();
                seen.insert(name.clone());
                if keep.is_none_or(|k| k.contains(&name)) {
                    out.push_str(&format!("{name}: {}\n", value.trim()));
                }
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, seen)
}

/// The items of an output: JSON values (whitespace outside strings removed) and lines of text.
fn items(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut items = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let mut item = String::new();
        if chars[i] == '{' || chars[i] == '[' {
            let (mut depth, mut scan) = (0usize, JsonScan::default());
            while i < chars.len() {
                let c = chars[i];
                i += 1;
                if scan.in_string(c) {
                    item.push(c);
                    continue;
                }
                match c {
                    '{' | '[' => depth += 1,
                    '}' | ']' => depth = depth.saturating_sub(1),
                    c if c.is_whitespace() => continue,
                    _ => {}
                }
                item.push(c);
                if depth == 0 {
                    break;
                }
            }
            item = trim_fractions(&item);
        } else {
            while i < chars.len() && chars[i] != '\n' {
                item.push(chars[i]);
                i += 1;
            }
            item = item.trim_end().to_string();
        }
        items.push(item);
    }
    items
}

/// Where a scan of JSON text is: inside a string (just after a backslash, or not) or outside.
#[derive(Default)]
struct JsonScan {
    in_string: bool,
    escaped: bool,
}

impl JsonScan {
    /// Takes the next character; whether it belongs to a string (its quotes included).
    fn in_string(&mut self, c: char) -> bool {
        if !self.in_string {
            self.in_string = c == '"';
            return self.in_string;
        }
        match (self.escaped, c) {
            (true, _) => self.escaped = false,
            (false, '\\') => self.escaped = true,
            (false, '"') => self.in_string = false,
            _ => {}
        }
        true
    }
}

/// The JSON item with the trailing zeros of its numbers' fractions removed (`1.0` is `1`,
/// `0.50` is `0.5`), outside strings: the server writes `1.0` where jq 1.6 writes `1`.
fn trim_fractions(item: &str) -> String {
    let chars: Vec<char> = item.chars().collect();
    let mut out = String::new();
    let mut scan = JsonScan::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        out.push(c);
        if scan.in_string(c) {
            continue;
        }
        if c.is_ascii_digit() && chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
            let mut fraction = String::new();
            i += 1;
            while let Some(&d) = chars.get(i).filter(|d| d.is_ascii_digit()) {
                fraction.push(d);
                i += 1;
            }
            let kept = fraction.trim_end_matches('0');
            if !kept.is_empty() {
                out.push('.');
                out.push_str(kept);
            }
        }
    }
    out
}

/// The values of the JSON keys `keys` replaced by `"<masked>"`.
fn mask(item: &str, keys: &[String]) -> String {
    let mut item = item.to_string();
    for key in keys {
        let needle = format!("\"{key}\":");
        let mut from = 0;
        while let Some(at) = item[from..].find(&needle) {
            let start = from + at + needle.len();
            let rest = &item[start..];
            let len = if rest.starts_with('"') {
                let mut escaped = false;
                rest.char_indices()
                    .skip(1)
                    .find(|&(_, c)| {
                        let end = !escaped && c == '"';
                        escaped = !escaped && c == '\\';
                        end
                    })
                    .map_or(rest.len(), |(k, _)| k + 1)
            } else {
                rest.find([',', '}', ']']).unwrap_or(rest.len())
            };
            item.replace_range(start..start + len, "\"<masked>\"");
            from = start;
        }
    }
    item
}

/// A part of a document's item: literal text, or `...`.
#[derive(Debug)]
enum Piece {
    Text(String),
    /// `...` outside a JSON string: any text.
    Any,
    /// `...` inside a JSON string: any text without a `"`.
    AnyInString,
}

fn pieces(pattern: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("...") {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
            pieces.push(if in_string { Piece::AnyInString } else { Piece::Any });
            rest = &rest[3..];
            escaped = false;
            continue;
        }
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = in_string,
            (false, '"') => in_string = !in_string,
            _ => {}
        }
        text.push(c);
        rest = &rest[c.len_utf8()..];
    }
    pieces.push(Piece::Text(text));
    pieces
}

/// Whether `text` matches `pieces` from start to end.
fn matches(pieces: &[Piece], text: &str) -> bool {
    let Some((first, rest)) = pieces.split_first() else { return text.is_empty() };
    let limit = match first {
        Piece::Text(literal) => return text.strip_prefix(literal.as_str()).is_some_and(|t| matches(rest, t)),
        Piece::Any => text.len(),
        Piece::AnyInString => string_end(text),
    };
    // Only where the next literal starts: a quick test before the recursion.
    let next = match rest.first() {
        Some(Piece::Text(literal)) => literal.as_str(),
        _ => "",
    };
    (0..=limit).filter(|&k| text.is_char_boundary(k) && text[k..].starts_with(next)).any(|k| matches(rest, &text[k..]))
}

/// Where the JSON string `text` is inside of ends: its first `"` that is not escaped.
fn string_end(text: &str) -> usize {
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return at,
            _ => {}
        }
    }
    text.len()
}

/// Whether the output's items match the document's: each item by [`matches`], and a `...`
/// item standing for any number of items.
fn match_items(doc: &[(String, Vec<Piece>)], got: &[String]) -> bool {
    let Some(((text, pieces), rest)) = doc.split_first() else { return got.is_empty() };
    if text == "..." {
        return (0..=got.len()).any(|k| match_items(rest, &got[k..]));
    }
    got.split_first().is_some_and(|(item, got_rest)| matches(pieces, item) && match_items(rest, got_rest))
}

/// Compares an output with the document's (see the module comment).
fn compare(expected: &str, got: &str, masks: &[String]) -> Result<(), String> {
    let (expected, shown) = heads(expected, None);
    let (got, _) = heads(got, Some(&shown));
    let want: Vec<String> = items(&expected).iter().map(|i| mask(i, masks)).collect();
    let have: Vec<String> = items(&got).iter().map(|i| mask(i, masks)).collect();
    let doc: Vec<(String, Vec<Piece>)> = want.iter().map(|i| (i.clone(), pieces(i))).collect();
    if match_items(&doc, &have) {
        return Ok(());
    }
    // Point at the first item that differs (exact while the document has no `...` line).
    let at = doc.iter().zip(&have).position(|((_, p), h)| !matches(p, h)).unwrap_or(doc.len().min(have.len()));
    Err(format!(
        "the output differs from the document's, first at item {}:\n--- document:\n{}\n--- output:\n{}",
        at + 1,
        want.get(at).map_or("(nothing)", String::as_str),
        have.get(at).map_or("(nothing)", String::as_str),
    ))
}

// ---------------------------------------------------------------------------------------------
// The runner's own tests
// ---------------------------------------------------------------------------------------------

#[test]
fn the_runner_masks_only_what_its_vocabulary_says() {
    let ok = |doc: &str, got: &str| compare(doc, got, &[]).is_ok();
    // Headers the document does not show are left out; names in any case.
    let head = "HTTP/1.1 200 OK\r\nx-search-stat: without_index\r\ndate: today\r\n\r\n{\"a\": 1}";
    assert!(ok("HTTP/1.1 200 OK\nX-search-stat: without_index\n\n{\"a\":1}", &head.replace("\r\n", "\n")));
    let two = "HTTP/1.1 404 Not Found\ndate: today\n\n{\"a\":1}HTTP/1.1 200 OK\ndate: today\n\n[]";
    assert!(ok("HTTP/1.1 404 Not Found\n\n{\"a\":1}\nHTTP/1.1 200 OK\n\n[]", two));
    assert!(!ok("HTTP/1.1 200 OK\nX-search-stat: with_index\n\n{\"a\":1}", &head.replace("\r\n", "\n")));
    // `...` in a string: any text of that string, not past its end.
    let error = r#"{"error":{"code":400,"message":"bad","param":"x"}}"#;
    assert!(ok(r#"{"error":{"code":400,"message":"...","param":"x"}}"#, error));
    assert!(!ok(r#"{"error":{"code":400,"message":"..."}}"#, error));
    assert!(ok(r#"{"message":"...","param":"x"}"#, r#"{"message":"gallery \"x\" not found","param":"x"}"#));
    // `...` outside strings, and a line of `...`.
    assert!(ok(r#"{"error":{...}}"#, error));
    assert!(ok("a\n...\nd", "a\nb\nc\nd"));
    assert!(!ok("a\n...\nd", "a\nb\nc"));
    // Pretty and compact JSON are the same; two values on one line are two items.
    assert!(ok("{\"a\": [1,\n  2]}\n{\"b\":2}", "{\"a\":[1,2]}{\"b\":2}"));
    assert!(!ok("{\"a\":1}", "{\"a\":2}"));
    // Numbers: trailing zeros of a fraction do not count (jq 1.6 writes 1.0 as 1), digits do.
    assert!(ok("[1.0,0.50,\"1.0\",10]", "[1,0.5,\"1.0\",10]"));
    assert!(!ok("[\"1.0\"]", "[\"1\"]"));
    assert!(!ok("[0.96]", "[0.969]"));
    assert!(ok("[0.96...]", "[0.9693]"));
    // Masked keys.
    assert!(compare(r#"{"seconds":0.5,"x":"a"}"#, r#"{"seconds":0.25,"x":"a"}"#, &["seconds".into()]).is_ok());
    assert!(compare(r#"{"seconds":0.5,"x":"a"}"#, r#"{"seconds":0.25,"x":"b"}"#, &["seconds".into()]).is_err());
    let vars = HashMap::from([("F1".to_string(), "AAA=".to_string())]);
    assert_eq!(substitute("\"$F1\" $F9 $", &vars), "\"AAA=\" $F9 $");
}

#[test]
fn the_runner_pairs_commands_with_outputs_and_needs_a_reason_to_skip() {
    let doc = "text\n\n```sh\necho 1\n```\n```\n1\n```\n\n<!-- not run: a start command -->\n```sh\nserve\n```\n\
               ```\nlistening\n```\n<!-- mask: seconds -->\n```sh\necho 2\n```\n\nprose\n\n```json\n{}\n```\n";
    let error = plan(doc).expect_err("a json block after prose is neither run nor marked");
    assert!(error.starts_with("24:"), "{error}");
    let plan = plan(&doc.replace("prose\n\n```json\n{}\n```\n", "")).expect("a plan");
    assert_eq!(plan.skipped, vec![(11, "a start command".to_string())]);
    let examples: Vec<_> = plan.examples.iter().map(|e| (e.line, e.expected.clone(), e.masks.clone())).collect();
    assert_eq!(examples, vec![(3, Some("1\n".into()), vec![]), (18, None, vec!["seconds".to_string()])]);
}
