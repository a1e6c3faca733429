//! Envelope encryption of tenant secrets.
//!
//! KMS issues AES-256 data keys bound by its encryption context to a tenant; each
//! secret is sealed with AES-256-GCM under such a key, with associated data naming the
//! tenant and the record. So a ciphertext copied to another tenant fails at KMS (the
//! context differs), and one copied to another record of the same tenant fails the
//! GCM tag. Plaintext data keys live only in memory, in small bounded caches per warm
//! container (the AWS Encryption SDK's caching pattern), and are zeroed on drop.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::domain::TenantId;

/// What a sealed secret is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SealContext {
    /// The tenant owning the secret (bound by KMS).
    pub tenant: TenantId,
    /// The record holding it, e.g. `connection/con_…` (bound by GCM associated data).
    pub record: String,
}

impl SealContext {
    /// A context for `record` of `tenant`.
    pub fn new(tenant: &TenantId, record: impl Into<String>) -> Self {
        Self {
            tenant: tenant.clone(),
            record: record.into(),
        }
    }

    fn aad(&self) -> Vec<u8> {
        format!("conduit:v1\ntenant={}\nrecord={}", self.tenant, self.record).into_bytes()
    }
}

/// A sealed secret as stored: the KMS-encrypted data key, a nonce and the ciphertext.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Format version.
    pub v: u8,
    /// The data key, encrypted by KMS (base64).
    pub edk: String,
    /// The 96-bit GCM nonce (base64).
    pub nonce: String,
    /// Ciphertext and tag (base64).
    pub ct: String,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealed([ciphertext])")
    }
}

/// Encryption failures. Messages never carry key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// KMS (or the key source) refused or failed.
    #[error("key service: {0}")]
    KeySource(String),
    /// The ciphertext does not open under this context: tampered, or copied from
    /// another record or tenant.
    #[error("secret does not open in this context")]
    Integrity,
    /// The stored form is not one this version reads.
    #[error("malformed sealed secret")]
    Malformed,
}

/// A plaintext data key and its KMS-encrypted form.
pub struct DataKey {
    /// The AES-256 key, zeroed on drop.
    pub plaintext: Zeroizing<[u8; 32]>,
    /// The key encrypted under the KMS key (opaque blob).
    pub encrypted: Vec<u8>,
}

/// Where data keys come from: KMS in every deployment, local or not.
pub trait DataKeySource: Send + Sync {
    /// A fresh data key bound to `tenant`.
    fn generate(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<DataKey, CryptoError>> + Send;
    /// The plaintext of an encrypted data key bound to `tenant`.
    fn decrypt(
        &self,
        tenant: &TenantId,
        encrypted: &[u8],
    ) -> impl Future<Output = Result<Zeroizing<[u8; 32]>, CryptoError>> + Send;
}

/// KMS as the data-key source, with the tenant as encryption context.
#[derive(Clone, Debug)]
pub struct KmsKeys {
    client: crate::app::LazyClient<aws_sdk_kms::Client>,
    key_id: String,
}

impl KmsKeys {
    /// Data keys from `key_id` (id, ARN or alias).
    pub fn new(
        client: impl Into<crate::app::LazyClient<aws_sdk_kms::Client>>,
        key_id: impl Into<String>,
    ) -> Self {
        Self {
            client: client.into(),
            key_id: key_id.into(),
        }
    }
}

const CONTEXT_TENANT: &str = "conduit:tenant";

fn key_array(bytes: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(CryptoError::KeySource("data key is not 256 bits".into()));
    }
    key.copy_from_slice(bytes);
    Ok(key)
}

impl DataKeySource for KmsKeys {
    async fn generate(&self, tenant: &TenantId) -> Result<DataKey, CryptoError> {
        let out = self
            .client
            .get()
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .encryption_context(CONTEXT_TENANT, tenant.as_str())
            .send()
            .await
            .map_err(|e| {
                CryptoError::KeySource(aws_sdk_kms::error::DisplayErrorContext(e).to_string())
            })?;
        let plaintext = out
            .plaintext
            .ok_or_else(|| CryptoError::KeySource("no plaintext key returned".into()))?;
        let plaintext = key_array(plaintext.as_ref())?;
        let encrypted = out
            .ciphertext_blob
            .ok_or_else(|| CryptoError::KeySource("no encrypted key returned".into()))?
            .into_inner();
        Ok(DataKey {
            plaintext,
            encrypted,
        })
    }

    async fn decrypt(
        &self,
        tenant: &TenantId,
        encrypted: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let out = self
            .client
            .get()
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(encrypted))
            .encryption_context(CONTEXT_TENANT, tenant.as_str())
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(se) if se.is_invalid_ciphertext_exception() => CryptoError::Integrity,
                _ => CryptoError::KeySource(aws_sdk_kms::error::DisplayErrorContext(e).to_string()),
            })?;
        let plaintext = out
            .plaintext
            .ok_or_else(|| CryptoError::KeySource("no plaintext key returned".into()))?;
        key_array(plaintext.as_ref())
    }
}

