//! Minimal stateful stand-ins for the Google APIs Conduit calls next, shaped as their
//! discovery documents (`../shared/specs/google`) say, kept in memory per user:
//!
//! | Route name | Request | Scopes (any of, from the discovery document) |
//! |---|---|---|
//! | `google.gmail_send` | `POST gmail.googleapis.com/gmail/v1/users/{userId}/messages/send` `{raw}` → `{id,threadId,labelIds:["SENT"]}` | `mail.google.com`, `gmail.modify`, `gmail.compose`, `gmail.send`, `gmail.addons.current.action.compose` |
//! | `google.gmail_profile` | `GET …/gmail/v1/users/{userId}/profile` → `{emailAddress,messagesTotal,threadsTotal,historyId}` | `mail.google.com`, `gmail.modify`, `gmail.compose`, `gmail.readonly`, `gmail.metadata` |
//! | `google.calendar_events_list` | `GET www.googleapis.com/calendar/v3/calendars/{calendarId}/events?maxResults=&pageToken=` → `{kind:"calendar#events",summary,updated,timeZone,accessRole,defaultReminders,items,nextPageToken?}` | `calendar`, `calendar.readonly`, `calendar.events`, `calendar.events.readonly` |
//! | `google.calendar_events_insert` | `POST …/events` → the event | `calendar`, `calendar.events` |
//! | `google.calendar_events_get` | `GET …/events/{eventId}` | as list |
//! | `google.calendar_events_patch` | `PATCH …/events/{eventId}` (merges members) | as insert |
//! | `google.calendar_events_delete` | `DELETE …/events/{eventId}` → 204 (then `status:"cancelled"`; a second delete is 410 `deleted`) | as insert |
//!
//! `google.gmail_send_upload`: `POST …/upload/gmail/v1/users/{userId}/messages/send` with
//! `uploadType=media` (`Content-Type: message/*`) or `multipart` (`multipart/related`: a
//! JSON `Message` with `threadId`, then the `message/*` part); another media type is 400
//! `badContent`, a missing `uploadType` 400; `resumable` is not reproduced (400). Messages
//! over 35 MiB (the method's `maxSize`) are 413, in either form.
//!
//! Gmail is also served at `www.googleapis.com/gmail/v1/…`. `{userId}` is `me` or the
//! token user's email (another: 403 "Delegation denied for …"); `{calendarId}` is
//! `primary` or the user's email (another: 404 `notFound`).
//!
//! Auth: `Authorization: Bearer` with a Google access token. No token: 401
//! `UNAUTHENTICATED` ("Login Required", reason `required`); a dead one: 401 "Invalid
//! Credentials" (reason `authError`), both with `WWW-Authenticate: Bearer
//! realm="https://accounts.google.com/"`. A live token without one of the method's
//! scopes: 403 `{"error":{"code":403,"message":"Request had insufficient authentication
//! scopes.","errors":[{"message":"Insufficient Permission","domain":"global","reason":
//! "insufficientPermissions"}],"status":"PERMISSION_DENIED","details":[{"@type":
//! "type.googleapis.com/google.rpc.ErrorInfo","reason":"ACCESS_TOKEN_SCOPE_INSUFFICIENT",
//! "domain":"googleapis.com","metadata":{"service","method"}}]}}` with
//! `WWW-Authenticate: Bearer realm="https://accounts.google.com/",
//! error="insufficient_scope", scope="…"` (the method's scopes).
//!
//! Validation: bodies must be one JSON object (400 `INVALID_ARGUMENT` "Invalid JSON
//! payload received."); Gmail `raw` is required, base64url (padding optional) and must
//! carry a `To`, `Cc` or `Bcc` header ("Recipient address required"); events need
//! `start` and `end` (400 `required` "Missing end time."), each a `dateTime` (RFC 3339
//! with offset) or a `date` (`YYYY-MM-DD`), the same kind for both, end after start (400
//! `timeRangeEmpty` "The specified time range is empty."); members the discovery
//! document's `Event` does not list, and server-owned ones (`id`, `created`, …), are
//! ignored. An insert may choose the event's `id` (base32hex digits `0-9a-v`, 5–1024 of
//! them; else 400 "Invalid resource id value."); one the calendar holds, deleted or
//! not, is 409 `duplicate` "The requested identifier already exists.". `maxResults` 1–2500 (default 250); page tokens are opaque offsets.
//!
//! Events carry a fresh ETag per change; `If-Match` on patch and delete must name it
//! (else 412 `conditionNotMet`). A test may make a method serve its effect and then answer a
//! 5xx `backendError` (`SandboxState::google_fail_after_effect`, per user). `events.list` takes `timeMin`/`timeMax` (RFC 3339;
//! events ending after the one and starting before the other) and gives `nextSyncToken`
//! on its last page; `syncToken` lists every event changed since, deleted ones as
//! `status: cancelled`, and may not go with `timeMin`/`timeMax` (400); an expired token
//! (`SandboxState::expire_calendar_sync_tokens`) is 410 `fullSyncRequired`. A page
//! token is an offset into the same query (the client repeats its parameters).
//!
//! A send's `raw` must parse as a message (`mail-parser`, else 400 "Invalid RFC822
//! message") and every `To`/`Cc`/`Bcc` entry carry an address (else 400 "Invalid To
//! header"); tests read what was sent part by part (`SandboxState::gmail_sent_parsed`).
//! A send's `threadId` must name a thread of the sender's mailbox (else 404); without
//! one the message starts its own. `sendUpdates` must be `all`, `externalOnly` or
//! `none` (else 400).
//!
//! Not reproduced: sending mail anywhere, threading by headers, labels beyond `SENT`, recurring
//! events' instances, attendees' notifications, `sendUpdates`, free/busy of other
//! users' calendars (they answer `notFound`), Calendar's quotas and the per-project Gmail quota (Gmail's per-user quota
//! is kept: 6,000 units a rolling minute, `messages.send` 100 and `getProfile` 1, then 429
//! `userRateLimitExceeded` with `Retry-After`), other
//! calendars than the user's primary one.

use std::collections::BTreeMap;

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use super::ProviderRequest;
use crate::clock;
// RFC 3339 UTC with milliseconds, as Calendar's `created`/`updated`.
use crate::oauth::{self, AccessCheck, AccessGrant, OAuthProvider};
use crate::providers::hubspot_crm::rfc3339;
use crate::state::SandboxState;
use crate::wire;

