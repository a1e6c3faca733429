//! Freshdesk solutions as a knowledge-base source (developers.freshdesk.com/api,
//! "Solutions": categories → folders → articles; "Helpdesk settings" for languages).
//!
//! - The helpdesk's languages come from `GET /api/v2/settings/helpdesk`
//!   (`primary_language` and `supported_languages`); each translation of an article is a
//!   document of its own (locale = Freshdesk's language code).
//! - The structure — `GET /api/v2/solutions/categories` and, per category,
//!   `GET /api/v2/solutions/categories/{id}/folders` — is read once per worker step;
//!   section paths are the primary language's category and folder names.
//! - Articles: `GET /api/v2/solutions/folders/{id}/articles[/{language}]?page=N&per_page=100`,
//!   folder by folder, language by language (the primary language without a suffix),
//!   page by page while Freshdesk's `link` header names a next page. A language a folder
//!   has no translation in (404) contributes nothing.
//! - Freshdesk has no changes-since listing for solutions, so every run reads every
//!   article (a request per 100 articles per language), skips the unchanged ones by
//!   content hash, and sweeps what it did not see: a deleted article or folder is
//!   noticed by the next run, incremental or not. Status 2 is published, 1 a draft
//!   (stored unpublished).
//! - The cursor is (language, folder id, page): a folder the structure no longer has
//!   sends the language back to its first folder (a repeat is harmless: unchanged
//!   articles are skipped), so no folder is missed and swept by mistake.
//! - Requests go through [`Http`] (Basic auth with the API key, the connection's shared
//!   rate budget — the plan's requests per minute — and 429s with `Retry-After`).

use serde_json::{Value, json};

use super::document::Article;
use super::import::Mode;
use super::source::{Cursor, Http, Page, Source, SourceError, text, time_of};

/// Articles per page (Freshdesk's maximum).
const PER_PAGE: usize = 100;
/// Categories (and folders per category) read at most.
const MAX_ITEMS: usize = 10_000;

/// A folder and its path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Folder {
    id: u64,
    path: Vec<String>,
}

/// A Freshdesk helpdesk's solutions read through one connection.
pub struct Freshdesk<'a> {
    http: Http<'a>,
    /// The primary language first.
    languages: Vec<String>,
    folders: Vec<Folder>,
}

impl<'a> Freshdesk<'a> {
    /// Reads through `http`.
    pub fn new(http: Http<'a>) -> Self {
        Self {
            http,
            languages: Vec::new(),
            folders: Vec::new(),
        }
    }

    async fn list(&mut self, path: &str) -> Result<Vec<Value>, SourceError> {
        let body = self.http.get(path, &[]).await?.body;
        let items = body
            .as_array()
            .ok_or_else(|| SourceError::Malformed(format!("{path}: not a list")))?;
        Ok(items.iter().take(MAX_ITEMS).cloned().collect())
    }

    /// The portal URL of an article in `language`.
    fn url(&self, id: u64, language: &str) -> Option<String> {
        let sub = self.http.setting("subdomain")?;
        let prefix = if Some(language) == self.languages.first().map(String::as_str) {
            String::new()
        } else {
            format!("/{language}")
        };
        Some(format!(
            "https://{sub}.freshdesk.com{prefix}/support/solutions/articles/{id}"
        ))
    }
}

impl Source for Freshdesk<'_> {
    fn provider(&self) -> &'static str {
        "freshdesk"
    }

    fn lists_everything(&self) -> bool {
        true
    }

    fn start(_mode: Mode, _since: &Cursor) -> Cursor {
        json!({"language": 0, "folder": null, "page": 1})
    }

    async fn prepare(&mut self) -> Result<(), SourceError> {
        let settings = self.http.get("/settings/helpdesk", &[]).await?.body;
        let primary = text(&settings["primary_language"]).unwrap_or_else(|| "en".to_owned());
        let mut languages = vec![primary.clone()];
        for l in settings["supported_languages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(text)
        {
            if !languages.contains(&l) {
                languages.push(l);
            }
        }
        let mut folders = Vec::new();
        for c in self.list("/solutions/categories").await? {
            let (Some(cid), Some(cname)) = (c["id"].as_u64(), text(&c["name"])) else {
                continue;
            };
            for f in self
                .list(&format!("/solutions/categories/{cid}/folders"))
                .await?
            {
                if let (Some(id), Some(name)) = (f["id"].as_u64(), text(&f["name"])) {
                    folders.push(Folder {
                        id,
                        path: vec![cname.clone(), name],
                    });
                }
            }
        }
        self.languages = languages;
        self.folders = folders;
        Ok(())
    }

    async fn page(&mut self, cursor: &Cursor) -> Result<Page, SourceError> {
        let mut language = cursor["language"].as_u64().unwrap_or(0) as usize;
        let mut page = cursor["page"].as_u64().unwrap_or(1).max(1);
        let mut at = match cursor["folder"].as_u64() {
            None => 0,
            Some(id) => match self.folders.iter().position(|f| f.id == id) {
                Some(i) => i,
                None => {
                    page = 1;
                    0
                }
            },
        };
        let done = Page {
            next: json!({"language": self.languages.len(), "folder": null, "page": 1}),
            last: true,
            ..Page::default()
        };
        if self.folders.is_empty() || language >= self.languages.len() {
            return Ok(done);
        }
        let folder = self.folders[at].clone();
        let lang = self.languages[language].clone();
        let suffix = if language == 0 {
            String::new()
        } else {
            format!("/{lang}")
        };
        let path = format!(
            "/solutions/folders/{}/articles{suffix}?page={page}&per_page={PER_PAGE}",
            folder.id
        );
        let (items, more) = match self.http.get(&path, &[]).await {
            Ok(answer) => {
                let items = answer
                    .body
                    .as_array()
                    .cloned()
                    .ok_or_else(|| SourceError::Malformed("articles: not a list".into()))?;
                let more = answer.next_link.is_some() && !items.is_empty();
                (items, more)
            }
            // The folder has no translation in this language.
            Err(SourceError::Refused { status: 404, .. }) if language > 0 => (Vec::new(), false),
            Err(e) => return Err(e),
        };
        let articles = items
            .iter()
            .filter_map(|a| self.article(a, &lang, &folder))
            .collect();
        if more {
            page += 1;
        } else {
            page = 1;
            at += 1;
            if at == self.folders.len() {
                at = 0;
                language += 1;
            }
        }
        let last = language >= self.languages.len();
        let next = if last {
            done.next
        } else {
            json!({"language": language, "folder": self.folders[at].id, "page": page})
        };
        Ok(Page {
            articles,
            gone: Vec::new(),
            next,
            last,
        })
    }
}

impl Freshdesk<'_> {
    fn article(&self, a: &Value, language: &str, folder: &Folder) -> Option<Article> {
        let id = a["id"].as_u64()?;
        Some(Article {
            external_id: id.to_string(),
            locale: Some(language.to_owned()),
            title: text(&a["title"]).unwrap_or_default(),
            html: text(&a["description"]).unwrap_or_default(),
            url: self.url(id, language),
            labels: a["tags"]
                .as_array()
                .map(|t| t.iter().filter_map(text).collect())
                .unwrap_or_default(),
            section_path: folder.path.clone(),
            published: a["status"].as_u64() == Some(2),
            updated_at: time_of(&a["updated_at"]),
        })
    }
}
