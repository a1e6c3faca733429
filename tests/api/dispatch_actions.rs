//! Every action of every integration template (42 over 13 providers; Google's two act
//! as a user and run in `personal.rs`), end to end
//! against its stand-in: the tenant connects the provider in the sandbox, creates one
//! integration per action, sends an event through it (`POST /v1/integrations/{id}/send`),
//! and the test reads what the stand-in received and made
//! (`SandboxState::dispatch_requests`). `dispatch_templates.rs` runs each provider's main
//! action and the walk-through chain's faults; this file runs every action and, per
//! action, checks how its template keeps the effect single:
//!
//! - `header` (a key the provider honours) and `upsert`: the same event sent again
//!   through the same integration ends with the same id and no new record;
//! - `lookup` behind a search the action runs first (the create is skipped when the
//!   search finds the record, as sync_contact does): the same, and the create is not sent
//!   again;
//! - `lookup` alone: it runs only before a retry after an unknown outcome (the engine
//!   marks the request in flight first). A new `send` is a new dispatch whose first
//!   attempt is sent as a first attempt, so the same event sent again makes a second
//!   record: that is not what this idempotency guards. What it guards is run instead:
//!   the effect is answered with a 502 after it happened (the stand-in's `after_effect`
//!   knob), the step retries, the lookup finds the record, and the step ends with that
//!   record's id without sending the effect again.
//!
//! The table of each test names every effect request with its stand-in route and
//! idempotency, and is checked against the template (the names, `effect`, the kind of
//! idempotency) and for covering every action.
//!
//! The sandbox is shared by every test of the process: requests are told apart by the
//! idempotency key their bodies carry (`Ref: {event_id}:{integration_id}`), by a contact
//! e-mail address or phone number no other test uses, or by the event id; each test holds
//! its provider's [`provider_lock`], as it turns the provider's fault knobs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use conduit::dispatch::template::{self, Idempotency};
use sandbox::{ActionFault, ActionFaultKind, Provider, Received};
use scenarios::{Role, TestApp, provider_lock};
use serde_json::{Value, json};

const RETURN_TO: &str = "http://localhost:5173/integrations";
const SUMMARY: &str = "Wants the bin collection moved to Friday & asked about fees.";
/// What of the summary every rendering keeps (HTML escaping changes the `&`).
const SUMMARY_PART: &str = "Wants the bin collection moved to Friday";

/// How the template keeps one effect request single.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Single {
    /// `header`: the provider answers the same key with the first answer.
    Header,
    /// `upsert`: the request updates what it made before.
    Upsert,
    /// `lookup`, after a search the action runs first whose capture skips the create.
    Found,
    /// `lookup` alone: run before a retry after an unknown outcome.
    Retry,
}

/// How an effect request's own requests are told from others' in the stand-in.
#[derive(Clone, Copy, Debug)]
enum Mark {
    /// Its body carries the idempotency key (`{event_id}:{integration_id}`).
    Key,
    /// Its body carries the event's contact e-mail address (unique per test).
    Email,
    /// Its body carries the event id.
    EventId,
    /// Its body's `agent_bot` is the bot the step made (Chatwoot's assignment).
    Bot,
    /// Its body carries the value of this setting.
    Setting(&'static str),
}

/// One effect request of an action: its name in the template, the stand-in's route
/// name, how it stays single, how its requests are found, and the field of the record
/// it makes that is the action's output id (when it captures it).
#[derive(Clone, Copy, Debug)]
struct Effect {
    request: &'static str,
    route: &'static str,
    single: Single,
    mark: Mark,
    id: &'static str,
}

const fn fx(
    request: &'static str,
    route: &'static str,
    single: Single,
    mark: Mark,
    id: &'static str,
) -> Effect {
    Effect {
        request,
        route,
        single,
        mark,
        id,
    }
}

/// What an action's event and settings are built from.
struct Known<'a> {
    /// The outputs (`id`) of the actions of this provider run before.
    outputs: &'a BTreeMap<&'static str, String>,
    /// A number no other integration of this process has.
    n: u64,
}

/// One action of a template, as this file runs it.
struct Case {
    action: &'static str,
    /// The event type sent (create_task takes no `conversation_ended`).
    event: &'static str,
    /// The effect requests that run for a new contact, in template order.
    effects: &'static [Effect],
    /// The event's contact is the one sync_contact made, with its CRM id.
    synced_contact: bool,
    /// What of the event the main effect's body must carry.
    needle: Needle,
    settings: fn(&Known) -> Value,
}

