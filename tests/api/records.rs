//! The records API: the lifecycle of a record, validation, unique keys, tenant
//! isolation, roles, paging and the platform filter over records a sync linked.

use std::collections::{BTreeMap, BTreeSet};

use conduit::domain::{RecordId, TenantId, now};
use conduit::sync::records::{LinkedRecord, Record, Records, Source};
use conduit::sync::schema::Entity;
use scenarios::{Role, TestApp};
use serde_json::{Value, json};

fn ids(list: &Value) -> Vec<String> {
    list["records"]
        .as_array()
        .unwrap_or_else(|| panic!("records in {list}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every id of a listing, following its cursors.
async fn all_ids(app: &TestApp, token: &str, path: &str) -> Vec<String> {
    app.all_pages(path, token, "records")
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_record_is_created_found_changed_and_deleted() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);

    let (status, ann) = app
        .post(
            "/v1/records/contacts",
            &admin,
            json!({"fields": {"email": "Ann.Lee@Example.com", "first_name": " Ann ", "last_name": "Lee",
                              "job_title": "Head of Support", "birth_date": "1990-02-28"}}),
        )
        .await;
    assert_eq!(status, 201, "{ann}");
    let id = ann["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("rec_"));
    assert_eq!(ann["entity"], "contacts");
    assert_eq!(ann["name"], "Ann Lee");
    assert_eq!(ann["fields"]["first_name"], "Ann", "values are trimmed");
    assert_eq!(ann["sources"]["email"]["origin"], "app");
    assert!(ann["sources"]["email"].get("config_id").is_none());
    assert_eq!(ann["links"], json!([]));
    assert_eq!(ann["platforms"], json!([]));
    assert_eq!(ann["version"], 1);
    assert_eq!(ann["created_at"], ann["updated_at"]);
    let (_, bob) = app
        .post(
            "/v1/records/contacts",
            &admin,
            json!({"fields": {"email": "bob@example.com", "first_name": "Bob", "last_name": "Annan"}}),
        )
        .await;
    let bob_id = bob["id"].as_str().unwrap().to_owned();
    let (status, acme) = app
        .post(
            "/v1/records/companies",
            &admin,
            json!({"fields": {"name": "Acme Ltd", "domain": "https://www.acme.example/about",
                              "employees": 120, "annual_revenue": "2.5e6"}}),
        )
        .await;
    assert_eq!(status, 201, "{acme}");
    assert_eq!(acme["fields"]["employees"], "120");

    let (status, got) = app.get(&format!("/v1/records/contacts/{id}"), &admin).await;
    assert_eq!(status, 200);
    assert_eq!(got, ann);
    // Entities are separate: a contact id is no company.
    let (status, _) = app
        .get(&format!("/v1/records/companies/{id}"), &admin)
        .await;
    assert_eq!(status, 404);

    let (_, list) = app.get("/v1/records/contacts", &admin).await;
    let mut listed = ids(&list);
    listed.sort();
    let mut both = vec![id.clone(), bob_id.clone()];
    both.sort();
    assert_eq!(listed, both);
    assert_eq!(list["next_cursor"], Value::Null);
    let (_, companies) = app.get("/v1/records/companies", &admin).await;
    assert_eq!(ids(&companies), [acme["id"].as_str().unwrap()]);
    // Search: a name prefix (any case), an exact email, an exact domain in any form.
    let (_, found) = app.get("/v1/records/contacts?search=ANN", &admin).await;
    assert_eq!(ids(&found), [id.as_str()]);
    let (_, found) = app
        .get("/v1/records/contacts?search=bob%20ann", &admin)
        .await;
    assert_eq!(ids(&found), [bob_id.as_str()]);
    let (_, found) = app
        .get("/v1/records/contacts?search=ann.lee@example.COM", &admin)
        .await;
    assert_eq!(ids(&found), [id.as_str()]);
    let (_, found) = app
        .get("/v1/records/contacts?search=ann@example.com", &admin)
        .await;
    assert_eq!(ids(&found), Vec::<String>::new());
    let (_, found) = app
        .get("/v1/records/companies?search=ACME.example", &admin)
        .await;
    assert_eq!(ids(&found), [acme["id"].as_str().unwrap()]);
    let (_, found) = app
        .get("/v1/records/companies?search=acme%20ltd", &admin)
        .await;
    assert_eq!(ids(&found).len(), 1);

    // PATCH merges; null clears; the version moves once per change.
    let (status, patched) = app
        .patch(
            &format!("/v1/records/contacts/{id}"),
            &admin,
            json!({"fields": {"job_title": "CTO", "birth_date": null}}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["fields"]["job_title"], "CTO");
    assert!(patched["fields"].get("birth_date").is_none());
    assert!(patched["sources"].get("birth_date").is_none());
    assert_eq!(patched["fields"]["email"], "Ann.Lee@Example.com");
    // The same values again change nothing.
    let (status, same) = app
        .patch(
            &format!("/v1/records/contacts/{id}"),
            &admin,
            json!({"fields": {"job_title": "CTO"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(same["version"], 2);
    assert_eq!(same["updated_at"], patched["updated_at"]);

    // If-Match: a stale version is refused and changes nothing.
    let (status, err) = app
        .send_with(
            "PATCH",
            &format!("/v1/records/contacts/{id}"),
            &admin,
            Some(json!({"fields": {"job_title": "CEO"}})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, 412, "{err}");
    assert_eq!(err["error"]["code"], "precondition_failed");
    // PUT replaces every field; with the current version it goes through.
    let (status, put) = app
        .send_with(
            "PUT",
            &format!("/v1/records/contacts/{id}"),
            &admin,
            Some(json!({"fields": {"email": "ann@lee.example", "first_name": "Ann", "last_name": "Lee"}})),
            &[("if-match", "\"2\"")],
        )
        .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["version"], 3);
    assert_eq!(
        put["fields"],
        json!({"email": "ann@lee.example", "first_name": "Ann", "last_name": "Lee"})
    );
    // The key moved: the old email finds nothing and is free, the new one finds Ann.
    let (_, found) = app
        .get("/v1/records/contacts?search=ann.lee@example.com", &admin)
        .await;
    assert_eq!(ids(&found), Vec::<String>::new());
    let (_, found) = app
        .get("/v1/records/contacts?search=ann@lee.example", &admin)
        .await;
    assert_eq!(ids(&found), [id.as_str()]);

    // DELETE honours If-Match too, then the record is gone everywhere.
    let (status, _) = app
        .send_with(
            "DELETE",
            &format!("/v1/records/contacts/{id}"),
            &admin,
            None,
            &[("if-match", "2")],
        )
        .await;
    assert_eq!(status, 412);
    let (status, body) = app
        .delete(&format!("/v1/records/contacts/{id}"), &admin)
        .await;
    assert_eq!(status, 204, "{body}");
    for method in ["GET", "PATCH", "PUT", "DELETE"] {
        let body =
            (method != "GET" && method != "DELETE").then(|| json!({"fields": {"job_title": "x"}}));
        let (status, _) = app
            .send(method, &format!("/v1/records/contacts/{id}"), &admin, body)
            .await;
        assert_eq!(status, 404, "{method} after delete");
    }
    let (_, list) = app.get("/v1/records/contacts", &admin).await;
    assert_eq!(ids(&list), [bob_id.as_str()]);
    let (_, found) = app.get("/v1/records/contacts?search=ann", &admin).await;
    assert_eq!(ids(&found), Vec::<String>::new());
    // Its email is free for a new record.
    let (status, _) = app
        .post(
            "/v1/records/contacts",
            &admin,
            json!({"fields": {"email": "ANN@lee.example"}}),
        )
        .await;
    assert_eq!(status, 201);

    // The deleted record stays in the change feed, its version bumped.
    let store = Records::new(app.app().table);
    let tenant = TenantId::parse(&t).unwrap();
    let gone = store
        .get(&tenant, Entity::Contacts, &RecordId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(gone.deleted_at.is_some());
    assert_eq!(gone.version, 4);
    assert_eq!(gone.rev, 4);

    let actions = app.audit_actions(&t).await;
    for action in ["record.create", "record.update", "record.delete"] {
        assert!(
            actions.contains(&(action.to_owned(), "success".to_owned())),
            "{action} in {actions:?}"
        );
    }
    let details = app.audit_detail(&t, "record.update").await;
    assert!(details.contains("job_title"), "{details}");
    assert!(!details.contains("CTO") && !details.contains("lee.example"));
}

#[tokio::test]
async fn bad_input_is_refused_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let cases = [
        (json!({"fields": {"email": "not-an-email"}}), "email"),
        (json!({"fields": {"email": "a@b"}}), "email"),
        (
            json!({"fields": {"first_name": "Ann", "favourite": "x"}}),
            "favourite",
        ),
        (json!({"fields": {"first_name": 7}}), "first_name"),
        (json!({"fields": {"first_name": ["Ann"]}}), "first_name"),
        (json!({"fields": {"notes": "n".repeat(2001)}}), "notes"),
        (
            json!({"fields": {"birth_date": "1990-02-30"}}),
            "birth_date",
        ),
        (
            json!({"fields": {"birth_date": "28/02/1990"}}),
            "birth_date",
        ),
        (
            json!({"fields": {"website": "javascript:alert(1)"}}),
            "website",
        ),
        (json!({"fields": {"website": "not a url"}}), "website"),
        (json!({"fields": {"phone": "call me"}}), "phone"),
        (json!({"fields": {"last_name": "a\u{7}b"}}), "last_name"),
    ];
    for (body, field) in cases {
        let (status, err) = app.post("/v1/records/contacts", &admin, body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["code"], "invalid_fields", "{err}");
        assert_eq!(err["error"]["details"][0]["field"], field, "{err}");
    }
    let company_cases = [
        (json!({"fields": {"employees": "many"}}), "employees"),
        (json!({"fields": {"employees": true}}), "employees"),
        (
            json!({"fields": {"annual_revenue": "NaN"}}),
            "annual_revenue",
        ),
        (json!({"fields": {"domain": "localhost"}}), "domain"),
        (
            json!({"fields": {"domain": "ftp://acme.example"}}),
            "domain",
        ),
    ];
    for (body, field) in company_cases {
        let (status, err) = app
            .post("/v1/records/companies", &admin, body.clone())
            .await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["details"][0]["field"], field, "{err}");
    }
    // Every problem at once, none repeating its value.
    let (status, err) = app
        .post(
            "/v1/records/contacts",
            &admin,
            json!({"fields": {"email": "leaky-value-0001", "birth_date": "soon", "bogus": 1}}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        err["error"]["details"].as_array().unwrap().len(),
        3,
        "{err}"
    );
    assert!(!err.to_string().contains("leaky-value-0001"));

    let others: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        (
            "POST",
            "/v1/records/contacts",
            Some(json!({"fields": {}})),
            400,
            "empty_record",
        ),
        (
            "POST",
            "/v1/records/contacts",
            Some(json!({"fields": {"email": null}})),
            400,
            "empty_record",
        ),
        (
            "POST",
            "/v1/records/contacts",
            Some(json!({"fields": {"first_name": "A"}, "id": "rec_x"})),
            400,
            "invalid_fields",
        ),
        (
            "POST",
            "/v1/records/contacts",
            Some(json!({"first_name": "A"})),
            400,
            "invalid_fields",
        ),
        (
            "POST",
            "/v1/records/contacts",
            Some(json!({"fields": "A"})),
            400,
            "invalid_body",
        ),
        (
            "POST",
            "/v1/records/tickets",
            Some(json!({"fields": {"name": "A"}})),
            404,
            "not_found",
        ),
        ("GET", "/v1/records/tickets", None, 404, "not_found"),
        (
            "GET",
            "/v1/records/contacts/rec_123",
            None,
            400,
            "invalid_id",
        ),
        (
            "GET",
            "/v1/records/contacts?limit=0",
            None,
            400,
            "invalid_limit",
        ),
        (
            "GET",
            "/v1/records/contacts?limit=201",
            None,
            400,
            "invalid_limit",
        ),
        (
            "GET",
            "/v1/records/contacts?limit=ten",
            None,
            400,
            "invalid_limit",
        ),
        (
            "GET",
            "/v1/records/contacts?platform=nope",
            None,
            400,
            "unknown_provider",
        ),
        (
            "GET",
            "/v1/records/contacts?cursor=garbage",
            None,
            400,
            "invalid_cursor",
        ),
        (
            "GET",
            "/v1/records/contacts?search=a@b.io&cursor=x",
            None,
            400,
            "invalid_cursor",
        ),
        (
            "GET",
            "/v1/records/contacts?sort=name",
            None,
            400,
            "unknown_query_parameter",
        ),
        (
            "GET",
            "/v1/records/contacts?limit=1&limit=2",
            None,
            400,
            "repeated_query_parameter",
        ),
    ];
    for (method, path, body, status, code) in others {
        let (got, err) = app.send(method, path, &admin, body).await;
        assert_eq!(got, status, "{method} {path}: {err}");
        assert_eq!(err["error"]["code"], code, "{method} {path}: {err}");
    }
    let (status, _) = app
        .get(
            &format!("/v1/records/contacts?search={}", "a".repeat(201)),
            &admin,
        )
        .await;
    assert_eq!(status, 400);
    let (status, err) = app
        .send_raw(
            "POST",
            "/v1/records/contacts",
            &admin,
            "{nope".into(),
            "application/json",
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );
    let (status, _) = app
        .send_raw(
            "POST",
            "/v1/records/contacts",
            &admin,
            json!({"fields": {"first_name": "A"}}).to_string(),
            "text/plain",
        )
        .await;
    assert_eq!(status, 415);
    let huge = json!({"fields": {"notes": "x".repeat(300 * 1024)}}).to_string();
    let (status, _) = app
        .send_raw(
            "POST",
            "/v1/records/contacts",
            &admin,
            huge,
            "application/json",
        )
        .await;
    assert_eq!(status, 413);

    let (_, list) = app.get("/v1/records/contacts", &admin).await;
    assert_eq!(ids(&list), Vec::<String>::new(), "nothing was stored");
    let (_, list) = app.get("/v1/records/companies", &admin).await;
    assert_eq!(ids(&list), Vec::<String>::new(), "nothing was stored");

    // Updates are validated the same way and leave the record as it was.
    let (_, rec) = app
        .post(
            "/v1/records/contacts",
            &admin,
            json!({"fields": {"first_name": "Ann"}}),
        )
        .await;
    let path = format!("/v1/records/contacts/{}", rec["id"].as_str().unwrap());
    for (method, body) in [
        (
            "PATCH",
            json!({"fields": {"email": "nope", "first_name": "Bo"}}),
        ),
        ("PUT", json!({"fields": {"birth_date": "never"}})),
        ("PATCH", json!({"fields": {}})),
    ] {
        let (status, err) = app.send(method, &path, &admin, Some(body)).await;
        assert_eq!(status, 400, "{method}: {err}");
    }
    let (status, err) = app
        .send_with(
            "PATCH",
            &path,
            &admin,
            Some(json!({"fields": {"first_name": "Bo"}})),
            &[("if-match", "soon")],
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_if_match"))
    );
    let (_, same) = app.get(&path, &admin).await;
    assert_eq!(same, rec);
}

/// POSTs, sending again after a 500 that moto's TransactWriteItems gives when other
/// writes run during the table copy it takes first (nothing was written then).
async fn post_through_moto_500s(
    app: &TestApp,
    path: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    for _ in 0..10 {
        let (status, resp) = app.post(path, token, body.clone()).await;
        if status != 500 {
            return (status, resp);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{path} kept failing");
}

#[tokio::test]
async fn a_key_belongs_to_one_live_record() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let (_, ann) = app
        .post(
            "/v1/records/contacts",
            &admin,
            json!({"fields": {"email": "ann@example.com", "first_name": "Ann"}}),
        )
        .await;
    let ann_id = ann["id"].as_str().unwrap();
    let (status, err) = app
        .post(
            "/v1/records/contacts",
            &admin,
            json!({"fields": {"email": "  ANN@example.com ", "first_name": "Other"}}),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "duplicate_key");
    assert!(err["error"]["message"].as_str().unwrap().contains(ann_id));

    // Taking the key by update is refused too, and changes nothing.
    let (_, bob) = app
        .post(
            "/v1/records/contacts",
            &admin,
            json!({"fields": {"email": "bob@example.com", "first_name": "Bob"}}),
        )
        .await;
    let bob_path = format!("/v1/records/contacts/{}", bob["id"].as_str().unwrap());
    let (status, err) = app
        .patch(
            &bob_path,
            &admin,
            json!({"fields": {"email": "Ann@Example.com"}}),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "duplicate_key");
    let (_, same) = app.get(&bob_path, &admin).await;
    assert_eq!(same, bob);
    let (_, found) = app
        .get("/v1/records/contacts?search=bob@example.com", &admin)
        .await;
    assert_eq!(ids(&found), [bob["id"].as_str().unwrap()]);

    // Domains compare in their canonical form; other tenants may hold the same key.
    let (status, _) = app
        .post(
            "/v1/records/companies",
            &admin,
            json!({"fields": {"name": "Acme", "domain": "acme.example"}}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, err) = app
        .post(
            "/v1/records/companies",
            &admin,
            json!({"fields": {"name": "Acme 2", "domain": "https://WWW.acme.example/contact"}}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("duplicate_key"))
    );
    let other = app.token(&app.tenant(), Role::Admin);
    let (status, _) = app
        .post(
            "/v1/records/companies",
            &other,
            json!({"fields": {"name": "Acme", "domain": "acme.example"}}),
        )
        .await;
    assert_eq!(status, 201);

    // Racing creates of one email: exactly one wins.
    let results = futures::future::join_all((0..6).map(|i| {
        post_through_moto_500s(
            &app,
            "/v1/records/contacts",
            &admin,
            json!({"fields": {"email": "race@example.com", "first_name": format!("R{i}")}}),
        )
    }))
    .await;
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{results:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{results:?}"
    );
    let (_, found) = app.get("/v1/records/contacts?search=r", &admin).await;
    assert_eq!(ids(&found).len(), 1);
}

#[tokio::test]
async fn tenants_see_only_their_own_records() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant(), app.tenant());
    let admin_a = app.token(&a, Role::Admin);
    let admin_b = app.token(&b, Role::Admin);
    let (_, rec_a) = app
        .post(
            "/v1/records/contacts",
            &admin_a,
            json!({"fields": {"email": "same@example.com", "first_name": "Same"}}),
        )
        .await;
    let (status, rec_b) = app
        .post(
            "/v1/records/contacts",
            &admin_b,
            json!({"fields": {"email": "same@example.com", "first_name": "Same"}}),
        )
        .await;
    assert_eq!(status, 201);
    let path_a = format!("/v1/records/contacts/{}", rec_a["id"].as_str().unwrap());
    for (method, body) in [
        ("GET", None),
        ("PATCH", Some(json!({"fields": {"first_name": "Mine"}}))),
        ("PUT", Some(json!({"fields": {"first_name": "Mine"}}))),
        ("DELETE", None),
    ] {
        let (status, resp) = app.send(method, &path_a, &admin_b, body).await;
        assert_eq!(status, 404, "{method}: {resp}");
    }
    let (_, list_a) = app.get("/v1/records/contacts", &admin_a).await;
    let (_, list_b) = app.get("/v1/records/contacts", &admin_b).await;
    assert_eq!(ids(&list_a), [rec_a["id"].as_str().unwrap()]);
    assert_eq!(ids(&list_b), [rec_b["id"].as_str().unwrap()]);
    for q in ["search=same", "search=same@example.com"] {
        let (_, found) = app
            .get(&format!("/v1/records/contacts?{q}"), &admin_b)
            .await;
        assert_eq!(ids(&found), [rec_b["id"].as_str().unwrap()], "{q}");
    }
    // A cursor of one tenant's listing is refused in another's.
    for _ in 0..2 {
        app.post(
            "/v1/records/contacts",
            &admin_a,
            json!({"fields": {"first_name": "More"}}),
        )
        .await;
    }
    let (_, page) = app.get("/v1/records/contacts?limit=1", &admin_a).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, _) = app
        .get(
            &format!("/v1/records/contacts?limit=1&cursor={cursor}"),
            &admin_b,
        )
        .await;
    assert_eq!(status, 400);
    let (_, still) = app.get(&path_a, &admin_a).await;
    assert_eq!(still, rec_a);
}

#[tokio::test]
async fn members_read_and_only_admins_write() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let member = app.token(&t, Role::Member);
    let (_, rec) = app
        .post(
            "/v1/records/companies",
            &admin,
            json!({"fields": {"name": "Acme", "domain": "acme.example"}}),
        )
        .await;
    let path = format!("/v1/records/companies/{}", rec["id"].as_str().unwrap());
    let (status, got) = app.get(&path, &member).await;
    assert_eq!((status, &got), (200, &rec));
    let (status, list) = app.get("/v1/records/companies?search=acme", &member).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&list).len(), 1);
    let writes = [
        (
            "POST",
            "/v1/records/companies".to_owned(),
            Some(json!({"fields": {"name": "Mine"}})),
        ),
        (
            "PATCH",
            path.clone(),
            Some(json!({"fields": {"name": "Mine"}})),
        ),
        (
            "PUT",
            path.clone(),
            Some(json!({"fields": {"name": "Mine"}})),
        ),
        ("DELETE", path.clone(), None),
    ];
    for (method, p, body) in writes {
        let (status, err) = app.send(method, &p, &member, body).await;
        assert_eq!(status, 403, "{method} {p}: {err}");
        assert_eq!(err["error"]["code"], "forbidden");
    }
    let (_, same) = app.get(&path, &admin).await;
    assert_eq!(same, rec);
    let (_, list) = app.get("/v1/records/companies", &admin).await;
    assert_eq!(ids(&list).len(), 1);
    let denied: Vec<String> = app
        .audit_actions(&t)
        .await
        .into_iter()
        .filter(|(_, outcome)| outcome == "denied")
        .map(|(action, _)| action)
        .collect();
    assert_eq!(denied.len(), 4, "{denied:?}");
    for action in ["record.create", "record.update", "record.delete"] {
        assert!(denied.iter().any(|a| a == action), "{action} in {denied:?}");
    }
}

#[tokio::test]
async fn cursors_page_through_every_record_once() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    // Seeded in batches as a pull writes them (120 API creates would take seconds).
    let tenant = TenantId::parse(&t).unwrap();
    let seeded: Vec<Record> = (0..120)
        .map(|i| {
            let at = now();
            let mut r = Record::new(RecordId::generate(), tenant.clone(), Entity::Companies, at);
            let app_source = Source {
                origin: "app".into(),
                config_id: None,
                at,
            };
            r.set("name", Some(&format!("Pager {i:03}")), &app_source);
            r.set("domain", Some(&format!("pager{i}.example")), &app_source);
            r.version = 1;
            r.rev = 1;
            r
        })
        .collect();
    Records::new(app.app().table)
        .put_new(&seeded)
        .await
        .unwrap();
    let mut expected: Vec<String> = seeded.iter().map(|r| r.id.to_string()).collect();
    // A few deleted ones (Pager 000 to 004) are skipped without leaving holes.
    for id in expected.drain(..5) {
        let (status, _) = app
            .delete(&format!("/v1/records/companies/{id}"), &admin)
            .await;
        assert_eq!(status, 204);
    }
    let wanted: BTreeSet<String> = expected.iter().cloned().collect();

    for (path, limit) in [
        ("/v1/records/companies?limit=50", 50),
        ("/v1/records/companies?limit=200", 200),
        ("/v1/records/companies", 50),
        ("/v1/records/companies?search=pager&limit=40", 40),
    ] {
        let got = all_ids(&app, &admin, path).await;
        let unique: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(unique.len(), got.len(), "{path}: duplicates");
        assert_eq!(unique, wanted, "{path}: every live record once");
        let (_, first) = app.get(path, &admin).await;
        assert!(ids(&first).len() <= limit);
    }
    // Name order: the name index sorts by name.
    let (_, first) = app
        .get("/v1/records/companies?search=Pager%200&limit=3", &admin)
        .await;
    let names: Vec<&str> = first["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Pager 005", "Pager 006", "Pager 007"]);
    // A cursor continues only the listing it came from.
    let (_, page) = app.get("/v1/records/companies?limit=10", &admin).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, err) = app
        .get(
            &format!("/v1/records/companies?search=pager&limit=10&cursor={cursor}"),
            &admin,
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_cursor"))
    );
}

