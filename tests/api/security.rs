//! Issue 11 §4: a connection copied into another tenant, unreadable items in lists
//! (connections, configs, records, logs, conflicts), tenant URLs carrying internal IPv4
//! addresses inside IPv6, and revocation with a client secret that needs form-encoding.

use aws_sdk_dynamodb::types::AttributeValue;
use sandbox::{OAuthClient, OAuthProvider};
use scenarios::{Role, TestApp, provider_lock, zendesk};
use serde_json::json;

/// Copies `from`'s item at `sk` verbatim into `to`'s partition (a bad restore, a key
/// bug, an insider), optionally under another sort key and with an attribute changed.
async fn copy_item(
    app: &TestApp,
    from: &str,
    to: &str,
    sk: &str,
    new_sk: &str,
    set: Option<(&str, AttributeValue)>,
) {
    let item = app
        .dynamo()
        .get_item()
        .table_name(app.table())
        .key("pk", AttributeValue::S(format!("T#{from}")))
        .key("sk", AttributeValue::S(sk.to_owned()))
        .send()
        .await
        .expect("get item")
        .item
        .expect("item");
    let mut item = item;
    item.insert("pk".into(), AttributeValue::S(format!("T#{to}")));
    item.insert("sk".into(), AttributeValue::S(new_sk.to_owned()));
    item.remove("gsi1pk");
    item.remove("gsi1sk");
    if let Some((name, value)) = set {
        item.insert(name.to_owned(), value);
    }
    app.dynamo()
        .put_item()
        .table_name(app.table())
        .set_item(Some(item))
        .send()
        .await
        .expect("put item");
}

#[tokio::test]
async fn a_connection_copied_into_another_tenant_is_never_shown_or_used() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant(), app.tenant());
    let admin_a = app.token(&a, Role::Admin);
    let admin_b = app.token(&b, Role::Admin);
    let (status, created) = app
        .post(
            "/v1/connections",
            &admin_a,
            zendesk("zd-sandbox-token-0001"),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let sk = format!("CONN#{id}");
    copy_item(&app, &a, &b, &sk, &sk, None).await;

    let (status, got) = app.get(&format!("/v1/connections/{id}"), &admin_b).await;
    assert_eq!(status, 404, "B must not see A's account: {got}");
    let (status, tested) = app
        .post(&format!("/v1/connections/{id}/test"), &admin_b, json!({}))
        .await;
    assert_eq!(status, 404, "B must not act as A's account: {tested}");
    let (status, list) = app.get("/v1/connections", &admin_b).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["connections"], json!([]), "{list}");
    assert_eq!(list["stats"]["total"], 0);
    assert_eq!(
        list["skipped"],
        json!([{"id": id, "reason": "misplaced"}]),
        "{list}"
    );
    assert!(!list.to_string().contains("admin@acme.test"));
    // A still has its connection, untouched.
    let (status, got) = app.get(&format!("/v1/connections/{id}"), &admin_a).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["connected_as"]["email"], "admin@acme.test");
}

#[tokio::test]
async fn one_unreadable_connection_does_not_fail_the_list_or_reach_the_logs() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let (status, created) = app
        .post("/v1/connections", &admin, zendesk("zd-sandbox-token-0001"))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // A second item whose status is a value no version of Conduit wrote.
    let marker = "stored-value-7f3c9e";
    let bad_id = "con_01JUNREADABLE0000000000000";
    copy_item(
        &app,
        &t,
        &t,
        &format!("CONN#{id}"),
        &format!("CONN#{bad_id}"),
        Some(("status", AttributeValue::S(marker.into()))),
    )
    .await;
    let (status, list) = app.get("/v1/connections", &admin).await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "{list}");
    assert_eq!(
        list["skipped"],
        json!([{"id": bad_id, "reason": "unreadable"}]),
        "{list}"
    );
    assert!(
        !app.logs().contains(marker),
        "logs quote a stored value: {}",
        app.logs_about(marker)
    );
    assert!(
        app.logs().contains(bad_id),
        "the skipped item is logged by id"
    );
}

#[tokio::test]
async fn one_unreadable_sync_config_does_not_fail_the_list() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let marker = "stored-value-5b1d02";
    app.dynamo()
        .put_item()
        .table_name(app.table())
        .item("pk", AttributeValue::S(format!("T#{t}")))
        .item("sk", AttributeValue::S("SYNCCFG#cfg_broken".into()))
        .item("tenant", AttributeValue::S(t.clone()))
        .item("id", AttributeValue::S("cfg_broken".into()))
        .item("version", AttributeValue::S(marker.into()))
        .send()
        .await
        .expect("put item");
    let (status, list) = app.get("/v1/sync/configs", &admin).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["configs"], json!([]), "{list}");
    assert_eq!(
        list["skipped"],
        json!([{"id": "cfg_broken", "reason": "unreadable"}]),
        "{list}"
    );
    assert!(!app.logs().contains(marker), "{}", app.logs_about(marker));
}

