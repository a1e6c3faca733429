//! Gmail sends (`--only gmail`, `--sends N`): users connect their own Gmail (the
//! personal OAuth flow through the sandbox), then send N messages through `POST
//! /v1/me/gmail/send` — text, HTML and a 20 KB attachment each, 4 at a time — to the
//! sandbox's Gmail stand-in. The stand-in holds each user to Gmail's quota (60 sends a
//! minute), so the sends are spread over users, at most 50 each. Figures: sends per second, latency, the google function's
//! own CPU per send (its handler's polls on their threads' CPU clocks, as the dev host
//! counts them: `/_devhost/functions`), and the bench process's CPU per send.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use futures::StreamExt;
use sandbox::{OAuthProvider, OAuthUser};
use serde_json::{Value, json};

use crate::{location, ms, percentile, process_cpu};

/// The google function's logical id in template.yaml.
const FUNCTION: &str = "GoogleFunction";
/// Sends in flight at once.
const CONCURRENCY: usize = 4;
/// Sends before the measured ones.
const WARMUP: usize = 20;
/// Sends per user, inside Gmail's per-user minute (6,000 units at 100 a send).
const PER_USER: usize = 50;

/// The CPU the dev host has counted for `function`'s handler, and its invocations.
async fn function_cpu(
    http: &reqwest::Client,
    env: &devhost::LocalEnv,
    function: &str,
) -> Result<(Duration, u64)> {
    let report: Value = http
        .get(format!("{}/_devhost/functions", env.url()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let f = report["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["function"] == function)
        .cloned()
        .with_context(|| format!("the dev host reports no {function}"))?;
    let cpu = f["cpu_ms"].as_f64().context("cpu_ms")?;
    let n = f["invocations"].as_u64().context("invocations")?;
    Ok((Duration::from_secs_f64(cpu / 1000.0), n))
}

/// Connects `email`'s Gmail as `user` of `tenant` through the OAuth flow.
async fn connect(env: &devhost::LocalEnv, token: &str, email: &str) -> Result<()> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let resp = http
        .post(format!("{}/v1/oauth/google/start", env.url()))
        .bearer_auth(token)
        .json(&json!({ "return_to": crate::RETURN_TO, "kind": "gmail" }))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("start answered {}", resp.status());
    }
    let body: Value = resp.json().await?;
    let authorize = body["authorize_url"].as_str().context("no authorize_url")?;
    let resp = http
        .get(format!("{authorize}&login_hint={email}"))
        .send()
        .await?;
    let back = location(&http.get(location(&resp)?).send().await?)?;
    if !back.contains("status=connected") {
        bail!("the Gmail connect did not complete: {back}");
    }
    Ok(())
}

pub async fn bench(env: &devhost::LocalEnv, sends: usize) -> Result<()> {
    let http = reqwest::Client::new();
    let tenant = "bench-gmail";
    let users = (WARMUP + sends).div_ceil(PER_USER);
    let mut senders = Vec::with_capacity(users);
    for u in 0..users {
        let token = env.token(tenant, &format!("bench-sender-{u}"), "member")?;
        let email = format!("bench-sender-{u}@bench.test");
        env.sandbox
            .state()
            .add_oauth_user(OAuthUser::new(OAuthProvider::Google, email.clone()))
            .map_err(|e| anyhow::anyhow!("sandbox user: {e}"))?;
        connect(env, &token, &email).await?;
        senders.push((token, email));
    }
    let attachment = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 20_000]);
    let url = format!("{}/v1/me/gmail/send", env.url());
    let send = |i: usize| {
        let http = http.clone();
        let url = url.clone();
        let token = senders[i % users].0.clone();
        let body = json!({
            "to": [format!("Recipient {i} <r{i}@example.com>")],
            "subject": format!("Résumé de l'appel nº {i}"),
            "text": "Thanks for calling; the summary is attached.",
            "html": "<p>Thanks for calling; the summary is attached.</p>",
            "attachments": [{"filename": "summary.txt", "content_type": "text/plain",
                             "content": attachment}],
        });
        async move {
            let t0 = Instant::now();
            let resp = http
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await?;
            let status = resp.status();
            if !status.is_success() {
                bail!(
                    "send {i} answered {status}: {}",
                    resp.text().await.unwrap_or_default()
                );
            }
            Ok::<Duration, anyhow::Error>(t0.elapsed())
        }
    };
    for i in 0..WARMUP {
        send(i).await?;
    }
    let (cpu_before, n_before) = function_cpu(&http, env, FUNCTION).await?;
    let process_before = process_cpu();
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(WARMUP..WARMUP + sends)
        .map(send)
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let wall = started.elapsed();
    let process = process_cpu().saturating_sub(process_before);
    let (cpu_after, n_after) = function_cpu(&http, env, FUNCTION).await?;
    let handler = cpu_after.saturating_sub(cpu_before);
    let received: usize = senders
        .iter()
        .map(|(_, email)| env.sandbox.state().gmail_sent(email).len())
        .sum();
    if received != WARMUP + sends || n_after - n_before != sends as u64 {
        bail!(
            "{received} messages reached the stand-in and {} invocations counted for {} sends",
            n_after - n_before,
            WARMUP + sends
        );
    }
    latencies.sort();
    let per = |d: Duration| ms(d) / sends as f64;
    println!(
        "## Gmail sends (`--only gmail`, {sends} sends after {WARMUP}, {CONCURRENCY} at a time, over {users} users)\n"
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| sends per second | **{:.0}** ({sends} in {:.2} s) |",
        sends as f64 / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "| latency p50 / p95 / max | {:.1} / {:.1} / {:.1} ms |",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.95)),
        ms(percentile(&latencies, 1.0))
    );
    println!(
        "| **Conduit's own CPU per send** (the google function's handler polls) | **{:.3} ms** |",
        per(handler)
    );
    println!(
        "| CPU of this process per send (dev host, handler, in-process sandbox, client) | {:.3} ms |",
        per(process)
    );
    println!("| messages the stand-in received | {received} |\n");
    Ok(())
}
