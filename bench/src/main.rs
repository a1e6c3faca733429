//! `make bench`: Conduit's benchmarks on the local stack (moto, the provider sandbox,
//! the dev host with the real handlers), printing figures and their ratio to the goals.
//!
//! - **OAuth flow**: server-side time of `POST /v1/oauth/hubspot/start` plus
//!   `GET /v1/oauth/hubspot/callback` (code exchange, identity, sealed tokens, the
//!   connection and its audit entry): wall time measured from the client over loopback
//!   (the sandbox's authorize step is not counted), and our own time — the CPU time
//!   the Conduit process (dev host, handlers, in-process sandbox, this client) spends
//!   per flow; moto runs in its own process, so its time is not in it. Goal: under
//!   50 ms of our own time (the seeds ask for a flow under 30 s).
//! - **Refresh sweep**: N connections (default 10,000) due at once, across 100
//!   tenants, refreshed by one run of the token-refresh function: wall time, refreshes
//!   per second and provider token requests, which must equal N.
//!
//! - **Record sync** (see [`sync`]): N contacts HubSpot → app and app → HubSpot
//!   through the trigger, the sync queue and the worker against the sandbox at
//!   HubSpot's rate limit: seconds, records per second, the ratio to the ceiling
//!   (1,100 records/s), the process's peak heap during the run.
//! - **Conflict detection**: `reconcile` alone, per record pair of 10 mapped fields.
//! - **Event dispatch** (see [`dispatch`]): N `conversation_ended` events (default
//!   10,000) with 3-step chains (HubSpot → Zendesk → webhook) over T tenants through
//!   the bus, the rule, the dispatch queue and the event-dispatch function to the
//!   sandbox: Conduit's CPU per step (goal ≤ 1 ms), event-to-chain-done p50/p99, the
//!   drain rate against HubSpot's limit over the tenants' portals (goal ≥ 0.9), and
//!   the effect count (exactly 3 × N).
//! - **Store-call floor** (see [`store`]): one DynamoDB call's CPU through the SDK and
//!   `Table` (GetItem, a conditional PutItem, a two-item transaction) beside a bare
//!   GetItem sent with reqwest.
//! - **Knowledge-base import** (see [`kb`]): a Zendesk help centre of N articles
//!   (default 10,000) imported in full through the API and the sync worker: seconds,
//!   documents per second, requests against Zendesk's rate limit, peak heap.
//! - **Cold start** (see [`coldstart`]): each function binary's init and memory against
//!   a hello-world `lambda_runtime` binary of the same profile. Goal: at most 2×.
//!
//! - **Every other CRM** (see [`crms`]: Salesforce, Zoho, Dynamics 365, Pipedrive):
//!   `--crm-records` contacts (default 10,000) each way with each CRM of `--crms`
//!   (default all): seconds, records per second against
//!   the CRM's ceiling, or the share of its daily allowance a run spends.
//!
//! - **Salesforce Bulk API 2.0** (see [`bulk`]): `--bulk-records` contacts (default
//!   100,000) each way through Bulk API 2.0: seconds, jobs, and the ratio to the Bulk
//!   limits.
//! - **Webhooks** (see [`webhooks`]): HubSpot change → app record through the signed
//!   webhook and a targeted pull: `--hook-changes` single edits (default 200), p50 /
//!   p90 / p99 / max, and a burst of 500 creations.
//! - **Deals** (see [`deals`]): `--deals` HubSpot deals (default 2,000) each way with
//!   their company and contact associations: seconds, requests per 100 deals, and the
//!   request rate against HubSpot's.
//!
//! Usage: `conduit-bench [--only coldstart,conflict,oauth,refresh,sync,crms,bulk,webhooks,deals,dispatch,store,gmail,kb] [--hook-changes N] [--deals N] [--flows N]
//! [--connections N] [--sync 1000,10000,100000] [--directions pull,push] [--crms zoho] [--crm-records N] [--bulk-records N] [--pairs N]
//! [--starts N] [--events N] [--tenants N] [--calls N] [--sends N] [--articles N] [--bin-dir DIR] [--log LEVEL]` (default: everything; `--log info` writes the handlers' JSON logs,
//! e.g. the worker's "sync chunk done", to stderr).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use conduit::app::App;
use conduit::config::Config;
use conduit::connections::{AppSource, Connection, TokenState};
use conduit::domain::{ConnectionId, ConnectionStatus, Identity, Label, TenantId, UserId, now};
use futures::StreamExt;
use sandbox::{OAuthProvider, OAuthUser};
use serde_json::json;

