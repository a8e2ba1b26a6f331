//! Metadata columns of one chunk.
//!
//! One column per schema field, one entry per row. Strings are dictionary-coded per column:
//! a row holds a `u32` code and the column's [`Dict`] holds each distinct string once, with a
//! reference count so that a string no row uses any more is freed and its code reused. That
//! keeps low-cardinality fields (camera ids, classes, the many empty defaults) small, and lets
//! a string filter be evaluated once per distinct value instead of once per row: the filter
//! marks the matching codes, then the row loop only looks codes up.

use std::collections::HashMap;
use std::sync::Arc;

use crate::schema::{FieldType, MetaValue};
use crate::store::Malformed;

/// The distinct strings of one column, addressed by code.
#[derive(Debug, Clone, Default)]
pub struct Dict {
    values: Vec<Arc<str>>,
    refs: Vec<u32>,
    lookup: HashMap<Arc<str>, u32>,
    free: Vec<u32>,
}

impl Dict {
    /// The code of `value`, adding it if new; counts one more reference.
    fn intern(&mut self, value: &str) -> u32 {
        if let Some(&code) = self.lookup.get(value) {
            self.refs[code as usize] += 1;
            return code;
        }
        let value: Arc<str> = Arc::from(value);
        let code = match self.free.pop() {
            Some(code) => {
                self.values[code as usize] = value.clone();
                self.refs[code as usize] = 1;
                code
            }
            None => {
                self.values.push(value.clone());
                self.refs.push(1);
                (self.values.len() - 1) as u32
            }
        };
        self.lookup.insert(value, code);
        code
    }

    /// Drops one reference; the last one frees the code.
    fn release(&mut self, code: u32) {
        let refs = &mut self.refs[code as usize];
        *refs -= 1;
        if *refs == 0 {
            let value = std::mem::replace(&mut self.values[code as usize], Arc::from(""));
            self.lookup.remove(&value);
            self.free.push(code);
        }
    }

    pub fn get(&self, code: u32) -> &str {
        &self.values[code as usize]
    }

    pub fn code_of(&self, value: &str) -> Option<u32> {
        self.lookup.get(value).copied()
    }

    /// How many codes there are (some may be free); codes are `0..code_count()`.
    pub fn code_count(&self) -> usize {
        self.values.len()
    }

    /// A mask over codes: `mask[code]` is whether the live value with that code matches.
    pub fn mask(&self, matches: impl Fn(&str) -> bool) -> Vec<bool> {
        self.values.iter().zip(&self.refs).map(|(value, &refs)| refs > 0 && matches(value)).collect()
    }
}

/// The values of one field for every row of a chunk.
#[derive(Debug, Clone)]
pub enum Column {
    String {
        dict: Dict,
        codes: Vec<u32>,
    },
    Unsigned(Vec<u64>),
    /// Each row's codes, sorted ascending.
    StringSet {
        dict: Dict,
        rows: Vec<Box<[u32]>>,
    },
    /// Each row's values, sorted ascending, no duplicates.
    UnsignedSet(Vec<Box<[u64]>>),
}

impl Column {
    pub fn new(field_type: FieldType) -> Column {
        match field_type {
            FieldType::String => Column::String { dict: Dict::default(), codes: Vec::new() },
            FieldType::Unsigned => Column::Unsigned(Vec::new()),
            FieldType::StringSet => Column::StringSet { dict: Dict::default(), rows: Vec::new() },
            FieldType::UnsignedSet => Column::UnsignedSet(Vec::new()),
        }
    }

    /// Appends a row. The value has the column's type: the gallery checked it against the
    /// schema, so a mismatch is a bug and panics.
    pub fn push(&mut self, value: &MetaValue) {
        match (self, value) {
            (Column::String { dict, codes }, MetaValue::String(s)) => codes.push(dict.intern(s)),
            (Column::Unsigned(values), MetaValue::Unsigned(n)) => values.push(*n),
            (Column::StringSet { dict, rows }, MetaValue::StringSet(set)) => rows.push(intern_set(dict, set)),
            (Column::UnsignedSet(rows), MetaValue::UnsignedSet(set)) => rows.push(set.clone().into_boxed_slice()),
            (column, value) => panic!("type mismatch: {value:?} pushed into {}", column.type_name()),
        }
    }

