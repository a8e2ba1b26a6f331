//! Reading a whole log back at start.
//!
//! [`read_log`] reads the segments in index order and checks that they continue each other.
//! Recovery starts from a snapshot: [`ReadOptions::after`] is its index, and only the entries
//! after it are returned. Segments that end before it are not even read (a segment's entries end
//! where the next segment begins), so they may be deleted: [`prune`].
//!
//! A torn last record in the **last** segment (a crash mid-write) is cut off the file, with a
//! log line; so is a last segment whose header was never fully written (it is removed, and the
//! writer creates it again). Anything else wrong stops the start with an error naming the file
//! and the byte offset, unless [`ReadOptions::force`] (`--force-recovery`) is set: then bad
//! records are skipped (see [`scan_forced`]), and everything skipped is logged and
//! returned in [`Log::skipped`]. A forced read changes nothing but the end of the last segment
//! (a torn tail, or bad bytes with nothing readable after them, are cut off): bad records
//! elsewhere stay in their segment, so the next start needs `--force-recovery` again until a
//! snapshot taken after it lets [`prune`] delete that segment.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::wal::segment::{first_index_of, scan, scan_forced, HEADER_LEN};
use crate::wal::writer::sync_dir;
use crate::wal::{Entry, Error, Result};

pub use crate::wal::segment::Skipped;

/// How to read a log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// The index (LSN) of the snapshot recovery starts from, 0 without one: only the entries
    /// after it are returned.
    pub after: u64,
    /// `--force-recovery`: skip bad records instead of stopping at the first.
    pub force: bool,
}

/// What a log directory holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// The entries after [`ReadOptions::after`], in index order. Without `force` their indices
    /// follow each other; with it they may have gaps where something was skipped.
    pub entries: Vec<Entry>,
    /// The index the next entry will get: after the last entry read, after `after`, and after
    /// any segment a forced read could not use (so that the writer never reuses its name).
    pub next_index: u64,
    /// The segment and offset a torn tail was cut at, if one was (offset 0: the segment had no
    /// whole header and was removed).
    pub truncated: Option<(PathBuf, u64)>,
    /// What a forced read skipped, in log order (always empty without `force`).
    pub skipped: Vec<Skipped>,
}

