//! Zendesk Help Center as a knowledge-base source (developer.zendesk.com, "Help Center
//! API": Articles, Sections, Categories; "Understanding incremental article exports").
//!
//! - Articles come from the incremental export, `GET
//!   /api/v2/help_center/incremental/articles?start_time={epoch s}&include=translations`:
//!   every article changed **after** `start_time`, oldest first, up to 1,000 a page (a
//!   page never splits a second), `end_time` the last one's time and `next_page` null on
//!   the last page. The next export starts at the previous `end_time`: nothing is missed
//!   or repeated. Each translation is a document of its own (its locale, title, body,
//!   draft state and URL); drafts come through (agents see them) and are stored as
//!   unpublished.
//! - The export has no deletion records: an archived article is simply no longer
//!   listed, so only a full import (from `start_time=0`) can notice it — what it does
//!   not see again is deleted (see [`super::import`]).
//! - Section paths (category → section) come from `GET /api/v2/help_center/categories`
//!   and `…/sections` (offset pages of 100), read once per import run.
//! - Auth is the connection's (API token or OAuth with `hc:read`), through the token
//!   lifecycle (a 401 refreshes once). Every request takes a slot of the connection's
//!   shared rate budget (Zendesk's requests per minute, with sync and dispatch); a 429
//!   holds the whole budget off for its `Retry-After`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::document::Article;
use crate::oauth::lifecycle::{Credentials, TokenError, Tokens};
use crate::sync::budget::Budget;

/// Why a source request failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The connection cannot be used (needs a reconnect, switched off…).
    #[error("the connection cannot be used: {0}")]
    Connection(#[from] TokenError),
    /// The provider refused (a 4xx other than 429): not worth retrying as is.
    #[error("Zendesk answered {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// What it said (its error code), never a credential.
        message: String,
    },
    /// Rate limited, unavailable, or unreachable: retry after `wait`.
    #[error("Zendesk is unavailable or limiting; retry in {wait:?}")]
    Later {
        /// How long to wait.
        wait: Duration,
    },
    /// The answer does not have the documented shape.
    #[error("Zendesk's answer does not have the documented shape: {0}")]
    Malformed(String),
}

/// 429s sat out inline (each holding the whole budget off) before giving up for now.
const RATE_LIMIT_RETRIES: u32 = 3;
/// The longest `Retry-After` waited inline.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(30);

/// One page of the export, as documents-to-be.
#[derive(Debug, Clone, Default)]
pub struct ExportPage {
    /// Every translation of every article on the page.
    pub articles: Vec<Article>,
    /// Where the next export starts (the page's `end_time`), if the page had any.
    pub end_time: Option<i64>,
    /// Whether this was the last page.
    pub last: bool,
}

/// Category → section names by section id.
#[derive(Debug, Clone, Default)]
pub struct Sections(HashMap<u64, Vec<String>>);

/// A Zendesk Help Center read through one connection.
pub struct Zendesk<'a> {
    tokens: &'a Tokens<'a>,
    creds: Credentials,
    budget: &'a mut Budget,
    timeout: Duration,
}

impl<'a> Zendesk<'a> {
    /// Reads through `creds` (from [`Tokens::credentials`]), taking slots of `budget`.
    pub fn new(tokens: &'a Tokens<'a>, creds: Credentials, budget: &'a mut Budget) -> Self {
        Self {
            tokens,
            creds,
            budget,
            timeout: Duration::from_secs(30),
        }
    }

    /// GET `path_and_query` on the connection's API base, as JSON.
    async fn get(&mut self, path_and_query: &str) -> Result<Value, SourceError> {
        let mut limited = 0;
        loop {
            match self.budget.acquire().await {
                Ok(()) => {}
                Err(crate::sync::budget::BudgetError::Exhausted(wait)) => {
                    return Err(SourceError::Later { wait });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the rate budget could not be taken");
                    return Err(SourceError::Later {
                        wait: Duration::from_secs(1),
                    });
                }
            }
            let timeout = self.timeout;
            let resp = self
                .tokens
                .send_using(&mut self.creds, |connector, http| {
                    let url = connector.url(path_and_query).map_err(|e| e.to_string())?;
                    Ok(http
                        .get(url)
                        .timeout(timeout)
                        .header(reqwest::header::ACCEPT, "application/json"))
                })
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(TokenError::Unavailable(_)) => {
                    return Err(SourceError::Later {
                        wait: Duration::from_secs(5),
                    });
                }
                Err(e) => return Err(SourceError::Connection(e)),
            };
            let status = resp.status().as_u16();
            let retry_after = crate::egress::retry_after(resp.headers());
            if status == 429 {
                crate::metrics::count(crate::metrics::Metric::ProviderRateLimited, "zendesk", None);
                let wait = retry_after.unwrap_or(Duration::from_secs(10));
                let _ = self.budget.hold_off(wait).await;
                limited += 1;
                if limited <= RATE_LIMIT_RETRIES && wait <= MAX_INLINE_WAIT {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(SourceError::Later { wait });
            }
            let text = resp.text().await.map_err(|_| SourceError::Later {
                wait: Duration::from_secs(5),
            })?;
            if status >= 500 {
                return Err(SourceError::Later {
                    wait: retry_after.unwrap_or(Duration::from_secs(5)),
                });
            }
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if !(200..300).contains(&status) {
                return Err(SourceError::Refused {
                    status,
                    message: error_code(&body),
                });
            }
            if !body.is_object() {
                return Err(SourceError::Malformed("not a JSON object".into()));
            }
            return Ok(body);
        }
    }

