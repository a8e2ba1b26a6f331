//! raft-rs's [`Storage`] over the write-ahead log: the entries in `wal/` segments, the hard
//! state in `wal/raft.state`.
//!
//! In memory the store keeps the entries raft-rs may still ask for (an entry cache, contiguous,
//! ending at the last index) and, before them, the index and term of the entry the cache starts
//! after: the log is "compacted" there as far as raft-rs is concerned (the files keep what
//! recovery needs until snapshots let them go). A replica that is its set's only voter needs an
//! entry only from its append to its apply: it keeps no cache past that. Reading older entries
//! back from the segments, for followers far behind, comes with replicas.
//!
//! Writes come from the node loop only (`raw.mut_store()`): [`LogStore::append`] (entries, one
//! write and one fsync; a suffix a new leader replaces is cut first, never a committed one),
//! [`LogStore::set_hard_state`] (written when the term or the vote changes), and
//! [`LogStore::applied_to`] (entries leave the cache).

use std::collections::VecDeque;

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{RaftState, Storage, StorageError};

use crate::wal::state::StateFile;
use crate::wal::writer::{Appended, Wal, WalConfig, WalStats};
use crate::wal::{self, kind, WalMode};

/// The hard state as the state file stores it: term, vote, commit (u64 LE each).
fn encode_hard_state(hs: &HardState) -> [u8; 24] {
    let mut bytes = [0u8; 24];
    bytes[..8].copy_from_slice(&hs.term.to_le_bytes());
    bytes[8..16].copy_from_slice(&hs.vote.to_le_bytes());
    bytes[16..].copy_from_slice(&hs.commit.to_le_bytes());
    bytes
}

fn decode_hard_state(bytes: &[u8]) -> Option<HardState> {
    let word = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let mut hs = HardState::default();
    (hs.term, hs.vote, hs.commit) = (word(0)?, word(8)?, word(16)?);
    (bytes.len() == 24).then_some(hs)
}

/// An entry's kind in the log, from raft-rs's entry type.
pub fn kind_of(entry: &Entry) -> u8 {
    match entry.get_entry_type() {
        EntryType::EntryNormal => kind::NORMAL,
        EntryType::EntryConfChange => kind::CONF_CHANGE,
        EntryType::EntryConfChangeV2 => kind::CONF_CHANGE_V2,
    }
}

/// A log entry as raft-rs's entry.
pub fn raft_entry(entry: wal::Entry) -> Entry {
    let mut raft = Entry::default();
    raft.set_entry_type(match entry.kind {
        kind::CONF_CHANGE => EntryType::EntryConfChange,
        kind::CONF_CHANGE_V2 => EntryType::EntryConfChangeV2,
        _ => EntryType::EntryNormal,
    });
    (raft.index, raft.term, raft.data) = (entry.index, entry.term, entry.payload.into());
    raft
}

fn is_empty_normal(entry: &Entry) -> bool {
    entry.get_entry_type() == EntryType::EntryNormal && entry.data.is_empty()
}

/// An entry of the log: its index and term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEnd {
    pub index: u64,
    pub term: u64,
}

/// The Raft log of one replica, on disk.
pub struct LogStore {
    wal: Wal,
    state: StateFile,
    hard: HardState,
    /// The term and vote on disk.
    written: (u64, u64),
    conf: ConfState,
    /// The index and term of the entry before the first one held (raft-rs's "compacted" point).
    base: (u64, u64),
    /// The entries after `base`, to the last one.
    cache: VecDeque<Entry>,
    cache_bytes: usize,
    /// Applied entries are kept in the cache up to this many bytes (0: none).
    cache_limit: usize,
    applied: u64,
    /// The only voter of its set: empty entries are deferred ([`Wal::defer_empty`]).
    single_voter: bool,
}