/// Limits of the data-key caches.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// Entries per cache.
    pub capacity: usize,
    /// How long a key is reused.
    pub max_age: Duration,
    /// How many secrets one encryption key seals before a fresh one is asked for.
    pub max_uses: u32,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            capacity: 1024,
            max_age: Duration::from_secs(300),
            max_uses: 10_000,
        }
    }
}

/// A cached plaintext key and its encrypted form.
type KeyPair = (Arc<Zeroizing<[u8; 32]>>, Arc<Vec<u8>>);

struct CachedKey {
    key: Arc<Zeroizing<[u8; 32]>>,
    encrypted: Arc<Vec<u8>>,
    born: Instant,
    uses: u32,
}

/// Seals and opens secrets with data keys from a [`DataKeySource`], caching keys.
pub struct Envelope<S> {
    source: S,
    limits: CacheLimits,
    sealing: Mutex<lru::LruCache<TenantId, CachedKey>>,
    opening: Mutex<lru::LruCache<(TenantId, Vec<u8>), CachedKey>>,
}

impl<S: DataKeySource> Envelope<S> {
    /// An envelope over `source` with the given cache limits.
    pub fn new(source: S, limits: CacheLimits) -> Self {
        let cap = NonZeroUsize::new(limits.capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            source,
            limits,
            sealing: Mutex::new(lru::LruCache::new(cap)),
            opening: Mutex::new(lru::LruCache::new(cap)),
        }
    }

    fn sealing_key(&self, tenant: &TenantId) -> Option<KeyPair> {
        let mut cache = self.sealing.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cache.get_mut(tenant)?;
        if entry.born.elapsed() > self.limits.max_age || entry.uses >= self.limits.max_uses {
            cache.pop(tenant);
            return None;
        }
        entry.uses += 1;
        Some((entry.key.clone(), entry.encrypted.clone()))
    }

    /// Seals `plaintext` for `ctx`.
    pub async fn seal(&self, ctx: &SealContext, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let (key, edk) = match self.sealing_key(&ctx.tenant) {
            Some(hit) => hit,
            None => {
                let fresh = self.source.generate(&ctx.tenant).await?;
                let key = Arc::new(fresh.plaintext);
                let edk = Arc::new(fresh.encrypted);
                self.sealing.lock().unwrap_or_else(|p| p.into_inner()).put(
                    ctx.tenant.clone(),
                    CachedKey {
                        key: key.clone(),
                        encrypted: edk.clone(),
                        born: Instant::now(),
                        uses: 1,
                    },
                );
                (key, edk)
            }
        };
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = seal_with(&key, &nonce, &ctx.aad(), plaintext)?;
        Ok(Sealed {
            v: 1,
            edk: B64.encode(edk.as_slice()),
            nonce: B64.encode(nonce),
            ct: B64.encode(ct),
        })
    }

    /// Opens a sealed secret for `ctx`; fails unless it was sealed for exactly `ctx`.
    pub async fn open(
        &self,
        ctx: &SealContext,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.v != 1 {
            return Err(CryptoError::Malformed);
        }
        let edk = B64
            .decode(&sealed.edk)
            .map_err(|_| CryptoError::Malformed)?;
        let nonce = B64
            .decode(&sealed.nonce)
            .map_err(|_| CryptoError::Malformed)?;
        let ct = B64.decode(&sealed.ct).map_err(|_| CryptoError::Malformed)?;
        if nonce.len() != 12 {
            return Err(CryptoError::Malformed);
        }
        let cache_key = (ctx.tenant.clone(), edk);
        let cached = {
            let mut cache = self.opening.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&cache_key) {
                Some(e) if e.born.elapsed() <= self.limits.max_age => Some(e.key.clone()),
                Some(_) => {
                    cache.pop(&cache_key);
                    None
                }
                None => None,
            }
        };
        let key = match cached {
            Some(key) => key,
            None => {
                let key = Arc::new(self.source.decrypt(&ctx.tenant, &cache_key.1).await?);
                let encrypted = Arc::new(cache_key.1.clone());
                self.opening.lock().unwrap_or_else(|p| p.into_inner()).put(
                    cache_key,
                    CachedKey {
                        key: key.clone(),
                        encrypted,
                        born: Instant::now(),
                        uses: 0,
                    },
                );
                key
            }
        };
        open_with(&key, &nonce, &ctx.aad(), &ct)
    }

    /// Seals a serialisable value (a map of secret fields) as JSON.
    pub async fn seal_json<T: Serialize>(
        &self,
        ctx: &SealContext,
        value: &T,
    ) -> Result<Sealed, CryptoError> {
        let json = Zeroizing::new(serde_json::to_vec(value).map_err(|_| CryptoError::Malformed)?);
        self.seal(ctx, &json).await
    }

    /// Opens a value sealed by [`Envelope::seal_json`].
    pub async fn open_json<T: serde::de::DeserializeOwned>(
        &self,
        ctx: &SealContext,
        sealed: &Sealed,
    ) -> Result<T, CryptoError> {
        let plain = self.open(ctx, sealed).await?;
        serde_json::from_slice(&plain).map_err(|_| CryptoError::Malformed)
    }
}

