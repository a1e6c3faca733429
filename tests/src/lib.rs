//! The scenario-test harness: one local environment per test process (moto, the
//! provider sandbox and the dev host serving the real handlers), started on its own
//! runtime thread so every test's runtime can use it; a unique tenant per test; an
//! HTTP client; and a capture of every log line the handlers write, to prove no
//! secret reaches a log.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use conduit::app::App;
use conduit::config::Config;
use conduit::crypto::{Envelope, KmsKeys, Sealed};
use conduit::domain::ConnectionId;
use reqwest::Method;
use serde_json::{Value, json};

/// The role a test token carries.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Reads and writes.
    Admin,
    /// Reads.
    Member,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }
}

/// Every log line written in this process.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Shared {
    url: String,
    sandbox_url: String,
    jwt: devhost::LocalJwt,
    env: BTreeMap<String, String>,
    aws: aws_config::SdkConfig,
    logs: Capture,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn shared() -> &'static Shared {
    SHARED.get_or_init(|| {
        let logs = Capture::default();
        let writer = logs.clone();
        conduit::telemetry::init_with_writer("debug", move || writer.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("local-env".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    match devhost::LocalEnv::start(devhost::LocalEnvOptions::default()).await {
                        Ok(env) => {
                            let _ = tx.send(Ok((
                                env.url(),
                                env.sandbox.url(),
                                env.jwt.clone(),
                                env.stack.function_env("CredentialsFunction").ok(),
                                env.aws.clone(),
                            )));
                            // Serve for as long as the test process lives.
                            std::future::pending::<()>().await;
                            drop(env);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("{e:#}")));
                        }
                    }
                });
            })
            .expect("spawn the local environment thread");
        let (url, sandbox_url, jwt, env, aws) = rx
            .recv()
            .expect("local environment thread ended")
            .unwrap_or_else(|e| panic!("local environment failed to start: {e}"));
        Shared {
            url,
            sandbox_url,
            jwt,
            env: env.expect("template has CredentialsFunction"),
            aws,
            logs,
        }
    })
}

/// A test's handle on the shared environment.
pub struct TestApp {
    shared: &'static Shared,
    http: reqwest::Client,
}

/// A Zendesk connection body for the sandbox's seeded account.
pub fn zendesk(token: &str) -> Value {
    json!({
        "provider": "zendesk",
        "label": "Support desk",
        "credentials": {"subdomain": "acme", "email": "admin@acme.test", "api_token": token},
    })
}

impl TestApp {
    /// The environment (started on first use).
    pub async fn spawn() -> Self {
        let shared = tokio::task::spawn_blocking(shared)
            .await
            .expect("environment start");
        Self {
            shared,
            http: reqwest::Client::new(),
        }
    }

    /// A tenant id no other test uses.
    pub fn tenant(&self) -> String {
        format!("t-{}", ulid_like())
    }

    /// The sandbox's base URL.
    pub fn sandbox_url(&self) -> String {
        self.shared.sandbox_url.clone()
    }

    /// A token for a user of `tenant` with `role`.
    pub fn token(&self, tenant: &str, role: Role) -> String {
        self.shared
            .jwt
            .mint(
                tenant,
                &format!("user-{}", role.as_str()),
                role.as_str(),
                Duration::from_secs(600),
            )
            .expect("mint token")
    }

    /// A token signed with another key (the authorizer must refuse it).
    pub fn token_with_key(&self, tenant: &str, role: Role, key: &[u8]) -> String {
        let mut other = self.shared.jwt.clone();
        other.key = key.to_vec();
        other
            .mint(tenant, "user", role.as_str(), Duration::from_secs(600))
            .expect("mint token")
    }

