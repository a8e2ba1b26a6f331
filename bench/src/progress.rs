//! A progress line on stderr for long loads.
//!
//! On a terminal the line is redrawn in place after every batch; otherwise (a log file, CI)
//! one line is written per tenth of the work, so that the log stays short.

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    what: String,
    total: usize,
    started: Instant,
    tty: bool,
    last_tenth: usize,
}

impl Progress {
    pub fn new(what: impl Into<String>, total: usize) -> Progress {
        Progress {
            what: what.into(),
            total: total.max(1),
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            last_tenth: 0,
        }
    }

    pub fn update(&mut self, done: usize) {
        let tenth = done * 10 / self.total;
        if !self.tty && tenth == self.last_tenth && done < self.total {
            return;
        }
        self.last_tenth = tenth;
        let line = format!(
            "{}: {done}/{} ({}%) {:.1} s",
            self.what,
            self.total,
            done * 100 / self.total,
            self.started.elapsed().as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not stop the bench.
        let _ = if self.tty { write!(err, "\r\x1b[K{line}") } else { writeln!(err, "{line}") };
        if self.tty && done >= self.total {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}
