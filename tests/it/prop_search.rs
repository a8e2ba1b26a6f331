//! Property test: random small galleries and random searches, checked against a naive oracle.
//!
//! Each case generates a gallery of 0..60 faces (ids drawn to hit 0, the i64/u64 boundaries
//! and u64::MAX; 4-float integer facens on a server of its own started with `--facen-size 4`;
//! meta for the example schema with missing and `null` fields, duplicate set elements, empty
//! sets and non-ASCII strings), adds it over HTTP into a fresh gallery, then runs a few random
//! searches: filters combining `range`/`set`/`subset`/`like`/`ilike` on the id and on meta
//! fields of every type, an optional facen filter with a score range, a sort and a limit.
//!
//! The oracle shares no code with the server: it walks the generated faces with plain loops,
//! computes the cosine in f64 from the f32 vectors, and applies the rules of spec.md literally.
//! Scores are compared with a tolerance of 1e-4. Faces whose score lies within 1e-5 of a
//! score bound may be returned or not; the order among results is checked against the
//! server's own scores (score descending, then id ascending) and against the oracle's scores
//! with a 1e-5 tolerance. Integer vectors in -3..=3 make such near-ties rare and exact zeros
//! (orthogonal or zero vectors) exact.
//!
//! `PROPTEST_CASES` sets the number of cases (48 by default).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

use crate::common::{facen, full_meta, Server};

const DIM: usize = 4;

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| Server::start(&["--facen-size", "4"]))
}

// ---------------------------------------------------------------------------------------------
// The model: faces and queries as generated
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Uns,
    SetStr,
    SetUns,
}

/// The example-schema fields the test fills and filters on.
const FIELDS: &[(&str, Kind)] = &[
    ("cam_id", Kind::Str),
    ("person_name", Kind::Str),
    ("m:cam_id", Kind::Str),
    ("person_id", Kind::Uns),
    ("m:timestamp", Kind::Uns),
    ("tags", Kind::SetStr),
    ("lists", Kind::SetUns),
];

const STRINGS: &[&str] = &[
    "",
    "a",
    "ab",
    "abc",
    "b",
    "ba",
    "x y",
    "Ünïcödé",
    "ünïcödé",
    "ÜNÏCÖDÉ",
    "ÉCOLE",
    "école",
    "ecole",
    "straße",
    "STRASSE",
    "Straße",
    "日本語",
];

const SCORES: &[f64] = &[-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0];

#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Uns(u64),
    SetStr(Vec<String>),
    SetUns(Vec<u64>),
}

impl Val {
    fn to_json(&self) -> Value {
        match self {
            Val::Str(s) => json!(s),
            Val::Uns(n) => json!(n),
            Val::SetStr(v) => json!(v),
            Val::SetUns(v) => json!(v),
        }
    }
}

#[derive(Debug, Clone)]
struct GFace {
    id: u64,
    vec: [i8; DIM],
    /// One entry per `FIELDS`; `None` is sent as a missing key or as `null`.
    meta: Vec<Option<Val>>,
    nulls: bool,
}

impl GFace {
    fn floats(&self) -> Vec<f32> {
        self.vec.iter().map(|&x| x as f32).collect()
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        for ((name, _), v) in FIELDS.iter().zip(&self.meta) {
            match v {
                Some(v) => {
                    m.insert(name.to_string(), v.to_json());
                }
                None if self.nulls => {
                    m.insert(name.to_string(), Value::Null);
                }
                None => {}
            }
        }
        let mut f = json!({"id": self.id, "facen": facen(&self.floats())});
        if !m.is_empty() || self.nulls {
            f["meta"] = Value::Object(m);
        }
        f
    }
}

#[derive(Debug, Clone)]
enum Op {
    Range(u64, u64),
    SetU(Vec<u64>),
    SubsetU(Vec<u64>),
    SetS(Vec<String>),
    SubsetS(Vec<String>),
    Like(String),
    Ilike(String),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Range(..) => "range",
            Op::SetU(_) | Op::SetS(_) => "set",
            Op::SubsetU(_) | Op::SubsetS(_) => "subset",
            Op::Like(_) => "like",
            Op::Ilike(_) => "ilike",
        }
    }

    fn arg(&self) -> Value {
        match self {
            Op::Range(a, b) => json!([a, b]),
            Op::SetU(v) | Op::SubsetU(v) => json!(v),
            Op::SetS(v) | Op::SubsetS(v) => json!(v),
            Op::Like(p) | Op::Ilike(p) => json!(p),
        }
    }
}