const RETURN_TO: &str = "http://localhost:5173/integrations";

mod alloc;
mod bulk;
mod coldstart;
mod crms;
mod deals;
mod dispatch;
mod gmail;
mod kb;
mod store;
mod sync;
mod webhooks;

#[global_allocator]
static HEAP: alloc::Counting = alloc::Counting;

struct Args {
    only: Vec<String>,
    flows: usize,
    connections: usize,
    sizes: Vec<usize>,
    ways: Vec<sync::Way>,
    pairs: u32,
    starts: usize,
    events: usize,
    tenants: usize,
    calls: usize,
    sends: usize,
    articles: usize,
    crms: Vec<crms::Crm>,
    crm_records: usize,
    bulk_records: usize,
    hook_changes: usize,
    deals: usize,
    bin_dir: Option<std::path::PathBuf>,
    log: Option<String>,
}

const BENCHES: [&str; 13] = [
    "coldstart",
    "crms",
    "bulk",
    "webhooks",
    "deals",
    "conflict",
    "oauth",
    "refresh",
    "sync",
    "dispatch",
    "store",
    "gmail",
    "kb",
];

fn numbers(flag: &str, value: &str) -> Result<Vec<usize>> {
    value
        .split(',')
        .map(|v| {
            v.trim()
                .replace('_', "")
                .parse::<usize>()
                .with_context(|| format!("{flag} takes numbers, got {value:?}"))
        })
        .collect()
}

fn args() -> Result<Args> {
    let mut out = Args {
        only: BENCHES.iter().map(|b| (*b).to_owned()).collect(),
        flows: 200,
        connections: 10_000,
        sizes: vec![1_000, 10_000, 100_000],
        ways: vec![sync::Way::Pull, sync::Way::Push],
        pairs: 100_000,
        starts: 20,
        events: 10_000,
        tenants: dispatch::TENANTS,
        calls: 3_000,
        sends: 1_000,
        articles: 10_000,
        crms: crms::ALL.to_vec(),
        crm_records: 10_000,
        bulk_records: 100_000,
        hook_changes: 200,
        deals: 2_000,
        bin_dir: None,
        log: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let one = || -> Result<usize> {
            let n = numbers(&flag, &value)?;
            match n.as_slice() {
                [n] => Ok(*n),
                _ => bail!("{flag} takes one number"),
            }
        };
        match flag.as_str() {
            "--flows" => out.flows = one()?.max(1),
            "--connections" => out.connections = one()?.max(1),
            "--pairs" => out.pairs = u32::try_from(one()?.max(2)).unwrap_or(u32::MAX),
            "--sync" => {
                out.sizes = numbers(&flag, &value)?
                    .into_iter()
                    .filter(|n| *n > 0)
                    .collect()
            }
            "--directions" => {
                out.ways = value
                    .split(',')
                    .map(|d| match d.trim() {
                        "pull" => Ok(sync::Way::Pull),
                        "push" => Ok(sync::Way::Push),
                        other => bail!("--directions takes pull and push, got {other:?}"),
                    })
                    .collect::<Result<_>>()?;
            }
            "--only" => {
                out.only = value.split(',').map(|b| b.trim().to_owned()).collect();
                if let Some(b) = out.only.iter().find(|b| !BENCHES.contains(&b.as_str())) {
                    bail!("--only takes {}, got {b:?}", BENCHES.join(","));
                }
            }
            "--crms" => {
                out.crms = value
                    .split(',')
                    .map(|c| {
                        crms::Crm::parse(c.trim())
                            .with_context(|| format!("--crms takes CRM providers, got {c:?}"))
                    })
                    .collect::<Result<_>>()?;
            }
            "--crm-records" => out.crm_records = one()?.max(1),
            "--bulk-records" => out.bulk_records = one()?.max(1),
            "--hook-changes" => out.hook_changes = one()?.max(1),
            "--deals" => out.deals = one()?.max(1),
            "--starts" => out.starts = one()?.max(1),
            "--events" => out.events = one()?.max(1),
            "--tenants" => out.tenants = one()?.max(1),
            "--calls" => out.calls = one()?.max(1),
            "--sends" => out.sends = one()?.max(1),
            "--articles" => out.articles = one()?.max(1),
            "--bin-dir" => out.bin_dir = Some(value.into()),
            "--log" => out.log = Some(value),
            other => bail!(
                "unknown flag {other}; use --only, --flows, --connections, --sync, --directions, --crms, --crm-records, --bulk-records, --hook-changes, --deals, --pairs, --starts, --events, --tenants, --calls, --sends, --articles, --bin-dir, --log"
            ),
        }
    }
    Ok(out)
}

