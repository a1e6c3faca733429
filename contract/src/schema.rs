//! A validator for the subset of OpenAPI 3.0 Schema Objects the providers' descriptions
//! use: `$ref` (inside the same document), `type`, `nullable`, `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `oneOf`/`anyOf`/`allOf`, and the formats
//! `date-time`, `int32`, `int64` and `uuid` (other formats are not checked: they are
//! hints there). Every violation names the JSON pointer of the offending value, so an
//! exception can be stated for exactly one place.
//!
//! Written here rather than taken from a JSON Schema crate because OpenAPI 3.0 schemas
//! are not JSON Schema (`nullable`, `$ref` into `#/components/…`), and the checked
//! subset is small and fixed by the spec files in this crate.

use serde_json::Value;

/// What a value broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Keyword {
    /// A required member is missing (the pointer names the missing member).
    Required,
    /// The value has another JSON type than the schema's (or is null, not `nullable`).
    Type,
    /// The value is not one of the schema's `enum` values.
    Enum,
    /// A member the schema's `additionalProperties: false` does not allow.
    AdditionalProperties,
    /// The value does not have the schema's `format`.
    Format,
    /// `oneOf`/`anyOf`: not exactly one (at least one) alternative matched.
    Alternatives,
    /// A `$ref` that does not resolve in its document (a fault of the spec file).
    Unresolved,
}

impl Keyword {
    /// The keyword as written in a schema.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Type => "type",
            Self::Enum => "enum",
            Self::AdditionalProperties => "additionalProperties",
            Self::Format => "format",
            Self::Alternatives => "oneOf/anyOf",
            Self::Unresolved => "$ref",
        }
    }
}

/// One place where a value does not conform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// JSON pointer of the value (for `required`: of the missing member).
    pub pointer: String,
    /// The rule it broke.
    pub keyword: Keyword,
    /// The JSON type found there (`null`, `object`, …; `missing` for `required`).
    pub found: &'static str,
    /// What was expected, in words (never the value itself: it may be personal data).
    pub expected: String,
}

/// The JSON type name of a value, as JSON Schema spells it.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Resolves a local `$ref` (`#/components/schemas/X`) in `doc`.
pub fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Follows `$ref`s until a schema without one (at most 32 hops, against cycles).
pub fn deref<'a>(doc: &'a Value, mut schema: &'a Value) -> Option<&'a Value> {
    for _ in 0..32 {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => schema = resolve(doc, r)?,
            None => return Some(schema),
        }
    }
    None
}

/// Validates `value` (found at `pointer`) against `schema` of `doc`; appends violations.
pub fn validate(
    doc: &Value,
    schema: &Value,
    value: &Value,
    pointer: &str,
    out: &mut Vec<SchemaError>,
) {
    let Some(schema) = deref(doc, schema) else {
        out.push(SchemaError {
            pointer: pointer.to_owned(),
            keyword: Keyword::Unresolved,
            found: json_type(value),
            expected: format!(
                "a resolvable {}",
                schema.get("$ref").unwrap_or(&Value::Null)
            ),
        });
        return;
    };
    if value.is_null() {
        let nullable = schema.get("nullable").and_then(Value::as_bool) == Some(true);
        if !nullable && schema.get("type").is_some() {
            out.push(SchemaError {
                pointer: pointer.to_owned(),
                keyword: Keyword::Type,
                found: "null",
                expected: type_of(schema).to_owned(),
            });
        }
        return;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate(doc, s, value, pointer, out);
        }
    }
    for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(alts) = schema.get(key).and_then(Value::as_array) {
            let matched = alts
                .iter()
                .filter(|s| {
                    let mut errs = Vec::new();
                    validate(doc, s, value, pointer, &mut errs);
                    errs.is_empty()
                })
                .count();
            if matched == 0 || (exactly_one && matched > 1) {
                out.push(SchemaError {
                    pointer: pointer.to_owned(),
                    keyword: Keyword::Alternatives,
                    found: json_type(value),
                    expected: format!(
                        "{} of {} alternatives of {key}, matched {matched}",
                        if exactly_one { "exactly one" } else { "one" },
                        alts.len()
                    ),
                });
            }
        }
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let found = json_type(value);
        let ok = t == found || (t == "number" && found == "integer");
        if !ok {
            out.push(SchemaError {
                pointer: pointer.to_owned(),
                keyword: Keyword::Type,
                found,
                expected: t.to_owned(),
            });
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        out.push(SchemaError {
            pointer: pointer.to_owned(),
            keyword: Keyword::Enum,
            found: json_type(value),
            expected: format!("one of {}", Value::Array(options.clone())),
        });
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str)
        && !format_ok(format, value)
    {
        out.push(SchemaError {
            pointer: pointer.to_owned(),
            keyword: Keyword::Format,
            found: json_type(value),
            expected: format!("format {format}"),
        });
    }
    match value {
        Value::Object(members) => {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !members.contains_key(name) {
                        out.push(SchemaError {
                            pointer: format!("{pointer}/{}", escape(name)),
                            keyword: Keyword::Required,
                            found: "missing",
                            expected: "present".to_owned(),
                        });
                    }
                }
            }
            let declared = schema.get("properties").and_then(Value::as_object);
            for (name, member) in members {
                let at = format!("{pointer}/{}", escape(name));
                match declared.and_then(|d| d.get(name)) {
                    Some(s) => validate(doc, s, member, &at, out),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => out.push(SchemaError {
                            pointer: at,
                            keyword: Keyword::AdditionalProperties,
                            found: json_type(member),
                            expected: "no such member".to_owned(),
                        }),
                        Some(s @ Value::Object(_)) => validate(doc, s, member, &at, out),
                        _ => {}
                    },
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(doc, s, item, &format!("{pointer}/{i}"), out);
                }
            }
        }
        _ => {}
    }
}

