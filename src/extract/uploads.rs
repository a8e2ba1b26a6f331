//! Normalized face images: the aligned chip of every face added from a detection, kept as a
//! content-addressed PNG under the data directory (`uploads/<sha256>.png`) and served at
//! `GET /uploads/<name>`. Migrating a gallery to another model re-extracts facens from them.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The directory of normalized face images.
#[derive(Debug, Clone)]
pub struct Uploads {
    dir: PathBuf,
}

impl Uploads {
    /// Uses (and creates) `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Uploads> {
        std::fs::create_dir_all(dir)?;
        Ok(Uploads { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores a PNG under its content's name and returns the name; storing the same bytes
    /// again is a no-op. The file is synced before the name is returned, so a face that names
    /// it never outlives it.
    pub fn store(&self, png: &[u8]) -> Result<String> {
        let name = format!("{:x}.png", Sha256::digest(png));
        let path = self.dir.join(&name);
        if path.exists() {
            return Ok(name);
        }
        let io = |e: std::io::Error| Error::internal(format!("cannot store a normalized face image: {e}"));
        let temp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&temp).map_err(io)?;
        file.write_all(png).and_then(|()| file.sync_all()).map_err(io)?;
        std::fs::rename(&temp, &path).map_err(io)?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(name)
    }

    /// The bytes stored under `name`; a name that is not one this store gives is a 404 too,
    /// so no path outside the directory can be asked for.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let not_found = || {
            Error::new(404, crate::error::ErrorKind::NotFound, format!("no normalized face image {name:?}"))
                .with_param("name")
                .with_value(name)
        };
        if !is_upload_name(name) {
            return Err(not_found());
        }
        std::fs::read(self.dir.join(name)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => not_found(),
            _ => Error::internal(format!("cannot read normalized face image {name}: {e}")),
        })
    }
}

/// `<64 lowercase hex digits>.png`.
fn is_upload_name(name: &str) -> bool {
    name.strip_suffix(".png")
        .is_some_and(|hash| hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_by_content_and_serves_only_its_own_names() {
        let dir = crate::test_dir::TestDir::new("uploads");
        let uploads = Uploads::open(&dir.0.join("uploads")).unwrap();
        let a = uploads.store(b"\x89PNG one").unwrap();
        assert_eq!(uploads.store(b"\x89PNG one").unwrap(), a);
        let b = uploads.store(b"\x89PNG two").unwrap();
        assert_ne!(a, b);
        assert_eq!(uploads.read(&a).unwrap(), b"\x89PNG one");
        for bad in ["../etc/passwd", "x.png", &a.to_uppercase(), &a.replace(".png", ".jpg")] {
            assert_eq!(uploads.read(bad).unwrap_err().code, 404, "{bad}");
        }
        let missing = format!("{}.png", "0".repeat(64));
        assert_eq!(uploads.read(&missing).unwrap_err().code, 404);
        let leftovers = std::fs::read_dir(uploads.dir()).unwrap().count();
        assert_eq!(leftovers, 2, "no temporary file is left behind");
    }
}
