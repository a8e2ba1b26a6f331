//! Progress bars on stderr (`indicatif`) for anything that takes more than a moment.
//!
//! On a terminal a bar is drawn and cleared when done; when stderr is not a terminal (a log
//! file, CI) indicatif draws nothing, so long phases also announce themselves with one line
//! when they start. A [`Progress`] may be shared by worker threads: `inc` takes `&self`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `total` units of work described by `what`.
    pub fn new(what: impl Into<String>, total: usize) -> Progress {
        let what = what.into();
        if !std::io::stderr().is_terminal() {
            eprintln!("{what} ...");
        }
        let bar = ProgressBar::new(total as u64);
        let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta})")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(what);
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar }
    }

    /// `n` more units done.
    pub fn inc(&self, n: usize) {
        self.bar.inc(n as u64);
    }

    /// `done` units done in all.
    pub fn update(&mut self, done: usize) {
        self.bar.set_position(done as u64);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
