//! Calendar as the caller, on their primary calendar through their own Calendar
//! connection: events listed (time range, paging, and incremental with a sync token —
//! Google's 410 for an expired token is answered by a full listing, `full_resync:
//! true`), created, changed and deleted. Changes and deletes carry `If-Match` (the
//! event's ETag, as Google gave it): an event changed since is 409 `event_changed`,
//! never overwritten. `send_updates` (`all`, `externalOnly`, `none`) tells Google whom to
//! notify. Events are Google's Event resources as Calendar returns them; a request
//! takes the members below in snake case, checked before anything is sent.

use conduit::connections::Connection;
use conduit::http::{self, ApiError};
use conduit::oauth::lifecycle::Tokens;
use conduit::providers::FieldError;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::gmail::google_error;
use crate::{Call, own_connection_for, token_error};

const KIND: &str = "calendar";
/// Calendar's own page limit is 2,500; Conduit's listings page at 200 at most, as all do.
const MAX_LIMIT: usize = 200;
const DEFAULT_LIMIT: usize = 50;

/// An event's time: a `date_time` (RFC 3339, offset included) with an optional IANA
/// `time_zone`, or an all-day `date` (`YYYY-MM-DD`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct When {
    #[serde(default)]
    date_time: Option<String>,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    date: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attendee {
    email: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    optional: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reminder {
    method: String,
    minutes: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reminders {
    use_default: bool,
    #[serde(default)]
    overrides: Vec<Reminder>,
}

/// The members of an event a request may set (all optional for a change; `start` and
/// `end` required to create).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    start: Option<When>,
    #[serde(default)]
    end: Option<When>,
    #[serde(default)]
    attendees: Option<Vec<Attendee>>,
    #[serde(default)]
    reminders: Option<Reminders>,
    #[serde(default)]
    recurrence: Option<Vec<String>>,
}

fn problem(p: &mut Vec<FieldError>, field: impl Into<String>, message: impl Into<String>) {
    p.push(FieldError {
        field: field.into(),
        message: message.into(),
    });
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// RFC 3339 with an offset (`Z` or `±hh:mm`), as Calendar needs without a time zone.
fn is_date_time(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

fn is_time_zone(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c))
}

fn when(field: &str, w: &When, p: &mut Vec<FieldError>) -> Value {
    match (&w.date_time, &w.date) {
        (Some(dt), None) => {
            if !is_date_time(dt) {
                problem(
                    p,
                    format!("{field}.date_time"),
                    "RFC 3339 with an offset (2026-12-06T10:00:00+01:00)",
                );
            }
            let mut v = json!({ "dateTime": dt });
            if let Some(tz) = &w.time_zone {
                if !is_time_zone(tz) {
                    problem(
                        p,
                        format!("{field}.time_zone"),
                        "an IANA time zone (Europe/Paris)",
                    );
                }
                v["timeZone"] = json!(tz);
            }
            v
        }
        (None, Some(d)) => {
            if !is_date(d) {
                problem(p, format!("{field}.date"), "a date (YYYY-MM-DD)");
            }
            json!({ "date": d })
        }
        _ => {
            problem(p, field, "one of date_time (with time_zone) or date");
            Value::Null
        }
    }
}

/// The Calendar Event members of `body`, checked (every problem named at once).
fn event_fields(body: &EventBody, creating: bool) -> Result<Map<String, Value>, ApiError> {
    let mut p = Vec::new();
    let mut out = Map::new();
    for (name, value, max) in [
        ("summary", &body.summary, 1024),
        ("description", &body.description, 8192),
        ("location", &body.location, 1024),
    ] {
        if let Some(v) = value {
            if v.chars().count() > max {
                problem(&mut p, name, format!("at most {max} characters"));
            }
            out.insert(name.into(), json!(v));
        }
    }
    match (&body.start, &body.end) {
        (Some(s), Some(e)) => {
            let (s, e) = (when("start", s, &mut p), when("end", e, &mut p));
            if s.get("date").is_some() != e.get("date").is_some() {
                problem(
                    &mut p,
                    "end",
                    "start and end are both dates or both date_times",
                );
            }
            out.insert("start".into(), s);
            out.insert("end".into(), e);
        }
        (None, None) if !creating => {}
        (None, None) => problem(&mut p, "start", "required (and end)"),
        (Some(_), None) => problem(&mut p, "end", "required with start"),
        (None, Some(_)) => problem(&mut p, "start", "required with end"),
    }
    if let Some(attendees) = &body.attendees {
        if attendees.len() > 100 {
            problem(&mut p, "attendees", "at most 100");
        }
        let list: Vec<Value> = attendees
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if a.email.contains(['\r', '\n'])
                    || !a.email.contains('@')
                    || a.email.len() > 254
                    || a.email.chars().any(char::is_whitespace)
                {
                    problem(&mut p, format!("attendees[{i}].email"), "an email address");
                }
                let mut v = json!({ "email": a.email });
                if let Some(n) = &a.display_name {
                    v["displayName"] = json!(n);
                }
                if let Some(o) = a.optional {
                    v["optional"] = json!(o);
                }
                v
            })
            .collect();
        out.insert("attendees".into(), Value::Array(list));
    }
    if let Some(r) = &body.reminders {
        if r.overrides.len() > 5 {
            problem(&mut p, "reminders.overrides", "at most 5");
        }
        if r.use_default && !r.overrides.is_empty() {
            problem(&mut p, "reminders.overrides", "not with use_default");
        }
        let overrides: Vec<Value> = r
            .overrides
            .iter()
            .enumerate()
            .map(|(i, o)| {
                if o.method != "email" && o.method != "popup" {
                    problem(
                        &mut p,
                        format!("reminders.overrides[{i}].method"),
                        "email or popup",
                    );
                }
                if o.minutes > 40_320 {
                    problem(
                        &mut p,
                        format!("reminders.overrides[{i}].minutes"),
                        "0 to 40320 (four weeks)",
                    );
                }
                json!({ "method": o.method, "minutes": o.minutes })
            })
            .collect();
        out.insert(
            "reminders".into(),
            json!({ "useDefault": r.use_default, "overrides": overrides }),
        );
    }
    if let Some(rules) = &body.recurrence {
        if rules.len() > 10 {
            problem(&mut p, "recurrence", "at most 10 lines");
        }
        for (i, r) in rules.iter().enumerate() {
            let known = ["RRULE:", "EXRULE:", "RDATE", "EXDATE"]
                .iter()
                .any(|k| r.starts_with(k));
            if !known || r.contains(['\r', '\n']) || r.len() > 1000 {
                problem(
                    &mut p,
                    format!("recurrence[{i}]"),
                    "an RRULE, EXRULE, RDATE or EXDATE line (RFC 5545)",
                );
            }
        }
        out.insert("recurrence".into(), json!(rules));
    }
    if p.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::invalid_fields(p))
    }
}

