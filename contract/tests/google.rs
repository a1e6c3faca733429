//! The Google stand-in against Google's own descriptions.
//!
//! - Gmail and Calendar (the calls Conduit's actions make: message send; event insert,
//!   list, get, patch, delete) are checked against the discovery documents (as OpenAPI,
//!   `specs/google/`) through the sandbox's recorder: the test's requests and the
//!   stand-in's answers. Endpoints the stand-in does not serve yet (its unknown-route
//!   404) are listed, and only their requests are checked; once it serves them, their
//!   answers are checked too, with no change here.
//! - The OAuth endpoints (token, revoke, tokeninfo, userinfo) are in no discovery
//!   document: they are checked against the shapes Google's OAuth documentation gives,
//!   as written assertions below.

use std::collections::{BTreeMap, BTreeSet};

use sandbox::{Exchange, Sandbox};
use serde_json::{Value, json};

const CLIENT_ID: &str = "google-sandbox-client-id";
const CLIENT_SECRET: &str = "google-sandbox-client-secret";
const REDIRECT: &str = "https://app.test/callback";
const GMAIL_SEND: &str = "https://www.googleapis.com/auth/gmail.send";
const CALENDAR_EVENTS: &str = "https://www.googleapis.com/auth/calendar.events";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn json_of(resp: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp.bytes().await.expect("body");
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, ct, v)
}

