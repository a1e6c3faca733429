//! Event dispatch through the real path: `conversation_ended` events put on Conduit's
//! bus with the SDK in batches of 10 (as product services do) → the bus's rule → the
//! dispatch queue → the event-dispatch function (the dev host's pollers) → the
//! provider sandbox. Every event runs a 3-step chain of its tenant:
//!
//! 1. HubSpot `log_call` (priority 10), a private-app connection of its own portal;
//! 2. Zendesk `create_ticket` (priority 20), an API-token connection of its own
//!    subdomain;
//! 3. Webhook `deliver` (priority 30) to a Standard Webhooks receiver of the sandbox
//!    that verifies every signature.
//!
//! The slowest published limit in the chain is HubSpot's 110 requests per 10 s per
//! account (Zendesk allows 700 per minute per account, the receiver none), and each
//! event makes exactly one HubSpot request, so the ceiling is 11 events/s per tenant
//! and `tenants` × 11 events/s in all. The events are spread round-robin over the
//! tenants, each with its own connections, so each account's limit is its own.
//!
//! Figures: the CPU time of this process (dev host with the real handlers, the
//! in-process sandbox, this client; moto is a process of its own and measured apart)
//! per step, with the sandbox's share measured by replaying the same provider requests
//! straight at it; event put → the dispatch's `finished_at` (p50, p99); the drain rate
//! (first put to the last `finished_at`) against the ceiling; the effects in the sandbox
//! (records and valid deliveries, with their distinct idempotency keys) and the
//! dispatches' statuses.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use conduit::app::App;
use conduit::config::Config;
use conduit::dispatch::log::StepStatus;
use conduit::dispatch::webhook;
use conduit::domain::{DispatchId, TenantId};
use conduit::store::dispatches::Dispatches;
use devhost::CapacityReport;
use futures::StreamExt;
use sandbox::Provider;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::{ms, percentile, process_cpu};

/// HubSpot's published limit: requests per window, window seconds.
const HUBSPOT_LIMIT: (f64, f64) = (110.0, 10.0);
/// Tenants by default (each with its own HubSpot portal and Zendesk account): one, so
/// the run waits on one account's published limit, as a tenant's burst does (with ten
/// the ceiling is 110 events/s and the run waits on the local moto instead).
pub const TENANTS: usize = 1;
/// Steps in every chain.
const STEPS: usize = 3;
/// A placeholder secret the receiver starts with until the integration's is known.
const PLACEHOLDER: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One tenant's chain as set up: what the bench needs to check and replay.
struct Chain {
    tenant: TenantId,
    hubspot_token: String,
    zendesk_host: String,
    zendesk_auth: String,
    receiver: String,
}

/// The sandbox host of a URL's origin (`https://HOST/…` is served at `/HOST/…`).
fn sandboxed(env: &devhost::LocalEnv, url: &str) -> String {
    format!(
        "{}/{}",
        env.sandbox.url(),
        url.trim_start_matches("https://")
    )
}

async fn post(http: &reqwest::Client, url: String, token: &str, body: Value) -> Result<Value> {
    let resp = http
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("POST {url} answered {status}: {answer}");
    }
    Ok(answer)
}

