//! The OAuth connect flow: start → the sandbox's authorize page → callback → back on
//! the dashboard, connected, for every provider's quirks; and every way a flow must be
//! refused (replayed, expired, foreign state; tampered redirect; foreign return_to).

use sandbox::{OAuthClient, OAuthProvider, OAuthUser};
use scenarios::{Role, TestApp, query_param};
use serde_json::{Value, json};

const RETURN_TO: &str = "http://localhost:5173/integrations";

fn start(extra: Value) -> Value {
    let mut body = json!({ "return_to": RETURN_TO });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

/// A fresh sandbox user for `provider`, so grants can be told apart between tests.
fn user(app: &TestApp, user: OAuthUser) -> OAuthUser {
    app.sandbox()
        .add_oauth_user(user)
        .expect("add sandbox user")
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}@sandbox.test",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

#[tokio::test]
async fn hubspot_connects_with_identity_portal_and_scopes() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let email = unique("hs");
    let u = user(
        &app,
        OAuthUser {
            hub_id: 7_700_001,
            ..OAuthUser::new(OAuthProvider::Hubspot, email.clone())
        },
    );

    let (status, started) = app.oauth_start(&admin, "hubspot", start(json!({}))).await;
    assert_eq!(status, 200, "{started}");
    let url = started["authorize_url"].as_str().expect("authorize_url");
    assert_eq!(started["expires_in"], 600);
    assert!(url.contains("/app.hubspot.com/oauth/authorize?"), "{url}");
    assert_eq!(
        query_param(url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(url, "code_challenge").is_some_and(|c| c.len() >= 43));
    assert!(
        query_param(url, "state").is_some_and(|s| s.len() >= 43),
        "≥ 256-bit state"
    );
    assert_eq!(
        query_param(url, "client_id").as_deref(),
        Some("hubspot-sandbox-client-id"),
        "no tenant app: the platform's"
    );
    assert_eq!(
        query_param(url, "scope").as_deref(),
        Some(
            "oauth crm.objects.contacts.read crm.objects.contacts.write crm.schemas.contacts.write \
             crm.objects.companies.read crm.objects.companies.write crm.schemas.companies.write"
        ),
        "the catalogue's default uses: contacts and companies both ways"
    );
    let redirect = query_param(url, "redirect_uri").expect("redirect_uri");
    assert!(
        redirect.ends_with("/v1/oauth/hubspot/callback"),
        "{redirect}"
    );

    let out = app
        .oauth_browse(url, &format!("login_hint={}", u.email))
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    assert!(out.return_url.starts_with(RETURN_TO), "{}", out.return_url);
    let id = out.connection_id.expect("connection id");

    let (status, conn) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(status, 200, "{conn}");
    assert_eq!(conn["status"], "connected");
    assert_eq!(conn["auth_method"], "oauth2");
    assert_eq!(conn["connected_as"]["email"], email.as_str());
    assert_eq!(
        conn["connected_as"]["account"], "7700001",
        "the HubSpot portal id"
    );
    assert_eq!(
        conn["scopes"],
        json!([
            "oauth",
            "crm.objects.contacts.read",
            "crm.objects.contacts.write",
            "crm.schemas.contacts.write",
            "crm.objects.companies.read",
            "crm.objects.companies.write",
            "crm.schemas.companies.write"
        ]),
        "granted scopes"
    );
    assert_eq!(conn["token"]["app"], "platform");
    assert_eq!(conn["token"]["has_refresh_token"], true);
    assert!(conn["token"]["expires_at"].is_string());
    assert!(conn["token"]["next_refresh_at"].is_string());
    assert!(
        conn.get("credentials")
            .is_none_or(|c| !c.to_string().contains("token"))
    );

    // The sandbox saw one code exchange (with the PKCE verifier) for this user.
    let grants = app
        .sandbox()
        .oauth_grants_for_user(OAuthProvider::Hubspot, &email);
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].token_requests, 1);
    assert_eq!(grants[0].client_id, "hubspot-sandbox-client-id");

    let actions = app.audit_actions(&tenant).await;
    assert!(actions.contains(&("oauth.start".into(), "success".into())));
    assert!(actions.contains(&("connection.connect".into(), "success".into())));
}

