//! Record sync through the real path: `POST /v1/sync/trigger` → the sync queue → the
//! sync worker (the dev host's SQS pollers) → the sandbox HubSpot, which enforces
//! HubSpot's 110 requests per rolling 10 s. Each run gets a tenant and a HubSpot
//! portal of its own (so rate-limit windows don't carry over), connected through the
//! OAuth flow.
//!
//! - **HubSpot → app** (pull): N contacts seeded in the portal, a pull config with 10
//!   mapped fields; timed from the trigger's request to the log's close. Checked: the
//!   log counts N created and nothing failed, and the tenant holds N app contacts.
//! - **app → HubSpot** (push): N app contacts written straight to the store (record +
//!   key marker, as a pull or the API leaves them), a push config; checked: the portal
//!   holds N contacts, each carrying its app id.
//!
//! The ceiling is HubSpot's limit with 100-record batches: 11 requests/s × 100 =
//! 1,100 records/s.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use conduit::app::App;
use conduit::config::Config;
use conduit::domain::{ConnectionId, MappingId, RecordId, SyncConfigId, SyncLogId, TenantId};
use conduit::domain::{UserId, now};
use conduit::sync::config::{
    ConfigStatus, Configs, FieldMapping, Frequency, SyncConfig, SyncDirection, SyncOptions,
};
use conduit::sync::conflict::{Direction, Strategy};
use conduit::sync::records::{Record, Records, Source};
use conduit::sync::runs::{RunStatus, Runs, SyncLog};
use conduit::sync::schema::Entity;
use sandbox::{CrmObject, OAuthProvider, OAuthUser};
use serde_json::json;

use crate::alloc;
use devhost::CapacityReport;

/// HubSpot's ceiling: 110 requests per 10 s, 100 records per batch request.
pub const CEILING: f64 = 1_100.0;

/// (HubSpot property, app field): the 10 mapped contact fields.
pub(crate) const FIELDS: [(&str, &str); 10] = [
    ("email", "email"),
    ("firstname", "first_name"),
    ("lastname", "last_name"),
    ("phone", "phone"),
    ("mobilephone", "mobile_phone"),
    ("jobtitle", "job_title"),
    ("company", "company_name"),
    ("city", "city"),
    ("country", "country"),
    ("website", "website"),
];

/// Which way a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// HubSpot → app.
    Pull,
    /// App → HubSpot.
    Push,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Pull => "HubSpot → app",
            Way::Push => "app → HubSpot",
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Direction.
    pub way: Way,
    /// Records synced.
    pub records: usize,
    /// Trigger request to the log's close.
    pub wall: Duration,
    /// Provider requests the log counts (retries included).
    pub requests: u64,
    /// 429s sat out.
    pub rate_limited: u64,
    /// Peak live heap of the bench process above its level at the trigger.
    pub peak_heap: usize,
    /// Live heap still held at the end above that level (what the sandbox and the
    /// clients keep: the records HubSpot now holds, caches).
    pub retained_heap: usize,
    /// Set-up time (seeding, connecting).
    pub setup: Duration,
    /// What the run (trigger to close) put on DynamoDB's partitions.
    pub capacity: CapacityReport,
    /// The run's provider requests per sandbox route (what the requests were).
    pub routes: std::collections::BTreeMap<String, u64>,
    /// Where the wall time went besides HubSpot's pace: trigger to the first provider
    /// request, the last one to the log's close, and the time lost in gaps longer than
    /// twice the budget's spacing (with the longest).
    pub timeline: Timeline,
}

/// A run's provider-request timeline (see [`Figures::timeline`]).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Trigger to the first provider request.
    pub lead: Duration,
    /// Last provider request to the log's close.
    pub tail: Duration,
    /// Time in gaps longer than twice the spacing, beyond the spacing.
    pub lost: Duration,
    /// The longest gap between two requests.
    pub longest: Duration,
}

