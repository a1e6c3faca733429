//! The Pipedrive persons/organizations stand-in against Pipedrive's own OpenAPI
//! descriptions (`specs/pipedrive/`: API v2 for the records and their search, API v1 for
//! the field definitions, the bulk delete and recents): the test's requests and the
//! stand-in's answers, through the sandbox's recorder. The files declare only the 200
//! answers, so the error answers (400, 403, 404, 429) are checked outside the recording
//! against Pipedrive's "Responses" and "Rate limiting" pages.

use reqwest::{Client, Method};
use sandbox::oauth::OAuthProvider;
use sandbox::{PdLimits, PdObject, Sandbox};
use serde_json::{Value, json};

struct Pd {
    base: String,
    http: Client,
    bearer: String,
}

impl Pd {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api.pipedrive.com{path}", self.base))
            .bearer_auth(&self.bearer);
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

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(method, path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(answer["success"], true, "{path}: {answer}");
        answer
    }
}

#[tokio::test]
async fn the_pipedrive_crm_stand_in_conforms_to_pipedrives_descriptions() {
    let sandbox = Sandbox::start(0).await.expect("sandbox");
    let state = sandbox.state();
    let grant = state
        .seed_grant(
            OAuthProvider::Pipedrive,
            "pipedrive-sandbox-client-id",
            None,
            &[
                "base",
                "contacts:full",
                "admin",
                "recents:read",
                "search:read",
            ],
        )
        .expect("grant");
    let pd = Pd {
        base: sandbox.url(),
        http: Client::builder().no_proxy().build().expect("client"),
        bearer: grant.access_token.clone(),
    };
    state.seed_pipedrive("acme", PdObject::Organizations, 3);
    state.seed_pipedrive("acme", PdObject::Persons, 6);
    state.recorder().start();

    // Field metadata, and the marker field a sync creates.
    let field = pd
        .ok(
            Method::POST,
            "/v1/personFields",
            Some(json!({"name": "Conduit ID", "field_type": "varchar", "add_visible_flag": false})),
        )
        .await;
    let key = field["data"]["key"].as_str().expect("key").to_owned();
    pd.ok(Method::GET, "/v1/personFields?start=0&limit=50", None)
        .await;
    pd.ok(Method::GET, "/v1/organizationFields", None).await;

    // Records: create, list with cursor paging, get, update, search.
    let org = pd
        .ok(
            Method::POST,
            "/api/v2/organizations",
            Some(json!({"name": "Contract Org", "visible_to": 3,
                "address": {"value": "Tallinn, Estonia", "locality": "Tallinn"}})),
        )
        .await;
    let org_id = org["data"]["id"].as_u64().expect("org id");
    let person = pd
        .ok(
            Method::POST,
            "/api/v2/persons",
            Some(json!({
                "name": "Ada Contract", "org_id": org_id,
                "emails": [{"value": "ada@contract.example", "primary": true}],
                "phones": [{"value": "+372 555 0100"}],
                "custom_fields": {key.clone(): "conduit-1"},
            })),
        )
        .await;
    let id = person["data"]["id"].as_u64().expect("person id");
    let first = pd
        .ok(
            Method::GET,
            "/api/v2/persons?limit=4&sort_by=update_time&sort_direction=asc&updated_since=2020-01-01T00:00:00Z",
            None,
        )
        .await;
    let cursor = first["additional_data"]["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let second = pd
        .ok(
            Method::GET,
            &format!("/api/v2/persons?limit=4&sort_by=update_time&sort_direction=asc&updated_since=2020-01-01T00:00:00Z&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(second["additional_data"]["next_cursor"], Value::Null);
    assert_eq!(
        first["data"].as_array().map(Vec::len).unwrap_or(0)
            + second["data"].as_array().map(Vec::len).unwrap_or(0),
        7
    );
    let one = pd
        .ok(
            Method::GET,
            &format!("/api/v2/persons/{id}?custom_fields={key}"),
            None,
        )
        .await;
    assert_eq!(one["data"]["custom_fields"][key.as_str()], "conduit-1");
    pd.ok(
        Method::PATCH,
        &format!("/api/v2/persons/{id}"),
        Some(json!({"name": "Ada Contracted", "emails": [{"value": "ada@contract.example"}, {"value": "ada@home.example"}]})),
    )
    .await;
    pd.ok(Method::GET, "/api/v2/organizations?limit=2", None)
        .await;
    pd.ok(
        Method::GET,
        &format!("/api/v2/organizations/{org_id}"),
        None,
    )
    .await;
    pd.ok(
        Method::PATCH,
        &format!("/api/v2/organizations/{org_id}"),
        Some(json!({"name": "Contract Org Ltd", "address": {"value": "Tartu, Estonia"}})),
    )
    .await;
    let found = pd
        .ok(
            Method::GET,
            "/api/v2/persons/search?term=ada%40contract.example&fields=email&exact_match=true&limit=10",
            None,
        )
        .await;
    assert_eq!(found["data"]["items"][0]["item"]["id"], id);
    pd.ok(
        Method::GET,
        "/api/v2/organizations/search?term=Contract&fields=name",
        None,
    )
    .await;

    // Deletions: v2 single, v1 bulk, and recents reporting them.
    pd.ok(Method::DELETE, &format!("/api/v2/persons/{id}"), None)
        .await;
    pd.ok(Method::DELETE, "/v1/persons?ids=1,2", None).await;
    let recents = pd
        .ok(
            Method::GET,
            "/v1/recents?since_timestamp=2020-01-01%2000%3A00%3A00&items=person&start=0&limit=50",
            None,
        )
        .await;
    let inactive = recents["data"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["data"]["active_flag"] == false)
        .count();
    assert_eq!(inactive, 3, "{recents}");
    pd.ok(
        Method::GET,
        "/v1/recents?since_timestamp=2020-01-01%2000%3A00%3A00&items=organization",
        None,
    )
    .await;
    pd.ok(
        Method::DELETE,
        &format!("/api/v2/organizations/{org_id}"),
        None,
    )
    .await;

    let exchanges = state.recorder().stop();
    let specs = contract::Specs::load("pipedrive").expect("Pipedrive specs");
    let report = contract::check_all(&specs, &exchanges);
    println!("{report}");
    assert!(
        report.unmatched.is_empty(),
        "calls the descriptions lack: {report}"
    );
    assert!(report.passed(), "{report}");
    assert!(report.exchanges >= 19, "every call was recorded: {report}");

    // Outside the recording: the error answers the files do not declare.
    let error_shape = |body: &Value| {
        body["success"] == false
            && body["error"].is_string()
            && body["error_info"].is_string()
            && body.get("data") == Some(&Value::Null)
    };
    let (status, missing) = pd.call(Method::GET, "/api/v2/persons/999999", None).await;
    assert_eq!(status, 404);
    assert!(error_shape(&missing), "{missing}");
    let (status, invalid) = pd
        .call(Method::POST, "/api/v2/persons", Some(json!({"emails": []})))
        .await;
    assert_eq!(status, 400);
    assert!(error_shape(&invalid), "{invalid}");
    let (status, _) = pd
        .call(Method::GET, "/api/v2/persons/search?term=a", None)
        .await;
    assert_eq!(status, 400);
    let read_only = state
        .seed_grant(
            OAuthProvider::Pipedrive,
            "pipedrive-sandbox-client-id",
            None,
            &["base", "contacts:read"],
        )
        .expect("grant");
    let reader = Pd {
        bearer: read_only.access_token.clone(),
        base: pd.base.clone(),
        http: pd.http.clone(),
    };
    let (status, refused) = reader
        .call(
            Method::PATCH,
            &format!("/api/v2/organizations/{org_id}"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(refused["error"], "Scope and URL mismatch");
    state.set_pipedrive_limits(
        "acme",
        PdLimits {
            oauth_burst: 1,
            ..PdLimits::default()
        },
    );
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(pd.call(Method::GET, "/api/v2/organizations", None).await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    sandbox.shutdown().await;
}