/// What of the event (or the settings) the main effect's body must carry.
#[derive(Clone, Copy, Debug)]
enum Needle {
    /// The conversation's summary.
    Summary,
    /// The contact's e-mail address and phone number.
    Contact,
    /// Nothing of the event is rendered (setup_agent_bot): this setting's value.
    Setting(&'static str),
}

fn none(_: &Known) -> Value {
    json!({})
}

/// A case with no settings, on `conversation_ended`, for a new contact.
fn case(action: &'static str, effects: &'static [Effect]) -> Case {
    Case {
        action,
        event: "conversation_ended",
        effects,
        synced_contact: false,
        needle: Needle::Summary,
        settings: none,
    }
}

impl Case {
    fn on(mut self, event: &'static str) -> Self {
        self.event = event;
        self
    }
    fn synced(mut self) -> Self {
        self.synced_contact = true;
        self
    }
    fn needle(mut self, needle: Needle) -> Self {
        self.needle = needle;
        self
    }
    fn settings(mut self, f: fn(&Known) -> Value) -> Self {
        self.settings = f;
        self
    }
}

/// A number unique in this process (ids, phone numbers, e-mail addresses, times).
fn next() -> u64 {
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::SeqCst)
}

/// A contact no other test has (Genesys searches by phone, the others by e-mail).
fn fresh_contact() -> Value {
    let n = next();
    json!({"name": "Dana Lee", "email": format!("dana.{n}.actions@example.com"),
        "phone": format!("+6138{n:07}")})
}

fn sandbox_provider(provider: &str) -> Provider {
    match provider {
        "genesys" => Provider::Genesys,
        "technologyone" => Provider::Technologyone,
        "sap" => Provider::Sap,
        "salesforce" => Provider::Salesforce,
        "dynamics365" => Provider::Dynamics365,
        "zendesk" => Provider::Zendesk,
        "freshdesk" => Provider::Freshdesk,
        "hubspot" => Provider::Hubspot,
        "pipedrive" => Provider::Pipedrive,
        "zoho" => Provider::Zoho,
        "chatwoot" => Provider::Chatwoot,
        "custom_api" => Provider::Custom,
        other => panic!("no stand-in for {other}"),
    }
}

/// A tenant with one connection to `provider`, and what its actions made so far.
struct Tenant {
    app: TestApp,
    id: String,
    admin: String,
    provider: &'static str,
    connection: String,
    outputs: BTreeMap<&'static str, String>,
    /// The contact sync_contact made (with its CRM id once known).
    synced: Option<Value>,
}

impl Tenant {
    async fn connect(provider: &'static str) -> Self {
        let app = TestApp::spawn().await;
        let id = app.tenant();
        let admin = app.token(&id, Role::Admin);
        let connection = connect(&app, &admin, provider).await;
        Self {
            app,
            id,
            admin,
            provider,
            connection,
            outputs: BTreeMap::new(),
            synced: None,
        }
    }

    async fn integration(&self, case: &Case, settings: Value) -> String {
        let body = json!({
            "name": format!("{} {}", self.provider, case.action),
            "provider": self.provider, "action": case.action,
            "connection_id": self.connection,
            "triggers": [{"event": case.event}], "priority": 10, "settings": settings,
            "retry": {"max_attempts": 3, "initial_backoff_seconds": 1, "max_backoff_seconds": 1},
        });
        let (status, created) = self.app.post("/v1/integrations", &self.admin, body).await;
        assert_eq!(status, 201, "{}.{}: {created}", self.provider, case.action);
        created["id"].as_str().expect("integration id").to_owned()
    }

    /// An event of `kind` for `contact`: its own id, conversation and time.
    fn event(&self, kind: &str, contact: &Value) -> Value {
        event(&self.id, self.provider, kind, contact)
    }

    /// Sends `event` through one integration now; returns the settled dispatch.
    async fn send(&self, integration: &str, event: &Value) -> Value {
        send(&self.app, &self.admin, integration, event).await
    }

    /// The requests the stand-in received on `route` that carry `mark` (as the
    /// assignment's `agent_bot` when `bot`).
    fn received(&self, route: &str, mark: &str, bot: bool) -> Vec<Received> {
        self.app
            .sandbox()
            .dispatch_requests(Some(sandbox_provider(self.provider)))
            .into_iter()
            .filter(|r| r.route == route)
            .filter(|r| {
                if bot {
                    r.body["agent_bot"].to_string().trim_matches('"') == mark
                } else {
                    r.body.to_string().contains(mark)
                }
            })
            .collect()
    }

