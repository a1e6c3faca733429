//! Operations: the metrics functions write in Embedded Metric Format (read back from
//! the captured log stream, with the numbers of the run and refresh they describe),
//! and the identity provider's claim names as a deployment setting.

use std::collections::BTreeMap;

use conduit::sync::config::SyncDirection;
use conduit::sync::schema::Entity;
use scenarios::TestApp;
use serde_json::{Value, json};

use crate::sync_support as s;

/// The EMF lines of the captured logs whose `key` property is `value`.
fn emf_lines(app: &TestApp, key: &str, value: &str) -> Vec<Value> {
    app.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some() && v[key] == value)
        .collect()
}

fn sum(lines: &[Value], metric: &str) -> u64 {
    lines.iter().filter_map(|l| l[metric].as_u64()).sum()
}

#[tokio::test]
async fn a_sync_run_and_a_token_refresh_write_their_metrics_in_embedded_metric_format() {
    let app = TestApp::spawn().await;
    let t = s::connect(&app, "hubspot").await;
    s::seed(&app, &t, Entity::Contacts, 40);
    let config = s::new_config(&t, SyncDirection::Pull, &[Entity::Contacts]);
    s::store(&app, &config).await;
    let logs = s::run_ok(&app, &t, &config.id).await;
    let log = &logs[0];

    let lines = emf_lines(&app, "log_id", log.id.as_str());
    assert!(!lines.is_empty(), "no EMF line for run {}", log.id);
    let count = |name: &str| log.counts.get(name).copied().unwrap_or(0);
    let synced = count("created") + count("updated") + count("deleted");
    assert!(synced >= 40, "{:?}", log.counts);
    assert_eq!(sum(&lines, "RecordsSynced"), synced, "{lines:#?}");
    assert_eq!(sum(&lines, "SyncFailures"), count("failed"));
    for line in &lines {
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Conduit");
        assert_eq!(
            directive["Dimensions"],
            json!([["Entity", "Direction"], []])
        );
        assert_eq!(line["Entity"], "contacts");
        assert_eq!(line["Direction"], "pull");
        assert!(line["_aws"]["Timestamp"].is_i64());
        // Cardinality and privacy: the tenant is in no line.
        assert!(!line.to_string().contains(t.id.as_str()), "{line}");
    }

    // A refresh by the sweep: one RefreshOk for the connection, no secret in it.
    let before = app.tokens(t.id.as_str(), &t.conn).await;
    app.make_due(t.id.as_str(), &t.conn).await;
    app.sweep_settled(t.id.as_str(), &t.conn).await;
    let lines = emf_lines(&app, "connection_id", t.conn.as_str());
    let refreshed: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("RefreshOk").is_some())
        .collect();
    assert_eq!(refreshed.len(), 1, "{lines:#?}");
    assert_eq!(refreshed[0]["RefreshOk"], 1);
    assert_eq!(refreshed[0]["Provider"], "hubspot");
    assert_eq!(
        refreshed[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Provider"], []])
    );
    assert!(sum(&lines, "RefreshFailed") == 0, "{lines:#?}");
    let after = app.tokens(t.id.as_str(), &t.conn).await;
    let secrets: BTreeMap<&String, &String> = before.iter().chain(after.iter()).collect();
    for line in &lines {
        for secret in secrets.values() {
            assert!(
                !line.to_string().contains(secret.as_str()),
                "a secret in {line}"
            );
        }
    }
}

#[tokio::test]
async fn cognito_style_claims_identify_the_caller_when_the_deployment_names_them() {
    let app = TestApp::isolated(devhost::LocalEnvOptions {
        parameters: BTreeMap::from([
            ("TenantClaim".to_owned(), "custom:tenant_id".to_owned()),
            ("RoleClaim".to_owned(), "custom:role".to_owned()),
        ]),
        ..Default::default()
    })
    .await;
    let tenant = app.tenant();
    let admin = app.token_with_claims(
        "cognito-user-1",
        json!({"custom:tenant_id": tenant, "custom:role": "admin", "token_use": "id"}),
    );
    let (status, body) = app.post("/v1/connections", &admin, s_zendesk()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app.get("/v1/connections", &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["connections"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );

    let member = app.token_with_claims(
        "cognito-user-2",
        json!({"custom:tenant_id": tenant, "custom:role": "member"}),
    );
    let (status, _) = app.get("/v1/connections", &member).await;
    assert_eq!(status, 200);
    let (status, body) = app.post("/v1/connections", &member, s_zendesk()).await;
    assert_eq!(status, 403, "{body}");

    // The default names mean nothing to this deployment: no identity, 401.
    let plain = app.token(&tenant, scenarios::Role::Admin);
    let (status, body) = app.get("/v1/connections", &plain).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = app
        .get(
            "/v1/connections",
            &app.token_with_claims("u", json!({"custom:tenant_id": tenant})),
        )
        .await;
    assert_eq!(status, 401, "a token without the role claim");
}

fn s_zendesk() -> Value {
    scenarios::zendesk("zd-sandbox-token-0001")
}
