//! Pipedrive CRM record stand-in: **persons**, **organizations** and **deals** kept in memory per
//! company (the `company_domain` of the authenticating API token's account or OAuth
//! user; `acme` for the default account `pd-sandbox-token-0001`), served at Pipedrive's
//! own paths on `api.pipedrive.com` and on the company domain (`{company}.pipedrive.com`,
//! which must be the caller's own company). Shapes follow Pipedrive's OpenAPI files
//! (`openapi-v2.yaml` 2.0.0 and `openapi-v1.yaml` 1.0.0, see the contract test) and the
//! reference pages on developers.pipedrive.com / pipedrive.readme.io.
//!
//! # Routes
//! | Route name | Request |
//! |---|---|
//! | `pipedrive.crm_list` | `GET /api/v2/{persons\|organizations}` |
//! | `pipedrive.crm_get` | `GET /api/v2/{object}/{id}` |
//! | `pipedrive.crm_create` | `POST /api/v2/{object}` |
//! | `pipedrive.crm_update` | `PATCH /api/v2/{object}/{id}` |
//! | `pipedrive.crm_delete` | `DELETE /api/v2/{object}/{id}` |
//! | `pipedrive.crm_bulk_delete` | `DELETE /v1/{object}?ids=1,2` (also `/api/v1/…`) |
//! | `pipedrive.crm_search` | `GET /api/v2/{object}/search?term=` |
//! | `pipedrive.crm_fields` | `GET /v1/{personFields\|organizationFields}` |
//! | `pipedrive.crm_field_create` | `POST /v1/{personFields\|organizationFields}` |
//! | `pipedrive.recents` | `GET /v1/recents?since_timestamp=&items=person,organization,deal` |
//! | `pipedrive.crm_pipelines` | `GET /api/v2/pipelines`, `GET /api/v2/stages?pipeline_id=` |
//!
//! v2 paths exist only under `/api/v2/` (as Pipedrive: no `/v2/` alias); v1 paths under
//! both `/v1/` and `/api/v1/`.
//!
//! # Auth and scopes
//! As [`super::pipedrive`]: `?api_token=` or header `x-api-token` (the user's full
//! access), or an OAuth access token as `Authorization: Bearer` (401 `unauthorized
//! access` otherwise, and for a company domain other than the token's). An OAuth token
//! needs one of the scopes the spec's `security` lists for the operation, else 403
//! `{"success":false,"error":"Scope and URL mismatch","errorCode":403}`:
//! reads `contacts:read`/`contacts:full`; writes and deletes `contacts:full`; search
//! also `search:read`; field list also `admin`; **field creation only `admin`**;
//! recents `recents:read` or `search:read`. Deals (the spec's `security` of `/deals…`):
//! reads `deals:read`/`deals:full`, writes and deletes `deals:full`, search also
//! `search:read`, `dealFields`, pipelines and stages also `admin`.
//!
//! # Rate limits (token-based, Pipedrive's "Rate limiting" page, 2024-12 onwards)
//! Every authenticated call spends its endpoint's token cost (the spec's `x-token-cost`
//! for v2: list 10, get 1, create 5, update 5, delete 3, search 20; the page's generic v1
//! costs: field list 20, field create 10, bulk delete 10, recents 20) from the company's
//! **daily budget** (default 300,000 = 30,000 × Growth multiplier 2 × 5 seats; resets
//! at 00:00 UTC), shared by all its users and apps. A **burst limit** per user token
//! applies in a rolling 2-second window (default Growth: 40 requests per API token, 160
//! per OAuth token; search endpoints 10 per 2 s on every plan). Past either: 429
//! `{"success":false,"error":"Request over limit","errorCode":429,"error_info":…}` with
//! `Retry-After` (seconds until a slot frees, or until midnight UTC for the budget).
//! Every CRM answer after authentication carries `x-ratelimit-limit`,
//! `x-ratelimit-remaining`, `x-ratelimit-reset` (seconds; the burst window),
//! `x-daily-ratelimit-token-limit` and `x-daily-ratelimit-token-remaining` (the live
//! API's budget headers; Pipedrive's page does not list them), and, for API-token calls,
//! `x-daily-requests-left` (the older fair-use count of POST/PUT/PATCH calls per user per
//! UTC day, 10,000; informational, never refuses). Knob: [`SandboxState::set_pipedrive_limits`].
//! Not reproduced: the Cloudflare 403 HTML block for clients that ignore 429s, the 75 %
//! and 100 % admin emails, token top-ups, UI actions counting against the budget.
//!
//! # Records (v2 shapes)
//! Persons: `id`, `name`, `first_name`, `last_name` (derived from `name`), `owner_id`,
//! `org_id` (null when none), `add_time`, `update_time` (RFC 3339, whole seconds, UTC),
//! `emails`/`phones` (`[{value, primary, label}]`), `is_deleted`, `visible_to`,
//! `label_ids`, `custom_fields` (`{<40-hex key>: value}`, set values only).
//! Organizations: the same without `emails`/`phones`/`org_id`/names, with `address`
//! (`{value, country, locality, …}` or null). Ids count from 1 per company and type.
//! Emails are **not** unique (Pipedrive allows duplicate persons; search finds them all).
//!
//! Deals (v2 `DealItem`): `id`, `title`, `owner_id`, `person_id`, `org_id` (null when
//! none), `pipeline_id`, `stage_id`, `value` (0 when never set), `currency`, `status`
//! (`open`, `won`, `lost`), `expected_close_date` (`YYYY-MM-DD` or null),
//! `stage_change_time`, `add_time`, `update_time`, `is_deleted`, `is_archived` (false),
//! `probability`/`lost_reason` (null), `origin` (`API`), `visible_to`, `label_ids`,
//! `custom_fields`. Writes: `title` required on create (else 400); `person_id` /
//! `org_id` must be a live person / organization (else 400 `Person with id N not
//! found` / `Organization with id N not found`), `null` clears them; `stage_id` must
//! be a stage, and of `pipeline_id` when both are given (else 400); a pipeline alone
//! moves the deal to that pipeline's first stage; a create with neither lands in the
//! default pipeline's first stage; `value` a number, `currency` three capital letters
//! (default `USD`), `status` `open`/`won`/`lost`, `expected_close_date` a date or null.
//! Pipelines and stages are fixed: pipeline 1 "Pipeline" with Pipedrive's five default
//! stages (ids 1–5) and pipeline 2 "Renewals" (stages 6, 7); stage ids are unique across
//! pipelines as Pipedrive's. List filters `person_id`, `org_id`, `pipeline_id`,
//! `stage_id`, `status`. Search fields `title`, `notes`, `custom_fields`. A deleted
//! deal shows in recents (`items=deal`) with v1 data `deleted: true`, `active: false`,
//! `status: "deleted"`. Not reproduced for deals: products, participants, followers,
//! installments, discounts, archiving (`is_archived`, `/deals/archived`), won/lost
//! times and `lost_reason`, `probability`, `close_time`, the company's default currency
//! (always `USD`), currency conversion, rotting, pipelines and stages being created,
//! changed or deleted (their write endpoints are not served), the v1 `/deals` paths,
//! and any owner/visibility check.
//!
//! ## List (`GET /api/v2/{object}`)
//! Reproduced: `limit` (default 100, 1–500, else 400), opaque `cursor` (tied to the
//! sort; a cursor of another sort or a forged one is 400) with
//! `additional_data.next_cursor` (null on the last page), `sort_by` (`id`,
//! `update_time`, `add_time`), `sort_direction` (`asc`, `desc`), `updated_since`
//! (inclusive) and `updated_until` (exclusive), RFC 3339 (else 400), `ids` (≤ 100),
//! `owner_id`, `org_id` (persons), `custom_fields` (≤ 15 keys: only those in the answer).
//! Deleted records are left out. Not reproduced: `filter_id` (400), `include_fields`
//! (accepted, adds nothing), `deal_id`, `picture_id` and contact-sync fields.
//!
//! ## Get / create / update / delete
//! `GET /{id}`: 404 `"Person not found"` / `"Organization not found"` for unknown and
//! deleted ids (400 for a non-integer id). `POST` needs `name` (or `first_name` /
//! `last_name`, which build it); `PATCH` changes only the members given (one name part
//! alone keeps the other part of the current name; `emails`/`phones` replace the whole
//! list; `null` clears `org_id`, `address` and a custom field). v2 is strict: members
//! of the wrong JSON type, unknown members, `visible_to` outside 1/3/5/7, email/phone labels outside
//! work/home/(mobile)/other, two primaries, an email/phone item without `value`, an
//! `org_id` that is not a live organization, a custom-field key the object does not
//! have, or a value of the wrong type for the field (`varchar` ≤ 255 chars, `text`,
//! `double`, `date`, `enum`, `set`, `monetary`) are 400 with the whole write refused.
//! The contact-sync-only members (`job_title`, `notes`, `im`, `birthday`,
//! `postal_address`) are 403 (contact sync is off). `DELETE` is a soft delete
//! (`is_deleted`, `update_time` bumped): 200 `{"success":true,"data":{"id":…}}`, 404 when
//! already deleted or unknown. v2 has no bulk delete; v1 `DELETE /v1/{object}?ids=`
//! (deprecated, out of support since 2026-08-01, still served here) deletes up to 1,000
//! ids (more: 400) and answers `{"data":{"id":[deleted ids]}}`. Not reproduced: the
//! 30-day purge of deleted records, merging, followers, pictures, marketing consent
//! rules beyond the enum.
//!
//! ## Search (`GET /api/v2/{object}/search`)
//! `term` required, at least 2 characters (1 with `exact_match=true`), else 400;
//! `fields` a comma list of `name`, `email`, `phone`, `notes`, `custom_fields` (persons)
//! or `name`, `address`, `notes`, `custom_fields` (organizations), else 400;
//! `exact_match` case-insensitive whole-value equality, otherwise case-insensitive
//! substring; custom fields of types `varchar`, `varchar_auto`, `text`, `double`,
//! `monetary`, `phone`, `address` are searched; `organization_id` (persons); `limit`
//! 1–500 (default 100); cursor paging. Items: `{result_score, item:{id, type, name,
//! phones, emails, visible_to, owner:{id}, organization, custom_fields, notes}}`.
//! Not reproduced: the search index's delay after writes, word-prefix ranking.
//!
//! ## Fields (`/v1/personFields`, `/v1/organizationFields`, `/v1/dealFields`)
//! `GET` lists the built-in fields and the custom ones (`id`, `key` — a 40-hex hash for
//! custom fields, `name`, `field_type`, `edit_flag` true only for custom fields,
//! `mandatory_flag`, `options`, …) with v1 paging (`start`, `limit` ≤ 500,
//! `additional_data.pagination`). `POST` (JSON or form) creates a custom field: `name`
//! and `field_type` (the spec's enum) required, `options` `[{label}]` required for
//! `enum`/`set`; answers 200 with the field, whose `key` is what v2 writes put under
//! `custom_fields`. Names need not be unique (as Pipedrive). Past the plan's custom-field
//! cap (default 100, Growth; per company, persons and organizations together): 403 with
//! `"code":"feature_capping_custom_fields_limit"` (the code string is not documented).
//! Conduit's marker: a `varchar` custom field (Pipedrive has no external-id mechanism).
//! Not reproduced: the v2 Fields API (`/api/v2/personFields`, 2025-12), field update
//! and delete, subfields.
//!
//! ## Deletions (`GET /v1/recents`)
//! Pipedrive's only way to learn of deletions without webhooks: every person and
//! organization whose `update_time` is at or after `since_timestamp` (`YYYY-MM-DD
//! HH:MM:SS`, UTC, required, else 400), oldest first, as `{item, id, data}` with v1
//! `data` (`active_flag` false for deleted ones); `items` a comma list (other item types
//! Pipedrive knows are accepted and have no changes here), `start`/`limit` (≤ 500)
//! paging with `additional_data.pagination` and `last_timestamp_on_page`.
//!
//! Errors: `{"success":false,"error":"…","error_info":"Please check
//! developers.pipedrive.com for more information about Pipedrive API.","data":null,
//! "additional_data":null}` (Pipedrive's "Responses" page; `code` only on capping).
//! The `error` texts of 400s are the sandbox's own wording (Pipedrive's are not
//! documented); match on the status, not the text.
//!
//! # Test helpers on [`SandboxState`]
//! [`SandboxState::seed_pipedrive`] (deterministic, fast: 10,000 records well under a
//! second), [`SandboxState::pipedrive_records`] / [`SandboxState::pipedrive_record`],
//! [`SandboxState::update_pipedrive_record`] and [`SandboxState::delete_pipedrive_record`]
//! (a user's change in the app: `update_time` moves on by at least a second),
//! [`SandboxState::pipedrive_define_field`] / [`SandboxState::pipedrive_field_key`],
//! [`SandboxState::set_pipedrive_limits`] / [`SandboxState::pipedrive_tokens_used`] and
//! [`SandboxState::malform_pipedrive_responses`]. Forced faults and latency apply by
//! route name as on every route (`pipedrive::error_for_status` bodies).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::pipedrive::{self, company_of};
use super::{ProviderRequest, sample};
use crate::clock::{DAY_MS, civil_from_days, now_ms, parse_date, parse_datetime};
use crate::oauth::{self, AccessCheck, OAuthProvider};
use crate::state::{ProviderAccount, SandboxState};
use crate::wire;

/// Route name of `GET /api/v2/{object}`.
pub const CRM_LIST: &str = "pipedrive.crm_list";
/// Route name of `GET /api/v2/{object}/{id}`.
pub const CRM_GET: &str = "pipedrive.crm_get";
/// Route name of `POST /api/v2/{object}`.
pub const CRM_CREATE: &str = "pipedrive.crm_create";
/// Route name of `PATCH /api/v2/{object}/{id}`.
pub const CRM_UPDATE: &str = "pipedrive.crm_update";
/// Route name of `DELETE /api/v2/{object}/{id}`.
pub const CRM_DELETE: &str = "pipedrive.crm_delete";
/// Route name of `DELETE /v1/{object}?ids=`.
pub const CRM_BULK_DELETE: &str = "pipedrive.crm_bulk_delete";
/// Route name of `GET /api/v2/{object}/search`.
pub const CRM_SEARCH: &str = "pipedrive.crm_search";
/// Route name of `GET /v1/{personFields|organizationFields}`.
pub const CRM_FIELDS: &str = "pipedrive.crm_fields";
/// Route name of `POST /v1/{personFields|organizationFields}`.
pub const CRM_FIELD_CREATE: &str = "pipedrive.crm_field_create";
/// Route name of `GET /v1/recents`.
pub const RECENTS: &str = "pipedrive.recents";
/// Route name of `GET /api/v2/pipelines` and `GET /api/v2/stages`.
pub const CRM_PIPELINES: &str = "pipedrive.crm_pipelines";