    /// Replaces the value of `row`.
    pub fn set(&mut self, row: usize, value: &MetaValue) {
        match (self, value) {
            (Column::String { dict, codes }, MetaValue::String(s)) => {
                let code = dict.intern(s);
                dict.release(std::mem::replace(&mut codes[row], code));
            }
            (Column::Unsigned(values), MetaValue::Unsigned(n)) => values[row] = *n,
            (Column::StringSet { dict, rows }, MetaValue::StringSet(set)) => {
                let codes = intern_set(dict, set);
                for &code in std::mem::replace(&mut rows[row], codes).iter() {
                    dict.release(code);
                }
            }
            (Column::UnsignedSet(rows), MetaValue::UnsignedSet(set)) => rows[row] = set.clone().into_boxed_slice(),
            (column, value) => panic!("type mismatch: {value:?} stored into {}", column.type_name()),
        }
    }

    /// Removes `row`, moving the last row into its place (as `Vec::swap_remove`).
    pub fn swap_remove(&mut self, row: usize) {
        match self {
            Column::String { dict, codes } => dict.release(codes.swap_remove(row)),
            Column::Unsigned(values) => {
                values.swap_remove(row);
            }
            Column::StringSet { dict, rows } => {
                for &code in rows.swap_remove(row).iter() {
                    dict.release(code);
                }
            }
            Column::UnsignedSet(rows) => {
                rows.swap_remove(row);
            }
        }
    }

    pub fn get(&self, row: usize) -> MetaValue {
        match self {
            Column::String { dict, codes } => MetaValue::String(dict.get(codes[row]).to_owned()),
            Column::Unsigned(values) => MetaValue::Unsigned(values[row]),
            Column::StringSet { dict, rows } => {
                let mut set: Vec<String> = rows[row].iter().map(|&c| dict.get(c).to_owned()).collect();
                set.sort_unstable();
                MetaValue::StringSet(set)
            }
            Column::UnsignedSet(rows) => MetaValue::UnsignedSet(rows[row].to_vec()),
        }
    }

    pub fn field_type(&self) -> FieldType {
        match self {
            Column::String { .. } => FieldType::String,
            Column::Unsigned(_) => FieldType::Unsigned,
            Column::StringSet { .. } => FieldType::StringSet,
            Column::UnsignedSet(_) => FieldType::UnsignedSet,
        }
    }

    /// Rows in the column.
    pub fn len(&self) -> usize {
        match self {
            Column::String { codes, .. } => codes.len(),
            Column::Unsigned(values) => values.len(),
            Column::StringSet { rows, .. } => rows.len(),
            Column::UnsignedSet(rows) => rows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for `additional` more rows.
    pub fn reserve(&mut self, additional: usize) {
        match self {
            Column::String { codes, .. } => codes.reserve_exact(additional),
            Column::Unsigned(values) => values.reserve_exact(additional),
            Column::StringSet { rows, .. } => rows.reserve_exact(additional),
            Column::UnsignedSet(rows) => rows.reserve_exact(additional),
        }
    }

    /// The column in its stored form, borrowed: serialising it gives the bytes of the
    /// [`StoredColumn`] it is read back as.
    pub fn stored(&self) -> StoredColumnRef<'_> {
        match self {
            Column::String { dict, codes } => StoredColumnRef::String { dict: DictValues(&dict.values), codes },
            Column::Unsigned(values) => StoredColumnRef::Unsigned(values),
            Column::StringSet { dict, rows } => StoredColumnRef::StringSet { dict: DictValues(&dict.values), rows },
            Column::UnsignedSet(rows) => StoredColumnRef::UnsignedSet(rows),
        }
    }

    /// Rebuilds a column from its stored form: the reference counts are counted again from the
    /// codes, codes that no row uses become free, and the lookup map holds the used values. A
    /// code outside the dictionary, a value that two used codes share, or a set row out of
    /// order is an error.
    pub fn from_stored(stored: StoredColumn) -> Result<Column, Malformed> {
        Ok(match stored {
            StoredColumn::String { dict, codes } => {
                let dict = Dict::rebuild(dict, codes.iter().copied())?;
                Column::String { dict, codes }
            }
            StoredColumn::Unsigned(values) => Column::Unsigned(values),
            StoredColumn::StringSet { dict, rows } => {
                check_sorted(&rows)?;
                let dict = Dict::rebuild(dict, rows.iter().flat_map(|row| row.iter().copied()))?;
                Column::StringSet { dict, rows }
            }
            StoredColumn::UnsignedSet(rows) => {
                check_sorted(&rows)?;
                Column::UnsignedSet(rows)
            }
        })
    }

    fn type_name(&self) -> &'static str {
        match self {
            Column::String { .. } => "a string column",
            Column::Unsigned(_) => "an unsigned column",
            Column::StringSet { .. } => "a set[string] column",
            Column::UnsignedSet(_) => "a set[unsigned] column",
        }
    }
}

