//! Sync runs through trouble, on an environment of their own (its pollers, crash
//! simulator and provider sandbox are not shared with other tests; failed messages
//! come back after a short delay instead of the queue's visibility timeout): a worker
//! killed mid-chunk, 429 storms, 5xx answers, gateway timeouts and malformed bodies,
//! and a config paused while its run waits in the queue — against HubSpot (with and
//! without the marker property), Salesforce, Zoho, Dynamics 365 and Pipedrive. Each faulted run
//! must end with exactly the records a fault-free run of the same scenario leaves on
//! both sides: nothing lost, nothing duplicated. Every scenario then runs again on a
//! second environment whose DynamoDB conflicts, throttles, enforces partition limits
//! and shows GSI writes late, and must end where the same fault-free run did.

use std::collections::BTreeMap;
use std::time::Duration;

use conduit::sync::config::SyncDirection;
use conduit::sync::runs::{RunStatus, SyncLog};
use conduit::sync::schema::Entity;
use sandbox::{Fault, Provider};
use scenarios::TestApp;
use tokio::sync::Mutex;

use crate::sync_support::{self as s, Tenant, View};

const ENTITY: Entity = Entity::Contacts;
/// HubSpot through a grant without `crm.schemas.contacts.write`: no `conduit_id`
/// marker property, so pushes de-duplicate creates by email.
const HUBSPOT_NO_SCHEMA_WRITE: &str = "hubspot without schema write";
/// Every CRM (and grant) the scenarios run against.
const PROVIDERS: [&str; 6] = [
    "hubspot",
    HUBSPOT_NO_SCHEMA_WRITE,
    "salesforce",
    "zoho",
    "dynamics365",
    "pipedrive",
];
const SEEDED: usize = 60;
const APP_MADE: usize = 5;

/// One test, so the scenarios take turns on the environment (their knobs act on all
/// of it) without holding a second test thread idle.
#[tokio::test]
async fn faults_during_sync_runs_end_where_fault_free_runs_do() {
    let app = TestApp::isolated(devhost::LocalEnvOptions {
        sqs_retry_delay: Some(Duration::from_millis(300)),
        ..Default::default()
    })
    .await;
    every_scenario(&app).await;

    // The same trouble again on a DynamoDB that is busy as well: each run must still
    // end where the fault-free run on the plain DynamoDB above did (the baselines were
    // computed there and are kept per provider).
    for provider in PROVIDERS {
        baseline(&app, provider).await;
    }
    let busy = crate::ddb_faults::busy_app().await;
    every_scenario(&busy).await;
    crate::ddb_faults::assert_knobs_acted(&busy).await;
}

/// Each scenario in turn on one environment.
async fn every_scenario(app: &TestApp) {
    a_config_paused_while_its_run_waits_stops_there_and_resumes_later(app).await;
    hubspot_429_storms_slow_a_sync_down_and_lose_nothing(app).await;
    hubspot_5xx_timeouts_and_a_malformed_answer_during_a_sync_lose_nothing(app).await;
    salesforce_5xx_timeouts_and_a_malformed_answer_during_a_sync_lose_nothing(app).await;
    zoho_429_5xx_timeouts_and_a_malformed_answer_during_a_sync_lose_nothing(app).await;
    dynamics_429_5xx_timeouts_and_a_malformed_batch_answer_lose_nothing(app).await;
    pipedrive_429_5xx_timeouts_and_a_malformed_create_answer_lose_nothing(app).await;
    hubspot_without_schema_write_loses_nothing_to_5xx_and_a_malformed_create_answer(app).await;
    a_worker_killed_mid_chunk_is_retried_to_the_same_end_state(app).await;
}

/// Both sides after a scenario run.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    app: View,
    crm: View,
}

