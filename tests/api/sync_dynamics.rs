//! Record sync with a sandbox Dynamics 365 environment (Dataverse Web API): each
//! direction for contacts (`contact`) and companies (`account`), conflicts, deletes
//! (reported by change tracking's delta links), filters (applied to each pulled page:
//! change tracking takes no `$filter`), an expired delta token, the marker column and
//! duplicate deliveries, each ending with both sides' records compared whole.

use std::collections::BTreeSet;
use std::time::Duration;

use conduit::sync::config::{Filter, FilterOp, SyncDirection};
use conduit::sync::conflict::Strategy;
use conduit::sync::schema::Entity;
use sandbox::providers::dynamics365_crm::DynTable;
use scenarios::TestApp;
use serde_json::json;

use crate::sync_support::{self as s, Crm, Tenant};

const PROVIDER: &str = "dynamics365";

fn host(t: &Tenant) -> &str {
    match &t.crm {
        Crm::Dynamics(host) => host,
        other => panic!("not a Dynamics tenant: {other:?}"),
    }
}

#[tokio::test]
async fn dynamics_contacts_pull_push_and_bidirectional() {
    let app = TestApp::spawn().await;
    s::all_directions(&app, PROVIDER, Entity::Contacts).await;
}

#[tokio::test]
async fn dynamics_companies_pull_push_and_bidirectional() {
    let app = TestApp::spawn().await;
    s::all_directions(&app, PROVIDER, Entity::Companies).await;
}

/// Last write wins is left to its own scenario below: Dataverse keeps `modifiedon` in
/// whole seconds, closer than the shared scenario's pauses.
#[tokio::test]
async fn dynamics_conflicts_every_strategy() {
    let app = TestApp::spawn().await;
    s::all_conflicts(
        &app,
        PROVIDER,
        &[Strategy::ManualReview, Strategy::CrmWins, Strategy::AppWins],
    )
    .await;
}

/// Last write wins with changes more than a second apart (`modifiedon` has whole
/// seconds: a CRM change in the same second as a later app change counts as older).
#[tokio::test]
async fn dynamics_last_write_wins_by_the_second() {
    let app = TestApp::spawn().await;
    let entity = Entity::Contacts;
    let t = s::connect(&app, PROVIDER).await;
    let seeded = s::seed(&app, &t, entity, 3);
    let mut c = s::new_config(&t, SyncDirection::Bidirectional, &[entity]);
    c.conflict_strategy = Strategy::LastWriteWins;
    s::store(&app, &c).await;
    s::run_ok(&app, &t, &c.id).await;
    let synced = s::crm_view(&app, &t, entity);
    s::assert_same(&s::app_view(&app, &t, entity).await, &synced, "first run");

    let first = s::crm_field(PROVIDER, entity, "first_name");
    let (a, b) = (
        s::crm_key(&app, &t, entity, &seeded[0]),
        s::crm_key(&app, &t, entity, &seeded[1]),
    );
    let (a_id, b_id) = (
        s::app_id(&app, &t, entity, &a).await,
        s::app_id(&app, &t, entity, &b).await,
    );
    s::crm_update(&app, &t, entity, &seeded[1], &[(first, "Crmfirst1")]);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    s::app_update(&app, &t, entity, &a_id, json!({"first_name": "Appfirst0"})).await;
    s::app_update(&app, &t, entity, &b_id, json!({"first_name": "Appfirst1"})).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    s::crm_update(&app, &t, entity, &seeded[0], &[(first, "Crmfirst0")]);

    let logs = s::run_ok(&app, &t, &c.id).await;
    assert_eq!(logs[0].counts["conflicts_resolved"], 2, "{:?}", logs[0]);
    let mut want = synced.clone();
    want.get_mut(&a)
        .unwrap()
        .insert("first_name".into(), "Crmfirst0".into());
    want.get_mut(&b)
        .unwrap()
        .insert("first_name".into(), "Appfirst1".into());
    s::assert_same(&s::app_view(&app, &t, entity).await, &want, "app");
    s::assert_same(&s::crm_view(&app, &t, entity), &want, "CRM");
}

#[tokio::test]
async fn dynamics_deletes_propagate_only_when_enabled() {
    let app = TestApp::spawn().await;
    s::both_deletes(&app, PROVIDER, Entity::Contacts).await;
}

