//! Search: what a query is, how it is read from JSON, how it is run.
//!
//! A search request is read once into a [`Query`] (`parse.rs`): the limit, the order, an
//! optional facen with a score range, and a list of [`Condition`]s on the id and metadata
//! fields, all checked against the schema so that a wrong operator or value is a 400 naming
//! it. Running it (`exact.rs`) compiles the conditions for each chunk (`filter.rs`), so that
//! string tests are decided once per distinct value, applies them before any vector is
//! touched, scores the rows that pass with SIMD dot products, and keeps the best `limit` in a
//! bounded heap. Large galleries go through their graph instead when the planner (`planner.rs`)
//! says so: `indexed.rs` walks it and hands the candidates to the same exact re-rank.

pub mod exact;
pub mod filter;
pub mod indexed;
pub mod parse;
pub mod planner;

pub use exact::{rank, run, Hit};

/// Result order. Ties are broken by id ascending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    IdAscending,
    IdDescending,
    ScoreDescending,
}

/// Similarity search: the query vector, its inverse norm, and the accepted score range.
#[derive(Debug, Clone, PartialEq)]
pub struct FacenFilter {
    pub vector: Vec<f32>,
    pub inverse_norm: f64,
    pub min_score: f32,
    pub max_score: f32,
}

/// What a condition looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Id,
    /// A metadata field, by position in the schema.
    Field(usize),
}

/// Values of an operator's argument, typed like the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Values {
    /// Sorted, no duplicates.
    Unsigned(Vec<u64>),
    /// Sorted, no duplicates.
    Strings(Vec<String>),
}

/// A `like` pattern: only `aa%`, `%aa`, `%aa%` and plain `aa` exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub kind: PatternKind,
    /// The text without its `%`, lower-cased when `ignore_case`.
    pub text: String,
    pub ignore_case: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    Prefix,
    Suffix,
    Contains,
    Exact,
}

impl Pattern {
    pub fn matches(&self, value: &str) -> bool {
        if self.ignore_case {
            self.matches_exactly(&value.to_lowercase())
        } else {
            self.matches_exactly(value)
        }
    }

    fn matches_exactly(&self, value: &str) -> bool {
        match self.kind {
            PatternKind::Prefix => value.starts_with(&self.text),
            PatternKind::Suffix => value.ends_with(&self.text),
            PatternKind::Contains => value.contains(&self.text),
            PatternKind::Exact => value == self.text,
        }
    }
}

/// One test a face must pass. On a set field, `AnyOf`, `Range` and `Like` ask whether some
/// element passes, `AllOf` whether the set holds every value.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Nothing passes (an empty `set`, a scalar `subset` of two different values).
    Nothing,
    Range {
        min: u64,
        max: u64,
    },
    AnyOf(Values),
    /// Only on set fields: on scalars `subset` is rewritten to `AnyOf`/`Nothing`/no condition.
    AllOf(Values),
    Like(Pattern),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub target: Target,
    pub op: Op,
}

/// A checked search request.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub limit: usize,
    pub sort: Sort,
    pub facen: Option<FacenFilter>,
    /// All must pass.
    pub conditions: Vec<Condition>,
    /// `"exact": true`: scan, never the graph (see `search::planner`).
    pub exact: bool,
    /// `"page"`: only results after this position in the order (the previous page's last).
    pub after: Option<Cursor>,
}

/// A position in a result order, given back to a client as `next_page` and read from `page`:
/// the next page holds the results ranked after it. Shards and routers share the format, so a
/// router passes its client's cursor to every shard and each shard skips the earlier pages
/// itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cursor {
    /// After this id, in id order (either direction).
    Id(u64),
    /// After (score, id) in score order: lower scores, or the same score and a larger id.
    Score(f32, u64),
}

impl Cursor {
    /// The position of a result of a search in `sort` order.
    pub fn at(sort: Sort, id: u64, score: Option<f32>) -> Cursor {
        match (sort, score) {
            (Sort::ScoreDescending, Some(score)) => Cursor::Score(score, id),
            _ => Cursor::Id(id),
        }
    }

    /// The opaque text of `next_page` (URL-safe base64 of `id:ID` or `score:BITS:ID`).
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let text = match self {
            Cursor::Id(id) => format!("id:{id}"),
            Cursor::Score(score, id) => format!("score:{:08x}:{id}", score.to_bits()),
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            ["id", id] => Some(Cursor::Id(id.parse().ok()?)),
            ["score", bits, id] => {
                let score = f32::from_bits(u32::from_str_radix(bits, 16).ok()?);
                score.is_finite().then_some(Cursor::Score(score, id.parse().ok()?))
            }
            _ => None,
        }
    }

    /// Whether the cursor is a position in `sort` order.
    pub fn fits(&self, sort: Sort) -> bool {
        matches!(
            (self, sort),
            (Cursor::Score(..), Sort::ScoreDescending) | (Cursor::Id(_), Sort::IdAscending | Sort::IdDescending)
        )
    }

    /// Its rank in `sort` order (see [`rank`]): results after it rank higher.
    pub fn rank(&self, sort: Sort) -> u128 {
        match *self {
            Cursor::Id(id) => rank(sort, id, 0.0),
            Cursor::Score(score, id) => rank(sort, id, score),
        }
    }
}

impl Query {
    /// The ids of an `id` `set` condition, if there is one: the engine then looks those
    /// faces up instead of scanning.
    pub fn id_set(&self) -> Option<&[u64]> {
        self.conditions.iter().find_map(|c| match (&c.target, &c.op) {
            (Target::Id, Op::AnyOf(Values::Unsigned(ids))) => Some(ids.as_slice()),
            _ => None,
        })
    }
}
