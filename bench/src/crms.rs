//! Record sync with every CRM beside HubSpot (whose bench is [`crate::sync`]): N
//! contacts each way through the real path (`POST /v1/sync/trigger` → the sync queue →
//! the worker → the sandbox CRM, which enforces the CRM's documented limits), one
//! tenant and one CRM account of its own per run, connected through the OAuth flow.
//!
//! - **CRM → app** (pull): N contacts seeded in the CRM, a pull config; checked: the log
//!   counts N created and nothing failed, and the tenant holds N app contacts.
//! - **app → CRM** (push): N app contacts written straight to the store, a push config;
//!   checked: the CRM holds N contacts, each carrying its app id in the marker field.
//!
//! Each CRM's **ceiling** is the records per second its documented limits allow with
//! the dialect's page and batch sizes (the derivation is in the README); a CRM that
//! meters a daily allowance and no rate has none, and its figure is the requests (or
//! credits) a run spends of that allowance.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use conduit::app::App;
use conduit::config::Config;
use conduit::domain::{ConnectionId, SyncConfigId, TenantId};
use conduit::sync::config::{Configs, SyncConfig, SyncDirection};
use conduit::sync::runs::RunStatus;
use sandbox::providers::dynamics365_crm::DynTable;
use sandbox::providers::zoho_crm::ZohoModule;
use sandbox::{OAuthProvider, OAuthUser, PdObject, SfObject};
use serde_json::json;

use crate::alloc;
use crate::sync::{Way, contacts_config, oauth_connect, seed_app_records, trigger_and_wait};

/// A CRM the bench runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crm {
    /// Salesforce.
    Salesforce,
    /// Zoho CRM.
    Zoho,
    /// Dynamics 365 (Dataverse).
    Dynamics,
    /// Pipedrive.
    Pipedrive,
}

/// Every CRM of this bench.
pub const ALL: [Crm; 4] = [Crm::Salesforce, Crm::Zoho, Crm::Dynamics, Crm::Pipedrive];

/// Pipedrive's burst limit as the catalogue paces it: 80 requests per 2 s per token.
const PIPEDRIVE_REQUESTS_PER_S: f64 = 40.0;

/// Dynamics 365's service protection: 6,000 requests per user per 5 minutes (a
/// `$batch` is one), 1,200 s of execution time (the sandbox: 20 ms an operation).
const DYNAMICS_REQUESTS_PER_S: f64 = 6_000.0 / 300.0;

