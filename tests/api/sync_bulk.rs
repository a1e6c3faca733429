//! Salesforce Bulk API 2.0 for large jobs: a full pull of 2,000 records or more is one
//! query job, a push page's 2,000 creates or more one ingest job, the records the org
//! refuses are the run's record errors; a chunk killed while its job runs, delivered
//! again, collects that job instead of starting another.
//!
//! Sizes: just past the 2,000-record threshold, so the suite stays fast, except one
//! push of the full 100,000 records with its record errors (about 110 s here);
//! the 100,000 records each way are also the bench's (`--only bulk`), which times them.

use std::time::Duration;

use conduit::domain::{RecordId, now};
use conduit::sync::config::SyncDirection;
use conduit::sync::crm::Cursor;
use conduit::sync::engine::{RunRequest, run_chunk, start};
use conduit::sync::message::SyncMessage;
use conduit::sync::records::{Record, Records, Source};
use conduit::sync::runs::{Phase, PushCursor, RunStatus, Runs, Task};
use conduit::sync::schema::Entity;
use sandbox::SfObject;
use scenarios::TestApp;

use crate::sync_support::{self as s, Crm, Tenant};

/// CRM records the pull reads (past the threshold).
const PULLED: usize = 2_400;
/// App records the push creates (past the threshold).
const PUSHED: usize = 2_100;
/// Of them, records without a last name (Salesforce requires one).
const REFUSED: usize = 25;

fn org(t: &Tenant) -> &str {
    match &t.crm {
        Crm::Salesforce(org) => org,
        other => panic!("not a Salesforce tenant: {other:?}"),
    }
}

/// `n` app contacts written as the records API writes them; the first `unnamed` have
/// no last name.
async fn seed_app(app: &TestApp, t: &Tenant, n: usize, unnamed: usize) -> Vec<RecordId> {
    let records = Records::new(app.app().table.clone());
    let at = now();
    let source = Source {
        origin: "app".into(),
        config_id: None,
        at,
    };
    let mut ids = Vec::with_capacity(n);
    let all: Vec<Record> = (0..n)
        .map(|i| {
            let id = RecordId::generate();
            ids.push(id.clone());
            let mut r = Record::new(id, t.id.clone(), Entity::Contacts, at);
            r.set("email", Some(&format!("bulk.{i}@app-bulk.test")), &source);
            r.set("first_name", Some(&format!("First{i}")), &source);
            if i >= unnamed {
                r.set("last_name", Some(&format!("Last{i}")), &source);
            }
            r.set("job_title", Some("Engineer"), &source);
            r.version = 1;
            r.rev = 1;
            r
        })
        .collect();
    for batch in all.chunks(200) {
        let mut attempts = 0;
        loop {
            match records.put_new(batch).await {
                Ok(()) => break,
                // moto enforces DynamoDB's partition throughput: sit a throttle out.
                Err(e) if attempts < 30 && e.to_string().contains("ThroughputExceeded") => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("seeding app records: {e}"),
            }
        }
    }
    ids
}

/// The org's Bulk API jobs of `op`.
fn jobs(app: &TestApp, t: &Tenant, op: &str) -> Vec<(String, String, String)> {
    app.sandbox()
        .salesforce_bulk_jobs(org(t))
        .into_iter()
        .filter(|(_, o, _)| o == op)
        .collect()
}

/// An environment on a DynamoDB (moto) of its own: these runs write thousands of
/// records, and moto answers an index query by sorting every item of the table, so in
/// the shared table they slowed every other scenario's pushes (the change feed is an
/// index) for the rest of the suite.
async fn own_moto() -> TestApp {
    TestApp::isolated_with_ddb(
        devhost::LocalEnvOptions::default(),
        devhost::DdbKnobs::default(),
    )
    .await
}

