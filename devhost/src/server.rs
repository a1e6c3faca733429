//! The dev host: one HTTP server on loopback that plays API Gateway's HTTP API for the
//! template's routes — route matching, the JWT authorizer, CORS, the 10 MB limit and
//! API Gateway's own error bodies — and calls each function's handler in-process with
//! the payload-2.0 event a deployed function receives.
//!
//! It also owns the local [`Scheduler`] (the template's schedules), the pollers of the
//! template's SQS event sources ([`QueuePollers`]) and the firing of EventBridge
//! Scheduler schedules ([`SchedulerRunner`]), and serves what the stack published on
//! EventBridge at `GET /_devhost/events` and the queues' depths at
//! `GET /_devhost/queues` (no auth; loopback only). Its request log line holds the method, route key, status and latency —
//! never the query string, a header or a body.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use conduit::app::App;
use conduit::config::Config;
use futures::FutureExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde_json::{Value as Json, json};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::capture::EventCapture;
use crate::event::{EventInput, JwtContext, build_event, new_request_id, to_request};
use crate::invoker::{EventFunctions, KillSwitch};
use crate::jwt::{LocalJwt, flatten_claim, scopes_of};
use crate::registry::{FunctionRegistry, Handler};
use crate::routes::RouteTable;
use crate::schedule::{Scheduler, SchedulerOptions};
use crate::scheduler::{SchedulerRunner, SchedulerSchedule, SchedulerSchedules};
use crate::sqs::{QueueDepth, QueueMonitor, QueueOptions, QueuePollers};
use crate::stack::{LOCAL_API_ID, LocalStack};

/// The dev host's own endpoint listing the captured events.
pub const EVENTS_PATH: &str = "/_devhost/events";
/// The dev host's own endpoint showing the queues' depths and the pollers' counters.
pub const QUEUES_PATH: &str = "/_devhost/queues";
/// The dev host's own endpoint showing each HTTP function's invocations and the CPU
/// its handler used (benchmarks read it).
pub const FUNCTIONS_PATH: &str = "/_devhost/functions";

/// The largest request API Gateway's HTTP API accepts.
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// How long [`DevHost::shutdown`] waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The route name logged for CORS preflight requests answered by the gateway.
const PREFLIGHT: &str = "CORS preflight";
/// The function timeout when the template gives none (Lambda's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// A running dev host; stops (with its scheduler) on [`DevHost::shutdown`] or drop.
#[derive(Debug)]
pub struct DevHost {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    scheduler: Option<Scheduler>,
    pollers: Option<QueuePollers>,
    runner: Option<SchedulerRunner>,
    queues: QueueMonitor,
    scheduler_schedules: SchedulerSchedules,
    kills: KillSwitch,
    events: EventCapture,
}

/// What a dev host does beyond serving the routes.
#[derive(Debug, Clone)]
pub struct DevHostOptions {
    /// The capture served at `GET /_devhost/events` (default: off, the endpoint
    /// answers 503).
    pub events: EventCapture,
    /// Whether and how often the template's schedules and the stack's EventBridge
    /// Scheduler schedules fire (default: they don't; [`DevHost::run_schedule`] and
    /// [`DevHost::fire_scheduler_schedule`] still run them on demand).
    pub schedules: SchedulerOptions,
    /// Whether the template's SQS event sources are polled (default: yes) and how fast
    /// failed messages come back.
    pub queues: QueueOptions,
    /// Whether the stage's throttling (`DefaultRouteSettings`) applies (default: no).
    pub throttle: bool,
}

impl Default for DevHostOptions {
    fn default() -> Self {
        Self {
            events: EventCapture::off("the dev host was started without an event capture"),
            schedules: SchedulerOptions::default(),
            queues: QueueOptions::default(),
            throttle: false,
        }
    }
}

struct FunctionEntry {
    logical_id: String,
    binary: String,
    handler: Option<(Handler, Arc<App>)>,
    timeout: Duration,
    /// Invocations through the API so far.
    invocations: std::sync::atomic::AtomicU64,
    /// CPU time its handler's polls used (ns), as for the event functions
    /// (`invoker::EventFunction::cpu`).
    cpu_ns: std::sync::atomic::AtomicU64,
}

