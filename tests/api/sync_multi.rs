//! One tenant, several CRMs, the app as the hub: "sync all" (`POST /v1/sync/trigger
//! {"all": true}`) runs every active config, each with its own progress; a person known
//! to two CRMs (the same email) is one app record with a link to each; what one CRM
//! changes reaches every other CRM a config pushes to — and never comes back to where
//! it came from (runs after the change settle to nothing to do).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use conduit::domain::SyncLogId;
use conduit::sync::config::{ConfigStatus, Frequency, SyncDirection};
use conduit::sync::runs::{RunStatus, Runs, SyncLog};
use conduit::sync::schema::Entity;
use scenarios::TestApp;
use serde_json::{Value, json};

use crate::sync_support::{self as s, Tenant};

const ENTITY: Entity = Entity::Contacts;

/// Sync all over HTTP; answers the 202's body.
async fn sync_all(app: &TestApp, t: &Tenant) -> Value {
    let (status, body) = app
        .post("/v1/sync/trigger", &t.admin, json!({"all": true}))
        .await;
    assert_eq!(status, 202, "{body}");
    body
}

/// Waits for every run a sync all started; answers their logs by config id.
async fn wait_all(app: &TestApp, t: &Tenant, started: &Value) -> BTreeMap<String, Vec<SyncLog>> {
    let runs = Runs::new(app.app().table.clone());
    let mut out = BTreeMap::new();
    for run in started["runs"].as_array().expect("runs") {
        let config = run["config_id"].as_str().expect("config id").to_owned();
        let ids: Vec<SyncLogId> = run["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .map(|l| SyncLogId::parse(l["id"].as_str().unwrap()).unwrap())
            .collect();
        let logs = 'wait: {
            for _ in 0..1200 {
                let mut logs = Vec::new();
                for id in &ids {
                    logs.push(runs.log(&t.id, id).await.unwrap().unwrap());
                }
                if logs.iter().all(|l| l.status != RunStatus::Running) {
                    break 'wait logs;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the runs of a sync all did not finish in time");
        };
        for l in &logs {
            assert_eq!(l.status, RunStatus::Completed, "{l:?}");
        }
        out.insert(config, logs);
    }
    out
}

/// Sync all, waited for.
async fn sync_all_ok(app: &TestApp, t: &Tenant) -> BTreeMap<String, Vec<SyncLog>> {
    let started = sync_all(app, t).await;
    wait_all(app, t, &started).await
}

/// What a run did to either side: records created, updated or deleted, pulled or
/// pushed.
fn changes(logs: &BTreeMap<String, Vec<SyncLog>>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (config, logs) in logs {
        let n: u64 = logs
            .iter()
            .flat_map(|l| {
                ["created", "updated", "deleted", "pulled", "pushed"]
                    .iter()
                    .map(|k| l.counts.get(*k).copied().unwrap_or(0))
            })
            .sum();
        out.insert(config.clone(), n);
    }
    out
}

#[tokio::test]
async fn sync_all_runs_every_active_config_and_skips_paused_ones() {
    let app = TestApp::spawn().await;
    let hubspot = s::connect(&app, "hubspot").await;
    let zoho = s::connect_also(&app, &hubspot, "zoho").await;
    let salesforce = s::connect_also(&app, &hubspot, "salesforce").await;
    s::seed(&app, &hubspot, ENTITY, 6);
    s::seed(&app, &zoho, ENTITY, 4);
    let h = s::new_config(&hubspot, SyncDirection::Pull, &[ENTITY]);
    let z = s::new_config(&zoho, SyncDirection::Pull, &[ENTITY]);
    let mut paused = s::new_config(&salesforce, SyncDirection::Pull, &[ENTITY]);
    paused.status = ConfigStatus::Paused;
    for c in [&h, &z, &paused] {
        s::store(&app, c).await;
    }

    let started = sync_all(&app, &hubspot).await;
    let started_configs: BTreeSet<&str> = started["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["config_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        started_configs,
        BTreeSet::from([h.id.as_str(), z.id.as_str()])
    );
    assert_eq!(
        started["skipped"],
        json!([{"config_id": paused.id, "code": "sync_paused", "message": "the config is paused"}])
    );
    // A sync all while those runs are under way skips them as running.
    let again = sync_all(&app, &hubspot).await;
    let logs = wait_all(&app, &hubspot, &started).await;
    for skipped in again["skipped"].as_array().unwrap() {
        assert!(
            ["sync_running", "sync_paused"].contains(&skipped["code"].as_str().unwrap()),
            "{again}"
        );
    }
    wait_all(&app, &hubspot, &again).await;
    // Each run has its own progress: every CRM's records arrived.
    assert_eq!(logs[h.id.as_str()][0].counts["created"], 6);
    assert_eq!(logs[z.id.as_str()][0].counts["created"], 4);
    assert_eq!(s::app_rows(&app, &hubspot, ENTITY).await.len(), 10);

    // Bad requests name what to send.
    for body in [
        json!({}),
        json!({"all": false}),
        json!({"all": true, "config_id": h.id}),
        json!({"all": true, "direction": "pull"}),
        json!({"all": "yes"}),
    ] {
        let (status, answer) = app
            .post("/v1/sync/trigger", &hubspot.admin, body.clone())
            .await;
        assert_eq!(status, 400, "{body} → {answer}");
    }
    // Members may not.
    let member = app.token(hubspot.id.as_str(), scenarios::Role::Member);
    let (status, _) = app
        .post("/v1/sync/trigger", &member, json!({"all": true}))
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn three_crms_through_the_app_hub_one_record_per_person_and_no_echo() {
    let app = TestApp::spawn().await;
    let hubspot = s::connect(&app, "hubspot").await;
    let salesforce = s::connect_also(&app, &hubspot, "salesforce").await;
    let zoho = s::connect_also(&app, &hubspot, "zoho").await;
    let crms = [&hubspot, &salesforce, &zoho];
    let h_ids = s::seed(&app, &hubspot, ENTITY, 4);
    s::seed(&app, &salesforce, ENTITY, 3);
    let z_ids = s::seed(&app, &zoho, ENTITY, 2);
    // One person is in HubSpot and in Zoho already: the same email.
    let shared = s::crm_key(&app, &hubspot, ENTITY, &h_ids[0]);
    s::crm_update(
        &app,
        &zoho,
        ENTITY,
        &z_ids[0],
        &[("Email", shared.as_str())],
    );
    let mut configs = Vec::new();
    for t in crms {
        let c = s::new_config(t, SyncDirection::Bidirectional, &[ENTITY]);
        s::store(&app, &c).await;
        configs.push(c);
    }

    // Distinct emails across the three (seeding may give two CRMs the same person).
    let people = crms
        .iter()
        .flat_map(|t| s::crm_view(&app, t, ENTITY).into_keys())
        .collect::<BTreeSet<_>>()
        .len();
    assert!(people >= 4, "{people}");

    // Two rounds carry every person everywhere (a config may push before another has
    // pulled); the third has nothing to do.
    sync_all_ok(&app, &hubspot).await;
    sync_all_ok(&app, &hubspot).await;
    let app_view = s::app_view(&app, &hubspot, ENTITY).await;
    assert_eq!(app_view.len(), people, "one app record per person");
    for t in crms {
        s::assert_same(&s::crm_view(&app, t, ENTITY), &app_view, t.provider());
    }
    let settled = sync_all_ok(&app, &hubspot).await;
    assert!(
        changes(&settled).values().all(|n| *n == 0),
        "a settled hub syncs nothing: {settled:?}"
    );

    // The person both CRMs knew is one record with a link to each CRM.
    let id = s::app_id(&app, &hubspot, ENTITY, &shared).await;
    let (status, record) = app
        .get(&format!("/v1/records/contacts/{id}"), &hubspot.admin)
        .await;
    assert_eq!(status, 200, "{record}");
    let providers: BTreeSet<&str> = record["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| l["provider"].as_str().unwrap())
        .collect();
    assert_eq!(
        providers,
        BTreeSet::from(["hubspot", "salesforce", "zoho"]),
        "{record}"
    );

    // A change in one CRM reaches the other two, and does not come back.
    let sf_person = s::crm_rows(&app, &salesforce, ENTITY)
        .into_iter()
        .find(|r| s::normalise(&r.values["Email"]) != shared)
        .expect("a Salesforce contact");
    let key = s::normalise(&sf_person.values["Email"]);
    let h_id = s::crm_rows(&app, &hubspot, ENTITY)
        .into_iter()
        .find(|r| s::normalise(&r.values["email"]) == key)
        .expect("the person in HubSpot")
        .id;
    s::crm_update(
        &app,
        &hubspot,
        ENTITY,
        &h_id,
        &[("firstname", "Hubspotted")],
    );
    let round = sync_all_ok(&app, &hubspot).await;
    let h_config = configs[0].id.to_string();
    let others: u64 = changes(&round)
        .iter()
        .filter(|(c, _)| **c != h_config)
        .map(|(_, n)| n)
        .sum();
    let app_view = s::app_view(&app, &hubspot, ENTITY).await;
    assert_eq!(app_view[&key]["first_name"], "Hubspotted");
    // In one round when HubSpot's config pulled before the others pushed; else the
    // next carries it.
    let round = if others == 0 {
        sync_all_ok(&app, &hubspot).await
    } else {
        round
    };
    let _ = round;
    let app_view = s::app_view(&app, &hubspot, ENTITY).await;
    for t in crms {
        let crm = s::crm_view(&app, t, ENTITY);
        assert_eq!(crm[&key]["first_name"], "Hubspotted", "{}", t.provider());
        s::assert_same(&crm, &app_view, t.provider());
    }
    let settled = sync_all_ok(&app, &hubspot).await;
    assert!(
        changes(&settled).values().all(|n| *n == 0),
        "the change echoed: {settled:?}"
    );
}

/// Realtime configs: a change pulled from one CRM is pushed to the other CRMs' realtime
/// configs at once (not the one it came from).
#[tokio::test]
async fn a_pulled_change_starts_the_other_crms_realtime_pushes() {
    let app = TestApp::spawn().await;
    let hubspot = s::connect(&app, "hubspot").await;
    let zoho = s::connect_also(&app, &hubspot, "zoho").await;
    s::seed(&app, &hubspot, ENTITY, 3);
    let pull = s::new_config(&hubspot, SyncDirection::Pull, &[ENTITY]);
    let mut push = s::new_config(&zoho, SyncDirection::Push, &[ENTITY]);
    push.frequency = Frequency::Realtime;
    s::store(&app, &pull).await;
    s::store(&app, &push).await;
    s::run_ok(&app, &hubspot, &pull.id).await;
    // The realtime push of the Zoho config starts by itself and brings Zoho the three.
    let runs = Runs::new(app.app().table.clone());
    for _ in 0..300 {
        if s::crm_rows(&app, &zoho, ENTITY).len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app_view = s::app_view(&app, &hubspot, ENTITY).await;
    s::assert_same(&s::crm_view(&app, &zoho, ENTITY), &app_view, "Zoho");
    let logs = runs
        .logs(&hubspot.id, Some(&push.id), 10, None)
        .await
        .expect("logs")
        .items;
    assert!(
        logs.iter().any(|l| l.trigger == "realtime"),
        "a realtime push ran: {logs:?}"
    );
}