/// The host's CPU as /proc/cpuinfo names it (model, family, model number) and its
/// CPU count.
fn host() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map_or("?", |(_, v)| v.trim())
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{} (family {}, model {}), {cpus} CPUs",
        field("model name"),
        field("cpu family"),
        field("model")
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    match &args.log {
        Some(level) => conduit::telemetry::init_with_writer(level, std::io::stderr),
        // No logs, and the functions' metric lines (EMF) not among the figures either.
        None => conduit::telemetry::init_with_writer("off", std::io::sink),
    }
    let wants = |b: &str| args.only.iter().any(|o| o == b);
    println!("# Conduit benchmarks (local stack: moto, provider sandbox, dev host)\n");
    // CPU figures move with the host (the same build measured 1.52 and 0.55 ms per
    // dispatch step on two hosts a day apart): name it, so runs can be compared.
    println!("Host: {}\n", host());
    if wants("coldstart") {
        let dir = match &args.bin_dir {
            Some(dir) => dir.clone(),
            None => coldstart::default_bin_dir()?,
        };
        coldstart::bench(&dir, args.starts)?;
    }
    if wants("conflict") {
        conflict_detection(args.pairs);
    }
    if [
        "oauth", "refresh", "sync", "crms", "bulk", "webhooks", "deals", "dispatch", "store",
        "gmail", "kb",
    ]
    .iter()
    .any(|b| wants(b))
    {
        let env = devhost::LocalEnv::start(devhost::LocalEnvOptions::default()).await?;
        if wants("oauth") {
            oauth_flow(&env, args.flows).await?;
        }
        if wants("refresh") {
            refresh_sweep(&env, args.connections).await?;
        }
        if wants("sync") && !args.sizes.is_empty() && !args.ways.is_empty() {
            sync::bench(&env, &args.sizes, &args.ways).await?;
        }
        if wants("crms") && !args.crms.is_empty() {
            crms::bench(&env, &args.crms, args.crm_records).await?;
        }
        if wants("bulk") {
            bulk::bench(&env, args.bulk_records).await?;
        }
        if wants("webhooks") {
            webhooks::bench(&env, args.hook_changes).await?;
        }
        if wants("deals") {
            deals::bench(&env, args.deals).await?;
        }
        if wants("dispatch") {
            dispatch::bench(&env, args.events, args.tenants).await?;
        }
        if wants("store") {
            store::bench(&env, args.calls).await?;
        }
        if wants("gmail") {
            gmail::bench(&env, args.sends).await?;
        }
        if wants("kb") {
            kb::bench(&env, args.articles).await?;
        }
        env.shutdown().await;
    }
    Ok(())
}