struct Authorizer {
    header: String,
}

#[derive(Debug, Default)]
struct Cors {
    allow_origins: Vec<String>,
    allow_headers: Vec<String>,
    allow_methods: Vec<String>,
    expose_headers: Vec<String>,
    max_age: Option<u64>,
    allow_credentials: bool,
}

/// API Gateway's stage throttling (`DefaultRouteSettings`): a token bucket holding
/// `burst` requests, refilled at `rate` a second; a request finding it empty gets
/// 429 `{"message":"Too Many Requests"}`.
#[derive(Debug)]
struct Throttle {
    rate: f64,
    burst: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl Throttle {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            bucket: Mutex::new((burst, Instant::now())),
        }
    }

    /// The limits of resolved `DefaultRouteSettings`; none without both limits.
    fn from_settings(settings: &Json) -> Option<Self> {
        let rate = settings.get("ThrottlingRateLimit")?.as_f64()?;
        let burst = settings.get("ThrottlingBurstLimit")?.as_f64()?;
        Some(Self::new(rate, burst))
    }

    /// Takes a token at `now`, if one is left.
    fn admit(&self, now: Instant) -> bool {
        let Ok(mut bucket) = self.bucket.lock() else {
            return true;
        };
        let (tokens, last) = &mut *bucket;
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Each route's own throttling (`RouteSettings`, by route key): routes named there
/// have their own bucket too, on top of the stage's.
fn route_throttles(settings: &Json) -> BTreeMap<String, Throttle> {
    settings
        .as_object()
        .map(|routes| {
            routes
                .iter()
                .filter_map(|(key, s)| Some((key.clone(), Throttle::from_settings(s)?)))
                .collect()
        })
        .unwrap_or_default()
}

struct Inner {
    routes: RouteTable,
    throttle: Option<Throttle>,
    route_throttles: BTreeMap<String, Throttle>,
    functions: BTreeMap<String, FunctionEntry>,
    authorizers: BTreeMap<String, Authorizer>,
    jwt: LocalJwt,
    cors: Option<Cors>,
    account_id: String,
    port: u16,
    events: EventCapture,
    queues: QueueMonitor,
}

impl DevHost {
    /// Serves the template's HttpApi routes on 127.0.0.1:`port` (0 = a free port),
    /// each function with its own `App` built from its template environment, tokens
    /// checked with `jwt` (whose issuer and audience must be the template
    /// authorizer's).
    pub async fn start(
        stack: &LocalStack,
        functions: FunctionRegistry,
        jwt: LocalJwt,
        port: u16,
    ) -> Result<DevHost> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .with_context(|| format!("binding the dev host to 127.0.0.1:{port}"))?;
        Self::start_with_listener(stack, functions, jwt, listener).await
    }

    /// Like [`DevHost::start`], on a listener the caller bound (so the port can go
    /// into the stack's parameters, e.g. the JWT issuer, before the host starts).
    pub async fn start_with_listener(
        stack: &LocalStack,
        functions: FunctionRegistry,
        jwt: LocalJwt,
        listener: TcpListener,
    ) -> Result<DevHost> {
        Self::start_with_options(stack, functions, jwt, listener, DevHostOptions::default()).await
    }

    /// Like [`DevHost::start_with_listener`], with an event capture to serve and the
    /// schedules to run.
    pub async fn start_with_options(
        stack: &LocalStack,
        functions: FunctionRegistry,
        jwt: LocalJwt,
        listener: TcpListener,
        options: DevHostOptions,
    ) -> Result<DevHost> {
        let template = stack.template();
        let routes = RouteTable::new(template.routes())?;

        let mut authorizers = BTreeMap::new();
        for api in template.apis.values() {
            for (name, auth) in &api.authorizers {
                let issuer = stack
                    .resolve_text(&auth.issuer)
                    .with_context(|| format!("resolving the issuer of authorizer {name}"))?;
                let audiences = stack
                    .resolve_list(&auth.audience)
                    .with_context(|| format!("resolving the audience of authorizer {name}"))?;
                if issuer != jwt.issuer {
                    bail!(
                        "authorizer {name} expects issuer {issuer:?} but the local JWT key issues {:?}",
                        jwt.issuer
                    );
                }
                if !audiences.contains(&jwt.audience) {
                    bail!(
                        "authorizer {name} expects audience {audiences:?} but the local JWT key issues {:?}",
                        jwt.audience
                    );
                }
                authorizers.insert(
                    name.clone(),
                    Authorizer {
                        header: auth.header(),
                    },
                );
            }
        }
        if let Some(route) = routes.routes().find(|r| {
            r.authorizer
                .as_ref()
                .is_some_and(|a| !authorizers.contains_key(a))
        }) {
            bail!(
                "route {} uses authorizer {:?}, which is not a JWT authorizer of the template",
                route.route_key(),
                route.authorizer
            );
        }

        let cors = match template.apis.values().find_map(|a| a.cors.as_ref()) {
            None => None,
            Some(value) => Some(parse_cors(
                &stack
                    .resolve(value)
                    .context("resolving CorsConfiguration")?
                    .unwrap_or(Json::Null),
            )),
        };

        let settings = template
            .apis
            .values()
            .find_map(|a| a.route_settings.as_ref())
            .filter(|_| options.throttle);
        let throttle = match settings {
            None => None,
            Some(value) => stack
                .resolve(value)
                .context("resolving DefaultRouteSettings")?
                .as_ref()
                .and_then(Throttle::from_settings),
        };

        let per_route = template
            .apis
            .values()
            .find_map(|a| a.per_route_settings.as_ref())
            .filter(|_| options.throttle);
        let route_throttles = match per_route {
            None => BTreeMap::new(),
            Some(value) => stack
                .resolve(value)
                .context("resolving RouteSettings")?
                .as_ref()
                .map(route_throttles)
                .unwrap_or_default(),
        };

        let mut entries = BTreeMap::new();
        for (id, function) in &template.functions {
            let handler = match functions.get(&function.binary) {
                None if function.routes.is_empty() => None,
                None => {
                    tracing::warn!(function = %id, binary = %function.binary, "no handler registered; its routes answer 501");
                    None
                }
                Some(handler) => {
                    let env = stack.function_env(id)?;
                    let config =
                        Config::from_map(&env).with_context(|| format!("configuration of {id}"))?;
                    let app = App::with_aws(config, stack.sdk_config().clone())
                        .with_context(|| format!("building the App of {id}"))?;
                    Some((handler, Arc::new(app)))
                }
            };
            entries.insert(
                id.clone(),
                FunctionEntry {
                    logical_id: id.clone(),
                    binary: function.binary.clone(),
                    handler,
                    timeout: function
                        .timeout_secs
                        .map(Duration::from_secs)
                        .unwrap_or(DEFAULT_TIMEOUT),
                    invocations: std::sync::atomic::AtomicU64::new(0),
                    cpu_ns: std::sync::atomic::AtomicU64::new(0),
                },
            );
        }

        let kills = KillSwitch::default();
        let event_functions = EventFunctions::new(stack, &functions, &kills)?;
        let pollers = QueuePollers::start(stack, &event_functions, options.queues)
            .await
            .context("starting the SQS pollers")?;
        let queues = pollers.monitor();
        let runner = SchedulerRunner::start(
            stack,
            &event_functions,
            options.schedules.run,
            options.schedules.every,
        );
        let scheduler_schedules = runner.schedules();

        let addr = listener
            .local_addr()
            .context("reading the dev host's address")?;
        let inner = Arc::new(Inner {
            routes,
            throttle,
            route_throttles,
            functions: entries,
            authorizers,
            jwt,
            cors,
            account_id: stack.account_id().to_owned(),
            port: addr.port(),
            events: options.events.clone(),
            queues: queues.clone(),
        });
        let scheduler = Scheduler::start(stack, &functions, options.schedules)
            .context("starting the local scheduler")?;
        let app = Router::new().fallback(dispatch).with_state(inner);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
            if let Err(error) = served {
                tracing::error!(target: "devhost", %error, "dev host server failed");
            }
        });
        Ok(DevHost {
            addr,
            stop: Some(stop),
            task: Some(task),
            scheduler: Some(scheduler),
            pollers: Some(pollers),
            runner: Some(runner),
            queues,
            scheduler_schedules,
            kills,
            events: options.events,
        })
    }

    /// How many messages the stack's queue `logical_id` holds.
    pub async fn queue_depth(&self, logical_id: &str) -> Result<QueueDepth> {
        self.queues.queue_depth(logical_id).await
    }

    /// Waits up to `timeout` until every polled queue is empty and no poller's
    /// invocation is running (see [`QueueMonitor::wait_queues_idle`]).
    pub async fn wait_queues_idle(&self, timeout: Duration) -> Result<()> {
        self.queues.wait_queues_idle(timeout).await
    }

    /// The bodies in the dead-letter queue of `logical_id`, left there (see
    /// [`QueueMonitor::dead_letters`]).
    pub async fn dead_letters(&self, logical_id: &str) -> Result<Vec<String>> {
        self.queues.dead_letters(logical_id).await
    }

    /// The bodies in the dead-letter queue of `logical_id`, deleted.
    pub async fn drain_dead_letters(&self, logical_id: &str) -> Result<Vec<String>> {
        self.queues.drain_dead_letters(logical_id).await
    }

    /// Stops the SQS pollers invoking their functions (see
    /// [`QueueMonitor::pause_pollers`]).
    pub fn pause_pollers(&self) {
        self.queues.pause_pollers();
    }

    /// Lets the SQS pollers take batches again.
    pub fn resume_pollers(&self) {
        self.queues.resume_pollers();
    }

    /// The queues and the pollers, as `GET /_devhost/queues` shows them.
    pub fn queues(&self) -> QueueMonitor {
        self.queues.clone()
    }

    /// Kills the next `count` invocations of `binary` by the SQS pollers and the
    /// Scheduler schedules `after` into their run (see
    /// [`KillSwitch::kill_next_invocations`]).
    pub fn kill_next_invocations(&self, binary: &str, count: usize, after: Duration) {
        self.kills.kill_next_invocations(binary, count, after);
    }

    /// Kills the next invocation of `binary` when `signal` is notified (see
    /// [`KillSwitch::kill_next_invocation_on`]).
    pub fn kill_next_invocation_on(
        &self,
        binary: &str,
        signal: std::sync::Arc<tokio::sync::Notify>,
        after: Duration,
    ) {
        self.kills.kill_next_invocation_on(binary, signal, after);
    }

    /// Every EventBridge Scheduler schedule of the stack's schedule groups.
    pub async fn scheduler_schedules(&self) -> Result<Vec<SchedulerSchedule>> {
        self.scheduler_schedules.list().await
    }

    /// Fires the Scheduler schedule `name` of `group` (name or logical id) now,
    /// whatever its expression and state; returns the target function's result.
    pub async fn fire_scheduler_schedule(&self, group: &str, name: &str) -> Result<Json> {
        self.scheduler_schedules.fire(group, name).await
    }

    /// Fires the schedule of `function` (logical id or binary name) now, through the
    /// path the scheduler's timers use; returns the function's JSON result.
    pub async fn run_schedule(&self, function: &str) -> Result<Json> {
        self.scheduler
            .as_ref()
            .ok_or_else(|| anyhow!("the dev host is stopping"))?
            .run_now(function)
            .await
    }

    /// The template's schedules (run or not).
    pub fn schedules(&self) -> &[crate::template::Schedule] {
        self.scheduler
            .as_ref()
            .map(Scheduler::schedules)
            .unwrap_or_default()
    }

    /// The event capture it serves at `GET /_devhost/events`.
    pub fn events(&self) -> EventCapture {
        self.events.clone()
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the scheduler and accepting, lets in-flight runs and requests finish (up
    /// to 5 s each), then returns.
    pub async fn shutdown(mut self) {
        if let Some(pollers) = self.pollers.take() {
            pollers.shutdown().await;
        }
        if let Some(runner) = self.runner.take() {
            runner.shutdown().await;
        }
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.shutdown().await;
        }
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

impl Drop for DevHost {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn text_list(value: Option<&Json>) -> Vec<String> {
    match value {
        Some(Json::Array(items)) => items
            .iter()
            .filter_map(|v| match v {
                Json::String(s) => Some(s.trim().to_owned()),
                Json::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Some(Json::String(s)) => s
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

fn parse_cors(value: &Json) -> Cors {
    if value == &Json::Bool(true) {
        return Cors {
            allow_origins: vec!["*".into()],
            allow_headers: vec!["*".into()],
            allow_methods: vec!["*".into()],
            ..Cors::default()
        };
    }
    Cors {
        allow_origins: text_list(value.get("AllowOrigins")),
        allow_headers: text_list(value.get("AllowHeaders"))
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        allow_methods: text_list(value.get("AllowMethods"))
            .into_iter()
            .map(|m| m.to_ascii_uppercase())
            .collect(),
        expose_headers: text_list(value.get("ExposeHeaders")),
        max_age: value
            .get("MaxAge")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok())),
        allow_credentials: matches!(value.get("AllowCredentials"), Some(Json::Bool(true))),
    }
}

impl Cors {
    fn allowed_origin(&self, origin: &str) -> Option<String> {
        if self.allow_origins.iter().any(|o| o == origin) {
            Some(origin.to_owned())
        } else if self.allow_origins.iter().any(|o| o == "*") {
            Some(if self.allow_credentials {
                origin.to_owned()
            } else {
                "*".to_owned()
            })
        } else {
            None
        }
    }

    fn decorate(&self, origin: &str, headers: &mut HeaderMap) {
        let Some(allowed) = self.allowed_origin(origin) else {
            return;
        };
        set(headers, "access-control-allow-origin", &allowed);
        if self.allow_credentials {
            set(headers, "access-control-allow-credentials", "true");
        }
        if !self.expose_headers.is_empty() {
            set(
                headers,
                "access-control-expose-headers",
                &self.expose_headers.join(","),
            );
        }
    }

    fn preflight(&self, origin: &str, method: &str, request_headers: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let Some(allowed) = self.allowed_origin(origin) else {
            return headers;
        };
        let method_ok = self
            .allow_methods
            .iter()
            .any(|m| m == "*" || m == &method.to_ascii_uppercase());
        let headers_ok = request_headers
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .all(|h| self.allow_headers.iter().any(|a| a == "*" || *a == h));
        if !method_ok || !headers_ok {
            return headers;
        }
        set(&mut headers, "access-control-allow-origin", &allowed);
        set(
            &mut headers,
            "access-control-allow-methods",
            &self.allow_methods.join(","),
        );
        if !self.allow_headers.is_empty() {
            set(
                &mut headers,
                "access-control-allow-headers",
                &self.allow_headers.join(","),
            );
        }
        if let Some(age) = self.max_age {
            set(&mut headers, "access-control-max-age", &age.to_string());
        }
        if self.allow_credentials {
            set(&mut headers, "access-control-allow-credentials", "true");
        }
        headers
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// A response written by "API Gateway" itself: `{"message": …}`.
fn gateway(status: StatusCode, message: &str) -> Response {
    let mut resp = Response::new(axum::body::Body::from(
        json!({ "message": message }).to_string(),
    ));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

struct Outcome {
    response: Response,
    route: String,
}

async fn dispatch(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let request_id = new_request_id();
    let method = req.method().as_str().to_owned();
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Outcome {
        mut response,
        route,
    } = handle(&inner, peer, req, &request_id).await;
    if let (Some(cors), Some(origin)) = (&inner.cors, &origin)
        && route != PREFLIGHT
    {
        cors.decorate(origin, response.headers_mut());
    }
    set(response.headers_mut(), "apigw-requestid", &request_id);
    tracing::info!(
        target: "devhost",
        request_id = %request_id,
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

async fn handle(inner: &Inner, peer: SocketAddr, req: Request, request_id: &str) -> Outcome {
    let outcome = |response: Response, route: &str| Outcome {
        response,
        route: route.to_owned(),
    };
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_ascii_uppercase();
    let raw_path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();

    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return outcome(
            gateway(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
            "-",
        );
    }

    if raw_path == EVENTS_PATH {
        return outcome(
            devhost_events(inner, &parts.method).await,
            &format!("{method} {EVENTS_PATH}"),
        );
    }
    if raw_path == QUEUES_PATH {
        return outcome(
            devhost_queues(inner, &parts.method).await,
            &format!("{method} {QUEUES_PATH}"),
        );
    }
    if raw_path == FUNCTIONS_PATH {
        return outcome(
            devhost_functions(inner, &parts.method),
            &format!("{method} {FUNCTIONS_PATH}"),
        );
    }

    let matched = inner.routes.find(&method, &raw_path);
    if parts.method == Method::OPTIONS
        && matched.is_none()
        && let Some(cors) = &inner.cors
        && let Some(origin) = parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
        && let Some(wanted) = parts
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| v.to_str().ok())
    {
        let requested_headers = parts
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mut resp = Response::new(axum::body::Body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        *resp.headers_mut() = cors.preflight(origin, wanted, requested_headers);
        return outcome(resp, PREFLIGHT);
    }
    let Some(matched) = matched else {
        return outcome(gateway(StatusCode::NOT_FOUND, "Not Found"), "-");
    };
    let route = matched.route;
    let route_key = route.route_key();
    let now = Instant::now();
    let stage = inner.throttle.as_ref().is_none_or(|t| t.admit(now));
    let own = inner
        .route_throttles
        .get(&route_key)
        .is_none_or(|t| t.admit(now));
    if !stage || !own {
        return outcome(
            gateway(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
            &route_key,
        );
    }

    let jwt_context = match &route.authorizer {
        None => None,
        Some(name) => {
            let Some(authorizer) = inner.authorizers.get(name) else {
                return outcome(
                    gateway(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
                    &route_key,
                );
            };
            let token = parts
                .headers
                .get(authorizer.header.as_str())
                .and_then(|v| v.to_str().ok())
                .map(strip_bearer)
                .filter(|t| !t.is_empty());
            let Some(token) = token else {
                return outcome(
                    gateway(StatusCode::UNAUTHORIZED, "Unauthorized"),
                    &route_key,
                );
            };
            let claims = match inner.jwt.verify(token) {
                Ok(claims) => claims,
                Err(rejected) => {
                    tracing::debug!(target: "devhost", reason = %rejected, "token rejected");
                    return outcome(
                        gateway(StatusCode::UNAUTHORIZED, "Unauthorized"),
                        &route_key,
                    );
                }
            };
            let scopes = scopes_of(&claims);
            if !route.scopes.is_empty() && !route.scopes.iter().any(|s| scopes.contains(s)) {
                return outcome(gateway(StatusCode::FORBIDDEN, "Forbidden"), &route_key);
            }
            Some(JwtContext {
                claims: claims
                    .iter()
                    .map(|(k, v)| (k.clone(), flatten_claim(v)))
                    .collect(),
                scopes,
            })
        }
    };

    let Some(function) = inner.functions.get(&route.function) else {
        return outcome(
            gateway(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
            &route_key,
        );
    };
    let Some((handler, app)) = &function.handler else {
        let message = format!(
            "the dev host has no handler for function {} (binary {}); register it in devhost::FunctionRegistry",
            function.logical_id, function.binary
        );
        return outcome(gateway(StatusCode::NOT_IMPLEMENTED, &message), &route_key);
    };

    let body = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return outcome(
                gateway(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
                &route_key,
            );
        }
        Err(_) => return outcome(gateway(StatusCode::BAD_REQUEST, "Bad Request"), &route_key),
    };

    if let Some(host) = parts.headers.get(header::HOST) {
        let valid = host
            .to_str()
            .ok()
            .is_some_and(|h| url::Url::parse(&format!("http://{h}{raw_path}")).is_ok());
        if !valid {
            return outcome(gateway(StatusCode::BAD_REQUEST, "Bad Request"), &route_key);
        }
    }

    let protocol = match parts.version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };
    let source_ip = peer.ip().to_string();
    let event = build_event(&EventInput {
        route_key: &route_key,
        method: &method,
        raw_path: &raw_path,
        raw_query: &raw_query,
        headers: &parts.headers,
        body: &body,
        path_params: &matched.params,
        source_ip: &source_ip,
        port: inner.port,
        protocol,
        jwt: jwt_context.as_ref(),
        request_id,
        account_id: &inner.account_id,
        api_id: LOCAL_API_ID,
        time: OffsetDateTime::now_utc(),
    });
    let request = match to_request(&event) {
        Ok(r) => r,
        Err(error) => {
            tracing::warn!(target: "devhost", %error, "could not build the function's request");
            return outcome(gateway(StatusCode::BAD_REQUEST, "Bad Request"), &route_key);
        }
    };

    // API Gateway starts a new trace per request; the function's AWS requests carry it.
    // Each poll of the handler is timed on the polling thread's CPU clock, as the event
    // functions' are: the function's own work, apart from the dev host's.
    let mut handled = Box::pin(handler(app, request));
    let cpu = &function.cpu_ns;
    let timed = std::future::poll_fn(move |cx| {
        let before = crate::invoker::thread_cpu_ns();
        let polled = handled.as_mut().poll(cx);
        cpu.fetch_add(
            crate::invoker::thread_cpu_ns().saturating_sub(before),
            std::sync::atomic::Ordering::Relaxed,
        );
        polled
    });
    function
        .invocations
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let invocation = crate::trace::within(
        crate::trace::TraceHeader::new_root(),
        AssertUnwindSafe(timed).catch_unwind(),
    );
    let result = match tokio::time::timeout(function.timeout, invocation).await {
        Err(_) => Err(anyhow!("timed out after {}s", function.timeout.as_secs())),
        Ok(Err(_panic)) => Err(anyhow!("the handler panicked")),
        Ok(Ok(Err(error))) => Err(anyhow!("the handler failed: {error}")),
        Ok(Ok(Ok(response))) => Ok(response),
    };
    match result {
        Ok(response) => outcome(into_http(response), &route_key),
        Err(error) => {
            tracing::error!(target: "devhost", function = %function.logical_id, %error, "invocation failed");
            outcome(
                gateway(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
                &route_key,
            )
        }
    }
}

/// `GET /_devhost/events`: every event captured so far, newest last, as a JSON list.
async fn devhost_events(inner: &Inner, method: &Method) -> Response {
    if method != Method::GET {
        return gateway(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    match inner.events.all().await {
        Ok(events) => pretty_json(&events),
        Err(error) => {
            tracing::warn!(target: "devhost", error = %format!("{error:#}"), "listing captured events failed");
            gateway(StatusCode::SERVICE_UNAVAILABLE, &format!("{error:#}"))
        }
    }
}

/// `GET /_devhost/functions`: every HTTP function with a handler, its invocations and
/// the CPU its handler's polls used.
fn devhost_functions(inner: &Inner, method: &Method) -> Response {
    if method != Method::GET {
        return gateway(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let functions: Vec<serde_json::Value> = inner
        .functions
        .values()
        .filter(|f| f.handler.is_some())
        .map(|f| {
            let ns = f.cpu_ns.load(std::sync::atomic::Ordering::Relaxed);
            serde_json::json!({
                "function": f.logical_id,
                "binary": f.binary,
                "invocations": f.invocations.load(std::sync::atomic::Ordering::Relaxed),
                "cpu_ms": ns as f64 / 1e6,
            })
        })
        .collect();
    pretty_json(&serde_json::json!({ "functions": functions }))
}

/// A dev-host report: pretty JSON, one trailing newline.
fn pretty_json<T: serde::Serialize>(value: &T) -> Response {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    text.push('\n');
    let mut resp = Response::new(axum::body::Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `GET /_devhost/queues`: every queue of the stack with its depth, and every polled
/// SQS event source with its counters.
async fn devhost_queues(inner: &Inner, method: &Method) -> Response {
    if method != Method::GET {
        return gateway(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    match inner.queues.report().await {
        Ok(report) => pretty_json(&report),
        Err(error) => {
            tracing::warn!(target: "devhost", error = %format!("{error:#}"), "reading the queues failed");
            gateway(StatusCode::SERVICE_UNAVAILABLE, &format!("{error:#}"))
        }
    }
}

fn strip_bearer(value: &str) -> &str {
    let value = value.trim();
    match value.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => value[7..].trim(),
        _ => value,
    }
}

/// The function's response as the client receives it.
fn into_http(response: lambda_http::Response<lambda_http::Body>) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        lambda_http::Body::Text(text) => text.into_bytes(),
        lambda_http::Body::Binary(bytes) => bytes,
        _ => Vec::new(),
    };
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_named_in_route_settings_get_their_own_bucket() {
        let t = route_throttles(&json!({
            "POST /v1/webhooks/hubspot": {"ThrottlingBurstLimit": 2, "ThrottlingRateLimit": 1},
            "GET /v1/oauth/{provider}/callback": {"ThrottlingBurstLimit": 20},
        }));
        assert_eq!(t.len(), 1, "a route without both limits has none");
        let hook = &t["POST /v1/webhooks/hubspot"];
        let t0 = Instant::now();
        assert!(hook.admit(t0) && hook.admit(t0));
        assert!(!hook.admit(t0), "its own burst is spent");
    }

    #[test]
    fn the_throttle_lets_a_burst_through_then_refills_at_its_rate() {
        let throttle =
            Throttle::from_settings(&json!({"ThrottlingRateLimit": 10, "ThrottlingBurstLimit": 3}))
                .unwrap();
        let t0 = Instant::now();
        assert!((0..3).all(|_| throttle.admit(t0)));
        assert!(!throttle.admit(t0), "the burst is spent");
        assert!(!throttle.admit(t0 + Duration::from_millis(50)));
        assert!(
            throttle.admit(t0 + Duration::from_millis(150)),
            "one token after 0.1 s"
        );
        assert!(!throttle.admit(t0 + Duration::from_millis(150)));
        assert!(Throttle::from_settings(&json!({"ThrottlingRateLimit": 10})).is_none());
    }

    #[test]
    fn bearer_prefixes_are_optional() {
        assert_eq!(strip_bearer("Bearer abc"), "abc");
        assert_eq!(strip_bearer("bearer  abc "), "abc");
        assert_eq!(strip_bearer("abc"), "abc");
        assert_eq!(strip_bearer("Bear"), "Bear");
    }

    #[test]
    fn cors_follows_the_configuration() {
        let cors = parse_cors(&json!({
            "AllowOrigins": ["http://localhost:5173"],
            "AllowHeaders": ["authorization", "content-type"],
            "AllowMethods": ["GET", "POST"],
            "ExposeHeaders": ["etag", "x-request-id"],
            "MaxAge": 600
        }));
        let ok = cors.preflight(
            "http://localhost:5173",
            "post",
            "Authorization, Content-Type",
        );
        assert_eq!(ok["access-control-allow-origin"], "http://localhost:5173");
        assert_eq!(ok["access-control-max-age"], "600");
        assert!(cors.preflight("http://evil.test", "GET", "").is_empty());
        assert!(
            cors.preflight("http://localhost:5173", "DELETE", "")
                .is_empty()
        );
        let mut headers = HeaderMap::new();
        cors.decorate("http://localhost:5173", &mut headers);
        assert_eq!(
            headers["access-control-expose-headers"],
            "etag,x-request-id"
        );
    }
}
