//! What every function builds once per cold start and shares across invocations.

use std::time::Duration;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::crypto::{CacheLimits, Envelope, KmsKeys};
use crate::egress::UrlPolicy;
use crate::providers::Catalogue;
use crate::secrets::PlatformSecretStore;
use crate::store::Table;

/// Stack size of every runtime thread that runs handlers: Lambda gives a function's
/// threads far more than tokio's 2 MiB default, and the sync engine's futures need it.
pub const THREAD_STACK_SIZE: usize = 16 * 1024 * 1024;

/// The multi-threaded runtime functions (and the dev host, which runs them in-process)
/// are driven by, with [`THREAD_STACK_SIZE`] stacks.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(THREAD_STACK_SIZE)
        .enable_all()
        .build()
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
    /// Builds the context from `config`, with AWS settings from the environment
    /// (region, credentials, `AWS_ENDPOINT_URL` for the local stack).
    pub async fn new(config: Config) -> Result<Self, BootError> {
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        Self::with_aws(config, aws)
    }

    /// Builds the context from `config` and an SDK configuration.
    pub fn with_aws(config: Config, aws: aws_config::SdkConfig) -> Result<Self, BootError> {
        let catalogue = Catalogue::get()?;
        let table = Table::new(aws_sdk_dynamodb::Client::new(&aws), &config.table);
        let envelope = Envelope::new(
            KmsKeys::new(aws_sdk_kms::Client::new(&aws), &config.kms_key_id),
            CacheLimits::default(),
        );
        let platform = PlatformSecretStore::new(
            aws_sdk_secretsmanager::Client::new(&aws),
            &config.platform_secret_id,
            Duration::from_secs(300),
        );
        let http = crate::egress::Egress::new(&UrlPolicy {
            allow_loopback_http: config.allow_loopback_http,
        })
        .map_err(|e| BootError::Http(e.to_string()))?;
        let events = crate::events::EventPublisher::new(
            aws_sdk_eventbridge::Client::new(&aws),
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
