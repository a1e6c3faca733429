//! Tenant fairness on the dispatch queue: one tenant's backlog of slow chains (each
//! step waits for its HubSpot account's rate budget) never holds up another tenant's
//! event. Events reach the queue from the bus without a message group (an EventBridge
//! rule cannot set one on a standard queue); the dispatcher puts each back grouped by
//! its tenant, so the queue is an SQS fair queue, which the dev host's pollers emulate.
//!
//! The stack runs with the dispatch queue's `MaximumConcurrency` at 2 (20 events in
//! flight instead of 100), so a backlog within the pollers' look-ahead fills every slot.

use std::time::Duration;

use conduit::dispatch::log::Dispatch;
use conduit::domain::{DispatchId, TenantId};
use conduit::store::dispatches::Dispatches;
use futures::StreamExt;
use scenarios::TestApp;
use serde_json::{Value, json};

/// Events of the busy tenant: about 8 s at HubSpot's 110 requests per 10 s.
const BACKLOG: usize = 90;
const OCCURRED: &str = "2026-12-05T03:12:44Z";

/// A tenant with its own HubSpot portal and a `log_call` integration on
/// `conversation_ended`; returns the tenant id.
async fn tenant(app: &TestApp, tag: &str) -> TenantId {
    let id = app.tenant();
    let admin = app.token(&id, scenarios::Role::Admin);
    let token = format!("pat-na1-fair-{tag}-{}", &id[2..]);
    let account: sandbox::Account = serde_json::from_value(json!({
        "provider": "hubspot", "access_token": token, "email": format!("{tag}@fair.test")}))
    .expect("an account");
    app.sandbox().add_account(account).expect("sandbox account");
    let (status, connection) = app
        .post(
            "/v1/connections",
            &admin,
            json!({"provider": "hubspot", "auth_method": "private_app",
                "credentials": {"access_token": token}}),
        )
        .await;
    assert_eq!(status, 201, "{connection}");
    let (status, created) = app
        .post(
            "/v1/integrations",
            &admin,
            json!({"name": "Log the call", "provider": "hubspot", "action": "log_call",
                "connection_id": connection["id"], "priority": 10,
                "triggers": [{"event": "conversation_ended"}]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    TenantId::parse(&id).expect("tenant id")
}

fn event(tenant: &TenantId, n: usize) -> Value {
    json!({
        "schema_version": 1, "type": "conversation_ended",
        "event_id": format!("evt_fair_{n:03}"), "tenant_id": tenant.as_str(),
        "occurred_at": OCCURRED,
        "conversation": {"id": format!("conv_{n}"), "channel": "voice", "direction": "inbound",
            "started_at": "2026-12-05T03:07:32Z", "ended_at": OCCURRED,
            "duration_seconds": 312, "summary": "Asked about the collection day."},
        "contact": {"name": "Dana Lee", "email": "dana@example.com", "phone": "+61290001234"},
    })
}

/// Puts events on the bus (`POST /v1/events`: the product services' path), eight at
/// a time.
async fn put(app: &TestApp, tenant: &TenantId, events: &[Value]) {
    let admin = app.token(tenant.as_str(), scenarios::Role::Admin);
    let admin = &admin;
    futures::stream::iter(events)
        .for_each_concurrent(8, |e| async move {
            let (status, accepted) = app.post("/v1/events", admin, e.clone()).await;
            assert_eq!(status, 202, "{accepted}");
        })
        .await;
}

/// How many of the backlog's events have ended.
async fn backlog_done(store: &Dispatches, busy: &TenantId) -> usize {
    let mut done = 0;
    for n in 0..BACKLOG {
        done += usize::from(ended(store, busy, n).await.is_some());
    }
    done
}

/// The dispatch of event `n` of `tenant`, if it ended.
async fn ended(store: &Dispatches, tenant: &TenantId, n: usize) -> Option<Dispatch> {
    let at = time::OffsetDateTime::parse(OCCURRED, &time::format_description::well_known::Rfc3339)
        .expect("a time");
    let id = DispatchId::for_event(tenant, &format!("evt_fair_{n:03}"), at);
    store
        .get(tenant, &id)
        .await
        .expect("the store")
        .filter(|d| d.status.is_final())
}

#[tokio::test]
async fn a_tenants_backlog_of_slow_chains_never_holds_up_another_tenants_event() {
    let template =
        std::env::temp_dir().join(format!("conduit-fairness-{}.yaml", std::process::id()));
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
        .expect("the template");
    let marker = "Queue: !GetAtt DispatchQueue.Arn";
    let at = text
        .find(marker)
        .expect("the dispatch queue's event source");
    let (head, tail) = text.split_at(at);
    let tail = tail.replacen("MaximumConcurrency: 10", "MaximumConcurrency: 2", 1);
    assert_ne!(tail, text[at..], "the event source's MaximumConcurrency");
    std::fs::write(&template, format!("{head}{tail}")).expect("the template copy");
    let app = TestApp::isolated(devhost::LocalEnvOptions {
        template: Some(template.clone()),
        ..Default::default()
    })
    .await;
    let busy = tenant(&app, "busy").await;
    let quiet = tenant(&app, "quiet").await;
    let store = Dispatches::new(app.app().table.clone());

    let backlog: Vec<Value> = (0..BACKLOG).map(|n| event(&busy, n)).collect();
    put(&app, &busy, &backlog).await;
    let before = backlog_done(&store, &busy).await;
    put(&app, &quiet, &[event(&quiet, 0)]).await;

    // The quiet tenant's event ends while the backlog still waits: it goes ahead of
    // what was queued before it, waiting for a free slot, not for the backlog.
    let mut quiet_done = None;
    for _ in 0..600 {
        if let Some(d) = ended(&store, &quiet, 0).await {
            quiet_done = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let quiet_done = quiet_done.expect("the quiet tenant's event was dispatched");
    let after = backlog_done(&store, &busy).await;
    assert_eq!(quiet_done.status.as_str(), "succeeded", "{quiet_done:?}");
    assert!(
        BACKLOG - before >= 50,
        "a backlog to go ahead of: {before} of {BACKLOG} ended before the quiet event was put"
    );
    // It waits for a free invocation twice (once to be put back under its group, once
    // to run), while the backlog's two batches of ten go on at HubSpot's pace: about
    // forty of the backlog end meanwhile. Without its own group it would wait for all.
    assert!(
        BACKLOG - after >= (BACKLOG - before) / 3,
        "the quiet tenant's event waited for {} of the {} events queued before it",
        after - before,
        BACKLOG - before
    );

    // And the backlog runs to its end, one call per event.
    for n in 0..BACKLOG {
        let mut done = None;
        for _ in 0..600 {
            if let Some(d) = ended(&store, &busy, n).await {
                done = Some(d);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let d = done.unwrap_or_else(|| panic!("event {n} of the backlog did not end"));
        assert_eq!(d.status.as_str(), "succeeded", "{d:?}");
    }
    let calls = app
        .sandbox()
        .dispatch_requests(None)
        .into_iter()
        .filter(|r| r.route == "hubspot.call_create" && r.status < 300)
        .count();
    assert_eq!(calls, BACKLOG + 1, "one HubSpot call per event");
    let _ = std::fs::remove_file(&template);
}