fn seal_with(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Integrity)
}

fn open_with(
    key: &[u8; 32],
    nonce: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Integrity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A key source that wraps data keys with a per-tenant XOR pad: enough to exercise
    /// the envelope's sealing, binding and caching without KMS (scenario tests use KMS).
    #[derive(Default)]
    struct LocalKeys {
        generated: AtomicU32,
        decrypted: AtomicU32,
    }

    fn pad(tenant: &TenantId) -> [u8; 32] {
        let mut p = [0u8; 32];
        for (i, b) in tenant.as_str().bytes().cycle().take(32).enumerate() {
            p[i] = b ^ (i as u8);
        }
        p
    }

    impl DataKeySource for LocalKeys {
        async fn generate(&self, tenant: &TenantId) -> Result<DataKey, CryptoError> {
            self.generated.fetch_add(1, Ordering::SeqCst);
            let mut key = Zeroizing::new([0u8; 32]);
            rand::thread_rng().fill_bytes(key.as_mut());
            let p = pad(tenant);
            let mut encrypted: Vec<u8> = key.iter().zip(p).map(|(k, p)| k ^ p).collect();
            encrypted.extend_from_slice(tenant.as_str().as_bytes());
            Ok(DataKey {
                plaintext: key,
                encrypted,
            })
        }
        async fn decrypt(
            &self,
            tenant: &TenantId,
            encrypted: &[u8],
        ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
            self.decrypted.fetch_add(1, Ordering::SeqCst);
            if encrypted.len() < 32 || &encrypted[32..] != tenant.as_str().as_bytes() {
                return Err(CryptoError::Integrity);
            }
            let p = pad(tenant);
            let mut key = Zeroizing::new([0u8; 32]);
            for i in 0..32 {
                key[i] = encrypted[i] ^ p[i];
            }
            Ok(key)
        }
    }

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[tokio::test]
    async fn seals_and_opens_in_the_same_context() {
        let env = Envelope::new(LocalKeys::default(), CacheLimits::default());
        let ctx = SealContext::new(&t("acme"), "connection/con_1");
        let sealed = env.seal(&ctx, b"s3cret").await.unwrap();
        assert!(!sealed.ct.contains("s3cret"));
        assert_eq!(&env.open(&ctx, &sealed).await.unwrap()[..], b"s3cret");
    }

    #[tokio::test]
    async fn ciphertext_is_bound_to_its_record_and_tenant() {
        let env = Envelope::new(LocalKeys::default(), CacheLimits::default());
        let ctx = SealContext::new(&t("acme"), "connection/con_1");
        let sealed = env.seal(&ctx, b"s3cret").await.unwrap();
        let other_record = SealContext::new(&t("acme"), "connection/con_2");
        assert!(matches!(
            env.open(&other_record, &sealed).await,
            Err(CryptoError::Integrity)
        ));
        let other_tenant = SealContext::new(&t("globex"), "connection/con_1");
        assert!(env.open(&other_tenant, &sealed).await.is_err());
        let mut tampered = sealed.clone();
        tampered.ct = B64.encode(b"0123456789abcdef0123456789");
        assert!(env.open(&ctx, &tampered).await.is_err());
    }

    #[tokio::test]
    async fn data_keys_are_cached_within_limits() {
        let limits = CacheLimits {
            capacity: 8,
            max_age: Duration::from_secs(60),
            max_uses: 3,
        };
        let env = Envelope::new(LocalKeys::default(), limits);
        let ctx = SealContext::new(&t("acme"), "r");
        let mut sealed = Vec::new();
        for _ in 0..6 {
            sealed.push(env.seal(&ctx, b"x").await.unwrap());
        }
        assert_eq!(
            env.source.generated.load(Ordering::SeqCst),
            2,
            "3 uses per key"
        );
        for s in &sealed {
            env.open(&ctx, s).await.unwrap();
        }
        assert_eq!(
            env.source.decrypted.load(Ordering::SeqCst),
            2,
            "one decrypt per key"
        );
        let nonces: std::collections::BTreeSet<_> =
            sealed.iter().map(|s| s.nonce.clone()).collect();
        assert_eq!(nonces.len(), 6, "fresh nonce per seal");
    }

    #[test]
    fn sealed_debug_reveals_nothing() {
        let s = Sealed {
            v: 1,
            edk: "e".into(),
            nonce: "n".into(),
            ct: "c".into(),
        };
        assert_eq!(format!("{s:?}"), "Sealed([ciphertext])");
    }
}
