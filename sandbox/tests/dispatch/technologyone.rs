//! TechnologyOne CiAnywhere (assumed API): current user, create a customer request, find
//! it by reference.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::json;

use crate::harness::Harness;

const API: &str = "council.t1cloud.com/T1Default/CiAnywhere/Web/COUNCIL/Api";

fn t1(h: &Harness, method: Method, path: &str) -> RequestBuilder {
    h.request(method, &format!("{API}{path}"))
        .basic_auth("conduit", Some("t1-sandbox-pass-0001"))
}

fn job(reference: &str) -> serde_json::Value {
    json!({"RequestType": "GENERAL", "Description": "Broken streetlight outside 12 King St",
        "ContactName": "Jane Citizen", "ContactPhone": "+61412345678",
        "ExternalReference": reference, "Notes": "genesys_log_call: 3f2a"})
}

#[tokio::test]
async fn basic_auth_current_user_and_the_create_lookup_pair() {
    let h = Harness::start().await;
    let refused = h
        .send(
            h.request(Method::GET, &format!("{API}/System/CurrentUser"))
                .basic_auth("conduit", Some("nope")),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body["Messages"][0]["Type"], "Error");
    let me = h.send(t1(&h, Method::GET, "/System/CurrentUser")).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["UserId"], "CONDUIT");
    assert!(me.body["EmailAddress"].is_string());

    let missing = h
        .send(
            t1(&h, Method::POST, "/WS/v1/CustomerRequest").json(&json!({"RequestType": "GENERAL"})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.body["Messages"][0]["Type"], "Error");
    let unknown_service = h
        .send(t1(&h, Method::POST, "/WS/v1/Other").json(&job("k")))
        .await;
    assert_eq!(unknown_service.status, StatusCode::NOT_FOUND);

    let created = h
        .send(t1(&h, Method::POST, "/WS/v1/CustomerRequest").json(&job("evt_1:int_t1")))
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let number = created.body["DataSet"][0]["RequestNumber"]
        .as_str()
        .expect("number")
        .to_owned();
    assert!(number.starts_with("CR"));
    let found = h
        .send(t1(
            &h,
            Method::GET,
            "/RaaS/v1/CustomerRequestByReference?q=evt_1%3Aint_t1",
        ))
        .await;
    assert_eq!(found.body["DataSet"][0]["RequestNumber"], number.as_str());
    let none = h
        .send(t1(
            &h,
            Method::GET,
            "/RaaS/v1/CustomerRequestByReference?q=other",
        ))
        .await;
    assert_eq!(none.body["TotalRecordCount"], 0);
    let received = h.received("technologyone").await;
    assert_eq!(received.len(), 7);
    assert_eq!(received[4]["body"]["Notes"], "genesys_log_call: 3f2a");
}

#[tokio::test]
async fn a_forced_throttle_answers_429_with_retry_after() {
    let h = Harness::start().await;
    h.fault(json!({"provider": "technologyone", "kind": "rate_limit", "retry_after_secs": 4}))
        .await;
    let answer = h
        .send(t1(&h, Method::POST, "/WS/v1/CustomerRequest").json(&job("k")))
        .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.header("retry-after"), Some("4"));
    assert!(h.records("technologyone").await.is_empty());
}
