//! HubSpot Webhooks API v3 stand-in: an app's webhook settings and event
//! subscriptions (`/webhooks/v3/{appId}/settings`, `/webhooks/v3/{appId}/subscriptions`),
//! and the signed event batches HubSpot sends to the app's target URL when records of
//! a portal where the app is installed change.
//!
//! **API.** Every call authenticates with the app's developer API key as a bearer token
//! (`Authorization: Bearer …`, [`SandboxState::hubspot_developer_key`]), the only
//! credential HubSpot's published description (`webhooks-v3.json`) declares; a missing
//! or wrong key, or the legacy `hapikey` query parameter, is HubSpot's 401
//! `INVALID_AUTHENTICATION`, an unknown app 404. Settings need an
//! absolute `targetUrl` and `throttling.maxConcurrentRequests` of at least 5;
//! subscriptions an `eventType` of the spec's enum, and a `propertyName` exactly when
//! the type is a `propertyChange`; a second subscription of the same type (and
//! property) is a 409. Errors have HubSpot's body
//! `{"status":"error","message","correlationId","category"}`.
//!
//! **Deliveries.** Every record change of the CRM stand-in (`hubspot_crm`: created,
//! a property's value changed, archived) becomes an event for each app installed in the
//! record's portal (an OAuth grant that is not revoked) with target settings and an
//! active subscription of that type — for a property change, one event per changed
//! property subscribed to. Events are `{eventId, subscriptionId, portalId, appId,
//! occurredAt, subscriptionType, attemptNumber, objectId, changeSource, sourceId?,
//! propertyName?, propertyValue?}`, sent as a JSON array of at most 100 per request
//! (`POST targetUrl`, `Content-Type: application/json`), signed with signature v3:
//! `X-HubSpot-Signature-v3` = base64(HMAC-SHA256(client secret, "POST" + targetUrl +
//! body + timestamp)), `X-HubSpot-Request-Timestamp` (Unix ms),
//! `X-HubSpot-Signature-Version: v3`. A request not answered 2xx within 5 s is sent
//! again (a new timestamp and signature, `attemptNumber` + 1), at most 10 attempts.
//! Every request is recorded ([`SandboxState::hubspot_webhook_deliveries`]) with its
//! exact headers and body, so a test can replay or alter one.
//!
//! **Not reproduced:** HubSpot spreads its 10 retries over 24 hours — here they come
//! after 0.5, 1, 2, 4 … s (capped at 30 s) so tests see them; HubSpot requires an HTTPS
//! target URL — plain `http` is accepted for loopback hosts only (the dev host);
//! `maxConcurrentRequests` is stored but deliveries go one request at a time per app;
//! merge, restore and privacy-deletion events are never sent (the CRM stand-in has no
//! such operations); association changes are sent for deals only (`deal.associationChange`
//! with `fromObjectId`, `toObjectId`, `associationType` `DEAL_TO_COMPANY` /
//! `DEAL_TO_CONTACT`, `associationRemoved`, `isPrimaryAssociation` true for companies),
//! not the other side's `company.associationChange` / `contact.associationChange`; HubSpot batches events over a short window —
//! here every 100 ms; `changeSource` is `API` for API writes and `CRM_UI` for the
//! control API's user edits (HubSpot distinguishes more sources; `sourceId` is not
//! sent).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use super::ProviderRequest;
use super::hook_delivery::{delivered, post, target_ok};
use super::hubspot::error_body;
use super::hubspot_crm::{ChangeKind, CrmObject, rfc3339};
use crate::clock::now_ms;
use crate::state::SandboxState;
use crate::wire;

/// Route name of the settings endpoints.
pub const SETTINGS: &str = "hubspot.webhooks_settings";
/// Route name of the subscription endpoints.
pub const SUBSCRIPTIONS: &str = "hubspot.webhooks_subscriptions";
/// Events one request carries at most.
pub const BATCH_MAX: usize = 100;
/// Attempts per request at most.
pub const ATTEMPTS: u32 = 10;
/// How long a delivery waits for an answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(100);

