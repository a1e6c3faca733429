//! Zendesk: tickets with Idempotency-Key, comments, users create_or_update.

use reqwest::{Method, RequestBuilder, StatusCode};
use sandbox::OAuthProvider;
use serde_json::json;

use crate::harness::Harness;

const API: &str = "acme.zendesk.com/api/v2";

fn zd(h: &Harness, method: Method, path: &str) -> RequestBuilder {
    h.request(method, &format!("{API}{path}"))
        .basic_auth("admin@acme.test/token", Some("zd-sandbox-token-0001"))
}

fn ticket(summary: &str) -> serde_json::Value {
    json!({"ticket": {"subject": "Reschedule request", "comment": {"body": summary, "public": false},
        "external_id": "evt_1:int_zd", "tags": ["conduit", "voice"], "priority": "normal",
        "requester": {"name": "Dana Lee", "email": "dana.lee@example.com"}}})
}

#[tokio::test]
async fn auth_and_scope_are_refused() {
    let h = Harness::start().await;
    let anonymous = h
        .send(
            h.request(Method::POST, &format!("{API}/tickets.json"))
                .json(&ticket("x")),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.body["error"], "Couldn't authenticate you");
    let post_as = |token: &str| {
        h.request(Method::POST, &format!("{API}/tickets"))
            .bearer_auth(token)
            .json(&ticket("x"))
    };
    let read_only = h.token(OAuthProvider::Zendesk, &["read"]);
    let refused = h.send(post_as(&read_only)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["error"], "Forbidden");
    assert!(
        refused.body["description"]
            .as_str()
            .unwrap_or("")
            .contains("write")
    );
    let writer = h.token(OAuthProvider::Zendesk, &["tickets:write"]);
    let allowed = h.send(post_as(&writer)).await;
    assert_eq!(allowed.status, StatusCode::CREATED, "{}", allowed.body);
}

#[tokio::test]
async fn idempotency_key_replays_the_first_answer_and_refuses_another_body() {
    let h = Harness::start().await;
    let first = h
        .send(
            zd(&h, Method::POST, "/tickets")
                .header("idempotency-key", "evt_1:int_zd")
                .json(&ticket("Summary")),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.header("x-idempotency-lookup"), Some("miss"));
    let id = first.body["ticket"]["id"].as_u64().expect("numeric id");
    assert!(
        first
            .header("location")
            .is_some_and(|l| l.ends_with(&format!("/api/v2/tickets/{id}.json")))
    );

    let again = h
        .send(
            zd(&h, Method::POST, "/tickets")
                .header("idempotency-key", "evt_1:int_zd")
                .json(&ticket("Summary")),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.header("x-idempotency-lookup"), Some("hit"));
    assert_eq!(again.body["ticket"]["id"], id);
    let other = h
        .send(
            zd(&h, Method::POST, "/tickets")
                .header("idempotency-key", "evt_1:int_zd")
                .json(&ticket("Other")),
        )
        .await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    assert_eq!(other.body["error"], "IdempotentRequestError");
    assert_eq!(
        h.records("zendesk")
            .await
            .iter()
            .filter(|r| r["collection"] == "tickets")
            .count(),
        1
    );

    // A failure after the effect: the retry with the same key gets the ticket, not a second one.
    h.fault(json!({"provider": "zendesk", "kind": "after_effect", "status": 503}))
        .await;
    let lost = h
        .send(
            zd(&h, Method::POST, "/tickets")
                .header("idempotency-key", "k2")
                .json(&ticket("Two")),
        )
        .await;
    assert_eq!(lost.status, StatusCode::SERVICE_UNAVAILABLE);
    let retried = h
        .send(
            zd(&h, Method::POST, "/tickets")
                .header("idempotency-key", "k2")
                .json(&ticket("Two")),
        )
        .await;
    assert_eq!(retried.header("x-idempotency-lookup"), Some("hit"));
    assert_eq!(
        h.records("zendesk")
            .await
            .iter()
            .filter(|r| r["collection"] == "tickets")
            .count(),
        2
    );

    let by_external = h
        .send(zd(
            &h,
            Method::GET,
            "/tickets.json?external_id=evt_1%3Aint_zd",
        ))
        .await;
    assert_eq!(by_external.body["count"], 2);
}

