//! Knowledge-base documents in the store (issue 15): bodies of any size — one over
//! DynamoDB's 400 KB item limit is cut into chunks and read back whole; a new version's
//! chunks replace the old ones; listings filter and keep tenants apart.

use conduit::domain::{IntegrationId, TenantId};
use conduit::kb::document::{Article, from_article};
use conduit::store::kb::{CHUNK_BYTES, Filter, KbDocuments};
use scenarios::TestApp;
use serde_json::Value;
use time::OffsetDateTime;

fn article(id: &str, title: &str, html: String) -> Article {
    Article {
        external_id: id.to_owned(),
        locale: Some("en-us".to_owned()),
        title: title.to_owned(),
        html,
        url: Some(format!("https://acme.zendesk.com/hc/en-us/articles/{id}")),
        labels: vec!["billing".to_owned()],
        section_path: vec!["FAQ".to_owned(), "Billing".to_owned()],
        published: true,
        updated_at: Some(OffsetDateTime::now_utc()),
    }
}

/// Items in a partition, over every page (DynamoDB answers at most 1 MB a page).
async fn chunk_count(app: &TestApp, pk: &str) -> usize {
    let mut count = 0;
    let mut start = None;
    loop {
        let out = app
            .dynamo()
            .query()
            .table_name(app.table())
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(
                ":pk",
                aws_sdk_dynamodb::types::AttributeValue::S(pk.to_owned()),
            )
            .select(aws_sdk_dynamodb::types::Select::Count)
            .set_exclusive_start_key(start)
            .consistent_read(true)
            .send()
            .await
            .expect("query");
        count += usize::try_from(out.count()).unwrap_or(0);
        match out.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => return count,
        }
    }
}

#[tokio::test]
async fn a_body_over_dynamodbs_item_limit_is_stored_in_chunks_and_read_back_whole() {
    let app = TestApp::spawn().await;
    let store = KbDocuments::new(app.app().table.clone());
    let tenant = TenantId::parse(&app.tenant()).expect("tenant");
    let integration = IntegrationId::generate();
    // About 900 KB of HTML (a table-heavy article), non-ASCII included.
    let row = "<tr><td>Plan</td><td>Tarif für Geschäftskunden — 12 €</td></tr>";
    let big = format!("<table>{}</table>", row.repeat(900_000 / row.len()));
    let (doc, body) = from_article(
        &tenant,
        &integration,
        "zendesk",
        &article("9001", "Price list", big),
        OffsetDateTime::now_utc(),
    );
    assert!(body.bytes() > 800_000, "{}", body.bytes());
    store.save(&doc, &body, None).await.expect("saved");
    assert!(
        doc.chunks as usize >= (body.bytes() as usize).div_ceil(CHUNK_BYTES),
        "{} chunks",
        doc.chunks
    );
    let pk = |hash: &str, n: u32| format!("KBBODY#{tenant}#{}#{hash}#{n:04}", doc.id);
    for n in 0..doc.chunks {
        assert_eq!(chunk_count(&app, &pk(&doc.hash, n)).await, 1, "chunk {n}");
    }

    let read = store
        .get(&tenant, &doc.id)
        .await
        .expect("read")
        .expect("there");
    assert_eq!(read, doc);
    let back = store.body(&read).await.expect("read").expect("whole");
    assert_eq!(back, body, "the body reads back byte for byte");

    // A new, small version replaces it: its one chunk, the old ones gone.
    let (mut next, small) = from_article(
        &tenant,
        &integration,
        "zendesk",
        &article(
            "9001",
            "Price list",
            "<p>See the pricing page.</p>".to_owned(),
        ),
        OffsetDateTime::now_utc(),
    );
    next.version = read.version + 1;
    store.save(&next, &small, Some(&read)).await.expect("saved");
    assert_eq!(next.chunks, 1);
    assert_eq!(chunk_count(&app, &pk(&next.hash, 0)).await, 1);
    for n in 0..doc.chunks {
        assert_eq!(
            chunk_count(&app, &pk(&doc.hash, n)).await,
            0,
            "old chunk {n}"
        );
    }
    let now = store
        .get(&tenant, &doc.id)
        .await
        .expect("read")
        .expect("there");
    assert_eq!(store.body(&now).await.expect("read"), Some(small.clone()));
    // A save over a version that moved on is refused.
    let refused = store.save(&next, &small, Some(&read)).await;
    assert!(
        matches!(refused, Err(conduit::store::StoreError::ConditionFailed)),
        "{refused:?}"
    );

    // Deleted: the metadata and every chunk.
    store.delete(&now).await.expect("deleted");
    assert!(store.get(&tenant, &doc.id).await.expect("read").is_none());
    assert_eq!(chunk_count(&app, &pk(&next.hash, 0)).await, 0);
}