    /// Runs one action end to end (see the module documentation); keeps its output id
    /// for the actions after it (and sync_contact's contact with its CRM id).
    async fn run(&mut self, case: Case) {
        let name = format!("{}.{}", self.provider, case.action);
        let action = template::catalogue()
            .get(self.provider)
            .and_then(|t| t.action(case.action))
            .unwrap_or_else(|| panic!("{name}: not in the templates"));
        check_effects_against_template(&name, action, case.effects);

        let known = Known {
            outputs: &self.outputs,
            n: next(),
        };
        let settings = (case.settings)(&known);
        let integration = self.integration(&case, settings.clone()).await;
        let contact = if case.synced_contact {
            self.synced
                .clone()
                .unwrap_or_else(|| panic!("{name}: sync_contact runs first"))
        } else {
            fresh_contact()
        };
        let event = self.event(case.event, &contact);
        let marks = Marks::of(&integration, &event, &settings);

        // First send: one step, succeeded, with the created id; one effect per request.
        let d = self.send(&integration, &event).await;
        let step = one_step(&name, &d);
        let external = external_id(&name, action, step);
        let mut bot = None;
        for effect in case.effects {
            let mark = marks.get(effect.mark, bot.as_deref());
            let got = self.received(effect.route, &mark, is_bot(effect));
            let ok: Vec<&Received> = got.iter().filter(|r| r.status < 300).collect();
            assert_eq!(
                ok.len(),
                1,
                "{name}: one successful {} request, got {got:#?}",
                effect.route
            );
            assert_eq!(
                made(&got),
                1,
                "{name}: one {} record: {got:#?}",
                effect.route
            );
            if captures_output(action, effect.request) {
                let needles: Vec<&str> = match case.needle {
                    Needle::Summary => vec![SUMMARY_PART],
                    Needle::Contact => vec![
                        contact["email"].as_str().expect("email"),
                        contact["phone"].as_str().expect("phone"),
                    ],
                    Needle::Setting(s) => vec![settings[s].as_str().expect("setting")],
                };
                let body = ok[0].body.to_string();
                for needle in needles {
                    assert!(body.contains(needle), "{name}: {needle} in {body}");
                }
                if let Some(id) = &external {
                    assert_record_has_id(&name, effect, ok[0], id);
                }
                bot = external.clone();
            }
        }

        // Then how the template keeps the effect single.
        let retries: Vec<&Effect> = case
            .effects
            .iter()
            .filter(|e| e.single == Single::Retry)
            .collect();
        if retries.is_empty() {
            self.send_again(
                &name,
                &case,
                &integration,
                &event,
                &marks,
                external.as_deref(),
            )
            .await;
        } else {
            assert_eq!(retries.len(), 1, "{name}: one effect found by a lookup");
            self.lookup_after_a_lost_answer(&name, &case, action, retries[0], &contact)
                .await;
        }

        if let Some(id) = external {
            if case.action == "sync_contact" {
                let mut synced = contact.clone();
                synced["crm_ids"] = json!({self.provider: id});
                self.synced = Some(synced);
            }
            self.outputs.insert(case.action, id);
        }
    }

    /// `header`, `upsert` and search-first actions: the same event again through the same
    /// integration ends with the same id and makes no second record.
    async fn send_again(
        &self,
        name: &str,
        case: &Case,
        integration: &str,
        event: &Value,
        marks: &Marks,
        external: Option<&str>,
    ) {
        let before: Vec<(usize, usize)> = case
            .effects
            .iter()
            .map(|e| {
                let got = self.received(e.route, &marks.get(e.mark, external), is_bot(e));
                (got.len(), made(&got))
            })
            .collect();
        let d = self.send(integration, event).await;
        let step = one_step(name, &d);
        assert_eq!(
            step["external_id"].as_str(),
            external,
            "{name}: the same record again: {d}"
        );
        for (effect, (sent, records)) in case.effects.iter().zip(before) {
            let got = self.received(
                effect.route,
                &marks.get(effect.mark, external),
                is_bot(effect),
            );
            assert_eq!(
                made(&got),
                records,
                "{name}: no second {} record: {got:#?}",
                effect.route
            );
            match effect.single {
                // The provider saw the same key again and answered the first answer.
                Single::Header => {
                    assert_eq!(got.len(), sent + 1, "{name}: {got:#?}");
                    let keys: Vec<Option<&String>> =
                        got.iter().map(|r| r.headers.get(KEY_HEADER)).collect();
                    assert!(
                        keys[0].is_some() && keys.iter().all(|k| *k == keys[0]),
                        "{name}: the same {KEY_HEADER} on both: {keys:?}"
                    );
                    assert!(got.iter().all(|r| r.status < 300), "{name}: {got:#?}");
                }
                // The upsert ran again, updating.
                Single::Upsert => {
                    assert_eq!(got.len(), sent + 1, "{name}: {got:#?}");
                    assert!(got.iter().all(|r| r.status < 300), "{name}: {got:#?}");
                }
                // The search found the record: the create was not sent.
                Single::Found => assert_eq!(got.len(), sent, "{name}: {got:#?}"),
                Single::Retry => unreachable!("handled by lookup_after_a_lost_answer"),
            }
        }
    }

