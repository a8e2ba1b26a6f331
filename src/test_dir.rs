//! A temporary directory for unit tests, removed with everything in it when dropped.

use std::path::PathBuf;

pub struct TestDir(pub PathBuf);

impl TestDir {
    /// A new empty directory whose name holds `label`, the process id and the time.
    pub fn new(label: &str) -> TestDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("facedb-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TestDir(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