/// Every route name of this stand-in.
pub const ROUTES: [&str; 11] = [
    CRM_PIPELINES,
    CRM_LIST,
    CRM_GET,
    CRM_CREATE,
    CRM_UPDATE,
    CRM_DELETE,
    CRM_BULK_DELETE,
    CRM_SEARCH,
    CRM_FIELDS,
    CRM_FIELD_CREATE,
    RECENTS,
];

/// Largest `limit` of v2 lists and searches and of v1 lists.
pub const MAX_LIMIT: usize = 500;
const DEFAULT_LIMIT: usize = 100;
/// Most ids of one v1 bulk delete.
pub const BULK_DELETE_LIMIT: usize = 1000;
/// Most ids of a v2 list's `ids`.
const IDS_LIMIT: usize = 100;
/// Most keys of a v2 `custom_fields` query parameter.
const CUSTOM_FIELDS_QUERY_LIMIT: usize = 15;
/// Fair-use POST/PUT/PATCH calls per API-token user per UTC day (`x-daily-requests-left`).
const DAILY_WRITES: u64 = 10_000;
const BURST_WINDOW: Duration = Duration::from_secs(2);
const ERROR_INFO: &str =
    "Please check developers.pipedrive.com for more information about Pipedrive API.";

/// A Pipedrive record type the stand-in keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PdObject {
    /// `persons`.
    Persons,
    /// `organizations`.
    Organizations,
    /// `deals`.
    Deals,
}

impl PdObject {
    /// The plural path name.
    pub fn as_str(self) -> &'static str {
        match self {
            PdObject::Persons => "persons",
            PdObject::Organizations => "organizations",
            PdObject::Deals => "deals",
        }
    }

    /// The v1 recents `item` name.
    fn item(self) -> &'static str {
        match self {
            PdObject::Persons => "person",
            PdObject::Organizations => "organization",
            PdObject::Deals => "deal",
        }
    }

    fn title(self) -> &'static str {
        match self {
            PdObject::Persons => "Person",
            PdObject::Organizations => "Organization",
            PdObject::Deals => "Deal",
        }
    }

    fn from_path(name: &str) -> Option<Self> {
        match name {
            "persons" => Some(PdObject::Persons),
            "organizations" => Some(PdObject::Organizations),
            "deals" => Some(PdObject::Deals),
            _ => None,
        }
    }

    fn from_fields_path(name: &str) -> Option<Self> {
        match name {
            "personFields" => Some(PdObject::Persons),
            "organizationFields" => Some(PdObject::Organizations),
            "dealFields" => Some(PdObject::Deals),
            _ => None,
        }
    }
}

/// A CRM route of the Pipedrive stand-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PdRoute {
    /// `GET /api/v2/{object}`.
    List(PdObject),
    /// `GET /api/v2/{object}/{id}`.
    Get(PdObject),
    /// `POST /api/v2/{object}`.
    Create(PdObject),
    /// `PATCH /api/v2/{object}/{id}`.
    Update(PdObject),
    /// `DELETE /api/v2/{object}/{id}`.
    Delete(PdObject),
    /// `DELETE /v1/{object}?ids=`.
    BulkDelete(PdObject),
    /// `GET /api/v2/{object}/search`.
    Search(PdObject),
    /// `GET /v1/{personFields|organizationFields}`.
    Fields(PdObject),
    /// `POST /v1/{personFields|organizationFields}`.
    FieldCreate(PdObject),
    /// `GET /v1/recents`.
    Recents,
    /// `GET /api/v2/pipelines`.
    Pipelines,
    /// `GET /api/v2/stages`.
    Stages,
    /// `GET /v1/webhooks` (see [`super::pipedrive_webhooks`]).
    Webhooks,
    /// `POST /v1/webhooks`.
    WebhookCreate,
    /// `DELETE /v1/webhooks/{id}`.
    WebhookDelete,
}

impl PdRoute {
    /// The route's counter name.
    pub fn name(self) -> &'static str {
        match self {
            PdRoute::List(_) => CRM_LIST,
            PdRoute::Get(_) => CRM_GET,
            PdRoute::Create(_) => CRM_CREATE,
            PdRoute::Update(_) => CRM_UPDATE,
            PdRoute::Delete(_) => CRM_DELETE,
            PdRoute::BulkDelete(_) => CRM_BULK_DELETE,
            PdRoute::Search(_) => CRM_SEARCH,
            PdRoute::Fields(_) => CRM_FIELDS,
            PdRoute::FieldCreate(_) => CRM_FIELD_CREATE,
            PdRoute::Recents => RECENTS,
            PdRoute::Pipelines | PdRoute::Stages => CRM_PIPELINES,
            PdRoute::Webhooks | PdRoute::WebhookCreate | PdRoute::WebhookDelete => {
                super::pipedrive_webhooks::ROUTE
            }
        }
    }

    /// The OAuth scopes of which a token needs one (the spec's `security`).
    pub fn required_scopes(self) -> &'static [&'static str] {
        match self {
            PdRoute::List(PdObject::Deals) | PdRoute::Get(PdObject::Deals) => {
                &["deals:read", "deals:full"]
            }
            PdRoute::Create(PdObject::Deals)
            | PdRoute::Update(PdObject::Deals)
            | PdRoute::Delete(PdObject::Deals)
            | PdRoute::BulkDelete(PdObject::Deals) => &["deals:full"],
            PdRoute::Search(PdObject::Deals) => &["deals:read", "deals:full", "search:read"],
            PdRoute::Fields(PdObject::Deals) | PdRoute::Pipelines | PdRoute::Stages => {
                &["deals:read", "deals:full", "admin"]
            }
            PdRoute::List(_) | PdRoute::Get(_) => &["contacts:read", "contacts:full"],
            PdRoute::Create(_)
            | PdRoute::Update(_)
            | PdRoute::Delete(_)
            | PdRoute::BulkDelete(_) => &["contacts:full"],
            PdRoute::Search(_) => &["contacts:read", "contacts:full", "search:read"],
            PdRoute::Fields(_) => &["contacts:read", "contacts:full", "admin"],
            PdRoute::FieldCreate(_) => &["admin"],
            PdRoute::Recents => &["recents:read", "search:read"],
            PdRoute::Webhooks | PdRoute::WebhookCreate | PdRoute::WebhookDelete => &["admin"],
        }
    }

    /// Tokens one call costs.
    pub fn token_cost(self) -> u64 {
        match self {
            PdRoute::List(_) => 10,
            PdRoute::Get(_) => 1,
            PdRoute::Pipelines | PdRoute::Stages => 5,
            PdRoute::Create(_) | PdRoute::Update(_) => 5,
            PdRoute::Delete(_) => 3,
            PdRoute::Search(_) | PdRoute::Fields(_) | PdRoute::Recents => 20,
            PdRoute::FieldCreate(_) | PdRoute::BulkDelete(_) => 10,
            PdRoute::Webhooks => 20,
            PdRoute::WebhookCreate => 10,
            PdRoute::WebhookDelete => 6,
        }
    }

    fn is_search(self) -> bool {
        matches!(self, PdRoute::Search(_))
    }
}

/// Matches a Pipedrive CRM path (the full path, `/api` prefix included).
pub(crate) fn route(method: &Method, path: &str) -> Option<PdRoute> {
    if let Some(rest) = path.strip_prefix("/api/v2/") {
        match (method, rest.trim_end_matches('/')) {
            (&Method::GET, "pipelines") => return Some(PdRoute::Pipelines),
            (&Method::GET, "stages") => return Some(PdRoute::Stages),
            _ => {}
        }
        let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        let object = PdObject::from_path(parts.first()?)?;
        return match (method, parts.as_slice()) {
            (&Method::GET, [_]) => Some(PdRoute::List(object)),
            (&Method::POST, [_]) => Some(PdRoute::Create(object)),
            (&Method::GET, [_, "search"]) => Some(PdRoute::Search(object)),
            (&Method::GET, [_, id]) if !id.is_empty() => Some(PdRoute::Get(object)),
            (&Method::PATCH, [_, id]) if !id.is_empty() => Some(PdRoute::Update(object)),
            (&Method::DELETE, [_, id]) if !id.is_empty() => Some(PdRoute::Delete(object)),
            _ => None,
        };
    }
    let rest = path
        .strip_prefix("/api/v1/")
        .or_else(|| path.strip_prefix("/v1/"))?
        .trim_end_matches('/');
    match (method, rest) {
        (&Method::GET, "recents") => Some(PdRoute::Recents),
        (&Method::GET, "webhooks") => Some(PdRoute::Webhooks),
        (&Method::POST, "webhooks") => Some(PdRoute::WebhookCreate),
        (&Method::DELETE, w) if w.starts_with("webhooks/") => Some(PdRoute::WebhookDelete),
        (&Method::DELETE, name) => PdObject::from_path(name).map(PdRoute::BulkDelete),
        (&Method::GET, name) => PdObject::from_fields_path(name).map(PdRoute::Fields),
        (&Method::POST, name) => PdObject::from_fields_path(name).map(PdRoute::FieldCreate),
        _ => None,
    }
}

/// A company's rate limits and plan caps ([`SandboxState::set_pipedrive_limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PdLimits {
    /// Tokens per UTC day for the whole company (30,000 × plan multiplier × seats).
    pub daily_token_budget: u64,
    /// Requests per rolling 2 s per API-token user.
    pub api_token_burst: u64,
    /// Requests per rolling 2 s per OAuth access token's user.
    pub oauth_burst: u64,
    /// Search requests per rolling 2 s per token (any plan: 10).
    pub search_burst: u64,
    /// Custom fields the company may create (persons and organizations together).
    pub custom_field_limit: usize,
}

impl Default for PdLimits {
    /// The Growth plan with 5 seats.
    fn default() -> Self {
        Self {
            daily_token_budget: 30_000 * 2 * 5,
            api_token_burst: 40,
            oauth_burst: 160,
            search_burst: 10,
            custom_field_limit: 100,
        }
    }
}

/// A record as the sandbox holds it, for assertions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PdRecord {
    /// The record id.
    pub id: u64,
    /// Person or organization.
    pub object: PdObject,
    /// Soft-deleted.
    pub deleted: bool,
    /// RFC 3339, whole seconds.
    pub add_time: String,
    /// RFC 3339, whole seconds.
    pub update_time: String,
    /// The record as `GET /api/v2/{object}/{id}` shows it (`is_deleted` included).
    pub data: Value,
}

/// One email or phone.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    value: String,
    primary: bool,
    label: String,
}

impl Entry {
    fn to_json(&self) -> Value {
        json!({"value": self.value, "primary": self.primary, "label": self.label})
    }
}

/// One stored person or organization.
#[derive(Clone, Debug)]
struct Rec {
    id: u64,
    name: String,
    owner_id: u64,
    org_id: Option<u64>,
    emails: Vec<Entry>,
    phones: Vec<Entry>,
    address: Option<Map<String, Value>>,
    visible_to: u64,
    label_ids: Vec<u64>,
    marketing_status: Option<String>,
    custom: BTreeMap<String, Value>,
    add_ms: i64,
    update_ms: i64,
    deleted: bool,
    /// A deal's members (`name` holds its `title`, `org_id` its organization).
    deal: DealPart,
}

/// What a deal has beyond a title, an organization and the common members.
#[derive(Clone, Debug, Default)]
struct DealPart {
    person_id: Option<u64>,
    pipeline_id: u64,
    stage_id: u64,
    value: Option<Value>,
    currency: String,
    status: String,
    expected_close_date: Option<String>,
    stage_change_ms: Option<i64>,
}

/// A pipeline: id, name.
const PIPELINES: [(u64, &str); 2] = [(1, "Pipeline"), (2, "Renewals")];

/// Stages (Pipedrive's default pipeline, and a second one): id, pipeline id, name,
/// deal probability. Stage ids are unique across pipelines, as Pipedrive's.
#[rustfmt::skip]
const STAGES: [(u64, u64, &str, u64); 7] = [
    (1, 1, "Qualified", 100),
    (2, 1, "Contact Made", 100),
    (3, 1, "Demo Scheduled", 100),
    (4, 1, "Proposal Made", 100),
    (5, 1, "Negotiations Started", 100),
    (6, 2, "Renewal Due", 100),
    (7, 2, "Renewal Negotiated", 100),
];

/// The pipeline of stage `stage`, if there is such a stage.
fn stage_pipeline(stage: u64) -> Option<u64> {
    STAGES.iter().find(|s| s.0 == stage).map(|s| s.1)
}

/// The first stage of pipeline `pipeline`.
fn first_stage(pipeline: u64) -> Option<u64> {
    STAGES.iter().find(|s| s.1 == pipeline).map(|s| s.0)
}

impl Rec {
    fn new(id: u64, owner_id: u64, now: i64) -> Self {
        Self {
            id,
            name: String::new(),
            owner_id,
            org_id: None,
            emails: Vec::new(),
            phones: Vec::new(),
            address: None,
            visible_to: 3,
            label_ids: Vec::new(),
            marketing_status: None,
            custom: BTreeMap::new(),
            add_ms: now,
            update_ms: now,
            deleted: false,
            deal: DealPart::default(),
        }
    }

    fn update_s(&self) -> i64 {
        self.update_ms.div_euclid(1000)
    }

    fn first_last(&self) -> (Value, Value) {
        let name = self.name.trim();
        match name.split_once(char::is_whitespace) {
            Some((first, last)) => (json!(first), json!(last.trim())),
            None if name.is_empty() => (Value::Null, Value::Null),
            None => (json!(name), Value::Null),
        }
    }

