//! The metadata schema: which fields a face carries, their types and defaults.
//!
//! A schema is a YAML list of fields with the four keys of the original product's
//! `tnt_schema.lua`: `id`, `name`, `field_type`, `default`. The types are `string`,
//! `unsigned` (u64), `set[string]` and `set[unsigned]`. Unsigned defaults may be written as
//! strings of digits (the original writes values above 1e14 that way) and empty set defaults
//! as `{}` (a Lua empty table) or `[]`.
//!
//! Loading validates everything up front and names the field and the problem, so that a bad
//! file stops the server at start rather than surprising a client later. The same module
//! turns client JSON into typed [`MetaValue`]s and back.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

/// The schema the server uses when none is given: the original product's 43 default fields.
pub const DEFAULT_SCHEMA_YAML: &str = include_str!("../schema/findface-default.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Unsigned,
    StringSet,
    UnsignedSet,
}

impl FieldType {
    pub fn parse(s: &str) -> Option<FieldType> {
        match s {
            "string" => Some(FieldType::String),
            "unsigned" => Some(FieldType::Unsigned),
            "set[string]" => Some(FieldType::StringSet),
            "set[unsigned]" => Some(FieldType::UnsignedSet),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Unsigned => "unsigned",
            FieldType::StringSet => "set[string]",
            FieldType::UnsignedSet => "set[unsigned]",
        }
    }
}

/// A typed metadata value. Sets are sorted and free of duplicates.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MetaValue {
    String(String),
    Unsigned(u64),
    StringSet(Vec<String>),
    UnsignedSet(Vec<u64>),
}

impl MetaValue {
    pub fn to_json(&self) -> Json {
        match self {
            MetaValue::String(s) => Json::from(s.as_str()),
            MetaValue::Unsigned(n) => Json::from(*n),
            MetaValue::StringSet(v) => Json::from(v.clone()),
            MetaValue::UnsignedSet(v) => Json::from(v.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub id: u32,
    pub name: String,
    pub field_type: FieldType,
    pub default: MetaValue,
}

impl Field {
    /// Reads a client's JSON value for this field. The error says what was expected; the
    /// caller adds which face and field.
    pub fn value_from_json(&self, value: &Json) -> Result<MetaValue, String> {
        let expected = || format!("expected {}, got {value}", self.describe_type());
        match self.field_type {
            FieldType::String => value.as_str().map(|s| MetaValue::String(s.to_owned())).ok_or_else(expected),
            FieldType::Unsigned => value.as_u64().map(MetaValue::Unsigned).ok_or_else(expected),
            FieldType::StringSet => {
                let items = value.as_array().ok_or_else(expected)?;
                let mut set = items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned).ok_or_else(expected))
                    .collect::<Result<Vec<_>, _>>()?;
                set.sort_unstable();
                set.dedup();
                Ok(MetaValue::StringSet(set))
            }
            FieldType::UnsignedSet => {
                let items = value.as_array().ok_or_else(expected)?;
                let mut set =
                    items.iter().map(|item| item.as_u64().ok_or_else(expected)).collect::<Result<Vec<_>, _>>()?;
                set.sort_unstable();
                set.dedup();
                Ok(MetaValue::UnsignedSet(set))
            }
        }
    }

    fn describe_type(&self) -> &'static str {
        match self.field_type {
            FieldType::String => "a string",
            FieldType::Unsigned => "an integer from 0 to 18446744073709551615",
            FieldType::StringSet => "an array of strings",
            FieldType::UnsignedSet => "an array of integers from 0 to 18446744073709551615",
        }
    }
}

/// The fields of every face, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    fields: Vec<Field>,
    by_name: HashMap<String, usize>,
}

impl Schema {
    /// The original product's default schema (embedded in the binary).
    pub fn findface_default() -> Schema {
        // The embedded file is part of the build and covered by a unit test.
        Schema::from_yaml(DEFAULT_SCHEMA_YAML, "schema/findface-default.yaml")
            .unwrap_or_else(|e| panic!("the embedded default schema is invalid: {e}"))
    }