#[tokio::test]
async fn salesforce_large_jobs_go_through_bulk_with_record_errors() {
    let app = own_moto().await;
    let entity = Entity::Contacts;
    let t = s::connect(&app, "salesforce").await;
    s::seed(&app, &t, entity, PULLED);
    seed_app(&app, &t, PUSHED, REFUSED).await;
    let uploads = app.sandbox().calls("salesforce.bulk_ingest_upload");
    let c = s::new_config(&t, SyncDirection::Bidirectional, &[entity]);
    s::store(&app, &c).await;

    let logs = s::run(&app, &t, &c.id).await;
    let log = &logs[0];
    assert_eq!(log.status, RunStatus::Partial, "{log:?}");
    let count = |k: &str| log.counts.get(k).copied().unwrap_or(0);
    assert_eq!(count("failed"), REFUSED as u64, "{log:?}");
    assert_eq!(
        count("created"),
        (PULLED + PUSHED - REFUSED) as u64,
        "{log:?}"
    );

    // One query job read the pass, one ingest job (an upsert on the marker) wrote the
    // creates; both finished.
    let queries = jobs(&app, &t, "query");
    assert_eq!(queries.len(), 1, "{queries:?}");
    let upserts = jobs(&app, &t, "upsert");
    assert_eq!(upserts.len(), 1, "{upserts:?}");
    assert!(
        queries
            .iter()
            .chain(&upserts)
            .all(|(_, _, state)| state == "JobComplete")
    );
    assert!(app.sandbox().calls("salesforce.bulk_ingest_upload") > uploads);
    assert!(app.sandbox().calls("salesforce.bulk_query_results") > 0);
    assert!(app.sandbox().calls("salesforce.bulk_ingest_failed") > 0);

    // The refusals are the run's record errors, worded as the REST path words them.
    let errors = Runs::new(app.app().table.clone())
        .errors(&t.id, &log.id)
        .await
        .unwrap();
    assert_eq!(errors.len(), REFUSED, "{errors:?}");
    for e in &errors {
        assert_eq!(e.phase, Phase::Push);
        assert!(e.record_id.is_some());
        assert!(
            e.message.starts_with("REQUIRED_FIELD_MISSING: ") && e.message.contains("LastName"),
            "{}",
            e.message
        );
    }

    // Both sides hold everyone once; the pushed contacts carry their app ids.
    let crm = app.sandbox().salesforce_records(org(&t), SfObject::Contact);
    assert_eq!(crm.len(), PULLED + PUSHED - REFUSED);
    let marked = crm
        .iter()
        .filter(|r| r.fields.get("Conduit_Id__c").is_some_and(|v| v.is_string()))
        .count();
    assert_eq!(marked, PUSHED - REFUSED);
    let pulled = s::app_view(&app, &t, entity).await;
    assert_eq!(pulled.len(), PULLED + PUSHED);
    let crm_view = s::crm_view(&app, &t, entity);
    for (k, v) in &crm_view {
        assert_eq!(Some(v), pulled.get(k), "{k}");
    }
}

