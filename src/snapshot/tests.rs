//! Snapshots on their own: what is written is read back face for face, and behaves the same
//! afterwards; names and leftovers; every truncation and every flipped byte is an error that
//! names the file.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use crate::index::gallery_index::IndexOverrides;
use crate::schema::{MetaValue, Schema};
use crate::search::{self, parse::parse_query};
use crate::snapshot::format;
use crate::snapshot::{file_name, list, read, remove_temp_files, write, GalleryImage, Loaded};
use crate::store::chunk::{Chunk, Face};
use crate::store::column::{Column, StoredColumn};
use crate::store::{FaceUpdate, Gallery};

use crate::test_dir::TestDir as Dir;

/// One field of every type.
fn schema() -> Arc<Schema> {
    let yaml = "\
- {id: 1, name: name, field_type: string, default: ''}
- {id: 2, name: camera, field_type: unsigned, default: 0}
- {id: 3, name: tags, field_type: 'set[string]', default: {}}
- {id: 4, name: lists, field_type: 'set[unsigned]', default: {}}
";
    Arc::new(Schema::from_yaml(yaml, "test").unwrap())
}

const DIM: usize = 3;
const CONFIG: &[u8] = b"schema and facen size, as the engine encodes them \x00\xff";

/// A face with a few distinct values per field, empty sets and non-ASCII strings among them.
fn face(id: u64) -> Face {
    let names = ["", "Łódź", "東京", "cam-1", "ÅSA"];
    let tags: [&[&str]; 4] = [&[], &["a"], &["a", "ß", "😀"], &["b"]];
    let lists: [&[u64]; 3] = [&[], &[1, 7], &[0, u64::MAX]];
    let mut tags: Vec<String> = tags[id as usize % 4].iter().map(|s| s.to_string()).collect();
    tags.sort_unstable();
    Face {
        id,
        vector: vec![id as f32, -0.5, 1.0 / (id as f32 + 1.0)],
        meta: vec![
            MetaValue::String(names[id as usize % 5].to_owned()),
            MetaValue::Unsigned(match id % 7 {
                0 => u64::MAX,
                _ => id % 3,
            }),
            MetaValue::StringSet(tags),
            MetaValue::UnsignedSet(lists[id as usize % 3].to_vec()),
        ],
    }
}

/// A gallery built through the store's changes, with deletes and updates behind it (so its
/// dictionaries have freed codes), and an image of its chunks.
fn gallery_with_history() -> Gallery {
    let mut gallery = Gallery::new(schema(), DIM);
    gallery.insert(&(0..40).map(face).collect::<Vec<_>>());
    gallery.remove(&[0, 3, 17, 39, 21]);
    let updates: Vec<FaceUpdate> = [5u64, 6, 30]
        .into_iter()
        .map(|id| FaceUpdate {
            id,
            vector: Some(vec![0.25, 0.0, -4.0]),
            meta: vec![(0, MetaValue::String(format!("renamed {id} ✓"))), (2, MetaValue::StringSet(vec![]))],
        })
        .collect();
    gallery.apply(&updates);
    gallery
}

/// Several chunks of room 3, filled unevenly, one emptied, with values a gallery would refuse
/// (the format must not care): -0.0, a subnormal, NaN, infinities.
fn many_chunks() -> Vec<Arc<Chunk>> {
    let schema = schema();
    let mut chunks = Vec::new();
    for (index, rows) in [3u64, 3, 1, 2].into_iter().enumerate() {
        let mut chunk = Chunk::new(&schema, DIM, 3);
        for row in 0..rows {
            let mut face = face(100 + 10 * index as u64 + row);
            face.vector = vec![-0.0, f32::MIN_POSITIVE / 8.0, [f32::NAN, f32::INFINITY, f32::MAX][row as usize]];
            chunk.push(&face);
        }
        if index == 3 {
            chunk.swap_remove(0);
            chunk.swap_remove(0);
        }
        chunks.push(Arc::new(chunk));
    }
    chunks
}

