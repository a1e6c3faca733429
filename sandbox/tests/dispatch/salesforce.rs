//! Salesforce: Task, Case and Note create, external-id upsert, SOQL lookups.

use reqwest::{Method, RequestBuilder, StatusCode};
use sandbox::OAuthProvider;
use serde_json::json;

use crate::harness::Harness;

const DATA: &str = "acme.my.salesforce.com/services/data/v60.0";
const CONTACT: &str = "003Dn0000000001";

fn sf(h: &Harness, token: &str, method: Method, path: &str) -> RequestBuilder {
    h.request(method, &format!("{DATA}{path}"))
        .bearer_auth(token)
}

fn call_task(key: &str) -> serde_json::Value {
    json!({"Subject": "Call: Dana Lee", "TaskSubtype": "Call", "Status": "Completed", "ActivityDate": "2026-12-05",
        "CallType": "Inbound", "CallDurationInSeconds": 312, "CallObject": key,
        "Description": "Caller asked to move the visit.\nTranscript: https://app.example.com/t"})
}

#[tokio::test]
async fn sessions_without_api_and_bad_bodies_get_salesforce_errors() {
    let h = Harness::start().await;
    let anonymous = h
        .send(
            h.request(Method::POST, &format!("{DATA}/sobjects/Task"))
                .json(&call_task("k")),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.body[0]["errorCode"], "INVALID_SESSION_ID");
    let no_api = h.token(OAuthProvider::Salesforce, &["refresh_token"]);
    let refused = h
        .send(sf(&h, &no_api, Method::POST, "/sobjects/Task").json(&call_task("k")))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.body[0]["message"],
        "This session is not valid for use with the REST API"
    );

    let token = h.token(OAuthProvider::Salesforce, &["api"]);
    let no_parent = h
        .send(
            sf(&h, &token, Method::POST, "/sobjects/Note")
                .json(&json!({"Title": "Conversation", "Body": "x"})),
        )
        .await;
    assert_eq!(no_parent.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_parent.body[0]["errorCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(no_parent.body[0]["fields"], json!(["ParentId"]));
    let unknown = h
        .send(
            sf(&h, &token, Method::POST, "/sobjects/Task")
                .json(&json!({"Subject": "x", "Colour__c": "red"})),
        )
        .await;
    assert_eq!(unknown.body[0]["errorCode"], "INVALID_FIELD");
    let picklist = h
        .send(sf(&h, &token, Method::POST, "/sobjects/Task").json(&json!({"Status": "Done"})))
        .await;
    assert_eq!(
        picklist.body[0]["errorCode"],
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    );
    let bad_id = h
        .send(sf(&h, &token, Method::POST, "/sobjects/Task").json(&json!({"WhoId": "not-an-id"})))
        .await;
    assert_eq!(bad_id.body[0]["errorCode"], "MALFORMED_ID");
    let long = h
        .send(
            sf(&h, &token, Method::POST, "/sobjects/Note")
                .json(&json!({"ParentId": CONTACT, "Title": "x".repeat(81)})),
        )
        .await;
    assert_eq!(long.body[0]["errorCode"], "STRING_TOO_LONG");
    assert!(h.records("salesforce").await.is_empty());
}

#[tokio::test]
async fn tasks_cases_and_notes_are_created_and_found_by_soql() {
    let h = Harness::start().await;
    let token = h.token(OAuthProvider::Salesforce, &["api", "refresh_token"]);
    let created = h
        .send(sf(&h, &token, Method::POST, "/sobjects/Task").json(&call_task("evt_1:int_sf")))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("00T") && id.len() == 18, "{id}");
    assert_eq!(created.body["success"], true);
    assert!(
        created
            .header("sforce-limit-info")
            .is_some_and(|v| v.starts_with("api-usage="))
    );

    let found = h
        .send(sf(&h, &token, Method::GET, "/query").query(&[(
            "q",
            "SELECT Id FROM Task WHERE CallObject = 'evt_1:int_sf' LIMIT 1",
        )]))
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.body["records"][0]["Id"], id.as_str());
    assert_eq!(found.body["records"][0]["attributes"]["type"], "Task");
    let none = h
        .send(sf(&h, &token, Method::GET, "/query").query(&[(
            "q",
            "SELECT Id FROM Task WHERE CallObject = 'other' LIMIT 1",
        )]))
        .await;
    assert_eq!(none.body["totalSize"], 0);

    let case = h
        .send(sf(&h, &token, Method::POST, "/sobjects/Case").json(&json!({"Subject": "Reschedule conv_1", "Origin": "Phone",
            "Status": "New", "Priority": "Medium", "SuppliedEmail": "dana@example.com", "Description": "x"})))
        .await;
    assert_eq!(case.status, StatusCode::CREATED, "{}", case.body);
    assert!(
        case.body["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("500"))
    );
    let by_subject = h
        .send(sf(&h, &token, Method::GET, "/query").query(&[("q",
            "SELECT Id FROM Case WHERE Subject = 'Reschedule conv_1' AND CreatedDate = LAST_N_DAYS:3 ORDER BY CreatedDate DESC LIMIT 1")]))
        .await;
    assert_eq!(by_subject.body["records"][0]["Id"], case.body["id"]);

    let note = h
        .send(
            sf(&h, &token, Method::POST, "/sobjects/Note").json(
                &json!({"ParentId": CONTACT, "Title": "Conversation conv_1", "Body": "Ref: k"}),
            ),
        )
        .await;
    assert_eq!(note.status, StatusCode::CREATED, "{}", note.body);
    let quoted = h
        .send(sf(&h, &token, Method::GET, "/query").query(&[("q",
            format!("SELECT Id FROM Note WHERE ParentId = '{CONTACT}' AND Title = 'Conversation conv_1' LIMIT 1"))]))
        .await;
    assert_eq!(quoted.body["records"][0]["Id"], note.body["id"]);
    let bad = h
        .send(
            sf(&h, &token, Method::GET, "/query")
                .query(&[("q", "SELECT Id FROM Task WHERE Nope__c = 'x'")]),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body[0]["errorCode"], "INVALID_FIELD");
}

