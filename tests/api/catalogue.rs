use scenarios::{Role, TestApp};

#[tokio::test]
async fn the_catalogue_lists_every_provider_with_its_forms() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let (status, body) = app.get("/v1/providers", &app.token(&t, Role::Member)).await;
    assert_eq!(status, 200, "{body}");
    let providers = body["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 14);
    let zendesk = providers.iter().find(|p| p["id"] == "zendesk").unwrap();
    let fields = zendesk["auth"][0]["fields"].as_array().unwrap();
    let names: Vec<&str> = fields.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["subdomain", "email", "api_token"]);
    assert_eq!(fields[2]["secret"], true);

    let (status, body) = app
        .get("/v1/providers/hubspot", &app.token(&t, Role::Member))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider"]["auth"][0]["type"], "oauth2");
    assert_eq!(
        body["oauth_app"]["source"], "platform",
        "the local stack's platform secret holds the sandbox's HubSpot app"
    );

    // A custom OAuth provider's endpoints come with the tenant's app credentials.
    let (status, body) = app
        .get("/v1/providers/custom_oauth", &app.token(&t, Role::Member))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["oauth_app"]["source"], "none");
    let app_fields: Vec<&str> = body["provider"]["auth"][0]["app_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(app_fields.contains(&"token_url") && app_fields.contains(&"userinfo_url"));

    let (status, body) = app
        .get("/v1/providers/nope", &app.token(&t, Role::Member))
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn requests_without_a_valid_token_never_reach_a_handler() {
    let app = TestApp::spawn().await;
    let (status, _) = app.get("/v1/providers", "").await;
    assert_eq!(status, 401);
    let (status, _) = app.get("/v1/providers", "not-a-jwt").await;
    assert_eq!(status, 401);
    let forged = app.token_with_key(&app.tenant(), Role::Admin, b"some other key");
    let (status, _) = app.get("/v1/providers", &forged).await;
    assert_eq!(status, 401);
}
