//! The Custom API action: writes with Idempotency-Key, reads of what was written.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::json;

use crate::harness::Harness;

const API: &str = "custom.example/api";

fn cu(h: &Harness, method: Method, path: &str) -> RequestBuilder {
    h.request(method, &format!("{API}{path}"))
        .bearer_auth("custom-sandbox-token-0001")
}

#[tokio::test]
async fn idempotency_keys_replay_refuse_reuse_and_malformed_keys() {
    let h = Harness::start().await;
    let body = json!({"event": "evt_1", "summary": "Caller asked for a callback"});
    let anonymous = h
        .send(h.request(Method::POST, &format!("{API}/jobs")).json(&body))
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let first = h
        .send(
            cu(&h, Method::POST, "/jobs")
                .header("idempotency-key", "\"evt_1:int_c\"")
                .json(&body),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let id = first.body["id"].as_str().expect("id").to_owned();
    let again = h
        .send(
            cu(&h, Method::POST, "/jobs")
                .header("idempotency-key", "\"evt_1:int_c\"")
                .json(&body),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body["id"], id.as_str());
    let reused = h
        .send(
            cu(&h, Method::POST, "/jobs")
                .header("idempotency-key", "\"evt_1:int_c\"")
                .json(&json!({"other": 1})),
        )
        .await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let malformed = h
        .send(
            cu(&h, Method::POST, "/jobs")
                .header("idempotency-key", "\"open")
                .json(&body),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.records("custom").await.len(), 1, "one effect for one key");

    let read = h.send(cu(&h, Method::GET, &format!("/jobs/{id}"))).await;
    assert_eq!(read.body["summary"], "Caller asked for a callback");
    let listed = h.send(cu(&h, Method::GET, "/jobs")).await;
    assert_eq!(listed.body["data"][0]["id"], id.as_str());
    let patched = h
        .send(cu(&h, Method::PATCH, &format!("/jobs/{id}")).json(&json!({"status": "done"})))
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.body["summary"], "Caller asked for a callback");
    let missing = h
        .send(cu(&h, Method::PUT, "/jobs/cus_999").json(&json!({})))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let me = h.send(cu(&h, Method::GET, "/me")).await;
    assert_eq!(
        me.status,
        StatusCode::OK,
        "the identity route still answers"
    );

    h.fault(json!({"provider": "custom", "kind": "status", "status": 502}))
        .await;
    let failed = h.send(cu(&h, Method::POST, "/jobs").json(&body)).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    h.fault(json!({"provider": "custom", "kind": "rate_limit", "retry_after_secs": 8}))
        .await;
    let throttled = h.send(cu(&h, Method::POST, "/jobs").json(&body)).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), Some("8"));

    h.sandbox.state().clear_action_faults(None);
    let default_request = json!({"type": "conversation_ended", "event_id": "evt_2",
        "occurred_at": "2026-12-05T03:12:44Z", "data": {}});
    let root = h
        .send(
            cu(&h, Method::POST, "")
                .header("idempotency-key", "\"evt_2:int_c\"")
                .json(&default_request),
        )
        .await;
    assert_eq!(root.status, StatusCode::CREATED, "{}", root.body);
    assert!(
        root.body["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("cus_"))
    );
}
