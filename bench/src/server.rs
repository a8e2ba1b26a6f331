//! The real `facedb serve` process, started by the harness on a free loopback port.
//!
//! [`Server::start`] runs `facedb serve --listen 127.0.0.1:0` with a fresh data directory and
//! a schema file in a temporary directory, waits for the line
//! `facedb listening on http://HOST:PORT` (stdout goes to a file that is polled, so no pipe
//! can ever fill up or close under the server), and kills the process when dropped, also when
//! the harness fails half-way. The server's memory is read from `/proc/<pid>/status`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

const LISTENING: &str = "facedb listening on http://";
const START_TIMEOUT: Duration = Duration::from_secs(60);
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

/// A running `facedb serve`; dropping it kills the process.
pub struct Server {
    child: Child,
    base_url: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server for vectors of `dim` components and the metadata schema `schema_yaml`.
    pub fn start(bin: &Path, dim: usize, schema_yaml: &str) -> Result<Server> {
        let dir = tempfile::Builder::new().prefix("facedb-bench-").tempdir().context("creating a temp dir")?;
        let schema = dir.path().join("schema.yaml");
        std::fs::write(&schema, schema_yaml).with_context(|| format!("writing {}", schema.display()))?;
        let stdout = File::create(dir.path().join("stdout.log")).context("creating the server's stdout log")?;
        let stderr = File::create(dir.path().join("stderr.log")).context("creating the server's stderr log")?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--schema")
            .arg(&schema)
            .arg("--facen-size")
            .arg(dim.to_string())
            .arg("--max-body-bytes")
            .arg(MAX_BODY_BYTES.to_string())
            // The database alone: no face models to load.
            .arg("--extract-workers")
            .arg("0")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        // From here on the guard owns the process: any error below kills it.
        let mut server = Server { child, base_url: String::new(), dir };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = std::fs::read_to_string(server.dir.path().join("stdout.log")).unwrap_or_default();
            if let Some(address) = out.lines().find_map(|line| line.strip_prefix(LISTENING)) {
                server.base_url = format!("http://{}", address.trim().trim_end_matches('/'));
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait().context("waiting for facedb")? {
                bail!("facedb exited ({status}) before listening; its stderr:\n{}", server.stderr_log());
            }
            if Instant::now() > deadline {
                bail!(
                    "facedb did not print its listening line in {START_TIMEOUT:?}; its stderr:\n{}",
                    server.stderr_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's stderr so far (its log), for error messages.
    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
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