    pub fn load(path: &Path) -> Result<Schema, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read schema file {}: {e}", path.display()))?;
        Schema::from_yaml(&text, &path.display().to_string())
    }

    /// Parses and validates a schema; `source` names the file in error messages.
    pub fn from_yaml(text: &str, source: &str) -> Result<Schema, String> {
        let doc: Yaml = serde_yaml_ng::from_str(text).map_err(|e| format!("{source}: not valid YAML: {e}"))?;
        let entries =
            doc.as_sequence().ok_or_else(|| format!("{source}: expected a list of fields at the top level"))?;
        let mut fields = Vec::with_capacity(entries.len());
        let mut by_name = HashMap::new();
        let mut ids = HashMap::new();
        for (position, entry) in entries.iter().enumerate() {
            let field = parse_field(entry).map_err(|e| format!("{source}: field #{} {e}", position + 1))?;
            if let Some(other) = ids.insert(field.id, field.name.clone()) {
                return Err(format!(
                    "{source}: field {:?}: id {} is already used by field {other:?}",
                    field.name, field.id
                ));
            }
            if by_name.insert(field.name.clone(), fields.len()).is_some() {
                return Err(format!("{source}: field {:?}: the name appears twice", field.name));
            }
            fields.push(field);
        }
        Ok(Schema { fields, by_name })
    }

    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The position of a field (its column) by name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The schema as YAML that [`from_yaml`](Self::from_yaml) reads back to an equal schema:
    /// how a data directory records it.
    pub fn to_yaml(&self) -> String {
        let mut text = String::new();
        for field in &self.fields {
            let default = match &field.default {
                MetaValue::String(s) => Json::from(s.as_str()),
                // As a string: YAML readers lose precision on integers above 2^53.
                MetaValue::Unsigned(n) => Json::from(n.to_string()),
                MetaValue::StringSet(v) => Json::from(v.clone()),
                MetaValue::UnsignedSet(v) => Json::from(v.iter().map(u64::to_string).collect::<Vec<_>>()),
            };
            // JSON is YAML; the name and the default are quoted whatever they contain.
            text.push_str(&format!(
                "- {{id: {}, name: {}, field_type: '{}', default: {}}}\n",
                field.id,
                Json::from(field.name.as_str()),
                field.field_type.name(),
                default
            ));
        }
        text
    }

    /// How `new` differs from `self`: `Ok(added field names)` when it only adds fields (which
    /// may sit anywhere in the list), else `Err` with one line per difference.
    pub fn additions_in(&self, new: &Schema) -> Result<Vec<String>, String> {
        let mut problems = Vec::new();
        for old in &self.fields {
            match new.position(&old.name).map(|at| &new.fields[at]) {
                None => problems.push(format!("- {}: removed", describe(old))),
                Some(now) if now != old => problems.push(format!("- {}\n+ {}: changed", describe(old), describe(now))),
                Some(_) => {}
            }
        }
        let added: Vec<&Field> = new.fields.iter().filter(|f| self.position(&f.name).is_none()).collect();
        for field in &added {
            if let Some(old) = self.fields.iter().find(|old| old.id == field.id) {
                problems.push(format!("+ {}: id {} was field {:?}", describe(field), field.id, old.name));
            }
        }
        if problems.is_empty() {
            Ok(added.iter().map(|f| f.name.clone()).collect())
        } else {
            Err(problems.join("\n"))
        }
    }
}

fn describe(field: &Field) -> String {
    format!(
        "field {:?} (id {}, {}, default {})",
        field.name,
        field.id,
        field.field_type.name(),
        field.default.to_json()
    )
}

