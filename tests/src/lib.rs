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
    sandbox: sandbox::SandboxState,
    stack: devhost::LocalStack,
    events: devhost::EventCapture,
    jwt: devhost::LocalJwt,
    env: BTreeMap<String, String>,
    aws: aws_config::SdkConfig,
    logs: Capture,
    local: Arc<devhost::LocalEnv>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// The log capture, installed as the process's tracing writer on first use.
fn logs() -> Capture {
    static LOGS: OnceLock<Capture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Capture::default();
        let writer = logs.clone();
        conduit::telemetry::init_with_writer("debug", move || writer.clone());
        logs
    })
    .clone()
}

fn shared() -> &'static Shared {
    SHARED.get_or_init(|| start_local(devhost::LocalEnvOptions::default()))
}

/// Starts a local environment on a runtime thread of its own, serving for as long as
/// the test process lives.
fn start_local(options: devhost::LocalEnvOptions) -> Shared {
    let logs = logs();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("local-env".into())
        .spawn(move || {
            // The handlers run in-process on these threads; their futures (the
            // sync engine's especially) need more than tokio's 2 MiB default.
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(conduit::app::THREAD_STACK_SIZE)
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
                match devhost::LocalEnv::start(options).await {
                    Ok(env) => {
                        let env = Arc::new(env);
                        let _ = tx.send(Ok(env.clone()));
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
    let local = rx
        .recv()
        .expect("local environment thread ended")
        .unwrap_or_else(|e| panic!("local environment failed to start: {e}"));
    Shared {
        url: local.url(),
        sandbox_url: local.sandbox.url(),
        sandbox: local.sandbox.state(),
        stack: local.stack.clone(),
        events: local.events(),
        jwt: local.jwt.clone(),
        env: local
            .stack
            .function_env("CredentialsFunction")
            .expect("template has CredentialsFunction"),
        aws: local.aws.clone(),
        logs,
        local,
    }
}

/// A test's handle on the shared environment.
pub struct TestApp {
    shared: &'static Shared,
    http: reqwest::Client,
    /// An environment of its own ([`TestApp::isolated`]): when the test drops it, its
    /// pollers stop taking work, so it no longer loads the shared moto for the tests
    /// that run after it (each poller long-polls its queue every second).
    isolated: bool,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if self.isolated {
            self.shared.local.pause_pollers();
        }
    }
}

/// A Zendesk connection body for the sandbox's seeded account.
/// The sandbox's default accounts' secrets that [`dispatch_credentials`] sends (none
/// may reach a log).
pub const DISPATCH_SECRETS: [&str; 8] = [
    "t1-sandbox-pass-0001",
    "sap-sandbox-pass-0001",
    "zd-sandbox-token-0001",
    "fd-sandbox-key-0001",
    "pat-na1-sandbox-0001",
    "pd-sandbox-token-0001",
    "cw-sandbox-token-0001",
    "custom-sandbox-token-0001",
];

/// The body of `POST /v1/connections` that connects `provider`'s default sandbox account
/// with credentials, for the dispatch templates' providers that take no OAuth (`None`
/// for the others). Tenant-entered URLs are never redirected, so Chatwoot's and the
/// Custom API's are under `sandbox_url`, the sandbox's own address.
pub fn dispatch_credentials(provider: &str, sandbox_url: &str) -> Option<Value> {
    let [t1, sap, zd, fd, hubspot, pd, cw, custom] = DISPATCH_SECRETS;
    Some(match provider {
        "technologyone" => json!({"provider": provider, "credentials": {
            "subdomain": "council", "username": "CONDUIT", "password": t1}}),
        "sap" => json!({"provider": provider, "credentials": {
            "tenant": "my000001", "username": "CONDUIT_API", "password": sap}}),
        "zendesk" => zendesk(zd),
        "freshdesk" => json!({"provider": provider, "credentials": {
            "subdomain": "acme", "api_key": fd}}),
        "hubspot" => json!({"provider": provider, "auth_method": "private_app",
            "credentials": {"access_token": hubspot}}),
        "pipedrive" => json!({"provider": provider, "auth_method": "api_token",
            "credentials": {"api_token": pd}}),
        "chatwoot" => json!({"provider": provider, "credentials": {
            "base_url": format!("{sandbox_url}/app.chatwoot.com"),
            "account_id": "1", "access_token": cw}}),
        "custom_api" => json!({"provider": provider, "auth_method": "bearer",
            "credentials": {"base_url": format!("{sandbox_url}/custom.example/api"),
            "check_path": "/me", "token": custom}}),
        _ => return None,
    })
}

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
            isolated: false,
        }
    }

    /// An environment of its own (its own stack, dev host, pollers and sandbox), for
    /// tests that turn process-wide knobs: crashes, paused pollers, SQS retry delays,
    /// provider faults. It serves until the process ends; its pollers stop taking work
    /// when the test drops it.
    pub async fn isolated(options: devhost::LocalEnvOptions) -> Self {
        let shared = tokio::task::spawn_blocking(move || -> &'static Shared {
            Box::leak(Box::new(start_local(options)))
        })
        .await
        .expect("environment start");
        Self {
            shared,
            http: reqwest::Client::new(),
            isolated: true,
        }
    }

    /// Like [`TestApp::isolated`], on a moto of its own whose DynamoDB turns `knobs`
    /// (transaction conflicts, throttles, GSI delay). The moto lives as long as the
    /// process (it is killed with it).
    pub async fn isolated_with_ddb(
        mut options: devhost::LocalEnvOptions,
        knobs: devhost::DdbKnobs,
    ) -> Self {
        let moto =
            tokio::task::spawn_blocking(move || devhost::MotoServer::start_with_knobs(&knobs))
                .await
                .expect("moto start")
                .unwrap_or_else(|e| panic!("moto with DynamoDB knobs: {e:#}"));
        options.aws_endpoint = Some(moto.endpoint());
        Box::leak(Box::new(moto));
        Self::isolated(options).await
    }

    /// What the local DynamoDB counted: hottest keys, throttles, faults injected.
    pub async fn ddb_capacity(&self) -> devhost::CapacityReport {
        let endpoint = self.shared.local.aws_endpoint.clone();
        tokio::task::spawn_blocking(move || devhost::CapacityReport::fetch(&endpoint))
            .await
            .expect("capacity fetch")
            .unwrap_or_else(|e| panic!("capacity report: {e:#}"))
    }

    /// The local environment itself (queues, crash simulator, pollers). Its knobs act
    /// on every test sharing it: turn them only on an [`TestApp::isolated`] one.
    pub fn local(&self) -> &devhost::LocalEnv {
        &self.shared.local
    }

    /// A tenant id no other test uses.
    pub fn tenant(&self) -> String {
        format!("t-{}", ulid_like())
    }

    /// The dev host's base URL (the API's public base URL locally).
    pub fn url(&self) -> String {
        self.shared.url.clone()
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

    /// A valid token (10 minutes) for user `user` of `tenant` with `role`: users of one
    /// tenant told apart (personal connections).
    pub fn user_token(&self, tenant: &str, user: &str, role: Role) -> String {
        self.shared
            .jwt
            .mint(tenant, user, role.as_str(), Duration::from_secs(600))
            .expect("mint token")
    }

    /// A valid token (issuer, audience, 10 minutes) for user `sub` carrying `claims`
    /// besides: an identity provider's own claim names (Cognito's `custom:tenant_id`).
    pub fn token_with_claims(&self, sub: &str, claims: Value) -> String {
        let jwt = &self.shared.jwt;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut all = json!({
            "iss": jwt.issuer, "aud": jwt.audience, "sub": sub, "iat": now, "exp": now + 600,
        });
        if let (Some(all), Some(extra)) = (all.as_object_mut(), claims.as_object()) {
            all.extend(extra.clone());
        }
        jwt.mint_claims(&all).expect("mint token")
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
        let (status, _, body) = self.send_headed(method, path, token, body, headers).await;
        (status, body)
    }

    /// Sends a request with extra headers; returns the response headers too.
    pub async fn send_headed(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
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
        let resp = req.send().await.expect("request");
        let headers = resp.headers().clone();
        let (status, body) = read(resp).await;
        (status, headers, body)
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
    /// Every item of a listing (`path` may carry a query, e.g. `limit=1`), following
    /// its `next_cursor` page by page; each page must be a 200 with `skipped`.
    pub async fn all_pages(&self, path: &str, token: &str, list: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{path}{sep}cursor={c}"),
                None => path.to_owned(),
            };
            let (status, page) = self.get(&url, token).await;
            assert_eq!(status, 200, "{url}: {page}");
            assert!(page["skipped"].is_array(), "{url}: {page}");
            let items = page[list].as_array();
            out.extend(
                items
                    .unwrap_or_else(|| panic!("{list} in {page}"))
                    .iter()
                    .cloned(),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
        panic!("{path}: the listing never ended");
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

    /// The local stack's DynamoDB client (to plant or inspect raw items).
    pub fn dynamo(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&devhost::aws::with_own_http_client(&self.shared.aws))
    }

    /// The table's name.
    pub fn table(&self) -> &str {
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

    /// How many refresh-failure records a connection has.
    pub async fn failure_records(&self, tenant: &str, id: &ConnectionId) -> usize {
        let prefix = format!("TOKENFAIL#{id}#");
        self.partition(&format!("T#{tenant}"))
            .await
            .iter()
            .filter(|i| {
                i.get("sk")
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|sk| sk.starts_with(&prefix))
            })
            .count()
    }

    /// The details of a tenant's audit entries for `action`, rendered as text.
    pub async fn audit_detail(&self, tenant: &str, action: &str) -> String {
        let entries: Vec<_> = self
            .partition(&format!("AUDIT#{tenant}"))
            .await
            .into_iter()
            .filter(|i| {
                i.get("action")
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|a| a == action)
            })
            .map(|i| format!("{:?}", i.get("details")))
            .collect();
        entries.join("\n")
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
        App::with_aws(config, devhost::aws::with_own_http_client(&self.shared.aws))
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

/// How an OAuth connect through the browser path ended.
#[derive(Debug, Clone)]
pub struct OAuthOutcome {
    /// The authorize URL the start endpoint gave.
    pub authorize_url: String,
    /// The state in it.
    pub state: String,
    /// The callback URL the provider sent the browser to (code and state).
    pub callback_url: String,
    /// Where the callback finally sent the browser.
    pub return_url: String,
    /// `status` of the return URL (`connected` or `error`).
    pub status: String,
    /// `connection_id` of the return URL, when connected.
    pub connection_id: Option<ConnectionId>,
    /// `reason` of the return URL, on error.
    pub reason: Option<String>,
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl TestApp {
    /// The provider sandbox's state and knobs.
    pub fn sandbox(&self) -> &sandbox::SandboxState {
        &self.shared.sandbox
    }

    /// The log lines that mention `needle` (for failure messages).
    pub fn logs_about(&self, needle: &str) -> String {
        self.logs()
            .lines()
            .filter(|l| l.contains(needle))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every log line written so far.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.shared.logs.0.lock().unwrap_or_else(|p| p.into_inner()))
            .into_owned()
    }

    /// An `App` like the functions', on the local stack (for library-level calls).
    pub fn app(&self) -> App {
        let config = Config::from_map(&self.shared.env).expect("function config");
        // Its own connection pool: this test's runtime, not the environment's.
        let aws = devhost::aws::with_own_http_client(&self.shared.aws);
        App::with_aws(config, aws).expect("app")
    }

    /// Runs a template function once on an event, as `devhost invoke` does.
    pub async fn invoke(&self, function: &str, event: &Value) -> Value {
        devhost::invoke::invoke(
            &self.shared.stack,
            &devhost::FunctionRegistry::conduit(),
            function,
            &event.to_string(),
        )
        .await
        .unwrap_or_else(|e| panic!("invoke {function}: {e:#}"))
    }

    /// A GET that does not follow redirects: (status, Location).
    pub async fn get_no_redirect(&self, url: &str) -> (u16, Option<String>) {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let resp = client.get(url).send().await.expect("request");
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (resp.status().as_u16(), location)
    }

    /// Starts an OAuth connect; returns the start response.
    pub async fn oauth_start(&self, token: &str, provider: &str, body: Value) -> (u16, Value) {
        self.post(&format!("/v1/oauth/{provider}/start"), token, body)
            .await
    }

    /// Plays the browser through an authorize URL: the sandbox approves (or denies) and
    /// redirects to the callback, which redirects to `return_to`. `extra` is appended to
    /// the authorize URL's query (`login_hint=…`, `sandbox_decision=deny`).
    pub async fn oauth_browse(&self, authorize_url: &str, extra: &str) -> OAuthOutcome {
        let state = query_param(authorize_url, "state").expect("authorize URL has a state");
        let url = if extra.is_empty() {
            authorize_url.to_owned()
        } else {
            format!("{authorize_url}&{extra}")
        };
        let (status, callback) = self.get_no_redirect(&url).await;
        assert_eq!(status, 302, "the sandbox's authorize endpoint redirects");
        let callback_url = callback.expect("authorize redirect has a Location");
        let (status, back) = self.get_no_redirect(&callback_url).await;
        assert_eq!(status, 302, "the callback redirects to return_to");
        let return_url = back.expect("callback redirect has a Location");
        OAuthOutcome {
            status: query_param(&return_url, "status").unwrap_or_default(),
            connection_id: query_param(&return_url, "connection_id")
                .and_then(|id| ConnectionId::parse(&id).ok()),
            reason: query_param(&return_url, "reason"),
            authorize_url: authorize_url.to_owned(),
            state,
            callback_url,
            return_url,
        }
    }

    /// Start + browse in one go; panics unless the start succeeds.
    pub async fn oauth_connect(
        &self,
        token: &str,
        provider: &str,
        body: Value,
        extra: &str,
    ) -> OAuthOutcome {
        let (status, started) = self.oauth_start(token, provider, body).await;
        assert_eq!(status, 200, "start {provider}: {started}");
        let url = started["authorize_url"].as_str().expect("authorize_url");
        self.oauth_browse(url, extra).await
    }

    /// Makes a connection's token due for refresh now (as if its refresh time had
    /// come), without touching the provider: the sweep will pick it up. Written like
    /// any change (at the version read, never over a held lease), since other tests'
    /// sweeps run concurrently on the same table.
    pub async fn make_due(&self, tenant: &str, id: &ConnectionId) {
        let app = self.app();
        for _ in 0..200 {
            let mut conn = self.connection(tenant, id).await;
            let now = conduit::domain::now();
            if conn
                .lease_until
                .is_some_and(|u| u > now.unix_timestamp() * 1000)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let version = conn.version;
            conn.version += 1;
            let token = conn.token.as_mut().expect("an OAuth connection");
            // Issued an hour ago, expiring in two minutes: inside the refresh window.
            token.refresh_due = Some(now - time::Duration::seconds(1));
            token.refreshed_at = Some(now - time::Duration::hours(1));
            if token.expires_at.is_some() {
                token.expires_at = Some(now + time::Duration::seconds(120));
            }
            match app
                .table
                .replace_item(conn.to_item().expect("item"), version)
                .await
            {
                Ok(()) => return,
                Err(conduit::store::StoreError::ConditionFailed) => continue,
                Err(e) => panic!("make due: {e}"),
            }
        }
        panic!("the connection stayed busy");
    }

    /// A connection as stored.
    pub async fn connection(
        &self,
        tenant: &str,
        id: &ConnectionId,
    ) -> conduit::connections::Connection {
        use conduit::store::{Keyed, keys};
        let tenant = conduit::domain::TenantId::parse(tenant).expect("tenant");
        self.app()
            .table
            .get::<Keyed<conduit::connections::Connection>>(
                &keys::tenant(&tenant),
                &keys::connection(id),
            )
            .await
            .expect("read connection")
            .expect("connection exists")
            .item
    }

    /// A connection's tokens, opened (to compare with what the sandbox issued).
    pub async fn tokens(&self, tenant: &str, id: &ConnectionId) -> BTreeMap<String, String> {
        let conn = self.connection(tenant, id).await;
        self.envelope()
            .await
            .open_json(&conn.seal_context(), &conn.secrets)
            .await
            .expect("open secrets")
    }
}

impl TestApp {
    /// Runs the token-refresh function once through the dev host, on the Scheduled
    /// Event its schedule sends.
    pub async fn sweep(&self) -> Value {
        let event = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../events/token-refresh/scheduled.json"
        ))
        .expect("events/token-refresh/scheduled.json");
        let event: Value = serde_json::from_str(&event).expect("scheduled event");
        self.invoke("TokenRefreshFunction", &event).await
    }

    /// Runs the sweep, then waits until nobody holds the connection's lease: other
    /// tests' sweeps run concurrently on the same table and may be the ones refreshing
    /// it (ours then reports it busy).
    pub async fn sweep_settled(&self, tenant: &str, id: &ConnectionId) -> Value {
        let report = self.sweep().await;
        for _ in 0..500 {
            let conn = self.connection(tenant, id).await;
            let now_ms = conduit::domain::now().unix_timestamp() * 1000;
            if conn.lease_until.is_none_or(|u| u < now_ms) {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the connection's lease was never released");
    }

    /// Waits (up to 10 s) for an event Conduit published on its bus.
    pub async fn wait_for_event(
        &self,
        detail_type: &str,
        predicate: impl Fn(&Value) -> bool,
    ) -> Value {
        self.shared
            .events
            .wait_for(detail_type, predicate, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("no {detail_type} event: {e:#}"))
    }

    /// Puts a product event on the bus as `token`'s caller (`POST /v1/events`) and waits
    /// for its dispatch to end; returns the dispatch.
    pub async fn dispatched(&self, token: &str, event: Value) -> Value {
        let (status, accepted) = self.post("/v1/events", token, event).await;
        assert_eq!(status, 202, "{accepted}");
        let id = accepted["dispatch_id"].as_str().expect("dispatch_id");
        self.dispatch_settled(token, id).await
    }

    /// Waits (up to a minute) for dispatch `id` to end — succeeded, partial or failed —
    /// and returns it as `GET /v1/dispatches/{id}` shows it to `token`.
    pub async fn dispatch_settled(&self, token: &str, id: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            let (status, d) = self.get(&format!("/v1/dispatches/{id}"), token).await;
            if status == 200
                && ["succeeded", "partial", "failed"].contains(&d["status"].as_str().unwrap_or(""))
            {
                return d;
            }
            last = d;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("dispatch {id} did not end: {last}");
    }
}

/// A tokio mutex per provider: tests that turn a provider's knobs (or depend on its
/// defaults) hold it, so tests running in parallel do not see each other's knobs.
pub async fn provider_lock(provider: &str) -> tokio::sync::OwnedMutexGuard<()> {
    static LOCKS: OnceLock<Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let lock = {
        let mut map = LOCKS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(provider.to_owned()).or_default().clone()
    };
    lock.lock_owned().await
}
