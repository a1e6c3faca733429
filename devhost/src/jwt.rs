//! The local stand-in for the dashboard's identity provider: HS256 tokens signed with a
//! key generated per dev stack, carrying the claims the HTTP API's JWT authorizer
//! passes on (`sub`, `tenant_id`, `role`, `scope`).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde_json::{Map, Value, json};

/// The scope every minted token carries.
pub const DEFAULT_SCOPE: &str = "conduit";

/// A local JWT issuer and verifier.
#[derive(Clone)]
pub struct LocalJwt {
    /// The `iss` of minted tokens (the template's `JwtIssuer`).
    pub issuer: String,
    /// The `aud` of minted tokens (the template's `JwtAudience`).
    pub audience: String,
    /// The HS256 signing key.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for LocalJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalJwt")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// Why a token was refused.
#[derive(Debug)]
pub struct JwtRejected(pub String);

impl std::fmt::Display for JwtRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "token rejected: {}", self.0)
    }
}

impl std::error::Error for JwtRejected {}

/// A fresh random 256-bit signing key.
pub fn random_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl LocalJwt {
    /// A verifier/issuer with the given key.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, key: Vec<u8>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            key,
        }
    }

    /// An issuer with a fresh random key (tests keep it in memory).
    pub fn random(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self::new(issuer, audience, random_key())
    }

    /// Reads the key from `path` (base64 text, as [`LocalJwt::save_key`] writes it).
    pub fn load(
        path: &Path,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the JWT key {}", path.display()))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .with_context(|| format!("the JWT key {} is not base64", path.display()))?;
        if key.len() < 32 {
            bail!("the JWT key {} is shorter than 256 bits", path.display());
        }
        Ok(Self::new(issuer, audience, key))
    }

    /// Writes the key to `path` (owner-only permissions), creating its folder.
    pub fn save_key(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = base64::engine::general_purpose::STANDARD.encode(&self.key);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .with_context(|| format!("writing the JWT key {}", path.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .with_context(|| format!("writing the JWT key {}", path.display()))?;
        Ok(())
    }

    /// Mints a token for `user` of `tenant` with `role` (`admin` or `member`), valid
    /// for `ttl`.
    pub fn mint(&self, tenant: &str, user: &str, role: &str, ttl: Duration) -> Result<String> {
        let now = now_secs();
        self.mint_claims(&json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user,
            "tenant_id": tenant,
            "role": role,
            "scope": DEFAULT_SCOPE,
            "iat": now,
            "exp": now + ttl.as_secs(),
        }))
    }

    /// Signs arbitrary claims (tests use it for expired or foreign tokens).
    pub fn mint_claims(&self, claims: &Value) -> Result<String> {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.key),
        )
        .map_err(|e| anyhow!("signing the token: {e}"))
    }

    /// Verifies a token as the HTTP API's JWT authorizer does — signature, `iss`,
    /// `aud` (or `client_id`), `exp`, `nbf`, `iat` — and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, JwtRejected> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &DecodingKey::from_secret(&self.key),
            &validation,
        )
        .map_err(|e| JwtRejected(e.to_string()))?;
        let claims = data.claims;
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => *aud == self.audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(&self.audience)),
            None => claims.get("client_id").and_then(Value::as_str) == Some(&self.audience),
            Some(_) => false,
        };
        if !audience_ok {
            return Err(JwtRejected("audience does not match".into()));
        }
        if let Some(iat) = claims.get("iat") {
            match iat.as_u64() {
                Some(iat) if iat <= now_secs() => {}
                _ => return Err(JwtRejected("iat is in the future or not a number".into())),
            }
        }
        Ok(claims)
    }
}

/// A claim as API Gateway hands it to the function: every value a string (arrays as
/// `[a b]`, objects as `map[k:v]`, the way the HTTP API flattens them).
pub fn flatten_claim(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(flatten_claim)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Value::Object(map) => format!(
            "map[{}]",
            map.iter()
                .map(|(k, v)| format!("{k}:{}", flatten_claim(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// The token's scopes (`scope` space-separated, or `scp`), as API Gateway lists them.
pub fn scopes_of(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items.iter().map(flatten_claim).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt() -> LocalJwt {
        LocalJwt::random("http://127.0.0.1:3000/local-issuer", "conduit-local")
    }

    #[test]
    fn minted_tokens_verify() {
        let j = jwt();
        let token = j
            .mint("demo", "dev-admin", "admin", Duration::from_secs(60))
            .unwrap();
        let claims = j.verify(&token).unwrap();
        assert_eq!(claims["tenant_id"], "demo");
        assert_eq!(claims["sub"], "dev-admin");
        assert_eq!(claims["role"], "admin");
        assert_eq!(claims["aud"], "conduit-local");
        assert_eq!(scopes_of(&claims), vec!["conduit"]);
    }

    #[test]
    fn bad_tokens_are_rejected() {
        let j = jwt();
        let now = now_secs();
        let base = json!({"iss": j.issuer, "aud": j.audience, "sub": "u", "tenant_id": "t", "role": "admin", "iat": now - 100});

        let mut expired = base.clone();
        expired["exp"] = json!(now - 10);
        assert!(j.verify(&j.mint_claims(&expired).unwrap()).is_err());

        let mut wrong_aud = base.clone();
        wrong_aud["exp"] = json!(now + 60);
        wrong_aud["aud"] = json!("someone-else");
        assert!(j.verify(&j.mint_claims(&wrong_aud).unwrap()).is_err());

        let mut wrong_iss = base.clone();
        wrong_iss["exp"] = json!(now + 60);
        wrong_iss["iss"] = json!("https://evil.example");
        assert!(j.verify(&j.mint_claims(&wrong_iss).unwrap()).is_err());

        let mut no_exp = base.clone();
        no_exp["exp"] = Value::Null;
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(j.verify(&j.mint_claims(&no_exp).unwrap()).is_err());

        let mut aud_list = base.clone();
        aud_list["exp"] = json!(now + 60);
        aud_list["aud"] = json!(["x", "conduit-local"]);
        assert!(j.verify(&j.mint_claims(&aud_list).unwrap()).is_ok());

        let other_key = jwt()
            .mint("t", "u", "admin", Duration::from_secs(60))
            .unwrap();
        assert!(j.verify(&other_key).is_err());
        assert!(j.verify("not a token").is_err());
    }

    #[test]
    fn keys_round_trip_through_a_file() {
        let dir = std::env::temp_dir().join(format!("devhost-jwt-{}", ulid::Ulid::new()));
        let path = dir.join("jwt.key");
        let j = jwt();
        j.save_key(&path).unwrap();
        let loaded = LocalJwt::load(&path, &j.issuer, &j.audience).unwrap();
        let token = j.mint("t", "u", "member", Duration::from_secs(60)).unwrap();
        assert!(loaded.verify(&token).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn claims_flatten_like_api_gateway() {
        assert_eq!(flatten_claim(&json!(12)), "12");
        assert_eq!(flatten_claim(&json!(["a", "b"])), "[a b]");
        assert_eq!(flatten_claim(&json!(true)), "true");
    }
}