/// Route name of Gmail's `users.messages.send`.
pub const GMAIL_SEND: &str = "google.gmail_send";
/// `POST /upload/gmail/v1/users/{userId}/messages/send` (the media upload form).
pub const GMAIL_SEND_UPLOAD: &str = "google.gmail_send_upload";
/// Route name of Gmail's `users.getProfile`.
pub const GMAIL_PROFILE: &str = "google.gmail_profile";
/// Route name of Calendar's `events.list`.
pub const EVENTS_LIST: &str = "google.calendar_events_list";
/// Route name of Calendar's `events.insert`.
pub const EVENTS_INSERT: &str = "google.calendar_events_insert";
/// Route name of Calendar's `events.get`.
pub const EVENTS_GET: &str = "google.calendar_events_get";
/// Route name of Calendar's `events.patch`.
pub const EVENTS_PATCH: &str = "google.calendar_events_patch";
/// Route name of Calendar's `events.delete`.
pub const EVENTS_DELETE: &str = "google.calendar_events_delete";
/// Route name of Calendar's `calendarList.list`.
pub const CALENDAR_LIST: &str = "google.calendar_list";
/// Route name of Calendar's `freebusy.query`.
pub const FREEBUSY: &str = "google.calendar_freebusy";

/// Gmail's API host.
pub const GMAIL_HOST: &str = "gmail.googleapis.com";

const AUTH: &str = "https://www.googleapis.com/auth/";

/// A Gmail or Calendar method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ApiRoute {
    /// `POST /gmail/v1/users/{userId}/messages/send`.
    GmailSend,
    /// `POST /upload/gmail/v1/users/{userId}/messages/send?uploadType=media|multipart`.
    GmailSendUpload,
    /// `GET /gmail/v1/users/{userId}/profile`.
    GmailProfile,
    /// `GET /calendar/v3/calendars/{calendarId}/events`.
    EventsList,
    /// `POST /calendar/v3/calendars/{calendarId}/events`.
    EventsInsert,
    /// `GET /calendar/v3/calendars/{calendarId}/events/{eventId}`.
    EventsGet,
    /// `PATCH /calendar/v3/calendars/{calendarId}/events/{eventId}`.
    EventsPatch,
    /// `DELETE /calendar/v3/calendars/{calendarId}/events/{eventId}`.
    EventsDelete,
    /// `GET /calendar/v3/users/me/calendarList`.
    CalendarList,
    /// `POST /calendar/v3/freeBusy`.
    FreeBusy,
}

impl ApiRoute {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ApiRoute::GmailSend => GMAIL_SEND,
            ApiRoute::GmailSendUpload => GMAIL_SEND_UPLOAD,
            ApiRoute::GmailProfile => GMAIL_PROFILE,
            ApiRoute::EventsList => EVENTS_LIST,
            ApiRoute::EventsInsert => EVENTS_INSERT,
            ApiRoute::EventsGet => EVENTS_GET,
            ApiRoute::EventsPatch => EVENTS_PATCH,
            ApiRoute::EventsDelete => EVENTS_DELETE,
            ApiRoute::CalendarList => CALENDAR_LIST,
            ApiRoute::FreeBusy => FREEBUSY,
        }
    }

    /// The method id and service, as in the discovery document and Google's `ErrorInfo`.
    fn method(self) -> (&'static str, &'static str) {
        match self {
            ApiRoute::GmailSend | ApiRoute::GmailSendUpload => {
                ("gmail.users.messages.send", "gmail.googleapis.com")
            }
            ApiRoute::GmailProfile => ("gmail.users.getProfile", "gmail.googleapis.com"),
            ApiRoute::EventsList => ("calendar.v3.Events.List", "calendar-json.googleapis.com"),
            ApiRoute::EventsInsert => ("calendar.v3.Events.Insert", "calendar-json.googleapis.com"),
            ApiRoute::EventsGet => ("calendar.v3.Events.Get", "calendar-json.googleapis.com"),
            ApiRoute::EventsPatch => ("calendar.v3.Events.Patch", "calendar-json.googleapis.com"),
            ApiRoute::EventsDelete => ("calendar.v3.Events.Delete", "calendar-json.googleapis.com"),
            ApiRoute::CalendarList => (
                "calendar.v3.CalendarList.List",
                "calendar-json.googleapis.com",
            ),
            ApiRoute::FreeBusy => ("calendar.v3.Freebusy.Query", "calendar-json.googleapis.com"),
        }
    }

    /// The scopes of which the method needs one (the discovery document's `scopes`).
    pub(crate) fn scopes(self) -> Vec<String> {
        let names: &[&str] = match self {
            ApiRoute::GmailSend | ApiRoute::GmailSendUpload => &[
                "https://mail.google.com/",
                "gmail.addons.current.action.compose",
                "gmail.compose",
                "gmail.modify",
                "gmail.send",
            ],
            ApiRoute::GmailProfile => &[
                "https://mail.google.com/",
                "gmail.compose",
                "gmail.metadata",
                "gmail.modify",
                "gmail.readonly",
            ],
            ApiRoute::EventsList | ApiRoute::EventsGet => &[
                "calendar",
                "calendar.events",
                "calendar.events.readonly",
                "calendar.readonly",
            ],
            ApiRoute::EventsInsert | ApiRoute::EventsPatch | ApiRoute::EventsDelete => {
                &["calendar", "calendar.events"]
            }
            // The discovery document's scopes for both (none narrower).
            ApiRoute::CalendarList | ApiRoute::FreeBusy => &["calendar", "calendar.readonly"],
        };
        names
            .iter()
            .map(|name| {
                if name.starts_with("https://") {
                    (*name).to_owned()
                } else {
                    format!("{AUTH}{name}")
                }
            })
            .collect()
    }
}

/// Matches a Gmail or Calendar path at `host`.
pub(crate) fn route(host: &str, method: &Method, path: &str) -> Option<ApiRoute> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let gmail_host = host == GMAIL_HOST || host == super::google::API_HOST;
    match (method, parts.as_slice()) {
        (&Method::POST, ["gmail", "v1", "users", user, "messages", "send"])
            if gmail_host && !user.is_empty() =>
        {
            Some(ApiRoute::GmailSend)
        }
        (&Method::POST, ["upload", "gmail", "v1", "users", user, "messages", "send"])
            if gmail_host && !user.is_empty() =>
        {
            Some(ApiRoute::GmailSendUpload)
        }
        (&Method::GET, ["gmail", "v1", "users", user, "profile"])
            if gmail_host && !user.is_empty() =>
        {
            Some(ApiRoute::GmailProfile)
        }
        (&Method::GET, ["calendar", "v3", "users", "me", "calendarList"])
            if host == super::google::API_HOST =>
        {
            Some(ApiRoute::CalendarList)
        }
        (&Method::POST, ["calendar", "v3", "freeBusy"]) if host == super::google::API_HOST => {
            Some(ApiRoute::FreeBusy)
        }
        (_, ["calendar", "v3", "calendars", calendar, "events", rest @ ..])
            if host == super::google::API_HOST && !calendar.is_empty() =>
        {
            match (method, rest) {
                (&Method::GET, []) => Some(ApiRoute::EventsList),
                (&Method::POST, []) => Some(ApiRoute::EventsInsert),
                (&Method::GET, [id]) if !id.is_empty() => Some(ApiRoute::EventsGet),
                (&Method::PATCH, [id]) if !id.is_empty() => Some(ApiRoute::EventsPatch),
                (&Method::DELETE, [id]) if !id.is_empty() => Some(ApiRoute::EventsDelete),
                _ => None,
            }
        }
        _ => None,
    }
}