#[tokio::test]
async fn connecting_the_same_account_again_reauthorises_the_same_connection() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let u = user(
        &app,
        OAuthUser::new(OAuthProvider::Hubspot, unique("again")),
    );
    let hint = format!("login_hint={}", u.email);
    let first = app
        .oauth_connect(&admin, "hubspot", start(json!({})), &hint)
        .await;
    let second = app
        .oauth_connect(&admin, "hubspot", start(json!({})), &hint)
        .await;
    assert_eq!(first.status, "connected");
    assert_eq!(
        second.connection_id, first.connection_id,
        "one connection per account"
    );
    let (_, list) = app.get("/v1/connections?provider=hubspot", &admin).await;
    assert_eq!(list["stats"]["total"], 1);
    assert!(
        app.audit_actions(&tenant)
            .await
            .contains(&("connection.reconnect".into(), "success".into()))
    );
}

#[tokio::test]
async fn salesforce_keeps_its_instance_url_and_sends_no_expiry() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let u = user(
        &app,
        OAuthUser {
            instance_host: "globex.my.salesforce.com".into(),
            ..OAuthUser::new(OAuthProvider::Salesforce, unique("sf"))
        },
    );
    let out = app
        .oauth_connect(
            &admin,
            "salesforce",
            start(json!({"fields": {"login_domain": "test.salesforce.com"}})),
            &format!("login_hint={}", u.email),
        )
        .await;
    assert!(
        out.authorize_url
            .contains("/test.salesforce.com/services/oauth2/authorize")
    );
    assert_eq!(out.status, "connected", "{}", out.return_url);
    let id = out.connection_id.expect("id");
    let (_, conn) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(
        conn["credentials"]["instance_url"], "https://globex.my.salesforce.com",
        "instance_url from the token response, checked against the allowed hosts"
    );
    assert_eq!(conn["credentials"]["login_domain"], "test.salesforce.com");
    assert_eq!(conn["connected_as"]["email"], u.email.as_str());
    assert!(
        conn["connected_as"]["account"]
            .as_str()
            .is_some_and(|a| a.starts_with("00D"))
    );
    assert!(
        conn["token"]["expires_at"].is_null(),
        "Salesforce gives no expiry: none is assumed"
    );
    assert!(
        conn["token"]["next_refresh_at"].is_string(),
        "checked by introspection on schedule"
    );
}

#[tokio::test]
async fn zoho_uses_the_data_centre_and_api_domain_of_the_account() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let u = user(
        &app,
        OAuthUser {
            data_centre: "eu".into(),
            ..OAuthUser::new(OAuthProvider::Zoho, unique("zoho"))
        },
    );
    // The admin picks the default data centre; Zoho sends the browser back with the
    // account's own (accounts-server), where the code must be exchanged.
    let out = app
        .oauth_connect(
            &admin,
            "zoho",
            start(json!({})),
            &format!("login_hint={}", u.email),
        )
        .await;
    assert!(
        out.authorize_url
            .contains("/accounts.zoho.com/oauth/v2/auth"),
        "{}",
        out.authorize_url
    );
    assert_eq!(
        query_param(&out.authorize_url, "access_type").as_deref(),
        Some("offline")
    );
    assert_eq!(out.status, "connected", "{}", out.return_url);
    let id = out.connection_id.expect("id");
    let (_, conn) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(conn["credentials"]["api_domain"], "https://www.zohoapis.eu");
    assert_eq!(conn["credentials"]["data_centre"], "eu");
    assert_eq!(
        conn["connected_as"]["email"],
        u.email.as_str(),
        "identity read at the api_domain with Zoho-oauthtoken"
    );
    assert_eq!(conn["token"]["has_refresh_token"], true);
}

