//! The SOQL subset the stand-in answers:
//!
//! ```text
//! SELECT f1, f2, … | COUNT() FROM Contact|Account
//!   [WHERE cond {AND|OR} cond …] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …]
//!   [LIMIT n] [OFFSET n]
//! ```
//!
//! Conditions are `field op literal` (`= != <> < <= > >=`), `field [NOT] IN (lit, …)`,
//! `field LIKE 'pat%'` (`%` and `_` wildcards, case-insensitive), `NOT cond`, and
//! parenthesised groups. As in Salesforce, `AND` and `OR` cannot be mixed at one level
//! without parentheses. Keywords and field names are case-insensitive; literals are
//! `'strings'` (backslash escapes), numbers, `true`/`false`/`null`, dates `2024-01-31`
//! and date-times `2024-01-31T00:00:00Z` / `…00.000+0000` / `…+01:00`. Each literal must
//! suit its field's type (a quoted date-time is `INVALID_FIELD`, as in Salesforce).
//! Text compares case-insensitively; `!=` and `NOT IN` match nulls; other comparisons
//! with null values are false. Ordering puts nulls first ascending and last descending,
//! then breaks ties by `Id`; without `ORDER BY` rows come in `Id` order.

use std::cmp::Ordering;

use super::schema::{Field, FieldType, SfObject, Source, normalize_id, parse_datetime};
use super::store::Rec;
use crate::clock;

/// A parsed query.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Query {
    pub(crate) object: SfObject,
    /// Selected field indices; `None` for `COUNT()`.
    pub(crate) fields: Option<Vec<usize>>,
    pub(crate) filter: Option<Expr>,
    pub(crate) order: Vec<OrderKey>,
    pub(crate) limit: Option<usize>,
    pub(crate) offset: usize,
    /// Byte offset of the object name after `FROM`.
    pub(crate) from_at: usize,
}

/// A `WHERE` expression over field indices.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Compare(usize, Op, Literal),
    In(usize, Vec<Literal>, bool),
    Like(usize, Pattern),
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A literal, converted to its field's representation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Literal {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    /// Epoch milliseconds.
    Time(i64),
}

/// One `ORDER BY` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OrderKey {
    pub(crate) field: usize,
    pub(crate) descending: bool,
    pub(crate) nulls_last: bool,
}

/// Why a query was refused: Salesforce's `errorCode` and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SoqlError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

/// A token with its byte offset.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Number(f64),
    Date(String),
    DateTime(i64),
    Comma,
    Open,
    Close,
    Op(Op),
    End,
}

impl Tok {
    fn describe(&self, source: &str, at: usize) -> String {
        match self {
            Tok::End => "<EOF>".to_owned(),
            _ => {
                let text: String = source[at..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | '(' | ')'))
                    .collect();
                if text.is_empty() {
                    source[at..].chars().take(1).collect()
                } else {
                    text
                }
            }
        }
    }
}

/// Salesforce's caret-pointing message for a problem at byte offset `at`.
pub(crate) fn located(source: &str, at: usize, detail: &str) -> String {
    let at = at.min(source.len());
    let before = &source[..at];
    let row = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = source[line_start..at].chars().count() + 1;
    let line = source[line_start..].lines().next().unwrap_or_default();
    format!(
        "\n{line}\n{}^\nERROR at Row:{row}:Column:{column}\n{detail}",
        " ".repeat(column - 1)
    )
}

fn malformed(source: &str, at: usize, detail: &str) -> SoqlError {
    SoqlError {
        code: "MALFORMED_QUERY",
        message: located(source, at, detail),
    }
}

