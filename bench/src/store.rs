//! **Store-call floor** (`--only store`, `--calls N`): what one DynamoDB call costs this
//! process's CPU through the AWS SDK and Conduit's `Table`, on a thread of its own
//! running nothing else (a current-thread runtime, so the HTTP connection's socket work
//! is counted too), beside the same exchange sent bare with reqwest (the request's JSON
//! written by hand, no signing, no SDK orchestration). The dispatch bench's CPU per step
//! is mostly these calls; this row says how much of each is the SDK's.
//!
//! Calls, each `N` times one after another against moto: GetItem of a dispatch-sized
//! item (a 2 KB JSON document beside its keys, version and expiry), a conditional
//! PutItem of it (version = :v, as a dispatch's save), a TransactWriteItems of it and
//! one log entry (as a save with its log), and the bare GetItem.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use conduit::app::App;
use conduit::config::Config;
use conduit::store::{Keyed, Table, Write, to_item};
use serde::{Deserialize, Serialize};
use serde_json::json;

const DISPATCHER: &str = "EventDispatchFunction";
/// Items the calls go round.
const KEYS: u64 = 64;

#[derive(Serialize, Deserialize)]
struct Doc {
    version: u64,
    doc: String,
    ttl: i64,
}

/// The CPU time the calling thread has used (user and system).
fn thread_cpu() -> Duration {
    Duration::from_nanos(devhost::invoker::thread_cpu_ns())
}

/// A document the size and shape of a three-step dispatch's.
fn dispatch_doc(version: u64) -> Result<String> {
    let step = |i: u32| {
        json!({
            "integration_id": format!("int_01JD4Q8Z3V7N2K5M6P9R0S1T{i:02}"),
            "priority": i * 10,
            "status": "succeeded",
            "attempts": 1,
            "on_failure": "continue",
            "started_at": "2026-12-05T20:00:00.123Z",
            "finished_at": "2026-12-05T20:00:00.456Z",
            "duration_ms": 333,
            "request": {"method": "POST", "path": "/crm/v3/objects/calls", "body_bytes": 512},
            "external_id": format!("{}", 51_234_567_890_u64 + u64::from(i)),
            "external_url": "https://app.hubspot.com/contacts/12345/record/0-48/51234567890",
            "outputs": {"id": "51234567890", "url": "https://app.hubspot.com/x"},
            "key": format!("disp_01JD4Q8Z3V7N2K5M6P9R0S1T2U:{i}"),
        })
    };
    Ok(serde_json::to_string(&json!({
        "id": "disp_01JD4Q8Z3V7N2K5M6P9R0S1T2U",
        "tenant": "t_bench",
        "event_id": "evt-0000001",
        "event_type": "conversation_ended",
        "assistant_id": "asst_1",
        "status": "running",
        "version": version,
        "origin": "event",
        "created_at": "2026-12-05T20:00:00.000Z",
        "updated_at": "2026-12-05T20:00:00.500Z",
        "lease": {"holder": "sqs-8d3c2b1a-0f9e-4d7c-b6a5-948372615049", "until": 1_764_964_830_000_i64},
        "steps": [step(1), step(2), step(3)],
    }))?)
}

fn item(pk: &str, version: u64) -> Result<Keyed<Doc>> {
    Ok(Keyed {
        pk: pk.to_owned(),
        sk: "0".to_owned(),
        item: Doc {
            version,
            doc: dispatch_doc(version)?,
            ttl: 1_767_000_000,
        },
    })
}

/// CPU per call of `n` calls of `call`, after a few unmeasured ones.
async fn per_call<F, Fut>(n: usize, mut call: F) -> Result<Duration>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    for i in 0..50 {
        call(i).await?;
    }
    let before = thread_cpu();
    for i in 0..n {
        call(50 + i as u64).await?;
    }
    let spent = thread_cpu().saturating_sub(before);
    Ok(spent / u32::try_from(n.max(1)).unwrap_or(u32::MAX))
}

