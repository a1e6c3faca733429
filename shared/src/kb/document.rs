//! A knowledge-base document: one article (in one locale) of one source, stored per
//! tenant. Its metadata is small and listed; its body — sanitized HTML and Markdown —
//! is stored apart and may be of any size (see [`crate::store::kb`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::clean::{self, Content};
use crate::domain::{IntegrationId, TenantId};

/// The longest title kept (characters); longer ones are cut.
pub const MAX_TITLE_CHARS: usize = 1_000;
/// Labels kept per document, and characters per label.
pub const MAX_LABELS: usize = 100;
/// Section-path levels kept.
pub const MAX_PATH_LEVELS: usize = 10;

/// A document's id: the same for every import of one article in one locale from one
/// integration (`kbd_` and 32 hex digits of a SHA-256), so a re-import finds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DocumentId(String);

impl DocumentId {
    /// The id of `external_id` in `locale` from `integration`.
    pub fn of(integration: &IntegrationId, external_id: &str, locale: Option<&str>) -> Self {
        let mut h = Sha256::new();
        for part in [integration.as_str(), external_id, locale.unwrap_or("")] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let digest = h.finalize();
        let mut id = String::with_capacity(36);
        id.push_str("kbd_");
        for b in &digest[..16] {
            use std::fmt::Write as _;
            let _ = write!(id, "{b:02x}");
        }
        Self(id)
    }