impl Timeline {
    fn of(start: Instant, end: Instant, calls: &[Instant]) -> Self {
        let spacing = Duration::from_micros(10_000_000 * 102 / 100 / 110);
        let (Some(first), Some(last)) = (calls.first(), calls.last()) else {
            return Self::default();
        };
        let mut lost = Duration::ZERO;
        let mut longest = Duration::ZERO;
        for pair in calls.windows(2) {
            let gap = pair[1].saturating_duration_since(pair[0]);
            longest = longest.max(gap);
            if gap > spacing * 2 {
                lost += gap - spacing;
            }
        }
        Self {
            lead: first.saturating_duration_since(start),
            tail: end.saturating_duration_since(*last),
            lost,
            longest,
        }
    }
}

impl Figures {
    /// Records per second.
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.wall.as_secs_f64()
    }
}

pub(crate) fn location(resp: &reqwest::Response) -> Result<String> {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .context("a redirect without a Location")
}

pub(crate) fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

static PORTALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A tenant with a HubSpot portal of its own, connected through the OAuth flow:
/// (admin token, connection, portal).
async fn connect(
    env: &devhost::LocalEnv,
    http: &reqwest::Client,
    tenant: &str,
) -> Result<(String, ConnectionId, u64)> {
    let user = OAuthUser {
        hub_id: 900_000 + PORTALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        ..OAuthUser::new(OAuthProvider::Hubspot, format!("{tenant}@bench.test"))
    };
    let (admin, connection, user) = oauth_connect(env, http, tenant, user, json!({})).await?;
    Ok((admin, connection, user.hub_id))
}

/// Adds `user` to the sandbox and connects `tenant` to it through the OAuth flow
/// (`start`: more of the start body); answers the admin token, the connection and the
/// user as the sandbox keeps it.
pub(crate) async fn oauth_connect(
    env: &devhost::LocalEnv,
    http: &reqwest::Client,
    tenant: &str,
    user: OAuthUser,
    mut start: serde_json::Value,
) -> Result<(String, ConnectionId, OAuthUser)> {
    let provider = user.provider.as_str();
    let user = env
        .sandbox
        .state()
        .add_oauth_user(user)
        .map_err(|e| anyhow::anyhow!("sandbox user: {e}"))?;
    let admin = env.token(tenant, "bench-admin", "admin")?;
    start["return_to"] = json!("http://localhost:5173/integrations");
    let resp = http
        .post(format!("{}/v1/oauth/{provider}/start", env.url()))
        .bearer_auth(&admin)
        .json(&start)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("oauth start answered {}", resp.status());
    }
    let body: serde_json::Value = resp.json().await?;
    let authorize = body["authorize_url"].as_str().context("no authorize_url")?;
    let resp = http
        .get(format!("{authorize}&login_hint={}", user.email))
        .send()
        .await?;
    let resp = http.get(location(&resp)?).send().await?;
    let back = location(&resp)?;
    let id = query_param(&back, "connection_id")
        .with_context(|| format!("the flow did not connect: {back}"))?;
    Ok((admin, ConnectionId::parse(&id)?, user))
}

async fn insert_config(
    app: &App,
    tenant: &TenantId,
    connection: &ConnectionId,
    direction: SyncDirection,
) -> Result<SyncConfig> {
    let c = contacts_config(tenant, connection, "hubspot", direction, &FIELDS)?;
    Configs::new(app.table.clone()).insert(&c).await?;
    Ok(c)
}

/// A manual contacts config of `provider` mapping `fields` (CRM field, app field) both
/// ways (not stored).
pub(crate) fn contacts_config(
    tenant: &TenantId,
    connection: &ConnectionId,
    provider: &str,
    direction: SyncDirection,
    fields: &[(&str, &str)],
) -> Result<SyncConfig> {
    let at = now();
    Ok(SyncConfig {
        id: SyncConfigId::generate(),
        tenant: tenant.clone(),
        connection_id: connection.clone(),
        provider: provider.into(),
        name: format!("{provider} contacts (bench)"),
        direction,
        frequency: Frequency::Manual,
        entities: vec![Entity::Contacts],
        filters: vec![],
        conflict_strategy: Strategy::LastWriteWins,
        options: SyncOptions::default(),
        status: ConfigStatus::Active,
        mappings: fields
            .iter()
            .map(|(crm, app)| FieldMapping {
                id: MappingId::generate(),
                entity: Entity::Contacts,
                crm_field: (*crm).into(),
                app_field: (*app).into(),
                direction: Direction::Bidirectional,
                transform: None,
                push_transform: None,
            })
            .collect(),
        schedule_name: None,
        last_job: None,
        created_at: at,
        created_by: UserId::parse("bench-admin")?,
        updated_at: at,
        version: 1,
    })
}

