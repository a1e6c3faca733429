//! `Idempotency-Key` on POSTs, request ids in error bodies, and the paging of every
//! listing: the API conventions every route shares.

use aws_sdk_dynamodb::types::AttributeValue;
use conduit::domain::TenantId;
use conduit::idempotency::{IdempotencyKey, Scope, fingerprint, item_key};
use scenarios::{Role, TestApp, zendesk};
use serde_json::{Value, json};

const REPLAYED: &str = "idempotent-replayed";

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The raw item of an idempotency key, as the table holds it.
async fn raw_item(app: &TestApp, tenant: &str, route: &str, key: &str) -> String {
    let tenant = TenantId::parse(tenant).unwrap();
    let key = IdempotencyKey::parse(key).unwrap();
    let (pk, sk) = item_key(&Scope {
        tenant: &tenant,
        route,
        key: &key,
    });
    let out = app
        .dynamo()
        .get_item()
        .table_name(app.table())
        .key("pk", AttributeValue::S(pk))
        .key("sk", AttributeValue::S(sk))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    format!("{:?}", out.item)
}

#[tokio::test]
async fn the_same_create_with_the_same_key_replays_the_first_answer() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let key = [("idempotency-key", "create-zendesk-0001")];

    let body = zendesk("zd-sandbox-token-0001");
    let (status, first_h, first) = app
        .send_headed("POST", "/v1/connections", &admin, Some(body), &key)
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(header(&first_h, REPLAYED), None);

    // The same object, its keys in another order: the same request.
    let reordered = json!({
        "credentials": {"api_token": "zd-sandbox-token-0001", "email": "admin@acme.test", "subdomain": "acme"},
        "label": "Support desk",
        "provider": "zendesk",
    });
    let (status, again_h, again) = app
        .send_headed("POST", "/v1/connections", &admin, Some(reordered), &key)
        .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again, first, "the replay is the first answer");
    assert_eq!(header(&again_h, REPLAYED), Some("true"));
    assert_eq!(header(&again_h, "etag"), header(&first_h, "etag"));
    assert_ne!(
        header(&again_h, "x-request-id"),
        header(&first_h, "x-request-id"),
        "a replay is a request of its own"
    );
    let (_, list) = app.get("/v1/connections", &admin).await;
    assert_eq!(list["stats"]["total"], 1, "one connection, not two: {list}");

    // Another request under the same key is refused and changes nothing.
    let (status, _, reused) = app
        .send_headed(
            "POST",
            "/v1/connections",
            &admin,
            Some(json!({"provider": "zendesk", "label": "Other",
                "credentials": {"subdomain": "acme", "email": "admin@acme.test",
                    "api_token": "zd-sandbox-token-0001"}})),
            &key,
        )
        .await;
    assert_eq!(status, 422, "{reused}");
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    let (_, list) = app.get("/v1/connections", &admin).await;
    assert_eq!(list["stats"]["total"], 1);

    // The stored answer is sealed: nothing of it is readable in the table.
    let id = first["id"].as_str().unwrap();
    let raw = raw_item(&app, &t, "POST /v1/connections", "create-zendesk-0001").await;
    assert!(raw.contains("done"), "{raw}");
    assert!(
        !raw.contains(id) && !raw.contains("admin@acme.test"),
        "{raw}"
    );

    // The key is the tenant's: another tenant's same key is another request.
    let t2 = app.tenant();
    let admin2 = app.token(&t2, Role::Admin);
    let (status, other) = app
        .send_with(
            "POST",
            "/v1/connections",
            &admin2,
            Some(zendesk("zd-sandbox-token-0001")),
            &key,
        )
        .await;
    assert_eq!(status, 201, "{other}");
    assert_ne!(other["id"], first["id"]);
    app.assert_secret_absent("zd-sandbox-token-0001", &t).await;
}