    /// Checks an id given from outside (`kbd_` and 32 lowercase hex digits).
    pub fn parse(raw: &str) -> Result<Self, crate::domain::Invalid> {
        let ok = raw.len() == 36
            && raw.starts_with("kbd_")
            && raw[4..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(crate::domain::Invalid(
                "a document id is kbd_ and 32 hex digits".into(),
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DocumentId {
    type Error = crate::domain::Invalid;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DocumentId> for String {
    fn from(value: DocumentId) -> Self {
        value.0
    }
}

impl std::fmt::Display for DocumentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An article as a source gives it, before cleaning.
#[derive(Debug, Clone, PartialEq)]
pub struct Article {
    /// The source's id of the article.
    pub external_id: String,
    /// Its locale (`en-us`), if the source has locales.
    pub locale: Option<String>,
    /// Its title.
    pub title: String,
    /// Its body as the source holds it (untrusted HTML).
    pub html: String,
    /// Where people read it.
    pub url: Option<String>,
    /// Its labels (tags).
    pub labels: Vec<String>,
    /// Category → section (or folder) names.
    pub section_path: Vec<String>,
    /// Whether the source shows it to readers (not a draft, not unpublished).
    pub published: bool,
    /// When the source last changed it.
    pub updated_at: Option<OffsetDateTime>,
}

/// The id of the document a source's article (or a report that it is gone) is
/// stored as: its locale clipped as stored.
pub fn id_of(integration: &IntegrationId, external_id: &str, locale: Option<&str>) -> DocumentId {
    DocumentId::of(
        integration,
        external_id,
        locale.map(|l| clip(l, 35)).as_deref(),
    )
}

/// A stored document's metadata (what listings show).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Its id.
    pub id: DocumentId,
    /// Its tenant.
    pub tenant: TenantId,
    /// The integration it was imported through.
    pub integration_id: IntegrationId,
    /// The source's provider (`zendesk`, `freshdesk`, `salesforce`, `dynamics365`,
    /// `custom_api`).
    pub source: String,
    /// The source's id of the article.
    pub external_id: String,
    /// Its locale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Its title.
    pub title: String,
    /// Where people read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Its labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Category → section names.
    #[serde(default)]
    pub section_path: Vec<String>,
    /// Whether the source shows it to readers.
    pub published: bool,
    /// When the source last changed it.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub updated_at: Option<OffsetDateTime>,
    /// The content hash ([`clean::content_hash`]): an import skips an article whose
    /// hash is unchanged.
    pub hash: String,
    /// Bytes of its body (sanitized HTML and Markdown).
    pub body_bytes: u64,
    /// How many chunks its body is stored in ([`crate::store::kb`]).
    pub chunks: u32,
    /// When Conduit stored this version.
    #[serde(with = "time::serde::rfc3339")]
    pub imported_at: OffsetDateTime,
    /// The last full import run that saw it (its sweep deletes what it did not see).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_run: Option<String>,
    /// The import run that stored this version: a step of that run retried after a
    /// crash finds it unchanged, yet still reports it as the run's change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_run: Option<String>,
    /// +1 per stored change.
    pub version: u64,
}

/// A document's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// Sanitized HTML.
    pub html: String,
    /// The same as Markdown.
    pub markdown: String,
}

impl Body {
    /// Its size in bytes.
    pub fn bytes(&self) -> u64 {
        (self.html.len() + self.markdown.len()) as u64
    }

    /// How many chunks of [`crate::store::kb::CHUNK_BYTES`] its JSON text makes (at
    /// least one).
    pub fn chunks(&self) -> u32 {
        let text = serde_json::to_string(self).unwrap_or_default();
        let n = crate::store::kb::cut(&text, crate::store::kb::CHUNK_BYTES).len();
        u32::try_from(n.max(1)).unwrap_or(u32::MAX)
    }
}

fn clip(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((at, _)) => s[..at].to_owned(),
        None => s.to_owned(),
    }
}

fn tidy(list: &[String], max_items: usize) -> Vec<String> {
    list.iter()
        .map(|l| clip(&l.replace(char::is_control, " "), 200))
        .filter(|l| !l.is_empty())
        .take(max_items)
        .collect()
}

/// What `article` becomes: its cleaned metadata (version 1, hash set) and body.
pub fn from_article(
    tenant: &TenantId,
    integration: &IntegrationId,
    source: &str,
    article: &Article,
    now: OffsetDateTime,
) -> (Document, Body) {
    let html = clean::sanitize(&article.html);
    let markdown = clean::markdown(&html).unwrap_or_default();
    let title = clip(
        &article.title.replace(char::is_control, " "),
        MAX_TITLE_CHARS,
    );
    let labels = tidy(&article.labels, MAX_LABELS);
    let section_path = tidy(&article.section_path, MAX_PATH_LEVELS);
    let url = article
        .url
        .as_deref()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(|u| clip(u, 2_000));
    let locale = article.locale.as_deref().map(|l| clip(l, 35));
    let hash = clean::content_hash(&Content {
        title: &title,
        html: &html,
        url: url.as_deref(),
        locale: locale.as_deref(),
        labels: &labels,
        section_path: &section_path,
        published: article.published,
    });
    let body = Body { html, markdown };
    let doc = Document {
        id: id_of(integration, &article.external_id, article.locale.as_deref()),
        tenant: tenant.clone(),
        integration_id: integration.clone(),
        source: source.to_owned(),
        external_id: clip(&article.external_id, 256),
        locale,
        title,
        url,
        labels,
        section_path,
        published: article.published,
        updated_at: article.updated_at,
        hash,
        body_bytes: body.bytes(),
        chunks: body.chunks(),
        imported_at: now,
        seen_run: None,
        written_run: None,
        version: 1,
    };
    (doc, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article() -> Article {
        Article {
            external_id: "360001".into(),
            locale: Some("en-us".into()),
            title: "Reset\nyour password".into(),
            html: "<p onclick=\"x()\">Go to <a href=\"javascript:x()\">settings</a>.</p><script>x()</script>".into(),
            url: Some("https://help.example.com/hc/en-us/articles/360001".into()),
            labels: vec!["account".into(), " ".into()],
            section_path: vec!["General".into(), "Sign in".into()],
            published: true,
            updated_at: None,
        }
    }

    #[test]
    fn an_article_becomes_a_clean_document_with_a_stable_id() {
        let tenant = TenantId::parse("acme").unwrap();
        let integration = IntegrationId::generate();
        let (doc, body) = from_article(
            &tenant,
            &integration,
            "zendesk",
            &article(),
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(doc.title, "Reset your password");
        assert_eq!(doc.labels, vec!["account".to_owned()]);
        assert!(!body.html.contains("onclick") && !body.html.contains("script"));
        assert!(!body.html.contains("javascript"), "{}", body.html);
        assert!(body.markdown.contains("Go to"), "{}", body.markdown);
        assert_eq!(doc.body_bytes, body.bytes());
        assert_eq!(
            doc.id,
            DocumentId::of(&integration, "360001", Some("en-us"))
        );
        assert_ne!(doc.id, DocumentId::of(&integration, "360001", Some("de")));
        assert_eq!(DocumentId::parse(doc.id.as_str()), Ok(doc.id.clone()));
        assert!(DocumentId::parse("kbd_XYZ").is_err());
        // The same article again: the same hash; a change of any part: another.
        let (again, _) = from_article(
            &tenant,
            &integration,
            "zendesk",
            &article(),
            OffsetDateTime::now_utc(),
        );
        assert_eq!(again.hash, doc.hash);
        let mut changed = article();
        changed.published = false;
        let (draft, _) = from_article(
            &tenant,
            &integration,
            "zendesk",
            &changed,
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_ne!(draft.hash, doc.hash);
    }
}
