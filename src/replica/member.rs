//! One replica's state machine around raft-rs's `RawNode`: proposals in, `Ready`s handled,
//! committed entries applied, outcomes answered. It has no thread and no network: the node loop
//! (`node.rs`) drives it from its thread, the simulation (`sim.rs`) step by step, and both carry
//! its messages.
//!
//! A `Ready` is handled in raft-rs's documented order: its messages out (a leader's may leave
//! before its own write), committed entries applied, new entries and the hard state persisted
//! with one write and one fsync, then the messages that vouch for them (votes, append
//! acknowledgements), advance, and what that committed applied in turn.
//!
//! Entries are applied through [`Engine::apply`] only, in log order; a write proposed here is
//! applied with its op as the request thread decoded it (no second decode), and answered when
//! its entry (same index, same term) is applied. One passed over by another leader's entry at its
//! index is answered "not applied". After the log fails, or an apply fails or panics (a write the
//! engine accepted but cannot apply: a bug), every later write is refused with the first failure
//! and raft is not advanced again. Reads go on.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};

use raft::eraftpb::{Entry, EntryType, Message};
use raft::{RawNode, StateRole};

use super::node::{Checkpoint, NodeConfig};
use super::storage::LogStore;
use super::{logger, Error};
use crate::engine::op;
use crate::engine::{Applied, Engine, Op};

/// Where a write's outcome goes.
pub type Reply<T> = mpsc::SyncSender<Result<T, Error>>;

/// A write proposed here, waiting for its entry.
struct Proposal {
    index: u64,
    term: u64,
    /// The op as the request thread decoded it (taken when it is applied).
    op: Option<Op>,
    reply: Reply<Applied>,
}

/// One replica: raft-rs's node over its log, and the engine it applies to.
pub struct Replica {
    raw: RawNode<LogStore>,
    engine: Arc<Engine>,
    /// Proposed here, by index.
    proposals: VecDeque<Proposal>,
    /// Messages for the other replicas, from the `Ready`s handled.
    outbox: Vec<Message>,
    /// The last entry applied.
    applied: u64,
    /// The first failure; every later write is refused with it.
    failed: Option<Error>,
}

impl Replica {
    /// A replica over `store`, applying to `engine`. The set's only voter elects itself before
    /// this returns, and has applied its new term's first entry: writes are taken at once.
    pub fn new(engine: Arc<Engine>, store: LogStore, config: &NodeConfig) -> Result<Replica, Error> {
        let applied = store.applied();
        let raw = RawNode::new(&config.raft(applied)?, store, &logger::logger(config.id))
            .map_err(|e| Error::Raft(format!("cannot start: {e}")))?;
        let mut replica =
            Replica { raw, engine, proposals: VecDeque::new(), outbox: Vec::new(), applied, failed: None };
        if config.voters == [config.id] {
            replica.raw.campaign().map_err(|e| Error::Raft(format!("cannot elect the only voter: {e}")))?;
            replica.on_ready();
            if let Some(error) = replica.failed.take() {
                return Err(error);
            }
            if !replica.is_leader() || replica.applied < replica.raw.raft.raft_log.last_index() {
                return Err(Error::Raft("the only voter of its set did not become its leader".to_owned()));
            }
        }
        Ok(replica)
    }

    /// A message from another replica of the set.
    pub fn step(&mut self, message: Message) {
        if let Err(e) = self.raw.step(message) {
            // A message from a replica removed from the set, or a stale one: nothing to do.
            tracing::debug!(target: "raft", "message not taken: {e}");
        }
    }