    /// Sends a request; returns the status and the JSON body (Null when empty).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.send_with(method, path, token, body, &[]).await
    }

    /// Sends a request with extra headers.
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.http.request(
            Method::from_bytes(method.as_bytes()).expect("method"),
            format!("{}{path}", self.shared.url),
        );
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        read(req.send().await.expect("request")).await
    }

    /// Sends a raw body with a content type.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: String,
        content_type: &str,
    ) -> (u16, Value) {
        let req = self
            .http
            .request(
                Method::from_bytes(method.as_bytes()).expect("method"),
                format!("{}{path}", self.shared.url),
            )
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body);
        read(req.send().await.expect("request")).await
    }

    /// GET.
    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send("GET", path, token, None).await
    }
    /// POST with a JSON body.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send("POST", path, token, Some(body)).await
    }
    /// PATCH with a JSON body.
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send("PATCH", path, token, Some(body)).await
    }
    /// DELETE.
    pub async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        self.send("DELETE", path, token, None).await
    }

    fn dynamo(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.shared.aws)
    }

    fn table(&self) -> &str {
        &self.shared.env["CONDUIT_TABLE"]
    }

    async fn partition(
        &self,
        pk: &str,
    ) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        let out = self
            .dynamo()
            .query()
            .table_name(self.table())
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(
                ":pk",
                aws_sdk_dynamodb::types::AttributeValue::S(pk.to_owned()),
            )
            .send()
            .await
            .expect("query");
        out.items.unwrap_or_default()
    }

    /// How many configuration items (connections, markers, app credentials) a tenant has.
    pub async fn config_items(&self, tenant: &str) -> usize {
        self.partition(&format!("T#{tenant}")).await.len()
    }

    /// The tenant's audit entries as (action, outcome) pairs.
    pub async fn audit_actions(&self, tenant: &str) -> Vec<(String, String)> {
        self.partition(&format!("AUDIT#{tenant}"))
            .await
            .into_iter()
            .map(|i| {
                let s = |k: &str| {
                    i.get(k)
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default()
                };
                (s("action"), s("outcome"))
            })
            .collect()
    }

    /// A connection item as stored, rendered as text.
    pub async fn raw_connection(&self, tenant: &str, id: &ConnectionId) -> String {
        format!("{:?}", self.raw_item(tenant, id).await)
    }

    async fn raw_item(
        &self,
        tenant: &str,
        id: &ConnectionId,
    ) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
        self.dynamo()
            .get_item()
            .table_name(self.table())
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("T#{tenant}")),
            )
            .key(
                "sk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("CONN#{id}")),
            )
            .send()
            .await
            .expect("get item")
            .item
            .expect("connection item")
    }

    /// A connection's sealed secrets as stored.
    pub async fn sealed_secrets(&self, tenant: &str, id: &ConnectionId) -> Sealed {
        let item = self.raw_item(tenant, id).await;
        let secrets = item.get("secrets").cloned().expect("secrets attribute");
        serde_dynamo::from_attribute_value(secrets).expect("sealed secrets")
    }

    /// Writes `sealed` over a connection's stored secrets (simulating a copied ciphertext).
    pub async fn overwrite_sealed_secrets(&self, tenant: &str, id: &ConnectionId, sealed: &Sealed) {
        let mut item = self.raw_item(tenant, id).await;
        item.insert(
            "secrets".into(),
            serde_dynamo::to_attribute_value(sealed).expect("encode"),
        );
        self.dynamo()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .send()
            .await
            .expect("put item");
    }

    /// The same envelope the functions use (KMS on moto).
    pub async fn envelope(&self) -> Envelope<KmsKeys> {
        let config = Config::from_map(&self.shared.env).expect("function config");
        App::with_aws(config, self.shared.aws.clone())
            .expect("app")
            .envelope
    }

    /// Fails if `secret` appears in any log line, response-visible item of the tenant,
    /// or audit entry.
    pub async fn assert_secret_absent(&self, secret: &str, tenant: &str) {
        let logs =
            String::from_utf8_lossy(&self.shared.logs.0.lock().unwrap_or_else(|p| p.into_inner()))
                .into_owned();
        assert!(!logs.is_empty(), "no log lines were captured");
        assert!(!logs.contains(secret), "a secret reached the logs");
        let audit = format!("{:?}", self.partition(&format!("AUDIT#{tenant}")).await);
        assert!(!audit.contains(secret), "a secret reached the audit log");
        let items = format!("{:?}", self.partition(&format!("T#{tenant}")).await);
        assert!(!items.contains(secret), "a secret is stored in the clear");
    }
}

async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

fn ulid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}-{}", N.fetch_add(1, Ordering::SeqCst))
}
