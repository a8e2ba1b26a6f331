//! The TEXMEX `.fvecs` / `.ivecs` files: per vector a little-endian int32 `d`, then `d`
//! little-endian float32 (fvecs) or int32 (ivecs) values.
//!
//! Base and query files have one length for every row; ground-truth files may not (a
//! filtered query can have fewer passing faces than `k_truth`), so rows are read as they come.
//! Files are written to `<path>.tmp-<pid>` and renamed into place, so a crash never leaves a
//! half-written file under the final name.

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A file being written under a temporary name; [`AtomicFile::commit`] renames it into place.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    writer: BufWriter<File>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<AtomicFile> {
        let mut name = path.file_name().context("a file path has no file name")?.to_owned();
        name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(name);
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(AtomicFile { path: path.to_owned(), tmp, writer: BufWriter::with_capacity(1 << 20, file) })
    }

    pub fn writer(&mut self) -> &mut BufWriter<File> {
        &mut self.writer
    }

    /// Flushes, syncs and renames the file to its final name.
    pub fn commit(self) -> Result<()> {
        let AtomicFile { path, tmp, writer } = self;
        let file =
            writer.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }
}

/// Appends one fvecs row.
pub fn write_f32_row(out: &mut impl Write, row: &[f32]) -> std::io::Result<()> {
    out.write_all(&(row.len() as i32).to_le_bytes())?;
    for x in row {
        out.write_all(&x.to_le_bytes())?;
    }
    Ok(())
}

/// Appends one ivecs row.
pub fn write_i32_row(out: &mut impl Write, row: &[i32]) -> std::io::Result<()> {
    out.write_all(&(row.len() as i32).to_le_bytes())?;
    for x in row {
        out.write_all(&x.to_le_bytes())?;
    }
    Ok(())
}

/// Writes a whole `.fvecs` file of rows of any lengths.
pub fn write_fvecs<'a>(path: &Path, rows: impl IntoIterator<Item = &'a [f32]>) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    for row in rows {
        write_f32_row(file.writer(), row).with_context(|| format!("writing {}", path.display()))?;
    }
    file.commit()
}

/// Writes a whole `.ivecs` file of rows of any lengths.
pub fn write_ivecs<'a>(path: &Path, rows: impl IntoIterator<Item = &'a [i32]>) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    for row in rows {
        write_i32_row(file.writer(), row).with_context(|| format!("writing {}", path.display()))?;
    }
    file.commit()
}

/// Reads rows of 4-byte values, each row as its raw little-endian words.
fn read_rows(path: &Path, mut each: impl FnMut(&[[u8; 4]]) -> Result<()>) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut row: Vec<[u8; 4]> = Vec::new();
    let mut row_number = 0usize;
    loop {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        let len = i32::from_le_bytes(len);
        if !(0..=1 << 20).contains(&len) {
            bail!("{}: row {row_number} claims {len} values", path.display());
        }
        row.resize(len as usize, [0; 4]);
        let bytes = row.as_mut_slice().as_flattened_mut();
        reader.read_exact(bytes).with_context(|| format!("{}: row {row_number} is cut short", path.display()))?;
        each(&row)?;
        row_number += 1;
    }
}

/// Reads a `.fvecs` file whose rows all have one length; returns (dimension, values row-major).
/// An empty file has dimension 0.
pub fn read_fvecs_matrix(path: &Path) -> Result<(usize, Vec<f32>)> {
    let size = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    let mut values: Vec<f32> = Vec::with_capacity((size / 4) as usize);
    let mut dim: Option<usize> = None;
    read_rows(path, |row| {
        match dim {
            None => dim = Some(row.len()),
            Some(d) if d != row.len() => {
                bail!("{}: rows of {d} and {} values; expected one length", path.display(), row.len())
            }
            Some(_) => {}
        }
        values.extend(row.iter().map(|b| f32::from_le_bytes(*b)));
        Ok(())
    })?;
    Ok((dim.unwrap_or(0), values))
}

/// Reads a `.fvecs` file row by row (rows may differ in length).
pub fn read_fvecs_rows(path: &Path) -> Result<Vec<Vec<f32>>> {
    let mut rows = Vec::new();
    read_rows(path, |row| {
        rows.push(row.iter().map(|b| f32::from_le_bytes(*b)).collect());
        Ok(())
    })?;
    Ok(rows)
}

/// Reads an `.ivecs` file row by row (rows may differ in length).
pub fn read_ivecs_rows(path: &Path) -> Result<Vec<Vec<i32>>> {
    let mut rows = Vec::new();
    read_rows(path, |row| {
        rows.push(row.iter().map(|b| i32::from_le_bytes(*b)).collect());
        Ok(())
    })?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_byte_layout() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.fvecs");
        write_fvecs(&f, [&[1.0f32, -2.5][..], &[0.0, 3.0]]).unwrap();
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(bytes.len(), 2 * (4 + 2 * 4));
        assert_eq!(&bytes[..4], &2i32.to_le_bytes());
        assert_eq!(&bytes[4..8], &1.0f32.to_le_bytes());
        assert_eq!(read_fvecs_matrix(&f).unwrap(), (2, vec![1.0, -2.5, 0.0, 3.0]));

        let i = dir.path().join("t.ivecs");
        write_ivecs(&i, [&[5i32, 7, 9][..], &[], &[1]]).unwrap();
        assert_eq!(read_ivecs_rows(&i).unwrap(), vec![vec![5, 7, 9], vec![], vec![1]]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file is left");

        let ragged = dir.path().join("r.fvecs");
        write_fvecs(&ragged, [&[1.0f32][..], &[1.0, 2.0]]).unwrap();
        assert!(read_fvecs_matrix(&ragged).is_err());
        assert_eq!(read_fvecs_rows(&ragged).unwrap(), vec![vec![1.0], vec![1.0, 2.0]]);

        std::fs::write(&ragged, [2u8, 0, 0, 0, 1, 2]).unwrap();
        assert!(read_fvecs_rows(&ragged).unwrap_err().to_string().contains("cut short"));
    }
}