impl Crm {
    /// The catalogue provider.
    pub fn provider(self) -> &'static str {
        match self {
            Crm::Salesforce => "salesforce",
            Crm::Zoho => "zoho",
            Crm::Dynamics => "dynamics365",
            Crm::Pipedrive => "pipedrive",
        }
    }

    /// Parses a `--crms` name.
    pub fn parse(name: &str) -> Option<Self> {
        ALL.into_iter().find(|c| c.provider() == name)
    }

    fn name(self) -> &'static str {
        match self {
            Crm::Salesforce => "Salesforce",
            Crm::Zoho => "Zoho",
            Crm::Dynamics => "Dynamics 365",
            Crm::Pipedrive => "Pipedrive",
        }
    }

    /// (CRM field, app field) pairs synced (the app fields `seed_app_records` fills).
    fn fields(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Crm::Salesforce => &[
                ("Email", "email"),
                ("FirstName", "first_name"),
                ("LastName", "last_name"),
                ("Phone", "phone"),
                ("MobilePhone", "mobile_phone"),
                ("Title", "job_title"),
                ("MailingCity", "city"),
                ("MailingCountry", "country"),
            ],
            Crm::Zoho => &[
                ("Email", "email"),
                ("First_Name", "first_name"),
                ("Last_Name", "last_name"),
                ("Phone", "phone"),
                ("Mobile", "mobile_phone"),
                ("Title", "job_title"),
                ("Account_Name", "company_name"),
                ("Mailing_City", "city"),
                ("Mailing_Country", "country"),
            ],
            Crm::Dynamics => &[
                ("emailaddress1", "email"),
                ("firstname", "first_name"),
                ("lastname", "last_name"),
                ("telephone1", "phone"),
                ("mobilephone", "mobile_phone"),
                ("jobtitle", "job_title"),
                ("address1_city", "city"),
                ("address1_country", "country"),
            ],
            Crm::Pipedrive => &[
                ("email", "email"),
                ("first_name", "first_name"),
                ("last_name", "last_name"),
                ("phone", "phone"),
            ],
        }
    }

    /// Records per second the CRM's documented rate allows this way, if it has a rate.
    fn ceiling(self, way: Way) -> Option<f64> {
        match (self, way) {
            // Credits per rolling 24 hours and a concurrency cap; no rate.
            (Crm::Zoho, _) => None,
            // API requests per rolling 24 hours and 25 long-running requests at once;
            // no rate.
            (Crm::Salesforce, _) => None,
            // 500 rows a page; a `$batch` of 100 writes is one request (its 100
            // operations' 2 s of execution time leave a 5-minute window room for
            // 60,000 records; beyond, 200 records/s).
            (Crm::Dynamics, Way::Pull) => Some(DYNAMICS_REQUESTS_PER_S * 500.0),
            (Crm::Dynamics, Way::Push) => Some(DYNAMICS_REQUESTS_PER_S * 100.0),
            // 500 a page; v2 has no batch writes: a record a request at best.
            (Crm::Pipedrive, Way::Pull) => Some(PIPEDRIVE_REQUESTS_PER_S * 500.0),
            (Crm::Pipedrive, Way::Push) => Some(PIPEDRIVE_REQUESTS_PER_S),
        }
    }

    /// What the allowance a run spends is, for CRMs without a rate.
    fn allowance(self, way: Way, n: usize, requests: u64) -> String {
        match self {
            // 1 credit a call; writes 1 per 10 records (100 a call: 10); 2 for the
            // deleted records (not read by a first run).
            Crm::Zoho => {
                let credits = match way {
                    Way::Pull => requests,
                    Way::Push => requests + (n as u64).div_ceil(100) * 9,
                };
                format!(
                    "{credits} credits of 50,000 a day (Standard, no licences): {:.4}",
                    credits as f64 / 50_000.0
                )
            }
            // The org's 24-hour API request allocation (the catalogue's 15,000: a
            // Developer Edition's; Enterprise has 100,000 plus 1,000 a licence).
            Crm::Salesforce => format!(
                "{requests} API requests of 15,000 a day: {:.4}",
                requests as f64 / 15_000.0
            ),
            Crm::Dynamics | Crm::Pipedrive => format!("{requests} requests"),
        }
    }

    fn user(self, tenant: &str, n: u64) -> OAuthUser {
        let email = format!("{tenant}@bench.test");
        match self {
            Crm::Salesforce => OAuthUser {
                org_id: format!("00DBE{n:010}AAA"),
                ..OAuthUser::new(OAuthProvider::Salesforce, email)
            },
            Crm::Zoho => OAuthUser {
                org_id: format!("{}", 780_000_000 + n),
                ..OAuthUser::new(OAuthProvider::Zoho, email)
            },
            Crm::Dynamics => OAuthUser {
                environment_host: format!("bench-{n}.crm.dynamics.com"),
                ..OAuthUser::new(OAuthProvider::Dynamics365, email)
            },
            Crm::Pipedrive => OAuthUser {
                company_domain: format!("bench-pd-{n}"),
                company_id: 5_900_000 + n,
                ..OAuthUser::new(OAuthProvider::Pipedrive, email)
            },
        }
    }

    /// More of the OAuth start body (the environment's fields).
    fn start_fields(self, user: &OAuthUser) -> Option<serde_json::Value> {
        match self {
            Crm::Salesforce | Crm::Zoho | Crm::Pipedrive => None,
            Crm::Dynamics => {
                let org = user.environment_host.split('.').next().unwrap_or_default();
                Some(json!({"org": org, "crm_region": "crm"}))
            }
        }
    }

    fn seed(self, env: &devhost::LocalEnv, user: &OAuthUser, n: usize) {
        match self {
            Crm::Salesforce => {
                env.sandbox
                    .state()
                    .seed_salesforce(&user.org_id, SfObject::Contact, n);
            }
            Crm::Zoho => {
                env.sandbox
                    .state()
                    .seed_zoho(&user.org_id, ZohoModule::Contacts, n);
            }
            Crm::Dynamics => {
                env.sandbox.state().seed_dynamics_crm(
                    &user.environment_host,
                    DynTable::Contact,
                    n,
                    1,
                );
            }
            Crm::Pipedrive => {
                env.sandbox
                    .state()
                    .seed_pipedrive(&user.company_domain, PdObject::Persons, n);
            }
        }
    }

    /// (records, records carrying an app id in the marker) the CRM holds.
    fn held(self, env: &devhost::LocalEnv, user: &OAuthUser) -> (usize, usize) {
        match self {
            Crm::Salesforce => {
                let all = env
                    .sandbox
                    .state()
                    .salesforce_records(&user.org_id, SfObject::Contact);
                let marked = all
                    .iter()
                    .filter(|r| r.fields.get("Conduit_Id__c").is_some_and(|v| v.is_string()))
                    .count();
                (all.len(), marked)
            }
            Crm::Zoho => {
                let all = env
                    .sandbox
                    .state()
                    .zoho_records(&user.org_id, ZohoModule::Contacts);
                let marked = all
                    .iter()
                    .filter(|r| r.fields.get("Conduit_Id").is_some_and(|v| v.is_string()))
                    .count();
                (all.len(), marked)
            }
            Crm::Dynamics => {
                let all = env
                    .sandbox
                    .state()
                    .dyn_crm_records(&user.environment_host, DynTable::Contact);
                let marked = all
                    .iter()
                    .filter(|r| r.values.get("new_conduitid").is_some_and(|v| v.is_string()))
                    .count();
                (all.len(), marked)
            }
            Crm::Pipedrive => {
                let state = env.sandbox.state();
                let key = state
                    .pipedrive_field_key(&user.company_domain, PdObject::Persons, "Conduit ID")
                    .unwrap_or_default();
                let all: Vec<_> = state
                    .pipedrive_records(&user.company_domain, PdObject::Persons)
                    .into_iter()
                    .filter(|r| !r.deleted)
                    .collect();
                let marked = all
                    .iter()
                    .filter(|r| r.data["custom_fields"][key.as_str()].is_string())
                    .count();
                (all.len(), marked)
            }
        }
    }
}

static ACCOUNTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One run's figures.
#[derive(Debug, Clone)]
pub struct Figures {
    pub(crate) crm: Crm,
    pub(crate) way: Way,
    pub(crate) records: usize,
    pub(crate) wall: Duration,
    pub(crate) requests: u64,
    pub(crate) rate_limited: u64,
    pub(crate) peak_heap: usize,
    pub(crate) routes: std::collections::BTreeMap<String, u64>,
    /// The CRM account (a Salesforce org id).
    pub(crate) account: String,
}

impl Figures {
    pub(crate) fn rate(&self) -> f64 {
        self.records as f64 / self.wall.as_secs_f64()
    }
}

/// A tenant connected to a CRM account of its own through the OAuth flow.
struct Connected {
    tenant: TenantId,
    admin: String,
    connection: ConnectionId,
    user: OAuthUser,
}

async fn connect(env: &devhost::LocalEnv, crm: Crm) -> Result<Connected> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let suffix = SyncConfigId::generate().as_str()[5..].to_ascii_lowercase();
    let tenant = format!("bench-{}-{}", crm.provider(), &suffix[suffix.len() - 10..]);
    let n = ACCOUNTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let user = crm.user(&tenant, n);
    if crm == Crm::Dynamics {
        // The environment's own contacts, not the dispatch actions' stand-in.
        env.sandbox
            .state()
            .dyn_crm_serve_contacts(&user.environment_host, true);
    }
    let mut start = json!({});
    if let Some(fields) = crm.start_fields(&user) {
        start["fields"] = fields;
    }
    let (admin, connection, user) = oauth_connect(env, &http, &tenant, user, start).await?;
    Ok(Connected {
        tenant: TenantId::parse(&tenant)?,
        admin,
        connection,
        user,
    })
}

async fn insert_config(
    app: &App,
    crm: Crm,
    c: &Connected,
    direction: SyncDirection,
) -> Result<SyncConfig> {
    let config = contacts_config(
        &c.tenant,
        &c.connection,
        crm.provider(),
        direction,
        crm.fields(),
    )?;
    Configs::new(app.table.clone()).insert(&config).await?;
    Ok(config)
}

