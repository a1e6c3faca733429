//! SAP C4C: Basic auth, the CSRF handshake, service requests, texts and phone calls.

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::json;

use crate::harness::Harness;

const BASE: &str = "my000001.crm.ondemand.com/sap/c4c/odata/v1/c4codataapi";

fn sap(h: &Harness, method: Method, path: &str) -> RequestBuilder {
    h.request(method, &format!("{BASE}{path}"))
        .basic_auth("CONDUIT_API", Some("sap-sandbox-pass-0001"))
        .header("accept", "application/json")
}

/// The CSRF token and the cookies to send with it.
async fn fetch_csrf(h: &Harness) -> (String, String) {
    let answer = h
        .send(sap(h, Method::GET, "/").header("x-csrf-token", "Fetch"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let token = answer.header("x-csrf-token").expect("token").to_owned();
    (token, cookies(&answer.headers))
}

fn cookies(headers: &HeaderMap) -> String {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .collect::<Vec<_>>()
        .join("; ")
}

fn ticket(reference: &str) -> serde_json::Value {
    json!({"Name": "AI assistant call: streetlight", "ServicePriorityCode": "3",
        "ProcessingTypeCode": "SRRQ", "ReporterEmail": "jane@example.com",
        "ServiceRequestDescription": [{"TypeCode": "10004", "Text": format!("Broken streetlight.\nRef: {reference}")}]})
}

#[tokio::test]
async fn writes_need_basic_auth_and_the_csrf_token_with_its_cookie() {
    let h = Harness::start().await;
    let anonymous = h
        .send(
            h.request(Method::GET, &format!("{BASE}/"))
                .header("x-csrf-token", "Fetch"),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous.header("x-csrf-token").is_none());
    let wrong = h
        .send(
            h.request(Method::POST, &format!("{BASE}/ServiceRequestCollection"))
                .basic_auth("CONDUIT_API", Some("wrong"))
                .json(&ticket("k0")),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let no_token = h
        .send(sap(&h, Method::POST, "/ServiceRequestCollection").json(&ticket("k1")))
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    assert_eq!(no_token.header("x-csrf-token"), Some("Required"));

    let (token, cookie) = fetch_csrf(&h).await;
    assert!(cookie.contains("SAP_SESSIONID_MY000001_100="), "{cookie}");
    let no_cookie = h
        .send(
            sap(&h, Method::POST, "/ServiceRequestCollection")
                .header("x-csrf-token", &token)
                .json(&ticket("k1")),
        )
        .await;
    assert_eq!(
        no_cookie.status,
        StatusCode::FORBIDDEN,
        "the token belongs to its session"
    );
    let created = h
        .send(
            sap(&h, Method::POST, "/ServiceRequestCollection")
                .header("x-csrf-token", &token)
                .header("cookie", &cookie)
                .json(&ticket("k1")),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let object_id = created.body["d"]["results"]["ObjectID"]
        .as_str()
        .expect("ObjectID")
        .to_owned();
    assert_eq!(object_id.len(), 32);
    assert!(created.body["d"]["results"]["ID"].as_str().is_some());
    let location = created.header("location").expect("location");
    assert!(
        location.ends_with(&format!("/ServiceRequestCollection('{object_id}')")),
        "{location}"
    );
    let records = h.records("sap").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["id"], object_id.as_str());
}

#[tokio::test]
async fn validation_answers_odata_errors_and_lookups_find_the_ref() {
    let h = Harness::start().await;
    let (token, cookie) = fetch_csrf(&h).await;
    let post = |path: &str, body: serde_json::Value| {
        sap(&h, Method::POST, path)
            .header("x-csrf-token", &token)
            .header("cookie", &cookie)
            .json(&body)
    };
    let no_name = h
        .send(post(
            "/ServiceRequestCollection",
            json!({"ServicePriorityCode": "3"}),
        ))
        .await;
    assert_eq!(no_name.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_name.body["error"]["message"]["lang"], "en");
    assert!(
        no_name.body["error"]["message"]["value"]
            .as_str()
            .unwrap_or("")
            .contains("Name")
    );
    let unknown = h
        .send(post(
            "/ServiceRequestCollection",
            json!({"Name": "x", "Colour": "red"}),
        ))
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let bad_priority = h
        .send(post(
            "/ServiceRequestCollection",
            json!({"Name": "x", "ServicePriorityCode": "9"}),
        ))
        .await;
    assert_eq!(bad_priority.status, StatusCode::BAD_REQUEST);

    for reference in ["k-a", "k-b"] {
        let created = h
            .send(post("/ServiceRequestCollection", ticket(reference)))
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
    }
    let listed = h
        .send(sap(
            &h,
            Method::GET,
            "/ServiceRequestCollection?$format=json&$orderby=LastChangeDateTime%20desc&$top=20&$expand=ServiceRequestDescription",
        ))
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let results = listed.body["d"]["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    let hit = results
        .iter()
        .find(|r| {
            r["ServiceRequestDescription"][0]["Text"]
                .as_str()
                .is_some_and(|t| t.contains("Ref: k-a"))
        })
        .expect("found by its ref");
    let parent = hit["ObjectID"].as_str().expect("id").to_owned();

    let note = h
        .send(post(
            "/ServiceRequestTextCollectionCollection",
            json!({"ParentObjectID": parent, "TypeCode": "10008", "Text": "Summary\nRef: k-note"}),
        ))
        .await;
    assert_eq!(note.status, StatusCode::CREATED, "{}", note.body);
    let orphan = h
        .send(post(
            "/ServiceRequestTextCollectionCollection",
            json!({"ParentObjectID": "00163E000000000000000000000000", "TypeCode": "10008", "Text": "x"}),
        ))
        .await;
    assert_eq!(orphan.status, StatusCode::BAD_REQUEST);
    let texts = h
        .send(sap(
            &h,
            Method::GET,
            &format!(
                "/ServiceRequestCollection('{parent}')/ServiceRequestDescription?$format=json"
            ),
        ))
        .await;
    let texts = texts.body["d"]["results"]
        .as_array()
        .expect("texts")
        .clone();
    assert!(texts.iter().any(|t| {
        t["Text"]
            .as_str()
            .is_some_and(|x| x.contains("Ref: k-note"))
    }));

    let call = h
        .send(post(
            "/PhoneCallCollection",
            json!({"Subject": "AI call", "Phone": "+61412345678", "StartDateTime": "2026-12-05T03:07:32Z",
                "EndDateTime": "2026-12-05T03:12:44Z", "PhoneCallNotes": [{"Text": "Ref: k-call"}]}),
        ))
        .await;
    assert_eq!(call.status, StatusCode::CREATED, "{}", call.body);
    let bad_time = h
        .send(post(
            "/PhoneCallCollection",
            json!({"Subject": "x", "StartDateTime": "yesterday"}),
        ))
        .await;
    assert_eq!(bad_time.status, StatusCode::BAD_REQUEST);
    let calls = h
        .send(sap(&h, Method::GET, "/PhoneCallCollection?$format=json&$orderby=LastChangeDateTime%20desc&$top=20&$expand=PhoneCallNotes"))
        .await;
    assert_eq!(
        calls.body["d"]["results"][0]["PhoneCallNotes"][0]["Text"],
        "Ref: k-call"
    );
    let received = h.received("sap").await;
    assert!(received.iter().all(
        |r| r["headers"].get("x-csrf-token").is_none() && r["headers"].get("cookie").is_none()
    ));
}

#[tokio::test]
async fn a_forced_throttle_answers_429_with_retry_after() {
    let h = Harness::start().await;
    h.fault(json!({"provider": "sap", "kind": "rate_limit", "retry_after_secs": 3}))
        .await;
    let answer = h
        .send(sap(&h, Method::GET, "/ServiceRequestCollection"))
        .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.header("retry-after"), Some("3"));
    assert!(answer.body["error"]["message"]["value"].is_string());
}

#[tokio::test]
async fn an_expired_csrf_session_is_refused_until_a_new_fetch() {
    let h = Harness::start().await;
    let (token, cookie) = fetch_csrf(&h).await;
    let ended = h.admin_post("dispatch/csrf/expire", json!({})).await;
    assert_eq!(ended.body["ended"], 1);
    let stale = h
        .send(
            sap(&h, Method::POST, "/ServiceRequestCollection")
                .header("x-csrf-token", &token)
                .header("cookie", &cookie)
                .json(&ticket("k-stale")),
        )
        .await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN);
    assert_eq!(stale.header("x-csrf-token"), Some("Required"));
    let (token, cookie) = fetch_csrf(&h).await;
    let fresh = h
        .send(
            sap(&h, Method::POST, "/ServiceRequestCollection")
                .header("x-csrf-token", &token)
                .header("cookie", &cookie)
                .json(&ticket("k-stale")),
        )
        .await;
    assert_eq!(fresh.status, StatusCode::CREATED);
}