/// The index parameters "people" was created with.
const PEOPLE_INDEX: IndexOverrides = IndexOverrides { m: Some(48), ef_construction: None, ef_search: Some(300) };

fn images() -> Vec<GalleryImage> {
    vec![
        GalleryImage { name: "people".into(), index: PEOPLE_INDEX, chunks: gallery_with_history().snapshot() },
        GalleryImage { name: "nobody".into(), index: IndexOverrides::default(), chunks: vec![] },
        GalleryImage { name: "many".into(), index: IndexOverrides::default(), chunks: many_chunks() },
    ]
}

/// Every face, its vector's bits, its inverse norm and the chunk's capacity are the same.
fn assert_same_chunks(name: &str, original: &[Arc<Chunk>], loaded: &[Chunk]) {
    assert_eq!(original.len(), loaded.len(), "gallery {name}: chunks");
    for (index, (original, loaded)) in original.iter().zip(loaded).enumerate() {
        let at = format!("gallery {name}, chunk {index}");
        assert_eq!(original.len(), loaded.len(), "{at}: faces");
        assert_eq!(original.capacity(), loaded.capacity(), "{at}: capacity");
        assert_eq!(original.ids(), loaded.ids(), "{at}");
        let bits = |chunk: &Chunk| chunk.vectors().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(original), bits(loaded), "{at}: vectors");
        let norm_bits = |chunk: &Chunk| chunk.inverse_norms().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(norm_bits(original), norm_bits(loaded), "{at}: inverse norms");
        for row in 0..original.len() {
            let (a, b) = (original.face(row), loaded.face(row));
            assert_eq!((a.id, &a.meta), (b.id, &b.meta), "{at}, row {row}");
        }
        loaded.check_schema(&schema()).unwrap();
    }
}

fn write_and_read(dir: &Path, images: &[GalleryImage]) -> Loaded {
    let written = write(dir, 42, 3, CONFIG, DIM, images).unwrap();
    assert_eq!(written.path, dir.join("00000000000000000042.snap"));
    assert_eq!(written.bytes, std::fs::metadata(&written.path).unwrap().len());
    assert_eq!(written.bytes % 64, 0, "every section is padded to 64 bytes");
    let faces: usize = images.iter().flat_map(|g| &g.chunks).map(|c| c.len()).sum();
    assert_eq!(written.faces, faces as u64);
    read(&written.path).unwrap()
}

#[test]
fn galleries_come_back_face_for_face() {
    let dir = Dir::new("snapshot-roundtrip");
    let images = images();
    let loaded = write_and_read(&dir.0, &images);
    assert_eq!((loaded.lsn, loaded.term, loaded.dim, loaded.config.as_slice()), (42, 3, DIM, CONFIG));
    let names: Vec<&str> = loaded.galleries.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["people", "nobody", "many"]);
    for (image, loaded) in images.iter().zip(&loaded.galleries) {
        assert_same_chunks(&image.name, &image.chunks, &loaded.chunks);
        assert_eq!(image.index, loaded.index, "gallery {}: index parameters", image.name);
    }
    assert_eq!(loaded.galleries[2].chunks[3].len(), 0, "an emptied chunk stays, so rows keep their chunk");
}

#[test]
fn a_gallery_of_several_full_size_chunks_comes_back() {
    // At 1024 floats a gallery's chunks hold 1024 faces: 2500 faces make three chunks.
    let dim = 1024;
    let mut gallery = Gallery::new(schema(), dim);
    let faces: Vec<Face> = (0..2500u64)
        .map(|id| Face { vector: (0..dim).map(|i| (id * 31 + i as u64) as f32 / 7.0).collect(), ..face(id) })
        .collect();
    gallery.insert(&faces);
    gallery.remove(&[5, 1500, 2499]);
    let image = GalleryImage { name: "big".into(), index: IndexOverrides::default(), chunks: gallery.snapshot() };
    assert_eq!(image.chunks.len(), 3);
    let dir = Dir::new("snapshot-big");
    let written = write(&dir.0, 7, 1, CONFIG, dim, std::slice::from_ref(&image)).unwrap();
    assert!(written.bytes > 2497 * dim as u64 * 4);
    let loaded = read(&written.path).unwrap();
    assert_same_chunks("big", &image.chunks, &loaded.galleries[0].chunks);
}

