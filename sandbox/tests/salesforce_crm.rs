//! Salesforce REST data stand-in, end to end: reqwest against a started sandbox.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use reqwest::{Client, Method, RequestBuilder, StatusCode};
use sandbox::providers::salesforce_crm::{
    COMPOSITE_CREATE, DELETED, QUERY, QUERY_MORE, SOBJECT_CREATE,
};
use sandbox::{DEFAULT_SALESFORCE_ORG, OAuthProvider, OAuthUser, Sandbox, SfObject};
use serde_json::{Map, Value, json};

const ORG: &str = DEFAULT_SALESFORCE_ORG;
const INSTANCE: &str = "acme.my.salesforce.com";

struct Harness {
    sandbox: Sandbox,
    client: Client,
    token: String,
}

struct Answer {
    status: StatusCode,
    limit_info: Option<String>,
    body: Value,
}

impl Harness {
    async fn start() -> Self {
        let sandbox = Sandbox::start(0).await.expect("sandbox starts");
        let client = Client::builder().no_proxy().build().expect("client");
        let token = sandbox
            .state()
            .seed_grant(
                OAuthProvider::Salesforce,
                "salesforce-sandbox-client-id",
                None,
                &["api"],
            )
            .expect("grant")
            .access_token;
        Self {
            sandbox,
            client,
            token,
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let path = if path.starts_with("/services/") {
            path.to_owned()
        } else {
            format!("/services/data/v60.0{path}")
        };
        self.client
            .request(method, format!("{}/{INSTANCE}{path}", self.sandbox.url()))
            .bearer_auth(&self.token)
    }

    async fn send(&self, request: RequestBuilder) -> Answer {
        let response = request.send().await.expect("send");
        let status = response.status();
        let limit_info = response
            .headers()
            .get("sforce-limit-info")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body: {text}"))
        };
        Answer {
            status,
            limit_info,
            body,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    async fn query(&self, soql: &str) -> Answer {
        self.send(self.request(Method::GET, "/query").query(&[("q", soql)]))
            .await
    }
}

fn assert_sf_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body[0]["errorCode"], code, "{}", answer.body);
    assert!(answer.body[0]["message"].is_string(), "{}", answer.body);
}

fn ids_of(body: &Value) -> Vec<String> {
    body["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["Id"].as_str().expect("Id").to_owned())
        .collect()
}

#[tokio::test]
async fn query_pages_with_next_records_url_and_batch_size() {
    let h = Harness::start().await;
    let seeded = h
        .sandbox
        .state()
        .seed_salesforce(ORG, SfObject::Contact, 4500);
    let first = h
        .query("SELECT Id, LastName, Email, AccountId FROM Contact")
        .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["totalSize"], 4500);
    assert_eq!(first.body["done"], false);
    assert_eq!(first.body["records"].as_array().map(Vec::len), Some(2000));
    let record = &first.body["records"][0];
    assert_eq!(record["attributes"]["type"], "Contact");
    assert_eq!(
        record["attributes"]["url"],
        format!("/services/data/v60.0/sobjects/Contact/{}", seeded[0])
    );
    assert!(record["LastName"].is_string());
    assert!(record["AccountId"].is_null(), "no accounts were seeded");
    assert!(record.get("Phone").is_none(), "only selected fields");
    let mut seen = ids_of(&first.body);
    let mut next = first.body["nextRecordsUrl"].as_str().map(str::to_owned);
    let mut pages = 1;
    while let Some(url) = next {
        assert!(url.starts_with("/services/data/v60.0/query/01g"), "{url}");
        let page = h.call(Method::GET, &url, None).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.body["totalSize"], 4500);
        seen.extend(ids_of(&page.body));
        next = page.body["nextRecordsUrl"].as_str().map(str::to_owned);
        assert_eq!(page.body["done"], next.is_none());
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, seeded);
    assert_eq!(h.sandbox.state().calls(QUERY), 1);
    assert_eq!(h.sandbox.state().calls(QUERY_MORE), 2);

    // batchSize picks the page size (clamped to 200..=2000).
    let small = h
        .send(
            h.request(Method::GET, "/query")
                .query(&[("q", "SELECT Id FROM Contact ORDER BY LastName DESC")])
                .header("Sforce-Query-Options", "batchSize=500"),
        )
        .await;
    assert_eq!(small.body["records"].as_array().map(Vec::len), Some(500));
    let url = small.body["nextRecordsUrl"].as_str().expect("next");
    assert!(url.ends_with("-500"), "{url}");
    let second = h.call(Method::GET, url, None).await;
    assert_eq!(second.body["records"].as_array().map(Vec::len), Some(500));
    let tiny = h
        .send(
            h.request(Method::GET, "/query")
                .query(&[("q", "SELECT Id FROM Contact")])
                .header("Sforce-Query-Options", "batchSize=5"),
        )
        .await;
    assert_eq!(tiny.body["records"].as_array().map(Vec::len), Some(200));

    // LIMIT applies before paging; COUNT() answers only the size; any version works.
    let limited = h.query("select id from contact limit 10").await;
    assert_eq!(limited.body["totalSize"], 10);
    assert_eq!(limited.body["done"], true);
    assert!(limited.body.get("nextRecordsUrl").is_none());
    let count = h
        .send(
            h.request(Method::GET, "/services/data/v59.0/query")
                .query(&[("q", "SELECT COUNT() FROM Contact")]),
        )
        .await;
    assert_eq!(count.body["totalSize"], 4500);
    assert_eq!(count.body["records"], json!([]));

    // Unknown and expired locators.
    let bad = h
        .call(Method::GET, "/query/01gDn0000000000AAA-2000", None)
        .await;
    assert_sf_error(&bad, StatusCode::BAD_REQUEST, "INVALID_QUERY_LOCATOR");
    h.sandbox.state().expire_salesforce_query_locators();
    let expired = h.call(Method::GET, url, None).await;
    assert_sf_error(&expired, StatusCode::BAD_REQUEST, "INVALID_QUERY_LOCATOR");
}

