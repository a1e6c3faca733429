//! The dev host's SQS event sources and EventBridge Scheduler schedules against a real
//! moto, on a small template of their own (`fixtures/queues_and_schedules.yaml`) whose
//! functions are test handlers: batches, partial batch failures, the dead-letter queue,
//! crashed invocations, pausing, and Scheduler schedules created with the SDK, listed,
//! fired on demand and when due; and Lambda's recursive loop detection on a template
//! of its own (`fixtures/recursive_loops.yaml`): a function that queues its own next
//! hop (through Conduit's SQS publisher, as the sync worker queues its continuations)
//! runs a 20-hop chain only with `RecursiveLoop: Allow`, and without it the 17th
//! invocation is stopped and its message moved to the dead-letter queue. Skipped, with
//! a message, when no `moto_server` is installed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_scheduler::types::{FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Target};
use aws_sdk_sqs::types::MessageAttributeValue;
use devhost::registry::EventResult;
use devhost::{FunctionRegistry, LocalEnv, LocalEnvOptions, MotoServer};
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

fn fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/queues_and_schedules.yaml")
}

/// What the test functions saw.
#[derive(Default)]
struct Seen {
    /// Every batch: (message id, body, ApproximateReceiveCount) of each record.
    batches: Mutex<Vec<Vec<(String, Value, u64)>>>,
    /// Full events, for their shape.
    events: Mutex<Vec<Value>>,
    /// Attempts per message `id` (from the body).
    attempts: Mutex<BTreeMap<String, usize>>,
    /// Ids handled successfully.
    done: Mutex<Vec<String>>,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
    /// Events the sync-runs function received.
    triggers: Mutex<Vec<Value>>,
    /// The ids the fair-queue worker took, in the order it took them.
    fair_order: Mutex<Vec<String>>,
}

/// Bodies are `{"id": "m1", "fail": N, "sleep_ms": M}`: the worker fails a message its
/// first N attempts (reporting it in `batchItemFailures`) and sleeps M ms per batch.
/// `{"panic": true}` panics the whole batch. The plain worker fails its whole batch on
/// `"fail"` and otherwise reports a failure that must be ignored.
fn registry(seen: Arc<Seen>) -> FunctionRegistry {
    let worker = seen.clone();
    let plain = seen.clone();
    let trigger = seen.clone();
    let fair = seen;
    FunctionRegistry::new()
        .register_event(
            "test-fair-worker",
            move |_app: &conduit::app::App, event: Value| {
                let seen = fair.clone();
                Box::pin(async move {
                    for record in event["Records"].as_array().unwrap() {
                        let body: Value =
                            serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
                        let id = body["id"].as_str().unwrap().to_owned();
                        seen.fair_order.lock().unwrap().push(id);
                        let sleep = body["sleep_ms"].as_u64().unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(sleep)).await;
                    }
                    EventResult::Ok(json!({}))
                })
            },
        )
        .register_event(
            "test-worker",
            move |_app: &conduit::app::App, event: Value| {
                let seen = worker.clone();
                Box::pin(async move {
                    let now = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.most_at_once.fetch_max(now, Ordering::SeqCst);
                    seen.events.lock().unwrap().push(event.clone());
                    let mut batch = Vec::new();
                    let mut failures = Vec::new();
                    let mut sleep = 0;
                    let mut panic = false;
                    for record in event["Records"].as_array().unwrap() {
                        let message_id = record["messageId"].as_str().unwrap().to_owned();
                        let body: Value =
                            serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
                        let receives = record["attributes"]["ApproximateReceiveCount"]
                            .as_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        let id = body["id"].as_str().unwrap().to_owned();
                        let attempt = {
                            let mut attempts = seen.attempts.lock().unwrap();
                            let n = attempts.entry(id.clone()).or_default();
                            *n += 1;
                            *n
                        };
                        sleep = sleep.max(body["sleep_ms"].as_u64().unwrap_or(0));
                        panic |= body["panic"] == true;
                        if attempt as u64 <= body["fail"].as_u64().unwrap_or(0) {
                            failures.push(json!({"itemIdentifier": message_id}));
                        } else {
                            seen.done.lock().unwrap().push(id.clone());
                        }
                        batch.push((message_id, body, receives));
                    }
                    seen.batches.lock().unwrap().push(batch);
                    tokio::time::sleep(Duration::from_millis(sleep)).await;
                    seen.running.fetch_sub(1, Ordering::SeqCst);
                    if panic {
                        panic!("the test worker panics on request");
                    }
                    EventResult::Ok(json!({ "batchItemFailures": failures }))
                })
            },
        )
        .register_event(
            "test-plain-worker",
            move |_app: &conduit::app::App, event: Value| {
                let seen = plain.clone();
                Box::pin(async move {
                    let mut fail = false;
                    for record in event["Records"].as_array().unwrap() {
                        let body: Value =
                            serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
                        let id = body["id"].as_str().unwrap().to_owned();
                        *seen.attempts.lock().unwrap().entry(id.clone()).or_default() += 1;
                        fail |= body["fail"] == true;
                        if !fail {
                            seen.done.lock().unwrap().push(id);
                        }
                    }
                    if fail {
                        return EventResult::Err("the plain worker fails its batch".into());
                    }
                    let first = event["Records"][0]["messageId"].clone();
                    EventResult::Ok(json!({ "batchItemFailures": [{ "itemIdentifier": first }] }))
                })
            },
        )
        .register_event(
            "sync-runs",
            move |_app: &conduit::app::App, event: Value| {
                let seen = trigger.clone();
                Box::pin(async move {
                    seen.triggers.lock().unwrap().push(event.clone());
                    EventResult::Ok(json!({ "triggered": 1 }))
                })
            },
        )
}