/// A filter (`address1_country IN (…)`) decides which contacts are pulled.
#[tokio::test]
async fn dynamics_filters_limit_the_pull() {
    let app = TestApp::spawn().await;
    let entity = Entity::Contacts;
    let t = s::connect(&app, PROVIDER).await;
    s::seed(&app, &t, entity, 12);
    let rows = s::crm_rows(&app, &t, entity);
    let countries: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.values.get("address1_country").cloned())
        .collect();
    let wanted: Vec<String> = countries.iter().take(2).cloned().collect();
    let matching: BTreeSet<String> = rows
        .iter()
        .filter(|r| {
            r.values
                .get("address1_country")
                .is_some_and(|v| wanted.contains(v))
        })
        .map(|r| r.values["emailaddress1"].to_lowercase())
        .collect();
    assert!(!matching.is_empty() && matching.len() < 12, "{countries:?}");
    let mut c = s::new_config(&t, SyncDirection::Pull, &[entity]);
    c.filters = vec![Filter {
        entity,
        field: "address1_country".into(),
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

/// Pulls after the first read only what the delta link reports (a change and a
/// deletion); an expired delta token starts a new full tracked pass that brings the
/// changes made meanwhile and, by its closing sweep, the deletions; a push creates the
/// `new_conduitid` column and fills it.
#[tokio::test]
async fn dynamics_change_tracking_deltas_expired_tokens_and_the_marker_column() {
    let app = TestApp::spawn().await;
    let entity = Entity::Contacts;
    let t = s::connect(&app, PROVIDER).await;
    let env = host(&t).to_owned();
    let seeded = s::seed(&app, &t, entity, 30);
    s::app_create_many(&app, &t, entity, 2).await;
    let mut c = s::new_config(&t, SyncDirection::Bidirectional, &[entity]);
    c.options.propagate_deletes = true;
    s::store(&app, &c).await;
    let logs = s::run_ok(&app, &t, &c.id).await;
    assert_eq!(logs[0].counts["created"], 32, "{:?}", logs[0].counts);
    let marker = app
        .sandbox()
        .dyn_crm_attributes(&env, DynTable::Contact)
        .into_iter()
        .find(|a| a.logical_name == "new_conduitid")
        .expect("the marker column");
    assert_eq!(marker.schema_name, "new_ConduitId");
    assert!(marker.is_custom);
    let marked = app
        .sandbox()
        .dyn_crm_records(&env, DynTable::Contact)
        .into_iter()
        .filter(|r| r.text("new_conduitid").is_some())
        .count();
    assert_eq!(marked, 2, "the app-made contacts carry their app id");

    // A change and a deletion in the CRM: the delta reports both.
    let field = s::crm_field(PROVIDER, entity, "first_name");
    s::crm_update(&app, &t, entity, &seeded[0], &[(field, "Deltachanged")]);
    let gone = s::crm_key(&app, &t, entity, &seeded[1]);
    s::crm_delete(&app, &t, entity, &seeded[1]);
    let logs = s::run_ok(&app, &t, &c.id).await;
    assert_eq!(logs[0].counts["deleted"], 1, "{:?}", logs[0].counts);
    let mut want = s::crm_view(&app, &t, entity);
    assert!(!want.contains_key(&gone));
    s::assert_same(&s::app_view(&app, &t, entity).await, &want, "after a delta");

    // The delta token expires; a change and a deletion made meanwhile still arrive
    // (the deletion through the sweep that ends the new full pass).
    app.sandbox()
        .dyn_crm_expire_delta_tokens(&env, DynTable::Contact);
    s::crm_update(&app, &t, entity, &seeded[2], &[(field, "Afterexpiry")]);
    let changed = s::crm_key(&app, &t, entity, &seeded[2]);
    want.get_mut(&changed)
        .unwrap()
        .insert("first_name".into(), "Afterexpiry".into());
    let gone_in_gap = s::crm_key(&app, &t, entity, &seeded[3]);
    s::crm_delete(&app, &t, entity, &seeded[3]);
    want.remove(&gone_in_gap);
    let logs = s::run_ok(&app, &t, &c.id).await;
    assert_eq!(logs[0].counts["deleted"], 1, "{:?}", logs[0].counts);
    s::assert_same(
        &s::app_view(&app, &t, entity).await,
        &want,
        "app after expiry",
    );
    s::assert_same(&s::crm_view(&app, &t, entity), &want, "CRM after expiry");

    // Nothing left to do.
    let again = s::run_ok(&app, &t, &c.id).await;
    assert_eq!(again[0].counts["created"], 0, "{:?}", again[0].counts);
    assert_eq!(again[0].counts["deleted"], 0, "{:?}", again[0].counts);
}

#[tokio::test]
async fn dynamics_duplicate_task_deliveries_duplicate_nothing() {
    let app = TestApp::spawn().await;
    crate::sync::duplicate_deliveries(&app, PROVIDER).await;
}