/// A tenant with its HubSpot portal, Zendesk account and webhook receiver, connected,
/// and its three integrations on `conversation_ended`.
async fn chain(env: &devhost::LocalEnv, http: &reqwest::Client, i: usize) -> Result<Chain> {
    let state = env.sandbox.state();
    let tenant = format!("bench-dispatch-{i:03}");
    let admin = env.token(&tenant, "bench-admin", "admin")?;
    let hubspot_token = format!("pat-na1-bench-{i:03}");
    let subdomain = format!("benchdesk{i:03}");
    let zendesk_token = format!("zd-bench-token-{i:03}");
    let email = format!("agent@{subdomain}.test");
    for account in [
        json!({"provider": "hubspot", "access_token": hubspot_token, "email": format!("{tenant}@bench.test")}),
        json!({"provider": "zendesk", "subdomain": subdomain, "api_token": zendesk_token, "email": email}),
    ] {
        let account: sandbox::Account = serde_json::from_value(account)?;
        state
            .add_account(account)
            .map_err(|e| anyhow::anyhow!("sandbox account: {e:?}"))?;
    }
    let connections = format!("{}/v1/connections", env.url());
    let hubspot = post(
        http,
        connections.clone(),
        &admin,
        json!({"provider": "hubspot", "auth_method": "private_app", "label": "HubSpot (bench)",
            "credentials": {"access_token": hubspot_token}}),
    )
    .await?;
    let zendesk = post(
        http,
        connections,
        &admin,
        json!({"provider": "zendesk", "label": "Zendesk (bench)",
            "credentials": {"subdomain": subdomain, "email": email, "api_token": zendesk_token}}),
    )
    .await?;
    let receiver = state
        .add_webhook_receiver(&[PLACEHOLDER.to_owned()], None)
        .map_err(|e| anyhow::anyhow!("receiver: {e}"))?;
    let integrations = format!("{}/v1/integrations", env.url());
    let ended = json!([{"event": "conversation_ended"}]);
    for (name, body) in [
        (
            "hubspot",
            json!({"name": "Log the call", "provider": "hubspot", "action": "log_call",
                "connection_id": hubspot["id"], "priority": 10, "triggers": ended}),
        ),
        (
            "zendesk",
            json!({"name": "Open a ticket", "provider": "zendesk", "action": "create_ticket",
                "connection_id": zendesk["id"], "priority": 20, "triggers": ended}),
        ),
        (
            "webhook",
            json!({"name": "Tell the CRM team", "provider": "webhook", "action": "deliver",
                "webhook": {"url": receiver.url}, "priority": 30, "triggers": ended}),
        ),
    ] {
        let created = post(http, integrations.clone(), &admin, body)
            .await
            .with_context(|| format!("the {name} integration"))?;
        if let Some(secret) = created["secret"].as_str() {
            state
                .set_webhook_secrets(&receiver.id, &[secret.to_owned()])
                .context("the receiver vanished")?
                .map_err(|e| anyhow::anyhow!("receiver secret: {e}"))?;
        }
    }
    Ok(Chain {
        tenant: TenantId::parse(&tenant)?,
        hubspot_token,
        zendesk_host: format!("{subdomain}.zendesk.com"),
        zendesk_auth: format!("{email}/token:{zendesk_token}"),
        receiver: receiver.id,
    })
}

/// One bench event: a voice conversation that ended, with a contact.
fn event(tenant: &TenantId, n: usize, at: OffsetDateTime) -> Result<Value> {
    let occurred = at.format(&time::format_description::well_known::Rfc3339)?;
    Ok(json!({
        "schema_version": 1, "type": "conversation_ended", "event_id": format!("evt_bench_{n:06}"),
        "tenant_id": tenant.as_str(), "occurred_at": occurred,
        "conversation": {"id": format!("conv_{n:06}"), "channel": "voice", "direction": "inbound",
            "started_at": "2026-12-05T03:07:32Z", "ended_at": "2026-12-05T03:12:44Z",
            "duration_seconds": 312, "from_number": "+61290001234", "to_number": "+61290005678",
            "summary": "Wants the appointment moved to Friday; asked for a call back after 3 pm."},
        "contact": {"name": "Dana Lee", "email": format!("dana{n}@example.com"), "phone": "+61290001234"},
    }))
}

/// User + system CPU of this process's children (moto), from /proc.
fn children_cpu() -> Duration {
    let me = std::process::id().to_string();
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut total = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, ppid, …, utime (14), stime (15).
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1) == Some(&me.as_str()) {
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            total += n(11) + n(12);
        }
    }
    Duration::from_micros(total * 1_000_000 / ticks)
}

