//! Event dispatch through the real path: `POST /v1/events` puts a product event on the
//! bus, the rule delivers it to the dispatch queue, the dev host's poller runs the
//! event-dispatch function, which runs the tenant's chain and signs webhook deliveries;
//! the dispatch log is read back over the API. The webhook endpoint here is a receiver
//! in this test process that verifies every signature with the secret shown once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conduit::dispatch::webhook;
use scenarios::{Role, TestApp};
use serde_json::{Value, json};

/// One delivery as the receiver got it.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    body: Value,
    verified: bool,
}

/// A webhook receiver: records deliveries, verifies them with the secrets it is given,
/// and answers the statuses queued in `plan` (then 204).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Delivery>>>,
    plan: Arc<Mutex<VecDeque<u16>>>,
    secrets: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> (Self, String) {
        let r = Self::default();
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let state = state.clone();
                    async move {
                        let h = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let (id, ts, sig) = (
                            h("webhook-id"),
                            h("webhook-timestamp"),
                            h("webhook-signature"),
                        );
                        let secrets = state.secrets.lock().unwrap().clone();
                        let verified = secrets.iter().any(|s| {
                            let key = webhook::parse_secret(s).unwrap();
                            let now = time::OffsetDateTime::now_utc().unix_timestamp();
                            webhook::verify(&[&key], &id, &ts, &sig, &body, now).is_ok()
                        });
                        state.got.lock().unwrap().push(Delivery {
                            id,
                            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                            verified,
                        });
                        let status = state.plan.lock().unwrap().pop_front().unwrap_or(204);
                        axum::http::StatusCode::from_u16(status).unwrap()
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, url)
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }
}

/// Creates a webhook integration; returns its id and its secret (shown once).
async fn webhook_integration(
    app: &TestApp,
    token: &str,
    name: &str,
    priority: u32,
    url: &str,
    trigger: Value,
    extra: Value,
) -> (String, String) {
    let mut body = json!({
        "name": name, "provider": "webhook", "action": "deliver",
        "triggers": [trigger], "priority": priority, "webhook": {"url": url},
        "retry": {"max_attempts": 2, "initial_backoff_seconds": 1, "max_backoff_seconds": 1},
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, created) = app.post("/v1/integrations", token, body).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    (created["id"].as_str().unwrap().to_owned(), secret)
}

/// A receiver and one webhook integration delivering `trigger` events to it.
async fn one_hook(app: &TestApp, token: &str, trigger: &str) -> Receiver {
    let (rx, url) = Receiver::start().await;
    let (_, secret) = webhook_integration(
        app,
        token,
        "hook",
        10,
        &url,
        json!({ "event": trigger }),
        json!({}),
    )
    .await;
    rx.secrets.lock().unwrap().push(secret);
    rx
}

fn event(tenant: &str, id: &str, kind: &str, score: Option<f64>, assistant: Option<&str>) -> Value {
    let mut e = json!({
        "schema_version": 1, "type": kind, "event_id": id, "tenant_id": tenant,
        "occurred_at": "2026-12-05T03:12:44Z",
        "conversation": {"id": "conv_1", "channel": "voice", "direction": "inbound",
            "duration_seconds": 312, "summary": "Wants Friday instead of Thursday."},
        "contact": {"name": "Dana Lee", "email": "dana@example.com", "phone": "+61290001234"},
    });
    if let Some(s) = score {
        e["conversation"]["score"] = json!(s);
    }
    if let Some(a) = assistant {
        e["assistant_id"] = json!(a);
    }
    e
}

#[tokio::test]
async fn a_chain_runs_in_priority_order_with_signed_deliveries_and_once_per_step() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let (rx, url) = Receiver::start().await;
    let ended = json!({"event": "conversation_ended"});
    let (second, s2) =
        webhook_integration(&app, &admin, "second", 20, &url, ended.clone(), json!({})).await;
    let (first, s1) = webhook_integration(&app, &admin, "first", 10, &url, ended, json!({})).await;
    rx.secrets.lock().unwrap().extend([s1.clone(), s2.clone()]);

    let e = event(&tenant, "evt_chain_1", "conversation_ended", None, None);
    let d = app.dispatched(&admin, e.clone()).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let steps: Vec<&str> = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["integration_id"].as_str().unwrap())
        .collect();
    assert_eq!(steps, [first.as_str(), second.as_str()]);
    let got = rx.deliveries();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|g| g.verified), "{got:?}");
    assert_eq!(got[0].body["type"], "conversation_ended");
    assert_eq!(got[0].body["data"]["event_id"], "evt_chain_1");
    assert_ne!(got[0].id, got[1].id);

    // The same event again (a duplicate delivery): the dispatch is the same one and
    // nothing is sent twice.
    let again = app.dispatched(&admin, e).await;
    assert_eq!(again["id"], d["id"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.deliveries().len(), 2);

    // The log: listed newest first, filtered by integration; each integration's log.
    let (status, list) = app
        .get(&format!("/v1/dispatches?integration_id={first}"), &admin)
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["dispatches"][0]["id"], d["id"]);
    let (status, logs) = app
        .get(&format!("/v1/integrations/{second}/logs"), &admin)
        .await;
    assert_eq!(status, 200, "{logs}");
    assert_eq!(logs["logs"][0]["dispatch_id"], d["id"]);
    assert_eq!(logs["logs"][0]["step"]["status"], "succeeded");

    // No secret in any answer or log line.
    let (_, one) = app.get(&format!("/v1/integrations/{first}"), &admin).await;
    for text in [
        one.to_string(),
        list.to_string(),
        logs.to_string(),
        app.logs(),
    ] {
        assert!(!text.contains(&s1) && !text.contains(&s2));
    }
}

