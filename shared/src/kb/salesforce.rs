//! Salesforce Knowledge as a knowledge-base source (Knowledge Developer Guide, "Salesforce
//! Knowledge with SOQL"; Object Reference, `Knowledge__kav`): published article versions
//! through SOQL (`GET /services/data/v60.0/query?q=…`, then each `nextRecordsUrl`).
//!
//! - A document is an article in a language: `KnowledgeArticleId` + `Language` (version
//!   ids change with every publish, translations are versions of their own). Its body is
//!   the org's rich-text field, `Answer__c` unless the integration's `kb_source.body_field`
//!   names another (Knowledge has no standard body field).
//! - Queries on article versions must filter on one `PublishStatus`; rich-text fields can
//!   be neither filtered nor sorted; pages may be shorter than asked (long text), so
//!   paging follows `nextRecordsUrl` until `done`.
//! - **Full**: every `Online` version; the sweep removes what is no longer online.
//! - **Incremental**: `Online` versions with `LastPublishedDate` after the last run's
//!   newest, then `Archived` versions with `ArchivedDate` after it: those whose article
//!   has no `Online` version in that language any more are reported gone (publishing a
//!   new version archives the old one too, which is not a removal).
//! - The cursor: `{phase: online|archived, since, max, next}` — the window start, the
//!   newest publish/archive time seen (the next run's `since`), and the next page.

use std::collections::HashSet;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::document::Article;
use super::import::Mode;
use super::source::{Cursor, Gone, Http, Page, Source, SourceError, later, text, watermarked};

/// The article version object of Lightning Knowledge.
const OBJECT: &str = "Knowledge__kav";
/// The body field of the common FAQ record type.
pub const DEFAULT_BODY_FIELD: &str = "Answer__c";
/// Rows a page of archived versions asks for (one existence query a page).
const ARCHIVED_BATCH: u32 = 200;

/// Whether `f` is a custom field's API name (`Answer__c`).
pub fn is_custom_field(f: &str) -> bool {
    let Some(base) = f.strip_suffix("__c") else {
        return false;
    };
    (1..=40).contains(&base.len())
        && base.starts_with(|c: char| c.is_ascii_alphabetic())
        && base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A Salesforce org's Knowledge read through one connection.
pub struct Salesforce<'a> {
    http: Http<'a>,
    body_field: String,
}

impl<'a> Salesforce<'a> {
    /// Reads through `http`; the body is in `body_field` (a custom rich-text field).
    pub fn new(http: Http<'a>, body_field: Option<String>) -> Self {
        Self {
            http,
            body_field: body_field
                .filter(|f| is_custom_field(f))
                .unwrap_or_else(|| DEFAULT_BODY_FIELD.to_owned()),
        }
    }

