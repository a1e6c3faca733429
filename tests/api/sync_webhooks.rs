//! Provider webhooks end to end: a tenant's own HubSpot app sends signed event batches
//! (the sandbox's Webhooks API v3 stand-in, set up through its real API) to the dev
//! host's `POST /v1/webhooks/hubspot/{tenant}`; a realtime config's changes arrive as
//! targeted pulls within seconds; forged, stale, replayed and malformed requests are
//! refused and audited with nothing enqueued; Conduit's own pushes come back as events
//! and are recognised (nothing is written or pushed again).

use std::time::{Duration, Instant};

use conduit::sync::config::{Frequency, SyncDirection};
use conduit::sync::runs::Runs;
use conduit::sync::schema::Entity;
use sandbox::CrmObject;
use sandbox::oauth::{OAuthClient, OAuthProvider, OAuthUser};
use scenarios::{Role, TestApp};
use serde_json::{Value, json};

use crate::sync_support::{self as s, Crm, Tenant};

/// A tenant whose own HubSpot app is connected to a portal of its own, with the app's
/// webhooks pointed at the tenant's route and subscribed to contact changes: (tenant,
/// app id, client secret).
pub(crate) async fn hooked_tenant(app: &TestApp) -> (Tenant, u64, String) {
    let mut subscriptions = vec![
        json!({"eventType": "contact.creation", "active": true}),
        json!({"eventType": "contact.deletion", "active": true}),
    ];
    for p in ["email", "firstname", "lastname", "phone"] {
        subscriptions.push(
            json!({"eventType": "contact.propertyChange", "propertyName": p, "active": true}),
        );
    }
    hooked_tenant_with(app, json!({}), subscriptions).await
}

