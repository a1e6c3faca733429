//! Field-mapping transforms: a small, safe expression language applied to a value on
//! its way between a CRM and the app. No arbitrary code: a pipeline of known
//! functions over strings, parsed and checked once when the mapping is saved.
//!
//! ```text
//! trim | lower
//! concat(firstname, " ", lastname) | trim
//! default("Unknown")
//! date("[year]-[month]-[day]")
//! map({"lead": "Lead", "customer": "Customer"}, "Other")
//! ```
//!
//! A pipeline starts with the mapped field's value (or null) and passes it through each
//! step. Inside arguments, a bare name is another field of the same record, `_` is the
//! current value, and strings are double-quoted JSON strings.
//!
//! | function | does |
//! |---|---|
//! | `trim`, `lower`, `upper` | on strings; null stays null |
//! | `concat(a, b, …)` | joins its arguments; null parts are left out; all null → null |
//! | `default(v)` | `v` when the value is null or empty |
//! | `date(format)` | reads RFC 3339, `YYYY-MM-DD` or epoch milliseconds; writes `format` (the `time` crate's format description) |
//! | `map({from: to, …}, fallback?)` | looks the value up; not found → `fallback`, else the value unchanged |

use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::format_description::OwnedFormatItem;

/// The longest expression accepted.
pub const MAX_LEN: usize = 2000;
/// The most steps in a pipeline.
pub const MAX_STEPS: usize = 20;
/// The most entries of a `map`.
pub const MAX_MAP: usize = 500;

/// A parsed transform.
#[derive(Debug, Clone)]
pub struct Transform {
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
enum Step {
    Trim,
    Lower,
    Upper,
    Concat(Vec<Arg>),
    Default(String),
    Date(Box<OwnedFormatItem>),
    Map(BTreeMap<String, String>, Option<String>),
}

#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Field(String),
    Current,
}

/// Why an expression was refused: where, and what is wrong (never echoes values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transform, at character {at}: {message}")]
pub struct TransformError {
    /// Character offset of the problem.
    pub at: usize,
    /// What is wrong.
    pub message: String,
}

fn err(at: usize, message: impl Into<String>) -> TransformError {
    TransformError {
        at,
        message: message.into(),
    }
}

/// A record's fields, for field references in arguments.
pub trait Fields {
    /// The value of `name`, if the record has one.
    fn get(&self, name: &str) -> Option<&str>;
}

impl Fields for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl Fields for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        std::collections::HashMap::get(self, name).map(String::as_str)
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), TransformError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(err(self.pos, format!("expected '{c}'")))
        }
    }

    fn ident(&mut self) -> Result<String, TransformError> {
        self.skip_ws();
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(err(self.pos, "expected a name"));
        }
        let name = self.rest()[..len].to_owned();
        self.pos += len;
        Ok(name)
    }

    fn string(&mut self) -> Result<String, TransformError> {
        self.skip_ws();
        let start = self.pos;
        let src = self.src;
        let rest = &src[start..];
        if !rest.starts_with('"') {
            return Err(err(start, "expected a \"string\""));
        }
        // Find the closing quote, honouring backslash escapes; JSON decodes it.
        let mut escaped = false;
        for (i, c) in rest.char_indices().skip(1) {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    let literal = &rest[..=i];
                    self.pos += i + 1;
                    return serde_json::from_str(literal)
                        .map_err(|_| err(start, "invalid string escape"));
                }
                _ => escaped = false,
            }
        }
        Err(err(start, "unterminated string"))
    }

    fn arg(&mut self) -> Result<Arg, TransformError> {
        self.skip_ws();
        if self.rest().starts_with('"') {
            return self.string().map(Arg::Text);
        }
        let name = self.ident()?;
        Ok(if name == "_" {
            Arg::Current
        } else {
            Arg::Field(name)
        })
    }

    fn args(&mut self) -> Result<Vec<Arg>, TransformError> {
        let mut out = Vec::new();
        if self.eat(')') {
            return Ok(out);
        }
        loop {
            out.push(self.arg()?);
            if out.len() > 50 {
                return Err(err(self.pos, "at most 50 arguments"));
            }
            if self.eat(')') {
                return Ok(out);
            }
            self.expect(',')?;
        }
    }

    fn map_literal(&mut self) -> Result<BTreeMap<String, String>, TransformError> {
        self.expect('{')?;
        let mut out = BTreeMap::new();
        if self.eat('}') {
            return Ok(out);
        }
        loop {
            self.skip_ws();
            let at = self.pos;
            let key = self.string()?;
            self.expect(':')?;
            let value = self.string()?;
            if out.insert(key, value).is_some() {
                return Err(err(at, "a key appears twice in the map"));
            }
            if out.len() > MAX_MAP {
                return Err(err(at, format!("a map has at most {MAX_MAP} entries")));
            }
            if self.eat('}') {
                return Ok(out);
            }
            self.expect(',')?;
        }
    }

    fn step(&mut self) -> Result<Step, TransformError> {
        let at = self.pos;
        let name = self.ident()?;
        let has_args = self.eat('(');
        let no_args = |step: Step, p: &mut Self| {
            if has_args {
                p.expect(')')?;
            }
            Ok(step)
        };
        match name.as_str() {
            "trim" => no_args(Step::Trim, self),
            "lower" => no_args(Step::Lower, self),
            "upper" => no_args(Step::Upper, self),
            "concat" if has_args => {
                let args = self.args()?;
                if args.is_empty() {
                    return Err(err(at, "concat needs at least one argument"));
                }
                Ok(Step::Concat(args))
            }
            "default" if has_args => {
                let v = self.string()?;
                self.expect(')')?;
                Ok(Step::Default(v))
            }
            "date" if has_args => {
                let fmt_at = self.pos;
                let fmt = self.string()?;
                self.expect(')')?;
                let item = time::format_description::parse_owned::<2>(&fmt)
                    .map_err(|e| err(fmt_at, format!("invalid date format: {e}")))?;
                Ok(Step::Date(Box::new(item)))
            }
            "map" if has_args => {
                let table = self.map_literal()?;
                let fallback = if self.eat(',') {
                    Some(self.string()?)
                } else {
                    None
                };
                self.expect(')')?;
                Ok(Step::Map(table, fallback))
            }
            "concat" | "default" | "date" | "map" => {
                Err(err(at, format!("{name} needs arguments in parentheses")))
            }
            _ => Err(err(
                at,
                "unknown function; use trim, lower, upper, concat, default, date or map",
            )),
        }
    }
}