fn ops_json(ops: &[Op]) -> Value {
    let mut m = Map::new();
    for op in ops {
        m.insert(op.name().to_string(), op.arg());
    }
    Value::Object(m)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sort {
    Id,
    IdDesc,
    Score,
}

#[derive(Debug, Clone)]
struct Query {
    id_ops: Option<Vec<Op>>,
    /// One entry per `FIELDS`.
    meta_ops: Vec<Option<Vec<Op>>>,
    facen: Option<([i8; DIM], (f64, f64), bool)>,
    /// 0: none, 1: "id", 2: "-id", 3: {"id":1}, 4: {"id":-1}, 5: "-score", 6: {"score":-1}
    sort: u8,
    limit: Option<u64>,
    other_path: bool,
}

impl Query {
    fn sort_kind(&self) -> Sort {
        match (self.sort_json(), self.facen.is_some()) {
            (None, false) => Sort::Id,
            (None, true) => Sort::Score,
            _ => match self.sort {
                1 | 3 => Sort::Id,
                2 | 4 => Sort::IdDesc,
                _ => Sort::Score,
            },
        }
    }

    fn sort_json(&self) -> Option<Value> {
        match self.sort {
            1 => Some(json!("id")),
            2 => Some(json!("-id")),
            3 => Some(json!({"id": 1})),
            4 => Some(json!({"id": -1})),
            5 if self.facen.is_some() => Some(json!("-score")),
            6 if self.facen.is_some() => Some(json!({"score": -1})),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        let mut filter = Map::new();
        if let Some(ops) = &self.id_ops {
            filter.insert("id".into(), ops_json(ops));
        }
        let mut meta = Map::new();
        for ((name, _), ops) in FIELDS.iter().zip(&self.meta_ops) {
            if let Some(ops) = ops {
                meta.insert(name.to_string(), ops_json(ops));
            }
        }
        if !meta.is_empty() {
            filter.insert("meta".into(), Value::Object(meta));
        }
        if let Some((v, (lo, hi), with_score)) = &self.facen {
            let floats: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            let mut f = json!({"data": facen(&floats)});
            if *with_score {
                f["score"] = json!([lo, hi]);
            }
            filter.insert("facen".into(), f);
        }
        let mut body = Map::new();
        if !filter.is_empty() {
            body.insert("filter".into(), Value::Object(filter));
        }
        if let Some(s) = self.sort_json() {
            body.insert("sort".into(), s);
        }
        if let Some(l) = self.limit {
            body.insert("limit".into(), json!(l));
        }
        Value::Object(body)
    }
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

fn string() -> impl Strategy<Value = String> {
    select(STRINGS).prop_map(|s| s.to_string())
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..8,
        1 => Just(777u64),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => Just(1u64 << 63),
        1 => any::<u64>(),
    ]
}

fn id() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..40,
        2 => (u64::MAX - 20)..=u64::MAX,
        1 => Just(i64::MAX as u64),
        1 => ((1u64 << 63) - 3)..((1u64 << 63) + 3),
        1 => Just(9_223_372_036_854_776_000u64),
        2 => any::<u64>(),
    ]
}

fn val(kind: Kind) -> BoxedStrategy<Val> {
    match kind {
        Kind::Str => string().prop_map(Val::Str).boxed(),
        Kind::Uns => number().prop_map(Val::Uns).boxed(),
        Kind::SetStr => prop::collection::vec(string(), 0..4).prop_map(Val::SetStr).boxed(),
        Kind::SetUns => prop::collection::vec(number(), 0..4).prop_map(Val::SetUns).boxed(),
    }
}

fn gface() -> impl Strategy<Value = GFace> {
    let meta: Vec<BoxedStrategy<Option<Val>>> =
        FIELDS.iter().map(|(_, k)| prop::option::weighted(0.7, val(*k)).boxed()).collect();
    (id(), prop::array::uniform4(-3i8..=3), meta, any::<bool>()).prop_map(|(id, vec, meta, nulls)| GFace {
        id,
        vec,
        meta,
        nulls,
    })
}

fn gallery() -> impl Strategy<Value = Vec<GFace>> {
    prop::collection::vec(gface(), 0..60).prop_map(|faces| {
        let mut seen = BTreeSet::new();
        faces.into_iter().filter(|f| seen.insert(f.id)).collect()
    })
}