const EVENT_TYPES: [&str; 20] = [
    "company.associationChange",
    "company.creation",
    "company.deletion",
    "company.merge",
    "company.propertyChange",
    "company.restore",
    "contact.associationChange",
    "contact.creation",
    "contact.deletion",
    "contact.merge",
    "contact.privacyDeletion",
    "contact.propertyChange",
    "contact.restore",
    "deal.associationChange",
    "deal.creation",
    "deal.deletion",
    "deal.merge",
    "deal.propertyChange",
    "deal.restore",
    "ticket.creation",
];

/// A matched webhooks route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Settings(u64),
    Subscriptions(u64),
    Subscription(u64, u64),
}

impl Route {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Route::Settings(_) => SETTINGS,
            Route::Subscriptions(_) | Route::Subscription(..) => SUBSCRIPTIONS,
        }
    }
}

/// Matches `/webhooks/v3/{appId}/…`.
pub(crate) fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/webhooks/v3/")?;
    let mut parts = rest.split('/');
    let app: u64 = parts.next()?.parse().ok()?;
    match (parts.next(), parts.next(), parts.next()) {
        (Some("settings"), None, None) => Some(Route::Settings(app)),
        (Some("subscriptions"), None, None) => Some(Route::Subscriptions(app)),
        (Some("subscriptions"), Some(id), None) => Some(Route::Subscription(app, id.parse().ok()?)),
        _ => None,
    }
}

#[derive(Clone, Debug)]
struct Settings {
    target_url: String,
    max_concurrent: u32,
    created_ms: i64,
    updated_ms: i64,
}

#[derive(Clone, Debug)]
struct Subscription {
    id: u64,
    event_type: String,
    property: Option<String>,
    active: bool,
    created_ms: i64,
    updated_ms: i64,
}

#[derive(Clone, Debug, Default)]
struct HookApp {
    settings: Option<Settings>,
    subscriptions: Vec<Subscription>,
}

/// A request waiting to be sent (again).
#[derive(Clone, Debug)]
struct Outgoing {
    app_id: u64,
    events: Vec<Value>,
    attempt: u32,
    due_ms: i64,
}

/// One request sent to a target URL, exactly as sent.
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    /// The app.
    pub app_id: u64,
    /// Where it went.
    pub url: String,
    /// Its headers (signature and timestamp among them).
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: String,
    /// The answer's status; `None` when none came (refused, timed out).
    pub status: Option<u16>,
    /// 0 for the first attempt.
    pub attempt: u32,
    /// When it was sent (Unix ms).
    pub sent_ms: i64,
}

/// The webhooks state: apps' settings and subscriptions, requests waiting, deliveries.
#[derive(Debug, Default)]
pub(crate) struct HookStore {
    apps: BTreeMap<u64, HookApp>,
    next_subscription: u64,
    next_event: u64,
    outgoing: Vec<Outgoing>,
    deliveries: Vec<Delivery>,
}

/// Deliveries kept for inspection at most.
const DELIVERIES_KEPT: usize = 10_000;

fn invalid_auth() -> Response {
    error_body(
        StatusCode::UNAUTHORIZED,
        "The API key provided is invalid. View or manage your API key here: https://app.hubspot.com/l/api-key/",
        "INVALID_AUTHENTICATION",
    )
}

