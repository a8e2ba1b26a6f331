//! The indexer: one background thread per engine that keeps every gallery's graph up to date
//! (first builds, the tail's steps, rebuilds past the tombstone share; see
//! `index::gallery_index`). It holds the engine only weakly and stops once the engine is gone.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{GalleryHandle, Shared};

/// How long the indexer sleeps when no gallery had work.
const IDLE: Duration = Duration::from_millis(50);

pub(super) fn start(shared: Weak<Shared>) {
    let spawned = std::thread::Builder::new().name("facedb-indexer".into()).spawn(move || loop {
        let Some(engine) = shared.upgrade() else { return };
        let handles: Vec<Arc<GalleryHandle>> = engine.galleries.read().values().cloned().collect();
        drop(engine);
        let mut worked = false;
        for handle in handles {
            worked |= handle.index.step(&handle.state);
        }
        if !worked {
            std::thread::sleep(IDLE);
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the indexer thread ({e}): every search will scan");
    }
}
