//! Adds under search load: the shape of the measurement, whatever carries the requests.
//!
//! `search_threads` threads each run searches back to back (the next one starts as soon as
//! the last one answered) until told to stop. Once every one of them has finished a first
//! search, the calling thread makes `adds` single-face adds one after another, pausing
//! `pause` between two of them, and times each add from the call to its return. Then the
//! searchers stop. Search timings taken meanwhile are kept too, to show what the adds cost
//! the searches.
//!
//! The in-process and HTTP variants differ only in the closures: what one search and one
//! add are (`inproc.rs` calls the engine, `http.rs` posts requests).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

pub struct UnderLoad {
    /// One timing per add, in order.
    pub adds: Vec<Duration>,
    /// Every search that finished while the adds ran (and a little before and after).
    pub searches: Vec<Duration>,
    /// From the first add to the last.
    pub elapsed: Duration,
}

/// Runs the measurement. `new_searcher(t)` builds thread `t`'s search function (called there,
/// so it may hold a per-thread connection); a search function gets the number of its call.
/// `add(k)` makes the `k`-th add.
pub fn run<N, S, A>(
    search_threads: usize,
    new_searcher: N,
    adds: usize,
    pause: Duration,
    mut add: A,
) -> Result<UnderLoad>
where
    N: Fn(usize) -> Result<S> + Sync,
    S: FnMut(usize) -> Result<()>,
    A: FnMut(usize) -> Result<()>,
{
    let stop = AtomicBool::new(false);
    let ready = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let searchers: Vec<_> = (0..search_threads)
            .map(|t| {
                let (stop, ready, new_searcher) = (&stop, &ready, &new_searcher);
                scope.spawn(move || -> Result<Vec<Duration>> {
                    let result = (|| {
                        let mut search = new_searcher(t)?;
                        let mut timings = Vec::new();
                        let mut call = t;
                        while !stop.load(Ordering::Relaxed) {
                            let started = Instant::now();
                            search(call)?;
                            timings.push(started.elapsed());
                            if timings.len() == 1 {
                                ready.fetch_add(1, Ordering::SeqCst);
                            }
                            call += search_threads;
                        }
                        Ok(timings)
                    })();
                    if result.is_err() {
                        // Let the adder (waiting for every searcher) and the others go.
                        stop.store(true, Ordering::SeqCst);
                    }
                    result
                })
            })
            .collect();

        let adding = (|| -> Result<(Vec<Duration>, Duration)> {
            while ready.load(Ordering::SeqCst) < search_threads {
                if stop.load(Ordering::SeqCst) {
                    return Err(anyhow!("a search thread failed before the adds started"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut timings = Vec::with_capacity(adds);
            let first = Instant::now();
            for k in 0..adds {
                if stop.load(Ordering::Relaxed) {
                    return Err(anyhow!("a search thread failed during the adds"));
                }
                if k > 0 && !pause.is_zero() {
                    std::thread::sleep(pause);
                }
                let started = Instant::now();
                add(k)?;
                timings.push(started.elapsed());
            }
            Ok((timings, first.elapsed()))
        })();
        stop.store(true, Ordering::SeqCst);

        let mut searches = Vec::new();
        let mut search_error = None;
        for searcher in searchers {
            match searcher.join() {
                Ok(Ok(timings)) => searches.extend(timings),
                Ok(Err(e)) => search_error = search_error.or(Some(e)),
                Err(_) => search_error = search_error.or(Some(anyhow!("a search thread panicked"))),
            }
        }
        if let Some(e) = search_error {
            return Err(e.context("searching during the adds"));
        }
        let (adds, elapsed) = adding?;
        Ok(UnderLoad { adds, searches, elapsed })
    })
}