/// A write's query: `send_updates` (whom Google notifies of the change) and
/// `calendar`.
fn write_query(call: &Call<'_>) -> Result<(Option<String>, String), ApiError> {
    let q = http::query(&call.req, &["send_updates", "calendar"])?;
    let updates = match q.get("send_updates").map(String::as_str) {
        None => None,
        Some(v @ ("all" | "externalOnly" | "none")) => Some(v.to_owned()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "send_updates: all, externalOnly or none",
            ));
        }
    };
    Ok((updates, calendar_id(q.get("calendar").map(String::as_str))?))
}

/// The `calendar` of a query: `primary` (the default) or a calendar id from
/// `GET /v1/me/calendar/calendars` (an address-like id).
fn calendar_id(raw: Option<&str>) -> Result<String, ApiError> {
    let id = raw.unwrap_or("primary");
    let ok = !id.is_empty()
        && id.len() <= 254
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._-+".contains(c));
    if ok {
        Ok(id.to_owned())
    } else {
        Err(ApiError::bad_request(
            "invalid_query",
            "calendar: primary, or an id GET /v1/me/calendar/calendars lists",
        ))
    }
}

/// The caller's Calendar connection, checked for what `use_` needs.
async fn connection(call: &Call<'_>, use_: &str) -> Result<Connection, ApiError> {
    own_connection_for(call, KIND, use_).await
}

