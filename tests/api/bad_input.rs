use scenarios::{Role, TestApp, zendesk};
use serde_json::json;

/// A secret sent inside bad input, which no error message may repeat.
const SENT_SECRET: &str = "leaky-secret-value-0001";

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let huge = "x".repeat(300 * 1024);
    let long_label = "l".repeat(101);
    let long_token = "t".repeat(300);
    let raw_cases: Vec<(&str, &str, String, &str, u16, &str)> = vec![
        (
            "POST",
            "/v1/connections",
            "{not json".into(),
            "application/json",
            400,
            "invalid_body",
        ),
        (
            "POST",
            "/v1/connections",
            "".into(),
            "application/json",
            400,
            "empty_body",
        ),
        (
            "POST",
            "/v1/connections",
            zendesk(SENT_SECRET).to_string(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/v1/connections",
            format!("{{\"provider\":\"{huge}\"}}"),
            "application/json",
            413,
            "payload_too_large",
        ),
    ];
    for (method, path, body, ct, status, code) in raw_cases {
        let (got, resp) = app.send_raw(method, path, &admin, body, ct).await;
        assert_eq!(got, status, "{path} ({code}): {resp}");
        assert_eq!(resp["error"]["code"], code, "{resp}");
    }
    let json_cases = vec![
        (
            "POST",
            "/v1/connections",
            json!({"provider": "nope", "credentials": {}}),
            400,
            "invalid_fields",
        ),
        (
            "POST",
            "/v1/connections",
            json!({"provider": "zendesk"}),
            400,
            "invalid_body",
        ),
        (
            "POST",
            "/v1/connections",
            json!({"provider": "zendesk", "credentials": {}, "extra": 1}),
            400,
            "invalid_fields",
        ),
        (
            "POST",
            "/v1/connections",
            json!({"provider": "zendesk", "credentials": {"subdomain": "acme", "email": "a@acme.test", "api_token": 5}}),
            400,
            "invalid_body",
        ),
        (
            "POST",
            "/v1/connections",
            json!({"provider": 7, "credentials": {"api_token": SENT_SECRET}}),
            400,
            "invalid_body",
        ),
        (
            "POST",
            "/v1/connections",
            json!({"provider": "zendesk", "label": long_label, "credentials": {"subdomain": "acme", "email": "a@acme.test", "api_token": SENT_SECRET}}),
            400,
            "invalid_fields",
        ),
        (
            "POST",
            "/v1/connections",
            json!({"provider": "zendesk", "credentials": {"subdomain": "acme", "email": "a@acme.test", "api_token": long_token}}),
            400,
            "invalid_fields",
        ),
        (
            "POST",
            "/v1/connections",
            json!({"provider": "zendesk", "credentials": {"subdomain": "acme", "email": "a@acme.test", "api_token": SENT_SECRET, "bogus": "1"}}),
            400,
            "invalid_fields",
        ),
        (
            "POST",
            "/v1/connections",
            json!({"provider": "zendesk", "credentials": {"subdomain": "evil.com/x", "email": "a@acme.test", "api_token": SENT_SECRET}}),
            400,
            "invalid_fields",
        ),
        (
            "POST",
            "/v1/connections",
            json!({"provider": "hubspot", "auth_method": "oauth2", "credentials": {}}),
            400,
            "oauth_required",
        ),
        (
            "POST",
            "/v1/connections",
            json!({"provider": "custom_api", "auth_method": "bearer", "credentials": {"base_url": "http://169.254.169.254/latest", "token": SENT_SECRET}}),
            400,
            "invalid_fields",
        ),
        (
            "POST",
            "/v1/connections",
            json!({"provider": "custom_api", "auth_method": "bearer", "credentials": {"base_url": "https://10.0.0.8/api", "token": SENT_SECRET}}),
            400,
            "invalid_fields",
        ),
        (
            "POST",
            "/v1/connections",
            json!({"provider": "custom_api", "auth_method": "header", "credentials": {"base_url": "https://api.example.com", "header_name": "Host", "api_key": SENT_SECRET}}),
            400,
            "invalid_fields",
        ),
        (
            "POST",
            "/v1/connections/test",
            json!({"provider": "zendesk", "credentials": {"api_token": SENT_SECRET}}),
            400,
            "invalid_fields",
        ),
        (
            "PUT",
            "/v1/providers/hubspot/app-credentials",
            json!({"client_secret": SENT_SECRET}),
            400,
            "invalid_body",
        ),
        (
            "PUT",
            "/v1/providers/hubspot/app-credentials",
            json!({"client_id": "c"}),
            400,
            "invalid_fields",
        ),
        (
            "PUT",
            "/v1/providers/hubspot/app-credentials",
            json!({"client_id": "c", "client_secret": SENT_SECRET, "redirect_uri": "http://10.0.0.1/cb"}),
            400,
            "invalid_fields",
        ),
        (
            "PUT",
            "/v1/providers/hubspot/app-credentials",
            json!({"client_id": "c", "client_secret": SENT_SECRET, "scopes": ["a b"]}),
            400,
            "invalid_fields",
        ),
        (
            "PUT",
            "/v1/providers/hubspot/app-credentials",
            json!({"client_id": "c", "client_secret": SENT_SECRET, "shoe_size": 9}),
            400,
            "invalid_fields",
        ),
        (
            "PUT",
            "/v1/providers/nope/app-credentials",
            json!({"client_id": "c", "client_secret": SENT_SECRET}),
            404,
            "not_found",
        ),
        (
            "PATCH",
            "/v1/connections/con_01jd8x3k5q7m9v2b4n6c8e0g2h",
            json!({}),
            400,
            "empty_update",
        ),
        (
            "PATCH",
            "/v1/connections/con_01jd8x3k5q7m9v2b4n6c8e0g2h",
            json!({"label": "ok"}),
            404,
            "not_found",
        ),
    ];
    for (method, path, body, status, code) in json_cases {
        let (got, resp) = app.send(method, path, &admin, Some(body.clone())).await;
        assert_eq!(got, status, "{method} {path} {body}: {resp}");
        assert_eq!(resp["error"]["code"], code, "{body}: {resp}");
        assert!(
            resp["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(!resp.to_string().contains(SENT_SECRET), "{resp}");
    }
    for (path, status, code) in [
        ("/v1/connections/con_123", 400, "invalid_id"),
        ("/v1/connections/..%2F..%2Fetc", 400, "invalid_id"),
        ("/v1/connections?status=bogus", 400, "invalid_status"),
        ("/v1/connections?provider=nope", 400, "unknown_provider"),
        ("/v1/connections?sort=desc", 400, "unknown_query_parameter"),
        (
            "/v1/connections?status=connected&status=error",
            400,
            "repeated_query_parameter",
        ),
    ] {
        let (got, resp) = app.get(path, &admin).await;
        assert_eq!(got, status, "{path}: {resp}");
        assert_eq!(resp["error"]["code"], code, "{path}: {resp}");
    }
    assert_eq!(app.config_items(&t).await, 0, "bad input stored something");
    app.assert_secret_absent(SENT_SECRET, &t).await;
}
