//! Record sync with a sandbox Salesforce org: each direction for contacts (Contact)
//! and companies (Account), conflicts, deletes (the org's recycle bin and
//! `getDeleted`), SOQL filters and duplicate deliveries, each ending with both sides'
//! records compared whole.

use std::collections::BTreeSet;

use conduit::sync::config::{Filter, FilterOp, SyncDirection};
use conduit::sync::conflict::Strategy;
use conduit::sync::schema::Entity;
use scenarios::TestApp;

use crate::sync_support as s;

#[tokio::test]
async fn salesforce_contacts_pull_push_and_bidirectional() {
    let app = TestApp::spawn().await;
    s::all_directions(&app, "salesforce", Entity::Contacts).await;
}

#[tokio::test]
async fn salesforce_companies_pull_push_and_bidirectional() {
    let app = TestApp::spawn().await;
    s::all_directions(&app, "salesforce", Entity::Companies).await;
}

#[tokio::test]
async fn salesforce_conflicts_manual_review_and_last_write_wins() {
    let app = TestApp::spawn().await;
    s::all_conflicts(
        &app,
        "salesforce",
        &[Strategy::ManualReview, Strategy::LastWriteWins],
    )
    .await;
}

#[tokio::test]
async fn salesforce_deletes_propagate_only_when_enabled() {
    let app = TestApp::spawn().await;
    s::both_deletes(&app, "salesforce", Entity::Contacts).await;
}

/// A SOQL filter (`LeadSource IN (…)`) decides which contacts are pulled.
#[tokio::test]
async fn salesforce_filters_limit_the_pull() {
    let app = TestApp::spawn().await;
    let entity = Entity::Contacts;
    let t = s::connect(&app, "salesforce").await;
    s::seed(&app, &t, entity, 12);
    let sources = ["Web", "Other"];
    let matching: BTreeSet<String> = s::crm_rows(&app, &t, entity)
        .iter()
        .filter(|r| {
            r.values
                .get("LeadSource")
                .is_some_and(|v| sources.contains(&v.as_str()))
        })
        .map(|r| r.values["Email"].to_lowercase())
        .collect();
    assert!(!matching.is_empty() && matching.len() < 12);
    let mut c = s::new_config(&t, SyncDirection::Pull, &[entity]);
    c.filters = vec![Filter {
        entity,
        field: "LeadSource".into(),
        operator: FilterOp::In,
        value: None,
        values: sources.iter().map(|v| (*v).to_owned()).collect(),
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
async fn salesforce_duplicate_task_deliveries_duplicate_nothing() {
    let app = TestApp::spawn().await;
    crate::sync::duplicate_deliveries(&app, "salesforce").await;
}
