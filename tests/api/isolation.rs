use scenarios::{Role, TestApp, zendesk};
use serde_json::json;

#[tokio::test]
async fn another_tenant_sees_and_changes_nothing_on_any_route() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant(), app.tenant());
    let admin_a = app.token(&a, Role::Admin);
    let admin_b = app.token(&b, Role::Admin);
    let (_, created) = app
        .post(
            "/v1/connections",
            &admin_a,
            zendesk("zd-sandbox-token-0001"),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let (status, _) = app
        .send(
            "PUT",
            "/v1/providers/salesforce/app-credentials",
            &admin_a,
            Some(json!({"client_id": "a-client", "client_secret": "a-secret-000000000001"})),
        )
        .await;
    assert_eq!(status, 201);

    let routes = [
        ("GET", format!("/v1/connections/{id}"), None),
        (
            "PATCH",
            format!("/v1/connections/{id}"),
            Some(json!({"label": "mine now"})),
        ),
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
        ("DELETE", format!("/v1/connections/{id}"), None),
        (
            "GET",
            "/v1/providers/salesforce/app-credentials".to_owned(),
            None,
        ),
        (
            "DELETE",
            "/v1/providers/salesforce/app-credentials".to_owned(),
            None,
        ),
    ];
    for (method, path, body) in routes {
        let (status, resp) = app.send(method, &path, &admin_b, body).await;
        assert_eq!(status, 404, "{method} {path}: {resp}");
    }
    let (_, list_b) = app.get("/v1/connections", &admin_b).await;
    assert_eq!(list_b["stats"]["total"], 0);
    // Tenant B may connect the same provider account: uniqueness is per tenant.
    let (status, _) = app
        .post(
            "/v1/connections",
            &admin_b,
            zendesk("zd-sandbox-token-0001"),
        )
        .await;
    assert_eq!(status, 201);
    let (_, list_b) = app.get("/v1/connections", &admin_b).await;
    assert_eq!(list_b["stats"]["total"], 1);

    let (_, still) = app.get(&format!("/v1/connections/{id}"), &admin_a).await;
    assert_eq!(still["version"], 1);
    assert_eq!(still["label"], "Support desk");
    let (status, _) = app
        .get("/v1/providers/salesforce/app-credentials", &admin_a)
        .await;
    assert_eq!(status, 200);
}