impl LogStore {
    /// Opens the log of a replica in `config.dir` whose recovery applied everything up to
    /// `applied`; `tail` holds the entries after it that the log holds (not known to be
    /// committed), and `voters` are its set's voters. The hard state comes from the state file
    /// (none in a data directory written before replication): its term is at least the last
    /// entry's; the commit index is the last index for the set's only voter (every entry it
    /// holds it persisted, so it is committed), and otherwise what was recorded, within the
    /// log and not below `applied`.
    pub fn open(
        config: WalConfig,
        applied: LogEnd,
        tail: Vec<wal::Entry>,
        id: u64,
        voters: Vec<u64>,
    ) -> Result<LogStore, wal::Error> {
        let state_path = config.dir.join("raft.state");
        let (state, saved) = StateFile::open(&state_path, config.mode)?;
        let saved = match saved {
            Some(bytes) => Some(decode_hard_state(&bytes).ok_or_else(|| wal::Error::Corrupt {
                file: state_path.clone(),
                offset: 0,
                problem: format!("a hard state of {} bytes, expected 24", bytes.len()),
            })?),
            None => None,
        };
        let saved = saved.unwrap_or_default();
        let single_voter = voters == [id];
        let cache: VecDeque<Entry> = tail.into_iter().map(raft_entry).collect();
        let last = applied.index + cache.len() as u64;
        let last_term = cache.back().map_or(applied.term, |e| e.term);
        let mut hard = HardState::default();
        hard.term = saved.term.max(last_term);
        hard.vote = if hard.term == saved.term { saved.vote } else { 0 };
        hard.commit = if single_voter { last } else { saved.commit.max(applied.index).min(last) };
        let conf = ConfState { voters, ..ConfState::default() };
        let wal = Wal::open(config, last + 1, hard.term)?;
        Ok(LogStore {
            wal,
            state,
            written: (saved.term, saved.vote),
            hard,
            conf,
            base: (applied.index, applied.term),
            cache_bytes: cache.iter().map(entry_bytes).sum(),
            cache,
            cache_limit: if single_voter { 0 } else { 64 << 20 },
            applied: applied.index,
            single_voter,
        })
    }

    /// Logs entries from raft-rs's `Ready` with one write (and, in `fsync` mode and if `sync`,
    /// one fsync). Entries at or below the last index replace that suffix: it is cut off
    /// first, unless it holds a committed entry (a bug elsewhere: refused).
    pub fn append(&mut self, entries: &[Entry], sync: bool) -> Result<(), wal::Error> {
        let Some(first) = entries.first().map(|e| e.index) else { return Ok(()) };
        let last = self.last();
        if first <= last {
            if first <= self.hard.commit || first <= self.base.0 {
                let problem = format!(
                    "raft asked to replace the log from index {first}, but entries up to {} are committed",
                    self.hard.commit.max(self.base.0)
                );
                return Err(wal::Error::Layout { file: Default::default(), problem });
            }
            self.wal.truncate_from(first)?;
            while self.cache.back().is_some_and(|e| e.index >= first) {
                let dropped = self.cache.pop_back().map_or(0, |e| entry_bytes(&e));
                self.cache_bytes -= dropped;
            }
        } else if first > last + 1 {
            let problem = format!("raft appended from index {first}, but the log ends at {last}");
            return Err(wal::Error::Layout { file: Default::default(), problem });
        }
        let mut run: Vec<Appended> = Vec::with_capacity(entries.len());
        let mut run_first = first;
        for entry in entries {
            if self.single_voter && is_empty_normal(entry) {
                self.wal.write(run_first, &run, sync)?;
                run.clear();
                self.wal.defer_empty(entry.term)?;
                run_first = entry.index + 1;
            } else {
                run.push(Appended { term: entry.term, kind: kind_of(entry), payload: &entry.data });
            }
        }
        self.wal.write(run_first, &run, sync)?;
        for entry in entries {
            self.cache_bytes += entry_bytes(entry);
            self.cache.push_back(entry.clone());
        }
        Ok(())
    }

