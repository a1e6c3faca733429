//! The local environment's newer parts against a real moto: the EventBridge capture
//! (moto really delivers EventBridge → SQS), local parameters and secrets, the OAuth
//! routes, event handlers through `invoke`, and the scheduler. Skipped, with a message,
//! when no `moto_server` is installed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
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

async fn start(endpoint: String) -> LocalEnv {
    LocalEnv::start(LocalEnvOptions {
        aws_endpoint: Some(endpoint),
        ..LocalEnvOptions::default()
    })
    .await
    .expect("the local environment starts")
}

fn repo_file(path: &str) -> String {
    let root = devhost::paths::repo_root().unwrap();
    std::fs::read_to_string(root.join(path)).unwrap()
}

#[tokio::test]
async fn events_put_on_the_bus_are_captured() {
    let Some(endpoint) = moto().await else { return };
    let env = start(endpoint).await;
    let bus = env.stack.ref_value("EventBus").unwrap();
    assert_eq!(bus, format!("{}-events", env.stack.stack_name()));
    let capture = env.events();
    assert!(capture.is_on());
    assert!(capture.drain().await.unwrap().is_empty());

    // Straight through the SDK: one of Conduit's events and one from elsewhere.
    let client = aws_sdk_eventbridge::Client::new(&env.aws);
    let out = client
        .put_events()
        .entries(
            PutEventsRequestEntry::builder()
                .event_bus_name(&bus)
                .source("conduit.integrations")
                .detail_type("integration.connection.reauth_required")
                .detail(r#"{"tenant_id":"demo","connection_id":"con_1"}"#)
                .build(),
        )
        .entries(
            PutEventsRequestEntry::builder()
                .event_bus_name(&bus)
                .source("someone.else")
                .detail_type("integration.connection.reauth_required")
                .detail(r#"{"connection_id":"con_other"}"#)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count(), 0);

    // And through Conduit's own publisher, as the functions publish.
    let publisher = conduit::events::EventPublisher::new(client.clone(), Some(bus.clone()));
    publisher
        .publish(
            "integration.connection.test",
            &json!({"connection_id": "con_2"}),
        )
        .await
        .unwrap();

    let found = capture
        .wait_for(
            "integration.connection.test",
            |d| d["connection_id"] == "con_2",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(found["source"], "conduit.integrations");

    let events = capture.drain().await.unwrap();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["detail-type"].as_str().unwrap(),
                e["detail"]["connection_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("integration.connection.reauth_required", "con_1"),
            ("integration.connection.test", "con_2"),
        ],
        "{events:#?}"
    );
    let first = &events[0];
    assert_eq!(first["source"], "conduit.integrations");
    assert_eq!(first["detail"]["tenant_id"], "demo");
    assert_eq!(first["region"], env.stack.region());
    // (moto's envelope has no `account`; AWS's does.)
    assert!(
        first["id"].is_string() && first["time"].is_string(),
        "{first}"
    );
    assert!(capture.drain().await.unwrap().is_empty());
    let err = capture
        .wait_for(
            "integration.connection.test",
            |_| true,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no matching"), "{err}");

    // The dev host lists everything captured so far, drained or not, without auth.
    let listed: Value = reqwest::get(format!("{}/_devhost/events", env.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed[1]["detail-type"], "integration.connection.test");
    let resp = reqwest::Client::new()
        .delete(format!("{}/_devhost/events", env.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);

    env.shutdown().await;
}

#[tokio::test]
async fn local_parameters_and_the_sandbox_apps_are_set() {
    let Some(endpoint) = moto().await else { return };
    let env = start(endpoint.clone()).await;
    for function in [
        "CredentialsFunction",
        "OAuthStartFunction",
        "OAuthCallbackFunction",
        "TokenRefreshFunction",
    ] {
        let vars = env.stack.function_env(function).unwrap();
        assert_eq!(vars["CONDUIT_PUBLIC_BASE_URL"], env.url(), "{function}");
        assert_eq!(
            vars["CONDUIT_EVENT_BUS"],
            format!("{}-events", env.stack.stack_name()),
            "{function}"
        );
    }
    let secret = aws_sdk_secretsmanager::Client::new(&env.aws)
        .get_secret_value()
        .secret_id(env.stack.ref_value("PlatformSecret").unwrap())
        .send()
        .await
        .unwrap();
    let secret: Value = serde_json::from_str(secret.secret_string().unwrap()).unwrap();
    let apps = secret["oauth_apps"].as_object().unwrap();
    assert_eq!(apps.len(), 8);
    assert!(!apps.contains_key("custom_oauth"));
    assert_eq!(
        secret["oauth_apps"]["hubspot"],
        json!({"client_id": "hubspot-sandbox-client-id", "client_secret": "hubspot-sandbox-client-secret"})
    );
    assert_eq!(
        secret["oauth_apps"]["dynamics365"]["client_id"],
        "dynamics365-sandbox-client-id"
    );
    assert_eq!(secret["signing_keys"], json!({}));

    // OAuth start: the sandbox's authorize endpoint, the platform's app, and a
    // redirect URI back to this dev host.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let admin = env.token("demo", "dev-admin", "admin").unwrap();
    let resp = http
        .post(format!("{}/v1/oauth/hubspot/start", env.url()))
        .bearer_auth(&admin)
        .json(&json!({"return_to": "http://localhost:5173/integrations"}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let authorize = url::Url::parse(body["authorize_url"].as_str().unwrap()).unwrap();
    assert!(
        authorize.as_str().starts_with(&env.sandbox.url()),
        "{authorize}"
    );
    let param = |name: &str| {
        authorize
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(
        param("client_id").as_deref(),
        Some("hubspot-sandbox-client-id")
    );
    assert_eq!(
        param("redirect_uri"),
        Some(format!("{}/v1/oauth/hubspot/callback", env.url()))
    );
    // The start route is behind the authorizer; the callback is public.
    let resp = http
        .post(format!("{}/v1/oauth/hubspot/start", env.url()))
        .json(&json!({"return_to": "http://localhost:5173/integrations"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(format!(
            "{}/v1/oauth/hubspot/callback?code=x&state=unknown",
            env.url()
        ))
        .send()
        .await
        .unwrap();
    assert!(
        ![401, 404, 501].contains(&resp.status().as_u16()),
        "{}",
        resp.status()
    );
    env.shutdown().await;

    // A secret value the caller gives wins over the sandbox's apps.
    let own = r#"{"oauth_apps":{},"signing_keys":{}}"#;
    let env = LocalEnv::start(LocalEnvOptions {
        aws_endpoint: Some(endpoint),
        secret_values: [("PlatformSecret".to_owned(), own.to_owned())].into(),
        ..LocalEnvOptions::default()
    })
    .await
    .unwrap();
    let secret = aws_sdk_secretsmanager::Client::new(&env.aws)
        .get_secret_value()
        .secret_id(env.stack.ref_value("PlatformSecret").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(secret.secret_string(), Some(own));
    env.shutdown().await;
}

#[tokio::test]
async fn the_token_sweep_runs_through_invoke_and_the_schedule() {
    let Some(endpoint) = moto().await else { return };
    let env = start(endpoint).await;
    let functions = FunctionRegistry::conduit();
    let event = repo_file("events/token-refresh/scheduled.json");
    for name in ["TokenRefreshFunction", "token-refresh"] {
        let report = devhost::invoke::invoke(&env.stack, &functions, name, &event)
            .await
            .unwrap();
        assert_eq!(report["due"], 0, "{report}");
        assert_eq!(report["refreshed"], 0, "{report}");
    }
    let err = devhost::invoke::invoke(
        &env.stack,
        &functions,
        "TokenRefreshFunction",
        "{\"version\": \"0\",\n \"id\": }",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("not valid JSON") && err.contains("line 2"),
        "{err}"
    );

    // The HTTP path is unchanged.
    let list = repo_file("events/credentials/list-providers.json");
    let resp = devhost::invoke::invoke(&env.stack, &functions, "credentials", &list)
        .await
        .unwrap();
    assert_eq!(resp["statusCode"], 200, "{resp}");

    // On demand, through the scheduler's path.
    let report = env.run_schedule("TokenRefreshFunction").await.unwrap();
    assert_eq!(report["due"], 0, "{report}");
    env.run_schedule("token-refresh").await.unwrap();
    let err = env.run_schedule("CredentialsFunction").await.unwrap_err();
    assert!(err.to_string().contains("TokenRefreshFunction"), "{err}");
    // Every schedule of the template is listed: the sweep and the dispatcher's
    // due_retries.
    let schedules = env.devhost.schedules();
    let listed: Vec<(&str, String)> = schedules
        .iter()
        .map(|s| (s.function.as_str(), s.expression.to_string()))
        .collect();
    assert_eq!(
        listed,
        [
            ("EventDispatchFunction", "rate(1 minute)".to_owned()),
            ("TokenRefreshFunction", "rate(5 minutes)".to_owned()),
        ]
    );
    env.shutdown().await;
}

/// What the fake sweeper saw.
#[derive(Default)]
struct Seen {
    runs: AtomicUsize,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
    events: Mutex<Vec<Value>>,
}

/// A registry whose `token-refresh` records its runs and takes `busy` each.
fn recording(seen: Arc<Seen>, busy: Duration) -> FunctionRegistry {
    FunctionRegistry::conduit().register_event(
        "token-refresh",
        move |_app: &conduit::app::App, event: Value| {
            let seen = seen.clone();
            Box::pin(async move {
                let now = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
                seen.most_at_once.fetch_max(now, Ordering::SeqCst);
                seen.events.lock().unwrap().push(event);
                tokio::time::sleep(busy).await;
                seen.running.fetch_sub(1, Ordering::SeqCst);
                let n = seen.runs.fetch_add(1, Ordering::SeqCst) + 1;
                EventResult::Ok(json!({ "run": n }))
            })
        },
    )
}

#[tokio::test]
async fn schedules_fire_without_overlap_and_stop_with_the_dev_host() {
    let Some(endpoint) = moto().await else { return };

    // Off by default: nothing fires, however short the period.
    let idle = Arc::new(Seen::default());
    let env = LocalEnv::start(LocalEnvOptions {
        aws_endpoint: Some(endpoint.clone()),
        functions: Some(recording(idle.clone(), Duration::ZERO)),
        schedule_every: Some(Duration::from_secs(1)),
        ..LocalEnvOptions::default()
    })
    .await
    .unwrap();

    let seen = Arc::new(Seen::default());
    let running = LocalEnv::start(LocalEnvOptions {
        aws_endpoint: Some(endpoint),
        functions: Some(recording(seen.clone(), Duration::from_millis(1500))),
        run_schedules: true,
        schedule_every: Some(Duration::from_secs(1)),
        ..LocalEnvOptions::default()
    })
    .await
    .unwrap();

    // The first firing comes one period after start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen.events.lock().unwrap().len(), 0);
    // A run on demand waits for the timer's run instead of overlapping it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let on_demand = running.run_schedule("TokenRefreshFunction").await.unwrap();
    assert!(on_demand["run"].as_u64().unwrap() >= 2, "{on_demand}");
    tokio::time::sleep(Duration::from_millis(3000)).await;

    assert_eq!(seen.most_at_once.load(Ordering::SeqCst), 1);
    let fired = seen.events.lock().unwrap().clone();
    assert!(fired.len() >= 3, "{} runs", fired.len());
    let rule = format!(
        "arn:aws:events:us-east-1:123456789012:rule/{}-TokenRefreshFunctionSweep",
        running.stack.stack_name()
    );
    for event in &fired {
        assert_eq!(event["detail-type"], "Scheduled Event");
        assert_eq!(event["source"], "aws.events");
        assert_eq!(event["resources"], json!([rule]));
        assert_eq!(event["detail"], json!({}));
    }
    assert_ne!(fired[0]["id"], fired[1]["id"]);

    tokio::time::timeout(Duration::from_secs(10), running.shutdown())
        .await
        .unwrap();
    let after = seen.runs.load(Ordering::SeqCst);
    assert_eq!(seen.running.load(Ordering::SeqCst), 0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(seen.runs.load(Ordering::SeqCst), after);

    assert_eq!(idle.runs.load(Ordering::SeqCst), 0);
    assert_eq!(
        env.run_schedule("TokenRefreshFunction").await.unwrap()["run"],
        1
    );
    env.shutdown().await;
}

/// The README's OAuth session end to end, then the sweep's reauth event: connect
/// HubSpot through the sandbox (which approves at once), revoke the grant at the
/// sandbox, make the token due, run the sweep through the schedule's path, and find
/// `integration.connection.reauth_required` in the capture and at `/_devhost/events`.
#[tokio::test]
async fn an_oauth_connection_whose_grant_is_revoked_publishes_reauth_required() {
    use conduit::connections::Connection;
    use conduit::domain::{ConnectionId, TenantId};
    use conduit::store::{Keyed, keys};

    let Some(endpoint) = moto().await else { return };
    let env = start(endpoint).await;
    let url = env.url();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let admin = env.token("demo", "dev-admin", "admin").unwrap();
    let location = |resp: &reqwest::Response| {
        resp.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{} without a Location", resp.status()))
    };

    let started: Value = http
        .post(format!("{url}/v1/oauth/hubspot/start"))
        .bearer_auth(&admin)
        .json(&json!({"return_to": "http://localhost:5173/integrations"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let authorize = started["authorize_url"].as_str().unwrap();
    let resp = http.get(authorize).send().await.unwrap();
    assert_eq!(resp.status(), 302, "the sandbox approves at once");
    let callback = location(&resp);
    assert!(
        callback.starts_with(&format!("{url}/v1/oauth/hubspot/callback?")),
        "{callback}"
    );
    let resp = http.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let back = url::Url::parse(&location(&resp)).unwrap();
    assert_eq!(
        back.as_str().split('?').next(),
        Some("http://localhost:5173/integrations")
    );
    let param = |name: &str| {
        back.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("status").as_deref(), Some("connected"), "{back}");
    let id = param("connection_id").unwrap();
    let listed: Value = http
        .get(format!("{url}/v1/connections?provider=hubspot"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conn = &listed["connections"][0];
    assert_eq!(conn["id"], id.as_str(), "{listed}");
    assert_eq!(conn["connected_as"]["email"], "admin@acme.test", "{listed}");
    assert_eq!(conn["connected_as"]["account"], "62515", "{listed}");

    // The user revokes the app at the provider; the token's refresh time comes.
    let resp = http
        .post(format!("{}/_sandbox/oauth/revoke_user", env.sandbox.url()))
        .json(&json!({"provider": "hubspot", "email": "admin@acme.test"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let app = devhost::invoke::function_app(&env.stack, "TokenRefreshFunction").unwrap();
    let tenant = TenantId::parse("demo").unwrap();
    let conn_id = ConnectionId::parse(&id).unwrap();
    let mut stored = app
        .table
        .get::<Keyed<Connection>>(&keys::tenant(&tenant), &keys::connection(&conn_id))
        .await
        .unwrap()
        .unwrap()
        .item;
    let token = stored.token.as_mut().unwrap();
    token.refresh_due = Some(conduit::domain::now() - time::Duration::seconds(1));
    aws_sdk_dynamodb::Client::new(&env.aws)
        .put_item()
        .table_name(env.stack.ref_value("Table").unwrap())
        .set_item(Some(stored.to_item().unwrap()))
        .send()
        .await
        .unwrap();

    let report = env.run_schedule("TokenRefreshFunction").await.unwrap();
    assert_eq!(report["due"], 1, "{report}");
    assert_eq!(report["reauth"], 1, "{report}");
    let event = env
        .events()
        .wait_for(
            conduit::events::REAUTH_REQUIRED,
            |d| d["connection_id"] == id.as_str(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(event["source"], "conduit.integrations");
    let listed: Value = reqwest::get(format!("{url}/_devhost/events"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed.as_array().unwrap().iter().any(|e| {
            e["detail-type"] == "integration.connection.reauth_required"
                && e["detail"]["connection_id"] == id.as_str()
        }),
        "{listed}"
    );
    env.shutdown().await;
}
