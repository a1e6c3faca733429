//! Knowledge-base import (`--only kb`, `--articles N`, 10,000 by default): a Zendesk
//! help centre of N articles is seeded in the sandbox (translations into two more
//! locales for 30 % of them, 10 % drafts, bodies of about 3 KB), a tenant connects it
//! and imports it in full through the API (`POST /v1/integrations/{id}/import-kb`),
//! run by the sync worker over the queue. Figures: the import's wall time, documents
//! (translations) per second, the Help Center requests it made against what Zendesk's
//! rate limit (700 a minute on the budget the connection shares) would allow in that
//! time, and the peak heap of the whole process above its level before the import (the
//! worker's pages and cleaning, the dev host, the in-process sandbox's answers). Then an
//! incremental run with nothing changed, to show what a scheduled run costs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::alloc;

/// Zendesk's requests per minute on the plan the catalogue assumes.
const ZENDESK_PER_MINUTE: f64 = 700.0;

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut req = http.request(method, &url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{url} answered {status}: {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Waits for the source's run to end; its last run.
async fn ended(http: &reqwest::Client, url: &str, token: &str) -> Result<Value> {
    loop {
        let s = call(http, reqwest::Method::GET, url.to_owned(), token, None).await?;
        if s["state"] == "idle" {
            return Ok(s["last_run"].clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn bench(env: &devhost::LocalEnv, articles: usize) -> Result<()> {
    let http = reqwest::Client::new();
    let tenant = "bench-kb";
    let admin = env.token(tenant, "bench-admin", "admin")?;
    let sub = "bench-kb";
    let token = "zd-bench-kb-token-0001";
    let account: sandbox::Account = serde_json::from_value(json!({
        "provider": "zendesk", "subdomain": sub, "api_token": token,
        "email": "admin@bench-kb.test"}))?;
    env.sandbox
        .state()
        .add_account(account)
        .map_err(|e| anyhow::anyhow!("sandbox account: {e:?}"))?;
    let seeded = env.sandbox.state().seed_help_center(
        sub,
        sandbox::HelpCenterSeed {
            articles,
            ..Default::default()
        },
    );
    let base = env.url();
    let conn = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/v1/connections"),
        &admin,
        Some(json!({"provider": "zendesk", "label": "Help centre",
            "credentials": {"subdomain": sub, "email": "admin@bench-kb.test", "api_token": token}})),
    )
    .await?;
    let connection = conn["id"].as_str().context("connection id")?;
    let integration = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/v1/integrations"),
        &admin,
        Some(
            json!({"name": "Help centre", "provider": "zendesk", "action": "import_kb",
            "connection_id": connection, "triggers": [{"event": "kb_sync"}]}),
        ),
    )
    .await?;
    let id = integration["id"].as_str().context("integration id")?;
    let start = format!("{base}/v1/integrations/{id}/import-kb");
    let status = format!("{base}/v1/kb/sources/{id}/status");
    let hc_calls = |state: &sandbox::SandboxState| -> u64 {
        [
            "zendesk.hc_incremental_articles",
            "zendesk.hc_sections",
            "zendesk.hc_categories",
        ]
        .iter()
        .map(|r| state.calls(r))
        .sum()
    };

    let calls_before = hc_calls(&env.sandbox.state());
    let heap_base = alloc::reset_peak();
    let started = Instant::now();
    call(
        &http,
        reqwest::Method::POST,
        start.clone(),
        &admin,
        Some(json!({"mode": "full"})),
    )
    .await?;
    let full = ended(&http, &status, &admin).await?;
    let wall = started.elapsed();
    let peak = alloc::peak().saturating_sub(heap_base);
    let requests = hc_calls(&env.sandbox.state()) - calls_before;
    let created = full["counts"]["created"].as_u64().unwrap_or(0);
    if full["status"] != "succeeded" || created as usize != seeded.translations {
        bail!(
            "the import stored {created} of {} documents: {full}",
            seeded.translations
        );
    }

    let again = Instant::now();
    call(
        &http,
        reqwest::Method::POST,
        start,
        &admin,
        Some(json!({"mode": "incremental"})),
    )
    .await?;
    let quiet = ended(&http, &status, &admin).await?;
    let quiet_wall = again.elapsed();
    if quiet["counts"]["seen"].as_u64() != Some(0) {
        bail!("nothing changed, yet the incremental run read: {quiet}");
    }

    let secs = wall.as_secs_f64();
    let allowed = ZENDESK_PER_MINUTE / 60.0 * secs;
    println!(
        "## Knowledge-base import (`--only kb`, a Zendesk help centre of {articles} articles, {} documents with translations)\n",
        seeded.translations
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!("| full import, wall (start to status idle) | **{secs:.2} s** |");
    println!(
        "| documents per second | **{:.0}** |",
        seeded.translations as f64 / secs
    );
    println!(
        "| Help Center requests made / allowed by 700 a minute in that time | {requests} / {allowed:.0} ({:.3} of the limit) |",
        requests as f64 / allowed.max(1.0)
    );
    println!(
        "| peak heap above the level before (whole process) | {:.1} MiB |",
        alloc::mib(peak)
    );
    println!(
        "| incremental run with nothing changed | {:.2} s |\n",
        quiet_wall.as_secs_f64()
    );
    Ok(())
}
