//! The planner: exact scan or graph walk, per search.
//!
//! The graph answers one kind of question well: "the best `limit` faces by similarity". It is
//! used only for that (a facen, score order, no upper score bound, no id set):
//!
//! - With conditions, the share of faces that pass is estimated by testing them on a sample of
//!   rows ([`SAMPLE_ROWS`], spread over the gallery's chunks). Few passing faces are scanned
//!   exactly: fewer than the gallery size that gets a graph (`min_faces`: below it a scan is
//!   cheap), or less than [`INDEX_MIN_SHARE`] of the gallery (a filtered walk scores about
//!   `ef / share` nodes to collect `ef` passing ones). The share is a fixed rule, not a cost
//!   estimate: filters passing 10% and more are meant to go through the graph, though
//!   at 1M faces a 10% walk (14.8 ms) costs more than a scan on two threads (4.9 ms;
//!   docs/benchmarks.md).
//! - Otherwise the walk collects `ef_search` candidates, at least `limit`, which are re-ranked
//!   exactly. Under a filter it collects more ([`filtered_ef`]): a filtered top-10 reaches
//!   past the query's own identity into the many faces of other identities that lie at almost
//!   the same distance, where the graph's approximate order needs a wider net.
//! - `"exact": true`, a gallery without a graph yet, a tail too large to scan cheaply, or a
//!   `limit` close to the gallery's size: exact.

use crate::search::{Query, Sort};

/// Rows the selectivity estimate tests.
pub const SAMPLE_ROWS: usize = 2048;
/// Filters passing a smaller share than this are scanned.
pub const INDEX_MIN_SHARE: f64 = 0.05;
/// A tail larger than this (faces not in the graph yet) makes the whole search exact.
pub const MAX_TAIL: usize = 50_000;

/// How a search runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plan {
    /// Every face (or every face an id set names) is tested and scored.
    Exact(&'static str),
    /// A graph walk collecting `ef` candidates, then an exact re-rank (with the tail).
    Index { ef: usize },
}

impl Plan {
    /// The `X-search-stat` value.
    pub fn stat(&self) -> &'static str {
        match self {
            Plan::Exact(_) => "without_index",
            Plan::Index { .. } => "with_index",
        }
    }
}

/// What the planner knows of the gallery.
pub struct Situation {
    pub faces: usize,
    /// `None` while the gallery has no graph.
    pub tail: Option<usize>,
    pub ef_search: usize,
    /// Filters passing fewer rows than this are scanned (the size from which galleries get a
    /// graph: below it a scan is cheap).
    pub scan_rows: usize,
}

/// Chooses a plan; `share` estimates the share of faces passing the query's conditions (called
/// only when there are conditions).
pub fn plan(query: &Query, situation: &Situation, share: impl FnOnce() -> f64) -> Plan {
    if query.exact {
        return Plan::Exact("exact requested");
    }
    let Some(facen) = &query.facen else { return Plan::Exact("no facen") };
    if query.after.is_some() {
        // A graph walk finds the best results, not those after a position deep in the order.
        return Plan::Exact("a page cursor");
    }
    if query.sort != Sort::ScoreDescending {
        return Plan::Exact("id order");
    }
    if facen.max_score < 1.0 {
        return Plan::Exact("an upper score bound");
    }
    if query.id_set().is_some() {
        return Plan::Exact("an id set");
    }
    let Some(tail) = situation.tail else { return Plan::Exact("no index yet") };
    if tail > MAX_TAIL {
        return Plan::Exact("the index is catching up");
    }
    if query.limit.saturating_mul(4) > situation.faces {
        return Plan::Exact("a limit close to the gallery's size");
    }
    let ef = situation.ef_search.max(query.limit);
    if query.conditions.is_empty() {
        return Plan::Index { ef };
    }
    let share = share();
    if share < INDEX_MIN_SHARE || share * (situation.faces as f64) < situation.scan_rows as f64 {
        return Plan::Exact("a selective filter");
    }
    Plan::Index { ef: filtered_ef(situation.ef_search, share).max(query.limit) }
}

/// The width of a walk under a filter that `share` of the faces pass: twice `ef_search`, and
/// three times when a quarter to three quarters pass. There a top-10 is about half the query's
/// own identity and half faces of other identities at nearly equal distances, which the
/// walk's 8-bit order ranks least well. With fewer passing faces the walk scores many nodes
/// anyway (about `ef / share` to collect `ef`); with nearly all passing, the top-10 is the
/// query's identity, which is easy to find. On the 1M face-like set at 2×, the 50% filter
/// reached recall@10 0.990, the 10% and 100% ones 0.998 (docs/benchmarks.md).
pub fn filtered_ef(ef_search: usize, share: f64) -> usize {
    if (0.25..=0.75).contains(&share) {
        ef_search * 3
    } else {
        ef_search * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{Condition, FacenFilter, Op, Target};

    fn query(limit: usize, sort: Sort, max_score: f32, conditions: Vec<Condition>) -> Query {
        let facen = FacenFilter { vector: vec![1.0, 0.0], inverse_norm: 1.0, min_score: -1.0, max_score };
        Query { limit, sort, facen: Some(facen), conditions, exact: false, after: None }
    }

    fn range() -> Vec<Condition> {
        vec![Condition { target: Target::Field(0), op: Op::Range { min: 0, max: 10 } }]
    }

    const BIG: Situation = Situation { faces: 1_000_000, tail: Some(100), ef_search: 128, scan_rows: 20_000 };

    #[test]
    fn plain_score_searches_walk_the_graph() {
        let q = query(10, Sort::ScoreDescending, 1.0, vec![]);
        assert_eq!(plan(&q, &BIG, || unreachable!()), Plan::Index { ef: 128 });
        let wide = query(500, Sort::ScoreDescending, 1.0, vec![]);
        assert_eq!(plan(&wide, &BIG, || unreachable!()), Plan::Index { ef: 500 });
    }

    #[test]
    fn filters_walk_only_when_enough_faces_pass() {
        let q = query(10, Sort::ScoreDescending, 1.0, range());
        assert_eq!(plan(&q, &BIG, || 0.1), Plan::Index { ef: 256 });
        assert_eq!(plan(&q, &BIG, || 0.5), Plan::Index { ef: 384 });
        assert_eq!(plan(&q, &BIG, || 1.0), Plan::Index { ef: 256 });
        assert_eq!(plan(&q, &BIG, || 0.01).stat(), "without_index");
        let small = Situation { faces: 100_000, ..BIG };
        assert_eq!(plan(&q, &small, || 0.1), Plan::Exact("a selective filter"));
    }

    #[test]
    fn everything_else_is_exact() {
        let plain = query(10, Sort::ScoreDescending, 1.0, vec![]);
        let exact = Query { exact: true, ..plain.clone() };
        assert_eq!(plan(&exact, &BIG, || 1.0), Plan::Exact("exact requested"));
        let no_graph = Situation { tail: None, ..BIG };
        assert_eq!(plan(&plain, &no_graph, || 1.0), Plan::Exact("no index yet"));
        let behind = Situation { tail: Some(MAX_TAIL + 1), ..BIG };
        assert_eq!(plan(&plain, &behind, || 1.0).stat(), "without_index");
        for q in [
            query(10, Sort::IdAscending, 1.0, vec![]),
            query(10, Sort::ScoreDescending, 0.9, vec![]),
            query(300_000, Sort::ScoreDescending, 1.0, vec![]),
            Query { facen: None, ..plain.clone() },
        ] {
            assert_eq!(plan(&q, &BIG, || 1.0).stat(), "without_index", "{q:?}");
        }
    }
}