    /// A `lookup` effect: answered with a 502 after it happened, the step retries, the
    /// lookup finds the record, and the step ends with its id without a second effect.
    /// A new integration and event of the same contact, so its key is its own.
    async fn lookup_after_a_lost_answer(
        &self,
        name: &str,
        case: &Case,
        action: &template::Action,
        effect: &Effect,
        contact: &Value,
    ) {
        let known = Known {
            outputs: &self.outputs,
            n: next(),
        };
        let settings = (case.settings)(&known);
        let integration = self.integration(case, settings.clone()).await;
        let event = self.event(case.event, contact);
        let marks = Marks::of(&integration, &event, &settings);
        let provider = sandbox_provider(self.provider);
        let mut fault = ActionFault::new(provider, ActionFaultKind::AfterEffect);
        fault.route = Some(effect.route.to_owned());
        fault.knob.status = Some(502);
        fault.knob.count = Some(1);
        self.app
            .sandbox()
            .add_action_fault(fault)
            .expect("fault knob");
        let d = self.send(&integration, &event).await;
        let left = self.app.sandbox().action_faults();
        self.app.sandbox().clear_action_faults(Some(provider));
        assert!(
            left.iter().all(|f| f.provider != provider),
            "{name}: the knob was not used: {d}"
        );
        let step = one_step(name, &d);
        assert!(step["attempts"].as_u64() >= Some(2), "{name}: retried: {d}");
        let external = external_id(name, action, step);
        let got = self.received(effect.route, &marks.get(effect.mark, None), false);
        assert_eq!(
            got.len(),
            1,
            "{name}: the effect was not sent again: {got:#?}"
        );
        assert_eq!(got[0].fault.as_deref(), Some("after_effect"), "{got:#?}");
        assert_eq!(made(&got), 1, "{name}: {got:#?}");
        let later = self
            .app
            .sandbox()
            .dispatch_requests(Some(provider))
            .into_iter()
            .filter(|r| r.seq > got[0].seq && r.route != effect.route)
            .count();
        assert!(later >= 1, "{name}: the lookup ran");
        if captures_output(action, effect.request) {
            let id = external.as_deref().expect("an output id");
            assert_record_has_id(name, effect, &got[0], id);
        }
        // The action's other effects stayed single too: the contact the first send made
        // was found (its e-mail marks one record still), the rest made once for this key.
        for other in case.effects.iter().filter(|e| e.single != Single::Retry) {
            let mark = marks.get(other.mark, external.as_deref());
            let got = self.received(other.route, &mark, is_bot(other));
            assert_eq!(made(&got), 1, "{name}: {} {got:#?}", other.route);
        }
    }
}

fn is_bot(e: &Effect) -> bool {
    matches!(e.mark, Mark::Bot)
}

/// The header that carries the key (Zendesk's and the Custom API's `Idempotency-Key`,
/// as the stand-in records it).
const KEY_HEADER: &str = "idempotency-key";

/// The strings that find one integration's requests.
struct Marks {
    key: String,
    email: String,
    event_id: String,
    settings: Value,
}

impl Marks {
    fn of(integration: &str, event: &Value, settings: &Value) -> Self {
        let event_id = event["event_id"].as_str().expect("event id").to_owned();
        Self {
            key: format!("{event_id}:{integration}"),
            email: event["contact"]["email"].as_str().unwrap_or("").to_owned(),
            event_id,
            settings: settings.clone(),
        }
    }

    fn get(&self, mark: Mark, bot: Option<&str>) -> String {
        match mark {
            Mark::Key => self.key.clone(),
            Mark::Email => self.email.clone(),
            Mark::EventId => self.event_id.clone(),
            Mark::Bot => bot.expect("the bot the step made").to_owned(),
            Mark::Setting(name) => self.settings[name].as_str().expect("setting").to_owned(),
        }
    }
}

/// The Salesforce CRM stand-in's create (sync_contact's Contact): not an action route,
/// so recorded without `created`.
const SF_SOBJECT_CREATE: &str = "salesforce.sobject_create";

/// How many records the requests made (a 201 of [`SF_SOBJECT_CREATE`] is one).
fn made(got: &[Received]) -> usize {
    got.iter()
        .filter(|r| r.created.is_some() || (r.route == SF_SOBJECT_CREATE && r.status == 201))
        .count()
}

/// The table's effect requests are the template's, with the idempotency it declares.
fn check_effects_against_template(name: &str, action: &template::Action, effects: &[Effect]) {
    for e in effects {
        let req = action
            .requests
            .iter()
            .find(|r| r.name == e.request)
            .unwrap_or_else(|| panic!("{name}: no request {}", e.request));
        assert!(req.effect, "{name}: {} is no effect", e.request);
        let declared = match &req.idempotency {
            Some(Idempotency::Header { .. }) => vec![Single::Header],
            Some(Idempotency::Upsert) => vec![Single::Upsert],
            // Found only when a search before it can skip it.
            Some(Idempotency::Lookup { .. })
                if req
                    .skip_if
                    .as_deref()
                    .is_some_and(|s| s.contains("captures.")) =>
            {
                vec![Single::Found]
            }
            Some(Idempotency::Lookup { .. }) => vec![Single::Retry],
            // Gmail's send alone (personal.rs runs Google's actions).
            Some(Idempotency::AtMostOnce) => vec![],
            None => vec![],
        };
        assert!(
            declared.contains(&e.single),
            "{name}: {} is {:?} in the template, {:?} here",
            e.request,
            req.idempotency,
            e.single
        );
    }
}