/// Field-level conflict detection: `reconcile` alone over `n` record pairs of 10
/// mapped fields (the bench's contact mapping), from 10,000 distinct pairs cycled: in
/// 7 of 10 nothing changed, in 1 the app changed 2 fields, in 1 the CRM changed 2, in
/// 1 both changed (one field on both sides: a conflict). Timed under last_write_wins
/// and manual_review, half the pairs each.
fn conflict_detection(n: u32) {
    use conduit::sync::conflict::{Direction, Side, Strategy, Values, reconcile};
    const FIELDS: [&str; 10] = [
        "email",
        "first_name",
        "last_name",
        "phone",
        "mobile_phone",
        "job_title",
        "company_name",
        "city",
        "country",
        "website",
    ];
    let fields: Vec<(String, Direction)> = FIELDS
        .iter()
        .map(|f| ((*f).to_owned(), Direction::Bidirectional))
        .collect();
    let distinct = 10_000usize.min(n as usize);
    let pairs: Vec<(Values, Values, Values)> = (0..distinct)
        .map(|i| {
            let base: Values = FIELDS
                .iter()
                .map(|f| ((*f).to_owned(), Some(format!("{f}-{i}-value@example.com"))))
                .collect();
            let mut app = base.clone();
            let mut crm = base.clone();
            let edit = |side: &mut Values, f: &str, tag: &str| {
                side.insert(f.to_owned(), Some(format!("{tag}-{i}")));
            };
            match i % 10 {
                7 => {
                    edit(&mut app, "phone", "app");
                    edit(&mut app, "city", "app");
                }
                8 => {
                    edit(&mut crm, "job_title", "crm");
                    edit(&mut crm, "last_name", "crm");
                }
                9 => {
                    edit(&mut app, "phone", "app");
                    edit(&mut crm, "phone", "crm");
                    edit(&mut crm, "country", "crm");
                }
                _ => {}
            }
            (base, app, crm)
        })
        .collect();
    let at = now();
    let t = Instant::now();
    let (mut pushed, mut pulled, mut conflicts) = (0, 0, 0);
    for k in 0..n as usize {
        let strategy = if k < n as usize / 2 {
            Strategy::LastWriteWins
        } else {
            Strategy::ManualReview
        };
        let (base, app, crm) = &pairs[k % distinct];
        let plan = reconcile(
            &fields,
            std::hint::black_box(base),
            Side {
                values: std::hint::black_box(app),
                modified_at: at,
            },
            Side {
                values: std::hint::black_box(crm),
                modified_at: at + time::Duration::seconds(1),
            },
            strategy,
        );
        pushed += plan.push.len();
        pulled += plan.pull.len();
        conflicts += plan.conflicts.len() + plan.resolved;
        std::hint::black_box(plan);
    }
    let per = t.elapsed() / n;
    println!("## Conflict detection (`sync::conflict::reconcile`)\n");
    println!(
        "{n} record pairs × 10 mapped fields (7 in 10 unchanged, 3 in 10 changed, 1 in 10 with a field changed on both sides): {:.3} µs per record (goal: a few µs); planned {pushed} pushes, {pulled} pulls, {conflicts} conflicts\n",
        per.as_secs_f64() * 1e6
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn location(resp: &reqwest::Response) -> Result<String> {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .context("a redirect without a Location")
}

async fn oauth_flow(env: &devhost::LocalEnv, flows: usize) -> Result<()> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let tenant = "bench-oauth";
    let token = env.token(tenant, "bench-admin", "admin")?;
    let start_url = format!("{}/v1/oauth/hubspot/start", env.url());
    let mut starts = Vec::with_capacity(flows);
    let mut callbacks = Vec::with_capacity(flows);
    let warmup = 10;
    let mut cpu = Duration::ZERO;
    for i in 0..flows + warmup {
        let cpu_before = process_cpu();
        let email = format!("bench-{i}@bench.test");
        env.sandbox
            .state()
            .add_oauth_user(OAuthUser::new(OAuthProvider::Hubspot, email.clone()))
            .map_err(|e| anyhow::anyhow!("sandbox user: {e}"))?;
        let t0 = Instant::now();
        let resp = http
            .post(&start_url)
            .bearer_auth(&token)
            .json(&json!({ "return_to": RETURN_TO }))
            .send()
            .await?;
        let start_time = t0.elapsed();
        if !resp.status().is_success() {
            bail!("start answered {}", resp.status());
        }
        let body: serde_json::Value = resp.json().await?;
        let authorize = body["authorize_url"]
            .as_str()
            .context("no authorize_url")?
            .to_owned();
        let resp = http
            .get(format!("{authorize}&login_hint={email}"))
            .send()
            .await?;
        let callback = location(&resp)?;
        let t1 = Instant::now();
        let resp = http.get(&callback).send().await?;
        let callback_time = t1.elapsed();
        let back = location(&resp)?;
        if !back.contains("status=connected") {
            bail!("flow {i} did not connect: {back}");
        }
        if i >= warmup {
            starts.push(start_time);
            callbacks.push(callback_time);
            cpu += process_cpu().saturating_sub(cpu_before);
        }
    }
    // The sandbox's own share of a callback: its token endpoint and identity answers.
    let sandbox = sandbox_roundtrips(env, 200).await?;
    let mut totals: Vec<Duration> = starts
        .iter()
        .zip(&callbacks)
        .map(|(a, b)| *a + *b)
        .collect();
    starts.sort();
    callbacks.sort();
    totals.sort();
    let cpu_per_flow = cpu / u32::try_from(flows).unwrap_or(u32::MAX);
    println!("## OAuth connect (HubSpot, {flows} flows after {warmup} warm-up)\n");
    println!("| step | p50 ms | p95 ms | max ms |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("start", &starts),
        ("callback", &callbacks),
        ("start + callback", &totals),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.95)),
            ms(percentile(v, 1.0))
        );
    }
    println!(
        "\nsandbox share of a callback (token exchange + identity, measured directly): {:.1} ms",
        ms(sandbox)
    );
    println!(
        "CPU time of the Conduit process per flow (dev host, the real handlers, the in-process sandbox and this client; moto runs in its own process): {:.2} ms",
        ms(cpu_per_flow)
    );
    println!(
        "our own time per start + callback: {:.2} ms of CPU — goal < 50 ms: {:.3} of the goal; the seeds' 30 s: {:.6}",
        ms(cpu_per_flow),
        ms(cpu_per_flow) / 50.0,
        cpu_per_flow.as_secs_f64() / 30.0
    );
    println!(
        "the rest of the wall time is waiting on local AWS (moto, ~2-3 ms a call, far more for transactions on a large table) and on the sandbox\n"
    );
    Ok(())
}

