//! A Custom API as a knowledge-base source: the tenant describes its list request (a
//! path on the connection's base URL, fixed query parameters), how it pages (page
//! number, offset, an opaque cursor from the answer, or RFC 8288 `Link: rel="next"`),
//! where the answer holds its items, and where each item holds the document's fields —
//! id, title, body (HTML), URL, updated time, locale, published — as JSON Pointers (RFC
//! 6901: `/attributes/headline`, `~1` for a `/` in a key). SAP and TechnologyOne
//! knowledge bases come in this way too.
//!
//! The description is checked when the integration is saved ([`CustomSource::problems`]),
//! so a bad pointer or paging style is a 400 with the field's path, not a failed run.
//! With `updated_since_param`, incremental runs ask only for what changed since the
//! newest `updated_at` the last run saw (and only full runs sweep); without it, every
//! run reads everything and sweeps what it did not see. Every page stays on the
//! connection's origin (a `Link` elsewhere is refused), and paging stops after
//! [`MAX_PAGES`] pages or at the first page that adds nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::document::Article;
use super::import::Mode;
use super::source::{Cursor, Http, Page, Source, SourceError, later, watermarked};

/// Pages read at most in one run.
pub const MAX_PAGES: u64 = 10_000;

/// How the list pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Paging {
    /// `?{page_param}=1&{size_param}=50`, then 2, 3… until a short page.
    Page {
        /// The page number's parameter.
        #[serde(default = "page_param")]
        page_param: String,
        /// The page size's parameter.
        #[serde(default = "size_param")]
        size_param: String,
        /// Items per page.
        #[serde(default = "default_size")]
        size: u32,
        /// The first page's number (0 or 1).
        #[serde(default = "one")]
        first_page: u32,
    },
    /// `?{offset_param}=0&{limit_param}=50`, then 50, 100… until a short page.
    Offset {
        /// The offset's parameter.
        #[serde(default = "offset_param")]
        offset_param: String,
        /// The limit's parameter.
        #[serde(default = "limit_param")]
        limit_param: String,
        /// Items per page.
        #[serde(default = "default_size")]
        limit: u32,
    },
    /// `?{cursor_param}={the previous answer's next_cursor}` until it is null or empty.
    Cursor {
        /// The cursor's parameter.
        #[serde(default = "cursor_param")]
        cursor_param: String,
        /// Where the answer holds the next cursor (a JSON Pointer).
        next_cursor: String,
        /// The page size's parameter, if the API takes one.
        #[serde(default)]
        size_param: Option<String>,
        /// Items per page (with `size_param`).
        #[serde(default = "default_size")]
        size: u32,
    },
    /// The answer's `Link: <…>; rel="next"` until there is none.
    Link {
        /// The page size's parameter, if the API takes one.
        #[serde(default)]
        size_param: Option<String>,
        /// Items per page (with `size_param`).
        #[serde(default = "default_size")]
        size: u32,
    },
}

fn page_param() -> String {
    "page".into()
}
fn size_param() -> String {
    "per_page".into()
}
fn offset_param() -> String {
    "offset".into()
}
fn limit_param() -> String {
    "limit".into()
}
fn cursor_param() -> String {
    "cursor".into()
}
fn default_size() -> u32 {
    50
}
fn one() -> u32 {
    1
}

/// Whether a document is published: the item's value at `pointer` equals `equals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedRule {
    /// Where the item holds its state.
    pub pointer: String,
    /// The value that means published.
    pub equals: Value,
}

/// Where each item holds the document's fields (JSON Pointers into the item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The item's id (a string or a number).
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its body (HTML; sanitized before it is stored).
    pub body: String,
    /// Where people read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When it last changed (RFC 3339, or seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Its locale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Its labels (an array of strings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    /// Whether it is published (default: every item is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<PublishedRule>,
}

/// A Custom API knowledge source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomSource {
    /// The list's path on the connection's base URL (`/kb/articles`).
    pub path: String,
    /// Query parameters sent with every page.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// How it pages.
    pub paging: Paging,
    /// Where the answer holds the items (a JSON Pointer; `""`: the answer is the list).
    pub items: String,
    /// Where each item holds the document's fields.
    pub mapping: Mapping,
    /// The parameter that asks for items changed since a time (RFC 3339), if the API
    /// has one: incremental runs then read only the changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_since_param: Option<String>,
}

