//! The walk-through's chain, as the stand-ins see it: Genesys → TechnologyOne →
//! Salesforce, in order, with the Genesys id inside the TechnologyOne job.

use reqwest::{Method, StatusCode};
use sandbox::OAuthProvider;
use serde_json::json;

use crate::harness::Harness;

#[tokio::test]
async fn three_steps_land_in_order_with_the_earlier_ids_inside() {
    let h = Harness::start().await;
    let genesys = h.token(OAuthProvider::Genesys, &["external-contacts"]);
    let salesforce = h.token(OAuthProvider::Salesforce, &["api"]);

    let contact = h
        .send(
            h.request(
                Method::POST,
                "api.mypurecloud.com/api/v2/externalcontacts/contacts",
            )
            .bearer_auth(&genesys)
            .json(&json!({"lastName": "Citizen", "cellPhone": {"e164": "+61412345678"}})),
        )
        .await;
    let contact_id = contact.body["id"].as_str().expect("contact").to_owned();
    let note = h
        .send(
            h.request(
                Method::POST,
                &format!("api.mypurecloud.com/api/v2/externalcontacts/contacts/{contact_id}/notes"),
            )
            .bearer_auth(&genesys)
            .json(&json!({"noteText": "Call\nRef: evt_9:int_g", "createdBy": {"id": "u1"}})),
        )
        .await;
    let note_id = note.body["id"].as_str().expect("note").to_owned();
    let job = h
        .send(
            h.request(Method::POST, "council.t1cloud.com/T1Default/CiAnywhere/Web/COUNCIL/Api/WS/v1/CustomerRequest")
                .basic_auth("CONDUIT", Some("t1-sandbox-pass-0001"))
                .json(&json!({"RequestType": "GENERAL", "Description": "Call", "ExternalReference": "evt_9:int_t",
                    "Notes": format!("genesys_log_call: {note_id}; ")})),
        )
        .await;
    assert_eq!(job.status, StatusCode::OK, "{}", job.body);
    let sf_contact = h
        .send(
            h.request(
                Method::POST,
                "acme.my.salesforce.com/services/data/v60.0/sobjects/Contact",
            )
            .bearer_auth(&salesforce)
            .json(&json!({"LastName": "Citizen", "Email": "jane@example.com"})),
        )
        .await;
    let parent = sf_contact.body["id"].as_str().expect("contact").to_owned();
    let sf_note = h
        .send(
            h.request(Method::POST, "acme.my.salesforce.com/services/data/v60.0/sobjects/Note")
                .bearer_auth(&salesforce)
                .json(&json!({"ParentId": parent, "Title": "Conversation conv_9", "Body": "Ref: evt_9:int_s"})),
        )
        .await;
    assert_eq!(sf_note.status, StatusCode::CREATED, "{}", sf_note.body);

    let all = h.admin_get("dispatch/requests").await;
    let order: Vec<(String, String)> = all["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| {
            (
                r["provider"].as_str().unwrap_or("").to_owned(),
                r["route"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("genesys", "genesys.external_contact_create"),
        ("genesys", "genesys.external_contact_note_create"),
        ("technologyone", "technologyone.ws_create"),
        ("salesforce", "salesforce.sobject_create"),
        ("salesforce", "salesforce.note_create"),
    ];
    assert_eq!(
        order,
        expected.map(|(p, r)| (p.to_owned(), r.to_owned())).to_vec()
    );
    let records = h.admin_get("dispatch/records?provider=technologyone").await;
    let notes = records["records"][0]["record"]["Notes"]
        .as_str()
        .expect("notes");
    assert!(
        notes.contains(&note_id),
        "the Genesys note id is inside the job: {notes}"
    );
}
