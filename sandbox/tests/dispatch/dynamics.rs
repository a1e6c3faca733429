//! Dataverse: phone calls, cases, tasks, notes and contacts, with OData lookups.

use reqwest::{Method, RequestBuilder, StatusCode};
use sandbox::OAuthProvider;
use serde_json::json;

use crate::harness::Harness;

const API: &str = "acme.crm.dynamics.com/api/data/v9.2";

fn dv(h: &Harness, token: &str, method: Method, path: &str) -> RequestBuilder {
    h.request(method, &format!("{API}{path}"))
        .bearer_auth(token)
        .header("OData-MaxVersion", "4.0")
        .header("OData-Version", "4.0")
        .header("Prefer", "return=representation")
}

fn token(h: &Harness) -> String {
    h.token(
        OAuthProvider::Dynamics365,
        &[
            "https://acme.crm.dynamics.com/user_impersonation",
            "offline_access",
        ],
    )
}

async fn contact(h: &Harness, token: &str) -> String {
    let created = h
        .send(dv(h, token, Method::POST, "/contacts").json(
            &json!({"firstname": "Dana", "lastname": "Lee", "emailaddress1": "dana@example.com"}),
        ))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["contactid"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn tokens_for_another_environment_and_bad_columns_are_refused() {
    let h = Harness::start().await;
    let other = h.token(
        OAuthProvider::Dynamics365,
        &["https://globex.crm.dynamics.com/user_impersonation"],
    );
    let refused = h
        .send(dv(&h, &other, Method::POST, "/phonecalls").json(&json!({"subject": "x"})))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|c| c.contains("resource_id=https://acme.crm.dynamics.com/"))
    );

    let token = token(&h);
    let unknown = h
        .send(
            dv(&h, &token, Method::POST, "/phonecalls").json(&json!({"subject": "x", "Name": "y"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.body["error"]["code"], "0x0");
    let no_subject = h
        .send(dv(&h, &token, Method::POST, "/phonecalls").json(&json!({"description": "x"})))
        .await;
    assert_eq!(no_subject.status, StatusCode::BAD_REQUEST);
    let long = h
        .send(
            dv(&h, &token, Method::POST, "/phonecalls")
                .json(&json!({"subject": "x", "description": "y".repeat(2001)})),
        )
        .await;
    assert_eq!(long.body["error"]["code"], "0x80044331");
    let state = h
        .send(
            dv(&h, &token, Method::POST, "/phonecalls")
                .json(&json!({"subject": "x", "statecode": 1})),
        )
        .await;
    assert_eq!(state.status, StatusCode::BAD_REQUEST);
    let ghost = h
        .send(
            dv(&h, &token, Method::POST, "/incidents").json(&json!({"title": "x",
            "customerid_contact@odata.bind": "/contacts(9f1c2d3e-0000-4000-8000-00000000a001)"})),
        )
        .await;
    assert_eq!(ghost.status, StatusCode::NOT_FOUND);
    assert_eq!(ghost.body["error"]["code"], "0x80040217");
    let no_customer = h
        .send(dv(&h, &token, Method::POST, "/incidents").json(&json!({"title": "x"})))
        .await;
    assert_eq!(no_customer.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn records_are_created_and_found_by_their_ref() {
    let h = Harness::start().await;
    let token = token(&h);
    let contact_id = contact(&h, &token).await;
    let call = h
        .send(dv(&h, &token, Method::POST, "/phonecalls").json(&json!({"subject": "Call: Dana Lee",
            "description": "Summary\nRef: evt_1:int_d'1", "directioncode": false, "actualdurationminutes": 5,
            "regardingobjectid_contact_phonecall@odata.bind": format!("/contacts({contact_id})")})))
        .await;
    assert_eq!(call.status, StatusCode::CREATED, "{}", call.body);
    let id = call.body["activityid"].as_str().expect("id").to_owned();
    assert!(
        call.header("odata-entityid")
            .is_some_and(|e| e.ends_with(&format!("/phonecalls({id})")))
    );
    let found = h
        .send(dv(&h, &token, Method::GET, "/phonecalls").query(&[
            ("$select", "activityid"),
            ("$filter", "contains(description,'Ref: evt_1:int_d''1')"),
            ("$top", "1"),
        ]))
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.body["value"][0]["activityid"], id.as_str());

    let no_body = h
        .send(
            h.request(Method::POST, &format!("{API}/tasks"))
                .bearer_auth(&token)
                .json(&json!({"subject": "Call back"})),
        )
        .await;
    assert_eq!(no_body.status, StatusCode::NO_CONTENT);
    assert!(no_body.header("odata-entityid").is_some());
    let incident = h
        .send(dv(&h, &token, Method::POST, "/incidents").json(&json!({"title": "Reschedule", "caseorigincode": 1,
            "customerid_contact@odata.bind": format!("/contacts({contact_id})"), "description": "Ref: k"})))
        .await;
    assert_eq!(incident.status, StatusCode::CREATED, "{}", incident.body);
    assert!(
        incident.body["ticketnumber"]
            .as_str()
            .is_some_and(|t| t.starts_with("CAS-"))
    );
    let by_email = h
        .send(dv(&h, &token, Method::GET, "/contacts").query(&[
            ("$select", "contactid"),
            ("$filter", "emailaddress1 eq 'dana@example.com'"),
            ("$top", "1"),
        ]))
        .await;
    assert_eq!(by_email.body["value"][0]["contactid"], contact_id.as_str());
    let duplicate = h
        .send(
            dv(&h, &token, Method::POST, "/contacts")
                .header("MSCRM.SuppressDuplicateDetection", "false")
                .json(&json!({"lastname": "Lee", "emailaddress1": "dana@example.com"})),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(duplicate.body["error"]["code"], "0x80040333");

    h.fault(json!({"provider": "dynamics365", "kind": "rate_limit", "retry_after_secs": 5}))
        .await;
    let throttled = h
        .send(dv(&h, &token, Method::POST, "/tasks").json(&json!({"subject": "x"})))
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), Some("5"));
    assert_eq!(throttled.body["error"]["code"], "0x80072322");
}
