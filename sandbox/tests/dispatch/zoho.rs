//! Zoho CRM: upserts with duplicate_check_fields, notes, the data[] envelope.

use reqwest::{Method, RequestBuilder, StatusCode};
use sandbox::OAuthProvider;
use serde_json::json;

use crate::harness::Harness;

const API: &str = "www.zohoapis.com/crm/v2";

fn zo(h: &Harness, token: &str, method: Method, path: &str) -> RequestBuilder {
    h.request(method, &format!("{API}{path}"))
        .header("authorization", format!("Zoho-oauthtoken {token}"))
}

fn call(key: &str) -> serde_json::Value {
    json!({"data": [{"Subject": "Call: Dana Lee", "Call_Type": "Inbound", "Call_Start_Time": "2026-12-05T03:35:00+00:00",
        "Call_Duration": "05:12", "Description": "Summary", "Call_Result": "Completed", "Conduit_Key": key}],
        "duplicate_check_fields": ["Conduit_Key"]})
}

#[tokio::test]
async fn scopes_and_mandatory_fields_answer_zoho_bodies() {
    let h = Harness::start().await;
    let anonymous = h
        .send(
            h.request(Method::POST, &format!("{API}/Calls/upsert"))
                .json(&call("k")),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.body["code"], "AUTHENTICATION_FAILURE");
    let tasks_only = h.token(OAuthProvider::Zoho, &["ZohoCRM.modules.tasks.ALL"]);
    let refused = h
        .send(zo(&h, &tasks_only, Method::POST, "/Calls/upsert").json(&call("k")))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body["code"], "OAUTH_SCOPE_MISMATCH");

    let token = h.token(OAuthProvider::Zoho, &["ZohoCRM.modules.ALL"]);
    let missing = h
        .send(
            zo(&h, &token, Method::POST, "/Calls/upsert")
                .json(&json!({"data": [{"Subject": "x", "Call_Type": "Inbound"}]})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.body["data"][0]["status"], "error");
    assert_eq!(missing.body["data"][0]["code"], "MANDATORY_NOT_FOUND");
    assert_eq!(
        missing.body["data"][0]["details"]["api_name"],
        "Call_Start_Time"
    );
    let duration = h
        .send(
            zo(&h, &token, Method::POST, "/Calls/upsert")
                .json(&json!({"data": [{"Subject": "x", "Call_Type": "Inbound",
            "Call_Start_Time": "2026-12-05T03:35:00+00:00", "Call_Duration": "312"}]})),
        )
        .await;
    assert_eq!(duration.body["data"][0]["code"], "INVALID_DATA");
    let not_unique = h
        .send(
            zo(&h, &token, Method::POST, "/Calls/upsert")
                .json(&json!({"data": [{"Subject": "x"}], "duplicate_check_fields": ["Subject"]})),
        )
        .await;
    assert_eq!(not_unique.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn upserts_insert_once_then_update_and_notes_hang_on_contacts() {
    let h = Harness::start().await;
    let token = h.token(
        OAuthProvider::Zoho,
        &[
            "ZohoCRM.modules.calls.ALL",
            "ZohoCRM.modules.contacts.ALL",
            "ZohoCRM.modules.notes.ALL",
        ],
    );
    let first = h
        .send(zo(&h, &token, Method::POST, "/Calls/upsert").json(&call("evt_1:int_zo")))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["data"][0]["action"], "insert");
    let id = first.body["data"][0]["details"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let again = h
        .send(zo(&h, &token, Method::POST, "/Calls/upsert").json(&call("evt_1:int_zo")))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["data"][0]["action"], "update");
    assert_eq!(again.body["data"][0]["duplicate_field"], "Conduit_Key");
    assert_eq!(again.body["data"][0]["details"]["id"], id.as_str());

    let contact = h
        .send(
            zo(&h, &token, Method::POST, "/Contacts/upsert")
                .json(&json!({"data": [{"Last_Name": "Lee", "First_Name": "Dana",
            "Email": "dana@example.com"}], "duplicate_check_fields": ["Email"]})),
        )
        .await;
    assert_eq!(contact.status, StatusCode::CREATED, "{}", contact.body);
    let contact_id = contact.body["data"][0]["details"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let notes_path = format!("/Contacts/{contact_id}/Notes");
    let empty = h.send(zo(&h, &token, Method::GET, &notes_path)).await;
    assert_eq!(empty.status, StatusCode::NO_CONTENT);
    let note = h
        .send(zo(&h, &token, Method::POST, "/Notes").json(&json!({"data": [{"Note_Title": "Conversation summary",
            "Note_Content": "Summary\nRef: evt_1:int_zn", "Parent_Id": {"module": {"api_name": "Contacts"}, "id": contact_id}}]})))
        .await;
    assert_eq!(note.status, StatusCode::CREATED, "{}", note.body);
    let notes = h.send(zo(&h, &token, Method::GET, &notes_path)).await;
    assert!(
        notes.body["data"][0]["Note_Content"]
            .as_str()
            .is_some_and(|c| c.contains("Ref: evt_1:int_zn"))
    );
    let orphan = h
        .send(zo(&h, &token, Method::POST, "/Notes").json(&json!({"data": [{"Note_Content": "x", "Parent_Id": {"module": {"api_name": "Contacts"}, "id": "1"}}]})))
        .await;
    assert_eq!(orphan.body["data"][0]["code"], "INVALID_DATA");

    h.fault(json!({"provider": "zoho", "kind": "rate_limit", "retry_after_secs": 6}))
        .await;
    let throttled = h
        .send(zo(&h, &token, Method::POST, "/Calls/upsert").json(&call("k")))
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), Some("6"));
}
