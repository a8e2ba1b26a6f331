//! One `facedb serve` process on a data directory that outlives it, so that it can be stopped
//! and started again on the same files.
//!
//! Unlike `crate::server::Server` (a throw-away temporary directory), a [`Node`] is started
//! on a data directory the caller owns, with a `--wal-mode`, and with automatic snapshots off
//! (`--checkpoint-interval 0`): every snapshot of a run is one the harness asked for. The time
//! to readiness is measured from the spawn to the moment the `facedb listening on http://...`
//! line is read from the server's stdout (a pipe drained by a thread, so it never fills up),
//! which the server prints after recovery. [`Node::stop`] sends SIGTERM (a clean shutdown) and
//! waits for the exit; dropping a node that was not stopped kills it.
//!

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::WalMode;
use crate::server::{ProcMemory, MAX_BODY_BYTES};

const LISTENING: &str = "facedb listening on http://";
/// Recovery of a large log may take a while.
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// A clean shutdown finishes the requests under way; none is running when the harness stops.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// How to start the server.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub bin: PathBuf,
    pub data_dir: PathBuf,
    pub schema: PathBuf,
    pub dim: usize,
    pub wal_mode: WalMode,
    /// The server's stderr (its log) is appended here, across restarts.
    pub log_file: PathBuf,
}

/// A running `facedb serve`.
pub struct Node {
    child: Child,
    base_url: String,
    /// From the spawn to the listening line.
    ready: Duration,
    config: NodeConfig,
}

impl Node {
    /// Starts the server and waits until it listens.
    pub fn start(config: &NodeConfig) -> Result<Node> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.log_file)
            .with_context(|| format!("opening {}", config.log_file.display()))?;
        let spawned = Instant::now();
        let mut child = Command::new(&config.bin)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&config.data_dir)
            .arg("--schema")
            .arg(&config.schema)
            .args(["--facen-size", &config.dim.to_string()])
            .args(["--max-body-bytes", &MAX_BODY_BYTES.to_string()])
            .args(["--wal-mode", config.wal_mode.name()])
            .args(["--checkpoint-interval", "0"])
            // Restart times are the database's: no face models to load, one local shard (the
            // bench reads one database's files and status).
            .args(["--extract-workers", "0", "--shards", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", config.bin.display()))?;
        let stdout = child.stdout.take().context("the server's stdout is not a pipe")?;
        // From here on the node owns the process: any error below kills it.
        let mut node = Node { child, base_url: String::new(), ready: Duration::ZERO, config: config.clone() };
        let (sender, listening) = mpsc::channel();
        std::thread::spawn(move || {
            // Reads every line until the server exits, so that the pipe never fills up.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(address) = line.strip_prefix(LISTENING) {
                    let _ = sender.send((Instant::now(), address.trim().trim_end_matches('/').to_owned()));
                }
            }
        });
        loop {
            match listening.recv_timeout(Duration::from_millis(50)) {
                Ok((at, address)) => {
                    node.ready = at.duration_since(spawned);
                    node.base_url = format!("http://{address}");
                    return Ok(node);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = node.child.wait().context("waiting for facedb")?;
                    bail!("facedb exited ({status}) before listening; its log:\n{}", node.log_tail());
                }
            }
            if let Some(status) = node.child.try_wait().context("waiting for facedb")? {
                bail!("facedb exited ({status}) before listening; its log:\n{}", node.log_tail());
            }
            if spawned.elapsed() > START_TIMEOUT {
                bail!("facedb did not listen within {START_TIMEOUT:?}; its log:\n{}", node.log_tail());
            }
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// From the spawn to the listening line.
    pub fn ready(&self) -> Duration {
        self.ready
    }

    pub fn memory(&self) -> Option<ProcMemory> {
        ProcMemory::of_pid(self.child.id())
    }

    /// Sends SIGTERM and waits for the process to exit; returns how long that took.
    pub fn stop(mut self) -> Result<Duration> {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().context("running kill -TERM")?;
        if !sent.success() {
            bail!("kill -TERM {pid} failed ({sent})");
        }
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for facedb")? {
                if !status.success() {
                    bail!("facedb exited with {status} after SIGTERM; its log:\n{}", self.log_tail());
                }
                return Ok(started.elapsed());
            }
            if started.elapsed() > STOP_TIMEOUT {
                bail!("facedb did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The end of the server's log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.config.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Best effort: after `stop` the process is gone already.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The files under `dir` (recursively), with their sizes.
pub fn files(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let meta = entry.metadata().with_context(|| format!("reading {}", entry.path().display()))?;
        if meta.is_dir() {
            found.extend(files(&entry.path())?);
        } else {
            found.push((entry.path(), meta.len()));
        }
    }
    found.sort();
    Ok(found)
}

/// The total size of the files under `dir` (0 when it does not exist).
pub fn dir_bytes(dir: &Path) -> Result<u64> {
    Ok(files(dir)?.iter().map(|(_, len)| len).sum())
}

/// Drops the pages of every file under `dir` from the page cache: `sync FILE...` (only clean
/// pages can be dropped), then `dd iflag=nocache count=0` per file, which is
/// `posix_fadvise(POSIX_FADV_DONTNEED)` on the whole file. Other files stay cached.
pub fn drop_from_page_cache(dir: &Path) -> Result<()> {
    let found = files(dir)?;
    if found.is_empty() {
        return Ok(());
    }
    let synced = Command::new("sync").args(found.iter().map(|(path, _)| path)).status().context("running sync")?;
    if !synced.success() {
        bail!("sync of the files under {} failed ({synced})", dir.display());
    }
    for (path, _) in found {
        let mut input = std::ffi::OsString::from("if=");
        input.push(&path);
        let status = Command::new("dd")
            .arg(input)
            .args(["iflag=nocache", "count=0", "status=none"])
            .status()
            .context("running dd to drop a file from the page cache")?;
        if !status.success() {
            bail!("dd iflag=nocache on {} failed ({status})", path.display());
        }
    }
    Ok(())
}
