//! Tenant fairness on the shared sync queue: a large tenant's pull is under way when a
//! small tenant triggers its own; the small one finishes while the large one still
//! runs. Every sync message carries its tenant as `MessageGroupId`, so the queue is an
//! SQS fair queue, which the dev host's pollers emulate.

use std::time::{Duration, Instant};

use conduit::sync::config::SyncDirection;
use conduit::sync::runs::{RunStatus, Runs};
use conduit::sync::schema::Entity;
use scenarios::TestApp;

use crate::sync_support as s;

/// Contacts of the large tenant: a pull of two chunks (120 pages of 100 each), some
/// tens of seconds at HubSpot's rate.
const LARGE: usize = 15_000;
/// Contacts of the small tenant: one page.
const SMALL: usize = 40;

#[tokio::test]
async fn a_small_tenants_sync_finishes_while_a_large_one_runs() {
    // A stack of its own: no other test's syncs share its queue or its timing.
    let app = TestApp::isolated(devhost::LocalEnvOptions::default()).await;
    let large = s::connect(&app, "hubspot").await;
    let small = s::connect(&app, "hubspot").await;
    s::seed(&app, &large, Entity::Contacts, LARGE);
    s::seed(&app, &small, Entity::Contacts, SMALL);
    let large_config = s::new_config(&large, SyncDirection::Pull, &[Entity::Contacts]);
    let small_config = s::new_config(&small, SyncDirection::Pull, &[Entity::Contacts]);
    s::store(&app, &large_config).await;
    s::store(&app, &small_config).await;

    let (status, large_run) = s::trigger(&app, &large, &large_config.id).await;
    assert_eq!(status, 202, "{large_run}");
    let runs = Runs::new(app.app().table.clone());
    let large_log =
        conduit::domain::SyncLogId::parse(large_run["logs"][0]["id"].as_str().unwrap()).unwrap();
    // The large pull is under way: some records in, far from all.
    let under_way = Instant::now();
    loop {
        let log = runs.log(&large.id, &large_log).await.unwrap().unwrap();
        if log.counts.get("processed").copied().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            under_way.elapsed() < Duration::from_secs(60),
            "the large pull did not start: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = Instant::now();
    let (status, small_run) = s::trigger(&app, &small, &small_config.id).await;
    assert_eq!(status, 202, "{small_run}");
    let small_logs = s::wait(&app, &small, &small_run).await;
    let small_took = started.elapsed();
    for log in &small_logs {
        assert_eq!(log.status, RunStatus::Completed, "{log:?}");
        assert_eq!(
            log.counts.get("created").copied(),
            Some(SMALL as u64),
            "{log:?}"
        );
    }
    let large_now = runs.log(&large.id, &large_log).await.unwrap().unwrap();
    assert_eq!(
        large_now.status,
        RunStatus::Running,
        "the small sync took {small_took:?}; the large one should still be running: {large_now:?}"
    );
    assert!(
        large_now.counts.get("processed").copied().unwrap_or(0) < LARGE as u64,
        "{large_now:?}"
    );

    // And the large one completes, every record in.
    let large_logs = s::wait(&app, &large, &large_run).await;
    for log in &large_logs {
        assert_eq!(log.status, RunStatus::Completed, "{log:?}");
        assert_eq!(
            log.counts.get("created").copied(),
            Some(LARGE as u64),
            "{log:?}"
        );
    }
}