/// A fresh tenant with 60 CRM contacts and 5 app contacts, and its bidirectional
/// config (stored, not run).
async fn scenario(app: &TestApp, provider: &str) -> (Tenant, conduit::domain::SyncConfigId) {
    let t = match provider {
        HUBSPOT_NO_SCHEMA_WRITE => {
            let scopes = [
                "oauth",
                "crm.objects.contacts.read",
                "crm.objects.contacts.write",
            ];
            s::connect_asking(app, "hubspot", serde_json::json!({ "scopes": scopes })).await
        }
        p => s::connect(app, p).await,
    };
    s::seed(app, &t, ENTITY, SEEDED);
    s::app_create_many(app, &t, ENTITY, APP_MADE).await;
    let c = s::new_config(&t, SyncDirection::Bidirectional, &[ENTITY]);
    s::store(app, &c).await;
    (t, c.id)
}

async fn snapshot(app: &TestApp, t: &Tenant) -> Snapshot {
    let snap = Snapshot {
        app: s::app_view(app, t, ENTITY).await,
        crm: s::crm_view(app, t, ENTITY),
    };
    assert_eq!(snap.crm.len(), SEEDED + APP_MADE);
    s::assert_same(&snap.app, &snap.crm, "app and CRM");
    snap
}

/// What a fault-free run of the scenario leaves (computed once per provider).
async fn baseline(app: &TestApp, provider: &str) -> Snapshot {
    static DONE: Mutex<BTreeMap<String, Snapshot>> = Mutex::const_new(BTreeMap::new());
    let mut done = DONE.lock().await;
    if let Some(s) = done.get(provider) {
        return s.clone();
    }
    let (t, c) = scenario(app, provider).await;
    let logs = s::run_ok(app, &t, &c).await;
    assert_eq!(logs[0].counts["rate_limited"], 0, "{:?}", logs[0].counts);
    let processed = (SEEDED + APP_MADE) as u64;
    assert_eq!(logs[0].counts["processed"], processed, "{:?}", logs[0]);
    let snap = snapshot(app, &t).await;
    done.insert(provider.to_owned(), snap.clone());
    snap
}

