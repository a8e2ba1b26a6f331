//! Writing a snapshot: streamed through a buffer with a CRC per section, then made durable and
//! visible in one step (fsync, rename, fsync of the directory).
//!
//! Memory stays small whatever the size of the galleries: a chunk's metadata is encoded into
//! one reused buffer, and vectors and inverse norms are written from the chunk itself.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::engine::GalleryImage;
use crate::snapshot::format::{self, GalleryBody, Header, Kind, RowsBodyRef, BLOCK, DIMS, FORMAT_VERSION};
use crate::snapshot::{file_name, Error, Written, TEMP_SUFFIX};
use crate::store::chunk::Chunk;
use crate::wal::writer::sync_dir;

const BUFFER_BYTES: usize = 1 << 20;

/// The file is synced each time this much more is written, so that the page cache never holds
/// a large amount of it unwritten. One big fsync at the end would flush hundreds of MB at once,
/// and the log's fsyncs (every acknowledged write in `fsync` mode) would wait behind it: the
/// bench measured writes stalled for 60-130 ms during a 1M-face snapshot; with a sync every
/// 8 MiB the worst was 45 ms, every 4 MiB 39 ms (docs/benchmarks.md). Small syncs bound
/// that wait to the time of writing this much.
const SYNC_EVERY_BYTES: u64 = 4 << 20;

/// Writes the snapshot of `galleries` at `lsn` into `dir`: temp file `{name}.tmp`, write all,
/// fsync the file, rename it to its name, fsync the directory. `config` is an opaque blob (the
/// engine's schema and facen size, encoded by the caller) stored in its own CRC-checked
/// section and given back by [`read`](crate::snapshot::read). `dim` is the facen size; every
/// chunk must have it. A snapshot of the same `lsn` already there is replaced. Errors name the
/// file; after one, no `.snap` file was created or changed, and the `.tmp` file is removed.
pub fn write(
    dir: &Path,
    lsn: u64,
    term: u64,
    config: &[u8],
    dim: usize,
    galleries: &[GalleryImage],
) -> Result<Written, Error> {
    let path = dir.join(file_name(lsn));
    check(&path, dim, galleries)?;
    let temp = dir.join(format!("{lsn:020}{TEMP_SUFFIX}"));
    let written = write_temp(
        &temp,
        Header { version: FORMAT_VERSION, lsn, term, dim: dim as u64, galleries: galleries.len() as u64 },
        config,
        galleries,
    );
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&temp, &path) {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::file(&temp, format!("cannot rename to {}: {e}", path.display())));
    }
    // Without this the rename itself could be lost in a power cut.
    sync_dir(dir).map_err(|e| Error::file(dir, e.to_string()))?;
    let faces = galleries.iter().flat_map(|g| &g.chunks).map(|chunk| chunk.len() as u64).sum();
    Ok(Written { path, bytes, faces })
}

/// What the format cannot hold is refused before any file is created.
fn check(path: &Path, dim: usize, galleries: &[GalleryImage]) -> Result<(), Error> {
    if !DIMS.contains(&dim) {
        return Err(Error::file(path, format!("facen size {dim} is not in {DIMS:?}")));
    }
    for gallery in galleries {
        if let Some((index, chunk)) = gallery.chunks.iter().enumerate().find(|(_, chunk)| chunk.dim() != dim) {
            let problem = format!(
                "gallery {:?}: chunk {index} has vectors of {} floats, the snapshot {dim}",
                gallery.name,
                chunk.dim()
            );
            return Err(Error::file(path, problem));
        }
    }
    Ok(())
}

/// Writes the whole file and fsyncs it; returns its size.
fn write_temp(temp: &Path, header: Header, config: &[u8], galleries: &[GalleryImage]) -> Result<u64, Error> {
    let file = File::create(temp).map_err(|e| Error::file(temp, format!("cannot create: {e}")))?;
    let mut out =
        Sections { out: BufWriter::with_capacity(BUFFER_BYTES, file), bytes: 0, synced: 0, path: temp.to_path_buf() };
    out.put(&header.encode())?;
    out.section(Kind::Config, config)?;
    let mut body = Vec::new();
    for gallery in galleries {
        body.clear();
        let gallery_body =
            GalleryBody { name: gallery.name.clone(), chunks: gallery.chunks.len() as u64, index: gallery.index };
        format::encode_into(&gallery_body, &mut body).map_err(|e| out.error(e.0))?;
        out.section(Kind::Gallery, &body)?;
        for chunk in &gallery.chunks {
            out.chunk(chunk, &mut body)?;
        }
    }
    out.finish()
}

/// The file being written, and how many bytes it has.
struct Sections {
    out: BufWriter<File>,
    bytes: u64,
    /// Bytes on disk (synced) so far.
    synced: u64,
    path: PathBuf,
}

impl Sections {
    /// A chunk's three sections: metadata (encoded into `body`), vectors, inverse norms.
    fn chunk(&mut self, chunk: &Chunk, body: &mut Vec<u8>) -> Result<(), Error> {
        body.clear();
        let rows = RowsBodyRef {
            capacity: chunk.capacity().max(chunk.len()) as u64,
            ids: chunk.ids(),
            columns: chunk.columns().iter().map(|column| column.stored()).collect(),
        };
        format::encode_into(&rows, body).map_err(|e| self.error(e.0))?;
        self.section(Kind::Rows, body)?;
        self.section(Kind::Vectors, &format::le_bytes(chunk.vectors()))?;
        self.section(Kind::Norms, &format::le_bytes(chunk.inverse_norms()))?;
        if self.bytes - self.synced >= SYNC_EVERY_BYTES {
            self.out.flush().map_err(|e| self.error(format!("cannot write: {e}")))?;
            self.out.get_ref().sync_data().map_err(|e| self.error(format!("cannot fsync: {e}")))?;
            self.synced = self.bytes;
        }
        Ok(())
    }

    fn section(&mut self, kind: Kind, body: &[u8]) -> Result<(), Error> {
        self.put(&format::section_header(kind, body))?;
        self.put(body)?;
        self.put(&[0u8; BLOCK][..format::padding(body.len())])
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out.write_all(bytes).map_err(|e| self.error(format!("cannot write: {e}")))?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn finish(self) -> Result<u64, Error> {
        let path = self.path;
        let file = self.out.into_inner().map_err(|e| Error::file(&path, format!("cannot write: {}", e.error())))?;
        file.sync_all().map_err(|e| Error::file(&path, format!("cannot fsync: {e}")))?;
        Ok(self.bytes)
    }

    fn error(&self, problem: String) -> Error {
        Error::file(&self.path, problem)
    }
}