fn validation(message: &str) -> Response {
    error_body(StatusCode::BAD_REQUEST, message, "VALIDATION_ERROR")
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn query_param(req: &ProviderRequest, name: &str) -> Option<String> {
    let q = req.query.as_deref()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn settings_view(s: &Settings) -> Value {
    json!({
        "targetUrl": s.target_url,
        "throttling": {"maxConcurrentRequests": s.max_concurrent, "period": "SECONDLY"},
        "createdAt": rfc3339(s.created_ms),
        "updatedAt": rfc3339(s.updated_ms),
    })
}

fn subscription_view(s: &Subscription) -> Value {
    let mut v = json!({
        "id": s.id.to_string(),
        "eventType": s.event_type,
        "active": s.active,
        "createdAt": rfc3339(s.created_ms),
        "updatedAt": rfc3339(s.updated_ms),
    });
    if let Some(p) = &s.property {
        v["propertyName"] = json!(p);
    }
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettingsIn {
    target_url: String,
    throttling: ThrottlingIn,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThrottlingIn {
    max_concurrent_requests: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionIn {
    event_type: String,
    #[serde(default)]
    property_name: Option<String>,
    #[serde(default)]
    active: Option<bool>,
}

#[derive(Deserialize)]
struct PatchIn {
    active: Option<bool>,
}

/// Serves a webhooks route.
pub(crate) fn handle(route: Route, state: &SandboxState, req: &ProviderRequest) -> Response {
    let app_id = match route {
        Route::Settings(a) | Route::Subscriptions(a) | Route::Subscription(a, _) => a,
    };
    let Some(key) = state.hubspot_developer_key(app_id) else {
        return error_body(
            StatusCode::NOT_FOUND,
            &format!("App {app_id} not found"),
            "OBJECT_NOT_FOUND",
        );
    };
    // The published description (webhooks-v3.json) takes a bearer token only: the
    // developer key in `Authorization`, never in a `hapikey` query parameter.
    let given = wire::bearer_token(&req.headers).unwrap_or_default();
    if query_param(req, "hapikey").is_some() || !crate::state::Secret::new(key).matches(given) {
        return invalid_auth();
    }
    let now = now_ms();
    let mut hooks = state.hook_store();
    let hook_store = &mut *hooks;
    let next_subscription = &mut hook_store.next_subscription;
    let app = hook_store.apps.entry(app_id).or_default();
    match (route, &req.method) {
        (Route::Settings(_), &Method::GET) => match &app.settings {
            Some(s) => wire::json(StatusCode::OK, settings_view(s)),
            None => error_body(
                StatusCode::NOT_FOUND,
                "No webhook settings exist for this app",
                "OBJECT_NOT_FOUND",
            ),
        },
        (Route::Settings(_), &Method::PUT) => {
            let input: SettingsIn = match serde_json::from_slice(&req.body) {
                Ok(i) => i,
                Err(e) => return validation(&format!("Invalid input JSON: {e}")),
            };
            if !target_ok(&input.target_url) {
                return validation("targetUrl must be an absolute https URL");
            }
            if input.throttling.max_concurrent_requests < 5 {
                return validation("throttling.maxConcurrentRequests must be at least 5");
            }
            let created_ms = app.settings.as_ref().map_or(now, |s| s.created_ms);
            let s = Settings {
                target_url: input.target_url,
                max_concurrent: input.throttling.max_concurrent_requests.min(1000) as u32,
                created_ms,
                updated_ms: now,
            };
            let view = settings_view(&s);
            app.settings = Some(s);
            wire::json(StatusCode::OK, view)
        }
        (Route::Settings(_), &Method::DELETE) => {
            app.settings = None;
            StatusCode::NO_CONTENT.into_response()
        }
        (Route::Subscriptions(_), &Method::GET) => wire::json(
            StatusCode::OK,
            json!({"results": app.subscriptions.iter().map(subscription_view).collect::<Vec<_>>()}),
        ),
        (Route::Subscriptions(_), &Method::POST) => {
            let input: SubscriptionIn = match serde_json::from_slice(&req.body) {
                Ok(i) => i,
                Err(e) => return validation(&format!("Invalid input JSON: {e}")),
            };
            if !EVENT_TYPES.contains(&input.event_type.as_str()) {
                return validation(&format!("Unknown eventType {}", input.event_type));
            }
            let needs_property = input.event_type.ends_with(".propertyChange");
            let property = input
                .property_name
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty());
            if needs_property != property.is_some() {
                return validation(if needs_property {
                    "propertyName is required for propertyChange subscriptions"
                } else {
                    "propertyName is only allowed for propertyChange subscriptions"
                });
            }
            if app
                .subscriptions
                .iter()
                .any(|s| s.event_type == input.event_type && s.property == property)
            {
                return error_body(
                    StatusCode::CONFLICT,
                    "A subscription for this event type already exists",
                    "CONFLICT",
                );
            }
            *next_subscription += 1;
            let s = Subscription {
                id: 100_000 + *next_subscription,
                event_type: input.event_type,
                property,
                active: input.active.unwrap_or(false),
                created_ms: now,
                updated_ms: now,
            };
            let view = subscription_view(&s);
            app.subscriptions.push(s);
            wire::json(StatusCode::CREATED, view)
        }
        (Route::Subscription(_, id), &Method::GET) => {
            match app.subscriptions.iter().find(|s| s.id == id) {
                Some(s) => wire::json(StatusCode::OK, subscription_view(s)),
                None => subscription_missing(id),
            }
        }
        (Route::Subscription(_, id), &Method::PATCH) => {
            let input: PatchIn = match serde_json::from_slice(&req.body) {
                Ok(i) => i,
                Err(e) => return validation(&format!("Invalid input JSON: {e}")),
            };
            match app.subscriptions.iter_mut().find(|s| s.id == id) {
                Some(s) => {
                    if let Some(a) = input.active {
                        s.active = a;
                        s.updated_ms = now;
                    }
                    wire::json(StatusCode::OK, subscription_view(s))
                }
                None => subscription_missing(id),
            }
        }
        (Route::Subscription(_, id), &Method::DELETE) => {
            let before = app.subscriptions.len();
            app.subscriptions.retain(|s| s.id != id);
            if app.subscriptions.len() == before {
                subscription_missing(id)
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        _ => error_body(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "VALIDATION_ERROR",
        ),
    }
}

fn subscription_missing(id: u64) -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        &format!("Subscription {id} not found"),
        "OBJECT_NOT_FOUND",
    )
}

fn object_name(object: CrmObject) -> &'static str {
    match object {
        CrmObject::Contacts => "contact",
        CrmObject::Companies => "company",
        CrmObject::Deals => "deal",
    }
}

/// Rounds of the delivery loop so far (all sandboxes of the process).
static TICKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl SandboxState {
    /// Rounds the webhook delivery loops have run, and the HubSpot requests waiting
    /// and sent: what an operator looks at when deliveries seem to stop.
    pub fn hubspot_delivery_status(&self) -> (u64, usize, usize) {
        let hooks = self.hook_store();
        (
            TICKS.load(std::sync::atomic::Ordering::Relaxed),
            hooks.outgoing.len(),
            hooks.deliveries.len(),
        )
    }

    /// The developer API key that manages HubSpot app `app_id`'s webhooks (derived
    /// from its client secret: stable, and only its owner knows it); `None` for an
    /// unknown app.
    pub fn hubspot_developer_key(&self, app_id: u64) -> Option<String> {
        let (_, secret) = self.oauth_store().hubspot_app(app_id)?;
        let mac = hmac(secret.as_bytes(), &[b"developer-api-key"]);
        Some(format!(
            "dev-{}",
            mac.iter()
                .take(12)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ))
    }

    /// Every webhook request sent so far, oldest first (at most the last 10,000).
    pub fn hubspot_webhook_deliveries(&self) -> Vec<Delivery> {
        self.hook_store().deliveries.clone()
    }

    /// Turns the CRM stand-in's new changes into events for the subscribed apps.
    fn collect_hubspot_events(&self) {
        let changes = self.crm_store().take_changes();
        if changes.is_empty() {
            return;
        }
        // Which apps are installed where, read once per round.
        let apps: Vec<(u64, String)> = {
            let hooks = self.hook_store();
            hooks
                .apps
                .iter()
                .filter(|(_, a)| a.settings.is_some() && a.subscriptions.iter().any(|s| s.active))
                .map(|(id, _)| *id)
                .collect::<Vec<_>>()
                .into_iter()
                .filter_map(|id| Some((id, self.oauth_store().hubspot_app(id)?.0)))
                .collect()
        };
        if apps.is_empty() {
            return;
        }
        let installs: Vec<(u64, std::collections::BTreeSet<u64>)> = apps
            .iter()
            .map(|(id, client)| (*id, self.oauth_store().hubspot_installs(client)))
            .collect();
        let mut hooks = self.hook_store();
        let now = now_ms();
        for (app_id, portals) in installs {
            let mut events = Vec::new();
            for (portal, object, change) in &changes {
                if !portals.contains(portal) {
                    continue;
                }
                let Some(app) = hooks.apps.get(&app_id) else {
                    continue;
                };
                let name = object_name(*object);
                let mut found: Vec<(u64, String, Option<String>)> = Vec::new();
                for s in app.subscriptions.iter().filter(|s| s.active) {
                    let wanted = match &change.kind {
                        ChangeKind::Creation => s.event_type == format!("{name}.creation"),
                        ChangeKind::Deletion => s.event_type == format!("{name}.deletion"),
                        ChangeKind::PropertyChange(props) => {
                            s.event_type == format!("{name}.propertyChange")
                                && s.property.as_ref().is_some_and(|p| props.contains(p))
                        }
                        ChangeKind::Association { .. } => {
                            s.event_type == format!("{name}.associationChange")
                        }
                    };
                    if wanted {
                        found.push((s.id, s.event_type.clone(), s.property.clone()));
                    }
                }
                for (sub, kind, property) in found {
                    hooks.next_event += 1;
                    let mut e = json!({
                        "eventId": 5_000_000 + hooks.next_event,
                        "subscriptionId": sub,
                        "portalId": portal,
                        "appId": app_id,
                        "occurredAt": change.at_ms,
                        "subscriptionType": kind,
                        "attemptNumber": 0,
                        "changeSource": change.source,
                    });
                    // An association change names both ends instead of one object.
                    if let ChangeKind::Association { to, to_id, removed } = &change.kind {
                        let kind = format!(
                            "{}_TO_{}",
                            name.to_uppercase(),
                            object_name(*to).to_uppercase()
                        );
                        e["associationType"] = json!(kind);
                        e["fromObjectId"] = json!(change.id);
                        e["toObjectId"] = json!(to_id);
                        e["associationRemoved"] = json!(removed);
                        e["isPrimaryAssociation"] = json!(*to == CrmObject::Companies);
                    } else {
                        e["objectId"] = json!(change.id);
                    }
                    if let Some(p) = property {
                        e["propertyName"] = json!(p);
                    }
                    events.push(e);
                }
            }
            for chunk in events.chunks(BATCH_MAX) {
                hooks.outgoing.push(Outgoing {
                    app_id,
                    events: chunk.to_vec(),
                    attempt: 0,
                    due_ms: now,
                });
            }
        }
    }

    /// Takes the requests due now, with where to send them and the app's secret.
    fn due_hubspot_requests(&self) -> Vec<(Outgoing, String, String)> {
        let now = now_ms();
        let due: Vec<Outgoing> = {
            let mut hooks = self.hook_store();
            let (due, later): (Vec<_>, Vec<_>) =
                hooks.outgoing.drain(..).partition(|o| o.due_ms <= now);
            hooks.outgoing = later;
            due
        };
        due.into_iter()
            .filter_map(|o| {
                let target = self
                    .hook_store()
                    .apps
                    .get(&o.app_id)?
                    .settings
                    .as_ref()?
                    .target_url
                    .clone();
                let (_, secret) = self.oauth_store().hubspot_app(o.app_id)?;
                Some((o, target, secret))
            })
            .collect()
    }

    fn record_delivery(&self, d: Delivery, retry: Option<Outgoing>) {
        let mut hooks = self.hook_store();
        if hooks.deliveries.len() >= DELIVERIES_KEPT {
            hooks.deliveries.drain(..DELIVERIES_KEPT / 2);
        }
        hooks.deliveries.push(d);
        if let Some(r) = retry {
            hooks.outgoing.push(r);
        }
    }
}

/// The v3 signature of a request HubSpot sends.
pub fn sign(secret: &str, method: &str, url: &str, body: &str, timestamp: &str) -> String {
    STANDARD.encode(hmac(
        secret.as_bytes(),
        &[
            method.as_bytes(),
            url.as_bytes(),
            body.as_bytes(),
            timestamp.as_bytes(),
        ],
    ))
}

/// Sends one request; the delivery as recorded, and the retry if it failed.
async fn send(
    client: &reqwest::Client,
    mut o: Outgoing,
    url: String,
    secret: String,
) -> (Delivery, Option<Outgoing>) {
    for e in &mut o.events {
        e["attemptNumber"] = json!(o.attempt);
    }
    let body = Value::Array(o.events.clone()).to_string();
    let sent_ms = now_ms();
    let timestamp = sent_ms.to_string();
    let signature = sign(&secret, "POST", &url, &body, &timestamp);
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-hubspot-signature-v3".to_owned(), signature),
        ("x-hubspot-request-timestamp".to_owned(), timestamp),
        ("x-hubspot-signature-version".to_owned(), "v3".to_owned()),
        (
            "x-hubspot-timeout-millis".to_owned(),
            TIMEOUT.as_millis().to_string(),
        ),
    ];
    let status = post(client, &url, &headers, &body, TIMEOUT)
        .await
        .map(|(s, _)| s);
    let ok = delivered(status);
    let attempt = o.attempt;
    let retry = (!ok && attempt + 1 < ATTEMPTS).then(|| {
        let delay = (500_i64 << attempt.min(6)).min(30_000);
        Outgoing {
            attempt: attempt + 1,
            due_ms: now_ms() + delay,
            ..o.clone()
        }
    });
    (
        Delivery {
            app_id: o.app_id,
            url,
            headers,
            body,
            status,
            attempt,
            sent_ms,
        },
        retry,
    )
}

/// Runs the webhook deliveries of the stand-ins (HubSpot's here, Pipedrive's in
/// [`super::pipedrive_webhooks`], Zoho's in [`super::zoho_webhooks`], Dynamics 365's in
/// [`super::dynamics365_crm::hooks`], Salesforce's outbound messages in
/// [`super::salesforce_crm::outbound`]) until the task is aborted: every 100 ms, new changes
/// become events and due requests are sent (one at a time per app).
pub(crate) async fn deliver_forever(state: SandboxState) {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        TICKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        super::pipedrive_webhooks::tick(&state, &client).await;
        super::zoho_webhooks::tick(&state, &client).await;
        super::dynamics365_crm::hooks::tick(&state, &client).await;
        super::salesforce_crm::outbound::tick(&state, &client).await;
        state.collect_hubspot_events();
        let due = state.due_hubspot_requests();
        if due.is_empty() {
            continue;
        }
        let mut per_app: BTreeMap<u64, Vec<(Outgoing, String, String)>> = BTreeMap::new();
        for d in due {
            per_app.entry(d.0.app_id).or_default().push(d);
        }
        let rounds = per_app.into_values().map(|requests| {
            let client = client.clone();
            let state = state.clone();
            async move {
                for (o, url, secret) in requests {
                    let (delivery, retry) = send(&client, o, url, secret).await;
                    state.record_delivery(delivery, retry);
                }
            }
        });
        futures::future::join_all(rounds).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/webhooks/v3/7/settings"), Some(Route::Settings(7)));
        assert_eq!(
            route("/webhooks/v3/7/subscriptions"),
            Some(Route::Subscriptions(7))
        );
        assert_eq!(
            route("/webhooks/v3/7/subscriptions/9"),
            Some(Route::Subscription(7, 9))
        );
        assert_eq!(route("/webhooks/v3/x/settings"), None);
        assert_eq!(route("/webhooks/v3/7/other"), None);
    }

    #[test]
    fn the_signature_matches_an_independent_computation() {
        // python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(
        // b'secret', b'POSThttps://h.example/x[]1700000000000', hashlib.sha256).digest()).decode())"
        assert_eq!(
            sign(
                "secret",
                "POST",
                "https://h.example/x",
                "[]",
                "1700000000000"
            ),
            "rsshiWd5mm+A5VJj/xZKXHFahO1GPd4e2eclSyBqYWk="
        );
    }
}