/// The segments of a log directory, in index order.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(Error::io(format!("cannot list the log directory {}", dir.display()), e)),
    };
    for item in listing {
        let item = item.map_err(|e| Error::io(format!("cannot list the log directory {}", dir.display()), e))?;
        let name = item.file_name();
        if let Some(first) = name.to_str().and_then(first_index_of) {
            found.push((first, item.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads the entries of the log in `dir` after `options.after`. An empty or missing directory
/// is an empty log whose next index is `after + 1`.
///
/// The log must reach back to `after + 1`: a first needed segment that starts later means
/// entries are missing, which is corruption (in a forced read, a recorded gap).
pub fn read_log(dir: &Path, options: &ReadOptions) -> Result<Log> {
    let mut entries = Vec::new();
    let mut log = read_log_each(dir, options, |entry| {
        entries.push(entry);
        Ok::<(), Error>(())
    })?;
    log.entries = entries;
    Ok(log)
}

/// [`read_log`], handing each entry to `each` as its segment is read instead of collecting
/// them: recovery replays a long log holding one segment's entries at a time. The returned
/// `Log` has no entries. An error from `each` stops the read, and is returned as it is.
pub fn read_log_each<E: From<Error>>(
    dir: &Path,
    options: &ReadOptions,
    mut each: impl FnMut(Entry) -> std::result::Result<(), E>,
) -> std::result::Result<Log, E> {
    let segments = segments(dir)?;
    let first_needed = options.after.saturating_add(1);
    let mut log = Log { entries: Vec::new(), next_index: first_needed, truncated: None, skipped: Vec::new() };
    // Every segment before the last one that starts at or before `first_needed` ends before it.
    let start = segments.iter().rposition(|(first, _)| *first <= first_needed).unwrap_or(0);
    // The index the next segment must start at (None: unknown, after a segment skipped whole).
    let mut expected = Some(first_needed);
    let mut last_index: u64 = 0;
    for (position, (first, path)) in segments.iter().enumerate().skip(start) {
        let first = *first;
        let is_last = position + 1 == segments.len();
        if let Some(expected) = expected.filter(|&expected| first != expected) {
            let problem = if position == start && first < expected {
                None // The snapshot covers the start of this segment.
            } else if position == start {
                Some(format!("starts at index {first}, but recovery needs the log from index {expected}"))
            } else {
                Some(format!("starts at index {first}, but the log before it ends at {}", expected - 1))
            };
            match problem {
                Some(problem) if !options.force => {
                    return Err(Error::Layout { file: path.clone(), problem }.into());
                }
                Some(problem) if first > expected => {
                    let reason = format!("entries {expected} to {} are missing: {problem}", first - 1);
                    record(&mut log, Skipped { file: path.clone(), offset: 0, bytes: 0, reason });
                }
                // A segment that overlaps the one before: the forced scan skips the entries
                // whose indices were already read.
                _ => {}
            }
        }
        let read = if options.force { scan_forced(path, last_index.saturating_add(1))? } else { scan(path)? };
        if read.torn_at == Some(0) {
            // The header was never fully written: the segment holds nothing.
            if is_last {
                std::fs::remove_file(path).map_err(|e| Error::io(format!("{}: cannot remove", path.display()), e))?;
                sync_dir(dir)?;
                tracing::warn!(
                    file = %path.display(),
                    bytes = read.len,
                    "write-ahead log: removed a last segment whose header was never fully written (a crash as it was created)"
                );
                log.truncated = Some((path.clone(), 0));
                break;
            }
            let problem = format!(
                "segment header cut short ({} of {HEADER_LEN} bytes) in a segment that is not the last",
                read.len
            );
            if !options.force {
                return Err(Error::Corrupt { file: path.clone(), offset: 0, problem }.into());
            }
            record(&mut log, Skipped { file: path.clone(), offset: 0, bytes: read.len, reason: problem });
            expected = None;
            log.next_index = log.next_index.max(first.saturating_add(1));
            continue;
        }
        let skipped_whole = read.skipped.first().is_some_and(|skipped| skipped.offset == 0);
        let bad_tail = read.skipped.last().filter(|s| s.bytes > 0 && s.offset + s.bytes == read.len).map(|s| s.offset);
        for skipped in read.skipped {
            record(&mut log, skipped);
        }
        if skipped_whole {
            // Its entries are unknown: the next segment may start anywhere after it, and the
            // writer must not reuse its name.
            expected = None;
            log.next_index = log.next_index.max(first.saturating_add(1));
            continue;
        }
        match (read.torn_at, bad_tail) {
            (Some(offset), _) if is_last => {
                truncate(path, offset)?;
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    "write-ahead log: cut off a torn last record (a crash while it was written; it was never acknowledged)"
                );
                log.truncated = Some((path.clone(), offset));
            }
            (Some(offset), _) if options.force => {
                let reason = "record cut short in a segment that is not the last".to_owned();
                record(&mut log, Skipped { file: path.clone(), offset, bytes: read.len - offset, reason });
            }
            (Some(offset), _) => {
                let problem = "record cut short in a segment that is not the last".to_owned();
                return Err(Error::Corrupt { file: path.clone(), offset, problem }.into());
            }
            // Bad bytes at the end of the last segment, with no whole record after them: cut off
            // too (they are in `skipped`). Nothing in them can be read, and the writer starts a
            // new segment after this one, where they would stop every later start.
            (None, Some(offset)) if is_last => {
                truncate(path, offset)?;
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    "write-ahead log: --force-recovery cut unreadable bytes off the end of the last segment"
                );
                log.truncated = Some((path.clone(), offset));
            }
            _ => {}
        }
        if let Some(entry) = read.entries.last() {
            last_index = entry.index;
        }
        for entry in read.entries.into_iter().filter(|entry| entry.index > options.after) {
            each(entry)?;
        }
        let end = first.max(last_index.saturating_add(1));
        // After bad bytes at its end, the entries the next segment starts after are unknown;
        // the skipped bytes are already reported.
        expected = if read.torn_at.is_some() || bad_tail.is_some() { None } else { Some(end) };
        log.next_index = log.next_index.max(end);
    }
    Ok(log)
}

/// Adds what a forced read skipped to the log, and says so.
fn record(log: &mut Log, skipped: Skipped) {
    tracing::warn!(
        file = %skipped.file.display(),
        offset = skipped.offset,
        bytes = skipped.bytes,
        reason = %skipped.reason,
        "write-ahead log: --force-recovery skipped a bad part of the log; the writes in it are lost"
    );
    log.skipped.push(skipped);
}

/// Deletes the segments whose entries all have an index below `keep_from`: each segment
/// followed by one that starts at or before `keep_from`. The last segment is never deleted.
/// Returns the deleted files, oldest first.
///
/// The caller passes the index of the **oldest kept snapshot** + 1: recovery may fall back to
/// that snapshot when the newer ones cannot be read, and then needs the log from there on.
pub fn prune(dir: &Path, keep_from: u64) -> Result<Vec<PathBuf>> {
    let segments = segments(dir)?;
    let mut removed = Vec::new();
    // Oldest first, so that a crash in the middle leaves a log without holes.
    for pair in segments.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first > keep_from {
            break;
        }
        std::fs::remove_file(path)
            .map_err(|e| Error::io(format!("cannot delete log segment {}", path.display()), e))?;
        removed.push(path.clone());
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

fn truncate(path: &Path, offset: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("{}: cannot open to truncate", path.display()), e))?;
    file.set_len(offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(format!("{}: cannot truncate to {offset}", path.display()), e))
}
