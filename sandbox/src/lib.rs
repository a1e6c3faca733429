//! Conduit's provider sandbox: a local HTTP server standing in for the CRM providers' APIs,
//! faithful to their documented wire formats, for tests, benchmarks and the local demo.
//!
//! # Addressing
//! Production code reaches the sandbox through one deployment setting that rewrites every
//! catalogue URL `https://HOST/PATH?Q` to `http://127.0.0.1:PORT/HOST/PATH?Q`: the first
//! path segment is the provider's real host, the rest its real path. A tenant's custom API
//! base URL points straight at it, e.g. `http://127.0.0.1:PORT/custom.example/api`.
//!
//! # Provider routes (this milestone: "who am I" / credential checks)
//! | Route name | Request |
//! |---|---|
//! | `zendesk.users_me` | `GET /{sub}.zendesk.com/api/v2/users/me.json` — Basic `{email}/token:{api_token}` |
//! | `freshdesk.agents_me` | `GET /{sub}.freshdesk.com/api/v2/agents/me` — Basic `{api_key}:X` |
//! | `pipedrive.users_me` | `GET /api.pipedrive.com/v1/users/me?api_token=…` (or header `x-api-token`) |
//! | `hubspot.account_info` | `GET /api.hubapi.com/account-info/v3/details` — `Authorization: Bearer` |
//! | `chatwoot.profile` | `GET /app.chatwoot.com/api/v1/profile` — header `api_access_token` |
//! | `custom.me`, `custom.get` | `GET /custom.example/api/me`, any other `GET /custom.example/api/…` — Bearer, `X-Api-Key` or Basic |
//!
//! Unmatched paths of a provider count as `{provider}.unknown` and get that provider's
//! 404; hosts no provider owns count as `unknown_host`.
//!
//! # Default accounts
//! Every fresh sandbox (and every reset) holds these, so the README's curl demo works:
//! - Zendesk: subdomain `acme`, email `admin@acme.test`, API token `zd-sandbox-token-0001`
//!   (user id 123).
//! - Freshdesk: subdomain `acme`, API key `fd-sandbox-key-0001` (agent `agent@acme.test`).
//! - Pipedrive: API token `pd-sandbox-token-0001`, company domain `acme`.
//! - HubSpot: private app token `pat-na1-sandbox-0001` (portal 62515, 110 requests per
//!   rolling 10 s, 250,000 per day).
//! - Chatwoot: API access token `cw-sandbox-token-0001` at host `app.chatwoot.com`
//!   (Chatwoot account 1, "Acme").
//! - Custom API at `custom.example/api`: bearer `custom-sandbox-token-0001`, header
//!   `X-Api-Key: custom-sandbox-key-0001`, or Basic `custom-user` / `custom-pass-0001`.
//!
//! # Control routes
//! The knobs of [`SandboxState`] are also served as JSON:
//! - `GET /_sandbox/health`
//! - `GET /_sandbox/accounts`, `POST /_sandbox/accounts` with an [`Account`] as JSON, e.g.
//!   `{"provider":"zendesk","subdomain":"globex","email":"a@globex.test","api_token":"t"}`
//! - `GET /_sandbox/calls` → `{"total":N,"routes":{"zendesk.users_me":N,…}}`
//! - `GET /_sandbox/faults`; `POST /_sandbox/faults` with
//!   `{"status":503,"count":2,"provider":"zendesk","retry_after_secs":1}` and/or
//!   `{"latency_ms":250,"provider":"hubspot"}` (provider optional); `DELETE` clears them
//! - `POST /_sandbox/reset`: back to the seeded accounts, zero counters, no faults.
//!
//! Each provider request is counted, then delayed by the configured latency, then answered
//! with a pending forced status (in the provider's own error body) or by the route. Paths
//! a provider does not serve get its 404 and leave pending faults untouched.
//!
//! ```text
//! curl -u 'admin@acme.test/token:zd-sandbox-token-0001' \
//!   http://127.0.0.1:9100/acme.zendesk.com/api/v2/users/me.json
//! ```
//!
//! The server never logs credentials, tokens, query strings or request bodies.

#![warn(missing_docs)]

mod admin;
pub mod providers;
pub mod ratelimit;
pub mod state;
mod wire;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use state::{
    Account, AccountError, AccountView, CallsView, Fault, FaultError, FaultsView, Provider,
    ProviderAccount, SandboxState, Secret, default_accounts,
};

/// How long [`Sandbox::shutdown`] waits for in-flight requests before aborting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running sandbox server; stops when shut down or dropped.
#[derive(Debug)]
pub struct Sandbox {
    addr: SocketAddr,
    state: SandboxState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Binds 127.0.0.1:`port` (0 = a free port) and serves with the default accounts.
    pub async fn start(port: u16) -> io::Result<Sandbox> {
        Self::start_with_state(port, SandboxState::new()).await
    }

    /// Binds 127.0.0.1:`port` (0 = a free port) and serves `state`.
    pub async fn start_with_state(port: u16, state: SandboxState) -> io::Result<Sandbox> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let addr = listener.local_addr()?;
        let app = router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender also means stop.
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "sandbox server failed");
            }
        });
        Ok(Sandbox {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to the shared state (accounts, counters, fault knobs).
    pub fn state(&self) -> SandboxState {
        self.state.clone()
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), then returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The sandbox's routes over `state`: `/_sandbox/…` control routes, and every other path
/// dispatched by its first segment (the provider host). Usable to embed the sandbox.
pub fn router(state: SandboxState) -> Router {
    admin::routes().fallback(provider_request).with_state(state)
}

async fn provider_request(
    State(state): State<SandboxState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match providers::ProviderRequest::new(method, &uri, headers, body) {
        Some(request) => providers::dispatch(&state, request).await,
        None => {
            state.record_call(state::UNKNOWN_HOST_ROUTE);
            providers::unknown_host("")
        }
    }
}