    fn custom_json(&self, only: Option<&[String]>) -> Value {
        Value::Object(
            self.custom
                .iter()
                .filter(|(k, _)| only.is_none_or(|keys| keys.iter().any(|o| o == *k)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// The v2 shape.
    fn to_v2(&self, object: PdObject, only: Option<&[String]>) -> Value {
        let mut body = json!({
            "id": self.id,
            "name": self.name,
            "owner_id": self.owner_id,
            "add_time": rfc3339(self.add_ms),
            "update_time": rfc3339(self.update_ms),
            "is_deleted": self.deleted,
            "visible_to": self.visible_to,
            "label_ids": self.label_ids,
            "custom_fields": self.custom_json(only),
        });
        match object {
            PdObject::Persons => {
                let (first, last) = self.first_last();
                body["first_name"] = first;
                body["last_name"] = last;
                body["org_id"] = json!(self.org_id);
                body["emails"] = self.emails.iter().map(Entry::to_json).collect();
                body["phones"] = self.phones.iter().map(Entry::to_json).collect();
                if let Some(status) = &self.marketing_status {
                    body["marketing_status"] = json!(status);
                }
            }
            PdObject::Organizations => {
                body["address"] = self.address.clone().map_or(Value::Null, Value::Object);
            }
            PdObject::Deals => {
                if let Value::Object(map) = &mut body {
                    map.remove("name");
                    map.extend(self.deal_members(&rfc3339));
                }
            }
        }
        body
    }

    /// A deal's own members, times written by `time`.
    fn deal_members(&self, time: &dyn Fn(i64) -> String) -> Map<String, Value> {
        let d = &self.deal;
        let mut m = Map::new();
        m.insert("title".into(), json!(self.name));
        m.insert("person_id".into(), json!(d.person_id));
        m.insert("org_id".into(), json!(self.org_id));
        m.insert("pipeline_id".into(), json!(d.pipeline_id));
        m.insert("stage_id".into(), json!(d.stage_id));
        m.insert("value".into(), d.value.clone().unwrap_or(json!(0)));
        m.insert("currency".into(), json!(d.currency));
        m.insert("status".into(), json!(d.status));
        m.insert("expected_close_date".into(), json!(d.expected_close_date));
        m.insert(
            "stage_change_time".into(),
            d.stage_change_ms.map_or(Value::Null, |t| json!(time(t))),
        );
        m.insert("is_archived".into(), json!(false));
        m.insert("probability".into(), Value::Null);
        m.insert("lost_reason".into(), Value::Null);
        m.insert("origin".into(), json!("API"));
        m
    }

    /// The v1 shape (recents `data`): custom fields flat at the top level.
    fn to_v1(&self, object: PdObject, company_id: u64) -> Value {
        let first_char = self
            .name
            .trim()
            .chars()
            .next()
            .map(|c| c.to_lowercase().to_string())
            .unwrap_or_default();
        let mut body = json!({
            "id": self.id,
            "company_id": company_id,
            "name": self.name,
            "active_flag": !self.deleted,
            "first_char": first_char,
            "add_time": v1_time(self.add_ms),
            "update_time": v1_time(self.update_ms),
            "visible_to": self.visible_to.to_string(),
            "label_ids": self.label_ids,
        });
        match object {
            PdObject::Persons => {
                let (first, last) = self.first_last();
                body["first_name"] = first;
                body["last_name"] = last;
                body["owner_id"] = json!(self.owner_id);
                body["org_id"] = json!(self.org_id);
                body["email"] = self.emails.iter().map(Entry::to_json).collect();
                body["phone"] = self.phones.iter().map(Entry::to_json).collect();
            }
            PdObject::Deals => {
                if let Value::Object(map) = &mut body {
                    map.remove("name");
                    map.remove("active_flag");
                    map.remove("first_char");
                    map.extend(self.deal_members(&v1_time));
                    map.insert("user_id".into(), json!(self.owner_id));
                    map.insert(
                        "active".into(),
                        json!(!self.deleted && self.deal.status == "open"),
                    );
                    map.insert("deleted".into(), json!(self.deleted));
                    if self.deleted {
                        map.insert("status".into(), json!("deleted"));
                    }
                }
            }
            PdObject::Organizations => {
                body["owner_id"] = json!({"id": self.owner_id, "value": self.owner_id,
                    "has_pic": 0, "pic_hash": null, "active_flag": true});
                body["address"] = self
                    .address
                    .as_ref()
                    .and_then(|a| a.get("value").cloned())
                    .unwrap_or(Value::Null);
            }
        }
        if let Value::Object(map) = &mut body {
            for (key, value) in &self.custom {
                map.insert(key.clone(), value.clone());
            }
        }
        body
    }
}

/// Records of one type in one company.
#[derive(Debug, Default)]
struct Table {
    records: BTreeMap<u64, Rec>,
    next_id: u64,
}

impl Table {
    fn next(&mut self) -> u64 {
        if self.next_id == 0 {
            self.next_id = 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn live(&self, id: u64) -> Option<&Rec> {
        self.records.get(&id).filter(|r| !r.deleted)
    }
}

/// A field definition (built-in or custom).
#[derive(Clone, Debug)]
struct Field {
    id: u64,
    key: String,
    name: String,
    field_type: String,
    options: Option<Vec<Value>>,
    custom: bool,
    mandatory: bool,
    add_visible: bool,
    add_ms: i64,
    creator: u64,
}

impl Field {
    fn to_json(&self, order_nr: usize) -> Value {
        json!({
            "id": self.id,
            "key": self.key,
            "name": self.name,
            "order_nr": order_nr,
            "field_type": self.field_type,
            "add_time": v1_time(self.add_ms),
            "update_time": v1_time(self.add_ms),
            "last_updated_by_user_id": self.creator,
            "created_by_user_id": self.creator,
            "active_flag": true,
            "edit_flag": self.custom,
            "index_visible_flag": true,
            "details_visible_flag": true,
            "add_visible_flag": self.add_visible,
            "important_flag": false,
            "bulk_edit_allowed": self.custom,
            "searchable_flag": self.custom && SEARCHABLE_TYPES.contains(&self.field_type.as_str()),
            "filtering_allowed": true,
            "sortable_flag": true,
            "mandatory_flag": self.mandatory,
            "options": self.options.clone().map_or(Value::Null, Value::Array),
        })
    }

    fn option_ids(&self) -> Vec<u64> {
        self.options
            .iter()
            .flatten()
            .filter_map(|o| o.get("id").and_then(Value::as_u64))
            .collect()
    }
}

/// The field types a custom field may have (the spec's `field_type` enum).
const FIELD_TYPES: [&str; 17] = [
    "address",
    "date",
    "daterange",
    "double",
    "enum",
    "monetary",
    "org",
    "people",
    "phone",
    "set",
    "text",
    "time",
    "timerange",
    "user",
    "varchar",
    "varchar_auto",
    "visible_to",
];

/// Custom field types the search endpoints look into.
const SEARCHABLE_TYPES: [&str; 7] = [
    "address",
    "varchar",
    "text",
    "varchar_auto",
    "double",
    "monetary",
    "phone",
];

/// Built-in fields: key, name, type, mandatory.
#[rustfmt::skip]
const PERSON_FIELDS: [(&str, &str, &str, bool); 13] = [
    ("id", "ID", "int", false),
    ("name", "Name", "varchar", true),
    ("first_name", "First name", "varchar", false),
    ("last_name", "Last name", "varchar", false),
    ("org_id", "Organization", "org", false),
    ("owner_id", "Owner", "user", false),
    ("email", "Email", "varchar", false),
    ("phone", "Phone", "phone", false),
    ("label_ids", "Labels", "set", false),
    ("visible_to", "Visible to", "visible_to", false),
    ("marketing_status", "Marketing status", "enum", false),
    ("add_time", "Person created", "date", false),
    ("update_time", "Update time", "date", false),
];

#[rustfmt::skip]
const ORG_FIELDS: [(&str, &str, &str, bool); 9] = [
    ("id", "ID", "int", false),
    ("name", "Name", "varchar", true),
    ("owner_id", "Owner", "user", false),
    ("address", "Address", "address", false),
    ("label_ids", "Labels", "set", false),
    ("visible_to", "Visible to", "visible_to", false),
    ("people_count", "People", "int", false),
    ("add_time", "Organization created", "date", false),
    ("update_time", "Update time", "date", false),
];

#[rustfmt::skip]
const DEAL_FIELDS: [(&str, &str, &str, bool); 15] = [
    ("id", "ID", "int", false),
    ("title", "Title", "varchar", true),
    ("owner_id", "Owner", "user", false),
    ("person_id", "Contact person", "people", false),
    ("org_id", "Organization", "org", false),
    ("value", "Value", "monetary", false),
    ("currency", "Currency", "varchar", false),
    ("pipeline_id", "Pipeline", "double", false),
    ("stage_id", "Stage", "stage", false),
    ("status", "Status", "status", false),
    ("expected_close_date", "Expected close date", "date", false),
    ("label_ids", "Labels", "set", false),
    ("visible_to", "Visible to", "visible_to", false),
    ("add_time", "Deal created", "date", false),
    ("update_time", "Update time", "date", false),
];

/// A custom field to create.
struct NewField<'a> {
    name: &'a str,
    field_type: &'a str,
    options: Option<Vec<Value>>,
    add_visible: bool,
    creator: u64,
    now: i64,
}

/// One company's records, fields, limits and spent budget.
#[derive(Debug)]
pub(crate) struct Company {
    company_id: u64,
    persons: Table,
    orgs: Table,
    deals: Table,
    person_fields: Vec<Field>,
    org_fields: Vec<Field>,
    deal_fields: Vec<Field>,
    next_field_id: u64,
    limits: PdLimits,
    day: i64,
    tokens_used: u64,
    /// POST/PUT/PATCH calls per API-token user today.
    writes: HashMap<u64, u64>,
    /// Webhooks, record changes not yet delivered (see [`super::pipedrive_webhooks`]).
    pub(crate) hooks: super::pipedrive_webhooks::CompanyHooks,
}

impl Company {
    fn new() -> Self {
        let built_in = |defs: &[(&str, &str, &str, bool)], first_id: u64| -> Vec<Field> {
            defs.iter()
                .enumerate()
                .map(|(i, (key, name, kind, mandatory))| Field {
                    id: first_id + i as u64,
                    key: (*key).to_owned(),
                    name: (*name).to_owned(),
                    field_type: (*kind).to_owned(),
                    options: None,
                    custom: false,
                    mandatory: *mandatory,
                    add_visible: true,
                    add_ms: 1_704_067_200_000, // 2024-01-01
                    creator: 1,
                })
                .collect()
        };
        Self {
            // The default account's; the first call of a caller sets the real one.
            company_id: 5_000_001,
            persons: Table::default(),
            orgs: Table::default(),
            deals: Table::default(),
            person_fields: built_in(&PERSON_FIELDS, 9001),
            org_fields: built_in(&ORG_FIELDS, 4001),
            deal_fields: built_in(&DEAL_FIELDS, 8001),
            next_field_id: 12_001,
            limits: PdLimits::default(),
            day: 0,
            tokens_used: 0,
            writes: HashMap::new(),
            hooks: Default::default(),
        }
    }

    fn table(&self, object: PdObject) -> &Table {
        match object {
            PdObject::Persons => &self.persons,
            PdObject::Organizations => &self.orgs,
            PdObject::Deals => &self.deals,
        }
    }

    fn table_mut(&mut self, object: PdObject) -> &mut Table {
        match object {
            PdObject::Persons => &mut self.persons,
            PdObject::Organizations => &mut self.orgs,
            PdObject::Deals => &mut self.deals,
        }
    }

    fn fields(&self, object: PdObject) -> &[Field] {
        match object {
            PdObject::Persons => &self.person_fields,
            PdObject::Organizations => &self.org_fields,
            PdObject::Deals => &self.deal_fields,
        }
    }

    fn custom_field(&self, object: PdObject, key: &str) -> Option<&Field> {
        self.fields(object)
            .iter()
            .find(|f| f.custom && f.key == key)
    }

    fn custom_count(&self) -> usize {
        self.person_fields
            .iter()
            .chain(&self.org_fields)
            .chain(&self.deal_fields)
            .filter(|f| f.custom)
            .count()
    }

    /// Adds a custom field.
    fn define(&mut self, domain: &str, object: PdObject, new: NewField<'_>) -> Field {
        let NewField {
            name,
            field_type,
            options,
            add_visible,
            creator,
            now,
        } = new;
        let id = self.next_field_id;
        self.next_field_id += 1;
        let digest = Sha256::digest(format!("{domain}/{}/{id}/{name}", object.as_str()));
        let key: String = digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .chars()
            .take(40)
            .collect();
        let options = options.map(|opts| {
            opts.iter()
                .enumerate()
                .map(|(i, o)| json!({"id": id * 100 + i as u64 + 1, "label": o.get("label").cloned().unwrap_or(Value::Null)}))
                .collect()
        });
        let field = Field {
            id,
            key,
            name: name.to_owned(),
            field_type: field_type.to_owned(),
            options,
            custom: true,
            mandatory: false,
            add_visible,
            add_ms: now,
            creator,
        };
        match object {
            PdObject::Persons => self.person_fields.push(field.clone()),
            PdObject::Organizations => self.org_fields.push(field.clone()),
            PdObject::Deals => self.deal_fields.push(field.clone()),
        }
        field
    }

    fn roll_day(&mut self, now_ms: i64) {
        let day = now_ms.div_euclid(DAY_MS);
        if self.day != day {
            self.day = day;
            self.tokens_used = 0;
            self.writes.clear();
        }
    }
}

/// All Pipedrive CRM state: per-company data and budgets, per-token burst windows and
/// the malformed-response knob.
#[derive(Debug, Default)]
pub(crate) struct PdStore {
    pub(crate) companies: HashMap<String, Company>,
    /// Webhook requests waiting and sent.
    pub(crate) hook_out: super::pipedrive_webhooks::Outbox,
    bursts: HashMap<String, VecDeque<Instant>>,
    search_bursts: HashMap<String, VecDeque<Instant>>,
    malformed: HashMap<String, u32>,
}

impl PdStore {
    fn company(&mut self, domain: &str) -> &mut Company {
        self.companies
            .entry(domain.to_owned())
            .or_insert_with(Company::new)
    }

    fn take_malformed(&mut self, route: &str) -> bool {
        match self.malformed.get_mut(route) {
            Some(n) if *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    self.malformed.remove(route);
                }
                true
            }
            _ => false,
        }
    }

    /// Counts a call against the burst window and the daily budget: the headers' figures,
    /// or the finished 429.
    #[allow(clippy::result_large_err)] // The error is the finished response.
    fn admit(
        &mut self,
        caller: &Caller,
        route: PdRoute,
        method: &Method,
        now: Instant,
        now_ms: i64,
    ) -> Result<Usage, Response> {
        let company = self
            .companies
            .entry(caller.company.clone())
            .or_insert_with(Company::new);
        company.roll_day(now_ms);
        if caller.company_id != 0 {
            company.company_id = caller.company_id;
        }
        let limits = company.limits;
        let (windows, burst) = if route.is_search() {
            (&mut self.search_bursts, limits.search_burst)
        } else if caller.oauth_scopes.is_some() {
            (&mut self.bursts, limits.oauth_burst)
        } else {
            (&mut self.bursts, limits.api_token_burst)
        };
        let window = windows.entry(caller.key.clone()).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= BURST_WINDOW)
        {
            window.pop_front();
        }
        let reset_s = |window: &VecDeque<Instant>| -> u64 {
            window.front().map_or(2, |t| {
                let left = BURST_WINDOW.saturating_sub(now.duration_since(*t));
                left.as_millis().div_ceil(1000).max(1) as u64
            })
        };
        let writes_used = company.writes.get(&caller.user_id).copied().unwrap_or(0);
        let mut usage = Usage {
            burst_limit: burst,
            burst_remaining: burst.saturating_sub(window.len() as u64),
            burst_reset_s: reset_s(window),
            daily_limit: limits.daily_token_budget,
            daily_remaining: limits
                .daily_token_budget
                .saturating_sub(company.tokens_used),
            writes_left: (caller.oauth_scopes.is_none())
                .then(|| DAILY_WRITES.saturating_sub(writes_used)),
        };
        if window.len() as u64 >= burst {
            usage.burst_remaining = 0;
            let wait = usage.burst_reset_s;
            return Err(with_usage(over_limit(wait), &usage));
        }
        let cost = route.token_cost();
        if company.tokens_used + cost > limits.daily_token_budget {
            let until_midnight = (company.day + 1) * DAY_MS - now_ms;
            let wait = (until_midnight.max(1000) as u64).div_ceil(1000);
            return Err(with_usage(over_limit(wait), &usage));
        }
        window.push_back(now);
        company.tokens_used += cost;
        let is_write = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
        if is_write && caller.oauth_scopes.is_none() {
            *company.writes.entry(caller.user_id).or_insert(0) += 1;
        }
        usage.burst_remaining = burst.saturating_sub(window.len() as u64);
        usage.burst_reset_s = reset_s(window);
        usage.daily_remaining = limits
            .daily_token_budget
            .saturating_sub(company.tokens_used);
        usage.writes_left = usage
            .writes_left
            .map(|_| DAILY_WRITES.saturating_sub(writes_used + u64::from(is_write)));
        Ok(usage)
    }
}

/// What the rate-limit headers report.
#[derive(Clone, Copy, Debug)]
struct Usage {
    burst_limit: u64,
    burst_remaining: u64,
    burst_reset_s: u64,
    daily_limit: u64,
    daily_remaining: u64,
    writes_left: Option<u64>,
}

fn with_usage(mut response: Response, usage: &Usage) -> Response {
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: u64| {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    put("x-ratelimit-limit", usage.burst_limit);
    put("x-ratelimit-remaining", usage.burst_remaining);
    put("x-ratelimit-reset", usage.burst_reset_s);
    put("x-daily-ratelimit-token-limit", usage.daily_limit);
    put("x-daily-ratelimit-token-remaining", usage.daily_remaining);
    if let Some(left) = usage.writes_left {
        put("x-daily-requests-left", left);
    }
    response
}

fn over_limit(retry_after: u64) -> Response {
    wire::with_retry_after(
        pipedrive::error_body(StatusCode::TOO_MANY_REQUESTS, "Request over limit"),
        retry_after,
    )
}

/// Who is calling.
#[derive(Clone, Debug)]
struct Caller {
    company: String,
    company_id: u64,
    user_id: u64,
    /// Burst-window key (per user and credential kind).
    key: String,
    /// `Some` for OAuth tokens: the granted scopes.
    oauth_scopes: Option<Vec<String>>,
}

#[allow(clippy::result_large_err)] // The error is the finished response.
fn authenticate(state: &SandboxState, req: &ProviderRequest) -> Result<Caller, Response> {
    let host_company = company_of(&req.host);
    if let Some(token) = wire::bearer_token(&req.headers) {
        return match oauth::bearer_access(state, OAuthProvider::Pipedrive, Some(token)) {
            AccessCheck::Granted(grant)
                if host_company.is_none_or(|c| c == grant.user.company_domain) =>
            {
                let user_id = grant.user.user_id.parse::<u64>().unwrap_or(1);
                Ok(Caller {
                    company: grant.user.company_domain.clone(),
                    company_id: grant.user.company_id,
                    user_id,
                    key: format!(
                        "oauth:{}:{user_id}:{}",
                        grant.user.company_domain, grant.client_id
                    ),
                    oauth_scopes: Some(grant.scopes.clone()),
                })
            }
            _ => Err(pipedrive::unauthorized()),
        };
    }
    let account = pipedrive::authenticate(state, req).ok_or_else(pipedrive::unauthorized)?;
    let ProviderAccount::Pipedrive {
        company_domain,
        company_id,
        ..
    } = &account.provider
    else {
        return Err(pipedrive::unauthorized());
    };
    Ok(Caller {
        company: company_domain.clone(),
        company_id: *company_id,
        user_id: account.id,
        key: format!("token:{company_domain}:{}", account.id),
        oauth_scopes: None,
    })
}

/// A handler's answer: status and JSON body.
type Reply = (StatusCode, Value);

fn fail(status: StatusCode, message: &str) -> Reply {
    (
        status,
        json!({
            "success": false,
            "error": message,
            "error_info": ERROR_INFO,
            "data": null,
            "additional_data": null,
        }),
    )
}

fn bad(message: &str) -> Reply {
    fail(StatusCode::BAD_REQUEST, message)
}

fn ok(body: Value) -> Result<Reply, Reply> {
    Ok((StatusCode::OK, body))
}

/// Serves a CRM route: authenticate, check scopes, spend budget, run, add headers.
pub(crate) fn handle(route: PdRoute, state: &SandboxState, req: &ProviderRequest) -> Response {
    let caller = match authenticate(state, req) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    if let Some(scopes) = &caller.oauth_scopes
        && !route
            .required_scopes()
            .iter()
            .any(|needed| scopes.iter().any(|s| s == needed))
    {
        return pipedrive::scope_mismatch();
    }
    let mut store = state.pd_store();
    let usage = match store.admit(&caller, route, &req.method, Instant::now(), now_ms()) {
        Ok(usage) => usage,
        Err(response) => return response,
    };
    let (status, body) = serve(route, &mut store, &caller, req).unwrap_or_else(|e| e);
    let response = if store.take_malformed(route.name()) {
        malformed(status, &body)
    } else {
        wire::json(status, body)
    };
    drop(store);
    with_usage(response, &usage)
}

fn malformed(status: StatusCode, body: &Value) -> Response {
    let text = body.to_string();
    let cut: String = text.chars().take(text.chars().count() / 2).collect();
    let mut response = (status, format!("{cut}\u{0}")).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn serve(
    route: PdRoute,
    store: &mut PdStore,
    caller: &Caller,
    req: &ProviderRequest,
) -> Result<Reply, Reply> {
    let domain = caller.company.clone();
    let company = store.company(&domain);
    let now = now_ms();
    let id_segment = req
        .path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    match route {
        PdRoute::List(object) => list(company, object, req),
        PdRoute::Get(object) => {
            let id = path_id(id_segment)?;
            let only = custom_fields_param(req)?;
            let record = company
                .table(object)
                .live(id)
                .ok_or_else(|| not_found(object))?;
            ok(json!({"success": true, "data": record.to_v2(object, only.as_deref())}))
        }
        PdRoute::Create(object) => {
            let body = body_object(req)?;
            let mut record = Rec::new(0, caller.user_id, now);
            apply(company, object, &mut record, &body, true)?;
            // The id is taken only once the write is valid.
            let id = company.table_mut(object).next();
            record.id = id;
            record.update_ms = now;
            let data = record.to_v2(object, None);
            company.table_mut(object).records.insert(id, record);
            company.hooks.note(object, id, "create", "api", now);
            ok(json!({"success": true, "data": data}))
        }
        PdRoute::Update(object) => {
            let id = path_id(id_segment)?;
            let body = body_object(req)?;
            let mut record = company
                .table(object)
                .live(id)
                .cloned()
                .ok_or_else(|| not_found(object))?;
            apply(company, object, &mut record, &body, false)?;
            record.update_ms = now.max(record.update_ms);
            let data = record.to_v2(object, None);
            company.table_mut(object).records.insert(id, record);
            company.hooks.note(object, id, "change", "api", now);
            ok(json!({"success": true, "data": data}))
        }
        PdRoute::Delete(object) => {
            let id = path_id(id_segment)?;
            if !soft_delete(company, object, id, now) {
                return Err(not_found(object));
            }
            ok(json!({"success": true, "data": {"id": id}}))
        }
        PdRoute::BulkDelete(object) => {
            let raw = wire::query_param(req.query.as_deref(), "ids")
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| bad("ids must be given"))?;
            let ids = raw
                .split(',')
                .map(|s| s.trim().parse::<u64>())
                .collect::<Result<Vec<u64>, _>>()
                .map_err(|_| bad("ids must be a comma-separated list of integers"))?;
            if ids.len() > BULK_DELETE_LIMIT {
                return Err(bad(&format!(
                    "Bulk delete is limited to {BULK_DELETE_LIMIT} items per request"
                )));
            }
            let deleted: Vec<u64> = ids
                .into_iter()
                .filter(|id| soft_delete(company, object, *id, now))
                .collect();
            ok(json!({"success": true, "data": {"id": deleted}}))
        }
        PdRoute::Search(object) => search(company, object, req),
        PdRoute::Fields(object) => {
            let (start, limit) = v1_paging(req)?;
            let fields = company.fields(object);
            let page: Vec<Value> = fields
                .iter()
                .enumerate()
                .skip(start)
                .take(limit)
                .map(|(i, f)| f.to_json(i + 1))
                .collect();
            let more = start + limit < fields.len();
            ok(json!({
                "success": true,
                "data": page,
                "additional_data": {"pagination": v1_pagination(start, limit, more)},
            }))
        }
        PdRoute::FieldCreate(object) => create_field(company, &domain, object, caller, req, now),
        PdRoute::Recents => recents(company, req),
        PdRoute::Pipelines | PdRoute::Stages => pipelines(route, req),
        PdRoute::Webhooks | PdRoute::WebhookCreate | PdRoute::WebhookDelete => {
            super::pipedrive_webhooks::serve(route, company, caller.user_id, &domain, req, now)
        }
    }
}

/// `GET /api/v2/pipelines` and `GET /api/v2/stages` (`pipeline_id` filters stages):
/// the company's fixed pipelines and stages, on one page.
fn pipelines(route: PdRoute, req: &ProviderRequest) -> Result<Reply, Reply> {
    let limit = limit_param(req)?;
    let created = rfc3339(1_704_067_200_000);
    let data: Vec<Value> = if route == PdRoute::Pipelines {
        PIPELINES
            .iter()
            .enumerate()
            .map(|(i, (id, name))| {
                json!({"id": id, "name": name, "order_nr": i + 1, "is_deleted": false,
                    "is_deal_probability_enabled": false, "add_time": created,
                    "update_time": created, "is_selected": i == 0})
            })
            .take(limit)
            .collect()
    } else {
        let pipeline = int_param(req, "pipeline_id")?;
        if pipeline.is_some_and(|p| !PIPELINES.iter().any(|x| x.0 == p)) {
            return Err(fail(StatusCode::NOT_FOUND, "Pipeline not found"));
        }
        STAGES
            .iter()
            .filter(|s| pipeline.is_none_or(|p| s.1 == p))
            .enumerate()
            .map(|(i, (id, pipeline_id, name, probability))| {
                json!({"id": id, "order_nr": i + 1, "name": name, "is_deleted": false,
                    "deal_probability": probability, "pipeline_id": pipeline_id,
                    "is_deal_rot_enabled": false, "days_to_rotten": null,
                    "add_time": created, "update_time": created})
            })
            .take(limit)
            .collect()
    };
    ok(json!({"success": true, "data": data, "additional_data": {"next_cursor": null}}))
}

fn not_found(object: PdObject) -> Reply {
    fail(
        StatusCode::NOT_FOUND,
        &format!("{} not found", object.title()),
    )
}

fn path_id(segment: &str) -> Result<u64, Reply> {
    segment
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| bad("Validation failed: id: Parameter 'id' must be an integer"))
}

fn soft_delete(company: &mut Company, object: PdObject, id: u64, now: i64) -> bool {
    soft_delete_by(company, object, id, now, "api")
}

fn soft_delete_by(
    company: &mut Company,
    object: PdObject,
    id: u64,
    now: i64,
    source: &'static str,
) -> bool {
    match company.table_mut(object).records.get_mut(&id) {
        Some(record) if !record.deleted => {
            record.deleted = true;
            record.update_ms = now.max(record.update_ms);
            company.hooks.note(object, id, "delete", source, now);
            true
        }
        _ => false,
    }
}

fn body_object(req: &ProviderRequest) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("Validation failed: body: must be object")),
        Err(_) => Err(bad("Invalid JSON in request body")),
    }
}

