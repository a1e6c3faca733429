//! Everything at once for scenario tests and `devhost up`: moto (or a given endpoint),
//! the provider sandbox, the stack bootstrapped from `template.yaml`, the dev host and
//! a JWT issuer whose tokens it accepts.
//!
//! Local values: `PublicBaseUrl` is the dev host's own URL (so OAuth redirect URIs
//! come back to it), the platform secret holds the sandbox's OAuth apps, and a capture
//! of the stack's EventBridge events is installed (see [`LocalEnv::events`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_config::SdkConfig;

use crate::capture::EventCapture;
use crate::jwt::LocalJwt;
use crate::moto::MotoServer;
use crate::registry::FunctionRegistry;
use crate::schedule::SchedulerOptions;
use crate::scheduler::SchedulerSchedule;
use crate::server::{DevHost, DevHostOptions};
use crate::sqs::{QueueDepth, QueueOptions};
use crate::stack::{LocalStack, StackOptions, bootstrap};
use crate::template::Template;

/// The `JwtAudience` of local stacks.
pub const LOCAL_AUDIENCE: &str = "conduit-local";
/// The `DashboardOrigins` of local stacks.
pub const LOCAL_DASHBOARD_ORIGIN: &str = "http://localhost:5173";

/// The logical id of the platform secret, seeded with the sandbox's OAuth apps.
pub const PLATFORM_SECRET: &str = "PlatformSecret";

/// The providers whose OAuth app the provider sandbox registers (`custom_oauth` is
/// deliberately absent: custom providers use the tenant's own app).
pub const SANDBOX_OAUTH_PROVIDERS: [&str; 8] = [
    "hubspot",
    "salesforce",
    "zoho",
    "pipedrive",
    "dynamics365",
    "google",
    "zendesk",
    "genesys",
];

/// The `JwtIssuer` of a local stack whose dev host listens on `port`.
pub fn local_issuer(port: u16) -> String {
    format!("http://127.0.0.1:{port}/local-issuer")
}

/// The `PublicBaseUrl` of a local stack whose dev host listens on `port`: the dev
/// host itself.
pub fn local_public_base_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// The platform secret of a local stack: the sandbox's OAuth client of every
/// [`SANDBOX_OAUTH_PROVIDERS`] (`{p}-sandbox-client-id` / `{p}-sandbox-client-secret`)
/// and no signing keys.
pub fn sandbox_platform_secret() -> String {
    let apps: serde_json::Map<String, serde_json::Value> = SANDBOX_OAUTH_PROVIDERS
        .iter()
        .map(|p| {
            (
                (*p).to_owned(),
                serde_json::json!({
                    "client_id": format!("{p}-sandbox-client-id"),
                    "client_secret": format!("{p}-sandbox-client-secret"),
                }),
            )
        })
        .collect();
    serde_json::json!({ "oauth_apps": apps, "signing_keys": {} }).to_string()
}

/// How to start a [`LocalEnv`]; `Default` suits tests (free ports, a unique stack on
/// the process-wide moto, an in-memory JWT key, every registered function, the SQS
/// event sources polled, schedules not fired on their own).
#[derive(Debug, Clone)]
pub struct LocalEnvOptions {
    /// The template (default: the repository's `template.yaml`).
    pub template: Option<PathBuf>,
    /// The stack name (default: a fresh unique one, so tests sharing moto don't meet).
    pub stack_name: Option<String>,
    /// An AWS endpoint to use (default: [`MotoServer::shared`]).
    pub aws_endpoint: Option<String>,
    /// The dev host's port (0: a free one).
    pub port: u16,
    /// The sandbox's port (0: a free one).
    pub sandbox_port: u16,
    /// The JWT signing key (default: random, in memory).
    pub jwt_key: Option<Vec<u8>>,
    /// Template parameters over the local defaults (`JwtIssuer`, `JwtAudience`,
    /// `DashboardOrigins`, `PublicBaseUrl`).
    pub parameters: BTreeMap<String, String>,
    /// Secret values by logical id (see [`StackOptions::secret_values`]); without a
    /// value for `PlatformSecret`, it gets [`sandbox_platform_secret`].
    pub secret_values: BTreeMap<String, String>,
    /// The handlers (default: [`FunctionRegistry::conduit`]).
    pub functions: Option<FunctionRegistry>,
    /// Fire the template's rate schedules and the stack's EventBridge Scheduler
    /// schedules when due (default: off, so tests are deterministic;
    /// [`LocalEnv::run_schedule`] and [`LocalEnv::fire_scheduler_schedule`] run one on
    /// demand either way).
    pub run_schedules: bool,
    /// With `run_schedules`, fire every template schedule and every `rate(…)` Scheduler
    /// schedule this often instead of at its rate (for demos).
    pub schedule_every: Option<Duration>,
    /// Poll the template's SQS event sources into their functions, as Lambda's event
    /// source mappings do (default: on; see [`crate::sqs`]).
    pub poll_queues: bool,
    /// Local-only speed-up: the messages of a failed SQS invocation become visible
    /// again after this delay instead of the queue's visibility timeout (default: none,
    /// as in AWS). Tests of retries and dead-letter queues set it (e.g. to zero).
    pub sqs_retry_delay: Option<Duration>,
    /// Throttle like the stage (`DefaultRouteSettings`, and each route named in
    /// `RouteSettings` with its own bucket: 429 `{"message":"Too Many
    /// Requests"}`) — on for `devhost up` and the fuzzer; off by default, so tests and
    /// benchmarks measure Conduit rather than the stage limit.
    pub throttle: bool,
}