/// Runs the scenario with `faults` injected once the run has made `after` provider
/// requests, and the first answer of route `malformed` unreadable; asserts it ends
/// where the fault-free run did, each record counted once, and answers its log.
async fn faulted(
    app: &TestApp,
    provider: &str,
    faults: Vec<(u64, Fault)>,
    malformed: Option<&str>,
) -> SyncLog {
    let want = baseline(app, provider).await;
    let (t, c) = scenario(app, provider).await;
    // The next answer of this route is cut short (after the CRM did the work).
    match malformed {
        Some(route) if provider.starts_with("hubspot") => {
            app.sandbox().malform_hubspot_responses(route, 1)
        }
        Some(route) if provider == "zoho" => app.sandbox().malform_zoho_responses(route, 1),
        Some(route) if provider == "dynamics365" => {
            app.sandbox().malform_dynamics_responses(route, 1)
        }
        Some(route) if provider == "pipedrive" => {
            app.sandbox().malform_pipedrive_responses(route, 1)
        }
        Some(route) => app.sandbox().malform_salesforce_responses(route, 1),
        None => {}
    }
    let sandbox = app.sandbox().clone();
    let start = sandbox.total_calls();
    let injector = tokio::spawn(async move {
        for (after, fault) in faults {
            while sandbox.total_calls() < start + after {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sandbox.add_fault(fault).unwrap();
        }
    });
    let logs = s::run(app, &t, &c).await;
    injector.abort();
    app.sandbox().clear_faults();
    assert_eq!(logs[0].status, RunStatus::Completed, "{:?}", logs[0]);
    let processed = (SEEDED + APP_MADE) as u64;
    assert_eq!(logs[0].counts["processed"], processed, "{:?}", logs[0]);
    let got = snapshot(app, &t).await;
    s::assert_same(&got.app, &want.app, "app, against the fault-free run");
    s::assert_same(&got.crm, &want.crm, "CRM, against the fault-free run");
    // And a rerun finds nothing left to do.
    let again = s::run_ok(app, &t, &c).await;
    assert_eq!(again[0].counts["created"], 0, "{:?}", again[0].counts);
    assert_eq!(snapshot(app, &t).await, got);
    logs[0].clone()
}

/// The run went through a failed chunk whose message came back.
fn assert_redelivered(log: &SyncLog) {
    assert!(
        log.error
            .as_deref()
            .is_some_and(|e| e.starts_with("retrying after: ")),
        "{log:?}"
    );
}

fn fault(provider: Provider, status: u16, count: u32) -> Fault {
    Fault {
        retry_after_secs: 1,
        ..Fault::new(status, count).for_provider(provider)
    }
}

async fn hubspot_429_storms_slow_a_sync_down_and_lose_nothing(app: &TestApp) {
    let log = faulted(
        app,
        "hubspot",
        vec![
            (1, fault(Provider::Hubspot, 429, 2)),
            (4, fault(Provider::Hubspot, 429, 1)),
        ],
        None,
    )
    .await;
    // Every 429 was sat out in place: no chunk failed.
    assert!(log.counts["rate_limited"] >= 3, "{log:?}");
    assert_eq!(log.error, None, "{log:?}");
}

async fn hubspot_5xx_timeouts_and_a_malformed_answer_during_a_sync_lose_nothing(app: &TestApp) {
    // A 502 is retried in place; four 504s in a row use up the client's attempts, so
    // the chunk fails and its message comes back to resume from the checkpoint.
    let log = faulted(
        app,
        "hubspot",
        vec![
            (3, fault(Provider::Hubspot, 502, 1)),
            (6, fault(Provider::Hubspot, 504, 4)),
        ],
        Some("hubspot.crm_batch_create"),
    )
    .await;
    assert_redelivered(&log);
}

async fn hubspot_without_schema_write_loses_nothing_to_5xx_and_a_malformed_create_answer(
    app: &TestApp,
) {
    let log = faulted(
        app,
        HUBSPOT_NO_SCHEMA_WRITE,
        vec![
            (3, fault(Provider::Hubspot, 502, 1)),
            (6, fault(Provider::Hubspot, 504, 4)),
        ],
        Some("hubspot.crm_batch_create"),
    )
    .await;
    assert_redelivered(&log);
}

async fn salesforce_5xx_timeouts_and_a_malformed_answer_during_a_sync_lose_nothing(app: &TestApp) {
    let log = faulted(
        app,
        "salesforce",
        vec![
            (2, fault(Provider::Salesforce, 503, 1)),
            (5, fault(Provider::Salesforce, 504, 4)),
        ],
        Some("salesforce.composite_create"),
    )
    .await;
    assert_redelivered(&log);
}

async fn zoho_429_5xx_timeouts_and_a_malformed_answer_during_a_sync_lose_nothing(app: &TestApp) {
    // A 429 with Retry-After (the concurrency limit) is sat out in place; a 502 is
    // retried in place; four 504s fail the chunk, whose message comes back.
    let log = faulted(
        app,
        "zoho",
        vec![
            (1, fault(Provider::Zoho, 429, 2)),
            (3, fault(Provider::Zoho, 502, 1)),
            (6, fault(Provider::Zoho, 504, 4)),
        ],
        Some(sandbox::providers::zoho_crm::CRM_INSERT),
    )
    .await;
    assert!(log.counts["rate_limited"] >= 2, "{log:?}");
    assert_redelivered(&log);
}

async fn dynamics_429_5xx_timeouts_and_a_malformed_batch_answer_lose_nothing(app: &TestApp) {
    // Service protection's 429s come with Retry-After and are sat out in place; a 503
    // is retried in place; four 504s fail the chunk, whose message comes back. The
    // first $batch answer is cut short after Dataverse created the records: the retry's
    // creates carry the same keys and are refused as existing, not duplicated.
    let log = faulted(
        app,
        "dynamics365",
        vec![
            (1, fault(Provider::Dynamics365, 429, 2)),
            (3, fault(Provider::Dynamics365, 503, 1)),
            (6, fault(Provider::Dynamics365, 504, 4)),
        ],
        Some(sandbox::providers::dynamics365_crm::CRM_BATCH),
    )
    .await;
    assert!(log.counts["rate_limited"] >= 2, "{log:?}");
    assert_redelivered(&log);
}

async fn pipedrive_429_5xx_timeouts_and_a_malformed_create_answer_lose_nothing(app: &TestApp) {
    // Burst 429s come with Retry-After and are sat out in place; a 502 is retried in
    // place; four 504s fail the chunk, whose message comes back. The first create's
    // answer is cut short after Pipedrive made the person: the transport sends it again,
    // and the twin carrying the same app id is found and deleted (the older one wins).
    let log = faulted(
        app,
        "pipedrive",
        vec![
            (1, fault(Provider::Pipedrive, 429, 2)),
            (3, fault(Provider::Pipedrive, 502, 1)),
            (6, fault(Provider::Pipedrive, 504, 4)),
        ],
        Some(sandbox::providers::pipedrive_crm::CRM_CREATE),
    )
    .await;
    assert!(log.counts["rate_limited"] >= 2, "{log:?}");
    assert_redelivered(&log);
}

async fn a_worker_killed_mid_chunk_is_retried_to_the_same_end_state(app: &TestApp) {
    for provider in PROVIDERS {
        let want = baseline(app, provider).await;
        let (t, c) = scenario(app, provider).await;
        // Slow answers keep each chunk busy long enough to be killed inside it.
        app.sandbox().set_latency(None, Duration::from_millis(30));
        let kills = app.logs_about("invocation killed").lines().count();
        app.local()
            .kill_next_invocations("sync-worker", 2, Duration::from_millis(150));
        let logs = s::run(app, &t, &c).await;
        app.sandbox().set_latency(None, Duration::ZERO);
        assert_eq!(logs[0].status, RunStatus::Completed, "{:?}", logs[0]);
        let killed = app.logs_about("invocation killed").lines().count() - kills;
        assert_eq!(killed, 2, "both planned kills happened");
        let got = snapshot(app, &t).await;
        s::assert_same(&got.app, &want.app, "app, against the fault-free run");
        s::assert_same(&got.crm, &want.crm, "CRM, against the fault-free run");
        let again = s::run_ok(app, &t, &c).await;
        assert_eq!(again[0].counts["created"], 0, "{:?}", again[0].counts);
        assert_eq!(snapshot(app, &t).await, got);
    }
}

async fn a_config_paused_while_its_run_waits_stops_there_and_resumes_later(app: &TestApp) {
    let (t, c) = scenario(app, "hubspot").await;
    let crm_before = s::crm_view(app, &t, ENTITY);
    app.local().pause_pollers();
    let (status, started) = s::trigger(app, &t, &c).await;
    assert_eq!(status, 202, "{started}");
    let path = format!("/v1/sync/configs/{c}");
    let (status, body) = app
        .post(&format!("{path}/pause"), &t.admin, serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.local().resume_pollers();
    let logs = s::wait(app, &t, &started).await;
    assert_ne!(logs[0].status, RunStatus::Completed, "{:?}", logs[0]);
    assert_eq!(logs[0].error.as_deref(), Some("paused"), "{:?}", logs[0]);
    assert_eq!(s::app_rows(app, &t, ENTITY).await.len(), APP_MADE);
    s::assert_same(&s::crm_view(app, &t, ENTITY), &crm_before, "CRM untouched");

    let (status, body) = app
        .post(&format!("{path}/resume"), &t.admin, serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    s::run_ok(app, &t, &c).await;
    let want = baseline(app, "hubspot").await;
    let got = snapshot(app, &t).await;
    assert_eq!(got, want);
}