/// A calendar's events URL, or one event's (the id's `@` escaped, as clients do).
fn events_url(
    connector: &conduit::connector::Connector<'_>,
    calendar: &str,
    event: Option<&str>,
) -> Result<String, String> {
    let calendar = calendar.replace('@', "%40").replace('+', "%2B");
    let mut url = connector
        .url(&format!("/calendar/v3/calendars/{calendar}/events"))
        .map_err(|e| e.to_string())?;
    if let Some(id) = event {
        url.push('/');
        url.push_str(id);
    }
    Ok(url)
}

/// Calendar's answer: status, JSON body (Null when empty), `Retry-After`.
async fn answer(resp: reqwest::Response) -> (u16, Value, Option<u32>) {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body, retry_after)
}

/// A Calendar answer that is not a success.
fn refused(status: u16, body: &Value, retry_after: Option<u32>) -> ApiError {
    let (reason, message) = google_error(status, body);
    match status {
        429 => ApiError::Unavailable {
            retry_after: retry_after.unwrap_or(5).clamp(1, 300),
            cause: "calendar_rate_limited",
        },
        403 if reason == "rateLimitExceeded" || reason == "userRateLimitExceeded" => {
            ApiError::Unavailable {
                retry_after: retry_after.unwrap_or(5).clamp(1, 300),
                cause: "calendar_rate_limited",
            }
        }
        403 => ApiError::Conflict {
            code: "scopes_missing",
            message: format!("Calendar refused: {message}; reconnect your Calendar"),
        },
        404 | 410 => ApiError::NotFound("no such event or calendar of yours".into()),
        412 => ApiError::Conflict {
            code: "event_changed",
            message: "the event changed since you read it (its ETag no longer matches): read it \
                      again and retry"
                .into(),
        },
        400 => ApiError::bad_request(
            "provider_rejected",
            format!("Calendar refused the event: {message}"),
        ),
        _ => ApiError::BadGateway {
            code: "provider_error",
            message: format!("Calendar answered {status}"),
        },
    }
}

/// The path's event id, checked (Calendar ids: base32hex, 5–1024 characters).
fn event_id(call: &Call<'_>) -> Result<String, ApiError> {
    let id = call.path_param("id")?;
    if id.len() < 5
        || id.len() > 1024
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(ApiError::bad_request(
            "invalid_id",
            "an event id (lower-case letters and digits)",
        ));
    }
    Ok(id)
}

/// The `If-Match` of the request, if any (an ETag as Calendar gave it).
fn if_match(call: &Call<'_>) -> Result<Option<String>, ApiError> {
    match call.req.headers().get("if-match") {
        None => Ok(None),
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| ApiError::bad_request("invalid_header", "If-Match: an ETag"))?;
            if v.is_empty() || v.len() > 200 || v.contains(['\r', '\n']) {
                return Err(ApiError::bad_request("invalid_header", "If-Match: an ETag"));
            }
            Ok(Some(v.to_owned()))
        }
    }
}