#[tokio::test]
async fn incremental_sync_across_pages_while_records_change() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    let seeded = state.seed_salesforce(ORG, SfObject::Contact, 3000);
    let soql = |since: &str| {
        format!(
            "SELECT Id, LastName, SystemModstamp FROM Contact WHERE SystemModstamp > {since} ORDER BY SystemModstamp, Id"
        )
    };
    let fetch_all = |since: String, edit: bool| {
        let h = &h;
        let seeded = &seeded;
        async move {
            let mut rows: Vec<(String, String)> = Vec::new();
            let mut answer = h
                .send(
                    h.request(Method::GET, "/query")
                        .query(&[("q", soql(&since))])
                        .header("Sforce-Query-Options", "batchSize=1000"),
                )
                .await;
            loop {
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
                for record in answer.body["records"].as_array().expect("records") {
                    rows.push((
                        record["Id"].as_str().expect("Id").to_owned(),
                        record["SystemModstamp"].as_str().expect("stamp").to_owned(),
                    ));
                }
                if edit && rows.len() == 1000 {
                    // Changes during the sync: one row already read, one still ahead.
                    let state = h.sandbox.state();
                    for id in [&seeded[10], &seeded[2500]] {
                        let fields = Map::from_iter([("Title".to_owned(), json!("Changed"))]);
                        assert!(state.update_salesforce_record(
                            ORG,
                            SfObject::Contact,
                            id,
                            &fields
                        ));
                    }
                    assert!(state.delete_salesforce_record(ORG, SfObject::Contact, &seeded[20]));
                }
                let Some(url) = answer.body["nextRecordsUrl"].as_str().map(str::to_owned) else {
                    break;
                };
                answer = h.call(Method::GET, &url, None).await;
            }
            rows
        }
    };
    let first = fetch_all("2000-01-01T00:00:00Z".to_owned(), true).await;
    // The cursor is a snapshot: every seeded row once, in (SystemModstamp, Id) order.
    assert_eq!(first.len(), 3000);
    let ids: Vec<&String> = first.iter().map(|(id, _)| id).collect();
    assert_eq!(ids, seeded.iter().collect::<Vec<_>>());
    assert!(
        first
            .windows(2)
            .all(|w| (&w[0].1, &w[0].0) < (&w[1].1, &w[1].0))
    );
    let watermark = first
        .iter()
        .map(|(_, stamp)| stamp.clone())
        .max()
        .expect("rows");
    assert!(
        watermark.ends_with("+0000") && watermark.len() == 28,
        "{watermark}"
    );

    // The next run from the watermark sees exactly the two changed records.
    let second = fetch_all(watermark.clone(), false).await;
    let changed: BTreeSet<&str> = second.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        changed,
        BTreeSet::from([seeded[10].as_str(), seeded[2500].as_str()])
    );
    assert!(second.iter().all(|(_, stamp)| *stamp > watermark));
    // Records written together share a stamp; resuming after one of them uses the Id
    // as the tie-breaker, as a (SystemModstamp, Id) keyset page does.
    let (seed_stamp, first_id) = (&first[0].1, &first[0].0);
    let resume = h
        .query(&format!(
            "SELECT Id FROM Contact WHERE SystemModstamp > {seed_stamp} OR (SystemModstamp = {seed_stamp} AND Id > '{first_id}') ORDER BY SystemModstamp, Id"
        ))
        .await;
    assert_eq!(resume.status, StatusCode::OK, "{}", resume.body);
    // Everything but the first row and the deleted one.
    assert_eq!(resume.body["totalSize"], 2998);
    // Stamps of separate writes differ; the later write has the later stamp.
    assert!(second[0].1 < second[1].1);
    assert_eq!(second[0].0, seeded[10]);
}

