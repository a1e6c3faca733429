//! Every dispatch template against its strict stand-in in the sandbox, end to end: the
//! tenant connects the provider the way the dashboard does (OAuth through the sandbox's
//! authorize page, or credentials), creates an integration, sends an event, and the
//! record the stand-in created is read back from the sandbox's admin routes beside the
//! dispatch log's external id. Then the walk-through chain (Genesys → TechnologyOne →
//! Salesforce) and its faults: a 429 storm, an effect followed by a 5xx, permanent 4xx
//! with continue and stop, duplicate delivery, and a worker killed between steps.
//!
//! The sandbox is shared by every test of the process: records are told apart by the
//! integration id inside the idempotency key each record carries (`Ref: <key>`,
//! `external_id`, `CallObject`…), and tests that turn a provider's knobs hold its
//! [`provider_lock`].

use std::time::{Duration, Instant};

use conduit::dispatch::engine::Dispatcher;
use conduit::dispatch::inbound::{DispatchEvent, PRODUCT_SOURCE};
use scenarios::{Role, TestApp, provider_lock};
use serde_json::{Value, json};

const RETURN_TO: &str = "http://localhost:5173/integrations";

/// The secrets of the sandbox's default accounts used below (none may reach a log).
const SECRETS: [&str; 8] = scenarios::DISPATCH_SECRETS;

/// A tenant and its admin's token.
struct Tenant {
    app: TestApp,
    id: String,
    admin: String,
    /// Secrets of its OAuth connections (tokens), besides the default accounts'.
    secrets: Vec<String>,
}

impl Tenant {
    async fn new() -> Self {
        let app = TestApp::spawn().await;
        let id = app.tenant();
        let admin = app.token(&id, Role::Admin);
        Self {
            app,
            id,
            admin,
            secrets: Vec::new(),
        }
    }

    /// Connects `provider` in the sandbox as a tenant would; returns the connection id.
    async fn connect(&self, provider: &str) -> String {
        let oauth = |fields: Value| json!({"return_to": RETURN_TO, "fields": fields});
        let by_oauth = match provider {
            "genesys" => Some(oauth(json!({"region": "mypurecloud.com"}))),
            "salesforce" => Some(json!({"return_to": RETURN_TO})),
            "dynamics365" => Some(oauth(json!({"org": "acme", "crm_region": "crm"}))),
            "zoho" => Some(
                json!({"return_to": RETURN_TO, "fields": {"data_centre": "com"},
                "uses": ["action:log_call", "action:sync_contact"]}),
            ),
            _ => None,
        };
        if let Some(body) = by_oauth {
            let out = self
                .app
                .oauth_connect(&self.admin, provider, body, "")
                .await;
            assert_eq!(out.status, "connected", "{provider}: {}", out.return_url);
            return out.connection_id.expect("connected").to_string();
        }
        let body = scenarios::dispatch_credentials(provider, &self.app.sandbox_url())
            .unwrap_or_else(|| panic!("no connection for {provider}"));
        let (status, created) = self.app.post("/v1/connections", &self.admin, body).await;
        assert_eq!(status, 201, "{provider}: {created}");
        created["id"].as_str().expect("connection id").to_owned()
    }

    /// Adds a connection's stored secrets (its tokens, keys) to those no log may show.
    async fn learn_secrets(&mut self, connection: &str) {
        let id = conduit::domain::ConnectionId::parse(connection).expect("connection id");
        for (_, value) in self.app.tokens(&self.id, &id).await {
            if value.len() >= 8 {
                self.secrets.push(value);
            }
        }
    }

    /// Creates an integration of `provider`'s `action` on `conversation_ended` at
    /// `priority`; `extra` is merged into the body (settings, on_failure, webhook…).
    async fn integration(
        &self,
        provider: &str,
        action: &str,
        connection: Option<&str>,
        priority: u32,
        extra: Value,
    ) -> String {
        let mut body = json!({
            "name": format!("{provider} {action}"), "provider": provider, "action": action,
            "triggers": [{"event": "conversation_ended"}], "priority": priority,
            "retry": {"max_attempts": 3, "initial_backoff_seconds": 1, "max_backoff_seconds": 1},
        });
        if let Some(c) = connection {
            body["connection_id"] = json!(c);
        }
        for (k, v) in extra.as_object().expect("an object") {
            body[k] = v.clone();
        }
        let (status, created) = self.app.post("/v1/integrations", &self.admin, body).await;
        assert_eq!(status, 201, "{provider}.{action}: {created}");
        created["id"].as_str().expect("integration id").to_owned()
    }