async fn start(endpoint: String, seen: Arc<Seen>, options: LocalEnvOptions) -> LocalEnv {
    LocalEnv::start(LocalEnvOptions {
        aws_endpoint: Some(endpoint),
        template: Some(fixture()),
        functions: Some(registry(seen)),
        ..options
    })
    .await
    .expect("the local environment starts")
}

async fn send(env: &LocalEnv, queue: &str, bodies: &[Value]) {
    let sqs = aws_sdk_sqs::Client::new(&env.aws);
    let url = env.stack.ref_value(queue).unwrap();
    for body in bodies {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body.to_string())
            .message_attributes(
                "kind",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("test")
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
}

fn attempts(seen: &Seen, id: &str) -> usize {
    seen.attempts.lock().unwrap().get(id).copied().unwrap_or(0)
}

#[tokio::test]
async fn batches_partial_failures_and_the_dead_letter_queue() {
    let Some(endpoint) = moto().await else { return };
    let seen = Arc::new(Seen::default());
    let env = start(
        endpoint,
        seen.clone(),
        LocalEnvOptions {
            sqs_retry_delay: Some(Duration::ZERO),
            ..LocalEnvOptions::default()
        },
    )
    .await;
    let bodies: Vec<Value> = (0..12)
        .map(|i| match i {
            2 => json!({"id": "m2", "fail": 1}),
            4 => json!({"id": "m4", "fail": 1000}),
            7 => json!({"id": "m7", "fail": 2, "sleep_ms": 200}),
            i => json!({"id": format!("m{i}"), "sleep_ms": 100}),
        })
        .collect();
    send(&env, "WorkQueue", &bodies).await;
    env.wait_queues_idle(Duration::from_secs(20)).await.unwrap();

    // Everything but m4 was handled once successfully; m2 and m7 after their failures.
    let mut done = seen.done.lock().unwrap().clone();
    done.sort();
    let mut wanted: Vec<String> = (0..12)
        .filter(|i| *i != 4)
        .map(|i| format!("m{i}"))
        .collect();
    wanted.sort();
    assert_eq!(done, wanted);
    assert_eq!(attempts(&seen, "m2"), 2);
    assert_eq!(attempts(&seen, "m7"), 3);
    assert_eq!(attempts(&seen, "m0"), 1);
    // m4 failed maxReceiveCount (3) times, then SQS moved it to the dead-letter queue.
    assert_eq!(attempts(&seen, "m4"), 3);
    let dead = env.dead_letters("WorkQueue").await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let dead_body: Value = serde_json::from_str(&dead[0]).unwrap();
    assert_eq!(dead_body["id"], "m4");
    // Peeking leaves it there; the DLQ can be named directly; draining empties it.
    assert_eq!(env.dead_letters("WorkDeadLetterQueue").await.unwrap(), dead);
    assert_eq!(env.drain_dead_letters("WorkQueue").await.unwrap(), dead);
    assert!(env.dead_letters("WorkQueue").await.unwrap().is_empty());

    // Batches of at most BatchSize, at most MaximumConcurrency at once; redeliveries
    // count their receives.
    let batches = seen.batches.lock().unwrap().clone();
    assert!(
        batches.iter().all(|b| !b.is_empty() && b.len() <= 5),
        "{batches:?}"
    );
    assert!(seen.most_at_once.load(Ordering::SeqCst) <= 2);
    let receives: Vec<u64> = batches
        .iter()
        .flatten()
        .filter(|(_, body, _)| body["id"] == "m7")
        .map(|(_, _, n)| *n)
        .collect();
    assert_eq!(receives, [1, 2, 3]);

    // The event is Lambda's.
    let event = seen.events.lock().unwrap()[0].clone();
    let record = &event["Records"][0];
    let queue_arn = env.stack.get_att("WorkQueue", "Arn").unwrap();
    assert_eq!(record["eventSource"], "aws:sqs");
    assert_eq!(record["eventSourceARN"], queue_arn.as_str());
    assert_eq!(record["awsRegion"], "us-east-1");
    assert!(record["receiptHandle"].is_string() && record["md5OfBody"].is_string());
    for attribute in [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "ApproximateFirstReceiveTimestamp",
        "SenderId",
    ] {
        assert!(
            record["attributes"][attribute].is_string(),
            "{attribute}: {record}"
        );
    }
    assert_eq!(
        record["messageAttributes"]["kind"],
        json!({"stringValue": "test", "stringListValues": [], "binaryListValues": [], "dataType": "String"})
    );
    let parsed: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_value(event).unwrap();
    assert!(!parsed.records.is_empty());

    let depth = env.queue_depth("WorkQueue").await.unwrap();
    assert!(depth.is_empty(), "{depth:?}");
    let report: Value = reqwest::get(format!("{}/_devhost/queues", env.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let work = report["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "WorkQueue")
        .unwrap();
    assert_eq!(work["visible"], 0, "{report}");
    assert_eq!(work["polled_by"], json!(["WorkerFunction"]), "{report}");
    let source = report["event_sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["function"] == "WorkerFunction")
        .unwrap();
    assert_eq!(source["concurrency"], 2, "{report}");
    assert_eq!(
        source["messages"],
        batches.iter().map(Vec::len).sum::<usize>(),
        "{report}"
    );
    assert_eq!(source["failed_messages"], 1 + 2 + 3, "{report}");
    env.shutdown().await;
}

#[tokio::test]
async fn errors_fail_whole_batches_and_failures_need_report_batch_item_failures() {
    let Some(endpoint) = moto().await else { return };
    let seen = Arc::new(Seen::default());
    let env = start(
        endpoint,
        seen.clone(),
        LocalEnvOptions {
            sqs_retry_delay: Some(Duration::ZERO),
            ..LocalEnvOptions::default()
        },
    )
    .await;
    // The plain worker reports a failure, which is ignored: everything is deleted.
    send(
        &env,
        "PlainQueue",
        &[json!({"id": "p1"}), json!({"id": "p2"})],
    )
    .await;
    env.wait_queues_idle(Duration::from_secs(10)).await.unwrap();
    assert_eq!(attempts(&seen, "p1"), 1);
    assert_eq!(attempts(&seen, "p2"), 1);

    // An error fails the whole batch: nothing deleted, all delivered again; with no
    // redrive policy it comes back until the handler stops failing. Pause so the
    // message is not picked up before the test changes its mind.
    env.pause_pollers();
    send(&env, "PlainQueue", &[json!({"id": "p3", "fail": true})]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(attempts(&seen, "p3"), 0, "paused pollers invoke nothing");
    // Visible, or held by a poller whose receive was under way.
    let depth = env.queue_depth("PlainQueue").await.unwrap();
    assert_eq!(depth.visible + depth.in_flight, 1, "{depth:?}");
    let err = env
        .wait_queues_idle(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("PlainQueue visible="), "{err}");
    env.resume_pollers();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while attempts(&seen, "p3") < 3 {
        assert!(std::time::Instant::now() < deadline, "p3 was not retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stop it failing: purge and check the worker is left idle.
    let sqs = aws_sdk_sqs::Client::new(&env.aws);
    env.pause_pollers();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sqs.purge_queue()
        .queue_url(env.stack.ref_value("PlainQueue").unwrap())
        .send()
        .await
        .unwrap();
    env.resume_pollers();
    env.wait_queues_idle(Duration::from_secs(10)).await.unwrap();

    // A panic fails the batch too (the worker reports ReportBatchItemFailures).
    send(
        &env,
        "WorkQueue",
        &[json!({"id": "w1", "panic": true, "fail": 0})],
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while attempts(&seen, "w1") < 3 {
        assert!(std::time::Instant::now() < deadline, "w1 was not retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.wait_queues_idle(Duration::from_secs(10)).await.unwrap();
    let dead = env.drain_dead_letters("WorkQueue").await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    env.shutdown().await;
}

#[tokio::test]
async fn killed_invocations_are_delivered_again() {
    let Some(endpoint) = moto().await else { return };
    let seen = Arc::new(Seen::default());
    let env = start(
        endpoint,
        seen.clone(),
        LocalEnvOptions {
            sqs_retry_delay: Some(Duration::ZERO),
            ..LocalEnvOptions::default()
        },
    )
    .await;
    // Killed mid-run: the handler (sleeping 600 ms) is cancelled at 100 ms.
    env.kill_next_invocations("test-worker", 1, Duration::from_millis(100));
    send(&env, "WorkQueue", &[json!({"id": "k1", "sleep_ms": 600})]).await;
    env.wait_queues_idle(Duration::from_secs(10)).await.unwrap();
    assert_eq!(attempts(&seen, "k1"), 2);
    let receives: Vec<u64> = seen
        .batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|(_, _, n)| *n)
        .collect();
    assert_eq!(receives, [1, 2]);
    // The first run was cancelled in its sleep: it never left the handler.
    assert_eq!(seen.running.load(Ordering::SeqCst), 1);

    // Killed after it finished: its result is thrown away all the same.
    env.kill_next_invocations("test-worker", 2, Duration::from_millis(200));
    send(&env, "WorkQueue", &[json!({"id": "k2"})]).await;
    env.wait_queues_idle(Duration::from_secs(10)).await.unwrap();
    assert_eq!(attempts(&seen, "k2"), 3);
    assert!(env.dead_letters("WorkQueue").await.unwrap().is_empty());
    env.shutdown().await;
}

#[tokio::test]
async fn sqs_events_run_through_invoke_and_polling_can_be_off() {
    let Some(endpoint) = moto().await else { return };
    let seen = Arc::new(Seen::default());
    let env = start(
        endpoint,
        seen.clone(),
        LocalEnvOptions {
            poll_queues: false,
            ..LocalEnvOptions::default()
        },
    )
    .await;
    // No pollers: the message stays, and there is nothing to wait for.
    send(&env, "WorkQueue", &[json!({"id": "i0"})]).await;
    env.wait_queues_idle(Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(attempts(&seen, "i0"), 0);
    assert_eq!(env.queue_depth("WorkQueue").await.unwrap().visible, 1);

    // `devhost invoke` on an SQS event file, as for any event function.
    let event = json!({"Records": [{
        "messageId": "19dd0b57-b21e-4ac1-bd88-01bbb068cb78",
        "receiptHandle": "MessageReceiptHandle",
        "body": "{\"id\":\"i1\",\"fail\":1}",
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1523232000000", "SenderId": "123456789012", "ApproximateFirstReceiveTimestamp": "1523232000001"},
        "messageAttributes": {},
        "md5OfBody": "7b270e59b47ff90a553787216d55d91d",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:MyQueue",
        "awsRegion": "us-east-1"
    }]});
    let result = devhost::invoke::invoke(
        &env.stack,
        &registry(seen.clone()),
        "WorkerFunction",
        &event.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(
        result,
        json!({"batchItemFailures": [{"itemIdentifier": "19dd0b57-b21e-4ac1-bd88-01bbb068cb78"}]})
    );
    // A function with an HTTP handler too takes HTTP API requests through it.
    let both = registry(seen.clone()).register("sync-runs", |_app, _req| {
        Box::pin(async {
            Ok(lambda_http::Response::builder()
                .status(202)
                .body(lambda_http::Body::Empty)
                .unwrap())
        })
    });
    let request = std::fs::read_to_string(
        devhost::paths::repo_root()
            .unwrap()
            .join("events/credentials/list-providers.json"),
    )
    .unwrap();
    let resp = devhost::invoke::invoke(&env.stack, &both, "sync-runs", &request)
        .await
        .unwrap();
    assert_eq!(resp["statusCode"], 202, "{resp}");
    let result =
        devhost::invoke::invoke(&env.stack, &both, "sync-runs", r#"{"sync_config_id":"c"}"#)
            .await
            .unwrap();
    assert_eq!(result, json!({"triggered": 1}));

    let err = env.queue_depth("NoSuchQueue").await.unwrap_err();
    assert!(err.to_string().contains("WorkQueue"), "{err}");
    env.shutdown().await;
}

fn create_schedule(
    env: &LocalEnv,
    name: &str,
    expression: &str,
    target_arn: &str,
    input: Option<&str>,
) -> aws_sdk_scheduler::operation::create_schedule::builders::CreateScheduleFluentBuilder {
    let client = aws_sdk_scheduler::Client::new(&env.aws);
    let target = Target::builder()
        .arn(target_arn)
        .role_arn(env.stack.get_att("SyncSchedulerRole", "Arn").unwrap())
        .set_input(input.map(str::to_owned))
        .build()
        .unwrap();
    client
        .create_schedule()
        .group_name(env.stack.ref_value("SyncScheduleGroup").unwrap())
        .name(name)
        .schedule_expression(expression)
        .flexible_time_window(
            FlexibleTimeWindow::builder()
                .mode(FlexibleTimeWindowMode::Off)
                .build()
                .unwrap(),
        )
        .target(target)
}

#[tokio::test]
async fn scheduler_schedules_are_listed_and_fired() {
    let Some(endpoint) = moto().await else { return };
    let seen = Arc::new(Seen::default());
    let env = start(endpoint, seen.clone(), LocalEnvOptions::default()).await;
    let stack = env.stack.stack_name().to_owned();

    // What the sync-runs function is told, through its environment.
    let vars = env.stack.function_env("SyncRunsFunction").unwrap();
    let group = format!("{stack}-sync");
    assert_eq!(vars["CONDUIT_SYNC_SCHEDULE_GROUP"], group);
    assert_eq!(
        vars["CONDUIT_SYNC_SCHEDULER_ROLE_ARN"],
        format!("arn:aws:iam::123456789012:role/{stack}-SyncSchedulerRole")
    );
    let trigger_arn = format!("arn:aws:lambda:us-east-1:123456789012:function:{stack}-sync-runs");
    assert_eq!(vars["CONDUIT_SYNC_RUNS_ARN"], trigger_arn);
    assert_eq!(
        env.stack.get_att("SyncRunsFunction", "Arn").unwrap(),
        trigger_arn
    );
    assert!(
        env.stack
            .get_att("SyncScheduleGroup", "Arn")
            .unwrap()
            .ends_with(&format!(":schedule-group/{group}"))
    );

    // Created with the SDK, as the configuration API will.
    let input =
        r#"{"tenant_id":"demo","sync_config_id":"cfg-1","at":"<aws.scheduler.scheduled-time>"}"#;
    let created = create_schedule(&env, "cfg-1", "rate(1 hour)", &trigger_arn, Some(input))
        .state(ScheduleState::Enabled)
        .send()
        .await
        .unwrap();
    assert!(
        created
            .schedule_arn()
            .ends_with(&format!("schedule/{group}/cfg-1"))
    );
    create_schedule(
        &env,
        "nowhere",
        "cron(0 3 * * ? *)",
        "arn:aws:lambda:us-east-1:123456789012:function:nope",
        None,
    )
    .send()
    .await
    .unwrap();

    let listed = env.scheduler_schedules().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:#?}");
    let cfg = &listed[0];
    assert_eq!(
        (cfg.group.as_str(), cfg.name.as_str()),
        (group.as_str(), "cfg-1")
    );
    assert_eq!(cfg.expression, "rate(1 hour)");
    assert_eq!(cfg.state, "ENABLED");
    assert_eq!(cfg.target_arn, trigger_arn);
    assert_eq!(cfg.input.as_deref(), Some(input));
    assert_eq!(cfg.function.as_deref(), Some("SyncRunsFunction"));
    assert_eq!(listed[1].name, "nowhere");
    assert_eq!(listed[1].function, None);

    // Fired on demand, by the group's logical id or its name.
    let result = env
        .fire_scheduler_schedule("SyncScheduleGroup", "cfg-1")
        .await
        .unwrap();
    assert_eq!(result, json!({"triggered": 1}));
    env.fire_scheduler_schedule(&group, "cfg-1").await.unwrap();
    let triggers = seen.triggers.lock().unwrap().clone();
    assert_eq!(triggers.len(), 2);
    assert_eq!(triggers[0]["sync_config_id"], "cfg-1");
    assert_eq!(triggers[0]["tenant_id"], "demo");
    assert!(
        triggers[0]["at"].as_str().unwrap().ends_with('Z'),
        "{}",
        triggers[0]
    );
    // An unknown target is an error, not a crash.
    let err = env
        .fire_scheduler_schedule("SyncScheduleGroup", "nowhere")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no function of the stack"),
        "{err}"
    );
    assert!(
        env.fire_scheduler_schedule("SyncScheduleGroup", "missing")
            .await
            .is_err()
    );

    // Updated and deleted with the SDK.
    let client = aws_sdk_scheduler::Client::new(&env.aws);
    let target = Target::builder()
        .arn(&trigger_arn)
        .role_arn(env.stack.get_att("SyncSchedulerRole", "Arn").unwrap())
        .input(input)
        .build()
        .unwrap();
    client
        .update_schedule()
        .group_name(&group)
        .name("cfg-1")
        .schedule_expression("rate(2 hours)")
        .flexible_time_window(
            FlexibleTimeWindow::builder()
                .mode(FlexibleTimeWindowMode::Off)
                .build()
                .unwrap(),
        )
        .target(target)
        .state(ScheduleState::Disabled)
        .send()
        .await
        .unwrap();
    let listed = env.scheduler_schedules().await.unwrap();
    assert_eq!(listed[0].state, "DISABLED");
    assert_eq!(listed[0].expression, "rate(2 hours)");
    client
        .delete_schedule()
        .group_name(&group)
        .name("nowhere")
        .send()
        .await
        .unwrap();
    assert_eq!(env.scheduler_schedules().await.unwrap().len(), 1);
    env.shutdown().await;
}

#[tokio::test]
async fn due_scheduler_schedules_fire_when_schedules_run() {
    let Some(endpoint) = moto().await else { return };
    let seen = Arc::new(Seen::default());
    let env = start(
        endpoint,
        seen.clone(),
        LocalEnvOptions {
            run_schedules: true,
            schedule_every: Some(Duration::from_secs(1)),
            ..LocalEnvOptions::default()
        },
    )
    .await;
    let stack = env.stack.stack_name().to_owned();
    let trigger_arn = format!("arn:aws:lambda:us-east-1:123456789012:function:{stack}-sync-runs");

    // rate(…) at the demo period; at(…) two seconds from now (UTC); a disabled one and
    // one with an unknown target never reach the function.
    create_schedule(
        &env,
        "rate",
        "rate(1 hour)",
        &trigger_arn,
        Some(r#"{"which":"rate"}"#),
    )
    .send()
    .await
    .unwrap();
    let at = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .unwrap();
    create_schedule(
        &env,
        "once",
        &format!("at({at})"),
        &trigger_arn,
        Some(r#"{"which":"at"}"#),
    )
    .action_after_completion(aws_sdk_scheduler::types::ActionAfterCompletion::Delete)
    .send()
    .await
    .unwrap();
    create_schedule(
        &env,
        "off",
        "rate(1 minute)",
        &trigger_arn,
        Some(r#"{"which":"off"}"#),
    )
    .state(ScheduleState::Disabled)
    .send()
    .await
    .unwrap();
    create_schedule(
        &env,
        "lost",
        "rate(1 minute)",
        "arn:aws:lambda:us-east-1:123456789012:function:nope",
        None,
    )
    .send()
    .await
    .unwrap();

    let count = |which: &str| {
        seen.triggers
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["which"] == which)
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count("rate") < 2 || count("at") < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "fired: {:?}",
            seen.triggers.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count("at"), 1, "at() fires once");
    assert_eq!(count("off"), 0);
    // The one-time schedule deleted itself (ActionAfterCompletion: DELETE).
    let names: Vec<String> = env
        .scheduler_schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["lost", "off", "rate"]);
    env.shutdown().await;
}

/// The length of the recursive-loop test's chain: more than Lambda's 16.
const HOPS: u64 = 20;

/// A relay's message.
#[derive(serde::Serialize)]
struct Hop {
    hop: u64,
    until: u64,
}

impl conduit::queue::TenantWork for Hop {
    fn tenant(&self) -> &str {
        "relay"
    }
}

/// Each hop a relay ran: (hop, the `AWSTraceHeader` its message carried), by binary.
type Hops = Arc<Mutex<BTreeMap<&'static str, Vec<(u64, Option<String>)>>>>;

/// A relay: records its hop and, below `until`, sends the next one to its queue.
fn relay(
    binary: &'static str,
    hops: Hops,
) -> impl for<'a> Fn(&'a conduit::app::App, Value) -> futures::future::BoxFuture<'a, EventResult>
+ Send
+ Sync
+ 'static {
    move |app: &conduit::app::App, event: Value| {
        let hops = hops.clone();
        Box::pin(async move {
            for record in event["Records"].as_array().unwrap() {
                let body: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
                let hop = body["hop"].as_u64().unwrap();
                let trace = record["attributes"]["AWSTraceHeader"]
                    .as_str()
                    .map(str::to_owned);
                hops.lock()
                    .unwrap()
                    .entry(binary)
                    .or_default()
                    .push((hop, trace));
                let until = body["until"].as_u64().unwrap();
                if hop < until {
                    conduit::queue::sync_queue(app)?
                        .send(&Hop {
                            hop: hop + 1,
                            until,
                        })
                        .await?;
                }
            }
            EventResult::Ok(json!({}))
        })
    }
}

#[tokio::test]
async fn a_20_hop_chain_runs_only_with_recursive_loop_allow() {
    let Some(endpoint) = moto().await else { return };
    let hops: Hops = Arc::default();
    let functions = FunctionRegistry::new()
        .register_event("test-relay", relay("test-relay", hops.clone()))
        .register_event(
            "test-allowed-relay",
            relay("test-allowed-relay", hops.clone()),
        );
    let env = LocalEnv::start(LocalEnvOptions {
        aws_endpoint: Some(endpoint),
        template: Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/recursive_loops.yaml"),
        ),
        functions: Some(functions),
        ..LocalEnvOptions::default()
    })
    .await
    .expect("the local environment starts");

    // The first hop is sent from outside any invocation: it starts the chain.
    let sqs = aws_sdk_sqs::Client::new(&env.aws);
    for queue in ["LoopQueue", "AllowedQueue"] {
        sqs.send_message()
            .queue_url(env.stack.ref_value(queue).unwrap())
            .message_body(json!({"hop": 1, "until": HOPS}).to_string())
            .send()
            .await
            .unwrap();
    }
    env.wait_queues_idle(Duration::from_secs(90)).await.unwrap();

    let hops = hops.lock().unwrap().clone();
    let numbers = |binary: &str| -> Vec<u64> { hops[binary].iter().map(|(n, _)| *n).collect() };
    assert_eq!(
        numbers("test-allowed-relay"),
        (1..=HOPS).collect::<Vec<_>>()
    );
    assert_eq!(numbers("test-relay"), (1..=16).collect::<Vec<_>>());

    // Every hop after the first carried the chain's trace header, one root throughout.
    for binary in ["test-relay", "test-allowed-relay"] {
        let traces = &hops[binary];
        assert!(
            traces[0].1.is_none(),
            "{binary}: the first message had no trace"
        );
        let roots: std::collections::BTreeSet<&str> = traces[1..]
            .iter()
            .map(|(n, t)| {
                let t = t
                    .as_deref()
                    .unwrap_or_else(|| panic!("{binary} hop {n} had no trace"));
                t.split(';').find(|f| f.starts_with("Root=")).unwrap()
            })
            .collect();
        assert_eq!(roots.len(), 1, "{binary}: {roots:?}");
    }

    // The stopped 17th hop went to the dead-letter queue; nothing of the allowed chain.
    let stopped: Vec<Value> = env
        .dead_letters("LoopQueue")
        .await
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(stopped, vec![json!({"hop": 17, "until": HOPS})]);
    assert!(env.dead_letters("AllowedQueue").await.unwrap().is_empty());

    let report: Value = reqwest::get(format!("{}/_devhost/queues", env.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dropped = |function: &str| {
        report["event_sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["function"] == function)
            .unwrap()["recursive_invocations_dropped"]
            .clone()
    };
    assert_eq!(dropped("RelayFunction"), json!(1));
    assert_eq!(dropped("AllowedRelayFunction"), json!(0));
}

#[tokio::test]
async fn a_tenant_with_a_backlog_does_not_hold_back_another_on_a_fair_queue() {
    let Some(endpoint) = moto().await else { return };
    let seen = Arc::new(Seen::default());
    let env = start(endpoint, seen.clone(), LocalEnvOptions::default()).await;
    let sqs = aws_sdk_sqs::Client::new(&env.aws);
    let url = env.stack.ref_value("FairQueue").unwrap();
    // 40 messages of a noisy tenant, then one of a quiet one; two at a time, 100 ms each.
    let backlog: Vec<_> = (0..40)
        .map(|i| {
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(json!({"id": format!("big{i}"), "sleep_ms": 100}).to_string())
                .message_group_id("big")
                .build()
                .unwrap()
        })
        .collect();
    for chunk in backlog.chunks(10) {
        sqs.send_message_batch()
            .queue_url(&url)
            .set_entries(Some(chunk.to_vec()))
            .send()
            .await
            .unwrap();
    }
    sqs.send_message()
        .queue_url(&url)
        .message_body(json!({"id": "small", "sleep_ms": 100}).to_string())
        .message_group_id("small")
        .send()
        .await
        .unwrap();
    env.wait_queues_idle(Duration::from_secs(60)).await.unwrap();

    let order = seen.fair_order.lock().unwrap().clone();
    let mut all = order.clone();
    all.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("big{i}")).collect();
    expected.push("small".to_owned());
    expected.sort();
    assert_eq!(all, expected, "each message once");
    let small = order.iter().position(|id| id == "small").unwrap();
    // In send order it would be the 41st; the noisy tenant had at most a few taken
    // (two at a time) before the quiet one's message was sent.
    assert!(
        small < 8,
        "the quiet tenant's message was taken {small}th: {order:?}"
    );
}
