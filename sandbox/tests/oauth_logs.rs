//! No code, token or client secret ever reaches the sandbox's logs: every OAuth flow
//! (and its failure paths) runs with a TRACE-level subscriber capturing all output.
//! Its own test binary, so the global subscriber sees nothing else.

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::{Client, redirect};
use sandbox::{OAuthProvider, Sandbox, default_oauth_clients};
use url::Url;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn oauth_secrets_never_reach_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let sandbox = Sandbox::start(0).await.unwrap();
    let client = Client::builder()
        .no_proxy()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap();
    let base = sandbox.url();
    let hubspot_token = format!("{base}/api.hubapi.com/oauth/v1/token");
    let id = "hubspot-sandbox-client-id";
    let secret = "hubspot-sandbox-client-secret";
    let redirect_uri = "https://app.test/cb";
    let response = client
        .get(format!("{base}/app.hubspot.com/oauth/authorize"))
        .query(&[
            ("client_id", id),
            ("redirect_uri", redirect_uri),
            ("scope", "oauth"),
        ])
        .send()
        .await
        .unwrap();
    let location = Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let body: serde_json::Value = client
        .post(&hubspot_token)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = body["access_token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();
    // Success and failure paths: reuse, info endpoints, protected API, revoke.
    for (grant_type, key, value) in [
        ("authorization_code", "code", code.as_str()),
        ("refresh_token", "refresh_token", refresh),
    ] {
        client
            .post(&hubspot_token)
            .form(&[
                ("grant_type", grant_type),
                (key, value),
                ("redirect_uri", redirect_uri),
                ("client_id", id),
                ("client_secret", secret),
            ])
            .send()
            .await
            .unwrap();
    }
    for path in [
        format!("/api.hubapi.com/oauth/v1/access-tokens/{access}"),
        format!("/api.hubapi.com/oauth/v1/refresh-tokens/{refresh}"),
    ] {
        client.get(format!("{base}{path}")).send().await.unwrap();
    }
    client
        .get(format!("{base}/api.hubapi.com/account-info/v3/details"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    client
        .delete(format!(
            "{base}/api.hubapi.com/oauth/v1/refresh-tokens/{refresh}"
        ))
        .send()
        .await
        .unwrap();
    client
        .get(format!("{base}/api.hubapi.com/account-info/v3/details"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    // Seeds for every provider, then a refresh of each at a bogus path and the real one.
    let state = sandbox.state();
    for provider in OAuthProvider::ALL {
        let seeded = state
            .seed_grant(
                provider,
                &format!("{provider}-sandbox-client-id"),
                None,
                &[],
            )
            .unwrap();
        client
            .post(format!("{base}/oauth.custom.example/token"))
            .basic_auth(
                "custom_oauth-sandbox-client-id",
                Some("custom_oauth-sandbox-client-secret"),
            )
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", seeded.refresh_token.as_str()),
            ])
            .send()
            .await
            .unwrap();
    }
    sandbox.shutdown().await;

    let logs = String::from_utf8_lossy(
        &captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    assert!(logs.contains("provider request"), "the flow was logged");
    let secrets = state.issued_secrets();
    assert!(secrets.len() > 20);
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "an issued secret was logged"
        );
    }
    for client in default_oauth_clients() {
        assert!(!logs.contains(client.client_secret.expose()));
    }
}