/// `GET /v1/me/calendar/events?time_min=&time_max=&limit=&cursor=&sync_token=`.
pub async fn list(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let q = http::query(
        &call.req,
        &[
            "time_min",
            "time_max",
            "limit",
            "cursor",
            "sync_token",
            "calendar",
        ],
    )?;
    let calendar = calendar_id(q.get("calendar").map(String::as_str))?;
    let mut bad = Vec::new();
    for name in ["time_min", "time_max"] {
        if q.get(name).is_some_and(|v| !is_date_time(v)) {
            problem(&mut bad, name, "RFC 3339 with an offset");
        }
    }
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                problem(&mut bad, "limit", format!("1 to {MAX_LIMIT}"));
                DEFAULT_LIMIT
            }
        },
    };
    for name in ["cursor", "sync_token"] {
        if q.get(name).is_some_and(|v| {
            v.is_empty() || v.len() > 1024 || !v.chars().all(|c| c.is_ascii_graphic())
        }) {
            problem(&mut bad, name, "a token a previous listing gave");
        }
    }
    if q.contains_key("sync_token") && (q.contains_key("time_min") || q.contains_key("time_max")) {
        problem(&mut bad, "sync_token", "not with time_min or time_max");
    }
    if !bad.is_empty() {
        return Err(ApiError::invalid_fields(bad));
    }
    let conn = connection(call, "action:list_events").await?;
    let tokens = Tokens::new(call.app, "calendar", call.meta.request_id.clone());
    let fetch = |sync: bool| {
        let mut params: Vec<(&str, String)> = vec![("maxResults", limit.to_string())];
        for (ours, theirs) in [
            ("time_min", "timeMin"),
            ("time_max", "timeMax"),
            ("cursor", "pageToken"),
            ("sync_token", "syncToken"),
        ] {
            // A full listing after an expired token starts over: no token, no cursor.
            let kept = sync || (ours != "sync_token" && ours != "cursor");
            if kept && let Some(v) = q.get(ours) {
                params.push((theirs, v.clone()));
            }
        }
        let tokens = &tokens;
        let conn = &conn;
        let calendar = &calendar;
        async move {
            let resp = tokens
                .send(&conn.tenant, &conn.id, |connector, client| {
                    Ok(client
                        .get(events_url(connector, calendar, None)?)
                        .query(&params))
                })
                .await
                .map_err(token_error)?;
            Ok::<_, ApiError>(answer(resp).await)
        }
    };
    let (mut status, mut body, mut retry_after) = fetch(true).await?;
    let mut full_resync = false;
    if status == 410 && q.contains_key("sync_token") {
        // The sync token expired: the listing starts over, and says so.
        full_resync = true;
        (status, body, retry_after) = fetch(false).await?;
    }
    if !(200..300).contains(&status) {
        return Err(refused(status, &body, retry_after));
    }
    http::json(
        StatusCode::OK,
        &json!({
            "events": body["items"].as_array().cloned().unwrap_or_default(),
            "next_cursor": body["nextPageToken"],
            "next_sync_token": body["nextSyncToken"],
            "full_resync": full_resync,
        }),
    )
}

/// Sends a write of an event: `method` on `event` (none: the collection).
async fn write(
    call: &Call<'_>,
    conn: &Connection,
    method: reqwest::Method,
    event: Option<&str>,
    fields: Option<&Map<String, Value>>,
) -> Result<(u16, Value, Option<u32>), ApiError> {
    let (updates, calendar) = write_query(call)?;
    let etag = if_match(call)?;
    let tokens = Tokens::new(call.app, "calendar", call.meta.request_id.clone());
    let resp = tokens
        .send(&conn.tenant, &conn.id, |connector, client| {
            let mut req = client.request(method.clone(), events_url(connector, &calendar, event)?);
            if let Some(u) = &updates {
                req = req.query(&[("sendUpdates", u)]);
            }
            if let Some(e) = &etag {
                req = req.header("if-match", e);
            }
            if let Some(f) = fields {
                req = req.json(f);
            }
            Ok(req)
        })
        .await
        .map_err(token_error)?;
    Ok(answer(resp).await)
}

/// `POST /v1/me/calendar/events?send_updates=`: creates an event.
pub async fn create(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let body: EventBody = http::json_body(&call.req)?;
    let fields = event_fields(&body, true)?;
    let conn = connection(call, "action:create_event").await?;
    let (status, answer, retry_after) =
        write(call, &conn, reqwest::Method::POST, None, Some(&fields)).await?;
    if !(200..300).contains(&status) {
        return Err(refused(status, &answer, retry_after));
    }
    http::json(StatusCode::CREATED, &answer)
}

/// `PATCH /v1/me/calendar/events/{id}?send_updates=` with `If-Match`: changes the
/// members given.
pub async fn update(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = event_id(call)?;
    let body: EventBody = http::patch_body(&call.req)?;
    let fields = event_fields(&body, false)?;
    let conn = connection(call, "action:update_event").await?;
    let (status, answer, retry_after) = write(
        call,
        &conn,
        reqwest::Method::PATCH,
        Some(&id),
        Some(&fields),
    )
    .await?;
    if !(200..300).contains(&status) {
        return Err(refused(status, &answer, retry_after));
    }
    http::json(StatusCode::OK, &answer)
}

/// `DELETE /v1/me/calendar/events/{id}?send_updates=` with `If-Match`.
pub async fn delete(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = event_id(call)?;
    let conn = connection(call, "action:delete_event").await?;
    let (status, answer, retry_after) =
        write(call, &conn, reqwest::Method::DELETE, Some(&id), None).await?;
    if !(200..300).contains(&status) {
        return Err(refused(status, &answer, retry_after));
    }
    http::no_content()
}

