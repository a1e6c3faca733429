//! OAuth 2.0 stand-ins end to end: a sandbox on a free port, driven over HTTP with reqwest
//! (redirects not followed), one authorization-code + PKCE flow per provider, and the
//! failure modes clients must survive.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use sandbox::providers::{
    custom_oauth, dynamics365, genesys, google, hubspot, pipedrive, salesforce, zendesk, zoho,
};
use sandbox::{OAuthClient, OAuthFault, OAuthProvider, OAuthUser, Sandbox};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

const REDIRECT: &str = "https://app.conduit.test/oauth/callback?tenant=t1";

struct Harness {
    sandbox: Sandbox,
    client: Client,
}

impl Harness {
    async fn start() -> Self {
        let sandbox = Sandbox::start(0).await.expect("sandbox starts");
        let client = Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self { sandbox, client }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.url())
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path))
    }

    fn delete(&self, path: &str) -> RequestBuilder {
        self.client.delete(self.url(path))
    }
}

async fn json_of(response: Response) -> Value {
    response.json().await.expect("JSON body")
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A PKCE verifier and its S256 challenge.
fn pkce() -> (String, String) {
    let verifier = format!("verifier-{}", "x".repeat(40)) + &rand_suffix();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn rand_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// How a client authenticates at a token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    Body,
    Basic,
}

/// One provider's OAuth endpoints, as the catalogue would address them.
#[derive(Clone, Debug)]
struct Spec {
    provider: OAuthProvider,
    authorize: &'static str,
    token: &'static str,
    auth: Auth,
    scope: &'static str,
    extra: &'static [(&'static str, &'static str)],
}

fn spec(provider: OAuthProvider) -> Spec {
    use OAuthProvider as P;
    let (authorize, token, auth, scope, extra): (_, _, _, _, &'static [(&str, &str)]) =
        match provider {
            P::Hubspot => (
                "/app.hubspot.com/oauth/authorize",
                "/api.hubapi.com/oauth/v1/token",
                Auth::Body,
                "oauth crm.objects.contacts.read",
                &[],
            ),
            P::Salesforce => (
                "/login.salesforce.com/services/oauth2/authorize",
                "/login.salesforce.com/services/oauth2/token",
                Auth::Body,
                "api refresh_token offline_access",
                &[],
            ),
            P::Zoho => (
                "/accounts.zoho.com/oauth/v2/auth",
                "/accounts.zoho.com/oauth/v2/token",
                Auth::Body,
                "ZohoCRM.modules.contacts.ALL,ZohoCRM.users.READ",
                &[("access_type", "offline"), ("prompt", "consent")],
            ),
            P::Pipedrive => (
                "/oauth.pipedrive.com/oauth/authorize",
                "/oauth.pipedrive.com/oauth/token",
                Auth::Basic,
                "base contacts:full",
                &[],
            ),
            P::Dynamics365 => (
                "/login.microsoftonline.com/organizations/oauth2/v2.0/authorize",
                "/login.microsoftonline.com/organizations/oauth2/v2.0/token",
                Auth::Body,
                "https://acme.crm.dynamics.com/user_impersonation offline_access",
                &[],
            ),
            P::Google => (
                "/accounts.google.com/o/oauth2/v2/auth",
                "/oauth2.googleapis.com/token",
                Auth::Body,
                "openid email https://www.googleapis.com/auth/gmail.send",
                &[("access_type", "offline"), ("prompt", "consent")],
            ),
            P::Zendesk => (
                "/acme.zendesk.com/oauth/authorizations/new",
                "/acme.zendesk.com/oauth/tokens",
                Auth::Body,
                "read write",
                &[],
            ),
            P::Genesys => (
                "/login.mypurecloud.com/oauth/authorize",
                "/login.mypurecloud.com/oauth/token",
                Auth::Basic,
                "conversations users:readonly",
                &[],
            ),
            P::CustomOauth => (
                "/oauth.custom.example/authorize",
                "/oauth.custom.example/token",
                Auth::Basic,
                "openid read write",
                &[],
            ),
        };
    Spec {
        provider,
        authorize,
        token,
        auth,
        scope,
        extra,
    }
}

fn client_id(provider: OAuthProvider) -> String {
    format!("{provider}-sandbox-client-id")
}

fn client_secret(provider: OAuthProvider) -> String {
    format!("{provider}-sandbox-client-secret")
}

/// Query parameters of a redirect's `Location`.
fn location(response: &Response) -> (Url, HashMap<String, String>) {
    assert_eq!(response.status(), StatusCode::FOUND, "expected a redirect");
    let location = header(response, "location").expect("Location header");
    let url = Url::parse(location).expect("absolute Location");
    let params = url.query_pairs().into_owned().collect();
    (url, params)
}

impl Harness {
    /// Runs the authorize step; returns the redirect's query parameters.
    async fn authorize(
        &self,
        spec: &Spec,
        challenge: Option<&str>,
        extra: &[(&str, &str)],
    ) -> HashMap<String, String> {
        let mut query: Vec<(String, String)> = vec![
            ("response_type".into(), "code".into()),
            ("client_id".into(), client_id(spec.provider)),
            ("redirect_uri".into(), REDIRECT.into()),
            ("scope".into(), spec.scope.into()),
            ("state".into(), "st-123".into()),
        ];
        if let Some(challenge) = challenge {
            query.push(("code_challenge".into(), challenge.into()));
            query.push(("code_challenge_method".into(), "S256".into()));
        }
        for (k, v) in spec.extra.iter().chain(extra) {
            query.push(((*k).into(), (*v).into()));
        }
        let response = self.get(spec.authorize).query(&query).send().await.unwrap();
        let (url, params) = location(&response);
        assert_eq!(url.host_str(), Some("app.conduit.test"));
        assert_eq!(params.get("tenant").map(String::as_str), Some("t1"));
        assert_eq!(params.get("state").map(String::as_str), Some("st-123"));
        params
    }

    /// A token request with the provider's client authentication.
    fn token_request(&self, spec: &Spec, path: &str, form: &[(&str, &str)]) -> RequestBuilder {
        let id = client_id(spec.provider);
        let secret = client_secret(spec.provider);
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let request = self.post(path);
        match spec.auth {
            Auth::Basic => request.basic_auth(id, Some(secret)).form(&form),
            Auth::Body => {
                form.push(("client_id", &id));
                form.push(("client_secret", &secret));
                request.form(&form)
            }
        }
    }

    /// Exchanges a code at the spec's token endpoint.
    async fn exchange(&self, spec: &Spec, code: &str, verifier: Option<&str>) -> Response {
        self.exchange_at(spec, spec.token, code, verifier).await
    }

    async fn exchange_at(
        &self,
        spec: &Spec,
        path: &str,
        code: &str,
        verifier: Option<&str>,
    ) -> Response {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
        ];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier));
        }
        self.token_request(spec, path, &form).send().await.unwrap()
    }

    async fn refresh(&self, spec: &Spec, refresh_token: &str) -> Response {
        self.token_request(
            spec,
            spec.token,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .send()
        .await
        .unwrap()
    }

    /// The full flow with PKCE: returns the token response body.
    async fn connect(&self, provider: OAuthProvider) -> Value {
        let spec = spec(provider);
        let (verifier, challenge) = pkce();
        let params = self.authorize(&spec, Some(&challenge), &[]).await;
        let code = params.get("code").expect("code");
        let token = match provider {
            OAuthProvider::Zoho => {
                let server = params.get("accounts-server").expect("accounts-server");
                let host = server.trim_start_matches("https://");
                let path = format!("/{host}/oauth/v2/token");
                self.exchange_at(&spec, &path, code, Some(&verifier)).await
            }
            _ => self.exchange(&spec, code, Some(&verifier)).await,
        };
        assert_eq!(token.status(), StatusCode::OK, "{provider}");
        assert_eq!(header(&token, "cache-control"), Some("no-store"));
        json_of(token).await
    }
}

