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
//!
//! ## Bounds
//! Steps can multiply a value (`concat(_, _, _) | concat(_, _, _) | …`), so what a
//! transform produces is bounded twice:
//! - **When saved**, [`Transform::bound`] computes from the expression alone the most
//!   bytes it can produce when every value it reads holds [`INPUT_CHARS`] characters
//!   (the longest app value); a mapping whose bound exceeds [`MAX_OUTPUT`] is refused.
//!   The bound follows each step: `concat` adds its parts, `upper` at most triples the
//!   characters (at most 6 bytes per input character), `lower` at most doubles them (4
//!   bytes), `date` writes no more than its format's own text, `default` and `map` give
//!   the longest of their literals and the value.
//! - **When applied**, always, within a [`Limits`] budget: each step's output length is
//!   computed before anything is allocated, and a step that would pass
//!   [`Limits::output`] bytes, or a pipeline whose steps together touch more than
//!   [`Limits::work`] bytes, stops with an [`Overflow`] (a per-record error; CRM values
//!   can be longer than the saved bound assumed). No allocation exceeds the output cap.

use std::borrow::Cow;
use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::format_description::OwnedFormatItem;

/// The longest expression accepted.
pub const MAX_LEN: usize = 2000;
/// The most steps in a pipeline.
pub const MAX_STEPS: usize = 20;
/// The most entries of a `map`.
pub const MAX_MAP: usize = 500;
/// The most bytes a transform may produce for one value (HubSpot's longest text
/// property holds 65,536 characters).
pub const MAX_OUTPUT: usize = 64 * 1024;
/// The most bytes the steps of one application may read and write together: each
/// step reads and writes at most the output cap, so only an input longer than the
/// saved bound assumed can reach it.
pub const MAX_WORK: usize = 2 * MAX_STEPS * MAX_OUTPUT;
/// The length, in characters, of every value a transform reads, as the saved bound
/// assumes it (the longest value an app field holds).
pub const INPUT_CHARS: u64 = super::values::MAX_VALUE_CHARS as u64;
/// The most bytes a character takes in UTF-8.
const CHAR_BYTES: u64 = 4;

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
    /// The format, and its source text's length in bytes (the output's bound).
    Date(Box<OwnedFormatItem>, usize),
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

/// Why applying a transform stopped: it would have produced or touched too much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    /// A step's output would pass the output cap (bytes).
    #[error("transform output too large (over {0} bytes)")]
    Output(usize),
    /// The steps together would read and write more than the work cap (bytes).
    #[error("transform does too much work (over {0} bytes)")]
    Work(usize),
}

/// The budget of one application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes any step may produce.
    pub output: usize,
    /// The most bytes all steps may read and write together.
    pub work: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            output: MAX_OUTPUT,
            work: MAX_WORK,
        }
    }
}

/// The most a value can hold at some point of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Size {
    chars: u64,
    bytes: u64,
}

impl Size {
    fn of(s: &str) -> Size {
        Size {
            chars: s.chars().count() as u64,
            bytes: s.len() as u64,
        }
    }

    fn plus(self, o: Size) -> Size {
        Size {
            chars: self.chars.saturating_add(o.chars),
            bytes: self.bytes.saturating_add(o.bytes),
        }
    }

