//! What every function builds once per cold start and shares across invocations.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::audit::AuditLog;
use crate::config::{Config, ConfigError};
use crate::crypto::{CacheLimits, Envelope, KmsKeys};
use crate::egress::UrlPolicy;
use crate::providers::Catalogue;
use crate::secrets::PlatformSecretStore;
use crate::store::Table;

/// The allocator every function binary installs (`#[global_allocator]` in its
/// `main.rs`; the dev host and the bench install it too, so handlers run there on the
/// allocator they run on in Lambda). mimalloc: with glibc's malloc a fifth of the
/// dispatch handler's CPU went to allocating and freeing (the AWS SDK's many small
/// allocations per call), much of it in glibc's consolidation of freed chunks.
pub use mimalloc::MiMalloc as Allocator;

/// Stack size of every runtime thread that runs handlers: Lambda gives a function's
/// threads far more than tokio's 2 MiB default, and the sync engine's futures need it.
pub const THREAD_STACK_SIZE: usize = 16 * 1024 * 1024;

/// The multi-threaded runtime the dev host (which runs every function in-process, many
/// requests at once) and the tests are driven by, with [`THREAD_STACK_SIZE`] stacks.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(THREAD_STACK_SIZE)
        .enable_all()
        .build()
}

/// A function's error as the Lambda runtime reports it.
pub type Error = lambda_http::Error;

/// A deployed function's `main`: builds the [`App`] from the environment and runs
/// `serve` with it on one current-thread runtime. Lambda hands a function one event at
/// a time, so worker threads would only cost start-up time and memory; the one thread
/// has [`THREAD_STACK_SIZE`] of stack, like the dev host's workers.
pub fn serve<S, F>(serve: S) -> Result<(), Error>
where
    S: FnOnce(App) -> F + Send + 'static,
    F: Future<Output = Result<(), Error>>,
{
    let thread = std::thread::Builder::new()
        .name("function".into())
        .stack_size(THREAD_STACK_SIZE)
        .spawn(move || -> Result<(), Error> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move { serve(App::from_env()?).await })
        })?;
    thread
        .join()
        .map_err(|_| Error::from("the function's thread panicked"))?
}

/// The SDK's HTTP client, minus its check at client construction: that check builds a
/// connector, which reads and parses every system root certificate — for each of the
/// five SDK clients, before the first event. Here the first AWS call builds it (once,
/// cached by the inner client); a function that never calls AWS never pays for it.
#[derive(Debug)]
struct LazyTlsClient(aws_sdk_dynamodb::config::SharedHttpClient);

impl aws_smithy_runtime_api::client::http::HttpClient for LazyTlsClient {
    fn http_connector(
        &self,
        settings: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
        components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// An AWS SDK client built at its first use. Building one (its endpoint rules and
/// partition table, its runtime plugins) is a fixed cost of every cold start, and most
/// invocations never call KMS, Secrets Manager or EventBridge.
pub struct LazyClient<C> {
    client: Arc<OnceLock<C>>,
    make: Arc<dyn Fn() -> C + Send + Sync>,
}

impl<C: Send + Sync + 'static> LazyClient<C> {
    /// A client `make` builds from `aws` when first asked for.
    pub fn new(aws: &aws_config::SdkConfig, make: fn(&aws_config::SdkConfig) -> C) -> Self {
        let aws = aws.clone();
        Self {
            client: Arc::new(OnceLock::new()),
            make: Arc::new(move || make(&aws)),
        }
    }

    /// The client, built now if this is the first call.
    pub fn get(&self) -> &C {
        self.client.get_or_init(|| (self.make)())
    }
}

/// A client already built (the dev host's and the tests' shared clients).
impl<C: Clone + Send + Sync + 'static> From<C> for LazyClient<C> {
    fn from(client: C) -> Self {
        let built = client.clone();
        Self {
            client: Arc::new(OnceLock::from(client)),
            make: Arc::new(move || built.clone()),
        }
    }
}

impl<C> Clone for LazyClient<C> {
    fn clone(&self) -> Self {
        Self {
            client: Arc::clone(&self.client),
            make: Arc::clone(&self.make),
        }
    }
}

impl<C> std::fmt::Debug for LazyClient<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyClient")
            .field("built", &self.client.get().is_some())
            .finish()
    }
}

/// Start-up failed; the message names what.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Configuration is missing or malformed.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The embedded catalogue is broken.
    #[error(transparent)]
    Catalogue(#[from] crate::providers::CatalogueError),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(String),
}

