//! Freshdesk: tickets, tag search, notes, conversations, contacts.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::json;

use crate::harness::Harness;

const API: &str = "acme.freshdesk.com/api/v2";

fn fd(h: &Harness, method: Method, path: &str) -> RequestBuilder {
    h.request(method, &format!("{API}{path}"))
        .basic_auth("fd-sandbox-key-0001", Some("X"))
}

#[tokio::test]
async fn tickets_are_validated_created_and_found_by_tag() {
    let h = Harness::start().await;
    let ticket = json!({"subject": "Reschedule", "description": "<p>Move the visit</p>", "email": "dana@example.com",
        "name": "Dana", "status": 2, "priority": 2, "source": 3, "tags": ["conduit", "evt_1:int_fd"]});
    let anonymous = h
        .send(
            h.request(Method::POST, &format!("{API}/tickets"))
                .json(&ticket),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.body["code"], "invalid_credentials");

    let no_requester = h
        .send(fd(&h, Method::POST, "/tickets").json(&json!({"subject": "x", "description": "y"})))
        .await;
    assert_eq!(no_requester.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_requester.body["description"], "Validation failed");
    assert_eq!(no_requester.body["errors"][0]["code"], "missing_field");
    let phone_only = h
        .send(
            fd(&h, Method::POST, "/tickets")
                .json(&json!({"phone": "+61290001234", "description": "y"})),
        )
        .await;
    assert_eq!(phone_only.body["errors"][0]["field"], "name");
    let extra = h
        .send(fd(&h, Method::POST, "/tickets").json(&json!({"email": "a@b.test", "colour": "red"})))
        .await;
    assert_eq!(extra.body["errors"][0]["code"], "invalid_field");
    let bad_status = h
        .send(
            fd(&h, Method::POST, "/tickets")
                .json(&json!({"email": "a@b.test", "status": 9, "priority": "high"})),
        )
        .await;
    let codes: Vec<&str> = bad_status.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["code"].as_str())
        .collect();
    assert_eq!(codes, ["invalid_value", "datatype_mismatch"]);

    let created = h.send(fd(&h, Method::POST, "/tickets").json(&ticket)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_u64().expect("id");
    assert_eq!(created.body["description_text"], "Move the visit");
    let found = h
        .send(fd(&h, Method::GET, "/search/tickets").query(&[("query", "\"tag:'evt_1:int_fd'\"")]))
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.body["results"][0]["id"], id);
    let unquoted = h
        .send(fd(&h, Method::GET, "/search/tickets").query(&[("query", "tag:'x'")]))
        .await;
    assert_eq!(unquoted.status, StatusCode::BAD_REQUEST);

    let note = h
        .send(
            fd(&h, Method::POST, &format!("/tickets/{id}/notes"))
                .json(&json!({"body": "<p>Summary</p><p>Ref: evt_1:int_n</p>", "private": true})),
        )
        .await;
    assert_eq!(note.status, StatusCode::CREATED, "{}", note.body);
    assert_eq!(note.body["ticket_id"], id);
    let empty = h
        .send(fd(&h, Method::POST, &format!("/tickets/{id}/notes")).json(&json!({"private": true})))
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    let conversations = h
        .send(fd(&h, Method::GET, &format!("/tickets/{id}/conversations")))
        .await;
    assert!(
        conversations.body[0]["body_text"]
            .as_str()
            .is_some_and(|t| t.contains("Ref: evt_1:int_n"))
    );
    let unknown = h
        .send(fd(&h, Method::POST, "/tickets/424242/notes").json(&json!({"body": "x"})))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn contacts_are_unique_by_email_and_listed_by_email() {
    let h = Harness::start().await;
    let contact = json!({"name": "Dana Lee", "email": "dana@example.com", "phone": "+61290001234"});
    let created = h
        .send(fd(&h, Method::POST, "/contacts").json(&contact))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let again = h
        .send(fd(&h, Method::POST, "/contacts").json(&contact))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["errors"][0]["code"], "duplicate_value");
    let listed = h
        .send(fd(&h, Method::GET, "/contacts?email=dana%40example.com"))
        .await;
    assert_eq!(listed.body[0]["id"], created.body["id"]);
    let nameless = h
        .send(fd(&h, Method::POST, "/contacts").json(&json!({"email": "x@y.test"})))
        .await;
    assert_eq!(nameless.status, StatusCode::BAD_REQUEST);
    h.fault(json!({"provider": "freshdesk", "kind": "rate_limit", "retry_after_secs": 12}))
        .await;
    let throttled = h
        .send(fd(&h, Method::GET, "/contacts?email=dana%40example.com"))
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), Some("12"));
}

#[tokio::test]
async fn answers_carry_the_rate_limit_headers() {
    let h = Harness::start().await;
    let first = h
        .send(fd(&h, Method::GET, "/contacts?email=x%40y.test"))
        .await;
    assert_eq!(first.header("x-ratelimit-total"), Some("200"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("199"));
    assert_eq!(first.header("x-ratelimit-used-currentrequest"), Some("1"));
    let second = h
        .send(fd(&h, Method::GET, "/contacts?email=x%40y.test"))
        .await;
    assert_eq!(second.header("x-ratelimit-remaining"), Some("198"));
}

#[tokio::test]
async fn search_lags_behind_creates_when_an_index_delay_is_set() {
    let h = Harness::start().await;
    let lag = h
        .admin_post(
            "dispatch/index_delay",
            json!({"provider": "freshdesk", "ms": 400}),
        )
        .await;
    assert_eq!(lag.status, StatusCode::OK);
    let created = h
        .send(
            fd(&h, Method::POST, "/tickets").json(&json!({"email": "a@b.test", "tags": ["k-lag"]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let search = || fd(&h, Method::GET, "/search/tickets").query(&[("query", "\"tag:'k-lag'\"")]);
    assert_eq!(h.send(search()).await.body["total"], 0, "not indexed yet");
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    assert_eq!(h.send(search()).await.body["total"], 1);
}
