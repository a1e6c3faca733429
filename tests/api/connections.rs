use scenarios::{Role, TestApp, zendesk};
use serde_json::json;

#[tokio::test]
async fn an_api_key_connection_lives_its_whole_lifecycle() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);

    let (status, created) = app
        .post("/v1/connections", &admin, zendesk("zd-sandbox-token-0001"))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("con_"));
    assert_eq!(created["status"], "connected");
    assert_eq!(created["credentials"]["api_token"], "••••0001");
    assert_eq!(created["credentials"]["subdomain"], "acme");
    assert_eq!(created["connected_as"]["email"], "admin@acme.test");
    assert_eq!(created["label"], "Support desk");
    assert_eq!(created["version"], 1);
    assert!(!created.to_string().contains("zd-sandbox-token-0001"));

    let (status, list) = app.get("/v1/connections", &admin).await;
    assert_eq!(status, 200);
    assert_eq!(list["connections"].as_array().unwrap().len(), 1);
    assert_eq!(list["stats"]["total"], 1);
    assert_eq!(list["stats"]["by_provider"]["zendesk"], 1);
    assert_eq!(list["stats"]["by_status"]["connected"], 1);
    let (_, filtered) = app
        .get("/v1/connections?provider=zendesk&status=connected", &admin)
        .await;
    assert_eq!(filtered["connections"].as_array().unwrap().len(), 1);
    let (_, filtered) = app.get("/v1/connections?status=inactive", &admin).await;
    assert_eq!(filtered["connections"].as_array().unwrap().len(), 0);

    let (status, got) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(status, 200);
    assert_eq!(got["id"], id.as_str());

    let (status, renamed) = app
        .patch(
            &format!("/v1/connections/{id}"),
            &admin,
            json!({"label": "Zendesk EU"}),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["label"], "Zendesk EU");
    assert_eq!(renamed["version"], 2);

    let (status, stale) = app
        .send_with(
            "PATCH",
            &format!("/v1/connections/{id}"),
            &admin,
            Some(json!({"label": "x"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, 412, "{stale}");

    let (status, tested) = app
        .post(&format!("/v1/connections/{id}/test"), &admin, json!({}))
        .await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested["ok"], true);

    let (status, off) = app
        .post(
            &format!("/v1/connections/{id}/deactivate"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(off["status"], "inactive");
    let (status, on) = app
        .post(&format!("/v1/connections/{id}/activate"), &admin, json!({}))
        .await;
    assert_eq!(status, 200, "{on}");
    assert_eq!(on["status"], "connected");

    let (status, dup) = app
        .post("/v1/connections", &admin, zendesk("zd-sandbox-token-0001"))
        .await;
    assert_eq!(status, 409, "{dup}");
    assert_eq!(dup["error"]["code"], "connection_exists");

    let (status, _) = app.delete(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(status, 204);
    let (status, _) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(status, 404);

    // The account is free again once its connection is gone.
    let (status, again) = app
        .post("/v1/connections", &admin, zendesk("zd-sandbox-token-0001"))
        .await;
    assert_eq!(status, 201, "{again}");

    let actions = app.audit_actions(&t).await;
    for action in [
        "connection.create",
        "connection.update",
        "connection.test",
        "connection.deactivate",
        "connection.activate",
        "connection.delete",
    ] {
        assert!(
            actions.iter().any(|(a, o)| a == action && o == "success"),
            "{action} in {actions:?}"
        );
    }
    app.assert_secret_absent("zd-sandbox-token-0001", &t).await;
}

#[tokio::test]
async fn rejected_credentials_store_nothing_and_are_audited() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let (status, body) = app
        .post("/v1/connections", &admin, zendesk("wrong-token-123456789"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "credentials_rejected");
    assert!(!body.to_string().contains("wrong-token-123456789"));
    assert_eq!(app.config_items(&t).await, 0);
    let actions = app.audit_actions(&t).await;
    assert!(
        actions.contains(&("connection.create".into(), "failure".into())),
        "{actions:?}"
    );
    app.assert_secret_absent("wrong-token-123456789", &t).await;
}

#[tokio::test]
async fn credentials_are_tested_before_saving() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let (status, ok) = app
        .post(
            "/v1/connections/test",
            &admin,
            without_label(zendesk("zd-sandbox-token-0001")),
        )
        .await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["ok"], true);
    assert_eq!(ok["connected_as"]["email"], "admin@acme.test");
    let (status, bad) = app
        .post(
            "/v1/connections/test",
            &admin,
            without_label(zendesk("nope-nope-nope-nope")),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(bad["ok"], false);
    assert_eq!(bad["error"]["code"], "credentials_rejected");
    assert_eq!(app.config_items(&t).await, 0);
}

fn without_label(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("label");
    }
    v
}

#[tokio::test]
async fn a_provider_outage_is_a_502_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    // A private sandbox, so the forced fault cannot reach another test's requests.
    let private = sandbox::Sandbox::start(0).await.unwrap();
    private.state().force_status(503, 1, None).unwrap();
    let body = json!({
        "provider": "custom_api",
        "auth_method": "bearer",
        "credentials": {"base_url": format!("{}/custom.example/api", private.url()), "check_path": "/me", "token": "custom-sandbox-token-0001"},
    });
    let (status, resp) = app.post("/v1/connections", &admin, body.clone()).await;
    assert_eq!(status, 502, "{resp}");
    assert_eq!(resp["error"]["code"], "provider_unavailable");
    assert_eq!(app.config_items(&t).await, 0);
    let (status, resp) = app.post("/v1/connections", &admin, body).await;
    assert_eq!(status, 201, "{resp}");
    private.shutdown().await;
}

#[tokio::test]
async fn changed_credentials_are_checked_before_they_replace_the_old_ones() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let (_, created) = app
        .post("/v1/connections", &admin, zendesk("zd-sandbox-token-0001"))
        .await;
    let id = created["id"].as_str().unwrap();
    let (status, body) = app
        .patch(
            &format!("/v1/connections/{id}"),
            &admin,
            json!({"credentials": {"api_token": "bad-token-0000000000"}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (_, still) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(still["version"], 1);
    assert_eq!(still["credentials"]["api_token"], "••••0001");
    let (status, body) = app
        .patch(
            &format!("/v1/connections/{id}"),
            &admin,
            json!({"credentials": {"api_token": "zd-sandbox-token-0001"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
}

#[tokio::test]
async fn every_api_key_provider_connects_against_its_check_endpoint() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let sb = app.sandbox_url();
    let cases = [
        (
            "freshdesk",
            json!({"subdomain": "acme", "api_key": "fd-sandbox-key-0001"}),
            None,
        ),
        (
            "pipedrive",
            json!({"api_token": "pd-sandbox-token-0001"}),
            None,
        ),
        (
            "hubspot",
            json!({"access_token": "pat-na1-sandbox-0001"}),
            Some("private_app"),
        ),
        (
            "chatwoot",
            json!({"base_url": format!("{sb}/app.chatwoot.com"), "account_id": "1", "access_token": "cw-sandbox-token-0001"}),
            None,
        ),
        (
            "custom_api",
            json!({"base_url": format!("{sb}/custom.example/api"), "check_path": "/me", "token": "custom-sandbox-token-0001"}),
            Some("bearer"),
        ),
        (
            "custom_api",
            json!({"base_url": format!("{sb}/custom.example/api"), "check_path": "/me", "header_name": "X-Api-Key", "api_key": "custom-sandbox-key-0001"}),
            Some("header"),
        ),
        (
            "custom_api",
            json!({"base_url": format!("{sb}/custom.example/api"), "check_path": "/me", "username": "custom-user", "password": "custom-pass-0001"}),
            Some("basic"),
        ),
    ];
    for (provider, credentials, method) in cases {
        let mut body = json!({"provider": provider, "credentials": credentials});
        if let Some(m) = method {
            body["auth_method"] = json!(m);
        }
        let (status, resp) = app.post("/v1/connections", &admin, body).await;
        assert_eq!(status, 201, "{provider}/{method:?}: {resp}");
        assert_eq!(resp["status"], "connected");
        assert!(
            resp["connected_as"]["display"].is_string(),
            "{provider}: {resp}"
        );
    }
    let (_, list) = app.get("/v1/connections", &admin).await;
    assert_eq!(list["stats"]["total"], 7);
    assert_eq!(list["stats"]["by_provider"]["custom_api"], 3);
}

#[tokio::test]
async fn members_read_and_admins_write() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let member = app.token(&t, Role::Member);
    let (_, created) = app
        .post("/v1/connections", &admin, zendesk("zd-sandbox-token-0001"))
        .await;
    let id = created["id"].as_str().unwrap();

    assert_eq!(app.get("/v1/connections", &member).await.0, 200);
    assert_eq!(
        app.get(&format!("/v1/connections/{id}"), &member).await.0,
        200
    );
    assert_eq!(app.get("/v1/providers", &member).await.0, 200);

    let writes = [
        (
            "POST",
            "/v1/connections".to_owned(),
            Some(zendesk("zd-sandbox-token-0001")),
        ),
        (
            "POST",
            "/v1/connections/test".to_owned(),
            Some(zendesk("zd-sandbox-token-0001")),
        ),
        (
            "PATCH",
            format!("/v1/connections/{id}"),
            Some(json!({"label": "x"})),
        ),
        ("DELETE", format!("/v1/connections/{id}"), None),
        (
            "POST",
            format!("/v1/connections/{id}/activate"),
            Some(json!({})),
        ),
        (
            "POST",
            format!("/v1/connections/{id}/deactivate"),
            Some(json!({})),
        ),
        (
            "POST",
            format!("/v1/connections/{id}/test"),
            Some(json!({})),
        ),
        (
            "PUT",
            "/v1/providers/hubspot/app-credentials".to_owned(),
            Some(json!({"client_id": "c", "client_secret": "s"})),
        ),
        (
            "DELETE",
            "/v1/providers/hubspot/app-credentials".to_owned(),
            None,
        ),
    ];
    for (method, path, body) in writes {
        let (status, resp) = app.send(method, &path, &member, body).await;
        assert_eq!(status, 403, "{method} {path}: {resp}");
        assert_eq!(resp["error"]["code"], "forbidden");
    }
    let (_, still) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(still["version"], 1);
    let denied = app
        .audit_actions(&t)
        .await
        .into_iter()
        .filter(|(_, o)| o == "denied")
        .count();
    assert_eq!(denied, 9);
}
