//! The real facedb processes the harness starts on free loopback ports: `facedb serve`, and
//! the `facedb shard` and `facedb router` processes of a local cluster (`cluster.rs`).
//!
//! [`Server::start`] runs `facedb serve --listen 127.0.0.1:0` with a fresh data directory and
//! a schema file in a temporary directory. Every process is started the same way
//! ([`Server::launch`], then [`Server::wait_listening`]): its stdout and stderr go to files
//! (polled for the line `facedb listening on http://HOST:PORT`, so no pipe can ever fill up or
//! close under the server), and it is killed when its [`Server`] is dropped, also when the
//! harness fails half-way. A process's memory is read from `/proc/<pid>/status`.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

const LISTENING: &str = "facedb listening on http://";
/// How long a process may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Large enough for any load batch the harness sends, with room to spare.
pub const MAX_BODY_BYTES: usize = 256 << 20;

/// The `facedb` binary: `flag` (`--facedb-bin`), or the one next to this executable.
pub fn facedb_bin(flag: Option<&Path>) -> Result<PathBuf> {
    let path = match flag {
        Some(path) => path.to_owned(),
        None => std::env::current_exe().context("cannot find the bench's own path")?.with_file_name("facedb"),
    };
    if !path.is_file() {
        bail!(
            "the facedb binary {} does not exist: build it (cargo build --release -p facedb) or pass --facedb-bin",
            path.display()
        );
    }
    Ok(path)
}

/// The flags of a database process (`facedb serve` or `facedb shard`): a free loopback port,
/// the data directory `data_dir`, the schema file `schema`, vectors of `dim` components, and
/// room for the largest load batch.
pub fn storage_args(data_dir: &Path, schema: &Path, dim: usize) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--listen".into(), "127.0.0.1:0".into(), "--data-dir".into()];
    args.push(data_dir.into());
    args.push("--schema".into());
    args.push(schema.into());
    args.extend(["--facen-size".into(), dim.to_string().into()]);
    args.extend(["--max-body-bytes".into(), MAX_BODY_BYTES.to_string().into()]);
    args
}

/// A running facedb process; dropping it kills the process.
pub struct Server {
    child: Child,
    /// `facedb serve`, `facedb shard 0`, ...: for messages.
    name: String,
    /// Empty until [`Server::wait_listening`] has read the listening line.
    base_url: String,
    /// Holds `stdout.log` and `stderr.log`.
    log_dir: PathBuf,
    launched: Instant,
    /// The temporary directory of a `facedb serve` started by [`Server::start`], removed once
    /// the process is killed.
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts `facedb serve` for vectors of `dim` components and the metadata schema
    /// `schema_yaml`, in a temporary directory of its own, and waits until it listens.
    pub fn start(bin: &Path, dim: usize, schema_yaml: &str) -> Result<Server> {
        let dir = tempfile::Builder::new().prefix("facedb-bench-").tempdir().context("creating a temp dir")?;
        let schema = dir.path().join("schema.yaml");
        std::fs::write(&schema, schema_yaml).with_context(|| format!("writing {}", schema.display()))?;
        let mut args: Vec<OsString> = vec!["serve".into()];
        args.extend(storage_args(&dir.path().join("data"), &schema, dim));
        // The database alone: no face models to load; one local shard, so that the figures
        // stay those of one database (`--shards N` measures a router over N shard processes).
        args.extend(["--extract-workers".into(), "0".into(), "--shards".into(), "1".into()]);
        let mut server = Server::launch(bin, "facedb serve", &args, dir.path())?;
        server._dir = Some(dir);
        server.wait_listening(Instant::now() + START_TIMEOUT)?;
        Ok(server)
    }

    /// Spawns `bin args` with its stdout and stderr in `log_dir` (which must exist), without
    /// waiting for it: from here on the returned guard owns the process.
    pub fn launch(bin: &Path, name: &str, args: &[OsString], log_dir: &Path) -> Result<Server> {
        let stdout = File::create(log_dir.join("stdout.log"))
            .with_context(|| format!("creating the stdout log of {name} in {}", log_dir.display()))?;
        let stderr = File::create(log_dir.join("stderr.log"))
            .with_context(|| format!("creating the stderr log of {name} in {}", log_dir.display()))?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {name} ({})", bin.display()))?;
        Ok(Server {
            child,
            name: name.to_owned(),
            base_url: String::new(),
            log_dir: log_dir.to_owned(),
            launched: Instant::now(),
            _dir: None,
        })
    }

    /// Waits until the process prints its listening line (it may recover its data first);
    /// an error if it exits before, or if `deadline` passes.
    pub fn wait_listening(&mut self, deadline: Instant) -> Result<()> {
        let name = &self.name;
        loop {
            let out = std::fs::read_to_string(self.log_dir.join("stdout.log")).unwrap_or_default();
            if let Some(address) = out.lines().find_map(|line| line.strip_prefix(LISTENING)) {
                self.base_url = format!("http://{}", address.trim().trim_end_matches('/'));
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().with_context(|| format!("waiting for {name}"))? {
                bail!("{name} exited ({status}) before listening; its stderr:\n{}", self.stderr_log());
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} did not print its listening line in {:.0?}; its stderr:\n{}",
                    self.launched.elapsed(),
                    self.stderr_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `facedb serve`, `facedb shard 0`, ...
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's stderr so far (its log), for error messages.
    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.log_dir.join("stderr.log")).unwrap_or_default()
    }

    /// The last `lines` lines of the server's stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let log = self.stderr_log();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's memory now, from `/proc` (Linux only).
    pub fn memory(&self) -> Option<ProcMemory> {
        ProcMemory::of_pid(self.pid())
    }

    /// The server's peak resident memory so far, from `/proc` (Linux only).
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.memory().map(|m| m.vm_hwm_bytes)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Best effort: the process may have died already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process: `VmRSS` (now) and `VmHWM` (peak) of `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcMemory {
    pub vm_rss_bytes: u64,
    pub vm_hwm_bytes: u64,
}

impl ProcMemory {
    pub fn of_pid(pid: u32) -> Option<ProcMemory> {
        ProcMemory::of_status_file(&format!("/proc/{pid}/status"))
    }

    /// This process (the harness).
    pub fn of_self() -> Option<ProcMemory> {
        ProcMemory::of_status_file("/proc/self/status")
    }

    fn of_status_file(path: &str) -> Option<ProcMemory> {
        let status = std::fs::read_to_string(path).ok()?;
        Some(ProcMemory { vm_rss_bytes: kib_field(&status, "VmRSS:")?, vm_hwm_bytes: kib_field(&status, "VmHWM:")? })
    }
}

/// A `Name:   1234 kB` line of a `/proc/<pid>/status` text, in bytes.
fn kib_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `VmHWM` of a `/proc/<pid>/status` file, in bytes.
pub fn peak_rss_bytes(status_file: &str) -> Option<u64> {
    ProcMemory::of_status_file(status_file).map(|m| m.vm_hwm_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_status_fields() {
        let status = "Name:\tfacedb\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(kib_field(status, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(kib_field(status, "VmSwap:"), None);
        assert!(ProcMemory::of_self().is_some_and(|m| m.vm_rss_bytes > 0));
    }
}