/// One user's mailbox and primary calendar.
#[derive(Debug, Default)]
struct Mailbox {
    /// Sent messages: id → raw RFC 2822 bytes.
    sent: BTreeMap<String, Vec<u8>>,
    /// Each sent message's thread id.
    threads: BTreeMap<String, String>,
    /// Gmail quota units spent in the last minute: (when, units), oldest first.
    gmail_units: std::collections::VecDeque<(std::time::Instant, u32)>,
    /// The calendar's change counter, and each event's last change under it (what a
    /// sync token counts from).
    changes: u64,
    changed: BTreeMap<String, u64>,
    /// Sync tokens of an earlier epoch are expired (410 `fullSyncRequired`).
    sync_epoch: u64,
    /// Events by id, in creation order of their ids.
    events: BTreeMap<String, Value>,
    history_id: u64,
}

/// Gmail and Calendar state of every Google user (by user id).
#[derive(Debug, Default)]
pub struct GoogleStore {
    users: BTreeMap<String, Mailbox>,
    next_id: u64,
    /// Fault knobs: "user route" → (status, how many more): the method is served (its
    /// effect made), then answered with `status` and Google's `backendError` instead.
    after_effect: BTreeMap<String, (u16, u32)>,
}

impl GoogleStore {
    fn mailbox(&mut self, user_id: &str) -> &mut Mailbox {
        self.users.entry(user_id.to_owned()).or_default()
    }

    /// A fresh ETag, quoted as Calendar sends it.
    fn new_etag(&mut self) -> String {
        self.next_id += 1;
        format!("\"{}\"", 3_400_000_000_000_000u64 + self.next_id)
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        // Gmail ids are 16 hex digits; Calendar ids base32hex, lower case: both fit.
        format!("18c{:013x}", 0x5a_0000_0000 + self.next_id)
    }
}

impl Mailbox {
    /// Records a change to event `id` (for sync tokens).
    fn touch(&mut self, id: &str) {
        self.changes += 1;
        self.changed.insert(id.to_owned(), self.changes);
    }
}

/// What Google users did through the stand-in, for tests to check.
impl SandboxState {
    /// The next `count` calls of `route` (`google.gmail_send`,
    /// `google.calendar_events_insert`…) by `email` (a Google OAuth user) are served —
    /// the message sent, the event made — then answered `status` (a 5xx) with Google's
    /// `backendError`: the client cannot tell whether the effect happened. (Per user:
    /// the sandbox is shared by concurrent tests.)
    pub fn google_fail_after_effect(&self, email: &str, route: &str, status: u16, count: u32) {
        if let Some(user_id) = self.google_user_id(email) {
            self.google_store()
                .after_effect
                .insert(fault_key(&user_id, route), (status, count));
        }
    }

    /// The user id of `email`, a Google OAuth user of the sandbox.
    fn google_user_id(&self, email: &str) -> Option<String> {
        self.oauth_users()
            .into_iter()
            .find(|u| u.provider == OAuthProvider::Google && u.email.eq_ignore_ascii_case(email))
            .map(|u| u.user_id)
    }

    /// Expires every Calendar sync token `email` (a Google OAuth user) holds, as Google
    /// does after a while: the next incremental list is 410 `fullSyncRequired`.
    pub fn expire_calendar_sync_tokens(&self, email: &str) {
        if let Some(user_id) = self.google_user_id(email) {
            self.google_store().mailbox(&user_id).sync_epoch += 1;
        }
    }

    /// The messages `email` (a Google OAuth user) sent, oldest first, parsed.
    pub fn gmail_sent_parsed(&self, email: &str) -> Vec<ParsedMail> {
        self.gmail_sent(email)
            .iter()
            .filter_map(|raw| parse_mail(raw.as_bytes()))
            .collect()
    }