    /// A `conversation_ended` event of this tenant (`tag` makes its ids unique).
    fn event(&self, tag: &str) -> Value {
        json!({
            "schema_version": 1, "type": "conversation_ended",
            "event_id": format!("evt_{tag}_{}", &self.id[2..]), "tenant_id": self.id,
            "occurred_at": "2026-12-05T03:12:44Z",
            "conversation": {"id": format!("conv_{tag}"), "channel": "voice",
                "direction": "inbound", "started_at": "2026-12-05T03:07:32Z",
                "ended_at": "2026-12-05T03:12:44Z", "duration_seconds": 312,
                "from_number": "+61290001234", "to_number": "+61290009999",
                "transcript_url": "https://app.example.com/t/conv_1",
                "summary": "Wants the bin collection moved to Friday & asked about fees."},
            "contact": {"name": "Dana Lee", "email": "dana@example.com", "phone": "+61290001234"},
        })
    }

    /// `event(tag)` as the bus delivers it to the dispatcher (for tests that run the
    /// engine themselves).
    fn bus_event(&self, tag: &str) -> DispatchEvent {
        let detail = self.event(tag);
        let envelope = json!({"id": format!("eb-{tag}"), "source": PRODUCT_SOURCE,
            "detail-type": "conversation_ended", "time": detail["occurred_at"], "detail": detail});
        DispatchEvent::from_envelope(&envelope).expect("event")
    }

    /// Sends `event` through one integration now; returns the settled dispatch.
    async fn send(&self, integration: &str, event: Value) -> Value {
        let (status, d) = self
            .app
            .post(
                &format!("/v1/integrations/{integration}/send"),
                &self.admin,
                json!({"event": event}),
            )
            .await;
        assert!(status == 200 || status == 202, "{status}: {d}");
        self.settled(d["id"].as_str().expect("dispatch id")).await
    }

    /// Puts `event` on the bus (`POST /v1/events`); returns the settled dispatch.
    async fn publish(&self, event: Value) -> Value {
        let (status, accepted) = self.app.post("/v1/events", &self.admin, event).await;
        assert_eq!(status, 202, "{accepted}");
        self.settled(accepted["dispatch_id"].as_str().expect("dispatch_id"))
            .await
    }

    /// Waits for a dispatch to end.
    async fn settled(&self, id: &str) -> Value {
        self.app.dispatch_settled(&self.admin, id).await
    }

    /// Fails if any default account's secret (or `more`) is in the dispatch, the
    /// integrations' logs or the process's log lines.
    async fn assert_no_secret(&self, dispatch: &Value, integrations: &[&str], more: &[&str]) {
        let mut texts = vec![dispatch.to_string(), self.app.logs()];
        for i in integrations {
            let (status, logs) = self
                .app
                .get(&format!("/v1/integrations/{i}/logs"), &self.admin)
                .await;
            assert_eq!(status, 200, "{logs}");
            texts.push(logs.to_string());
        }
        let all: Vec<&str> = SECRETS
            .iter()
            .chain(more)
            .copied()
            .chain(self.secrets.iter().map(String::as_str))
            .collect();
        for text in &texts {
            for secret in &all {
                assert!(!text.contains(secret), "a secret reached a log");
            }
        }
    }
}

/// GET on the sandbox's admin routes.
async fn sandbox_get(app: &TestApp, path: &str) -> Value {
    let resp = reqwest::get(format!("{}{path}", app.sandbox_url()))
        .await
        .expect("sandbox request");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.expect("sandbox JSON")
}

