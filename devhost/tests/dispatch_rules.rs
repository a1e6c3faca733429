//! The dispatch pipeline of `template.yaml` against a real moto: the two EventBridge
//! rules are created on the stack's bus with their patterns and targets, an event put
//! on the bus reaches `DispatchQueue` as the whole EventBridge event exactly when a
//! rule matches it, bootstrapping again keeps one target per rule, and the dev host's
//! pollers drive the event dispatcher from that queue as Lambda's event source mapping
//! would (batch size, partial batch failures, concurrency) while its `due_retries`
//! schedule sends the template's input. Skipped, with a message, when no `moto_server`
//! is installed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_eventbridge::types::{PutEventsRequestEntry, Target};
use devhost::registry::EventResult;
use devhost::{
    FunctionRegistry, LocalEnv, LocalEnvOptions, LocalStack, MotoServer, StackOptions, bootstrap,
    moto_sdk_config,
};
use serde_json::{Value, json};

/// The shared moto's endpoint, or `None` (with a message) when moto is not installed.
async fn moto() -> Option<String> {
    if MotoServer::find_binary().is_none() {
        eprintln!("skipping: no moto_server (create .venv with moto[server] or set CONDUIT_VENV)");
        return None;
    }
    let endpoint = tokio::task::spawn_blocking(|| MotoServer::shared().map(MotoServer::endpoint))
        .await
        .expect("the moto start task")
        .expect("moto starts");
    Some(endpoint)
}

/// The repository's template bootstrapped as a fresh stack (no pollers: the queue is
/// read by the test).
async fn stack(endpoint: &str) -> LocalStack {
    let aws = moto_sdk_config(endpoint).await;
    let template = devhost::template::load_repo_template().unwrap();
    bootstrap(&template, &aws, &options()).await.unwrap()
}

