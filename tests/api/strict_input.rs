//! Strict input (issue 11 §3) and one route table (§4 "Unaudited denials"): a body is
//! exactly one JSON object; unknown keys are refused at every depth; one rule for an
//! empty PATCH and for If-Match losers; client cursors the store would reject are a
//! 400; a member's attempt on any admin route is a 403 with one audit entry.

use std::sync::atomic::{AtomicU64, Ordering};

use sandbox::{OAuthProvider, OAuthUser};
use scenarios::{Role, TestApp, zendesk};
use serde_json::{Value, json};

const RETURN_TO: &str = "http://localhost:5173/integrations";

/// A tenant with a Zendesk connection (API key) and a connected HubSpot portal.
struct Tenant {
    id: String,
    admin: String,
    member: String,
    zendesk: String,
    hubspot: String,
}

async fn tenant(app: &TestApp) -> Tenant {
    static PORTAL: AtomicU64 = AtomicU64::new(0);
    let id = app.tenant();
    let admin = app.token(&id, Role::Admin);
    let member = app.token(&id, Role::Member);
    let (status, c) = app
        .post("/v1/connections", &admin, zendesk("zd-sandbox-token-0001"))
        .await;
    assert_eq!(status, 201, "{c}");
    let portal = 8_700_000 + PORTAL.fetch_add(1, Ordering::SeqCst);
    let email = format!("strict-{portal}@sandbox.test");
    app.sandbox()
        .add_oauth_user(OAuthUser {
            hub_id: portal,
            ..OAuthUser::new(OAuthProvider::Hubspot, email.clone())
        })
        .expect("sandbox user");
    let out = app
        .oauth_connect(
            &admin,
            "hubspot",
            json!({ "return_to": RETURN_TO }),
            &format!("login_hint={email}"),
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    Tenant {
        zendesk: c["id"].as_str().expect("id").to_owned(),
        hubspot: out.connection_id.expect("connection id").to_string(),
        id,
        admin,
        member,
    }
}

fn config_body(t: &Tenant) -> Value {
    json!({
        "connection_id": t.hubspot,
        "direction": "pull",
        "frequency": {"type": "manual"},
        "entities": ["contacts"],
        "conflict_strategy": "crm_wins",
    })
}

async fn config(app: &TestApp, t: &Tenant) -> Value {
    let (status, c) = app.post("/v1/sync/configs", &t.admin, config_body(t)).await;
    assert_eq!(status, 201, "{c}");
    c
}

async fn connection_count(app: &TestApp, t: &Tenant) -> usize {
    let (status, list) = app.get("/v1/connections", &t.admin).await;
    assert_eq!(status, 200, "{list}");
    list["connections"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn a_body_is_exactly_one_json_object() {
    let app = TestApp::spawn().await;
    let t = tenant(&app).await;
    let before = connection_count(&app, &t).await;
    let one = zendesk("zd-sandbox-token-0001").to_string();
    let cases = [
        format!("{one} xyz"),
        format!("{one}{one}"),
        format!("{one}\n{one}"),
        r#"["zendesk","api_key","label",{"subdomain":"acme","email":"admin@acme.test","api_token":"zd-sandbox-token-0001"}]"#.to_owned(),
        "\"zendesk\"".to_owned(),
        "null".to_owned(),
    ];
    for body in &cases {
        let (status, err) = app
            .send_raw(
                "POST",
                "/v1/connections",
                &t.admin,
                body.clone(),
                "application/json",
            )
            .await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["code"], "invalid_body", "{body}: {err}");
        assert!(!err.to_string().contains("xyz"), "{err}");
    }
    // Trailing whitespace is fine.
    let mut check = zendesk("zd-sandbox-token-0001");
    check.as_object_mut().map(|b| b.remove("label"));
    let (status, err) = app
        .send_raw(
            "POST",
            "/v1/connections/test",
            &t.admin,
            format!("  {check} \n\t "),
            "application/json",
        )
        .await;
    assert_eq!(status, 200, "{err}");
    assert_eq!(connection_count(&app, &t).await, before);

    // The same on a route that acts at once: a trigger followed by junk starts nothing.
    let c = config(&app, &t).await;
    let body = json!({"config_id": c["id"]}).to_string();
    for junk in [
        format!("{body} xyz"),
        format!("{body}{body}"),
        format!("[{body}]"),
    ] {
        let (status, err) = app
            .send_raw(
                "POST",
                "/v1/sync/trigger",
                &t.admin,
                junk.clone(),
                "application/json",
            )
            .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("invalid_body")),
            "{junk}"
        );
    }
    let (_, logs) = app.get("/v1/sync/logs", &t.admin).await;
    assert_eq!(logs["logs"], json!([]), "{logs}");
}