/// Splits a query into tokens with their byte offsets.
fn tokenize(source: &str) -> Result<Vec<(Tok, usize)>, SoqlError> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b',' => tokens.push((Tok::Comma, start)),
            b'(' => tokens.push((Tok::Open, start)),
            b')' => tokens.push((Tok::Close, start)),
            b'=' => tokens.push((Tok::Op(Op::Eq), start)),
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                i += 1;
                tokens.push((Tok::Op(Op::Ne), start));
            }
            b'<' | b'>' => {
                let next = bytes.get(i + 1).copied();
                let op = match (c, next) {
                    (b'<', Some(b'=')) => Some(Op::Le),
                    (b'<', Some(b'>')) => Some(Op::Ne),
                    (b'>', Some(b'=')) => Some(Op::Ge),
                    _ => None,
                };
                match op {
                    Some(op) => {
                        i += 1;
                        tokens.push((Tok::Op(op), start));
                    }
                    None if c == b'<' => tokens.push((Tok::Op(Op::Lt), start)),
                    None => tokens.push((Tok::Op(Op::Gt), start)),
                }
            }
            b'\'' => {
                let (text, end) = string_literal(source, start)?;
                tokens.push((Tok::Str(text), start));
                i = end;
                continue;
            }
            c if c.is_ascii_digit()
                || (matches!(c, b'-' | b'+')
                    && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                let mut end = i + 1;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric()
                        || matches!(bytes[end], b'.' | b':' | b'+' | b'-'))
                {
                    end += 1;
                }
                tokens.push((literal_token(source, start, &source[start..end])?, start));
                i = end;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut end = i + 1;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'_' | b'.'))
                {
                    end += 1;
                }
                tokens.push((Tok::Word(source[start..end].to_owned()), start));
                i = end;
                continue;
            }
            _ => {
                let shown: String = source[start..].chars().take(1).collect();
                return Err(malformed(
                    source,
                    start,
                    &format!("unexpected token: '{shown}'"),
                ));
            }
        }
        i += 1;
    }
    tokens.push((Tok::End, source.len()));
    Ok(tokens)
}

/// A quoted string starting at `start`: its text and the offset after the closing quote.
fn string_literal(source: &str, start: usize) -> Result<(String, usize), SoqlError> {
    let mut text = String::new();
    let mut chars = source[start + 1..].char_indices();
    while let Some((offset, c)) = chars.next() {
        match c {
            '\'' => return Ok((text, start + 1 + offset + 1)),
            '\\' => {
                let escaped = match chars.next().map(|(_, e)| e) {
                    Some('n') => "\n",
                    Some('r') => "\r",
                    Some('t') => "\t",
                    Some('b') => "\u{8}",
                    Some('f') => "\u{c}",
                    Some('"') => "\"",
                    Some('\'') => "'",
                    Some('\\') => "\\",
                    // Kept escaped: LIKE reads them as literal wildcard characters.
                    Some('%') => "\\%",
                    Some('_') => "\\_",
                    _ => {
                        return Err(malformed(
                            source,
                            start + 1 + offset,
                            "Invalid string literal: illegal escape sequence",
                        ));
                    }
                };
                text.push_str(escaped);
            }
            c => text.push(c),
        }
    }
    Err(malformed(source, start, "unterminated string literal"))
}

/// A number, date or date-time literal.
fn literal_token(source: &str, at: usize, text: &str) -> Result<Tok, SoqlError> {
    if clock::parse_date(text).is_some() {
        return Ok(Tok::Date(text.to_owned()));
    }
    if text.len() > 10 && text.as_bytes().get(10) == Some(&b'T') {
        return parse_datetime(text).map(Tok::DateTime).ok_or_else(|| {
            malformed(
                source,
                at,
                &format!("line 1:{at} no viable alternative at character '{text}'"),
            )
        });
    }
    let plain = text
        .strip_prefix(['-', '+'])
        .unwrap_or(text)
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.');
    match text.parse::<f64>() {
        Ok(n) if plain && n.is_finite() => Ok(Tok::Number(n)),
        _ => Err(malformed(
            source,
            at,
            &format!("unexpected token: '{text}'"),
        )),
    }
}

/// Parses a SOQL query.
pub(crate) fn parse(source: &str) -> Result<Query, SoqlError> {
    let tokens = tokenize(source)?;
    let mut parser = Parser {
        source,
        tokens,
        pos: 0,
        object: SfObject::Contact,
    };
    parser.query()
}