fn options() -> StackOptions {
    StackOptions::new(format!(
        "d{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    ))
    .parameter("JwtIssuer", "http://127.0.0.1:3000/local-issuer")
    .parameter("JwtAudience", "conduit-local")
    .parameter("DashboardOrigins", "http://localhost:5173")
    .parameter("PublicBaseUrl", "http://127.0.0.1:3000")
}

/// The EventBridge event the sample `events/event-dispatch/{name}` carries in its
/// first record.
fn sample_envelope(name: &str) -> Value {
    let root = devhost::paths::repo_root().unwrap();
    let text = std::fs::read_to_string(root.join("events/event-dispatch").join(name)).unwrap();
    let batch: Value = serde_json::from_str(&text).unwrap();
    serde_json::from_str(batch["Records"][0]["body"].as_str().unwrap()).unwrap()
}

/// One entry for the bus: `source`, `detail-type`, `detail`.
fn entry(bus: &str, source: &str, detail_type: &str, detail: &Value) -> PutEventsRequestEntry {
    PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source(source)
        .detail_type(detail_type)
        .detail(detail.to_string())
        .build()
}

/// The events of the sample files plus the ones no dispatch rule matches, put on the
/// bus; returns the two that must arrive: (source, detail-type, detail).
async fn put_events(stack: &LocalStack) -> Vec<(String, String, Value)> {
    let bus = stack.ref_value("EventBus").unwrap();
    let product = sample_envelope("conversation-ended.json");
    let product_detail = product["detail"].clone();
    // The sample's detail is a valid schema-v1 product event.
    conduit::dispatch::event::ProductEvent::parse(&product_detail).unwrap();
    let completed = json!({"tenant_id": "demo", "config_id": "scfg_01jeq5r8x00000000000000001",
        "entity": "contacts", "log_id": "slog_01jeq5r8x00000000000000001"});
    let wanted = vec![
        (
            "conduit.product".to_owned(),
            "conversation_ended".to_owned(),
            product_detail.clone(),
        ),
        (
            "conduit.integrations".to_owned(),
            "integration.sync.run.completed".to_owned(),
            completed,
        ),
    ];
    let mut entries: Vec<PutEventsRequestEntry> = wanted
        .iter()
        .map(|(s, t, d)| entry(&bus, s, t, d))
        .collect();
    // Matched by neither rule: another detail-type of each source (the dispatcher's own
    // webhook event among them), and a dispatchable detail-type from another source.
    let other = json!({"tenant_id": "demo"});
    entries.push(entry(&bus, "conduit.product", "meeting_booked", &other));
    entries.push(entry(
        &bus,
        "conduit.integrations",
        "integration.connection.scopes_missing",
        &other,
    ));
    entries.push(entry(
        &bus,
        "conduit.integrations",
        "integration.webhook.endpoint.disabled",
        &other,
    ));
    entries.push(entry(
        &bus,
        "someone.else",
        "conversation_ended",
        &product_detail,
    ));
    let out = aws_sdk_eventbridge::Client::new(stack.sdk_config())
        .put_events()
        .set_entries(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count(), 0);
    wanted
}

/// Every message on the queue within `within` after the first `expected` arrived
/// (read and deleted).
async fn read_queue(stack: &LocalStack, logical_id: &str, expected: usize) -> Vec<Value> {
    let sqs = aws_sdk_sqs::Client::new(stack.sdk_config());
    let url = stack.ref_value(logical_id).unwrap();
    let mut bodies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut quiet_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= deadline || quiet_until.is_some_and(|q| now >= q) {
            break;
        }
        let out = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in out.messages() {
            bodies.push(serde_json::from_str(message.body().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        // Once the expected ones are in, keep listening a little for strays.
        if bodies.len() >= expected && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_millis(1500));
        }
    }
    bodies
}

#[tokio::test]
async fn matching_events_reach_the_dispatch_queue_as_whole_eventbridge_events() {
    let Some(endpoint) = moto().await else { return };
    let stack = stack(&endpoint).await;
    let bus = stack.ref_value("EventBus").unwrap();
    let rules = stack.event_rules();
    assert_eq!(
        rules.keys().collect::<Vec<_>>(),
        ["ConduitEventsRule", "ProductEventsRule"]
    );

    // Each rule as the template says: on the stack's bus, enabled, its pattern, one
    // target (the dispatch queue, dead letters to DispatchDLQ, the event as it is).
    let queue_arn = stack.get_att("DispatchQueue", "Arn").unwrap();
    let dlq_arn = stack.get_att("DispatchDLQ", "Arn").unwrap();
    let events = aws_sdk_eventbridge::Client::new(stack.sdk_config());
    let patterns = BTreeMap::from([
        (
            "ProductEventsRule",
            json!({"source": ["conduit.product"], "detail-type": ["conversation_ended",
                "contact_request", "escalation", "low_score", "kb_sync"]}),
        ),
        (
            "ConduitEventsRule",
            json!({"source": ["conduit.integrations"], "detail-type": [
                "integration.connection.reauth_required", "integration.sync.run.completed",
                "integration.sync.run.failed", "integration.sync.conflict.opened"]}),
        ),
    ]);
    for (id, pattern) in &patterns {
        let (rule_bus, name, arn) = &rules[*id];
        assert_eq!(rule_bus, &bus);
        assert_eq!(stack.ref_value(id).unwrap(), format!("{bus}|{name}"));
        assert_eq!(&stack.get_att(id, "Arn").unwrap(), arn);
        let described = events
            .describe_rule()
            .name(name)
            .event_bus_name(&bus)
            .send()
            .await
            .unwrap();
        assert_eq!(described.state().map(|s| s.as_str()), Some("ENABLED"));
        let got: Value = serde_json::from_str(described.event_pattern().unwrap()).unwrap();
        assert_eq!(&got, pattern, "{id}");
        let targets = events
            .list_targets_by_rule()
            .rule(name)
            .event_bus_name(&bus)
            .send()
            .await
            .unwrap();
        let [target] = targets.targets() else {
            panic!("{id}: one target, got {:?}", targets.targets())
        };
        assert_eq!(target.arn(), queue_arn);
        assert_eq!(
            target.dead_letter_config().and_then(|d| d.arn()),
            Some(dlq_arn.as_str())
        );
        assert!(target.input().is_none() && target.input_path().is_none());
        assert!(target.input_transformer().is_none());
    }

    let wanted = put_events(&stack).await;
    let mut arrived = read_queue(&stack, "DispatchQueue", wanted.len()).await;
    arrived.sort_by_key(|e| e["source"].as_str().unwrap_or_default().to_owned());
    let got: Vec<(String, String, Value)> = arrived
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_owned(),
                e["detail-type"].as_str().unwrap().to_owned(),
                e["detail"].clone(),
            )
        })
        .collect();
    let mut wanted = wanted;
    wanted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, wanted, "{arrived:#?}");
    for event in &arrived {
        // The whole envelope: EventBridge's id, version, time and region too (moto's
        // envelope has no `account`; AWS's does).
        assert!(
            event["id"].as_str().is_some_and(|id| !id.is_empty()),
            "{event}"
        );
        assert_eq!(event["version"], "0");
        assert!(event["time"].is_string(), "{event}");
        assert_eq!(event["region"], stack.region());
    }
    // Nothing was dead-lettered on the way.
    assert!(read_queue(&stack, "DispatchDLQ", 0).await.is_empty());
}

