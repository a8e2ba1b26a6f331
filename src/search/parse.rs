//! Reading a search request body into a [`Query`], checked against the schema.
//!
//! Every rejection is a 400 that names the parameter (`filter.meta.cam_id.like`, `sort`, ...)
//! and the value that was wrong. Operators are normalised here so that running a query needs
//! no special cases: a scalar `subset` becomes `set` of its one value, nothing, or no
//! condition at all; an empty `set` becomes `Nothing`.

use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::facen;
use crate::schema::{FieldType, Schema};
use crate::search::{Condition, Cursor, FacenFilter, Op, Pattern, PatternKind, Query, Sort, Target, Values};

/// The limit when a request gives none (as the original's client library).
pub const DEFAULT_LIMIT: usize = 1000;

/// Reads a search body. `dim` is the facen size; `max_limit` the largest `limit` accepted.
pub fn parse_query(body: &Json, schema: &Schema, dim: usize, max_limit: usize) -> Result<Query> {
    let body = match body {
        Json::Null => &Map::new(),
        Json::Object(map) => map,
        other => return Err(Error::malformed(format!("a search request is a JSON object, got {}", kind_of(other)))),
    };
    reject_unknown_keys(body, &["limit", "sort", "filter", "exact", "page", "ignore_errors"], "")?;
    if let Some(value) = body.get("ignore_errors").filter(|v| !v.is_null() && !v.is_boolean()) {
        return Err(Error::bad_param("ignore_errors", "ignore_errors must be true or false").with_value(value.clone()));
    }
    let exact = match body.get("exact") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(exact)) => *exact,
        Some(other) => {
            return Err(Error::bad_param("exact", "exact must be true or false").with_value(other.clone()));
        }
    };
    let limit = match body.get("limit") {
        None | Some(Json::Null) => DEFAULT_LIMIT.min(max_limit),
        Some(value) => match value.as_u64() {
            Some(n) if n <= max_limit as u64 => n as usize,
            _ => {
                return Err(Error::bad_param("limit", format!("limit must be an integer from 0 to {max_limit}"))
                    .with_value(value.clone()))
            }
        },
    };
    let mut facen = None;
    let mut conditions = Vec::new();
    match body.get("filter") {
        None | Some(Json::Null) => {}
        Some(Json::Object(filter)) => {
            reject_unknown_keys(filter, &["facen", "id", "meta"], "filter.")?;
            facen = parse_facen_filter(filter.get("facen"), dim)?;
            if let Some(ops) = object_or_null(filter.get("id"), "filter.id")? {
                for (op, arg) in ops {
                    let param = format!("filter.id.{op}");
                    push_condition(&mut conditions, Target::Id, FieldType::Unsigned, "id", op, arg, &param)?;
                }
            }
            if let Some(fields) = object_or_null(filter.get("meta"), "filter.meta")? {
                for (name, ops) in fields {
                    let param = format!("filter.meta.{name}");
                    let position = schema.position(name).ok_or_else(|| {
                        Error::bad_param(&param, format!("unknown meta field {name:?}")).with_value(name.as_str())
                    })?;
                    let field_type = schema.fields()[position].field_type;
                    let ops = object_or_null(Some(ops), &param)?.into_iter().flatten();
                    for (op, arg) in ops {
                        let param = format!("{param}.{op}");
                        push_condition(&mut conditions, Target::Field(position), field_type, name, op, arg, &param)?;
                    }
                }
            }
        }
        Some(other) => return Err(Error::bad_param("filter", "filter must be an object").with_value(other.clone())),
    }
    let sort = parse_sort(body.get("sort"), facen.is_some())?;
    let after = parse_page(body.get("page"), sort)?;
    Ok(Query { limit, sort, facen, conditions, exact, after })
}

