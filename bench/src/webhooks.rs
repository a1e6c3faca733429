//! Webhook-to-record latency: a tenant's own HubSpot app (set up through the sandbox's
//! Webhooks API v3) delivers signed event batches to the dev host's
//! `POST /v1/webhooks/hubspot/{tenant}`; a realtime contacts config pulls the changed
//! records. Timed from the change in the HubSpot stand-in to the app record holding
//! the new value (polled every 5 ms with a consistent read):
//!
//! - **One change at a time**: `n` edits of one contact's first name, each waited for
//!   before the next — the latency of a quiet config (p50 / p90 / p99 / max).
//! - **A burst**: 500 contacts created at once in HubSpot — until all 500 are app
//!   records (the batches coalesce into a few targeted pulls).
//!
//! The sandbox gathers changes into batches every 100 ms (HubSpot batches over a
//! similar window), so about 50 ms of each figure is the stand-in's own wait.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use conduit::app::App;
use conduit::config::Config;
use conduit::domain::{RecordId, TenantId};
use conduit::sync::config::{Configs, Frequency, SyncDirection};
use conduit::sync::records::{ListQuery, Records};
use conduit::sync::schema::Entity;
use sandbox::{CrmObject, OAuthProvider, OAuthUser};
use serde_json::json;

use crate::sync::{FIELDS, contacts_config, oauth_connect, trigger_and_wait};

/// Contacts created at once in the burst.
const BURST: usize = 500;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the webhook benchmark with `n` single changes.
pub async fn bench(env: &devhost::LocalEnv, n: usize) -> Result<()> {
    println!("## Webhook to record (HubSpot signature v3 → targeted pull)\n");
    let config = Config::from_map(&env.stack.function_env("SyncWorkerFunction")?)?;
    let app = App::with_aws(config, env.aws.clone())?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let state = env.sandbox.state();
    let suffix = conduit::domain::SyncConfigId::generate().as_str()[5..].to_ascii_lowercase();
    let tenant_name = format!("bench-hook-{}", &suffix[suffix.len() - 10..]);
    let tenant = TenantId::parse(&tenant_name)?;

    // The tenant's own app, registered in the sandbox and in Conduit.
    let client_id = format!("hooks-{tenant_name}");
    let secret = format!("hooks-secret-{tenant_name}");
    let view = state
        .add_oauth_client(sandbox::oauth::OAuthClient {
            provider: OAuthProvider::Hubspot,
            client_id: client_id.clone(),
            client_secret: secret.as_str().into(),
        })
        .map_err(|e| anyhow::anyhow!("sandbox client: {e}"))?;
    let admin = env.token(&tenant_name, "bench-admin", "admin")?;
    let resp = http
        .put(format!(
            "{}/v1/providers/hubspot/app-credentials",
            env.url()
        ))
        .bearer_auth(&admin)
        .json(&json!({"client_id": client_id, "client_secret": secret}))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("app credentials answered {}", resp.status());
    }
    let portal = 990_000 + u64::from(std::process::id() % 1000);
    let user = OAuthUser {
        hub_id: portal,
        ..OAuthUser::new(OAuthProvider::Hubspot, format!("{tenant_name}@bench.test"))
    };
    let (admin, connection, _) = oauth_connect(env, &http, &tenant_name, user, json!({})).await?;

    // Its webhooks, through HubSpot's API.
    let key = state
        .hubspot_developer_key(view.app_id)
        .context("no developer key")?;
    let base = format!(
        "{}/api.hubapi.com/webhooks/v3/{}",
        env.sandbox.url(),
        view.app_id
    );
    let target = format!("{}/v1/webhooks/hubspot/{tenant_name}", env.url());
    let resp = http
        .put(format!("{base}/settings"))
        .bearer_auth(&key)
        .json(&json!({"targetUrl": target, "throttling": {"maxConcurrentRequests": 10}}))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("webhook settings answered {}", resp.status());
    }
    let mut subs = vec![json!({"eventType": "contact.creation", "active": true})];
    for (p, _) in FIELDS {
        subs.push(
            json!({"eventType": "contact.propertyChange", "propertyName": p, "active": true}),
        );
    }
    for sub in subs {
        let resp = http
            .post(format!("{base}/subscriptions"))
            .bearer_auth(&key)
            .json(&sub)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("subscription answered {}", resp.status());
        }
    }

    // A realtime config holding one contact.
    let id = state.seed_hubspot(portal, CrmObject::Contacts, 1)[0].clone();
    let mut c = contacts_config(
        &tenant,
        &connection,
        "hubspot",
        SyncDirection::Bidirectional,
        &FIELDS,
    )?;
    c.frequency = Frequency::Realtime;
    Configs::new(app.table.clone()).insert(&c).await?;
    trigger_and_wait(
        env,
        &http,
        &app,
        &admin,
        &tenant,
        &c.id,
        Duration::from_secs(60),
    )
    .await?;
    let records = Records::new(app.table.clone());
    let page = records
        .list(
            &tenant,
            Entity::Contacts,
            &ListQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await?;
    let record_id: RecordId = page
        .items
        .first()
        .map(|r| r.id.clone())
        .context("the contact was not pulled")?;

    // One change at a time.
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let value = format!("Hooked{i}");
        let started = Instant::now();
        state
            .update_hubspot_record(
                portal,
                CrmObject::Contacts,
                &id,
                &[("firstname".to_owned(), value.clone())].into(),
            )
            .context("the contact is gone")?;
        loop {
            let r = records.get(&tenant, Entity::Contacts, &record_id).await?;
            if r.and_then(|r| r.fields.get("first_name").cloned()) == Some(value.clone()) {
                took.push(started.elapsed());
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let (ticks, waiting, sent) = state.hubspot_delivery_status();
                let last: Vec<(Option<u16>, String, u32)> = state
                    .hubspot_webhook_deliveries()
                    .iter()
                    .rev()
                    .take(3)
                    .map(|d| (d.status, d.url.clone(), d.attempt))
                    .collect();
                bail!(
                    "change {i} did not arrive within 60 s (delivery rounds {ticks}, requests waiting {waiting}, sent {sent}; last {last:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    took.sort();
    println!("| changes | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| {n} one at a time | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |\n",
        ms(percentile(&took, 0.5)),
        ms(percentile(&took, 0.9)),
        ms(percentile(&took, 0.99)),
        ms(percentile(&took, 1.0)),
    );

    // A burst of creations.
    let started = Instant::now();
    state.seed_hubspot(portal, CrmObject::Contacts, BURST);
    loop {
        let mut count = 0usize;
        let mut cursor: Option<String> = None;
        loop {
            let page = records
                .list(
                    &tenant,
                    Entity::Contacts,
                    &ListQuery {
                        limit: 200,
                        cursor: cursor.as_deref(),
                        ..Default::default()
                    },
                )
                .await?;
            count += page.items.len();
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        if count > BURST {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the burst did not arrive within 300 s ({count} records)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let burst = started.elapsed();
    let deliveries = state
        .hubspot_webhook_deliveries()
        .iter()
        .filter(|d| d.app_id == view.app_id)
        .count();
    println!(
        "Burst: {BURST} contacts created at once in HubSpot → all in Conduit in {:.2} s ({:.0} records/s); {deliveries} webhook requests in all.\n",
        burst.as_secs_f64(),
        BURST as f64 / burst.as_secs_f64()
    );
    Ok(())
}