/// Whether `request` captures what the action outputs as its id.
fn captures_output(action: &template::Action, request: &str) -> bool {
    let Some(output) = &action.outputs.id else {
        return false;
    };
    action
        .requests
        .iter()
        .any(|r| r.name == request && r.capture.contains_key(output))
}

/// The step's external id: present exactly when the template declares `outputs.id`.
fn external_id(name: &str, action: &template::Action, step: &Value) -> Option<String> {
    match &action.outputs.id {
        Some(_) => {
            let id = step["external_id"].as_str();
            assert!(
                id.is_some_and(|s| !s.is_empty()),
                "{name}: an external id: {step}"
            );
            assert_eq!(step["outputs"]["id"], step["external_id"], "{name}: {step}");
            id.map(str::to_owned)
        }
        None => {
            assert!(step["external_id"].is_null(), "{name}: {step}");
            None
        }
    }
}

/// The record the request made has `id` at the effect's id field.
fn assert_record_has_id(name: &str, effect: &Effect, r: &Received, id: &str) {
    let record = r.created.as_ref();
    // The Salesforce CRM stand-in keeps no `created` (see `made`): the search of the
    // second send finds it by its e-mail address instead.
    let Some(record) = record else {
        assert_eq!(r.route, SF_SOBJECT_CREATE, "{name}: {r:#?}");
        return;
    };
    let own = record[effect.id].to_string();
    assert_eq!(own.trim_matches('"'), id, "{name}: the id of {record}");
}

/// Checks a one-step dispatch succeeded and returns its step.
fn one_step<'a>(name: &str, d: &'a Value) -> &'a Value {
    assert_eq!(d["status"], "succeeded", "{name}: {d}");
    let steps = d["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{name}: {d}");
    assert_eq!(steps[0]["status"], "succeeded", "{name}: {d}");
    &steps[0]
}

fn event(tenant: &str, provider: &str, kind: &str, contact: &Value) -> Value {
    let n = next();
    // Each event its own time: some lookups compare the time (HubSpot's notes).
    let at = 3 * 3600 + 13 * 60 + n;
    json!({
        "schema_version": 1, "type": kind,
        "event_id": format!("evt_{provider}_{n}_{}", &tenant[2..]), "tenant_id": tenant,
        "occurred_at": format!("2026-12-05T{:02}:{:02}:{:02}Z", at / 3600, at / 60 % 60, at % 60),
        "conversation": {"id": format!("conv_{provider}_{n}"), "channel": "voice",
            "direction": "inbound", "started_at": "2026-12-05T03:07:32Z",
            "ended_at": "2026-12-05T03:12:44Z", "duration_seconds": 312,
            "from_number": contact["phone"], "to_number": "+61290009999",
            "transcript_url": format!("https://app.example.com/t/conv_{n}"),
            "summary": SUMMARY},
        "contact": contact,
        "custom_fields": {"plan": "gold"},
    })
}

/// Sends `event` through one integration now; returns the settled dispatch.
async fn send(app: &TestApp, admin: &str, integration: &str, event: &Value) -> Value {
    let (status, d) = app
        .post(
            &format!("/v1/integrations/{integration}/send"),
            admin,
            json!({"event": event}),
        )
        .await;
    assert!(status == 200 || status == 202, "{status}: {d}");
    app.dispatch_settled(admin, d["id"].as_str().expect("dispatch id"))
        .await
}

/// Connects `provider` in the sandbox as a tenant would (as `dispatch_templates.rs`
/// does, asking OAuth providers for every action's scopes); returns the connection id.
async fn connect(app: &TestApp, admin: &str, provider: &str) -> String {
    let uses = |actions: &[&str]| -> Vec<String> {
        actions.iter().map(|a| format!("action:{a}")).collect()
    };
    let by_oauth = match provider {
        "genesys" => Some(
            json!({"return_to": RETURN_TO, "fields": {"region": "mypurecloud.com"},
            "uses": uses(&["log_call", "add_note", "sync_contact", "create_task"])}),
        ),
        "salesforce" => Some(json!({"return_to": RETURN_TO})),
        "dynamics365" => {
            Some(json!({"return_to": RETURN_TO, "fields": {"org": "acme", "crm_region": "crm"}}))
        }
        "zoho" => Some(
            json!({"return_to": RETURN_TO, "fields": {"data_centre": "com"},
            "uses": uses(&["log_call", "create_task", "add_note", "sync_contact"])}),
        ),
        _ => None,
    };
    if let Some(body) = by_oauth {
        let out = app.oauth_connect(admin, provider, body, "").await;
        assert_eq!(out.status, "connected", "{provider}: {}", out.return_url);
        return out.connection_id.expect("connected").to_string();
    }
    let body = match provider {
        // A portal of its own: the default one (62515) is where `sync.rs` seeds and
        // counts contacts, and sync_contact makes one.
        "hubspot" => {
            let token = format!("pat-na1-actions-{}", next());
            let account: sandbox::Account = serde_json::from_value(json!({
                "provider": "hubspot", "access_token": token, "email": "actions@hubspot.test"}))
            .expect("an account");
            app.sandbox().add_account(account).expect("sandbox account");
            json!({"provider": provider, "auth_method": "private_app",
                "credentials": {"access_token": token}})
        }
        _ => scenarios::dispatch_credentials(provider, &app.sandbox_url())
            .unwrap_or_else(|| panic!("no connection for {provider}")),
    };
    let (status, created) = app.post("/v1/connections", admin, body).await;
    assert_eq!(status, 201, "{provider}: {created}");
    created["id"].as_str().expect("connection id").to_owned()
}