/// `page`: the `next_page` of an earlier answer to the same search (its sort decides the kind).
fn parse_page(value: Option<&Json>, sort: Sort) -> Result<Option<Cursor>> {
    let text = match value {
        None | Some(Json::Null) => return Ok(None),
        Some(Json::String(text)) if text.is_empty() => return Ok(None),
        Some(Json::String(text)) => text,
        Some(other) => {
            return Err(Error::bad_param("page", "page must be the next_page string of an earlier answer")
                .with_value(other.clone()))
        }
    };
    let cursor = Cursor::decode(text).ok_or_else(|| {
        Error::bad_param("page", "page is not a next_page this API gave out").with_value(text.as_str())
    })?;
    if !cursor.fits(sort) {
        return Err(Error::bad_param(
            "page",
            "page is a position in another order than this search's sort (give the same sort as the first page)",
        )
        .with_value(text.as_str()));
    }
    Ok(Some(cursor))
}

fn kind_of(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn reject_unknown_keys(map: &Map<String, Json>, known: &[&str], prefix: &str) -> Result<()> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(Error::bad_param(
            format!("{prefix}{key}"),
            format!("unknown parameter {prefix}{key}; expected one of: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn object_or_null<'a>(value: Option<&'a Json>, param: &str) -> Result<Option<&'a Map<String, Json>>> {
    match value {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Object(map)) => Ok(Some(map)),
        Some(other) => Err(Error::bad_param(
            param,
            format!("{param} must be an object of operator: argument, got {}", kind_of(other)),
        )
        .with_value(other.clone())),
    }
}

fn parse_facen_filter(value: Option<&Json>, dim: usize) -> Result<Option<FacenFilter>> {
    let filter = match value {
        None | Some(Json::Null) => return Ok(None),
        Some(Json::Object(filter)) => filter,
        Some(other) => {
            return Err(Error::bad_param("filter.facen", "filter.facen must be an object {data, score}")
                .with_value(other.clone()))
        }
    };
    reject_unknown_keys(filter, &["data", "score"], "filter.facen.")?;
    let data = filter.get("data").ok_or_else(|| {
        Error::bad_param("filter.facen.data", "filter.facen.data (a base64 string or an array of numbers) is missing")
    })?;
    let vector = facen::from_json(data, dim).map_err(|e| Error::bad_param("filter.facen.data", e))?;
    let (min_score, max_score) = match filter.get("score") {
        None | Some(Json::Null) => (-1.0, 1.0),
        Some(score) => {
            let bad = || {
                Error::bad_param(
                    "filter.facen.score",
                    "filter.facen.score must be [min, max], two numbers with min <= max",
                )
                .with_value(score.clone())
            };
            let pair = score.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
            let (min, max) = (pair[0].as_f64().ok_or_else(bad)?, pair[1].as_f64().ok_or_else(bad)?);
            if min > max {
                return Err(bad());
            }
            (min.clamp(-1.0, 1.0) as f32, max.clamp(-1.0, 1.0) as f32)
        }
    };
    let inverse_norm = facen::inverse_norm(&vector);
    Ok(Some(FacenFilter { vector, inverse_norm, min_score, max_score }))
}

fn parse_sort(value: Option<&Json>, has_facen: bool) -> Result<Sort> {
    let bad = |value: &Json| {
        Error::bad_param(
            "sort",
            "sort must be \"id\", \"-id\", \"-score\", {\"id\": 1}, {\"id\": -1} or {\"score\": -1}",
        )
        .with_value(value.clone())
    };
    let sort = match value {
        None | Some(Json::Null) => return Ok(if has_facen { Sort::ScoreDescending } else { Sort::IdAscending }),
        Some(Json::String(s)) => match s.as_str() {
            "id" => Sort::IdAscending,
            "-id" => Sort::IdDescending,
            "-score" => Sort::ScoreDescending,
            _ => return Err(bad(&Json::from(s.as_str()))),
        },
        Some(Json::Object(map)) if map.len() == 1 => {
            let (key, direction) = map.iter().next().ok_or_else(|| bad(&Json::Object(map.clone())))?;
            match (key.as_str(), direction.as_i64()) {
                ("id", Some(1)) => Sort::IdAscending,
                ("id", Some(-1)) => Sort::IdDescending,
                ("score", Some(-1)) => Sort::ScoreDescending,
                _ => return Err(bad(&Json::Object(map.clone()))),
            }
        }
        Some(other) => return Err(bad(other)),
    };
    if sort == Sort::ScoreDescending && !has_facen {
        return Err(
            Error::bad_param("sort", "sort by score needs a filter.facen to score against").with_value("-score")
        );
    }
    Ok(sort)
}

/// Which operators each type takes, for error messages and checks.
fn operators_for(field_type: FieldType) -> &'static [&'static str] {
    match field_type {
        FieldType::Unsigned | FieldType::UnsignedSet => &["range", "set", "subset"],
        FieldType::String | FieldType::StringSet => &["set", "subset", "like", "ilike"],
    }
}

fn push_condition(
    conditions: &mut Vec<Condition>,
    target: Target,
    field_type: FieldType,
    name: &str,
    op: &str,
    arg: &Json,
    param: &str,
) -> Result<()> {
    let valid = operators_for(field_type);
    if !valid.contains(&op) {
        let known = ["range", "set", "subset", "like", "ilike"].contains(&op);
        let message = if known {
            format!("operator {op} does not apply to {name} ({}); it takes {}", field_type.name(), valid.join(", "))
        } else {
            format!("unknown operator {op:?}; {name} ({}) takes {}", field_type.name(), valid.join(", "))
        };
        return Err(Error::bad_param(param, message).with_value(arg.clone()));
    }
    let is_set = matches!(field_type, FieldType::StringSet | FieldType::UnsignedSet);
    let strings = matches!(field_type, FieldType::String | FieldType::StringSet);
    let bad = |what: &str| Error::bad_param(param, format!("{param} takes {what}")).with_value(arg.clone());
    let op = match op {
        "range" => {
            let pair = arg.as_array().filter(|a| a.len() == 2);
            let bounds = pair.and_then(|p| Some((p[0].as_u64()?, p[1].as_u64()?)));
            match bounds {
                Some((min, max)) if min <= max => Op::Range { min, max },
                _ => return Err(bad("[min, max]: two integers from 0 to 18446744073709551615 with min <= max")),
            }
        }
        "set" | "subset" => {
            let items = arg
                .as_array()
                .ok_or_else(|| bad(if strings { "an array of strings" } else { "an array of integers" }))?;
            let values = if strings {
                let mut v = items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("an array of strings"))?;
                v.sort_unstable();
                v.dedup();
                Values::Strings(v)
            } else {
                let mut v = items
                    .iter()
                    .map(Json::as_u64)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("an array of integers from 0 to 18446744073709551615"))?;
                v.sort_unstable();
                v.dedup();
                Values::Unsigned(v)
            };
            let count = match &values {
                Values::Strings(v) => v.len(),
                Values::Unsigned(v) => v.len(),
            };
            match (op, is_set, count) {
                ("set", _, 0) => Op::Nothing,
                ("set", _, _) => Op::AnyOf(values),
                // subset of nothing: every face passes.
                (_, _, 0) => return Ok(()),
                (_, true, _) => Op::AllOf(values),
                // A scalar holds all given values only if there is one: it equals it.
                (_, false, 1) => Op::AnyOf(values),
                (_, false, _) => Op::Nothing,
            }
        }
        _ => {
            let text = arg.as_str().ok_or_else(|| bad("a pattern string: 'aa%', '%aa', '%aa%' or 'aa'"))?;
            let ignore_case = op == "ilike";
            Op::Like(parse_pattern(text, ignore_case).ok_or_else(|| {
                bad("a pattern string: 'aa%', '%aa', '%aa%' or 'aa'; % may stand only at the start and/or the end")
            })?)
        }
    };
    conditions.push(Condition { target, op });
    Ok(())
}