struct Parser<'a> {
    source: &'a str,
    tokens: Vec<(Tok, usize)>,
    pos: usize,
    object: SfObject,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&Tok::End, |(t, _)| t)
    }

    fn at(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map_or(self.source.len(), |(_, at)| *at)
    }

    fn next(&mut self) -> (Tok, usize) {
        let token = self
            .tokens
            .get(self.pos)
            .cloned()
            .unwrap_or((Tok::End, self.source.len()));
        self.pos += 1;
        token
    }

    fn unexpected(&self) -> SoqlError {
        let detail = format!(
            "unexpected token: {}",
            match self.peek() {
                Tok::End => "<EOF>".to_owned(),
                t => format!("'{}'", t.describe(self.source, self.at())),
            }
        );
        malformed(self.source, self.at(), &detail)
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.is_keyword(keyword);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), SoqlError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn expect(&mut self, token: &Tok) -> Result<(), SoqlError> {
        if self.peek() == token {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn word(&mut self) -> Result<(String, usize), SoqlError> {
        match self.next() {
            (Tok::Word(w), at) => Ok((w, at)),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    fn query(&mut self) -> Result<Query, SoqlError> {
        self.expect_keyword("SELECT")?;
        let selected = self.select_list()?;
        self.expect_keyword("FROM")?;
        let (name, at) = self.word()?;
        let from_at = at;
        self.object = SfObject::parse(&name)
            .or_else(|| super::knowledge::object_named(&name))
            .ok_or_else(|| SoqlError {
            code: "INVALID_TYPE",
            message: located(
                self.source,
                at,
                &format!(
                    "sObject type '{name}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names."
                ),
            ),
        })?;
        let fields = match selected {
            None => None,
            Some(names) => Some(self.resolve_select(&names)?),
        };
        let filter = if self.eat_keyword("WHERE") {
            Some(self.expression()?)
        } else {
            None
        };
        let order = if self.eat_keyword("ORDER") {
            self.expect_keyword("BY")?;
            self.order_list()?
        } else {
            Vec::new()
        };
        let limit = if self.eat_keyword("LIMIT") {
            Some(self.count()?)
        } else {
            None
        };
        let offset = if self.eat_keyword("OFFSET") {
            let at = self.at();
            let offset = self.count()?;
            if offset > 2000 {
                return Err(SoqlError {
                    code: "NUMBER_OUTSIDE_VALID_RANGE",
                    message: located(self.source, at, "Maximum SOQL offset allowed is 2000"),
                });
            }
            offset
        } else {
            0
        };
        if *self.peek() != Tok::End {
            return Err(self.unexpected());
        }
        Ok(Query {
            object: self.object,
            fields,
            filter,
            order,
            limit,
            offset,
            from_at,
        })
    }

    /// Field names with offsets, or `None` for `COUNT()`.
    fn select_list(&mut self) -> Result<Option<Vec<(String, usize)>>, SoqlError> {
        if self.is_keyword("COUNT") && matches!(self.tokens.get(self.pos + 1), Some((Tok::Open, _)))
        {
            self.pos += 2;
            self.expect(&Tok::Close)?;
            return Ok(None);
        }
        let mut names = vec![self.word()?];
        while *self.peek() == Tok::Comma {
            self.pos += 1;
            names.push(self.word()?);
        }
        Ok(Some(names))
    }

    fn field(&self, name: &str, at: usize) -> Result<(usize, &'static Field), SoqlError> {
        self.object.field(name).ok_or_else(|| SoqlError {
            code: "INVALID_FIELD",
            message: located(
                self.source,
                at,
                &format!(
                    "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                    self.object.name()
                ),
            ),
        })
    }

    fn resolve_select(&self, names: &[(String, usize)]) -> Result<Vec<usize>, SoqlError> {
        let mut fields = Vec::with_capacity(names.len());
        for (name, at) in names {
            let (index, field) = self.field(name, *at)?;
            if fields.contains(&index) {
                return Err(malformed(
                    self.source,
                    *at,
                    &format!("duplicate field selected: {}", field.name),
                ));
            }
            fields.push(index);
        }
        Ok(fields)
    }

    fn count(&mut self) -> Result<usize, SoqlError> {
        match self.peek() {
            Tok::Number(n) if n.fract() == 0.0 && *n >= 0.0 && *n < 1e12 => {
                let n = *n as usize;
                self.pos += 1;
                Ok(n)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn order_list(&mut self) -> Result<Vec<OrderKey>, SoqlError> {
        let mut keys = Vec::new();
        loop {
            let (name, at) = self.word()?;
            let (field, def) = self.field(&name, at)?;
            if !def.sortable() {
                return Err(SoqlError {
                    code: "INVALID_FIELD",
                    message: located(
                        self.source,
                        at,
                        &format!("field '{}' can not be sorted in a query call", def.name),
                    ),
                });
            }
            let descending = if self.eat_keyword("DESC") {
                true
            } else {
                self.eat_keyword("ASC");
                false
            };
            let nulls_last = if self.eat_keyword("NULLS") {
                if self.eat_keyword("LAST") {
                    true
                } else {
                    self.expect_keyword("FIRST")?;
                    false
                }
            } else {
                descending
            };
            keys.push(OrderKey {
                field,
                descending,
                nulls_last,
            });
            if *self.peek() != Tok::Comma {
                return Ok(keys);
            }
            self.pos += 1;
        }
    }

    /// `unary (AND unary)*` or `unary (OR unary)*`; mixing needs parentheses.
    fn expression(&mut self) -> Result<Expr, SoqlError> {
        let first = self.unary()?;
        let mut items = vec![first];
        let mut conjunction: Option<bool> = None;
        loop {
            let is_and = if self.is_keyword("AND") {
                true
            } else if self.is_keyword("OR") {
                false
            } else {
                break;
            };
            if conjunction.is_some_and(|c| c != is_and) {
                return Err(self.unexpected());
            }
            conjunction = Some(is_and);
            self.pos += 1;
            items.push(self.unary()?);
        }
        Ok(match (conjunction, items.len()) {
            (_, 1) => items.remove(0),
            (Some(false), _) => Expr::Or(items),
            _ => Expr::And(items),
        })
    }

    fn unary(&mut self) -> Result<Expr, SoqlError> {
        if self.eat_keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if *self.peek() == Tok::Open {
            self.pos += 1;
            let inner = self.expression()?;
            self.expect(&Tok::Close)?;
            return Ok(inner);
        }
        self.condition()
    }

    fn condition(&mut self) -> Result<Expr, SoqlError> {
        let (name, at) = self.word()?;
        let (field, def) = self.field(&name, at)?;
        if !def.filterable() {
            return Err(SoqlError {
                code: "INVALID_FIELD",
                message: located(
                    self.source,
                    at,
                    &format!("field '{}' can not be filtered in query call", def.name),
                ),
            });
        }
        if self.eat_keyword("LIKE") {
            let at = self.at();
            return match self.next() {
                (Tok::Str(pattern), _) if def.kind.is_text() || def.kind == FieldType::Id => {
                    Ok(Expr::Like(field, Pattern::compile(&pattern)))
                }
                _ => Err(SoqlError {
                    code: "INVALID_FIELD",
                    message: located(
                        self.source,
                        at,
                        &format!(
                            "invalid operator on {} field: LIKE needs a quoted text field",
                            def.name
                        ),
                    ),
                }),
            };
        }
        let negated = self.eat_keyword("NOT");
        if negated || self.is_keyword("IN") {
            self.expect_keyword("IN")?;
            self.expect(&Tok::Open)?;
            let mut values = vec![self.literal(def)?];
            while *self.peek() == Tok::Comma {
                self.pos += 1;
                values.push(self.literal(def)?);
            }
            self.expect(&Tok::Close)?;
            return Ok(Expr::In(field, values, negated));
        }
        let op = match self.peek() {
            Tok::Op(op) => *op,
            _ => return Err(self.unexpected()),
        };
        self.pos += 1;
        Ok(Expr::Compare(field, op, self.literal(def)?))
    }

    /// A literal for `field`, converted to the field's representation.
    fn literal(&mut self, field: &Field) -> Result<Literal, SoqlError> {
        let (token, at) = self.next();
        let wrong = |quoted: bool| SoqlError {
            code: "INVALID_FIELD",
            message: located(
                self.source,
                at,
                &format!(
                    "value of filter criterion for field '{}' must be of type {}{}",
                    field.name,
                    field.kind.soql_name(),
                    if quoted {
                        " and should not be enclosed in quotes"
                    } else {
                        ""
                    }
                ),
            ),
        };
        let quoted_type =
            matches!(field.kind, FieldType::Id | FieldType::Reference) || field.kind.is_text();
        match token {
            Tok::Word(w) if w.eq_ignore_ascii_case("null") => Ok(Literal::Null),
            Tok::Word(w) if w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false") => {
                if field.kind == FieldType::Boolean {
                    Ok(Literal::Bool(w.eq_ignore_ascii_case("true")))
                } else {
                    Err(wrong(false))
                }
            }
            Tok::Str(text) if quoted_type => {
                if matches!(field.kind, FieldType::Id | FieldType::Reference) {
                    return match normalize_id(&text) {
                        Some(id) => Ok(Literal::Text(id)),
                        None if text.is_empty() => Ok(Literal::Null),
                        None => Err(SoqlError {
                            code: "INVALID_QUERY_FILTER_OPERATOR",
                            message: located(self.source, at, &format!("invalid ID field: {text}")),
                        }),
                    };
                }
                Ok(Literal::Text(text))
            }
            Tok::Str(_) => Err(wrong(true)),
            Tok::Number(n) if matches!(field.kind, FieldType::Int | FieldType::Double) => {
                Ok(Literal::Number(n))
            }
            Tok::Date(date) if field.kind == FieldType::Date => Ok(Literal::Text(date)),
            Tok::DateTime(ms) if field.kind == FieldType::DateTime => Ok(Literal::Time(ms)),
            Tok::Number(_) | Tok::Date(_) | Tok::DateTime(_) => Err(wrong(false)),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }
}

/// A record's value of one field, borrowed, for comparisons.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Cell<'a> {
    Null,
    Text(&'a str),
    Number(f64),
    Bool(bool),
    Time(i64),
}

/// The value of field `index` of `object` on `rec`.
pub(crate) fn cell<'a>(object: SfObject, rec: &'a Rec, index: usize) -> Cell<'a> {
    let Some(field) = object.fields().get(index) else {
        return Cell::Null;
    };
    match field.source {
        Source::Id => Cell::Text(&rec.id),
        Source::Created => Cell::Time(rec.created_ms),
        Source::Modified => Cell::Time(rec.modified_ms),
        Source::Deleted => Cell::Bool(rec.deleted),
        Source::Stored => match rec.values.get(index) {
            // Stored date-times (Knowledge's) are epoch milliseconds.
            Some(serde_json::Value::Number(n)) if field.kind == FieldType::DateTime => {
                n.as_i64().map_or(Cell::Null, Cell::Time)
            }
            Some(serde_json::Value::String(s)) => Cell::Text(s),
            Some(serde_json::Value::Number(n)) => n.as_f64().map_or(Cell::Null, Cell::Number),
            Some(serde_json::Value::Bool(b)) => Cell::Bool(*b),
            _ => Cell::Null,
        },
    }
}

/// Case-insensitive text order without allocating.
fn text_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.bytes()
            .map(|c| c.to_ascii_lowercase())
            .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
    } else {
        a.chars()
            .flat_map(char::to_lowercase)
            .cmp(b.chars().flat_map(char::to_lowercase))
    }
}

/// How a non-null cell compares with a non-null literal (`None`: incomparable).
fn compare(cell: Cell<'_>, literal: &Literal, exact_text: bool) -> Option<Ordering> {
    match (cell, literal) {
        (Cell::Text(a), Literal::Text(b)) if exact_text => Some(a.cmp(b)),
        (Cell::Text(a), Literal::Text(b)) => Some(text_cmp(a, b)),
        (Cell::Number(a), Literal::Number(b)) => a.partial_cmp(b),
        (Cell::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        (Cell::Time(a), Literal::Time(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// One element of a `LIKE` pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// `%`: any run of characters.
    Any,
    /// `_`: one character.
    One,
    /// A literal character, lower-cased.
    Char(char),
}

/// A compiled SQL `LIKE` pattern: `%` and `_` wildcards, `\%` and `\_` literal,
/// case-insensitive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pattern(Vec<Part>);

fn lower(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

impl Pattern {
    pub(crate) fn compile(text: &str) -> Self {
        let mut parts = Vec::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            parts.push(match c {
                '%' => Part::Any,
                '_' => Part::One,
                '\\' => Part::Char(lower(chars.next().unwrap_or('\\'))),
                c => Part::Char(lower(c)),
            });
        }
        Self(parts)
    }

    /// Whether `value` matches (without allocating for ASCII values).
    pub(crate) fn matches(&self, value: &str) -> bool {
        if value.is_ascii() {
            let bytes = value.as_bytes();
            self.matches_with(bytes.len(), |i| char::from(bytes[i].to_ascii_lowercase()))
        } else {
            let chars: Vec<char> = value.chars().map(lower).collect();
            self.matches_with(chars.len(), |i| chars[i])
        }
    }

    /// Iterative wildcard match with backtracking to the last `%`.
    fn matches_with(&self, len: usize, at: impl Fn(usize) -> char) -> bool {
        let parts = &self.0;
        let (mut v, mut p) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while v < len {
            match parts.get(p) {
                Some(Part::Any) => {
                    star = Some((p, v));
                    p += 1;
                }
                Some(Part::One) => {
                    v += 1;
                    p += 1;
                }
                Some(Part::Char(c)) if *c == at(v) => {
                    v += 1;
                    p += 1;
                }
                _ => match star {
                    Some((sp, sv)) => {
                        p = sp + 1;
                        v = sv + 1;
                        star = Some((sp, sv + 1));
                    }
                    None => return false,
                },
            }
        }
        parts[p..].iter().all(|part| *part == Part::Any)
    }
}

impl Expr {
    /// Whether `rec` (of `object`) satisfies the expression.
    pub(crate) fn matches(&self, object: SfObject, rec: &Rec) -> bool {
        match self {
            Expr::And(items) => items.iter().all(|e| e.matches(object, rec)),
            Expr::Or(items) => items.iter().any(|e| e.matches(object, rec)),
            Expr::Not(inner) => !inner.matches(object, rec),
            Expr::Compare(field, op, literal) => {
                let value = cell(object, rec, *field);
                let exact = is_id(object, *field);
                match (value, literal) {
                    (Cell::Null, Literal::Null) => *op == Op::Eq,
                    (Cell::Null, _) => *op == Op::Ne,
                    (_, Literal::Null) => *op == Op::Ne,
                    (value, literal) => match compare(value, literal, exact) {
                        None => *op == Op::Ne,
                        Some(order) => match op {
                            Op::Eq => order == Ordering::Equal,
                            Op::Ne => order != Ordering::Equal,
                            Op::Lt => order == Ordering::Less,
                            Op::Le => order != Ordering::Greater,
                            Op::Gt => order == Ordering::Greater,
                            Op::Ge => order != Ordering::Less,
                        },
                    },
                }
            }
            Expr::In(field, literals, negated) => {
                let value = cell(object, rec, *field);
                let exact = is_id(object, *field);
                let found = literals.iter().any(|literal| match (value, literal) {
                    (Cell::Null, Literal::Null) => true,
                    (Cell::Null, _) | (_, Literal::Null) => false,
                    (value, literal) => compare(value, literal, exact) == Some(Ordering::Equal),
                });
                found != *negated
            }
            Expr::Like(field, pattern) => match cell(object, rec, *field) {
                Cell::Text(value) => pattern.matches(value),
                _ => false,
            },
        }
    }
}

fn is_id(object: SfObject, field: usize) -> bool {
    object
        .fields()
        .get(field)
        .is_some_and(|f| matches!(f.kind, FieldType::Id | FieldType::Reference))
}

fn cell_cmp(a: Cell<'_>, b: Cell<'_>, exact_text: bool) -> Ordering {
    match (a, b) {
        (Cell::Text(x), Cell::Text(y)) if exact_text => x.cmp(y),
        (Cell::Text(x), Cell::Text(y)) => text_cmp(x, y),
        (Cell::Number(x), Cell::Number(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Cell::Bool(x), Cell::Bool(y)) => x.cmp(&y),
        (Cell::Time(x), Cell::Time(y)) => x.cmp(&y),
        _ => Ordering::Equal,
    }
}

/// The order of two records under `keys`, ties broken by `Id`.
pub(crate) fn order(object: SfObject, keys: &[OrderKey], a: &Rec, b: &Rec) -> Ordering {
    for key in keys {
        let (x, y) = (cell(object, a, key.field), cell(object, b, key.field));
        let order = match (x, y) {
            (Cell::Null, Cell::Null) => Ordering::Equal,
            (Cell::Null, _) => {
                if key.nulls_last {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (_, Cell::Null) => {
                if key.nulls_last {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (x, y) => {
                let order = cell_cmp(x, y, is_id(object, key.field));
                if key.descending {
                    order.reverse()
                } else {
                    order
                }
            }
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.id.cmp(&b.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(object: SfObject, name: &str) -> usize {
        object.field(name).map(|(i, _)| i).unwrap()
    }

    #[test]
    fn parses_the_incremental_query() {
        let q = parse(
            "select Id, lastname, SystemModstamp from contact where SystemModstamp > 2024-01-01T00:00:00.000+0000 order by SystemModstamp, Id limit 500",
        )
        .unwrap();
        let c = SfObject::Contact;
        assert_eq!(q.object, c);
        assert_eq!(
            q.fields,
            Some(vec![
                field(c, "Id"),
                field(c, "LastName"),
                field(c, "SystemModstamp")
            ])
        );
        assert_eq!(
            q.filter,
            Some(Expr::Compare(
                field(c, "SystemModstamp"),
                Op::Gt,
                Literal::Time(1_704_067_200_000)
            ))
        );
        assert_eq!(q.order.len(), 2);
        assert!(!q.order[0].descending && !q.order[0].nulls_last);
        assert_eq!(q.limit, Some(500));
    }

    #[test]
    fn parses_conditions() {
        let q = parse(
            "SELECT Id FROM Account WHERE (Industry IN ('Retail', 'Finance') OR NumberOfEmployees >= 100) AND Name LIKE 'Acme%' AND Website != null AND Industry NOT IN ('Other') AND NOT BillingCity = 'Paris\\'s'",
        )
        .unwrap();
        let Some(Expr::And(items)) = q.filter else {
            panic!("and")
        };
        assert_eq!(items.len(), 5);
        assert!(matches!(&items[0], Expr::Or(inner) if inner.len() == 2));
        assert!(matches!(&items[1], Expr::Like(_, p) if *p == Pattern::compile("acme%")));
        assert!(matches!(&items[2], Expr::Compare(_, Op::Ne, Literal::Null)));
        assert!(matches!(&items[3], Expr::In(_, _, true)));
        assert!(
            matches!(&items[4], Expr::Not(inner) if matches!(&**inner, Expr::Compare(_, Op::Eq, Literal::Text(t)) if t == "Paris's"))
        );
        let q =
            parse("SELECT COUNT() FROM Contact WHERE Birthdate < 1990-01-01 AND IsDeleted = false")
                .unwrap();
        assert_eq!(q.fields, None);
        let q = parse("SELECT Name FROM Account ORDER BY Name DESC NULLS FIRST, CreatedDate LIMIT 5 OFFSET 10")
            .unwrap();
        assert!(q.order[0].descending && !q.order[0].nulls_last);
        assert_eq!(q.offset, 10);
        assert!(parse("SELECT Id FROM Contact WHERE CreatedDate > 2024-01-01T00:00:00Z").is_ok());
        assert!(parse("SELECT Id FROM Contact WHERE AccountId = '001Dn0000000001'").is_ok());
    }

    #[test]
    fn refuses_bad_queries() {
        let code = |q: &str| parse(q).map(|_| "").unwrap_or_else(|e| e.code);
        assert_eq!(code("SELECT Id FROM Contact WHERE"), "MALFORMED_QUERY");
        assert_eq!(code("SELECT FROM Contact"), "MALFORMED_QUERY");
        assert_eq!(code("SELECT Id, FROM Contact"), "MALFORMED_QUERY");
        assert_eq!(code("SELECT Id FROM Contact LIMIT x"), "MALFORMED_QUERY");
        assert_eq!(
            code("SELECT Id FROM Contact WHERE Email = 'unterminated"),
            "MALFORMED_QUERY"
        );
        assert_eq!(
            code("SELECT Id FROM Contact WHERE a = 1 AND b = 2 OR c = 3"),
            "INVALID_FIELD"
        );
        assert_eq!(
            code("SELECT Id FROM Contact WHERE Email = 'a' AND Phone = 'b' OR Title = 'c'"),
            "MALFORMED_QUERY"
        );
        assert_eq!(code("SELECT Id, Id FROM Contact"), "MALFORMED_QUERY");
        assert_eq!(code("SELECT Id FROM Contact trailing"), "MALFORMED_QUERY");
        assert_eq!(
            code("SELECT Id FROM Contact WHERE Email = :bind"),
            "MALFORMED_QUERY"
        );
        assert_eq!(code("SELECT Foo FROM Contact"), "INVALID_FIELD");
        assert_eq!(code("SELECT Id FROM Widget"), "INVALID_TYPE");
        assert_eq!(
            code("SELECT Id FROM Contact WHERE SystemModstamp > '2024-01-01T00:00:00Z'"),
            "INVALID_FIELD"
        );
        assert_eq!(
            code("SELECT Id FROM Contact WHERE Birthdate > 2024-01-01T00:00:00Z"),
            "INVALID_FIELD"
        );
        assert_eq!(
            code("SELECT Id FROM Account WHERE NumberOfEmployees > '5'"),
            "INVALID_FIELD"
        );
        assert_eq!(
            code("SELECT Id FROM Account WHERE Name = 5"),
            "INVALID_FIELD"
        );
        assert_eq!(
            code("SELECT Id FROM Account WHERE Description = 'x'"),
            "INVALID_FIELD"
        );
        assert_eq!(
            code("SELECT Id FROM Account WHERE Id = 'nope'"),
            "INVALID_QUERY_FILTER_OPERATOR"
        );
        let error = parse("SELECT Id FROM Contact WHERE Foo = 1").unwrap_err();
        assert!(
            error
                .message
                .contains("No such column 'Foo' on entity 'Contact'"),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("ERROR at Row:1:Column:30"),
            "{}",
            error.message
        );
    }

    #[test]
    fn like_patterns() {
        let like = |value: &str, pattern: &str| Pattern::compile(pattern).matches(value);
        assert!(like("Acme Corp", "acme%"));
        assert!(like("Acme Corp", "%CORP"));
        assert!(like("Acme", "Ac_e"));
        assert!(!like("Acme", "Ac_"));
        assert!(like("100%", "100\\%"));
        assert!(!like("1000", "100\\%"));
        assert!(like("abcabd", "%abd"));
        assert!(like("", "%"));
        assert!(like("Ärger GmbH", "ä%gmbh"));
    }
}