/// Runs `cases` in order for `provider` (later ones use earlier outputs), which must
/// be every action of its template.
async fn provider(provider: &'static str, lock: &str, cases: Vec<Case>) {
    let ran: Vec<&str> = cases.iter().map(|c| c.action).collect();
    run_cases(provider, lock, cases).await;
    // Every action of the template that sends ran (import_kb reads a knowledge base:
    // the kb and kb_sources scenarios run it).
    let mut all: Vec<&str> = template::catalogue()
        .get(provider)
        .expect("template")
        .actions
        .iter()
        .filter(|a| !a.kb_import)
        .map(|a| a.id.as_str())
        .collect();
    let mut ran = ran;
    all.sort_unstable();
    ran.sort_unstable();
    ran.dedup();
    assert_eq!(ran, all, "{provider}: every action");
}

/// Runs `cases` in order for `provider`.
async fn run_cases(provider: &'static str, lock: &str, cases: Vec<Case>) {
    let _g = provider_lock(lock).await;
    let mut t = Tenant::connect(provider).await;
    for case in cases {
        t.run(case).await;
    }
}

use Mark::{Bot, Email, EventId, Key, Setting};
use Single::{Found, Header, Retry, Upsert};

fn escalation(c: Case) -> Case {
    c.on("escalation")
}

#[tokio::test]
async fn genesys_actions() {
    const CONTACT: Effect = fx(
        "create_contact",
        "genesys.external_contact_create",
        Found,
        Email,
        "id",
    );
    const NOTE: Effect = fx(
        "add_note",
        "genesys.external_contact_note_create",
        Retry,
        Key,
        "id",
    );
    const CALLBACK: Effect = fx(
        "create_callback",
        "genesys.callback_create",
        Retry,
        Key,
        "id",
    );
    provider(
        "genesys",
        "genesys",
        vec![
            case("sync_contact", &[CONTACT]).needle(Needle::Contact),
            case("log_call", &[CONTACT, NOTE]),
            case("add_note", &[CONTACT, NOTE]),
            escalation(case("create_task", &[CALLBACK]))
                .settings(|_| json!({"queue_id": "5c3e9d1a-0000-4000-8000-000000000002"})),
        ],
    )
    .await;
}

#[tokio::test]
async fn technologyone_actions() {
    const JOB: Effect = fx(
        "create_job",
        "technologyone.ws_create",
        Retry,
        Key,
        "RequestNumber",
    );
    provider(
        "technologyone",
        "technologyone",
        vec![case("create_job", &[JOB])],
    )
    .await;
}

#[tokio::test]
async fn sap_actions() {
    const TICKET: Effect = fx(
        "create_ticket",
        "sap.service_request_create",
        Retry,
        Key,
        "ObjectID",
    );
    const TEXT: Effect = fx(
        "add_text",
        "sap.service_request_text_create",
        Retry,
        Key,
        "ObjectID",
    );
    const CALL: Effect = fx(
        "create_phone_call",
        "sap.phone_call_create",
        Retry,
        Key,
        "ObjectID",
    );
    provider(
        "sap",
        "sap",
        vec![
            case("create_ticket", &[TICKET]),
            case("create_case", &[TICKET]),
            // On the ticket create_ticket opened (see `ticket_setting`).
            case("add_note", &[TEXT])
                .settings(|k| json!({"ticket_object_id": k.outputs["create_ticket"]})),
            case("log_call", &[CALL]),
        ],
    )
    .await;
}

