//! What a person sees and does after runs: conflicts stored by `manual_review` listed,
//! resolved (per field, merged values, "always" one side) or ignored; logs filtered,
//! their per-record errors, and a retry of the failed records only; a config's status.

use std::time::Duration;

use conduit::domain::SyncConfigId;
use conduit::sync::conflict::{Direction, Strategy};
use conduit::sync::runs::RunStatus;
use conduit::sync::schema::Entity;
use scenarios::{Role, TestApp};
use serde_json::{Value, json};

use crate::sync_support::{
    Tenant, app_rows, app_update, app_view, assert_same, connect, crm_rows, crm_update, crm_view,
    mapping, new_config, run, run_ok, seed, store,
};

const C: Entity = Entity::Contacts;

/// The CRM id linked to app record `id` by `config`.
async fn crm_id_of(app: &TestApp, t: &Tenant, config: &str, id: &str) -> String {
    let r = app_rows(app, t, C)
        .await
        .into_iter()
        .find(|r| r.id.as_str() == id)
        .expect("the record");
    r.links[config].crm_id.clone()
}

/// The CRM record `crm_id`'s value of `field`.
fn crm_value(app: &TestApp, t: &Tenant, crm_id: &str, field: &str) -> Option<String> {
    crm_rows(app, t, C)
        .into_iter()
        .find(|r| r.id == crm_id)
        .and_then(|r| r.values.get(field).cloned())
}

/// The app record `id`'s value of `field`.
async fn app_value(app: &TestApp, t: &Tenant, id: &str, field: &str) -> Option<String> {
    app_rows(app, t, C)
        .await
        .into_iter()
        .find(|r| r.id.as_str() == id)
        .and_then(|r| r.fields.get(field).cloned())
}

/// Waits until the config's latest run is `job` and has finished.
async fn wait_for_job(app: &TestApp, t: &Tenant, config: &SyncConfigId, job: &str) -> Value {
    for _ in 0..600 {
        let (status, body) = app
            .get(&format!("/v1/sync/configs/{config}/status"), &t.admin)
            .await;
        assert_eq!(status, 200, "{body}");
        if body["run"]["job_id"] == job && body["running"] == false {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job} did not finish");
}

/// A bidirectional manual-review config over contacts with `n` CRM contacts pulled in.
async fn reviewed(app: &TestApp, n: usize) -> (Tenant, SyncConfigId) {
    let t = connect(app, "hubspot").await;
    seed(app, &t, C, n);
    let mut cfg = new_config(
        &t,
        conduit::sync::config::SyncDirection::Bidirectional,
        &[C],
    );
    cfg.conflict_strategy = Strategy::ManualReview;
    store(app, &cfg).await;
    let logs = run_ok(app, &t, &cfg.id).await;
    // The list endpoint has no total; the pass counted the records first.
    assert_eq!(logs[0].estimated_total, Some(n as u64), "{:?}", logs[0]);
    (t, cfg.id)
}

/// Changes `fields` of one record on both sides differently; answers (app id, CRM id).
async fn diverge(
    app: &TestApp,
    t: &Tenant,
    config: &SyncConfigId,
    fields: &[(&str, &str)],
) -> (String, String) {
    let record = app_rows(app, t, C).await.remove(0);
    let id = record.id.to_string();
    let crm_id = crm_id_of(app, t, config.as_str(), &id).await;
    let app_fields: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(f, v)| ((*f).to_owned(), json!(format!("app {v}"))))
        .collect();
    app_update(app, t, C, &id, Value::Object(app_fields)).await;
    let crm_values: Vec<(&str, String)> = fields
        .iter()
        .map(|(f, v)| {
            let crm = crate::sync_support::crm_field("hubspot", C, f);
            (crm, format!("crm {v}"))
        })
        .collect();
    let borrowed: Vec<(&str, &str)> = crm_values.iter().map(|(f, v)| (*f, v.as_str())).collect();
    crm_update(app, t, C, &crm_id, &borrowed);
    (id, crm_id)
}