fn parse_pattern(text: &str, ignore_case: bool) -> Option<Pattern> {
    let (kind, inner) = match (text.strip_prefix('%'), text.strip_suffix('%')) {
        (Some(rest), _) if text.len() >= 2 && rest.ends_with('%') => (PatternKind::Contains, &rest[..rest.len() - 1]),
        (Some(rest), _) => (PatternKind::Suffix, rest),
        (None, Some(rest)) => (PatternKind::Prefix, rest),
        (None, None) => (PatternKind::Exact, text),
    };
    if inner.contains('%') {
        return None;
    }
    let text = if ignore_case { inner.to_lowercase() } else { inner.to_owned() };
    Some(Pattern { kind, text, ignore_case })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::from_yaml(
            "- {id: 1, name: cam, field_type: string}\n- {id: 2, name: age, field_type: unsigned}\n- {id: 3, name: tags, field_type: 'set[string]'}\n",
            "test",
        )
        .unwrap()
    }

    fn parse(body: Json) -> Result<Query> {
        parse_query(&body, &schema(), 2, 10_000)
    }

    #[test]
    fn patterns() {
        assert_eq!(parse_pattern("ab%", false).unwrap().kind, PatternKind::Prefix);
        assert_eq!(parse_pattern("%ab", false).unwrap().kind, PatternKind::Suffix);
        assert_eq!(parse_pattern("%ab%", false).unwrap().text, "ab");
        assert_eq!(
            parse_pattern("%", false).unwrap(),
            Pattern { kind: PatternKind::Suffix, text: String::new(), ignore_case: false }
        );
        assert_eq!(parse_pattern("%%", false).unwrap().kind, PatternKind::Contains);
        assert!(parse_pattern("a%b", false).is_none());
        assert!(parse_pattern("ÉCOLE%", true).unwrap().matches("école primaire"));
    }

    #[test]
    fn defaults_and_normalisation() {
        let q = parse(json!({})).unwrap();
        assert_eq!((q.limit, q.sort, q.conditions.len()), (1000, Sort::IdAscending, 0));
        let q =
            parse(json!({"filter": {"id": {"subset": [5, 5]}, "meta": {"tags": {"subset": []}, "cam": {"set": []}}}}))
                .unwrap();
        assert_eq!(q.conditions.len(), 2);
        assert_eq!(q.conditions[0].op, Op::AnyOf(Values::Unsigned(vec![5])));
        assert_eq!(q.conditions[1].op, Op::Nothing);
    }

    #[test]
    fn pages_are_positions_in_the_searchs_order() {
        let by_score = Cursor::Score(0.5, 7);
        let text = by_score.encode();
        assert_eq!(Cursor::decode(&text), Some(by_score));
        let q = parse(json!({"filter": {"facen": {"data": crate::facen::encode(&[1.0, 0.0])}}, "page": text})).unwrap();
        assert_eq!(q.after, Some(by_score));
        // After (0.5, 7) in score order: lower scores, or 0.5 and a larger id.
        let after = by_score.rank(Sort::ScoreDescending);
        assert!(crate::search::rank(Sort::ScoreDescending, 8, 0.5) > after);
        assert!(crate::search::rank(Sort::ScoreDescending, 6, 0.5) < after);
        assert!(crate::search::rank(Sort::ScoreDescending, 1, 0.25) > after);
        let q = parse(json!({"sort": "-id", "page": Cursor::Id(9).encode()})).unwrap();
        assert_eq!(q.after, Some(Cursor::Id(9)));
        assert!(crate::search::rank(Sort::IdDescending, 8, 0.0) > Cursor::Id(9).rank(Sort::IdDescending));
        // A score position on an id-ordered search, garbage, a number: 400 naming page.
        for page in [json!(text), json!("bm9wZQ"), json!("!!"), json!(5)] {
            let e = parse(json!({"sort": "id", "page": page})).unwrap_err();
            assert_eq!((e.code, e.param.as_deref()), (400, Some("page")), "{page}");
        }
        assert_eq!(parse(json!({"page": ""})).unwrap().after, None);
        assert!(parse(json!({"ignore_errors": true})).is_ok());
        assert_eq!(parse(json!({"ignore_errors": "yes"})).unwrap_err().param.as_deref(), Some("ignore_errors"));
    }

    #[test]
    fn errors_name_param_and_value() {
        let e = parse(json!({"filter": {"meta": {"cam": {"range": [1, 2]}}}})).unwrap_err();
        assert_eq!((e.param.as_deref(), e.value), (Some("filter.meta.cam.range"), Some(json!([1, 2]))));
        let e = parse(json!({"filter": {"meta": {"nope": {"set": [1]}}}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("filter.meta.nope"));
        let e = parse(json!({"sort": "-score"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("sort"));
        let e = parse(json!({"limit": 10001})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("limit"));
        let e = parse(json!({"filter": {"id": {"range": [3, 2]}}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("filter.id.range"));
    }
}