/// One problem of a description: where (`kb_source.custom.mapping.title`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field's path under the source.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Whether `p` is a JSON Pointer (RFC 6901): empty, or `/`-separated tokens whose `~`
/// is always `~0` or `~1`.
pub fn is_pointer(p: &str) -> bool {
    if p.is_empty() {
        return true;
    }
    if !p.starts_with('/') || p.len() > 256 || p.chars().any(char::is_control) {
        return false;
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
    }
    true
}

fn is_param(p: &str) -> bool {
    (1..=64).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.[]".contains(&b))
}

impl CustomSource {
    /// What is wrong with the description (nothing: it can be used).
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut add = |field: &str, message: &str| {
            out.push(Problem {
                field: field.to_owned(),
                message: message.to_owned(),
            })
        };
        let path_ok = self.path.starts_with('/')
            && self.path.len() >= 2
            && !self.path.starts_with("//")
            && self.path.len() <= 500
            && !self.path.contains("..")
            && !self.path.contains(['?', '#', '\\'])
            && !self
                .path
                .chars()
                .any(|c| c.is_control() || c.is_whitespace());
        if !path_ok {
            add(
                "path",
                "a path on the connection's base URL: starts with /, at most 500 characters, no query (use query), no .., no spaces",
            );
        }
        if self.query.len() > 20 {
            add("query", "at most 20 parameters");
        }
        for (k, v) in &self.query {
            if !is_param(k) || v.len() > 500 || v.chars().any(char::is_control) {
                add(
                    &format!("query.{k}"),
                    "names of 1 to 64 letters, digits, _ - . [ ]; values up to 500 characters",
                );
            }
        }
        let pointer = "a JSON Pointer (RFC 6901): empty, or starting with /; ~ only as ~0 or ~1";
        let mut pointers: Vec<(&str, &str)> = vec![
            ("items", &self.items),
            ("mapping.id", &self.mapping.id),
            ("mapping.title", &self.mapping.title),
            ("mapping.body", &self.mapping.body),
        ];
        for (name, p) in [
            ("mapping.url", &self.mapping.url),
            ("mapping.updated_at", &self.mapping.updated_at),
            ("mapping.locale", &self.mapping.locale),
            ("mapping.labels", &self.mapping.labels),
        ] {
            if let Some(p) = p {
                pointers.push((name, p));
            }
        }
        if let Some(r) = &self.mapping.published {
            pointers.push(("mapping.published.pointer", &r.pointer));
        }
        for (name, p) in pointers {
            if !is_pointer(p) {
                add(name, pointer);
            }
        }
        for (name, p) in [
            ("mapping.id", &self.mapping.id),
            ("mapping.title", &self.mapping.title),
            ("mapping.body", &self.mapping.body),
        ] {
            if p.is_empty() {
                add(name, "an item's field, not the whole item");
            }
        }
        let size_ok = |s: u32| (1..=1000).contains(&s);
        let mut params: Vec<(&str, &str)> = Vec::new();
        match &self.paging {
            Paging::Page {
                page_param,
                size_param,
                size,
                first_page,
            } => {
                params.push(("paging.page_param", page_param));
                params.push(("paging.size_param", size_param));
                if !size_ok(*size) {
                    add("paging.size", "from 1 to 1000");
                }
                if *first_page > 1 {
                    add("paging.first_page", "0 or 1");
                }
            }
            Paging::Offset {
                offset_param,
                limit_param,
                limit,
            } => {
                params.push(("paging.offset_param", offset_param));
                params.push(("paging.limit_param", limit_param));
                if !size_ok(*limit) {
                    add("paging.limit", "from 1 to 1000");
                }
            }
            Paging::Cursor {
                cursor_param,
                next_cursor,
                size_param,
                size,
            } => {
                params.push(("paging.cursor_param", cursor_param));
                if let Some(s) = size_param {
                    params.push(("paging.size_param", s));
                }
                if !is_pointer(next_cursor) || next_cursor.is_empty() {
                    add("paging.next_cursor", pointer);
                }
                if !size_ok(*size) {
                    add("paging.size", "from 1 to 1000");
                }
            }
            Paging::Link { size_param, size } => {
                if let Some(s) = size_param {
                    params.push(("paging.size_param", s));
                }
                if !size_ok(*size) {
                    add("paging.size", "from 1 to 1000");
                }
            }
        }
        if let Some(p) = &self.updated_since_param {
            params.push(("updated_since_param", p));
        }
        for (name, p) in params {
            if !is_param(p) {
                add(name, "1 to 64 letters, digits, _ - . [ ]");
            }
        }
        out
    }
}