/// A record as a pull writes it: linked with CRM records, values from a provider.
fn synced(tenant: &TenantId, email: &str, name: &str, links: &[(&str, &str)]) -> Record {
    let at = now();
    let mut r = Record::new(RecordId::generate(), tenant.clone(), Entity::Contacts, at);
    let config = "scfg_01jd00000000000000000000a0";
    let source = Source {
        origin: links.first().map_or("app", |l| l.0).to_owned(),
        config_id: Some(config.to_owned()),
        at,
    };
    r.set("email", Some(email), &source);
    r.set("first_name", Some(name), &source);
    for (i, (provider, crm_id)) in links.iter().enumerate() {
        r.links.insert(
            format!("scfg_01jd00000000000000000000b{i}"),
            LinkedRecord {
                provider: (*provider).to_owned(),
                connection_id: "con_01jd00000000000000000000c0".into(),
                crm_id: (*crm_id).to_owned(),
            },
        );
    }
    r.version = 1;
    r.rev = 1;
    r
}

#[tokio::test]
async fn records_filter_by_platform_and_show_their_sources() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let tenant = TenantId::parse(&t).unwrap();
    let hub = synced(&tenant, "hub@example.com", "Hubert", &[("hubspot", "101")]);
    let both = synced(
        &tenant,
        "both@example.com",
        "Bothwell",
        &[("hubspot", "102"), ("salesforce", "003XX")],
    );
    let sf = synced(
        &tenant,
        "sf@example.com",
        "Sofia",
        &[("salesforce", "003YY")],
    );
    let mut unlinked: Vec<Record> = (0..30)
        .map(|i| {
            synced(
                &tenant,
                &format!("u{i}@example.com"),
                &format!("Hu{i}"),
                &[],
            )
        })
        .collect();
    unlinked.extend([hub.clone(), both.clone(), sf.clone()]);
    Records::new(app.app().table)
        .put_new(&unlinked)
        .await
        .unwrap();

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let id = |r: &Record| r.id.to_string();
    let hubspot = all_ids(
        &app,
        &admin,
        "/v1/records/contacts?platform=hubspot&limit=5",
    )
    .await;
    assert_eq!(sorted(hubspot), sorted(vec![id(&hub), id(&both)]));
    let salesforce = all_ids(&app, &admin, "/v1/records/contacts?platform=salesforce").await;
    assert_eq!(sorted(salesforce), sorted(vec![id(&both), id(&sf)]));
    let none = all_ids(&app, &admin, "/v1/records/contacts?platform=zoho").await;
    assert!(none.is_empty());
    // With a name search, and with an exact email.
    let found = all_ids(
        &app,
        &admin,
        "/v1/records/contacts?search=hu&platform=hubspot",
    )
    .await;
    assert_eq!(found, [id(&hub)]);
    let found = all_ids(
        &app,
        &admin,
        "/v1/records/contacts?search=both@example.com&platform=salesforce",
    )
    .await;
    assert_eq!(found, [id(&both)]);
    let found = all_ids(
        &app,
        &admin,
        "/v1/records/contacts?search=sf@example.com&platform=hubspot",
    )
    .await;
    assert!(found.is_empty());

    // The unified view: links, platforms and where each value came from.
    let path = format!("/v1/records/contacts/{}", both.id);
    let (status, view) = app.get(&path, &admin).await;
    assert_eq!(status, 200);
    assert_eq!(view["platforms"], json!(["hubspot", "salesforce"]));
    let links = view["links"].as_array().unwrap();
    assert_eq!(links.len(), 2);
    assert_eq!(links[0]["provider"], "hubspot");
    assert_eq!(links[0]["crm_id"], "102");
    assert_eq!(links[0]["config_id"], "scfg_01jd00000000000000000000b0");
    assert_eq!(links[1]["connection_id"], "con_01jd00000000000000000000c0");
    assert_eq!(view["sources"]["email"]["origin"], "hubspot");
    assert_eq!(
        view["sources"]["email"]["config_id"],
        "scfg_01jd00000000000000000000a0"
    );
    // An app change marks only the changed field as the app's; links stay.
    let (status, patched) = app
        .patch(&path, &admin, json!({"fields": {"first_name": "Bo"}}))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["sources"]["first_name"]["origin"], "app");
    assert_eq!(patched["sources"]["email"]["origin"], "hubspot");
    assert_eq!(patched["links"], view["links"]);
    assert_eq!(patched["version"], 2);
    // A pulled record's key is held like any other.
    let (status, err) = app
        .post(
            "/v1/records/contacts",
            &admin,
            json!({"fields": {"email": "hub@example.com"}}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("duplicate_key"))
    );
}