/// Times a seeding batch is written again after the store throttled it.
const SEED_ATTEMPTS: u32 = 30;

/// App contacts as the API or a pull leaves them (record + key marker), `n` of them.
pub(crate) async fn seed_app_records(app: &App, tenant: &TenantId, n: usize) -> Result<()> {
    let records = Records::new(app.table.clone());
    let at = now();
    let source = Source {
        origin: "app".into(),
        config_id: None,
        at,
    };
    let batches: Vec<Vec<Record>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(500)
        .map(|chunk| {
            chunk
                .iter()
                .map(|i| {
                    let mut r =
                        Record::new(RecordId::generate(), tenant.clone(), Entity::Contacts, at);
                    let values = [
                        format!("person.{i}@bench-app.test"),
                        format!("First{i}"),
                        format!("Last{i}"),
                        format!("+1 555 {:07}", i),
                        format!("+1 666 {:07}", i),
                        "Engineer".to_owned(),
                        format!("Company {}", i % 997),
                        "Springfield".to_owned(),
                        "United States".to_owned(),
                        format!("https://company{}.bench-app.test", i % 997),
                    ];
                    for ((_, field), v) in FIELDS.iter().zip(values) {
                        r.set(field, Some(&v), &source);
                    }
                    r.version = 1;
                    r.rev = 1;
                    r
                })
                .collect()
        })
        .collect();
    for batch in batches {
        put_new_retrying(&records, &batch).await?;
    }
    Ok(())
}

