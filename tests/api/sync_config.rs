//! The sync configuration API on a connected sandbox HubSpot: configs with default
//! (auto-mapped) mappings, their EventBridge Scheduler schedules on moto kept in step
//! through every change, field mappings, available fields, auto-map, a preview that
//! writes nothing, every bad configuration refused with nothing stored, tenant
//! isolation and member rights.

use std::sync::atomic::{AtomicU64, Ordering};

use conduit::domain::TenantId;
use conduit::sync::schema::Entity;
use sandbox::{CrmObject, OAuthProvider, OAuthUser, SfObject};
use scenarios::{Role, TestApp, zendesk};
use serde_json::{Value, json};

const RETURN_TO: &str = "http://localhost:5173/integrations";
const CONFIGS: &str = "/v1/sync/configs";

/// A tenant with a connected HubSpot portal of its own.
struct Tenant {
    id: String,
    admin: String,
    member: String,
    connection: String,
    portal: u64,
}

/// A HubSpot portal id no other test of this process uses (so seeded records and
/// property definitions do not meet).
fn portal() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    8_600_000 + N.fetch_add(1, Ordering::SeqCst)
}

async fn connected(app: &TestApp) -> Tenant {
    let id = app.tenant();
    let admin = app.token(&id, Role::Admin);
    let member = app.token(&id, Role::Member);
    let portal = portal();
    let email = format!("sync-config-{portal}@sandbox.test");
    app.sandbox()
        .add_oauth_user(OAuthUser {
            hub_id: portal,
            ..OAuthUser::new(OAuthProvider::Hubspot, email.clone())
        })
        .expect("sandbox user");
    let out = app
        .oauth_connect(
            &admin,
            "hubspot",
            json!({ "return_to": RETURN_TO }),
            &format!("login_hint={email}"),
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    Tenant {
        connection: out.connection_id.expect("connection id").to_string(),
        id,
        admin,
        member,
        portal,
    }
}

fn config_body(t: &Tenant, extra: Value) -> Value {
    let mut body = json!({
        "connection_id": t.connection,
        "direction": "bidirectional",
        "frequency": {"type": "hourly"},
        "entities": ["contacts"],
        "conflict_strategy": "last_write_wins",
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

async fn create(app: &TestApp, t: &Tenant, extra: Value) -> Value {
    let (status, c) = app.post(CONFIGS, &t.admin, config_body(t, extra)).await;
    assert_eq!(status, 201, "{c}");
    c
}

fn id(c: &Value) -> String {
    c["id"].as_str().expect("config id").to_owned()
}

fn path(c: &Value, rest: &str) -> String {
    format!("{CONFIGS}/{}{rest}", id(c))
}

/// The config's schedule as moto holds it: (group, expression, state, target ARN,
/// role ARN, input, flexible window mode).
#[derive(Debug)]
struct Schedule {
    group: String,
    expression: String,
    state: String,
    target_arn: String,
    role_arn: String,
    dead_letter_arn: Option<String>,
    input: Value,
    window: String,
}

async fn schedule(app: &TestApp, config_id: &str) -> Option<Schedule> {
    let client = aws_sdk_scheduler::Client::new(&app.app().aws);
    let list = client
        .list_schedules()
        .name_prefix(config_id)
        .send()
        .await
        .expect("list schedules");
    let group = list
        .schedules()
        .iter()
        .find(|s| s.name() == Some(config_id))?
        .group_name()?
        .to_owned();
    let s = client
        .get_schedule()
        .group_name(&group)
        .name(config_id)
        .send()
        .await
        .expect("get schedule");
    let target = s.target().expect("target");
    Some(Schedule {
        group,
        expression: s.schedule_expression().unwrap_or_default().to_owned(),
        state: s.state().map(|x| x.as_str().to_owned()).unwrap_or_default(),
        target_arn: target.arn().to_owned(),
        role_arn: target.role_arn().to_owned(),
        dead_letter_arn: target
            .dead_letter_config()
            .and_then(|d| d.arn())
            .map(str::to_owned),
        input: serde_json::from_str(target.input().unwrap_or("null")).expect("input JSON"),
        window: s
            .flexible_time_window()
            .map(|w| w.mode().as_str().to_owned())
            .unwrap_or_default(),
    })
}

fn pairs(mappings: &Value) -> Vec<(String, String)> {
    mappings
        .as_array()
        .expect("mappings array")
        .iter()
        .map(|m| {
            (
                m["app_field"].as_str().unwrap_or_default().to_owned(),
                m["crm_field"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn detail_fields(err: &Value) -> Vec<String> {
    err["error"]["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|x| x["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_config_gets_default_mappings_and_an_enabled_schedule() {
    let app = TestApp::spawn().await;
    let t = connected(&app).await;
    let (status, c) = app
        .post(
            CONFIGS,
            &t.admin,
            config_body(&t, json!({"entities": ["contacts", "companies"]})),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["status"], "active");
    assert_eq!(c["provider"], "hubspot");
    assert_eq!(c["name"], "HubSpot contacts and companies");
    assert_eq!(c["version"], 1);
    assert_eq!(
        c["options"],
        json!({"create_missing": true, "propagate_deletes": false})
    );
    let got = pairs(&c["mappings"]);
    for want in [
        ("email", "email"),
        ("first_name", "firstname"),
        ("last_name", "lastname"),
        ("company_name", "company"),
        ("birth_date", "date_of_birth"),
        ("name", "name"),
        ("domain", "domain"),
        ("employees", "numberofemployees"),
    ] {
        assert!(
            got.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} in {got:?}"
        );
    }
    assert!(
        !got.iter()
            .any(|(_, crm)| crm == "hs_object_id" || crm == "conduit_id"),
        "no bookkeeping field is mapped: {got:?}"
    );
    assert!(
        c["mappings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"].as_str().is_some_and(|i| i.starts_with("fmap_"))
                && m["direction"] == "bidirectional")
    );

    // The schedule: hourly, enabled, invoking the sync trigger with the config.
    let s = schedule(&app, &id(&c)).await.expect("a schedule exists");
    assert_eq!(s.expression, "rate(1 hour)");
    assert_eq!(s.state, "ENABLED");
    assert_eq!(s.window, "OFF");
    assert!(s.group.ends_with("-sync"), "{s:?}");
    assert!(s.target_arn.ends_with("-sync-runs"), "{s:?}");
    assert!(s.target_arn.starts_with("arn:aws:lambda:"), "{s:?}");
    assert!(s.role_arn.contains(":role/"), "{s:?}");
    // What the target cannot deliver goes to the stack's schedule dead-letter queue.
    assert!(
        s.dead_letter_arn
            .as_deref()
            .is_some_and(|a| a.starts_with("arn:aws:sqs:") && a.contains("ScheduleDeadLetterQueue")),
        "{s:?}"
    );
    assert_eq!(
        s.input,
        json!({"source": "conduit.schedule", "tenant": t.id, "config_id": id(&c)})
    );
    assert_eq!(c["schedule"]["expression"], "rate(1 hour)");
    assert_eq!(c["schedule"]["state"], "enabled");

    // Members read: the list (all, and by connection) and the config with its ETag.
    let (status, list) = app.get(CONFIGS, &t.member).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["configs"].as_array().map(Vec::len), Some(1));
    let (_, by_conn) = app
        .get(
            &format!("{CONFIGS}?connection_id={}", t.connection),
            &t.member,
        )
        .await;
    assert_eq!(by_conn["configs"][0]["id"], c["id"]);
    let other = conduit::domain::ConnectionId::generate();
    let (_, none) = app
        .get(&format!("{CONFIGS}?connection_id={other}"), &t.member)
        .await;
    assert_eq!(none["configs"], json!([]));
    let (status, got) = app.get(&path(&c, ""), &t.member).await;
    assert_eq!(status, 200);
    assert_eq!(got["mappings"], c["mappings"]);

    // One config per CRM object of a connection: a second one would duplicate records.
    let (status, err) = app
        .post(CONFIGS, &t.admin, config_body(&t, json!({})))
        .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "entity_already_synced");

    let actions = app.audit_actions(&t.id).await;
    assert!(actions.contains(&("sync_config.create".into(), "success".into())));
}

#[tokio::test]
async fn changes_pause_resume_and_delete_keep_the_schedule_in_step() {
    let app = TestApp::spawn().await;
    let t = connected(&app).await;
    let c = create(
        &app,
        &t,
        json!({"frequency": {"type": "daily", "at": "02:30"}, "name": "Nightly"}),
    )
    .await;
    let cid = id(&c);
    assert_eq!(
        schedule(&app, &cid).await.expect("schedule").expression,
        "cron(30 2 * * ? *)"
    );

    // If-Match: a stale version is refused and changes nothing.
    let (status, _) = app
        .send_with(
            "PATCH",
            &path(&c, ""),
            &t.admin,
            Some(json!({"frequency": {"type": "hourly"}})),
            &[("if-match", "\"7\"")],
        )
        .await;
    assert_eq!(status, 412);
    let (status, c2) = app
        .send_with(
            "PATCH",
            &path(&c, ""),
            &t.admin,
            Some(
                json!({"frequency": {"type": "realtime"}, "conflict_strategy": "crm_wins",
                        "options": {"propagate_deletes": true}}),
            ),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, 200, "{c2}");
    assert_eq!(c2["version"], 2);
    assert_eq!(c2["conflict_strategy"], "crm_wins");
    assert_eq!(c2["options"]["propagate_deletes"], true);
    assert_eq!(c2["options"]["create_missing"], true);
    assert_eq!(c2["name"], "Nightly");
    assert_eq!(
        schedule(&app, &cid).await.expect("schedule").expression,
        "rate(1 minute)"
    );

    // Pause disables the schedule; pausing again changes nothing.
    let (status, paused) = app.post(&path(&c, "/pause"), &t.admin, json!({})).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["schedule"]["state"], "disabled");
    assert_eq!(
        schedule(&app, &cid).await.expect("schedule").state,
        "DISABLED"
    );
    let (_, again) = app.post(&path(&c, "/pause"), &t.admin, json!({})).await;
    assert_eq!(again["version"], paused["version"], "idempotent");
    // A change while paused keeps it disabled.
    let (_, renamed) = app
        .patch(
            &path(&c, ""),
            &t.admin,
            json!({"frequency": {"type": "hourly"}}),
        )
        .await;
    assert_eq!(renamed["status"], "paused");
    let s = schedule(&app, &cid).await.expect("schedule");
    assert_eq!(
        (s.expression.as_str(), s.state.as_str()),
        ("rate(1 hour)", "DISABLED")
    );
    let (status, resumed) = app.post(&path(&c, "/resume"), &t.admin, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(resumed["status"], "active");
    assert_eq!(
        schedule(&app, &cid).await.expect("schedule").state,
        "ENABLED"
    );

    // Manual: no schedule; back to daily: a schedule again.
    let (_, manual) = app
        .patch(
            &path(&c, ""),
            &t.admin,
            json!({"frequency": {"type": "manual"}}),
        )
        .await;
    assert_eq!(manual["schedule"], Value::Null);
    assert!(
        manual.get("schedule_name").is_none_or(Value::is_null),
        "{manual}"
    );
    assert!(
        schedule(&app, &cid).await.is_none(),
        "manual configs have no schedule"
    );
    let (_, daily) = app
        .patch(
            &path(&c, ""),
            &t.admin,
            json!({"frequency": {"type": "daily", "at": "23:05"}}),
        )
        .await;
    assert_eq!(daily["schedule"]["expression"], "cron(5 23 * * ? *)");
    assert_eq!(
        schedule(&app, &cid).await.expect("schedule").expression,
        "cron(5 23 * * ? *)"
    );

    // Delete: a stale If-Match is refused; then the schedule and the config go.
    let (status, _) = app
        .send_with(
            "DELETE",
            &path(&c, ""),
            &t.admin,
            None,
            &[("if-match", "1")],
        )
        .await;
    assert_eq!(status, 412);
    assert!(schedule(&app, &cid).await.is_some());
    let (status, _) = app.delete(&path(&c, ""), &t.admin).await;
    assert_eq!(status, 204);
    assert!(schedule(&app, &cid).await.is_none());
    let (status, _) = app.get(&path(&c, ""), &t.admin).await;
    assert_eq!(status, 404);
    // The connection's contacts are free for a new config.
    create(&app, &t, json!({"frequency": {"type": "manual"}})).await;

    let actions = app.audit_actions(&t.id).await;
    for action in [
        "sync_config.update",
        "sync_config.pause",
        "sync_config.resume",
        "sync_config.delete",
    ] {
        assert!(
            actions.contains(&(action.into(), "success".into())),
            "{action}: {actions:?}"
        );
    }
}

#[tokio::test]
async fn available_fields_auto_map_and_field_mappings() {
    let app = TestApp::spawn().await;
    let t = connected(&app).await;
    let c = create(
        &app,
        &t,
        json!({"frequency": {"type": "manual"},
               "mappings": [{"entity": "contacts", "crm_field": "email", "app_field": "email"}]}),
    )
    .await;
    assert_eq!(
        pairs(&c["mappings"]),
        vec![("email".into(), "email".into())]
    );

    let (status, fields) = app
        .get(&path(&c, "/available-fields?entity=contacts"), &t.member)
        .await;
    assert_eq!(status, 200, "{fields}");
    let crm = fields["crm_fields"].as_array().unwrap();
    let email = crm.iter().find(|f| f["name"] == "email").expect("email");
    assert_eq!(email["mapped_to"], "email");
    assert_eq!(email["type"], "email");
    let first = crm
        .iter()
        .find(|f| f["name"] == "firstname")
        .expect("firstname");
    assert_eq!(first["mapped_to"], Value::Null);
    assert_eq!(first["label"], "First Name");
    let id_field = crm
        .iter()
        .find(|f| f["name"] == "hs_object_id")
        .expect("id");
    assert_eq!(id_field["system"], true);
    assert_eq!(id_field["writable"], false);
    assert!(!crm.iter().any(|f| f["name"] == "conduit_id"));
    let app_fields = fields["app_fields"].as_array().unwrap();
    let app_email = app_fields.iter().find(|f| f["name"] == "email").unwrap();
    assert_eq!(app_email["mapped_from"], "email");
    assert_eq!(app_fields.len(), Entity::Contacts.fields().len());
    let (status, _) = app.get(&path(&c, "/available-fields"), &t.member).await;
    assert_eq!(status, 400, "entity is required");

    // Auto-map fills in the rest, leaving the existing mapping alone.
    let (status, mapped) = app
        .post(
            &path(&c, "/auto-map"),
            &t.admin,
            json!({"entity": "contacts"}),
        )
        .await;
    assert_eq!(status, 200, "{mapped}");
    let added = pairs(&mapped["added"]);
    assert!(
        added.contains(&("first_name".into(), "firstname".into())),
        "{added:?}"
    );
    assert!(!added.iter().any(|(a, _)| a == "email"), "{added:?}");
    assert!(
        mapped["unmatched_app_fields"]
            .as_array()
            .unwrap()
            .contains(&json!("department"))
    );
    let (_, again) = app
        .post(
            &path(&c, "/auto-map"),
            &t.admin,
            json!({"entity": "contacts"}),
        )
        .await;
    assert_eq!(again["added"], json!([]), "nothing left to map");
    let (status, err) = app
        .post(
            &path(&c, "/auto-map"),
            &t.admin,
            json!({"entity": "companies"}),
        )
        .await;
    assert_eq!(
        (status, detail_fields(&err)),
        (400, vec!["entity".to_owned()])
    );

    // Add one mapping with a transform; change it; a bad change stores nothing.
    let (status, m) = app
        .post(
            &path(&c, "/field-mappings"),
            &t.admin,
            json!({"entity": "contacts", "crm_field": "jobtitle", "app_field": "notes",
                   "direction": "pull", "transform": "trim | upper"}),
        )
        .await;
    assert_eq!(status, 201, "{m}");
    let mid = m["id"].as_str().unwrap().to_owned();
    let mpath = path(&c, &format!("/field-mappings/{mid}"));
    let (status, changed) = app
        .patch(
            &mpath,
            &t.admin,
            json!({"transform": "concat(firstname, \" \", lastname)"}),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["transform"], "concat(firstname, \" \", lastname)");
    let (_, before) = app.get(&path(&c, ""), &t.admin).await;
    for bad in [
        json!({"transform": "concat(nope)"}),
        json!({"transform": "explode()"}),
        json!({"crm_field": "no_such_property"}),
        json!({"app_field": "email"}),
        json!({"direction": "push", "crm_field": "hs_object_id", "app_field": "notes"}),
    ] {
        let (status, err) = app.patch(&mpath, &t.admin, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {err}");
        assert_eq!(err["error"]["code"], "invalid_fields", "{bad}");
    }
    let (_, after) = app.get(&path(&c, ""), &t.admin).await;
    assert_eq!(after, before, "refused changes store nothing");

    // Lists by entity; removing transforms with null.
    let (status, list) = app
        .get(&path(&c, "/field-mappings?entity=contacts"), &t.member)
        .await;
    assert_eq!(status, 200);
    assert!(
        list["mappings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == mid.as_str())
    );
    let (_, cleared) = app
        .patch(&mpath, &t.admin, json!({"transform": null}))
        .await;
    assert!(cleared.get("transform").is_none(), "{cleared}");

    // Batch add: every problem listed, nothing stored.
    let (_, after) = app.get(&path(&c, ""), &t.admin).await;
    let (status, err) = app
        .post(
            &path(&c, "/field-mappings"),
            &t.admin,
            json!({"mappings": [
                {"entity": "contacts", "crm_field": "city", "app_field": "department"},
                {"entity": "contacts", "crm_field": "nope", "app_field": "department"},
                {"entity": "companies", "crm_field": "name", "app_field": "name"},
            ]}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    let fields = detail_fields(&err);
    assert!(
        fields.contains(&"mappings[1].crm_field".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"mappings[2].entity".to_owned()),
        "{fields:?}"
    );
    let (_, unchanged) = app.get(&path(&c, ""), &t.admin).await;
    assert_eq!(unchanged["version"], after["version"]);

    // Delete the mapping; replace re-maps the whole entity from scratch.
    let (status, _) = app.delete(&mpath, &t.admin).await;
    assert_eq!(status, 204);
    let (status, _) = app.delete(&mpath, &t.admin).await;
    assert_eq!(status, 404);
    let (status, replaced) = app
        .post(
            &path(&c, "/auto-map"),
            &t.admin,
            json!({"entity": "contacts", "replace": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(pairs(&replaced["mappings"]).contains(&("email".into(), "email".into())));

    let actions = app.audit_actions(&t.id).await;
    assert!(actions.contains(&("sync_config.mappings".into(), "success".into())));
    assert!(actions.contains(&("sync_config.auto_map".into(), "success".into())));
}

#[tokio::test]
async fn preview_maps_real_crm_records_through_the_transforms_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let t = connected(&app).await;
    app.sandbox().seed_hubspot(t.portal, CrmObject::Contacts, 8);
    let c = create(
        &app,
        &t,
        json!({"frequency": {"type": "manual"}, "mappings": [
            {"entity": "contacts", "crm_field": "email", "app_field": "email"},
            {"entity": "contacts", "crm_field": "firstname", "app_field": "first_name",
             "transform": "upper"},
            {"entity": "contacts", "crm_field": "lastname", "app_field": "last_name"},
            {"entity": "contacts", "crm_field": "jobtitle", "app_field": "notes",
             "direction": "pull", "transform": "concat(firstname, \" \", lastname) | lower"},
            {"entity": "contacts", "crm_field": "city", "app_field": "city",
             "direction": "push"},
            {"entity": "contacts", "crm_field": "lifecyclestage", "app_field": "lifecycle_stage"},
        ]}),
    )
    .await;
    let before = app.sandbox().hubspot_records(t.portal, CrmObject::Contacts);

    let (status, p) = app
        .post(
            &path(&c, "/preview"),
            &t.member,
            json!({"entity": "contacts", "limit": 3}),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    let records = p["records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    for r in records {
        let crm_id = r["crm_id"].as_str().unwrap();
        let held = before
            .iter()
            .find(|x| x.id == crm_id)
            .expect("a real record");
        let prop = |k: &str| held.properties.get(k).cloned().unwrap_or_default();
        assert_eq!(r["crm"]["email"], prop("email").as_str());
        assert_eq!(r["app"]["email"], prop("email").as_str());
        assert_eq!(
            r["app"]["first_name"],
            prop("firstname").to_uppercase().as_str()
        );
        assert_eq!(r["app"]["last_name"], prop("lastname").as_str());
        assert_eq!(
            r["app"]["notes"],
            format!("{} {}", prop("firstname"), prop("lastname"))
                .to_lowercase()
                .as_str()
        );
        assert!(
            r["app"].get("city").is_none(),
            "push-only fields are not pulled: {r}"
        );
    }
    assert_eq!(p["unmapped_required"], json!([]));
    assert!(p["warnings"].is_array());

    // The config's filters apply.
    let (status, _) = app
        .patch(
            &path(&c, ""),
            &t.admin,
            json!({"filters": [{"entity": "contacts", "field": "lifecyclestage",
                                "operator": "eq", "value": "customer"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, p) = app
        .post(
            &path(&c, "/preview"),
            &t.admin,
            json!({"entity": "contacts", "limit": 20}),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    let customers = before
        .iter()
        .filter(|r| r.properties.get("lifecyclestage").map(String::as_str) == Some("customer"))
        .count();
    let shown = p["records"].as_array().unwrap();
    assert_eq!(shown.len(), customers, "{p}");
    assert!(
        shown
            .iter()
            .all(|r| r["crm"]["lifecyclestage"] == "customer")
    );

    // Bad previews.
    for (body, field) in [
        (json!({"entity": "contacts", "limit": 21}), "limit"),
        (json!({"entity": "contacts", "limit": 0}), "limit"),
        (json!({"entity": "companies"}), "entity"),
    ] {
        let (status, err) = app.post(&path(&c, "/preview"), &t.admin, body).await;
        assert_eq!(
            (status, detail_fields(&err)),
            (400, vec![field.to_owned()]),
            "{err}"
        );
    }

    // Nothing was written: no app records, the CRM's records untouched, the config
    // at the version the filter change gave it.
    let tenant = TenantId::parse(&t.id).unwrap();
    let table = app.app().table;
    for entity in Entity::ALL {
        let page = conduit::sync::records::Records::new(table.clone())
            .scan_partition(&tenant, entity, 100, None)
            .await
            .expect("query");
        assert!(page.items.is_empty(), "{entity}: {:?}", page.items);
    }
    assert_eq!(
        app.sandbox().hubspot_records(t.portal, CrmObject::Contacts),
        before
    );
    let (_, now) = app.get(&path(&c, ""), &t.admin).await;
    assert_eq!(now["version"], 2);
}

#[tokio::test]
async fn bad_configurations_and_mappings_are_refused_with_nothing_stored() {
    let app = TestApp::spawn().await;
    let t = connected(&app).await;
    let items = app.config_items(&t.id).await;
    let m = |crm: &str, app_field: &str| json!({"entity": "contacts", "crm_field": crm, "app_field": app_field});
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"mappings": [m("no_such_field", "email")]}),
            vec!["mappings[0].crm_field"],
        ),
        (
            json!({"mappings": [m("email", "no_such_app_field")]}),
            vec!["mappings[0].app_field"],
        ),
        (
            json!({"mappings": [m("date_of_birth", "email")]}),
            vec!["mappings[0].crm_field"],
        ),
        (
            json!({"mappings": [m("email", "email"), m("firstname", "email")]}),
            vec!["mappings[1].app_field"],
        ),
        (
            json!({"mappings": [m("email", "email"), m("email", "notes")]}),
            vec!["mappings[1].crm_field"],
        ),
        (
            json!({"mappings": [{"entity": "contacts", "crm_field": "email", "app_field": "email",
                                 "transform": "concat("}]}),
            vec!["mappings[0].transform"],
        ),
        (
            json!({"mappings": [{"entity": "contacts", "crm_field": "hs_object_id",
                                 "app_field": "notes", "direction": "push"}]}),
            vec!["mappings[0].direction"],
        ),
        (
            json!({"mappings": [m("conduit_id", "notes")]}),
            vec!["mappings[0].crm_field"],
        ),
        (
            json!({"frequency": {"type": "daily", "at": "25:00"}}),
            vec!["frequency.at"],
        ),
        (json!({"entities": []}), vec!["entities"]),
        (
            json!({"entities": ["contacts", "contacts"]}),
            vec!["entities[1]"],
        ),
        (json!({"name": ""}), vec!["name"]),
        (
            json!({"filters": [{"entity": "contacts", "field": "nope", "operator": "eq", "value": "x"}]}),
            vec!["filters[0].field"],
        ),
        (
            json!({"filters": [{"entity": "contacts", "field": "lifecyclestage", "operator": "eq",
                                "value": "not-a-stage"}]}),
            vec!["filters[0].value"],
        ),
        (
            json!({"filters": [{"entity": "companies", "field": "name", "operator": "in"}]}),
            vec!["filters[0].entity", "filters[0].values"],
        ),
        (
            json!({"connection_id": conduit::domain::ConnectionId::generate().to_string()}),
            vec!["connection_id"],
        ),
        (json!({"connection_id": "not-an-id"}), vec!["connection_id"]),
    ];
    for (extra, want) in cases {
        let (status, err) = app
            .post(CONFIGS, &t.admin, config_body(&t, extra.clone()))
            .await;
        assert_eq!(status, 400, "{extra}: {err}");
        assert_eq!(err["error"]["code"], "invalid_fields", "{extra}: {err}");
        let got = detail_fields(&err);
        for w in want {
            assert!(got.contains(&w.to_owned()), "{extra}: {w} not in {got:?}");
        }
    }
    // Every problem at once.
    let (status, err) = app
        .post(
            CONFIGS,
            &t.admin,
            config_body(
                &t,
                json!({"frequency": {"type": "daily", "at": "7"},
                       "mappings": [m("nope", "email"), m("email", "nope")]}),
            ),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        detail_fields(&err),
        vec![
            "frequency.at",
            "mappings[0].crm_field",
            "mappings[1].app_field"
        ]
    );
    // Malformed bodies.
    for body in [
        json!({"connection_id": t.connection, "direction": "sideways", "frequency": {"type": "hourly"},
               "entities": ["contacts"], "conflict_strategy": "crm_wins"}),
        json!({"connection_id": t.connection, "direction": "push", "frequency": {"type": "weekly"},
               "entities": ["contacts"], "conflict_strategy": "crm_wins"}),
        json!({"connection_id": t.connection, "direction": "push", "frequency": {"type": "hourly"},
               "entities": ["tickets"], "conflict_strategy": "crm_wins"}),
    ] {
        let (status, err) = app.post(CONFIGS, &t.admin, body.clone()).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("invalid_body")),
            "{body}"
        );
    }
    // Unknown keys, named by their path.
    let body = json!({"connection_id": t.connection, "direction": "push", "frequency": {"type": "hourly"},
           "entities": ["contacts"], "conflict_strategy": "crm_wins", "bogus": 1});
    let (status, err) = app.post(CONFIGS, &t.admin, body).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_fields")),
        "{err}"
    );
    assert_eq!(err["error"]["details"][0]["field"], "bogus");

    let (_, list) = app.get(CONFIGS, &t.admin).await;
    assert_eq!(list["configs"], json!([]));
    assert_eq!(app.config_items(&t.id).await, items, "nothing was stored");

    // A provider Conduit does not sync, and a connection that is not connected.
    let (status, zd) = app
        .post(
            "/v1/connections",
            &t.admin,
            zendesk("zd-sandbox-token-0001"),
        )
        .await;
    assert_eq!(status, 201, "{zd}");
    let items = app.config_items(&t.id).await;
    let mut body = config_body(&t, json!({}));
    body["connection_id"] = zd["id"].clone();
    let (status, err) = app.post(CONFIGS, &t.admin, body).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("provider_not_syncable"))
    );
    let (status, _) = app
        .post(
            &format!("/v1/connections/{}/deactivate", t.connection),
            &t.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, err) = app
        .post(CONFIGS, &t.admin, config_body(&t, json!({})))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("connection_unusable"))
    );

    let (_, list) = app.get(CONFIGS, &t.admin).await;
    assert_eq!(list["configs"], json!([]));
    assert_eq!(app.config_items(&t.id).await, items, "nothing was stored");
}

#[tokio::test]
async fn tenants_are_isolated_and_members_only_read() {
    let app = TestApp::spawn().await;
    let a = connected(&app).await;
    let b = connected(&app).await;
    let c = create(&app, &a, json!({"frequency": {"type": "manual"}})).await;

    // Another tenant neither sees nor touches it, nor uses the connection.
    let (_, list) = app.get(CONFIGS, &b.admin).await;
    assert_eq!(list["configs"], json!([]));
    for (method, rest, body) in [
        ("GET", "", None),
        ("PATCH", "", Some(json!({"name": "mine"}))),
        ("POST", "/pause", Some(json!({}))),
        ("GET", "/field-mappings", None),
        ("GET", "/available-fields?entity=contacts", None),
        ("POST", "/auto-map", Some(json!({"entity": "contacts"}))),
        ("POST", "/preview", Some(json!({"entity": "contacts"}))),
        ("DELETE", "", None),
    ] {
        let (status, _) = app.send(method, &path(&c, rest), &b.admin, body).await;
        assert_eq!(status, 404, "{method} {rest}");
    }
    let mut body = config_body(&a, json!({}));
    body["connection_id"] = json!(a.connection);
    let (status, err) = app.post(CONFIGS, &b.admin, body).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(detail_fields(&err), vec!["connection_id"]);

    // Members read (a preview reads too); every write is refused and audited.
    let (status, _) = app.get(&path(&c, ""), &a.member).await;
    assert_eq!(status, 200);
    let (status, p) = app
        .post(
            &path(&c, "/preview"),
            &a.member,
            json!({"entity": "contacts"}),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    let mapping = c["mappings"][0]["id"].as_str().unwrap().to_owned();
    for (method, rest, body) in [
        ("PATCH", String::new(), Some(json!({"name": "x"}))),
        ("DELETE", String::new(), None),
        ("POST", "/pause".to_owned(), Some(json!({}))),
        ("POST", "/resume".to_owned(), Some(json!({}))),
        (
            "POST",
            "/auto-map".to_owned(),
            Some(json!({"entity": "contacts"})),
        ),
        (
            "POST",
            "/field-mappings".to_owned(),
            Some(json!({"entity": "contacts", "crm_field": "city", "app_field": "city"})),
        ),
        (
            "PATCH",
            format!("/field-mappings/{mapping}"),
            Some(json!({"direction": "pull"})),
        ),
        ("DELETE", format!("/field-mappings/{mapping}"), None),
    ] {
        let (status, err) = app.send(method, &path(&c, &rest), &a.member, body).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {rest}"
        );
    }
    let (status, _) = app
        .post(CONFIGS, &a.member, config_body(&a, json!({})))
        .await;
    assert_eq!(status, 403);
    let denied = app
        .audit_actions(&a.id)
        .await
        .into_iter()
        .filter(|(action, outcome)| action.starts_with("sync_config.") && outcome == "denied")
        .count();
    assert_eq!(denied, 9);
    let (_, unchanged) = app.get(&path(&c, ""), &a.admin).await;
    assert_eq!(unchanged["version"], 1);
}

#[tokio::test]
async fn sample_events_invoke_the_sync_config_function() {
    let app = TestApp::spawn().await;
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events/sync-config");
    let expected = [
        ("list-configs.json", 200),
        ("create-config.json", 201),
        ("get-config-bad-id.json", 400),
        ("member-create-forbidden.json", 403),
        ("auto-map-unknown-config.json", 404),
        ("list-field-mappings-unknown-config.json", 404),
    ];
    // The samples act in tenant "demo": give it a connected HubSpot, and point the
    // create at it (as written, the sample's placeholder connection is a 400).
    let demo = {
        let admin = app.token("demo", Role::Admin);
        let portal = portal();
        let email = format!("sync-config-demo-{portal}@sandbox.test");
        app.sandbox()
            .add_oauth_user(OAuthUser {
                hub_id: portal,
                ..OAuthUser::new(OAuthProvider::Hubspot, email.clone())
            })
            .expect("sandbox user");
        let out = app
            .oauth_connect(
                &admin,
                "hubspot",
                json!({ "return_to": RETURN_TO }),
                &format!("login_hint={email}"),
            )
            .await;
        out.connection_id.expect("connected").to_string()
    };
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let status = expected
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("no expectation for events/sync-config/{name}"));
        let mut event: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if name == "create-config.json" {
            let mut body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
            body["connection_id"] = json!(demo);
            event["body"] = json!(body.to_string());
        }
        let resp = app.invoke("SyncConfigFunction", &event).await;
        assert_eq!(resp["statusCode"], status, "{name}: {resp}");
        seen += 1;
    }
    assert_eq!(seen, expected.len());
}

/// Runs the sync-config handler in-process on `event` (an API Gateway payload from
/// events/), as tenant `tenant`'s admin, with the function's settings changed by
/// `settings`.
async fn invoke_with_settings(
    app: &TestApp,
    tenant: &str,
    mut event: Value,
    settings: &[(&str, &str)],
) -> (u16, Value) {
    let mut fn_app = app.app();
    for (k, v) in settings {
        fn_app.config.env.insert((*k).to_owned(), (*v).to_owned());
    }
    event["requestContext"]["authorizer"]["jwt"]["claims"]["tenant_id"] = json!(tenant);
    let req = devhost::event::parse_request(&event.to_string()).expect("request");
    let resp = sync_config::handle(&fn_app, req).await.expect("infallible");
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap_or(Value::Null);
    (status, body)
}

fn sample(name: &str) -> Value {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../events/sync-config")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("sample event")).expect("JSON")
}

#[tokio::test]
async fn a_failed_schedule_change_leaves_the_config_as_it_was() {
    let app = TestApp::spawn().await;
    let t = connected(&app).await;
    // The scheduler refuses: the group does not exist.
    let broken = [
        ("CONDUIT_SYNC_SCHEDULE_GROUP", "no-such-group"),
        (
            "CONDUIT_SYNC_SCHEDULER_ROLE_ARN",
            "arn:aws:iam::123456789012:role/r",
        ),
        (
            "CONDUIT_SYNC_RUNS_ARN",
            "arn:aws:lambda:us-east-1:123456789012:function:x-sync-runs",
        ),
        (
            "CONDUIT_SYNC_SCHEDULE_DLQ_ARN",
            "arn:aws:sqs:us-east-1:123456789012:x-schedule-dlq",
        ),
    ];

    // A create whose schedule fails is taken back.
    let mut create = sample("create-config.json");
    let mut body: Value = serde_json::from_str(create["body"].as_str().unwrap()).unwrap();
    body["connection_id"] = json!(t.connection);
    create["body"] = json!(body.to_string());
    let (status, err) = invoke_with_settings(&app, &t.id, create, &broken).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (502, Some("scheduler_unavailable")),
        "{err}"
    );
    let (_, list) = app.get(CONFIGS, &t.admin).await;
    assert_eq!(list["configs"], json!([]), "the config was taken back");
    let actions = app.audit_actions(&t.id).await;
    assert!(actions.contains(&("sync_config.create".into(), "failure".into())));

    // A change whose schedule fails is undone (as a new version).
    let c = create_manual(&app, &t).await;
    let mut patch = sample("get-config-bad-id.json");
    let p = path(&c, "");
    patch["routeKey"] = json!("PATCH /v1/sync/configs/{id}");
    patch["requestContext"]["routeKey"] = patch["routeKey"].clone();
    patch["requestContext"]["http"]["method"] = json!("PATCH");
    patch["rawPath"] = json!(p);
    patch["requestContext"]["http"]["path"] = json!(p);
    patch["pathParameters"]["id"] = json!(id(&c));
    patch["requestContext"]["authorizer"]["jwt"]["claims"]["role"] = json!("admin");
    patch["body"] = json!(json!({"frequency": {"type": "hourly"}}).to_string());
    let (status, err) = invoke_with_settings(&app, &t.id, patch, &broken).await;
    assert_eq!(status, 502, "{err}");
    let (_, now) = app.get(&path(&c, ""), &t.admin).await;
    assert_eq!(now["frequency"], json!({"type": "manual"}));
    assert_eq!(now["version"], 3, "changed, then changed back");
    assert!(schedule(&app, &id(&c)).await.is_none());
    // With the scheduler working, the same change goes through.
    let (status, ok) = app
        .patch(
            &path(&c, ""),
            &t.admin,
            json!({"frequency": {"type": "hourly"}}),
        )
        .await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(
        schedule(&app, &id(&c)).await.expect("schedule").expression,
        "rate(1 hour)"
    );
}

async fn create_manual(app: &TestApp, t: &Tenant) -> Value {
    create(app, t, json!({"frequency": {"type": "manual"}})).await
}

#[tokio::test]
async fn salesforce_configs_map_by_describe_and_flag_required_fields() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let n = portal();
    let org = format!("00DSC{n:010}AAA");
    let email = format!("sync-config-sf-{n}@sandbox.test");
    app.sandbox()
        .add_oauth_user(OAuthUser {
            org_id: org.clone(),
            ..OAuthUser::new(OAuthProvider::Salesforce, email.clone())
        })
        .expect("sandbox user");
    let out = app
        .oauth_connect(
            &admin,
            "salesforce",
            json!({ "return_to": RETURN_TO }),
            &format!("login_hint={email}"),
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    app.sandbox().seed_salesforce(&org, SfObject::Contact, 4);

    let (status, c) = app
        .post(
            CONFIGS,
            &admin,
            json!({"connection_id": out.connection_id.expect("id").to_string(),
                   "direction": "pull", "frequency": {"type": "manual"},
                   "entities": ["contacts", "companies"], "conflict_strategy": "crm_wins",
                   "filters": [{"entity": "contacts", "field": "LeadSource", "operator": "in",
                                "values": ["Web", "Phone Inquiry", "Partner Referral", "Other"]}]}),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let got = pairs(&c["mappings"]);
    for want in [
        ("email", "Email"),
        ("first_name", "FirstName"),
        ("last_name", "LastName"),
        ("job_title", "Title"),
        ("city", "MailingCity"),
        ("lifecycle_stage", "LeadSource"),
        ("birth_date", "Birthdate"),
        ("name", "Name"),
        ("domain", "Website"),
        ("employees", "NumberOfEmployees"),
        ("city", "BillingCity"),
    ] {
        assert!(
            got.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} in {got:?}"
        );
    }
    assert!(
        !got.iter()
            .any(|(_, crm)| crm == "Conduit_Id__c" || crm == "Id")
    );

    let (status, p) = app
        .post(&path(&c, "/preview"), &admin, json!({"entity": "contacts"}))
        .await;
    assert_eq!(status, 200, "{p}");
    let held = app.sandbox().salesforce_records(&org, SfObject::Contact);
    let records = p["records"].as_array().unwrap();
    assert_eq!(records.len(), 4, "{p}");
    for r in records {
        let sf = held
            .iter()
            .find(|h| h.id == r["crm_id"].as_str().unwrap())
            .expect("a real record");
        assert_eq!(r["app"]["email"], sf.fields["Email"]);
        assert_eq!(r["app"]["last_name"], sf.fields["LastName"]);
    }
    assert_eq!(p["unmapped_required"], json!([]));

    // LastName is required on create: pulled only, nothing pushes it.
    let last = c["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["crm_field"] == "LastName")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app
        .patch(
            &path(&c, &format!("/field-mappings/{last}")),
            &admin,
            json!({"direction": "pull"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, p) = app
        .post(
            &path(&c, "/preview"),
            &admin,
            json!({"entity": "contacts", "limit": 1}),
        )
        .await;
    assert_eq!(p["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(p["unmapped_required"][0]["name"], "LastName", "{p}");
}
