//! Reading a snapshot back: map the file, check each section (header CRC, kind, length, body
//! CRC, zero padding) before using it, and build the chunks.
//!
//! Nothing in the file is trusted: every length is checked against the file's size before it
//! is used, so that a truncated or damaged file is an error naming the byte offset of the bad
//! section, never a panic or an allocation the file's size does not justify.

use std::fs::File;
use std::path::Path;

use memmap2::MmapOptions;

use crate::snapshot::format::{self, GalleryBody, Header, Kind, RowsBody, SectionHeader, BLOCK, DIMS};
use crate::snapshot::{Error, Loaded, LoadedGallery};
use crate::store::chunk::{self, Chunk};
use crate::store::column::Column;

/// Reads and checks a whole snapshot. Any problem is an error naming the file and the byte
/// offset of the bad section.
pub fn read(path: &Path) -> Result<Loaded, Error> {
    let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let len = file.metadata().map_err(|e| Error::file(path, format!("cannot read: {e}")))?.len();
    if len < BLOCK as u64 {
        let problem = format!("the file is {len} bytes, shorter than the {BLOCK}-byte header");
        return Err(Error::Corrupt { file: path.to_owned(), offset: 0, problem });
    }
    // SAFETY: the map is only read, and snapshot files are never changed once renamed into
    // place (a new snapshot is a new file). Another process truncating the file while it is
    // read would be outside that contract.
    let map = unsafe { MmapOptions::new().populate().map(&file) }
        .map_err(|e| Error::file(path, format!("cannot map: {e}")))?;
    parse(&map).map_err(|(offset, problem)| Error::Corrupt { file: path.to_owned(), offset: offset as u64, problem })
}

/// A problem and the offset of the section (or header) it is in.
type Problem = (usize, String);

fn parse(bytes: &[u8]) -> Result<Loaded, Problem> {
    let header = Header::decode(bytes)?;
    let dim = usize::try_from(header.dim)
        .ok()
        .filter(|dim| DIMS.contains(dim))
        .ok_or_else(|| (0, format!("facen size {} is not in {DIMS:?}", header.dim)))?;
    let mut sections = Sections { bytes, at: BLOCK };
    let (_, config) = sections.next(Kind::Config)?;
    let mut galleries = Vec::new();
    for _ in 0..header.galleries {
        let (at, body) = sections.next(Kind::Gallery)?;
        let gallery = GalleryBody::decode(body, header.version).map_err(|e| (at, format!("gallery section: {e}")))?;
        let mut chunks = Vec::new();
        for _ in 0..gallery.chunks {
            chunks.push(read_chunk(&mut sections, dim)?);
        }
        galleries.push(LoadedGallery { name: gallery.name, index: gallery.index, chunks });
    }
    if sections.at != bytes.len() {
        return Err((sections.at, format!("{} bytes after the last section", bytes.len() - sections.at)));
    }
    Ok(Loaded { lsn: header.lsn, term: header.term, config: config.to_vec(), dim, galleries })
}

/// A chunk from its three sections: rows (ids and columns), vectors, inverse norms.
fn read_chunk(sections: &mut Sections, dim: usize) -> Result<Chunk, Problem> {
    let (rows_at, body) = sections.next(Kind::Rows)?;
    let rows: RowsBody = format::decode(body).map_err(|e| (rows_at, format!("rows section: {e}")))?;
    let faces = rows.ids.len();
    // Room as the chunk had, within a bound: the capacity is only a hint.
    let capacity = usize::try_from(rows.capacity).unwrap_or(usize::MAX).min(chunk::max_capacity(dim)).max(faces);

    let (at, body) = sections.next(Kind::Vectors)?;
    if Some(body.len()) != faces.checked_mul(dim * 4) {
        return Err((at, format!("vectors section: {} bytes for {faces} faces of {dim} floats", body.len())));
    }
    let mut vectors = Vec::with_capacity(capacity * dim);
    format::extend_from_le(&mut vectors, body);

    let (at, body) = sections.next(Kind::Norms)?;
    if Some(body.len()) != faces.checked_mul(8) {
        return Err((at, format!("inverse norms section: {} bytes for {faces} faces", body.len())));
    }
    let mut inverse_norms = Vec::with_capacity(capacity);
    format::extend_from_le(&mut inverse_norms, body);

    let columns = rows
        .columns
        .into_iter()
        .enumerate()
        .map(|(field, stored)| {
            Column::from_stored(stored).map_err(|e| (rows_at, format!("rows section: column {field}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Chunk::from_parts(dim, rows.ids, vectors, inverse_norms, columns, capacity)
        .map_err(|e| (rows_at, format!("rows section: {e}")))
}

/// The sections of a file, read in order from `at`.
struct Sections<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Sections<'a> {
    /// The next section, which must be of `kind`: its offset and its checked body.
    fn next(&mut self, kind: Kind) -> Result<(usize, &'a [u8]), Problem> {
        let at = self.at;
        let problem = |text: String| (at, format!("{} section: {text}", kind.name()));
        let rest = &self.bytes[at..];
        let Some(block) = rest.first_chunk::<BLOCK>() else {
            return Err(problem(format!("the file ends {} bytes into the {BLOCK}-byte section header", rest.len())));
        };
        let header = SectionHeader::decode(block).map_err(|e| problem(e.0))?;
        if header.kind != kind {
            return Err((at, format!("expected a {} section, found a {} section", kind.name(), header.kind.name())));
        }
        let body_at = at + BLOCK;
        let len =
            usize::try_from(header.len).ok().filter(|&len| len <= self.bytes.len() - body_at).ok_or_else(|| {
                problem(format!(
                    "a body of {} bytes runs past the end of the file ({} bytes)",
                    header.len,
                    self.bytes.len()
                ))
            })?;
        let body = &self.bytes[body_at..body_at + len];
        if crc32fast::hash(body) != header.crc {
            return Err(problem("body checksum mismatch (crc32)".to_owned()));
        }
        let end = body_at + len + format::padding(len);
        let padding = self
            .bytes
            .get(body_at + len..end)
            .ok_or_else(|| problem("the file ends in the padding after the body".to_owned()))?;
        if !format::is_zero(padding) {
            return Err(problem("the padding after the body is not zero".to_owned()));
        }
        self.at = end;
        Ok((at, body))
    }
}
