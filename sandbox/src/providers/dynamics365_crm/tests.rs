//! The contact/account stand-in driven over HTTP (through the provider dispatcher).

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::providers::ProviderRequest;

const ENV: &str = "acme.crm.dynamics.com";
const API: &str = "/api/data/v9.2";

fn token(state: &SandboxState, scope: &str) -> String {
    let grant = state
        .seed_grant(
            OAuthProvider::Dynamics365,
            "dynamics365-sandbox-client-id",
            None,
            &[scope],
        )
        .unwrap();
    format!("Bearer {}", grant.access_token)
}

fn env_token(state: &SandboxState) -> String {
    state.dyn_crm_serve_contacts("acme", true);
    token(state, "https://acme.crm.dynamics.com/user_impersonation")
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(
    state: &SandboxState,
    method: Method,
    url: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let url = url.strip_prefix(&format!("https://{ENV}")).unwrap_or(url);
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (url.to_owned(), None),
    };
    let mut map = HeaderMap::new();
    if let Some(auth) = auth {
        map.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
    }
    for (k, v) in headers {
        map.append(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let req = ProviderRequest {
        method,
        host: ENV.to_owned(),
        path,
        query,
        headers: map,
        body: Bytes::from(body.to_owned()),
    };
    let response = crate::providers::dispatch(state, req).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(state: &SandboxState, auth: &str, url: &str, prefer: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = prefer.map(|p| ("prefer", p)).into_iter().collect();
    send(state, Method::GET, url, Some(auth), &headers, "").await
}

fn code(reply: &Reply) -> String {
    reply.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn needs_a_token_for_this_environment() {
    let state = SandboxState::new();
    let none = send(
        &state,
        Method::GET,
        &format!("{API}/contacts"),
        None,
        &[],
        "",
    )
    .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(none.text.is_empty());
    let other = token(&state, "https://other.crm.dynamics.com/user_impersonation");
    let reply = get(&state, &other, &format!("{API}/contacts"), None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.header("www-authenticate").contains(ENV));
    let graph = token(&state, "openid");
    let reply = get(&state, &graph, &format!("{API}/accounts"), None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let ok = get(&state, &env_token(&state), &format!("{API}/accounts"), None).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.header("odata-version"), "4.0");
}

#[tokio::test]
async fn lists_modified_since_in_pages() {
    let state = SandboxState::new();
    let ids = state.seed_dynamics_crm("acme", DynTable::Contact, 250, 7);
    let auth = env_token(&state);
    let records = state.dyn_crm_records("acme", DynTable::Contact);
    let mut by_time = records.clone();
    by_time.sort_by_key(|r| (r.modified_on, r.id.clone()));
    let since = iso(by_time[100].modified_on);
    let expected: BTreeSet<String> = records
        .iter()
        .filter(|r| r.modified_on >= by_time[100].modified_on)
        .map(|r| r.id.clone())
        .collect();
    let mut url = format!(
        "{API}/contacts?$select=fullname,emailaddress1,modifiedon&$filter=modifiedon ge {since}&$orderby=modifiedon asc"
    );
    let mut seen = Vec::new();
    let mut last = String::new();
    loop {
        let reply = get(&state, &auth, &url, Some("odata.maxpagesize=40")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.header("preference-applied"), "odata.maxpagesize=40");
        let body = reply.json();
        for row in body["value"].as_array().unwrap() {
            let m = row["modifiedon"].as_str().unwrap().to_owned();
            assert!(m >= last);
            last = m;
            assert!(row["@odata.etag"].as_str().unwrap().starts_with("W/\""));
            assert!(row.get("telephone1").is_none());
            seen.push(row["contactid"].as_str().unwrap().to_owned());
        }
        match body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), expected.len());
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(ids.len(), 250);
}

#[tokio::test]
async fn finds_by_email_and_refuses_bad_queries() {
    let state = SandboxState::new();
    state.seed_dynamics_crm("acme", DynTable::Contact, 20, 1);
    let auth = env_token(&state);
    let target = state.dyn_crm_records("acme", DynTable::Contact)[3].clone();
    let email = target.text("emailaddress1").unwrap().to_uppercase();
    let reply = get(
        &state,
        &auth,
        &format!("{API}/contacts?$filter=emailaddress1 eq '{email}' or emailaddress2 eq '{email}'"),
        None,
    )
    .await;
    let rows = reply.json()["value"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["contactid"], json!(target.id));
    let reply = get(
        &state,
        &auth,
        &format!("{API}/contacts?$filter=nope eq 'x'"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&reply), "0x0");
    let reply = get(
        &state,
        &auth,
        &format!("{API}/contacts?$filter=emailaddress1 eq 5"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = get(
        &state,
        &auth,
        &format!("{API}/contacts?$expand=parentcustomerid_account"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = get(&state, &auth, &format!("{API}/contacts?$top=2"), None).await;
    assert_eq!(reply.json()["value"].as_array().unwrap().len(), 2);
    assert!(reply.json().get("@odata.nextLink").is_none());
}

#[tokio::test]
async fn creates_updates_upserts_and_deletes() {
    let state = SandboxState::new();
    let auth = env_token(&state);
    let ct = [("content-type", "application/json")];
    let created = send(
        &state,
        Method::POST,
        &format!("{API}/accounts"),
        Some(&auth),
        &ct,
        r#"{"name":"Contoso","websiteurl":"https://contoso.example"}"#,
    )
    .await;
    assert_eq!(created.status, StatusCode::NO_CONTENT, "{}", created.text);
    let entity = created.header("odata-entityid").to_owned();
    assert!(entity.starts_with(&format!("https://{ENV}{API}/accounts(")));
    let account_id = entity
        .rsplit_once('(')
        .unwrap()
        .1
        .trim_end_matches(')')
        .to_owned();

    let contact = send(
        &state,
        Method::POST,
        &format!("{API}/contacts?$select=fullname,_parentcustomerid_value"),
        Some(&auth),
        &[("prefer", "return=representation")],
        &format!(
            r#"{{"firstname":"Ada","lastname":"Lovelace","emailaddress1":"ada@example.test","parentcustomerid_account@odata.bind":"/accounts({account_id})"}}"#
        ),
    )
    .await;
    assert_eq!(contact.status, StatusCode::CREATED, "{}", contact.text);
    let body = contact.json();
    assert_eq!(body["fullname"], json!("Ada Lovelace"));
    assert_eq!(body["_parentcustomerid_value"], json!(account_id));
    let id = body["contactid"].as_str().unwrap().to_owned();
    let etag = body["@odata.etag"].as_str().unwrap().to_owned();

    // Validation.
    for (payload, status, code_) in [
        (r#"{"nope":"x"}"#, StatusCode::BAD_REQUEST, "0x80048d19"),
        (
            r#"{"nope@odata.bind":"/accounts(1)"}"#,
            StatusCode::BAD_REQUEST,
            "0x80048d19",
        ),
        (r#"{"fullname":"x"}"#, StatusCode::BAD_REQUEST, "0x80040203"),
        (r#"{"firstname":5}"#, StatusCode::BAD_REQUEST, "0x80048d19"),
        (
            r#"{"statecode":1,"statuscode":1}"#,
            StatusCode::BAD_REQUEST,
            "0x80040203",
        ),
        (
            &format!(r#"{{"firstname":"{}"}}"#, "x".repeat(51)),
            StatusCode::BAD_REQUEST,
            "0x80044331",
        ),
        (
            r#"{"parentcustomerid_account@odata.bind":"/accounts(00000000-0000-4000-8000-000000000000)"}"#,
            StatusCode::NOT_FOUND,
            "0x80040217",
        ),
    ] {
        let reply = send(
            &state,
            Method::POST,
            &format!("{API}/contacts"),
            Some(&auth),
            &ct,
            payload,
        )
        .await;
        assert_eq!(reply.status, status, "{payload}: {}", reply.text);
        assert_eq!(code(&reply), code_, "{payload}");
    }

    // Duplicate detection only when asked for.
    let dup = r#"{"lastname":"Twin","emailaddress1":"ADA@example.test"}"#;
    let refused = send(
        &state,
        Method::POST,
        &format!("{API}/contacts"),
        Some(&auth),
        &[("mscrm.suppressduplicatedetection", "false")],
        dup,
    )
    .await;
    assert_eq!(refused.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(code(&refused), "0x80040333");
    let allowed = send(
        &state,
        Method::POST,
        &format!("{API}/contacts"),
        Some(&auth),
        &ct,
        dup,
    )
    .await;
    assert_eq!(allowed.status, StatusCode::NO_CONTENT);

    // Update with a stale etag, then the right one.
    let url = format!("{API}/contacts({id})");
    let stale = send(
        &state,
        Method::PATCH,
        &url,
        Some(&auth),
        &[("if-match", "W/\"1\"")],
        r#"{"jobtitle":"CTO"}"#,
    )
    .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let ok = send(
        &state,
        Method::PATCH,
        &url,
        Some(&auth),
        &[("if-match", etag.as_str())],
        r#"{"jobtitle":"CTO","lastname":"King"}"#,
    )
    .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{}", ok.text);
    let row = state
        .dyn_crm_record("acme", DynTable::Contact, &id)
        .unwrap();
    assert_eq!(row.text("fullname"), Some("Ada King"));

    // Upsert: creates with the URL's id; If-Match: * refuses to create.
    let new_id = "11111111-2222-4333-8444-555555555555";
    let url2 = format!("{API}/contacts({new_id})");
    let refused = send(
        &state,
        Method::PATCH,
        &url2,
        Some(&auth),
        &[("if-match", "*")],
        r#"{"lastname":"X"}"#,
    )
    .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    let upsert = send(
        &state,
        Method::PATCH,
        &url2,
        Some(&auth),
        &[],
        r#"{"lastname":"X"}"#,
    )
    .await;
    assert_eq!(upsert.status, StatusCode::NO_CONTENT);
    assert!(upsert.header("odata-entityid").contains(new_id));
    let again = send(
        &state,
        Method::PATCH,
        &url2,
        Some(&auth),
        &[("if-none-match", "*")],
        r#"{"lastname":"Y"}"#,
    )
    .await;
    assert_eq!(again.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(code(&again), "0x80040237");

    let read = get(&state, &auth, &format!("{url2}?$select=lastname"), None).await;
    let etag = read.json()["@odata.etag"].as_str().unwrap().to_owned();
    let unchanged = send(
        &state,
        Method::GET,
        &url2,
        Some(&auth),
        &[("if-none-match", etag.as_str())],
        "",
    )
    .await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert_eq!(read.json()["lastname"], json!("X"));
    assert!(
        read.json()["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/$entity")
    );

    let deleted = send(&state, Method::DELETE, &url2, Some(&auth), &[], "").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = get(&state, &auth, &url2, None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(code(&gone), "0x80040217");
    let twice = send(&state, Method::DELETE, &url2, Some(&auth), &[], "").await;
    assert_eq!(twice.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn change_tracking_reports_changes_and_deletions() {
    let state = SandboxState::new();
    let ids = state.seed_dynamics_crm("acme", DynTable::Contact, 30, 3);
    let auth = env_token(&state);
    let mut url = format!("{API}/contacts?$select=fullname,modifiedon");
    let mut initial = 0;
    let delta_link = loop {
        let reply = get(
            &state,
            &auth,
            &url,
            Some("odata.track-changes,odata.maxpagesize=12"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert!(
            reply
                .header("preference-applied")
                .contains("odata.track-changes")
        );
        let body = reply.json();
        initial += body["value"].as_array().unwrap().len();
        if let Some(next) = body["@odata.nextLink"].as_str() {
            assert!(next.contains("istracking%3D%22True%22"));
            url = next.to_owned();
        } else {
            break body["@odata.deltaLink"].as_str().unwrap().to_owned();
        }
    };
    assert_eq!(initial, 30);
    assert!(delta_link.contains("$deltatoken="));

    state.dyn_crm_update(
        "acme",
        DynTable::Contact,
        &ids[0],
        serde_json::Map::from_iter([("jobtitle".to_owned(), json!("CEO"))]),
    );
    assert!(state.dyn_crm_delete("acme", DynTable::Contact, &ids[1]));
    let created = state.dyn_crm_create(
        "acme",
        DynTable::Contact,
        serde_json::Map::from_iter([("lastname".to_owned(), json!("New"))]),
    );

    let reply = get(&state, &auth, &delta_link, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let body = reply.json();
    let value = body["value"].as_array().unwrap();
    assert_eq!(value.len(), 3);
    let changed: BTreeSet<&str> = value
        .iter()
        .filter_map(|v| v["contactid"].as_str())
        .collect();
    assert_eq!(
        changed,
        BTreeSet::from([ids[0].as_str(), created.id.as_str()])
    );
    let deleted = value
        .iter()
        .find(|v| v["reason"] == json!("deleted"))
        .unwrap();
    assert_eq!(deleted["id"], json!(ids[1]));
    assert!(
        deleted["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#contacts/$deletedEntity")
    );
    let next = body["@odata.deltaLink"].as_str().unwrap().to_owned();
    let quiet = get(&state, &auth, &next, None).await;
    assert_eq!(quiet.json()["value"].as_array().unwrap().len(), 0);

    // Filters do not go with tracking; old and foreign tokens expire.
    let reply = get(
        &state,
        &auth,
        &format!("{API}/contacts?$filter=lastname eq 'x'"),
        Some("odata.track-changes"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = get(
        &state,
        &auth,
        &format!("{API}/contacts?$deltatoken=nonsense"),
        None,
    )
    .await;
    assert_eq!(code(&reply), "0x80044352");
    state.dyn_crm_advance_clock("acme", CHANGE_RETENTION_DAYS * 86_400 + 10);
    let reply = get(&state, &auth, &next, None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&reply), "0x80044352");

    state.dyn_crm_set_change_tracking("acme", DynTable::Account, false);
    let reply = get(
        &state,
        &auth,
        &format!("{API}/accounts"),
        Some("odata.track-changes"),
    )
    .await;
    assert_eq!(code(&reply), "0x80072491");
}

fn batch_body(boundary: &str, parts: &[String]) -> String {
    let mut out = String::new();
    for p in parts {
        out.push_str(&format!("--{boundary}\r\n{p}"));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

fn http(method: &str, url: &str, body: Option<&str>, content_id: Option<u32>) -> String {
    let cid = content_id
        .map(|c| format!("Content-ID: {c}\r\n"))
        .unwrap_or_default();
    let body = body
        .map(|b| format!("Content-Type: application/json\r\n\r\n{b}\r\n"))
        .unwrap_or_else(|| "\r\n".to_owned());
    format!(
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n{cid}\r\n{method} {url} HTTP/1.1\r\n{body}"
    )
}

fn changeset(boundary: &str, parts: &[String]) -> String {
    format!(
        "Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n{}",
        batch_body(boundary, parts)
    )
}

#[tokio::test]
async fn batches_with_change_sets_are_all_or_nothing() {
    let state = SandboxState::new();
    let auth = env_token(&state);
    let ok = changeset(
        "changeset_a",
        &[
            http(
                "POST",
                &format!("https://{ENV}{API}/accounts"),
                Some(r#"{"name":"Fabrikam"}"#),
                Some(1),
            ),
            http(
                "POST",
                &format!("{API}/contacts"),
                Some(r#"{"lastname":"Berg","parentcustomerid_account@odata.bind":"$1"}"#),
                Some(2),
            ),
            http("PATCH", "$1", Some(r#"{"accountnumber":"A-1"}"#), Some(3)),
        ],
    );
    let bad = changeset(
        "changeset_b",
        &[
            http("POST", "contacts", Some(r#"{"lastname":"Kept?"}"#), Some(1)),
            http("POST", "contacts", Some(r#"{"nope":1}"#), Some(2)),
        ],
    );
    let read = http(
        "GET",
        &format!("{API}/accounts?$select=name,accountnumber"),
        None,
        None,
    );
    let body = batch_body("batch_x", &[ok, bad, read]);
    let ct = [
        ("content-type", "multipart/mixed; boundary=batch_x"),
        ("prefer", "odata.continue-on-error"),
    ];
    let reply = send(
        &state,
        Method::POST,
        &format!("{API}/$batch"),
        Some(&auth),
        &ct,
        &body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(
        reply
            .header("content-type")
            .starts_with("multipart/mixed; boundary=batchresponse_")
    );
    assert_eq!(
        reply.text.matches("HTTP/1.1 204 No Content").count(),
        3,
        "{}",
        reply.text
    );
    assert_eq!(reply.text.matches("HTTP/1.1 400 Bad Request").count(), 1);
    assert!(reply.text.contains("Content-ID: 2"));
    assert!(reply.text.contains("Location: https://"));
    assert!(reply.text.contains("\"accountnumber\":\"A-1\""));
    let contacts = state.dyn_crm_records("acme", DynTable::Contact);
    assert_eq!(contacts.len(), 1, "the failed change set left nothing");
    let account = &state.dyn_crm_records("acme", DynTable::Account)[0];
    assert_eq!(
        contacts[0].text("parentcustomerid"),
        Some(account.id.as_str())
    );

    // Without continue-on-error the first failure stops the batch.
    let body = batch_body(
        "batch_y",
        &[
            http(
                "DELETE",
                "contacts(00000000-0000-4000-8000-000000000000)",
                None,
                None,
            ),
            http("POST", "contacts", Some(r#"{"lastname":"Never"}"#), None),
        ],
    );
    let reply = send(
        &state,
        Method::POST,
        &format!("{API}/$batch"),
        Some(&auth),
        &[("content-type", "multipart/mixed; boundary=batch_y")],
        &body,
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "the first failure's status"
    );
    assert_eq!(reply.text.matches("HTTP/1.1").count(), 1, "{}", reply.text);
    assert_eq!(state.dyn_crm_records("acme", DynTable::Contact).len(), 1);

    // A reference no earlier request of the change set declared.
    let body = batch_body(
        "batch_r",
        &[changeset(
            "changeset_r",
            &[http("PATCH", "$7", Some(r#"{"lastname":"Q"}"#), Some(1))],
        )],
    );
    let reply = send(
        &state,
        Method::POST,
        &format!("{API}/$batch"),
        Some(&auth),
        &[("content-type", "multipart/mixed; boundary=\"batch_r\"")],
        &body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply
            .text
            .contains("Content-ID Reference: '$7' does not exist in the batch context."),
        "{}",
        reply.text
    );

    // Over 1,000 requests: refused whole.
    let parts: Vec<String> = (0..1001)
        .map(|_| http("POST", "contacts", Some(r#"{"lastname":"Z"}"#), None))
        .collect();
    let reply = send(
        &state,
        Method::POST,
        &format!("{API}/$batch"),
        Some(&auth),
        &[("content-type", "multipart/mixed; boundary=batch_z")],
        &batch_body("batch_z", &parts),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(state.dyn_crm_records("acme", DynTable::Contact).len(), 1);
    let reply = send(
        &state,
        Method::POST,
        &format!("{API}/$batch"),
        Some(&auth),
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn custom_marker_column_through_metadata() {
    let state = SandboxState::new();
    let auth = env_token(&state);
    let attrs = get(
        &state,
        &auth,
        &format!("{API}/EntityDefinitions(LogicalName='contact')/Attributes?$select=LogicalName,AttributeType,IsValidForCreate,IsValidForUpdate,IsCustomAttribute,DisplayName"),
        None,
    )
    .await;
    assert_eq!(attrs.status, StatusCode::OK, "{}", attrs.text);
    let value = attrs.json()["value"].as_array().unwrap().clone();
    let email = value
        .iter()
        .find(|a| a["LogicalName"] == json!("emailaddress1"))
        .unwrap();
    assert_eq!(email["AttributeType"], json!("String"));
    assert_eq!(
        email["DisplayName"]["UserLocalizedLabel"]["Label"],
        json!("Email")
    );
    let fullname = value
        .iter()
        .find(|a| a["LogicalName"] == json!("fullname"))
        .unwrap();
    assert_eq!(fullname["IsValidForCreate"], json!(false));

    let column = |schema: &str| {
        json!({
            "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
            "SchemaName": schema,
            "MaxLength": 64,
            "RequiredLevel": {"Value": "None"},
            "DisplayName": {"@odata.type": "Microsoft.Dynamics.CRM.Label", "LocalizedLabels": [{"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": "Conduit ID", "LanguageCode": 1033}]},
        })
        .to_string()
    };
    let url = format!("{API}/EntityDefinitions(LogicalName='contact')/Attributes");
    let bad = send(
        &state,
        Method::POST,
        &url,
        Some(&auth),
        &[],
        &column("xyz_ConduitId"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let made = send(
        &state,
        Method::POST,
        &url,
        Some(&auth),
        &[],
        &column("new_ConduitId"),
    )
    .await;
    assert_eq!(made.status, StatusCode::NO_CONTENT, "{}", made.text);
    assert!(made.header("odata-entityid").contains("/Attributes("));
    let again = send(
        &state,
        Method::POST,
        &url,
        Some(&auth),
        &[],
        &column("new_ConduitId"),
    )
    .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);

    let custom = get(
        &state,
        &auth,
        &format!("{url}?$filter=IsCustomAttribute eq true&$select=LogicalName"),
        None,
    )
    .await;
    assert_eq!(
        custom.json()["value"][0]["LogicalName"],
        json!("new_conduitid")
    );

    let created = send(
        &state,
        Method::POST,
        &format!("{API}/contacts"),
        Some(&auth),
        &[],
        r#"{"lastname":"M","new_conduitid":"rec-42"}"#,
    )
    .await;
    assert_eq!(created.status, StatusCode::NO_CONTENT, "{}", created.text);
    let found = get(
        &state,
        &auth,
        &format!("{API}/contacts?$filter=new_conduitid eq 'rec-42'&$select=new_conduitid"),
        None,
    )
    .await;
    assert_eq!(found.json()["value"].as_array().unwrap().len(), 1);
    let too_long = send(
        &state,
        Method::POST,
        &format!("{API}/contacts"),
        Some(&auth),
        &[],
        &format!(r#"{{"new_conduitid":"{}"}}"#, "x".repeat(65)),
    )
    .await;
    assert_eq!(code(&too_long), "0x80044331");

    let def = get(&state, &auth, &format!("{API}/EntityDefinitions(LogicalName='account')?$select=EntitySetName,ChangeTrackingEnabled"), None).await;
    assert_eq!(def.json()["EntitySetName"], json!("accounts"));
    assert_eq!(def.json()["ChangeTrackingEnabled"], json!(true));
}

#[tokio::test]
async fn service_protection_limits_and_headers() {
    let state = SandboxState::new();
    let auth = env_token(&state);
    state.dyn_crm_set_limits(
        "acme",
        DynCrmLimits {
            requests_per_window: 3,
            execution_ms_per_window: 1_000_000,
            ms_per_operation: 20,
        },
    );
    let url = format!("{API}/contacts");
    let first = get(&state, &auth, &url, None).await;
    assert_eq!(
        first.header("x-ms-ratelimit-burst-remaining-xrm-requests"),
        "2"
    );
    assert_eq!(
        first.header("x-ms-ratelimit-time-remaining-xrm-requests"),
        "999,980.00"
    );
    get(&state, &auth, &url, None).await;
    get(&state, &auth, &url, None).await;
    let refused = get(&state, &auth, &url, None).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code(&refused), REQUESTS_LIMIT_CODE);
    let retry: u64 = refused.header("retry-after").parse().unwrap();
    assert!((1..=WINDOW_SECS).contains(&retry));
    assert_eq!(
        refused.json()["error"]["message"],
        json!("Number of requests exceeded the limit of 3 over time window of 300 seconds.")
    );

    state.dyn_crm_set_limits(
        "acme",
        DynCrmLimits {
            requests_per_window: 100,
            execution_ms_per_window: 50,
            ms_per_operation: 30,
        },
    );
    assert_eq!(get(&state, &auth, &url, None).await.status, StatusCode::OK);
    assert_eq!(get(&state, &auth, &url, None).await.status, StatusCode::OK);
    let slow = get(&state, &auth, &url, None).await;
    assert_eq!(slow.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code(&slow), TIME_LIMIT_CODE);

    state.dyn_crm_set_limits("acme", DynCrmLimits::default());
    state.dyn_crm_throttle_next("acme", DynLimit::Concurrency, 1, 7);
    let forced = get(&state, &auth, &url, None).await;
    assert_eq!(code(&forced), CONCURRENCY_LIMIT_CODE);
    assert_eq!(forced.header("retry-after"), "7");
    assert_eq!(get(&state, &auth, &url, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_answers_on_request() {
    let state = SandboxState::new();
    let auth = env_token(&state);
    state.malform_dynamics_responses(CRM_LIST, 1);
    let broken = get(&state, &auth, &format!("{API}/contacts"), None).await;
    assert_eq!(broken.status, StatusCode::OK);
    assert!(serde_json::from_str::<Value>(&broken.text).is_err());
    let fine = get(&state, &auth, &format!("{API}/contacts"), None).await;
    assert!(fine.json().is_object());
}

#[test]
fn seeding_is_deterministic_and_fast() {
    let state = SandboxState::new();
    let started = std::time::Instant::now();
    let a = state.seed_dynamics_crm("acme", DynTable::Account, 10_000, 5);
    assert!(started.elapsed().as_secs_f64() < 2.0);
    let b = state.seed_dynamics_crm("acme", DynTable::Account, 10_000, 5);
    assert_eq!(a, b);
    assert_eq!(
        state.dyn_crm_records("acme", DynTable::Account).len(),
        10_000
    );
    let names: BTreeSet<String> = state
        .dyn_crm_records("acme", DynTable::Account)
        .iter()
        .map(|r| r.text("name").unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 10_000);
}

#[tokio::test]
async fn control_routes_drive_the_store() {
    let sandbox = crate::Sandbox::start(0).await.unwrap();
    let client = reqwest::Client::new();
    let base = sandbox.url();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}/_sandbox/dynamics365/{path}"))
            .json(&body)
            .send()
    };
    let seeded: Value = post("seed", json!({"table": "contact", "count": 5, "seed": 2}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = seeded["ids"][0].as_str().unwrap().to_owned();
    let updated = post(
        "update",
        json!({"table": "contact", "id": id, "changes": {"jobtitle": "Pilot"}}),
    )
    .await
    .unwrap();
    assert_eq!(updated.status(), reqwest::StatusCode::OK);
    let records: Value = client
        .get(format!("{base}/_sandbox/dynamics365/records?table=contact"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(records["results"].as_array().unwrap().len(), 5);
    let bad = post("limits", json!({"requests_per_window": 2, "bogus": 1}))
        .await
        .unwrap();
    assert_eq!(bad.status(), reqwest::StatusCode::OK);
    let throttle = post("throttle", json!({"limit": "execution_time", "count": 1}))
        .await
        .unwrap();
    assert_eq!(throttle.status(), reqwest::StatusCode::OK);
    let state = sandbox.state();
    let auth = env_token(&state);
    let refused = get(&state, &auth, &format!("{API}/accounts"), None).await;
    assert_eq!(code(&refused), TIME_LIMIT_CODE);
    let deleted = post("delete", json!({"table": "contact", "id": id}))
        .await
        .unwrap();
    assert_eq!(deleted.status(), reqwest::StatusCode::OK);
    assert_eq!(state.dyn_crm_records("acme", DynTable::Contact).len(), 4);
}

#[tokio::test]
async fn contact_collection_goes_to_the_dispatch_actions_until_switched() {
    let state = SandboxState::new();
    let auth = token(&state, "https://acme.crm.dynamics.com/user_impersonation");
    get(&state, &auth, &format!("{API}/contacts?$top=1"), None).await;
    assert_eq!(state.calls("dynamics365.contacts_query"), 1);
    assert_eq!(state.calls(CRM_LIST), 0);
    // Accounts and single contacts are always this module's.
    get(&state, &auth, &format!("{API}/accounts"), None).await;
    assert_eq!(state.calls(CRM_LIST), 1);
    state.dyn_crm_serve_contacts("acme", true);
    get(&state, &auth, &format!("{API}/contacts?$top=1"), None).await;
    assert_eq!(state.calls(CRM_LIST), 2);
    assert_eq!(state.calls("dynamics365.contacts_query"), 1);
}

#[tokio::test]
async fn delta_pages_and_reseeding_expires_tokens() {
    let state = SandboxState::new();
    let ids = state.seed_dynamics_crm("acme", DynTable::Account, 10, 9);
    let auth = env_token(&state);
    let first = get(
        &state,
        &auth,
        &format!("{API}/accounts?$select=name"),
        Some("odata.track-changes"),
    )
    .await;
    let body = first.json();
    assert_eq!(body["value"].as_array().unwrap().len(), 10);
    assert!(
        !body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/$delta")
    );
    let delta = body["@odata.deltaLink"].as_str().unwrap().to_owned();
    for id in &ids[..5] {
        state.dyn_crm_update(
            "acme",
            DynTable::Account,
            id,
            serde_json::Map::from_iter([("description".to_owned(), json!("changed"))]),
        );
    }
    state.dyn_crm_delete("acme", DynTable::Account, &ids[9]);
    let mut url = delta;
    let mut seen = Vec::new();
    let last = loop {
        let reply = get(&state, &auth, &url, Some("odata.maxpagesize=2")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let body = reply.json();
        assert!(
            body["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("/$delta")
        );
        for row in body["value"].as_array().unwrap() {
            seen.push(
                row["accountid"]
                    .as_str()
                    .or(row["id"].as_str())
                    .unwrap()
                    .to_owned(),
            );
        }
        match body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break body["@odata.deltaLink"].as_str().unwrap().to_owned(),
        }
    };
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[5], ids[9]);
    state.seed_dynamics_crm("acme", DynTable::Account, 3, 1);
    let expired = get(&state, &auth, &last, None).await;
    assert_eq!(code(&expired), "0x80044352");
    // A fresh initial sync works at once.
    let fresh = get(
        &state,
        &auth,
        &format!("{API}/accounts"),
        Some("odata.track-changes"),
    )
    .await;
    let link = fresh.json()["@odata.deltaLink"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(get(&state, &auth, &link, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn attributes_answer_attribute_of() {
    let state = SandboxState::new();
    let auth = env_token(&state);
    let attrs = get(
        &state,
        &auth,
        &format!("{API}/EntityDefinitions(LogicalName='contact')/Attributes?$select=LogicalName,AttributeOf"),
        None,
    )
    .await;
    assert_eq!(attrs.status, StatusCode::OK, "{}", attrs.text);
    let value = attrs.json()["value"].as_array().unwrap().clone();
    assert!(!value.is_empty());
    // No column of the stand-in derives from another: the member is there, null.
    assert!(
        value
            .iter()
            .all(|a| a.as_object().unwrap().get("AttributeOf") == Some(&Value::Null))
    );
}

async fn send_json(
    state: &SandboxState,
    auth: &str,
    method: Method,
    url: &str,
    body: Value,
) -> Reply {
    send(
        state,
        method,
        url,
        Some(auth),
        &[("content-type", "application/json"), ("if-match", "*")],
        &body.to_string(),
    )
    .await
}

#[tokio::test]
async fn opportunities_bind_their_account_and_contact_and_check_their_stage() {
    let state = SandboxState::new();
    let auth = env_token(&state);
    let account = state
        .seed_dynamics_crm(ENV, DynTable::Account, 1, 1)
        .remove(0);
    let contact = state
        .seed_dynamics_crm(ENV, DynTable::Contact, 1, 1)
        .remove(0);
    let url = format!("{API}/opportunities");
    let post = |body: Value| {
        let (state, auth, url) = (&state, &auth, &url);
        async move {
            send(
                state,
                Method::POST,
                url,
                Some(auth),
                &[("content-type", "application/json")],
                &body.to_string(),
            )
            .await
        }
    };

    // The Topic is required; lookups are written only through their navigation
    // property, to a row that exists.
    let r = post(json!({"estimatedvalue": 10})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = post(json!({"name": "Big", "parentaccountid": account})).await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::BAD_REQUEST, "0x80048d19".into())
    );
    let r = post(json!({"name": "Big", "_parentaccountid_value": account})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let gone = "00000000-0000-4000-8000-000000000001";
    let r =
        post(json!({"name": "Big", "parentaccountid@odata.bind": format!("/accounts({gone})")}))
            .await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::NOT_FOUND, "0x80040217".into()),
        "{}",
        r.text
    );
    let r =
        post(json!({"name": "Big", "parentaccountid@odata.bind": format!("/contacts({contact})")}))
            .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // A stage outside the option set; Money and dates typed.
    let r = post(json!({"name": "Big", "salesstage": 7})).await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::BAD_REQUEST, "0x8004431a".into()),
        "{}",
        r.text
    );
    assert!(r.text.contains("Accepted Values: 0,1,2,3"), "{}", r.text);
    let r = post(json!({"name": "Big", "salesstage": "Develop"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = post(json!({"name": "Big", "estimatedvalue": "a lot"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = post(json!({"name": "Big", "estimatedclosedate": "2027-02-30"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    let r = post(json!({
        "name": "Big", "estimatedvalue": 1250.505, "estimatedclosedate": "2027-03-31",
        "salesstage": 1,
        "parentaccountid@odata.bind": format!("/accounts({account})"),
        "parentcontactid@odata.bind": format!("https://{ENV}{API}/contacts({contact})"),
    }))
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let entity = r.header("odata-entityid").to_owned();
    let id = entity
        .rsplit_once('(')
        .map(|(_, id)| id.trim_end_matches(')').to_owned())
        .unwrap();
    let row = get(&state, &auth, &format!("{url}({id})"), None)
        .await
        .json();
    assert_eq!(row["_parentaccountid_value"], json!(account));
    assert_eq!(row["_parentcontactid_value"], json!(contact));
    assert_eq!(row["estimatedvalue"], json!(1250.51));
    assert_eq!(row["estimatedclosedate"], json!("2027-03-31"));
    assert_eq!(row["salesstage"], json!(1));
    assert!(row.get("parentaccountid").is_none());

    // Cleared by a null bind, or by DELETE …/$ref; won only through WinOpportunity.
    let holds = |column: &str| {
        state
            .dyn_crm_record(ENV, DynTable::Opportunity, &id)
            .is_some_and(|r| r.values.contains_key(column))
    };
    let one = format!("{url}({id})");
    let r = send_json(
        &state,
        &auth,
        Method::PATCH,
        &one,
        json!({"parentcontactid@odata.bind": null}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(!holds("parentcontactid"));
    let r = send(
        &state,
        Method::DELETE,
        &format!("{one}/parentaccountid/$ref"),
        Some(&auth),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(!holds("parentaccountid"));
    let r = send(
        &state,
        Method::DELETE,
        &format!("{one}/nothing/$ref"),
        Some(&auth),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = send_json(&state, &auth, Method::PATCH, &one, json!({"statecode": 1})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("WinOpportunityRequest"), "{}", r.text);

    // The stage's options, the lookups' targets.
    let defs = format!("{API}/EntityDefinitions(LogicalName='opportunity')/Attributes");
    let picklists = get(
        &state,
        &auth,
        &format!("{defs}/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options)"),
        None,
    )
    .await;
    assert_eq!(picklists.status, StatusCode::OK, "{}", picklists.text);
    let stage = &picklists.json()["value"][0];
    assert_eq!(stage["LogicalName"], "salesstage");
    assert_eq!(stage["OptionSet"]["Options"][3]["Value"], 3);
    assert_eq!(
        stage["OptionSet"]["Options"][3]["Label"]["UserLocalizedLabel"]["Label"],
        "Close"
    );
    let refused = get(&state, &auth, &format!("{defs}?$expand=OptionSet"), None).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    let lookups = get(
        &state,
        &auth,
        &format!(
            "{defs}/Microsoft.Dynamics.CRM.LookupAttributeMetadata?$select=LogicalName,Targets"
        ),
        None,
    )
    .await
    .json();
    let targets: Vec<(String, Value)> = lookups["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["LogicalName"].as_str().unwrap().to_owned(),
                a["Targets"].clone(),
            )
        })
        .collect();
    assert!(
        targets.contains(&("parentaccountid".into(), json!(["account"]))),
        "{targets:?}"
    );
    assert!(
        targets.contains(&("parentcontactid".into(), json!(["contact"]))),
        "{targets:?}"
    );

    // Deletions reach change tracking like the other tables'.
    let first = get(
        &state,
        &auth,
        &format!("{url}?$select=name"),
        Some("odata.track-changes"),
    )
    .await
    .json();
    let delta = first["@odata.deltaLink"].as_str().unwrap().to_owned();
    let r = send(&state, Method::DELETE, &one, Some(&auth), &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let changes = get(&state, &auth, &delta, None).await.json();
    assert_eq!(changes["value"][0]["id"], json!(id), "{changes}");
    assert_eq!(changes["value"][0]["reason"], "deleted");

    // A security role without the opportunity privileges.
    state.dyn_crm_set_table_privileges(ENV, DynTable::Opportunity, false);
    let r = get(&state, &auth, &url, None).await;
    assert_eq!(
        (r.status, code(&r)),
        (StatusCode::FORBIDDEN, "0x80040220".into())
    );
    assert!(
        r.text.contains("prvReadOpportunity") && r.text.contains("OTC=3"),
        "{}",
        r.text
    );
    let r = post(json!({"name": "Big"})).await;
    assert!(r.text.contains("prvCreateOpportunity"), "{}", r.text);
    assert_eq!(
        get(&state, &auth, &format!("{API}/accounts"), None)
            .await
            .status,
        StatusCode::OK
    );
    state.dyn_crm_set_table_privileges(ENV, DynTable::Opportunity, true);
    assert_eq!(get(&state, &auth, &url, None).await.status, StatusCode::OK);
}