#[tokio::test]
async fn bootstrapping_again_keeps_exactly_the_templates_targets() {
    let Some(endpoint) = moto().await else { return };
    let aws = moto_sdk_config(&endpoint).await;
    let template = devhost::template::load_repo_template().unwrap();
    let options = options();
    let first = bootstrap(&template, &aws, &options).await.unwrap();
    let (bus, name, _) = first.event_rules()["ProductEventsRule"].clone();
    let events = aws_sdk_eventbridge::Client::new(&aws);
    // A target the template does not have (left over from an older template).
    events
        .put_targets()
        .rule(&name)
        .event_bus_name(&bus)
        .targets(
            Target::builder()
                .id("Leftover")
                .arn(first.get_att("DispatchDLQ", "Arn").unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let second = bootstrap(&template, &aws, &options).await.unwrap();
    assert_eq!(first.event_rules(), second.event_rules());
    for (_, (bus, name, _)) in second.event_rules() {
        let targets = events
            .list_targets_by_rule()
            .rule(&name)
            .event_bus_name(&bus)
            .send()
            .await
            .unwrap();
        let ids: Vec<&str> = targets.targets().iter().map(|t| t.id()).collect();
        assert_eq!(ids, ["DispatchQueue"], "{name}");
    }
}

/// What the probe standing in for the event dispatcher saw.
#[derive(Default)]
struct Seen {
    /// (message id, the EventBridge event of its body) of every record handed over.
    records: Mutex<Vec<(String, Value)>>,
    /// The batch sizes.
    batches: Mutex<Vec<usize>>,
    /// Events that were not SQS batches (the schedule's).
    other: Mutex<Vec<Value>>,
}

/// A probe registered as the `event-dispatch` binary: it records what the dev host
/// hands it, fails the first delivery of Conduit's event (reporting it in
/// `batchItemFailures`, as the dispatcher reports a step it must retry) and answers the
/// schedule with a count.
fn probe(seen: Arc<Seen>) -> FunctionRegistry {
    FunctionRegistry::new().register_event(
        "event-dispatch",
        move |_app: &conduit::app::App, event: Value| {
            let seen = seen.clone();
            Box::pin(async move {
                let Some(records) = event["Records"].as_array() else {
                    seen.other.lock().unwrap().push(event);
                    return EventResult::Ok(json!({"requeued": 0}));
                };
                seen.batches.lock().unwrap().push(records.len());
                let mut failures = Vec::new();
                for record in records {
                    let id = record["messageId"].as_str().unwrap().to_owned();
                    let body: Value =
                        serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
                    let mut all = seen.records.lock().unwrap();
                    let first = !all.iter().any(|(m, _)| *m == id);
                    if first && body["source"] == "conduit.integrations" {
                        failures.push(json!({"itemIdentifier": id}));
                    }
                    all.push((id, body));
                }
                EventResult::Ok(json!({"batchItemFailures": failures}))
            })
        },
    )
}

#[tokio::test]
async fn the_dev_host_drives_the_dispatcher_from_the_dispatch_queue() {
    let Some(endpoint) = moto().await else { return };
    let seen = Arc::new(Seen::default());
    let env = LocalEnv::start(LocalEnvOptions {
        aws_endpoint: Some(endpoint),
        functions: Some(probe(seen.clone())),
        sqs_retry_delay: Some(Duration::ZERO),
        ..LocalEnvOptions::default()
    })
    .await
    .unwrap();

    // The event source as the template sets it.
    let queues: Value = reqwest::get(format!("{}/_devhost/queues", env.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let source = queues["event_sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["function"] == "EventDispatchFunction")
        .unwrap_or_else(|| panic!("the dispatcher's event source is polled: {queues}"));
    assert_eq!(source["queue"], "DispatchQueue");
    assert_eq!(source["batch_size"], 10);
    assert_eq!(source["concurrency"], 10);
    assert_eq!(source["report_batch_item_failures"], true);

    let wanted = put_events(&env.stack).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    // Both events, and Conduit's twice (failed once, then redelivered).
    while seen.records.lock().unwrap().len() < wanted.len() + 1 {
        assert!(
            Instant::now() < deadline,
            "the dispatcher saw {:?}",
            seen.records.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.wait_queues_idle(Duration::from_secs(10)).await.unwrap();
    let records = seen.records.lock().unwrap().clone();
    let mut got: Vec<(String, String)> = records
        .iter()
        .map(|(_, e)| {
            (
                e["source"].as_str().unwrap().to_owned(),
                e["detail-type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "conduit.integrations".to_owned(),
                "integration.sync.run.completed".to_owned()
            ),
            (
                "conduit.integrations".to_owned(),
                "integration.sync.run.completed".to_owned()
            ),
            (
                "conduit.product".to_owned(),
                "conversation_ended".to_owned()
            ),
        ]
    );
    // The redelivery is the same message; the product event's was deleted at once.
    let conduit_ids: Vec<&String> = records
        .iter()
        .filter(|(_, e)| e["source"] == "conduit.integrations")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(conduit_ids[0], conduit_ids[1]);
    assert!(seen.batches.lock().unwrap().iter().all(|n| *n <= 10));
    assert!(env.dead_letters("DispatchQueue").await.unwrap().is_empty());

    // The due_retries schedule sends the template's Input.
    let result = env.run_schedule("EventDispatchFunction").await.unwrap();
    assert_eq!(result, json!({"requeued": 0}));
    assert_eq!(
        *seen.other.lock().unwrap(),
        [json!({"kind": "due_retries"})]
    );
    env.shutdown().await;
}