    fn max(self, o: Size) -> Size {
        Size {
            chars: self.chars.max(o.chars),
            bytes: self.bytes.max(o.bytes),
        }
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
                Ok(Step::Date(Box::new(item), fmt.len()))
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

    /// When the last step is a `map`, the values it writes (its targets and fallback):
    /// what a value map can put in a CRM field, for checking against its options.
    pub fn map_targets(&self) -> Option<Vec<&str>> {
        match self.steps.last()? {
            Step::Map(entries, fallback) => Some(
                entries
                    .values()
                    .map(String::as_str)
                    .chain(fallback.as_deref())
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The most bytes any step of this transform can produce when every value it reads
    /// holds [`INPUT_CHARS`] characters (saturating; see the module doc).
    pub fn bound(&self) -> u64 {
        self.bound_for(INPUT_CHARS)
    }

    /// [`Transform::bound`] for values of at most `input_chars` characters: the largest
    /// of the steps' bounds, so a transform within the cap never overflows a step.
    pub fn bound_for(&self, input_chars: u64) -> u64 {
        let input = Size {
            chars: input_chars,
            bytes: input_chars.saturating_mul(CHAR_BYTES),
        };
        let mut cur = input;
        let mut peak = input.bytes;
        for step in &self.steps {
            cur = match step {
                Step::Trim => cur,
                // Per character: upper gives at most 3 characters and 6 bytes (and at
                // most 3 bytes per input byte); lower at most 2 characters and 4 bytes
                // (1.5 bytes per input byte). Checked over every char in the tests.
                Step::Upper => Size {
                    chars: cur.chars.saturating_mul(3),
                    bytes: cur.bytes.saturating_mul(3).min(cur.chars.saturating_mul(6)),
                },
                Step::Lower => Size {
                    chars: cur.chars.saturating_mul(2),
                    bytes: (cur.bytes.saturating_mul(3).div_ceil(2))
                        .min(cur.chars.saturating_mul(CHAR_BYTES)),
                },
                Step::Concat(args) => args.iter().fold(Size::of(""), |acc, a| {
                    acc.plus(match a {
                        Arg::Text(t) => Size::of(t),
                        Arg::Field(_) => input,
                        Arg::Current => cur,
                    })
                }),
                Step::Default(d) => cur.max(Size::of(d)),
                Step::Date(_, len) => Size {
                    chars: *len as u64,
                    bytes: *len as u64,
                },
                Step::Map(table, fallback) => {
                    let otherwise = fallback.as_deref().map_or(cur, Size::of);
                    table
                        .values()
                        .fold(otherwise, |acc, v| acc.max(Size::of(v)))
                }
            };
            peak = peak.max(cur.bytes);
        }
        peak
    }

    /// Applies the transform to `value` (a field of `record`) within the default
    /// [`Limits`].
    pub fn apply(
        &self,
        value: Option<&str>,
        record: &dyn Fields,
    ) -> Result<Option<String>, Overflow> {
        self.apply_within(value, record, Limits::default())
    }

    /// Applies the transform within `limits`: every step's output length is known
    /// before it is allocated, so nothing larger than `limits.output` is ever allocated.
    pub fn apply_within(
        &self,
        value: Option<&str>,
        record: &dyn Fields,
        limits: Limits,
    ) -> Result<Option<String>, Overflow> {
        let mut work = 0usize;
        let mut spend = |n: usize| {
            work = work.saturating_add(n);
            if work > limits.work {
                Err(Overflow::Work(limits.work))
            } else {
                Ok(())
            }
        };
        let fits = |n: usize| {
            if n > limits.output {
                Err(Overflow::Output(limits.output))
            } else {
                Ok(())
            }
        };
        let mut current: Option<Cow<'_, str>> = value.map(Cow::Borrowed);
        for step in &self.steps {
            spend(current.as_deref().map_or(0, str::len))?;
            current = match step {
                Step::Trim => current.map(|v| match v {
                    Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
                    Cow::Owned(o) if o.trim().len() == o.len() => Cow::Owned(o),
                    Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
                }),
                Step::Lower => match current {
                    Some(v) => Some(Cow::Owned(recase(&v, Case::Lower, fits)?)),
                    None => None,
                },
                Step::Upper => match current {
                    Some(v) => Some(Cow::Owned(recase(&v, Case::Upper, fits)?)),
                    None => None,
                },
                Step::Concat(args) => {
                    let part = |a: &'_ Arg| -> Option<usize> {
                        match a {
                            Arg::Text(t) => Some(t.len()),
                            Arg::Field(f) => record.get(f).map(str::len),
                            Arg::Current => current.as_deref().map(str::len),
                        }
                    };
                    let any_value = args.iter().any(|a| match a {
                        Arg::Field(f) => record.get(f).is_some(),
                        Arg::Current => current.is_some(),
                        Arg::Text(_) => false,
                    });
                    if any_value {
                        // The length first, saturating: nothing is built past the cap.
                        let total = args
                            .iter()
                            .filter_map(part)
                            .fold(0usize, usize::saturating_add);
                        fits(total)?;
                        let mut out = String::with_capacity(total);
                        for a in args {
                            match a {
                                Arg::Text(t) => out.push_str(t),
                                Arg::Field(f) => out.push_str(record.get(f).unwrap_or_default()),
                                Arg::Current => {
                                    out.push_str(current.as_deref().unwrap_or_default())
                                }
                            }
                        }
                        Some(Cow::Owned(out))
                    } else {
                        None
                    }
                }
                Step::Default(d) => match current {
                    Some(v) if !v.is_empty() => Some(v),
                    _ => {
                        fits(d.len())?;
                        Some(Cow::Owned(d.clone()))
                    }
                },
                Step::Date(fmt, len) => match current.as_deref().and_then(parse_time) {
                    Some(t) => {
                        let mut out = Bounded::new((*len).min(limits.output));
                        match t.format_into(&mut out, fmt.as_ref()) {
                            Ok(_) => String::from_utf8(out.buf).ok().map(Cow::Owned),
                            Err(_) if out.over => return Err(Overflow::Output(limits.output)),
                            Err(_) => None,
                        }
                    }
                    None => None,
                },
                Step::Map(table, fallback) => match current {
                    Some(v) => match table.get(v.as_ref()).or(fallback.as_ref()) {
                        Some(to) => {
                            fits(to.len())?;
                            Some(Cow::Owned(to.clone()))
                        }
                        None => Some(v),
                    },
                    None => None,
                },
            };
            let len = current.as_deref().map_or(0, str::len);
            fits(len)?;
            spend(len)?;
        }
        Ok(current.map(Cow::into_owned))
    }
}

#[derive(Clone, Copy)]
enum Case {
    Lower,
    Upper,
}

/// Upper- or lower-cases `v` into a string allocated once at its exact length, after
/// checking that length with `fits`. Lower-casing follows Unicode's per-character
/// mapping, with Greek capital sigma as final sigma (ς) at the end of a word.
fn recase(
    v: &str,
    case: Case,
    fits: impl Fn(usize) -> Result<(), Overflow>,
) -> Result<String, Overflow> {
    let mapped = |c: char| -> CaseChars {
        match case {
            Case::Upper => CaseChars::Upper(c.to_uppercase()),
            Case::Lower => CaseChars::Lower(c.to_lowercase()),
        }
    };
    let total = v
        .chars()
        .map(|c| mapped(c).map(char::len_utf8).sum::<usize>())
        .fold(0usize, usize::saturating_add);
    fits(total)?;
    let mut out = String::with_capacity(total);
    let mut chars = v.chars().peekable();
    let mut prev_letter = false;
    while let Some(c) = chars.next() {
        let word_end = !chars.peek().is_some_and(|n| n.is_alphabetic());
        if matches!(case, Case::Lower) && c == 'Σ' && prev_letter && word_end {
            out.push('ς');
        } else {
            out.extend(mapped(c));
        }
        prev_letter = c.is_alphabetic();
    }
    Ok(out)
}

/// The characters one character maps to, either way.
enum CaseChars {
    Upper(std::char::ToUppercase),
    Lower(std::char::ToLowercase),
}

impl Iterator for CaseChars {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        match self {
            CaseChars::Upper(i) => i.next(),
            CaseChars::Lower(i) => i.next(),
        }
    }
}

/// A writer that holds at most `limit` bytes, allocated up front; a write past it
/// fails (and is remembered) instead of growing the buffer.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Bounded {
    fn new(limit: usize) -> Self {
        Self {
            buf: Vec::with_capacity(limit),
            limit,
            over: false,
        }
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.over = true;
            return Err(std::io::Error::other("over the limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
            .unwrap_or_else(|e| panic!("{src}: {e}"))
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

    #[test]
    fn case_mapping_stays_within_the_bound_for_every_char() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let up: String = c.to_uppercase().collect();
            let low: String = c.to_lowercase().collect();
            let n = c.len_utf8();
            assert!(
                up.chars().count() <= 3 && up.len() <= 6 && up.len() <= 3 * n,
                "{c:?}"
            );
            assert!(
                low.chars().count() <= 2 && low.len() <= 4 && 2 * low.len() <= 3 * n,
                "{c:?}"
            );
        }
        assert_eq!(
            run("lower", Some("ΟΔΟΣ ΣΑ"), &[]).as_deref(),
            Some("οδος σα")
        );
        assert_eq!(run("lower", Some("ΣΑ"), &[]).as_deref(), Some("σα"));
    }

    #[test]
    fn dates_write_no_more_than_their_format() {
        // The widest instant each component can show, in every component's shortest
        // spelling and its widest modifiers.
        let t = parse_time("-377705116800000").expect("year -9999");
        let wide = OffsetDateTime::parse(
            "9999-09-29T23:59:59.999999999Z",
            &time::format_description::well_known::Rfc3339,
        )
        .expect("instant");
        for fmt in DATE_COMPONENTS {
            let item = time::format_description::parse_owned::<2>(fmt).expect(fmt);
            for at in [t, wide] {
                let out = at.format(&item).expect(fmt);
                assert!(out.len() <= fmt.len(), "{fmt} wrote {out}");
            }
        }
    }

    /// Every date component, shortest spelling and widest modifiers.
    const DATE_COMPONENTS: &[&str] = &[
        "[day]",
        "[month]",
        "[month repr:long]",
        "[month repr:short]",
        "[weekday]",
        "[weekday repr:short]",
        "[weekday repr:sunday]",
        "[year]",
        "[year repr:last_two]",
        "[year sign:mandatory]",
        "[year base:iso_week]",
        "[hour]",
        "[hour repr:12]",
        "[minute]",
        "[second]",
        "[subsecond]",
        "[subsecond digits:9]",
        "[period]",
        "[ordinal]",
        "[week_number]",
        "[week_number repr:iso]",
        "[offset_hour]",
        "[offset_hour sign:mandatory]",
        "[offset_minute]",
        "[offset_second]",
        "[unix_timestamp]",
        "[unix_timestamp precision:nanosecond]",
        "[unix_timestamp precision:millisecond sign:mandatory]",
        "[optional [[day]]]",
        "[first [[weekday]][[day]]]",
        "\\[x\\]",
        "é – 日",
    ];

    #[test]
    fn nested_concat_is_refused_by_its_bound_and_cut_off_when_applied() {
        // The shape of the 239-character expression: each step multiplies the value.
        let step = format!("concat({})", ["_"; 10].join(", "));
        let src = format!("trim | {}", [step.as_str(); 7].join(" | "));
        let t = Transform::parse(&src).expect("parses");
        assert!(t.bound() > MAX_OUTPUT as u64);
        let name = "Acme Corporation International";
        assert_eq!(
            t.apply(Some(name), &rec(&[])),
            Err(Overflow::Output(MAX_OUTPUT))
        );
        // Ordinary transforms stay well inside the bound.
        for ok in [
            "trim | lower",
            r#"concat(firstname, " ", middlename, " ", lastname) | trim | upper"#,
            "upper | lower",
            r#"map({"a": "b"}, "c") | default("x")"#,
            r#"date("[year]-[month]-[day]")"#,
        ] {
            let b = Transform::parse(ok).expect(ok).bound();
            assert!(b <= MAX_OUTPUT as u64, "{ok}: {b}");
        }
        assert_eq!(Transform::parse("trim").expect("trim").bound(), 8_000);
    }

    #[test]
    fn work_is_capped_too() {
        let t = Transform::parse("trim | trim | trim").expect("parse");
        let tight = Limits {
            output: 100,
            work: 250,
        };
        // Each step reads and writes the value: 3 × 2 × 40 = 240 bytes.
        let v = "x".repeat(40);
        assert!(t.apply_within(Some(&v), &rec(&[]), tight).is_ok());
        let v = "x".repeat(45);
        assert_eq!(
            t.apply_within(Some(&v), &rec(&[]), tight),
            Err(Overflow::Work(250))
        );
    }

    mod properties {
        use super::super::*;
        use super::DATE_COMPONENTS;
        use proptest::prelude::*;
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        /// The most the date library allocates for itself while formatting.
        const SCRATCH: usize = 64;

        /// Records the largest single allocation of this thread while `WATCH` is on.
        struct Watch;

        thread_local! {
            static WATCH: Cell<bool> = const { Cell::new(false) };
            static LARGEST: Cell<usize> = const { Cell::new(0) };
        }

        fn note(size: usize) {
            let _ = WATCH.try_with(|w| {
                if w.get() {
                    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
                }
            });
        }

        // SAFETY: forwards to the system allocator unchanged; only notes sizes.
        unsafe impl GlobalAlloc for Watch {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                note(layout.size());
                // SAFETY: the caller's contract, passed on.
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: the caller's contract, passed on.
                unsafe { System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                note(new_size);
                // SAFETY: the caller's contract, passed on.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        #[global_allocator]
        static ALLOCATOR: Watch = Watch;

        /// Applies `t`, returning the result and the largest allocation it made.
        fn watched(
            t: &Transform,
            value: Option<&str>,
            record: &BTreeMap<String, String>,
            limits: Limits,
        ) -> (Result<Option<String>, Overflow>, usize) {
            LARGEST.with(|l| l.set(0));
            WATCH.with(|w| w.set(true));
            let out = t.apply_within(value, record, limits);
            WATCH.with(|w| w.set(false));
            (out, LARGEST.with(Cell::get))
        }

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-zA-Z ]{0,12}",
                "[ΣΑΟΔΐßİﬃ ǅ日é]{0,8}",
                Just("2026-11-21T10:00:00.000Z".to_owned()),
                Just("1795298998000".to_owned()),
            ]
        }

        fn literal() -> impl Strategy<Value = String> {
            text().prop_map(|t| serde_json::to_string(&t).expect("json"))
        }

        fn arg() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => Just("_".to_owned()),
                1 => Just("a".to_owned()),
                1 => Just("b".to_owned()),
                1 => literal(),
            ]
        }

