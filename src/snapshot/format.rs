//! The bytes of a snapshot file.
//!
//! ```text
//! file header, 64 bytes:
//!    0  magic "FACEDBSN"
//!    8  format version u32 LE (2; version 1 is read too: its `gall` bodies lack `index`)
//!   12  reserved u32 (0)
//!   16  lsn u64 LE | 24  term u64 LE | 32  dim u64 LE | 40  gallery count u64 LE
//!   48  reserved (12 zero bytes)
//!   60  crc32 u32 LE of bytes 0..60
//! then sections, each:
//!   section header, 64 bytes:
//!      0  kind: 4 ASCII bytes ("conf", "gall", "rows", "vecs", "norm")
//!      4  reserved u32 (0)
//!      8  body length u64 LE (without the padding)
//!     16  crc32 u32 LE of the body
//!     20  reserved (40 zero bytes)
//!     60  crc32 u32 LE of bytes 0..60 of this header
//!   body, then zero bytes up to the next multiple of 64
//! ```
//!
//! Every header is 64 bytes and every body is padded to 64, so every body starts 64-byte
//! aligned in the file, and therefore in a memory map of it (maps start on a page). Every byte
//! of the file is checked on reading: by a CRC, or as padding or a reserved field that must be
//! zero.
//!
//! Bodies are either raw little-endian arrays (`vecs`: f32, `norm`: f64), which are copied
//! straight out of the map, or serde + bincode 2.0.1 in the standard configuration (`gall`,
//! `rows`); `conf` is the caller's opaque blob.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::index::gallery_index::IndexOverrides;
use crate::store::column::{StoredColumn, StoredColumnRef};

pub const MAGIC: [u8; 8] = *b"FACEDBSN";
pub const FORMAT_VERSION: u32 = 2;
/// Older versions this build still reads.
pub const READ_VERSIONS: std::ops::RangeInclusive<u32> = 1..=FORMAT_VERSION;
/// The length of the file header and of every section header, and the alignment of bodies.
pub const BLOCK: usize = 64;
/// Facen sizes a snapshot may have (those `facedb serve` accepts).
pub const DIMS: std::ops::RangeInclusive<usize> = 1..=65_536;
/// The most a bincode body may decode to, so that a length field cannot make the decoder
/// allocate without bound.
const DECODE_LIMIT: usize = u32::MAX as usize;

/// What a section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The caller's configuration blob.
    Config,
    /// A gallery: its name and number of chunks ([`GalleryBody`]).
    Gallery,
    /// A chunk's ids, capacity and metadata columns ([`RowsBody`]).
    Rows,
    /// A chunk's vectors: raw f32 LE, row after row.
    Vectors,
    /// A chunk's inverse norms: raw f64 LE.
    Norms,
}

impl Kind {
    const ALL: [Kind; 5] = [Kind::Config, Kind::Gallery, Kind::Rows, Kind::Vectors, Kind::Norms];

    pub fn tag(self) -> [u8; 4] {
        match self {
            Kind::Config => *b"conf",
            Kind::Gallery => *b"gall",
            Kind::Rows => *b"rows",
            Kind::Vectors => *b"vecs",
            Kind::Norms => *b"norm",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::Gallery => "gallery",
            Kind::Rows => "rows",
            Kind::Vectors => "vectors",
            Kind::Norms => "inverse norms",
        }
    }

    fn from_tag(tag: [u8; 4]) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.tag() == tag)
    }
}

/// The file header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The format version (always [`FORMAT_VERSION`] when writing).
    pub version: u32,
    pub lsn: u64,
    pub term: u64,
    pub dim: u64,
    pub galleries: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; BLOCK] {
        let mut block = [0u8; BLOCK];
        block[..8].copy_from_slice(&MAGIC);
        block[8..12].copy_from_slice(&self.version.to_le_bytes());
        block[16..24].copy_from_slice(&self.lsn.to_le_bytes());
        block[24..32].copy_from_slice(&self.term.to_le_bytes());
        block[32..40].copy_from_slice(&self.dim.to_le_bytes());
        block[40..48].copy_from_slice(&self.galleries.to_le_bytes());
        seal(&mut block);
        block
    }

    /// Reads the header at the start of `bytes`; an error gives the offset of the bad field.
    pub fn decode(bytes: &[u8]) -> Result<Header, (usize, String)> {
        let Some(block) = bytes.first_chunk::<BLOCK>() else {
            return Err((0, format!("the file is {} bytes, shorter than the {BLOCK}-byte header", bytes.len())));
        };
        if block[..8] != MAGIC {
            return Err((0, "not a facedb snapshot (bad magic)".to_owned()));
        }
        let version = u32_at(block, 8);
        if !READ_VERSIONS.contains(&version) {
            return Err((8, format!("snapshot format version {version}, this build reads {READ_VERSIONS:?}")));
        }
        if !sealed(block) {
            return Err((0, "header checksum mismatch (crc32)".to_owned()));
        }
        if !is_zero(&block[12..16]) || !is_zero(&block[48..60]) {
            return Err((0, "reserved header bytes are not zero".to_owned()));
        }
        Ok(Header {
            version,
            lsn: u64_at(block, 16),
            term: u64_at(block, 24),
            dim: u64_at(block, 32),
            galleries: u64_at(block, 40),
        })
    }
}

/// The header of a section whose body is `body`.
pub fn section_header(kind: Kind, body: &[u8]) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    block[..4].copy_from_slice(&kind.tag());
    block[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
    block[16..20].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    seal(&mut block);
    block
}

/// A section header's fields, checked on their own (not yet against the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionHeader {
    pub kind: Kind,
    pub len: u64,
    pub crc: u32,
}