/// `GET /v1/me/calendar/calendars`: the caller's calendars (needs `calendar.readonly`,
/// asked with `uses: ["action:list_calendars"]`).
pub async fn calendars(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    http::query(&call.req, &[])?;
    let conn = connection(call, "action:list_calendars").await?;
    let tokens = Tokens::new(call.app, "calendar", call.meta.request_id.clone());
    let resp = tokens
        .send(&conn.tenant, &conn.id, |connector, client| {
            let url = connector
                .url("/calendar/v3/users/me/calendarList")
                .map_err(|e| e.to_string())?;
            Ok(client.get(url))
        })
        .await
        .map_err(token_error)?;
    let (status, body, retry_after) = answer(resp).await;
    if !(200..300).contains(&status) {
        return Err(refused(status, &body, retry_after));
    }
    let calendars: Vec<Value> = body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "id": c["id"],
                "summary": c["summary"],
                "primary": c["primary"].as_bool().unwrap_or(false),
                "time_zone": c["timeZone"],
                "access_role": c["accessRole"],
            })
        })
        .collect();
    http::json(StatusCode::OK, &json!({ "calendars": calendars }))
}

/// `POST /v1/me/calendar/freebusy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FreeBusyBody {
    time_min: String,
    time_max: String,
    /// Calendar ids (default: the primary one), at most 50.
    #[serde(default)]
    calendars: Option<Vec<String>>,
}

/// `POST /v1/me/calendar/freebusy` `{time_min, time_max, calendars?}` → the busy
/// intervals of each calendar (needs `calendar.readonly`, asked with `uses:
/// ["action:free_busy"]`).
pub async fn free_busy(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let body: FreeBusyBody = http::json_body(&call.req)?;
    let mut p = Vec::new();
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    };
    let (min, max) = (parse(&body.time_min), parse(&body.time_max));
    if min.is_none() {
        problem(&mut p, "time_min", "RFC 3339 with an offset");
    }
    if max.is_none() {
        problem(&mut p, "time_max", "RFC 3339 with an offset");
    }
    if let (Some(min), Some(max)) = (min, max)
        && max <= min
    {
        problem(&mut p, "time_max", "after time_min");
    }
    let calendars = body.calendars.unwrap_or_else(|| vec!["primary".to_owned()]);
    if calendars.is_empty() || calendars.len() > 50 {
        problem(&mut p, "calendars", "1 to 50 calendar ids");
    }
    for (i, c) in calendars.iter().enumerate() {
        if c.is_empty()
            || c.len() > 254
            || c.chars().any(|ch| ch.is_whitespace() || ch.is_control())
        {
            problem(&mut p, format!("calendars[{i}]"), "a calendar id");
        }
    }
    if !p.is_empty() {
        return Err(ApiError::invalid_fields(p));
    }
    let conn = connection(call, "action:free_busy").await?;
    let request = json!({
        "timeMin": body.time_min,
        "timeMax": body.time_max,
        "items": calendars.iter().map(|c| json!({"id": c})).collect::<Vec<_>>(),
    });
    let tokens = Tokens::new(call.app, "calendar", call.meta.request_id.clone());
    let resp = tokens
        .send(&conn.tenant, &conn.id, |connector, client| {
            let url = connector
                .url("/calendar/v3/freeBusy")
                .map_err(|e| e.to_string())?;
            Ok(client.post(url).json(&request))
        })
        .await
        .map_err(token_error)?;
    let (status, answer, retry_after) = answer(resp).await;
    if !(200..300).contains(&status) {
        return Err(refused(status, &answer, retry_after));
    }
    let mut out = Map::new();
    if let Some(map) = answer["calendars"].as_object() {
        for (id, c) in map {
            let mut entry = json!({ "busy": c["busy"].as_array().cloned().unwrap_or_default() });
            if let Some(errors) = c["errors"].as_array() {
                let reasons: Vec<Value> = errors.iter().map(|e| e["reason"].clone()).collect();
                entry["errors"] = json!(reasons);
            }
            out.insert(id.clone(), entry);
        }
    }
    http::json(
        StatusCode::OK,
        &json!({ "time_min": body.time_min, "time_max": body.time_max, "calendars": out }),
    )
}
