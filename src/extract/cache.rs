//! The detection cache: what `/v2/detect` found, kept for a while under the detection's id, so
//! that `faces/add` and `faces/search` can name a detection instead of sending a facen.
//!
//! Bounded in entries (least recently used first out) and in age (an entry older than the TTL
//! is gone, whatever its use). Ids are unique to this process: a process nonce and a counter.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use super::dlib::Rect;

/// One detected face as cached.
#[derive(Debug, Clone)]
pub struct CachedFace {
    pub bbox: Rect,
    pub score: f64,
    /// The descriptor, when detect was asked for it (`facen=true`).
    pub facen: Option<Arc<Vec<f32>>>,
    /// The aligned face chip as PNG, with the facen.
    pub chip_png: Option<Arc<Vec<u8>>>,
}

/// Cache size and entry lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    pub entries: usize,
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { entries: 4096, ttl: Duration::from_secs(3600) }
    }
}

pub struct DetectionCache {
    entries: Mutex<LruCache<String, (Instant, CachedFace)>>,
    ttl: Duration,
    nonce: u64,
    counter: AtomicU64,
}

impl DetectionCache {
    pub fn new(config: CacheConfig) -> DetectionCache {
        let capacity = NonZeroUsize::new(config.entries).unwrap_or(NonZeroUsize::MIN);
        DetectionCache {
            entries: Mutex::new(LruCache::new(capacity)),
            ttl: config.ttl,
            // A random 32 bits (std's per-process hash keys) keep ids of an earlier run from
            // naming faces of this one.
            nonce: std::collections::hash_map::RandomState::new().hash_one(std::process::id()) & 0xffff_ffff,
            counter: AtomicU64::new(0),
        }
    }

    /// Stores a face and returns its new id.
    pub fn insert(&self, face: CachedFace) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:08x}{n:012x}", self.nonce);
        self.entries.lock().put(id.clone(), (Instant::now(), face));
        id
    }

    /// The face stored under `id`; `None` when it was never issued here, was evicted, or is
    /// older than the TTL.
    pub fn get(&self, id: &str) -> Option<CachedFace> {
        let mut entries = self.entries.lock();
        match entries.get(id) {
            Some((born, face)) if born.elapsed() <= self.ttl => Some(face.clone()),
            Some(_) => {
                entries.pop(id);
                None
            }
            None => None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(score: f64) -> CachedFace {
        CachedFace { bbox: Rect { left: 0, top: 0, right: 9, bottom: 9 }, score, facen: None, chip_png: None }
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let cache = DetectionCache::new(CacheConfig { entries: 2, ttl: Duration::from_secs(60) });
        let a = cache.insert(face(1.0));
        let b = cache.insert(face(2.0));
        assert_ne!(a, b);
        assert_eq!(cache.get(&a).unwrap().score, 1.0);
        let c = cache.insert(face(3.0));
        assert!(cache.get(&b).is_none());
        assert!(cache.get(&a).is_some() && cache.get(&c).is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn entries_older_than_the_ttl_are_gone() {
        let cache = DetectionCache::new(CacheConfig { entries: 8, ttl: Duration::from_millis(30) });
        let a = cache.insert(face(1.0));
        assert!(cache.get(&a).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&a).is_none());
        assert!(cache.is_empty());
        assert!(cache.get("no-such-id").is_none());
    }
}