#[tokio::test]
async fn sample_events_invoke_the_records_function() {
    let app = TestApp::spawn().await;
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events/records");
    let expected: BTreeMap<&str, u16> = [
        ("list-contacts.json", 200),
        ("search-companies.json", 200),
        ("create-contact.json", 201),
        ("create-contact-invalid.json", 400),
        ("get-contact-bad-id.json", 400),
        ("patch-contact-unknown.json", 404),
        ("member-create-forbidden.json", 403),
    ]
    .into_iter()
    .collect();
    let mut seen = 0;
    let mut created = None;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let status = expected
            .get(name.as_str())
            .unwrap_or_else(|| panic!("no expectation for events/records/{name}"));
        let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let resp = app.invoke("RecordsFunction", &event).await;
        assert_eq!(resp["statusCode"], *status, "{name}: {resp}");
        if name == "create-contact.json" {
            created = Some(resp);
        }
        seen += 1;
    }
    assert_eq!(seen, expected.len());

    // A read carries the version as its ETag.
    let created = created.unwrap();
    let body: Value = serde_json::from_str(created["body"].as_str().unwrap()).unwrap();
    let id = body["id"].as_str().unwrap();
    let mut get: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("get-contact-bad-id.json")).unwrap(),
    )
    .unwrap();
    let path = format!("/v1/records/contacts/{id}");
    get["rawPath"] = json!(path);
    get["requestContext"]["http"]["path"] = json!(path);
    get["pathParameters"]["id"] = json!(id);
    let resp = app.invoke("RecordsFunction", &get).await;
    assert_eq!(resp["statusCode"], 200, "{resp}");
    assert_eq!(resp["headers"]["etag"], "\"1\"");
    assert_eq!(created["headers"]["etag"], "\"1\"");
}

