//! Knowledge-base import from every source but Zendesk (issue 15): Freshdesk solutions,
//! a tenant-described Custom API (each paging style), Salesforce Knowledge and Dynamics
//! 365 knowledge articles — each imported over the API and the sync worker against its
//! stand-in, in full, then by changes, with edits, unpublishing and deletions between
//! runs; and an import whose worker is killed mid-step, resumed from its checkpoint.

use std::time::Duration;

use conduit::domain::IntegrationId;
use conduit::kb::document::DocumentId;
use scenarios::{Role, TestApp};
use serde_json::{Value, json};

use crate::sync_support as s;

const RETURN_TO: &str = "http://localhost:5173/integrations";

/// A number unique in this process, and a suffix unique across processes.
fn unique() -> String {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000;
    format!("{}x{nanos}", s::fresh())
}

/// An import_kb integration of `provider` on `connection` (with `kb_source`).
async fn import_integration(
    app: &TestApp,
    admin: &str,
    provider: &str,
    connection: &str,
    kb_source: Value,
) -> String {
    let mut body = json!({"name": format!("{provider} knowledge"), "provider": provider,
        "action": "import_kb", "connection_id": connection,
        "triggers": [{"event": "kb_sync"}]});
    if !kb_source.is_null() {
        body["kb_source"] = kb_source;
    }
    let (status, created) = app.post("/v1/integrations", admin, body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().expect("id").to_owned()
}

/// Starts a run (`mode`: default when null) and waits for it to end; the status.
async fn run(app: &TestApp, admin: &str, id: &str, mode: Value) -> Value {
    let body = if mode.is_null() {
        json!({})
    } else {
        json!({ "mode": mode })
    };
    let (status, started) = app
        .post(&format!("/v1/integrations/{id}/import-kb"), admin, body)
        .await;
    assert_eq!(status, 202, "{started}");
    let run_id = started["run"]["run_id"].clone();
    let status = crate::kb::idle(app, &format!("/v1/kb/sources/{id}/status"), admin).await;
    assert_eq!(status["last_run"]["run_id"], run_id, "{status}");
    assert_eq!(status["last_run"]["status"], "succeeded", "{status}");
    status
}

/// The counts of a status's last run.
fn counts(status: &Value) -> Value {
    status["last_run"]["counts"].clone()
}

/// A document, read over the API.
async fn document(app: &TestApp, token: &str, id: &DocumentId) -> (u16, Value) {
    app.get(&format!("/v1/kb/documents/{id}"), token).await
}

/// Asserts that a stored body kept nothing executable.
fn assert_clean(doc: &Value) {
    let html = doc["html"].as_str().expect("html").to_ascii_lowercase();
    for banned in [
        "<script",
        "onerror",
        "onmouseover",
        "javascript:",
        "<iframe",
    ] {
        assert!(!html.contains(banned), "{banned} survived: {html}");
    }
}

/// The completed event of run `run_id`.
async fn completed(app: &TestApp, run_id: &Value) -> Value {
    let run_id = run_id.clone();
    app.wait_for_event(conduit::kb::run::IMPORT_COMPLETED, move |d| {
        d["run_id"] == run_id
    })
    .await["detail"]
        .clone()
}

/// A Freshdesk helpdesk of its own in the sandbox, seeded, and a tenant connected to
/// it: (subdomain, what was seeded, the admin's token, the connection id).
async fn freshdesk_desk(
    app: &TestApp,
    seed: sandbox::SolutionsSeed,
) -> (String, sandbox::SolutionsSummary, String, String) {
    let u = unique();
    let (sub, key) = (format!("fdkb{u}"), format!("fd-kb-key-{u}"));
    let account: sandbox::Account = serde_json::from_value(json!({
        "provider": "freshdesk", "subdomain": sub, "api_key": key,
        "email": format!("agent@{sub}.test")}))
    .expect("an account");
    app.sandbox().add_account(account).expect("sandbox account");
    let seeded = app.sandbox().seed_solutions(&sub, seed);
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let (status, conn) = app
        .post(
            "/v1/connections",
            &admin,
            json!({"provider": "freshdesk", "credentials": {"subdomain": sub, "api_key": key}}),
        )
        .await;
    assert_eq!(status, 201, "{conn}");
    let conn = conn["id"].as_str().expect("connection").to_owned();
    (sub, seeded, admin, conn)
}

/// Freshdesk: every language of every folder's articles, page by page; drafts stored
/// unpublished; each run reads everything again, writes only what changed and deletes
/// what is gone; a 429 storm is sat out.
#[tokio::test]
async fn freshdesk_solutions_import_in_every_language_and_each_run_notices_edits_and_deletions() {
    let app = TestApp::spawn().await;
    let (sub, seeded, admin, conn) = freshdesk_desk(
        &app,
        sandbox::SolutionsSeed {
            categories: 2,
            folders_per_category: 1,
            articles: 230,
            languages: vec!["de".into()],
            translated_every: 3,
            draft_every: 10,
            large_article: true,
            hostile_article: true,
            ..Default::default()
        },
    )
    .await;
    let id = import_integration(&app, &admin, "freshdesk", &conn, Value::Null).await;
    let integration = IntegrationId::parse(&id).expect("id");
    let doc =
        |article: u64, lang: &str| DocumentId::of(&integration, &article.to_string(), Some(lang));

    let pages_before = app.sandbox().calls("freshdesk.solution_folder_articles");
    let first = run(&app, &admin, &id, Value::Null).await;
    let c = counts(&first);
    assert_eq!(first["last_run"]["mode"], "full");
    assert_eq!(c["created"], seeded.translations.len(), "{c}");
    assert_eq!(c["seen"], c["created"]);
    assert_eq!(c["unpublished"], seeded.drafts.len(), "{c}");
    // 115 articles a folder: two pages of 100 in English, one in German, per folder.
    let pages = app.sandbox().calls("freshdesk.solution_folder_articles") - pages_before;
    assert_eq!(pages, 2 * 2 + 2, "article pages read");

    let german = app
        .all_pages(
            &format!("/v1/kb/documents?integration_id={id}&locale=de&limit=100"),
            &admin,
            "documents",
        )
        .await;
    let translated = seeded
        .translations
        .iter()
        .filter(|(_, l)| l == "de")
        .count();
    assert_eq!(german.len(), translated);
    let (status, hostile) = document(
        &app,
        &admin,
        &doc(seeded.hostile_article_id.expect("hostile"), "en"),
    )
    .await;
    assert_eq!(status, 200, "{hostile}");
    assert_clean(&hostile);
    assert_eq!(
        hostile["section_path"].as_array().map(Vec::len),
        Some(2),
        "{hostile}"
    );
    let (status, large) = document(
        &app,
        &admin,
        &doc(seeded.large_article_id.expect("large"), "en"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        large["body_bytes"].as_u64() > Some(400_000),
        "{}",
        large["body_bytes"]
    );

    // Between runs: one retitled, one unpublished, one deleted (with its translations).
    let plain: Vec<u64> = seeded
        .article_ids
        .iter()
        .copied()
        .filter(|a| Some(*a) != seeded.large_article_id && Some(*a) != seeded.hostile_article_id)
        .filter(|a| {
            seeded
                .published_translations
                .contains(&(*a, "en".to_owned()))
        })
        .collect();
    let (retitled, drafted, deleted) = (plain[0], plain[1], plain[2]);
    let change = |title: Option<&str>, status: Option<u8>| sandbox::FdArticleChange {
        title: title.map(str::to_owned),
        status,
        ..Default::default()
    };
    app.sandbox()
        .fd_update_article(&sub, retitled, None, change(Some("Renamed: refunds"), None))
        .expect("retitled");
    app.sandbox()
        .fd_update_article(&sub, drafted, None, change(None, Some(1)))
        .expect("drafted");
    assert!(app.sandbox().fd_delete_article(&sub, deleted));
    let gone = seeded
        .translations
        .iter()
        .filter(|(a, _)| *a == deleted)
        .count();

    let second = run(&app, &admin, &id, Value::Null).await;
    let c = counts(&second);
    assert_eq!(second["last_run"]["mode"], "incremental");
    assert_eq!(
        (c["created"].as_u64(), c["updated"].as_u64()),
        (Some(0), Some(2)),
        "{c}"
    );
    assert_eq!(c["deleted"], gone, "{c}");
    assert_eq!(
        c["unchanged"].as_u64(),
        c["seen"].as_u64().map(|s| s - 2),
        "{c}"
    );
    let event = completed(&app, &second["last_run"]["run_id"]).await;
    let changed: Vec<&str> = event["changed"]
        .as_array()
        .expect("changed")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(changed.len(), 2, "{event}");
    assert!(
        changed.contains(&doc(retitled, "en").as_str())
            && changed.contains(&doc(drafted, "en").as_str())
    );
    assert!(
        event["deleted"]
            .as_array()
            .is_some_and(|d| d.len() == gone && d.contains(&json!(doc(deleted, "en").as_str()))),
        "{event}"
    );
    let (_, renamed) = document(&app, &admin, &doc(retitled, "en")).await;
    assert_eq!(renamed["title"], "Renamed: refunds");
    let (_, unpublished) = document(&app, &admin, &doc(drafted, "en")).await;
    assert_eq!(unpublished["published"], false);
    let (status, _) = document(&app, &admin, &doc(deleted, "en")).await;
    assert_eq!(status, 404);

    // Nothing changed, through a 429 storm: nothing written.
    app.sandbox().fd_throttle_next(&sub, 3, 1);
    let third = run(&app, &admin, &id, Value::Null).await;
    let c = counts(&third);
    assert_eq!(
        (
            c["created"].as_u64(),
            c["updated"].as_u64(),
            c["deleted"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{c}"
    );
    assert_eq!(c["unchanged"], c["seen"]);
    // The helpdesk's API key (Basic auth on every request) is in no log line.
    assert!(!app.logs().contains("fd-kb-key-"), "an API key was logged");
}

/// A Custom API described by the tenant: cursor paging with a JSON Pointer mapping
/// (escaped keys included), incremental by `updated_since` (deletions seen by a full
/// run only), then the same articles by page, offset and Link paging.
#[tokio::test]
async fn a_custom_api_source_pages_by_cursor_page_offset_and_link_and_maps_by_pointer() {
    let app = TestApp::spawn().await;
    let seeded = app.sandbox().seed_custom_kb(sandbox::CustomKbSeed {
        articles: 150,
        locales: vec!["en".into(), "fr".into()],
        draft_every: 10,
        hostile_article: true,
        ..Default::default()
    });
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let body = scenarios::dispatch_credentials("custom_api", &app.sandbox_url()).expect("custom");
    let (status, conn) = app.post("/v1/connections", &admin, body).await;
    assert_eq!(status, 201, "{conn}");
    let conn = conn["id"].as_str().expect("connection").to_owned();

    let cursor = json!({"custom": {
        "path": "/kb/cursor",
        "paging": {"style": "cursor", "next_cursor": "/next_cursor", "size_param": "limit", "size": 100},
        "items": "/articles",
        "mapping": {"id": "/key", "title": "/content/title", "body": "/content/body_html",
            "url": "/links/self", "updated_at": "/timestamps/updated",
            "locale": "/i18n/locale~0default",
            "published": {"pointer": "/published", "equals": true}},
        "updated_since_param": "updated_since"}});
    // A description that cannot work is refused when saved, field by field.
    let mut bad = cursor.clone();
    bad["custom"]["mapping"]["title"] = json!("content/title");
    bad["custom"]["paging"]["size"] = json!(5000);
    let (status, refused) = app
        .post(
            "/v1/integrations",
            &admin,
            json!({"name": "KB", "provider": "custom_api", "action": "import_kb",
                   "connection_id": conn, "triggers": [{"event": "kb_sync"}], "kb_source": bad}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    let fields = refused["error"]["details"].to_string();
    for f in [
        "kb_source.custom.mapping.title",
        "kb_source.custom.paging.size",
    ] {
        assert!(fields.contains(f), "{f}: {refused}");
    }
    let (status, refused) = app
        .post(
            "/v1/integrations",
            &admin,
            json!({"name": "KB", "provider": "custom_api", "action": "import_kb",
                   "connection_id": conn, "triggers": [{"event": "kb_sync"}]}),
        )
        .await;
    assert_eq!(
        status, 400,
        "a Custom API's import must be described: {refused}"
    );

    let id = import_integration(&app, &admin, "custom_api", &conn, cursor).await;
    let integration = IntegrationId::parse(&id).expect("id");
    let first = run(&app, &admin, &id, Value::Null).await;
    let c = counts(&first);
    assert_eq!(c["created"], seeded.article_ids.len(), "{c}");
    assert_eq!(c["unpublished"], seeded.drafts, "{c}");
    let hostile = seeded.hostile_article_id.clone().expect("hostile");
    let hostile_locale = app
        .sandbox()
        .custom_kb_articles()
        .into_iter()
        .find(|a| a.id == hostile)
        .map(|a| a.locale)
        .expect("the hostile article");
    let (status, doc) = document(
        &app,
        &admin,
        &DocumentId::of(&integration, &hostile, Some(&hostile_locale)),
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    assert_clean(&doc);
    assert!(
        doc["url"].as_str().is_some_and(|u| u.starts_with("http")),
        "{doc}"
    );
    assert!(doc["updated_at"].is_string(), "{doc}");

    // One edited, one deleted: an incremental run asks only for what changed since.
    let (edited, deleted) = (seeded.article_ids[3].clone(), seeded.article_ids[4].clone());
    app.sandbox()
        .custom_kb_update(
            &edited,
            sandbox::CustomKbChange {
                title: Some("Edited in the tenant's system".into()),
                ..Default::default()
            },
        )
        .expect("edited");
    assert!(app.sandbox().custom_kb_delete(&deleted));
    let cursor_pages = app.sandbox().calls("custom.kb_cursor");
    let second = run(&app, &admin, &id, Value::Null).await;
    let c = counts(&second);
    assert_eq!(
        (
            c["seen"].as_u64(),
            c["updated"].as_u64(),
            c["deleted"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{c}"
    );
    assert_eq!(
        app.sandbox().calls("custom.kb_cursor") - cursor_pages,
        1,
        "one page of changes"
    );
    // A full run sees the deletion.
    let third = run(&app, &admin, &id, json!("full")).await;
    let c = counts(&third);
    assert_eq!(
        (
            c["deleted"].as_u64(),
            c["created"].as_u64(),
            c["updated"].as_u64()
        ),
        (Some(1), Some(0), Some(0)),
        "{c}"
    );

    // The same articles by page, offset and Link paging, each shape mapped by pointers.
    let left = seeded.article_ids.len() - 1;
    for (path, paging, items, mapping) in [
        (
            "/kb/page",
            json!({"style": "page", "page_param": "page", "size_param": "per_page", "size": 100}),
            "/data/items",
            json!({"id": "/id", "title": "/attributes/headline", "body": "/attributes/html",
                "locale": "/attributes/lang", "updated_at": "/attributes/modified",
                "published": {"pointer": "/attributes/state", "equals": "published"}}),
        ),
        (
            "/kb/offset",
            json!({"style": "offset", "offset_param": "offset", "limit_param": "limit", "limit": 100}),
            "/results",
            json!({"id": "/article_id", "title": "/title", "body": "/body/text~1html",
                "locale": "/locale", "updated_at": "/updated_at"}),
        ),
        (
            "/kb/link",
            json!({"style": "link", "size_param": "limit", "size": 100}),
            "",
            json!({"id": "/uuid", "title": "/name", "body": "/document/source",
                "locale": "/language", "updated_at": "/last_modified",
                "published": {"pointer": "/visibility", "equals": "public"}}),
        ),
    ] {
        let id = import_integration(
            &app,
            &admin,
            "custom_api",
            &conn,
            json!({"custom": {"path": path, "paging": paging, "items": items, "mapping": mapping}}),
        )
        .await;
        let status = run(&app, &admin, &id, Value::Null).await;
        let c = counts(&status);
        assert_eq!(c["created"], left, "{path}: {c}");
        let docs = app
            .all_pages(
                &format!("/v1/kb/documents?integration_id={id}&q=Edited&limit=100"),
                &admin,
                "documents",
            )
            .await;
        assert_eq!(docs.len(), 1, "{path}: the edited title is found");
    }
    // The API's bearer token is in no log line.
    assert!(
        !app.logs().contains("custom-sandbox-token-0001"),
        "the Custom API's token was logged"
    );
}

/// Salesforce Knowledge: every Online version (each language a document, the body
/// from Answer__c), then an incremental run that takes a newly published version and
/// notices an archived article — and not the version a publish archived.
#[tokio::test]
async fn salesforce_knowledge_imports_online_versions_and_notices_new_versions_and_archives() {
    let app = TestApp::spawn().await;
    let t = s::connect(&app, "salesforce").await;
    let s::Crm::Salesforce(org) = &t.crm else {
        panic!("a Salesforce org");
    };
    let seeded = app.sandbox().seed_knowledge(
        org,
        sandbox::KnowledgeSeed {
            articles: 60,
            languages: vec!["fr".into()],
            large_article: true,
            hostile_article: true,
            ..Default::default()
        },
    );
    let id = import_integration(&app, &t.admin, "salesforce", t.conn.as_str(), Value::Null).await;
    let integration = IntegrationId::parse(&id).expect("id");
    let first = run(&app, &t.admin, &id, Value::Null).await;
    let c = counts(&first);
    assert_eq!(c["created"], seeded.online_versions, "{c}");
    assert_eq!(c["unpublished"], 0, "only Online versions are read");
    let hostile = seeded.hostile_article_id.clone().expect("hostile");
    let (status, doc) = document(
        &app,
        &t.admin,
        &DocumentId::of(&integration, &hostile, Some("en_US")),
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    assert_clean(&doc);
    let large = seeded.large_article_id.clone().expect("large");
    let (_, doc) = document(
        &app,
        &t.admin,
        &DocumentId::of(&integration, &large, Some("en_US")),
    )
    .await;
    assert!(
        doc["body_bytes"].as_u64() > Some(400_000),
        "{}",
        doc["body_bytes"]
    );

    // A new version of one article, another archived.
    let online: Vec<String> = app
        .sandbox()
        .sf_kb_articles(org)
        .into_iter()
        .filter(|a| {
            a.online("en_US").is_some()
                && Some(&a.article_id) != seeded.large_article_id.as_ref()
                && Some(&a.article_id) != seeded.hostile_article_id.as_ref()
        })
        .map(|a| a.article_id)
        .collect();
    let (republished, archived) = (online[0].clone(), online[1].clone());
    app.sandbox()
        .sf_kb_publish_new_version(
            org,
            &republished,
            "en_US",
            sandbox::SfKbChange {
                title: Some("Version two".into()),
                ..Default::default()
            },
        )
        .expect("published");
    let archived_versions = app
        .sandbox()
        .sf_kb_article(org, &archived)
        .expect("article")
        .versions
        .iter()
        .filter(|v| v.publish_status == "Online")
        .count();
    assert!(app.sandbox().sf_kb_archive(org, &archived));

    let second = run(&app, &t.admin, &id, Value::Null).await;
    let c = counts(&second);
    assert_eq!(second["last_run"]["mode"], "incremental");
    assert_eq!(c["created"], 0, "{c}");
    assert_eq!(c["updated"], 1, "the retitled master only: {c}");
    assert_eq!(c["deleted"], archived_versions, "{c}");
    let (_, doc) = document(
        &app,
        &t.admin,
        &DocumentId::of(&integration, &republished, Some("en_US")),
    )
    .await;
    assert_eq!(doc["title"], "Version two");
    let (status, _) = document(
        &app,
        &t.admin,
        &DocumentId::of(&integration, &republished, Some("fr")),
    )
    .await;
    assert_eq!(
        status, 200,
        "the republished article's translation stays, if it had one"
    );
    let (status, _) = document(
        &app,
        &t.admin,
        &DocumentId::of(&integration, &archived, Some("en_US")),
    )
    .await;
    assert_eq!(status, 404);
    let left = app
        .all_pages(
            &format!("/v1/kb/documents?integration_id={id}&limit=100"),
            &t.admin,
            "documents",
        )
        .await;
    assert_eq!(
        left.len() as u64,
        seeded.online_versions as u64 - archived_versions as u64
    );
}

/// Dynamics 365: published knowledge articles in every language (one document per
/// root article and language), then an incremental run that takes a new version and an
/// archived one, and a full run that notices a hard delete.
#[tokio::test]
async fn dynamics_knowledge_imports_published_articles_and_notices_versions_archives_and_deletes() {
    let app = TestApp::spawn().await;
    let org = format!("kb{}", unique().replace('x', ""));
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let out = app
        .oauth_connect(
            &admin,
            "dynamics365",
            json!({"return_to": RETURN_TO, "fields": {"org": org, "crm_region": "crm"}}),
            "",
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    let conn = out.connection_id.expect("connected").to_string();
    let env = format!("{org}.crm.dynamics.com");
    let seeded = app.sandbox().seed_dynamics_kb(
        &env,
        sandbox::DynKbSeed {
            articles: 60,
            languages: vec!["en-US".into(), "fr-FR".into()],
            large_article: true,
            hostile_article: true,
            ..Default::default()
        },
    );
    let id = import_integration(&app, &admin, "dynamics365", &conn, Value::Null).await;
    let integration = IntegrationId::parse(&id).expect("id");
    let first = run(&app, &admin, &id, Value::Null).await;
    let c = counts(&first);
    assert_eq!(c["created"], seeded.published_ids.len(), "{c}");
    let records = app.sandbox().dyn_kb_articles(&env);
    let record = |rid: &str| {
        records
            .iter()
            .find(|a| a.id == rid)
            .cloned()
            .expect("record")
    };
    let code = |a: &sandbox::DynKbArticle| {
        let lid = a.language_locale_id.clone().unwrap_or_default();
        seeded
            .languages
            .iter()
            .find(|(_, v)| **v == lid)
            .map(|(k, _)| k.clone())
            .expect("a language")
    };
    let doc_of = |a: &sandbox::DynKbArticle| {
        DocumentId::of(
            &integration,
            a.root_article_id.as_deref().expect("root"),
            Some(&code(a)),
        )
    };
    let hostile = record(&seeded.hostile_article_id.clone().expect("hostile"));
    let (status, doc) = document(&app, &admin, &doc_of(&hostile)).await;
    assert_eq!(status, 200, "{doc}");
    assert_clean(&doc);

    // A new published version of one, another archived, a third deleted outright.
    let plain: Vec<sandbox::DynKbArticle> = seeded
        .published_ids
        .iter()
        .map(|p| record(p))
        .filter(|a| {
            a.is_primary
                && Some(&a.id) != seeded.hostile_article_id.as_ref()
                && Some(&a.id) != seeded.large_article_id.as_ref()
        })
        .collect();
    let (versioned, archived, deleted) = (&plain[0], &plain[1], &plain[2]);
    app.sandbox()
        .dyn_kb_publish_new_version(
            &env,
            &versioned.id,
            sandbox::DynKbVersion {
                title: Some("Second edition".into()),
                publish: true,
                ..Default::default()
            },
        )
        .expect("a new version");
    assert!(app.sandbox().dyn_kb_archive(&env, &archived.id));
    let root = deleted.root_article_id.clone().expect("root");
    let deleted_docs = seeded
        .published_ids
        .iter()
        .map(|p| record(p))
        .filter(|a| a.root_article_id.as_deref() == Some(root.as_str()))
        .count();
    assert!(app.sandbox().dyn_kb_delete(&env, &root) > 0);
    app.sandbox().dyn_kb_advance_clock(&env, 2);

    let second = run(&app, &admin, &id, Value::Null).await;
    let c = counts(&second);
    assert_eq!(c["updated"], 1, "{c}");
    assert_eq!(
        c["deleted"], 1,
        "the archived one; a hard delete leaves no trace: {c}"
    );
    let (_, doc) = document(&app, &admin, &doc_of(versioned)).await;
    assert_eq!(doc["title"], "Second edition");
    let (status, _) = document(&app, &admin, &doc_of(archived)).await;
    assert_eq!(status, 404);
    let (status, _) = document(&app, &admin, &doc_of(deleted)).await;
    assert_eq!(status, 200, "still there until a full run");

    let full = run(&app, &admin, &id, json!("full")).await;
    let c = counts(&full);
    assert_eq!(c["deleted"], deleted_docs, "{c}");
    assert_eq!(
        (c["created"].as_u64(), c["updated"].as_u64()),
        (Some(0), Some(0)),
        "{c}"
    );
    let (status, _) = document(&app, &admin, &doc_of(deleted)).await;
    assert_eq!(status, 404);
}

/// A worker killed in the middle of an import step: the step's message comes back, the
/// run goes on from its last checkpoint, every document is stored once and the completed
/// event still lists every one (what the killed step stored included).
#[tokio::test]
async fn an_import_whose_worker_is_killed_resumes_from_its_checkpoint_without_duplicates() {
    let app = TestApp::isolated(devhost::LocalEnvOptions {
        sqs_retry_delay: Some(Duration::from_millis(300)),
        ..Default::default()
    })
    .await;
    let (_sub, seeded, admin, conn) = freshdesk_desk(
        &app,
        sandbox::SolutionsSeed {
            categories: 3,
            folders_per_category: 2,
            articles: 240,
            languages: vec![],
            ..Default::default()
        },
    )
    .await;
    let id = import_integration(&app, &admin, "freshdesk", &conn, Value::Null).await;

    // The step is killed once it asked for its third page of articles: the first two
    // are stored, nothing is checkpointed. Slow answers keep it from finishing first.
    app.sandbox().set_latency(None, Duration::from_millis(40));
    let kills = app.logs_about("invocation killed").lines().count();
    let pages = app.sandbox().calls("freshdesk.solution_folder_articles");
    let signal = std::sync::Arc::new(tokio::sync::Notify::new());
    app.local()
        .kill_next_invocation_on("sync-worker", signal.clone(), Duration::from_secs(100));
    let (status, started) = app
        .post(
            &format!("/v1/integrations/{id}/import-kb"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let mut waited = 0;
    while app.sandbox().calls("freshdesk.solution_folder_articles") < pages + 3 {
        waited += 1;
        assert!(waited < 6000, "the import did not get to its third page");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal.notify_one();
    let done = crate::kb::idle(&app, &format!("/v1/kb/sources/{id}/status"), &admin).await;
    app.sandbox().set_latency(None, Duration::ZERO);
    assert_eq!(done["last_run"]["run_id"], started["run"]["run_id"]);
    assert_eq!(done["last_run"]["status"], "succeeded", "{done}");
    assert_eq!(
        app.logs_about("invocation killed").lines().count() - kills,
        1,
        "the kill happened"
    );
    // Six folders of 40 articles: six pages, and the killed step's pages again.
    let read = app.sandbox().calls("freshdesk.solution_folder_articles") - pages;
    assert!(
        read >= 6 + 2,
        "the killed step's pages were read again: {read}"
    );
    let c = counts(&done);
    let all = seeded.translations.len();
    assert_eq!(
        c["created"], all,
        "each document counted once as created: {c}"
    );
    assert_eq!(c["unchanged"], 0, "{c}");
    let docs = app
        .all_pages(
            &format!("/v1/kb/documents?integration_id={id}&limit=100"),
            &admin,
            "documents",
        )
        .await;
    assert_eq!(docs.len(), all);
    assert!(docs.iter().all(|d| d["version"] == 1), "stored once each");
    let event = completed(&app, &done["last_run"]["run_id"]).await;
    assert_eq!(
        event["changed"].as_array().map(Vec::len),
        Some(all),
        "{event}"
    );
    assert_eq!(event["ids_whole"], true);
}