#[tokio::test]
async fn unknown_keys_are_refused_at_every_depth() {
    let app = TestApp::spawn().await;
    let t = tenant(&app).await;
    let with = |path: &[&str], value: Value| {
        let mut body = config_body(&t);
        let mut at = &mut body;
        for key in &path[..path.len() - 1] {
            at = &mut at[*key];
        }
        at[path[path.len() - 1]] = value;
        body
    };
    let cases = [
        (with(&["frequency", "every"], json!(1)), "frequency.every"),
        (
            with(
                &["frequency"],
                json!({"type": "daily", "at": "02:00", "tz": "UTC"}),
            ),
            "frequency.tz",
        ),
        (
            with(
                &["filters"],
                json!([{"entity": "contacts", "field": "email", "operator": "has_value", "note": "x"}]),
            ),
            "filters[0].note",
        ),
        (
            with(&["options"], json!({"surprise": true})),
            "options.surprise",
        ),
        (
            with(
                &["mappings"],
                json!([{"entity": "contacts", "crm_field": "email", "app_field": "email", "why": 1}]),
            ),
            "mappings[0].why",
        ),
        (with(&["extra"], json!({})), "extra"),
    ];
    for (body, field) in cases {
        let (status, err) = app.post("/v1/sync/configs", &t.admin, body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["code"], "invalid_fields", "{err}");
        assert_eq!(err["error"]["details"][0]["field"], field, "{err}");
    }
    // Arrays where an object belongs are refused, naming the field.
    for (body, field) in [
        (with(&["frequency"], json!(["manual"])), "frequency"),
        (with(&["options"], json!([true])), "options"),
        (
            with(&["filters"], json!([["contacts", "email", "has_value"]])),
            "filters[0]",
        ),
    ] {
        let (status, err) = app.post("/v1/sync/configs", &t.admin, body.clone()).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("invalid_body")),
            "{body}: {err}"
        );
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
    }
    let (_, list) = app.get("/v1/sync/configs", &t.admin).await;
    assert_eq!(list["configs"], json!([]), "{list}");
    // Nested on a PATCH too.
    let c = config(&app, &t).await;
    let path = format!("/v1/sync/configs/{}", c["id"].as_str().unwrap_or_default());
    let (status, err) = app
        .patch(
            &path,
            &t.admin,
            json!({"frequency": {"type": "manual", "every": 1}}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_fields")),
        "{err}"
    );
    let (_, now) = app.get(&path, &t.admin).await;
    assert_eq!(now["version"], c["version"]);
}