#[tokio::test]
async fn pipedrive_authenticates_with_basic_and_uses_api_domain() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let u = user(
        &app,
        OAuthUser {
            company_domain: "globex".into(),
            company_id: 5_000_777,
            ..OAuthUser::new(OAuthProvider::Pipedrive, unique("pd"))
        },
    );
    let out = app
        .oauth_connect(
            &admin,
            "pipedrive",
            start(json!({})),
            &format!("login_hint={}", u.email),
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    assert!(
        query_param(&out.authorize_url, "code_challenge").is_none(),
        "no PKCE for Pipedrive"
    );
    let (_, conn) = app
        .get(
            &format!("/v1/connections/{}", out.connection_id.expect("id")),
            &admin,
        )
        .await;
    assert_eq!(
        conn["credentials"]["api_domain"],
        "https://globex.pipedrive.com"
    );
    assert_eq!(conn["connected_as"]["account"], "5000777");
}

#[tokio::test]
async fn google_gmail_and_calendar_are_separate_minimal_offline_connections() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let u = user(&app, OAuthUser::new(OAuthProvider::Google, unique("g")));
    let hint = format!("login_hint={}", u.email);

    let (status, body) = app.oauth_start(&admin, "google", start(json!({}))).await;
    assert_eq!(status, 400, "a kind is required: {body}");
    assert_eq!(body["error"]["code"], "invalid_kind");

    let gmail = app
        .oauth_connect(&admin, "google", start(json!({"kind": "gmail"})), &hint)
        .await;
    let calendar = app
        .oauth_connect(&admin, "google", start(json!({"kind": "calendar"})), &hint)
        .await;
    assert_eq!(
        query_param(&gmail.authorize_url, "access_type").as_deref(),
        Some("offline")
    );
    assert_eq!(
        query_param(&gmail.authorize_url, "prompt").as_deref(),
        Some("consent")
    );
    assert_eq!(
        query_param(&gmail.authorize_url, "scope").as_deref(),
        Some("openid email https://www.googleapis.com/auth/gmail.send")
    );
    assert_eq!(
        query_param(&calendar.authorize_url, "scope").as_deref(),
        Some("openid email https://www.googleapis.com/auth/calendar.events")
    );
    assert_eq!(gmail.status, "connected", "{}", gmail.return_url);
    assert_eq!(calendar.status, "connected", "{}", calendar.return_url);
    let (_, g) = app
        .get(
            &format!("/v1/connections/{}", gmail.connection_id.expect("id")),
            &admin,
        )
        .await;
    assert_eq!(g["kind"], "gmail");
    assert_eq!(
        g["token"]["has_refresh_token"], true,
        "offline access gave a refresh token"
    );
}

#[tokio::test]
async fn dynamics_zendesk_and_genesys_connect() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    for (provider, fields) in [
        ("dynamics365", json!({"org": "acme", "crm_region": "crm"})),
        ("zendesk", json!({"subdomain": "acme"})),
        ("genesys", json!({"region": "mypurecloud.com"})),
    ] {
        let out = app
            .oauth_connect(&admin, provider, start(json!({"fields": fields})), "")
            .await;
        assert_eq!(out.status, "connected", "{provider}: {}", out.return_url);
    }
    let (_, list) = app.get("/v1/connections", &admin).await;
    assert_eq!(list["stats"]["total"], 3);
}

