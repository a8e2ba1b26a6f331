//! raft-rs logs through `slog`; this drain hands its records to `tracing` (target `raft`), so
//! they come out with the server's own, under the same `RUST_LOG` filter. raft-rs's info
//! records (every step of an election: a replica set of one goes through one at each start)
//! become debug ones; `RUST_LOG=raft=debug` shows them.

use std::fmt::Write;

use slog::{Drain, Level, OwnedKVList, Record, KV};

/// A logger for raft-rs whose records go to `tracing`, with `replica` (the replica's id) on
/// each.
pub fn logger(replica: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!("replica" => replica))
}

struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut fields = Fields(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let (message, fields) = (record.msg(), fields.0);
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{message}{fields}"),
            Level::Warning => tracing::warn!(target: "raft", "{message}{fields}"),
            Level::Info | Level::Debug => tracing::debug!(target: "raft", "{message}{fields}"),
            Level::Trace => tracing::trace!(target: "raft", "{message}{fields}"),
        }
        Ok(())
    }
}

/// A record's key-value pairs as ` key=value` text.
struct Fields(String);

impl slog::Serializer for Fields {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}