    /// The raw RFC 2822 messages `email` (a Google OAuth user) sent, oldest first.
    pub fn gmail_sent(&self, email: &str) -> Vec<String> {
        let Some(user_id) = self.google_user_id(email) else {
            return Vec::new();
        };
        self.google_store()
            .users
            .get(&user_id)
            .map(|mailbox| {
                mailbox
                    .sent
                    .values()
                    .map(|raw| String::from_utf8_lossy(raw).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Gmail's per-user limit (developers.google.com/gmail/api/reference/quota, "Per minute
/// per user per project"): 6,000 quota units a minute, a rolling minute here.
pub const GMAIL_USER_UNITS_PER_MINUTE: u32 = 6_000;

/// The quota units of a Gmail method (the reference's per-method table).
fn gmail_units(route: ApiRoute) -> u32 {
    match route {
        ApiRoute::GmailSend | ApiRoute::GmailSendUpload => 100,
        _ => 1,
    }
}

/// Spends `units` of `user_id`'s Gmail quota (`None`), or refuses as Gmail does past the
/// per-user limit: 429 `RESOURCE_EXHAUSTED`, reason `userRateLimitExceeded`, with the
/// seconds until enough units are back in `Retry-After`.
fn spend_gmail_quota(state: &SandboxState, user_id: &str, units: u32) -> Option<Response> {
    let now = std::time::Instant::now();
    let minute = std::time::Duration::from_secs(60);
    let mut store = state.google_store();
    let log = &mut store.mailbox(user_id).gmail_units;
    while log
        .front()
        .is_some_and(|(at, _)| now.duration_since(*at) >= minute)
    {
        log.pop_front();
    }
    let used: u32 = log.iter().map(|(_, u)| *u).sum();
    if used + units <= GMAIL_USER_UNITS_PER_MINUTE {
        log.push_back((now, units));
        return None;
    }
    // Enough units come back when the oldest entries leave the minute.
    let mut freed = 0;
    let mut wait = minute;
    for (at, u) in log.iter() {
        freed += *u;
        if used - freed + units <= GMAIL_USER_UNITS_PER_MINUTE {
            wait = minute.saturating_sub(now.duration_since(*at));
            break;
        }
    }
    let mut response = api_error(
        StatusCode::TOO_MANY_REQUESTS,
        "User-rate limit exceeded.",
        "userRateLimitExceeded",
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        response.headers_mut().insert("retry-after", v);
    }
    Some(response)
}

/// Serves a Gmail or Calendar method: authenticate, check scopes, run.
pub(crate) fn handle(route: ApiRoute, state: &SandboxState, req: &ProviderRequest) -> Response {
    let grant = match oauth::bearer_access(
        state,
        OAuthProvider::Google,
        wire::bearer_token(&req.headers),
    ) {
        AccessCheck::Granted(grant) => grant,
        AccessCheck::Missing => return unauthenticated(false),
        AccessCheck::Denied(_) => return unauthenticated(true),
    };
    let needed = route.scopes();
    if !oauth::scopes_satisfy(&grant.scopes, &needed) {
        return insufficient_scope(route, &needed);
    }
    let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let reply = match route {
        ApiRoute::GmailSend | ApiRoute::GmailSendUpload | ApiRoute::GmailProfile => {
            // `…/users/{userId}/…`, after `/upload` on the upload form.
            let at = if route == ApiRoute::GmailSendUpload {
                4
            } else {
                3
            };
            let user = parts.get(at).copied().unwrap_or("");
            if user != "me" && !user.eq_ignore_ascii_case(&grant.user.email) {
                return api_error(
                    StatusCode::FORBIDDEN,
                    &format!("Delegation denied for {}", grant.user.email),
                    "forbidden",
                )
                .into_response();
            }
            if let Some(refused) = spend_gmail_quota(state, &grant.user.user_id, gmail_units(route))
            {
                return refused;
            }
            if route == ApiRoute::GmailSend {
                gmail_send(state, &grant, &req.body)
            } else if route == ApiRoute::GmailSendUpload {
                gmail_upload(state, &grant, req)
            } else {
                Ok(gmail_profile(state, &grant))
            }
        }
        ApiRoute::CalendarList => Ok(calendar_list(&grant)),
        ApiRoute::FreeBusy => free_busy(state, &grant, &req.body),
        _ => {
            let calendar = parts.get(3).copied().unwrap_or("");
            // A calendar id is an email address; clients escape its `@`.
            let calendar = calendar.replace("%40", "@");
            if calendar != "primary" && !calendar.eq_ignore_ascii_case(&grant.user.email) {
                return not_found().into_response();
            }
            let event_id = parts.get(5).copied().unwrap_or("");
            calendar_method(route, state, &grant, event_id, req)
        }
    };
    if reply.is_ok()
        && let Some(status) = take_after_effect(state, &grant.user.user_id, route)
    {
        return api_error(status, "Backend Error", "backendError").into_response();
    }
    match reply {
        Ok((status, Some(body))) => wire::json(status, body),
        Ok((status, None)) => status.into_response(),
        Err(error) => error.into_response(),
    }
}

fn fault_key(user_id: &str, route: &str) -> String {
    format!("{user_id} {route}")
}

/// The status a pending after-effect fault of `route` for `user_id` answers with, if
/// one is left.
fn take_after_effect(state: &SandboxState, user_id: &str, route: ApiRoute) -> Option<StatusCode> {
    let key = fault_key(user_id, route.name());
    let mut store = state.google_store();
    let (status, left) = store.after_effect.get_mut(&key)?;
    let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    *left = left.saturating_sub(1);
    if *left == 0 {
        store.after_effect.remove(&key);
    }
    Some(status)
}

/// A method's answer before rendering: status and body (`None`: empty).
type Reply = Result<(StatusCode, Option<Value>), ApiError>;

fn gmail_send(state: &SandboxState, grant: &AccessGrant, body: &[u8]) -> Reply {
    let object = json_object(body)?;
    let raw = match object.get("raw") {
        Some(Value::String(raw)) if !raw.is_empty() => raw,
        Some(Value::String(_)) | None => {
            return Err(api_error(
                StatusCode::BAD_REQUEST,
                "'raw' RFC822 payload message string or uploading message via /upload/* URL required",
                "invalidArgument",
            ));
        }
        Some(_) => {
            return Err(api_error(
                StatusCode::BAD_REQUEST,
                "Invalid value at 'message.raw' (TYPE_BYTES), expected a base64url string",
                "invalid",
            ));
        }
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .or_else(|_| URL_SAFE.decode(raw))
        .map_err(|_| {
            api_error(
                StatusCode::BAD_REQUEST,
                "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed",
                "invalid",
            )
        })?;
    deliver(state, grant, bytes, thread_id(&object)?)
}

/// A `Message`'s `threadId`, if it names one.
fn thread_id(message: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match message.get("threadId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) => Ok(Some(t.clone())),
        Some(_) => Err(api_error(
            StatusCode::BAD_REQUEST,
            "Invalid value at 'message.thread_id' (TYPE_STRING)",
            "invalid",
        )),
    }
}

/// The largest message `messages.send` takes (the discovery document's `maxSize` for
/// its media upload, 35 MiB; applied to the `raw` form too).
pub const GMAIL_MAX_MESSAGE_BYTES: usize = 36_700_160;

/// `messages.send` through the upload URI: `uploadType=media` (the body is the
/// message, `Content-Type: message/*`) or `multipart` (`multipart/related`: a JSON
/// `Message` with the optional `threadId`, then the `message/*` part).
/// `uploadType=resumable` is not reproduced (400).
fn gmail_upload(state: &SandboxState, grant: &AccessGrant, req: &ProviderRequest) -> Reply {
    let content_type = req
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let kind = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let unsupported = |kind: &str| {
        api_error(
            StatusCode::BAD_REQUEST,
            &format!("Media type '{kind}' is not supported. Valid media types: [message/*]"),
            "badContent",
        )
    };
    let (bytes, thread) = match wire::query_param(req.query.as_deref(), "uploadType").as_deref() {
        Some("media") => {
            if !kind.starts_with("message/") {
                return Err(unsupported(&kind));
            }
            (req.body.to_vec(), None)
        }
        Some("multipart") => {
            let boundary = content_type
                .split(';')
                .filter_map(|p| p.trim().strip_prefix("boundary="))
                .next()
                .map(|b| b.trim_matches('"').to_owned());
            let parts = match (kind.as_str(), boundary) {
                ("multipart/related", Some(b)) if !b.is_empty() => related_parts(&req.body, &b),
                _ => None,
            };
            let Some([(meta_type, meta), (media_type, media)]) =
                parts.and_then(|p| <[(String, Vec<u8>); 2]>::try_from(p).ok())
            else {
                return Err(api_error(
                    StatusCode::BAD_REQUEST,
                    "Bad multipart request: a JSON metadata part and a media part expected",
                    "badRequest",
                ));
            };
            if !meta_type.starts_with("application/json") {
                return Err(unsupported(&meta_type));
            }
            if !media_type.starts_with("message/") {
                return Err(unsupported(&media_type));
            }
            (media, thread_id(&json_object(&meta)?)?)
        }
        Some("resumable") => {
            return Err(api_error(
                StatusCode::BAD_REQUEST,
                "uploadType=resumable is not reproduced by the sandbox",
                "badRequest",
            ));
        }
        _ => {
            return Err(api_error(
                StatusCode::BAD_REQUEST,
                "Upload requests must include an uploadType URL parameter and a URL path beginning with /upload/",
                "badRequest",
            ));
        }
    };
    deliver(state, grant, bytes, thread)
}

/// The parts of a `multipart/related` body: each part's content type (lower case,
/// without parameters) and its bytes. `None` when it is not well formed.
fn related_parts(body: &[u8], boundary: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let delimiter = format!("--{boundary}");
    let text = body;
    let find = |from: usize, needle: &[u8]| {
        text.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| from + i)
    };
    let mut at = find(0, delimiter.as_bytes())? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if text.get(at..at + 2) == Some(b"--") {
            return Some(parts);
        }
        let start = at + 2; // CRLF after the delimiter
        let next = find(start, format!("\r\n{delimiter}").as_bytes())?;
        let part = text.get(start..next)?;
        let split = part.windows(4).position(|w| w == b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&part[..split]).to_ascii_lowercase();
        let kind = headers
            .lines()
            .find_map(|l| l.strip_prefix("content-type:"))
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        parts.push((kind, part[split + 4..].to_vec()));
        at = next + 2 + delimiter.len();
        if parts.len() > 8 {
            return None;
        }
    }
}

/// Sends `bytes` (an RFC 5322 message) as `grant`'s user, in `thread` or a new one.
fn deliver(
    state: &SandboxState,
    grant: &AccessGrant,
    bytes: Vec<u8>,
    thread: Option<String>,
) -> Reply {
    if bytes.len() > GMAIL_MAX_MESSAGE_BYTES {
        return Err(api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request Entity Too Large",
            "uploadTooLarge",
        ));
    }
    if !has_recipient(&bytes) {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "Recipient address required",
            "invalidArgument",
        ));
    }
    // Read as a mail reader reads it: a message that does not parse, or a recipient
    // header without an address, is refused as Gmail refuses it.
    let Some(parsed) = parse_mail(&bytes) else {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "Invalid RFC822 message",
            "invalidArgument",
        ));
    };
    for (name, list) in [("To", &parsed.to), ("Cc", &parsed.cc), ("Bcc", &parsed.bcc)] {
        if list.iter().any(|a| !a.contains('@')) {
            return Err(api_error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid {name} header"),
                "invalidArgument",
            ));
        }
    }
    let mut store = state.google_store();
    let id = store.new_id();
    let mailbox = store.mailbox(&grant.user.user_id);
    // A reply names a thread of the mailbox; an unknown one is Gmail's 404.
    let thread = match thread {
        Some(t) if mailbox.threads.values().any(|known| *known == t) => t,
        Some(_) => return Err(not_found()),
        None => id.clone(),
    };
    mailbox.sent.insert(id.clone(), bytes);
    mailbox.threads.insert(id.clone(), thread.clone());
    mailbox.history_id += 1;
    Ok((
        StatusCode::OK,
        Some(json!({"id": id, "threadId": thread, "labelIds": ["SENT"]})),
    ))
}