#[tokio::test]
async fn tenant_urls_carrying_internal_ipv4_inside_ipv6_are_refused() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let base = format!("{}/oauth.custom.example", app.sandbox_url());
    for token_url in [
        "https://[64:ff9b::a9fe:a9fe]/token",
        "https://[64:ff9b:1::a9fe:a9fe]/token",
        "https://[::a9fe:a9fe]/token",
        "https://[::ffff:0:a9fe:a9fe]/token",
        "https://[::ffff:a9fe:a9fe]/token",
        "https://[2002:a9fe:a9fe::]/token",
        "https://[2001:0:808:808::5601:5601]/token",
        "https://[fd00::1]/token",
        "https://100.64.0.1/token",
        "https://198.18.0.1/token",
    ] {
        let (status, body) = app
            .send(
                "PUT",
                "/v1/providers/custom_oauth/app-credentials",
                &admin,
                Some(json!({
                    "client_id": "c",
                    "client_secret": "s",
                    "settings": {
                        "authorize_url": format!("{base}/authorize"),
                        "token_url": token_url,
                        "userinfo_url": format!("{base}/userinfo"),
                        "api_base_url": format!("{base}/api"),
                    },
                })),
            )
            .await;
        assert_eq!(status, 400, "{token_url} was accepted: {body}");
        assert_eq!(body["error"]["code"], "invalid_fields", "{body}");
    }
    assert_eq!(app.config_items(&t).await, 0, "nothing was stored");
}

