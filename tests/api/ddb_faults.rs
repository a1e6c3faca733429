//! The sync, OAuth callback and token-refresh scenarios on a local DynamoDB that
//! behaves like a busy real one: 10% of transactions cancelled for a
//! `TransactionConflict`, 5% cancelled for a `ThrottlingError` and 5% of plain writes
//! throttled, partition limits enforced, and GSIs that show a write only 300 ms later.
//! Each scenario must end in the state the same scenario reaches on the plain local
//! DynamoDB (the shared environment): conflicts and throttles retried, nothing read
//! back through an index as if it were consistent.

use std::time::Duration;

use conduit::domain::ConnectionStatus;
use conduit::sync::config::SyncDirection;
use conduit::sync::runs::RunStatus;
use conduit::sync::schema::Entity;
use sandbox::OAuthProvider;
use scenarios::TestApp;
use serde_json::{Value, json};

use crate::sync_support::{self as s, View};

const ENTITY: Entity = Entity::Contacts;
const SEEDED: usize = 40;
const APP_MADE: usize = 5;
const GSI_DELAY: Duration = Duration::from_millis(300);

/// The knobs of the faulty DynamoDB.
pub(crate) fn knobs() -> devhost::DdbKnobs {
    devhost::DdbKnobs {
        partition_limits: true,
        conflict: 0.1,
        throttle: 0.05,
        fault_seed: 12,
        gsi_delay: GSI_DELAY,
        patched: true,
    }
}

/// One test, so the two environments start once and the scenarios take turns on them.
#[tokio::test]
async fn sync_oauth_and_refresh_end_alike_with_conflicts_throttles_and_late_gsis() {
    let plain = TestApp::spawn().await;
    let faulty = busy_app().await;

    let want = oauth_and_refresh(&plain).await;
    let got = oauth_and_refresh(&faulty).await;
    assert_eq!(
        got, want,
        "OAuth connect and refresh, against the plain DynamoDB"
    );

    let want = bidirectional_sync(&plain).await;
    let got = bidirectional_sync(&faulty).await;
    s::assert_same(&got.0, &want.0, "app, against the plain DynamoDB");
    s::assert_same(&got.1, &want.1, "CRM, against the plain DynamoDB");

    assert_knobs_acted(&faulty).await;
}

/// An environment of its own on the faulty DynamoDB ([`knobs`]); failed chunks come
/// back after a short delay, not the visibility timeout.
pub(crate) async fn busy_app() -> TestApp {
    TestApp::isolated_with_ddb(
        devhost::LocalEnvOptions {
            sqs_retry_delay: Some(Duration::from_millis(300)),
            ..Default::default()
        },
        knobs(),
    )
    .await
}

/// The knobs did act: the scenarios met conflicts and throttles, with partition
/// limits enforced.
pub(crate) async fn assert_knobs_acted(app: &TestApp) {
    let report = app.ddb_capacity().await;
    assert!(report.limits_enforced, "{report:?}");
    for kind in ["conflict", "throttle"] {
        assert!(
            report.faults_injected.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} injected: {:?}",
            report.faults_injected
        );
    }
}

/// Connects HubSpot through the OAuth callback, refreshes it with the sweep, sweeps
/// again; the facts that must not depend on the store's weather.
async fn oauth_and_refresh(app: &TestApp) -> Value {
    let t = s::connect(app, "hubspot").await;
    let tenant = t.id.as_str().to_owned();
    let email = {
        let conn = app.connection(&tenant, &t.conn).await;
        conn.identity
            .and_then(|i| i.email)
            .expect("HubSpot names the connected user")
    };
    let before = app.tokens(&tenant, &t.conn).await;
    app.make_due(&tenant, &t.conn).await;
    // The sweep finds due connections through an index; its next run comes minutes
    // after a token falls due, long after the index shows it.
    tokio::time::sleep(GSI_DELAY * 2).await;
    app.sweep_settled(&tenant, &t.conn).await;
    let after = app.tokens(&tenant, &t.conn).await;
    // Not due any more: another sweep leaves it alone.
    app.sweep_settled(&tenant, &t.conn).await;
    let stored = app.connection(&tenant, &t.conn).await;
    let token = stored.token.clone().expect("token state");
    let grants = app
        .sandbox()
        .oauth_grants_for_user(OAuthProvider::Hubspot, &email);
    // Read through the API after the index has caught up.
    tokio::time::sleep(GSI_DELAY * 2).await;
    let (status, listed) = app.get("/v1/connections?provider=hubspot", &t.admin).await;
    assert_eq!(status, 200, "{listed}");
    json!({
        "status": stored.status == ConnectionStatus::Connected,
        "generation": token.generation,
        "failures": token.failures,
        "lease_released": stored.lease_holder.is_none(),
        "access_token_renewed": after["access_token"] != before["access_token"],
        "refresh_token_kept": after["refresh_token"] == before["refresh_token"],
        "grants": grants.len(),
        "refreshes": grants.first().map(|g| g.refreshes),
        "listed": listed["connections"].as_array().map(Vec::len),
    })
}