/// A message the Gmail stand-in received, as a mail reader parses it (`mail-parser`):
/// what tests assert on, part by part.
#[derive(Debug, Clone, Default)]
pub struct ParsedMail {
    /// The decoded subject.
    pub subject: Option<String>,
    /// `From`, `To`, `Cc`, `Bcc` addresses.
    pub from: Vec<String>,
    /// `To` addresses.
    pub to: Vec<String>,
    /// `Cc` addresses.
    pub cc: Vec<String>,
    /// `Bcc` addresses.
    pub bcc: Vec<String>,
    /// `In-Reply-To`, without angle brackets.
    pub in_reply_to: Option<String>,
    /// The first text and HTML bodies, decoded.
    pub text: Option<String>,
    /// The first HTML body, decoded.
    pub html: Option<String>,
    /// Attachments: file name, content type (`type/subtype`), decoded bytes.
    pub attachments: Vec<(String, String, Vec<u8>)>,
}

/// Parses a raw RFC 5322 message (`None`: not a message a reader can parse).
pub fn parse_mail(raw: &[u8]) -> Option<ParsedMail> {
    use mail_parser::{MessageParser, MimeHeaders};
    let m = MessageParser::default().parse(raw)?;
    let addrs = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .map(|x| x.address().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
    };
    Some(ParsedMail {
        subject: m.subject().map(str::to_owned),
        from: addrs(m.from()),
        to: addrs(m.to()),
        cc: addrs(m.cc()),
        bcc: addrs(m.bcc()),
        in_reply_to: m.in_reply_to().as_text().map(str::to_owned),
        text: m.body_text(0).map(|t| t.into_owned()),
        html: m.body_html(0).map(|t| t.into_owned()),
        attachments: m
            .attachments()
            .map(|a| {
                let ct = a
                    .content_type()
                    .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
                    .unwrap_or_default();
                (
                    a.attachment_name().unwrap_or("").to_owned(),
                    ct,
                    a.contents().to_vec(),
                )
            })
            .collect(),
    })
}

/// Whether the message's header section has a `To`, `Cc` or `Bcc` with an address.
fn has_recipient(message: &[u8]) -> bool {
    let text = String::from_utf8_lossy(message);
    let headers = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .split("\n\n")
        .next()
        .unwrap_or("");
    headers.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            ["to", "cc", "bcc"].contains(&name.trim().to_ascii_lowercase().as_str())
                && value.contains('@')
        })
    })
}

fn gmail_profile(state: &SandboxState, grant: &AccessGrant) -> (StatusCode, Option<Value>) {
    let mut store = state.google_store();
    let mailbox = store.mailbox(&grant.user.user_id);
    let total = mailbox.sent.len();
    (
        StatusCode::OK,
        Some(json!({
            "emailAddress": grant.user.email,
            "messagesTotal": total,
            "threadsTotal": total,
            "historyId": (1000 + mailbox.history_id).to_string(),
        })),
    )
}

/// Default and largest `maxResults` of `events.list`.
const DEFAULT_PAGE: usize = 250;
const MAX_PAGE: usize = 2500;