/// POST on the sandbox's admin routes.
async fn sandbox_post(app: &TestApp, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", app.sandbox_url()))
        .json(&body)
        .send()
        .await
        .expect("sandbox request");
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// The records `provider`'s stand-in holds whose content mentions `needle`.
async fn records(app: &TestApp, provider: &str, needle: &str) -> Vec<Value> {
    let all = sandbox_get(app, &format!("/_sandbox/dispatch/{provider}/records")).await;
    all["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["record"].to_string().contains(needle))
        .cloned()
        .collect()
}

/// The requests `provider`'s stand-in received whose body mentions `needle`.
async fn requests(app: &TestApp, provider: &str, needle: &str) -> Vec<Value> {
    let all = sandbox_get(app, &format!("/_sandbox/dispatch/{provider}/requests")).await;
    all["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter(|r| r["body"].to_string().contains(needle))
        .cloned()
        .collect()
}

/// Checks a one-step dispatch succeeded and returns its step.
fn one_step(d: &Value) -> &Value {
    assert_eq!(d["status"], "succeeded", "{d}");
    let steps = d["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{d}");
    assert!(steps[0]["external_id"].is_string(), "{d}");
    &steps[0]
}

/// Exactly one record of `provider` carries the integration's key; it is returned
/// after checking its id is the step's external id.
async fn the_record(app: &TestApp, provider: &str, integration: &str, step: &Value) -> Value {
    let got = records(app, provider, integration).await;
    let external = step["external_id"].as_str().expect("external id");
    let main: Vec<&Value> = got.iter().filter(|r| r["id"] == external).collect();
    assert_eq!(main.len(), 1, "{provider}: {external} in {got:?}");
    // Other records may carry the key too (a Zendesk ticket's first comment), but no
    // second record of the same kind.
    let same = got
        .iter()
        .filter(|r| r["collection"] == main[0]["collection"])
        .count();
    assert_eq!(same, 1, "{provider}: {got:?}");
    main[0]["record"].clone()
}

/// Connects, creates the integration, sends one event: (tenant, integration, step, record).
async fn one(
    provider: &str,
    action: &str,
    extra: Value,
    tweak: impl FnOnce(&mut Value),
) -> (Tenant, String, Value, Value) {
    let mut t = Tenant::new().await;
    let conn = t.connect(provider).await;
    t.learn_secrets(&conn).await;
    let id = t
        .integration(provider, action, Some(&conn), 10, extra)
        .await;
    let mut e = t.event(provider);
    tweak(&mut e);
    let d = t.send(&id, e).await;
    let step = one_step(&d).clone();
    let record = the_record(&t.app, provider, &id, &step).await;
    t.assert_no_secret(&d, &[&id], &[]).await;
    (t, id, step, record)
}

fn text(v: &Value) -> String {
    v.to_string()
}

#[tokio::test]
async fn genesys_logs_the_call_as_a_note_on_the_contact() {
    let _g = provider_lock("genesys").await;
    let (_, _, step, note) = one("genesys", "log_call", json!({}), |_| {}).await;
    assert!(text(&note).contains("Wants the bin collection"), "{note}");
    assert!(text(&note).contains("conv_genesys"), "{note}");
    assert_eq!(step["outputs"]["id"], step["external_id"]);
}

#[tokio::test]
async fn technologyone_opens_a_job() {
    let _g = provider_lock("technologyone").await;
    let (_, id, _, job) = one("technologyone", "create_job", json!({}), |_| {}).await;
    assert_eq!(job["RequestType"], "GENERAL", "{job}");
    assert_eq!(job["ContactName"], "Dana Lee", "{job}");
    assert!(text(&job["ExternalReference"]).contains(&id), "{job}");
}

#[tokio::test]
async fn sap_opens_a_service_request_after_the_csrf_fetch() {
    let _g = provider_lock("sap").await;
    let (t, id, _, ticket) = one("sap", "create_ticket", json!({}), |_| {}).await;
    assert!(text(&ticket).contains("Dana Lee"), "{ticket}");
    assert!(
        text(&ticket).contains("Wants the bin collection"),
        "{ticket}"
    );
    let got = requests(&t.app, "sap", &id).await;
    assert!(got.iter().all(|r| r["status"] == 201), "{got:?}");
}

#[tokio::test]
async fn salesforce_logs_a_completed_call_task() {
    let _g = provider_lock("salesforce").await;
    let (_, id, _, task) = one("salesforce", "log_call", json!({}), |_| {}).await;
    assert_eq!(task["TaskSubtype"], "Call", "{task}");
    assert_eq!(task["CallType"], "Inbound", "{task}");
    assert_eq!(task["CallDurationInSeconds"], 312, "{task}");
    assert!(text(&task["CallObject"]).contains(&id), "{task}");
}

#[tokio::test]
async fn dynamics_logs_a_phone_call() {
    let _g = provider_lock("dynamics365").await;
    let (_, _, _, call) = one("dynamics365", "log_call", json!({}), |_| {}).await;
    assert_eq!(call["directioncode"], false, "{call}");
    assert!(
        text(&call["description"]).contains("Wants the bin"),
        "{call}"
    );
}

#[tokio::test]
async fn zendesk_opens_a_ticket_with_the_key_as_external_id() {
    let _g = provider_lock("zendesk").await;
    let (_, id, _, ticket) = one("zendesk", "create_ticket", json!({}), |_| {}).await;
    assert!(text(&ticket).contains(&id), "{ticket}");
    assert!(text(&ticket).contains("Wants the bin"), "{ticket}");
}

/// A note on the ticket the event names: an add_note integration saved without a
/// ticket setting comments on the ticket in the event's `custom_fields.zendesk_ticket_id`,
/// and an event without one fails its step naming the field.
#[tokio::test]
async fn zendesk_comments_on_the_ticket_the_event_names() {
    let mut t = Tenant::new().await;
    let conn = t.connect("zendesk").await;
    t.learn_secrets(&conn).await;
    let opener = t
        .integration("zendesk", "create_ticket", Some(&conn), 10, json!({}))
        .await;
    let opened = t.send(&opener, t.event("zd_open")).await;
    let ticket = one_step(&opened)["external_id"]
        .as_str()
        .expect("ticket id")
        .to_owned();
    // Saved with no settings at all: the ticket comes with each event.
    let noter = t
        .integration("zendesk", "add_note", Some(&conn), 10, json!({}))
        .await;
    let mut e = t.event("zd_note");
    e["custom_fields"] = json!({"zendesk_ticket_id": ticket});
    let d = t.send(&noter, e).await;
    assert_eq!(one_step(&d)["external_id"], ticket.as_str(), "{d}");
    let sent = requests(&t.app, "zendesk", &noter).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(text(&sent[0]["path"]).contains(&ticket), "{sent:?}");
    // No ticket in the event and none in the settings: the step fails, naming both.
    let d = t.send(&noter, t.event("zd_none")).await;
    assert_eq!(d["status"], "failed", "{d}");
    let error = &d["steps"][0]["error"];
    assert_eq!(error["code"], "render_failed", "{d}");
    assert!(
        text(&error["message"]).contains("custom_fields.zendesk_ticket_id"),
        "{d}"
    );
    t.assert_no_secret(&d, &[&opener, &noter], &[]).await;
}

#[tokio::test]
async fn freshdesk_opens_a_ticket_tagged_with_the_key() {
    let _g = provider_lock("freshdesk").await;
    let (_, _, _, ticket) = one("freshdesk", "create_ticket", json!({}), |_| {}).await;
    assert_eq!(ticket["email"], "dana@example.com", "{ticket}");
    assert!(text(&ticket).contains("&amp;"), "HTML escaped: {ticket}");
}

#[tokio::test]
async fn hubspot_logs_a_call_engagement() {
    let _g = provider_lock("hubspot").await;
    let (_, _, _, call) = one("hubspot", "log_call", json!({}), |_| {}).await;
    assert!(text(&call).contains("INBOUND"), "{call}");
    assert!(text(&call).contains("conv_hubspot"), "{call}");
}

#[tokio::test]
async fn pipedrive_logs_a_done_call_activity() {
    let _g = provider_lock("pipedrive").await;
    let (_, _, _, activity) = one("pipedrive", "log_call", json!({}), |_| {}).await;
    assert_eq!(activity["type"], "call", "{activity}");
    assert_eq!(activity["due_date"], "2026-12-05", "{activity}");
}

#[tokio::test]
async fn zoho_upserts_a_call_on_the_conduit_key() {
    let _g = provider_lock("zoho").await;
    let (_, id, _, call) = one("zoho", "log_call", json!({}), |_| {}).await;
    assert_eq!(call["Call_Type"], "Inbound", "{call}");
    assert_eq!(call["Call_Duration"], "05:12", "{call}");
    assert!(text(&call["Conduit_Key"]).contains(&id), "{call}");
}

/// The provider expires its access tokens early, then a burst of events arrives: the
/// events the dispatcher takes together read the connection once and share one
/// refresh (the first 401 refreshes; the others go on with the token the invocation
/// keeps, or find it stored), each call is logged once, and the connection's token
/// moved on by exactly one generation.
#[tokio::test]
async fn a_burst_after_the_provider_expired_its_tokens_shares_one_refresh() {
    let _g = provider_lock("zoho").await;
    let mut t = Tenant::new().await;
    let conn = t.connect("zoho").await;
    let id = t
        .integration("zoho", "log_call", Some(&conn), 10, json!({}))
        .await;
    let conn_id = conduit::domain::ConnectionId::parse(&conn).expect("connection id");
    let generation = |c: conduit::connections::Connection| c.token.expect("a token").generation;
    let before = generation(t.app.connection(&t.id, &conn_id).await);
    t.app
        .sandbox()
        .expire_access_tokens(sandbox::OAuthProvider::Zoho);
    let events: Vec<Value> = (0..8).map(|k| t.event(&format!("burst{k}"))).collect();
    let accepted = futures::future::join_all(
        events
            .iter()
            .map(|e| t.app.post("/v1/events", &t.admin, e.clone())),
    )
    .await;
    let mut dispatches = Vec::new();
    for (status, body) in accepted {
        assert_eq!(status, 202, "{body}");
        let d = t
            .settled(body["dispatch_id"].as_str().expect("dispatch_id"))
            .await;
        one_step(&d);
        dispatches.push(d);
    }
    assert_eq!(
        generation(t.app.connection(&t.id, &conn_id).await),
        before + 1,
        "one refresh for the whole burst"
    );
    // The expiry reached the calls (refused with 401 before the refresh, a few at
    // most: those sent before the first answer came back).
    let refused = requests(&t.app, "zoho", &id)
        .await
        .into_iter()
        .filter(|r| r["status"] == 401)
        .count();
    assert!((1..=8).contains(&refused), "{refused} refused");
    // One call per event, each carrying its own key.
    let calls = records(&t.app, "zoho", &id).await;
    assert_eq!(calls.len(), 8, "{calls:?}");
    for e in &events {
        let key = format!("{}:{id}", e["event_id"].as_str().expect("event id"));
        assert_eq!(
            calls
                .iter()
                .filter(|c| text(&c["record"]).contains(&key))
                .count(),
            1,
            "{key}"
        );
    }
    t.learn_secrets(&conn).await;
    // Every dispatch of the burst, its integration's log and the logs, read once.
    t.assert_no_secret(&Value::Array(dispatches), &[&id], &[])
        .await;
}

#[tokio::test]
async fn chatwoot_adds_a_private_note() {
    let _g = provider_lock("chatwoot").await;
    let (_, _, _, message) = one(
        "chatwoot",
        "add_note",
        json!({"settings": {"conversation_id": "42"}}),
        |_| {},
    )
    .await;
    assert_eq!(message["private"], true, "{message}");
    assert!(text(&message).contains("Wants the bin"), "{message}");
}

#[tokio::test]
async fn the_custom_api_gets_the_event_with_an_idempotency_key() {
    let _g = provider_lock("custom").await;
    let t = Tenant::new().await;
    let conn = t.connect("custom_api").await;
    let request = json!({"method": "POST", "path": "/calls",
        "body": {"event_id": "{{ event_id }}", "data": "{{ event }}"}, "outputs": {"id": "/id"}});
    let id = t
        .integration(
            "custom_api",
            "request",
            Some(&conn),
            10,
            json!({"request": request}),
        )
        .await;
    let e = t.event("custom");
    let d = t.send(&id, e.clone()).await;
    let step = one_step(&d);
    let got = records(&t.app, "custom", e["event_id"].as_str().unwrap()).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["id"].as_str(), step["external_id"].as_str());
    assert_eq!(
        got[0]["record"]["data"]["conversation"]["id"],
        "conv_custom"
    );
    let sent = requests(&t.app, "custom", e["event_id"].as_str().unwrap()).await;
    let key = sent[0]["headers"]["idempotency-key"].as_str().unwrap_or("");
    assert!(key.contains(&id), "{sent:?}");
    t.assert_no_secret(&d, &[&id], &[]).await;
}

#[tokio::test]
async fn a_webhook_reaches_the_sandbox_receiver_signed() {
    let t = Tenant::new().await;
    // The receiver first (it needs a secret), then the integration, then its secret.
    let rx = sandbox_post(
        &t.app,
        "/_sandbox/webhooks",
        json!({"secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}),
    )
    .await;
    let rx_id = rx["id"].as_str().expect("receiver id");
    let (status, created) = t
        .app
        .post(
            "/v1/integrations",
            &t.admin,
            json!({"name": "hook", "provider": "webhook", "action": "deliver",
                "triggers": [{"event": "conversation_ended"}], "priority": 10,
                "webhook": {"url": rx["url"]}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (id, secret) = (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    sandbox_post(
        &t.app,
        &format!("/_sandbox/webhooks/{rx_id}/secrets"),
        json!({"secrets": [secret]}),
    )
    .await;
    let e = t.event("hook");
    let d = t.publish(e.clone()).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let got = sandbox_get(&t.app, &format!("/_sandbox/webhooks/{rx_id}")).await;
    let deliveries = got["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 1, "{got}");
    assert_eq!(deliveries[0]["valid"], true, "{got}");
    assert_eq!(got["unique_valid"], 1);
    assert_eq!(
        deliveries[0]["body"]["data"]["event_id"], e["event_id"],
        "{got}"
    );
    t.assert_no_secret(&d, &[&id], &[&secret]).await;
}

/// The walk-through chain: (tenant, [genesys, technologyone, salesforce] integration
/// ids). The OAuth connections' tokens are added to the tenant's secrets.
async fn walkthrough(extra: [Value; 3]) -> (Tenant, [String; 3]) {
    let (mut t, ids, conns) = walkthrough_with(extra).await;
    for conn in conns {
        t.learn_secrets(&conn).await;
    }
    assert!(t.secrets.len() >= 2, "the OAuth tokens are known");
    (t, ids)
}

/// The walk-through chain and its OAuth connections' ids.
async fn walkthrough_with(extra: [Value; 3]) -> (Tenant, [String; 3], [String; 2]) {
    let t = Tenant::new().await;
    let [g, j, s] = extra;
    let genesys = t.connect("genesys").await;
    let t1 = t.connect("technologyone").await;
    let sf = t.connect("salesforce").await;
    let ids = [
        t.integration("genesys", "log_call", Some(&genesys), 10, g)
            .await,
        t.integration("technologyone", "create_job", Some(&t1), 20, j)
            .await,
        t.integration("salesforce", "send_summary", Some(&sf), 30, s)
            .await,
    ];
    (t, ids, [genesys, sf])
}

/// The records of the walk-through chain's three steps, one per step (panics otherwise).
async fn chain_records(t: &Tenant, ids: &[String; 3]) -> [Value; 3] {
    let mut out = Vec::new();
    for (provider, id) in ["genesys", "technologyone", "salesforce"].iter().zip(ids) {
        let got = records(&t.app, provider, id).await;
        assert_eq!(got.len(), 1, "{provider}: one record, got {got:?}");
        out.push(got[0].clone());
    }
    out.try_into().expect("three")
}

#[tokio::test]
async fn the_walk_through_chain_puts_the_genesys_note_inside_the_technologyone_job() {
    let _locks = (
        provider_lock("genesys").await,
        provider_lock("technologyone").await,
        provider_lock("salesforce").await,
    );
    let (t, ids) = walkthrough([json!({}), json!({}), json!({})]).await;
    let d = t.publish(t.event("walk")).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let steps = d["steps"].as_array().expect("steps");
    let order: Vec<&str> = steps
        .iter()
        .map(|s| s["integration_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let [note, job, summary] = chain_records(&t, &ids).await;
    assert!(note["seq"].as_u64() < job["seq"].as_u64(), "{note} {job}");
    assert!(
        job["seq"].as_u64() < summary["seq"].as_u64(),
        "{job} {summary}"
    );
    let note_id = note["id"].as_str().expect("note id");
    assert_eq!(steps[0]["external_id"], note_id);
    assert_eq!(
        job["record"]["Notes"],
        format!("genesys_log_call: {note_id}; "),
        "{job}"
    );
    assert_eq!(steps[1]["external_id"], job["id"]);
    assert_eq!(steps[2]["external_id"], summary["id"]);
    // The link is built on the provider's own address, not the sandbox's.
    let url = steps[2]["external_url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with("https://") && url.contains(".salesforce.com/lightning/r/Contact/"),
        "{d}"
    );
    assert!(
        text(&summary["record"]).contains("Wants the bin"),
        "{summary}"
    );
    t.assert_no_secret(&d, &[&ids[0], &ids[1], &ids[2]], &[])
        .await;

    // Duplicate delivery: the same event again is the same dispatch, nothing is redone.
    let again = t.publish(t.event("walk")).await;
    assert_eq!(again["id"], d["id"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    chain_records(&t, &ids).await;
}

#[tokio::test]
async fn a_429_storm_on_one_provider_still_ends_with_one_record_per_step() {
    let _locks = (
        provider_lock("genesys").await,
        provider_lock("technologyone").await,
        provider_lock("salesforce").await,
    );
    let retry = json!({"retry": {"max_attempts": 8, "initial_backoff_seconds": 1, "max_backoff_seconds": 2}});
    let (t, ids) = walkthrough([retry.clone(), retry.clone(), retry]).await;
    sandbox_post(
        &t.app,
        "/_sandbox/dispatch/faults",
        json!({"provider": "technologyone", "kind": "rate_limit", "share": 0.5, "retry_after_secs": 1}),
    )
    .await;
    let d = t.publish(t.event("storm")).await;
    let cleared = reqwest::Client::new()
        .delete(format!(
            "{}/_sandbox/dispatch/faults?provider=technologyone",
            t.app.sandbox_url()
        ))
        .send()
        .await
        .expect("clear faults");
    assert!(cleared.status().is_success());
    assert_eq!(d["status"], "succeeded", "{d}");
    chain_records(&t, &ids).await;
    let throttled = requests(&t.app, "technologyone", &ids[1]).await;
    assert!(!throttled.is_empty());
}

#[tokio::test]
async fn an_effect_answered_with_a_5xx_is_found_by_the_lookup() {
    let _g = provider_lock("freshdesk").await;
    let t = Tenant::new().await;
    let conn = t.connect("freshdesk").await;
    let id = t
        .integration("freshdesk", "create_ticket", Some(&conn), 10, json!({}))
        .await;
    sandbox_post(
        &t.app,
        "/_sandbox/dispatch/faults",
        json!({"provider": "freshdesk", "route": "freshdesk.ticket_create", "kind": "after_effect", "status": 502, "count": 1}),
    )
    .await;
    // Through the bus: `send` answers within 20 s and leaves retries to the sweep.
    let d = t.publish(t.event("after")).await;
    let step = one_step(&d);
    the_record(&t.app, "freshdesk", &id, step).await;
    let sent = requests(&t.app, "freshdesk", &id).await;
    assert_eq!(sent.len(), 1, "the create was not sent again: {sent:?}");
    assert_eq!(sent[0]["fault"], "after_effect");
}

#[tokio::test]
async fn a_permanent_4xx_continues_or_stops_the_chain() {
    let _locks = (
        provider_lock("genesys").await,
        provider_lock("technologyone").await,
        provider_lock("salesforce").await,
    );
    let (t, ids) = walkthrough([json!({}), json!({"on_failure": "continue"}), json!({})]).await;
    // TechnologyOne refuses this request type's service: a 404 that no retry mends.
    let (status, body) = t
        .app
        .patch(
            &format!("/v1/integrations/{}", ids[1]),
            &t.admin,
            json!({"settings": {"service_name": "NoSuchService"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let d = t.publish(t.event("perm1")).await;
    assert_eq!(d["status"], "partial", "{d}");
    assert_eq!(d["steps"][1]["status"], "failed", "{d}");
    assert_eq!(d["steps"][1]["attempts"], 1, "no retry of a 4xx: {d}");
    assert_eq!(d["steps"][2]["status"], "succeeded", "{d}");
    assert_eq!(records(&t.app, "technologyone", &ids[1]).await.len(), 0);
    assert_eq!(records(&t.app, "salesforce", &ids[2]).await.len(), 1);

    let (status, body) = t
        .app
        .patch(
            &format!("/v1/integrations/{}", ids[1]),
            &t.admin,
            json!({"on_failure": "stop"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let d = t.publish(t.event("perm2")).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["steps"][0]["status"], "succeeded", "{d}");
    assert_eq!(d["steps"][1]["status"], "failed", "{d}");
    assert_eq!(d["steps"][2]["status"], "skipped", "{d}");
    assert_eq!(records(&t.app, "salesforce", &ids[2]).await.len(), 1);
}

/// An effect cut off by the client's timeout that the provider made anyway, while the
/// provider's search does not show it yet: the lookup before the retry finds nothing,
/// which proves nothing until the cut-off attempt can no longer land (twice the call
/// timeout from the cut); the step waits, looks again, finds the call, and never sends
/// it a second time.
#[tokio::test]
async fn a_lookup_miss_waits_until_a_cut_off_effect_can_no_longer_land() {
    /// Turns HubSpot's search lag off again however the test ends.
    struct Lag<'a>(&'a TestApp);
    impl Drop for Lag<'_> {
        fn drop(&mut self) {
            self.0
                .sandbox()
                .set_index_delay(sandbox::Provider::Hubspot, Duration::ZERO);
        }
    }
    let _g = provider_lock("hubspot").await;
    let t = Tenant::new().await;
    let conn = t.connect("hubspot").await;
    let id = t
        .integration("hubspot", "log_call", Some(&conn), 10, json!({}))
        .await;
    let _lag = Lag(&t.app);
    t.app
        .sandbox()
        .set_index_delay(sandbox::Provider::Hubspot, Duration::from_secs(4));
    // The call is made at once; its answer is held past the client's 2-s timeout.
    sandbox_post(
        &t.app,
        "/_sandbox/dispatch/faults",
        json!({"provider": "hubspot", "route": "hubspot.call_create", "kind": "timeout", "hold_ms": 5000, "count": 1}),
    )
    .await;
    let event = t.bus_event("settle");
    let app = t.app.app();
    let dispatcher = Dispatcher::new(
        &app,
        "sqs-m-settle",
        Instant::now() + Duration::from_secs(90),
    )
    .with_call_timeout(Duration::from_secs(2));
    let handled = dispatcher.event(&event).await.expect("dispatched");
    let conduit::dispatch::engine::Handled::Done(dispatch_id, _) = handled else {
        panic!("not done: {handled:?}");
    };
    let d = t.settled(dispatch_id.as_str()).await;
    let step = one_step(&d);
    let sent = requests(&t.app, "hubspot", &id).await;
    let creates: Vec<&Value> = sent
        .iter()
        .filter(|r| r["route"] == "hubspot.call_create")
        .collect();
    assert_eq!(creates.len(), 1, "the call was sent again: {sent:?}");
    let calls = records(&t.app, "hubspot", &id).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(step["external_id"], calls[0]["id"], "{d}");
    // Looked up at least twice: once too early (nothing yet), once after the wait.
    let searches = t
        .app
        .sandbox()
        .dispatch_requests(Some(sandbox::Provider::Hubspot))
        .into_iter()
        .filter(|r| r.route == "hubspot.call_search" && r.body.to_string().contains("settle"))
        .count();
    assert!(searches >= 2, "{searches} lookups");
}

#[tokio::test]
async fn a_worker_killed_between_steps_resumes_without_redoing_the_first() {
    let _locks = (
        provider_lock("genesys").await,
        provider_lock("technologyone").await,
        provider_lock("salesforce").await,
    );
    let (t, ids) = walkthrough([json!({}), json!({}), json!({})]).await;
    sandbox_post(
        &t.app,
        "/_sandbox/dispatch/faults",
        json!({"provider": "technologyone", "route": "technologyone.ws_create", "kind": "timeout", "hold_ms": 4000, "count": 1}),
    )
    .await;
    let event = t.bus_event("killed");
    let holder = "sqs-m-killed-1";
    let app = t.app.app();
    let first = event.clone();
    let worker = tokio::spawn(async move {
        let d = Dispatcher::new(&app, holder, Instant::now() + Duration::from_secs(60));
        d.event(&first).await.map(|_| ())
    });
    // Wait until step 2's request is in the stand-in (held), then kill the worker.
    let mut held = false;
    for _ in 0..100 {
        if !requests(&t.app, "technologyone", &ids[1]).await.is_empty() {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held, "step 2 never reached TechnologyOne");
    worker.abort();
    assert!(worker.await.is_err(), "the worker was killed");
    assert_eq!(records(&t.app, "salesforce", &ids[2]).await.len(), 0);

    // SQS delivers the message again: the same message id, so the same holder.
    let app = t.app.app();
    let again = Dispatcher::new(&app, holder, Instant::now() + Duration::from_secs(60));
    again.event(&event).await.expect("resumed");
    let [note, job, _] = chain_records(&t, &ids).await;
    let note_id = note["id"].as_str().expect("note id");
    assert!(text(&job["record"]["Notes"]).contains(note_id), "{job}");
    let notes: Vec<Value> = requests(&t.app, "genesys", &ids[0])
        .await
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .collect();
    assert_eq!(notes.len(), 1, "step 1 was not redone: {notes:?}");
}
