//! Platform secrets from Secrets Manager: the platform's default OAuth apps per
//! provider and signing keys, as one JSON document, cached per warm container.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde::Deserialize;
use tokio::sync::Mutex;

/// The platform's own OAuth app for a provider (the fallback when a tenant has none).
#[derive(Debug, Clone, Deserialize)]
pub struct PlatformApp {
    /// The app's client id.
    pub client_id: String,
    /// The app's client secret.
    pub client_secret: SecretString,
}

/// The platform secret document.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PlatformSecrets {
    /// Default OAuth apps by provider id.
    #[serde(default)]
    pub oauth_apps: BTreeMap<String, PlatformApp>,
    /// Named signing keys (webhook secrets and such).
    #[serde(default)]
    pub signing_keys: BTreeMap<String, SecretString>,
}

/// Reading the platform secret failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Secrets Manager failed.
    #[error("secrets manager: {0}")]
    Service(String),
    /// The secret is not the expected JSON document (its content is not repeated).
    #[error("platform secret is not a valid document")]
    Malformed,
}

/// Reads and caches the platform secret.
pub struct PlatformSecretStore {
    client: crate::app::LazyClient<aws_sdk_secretsmanager::Client>,
    secret_id: String,
    ttl: Duration,
    cache: Mutex<Option<(Instant, Arc<PlatformSecrets>)>>,
}

impl PlatformSecretStore {
    /// Reads `secret_id`, keeping it for `ttl` per container.
    pub fn new(
        client: impl Into<crate::app::LazyClient<aws_sdk_secretsmanager::Client>>,
        secret_id: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            client: client.into(),
            secret_id: secret_id.into(),
            ttl,
            cache: Mutex::new(None),
        }
    }

    /// The platform secrets, from cache when fresh. One caller fetches at a time.
    pub async fn get(&self) -> Result<Arc<PlatformSecrets>, SecretsError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, doc)) = cache.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(doc.clone());
        }
        let out = self
            .client
            .get()
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| {
                SecretsError::Service(
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
                )
            })?;
        let text = out.secret_string().ok_or(SecretsError::Malformed)?;
        let doc: PlatformSecrets =
            serde_json::from_str(text).map_err(|_| SecretsError::Malformed)?;
        let doc = Arc::new(doc);
        *cache = Some((Instant::now(), doc.clone()));
        Ok(doc)
    }

    /// The platform's OAuth app for `provider`, if it has one.
    pub async fn oauth_app(&self, provider: &str) -> Result<Option<PlatformApp>, SecretsError> {
        Ok(self.get().await?.oauth_apps.get(provider).cloned())
    }
}