#[tokio::test]
async fn low_score_thresholds_and_assistant_settings_choose_the_chain() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let (rx, url) = Receiver::start().await;
    let (low, s1) = webhook_integration(
        &app,
        &admin,
        "low",
        10,
        &url,
        json!({"event": "low_score", "conditions": {"score_below": 40}}),
        json!({}),
    )
    .await;
    let (other, s2) = webhook_integration(
        &app,
        &admin,
        "also low",
        20,
        &url,
        json!({"event": "low_score", "conditions": {"score_below": 60}}),
        json!({}),
    )
    .await;
    rx.secrets.lock().unwrap().extend([s1, s2]);

    let d = app
        .dispatched(
            &admin,
            event(&tenant, "evt_low_1", "low_score", Some(50.0), None),
        )
        .await;
    let ran: Vec<&str> = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["integration_id"].as_str().unwrap())
        .collect();
    assert_eq!(ran, [other.as_str()], "a score of 50 is below 60 only");

    // One assistant turns `other` off and `low` first; another assistant keeps the defaults.
    let (status, body) = app
        .send(
            "PUT",
            "/v1/assistants/asst_front/integrations",
            &admin,
            Some(json!({"integrations": {other.clone(): {"enabled": false}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let d = app
        .dispatched(
            &admin,
            event(
                &tenant,
                "evt_low_2",
                "low_score",
                Some(10.0),
                Some("asst_front"),
            ),
        )
        .await;
    let ran: Vec<&str> = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["integration_id"].as_str().unwrap())
        .collect();
    assert_eq!(ran, [low.as_str()]);
    let d = app
        .dispatched(
            &admin,
            event(
                &tenant,
                "evt_low_3",
                "low_score",
                Some(10.0),
                Some("asst_back"),
            ),
        )
        .await;
    assert_eq!(d["steps"].as_array().unwrap().len(), 2);
    let (status, view) = app
        .get("/v1/assistants/asst_front/integrations", &admin)
        .await;
    assert_eq!(status, 200);
    assert_eq!(view["uses_defaults"], false);
    let (_, view) = app
        .get("/v1/assistants/asst_back/integrations", &admin)
        .await;
    assert_eq!(view["uses_defaults"], true);
}

#[tokio::test]
async fn a_failing_step_is_retried_then_continues_or_stops_the_chain() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let (rx, url) = Receiver::start().await;
    let ended = json!({"event": "conversation_ended"});
    let (a, s1) = webhook_integration(
        &app,
        &admin,
        "a",
        10,
        &url,
        ended.clone(),
        json!({"on_failure": "continue"}),
    )
    .await;
    let (_b, s2) = webhook_integration(&app, &admin, "b", 20, &url, ended, json!({})).await;
    rx.secrets.lock().unwrap().extend([s1, s2]);

    // The first step's endpoint fails both attempts (a 500, then a 503): the chain goes on.
    rx.plan.lock().unwrap().extend([500, 500]);
    let d = app
        .dispatched(
            &admin,
            event(&tenant, "evt_fail_1", "conversation_ended", None, None),
        )
        .await;
    assert_eq!(d["status"], "partial", "{d}");
    assert_eq!(d["steps"][0]["status"], "failed");
    assert_eq!(d["steps"][0]["attempts"], 2);
    assert_eq!(d["steps"][0]["error"]["code"], "endpoint_failed");
    assert_eq!(d["steps"][1]["status"], "succeeded");
    // Retried deliveries carry the same webhook-id.
    let got = rx.deliveries();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].id, got[1].id);

    // Retry: only the failed step runs again.
    let id = d["id"].as_str().unwrap();
    let (status, body) = app
        .post(&format!("/v1/dispatches/{id}/retry"), &admin, json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let d = app.dispatch_settled(&admin, id).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(rx.deliveries().len(), 4);

    // With stop, a failure skips the rest.
    let (status, _) = app
        .patch(
            &format!("/v1/integrations/{a}"),
            &admin,
            json!({"on_failure": "stop"}),
        )
        .await;
    assert_eq!(status, 200);
    rx.plan.lock().unwrap().extend([400, 400]);
    let d = app
        .dispatched(
            &admin,
            event(&tenant, "evt_fail_2", "conversation_ended", None, None),
        )
        .await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["steps"][1]["status"], "skipped");
}

