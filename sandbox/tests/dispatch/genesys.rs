//! Genesys Cloud: external contacts, notes, callbacks.

use reqwest::{Method, StatusCode};
use sandbox::OAuthProvider;
use serde_json::{Value, json};

use crate::harness::Harness;

const API: &str = "api.mypurecloud.com/api/v2";

async fn contact(h: &Harness, token: &str) -> String {
    let answer = h
        .send(
            h.request(Method::POST, &format!("{API}/externalcontacts/contacts"))
                .bearer_auth(token)
                .json(&json!({"firstName": "Jane", "lastName": "Citizen",
                    "workEmail": "jane@example.com", "cellPhone": {"e164": "+61412345678"}})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn auth_and_scopes_are_refused_with_genesys_error_bodies() {
    let h = Harness::start().await;
    let none = h
        .send(h.request(Method::GET, &format!("{API}/externalcontacts/contacts?q=x")))
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.body["code"], "authentication.required");
    let bad = h
        .send(
            h.request(Method::GET, &format!("{API}/externalcontacts/contacts"))
                .bearer_auth("not-a-token"),
        )
        .await;
    assert_eq!(bad.body["code"], "bad.credentials");

    let users_only = h.token(OAuthProvider::Genesys, &["users"]);
    let refused = h
        .send(
            h.request(Method::POST, &format!("{API}/externalcontacts/contacts"))
                .bearer_auth(&users_only)
                .json(&json!({"lastName": "X"})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["code"], "missing.any.scopes");
    assert_eq!(refused.body["status"], 403);

    let token = h.token(OAuthProvider::Genesys, &["external-contacts"]);
    h.sandbox
        .state()
        .expire_access_tokens(OAuthProvider::Genesys);
    let expired = h
        .send(
            h.request(Method::GET, &format!("{API}/externalcontacts/contacts"))
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.body["code"], "credentials.expired");
    assert!(h.records("genesys").await.is_empty(), "nothing was created");
}

#[tokio::test]
async fn notes_need_text_and_author_and_are_found_again_by_their_ref() {
    let h = Harness::start().await;
    let token = h.token(
        OAuthProvider::Genesys,
        &["external-contacts", "conversations"],
    );
    let contact_id = contact(&h, &token).await;
    assert_eq!(contact_id.len(), 36, "a UUID");

    let notes = format!("{API}/externalcontacts/contacts/{contact_id}/notes");
    let missing = h
        .send(
            h.request(Method::POST, &notes)
                .bearer_auth(&token)
                .json(&json!({"noteText": "hello"})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.body["code"], "bad.request");
    assert_eq!(missing.body["details"][0]["fieldName"], "createdBy");

    let text = "AI call summary.\nRef: evt_1:int_1";
    let created = h
        .send(
            h.request(Method::POST, &notes)
                .bearer_auth(&token)
                .json(&json!({"noteText": text, "createdBy": {"id": "user-1"}})),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let note_id = created.body["id"].as_str().expect("id").to_owned();

    let unknown = h
        .send(
            h.request(
                Method::POST,
                &format!("{API}/externalcontacts/contacts/nope/notes"),
            )
            .bearer_auth(&token)
            .json(&json!({"noteText": text, "createdBy": {"id": "user-1"}})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let listed = h
        .send(
            h.request(Method::GET, &format!("{notes}?pageSize=25&sortOrder=desc"))
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let hit = listed.body["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .find(|n| {
            n["noteText"]
                .as_str()
                .is_some_and(|t| t.contains("Ref: evt_1:int_1"))
        })
        .expect("the lookup finds the note");
    assert_eq!(hit["id"], note_id.as_str());

    let search = h
        .send(
            h.request(
                Method::GET,
                &format!("{API}/externalcontacts/contacts?q=%2B61412345678&pageSize=2"),
            )
            .bearer_auth(&token),
        )
        .await;
    assert_eq!(search.body["entities"][0]["id"], contact_id.as_str());

    let received = h.received("genesys").await;
    let routes: Vec<&str> = received
        .iter()
        .map(|r| r["route"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        routes,
        [
            "genesys.external_contact_create",
            "genesys.external_contact_note_create",
            "genesys.external_contact_note_create",
            "genesys.external_contact_note_create",
            "genesys.external_contact_notes_list",
            "genesys.external_contacts_search",
        ]
    );
    assert!(
        received
            .iter()
            .all(|r| r["headers"].get("authorization").is_none())
    );
    assert_eq!(received[2]["created"]["id"], note_id.as_str());
    assert_eq!(received[2]["body"]["noteText"], text);
}

#[tokio::test]
async fn callbacks_need_numbers_and_a_queue() {
    let h = Harness::start().await;
    let token = h.token(OAuthProvider::Genesys, &["conversations"]);
    let url = format!("{API}/conversations/callbacks");
    let no_queue = h
        .send(
            h.request(Method::POST, &url)
                .bearer_auth(&token)
                .json(&json!({"callbackNumbers": ["+61412345678"]})),
        )
        .await;
    assert_eq!(no_queue.status, StatusCode::BAD_REQUEST);
    let created = h
        .send(
            h.request(Method::POST, &url)
                .bearer_auth(&token)
                .json(&json!({
            "queueId": "q-1", "callbackNumbers": ["+61412345678"],
            "data": {"conduitKey": "evt_1:int_2"}})),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let id = created.body["conversation"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let listed = h
        .send(h.request(Method::GET, &url).bearer_auth(&token))
        .await;
    let entity = &listed.body["entities"][0];
    assert_eq!(entity["id"], id.as_str());
    assert_eq!(
        entity["participants"][0]["attributes"]["conduitKey"],
        "evt_1:int_2"
    );
}

#[tokio::test]
async fn fault_knobs_throttle_fail_after_effect_hold_and_drop() {
    let h = Harness::start().await;
    let token = h.token(OAuthProvider::Genesys, &["external-contacts"]);
    let body = json!({"lastName": "Citizen"});
    let create = || {
        h.request(Method::POST, &format!("{API}/externalcontacts/contacts"))
            .bearer_auth(&token)
            .json(&body)
    };

    h.fault(json!({"provider": "genesys", "kind": "rate_limit", "retry_after_secs": 7}))
        .await;
    let throttled = h.send(create()).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), Some("7"));
    assert!(
        throttled.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("[7]")
    );
    assert!(h.records("genesys").await.is_empty());

    h.fault(json!({"provider": "genesys", "kind": "after_effect", "status": 502}))
        .await;
    let failed = h.send(create()).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        h.records("genesys").await.len(),
        1,
        "created although the answer failed"
    );

    h.fault(json!({"provider": "genesys", "kind": "drop"}))
        .await;
    let dropped = match create().send().await {
        Err(error) => Err(error),
        Ok(response) => response.text().await,
    };
    assert!(
        dropped.is_err(),
        "the connection drops before the answer completes"
    );
    assert_eq!(h.records("genesys").await.len(), 2);

    h.fault(json!({"provider": "genesys", "kind": "timeout", "hold_ms": 1500}))
        .await;
    let timed_out = create()
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(timed_out.is_err(), "the client gives up");
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    assert_eq!(
        h.records("genesys").await.len(),
        3,
        "the held request still landed"
    );

    let faults: Vec<Option<Value>> = h
        .received("genesys")
        .await
        .iter()
        .map(|r| r.get("fault").cloned())
        .collect();
    assert_eq!(
        faults,
        [
            Some(json!("rate_limit")),
            Some(json!("after_effect")),
            Some(json!("drop")),
            Some(json!("timeout")),
        ]
    );
}

#[tokio::test]
async fn the_catalogue_rate_limit_is_enforced_with_an_override() {
    let h = Harness::start().await;
    let token = h.token(OAuthProvider::Genesys, &["external-contacts"]);
    let limit = h
        .admin_post(
            "dispatch/limits",
            json!({"provider": "genesys", "requests": 2, "window_seconds": 60}),
        )
        .await;
    assert_eq!(limit.status, StatusCode::OK);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let answer = h
            .send(
                h.request(Method::GET, &format!("{API}/externalcontacts/contacts"))
                    .bearer_auth(&token),
            )
            .await;
        statuses.push(answer.status.as_u16());
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(answer.body["code"], "too.many.requests");
            let secs: u64 = answer
                .header("retry-after")
                .expect("retry-after")
                .parse()
                .expect("secs");
            assert!((1..=60).contains(&secs));
        }
    }
    assert_eq!(statuses, [200, 200, 429]);
}