#[tokio::test]
async fn a_member_on_any_admin_route_gets_403_and_one_audit_entry() {
    let app = TestApp::spawn().await;
    let t = tenant(&app).await;
    let c = config(&app, &t).await;
    let cfg = c["id"].as_str().unwrap_or_default().to_owned();
    let mapping = c["mappings"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let zd = &t.zendesk;
    let body = json!({});
    let routes: Vec<(&str, String, &str)> = vec![
        (
            "PUT",
            "/v1/providers/hubspot/app-credentials".into(),
            "app_credentials.put",
        ),
        (
            "DELETE",
            "/v1/providers/hubspot/app-credentials".into(),
            "app_credentials.delete",
        ),
        ("POST", "/v1/connections".into(), "connection.create"),
        ("POST", "/v1/connections/test".into(), "connection.test"),
        (
            "PATCH",
            format!("/v1/connections/{zd}"),
            "connection.update",
        ),
        (
            "DELETE",
            format!("/v1/connections/{zd}"),
            "connection.delete",
        ),
        (
            "POST",
            format!("/v1/connections/{zd}/activate"),
            "connection.activate",
        ),
        (
            "POST",
            format!("/v1/connections/{zd}/deactivate"),
            "connection.deactivate",
        ),
        (
            "POST",
            format!("/v1/connections/{zd}/test"),
            "connection.test",
        ),
        ("POST", "/v1/oauth/hubspot/start".into(), "oauth.start"),
        ("POST", "/v1/records/contacts".into(), "record.create"),
        (
            "PUT",
            "/v1/records/contacts/rec_01J00000000000000000000000".into(),
            "record.update",
        ),
        (
            "PATCH",
            "/v1/records/contacts/rec_01J00000000000000000000000".into(),
            "record.update",
        ),
        (
            "DELETE",
            "/v1/records/contacts/rec_01J00000000000000000000000".into(),
            "record.delete",
        ),
        ("POST", "/v1/sync/configs".into(), "sync_config.create"),
        (
            "PATCH",
            format!("/v1/sync/configs/{cfg}"),
            "sync_config.update",
        ),
        (
            "DELETE",
            format!("/v1/sync/configs/{cfg}"),
            "sync_config.delete",
        ),
        (
            "POST",
            format!("/v1/sync/configs/{cfg}/pause"),
            "sync_config.pause",
        ),
        (
            "POST",
            format!("/v1/sync/configs/{cfg}/resume"),
            "sync_config.resume",
        ),
        (
            "POST",
            format!("/v1/sync/configs/{cfg}/field-mappings"),
            "sync_config.mappings",
        ),
        (
            "PATCH",
            format!("/v1/sync/configs/{cfg}/field-mappings/{mapping}"),
            "sync_config.mappings",
        ),
        (
            "DELETE",
            format!("/v1/sync/configs/{cfg}/field-mappings/{mapping}"),
            "sync_config.mappings",
        ),
        (
            "POST",
            format!("/v1/sync/configs/{cfg}/auto-map"),
            "sync_config.auto_map",
        ),
        ("POST", "/v1/sync/trigger".into(), "sync.trigger"),
        (
            "POST",
            "/v1/sync/logs/log_01J00000000000000000000000/retry".into(),
            "sync.retry",
        ),
        (
            "POST",
            "/v1/sync/conflicts/cfl_01J00000000000000000000000/resolve".into(),
            "sync.conflict.resolve",
        ),
        (
            "POST",
            "/v1/sync/conflicts/cfl_01J00000000000000000000000/ignore".into(),
            "sync.conflict.ignore",
        ),
    ];
    let denied = |audit: Vec<(String, String)>| {
        audit
            .into_iter()
            .filter(|(_, outcome)| outcome == "denied")
            .map(|(action, _)| action)
            .collect::<Vec<_>>()
    };
    let mut before = denied(app.audit_actions(&t.id).await);
    assert!(before.is_empty(), "{before:?}");
    for (method, path, action) in routes {
        let (status, err) = app.send(method, &path, &t.member, Some(body.clone())).await;
        assert_eq!(status, 403, "{method} {path}: {err}");
        assert_eq!(err["error"]["code"], "forbidden", "{method} {path}");
        let after = denied(app.audit_actions(&t.id).await);
        assert_eq!(after.len(), before.len() + 1, "{method} {path}: {after:?}");
        let mut new = after.clone();
        for seen in &before {
            if let Some(i) = new.iter().position(|a| a == seen) {
                new.remove(i);
            }
        }
        assert_eq!(new, vec![action.to_owned()], "{method} {path}");
        before = after;
    }
    // Nothing changed: the config and the connection are as they were.
    let (_, now) = app.get(&format!("/v1/sync/configs/{cfg}"), &t.admin).await;
    assert_eq!(now["version"], c["version"]);
    let (status, _) = app.get(&format!("/v1/connections/{zd}"), &t.admin).await;
    assert_eq!(status, 200);
}

/// The PATCH routes of a tenant's resources: a connection, a config, one of its
/// mappings and a record.
async fn patch_targets(app: &TestApp, t: &Tenant) -> Vec<(String, Value)> {
    let c = config(app, t).await;
    let cfg = c["id"].as_str().unwrap_or_default();
    let mapping = c["mappings"][0]["id"].as_str().unwrap_or_default();
    let (status, r) = app
        .post(
            "/v1/records/contacts",
            &t.admin,
            json!({"fields": {"first_name": "Ada", "email": format!("ada-{}@strict.test", t.id)}}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let rec = r["id"].as_str().unwrap_or_default();
    vec![
        (
            format!("/v1/connections/{}", t.zendesk),
            json!({"label": "L"}),
        ),
        (format!("/v1/sync/configs/{cfg}"), json!({"name": "N"})),
        (
            format!("/v1/sync/configs/{cfg}/field-mappings/{mapping}"),
            json!({"transform": "trim"}),
        ),
        (
            format!("/v1/records/contacts/{rec}"),
            json!({"fields": {"last_name": "L"}}),
        ),
    ]
}

async fn version(app: &TestApp, t: &Tenant, path: &str) -> Value {
    // A mapping has no version of its own: its config's stands for it.
    let path = path.split("/field-mappings/").next().unwrap_or(path);
    let (status, v) = app.get(path, &t.admin).await;
    assert_eq!(status, 200, "{path}: {v}");
    v["version"].clone()
}

#[tokio::test]
async fn an_empty_patch_is_one_400_everywhere() {
    let app = TestApp::spawn().await;
    let t = tenant(&app).await;
    for (path, _) in patch_targets(&app, &t).await {
        let before = version(&app, &t, &path).await;
        for body in [
            json!({}),
            json!({"fields": {}}),
            json!({"name": null, "label": null}),
        ] {
            let (status, err) = app.patch(&path, &t.admin, body.clone()).await;
            assert_eq!(status, 400, "{path} {body}: {err}");
            let code = err["error"]["code"].as_str().unwrap_or_default();
            // `{}` names nothing anywhere; the others name nothing on the route they
            // fit and are unknown keys on the others.
            assert!(
                code == "empty_update" || code == "invalid_fields",
                "{path} {body}: {err}"
            );
            if body == json!({}) {
                assert_eq!(code, "empty_update", "{path}");
            }
        }
        for raw in ["[]", "[{}]", "\"\"", "{} {}"] {
            let (status, err) = app
                .send_raw("PATCH", &path, &t.admin, raw.to_owned(), "application/json")
                .await;
            assert_eq!(
                (status, err["error"]["code"].as_str()),
                (400, Some("invalid_body")),
                "{path} {raw}"
            );
        }
        assert_eq!(version(&app, &t, &path).await, before, "{path}");
    }
}

#[tokio::test]
async fn if_match_losers_always_get_412() {
    let app = TestApp::spawn().await;
    let t = tenant(&app).await;
    for (path, body) in patch_targets(&app, &t).await {
        let v = version(&app, &t, &path).await;
        let tag = format!("\"{v}\"");
        // Writers racing from the same version: one wins, every other gets 412 — never
        // a 409, whether it lost before its read or between its read and its write.
        let writers = (0..4).map(|i| {
            let mut body = body.clone();
            if let Some(label) = body.get_mut("label") {
                *label = json!(format!("L{i}"));
            }
            if let Some(name) = body.get_mut("name") {
                *name = json!(format!("N{i}"));
            }
            if let Some(t) = body.get_mut("transform") {
                *t = json!(if i % 2 == 0 { "trim" } else { "lower" });
            }
            if let Some(f) = body.get_mut("fields") {
                f["last_name"] = json!(format!("L{i}"));
            }
            let (app, path, tag, admin) = (&app, path.clone(), tag.clone(), t.admin.clone());
            async move {
                app.send_with("PATCH", &path, &admin, Some(body), &[("if-match", &tag)])
                    .await
            }
        });
        let results = futures::future::join_all(writers).await;
        let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{path}: {results:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 412).count(),
            3,
            "{path}: {results:?}"
        );
        for (s, err) in &results {
            if *s == 412 {
                assert_eq!(err["error"]["code"], "precondition_failed", "{path}");
            }
        }
        // A stale If-Match read after the fact: 412 too; a current one goes through.
        let (status, _) = app
            .send_with(
                "PATCH",
                &path,
                &t.admin,
                Some(body.clone()),
                &[("if-match", &tag)],
            )
            .await;
        assert_eq!(status, 412, "{path}");
    }
}

/// A listing cursor (`{tag}.{base64url JSON key}`) with its key changed by `edit`.
fn edited_cursor(cursor: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    let (tag, key) = cursor.split_once('.').expect("tagged cursor");
    let mut key: serde_json::Map<String, Value> =
        serde_json::from_slice(&B64URL.decode(key).expect("base64")).expect("json");
    edit(&mut key);
    format!(
        "{tag}.{}",
        B64URL.encode(serde_json::to_vec(&key).expect("json"))
    )
}

#[tokio::test]
async fn cursors_the_store_would_refuse_are_400() {
    let app = TestApp::spawn().await;
    let t = tenant(&app).await;
    for name in ["Curie", "Curtis", "Cursor"] {
        let (status, r) = app
            .post(
                "/v1/records/contacts",
                &t.admin,
                json!({"fields": {"first_name": name, "last_name": "X"}}),
            )
            .await;
        assert_eq!(status, 201, "{r}");
    }
    // Records listings merge their shards: the cursor is `{tag}.{base64url of the last
    // sort key}`, bound to its listing, and a name cursor must lie inside the search.
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    for listing in [
        "/v1/records/contacts?limit=1",
        "/v1/records/contacts?search=cur&limit=1",
    ] {
        let (status, page) = app.get(listing, &t.admin).await;
        assert_eq!(status, 200, "{page}");
        let cursor = page["next_cursor"]
            .as_str()
            .expect("a next page")
            .to_owned();
        let (tag, _) = cursor.split_once('.').expect("tagged cursor");
        let mut bad = vec![
            format!("{tag}.!!!"),
            format!("{tag}.{}", B64URL.encode([0xff, 0xfe])),
            format!("{tag}."),
            format!("x{tag}.{}", B64URL.encode("a")),
            format!("{tag}.{}", "A".repeat(5000)),
        ];
        if listing.contains("search") {
            bad.push(format!("{tag}.{}", B64URL.encode("zzz#rec_1")));
        }
        for c in bad {
            let (status, err) = app.get(&format!("{listing}&cursor={c}"), &t.admin).await;
            assert_eq!(
                (status, err["error"]["code"].as_str()),
                (400, Some("invalid_cursor")),
                "{listing} {c}: {err}"
            );
        }
        // The real cursor still pages on, to the next record and no other.
        let (status, next) = app
            .get(&format!("{listing}&cursor={cursor}"), &t.admin)
            .await;
        assert_eq!(status, 200, "{next}");
        assert_eq!(next["records"].as_array().map(Vec::len), Some(1), "{next}");
        assert_ne!(next["records"][0]["id"], page["records"][0]["id"], "{next}");
    }
    // The logs and conflicts listings share the check.
    for listing in ["/v1/sync/logs", "/v1/sync/conflicts"] {
        let c = edited_cursor("t.e30", |k| {
            k.insert("pk".into(), json!(format!("T#{}", t.id)));
        });
        let c = c.trim_start_matches("t.");
        let (status, err) = app.get(&format!("{listing}?cursor={c}"), &t.admin).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("invalid_cursor")),
            "{listing}: {err}"
        );
    }
}

#[tokio::test]
async fn every_template_route_is_in_its_functions_route_table() {
    let app = TestApp::spawn().await;
    let t = app.tenant();
    let member = app.token(&t, Role::Member);
    let mut seen = 0;
    for function in app.local().stack.template().functions.values() {
        for route in function.routes.iter().filter(|r| r.authorizer.is_some()) {
            // Placeholder path parameters: the route key matches whatever they are.
            let path: String = route
                .path
                .split('/')
                .map(|part| if part.starts_with('{') { "x" } else { part })
                .collect::<Vec<_>>()
                .join("/");
            let (status, body) = app
                .send(&route.method, &path, &member, Some(json!({})))
                .await;
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                !(status == 404 && message.starts_with("no route")),
                "{} {} is not in {}'s route table",
                route.method,
                route.path,
                function.logical_id
            );
            seen += 1;
        }
    }
    assert!(seen >= 40, "only {seen} routes in the template");
}