#[tokio::test]
async fn comments_need_a_body_and_are_listed_for_the_lookup() {
    let h = Harness::start().await;
    let no_comment = h
        .send(zd(&h, Method::POST, "/tickets").json(&json!({"ticket": {"subject": "x"}})))
        .await;
    assert_eq!(no_comment.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(no_comment.body["error"], "RecordInvalid");
    assert!(no_comment.body["details"]["base"].is_array());
    let bad_priority = h
        .send(
            zd(&h, Method::POST, "/tickets")
                .json(&json!({"ticket": {"comment": {"body": "x"}, "priority": "asap"}})),
        )
        .await;
    assert_eq!(bad_priority.status, StatusCode::UNPROCESSABLE_ENTITY);

    let created = h
        .send(zd(&h, Method::POST, "/tickets").json(&ticket("First")))
        .await;
    let id = created.body["ticket"]["id"].as_u64().expect("id");
    let note = h
        .send(zd(&h, Method::PUT, &format!("/tickets/{id}.json"))
            .json(&json!({"ticket": {"comment": {"body": "Summary\nRef: evt_1:int_note", "public": false}}})))
        .await;
    assert_eq!(note.status, StatusCode::OK, "{}", note.body);
    assert_eq!(note.body["ticket"]["id"], id);
    let missing = h
        .send(
            zd(&h, Method::PUT, "/tickets/999999")
                .json(&json!({"ticket": {"comment": {"body": "x"}}})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["error"], "RecordNotFound");
    let comments = h
        .send(zd(&h, Method::GET, &format!("/tickets/{id}/comments")))
        .await;
    let list = comments.body["comments"].as_array().expect("comments");
    assert_eq!(list.len(), 2);
    assert!(
        list[1]["body"]
            .as_str()
            .is_some_and(|b| b.contains("Ref: evt_1:int_note"))
    );
    assert_eq!(list[1]["public"], false);
}

#[tokio::test]
async fn users_create_or_update_matches_on_email() {
    let h = Harness::start().await;
    let user = json!({"user": {"name": "Dana Lee", "email": "dana.lee@example.com", "phone": "+61290001234"}});
    let created = h
        .send(zd(&h, Method::POST, "/users/create_or_update").json(&user))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let again = h
        .send(zd(&h, Method::POST, "/users/create_or_update").json(&user))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["user"]["id"], created.body["user"]["id"]);
    let nameless = h
        .send(
            zd(&h, Method::POST, "/users/create_or_update")
                .json(&json!({"user": {"email": "a@b.test"}})),
        )
        .await;
    assert_eq!(nameless.status, StatusCode::UNPROCESSABLE_ENTITY);
    h.fault(json!({"provider": "zendesk", "kind": "rate_limit", "retry_after_secs": 30}))
        .await;
    let throttled = h
        .send(zd(&h, Method::POST, "/users/create_or_update").json(&user))
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), Some("30"));
}

#[tokio::test]
async fn a_key_still_in_flight_gets_409_then_the_replay() {
    let h = Harness::start().await;
    h.fault(json!({"provider": "zendesk", "kind": "timeout", "hold_ms": 1200}))
        .await;
    let send = || {
        zd(&h, Method::POST, "/tickets")
            .header("idempotency-key", "k-held")
            .json(&ticket("Held"))
    };
    let gave_up = send()
        .timeout(std::time::Duration::from_millis(200))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client times out");
    let busy = h.send(send()).await;
    assert_eq!(busy.status, StatusCode::CONFLICT);
    assert_eq!(busy.body["error"], "IdempotentRequestInProgress");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let done = h.send(send()).await;
    assert_eq!(done.status, StatusCode::CREATED);
    assert_eq!(done.header("x-idempotency-lookup"), Some("hit"));
    assert_eq!(
        h.records("zendesk")
            .await
            .iter()
            .filter(|r| r["collection"] == "tickets")
            .count(),
        1
    );
}