/// A list for `set`/`subset`: mostly 1..4 values, sometimes empty.
fn list<T: Clone + std::fmt::Debug + 'static>(v: impl Strategy<Value = T> + 'static) -> BoxedStrategy<Vec<T>> {
    prop_oneof![1 => Just(Vec::new()), 9 => prop::collection::vec(v, 1..4)].boxed()
}

/// Operators for an id, unsigned or set[unsigned] field: mostly one, sometimes two.
fn num_ops(pool: Vec<u64>) -> BoxedStrategy<Vec<Op>> {
    let v = move || prop_oneof![4 => select(pool.clone()), 1 => number()];
    let range = {
        let v = v.clone();
        move || (v(), v()).prop_map(|(a, b)| Op::Range(a.min(b), a.max(b)))
    };
    let set = {
        let v = v.clone();
        move || list(v()).prop_map(Op::SetU)
    };
    let subset = move || list(v()).prop_map(Op::SubsetU);
    prop_oneof![
        3 => range().prop_map(|a| vec![a]),
        3 => set().prop_map(|a| vec![a]),
        2 => subset().prop_map(|a| vec![a]),
        1 => (range(), set()).prop_map(|(a, b)| vec![a, b]),
        1 => (range(), subset()).prop_map(|(a, b)| vec![a, b]),
    ]
    .boxed()
}

/// A `like` pattern made from a pool string, maybe case-changed: a prefix of it as `aa%`, a
/// suffix as `%aa`, a middle piece as `%aa%`, or the whole string (exact).
fn pattern() -> impl Strategy<Value = String> {
    (string(), 0usize..4, 1usize..5, 0u8..4, 0u8..3).prop_map(|(s, skip, take, kind, case)| {
        let chars: Vec<char> = s.chars().collect();
        let n = chars.len();
        let piece: String = match kind {
            0 => chars[..take.min(n)].iter().collect(),
            1 => chars[n - take.min(n)..].iter().collect(),
            2 => chars.iter().skip(skip).take(take).collect(),
            _ => s.clone(),
        };
        let piece = match case {
            0 => piece,
            1 => piece.to_uppercase(),
            _ => piece.to_lowercase(),
        };
        if piece.is_empty() {
            return piece; // the exact pattern "" (matches only the empty string)
        }
        match kind {
            0 => format!("{piece}%"),
            1 => format!("%{piece}"),
            2 => format!("%{piece}%"),
            _ => piece,
        }
    })
}

/// Operators for a string or set[string] field: mostly one, sometimes two.
fn str_ops() -> BoxedStrategy<Vec<Op>> {
    let set = || list(string()).prop_map(Op::SetS);
    let subset = || list(string()).prop_map(Op::SubsetS);
    let like = || pattern().prop_map(Op::Like);
    let ilike = || pattern().prop_map(Op::Ilike);
    prop_oneof![
        2 => set().prop_map(|a| vec![a]),
        2 => subset().prop_map(|a| vec![a]),
        3 => like().prop_map(|a| vec![a]),
        3 => ilike().prop_map(|a| vec![a]),
        1 => (like(), set()).prop_map(|(a, b)| vec![a, b]),
        1 => (ilike(), subset()).prop_map(|(a, b)| vec![a, b]),
    ]
    .boxed()
}

fn query(ids: Vec<u64>, numbers: Vec<u64>) -> impl Strategy<Value = Query> {
    let meta: Vec<BoxedStrategy<Option<Vec<Op>>>> = FIELDS
        .iter()
        .map(|(_, k)| {
            let ops = match k {
                Kind::Uns | Kind::SetUns => num_ops(numbers.clone()),
                Kind::Str | Kind::SetStr => str_ops(),
            };
            prop::option::weighted(0.1, ops).boxed()
        })
        .collect();
    let score_range = (select(SCORES), select(SCORES)).prop_map(|(a, b)| (a.min(b), a.max(b)));
    (
        prop::option::weighted(0.3, num_ops(ids)),
        meta,
        prop::option::weighted(0.6, (prop::array::uniform4(-3i8..=3), score_range, any::<bool>())),
        0u8..7,
        prop_oneof![1 => Just(None), 2 => (0u64..70).prop_map(Some)],
        any::<bool>(),
    )
        .prop_map(|(id_ops, meta_ops, facen, sort, limit, other_path)| Query {
            id_ops,
            meta_ops,
            facen,
            sort,
            limit,
            other_path,
        })
}