    /// One tick of Raft's clock.
    pub fn tick(&mut self) {
        self.raw.tick();
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The current term, and the leader this replica knows of (0: none).
    pub fn term_and_leader(&self) -> (u64, u64) {
        (self.raw.raft.term, self.raw.raft.leader_id)
    }

    /// The last entry applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The commit index this replica knows.
    pub fn committed(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The first failure, if writes are stopped.
    pub fn failure(&self) -> Option<&Error> {
        self.failed.as_ref()
    }

    /// Proposes a checked write (`payload` is `op` encoded); `reply` gets its outcome once its
    /// entry is applied, or refused.
    pub fn propose(&mut self, op: Op, payload: Vec<u8>, reply: Reply<Applied>) {
        if let Some(error) = &self.failed {
            self.engine.abandon(&op);
            let _ = reply.send(Err(error.clone()));
            return;
        }
        if !self.is_leader() {
            // raft-rs would forward it to the leader, where its index and term would be unknown
            // here: the write goes to the leader instead.
            self.engine.abandon(&op);
            let _ = reply.send(Err(Error::NotLeader(self.raw.raft.leader_id)));
            return;
        }
        match self.raw.propose(Vec::new(), payload) {
            Ok(()) => {
                let (index, term) = (self.raw.raft.raft_log.last_index(), self.raw.raft.term);
                self.proposals.push_back(Proposal { index, term, op: Some(op), reply });
            }
            Err(e) => {
                self.engine.abandon(&op);
                let _ = reply.send(Err(Error::Raft(format!("the write was not proposed: {e}"))));
            }
        }
    }

    /// Handles raft's `Ready`s until it has none (it hands out at most 64 MiB of committed
    /// entries in one); returns the messages to send to the other replicas.
    pub fn on_ready(&mut self) -> Vec<Message> {
        while self.failed.is_none() && self.raw.has_ready() {
            self.handle_ready();
        }
        std::mem::take(&mut self.outbox)
    }

    fn handle_ready(&mut self) {
        let mut ready = self.raw.ready();
        if !ready.snapshot().is_empty() {
            self.fail(Error::Raft("a leader sent a snapshot; installing one comes with replicas".to_owned()));
            return;
        }
        // A leader's messages may leave before its own write (its followers write meanwhile).
        self.outbox.extend(ready.take_messages());
        self.apply(ready.take_committed_entries());
        // The entries first: a follower's new commit index (in the hard state) may cover entries
        // of this `Ready` that replace uncommitted ones, which the store checks against the
        // commit index it had.
        let store = self.raw.mut_store();
        let persisted = store.append(ready.entries(), ready.must_sync()).and_then(|()| match ready.hs() {
            Some(hs) => store.set_hard_state(hs),
            None => Ok(()),
        });
        if let Err(e) = persisted {
            self.fail(Error::Log(Arc::new(e)));
            return;
        }
        // Votes and append acknowledgements: only once what they vouch for is on disk.
        self.outbox.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        self.outbox.extend(light.take_messages());
        self.apply(light.take_committed_entries());
        self.raw.advance_apply();
        let applied = self.applied;
        self.raw.mut_store().applied_to(applied);
    }

    /// Applies committed entries in order, answering the writes proposed here.
    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            let index = entry.index;
            let mut proposal = self.proposal_of(&entry);
            let answer = if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                // A new leader's empty first entry (membership changes come with replicas).
                self.engine.skip(index);
                Ok(Applied::Done)
            } else if let Some(error) = &self.failed {
                Err(error.clone())
            } else {
                // Proposed here: the op the request thread decoded; else decoded from the entry.
                let op = match proposal.as_mut().and_then(|p| p.op.take()) {
                    Some(op) => Ok(op),
                    None => op::decode(&entry.data),
                };
                match op {
                    Ok(op) => self.apply_op(index, op),
                    Err(e) => {
                        let error = Error::Stopped(format!("log entry {index} cannot be decoded: {e}"));
                        self.fail(error.clone());
                        Err(error)
                    }
                }
            };
            self.applied = index;
            if let Some(proposal) = proposal {
                let _ = proposal.reply.send(answer);
            }
        }
    }

    /// The proposal `entry` answers, if it was proposed here: the same index and term. Proposals
    /// before it that it passed over were replaced by another leader's entries: not applied.
    fn proposal_of(&mut self, entry: &Entry) -> Option<Proposal> {
        while self.proposals.front().is_some_and(|p| p.index <= entry.index) {
            let proposal = self.proposals.pop_front()?;
            if proposal.index == entry.index && proposal.term == entry.term {
                return Some(proposal);
            }
            if let Some(op) = &proposal.op {
                self.engine.abandon(op);
            }
            let _ = proposal.reply.send(Err(Error::NotApplied(proposal.index)));
        }
        None
    }

    fn apply_op(&mut self, index: u64, op: Op) -> Result<Applied, Error> {
        let failure = match catch_unwind(AssertUnwindSafe(|| self.engine.apply(index, op))) {
            Ok(Ok(applied)) => return Ok(applied),
            Ok(Err(refused)) => format!("log entry {index} was accepted but cannot be applied: {refused}"),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                format!("applying log entry {index} panicked: {what}")
            }
        };
        let error = Error::Stopped(failure);
        self.fail(error.clone());
        Err(error)
    }

    /// Stops writes with `error`: every waiting write gets it.
    fn fail(&mut self, error: Error) {
        if self.failed.is_none() {
            tracing::error!("{error}; refusing further writes (reads go on; a restart recovers from the log)");
        }
        for proposal in self.proposals.drain(..) {
            if let Some(op) = &proposal.op {
                self.engine.abandon(op);
            }
            let _ = proposal.reply.send(Err(error.clone()));
        }
        self.failed.get_or_insert(error);
    }

    /// Starts a new log segment and returns the applied index, its term and the galleries'
    /// images: the consistent point of a snapshot. Call it between two `on_ready`s.
    pub fn checkpoint(&mut self) -> Result<Checkpoint, Error> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let store = self.raw.mut_store();
        store.rotate().map_err(|e| Error::Log(Arc::new(e)))?;
        let index = self.applied;
        let term = store.term_of(index).ok_or_else(|| Error::Raft(format!("the term of entry {index} is unknown")))?;
        Ok(Checkpoint { index, term, images: self.engine.images() })
    }
}