fn calendar_method(
    route: ApiRoute,
    state: &SandboxState,
    grant: &AccessGrant,
    event_id: &str,
    req: &ProviderRequest,
) -> Reply {
    let user = &grant.user;
    match route {
        ApiRoute::EventsList => {
            let query = req.query.as_deref();
            let limit = match wire::query_param(query, "maxResults") {
                None => DEFAULT_PAGE,
                Some(text) => match text.parse::<usize>() {
                    Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                    _ => {
                        return Err(api_error(
                            StatusCode::BAD_REQUEST,
                            "Invalid value for: maxResults",
                            "invalid",
                        ));
                    }
                },
            };
            let offset = match wire::query_param(query, "pageToken") {
                None => 0,
                Some(token) => token.parse::<usize>().map_err(|_| {
                    api_error(StatusCode::BAD_REQUEST, "Invalid page token", "invalid")
                })?,
            };
            let bound = |name: &str| -> Result<Option<i64>, ApiError> {
                match wire::query_param(query, name) {
                    None => Ok(None),
                    Some(text) => clock::parse_datetime(&text).map(Some).ok_or_else(|| {
                        api_error(
                            StatusCode::BAD_REQUEST,
                            &format!("Invalid value for: {name}"),
                            "invalid",
                        )
                    }),
                }
            };
            let (time_min, time_max) = (bound("timeMin")?, bound("timeMax")?);
            let sync = wire::query_param(query, "syncToken");
            if sync.is_some() && (time_min.is_some() || time_max.is_some()) {
                return Err(api_error(
                    StatusCode::BAD_REQUEST,
                    "Sync token cannot be used with timeMin or timeMax",
                    "invalid",
                ));
            }
            let mut store = state.google_store();
            let mailbox = store.mailbox(&user.user_id);
            // A sync token names the epoch and the change it was given at.
            let since = match &sync {
                None => None,
                Some(token) => {
                    let parsed = token
                        .strip_prefix('s')
                        .and_then(|t| t.split_once('.'))
                        .and_then(|(e, c)| Some((e.parse::<u64>().ok()?, c.parse::<u64>().ok()?)));
                    match parsed {
                        None => {
                            return Err(api_error(
                                StatusCode::BAD_REQUEST,
                                "Invalid sync token value.",
                                "invalid",
                            ));
                        }
                        Some((epoch, _)) if epoch != mailbox.sync_epoch => {
                            return Err(api_error(
                                StatusCode::GONE,
                                "Sync token is no longer valid, a full sync is required.",
                                "fullSyncRequired",
                            ));
                        }
                        Some((_, change)) => Some(change),
                    }
                }
            };
            let in_range = |event: &Value| {
                let start = event_time(&event["start"]).map(|t| t.0).unwrap_or(i64::MIN);
                let end = event_time(&event["end"]).map(|t| t.0).unwrap_or(i64::MAX);
                time_min.is_none_or(|min| end > min) && time_max.is_none_or(|max| start < max)
            };
            let live: Vec<&Value> = mailbox
                .events
                .iter()
                .filter(|(id, event)| match since {
                    // Incremental: every event changed since, deleted ones included.
                    Some(change) => mailbox.changed.get(*id).is_some_and(|c| *c > change),
                    None => event["status"] != "cancelled" && in_range(event),
                })
                .map(|(_, event)| event)
                .collect();
            let items: Vec<Value> = live
                .iter()
                .skip(offset)
                .take(limit)
                .map(|event| (*event).clone())
                .collect();
            let mut body = json!({
                "kind": "calendar#events",
                "etag": format!("\"{}\"", clock::now_ms()),
                "summary": user.email,
                "updated": rfc3339(clock::now_ms()),
                "timeZone": "UTC",
                "accessRole": "owner",
                "defaultReminders": [{"method": "popup", "minutes": 10}],
                "items": items,
            });
            if offset + limit < live.len() {
                body["nextPageToken"] = json!((offset + limit).to_string());
            } else {
                // The last page gives the token the next incremental list starts from.
                body["nextSyncToken"] =
                    json!(format!("s{}.{}", mailbox.sync_epoch, mailbox.changes));
            }
            Ok((StatusCode::OK, Some(body)))
        }
        ApiRoute::EventsInsert => {
            send_updates(req)?;
            let fields = json_object(&req.body)?;
            let times = event_times(&fields, None)?;
            let mut store = state.google_store();
            // A client may choose the id (base32hex digits, 5–1024 of them), unique in
            // the calendar — a deleted event's id included.
            let id = match fields.get("id") {
                None | Some(Value::Null) => store.new_id(),
                Some(Value::String(id)) if client_event_id(id) => {
                    if store.mailbox(&user.user_id).events.contains_key(id) {
                        return Err(api_error(
                            StatusCode::CONFLICT,
                            "The requested identifier already exists.",
                            "duplicate",
                        ));
                    }
                    id.clone()
                }
                Some(_) => {
                    return Err(api_error(
                        StatusCode::BAD_REQUEST,
                        "Invalid resource id value.",
                        "invalid",
                    ));
                }
            };
            let etag = store.new_etag();
            let now = rfc3339(clock::now_ms());
            let mut event = Map::new();
            for (key, value) in fields {
                if WRITABLE.contains(&key.as_str()) {
                    event.insert(key, value);
                }
            }
            event.insert("start".into(), times.0);
            event.insert("end".into(), times.1);
            let person = json!({"email": user.email, "self": true});
            let extra = json!({
                "kind": "calendar#event",
                "etag": etag,
                "id": id,
                "status": "confirmed",
                "htmlLink": format!("https://www.google.com/calendar/event?eid={id}"),
                "created": now,
                "updated": now,
                "creator": person,
                "organizer": person,
                "iCalUID": format!("{id}@google.com"),
                "sequence": 0,
                "reminders": {"useDefault": true},
                "eventType": "default",
            });
            if let Value::Object(extra) = extra {
                event.extend(extra);
            }
            let event = Value::Object(event);
            let mailbox = store.mailbox(&user.user_id);
            mailbox.events.insert(id.clone(), event.clone());
            mailbox.touch(&id);
            Ok((StatusCode::OK, Some(event)))
        }
        ApiRoute::EventsGet => {
            let mut store = state.google_store();
            match store.mailbox(&user.user_id).events.get(event_id) {
                Some(event) => Ok((StatusCode::OK, Some(event.clone()))),
                None => Err(not_found()),
            }
        }
        ApiRoute::EventsPatch => {
            send_updates(req)?;
            let fields = json_object(&req.body)?;
            let mut store = state.google_store();
            let etag = store.new_etag();
            let mailbox = store.mailbox(&user.user_id);
            let Some(current) = mailbox.events.get(event_id) else {
                return Err(not_found());
            };
            if_match(req, current)?;
            let times = event_times(&fields, Some(current))?;
            let mut event = current.as_object().cloned().unwrap_or_default();
            for (key, value) in fields {
                if !WRITABLE.contains(&key.as_str()) {
                    continue;
                }
                if value.is_null() {
                    event.remove(&key);
                } else {
                    event.insert(key, value);
                }
            }
            event.insert("start".into(), times.0);
            event.insert("end".into(), times.1);
            let sequence = event.get("sequence").and_then(Value::as_u64).unwrap_or(0);
            event.insert("sequence".into(), json!(sequence + 1));
            event.insert("updated".into(), json!(rfc3339(clock::now_ms())));
            event.insert("etag".into(), json!(etag));
            let event = Value::Object(event);
            mailbox.events.insert(event_id.to_owned(), event.clone());
            mailbox.touch(event_id);
            Ok((StatusCode::OK, Some(event)))
        }
        ApiRoute::EventsDelete => {
            send_updates(req)?;
            let mut store = state.google_store();
            let etag = store.new_etag();
            let mailbox = store.mailbox(&user.user_id);
            match mailbox.events.get_mut(event_id) {
                None => Err(not_found()),
                Some(event) if event["status"] == "cancelled" => Err(api_error(
                    StatusCode::GONE,
                    "Resource has been deleted",
                    "deleted",
                )),
                Some(event) => {
                    if_match(req, event)?;
                    event["status"] = json!("cancelled");
                    event["etag"] = json!(etag);
                    mailbox.touch(event_id);
                    Ok((StatusCode::NO_CONTENT, None))
                }
            }
        }
        ApiRoute::GmailSend
        | ApiRoute::GmailSendUpload
        | ApiRoute::GmailProfile
        | ApiRoute::CalendarList
        | ApiRoute::FreeBusy => Err(not_found()),
    }
}

