use scenarios::{Role, TestApp};
use serde_json::json;

#[tokio::test]
async fn a_tenant_brings_its_own_oauth_app() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let member = app.token(&t, Role::Member);
    let path = "/v1/providers/hubspot/app-credentials";
    let secret = "hs-client-secret-000000000042";

    let (status, _) = app.get(path, &admin).await;
    assert_eq!(status, 404);
    let body = json!({"client_id": "my-client", "client_secret": secret, "redirect_uri": "https://api.example.com/v1/oauth/hubspot/callback", "scopes": ["oauth", "crm.objects.contacts.read"]});
    let (status, created) = app.send("PUT", path, &admin, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["client_secret"], "••••0042");
    assert_eq!(created["version"], 1);
    assert!(!created.to_string().contains(secret));

    let (status, got) = app.get(path, &member).await;
    assert_eq!(status, 200);
    assert_eq!(got["client_id"], "my-client");
    assert_eq!(got["client_secret"], "••••0042");

    // Without a new secret the stored one is kept.
    let (status, updated) = app
        .send(
            "PUT",
            path,
            &admin,
            Some(json!({"client_id": "my-client-2"})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["client_secret"], "••••0042");
    assert_eq!(updated["version"], 2);
    let (status, _) = app
        .send_with(
            "PUT",
            path,
            &admin,
            Some(json!({"client_id": "x"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, 412);

    let (_, provider) = app.get("/v1/providers/hubspot", &member).await;
    assert_eq!(provider["oauth_app"]["source"], "tenant");

    let (status, resp) = app
        .send(
            "PUT",
            "/v1/providers/freshdesk/app-credentials",
            &admin,
            Some(json!({"client_id": "c", "client_secret": "s"})),
        )
        .await;
    assert_eq!(status, 400, "{resp}");
    assert_eq!(resp["error"]["code"], "no_oauth");

    let (status, _) = app.delete(path, &admin).await;
    assert_eq!(status, 204);
    let (status, _) = app.get(path, &admin).await;
    assert_eq!(status, 404);
    let actions = app.audit_actions(&t).await;
    assert_eq!(
        actions
            .iter()
            .filter(|(a, _)| a == "app_credentials.put")
            .count(),
        2
    );
    assert!(actions.iter().any(|(a, _)| a == "app_credentials.delete"));
    app.assert_secret_absent(secret, &t).await;
}