/// A loaded chunk is changed exactly like the original: deletes, new values (old and new
/// strings, so dictionary codes are freed and reused), and new faces up to its capacity.
#[test]
fn loaded_chunks_change_like_the_originals() {
    let dir = Dir::new("snapshot-behaviour");
    let images = images();
    let loaded = write_and_read(&dir.0, &images);
    for (image, gallery) in images.iter().zip(loaded.galleries) {
        for (original, loaded) in image.chunks.iter().zip(gallery.chunks) {
            let mut original = Chunk::clone(original);
            let mut loaded = loaded;
            let change = |chunk: &mut Chunk| {
                if !chunk.is_empty() {
                    chunk.swap_remove(0);
                }
                for row in 0..chunk.len() {
                    let donor = face(row as u64 * 3 + 1);
                    for (field, value) in donor.meta.iter().enumerate() {
                        chunk.set_meta(row, field, value);
                    }
                    chunk.set_meta(row, 0, &MetaValue::String(format!("new {row}")));
                }
                // Up to the capacity, or a few faces: a gallery's chunk has room for thousands.
                while chunk.len() < chunk.capacity().min(chunk.len() + 4) {
                    chunk.push(&face(1000 + chunk.len() as u64));
                }
                if chunk.len() > 1 {
                    chunk.swap_remove(1);
                }
            };
            change(&mut original);
            change(&mut loaded);
            let faces = |chunk: &Chunk| (0..chunk.len()).map(|row| chunk.face(row)).collect::<Vec<_>>();
            let (a, b) = (faces(&original), faces(&loaded));
            assert_eq!(a.len(), b.len());
            for (a, b) in a.iter().zip(&b) {
                let bits = |f: &Face| f.vector.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!((a.id, &a.meta, bits(a)), (b.id, &b.meta, bits(b)));
            }
        }
    }
}

/// Filters see the same values through the rebuilt dictionaries.
#[test]
fn searches_find_the_same_faces_after_loading() {
    let dir = Dir::new("snapshot-search");
    let images = images();
    let loaded = write_and_read(&dir.0, &images);
    let original = &images[0].chunks;
    let loaded: Vec<Arc<Chunk>> = loaded.galleries[0].chunks.iter().cloned().map(Arc::new).collect();
    let queries = [
        json!({"filter": {"meta": {"name": {"set": ["Łódź", "", "renamed 5 ✓"]}}}}),
        json!({"filter": {"meta": {"name": {"ilike": "%å%"}}}}),
        json!({"filter": {"meta": {"tags": {"subset": ["a", "ß"]}}}}),
        json!({"filter": {"meta": {"tags": {"like": "😀"}}}}),
        json!({"filter": {"meta": {"lists": {"set": [7, 18446744073709551615u64]}}}}),
        json!({"filter": {"meta": {"camera": {"range": [1, 2]}}}}),
        json!({"limit": 5, "sort": "-score", "filter": {"facen": {"data": crate::facen::encode(&[1.0, 0.0, 0.5]), "score": [-1, 1]}}}),
    ];
    for body in queries {
        let query = parse_query(&body, &schema(), DIM, 1000).unwrap();
        let (a, b) = (search::run(original, &query, None), search::run(&loaded, &query, None));
        assert!(!a.is_empty(), "{body}: the query should find something");
        assert_eq!(a, b, "{body}");
    }
}