/// `calendarList.list`: the user's one calendar, their primary.
fn calendar_list(grant: &AccessGrant) -> (StatusCode, Option<Value>) {
    let email = &grant.user.email;
    (
        StatusCode::OK,
        Some(json!({
            "kind": "calendar#calendarList",
            "etag": format!("\"{}\"", clock::now_ms()),
            "items": [{
                "kind": "calendar#calendarListEntry",
                "etag": format!("\"{}\"", clock::now_ms()),
                "id": email,
                "summary": email,
                "timeZone": "UTC",
                "accessRole": "owner",
                "primary": true,
                "defaultReminders": [{"method": "popup", "minutes": 10}],
            }],
        })),
    )
}

/// `freebusy.query`: `{timeMin, timeMax, items: [{id}]}` (both times required, RFC 3339;
/// at most 50 calendars, `calendarExpansionMax`); busy intervals of the user's own
/// calendar (`primary` or their address), from events not cancelled nor
/// `transparent`; any other calendar answers `notFound` in its entry, as Google does
/// for one the user cannot see.
fn free_busy(state: &SandboxState, grant: &AccessGrant, body: &[u8]) -> Reply {
    let fields = json_object(body)?;
    let time = |name: &str| -> Result<(i64, String), ApiError> {
        let text = fields.get(name).and_then(Value::as_str).ok_or_else(|| {
            api_error(
                StatusCode::BAD_REQUEST,
                &format!("Missing {name}."),
                "required",
            )
        })?;
        clock::parse_datetime(text)
            .map(|ms| (ms, text.to_owned()))
            .ok_or_else(|| {
                api_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid value for: {name}"),
                    "invalid",
                )
            })
    };
    let (min, min_text) = time("timeMin")?;
    let (max, max_text) = time("timeMax")?;
    if max <= min {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "The specified time range is empty.",
            "timeRangeEmpty",
        ));
    }
    let items = fields
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if items.len() > 50 {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "Too many calendars requested.",
            "tooManyCalendarsRequested",
        ));
    }
    let mut store = state.google_store();
    let mailbox = store.mailbox(&grant.user.user_id);
    let mut busy: Vec<(i64, Value, Value)> = mailbox
        .events
        .values()
        .filter(|e| e["status"] != "cancelled" && e["transparency"] != "transparent")
        .filter_map(|e| {
            let start = event_time(&e["start"]).ok()?.0;
            let end = event_time(&e["end"]).ok()?.0;
            (end > min && start < max).then(|| {
                (
                    start,
                    json!(rfc3339(start.max(min))),
                    json!(rfc3339(end.min(max))),
                )
            })
        })
        .collect();
    busy.sort_by_key(|b| b.0);
    let busy: Vec<Value> = busy
        .into_iter()
        .map(|(_, start, end)| json!({"start": start, "end": end}))
        .collect();
    let mut calendars = Map::new();
    for item in items {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            continue;
        };
        let own = id == "primary" || id.eq_ignore_ascii_case(&grant.user.email);
        calendars.insert(
            id.to_owned(),
            if own {
                json!({"busy": busy})
            } else {
                json!({"errors": [{"domain": "global", "reason": "notFound"}], "busy": []})
            },
        );
    }
    Ok((
        StatusCode::OK,
        Some(json!({
            "kind": "calendar#freeBusy",
            "timeMin": min_text,
            "timeMax": max_text,
            "calendars": calendars,
        })),
    ))
}

/// `sendUpdates`, if given, is one of Calendar's values (else 400 `invalid`); whom it
/// names is not notified here.
fn send_updates(req: &ProviderRequest) -> Result<(), ApiError> {
    match wire::query_param(req.query.as_deref(), "sendUpdates").as_deref() {
        None | Some("all" | "externalOnly" | "none") => Ok(()),
        Some(_) => Err(api_error(
            StatusCode::BAD_REQUEST,
            "Invalid value for: sendUpdates",
            "invalid",
        )),
    }
}

/// An `If-Match` that is not the event's current ETag: 412 `conditionNotMet`, as
/// Calendar answers a write over a changed event.
fn if_match(req: &ProviderRequest, event: &Value) -> Result<(), ApiError> {
    let Some(expected) = req.headers.get("if-match").and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let current = event["etag"].as_str().unwrap_or("");
    if expected.trim() == "*" || expected.trim() == current {
        Ok(())
    } else {
        Err(api_error(
            StatusCode::PRECONDITION_FAILED,
            "Precondition Failed",
            "conditionNotMet",
        ))
    }
}

/// Event members a client may set (the discovery document's `Event`, less what the
/// server owns: `kind etag id htmlLink created updated creator organizer iCalUID
/// sequence`); others in a request are ignored, as Calendar does.
const WRITABLE: [&str; 32] = [
    "anyoneCanAddSelf",
    "attachments",
    "attendees",
    "attendeesOmitted",
    "colorId",
    "conferenceData",
    "description",
    "end",
    "endTimeUnspecified",
    "eventType",
    "extendedProperties",
    "focusTimeProperties",
    "gadget",
    "guestsCanInviteOthers",
    "guestsCanModify",
    "guestsCanSeeOtherGuests",
    "hangoutLink",
    "location",
    "locked",
    "originalStartTime",
    "outOfOfficeProperties",
    "privateCopy",
    "recurrence",
    "recurringEventId",
    "reminders",
    "source",
    "start",
    "status",
    "summary",
    "transparency",
    "visibility",
    "workingLocationProperties",
];

/// Whether `id` is an event id a client may choose: base32hex digits (`0-9a-v`), 5 to
/// 1024 of them.
fn client_event_id(id: &str) -> bool {
    (5..=1024).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
}

/// The event's validated `(start, end)`: from `fields`, falling back to `current`'s.
fn event_times(
    fields: &Map<String, Value>,
    current: Option<&Value>,
) -> Result<(Value, Value), ApiError> {
    let pick = |name: &str| {
        fields
            .get(name)
            .filter(|v| !v.is_null())
            .or_else(|| current.and_then(|c| c.get(name)))
            .cloned()
    };
    let Some(start) = pick("start") else {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "Missing start time.",
            "required",
        ));
    };
    let Some(end) = pick("end") else {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "Missing end time.",
            "required",
        ));
    };
    let (start_at, start_all_day) = event_time(&start)?;
    let (end_at, end_all_day) = event_time(&end)?;
    if start_all_day != end_all_day {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "Start and end times must either both be date or both be dateTime.",
            "invalid",
        ));
    }
    if end_at <= start_at {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "The specified time range is empty.",
            "timeRangeEmpty",
        ));
    }
    Ok((start, end))
}

/// An `EventDateTime`'s instant (ms) and whether it is an all-day `date`.
fn event_time(value: &Value) -> Result<(i64, bool), ApiError> {
    let invalid = || {
        api_error(
            StatusCode::BAD_REQUEST,
            "Invalid start or end time: give dateTime (RFC 3339 with an offset) or date (YYYY-MM-DD).",
            "invalid",
        )
    };
    let object = value.as_object().ok_or_else(invalid)?;
    match (object.get("dateTime"), object.get("date")) {
        (Some(Value::String(text)), None) => clock::parse_datetime(text)
            .map(|ms| (ms, false))
            .ok_or_else(invalid),
        (None, Some(Value::String(text))) => clock::parse_date(text)
            .map(|days| (days * 86_400_000, true))
            .ok_or_else(invalid),
        _ => Err(invalid()),
    }
}