    async fn query(
        &mut self,
        soql: Option<&str>,
        next: Option<&str>,
        batch: Option<u32>,
    ) -> Result<Value, SourceError> {
        let options = batch.map(|b| format!("batchSize={b}"));
        let headers: Vec<(&'static str, &str)> = options
            .as_deref()
            .map(|o| vec![("Sforce-Query-Options", o)])
            .unwrap_or_default();
        let answer = match (next, soql) {
            (Some(path), _) if path.starts_with("/services/data/") => {
                self.http.get_on_origin(path, &headers).await?
            }
            (Some(_), _) => {
                return Err(SourceError::Malformed(
                    "a nextRecordsUrl outside /services/data/".into(),
                ));
            }
            (None, Some(q)) => {
                let q: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
                self.http.get(&format!("/query?q={q}"), &headers).await?
            }
            (None, None) => return Err(SourceError::Malformed("nothing to query".into())),
        };
        if !answer.body["records"].is_array() {
            return Err(SourceError::Malformed("no records list".into()));
        }
        Ok(answer.body)
    }

    /// The `Online` (article, language) pairs among `ids`.
    async fn online(&mut self, ids: &[String]) -> Result<HashSet<(String, String)>, SourceError> {
        let mut out = HashSet::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let list = ids
            .iter()
            .map(|i| format!("'{}'", soql_escape(i)))
            .collect::<Vec<_>>()
            .join(",");
        let soql = format!(
            "SELECT KnowledgeArticleId, Language FROM {OBJECT} WHERE PublishStatus = 'Online' AND KnowledgeArticleId IN ({list})"
        );
        let mut next: Option<String> = None;
        let mut first = true;
        while first || next.is_some() {
            let body = if first {
                self.query(Some(&soql), None, None).await?
            } else {
                self.query(None, next.as_deref(), None).await?
            };
            first = false;
            for r in body["records"].as_array().into_iter().flatten() {
                if let (Some(a), Some(l)) = (text(&r["KnowledgeArticleId"]), text(&r["Language"])) {
                    out.insert((a, l));
                }
            }
            next = more(&body);
        }
        Ok(out)
    }
}

/// The next page's path, unless the query is done.
fn more(body: &Value) -> Option<String> {
    if body["done"].as_bool() == Some(false) {
        text(&body["nextRecordsUrl"])
    } else {
        None
    }
}

/// A string literal's content for SOQL (`\` and `'` escaped).
fn soql_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

/// A Salesforce date-time (`2024-05-01T10:00:00.000+0000`) or an RFC 3339 one.
pub fn sf_time(s: &str) -> Option<OffsetDateTime> {
    let fixed = match s.strip_suffix("+0000") {
        Some(head) => format!("{head}Z"),
        None => s.to_owned(),
    };
    OffsetDateTime::parse(&fixed, &Rfc3339).ok()
}

/// A date-time literal for SOQL.
fn literal(t: OffsetDateTime) -> Option<String> {
    t.format(&Rfc3339).ok()
}

impl Source for Salesforce<'_> {
    fn provider(&self) -> &'static str {
        "salesforce"
    }

    fn lists_everything(&self) -> bool {
        false
    }

    fn start(mode: Mode, since: &Cursor) -> Cursor {
        watermarked(mode, since, json!({"phase": "online", "next": null}))
    }

    async fn page(&mut self, cursor: &Cursor) -> Result<Page, SourceError> {
        let since = cursor["since"].as_str().and_then(sf_time);
        let mut max = cursor["max"].as_str().and_then(sf_time);
        let next = cursor["next"].as_str();
        let archived = cursor["phase"] == "archived";
        let window = |field: &str| {
            since
                .and_then(literal)
                .map(|t| format!(" AND {field} > {t}"))
                .unwrap_or_default()
        };
        let mut page = Page::default();
        let body = if archived {
            let soql = format!(
                "SELECT KnowledgeArticleId, Language, ArchivedDate FROM {OBJECT} WHERE PublishStatus = 'Archived'{} ORDER BY ArchivedDate, Id",
                window("ArchivedDate")
            );
            let body = self
                .query(
                    Some(soql.as_str()).filter(|_| next.is_none()),
                    next,
                    Some(ARCHIVED_BATCH),
                )
                .await?;
            let records = body["records"].as_array().cloned().unwrap_or_default();
            let ids: Vec<String> = records
                .iter()
                .filter_map(|r| text(&r["KnowledgeArticleId"]))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let online = self.online(&ids).await?;
            let mut seen = HashSet::new();
            for r in &records {
                max = later(max, r["ArchivedDate"].as_str().and_then(sf_time));
                let (Some(a), Some(l)) = (text(&r["KnowledgeArticleId"]), text(&r["Language"]))
                else {
                    continue;
                };
                let key = (a, l);
                if !online.contains(&key) && seen.insert(key.clone()) {
                    page.gone.push(Gone {
                        external_id: key.0,
                        locale: Some(key.1),
                    });
                }
            }
            body
        } else {
            let soql = format!(
                "SELECT Id, KnowledgeArticleId, ArticleNumber, Title, UrlName, Summary, Language, LastPublishedDate, {} FROM {OBJECT} WHERE PublishStatus = 'Online'{} ORDER BY LastPublishedDate, Id",
                self.body_field,
                window("LastPublishedDate")
            );
            let body = self
                .query(Some(soql.as_str()).filter(|_| next.is_none()), next, None)
                .await?;
            for r in body["records"].as_array().into_iter().flatten() {
                let published = r["LastPublishedDate"].as_str().and_then(sf_time);
                max = later(max, published);
                let Some(id) = text(&r["KnowledgeArticleId"]) else {
                    continue;
                };
                page.articles.push(Article {
                    external_id: id,
                    locale: text(&r["Language"]),
                    title: text(&r["Title"]).unwrap_or_default(),
                    html: text(&r[self.body_field.as_str()]).unwrap_or_default(),
                    url: None,
                    labels: Vec::new(),
                    section_path: Vec::new(),
                    published: true,
                    updated_at: published,
                });
            }
            body
        };
        let max = max.and_then(literal).map_or(Value::Null, Value::from);
        let since_v = cursor["since"].clone();
        match more(&body) {
            Some(n) => {
                page.next =
                    json!({"phase": cursor["phase"], "since": since_v, "max": max, "next": n});
            }
            // Incremental runs go on to what was archived in the same window.
            None if !archived && !since_v.is_null() => {
                page.next =
                    json!({"phase": "archived", "since": since_v, "max": max, "next": null});
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
    fn salesforce_times_and_field_names() {
        let t = sf_time("2024-05-01T10:00:00.000+0000").unwrap();
        assert_eq!(t, sf_time("2024-05-01T10:00:00Z").unwrap());
        assert!(sf_time("yesterday").is_none());
        assert!(is_custom_field("Answer__c") && is_custom_field("Body_Text__c"));
        for bad in ["Answer", "__c", "1x__c", "x y__c", "Answer_c", "é__c"] {
            assert!(!is_custom_field(bad), "{bad}");
        }
        assert_eq!(soql_escape("o'brien\\"), "o\\'brien\\\\");
    }
}