fn parse_field(entry: &Yaml) -> Result<Field, String> {
    let map = entry.as_mapping().ok_or("is not a mapping with id, name, field_type, default")?;
    let name = match map.get("name") {
        Some(Yaml::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            let shown = serde_json::to_string(other).unwrap_or_else(|_| format!("{other:?}"));
            return Err(format!("has a bad name {shown}: expected a non-empty string"));
        }
        None => return Err("has no name".to_owned()),
    };
    let with_name = |msg: String| format!("({name:?}) {msg}");
    for key in map.keys() {
        match key.as_str() {
            Some("id" | "name" | "field_type" | "default") => {}
            _ => {
                return Err(with_name(format!(
                    "has an unknown key {key:?}; the keys are id, name, field_type, default"
                )))
            }
        }
    }
    let id = match map.get("id") {
        Some(Yaml::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
    .ok_or_else(|| with_name(format!("has a bad id {:?}: expected an integer from 0 to 4294967295", map.get("id"))))?;
    let type_name =
        map.get("field_type").and_then(Yaml::as_str).ok_or_else(|| with_name("has no field_type string".to_owned()))?;
    let field_type = FieldType::parse(type_name).ok_or_else(|| {
        with_name(format!(
            "has an unknown field_type {type_name:?}; expected one of string, unsigned, set[string], set[unsigned]"
        ))
    })?;
    let default = match map.get("default") {
        None | Some(Yaml::Null) => empty_value(field_type),
        Some(value) => parse_default(field_type, value).ok_or_else(|| {
            let shown = serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"));
            with_name(format!("has a default {shown} that is not a valid {}", field_type.name()))
        })?,
    };
    Ok(Field { id, name, field_type, default })
}

fn empty_value(field_type: FieldType) -> MetaValue {
    match field_type {
        FieldType::String => MetaValue::String(String::new()),
        FieldType::Unsigned => MetaValue::Unsigned(0),
        FieldType::StringSet => MetaValue::StringSet(Vec::new()),
        FieldType::UnsignedSet => MetaValue::UnsignedSet(Vec::new()),
    }
}

fn parse_default(field_type: FieldType, value: &Yaml) -> Option<MetaValue> {
    let unsigned = |v: &Yaml| match v {
        Yaml::Number(n) => n.as_u64(),
        Yaml::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    };
    let items = |v: &Yaml| -> Option<Vec<Yaml>> {
        match v {
            Yaml::Sequence(seq) => Some(seq.clone()),
            Yaml::Mapping(m) if m.is_empty() => Some(Vec::new()),
            _ => None,
        }
    };
    match field_type {
        FieldType::String => value.as_str().map(|s| MetaValue::String(s.to_owned())),
        FieldType::Unsigned => unsigned(value).map(MetaValue::Unsigned),
        FieldType::StringSet => {
            let mut set = items(value)?.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()?;
            set.sort_unstable();
            set.dedup();
            Some(MetaValue::StringSet(set))
        }
        FieldType::UnsignedSet => {
            let mut set = items(value)?.iter().map(unsigned).collect::<Option<Vec<_>>>()?;
            set.sort_unstable();
            set.dedup();
            Some(MetaValue::UnsignedSet(set))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_has_the_43_fields_of_the_original() {
        let schema = Schema::findface_default();
        assert_eq!(schema.fields().len(), 43);
        let confidence = &schema.fields()[schema.position("m:confidence").unwrap()];
        assert_eq!(confidence.id, 9);
        assert_eq!(confidence.default, MetaValue::Unsigned(10_000_000_000_000_000_000));
        let lists = &schema.fields()[schema.position("m:matched_lists").unwrap()];
        assert_eq!(lists.field_type, FieldType::UnsignedSet);
        assert_eq!(lists.default, MetaValue::UnsignedSet(vec![]));
    }

    #[test]
    fn errors_name_the_field_and_the_problem() {
        let dup = "- {id: 1, name: a, field_type: string, default: ''}\n- {id: 2, name: a, field_type: unsigned, default: 0}\n";
        assert_eq!(Schema::from_yaml(dup, "s.yaml").unwrap_err(), "s.yaml: field \"a\": the name appears twice");
        let bad_type = "- {id: 1, name: age, field_type: int32, default: 0}\n";
        let err = Schema::from_yaml(bad_type, "s.yaml").unwrap_err();
        assert!(err.contains("\"age\"") && err.contains("unknown field_type \"int32\""), "{err}");
        let bad_default = "- {id: 1, name: age, field_type: unsigned, default: '-3'}\n";
        let err = Schema::from_yaml(bad_default, "s.yaml").unwrap_err();
        assert!(err.contains("\"age\"") && err.contains("has a default \"-3\" that is not a valid unsigned"), "{err}");
        let dup_id = "- {id: 1, name: a, field_type: string}\n- {id: 1, name: b, field_type: string}\n";
        assert!(Schema::from_yaml(dup_id, "s.yaml").unwrap_err().contains("id 1 is already used by field \"a\""));
    }

    #[test]
    fn a_schema_round_trips_through_its_yaml() {
        let schema = Schema::findface_default();
        assert_eq!(Schema::from_yaml(&schema.to_yaml(), "again").unwrap(), schema);
        let odd = "- {id: 4, name: \"it's: {odd}\", field_type: 'set[unsigned]', default: [18446744073709551615, 1]}\n";
        let odd = Schema::from_yaml(odd, "odd").unwrap();
        assert_eq!(Schema::from_yaml(&odd.to_yaml(), "again").unwrap(), odd);
    }

    #[test]
    fn only_added_fields_are_an_allowed_change() {
        let old = Schema::from_yaml(
            "- {id: 1, name: a, field_type: string}\n- {id: 2, name: b, field_type: unsigned}\n",
            "old",
        )
        .unwrap();
        let added = "- {id: 1, name: a, field_type: string}\n- {id: 3, name: c, field_type: string, default: x}\n- {id: 2, name: b, field_type: unsigned}\n";
        assert_eq!(old.additions_in(&Schema::from_yaml(added, "new").unwrap()), Ok(vec!["c".to_owned()]));
        assert_eq!(old.additions_in(&old), Ok(vec![]));
        let changed = "- {id: 1, name: a, field_type: unsigned}\n- {id: 5, name: d, field_type: string}\n";
        let diff = old.additions_in(&Schema::from_yaml(changed, "new").unwrap()).unwrap_err();
        assert!(
            diff.contains(
                "field \"a\" (id 1, string, default \"\")\n+ field \"a\" (id 1, unsigned, default 0): changed"
            ),
            "{diff}"
        );
        assert!(diff.contains("- field \"b\" (id 2, unsigned, default 0): removed"), "{diff}");
    }

    #[test]
    fn json_values_are_typed_and_sets_normalised() {
        let schema = Schema::from_yaml("- {id: 1, name: tags, field_type: 'set[string]', default: {}}\n", "s").unwrap();
        let field = &schema.fields()[0];
        let v = field.value_from_json(&serde_json::json!(["b", "a", "b"])).unwrap();
        assert_eq!(v, MetaValue::StringSet(vec!["a".into(), "b".into()]));
        assert!(field.value_from_json(&serde_json::json!([1])).is_err());
    }
}