impl SectionHeader {
    pub fn decode(block: &[u8; BLOCK]) -> Result<SectionHeader, Problem> {
        if !sealed(block) {
            return Err(Problem("section header checksum mismatch (crc32)".to_owned()));
        }
        let mut tag = [0u8; 4];
        tag.copy_from_slice(&block[..4]);
        let kind = Kind::from_tag(tag)
            .ok_or_else(|| Problem(format!("unknown section kind {:?}", tag.escape_ascii().to_string())))?;
        if !is_zero(&block[4..8]) || !is_zero(&block[20..60]) {
            return Err(Problem("reserved section header bytes are not zero".to_owned()));
        }
        Ok(SectionHeader { kind, len: u64_at(block, 8), crc: u32_at(block, 16) })
    }
}

/// Zero bytes that follow a body of `len` bytes, up to the next multiple of [`BLOCK`].
pub fn padding(len: usize) -> usize {
    (BLOCK - len % BLOCK) % BLOCK
}

pub fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Writes the CRC of bytes 0..60 of a header into its last 4 bytes.
fn seal(block: &mut [u8; BLOCK]) {
    let crc = crc32fast::hash(&block[..BLOCK - 4]);
    block[BLOCK - 4..].copy_from_slice(&crc.to_le_bytes());
}

fn sealed(block: &[u8; BLOCK]) -> bool {
    crc32fast::hash(&block[..BLOCK - 4]) == u32_at(block, BLOCK - 4)
}

fn u32_at(block: &[u8; BLOCK], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&block[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn u64_at(block: &[u8; BLOCK], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&block[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// The body of a `gall` section; the gallery's chunks follow it, three sections each.
#[derive(Debug, Serialize, Deserialize)]
pub struct GalleryBody {
    pub name: String,
    pub chunks: u64,
    /// The index parameters the gallery was created with (from version 2).
    pub index: IndexOverrides,
}

/// The body of a `gall` section in a version 1 file.
#[derive(Debug, Deserialize)]
struct GalleryBodyV1 {
    name: String,
    chunks: u64,
}

impl GalleryBody {
    /// Decodes the body of a file of format `version`.
    pub fn decode(body: &[u8], version: u32) -> Result<GalleryBody, Problem> {
        if version == 1 {
            let GalleryBodyV1 { name, chunks } = decode(body)?;
            return Ok(GalleryBody { name, chunks, index: IndexOverrides::default() });
        }
        decode(body)
    }
}

/// The body of a `rows` section: a chunk's faces without their vectors. `capacity` is the
/// number of faces the chunk had room for, restored on load so that filling it does not
/// reallocate.
#[derive(Debug, Deserialize)]
pub struct RowsBody {
    pub capacity: u64,
    pub ids: Vec<u64>,
    pub columns: Vec<StoredColumn>,
}

/// A [`RowsBody`] borrowed from a chunk, for writing (same fields, same order, same bytes).
#[derive(Debug, Serialize)]
pub struct RowsBodyRef<'a> {
    pub capacity: u64,
    pub ids: &'a [u64],
    pub columns: Vec<StoredColumnRef<'a>>,
}

/// What is wrong with a section's bytes; the reader adds the file and the offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Problem(pub String);

/// Appends the bincode of `value` to `out`.
pub fn encode_into(value: &impl Serialize, out: &mut Vec<u8>) -> Result<(), Problem> {
    bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
        .map(|_| ())
        .map_err(|e| Problem(format!("cannot encode: {e}")))
}

/// Decodes a whole bincode body: bytes left over are an error too.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    let (value, read) =
        bincode::serde::decode_from_slice(body, config).map_err(|e| Problem(format!("cannot decode the body: {e}")))?;
    if read != body.len() {
        return Err(Problem(format!("{} bytes after the end of the body", body.len() - read)));
    }
    Ok(value)
}

/// The numbers stored as raw little-endian arrays: `f32` and `f64`. `bytemuck::Pod` lets
/// their memory be viewed as bytes and back without `unsafe` here.
pub trait Raw: bytemuck::Pod {
    fn from_le(bytes: &[u8]) -> Self;
    fn to_le(self) -> impl IntoIterator<Item = u8>;
}

impl Raw for f32 {
    fn from_le(bytes: &[u8]) -> f32 {
        let mut le = [0u8; 4];
        le.copy_from_slice(bytes);
        f32::from_le_bytes(le)
    }
    fn to_le(self) -> impl IntoIterator<Item = u8> {
        self.to_le_bytes()
    }
}

impl Raw for f64 {
    fn from_le(bytes: &[u8]) -> f64 {
        let mut le = [0u8; 8];
        le.copy_from_slice(bytes);
        f64::from_le_bytes(le)
    }
    fn to_le(self) -> impl IntoIterator<Item = u8> {
        self.to_le_bytes()
    }
}

/// The little-endian bytes of `values`: the values' own memory on a little-endian machine.
pub fn le_bytes<T: Raw>(values: &[T]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(values))
    } else {
        Cow::Owned(values.iter().flat_map(|v| v.to_le()).collect())
    }
}

/// Appends the values whose little-endian bytes are `bytes` (a whole number of values). On a
/// little-endian machine with `bytes` aligned for `T` (a body of a mapped snapshot is), this is
/// one `memcpy`.
pub fn extend_from_le<T: Raw>(out: &mut Vec<T>, bytes: &[u8]) {
    let size = std::mem::size_of::<T>();
    debug_assert_eq!(bytes.len() % size, 0);
    if cfg!(target_endian = "little") {
        if let Ok(values) = bytemuck::try_cast_slice::<u8, T>(bytes) {
            out.extend_from_slice(values);
            return;
        }
    }
    out.extend(bytes.chunks_exact(size).map(T::from_le));
}