/// Two configs' pulls making the same person at once (claiming keys): one record gets
/// the key, the other is reported as not written; a deleted record's marker (a
/// tombstone after an API delete) holds nothing and is taken over, while the API
/// still finds no live record under it.
#[tokio::test]
async fn racing_pull_creates_of_one_key_write_one_record() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let tenant = TenantId::parse(&t).unwrap();
    let admin = app.token(&t, Role::Admin);
    let records = Records::new(app.app().table.clone());
    let source = Source {
        origin: "hubspot".into(),
        config_id: None,
        at: now(),
    };
    let made = |email: &str| {
        let mut r = Record::new(
            RecordId::generate(),
            tenant.clone(),
            Entity::Contacts,
            now(),
        );
        r.set("email", Some(email), &source);
        r
    };
    let racers: Vec<Record> = (0..6).map(|_| made("same@example.com")).collect();
    let outcomes = futures::future::join_all(
        racers
            .iter()
            .map(|r| records.put_new_claiming(std::slice::from_ref(r))),
    )
    .await;
    let lost: Vec<bool> = outcomes
        .into_iter()
        .map(|o| !o.expect("written or refused").is_empty())
        .collect();
    assert_eq!(lost.iter().filter(|l| !**l).count(), 1, "{lost:?}");
    let racer_ids: Vec<RecordId> = racers.iter().map(|r| r.id.clone()).collect();
    let stored = records
        .get_many(&tenant, Entity::Contacts, &racer_ids)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "only the winner is stored");

    // The winner deleted through the API: its marker stays, holding nothing.
    let path = format!("/v1/records/contacts/{}", stored[0].id);
    let (status, _) = app.send("DELETE", &path, &admin, None).await;
    assert_eq!(status, 204);
    let (_, found) = app
        .get("/v1/records/contacts?search=same@example.com", &admin)
        .await;
    assert_eq!(ids(&found).len(), 0);
    let next = made("Same@Example.com");
    assert_eq!(
        records
            .put_new_claiming(std::slice::from_ref(&next))
            .await
            .unwrap(),
        Vec::<RecordId>::new()
    );
    let (_, found) = app
        .get("/v1/records/contacts?search=same@example.com", &admin)
        .await;
    assert_eq!(ids(&found), [next.id.to_string()]);
}

