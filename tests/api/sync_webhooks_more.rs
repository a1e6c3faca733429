//! Provider webhooks of the CRMs whose subscriptions Conduit makes and renews itself
//! (Zoho's notification channels): a change made in the CRM stand-in reaches the app's
//! records within seconds through the webhook alone (the runs that bring it are the
//! webhook's, `trigger: "webhook"`); forged, replayed and malformed notifications are
//! refused, audited and enqueue nothing; Conduit's own push does not echo back; the
//! channel follows the config (created, renewed before it expires by the every-minute
//! schedule, removed on pause and delete); its token is never stored or logged plain.

use std::time::Duration;

use conduit::store::{Keyed, keys};
use conduit::sync::schema::Entity;
use conduit::sync::subscriptions;
use scenarios::TestApp;
use serde_json::{Value, json};

use crate::sync_support::{self as s, Crm};
use crate::sync_webhooks::{
    app_contact, crm_changes_arrive, now_ms, post_hook, same_within, taken_deliveries, wait_for,
    webhook_count, webhook_runs,
};

const DAY_MS: i64 = 24 * 3600 * 1000;

fn refused(out: &(u16, Value)) -> (u16, Option<&str>) {
    (out.0, out.1["error"]["code"].as_str())
}

/// After refusals: nothing enqueued since `runs_before`, `denied` refusals audited,
/// and each secret in neither the store nor the logs.
pub(crate) async fn refusals_left_no_trace(
    app: &TestApp,
    t: &s::Tenant,
    config_id: &conduit::domain::SyncConfigId,
    runs_before: usize,
    denied: usize,
    secrets: &[&str],
) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        webhook_runs(app, t, config_id).await,
        runs_before,
        "nothing enqueued"
    );
    let audited = app
        .audit_actions(t.id.as_str())
        .await
        .into_iter()
        .filter(|(a, o)| a == "webhook.receive" && o == "denied")
        .count();
    assert_eq!(audited, denied, "each refusal audited");
    for secret in secrets {
        app.assert_secret_absent(secret, t.id.as_str()).await;
        assert!(
            !app.logs().contains(secret),
            "a webhook secret is never logged"
        );
    }
}

/// Waits until the webhook runs' counters reach `want` (a run writes its record before
/// it counts it), then checks they stay there.
async fn counts_settle(
    app: &TestApp,
    t: &s::Tenant,
    config_id: &conduit::domain::SyncConfigId,
    want: &[(&str, u64)],
) {
    wait_for(
        "the webhook runs' counts",
        Duration::from_secs(10),
        || async {
            let mut reached = true;
            for (counter, n) in want {
                reached &= webhook_count(app, t, config_id, counter).await >= *n;
            }
            reached
        },
    )
    .await;
    for (counter, n) in want {
        assert_eq!(
            webhook_count(app, t, config_id, counter).await,
            *n,
            "{counter}"
        );
    }
}

