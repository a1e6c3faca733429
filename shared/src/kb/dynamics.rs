//! Dynamics 365 knowledge articles as a knowledge-base source (Dataverse Web API:
//! `knowledgearticle` EntityType; "Query data using the Web API"; "Page results by using
//! OData").
//!
//! - Dynamics keeps a **root** record per article and one record per version per
//!   language; a document is an article in a language: `_rootarticleid_value` + the
//!   language's code (`en-US`), so a newly published version replaces the document
//!   rather than adding one. Its body is `content` (HTML); `keywords` become labels.
//! - `GET /knowledgearticles?$select=…&$expand=languagelocaleid($select=code)&$filter=
//!   isrootarticle eq false and statecode eq 3[ and modifiedon ge {since}]&$orderby=modifiedon
//!   asc,knowledgearticleid asc` with `Prefer: odata.maxpagesize=500`, then each
//!   `@odata.nextLink` (sending `Prefer` again). `modifiedon` has whole seconds, so the
//!   window starts at (`ge`) the last run's newest time: what is read twice is skipped by
//!   its hash.
//! - **Incremental** runs then read the versions archived or expired (statecode 5 or 4)
//!   in the same window: those whose article has no published version in that language
//!   any more are reported gone (publishing a new version archives the old one, which is
//!   not a removal). A hard delete leaves no trace: only a full run (which sweeps)
//!   notices it.

use std::collections::HashSet;

use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use super::document::Article;
use super::import::Mode;
use super::source::{
    Cursor, Gone, Http, Page, Source, SourceError, later, text, time_of, watermarked,
};

/// Rows a page asks for.
const PAGE_SIZE: &str = "odata.maxpagesize=500";
/// Roots checked for a published version per query.
const ROOTS_PER_CHECK: usize = 40;

/// A Dynamics 365 environment's knowledge articles read through one connection.
pub struct Dynamics<'a> {
    http: Http<'a>,
}

impl<'a> Dynamics<'a> {
    /// Reads through `http`.
    pub fn new(http: Http<'a>) -> Self {
        Self { http }
    }

    async fn list(
        &mut self,
        first: Option<&str>,
        next: Option<&str>,
    ) -> Result<Value, SourceError> {
        let headers = [("Prefer", PAGE_SIZE)];
        let answer = match (next, first) {
            (Some(url), _) => self.http.get_url(url, &headers).await?,
            (None, Some(path)) => self.http.get(path, &headers).await?,
            (None, None) => return Err(SourceError::Malformed("nothing to list".into())),
        };
        if !answer.body["value"].is_array() {
            return Err(SourceError::Malformed("no value list".into()));
        }
        Ok(answer.body)
    }

    /// The (root, language code) pairs among `roots` that have a published version.
    async fn published(
        &mut self,
        roots: &[String],
    ) -> Result<HashSet<(String, String)>, SourceError> {
        let mut out = HashSet::new();
        for chunk in roots.chunks(ROOTS_PER_CHECK) {
            let any = chunk
                .iter()
                .map(|r| format!("_rootarticleid_value eq {r}"))
                .collect::<Vec<_>>()
                .join(" or ");
            let filter = format!("isrootarticle eq false and statecode eq 3 and ({any})");
            let path = format!(
                "/knowledgearticles?$select=knowledgearticleid,_rootarticleid_value&$expand=languagelocaleid($select=code)&$filter={}",
                encode(&filter)
            );
            let mut next: Option<String> = None;
            let mut first = true;
            while first || next.is_some() {
                let body = if first {
                    self.list(Some(&path), None).await?
                } else {
                    self.list(None, next.as_deref()).await?
                };
                first = false;
                for r in body["value"].as_array().into_iter().flatten() {
                    if let (Some(root), Some(code)) = (
                        text(&r["_rootarticleid_value"]),
                        text(&r["languagelocaleid"]["code"]),
                    ) {
                        out.insert((root, code));
                    }
                }
                next = text(&body["@odata.nextLink"]);
            }
        }
        Ok(out)
    }
}

/// Percent-encodes a query option's value (spaces as `%20`: `+` is a form's space, not
/// every server's).
fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Whether `s` is a GUID (what a lookup literal must be).
fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

