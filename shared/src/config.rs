//! Typed configuration, read once per cold start from the environment.
//!
//! Every setting is named here; a missing or malformed one fails start-up with a
//! message naming it. Optional settings are `Option`s, never silent defaults.

use std::collections::BTreeMap;

use url::Url;

/// A configuration problem, naming the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required setting is absent or empty.
    #[error("missing required setting {0}")]
    Missing(&'static str),
    /// A setting is present but malformed.
    #[error("setting {name} is invalid: {reason}")]
    Invalid {
        /// The setting's name.
        name: &'static str,
        /// Why it was rejected.
        reason: String,
    },
}

/// The JWT claims the caller's tenant and role are read from: the identity
/// provider's names (a Cognito user pool emits custom attributes as
/// `custom:tenant_id`). `CONDUIT_TENANT_CLAIM` and `CONDUIT_ROLE_CLAIM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    /// The claim naming the tenant.
    pub tenant: String,
    /// The claim naming the role (`admin` or `member`).
    pub role: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            tenant: "tenant_id".to_owned(),
            role: "role".to_owned(),
        }
    }
}

/// The prefix of Conduit's settings.
pub const ENV_PREFIX: &str = "CONDUIT_";

/// Settings shared by every function.
#[derive(Debug, Clone)]
pub struct Config {
    /// The DynamoDB table holding every tenant item.
    pub table: String,
    /// The KMS key (id, ARN or alias) that issues data keys.
    pub kms_key_id: String,
    /// The Secrets Manager secret holding platform secrets.
    pub platform_secret_id: String,
    /// Dashboard origins allowed as CORS origins and OAuth return targets.
    pub dashboard_origins: Vec<Url>,
    /// Local use only: every catalogue `https://host/path` goes to `{override}/host/path`.
    pub provider_origin_override: Option<Url>,
    /// Local use only: tenant URLs may be plain http on loopback addresses.
    pub allow_loopback_http: bool,
    /// `CONDUIT_PUBLIC_BASE_URL`: the API's public base URL; OAuth redirect URIs are
    /// `{base}/v1/oauth/{provider}/callback`. Optional: only the OAuth functions need it.
    pub public_base_url: Option<Url>,
    /// `CONDUIT_EVENT_BUS`: the EventBridge bus Conduit publishes its events on.
    /// Optional: only functions that publish need it.
    pub event_bus: Option<String>,
    /// The log level filter (`error` … `trace`): Lambda's `AWS_LAMBDA_LOG_LEVEL`
    /// (the function's `ApplicationLogLevel`) when set, else `CONDUIT_LOG_LEVEL`, else
    /// `info`.
    pub log_level: String,
    /// Which JWT claims name the caller's tenant and role.
    pub claims: ClaimNames,
    /// Every `CONDUIT_*` setting of the function as given (empty from
    /// [`Config::from_lookup`]): settings only one function reads are parsed, typed,
    /// by that function's crate from here, so they reach it the same way on Lambda
    /// and in the dev host.
    pub env: BTreeMap<String, String>,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::from_lookup(|name| std::env::var(name).ok())?;
        config.env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Ok(config)
    }

    /// Reads the configuration from a map of settings (the dev host's per-function
    /// environment, resolved from template.yaml).
    pub fn from_map(vars: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut config = Self::from_lookup(|name| vars.get(name).cloned())?;
        config.env = vars
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(config)
    }

    /// Reads the configuration through `get`, which returns a setting by name.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| -> Result<String, ConfigError> {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        let optional = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let dashboard_origins = required("CONDUIT_DASHBOARD_ORIGINS")?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| parse_origin("CONDUIT_DASHBOARD_ORIGINS", s))
            .collect::<Result<Vec<_>, _>>()?;
        let provider_origin_override = optional("CONDUIT_PROVIDER_ORIGIN_OVERRIDE")
            .map(|s| parse_origin("CONDUIT_PROVIDER_ORIGIN_OVERRIDE", &s))
            .transpose()?;
        let allow_loopback_http = match optional("CONDUIT_ALLOW_LOOPBACK_HTTP").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "CONDUIT_ALLOW_LOOPBACK_HTTP",
                    reason: format!("expected true or false, got {other:?}"),
                });
            }
        };
        let public_base_url = optional("CONDUIT_PUBLIC_BASE_URL")
            .map(|s| parse_origin("CONDUIT_PUBLIC_BASE_URL", &s))
            .transpose()?;
        let event_bus = optional("CONDUIT_EVENT_BUS");
        let log_level = match optional(crate::telemetry::LAMBDA_LOG_LEVEL) {
            // Lambda's own names (FATAL too); one it may add later is not ours to refuse.
            Some(lambda) => crate::telemetry::effective_level(Some(&lambda), "info"),
            None => {
                let level = optional("CONDUIT_LOG_LEVEL")
                    .unwrap_or_else(|| "info".to_owned())
                    .to_ascii_lowercase();
                if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
                    return Err(ConfigError::Invalid {
                        name: "CONDUIT_LOG_LEVEL",
                        reason: format!(
                            "expected error, warn, info, debug or trace, got {level:?}"
                        ),
                    });
                }
                level
            }
        };
        let claim = |name: &'static str, default: String| -> Result<String, ConfigError> {
            match optional(name) {
                None => Ok(default),
                Some(v)
                    if v.len() <= 128
                        && v.chars().all(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '-')
                        }) =>
                {
                    Ok(v)
                }
                Some(_) => Err(ConfigError::Invalid {
                    name,
                    reason: "expected a claim name ([A-Za-z0-9_:.-]{1,128})".into(),
                }),
            }
        };
        let defaults = ClaimNames::default();
        let claims = ClaimNames {
            tenant: claim("CONDUIT_TENANT_CLAIM", defaults.tenant)?,
            role: claim("CONDUIT_ROLE_CLAIM", defaults.role)?,
        };
        Ok(Self {
            table: required("CONDUIT_TABLE")?,
            kms_key_id: required("CONDUIT_KMS_KEY_ID")?,
            platform_secret_id: required("CONDUIT_PLATFORM_SECRET_ID")?,
            dashboard_origins,
            provider_origin_override,
            allow_loopback_http,
            public_base_url,
            event_bus,
            log_level,
            claims,
            env: BTreeMap::new(),
        })
    }
}

