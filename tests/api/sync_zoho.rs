//! Record sync with a sandbox Zoho CRM org: each direction for contacts (Contacts) and
//! companies (Accounts), conflicts, deletes (the recycle bin and `/deleted`), filters
//! (applied to each pulled page: Zoho's list takes none) and duplicate deliveries, each
//! ending with both sides' records compared whole.

use std::collections::BTreeSet;

use conduit::sync::config::{Filter, FilterOp, SyncDirection};
use conduit::sync::conflict::Strategy;
use conduit::sync::schema::Entity;
use scenarios::TestApp;

use crate::sync_support as s;

#[tokio::test]
async fn zoho_contacts_pull_push_and_bidirectional() {
    let app = TestApp::spawn().await;
    s::all_directions(&app, "zoho", Entity::Contacts).await;
}

#[tokio::test]
async fn zoho_companies_pull_push_and_bidirectional() {
    let app = TestApp::spawn().await;
    s::all_directions(&app, "zoho", Entity::Companies).await;
}

#[tokio::test]
async fn zoho_conflicts_every_strategy() {
    let app = TestApp::spawn().await;
    s::all_conflicts(
        &app,
        "zoho",
        &[
            Strategy::ManualReview,
            Strategy::LastWriteWins,
            Strategy::CrmWins,
            Strategy::AppWins,
        ],
    )
    .await;
}

#[tokio::test]
async fn zoho_deletes_propagate_only_when_enabled() {
    let app = TestApp::spawn().await;
    s::both_deletes(&app, "zoho", Entity::Contacts).await;
}

/// A filter (`Mailing_Country IN (…)`) decides which contacts are pulled.
#[tokio::test]
async fn zoho_filters_limit_the_pull() {
    let app = TestApp::spawn().await;
    let entity = Entity::Contacts;
    let t = s::connect(&app, "zoho").await;
    s::seed(&app, &t, entity, 12);
    let rows = s::crm_rows(&app, &t, entity);
    let countries: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.values.get("Mailing_Country").cloned())
        .collect();
    let wanted: Vec<String> = countries.iter().take(2).cloned().collect();
    let matching: BTreeSet<String> = rows
        .iter()
        .filter(|r| {
            r.values
                .get("Mailing_Country")
                .is_some_and(|v| wanted.contains(v))
        })
        .map(|r| r.values["Email"].to_lowercase())
        .collect();
    assert!(!matching.is_empty() && matching.len() < 12, "{countries:?}");
    let mut c = s::new_config(&t, SyncDirection::Pull, &[entity]);
    c.filters = vec![Filter {
        entity,
        field: "Mailing_Country".into(),
        operator: FilterOp::In,
        value: None,
        values: wanted,
    }];
    s::store(&app, &c).await;
    s::run_ok(&app, &t, &c.id).await;
    let pulled = s::app_view(&app, &t, entity).await;
    assert_eq!(pulled.keys().cloned().collect::<BTreeSet<_>>(), matching);
    let crm = s::crm_view(&app, &t, entity);
    for (k, v) in &pulled {
        assert_eq!(v, &crm[k]);
    }
}

#[tokio::test]
async fn zoho_duplicate_task_deliveries_duplicate_nothing() {
    let app = TestApp::spawn().await;
    crate::sync::duplicate_deliveries(&app, "zoho").await;
}
