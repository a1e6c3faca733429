//! Deals with their associations (HubSpot): N deals each way through the real path
//! (trigger → queue → worker → the sandbox HubSpot at 110 requests / 10 s), each deal
//! associated with one company and one contact, ten deals to a company and to a
//! contact, with the companies and contacts in the same run.
//!
//! - **HubSpot → app**: N deals, N/10 companies and N/10 contacts seeded in a portal of
//!   its own, deal i associated with company i / 10 and contact i / 10 (v4 default
//!   types); a pull config of the three entities. Checked: every app deal's
//!   `company_id` and `contact_id` are the app ids the run gave its HubSpot company and
//!   contact.
//! - **app → HubSpot**: N/10 app companies and contacts and N app deals naming them; a
//!   push config. Checked: every HubSpot deal is associated with exactly the company
//!   and contact (found by domain and email) its app deal names.
//!
//! The figure against HubSpot's limit is the run's request rate over its 11 requests/s:
//! a deal's associations cost requests of their own (a pull reads them per page, a push
//! writes them with the create), so records/s alone says less than for contacts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use conduit::app::App;
use conduit::config::Config;
use conduit::domain::{ConnectionId, RecordId, TenantId, now};
use conduit::sync::config::{Configs, SyncDirection};
use conduit::sync::records::{Record, Records, Source};
use conduit::sync::runs::RunStatus;
use conduit::sync::schema::Entity;
use sandbox::{CrmObject, OAuthProvider, OAuthUser};
use serde_json::json;

use crate::alloc;
use crate::sync::{Way, contacts_config, oauth_connect, trigger_and_wait};

/// HubSpot's pace: 110 requests per rolling 10 s.
const REQUESTS_PER_S: f64 = 11.0;
/// Deals to a company and to a contact.
const PER_PARENT: usize = 10;

/// (HubSpot property, app field) per entity; stages and pipelines pass as HubSpot's
/// ids (no value map: the bench times the associations, not the maps).
const CONTACTS: [(&str, &str); 3] = [
    ("email", "email"),
    ("firstname", "first_name"),
    ("lastname", "last_name"),
];
const COMPANIES: [(&str, &str); 2] = [("name", "name"), ("domain", "domain")];
const DEALS: [(&str, &str); 7] = [
    ("dealname", "name"),
    ("amount", "amount"),
    ("closedate", "close_date"),
    ("dealstage", "stage"),
    ("pipeline", "pipeline"),
    ("associations.companies", "company_id"),
    ("associations.contacts", "contact_id"),
];

static PORTALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One run's figures.
struct Figures {
    way: Way,
    deals: usize,
    records: usize,
    wall: Duration,
    requests: u64,
    rate_limited: u64,
    peak_heap: usize,
    routes: Vec<String>,
}

/// Runs `n` deals each way; prints the table.
pub async fn bench(env: &devhost::LocalEnv, n: usize) -> Result<()> {
    let n = n.max(PER_PARENT);
    println!(
        "## Deals with their associations (HubSpot, {n} deals, {} companies and {} contacts each way)\n",
        n / PER_PARENT,
        n / PER_PARENT
    );
    let mut all = Vec::new();
    for way in [Way::Pull, Way::Push] {
        let f = run(env, way, n).await?;
        eprintln!(
            "bench: deals {} {n}: {:.2} s; provider requests: {}",
            label(way),
            f.wall.as_secs_f64(),
            f.routes.join(", ")
        );
        all.push(f);
    }
    println!(
        "| direction | deals | records in all | seconds | deals/s | HubSpot requests | requests per 100 deals | request rate / 11 per s | 429s | peak heap |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for f in &all {
        let secs = f.wall.as_secs_f64();
        println!(
            "| {} | {} | {} | {secs:.2} | {:.0} | {} | {:.1} | {:.3} | {} | {:.1} MiB |",
            label(f.way),
            f.deals,
            f.records,
            f.deals as f64 / secs,
            f.requests,
            f.requests as f64 * 100.0 / f.deals as f64,
            f.requests as f64 / secs / REQUESTS_PER_S,
            f.rate_limited,
            alloc::mib(f.peak_heap),
        );
    }
    println!(
        "\nseconds: from the trigger request to the close of the run's three logs (companies and contacts first, deals after them, as a run orders them). Goal: the request rate ≥ 0.9 of HubSpot's.\n"
    );
    Ok(())
}

fn label(way: Way) -> &'static str {
    match way {
        Way::Pull => "HubSpot → app",
        Way::Push => "app → HubSpot",
    }
}