fn parse_origin(name: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError::Invalid {
        name,
        reason: format!("{value:?} is not a URL: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{value:?} is not an http(s) origin"),
        });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> BTreeMap<String, String> {
        [
            ("CONDUIT_TABLE", "t"),
            ("CONDUIT_KMS_KEY_ID", "alias/k"),
            ("CONDUIT_PLATFORM_SECRET_ID", "s"),
            (
                "CONDUIT_DASHBOARD_ORIGINS",
                "https://app.example.com, http://localhost:5173",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn reads_a_complete_configuration() {
        let cfg = Config::from_map(&base()).unwrap();
        assert_eq!(cfg.table, "t");
        assert_eq!(cfg.dashboard_origins.len(), 2);
        assert!(!cfg.allow_loopback_http);
        assert!(cfg.provider_origin_override.is_none());
        assert_eq!(cfg.log_level, "info");
        assert_eq!(cfg.env.get("CONDUIT_TABLE").map(String::as_str), Some("t"));
    }

    #[test]
    fn claim_names_and_the_lambda_log_level_are_read() {
        let cfg = Config::from_map(&base()).unwrap();
        assert_eq!(cfg.claims, ClaimNames::default());
        let mut vars = base();
        vars.insert("CONDUIT_TENANT_CLAIM".into(), "custom:tenant_id".into());
        vars.insert("CONDUIT_ROLE_CLAIM".into(), "custom:role".into());
        vars.insert("AWS_LAMBDA_LOG_LEVEL".into(), "DEBUG".into());
        vars.insert("CONDUIT_LOG_LEVEL".into(), "warn".into());
        let cfg = Config::from_map(&vars).unwrap();
        assert_eq!(cfg.claims.tenant, "custom:tenant_id");
        assert_eq!(cfg.claims.role, "custom:role");
        assert_eq!(cfg.log_level, "debug");
        vars.insert("CONDUIT_TENANT_CLAIM".into(), "tenant id".into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(err.contains("CONDUIT_TENANT_CLAIM"), "{err}");
    }

    #[test]
    fn a_missing_setting_is_named() {
        let mut vars = base();
        vars.remove("CONDUIT_KMS_KEY_ID");
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(err.contains("CONDUIT_KMS_KEY_ID"), "{err}");
    }

    #[test]
    fn a_malformed_setting_is_named() {
        let mut vars = base();
        vars.insert("CONDUIT_ALLOW_LOOPBACK_HTTP".into(), "yes".into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(err.contains("CONDUIT_ALLOW_LOOPBACK_HTTP"), "{err}");
        let mut vars = base();
        vars.insert("CONDUIT_DASHBOARD_ORIGINS".into(), "not a url".into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(err.contains("CONDUIT_DASHBOARD_ORIGINS"), "{err}");
    }
}