/// The idempotency key a recorded effect carries: Zendesk's `external_id`, else the
/// `Ref: <key>` line of a text (HubSpot's call body).
fn key_of(record: &Value) -> Option<String> {
    fn walk(v: &Value, out: &mut Option<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(k)) = m.get("external_id") {
                    *out = Some(k.clone());
                    return;
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Value::String(s) => {
                if out.is_none()
                    && let Some((_, tail)) = s.rsplit_once("Ref: ")
                {
                    let key: String = tail
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || "-_:.".contains(*c))
                        .collect();
                    *out = Some(key);
                }
            }
            _ => {}
        }
    }
    let mut out = None;
    walk(record, &mut out);
    out
}

/// The effects in the sandbox: (effects, distinct keys) per kind.
struct Effects {
    hubspot: (usize, usize),
    zendesk: (usize, usize),
    webhook: (usize, usize),
    invalid_deliveries: usize,
}

fn effects(env: &devhost::LocalEnv, chains: &[Chain]) -> Effects {
    let state = env.sandbox.state();
    // The effects themselves: HubSpot's call engagements (`{portal}:calls`), Zendesk's
    // tickets (each ticket's first comment is a record of its own, not another effect).
    let count = |p: Provider, collection: &str| {
        let records: Vec<_> = state
            .dispatch_records(Some(p), None)
            .into_iter()
            .filter(|r| r.collection.ends_with(collection))
            .collect();
        let keys: BTreeSet<String> = records.iter().filter_map(|r| key_of(&r.record)).collect();
        (records.len(), keys.len())
    };
    let (mut valid, mut ids, mut invalid) = (0, BTreeSet::new(), 0);
    for c in chains {
        if let Some(r) = state.webhook_receiver(&c.receiver) {
            for d in &r.deliveries {
                if d.valid {
                    valid += 1;
                    ids.extend(d.webhook_id.clone());
                } else {
                    invalid += 1;
                }
            }
        }
    }
    Effects {
        hubspot: count(Provider::Hubspot, "calls"),
        zendesk: count(Provider::Zendesk, "tickets"),
        webhook: (valid, ids.len()),
        invalid_deliveries: invalid,
    }
}

fn step_name(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "pending",
        StepStatus::Waiting => "waiting",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
    }
}

/// Runs the bench: `events` events over `tenants` tenants.
/// The dispatch function's logical id in template.yaml.
const DISPATCHER: &str = "EventDispatchFunction";

