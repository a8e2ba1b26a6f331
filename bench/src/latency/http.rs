//! Over HTTP, for the earlier measurements: loading the gallery and timing searches one at a
//! time against the `facedb serve` process of `crate::server`, through `crate::client`.
//!
//! A timing is client-side: from sending a request whose body was serialised beforehand to
//! having read and parsed the whole response, so it includes the loopback round trip, the
//! server's JSON parsing and encoding, and its thread hand-offs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::data::{self, DataGen};
use super::inproc::{BATCH, GALLERY};
use crate::client::Client;
use crate::progress::Progress;

/// Runs a search and returns the ids found, best first.
pub fn search(client: &Client, body: &str) -> Result<Vec<u64>> {
    Ok(client.search(GALLERY, body)?.ids)
}

/// Creates the gallery and adds faces `0..size` in batches of [`BATCH`]; returns the time
/// spent in the requests (generation and serialisation excluded).
pub fn load(client: &Client, gen: &DataGen, size: usize) -> Result<Duration> {
    client.create_gallery(GALLERY)?;
    let mut progress = Progress::new(format!("loading {size} faces over HTTP"), size);
    let mut posting = Duration::ZERO;
    let mut done = 0;
    while done < size {
        let end = (done + BATCH).min(size);
        let body = data::add_body(&gen.faces(done as u64..end as u64));
        let started = Instant::now();
        client.add(GALLERY, &body).with_context(|| format!("adding faces {done}..{end}"))?;
        posting += started.elapsed();
        done = end;
        progress.update(done);
    }
    Ok(posting)
}

/// Times each search of `bodies` after `warmup` untimed ones.
pub fn time_searches(client: &Client, bodies: &[String], warmup: usize) -> Result<Vec<Duration>> {
    for body in bodies.iter().cycle().take(warmup) {
        search(client, body)?;
    }
    let mut timings = Vec::with_capacity(bodies.len());
    for body in bodies {
        let started = Instant::now();
        let ids = search(client, body)?;
        timings.push(started.elapsed());
        std::hint::black_box(ids);
    }
    Ok(timings)
}
