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
            if l.status != RunStatus::Completed {
                let errors = runs.errors(&t.id, &l.id).await.unwrap();
                panic!("{l:?}: {errors:?}");
            }
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
    hub(&["hubspot", "salesforce", "zoho"]).await;
}

/// The same hub with every CRM: Pipedrive (no unique fields) and Dynamics 365 (change
/// tracking) as well.
#[tokio::test]
async fn five_crms_through_the_app_hub_one_record_per_person_and_no_echo() {
    hub(&["hubspot", "salesforce", "zoho", "pipedrive", "dynamics365"]).await;
}

/// `view` with only the fields `t`'s config maps (Pipedrive persons have no job title).
fn mapped_of(t: &Tenant, view: &s::View) -> s::View {
    let fields: BTreeSet<&str> = s::default_pairs(t.provider(), ENTITY)
        .iter()
        .map(|(_, app)| *app)
        .collect();
    view.iter()
        .map(|(k, v)| {
            let kept = v
                .iter()
                .filter(|(f, _)| fields.contains(f.as_str()))
                .map(|(f, x)| (f.clone(), x.clone()))
                .collect();
            (k.clone(), kept)
        })
        .collect()
}

/// One tenant with a bidirectional contacts config for each of `providers` (the first
/// holds the sync-all admin): the first and the last CRM share one person; two rounds
/// of sync all carry everyone everywhere, a change in the first CRM reaches the others,
/// and nothing echoes.
async fn hub(providers: &[&str]) {
    let app = TestApp::spawn().await;
    let first = s::connect(&app, providers[0]).await;
    let mut crms = vec![first.clone()];
    for p in &providers[1..] {
        crms.push(s::connect_also(&app, &first, p).await);
    }
    let email = |t: &Tenant| s::crm_field(t.provider(), ENTITY, "email");
    let first_ids = s::seed(&app, &first, ENTITY, 4);
    let mut last_ids = Vec::new();
    for (i, t) in crms.iter().enumerate().skip(1) {
        last_ids = s::seed(&app, t, ENTITY, 3 - (i % 2));
    }
    let last = crms.last().expect("two CRMs at least");
    // One person is in the first and the last CRM already: the same email.
    let shared = s::crm_key(&app, &first, ENTITY, &first_ids[0]);
    s::crm_update(
        &app,
        last,
        ENTITY,
        &last_ids[0],
        &[(email(last), shared.as_str())],
    );
    let mut configs = Vec::new();
    for t in &crms {
        let c = s::new_config(t, SyncDirection::Bidirectional, &[ENTITY]);
        s::store(&app, &c).await;
        configs.push(c);
    }

    // Distinct emails across them (seeding may give two CRMs the same person).
    let people = crms
        .iter()
        .flat_map(|t| s::crm_view(&app, t, ENTITY).into_keys())
        .collect::<BTreeSet<_>>()
        .len();
    assert!(people >= 4, "{people}");

    // Two rounds carry every person everywhere (a config may push before another has
    // pulled); the third has nothing to do.
    sync_all_ok(&app, &first).await;
    sync_all_ok(&app, &first).await;
    let app_view = s::app_view(&app, &first, ENTITY).await;
    assert_eq!(app_view.len(), people, "one app record per person");
    // Not two records under one email either: the first round's pulls of the same
    // person ran at once.
    let rows = s::app_rows(&app, &first, ENTITY).await;
    let live = rows.iter().filter(|r| r.deleted_at.is_none()).count();
    assert_eq!(live, people, "one app record per person");
    for t in &crms {
        let app_view = mapped_of(t, &app_view);
        s::assert_same(&s::crm_view(&app, t, ENTITY), &app_view, t.provider());
    }
    let settled = sync_all_ok(&app, &first).await;
    assert!(
        changes(&settled).values().all(|n| *n == 0),
        "a settled hub syncs nothing: {settled:?}"
    );

    // The person the first and the last CRM knew is one record with a link to each CRM.
    let id = s::app_id(&app, &first, ENTITY, &shared).await;
    let (status, record) = app
        .get(&format!("/v1/records/contacts/{id}"), &first.admin)
        .await;
    assert_eq!(status, 200, "{record}");
    let linked: BTreeSet<&str> = record["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| l["provider"].as_str().unwrap())
        .collect();
    assert_eq!(
        linked,
        providers.iter().copied().collect::<BTreeSet<_>>(),
        "{record}"
    );

    // A change in the first CRM to a person another CRM brought reaches every other
    // CRM, and does not come back.
    let second = &crms[1];
    let other = s::crm_rows(&app, second, ENTITY)
        .into_iter()
        .map(|r| s::normalise(&r.values[email(second)]))
        .find(|k| *k != shared)
        .expect("a contact of the second CRM");
    let first_id = s::crm_rows(&app, &first, ENTITY)
        .into_iter()
        .find(|r| s::normalise(&r.values[email(&first)]) == other)
        .expect("the person in the first CRM")
        .id;
    let first_name = s::crm_field(first.provider(), ENTITY, "first_name");
    s::crm_update(&app, &first, ENTITY, &first_id, &[(first_name, "Hubbed")]);
    let round = sync_all_ok(&app, &first).await;
    let first_config = configs[0].id.to_string();
    let others: u64 = changes(&round)
        .iter()
        .filter(|(c, _)| **c != first_config)
        .map(|(_, n)| n)
        .sum();
    let app_view = s::app_view(&app, &first, ENTITY).await;
    assert_eq!(app_view[&other]["first_name"], "Hubbed");
    // In one round when the first CRM's config pulled before the others pushed; else
    // the next carries it.
    if others == 0 {
        sync_all_ok(&app, &first).await;
    }
    let app_view = s::app_view(&app, &first, ENTITY).await;
    for t in &crms {
        let crm = s::crm_view(&app, t, ENTITY);
        assert_eq!(crm[&other]["first_name"], "Hubbed", "{}", t.provider());
        s::assert_same(&crm, &mapped_of(t, &app_view), t.provider());
    }
    let settled = sync_all_ok(&app, &first).await;
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