fn case() -> impl Strategy<Value = (Vec<GFace>, Vec<Query>)> {
    gallery().prop_flat_map(|faces| {
        let mut ids: Vec<u64> = faces.iter().map(|f| f.id).collect();
        ids.extend([0, 1, u64::MAX, 1 << 63]);
        let mut numbers: Vec<u64> = vec![0, 1, 5, 777, u64::MAX];
        for f in &faces {
            for v in f.meta.iter().flatten() {
                match v {
                    Val::Uns(n) => numbers.push(*n),
                    Val::SetUns(ns) => numbers.extend(ns),
                    _ => {}
                }
            }
        }
        (Just(faces), prop::collection::vec(query(ids, numbers), 1..10))
    })
}

// ---------------------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------------------

/// The stored value of field `i`: what was sent, or the default; sets sorted, de-duplicated.
fn effective(f: &GFace, i: usize) -> Val {
    match (&f.meta[i], FIELDS[i].1) {
        (Some(Val::SetStr(v)), _) => Val::SetStr(v.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect()),
        (Some(Val::SetUns(v)), _) => Val::SetUns(v.iter().copied().collect::<BTreeSet<_>>().into_iter().collect()),
        (Some(v), _) => v.clone(),
        (None, Kind::Str) => Val::Str(String::new()),
        (None, Kind::Uns) => Val::Uns(0),
        (None, Kind::SetStr) => Val::SetStr(vec![]),
        (None, Kind::SetUns) => Val::SetUns(vec![]),
    }
}

fn expected_face(f: &GFace) -> Value {
    let mut over = Map::new();
    for (i, (name, _)) in FIELDS.iter().enumerate() {
        over.insert(name.to_string(), effective(f, i).to_json());
    }
    json!({"id": f.id, "facen": facen(&f.floats()), "meta": full_meta(Value::Object(over))})
}

/// `like` on one string: `aa%` prefix, `%aa` suffix, `%aa%` contains, else exact.
fn like(pattern: &str, s: &str) -> bool {
    let lead = pattern.starts_with('%');
    let trail = pattern.len() > 1 && pattern.ends_with('%');
    let core = &pattern[usize::from(lead)..pattern.len() - usize::from(trail)];
    match (lead, trail) {
        (true, true) => s.contains(core),
        (false, true) => s.starts_with(core),
        (true, false) => s.ends_with(core),
        (false, false) => s == core,
    }
}

fn ilike(pattern: &str, s: &str) -> bool {
    like(&pattern.to_lowercase(), &s.to_lowercase())
}

/// One operator on one stored value.
fn op_matches(op: &Op, v: &Val) -> bool {
    match (op, v) {
        (Op::Range(lo, hi), Val::Uns(x)) => lo <= x && x <= hi,
        (Op::Range(lo, hi), Val::SetUns(xs)) => xs.iter().any(|x| lo <= x && x <= hi),
        (Op::SetU(set), Val::Uns(x)) => set.contains(x),
        (Op::SetU(set), Val::SetUns(xs)) => xs.iter().any(|x| set.contains(x)),
        (Op::SubsetU(sub), Val::Uns(x)) => sub.iter().all(|y| y == x),
        (Op::SubsetU(sub), Val::SetUns(xs)) => sub.iter().all(|y| xs.contains(y)),
        (Op::SetS(set), Val::Str(x)) => set.contains(x),
        (Op::SetS(set), Val::SetStr(xs)) => xs.iter().any(|x| set.contains(x)),
        (Op::SubsetS(sub), Val::Str(x)) => sub.iter().all(|y| y == x),
        (Op::SubsetS(sub), Val::SetStr(xs)) => sub.iter().all(|y| xs.contains(y)),
        (Op::Like(p), Val::Str(x)) => like(p, x),
        (Op::Like(p), Val::SetStr(xs)) => xs.iter().any(|x| like(p, x)),
        (Op::Ilike(p), Val::Str(x)) => ilike(p, x),
        (Op::Ilike(p), Val::SetStr(xs)) => xs.iter().any(|x| ilike(p, x)),
        (op, v) => panic!("generator bug: {op:?} on {v:?}"),
    }
}

/// Cosine in f64, and whether it is exactly 0 (orthogonal integer vectors or a zero vector).
fn score(a: &[i8; DIM], b: &[i8; DIM]) -> (f64, bool) {
    let dot: i64 = a.iter().zip(b).map(|(&x, &y)| x as i64 * y as i64).sum();
    let na: i64 = a.iter().map(|&x| x as i64 * x as i64).sum();
    let nb: i64 = b.iter().map(|&x| x as i64 * x as i64).sum();
    if dot == 0 || na == 0 || nb == 0 {
        return (0.0, true);
    }
    let c = dot as f64 / ((na as f64).sqrt() * (nb as f64).sqrt());
    (c.clamp(-1.0, 1.0), false)
}