    /// Takes raft-rs's hard state; writes it to disk (and syncs it, in `fsync` mode) when the
    /// term or the vote changed. A change of the commit index alone is only remembered.
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), wal::Error> {
        if (hs.term, hs.vote) != self.written {
            self.state.write(&encode_hard_state(hs))?;
            self.written = (hs.term, hs.vote);
        }
        self.hard = hs.clone();
        Ok(())
    }

    /// The commit index moved (raft-rs's `LightReady`).
    pub fn set_commit(&mut self, commit: u64) {
        self.hard.commit = commit;
    }

    /// Entries up to `index` are applied: they leave the cache beyond its limit.
    pub fn applied_to(&mut self, index: u64) {
        self.applied = index;
        while self.cache_bytes > self.cache_limit {
            let Some(front) = self.cache.front().filter(|e| e.index <= self.applied) else { break };
            self.base = (front.index, front.term);
            self.cache_bytes -= entry_bytes(front);
            self.cache.pop_front();
        }
    }

    /// Starts a new segment for the next entry (a snapshot's checkpoint).
    pub fn rotate(&mut self) -> Result<(), wal::Error> {
        self.wal.rotate()
    }

    pub fn stats(&self) -> &std::sync::Arc<WalStats> {
        self.wal.stats()
    }

    pub fn mode(&self) -> WalMode {
        self.wal.mode()
    }

    /// The last entry applied (at start: what recovery applied).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard
    }

    /// The term of entry `index`, if the store knows it.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        self.term(index).ok()
    }

    fn last(&self) -> u64 {
        self.base.0 + self.cache.len() as u64
    }
}