/// A Custom API read through one connection.
pub struct Custom<'a> {
    http: Http<'a>,
    spec: CustomSource,
}

impl<'a> Custom<'a> {
    /// Reads `spec`'s list through `http`.
    pub fn new(http: Http<'a>, spec: CustomSource) -> Self {
        Self { http, spec }
    }

    fn url(&self, paging: &[(String, String)], since: Option<&str>) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.spec.query {
            q.append_pair(k, v);
        }
        for (k, v) in paging {
            q.append_pair(k, v);
        }
        if let (Some(p), Some(s)) = (&self.spec.updated_since_param, since) {
            q.append_pair(p, s);
        }
        let q = q.finish();
        if q.is_empty() {
            self.spec.path.clone()
        } else {
            format!("{}?{q}", self.spec.path)
        }
    }

    fn article(&self, item: &Value) -> Option<Article> {
        let m = &self.spec.mapping;
        let at = |p: &Option<String>| p.as_deref().and_then(|p| item.pointer(p));
        let string = |v: Option<&Value>| match v? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let external_id = string(item.pointer(&m.id)).filter(|s| !s.is_empty())?;
        let updated_at = at(&m.updated_at).and_then(|v| match v {
            Value::String(s) => OffsetDateTime::parse(s, &Rfc3339).ok(),
            Value::Number(n) => n
                .as_i64()
                .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()),
            _ => None,
        });
        Some(Article {
            external_id,
            locale: string(at(&m.locale)),
            title: string(item.pointer(&m.title)).unwrap_or_default(),
            html: string(item.pointer(&m.body)).unwrap_or_default(),
            url: string(at(&m.url)),
            labels: at(&m.labels)
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            section_path: Vec::new(),
            published: m
                .published
                .as_ref()
                .is_none_or(|r| item.pointer(&r.pointer) == Some(&r.equals)),
            updated_at,
        })
    }
}

fn rfc3339(t: OffsetDateTime) -> Option<String> {
    t.format(&Rfc3339).ok()
}