fn query(req: &ProviderRequest, name: &str) -> Option<String> {
    wire::query_param(req.query.as_deref(), name)
}

fn limit_param(req: &ProviderRequest) -> Result<usize, Reply> {
    match query(req, "limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                bad(&format!(
                    "Validation failed: limit: Parameter 'limit' must be an integer between 1 and {MAX_LIMIT}"
                ))
            }),
    }
}

fn int_param(req: &ProviderRequest, name: &str) -> Result<Option<u64>, Reply> {
    query(req, name)
        .map(|raw| {
            raw.trim().parse::<u64>().map_err(|_| {
                bad(&format!(
                    "Validation failed: {name}: Parameter '{name}' must be an integer"
                ))
            })
        })
        .transpose()
}

fn custom_fields_param(req: &ProviderRequest) -> Result<Option<Vec<String>>, Reply> {
    let Some(raw) = query(req, "custom_fields") else {
        return Ok(None);
    };
    let keys: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    if keys.len() > CUSTOM_FIELDS_QUERY_LIMIT {
        return Err(bad(&format!(
            "Validation failed: custom_fields: A maximum of {CUSTOM_FIELDS_QUERY_LIMIT} custom field keys is allowed"
        )));
    }
    Ok(Some(keys))
}

/// The position a cursor points after: sort, direction, sort value, id.
#[derive(Debug, Serialize, Deserialize)]
struct ListCursor {
    s: String,
    d: String,
    v: i64,
    i: u64,
}