#[tokio::test]
async fn a_refused_request_frees_its_key_and_bad_keys_are_400() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let key = [("idempotency-key", "retry-me")];

    let (status, refused) = app
        .send_with(
            "POST",
            "/v1/connections",
            &admin,
            Some(zendesk("wrong-token-123456789")),
            &key,
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "credentials_rejected");
    // Nothing was stored for the refusal: the corrected request runs under the key.
    let (status, created) = app
        .send_with(
            "POST",
            "/v1/connections",
            &admin,
            Some(zendesk("zd-sandbox-token-0001")),
            &key,
        )
        .await;
    assert_eq!(status, 201, "{created}");

    let long = "k".repeat(256);
    for bad in ["", "   ", "tab\there", "caf\u{e9}", long.as_str()] {
        let (status, h, body) = app
            .send_headed(
                "POST",
                "/v1/sync/configs",
                &admin,
                Some(json!({})),
                &[("idempotency-key", bad)],
            )
            .await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_idempotency_key");
        assert!(!body.to_string().contains("kkkk"), "{body}");
        assert_eq!(
            body["error"]["request_id"].as_str(),
            header(&h, "x-request-id"),
            "the error names its request"
        );
    }
    // A member is refused before the key is looked at; nothing is claimed.
    let member = app.token(&t, Role::Member);
    let (status, _) = app
        .send_with(
            "POST",
            "/v1/connections",
            &member,
            Some(zendesk("zd-sandbox-token-0001")),
            &[("idempotency-key", "member-key")],
        )
        .await;
    assert_eq!(status, 403);
    let raw = raw_item(&app, &t, "POST /v1/connections", "member-key").await;
    assert_eq!(raw, "None");
}

/// Plants the claim a running request holds on `key` (claimed `age` seconds ago).
async fn plant_claim(app: &TestApp, tenant: &str, route: &str, key: &str, print: &str, age: i64) {
    let tenant_id = TenantId::parse(tenant).unwrap();
    let k = IdempotencyKey::parse(key).unwrap();
    let (pk, sk) = item_key(&Scope {
        tenant: &tenant_id,
        route,
        key: &k,
    });
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let n = |v: i64| AttributeValue::N(v.to_string());
    app.dynamo()
        .put_item()
        .table_name(app.table())
        .item("pk", AttributeValue::S(pk))
        .item("sk", AttributeValue::S(sk))
        .item("state", AttributeValue::S("in_flight".into()))
        .item("fingerprint", AttributeValue::S(print.to_owned()))
        .item(
            "claim",
            AttributeValue::S("01HZZZZZZZZZZZZZZZZZZZZZZZ".into()),
        )
        .item("claimed_at", n(now - age))
        .item("ttl", n(now + 86_400))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_duplicate_of_a_running_request_is_409_until_its_lease_ends() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let route = "POST /v1/connections";
    let body = zendesk("zd-sandbox-token-0001");
    let bytes = serde_json::to_vec(&body).unwrap();
    let print = fingerprint("POST", route, "/v1/connections", "", &bytes);

    plant_claim(&app, &t, route, "running", &print, 5).await;
    let (status, running) = app
        .send_with(
            "POST",
            "/v1/connections",
            &admin,
            Some(body.clone()),
            &[("idempotency-key", "running")],
        )
        .await;
    assert_eq!(status, 409, "{running}");
    assert_eq!(running["error"]["code"], "idempotency_in_flight");
    let (_, list) = app.get("/v1/connections", &admin).await;
    assert_eq!(list["stats"]["total"], 0);

    // A claim whose request died (past its lease) is taken over.
    plant_claim(&app, &t, route, "died", &print, 120).await;
    let (status, created) = app
        .send_with(
            "POST",
            "/v1/connections",
            &admin,
            Some(body),
            &[("idempotency-key", "died")],
        )
        .await;
    assert_eq!(status, 201, "{created}");
}

