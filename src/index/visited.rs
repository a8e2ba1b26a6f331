//! Which nodes a walk has already seen: one stamp per node, reused across walks.
//!
//! Clearing a bitmap of a million nodes before every search would cost more than the search.
//! Instead each thread keeps one array of `u16` stamps and a current stamp: a node is visited
//! when its entry equals the current stamp, and starting a walk just increments the stamp. The
//! array is zeroed only when the stamp wraps (every 65,535 walks) or grows.

use std::cell::RefCell;

pub struct Visited {
    stamps: Vec<u16>,
    current: u16,
}

impl Visited {
    fn new() -> Visited {
        Visited { stamps: Vec::new(), current: 0 }
    }

    /// Starts a walk over a graph of `nodes` slots.
    fn start(&mut self, nodes: usize) {
        if self.stamps.len() < nodes {
            self.stamps.resize(nodes, 0);
        }
        self.current = self.current.wrapping_add(1);
        if self.current == 0 {
            self.stamps.fill(0);
            self.current = 1;
        }
    }

    /// Marks `node`; returns whether it was new in this walk.
    #[inline]
    pub fn insert(&mut self, node: u32) -> bool {
        let stamp = &mut self.stamps[node as usize];
        if *stamp == self.current {
            false
        } else {
            *stamp = self.current;
            true
        }
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::new(Visited::new());
}

/// Runs `walk` with this thread's visited set, started for `nodes` slots.
pub fn with_visited<R>(nodes: usize, walk: impl FnOnce(&mut Visited) -> R) -> R {
    VISITED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut visited) => {
            visited.start(nodes);
            walk(&mut visited)
        }
        // A walk inside a walk on the same thread (not done today): give it its own set.
        Err(_) => {
            let mut visited = Visited::new();
            visited.start(nodes);
            walk(&mut visited)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_walk_starts_empty() {
        for _ in 0..70_000 {
            with_visited(10, |v| {
                assert!(v.insert(3));
                assert!(!v.insert(3));
                assert!(v.insert(9));
            });
        }
        with_visited(20, |v| assert!(v.insert(19)));
    }
}