async fn run(env: &devhost::LocalEnv, way: Way, n: usize) -> Result<Figures> {
    let config = Config::from_map(&env.stack.function_env("SyncWorkerFunction")?)?;
    let app = App::with_aws(config, env.aws.clone())?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let suffix = conduit::domain::SyncConfigId::generate().as_str()[5..].to_ascii_lowercase();
    let tenant_name = format!("bench-deals-{}", &suffix[suffix.len() - 10..]);
    let user = OAuthUser {
        hub_id: 950_000 + PORTALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        ..OAuthUser::new(OAuthProvider::Hubspot, format!("{tenant_name}@bench.test"))
    };
    let uses = json!({"uses": [
        "sync:contacts:bidirectional",
        "sync:companies:bidirectional",
        "sync:deals:bidirectional",
    ]});
    let (admin, connection, user) = oauth_connect(env, &http, &tenant_name, user, uses).await?;
    let portal = user.hub_id;
    let tenant = TenantId::parse(&tenant_name)?;
    let parents = n / PER_PARENT;
    let direction = match way {
        Way::Pull => {
            seed_portal(env, portal, n, parents);
            SyncDirection::Pull
        }
        Way::Push => {
            seed_app(&app, &tenant, n, parents).await?;
            SyncDirection::Push
        }
    };
    let config = deals_config(&tenant, &connection, direction)?;
    Configs::new(app.table.clone()).insert(&config).await?;

    let calls_before = env.sandbox.state().calls_view().routes;
    let base = alloc::reset_peak();
    let started = Instant::now();
    let timeout = Duration::from_secs_f64(n as f64 / 100.0 + 120.0);
    let logs = trigger_and_wait(env, &http, &app, &admin, &tenant, &config.id, timeout).await?;
    let wall = started.elapsed();
    let peak_heap = alloc::peak().saturating_sub(base);
    let mut routes = env.sandbox.state().calls_view().routes;
    for (route, k) in &calls_before {
        if let Some(count) = routes.get_mut(route) {
            *count = count.saturating_sub(*k);
        }
    }
    routes.retain(|_, k| *k > 0);

    let count = |entity: Entity, k: &str| {
        logs.iter()
            .filter(|l| l.entity == entity)
            .map(|l| l.counts.get(k).copied().unwrap_or(0))
            .sum::<u64>()
    };
    for log in &logs {
        let want = if log.entity == Entity::Deals {
            n
        } else {
            parents
        };
        if log.status != RunStatus::Completed
            || log.counts.get("failed").copied().unwrap_or(0) > 0
            || log.counts.get("created").copied().unwrap_or(0) != want as u64
        {
            bail!(
                "deals {} of {n}: the {} log ended {:?} with counts {:?} ({:?})",
                label(way),
                log.entity.as_str(),
                log.status,
                log.counts,
                log.error
            );
        }
    }
    match way {
        Way::Pull => check_pulled(env, &app, &tenant, &config.id, portal).await?,
        Way::Push => check_pushed(env, portal, n)?,
    }
    let all = [Entity::Contacts, Entity::Companies, Entity::Deals];
    Ok(Figures {
        way,
        deals: n,
        records: n + 2 * parents,
        wall,
        requests: all.iter().map(|e| count(*e, "requests")).sum(),
        rate_limited: all.iter().map(|e| count(*e, "rate_limited")).sum(),
        peak_heap,
        routes: routes.iter().map(|(r, k)| format!("{r} {k}")).collect(),
    })
}

/// A manual config of contacts, companies and deals with the bench's mappings.
fn deals_config(
    tenant: &TenantId,
    connection: &ConnectionId,
    direction: SyncDirection,
) -> Result<conduit::sync::config::SyncConfig> {
    let mut config = contacts_config(tenant, connection, "hubspot", direction, &CONTACTS)?;
    config.name = "hubspot deals (bench)".into();
    config.entities = vec![Entity::Contacts, Entity::Companies, Entity::Deals];
    for (entity, pairs) in [
        (Entity::Companies, &COMPANIES[..]),
        (Entity::Deals, &DEALS[..]),
    ] {
        let more = contacts_config(tenant, connection, "hubspot", direction, pairs)?;
        config
            .mappings
            .extend(more.mappings.into_iter().map(|mut m| {
                m.entity = entity;
                m
            }));
    }
    Ok(config)
}

/// `parents` companies and contacts and `n` deals in the portal, deal i associated
/// with company and contact i / 10.
fn seed_portal(env: &devhost::LocalEnv, portal: u64, n: usize, parents: usize) {
    let state = env.sandbox.state();
    let companies = state.seed_hubspot(portal, CrmObject::Companies, parents);
    let contacts = state.seed_hubspot(portal, CrmObject::Contacts, parents);
    let deals = state.seed_hubspot(portal, CrmObject::Deals, n);
    for (i, deal) in deals.iter().enumerate() {
        let p = (i / PER_PARENT).min(parents - 1);
        state.hubspot_set_deal_association(portal, deal, CrmObject::Companies, &companies[p]);
        state.hubspot_set_deal_association(portal, deal, CrmObject::Contacts, &contacts[p]);
    }
}