#[tokio::test]
async fn soql_errors_are_salesforce_shaped() {
    let h = Harness::start().await;
    for (soql, code) in [
        ("SELECT Id FROM Contact WHERE", "MALFORMED_QUERY"),
        (
            "SELECT Id FROM Contact WHERE Email = 'a' AND Phone = 'b' OR Title = 'c'",
            "MALFORMED_QUERY",
        ),
        ("SELECT Id, Nope__c FROM Contact", "INVALID_FIELD"),
        ("SELECT Id FROM Lead", "INVALID_TYPE"),
        (
            "SELECT Id FROM Contact WHERE CreatedDate > '2024-01-01'",
            "INVALID_FIELD",
        ),
    ] {
        let answer = h.query(soql).await;
        assert_sf_error(&answer, StatusCode::BAD_REQUEST, code);
        assert!(answer.limit_info.is_some());
    }
    let missing = h.call(Method::GET, "/query", None).await;
    assert_sf_error(&missing, StatusCode::BAD_REQUEST, "MALFORMED_QUERY");
    // Filters, IN, LIKE, null and date literals over HTTP.
    let state = h.sandbox.state();
    let accounts = state.seed_salesforce(ORG, SfObject::Account, 3);
    let contacts = state.seed_salesforce(ORG, SfObject::Contact, 9);
    let fields = Map::from_iter([
        ("LastName".to_owned(), json!("O'Brien")),
        ("Email".to_owned(), Value::Null),
    ]);
    assert!(state.update_salesforce_record(ORG, SfObject::Contact, &contacts[0], &fields));
    let answer = h
        .query("SELECT Id, Email FROM Contact WHERE LastName = 'o\\'brien' AND Email = null")
        .await;
    assert_eq!(ids_of(&answer.body), [contacts[0].clone()]);
    let list = format!("'{}', '{}'", &accounts[0][..15], accounts[1]);
    let answer = h
        .query(&format!(
            "SELECT Id FROM Contact WHERE AccountId IN ({list}) ORDER BY Id DESC"
        ))
        .await;
    let got = ids_of(&answer.body);
    assert_eq!(got.len(), 6, "{}", answer.body);
    assert!(got.windows(2).all(|w| w[0] > w[1]));
    let answer = h
        .query("SELECT Id, Name, NumberOfEmployees, AnnualRevenue FROM Account WHERE Name LIKE '%a%' OR NumberOfEmployees >= 0")
        .await;
    assert_eq!(answer.body["totalSize"], 3);
    assert!(answer.body["records"][0]["NumberOfEmployees"].is_number());
    assert!(answer.body["records"][0]["AnnualRevenue"].is_number());
    let answer = h
        .query("SELECT Id, Birthdate, IsDeleted FROM Contact WHERE Birthdate < 2100-01-01 AND IsDeleted = false AND (NOT LastName IN ('x'))")
        .await;
    assert_eq!(answer.body["totalSize"], 9);
    assert_eq!(answer.body["records"][0]["IsDeleted"], false);
}