/// The body as exactly one JSON object.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(api_error(
            StatusCode::BAD_REQUEST,
            "Invalid JSON payload received.",
            "parseError",
        )),
    }
}

fn not_found() -> ApiError {
    api_error(StatusCode::NOT_FOUND, "Not Found", "notFound")
}

/// A method's failure, rendered as Google's API error body with one `errors` entry.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    reason: &'static str,
}

fn api_error(status: StatusCode, message: &str, reason: &'static str) -> ApiError {
    ApiError {
        status,
        message: message.to_owned(),
        reason,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        wire::json(
            self.status,
            json!({"error": {
                "code": self.status.as_u16(),
                "message": self.message,
                "errors": [{"message": self.message, "domain": domain(self.reason), "reason": self.reason}],
                "status": grpc_status(self.status),
            }}),
        )
    }
}

/// The `domain` Google gives an error reason: usage limits, or global.
fn domain(reason: &str) -> &'static str {
    match reason {
        "userRateLimitExceeded" | "rateLimitExceeded" | "dailyLimitExceeded" => "usageLimits",
        _ => "global",
    }
}

/// The gRPC status name Google pairs with an HTTP status.
pub(crate) fn grpc_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "INVALID_ARGUMENT",
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::FORBIDDEN => "PERMISSION_DENIED",
        StatusCode::NOT_FOUND | StatusCode::GONE => "NOT_FOUND",
        StatusCode::CONFLICT => "ABORTED",
        StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        s if s.is_server_error() => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

fn with_challenge(mut response: Response, challenge: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(challenge) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

/// 401 for a missing (`invalid` false) or dead token.
fn unauthenticated(invalid: bool) -> Response {
    let (message, detail, reason, challenge) = if invalid {
        (
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "Invalid Credentials",
            "authError",
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
        )
    } else {
        (
            "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "Login Required.",
            "required",
            "Bearer realm=\"https://accounts.google.com/\"",
        )
    };
    let response = wire::json(
        StatusCode::UNAUTHORIZED,
        json!({"error": {
            "code": 401,
            "message": message,
            "errors": [{
                "message": detail,
                "domain": "global",
                "reason": reason,
                "location": "Authorization",
                "locationType": "header",
            }],
            "status": "UNAUTHENTICATED",
        }}),
    );
    with_challenge(response, challenge)
}

/// 403 `ACCESS_TOKEN_SCOPE_INSUFFICIENT` naming the method's scopes.
fn insufficient_scope(route: ApiRoute, needed: &[String]) -> Response {
    let (method, service) = route.method();
    let response = wire::json(
        StatusCode::FORBIDDEN,
        json!({"error": {
            "code": 403,
            "message": "Request had insufficient authentication scopes.",
            "errors": [{
                "message": "Insufficient Permission",
                "domain": "global",
                "reason": "insufficientPermissions",
            }],
            "status": "PERMISSION_DENIED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                "domain": "googleapis.com",
                "metadata": {"service": service, "method": method},
            }],
        }}),
    );
    with_challenge(
        response,
        &format!(
            "Bearer realm=\"https://accounts.google.com/\", error=\"insufficient_scope\", scope=\"{}\"",
            needed.join(" ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_scopes() {
        let api = super::super::google::API_HOST;
        assert_eq!(
            route(
                GMAIL_HOST,
                &Method::POST,
                "/gmail/v1/users/me/messages/send"
            ),
            Some(ApiRoute::GmailSend)
        );
        assert_eq!(
            route(
                api,
                &Method::PATCH,
                "/calendar/v3/calendars/primary/events/abc"
            ),
            Some(ApiRoute::EventsPatch)
        );
        assert_eq!(
            route(
                GMAIL_HOST,
                &Method::GET,
                "/calendar/v3/calendars/primary/events"
            ),
            None
        );
        assert!(
            ApiRoute::GmailSend
                .scopes()
                .contains(&"https://www.googleapis.com/auth/gmail.send".to_owned())
        );
        assert!(has_recipient(b"To: a@b.test\r\nSubject: x\r\n\r\nhello"));
        assert!(!has_recipient(b"Subject: x\r\n\r\nTo: a@b.test"));
    }

    #[test]
    fn multipart_related_bodies_split_into_their_parts() {
        let body = b"--b1\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{\"threadId\":\"t1\"}\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nTo: <a@b.test>\r\n\r\nhi\r\n--b1--\r\n";
        let parts = related_parts(body, "b1").expect("well formed");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "application/json");
        assert_eq!(parts[0].1, b"{\"threadId\":\"t1\"}".to_vec());
        assert_eq!(parts[1].0, "message/rfc822");
        assert_eq!(parts[1].1, b"To: <a@b.test>\r\n\r\nhi".to_vec());
        assert!(related_parts(b"--b1\r\nno end", "b1").is_none());
        assert!(related_parts(body, "other").is_none());
    }

    #[test]
    fn client_chosen_event_ids_are_base32hex_of_5_to_1024_digits() {
        assert!(client_event_id("0123456789abcdefghijklmnopqrstuv"));
        assert!(client_event_id(&"a".repeat(1024)));
        for bad in [
            "abcd",
            "ABCDEF",
            "abcdw",
            "abc-de",
            "abc de",
            &"a".repeat(1025),
        ] {
            assert!(!client_event_id(bad), "{bad}");
        }
    }

    #[test]
    fn sent_mail_is_read_part_by_part_and_a_recipient_without_address_is_invalid() {
        let raw = b"From: <me@b.test>\r\nTo: =?utf-8?q?Zo=C3=AB?= <zoe@b.test>\r\n\
Subject: =?utf-8?q?R=C3=A9sum=C3=A9?=\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--b1\r\n\
Content-Type: text/plain; name=\"a.txt\"\r\nContent-Disposition: attachment; filename=\"a.txt\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nYXR0YWNoZWQ=\r\n--b1--\r\n";
        let m = parse_mail(raw).expect("parses");
        assert_eq!(m.subject.as_deref(), Some("Résumé"));
        assert_eq!(m.to, vec!["zoe@b.test".to_owned()]);
        assert_eq!(m.text.as_deref().map(str::trim), Some("hello"));
        assert_eq!(
            m.attachments,
            vec![(
                "a.txt".to_owned(),
                "text/plain".to_owned(),
                b"attached".to_vec()
            )]
        );
        let no_address = parse_mail(b"To: undisclosed\r\nSubject: x\r\n\r\nhi").expect("parses");
        assert!(
            no_address.to.iter().any(|a| !a.contains('@')),
            "{:?}",
            no_address.to
        );
    }
}