/// Pauses or resumes the config (`verb`).
async fn set_state(
    app: &TestApp,
    t: &s::Tenant,
    config_id: &conduit::domain::SyncConfigId,
    verb: &str,
) {
    let (status, body) = app
        .post(
            &format!("/v1/sync/configs/{config_id}/{verb}"),
            &t.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Creates app contact `i`, which the realtime push takes to the CRM, and waits until
/// its echo has come back and been read (counted skipped): its email and app record,
/// still the one record.
async fn echo_is_read_back(
    app: &TestApp,
    t: &s::Tenant,
    config_id: &conduit::domain::SyncConfigId,
    i: usize,
) -> (String, conduit::sync::records::Record) {
    let skipped_before = webhook_count(app, t, config_id, "skipped").await;
    let fields = s::app_fields(Entity::Contacts, i);
    let mine = s::app_create(app, t, Entity::Contacts, fields.clone()).await;
    let email = fields["email"].as_str().unwrap_or_default().to_owned();
    wait_for("the echo read back", Duration::from_secs(20), || async {
        webhook_count(app, t, config_id, "skipped").await > skipped_before
    })
    .await;
    let record = app_contact(app, t, &email)
        .await
        .expect("the app's contact");
    assert_eq!(record.id.as_str(), mine, "one record, the app's");
    (email, record)
}

#[tokio::test]
async fn zoho_changes_arrive_through_its_notification_channel_which_follows_the_config() {
    let app = TestApp::spawn().await;
    let t = s::connect(&app, "zoho").await;
    let Crm::Zoho(org) = t.crm.clone() else {
        unreachable!()
    };
    let config_id = realtime_config(&app, &t).await;

    // One channel: every operation on Contacts, to the config's route, with a token of
    // Conduit's, living (almost) the week Zoho allows.
    let channels = app.sandbox().zoho_channels(&org);
    assert_eq!(channels.len(), 1, "{channels:?}");
    let channel = &channels[0];
    assert_eq!(channel["events"], json!(["Contacts.all"]));
    let path = format!("/v1/webhooks/zoho/{}/{config_id}", t.id);
    assert_eq!(channel["notify_url"], format!("{}{path}", app.url()));
    let token = channel["token"].as_str().unwrap().to_owned();
    assert!((40..=50).contains(&token.len()), "{token}");
    let expiry = channel["expiry_ms"].as_i64().unwrap();
    assert!(expiry > now_ms() + 6 * DAY_MS && expiry <= now_ms() + 7 * DAY_MS);
    let channel_id = channel["channel_id"].as_str().unwrap().to_owned();
    s::run_ok(&app, &t, &config_id).await;

    // Created, changed and deleted in Zoho: in Conduit within seconds, by webhook runs.
    crm_changes_arrive(&app, &t, ("First_Name", "Hooked"), "contact").await;

    // Conduit's own create comes back as a notification and writes nothing.
    // The org's own records (the sandbox's call counters are shared with every
    // scenario running beside this one).
    let org_contacts = || {
        app.sandbox()
            .zoho_records(&org, sandbox::providers::zoho_crm::ZohoModule::Contacts)
            .len()
    };
    let inserts_before = org_contacts();
    let (mine_email, record) = echo_is_read_back(&app, &t, &config_id, 7).await;
    let version = record.version;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app_contact(&app, &t, &mine_email).await.unwrap().version,
        version,
        "the echo wrote nothing"
    );
    assert_eq!(
        org_contacts() - inserts_before,
        1,
        "one create, no echo pushed back"
    );

    counts_settle(
        &app,
        &t,
        &config_id,
        &[("created", 2), ("updated", 1), ("deleted", 1)],
    )
    .await;
    let ours = taken_deliveries(app.sandbox().zoho_notification_deliveries(), &path, 4);

    // Refused: a forged token, another channel, a replay, a body that is not a
    // notification; each audited, nothing enqueued.
    let runs_before = webhook_runs(&app, &t, &config_id).await;
    let json_type = [("content-type".to_owned(), "application/json".to_owned())];
    let mut forged: Value = serde_json::from_str(&ours[0].body).unwrap();
    forged["token"] = json!("x".repeat(token.len()));
    forged["server_time"] = json!(now_ms());
    let out = post_hook(&app, &path, &json_type, &forged.to_string()).await;
    assert_eq!(
        refused(&out),
        (401, Some("webhook_credentials_invalid")),
        "{}",
        out.1
    );
    let mut other: Value = serde_json::from_str(&ours[0].body).unwrap();
    other["channel_id"] = json!("1234567");
    other["server_time"] = json!(now_ms());
    let out = post_hook(&app, &path, &json_type, &other.to_string()).await;
    assert_eq!(
        refused(&out),
        (401, Some("webhook_credentials_invalid")),
        "{}",
        out.1
    );
    let out = post_hook(&app, &path, &json_type, &ours[0].body).await;
    assert_eq!(refused(&out), (401, Some("webhook_replayed")), "{}", out.1);
    let out = post_hook(&app, &path, &json_type, "{\"ids\": [").await;
    assert_eq!(refused(&out), (400, Some("webhook_malformed")), "{}", out.1);
    refusals_left_no_trace(&app, &t, &config_id, runs_before, 4, &[&token]).await;

    // Renewal: the every-minute schedule leaves a channel far from its expiry alone
    // and renews one that expires within a day.
    let group = app
        .local()
        .stack
        .ref_value("SyncScheduleGroup")
        .expect("the schedule group");
    // Judged by the org's channel (the sandbox's call counters are shared with every
    // scenario running beside this one).
    let channel_expiry = || {
        app.sandbox().zoho_channels(&org)[0]["expiry_ms"]
            .as_i64()
            .unwrap_or_default()
    };
    let before = channel_expiry();
    let fired = app
        .local()
        .fire_scheduler_schedule(&group, config_id.as_str())
        .await
        .expect("fired");
    assert!(fired.get("started").is_some(), "{fired}");
    assert_eq!(channel_expiry(), before, "not due");
    let mut reg = subscriptions::registration(&app.app(), &t.id, &config_id)
        .await
        .unwrap()
        .expect("the registration");
    assert_eq!(reg.hooks.get(&Entity::Contacts), Some(&channel_id));
    reg.expires.insert(Entity::Contacts, now_ms() + 3_600_000);
    app.app()
        .table
        .put(&Keyed {
            pk: keys::tenant(&t.id),
            sk: keys::webhook_registration(&config_id),
            item: &reg,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    app.local()
        .fire_scheduler_schedule(&group, config_id.as_str())
        .await
        .expect("fired");
    assert!(channel_expiry() > before, "renewed");
    let channels = app.sandbox().zoho_channels(&org);
    assert_eq!(channels.len(), 1, "the same channel, renewed: {channels:?}");
    assert_eq!(channels[0]["channel_id"], channel_id.as_str());
    assert!(channels[0]["expiry_ms"].as_i64().unwrap() > expiry);
    let reg = subscriptions::registration(&app.app(), &t.id, &config_id)
        .await
        .unwrap()
        .unwrap();
    assert!(reg.expires[&Entity::Contacts] > now_ms() + 6 * DAY_MS);

    // Paused: the channel is gone; resumed: a new one; deleted: gone again.
    set_state(&app, &t, &config_id, "pause").await;
    assert!(app.sandbox().zoho_channels(&org).is_empty());
    set_state(&app, &t, &config_id, "resume").await;
    let channels = app.sandbox().zoho_channels(&org);
    assert_eq!(channels.len(), 1);
    assert_ne!(
        channels[0]["channel_id"],
        channel_id.as_str(),
        "a new channel"
    );
    let (status, _) = app
        .delete(&format!("/v1/sync/configs/{config_id}"), &t.admin)
        .await;
    assert_eq!(status, 204);
    assert!(app.sandbox().zoho_channels(&org).is_empty());
}

/// A realtime config of `t` pulling and pushing contacts, made through the API (so its
/// webhooks are registered); its id.
pub(crate) async fn realtime_config(app: &TestApp, t: &s::Tenant) -> conduit::domain::SyncConfigId {
    realtime_config_of(app, t, json!(["contacts"])).await
}

/// A realtime config of `t` pulling and pushing `entities` (deletes propagated), made
/// through the API; its id.
pub(crate) async fn realtime_config_of(
    app: &TestApp,
    t: &s::Tenant,
    entities: serde_json::Value,
) -> conduit::domain::SyncConfigId {
    let (status, config) = app
        .post(
            "/v1/sync/configs",
            &t.admin,
            json!({
                "connection_id": t.conn,
                "direction": "bidirectional",
                "frequency": {"type": "realtime"},
                "entities": entities,
                "conflict_strategy": "last_write_wins",
                "options": {"propagate_deletes": true},
            }),
        )
        .await;
    assert_eq!(status, 201, "{config}");
    conduit::domain::SyncConfigId::parse(config["id"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn dynamics_changes_arrive_through_its_webhook_steps_which_follow_the_config() {
    use sandbox::providers::dynamics365_crm::DynTable;
    let app = TestApp::spawn().await;
    let t = s::connect(&app, "dynamics365").await;
    let Crm::Dynamics(host) = t.crm.clone() else {
        unreachable!()
    };
    let config_id = realtime_config(&app, &t).await;

    // One webhook endpoint (HttpHeader auth, to the config's route) and an async
    // post-operation step for each of Create, Update and Delete of contact.
    let (endpoints, steps) = app.sandbox().dyn_crm_webhooks(&host);
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    let endpoint = &endpoints[0];
    let path = format!("/v1/webhooks/dynamics365/{}/{config_id}", t.id);
    assert_eq!(endpoint["url"], format!("{}{path}", app.url()));
    assert_eq!(
        (endpoint["contract"].as_i64(), endpoint["authtype"].as_i64()),
        (Some(8), Some(5))
    );
    let key = endpoint["settings"][0][1].as_str().unwrap().to_owned();
    assert_eq!(endpoint["settings"][0][0], "x-conduit-webhook-key");
    assert!(key.len() >= 40);
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert!(steps.iter().all(|s| s["mode"] == 1
        && s["stage"] == 40
        && s["_eventhandler_value"] == endpoint["serviceendpointid"]));
    s::run_ok(&app, &t, &config_id).await;

    // Created, changed and deleted in Dynamics: in Conduit within seconds, by webhook runs.
    let made = app.sandbox().dyn_crm_create(
        &host,
        DynTable::Contact,
        json!({"firstname": "Hooked", "lastname": "Dataverse", "emailaddress1": "hooked.dataverse@sandbox.test"})
            .as_object()
            .unwrap()
            .clone(),
    );
    same_within(&app, &t, "the created contact").await;
    s::crm_update(
        &app,
        &t,
        Entity::Contacts,
        &made.id,
        &[("jobtitle", "Webhook tester")],
    );
    same_within(&app, &t, "the changed contact").await;
    counts_settle(&app, &t, &config_id, &[("created", 1), ("updated", 1)]).await;

    // Conduit's own create comes back as an execution and writes nothing.
    let (mine_email, record) = echo_is_read_back(&app, &t, &config_id, 8).await;
    let version = record.version;
    s::crm_delete(&app, &t, Entity::Contacts, &made.id);
    // (The app's own contact keeps a phone the Dynamics mapping does not carry, so
    // the views are not compared here.)
    wait_for("the deleted contact", Duration::from_secs(20), || async {
        app_contact(&app, &t, "hooked.dataverse@sandbox.test")
            .await
            .is_none_or(|r| r.deleted_at.is_some())
    })
    .await;
    counts_settle(&app, &t, &config_id, &[("deleted", 1)]).await;
    assert_eq!(
        app_contact(&app, &t, &mine_email).await.unwrap().version,
        version,
        "the echo wrote nothing"
    );
    let ours = taken_deliveries(app.sandbox().dyn_crm_webhook_deliveries(), &path, 4);

    // Refused: no key, a wrong key, a replay, a body that is not an execution.
    let runs_before = webhook_runs(&app, &t, &config_id).await;
    let json_type = ("content-type".to_owned(), "application/json".to_owned());
    let body = ours[0].body.clone();
    let out = post_hook(&app, &path, std::slice::from_ref(&json_type), &body).await;
    assert_eq!(
        refused(&out),
        (401, Some("webhook_signature_missing")),
        "{}",
        out.1
    );
    let wrong = ("x-conduit-webhook-key".to_owned(), "x".repeat(key.len()));
    let out = post_hook(&app, &path, &[json_type.clone(), wrong], &body).await;
    assert_eq!(
        refused(&out),
        (401, Some("webhook_credentials_invalid")),
        "{}",
        out.1
    );
    let out = post_hook(&app, &path, &ours[0].headers, &body).await;
    assert_eq!(refused(&out), (401, Some("webhook_replayed")), "{}", out.1);
    let right = ("x-conduit-webhook-key".to_owned(), key.clone());
    let out = post_hook(
        &app,
        &path,
        &[json_type, right],
        r#"{"MessageName": "Update"}"#,
    )
    .await;
    assert_eq!(refused(&out), (400, Some("webhook_malformed")), "{}", out.1);
    refusals_left_no_trace(&app, &t, &config_id, runs_before, 4, &[&key]).await;

    // Paused: endpoint and steps gone; resumed: new ones; deleted: gone again.
    set_state(&app, &t, &config_id, "pause").await;
    let (endpoints, steps) = app.sandbox().dyn_crm_webhooks(&host);
    assert!(
        endpoints.is_empty() && steps.is_empty(),
        "{endpoints:?} {steps:?}"
    );
    set_state(&app, &t, &config_id, "resume").await;
    let (endpoints, steps) = app.sandbox().dyn_crm_webhooks(&host);
    assert_eq!((endpoints.len(), steps.len()), (1, 3));
    let (status, _) = app
        .delete(&format!("/v1/sync/configs/{config_id}"), &t.admin)
        .await;
    assert_eq!(status, 204);
    let (endpoints, steps) = app.sandbox().dyn_crm_webhooks(&host);
    assert!(endpoints.is_empty() && steps.is_empty());

    // A user without the customizer role: the config stands, pulls every minute, and
    // the refusal is audited; nothing is left half-registered in Dataverse.
    app.sandbox().dyn_crm_set_customizer(&host, false);
    let other = realtime_config(&app, &t).await;
    let (endpoints, _) = app.sandbox().dyn_crm_webhooks(&host);
    assert!(endpoints.is_empty());
    let reg = subscriptions::registration(&app.app(), &t.id, &other)
        .await
        .unwrap()
        .expect("a registration for the admin's hand");
    assert!(
        reg.hooks.values().all(|id| id == subscriptions::BY_HAND),
        "{:?}",
        reg.hooks
    );
    let failed = app
        .audit_actions(t.id.as_str())
        .await
        .into_iter()
        .filter(|(a, o)| a == "sync_config.webhooks" && o == "failure")
        .count();
    assert_eq!(failed, 1);

    // The tenant's admin registers it by hand (Plug-in Registration tool) with the URL
    // and header the config's webhook endpoint shows its admins; changes then arrive
    // through it, and a pause and resume change nothing the admin entered.
    let endpoint_path = format!("/v1/sync/configs/{other}/webhook-endpoint");
    let member = app.token(t.id.as_str(), scenarios::Role::Member);
    assert_eq!(app.get(&endpoint_path, &member).await.0, 403);
    let (status, shown) = app.get(&endpoint_path, &t.admin).await;
    assert_eq!(status, 200, "{shown}");
    let url = format!("{}/v1/webhooks/dynamics365/{}/{other}", app.url(), t.id);
    assert_eq!(shown["url"], json!(url), "{shown}");
    assert_eq!(shown["header"]["name"], "x-conduit-webhook-key", "{shown}");
    let key = shown["header"]["value"].as_str().unwrap().to_owned();
    assert!(key.len() >= 40);
    app.sandbox().dyn_crm_set_customizer(&host, true);
    app.sandbox().dyn_crm_register_webhook(
        &host,
        DynTable::Contact,
        &url,
        ("x-conduit-webhook-key", &key),
    );
    s::run_ok(&app, &t, &other).await;
    app.sandbox().dyn_crm_create(
        &host,
        DynTable::Contact,
        json!({"firstname": "By", "lastname": "Hand", "emailaddress1": "by.hand@sandbox.test"})
            .as_object()
            .unwrap()
            .clone(),
    );
    wait_for(
        "the contact sent by the hand-made webhook",
        Duration::from_secs(20),
        || async {
            app_contact(&app, &t, "by.hand@sandbox.test")
                .await
                .is_some()
        },
    )
    .await;
    set_state(&app, &t, &other, "pause").await;
    set_state(&app, &t, &other, "resume").await;
    let (status, again) = app.get(&endpoint_path, &t.admin).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["header"]["value"], json!(key), "the same key");
    let (endpoints, _) = app.sandbox().dyn_crm_webhooks(&host);
    assert_eq!(endpoints.len(), 1, "only the admin's: {endpoints:?}");
    app.assert_secret_absent(&key, t.id.as_str()).await;
    assert!(!app.logs().contains(&key), "the key is never logged");
}

#[tokio::test]
async fn salesforce_outbound_messages_bring_changes_and_are_acknowledged() {
    use sandbox::providers::salesforce_crm::SfObject;
    let app = TestApp::spawn().await;
    let t = s::connect(&app, "salesforce").await;
    let Crm::Salesforce(org) = t.crm.clone() else {
        unreachable!()
    };
    let config_id = realtime_config(&app, &t).await;

    // Conduit cannot make outbound messages (Setup / Metadata API): it shows the
    // tenant's admin, and only an admin, the URL with the config's key.
    let endpoint_path = format!("/v1/sync/configs/{config_id}/webhook-endpoint");
    let member = app.token(t.id.as_str(), scenarios::Role::Member);
    let (status, _) = app.get(&endpoint_path, &member).await;
    assert_eq!(status, 403);
    let (status, endpoint) = app.get(&endpoint_path, &t.admin).await;
    assert_eq!(status, 200, "{endpoint}");
    let url = endpoint["url"].as_str().unwrap().to_owned();
    let prefix = format!("{}/v1/webhooks/salesforce/{}/{config_id}/", app.url(), t.id);
    let key = url
        .strip_prefix(&prefix)
        .expect("the config's route")
        .to_owned();
    assert!(key.len() >= 40);
    let path = url.strip_prefix(app.url().as_str()).unwrap().to_owned();
    // The admin's setup: a workflow rule on Contact with an outbound message to it.
    app.sandbox().salesforce_add_outbound_message(
        &org,
        SfObject::Contact,
        &url,
        &["Email", "FirstName", "LastName"],
        true,
    );
    s::run_ok(&app, &t, &config_id).await;

    // Created and edited in Salesforce: in Conduit within seconds, by webhook runs.
    let made = app
        .sandbox()
        .salesforce_create_record(
            &org,
            SfObject::Contact,
            json!({"FirstName": "Outbound", "LastName": "Message", "Email": "outbound.message@sandbox.test"})
                .as_object()
                .unwrap(),
        )
        .expect("created");
    wait_for("the created contact", Duration::from_secs(20), || async {
        app_contact(&app, &t, "outbound.message@sandbox.test")
            .await
            .is_some()
    })
    .await;
    s::crm_update(&app, &t, Entity::Contacts, &made, &[("Title", "Notified")]);
    wait_for("the edited contact", Duration::from_secs(20), || async {
        app_contact(&app, &t, "outbound.message@sandbox.test")
            .await
            .is_some_and(|r| r.fields.get("job_title").map(String::as_str) == Some("Notified"))
    })
    .await;
    counts_settle(&app, &t, &config_id, &[("created", 1), ("updated", 1)]).await;

    // Conduit's own create comes back as a notification and writes nothing.
    echo_is_read_back(&app, &t, &config_id, 9).await;

    // Every request was acknowledged at once (no retries).
    let deliveries = app.sandbox().salesforce_outbound_deliveries();
    let ours: Vec<_> = deliveries.iter().filter(|d| d.url == url).collect();
    assert!(ours.len() >= 3, "{ours:?}");
    assert!(
        ours.iter().all(|d| d.status == Some(200) && d.attempt == 1),
        "{ours:?}"
    );
    let session = ours[0]
        .body
        .split("<SessionId>")
        .nth(1)
        .and_then(|s| s.split("</SessionId>").next())
        .expect("a session id")
        .to_owned();

    // Refused: a wrong key, another org, a DOCTYPE; audited, nothing enqueued.
    let runs_before = webhook_runs(&app, &t, &config_id).await;
    let xml = [(
        "content-type".to_owned(),
        "text/xml; charset=utf-8".to_owned(),
    )];
    let wrong = format!(
        "{}{}",
        &path[..path.len() - key.len()],
        "x".repeat(key.len())
    );
    let fresh = ours[0].body.replace("<Id>04l", "<Id>04m");
    let out = post_hook(&app, &wrong, &xml, &fresh).await;
    assert_eq!(
        refused(&out),
        (401, Some("webhook_credentials_invalid")),
        "{}",
        out.1
    );
    let other_org = fresh.replace(&org, "00DSY9999999999AAA");
    let out = post_hook(&app, &path, &xml, &other_org).await;
    assert_eq!(
        refused(&out),
        (401, Some("webhook_credentials_invalid")),
        "{}",
        out.1
    );
    // A message taken before (an acknowledgement Salesforce did not see) is
    // acknowledged again, and routes nothing.
    let out = post_hook(&app, &path, &xml, &ours[0].body).await;
    assert_eq!(out.0, 200, "{}", out.1);
    let doctype = fresh.replacen(
        "<soapenv:Envelope",
        "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><soapenv:Envelope",
        1,
    );
    let out = post_hook(&app, &path, &xml, &doctype).await;
    assert_eq!(refused(&out), (400, Some("webhook_malformed")), "{}", out.1);
    refusals_left_no_trace(&app, &t, &config_id, runs_before, 3, &[&key, &session]).await;

    // Paused: the URL the admin entered keeps its key; its messages are acknowledged
    // (Salesforce would otherwise retry them for a day) and pull nothing.
    set_state(&app, &t, &config_id, "pause").await;
    let (status, paused) = app.get(&endpoint_path, &t.admin).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["url"].as_str(), Some(url.as_str()), "the same key");
    let runs_paused = webhook_runs(&app, &t, &config_id).await;
    let out = post_hook(&app, &path, &xml, &fresh.replace("<Id>04m", "<Id>04n")).await;
    assert_eq!(out.0, 200, "acknowledged while paused");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(webhook_runs(&app, &t, &config_id).await, runs_paused);

    // Resumed: the same URL brings changes again, with no step by the admin.
    set_state(&app, &t, &config_id, "resume").await;
    let (status, again) = app.get(&endpoint_path, &t.admin).await;
    assert_eq!(status, 200);
    assert_eq!(again["url"].as_str(), Some(url.as_str()), "the same key");
    s::crm_update(&app, &t, Entity::Contacts, &made, &[("Title", "Resumed")]);
    wait_for(
        "the contact edited after resuming",
        Duration::from_secs(20),
        || async {
            app_contact(&app, &t, "outbound.message@sandbox.test")
                .await
                .is_some_and(|r| r.fields.get("job_title").map(String::as_str) == Some("Resumed"))
        },
    )
    .await;

    // Deleted: the key is forgotten, the URL refused.
    let (status, body) = app
        .delete(&format!("/v1/sync/configs/{config_id}"), &t.admin)
        .await;
    assert_eq!(status, 204, "{body}");
    let out = post_hook(&app, &path, &xml, &fresh.replace("<Id>04m", "<Id>04p")).await;
    assert_eq!(
        refused(&out),
        (401, Some("webhook_unknown_app")),
        "{}",
        out.1
    );
}

/// A request whose changes could not be queued (503) gives its replay key back, so the
/// provider's retry of the very same request is taken, not refused as a replay:
/// Salesforce re-sends an unacknowledged outbound message with the same notification
/// ids, which is how the change arrives once the queue is back.
#[tokio::test]
async fn a_webhook_that_could_not_be_queued_is_taken_on_the_providers_retry() {
    use aws_sdk_sqs::types::QueueAttributeName;
    use sandbox::providers::salesforce_crm::SfObject;
    let app = TestApp::isolated(devhost::LocalEnvOptions::default()).await;
    let t = s::connect(&app, "salesforce").await;
    let Crm::Salesforce(org) = t.crm.clone() else {
        unreachable!()
    };
    let config_id = realtime_config(&app, &t).await;
    let (status, endpoint) = app
        .get(
            &format!("/v1/sync/configs/{config_id}/webhook-endpoint"),
            &t.admin,
        )
        .await;
    assert_eq!(status, 200, "{endpoint}");
    let url = endpoint["url"].as_str().unwrap().to_owned();
    app.sandbox().salesforce_add_outbound_message(
        &org,
        SfObject::Contact,
        &url,
        &["Email", "FirstName", "LastName"],
        false,
    );
    s::run_ok(&app, &t, &config_id).await;

    // The sync queue is gone for a moment: the route cannot queue the change.
    let sqs = aws_sdk_sqs::Client::new(&app.local().aws);
    let queue =
        app.local().stack.function_env("WebhooksFunction").unwrap()["CONDUIT_SYNC_QUEUE_URL"]
            .clone();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    sqs.delete_queue().queue_url(&queue).send().await.unwrap();
    app.sandbox()
        .salesforce_create_record(
            &org,
            SfObject::Contact,
            json!({"FirstName": "Queued", "LastName": "Later", "Email": "queued.later@sandbox.test"})
                .as_object()
                .unwrap(),
        )
        .expect("created");
    let to_us = || {
        app.sandbox()
            .salesforce_outbound_deliveries()
            .into_iter()
            .filter(|d| d.url == url)
            .collect::<Vec<_>>()
    };
    wait_for(
        "a delivery answered 503",
        Duration::from_secs(20),
        || async { to_us().iter().any(|d| d.status == Some(503)) },
    )
    .await;

    // The queue is back (as it was): Salesforce's next attempt of the same message is
    // taken and the contact arrives.
    let settable = [
        QueueAttributeName::DelaySeconds,
        QueueAttributeName::MaximumMessageSize,
        QueueAttributeName::MessageRetentionPeriod,
        QueueAttributeName::ReceiveMessageWaitTimeSeconds,
        QueueAttributeName::RedrivePolicy,
        QueueAttributeName::VisibilityTimeout,
        QueueAttributeName::FifoQueue,
        QueueAttributeName::ContentBasedDeduplication,
        QueueAttributeName::SqsManagedSseEnabled,
    ];
    let name = queue.rsplit('/').next().unwrap().to_owned();
    let made = sqs
        .create_queue()
        .queue_name(&name)
        .set_attributes(Some(
            attributes
                .into_iter()
                .filter(|(k, _)| settable.contains(k))
                .collect(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(made.queue_url.as_deref(), Some(queue.as_str()));
    wait_for(
        "the contact the retry brought",
        Duration::from_secs(30),
        || async {
            app_contact(&app, &t, "queued.later@sandbox.test")
                .await
                .is_some()
        },
    )
    .await;
    let ours = to_us();
    let last = ours.last().unwrap();
    assert_eq!(last.status, Some(200), "{ours:?}");
    assert!(last.attempt > 1, "{ours:?}");
    assert!(
        ours.iter().all(|d| d.status != Some(401)),
        "no attempt refused as a replay: {ours:?}"
    );
}