fn encode_cursor(value: &impl Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn decode_cursor<T: for<'de> Deserialize<'de>>(raw: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn time_param(req: &ProviderRequest, name: &str) -> Result<Option<i64>, Reply> {
    query(req, name)
        .map(|raw| {
            parse_datetime(&raw).map(|ms| ms.div_euclid(1000)).ok_or_else(|| {
                bad(&format!(
                    "Validation failed: {name}: Parameter '{name}' must be a date-time in RFC 3339 format"
                ))
            })
        })
        .transpose()
}

fn list(company: &Company, object: PdObject, req: &ProviderRequest) -> Result<Reply, Reply> {
    let limit = limit_param(req)?;
    if query(req, "filter_id").is_some() {
        return Err(bad("Filter not found"));
    }
    let sort_by = query(req, "sort_by").unwrap_or_else(|| "id".to_owned());
    if !["id", "update_time", "add_time"].contains(&sort_by.as_str()) {
        return Err(bad(
            "Validation failed: sort_by: must be equal to one of the allowed values: id, update_time, add_time",
        ));
    }
    let direction = query(req, "sort_direction").unwrap_or_else(|| "asc".to_owned());
    if !["asc", "desc"].contains(&direction.as_str()) {
        return Err(bad(
            "Validation failed: sort_direction: must be equal to one of the allowed values: asc, desc",
        ));
    }
    let since = time_param(req, "updated_since")?;
    let until = time_param(req, "updated_until")?;
    let owner = int_param(req, "owner_id")?;
    let org = if object == PdObject::Organizations {
        None
    } else {
        int_param(req, "org_id")?
    };
    let deal_filter = |name: &str| -> Result<Option<u64>, Reply> {
        if object == PdObject::Deals {
            int_param(req, name)
        } else {
            Ok(None)
        }
    };
    let person = deal_filter("person_id")?;
    let pipeline = deal_filter("pipeline_id")?;
    let stage = deal_filter("stage_id")?;
    let status = match query(req, "status").filter(|_| object == PdObject::Deals) {
        None => None,
        Some(st) if ["open", "won", "lost", "deleted"].contains(&st.as_str()) => Some(st),
        Some(_) => {
            return Err(bad(
                "Validation failed: status: must be equal to one of the allowed values: open, won, lost, deleted",
            ));
        }
    };
    let ids: Option<Vec<u64>> = match query(req, "ids") {
        None => None,
        Some(raw) => {
            let ids = raw
                .split(',')
                .map(|s| s.trim().parse::<u64>())
                .collect::<Result<Vec<u64>, _>>()
                .map_err(|_| {
                    bad("Validation failed: ids: must be a comma-separated list of integers")
                })?;
            if ids.len() > IDS_LIMIT {
                return Err(bad(&format!(
                    "Validation failed: ids: A maximum of {IDS_LIMIT} ids is allowed"
                )));
            }
            Some(ids)
        }
    };
    let only = custom_fields_param(req)?;
    let cursor = match query(req, "cursor") {
        None => None,
        Some(raw) => {
            let cursor: ListCursor = decode_cursor(&raw).ok_or_else(|| bad("Invalid cursor"))?;
            if cursor.s != sort_by || cursor.d != direction {
                return Err(bad("Invalid cursor"));
            }
            Some(cursor)
        }
    };
    let key = |r: &Rec| -> (i64, u64) {
        let v = match sort_by.as_str() {
            "update_time" => r.update_s(),
            "add_time" => r.add_ms.div_euclid(1000),
            _ => 0,
        };
        (v, r.id)
    };
    let desc = direction == "desc";
    let mut matched: Vec<&Rec> = company
        .table(object)
        .records
        .values()
        .filter(|r| !r.deleted)
        .filter(|r| since.is_none_or(|s| r.update_s() >= s))
        .filter(|r| until.is_none_or(|u| r.update_s() < u))
        .filter(|r| owner.is_none_or(|o| r.owner_id == o))
        .filter(|r| org.is_none_or(|o| r.org_id == Some(o)))
        .filter(|r| person.is_none_or(|p| r.deal.person_id == Some(p)))
        .filter(|r| pipeline.is_none_or(|p| r.deal.pipeline_id == p))
        .filter(|r| stage.is_none_or(|st| r.deal.stage_id == st))
        .filter(|r| status.as_ref().is_none_or(|st| &r.deal.status == st))
        .filter(|r| ids.as_ref().is_none_or(|ids| ids.contains(&r.id)))
        .filter(|r| {
            cursor.as_ref().is_none_or(|c| {
                let after = key(r).cmp(&(c.v, c.i));
                if desc { after.is_lt() } else { after.is_gt() }
            })
        })
        .collect();
    matched.sort_by(|a, b| {
        let order = key(a).cmp(&key(b));
        if desc { order.reverse() } else { order }
    });
    let more = matched.len() > limit;
    matched.truncate(limit);
    let next = match matched.last() {
        Some(last) if more => {
            let (v, i) = key(last);
            json!(encode_cursor(&ListCursor {
                s: sort_by.clone(),
                d: direction.clone(),
                v,
                i
            }))
        }
        _ => Value::Null,
    };
    let data: Vec<Value> = matched
        .iter()
        .map(|r| r.to_v2(object, only.as_deref()))
        .collect();
    ok(json!({"success": true, "data": data, "additional_data": {"next_cursor": next}}))
}

/// Applies a v2 write body to `record` (a copy: the caller stores it only on success).
fn apply(
    company: &Company,
    object: PdObject,
    record: &mut Rec,
    body: &Map<String, Value>,
    create: bool,
) -> Result<(), Reply> {
    const CONTACT_SYNC: [&str; 6] = [
        "job_title",
        "notes",
        "im",
        "ims",
        "birthday",
        "postal_address",
    ];
    let allowed: &[&str] = match object {
        PdObject::Persons => &[
            "name",
            "first_name",
            "last_name",
            "owner_id",
            "org_id",
            "emails",
            "phones",
            "visible_to",
            "label_ids",
            "marketing_status",
            "add_time",
            "update_time",
            "custom_fields",
        ],
        PdObject::Organizations => &[
            "name",
            "owner_id",
            "address",
            "visible_to",
            "label_ids",
            "add_time",
            "update_time",
            "custom_fields",
        ],
        PdObject::Deals => &[
            "title",
            "owner_id",
            "person_id",
            "org_id",
            "pipeline_id",
            "stage_id",
            "value",
            "currency",
            "status",
            "expected_close_date",
            "visible_to",
            "label_ids",
            "add_time",
            "update_time",
            "custom_fields",
        ],
    };
    if object == PdObject::Persons
        && let Some(key) = body.keys().find(|k| CONTACT_SYNC.contains(&k.as_str()))
    {
        return Err(fail(
            StatusCode::FORBIDDEN,
            &format!("Field '{key}' can only be used when contact sync is enabled for the company"),
        ));
    }
    if let Some(key) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(&format!(
            "Validation failed: body: must NOT have additional properties ('{key}')"
        )));
    }
    let string = |name: &str| -> Result<Option<String>, Reply> {
        match body.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(&format!("Validation failed: {name}: must be string"))),
        }
    };
    let integer = |name: &str, value: &Value| -> Result<u64, Reply> {
        value
            .as_u64()
            .ok_or_else(|| bad(&format!("Validation failed: {name}: must be integer")))
    };
    // Name: required on create; first/last name build it when name is absent (an
    // update giving only one of them keeps the other part of the current name).
    if object == PdObject::Deals {
        match string("title")? {
            Some(title) if title.trim().is_empty() => {
                return Err(bad(
                    "Validation failed: title: must NOT have fewer than 1 characters",
                ));
            }
            Some(title) => record.name = title.trim().to_owned(),
            None if create => {
                return Err(bad(
                    "Validation failed: body: must have required property 'title'",
                ));
            }
            None => {}
        }
    }
    let first = string("first_name")?;
    let last = string("last_name")?;
    let (first, last) = match (first, last) {
        (None, None) => (None, None),
        (first, last) if create => (first, last),
        (first, last) => {
            let (cur_first, cur_last) = record.first_last();
            let part = |v: Value| v.as_str().map(str::to_owned);
            (
                first.or_else(|| part(cur_first)),
                last.or_else(|| part(cur_last)),
            )
        }
    };
    let name = match string("name")? {
        Some(name) => Some(name),
        None if first.is_some() || last.is_some() => Some(
            [first.unwrap_or_default(), last.unwrap_or_default()]
                .join(" ")
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    match name {
        Some(name) if name.trim().is_empty() => {
            return Err(bad(
                "Validation failed: name: must NOT have fewer than 1 characters",
            ));
        }
        Some(name) => record.name = name.trim().to_owned(),
        None if create && object != PdObject::Deals => {
            return Err(bad(
                "Validation failed: body: must have required property 'name'",
            ));
        }
        None => {}
    }
    if let Some(value) = body.get("owner_id") {
        record.owner_id = integer("owner_id", value)?;
    }
    if let Some(value) = body.get("visible_to") {
        let visible = integer("visible_to", value)?;
        if ![1, 3, 5, 7].contains(&visible) {
            return Err(bad(
                "Validation failed: visible_to: must be equal to one of the allowed values: 1, 3, 5, 7",
            ));
        }
        record.visible_to = visible;
    }
    if let Some(value) = body.get("label_ids") {
        let Value::Array(items) = value else {
            return Err(bad("Validation failed: label_ids: must be array"));
        };
        record.label_ids = items
            .iter()
            .map(|v| integer("label_ids", v))
            .collect::<Result<_, _>>()?;
    }
    if let Some(value) = body.get("add_time") {
        let text = value
            .as_str()
            .ok_or_else(|| bad("Validation failed: add_time: must be string"))?;
        record.add_ms = parse_datetime(text).ok_or_else(|| {
            bad("Validation failed: add_time: must be a date-time in RFC 3339 format")
        })?;
    }
    if let Some(value) = body.get("update_time")
        && !value.is_string()
    {
        return Err(bad("Validation failed: update_time: must be string"));
    }
    if object == PdObject::Persons {
        if let Some(value) = body.get("org_id") {
            record.org_id = reference(company, PdObject::Organizations, "org_id", value)?;
        }
        if let Some(value) = body.get("emails") {
            record.emails = entries("emails", value, &["work", "home", "other"])?;
        }
        if let Some(value) = body.get("phones") {
            record.phones = entries("phones", value, &["work", "home", "mobile", "other"])?;
        }
        if let Some(value) = body.get("marketing_status") {
            let status = value
                .as_str()
                .filter(|s| ["no_consent", "unsubscribed", "subscribed", "archived"].contains(s))
                .ok_or_else(|| bad("Validation failed: marketing_status: must be equal to one of the allowed values: no_consent, unsubscribed, subscribed, archived"))?;
            record.marketing_status = Some(status.to_owned());
        }
    } else if object == PdObject::Deals {
        apply_deal(company, record, body, create)?;
    } else if let Some(value) = body.get("address") {
        record.address = match value {
            Value::Null => None,
            Value::Object(map) => {
                if !map.get("value").is_some_and(Value::is_string) {
                    return Err(bad(
                        "Validation failed: address: must have required property 'value'",
                    ));
                }
                if map.values().any(|v| !v.is_string() && !v.is_null()) {
                    return Err(bad("Validation failed: address: subfields must be strings"));
                }
                Some(map.clone())
            }
            _ => return Err(bad("Validation failed: address: must be object")),
        };
    }
    if let Some(value) = body.get("custom_fields") {
        let Value::Object(map) = value else {
            return Err(bad("Validation failed: custom_fields: must be object"));
        };
        for (key, value) in map {
            let field = company
                .custom_field(object, key)
                .ok_or_else(|| bad(&format!("Custom field '{key}' does not exist")))?;
            if value.is_null() {
                record.custom.remove(key);
            } else {
                check_custom(field, value)?;
                record.custom.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

/// A member naming a live record of `object` (`null` clears it): 400 `{Title} with id
/// N not found` otherwise.
fn reference(
    company: &Company,
    object: PdObject,
    name: &str,
    value: &Value,
) -> Result<Option<u64>, Reply> {
    if value.is_null() {
        return Ok(None);
    }
    let id = value
        .as_u64()
        .ok_or_else(|| bad(&format!("Validation failed: {name}: must be integer")))?;
    company
        .table(object)
        .live(id)
        .ok_or_else(|| bad(&format!("{} with id {id} not found", object.title())))?;
    Ok(Some(id))
}

/// A deal's own members of a v2 write body (title and the common members done).
fn apply_deal(
    company: &Company,
    record: &mut Rec,
    body: &Map<String, Value>,
    create: bool,
) -> Result<(), Reply> {
    let integer = |name: &str, value: &Value| -> Result<u64, Reply> {
        value
            .as_u64()
            .ok_or_else(|| bad(&format!("Validation failed: {name}: must be integer")))
    };
    if let Some(value) = body.get("org_id") {
        record.org_id = reference(company, PdObject::Organizations, "org_id", value)?;
    }
    let deal = &mut record.deal;
    if let Some(value) = body.get("person_id") {
        deal.person_id = reference(company, PdObject::Persons, "person_id", value)?;
    }
    // Pipeline and stage: a stage names its pipeline; a pipeline alone puts the deal
    // in its first stage; a stage of another pipeline than the one given is refused.
    let pipeline = match body.get("pipeline_id") {
        None => None,
        Some(v) => {
            let p = integer("pipeline_id", v)?;
            if !PIPELINES.iter().any(|x| x.0 == p) {
                return Err(bad(&format!("Pipeline with id {p} not found")));
            }
            Some(p)
        }
    };
    let stage = match body.get("stage_id") {
        None => None,
        Some(v) => {
            let s = integer("stage_id", v)?;
            let of =
                stage_pipeline(s).ok_or_else(|| bad(&format!("Stage with id {s} not found")))?;
            if pipeline.is_some_and(|p| p != of) {
                return Err(bad(&format!(
                    "Stage with id {s} does not belong to the pipeline with id {}",
                    pipeline.unwrap_or_default()
                )));
            }
            Some((s, of))
        }
    };
    let before = deal.stage_id;
    match (stage, pipeline) {
        (Some((s, p)), _) => (deal.stage_id, deal.pipeline_id) = (s, p),
        (None, Some(p)) if p != deal.pipeline_id => {
            deal.pipeline_id = p;
            deal.stage_id = first_stage(p).unwrap_or_default();
        }
        (None, None) if create => {
            deal.pipeline_id = PIPELINES[0].0;
            deal.stage_id = first_stage(PIPELINES[0].0).unwrap_or_default();
        }
        _ => {}
    }
    if deal.stage_id != before {
        deal.stage_change_ms = Some(now_ms());
    }
    if let Some(value) = body.get("value") {
        if !value.is_number() {
            return Err(bad("Validation failed: value: must be number"));
        }
        deal.value = Some(value.clone());
    }
    match body.get("currency") {
        Some(Value::String(c)) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => {
            deal.currency = c.clone();
        }
        Some(_) => {
            return Err(bad(
                "Validation failed: currency: must be a 3-letter ISO 4217 currency code",
            ));
        }
        None if create => deal.currency = "USD".into(),
        None => {}
    }
    match body.get("status") {
        Some(Value::String(st)) if ["open", "won", "lost"].contains(&st.as_str()) => {
            deal.status = st.clone();
        }
        Some(_) => {
            return Err(bad(
                "Validation failed: status: must be equal to one of the allowed values: open, won, lost",
            ));
        }
        None if create => deal.status = "open".into(),
        None => {}
    }
    if let Some(value) = body.get("expected_close_date") {
        deal.expected_close_date = match value {
            Value::Null => None,
            Value::String(d) if parse_date(d).is_some() && d.len() == 10 => Some(d.clone()),
            _ => {
                return Err(bad(
                    "Validation failed: expected_close_date: must match format \"date\"",
                ));
            }
        };
    }
    Ok(())
}

/// Emails or phones: `[{value (required), primary, label}]`; at most one primary, the
/// first becomes primary when none is.
fn entries(name: &str, value: &Value, labels: &[&str]) -> Result<Vec<Entry>, Reply> {
    let Value::Array(items) = value else {
        return Err(bad(&format!("Validation failed: {name}: must be array")));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(map) = item else {
            return Err(bad(&format!(
                "Validation failed: {name}: items must be objects"
            )));
        };
        if let Some(key) = map
            .keys()
            .find(|k| !["value", "primary", "label"].contains(&k.as_str()))
        {
            return Err(bad(&format!(
                "Validation failed: {name}: must NOT have additional properties ('{key}')"
            )));
        }
        let value = map
            .get("value")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                bad(&format!(
                    "Validation failed: {name}: must have required property 'value'"
                ))
            })?;
        let primary = match map.get("primary") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(bad(&format!(
                    "Validation failed: {name}.primary: must be boolean"
                )));
            }
        };
        let label = match map.get("label") {
            None => "work".to_owned(),
            Some(Value::String(l)) if labels.contains(&l.as_str()) => l.clone(),
            Some(_) => {
                return Err(bad(&format!(
                    "Validation failed: {name}.label: must be equal to one of the allowed values: {}",
                    labels.join(", ")
                )));
            }
        };
        out.push(Entry {
            value: value.to_owned(),
            primary,
            label,
        });
    }
    match out.iter().filter(|e| e.primary).count() {
        0 => {
            if let Some(first) = out.first_mut() {
                first.primary = true;
            }
        }
        1 => {}
        _ => {
            return Err(bad(&format!(
                "Validation failed: {name}: only one item can be primary"
            )));
        }
    }
    Ok(out)
}

/// Checks a custom field's value against its type (v2 value shapes).
fn check_custom(field: &Field, value: &Value) -> Result<(), Reply> {
    let wrong = |what: &str| {
        Err(bad(&format!(
            "Validation failed: custom_fields.{}: {what}",
            field.key
        )))
    };
    match field.field_type.as_str() {
        "varchar" | "varchar_auto" | "phone" => match value.as_str() {
            Some(s) if s.chars().count() <= 255 => Ok(()),
            Some(_) => wrong("must NOT have more than 255 characters"),
            None => wrong("must be string"),
        },
        "text" => match value.as_str() {
            Some(s) if s.chars().count() <= 65_535 => Ok(()),
            Some(_) => wrong("must NOT have more than 65535 characters"),
            None => wrong("must be string"),
        },
        "double" => {
            if value.is_number() {
                Ok(())
            } else {
                wrong("must be number")
            }
        }
        "date" => match value.as_str() {
            Some(s) if parse_date(s).is_some() => Ok(()),
            _ => wrong("must be a date in YYYY-MM-DD format"),
        },
        "enum" => match value.as_u64() {
            Some(id) if field.option_ids().contains(&id) => Ok(()),
            _ => wrong("must be the id of one of the field's options"),
        },
        "set" => match value {
            Value::Array(items)
                if !items.is_empty()
                    && items.iter().all(|v| {
                        v.as_u64()
                            .is_some_and(|id| field.option_ids().contains(&id))
                    }) =>
            {
                Ok(())
            }
            _ => wrong("must be a non-empty array of the field's option ids (null clears)"),
        },
        "monetary" => match value {
            Value::Object(map)
                if map.get("value").is_some_and(Value::is_number)
                    && map.get("currency").is_none_or(Value::is_string) =>
            {
                Ok(())
            }
            _ => wrong("must be an object with a numeric value and a currency"),
        },
        _ => Ok(()),
    }
}

/// The text a custom value is searched as.
fn custom_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(map) => map.get("value").and_then(custom_text),
        _ => None,
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SearchCursor {
    o: usize,
}

fn search(company: &Company, object: PdObject, req: &ProviderRequest) -> Result<Reply, Reply> {
    let term = query(req, "term").unwrap_or_default();
    let exact = match query(req, "exact_match").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("Validation failed: exact_match: must be boolean")),
    };
    let min = if exact { 1 } else { 2 };
    if term.trim().chars().count() < min {
        return Err(bad(&format!(
            "Validation failed: term: must NOT have fewer than {min} characters"
        )));
    }
    let allowed: &[&str] = match object {
        PdObject::Persons => &["custom_fields", "email", "notes", "phone", "name"],
        PdObject::Organizations => &["address", "custom_fields", "notes", "name"],
        PdObject::Deals => &["custom_fields", "notes", "title"],
    };
    let fields: Vec<String> = match query(req, "fields") {
        None => allowed.iter().map(|s| (*s).to_owned()).collect(),
        Some(raw) => {
            let fields: Vec<String> = raw.split(',').map(|s| s.trim().to_owned()).collect();
            if let Some(unknown) = fields.iter().find(|f| !allowed.contains(&f.as_str())) {
                return Err(bad(&format!(
                    "Validation failed: fields: '{unknown}' must be equal to one of the allowed values: {}",
                    allowed.join(", ")
                )));
            }
            fields
        }
    };
    let limit = limit_param(req)?;
    let org_filter = if object == PdObject::Persons {
        int_param(req, "organization_id")?
    } else {
        None
    };
    let offset = match query(req, "cursor") {
        None => 0,
        Some(raw) => {
            decode_cursor::<SearchCursor>(&raw)
                .ok_or_else(|| bad("Invalid cursor"))?
                .o
        }
    };
    let needle = term.trim().to_lowercase();
    let hit = |text: &str| -> Option<f64> {
        let text = text.trim().to_lowercase();
        if text == needle {
            Some(1.0)
        } else if !exact && text.contains(&needle) {
            Some(0.5)
        } else {
            None
        }
    };
    let searched_custom: Vec<&Field> = company
        .fields(object)
        .iter()
        .filter(|f| f.custom && SEARCHABLE_TYPES.contains(&f.field_type.as_str()))
        .collect();
    let wants = |f: &str| fields.iter().any(|x| x == f);
    let mut found: Vec<(f64, &Rec, Vec<String>)> = Vec::new();
    for record in company
        .table(object)
        .records
        .values()
        .filter(|r| !r.deleted)
    {
        if org_filter.is_some_and(|o| record.org_id != Some(o)) {
            continue;
        }
        let mut score: Option<f64> = None;
        let mut best = |s: Option<f64>| {
            if let Some(s) = s {
                score = Some(score.map_or(s, |x: f64| x.max(s)));
            }
        };
        if wants("name") || wants("title") {
            best(hit(&record.name));
        }
        if wants("email") {
            for e in &record.emails {
                best(hit(&e.value));
            }
        }
        if wants("phone") {
            for p in &record.phones {
                best(hit(&p.value));
            }
        }
        if wants("address")
            && let Some(value) = record
                .address
                .as_ref()
                .and_then(|a| a.get("value"))
                .and_then(Value::as_str)
        {
            best(hit(value));
        }
        let mut matched_custom = Vec::new();
        if wants("custom_fields") {
            for field in &searched_custom {
                if let Some(text) = record.custom.get(&field.key).and_then(custom_text)
                    && let Some(s) = hit(&text)
                {
                    best(Some(s));
                    matched_custom.push(text);
                }
            }
        }
        if let Some(score) = score {
            found.push((score, record, matched_custom));
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
    let more = found.len() > offset + limit;
    let items: Vec<Value> = found
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(score, r, custom)| {
            let mut item = json!({
                "id": r.id,
                "type": object.item(),
                "name": r.name,
                "visible_to": r.visible_to,
                "owner": {"id": r.owner_id},
                "custom_fields": custom,
                "notes": [],
            });
            match object {
                PdObject::Persons => {
                    item["phones"] = r.phones.iter().map(|p| json!(p.value)).collect();
                    item["emails"] = r.emails.iter().map(|e| json!(e.value)).collect();
                    item["organization"] = r
                        .org_id
                        .and_then(|o| company.orgs.live(o))
                        .map_or(Value::Null, |org| {
                            json!({"id": org.id, "name": org.name, "address": org.address.as_ref().and_then(|a| a.get("value").cloned())})
                        });
                }
                PdObject::Deals => {
                    if let Value::Object(map) = &mut item {
                        map.remove("name");
                        map.insert("title".into(), json!(r.name));
                        map.insert("value".into(), r.deal.value.clone().unwrap_or(json!(0)));
                        map.insert("currency".into(), json!(r.deal.currency));
                        map.insert("status".into(), json!(r.deal.status));
                        map.insert("stage".into(), json!({"id": r.deal.stage_id}));
                        map.insert("person".into(), r.deal.person_id.map_or(Value::Null, |p| json!({"id": p})));
                        map.insert("organization".into(), r.org_id.map_or(Value::Null, |o| json!({"id": o})));
                    }
                }
                PdObject::Organizations => {
                    item["address"] = r
                        .address
                        .as_ref()
                        .and_then(|a| a.get("value").cloned())
                        .unwrap_or(Value::Null);
                }
            }
            json!({"result_score": score, "item": item})
        })
        .collect();
    let next = if more {
        json!(encode_cursor(&SearchCursor { o: offset + limit }))
    } else {
        Value::Null
    };
    ok(json!({
        "success": true,
        "data": {"items": items},
        "additional_data": {"next_cursor": next},
    }))
}