#[tokio::test]
async fn salesforce_actions() {
    const CONTACT: Effect = fx("create_contact", SF_SOBJECT_CREATE, Found, Email, "Id");
    const UPSERT: Effect = fx("upsert_task", "salesforce.task_upsert", Upsert, Key, "Id");
    const CALL: Effect = fx("create_task", "salesforce.task_create", Retry, Key, "Id");
    const CASE: Effect = fx("create_case", "salesforce.case_create", Retry, Key, "Id");
    const NOTE: Effect = fx("add_note", "salesforce.note_create", Retry, Key, "Id");
    provider(
        "salesforce",
        "salesforce",
        vec![
            case("sync_contact", &[CONTACT]).needle(Needle::Contact),
            // With the org's external-id field an upsert; without it a create and lookup.
            case("log_call", &[UPSERT])
                .settings(|_| json!({"external_id_field": "Conduit_Key__c"})),
            case("log_call", &[CALL]),
            escalation(case("create_task", &[CALL])),
            case("create_case", &[CASE]),
            case("add_note", &[NOTE]).synced(),
            case("send_summary", &[CONTACT, NOTE]),
        ],
    )
    .await;
}

#[tokio::test]
async fn dynamics_actions() {
    const CONTACT: Effect = fx(
        "create_contact",
        "dynamics365.contact_create",
        Found,
        Email,
        "contactid",
    );
    const CALL: Effect = fx(
        "create_phonecall",
        "dynamics365.phonecall_create",
        Retry,
        Key,
        "activityid",
    );
    const CASE: Effect = fx(
        "create_incident",
        "dynamics365.incident_create",
        Retry,
        Key,
        "incidentid",
    );
    const TASK: Effect = fx(
        "create_task",
        "dynamics365.task_create",
        Retry,
        Key,
        "activityid",
    );
    const NOTE: Effect = fx(
        "create_annotation",
        "dynamics365.annotation_create",
        Retry,
        Key,
        "annotationid",
    );
    provider(
        "dynamics365",
        "dynamics365",
        vec![
            case("sync_contact", &[CONTACT]).needle(Needle::Contact),
            case("log_call", &[CALL]).synced(),
            case("create_case", &[CASE]).synced(),
            escalation(case("create_task", &[TASK])).synced(),
            case("add_note", &[NOTE]).synced(),
        ],
    )
    .await;
}

#[tokio::test]
async fn zendesk_actions() {
    const TICKET: Effect = fx("create_ticket", "zendesk.ticket_create", Header, Key, "id");
    const COMMENT: Effect = fx(
        "add_comment",
        "zendesk.ticket_update",
        Retry,
        Key,
        "ticket_id",
    );
    const USER: Effect = fx(
        "create_or_update_user",
        "zendesk.user_create_or_update",
        Upsert,
        Email,
        "id",
    );
    provider(
        "zendesk",
        "zendesk",
        vec![
            case("create_ticket", &[TICKET]),
            case("add_note", &[COMMENT])
                .settings(|k| json!({"ticket_id": k.outputs["create_ticket"]})),
            case("sync_contact", &[USER]).needle(Needle::Contact),
        ],
    )
    .await;
}

#[tokio::test]
async fn freshdesk_actions() {
    const TICKET: Effect = fx("create_ticket", "freshdesk.ticket_create", Retry, Key, "id");
    const NOTE: Effect = fx("add_note", "freshdesk.note_create", Retry, Key, "id");
    const CONTACT: Effect = fx(
        "create_contact",
        "freshdesk.contact_create",
        Found,
        Email,
        "id",
    );
    provider(
        "freshdesk",
        "freshdesk",
        vec![
            case("create_ticket", &[TICKET]),
            case("add_note", &[NOTE])
                .settings(|k| json!({"ticket_id": k.outputs["create_ticket"]})),
            case("sync_contact", &[CONTACT]).needle(Needle::Contact),
        ],
    )
    .await;
}

#[tokio::test]
async fn hubspot_actions() {
    const CONTACT: Effect = fx(
        "upsert_contact",
        "hubspot.contact_batch_upsert",
        Upsert,
        Email,
        "id",
    );
    const CALL: Effect = fx("create_call", "hubspot.call_create", Retry, Key, "id");
    const TASK: Effect = fx("create_task", "hubspot.task_create", Retry, Key, "id");
    const NOTE: Effect = fx("create_note", "hubspot.note_create", Retry, Key, "id");
    provider(
        "hubspot",
        "hubspot",
        vec![
            case("sync_contact", &[CONTACT]).needle(Needle::Contact),
            case("log_call", &[CALL]).synced(),
            escalation(case("create_task", &[TASK])).synced(),
            case("add_note", &[NOTE]).synced(),
        ],
    )
    .await;
}

#[tokio::test]
async fn pipedrive_actions() {
    const PERSON: Effect = fx(
        "create_person",
        "pipedrive.person_create",
        Found,
        Email,
        "id",
    );
    const ACTIVITY: Effect = fx(
        "create_activity",
        "pipedrive.activity_create",
        Retry,
        Key,
        "id",
    );
    const NOTE: Effect = fx("create_note", "pipedrive.note_create", Retry, Key, "id");
    provider(
        "pipedrive",
        "pipedrive",
        vec![
            case("sync_contact", &[PERSON]).needle(Needle::Contact),
            case("log_call", &[ACTIVITY]).synced(),
            escalation(case("create_task", &[ACTIVITY])).synced(),
            case("add_note", &[NOTE]).synced(),
        ],
    )
    .await;
}