#[test]
fn a_stored_column_is_checked_when_rebuilt() {
    let column = |stored| Column::from_stored(stored).map(|_| ()).map_err(|e| e.0);
    let err = column(StoredColumn::String { dict: vec!["a".into()], codes: vec![0, 1] }).unwrap_err();
    assert_eq!(err, "code 1 is outside the dictionary of 1 values");
    let err = column(StoredColumn::StringSet { dict: vec!["a".into(), "a".into()], rows: vec![vec![0, 1].into()] });
    assert_eq!(err.unwrap_err(), "the value \"a\" has two codes in the dictionary");
    let err = column(StoredColumn::UnsignedSet(vec![vec![1, 2].into(), vec![3, 2].into()])).unwrap_err();
    assert_eq!(err, "the set of row 1 is not sorted");
    // A freed code may hold anything, even a value a used code has.
    column(StoredColumn::String { dict: vec!["a".into(), "a".into()], codes: vec![1] }).unwrap();
}

#[test]
fn a_borrowed_column_encodes_as_the_stored_form() {
    let mut column = Column::new(crate::schema::FieldType::StringSet);
    for id in 0..6 {
        column.push(&face(id).meta[2]);
    }
    column.swap_remove(2);
    let mut bytes = Vec::new();
    format::encode_into(&column.stored(), &mut bytes).unwrap();
    let stored: StoredColumn = format::decode(&bytes).unwrap();
    let StoredColumn::StringSet { dict, rows } = &stored else { panic!("{stored:?}") };
    assert_eq!(dict.len(), 4);
    assert_eq!(rows.len(), 5);
    let rebuilt = Column::from_stored(stored).unwrap();
    assert!((0..5).all(|row| rebuilt.get(row) == column.get(row)));
}

#[test]
fn list_orders_by_lsn_and_skips_other_files() {
    let dir = Dir::new("snapshot-list");
    assert_eq!(list(&dir.0.join("missing")).unwrap(), vec![]);
    assert_eq!(remove_temp_files(&dir.0.join("missing")).unwrap(), 0);
    for lsn in [10, 2, 300] {
        write(&dir.0, lsn, 1, CONFIG, DIM, &images()).unwrap();
    }
    let full = std::fs::read(dir.0.join(file_name(300))).unwrap();
    // A crash while writing the snapshot at 400 leaves half a temp file.
    std::fs::write(dir.0.join("00000000000000000400.snap.tmp"), &full[..full.len() / 2]).unwrap();
    for other in ["notes.txt", "12.snap", "+0000000000000000005.snap", "00000000000000000006.snap.bak"] {
        std::fs::write(dir.0.join(other), b"x").unwrap();
    }
    let lsns = |dir: &Path| list(dir).unwrap().into_iter().map(|(lsn, _)| lsn).collect::<Vec<_>>();
    assert_eq!(lsns(&dir.0), [2, 10, 300]);
    assert_eq!(list(&dir.0).unwrap()[0].1, dir.0.join("00000000000000000002.snap"));
    assert_eq!(remove_temp_files(&dir.0).unwrap(), 1);
    assert!(!dir.0.join("00000000000000000400.snap.tmp").exists());
    assert_eq!(remove_temp_files(&dir.0).unwrap(), 0);
    assert_eq!(lsns(&dir.0), [2, 10, 300]);
}