const EPS: f64 = 1e-5;

/// Whether a score is inside [lo, hi]: `Some(false)` surely, `Some(true)` only within EPS of a
/// bound (either answer is right), `None` surely outside.
fn in_range(s: f64, exact: bool, lo: f64, hi: f64) -> Option<bool> {
    let mut border = false;
    if lo > -1.0 {
        if exact {
            if s < lo {
                return None;
            }
        } else if s < lo - EPS {
            return None;
        } else if s < lo + EPS {
            border = true;
        }
    }
    if hi < 1.0 {
        if exact {
            if s > hi {
                return None;
            }
        } else if s > hi + EPS {
            return None;
        } else if s > hi - EPS {
            border = true;
        }
    }
    Some(border)
}

#[derive(Debug)]
struct Cand<'a> {
    face: &'a GFace,
    score: Option<f64>,
    border: bool,
}

fn candidates<'a>(faces: &'a [GFace], q: &Query) -> Vec<Cand<'a>> {
    let mut out = Vec::new();
    'faces: for f in faces {
        if let Some(ops) = &q.id_ops {
            for op in ops {
                if !op_matches(op, &Val::Uns(f.id)) {
                    continue 'faces;
                }
            }
        }
        for (i, ops) in q.meta_ops.iter().enumerate() {
            if let Some(ops) = ops {
                let v = effective(f, i);
                for op in ops {
                    if !op_matches(op, &v) {
                        continue 'faces;
                    }
                }
            }
        }
        let (score, border) = match &q.facen {
            None => (None, false),
            Some((qv, (lo, hi), with_score)) => {
                let (s, exact) = score(&f.vec, qv);
                let (lo, hi) = if *with_score { (*lo, *hi) } else { (-1.0, 1.0) };
                match in_range(s, exact, lo, hi) {
                    None => continue 'faces,
                    Some(border) => (Some(s), border),
                }
            }
        };
        out.push(Cand { face: f, score, border });
    }
    out
}

/// Checks one search answer against the oracle.
fn check(faces: &[GFace], q: &Query, status: u16, body: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(status, 200, "body {}", body);
    let v: Value = serde_json::from_str(body).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let results = v["results"].as_array().cloned().unwrap_or_default();
    prop_assert!(v["results"].is_array(), "{}", body);

    let cands = candidates(faces, q);
    let limit = q.limit.unwrap_or(1000) as usize;
    // A full page carries the cursor of the next one; a page that is not full has none.
    let full = limit > 0 && results.len() == limit;
    let keys = if full { 2 } else { 1 };
    prop_assert_eq!(v.as_object().map(|o| o.len()), Some(keys), "{}", body);
    prop_assert_eq!(v["next_page"].is_string(), full, "{}", body);
    let sort = q.sort_kind();
    let with_score = q.facen.is_some();

    // every result is an allowed face, once, with the right content and score
    let mut seen = BTreeSet::new();
    let mut got: Vec<(&Cand, Option<f64>)> = Vec::new();
    for r in &results {
        let id = r["id"].as_u64();
        prop_assert!(id.is_some(), "result without a u64 id: {}", r);
        let id = id.unwrap_or_default();
        prop_assert!(seen.insert(id), "id {} twice", id);
        let c = cands.iter().find(|c| c.face.id == id);
        prop_assert!(c.is_some(), "face {} should not match; result {}", id, r);
        let c = c.expect("checked");
        let mut r = r.clone();
        let server_score = r.as_object_mut().and_then(|o| o.remove("score"));
        prop_assert_eq!(&r, &expected_face(c.face));
        prop_assert_eq!(server_score.is_some(), with_score, "score present iff facen filter");
        let s = server_score.as_ref().and_then(|s| s.as_f64());
        if let (Some(s), Some(want)) = (s, c.score) {
            prop_assert!(
                (s - want).abs() <= 1e-4 && (-1.0..=1.0).contains(&s),
                "face {}: score {} vs oracle {}",
                id,
                s,
                want
            );
        }
        got.push((c, s));
    }

    // count
    let n_sure = cands.iter().filter(|c| !c.border).count();
    prop_assert!(
        got.len() <= limit.min(cands.len()) && got.len() >= limit.min(n_sure),
        "{} results; limit {}, {} sure and {} borderline matches",
        got.len(),
        limit,
        n_sure,
        cands.len() - n_sure
    );

    // order
    for w in got.windows(2) {
        let ((a, sa), (b, sb)) = (&w[0], &w[1]);
        let (ia, ib) = (a.face.id, b.face.id);
        match sort {
            Sort::Id => prop_assert!(ia < ib, "id order: {} before {}", ia, ib),
            Sort::IdDesc => prop_assert!(ia > ib, "-id order: {} before {}", ia, ib),
            Sort::Score => {
                let (sa, sb) = (sa.unwrap_or_default(), sb.unwrap_or_default());
                prop_assert!(sa > sb || (sa == sb && ia < ib), "-score order: {} ({}) before {} ({})", ia, sa, ib, sb);
                let (oa, ob) = (a.score.unwrap_or_default(), b.score.unwrap_or_default());
                prop_assert!(oa >= ob - EPS, "oracle order: {} ({}) before {} ({})", ia, oa, ib, ob);
            }
        }
    }

    // completeness: a sure match left out must come after the last result of a full page
    for c in cands.iter().filter(|c| !c.border) {
        if seen.contains(&c.face.id) {
            continue;
        }
        prop_assert!(got.len() == limit, "face {} missing from a page of {} (limit {})", c.face.id, got.len(), limit);
        if let Some((last, _)) = got.last() {
            match sort {
                Sort::Id => prop_assert!(c.face.id > last.face.id, "face {} skipped", c.face.id),
                Sort::IdDesc => {
                    prop_assert!(c.face.id < last.face.id, "face {} skipped", c.face.id)
                }
                Sort::Score => {
                    let (oc, ol) = (c.score.unwrap_or_default(), last.score.unwrap_or_default());
                    prop_assert!(
                        oc <= ol + EPS,
                        "face {} (score {}) skipped; last {} has {}",
                        c.face.id,
                        oc,
                        last.face.id,
                        ol
                    );
                }
            }
        }
    }
    Ok(())
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48);
    ProptestConfig { cases, failure_persistence: None, max_shrink_iters: 300, ..ProptestConfig::default() }
}

