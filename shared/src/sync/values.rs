//! Field values as the API accepts them: app fields of the entity only, strings (or
//! JSON numbers / booleans for number and boolean fields), each checked against its
//! field's type. Every problem is reported at once, and no message repeats a value.

use std::collections::BTreeMap;

use super::schema::{Entity, FieldType};
use crate::providers::FieldError;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// The longest value a field may hold, in characters.
pub const MAX_VALUE_CHARS: usize = 2_000;

/// Requested values by field: `Some` sets, `None` clears (JSON null or an empty string).
pub type Changes = BTreeMap<&'static str, Option<String>>;

/// Checks the `fields` of a body against `entity`'s fields and types.
pub fn changes(
    entity: Entity,
    input: &serde_json::Map<String, Value>,
) -> Result<Changes, Vec<FieldError>> {
    let mut out = Changes::new();
    let mut errors = Vec::new();
    for (name, raw) in input {
        let Some(field) = entity.field(name) else {
            let known: Vec<&str> = entity.fields().iter().map(|f| f.name).collect();
            errors.push(error(
                name,
                format!("unknown field; expected one of: {}", known.join(", ")),
            ));
            continue;
        };
        match value(field.kind, raw) {
            Ok(v) => {
                out.insert(field.name, v);
            }
            Err(message) => errors.push(error(name, message)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.chars().take(64).collect(),
        message: message.into(),
    }
}

/// One value, trimmed and checked; `None` clears the field.
fn value(kind: FieldType, raw: &Value) -> Result<Option<String>, String> {
    let text = match raw {
        Value::Null => return Ok(None),
        Value::String(s) => s.trim(),
        Value::Number(n) if kind == FieldType::Number => return Ok(Some(n.to_string())),
        Value::Bool(b) if kind == FieldType::Boolean => return Ok(Some(b.to_string())),
        _ => {
            return Err(match kind {
                FieldType::Number => "must be a number or a string".into(),
                FieldType::Boolean => "must be true, false or a string".into(),
                _ => "must be a string".into(),
            });
        }
    };
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().count() > MAX_VALUE_CHARS {
        return Err(format!("must be at most {MAX_VALUE_CHARS} characters"));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("must not contain control characters".into());
    }
    let single_line = || {
        if text.contains(['\n', '\r', '\t']) {
            Err("must be a single line".to_owned())
        } else {
            Ok(())
        }
    };
    match kind {
        FieldType::String | FieldType::Enumeration | FieldType::Id => {}
        FieldType::Email => {
            single_line()?;
            if !is_email(text) {
                return Err("must be an email address (name@example.com)".into());
            }
        }
        FieldType::Url => {
            single_line()?;
            if !is_web_address(text) {
                return Err("must be a domain or an http(s) URL (example.com)".into());
            }
        }
        FieldType::Phone => {
            single_line()?;
            let digits = text.chars().filter(char::is_ascii_digit).count();
            let allowed =
                |c: char| c.is_ascii_alphanumeric() || c == ' ' || "+-().,/#*".contains(c);
            if digits < 3 || !text.chars().all(allowed) {
                return Err("must be a phone number".into());
            }
        }
        FieldType::Number => {
            if !text.parse::<f64>().is_ok_and(f64::is_finite) {
                return Err("must be a number".into());
            }
        }
        FieldType::Boolean => {
            return match text.to_ascii_lowercase().as_str() {
                v @ ("true" | "false") => Ok(Some(v.to_owned())),
                _ => Err("must be true or false".into()),
            };
        }
        FieldType::Date => {
            if time::Date::parse(text, format_description!("[year]-[month]-[day]")).is_err() {
                return Err("must be a date (YYYY-MM-DD)".into());
            }
        }
        FieldType::DateTime => {
            if time::OffsetDateTime::parse(text, &Rfc3339).is_err() {
                return Err("must be an RFC 3339 date-time (2026-01-31T09:30:00Z)".into());
            }
        }
    }
    Ok(Some(text.to_owned()))
}

/// `local@domain.tld`: one `@`, no spaces, a plausible domain.
fn is_email(v: &str) -> bool {
    match v.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && local.len() <= 64
                && !local.contains(char::is_whitespace)
                && !local.starts_with('.')
                && !local.ends_with('.')
                && !local.contains("..")
                && is_host(domain)
        }
        None => false,
    }
}