fn keys(body: &Value) -> Vec<String> {
    let mut keys: Vec<String> = body.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    keys
}

fn assert_secret(value: &Value) {
    let text = value.as_str().expect("token string");
    assert!(text.len() >= 32, "too short: {} chars", text.len());
}

// ---------------------------------------------------------------- full flows

#[tokio::test]
async fn hubspot_flow_shape_and_token_info() {
    let h = Harness::start().await;
    let body = h.connect(OAuthProvider::Hubspot).await;
    assert_eq!(
        keys(&body),
        [
            "access_token",
            "expires_in",
            "hub_id",
            "refresh_token",
            "scopes",
            "token_type",
            "token_use",
            "user_id"
        ]
    );
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body["hub_id"], 62515);
    assert_secret(&body["access_token"]);
    assert_secret(&body["refresh_token"]);
    let access = body["access_token"].as_str().unwrap();

    let info = h
        .get(&format!("/api.hubapi.com/oauth/v1/access-tokens/{access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), StatusCode::OK);
    let info = json_of(info).await;
    assert_eq!(info["user"], "admin@acme.test");
    assert_eq!(info["hub_domain"], "acme.hubspot.com");
    assert_eq!(info["hub_id"], 62515);
    assert_eq!(info["token_type"], "access");
    assert_eq!(
        info["scopes"],
        json!(["oauth", "crm.objects.contacts.read"])
    );
    assert!(info["app_id"].as_u64().unwrap() > 0);

    // The private-app endpoint takes OAuth tokens too, with rate-limit headers.
    let details = h
        .get("/api.hubapi.com/account-info/v3/details")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(details.status(), StatusCode::OK);
    assert!(header(&details, "x-hubspot-ratelimit-max").is_some());
    assert_eq!(json_of(details).await["portalId"], 62515);

    // Refresh keeps the refresh token (rotation is off for HubSpot).
    let refresh = body["refresh_token"].as_str().unwrap();
    let spec = spec(OAuthProvider::Hubspot);
    for _ in 0..2 {
        let again = json_of(h.refresh(&spec, refresh).await).await;
        assert_eq!(again["refresh_token"], refresh);
        assert_ne!(again["access_token"], body["access_token"]);
    }
    let state = h.sandbox.state();
    assert_eq!(state.calls(hubspot::OAUTH_AUTHORIZE), 1);
    assert_eq!(state.calls(hubspot::OAUTH_TOKEN), 3);
    assert_eq!(state.calls(hubspot::OAUTH_INTROSPECT), 1);
    let view = state.oauth_grant(refresh).unwrap();
    assert_eq!((view.token_requests, view.refreshes), (3, 2));
}

#[tokio::test]
async fn salesforce_flow_shape_userinfo_and_data() {
    let h = Harness::start().await;
    let body = h.connect(OAuthProvider::Salesforce).await;
    assert_eq!(
        keys(&body),
        [
            "access_token",
            "id",
            "instance_url",
            "issued_at",
            "refresh_token",
            "scope",
            "signature",
            "token_type"
        ]
    );
    assert!(body.get("expires_in").is_none());
    assert_eq!(body["instance_url"], "https://acme.my.salesforce.com");
    assert_eq!(body["token_type"], "Bearer");
    let id = body["id"].as_str().unwrap();
    assert!(
        id.starts_with("https://login.salesforce.com/id/00D"),
        "{id}"
    );
    assert!(body["issued_at"].as_str().unwrap().parse::<u64>().unwrap() > 1_600_000_000_000);
    let access = body["access_token"].as_str().unwrap();

    let info = h
        .get("/acme.my.salesforce.com/services/oauth2/userinfo")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), StatusCode::OK);
    let info = json_of(info).await;
    assert_eq!(info["email"], "admin@acme.test");
    assert!(info["organization_id"].as_str().unwrap().starts_with("00D"));
    assert!(info["user_id"].as_str().unwrap().starts_with("005"));

    let data = h
        .get("/acme.my.salesforce.com/services/data/v60.0/")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(data.status(), StatusCode::OK);
    assert_eq!(
        json_of(data).await["sobjects"],
        "/services/data/v60.0/sobjects"
    );

    // Refresh responses carry no refresh token.
    let refreshed = json_of(
        h.refresh(
            &spec(OAuthProvider::Salesforce),
            body["refresh_token"].as_str().unwrap(),
        )
        .await,
    )
    .await;
    assert!(refreshed.get("refresh_token").is_none());
    assert!(refreshed.get("expires_in").is_none());
    assert_secret(&refreshed["access_token"]);
    assert_eq!(h.sandbox.state().calls(salesforce::USERINFO), 1);
}