/// The dev host's report of `function`'s event source (`/_devhost/queues`).
async fn event_source(
    http: &reqwest::Client,
    env: &devhost::LocalEnv,
    function: &str,
) -> Result<Value> {
    let report: Value = http
        .get(format!("{}/_devhost/queues", env.url()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(report["event_sources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["function"] == function)
        .cloned()
        .unwrap_or_default())
}

/// The CPU time the dev host has counted for `function`'s invocations so far (its
/// handler's polls; see `devhost::invoker::EventFunction::cpu`).
async fn function_cpu(
    http: &reqwest::Client,
    env: &devhost::LocalEnv,
    function: &str,
) -> Result<Duration> {
    let ms = event_source(http, env, function).await?["function_cpu_ms"]
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("the dev host reports no CPU for {function}"))?;
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

pub async fn bench(env: &devhost::LocalEnv, events: usize, tenants: usize) -> Result<()> {
    let http = reqwest::Client::new();
    let setup = Instant::now();
    let chains: Vec<Chain> = futures::stream::iter(0..tenants)
        .map(|i| chain(env, &http, i))
        .buffered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let setup = setup.elapsed();
    let config = Config::from_map(&env.stack.function_env(DISPATCHER)?)?;
    let app = App::with_aws(config, env.aws.clone())?;
    let bus = env.stack.ref_value("EventBus")?;
    let bridge = aws_sdk_eventbridge::Client::new(&env.aws);
    let state = env.sandbox.state();
    let requests_before = state.dispatch_requests(None).len();

    // The events, round-robin over the tenants; each batch of 10 put at once.
    let at = OffsetDateTime::now_utc().replace_nanosecond(0)?;
    let bodies: Vec<(TenantId, String, Value)> = (0..events)
        .map(|n| {
            let tenant = chains[n % chains.len()].tenant.clone();
            let e = event(&tenant, n, at)?;
            Ok((tenant, format!("evt_bench_{n:06}"), e))
        })
        .collect::<Result<_>>()?;
    // What the process spends doing nothing (the dev host's pollers long-polling every
    // queue of the stack, the schedules): its rate, taken off the run's CPU below.
    let idle_from = (process_cpu(), Instant::now());
    let moto_idle_from = children_cpu();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rate = process_cpu().saturating_sub(idle_from.0).as_secs_f64()
        / idle_from.1.elapsed().as_secs_f64();
    let moto_idle_rate = children_cpu().saturating_sub(moto_idle_from).as_secs_f64()
        / idle_from.1.elapsed().as_secs_f64();
    let endpoint = env.aws_endpoint.clone();
    tokio::task::spawn_blocking(move || CapacityReport::reset(&endpoint)).await??;
    let cpu_before = process_cpu();
    let handler_before = function_cpu(&http, env, DISPATCHER).await?;
    let moto_before = children_cpu();
    let t0 = Instant::now();
    let started = OffsetDateTime::now_utc();
    let late_before = conduit::sync::budget::lateness();
    let puts: Vec<Result<Vec<OffsetDateTime>>> = futures::stream::iter(bodies.chunks(10))
        .map(|batch| {
            let entries: Vec<PutEventsRequestEntry> = batch
                .iter()
                .map(|(_, _, e)| {
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&bus)
                        .source("conduit.product")
                        .detail_type("conversation_ended")
                        .detail(e.to_string())
                        .build()
                })
                .collect();
            let bridge = bridge.clone();
            async move {
                let put_at = OffsetDateTime::now_utc();
                let out = bridge
                    .put_events()
                    .set_entries(Some(entries))
                    .send()
                    .await?;
                if out.failed_entry_count() > 0 {
                    bail!("{} entries were refused", out.failed_entry_count());
                }
                Ok(vec![put_at; batch.len()])
            }
        })
        .buffered(4)
        .collect()
        .await;
    let mut put_at = Vec::with_capacity(events);
    for p in puts {
        put_at.extend(p?);
    }
    let put_in = t0.elapsed();

    // Done when the dispatch queue is empty and nothing is in flight (the pollers
    // delete a message once its chain ended or waits).
    let deadline = Instant::now() + Duration::from_secs(60 + events as u64);
    let mut quiet = 0;
    loop {
        let depth = env.queue_depth("DispatchQueue").await?;
        if depth.visible + depth.in_flight + depth.delayed == 0 {
            quiet += 1;
            if quiet >= 2 {
                break;
            }
        } else {
            quiet = 0;
        }
        if Instant::now() > deadline {
            bail!(
                "the dispatch queue did not drain: {depth:?}; the dispatch event source: {}",
                event_source(&http, env, DISPATCHER).await?
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wall = t0.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_before);
    let handler_cpu = function_cpu(&http, env, DISPATCHER)
        .await?
        .saturating_sub(handler_before);
    let moto = children_cpu().saturating_sub(moto_before);
    let endpoint = env.aws_endpoint.clone();
    let aws_calls = tokio::task::spawn_blocking(move || CapacityReport::fetch(&endpoint))
        .await??
        .requests;

    // The dispatches as stored.
    let store = Dispatches::new(app.table.clone());
    let got: Vec<Result<Option<conduit::dispatch::log::Dispatch>>> =
        futures::stream::iter(bodies.iter().map(|(tenant, id, _)| {
            let store = &store;
            let did = DispatchId::for_event(tenant, id, at);
            async move { Ok(store.get(tenant, &did).await?) }
        }))
        .buffered(16)
        .collect()
        .await;
    let mut latencies = Vec::with_capacity(events);
    let mut statuses: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut step_statuses: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut attempts = 0u64;
    let mut last = started;
    let mut missing = 0;
    let mut missing_ids = Vec::new();
    for ((d, put), (_, event_id, _)) in got.into_iter().zip(&put_at).zip(&bodies) {
        let Some(d) = d? else {
            missing += 1;
            missing_ids.push(event_id.clone());
            continue;
        };
        *statuses.entry(d.status.as_str()).or_default() += 1;
        for s in &d.steps {
            *step_statuses.entry(step_name(s.status)).or_default() += 1;
            if let Some(e) = &s.error {
                *errors
                    .entry(format!("{} {}: {}", s.provider, e.code, e.message))
                    .or_default() += 1;
            }
            attempts += u64::from(s.attempts);
            if s.attempts > 1 {
                println!(
                    "step with {} attempts: {} {} {:?} {:?}",
                    s.attempts, d.id, s.provider, s.request, s.progress
                );
            }
        }
        if let (Some(end), true) = (d.finished_at, d.status.is_final()) {
            last = last.max(end);
            let l = end - *put;
            latencies.push(Duration::from_secs_f64(l.as_seconds_f64().max(0.0)));
        }
    }
    latencies.sort();
    let drain = (last - started).as_seconds_f64().max(1e-9);
    let steps = (events * STEPS) as f64;
    let ceiling = HUBSPOT_LIMIT.0 / HUBSPOT_LIMIT.1 * chains.len() as f64;

    // What reached the sandbox during the run.
    let received = state.dispatch_requests(None);
    let mut routes: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in received.iter().skip(requests_before) {
        let e = routes
            .entry(format!("{} {}", r.route, r.status))
            .or_default();
        e.0 += 1;
        if r.status == 429 {
            e.1 += 1;
        }
    }
    let fx = effects(env, &chains);
    // An effect made twice: every request that carried its key, in arrival order, and
    // its step as stored (what the provider saw against what the dispatcher recorded).
    let mut by_key: BTreeMap<String, Vec<&sandbox::Received>> = BTreeMap::new();
    for r in received.iter().skip(requests_before) {
        if let Some(k) = key_of(&r.body) {
            by_key.entry(k).or_default().push(r);
        }
    }
    for (key, rs) in &by_key {
        if rs.iter().filter(|r| r.created.is_some()).count() > 1 {
            let seen: Vec<String> = rs
                .iter()
                .map(|r| format!("#{} {} {} {:?}", r.seq, r.route, r.status, r.fault))
                .collect();
            println!("made twice: {key}: {}", seen.join(", "));
        }
    }
    if let Some(r) = received
        .iter()
        .skip(requests_before)
        .find(|r| r.status >= 400)
    {
        println!("first refused request: {} {} {}", r.route, r.status, r.body);
    }

    // The sandbox's share: the same requests replayed straight at it.
    let replay = replay(env, &http, &chains, &received[requests_before..], 300).await?;
    let cpu_per_step = cpu.as_secs_f64() * 1000.0 / steps;
    let idle_per_step = idle_rate * wall.as_secs_f64() * 1000.0 / steps;
    let sandbox_per_step = replay.as_secs_f64() * 1000.0 / STEPS as f64;

    println!(
        "## Event dispatch ({events} conversation_ended events, 3-step chains, {} tenants)\n",
        chains.len()
    );
    println!(
        "Chain per tenant: HubSpot log_call (10) → Zendesk create_ticket (20) → webhook deliver (30), each tenant with its own HubSpot portal (private app) and Zendesk account. The slowest published limit in the chain is HubSpot's {} requests per {} s per account (Zendesk: 700/min; the receiver: none); one HubSpot request per event, so the ceiling is {:.1} events/s per tenant, {ceiling:.0} events/s over {} tenants. Set-up (accounts, 2 connections and 3 integrations per tenant): {:.1} s.\n",
        HUBSPOT_LIMIT.0,
        HUBSPOT_LIMIT.1,
        HUBSPOT_LIMIT.0 / HUBSPOT_LIMIT.1,
        chains.len(),
        setup.as_secs_f64()
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| events put (PutEvents, batches of 10, 4 at once) | {events} in {:.2} s |",
        put_in.as_secs_f64()
    );
    println!(
        "| first put → last chain done | {drain:.2} s (queue empty after {:.2} s) |",
        wall.as_secs_f64()
    );
    println!(
        "| drain rate | {:.1} events/s, {:.1} steps/s |",
        events as f64 / drain,
        steps / drain
    );
    println!(
        "| ratio to the ceiling ({ceiling:.0} events/s) | **{:.3}** (goal ≥ 0.9) |",
        events as f64 / drain / ceiling
    );
    println!(
        "| event put → chain done, p50 / p99 / max | {:.0} / {:.0} / {:.0} ms |",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0))
    );
    println!(
        "| CPU of this process per step (dev host, handlers, in-process sandbox, this client) | {cpu_per_step:.3} ms |"
    );
    println!(
        "| the sandbox's share per step (the same requests replayed straight at it, client side included) | {sandbox_per_step:.3} ms |"
    );
    println!(
        "| the idle process's share per step (its CPU rate with nothing to do, {:.1} ms/s, over the run) | {idle_per_step:.3} ms |",
        idle_rate * 1000.0
    );
    println!(
        "| the process less the sandbox's share and the idle share | {:.3} ms |",
        (cpu_per_step - sandbox_per_step - idle_per_step).max(0.0)
    );
    println!(
        "| **Conduit's own CPU per step** (the event-dispatch handler's polls on their threads' CPU clocks; its HTTP connections' socket tasks not included) | **{:.3} ms** (goal ≤ 1 ms) |",
        handler_cpu.as_secs_f64() * 1000.0 / steps
    );
    println!(
        "| moto's CPU per step (its own process; its idle rate, the pollers' long polls, {:.1} ms/s, not taken off) | {:.3} ms ({:.3} ms less the idle rate) |",
        moto_idle_rate * 1000.0,
        moto.as_secs_f64() * 1000.0 / steps,
        (moto.as_secs_f64() - moto_idle_rate * wall.as_secs_f64()).max(0.0) * 1000.0 / steps
    );
    // The AWS calls of the run (the dev host's long polls left out: they wait, they
    // are not work), per step.
    let per_step = |op: &str| aws_calls.get(op).copied().unwrap_or(0) as f64 / steps;
    let ddb: u64 = aws_calls
        .iter()
        .filter(|(op, _)| op.starts_with("DynamoDB_"))
        .map(|(_, n)| n)
        .sum();
    let ops: Vec<String> = aws_calls
        .iter()
        .filter(|(op, _)| !op.ends_with(".ReceiveMessage"))
        .map(|(op, n)| {
            let short = op.rsplit('.').next().unwrap_or(op);
            format!("{short} {:.2}", *n as f64 / steps)
        })
        .collect();
    println!(
        "| DynamoDB requests per step | **{:.2}** (every AWS call per step, long polls left out: {}) |",
        ddb as f64 / steps,
        ops.join(", ")
    );
    println!(
        "| KMS decrypts per step | {:.3} |",
        per_step("TrentService.Decrypt")
    );
    println!("| dispatches | {statuses:?} ({missing} missing) |");
    println!("| steps | {step_statuses:?}, {attempts} attempts |");
    println!(
        "| HubSpot calls created (distinct keys) | {} ({}) |",
        fx.hubspot.0, fx.hubspot.1
    );
    println!(
        "| Zendesk tickets created (distinct keys) | {} ({}) |",
        fx.zendesk.0, fx.zendesk.1
    );
    println!(
        "| valid webhook deliveries (distinct webhook-ids); invalid | {} ({}); {} |",
        fx.webhook.0, fx.webhook.1, fx.invalid_deliveries
    );
    let total = fx.hubspot.0 + fx.zendesk.0 + fx.webhook.0;
    let distinct = fx.hubspot.1 + fx.zendesk.1 + fx.webhook.1;
    println!(
        "| effects (must be {}) | **{total}**, {distinct} distinct keys |",
        events * STEPS
    );
    for (e, n) in &errors {
        println!("| step error ×{n} | {e} |");
    }
    let late = conduit::sync::budget::lateness();
    let starts: Vec<String> = late
        .starts
        .iter()
        .zip(&late_before.starts)
        .enumerate()
        .map(|(i, (n, before))| {
            let label = match conduit::sync::budget::LATENESS_BOUNDS_MS.get(i) {
                Some(bound) => format!("≤{bound}"),
                None => format!(
                    ">{}",
                    conduit::sync::budget::LATENESS_BOUNDS_MS
                        .last()
                        .copied()
                        .unwrap_or(0)
                ),
            };
            format!("{label} ms: {}", n - before)
        })
        .collect();
    println!(
        "| budget takers' start after their slot's time | {}; slots given up for a late wake-up and taken again: {}; slots found behind the clock and claimed afresh: {}; slots handed out from the process's pool (taken by another taker's write): {}, expired unused: {} |",
        starts.join(", "),
        late.retaken - late_before.retaken,
        late.rebased - late_before.rebased,
        late.pooled - late_before.pooled,
        late.expired - late_before.expired
    );
    // How HubSpot's requests arrived: the most in one 10-s window (the sandbox's rolling
    // window refuses the 111th), and how close together they came.
    let mut arrivals: Vec<i64> = received
        .iter()
        .skip(requests_before)
        .filter(|r| r.route.starts_with("hubspot.") && r.status != 429)
        .map(|r| r.at_ms)
        .collect();
    arrivals.sort();
    let window_ms = (HUBSPOT_LIMIT.1 * 1000.0) as i64;
    let mut most = 0;
    let mut from = 0;
    for (i, at) in arrivals.iter().enumerate() {
        while arrivals[from] <= at - window_ms {
            from += 1;
        }
        most = most.max(i + 1 - from);
    }
    let gaps: Vec<i64> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    let close = gaps.iter().filter(|g| **g < 20).count();
    let t0_ms = arrivals.first().copied().unwrap_or(0);
    let limited_at: Vec<i64> = received
        .iter()
        .skip(requests_before)
        .filter(|r| r.route.starts_with("hubspot.") && r.status == 429)
        .map(|r| r.at_ms - t0_ms)
        .collect();
    let mut hist = [0usize; 6];
    for g in &gaps {
        let i = [20, 60, 85, 92, 100]
            .iter()
            .position(|b| g < b)
            .unwrap_or(5);
        hist[i] += 1;
    }
    println!(
        "| HubSpot: time between arrivals | <20 ms: {}, 20–60: {}, 60–85: {}, 85–92: {}, 92–100: {}, ≥100: {} (the budget's interval: {:.1} ms); 429s at {limited_at:?} ms after the first |",
        hist[0],
        hist[1],
        hist[2],
        hist[3],
        hist[4],
        hist[5],
        HUBSPOT_LIMIT.1 * 1000.0 * 1.02 / HUBSPOT_LIMIT.0
    );

    println!(
        "| HubSpot requests answered (not 429) in the busiest 10-s window | {most} (limit {}); arrivals under 20 ms apart: {close} of {} |",
        HUBSPOT_LIMIT.0,
        gaps.len()
    );
    println!("\nProvider requests by route (429s):\n");
    for (route, (n, limited)) in &routes {
        println!("- {route}: {n} ({limited})");
    }
    println!();
    let failed = step_statuses.get("failed").copied().unwrap_or(0);
    if missing > 0 {
        // Where the events without a dispatch went: the dead-letter queue (with the
        // dev host's counts of what its event source did), or nowhere seen.
        let dead = env.dead_letters("DispatchDLQ").await?;
        let in_dlq = missing_ids
            .iter()
            .filter(|id| dead.iter().any(|b| b.contains(id.as_str())))
            .count();
        println!(
            "missing: {missing} events without a dispatch, {in_dlq} of them in DispatchDLQ ({} messages there); first: {:?}; the dispatch event source: {}",
            dead.len(),
            &missing_ids[..missing_ids.len().min(5)],
            event_source(&http, env, DISPATCHER).await?
        );
        if let Some(b) = dead.first() {
            println!("a dead letter: {}", b.chars().take(600).collect::<String>());
        }
    }
    if total != events * STEPS || distinct != total || failed > 0 || missing > 0 {
        bail!(
            "dispatch: {total} effects ({distinct} distinct) for {} steps, {failed} failed steps, {missing} dispatches missing",
            events * STEPS
        );
    }
    Ok(())
}

/// CPU of this process per chain's worth of sandbox requests (one HubSpot call, one
/// Zendesk ticket, one signed delivery), replayed `n` times from the recorded bodies
/// straight at the sandbox with the limits lifted: the sandbox's handling plus this
/// client's side of the request.
async fn replay(
    env: &devhost::LocalEnv,
    http: &reqwest::Client,
    chains: &[Chain],
    received: &[sandbox::Received],
    n: usize,
) -> Result<Duration> {
    let state = env.sandbox.state();
    let chain = chains.first().context("no chain")?;
    let hubspot: Vec<&sandbox::Received> = received
        .iter()
        .filter(|r| r.route == "hubspot.calls_create" || r.path.ends_with("/objects/calls"))
        .take(n)
        .collect();
    let zendesk: Vec<&sandbox::Received> = received
        .iter()
        .filter(|r| r.provider == Provider::Zendesk && r.method == "POST")
        .take(n)
        .collect();
    if hubspot.is_empty() || zendesk.is_empty() {
        bail!("nothing recorded to replay");
    }
    // A portal and a desk without limits, and a receiver with a known secret.
    let token = format!("{}-replay", chain.hubspot_token);
    let account: sandbox::Account = serde_json::from_value(json!({
        "provider": "hubspot", "access_token": token, "ten_secondly_limit": 1_000_000,
        "email": "replay@bench.test"}))?;
    state
        .add_account(account)
        .map_err(|e| anyhow::anyhow!("sandbox account: {e:?}"))?;
    state.set_action_limit(Provider::Zendesk, Some((1_000_000, 1)));
    let (secret, key) = webhook::new_secret();
    let receiver = state
        .add_webhook_receiver(&[secret.expose_secret().to_owned()], None)
        .map_err(|e| anyhow::anyhow!("receiver: {e}"))?;
    let receiver_url = format!("{}{}", env.sandbox.url(), receiver.sandbox_path);
    let (user, pass) = chain.zendesk_auth.split_once(':').context("zendesk auth")?;
    let cpu_before = process_cpu();
    for i in 0..n {
        let h = hubspot[i % hubspot.len()];
        // The record keeps the timestamp as HubSpot answers it; the request sends text.
        let mut call = h.body.clone();
        call["properties"]["hs_timestamp"] = json!("2026-12-05T03:12:44Z");
        let resp = http
            .post(sandboxed(env, &format!("https://{}{}", h.host, h.path)))
            .bearer_auth(&token)
            .json(&call)
            .send()
            .await?;
        let status = resp.status();
        let answer = resp.text().await?;
        if !status.is_success() {
            bail!("replayed HubSpot call answered {status}: {answer}");
        }
        let z = zendesk[i % zendesk.len()];
        let mut body = z.body.clone();
        let replay_key = format!("replay-{i}");
        body["ticket"]["external_id"] = json!(replay_key);
        let resp = http
            .post(sandboxed(
                env,
                &format!("https://{}{}", chain.zendesk_host, z.path),
            ))
            .basic_auth(user, Some(pass))
            .header("Idempotency-Key", &replay_key)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let answer = resp.text().await?;
        if !status.is_success() {
            bail!("replayed Zendesk ticket answered {status}: {answer}");
        }
        let payload = serde_json::to_vec(&json!({"type": "conversation_ended",
            "timestamp": "2026-12-05T03:12:44Z", "data": h.body}))?;
        let id = format!("msg_replay_{i}");
        let ts = OffsetDateTime::now_utc().unix_timestamp();
        let sig = webhook::sign(&[&key], &id, ts, &payload)?;
        let resp = http
            .post(&receiver_url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(payload)
            .send()
            .await?;
        let status = resp.status();
        let answer = resp.text().await?;
        if !status.is_success() {
            bail!("replayed delivery answered {status}: {answer}");
        }
    }
    let cpu = process_cpu().saturating_sub(cpu_before);
    state.set_action_limit(Provider::Zendesk, None);
    Ok(cpu / u32::try_from(n).unwrap_or(u32::MAX))
}
