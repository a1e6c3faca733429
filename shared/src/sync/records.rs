//! The tenant's canonical records (contacts, companies) and the markers that find a
//! record by its key (email, domain); how they are stored is `store::records`.
//!
//! `version` counts field changes (the API's ETag, and what a push compares with the
//! link's synced version); `rev` counts every write and guards conditional writes.
//!
//! A key marker belongs to one live record: the API's writes ([`Records::create_unique`],
//! [`Records::save_unique`]) check and move it in the same transaction as the record
//! (and its audit entry), so two records never hold one email or domain through the API.
//! A marker left pointing at a record that no longer holds its key is stale and may be
//! taken over. A deleted record keeps its marker as a tombstone: it holds nothing for
//! uniqueness (the key is free at once), and record matching finds the deleted record
//! by it, so the CRM record linked to it is not pulled back as a new record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::config::SyncConfig;
use super::schema::Entity;
use crate::domain::{RecordId, TenantId};
use crate::store::{Listing, Page, StoreError, Table, decode_after, encode_after};

pub use crate::store::records::change_position;

/// Where a field's current value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// `app` (the API), or the provider it was pulled from.
    pub origin: String,
    /// The sync config that pulled it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_id: Option<String>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A CRM record linked to an app record (summary; the link itself is in `links`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedRecord {
    /// The provider.
    pub provider: String,
    /// The connection.
    pub connection_id: String,
    /// The CRM record's id.
    pub crm_id: String,
}

/// An app record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its id.
    pub id: RecordId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Contacts or companies.
    pub entity: Entity,
    /// Field values (absent = empty).
    pub fields: BTreeMap<String, String>,
    /// Where each field's value came from.
    #[serde(default)]
    pub sources: BTreeMap<String, Source>,
    /// Linked CRM records, by sync config id.
    #[serde(default)]
    pub links: BTreeMap<String, LinkedRecord>,
    /// Field version: +1 per change of fields.
    pub version: u64,
    /// Item revision: +1 per write.
    pub rev: u64,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change of fields.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Set when deleted through the API (kept so pushes can propagate the delete).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub deleted_at: Option<OffsetDateTime>,
}

impl Record {
    /// A new, empty record.
    pub fn new(id: RecordId, tenant: TenantId, entity: Entity, at: OffsetDateTime) -> Self {
        Self {
            id,
            tenant,
            entity,
            fields: BTreeMap::new(),
            sources: BTreeMap::new(),
            links: BTreeMap::new(),
            version: 0,
            rev: 0,
            created_at: at,
            updated_at: at,
            deleted_at: None,
        }
    }

    /// Its key (lower-cased email or domain), if it has one.
    pub fn key(&self) -> Option<String> {
        self.fields
            .get(self.entity.key_field()?)
            .map(|k| normalise_key(self.entity, k))
            .filter(|k| !k.is_empty())
    }

    /// Its display name.
    pub fn name(&self) -> String {
        let parts: Vec<&str> = self
            .entity
            .name_fields()
            .iter()
            .filter_map(|f| self.fields.get(*f).map(String::as_str))
            .filter(|v| !v.is_empty())
            .collect();
        if parts.is_empty() {
            self.key().unwrap_or_default()
        } else {
            parts.join(" ")
        }
    }

    /// Sets `field` to `value` (None or empty clears it) from `source`; true if it
    /// changed.
    pub fn set(&mut self, field: &str, value: Option<&str>, source: &Source) -> bool {
        let value = value.filter(|v| !v.is_empty());
        if self.fields.get(field).map(String::as_str) == value {
            return false;
        }
        match value {
            Some(v) => self.fields.insert(field.to_owned(), v.to_owned()),
            None => self.fields.remove(field),
        };
        self.sources.insert(field.to_owned(), source.clone());
        true
    }
}

/// The canonical form of a key value: trimmed, lower-case; a domain loses its scheme,
/// `www.` and path.
pub fn normalise_key(entity: Entity, value: &str) -> String {
    let v = value.trim().to_lowercase();
    match entity {
        Entity::Contacts => v,
        Entity::Companies => {
            let v = v
                .strip_prefix("https://")
                .or_else(|| v.strip_prefix("http://"))
                .unwrap_or(&v);
            let v = v.strip_prefix("www.").unwrap_or(v);
            v.split(['/', '?', '#'])
                .next()
                .unwrap_or_default()
                .to_owned()
        }
        Entity::Deals => v,
    }
}

