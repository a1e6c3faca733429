//! The token lifecycle: the scheduled sweep refreshes before expiry, one refresher at a
//! time (50 at once → one token request), rotation, invalid_grant → needs_reauth with
//! its event, transient failures counted and retried, 401 → refresh once, Salesforce
//! checked by introspection, and disconnect revoking at the provider.

use conduit::domain::{ConnectionId, ConnectionStatus, TenantId};
use conduit::oauth::lifecycle::{TokenError, Tokens};
use sandbox::{OAuthFault, OAuthProvider, OAuthUser, Provider};
use scenarios::{Role, TestApp, provider_lock};
use serde_json::json;

const RETURN_TO: &str = "http://localhost:5173/integrations";

/// Connects `provider` as a fresh sandbox user, with `extra` members in the start body
/// (`kind`, `fields`); returns (tenant, admin token, id, email).
async fn connected(
    app: &TestApp,
    provider: &str,
    sandbox_user: OAuthUser,
    extra: serde_json::Value,
) -> (String, String, ConnectionId, String) {
    let u = app.sandbox().add_oauth_user(sandbox_user).expect("user");
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let mut body = json!({ "return_to": RETURN_TO });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let out = app
        .oauth_connect(&admin, provider, body, &format!("login_hint={}", u.email))
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    (tenant, admin, out.connection_id.expect("id"), u.email)
}

