//! The Zoho CRM record stand-in against Zoho's own OpenAPI description of CRM v8
//! (`specs/zoho/`: `record.json` and `fields.json` of zoho/crm-oas): list (pages, page
//! token, `If-Modified-Since`), get, insert, update, upsert, delete, deleted records,
//! search, field metadata and custom-field creation, with their per-record errors — the
//! test's requests and the stand-in's answers, through the sandbox's recorder.
//!
//! `POST /crm/v8/Contacts/upsert` is served by the dispatch-action stand-in
//! (`sandbox/src/actions/zoho.rs`), so the upsert here is on Accounts.

use reqwest::{Client, Method};
use sandbox::Sandbox;
use sandbox::oauth::OAuthProvider;
use sandbox::providers::zoho_crm::{DEFAULT_ZOHO_ORG, ZohoModule};
use serde_json::{Value, json};

const HOST: &str = "www.zohoapis.com";

struct Zoho {
    base: String,
    http: Client,
    token: String,
}

impl Zoho {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, path, body, None).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        since: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/{HOST}{path}", self.base))
            .header("authorization", format!("Zoho-oauthtoken {}", self.token));
        if let Some(since) = since {
            req = req.header("if-modified-since", since);
        }
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
}

#[tokio::test]
async fn the_zoho_crm_stand_in_conforms_to_zohos_v8_description() {
    let sandbox = Sandbox::start(0).await.expect("sandbox");
    let state = sandbox.state();
    let token = state
        .seed_grant(
            OAuthProvider::Zoho,
            "zoho-sandbox-client-id",
            None,
            &["ZohoCRM.modules.ALL", "ZohoCRM.settings.fields.ALL"],
        )
        .expect("grant")
        .access_token;
    let zoho = Zoho {
        base: sandbox.url(),
        http: Client::builder().no_proxy().build().expect("client"),
        token,
    };
    let ids = state.seed_zoho(DEFAULT_ZOHO_ORG, ZohoModule::Contacts, 250);
    let accounts = state.seed_zoho(DEFAULT_ZOHO_ORG, ZohoModule::Accounts, 3);
    state.recorder().start();

    // Field metadata and the marker field.
    let (status, fields) = zoho
        .call(Method::GET, "/crm/v8/settings/fields?module=Contacts", None)
        .await;
    assert_eq!(status, 200, "{fields}");
    let (status, created) = zoho
        .call(
            Method::POST,
            "/crm/v8/settings/fields?module=Contacts",
            Some(json!({"fields": [{
                "field_label": "Conduit Id", "data_type": "text", "length": 64,
                "unique": {"casesensitive": "false"},
            }]})),
        )
        .await;
    assert_eq!(status, 201, "{created}");

    // Lists: a page, the next by token, a filtered one, one record.
    let (status, page) = zoho
        .call(
            Method::GET,
            "/crm/v8/Contacts?fields=Email,Last_Name,Modified_Time&per_page=200&sort_by=Modified_Time&sort_order=asc",
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let next = page["info"]["next_page_token"].as_str().expect("token");
    let (status, rest) = zoho
        .call(
            Method::GET,
            &format!("/crm/v8/Contacts?fields=Email&page_token={next}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["data"].as_array().map(Vec::len), Some(50));
    let (status, _) = zoho
        .call_with(
            Method::GET,
            "/crm/v8/Contacts?fields=Email&page=1&per_page=10",
            None,
            Some("2099-01-01T00:00:00+00:00"),
        )
        .await;
    assert_eq!(status, 304, "nothing modified after If-Modified-Since");
    let (status, _) = zoho
        .call(
            Method::GET,
            "/crm/v8/Accounts?fields=Account_Name&page=2&per_page=200",
            None,
        )
        .await;
    assert_eq!(status, 204, "no records on that page");
    let (status, one) = zoho
        .call(Method::GET, &format!("/crm/v8/Contacts/{}", ids[0]), None)
        .await;
    assert_eq!(status, 200, "{one}");

    // Writes with per-record outcomes.
    let (status, inserted) = zoho
        .call(
            Method::POST,
            "/crm/v8/Contacts",
            Some(json!({"data": [
                {"Last_Name": "Lovelace", "Email": "ada@contract.test", "Conduit_Id": "c-1"},
                {"Last_Name": "Hopper", "Email": "grace@contract.test"},
            ], "trigger": []})),
        )
        .await;
    assert_eq!(status, 201, "{inserted}");
    let ada = inserted["data"][0]["details"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, mixed) = zoho
        .call(
            Method::POST,
            "/crm/v8/Contacts",
            Some(json!({"data": [
                {"First_Name": "Nameless"},
                {"Last_Name": "Twin", "Email": "ADA@contract.test"},
                {"Last_Name": "Ok"},
            ]})),
        )
        .await;
    assert_eq!(status, 207, "{mixed}");
    assert_eq!(mixed["data"][0]["code"], "MANDATORY_NOT_FOUND");
    assert_eq!(mixed["data"][1]["code"], "DUPLICATE_DATA");
    let (status, updated) = zoho
        .call(
            Method::PUT,
            "/crm/v8/Contacts",
            Some(json!({"data": [{"id": ada, "Title": "Countess"}]})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    let (status, failed) = zoho
        .call(
            Method::PUT,
            "/crm/v8/Contacts",
            Some(json!({"data": [{"id": "1", "Title": "x"}]})),
        )
        .await;
    assert_eq!(status, 400, "{failed}");
    let (status, upserted) = zoho
        .call(
            Method::POST,
            "/crm/v8/Accounts/upsert",
            Some(json!({"data": [
                {"Account_Name": "Contract Corp"},
            ], "duplicate_check_fields": ["Account_Name"]})),
        )
        .await;
    assert_eq!(status, 200, "{upserted}");
    let (status, deleted) = zoho
        .call(
            Method::DELETE,
            &format!("/crm/v8/Accounts?ids={}", accounts[0]),
            None,
        )
        .await;
    assert_eq!(status, 200, "{deleted}");
    let (status, bin) = zoho
        .call(Method::GET, "/crm/v8/Accounts/deleted?type=all", None)
        .await;
    assert_eq!(status, 200, "{bin}");

    // Search.
    let (status, found) = zoho
        .call(
            Method::GET,
            "/crm/v8/Contacts/search?email=ada%40contract.test",
            None,
        )
        .await;
    assert_eq!(status, 200, "{found}");
    let (status, found) = zoho
        .call(
            Method::GET,
            "/crm/v8/Contacts/search?criteria=(Conduit_Id:equals:c-1)&fields=Email,Conduit_Id",
            None,
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["data"][0]["id"], ada.as_str());
    let (status, _) = zoho
        .call(Method::GET, "/crm/v8/Accounts/search?word=zzzz", None)
        .await;
    assert_eq!(status, 204);

    let exchanges = state.recorder().stop();
    let specs = contract::Specs::load("zoho").expect("Zoho specs");
    let report = contract::check_all(&specs, &exchanges);
    println!("{report}");
    assert!(
        report.unmatched.is_empty(),
        "calls the description lacks: {report}"
    );
    assert!(report.passed(), "{report}");
    assert!(report.exchanges >= 17, "every call was recorded: {report}");

    // The description declares only 200, so the checker leaves the bodies of 207 and
    // 400 answers alone: hold each per-record outcome of every write to its schema here.
    let path = contract::specs_dir().join("zoho").join("record.json");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("record.json")).expect("JSON");
    let mut outcomes = 0;
    for exchange in exchanges.iter().filter(|e| e.method != "GET") {
        let body: Value = serde_json::from_slice(&exchange.response_body).unwrap_or(Value::Null);
        for item in body["data"].as_array().into_iter().flatten() {
            let schema = if item["status"] == "success" {
                json!({"$ref": "#/components/schemas/Success_Response"})
            } else {
                json!({"$ref": "#/components/schemas/API_Exception"})
            };
            // Zoho's upsert sample answers an insert with `"duplicate_field": null`; the
            // schema types it a (non-nullable) string.
            let mut item = item.clone();
            if item["duplicate_field"].is_null()
                && let Some(outcome) = item.as_object_mut()
            {
                outcome.remove("duplicate_field");
            }
            let mut errors = Vec::new();
            contract::schema::validate(&doc, &schema, &item, "", &mut errors);
            assert!(
                errors.is_empty(),
                "{}: {item}: {errors:?}",
                exchange.summary()
            );
            outcomes += 1;
        }
    }
    assert!(outcomes >= 9, "per-record outcomes checked: {outcomes}");
    sandbox.shutdown().await;
}