#[tokio::test]
async fn a_tenant_app_is_used_before_the_platform_app() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let client_id = format!("tenant-app-{tenant}");
    app.sandbox()
        .add_oauth_client(OAuthClient {
            provider: OAuthProvider::Hubspot,
            client_id: client_id.clone(),
            client_secret: "tenant-app-secret-0001".into(),
        })
        .expect("register client");
    let (status, body) = app
        .send(
            "PUT",
            "/v1/providers/hubspot/app-credentials",
            &admin,
            Some(json!({"client_id": client_id, "client_secret": "tenant-app-secret-0001"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let u = user(&app, OAuthUser::new(OAuthProvider::Hubspot, unique("byo")));
    let out = app
        .oauth_connect(
            &admin,
            "hubspot",
            start(json!({})),
            &format!("login_hint={}", u.email),
        )
        .await;
    assert_eq!(
        query_param(&out.authorize_url, "client_id").as_deref(),
        Some(client_id.as_str())
    );
    assert_eq!(out.status, "connected", "{}", out.return_url);
    let grants = app
        .sandbox()
        .oauth_grants_for_user(OAuthProvider::Hubspot, &u.email);
    assert_eq!(grants[0].client_id, client_id);
    let (_, conn) = app
        .get(
            &format!("/v1/connections/{}", out.connection_id.expect("id")),
            &admin,
        )
        .await;
    assert_eq!(conn["token"]["app"], "tenant");
    app.assert_secret_absent("tenant-app-secret-0001", &tenant)
        .await;
}

#[tokio::test]
async fn without_any_app_start_says_to_add_app_credentials() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let (status, body) = app
        .oauth_start(&admin, "custom_oauth", start(json!({})))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "oauth_app_required");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("app-credentials"))
    );
}