#[tokio::test]
async fn tenants_are_isolated_and_members_only_read() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant(), app.tenant());
    let admin_a = app.token(&a, Role::Admin);
    let admin_b = app.token(&b, Role::Admin);
    let member_a = app.token(&a, Role::Member);
    let (rx, url) = Receiver::start().await;
    let (id, secret) = webhook_integration(
        &app,
        &admin_a,
        "a's",
        10,
        &url,
        json!({"event": "escalation"}),
        json!({}),
    )
    .await;
    rx.secrets.lock().unwrap().push(secret);

    let (status, _) = app.get(&format!("/v1/integrations/{id}"), &admin_b).await;
    assert_eq!(status, 404);
    // B's escalation never runs A's integration (B has one of its own to be known).
    let (_, _) = webhook_integration(
        &app,
        &admin_b,
        "b's",
        10,
        &url,
        json!({"event": "kb_sync"}),
        json!({}),
    )
    .await;
    let d = app
        .dispatched(&admin_b, event(&b, "evt_iso_1", "escalation", None, None))
        .await;
    assert_eq!(d["steps"], json!([]));
    assert!(rx.deliveries().is_empty());
    // An event naming another tenant is refused.
    let (status, _) = app
        .post(
            "/v1/events",
            &admin_b,
            event(&a, "evt_iso_2", "escalation", None, None),
        )
        .await;
    assert_eq!(status, 400);

    let (status, _) = app.get("/v1/integrations", &member_a).await;
    assert_eq!(status, 200);
    for (method, path, body) in [
        ("POST", "/v1/integrations".to_owned(), Some(json!({}))),
        ("DELETE", format!("/v1/integrations/{id}"), None),
        (
            "POST",
            "/v1/events".to_owned(),
            Some(event(&a, "e", "escalation", None, None)),
        ),
        (
            "PUT",
            "/v1/assistants/x/integrations".to_owned(),
            Some(json!({"integrations": {}})),
        ),
    ] {
        let (status, _) = app.send(method, &path, &member_a, body).await;
        assert_eq!(status, 403, "{method} {path}");
    }
}