#[tokio::test]
async fn concurrent_duplicates_create_one_connection() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let key = [("idempotency-key", "double-click")];
    let send = || {
        app.send_with(
            "POST",
            "/v1/connections",
            &admin,
            Some(zendesk("zd-sandbox-token-0001")),
            &key,
        )
    };
    let (a, b, c) = tokio::join!(send(), send(), send());
    let mut created = Vec::new();
    for (status, body) in [a, b, c] {
        match status {
            201 => created.push(body["id"].clone()),
            409 => assert_eq!(body["error"]["code"], "idempotency_in_flight", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert!(!created.is_empty());
    assert!(created.iter().all(|id| *id == created[0]), "{created:?}");
    let (_, list) = app.get("/v1/connections", &admin).await;
    assert_eq!(list["stats"]["total"], 1, "{list}");
    // Once the first has finished, the duplicate gets its answer.
    let (status, again) = send().await;
    assert_eq!((status, &again["id"]), (201, &created[0]));
}

#[tokio::test]
async fn an_oauth_start_replays_without_its_state_in_the_clear() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let body = json!({"return_to": "http://localhost:5173/integrations"});
    let key = [("idempotency-key", "start-1")];
    let (status, _, first) = app
        .send_headed(
            "POST",
            "/v1/oauth/hubspot/start",
            &admin,
            Some(body.clone()),
            &key,
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let (status, h, again) = app
        .send_headed("POST", "/v1/oauth/hubspot/start", &admin, Some(body), &key)
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(header(&h, REPLAYED), Some("true"));
    assert_eq!(again, first);
    let url = first["authorize_url"].as_str().unwrap();
    let state = scenarios::query_param(url, "state").unwrap();
    let raw = raw_item(&app, &t, "POST /v1/oauth/{provider}/start", "start-1").await;
    assert!(raw.contains("done") && !raw.contains(&state), "{raw}");
}

#[tokio::test]
async fn connections_page_like_every_listing() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let admin = app.token(&t, Role::Admin);
    let mut ids = Vec::new();
    let bodies = [
        zendesk("zd-sandbox-token-0001"),
        json!({"provider": "freshdesk", "credentials": {"subdomain": "acme", "api_key": "fd-sandbox-key-0001"}}),
        json!({"provider": "pipedrive", "credentials": {"api_token": "pd-sandbox-token-0001"}}),
    ];
    for body in bodies {
        let (status, created) = app.post("/v1/connections", &admin, body).await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].clone());
    }
    let listed = app
        .all_pages("/v1/connections?limit=1", &admin, "connections")
        .await;
    let listed: Vec<Value> = listed.iter().map(|c| c["id"].clone()).collect();
    assert_eq!(listed, ids, "every connection once, oldest first");
    let (_, first) = app.get("/v1/connections?limit=1", &admin).await;
    assert_eq!(first["stats"]["total"], 3, "stats count them all: {first}");

    for bad in ["limit=0", "limit=201", "limit=x", "cursor=bm90LWEtY3Vyc29y"] {
        let (status, body) = app.get(&format!("/v1/connections?{bad}"), &admin).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let code = if bad.starts_with("limit") {
            "invalid_limit"
        } else {
            "invalid_cursor"
        };
        assert_eq!(body["error"]["code"], code, "{bad}");
    }
    // Another tenant's cursor is not one this listing gave.
    let (_, page) = app.get("/v1/connections?limit=1", &admin).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let other = app.token(&app.tenant(), Role::Admin);
    let (status, body) = app
        .get(&format!("/v1/connections?cursor={cursor}"), &other)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_cursor");
    let (status, body) = app
        .get(&format!("/v1/sync/configs?cursor={cursor}"), &admin)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_cursor");
    let (status, body) = app.get("/v1/sync/configs?limit=500", &admin).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_limit");
    let (status, body) = app.get("/v1/sync/configs?limit=5", &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["configs"], json!([]));
    assert_eq!(body["next_cursor"], Value::Null);
}