#[tokio::test]
async fn listings_filter_page_and_keep_tenants_apart() {
    let app = TestApp::spawn().await;
    let store = KbDocuments::new(app.app().table.clone());
    let tenant = TenantId::parse(&app.tenant()).expect("tenant");
    let other = TenantId::parse(&app.tenant()).expect("tenant");
    let zendesk = IntegrationId::generate();
    let freshdesk = IntegrationId::generate();
    for n in 0..30 {
        let (integration, source) = if n % 3 == 0 {
            (&freshdesk, "freshdesk")
        } else {
            (&zendesk, "zendesk")
        };
        let mut a = article(
            &n.to_string(),
            &format!(
                "Article {n}: {}",
                if n % 5 == 0 { "Refunds" } else { "Setup" }
            ),
            format!("<p>Body {n}</p>"),
        );
        if n % 2 == 1 {
            a.locale = Some("de".to_owned());
        }
        let (doc, body) = from_article(&tenant, integration, source, &a, OffsetDateTime::now_utc());
        store.save(&doc, &body, None).await.expect("saved");
    }
    let (theirs, body) = from_article(
        &other,
        &zendesk,
        "zendesk",
        &article("x", "Refunds elsewhere", "<p>x</p>".to_owned()),
        OffsetDateTime::now_utc(),
    );
    store.save(&theirs, &body, None).await.expect("saved");

    // Every document once, over pages of 7.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .page(&tenant, 7, cursor.as_deref(), &Filter::default())
            .await
            .expect("page");
        assert!(page.documents.len() <= 7);
        assert!(page.skipped.is_empty());
        seen.extend(page.documents.into_iter().map(|d| d.external_id));
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seen.sort();
    let mut all: Vec<String> = (0..30).map(|n: i32| n.to_string()).collect();
    all.sort();
    assert_eq!(seen, all, "every document once, none of the other tenant");

    let only = |f: Filter| {
        let store = store.clone();
        let tenant = tenant.clone();
        async move {
            let mut out = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = store
                    .page(&tenant, 50, cursor.as_deref(), &f)
                    .await
                    .expect("page");
                out.extend(page.documents);
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => return out,
                }
            }
        }
    };
    let fresh = only(Filter {
        source: Some("freshdesk".to_owned()),
        ..Filter::default()
    })
    .await;
    assert_eq!(fresh.len(), 10);
    assert!(fresh.iter().all(|d| d.integration_id == freshdesk));
    let german = only(Filter {
        locale: Some("DE".to_owned()),
        ..Filter::default()
    })
    .await;
    assert_eq!(german.len(), 15);
    let refunds = only(Filter {
        title: Some("refunds".to_owned()),
        ..Filter::default()
    })
    .await;
    assert_eq!(
        refunds.len(),
        6,
        "0, 5, 10, 15, 20, 25 — not the other tenant's"
    );
    let later = only(Filter {
        updated_since: Some(OffsetDateTime::now_utc() + time::Duration::hours(1)),
        ..Filter::default()
    })
    .await;
    assert!(later.is_empty());
}

