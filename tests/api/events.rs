//! The sample events under events/ are real API Gateway payloads: each one, invoked
//! the way `make invoke` (and `sam local invoke -e`) runs a function, gets the
//! response it is there to show.

use std::path::PathBuf;

#[tokio::test]
async fn every_sample_event_invokes_its_function() {
    let env = devhost::LocalEnv::start(devhost::LocalEnvOptions::default())
        .await
        .unwrap();
    let functions = devhost::FunctionRegistry::conduit();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events/credentials");
    let expected = [
        ("list-providers.json", 200),
        ("get-provider.json", 200),
        ("create-connection.json", 201),
        ("list-connections.json", 200),
        ("list-connections-paged.json", 200),
        ("test-new-connection.json", 200),
        ("get-connection-bad-id.json", 400),
        ("put-app-credentials.json", 201),
        ("member-create-forbidden.json", 403),
    ];
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let status = expected
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("no expectation for events/credentials/{name}"));
        let event = std::fs::read_to_string(&path).unwrap();
        let resp = devhost::invoke::invoke(&env.stack, &functions, "credentials", &event)
            .await
            .unwrap();
        assert_eq!(resp["statusCode"], status, "{name}: {resp}");
        seen += 1;
    }
    assert_eq!(seen, expected.len());
    env.shutdown().await;
}

/// What a sample event is there to show.
enum Shows {
    /// An HTTP function's answer with this status.
    Status(u16),
    /// An event function's JSON result.
    Result(serde_json::Value),
    /// An event function's JSON result, with these members.
    ResultWith(&'static [&'static str]),
}

/// The samples of the functions whose own scenario files do not run them (credentials,
/// records and sync-config are run above and in records.rs / sync_config.rs), in the
/// order they run.
fn expectations() -> Vec<(&'static str, &'static str, Shows)> {
    use serde_json::json;
    vec![
        ("oauth-start", "start-hubspot.json", Shows::Status(200)),
        // Signed long ago: refused as stale before any secret is used.
        (
            "webhooks",
            "hubspot-stale-timestamp.json",
            Shows::Status(401),
        ),
        (
            "webhooks",
            "hubspot-unknown-tenant.json",
            Shows::Status(401),
        ),
        // A config with no notification channel: refused before its token is looked at.
        ("webhooks", "zoho-unknown-config.json", Shows::Status(401)),
        // A config without webhook steps (and no key header): refused before the body.
        (
            "webhooks",
            "dynamics365-unknown-config.json",
            Shows::Status(401),
        ),
        // A config without an outbound-message key: refused before the SOAP is read.
        (
            "webhooks",
            "salesforce-unknown-config.json",
            Shows::Status(401),
        ),
        (
            "google",
            "send-gmail-not-connected.json",
            Shows::Status(409),
        ),
        (
            "google",
            "send-gmail-header-injection.json",
            Shows::Status(400),
        ),
        (
            "google",
            "list-calendar-events-not-connected.json",
            Shows::Status(409),
        ),
        (
            "oauth-start",
            "member-start-forbidden.json",
            Shows::Status(403),
        ),
        (
            "oauth-callback",
            "callback-unknown-state.json",
            Shows::Status(400),
        ),
        (
            "sync-runs",
            "trigger-unknown-config.json",
            Shows::Status(404),
        ),
        ("sync-runs", "list-logs.json", Shows::Status(200)),
        ("sync-runs", "list-conflicts.json", Shows::Status(200)),
        (
            "sync-runs",
            "config-status-unknown.json",
            Shows::Status(404),
        ),
        (
            "sync-runs",
            "scheduled-run.json",
            Shows::Result(json!({"started": false, "reason": "config deleted"})),
        ),
        (
            "sync-worker",
            "chunk-of-a-deleted-config.json",
            Shows::Result(json!({"batchItemFailures": []})),
        ),
        (
            "sync-worker",
            "purge.json",
            Shows::Result(json!({"batchItemFailures": []})),
        ),
        // A step of a run the source does not have (ended, or never started): dropped.
        (
            "sync-worker",
            "kb-import-step-of-no-run.json",
            Shows::Result(json!({"batchItemFailures": []})),
        ),
        (
            "sync-worker",
            "not-a-task.json",
            Shows::Result(json!({"batchItemFailures": [
                {"itemIdentifier": "5f1e0c4a-0000-4000-8000-000000000003"}
            ]})),
        ),
        (
            "token-refresh",
            "scheduled.json",
            Shows::ResultWith(&["due", "refreshed", "reauth", "failed"]),
        ),
        // Before the integrations samples: tenant "demo" has no integration yet, so its
        // events go to the dead-letter queue ("unknown tenant", or nothing to run) and
        // the batch still succeeds; a message that is no event is set aside alike.
        (
            "event-dispatch",
            "conversation-ended.json",
            Shows::Result(json!({"batchItemFailures": []})),
        ),
        (
            "event-dispatch",
            "reauth-required.json",
            Shows::Result(json!({"batchItemFailures": []})),
        ),
        (
            "event-dispatch",
            "poison.json",
            Shows::Result(json!({"batchItemFailures": []})),
        ),
        (
            "event-dispatch",
            "due-retries.json",
            Shows::ResultWith(&["queued"]),
        ),
        ("integrations", "list-templates.json", Shows::Status(200)),
        (
            "integrations",
            "get-template-salesforce.json",
            Shows::Status(200),
        ),
        ("integrations", "list-integrations.json", Shows::Status(200)),
        (
            "integrations",
            "member-create-forbidden.json",
            Shows::Status(403),
        ),
        (
            "integrations",
            "create-webhook-integration.json",
            Shows::Status(201),
        ),
        (
            "integrations",
            "test-unknown-integration.json",
            Shows::Status(404),
        ),
        ("integrations", "list-dispatches.json", Shows::Status(200)),
        ("integrations", "list-kb-documents.json", Shows::Status(200)),
        (
            "integrations",
            "get-dispatch-bad-id.json",
            Shows::Status(400),
        ),
        ("integrations", "post-test-event.json", Shows::Status(202)),
    ]
}

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