async fn open_conflicts(app: &TestApp, t: &Tenant, query: &str) -> Vec<Value> {
    let (status, body) = app
        .get(&format!("/v1/sync/conflicts{query}"), &t.admin)
        .await;
    assert_eq!(status, 200, "{body}");
    body["conflicts"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_manual_review_conflict_is_resolved_per_field_and_both_sides_agree() {
    let app = TestApp::spawn().await;
    let (t, config) = reviewed(&app, 5).await;
    let (id, crm_id) = diverge(
        &app,
        &t,
        &config,
        &[("phone", "+15550001"), ("last_name", "Lovelace")],
    )
    .await;

    let logs = run(&app, &t, &config).await;
    assert_eq!(logs[0].status, RunStatus::Completed, "{:?}", logs[0]);
    assert_eq!(
        logs[0].counts["conflicts_detected"], 2,
        "{:?}",
        logs[0].counts
    );
    let listed = open_conflicts(&app, &t, "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let c = &listed[0];
    assert_eq!(c["record_id"], id.as_str());
    assert_eq!(c["crm_id"], crm_id.as_str());
    // The bus is told, with ids only (dispatch chains can act on it).
    let opened = app
        .wait_for_event("integration.sync.conflict.opened", |e| {
            e["conflict_id"] == c["id"]
        })
        .await;
    assert_eq!(opened["detail"]["record_id"], id.as_str());
    assert_eq!(opened["detail"]["tenant_id"], t.id.as_str());
    let fields: Vec<&str> = c["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["last_name", "phone"]);
    let phone = c["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "phone")
        .unwrap();
    assert_eq!(phone["app"], "app +15550001");
    assert_eq!(phone["crm"], "crm +15550001");
    let conflict = c["id"].as_str().unwrap().to_owned();

    // Frozen while open: neither side overwrites the other, and a rerun does not count
    // the same conflict again.
    let logs = run(&app, &t, &config).await;
    assert_eq!(
        logs[0].counts["conflicts_detected"], 0,
        "{:?}",
        logs[0].counts
    );
    assert_eq!(
        app_value(&app, &t, &id, "phone").await.as_deref(),
        Some("app +15550001")
    );
    assert_eq!(
        crm_value(&app, &t, &crm_id, "phone").as_deref(),
        Some("crm +15550001")
    );
    let (_, status) = app
        .get(&format!("/v1/sync/configs/{config}/status"), &t.admin)
        .await;
    assert_eq!(status["open_conflicts"], 1, "{status}");

    // Incomplete or stray choices and invalid values are refused, nothing changes.
    let path = format!("/v1/sync/conflicts/{conflict}/resolve");
    for (body, needle) in [
        (json!({"fields": {"phone": "app"}}), "missing: last_name"),
        (
            json!({"fields": {"phone": "app", "last_name": "crm", "email": "app"}}),
            "not in conflict",
        ),
        (
            json!({"fields": {"phone": "app"}, "values": {"last_name": 7}}),
            "last_name",
        ),
        (json!({"fields": {"phone": "both"}}), "phone"),
        (json!({}), "give fields"),
    ] {
        let (status, answer) = app.post(&path, &t.admin, body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(answer.to_string().contains(needle), "{body} → {answer}");
    }
    let member = app.token(t.id.as_str(), Role::Member);
    let (status, _) = app.post(&path, &member, json!({"always": "app"})).await;
    assert_eq!(status, 403);
    assert_eq!(open_conflicts(&app, &t, "").await.len(), 1);

    // The app's phone, a merged last name: written to the app, pushed to the CRM.
    let (status, settled) = app
        .post(
            &path,
            &t.admin,
            json!({"fields": {"phone": "app"}, "values": {"last_name": "Merged"}}),
        )
        .await;
    assert_eq!(status, 200, "{settled}");
    assert_eq!(settled["status"], "resolved");
    assert_eq!(
        settled["resolution"],
        json!({"phone": "app", "last_name": "custom"})
    );
    assert_eq!(settled["push"]["status"], "started", "{settled}");
    let job = settled["push"]["job_id"].as_str().unwrap();
    let done = wait_for_job(&app, &t, &config, job).await;
    assert_eq!(done["run"]["status"], "completed", "{done}");
    assert_eq!(
        crm_value(&app, &t, &crm_id, "phone").as_deref(),
        Some("app +15550001")
    );
    assert_eq!(
        crm_value(&app, &t, &crm_id, "lastname").as_deref(),
        Some("Merged")
    );
    assert_eq!(
        app_value(&app, &t, &id, "last_name").await.as_deref(),
        Some("Merged")
    );

    let (status, again) = app.post(&path, &t.admin, json!({"always": "app"})).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["code"], "conflict_resolved");
    assert!(open_conflicts(&app, &t, "").await.is_empty());
    let resolved = open_conflicts(&app, &t, "?status=resolved").await;
    assert_eq!(resolved.len(), 1);

    // The fields sync again: a later run finds both sides the same.
    let logs = run_ok(&app, &t, &config).await;
    assert_eq!(
        logs[0].counts["conflicts_detected"], 0,
        "{:?}",
        logs[0].counts
    );
    assert_same(
        &app_view(&app, &t, C).await,
        &crm_view(&app, &t, C),
        "after resolution",
    );
    let audit = app.audit_actions(t.id.as_str()).await;
    assert!(
        audit.iter().any(|(a, _)| a == "sync.conflict.resolve"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn an_ignored_conflict_stays_aside_and_always_crm_becomes_the_rule() {
    let app = TestApp::spawn().await;
    let (t, config) = reviewed(&app, 3).await;
    let (id, crm_id) = diverge(&app, &t, &config, &[("job_title", "Chief")]).await;
    run_ok(&app, &t, &config).await;
    let conflict = open_conflicts(&app, &t, "").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, ignored) = app
        .post(
            &format!("/v1/sync/conflicts/{conflict}/ignore"),
            &t.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{ignored}");
    assert_eq!(ignored["status"], "ignored");
    assert!(open_conflicts(&app, &t, "").await.is_empty());
    // Still aside after another run: both sides keep their values.
    let logs = run_ok(&app, &t, &config).await;
    assert_eq!(logs[0].counts["conflicts_detected"], 0);
    assert_eq!(open_conflicts(&app, &t, "?status=ignored").await.len(), 1);
    assert_eq!(
        app_value(&app, &t, &id, "job_title").await.as_deref(),
        Some("app Chief")
    );
    assert_eq!(
        crm_value(&app, &t, &crm_id, "jobtitle").as_deref(),
        Some("crm Chief")
    );

    // "Always use the CRM": the CRM's value in the app, nothing to push, and the
    // config's strategy is crm_wins from now on.
    let (status, settled) = app
        .post(
            &format!("/v1/sync/conflicts/{conflict}/resolve"),
            &t.admin,
            json!({"always": "crm"}),
        )
        .await;
    assert_eq!(status, 200, "{settled}");
    assert_eq!(settled["push"]["status"], "not_needed", "{settled}");
    assert_eq!(settled["conflict_strategy"], "crm_wins");
    assert_eq!(
        app_value(&app, &t, &id, "job_title").await.as_deref(),
        Some("crm Chief")
    );
    let (_, cfg) = app
        .get(&format!("/v1/sync/configs/{config}"), &t.admin)
        .await;
    assert_eq!(cfg["conflict_strategy"], "crm_wins", "{cfg}");

    // Both sides change again: the CRM wins by itself, no conflict is stored.
    diverge(&app, &t, &config, &[("job_title", "Again")]).await;
    let logs = run_ok(&app, &t, &config).await;
    assert_eq!(
        logs[0].counts["conflicts_detected"], 0,
        "{:?}",
        logs[0].counts
    );
    assert!(open_conflicts(&app, &t, "").await.is_empty());
    assert_eq!(
        app_value(&app, &t, &id, "job_title").await.as_deref(),
        Some("crm Again")
    );
    assert_same(
        &app_view(&app, &t, C).await,
        &crm_view(&app, &t, C),
        "crm wins",
    );
}

#[tokio::test]
async fn logs_are_filtered_show_record_errors_and_retry_only_the_failed_records() {
    let app = TestApp::spawn().await;
    let t = connect(&app, "hubspot").await;
    let mut cfg = new_config(&t, conduit::sync::config::SyncDirection::Push, &[C]);
    cfg.mappings.push(mapping(
        C,
        "lifecyclestage",
        "lifecycle_stage",
        Direction::Bidirectional,
    ));
    store(&app, &cfg).await;
    let config = cfg.id.clone();
    let mut ids = Vec::new();
    for (i, stage) in ["lead", "not-a-stage", "customer"].iter().enumerate() {
        let mut fields = crate::sync_support::app_fields(C, i);
        fields["lifecycle_stage"] = json!(stage);
        ids.push(crate::sync_support::app_create(&app, &t, C, fields).await);
    }

    // HubSpot refuses the unknown option: that record fails, the others go through.
    let logs = run(&app, &t, &cfg.id).await;
    let log = &logs[0];
    assert_eq!(log.status, RunStatus::Partial, "{log:?}");
    assert_eq!(log.counts["created"], 2, "{:?}", log.counts);
    assert_eq!(log.counts["failed"], 1, "{:?}", log.counts);
    assert_eq!(crm_rows(&app, &t, C).len(), 2);
    let (status, shown) = app
        .get(&format!("/v1/sync/logs/{}", log.id), &t.admin)
        .await;
    assert_eq!(status, 200, "{shown}\n{}", app.logs_about("request failed"));
    assert_eq!(shown["status"], "partial");
    assert_eq!(shown["synced"], 2);
    assert_eq!(shown["failed"], 1);
    assert_eq!(shown["error_count"], 1);
    assert_eq!(shown["errors"][0]["record_id"], ids[1].as_str());
    assert_eq!(shown["errors"][0]["phase"], "push");
    assert!(
        shown["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("allowed options"),
        "{shown}"
    );

    // A record the push created in the CRM shows its link (a push-only config never
    // pulls, so the link item is what says so).
    let (status, view) = app
        .get(&format!("/v1/records/contacts/{}", ids[0]), &t.admin)
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["platforms"], json!(["hubspot"]), "{view}");
    assert_eq!(view["links"][0]["config_id"], config.as_str());
    let (_, view) = app
        .get(&format!("/v1/records/contacts/{}", ids[1]), &t.admin)
        .await;
    assert_eq!(view["links"], json!([]), "{view}");
    // The platform filter goes by the links too: the pushed records are on HubSpot,
    // the refused one on no platform.
    let mut pushed = vec![ids[0].as_str(), ids[2].as_str()];
    pushed.sort_unstable();
    for (query, expected) in [
        ("?platform=hubspot", pushed.clone()),
        ("?platform=hubspot&limit=1", pushed[..1].to_vec()),
        ("?platform=salesforce", vec![]),
        (
            "?platform=hubspot&search=app.person0@app-made.test",
            vec![ids[0].as_str()],
        ),
        ("?platform=hubspot&search=app.person1@app-made.test", vec![]),
        ("?platform=hubspot&search=appfirst", pushed.clone()),
    ] {
        let (status, listed) = app
            .get(&format!("/v1/records/contacts{query}"), &t.admin)
            .await;
        assert_eq!(status, 200, "{query}: {listed}");
        let mut found: Vec<&str> = listed["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        found.sort_unstable();
        assert_eq!(found, expected, "{query}: {listed}");
    }

    // Filters.
    let member = app.token(t.id.as_str(), Role::Member);
    for (query, expected) in [
        (format!("?config_id={config}"), 1),
        (format!("?config_id={config}&status=partial"), 1),
        (format!("?config_id={config}&status=completed"), 0),
        (format!("?config_id={config}&entity=companies"), 0),
        (format!("?config_id={config}&from=2099-01-01T00:00:00Z"), 0),
        (format!("?config_id={config}&to=2000-01-01T00:00:00Z"), 0),
        (
            format!("?config_id={config}&from=2000-01-01T00:00:00Z&entity=contacts"),
            1,
        ),
    ] {
        let (status, body) = app.get(&format!("/v1/sync/logs{query}"), &member).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(
            body["logs"].as_array().unwrap().len(),
            expected,
            "{query}: {body}"
        );
    }
    for query in [
        "?status=done",
        "?from=yesterday",
        "?entity=tickets",
        "?limit=0",
        "?bogus=1",
    ] {
        let (status, body) = app.get(&format!("/v1/sync/logs{query}"), &member).await;
        assert_eq!(status, 400, "{query}: {body}");
    }

    // Fix the record, retry the failed one only.
    app_update(
        &app,
        &t,
        C,
        &ids[1],
        json!({"lifecycle_stage": "opportunity"}),
    )
    .await;
    let retry = format!("/v1/sync/logs/{}/retry", log.id);
    let (status, _) = app.post(&retry, &member, json!({})).await;
    assert_eq!(status, 403);
    let (status, started) = app.post(&retry, &t.admin, json!({})).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["retrying"], json!({"push": 1}));
    let logs = crate::sync_support::wait(&app, &t, &started).await;
    assert_eq!(logs[0].status, RunStatus::Completed, "{:?}", logs[0]);
    assert_eq!(logs[0].trigger, "retry");
    assert_eq!(logs[0].counts["created"], 1, "{:?}", logs[0].counts);
    let rows = crm_rows(&app, &t, C);
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .any(|r| r.values.get("lifecyclestage").map(String::as_str) == Some("opportunity"))
    );
    let (status, body) = app
        .post(
            &format!("/v1/sync/logs/{}/retry", logs[0].id),
            &t.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "nothing_to_retry");

    // Status: the latest run, and when the schedule fires once there is one.
    let (status, body) = app
        .get(&format!("/v1/sync/configs/{config}/status"), &member)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["running"], false);
    assert_eq!(body["run"]["status"], "completed", "{body}");
    assert_eq!(body["run"]["job_id"], started["job_id"]);
    assert_eq!(body["next_run_at"], Value::Null);
    let (status, patched) = app
        .patch(
            &format!("/v1/sync/configs/{config}"),
            &t.admin,
            json!({"frequency": {"type": "hourly"}}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let (_, body) = app
        .get(&format!("/v1/sync/configs/{config}/status"), &member)
        .await;
    let next = time::OffsetDateTime::parse(
        body["next_run_at"].as_str().expect("a next run"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    assert!(
        next > now && next <= now + time::Duration::hours(1),
        "{body}"
    );

    // Another tenant sees none of it.
    let other = app.tenant();
    let stranger = app.token(&other, Role::Admin);
    let (status, _) = app
        .get(&format!("/v1/sync/logs/{}", log.id), &stranger)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.post(&retry, &stranger, json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = app
        .get(&format!("/v1/sync/configs/{config}/status"), &stranger)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_deleted_config_leaves_no_links_conflicts_or_link_summaries_behind() {
    let app = TestApp::spawn().await;
    let (t, config) = reviewed(&app, 4).await;
    diverge(&app, &t, &config, &[("phone", "+15550002")]).await;
    run_ok(&app, &t, &config).await;
    assert_eq!(open_conflicts(&app, &t, "").await.len(), 1);
    let store = conduit::sync::links::Links::new(app.app().table, &t.id, &config, C);
    let links = || async { store.all().await.unwrap().len() };
    assert_eq!(links().await, 4);

    let (status, body) = app
        .delete(&format!("/v1/sync/configs/{config}"), &t.admin)
        .await;
    assert_eq!(status, 204, "{body}");
    let mut left = usize::MAX;
    for _ in 0..300 {
        left = links().await;
        if left == 0 && open_conflicts(&app, &t, "?status=all").await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "links left behind");
    assert!(open_conflicts(&app, &t, "?status=all").await.is_empty());
    let (status, body) = app.get("/v1/records/contacts", &t.admin).await;
    assert_eq!(status, 200);
    let records = body["records"].as_array().unwrap();
    assert_eq!(records.len(), 4, "the records themselves stay");
    for r in records {
        assert_eq!(r["links"], json!([]), "{r}");
        assert_eq!(r["platforms"], json!([]), "{r}");
    }
    let (status, _) = app
        .get(&format!("/v1/sync/configs/{config}/status"), &t.admin)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_realtime_config_pushes_an_app_change_as_it_is_made() {
    let app = TestApp::spawn().await;
    let t = connect(&app, "hubspot").await;
    let mut cfg = new_config(
        &t,
        conduit::sync::config::SyncDirection::Bidirectional,
        &[C],
    );
    cfg.frequency = conduit::sync::config::Frequency::Realtime;
    store(&app, &cfg).await;
    let mut manual = new_config(
        &t,
        conduit::sync::config::SyncDirection::Push,
        &[Entity::Companies],
    );
    manual.frequency = conduit::sync::config::Frequency::Manual;
    store(&app, &manual).await;

    let id =
        crate::sync_support::app_create(&app, &t, C, crate::sync_support::app_fields(C, 1)).await;
    crate::sync_support::app_create(
        &app,
        &t,
        Entity::Companies,
        crate::sync_support::app_fields(Entity::Companies, 1),
    )
    .await;
    let mut rows = Vec::new();
    for _ in 0..400 {
        rows = crm_rows(&app, &t, C);
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rows.len(),
        1,
        "the contact reached HubSpot without a trigger"
    );
    assert_eq!(
        rows[0].values.get("email").map(String::as_str),
        Some("app.person1@app-made.test")
    );
    app_update(&app, &t, C, &id, json!({"job_title": "Founder"})).await;
    let mut title = None;
    for _ in 0..400 {
        title = crm_value(&app, &t, &rows[0].id, "jobtitle");
        if title.as_deref() == Some("Founder") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(title.as_deref(), Some("Founder"));
    // A manual config waits for its trigger.
    assert!(crm_rows(&app, &t, Entity::Companies).is_empty());
}

#[tokio::test]
async fn no_token_reaches_the_logs_the_sync_items_or_the_api() {
    let app = TestApp::spawn().await;
    let _lock = scenarios::provider_lock("hubspot").await;
    let (t, config) = reviewed(&app, 20).await;
    let before = app.tokens(t.id.as_str(), &t.conn).await;
    // Every token is refused from now on: the push meets a 401, refreshes, repeats.
    app.sandbox()
        .expire_access_tokens(sandbox::oauth::OAuthProvider::Hubspot);
    crate::sync_support::app_create(&app, &t, C, crate::sync_support::app_fields(C, 7)).await;
    let logs = run_ok(&app, &t, &config).await;
    assert_eq!(logs[0].counts["created"], 1, "{:?}", logs[0].counts);
    let after = app.tokens(t.id.as_str(), &t.conn).await;
    assert_ne!(
        before["access_token"], after["access_token"],
        "refreshed after the 401"
    );

    let mut shown = String::new();
    for path in [
        format!("/v1/sync/logs?config_id={config}"),
        format!("/v1/sync/logs/{}", logs[0].id),
        format!("/v1/sync/configs/{config}/status"),
        "/v1/sync/conflicts?status=all".to_owned(),
        "/v1/records/contacts?limit=200".to_owned(),
    ] {
        let (status, body) = app.get(&path, &t.admin).await;
        assert_eq!(status, 200, "{path}: {body}");
        shown.push_str(&body.to_string());
    }
    for tokens in [&before, &after] {
        for name in ["access_token", "refresh_token"] {
            let secret = &tokens[name];
            assert!(!shown.contains(secret.as_str()), "{name} in an API answer");
            app.assert_secret_absent(secret, t.id.as_str()).await;
        }
    }
}

#[tokio::test]
async fn a_resolution_followed_by_junk_settles_nothing() {
    let app = TestApp::spawn().await;
    let (t, config) = reviewed(&app, 2).await;
    let (id, crm_id) = diverge(&app, &t, &config, &[("job_title", "Chief")]).await;
    run_ok(&app, &t, &config).await;
    let conflict = open_conflicts(&app, &t, "").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/sync/conflicts/{conflict}/resolve");
    let one = json!({"values": {"job_title": "x"}}).to_string();
    for junk in [
        format!("{one} xyz"),
        format!("{one}{one}"),
        format!("[{one}]"),
        r#"{"values": {"job_title": "x"}, "values": {"job_title": "y"}}"#.to_owned(),
    ] {
        let (status, err) = app
            .send_raw("POST", &path, &t.admin, junk.clone(), "application/json")
            .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("invalid_body")),
            "{junk}: {err}"
        );
    }
    // Still open, and neither side took the value.
    assert_eq!(open_conflicts(&app, &t, "").await.len(), 1);
    assert_eq!(
        app_value(&app, &t, &id, "job_title").await.as_deref(),
        Some("app Chief")
    );
    assert_eq!(
        crm_value(&app, &t, &crm_id, "jobtitle").as_deref(),
        Some("crm Chief")
    );
}