/// Writes new records, sitting out throttles: one partition takes 1,000 WCU/s, so
/// seeding goes one batch at a time and writes a throttled one again (its writes are
/// plain puts, so writing it again is harmless).
pub(crate) async fn put_new_retrying(records: &Records, batch: &[Record]) -> Result<()> {
    let mut attempts = 0;
    loop {
        match records.put_new(batch).await {
            Ok(()) => return Ok(()),
            Err(e) if attempts < SEED_ATTEMPTS && e.to_string().contains("ThroughputExceeded") => {
                attempts += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Checks that every contact of the portal has its app record (the id a pull derives
/// from the CRM record) with the same email; returns how many matched.
async fn pulled_matches(
    app: &App,
    env: &devhost::LocalEnv,
    tenant: &TenantId,
    config: &SyncConfigId,
    portal: u64,
) -> Result<usize> {
    let crm = env
        .sandbox
        .state()
        .hubspot_records(portal, CrmObject::Contacts);
    let records = Records::new(app.table.clone());
    let mut matched = 0;
    for chunk in crm.chunks(1000) {
        let ids: Vec<RecordId> = chunk
            .iter()
            .map(|r| {
                RecordId::derived(&[
                    tenant.as_str(),
                    config.as_str(),
                    Entity::Contacts.as_str(),
                    &r.id,
                ])
            })
            .collect();
        let found: std::collections::HashMap<String, Record> = records
            .get_many(tenant, Entity::Contacts, &ids)
            .await?
            .into_iter()
            .map(|r| (r.id.to_string(), r))
            .collect();
        for (r, id) in chunk.iter().zip(&ids) {
            if found.get(id.as_str()).and_then(|a| a.fields.get("email"))
                == r.properties.get("email")
            {
                matched += 1;
            }
        }
    }
    Ok(matched)
}

/// Triggers a run of `config` and waits until every log of it is closed.
pub(crate) async fn trigger_and_wait(
    env: &devhost::LocalEnv,
    http: &reqwest::Client,
    app: &App,
    admin: &str,
    tenant: &TenantId,
    config: &SyncConfigId,
    timeout: Duration,
) -> Result<Vec<SyncLog>> {
    let resp = http
        .post(format!("{}/v1/sync/trigger", env.url()))
        .bearer_auth(admin)
        .json(&json!({"config_id": config}))
        .send()
        .await?;
    let status = resp.status();
    let started: serde_json::Value = resp.json().await?;
    if status.as_u16() != 202 {
        bail!("trigger answered {status}: {started}");
    }
    let ids: Vec<SyncLogId> = started["logs"]
        .as_array()
        .context("trigger answer without logs")?
        .iter()
        .map(|l| SyncLogId::parse(l["id"].as_str().unwrap_or_default()))
        .collect::<Result<_, _>>()?;
    let runs = Runs::new(app.table.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let mut logs = Vec::new();
        for id in &ids {
            logs.push(runs.log(tenant, id).await?.context("the log is gone")?);
        }
        if logs.iter().all(|l| l.status != RunStatus::Running) {
            return Ok(logs);
        }
        if Instant::now() > deadline {
            bail!("the run did not finish within {timeout:?}: {logs:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A tenant connected to a HubSpot portal of its own, ready for one run.
pub struct Connected {
    tenant: TenantId,
    admin: String,
    connection: ConnectionId,
    portal: u64,
}

/// Connects a fresh tenant (before any run: moto copies the whole table for the
/// OAuth callback's transaction, which takes long once it holds 100,000s of items).
pub async fn prepare(env: &devhost::LocalEnv) -> Result<Connected> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let suffix = SyncConfigId::generate().as_str()[5..].to_ascii_lowercase();
    let tenant_name = format!("bench-sync-{}", &suffix[suffix.len() - 10..]);
    let (admin, connection, portal) = connect(env, &http, &tenant_name).await?;
    Ok(Connected {
        tenant: TenantId::parse(&tenant_name)?,
        admin,
        connection,
        portal,
    })
}

/// One timed run of `n` contacts in direction `way`.
pub async fn run(env: &devhost::LocalEnv, way: Way, n: usize, c: Connected) -> Result<Figures> {
    let config = Config::from_map(&env.stack.function_env("SyncWorkerFunction")?)?;
    let app = App::with_aws(config, env.aws.clone())?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let setup_started = Instant::now();
    let Connected {
        tenant,
        admin,
        connection,
        portal,
    } = c;
    let direction = match way {
        Way::Pull => {
            env.sandbox
                .state()
                .seed_hubspot(portal, CrmObject::Contacts, n);
            SyncDirection::Pull
        }
        Way::Push => {
            seed_app_records(&app, &tenant, n).await?;
            SyncDirection::Push
        }
    };
    let cfg = insert_config(&app, &tenant, &connection, direction).await?;
    let setup = setup_started.elapsed();

    // Count the run's own DynamoDB traffic, not the seeding's.
    let endpoint = env.aws_endpoint.clone();
    tokio::task::spawn_blocking(move || CapacityReport::reset(&endpoint)).await??;
    let calls_before = env.sandbox.state().calls_view().routes;
    let base = alloc::reset_peak();
    let t = Instant::now();
    // Generous: ten times the ceiling's time plus a minute.
    let timeout = Duration::from_secs_f64(n as f64 / CEILING * 10.0 + 60.0);
    let logs = trigger_and_wait(env, &http, &app, &admin, &tenant, &cfg.id, timeout).await;
    let wall = t.elapsed();
    let end = Instant::now();
    let calls: Vec<Instant> = env
        .sandbox
        .state()
        .call_times()
        .into_iter()
        .filter(|(at, route)| *at >= t && route.starts_with("hubspot."))
        .map(|(at, _)| at)
        .collect();
    let timeline = Timeline::of(t, end, &calls);
    let mut routes = env.sandbox.state().calls_view().routes;
    for (route, n) in &calls_before {
        if let Some(count) = routes.get_mut(route) {
            *count = count.saturating_sub(*n);
        }
    }
    routes.retain(|_, n| *n > 0);
    let peak_heap = alloc::peak().saturating_sub(base);
    let retained_heap = alloc::live().saturating_sub(base);
    let endpoint = env.aws_endpoint.clone();
    let capacity = tokio::task::spawn_blocking(move || CapacityReport::fetch(&endpoint)).await??;
    // A run that fails under the partition limits says where they were exceeded.
    let logs = logs
        .with_context(|| format!("DynamoDB partitions during the run:\n{}", capacity.render()))?;

    let log = logs.first().context("no log")?;
    let count = |k: &str| log.counts.get(k).copied().unwrap_or(0);
    if log.status != RunStatus::Completed || count("failed") > 0 || count("created") != n as u64 {
        bail!(
            "{} of {n}: the run ended {:?} with counts {:?} ({:?})\nDynamoDB partitions during the run:\n{}",
            way.label(),
            log.status,
            log.counts,
            log.error,
            capacity.render()
        );
    }
    match way {
        Way::Pull => {
            let matched = pulled_matches(&app, env, &tenant, &cfg.id, portal).await?;
            if matched != n {
                bail!("HubSpot → app of {n}: {matched} CRM contacts have their app record");
            }
        }
        Way::Push => {
            let crm = env
                .sandbox
                .state()
                .hubspot_records(portal, CrmObject::Contacts);
            let marked = crm
                .iter()
                .filter(|r| r.properties.contains_key("conduit_id"))
                .count();
            if crm.len() != n || marked != n {
                bail!(
                    "app → HubSpot of {n}: the portal holds {} contacts, {marked} with an app id",
                    crm.len()
                );
            }
        }
    }
    Ok(Figures {
        way,
        records: n,
        wall,
        requests: count("requests"),
        rate_limited: count("rate_limited"),
        peak_heap,
        retained_heap,
        setup,
        capacity,
        routes,
        timeline,
    })
}

/// Runs every (size, direction) and prints the table.
pub async fn bench(env: &devhost::LocalEnv, sizes: &[usize], ways: &[Way]) -> Result<Vec<Figures>> {
    println!(
        "## Record sync (HubSpot contacts, 10 mapped fields, sandbox at 110 requests / 10 s)\n"
    );
    let mut runs = Vec::new();
    for &n in sizes {
        for &way in ways {
            runs.push((way, n, prepare(env).await?));
        }
    }
    let mut all = Vec::new();
    for (way, n, connected) in runs {
        let f = run(env, way, n, connected).await?;
        let routes: Vec<String> = f.routes.iter().map(|(r, n)| format!("{r} {n}")).collect();
        eprintln!(
            "bench: {} {n}: {:.2} s ({:.0} rec/s; set-up {:.1} s; provider requests: {}; to the first {:.2} s, after the last {:.2} s, lost in gaps {:.2} s, longest gap {:.2} s)",
            way.label(),
            f.wall.as_secs_f64(),
            f.rate(),
            f.setup.as_secs_f64(),
            routes.join(", "),
            f.timeline.lead.as_secs_f64(),
            f.timeline.tail.as_secs_f64(),
            f.timeline.lost.as_secs_f64(),
            f.timeline.longest.as_secs_f64(),
        );
        println!(
            "{} {n}, DynamoDB partitions:\n```\n{}```\n",
            way.label(),
            f.capacity.render()
        );
        all.push(f);
    }
    println!(
        "| direction | records | seconds | rec/s | ratio to 1,100 rec/s | HubSpot requests | 429s | peak heap above start | heap still held after | keys over a partition limit |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for f in &all {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.3} | {} | {} | {:.1} MiB | {:.1} MiB | {} |",
            f.way.label(),
            f.records,
            f.wall.as_secs_f64(),
            f.rate(),
            f.rate() / CEILING,
            f.requests,
            f.rate_limited,
            alloc::mib(f.peak_heap),
            alloc::mib(f.retained_heap),
            f.capacity.keys_over_limit,
        );
    }
    println!(
        "\nseconds: from the trigger request to the log's close (plan, queue, worker chunks, HubSpot at its limit, DynamoDB in moto). Goals: ≥ 0.9 of the ceiling; 1,000 records in under 2 s (the seed: 5 minutes)."
    );
    println!(
        "heap: the bench process's live heap (counting allocator) — the dev host with the worker, the in-process sandbox and this client; the sandbox's copy of pushed records is in 'still held'. Process max RSS (VmHWM) so far: {}\n",
        alloc::vm_hwm()
            .map(|b| format!("{:.0} MiB", alloc::mib(b)))
            .unwrap_or_else(|| "n/a".into())
    );
    Ok(all)
}