/// [`hooked_tenant`] with `connect` added to the connect request (such as `uses`) and
/// the app subscribed to `subscriptions`.
async fn hooked_tenant_with(
    app: &TestApp,
    connect: Value,
    subscriptions: Vec<Value>,
) -> (Tenant, u64, String) {
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let client_id = format!("hooks-{tenant}");
    let secret = format!("hooks-secret-{tenant}");
    let view = app
        .sandbox()
        .add_oauth_client(OAuthClient {
            provider: OAuthProvider::Hubspot,
            client_id: client_id.clone(),
            client_secret: secret.as_str().into(),
        })
        .expect("register the app");
    let (status, body) = app
        .send(
            "PUT",
            "/v1/providers/hubspot/app-credentials",
            &admin,
            Some(json!({"client_id": client_id, "client_secret": secret})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let portal = 8_900_000 + s::fresh();
    let u = app
        .sandbox()
        .add_oauth_user(OAuthUser {
            hub_id: portal,
            ..OAuthUser::new(
                OAuthProvider::Hubspot,
                format!("hooks-{portal}@sandbox.test"),
            )
        })
        .expect("user");
    let out = app
        .oauth_connect(
            &admin,
            "hubspot",
            {
                let mut body = json!({"return_to": "http://localhost:5173/integrations"});
                if let (Some(b), Some(extra)) = (body.as_object_mut(), connect.as_object()) {
                    b.extend(extra.clone());
                }
                body
            },
            &format!("login_hint={}", u.email),
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    let t = Tenant {
        id: conduit::domain::TenantId::parse(&tenant).unwrap(),
        admin,
        conn: out.connection_id.expect("id"),
        crm: Crm::Hubspot(portal),
    };
    // The app's webhook settings and subscriptions, through HubSpot's own API.
    let key = app
        .sandbox()
        .hubspot_developer_key(view.app_id)
        .expect("a developer key");
    let http = reqwest::Client::new();
    let base = format!(
        "{}/api.hubapi.com/webhooks/v3/{}",
        app.sandbox_url(),
        view.app_id
    );
    let target = format!("{}/v1/webhooks/hubspot/{tenant}", app.url());
    let put = http
        .put(format!("{base}/settings"))
        .bearer_auth(&key)
        .json(&json!({"targetUrl": target, "throttling": {"maxConcurrentRequests": 10}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    // Without the developer key, nothing changes.
    let refused = http
        .put(format!("{base}/settings"))
        .bearer_auth("wrong")
        .json(&json!({"targetUrl": target, "throttling": {"maxConcurrentRequests": 10}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    for sub in subscriptions {
        let r = http
            .post(format!("{base}/subscriptions"))
            .bearer_auth(&key)
            .json(&sub)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
    }
    (t, view.app_id, secret)
}

pub(crate) async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {limit:?}");
}

pub(crate) async fn app_contact(
    app: &TestApp,
    t: &Tenant,
    email: &str,
) -> Option<conduit::sync::records::Record> {
    s::app_rows(app, t, Entity::Contacts)
        .await
        .into_iter()
        .find(|r| {
            r.fields
                .get("email")
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
}

pub(crate) async fn webhook_logs(
    app: &TestApp,
    t: &Tenant,
    config: &conduit::domain::SyncConfigId,
) -> Vec<conduit::sync::runs::SyncLog> {
    let runs = Runs::new(app.app().table.clone());
    runs.logs(&t.id, Some(config), 200, None)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|l| l.trigger == "webhook")
        .collect()
}

pub(crate) async fn webhook_runs(
    app: &TestApp,
    t: &Tenant,
    config: &conduit::domain::SyncConfigId,
) -> usize {
    webhook_logs(app, t, config).await.len()
}

/// A counter summed over the config's webhook runs.
pub(crate) async fn webhook_count(
    app: &TestApp,
    t: &Tenant,
    config: &conduit::domain::SyncConfigId,
    counter: &str,
) -> u64 {
    webhook_logs(app, t, config)
        .await
        .iter()
        .map(|l| l.counts.get(counter).copied().unwrap_or(0))
        .sum()
}

pub(crate) async fn post_hook(
    app: &TestApp,
    path: &str,
    headers: &[(String, String)],
    body: &str,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", app.url()))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

fn signed(secret: &str, url: &str, body: &str, at_ms: i64) -> Vec<(String, String)> {
    let ts = at_ms.to_string();
    vec![
        ("content-type".into(), "application/json".into()),
        (
            "x-hubspot-signature-v3".into(),
            sandbox::providers::hubspot_webhooks::sign(secret, "POST", url, body, &ts),
        ),
        ("x-hubspot-request-timestamp".into(), ts),
    ]
}

pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test]
async fn hubspot_changes_arrive_through_its_webhook_and_bad_requests_are_refused() {
    let app = TestApp::spawn().await;
    let (t, app_id, secret) = hooked_tenant(&app).await;
    let Crm::Hubspot(portal) = t.crm else {
        unreachable!()
    };
    let mut config = s::new_config(&t, SyncDirection::Bidirectional, &[Entity::Contacts]);
    config.frequency = Frequency::Realtime;
    config.options.propagate_deletes = true;
    s::store(&app, &config).await;
    s::run_ok(&app, &t, &config.id).await;

    // Created in HubSpot: in Conduit within seconds, with no run triggered by hand.
    let id = app.sandbox().seed_hubspot(portal, CrmObject::Contacts, 1)[0].clone();
    let email = app
        .sandbox()
        .hubspot_record(portal, CrmObject::Contacts, &id)
        .unwrap()
        .properties["email"]
        .clone();
    let took = wait_for("the created contact", Duration::from_secs(20), || async {
        app_contact(&app, &t, &email).await.is_some()
    })
    .await;
    eprintln!("created in HubSpot → in Conduit in {took:?}");

    // Changed by a user in HubSpot's UI.
    app.sandbox().update_hubspot_record(
        portal,
        CrmObject::Contacts,
        &id,
        &[("firstname".to_owned(), "Hooked".to_owned())].into(),
    );
    wait_for("the changed name", Duration::from_secs(20), || async {
        app_contact(&app, &t, &email)
            .await
            .is_some_and(|r| r.fields.get("first_name").map(String::as_str) == Some("Hooked"))
    })
    .await;

    // Conduit's own push comes back as events (a creation and its properties): the
    // targeted pull finds what Conduit wrote and writes nothing, pushes nothing back.
    // The portal's own records (the sandbox's call counters are shared with every
    // scenario running beside this one).
    let portal_contacts = || {
        app.sandbox()
            .hubspot_records(portal, CrmObject::Contacts)
            .len()
    };
    let pushes_before = portal_contacts();
    let mine = s::app_create(
        &app,
        &t,
        Entity::Contacts,
        s::app_fields(Entity::Contacts, 7),
    )
    .await;
    let mine_email = s::app_fields(Entity::Contacts, 7)["email"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(
        "the app's contact in HubSpot",
        Duration::from_secs(20),
        || async {
            app.sandbox()
                .hubspot_records(portal, CrmObject::Contacts)
                .iter()
                .any(|r| r.properties.get("email") == Some(&mine_email))
        },
    )
    .await;
    let deliveries_before = app.sandbox().hubspot_webhook_deliveries().len();
    wait_for("the echo's delivery", Duration::from_secs(20), || async {
        app.sandbox().hubspot_webhook_deliveries().len() > deliveries_before
            && app
                .sandbox()
                .hubspot_webhook_deliveries()
                .iter()
                .skip(deliveries_before)
                .all(|d| d.status == Some(200))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let record = app_contact(&app, &t, &mine_email)
        .await
        .expect("the app's contact");
    let version = record.version;
    assert_eq!(record.id.as_str(), mine, "one record, the app's");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let record = app_contact(&app, &t, &mine_email).await.unwrap();
    assert_eq!(record.version, version, "the echo wrote nothing");
    assert_eq!(
        portal_contacts() - pushes_before,
        1,
        "one create, no echo pushed back"
    );

    // Deleted in HubSpot: deleted in Conduit (the config propagates deletes).
    assert!(
        app.sandbox()
            .archive_hubspot_record(portal, CrmObject::Contacts, &id)
    );
    wait_for("the deletion", Duration::from_secs(20), || async {
        app_contact(&app, &t, &email)
            .await
            .is_none_or(|r| r.deleted_at.is_some())
    })
    .await;

    // Through webhook runs only (no run was triggered since the first): one create,
    // one update, one deletion; the echo's events were read and skipped.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(webhook_count(&app, &t, &config.id, "created").await, 1);
    assert_eq!(webhook_count(&app, &t, &config.id, "updated").await, 1);
    assert_eq!(webhook_count(&app, &t, &config.id, "deleted").await, 1);
    assert!(
        webhook_count(&app, &t, &config.id, "skipped").await >= 1,
        "the echo was read"
    );

    // Every delivery so far was taken.
    let deliveries = app.sandbox().hubspot_webhook_deliveries();
    let ours: Vec<_> = deliveries.iter().filter(|d| d.app_id == app_id).collect();
    assert!(!ours.is_empty());
    assert!(ours.iter().all(|d| d.status == Some(200)), "{ours:?}");

    // Refused, audited, nothing enqueued: a replay of a delivery, a forged signature,
    // a stale timestamp, a malformed body, an unknown tenant.
    let runs_before = webhook_runs(&app, &t, &config.id).await;
    let path = format!("/v1/webhooks/hubspot/{}", t.id);
    let url = format!("{}{path}", app.url());
    let last = ours.last().unwrap();
    let (status, body) = post_hook(&app, &path, &last.headers, &last.body).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("webhook_replayed")),
        "{body}"
    );

    let event = json!([{"eventId": 1, "subscriptionId": 1, "portalId": portal, "appId": app_id,
        "occurredAt": now_ms(), "subscriptionType": "contact.creation", "attemptNumber": 0,
        "objectId": 999_999, "changeSource": "CRM_UI"}])
    .to_string();
    let (status, body) = post_hook(
        &app,
        &path,
        &signed("not-the-secret", &url, &event, now_ms()),
        &event,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("webhook_signature_invalid")),
        "{body}"
    );
    let (status, body) = post_hook(
        &app,
        &path,
        &signed(&secret, &url, &event, now_ms() - 6 * 60 * 1000),
        &event,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("webhook_timestamp_stale")),
        "{body}"
    );
    let (status, body) = post_hook(&app, &path, &[], &event).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("webhook_signature_missing")),
        "{body}"
    );
    let bad = r#"[{"eventId": "x"}]"#;
    let (status, body) = post_hook(&app, &path, &signed(&secret, &url, bad, now_ms()), bad).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("webhook_malformed")),
        "{body}"
    );
    let other = format!("/v1/webhooks/hubspot/{}", app.tenant());
    let other_url = format!("{}{other}", app.url());
    let (status, body) = post_hook(
        &app,
        &other,
        &signed(&secret, &other_url, &event, now_ms()),
        &event,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("webhook_unknown_app")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        webhook_runs(&app, &t, &config.id).await,
        runs_before,
        "nothing enqueued"
    );
    let denied = app
        .audit_actions(t.id.as_str())
        .await
        .into_iter()
        .filter(|(a, o)| a == "webhook.receive" && o == "denied")
        .count();
    assert_eq!(denied, 5, "each refusal of the tenant's route is audited");
    app.assert_secret_absent(&secret, t.id.as_str()).await;
    assert!(
        !app.logs().contains(&secret),
        "the app secret is never logged"
    );

    // A valid event about a record that is not there is a read, nothing more.
    let (status, body) = post_hook(
        &app,
        &path,
        &signed(&secret, &url, &event, now_ms()),
        &event,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["configs"], 1);
}

/// Waits until the app's contacts are the CRM's, as the default mappings show them.
pub(crate) async fn same_within(app: &TestApp, t: &Tenant, what: &str) {
    wait_for(what, Duration::from_secs(20), || async {
        s::crm_view(app, t, Entity::Contacts) == s::app_view(app, t, Entity::Contacts).await
    })
    .await;
}

/// Two contacts created in the CRM, one of them changed (`field` set) and the other
/// deleted: each step in the app within seconds — by webhook runs, the minute pull
/// being a minute away. `noun` names the CRM's contacts in the failure messages.
pub(crate) async fn crm_changes_arrive(app: &TestApp, t: &Tenant, field: (&str, &str), noun: &str) {
    let ids = s::seed(app, t, Entity::Contacts, 2);
    same_within(app, t, &format!("the created {noun}s")).await;
    s::crm_update(app, t, Entity::Contacts, &ids[0], &[field]);
    same_within(app, t, &format!("the changed {noun}")).await;
    s::crm_delete(app, t, Entity::Contacts, &ids[1]);
    same_within(app, t, &format!("the deleted {noun}")).await;
}

/// The sandbox's deliveries to `path`: at least `least` of them, every one taken (200).
pub(crate) fn taken_deliveries(
    deliveries: Vec<sandbox::providers::pipedrive_webhooks::Delivery>,
    path: &str,
    least: usize,
) -> Vec<sandbox::providers::pipedrive_webhooks::Delivery> {
    let ours: Vec<_> = deliveries
        .into_iter()
        .filter(|d| d.url.ends_with(path))
        .collect();
    assert!(ours.len() >= least, "{ours:?}");
    assert!(ours.iter().all(|d| d.status == Some(200)), "{ours:?}");
    ours
}

#[tokio::test]
async fn pipedrive_webhooks_come_and_go_with_the_config_and_bring_changes() {
    let app = TestApp::spawn().await;
    let t = s::connect(&app, "pipedrive").await;
    let Crm::Pipedrive(company) = t.crm.clone() else {
        unreachable!()
    };
    let config_id = crate::sync_webhooks_more::realtime_config(&app, &t).await;
    // Conduit made one webhook: version 2.0, every action on persons, to the config's
    // route, with basic credentials of its own.
    let hooks = app.sandbox().pipedrive_webhooks(&company);
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let hook = &hooks[0];
    assert_eq!(hook["event_object"], "person");
    assert_eq!(hook["event_action"], "*");
    assert_eq!(hook["version"], "2.0");
    let path = format!("/v1/webhooks/pipedrive/{}/{config_id}", t.id);
    assert_eq!(hook["subscription_url"], format!("{}{path}", app.url()));
    assert_eq!(hook["http_auth_user"], "conduit");
    let password = hook["http_auth_password"].as_str().unwrap().to_owned();
    assert!(password.len() >= 40);
    s::run_ok(&app, &t, &config_id).await;

    // Created, changed and deleted in Pipedrive: in Conduit within seconds.
    crm_changes_arrive(&app, &t, ("name", "Hooked Person"), "person").await;
    assert!(webhook_runs(&app, &t, &config_id).await >= 1);
    let ours = taken_deliveries(app.sandbox().pipedrive_webhook_deliveries(), &path, 4);

    // Refused: no credentials, wrong ones, a replay; audited, nothing enqueued.
    let before = webhook_runs(&app, &t, &config_id).await;
    let body = ours[0].body.clone();
    let (status, out) = post_hook(
        &app,
        &path,
        &[("content-type".into(), "application/json".into())],
        &body,
    )
    .await;
    assert_eq!(
        (status, out["error"]["code"].as_str()),
        (401, Some("webhook_signature_missing")),
        "{out}"
    );
    use base64::Engine as _;
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("conduit:not-the-password")
    );
    let (status, out) = post_hook(&app, &path, &[("authorization".into(), wrong)], &body).await;
    assert_eq!(
        (status, out["error"]["code"].as_str()),
        (401, Some("webhook_credentials_invalid")),
        "{out}"
    );
    let (status, out) = post_hook(&app, &path, &ours[0].headers, &ours[0].body).await;
    assert_eq!(
        (status, out["error"]["code"].as_str()),
        (401, Some("webhook_replayed")),
        "{out}"
    );
    crate::sync_webhooks_more::refusals_left_no_trace(
        &app,
        &t,
        &config_id,
        before,
        3,
        &[&password],
    )
    .await;

    // Paused: the webhook is gone; resumed: a new one.
    let (status, _) = app
        .post(
            &format!("/v1/sync/configs/{config_id}/pause"),
            &t.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(app.sandbox().pipedrive_webhooks(&company).is_empty());
    let (status, _) = app
        .post(
            &format!("/v1/sync/configs/{config_id}/resume"),
            &t.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let hooks = app.sandbox().pipedrive_webhooks(&company);
    assert_eq!(hooks.len(), 1);
    // Removed by hand in Pipedrive: the every-minute run makes it again (it asks at most
    // every ten minutes; the last time is set back here).
    assert_eq!(app.sandbox().remove_pipedrive_webhooks(&company), 1);
    let mut reg = conduit::sync::subscriptions::registration(&app.app(), &t.id, &config_id)
        .await
        .unwrap()
        .expect("the registration");
    reg.checked_at = 0;
    app.app()
        .table
        .put(&conduit::store::Keyed {
            pk: conduit::store::keys::tenant(&t.id),
            sk: conduit::store::keys::webhook_registration(&config_id),
            item: &reg,
        })
        .await
        .unwrap();
    let group = app
        .local()
        .stack
        .ref_value("SyncScheduleGroup")
        .expect("the schedule group");
    app.local()
        .fire_scheduler_schedule(&group, config_id.as_str())
        .await
        .expect("fired");
    let healed = app.sandbox().pipedrive_webhooks(&company);
    assert_eq!(healed.len(), 1, "made again: {healed:?}");
    assert_ne!(healed[0]["id"], hooks[0]["id"]);
    // Deleted: gone again, and the old route refuses.
    let (status, _) = app
        .delete(&format!("/v1/sync/configs/{config_id}"), &t.admin)
        .await;
    assert_eq!(status, 204);
    assert!(app.sandbox().pipedrive_webhooks(&company).is_empty());
    let actions = app.audit_actions(t.id.as_str()).await;
    assert!(
        actions
            .iter()
            .filter(|(a, o)| a == "sync_config.webhooks" && o == "success")
            .count()
            >= 3,
        "{actions:?}"
    );
    // A realtime config's webhook goes with its connection.
    crate::sync_webhooks_more::realtime_config(&app, &t).await;
    assert_eq!(app.sandbox().pipedrive_webhooks(&company).len(), 1);
    let (status, _) = app
        .delete(&format!("/v1/connections/{}", t.conn), &t.admin)
        .await;
    assert!(status == 204 || status == 200, "{status}");
    assert!(app.sandbox().pipedrive_webhooks(&company).is_empty());
}

/// A deal's company changed in HubSpot reaches the app record through the webhook alone:
/// the `deal.associationChange` event (no `objectId`, both ends named) becomes a targeted
/// pull of the deal, which pulls the company the app has not seen first and links the
/// deal to it; a deal created in HubSpot arrives the same way.
#[tokio::test]
async fn hubspot_deal_association_changes_arrive_through_the_webhook() {
    let app = TestApp::spawn().await;
    let subscriptions = vec![
        json!({"eventType": "deal.creation", "active": true}),
        json!({"eventType": "deal.deletion", "active": true}),
        json!({"eventType": "deal.associationChange", "active": true}),
        json!({"eventType": "deal.propertyChange", "propertyName": "dealname", "active": true}),
    ];
    let uses = json!({"uses": [
        "sync:contacts:bidirectional",
        "sync:companies:bidirectional",
        "sync:deals:bidirectional",
    ]});
    let (t, _, _) = hooked_tenant_with(&app, uses, subscriptions).await;
    let Crm::Hubspot(portal) = t.crm else {
        unreachable!()
    };
    let mut config = s::new_config(
        &t,
        SyncDirection::Bidirectional,
        &[Entity::Contacts, Entity::Companies, Entity::Deals],
    );
    config.frequency = Frequency::Realtime;
    // Stages pass through as HubSpot's own ids.
    s::store(&app, &config).await;
    let first = s::seed(&app, &t, Entity::Companies, 1).remove(0);
    s::run_ok(&app, &t, &config.id).await;
    let runs = webhook_runs(&app, &t, &config.id).await;

    // A deal created in HubSpot with the known company: in the app within seconds.
    let deal = s::seed(&app, &t, Entity::Deals, 1).remove(0);
    app.sandbox()
        .hubspot_set_deal_association(portal, &deal, CrmObject::Companies, &first);
    let first_app = company_app_id(&app, &t, &first).await;
    let app_deal = wait_for_deal(&app, &t, |d| {
        d.fields.get("company_id").map(String::as_str) == Some(first_app.as_str())
    })
    .await;

    // Moved to a company the app has never seen: the association change alone brings
    // it, the company pulled first.
    let second = s::seed(&app, &t, Entity::Companies, 1).remove(0);
    app.sandbox()
        .hubspot_set_deal_association(portal, &deal, CrmObject::Companies, &second);
    let moved = wait_for_deal(&app, &t, |d| {
        d.id == app_deal
            && d.fields
                .get("company_id")
                .is_some_and(|c| c.as_str() != first_app.as_str())
    })
    .await;
    let second_app = company_app_id(&app, &t, &second).await;
    let rows = s::app_rows(&app, &t, Entity::Deals).await;
    let row = rows.iter().find(|r| r.id == moved).expect("the deal");
    assert_eq!(row.fields.get("company_id"), Some(&second_app));
    assert!(webhook_runs(&app, &t, &config.id).await > runs);
    let sent = app.sandbox().hubspot_webhook_deliveries();
    assert!(
        sent.iter()
            .any(|d| d.body.contains("deal.associationChange") && d.status == Some(200)),
        "an association event was delivered and taken"
    );
}

/// The app id of the company pulled from HubSpot company `crm_id`, once it is there.
async fn company_app_id(app: &TestApp, t: &Tenant, crm_id: &str) -> String {
    let domain = s::crm_rows(app, t, Entity::Companies)
        .into_iter()
        .find(|r| r.id == crm_id)
        .expect("the company")
        .values["domain"]
        .clone();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let found = s::app_rows(app, t, Entity::Companies)
            .await
            .into_iter()
            .find(|r| r.fields.get("domain").map(String::as_str) == Some(domain.as_str()));
        if let Some(r) = found {
            return r.id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("company {crm_id} not in the app within 20 s");
}

/// Waits for an app deal that `check` accepts; its id.
async fn wait_for_deal(
    app: &TestApp,
    t: &Tenant,
    check: impl Fn(&conduit::sync::records::Record) -> bool,
) -> conduit::domain::RecordId {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Some(d) = s::app_rows(app, t, Entity::Deals)
            .await
            .into_iter()
            .find(|d| check(d))
        {
            return d.id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no such deal in the app within 20 s");
}