fn run_case(faces: &[GFace], queries: &[Query]) -> Result<(), TestCaseError> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let s = server();
    let g = format!("prop_{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    s.create_gallery(&g);
    let batch: Vec<Value> = faces.iter().map(GFace::to_json).collect();
    let r = s.add_faces(&g, &json!(batch));
    prop_assert_eq!((r.status, r.body.as_str()), (200, ""), "add");
    prop_assert_eq!(s.count(&g), faces.len() as u64);
    for q in queries {
        let body = q.to_json();
        let path = if q.other_path { format!("/v2/{g}/search") } else { format!("/v2/faces/search/{g}") };
        let r = s.post(&path, &body.to_string());
        check(faces, q, r.status, &r.body).map_err(|e| TestCaseError::fail(format!("{e}\nsearch body: {body}")))?;
    }
    let r = s.post_empty(&format!("/v2/galleries/delete/{g}"));
    prop_assert_eq!(r.status, 204);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn search_agrees_with_a_naive_oracle((faces, queries) in case()) {
        run_case(&faces, &queries)?;
    }
}

#[test]
fn oracle_like_semantics() {
    // the oracle's own reading of spec.md, pinned down
    assert!(like("ab%", "abc") && !like("ab%", "cab"));
    assert!(like("%ab", "cab") && !like("%ab", "abc"));
    assert!(like("%b%", "abc") && !like("%d%", "abc"));
    assert!(like("abc", "abc") && !like("ab", "abc"));
    assert!(like("", "") && !like("", "a"));
    assert!(ilike("ÉCOLE", "école") && !ilike("ÉCOLE", "ecole"));
    assert!(ilike("STRAẞE", "Straße") && !ilike("STRASSE", "straße"));
    assert_eq!(score(&[1, 0, 0, 0], &[0, 1, 0, 0]), (0.0, true));
    assert_eq!(score(&[0, 0, 0, 0], &[0, 1, 0, 0]), (0.0, true));
    assert_eq!(score(&[2, 0, 0, 0], &[3, 0, 0, 0]), (1.0, false));
    assert_eq!(in_range(0.5, false, 0.5, 1.0), Some(true));
    assert_eq!(in_range(0.6, false, 0.5, 1.0), Some(false));
    assert_eq!(in_range(0.4, false, 0.5, 1.0), None);
    assert_eq!(in_range(1.0, false, 0.99, 1.0), Some(false));
    assert_eq!(in_range(0.0, true, 0.0, 0.25), Some(false));
}
