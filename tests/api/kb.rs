//! Knowledge-base documents in the store (issue 15): bodies of any size — one over
//! DynamoDB's 400 KB item limit is cut into chunks and read back whole; a new version's
//! chunks replace the old ones; listings filter and keep tenants apart.

use conduit::domain::{IntegrationId, TenantId};
use conduit::kb::document::{Article, from_article};
use conduit::store::kb::{CHUNK_BYTES, Filter, KbDocuments};
use scenarios::TestApp;
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
