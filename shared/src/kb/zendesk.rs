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
//!   and `…/sections` (offset pages of 100), read once per worker step.
//! - Auth is the connection's (API token or OAuth with `hc:read`); requests go through
//!   [`Http`] (token lifecycle, the connection's shared rate budget — Zendesk's requests
//!   per minute, with sync and dispatch — and 429s).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::document::Article;
use super::import::Mode;
use super::source::{Cursor, Http, Page, Source, SourceError, text, time_of};

/// Category → section names by section id.
#[derive(Debug, Clone, Default)]
pub struct Sections(HashMap<u64, Vec<String>>);

/// A Zendesk Help Center read through one connection.
pub struct Zendesk<'a> {
    http: Http<'a>,
    sections: Sections,
}

impl<'a> Zendesk<'a> {
    /// Reads through `http`.
    pub fn new(http: Http<'a>) -> Self {
        Self {
            http,
            sections: Sections::default(),
        }
    }

    async fn get(&mut self, path_and_query: &str) -> Result<Value, SourceError> {
        let body = self.http.get(path_and_query, &[]).await?.body;
        if !body.is_object() {
            return Err(SourceError::Malformed("not a JSON object".into()));
        }
        Ok(body)
    }

    /// Every category and section, as section id → [category, section].
    async fn sections(&mut self) -> Result<Sections, SourceError> {
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
    async fn export(&mut self, start_time: i64) -> Result<Page, SourceError> {
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
            articles.extend(translations(a, &self.sections));
        }
        let end_time = body["end_time"].as_i64();
        Ok(Page {
            articles,
            gone: Vec::new(),
            next: json!({"start_time": end_time.unwrap_or(start_time)}),
            last: body["next_page"].is_null() || end_time.is_none(),
        })
    }
}

impl Source for Zendesk<'_> {
    fn provider(&self) -> &'static str {
        "zendesk"
    }

    /// The export reports no deletions: only a full run (which sweeps) notices them.
    fn lists_everything(&self) -> bool {
        false
    }

    fn start(mode: Mode, since: &Cursor) -> Cursor {
        let since = since["start_time"].as_i64().or_else(|| since.as_i64());
        match (mode, since) {
            (Mode::Incremental, Some(t)) => json!({"start_time": t}),
            _ => json!({"start_time": 0}),
        }
    }

    async fn prepare(&mut self) -> Result<(), SourceError> {
        self.sections = self.sections().await?;
        Ok(())
    }

    async fn page(&mut self, cursor: &Cursor) -> Result<Page, SourceError> {
        let start_time = cursor["start_time"]
            .as_i64()
            .ok_or_else(|| SourceError::Malformed("the checkpoint has no start_time".into()))?;
        self.export(start_time).await
    }
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
    }
}