/// Authorizes `scope` (offline, consent) and exchanges the code: the token response.
async fn connect(base: &str, http: &reqwest::Client, scope: &str) -> (u16, Option<String>, Value) {
    let resp = http
        .get(format!("{base}/accounts.google.com/o/oauth2/v2/auth"))
        .query(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("scope", scope),
            ("state", "st-1"),
            ("access_type", "offline"),
            ("prompt", "consent"),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(resp.status().as_u16(), 302, "consent redirects back");
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned();
    let url = reqwest::Url::parse(&location).expect("callback URL");
    let code = url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code");
    token(
        base,
        http,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await
}

async fn token(
    base: &str,
    http: &reqwest::Client,
    form: &[(&str, &str)],
) -> (u16, Option<String>, Value) {
    let mut all = form.to_vec();
    all.push(("client_id", CLIENT_ID));
    all.push(("client_secret", CLIENT_SECRET));
    json_of(
        http.post(format!("{base}/oauth2.googleapis.com/token"))
            .form(&all)
            .send()
            .await
            .expect("token"),
    )
    .await
}

/// `GET oauth2.googleapis.com/tokeninfo?access_token=…`.
async fn tokeninfo(
    base: &str,
    http: &reqwest::Client,
    access: &str,
) -> (u16, Option<String>, Value) {
    let url = format!("{base}/oauth2.googleapis.com/tokeninfo");
    json_of(
        http.get(url)
            .query(&[("access_token", access)])
            .send()
            .await
            .expect("tokeninfo"),
    )
    .await
}

/// `POST oauth2.googleapis.com/revoke` with `token=…`.
async fn revoke(base: &str, http: &reqwest::Client, token: &str) -> (u16, Option<String>, Value) {
    let url = format!("{base}/oauth2.googleapis.com/revoke");
    json_of(
        http.post(url)
            .form(&[("token", token)])
            .send()
            .await
            .expect("revoke"),
    )
    .await
}

fn is_json(ct: &Option<String>) -> bool {
    ct.as_deref()
        .is_some_and(|c| c.starts_with("application/json"))
}

/// Google's token response, per "Exchange authorization code for refresh and access
/// tokens" (developers.google.com/identity/protocols/oauth2/web-server): `access_token`,
/// `expires_in` (seconds, a number), `token_type` `Bearer`, `scope` (space-delimited,
/// case-sensitive strings), `refresh_token` (offline access, first exchange only) and
/// `id_token` (when `openid` was asked for).
fn assert_token_response(v: &Value, first: bool) {
    assert!(
        v["access_token"].as_str().is_some_and(|t| !t.is_empty()),
        "access_token: {v}"
    );
    assert!(
        v["expires_in"].as_u64().is_some_and(|n| n > 0),
        "expires_in is a positive number: {v}"
    );
    assert_eq!(v["token_type"], "Bearer", "token_type");
    let scope = v["scope"].as_str().expect("scope is a string");
    let granted: Vec<&str> = scope.split(' ').collect();
    assert!(
        granted.contains(&GMAIL_SEND) && granted.contains(&CALENDAR_EVENTS),
        "scope lists the grants: {scope}"
    );
    if first {
        assert!(
            v["refresh_token"].as_str().is_some_and(|t| !t.is_empty()),
            "offline access gives a refresh_token"
        );
        assert!(
            v["id_token"]
                .as_str()
                .is_some_and(|t| t.split('.').count() == 3),
            "openid gives a JWT id_token"
        );
    } else {
        // A refresh answers without a new refresh token ("Refreshing an access token").
        assert!(
            v.get("refresh_token").is_none(),
            "a refresh returns no refresh_token: {v}"
        );
    }
}

/// Google's API error, per its error model (AIP-193, "Standard error responses" of the
/// Gmail and Calendar guides): `{"error": {"code": HTTP status, "message", "status":
/// canonical code name, "errors": [{"message","domain","reason"}] (legacy), "details":
/// [{"@type", …}]}}`. The discovery documents describe no error answers, so these are
/// written assertions.
fn assert_google_error(status: u16, v: &Value, canonical: &str) -> Value {
    let e = &v["error"];
    assert_eq!(
        e["code"].as_u64(),
        Some(u64::from(status)),
        "code is the HTTP status: {v}"
    );
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(e["status"], canonical, "{v}");
    for legacy in e["errors"].as_array().into_iter().flatten() {
        for k in ["message", "domain", "reason"] {
            assert!(legacy[k].is_string(), "errors[].{k}: {v}");
        }
    }
    for detail in e["details"].as_array().into_iter().flatten() {
        assert!(
            detail["@type"]
                .as_str()
                .is_some_and(|t| t.starts_with("type.googleapis.com/")),
            "{v}"
        );
    }
    e.clone()
}

/// Google's OAuth error: `{"error": code, "error_description"?: text}` with a 400 for a
/// bad grant (RFC 6749 §5.2, as Google's token endpoint answers).
fn assert_oauth_error(status: u16, v: &Value, code: &str) {
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"], code, "{v}");
    assert!(
        v.get("error_description").is_none_or(Value::is_string),
        "{v}"
    );
}

#[tokio::test]
async fn the_google_stand_in_answers_as_googles_descriptions_say() {
    let sandbox = Sandbox::start(0).await.expect("sandbox");
    let base = sandbox.url();
    let state = sandbox.state();
    state.recorder().start();
    let http = client();

    // ---- OAuth: not in the discovery documents; Google's OAuth docs, as assertions.
    let all = format!("openid email {GMAIL_SEND} {CALENDAR_EVENTS}");
    let (status, ct, first) = connect(&base, &http, &all).await;
    assert_eq!(status, 200, "{first}");
    assert!(is_json(&ct), "token answers JSON");
    assert_token_response(&first, true);
    let refresh = first["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let (status, _, refreshed) = token(
        &base,
        &http,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_token_response(&refreshed, false);
    let access = refreshed["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let (status, _, bad) = token(
        &base,
        &http,
        &[
            ("grant_type", "authorization_code"),
            ("code", "not-a-code"),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_oauth_error(status, &bad, "invalid_grant");

    // tokeninfo ("Validating an access token"): aud/azp the client, sub, scope
    // (space-delimited), exp and expires_in as strings of seconds, email and
    // email_verified "true" with the email scope, access_type.
    let (status, _, info) = tokeninfo(&base, &http, &access).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["aud"], CLIENT_ID);
    assert_eq!(info["azp"], CLIENT_ID);
    assert!(info["sub"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(
        info["scope"]
            .as_str()
            .is_some_and(|s| s.split(' ').any(|x| x == GMAIL_SEND))
    );
    for k in ["exp", "expires_in"] {
        assert!(
            info[k].as_str().is_some_and(|s| s.parse::<u64>().is_ok()),
            "{k} is a string of seconds: {info}"
        );
    }
    assert!(info["email"].as_str().is_some_and(|e| e.contains('@')));
    assert_eq!(info["email_verified"], "true");
    let (status, _, dead) = tokeninfo(&base, &http, "ya29.unknown").await;
    assert_oauth_error(status, &dead, "invalid_token");

    // userinfo (OpenID Connect "Obtaining user profile information"): sub always; email
    // and email_verified (a boolean here, unlike tokeninfo) with the email scope.
    let (status, _, me) = json_of(
        http.get(format!("{base}/openidconnect.googleapis.com/v1/userinfo"))
            .bearer_auth(&access)
            .send()
            .await
            .expect("userinfo"),
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert!(me["sub"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(me["email_verified"], true);
    assert!(me["email"].as_str().is_some_and(|e| e.contains('@')));
    let resp = http
        .get(format!("{base}/openidconnect.googleapis.com/v1/userinfo"))
        .bearer_auth("ya29.unknown")
        .send()
        .await
        .expect("userinfo");
    assert_eq!(resp.status().as_u16(), 401, "a dead token is a 401");
    assert!(
        resp.headers()
            .contains_key(reqwest::header::WWW_AUTHENTICATE),
        "with WWW-Authenticate"
    );

    // ---- Gmail and Calendar: against the discovery documents.
    let raw = "RnJvbTogYUBhY21lLnRlc3QKVG86IGJAYWNtZS50ZXN0ClN1YmplY3Q6IEhpCgpIZWxsbw";
    let event = json!({
        "summary": "Call back",
        "start": {"dateTime": "2026-12-05T10:00:00Z"},
        "end": {"dateTime": "2026-12-05T10:30:00Z"},
        "attendees": [{"email": "b@acme.test"}],
    });
    let gmail = format!("{base}/gmail.googleapis.com/gmail/v1/users/me/messages/send");
    let events = format!("{base}/www.googleapis.com/calendar/v3/calendars/primary/events");
    // A call the stand-in does not serve yet counts as `google.unknown` (or, for a host
    // it does not know, `unknown_host`): its exchange is kept apart.
    let unknown_calls =
        || state.calls("google.unknown") + state.calls(sandbox::state::UNKNOWN_HOST_ROUTE);
    let mut unserved: BTreeSet<usize> = BTreeSet::new();
    let mut note = |before: u64| {
        if unknown_calls() > before {
            unserved.insert(state.recorder().exchanges().len() - 1);
        }
    };
    let before = unknown_calls();
    let sent = http
        .post(&gmail)
        .bearer_auth(&access)
        .json(&json!({"raw": raw}))
        .send()
        .await
        .expect("send");
    let _ = json_of(sent).await;
    note(before);
    let before = unknown_calls();
    let (status, _, created) = json_of(
        http.post(&events)
            .bearer_auth(&access)
            .query(&[("sendUpdates", "all")])
            .json(&event)
            .send()
            .await
            .expect("insert"),
    )
    .await;
    note(before);
    let event_id = created["id"]
        .as_str()
        .filter(|_| status == 200)
        .map(str::to_owned);
    let before = unknown_calls();
    let listed = http
        .get(&events)
        .bearer_auth(&access)
        .query(&[
            ("timeMin", "2026-12-01T00:00:00Z"),
            ("maxResults", "10"),
            ("singleEvents", "true"),
        ])
        .send()
        .await
        .expect("list");
    let _ = json_of(listed).await;
    note(before);
    if let Some(id) = &event_id {
        let one = format!("{events}/{id}");
        let before = unknown_calls();
        let _ = json_of(
            http.get(&one)
                .bearer_auth(&access)
                .send()
                .await
                .expect("get"),
        )
        .await;
        note(before);
        let before = unknown_calls();
        let _ = json_of(
            http.patch(&one)
                .bearer_auth(&access)
                .json(&json!({"summary": "Call back (moved)"}))
                .send()
                .await
                .expect("patch"),
        )
        .await;
        note(before);
        let before = unknown_calls();
        let _ = http
            .delete(&one)
            .bearer_auth(&access)
            .send()
            .await
            .expect("delete");
        note(before);
    }

    // Revocation ("Revoking a token"): 200 when revoked, 400 with an error code else.
    let (status, _, _) = revoke(&base, &http, &refresh).await;
    assert_eq!(status, 200, "revoked");
    let (status, _, again) = revoke(&base, &http, &refresh).await;
    assert_oauth_error(status, &again, "invalid_token");

    let exchanges = state.recorder().stop();
    let specs = contract::Specs::load("google").expect("Google specs");
    // Requests to endpoints not served yet are checked; their 404s are not Google's.
    let mut unknown: Vec<Exchange> = Vec::new();
    let mut answered: Vec<Exchange> = Vec::new();
    for (i, e) in exchanges.into_iter().enumerate() {
        if unserved.contains(&i) {
            unknown.push(e);
        } else {
            answered.push(e);
        }
    }
    let report = contract::check_all(&specs, &answered);
    let requests_only = contract::check_all(&specs, &unknown);
    println!("{report}");
    println!("Exceptions:\n{}", contract::exceptions::table());
    if !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(Exchange::summary).collect();
        println!("not served by the Google stand-in yet (requests checked only): {names:?}");
        println!("their requests: {requests_only}");
    }
    let request_violations: BTreeMap<String, usize> = requests_only
        .violations
        .iter()
        .filter(|(_, v)| v.side == contract::Side::Request)
        .fold(BTreeMap::new(), |mut m, (_, v)| {
            *m.entry(v.to_string()).or_insert(0) += 1;
            m
        });
    assert!(
        request_violations.is_empty(),
        "test-made requests break the spec: {request_violations:?}"
    );
    assert!(
        requests_only.unmatched.is_empty() && report.passed(),
        "{report}\n{requests_only}"
    );
    assert!(
        report.exchanges + requests_only.exchanges >= 3,
        "the Gmail and Calendar calls were recorded"
    );

    // Errors, outside the recording (no discovery document describes them).
    let (_, _, narrow) = connect(&base, &http, GMAIL_SEND).await;
    let narrow = narrow["access_token"].as_str().expect("access").to_owned();
    let resp = http
        .post(&events)
        .bearer_auth(&narrow)
        .json(&event)
        .send()
        .await
        .expect("insert");
    assert!(
        resp.headers()
            .contains_key(reqwest::header::WWW_AUTHENTICATE),
        "403 names the scopes"
    );
    let (status, _, denied) = json_of(resp).await;
    let e = assert_google_error(status, &denied, "PERMISSION_DENIED");
    assert_eq!(status, 403);
    assert_eq!(
        e["details"][0]["reason"], "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
        "{denied}"
    );
    let (status, _, unauthenticated) = json_of(
        http.post(&gmail)
            .bearer_auth("ya29.unknown")
            .json(&json!({"raw": raw}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 401);
    assert_google_error(status, &unauthenticated, "UNAUTHENTICATED");
    let (status, _, invalid) = json_of(
        http.post(&events)
            .bearer_auth(&fresh_access(&base, &http, &all).await)
            .json(&json!({"summary": "No end", "start": {"dateTime": "2026-12-05T10:00:00Z"}}))
            .send()
            .await
            .expect("insert"),
    )
    .await;
    assert_eq!(status, 400);
    assert_google_error(status, &invalid, "INVALID_ARGUMENT");
    sandbox.shutdown().await;
}

/// A fresh access token with every scope (the first grant was revoked above).
async fn fresh_access(base: &str, http: &reqwest::Client, scope: &str) -> String {
    let (_, _, v) = connect(base, http, scope).await;
    v["access_token"].as_str().expect("access").to_owned()
}