impl Default for LocalEnvOptions {
    fn default() -> Self {
        Self {
            template: None,
            stack_name: None,
            aws_endpoint: None,
            port: 0,
            sandbox_port: 0,
            jwt_key: None,
            parameters: BTreeMap::new(),
            secret_values: BTreeMap::new(),
            functions: None,
            run_schedules: false,
            schedule_every: None,
            poll_queues: true,
            sqs_retry_delay: None,
            throttle: false,
        }
    }
}

/// A running local environment.
#[derive(Debug)]
pub struct LocalEnv {
    /// The AWS endpoint (moto).
    pub aws_endpoint: String,
    /// The SDK configuration reaching it.
    pub aws: SdkConfig,
    /// The provider sandbox.
    pub sandbox: sandbox::Sandbox,
    /// The bootstrapped stack.
    pub stack: LocalStack,
    /// The dev host.
    pub devhost: DevHost,
    /// Issues tokens the dev host accepts.
    pub jwt: LocalJwt,
    events: EventCapture,
}

impl LocalEnv {
    /// Starts (or reuses) moto, starts the sandbox, bootstraps the stack with the
    /// sandbox as provider origin, and serves the dev host.
    pub async fn start(options: LocalEnvOptions) -> Result<LocalEnv> {
        let aws_endpoint = match options.aws_endpoint {
            Some(endpoint) => endpoint,
            None => tokio::task::spawn_blocking(|| MotoServer::shared().map(MotoServer::endpoint))
                .await
                .context("starting moto")??,
        };
        let aws = crate::aws::moto_sdk_config(&aws_endpoint).await;
        let sandbox = sandbox::Sandbox::start(options.sandbox_port)
            .await
            .with_context(|| {
                format!(
                    "starting the provider sandbox on port {}",
                    options.sandbox_port
                )
            })?;
        let template_path = match options.template {
            Some(path) => path,
            None => crate::paths::repo_root()?.join("template.yaml"),
        };
        let template = Template::load(&template_path)?;
        let stack_name = options
            .stack_name
            .unwrap_or_else(|| format!("t{}", ulid::Ulid::new().to_string().to_ascii_lowercase()));

        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, options.port))
            .await
            .with_context(|| format!("binding the dev host to 127.0.0.1:{}", options.port))?;
        let port = listener
            .local_addr()
            .context("reading the dev host's port")?
            .port();

        let mut stack_options = StackOptions::new(stack_name)
            .parameter("JwtIssuer", local_issuer(port))
            .parameter("JwtAudience", LOCAL_AUDIENCE)
            .parameter("DashboardOrigins", LOCAL_DASHBOARD_ORIGIN)
            .local_env("CONDUIT_PROVIDER_ORIGIN_OVERRIDE", sandbox.url())
            .local_env("CONDUIT_ALLOW_LOOPBACK_HTTP", "true");
        if template.parameters.contains_key("PublicBaseUrl") {
            stack_options = stack_options.parameter("PublicBaseUrl", local_public_base_url(port));
        }
        stack_options.parameters.extend(options.parameters);
        stack_options.secret_values = options.secret_values;
        let has_platform_secret = template
            .resources
            .get(PLATFORM_SECRET)
            .is_some_and(|r| r.kind == "AWS::SecretsManager::Secret");
        if has_platform_secret && !stack_options.secret_values.contains_key(PLATFORM_SECRET) {
            stack_options
                .secret_values
                .insert(PLATFORM_SECRET.to_owned(), sandbox_platform_secret());
        }
        let stack = bootstrap(&template, &aws, &stack_options).await?;

        let has_bus = template
            .resources
            .values()
            .any(|r| r.kind == "AWS::Events::EventBus");
        let events = if has_bus {
            EventCapture::install(&stack)
                .await
                .context("installing the capture of the stack's events")?
        } else {
            EventCapture::off("the template has no AWS::Events::EventBus")
        };

        let issuer = stack_options.parameters["JwtIssuer"].clone();
        let audience = stack_options.parameters["JwtAudience"].clone();
        let jwt = match options.jwt_key {
            Some(key) => LocalJwt::new(issuer, audience, key),
            None => LocalJwt::random(issuer, audience),
        };
        let functions = options.functions.unwrap_or_else(FunctionRegistry::conduit);
        let devhost = DevHost::start_with_options(
            &stack,
            functions,
            jwt.clone(),
            listener,
            DevHostOptions {
                events: events.clone(),
                schedules: SchedulerOptions {
                    run: options.run_schedules,
                    every: options.schedule_every,
                },
                queues: QueueOptions {
                    run: options.poll_queues,
                    retry_delay: options.sqs_retry_delay,
                },
                throttle: options.throttle,
            },
        )
        .await?;
        Ok(LocalEnv {
            aws_endpoint,
            aws,
            sandbox,
            stack,
            devhost,
            jwt,
            events,
        })
    }

    /// What the stack published on EventBridge (Conduit's source), read from the
    /// capture queue installed at start.
    pub fn events(&self) -> EventCapture {
        self.events.clone()
    }

    /// Fires the schedule of `function` (logical id or binary name, e.g.
    /// `TokenRefreshFunction`) now, through the path the scheduler uses; returns the
    /// function's JSON result (the token sweep's report).
    pub async fn run_schedule(&self, function: &str) -> Result<serde_json::Value> {
        self.devhost.run_schedule(function).await
    }

    /// How many messages the stack's queue `logical_id` (e.g. `SyncQueue`) holds:
    /// visible, in flight, delayed.
    pub async fn queue_depth(&self, logical_id: &str) -> Result<QueueDepth> {
        self.devhost.queue_depth(logical_id).await
    }

    /// Waits up to `timeout` until every queue the dev host polls holds no message
    /// (visible, in flight or delayed) and no invocation of a poller is running; fails
    /// with the queues' depths when they don't. Failed messages stay in flight for the
    /// queue's visibility timeout unless [`LocalEnvOptions::sqs_retry_delay`] is set.
    pub async fn wait_queues_idle(&self, timeout: Duration) -> Result<()> {
        self.devhost.wait_queues_idle(timeout).await
    }

    /// The bodies of the messages in the dead-letter queue of the stack's queue
    /// `logical_id` (the target of its redrive policy; a queue without one, e.g.
    /// `SyncDeadLetterQueue`, is read itself), left in the queue.
    pub async fn dead_letters(&self, logical_id: &str) -> Result<Vec<String>> {
        self.devhost.dead_letters(logical_id).await
    }

    /// Like [`LocalEnv::dead_letters`], deleting what it returns.
    pub async fn drain_dead_letters(&self, logical_id: &str) -> Result<Vec<String>> {
        self.devhost.drain_dead_letters(logical_id).await
    }

    /// Crash simulator: the next `count` invocations of the function built as `binary`
    /// by the SQS pollers and the Scheduler schedules are killed `after` into their
    /// run — a handler still running then is cancelled (its future dropped, as a Lambda
    /// timeout or crash stops it), one that finished sooner has its result thrown away.
    /// Their messages are not deleted and are delivered again (after the visibility
    /// timeout, or [`LocalEnvOptions::sqs_retry_delay`]).
    pub fn kill_next_invocations(&self, binary: &str, count: usize, after: Duration) {
        self.devhost.kill_next_invocations(binary, count, after);
    }

    /// Kills the next invocation of `binary` when `signal` is notified, at most `after`
    /// into its run.
    pub fn kill_next_invocation_on(
        &self,
        binary: &str,
        signal: std::sync::Arc<tokio::sync::Notify>,
        after: Duration,
    ) {
        self.devhost.kill_next_invocation_on(binary, signal, after);
    }

    /// Stops the SQS pollers invoking their functions: invocations under way finish; a
    /// batch a poller was receiving meanwhile is held, in flight, until resumed.
    pub fn pause_pollers(&self) {
        self.devhost.pause_pollers();
    }

    /// Lets the SQS pollers take batches again.
    pub fn resume_pollers(&self) {
        self.devhost.resume_pollers();
    }

    /// Every EventBridge Scheduler schedule in the stack's schedule groups (e.g. the
    /// sync schedules in `SyncScheduleGroup`), enabled or not.
    pub async fn scheduler_schedules(&self) -> Result<Vec<SchedulerSchedule>> {
        self.devhost.scheduler_schedules().await
    }

    /// Fires the EventBridge Scheduler schedule `name` of `group` (the group's name or
    /// its logical id, e.g. `SyncScheduleGroup`) now, whatever its expression and
    /// state: its target function runs on the target's `Input`; returns its result.
    pub async fn fire_scheduler_schedule(
        &self,
        group: &str,
        name: &str,
    ) -> Result<serde_json::Value> {
        self.devhost.fire_scheduler_schedule(group, name).await
    }

    /// The dev host's base URL.
    pub fn url(&self) -> String {
        self.devhost.url()
    }

    /// A token for `user` of `tenant` with `role`, valid for an hour.
    pub fn token(&self, tenant: &str, user: &str, role: &str) -> Result<String> {
        self.jwt.mint(tenant, user, role, Duration::from_secs(3600))
    }

    /// Stops the dev host and the sandbox (moto stays: it may be shared).
    pub async fn shutdown(self) {
        self.devhost.shutdown().await;
        self.sandbox.shutdown().await;
    }
}
