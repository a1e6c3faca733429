//! The dev host's logs (and the handlers' it runs) never hold a query string, a
//! Location header or a request body: the OAuth callback's `code` and `state` travel in
//! the query, and its redirect carries them onward. Its own request line holds the
//! method, route key, status and latency. A test binary of its own, since it installs
//! the process's log subscriber. Skipped when no `moto_server` is installed.

use std::io::Write;
use std::sync::{Arc, Mutex};

use devhost::{LocalEnv, LocalEnvOptions, MotoServer};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn queries_locations_and_bodies_stay_out_of_the_logs() {
    if MotoServer::find_binary().is_none() {
        eprintln!("skipping: no moto_server (create .venv with moto[server] or set CONDUIT_VENV)");
        return;
    }
    let logs = Capture::default();
    let writer = logs.clone();
    conduit::telemetry::init_with_writer("debug", move || writer.clone());
    let env = LocalEnv::start(LocalEnvOptions::default()).await.unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = env.url();
    let admin = env.token("demo", "dev-admin", "admin").unwrap();

    // A real flow's state, so the callback runs to its redirect.
    let resp = http
        .post(format!("{url}/v1/oauth/hubspot/start"))
        .bearer_auth(&admin)
        .json(&json!({"return_to": "http://localhost:5173/integrations", "label": "BODYMARKER7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let started: Value = resp.json().await.unwrap();
    let authorize = url::Url::parse(started["authorize_url"].as_str().unwrap()).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let resp = http
        .get(format!(
            "{url}/v1/oauth/hubspot/callback?code=CODEMARKER7&state={state}"
        ))
        .send()
        .await
        .unwrap();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    // An unknown state, a protected route with a query, an unknown path with one.
    http.get(format!(
        "{url}/v1/oauth/hubspot/callback?code=CODEMARKER8&state=STATEMARKER8"
    ))
    .send()
    .await
    .unwrap();
    http.get(format!("{url}/v1/connections?provider=QUERYMARKER9"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    http.get(format!("{url}/nowhere?x=QUERYMARKER10"))
        .send()
        .await
        .unwrap();
    env.shutdown().await;

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let request_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(r#""target":"devhost""#) && l.contains(r#""message":"request""#))
        .collect();
    assert!(
        request_lines
            .iter()
            .any(|l| l.contains("GET /v1/oauth/{provider}/callback")),
        "{text}"
    );
    for line in &request_lines {
        let fields: Value = serde_json::from_str(line).unwrap();
        let mut keys: Vec<&str> = fields
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| !["timestamp", "level", "target", "message"].contains(k))
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            ["method", "ms", "request_id", "route", "status"],
            "{line}"
        );
    }
    let mut secrets = vec![
        "CODEMARKER7".to_owned(),
        "CODEMARKER8".to_owned(),
        "STATEMARKER8".to_owned(),
        "QUERYMARKER9".to_owned(),
        "QUERYMARKER10".to_owned(),
        "BODYMARKER7".to_owned(),
        state.clone(),
        admin.clone(),
    ];
    if let Some(location) = &location {
        secrets.push(location.clone());
    }
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "{secret} logged:\n{text}");
    }
}