/// A schema's `type`, or `any` when it has none.
fn type_of(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("any")
}

/// Escapes a member name for a JSON pointer (RFC 6901).
pub fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn format_ok(format: &str, value: &Value) -> bool {
    match (format, value) {
        ("date-time", Value::String(s)) => is_date_time(s),
        ("int32", Value::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        ("int64", Value::Number(n)) => n.as_i64().is_some(),
        ("uuid", Value::String(s)) => is_uuid(s),
        _ => true,
    }
}

/// RFC 3339 `date-time`: `YYYY-MM-DDThh:mm:ss[.frac](Z|±hh:mm)`.
pub fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(doc: &Value, schema: Value, value: Value) -> Vec<(String, Keyword)> {
        let mut out = Vec::new();
        validate(doc, &schema, &value, "", &mut out);
        out.into_iter().map(|e| (e.pointer, e.keyword)).collect()
    }

    #[test]
    fn objects_refs_and_nullability() {
        let doc = json!({"components": {"schemas": {
            "Obj": {"type": "object", "required": ["id", "properties"], "properties": {
                "id": {"type": "string"},
                "n": {"type": "integer", "format": "int32"},
                "at": {"type": "string", "format": "date-time"},
                "maybe": {"type": "string", "nullable": true},
                "properties": {"type": "object", "additionalProperties": {"type": "string"}}
            }}
        }}});
        let r = json!({"$ref": "#/components/schemas/Obj"});
        assert!(
            errors(
                &doc,
                r.clone(),
                json!({"id": "1", "properties": {"a": "x"}, "maybe": null})
            )
            .is_empty()
        );
        assert_eq!(
            errors(
                &doc,
                r.clone(),
                json!({"properties": {"a": null, "b/c": 1}, "n": 3_000_000_000u64, "at": "2024-01-01 00:00"})
            ),
            vec![
                ("/id".to_owned(), Keyword::Required),
                ("/at".to_owned(), Keyword::Format),
                ("/n".to_owned(), Keyword::Format),
                ("/properties/a".to_owned(), Keyword::Type),
                ("/properties/b~1c".to_owned(), Keyword::Type),
            ]
        );
        assert_eq!(
            errors(
                &doc,
                json!({"$ref": "#/components/schemas/Missing"}),
                json!(1)
            ),
            vec![(String::new(), Keyword::Unresolved)]
        );
    }

    #[test]
    fn arrays_enums_and_alternatives() {
        let doc = json!({});
        let s = json!({"type": "array", "items": {"type": "string", "enum": ["A", "B"]}});
        assert_eq!(
            errors(&doc, s, json!(["A", "C", 1])),
            vec![
                ("/1".to_owned(), Keyword::Enum),
                ("/2".to_owned(), Keyword::Type),
            ]
        );
        let one = json!({"oneOf": [{"type": "string"}, {"type": "integer"}]});
        assert!(errors(&doc, one.clone(), json!(2)).is_empty());
        assert_eq!(
            errors(&doc, one, json!(true)),
            vec![(String::new(), Keyword::Alternatives)]
        );
        let closed =
            json!({"type": "object", "additionalProperties": false, "properties": {"a": {}}});
        assert_eq!(
            errors(&doc, closed, json!({"a": 1, "b": 2})),
            vec![("/b".to_owned(), Keyword::AdditionalProperties)]
        );
        assert!(errors(&doc, json!({"type": "number"}), json!(2)).is_empty());
    }

    #[test]
    fn date_times_and_uuids() {
        for ok in [
            "2024-01-15T09:00:00Z",
            "2024-01-15T09:00:00.123Z",
            "2024-01-15T09:00:00+01:00",
        ] {
            assert!(is_date_time(ok), "{ok}");
        }
        for bad in [
            "2024-01-15",
            "2024-01-15T09:00:00",
            "2024-01-15T09:00:00.Z",
            "2024-01-15T09:00:00+0100",
        ] {
            assert!(!is_date_time(bad), "{bad}");
        }
        assert!(is_uuid("aeb5f871-7f07-4993-9211-075dc63e7cbf"));
        assert!(!is_uuid("aeb5f871-7f07-4993-9211"));
    }
}