/// Starts a run of `direction` whose first chunk message goes to a queue of its own
/// (no worker takes it); answers it with the worker's queue to hand on to.
async fn first_task(
    app: &TestApp,
    t: &Tenant,
    direction: SyncDirection,
) -> (Task, conduit::queue::Publisher, conduit::domain::SyncLogId) {
    let c = s::new_config(t, direction, &[Entity::Contacts]);
    s::store(app, &c).await;
    let local = app.local();
    let sqs = aws_sdk_sqs::Client::new(&local.aws);
    let side = sqs
        .create_queue()
        .queue_name(format!("bulk-{}", s::fresh()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let started = start(
        &app.app(),
        &conduit::queue::Publisher::new(sqs.clone(), &side),
        &c,
        RunRequest {
            trigger: "manual".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let body = loop {
        let out = sqs.receive_message().queue_url(&side).send().await.unwrap();
        if let Some(body) = out
            .messages
            .unwrap_or_default()
            .into_iter()
            .find_map(|m| m.body)
        {
            break body;
        }
    };
    let SyncMessage::Chunk(task) = SyncMessage::parse(&body).unwrap() else {
        panic!("not a chunk: {body}");
    };
    let queue = conduit::queue::Publisher::new(sqs, &side);
    (*task, queue, started.logs[0].id.clone())
}

/// Runs `task` as the worker does, and kills it once `started` says its job is under
/// way (the job is slow: it is still running then).
async fn killed_while<F>(app: &TestApp, task: &Task, queue: &conduit::queue::Publisher, started: F)
where
    F: AsyncFn() -> bool,
{
    let worker = {
        let (a, task, queue) = (app.app(), task.clone(), queue.clone());
        tokio::spawn(async move { run_chunk(&a, &queue, &task, "first-delivery", false).await })
    };
    for _ in 0..300 {
        if started().await {
            worker.abort();
            let _ = worker.await;
            return;
        }
        assert!(
            !worker.is_finished(),
            "the chunk ended before its job was checkpointed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the chunk never checkpointed a bulk job");
}

async fn log_closed(
    app: &TestApp,
    t: &Tenant,
    log: &conduit::domain::SyncLogId,
) -> conduit::sync::runs::SyncLog {
    let runs = Runs::new(app.app().table.clone());
    for _ in 0..300 {
        let l = runs.log(&t.id, log).await.unwrap().unwrap();
        if l.status != RunStatus::Running {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the log did not close");
}

#[tokio::test]
async fn a_redelivered_bulk_chunk_collects_the_job_it_started() {
    let app = own_moto().await;
    let entity = Entity::Contacts;
    let runs = Runs::new(app.app().table.clone());

    // Pull: the query job outlives the first delivery.
    let t = s::connect(&app, "salesforce").await;
    app.sandbox()
        .set_salesforce_bulk_delay(org(&t), Duration::from_secs(3));
    s::seed(&app, &t, entity, 2_100);
    let (task, queue, log) = first_task(&app, &t, SyncDirection::Pull).await;
    killed_while(&app, &task, &queue, async || {
        let saved: Option<Cursor> = runs
            .checkpoint(&t.id, &task.config_id, entity, Phase::Pull)
            .await
            .unwrap();
        saved
            .and_then(|c| c.page)
            .is_some_and(|p| p.starts_with("bulk:"))
    })
    .await;
    assert_eq!(jobs(&app, &t, "query").len(), 1);
    run_chunk(&app.app(), &queue, &task, "redelivery", true)
        .await
        .unwrap();
    let l = log_closed(&app, &t, &log).await;
    assert_eq!(l.status, RunStatus::Completed, "{l:?}");
    let queries = jobs(&app, &t, "query");
    assert_eq!(
        queries.len(),
        1,
        "the redelivery started another job: {queries:?}"
    );
    assert_eq!(s::app_view(&app, &t, entity).await.len(), 2_100);

    // Push: the ingest job outlives the first delivery.
    let t = s::connect(&app, "salesforce").await;
    app.sandbox()
        .set_salesforce_bulk_delay(org(&t), Duration::from_secs(3));
    seed_app(&app, &t, 2_050, 0).await;
    let (task, queue, log) = first_task(&app, &t, SyncDirection::Push).await;
    killed_while(&app, &task, &queue, async || {
        let saved: Option<PushCursor> = runs
            .checkpoint(&t.id, &task.config_id, entity, Phase::Push)
            .await
            .unwrap();
        saved.is_some_and(|c| c.bulk.contains_key("upsert"))
    })
    .await;
    assert_eq!(jobs(&app, &t, "upsert").len(), 1);
    run_chunk(&app.app(), &queue, &task, "redelivery", true)
        .await
        .unwrap();
    let l = log_closed(&app, &t, &log).await;
    assert_eq!(l.status, RunStatus::Completed, "{l:?}");
    assert_eq!(l.counts.get("created").copied(), Some(2_050), "{l:?}");
    let upserts = jobs(&app, &t, "upsert");
    assert_eq!(
        upserts.len(),
        1,
        "the redelivery started another job: {upserts:?}"
    );
    let crm = app.sandbox().salesforce_records(org(&t), SfObject::Contact);
    assert_eq!(crm.len(), 2_050);
}

#[tokio::test]
async fn salesforce_bulk_limits_are_counted_and_refused() {
    let app = own_moto().await;
    let entity = Entity::Contacts;

    // Past the day's query jobs, a full pull is refused (403 REQUEST_LIMIT_EXCEEDED):
    // the run fails, as it does when the org's REST allowance is spent.
    let t = s::connect(&app, "salesforce").await;
    app.sandbox()
        .set_salesforce_bulk_limits(org(&t), 0, 1_000_000);
    s::seed(&app, &t, entity, 2_100);
    let c = s::new_config(&t, SyncDirection::Pull, &[entity]);
    s::store(&app, &c).await;
    let logs = s::run(&app, &t, &c.id).await;
    assert_eq!(logs[0].status, RunStatus::Failed, "{:?}", logs[0]);
    let error = logs[0].error.clone().unwrap_or_default();
    assert!(error.contains("allowance exhausted"), "{error}");
    assert!(jobs(&app, &t, "query").is_empty());

    // Past the day's ingest records, the rest of a job is not processed: those
    // records are the run's record errors, and the allowance shows what was spent.
    let t = s::connect(&app, "salesforce").await;
    app.sandbox()
        .set_salesforce_bulk_limits(org(&t), 10_000, 2_060);
    seed_app(&app, &t, 2_100, 0).await;
    let c = s::new_config(&t, SyncDirection::Push, &[entity]);
    s::store(&app, &c).await;
    let logs = s::run(&app, &t, &c.id).await;
    let log = &logs[0];
    assert_eq!(log.status, RunStatus::Partial, "{log:?}");
    assert_eq!(log.counts.get("created").copied(), Some(2_060), "{log:?}");
    assert_eq!(log.counts.get("failed").copied(), Some(40), "{log:?}");
    let upserts = jobs(&app, &t, "upsert");
    assert_eq!(upserts.len(), 1);
    assert_eq!(upserts[0].2, "Failed");
    let errors = Runs::new(app.app().table.clone())
        .errors(&t.id, &log.id)
        .await
        .unwrap();
    assert_eq!(errors.len(), 40);
    assert!(
        errors
            .iter()
            .all(|e| e.message.contains("not processed by the Bulk API job")),
        "{errors:?}"
    );
    let usage = app.sandbox().salesforce_bulk_usage(org(&t));
    assert_eq!(usage.ingest_records, (2_060, 2_060));
    assert_eq!(usage.batches.0, 1);
}

/// App contacts deleted at once (past the threshold).
const DELETED: usize = 2_050;

/// After a first (Bulk) pull, a mass update in Salesforce — more changes than the
/// threshold — makes the next incremental pass a query job of those changes, and a mass
/// delete in the app one delete ingest job; both end where REST would have.
#[tokio::test]
async fn salesforce_mass_changes_and_deletes_go_through_bulk() {
    let app = own_moto().await;
    let entity = Entity::Contacts;
    let t = s::connect(&app, "salesforce").await;
    let ids = s::seed(&app, &t, entity, PULLED);
    let mut c = s::new_config(&t, SyncDirection::Bidirectional, &[entity]);
    c.options.propagate_deletes = true;
    s::store(&app, &c).await;
    s::run_ok(&app, &t, &c.id).await;
    assert_eq!(jobs(&app, &t, "query").len(), 1);

    // A mass update in Salesforce: the incremental pass sees 2,100 changes in its first
    // REST page's totalSize and goes on as a query job of the changes since.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let changed = &ids[..PUSHED];
    for (i, id) in changed.iter().enumerate() {
        let fields = serde_json::Map::from_iter([(
            "Title".to_owned(),
            serde_json::json!(format!("Mass change {i}")),
        )]);
        assert!(
            app.sandbox()
                .update_salesforce_record(org(&t), SfObject::Contact, id, &fields)
        );
    }
    let logs = s::run_ok(&app, &t, &c.id).await;
    let count =
        |log: &conduit::sync::runs::SyncLog, k: &str| log.counts.get(k).copied().unwrap_or(0);
    assert_eq!(count(&logs[0], "updated"), PUSHED as u64, "{:?}", logs[0]);
    let queries = jobs(&app, &t, "query");
    assert_eq!(queries.len(), 2, "{queries:?}");
    let rows = s::app_rows(&app, &t, entity).await;
    let mass = rows
        .iter()
        .filter(|r| {
            r.fields
                .get("job_title")
                .is_some_and(|v| v.starts_with("Mass change "))
        })
        .count();
    assert_eq!(mass, PUSHED);

    // A mass delete in the app: one delete job removes the records from Salesforce.
    let records = Records::new(app.app().table.clone());
    let at = now();
    let doomed: Vec<&Record> = rows.iter().take(DELETED).collect();
    for group in doomed.chunks(16) {
        let saves = group.iter().map(|r| {
            let mut next = (*r).clone();
            next.deleted_at = Some(at);
            next.updated_at = at;
            next.version += 1;
            next.rev += 1;
            let records = &records;
            async move {
                let key = r.key();
                records.save(&next, key.as_deref()).await
            }
        });
        for saved in futures::future::join_all(saves).await {
            saved.expect("an app delete");
        }
    }
    let logs = s::run_ok(&app, &t, &c.id).await;
    assert_eq!(count(&logs[0], "deleted"), DELETED as u64, "{:?}", logs[0]);
    let deletes = jobs(&app, &t, "delete");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].2, "JobComplete");
    let left = app.sandbox().salesforce_records(org(&t), SfObject::Contact);
    assert_eq!(left.len(), PULLED - DELETED);
    let crm_view = s::crm_view(&app, &t, entity);
    let app_view = s::app_view(&app, &t, entity).await;
    s::assert_same(&crm_view, &app_view, "after the mass delete");
}

/// App contacts of the full-size push (`CONDUIT_BULK_SCENARIO_RECORDS` for another
/// size; the bench pushes and pulls 100,000 too, and times them).
fn full_size() -> usize {
    std::env::var("CONDUIT_BULK_SCENARIO_RECORDS")
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(100_000)
}

/// The full-size job: 100,000 app contacts pushed through Bulk API 2.0, one
/// upsert job per 5,000-record page, the ones Salesforce refuses reported as record
/// errors one by one, everyone else in the org once with its app id.
#[tokio::test]
async fn a_100k_record_push_runs_through_bulk_with_its_record_errors() {
    let n = full_size();
    let app = own_moto().await;
    let t = s::connect(&app, "salesforce").await;
    // Refused rows on several pages: the first page's first ones and the last page's.
    let ids = seed_app(&app, &t, n, REFUSED).await;
    let c = s::new_config(&t, SyncDirection::Push, &[Entity::Contacts]);
    s::store(&app, &c).await;
    let logs = s::run(&app, &t, &c.id).await;
    let log = &logs[0];
    assert_eq!(log.status, RunStatus::Partial, "{log:?}");
    let count = |k: &str| log.counts.get(k).copied().unwrap_or(0);
    assert_eq!(count("created"), (n - REFUSED) as u64, "{log:?}");
    assert_eq!(count("failed"), REFUSED as u64, "{log:?}");

    let upserts = jobs(&app, &t, "upsert");
    assert_eq!(upserts.len(), n.div_ceil(5_000), "{}", upserts.len());
    assert!(upserts.iter().all(|(_, _, state)| state == "JobComplete"));
    let usage = app.sandbox().salesforce_bulk_usage(org(&t));
    // Every row through a job, none written the REST way: every page is full but the
    // last (a page left short once left a tail of 2 or 5 records, too few for a job,
    // written through the REST API). What the failure says: the REST writes made, the
    // jobs, and the run's log (a retried chunk leaves its note there).
    assert_eq!(
        usage.ingest_records.0,
        n as u64,
        "REST writes {:?}, jobs {upserts:?}, {log:?}",
        app.sandbox()
            .calls_view()
            .routes
            .iter()
            .filter(|(route, _)| route.starts_with("salesforce.composite_")
                || route.starts_with("salesforce.sobject_"))
            .collect::<Vec<_>>()
    );

    let errors = Runs::new(app.app().table.clone())
        .errors(&t.id, &log.id)
        .await
        .unwrap();
    assert_eq!(errors.len(), REFUSED, "{errors:?}");
    let refused: std::collections::BTreeSet<String> =
        ids[..REFUSED].iter().map(ToString::to_string).collect();
    for e in &errors {
        assert!(
            e.record_id.as_ref().is_some_and(|id| refused.contains(id)),
            "{e:?}"
        );
        assert!(
            e.message.starts_with("REQUIRED_FIELD_MISSING: "),
            "{}",
            e.message
        );
    }
    let crm = app.sandbox().salesforce_records(org(&t), SfObject::Contact);
    assert_eq!(crm.len(), n - REFUSED);
    let marked: std::collections::BTreeSet<&str> = crm
        .iter()
        .filter_map(|r| r.fields.get("Conduit_Id__c").and_then(|v| v.as_str()))
        .collect();
    assert_eq!(marked.len(), n - REFUSED, "each once, with its app id");
}