    /// Every category and section, as section id → [category, section].
    pub async fn sections(&mut self) -> Result<Sections, SourceError> {
        let categories: HashMap<u64, String> = self
            .all("/help_center/categories", "categories")
            .await?
            .into_iter()
            .filter_map(|c| Some((c["id"].as_u64()?, text(&c["name"])?)))
            .collect();
        let sections = self
            .all("/help_center/sections", "sections")
            .await?
            .into_iter()
            .filter_map(|s| {
                let id = s["id"].as_u64()?;
                let name = text(&s["name"])?;
                let mut path = Vec::with_capacity(2);
                if let Some(c) = s["category_id"].as_u64().and_then(|c| categories.get(&c)) {
                    path.push(c.clone());
                }
                path.push(name);
                Some((id, path))
            })
            .collect();
        Ok(Sections(sections))
    }

    /// Every item of an offset-paged list (100 a page; Zendesk stops offset paging at
    /// 10,000 items, far more sections than a help centre has).
    async fn all(&mut self, path: &str, key: &str) -> Result<Vec<Value>, SourceError> {
        let mut out = Vec::new();
        for page in 1..=100 {
            let body = self
                .get(&format!("{path}?per_page=100&page={page}"))
                .await?;
            let items = body[key]
                .as_array()
                .ok_or_else(|| SourceError::Malformed(format!("no {key} list")))?;
            out.extend(items.iter().cloned());
            if body["next_page"].is_null() {
                break;
            }
        }
        Ok(out)
    }

    /// One page of the export from `start_time`.
    pub async fn export(
        &mut self,
        start_time: i64,
        sections: &Sections,
    ) -> Result<ExportPage, SourceError> {
        let body = self
            .get(&format!(
                "/help_center/incremental/articles?start_time={start_time}&include=translations"
            ))
            .await?;
        let items = body["articles"]
            .as_array()
            .ok_or_else(|| SourceError::Malformed("no articles list".into()))?;
        let mut articles = Vec::with_capacity(items.len() * 2);
        for a in items {
            articles.extend(translations(a, sections));
        }
        let end_time = body["end_time"].as_i64();
        Ok(ExportPage {
            articles,
            end_time,
            last: body["next_page"].is_null() || end_time.is_none(),
        })
    }
}

/// A short error code from a Zendesk error body (`{"error":…}` or `{"errors":[…]}`).
fn error_code(body: &Value) -> String {
    let code = body["error"]
        .as_str()
        .or_else(|| body["error"]["title"].as_str())
        .or_else(|| body["errors"][0]["code"].as_str())
        .unwrap_or("error");
    code.chars().filter(|c| !c.is_control()).take(100).collect()
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn time_of(v: &Value) -> Option<OffsetDateTime> {
    v.as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

/// The documents of one exported article: one per translation (the article itself
/// when the answer carries none).
fn translations(a: &Value, sections: &Sections) -> Vec<Article> {
    let Some(id) = a["id"].as_u64() else {
        return Vec::new();
    };
    let labels: Vec<String> = a["label_names"]
        .as_array()
        .map(|l| l.iter().filter_map(text).collect())
        .unwrap_or_default();
    let path = a["section_id"]
        .as_u64()
        .and_then(|s| sections.0.get(&s))
        .cloned()
        .unwrap_or_default();
    let one = |t: &Value| -> Option<Article> {
        Some(Article {
            external_id: id.to_string(),
            locale: text(&t["locale"]),
            title: text(&t["title"]).unwrap_or_default(),
            html: text(&t["body"]).unwrap_or_default(),
            url: text(&t["html_url"]),
            labels: labels.clone(),
            section_path: path.clone(),
            published: !t["draft"].as_bool().unwrap_or(false),
            updated_at: time_of(&t["updated_at"]).or_else(|| time_of(&a["updated_at"])),
        })
    };
    match a["translations"].as_array() {
        Some(list) if !list.is_empty() => list.iter().filter_map(one).collect(),
        _ => one(a).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_exported_article_is_one_document_per_translation() {
        let sections = Sections(HashMap::from([(
            7,
            vec!["Billing".to_owned(), "Refunds".to_owned()],
        )]));
        let a = json!({"id": 360001, "section_id": 7, "label_names": ["refund"],
            "updated_at": "2024-01-15T09:00:00Z", "title": "Refunds", "locale": "en-us",
            "translations": [
                {"locale": "en-us", "title": "Refunds", "body": "<p>Yes</p>", "draft": false,
                 "html_url": "https://acme.zendesk.com/hc/en-us/articles/360001",
                 "updated_at": "2024-01-15T09:00:00Z"},
                {"locale": "de", "title": "Erstattungen", "body": "<p>Ja</p>", "draft": true,
                 "html_url": "https://acme.zendesk.com/hc/de/articles/360001",
                 "updated_at": "2024-01-16T09:00:00Z"}]});
        let docs = translations(&a, &sections);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].locale.as_deref(), Some("en-us"));
        assert!(docs[0].published && !docs[1].published);
        assert_eq!(docs[1].title, "Erstattungen");
        assert_eq!(docs[1].section_path, vec!["Billing", "Refunds"]);
        assert_eq!(docs[0].labels, vec!["refund"]);
        // Without translations: the article itself; without an id: nothing.
        let bare = json!({"id": 5, "title": "T", "body": "<p>x</p>", "locale": "en-us"});
        assert_eq!(translations(&bare, &sections).len(), 1);
        assert!(translations(&json!({"title": "no id"}), &sections).is_empty());
        assert_eq!(
            error_code(&json!({"error": "RecordNotFound"})),
            "RecordNotFound"
        );
        assert_eq!(
            error_code(&json!({"errors": [{"code": "InvalidPaginationDepth"}]})),
            "InvalidPaginationDepth"
        );
    }
}