#[tokio::test]
async fn zoho_flow_redirect_names_the_data_centre() {
    let h = Harness::start().await;
    let spec = spec(OAuthProvider::Zoho);
    // An EU user authorizing at the US server is sent to the EU data centre.
    let params = h
        .authorize(&spec, None, &[("login_hint", "admin.eu@acme.test")])
        .await;
    assert_eq!(params["location"], "eu");
    assert_eq!(params["accounts-server"], "https://accounts.zoho.eu");
    let code = params["code"].clone();
    // Only the EU server knows the code: the US one answers Zoho's 200 error.
    let wrong = h.exchange(&spec, &code, None).await;
    assert_eq!(wrong.status(), StatusCode::OK);
    assert_eq!(json_of(wrong).await, json!({"error": "invalid_code"}));
    let body = json_of(
        h.exchange_at(&spec, "/accounts.zoho.eu/oauth/v2/token", &code, None)
            .await,
    )
    .await;
    assert_eq!(
        keys(&body),
        [
            "access_token",
            "api_domain",
            "expires_in",
            "refresh_token",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(body["api_domain"], "https://www.zohoapis.eu");
    assert_eq!(body["expires_in"], 3600);
    let access = body["access_token"].as_str().unwrap();
    assert!(access.starts_with("1000."));

    let users = h
        .get("/www.zohoapis.eu/crm/v2/users?type=CurrentUser")
        .header("Authorization", format!("Zoho-oauthtoken {access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), StatusCode::OK);
    assert_eq!(
        json_of(users).await["users"][0]["email"],
        "admin.eu@acme.test"
    );
    // The token is no good in another data centre.
    let elsewhere = h
        .get("/www.zohoapis.com/crm/v2/users?type=CurrentUser")
        .header("Authorization", format!("Zoho-oauthtoken {access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(elsewhere).await,
        json!({"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"})
    );

    // Refresh at the right server: no refresh token in the answer.
    let refresh = body["refresh_token"].as_str().unwrap();
    let refreshed = h
        .token_request(
            &spec,
            "/accounts.zoho.eu/oauth/v2/token",
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .send()
        .await
        .unwrap();
    let refreshed = json_of(refreshed).await;
    assert!(refreshed.get("refresh_token").is_none());
    assert_secret(&refreshed["access_token"]);

    // Revoke (at the EU server), then the refresh answers Zoho's 200 invalid_code.
    let revoked = h
        .post(&format!(
            "/accounts.zoho.eu/oauth/v2/token/revoke?token={refresh}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(revoked).await, json!({"status": "success"}));
    let dead = h
        .token_request(
            &spec,
            "/accounts.zoho.eu/oauth/v2/token",
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(dead.status(), StatusCode::OK);
    assert_eq!(json_of(dead).await, json!({"error": "invalid_code"}));
    assert_eq!(h.sandbox.state().calls(zoho::OAUTH_TOKEN), 4);
}

#[tokio::test]
async fn zoho_errors_are_http_200() {
    let h = Harness::start().await;
    let spec = spec(OAuthProvider::Zoho);
    let bad = h.exchange(&spec, "1000.nope.nope", None).await;
    assert_eq!(bad.status(), StatusCode::OK);
    assert_eq!(json_of(bad).await, json!({"error": "invalid_code"}));
    let wrong_secret = h
        .post(spec.token)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", "zoho-sandbox-client-id"),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_secret.status(), StatusCode::OK);
    assert_eq!(
        json_of(wrong_secret).await,
        json!({"error": "invalid_client_secret"})
    );
    let unknown_client = h
        .post(spec.token)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", "nobody"),
            ("client_secret", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(unknown_client).await,
        json!({"error": "invalid_client"})
    );
    // Without access_type=offline there is no refresh token.
    let online = Spec { extra: &[], ..spec };
    let params = h.authorize(&online, None, &[]).await;
    let body = json_of(h.exchange(&online, &params["code"], None).await).await;
    assert!(body.get("refresh_token").is_none());
}

#[tokio::test]
async fn pipedrive_flow_requires_basic_and_serves_company_domain() {
    let h = Harness::start().await;
    let body = h.connect(OAuthProvider::Pipedrive).await;
    assert_eq!(
        keys(&body),
        [
            "access_token",
            "api_domain",
            "expires_in",
            "refresh_token",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(body["api_domain"], "https://acme.pipedrive.com");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["token_type"], "Bearer");
    let access = body["access_token"].as_str().unwrap();
    assert!(access.starts_with("5000001:10000001:"));
    for path in [
        "/acme.pipedrive.com/v1/users/me",
        "/acme.pipedrive.com/api/v1/users/me",
    ] {
        let me = h.get(path).bearer_auth(access).send().await.unwrap();
        assert_eq!(me.status(), StatusCode::OK, "{path}");
        let me = json_of(me).await;
        assert_eq!(me["success"], true);
        assert_eq!(me["data"]["email"], "sales@acme.test");
        assert_eq!(me["data"]["company_domain"], "acme");
    }
    // Another company's domain refuses the token; the API-token route still works.
    let other = h
        .get("/globex.pipedrive.com/v1/users/me")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    let api_token = h
        .get("/api.pipedrive.com/v1/users/me?api_token=pd-sandbox-token-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(api_token.status(), StatusCode::OK);

    // Body credentials are refused.
    let refresh = body["refresh_token"].as_str().unwrap();
    let in_body = h
        .post("/oauth.pipedrive.com/oauth/token")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", "pipedrive-sandbox-client-id"),
            ("client_secret", "pipedrive-sandbox-client-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(in_body.status(), StatusCode::UNAUTHORIZED);
    let error = json_of(in_body).await;
    assert_eq!(error["success"], false);
    assert_eq!(error["error"], "invalid_client");
    // Refresh returns the refresh token too.
    let spec = spec(OAuthProvider::Pipedrive);
    let refreshed = json_of(h.refresh(&spec, refresh).await).await;
    assert_eq!(refreshed["refresh_token"], refresh);

    // Revoke the refresh token: the grant dies.
    let revoked = h
        .post("/oauth.pipedrive.com/oauth/revoke")
        .basic_auth(
            "pipedrive-sandbox-client-id",
            Some("pipedrive-sandbox-client-secret"),
        )
        .form(&[("token", refresh), ("token_type_hint", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let me = h
        .get("/acme.pipedrive.com/v1/users/me")
        .bearer_auth(refreshed["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(me).await["success"], false);
    let again = h.refresh(&spec, refresh).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(again).await["error"], "invalid_grant");
    assert_eq!(h.sandbox.state().calls(pipedrive::OAUTH_REVOKE), 1);
}

#[tokio::test]
async fn microsoft_flow_whoami_and_refresh_rotation_semantics() {
    let h = Harness::start().await;
    let body = h.connect(OAuthProvider::Dynamics365).await;
    assert_eq!(
        keys(&body),
        [
            "access_token",
            "expires_in",
            "ext_expires_in",
            "refresh_token",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(
        body["scope"],
        "https://acme.crm.dynamics.com/user_impersonation"
    );
    assert_eq!(body["ext_expires_in"], 3599);
    let access = body["access_token"].as_str().unwrap();
    let who = h
        .get("/acme.crm.dynamics.com/api/data/v9.2/WhoAmI")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(who.status(), StatusCode::OK);
    let who = json_of(who).await;
    assert_eq!(who["UserId"], "7d4a9f52-2f6b-4c3e-9b1a-0c1d2e3f4a51");
    assert_eq!(
        who["OrganizationId"],
        "1f0d4b8e-6c2a-4e8f-8a3b-5d6e7f809a12"
    );
    assert!(who["BusinessUnitId"].is_string());
    assert!(
        who["@odata.context"]
            .as_str()
            .unwrap()
            .contains("WhoAmIResponse")
    );
    // Another environment is another audience.
    let other = h
        .get("/globex.crm4.dynamics.com/api/data/v9.2/WhoAmI")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    assert!(
        header(&other, "www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );

    // Every refresh hands out a new refresh token; the old one still works (no rotation).
    let spec = spec(OAuthProvider::Dynamics365);
    let first = body["refresh_token"].as_str().unwrap();
    let refreshed = json_of(h.refresh(&spec, first).await).await;
    let second = refreshed["refresh_token"].as_str().unwrap();
    assert_ne!(first, second);
    assert_eq!(h.refresh(&spec, first).await.status(), StatusCode::OK);
    assert_eq!(h.refresh(&spec, second).await.status(), StatusCode::OK);

    // Microsoft's error body.
    let bad = h.refresh(&spec, "nope").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad = json_of(bad).await;
    assert_eq!(bad["error"], "invalid_grant");
    assert!(bad["error_codes"][0].is_u64());
    for key in [
        "trace_id",
        "correlation_id",
        "timestamp",
        "error_description",
    ] {
        assert!(bad[key].is_string(), "{key}");
    }
    assert!(
        bad["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS")
    );
    assert_eq!(h.sandbox.state().calls(dynamics365::USERINFO), 2);
}

#[tokio::test]
async fn google_flow_offline_refresh_id_token_and_revoke() {
    let h = Harness::start().await;
    let body = h.connect(OAuthProvider::Google).await;
    assert_eq!(
        keys(&body),
        [
            "access_token",
            "expires_in",
            "id_token",
            "refresh_token",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(body["expires_in"], 3599);
    assert!(
        body["scope"]
            .as_str()
            .unwrap()
            .contains("https://www.googleapis.com/auth/userinfo.email")
    );
    let id_token = body["id_token"].as_str().unwrap();
    let payload = id_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["email"], "admin@acme.test");
    assert_eq!(claims["aud"], "google-sandbox-client-id");
    let access = body["access_token"].as_str().unwrap();
    assert!(access.starts_with("ya29."));

    let info = h
        .get("/openidconnect.googleapis.com/v1/userinfo")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), StatusCode::OK);
    let info = json_of(info).await;
    assert_eq!(info["sub"], "109876543210987654321");
    assert_eq!(info["email"], "admin@acme.test");
    assert_eq!(info["email_verified"], true);

    // Refresh: never a refresh token.
    let spec = spec(OAuthProvider::Google);
    let refresh = body["refresh_token"].as_str().unwrap();
    let refreshed = json_of(h.refresh(&spec, refresh).await).await;
    assert!(refreshed.get("refresh_token").is_none());
    assert_secret(&refreshed["access_token"]);

    // Revoke by access token kills the whole grant; a second revoke is a 400.
    let revoked = h
        .post("/oauth2.googleapis.com/revoke")
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(json_of(revoked).await, json!({}));
    let again = h
        .post("/oauth2.googleapis.com/revoke")
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(again).await,
        json!({"error": "invalid_token", "error_description": "Token expired or revoked"})
    );
    let info = h
        .get("/openidconnect.googleapis.com/v1/userinfo")
        .bearer_auth(refreshed["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), StatusCode::UNAUTHORIZED);
    let dead = h.refresh(&spec, refresh).await;
    assert_eq!(dead.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(dead).await["error"], "invalid_grant");
    let view = h.sandbox.state().oauth_grant(refresh).unwrap();
    assert!(view.revoked);
    assert_eq!(view.revoke_requests, 2);
    assert_eq!(h.sandbox.state().calls(google::OAUTH_REVOKE), 2);

    // Without access_type=offline there is no refresh token.
    let online = Spec { extra: &[], ..spec };
    let params = h.authorize(&online, None, &[]).await;
    let body = json_of(h.exchange(&online, &params["code"], None).await).await;
    assert!(body.get("refresh_token").is_none());
}

#[tokio::test]
async fn zendesk_flow_json_body_bearer_users_me_and_revoke_current() {
    let h = Harness::start().await;
    let spec = spec(OAuthProvider::Zendesk);
    let (verifier, challenge) = pkce();
    let params = h.authorize(&spec, Some(&challenge), &[]).await;
    let token = h
        .post(spec.token)
        .json(&json!({
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            "client_id": "zendesk-sandbox-client-id",
            "client_secret": "zendesk-sandbox-client-secret",
            "scope": "read write",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::OK);
    let body = json_of(token).await;
    assert_eq!(
        keys(&body),
        [
            "access_token",
            "expires_in",
            "refresh_token",
            "refresh_token_expires_in",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(body["token_type"], "bearer");
    let access = body["access_token"].as_str().unwrap();
    let me = h
        .get("/acme.zendesk.com/api/v2/users/me.json")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let me = json_of(me).await;
    assert_eq!(me["user"]["id"], 123);
    assert_eq!(me["user"]["email"], "admin@acme.test");
    // API tokens keep working.
    let basic = h
        .get("/acme.zendesk.com/api/v2/users/me.json")
        .basic_auth("admin@acme.test/token", Some("zd-sandbox-token-0001"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);

    let revoked = h
        .delete("/acme.zendesk.com/api/v2/oauth/tokens/current.json")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let me = h
        .get("/acme.zendesk.com/api/v2/users/me.json")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(me).await["error"], "invalid_token");
    let dead = h
        .refresh(&spec, body["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(dead.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(dead).await["error"], "invalid_grant");
    assert_eq!(h.sandbox.state().calls(zendesk::OAUTH_REVOKE), 1);
}

#[tokio::test]
async fn zendesk_refresh_deletes_the_previous_access_token() {
    let h = Harness::start().await;
    let body = h.connect(OAuthProvider::Zendesk).await;
    let spec = spec(OAuthProvider::Zendesk);
    let refreshed = json_of(
        h.refresh(&spec, body["refresh_token"].as_str().unwrap())
            .await,
    )
    .await;
    for (token, status) in [
        (&body["access_token"], StatusCode::UNAUTHORIZED),
        (&refreshed["access_token"], StatusCode::OK),
    ] {
        let me = h
            .get("/acme.zendesk.com/api/v2/users/me.json")
            .bearer_auth(token.as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), status);
    }
}

#[tokio::test]
async fn genesys_flow_is_regional_and_basic_only() {
    let h = Harness::start().await;
    let body = h.connect(OAuthProvider::Genesys).await;
    assert_eq!(
        keys(&body),
        ["access_token", "expires_in", "refresh_token", "token_type"]
    );
    assert_eq!(body["token_type"], "bearer");
    let access = body["access_token"].as_str().unwrap();
    let me = h
        .get("/api.mypurecloud.com/api/v2/users/me")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let me = json_of(me).await;
    assert_eq!(me["email"], "admin@acme.test");
    assert!(me["id"].is_string());
    let elsewhere = h
        .get("/api.mypurecloud.ie/api/v2/users/me")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(elsewhere).await["code"], "bad.credentials");

    let in_body = h
        .post("/login.mypurecloud.com/oauth/token")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", body["refresh_token"].as_str().unwrap()),
            ("client_id", "genesys-sandbox-client-id"),
            ("client_secret", "genesys-sandbox-client-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(in_body.status(), StatusCode::UNAUTHORIZED);
    let error = json_of(in_body).await;
    assert_eq!(error["error"], "invalid_client");
    assert!(error["description"].is_string());
    // A refresh at another region's login server does not know the grant.
    let wrong_region = h
        .post("/login.mypurecloud.ie/oauth/token")
        .basic_auth(
            "genesys-sandbox-client-id",
            Some("genesys-sandbox-client-secret"),
        )
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", body["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_region.status(), StatusCode::BAD_REQUEST);

    let revoked = h
        .delete("/api.mypurecloud.com/api/v2/tokens/me")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let me = h
        .get("/api.mypurecloud.com/api/v2/users/me")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.sandbox.state().calls(genesys::USERINFO), 3);
}

#[tokio::test]
async fn custom_oauth_flow_rotation_reuse_detection_and_userinfo() {
    let h = Harness::start().await;
    let body = h.connect(OAuthProvider::CustomOauth).await;
    assert_eq!(
        keys(&body),
        [
            "access_token",
            "expires_in",
            "refresh_token",
            "scope",
            "token_type"
        ]
    );
    let info = h
        .get("/oauth.custom.example/userinfo")
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(info).await,
        json!({"sub": "custom-user-1", "email": "ops@custom.example", "name": "Custom Sandbox"})
    );

    // Rotation is on: each refresh returns a new refresh token.
    let spec = spec(OAuthProvider::CustomOauth);
    let first = body["refresh_token"].as_str().unwrap().to_owned();
    let second = json_of(h.refresh(&spec, &first).await).await;
    let second_rt = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second_rt);
    // Presenting the retired token: invalid_grant, and the whole grant dies.
    let reused = h.refresh(&spec, &first).await;
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(reused).await["error"], "invalid_grant");
    let after = h.refresh(&spec, &second_rt).await;
    assert_eq!(after.status(), StatusCode::BAD_REQUEST);
    let info = h
        .get("/oauth.custom.example/userinfo")
        .bearer_auth(second["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), StatusCode::UNAUTHORIZED);
    assert!(
        header(&info, "www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    let view = h.sandbox.state().oauth_grant(&first).unwrap();
    assert!(view.revoked && view.reuse_detected);
    assert_eq!(view.token_requests, 4);
    assert_eq!(view.refreshes, 1);
    assert_eq!(h.sandbox.state().calls(custom_oauth::OAUTH_TOKEN), 4);
}

#[tokio::test]
async fn rotation_can_be_turned_on_for_any_provider() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    state.set_rotation(OAuthProvider::Hubspot, true);
    let body = h.connect(OAuthProvider::Hubspot).await;
    let spec = spec(OAuthProvider::Hubspot);
    let first = body["refresh_token"].as_str().unwrap();
    let next = json_of(h.refresh(&spec, first).await).await;
    assert_ne!(next["refresh_token"], body["refresh_token"]);
    // A double refresh with the same token destroys the connection.
    let reused = h.refresh(&spec, first).await;
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(reused).await["status"], "BAD_REFRESH_TOKEN");
    let details = h
        .get("/api.hubapi.com/account-info/v3/details")
        .bearer_auth(next["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(details.status(), StatusCode::UNAUTHORIZED);
    // Rotation off: the same token keeps working.
    state.set_rotation(OAuthProvider::CustomOauth, false);
    let body = h.connect(OAuthProvider::CustomOauth).await;
    let spec = spec_custom();
    let rt = body["refresh_token"].as_str().unwrap();
    for _ in 0..3 {
        let again = h.refresh(&spec, rt).await;
        assert_eq!(json_of(again).await["refresh_token"], rt);
    }
}

fn spec_custom() -> Spec {
    spec(OAuthProvider::CustomOauth)
}

// ---------------------------------------------------------------- grant errors

#[tokio::test]
async fn wrong_or_missing_verifier_is_invalid_grant() {
    let h = Harness::start().await;
    for provider in [
        OAuthProvider::Salesforce,
        OAuthProvider::Google,
        OAuthProvider::CustomOauth,
        OAuthProvider::Hubspot,
    ] {
        let spec = spec(provider);
        let (_, challenge) = pkce();
        let params = h.authorize(&spec, Some(&challenge), &[]).await;
        let (other_verifier, _) = pkce();
        for verifier in [Some(other_verifier.as_str()), None] {
            let response = h.exchange(&spec, &params["code"], verifier).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{provider}");
            let body = json_of(response).await;
            if provider == OAuthProvider::Hubspot {
                assert_eq!(body["status"], "BAD_AUTH_CODE");
                assert!(body.get("error").is_none());
                assert!(body["correlationId"].is_string());
            } else {
                assert_eq!(body["error"], "invalid_grant", "{provider}");
            }
        }
    }
}

#[tokio::test]
async fn codes_are_single_use() {
    let h = Harness::start().await;
    for provider in [OAuthProvider::Google, OAuthProvider::Hubspot] {
        let spec = spec(provider);
        let params = h.authorize(&spec, None, &[]).await;
        let code = &params["code"];
        assert_eq!(h.exchange(&spec, code, None).await.status(), StatusCode::OK);
        let again = h.exchange(&spec, code, None).await;
        assert_eq!(again.status(), StatusCode::BAD_REQUEST);
        let body = json_of(again).await;
        match provider {
            OAuthProvider::Hubspot => assert_eq!(body["status"], "BAD_AUTH_CODE"),
            _ => assert_eq!(body["error"], "invalid_grant"),
        }
        let view = h.sandbox.state().oauth_grant(code).unwrap();
        assert_eq!(view.token_requests, 2, "the reuse attempt is counted");
        assert!(!view.revoked);
    }
}

#[tokio::test]
async fn redirect_uri_must_match_exactly() {
    let h = Harness::start().await;
    for provider in [OAuthProvider::Salesforce, OAuthProvider::Hubspot] {
        let spec = spec(provider);
        let params = h.authorize(&spec, None, &[]).await;
        let response = h
            .token_request(
                &spec,
                spec.token,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &params["code"]),
                    ("redirect_uri", "https://app.conduit.test/oauth/callback"),
                ],
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = json_of(response).await;
        match provider {
            OAuthProvider::Hubspot => assert_eq!(body["status"], "BAD_REDIRECT_URI"),
            _ => assert_eq!(body["error"], "invalid_grant"),
        }
    }
}

#[tokio::test]
async fn client_authentication_failures_are_provider_shaped() {
    let h = Harness::start().await;
    let bad = |path: &'static str, id: &'static str| {
        h.post(path).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "whatever"),
            ("client_id", id),
            ("client_secret", "wrong-secret"),
        ])
    };
    let hubspot = bad(
        "/api.hubapi.com/oauth/v1/token",
        "hubspot-sandbox-client-id",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(hubspot.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(hubspot).await["status"], "BAD_CLIENT_ID");
    let google = bad("/oauth2.googleapis.com/token", "google-sandbox-client-id")
        .send()
        .await
        .unwrap();
    assert_eq!(google.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(google).await["error"], "invalid_client");
    let salesforce = bad(
        "/login.salesforce.com/services/oauth2/token",
        "salesforce-sandbox-client-id",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(salesforce.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(salesforce).await["error"], "invalid_client");
    let microsoft = bad(
        "/login.microsoftonline.com/organizations/oauth2/v2.0/token",
        "dynamics365-sandbox-client-id",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(microsoft.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(microsoft).await["error_codes"][0], 7_000_215);
    // custom_oauth: Basic with a wrong secret gets a Basic challenge.
    let custom = h
        .post("/oauth.custom.example/token")
        .basic_auth("custom_oauth-sandbox-client-id", Some("wrong"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(custom.status(), StatusCode::UNAUTHORIZED);
    assert!(
        header(&custom, "www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    // HubSpot also takes Basic.
    let spec = Spec {
        auth: Auth::Basic,
        ..spec(OAuthProvider::Hubspot)
    };
    let params = h.authorize(&spec, None, &[]).await;
    assert_eq!(
        h.exchange(&spec, &params["code"], None).await.status(),
        StatusCode::OK
    );
}

// ---------------------------------------------------------------- authorize page

#[tokio::test]
async fn authorize_denial_unknown_client_and_login_hint() {
    let h = Harness::start().await;
    let spec = spec(OAuthProvider::Google);
    let params = h
        .authorize(&spec, None, &[("sandbox_decision", "deny")])
        .await;
    assert_eq!(params["error"], "access_denied");
    assert!(params.contains_key("error_description"));
    assert!(!params.contains_key("code"));

    let state = h.sandbox.state();
    state.deny_next_authorizations(OAuthProvider::Google, 1);
    let params = h.authorize(&spec, None, &[]).await;
    assert_eq!(params["error"], "access_denied");
    let params = h.authorize(&spec, None, &[]).await;
    assert!(params.contains_key("code"), "the knob ran out");
    // The query decision does not use up the knob.
    state.deny_next_authorizations(OAuthProvider::Google, 1);
    h.authorize(&spec, None, &[("sandbox_decision", "deny")])
        .await;
    let params = h.authorize(&spec, None, &[]).await;
    assert_eq!(params["error"], "access_denied");

    let unknown = h
        .get(spec.authorize)
        .query(&[
            ("response_type", "code"),
            ("client_id", "nobody"),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(header(&unknown, "location").is_none());
    assert!(
        header(&unknown, "content-type")
            .unwrap()
            .starts_with("text/html")
    );

    // login_hint picks a registered user.
    let user = state
        .add_oauth_user(OAuthUser {
            name: "Globex Boss".into(),
            ..OAuthUser::new(OAuthProvider::Google, "boss@globex.test")
        })
        .unwrap();
    assert!(!user.user_id.is_empty());
    let params = h
        .authorize(
            &Spec {
                extra: &[],
                ..spec.clone()
            },
            None,
            &[("login_hint", "boss@globex.test")],
        )
        .await;
    let body = json_of(h.exchange(&spec, &params["code"], None).await).await;
    let info = h
        .get("/openidconnect.googleapis.com/v1/userinfo")
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(info).await["email"], "boss@globex.test");
    assert_eq!(state.calls(google::OAUTH_AUTHORIZE), 7);
}

// ---------------------------------------------------------------- knobs

#[tokio::test]
async fn forced_token_errors_hit_only_their_provider_and_run_out() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    let body = h.connect(OAuthProvider::Hubspot).await;
    let google = h.connect(OAuthProvider::Google).await;
    let refresh = body["refresh_token"].as_str().unwrap();
    state
        .force_token_error(OAuthProvider::Hubspot, OAuthFault::InvalidGrant, 1)
        .unwrap();
    state
        .force_token_error(OAuthProvider::Hubspot, OAuthFault::Status(503), 1)
        .unwrap();
    state
        .force_token_error(OAuthProvider::Google, OAuthFault::Status(429), 1)
        .unwrap();
    let spec = spec(OAuthProvider::Hubspot);
    let first = h.refresh(&spec, refresh).await;
    assert_eq!(first.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(first).await["status"], "BAD_REFRESH_TOKEN");
    let second = h.refresh(&spec, refresh).await;
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&second, "retry-after"), Some("1"));
    assert_eq!(h.refresh(&spec, refresh).await.status(), StatusCode::OK);
    // The grant was never touched by the forced answers.
    assert!(!state.oauth_grant(refresh).unwrap().revoked);

    let throttled = h
        .refresh(
            &spec_for(OAuthProvider::Google),
            google["refresh_token"].as_str().unwrap(),
        )
        .await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&throttled, "retry-after").is_some());
    assert!(
        state
            .force_token_error(OAuthProvider::Zoho, OAuthFault::Status(200), 1)
            .is_err()
    );
    assert!(
        state
            .force_token_error(OAuthProvider::Zoho, OAuthFault::InvalidGrant, 0)
            .is_err()
    );

    // Zoho's forced invalid_grant is its 200 invalid_code.
    state
        .force_token_error(OAuthProvider::Zoho, OAuthFault::InvalidGrant, 1)
        .unwrap();
    let zoho = h.refresh(&spec_for(OAuthProvider::Zoho), "x").await;
    assert_eq!(zoho.status(), StatusCode::OK);
    assert_eq!(json_of(zoho).await, json!({"error": "invalid_code"}));
}

fn spec_for(provider: OAuthProvider) -> Spec {
    spec(provider)
}

#[tokio::test]
async fn global_status_faults_use_the_oauth_shape_at_token_endpoints() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    state
        .force_status(500, 1, Some(sandbox::Provider::Salesforce))
        .unwrap();
    let response = h.refresh(&spec(OAuthProvider::Salesforce), "x").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(json_of(response).await["error"], "unknown_error");
}

#[tokio::test]
async fn access_tokens_expire_by_ttl_and_by_knob() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    state.set_token_ttl(OAuthProvider::CustomOauth, Duration::from_millis(300));
    let body = h.connect(OAuthProvider::CustomOauth).await;
    assert_eq!(body["expires_in"], 1);
    let userinfo = |token: String| {
        let request = h.get("/oauth.custom.example/userinfo").bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(userinfo(access.clone()).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(userinfo(access).await, StatusCode::UNAUTHORIZED);

    // Salesforce sends no expires_in, but the session still ends.
    state.set_token_ttl(OAuthProvider::Salesforce, Duration::from_millis(300));
    let body = h.connect(OAuthProvider::Salesforce).await;
    assert!(body.get("expires_in").is_none());
    let data = |token: String| {
        let request = h
            .get("/acme.my.salesforce.com/services/data/")
            .bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(data(access.clone()).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let expired = data(access).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(expired).await,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );

    // The knob: every current HubSpot access token expires now; refresh recovers.
    let body = h.connect(OAuthProvider::Hubspot).await;
    let access = body["access_token"].as_str().unwrap();
    state.expire_access_tokens(OAuthProvider::Hubspot);
    let details = h
        .get("/api.hubapi.com/account-info/v3/details")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(details.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(details).await["category"], "EXPIRED_AUTHENTICATION");
    let info = h
        .get(&format!("/api.hubapi.com/oauth/v1/access-tokens/{access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), StatusCode::NOT_FOUND);
    let refreshed = json_of(
        h.refresh(
            &spec(OAuthProvider::Hubspot),
            body["refresh_token"].as_str().unwrap(),
        )
        .await,
    )
    .await;
    let details = h
        .get("/api.hubapi.com/account-info/v3/details")
        .bearer_auth(refreshed["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(details.status(), StatusCode::OK);
}

#[tokio::test]
async fn revoking_a_users_grants_kills_every_token() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    let one = h.connect(OAuthProvider::Hubspot).await;
    let two = state
        .seed_grant(
            OAuthProvider::Hubspot,
            "hubspot-sandbox-client-id",
            Some("admin@acme.test"),
            &["oauth"],
        )
        .unwrap();
    assert_eq!(
        state
            .oauth_grants_for_user(OAuthProvider::Hubspot, "ADMIN@acme.test")
            .len(),
        2
    );
    assert_eq!(
        state.revoke_grants_for_user(OAuthProvider::Hubspot, "admin@acme.test"),
        2
    );
    let spec = spec(OAuthProvider::Hubspot);
    for refresh in [one["refresh_token"].as_str().unwrap(), &two.refresh_token] {
        let response = h.refresh(&spec, refresh).await;
        assert_eq!(json_of(response).await["status"], "BAD_REFRESH_TOKEN");
    }
    let details = h
        .get("/api.hubapi.com/account-info/v3/details")
        .bearer_auth(&two.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(details.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(details).await["category"], "INVALID_AUTHENTICATION");
    assert!(
        state
            .oauth_grants_for_user(OAuthProvider::Hubspot, "admin@acme.test")
            .iter()
            .all(|grant| grant.revoked)
    );
}

#[tokio::test]
async fn hubspot_refresh_token_info_and_delete() {
    let h = Harness::start().await;
    let body = h.connect(OAuthProvider::Hubspot).await;
    let refresh = body["refresh_token"].as_str().unwrap();
    let path = format!("/api.hubapi.com/oauth/v1/refresh-tokens/{refresh}");
    let info = json_of(h.get(&path).send().await.unwrap()).await;
    assert_eq!(info["client_id"], "hubspot-sandbox-client-id");
    assert_eq!(info["user"], "admin@acme.test");
    assert_eq!(info["hub_id"], 62515);
    let deleted = h.delete(&path).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        h.get(&path).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let details = h
        .get("/api.hubapi.com/account-info/v3/details")
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(details.status(), StatusCode::UNAUTHORIZED);
    let state = h.sandbox.state();
    assert_eq!(state.calls(hubspot::OAUTH_REVOKE), 1);
    assert_eq!(state.oauth_grant(refresh).unwrap().revoke_requests, 1);
}

#[tokio::test]
async fn salesforce_introspect_and_revoke() {
    let h = Harness::start().await;
    let body = h.connect(OAuthProvider::Salesforce).await;
    let access = body["access_token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();
    let introspect = |token: &str| {
        h.post("/login.salesforce.com/services/oauth2/introspect")
            .form(&[
                ("token", token),
                ("token_type_hint", "access_token"),
                ("client_id", "salesforce-sandbox-client-id"),
                ("client_secret", "salesforce-sandbox-client-secret"),
            ])
            .send()
    };
    let active = json_of(introspect(access).await.unwrap()).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["token_type"], "access_token");
    assert_eq!(active["username"], "admin@acme.test");
    assert_eq!(active["client_id"], "salesforce-sandbox-client-id");
    let exp = active["exp"].as_u64().unwrap();
    let iat = active["iat"].as_u64().unwrap();
    assert_eq!(exp - iat, 7200);
    let active_refresh = json_of(introspect(refresh).await.unwrap()).await;
    assert_eq!(active_refresh["token_type"], "refresh_token");

    let revoked = h
        .post("/login.salesforce.com/services/oauth2/revoke")
        .form(&[("token", refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let inactive = json_of(introspect(access).await.unwrap()).await;
    assert_eq!(inactive, json!({"active": false}));
    let data = h
        .get("/acme.my.salesforce.com/services/data/v60.0/")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(data.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(data).await[0]["errorCode"], "INVALID_SESSION_ID");
    let unknown = h
        .post("/login.salesforce.com/services/oauth2/revoke")
        .form(&[("token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let state = h.sandbox.state();
    assert_eq!(state.calls(salesforce::OAUTH_INTROSPECT), 3);
    assert_eq!(state.calls(salesforce::OAUTH_REVOKE), 2);
}

#[tokio::test]
async fn custom_oauth_revoke_and_introspect_follow_the_rfcs() {
    let h = Harness::start().await;
    let body = h.connect(OAuthProvider::CustomOauth).await;
    let access = body["access_token"].as_str().unwrap();
    let call = |path: &'static str, token: &str| {
        h.post(path)
            .basic_auth(
                "custom_oauth-sandbox-client-id",
                Some("custom_oauth-sandbox-client-secret"),
            )
            .form(&[("token", token)])
            .send()
    };
    let active = json_of(
        call("/oauth.custom.example/introspect", access)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(active["active"], true);
    assert_eq!(active["sub"], "custom-user-1");
    // Unknown tokens: 200 (RFC 7009).
    let unknown = call("/oauth.custom.example/revoke", "unknown")
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::OK);
    let revoked = call("/oauth.custom.example/revoke", access).await.unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let inactive = json_of(
        call("/oauth.custom.example/introspect", access)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(inactive, json!({"active": false}));
    // Revoking the access token leaves the refresh token usable.
    let refreshed = h
        .refresh(&spec_custom(), body["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
}

// ---------------------------------------------------------------- seeding and views

#[tokio::test]
async fn seed_grant_is_fast_and_usable() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    let started = Instant::now();
    let mut seeded = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        seeded.push(
            state
                .seed_grant(
                    OAuthProvider::Pipedrive,
                    "pipedrive-sandbox-client-id",
                    None,
                    &["base"],
                )
                .unwrap(),
        );
    }
    let elapsed = started.elapsed();
    eprintln!("10,000 seeds took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let first = &seeded[0];
    assert_eq!(first.expires_in, 3599);
    assert_eq!(first.extra["api_domain"], "https://acme.pipedrive.com");
    assert!(first.extra.get("access_token").is_none());
    assert!(format!("{first:?}").contains("[redacted]"));
    assert!(!format!("{first:?}").contains(&first.access_token));
    let mut unique = std::collections::HashSet::new();
    for grant in &seeded {
        assert!(unique.insert(grant.access_token.clone()));
        assert!(unique.insert(grant.refresh_token.clone()));
    }

    // Thousands of concurrent refreshes.
    let spec = spec(OAuthProvider::Pipedrive);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in seeded[..2_000].chunks(100) {
        let refresh_tokens: Vec<String> = chunk.iter().map(|g| g.refresh_token.clone()).collect();
        let client = h.client.clone();
        let url = h.url(spec.token);
        tasks.spawn(async move {
            for refresh in refresh_tokens {
                let response = client
                    .post(&url)
                    .basic_auth(
                        "pipedrive-sandbox-client-id",
                        Some("pipedrive-sandbox-client-secret"),
                    )
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    eprintln!("2,000 refreshes took {:?}", started.elapsed());
    assert_eq!(state.calls(pipedrive::OAUTH_TOKEN), 2_000);

    // Seeded grants of every provider carry the response's extras.
    let salesforce = state
        .seed_grant(
            OAuthProvider::Salesforce,
            "salesforce-sandbox-client-id",
            None,
            &["api", "refresh_token"],
        )
        .unwrap();
    assert_eq!(
        salesforce.extra["instance_url"],
        "https://acme.my.salesforce.com"
    );
    assert_eq!(salesforce.expires_in, 7200);
    let zoho = state
        .seed_grant(
            OAuthProvider::Zoho,
            "zoho-sandbox-client-id",
            Some("admin.in@acme.test"),
            &["ZohoCRM.users.READ"],
        )
        .unwrap();
    assert_eq!(zoho.extra["api_domain"], "https://www.zohoapis.in");
    assert!(
        state
            .seed_grant(OAuthProvider::Zoho, "nobody", None, &[])
            .is_err()
    );
    assert!(
        state
            .seed_grant(
                OAuthProvider::Zoho,
                "zoho-sandbox-client-id",
                Some("stranger@x.test"),
                &[]
            )
            .is_err()
    );
}

#[tokio::test]
async fn views_find_grants_by_any_token_and_secrets_are_listed() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    let spec = spec(OAuthProvider::CustomOauth);
    let params = h.authorize(&spec, None, &[]).await;
    let code = params["code"].clone();
    let body = json_of(h.exchange(&spec, &code, None).await).await;
    let access = body["access_token"].as_str().unwrap().to_owned();
    let first_refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let next = json_of(h.refresh(&spec, &first_refresh).await).await;
    let next_refresh = next["refresh_token"].as_str().unwrap().to_owned();
    let next_access = next["access_token"].as_str().unwrap().to_owned();
    for token in [&code, &access, &first_refresh, &next_refresh, &next_access] {
        let view = state.oauth_grant(token).expect("found by any token");
        assert_eq!(view.client_id, "custom_oauth-sandbox-client-id");
        assert_eq!(view.email, "ops@custom.example");
        assert_eq!(view.scopes, ["read", "write"]);
    }
    assert!(state.oauth_grant("nope").is_none());
    let secrets = state.issued_secrets();
    for token in [&code, &access, &first_refresh, &next_refresh, &next_access] {
        assert!(secrets.contains(token));
    }
    state.reset();
    assert!(state.issued_secrets().is_empty());
    assert!(state.oauth_grant(&access).is_none());
    assert_eq!(state.oauth_clients().len(), 9);
}

// ---------------------------------------------------------------- control routes

#[tokio::test]
async fn control_routes_drive_the_oauth_knobs() {
    let h = Harness::start().await;
    let created = h
        .post("/_sandbox/oauth/clients")
        .json(&json!({"provider": "hubspot", "client_id": "app-2", "client_secret": "s3cret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let listing = h
        .get("/_sandbox/oauth/clients")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains("app-2") && !listing.contains("s3cret"));

    let user = h
        .post("/_sandbox/oauth/users")
        .json(&json!({"provider": "hubspot", "email": "b@globex.test", "hub_id": 777}))
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), StatusCode::CREATED);
    let user = json_of(user).await;
    assert_eq!(user["user"]["hub_domain"], "portal-777.hubspot.com");

    let seeded = h
        .post("/_sandbox/oauth/grants")
        .json(&json!({"provider": "hubspot", "client_id": "app-2", "email": "b@globex.test", "scopes": ["oauth"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(seeded.status(), StatusCode::CREATED);
    let seeded = json_of(seeded).await;
    assert_eq!(seeded["extra"]["hub_id"], 777);
    let access = seeded["access_token"].as_str().unwrap();

    let settings = h
        .post("/_sandbox/oauth/settings")
        .json(&json!({"provider": "hubspot", "token_ttl_secs": 60, "rotation": true}))
        .send()
        .await
        .unwrap();
    let settings = json_of(settings).await;
    let hubspot = settings["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["provider"] == "hubspot")
        .unwrap()
        .clone();
    assert_eq!(hubspot["token_ttl_ms"], 60_000);
    assert_eq!(hubspot["rotation"], true);

    for (path, body) in [
        (
            "/_sandbox/oauth/token_faults",
            json!({"provider": "hubspot", "status": 502, "count": 2}),
        ),
        (
            "/_sandbox/oauth/token_faults",
            json!({"provider": "hubspot", "error": "invalid_grant"}),
        ),
        (
            "/_sandbox/oauth/deny",
            json!({"provider": "hubspot", "count": 1}),
        ),
        (
            "/_sandbox/oauth/expire_access_tokens",
            json!({"provider": "hubspot"}),
        ),
    ] {
        let response = h.post(path).json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let details = h
        .get("/api.hubapi.com/account-info/v3/details")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(details.status(), StatusCode::UNAUTHORIZED);

    let lookup = json_of(
        h.post("/_sandbox/oauth/grants/lookup")
            .json(&json!({"token": access}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(lookup["grant"]["email"], "b@globex.test");
    let grants = json_of(
        h.get("/_sandbox/oauth/grants?provider=hubspot&email=b%40globex.test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(grants["grants"].as_array().unwrap().len(), 1);
    let revoked = json_of(
        h.post("/_sandbox/oauth/revoke_user")
            .json(&json!({"provider": "hubspot", "email": "b@globex.test"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(revoked["revoked"], 1);

    for (path, body) in [
        (
            "/_sandbox/oauth/clients",
            json!({"provider": "myspace", "client_id": "a", "client_secret": "b"}),
        ),
        (
            "/_sandbox/oauth/users",
            json!({"provider": "zoho", "email": "x@y.test", "data_centre": "mars"}),
        ),
        (
            "/_sandbox/oauth/token_faults",
            json!({"provider": "zoho", "status": 200}),
        ),
        ("/_sandbox/oauth/settings", json!({"provider": "zoho"})),
        (
            "/_sandbox/oauth/grants",
            json!({"provider": "zoho", "client_id": "nobody"}),
        ),
    ] {
        let response = h.post(path).json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path} {body}");
        assert!(json_of(response).await["error"]["code"].is_string());
    }

    // Reset: seeded clients and users, default knobs.
    h.post("/_sandbox/reset").send().await.unwrap();
    let state = h.sandbox.state();
    assert!(
        state
            .oauth_clients()
            .iter()
            .all(|client| client.client_id.ends_with("-sandbox-client-id"))
    );
    assert!(
        state
            .oauth_settings()
            .iter()
            .all(|s| s.pending_token_faults.is_empty()
                && s.pending_denials == 0
                && s.rotation == (s.provider == OAuthProvider::CustomOauth))
    );
}

#[tokio::test]
async fn clients_registered_in_rust_work_end_to_end() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    state
        .add_oauth_client(OAuthClient {
            provider: OAuthProvider::Pipedrive,
            client_id: "pd-app-2".into(),
            client_secret: "pd-secret-2".into(),
        })
        .unwrap();
    let user = state
        .add_oauth_user(OAuthUser {
            company_domain: "globex".into(),
            company_id: 42,
            ..OAuthUser::new(OAuthProvider::Pipedrive, "boss@globex.test")
        })
        .unwrap();
    let response = h
        .get("/oauth.pipedrive.com/oauth/authorize")
        // Pipedrive's documented authorize URL has no response_type.
        .query(&[
            ("client_id", "pd-app-2"),
            ("redirect_uri", REDIRECT),
            ("login_hint", "boss@globex.test"),
        ])
        .send()
        .await
        .unwrap();
    let (_, params) = location(&response);
    let token = h
        .post("/oauth.pipedrive.com/oauth/token")
        .basic_auth("pd-app-2", Some("pd-secret-2"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &params["code"]),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    let body = json_of(token).await;
    assert_eq!(body["api_domain"], "https://globex.pipedrive.com");
    assert_eq!(body["scope"], "base");
    let me = h
        .get("/globex.pipedrive.com/v1/users/me")
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let me = json_of(me).await;
    assert_eq!(me["data"]["company_id"], 42);
    assert_eq!(me["data"]["id"].to_string(), user.user_id);
}

#[tokio::test]
async fn authorize_validates_response_type_and_pkce_method() {
    let h = Harness::start().await;
    let spec = spec(OAuthProvider::Google);
    let base = [
        ("client_id", "google-sandbox-client-id"),
        ("redirect_uri", REDIRECT),
        ("state", "s1"),
    ];
    for (extra, error) in [
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![], "unsupported_response_type"),
        (
            vec![
                ("response_type", "code"),
                (
                    "code_challenge",
                    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                ),
                ("code_challenge_method", "S512"),
            ],
            "invalid_request",
        ),
    ] {
        let query: Vec<(&str, &str)> = base.iter().copied().chain(extra).collect();
        let response = h.get(spec.authorize).query(&query).send().await.unwrap();
        let (_, params) = location(&response);
        assert_eq!(params["error"], error);
        assert_eq!(params["state"], "s1");
    }
    // HubSpot's authorize URL needs no response_type either.
    let response = h
        .get("/app.hubspot.com/oauth/authorize")
        .query(&[
            ("client_id", "hubspot-sandbox-client-id"),
            ("redirect_uri", REDIRECT),
            ("scope", "oauth"),
            ("optional_scope", "crm.objects.deals.read"),
        ])
        .send()
        .await
        .unwrap();
    let (_, params) = location(&response);
    let view = h.sandbox.state().oauth_grant(&params["code"]);
    assert!(view.is_none(), "not exchanged yet");
    let body = json_of(
        h.exchange(&spec_for(OAuthProvider::Hubspot), &params["code"], None)
            .await,
    )
    .await;
    assert_eq!(body["scopes"], json!(["oauth", "crm.objects.deals.read"]));
    // A redirect_uri that is not absolute gets the error page.
    let response = h
        .get(spec.authorize)
        .query(&[
            ("client_id", "google-sandbox-client-id"),
            ("redirect_uri", "/relative"),
            ("response_type", "code"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
