//! The HubSpot stand-in's answers that Conduit's happy paths do not reach, against
//! HubSpot's published descriptions: its error bodies (400 validation, 401, 403
//! MISSING_SCOPES, 404, 409, 429, 207 partial batches), single-record routes, property
//! get, refresh-token info and the OAuth token endpoint's errors. The Conduit-driven
//! flows are checked in `tests/api/contract.rs`.

use reqwest::{Client, Method};
use sandbox::Sandbox;
use sandbox::oauth::OAuthProvider;
use serde_json::{Value, json};

const PAT: &str = "pat-na1-sandbox-0001";

struct Hub {
    base: String,
    http: Client,
}

impl Hub {
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api.hubapi.com{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/api.hubapi.com{path}", self.base))
            .form(form)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn the_hubspot_stand_ins_other_answers_conform_to_hubspots_specs() {
    let sandbox = Sandbox::start(0).await.expect("sandbox");
    let state = sandbox.state();
    let hub = Hub {
        base: sandbox.url(),
        http: Client::builder().no_proxy().build().expect("client"),
    };
    state.recorder().start();
    // Single-record routes and property get (Conduit batches; these are the rest).
    let (status, c) = hub
        .call(
            PAT,
            Method::POST,
            "/crm/v3/objects/contacts",
            Some(json!({"properties": {"email": "one@acme.test", "firstname": "One"}})),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let id = c["id"].as_str().expect("id").to_owned();
    let one = format!("/crm/v3/objects/contacts/{id}");
    // The marker property Conduit's pushes create (as Conduit sends it).
    let marker = json!({
        "name": "conduit_id", "label": "Conduit ID", "type": "string", "fieldType": "text",
        "groupName": "contactinformation", "hasUniqueValue": true,
        "description": "The Conduit record this record is synced with.",
    });
    let too_many: Vec<Value> = (0..101).map(|i| json!({"id": i.to_string()})).collect();
    let steps: Vec<(Method, String, Option<Value>, u16)> = vec![
        (
            Method::GET,
            format!("{one}?properties=email,phone"),
            None,
            200,
        ),
        (
            Method::PATCH,
            one.clone(),
            Some(json!({"properties": {"phone": "+33 1 23"}})),
            200,
        ),
        (
            Method::GET,
            "/crm/v3/properties/contacts/email".into(),
            None,
            200,
        ),
        (
            Method::GET,
            "/crm/v3/objects/companies?limit=2".into(),
            None,
            200,
        ),
        (
            Method::POST,
            "/crm/v3/properties/contacts".into(),
            Some(marker.clone()),
            201,
        ),
        // Errors: validation, conflicts, not found, partial batches.
        (
            Method::POST,
            "/crm/v3/properties/contacts".into(),
            Some(marker),
            409,
        ),
        (
            Method::POST,
            "/crm/v3/objects/contacts".into(),
            Some(json!({"properties": {"nope": "x"}})),
            400,
        ),
        (
            Method::POST,
            "/crm/v3/objects/contacts".into(),
            Some(json!({"properties": {"email": "ONE@acme.test"}})),
            409,
        ),
        (
            Method::GET,
            "/crm/v3/properties/contacts/no_such_property".into(),
            None,
            404,
        ),
        (
            Method::GET,
            "/crm/v3/objects/contacts/99999999".into(),
            None,
            404,
        ),
        (
            Method::POST,
            "/crm/v3/objects/contacts/batch/read".into(),
            Some(json!({"inputs": too_many, "properties": ["email"]})),
            400,
        ),
        (
            Method::POST,
            "/crm/v3/objects/contacts/batch/read".into(),
            Some(json!({"inputs": [{"id": id}, {"id": "99999999"}], "properties": ["email"]})),
            207,
        ),
        (
            Method::POST,
            "/crm/v3/objects/contacts/search".into(),
            Some(json!({"after": "10000", "limit": 10, "properties": ["email"]})),
            400,
        ),
        (Method::DELETE, one.clone(), None, 204),
    ];
    for (method, path, body, want) in steps {
        let (status, answer) = hub.call(PAT, method.clone(), &path, body).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
    }

    // OAuth: a read-only grant (403 on writes), token info, refresh, errors, 401, 429.
    let ok = |(s, v): (u16, Value), want: u16| assert_eq!(s, want, "{v}");
    let grant = state
        .seed_grant(
            OAuthProvider::Hubspot,
            "hubspot-sandbox-client-id",
            None,
            &["oauth", "crm.objects.contacts.read"],
        )
        .expect("grant");
    let access = grant.access_token.clone();
    let refresh = grant.refresh_token.clone();
    ok(
        hub.call(
            &access,
            Method::POST,
            "/crm/v3/objects/contacts/batch/create",
            Some(json!({"inputs": [{"properties": {"email": "two@acme.test"}}]})),
        )
        .await,
        403,
    );
    ok(
        hub.call(&access, Method::GET, "/crm/v3/objects/companies", None)
            .await,
        403,
    );
    ok(
        hub.call(
            &access,
            Method::GET,
            &format!("/oauth/v1/access-tokens/{access}"),
            None,
        )
        .await,
        200,
    );
    ok(
        hub.call(
            &access,
            Method::GET,
            &format!("/oauth/v1/refresh-tokens/{refresh}"),
            None,
        )
        .await,
        200,
    );
    ok(
        hub.call(
            &access,
            Method::GET,
            "/oauth/v1/access-tokens/not-a-token",
            None,
        )
        .await,
        404,
    );
    ok(
        hub.form(
            "/oauth/v1/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "not-a-token"),
                ("client_id", "hubspot-sandbox-client-id"),
                ("client_secret", "hubspot-sandbox-client-secret"),
            ],
        )
        .await,
        400,
    );
    ok(
        hub.call("not-a-token", Method::GET, "/crm/v3/objects/contacts", None)
            .await,
        401,
    );
    let mut limited = false;
    for _ in 0..120 {
        let (s, _) = hub
            .call(
                &access,
                Method::GET,
                "/crm/v3/objects/contacts?limit=1",
                None,
            )
            .await;
        if s == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "HubSpot's 10-second budget answers 429");

    let exchanges = state.recorder().stop();
    let specs = contract::Specs::load("hubspot").expect("HubSpot specs");
    let report = contract::check_all(&specs, &exchanges);
    println!("{report}");
    let statuses: std::collections::BTreeSet<u16> = exchanges.iter().map(|e| e.status).collect();
    for s in [200, 201, 204, 207, 400, 401, 403, 404, 409, 429] {
        assert!(statuses.contains(&s), "no {s} answer was checked");
    }
    assert!(
        report.passed(),
        "HubSpot stand-in answers that break the published specs:\n{report}"
    );
    sandbox.shutdown().await;
}

/// The associations v4 stand-in (deals to companies and contacts) against HubSpot's
/// `crm-associations-v4.json`: batch read (200, and 207 for a deal without any), batch
/// create with types, default associations, archive, and its 400 for an unknown id.
#[tokio::test]
async fn the_hubspot_associations_stand_in_conforms_to_the_v4_spec() {
    let sandbox = Sandbox::start(0).await.expect("sandbox");
    let state = sandbox.state();
    let hub = Hub {
        base: sandbox.url(),
        http: Client::builder().no_proxy().build().expect("client"),
    };
    let portal = 62_515;
    let deals = state.seed_hubspot(portal, sandbox::CrmObject::Deals, 2);
    let companies = state.seed_hubspot(portal, sandbox::CrmObject::Companies, 2);
    let contacts = state.seed_hubspot(portal, sandbox::CrmObject::Contacts, 1);
    state.recorder().start();
    let path = |to: &str, op: &str| format!("/crm/v4/associations/deals/{to}/batch/{op}");
    let (status, created) = hub
        .call(
            PAT,
            Method::POST,
            &path("companies", "create"),
            Some(json!({"inputs": [{
                "from": {"id": deals[0]}, "to": {"id": companies[0]},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 5}],
            }]})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (status, v) = hub
        .call(
            PAT,
            Method::POST,
            &path("contacts", "associate/default"),
            Some(json!({"inputs": [{"from": {"id": deals[0]}, "to": {"id": contacts[0]}}]})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, read) = hub
        .call(
            PAT,
            Method::POST,
            &path("companies", "read"),
            Some(json!({"inputs": [{"id": deals[0]}]})),
        )
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(
        read["results"][0]["to"][0]["toObjectId"],
        json!(companies[0])
    );
    let labels: Vec<&Value> = read["results"][0]["to"][0]["associationTypes"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| &t["label"])
        .collect();
    assert!(labels.contains(&&json!("Primary")), "{read}");
    // A deal without associations: a 207 naming it.
    let (status, partial) = hub
        .call(
            PAT,
            Method::POST,
            &path("companies", "read"),
            Some(json!({"inputs": [{"id": deals[0]}, {"id": deals[1]}]})),
        )
        .await;
    assert_eq!(status, 207, "{partial}");
    // An unknown target: the whole request refused, nothing applied.
    let (status, refused) = hub
        .call(
            PAT,
            Method::POST,
            &path("companies", "create"),
            Some(json!({"inputs": [{
                "from": {"id": deals[1]}, "to": {"id": "999999"},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 341}],
            }]})),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["category"], "VALIDATION_ERROR");
    assert!(
        state
            .hubspot_deal_associations(portal, &deals[1], sandbox::CrmObject::Companies)
            .is_empty()
    );
    let (status, _) = hub
        .call(
            PAT,
            Method::POST,
            &path("companies", "archive"),
            Some(json!({"inputs": [{"from": {"id": deals[0]}, "to": [{"id": companies[0]}]}]})),
        )
        .await;
    assert_eq!(status, 204);
    assert!(
        state
            .hubspot_deal_associations(portal, &deals[0], sandbox::CrmObject::Companies)
            .is_empty()
    );
    let _ = &companies[1];
    let exchanges = state.recorder().stop();
    let specs = contract::Specs::load("hubspot").expect("HubSpot specs");
    let report = contract::check_all(&specs, &exchanges);
    println!("{report}");
    assert!(
        report.passed(),
        "HubSpot associations stand-in answers that break the v4 spec:\n{report}"
    );
    sandbox.shutdown().await;
}
