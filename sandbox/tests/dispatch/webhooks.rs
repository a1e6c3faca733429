//! The Standard Webhooks receiver.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::Harness;

fn secret(byte: u8) -> String {
    format!("whsec_{}", STANDARD.encode([byte; 32]))
}

/// A signature computed here, independently of the sandbox's own.
fn signature(secret: &str, id: &str, ts: &str, body: &str) -> String {
    let key = STANDARD.decode(&secret["whsec_".len()..]).expect("base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string()
}

async fn register(h: &Harness, secrets: &[String]) -> Value {
    let answer = h.admin_post("webhooks", json!({"secrets": secrets})).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    answer.body
}

async fn deliver(
    h: &Harness,
    path: &str,
    id: &str,
    ts: &str,
    sig: &str,
    body: &str,
) -> (StatusCode, Value) {
    let answer = h
        .send(
            h.request(Method::POST, path.trim_start_matches('/'))
                .header("webhook-id", id)
                .header("webhook-timestamp", ts)
                .header("webhook-signature", sig)
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
        .await;
    (answer.status, answer.body)
}

#[tokio::test]
async fn valid_deliveries_get_204_and_duplicates_are_counted() {
    let h = Harness::start().await;
    let s = secret(1);
    let receiver = register(&h, std::slice::from_ref(&s)).await;
    let id = receiver["id"].as_str().expect("id");
    assert_eq!(
        receiver["url"],
        format!("https://webhooks.sandbox.test/r/{id}")
    );
    let path = receiver["sandbox_path"].as_str().expect("path").to_owned();
    let body = r#"{"type":"conversation.ended","timestamp":"2026-12-05T03:12:44Z","data":{}}"#;
    let ts = now();
    let sig = signature(&s, "msg_1", &ts, body);
    let (first, _) = deliver(&h, &path, "msg_1", &ts, &sig, body).await;
    assert_eq!(first, StatusCode::NO_CONTENT);
    let (again, _) = deliver(&h, &path, "msg_1", &ts, &sig, body).await;
    assert_eq!(again, StatusCode::NO_CONTENT);
    let view = h.admin_get(&format!("webhooks/{id}")).await;
    let deliveries = view["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[1]["duplicate"], true);
    assert_eq!(deliveries[1]["attempt"], 2);
    assert_eq!(deliveries[0]["body"]["type"], "conversation.ended");
    assert_eq!(view["unique_valid"], 1);
    assert!(!view.to_string().contains(&s), "secrets are never shown");
}

#[tokio::test]
async fn bad_signatures_stale_timestamps_and_missing_headers_get_401_with_a_reason() {
    let h = Harness::start().await;
    let s = secret(2);
    let receiver = register(&h, std::slice::from_ref(&s)).await;
    let path = receiver["sandbox_path"].as_str().expect("path").to_owned();
    let body = r#"{"a":1}"#;
    let ts = now();
    let (status, reason) = deliver(
        &h,
        &path,
        "msg_2",
        &ts,
        &signature(&secret(3), "msg_2", &ts, body),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(reason["error"], "no matching signature");
    let old = (ts.parse::<u64>().expect("ts") - 301).to_string();
    let (status, reason) = deliver(
        &h,
        &path,
        "msg_2",
        &old,
        &signature(&s, "msg_2", &old, body),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(reason["error"], "webhook-timestamp is too old");
    let tampered = r#"{"a":2}"#;
    let (status, _) = deliver(
        &h,
        &path,
        "msg_2",
        &ts,
        &signature(&s, "msg_2", &ts, body),
        tampered,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let missing = h
        .send(
            h.request(Method::POST, path.trim_start_matches('/'))
                .body("{}"),
        )
        .await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.body["error"], "missing webhook-id header");
    let view = h
        .admin_get(&format!(
            "webhooks/{}",
            receiver["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(view["deliveries"].as_array().map(Vec::len), Some(4));
    assert_eq!(view["unique_valid"], 0);
}

#[tokio::test]
async fn rotation_accepts_either_secret_and_faults_apply() {
    let h = Harness::start().await;
    let (old, new) = (secret(4), secret(5));
    let receiver = register(&h, std::slice::from_ref(&old)).await;
    let id = receiver["id"].as_str().expect("id").to_owned();
    let path = receiver["sandbox_path"].as_str().expect("path").to_owned();
    let rotated = h
        .admin_post(
            &format!("webhooks/{id}/secrets"),
            json!({"secrets": [new, old]}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let body = "{}";
    let ts = now();
    let both = format!(
        "{} {}",
        signature(&new, "msg_3", &ts, body),
        signature(&old, "msg_3", &ts, body)
    );
    assert_eq!(
        deliver(&h, &path, "msg_3", &ts, &both, body).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        deliver(
            &h,
            &path,
            "msg_4",
            &ts,
            &signature(&new, "msg_4", &ts, body),
            body
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );

    let knob = h
        .admin_post(
            &format!("webhooks/{id}/faults"),
            json!({"kind": "rate_limit", "retry_after_secs": 9}),
        )
        .await;
    assert_eq!(knob.status, StatusCode::OK);
    let throttled = h
        .send(
            h.request(Method::POST, path.trim_start_matches('/'))
                .header("webhook-id", "msg_5")
                .header("webhook-timestamp", &ts)
                .header("webhook-signature", signature(&new, "msg_5", &ts, body))
                .body(body),
        )
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), Some("9"));
    let bad = h
        .admin_post(
            &format!("webhooks/{id}/secrets"),
            json!({"secrets": ["nope"]}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        !bad.body.to_string().contains("nope"),
        "the refused value is not echoed"
    );
}