/// The record store.
#[derive(Clone, Debug)]
pub struct Records {
    pub(crate) table: Table,
}

/// Why a key-checked write of a record did not happen (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another live record holds the key (email, domain).
    #[error("record {0} already holds this key")]
    DuplicateKey(RecordId),
    /// The record, or the marker of its key, changed since it was read: read again.
    #[error("the record changed concurrently")]
    Stale,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many queries one listing may take to fill a page past filtered-out items.
const FILL_ROUNDS: usize = 8;

/// How to list records.
#[derive(Debug, Clone, Default)]
pub struct ListQuery<'a> {
    /// A name prefix, or an exact email / domain (contains `@` or `.`).
    pub search: Option<&'a str>,
    /// Only records with a live link to this provider.
    pub platform: Option<Platform<'a>>,
    /// Page size.
    pub limit: i32,
    /// Continue after a previous page.
    pub cursor: Option<&'a str>,
}

/// A platform filter: a provider, and the tenant's sync configs (the links of those
/// of this provider are what a record is on the platform by, whichever side created
/// them).
#[derive(Debug, Clone, Copy)]
pub struct Platform<'a> {
    /// The provider.
    pub provider: &'a str,
    /// The tenant's sync configs.
    pub configs: &'a [SyncConfig],
}

impl Records {
    /// Records in `table`.
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// A page of live records: by name prefix, exact key, or id order. Pages are
    /// filled past filtered-out items (deleted, other platforms) within a few queries,
    /// so a page may hold fewer than `limit` records and still have a cursor. A cursor
    /// only continues the listing it came from (same search and platform). A record
    /// that does not convert is left out and named in `skipped`.
    pub async fn list(
        &self,
        tenant: &TenantId,
        entity: Entity,
        q: &ListQuery<'_>,
    ) -> Result<Listing<Record>, StoreError> {
        let search = q.search.map(str::trim).filter(|s| !s.is_empty());
        if let Some(s) = search {
            // An email / domain is one word; "Acme Inc." is a name.
            let looks_like_key = !s.contains(char::is_whitespace)
                && match entity {
                    Entity::Contacts => s.contains('@'),
                    Entity::Companies => s.contains('.'),
                    Entity::Deals => false,
                };
            if looks_like_key {
                if q.cursor.is_some() {
                    // An exact search answers in one page and never gives a cursor.
                    return Err(StoreError::BadCursor);
                }
                let page = self.by_key(tenant, entity, s, q.platform).await?;
                return Ok(Listing {
                    items: page.items,
                    cursor: page.cursor,
                    skipped: Vec::new(),
                });
            }
        }
        let prefix = search.map(str::to_lowercase);
        let scope = format!("{tenant}/{entity}");
        let tag = cursor_tag(&scope, prefix.as_deref(), q.platform.map(|p| p.provider));
        let mut next = q
            .cursor
            .map(|c| match c.split_once('.') {
                Some((t, rest)) if t == tag => decode_after(rest),
                _ => Err(StoreError::BadCursor),
            })
            .transpose()?;
        let mut items = Vec::new();
        let mut skipped = Vec::new();
        for _ in 0..FILL_ROUNDS {
            let want = usize::try_from(q.limit.max(1))
                .unwrap_or(1)
                .saturating_sub(items.len())
                .max(1);
            // Deleted records leave the name index; in id order they are filtered out.
            let (found, left_out, after) = match &prefix {
                Some(p) => {
                    self.round_by_name(tenant, entity, p, next.as_deref(), want)
                        .await?
                }
                None => {
                    self.round_by_id(tenant, entity, next.as_deref(), want, true)
                        .await?
                }
            };
            skipped.extend(left_out);
            items.extend(self.on_platform(tenant, entity, q.platform, found).await?);
            next = after;
            if next.is_none() || items.len() as i32 >= q.limit {
                break;
            }
        }
        Ok(Listing {
            items,
            cursor: next.map(|c| format!("{tag}.{}", encode_after(&c))),
            skipped,
        })
    }