/// User + system CPU time of this process so far.
fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    // SAFETY: initialised by the successful call above (and zeroed before it).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Median time of one token request plus one identity request straight to the
/// sandbox, as the callback makes them.
async fn sandbox_roundtrips(env: &devhost::LocalEnv, n: usize) -> Result<Duration> {
    let http = reqwest::Client::new();
    let state = env.sandbox.state();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let grant = state
            .seed_grant(
                OAuthProvider::Hubspot,
                "hubspot-sandbox-client-id",
                None,
                &["oauth", "crm.objects.contacts.read"],
            )
            .map_err(|e| anyhow::anyhow!("seed: {e}"))?;
        let t = Instant::now();
        let token = http
            .post(format!(
                "{}/api.hubapi.com/oauth/v1/token",
                env.sandbox.url()
            ))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", grant.refresh_token.as_str()),
                ("client_id", "hubspot-sandbox-client-id"),
                ("client_secret", "hubspot-sandbox-client-secret"),
            ])
            .send()
            .await?;
        let body: serde_json::Value = token.json().await?;
        let access = body["access_token"].as_str().context("no access token")?;
        let id = http
            .get(format!(
                "{}/api.hubapi.com/oauth/v1/access-tokens/{access}",
                env.sandbox.url()
            ))
            .send()
            .await?;
        let _ = id.bytes().await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(percentile(&times, 0.5))
}