impl Source for Dynamics<'_> {
    fn provider(&self) -> &'static str {
        "dynamics365"
    }

    fn lists_everything(&self) -> bool {
        false
    }

    fn start(mode: Mode, since: &Cursor) -> Cursor {
        watermarked(mode, since, json!({"phase": "published", "next": null}))
    }

    async fn page(&mut self, cursor: &Cursor) -> Result<Page, SourceError> {
        let since = time_of(&cursor["since"]);
        let mut max = time_of(&cursor["max"]);
        let next = cursor["next"].as_str();
        let retired = cursor["phase"] == "retired";
        let window = since
            .and_then(|t| t.format(&Rfc3339).ok())
            .map(|t| format!(" and modifiedon ge {t}"))
            .unwrap_or_default();
        let states = if retired {
            "(statecode eq 5 or statecode eq 4)"
        } else {
            "statecode eq 3"
        };
        let filter = format!("isrootarticle eq false and {states}{window}");
        let select = if retired {
            "knowledgearticleid,_rootarticleid_value,modifiedon"
        } else {
            "knowledgearticleid,_rootarticleid_value,title,content,keywords,modifiedon"
        };
        let path = format!(
            "/knowledgearticles?$select={select}&$expand=languagelocaleid($select=code)&$filter={}&$orderby={}",
            encode(&filter),
            encode("modifiedon asc,knowledgearticleid asc")
        );
        let body = self
            .list(Some(path.as_str()).filter(|_| next.is_none()), next)
            .await?;
        let records = body["value"].as_array().cloned().unwrap_or_default();
        let mut page = Page::default();
        if retired {
            let roots: Vec<String> = records
                .iter()
                .filter_map(|r| text(&r["_rootarticleid_value"]))
                .filter(|r| is_guid(r))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let published = self.published(&roots).await?;
            let mut seen = HashSet::new();
            for r in &records {
                max = later(max, time_of(&r["modifiedon"]));
                let (Some(root), Some(code)) = (
                    text(&r["_rootarticleid_value"]),
                    text(&r["languagelocaleid"]["code"]),
                ) else {
                    continue;
                };
                let key = (root, code);
                if !published.contains(&key) && seen.insert(key.clone()) {
                    page.gone.push(Gone {
                        external_id: key.0,
                        locale: Some(key.1),
                    });
                }
            }
        } else {
            for r in &records {
                let modified = time_of(&r["modifiedon"]);
                max = later(max, modified);
                let Some(root) =
                    text(&r["_rootarticleid_value"]).or_else(|| text(&r["knowledgearticleid"]))
                else {
                    continue;
                };
                page.articles.push(Article {
                    external_id: root,
                    locale: text(&r["languagelocaleid"]["code"]),
                    title: text(&r["title"]).unwrap_or_default(),
                    html: text(&r["content"]).unwrap_or_default(),
                    url: None,
                    labels: text(&r["keywords"])
                        .map(|k| {
                            k.split([',', ';'])
                                .map(str::trim)
                                .filter(|k| !k.is_empty())
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default(),
                    section_path: Vec::new(),
                    published: true,
                    updated_at: modified,
                });
            }
        }
        let max = max
            .and_then(|t| t.format(&Rfc3339).ok())
            .map_or(Value::Null, Value::from);
        let since_v = cursor["since"].clone();
        match text(&body["@odata.nextLink"]) {
            Some(n) => {
                page.next =
                    json!({"phase": cursor["phase"], "since": since_v, "max": max, "next": n});
            }
            None if !retired && !since_v.is_null() => {
                page.next = json!({"phase": "retired", "since": since_v, "max": max, "next": null});
            }
            None => {
                page.next = json!({"phase": "done", "since": since_v, "max": max, "next": null});
                page.last = true;
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_and_encoding() {
        assert!(is_guid("6f9619ff-8b86-d011-b42d-00c04fc964ff"));
        assert!(!is_guid("6f9619ff-8b86-d011-b42d-00c04fc964f"));
        assert!(!is_guid("6f9619ff 8b86-d011-b42d-00c04fc964ff"));
        assert!(!is_guid("x) or (statecode eq 0"));
        assert_eq!(encode("a eq 3 and b+c"), "a%20eq%203%20and%20b%2Bc");
    }
}