#[tokio::test]
async fn describe_has_the_fields_and_their_metadata() {
    let h = Harness::start().await;
    let answer = h
        .call(Method::GET, "/sobjects/Contact/describe", None)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = &answer.body;
    assert_eq!(body["name"], "Contact");
    assert_eq!(body["label"], "Contact");
    assert_eq!(body["labelPlural"], "Contacts");
    let fields = body["fields"].as_array().expect("fields");
    let field = |name: &str| {
        fields
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    for field in fields {
        for key in [
            "name",
            "label",
            "type",
            "length",
            "nillable",
            "createable",
            "updateable",
            "externalId",
            "unique",
            "defaultedOnCreate",
            "picklistValues",
        ] {
            assert!(field.get(key).is_some(), "{key} of {}", field["name"]);
        }
    }
    assert_eq!(field("Id")["type"], "id");
    assert_eq!(field("LastName")["nillable"], false);
    assert_eq!(field("LastName")["length"], 80);
    assert_eq!(field("Email")["type"], "email");
    assert_eq!(field("Phone")["type"], "phone");
    assert_eq!(field("Birthdate")["type"], "date");
    assert_eq!(field("AccountId")["type"], "reference");
    assert_eq!(field("AccountId")["referenceTo"], json!(["Account"]));
    let source = field("LeadSource");
    assert_eq!(source["type"], "picklist");
    let values: Vec<&str> = source["picklistValues"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| v["value"].as_str().expect("value"))
        .collect();
    assert_eq!(
        values,
        ["Web", "Phone Inquiry", "Partner Referral", "Other"]
    );
    assert_eq!(source["picklistValues"][0]["active"], true);
    let conduit = field("Conduit_Id__c");
    assert_eq!(conduit["externalId"], true);
    assert_eq!(conduit["unique"], true);
    assert_eq!(conduit["type"], "string");
    let stamp = field("SystemModstamp");
    assert_eq!(stamp["type"], "datetime");
    assert_eq!(stamp["updateable"], false);
    assert_eq!(stamp["createable"], false);
    assert_eq!(field("IsDeleted")["type"], "boolean");

    let account = h
        .call(Method::GET, "/sobjects/account/describe", None)
        .await;
    let fields = account.body["fields"].as_array().expect("fields");
    let kind = |name: &str| {
        fields
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| f["type"].clone())
    };
    assert_eq!(kind("Website"), Some(json!("url")));
    assert_eq!(kind("NumberOfEmployees"), Some(json!("int")));
    assert_eq!(kind("AnnualRevenue"), Some(json!("double")));
    assert_eq!(kind("Description"), Some(json!("textarea")));
    assert_eq!(kind("Industry"), Some(json!("picklist")));
    let missing = h.call(Method::GET, "/sobjects/Widget/describe", None).await;
    assert_sf_error(&missing, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn single_records_crud_and_upsert() {
    let h = Harness::start().await;
    let created = h
        .call(
            Method::POST,
            "/sobjects/Account",
            Some(
                json!({"Name": "Globex", "NumberOfEmployees": 250, "Industry": "Not On The List"}),
            ),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.body["success"], true);
    assert_eq!(created.body["errors"], json!([]));
    let account = created.body["id"].as_str().expect("id").to_owned();
    assert!(account.starts_with("001") && account.len() == 18);
    assert_eq!(h.sandbox.state().calls(SOBJECT_CREATE), 1);

    let contact = h
        .call(
            Method::POST,
            "/sobjects/Contact",
            Some(json!({"attributes": {"type": "Contact"}, "LastName": "Lovelace", "FirstName": "Ada",
                        "Email": "ada@globex.example", "AccountId": account, "Birthdate": "1815-12-10"})),
        )
        .await;
    assert_eq!(contact.status, StatusCode::CREATED, "{}", contact.body);
    let id = contact.body["id"].as_str().expect("id").to_owned();
    let got = h
        .call(Method::GET, &format!("/sobjects/Contact/{id}"), None)
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["LastName"], "Lovelace");
    assert_eq!(got.body["AccountId"], account.as_str());
    assert_eq!(got.body["Phone"], Value::Null);
    assert_eq!(got.body["IsDeleted"], false);
    assert_eq!(got.body["CreatedDate"], got.body["SystemModstamp"]);
    let created_stamp = got.body["SystemModstamp"]
        .as_str()
        .expect("stamp")
        .to_owned();
    // 15-character ids work too; fields= selects.
    let short = h
        .call(
            Method::GET,
            &format!("/sobjects/Contact/{}?fields=Email", &id[..15]),
            None,
        )
        .await;
    assert_eq!(short.body["Email"], "ada@globex.example");
    assert!(short.body.get("LastName").is_none());

    let patched = h
        .call(
            Method::PATCH,
            &format!("/sobjects/Contact/{id}"),
            Some(json!({"Title": "Countess", "Phone": "+44 20 555 0100"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::NO_CONTENT);
    let record = h
        .sandbox
        .state()
        .salesforce_record(ORG, SfObject::Contact, &id)
        .expect("record");
    assert_eq!(record.fields["Title"], "Countess");
    assert!(record.system_modstamp > created_stamp);
    assert_eq!(
        record.fields["LastModifiedDate"],
        json!(record.system_modstamp)
    );

    // Per-field errors of single-record writes.
    for (body, code) in [
        (json!({"FirstName": "No Last"}), "REQUIRED_FIELD_MISSING"),
        (
            json!({"LastName": "X", "Email": "not-an-email"}),
            "INVALID_EMAIL_ADDRESS",
        ),
        (
            json!({"LastName": "X", "Shoe_Size__c": 44}),
            "INVALID_FIELD",
        ),
        (
            json!({"LastName": "X", "SystemModstamp": "2024-01-01T00:00:00.000+0000"}),
            "INVALID_FIELD_FOR_INSERT_UPDATE",
        ),
        (
            json!({"LastName": "X", "AccountId": "001Dn0000000009"}),
            "INVALID_CROSS_REFERENCE_KEY",
        ),
        (
            json!({"LastName": "X", "Birthdate": "10/12/1815"}),
            "JSON_PARSER_ERROR",
        ),
    ] {
        let answer = h.call(Method::POST, "/sobjects/Contact", Some(body)).await;
        assert_sf_error(&answer, StatusCode::BAD_REQUEST, code);
    }
    let missing = h
        .call(
            Method::POST,
            "/sobjects/Contact",
            Some(json!({"FirstName": "No Last"})),
        )
        .await;
    assert_eq!(missing.body[0]["fields"], json!(["LastName"]));
    assert_eq!(
        missing.body[0]["message"],
        "Required fields are missing: [LastName]"
    );
    let cleared = h
        .call(
            Method::PATCH,
            &format!("/sobjects/Contact/{id}"),
            Some(json!({"LastName": null})),
        )
        .await;
    assert_sf_error(&cleared, StatusCode::BAD_REQUEST, "REQUIRED_FIELD_MISSING");

    // Upsert by the external id.
    let upserted = h
        .call(
            Method::PATCH,
            "/sobjects/Contact/Conduit_Id__c/cdt-1",
            Some(json!({"LastName": "Hopper"})),
        )
        .await;
    assert_eq!(upserted.status, StatusCode::CREATED);
    assert_eq!(upserted.body["created"], true);
    let again = h
        .call(
            Method::PATCH,
            "/sobjects/Contact/conduit_id__c/CDT-1",
            Some(json!({"FirstName": "Grace"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["created"], false);
    assert_eq!(again.body["id"], upserted.body["id"]);
    let by_external = h
        .call(Method::GET, "/sobjects/Contact/Conduit_Id__c/cdt-1", None)
        .await;
    assert_eq!(by_external.body["FirstName"], "Grace");
    let duplicate = h
        .call(
            Method::POST,
            "/sobjects/Contact",
            Some(json!({"LastName": "Dup", "Conduit_Id__c": "cdt-1"})),
        )
        .await;
    assert_sf_error(&duplicate, StatusCode::BAD_REQUEST, "DUPLICATE_VALUE");

    // Delete: 204, then 404s; deleting the account takes its contact along.
    let deleted = h
        .call(
            Method::DELETE,
            &format!("/sobjects/Account/{account}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let again = h
        .call(
            Method::DELETE,
            &format!("/sobjects/Account/{account}"),
            None,
        )
        .await;
    assert_sf_error(&again, StatusCode::NOT_FOUND, "ENTITY_IS_DELETED");
    let gone = h
        .call(Method::GET, &format!("/sobjects/Contact/{id}"), None)
        .await;
    assert_sf_error(&gone, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(
        gone.body[0]["message"],
        "The requested resource does not exist"
    );
    let unknown = h
        .call(
            Method::PATCH,
            "/sobjects/Contact/003Dn0000000001AAA",
            Some(json!({"Title": "x"})),
        )
        .await;
    assert_sf_error(&unknown, StatusCode::NOT_FOUND, "NOT_FOUND");
}

fn contact(last: &str, email: &str) -> Value {
    json!({"attributes": {"type": "Contact"}, "LastName": last, "Email": email})
}

#[tokio::test]
async fn collections_create_update_delete_with_per_record_errors() {
    let h = Harness::start().await;
    let answer = h
        .call(
            Method::POST,
            "/composite/sobjects",
            Some(json!({"allOrNone": false, "records": [
                contact("Ok", "ok@acme.example"),
                {"attributes": {"type": "Contact"}, "FirstName": "NoLast"},
                contact("BadMail", "bad@"),
                {"attributes": {"type": "Account"}, "Name": "Initech", "Conduit_Id__c": "acc-1"},
                {"attributes": {"type": "Account"}, "Name": "Initech Again", "Conduit_Id__c": "ACC-1"},
                {"attributes": {"type": "Contact"}, "LastName": "X", "Favourite__c": 1},
            ]})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let results = answer.body.as_array().expect("array");
    assert_eq!(results.len(), 6);
    assert_eq!(results[0]["success"], true);
    assert_eq!(results[0]["errors"], json!([]));
    let ok_id = results[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(results[1]["success"], false);
    assert!(results[1].get("id").is_none());
    assert_eq!(
        results[1]["errors"],
        json!([{"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [LastName]", "fields": ["LastName"]}])
    );
    assert_eq!(
        results[2]["errors"][0]["statusCode"],
        "INVALID_EMAIL_ADDRESS"
    );
    assert_eq!(results[2]["errors"][0]["fields"], json!(["Email"]));
    assert_eq!(results[3]["success"], true);
    assert_eq!(results[4]["errors"][0]["statusCode"], "DUPLICATE_VALUE");
    assert_eq!(results[5]["errors"][0]["statusCode"], "INVALID_FIELD");
    assert_eq!(h.sandbox.state().calls(COMPOSITE_CREATE), 1);
    let state = h.sandbox.state();
    assert_eq!(state.salesforce_records(ORG, SfObject::Contact).len(), 1);
    assert_eq!(state.salesforce_records(ORG, SfObject::Account).len(), 1);

    // allOrNone: one failure rolls back the lot.
    let answer = h
        .call(
            Method::POST,
            "/composite/sobjects",
            Some(json!({"allOrNone": true, "records": [contact("A", "a@acme.example"), contact("B", "nope")]})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body[0]["success"], false);
    assert_eq!(
        answer.body[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(
        answer.body[1]["errors"][0]["statusCode"],
        "INVALID_EMAIL_ADDRESS"
    );
    assert_eq!(state.salesforce_records(ORG, SfObject::Contact).len(), 1);

    // A value of the wrong JSON type fails the whole request, writing nothing.
    let answer = h
        .call(
            Method::POST,
            "/composite/sobjects",
            Some(json!({"records": [contact("C", "c@acme.example"),
                                    {"attributes": {"type": "Account"}, "Name": "N", "NumberOfEmployees": "many"}]})),
        )
        .await;
    assert_sf_error(&answer, StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR");
    assert_eq!(state.salesforce_records(ORG, SfObject::Contact).len(), 1);

    // More than 200 records.
    let many: Vec<Value> = (0..201)
        .map(|i| contact(&format!("N{i}"), "n@acme.example"))
        .collect();
    let answer = h
        .call(
            Method::POST,
            "/composite/sobjects",
            Some(json!({"records": many})),
        )
        .await;
    assert_sf_error(&answer, StatusCode::BAD_REQUEST, "EXCEEDED_ID_LIMIT");
    let two_hundred: Vec<Value> = (0..200)
        .map(|i| contact(&format!("N{i}"), &format!("n{i}@acme.example")))
        .collect();
    let answer = h
        .call(
            Method::POST,
            "/composite/sobjects",
            Some(json!({"records": two_hundred})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let created: Vec<String> = answer
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(created.len(), 200);
    // One request, one stamp.
    let stamps: HashSet<String> = created[..5]
        .iter()
        .map(|id| {
            state
                .salesforce_record(ORG, SfObject::Contact, id)
                .expect("rec")
                .system_modstamp
        })
        .collect();
    assert_eq!(stamps.len(), 1);

    // Updates: per-record errors for a missing Id, an unknown id, a read-only field.
    let answer = h
        .call(
            Method::PATCH,
            "/composite/sobjects",
            Some(json!({"allOrNone": false, "records": [
                {"attributes": {"type": "Contact"}, "Id": ok_id, "Title": "Updated"},
                {"attributes": {"type": "Contact"}, "Title": "No id"},
                {"attributes": {"type": "Contact"}, "Id": "003Dn00000000ZZAAA", "Title": "Unknown"},
                {"attributes": {"type": "Contact"}, "Id": created[0], "CreatedDate": "2020-01-01T00:00:00.000+0000"},
            ]})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body[0],
        json!({"id": ok_id, "success": true, "errors": []})
    );
    assert_eq!(
        answer.body[1]["errors"][0]["statusCode"],
        "MISSING_ARGUMENT"
    );
    assert_eq!(answer.body[2]["success"], false);
    assert_eq!(answer.body[3]["id"], created[0].as_str());
    assert_eq!(
        answer.body[3]["errors"][0]["statusCode"],
        "INVALID_FIELD_FOR_INSERT_UPDATE"
    );
    assert_eq!(
        answer.body[3]["errors"][0]["fields"],
        json!(["CreatedDate"])
    );
    assert_eq!(
        state
            .salesforce_record(ORG, SfObject::Contact, &ok_id)
            .expect("rec")
            .fields["Title"],
        "Updated"
    );

    // Retrieve: nulls for ids without a live record, in order.
    let answer = h
        .send(
            h.request(Method::GET, "/composite/sobjects/Contact")
                .query(&[
                    ("ids", format!("{ok_id},003Dn00000000ZZAAA,{}", created[1])),
                    ("fields", "LastName,Title".to_owned()),
                ]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body[0]["Title"], "Updated");
    assert_eq!(answer.body[0]["attributes"]["type"], "Contact");
    assert_eq!(answer.body[1], Value::Null);
    assert_eq!(answer.body[2]["LastName"], "N1");

    // Deletes: per id, a second delete is ENTITY_IS_DELETED.
    let ids = format!("{},{}", created[0], created[1]);
    let answer = h
        .send(
            h.request(Method::DELETE, "/composite/sobjects")
                .query(&[("ids", ids.as_str()), ("allOrNone", "false")]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body[0],
        json!({"id": created[0], "success": true, "errors": []})
    );
    let answer = h
        .send(
            h.request(Method::DELETE, "/composite/sobjects")
                .query(&[("ids", format!("{},{}", created[1], created[2]))]),
        )
        .await;
    assert_eq!(
        answer.body[0]["errors"][0]["statusCode"],
        "ENTITY_IS_DELETED"
    );
    assert_eq!(answer.body[1]["success"], true);
    let too_many: Vec<String> = (0..201).map(|_| created[3].clone()).collect();
    let answer = h
        .send(
            h.request(Method::DELETE, "/composite/sobjects")
                .query(&[("ids", too_many.join(","))]),
        )
        .await;
    assert_sf_error(&answer, StatusCode::BAD_REQUEST, "EXCEEDED_ID_LIMIT");

    // Upserts by external id report `created`.
    let answer = h
        .call(
            Method::PATCH,
            "/composite/sobjects/Account/Conduit_Id__c",
            Some(json!({"records": [
                {"attributes": {"type": "Account"}, "Conduit_Id__c": "acc-1", "Website": "https://initech.example"},
                {"attributes": {"type": "Account"}, "Conduit_Id__c": "acc-2", "Name": "Hooli"},
                {"attributes": {"type": "Account"}, "Name": "No external id"},
            ]})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body[0]["created"], false);
    assert_eq!(answer.body[1]["created"], true);
    assert_eq!(
        answer.body[2]["errors"][0]["statusCode"],
        "MISSING_ARGUMENT"
    );
}

#[tokio::test]
async fn deleted_endpoint_and_query_all() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    let accounts = state.seed_salesforce(ORG, SfObject::Account, 2);
    let contacts = state.seed_salesforce(ORG, SfObject::Contact, 6);
    let start = "2020-01-01T00:00:00+00:00";
    let window = |start: &str, end: &str| {
        h.request(Method::GET, "/sobjects/Contact/deleted/")
            .query(&[("start", start.to_owned()), ("end", end.to_owned())])
    };
    let far = "2099-01-01T00:00:00+00:00";
    let recent = iso_days_ago(1);
    let empty = h.send(window(&recent, far)).await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert_eq!(empty.body["deletedRecords"], json!([]));
    assert!(
        empty.body["earliestDateAvailable"]
            .as_str()
            .is_some_and(|d| d.ends_with("+0000"))
    );
    // latestDateCovered is capped at now.
    assert!(
        empty.body["latestDateCovered"]
            .as_str()
            .is_some_and(|d| d < "2099")
    );

    let answer = h
        .call(
            Method::DELETE,
            &format!("/sobjects/Contact/{}", contacts[0]),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(state.delete_salesforce_record(ORG, SfObject::Contact, &contacts[1]));
    assert!(!state.delete_salesforce_record(ORG, SfObject::Contact, &contacts[1]));
    // Contacts 0, 2, 4 belong to account 0: deleting it deletes 2 and 4 too.
    assert!(state.delete_salesforce_record(ORG, SfObject::Account, &accounts[0]));
    let answer = h.send(window(&recent, far)).await;
    let deleted: Vec<&str> = answer.body["deletedRecords"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        deleted,
        [&contacts[0], &contacts[1], &contacts[2], &contacts[4]].map(String::as_str)
    );
    let date = answer.body["deletedRecords"][0]["deletedDate"]
        .as_str()
        .expect("date");
    assert_eq!(date.len(), 28);
    let record = state
        .salesforce_record(ORG, SfObject::Contact, &contacts[0])
        .expect("tombstone");
    assert!(record.is_deleted);
    assert_eq!(record.system_modstamp, date);
    assert_eq!(state.calls(DELETED), 2);

    // Deleted records: out of query, in queryAll with IsDeleted = true.
    let live = h.query("SELECT Id FROM Contact").await;
    assert_eq!(
        ids_of(&live.body),
        [contacts[3].clone(), contacts[5].clone()]
    );
    let all = h
        .send(h.request(Method::GET, "/queryAll").query(&[(
            "q",
            "SELECT Id, IsDeleted FROM Contact WHERE IsDeleted = true",
        )]))
        .await;
    assert_eq!(all.body["totalSize"], 4);
    assert_eq!(all.body["records"][0]["IsDeleted"], true);

    // Window errors.
    let backwards = h.send(window(far, &recent)).await;
    assert_sf_error(
        &backwards,
        StatusCode::BAD_REQUEST,
        "INVALID_REPLICATION_DATE",
    );
    let too_old = h.send(window(start, far)).await;
    assert_sf_error(
        &too_old,
        StatusCode::BAD_REQUEST,
        "INVALID_REPLICATION_DATE",
    );
    let missing = h
        .call(Method::GET, "/sobjects/Contact/deleted/", None)
        .await;
    assert_sf_error(&missing, StatusCode::BAD_REQUEST, "MISSING_ARGUMENT");
    // updated lists live records changed in the window.
    let updated = h
        .send(
            h.request(Method::GET, "/sobjects/Contact/updated/")
                .query(&[("start", recent.as_str()), ("end", far)]),
        )
        .await;
    assert_eq!(updated.body["ids"], json!([contacts[3], contacts[5]]));
}

/// An ISO 8601 time `days` days ago (whole minutes), with a `+00:00` zone.
fn iso_days_ago(days: i64) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        - days * 86_400_000;
    let day = ms.div_euclid(86_400_000);
    // Civil date from days (Howard Hinnant).
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let minutes = ms.rem_euclid(86_400_000) / 60_000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:00+00:00",
        minutes / 60,
        minutes % 60
    )
}

#[tokio::test]
async fn api_allowance_and_limit_info() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    let first = h.query("SELECT Id FROM Contact").await;
    assert_eq!(first.limit_info.as_deref(), Some("api-usage=1/100000"));
    state.set_salesforce_api_limit(ORG, 4);
    let mut infos = Vec::new();
    for _ in 0..3 {
        let answer = h
            .call(Method::GET, "/sobjects/Contact/describe", None)
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        infos.push(answer.limit_info.expect("header"));
    }
    assert_eq!(infos, ["api-usage=2/4", "api-usage=3/4", "api-usage=4/4"]);
    let refused = h.query("SELECT Id FROM Contact").await;
    assert_sf_error(&refused, StatusCode::FORBIDDEN, "REQUEST_LIMIT_EXCEEDED");
    assert_eq!(refused.body[0]["message"], "TotalRequests Limit exceeded.");
    assert_eq!(refused.limit_info.as_deref(), Some("api-usage=4/4"));
    // /limits reports without counting.
    let limits = h.call(Method::GET, "/limits", None).await;
    assert_eq!(limits.status, StatusCode::OK);
    assert_eq!(
        limits.body["DailyApiRequests"],
        json!({"Max": 4, "Remaining": 0})
    );
    assert_eq!(state.salesforce_api_usage(ORG).used, 4);
    // Raising the allowance lets requests through again; other orgs are unaffected.
    state.set_salesforce_api_limit(ORG, 10);
    let again = h.query("SELECT Id FROM Contact").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.limit_info.as_deref(), Some("api-usage=5/10"));
    // The version root carries the header too.
    let root = h.call(Method::GET, "/services/data/v60.0/", None).await;
    assert_eq!(root.status, StatusCode::OK);
    assert_eq!(root.limit_info.as_deref(), Some("api-usage=5/10"));
}

#[tokio::test]
async fn sessions_pick_the_org_and_are_required() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    assert_eq!(
        state.salesforce_org_of_token(&h.token).as_deref(),
        Some(ORG)
    );
    assert_eq!(state.salesforce_org_of_token("nope"), None);
    let url = format!(
        "{}/{INSTANCE}/services/data/v60.0/query?q=SELECT+Id+FROM+Contact",
        h.sandbox.url()
    );
    for request in [h.client.get(&url), h.client.get(&url).bearer_auth("nope")] {
        let answer = h.send(request).await;
        assert_sf_error(&answer, StatusCode::UNAUTHORIZED, "INVALID_SESSION_ID");
        assert!(answer.limit_info.is_none());
    }
    // A user of another org, on its own instance, sees only its own records.
    let globex = OAuthUser {
        org_id: "00DDn00000GlobxEAA".to_owned(),
        instance_host: "globex.my.salesforce.com".to_owned(),
        ..OAuthUser::new(OAuthProvider::Salesforce, "admin@globex.test")
    };
    state.add_oauth_user(globex).expect("user");
    let other = state
        .seed_grant(
            OAuthProvider::Salesforce,
            "salesforce-sandbox-client-id",
            Some("admin@globex.test"),
            &["api"],
        )
        .expect("grant");
    assert_eq!(
        state
            .salesforce_org_of_token(&other.access_token)
            .as_deref(),
        Some("00DDn00000GlobxEAA")
    );
    state.seed_salesforce(ORG, SfObject::Contact, 3);
    state.seed_salesforce("00DDn00000GlobxEAA", SfObject::Contact, 1);
    let answer = h
        .send(
            h.client
                .get(format!(
                    "{}/globex.my.salesforce.com/services/data/v60.0/query",
                    h.sandbox.url()
                ))
                .query(&[("q", "SELECT Id FROM Contact")])
                .bearer_auth(&other.access_token),
        )
        .await;
    assert_eq!(answer.body["totalSize"], 1);
    // The token is not valid at another org's instance.
    let answer = h
        .send(h.client.get(&url).bearer_auth(&other.access_token))
        .await;
    assert_sf_error(&answer, StatusCode::UNAUTHORIZED, "INVALID_SESSION_ID");
}

#[tokio::test]
async fn faults_malformed_knob_control_routes_and_reset() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    let base = h.sandbox.url();
    let post = |path: &str, body: Value| h.client.post(format!("{base}{path}")).json(&body).send();
    let seeded: Value = post(
        "/_sandbox/salesforce/seed",
        json!({"object": "Account", "count": 2}),
    )
    .await
    .expect("send")
    .json()
    .await
    .expect("JSON");
    let id = seeded["ids"][0].as_str().expect("id").to_owned();
    let response = post(
        "/_sandbox/salesforce/update",
        json!({"object": "Account", "id": id, "fields": {"Industry": "Retail"}}),
    )
    .await
    .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["record"]["fields"]["Industry"], "Retail");
    let response = post(
        "/_sandbox/salesforce/update",
        json!({"object": "Account", "id": id, "fields": {"Nope": 1}}),
    )
    .await
    .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let deleted: Value = post(
        "/_sandbox/salesforce/delete",
        json!({"object": "Account", "id": seeded["ids"][1]}),
    )
    .await
    .expect("send")
    .json()
    .await
    .expect("JSON");
    assert_eq!(deleted["deleted"], true);
    let listed: Value = h
        .client
        .get(format!("{base}/_sandbox/salesforce/records?object=Account"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed["results"].as_array().map(Vec::len), Some(1));
    let limit: Value = post("/_sandbox/salesforce/limit", json!({"max": 50}))
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    assert_eq!(limit, json!({"org": ORG, "max": 50, "used": 0}));

    // Malformed bodies keep their status.
    let response = post(
        "/_sandbox/salesforce/malformed",
        json!({"route": "salesforce.query", "count": 1}),
    )
    .await
    .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let response = h
        .request(Method::GET, "/query")
        .query(&[("q", "SELECT Id FROM Account")])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("text");
    assert!(serde_json::from_str::<Value>(&text).is_err());
    assert_eq!(h.query("SELECT Id FROM Account").await.body["totalSize"], 1);
    let bad_route = post(
        "/_sandbox/salesforce/malformed",
        json!({"route": "salesforce.nope"}),
    )
    .await
    .expect("send");
    assert_eq!(bad_route.status(), StatusCode::BAD_REQUEST);

    // Forced faults are Salesforce-shaped and still carry the limit header.
    state
        .force_status(503, 1, Some(sandbox::Provider::Salesforce))
        .expect("fault");
    let answer = h.query("SELECT Id FROM Account").await;
    assert_sf_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVER_UNAVAILABLE",
    );
    assert!(answer.limit_info.is_some());

    state.reset();
    assert!(state.salesforce_records(ORG, SfObject::Account).is_empty());
    assert_eq!(state.salesforce_api_usage(ORG).max, 100_000);
}

#[tokio::test]
async fn seeding_is_fast_and_realistic() {
    let h = Harness::start().await;
    let state = h.sandbox.state();
    state.seed_salesforce(ORG, SfObject::Account, 1000);
    let started = Instant::now();
    let ids = state.seed_salesforce(ORG, SfObject::Contact, 100_000);
    let took = started.elapsed();
    assert_eq!(ids.len(), 100_000);
    assert!(took.as_secs_f64() < 2.0, "seeding took {took:?}");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 100_000);
    // Every contact got an account; emails are unique (spot-checked over HTTP here,
    // fully by the sample generator's own test).
    let unlinked = h
        .query(
            "SELECT COUNT() FROM Contact WHERE AccountId = null OR Email = null OR LastName = null",
        )
        .await;
    assert_eq!(unlinked.body["totalSize"], 0);
    let one = h
        .query("SELECT Id, Email FROM Contact WHERE Email LIKE '%.99999@%'")
        .await;
    assert_eq!(one.body["totalSize"], 1, "{}", one.body);
    let first = state
        .salesforce_record(ORG, SfObject::Contact, &ids[0])
        .expect("record");
    for name in [
        "FirstName",
        "LastName",
        "Email",
        "Phone",
        "Title",
        "Department",
        "MailingCity",
        "MailingCountry",
        "LeadSource",
        "Birthdate",
    ] {
        assert!(first.fields[name].is_string(), "{name}");
    }
    let accounts = state.salesforce_records(ORG, SfObject::Account);
    let names: HashSet<&str> = accounts
        .iter()
        .filter_map(|r| r.fields["Name"].as_str())
        .collect();
    assert_eq!(names.len(), 1000);
    // A selective query over all of it stays quick.
    let started = Instant::now();
    let answer = h
        .query("SELECT Id, Email FROM Contact WHERE MailingCountry = 'germany' AND LeadSource IN ('Web', 'Other') ORDER BY Email LIMIT 100")
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["records"].as_array().map(Vec::len), Some(100));
    assert!(started.elapsed().as_secs_f64() < 2.0);
    assert_eq!(h.sandbox.state().calls(QUERY), 3);
}