        fn step() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("trim".to_owned()),
                Just("lower".to_owned()),
                Just("upper".to_owned()),
                prop::collection::vec(arg(), 1..12)
                    .prop_map(|a| format!("concat({})", a.join(", "))),
                literal().prop_map(|l| format!("default({l})")),
                prop::sample::select(DATE_COMPONENTS.to_vec()).prop_map(|f| format!(
                    "date({})",
                    serde_json::to_string(&format!("{f}-{f}")).expect("json")
                )),
                (literal(), literal(), prop::option::of(literal())).prop_map(|(k, v, f)| match f {
                    Some(f) => format!("map({{{k}: {v}}}, {f})"),
                    None => format!("map({{{k}: {v}}})"),
                }),
            ]
        }

        /// A record whose fields `a` and `b` may be missing.
        fn fields() -> impl Strategy<Value = BTreeMap<String, String>> {
            prop::collection::btree_map(
                prop::sample::select(vec!["a".to_owned(), "b".to_owned()]),
                text(),
                0..=2,
            )
        }

        fn expression() -> impl Strategy<Value = String> {
            prop::collection::vec(step(), 1..=MAX_STEPS).prop_map(|s| s.join(" | "))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(600))]

            #[test]
            fn output_and_allocation_stay_under_the_cap(
                src in expression(),
                value in prop::option::of(text()),
                record in fields(),
                cap in 1usize..4096,
            ) {
                let t = Transform::parse(&src).expect("generated expressions parse");
                let limits = Limits { output: cap, work: cap * 8 };
                let (out, largest) = watched(&t, value.as_deref(), &record, limits);
                if let Ok(Some(v)) = &out {
                    prop_assert!(v.len() <= cap);
                    // The watch sees the result's own allocation: it is live.
                    prop_assert!(largest >= v.len());
                }
                // Nothing built is past the cap (the date library's own scratch, a few
                // dozen bytes whatever the value, aside).
                prop_assert!(largest <= cap.max(SCRATCH), "{src}: allocated {largest} > {cap}");
            }

            #[test]
            fn the_saved_bound_covers_what_is_produced(
                src in expression(),
                value in prop::option::of(text()),
                record in fields(),
            ) {
                let t = Transform::parse(&src).expect("generated expressions parse");
                // The bound for inputs as long as the longest generated one.
                let longest = [value.as_deref(), record.get("a").map(String::as_str), record.get("b").map(String::as_str)]
                    .into_iter()
                    .flatten()
                    .map(|v| v.chars().count() as u64)
                    .max()
                    .unwrap_or(0);
                let bound = t.bound_for(longest);
                let out = t.apply(value.as_deref(), &record);
                if bound <= MAX_OUTPUT as u64 {
                    prop_assert!(out.is_ok(), "{src}: accepted but {out:?}");
                }
                if let Ok(Some(v)) = out {
                    prop_assert!(v.len() as u64 <= bound, "{src}: {} > {bound}", v.len());
                    prop_assert!(v.len() <= MAX_OUTPUT);
                }
            }
        }
    }
}
