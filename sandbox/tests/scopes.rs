//! Scopes, end to end over HTTP: every OAuth stand-in grants only what it knows and the
//! app may have, and answers a token without an endpoint's scope with its provider's own
//! error; the partial-consent, narrowing, app-scope and private-app knobs; incremental
//! authorization.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use sandbox::{OAuthProvider, Sandbox};
use serde_json::{Value, json};
use url::Url;

const REDIRECT: &str = "https://app.conduit.test/cb";
const CONTACTS: &str = "/api.hubapi.com/crm/v3/objects/contacts";
const COMPANIES: &str = "/api.hubapi.com/crm/v3/objects/companies";
const GMAIL_SEND: &str = "/gmail.googleapis.com/gmail/v1/users/me/messages/send";
const EVENTS: &str = "/www.googleapis.com/calendar/v3/calendars/primary/events";
const GMAIL_SCOPE: &str = "https://www.googleapis.com/auth/gmail.send";
const CALENDAR_SCOPE: &str = "https://www.googleapis.com/auth/calendar.events";

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

    /// An access token of a grant seeded for `scopes` (as if approved and exchanged).
    fn token(&self, provider: OAuthProvider, scopes: &[&str]) -> String {
        self.sandbox
            .state()
            .seed_grant(
                provider,
                &format!("{provider}-sandbox-client-id"),
                None,
                scopes,
            )
            .expect("seeded grant")
            .access_token
    }

    async fn status_and_body(&self, request: RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("send");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET {authorize}` with the default client; the raw answer.
    async fn authorize(
        &self,
        path: &str,
        provider: OAuthProvider,
        query: &[(&str, &str)],
    ) -> Response {
        let mut pairs: Vec<(&str, String)> = vec![
            ("response_type", "code".into()),
            ("client_id", format!("{provider}-sandbox-client-id")),
            ("redirect_uri", REDIRECT.into()),
            ("state", "s1".into()),
        ];
        pairs.extend(query.iter().map(|(k, v)| (*k, (*v).to_owned())));
        self.get(path).query(&pairs).send().await.expect("send")
    }

    /// Exchanges a code with body client credentials; the token response.
    async fn exchange(&self, path: &str, provider: OAuthProvider, code: &str) -> Value {
        let id = format!("{provider}-sandbox-client-id");
        let secret = format!("{provider}-sandbox-client-secret");
        let response = self
            .post(path)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("client_id", &id),
                ("client_secret", &secret),
            ])
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("JSON")
    }

    async fn control(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.status_and_body(self.post(path).json(&body)).await
    }
}

/// The redirect's query parameters (panics when the answer is not a redirect).
fn redirect_params(response: &Response) -> HashMap<String, String> {
    assert_eq!(response.status(), StatusCode::FOUND, "expected a redirect");
    let location = response.headers()["location"].to_str().expect("ascii");
    Url::parse(location)
        .expect("absolute")
        .query_pairs()
        .into_owned()
        .collect()
}

fn www_authenticate(response: &Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// HubSpot's MISSING_SCOPES body, with the random correlation id checked and removed.
fn assert_missing_scopes(mut body: Value, required: &[&str]) {
    let correlation = body["correlationId"].take();
    assert!(
        correlation.as_str().is_some_and(|c| c.len() >= 32),
        "{correlation}"
    );
    body.as_object_mut()
        .expect("object")
        .remove("correlationId");
    assert_eq!(
        body,
        json!({
            "status": "error",
            "message": "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
            "errors": [{
                "message": "One or more of the following scopes are required.",
                "context": {"requiredGranularScopes": required},
            }],
            "links": {"scopes": "https://developers.hubspot.com/scopes"},
            "category": "MISSING_SCOPES",
        })
    );
}

#[tokio::test]
async fn hubspot_crm_routes_need_their_granular_scopes() {
    let h = Harness::start().await;
    let read = h.token(
        OAuthProvider::Hubspot,
        &["oauth", "crm.objects.contacts.read"],
    );
    let (status, _) = h.status_and_body(h.get(CONTACTS).bearer_auth(&read)).await;
    assert_eq!(status, StatusCode::OK);
    // Property definitions: the object's read scope is one of the spec's alternatives.
    let (status, _) = h
        .status_and_body(
            h.get("/api.hubapi.com/crm/v3/properties/contacts")
                .bearer_auth(&read),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let batch = json!({"inputs": [{"properties": {"email": "a@b.test"}}]});
    let response = h
        .post(&format!("{CONTACTS}/batch/create"))
        .bearer_auth(&read)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response
            .headers()
            .contains_key("x-hubspot-ratelimit-remaining")
    );
    assert_missing_scopes(
        response.json().await.unwrap(),
        &["crm.objects.contacts.write"],
    );
    let (status, body) = h.status_and_body(h.get(COMPANIES).bearer_auth(&read)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_missing_scopes(body, &["crm.objects.companies.read"]);
    let property = json!({"name": "conduit_id", "label": "Conduit id", "type": "string",
        "fieldType": "text", "groupName": "contactinformation", "hasUniqueValue": true});
    let (status, body) = h
        .status_and_body(
            h.post("/api.hubapi.com/crm/v3/properties/contacts")
                .bearer_auth(&read)
                .json(&property),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_missing_scopes(body, &["crm.schemas.contacts.write"]);
    // Nothing was written.
    assert!(
        h.sandbox
            .state()
            .hubspot_records(62515, sandbox::CrmObject::Contacts)
            .is_empty()
    );

    let write = h.token(
        OAuthProvider::Hubspot,
        &["crm.objects.contacts.write", "crm.schemas.contacts.write"],
    );
    let (status, _) = h
        .status_and_body(
            h.post(&format!("{CONTACTS}/batch/create"))
                .bearer_auth(&write)
                .json(&batch),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = h
        .status_and_body(
            h.post("/api.hubapi.com/crm/v3/properties/contacts")
                .bearer_auth(&write)
                .json(&property),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Write does not imply read for records.
    let (status, body) = h.status_and_body(h.get(CONTACTS).bearer_auth(&write)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_missing_scopes(body, &["crm.objects.contacts.read"]);
}

#[tokio::test]
async fn hubspot_private_app_scopes_default_to_the_crm_and_can_be_narrowed() {
    let h = Harness::start().await;
    let pat = "pat-na1-sandbox-0001";
    for path in [CONTACTS, COMPANIES] {
        let (status, _) = h.status_and_body(h.get(path).bearer_auth(pat)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let (status, body) = h
        .control(
            "/_sandbox/hubspot/private_app_scopes",
            json!({"scopes": ["crm.objects.contacts.read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], 1);
    let (status, _) = h.status_and_body(h.get(CONTACTS).bearer_auth(pat)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h.status_and_body(h.get(COMPANIES).bearer_auth(pat)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_missing_scopes(body, &["crm.objects.companies.read"]);
    // Bad input is refused and changes nothing.
    let (status, body) = h
        .control(
            "/_sandbox/hubspot/private_app_scopes",
            json!({"scopes": ["crm.objects.everything.read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_scopes");
    let (status, _) = h.status_and_body(h.get(CONTACTS).bearer_auth(pat)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h
        .control(
            "/_sandbox/hubspot/private_app_scopes",
            json!({"portal": 1, "scopes": []}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn hubspot_consent_refuses_scopes_the_app_lacks_and_keeps_optional_semantics() {
    let h = Harness::start().await;
    let authorize = "/app.hubspot.com/oauth/authorize";
    let hubspot = OAuthProvider::Hubspot;
    let unknown = h
        .authorize(
            authorize,
            hubspot,
            &[("scope", "oauth crm.objects.everything.read")],
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let page = unknown.text().await.unwrap();
    assert!(page.contains("invalid_scope") && page.contains("crm.objects.everything.read"));

    let (status, _) = h
        .control(
            "/_sandbox/oauth/client_scopes",
            json!({"provider": "hubspot", "client_id": "hubspot-sandbox-client-id",
                   "scopes": ["oauth", "crm.objects.contacts.read", "crm.objects.companies.read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let not_configured = h
        .authorize(
            authorize,
            hubspot,
            &[("scope", "oauth crm.objects.contacts.write")],
        )
        .await;
    assert_eq!(not_configured.status(), StatusCode::BAD_REQUEST);

    // Optional scopes the app has are granted; others are left out silently.
    let response = h
        .authorize(
            authorize,
            hubspot,
            &[
                ("scope", "oauth crm.objects.contacts.read"),
                (
                    "optional_scope",
                    "crm.objects.companies.read crm.objects.deals.read",
                ),
            ],
        )
        .await;
    let params = redirect_params(&response);
    let tokens = h
        .exchange("/api.hubapi.com/oauth/v1/token", hubspot, &params["code"])
        .await;
    let granted = json!([
        "oauth",
        "crm.objects.contacts.read",
        "crm.objects.companies.read"
    ]);
    assert_eq!(tokens["scopes"], granted);
    let access = tokens["access_token"].as_str().unwrap();
    let (status, info) = h
        .status_and_body(h.get(&format!("/api.hubapi.com/oauth/v1/access-tokens/{access}")))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["scopes"], granted);

    // Bad knob input is refused.
    let (status, _) = h
        .control(
            "/_sandbox/oauth/client_scopes",
            json!({"provider": "hubspot", "client_id": "hubspot-sandbox-client-id", "scopes": ["nope"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn narrowing_a_grant_takes_effect_at_once_and_survives_refresh() {
    let h = Harness::start().await;
    let seeded = h
        .sandbox
        .state()
        .seed_grant(
            OAuthProvider::Hubspot,
            "hubspot-sandbox-client-id",
            None,
            &[
                "oauth",
                "crm.objects.contacts.read",
                "crm.objects.companies.read",
            ],
        )
        .unwrap();
    let access = seeded.access_token.clone();
    let (status, _) = h
        .status_and_body(h.get(COMPANIES).bearer_auth(&access))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = h
        .control(
            "/_sandbox/oauth/narrow",
            json!({"provider": "hubspot", "token": seeded.refresh_token, "remove": ["crm.objects.companies.read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["grants"][0]["scopes"],
        json!(["oauth", "crm.objects.contacts.read"])
    );
    let (status, body) = h
        .status_and_body(h.get(COMPANIES).bearer_auth(&access))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_missing_scopes(body, &["crm.objects.companies.read"]);
    let (_, info) = h
        .status_and_body(h.get(&format!("/api.hubapi.com/oauth/v1/access-tokens/{access}")))
        .await;
    assert_eq!(
        info["scopes"],
        json!(["oauth", "crm.objects.contacts.read"])
    );

    // A refresh issues the narrower set.
    let (status, refreshed) = h
        .status_and_body(h.post("/api.hubapi.com/oauth/v1/token").form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &seeded.refresh_token),
            ("client_id", "hubspot-sandbox-client-id"),
            ("client_secret", "hubspot-sandbox-client-secret"),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        refreshed["scopes"],
        json!(["oauth", "crm.objects.contacts.read"])
    );
    let fresh = refreshed["access_token"].as_str().unwrap();
    let (status, _) = h.status_and_body(h.get(COMPANIES).bearer_auth(fresh)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = h.status_and_body(h.get(CONTACTS).bearer_auth(fresh)).await;
    assert_eq!(status, StatusCode::OK);

    // `keep` narrows to a set; an unknown token is a 404; no change asked is a 400.
    let (_, body) = h
        .control(
            "/_sandbox/oauth/narrow",
            json!({"provider": "hubspot", "token": access, "keep": ["oauth"]}),
        )
        .await;
    assert_eq!(body["grants"][0]["scopes"], json!(["oauth"]));
    let (status, _) = h
        .control(
            "/_sandbox/oauth/narrow",
            json!({"provider": "hubspot", "token": "nope", "keep": []}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .control(
            "/_sandbox/oauth/narrow",
            json!({"provider": "hubspot", "token": access}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h
        .control(
            "/_sandbox/oauth/narrow",
            json!({"provider": "hubspot", "token": access, "grant_id": 1, "keep": []}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn narrowing_by_user_reaches_grants_whose_tokens_the_test_never_saw() {
    let h = Harness::start().await;
    let scopes = [
        "oauth",
        "crm.objects.contacts.read",
        "crm.objects.contacts.write",
    ];
    let first = h.token(OAuthProvider::Hubspot, &scopes);
    let second = h.token(OAuthProvider::Hubspot, &scopes);
    let (status, body) = h
        .control(
            "/_sandbox/oauth/narrow",
            json!({"provider": "hubspot", "email": "admin@acme.test",
                   "client_id": "hubspot-sandbox-client-id", "remove": ["crm.objects.contacts.write"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["grants"].as_array().map(Vec::len), Some(2));
    let batch = json!({"inputs": [{"properties": {"email": "x@y.test"}}]});
    for token in [&first, &second] {
        let (status, body) = h
            .status_and_body(
                h.post(&format!("{CONTACTS}/batch/create"))
                    .bearer_auth(token)
                    .json(&batch),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_missing_scopes(body, &["crm.objects.contacts.write"]);
        let (status, _) = h.status_and_body(h.get(CONTACTS).bearer_auth(token)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = h
        .control(
            "/_sandbox/oauth/narrow",
            json!({"provider": "hubspot", "email": "nobody@acme.test", "keep": []}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn hubspot_reauthorization_grants_exactly_the_new_set() {
    let h = Harness::start().await;
    let authorize = "/app.hubspot.com/oauth/authorize";
    let token = "/api.hubapi.com/oauth/v1/token";
    let hubspot = OAuthProvider::Hubspot;
    let first = redirect_params(
        &h.authorize(
            authorize,
            hubspot,
            &[("scope", "oauth crm.objects.contacts.read")],
        )
        .await,
    );
    let first = h.exchange(token, hubspot, &first["code"]).await;
    let second = redirect_params(
        &h.authorize(
            authorize,
            hubspot,
            &[("scope", "oauth crm.objects.companies.read")],
        )
        .await,
    );
    let second = h.exchange(token, hubspot, &second["code"]).await;
    assert_eq!(
        second["scopes"],
        json!(["oauth", "crm.objects.companies.read"])
    );
    let (status, _) = h
        .status_and_body(
            h.get(CONTACTS)
                .bearer_auth(second["access_token"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The earlier grant keeps its own scopes.
    let (status, _) = h
        .status_and_body(
            h.get(CONTACTS)
                .bearer_auth(first["access_token"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// A Google authorization for `scope`, exchanged; the token response.
async fn google_connect(h: &Harness, scope: &str, extra: &[(&str, &str)]) -> Value {
    let mut query = vec![("scope", scope), ("access_type", "offline")];
    query.extend_from_slice(extra);
    let response = h
        .authorize(
            "/accounts.google.com/o/oauth2/v2/auth",
            OAuthProvider::Google,
            &query,
        )
        .await;
    let params = redirect_params(&response);
    let tokens = h
        .exchange(
            "/oauth2.googleapis.com/token",
            OAuthProvider::Google,
            &params["code"],
        )
        .await;
    assert_eq!(params["scope"], tokens["scope"].as_str().unwrap());
    tokens
}

fn scope_set(tokens: &Value) -> Vec<String> {
    let mut scopes: Vec<String> = tokens["scope"]
        .as_str()
        .unwrap()
        .split(' ')
        .map(str::to_owned)
        .collect();
    scopes.sort();
    scopes
}

fn sorted(scopes: &[&str]) -> Vec<String> {
    let mut scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    scopes.sort();
    scopes
}

#[tokio::test]
async fn google_partial_consent_and_incremental_authorization() {
    let h = Harness::start().await;
    let (status, settings) = h
        .control(
            "/_sandbox/oauth/withhold_scopes",
            json!({"provider": "google", "scopes": [GMAIL_SCOPE]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let google = settings["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .find(|s| s["provider"] == "google")
        .cloned()
        .expect("google settings");
    assert_eq!(google["withheld_scopes"], json!([GMAIL_SCOPE]));
    let partial = google_connect(&h, &format!("openid email {GMAIL_SCOPE}"), &[]).await;
    assert!(!scope_set(&partial).contains(&GMAIL_SCOPE.to_owned()));
    let response = h
        .post(GMAIL_SEND)
        .bearer_auth(partial["access_token"].as_str().unwrap())
        .json(&json!({"raw": URL_SAFE_NO_PAD.encode("To: a@b.test\r\n\r\nhi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = www_authenticate(&response);
    assert!(challenge.contains("error=\"insufficient_scope\"") && challenge.contains(GMAIL_SCOPE));
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {
            "code": 403,
            "message": "Request had insufficient authentication scopes.",
            "errors": [{"message": "Insufficient Permission", "domain": "global", "reason": "insufficientPermissions"}],
            "status": "PERMISSION_DENIED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                "domain": "googleapis.com",
                "metadata": {"service": "gmail.googleapis.com", "method": "gmail.users.messages.send"},
            }],
        }})
    );

    // Full consent again, then an incremental authorization for Calendar.
    h.control(
        "/_sandbox/oauth/withhold_scopes",
        json!({"provider": "google", "scopes": []}),
    )
    .await;
    let gmail = google_connect(&h, &format!("openid {GMAIL_SCOPE}"), &[]).await;
    assert_eq!(scope_set(&gmail), sorted(&["openid", GMAIL_SCOPE]));
    let plain = google_connect(&h, CALENDAR_SCOPE, &[]).await;
    assert_eq!(scope_set(&plain), sorted(&[CALENDAR_SCOPE]));
    let both = google_connect(&h, CALENDAR_SCOPE, &[("include_granted_scopes", "true")]).await;
    assert_eq!(
        scope_set(&both),
        // Every live grant of the user to this client, the partial one included.
        sorted(&[
            "openid",
            "https://www.googleapis.com/auth/userinfo.email",
            GMAIL_SCOPE,
            CALENDAR_SCOPE
        ])
    );
    let access = both["access_token"].as_str().unwrap();
    let (status, _) = h
        .status_and_body(
            h.post(GMAIL_SEND)
                .bearer_auth(access)
                .json(&json!({"raw": URL_SAFE_NO_PAD.encode("To: a@b.test\r\n\r\nhi")})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Unknown scopes: Google's error page, no redirect.
    let response = h
        .authorize(
            "/accounts.google.com/o/oauth2/v2/auth",
            OAuthProvider::Google,
            &[("scope", "https://www.googleapis.com/auth/everything")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("invalid_scope"));
}

#[tokio::test]
async fn gmail_methods_check_scopes_auth_and_input() {
    let h = Harness::start().await;
    let send_only = h.token(OAuthProvider::Google, &[GMAIL_SCOPE]);
    let raw = URL_SAFE_NO_PAD
        .encode("From: admin@acme.test\r\nTo: lead@example.test\r\nSubject: Hi\r\n\r\nHello");
    let (status, sent) = h
        .status_and_body(
            h.post(GMAIL_SEND)
                .bearer_auth(&send_only)
                .json(&json!({"raw": raw})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sent["labelIds"], json!(["SENT"]));
    assert_eq!(sent["id"], sent["threadId"]);
    let mail = h.sandbox.state().gmail_sent("admin@acme.test");
    assert_eq!(mail.len(), 1);
    assert!(mail[0].contains("To: lead@example.test"));

    // gmail.send does not read the profile.
    let response = h
        .get("/gmail.googleapis.com/gmail/v1/users/me/profile")
        .bearer_auth(&send_only)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(www_authenticate(&response).contains("gmail.readonly"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["details"][0]["metadata"]["method"],
        "gmail.users.getProfile"
    );
    let reader = h.token(
        OAuthProvider::Google,
        &["https://www.googleapis.com/auth/gmail.readonly"],
    );
    let (status, profile) = h
        .status_and_body(
            h.get("/gmail.googleapis.com/gmail/v1/users/me/profile")
                .bearer_auth(&reader),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(profile["emailAddress"], "admin@acme.test");
    assert_eq!(profile["messagesTotal"], 1);

    // Bad input: 400 INVALID_ARGUMENT, nothing sent.
    for (body, reason) in [
        (json!({}), "invalidArgument"),
        (json!({"raw": "***"}), "invalid"),
        (
            json!({"raw": URL_SAFE_NO_PAD.encode("Subject: no one\r\n\r\nx")}),
            "invalidArgument",
        ),
    ] {
        let (status, answer) = h
            .status_and_body(h.post(GMAIL_SEND).bearer_auth(&send_only).json(&body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(answer["error"]["errors"][0]["reason"], reason);
    }
    let (status, _) = h
        .status_and_body(
            h.post(GMAIL_SEND)
                .bearer_auth(&send_only)
                .body("{\"raw\":1} x"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(h.sandbox.state().gmail_sent("admin@acme.test").len(), 1);
    // Another mailbox: delegation denied.
    let (status, _) = h
        .status_and_body(
            h.post("/gmail.googleapis.com/gmail/v1/users/other@acme.test/messages/send")
                .bearer_auth(&send_only)
                .json(&json!({"raw": raw})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // No token, a dead token.
    let response = h
        .post(GMAIL_SEND)
        .json(&json!({"raw": raw}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(body["error"]["errors"][0]["reason"], "required");
    let response = h
        .post(GMAIL_SEND)
        .bearer_auth("ya29.dead")
        .json(&json!({"raw": raw}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(www_authenticate(&response).contains("invalid_token"));
}

#[tokio::test]
async fn calendar_events_check_scopes_and_validate() {
    let h = Harness::start().await;
    let writer = h.token(OAuthProvider::Google, &[CALENDAR_SCOPE]);
    let reader = h.token(
        OAuthProvider::Google,
        &["https://www.googleapis.com/auth/calendar.events.readonly"],
    );
    let event = json!({
        "summary": "Call with Acme",
        "notAField": true,
        "start": {"dateTime": "2026-12-07T10:00:00+01:00"},
        "end": {"dateTime": "2026-12-07T09:30:00Z"},
    });
    let (status, created) = h
        .status_and_body(h.post(EVENTS).bearer_auth(&writer).json(&event))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["status"], "confirmed");
    assert_eq!(created["kind"], "calendar#event");
    assert_eq!(created["organizer"]["email"], "admin@acme.test");
    assert!(created.get("notAField").is_none(), "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let response = h
        .post(EVENTS)
        .bearer_auth(&reader)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["details"][0]["reason"],
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    );
    assert_eq!(
        body["error"]["details"][0]["metadata"]["method"],
        "calendar.v3.Events.Insert"
    );

    let (status, list) = h.status_and_body(h.get(EVENTS).bearer_auth(&reader)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"][0]["id"], id.as_str());
    let one = format!("{EVENTS}/{id}");
    let (status, got) = h.status_and_body(h.get(&one).bearer_auth(&reader)).await;
    assert_eq!(
        (status, &got["summary"]),
        (StatusCode::OK, &json!("Call with Acme"))
    );
    let (status, patched) = h
        .status_and_body(
            h.client
                .patch(h.url(&one))
                .bearer_auth(&writer)
                .json(&json!({"summary": "Moved", "id": "ignored"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (patched["summary"].as_str(), patched["id"].as_str()),
        (Some("Moved"), Some(id.as_str()))
    );
    assert_eq!(patched["sequence"], 1);

    // Validation: missing end, empty range, mixed kinds, bad JSON; paging bounds.
    for body in [
        json!({"start": {"date": "2026-12-07"}}),
        json!({"start": {"dateTime": "2026-12-07T10:00:00Z"}, "end": {"dateTime": "2026-12-07T09:00:00Z"}}),
        json!({"start": {"date": "2026-12-07"}, "end": {"dateTime": "2026-12-08T09:00:00Z"}}),
        json!({"start": {"dateTime": "tomorrow"}, "end": {"dateTime": "2026-12-08T09:00:00Z"}}),
    ] {
        let (status, answer) = h
            .status_and_body(h.post(EVENTS).bearer_auth(&writer).json(&body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT");
    }
    let (status, _) = h
        .status_and_body(
            h.get(&format!("{EVENTS}?maxResults=0"))
                .bearer_auth(&reader),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h
        .status_and_body(
            h.get("/www.googleapis.com/calendar/v3/calendars/someone%40else.test/events")
                .bearer_auth(&reader),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = h
        .status_and_body(h.client.delete(h.url(&one)).bearer_auth(&writer))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = h
        .status_and_body(h.client.delete(h.url(&one)).bearer_auth(&writer))
        .await;
    assert_eq!(status, StatusCode::GONE);
    let (_, list) = h.status_and_body(h.get(EVENTS).bearer_auth(&reader)).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn salesforce_rest_needs_api_or_full() {
    let h = Harness::start().await;
    let root = "/acme.my.salesforce.com/services/data/v60.0";
    let refresh_only = h.token(OAuthProvider::Salesforce, &["refresh_token", "openid"]);
    for path in [
        root.to_owned(),
        format!("{root}/query?q=SELECT+Id+FROM+Contact"),
    ] {
        let response = h
            .get(&path)
            .bearer_auth(&refresh_only)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!([{"message": "This session is not valid for use with the REST API", "errorCode": "INVALID_SESSION_ID"}])
        );
    }
    for scopes in [["api"], ["full"]] {
        let token = h.token(OAuthProvider::Salesforce, &scopes);
        let (status, _) = h.status_and_body(h.get(root).bearer_auth(&token)).await;
        assert_eq!(status, StatusCode::OK, "{scopes:?}");
    }
    let response = h
        .authorize(
            "/login.salesforce.com/services/oauth2/authorize",
            OAuthProvider::Salesforce,
            &[("scope", "api superpowers")],
        )
        .await;
    let params = redirect_params(&response);
    assert_eq!(params["error"], "invalid_scope");
    assert_eq!(params["state"], "s1");
}

#[tokio::test]
async fn zoho_users_need_the_users_scope() {
    let h = Harness::start().await;
    let path = "/www.zohoapis.com/crm/v2/users?type=CurrentUser";
    let modules = h.token(OAuthProvider::Zoho, &["ZohoCRM.modules.contacts.ALL"]);
    let (status, body) = h
        .status_and_body(
            h.get(path)
                .header("authorization", format!("Zoho-oauthtoken {modules}")),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"code": "OAUTH_SCOPE_MISMATCH", "details": {}, "message": "invalid oauth scope to access this URL", "status": "error"})
    );
    for scope in ["ZohoCRM.users.READ", "ZohoCRM.users.ALL"] {
        let token = h.token(OAuthProvider::Zoho, &[scope]);
        let (status, _) = h
            .status_and_body(
                h.get(path)
                    .header("authorization", format!("Zoho-oauthtoken {token}")),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{scope}");
    }
    let response = h
        .authorize(
            "/accounts.zoho.com/oauth/v2/auth",
            OAuthProvider::Zoho,
            &[("scope", "ZohoCRM.users.READ,ZohoCRM.everything.NOW")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Invalid OAuth Scope")
    );
}

#[tokio::test]
async fn pipedrive_users_me_needs_base_and_the_app_set_wins() {
    let h = Harness::start().await;
    let path = "/acme.pipedrive.com/api/v1/users/me";
    let no_base = h.token(OAuthProvider::Pipedrive, &["contacts:read"]);
    let (status, body) = h.status_and_body(h.get(path).bearer_auth(&no_base)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({"success": false, "error": "Scope and URL mismatch", "errorCode": 403})
    );
    let base = h.token(OAuthProvider::Pipedrive, &["base"]);
    let (status, _) = h.status_and_body(h.get(path).bearer_auth(&base)).await;
    assert_eq!(status, StatusCode::OK);

    // The user accepts the app's configured set, whatever the request asked.
    h.control(
        "/_sandbox/oauth/client_scopes",
        json!({"provider": "pipedrive", "client_id": "pipedrive-sandbox-client-id", "scopes": ["deals:read"]}),
    )
    .await;
    let response = h
        .authorize(
            "/oauth.pipedrive.com/oauth/authorize",
            OAuthProvider::Pipedrive,
            &[("scope", "contacts:full admin")],
        )
        .await;
    let params = redirect_params(&response);
    let tokens = h
        .status_and_body(
            h.post("/oauth.pipedrive.com/oauth/token")
                .basic_auth(
                    "pipedrive-sandbox-client-id",
                    Some("pipedrive-sandbox-client-secret"),
                )
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", params["code"].as_str()),
                    ("redirect_uri", REDIRECT),
                ]),
        )
        .await
        .1;
    assert_eq!(tokens["scope"], "base,deals:read");
}

#[tokio::test]
async fn dynamics_tokens_work_only_for_their_resource() {
    let h = Harness::start().await;
    let path = "/acme.crm.dynamics.com/api/data/v9.2/WhoAmI";
    let graph = h.token(OAuthProvider::Dynamics365, &["openid", "offline_access"]);
    let other = h.token(
        OAuthProvider::Dynamics365,
        &["https://globex.crm4.dynamics.com/user_impersonation"],
    );
    for token in [&graph, &other] {
        let response = h.get(path).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(www_authenticate(&response).contains("resource_id=https://acme.crm.dynamics.com/"));
        assert!(response.text().await.unwrap().is_empty());
    }
    for scope in [
        "https://acme.crm.dynamics.com/user_impersonation",
        "https://acme.crm.dynamics.com/.default",
    ] {
        let token = h.token(OAuthProvider::Dynamics365, &[scope]);
        let (status, _) = h.status_and_body(h.get(path).bearer_auth(&token)).await;
        assert_eq!(status, StatusCode::OK, "{scope}");
    }
    let response = h
        .authorize(
            "/login.microsoftonline.com/organizations/oauth2/v2.0/authorize",
            OAuthProvider::Dynamics365,
            &[("scope", "user_impersonation offline_access")],
        )
        .await;
    let params = redirect_params(&response);
    assert_eq!(params["error"], "invalid_scope");
    assert!(params["error_description"].starts_with("AADSTS70011"));
}

#[tokio::test]
async fn zendesk_genesys_and_custom_identity_endpoints_need_their_scopes() {
    let h = Harness::start().await;
    let zendesk = "/acme.zendesk.com/api/v2/users/me.json";
    let tickets = h.token(OAuthProvider::Zendesk, &["tickets:write"]);
    let (status, body) = h
        .status_and_body(h.get(zendesk).bearer_auth(&tickets))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({"error": "Forbidden", "description": "You are missing the following required scopes: read"})
    );
    for scope in ["read", "users:read"] {
        let token = h.token(OAuthProvider::Zendesk, &[scope]);
        let (status, _) = h.status_and_body(h.get(zendesk).bearer_auth(&token)).await;
        assert_eq!(status, StatusCode::OK, "{scope}");
    }
    let response = h
        .authorize(
            "/acme.zendesk.com/oauth/authorizations/new",
            OAuthProvider::Zendesk,
            &[("scope", "read tickets:delete")],
        )
        .await;
    assert_eq!(redirect_params(&response)["error"], "invalid_scope");

    let genesys = "/api.mypurecloud.com/api/v2/users/me";
    let conversations = h.token(OAuthProvider::Genesys, &["conversations"]);
    let (status, body) = h
        .status_and_body(h.get(genesys).bearer_auth(&conversations))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        (body["status"].as_u64(), body["code"].as_str()),
        (Some(403), Some("missing.any.scopes"))
    );
    for scopes in [&["users:readonly"][..], &[]] {
        let token = h.token(OAuthProvider::Genesys, scopes);
        let (status, _) = h.status_and_body(h.get(genesys).bearer_auth(&token)).await;
        assert_eq!(status, StatusCode::OK, "{scopes:?}");
    }

    let custom = "/oauth.custom.example/userinfo";
    let api_only = h.token(OAuthProvider::CustomOauth, &["read", "contacts"]);
    let response = h.get(custom).bearer_auth(&api_only).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(www_authenticate(&response).contains("error=\"insufficient_scope\""));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    let profile = h.token(OAuthProvider::CustomOauth, &["profile", "contacts"]);
    let (status, _) = h.status_and_body(h.get(custom).bearer_auth(&profile)).await;
    assert_eq!(status, StatusCode::OK);
}
