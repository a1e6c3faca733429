//! HubSpot CRM stand-in, end to end: reqwest against a started sandbox.

use std::collections::BTreeMap;
use std::time::Instant;

use reqwest::{Client, Method, RequestBuilder, StatusCode};
use sandbox::providers::hubspot_crm::{CRM_CREATE, CRM_LIST, CRM_SEARCH};
use sandbox::{CrmObject, Sandbox};
use serde_json::{Value, json};

const TOKEN: &str = "pat-na1-sandbox-0001";
const PORTAL: u64 = 62515;
const API: &str = "/api.hubapi.com/crm/v3";

struct Harness {
    sandbox: Sandbox,
    client: Client,
}

impl Harness {
    async fn start() -> Self {
        let sandbox = Sandbox::start(0).await.expect("sandbox starts");
        let client = Client::builder().no_proxy().build().expect("client");
        Self { sandbox, client }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{API}{path}", self.sandbox.url()))
            .bearer_auth(TOKEN)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        (status, body)
    }

    /// A search, waiting out HubSpot's 4-per-second search limit when met.
    async fn search(&self, object: &str, body: Value) -> (StatusCode, Value) {
        let path = format!("/objects/{object}/search");
        loop {
            let (status, answer) = self.call(Method::POST, &path, Some(body.clone())).await;
            if status != StatusCode::TOO_MANY_REQUESTS || answer["policyName"] != "SECONDLY" {
                return (status, answer);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

fn assert_hubspot_error(body: &Value, category: &str) {
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["category"], category, "{body}");
    assert!(body["message"].is_string());
    assert!(body["correlationId"].is_string());
}

#[tokio::test]
async fn crud_round_trip() {
    let h = Harness::start().await;
    let (status, created) = h
        .call(
            Method::POST,
            "/objects/contacts",
            Some(json!({"properties": {"email": "ada@acme.test", "firstname": "Ada", "lastname": "Lovelace"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(id.parse::<u64>().is_ok());
    assert_eq!(created["properties"]["email"], "ada@acme.test");
    assert_eq!(created["archived"], false);
    assert_eq!(created["createdAt"], created["updatedAt"]);
    assert_eq!(
        created["properties"]["lastmodifieddate"],
        created["updatedAt"]
    );
    assert_eq!(
        created["properties"]["hs_lastmodifieddate"],
        created["updatedAt"]
    );

    let (status, got) = h
        .call(
            Method::GET,
            &format!("/objects/contacts/{id}?properties=phone,email"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["properties"]["email"], "ada@acme.test");
    assert_eq!(got["properties"]["phone"], Value::Null);
    assert_eq!(got["properties"]["hs_object_id"], id.as_str());

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, updated) = h
        .call(
            Method::PATCH,
            &format!("/objects/contacts/{id}"),
            Some(json!({"properties": {"phone": "+1 555 0100", "firstname": ""}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["properties"]["phone"], "+1 555 0100");
    assert!(updated["properties"].get("firstname").is_none());
    assert!(updated["updatedAt"].as_str() > created["updatedAt"].as_str());

    let (status, _) = h
        .call(Method::DELETE, &format!("/objects/contacts/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = h
        .call(Method::GET, &format!("/objects/contacts/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_hubspot_error(&body, "OBJECT_NOT_FOUND");
    let (status, body) = h
        .call(Method::GET, "/objects/contacts?archived=true", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"][0]["id"], id.as_str());
    assert_eq!(body["results"][0]["archived"], true);

    let record = h
        .sandbox
        .state()
        .hubspot_record(PORTAL, CrmObject::Contacts, &id)
        .expect("record kept");
    assert!(record.archived);
    assert_eq!(h.sandbox.state().calls(CRM_CREATE), 1);
}

#[tokio::test]
async fn unknown_objects_and_bad_json() {
    let h = Harness::start().await;
    let (status, body) = h.call(Method::GET, "/objects/widgets", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_hubspot_error(&body, "OBJECT_NOT_FOUND");
    let response = h
        .request(Method::POST, "/objects/contacts")
        .header("content-type", "application/json")
        .body("{\"properties\": {")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("JSON");
    assert_hubspot_error(&body, "VALIDATION_ERROR");
}

#[tokio::test]
async fn list_pages_through_everything() {
    let h = Harness::start().await;
    let ids = h
        .sandbox
        .state()
        .seed_hubspot(PORTAL, CrmObject::Companies, 25);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(after) => format!("/objects/companies?limit=10&after={after}"),
            None => "/objects/companies?limit=10&properties=name".to_owned(),
        };
        let (status, body) = h.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK);
        for record in body["results"].as_array().expect("results") {
            seen.push(record["id"].as_str().expect("id").to_owned());
            assert!(record["properties"]["name"].is_string());
        }
        match body["paging"]["next"]["after"].as_str() {
            Some(next) => {
                assert!(body["paging"]["next"]["link"].is_string());
                after = Some(next.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let (status, body) = h
        .call(Method::GET, "/objects/companies?limit=101", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_hubspot_error(&body, "VALIDATION_ERROR");
    let (_, body) = h.call(Method::GET, "/objects/companies", None).await;
    assert_eq!(body["results"].as_array().map(Vec::len), Some(10));
    // Another portal sees nothing.
    assert!(
        h.sandbox
            .state()
            .hubspot_records(777, CrmObject::Companies)
            .is_empty()
    );
}

#[tokio::test]
async fn batches_and_their_limits() {
    let h = Harness::start().await;
    let inputs: Vec<Value> = (0..3)
        .map(|i| json!({"properties": {"name": format!("Batch {i}"), "numberofemployees": i * 10}}))
        .collect();
    let (status, body) = h
        .call(
            Method::POST,
            "/objects/companies/batch/create",
            Some(json!({"inputs": inputs})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["status"], "COMPLETE");
    assert!(body["startedAt"].is_string() && body["completedAt"].is_string());
    let ids: Vec<String> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(body["results"][2]["properties"]["numberofemployees"], "20");

    let updates: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "properties": {"city": "Berlin"}}))
        .collect();
    let (status, body) = h
        .call(
            Method::POST,
            "/objects/companies/batch/update",
            Some(json!({"inputs": updates})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"][0]["properties"]["city"], "Berlin");

    let reads: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
    let (status, body) = h
        .call(
            Method::POST,
            "/objects/companies/batch/read",
            Some(json!({"inputs": reads, "properties": ["city"], "propertiesWithHistory": []})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"].as_array().map(Vec::len), Some(3));
    assert_eq!(body["results"][1]["properties"]["city"], "Berlin");

    let (status, _) = h
        .call(
            Method::POST,
            "/objects/companies/batch/archive",
            Some(json!({"inputs": [{"id": ids[0]}]})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = h
        .call(
            Method::POST,
            "/objects/companies/batch/read",
            Some(json!({"inputs": reads, "properties": []})),
        )
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert_eq!(body["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["errors"][0]["context"]["ids"][0], ids[0].as_str());

    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"properties": {"name": i.to_string()}}))
        .collect();
    let (status, body) = h
        .call(
            Method::POST,
            "/objects/companies/batch/create",
            Some(json!({"inputs": too_many})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_hubspot_error(&body, "VALIDATION_ERROR");
    assert_eq!(
        h.sandbox
            .state()
            .hubspot_records(PORTAL, CrmObject::Companies)
            .len(),
        3
    );
}

#[tokio::test]
async fn search_filters_and_sorts() {
    let h = Harness::start().await;
    for (email, first, stage) in [
        ("ada@acme.test", "Ada", "lead"),
        ("bob@globex.test", "Bob", "customer"),
        ("cy@acme.test", "Cy", "customer"),
    ] {
        let (status, _) = h
            .call(
                Method::POST,
                "/objects/contacts",
                Some(json!({"properties": {"email": email, "firstname": first, "lifecyclestage": stage}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let search = |body: Value| h.search("contacts", body);

    let (status, body) = search(json!({
        "filterGroups": [{"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "customer"}]}],
        "sorts": [{"propertyName": "firstname", "direction": "DESCENDING"}],
        "properties": ["firstname", "lifecyclestage"],
        "limit": 10
    }))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 2);
    assert_eq!(body["results"][0]["properties"]["firstname"], "Cy");
    assert_eq!(body["results"][1]["properties"]["firstname"], "Bob");

    // OR of groups; CONTAINS_TOKEN; NEQ; HAS_PROPERTY / NOT_HAS_PROPERTY.
    let (_, body) = search(json!({"filterGroups": [
        {"filters": [{"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "globex"}]},
        {"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "ada"}]}
    ]}))
    .await;
    assert_eq!(body["total"], 2);
    let (_, body) = search(json!({"filterGroups": [{"filters": [
        {"propertyName": "lifecyclestage", "operator": "NEQ", "value": "lead"},
        {"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "*acme*"}
    ]}]}))
    .await;
    assert_eq!(body["total"], 1);
    assert_eq!(body["results"][0]["properties"]["firstname"], "Cy");
    let (_, body) = search(json!({"filterGroups": [{"filters": [{"propertyName": "phone", "operator": "NOT_HAS_PROPERTY"}]}]})).await;
    assert_eq!(body["total"], 3);
    let (_, body) = search(json!({"filterGroups": [{"filters": [{"propertyName": "phone", "operator": "HAS_PROPERTY"}]}]})).await;
    assert_eq!(body["total"], 0);

    // Modified-since as epoch milliseconds, compared as times.
    let records = h
        .sandbox
        .state()
        .hubspot_records(PORTAL, CrmObject::Contacts);
    let bob = records
        .iter()
        .find(|r| r.properties["firstname"] == "Bob")
        .expect("bob");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let before = records
        .iter()
        .filter_map(|r| sandbox::providers::hubspot_crm::parse_time(&r.updated_at))
        .max()
        .expect("time");
    let updated = h
        .sandbox
        .state()
        .update_hubspot_record(
            PORTAL,
            CrmObject::Contacts,
            &bob.id,
            &BTreeMap::from([("jobtitle".to_owned(), "CTO".to_owned())]),
        )
        .expect("updated");
    assert!(updated.updated_at > bob.updated_at);
    let (_, body) = search(json!({
        "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GT", "value": before.to_string()}]}],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]
    }))
    .await;
    assert_eq!(body["total"], 1);
    assert_eq!(body["results"][0]["id"], bob.id.as_str());

    let (status, body) = search(json!({"limit": 201})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_hubspot_error(&body, "VALIDATION_ERROR");
    assert!(h.sandbox.state().calls(CRM_SEARCH) >= 7);
}

#[tokio::test]
async fn search_stops_at_ten_thousand() {
    let h = Harness::start().await;
    let started = Instant::now();
    let ids = h
        .sandbox
        .state()
        .seed_hubspot(PORTAL, CrmObject::Contacts, 100_000);
    let seeded_in = started.elapsed();
    assert_eq!(ids.len(), 100_000);
    assert!(seeded_in.as_secs_f64() < 2.0, "seeding took {seeded_in:?}");

    let (status, body) = h
        .call(
            Method::POST,
            "/objects/contacts/search",
            Some(json!({"limit": 200, "after": "9800"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 100_000);
    assert_eq!(body["results"].as_array().map(Vec::len), Some(200));
    assert_eq!(body["paging"]["next"]["after"], "10000");
    let (status, body) = h
        .call(
            Method::POST,
            "/objects/contacts/search",
            Some(json!({"limit": 200, "after": "10000"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_hubspot_error(&body, "VALIDATION_ERROR");
}

#[tokio::test]
async fn properties_are_described() {
    let h = Harness::start().await;
    let (status, body) = h.call(Method::GET, "/properties/contacts", None).await;
    assert_eq!(status, StatusCode::OK);
    let results = body["results"].as_array().expect("results");
    let stage = results
        .iter()
        .find(|p| p["name"] == "lifecyclestage")
        .expect("stage");
    assert_eq!(stage["type"], "enumeration");
    assert!(stage["options"].as_array().is_some_and(|o| o.len() > 3));
    for name in [
        "email",
        "firstname",
        "lastname",
        "phone",
        "company",
        "jobtitle",
        "lastmodifieddate",
        "createdate",
    ] {
        assert!(results.iter().any(|p| p["name"] == name), "{name}");
    }
    let (_, body) = h.call(Method::GET, "/properties/companies", None).await;
    let results = body["results"].as_array().expect("results");
    let employees = results
        .iter()
        .find(|p| p["name"] == "numberofemployees")
        .expect("n");
    assert_eq!(employees["type"], "number");
    assert!(results.iter().any(|p| p["name"] == "hs_lastmodifieddate"));
    let (status, _) = h.call(Method::GET, "/properties/widgets", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn burst_meets_the_rate_limit() {
    let h = Harness::start().await;
    let mut statuses = Vec::new();
    for _ in 0..115 {
        let response = h
            .request(Method::GET, "/objects/contacts?limit=1")
            .send()
            .await
            .expect("send");
        assert!(
            response
                .headers()
                .contains_key("x-hubspot-ratelimit-remaining")
        );
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(body["errorType"], "RATE_LIMIT");
            assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
        }
        statuses.push(status);
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 110);
    assert_eq!(statuses.len() - ok, 5);
    assert_eq!(h.sandbox.state().calls(CRM_LIST), 115);
}

#[tokio::test]
async fn auth_is_required() {
    let h = Harness::start().await;
    let url = format!("{}{API}/objects/contacts", h.sandbox.url());
    for request in [h.client.get(&url), h.client.get(&url).bearer_auth("nope")] {
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.expect("JSON");
        assert_hubspot_error(&body, "INVALID_AUTHENTICATION");
    }
}

#[tokio::test]
async fn oauth_tokens_act_for_their_portal() {
    let h = Harness::start().await;
    let seeded = h
        .sandbox
        .state()
        .seed_grant(
            sandbox::OAuthProvider::Hubspot,
            "hubspot-sandbox-client-id",
            None,
            &["oauth", "crm.objects.contacts.read"],
        )
        .expect("grant");
    let token = seeded.access_token;
    h.sandbox
        .state()
        .seed_hubspot(PORTAL, CrmObject::Contacts, 2);
    let response = h
        .client
        .get(format!("{}{API}/objects/contacts", h.sandbox.url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn malformed_knob_and_control_routes() {
    let h = Harness::start().await;
    let base = h.sandbox.url();
    let seeded: Value = h
        .client
        .post(format!("{base}/_sandbox/hubspot/seed"))
        .json(&json!({"object": "contacts", "count": 3}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    let id = seeded["ids"][0].as_str().expect("id").to_owned();
    let response = h
        .client
        .post(format!("{base}/_sandbox/hubspot/update"))
        .json(&json!({"object": "contacts", "id": id, "properties": {"firstname": "Changed"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let response = h
        .client
        .post(format!("{base}/_sandbox/hubspot/archive"))
        .json(&json!({"object": "contacts", "id": seeded["ids"][1]}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let listed: Value = h
        .client
        .get(format!("{base}/_sandbox/hubspot/records?object=contacts"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed["results"][0]["properties"]["firstname"], "Changed");
    assert_eq!(listed["results"][1]["archived"], true);

    let response = h
        .client
        .post(format!("{base}/_sandbox/hubspot/malformed"))
        .json(&json!({"route": "hubspot.crm_list", "count": 1}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let text = h
        .request(Method::GET, "/objects/contacts")
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(serde_json::from_str::<Value>(&text).is_err());
    let (status, body) = h.call(Method::GET, "/objects/contacts", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn faults_apply_and_reset_empties_portals() {
    let h = Harness::start().await;
    h.sandbox
        .state()
        .seed_hubspot(PORTAL, CrmObject::Contacts, 3);
    h.sandbox
        .state()
        .force_status(503, 1, Some(sandbox::Provider::Hubspot))
        .expect("fault");
    let (status, body) = h.call(Method::GET, "/objects/contacts", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "error");
    let (status, body) = h.call(Method::GET, "/objects/contacts", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"].as_array().map(Vec::len), Some(3));
    h.sandbox.state().reset();
    assert!(
        h.sandbox
            .state()
            .hubspot_records(PORTAL, CrmObject::Contacts)
            .is_empty()
    );
    let (_, body) = h.call(Method::GET, "/objects/contacts", None).await;
    assert_eq!(body["results"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn contact_emails_are_unique() {
    let h = Harness::start().await;
    let (status, first) = h
        .call(
            Method::POST,
            "/objects/contacts",
            Some(json!({"properties": {"email": "ada@acme.test"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = h
        .call(
            Method::POST,
            "/objects/contacts",
            Some(json!({"properties": {"email": "ADA@acme.test"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_hubspot_error(&body, "CONFLICT");
    let id = first["id"].as_str().expect("id");
    assert!(body["message"].as_str().is_some_and(|m| m.ends_with(id)));
    // Re-saving its own email is fine; batches see existing and in-batch duplicates.
    let (status, _) = h
        .call(
            Method::PATCH,
            &format!("/objects/contacts/{id}"),
            Some(json!({"properties": {"email": "ada@acme.test"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h
        .call(
            Method::POST,
            "/objects/contacts/batch/create",
            Some(json!({"inputs": [{"properties": {"email": "x@acme.test"}}, {"properties": {"email": "x@acme.test"}}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Companies have no such rule.
    for _ in 0..2 {
        let (status, _) = h
            .call(
                Method::POST,
                "/objects/companies",
                Some(json!({"properties": {"phone": "+1 555 0100"}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    assert_eq!(
        h.sandbox
            .state()
            .hubspot_records(PORTAL, CrmObject::Contacts)
            .len(),
        1
    );
}

#[tokio::test]
async fn search_in_not_in_and_between() {
    let h = Harness::start().await;
    for (first, stage, employees) in [
        ("Ada", "lead", "10"),
        ("Bob", "customer", "250"),
        ("Cy", "opportunity", "5000"),
    ] {
        let (status, _) = h
            .call(
                Method::POST,
                "/objects/contacts",
                Some(json!({"properties": {"firstname": first, "lifecyclestage": stage, "jobtitle": employees}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let names = |body: &Value| -> Vec<String> {
        body["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                r["properties"]["firstname"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    let filter = |f: Value| {
        json!({"filterGroups": [{"filters": [f]}], "properties": ["firstname"],
               "sorts": [{"propertyName": "firstname", "direction": "ASCENDING"}]})
    };
    let (status, body) = h
        .search(
            "contacts",
            filter(json!({"propertyName": "lifecyclestage", "operator": "IN", "values": ["lead", "CUSTOMER"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&body), ["Ada", "Bob"]);
    let (_, body) = h
        .search(
            "contacts",
            filter(
                json!({"propertyName": "lifecyclestage", "operator": "NOT_IN", "values": ["lead"]}),
            ),
        )
        .await;
    assert_eq!(names(&body), ["Bob", "Cy"]);
    // BETWEEN is inclusive and numeric when both ends are numbers.
    let (_, body) = h
        .search(
            "contacts",
            filter(json!({"propertyName": "jobtitle", "operator": "BETWEEN", "value": "10", "highValue": "250"})),
        )
        .await;
    assert_eq!(names(&body), ["Ada", "Bob"]);
    // Dates: a window on lastmodifieddate holding everything.
    let (_, body) = h
        .search(
            "contacts",
            filter(
                json!({"propertyName": "lastmodifieddate", "operator": "BETWEEN",
                          "value": "2020-01-01T00:00:00Z", "highValue": "4102444800000"}),
            ),
        )
        .await;
    assert_eq!(body["total"], 3);
    for bad in [
        json!({"propertyName": "lifecyclestage", "operator": "IN", "values": []}),
        json!({"propertyName": "lifecyclestage", "operator": "IN", "value": "lead"}),
        json!({"propertyName": "jobtitle", "operator": "BETWEEN", "value": "1"}),
    ] {
        let (status, body) = h.search("contacts", filter(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_hubspot_error(&body, "VALIDATION_ERROR");
    }
}

#[tokio::test]
async fn property_definitions_are_enforced() {
    let h = Harness::start().await;
    let (status, body) = h
        .call(Method::GET, "/properties/contacts/email", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "email");
    assert_eq!(body["type"], "string");
    assert_eq!(body["fieldType"], "text");
    let (_, body) = h
        .call(Method::GET, "/properties/contacts/date_of_birth", None)
        .await;
    assert_eq!(body["type"], "date");
    let (_, body) = h
        .call(Method::GET, "/properties/companies/industry", None)
        .await;
    assert_eq!(body["type"], "enumeration");
    assert!(body["options"].as_array().is_some_and(|o| o.len() > 5));
    let (status, body) = h
        .call(Method::GET, "/properties/contacts/favourite_colour", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_hubspot_error(&body, "OBJECT_NOT_FOUND");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Unable to find property favourite_colour"))
    );

    // Writing an undefined property: HubSpot's PROPERTY_DOESNT_EXIST.
    let (status, body) = h
        .call(
            Method::POST,
            "/objects/contacts",
            Some(json!({"properties": {"email": "ada@acme.test", "favourite_colour": "teal"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_hubspot_error(&body, "VALIDATION_ERROR");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Property values were not valid: ["))
    );
    assert_eq!(body["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
    assert_eq!(
        body["errors"][0]["message"],
        "Property \"favourite_colour\" does not exist"
    );
    assert_eq!(
        body["errors"][0]["context"]["propertyName"][0],
        "favourite_colour"
    );
    // A batch naming one fails as a whole.
    let (status, body) = h
        .call(
            Method::POST,
            "/objects/contacts/batch/create",
            Some(json!({"inputs": [{"properties": {"email": "ok@acme.test"}},
                                   {"properties": {"favourite_colour": "red"}}]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
    assert!(
        h.sandbox
            .state()
            .hubspot_records(PORTAL, CrmObject::Contacts)
            .is_empty()
    );

    // Define it; then writes work.
    let definition = json!({"name": "favourite_colour", "label": "Favourite colour", "type": "string",
                            "fieldType": "text", "groupName": "contactinformation", "hasUniqueValue": false});
    let (status, body) = h
        .call(
            Method::POST,
            "/properties/contacts",
            Some(definition.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["name"], "favourite_colour");
    assert_eq!(body["hasUniqueValue"], false);
    let (status, body) = h
        .call(Method::POST, "/properties/contacts", Some(definition))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["status"], "error");
    let (status, body) = h.call(Method::GET, "/properties/contacts", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["results"]
            .as_array()
            .expect("results")
            .iter()
            .any(|p| p["name"] == "favourite_colour")
    );
    let (status, created) = h
        .call(
            Method::POST,
            "/objects/contacts",
            Some(json!({"properties": {"email": "ada@acme.test", "favourite_colour": "teal"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["properties"]["favourite_colour"], "teal");
    let id = created["id"].as_str().expect("id");
    let (status, _) = h
        .call(
            Method::PATCH,
            &format!("/objects/contacts/{id}"),
            Some(json!({"properties": {"shoe_size": "44"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A company does not have the contact's property.
    let (status, _) = h
        .call(
            Method::POST,
            "/objects/companies",
            Some(json!({"properties": {"favourite_colour": "x"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h
        .call(
            Method::POST,
            "/properties/contacts",
            Some(json!({"name": "Bad Name", "label": "x",
              "type": "string", "fieldType": "text", "groupName": "contactinformation"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unique_custom_properties_conflict() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    assert!(state.hubspot_define_property(PORTAL, CrmObject::Companies, "conduit_id", true));
    assert!(!state.hubspot_define_property(PORTAL, CrmObject::Companies, "conduit_id", true));
    assert!(!state.hubspot_define_property(PORTAL, CrmObject::Companies, "name", false));
    let (_, body) = h
        .call(Method::GET, "/properties/companies/conduit_id", None)
        .await;
    assert_eq!(body["hasUniqueValue"], true);
    let create = |value: &str| {
        h.call(
            Method::POST,
            "/objects/companies",
            Some(json!({"properties": {"name": "Globex", "conduit_id": value}})),
        )
    };
    let (status, first) = create("c-1").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = create("C-1").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_hubspot_error(&body, "CONFLICT");
    let first_id = first["id"].as_str().expect("id");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.ends_with(first_id))
    );
    let (status, _) = h
        .call(
            Method::POST,
            "/objects/companies/batch/create",
            Some(json!({"inputs": [{"properties": {"conduit_id": "c-2"}}, {"properties": {"conduit_id": "c-2"}}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = h
        .call(
            Method::POST,
            "/objects/companies/batch/update",
            Some(json!({"inputs": [{"id": first_id, "properties": {"conduit_id": "c-1", "city": "Paris"}}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Archiving frees the value.
    let (status, _) = h
        .call(
            Method::DELETE,
            &format!("/objects/companies/{first_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = create("c-1").await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn search_has_its_own_per_second_limit() {
    let h = Harness::start().await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = h
            .request(Method::POST, "/objects/contacts/search")
            .json(&json!({}))
            .send()
            .await
            .expect("send");
        for header in [
            "x-hubspot-ratelimit-max",
            "x-hubspot-ratelimit-remaining",
            "x-hubspot-ratelimit-interval-milliseconds",
            "x-hubspot-ratelimit-daily",
            "x-hubspot-ratelimit-daily-remaining",
        ] {
            assert!(response.headers().contains_key(header), "{header}");
        }
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(body["status"], "error");
            assert_eq!(body["errorType"], "RATE_LIMIT");
            assert_eq!(body["policyName"], "SECONDLY");
            assert!(body["correlationId"].is_string());
        }
        statuses.push(status);
    }
    assert_eq!(statuses[..4], [StatusCode::OK; 4]);
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
    // Other routes are not held back by it.
    let (status, _) = h.call(Method::GET, "/objects/contacts", None).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1050)).await;
    let (status, _) = h
        .call(Method::POST, "/objects/contacts/search", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn every_crm_answer_carries_rate_headers() {
    let h = Harness::start().await;
    for (method, path) in [
        (Method::GET, "/objects/contacts"),
        (Method::GET, "/objects/widgets"),
        (Method::GET, "/objects/contacts/999999"),
        (Method::GET, "/properties/contacts/nope"),
        (Method::POST, "/objects/contacts/batch/create"),
    ] {
        let response = h.request(method, path).send().await.expect("send");
        for header in [
            "x-hubspot-ratelimit-max",
            "x-hubspot-ratelimit-remaining",
            "x-hubspot-ratelimit-interval-milliseconds",
            "x-hubspot-ratelimit-daily",
            "x-hubspot-ratelimit-daily-remaining",
        ] {
            assert!(response.headers().contains_key(header), "{path}: {header}");
        }
    }
}

#[tokio::test]
async fn seeded_records_look_real() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    state.seed_hubspot(PORTAL, CrmObject::Contacts, 300);
    state.seed_hubspot(PORTAL, CrmObject::Companies, 50);
    let contacts = state.hubspot_records(PORTAL, CrmObject::Contacts);
    let emails: std::collections::HashSet<&str> = contacts
        .iter()
        .map(|c| c.properties["email"].as_str())
        .collect();
    assert_eq!(emails.len(), 300);
    let (_, stages) = h
        .call(Method::GET, "/properties/contacts/lifecyclestage", None)
        .await;
    let options: Vec<&str> = stages["options"]
        .as_array()
        .expect("options")
        .iter()
        .filter_map(|o| o["value"].as_str())
        .collect();
    for contact in &contacts {
        for name in [
            "firstname",
            "lastname",
            "phone",
            "jobtitle",
            "company",
            "city",
            "country",
            "date_of_birth",
        ] {
            assert!(!contact.properties[name].is_empty(), "{name}");
        }
        assert!(options.contains(&contact.properties["lifecyclestage"].as_str()));
    }
    let first_names: std::collections::HashSet<&str> = contacts
        .iter()
        .map(|c| c.properties["firstname"].as_str())
        .collect();
    assert!(first_names.len() > 20);
    let companies = state.hubspot_records(PORTAL, CrmObject::Companies);
    let names: std::collections::HashSet<&str> = companies
        .iter()
        .map(|c| c.properties["name"].as_str())
        .collect();
    assert_eq!(names.len(), 50);
    assert!(
        companies
            .iter()
            .all(|c| c.properties["numberofemployees"].parse::<u64>().is_ok())
    );
    // Seeded emails are unique against the API too.
    let email = contacts[0].properties["email"].clone();
    let (status, _) = h
        .call(
            Method::POST,
            "/objects/contacts",
            Some(json!({"properties": {"email": email}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}