/// Syncs `n` contacts one way with a new account of `crm`; checks the end state.
pub(crate) async fn run(env: &devhost::LocalEnv, crm: Crm, way: Way, n: usize) -> Result<Figures> {
    let config = Config::from_map(&env.stack.function_env("SyncWorkerFunction")?)?;
    let app = App::with_aws(config, env.aws.clone())?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let c = connect(env, crm).await?;
    let direction = match way {
        Way::Pull => {
            crm.seed(env, &c.user, n);
            SyncDirection::Pull
        }
        Way::Push => {
            seed_app_records(&app, &c.tenant, n).await?;
            SyncDirection::Push
        }
    };
    let cfg = insert_config(&app, crm, &c, direction).await?;
    let calls_before = env.sandbox.state().calls_view().routes;
    let base = alloc::reset_peak();
    let t = Instant::now();
    // Generous: Pipedrive writes at most forty records a second.
    let timeout = Duration::from_secs(n as u64 / 2 + 180);
    let logs = trigger_and_wait(env, &http, &app, &c.admin, &c.tenant, &cfg.id, timeout).await?;
    let wall = t.elapsed();
    let peak_heap = alloc::peak().saturating_sub(base);
    let mut routes = env.sandbox.state().calls_view().routes;
    for (route, k) in &calls_before {
        if let Some(count) = routes.get_mut(route) {
            *count = count.saturating_sub(*k);
        }
    }
    routes.retain(|r, k| *k > 0 && r.starts_with(crm.provider()));
    let log = logs.first().context("no log")?;
    let count = |k: &str| log.counts.get(k).copied().unwrap_or(0);
    if log.status != RunStatus::Completed || count("failed") > 0 || count("created") != n as u64 {
        bail!(
            "{} {n}: the run ended {:?} with counts {:?} ({:?})",
            label(crm, way),
            log.status,
            log.counts,
            log.error
        );
    }
    if way == Way::Push {
        let (held, marked) = crm.held(env, &c.user);
        if held != n || marked != n {
            bail!(
                "{} {n}: the CRM holds {held} contacts, {marked} with an app id",
                label(crm, way)
            );
        }
    }
    Ok(Figures {
        crm,
        way,
        records: n,
        wall,
        requests: count("requests"),
        rate_limited: count("rate_limited"),
        peak_heap,
        routes,
        account: c.user.org_id.clone(),
    })
}

pub(crate) fn label(crm: Crm, way: Way) -> String {
    match way {
        Way::Pull => format!("{} → app", crm.name()),
        Way::Push => format!("app → {}", crm.name()),
    }
}

/// Runs `n` contacts each way for every CRM of `crms`; prints the table.
pub async fn bench(env: &devhost::LocalEnv, crms: &[Crm], n: usize) -> Result<Vec<Figures>> {
    println!("## Record sync with every CRM ({n} contacts each way)\n");
    let mut all = Vec::new();
    for &crm in crms {
        for way in [Way::Pull, Way::Push] {
            let f = run(env, crm, way, n).await?;
            let routes: Vec<String> = f.routes.iter().map(|(r, k)| format!("{r} {k}")).collect();
            eprintln!(
                "bench: {} {n}: {:.2} s ({:.0} rec/s; provider requests: {})",
                label(crm, way),
                f.wall.as_secs_f64(),
                f.rate(),
                routes.join(", ")
            );
            all.push(f);
        }
    }
    println!(
        "| direction | records | seconds | rec/s | ceiling (rec/s) | ratio | requests | 429s | allowance spent | peak heap |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for f in &all {
        let (ceiling, ratio, allowance) = match f.crm.ceiling(f.way) {
            Some(c) => (
                format!("{c:.0}"),
                format!("{:.3}", f.rate() / c),
                "—".into(),
            ),
            None => (
                "none (no rate)".into(),
                "—".into(),
                f.crm.allowance(f.way, f.records, f.requests),
            ),
        };
        println!(
            "| {} | {} | {:.2} | {:.0} | {ceiling} | {ratio} | {} | {} | {allowance} | {:.1} MiB |",
            label(f.crm, f.way),
            f.records,
            f.wall.as_secs_f64(),
            f.rate(),
            f.requests,
            f.rate_limited,
            alloc::mib(f.peak_heap),
        );
    }
    println!(
        "\nseconds: from the trigger request to the log's close (plan, queue, worker chunks, the sandbox CRM at its limits, DynamoDB in moto). Goal: ≥ 0.9 of each ceiling.\n"
    );
    Ok(all)
}
