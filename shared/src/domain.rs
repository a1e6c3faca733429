//! Domain types. Newtypes validate on construction ("parse, don't validate"), so a
//! value of one of these types is always well formed; secret values never print.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Why a value was rejected by a constructor; the message is safe to show to callers
/// (it never repeats the rejected value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn check_token(kind: &str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.is_empty() || value.len() > max {
        return Err(Invalid(format!("{kind} must be 1 to {max} characters")));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b'|'))
    {
        return Err(Invalid(format!(
            "{kind} may hold only letters, digits and - _ . @ |"
        )));
    }
    Ok(())
}

/// A tenant (workspace / organisation) id, as the dashboard's JWT carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Validates a tenant id: 1–64 characters of `[A-Za-z0-9-_.]`.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        check_token("tenant id", value, 64)?;
        if value.contains('|') || value.contains('@') {
            return Err(Invalid(
                "tenant id may hold only letters, digits and - _ .".into(),
            ));
        }
        Ok(Self(value.to_owned()))
    }
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = Invalid;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.0
    }
}
impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user id (the JWT subject).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// Validates a user id: 1–128 characters of `[A-Za-z0-9-_.@|]`.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        check_token("user id", value, 128)?;
        Ok(Self(value.to_owned()))
    }
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for UserId {
    type Error = Invalid;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<UserId> for String {
    fn from(value: UserId) -> Self {
        value.0
    }
}
impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's role in a tenant: members read, admins also write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May read and change the tenant's configuration.
    Admin,
    /// May read.
    Member,
}

impl Role {
    /// Parses `admin` or `member`.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        match value {
            "admin" => Ok(Self::Admin),
            "member" => Ok(Self::Member),
            _ => Err(Invalid("role must be admin or member".into())),
        }
    }
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }
}

/// Who is calling: a user of a tenant with a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The caller's tenant; every item the call touches belongs to it.
    pub tenant: TenantId,
    /// The caller.
    pub user: UserId,
    /// The caller's role in the tenant.
    pub role: Role,
}

impl Principal {
    /// True when the caller may change the tenant's configuration.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// A prefixed, time-ordered id (`con_01J…`): prefix, underscore, a ULID.
macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id's prefix.
            pub const PREFIX: &'static str = $prefix;
            /// A new id, ordered by creation time.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, ulid::Ulid::new().to_string().to_lowercase()))
            }
            /// Validates an id given by a caller.
            pub fn parse(value: &str) -> Result<Self, Invalid> {
                let ok = value
                    .strip_prefix(concat!($prefix, "_"))
                    .is_some_and(|rest| ulid::Ulid::from_string(rest).is_ok() && rest.len() == 26);
                if ok {
                    Ok(Self(value.to_ascii_lowercase()))
                } else {
                    Err(Invalid(format!("not a valid {} id", stringify!($name))))
                }
            }
            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A connection's id.
    ConnectionId,
    "con"
);
prefixed_id!(
    /// An audit entry's id.
    AuditId,
    "aud"
);
prefixed_id!(
    /// A sync configuration's id.
    SyncConfigId,
    "scfg"
);
prefixed_id!(
    /// A field mapping's id.
    MappingId,
    "fmap"
);
prefixed_id!(
    /// An app record's id (contact or company).
    RecordId,
    "rec"
);
prefixed_id!(
    /// A sync run's id (one trigger, every entity it covers).
    JobId,
    "job"
);
prefixed_id!(
    /// A sync log's id (one run of one entity).
    SyncLogId,
    "slog"
);
prefixed_id!(
    /// A stored sync conflict's id.
    ConflictId,
    "cfl"
);
prefixed_id!(
    /// An outbound integration's id (a connection + template action + triggers).
    IntegrationId,
    "int"
);
prefixed_id!(
    /// A dispatch's id (one event's run through its chain of integrations).
    DispatchId,
    "dsp"
);

/// A prefixed id derived from `parts` (SHA-256, shaped as a ULID): the same parts give
/// the same id, so a retried step finds what an earlier attempt made.
fn derived_id(prefix: &str, parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let ulid = ulid::Ulid::from_bytes(bytes);
    format!("{prefix}_{}", ulid.to_string().to_lowercase())
}

impl RecordId {
    /// The id of the app record a pull creates for a CRM record: derived from where it
    /// came from, so a retried or duplicated pull finds the record it made before.
    pub fn derived(parts: &[&str]) -> Self {
        Self(derived_id(Self::PREFIX, parts))
    }
}

impl DispatchId {
    /// The id of one event's dispatch: ordered by when the event happened, its other
    /// bits a hash of (tenant, event id), so every delivery of an event names the same
    /// dispatch (at-least-once delivery resumes it instead of starting another).
    pub fn for_event(tenant: &TenantId, event_id: &str, occurred_at: OffsetDateTime) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for p in [tenant.as_str(), event_id] {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        let digest = h.finalize();
        let mut random = [0u8; 16];
        random[6..].copy_from_slice(&digest[..10]);
        let ms = (occurred_at.unix_timestamp_nanos() / 1_000_000).clamp(0, (1i128 << 48) - 1);
        let ulid = ulid::Ulid::from_parts(ms as u64, u128::from_be_bytes(random));
        Self(format!(
            "{}_{}",
            Self::PREFIX,
            ulid.to_string().to_lowercase()
        ))
    }
}