#[tokio::test]
async fn zoho_actions() {
    const CONTACT: Effect = fx(
        "upsert_contact",
        "zoho.contacts_upsert",
        Upsert,
        Email,
        "id",
    );
    const CALL: Effect = fx("upsert_call", "zoho.calls_upsert", Upsert, Key, "id");
    const TASK: Effect = fx("upsert_task", "zoho.tasks_upsert", Upsert, Key, "id");
    const NOTE: Effect = fx("create_note", "zoho.notes_create", Retry, Key, "id");
    provider(
        "zoho",
        "zoho",
        vec![
            case("sync_contact", &[CONTACT]).needle(Needle::Contact),
            case("log_call", &[CALL]).synced(),
            escalation(case("create_task", &[TASK])).synced(),
            case("add_note", &[NOTE]).synced(),
        ],
    )
    .await;
}

#[tokio::test]
async fn chatwoot_actions() {
    const MESSAGE: Effect = fx(
        "create_message",
        "chatwoot.message_create",
        Retry,
        Key,
        "id",
    );
    const BOT: Effect = fx(
        "create_bot",
        "chatwoot.agent_bot_create",
        Retry,
        Setting("bot_name"),
        "id",
    );
    const ASSIGN: Effect = fx("assign_bot", "chatwoot.set_agent_bot", Upsert, Bot, "");
    provider(
        "chatwoot",
        "chatwoot",
        vec![
            // Conversations 1–1000 exist in every account of the stand-in.
            case("add_note", &[MESSAGE]).settings(|_| json!({"conversation_id": "77"})),
            case("setup_agent_bot", &[BOT, ASSIGN])
                .needle(Needle::Setting("bot_name"))
                .settings(|k| {
                    json!({"bot_name": format!("Front desk {}", k.n),
                        "outgoing_url": "https://hooks.example.com/chatwoot", "inbox_id": "7"})
                }),
        ],
    )
    .await;
}

#[tokio::test]
async fn custom_api_request() {
    const REQUEST: Effect = fx("request", "custom.write", Header, EventId, "id");
    provider("custom_api", "custom", vec![case("request", &[REQUEST])]).await;
}

#[tokio::test]
async fn webhook_deliver() {
    let name = "webhook.deliver";
    let action = template::catalogue()
        .get("webhook")
        .and_then(|t| t.action("deliver"))
        .expect("webhook.deliver");
    const DELIVER: Effect = fx("deliver", "", Header, EventId, "");
    check_effects_against_template(name, action, &[DELIVER]);
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    // The receiver first (it needs a secret), then the integration, then its secret.
    let rx = app
        .sandbox()
        .add_webhook_receiver(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()], None)
        .expect("receiver");
    let (status, created) = app
        .post(
            "/v1/integrations",
            &admin,
            json!({"name": "hook", "provider": "webhook", "action": "deliver",
                "triggers": [{"event": "conversation_ended"}], "priority": 10,
                "webhook": {"url": rx.url}}),
        )
        .await;
    assert_eq!(status, 201, "{name}: {created}");
    let integration = created["id"].as_str().expect("integration id");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    app.sandbox()
        .set_webhook_secrets(&rx.id, &[secret])
        .expect("receiver")
        .expect("secret");
    let event = event(&tenant, "webhook", "conversation_ended", &fresh_contact());

    let d = send(&app, &admin, integration, &event).await;
    let step = one_step(name, &d);
    assert_eq!(external_id(name, action, step), None);
    let got = app.sandbox().webhook_receiver(&rx.id).expect("receiver");
    assert_eq!(got.deliveries.len(), 1, "{name}: {got:#?}");
    let first = &got.deliveries[0];
    assert!(first.valid && first.status < 300, "{name}: {got:#?}");
    assert_eq!(
        first.body["data"]["event_id"], event["event_id"],
        "{got:#?}"
    );
    assert!(first.body.to_string().contains(SUMMARY_PART), "{got:#?}");

    // The same event again: the same `webhook-id`, which a consumer deduplicates on.
    let d = send(&app, &admin, integration, &event).await;
    one_step(name, &d);
    let got = app.sandbox().webhook_receiver(&rx.id).expect("receiver");
    assert_eq!(got.deliveries.len(), 2, "{name}: {got:#?}");
    let again = &got.deliveries[1];
    assert!(again.valid && again.duplicate, "{name}: {got:#?}");
    assert_eq!(again.webhook_id, first.webhook_id, "{name}: {got:#?}");
    assert_eq!(got.unique_valid, 1, "{name}: one event for the consumer");
}