/// A deal's `company_id` and `contact_id` must name live records of the caller's
/// tenant: a deal pointing nowhere (a typo, a deleted company, another tenant's id) is
/// refused at once instead of failing every push of it.
#[tokio::test]
async fn deal_associations_name_live_records_of_the_tenant() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let made = |path: &'static str, fields: Value| {
        let app = &app;
        let admin = &admin;
        async move {
            let (status, body) = app.post(path, admin, json!({ "fields": fields })).await;
            assert_eq!(status, 201, "{body}");
            body["id"].as_str().unwrap().to_owned()
        }
    };
    let company = made(
        "/v1/records/companies",
        json!({"name": "Acme", "domain": "acme.example"}),
    )
    .await;
    let gone = made(
        "/v1/records/companies",
        json!({"name": "Gone", "domain": "gone.example"}),
    )
    .await;
    let contact = made("/v1/records/contacts", json!({"email": "ann@acme.example"})).await;
    let (status, _) = app
        .delete(&format!("/v1/records/companies/{gone}"), &admin)
        .await;
    assert_eq!(status, 204);
    let other = app.tenant();
    let theirs = {
        let (status, body) = app
            .post(
                "/v1/records/companies",
                &app.token(&other, Role::Admin),
                json!({"fields": {"name": "Theirs", "domain": "theirs.example"}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    };

    let deal = made(
        "/v1/records/deals",
        json!({"name": "Big deal", "company_id": company, "contact_id": contact}),
    )
    .await;
    let unknown = RecordId::generate().to_string();
    for (field, id) in [
        ("company_id", gone.as_str()),
        ("company_id", theirs.as_str()),
        ("company_id", unknown.as_str()),
        ("company_id", contact.as_str()),
        ("contact_id", company.as_str()),
        ("contact_id", "not-an-id"),
    ] {
        let body = json!({"fields": {"name": "Stray deal", field: id}});
        let (status, err) = app.post("/v1/records/deals", &admin, body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["details"][0]["field"], field, "{err}");
        let (status, err) = app
            .patch(
                &format!("/v1/records/deals/{deal}"),
                &admin,
                json!({"fields": {field: id}}),
            )
            .await;
        assert_eq!(status, 400, "{body}: {err}");
    }
    // Unchanged by the refusals; clearing an association needs no record.
    let (_, read) = app.get(&format!("/v1/records/deals/{deal}"), &admin).await;
    assert_eq!(read["fields"]["company_id"], json!(company), "{read}");
    assert_eq!(read["version"], 1, "{read}");
    let (status, cleared) = app
        .patch(
            &format!("/v1/records/deals/{deal}"),
            &admin,
            json!({"fields": {"contact_id": null}}),
        )
        .await;
    assert_eq!(status, 200, "{cleared}");
    assert!(
        cleared["fields"]
            .get("contact_id")
            .is_none_or(Value::is_null),
        "{cleared}"
    );
    let (_, list) = app.get("/v1/records/deals", &admin).await;
    assert_eq!(ids(&list), vec![deal]);
}