impl ConflictId {
    /// The id of the one open conflict of a record under a config.
    pub fn derived(parts: &[&str]) -> Self {
        Self(derived_id(Self::PREFIX, parts))
    }
}

/// A human label (connection names and such): trimmed, 1–100 characters, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);

impl Label {
    /// The longest label, in characters.
    pub const MAX: usize = 100;
    /// Validates a label.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let value = value.trim();
        if value.is_empty() || value.chars().count() > Self::MAX {
            return Err(Invalid(format!(
                "label must be 1 to {} characters",
                Self::MAX
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(Invalid("label may not hold control characters".into()));
        }
        Ok(Self(value.to_owned()))
    }
    /// A label made from any text: control characters dropped, cut to length, and
    /// `Untitled` when nothing is left.
    pub fn lossy(text: &str) -> Self {
        let text: String = text
            .chars()
            .filter(|c| !c.is_control())
            .take(Self::MAX)
            .collect();
        let text = text.trim();
        Self(if text.is_empty() {
            "Untitled".to_owned()
        } else {
            text.to_owned()
        })
    }
    /// The label as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Label {
    type Error = Invalid;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<Label> for String {
    fn from(value: Label) -> Self {
        value.0
    }
}

/// A connection's status as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// Credentials work; the connection is in use.
    Connected,
    /// The last check or call failed for a reason other than the grant.
    Error,
    /// The provider no longer accepts the grant; an admin must reconnect.
    NeedsReauth,
    /// Syncs on this connection are paused; credentials are kept.
    Paused,
    /// Switched off by an admin: never used until activated.
    Inactive,
}

impl ConnectionStatus {
    /// Every status, in display order.
    pub const ALL: [Self; 5] = [
        Self::Connected,
        Self::Error,
        Self::NeedsReauth,
        Self::Paused,
        Self::Inactive,
    ];
    /// The status's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Error => "error",
            Self::NeedsReauth => "needs_reauth",
            Self::Paused => "paused",
            Self::Inactive => "inactive",
        }
    }
    /// Parses a status name.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or_else(|| {
                Invalid(
                    "status must be one of connected, error, needs_reauth, paused, inactive".into(),
                )
            })
    }
}

/// Who a connection acts as at the provider ("connected as").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The provider's id of the user or account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The user's email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The provider account (portal, org, company) the user belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

impl Identity {
    /// A one-line description: the email, else the name, else the id.
    pub fn display(&self) -> Option<String> {
        self.email
            .clone()
            .or_else(|| self.name.clone())
            .or_else(|| self.id.clone())
    }
}

/// The current time, truncated to milliseconds (what DynamoDB items and JSON carry).
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_millisecond(t.millisecond()).unwrap_or(t)
}

/// A time as RFC 3339 text, as the API shows times.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A UTC time as fixed-width text (`2026-11-21T22:05:01.123Z`), which sorts in time
/// order; used in sort keys.
pub fn sortable_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Shows the shape of a secret without revealing it: the last four characters of a
/// long value, nothing of a short one.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n >= 16 {
        let tail: String = secret.chars().skip(n - 4).collect();
        format!("••••{tail}")
    } else {
        "••••".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_validated() {
        assert!(TenantId::parse("acme-01").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("a#b").is_err());
        assert!(TenantId::parse(&"x".repeat(65)).is_err());
        assert!(TenantId::parse("T#other").is_err());
    }

    #[test]
    fn prefixed_ids_round_trip_and_reject_garbage() {
        let id = ConnectionId::generate();
        assert!(id.as_str().starts_with("con_"));
        assert_eq!(ConnectionId::parse(id.as_str()).unwrap(), id);
        assert!(ConnectionId::parse("con_123").is_err());
        assert!(ConnectionId::parse("aud_01hzy7k3q8m9x2v4b6n8c0d2e4").is_err());
        assert!(ConnectionId::parse("../../etc/passwd").is_err());
    }

    #[test]
    fn labels_are_trimmed_and_bounded() {
        assert_eq!(Label::parse("  Sales  ").unwrap().as_str(), "Sales");
        assert!(Label::parse("   ").is_err());
        assert!(Label::parse(&"é".repeat(101)).is_err());
        assert!(Label::parse("a\u{0}b").is_err());
    }

    #[test]
    fn statuses_parse_by_name() {
        for s in ConnectionStatus::ALL {
            assert_eq!(ConnectionStatus::parse(s.as_str()).unwrap(), s);
        }
        assert!(ConnectionStatus::parse("bogus").is_err());
    }

    #[test]
    fn masks_never_reveal_short_secrets() {
        assert_eq!(mask("short"), "••••");
        assert_eq!(mask("zd-sandbox-token-0001"), "••••0001");
        assert!(!mask("zd-sandbox-token-0001").contains("sandbox"));
    }
}