async fn measure(
    table: Table,
    endpoint: String,
    region: String,
    n: usize,
) -> Result<Vec<(&'static str, Duration)>> {
    let run = format!("bench-store-{}", std::process::id());
    // The writes go round KEYS items (the local stack holds each partition to
    // DynamoDB's 1,000 write units a second, as AWS does).
    let key = |what: &str, i: u64| format!("{run}#{what}#{}", i % KEYS);
    for k in 0..KEYS {
        for what in ["get", "save", "tx"] {
            table.put(&item(&key(what, k), 0)?).await?;
        }
    }
    let mut rows = Vec::new();

    let get = per_call(n, |i| {
        let (table, pk) = (&table, key("get", i));
        async move {
            let got: Option<Keyed<Doc>> = table.get(&pk, "0").await?;
            got.map(|_| ()).context("the item read is gone")
        }
    })
    .await?;
    rows.push(("GetItem (SDK)", get));

    let save = per_call(n, |i| {
        let (table, pk) = (&table, key("save", i));
        async move { Ok(table.replace(&item(&pk, i / KEYS + 1)?, i / KEYS).await?) }
    })
    .await?;
    rows.push(("PutItem if version = :v (SDK)", save));

    let tx = per_call(n, |i| {
        let (table, pk, log) = (&table, key("tx", i), key("log", i));
        async move {
            let log = item(&log, 0)?;
            Ok(table
                .transact(vec![
                    Write::Replace(to_item(&item(&pk, i / KEYS + 1)?)?, i / KEYS),
                    Write::Put(to_item(&log)?),
                ])
                .await?)
        }
    })
    .await?;
    rows.push(("TransactWriteItems, 2 items (SDK)", tx));

    let http = reqwest::Client::new();
    let body = serde_json::to_vec(&json!({
        "TableName": table.name(),
        "Key": {"pk": {"S": key("get", 0)}, "sk": {"S": "0"}},
        "ConsistentRead": true,
    }))?;
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=test/20261205/{region}/dynamodb/aws4_request, \
         SignedHeaders=host;x-amz-date;x-amz-target, Signature={}",
        "0".repeat(64)
    );
    let bare = per_call(n, |_| {
        let (http, endpoint, body, auth) = (&http, &endpoint, &body, &auth);
        async move {
            let resp = http
                .post(endpoint.as_str())
                .header("content-type", "application/x-amz-json-1.0")
                .header("x-amz-target", "DynamoDB_20120810.GetItem")
                .header("x-amz-date", "20261205T200000Z")
                .header("authorization", auth.as_str())
                .body(body.clone())
                .send()
                .await?;
            let status = resp.status();
            let json: serde_json::Value = resp.json().await?;
            if !status.is_success() || json.get("Item").is_none() {
                return Err(anyhow!("the bare GetItem was answered {status}: {json}"));
            }
            Ok(())
        }
    })
    .await?;
    rows.push(("GetItem, bare reqwest (no SDK)", bare));
    Ok(rows)
}

pub async fn bench(env: &devhost::LocalEnv, n: usize) -> Result<()> {
    let config = Config::from_map(&env.stack.function_env(DISPATCHER)?)?;
    let aws = env.aws.clone();
    let endpoint = env.aws_endpoint.clone();
    let region = aws
        .region()
        .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
    let rows = tokio::task::spawn_blocking(move || -> Result<_> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let app = App::with_aws(config, aws)?;
            measure(app.table.clone(), endpoint, region, n).await
        })
    })
    .await??;
    println!("## Store-call floor ({n} calls each, one thread, moto)\n");
    println!("| call | CPU per call | against the bare GetItem |");
    println!("|---|---|---|");
    let bare = rows.last().map_or(Duration::ZERO, |r| r.1);
    for (name, cpu) in &rows {
        println!(
            "| {name} | {:.3} ms | {:.2}× |",
            cpu.as_secs_f64() * 1000.0,
            cpu.as_secs_f64() / bare.as_secs_f64().max(1e-9)
        );
    }
    println!();
    Ok(())
}
