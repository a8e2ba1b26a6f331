//! Conditions compiled for one chunk.
//!
//! A [`Condition`] names a field and an operator; [`ChunkFilter::new`] binds it to the chunk's
//! column. String operators are decided once per distinct value of the column's dictionary
//! into a mask over codes, so the per-row test is a table look-up whatever the operator
//! (`like`, `ilike`, `set`). What is left per row is a comparison or a short loop.

use crate::search::{Condition, Op, Target, Values};
use crate::store::chunk::Chunk;
use crate::store::column::{Column, Dict};

/// One condition bound to a chunk's column.
enum Test<'a> {
    Never,
    Range {
        values: &'a [u64],
        min: u64,
        max: u64,
    },
    /// `wanted` is sorted.
    AnyOf {
        values: &'a [u64],
        wanted: &'a [u64],
    },
    Code {
        codes: &'a [u32],
        mask: Vec<bool>,
    },
    SetRange {
        rows: &'a [Box<[u64]>],
        min: u64,
        max: u64,
    },
    SetAnyOf {
        rows: &'a [Box<[u64]>],
        wanted: &'a [u64],
    },
    SetAllOf {
        rows: &'a [Box<[u64]>],
        wanted: &'a [u64],
    },
    SetCodeAny {
        rows: &'a [Box<[u32]>],
        mask: Vec<bool>,
    },
    /// `wanted` codes sorted; every one must be in the row.
    SetCodeAll {
        rows: &'a [Box<[u32]>],
        wanted: Vec<u32>,
    },
}

impl Test<'_> {
    #[inline]
    fn passes(&self, row: usize) -> bool {
        match self {
            Test::Never => false,
            Test::Range { values, min, max } => (*min..=*max).contains(&values[row]),
            Test::AnyOf { values, wanted } => contains(wanted, values[row]),
            Test::Code { codes, mask } => mask[codes[row] as usize],
            Test::SetRange { rows, min, max } => {
                let set = &rows[row];
                let first_at_least_min = set.partition_point(|&v| v < *min);
                set.get(first_at_least_min).is_some_and(|&v| v <= *max)
            }
            Test::SetAnyOf { rows, wanted } => rows[row].iter().any(|&v| contains(wanted, v)),
            Test::SetAllOf { rows, wanted } => wanted.iter().all(|&v| rows[row].binary_search(&v).is_ok()),
            Test::SetCodeAny { rows, mask } => rows[row].iter().any(|&c| mask[c as usize]),
            Test::SetCodeAll { rows, wanted } => wanted.iter().all(|c| rows[row].binary_search(c).is_ok()),
        }
    }
}

#[inline]
fn contains(sorted: &[u64], value: u64) -> bool {
    if sorted.len() <= 8 {
        sorted.contains(&value)
    } else {
        sorted.binary_search(&value).is_ok()
    }
}

/// All of a query's conditions bound to one chunk.
pub struct ChunkFilter<'a> {
    tests: Vec<Test<'a>>,
}

impl<'a> ChunkFilter<'a> {
    pub fn new(chunk: &'a Chunk, conditions: &'a [Condition]) -> ChunkFilter<'a> {
        let tests = conditions.iter().map(|c| compile(chunk, c)).collect();
        ChunkFilter { tests }
    }

    /// Whether every row passes (no conditions).
    pub fn is_empty(&self) -> bool {
        self.tests.is_empty()
    }

    /// Whether no row can pass.
    pub fn rejects_all(&self) -> bool {
        self.tests.iter().any(|t| matches!(t, Test::Never))
    }

    /// Whether one row passes every condition.
    pub fn passes(&self, row: u32) -> bool {
        self.tests.iter().all(|t| t.passes(row as usize))
    }

    /// The rows of `rows` that pass, in order. Written without a branch on the outcome: with
    /// half the rows passing at random, a branch would be mispredicted every other row.
    pub fn select(&self, rows: impl Iterator<Item = u32>, capacity: usize) -> Vec<u32> {
        let mut selected = vec![0u32; capacity];
        let mut count = 0;
        let mut keep = |row: u32, pass: bool| {
            selected[count] = row;
            count += usize::from(pass);
        };
        match self.tests.as_slice() {
            [only] => rows.for_each(|row| keep(row, only.passes(row as usize))),
            tests => rows.for_each(|row| keep(row, tests.iter().fold(true, |all, t| all & t.passes(row as usize)))),
        }
        selected.truncate(count);
        selected
    }
}

fn compile<'a>(chunk: &'a Chunk, condition: &'a Condition) -> Test<'a> {
    let column = match condition.target {
        Target::Id => None,
        Target::Field(position) => Some(&chunk.columns[position]),
    };
    match (column, &condition.op) {
        (_, Op::Nothing) => Test::Never,
        (None, op) => scalar_test(&chunk.ids, op),
        (Some(Column::Unsigned(values)), op) => scalar_test(values, op),
        (Some(Column::UnsignedSet(rows)), Op::Range { min, max }) => Test::SetRange { rows, min: *min, max: *max },
        (Some(Column::UnsignedSet(rows)), Op::AnyOf(Values::Unsigned(wanted))) => Test::SetAnyOf { rows, wanted },
        (Some(Column::UnsignedSet(rows)), Op::AllOf(Values::Unsigned(wanted))) => Test::SetAllOf { rows, wanted },
        (Some(Column::String { dict, codes }), op) => Test::Code { codes, mask: string_mask(dict, op) },
        (Some(Column::StringSet { dict, rows }), Op::AllOf(Values::Strings(wanted))) => {
            match wanted.iter().map(|s| dict.code_of(s)).collect::<Option<Vec<u32>>>() {
                Some(mut codes) => {
                    codes.sort_unstable();
                    Test::SetCodeAll { rows, wanted: codes }
                }
                // A value no face of this chunk has: no face of this chunk holds them all.
                None => Test::Never,
            }
        }
        (Some(Column::StringSet { dict, rows }), op) => Test::SetCodeAny { rows, mask: string_mask(dict, op) },
        // The parser only builds conditions that fit the field's type.
        (Some(_), _) => Test::Never,
    }
}

fn scalar_test<'a>(values: &'a [u64], op: &'a Op) -> Test<'a> {
    match op {
        Op::Range { min, max } => Test::Range { values, min: *min, max: *max },
        Op::AnyOf(Values::Unsigned(wanted)) => Test::AnyOf { values, wanted },
        _ => Test::Never,
    }
}

/// Which codes of a string column pass a `set` or `like` operator.
fn string_mask(dict: &Dict, op: &Op) -> Vec<bool> {
    match op {
        Op::AnyOf(Values::Strings(wanted)) => {
            let mut mask = vec![false; dict.code_count()];
            for code in wanted.iter().filter_map(|s| dict.code_of(s)) {
                mask[code as usize] = true;
            }
            mask
        }
        Op::Like(pattern) => dict.mask(|value| pattern.matches(value)),
        _ => vec![false; dict.code_count()],
    }
}