    /// Those of `records` linked with the platform's provider (all of them without a
    /// platform): by their own link summary (pulls write it), or else by a live link
    /// item under one of the provider's configs (pushes make those too) — the links
    /// the records view shows.
    async fn on_platform(
        &self,
        tenant: &TenantId,
        entity: Entity,
        platform: Option<Platform<'_>>,
        records: Vec<Record>,
    ) -> Result<Vec<Record>, StoreError> {
        let Some(p) = platform else {
            return Ok(records);
        };
        let summarised = |r: &Record| r.links.values().any(|l| l.provider == p.provider);
        let configs: Vec<SyncConfig> = p
            .configs
            .iter()
            .filter(|c| c.provider == p.provider)
            .cloned()
            .collect();
        let ids: Vec<RecordId> = records
            .iter()
            .filter(|r| !summarised(r))
            .map(|r| r.id.clone())
            .collect();
        let linked = if configs.is_empty() {
            BTreeMap::new()
        } else {
            super::links::linked(&self.table, tenant, entity, &configs, &ids).await?
        };
        Ok(records
            .into_iter()
            .filter(|r| summarised(r) || linked.contains_key(r.id.as_str()))
            .collect())
    }

    /// The live record holding exactly this email / domain (a one-item page at most).
    async fn by_key(
        &self,
        tenant: &TenantId,
        entity: Entity,
        search: &str,
        platform: Option<Platform<'_>>,
    ) -> Result<Page<Record>, StoreError> {
        let key = normalise_key(entity, search);
        let ids = self
            .ids_by_key(tenant, entity, std::slice::from_ref(&key))
            .await?;
        let found = self
            .get_many(tenant, entity, &ids.into_values().collect::<Vec<_>>())
            .await?;
        let live = found
            .into_iter()
            .filter(|r| r.deleted_at.is_none() && r.key().as_deref() == Some(&key))
            .collect();
        Ok(Page {
            items: self.on_platform(tenant, entity, platform, live).await?,
            cursor: None,
        })
    }
}

/// What a listing's cursor is bound to: its tenant and entity, index, search and platform (FNV-1a), so a
/// cursor of one listing is refused by another instead of confusing the query.
fn cursor_tag(scope: &str, prefix: Option<&str>, platform: Option<&str>) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for part in [
        scope,
        "\u{0}",
        prefix.unwrap_or_default(),
        "\u{0}",
        platform.unwrap_or_default(),
    ] {
        for b in part.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let mode = if prefix.is_some() { 'n' } else { 'i' };
    format!("{mode}{:08x}", h as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_names_and_items() {
        let at = crate::domain::now();
        let mut r = Record::new(
            RecordId::generate(),
            TenantId::parse("acme").unwrap(),
            Entity::Companies,
            at,
        );
        let src = Source {
            origin: "app".into(),
            config_id: None,
            at,
        };
        assert!(r.set("domain", Some("https://www.Acme.example/about"), &src));
        assert!(!r.set("domain", Some("https://www.Acme.example/about"), &src));
        assert!(r.set("name", Some("Acme Ltd"), &src));
        assert_eq!(r.key().as_deref(), Some("acme.example"));
        assert_eq!(r.name(), "Acme Ltd");
        assert!(r.set("name", None, &src));
        assert!(!r.fields.contains_key("name"));
        assert_eq!(normalise_key(Entity::Contacts, " Ann@X.io "), "ann@x.io");
    }

    #[test]
    fn cursors_are_bound_to_their_listing() {
        let all = cursor_tag("t/contacts", None, None);
        assert!(all.starts_with('i') && !all.contains('.'));
        assert!(cursor_tag("t/contacts", Some("ann"), None).starts_with('n'));
        assert_eq!(
            cursor_tag("t/contacts", Some("ann"), None),
            cursor_tag("t/contacts", Some("ann"), None)
        );
        assert_ne!(
            cursor_tag("t/contacts", Some("ann"), None),
            cursor_tag("t/contacts", Some("anna"), None)
        );
        assert_ne!(cursor_tag("t/contacts", None, Some("hubspot")), all);
        assert_ne!(
            cursor_tag("t/contacts", Some("a"), Some("b")),
            cursor_tag("t/contacts", Some("ab"), None)
        );
    }
}
