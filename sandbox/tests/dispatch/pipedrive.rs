//! Pipedrive v1: activities, notes, persons.

use reqwest::{Method, RequestBuilder, StatusCode};
use sandbox::OAuthProvider;
use serde_json::json;

use crate::harness::Harness;

const API: &str = "api.pipedrive.com/v1";

fn pd(h: &Harness, method: Method, path: &str) -> RequestBuilder {
    h.request(method, &format!("{API}{path}"))
        .header("x-api-token", "pd-sandbox-token-0001")
}

#[tokio::test]
async fn persons_activities_and_notes_with_lookups() {
    let h = Harness::start().await;
    let anonymous = h
        .send(
            h.request(Method::POST, &format!("{API}/activities"))
                .json(&json!({"type": "call"})),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.body["success"], false);
    let deals_only = h.token(OAuthProvider::Pipedrive, &["deals:full"]);
    let refused = h
        .send(
            h.request(Method::POST, "acme.pipedrive.com/api/v1/activities")
                .bearer_auth(&deals_only)
                .json(&json!({"type": "call"})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["error"], "Scope and URL mismatch");

    let nameless = h
        .send(pd(&h, Method::POST, "/persons").json(&json!({"email": [{"value": "d@x.test"}]})))
        .await;
    assert_eq!(nameless.status, StatusCode::BAD_REQUEST);
    let person = h
        .send(pd(&h, Method::POST, "/persons").json(&json!({"name": "Dana Lee",
            "email": [{"value": "dana.lee@example.com", "primary": true, "label": "work"}], "phone": [{"value": "+61290001234", "primary": true, "label": "mobile"}]})))
        .await;
    assert_eq!(person.status, StatusCode::CREATED, "{}", person.body);
    let person_id = person.body["data"]["id"].as_u64().expect("id");
    let found = h
        .send(pd(
            &h,
            Method::GET,
            "/persons/search?term=dana.lee%40example.com&fields=email&exact_match=true",
        ))
        .await;
    assert_eq!(found.body["data"]["items"][0]["item"]["id"], person_id);

    let bad_type = h
        .send(pd(&h, Method::POST, "/activities").json(&json!({"subject": "x", "type": "seance"})))
        .await;
    assert_eq!(bad_type.status, StatusCode::BAD_REQUEST);
    let bad_time = h
        .send(pd(&h, Method::POST, "/activities").json(&json!({"type": "call", "due_time": "3pm"})))
        .await;
    assert_eq!(bad_time.status, StatusCode::BAD_REQUEST);
    let activity = h
        .send(pd(&h, Method::POST, "/activities").json(&json!({"subject": "Call: Dana Lee", "type": "call", "done": 1,
            "due_date": "2026-12-05", "due_time": "03:35", "duration": "00:05", "person_id": person_id,
            "note": "<p>Summary</p><p>Ref: evt_1:int_pd</p>"})))
        .await;
    assert_eq!(activity.status, StatusCode::CREATED, "{}", activity.body);
    assert_eq!(activity.body["success"], true);
    let listed = h
        .send(pd(
            &h,
            Method::GET,
            "/activities?type=call&start_date=2026-12-05&end_date=2026-12-05&user_id=0",
        ))
        .await;
    assert!(
        listed.body["data"][0]["note"]
            .as_str()
            .is_some_and(|n| n.contains("Ref: evt_1:int_pd"))
    );

    let orphan = h
        .send(pd(&h, Method::POST, "/notes").json(&json!({"content": "x"})))
        .await;
    assert_eq!(orphan.status, StatusCode::BAD_REQUEST);
    let unknown_person = h
        .send(pd(&h, Method::POST, "/notes").json(&json!({"content": "x", "person_id": 999})))
        .await;
    assert_eq!(unknown_person.status, StatusCode::NOT_FOUND);
    let note = h
        .send(pd(&h, Method::POST, "/notes").json(
            &json!({"content": "<p>Summary</p><p>Ref: evt_1:int_pn</p>", "person_id": person_id}),
        ))
        .await;
    assert_eq!(note.status, StatusCode::CREATED, "{}", note.body);
    let notes = h
        .send(pd(
            &h,
            Method::GET,
            &format!("/notes?person_id={person_id}&sort=add_time%20DESC&limit=50"),
        ))
        .await;
    assert_eq!(notes.body["data"][0]["id"], note.body["data"]["id"]);

    h.fault(json!({"provider": "pipedrive", "kind": "rate_limit", "retry_after_secs": 2}))
        .await;
    let throttled = h.send(pd(&h, Method::GET, "/notes")).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), Some("2"));
}