/// The AWS SDK configuration of a deployed function, read from the variables Lambda
/// sets: `AWS_REGION` (required), the execution role's credentials
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, read when a
/// request is signed) and, for a local stack, `AWS_ENDPOINT_URL`. Retries and timeouts
/// are the SDK's defaults (standard mode, 3 attempts; 3.1 s to connect); the sleep and
/// time source are the clients' tokio defaults.
///
/// The HTTP client is the SDK's default one (rustls with aws-lc, the system's roots),
/// shared by every client and wrapped in [`LazyTlsClient`].
///
/// Built directly rather than by `aws_config::load_defaults`, whose provider chains
/// read profile files and build the credential chain's container and instance
/// metadata providers, which a function never uses. Not read: profile files,
/// `AWS_MAX_ATTEMPTS`/`AWS_RETRY_MODE`, FIPS/dual-stack and per-service endpoint URLs.
pub fn sdk_config_from_env(
    get: impl Fn(&str) -> Option<String>,
) -> Result<aws_config::SdkConfig, ConfigError> {
    use aws_config::{BehaviorVersion, Region, SdkConfig};
    use aws_sdk_dynamodb::config::SharedCredentialsProvider;

    let set = |name: &str| {
        get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let region = set("AWS_REGION").ok_or(ConfigError::Missing("AWS_REGION"))?;
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        ))
        .retry_config(aws_config::retry::RetryConfig::standard())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(3_100))
                .build(),
        )
        .http_client(aws_sdk_dynamodb::config::SharedHttpClient::new(
            LazyTlsClient(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
                    ))
                    .build_https(),
            ),
        ))
        .stalled_stream_protection(
            aws_config::stalled_stream_protection::StalledStreamProtectionConfig::enabled().build(),
        );
    if let Some(url) = set("AWS_ENDPOINT_URL") {
        builder = builder.endpoint_url(url);
    }
    Ok(builder.build())
}

/// The shared context of a function.
pub struct App {
    /// Configuration.
    pub config: Config,
    /// The provider catalogue.
    pub catalogue: &'static Catalogue,
    /// The DynamoDB table.
    pub table: Table,
    /// Envelope encryption of tenant secrets.
    pub envelope: Envelope<KmsKeys>,
    /// Platform secrets.
    pub platform: PlatformSecretStore,
    /// The audit log.
    pub audit: AuditLog,
    /// The outbound HTTP client (SSRF-guarded, no redirects).
    pub http: crate::egress::Egress,
    /// Events for the rest of the product (EventBridge).
    pub events: crate::events::EventPublisher,
    /// The AWS SDK configuration, for clients a function adds.
    pub aws: aws_config::SdkConfig,
}

impl App {
    /// Builds a deployed function's context: configuration, logging and AWS settings
    /// from the environment (see [`sdk_config_from_env`]).
    pub fn from_env() -> Result<Self, BootError> {
        let config = Config::from_env()?;
        crate::telemetry::init(&config.log_level);
        let aws = sdk_config_from_env(|name| std::env::var(name).ok())?;
        Self::with_aws(config, aws)
    }

    /// Builds the context from `config` and an SDK configuration.
    pub fn with_aws(config: Config, aws: aws_config::SdkConfig) -> Result<Self, BootError> {
        let catalogue = Catalogue::get()?;
        let table = Table::new(aws_sdk_dynamodb::Client::new(&aws), &config.table);
        let envelope = Envelope::new(
            KmsKeys::new(
                LazyClient::new(&aws, aws_sdk_kms::Client::new),
                &config.kms_key_id,
            ),
            CacheLimits::default(),
        );
        let platform = PlatformSecretStore::new(
            LazyClient::new(&aws, aws_sdk_secretsmanager::Client::new),
            &config.platform_secret_id,
            Duration::from_secs(300),
        );
        let http = crate::egress::Egress::new(&UrlPolicy {
            allow_loopback_http: config.allow_loopback_http,
        })
        .map_err(|e| BootError::Http(e.to_string()))?;
        let events = crate::events::EventPublisher::new(
            LazyClient::new(&aws, aws_sdk_eventbridge::Client::new),
            config.event_bus.clone(),
        );
        Ok(Self {
            audit: AuditLog::new(table.clone()),
            events,
            config,
            catalogue,
            table,
            envelope,
            platform,
            http,
            aws,
        })
    }

    /// What tenant URLs may point at under this deployment.
    pub fn url_policy(&self) -> UrlPolicy {
        UrlPolicy {
            allow_loopback_http: self.config.allow_loopback_http,
        }
    }
}