impl Transform {
    /// Parses and checks an expression.
    pub fn parse(src: &str) -> Result<Self, TransformError> {
        if src.len() > MAX_LEN {
            return Err(err(0, format!("at most {MAX_LEN} characters")));
        }
        let mut p = Parser { src, pos: 0 };
        let mut steps = vec![p.step()?];
        while p.eat('|') {
            steps.push(p.step()?);
            if steps.len() > MAX_STEPS {
                return Err(err(p.pos, format!("at most {MAX_STEPS} steps")));
            }
        }
        p.skip_ws();
        if !p.rest().is_empty() {
            return Err(err(p.pos, "unexpected text; steps are separated by '|'"));
        }
        Ok(Self { steps })
    }

    /// The record fields the expression reads (to check them against the schema).
    pub fn fields(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Concat(args) => Some(args),
                _ => None,
            })
            .flatten()
            .filter_map(|a| match a {
                Arg::Field(f) => Some(f.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Applies the transform to `value` (a field of `record`).
    pub fn apply(&self, value: Option<&str>, record: &dyn Fields) -> Option<String> {
        let mut current: Option<String> = value.map(str::to_owned);
        for step in &self.steps {
            current = match step {
                Step::Trim => current.map(|v| v.trim().to_owned()),
                Step::Lower => current.map(|v| v.to_lowercase()),
                Step::Upper => current.map(|v| v.to_uppercase()),
                Step::Concat(args) => {
                    let parts: Vec<String> = args
                        .iter()
                        .filter_map(|a| match a {
                            Arg::Text(t) => Some(t.clone()),
                            Arg::Field(f) => record.get(f).map(str::to_owned),
                            Arg::Current => current.clone(),
                        })
                        .collect();
                    let any_value = args.iter().any(|a| match a {
                        Arg::Field(f) => record.get(f).is_some(),
                        Arg::Current => current.is_some(),
                        Arg::Text(_) => false,
                    });
                    any_value.then(|| parts.concat())
                }
                Step::Default(d) => match current {
                    Some(v) if !v.is_empty() => Some(v),
                    _ => Some(d.clone()),
                },
                Step::Date(fmt) => {
                    current.and_then(|v| parse_time(&v).and_then(|t| t.format(fmt.as_ref()).ok()))
                }
                Step::Map(table, fallback) => current.map(|v| match table.get(&v) {
                    Some(to) => to.clone(),
                    None => fallback.clone().unwrap_or(v),
                }),
            };
        }
        current
    }
}

/// RFC 3339, `YYYY-MM-DD` (midnight UTC) or epoch milliseconds.
fn parse_time(v: &str) -> Option<OffsetDateTime> {
    let v = v.trim();
    if let Ok(t) = OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339) {
        return Some(t);
    }
    if let Ok(ms) = v.parse::<i64>() {
        return OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok();
    }
    let day = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(v, &day)
        .ok()
        .map(|d| d.midnight().assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn run(src: &str, value: Option<&str>, record: &[(&str, &str)]) -> Option<String> {
        Transform::parse(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .apply(value, &rec(record))
    }

    #[test]
    fn string_functions_and_pipelines() {
        assert_eq!(
            run("trim | lower", Some("  A@B.COM "), &[]).as_deref(),
            Some("a@b.com")
        );
        assert_eq!(run("upper()", Some("x"), &[]).as_deref(), Some("X"));
        assert_eq!(run("trim", None, &[]), None);
        assert_eq!(
            run(
                r#"concat(firstname, " ", lastname) | trim"#,
                None,
                &[("firstname", "Ada"), ("lastname", "Lovelace")]
            )
            .as_deref(),
            Some("Ada Lovelace")
        );
        assert_eq!(
            run(
                r#"concat(firstname, " ", lastname) | trim"#,
                None,
                &[("firstname", "Ada")]
            )
            .as_deref(),
            Some("Ada")
        );
        assert_eq!(
            run(r#"concat(firstname, " ", lastname)"#, None, &[]),
            None,
            "all null → null"
        );
        assert_eq!(
            run(r#"concat(_, "!")"#, Some("hi"), &[]).as_deref(),
            Some("hi!")
        );
        assert_eq!(
            run(r#"default("Unknown")"#, None, &[]).as_deref(),
            Some("Unknown")
        );
        assert_eq!(
            run(r#"default("Unknown")"#, Some(""), &[]).as_deref(),
            Some("Unknown")
        );
        assert_eq!(
            run(r#"default("Unknown")"#, Some("x"), &[]).as_deref(),
            Some("x")
        );
    }

    #[test]
    fn dates_and_value_maps() {
        let f = r#"date("[year]-[month]-[day]")"#;
        assert_eq!(
            run(f, Some("2026-11-21T10:00:00.000Z"), &[]).as_deref(),
            Some("2026-11-21")
        );
        assert_eq!(
            run(f, Some("1795298998000"), &[]).as_deref(),
            Some("2026-11-21")
        );
        assert_eq!(
            run(f, Some("2026-01-02"), &[]).as_deref(),
            Some("2026-01-02")
        );
        assert_eq!(run(f, Some("not a date"), &[]), None);
        let m = r#"map({"lead": "Lead", "customer": "Customer"}, "Other")"#;
        assert_eq!(run(m, Some("lead"), &[]).as_deref(), Some("Lead"));
        assert_eq!(run(m, Some("zzz"), &[]).as_deref(), Some("Other"));
        assert_eq!(
            run(r#"lower | map({"a": "b"})"#, Some("Z"), &[]).as_deref(),
            Some("z"),
            "no fallback: unchanged"
        );
        assert_eq!(
            run(r#"map({"say \"hi\"": "ok"})"#, Some("say \"hi\""), &[]).as_deref(),
            Some("ok")
        );
    }

    #[test]
    fn bad_expressions_are_refused_with_a_position() {
        for (src, at) in [
            ("", 0),
            ("shout", 0),
            ("trim |", 6),
            ("trim lower", 5),
            ("concat()", 0),
            ("default", 0),
            ("default(x)", 8),
            (r#"date("[nonsense]")"#, 5),
            (r#"map({"a": "b", "a": "c"})"#, 15),
            (r#"concat("open"#, 7),
            ("system(\"rm -rf /\")", 0),
        ] {
            let e = Transform::parse(src).expect_err(src);
            assert_eq!(e.at, at, "{src}: {e}");
        }
        let long = "trim | ".repeat(30) + "trim";
        assert!(Transform::parse(&long).is_err());
        assert!(Transform::parse(&"x".repeat(MAX_LEN + 1)).is_err());
    }

    #[test]
    fn field_references_are_listed() {
        let t = Transform::parse(r#"concat(firstname, " ", lastname, _) | trim"#).expect("parse");
        assert_eq!(t.fields(), ["firstname", "lastname"]);
    }
}