#[tokio::test]
async fn external_id_upsert_creates_once_then_updates() {
    let h = Harness::start().await;
    let token = h.token(OAuthProvider::Salesforce, &["api"]);
    let mut body = call_task("evt_1:int_up");
    body.as_object_mut().expect("object").remove("TaskSubtype");
    let path = "/sobjects/Task/Conduit_Key__c/evt_1:int_up";
    let first = h
        .send(sf(&h, &token, Method::PATCH, path).json(&body))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["created"], true);
    // The renderer percent-encodes the key's `:` in the path: the same key.
    let encoded = "/sobjects/Task/Conduit_Key__c/evt_1%3Aint_up";
    let second = h
        .send(sf(&h, &token, Method::PATCH, encoded).json(&body))
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["created"], false);
    assert_eq!(second.body["id"], first.body["id"]);
    assert_eq!(
        h.records("salesforce").await.len(),
        1,
        "one record for one key"
    );
    let unknown_field = h
        .send(sf(&h, &token, Method::PATCH, "/sobjects/Task/Other__c/x").json(&body))
        .await;
    assert_eq!(unknown_field.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown_field.body[0]["errorCode"], "NOT_FOUND");
}

#[tokio::test]
async fn throttling_is_the_daily_allowance_403() {
    let h = Harness::start().await;
    let token = h.token(OAuthProvider::Salesforce, &["api"]);
    h.fault(json!({"provider": "salesforce", "kind": "rate_limit"}))
        .await;
    let forced = h
        .send(sf(&h, &token, Method::POST, "/sobjects/Task").json(&call_task("k")))
        .await;
    assert_eq!(forced.status, StatusCode::FORBIDDEN);
    assert_eq!(forced.body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
    let limit = h.admin_post("salesforce/limit", json!({"max": 1})).await;
    assert_eq!(limit.status, StatusCode::OK, "{}", limit.body);
    let _ = h
        .send(sf(&h, &token, Method::POST, "/sobjects/Task").json(&call_task("k1")))
        .await;
    let spent = h
        .send(sf(&h, &token, Method::POST, "/sobjects/Task").json(&call_task("k2")))
        .await;
    assert_eq!(spent.status, StatusCode::FORBIDDEN);
    assert_eq!(spent.body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn the_record_stand_in_routes_are_recorded_in_order_too_but_never_oauth() {
    let h = Harness::start().await;
    let token = h.token(OAuthProvider::Salesforce, &["api"]);
    let token_request = h
        .send(
            h.request(Method::POST, "login.salesforce.com/services/oauth2/token")
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "nope"),
                    ("client_id", "salesforce-sandbox-client-id"),
                    ("client_secret", "salesforce-sandbox-client-secret"),
                ]),
        )
        .await;
    assert_eq!(token_request.status, StatusCode::BAD_REQUEST);
    let contact = h
        .send(
            sf(&h, &token, Method::POST, "/sobjects/Contact")
                .json(&json!({"LastName": "Lee", "Email": "dana@example.com"})),
        )
        .await;
    assert_eq!(contact.status, StatusCode::CREATED, "{}", contact.body);
    let contact_id = contact.body["id"].as_str().expect("id").to_owned();
    let note = h
        .send(
            sf(&h, &token, Method::POST, "/sobjects/Note")
                .json(&json!({"ParentId": contact_id, "Title": "Conversation"})),
        )
        .await;
    assert_eq!(note.status, StatusCode::CREATED, "{}", note.body);
    let received = h.received("salesforce").await;
    let routes: Vec<&str> = received
        .iter()
        .filter_map(|r| r["route"].as_str())
        .collect();
    assert_eq!(
        routes,
        ["salesforce.sobject_create", "salesforce.note_create"]
    );
    assert_eq!(received[0]["body"]["LastName"], "Lee");
    assert!(received[0]["seq"].as_u64() < received[1]["seq"].as_u64());
    let all = serde_json::to_string(&h.admin_get("dispatch/requests").await).expect("json");
    assert!(
        !all.contains("salesforce-sandbox-client-secret"),
        "OAuth requests are not recorded"
    );
}