#[test]
fn a_failed_write_leaves_no_snapshot_and_no_temp_file() {
    let dir = Dir::new("snapshot-failed");
    // The temp file cannot be created: its name is taken by a directory.
    std::fs::create_dir(dir.0.join("00000000000000000005.snap.tmp")).unwrap();
    let err = write(&dir.0, 5, 1, CONFIG, DIM, &images()).unwrap_err().to_string();
    assert!(err.contains("00000000000000000005.snap.tmp"), "{err}");
    assert_eq!(list(&dir.0).unwrap(), vec![]);
    // The rename fails: the snapshot's name is taken by a directory that is not empty.
    std::fs::create_dir_all(dir.0.join("00000000000000000006.snap/x")).unwrap();
    let err = write(&dir.0, 6, 1, CONFIG, DIM, &images()).unwrap_err().to_string();
    assert!(err.contains("cannot rename") && err.contains("00000000000000000006.snap"), "{err}");
    assert!(!dir.0.join("00000000000000000006.snap.tmp").exists(), "the temp file is removed");
    // Chunks of another facen size are refused before any file is made.
    let err = write(&dir.0, 7, 1, CONFIG, DIM + 1, &images()).unwrap_err().to_string();
    assert!(err.contains("00000000000000000007.snap") && err.contains("chunk 0 has vectors of 3 floats"), "{err}");
    assert!(write(&dir.0, 8, 1, CONFIG, 0, &[]).unwrap_err().to_string().contains("facen size 0"));
    let mut names: Vec<String> =
        std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["00000000000000000005.snap.tmp", "00000000000000000006.snap"], "only the two directories");
}

/// A small snapshot's bytes, and where to put damaged copies.
fn small_snapshot(dir: &Path) -> Vec<u8> {
    let mut gallery = Gallery::new(schema(), DIM);
    gallery.insert(&(0..3).map(face).collect::<Vec<_>>());
    let images = [
        GalleryImage { name: "g".into(), index: IndexOverrides::default(), chunks: gallery.snapshot() },
        GalleryImage { name: "empty".into(), index: IndexOverrides::default(), chunks: vec![] },
    ];
    let written = write(dir, 9, 2, b"cfg", DIM, &images).unwrap();
    std::fs::read(written.path).unwrap()
}

/// The offset an error names, which must be that of the damaged part or before it.
fn offset_in(err: &str, path: &Path) -> usize {
    let prefix = format!("{}: byte ", path.display());
    let rest = err.strip_prefix(&prefix).unwrap_or_else(|| panic!("the error does not name the file: {err}"));
    rest.split(':').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no offset in: {err}"))
}

#[test]
fn a_truncated_snapshot_is_an_error_at_every_cut() {
    let dir = Dir::new("snapshot-truncated");
    let bytes = small_snapshot(&dir.0);
    let path = dir.0.join("cut.snap");
    for cut in 0..bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(offset_in(&err, &path) <= cut, "cut at {cut}: {err}");
    }
    std::fs::write(&path, [&bytes[..], &[0u8; 64]].concat()).unwrap();
    let err = read(&path).unwrap_err().to_string();
    assert_eq!(err, format!("{}: byte {}: 64 bytes after the last section", path.display(), bytes.len()));
}

#[test]
fn every_flipped_byte_is_an_error_at_or_before_it() {
    let dir = Dir::new("snapshot-flipped");
    let bytes = small_snapshot(&dir.0);
    assert!(bytes.len() < 4096, "a small snapshot: {} bytes", bytes.len());
    let path = dir.0.join("flipped.snap");
    for at in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[at] ^= mask;
            std::fs::write(&path, &damaged).unwrap();
            let err = read(&path).unwrap_err().to_string();
            assert!(offset_in(&err, &path) <= at, "byte {at} ^ {mask:#x}: {err}");
        }
    }
}

#[test]
fn damage_is_reported_by_section() {
    let dir = Dir::new("snapshot-messages");
    let bytes = small_snapshot(&dir.0);
    let path = dir.0.join("damaged.snap");
    let read_with = |at: usize, value: u8| {
        let mut damaged = bytes.clone();
        damaged[at] = value;
        std::fs::write(&path, &damaged).unwrap();
        read(&path).unwrap_err().to_string().strip_prefix(&format!("{}: ", path.display())).unwrap().to_owned()
    };
    assert_eq!(read_with(0, b'X'), "byte 0: not a facedb snapshot (bad magic)");
    assert_eq!(read_with(8, 3), "byte 8: snapshot format version 3, this build reads 1..=2");
    assert_eq!(read_with(20, 1), "byte 0: header checksum mismatch (crc32)");
    // Sections: config at 64 (body 3 bytes, padded to 64), then the gallery section at 192.
    assert_eq!(read_with(64 + 64, b'C'), "byte 64: config section: body checksum mismatch (crc32)");
    assert_eq!(read_with(64 + 64 + 3, 1), "byte 64: config section: the padding after the body is not zero");
    assert_eq!(read_with(192, b'r'), "byte 192: gallery section: section header checksum mismatch (crc32)");
    std::fs::write(&path, b"").unwrap();
    let err = read(&path).unwrap_err().to_string();
    assert!(err.ends_with("byte 0: the file is 0 bytes, shorter than the 64-byte header"), "{err}");
    let err = read(&dir.0.join("missing.snap")).unwrap_err().to_string();
    assert!(err.contains("missing.snap: cannot open"), "{err}");
}