/// Registers the tenant's app for the sandbox's custom OAuth provider and connects it;
/// returns (tenant, admin token, id).
async fn custom_connected(app: &TestApp) -> (String, String, ConnectionId) {
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    custom_app(app, &admin).await;
    let out = app
        .oauth_connect(&admin, "custom_oauth", json!({"return_to": RETURN_TO}), "")
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    (tenant, admin, out.connection_id.expect("id"))
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

fn hubspot_user() -> OAuthUser {
    OAuthUser::new(OAuthProvider::Hubspot, unique("hs"))
}

#[tokio::test]
async fn the_sweep_refreshes_before_expiry_and_keeps_the_refresh_token() {
    let app = TestApp::spawn().await;
    let _lock = provider_lock("hubspot").await;
    let (tenant, admin, id, email) = connected(&app, "hubspot", hubspot_user(), json!({})).await;
    let before = app.tokens(&tenant, &id).await;
    let (_, conn) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    let first_expiry = conn["token"]["expires_at"].clone();

    app.make_due(&tenant, &id).await;
    let report = app.sweep_settled(&tenant, &id).await;

    let after = app.tokens(&tenant, &id).await;
    let diag = app.connection(&tenant, &id).await;
    assert_ne!(
        after["access_token"], before["access_token"],
        "a new access token; sweep {report}; token {:?}; error {:?}; lease {:?}",
        diag.token, diag.last_error, diag.lease_until
    );
    assert_eq!(
        after["refresh_token"], before["refresh_token"],
        "HubSpot sends the same refresh token back: kept"
    );
    let stored = app.connection(&tenant, &id).await;
    let token = stored.token.expect("token state");
    assert_eq!(token.generation, 2);
    assert_eq!(token.failures, 0);
    assert!(
        token
            .refresh_due
            .is_some_and(|d| d > conduit::domain::now())
    );
    assert_eq!(stored.status, ConnectionStatus::Connected);
    assert!(stored.lease_holder.is_none(), "the lease is released");
    let (_, conn) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_ne!(conn["token"]["expires_at"], first_expiry);
    let grants = app
        .sandbox()
        .oauth_grants_for_user(OAuthProvider::Hubspot, &email);
    assert_eq!(grants[0].refreshes, 1);

    // Not due any more: another sweep leaves it alone.
    app.sweep().await;
    let grants = app
        .sandbox()
        .oauth_grants_for_user(OAuthProvider::Hubspot, &email);
    assert_eq!(grants[0].refreshes, 1);
}

#[tokio::test]
async fn rotating_refresh_tokens_are_stored_and_never_reused() {
    let app = TestApp::spawn().await;
    let _lock = provider_lock("hubspot").await;
    app.sandbox().set_rotation(OAuthProvider::Hubspot, true);
    let (tenant, _admin, id, email) = connected(&app, "hubspot", hubspot_user(), json!({})).await;
    let mut previous = app.tokens(&tenant, &id).await;
    for round in 1..=3 {
        app.make_due(&tenant, &id).await;
        app.sweep_settled(&tenant, &id).await;
        let now = app.tokens(&tenant, &id).await;
        assert_ne!(
            now["refresh_token"], previous["refresh_token"],
            "round {round}: rotated and stored"
        );
        previous = now;
    }
    app.sandbox().set_rotation(OAuthProvider::Hubspot, false);
    let grant = &app
        .sandbox()
        .oauth_grants_for_user(OAuthProvider::Hubspot, &email)[0];
    assert_eq!(grant.refreshes, 3);
    assert!(
        !grant.reuse_detected,
        "a retired refresh token was never presented"
    );
    assert!(!grant.revoked);
    assert_eq!(
        app.connection(&tenant, &id).await.status,
        ConnectionStatus::Connected
    );
}

#[tokio::test]
async fn fifty_concurrent_refreshers_make_exactly_one_token_request() {
    let app = TestApp::spawn().await;
    let _lock = provider_lock("hubspot").await;
    // With rotation a second refresh would present a retired token and kill the grant.
    app.sandbox().set_rotation(OAuthProvider::Hubspot, true);
    let (tenant, _admin, id, email) = connected(&app, "hubspot", hubspot_user(), json!({})).await;
    let requests_before = app
        .sandbox()
        .oauth_grants_for_user(OAuthProvider::Hubspot, &email)[0]
        .token_requests;
    app.make_due(&tenant, &id).await;

    let ctx = app.app();
    let tenant_id = TenantId::parse(&tenant).expect("tenant");
    let tokens = Tokens::new(&ctx, "test", "fifty");
    let callers = (0..50).map(|_| async {
        tokens.credentials(&tenant_id, &id).await.map(|c| {
            c.access_token()
                .map(|t| secrecy::ExposeSecret::expose_secret(t).to_owned())
        })
    });
    let (results, _sweep) = tokio::join!(futures::future::join_all(callers), app.sweep());
    app.sandbox().set_rotation(OAuthProvider::Hubspot, false);

    let stored = app.tokens(&tenant, &id).await;
    for r in &results {
        let token = r.as_ref().expect("every caller gets a token");
        assert_eq!(
            token.as_deref(),
            Some(stored["access_token"].as_str()),
            "the one new token"
        );
    }
    let grant = &app
        .sandbox()
        .oauth_grants_for_user(OAuthProvider::Hubspot, &email)[0];
    assert_eq!(
        grant.token_requests - requests_before,
        1,
        "exactly one token request"
    );
    assert_eq!(grant.refreshes, 1);
    assert!(!grant.reuse_detected && !grant.revoked);
    assert_eq!(
        app.connection(&tenant, &id)
            .await
            .token
            .expect("token")
            .generation,
        2
    );
}

#[tokio::test]
async fn a_revoked_grant_moves_the_connection_to_needs_reauth_with_an_event() {
    let app = TestApp::spawn().await;
    let (tenant, admin, id, email) = connected(&app, "hubspot", hubspot_user(), json!({})).await;
    // The user removes the app in HubSpot.
    assert_eq!(
        app.sandbox()
            .revoke_grants_for_user(OAuthProvider::Hubspot, &email),
        1
    );
    app.make_due(&tenant, &id).await;
    app.sweep_settled(&tenant, &id).await;

    let (_, conn) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(conn["status"], "needs_reauth", "{conn}");
    assert_eq!(conn["last_error"]["code"], "reauth_required");
    assert_eq!(conn["token"]["refresh_failures"], 1);
    assert!(
        app.failure_records(&tenant, &id).await >= 1,
        "a failure record is kept"
    );
    assert!(
        app.audit_actions(&tenant)
            .await
            .contains(&("connection.token_refresh".into(), "failure".into()))
    );
    let event = app
        .wait_for_event("integration.connection.reauth_required", |d| {
            d["connection_id"] == id.as_str()
        })
        .await;
    assert_eq!(event["source"], "conduit.integrations");
    assert_eq!(event["detail"]["tenant_id"], tenant.as_str());
    assert_eq!(event["detail"]["provider"], "hubspot");

    // Out of the refresh index: the next sweep does not touch it.
    app.sweep().await;
    assert_eq!(
        app.connection(&tenant, &id)
            .await
            .token
            .expect("t")
            .failures,
        1
    );
    // Provider calls are refused until an admin reconnects.
    let ctx = app.app();
    let t = TenantId::parse(&tenant).expect("tenant");
    assert!(matches!(
        Tokens::new(&ctx, "test", "r").credentials(&t, &id).await,
        Err(TokenError::NeedsReauth)
    ));
    // Reconnecting the same connection brings it back.
    let out = app
        .oauth_connect(
            &admin,
            "hubspot",
            json!({"return_to": RETURN_TO, "connection_id": id.as_str()}),
            &format!("login_hint={email}"),
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    assert_eq!(out.connection_id.as_ref(), Some(&id));
    let (_, conn) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(conn["status"], "connected");
    assert_eq!(conn["token"]["refresh_failures"], 0);
}

#[tokio::test]
async fn transient_failures_are_counted_and_retried_without_changing_status() {
    let app = TestApp::spawn().await;
    let _lock = provider_lock("hubspot").await;
    let (tenant, admin, id, email) = connected(&app, "hubspot", hubspot_user(), json!({})).await;
    for fault in [OAuthFault::Status(503), OAuthFault::Status(429)] {
        app.sandbox()
            .force_token_error(OAuthProvider::Hubspot, fault, 1)
            .expect("fault");
        app.make_due(&tenant, &id).await;
        app.sweep_settled(&tenant, &id).await;
    }
    let (_, conn) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(conn["status"], "connected", "{conn}");
    assert_eq!(conn["token"]["refresh_failures"], 2, "counted and visible");
    assert_eq!(conn["last_error"]["code"], "refresh_failed");
    let next = conn["token"]["next_refresh_at"]
        .as_str()
        .expect("retry scheduled");
    assert!(
        next > conduit::domain::rfc3339(conduit::domain::now()).as_str(),
        "backs off"
    );

    app.make_due(&tenant, &id).await;
    app.sweep_settled(&tenant, &id).await;
    let (_, conn) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(conn["token"]["refresh_failures"], 0);
    assert!(conn["last_error"].is_null());
    let grant = &app
        .sandbox()
        .oauth_grants_for_user(OAuthProvider::Hubspot, &email)[0];
    assert_eq!(grant.refreshes, 1);
}

#[tokio::test]
async fn a_401_refreshes_once_and_the_call_succeeds() {
    let app = TestApp::spawn().await;
    let _lock = provider_lock("hubspot").await;
    let (tenant, admin, id, email) = connected(&app, "hubspot", hubspot_user(), json!({})).await;
    // The provider invalidates access tokens early (HubSpot does on app changes).
    app.sandbox().expire_access_tokens(OAuthProvider::Hubspot);
    let (status, body) = app
        .post(&format!("/v1/connections/{id}/test"), &admin, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["connection"]["status"], "connected");
    let grant = &app
        .sandbox()
        .oauth_grants_for_user(OAuthProvider::Hubspot, &email)[0];
    assert_eq!(grant.refreshes, 1, "refreshed once after the 401");
    assert_eq!(
        app.connection(&tenant, &id)
            .await
            .token
            .expect("t")
            .generation,
        2
    );
}

#[tokio::test]
async fn salesforce_tokens_are_checked_by_introspection_not_assumed() {
    let app = TestApp::spawn().await;
    let _lock = provider_lock("salesforce").await;
    let (tenant, _admin, id, email) = connected(
        &app,
        "salesforce",
        OAuthUser::new(OAuthProvider::Salesforce, unique("sf")),
        json!({}),
    )
    .await;
    let first = app.tokens(&tenant, &id).await;
    // Due for a check: the token is active, so it is kept (and its expiry learnt).
    app.make_due(&tenant, &id).await;
    app.sweep_settled(&tenant, &id).await;
    assert_eq!(
        app.tokens(&tenant, &id).await["access_token"],
        first["access_token"]
    );
    let token = app.connection(&tenant, &id).await.token.expect("t");
    assert_eq!(token.generation, 1);
    assert!(token.validated_at.is_some());
    assert!(
        app.sandbox().calls("salesforce.oauth_introspect") > 0,
        "introspected"
    );
    // The session ends at Salesforce: the next check finds it inactive and refreshes.
    app.sandbox()
        .expire_access_tokens(OAuthProvider::Salesforce);
    app.make_due(&tenant, &id).await;
    let report = app.sweep_settled(&tenant, &id).await;
    let diag = app.connection(&tenant, &id).await;
    assert_ne!(
        app.tokens(&tenant, &id).await["access_token"],
        first["access_token"],
        "sweep {report}; token {:?}; error {:?}; lease {:?}",
        diag.token,
        diag.last_error,
        diag.lease_until
    );
    let grant = &app
        .sandbox()
        .oauth_grants_for_user(OAuthProvider::Salesforce, &email)[0];
    assert_eq!(grant.refreshes, 1);
}

#[tokio::test]
async fn disconnect_revokes_at_the_provider_then_destroys_the_secrets() {
    let app = TestApp::spawn().await;
    let cases = [
        ("hubspot", OAuthProvider::Hubspot, json!({})),
        ("salesforce", OAuthProvider::Salesforce, json!({})),
        ("zoho", OAuthProvider::Zoho, json!({})),
        ("google", OAuthProvider::Google, json!({})),
        ("pipedrive", OAuthProvider::Pipedrive, json!({})),
        (
            "zendesk",
            OAuthProvider::Zendesk,
            json!({"subdomain": "acme"}),
        ),
    ];
    for (provider, p, fields) in cases {
        let u = app
            .sandbox()
            .add_oauth_user(OAuthUser::new(p, unique(provider)))
            .expect("user");
        let tenant = app.tenant();
        let admin = app.token(&tenant, Role::Admin);
        let mut body = json!({"return_to": RETURN_TO, "fields": fields});
        if provider == "google" {
            body["kind"] = json!("gmail");
        }
        let out = app
            .oauth_connect(&admin, provider, body, &format!("login_hint={}", u.email))
            .await;
        assert_eq!(out.status, "connected", "{provider}: {}", out.return_url);
        let id = out.connection_id.expect("id");
        let tokens = app.tokens(&tenant, &id).await;

        let (status, _) = app.delete(&format!("/v1/connections/{id}"), &admin).await;
        assert_eq!(status, 204, "{provider}");
        let grant = &app.sandbox().oauth_grants_for_user(p, &u.email)[0];
        assert!(grant.revoked, "{provider}: revoked at the provider");
        assert!(grant.revoke_requests >= 1);
        let (status, _) = app.get(&format!("/v1/connections/{id}"), &admin).await;
        assert_eq!(status, 404);
        assert_eq!(
            app.config_items(&tenant).await,
            0,
            "{provider}: secrets gone with the item"
        );
        for secret in tokens.values() {
            app.assert_secret_absent(secret, &tenant).await;
        }
    }
}

#[tokio::test]
async fn a_failed_revocation_is_recorded_and_the_disconnect_completes() {
    let app = TestApp::spawn().await;
    // The custom provider's host serves only the tests holding its lock, so the forced
    // failure meets this revocation and nothing else.
    let _lock = provider_lock("custom_oauth").await;
    let (tenant, admin, id) = custom_connected(&app).await;
    let tokens = app.tokens(&tenant, &id).await;
    app.sandbox()
        .force_status(500, 1, Some(Provider::CustomOauth))
        .expect("fault");
    let (status, body) = app.delete(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revocation"]["status"], "failed", "{body}");
    assert_eq!(
        body["revocation"]["reason"], "provider_unavailable",
        "{body}"
    );
    let grant = app
        .sandbox()
        .oauth_grant(&tokens["refresh_token"])
        .expect("grant");
    assert!(!grant.revoked, "the provider failed the revocation");
    let (status, _) = app.get(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(status, 404, "disconnected anyway");
    assert_eq!(
        app.config_items(&tenant).await,
        1,
        "only the app credentials remain"
    );
    let detail = app.audit_detail(&tenant, "connection.delete").await;
    assert!(detail.contains("failed"), "{detail}");
}

/// Registers the tenant's app for the sandbox's custom OAuth provider.
async fn custom_app(app: &TestApp, admin: &str) {
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
                    "revoke_url": format!("{base}/revoke"),
                    "userinfo_url": format!("{base}/userinfo"),
                    "api_base_url": format!("{base}/api"),
                },
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn no_token_code_state_or_client_secret_ever_reaches_the_logs() {
    let app = TestApp::spawn().await;
    let _lock = provider_lock("hubspot").await;
    // A whole life: connect, refresh, 401 → refresh, disconnect.
    let (tenant, admin, id, _email) = connected(&app, "hubspot", hubspot_user(), json!({})).await;
    app.make_due(&tenant, &id).await;
    app.sweep_settled(&tenant, &id).await;
    app.sandbox().expire_access_tokens(OAuthProvider::Hubspot);
    let (status, _) = app
        .post(&format!("/v1/connections/{id}/test"), &admin, json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = app.delete(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(status, 204);

    let logs = app.logs();
    assert!(
        logs.contains("oauth") || logs.contains("token"),
        "the flow was logged"
    );
    let issued = app.sandbox().issued_secrets();
    assert!(!issued.is_empty());
    for secret in issued {
        assert!(
            !logs.contains(&secret),
            "an issued code or token reached the logs"
        );
    }
    for p in [
        "hubspot",
        "salesforce",
        "zoho",
        "pipedrive",
        "google",
        "zendesk",
    ] {
        assert!(
            !logs.contains(&format!("{p}-sandbox-client-secret")),
            "a client secret reached the logs"
        );
    }
    assert!(
        !logs.contains("code_verifier"),
        "no PKCE verifier in the logs"
    );
    assert!(!logs.contains("state="), "no state in the logs");
}

#[tokio::test]
async fn google_sends_no_refresh_token_on_refresh_so_the_old_one_is_kept() {
    let app = TestApp::spawn().await;
    let (tenant, _admin, id, email) = connected(
        &app,
        "google",
        OAuthUser::new(OAuthProvider::Google, unique("gmail")),
        json!({"kind": "gmail"}),
    )
    .await;
    let before = app.tokens(&tenant, &id).await;
    app.make_due(&tenant, &id).await;
    app.sweep_settled(&tenant, &id).await;
    let after = app.tokens(&tenant, &id).await;
    assert_ne!(after["access_token"], before["access_token"]);
    assert_eq!(after["refresh_token"], before["refresh_token"], "kept");
    let grant = &app
        .sandbox()
        .oauth_grants_for_user(OAuthProvider::Google, &email)[0];
    assert_eq!(grant.refreshes, 1);
}

#[tokio::test]
async fn a_custom_provider_rotates_refresh_tokens_with_basic_client_auth() {
    let app = TestApp::spawn().await;
    let _lock = provider_lock("custom_oauth").await;
    let (tenant, admin, id) = custom_connected(&app).await;
    let first = app.tokens(&tenant, &id).await;
    for _ in 0..2 {
        app.make_due(&tenant, &id).await;
        app.sweep_settled(&tenant, &id).await;
    }
    let now = app.tokens(&tenant, &id).await;
    assert_ne!(
        now["refresh_token"], first["refresh_token"],
        "rotated and stored"
    );
    let grant = app
        .sandbox()
        .oauth_grant(&now["refresh_token"])
        .expect("the grant of the stored token");
    assert_eq!(grant.refreshes, 2);
    assert!(!grant.reuse_detected && !grant.revoked);
    // Disconnect revokes through RFC 7009.
    let (status, _) = app.delete(&format!("/v1/connections/{id}"), &admin).await;
    assert_eq!(status, 204);
    assert!(
        app.sandbox()
            .oauth_grant(&now["refresh_token"])
            .expect("grant")
            .revoked,
        "{}\n{}",
        app.audit_detail(&tenant, "connection.delete").await,
        app.logs_about(id.as_str())
    );
}