/// 40 CRM contacts and 5 app contacts synced both ways; both sides afterwards.
async fn bidirectional_sync(app: &TestApp) -> (View, View) {
    let t = s::connect(app, "hubspot").await;
    s::seed(app, &t, ENTITY, SEEDED);
    s::app_create_many(app, &t, ENTITY, APP_MADE).await;
    let c = s::new_config(&t, SyncDirection::Bidirectional, &[ENTITY]);
    s::store(app, &c).await;
    let logs = s::run(app, &t, &c.id).await;
    assert_eq!(logs[0].status, RunStatus::Completed, "{:?}", logs[0]);
    let processed = (SEEDED + APP_MADE) as u64;
    assert_eq!(logs[0].counts["processed"], processed, "{:?}", logs[0]);
    // What the run wrote, read once the indexes show it.
    tokio::time::sleep(GSI_DELAY * 2).await;
    let app_side = s::app_view(app, &t, ENTITY).await;
    let crm_side = s::crm_view(app, &t, ENTITY);
    assert_eq!(crm_side.len(), SEEDED + APP_MADE);
    s::assert_same(&app_side, &crm_side, "app and CRM");
    // And a rerun finds nothing left to do.
    let again = s::run_ok(app, &t, &c.id).await;
    assert_eq!(again[0].counts["created"], 0, "{:?}", again[0].counts);
    tokio::time::sleep(GSI_DELAY * 2).await;
    s::assert_same(
        &s::app_view(app, &t, ENTITY).await,
        &app_side,
        "app after a rerun",
    );
    (app_side, crm_side)
}

/// A DynamoDB that throttles every write past the store's retries: a POST that writes
/// answers 503 `unavailable` with `Retry-After` and the standard error body (never a
/// 500), and leaves nothing behind — no connection, marker, record or audit entry —
/// whether the handler's write or the `Idempotency-Key` claim before it was refused.
#[tokio::test]
async fn writes_throttled_past_the_retries_are_503s_that_change_nothing() {
    let app = TestApp::isolated_with_ddb(
        devhost::LocalEnvOptions::default(),
        devhost::DdbKnobs {
            throttle: 1.0,
            fault_seed: 5,
            ..devhost::DdbKnobs::default()
        },
    )
    .await;
    let t = app.tenant();
    let admin = app.token(&t, scenarios::Role::Admin);

    let connection = scenarios::zendesk("zd-sandbox-token-0001");
    let record = json!({"fields": {"email": "busy@example.com", "last_name": "Busy"}});
    let keyed: &[(&str, &str)] = &[("idempotency-key", "busy-0001")];
    for (path, body, headers) in [
        ("/v1/connections", &connection, &[][..]),
        ("/v1/connections", &connection, keyed),
        ("/v1/records/contacts", &record, &[][..]),
        ("/v1/records/contacts", &record, keyed),
    ] {
        let (status, headers, err) = app
            .send_headed("POST", path, &admin, Some(body.clone()), headers)
            .await;
        assert_eq!(status, 503, "{path}: {err}");
        assert_eq!(headers["retry-after"], "1", "{path}");
        assert_eq!(err["error"]["code"], "unavailable", "{err}");
        let request_id = err["error"]["request_id"].as_str().unwrap_or_default();
        assert!(!request_id.is_empty(), "{err}");
        assert_eq!(headers["x-request-id"], request_id);
        // The cause is logged, never returned.
        let text = err.to_string().to_lowercase();
        assert!(
            !text.contains("dynamo") && !text.contains("throttl"),
            "{err}"
        );
    }

    // Reads still work, and show nothing half-written.
    let (status, list) = app.get("/v1/connections", &admin).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["connections"], json!([]), "{list}");
    let (status, records) = app.get("/v1/records/contacts", &admin).await;
    assert_eq!(status, 200, "{records}");
    assert_eq!(records["records"], json!([]), "{records}");
    assert_eq!(app.config_items(&t).await, 0);
    assert_eq!(app.audit_actions(&t).await, Vec::<(String, String)>::new());
    app.assert_secret_absent("zd-sandbox-token-0001", &t).await;

    let report = app.ddb_capacity().await;
    assert!(
        report.faults_injected.get("throttle").copied().unwrap_or(0) > 0,
        "{:?}",
        report.faults_injected
    );
}