#[tokio::test]
async fn revocation_with_a_secret_that_needs_form_encoding_revokes_the_grant() {
    let app = TestApp::spawn().await;
    let _lock = provider_lock("custom_oauth").await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let client_id = format!("byo+{t}/=");
    let secret = "s3+cr/et==%41-0001";
    app.sandbox()
        .add_oauth_client(OAuthClient {
            provider: OAuthProvider::CustomOauth,
            client_id: client_id.clone(),
            client_secret: secret.into(),
        })
        .expect("register client");
    let base = format!("{}/oauth.custom.example", app.sandbox_url());
    let (status, body) = app
        .send(
            "PUT",
            "/v1/providers/custom_oauth/app-credentials",
            &admin,
            Some(json!({
                "client_id": client_id,
                "client_secret": secret,
                "scopes": ["profile"],
                "settings": {
                    "authorize_url": format!("{base}/authorize"),
                    "token_url": format!("{base}/token"),
                    "revoke_url": format!("{base}/revoke"),
                    "userinfo_url": format!("{base}/userinfo"),
                    "api_base_url": format!("{base}/api"),
                    "client_auth": "basic",
                },
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let out = app
        .oauth_connect(
            &admin,
            "custom_oauth",
            json!({"return_to": "http://localhost:5173/integrations"}),
            "",
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    let id = out.connection_id.expect("id");
    let tokens = app.tokens(&t, &id).await;
    let (status, body) = app.delete(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(status, 204, "revocation must succeed: {body}");
    let grant = app
        .sandbox()
        .oauth_grant(&tokens["refresh_token"])
        .expect("grant");
    assert!(grant.revoked, "the grant is still live at the provider");
    app.assert_secret_absent(secret, &t).await;
}

#[tokio::test]
async fn concurrent_connection_tests_while_a_token_is_due_all_record_their_result() {
    let app = TestApp::spawn().await;
    let _lock = provider_lock("hubspot").await;
    let u = app
        .sandbox()
        .add_oauth_user(sandbox::OAuthUser::new(
            OAuthProvider::Hubspot,
            format!("race-{}@sandbox.test", app.tenant()),
        ))
        .expect("user");
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let out = app
        .oauth_connect(
            &admin,
            "hubspot",
            json!({"return_to": "http://localhost:5173/integrations"}),
            &format!("login_hint={}", u.email),
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    let id = out.connection_id.expect("id");
    // Rounds of six tests at once, each starting inside the refresh window: one
    // refreshes under the lease, the others wait for it, and all of them write their
    // result over versions the others moved.
    for _ in 0..3 {
        app.make_due(&t, &id).await;
        let path = format!("/v1/connections/{id}/test");
        let tests = (0..6).map(|_| app.post(&path, &admin, json!({})));
        for (status, body) in futures::future::join_all(tests).await {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["ok"], true, "{body}");
        }
    }
    let (_, got) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(got["status"], "connected", "{got}");
}

/// Registers the tenant's custom OAuth app with an issuer (the sandbox's seeded client).
async fn custom_app_with_issuer(app: &TestApp, admin: &str, issuer: &str) {
    let base = format!("{}/oauth.custom.example", app.sandbox_url());
    let (status, body) = app
        .send(
            "PUT",
            "/v1/providers/custom_oauth/app-credentials",
            admin,
            Some(json!({
                "client_id": "custom_oauth-sandbox-client-id",
                "client_secret": "custom_oauth-sandbox-client-secret",
                "scopes": ["profile"],
                "settings": {
                    "authorize_url": format!("{base}/authorize"),
                    "token_url": format!("{base}/token"),
                    "userinfo_url": format!("{base}/userinfo"),
                    "api_base_url": format!("{base}/api"),
                    "issuer": issuer,
                },
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_callback_from_another_issuer_is_refused_and_consumes_the_flow() {
    let app = TestApp::spawn().await;
    let _lock = provider_lock("custom_oauth").await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let issuer = "https://issuer.custom.example";
    custom_app_with_issuer(&app, &admin, issuer).await;
    let start = json!({"return_to": "http://localhost:5173/integrations"});

    // A mix-up attack: the authorization response names another server.
    let (status, started) = app.oauth_start(&admin, "custom_oauth", start.clone()).await;
    assert_eq!(status, 200, "{started}");
    let (_, callback) = app
        .get_no_redirect(started["authorize_url"].as_str().unwrap())
        .await;
    let callback = callback.expect("callback URL");
    let (status, back) = app
        .get_no_redirect(&format!("{callback}&iss=https%3A%2F%2Fevil.example"))
        .await;
    assert_eq!(status, 302);
    let back = back.expect("return URL");
    assert_eq!(
        scenarios::query_param(&back, "reason").as_deref(),
        Some("issuer_mismatch"),
        "{back}"
    );
    // The flow is consumed: the genuine response cannot be replayed after it.
    let (status, again) = app.get_no_redirect(&callback).await;
    assert_eq!(status, 400, "replayed callback: {again:?}");
    let (_, list) = app.get("/v1/connections", &admin).await;
    assert_eq!(list["connections"], json!([]), "{list}");

    // The right issuer, and no issuer at all (not required), connect.
    for iss in [Some(issuer), None] {
        let (_, started) = app.oauth_start(&admin, "custom_oauth", start.clone()).await;
        let (_, callback) = app
            .get_no_redirect(started["authorize_url"].as_str().unwrap())
            .await;
        let callback = callback.expect("callback URL");
        let url = match iss {
            Some(i) => format!(
                "{callback}&iss={}",
                i.replace(':', "%3A").replace('/', "%2F")
            ),
            None => callback,
        };
        let (_, back) = app.get_no_redirect(&url).await;
        let back = back.expect("return URL");
        assert_eq!(
            scenarios::query_param(&back, "status").as_deref(),
            Some("connected"),
            "{iss:?}: {back}"
        );
    }
}

/// Whether the tenant's partition holds an item at `sk`.
async fn has_item(app: &TestApp, tenant: &str, sk: &str) -> bool {
    app.dynamo()
        .get_item()
        .table_name(app.table())
        .key("pk", AttributeValue::S(format!("T#{tenant}")))
        .key("sk", AttributeValue::S(sk.to_owned()))
        .send()
        .await
        .expect("get item")
        .item
        .is_some()
}

#[tokio::test]
async fn an_account_marked_under_the_old_joined_key_stays_taken_and_moves_on_save() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let (status, created) = app
        .post("/v1/connections", &admin, zendesk("zd-sandbox-token-0001"))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = conduit::domain::ConnectionId::parse(created["id"].as_str().unwrap()).unwrap();
    // Rewind the connection to how it was stored before keys were hashed.
    let conn = app.connection(&t, &id).await;
    let lib = app.app();
    let provider = lib.catalogue.provider("zendesk").unwrap();
    let method = provider.auth_method(Some(&conn.auth_method)).unwrap();
    let fields = conduit::providers::Fields {
        public: conn.settings.clone(),
        secret: Default::default(),
    };
    let connector = conduit::connector::Connector {
        provider,
        method,
        fields: &fields,
        origin_override: lib.config.provider_origin_override.as_ref(),
    };
    let identity = conn.identity.clone().expect("identity");
    let new_key = connector.account_key(&identity).expect("key");
    let legacy = connector.legacy_account_key(&identity).expect("legacy key");
    assert_eq!(conn.account_key.as_deref(), Some(new_key.as_str()));
    assert!(new_key.len() < 80 && !new_key.contains('|'), "{new_key}");
    let new_sk = format!("CONNKEY#zendesk#{new_key}");
    let legacy_sk = format!("CONNKEY#zendesk#{legacy}");
    assert!(has_item(&app, &t, &new_sk).await);
    let ddb = app.dynamo();
    ddb.delete_item()
        .table_name(app.table())
        .key("pk", AttributeValue::S(format!("T#{t}")))
        .key("sk", AttributeValue::S(new_sk.clone()))
        .send()
        .await
        .expect("delete marker");
    ddb.put_item()
        .table_name(app.table())
        .item("pk", AttributeValue::S(format!("T#{t}")))
        .item("sk", AttributeValue::S(legacy_sk.clone()))
        .item("connection_id", AttributeValue::S(id.to_string()))
        .send()
        .await
        .expect("put legacy marker");
    ddb.update_item()
        .table_name(app.table())
        .key("pk", AttributeValue::S(format!("T#{t}")))
        .key("sk", AttributeValue::S(format!("CONN#{id}")))
        .update_expression("SET account_key = :k")
        .expression_attribute_values(":k", AttributeValue::S(legacy.clone()))
        .send()
        .await
        .expect("rewind account key");

    // The account is still taken.
    let (status, dup) = app
        .post("/v1/connections", &admin, zendesk("zd-sandbox-token-0001"))
        .await;
    assert_eq!(status, 409, "{dup}");
    assert_eq!(dup["error"]["code"], "connection_exists", "{dup}");

    // Saving its credentials moves the marker to the new key.
    let (status, saved) = app
        .patch(
            &format!("/v1/connections/{id}"),
            &admin,
            json!({"credentials": {"api_token": "zd-sandbox-token-0001"}}),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    assert!(has_item(&app, &t, &new_sk).await, "new marker written");
    assert!(!has_item(&app, &t, &legacy_sk).await, "old marker removed");
    let (status, dup) = app
        .post("/v1/connections", &admin, zendesk("zd-sandbox-token-0001"))
        .await;
    assert_eq!(status, 409, "{dup}");
}

#[tokio::test]
async fn unreadable_records_logs_and_conflicts_are_skipped_not_fatal() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let member = app.token(&t, Role::Member);
    let marker = "stored-value-a91c44";
    let mut ids = Vec::new();
    for email in ["ok@example.com", "broken@example.com"] {
        let (status, rec) = app
            .post(
                "/v1/records/contacts",
                &admin,
                json!({"fields": {"email": email, "first_name": "Ann"}}),
            )
            .await;
        assert_eq!(status, 201, "{rec}");
        ids.push(rec["id"].as_str().unwrap().to_owned());
    }
    // The second record's body no longer parses (and would quote the marker).
    app.dynamo()
        .update_item()
        .table_name(app.table())
        .key(
            "pk",
            AttributeValue::S(conduit::store::keys::record(
                &conduit::domain::TenantId::parse(&t).unwrap(),
                conduit::sync::schema::Entity::Contacts,
                &conduit::domain::RecordId::parse(&ids[1]).unwrap(),
            )),
        )
        .key("sk", AttributeValue::S(ids[1].clone()))
        .update_expression("SET body = :b")
        .expression_attribute_values(
            ":b",
            AttributeValue::S(format!("{{\"first_name\": {marker}")),
        )
        .send()
        .await
        .expect("update item");
    let (status, list) = app.get("/v1/records/contacts", &member).await;
    assert_eq!(status, 200, "{list}");
    let listed: Vec<&str> = list["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(listed, vec![ids[0].as_str()], "{list}");
    assert_eq!(
        list["skipped"],
        json!([{"id": ids[1], "reason": "unreadable"}]),
        "{list}"
    );

    // A log and a conflict item with attributes no version of Conduit wrote.
    let log_id = "slog_01jz0000000000000000000000";
    let conflict_id = "sconf_broken";
    for (pk, sk) in [
        (format!("SYNCLOG#{t}"), log_id),
        (format!("SYNCCONF#{t}"), conflict_id),
    ] {
        app.dynamo()
            .put_item()
            .table_name(app.table())
            .item("pk", AttributeValue::S(pk))
            .item("sk", AttributeValue::S(sk.to_owned()))
            .item("tenant", AttributeValue::S(t.clone()))
            .item("status", AttributeValue::N("7".into()))
            .item("entity", AttributeValue::S(marker.into()))
            .send()
            .await
            .expect("put item");
    }
    let (status, logs) = app.get("/v1/sync/logs", &member).await;
    assert_eq!(status, 200, "{logs}");
    assert_eq!(logs["logs"], json!([]), "{logs}");
    assert_eq!(
        logs["skipped"],
        json!([{"id": log_id, "reason": "unreadable"}]),
        "{logs}"
    );
    let (status, conflicts) = app.get("/v1/sync/conflicts?status=all", &member).await;
    assert_eq!(status, 200, "{conflicts}");
    assert_eq!(conflicts["conflicts"], json!([]), "{conflicts}");
    assert_eq!(
        conflicts["skipped"],
        json!([{"id": conflict_id, "reason": "unreadable"}]),
        "{conflicts}"
    );
    assert!(
        !app.logs().contains(marker),
        "logs quote a stored value: {}",
        app.logs_about(marker)
    );
}
