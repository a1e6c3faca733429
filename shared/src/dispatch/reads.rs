//! What one invocation of the dispatcher reads once and shares between the events it
//! runs: a tenant's integrations (and whether the tenant is known), an assistant's
//! settings, a connection's credentials, a webhook endpoint's signing keys.
//!
//! The queue hands the dispatcher a batch of up to ten messages, grouped by tenant
//! (`functions/event-dispatch`), and runs them at once: without this, every event of
//! the batch read the same integrations and every step the same connection again —
//! three of the ten store calls an event made. Each value is read by the first event
//! that needs it while the others wait for that read (one read per key, never ten at
//! once), and is used for at most [`FRESH`]: an integration edited or a connection
//! disconnected takes effect on the events after that, as it would had they arrived a
//! moment earlier. Nothing failed is kept: an error is the reading event's, and the
//! next one reads again. Credentials refreshed during the invocation (after a
//! provider's 401) replace the kept ones, so the other events do not meet the 401 too.
//!
//! Plain credentials and signing keys live here only in memory, for the invocation,
//! like the data keys of [`crate::crypto`]; nothing here is logged or printed (no
//! `Debug`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::integration::{AssistantSettings, Integration};
use super::webhook::SigningKey;
use crate::domain::{ConnectionId, IntegrationId, TenantId};
use crate::oauth::lifecycle::{Credentials, TokenError, Tokens};
use crate::store::StoreError;
use crate::store::integrations::Integrations;

/// How long a value read for one event is used for later ones.
pub const FRESH: Duration = Duration::from_secs(30);

/// One key's value: read once (by whoever comes first), then shared.
struct Entry<V> {
    cell: Arc<OnceCell<(Instant, V)>>,
}

/// Values by key, each read at most once while fresh.
struct Kept<K, V> {
    entries: Mutex<HashMap<K, Entry<V>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Kept<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value of `key`: kept and fresh, or read now by `read` (others asking
    /// meanwhile wait for this read). A failed read keeps nothing.
    async fn get_or_read<E, F, Fut>(&self, key: &K, read: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        let cell = {
            let Ok(mut entries) = self.entries.lock() else {
                return read().await;
            };
            let stale = entries
                .get(key)
                .and_then(|e| e.cell.get())
                .is_some_and(|(at, _)| at.elapsed() > FRESH);
            if stale {
                entries.remove(key);
            }
            entries
                .entry(key.clone())
                .or_insert_with(|| Entry {
                    cell: Arc::new(OnceCell::new()),
                })
                .cell
                .clone()
        };
        let (_, value) = cell
            .get_or_try_init(|| async { read().await.map(|v| (Instant::now(), v)) })
            .await?;
        Ok(value.clone())
    }

    /// Replaces the kept value of `key` (keeping its read time).
    fn replace(&self, key: &K, value: V) {
        if let Ok(mut entries) = self.entries.lock() {
            let at = entries
                .get(key)
                .and_then(|e| e.cell.get())
                .map_or_else(Instant::now, |(at, _)| *at);
            entries.insert(
                key.clone(),
                Entry {
                    cell: Arc::new(OnceCell::new_with(Some((at, value)))),
                },
            );
        }
    }
}

/// A tenant's integrations as read, and whether the tenant has anything stored.
#[derive(Clone)]
pub struct TenantIntegrations {
    /// Every integration of the tenant.
    pub integrations: Arc<Vec<Integration>>,
    /// Whether Conduit knows the tenant (anything in its partition).
    pub known: bool,
}

/// What an invocation has read (see the module's documentation).
pub struct Reads {
    integrations: Kept<TenantId, TenantIntegrations>,
    assistants: Kept<(TenantId, String), Option<Arc<AssistantSettings>>>,
    credentials: Kept<(TenantId, ConnectionId), Arc<Credentials>>,
    /// By endpoint and secret id: a rotated secret has a new id.
    signing_keys: Kept<(TenantId, IntegrationId, String), Arc<SigningKey>>,
}

impl Default for Reads {
    fn default() -> Self {
        Self::new()
    }
}

impl Reads {
    /// Nothing read yet.
    pub fn new() -> Self {
        Self {
            integrations: Kept::new(),
            assistants: Kept::new(),
            credentials: Kept::new(),
            signing_keys: Kept::new(),
        }
    }