fn v1_paging(req: &ProviderRequest) -> Result<(usize, usize), Reply> {
    let start = match query(req, "start") {
        None => 0,
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .map_err(|_| bad("start must be a non-negative integer"))?,
    };
    let limit = limit_param(req)?;
    Ok((start, limit))
}

fn v1_pagination(start: usize, limit: usize, more: bool) -> Value {
    let mut pagination = json!({"start": start, "limit": limit, "more_items_in_collection": more});
    if more {
        pagination["next_start"] = json!(start + limit);
    }
    pagination
}

/// The body of a v1 write: JSON or form-encoded.
fn v1_body(req: &ProviderRequest) -> Result<Map<String, Value>, Reply> {
    let form = wire::header(&req.headers, "content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form {
        return Ok(url::form_urlencoded::parse(&req.body)
            .map(|(k, v)| {
                let value = if k == "options" {
                    serde_json::from_str(&v).unwrap_or(Value::String(v.into_owned()))
                } else {
                    Value::String(v.into_owned())
                };
                (k.into_owned(), value)
            })
            .collect());
    }
    body_object(req)
}

fn create_field(
    company: &mut Company,
    domain: &str,
    object: PdObject,
    caller: &Caller,
    req: &ProviderRequest,
    now: i64,
) -> Result<Reply, Reply> {
    let body = v1_body(req)?;
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("Field name must be given"))?;
    let field_type = body
        .get("field_type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Field type must be given"))?;
    if !FIELD_TYPES.contains(&field_type) {
        return Err(bad(&format!("Field type '{field_type}' is not supported")));
    }
    let options = match (field_type, body.get("options")) {
        ("enum" | "set", Some(Value::Array(items)))
            if !items.is_empty()
                && items.iter().all(|o| {
                    o.get("label")
                        .and_then(Value::as_str)
                        .is_some_and(|l| !l.trim().is_empty())
                }) =>
        {
            Some(items.clone())
        }
        ("enum" | "set", _) => {
            return Err(bad(
                "Options must be given as a non-empty array of {\"label\": …} objects for enum and set fields",
            ));
        }
        _ => None,
    };
    let add_visible = match body.get("add_visible_flag") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" || s == "1" => true,
        Some(Value::String(s)) if s == "false" || s == "0" => false,
        Some(_) => return Err(bad("add_visible_flag must be a boolean")),
    };
    if company.custom_count() >= company.limits.custom_field_limit {
        let (status, mut body) = fail(
            StatusCode::FORBIDDEN,
            "Couldn't add the field. Custom fields limit reached.",
        );
        body["code"] = json!("feature_capping_custom_fields_limit");
        return Err((status, body));
    }
    let field = company.define(
        domain,
        object,
        NewField {
            name,
            field_type,
            options,
            add_visible,
            creator: caller.user_id,
            now,
        },
    );
    let order = company.fields(object).len();
    ok(json!({"success": true, "data": field.to_json(order)}))
}

fn recents(company: &Company, req: &ProviderRequest) -> Result<Reply, Reply> {
    const KNOWN: [&str; 12] = [
        "activity",
        "activityType",
        "deal",
        "file",
        "filter",
        "note",
        "person",
        "organization",
        "pipeline",
        "product",
        "stage",
        "user",
    ];
    let raw_since =
        query(req, "since_timestamp").ok_or_else(|| bad("since_timestamp must be given"))?;
    let since = parse_v1_time(&raw_since)
        .ok_or_else(|| bad("since_timestamp must be in format YYYY-MM-DD HH:MM:SS"))?;
    let items: Vec<String> = match query(req, "items") {
        None => KNOWN.iter().map(|s| (*s).to_owned()).collect(),
        Some(raw) => {
            let items: Vec<String> = raw.split(',').map(|s| s.trim().to_owned()).collect();
            if let Some(unknown) = items.iter().find(|i| !KNOWN.contains(&i.as_str())) {
                return Err(bad(&format!("Unknown item type '{unknown}'")));
            }
            items
        }
    };
    let (start, limit) = v1_paging(req)?;
    let since_s = since.div_euclid(1000);
    let mut changes: Vec<(i64, PdObject, &Rec)> = Vec::new();
    for object in [PdObject::Persons, PdObject::Organizations, PdObject::Deals] {
        if !items.iter().any(|i| i == object.item()) {
            continue;
        }
        changes.extend(
            company
                .table(object)
                .records
                .values()
                .filter(|r| r.update_s() >= since_s)
                .map(|r| (r.update_ms, object, r)),
        );
    }
    changes.sort_by_key(|c| (c.0, c.1, c.2.id));
    let more = changes.len() > start + limit;
    let page: Vec<&(i64, PdObject, &Rec)> = changes.iter().skip(start).take(limit).collect();
    let last = page.last().map_or_else(|| v1_time(since), |c| v1_time(c.0));
    let data: Vec<Value> = page
        .iter()
        .map(|(_, object, r)| {
            json!({"item": object.item(), "id": r.id, "data": r.to_v1(*object, company.company_id)})
        })
        .collect();
    ok(json!({
        "success": true,
        "data": data,
        "additional_data": {
            "since_timestamp": v1_time(since),
            "last_timestamp_on_page": last,
            "pagination": v1_pagination(start, limit, more),
        },
    }))
}

