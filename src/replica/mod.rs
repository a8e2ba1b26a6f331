//! Replication: a shard is a Raft replica set (raft-rs), and the Raft log is the write-ahead
//! log.
//!
//! - `storage.rs`: raft-rs's `Storage` over the log's segments and the hard-state file beside
//!   them (`crate::wal`).
//! - `member.rs`: one replica's state machine around raft-rs's `RawNode`: writes proposed,
//!   `Ready`s persisted (group commit), committed entries applied through `Engine::apply`,
//!   outcomes answered; no thread, no network.
//! - `node.rs`: the node loop, the thread that drives a replica.
//! - `sim.rs` (tests): replicas driven step by step over a simulated network.
//! - `transport.rs`: Raft messages between replicas over TCP (framed, CRC-checked, a `Hello`
//!   naming the set and both ids first; a sender thread and bounded queue per peer).
//! - `logger.rs`: raft-rs logs through `slog`; its records go to `tracing`.
//!
//! Today every database is a replica set of one (replica 1, its only voter), which elects itself
//! at start and commits what it logs; a set of three or five, its transport between replicas and
//! the router's following of leaders are the next steps of the replication issue.

pub mod logger;
pub mod member;
pub mod node;
#[cfg(test)]
mod sim;
pub mod storage;
pub mod transport;

use std::sync::Arc;

use crate::wal;

pub use node::{Checkpoint, Node, NodeConfig, Waiter};
pub use storage::{LogEnd, LogStore};

/// What can go wrong in a replica.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The log could not be written: what is on disk is not known, and no later write is taken.
    #[error("write-ahead log: {0}")]
    Log(Arc<wal::Error>),
    /// Writes are refused since an earlier failure (the log, or an apply that failed).
    #[error("{0}")]
    Stopped(String),
    /// raft-rs refused something (a proposal while no leader is known, a bad configuration).
    #[error("raft: {0}")]
    Raft(String),
    /// This replica is not its set's leader: writes go to the leader (0: none known yet).
    #[error("this replica is not the leader of its set (leader: {0})")]
    NotLeader(u64),
    /// The write's entry (at this index) was replaced by another leader's: it was not applied.
    #[error("the write was not applied: log entry {0} was replaced by another leader's")]
    NotApplied(u64),
}
