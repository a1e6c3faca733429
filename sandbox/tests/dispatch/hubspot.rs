//! HubSpot: calls, notes, tasks and their searches; contacts batch upsert by email.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::json;

use crate::harness::Harness;

const API: &str = "api.hubapi.com";
const PAT: &str = "pat-na1-sandbox-0001";

fn hs(h: &Harness, method: Method, path: &str) -> RequestBuilder {
    h.request(method, &format!("{API}{path}")).bearer_auth(PAT)
}

fn call(contact: &str) -> serde_json::Value {
    json!({"properties": {"hs_timestamp": "2026-12-05T03:35:00Z", "hs_call_title": "Call: Dana Lee conv_1",
        "hs_call_body": "Summary\nRef: evt_1:int_hs", "hs_call_direction": "INBOUND", "hs_call_status": "COMPLETED",
        "hs_call_duration": "312000"},
        "associations": [{"to": {"id": contact}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]}]})
}

async fn contact(h: &Harness) -> String {
    let upsert = json!({"inputs": [{"idProperty": "email", "id": "dana.lee@example.com",
        "properties": {"firstname": "Dana", "lastname": "Lee", "phone": "+61290001234"}}]});
    let first = h
        .send(hs(h, Method::POST, "/crm/v3/objects/contacts/batch/upsert").json(&upsert))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["results"][0]["new"], true);
    let again = h
        .send(hs(h, Method::POST, "/crm/v3/objects/contacts/batch/upsert").json(&upsert))
        .await;
    assert_eq!(again.body["results"][0]["new"], false);
    assert_eq!(
        again.body["results"][0]["id"],
        first.body["results"][0]["id"]
    );
    first.body["results"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

#[tokio::test]
async fn scopes_and_required_properties_are_enforced() {
    let h = Harness::start().await;
    let anonymous = h
        .send(
            h.request(Method::POST, &format!("{API}/crm/v3/objects/calls"))
                .json(&call("1")),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    h.sandbox
        .state()
        .set_hubspot_private_app_scopes(62515, &["crm.objects.contacts.read".to_owned()])
        .expect("scopes");
    let refused = h
        .send(hs(&h, Method::POST, "/crm/v3/objects/calls").json(&call("1")))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["category"], "MISSING_SCOPES");
    h.sandbox
        .state()
        .set_hubspot_private_app_scopes(62515, &sandbox::oauth::hubspot_crm_scopes())
        .expect("scopes");

    let no_time = h
        .send(
            hs(&h, Method::POST, "/crm/v3/objects/notes")
                .json(&json!({"properties": {"hs_note_body": "x"}})),
        )
        .await;
    assert_eq!(no_time.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_time.body["status"], "error");
    assert_eq!(no_time.body["category"], "VALIDATION_ERROR");
    assert!(no_time.body["correlationId"].is_string());
    let unknown = h
        .send(hs(&h, Method::POST, "/crm/v3/objects/notes").json(
            &json!({"properties": {"hs_timestamp": "2026-12-05T03:35:00Z", "colour": "red"}}),
        ))
        .await;
    assert!(
        unknown.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("PROPERTY_DOESNT_EXIST")
    );
    let bad_enum = h
        .send(hs(&h, Method::POST, "/crm/v3/objects/tasks").json(&json!({"properties": {"hs_timestamp": "2026-12-06T00:00:00Z", "hs_task_status": "OPEN"}})))
        .await;
    assert_eq!(bad_enum.status, StatusCode::BAD_REQUEST);
    let missing_contact = h
        .send(hs(&h, Method::POST, "/crm/v3/objects/calls").json(&call("999999")))
        .await;
    assert_eq!(missing_contact.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn calls_are_created_and_found_by_title_and_timestamp() {
    let h = Harness::start().await;
    let contact_id = contact(&h).await;
    let listed = h
        .send(hs(&h, Method::GET, "/crm/v3/objects/contacts"))
        .await;
    assert!(
        listed.body["results"]
            .as_array()
            .is_some_and(|r| r.iter().any(|c| c["id"] == contact_id.as_str())),
        "the upserted contact is a HubSpot contact"
    );
    let created = h
        .send(hs(&h, Method::POST, "/crm/v3/objects/calls").json(&call(&contact_id)))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        created.body["properties"]["hs_call_title"],
        "Call: Dana Lee conv_1"
    );
    assert!(created.header("x-hubspot-ratelimit-remaining").is_some());

    let search = json!({"filterGroups": [{"filters": [
        {"propertyName": "hs_call_title", "operator": "EQ", "value": "Call: Dana Lee conv_1"},
        {"propertyName": "hs_timestamp", "operator": "EQ", "value": "1796441700000"}]}], "limit": 1});
    let found = h
        .send(hs(&h, Method::POST, "/crm/v3/objects/calls/search").json(&search))
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.body["results"][0]["id"], id.as_str());

    let note = h
        .send(hs(&h, Method::POST, "/crm/v3/objects/notes").json(&json!({"properties": {"hs_timestamp": "2026-12-05T03:40:12Z", "hs_note_body": "Ref: k"},
            "associations": [{"to": {"id": contact_id}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}]})))
        .await;
    assert_eq!(note.status, StatusCode::CREATED, "{}", note.body);
    let by_contact = json!({"filterGroups": [{"filters": [
        {"propertyName": "hs_timestamp", "operator": "EQ", "value": "2026-12-05T03:40:12Z"},
        {"propertyName": "associations.contact", "operator": "EQ", "value": contact_id}]}]});
    let notes = h
        .send(hs(&h, Method::POST, "/crm/v3/objects/notes/search").json(&by_contact))
        .await;
    assert_eq!(notes.body["results"][0]["id"], note.body["id"]);
    let wrong_type = h
        .send(hs(&h, Method::POST, "/crm/v3/objects/notes").json(&json!({"properties": {"hs_timestamp": "2026-12-05T03:40:12Z"},
            "associations": [{"to": {"id": contact_id}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]}]})))
        .await;
    assert_eq!(wrong_type.status, StatusCode::BAD_REQUEST);

    h.fault(json!({"provider": "hubspot", "kind": "rate_limit", "retry_after_secs": 10}))
        .await;
    let throttled = h
        .send(hs(&h, Method::POST, "/crm/v3/objects/calls").json(&call(&contact_id)))
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), Some("10"));
}
