//! Salesforce Bulk API 2.0: N contacts (default 100,000) each way through the real path
//! (trigger → queue → worker → the sandbox org), where a full pull is one query job (read
//! 2,000 records a page) and each 5,000-record push page one ingest job
//! (`shared/src/sync/crm/salesforce_bulk.rs`).
//!
//! The ratio is to the Bulk API 2.0 limits (developer guide, "Limits and Allocations"):
//! - **push**: 150,000,000 ingest records per rolling 24 hours, a rate of 1,736
//!   records/s sustained; the ratio is the run's records/s to it (≥ 1: the daily
//!   allowance, not Conduit, is what bounds a day's pushes). Also the share of the
//!   15,000 daily batches (one per 10,000 records of a job) and of the org's API
//!   requests the run spends.
//! - **pull**: query jobs are metered per job (10,000 a day) and by results volume
//!   (1 TB a day), not by records: a pass is one job; the figure is the share of those
//!   allowances it spends.

use anyhow::{Result, bail};

use crate::alloc;
use crate::crms::{self, Crm, label};
use crate::sync::Way;

/// Ingest records a day allows, per second.
const INGEST_RECORDS_PER_S: f64 = 150_000_000.0 / 86_400.0;

/// Runs `n` contacts each way through Bulk API 2.0; prints the table.
pub async fn bench(env: &devhost::LocalEnv, n: usize) -> Result<()> {
    println!("## Salesforce Bulk API 2.0 ({n} contacts each way)\n");
    println!(
        "| direction | records | seconds | rec/s | Bulk jobs | API requests | ratio to the Bulk limits | allowance spent | peak heap |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for way in [Way::Pull, Way::Push] {
        let f = crms::run(env, Crm::Salesforce, way, n).await?;
        let route = |r: &str| f.routes.get(r).copied().unwrap_or(0);
        let jobs = match way {
            Way::Pull => route(sandbox::providers::salesforce_crm::BULK_QUERY_CREATE),
            Way::Push => route(sandbox::providers::salesforce_crm::BULK_INGEST_CREATE),
        };
        if jobs == 0 {
            bail!("{}: no Bulk API job ran", label(f.crm, way));
        }
        let routes: Vec<String> = f.routes.iter().map(|(r, k)| format!("{r} {k}")).collect();
        eprintln!(
            "bench: {} {n} (Bulk): {:.2} s ({:.0} rec/s; provider requests: {})",
            label(f.crm, way),
            f.wall.as_secs_f64(),
            f.rate(),
            routes.join(", ")
        );
        let usage = env.sandbox.state().salesforce_bulk_usage(&f.account);
        let (ratio, spent) = match way {
            Way::Pull => (
                "— (metered per job and by volume)".to_owned(),
                format!(
                    "{} query jobs of {} a day: {:.5}",
                    usage.query_jobs.0,
                    usage.query_jobs.1,
                    usage.query_jobs.0 as f64 / usage.query_jobs.1 as f64
                ),
            ),
            Way::Push => (
                format!(
                    "{:.3} (of {:.0} rec/s)",
                    f.rate() / INGEST_RECORDS_PER_S,
                    INGEST_RECORDS_PER_S
                ),
                format!(
                    "{} records of {} a day: {:.5}; {} batches of {}: {:.5}",
                    usage.ingest_records.0,
                    usage.ingest_records.1,
                    usage.ingest_records.0 as f64 / usage.ingest_records.1 as f64,
                    usage.batches.0,
                    usage.batches.1,
                    usage.batches.0 as f64 / usage.batches.1 as f64
                ),
            ),
        };
        println!(
            "| {} | {} | {:.2} | {:.0} | {jobs} | {} ({:.4} of 15,000 a day) | {ratio} | {spent} | {:.1} MiB |",
            label(f.crm, way),
            f.records,
            f.wall.as_secs_f64(),
            f.rate(),
            f.requests,
            f.requests as f64 / 15_000.0,
            alloc::mib(f.peak_heap),
        );
    }
    println!(
        "\nseconds: from the trigger request to the log's close (plan, queue, worker chunks, the sandbox org's Bulk API with its 200 ms processing delay per job, DynamoDB in moto).\n"
    );
    Ok(())
}