/// A help desk of its own in the sandbox (the Help Center is kept per subdomain), with
/// a seeded help centre, and a tenant connected to it: (app, tenant, connection id,
/// subdomain, what was seeded).
async fn help_centre(
    seed: sandbox::HelpCenterSeed,
) -> (
    TestApp,
    TenantId,
    conduit::domain::ConnectionId,
    String,
    sandbox::HelpCenterSummary,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let app = TestApp::spawn().await;
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000;
    let sub = format!("kb{n}x{nanos}");
    let token = format!("zd-kb-token-{n}-{nanos}");
    let account: sandbox::Account = serde_json::from_value(serde_json::json!({
        "provider": "zendesk", "subdomain": sub, "api_token": token,
        "email": format!("admin@{sub}.test")}))
    .expect("an account");
    app.sandbox().add_account(account).expect("sandbox account");
    let summary = app.sandbox().seed_help_center(&sub, seed);
    let tenant = app.tenant();
    let admin = app.token(&tenant, scenarios::Role::Admin);
    let (status, created) = app
        .post(
            "/v1/connections",
            &admin,
            serde_json::json!({"provider": "zendesk", "label": "Help centre",
                "credentials": {"subdomain": sub, "email": format!("admin@{sub}.test"),
                                "api_token": token}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = conduit::domain::ConnectionId::parse(created["id"].as_str().expect("id"))
        .expect("connection id");
    (
        app,
        TenantId::parse(&tenant).expect("tenant"),
        id,
        sub,
        summary,
    )
}

/// A checkpoint of a new run of `S` (`since`: where the last run ended).
fn checkpoint<S: conduit::kb::source::Source>(
    run: &str,
    mode: conduit::kb::import::Mode,
    since: &Value,
) -> conduit::kb::import::Checkpoint {
    conduit::kb::import::Checkpoint::start(run, mode, S::start(mode, since))
}

/// Runs one import of a Zendesk help centre to its end (one long invocation).
async fn import(
    app: &TestApp,
    tenant: &TenantId,
    connection: &conduit::domain::ConnectionId,
    integration: &IntegrationId,
    checkpoint: conduit::kb::import::Checkpoint,
) -> conduit::kb::import::Progress {
    import_from(app, "zendesk", tenant, connection, integration, checkpoint).await
}

/// Runs one import of `provider`'s source to its end (one long invocation).
async fn import_from(
    app: &TestApp,
    provider: &'static str,
    tenant: &TenantId,
    connection: &conduit::domain::ConnectionId,
    integration: &IntegrationId,
    checkpoint: conduit::kb::import::Checkpoint,
) -> conduit::kb::import::Progress {
    let conduit = app.app();
    let tokens = conduit::oauth::lifecycle::Tokens::new(&conduit, "kb-import", "test");
    let creds = tokens
        .credentials(tenant, connection)
        .await
        .expect("credentials");
    let catalogued = conduit.catalogue.provider(provider).expect("provider");
    let mut budget = conduit::sync::budget::Budget::new(
        conduit.table.clone(),
        tenant,
        connection,
        conduit::sync::budget::interval_for(catalogued),
        conduit::sync::budget::tolerance_for(catalogued),
    );
    let http = conduit::kb::source::Http::new(&tokens, creds, &mut budget, provider);
    let store = KbDocuments::new(conduit.table.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let progress = match provider {
        "zendesk" => {
            let mut source = conduit::kb::zendesk::Zendesk::new(http);
            conduit::kb::import::run(
                &store,
                &mut source,
                tenant,
                integration,
                checkpoint,
                deadline,
            )
            .await
        }
        "freshdesk" => {
            let mut source = conduit::kb::freshdesk::Freshdesk::new(http);
            conduit::kb::import::run(
                &store,
                &mut source,
                tenant,
                integration,
                checkpoint,
                deadline,
            )
            .await
        }
        other => panic!("no source {other}"),
    }
    .expect("imported");
    assert_eq!(
        progress.checkpoint.phase,
        conduit::kb::import::Phase::Done,
        "{progress:?}"
    );
    progress
}

#[tokio::test]
async fn a_zendesk_help_centre_imports_in_full_then_by_changes_and_a_full_run_sweeps_archived_articles()
 {
    use conduit::kb::import::Mode;
    use conduit::kb::zendesk::Zendesk;
    let (app, tenant, connection, sub, seeded) = help_centre(sandbox::HelpCenterSeed {
        articles: 120,
        large_article: true,
        hostile_article: true,
        ..Default::default()
    })
    .await;
    let integration = IntegrationId::generate();
    let store = KbDocuments::new(app.app().table.clone());

    // Full: every translation of every article, drafts unpublished.
    let first = import(
        &app,
        &tenant,
        &connection,
        &integration,
        checkpoint::<Zendesk>("run-1", Mode::Full, &Value::Null),
    )
    .await;
    let c = &first.checkpoint.counts;
    assert_eq!(c.seen as usize, seeded.translations, "{c:?}");
    assert_eq!(c.created, c.seen);
    assert_eq!((c.updated, c.unchanged, c.deleted), (0, 0, 0));
    assert!(c.unpublished > 0, "drafts are stored unpublished: {c:?}");
    assert_eq!(first.changed.len() as u64, c.created);
    let end = first.checkpoint.cursor.clone();
    assert_eq!(end["start_time"].as_i64(), seeded.newest_updated_at);

    // The hostile article is stored clean; the large one whole.
    let doc_of = |id: u64, locale: &str| {
        conduit::kb::document::DocumentId::of(&integration, &id.to_string(), Some(locale))
    };
    let hostile = store
        .get(
            &tenant,
            &doc_of(seeded.hostile_article_id.expect("hostile"), "en-us"),
        )
        .await
        .expect("read")
        .expect("stored");
    let body = store.body(&hostile).await.expect("read").expect("body");
    let lower = body.html.to_ascii_lowercase();
    for banned in [
        "<script",
        "onerror",
        "onmouseover",
        "javascript:",
        "<iframe",
        "<form",
    ] {
        assert!(!lower.contains(banned), "{banned} survived: {}", body.html);
    }
    let large = store
        .get(
            &tenant,
            &doc_of(seeded.large_article_id.expect("large"), "en-us"),
        )
        .await
        .expect("read")
        .expect("stored");
    assert!(large.body_bytes > 400_000 && large.chunks >= 2, "{large:?}");
    let body = store.body(&large).await.expect("read").expect("whole");
    assert_eq!(body.bytes(), large.body_bytes);

    // Nothing changed: an incremental run reads nothing new.
    let quiet = import(
        &app,
        &tenant,
        &connection,
        &integration,
        checkpoint::<Zendesk>("run-2", Mode::Incremental, &end),
    )
    .await;
    assert_eq!(quiet.checkpoint.counts, Default::default());
    assert_eq!(quiet.checkpoint.cursor, end);

    // One retitled, one unpublished, one archived; a second later the export has them.
    let ids = &seeded.article_ids;
    let (retitled, drafted, archived) = (ids[3], ids[4], ids[5]);
    app.sandbox()
        .hc_update_article(
            &sub,
            retitled,
            sandbox::HcArticleChange {
                title: Some("Renamed: how refunds work".to_owned()),
                ..Default::default()
            },
        )
        .expect("updated");
    app.sandbox()
        .hc_set_draft(&sub, drafted, true)
        .expect("drafted");
    assert!(app.sandbox().hc_archive_article(&sub, archived));
    app.sandbox().hc_advance_clock(&sub, 2);
    let changes = import(
        &app,
        &tenant,
        &connection,
        &integration,
        checkpoint::<Zendesk>("run-3", Mode::Incremental, &end),
    )
    .await;
    let c = &changes.checkpoint.counts;
    // Every translation of the two changed articles is read again: the retitled
    // translation and the drafted ones are stored anew, the rest skipped unchanged.
    assert!(c.updated >= 2, "{c:?}");
    assert_eq!(c.created, 0, "{c:?}");
    assert_eq!(
        c.deleted, 0,
        "an incremental run cannot see an archive: {c:?}"
    );
    assert_eq!(c.seen, c.updated + c.unchanged);
    let renamed = store
        .get(&tenant, &doc_of(retitled, "en-us"))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(renamed.title, "Renamed: how refunds work");
    assert_eq!(renamed.version, 2);
    let unpublished = store
        .get(&tenant, &doc_of(drafted, "en-us"))
        .await
        .expect("read")
        .expect("stored");
    assert!(!unpublished.published);

    // A full run: the archived article's documents are swept; the rest unchanged.
    let full = import(
        &app,
        &tenant,
        &connection,
        &integration,
        checkpoint::<Zendesk>("run-4", Mode::Full, &Value::Null),
    )
    .await;
    let c = &full.checkpoint.counts;
    let archived_docs = seeded.translations as u64 - c.seen;
    assert!(archived_docs >= 1, "{c:?}");
    assert_eq!(c.deleted, archived_docs, "{c:?}");
    assert_eq!(c.unchanged, c.seen, "{c:?}");
    assert!(full.changed.is_empty());
    assert!(
        store
            .get(&tenant, &doc_of(archived, "en-us"))
            .await
            .expect("read")
            .is_none()
    );
}

/// Waits for `integration`'s run to end; its status.
async fn run_ended(
    app: &TestApp,
    tenant: &TenantId,
    integration: &IntegrationId,
) -> conduit::kb::run::SourceStatus {
    let conduit = app.app();
    for _ in 0..600 {
        let s = conduit::kb::run::status(&conduit, tenant, integration)
            .await
            .expect("status")
            .expect("a status");
        if s.run.is_none() {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the import did not end");
}

/// In the background, through the sync queue and worker: a full import sits out a 429
/// storm and still stores every article once; a second start meanwhile is refused; the
/// completed event lists what changed; the next incremental run starts where it ended.
#[tokio::test]
async fn a_background_import_sits_out_a_429_storm_and_announces_what_changed() {
    use conduit::kb::import::Mode;
    use conduit::kb::run::{RunError, start};
    let (app, tenant, connection, sub, seeded) = help_centre(sandbox::HelpCenterSeed {
        articles: 60,
        ..Default::default()
    })
    .await;
    let integration = IntegrationId::generate();
    let conduit = app.app();
    let url = app
        .local()
        .stack
        .ref_value("SyncQueue")
        .expect("the sync queue");
    let publisher = conduit::queue::Publisher::new(aws_sdk_sqs::Client::new(&app.local().aws), url);
    let source = || conduit::kb::run::SourceRef {
        tenant: &tenant,
        integration: &integration,
        connection: &connection,
        source: "zendesk",
        settings: Value::Null,
    };
    // Zendesk answers the next six Help Center requests 429, Retry-After 1 s.
    app.sandbox().hc_throttle_next(&sub, 6, 1);
    let started = start(&conduit, &publisher, source(), Some(Mode::Full))
        .await
        .expect("started");
    let run_id = started.run.as_ref().expect("a run").run_id.clone();
    let again = start(&conduit, &publisher, source(), Some(Mode::Full)).await;
    assert!(matches!(again, Err(RunError::Busy)), "{again:?}");

    let done = run_ended(&app, &tenant, &integration).await;
    let last = done.last_run.as_ref().expect("a summary");
    assert_eq!(last.run_id, run_id);
    assert_eq!(last.status, "succeeded", "{last:?}");
    assert_eq!(
        last.counts.created as usize, seeded.translations,
        "{last:?}"
    );
    assert_eq!(
        last.counts.seen, last.counts.created,
        "each article once: {last:?}"
    );
    assert_eq!(done.cursor["start_time"].as_i64(), seeded.newest_updated_at);
    let event = app
        .wait_for_event(conduit::kb::run::IMPORT_COMPLETED, |d| {
            d["run_id"] == run_id.as_str()
        })
        .await;
    let event = &event["detail"];
    assert_eq!(event["status"], "succeeded");
    assert_eq!(event["counts"]["created"], last.counts.created);
    assert_eq!(
        event["changed"].as_array().map(Vec::len),
        Some(seeded.translations)
    );
    assert_eq!(event["ids_whole"], true);

    // The next run is incremental from the cursor: nothing new.
    start(&conduit, &publisher, source(), Some(Mode::Incremental))
        .await
        .expect("started");
    let quiet = run_ended(&app, &tenant, &integration).await;
    let last = quiet.last_run.expect("a summary");
    assert_eq!(last.mode, Mode::Incremental);
    assert_eq!(last.counts, Default::default());
    assert_eq!(quiet.cursor, done.cursor);
}

/// Over the API: an admin starts the import of a Zendesk integration's help centre;
/// its status shows the run and then its summary; members list documents (filtered)
/// and read one with its clean body; a `kb_sync` event and the integration's schedule
/// start incremental runs; another tenant sees none of it; an integration that is no
/// knowledge-base import is refused.
#[tokio::test]
async fn the_api_imports_a_help_centre_and_serves_its_documents_to_the_tenant_alone() {
    use serde_json::json;
    let (app, tenant, connection, _sub, seeded) = help_centre(sandbox::HelpCenterSeed {
        articles: 40,
        hostile_article: true,
        ..Default::default()
    })
    .await;
    let admin = app.token(tenant.as_str(), scenarios::Role::Admin);
    let member = app.token(tenant.as_str(), scenarios::Role::Member);

    // What an import integration may be: kb_source only on import_kb, a schedule of 15
    // minutes to a week, a Custom API's import described.
    for (body, field) in [
        (
            json!({"name": "Tickets", "provider": "zendesk", "action": "create_ticket",
                   "connection_id": connection.as_str(), "kb_source": {"every_minutes": 60},
                   "triggers": [{"event": "conversation_ended"}]}),
            "kb_source",
        ),
        (
            json!({"name": "Help centre", "provider": "zendesk", "action": "import_kb",
                   "connection_id": connection.as_str(), "kb_source": {"every_minutes": 5},
                   "triggers": [{"event": "kb_sync"}]}),
            "kb_source.every_minutes",
        ),
        (
            json!({"name": "Help centre", "provider": "zendesk", "action": "import_kb",
                   "connection_id": connection.as_str(),
                   "triggers": [{"event": "conversation_ended"}]}),
            "triggers[0].event",
        ),
    ] {
        let (status, body) = app.post("/v1/integrations", &admin, body).await;
        assert_eq!(status, 400, "{body}");
        let fields = body["error"]["details"].to_string();
        assert!(fields.contains(&format!("\"{field}\"")), "{field}: {body}");
    }

    let (status, integration) = app
        .post(
            "/v1/integrations",
            &admin,
            json!({"name": "Help centre", "provider": "zendesk", "action": "import_kb",
                   "connection_id": connection.as_str(), "kb_source": {"every_minutes": 60},
                   "triggers": [{"event": "kb_sync"}]}),
        )
        .await;
    assert_eq!(status, 201, "{integration}");
    assert_eq!(integration["kb_source"]["every_minutes"], 60);
    let id = integration["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/integrations/{id}/import-kb");

    let (status, body) = app.post(&path, &member, json!({})).await;
    assert_eq!(status, 403, "members do not start imports: {body}");
    let (status, body) = app.post(&path, &admin, json!({"mode": "sideways"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, started) = app.post(&path, &admin, json!({})).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["state"], "running");
    assert_eq!(
        started["run"]["mode"], "full",
        "a source's first run is full"
    );

    let status_path = format!("/v1/kb/sources/{id}/status");
    let mut last = serde_json::Value::Null;
    for _ in 0..300 {
        let (status, s) = app.get(&status_path, &member).await;
        assert_eq!(status, 200, "{s}");
        if s["state"] == "idle" {
            last = s;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(last["last_run"]["status"], "succeeded", "{last}");
    assert_eq!(
        last["last_run"]["counts"]["created"].as_u64(),
        Some(seeded.translations as u64)
    );

    // Listed, filtered, paged; one read whole and clean.
    let all = app
        .all_pages(
            &format!("/v1/kb/documents?integration_id={id}&limit=7"),
            &member,
            "documents",
        )
        .await;
    assert_eq!(all.len(), seeded.translations);
    let (status, german) = app
        .get("/v1/kb/documents?locale=de&limit=100", &member)
        .await;
    assert_eq!(status, 200, "{german}");
    assert!(
        german["documents"]
            .as_array()
            .is_some_and(|d| !d.is_empty() && d.iter().all(|x| x["locale"] == "de")),
        "{german}"
    );
    let hostile = conduit::kb::document::DocumentId::of(
        &IntegrationId::parse(&id).expect("id"),
        &seeded.hostile_article_id.expect("hostile").to_string(),
        Some("en-us"),
    );
    let (status, doc) = app
        .get(&format!("/v1/kb/documents/{hostile}"), &member)
        .await;
    assert_eq!(status, 200, "{doc}");
    let html = doc["html"].as_str().expect("html").to_ascii_lowercase();
    assert!(
        !html.contains("<script") && !html.contains("onerror") && !html.contains("javascript:")
    );
    assert!(doc["markdown"].as_str().is_some_and(|m| !m.is_empty()));
    for bad in [
        "/v1/kb/documents/nope",
        "/v1/kb/documents?updated_since=yesterday",
        "/v1/kb/documents?colour=red",
    ] {
        let (status, body) = app.get(bad, &member).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // A kb_sync event runs the integration's import_kb step: an incremental run.
    let first_run = last["last_run"]["run_id"].clone();
    let d = app
        .dispatched(
            &admin,
            json!({"schema_version": 1, "type": "kb_sync", "event_id": "evt_kb_1",
                   "tenant_id": tenant.as_str(), "occurred_at": "2026-12-06T03:12:44Z"}),
        )
        .await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let step = &d["steps"][0];
    assert_eq!(step["status"], "succeeded", "{d}");
    let event_run = step["outputs"]["id"].clone();
    assert!(
        event_run.as_str().is_some_and(|r| r.starts_with("kbr_")),
        "{d}"
    );
    let after_event = idle(&app, &status_path, &member).await;
    assert_eq!(after_event["last_run"]["run_id"], event_run);
    assert_ne!(after_event["last_run"]["run_id"], first_run);
    assert_eq!(after_event["last_run"]["mode"], "incremental");
    assert_eq!(
        after_event["last_run"]["status"], "succeeded",
        "{after_event}"
    );

    // Its schedule: every 60 minutes, invoking the sync trigger; fired now, it runs an
    // incremental import too. Disabled with the integration; gone with it.
    let group = app
        .local()
        .stack
        .ref_value("SyncScheduleGroup")
        .expect("the schedule group");
    let name = format!("kb-{id}");
    let scheduler = aws_sdk_scheduler::Client::new(&app.app().aws);
    let s = scheduler
        .get_schedule()
        .group_name(&group)
        .name(&name)
        .send()
        .await
        .expect("the import's schedule");
    assert_eq!(s.schedule_expression(), Some("rate(60 minutes)"));
    assert_eq!(s.state().map(|x| x.as_str()), Some("ENABLED"));
    let input: serde_json::Value =
        serde_json::from_str(s.target().and_then(|t| t.input()).unwrap_or("null")).expect("input");
    assert_eq!(input["kb_integration_id"], id.as_str());
    let fired = app
        .local()
        .fire_scheduler_schedule(&group, &name)
        .await
        .expect("fired");
    assert_eq!(fired["started"], true, "{fired}");
    let after_schedule = idle(&app, &status_path, &member).await;
    assert_eq!(after_schedule["last_run"]["run_id"], fired["run_id"]);
    assert_eq!(after_schedule["last_run"]["mode"], "incremental");
    let (status, body) = app
        .patch(
            &format!("/v1/integrations/{id}"),
            &admin,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let s = scheduler
        .get_schedule()
        .group_name(&group)
        .name(&name)
        .send()
        .await
        .expect("the import's schedule");
    assert_eq!(s.state().map(|x| x.as_str()), Some("DISABLED"));

    // Another tenant: nothing.
    let stranger = app.token(&app.tenant(), scenarios::Role::Admin);
    let (status, _) = app
        .get(&format!("/v1/kb/documents/{hostile}"), &stranger)
        .await;
    assert_eq!(status, 404);
    let (status, theirs) = app.get("/v1/kb/documents", &stranger).await;
    assert_eq!(status, 200);
    assert_eq!(theirs["documents"], json!([]));
    let (status, _) = app.get(&status_path, &stranger).await;
    assert_eq!(status, 404);
    let (status, _) = app.post(&path, &stranger, json!({})).await;
    assert_eq!(status, 404);

    // An integration that is no knowledge-base source.
    let (status, hook) = app
        .post(
            "/v1/integrations",
            &admin,
            json!({"name": "Hook", "provider": "webhook", "action": "deliver",
                   "webhook": {"url": "https://hooks.example.com/conduit"},
                   "triggers": [{"event": "conversation_ended"}]}),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let (status, body) = app
        .post(
            &format!(
                "/v1/integrations/{}/import-kb",
                hook["id"].as_str().expect("id")
            ),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "not_a_kb_source");

    // Deleted, its schedule goes with it.
    let (status, _) = app.delete(&format!("/v1/integrations/{id}"), &admin).await;
    assert_eq!(status, 204);
    let gone = scheduler
        .get_schedule()
        .group_name(&group)
        .name(&name)
        .send()
        .await;
    assert!(gone.is_err(), "the schedule is deleted");
}

/// Polls a source's status until it is idle.
pub(crate) async fn idle(app: &TestApp, status_path: &str, token: &str) -> Value {
    for _ in 0..300 {
        let (status, s) = app.get(status_path, token).await;
        assert_eq!(status, 200, "{s}");
        if s["state"] == "idle" {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the import did not end");
}