/// `2024-01-01T00:00:00Z` (whole seconds, UTC).
pub fn rfc3339(ms: i64) -> String {
    let (date, time) = civil(ms);
    format!("{date}T{time}Z")
}

/// `2024-01-01 00:00:00` (v1's UTC format).
fn v1_time(ms: i64) -> String {
    let (date, time) = civil(ms);
    format!("{date} {time}")
}

fn civil(ms: i64) -> (String, String) {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60),
    )
}

fn parse_v1_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.len() != 19 || text.as_bytes().get(10) != Some(&b' ') {
        return None;
    }
    parse_datetime(&format!("{}T{}Z", &text[..10], &text[11..]))
}

/// Sample values of the `n`th seeded record.
fn seed_record(company: &Company, object: PdObject, id: u64, n: u64, owner: u64, now: i64) -> Rec {
    let mut record = Rec::new(id, owner, now);
    match object {
        PdObject::Persons => {
            let p = sample::person(n);
            record.name = format!("{} {}", p.first, p.last);
            record.emails = vec![Entry {
                value: p.email,
                primary: true,
                label: "work".to_owned(),
            }];
            record.phones = vec![Entry {
                value: p.phone,
                primary: true,
                label: "work".to_owned(),
            }];
            let live_orgs = company.orgs.records.len() as u64;
            if live_orgs > 0 {
                let org = 1 + (n / 3) % live_orgs;
                record.org_id = company.orgs.live(org).map(|o| o.id);
            }
        }
        PdObject::Deals => {
            let c = sample::company(n);
            record.name = format!("Deal {n} with {}", c.name);
            let stage = STAGES[(n as usize) % 5];
            record.deal = DealPart {
                person_id: company.persons.live(1 + n % 10).map(|p| p.id),
                pipeline_id: stage.1,
                stage_id: stage.0,
                value: Some(json!(1000 + n * 250)),
                currency: "USD".into(),
                status: "open".into(),
                expected_close_date: Some(format!("2027-0{}-15", 1 + n % 9)),
                stage_change_ms: Some(now),
            };
            record.org_id = company.orgs.live(1 + n % 5).map(|o| o.id);
        }
        PdObject::Organizations => {
            let c = sample::company(n);
            record.name = c.name;
            let mut address = Map::new();
            address.insert("value".into(), json!(format!("{}, {}", c.city, c.country)));
            address.insert("locality".into(), json!(c.city));
            address.insert("country".into(), json!(c.country));
            record.address = Some(address);
        }
    }
    record
}

impl Company {
    /// The company's numeric id.
    pub(crate) fn company_id(&self) -> u64 {
        self.company_id
    }

    /// The v2 view of a record (deleted or not), for webhook payloads.
    pub(crate) fn record_data(&self, object: PdObject, id: u64) -> Option<Value> {
        self.table(object)
            .records
            .get(&id)
            .map(|r| r.to_v2(object, None))
    }
}

fn view(object: PdObject, record: &Rec) -> PdRecord {
    PdRecord {
        id: record.id,
        object,
        deleted: record.deleted,
        add_time: rfc3339(record.add_ms),
        update_time: rfc3339(record.update_ms),
        data: record.to_v2(object, None),
    }
}