#[test]
fn every_function_of_the_template_has_sample_events() {
    let template = devhost::template::load_repo_template().unwrap();
    let mut binaries: Vec<&str> = template
        .functions
        .values()
        .map(|f| f.binary.as_str())
        .collect();
    binaries.sort_unstable();
    binaries.dedup();
    assert!(binaries.len() >= 8, "{binaries:?}");
    for binary in binaries {
        let dir = events_dir().join(binary);
        let samples = std::fs::read_dir(&dir)
            .unwrap_or_else(|_| panic!("no events/{binary}/"))
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .count();
        assert!(samples > 0, "events/{binary}/ holds no sample");
    }
    // Every sample of the functions checked here has its expectation, and back.
    for binary in [
        "oauth-start",
        "oauth-callback",
        "sync-runs",
        "sync-worker",
        "token-refresh",
        "event-dispatch",
        "integrations",
        "google",
        "webhooks",
    ] {
        for entry in std::fs::read_dir(events_dir().join(binary)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                expectations()
                    .iter()
                    .any(|(b, n, _)| *b == binary && *n == name),
                "no expectation for events/{binary}/{name}"
            );
        }
    }
}

#[tokio::test]
async fn the_other_functions_sample_events_answer_as_documented() {
    let app = scenarios::TestApp::spawn().await;
    for (binary, name, shows) in expectations() {
        let path = events_dir().join(binary).join(name);
        let event: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let resp = app.invoke(binary, &event).await;
        match shows {
            Shows::Status(status) => {
                assert_eq!(resp["statusCode"], status, "{binary}/{name}: {resp}");
                let body: serde_json::Value =
                    serde_json::from_str(resp["body"].as_str().unwrap_or("null"))
                        .unwrap_or_default();
                if status >= 400 && body.is_object() {
                    assert_eq!(
                        body["error"]["request_id"], event["requestContext"]["requestId"],
                        "{binary}/{name}: the error names the event's request"
                    );
                }
            }
            Shows::Result(expected) => assert_eq!(resp, expected, "{binary}/{name}"),
            Shows::ResultWith(members) => {
                for m in members {
                    assert!(resp.get(m).is_some(), "{binary}/{name}: {m} in {resp}");
                }
            }
        }
    }
    // The start sample carries an Idempotency-Key: run again, it replays its answer.
    let path = events_dir().join("oauth-start/start-hubspot.json");
    let event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let first = app.invoke("oauth-start", &event).await;
    let again = app.invoke("oauth-start", &event).await;
    assert_eq!(again["statusCode"], 200, "{again}");
    assert_eq!(again["body"], first["body"]);
    let replayed = again["headers"]["idempotent-replayed"]
        .as_str()
        .or_else(|| again["multiValueHeaders"]["idempotent-replayed"][0].as_str());
    assert_eq!(replayed, Some("true"), "{again}");
}

#[test]
fn env_json_sets_what_the_template_declares_for_each_function() {
    use std::collections::{BTreeMap, BTreeSet};
    let template = devhost::template::load_repo_template().unwrap();
    let path = events_dir().join("../env.json");
    let env: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let functions: Vec<&String> = template.functions.keys().collect();
    assert_eq!(
        env.keys().collect::<Vec<_>>(),
        functions,
        "env.json names each function of template.yaml by its logical id"
    );
    for (id, function) in &template.functions {
        // `sam local invoke --env-vars` sets only the variables the template declares,
        // so env.json gives exactly those.
        let declared: BTreeSet<&String> = function.environment.keys().collect();
        let given: BTreeSet<&String> = env[id].keys().collect();
        assert_eq!(
            given, declared,
            "env.json's {id} must set exactly the variables template.yaml declares for it"
        );
        conduit::config::Config::from_map(&env[id])
            .unwrap_or_else(|e| panic!("env.json's {id} is not a valid configuration: {e}"));
        for (name, value) in &env[id] {
            if let Some((_, rest)) = value.split_once("://") {
                assert!(
                    rest.starts_with("127.0.0.1") || rest.starts_with("localhost"),
                    "env.json's {id}.{name} points away from this machine: {value}"
                );
            }
        }
    }
}