impl Source for Custom<'_> {
    fn provider(&self) -> &'static str {
        "custom_api"
    }

    fn lists_everything(&self) -> bool {
        self.spec.updated_since_param.is_none()
    }

    /// `{since, max, n, next}`: `since` is the changes-since time of this run (an
    /// incremental run's: the last run's newest `updated_at`), `max` the newest seen so
    /// far, `n` the pages read, `next` the page or offset number, cursor or link.
    fn start(mode: Mode, since: &Cursor) -> Cursor {
        watermarked(mode, since, json!({"n": 0, "next": null}))
    }

    async fn page(&mut self, cursor: &Cursor) -> Result<Page, SourceError> {
        let since = cursor["since"].as_str().map(str::to_owned);
        let n = cursor["n"].as_u64().unwrap_or(0);
        let next = &cursor["next"];
        let (paging, link): (Vec<(String, String)>, Option<String>) = match &self.spec.paging {
            Paging::Page {
                page_param,
                size_param,
                size,
                first_page,
            } => {
                let page = next.as_u64().unwrap_or(u64::from(*first_page));
                (
                    vec![
                        (page_param.clone(), page.to_string()),
                        (size_param.clone(), size.to_string()),
                    ],
                    None,
                )
            }
            Paging::Offset {
                offset_param,
                limit_param,
                limit,
            } => (
                vec![
                    (offset_param.clone(), next.as_u64().unwrap_or(0).to_string()),
                    (limit_param.clone(), limit.to_string()),
                ],
                None,
            ),
            Paging::Cursor {
                cursor_param,
                size_param,
                size,
                ..
            } => {
                let mut p = Vec::new();
                if let Some(c) = next.as_str() {
                    p.push((cursor_param.clone(), c.to_owned()));
                }
                if let Some(s) = size_param {
                    p.push((s.clone(), size.to_string()));
                }
                (p, None)
            }
            Paging::Link { size_param, size } => (
                size_param
                    .iter()
                    .map(|s| (s.clone(), size.to_string()))
                    .collect(),
                next.as_str().map(str::to_owned),
            ),
        };
        let answer = match &link {
            Some(url) => self.http.get_url(url, &[]).await?,
            None => {
                let url = self.url(&paging, since.as_deref());
                self.http.get(&url, &[]).await?
            }
        };
        let items = answer
            .body
            .pointer(&self.spec.items)
            .and_then(Value::as_array)
            .ok_or_else(|| {
                SourceError::Malformed(format!(
                    "no list of items at {:?} in the answer",
                    self.spec.items
                ))
            })?;
        let articles: Vec<Article> = items.iter().filter_map(|i| self.article(i)).collect();
        let mut max = cursor["max"]
            .as_str()
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
        for a in &articles {
            max = later(max, a.updated_at);
        }
        let count = items.len() as u64;
        let following: Option<Value> = match &self.spec.paging {
            Paging::Page {
                size, first_page, ..
            } => (count >= u64::from(*size))
                .then(|| json!(next.as_u64().unwrap_or(u64::from(*first_page)) + 1)),
            Paging::Offset { limit, .. } => {
                (count >= u64::from(*limit)).then(|| json!(next.as_u64().unwrap_or(0) + count))
            }
            Paging::Cursor { next_cursor, .. } => answer
                .body
                .pointer(next_cursor)
                .and_then(|c| match c {
                    Value::String(s) if !s.is_empty() => Some(json!(s)),
                    Value::Number(n) => Some(json!(n.to_string())),
                    _ => None,
                })
                .filter(|_| count > 0),
            Paging::Link { .. } => answer.next_link.map(Value::from),
        };
        let last = following.is_none() || n + 1 >= MAX_PAGES;
        if n + 1 >= MAX_PAGES && following.is_some() {
            tracing::warn!(
                pages = MAX_PAGES,
                "a Custom API list was cut at the page limit"
            );
        }
        let max = max.and_then(rfc3339).map_or(Value::Null, Value::from);
        Ok(Page {
            articles,
            gone: Vec::new(),
            next: json!({"since": since, "max": max, "n": n + 1, "next": following}),
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> Result<CustomSource, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn pointers_are_rfc_6901() {
        for ok in ["", "/a", "/a/0", "/a~1b", "/~0", "/attributes/headline"] {
            assert!(is_pointer(ok), "{ok}");
        }
        for bad in ["a", "/a~", "/a~2", "a/b", "/x\n"] {
            assert!(!is_pointer(bad), "{bad}");
        }
    }

    #[test]
    fn a_description_is_checked_field_by_field() {
        let good = spec(json!({
            "path": "/kb/cursor",
            "paging": {"style": "cursor", "next_cursor": "/next_cursor", "size_param": "limit"},
            "items": "/articles",
            "mapping": {"id": "/id", "title": "/attributes/headline", "body": "/attributes/html",
                "published": {"pointer": "/attributes/state", "equals": "published"}},
            "updated_since_param": "updated_since"
        }))
        .unwrap();
        assert!(good.problems().is_empty(), "{:?}", good.problems());

        let bad = spec(json!({
            "path": "https://elsewhere.test/kb?x=1",
            "query": {"bad name": "v"},
            "paging": {"style": "page", "size": 5000, "first_page": 3},
            "items": "articles",
            "mapping": {"id": "", "title": "/t~", "body": "/b"}
        }))
        .unwrap();
        let fields: Vec<String> = bad.problems().into_iter().map(|p| p.field).collect();
        for f in [
            "path",
            "query.bad name",
            "paging.size",
            "paging.first_page",
            "items",
            "mapping.id",
            "mapping.title",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
        }
        // Unknown fields and styles are refused by the parse.
        assert!(spec(json!({"path": "/a", "paging": {"style": "pages"}, "items": "", "mapping": {"id": "/i", "title": "/t", "body": "/b"}})).is_err());
        assert!(spec(json!({"path": "/a", "paging": {"style": "link", "extra": 1}, "items": "", "mapping": {"id": "/i", "title": "/t", "body": "/b"}})).is_err());
    }
}