impl SandboxState {
    /// Adds `n` persons or organizations to Pipedrive company `company` (`acme` is the
    /// default account's) and returns their ids in order. Persons get a name, one work
    /// email (unique) and one work phone, and, when the company has organizations, an
    /// `org_id` (three persons per organization); organizations a name (unique) and an
    /// address. Owner: user 10000001. Deterministic: the same company state seeds the
    /// same values.
    pub fn seed_pipedrive(&self, company: &str, object: PdObject, n: usize) -> Vec<u64> {
        let now = now_ms();
        let mut store = self.pd_store();
        let company_data = store.company(company);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let id = company_data.table_mut(object).next();
            let record = seed_record(company_data, object, id, id - 1, 10_000_001, now);
            company_data.table_mut(object).records.insert(id, record);
            company_data.hooks.note(object, id, "create", "app", now);
            ids.push(id);
        }
        ids
    }

    /// Every record (deleted ones too) of `object` in `company`, by id.
    pub fn pipedrive_records(&self, company: &str, object: PdObject) -> Vec<PdRecord> {
        let store = self.pd_store();
        store
            .companies
            .get(company)
            .map(|c| {
                c.table(object)
                    .records
                    .values()
                    .map(|r| view(object, r))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One record (deleted or not).
    pub fn pipedrive_record(&self, company: &str, object: PdObject, id: u64) -> Option<PdRecord> {
        let store = self.pd_store();
        store
            .companies
            .get(company)?
            .table(object)
            .records
            .get(&id)
            .map(|r| view(object, r))
    }

    /// Changes a live record as a Pipedrive user would in the app: `changes` is a v2
    /// PATCH body (`name`, `emails`, `custom_fields`, …; checked like the API's) and
    /// `update_time` moves on by at least one second, so the change is always visible to
    /// an `updated_since` of the previous value. `Err` with the API's error message.
    pub fn update_pipedrive_record(
        &self,
        company: &str,
        object: PdObject,
        id: u64,
        changes: &Value,
    ) -> Result<PdRecord, String> {
        let Value::Object(body) = changes else {
            return Err("changes must be a JSON object".to_owned());
        };
        let mut store = self.pd_store();
        let company_data = store.company(company);
        let mut record = company_data
            .table(object)
            .live(id)
            .cloned()
            .ok_or_else(|| format!("{} not found", object.title()))?;
        apply(company_data, object, &mut record, body, false)
            .map_err(|(_, body)| body["error"].as_str().unwrap_or_default().to_owned())?;
        record.update_ms = now_ms().max(record.update_ms + 1000);
        let at = record.update_ms;
        let out = view(object, &record);
        company_data.table_mut(object).records.insert(id, record);
        company_data.hooks.note(object, id, "change", "app", at);
        Ok(out)
    }

    /// Deletes a live record as a user would (soft delete, `update_time` moves on by at
    /// least one second); false when there is none.
    pub fn delete_pipedrive_record(&self, company: &str, object: PdObject, id: u64) -> bool {
        let mut store = self.pd_store();
        let company_data = store.company(company);
        let now = company_data
            .table(object)
            .live(id)
            .map(|r| now_ms().max(r.update_ms + 1000));
        now.is_some_and(|now| soft_delete_by(company_data, object, id, now, "app"))
    }

    /// Creates a custom field as an admin would in the app; its 40-hex `key`. `Err` for
    /// a type outside Pipedrive's list or past the plan's cap. `enum`/`set` fields get
    /// options `Option 1`, `Option 2`.
    pub fn pipedrive_define_field(
        &self,
        company: &str,
        object: PdObject,
        name: &str,
        field_type: &str,
    ) -> Result<String, String> {
        if !FIELD_TYPES.contains(&field_type) {
            return Err(format!("Field type '{field_type}' is not supported"));
        }
        let mut store = self.pd_store();
        let company_data = store.company(company);
        if company_data.custom_count() >= company_data.limits.custom_field_limit {
            return Err("Couldn't add the field. Custom fields limit reached.".to_owned());
        }
        let options = matches!(field_type, "enum" | "set")
            .then(|| vec![json!({"label": "Option 1"}), json!({"label": "Option 2"})]);
        let field = company_data.define(
            company,
            object,
            NewField {
                name,
                field_type,
                options,
                add_visible: true,
                creator: 10_000_001,
                now: now_ms(),
            },
        );
        Ok(field.key)
    }

    /// The key of the first custom field of `object` named `name`.
    pub fn pipedrive_field_key(
        &self,
        company: &str,
        object: PdObject,
        name: &str,
    ) -> Option<String> {
        let store = self.pd_store();
        store
            .companies
            .get(company)?
            .fields(object)
            .iter()
            .find(|f| f.custom && f.name == name)
            .map(|f| f.key.clone())
    }

    /// Sets `company`'s daily token budget, burst limits and custom-field cap (tight
    /// values make tests meet Pipedrive's 429 quickly). Spent budget stays.
    pub fn set_pipedrive_limits(&self, company: &str, limits: PdLimits) {
        self.pd_store().company(company).limits = limits;
    }

    /// Tokens `company` has spent today.
    pub fn pipedrive_tokens_used(&self, company: &str) -> u64 {
        let mut store = self.pd_store();
        let company_data = store.company(company);
        company_data.roll_day(now_ms());
        company_data.tokens_used
    }

    /// Makes the next `count` responses of route `route` (e.g. `pipedrive.crm_list`)
    /// carry a truncated, unparseable JSON body with their usual status.
    pub fn malform_pipedrive_responses(&self, route: &str, count: u32) {
        let mut store = self.pd_store();
        if count == 0 {
            store.malformed.remove(route);
        } else {
            store.malformed.insert(route.to_owned(), count);
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use axum::http::header::AUTHORIZATION;

    use super::*;

    const TOKEN: &str = "pd-sandbox-token-0001";

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Value,
        text: String,
    }

    async fn call(
        state: &SandboxState,
        method: Method,
        path_and_query: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        let mut headers = HeaderMap::new();
        match auth {
            Some(bearer) if bearer.starts_with("Bearer ") => {
                headers.insert(AUTHORIZATION, HeaderValue::from_str(bearer).unwrap());
            }
            Some(token) => {
                headers.insert("x-api-token", HeaderValue::from_str(token).unwrap());
            }
            None => {}
        }
        let body = match body {
            Some(b) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let req = ProviderRequest {
            method,
            host: "api.pipedrive.com".to_owned(),
            path,
            query,
            headers,
            body,
        };
        let response = crate::providers::dispatch(state, req).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    async fn get(state: &SandboxState, path: &str) -> Answer {
        call(state, Method::GET, path, Some(TOKEN), None).await
    }

    fn bearer(state: &SandboxState, scopes: &[&str]) -> String {
        let grant = state
            .seed_grant(
                OAuthProvider::Pipedrive,
                "pipedrive-sandbox-client-id",
                None,
                scopes,
            )
            .unwrap();
        format!("Bearer {}", grant.access_token)
    }

    #[test]
    fn routes_and_times() {
        assert_eq!(
            route(&Method::GET, "/api/v2/persons"),
            Some(PdRoute::List(PdObject::Persons))
        );
        assert_eq!(
            route(&Method::GET, "/api/v2/organizations/search"),
            Some(PdRoute::Search(PdObject::Organizations))
        );
        assert_eq!(route(&Method::GET, "/v2/persons"), None);
        assert_eq!(
            route(&Method::POST, "/api/v1/personFields"),
            Some(PdRoute::FieldCreate(PdObject::Persons))
        );
        assert_eq!(
            route(&Method::DELETE, "/v1/persons"),
            Some(PdRoute::BulkDelete(PdObject::Persons))
        );
        assert_eq!(route(&Method::GET, "/v1/recents"), Some(PdRoute::Recents));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(v1_time(1_704_067_201_999), "2024-01-01 00:00:01");
        assert_eq!(
            parse_v1_time("2024-01-01 00:00:01"),
            Some(1_704_067_201_000)
        );
        assert_eq!(parse_v1_time("2024-01-01T00:00:01"), None);
    }

    #[tokio::test]
    async fn deals_check_their_stage_pipeline_organization_and_person() {
        let state = SandboxState::new();
        let org = state.seed_pipedrive("acme", PdObject::Organizations, 1)[0];
        let post = |body: Value| {
            call(
                &state,
                Method::POST,
                "/api/v2/deals",
                Some(TOKEN),
                Some(body),
            )
        };
        assert_eq!(
            post(json!({"value": 10})).await.status,
            StatusCode::BAD_REQUEST
        );
        let unknown = post(json!({"title": "D", "org_id": 999})).await;
        assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
        assert_eq!(unknown.body["error"], "Organization with id 999 not found");
        let person = post(json!({"title": "D", "person_id": 5})).await;
        assert_eq!(person.body["error"], "Person with id 5 not found");
        let other = post(json!({"title": "D", "pipeline_id": 1, "stage_id": 6})).await;
        assert_eq!(other.status, StatusCode::BAD_REQUEST, "{}", other.text);
        let made = post(json!({"title": "Big deal", "org_id": org, "value": 12.5})).await;
        assert_eq!(made.status, StatusCode::OK, "{}", made.text);
        let data = &made.body["data"];
        assert_eq!(
            (
                data["title"].clone(),
                data["pipeline_id"].clone(),
                data["stage_id"].clone()
            ),
            (json!("Big deal"), json!(1), json!(1))
        );
        assert_eq!(data["currency"], "USD");
        assert!(data.get("name").is_none());
        let id = data["id"].as_u64().unwrap();
        let path = format!("/api/v2/deals/{id}");
        let moved = call(
            &state,
            Method::PATCH,
            &path,
            Some(TOKEN),
            Some(json!({"pipeline_id": 2})),
        )
        .await;
        assert_eq!(moved.body["data"]["stage_id"], 6, "{}", moved.text);
        let stages = get(&state, "/api/v2/stages?pipeline_id=2").await;
        assert_eq!(stages.body["data"].as_array().map(Vec::len), Some(2));
        let scoped = bearer(&state, &["contacts:full"]);
        let refused = call(&state, Method::GET, "/api/v2/deals", Some(&scoped), None).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(
            call(&state, Method::DELETE, &path, Some(TOKEN), None)
                .await
                .status
                .is_success()
        );
        let recents = get(
            &state,
            "/v1/recents?since_timestamp=2000-01-01%2000:00:00&items=deal",
        )
        .await;
        let change = &recents.body["data"][0];
        assert_eq!(
            (change["item"].clone(), change["data"]["deleted"].clone()),
            (json!("deal"), json!(true)),
            "{}",
            recents.text
        );
    }

    #[tokio::test]
    async fn an_update_of_one_name_part_keeps_the_other() {
        let state = SandboxState::new();
        let created = call(
            &state,
            Method::POST,
            "/api/v2/persons",
            Some(TOKEN),
            Some(json!({"first_name": "Ada", "last_name": "Lovelace"})),
        )
        .await;
        assert_eq!(created.body["data"]["name"], "Ada Lovelace");
        let id = created.body["data"]["id"].as_u64().unwrap();
        let path = format!("/api/v2/persons/{id}");
        let first = call(
            &state,
            Method::PATCH,
            &path,
            Some(TOKEN),
            Some(json!({"first_name": "Augusta"})),
        )
        .await;
        assert_eq!(first.body["data"]["name"], "Augusta Lovelace");
        let last = call(
            &state,
            Method::PATCH,
            &path,
            Some(TOKEN),
            Some(json!({"last_name": "King"})),
        )
        .await;
        assert_eq!(last.body["data"]["name"], "Augusta King");
        assert_eq!(last.body["data"]["last_name"], "King");
    }

    #[tokio::test]
    async fn persons_round_trip_with_custom_fields_paging_and_deletions() {
        let state = SandboxState::new();
        let created = call(
            &state,
            Method::POST,
            "/api/v1/personFields",
            Some(TOKEN),
            Some(json!({"name": "conduit_id", "field_type": "varchar"})),
        )
        .await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.text);
        let key = created.body["data"]["key"].as_str().unwrap().to_owned();
        assert_eq!(key.len(), 40);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(created.body["data"]["edit_flag"], true);
        let fields = get(&state, "/v1/personFields").await;
        assert!(
            fields.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["key"] == key.as_str())
        );

        let org = call(
            &state,
            Method::POST,
            "/api/v2/organizations",
            Some(TOKEN),
            Some(json!({"name": "Globex", "address": {"value": "Berlin"}})),
        )
        .await;
        assert_eq!(org.status, StatusCode::OK, "{}", org.text);
        let org_id = org.body["data"]["id"].as_u64().unwrap();
        let person = call(
            &state,
            Method::POST,
            "/api/v2/persons",
            Some(TOKEN),
            Some(json!({
                "name": "Ada Lovelace", "org_id": org_id,
                "emails": [{"value": "ada@globex.example", "label": "work"}],
                "custom_fields": {key.clone(): "c-1"},
            })),
        )
        .await;
        assert_eq!(person.status, StatusCode::OK, "{}", person.text);
        let data = &person.body["data"];
        assert_eq!(data["first_name"], "Ada");
        assert_eq!(data["last_name"], "Lovelace");
        assert_eq!(data["emails"][0]["primary"], true);
        assert_eq!(data["custom_fields"][key.as_str()], "c-1");
        let id = data["id"].as_u64().unwrap();
        assert!(person.headers.contains_key("x-ratelimit-remaining"));
        assert_eq!(person.headers["x-daily-requests-left"], "9997");

        // Strictness: unknown members, wrong types, unknown custom keys, contact sync.
        for (body, status) in [
            (json!({"emails": []}), StatusCode::BAD_REQUEST),
            (json!({"name": "X", "nope": 1}), StatusCode::BAD_REQUEST),
            (
                json!({"name": "X", "owner_id": "1"}),
                StatusCode::BAD_REQUEST,
            ),
            (
                json!({"name": "X", "custom_fields": {"abc": "v"}}),
                StatusCode::BAD_REQUEST,
            ),
            (
                json!({"name": "X", "visible_to": 2}),
                StatusCode::BAD_REQUEST,
            ),
            (json!({"name": "X", "org_id": 999}), StatusCode::BAD_REQUEST),
            (
                json!({"name": "X", "job_title": "CEO"}),
                StatusCode::FORBIDDEN,
            ),
        ] {
            let answer = call(
                &state,
                Method::POST,
                "/api/v2/persons",
                Some(TOKEN),
                Some(body.clone()),
            )
            .await;
            assert_eq!(answer.status, status, "{body}: {}", answer.text);
            assert_eq!(answer.body["success"], false);
            assert!(answer.body["error"].is_string());
        }

        let patched = call(
            &state,
            Method::PATCH,
            &format!("/api/v2/persons/{id}"),
            Some(TOKEN),
            Some(json!({"phones": [{"value": "+1 555 0100", "label": "mobile"}], "custom_fields": {key.clone(): null}})),
        )
        .await;
        assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
        assert_eq!(patched.body["data"]["phones"][0]["label"], "mobile");
        assert_eq!(
            patched.body["data"]["emails"][0]["value"],
            "ada@globex.example"
        );
        assert_eq!(patched.body["data"]["custom_fields"], json!({}));

        // Paging over seeded persons.
        state.seed_pipedrive("acme", PdObject::Persons, 1_200);
        let mut url = "/api/v2/persons?limit=500&sort_by=update_time".to_owned();
        let mut seen = 0;
        let mut pages = 0;
        loop {
            let page = get(&state, &url).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.text);
            seen += page.body["data"].as_array().unwrap().len();
            pages += 1;
            match page.body["additional_data"]["next_cursor"].as_str() {
                Some(cursor) => {
                    url = format!("/api/v2/persons?limit=500&sort_by=update_time&cursor={cursor}")
                }
                None => break,
            }
        }
        assert_eq!((seen, pages), (1_201, 3));
        assert_eq!(
            get(&state, "/api/v2/persons?limit=501").await.status,
            StatusCode::BAD_REQUEST
        );
        let cursor_of_other_sort = encode_cursor(&ListCursor {
            s: "id".into(),
            d: "asc".into(),
            v: 0,
            i: 5,
        });
        assert_eq!(
            get(
                &state,
                &format!("/api/v2/persons?sort_by=update_time&cursor={cursor_of_other_sort}")
            )
            .await
            .status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            get(&state, "/api/v2/persons?updated_since=yesterday")
                .await
                .status,
            StatusCode::BAD_REQUEST
        );

        // A change in the app is visible to updated_since; deletions only through recents.
        let before =
            get(&state, &format!("/api/v2/persons/{id}")).await.body["data"]["update_time"]
                .as_str()
                .unwrap()
                .to_owned();
        let changed = state
            .update_pipedrive_record(
                "acme",
                PdObject::Persons,
                2,
                &json!({"name": "Grace Hopper"}),
            )
            .unwrap();
        assert!(changed.update_time > before);
        let since = get(
            &state,
            &format!("/api/v2/persons?updated_since={}", changed.update_time),
        )
        .await;
        assert_eq!(since.body["data"][0]["id"], 2, "{}", since.text);
        let deleted = call(
            &state,
            Method::DELETE,
            &format!("/api/v2/persons/{id}"),
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(deleted.body, json!({"success": true, "data": {"id": id}}));
        let gone = get(&state, &format!("/api/v2/persons/{id}")).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        assert_eq!(gone.body["error"], "Person not found");
        assert!(state.delete_pipedrive_record("acme", PdObject::Persons, 3));
        let bulk = call(
            &state,
            Method::DELETE,
            "/v1/persons?ids=4,5,999999",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(bulk.body["data"]["id"], json!([4, 5]));
        let since = v1_time(parse_datetime(&before).unwrap()).replace(' ', "%20");
        let mut inactive: Vec<u64> = Vec::new();
        let mut start = 0;
        loop {
            let page = get(
                &state,
                &format!(
                    "/v1/recents?items=person&since_timestamp={since}&start={start}&limit=500"
                ),
            )
            .await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.text);
            inactive.extend(
                page.body["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|c| c["data"]["active_flag"] == false)
                    .map(|c| c["id"].as_u64().unwrap()),
            );
            match page.body["additional_data"]["pagination"]["next_start"].as_u64() {
                Some(next) => start = usize::try_from(next).unwrap(),
                None => break,
            }
        }
        for gone in [id, 3, 4, 5] {
            assert!(inactive.contains(&gone), "{gone} in {inactive:?}");
        }
        assert_eq!(
            get(&state, "/v1/recents?since_timestamp=2024-01-01T00:00:00Z")
                .await
                .status,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn search_finds_by_email_and_custom_field() {
        let state = SandboxState::new();
        state.seed_pipedrive("acme", PdObject::Organizations, 5);
        state.seed_pipedrive("acme", PdObject::Persons, 30);
        let key = state
            .pipedrive_define_field("acme", PdObject::Persons, "conduit_id", "varchar")
            .unwrap();
        state
            .update_pipedrive_record(
                "acme",
                PdObject::Persons,
                7,
                &json!({"custom_fields": {key.clone(): "cdt-7"}}),
            )
            .unwrap();
        let email = state
            .pipedrive_record("acme", PdObject::Persons, 7)
            .unwrap()
            .data["emails"][0]["value"]
            .as_str()
            .unwrap()
            .to_owned();
        let found = get(
            &state,
            &format!("/api/v2/persons/search?term={email}&fields=email&exact_match=true"),
        )
        .await;
        assert_eq!(found.status, StatusCode::OK, "{}", found.text);
        let items = found.body["data"]["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["item"]["id"], 7);
        assert!(items[0]["item"]["organization"]["id"].is_u64());
        let by_marker = get(
            &state,
            "/api/v2/persons/search?term=cdt-7&fields=custom_fields&exact_match=true",
        )
        .await;
        assert_eq!(
            by_marker.body["data"]["items"][0]["item"]["custom_fields"],
            json!(["cdt-7"])
        );
        assert_eq!(
            get(&state, "/api/v2/persons/search?term=a").await.status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            get(&state, "/api/v2/persons/search?term=a&exact_match=true")
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            get(&state, "/api/v2/persons/search?term=ada&fields=address")
                .await
                .status,
            StatusCode::BAD_REQUEST
        );
        let orgs = get(
            &state,
            "/api/v2/organizations/search?term=e&exact_match=false&limit=2",
        )
        .await;
        assert_eq!(orgs.status, StatusCode::BAD_REQUEST);
        for (id, name) in [(2, "Zeta One"), (4, "Zeta Two")] {
            state
                .update_pipedrive_record(
                    "acme",
                    PdObject::Organizations,
                    id,
                    &json!({"name": name}),
                )
                .unwrap();
        }
        let orgs = get(
            &state,
            "/api/v2/organizations/search?term=zeta&fields=name&limit=1",
        )
        .await;
        assert_eq!(
            orgs.body["data"]["items"][0]["item"]["id"], 2,
            "{}",
            orgs.text
        );
        let cursor = orgs.body["additional_data"]["next_cursor"]
            .as_str()
            .unwrap();
        let rest = get(
            &state,
            &format!("/api/v2/organizations/search?term=zeta&fields=name&limit=1&cursor={cursor}"),
        )
        .await;
        assert_eq!(
            rest.body["data"]["items"][0]["item"]["id"], 4,
            "{}",
            rest.text
        );
        assert!(
            rest.body["additional_data"]["next_cursor"].is_null(),
            "{}",
            rest.text
        );
    }

    #[tokio::test]
    async fn oauth_scopes_and_company_domain_are_checked() {
        let state = SandboxState::new();
        let read = bearer(&state, &["base", "contacts:read"]);
        let full = bearer(&state, &["base", "contacts:full"]);
        let admin = bearer(&state, &["base", "admin"]);
        assert_eq!(
            call(&state, Method::GET, "/api/v2/persons", Some(&read), None)
                .await
                .status,
            StatusCode::OK
        );
        let refused = call(
            &state,
            Method::POST,
            "/api/v2/persons",
            Some(&read),
            Some(json!({"name": "X"})),
        )
        .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(
            refused.body,
            json!({"success": false, "error": "Scope and URL mismatch", "errorCode": 403})
        );
        assert_eq!(
            call(
                &state,
                Method::POST,
                "/api/v2/persons",
                Some(&full),
                Some(json!({"name": "X"}))
            )
            .await
            .status,
            StatusCode::OK
        );
        let field = json!({"name": "conduit_id", "field_type": "varchar"});
        assert_eq!(
            call(
                &state,
                Method::POST,
                "/v1/personFields",
                Some(&full),
                Some(field.clone())
            )
            .await
            .status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(
                &state,
                Method::POST,
                "/v1/personFields",
                Some(&admin),
                Some(field)
            )
            .await
            .status,
            StatusCode::OK
        );
        assert_eq!(
            call(
                &state,
                Method::GET,
                "/v1/recents?since_timestamp=2024-01-01%2000:00:00",
                Some(&full),
                None
            )
            .await
            .status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(&state, Method::GET, "/api/v2/persons", None, None)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(&state, Method::GET, "/api/v2/persons", Some("nope"), None)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        // The OAuth user and the API token of company acme see the same records.
        let listed = call(&state, Method::GET, "/api/v2/persons", Some(&read), None).await;
        assert_eq!(listed.body["data"][0]["name"], "X");
        assert_eq!(listed.headers["x-ratelimit-limit"], "160");
        assert!(!listed.headers.contains_key("x-daily-requests-left"));
    }

    #[tokio::test]
    async fn burst_and_daily_budget_answer_429_with_headers() {
        let state = SandboxState::new();
        state.set_pipedrive_limits(
            "acme",
            PdLimits {
                daily_token_budget: 1_000,
                api_token_burst: 3,
                oauth_burst: 3,
                search_burst: 1,
                custom_field_limit: 1,
            },
        );
        for remaining in ["2", "1", "0"] {
            let answer = get(&state, "/api/v2/persons").await;
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.headers["x-ratelimit-remaining"], remaining);
            assert_eq!(answer.headers["x-ratelimit-limit"], "3");
        }
        let over = get(&state, "/api/v2/persons").await;
        assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(over.body["error"], "Request over limit");
        assert!(over.headers.contains_key("retry-after"));
        assert_eq!(over.headers["x-daily-ratelimit-token-remaining"], "970");
        assert_eq!(state.pipedrive_tokens_used("acme"), 30);
        // The budget: a fresh window, then too few tokens left for a list.
        state.set_pipedrive_limits(
            "acme",
            PdLimits {
                daily_token_budget: 35,
                api_token_burst: 100,
                oauth_burst: 100,
                search_burst: 1,
                custom_field_limit: 1,
            },
        );
        let over = get(&state, "/api/v2/persons").await;
        assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(over.headers["x-daily-ratelimit-token-remaining"], "5");
        assert_eq!(
            get(&state, "/api/v2/persons/1").await.status,
            StatusCode::NOT_FOUND
        );
        // The custom-field cap.
        state.set_pipedrive_limits(
            "acme",
            PdLimits {
                custom_field_limit: 0,
                ..PdLimits::default()
            },
        );
        let capped = call(
            &state,
            Method::POST,
            "/v1/organizationFields",
            Some(TOKEN),
            Some(json!({"name": "x", "field_type": "text"})),
        )
        .await;
        assert_eq!(capped.status, StatusCode::FORBIDDEN);
        assert_eq!(capped.body["code"], "feature_capping_custom_fields_limit");
    }

    #[tokio::test]
    async fn seeding_is_fast_and_malformed_bodies_do_not_parse() {
        let state = SandboxState::new();
        let started = std::time::Instant::now();
        let ids = state.seed_pipedrive("acme", PdObject::Persons, 10_000);
        assert_eq!(ids.len(), 10_000);
        assert!(started.elapsed() < Duration::from_secs(5));
        state.malform_pipedrive_responses(CRM_LIST, 1);
        let broken = get(&state, "/api/v2/persons").await;
        assert_eq!(broken.status, StatusCode::OK);
        assert!(serde_json::from_str::<Value>(&broken.text).is_err());
        assert_eq!(
            get(&state, "/api/v2/persons").await.body["data"]
                .as_array()
                .unwrap()
                .len(),
            100
        );
        assert_eq!(state.calls(CRM_LIST), 2);
    }
}