/// What an entry counts for in the cache.
fn entry_bytes(entry: &Entry) -> usize {
    entry.data.len() + entry.context.len() + 48
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard.clone(), self.conf.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: raft::GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.base.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.base.0 - 1) as usize;
        let to = (high - self.base.0 - 1) as usize;
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut entries = Vec::with_capacity(to - from);
        let mut size = 0u64;
        for entry in self.cache.range(from..to) {
            size += entry_bytes(entry) as u64;
            if !entries.is_empty() && size > max_size {
                break;
            }
            entries.push(entry.clone());
        }
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.base.0 {
            return Ok(self.base.1);
        }
        if index < self.base.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.cache.get((index - self.base.0 - 1) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.base.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Sending snapshots to followers comes with replicas; a replica set of one has none.
        Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir as Dir;
    use crate::wal::recover::{read_log, ReadOptions};

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        let mut entry = Entry::default();
        (entry.index, entry.term, entry.data) = (index, term, data.to_vec().into());
        entry
    }

    fn config(dir: &std::path::Path) -> WalConfig {
        WalConfig { dir: dir.to_owned(), mode: WalMode::Fsync, segment_bytes: 1 << 20 }
    }

    fn ranges(store: &LogStore, low: u64, high: u64) -> Vec<(u64, u64)> {
        let context = raft::GetEntriesContext::empty(false);
        store.entries(low, high, None, context).unwrap().iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn entries_and_hard_state_survive_reopen() {
        let dir = Dir::new("replica-store-reopen");
        let mut store = LogStore::open(config(&dir.0), LogEnd { index: 0, term: 0 }, vec![], 1, vec![1, 2, 3]).unwrap();
        assert_eq!((store.first_index().unwrap(), store.last_index().unwrap(), store.term(0).unwrap()), (1, 0, 0));
        let entries: Vec<Entry> = (1..=5).map(|i| entry(i, 2, &[i as u8])).collect();
        store.append(&entries, true).unwrap();
        let mut hs = HardState::default();
        (hs.term, hs.vote, hs.commit) = (2, 3, 4);
        store.set_hard_state(&hs).unwrap();
        assert_eq!(ranges(&store, 2, 5), [(2, 2), (3, 2), (4, 2)]);
        let sized = store.entries(1, 6, 1, raft::GetEntriesContext::empty(false)).unwrap();
        assert_eq!(sized.len(), 1, "at least one entry, however small the limit");
        assert_eq!(store.term(5).unwrap(), 2);
        assert!(matches!(store.term(6), Err(raft::Error::Store(StorageError::Unavailable))));
        drop(store);
        // What recovery reads back, and the store reopened where it ends.
        let log = read_log(&dir.0, &ReadOptions::default()).unwrap();
        let read: Vec<(u64, u64, Vec<u8>)> = log.entries.iter().map(|e| (e.index, e.term, e.payload.clone())).collect();
        assert_eq!(read, (1..=5).map(|i| (i, 2, vec![i as u8])).collect::<Vec<_>>());
        // Recovery applied up to the commit index (4); entry 5 is the tail.
        let tail = log.entries[4..].to_vec();
        let store = LogStore::open(config(&dir.0), LogEnd { index: 4, term: 2 }, tail, 1, vec![1, 2, 3]).unwrap();
        let state = store.initial_state().unwrap();
        assert_eq!((state.hard_state.term, state.hard_state.vote, state.hard_state.commit), (2, 3, 4));
        assert_eq!(state.conf_state.voters, [1, 2, 3]);
        assert_eq!((store.first_index().unwrap(), store.last_index().unwrap(), store.term(4).unwrap()), (5, 5, 2));
        assert_eq!(ranges(&store, 5, 6), [(5, 2)]);
        assert!(matches!(store.term(3), Err(raft::Error::Store(StorageError::Compacted))));
    }

    #[test]
    fn a_conflicting_suffix_is_replaced_on_disk_but_never_a_committed_entry() {
        let dir = Dir::new("replica-store-truncate");
        let mut store = LogStore::open(config(&dir.0), LogEnd { index: 0, term: 0 }, vec![], 1, vec![1, 2, 3]).unwrap();
        store.append(&(1..=10).map(|i| entry(i, 1, b"old")).collect::<Vec<_>>(), true).unwrap();
        store.set_commit(5);
        store.append(&(6..=8).map(|i| entry(i, 2, b"new")).collect::<Vec<_>>(), true).unwrap();
        assert_eq!(store.last_index().unwrap(), 8);
        assert_eq!((store.term(5).unwrap(), store.term(6).unwrap()), (1, 2));
        let error = store.append(&[entry(5, 3, b"x")], true).unwrap_err().to_string();
        assert!(error.contains("from index 5, but entries up to 5 are committed"), "{error}");
        let error = store.append(&[entry(10, 3, b"x")], true).unwrap_err().to_string();
        assert!(error.contains("from index 10, but the log ends at 8"), "{error}");
        drop(store);
        let log = read_log(&dir.0, &ReadOptions::default()).unwrap();
        let read: Vec<(u64, u64)> = log.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(read, [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 2), (7, 2), (8, 2)]);
    }

    #[test]
    fn a_single_voter_keeps_one_record_per_write_and_commits_all_it_holds() {
        let dir = Dir::new("replica-store-single");
        let mut store = LogStore::open(config(&dir.0), LogEnd { index: 3, term: 1 }, vec![], 1, vec![1]).unwrap();
        assert_eq!(store.initial_state().unwrap().hard_state.commit, 3);
        // Elected: term 2 and an empty entry, then two writes.
        let mut hs = HardState::default();
        (hs.term, hs.vote, hs.commit) = (2, 1, 3);
        store.set_hard_state(&hs).unwrap();
        store.append(&[entry(4, 2, b"")], true).unwrap();
        store.append(&[entry(5, 2, b"a"), entry(6, 2, b"b")], true).unwrap();
        assert_eq!(ranges(&store, 4, 7), [(4, 2), (5, 2), (6, 2)]);
        store.applied_to(6);
        assert_eq!((store.first_index().unwrap(), store.term(6).unwrap()), (7, 2), "applied entries leave");
        assert_eq!(store.stats().records.load(std::sync::atomic::Ordering::Relaxed), 2);
        drop(store);
        let log = read_log(&dir.0, &ReadOptions { after: 3, force: false }).unwrap();
        let read: Vec<(u64, u64, Vec<u8>)> = log.entries.into_iter().map(|e| (e.index, e.term, e.payload)).collect();
        assert_eq!(read, [(4, 2, vec![]), (5, 2, b"a".to_vec()), (6, 2, b"b".to_vec())]);
        let store = LogStore::open(config(&dir.0), LogEnd { index: 6, term: 2 }, vec![], 1, vec![1]).unwrap();
        let state = store.initial_state().unwrap().hard_state;
        assert_eq!((state.term, state.vote, state.commit), (2, 1, 6));
    }
}