    /// A tenant's integrations.
    pub async fn integrations(
        &self,
        store: &Integrations,
        tenant: &TenantId,
    ) -> Result<TenantIntegrations, StoreError> {
        self.integrations
            .get_or_read(tenant, || async {
                let (integrations, _) = store.all(tenant).await?;
                // A tenant with integrations is known; one without may still have
                // connections or settings.
                let known = !integrations.is_empty() || store.tenant_known(tenant).await?;
                Ok(TenantIntegrations {
                    integrations: Arc::new(integrations),
                    known,
                })
            })
            .await
    }

    /// An assistant's settings, if it has any.
    pub async fn assistant(
        &self,
        store: &Integrations,
        tenant: &TenantId,
        assistant_id: &str,
    ) -> Result<Option<Arc<AssistantSettings>>, StoreError> {
        let key = (tenant.clone(), assistant_id.to_owned());
        self.assistants
            .get_or_read(&key, || async {
                Ok(store.assistant(tenant, assistant_id).await?.map(Arc::new))
            })
            .await
    }

    /// A connection's credentials, through the token lifecycle (an OAuth token inside
    /// its refresh window is refreshed by the read).
    pub async fn credentials(
        &self,
        tokens: &Tokens<'_>,
        tenant: &TenantId,
        connection: &ConnectionId,
    ) -> Result<Arc<Credentials>, TokenError> {
        let key = (tenant.clone(), connection.clone());
        self.credentials
            .get_or_read(&key, || async {
                tokens.credentials(tenant, connection).await.map(Arc::new)
            })
            .await
    }

    /// A webhook endpoint's signing key for one of its secrets, opened by `open` (the
    /// secret unsealed and decoded) by the first event that needs it.
    pub async fn signing_key<E, F, Fut>(
        &self,
        endpoint: &Integration,
        secret_id: &str,
        open: F,
    ) -> Result<Arc<SigningKey>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<SigningKey, E>>,
    {
        let key = (
            endpoint.tenant.clone(),
            endpoint.id.clone(),
            secret_id.to_owned(),
        );
        self.signing_keys
            .get_or_read(&key, || async { open().await.map(Arc::new) })
            .await
    }

    /// Credentials obtained after the provider refused the kept ones: the other events
    /// use these from now.
    pub fn refreshed(&self, credentials: &Credentials) {
        let key = (
            credentials.connection.tenant.clone(),
            credentials.connection.id.clone(),
        );
        self.credentials
            .replace(&key, Arc::new(credentials.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_askers_share_one_read() {
        let kept: Kept<u32, u32> = Kept::new();
        let reads = AtomicUsize::new(0);
        let ask = || async {
            kept.get_or_read(&1, || async {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok::<_, ()>(7)
            })
            .await
        };
        let got = futures::future::join_all((0..10).map(|_| ask())).await;
        assert!(got.iter().all(|v| *v == Ok(7)));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_kept() {
        let kept: Kept<u32, u32> = Kept::new();
        let first = kept
            .get_or_read(&1, || async { Err::<u32, _>("down") })
            .await;
        assert_eq!(first, Err("down"));
        let second = kept.get_or_read(&1, || async { Ok::<_, &str>(3) }).await;
        assert_eq!(second, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_value_is_read_again() {
        let kept: Kept<u32, u32> = Kept::new();
        assert_eq!(
            kept.get_or_read(&1, || async { Ok::<_, ()>(1) }).await,
            Ok(1)
        );
        assert_eq!(
            kept.get_or_read(&1, || async { Ok::<_, ()>(2) }).await,
            Ok(1)
        );
        tokio::time::advance(FRESH + Duration::from_secs(1)).await;
        assert_eq!(
            kept.get_or_read(&1, || async { Ok::<_, ()>(3) }).await,
            Ok(3)
        );
        kept.replace(&1, 4);
        assert_eq!(
            kept.get_or_read(&1, || async { Ok::<_, ()>(5) }).await,
            Ok(4)
        );
    }
}