/// The same file as version 1 wrote it: header version 1, gallery bodies without `index`.
fn as_version_1(bytes: &[u8]) -> Vec<u8> {
    let header = format::Header::decode(bytes).unwrap();
    let mut out = format::Header { version: 1, ..header }.encode().to_vec();
    let mut at = format::BLOCK;
    while at < bytes.len() {
        let block: &[u8; format::BLOCK] = bytes[at..at + format::BLOCK].try_into().unwrap();
        let section = format::SectionHeader::decode(block).unwrap();
        let body = &bytes[at + format::BLOCK..at + format::BLOCK + section.len as usize];
        let body = if section.kind == format::Kind::Gallery {
            let v2: format::GalleryBody = format::decode(body).unwrap();
            let mut v1 = Vec::new();
            format::encode_into(&(v2.name, v2.chunks), &mut v1).unwrap();
            v1
        } else {
            body.to_vec()
        };
        out.extend(format::section_header(section.kind, &body));
        out.extend(&body);
        out.resize(out.len() + format::padding(body.len()), 0);
        at += format::BLOCK + section.len as usize + format::padding(section.len as usize);
    }
    out
}

#[test]
fn a_version_1_snapshot_is_still_read() {
    let dir = Dir::new("snapshot-v1");
    let images = images();
    let written = write(&dir.0, 42, 3, CONFIG, DIM, &images).unwrap();
    let old = dir.0.join(file_name(41));
    std::fs::write(&old, as_version_1(&std::fs::read(&written.path).unwrap())).unwrap();
    let loaded = read(&old).unwrap();
    for (image, loaded) in images.iter().zip(&loaded.galleries) {
        assert_eq!(image.name, loaded.name);
        assert_same_chunks(&image.name, &image.chunks, &loaded.chunks);
        assert_eq!(loaded.index, IndexOverrides::default(), "version 1 had no index parameters");
    }
}

/// Loading speed at scale: `cargo test --release --lib snapshot::tests::load_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn load_speed() {
    let dim = 128;
    let faces = 1_000_000u64;
    let mut gallery = Gallery::new(Arc::new(Schema::findface_default()), dim);
    let defaults: Vec<MetaValue> = Schema::findface_default().fields().iter().map(|f| f.default.clone()).collect();
    let batch: Vec<Face> = (0..faces)
        .map(|id| Face {
            id,
            vector: (0..dim).map(|i| ((id + i as u64) % 97) as f32).collect(),
            meta: defaults.clone(),
        })
        .collect();
    gallery.insert(&batch);
    drop(batch);
    let dir = Dir::new("snapshot-speed");
    let started = std::time::Instant::now();
    let image = GalleryImage { name: "g".into(), index: IndexOverrides::default(), chunks: gallery.snapshot() };
    let written = write(&dir.0, 1, 1, CONFIG, dim, &[image]).unwrap();
    println!("write: {:?} for {} bytes", started.elapsed(), written.bytes);
    let started = std::time::Instant::now();
    let loaded = read(&written.path).unwrap();
    println!("read: {:?} for {} chunks", started.elapsed(), loaded.galleries[0].chunks.len());
}