async fn refresh_sweep(env: &devhost::LocalEnv, n: usize) -> Result<()> {
    let config = Config::from_map(&env.stack.function_env("TokenRefreshFunction")?)?;
    let app = App::with_aws(config, env.aws.clone())?;
    let state = env.sandbox.state();
    let at = now();
    let tenants: Vec<TenantId> = (0..100)
        .map(|i| TenantId::parse(&format!("bench-sweep-{i:03}")))
        .collect::<Result<_, _>>()?;
    let seeding = Instant::now();
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        let grant = state
            .seed_grant(
                OAuthProvider::Hubspot,
                "hubspot-sandbox-client-id",
                None,
                &["oauth", "crm.objects.contacts.read"],
            )
            .map_err(|e| anyhow::anyhow!("seed: {e}"))?;
        let tenant = tenants[i % tenants.len()].clone();
        let id = ConnectionId::generate();
        let secrets =
            json!({"access_token": grant.access_token, "refresh_token": grant.refresh_token});
        let sealed = app
            .envelope
            .seal_json(&conduit::connections::seal_context(&tenant, &id), &secrets)
            .await?;
        let user = UserId::parse("bench")?;
        let conn = Connection {
            id,
            tenant,
            provider: "hubspot".into(),
            auth_method: "oauth2".into(),
            kind: None,
            label: Label::lossy("HubSpot (bench)"),
            status: ConnectionStatus::Connected,
            settings: Default::default(),
            masked: Default::default(),
            secrets: sealed,
            identity: Some(Identity::default()),
            scopes: vec!["oauth".into()],
            scopes_missing: Vec::new(),
            account_key: None,
            last_error: None,
            checked_at: Some(at),
            created_at: at,
            created_by: user.clone(),
            updated_at: at,
            updated_by: user,
            version: 1,
            token: Some(TokenState {
                app: AppSource::Platform,
                expires_at: Some(at + time::Duration::minutes(4)),
                refresh_due: Some(at - time::Duration::seconds(1)),
                refreshed_at: Some(at - time::Duration::minutes(26)),
                validated_at: Some(at - time::Duration::minutes(26)),
                failures: 0,
                generation: 1,
                has_refresh_token: true,
            }),
            lease_holder: None,
            lease_until: None,
            allow_automations: false,
            owner: None,
        };
        items.push(conn.to_item()?);
    }
    let dynamo = app.table.client().clone();
    let table = app.table.name().to_owned();
    let chunks: Vec<Vec<_>> = items.chunks(25).map(<[_]>::to_vec).collect();
    let mut writes = futures::stream::iter(chunks)
        .map(|chunk| {
            let dynamo = dynamo.clone();
            let table = table.clone();
            async move {
                let mut pending: Vec<aws_sdk_dynamodb::types::WriteRequest> = chunk
                    .into_iter()
                    .map(|item| {
                        let put = aws_sdk_dynamodb::types::PutRequest::builder()
                            .set_item(Some(item))
                            .build()?;
                        Ok(aws_sdk_dynamodb::types::WriteRequest::builder()
                            .put_request(put)
                            .build())
                    })
                    .collect::<Result<_>>()?;
                while !pending.is_empty() {
                    let out = dynamo
                        .batch_write_item()
                        .request_items(&table, pending)
                        .send()
                        .await?;
                    pending = out
                        .unprocessed_items
                        .and_then(|mut m| m.remove(&table))
                        .unwrap_or_default();
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(8);
    while let Some(r) = writes.next().await {
        r?;
    }
    let seeded_in = seeding.elapsed();

    let before = state.calls("hubspot.oauth_token");
    let cpu_before = process_cpu();
    let t = Instant::now();
    let report = token_refresh::handle_event(&app, json!({"id": "bench-sweep"}))
        .await
        .map_err(|e| anyhow::anyhow!("sweep: {e}"))?;
    let wall = t.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_before);
    let calls = state.calls("hubspot.oauth_token") - before;
    let refreshed = report["refreshed"].as_u64().unwrap_or(0);
    println!(
        "## Refresh sweep ({n} due connections, 100 tenants, concurrency {})\n",
        token_refresh::CONCURRENCY
    );
    println!(
        "set-up (grants, sealed secrets, batch writes): {:.1} s",
        seeded_in.as_secs_f64()
    );
    println!("sweep report: {report}");
    println!("| figure | value |");
    println!("|---|---|");
    println!("| wall time | {:.2} s |", wall.as_secs_f64());
    println!("| refreshed | {refreshed} |");
    println!(
        "| refreshes per second | {:.0} |",
        refreshed as f64 / wall.as_secs_f64()
    );
    println!("| provider token requests | {calls} |");
    println!(
        "| token requests / due connections | {:.4} (must be 1.0000) |",
        calls as f64 / n as f64
    );
    println!(
        "| CPU of the Conduit process per refresh (sandbox included; moto not) | {:.3} ms |",
        ms(cpu) / n as f64
    );
    println!(
        "| share of the 5-minute schedule used | {:.3} |",
        wall.as_secs_f64() / 300.0
    );
    if calls as usize != n || refreshed as usize != n {
        bail!(
            "the sweep made {calls} token requests and {refreshed} refreshes for {n} due connections"
        );
    }
    Ok(())
}