#[tokio::test]
async fn a_custom_oauth_provider_connects_through_the_tenants_endpoints() {
    let app = TestApp::spawn().await;
    let _lock = scenarios::provider_lock("custom_oauth").await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let base = format!("{}/oauth.custom.example", app.sandbox_url());
    let settings = json!({
        "authorize_url": format!("{base}/authorize"),
        "token_url": format!("{base}/token"),
        "revoke_url": format!("{base}/revoke"),
        "userinfo_url": format!("{base}/userinfo"),
        "api_base_url": format!("{base}/api"),
        "client_auth": "basic",
    });
    // Endpoints are validated like any tenant URL.
    let (status, body) = app
        .send(
            "PUT",
            "/v1/providers/custom_oauth/app-credentials",
            &admin,
            Some(json!({
                "client_id": "custom_oauth-sandbox-client-id",
                "client_secret": "custom_oauth-sandbox-client-secret",
                "settings": {"authorize_url": "ftp://x", "token_url": "http://169.254.169.254/token",
                             "userinfo_url": "https://10.0.0.1/me", "api_base_url": "https://api.example.com"},
            })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let bad: Vec<&str> = body["error"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(|d| d["field"].as_str())
        .collect();
    assert!(
        bad.contains(&"settings.authorize_url") && bad.contains(&"settings.token_url"),
        "{body}"
    );

    let (status, body) = app
        .send(
            "PUT",
            "/v1/providers/custom_oauth/app-credentials",
            &admin,
            Some(json!({
                "client_id": "custom_oauth-sandbox-client-id",
                "client_secret": "custom_oauth-sandbox-client-secret",
                "scopes": ["profile", "contacts"],
                "settings": settings,
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let out = app
        .oauth_connect(&admin, "custom_oauth", start(json!({})), "")
        .await;
    assert!(out.authorize_url.starts_with(&format!("{base}/authorize?")));
    assert_eq!(
        query_param(&out.authorize_url, "scope").as_deref(),
        Some("profile contacts")
    );
    assert_eq!(out.status, "connected", "{}", out.return_url);
    let (_, conn) = app
        .get(
            &format!("/v1/connections/{}", out.connection_id.expect("id")),
            &admin,
        )
        .await;
    assert_eq!(conn["status"], "connected");
    assert!(conn["connected_as"]["id"].is_string(), "{conn}");
}

#[tokio::test]
async fn the_provider_denying_access_returns_an_error_to_the_dashboard() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let out = app
        .oauth_connect(&admin, "hubspot", start(json!({})), "sandbox_decision=deny")
        .await;
    assert_eq!(out.status, "error");
    assert_eq!(out.reason.as_deref(), Some("access_denied"));
    assert!(out.return_url.starts_with(RETURN_TO));
    let (_, list) = app.get("/v1/connections", &admin).await;
    assert_eq!(list["stats"]["total"], 0);
    assert!(
        app.audit_actions(&tenant)
            .await
            .contains(&("oauth.callback".into(), "failure".into()))
    );
}

async fn callback_refused(url: &str) {
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(url)
        .send()
        .await
        .expect("callback");
    assert_eq!(resp.status().as_u16(), 400, "refused, not redirected");
    assert!(
        resp.headers().get("location").is_none(),
        "never a redirect without a flow"
    );
    assert_eq!(
        resp.headers()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("invalid_state")
    );
}

#[tokio::test]
async fn a_state_is_consumed_exactly_once() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let out = app
        .oauth_connect(&admin, "hubspot", start(json!({})), "")
        .await;
    assert_eq!(out.status, "connected");
    // Replaying the callback (same code and state) finds no flow.
    callback_refused(&out.callback_url).await;
    // A made-up state, and none at all.
    let base = out.callback_url.split('?').next().expect("base").to_owned();
    callback_refused(&format!("{base}?code=x&state=made-up")).await;
    callback_refused(&format!("{base}?code=x")).await;
}

#[tokio::test]
async fn a_foreign_state_is_refused_and_does_not_burn_the_flow() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let (_, started) = app.oauth_start(&admin, "hubspot", start(json!({}))).await;
    let url = started["authorize_url"].as_str().expect("url");
    let (_, callback) = app.get_no_redirect(url).await;
    let callback = callback.expect("callback url");
    // The same code and state presented at another provider's callback.
    let foreign = callback.replace(
        "/v1/oauth/hubspot/callback",
        "/v1/oauth/salesforce/callback",
    );
    assert_ne!(foreign, callback);
    callback_refused(&foreign).await;
    // The real callback still completes.
    let (status, back) = app.get_no_redirect(&callback).await;
    assert_eq!(status, 302);
    assert_eq!(
        query_param(&back.expect("location"), "status").as_deref(),
        Some("connected")
    );
}

#[tokio::test]
async fn an_expired_state_is_refused() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let (_, started) = app.oauth_start(&admin, "hubspot", start(json!({}))).await;
    let url = started["authorize_url"].as_str().expect("url");
    let state = query_param(url, "state").expect("state");
    // Ten minutes pass: move the flow's expiry into the past.
    let hash = conduit::oauth::flow::state_hash(&state);
    let app_ctx = app.app();
    app_ctx
        .table
        .client()
        .update_item()
        .table_name(app_ctx.table.name())
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("OAUTH#{hash}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("FLOW".into()),
        )
        .update_expression("SET #ttl = :past")
        .expression_attribute_names("#ttl", "ttl")
        .expression_attribute_values(
            ":past",
            aws_sdk_dynamodb::types::AttributeValue::N(
                (conduit::domain::now().unix_timestamp() - 1).to_string(),
            ),
        )
        .send()
        .await
        .expect("expire the flow");
    let (_, callback) = app.get_no_redirect(url).await;
    callback_refused(&callback.expect("callback")).await;
}

#[tokio::test]
async fn a_tampered_redirect_uri_cannot_complete_the_flow() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let (_, started) = app.oauth_start(&admin, "hubspot", start(json!({}))).await;
    let url = started["authorize_url"].as_str().expect("url");
    let redirect = query_param(url, "redirect_uri").expect("redirect_uri");
    let attacker = "https://attacker.example/steal";
    let tampered = url.replace(
        &format!("redirect_uri={}", urlencode(&redirect)),
        &format!("redirect_uri={}", urlencode(attacker)),
    );
    assert_ne!(tampered, url, "the redirect_uri was replaced");
    // The provider sends the code to the attacker's URL...
    let (status, location) = app.get_no_redirect(&tampered).await;
    assert_eq!(status, 302);
    let location = location.expect("location");
    assert!(location.starts_with(attacker));
    // ...who replays it at our callback: the exchange repeats the stored redirect URI,
    // the provider refuses, and the browser goes back to the dashboard with an error.
    let code = query_param(&location, "code").expect("code");
    let state = query_param(&location, "state").expect("state");
    let ours = format!("{redirect}?code={code}&state={state}");
    let (status, back) = app.get_no_redirect(&ours).await;
    assert_eq!(status, 302);
    let back = back.expect("location");
    assert!(back.starts_with(RETURN_TO), "{back}");
    assert_eq!(query_param(&back, "status").as_deref(), Some("error"));
    assert_eq!(
        query_param(&back, "reason").as_deref(),
        Some("code_rejected")
    );
    let (_, list) = app.get("/v1/connections", &admin).await;
    assert_eq!(list["stats"]["total"], 0);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn return_to_must_be_on_the_dashboard_allow_list() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    for bad in [
        "https://evil.example/integrations",
        "http://localhost:5174/integrations",
        "http://localhost:5173@evil.example/",
        "javascript:alert(1)",
        "//evil.example",
        "not a url",
    ] {
        let (status, body) = app
            .oauth_start(&admin, "hubspot", json!({"return_to": bad}))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "return_to_not_allowed", "{bad}");
    }
    assert_eq!(app.config_items(&tenant).await, 0, "nothing stored");
}

#[tokio::test]
async fn start_refuses_bad_input_and_members() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let member = app.token(&tenant, Role::Member);
    let (status, _) = app.oauth_start(&member, "hubspot", start(json!({}))).await;
    assert_eq!(status, 403);
    let (status, body) = app.oauth_start(&admin, "nope", start(json!({}))).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app.oauth_start(&admin, "freshdesk", start(json!({}))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "no_oauth");
    let (status, body) = app
        .oauth_start(
            &admin,
            "hubspot",
            start(json!({"scopes": ["crm.objects.everything.godmode"]})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unknown_scope");
    let (status, body) = app
        .oauth_start(
            &admin,
            "salesforce",
            start(json!({"fields": {"login_domain": "evil.example"}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app
        .oauth_start(&admin, "hubspot", start(json!({"surprise": true})))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app
        .send_raw(
            "POST",
            "/v1/oauth/hubspot/start",
            &admin,
            "{".into(),
            "application/json",
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(app.config_items(&tenant).await, 0);
}

#[tokio::test]
async fn malformed_callbacks_are_refused_without_a_redirect() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let (_, started) = app.oauth_start(&admin, "hubspot", start(json!({}))).await;
    let url = started["authorize_url"].as_str().expect("url");
    let (_, callback) = app.get_no_redirect(url).await;
    let callback = callback.expect("callback");
    let base = callback.split('?').next().expect("base").to_owned();
    let state = query_param(&callback, "state").expect("state");
    for bad in [
        format!("{base}?state={state}&state=other&code=x"),
        format!("{base}?state={state}&code={}", "x".repeat(9000)),
        format!(
            "{base}?{}",
            (0..40)
                .map(|i| format!("p{i}=1"))
                .collect::<Vec<_>>()
                .join("&")
        ),
        format!("{base}?state=%FF%FE&code=x"),
    ] {
        let (status, location) = app.get_no_redirect(&bad).await;
        assert_eq!(status, 400, "{}", &bad[..bad.len().min(120)]);
        assert!(location.is_none());
    }
    // None of that consumed the flow: the real callback still connects.
    let (status, back) = app.get_no_redirect(&callback).await;
    assert_eq!(status, 302);
    assert_eq!(
        query_param(&back.expect("location"), "status").as_deref(),
        Some("connected")
    );
    // An unknown provider's callback is refused too.
    let (status, _) = app
        .get_no_redirect(&base.replace("/hubspot/", "/nope/"))
        .await;
    assert_eq!(status, 400);
}
