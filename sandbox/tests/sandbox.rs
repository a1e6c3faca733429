//! End-to-end tests: a sandbox on a free port, driven over HTTP with reqwest.

use std::time::{Duration, Instant};

use reqwest::{Client, RequestBuilder, Response, StatusCode};
use sandbox::providers::{chatwoot, custom, freshdesk, hubspot, pipedrive, zendesk};
use sandbox::{Account, Fault, Provider, ProviderAccount, Sandbox};
use serde_json::{Value, json};

struct Harness {
    sandbox: Sandbox,
    client: Client,
}

impl Harness {
    async fn start() -> Self {
        let sandbox = Sandbox::start(0).await.expect("sandbox starts");
        // Never route loopback through a proxy from the environment.
        let client = Client::builder().no_proxy().build().expect("client");
        Self { sandbox, client }
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(format!("{}{path}", self.sandbox.url()))
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(format!("{}{path}", self.sandbox.url()))
    }
}

async fn json_of(response: Response) -> Value {
    response.json().await.expect("JSON body")
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

// ---------------------------------------------------------------- Zendesk

const ZD_ME: &str = "/acme.zendesk.com/api/v2/users/me.json";

#[tokio::test]
async fn zendesk_good_credentials_return_the_user() {
    let h = Harness::start().await;
    let response = h
        .get(ZD_ME)
        .basic_auth("admin@acme.test/token", Some("zd-sandbox-token-0001"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["user"]["id"], 123);
    assert_eq!(body["user"]["email"], "admin@acme.test");
    assert_eq!(body["user"]["role"], "admin");
    assert_eq!(
        body["user"]["url"],
        "https://acme.zendesk.com/api/v2/users/123.json"
    );
    assert_eq!(h.sandbox.state().calls(zendesk::USERS_ME), 1);
}

#[tokio::test]
async fn zendesk_bad_or_missing_credentials_are_401() {
    let h = Harness::start().await;
    for request in [
        h.get(ZD_ME)
            .basic_auth("admin@acme.test/token", Some("wrong")),
        h.get(ZD_ME)
            .basic_auth("admin@acme.test", Some("zd-sandbox-token-0001")),
        h.get(ZD_ME).header("Authorization", "Basic %%%"),
        h.get(ZD_ME),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(header(&response, "www-authenticate").is_some());
        assert_eq!(
            json_of(response).await,
            json!({"error": "Couldn't authenticate you"})
        );
    }
}

#[tokio::test]
async fn zendesk_unknown_subdomain_and_path_are_404() {
    let h = Harness::start().await;
    let response = h
        .get("/nobody.zendesk.com/api/v2/users/me.json")
        .basic_auth("admin@acme.test/token", Some("zd-sandbox-token-0001"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = json_of(response).await;
    assert_eq!(body["error"]["title"], "No help desk at nobody.zendesk.com");

    let response = h
        .get("/acme.zendesk.com/api/v2/nothing.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json_of(response).await,
        json!({"error": "InvalidEndpoint", "description": "Not found"})
    );
    assert_eq!(h.sandbox.state().calls(zendesk::UNKNOWN), 1);
}

#[tokio::test]
async fn zendesk_forced_503_has_retry_after_and_zendesk_body() {
    let h = Harness::start().await;
    h.sandbox
        .state()
        .add_fault(Fault {
            retry_after_secs: 7,
            ..Fault::new(503, 1).for_provider(Provider::Zendesk)
        })
        .unwrap();
    let response = h
        .get(ZD_ME)
        .basic_auth("admin@acme.test/token", Some("zd-sandbox-token-0001"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "retry-after"), Some("7"));
    assert_eq!(
        json_of(response).await,
        json!({"error": "ServiceUnavailable", "description": "Service Unavailable"})
    );
    // The fault is used up: the next request succeeds.
    let response = h
        .get(ZD_ME)
        .basic_auth("admin@acme.test/token", Some("zd-sandbox-token-0001"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

// ---------------------------------------------------------------- Freshdesk

const FD_ME: &str = "/acme.freshdesk.com/api/v2/agents/me";

#[tokio::test]
async fn freshdesk_api_key_returns_the_agent() {
    let h = Harness::start().await;
    let response = h
        .get(FD_ME)
        .basic_auth("fd-sandbox-key-0001", Some("X"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["type"], "support_agent");
    assert_eq!(body["contact"]["email"], "agent@acme.test");
    assert!(body["id"].is_u64());
    assert_eq!(h.sandbox.state().calls(freshdesk::AGENTS_ME), 1);
}

#[tokio::test]
async fn freshdesk_bad_key_is_401() {
    let h = Harness::start().await;
    for request in [h.get(FD_ME).basic_auth("nope", Some("X")), h.get(FD_ME)] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            json_of(response).await,
            json!({
                "code": "invalid_credentials",
                "message": "You have to be logged in to perform this action."
            })
        );
    }
}

#[tokio::test]
async fn freshdesk_forced_429_is_freshdesk_shaped() {
    let h = Harness::start().await;
    h.sandbox
        .state()
        .force_status(429, 1, Some(Provider::Freshdesk))
        .unwrap();
    let response = h
        .get(FD_ME)
        .basic_auth("fd-sandbox-key-0001", Some("X"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after"), Some("1"));
    let body = json_of(response).await;
    assert!(body["code"].is_string() && body["message"].is_string());
}

// ---------------------------------------------------------------- Pipedrive

#[tokio::test]
async fn pipedrive_token_in_query_or_header() {
    let h = Harness::start().await;
    for request in [
        h.get("/api.pipedrive.com/v1/users/me?api_token=pd-sandbox-token-0001"),
        h.get("/api.pipedrive.com/v1/users/me")
            .header("x-api-token", "pd-sandbox-token-0001"),
        h.get("/acme.pipedrive.com/api/v1/users/me?api_token=pd-sandbox-token-0001"),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = json_of(response).await;
        assert_eq!(body["success"], true);
        assert_eq!(body["data"]["company_domain"], "acme");
        assert_eq!(body["data"]["email"], "sales@acme.test");
        assert!(body["data"]["company_id"].is_u64());
    }
    assert_eq!(h.sandbox.state().calls(pipedrive::USERS_ME), 3);
}

#[tokio::test]
async fn pipedrive_bad_token_is_401() {
    let h = Harness::start().await;
    for path in [
        "/api.pipedrive.com/v1/users/me?api_token=nope",
        "/api.pipedrive.com/v1/users/me",
        // Right token, other company's domain.
        "/globex.pipedrive.com/api/v1/users/me?api_token=pd-sandbox-token-0001",
    ] {
        let response = h.get(path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            json_of(response).await,
            json!({
                "success": false,
                "error": "unauthorized access",
                "errorCode": 401,
                "error_info": "Please check developers.pipedrive.com for more information about Pipedrive API."
            })
        );
    }
}

#[tokio::test]
async fn pipedrive_forced_500_is_pipedrive_shaped() {
    let h = Harness::start().await;
    h.sandbox
        .state()
        .force_status(500, 1, Some(Provider::Pipedrive))
        .unwrap();
    let response = h
        .get("/api.pipedrive.com/v1/users/me?api_token=pd-sandbox-token-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = json_of(response).await;
    assert_eq!(body["success"], false);
    assert_eq!(body["errorCode"], 500);
}

// ---------------------------------------------------------------- HubSpot

const HS_INFO: &str = "/api.hubapi.com/account-info/v3/details";
const HS_TOKEN: &str = "pat-na1-sandbox-0001";

const HS_HEADERS: [&str; 7] = [
    "x-hubspot-ratelimit-daily",
    "x-hubspot-ratelimit-daily-remaining",
    "x-hubspot-ratelimit-interval-milliseconds",
    "x-hubspot-ratelimit-max",
    "x-hubspot-ratelimit-remaining",
    "x-hubspot-ratelimit-secondly",
    "x-hubspot-ratelimit-secondly-remaining",
];

fn assert_hubspot_headers(response: &Response) {
    for name in HS_HEADERS {
        assert!(header(response, name).is_some(), "missing {name}");
    }
    assert_eq!(
        header(response, "x-hubspot-ratelimit-interval-milliseconds"),
        Some("10000")
    );
    assert_eq!(header(response, "x-hubspot-ratelimit-max"), Some("110"));
}

fn is_uuid_like(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.split('-').map(str::len).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
            && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
    })
}

#[tokio::test]
async fn hubspot_token_returns_account_info_with_rate_headers() {
    let h = Harness::start().await;
    let response = h.get(HS_INFO).bearer_auth(HS_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_hubspot_headers(&response);
    assert_eq!(
        header(&response, "x-hubspot-ratelimit-remaining"),
        Some("109")
    );
    assert_eq!(
        header(&response, "x-hubspot-ratelimit-daily"),
        Some("250000")
    );
    assert_eq!(
        header(&response, "x-hubspot-ratelimit-daily-remaining"),
        Some("249999")
    );
    let body = json_of(response).await;
    assert_eq!(body["portalId"], 62515);
    assert_eq!(body["accountType"], "STANDARD");
    assert_eq!(body["timeZone"], "US/Eastern");
    assert_eq!(body["companyCurrency"], "USD");
    assert_eq!(body["uiDomain"], "app.hubspot.com");
    assert_eq!(body["dataHostingLocation"], "na1");
}

#[tokio::test]
async fn hubspot_bad_token_is_401_with_correlation_id() {
    let h = Harness::start().await;
    for request in [h.get(HS_INFO).bearer_auth("pat-na1-wrong"), h.get(HS_INFO)] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_hubspot_headers(&response);
        let body = json_of(response).await;
        assert_eq!(body["status"], "error");
        assert_eq!(body["category"], "INVALID_AUTHENTICATION");
        assert!(body["message"].as_str().unwrap().starts_with(
            "Authentication credentials not found. This API supports OAuth 2.0 authentication"
        ));
        assert!(is_uuid_like(&body["correlationId"]), "{body}");
    }
}

#[tokio::test]
async fn hubspot_111th_request_in_ten_seconds_is_429() {
    let h = Harness::start().await;
    for i in 0..110 {
        let response = h.get(HS_INFO).bearer_auth(HS_TOKEN).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "request {}", i + 1);
    }
    let response = h.get(HS_INFO).bearer_auth(HS_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_hubspot_headers(&response);
    assert_eq!(
        header(&response, "x-hubspot-ratelimit-remaining"),
        Some("0")
    );
    let body = json_of(response).await;
    assert_eq!(body["status"], "error");
    assert_eq!(
        body["message"],
        "You have reached your ten_secondly_rolling limit."
    );
    assert_eq!(body["errorType"], "RATE_LIMIT");
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert!(is_uuid_like(&body["correlationId"]));
    assert_eq!(h.sandbox.state().calls(hubspot::ACCOUNT_INFO), 111);

    // Another account has its own window.
    h.sandbox
        .state()
        .add_account(Account {
            id: 99,
            name: "Other".into(),
            email: "o@other.test".into(),
            provider: ProviderAccount::Hubspot {
                access_token: "pat-na1-other".into(),
                account_type: "STANDARD".into(),
                time_zone: "US/Eastern".into(),
                ten_secondly_limit: 110,
                daily_limit: 1000,
                scopes: sandbox::oauth::hubspot_crm_scopes(),
            },
        })
        .unwrap();
    let response = h
        .get(HS_INFO)
        .bearer_auth("pat-na1-other")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await["portalId"], 99);
}

#[tokio::test]
async fn hubspot_daily_limit_is_enforced() {
    let h = Harness::start().await;
    let account: Account = serde_json::from_value(json!({
        "provider": "hubspot", "id": 7, "access_token": "pat-small", "daily_limit": 2
    }))
    .unwrap();
    h.sandbox.state().add_account(account).unwrap();
    for _ in 0..2 {
        let response = h
            .get(HS_INFO)
            .bearer_auth("pat-small")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = h
        .get(HS_INFO)
        .bearer_auth("pat-small")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&response, "x-hubspot-ratelimit-daily-remaining"),
        Some("0")
    );
    let body = json_of(response).await;
    assert_eq!(body["policyName"], "DAILY");
}

#[tokio::test]
async fn hubspot_forced_502_is_hubspot_shaped() {
    let h = Harness::start().await;
    h.sandbox
        .state()
        .force_status(502, 1, Some(Provider::Hubspot))
        .unwrap();
    let response = h.get(HS_INFO).bearer_auth(HS_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_hubspot_headers(&response);
    let body = json_of(response).await;
    assert_eq!(body["status"], "error");
    assert!(body["message"].is_string());
    assert!(body["category"].is_string());
    assert!(is_uuid_like(&body["correlationId"]));
}

// ---------------------------------------------------------------- Chatwoot

#[tokio::test]
async fn chatwoot_token_returns_the_profile() {
    let h = Harness::start().await;
    let response = h
        .get("/app.chatwoot.com/api/v1/profile")
        .header("api_access_token", "cw-sandbox-token-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["account_id"], 1);
    assert_eq!(body["role"], "administrator");
    assert_eq!(body["email"], "support@acme.test");
    assert_eq!(body["accounts"][0]["id"], 1);
    assert_eq!(body["accounts"][0]["name"], "Acme");
    assert_eq!(body["accounts"][0]["role"], "administrator");
    assert_eq!(h.sandbox.state().calls(chatwoot::PROFILE), 1);
}

#[tokio::test]
async fn chatwoot_bad_token_is_401() {
    let h = Harness::start().await;
    for request in [
        h.get("/app.chatwoot.com/api/v1/profile")
            .header("api_access_token", "nope"),
        h.get("/app.chatwoot.com/api/v1/profile"),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            json_of(response).await,
            json!({"errors": ["You need to sign in or sign up before continuing."]})
        );
    }
}

#[tokio::test]
async fn chatwoot_self_hosted_host_is_served_once_registered() {
    let h = Harness::start().await;
    let path = "/chat.globex.test/api/v1/profile";
    let response = h.get(path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(h.sandbox.state().calls("unknown_host"), 1);

    let response = h
        .post("/_sandbox/accounts")
        .json(&json!({
            "provider": "chatwoot", "host": "chat.globex.test", "api_access_token": "cw-globex",
            "name": "Globex Support", "email": "support@globex.test", "account_id": 3, "account_name": "Globex"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = h
        .get(path)
        .header("api_access_token", "cw-globex")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["account_id"], 3);
    // The cloud token is not valid on another installation.
    let response = h
        .get(path)
        .header("api_access_token", "cw-sandbox-token-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn chatwoot_forced_429_is_rack_attack_text() {
    let h = Harness::start().await;
    h.sandbox
        .state()
        .force_status(429, 1, Some(Provider::Chatwoot))
        .unwrap();
    let response = h
        .get("/app.chatwoot.com/api/v1/profile")
        .header("api_access_token", "cw-sandbox-token-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.text().await.unwrap(), "Retry later\n");
}

// ---------------------------------------------------------------- Custom API

fn custom_identity() -> Value {
    json!({"id": "custom-1", "name": "Custom Sandbox", "email": "ops@custom.example"})
}

#[tokio::test]
async fn custom_api_accepts_each_credential_kind() {
    let h = Harness::start().await;
    for request in [
        h.get("/custom.example/api/me")
            .bearer_auth("custom-sandbox-token-0001"),
        h.get("/custom.example/api/me")
            .header("X-Api-Key", "custom-sandbox-key-0001"),
        h.get("/custom.example/api/me")
            .basic_auth("custom-user", Some("custom-pass-0001")),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(json_of(response).await, custom_identity());
    }
    let response = h
        .get("/custom.example/api/anything/else?x=1")
        .bearer_auth("custom-sandbox-token-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await, custom_identity());
    let state = h.sandbox.state();
    assert_eq!(state.calls(custom::ME), 3);
    assert_eq!(state.calls(custom::GET), 1);
}

#[tokio::test]
async fn custom_api_bad_credentials_are_401() {
    let h = Harness::start().await;
    for request in [
        h.get("/custom.example/api/me").bearer_auth("nope"),
        h.get("/custom.example/api/me").header("X-Api-Key", "nope"),
        h.get("/custom.example/api/me")
            .basic_auth("custom-user", Some("nope")),
        h.get("/custom.example/api/me"),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(json_of(response).await, json!({"error": "unauthorized"}));
    }
    let response = h.get("/custom.example/other").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------- Knobs

#[tokio::test]
async fn counters_count_per_route_and_in_total() {
    let h = Harness::start().await;
    h.get(ZD_ME).send().await.unwrap();
    h.get(ZD_ME).send().await.unwrap();
    h.get(HS_INFO).send().await.unwrap();
    h.get("/_sandbox/health").send().await.unwrap();
    let state = h.sandbox.state();
    assert_eq!(state.calls(zendesk::USERS_ME), 2);
    assert_eq!(state.calls(hubspot::ACCOUNT_INFO), 1);
    assert_eq!(state.total_calls(), 3, "control routes are not counted");

    let calls = json_of(h.get("/_sandbox/calls").send().await.unwrap()).await;
    assert_eq!(calls["total"], 3);
    assert_eq!(calls["routes"]["zendesk.users_me"], 2);

    let response = h.post("/_sandbox/reset").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(state.total_calls(), 0);
}

#[tokio::test]
async fn faults_apply_to_their_provider_only_and_run_out() {
    let h = Harness::start().await;
    let response = h
        .post("/_sandbox/faults")
        .json(&json!({"status": 503, "count": 2, "provider": "zendesk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await["pending"][0]["count"], 2);

    let response = h
        .get("/api.pipedrive.com/v1/users/me?api_token=pd-sandbox-token-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for _ in 0..2 {
        let response = h.get(ZD_ME).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let response = h.get(ZD_ME).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_provider_less_fault_hits_whichever_provider_comes_next() {
    let h = Harness::start().await;
    h.sandbox.state().force_status(500, 1, None).unwrap();
    let response = h
        .get("/app.chatwoot.com/api/v1/profile")
        .header("api_access_token", "cw-sandbox-token-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        json_of(response).await,
        json!({"status": 500, "error": "Internal Server Error"})
    );
}

#[tokio::test]
async fn latency_delays_answers() {
    let h = Harness::start().await;
    let response = h
        .post("/_sandbox/faults")
        .json(&json!({"latency_ms": 300, "provider": "custom"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let started = Instant::now();
    h.get("/custom.example/api/me").send().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));

    let started = Instant::now();
    h.get(ZD_ME).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));

    let response = h
        .client
        .delete(format!("{}/_sandbox/faults", h.sandbox.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await["provider_latency_ms"], json!({}));
}

#[tokio::test]
async fn control_routes_reject_bad_bodies_with_json_errors() {
    let h = Harness::start().await;
    for (path, body) in [
        ("/_sandbox/faults", "not json"),
        ("/_sandbox/faults", r#"{"status": 200}"#),
        ("/_sandbox/faults", r#"{}"#),
        (
            "/_sandbox/faults",
            r#"{"status": 503, "provider": "myspace"}"#,
        ),
        ("/_sandbox/accounts", r#"{"provider": "zendesk"}"#),
        (
            "/_sandbox/accounts",
            r#"{"provider": "zendesk", "subdomain": "a b", "api_token": "t"}"#,
        ),
    ] {
        let response = h
            .post(path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error = json_of(response).await;
        assert!(error["error"]["code"].is_string(), "{error}");
        assert!(error["error"]["message"].is_string(), "{error}");
    }
}

#[tokio::test]
async fn accounts_registered_over_http_authenticate_and_list_without_secrets() {
    let h = Harness::start().await;
    let response = h
        .post("/_sandbox/accounts")
        .json(&json!({
            "provider": "zendesk", "subdomain": "globex",
            "email": "boss@globex.test", "api_token": "zd-globex"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created = json_of(response).await;
    assert_eq!(created["account"]["address"], "globex.zendesk.com");

    let response = h
        .get("/globex.zendesk.com/api/v2/users/me.json")
        .basic_auth("boss@globex.test/token", Some("zd-globex"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_of(response).await["user"]["id"],
        created["account"]["id"]
    );

    let listing = h
        .get("/_sandbox/accounts")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains("globex.zendesk.com"));
    assert!(!listing.contains("zd-globex"), "secrets never listed");
    assert!(!listing.contains("zd-sandbox-token-0001"));
}

#[tokio::test]
async fn unknown_hosts_get_a_json_404() {
    let h = Harness::start().await;
    for path in ["/", "/example.org/anything"] {
        let response = h.get(path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(json_of(response).await["error"]["code"], "unknown_host");
    }
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let h = Harness::start().await;
    let url = h.sandbox.url();
    let response = h.get("/_sandbox/health").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    h.sandbox.shutdown().await;
    let fresh = Client::builder().no_proxy().build().unwrap();
    assert!(
        fresh
            .get(format!("{url}/_sandbox/health"))
            .send()
            .await
            .is_err()
    );
}