/// Every pulled deal names the app company and contact its HubSpot ones became (a
/// pulled record's app id is derived from the config and its CRM id).
async fn check_pulled(
    env: &devhost::LocalEnv,
    app: &App,
    tenant: &TenantId,
    config: &conduit::domain::SyncConfigId,
    portal: u64,
) -> Result<()> {
    let derived = |entity: Entity, crm_id: &str| {
        RecordId::derived(&[tenant.as_str(), config.as_str(), entity.as_str(), crm_id])
    };
    let state = env.sandbox.state();
    let deals = state.hubspot_records(portal, CrmObject::Deals);
    let records = Records::new(app.table.clone());
    let mut wrong = 0;
    for chunk in deals.chunks(100) {
        let ids: Vec<RecordId> = chunk
            .iter()
            .map(|d| derived(Entity::Deals, &d.id))
            .collect();
        let found: HashMap<String, Record> = records
            .get_many(tenant, Entity::Deals, &ids)
            .await?
            .into_iter()
            .map(|r| (r.id.to_string(), r))
            .collect();
        for (deal, id) in chunk.iter().zip(&ids) {
            let record = found.get(id.as_str());
            let named = |field: &str, object: CrmObject, entity: Entity| {
                let crm = state.hubspot_deal_associations(portal, &deal.id, object);
                let want = crm.first().map(|c| derived(entity, c).to_string());
                want.is_some() && record.and_then(|r| r.fields.get(field)) == want.as_ref()
            };
            if !(named("company_id", CrmObject::Companies, Entity::Companies)
                && named("contact_id", CrmObject::Contacts, Entity::Contacts))
            {
                wrong += 1;
            }
        }
    }
    if wrong > 0 {
        bail!(
            "deals HubSpot → app: {wrong} of {} deals without their company and contact",
            deals.len()
        );
    }
    Ok(())
}

/// Every HubSpot deal is associated with the company and contact its app deal names
/// (deal i: company and contact i / 10, found by their domain and email).
fn check_pushed(env: &devhost::LocalEnv, portal: u64, n: usize) -> Result<()> {
    let state = env.sandbox.state();
    let by = |object: CrmObject, property: &str| -> HashMap<String, String> {
        state
            .hubspot_records(portal, object)
            .into_iter()
            .filter_map(|r| Some((r.id, r.properties.get(property)?.clone())))
            .collect()
    };
    let domains = by(CrmObject::Companies, "domain");
    let emails = by(CrmObject::Contacts, "email");
    let deals = by(CrmObject::Deals, "dealname");
    if deals.len() != n {
        bail!(
            "deals app → HubSpot: the portal holds {} deals",
            deals.len()
        );
    }
    let mut wrong = 0;
    for (id, name) in &deals {
        let i: usize = name
            .strip_prefix("Bench deal ")
            .and_then(|i| i.parse().ok())
            .with_context(|| format!("a deal named {name:?}"))?;
        let p = i / PER_PARENT;
        let one = |object: CrmObject, values: &HashMap<String, String>, want: String| {
            let linked = state.hubspot_deal_associations(portal, id, object);
            linked.len() == 1 && values.get(&linked[0]) == Some(&want)
        };
        if !(one(CrmObject::Companies, &domains, company_domain(p))
            && one(CrmObject::Contacts, &emails, contact_email(p)))
        {
            wrong += 1;
        }
    }
    if wrong > 0 {
        bail!("deals app → HubSpot: {wrong} of {n} deals without their company and contact");
    }
    Ok(())
}

fn company_domain(p: usize) -> String {
    format!("company{p}.bench-deals.test")
}

fn contact_email(p: usize) -> String {
    format!("person.{p}@bench-deals.test")
}

/// `parents` app companies and contacts and `n` app deals naming them, as the records
/// API leaves them.
async fn seed_app(app: &App, tenant: &TenantId, n: usize, parents: usize) -> Result<()> {
    let at = now();
    let source = Source {
        origin: "app".into(),
        config_id: None,
        at,
    };
    let record = |entity: Entity, values: &[(&str, String)]| {
        let mut r = Record::new(RecordId::generate(), tenant.clone(), entity, at);
        for (field, v) in values {
            r.set(field, Some(v), &source);
        }
        r.version = 1;
        r.rev = 1;
        r
    };
    let companies: Vec<Record> = (0..parents)
        .map(|p| {
            record(
                Entity::Companies,
                &[
                    ("name", format!("Company {p}")),
                    ("domain", company_domain(p)),
                ],
            )
        })
        .collect();
    let contacts: Vec<Record> = (0..parents)
        .map(|p| {
            record(
                Entity::Contacts,
                &[
                    ("email", contact_email(p)),
                    ("first_name", format!("First{p}")),
                    ("last_name", format!("Last{p}")),
                ],
            )
        })
        .collect();
    let deals: Vec<Record> = (0..n)
        .map(|i| {
            let p = (i / PER_PARENT).min(parents - 1);
            record(
                Entity::Deals,
                &[
                    ("name", format!("Bench deal {i}")),
                    ("amount", (1_000 + (i % 97) * 250).to_string()),
                    ("close_date", format!("2027-{:02}-15", 1 + i % 12)),
                    ("stage", "appointmentscheduled".to_owned()),
                    ("pipeline", "default".to_owned()),
                    ("company_id", companies[p].id.to_string()),
                    ("contact_id", contacts[p].id.to_string()),
                ],
            )
        })
        .collect();
    let records = Records::new(app.table.clone());
    for batch in [companies, contacts, deals]
        .iter()
        .flat_map(|all| all.chunks(500))
    {
        crate::sync::put_new_retrying(&records, batch).await?;
    }
    Ok(())
}