/// A domain (`example.com`, `www.example.com/about`) or an http(s) URL.
fn is_web_address(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    let rest = match lower.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some(_) => return false,
        None => &lower,
    };
    if rest.contains(char::is_whitespace) {
        return false;
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    is_host(host)
}

/// At least two dot-separated labels of letters, digits and inner hyphens, ending in
/// a top-level domain of letters (IDNs in Unicode or punycode).
fn is_host(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.chars().count() <= 63
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let tld_ok = labels.last().is_some_and(|t| {
        t.chars().count() >= 2 && (t.chars().all(char::is_alphabetic) || t.starts_with("xn--"))
    });
    host.len() <= 253 && labels.len() >= 2 && labels.iter().all(label_ok) && tld_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(entity: Entity, fields: Value) -> Result<Changes, Vec<FieldError>> {
        changes(entity, fields.as_object().unwrap())
    }

    #[test]
    fn good_values_are_trimmed_and_kept() {
        let c = check(
            Entity::Companies,
            json!({"name": " Acme ", "domain": "https://www.acme.example/about", "employees": 12,
                   "annual_revenue": "1.5e6", "phone": "+44 (0)20 7946 0958 ext. 12", "city": null,
                   "country": "  "}),
        )
        .unwrap();
        assert_eq!(c["name"].as_deref(), Some("Acme"));
        assert_eq!(c["employees"].as_deref(), Some("12"));
        assert_eq!(c["city"], None);
        assert_eq!(c["country"], None);
        let c = check(
            Entity::Contacts,
            json!({"email": "Ann.Lee@Example.co.uk", "birth_date": "1990-02-28",
                   "website": "münchen.de", "notes": "line one\nline two"}),
        )
        .unwrap();
        assert_eq!(c["email"].as_deref(), Some("Ann.Lee@Example.co.uk"));
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn every_problem_is_listed_without_its_value() {
        let errors = check(
            Entity::Contacts,
            json!({"email": "not-an-email", "bogus": "x", "birth_date": "1990-02-30",
                   "website": "javascript:alert(1)", "first_name": 42, "phone": "call me",
                   "notes": "x".repeat(2001), "last_name": "a\u{0}b"}),
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "birth_date",
                "bogus",
                "email",
                "first_name",
                "last_name",
                "notes",
                "phone",
                "website"
            ]
        );
        assert!(errors.iter().all(|e| !e.message.contains("not-an-email")));
        let errors = check(
            Entity::Companies,
            json!({"employees": "many", "annual_revenue": "NaN", "domain": "localhost",
                   "name": ["a"]}),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 4);
    }

    #[test]
    fn typed_checks() {
        assert_eq!(
            value(FieldType::Boolean, &json!("TRUE"))
                .unwrap()
                .as_deref(),
            Some("true")
        );
        assert_eq!(
            value(FieldType::Boolean, &json!(false)).unwrap().as_deref(),
            Some("false")
        );
        assert!(value(FieldType::Boolean, &json!("yes")).is_err());
        assert!(value(FieldType::Number, &json!("inf")).is_err());
        assert!(value(FieldType::DateTime, &json!("2026-01-31T09:30:00Z")).is_ok());
        assert!(value(FieldType::DateTime, &json!("2026-01-31 09:30")).is_err());
        assert!(value(FieldType::Date, &json!("31/01/2026")).is_err());
        assert!(value(FieldType::Email, &json!("a@b")).is_err());
        assert!(value(FieldType::Email, &json!("a b@c.io")).is_err());
        assert!(value(FieldType::Email, &json!("a@b.io\nBcc: x@y.io")).is_err());
        assert!(value(FieldType::Url, &json!("http://acme.example:8080")).is_err());
        assert!(value(FieldType::Url, &json!("ftp://acme.example")).is_err());
        assert!(value(FieldType::Url, &json!("xn--mnchen-3ya.de")).is_ok());
        assert!(value(FieldType::String, &json!({"a": 1})).is_err());
    }
}
