//! A started sandbox and a client that speaks to its provider hosts and control routes.

use reqwest::header::HeaderMap;
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use sandbox::{OAuthProvider, Sandbox};
use serde_json::Value;

pub struct Harness {
    pub sandbox: Sandbox,
    pub client: Client,
}

/// One answer: status, headers and the body as JSON (`Value::String` when not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Harness {
    pub async fn start() -> Self {
        let sandbox = Sandbox::start(0).await.expect("sandbox starts");
        let client = Client::builder().no_proxy().build().expect("client");
        Self { sandbox, client }
    }

    /// A request to `host/path` on the sandbox.
    pub fn request(&self, method: Method, host_path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}/{host_path}", self.sandbox.url()))
    }

    pub async fn send(&self, request: RequestBuilder) -> Answer {
        let response = request.send().await.expect("request is answered");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    /// An access token of the sandbox's OAuth for `provider`'s default client and user.
    pub fn token(&self, provider: OAuthProvider, scopes: &[&str]) -> String {
        let client_id = format!("{}-sandbox-client-id", provider.as_str());
        self.sandbox
            .state()
            .seed_grant(provider, &client_id, None, scopes)
            .expect("grant")
            .access_token
    }

    /// `GET /_sandbox/{path}` as JSON.
    pub async fn admin_get(&self, path: &str) -> Value {
        let answer = self
            .send(self.request(Method::GET, &format!("_sandbox/{path}")))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body
    }

    /// `POST /_sandbox/{path}` with JSON.
    pub async fn admin_post(&self, path: &str, body: Value) -> Answer {
        self.send(
            self.request(Method::POST, &format!("_sandbox/{path}"))
                .json(&body),
        )
        .await
    }

    /// The requests one provider's action routes received, in order.
    pub async fn received(&self, provider: &str) -> Vec<Value> {
        let body = self
            .admin_get(&format!("dispatch/{provider}/requests"))
            .await;
        body["requests"].as_array().cloned().unwrap_or_default()
    }

    /// The records one provider's action routes created, in order.
    pub async fn records(&self, provider: &str) -> Vec<Value> {
        let body = self
            .admin_get(&format!("dispatch/{provider}/records"))
            .await;
        body["records"].as_array().cloned().unwrap_or_default()
    }

    /// Queues an action fault knob.
    pub async fn fault(&self, knob: Value) {
        let answer = self.admin_post("dispatch/faults", knob).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
}