/// A column as a snapshot stores it: the rows' codes or values and, for strings, the
/// dictionary's values by code (a free code holds ""). The reference counts, the lookup map and
/// the free list are not stored; [`Column::from_stored`] derives them from the codes.
///
/// The variants and fields are in the same order as in [`StoredColumnRef`], which is how a
/// column is written without copying it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StoredColumn {
    String { dict: Vec<String>, codes: Vec<u32> },
    Unsigned(Vec<u64>),
    StringSet { dict: Vec<String>, rows: Vec<Box<[u32]>> },
    UnsignedSet(Vec<Box<[u64]>>),
}

/// A borrowed [`StoredColumn`], for writing: it serialises to the same bytes.
#[derive(Debug, serde::Serialize)]
pub enum StoredColumnRef<'a> {
    String { dict: DictValues<'a>, codes: &'a [u32] },
    Unsigned(&'a [u64]),
    StringSet { dict: DictValues<'a>, rows: &'a [Box<[u32]>] },
    UnsignedSet(&'a [Box<[u64]>]),
}

/// A dictionary's values by code, serialised as a sequence of strings.
#[derive(Debug)]
pub struct DictValues<'a>(&'a [Arc<str>]);

impl serde::Serialize for DictValues<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|value| &**value))
    }
}

impl Dict {
    /// The dictionary of `values` (by code) used by `codes` (every code of every row).
    fn rebuild(values: Vec<String>, codes: impl Iterator<Item = u32>) -> Result<Dict, Malformed> {
        if values.len() > u32::MAX as usize + 1 {
            return Err(malformed!("a dictionary of {} values has more than 2^32 codes", values.len()));
        }
        let mut refs = vec![0u32; values.len()];
        for code in codes {
            let count = refs
                .get_mut(code as usize)
                .ok_or_else(|| malformed!("code {code} is outside the dictionary of {} values", values.len()))?;
            *count = count.checked_add(1).ok_or_else(|| malformed!("code {code} is used too many times"))?;
        }
        let mut dict = Dict { values: Vec::with_capacity(values.len()), refs, ..Dict::default() };
        for (code, value) in values.into_iter().enumerate() {
            if dict.refs[code] == 0 {
                dict.values.push(Arc::from(""));
                dict.free.push(code as u32);
                continue;
            }
            let value: Arc<str> = Arc::from(value);
            if dict.lookup.insert(value.clone(), code as u32).is_some() {
                return Err(malformed!("the value {value:?} has two codes in the dictionary"));
            }
            dict.values.push(value);
        }
        // `intern` pops the free list: the lowest free code is reused first.
        dict.free.reverse();
        Ok(dict)
    }
}

/// Set rows are kept sorted (see [`Column`]).
fn check_sorted<T: Ord>(rows: &[Box<[T]>]) -> Result<(), Malformed> {
    match rows.iter().position(|row| !row.is_sorted()) {
        Some(row) => Err(malformed!("the set of row {row} is not sorted")),
        None => Ok(()),
    }
}

fn intern_set(dict: &mut Dict, set: &[String]) -> Box<[u32]> {
    let mut codes: Vec<u32> = set.iter().map(|s| dict.intern(s)).collect();
    codes.sort_unstable();
    codes.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_frees_and_reuses_codes() {
        let mut column = Column::new(FieldType::String);
        column.push(&MetaValue::String("a".into()));
        column.push(&MetaValue::String("b".into()));
        column.push(&MetaValue::String("a".into()));
        column.swap_remove(1); // "b" is gone, the last "a" moves to row 1
        column.set(0, &MetaValue::String("c".into()));
        let Column::String { dict, codes } = &column else { unreachable!() };
        assert_eq!(codes.len(), 2);
        assert_eq!(dict.get(codes[1]), "a");
        assert_eq!(dict.get(codes[0]), "c");
        assert_eq!(dict.code_count(), 2, "the code of \"b\" was reused for \"c\"");
        assert_eq!(dict.code_of("b"), None);
    }

    #[test]
    fn sets_come_back_sorted() {
        let mut column = Column::new(FieldType::StringSet);
        column.push(&MetaValue::StringSet(vec!["z".into(), "a".into()]));
        assert_eq!(column.get(0), MetaValue::StringSet(vec!["a".into(), "z".into()]));
    }
}