#[tokio::test]
async fn invalid_integrations_are_refused_with_their_positions() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let (status, body) = app
        .post(
            "/v1/integrations",
            &admin,
            json!({"name": "x", "provider": "webhook", "action": "deliver",
                "triggers": [{"event": "low_score"}], "webhook": {"url": "http://10.0.0.1/x"},
                "overrides": {"data": "{{ conversation.summary "}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"triggers[0].conditions.score_below"),
        "{body}"
    );
    assert!(fields.contains(&"webhook.url"), "{body}");
    assert!(
        fields.iter().any(|f| f.starts_with("overrides.data")),
        "{body}"
    );
    let (status, body) = app
        .post("/v1/integrations", &admin, json!({"name": "x", "provider": "webhook", "action": "deliver", "triggers": [], "surprise": 1}))
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn poison_and_unknown_tenant_events_go_to_the_dead_letter_queue_with_their_reason() {
    let app = TestApp::spawn().await;
    let dlq = app.local().stack.ref_value("DispatchDLQ").unwrap();
    let sqs = aws_sdk_sqs::Client::new(&app.local().aws);
    let record = |body: &str| {
        json!({"Records": [{"messageId": format!("m-{}", body.len()), "receiptHandle": "r", "body": body,
            "attributes": {}, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:ap-southeast-2:123456789012:q", "awsRegion": "ap-southeast-2"}]})
    };
    let unknown = json!({"id": "eb-unknown", "source": "conduit.product", "detail-type": "escalation",
        "time": "2026-12-05T03:12:44Z", "detail": event("nobody-here", "evt_u", "escalation", None, None)});
    for body in [
        "not json at all".to_owned(),
        json!({"id": "eb-s3", "source": "aws.s3", "detail-type": "Object Created", "detail": {}})
            .to_string(),
        unknown.to_string(),
    ] {
        let out = app.invoke("event-dispatch", &record(&body)).await;
        assert_eq!(out, json!({"batchItemFailures": []}), "{body}");
    }
    let mut reasons = Vec::new();
    for _ in 0..10 {
        let got = sqs
            .receive_message()
            .queue_url(&dlq)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        for m in got.messages.unwrap_or_default() {
            let reason = m
                .message_attributes()
                .and_then(|a| a.get("reason"))
                .and_then(|v| v.string_value())
                .unwrap_or_default()
                .to_owned();
            reasons.push(reason);
        }
        if reasons.len() >= 3 {
            break;
        }
    }
    assert!(
        reasons.iter().any(|r| r.contains("not JSON")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("source")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("unknown tenant")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one_and_a_failing_endpoint_is_disabled_after_days() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let (rx, url) = Receiver::start().await;
    let (id, old) = webhook_integration(
        &app,
        &admin,
        "hook",
        10,
        &url,
        json!({"event": "contact_request"}),
        json!({"retry": {"max_attempts": 1, "initial_backoff_seconds": 1, "max_backoff_seconds": 1}}),
    )
    .await;
    let (status, rotated) = app
        .post(
            &format!("/v1/integrations/{id}/rotate-secret"),
            &admin,
            json!({"overlap_hours": 1}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated["webhook"]["secrets"].as_array().unwrap().len(), 2);
    // A receiver that knows only the new secret, and one that knows only the old one,
    // both verify the delivery while the overlap lasts.
    for (n, secret) in [&new, &old].into_iter().enumerate() {
        rx.secrets.lock().unwrap().clear();
        rx.secrets.lock().unwrap().push(secret.clone());
        let seen = rx.deliveries().len();
        let e = event(
            &tenant,
            &format!("evt_rot_{n}"),
            "contact_request",
            None,
            None,
        );
        let d = app.dispatched(&admin, e).await;
        assert_eq!(d["status"], "succeeded", "{d}");
        assert!(rx.deliveries()[seen].verified);
    }
    assert!(!app.logs().contains(&new) && !app.logs().contains(&old));

    // The endpoint has been failing for six days: the next failure disables it, with an
    // event, and later events skip it.
    let store = conduit::store::integrations::Integrations::new(app.app().table.clone());
    let t = conduit::domain::TenantId::parse(&tenant).unwrap();
    let iid = conduit::domain::IntegrationId::parse(&id).unwrap();
    let mut i = store.get(&t, &iid).await.unwrap().unwrap();
    let prev = i.version;
    i.webhook.as_mut().unwrap().failing_since =
        Some(time::OffsetDateTime::now_utc() - time::Duration::days(6));
    i.version += 1;
    store.save_state(&i, prev).await.unwrap();
    rx.plan.lock().unwrap().push_back(503);
    let d = app
        .dispatched(
            &admin,
            event(&tenant, "evt_dis_1", "contact_request", None, None),
        )
        .await;
    assert_eq!(d["status"], "failed", "{d}");
    app.wait_for_event("integration.webhook.endpoint.disabled", |e| {
        e["integration_id"] == id.as_str()
    })
    .await;
    let (_, shown) = app.get(&format!("/v1/integrations/{id}"), &admin).await;
    assert!(shown["webhook"]["disabled_at"].is_string(), "{shown}");
    let d = app
        .dispatched(
            &admin,
            event(&tenant, "evt_dis_2", "contact_request", None, None),
        )
        .await;
    assert_eq!(
        d["steps"],
        json!([]),
        "a disabled endpoint is not in the chain"
    );
}

#[tokio::test]
async fn conduits_own_events_run_chains_too() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let rx = one_hook(&app, &admin, "sync.run.failed").await;
    // What the sync worker publishes when a run fails, through the bus and its rule.
    let detail = json!({"tenant_id": tenant, "config_id": "scfg_x", "job_id": "job_x",
        "log_id": "slog_x", "entity": "contacts", "status": "failed", "counts": {"processed": 0}});
    app.app()
        .events
        .publish(conduit::events::SYNC_RUN_FAILED, &detail)
        .await
        .unwrap();
    for _ in 0..100 {
        if !rx.deliveries().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = rx.deliveries();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].verified);
    assert_eq!(got[0].body["type"], "sync.run.failed");
    assert_eq!(got[0].body["data"]["detail"]["log_id"], "slog_x");
    let (_, list) = app
        .get("/v1/dispatches?event_type=sync.run.failed", &admin)
        .await;
    assert_eq!(list["dispatches"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn a_batchs_events_are_created_in_one_write_and_each_chain_runs_once() {
    // A moto of its own, so its request counts are this test's alone.
    let app = TestApp::isolated_with_ddb(Default::default(), devhost::DdbKnobs::default()).await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let rx = one_hook(&app, &admin, "conversation_ended").await;
    // One event dispatched before, through the bus.
    let before = event(&tenant, "evt_batch_0", "conversation_ended", None, None);
    let first = app.dispatched(&admin, before.clone()).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(rx.deliveries().len(), 1);

    // One invocation of ten messages of the tenant's group: seven new events, one of
    // them delivered twice, and the event dispatched before.
    let envelope = |e: &Value| {
        json!({"id": format!("eb-{}", e["event_id"].as_str().unwrap()), "source": "conduit.product",
            "detail-type": "conversation_ended", "time": "2026-12-05T03:12:44Z", "detail": e})
        .to_string()
    };
    let fresh: Vec<Value> = (1..=7)
        .map(|i| {
            event(
                &tenant,
                &format!("evt_batch_{i}"),
                "conversation_ended",
                None,
                None,
            )
        })
        .collect();
    let mut bodies: Vec<String> = fresh.iter().map(envelope).collect();
    bodies.push(envelope(&fresh[0]));
    bodies.push(envelope(&before));
    bodies.push(envelope(&fresh[1]));
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({"messageId": format!("batch-m-{i}"), "receiptHandle": "r", "body": body,
                "attributes": {"MessageGroupId": tenant}, "messageAttributes": {}, "md5OfBody": "",
                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:ap-southeast-2:123456789012:q",
                "awsRegion": "ap-southeast-2"})
        })
        .collect();
    let transactions = |report: &devhost::CapacityReport| {
        report
            .requests
            .get("DynamoDB_20120810.TransactWriteItems")
            .copied()
            .unwrap_or(0)
    };
    let tx_before = transactions(&app.ddb_capacity().await);
    let out = app
        .invoke("event-dispatch", &json!({ "Records": records }))
        .await;
    assert_eq!(out, json!({"batchItemFailures": []}));
    let tx = transactions(&app.ddb_capacity().await) - tx_before;

    // Each chain ran once: seven new deliveries, none for the duplicates or the event
    // dispatched before.
    let got = rx.deliveries();
    assert_eq!(got.len(), 8, "{got:?}");
    let mut ids: Vec<&str> = got
        .iter()
        .map(|g| g.body["data"]["event_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 8, "{ids:?}");
    assert!(got.iter().all(|g| g.verified));
    let listed = app.all_pages("/v1/dispatches", &admin, "dispatches").await;
    for e in fresh.iter().chain([&before]) {
        let found = listed
            .iter()
            .filter(|d| d["event_id"] == e["event_id"])
            .collect::<Vec<_>>();
        assert_eq!(found.len(), 1, "{}: {listed:?}", e["event_id"]);
        assert_eq!(found[0]["status"], "succeeded", "{:?}", found[0]);
    }
    // The creations went in shared writes: one for the group, and one more without the
    // dispatch that existed (its condition failed), beside each new chain's final save.
    // With a write each, the ten messages' creations alone were ten transactions.
    assert!(
        tx <= 7 + 3,
        "{tx} transactions for seven new one-step chains"
    );
}
