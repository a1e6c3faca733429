//! The tenant's canonical records (contacts, companies) and the markers that find a
//! record by its key (email, domain).
//!
//! | item        | pk                           | sk       | gsi1 (changes)                    | gsi2 (name)                      |
//! |-------------|------------------------------|----------|-----------------------------------|----------------------------------|
//! | record      | `REC#{tenant}#{entity}`      | `{id}`   | `RECCHG#{tenant}#{entity}` / `{updated}#{id}` | `RECNAME#{tenant}#{entity}` / `{name}#{id}` |
//! | key marker  | `RECKEY#{tenant}#{entity}`   | `{key}`  |                                   |                                  |
//!
//! A record's fields, sources and link summary travel as one JSON attribute (`body`):
//! records are read and written whole, and a compact item is cheap to move.
//! `version` counts field changes (the API's ETag, and what a push compares with the
//! link's synced version); `rev` counts every write and guards conditional writes.
//!
//! A key marker belongs to one live record: the API's writes ([`Records::create_unique`],
//! [`Records::save_unique`]) check and move it in the same transaction as the record
//! (and its audit entry), so two records never hold one email or domain through the API.
//! A marker left pointing at a record that no longer holds its key is stale and may be
//! taken over.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::config::SyncConfig;
use super::schema::Entity;
use crate::domain::{RecordId, TenantId, sortable_time};
use crate::store::{
    Listing, Page, QueryOpts, Readable, SkipReason, Skipped, StoreError, Table, Write,
    keep_readable, redacted, to_item,
};

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
            .get(self.entity.key_field())
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
    }
}

#[derive(Serialize, Deserialize)]
struct Body {
    fields: BTreeMap<String, String>,
    #[serde(default)]
    sources: BTreeMap<String, Source>,
    #[serde(default)]
    links: BTreeMap<String, LinkedRecord>,
}

#[derive(Serialize, Deserialize)]
struct Item {
    pk: String,
    sk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi1pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi1sk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi2pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi2sk: Option<String>,
    id: RecordId,
    tenant: TenantId,
    entity: Entity,
    body: String,
    version: u64,
    rev: u64,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    deleted_at: Option<OffsetDateTime>,
}

#[derive(Serialize, Deserialize)]
struct Marker {
    pk: String,
    sk: String,
    record_id: RecordId,
}

/// Partition of a tenant's records of one entity.
pub fn partition(tenant: &TenantId, entity: Entity) -> String {
    format!("REC#{tenant}#{entity}")
}
fn changes_partition(tenant: &TenantId, entity: Entity) -> String {
    format!("RECCHG#{tenant}#{entity}")
}
fn name_partition(tenant: &TenantId, entity: Entity) -> String {
    format!("RECNAME#{tenant}#{entity}")
}
fn key_partition(tenant: &TenantId, entity: Entity) -> String {
    format!("RECKEY#{tenant}#{entity}")
}
/// A record's position in the change feed (gsi1 sort key).
pub fn change_position(r: &Record) -> String {
    format!("{}#{}", sortable_time(r.updated_at), r.id)
}

fn to_stored(r: &Record) -> Result<Item, StoreError> {
    let body = serde_json::to_string(&Body {
        fields: r.fields.clone(),
        sources: r.sources.clone(),
        links: r.links.clone(),
    })
    .map_err(|e| StoreError::Conversion(e.to_string()))?;
    let name: String = r.name().to_lowercase().chars().take(100).collect();
    Ok(Item {
        pk: partition(&r.tenant, r.entity),
        sk: r.id.to_string(),
        gsi1pk: Some(changes_partition(&r.tenant, r.entity)),
        gsi1sk: Some(change_position(r)),
        gsi2pk: (r.deleted_at.is_none() && !name.is_empty())
            .then(|| name_partition(&r.tenant, r.entity)),
        gsi2sk: (r.deleted_at.is_none() && !name.is_empty()).then(|| format!("{name}#{}", r.id)),
        id: r.id.clone(),
        tenant: r.tenant.clone(),
        entity: r.entity,
        body,
        version: r.version,
        rev: r.rev,
        created_at: r.created_at,
        updated_at: r.updated_at,
        deleted_at: r.deleted_at,
    })
}

fn from_stored(i: Item) -> Result<Record, StoreError> {
    let body: Body =
        serde_json::from_str(&i.body).map_err(|e| StoreError::Conversion(redacted(&e)))?;
    Ok(Record {
        id: i.id,
        tenant: i.tenant,
        entity: i.entity,
        fields: body.fields,
        sources: body.sources,
        links: body.links,
        version: i.version,
        rev: i.rev,
        created_at: i.created_at,
        updated_at: i.updated_at,
        deleted_at: i.deleted_at,
    })
}

fn marker(tenant: &TenantId, entity: Entity, key: &str, id: &RecordId) -> Marker {
    Marker {
        pk: key_partition(tenant, entity),
        sk: key.to_owned(),
        record_id: id.clone(),
    }
}

/// The record store.
#[derive(Clone, Debug)]
pub struct Records {
    table: Table,
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

    /// One record (deleted ones too).
    pub async fn get(
        &self,
        tenant: &TenantId,
        entity: Entity,
        id: &RecordId,
    ) -> Result<Option<Record>, StoreError> {
        let item: Option<Item> = self
            .table
            .get(&partition(tenant, entity), id.as_str())
            .await?;
        item.map(from_stored).transpose()
    }

    /// Many records by id (absent ones are left out).
    pub async fn get_many(
        &self,
        tenant: &TenantId,
        entity: Entity,
        ids: &[RecordId],
    ) -> Result<Vec<Record>, StoreError> {
        let pk = partition(tenant, entity);
        let keys: Vec<(String, String)> =
            ids.iter().map(|id| (pk.clone(), id.to_string())).collect();
        let items: Vec<Item> = self.table.batch_get(&keys, true).await?;
        items.into_iter().map(from_stored).collect()
    }

    /// The record ids holding these keys, by key (stale markers — the record's key
    /// changed since — are the caller's to check).
    pub async fn ids_by_key(
        &self,
        tenant: &TenantId,
        entity: Entity,
        keys: &[String],
    ) -> Result<HashMap<String, RecordId>, StoreError> {
        let pk = key_partition(tenant, entity);
        let ks: Vec<(String, String)> = keys.iter().map(|k| (pk.clone(), k.clone())).collect();
        let markers: Vec<Marker> = self.table.batch_get(&ks, true).await?;
        Ok(markers.into_iter().map(|m| (m.sk, m.record_id)).collect())
    }

    /// Creates a record through the API: fails with `ConditionFailed` if the id is
    /// taken. The key marker follows.
    pub async fn create(&self, r: &Record) -> Result<(), StoreError> {
        self.table.insert(&to_stored(r)?).await?;
        if let Some(key) = r.key() {
            self.table
                .put(&marker(&r.tenant, r.entity, &key, &r.id))
                .await?;
        }
        Ok(())
    }

    /// Saves a record read at revision `r.rev - 1` (conditional); moves its key marker
    /// when the key changed from `old_key`.
    pub async fn save(&self, r: &Record, old_key: Option<&str>) -> Result<(), StoreError> {
        // The condition is on `rev` (every write), not `version` (field changes only).
        self.table
            .client()
            .put_item()
            .table_name(self.table.name())
            .set_item(Some(to_item(&to_stored(r)?)?))
            .condition_expression("rev = :rev")
            .expression_attribute_values(":rev", rev_value(r.rev.saturating_sub(1)))
            .send()
            .await
            .map_err(|e| {
                let code = e.as_service_error().and_then(|se| {
                    aws_sdk_dynamodb::error::ProvideErrorMetadata::code(se).map(str::to_owned)
                });
                if code.as_deref() == Some("ConditionalCheckFailedException") {
                    StoreError::ConditionFailed
                } else {
                    StoreError::Service(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
                }
            })?;
        self.move_marker(r, old_key).await
    }

    /// Creates a record through the API together with its key marker and `extra`
    /// writes (its audit entry), in one transaction: refused with `DuplicateKey` when
    /// another live record holds its key, `Stale` when a concurrent write got there
    /// first (the id is taken, or the marker changed: try again).
    pub async fn create_unique(&self, r: &Record, extra: Vec<Write>) -> Result<(), WriteError> {
        let record = Put::builder()
            .table_name(self.table.name())
            .set_item(Some(to_item(&to_stored(r)?)?))
            .condition_expression("attribute_not_exists(pk)");
        self.write_unique(r, record, None, extra).await
    }

    /// Saves a record read at revision `r.rev - 1` through the API, moving its key
    /// marker when its key changed from `old_key` (a deleted record holds no key), with
    /// `extra` writes, in one transaction. Refused with `DuplicateKey` when another live
    /// record holds the new key, `Stale` when the record or the marker changed since
    /// they were read.
    pub async fn save_unique(
        &self,
        r: &Record,
        old_key: Option<&str>,
        extra: Vec<Write>,
    ) -> Result<(), WriteError> {
        let record = Put::builder()
            .table_name(self.table.name())
            .set_item(Some(to_item(&to_stored(r)?)?))
            .condition_expression("rev = :rev")
            .expression_attribute_values(":rev", rev_value(r.rev.saturating_sub(1)));
        self.write_unique(r, record, old_key, extra).await
    }

    /// The live record holding `key`, if any: a marker whose record is gone, deleted
    /// or holds another key now holds nothing.
    async fn holder(
        &self,
        tenant: &TenantId,
        entity: Entity,
        key: &str,
        marked: &RecordId,
    ) -> Result<Option<RecordId>, StoreError> {
        let held = self.get(tenant, entity, marked).await?;
        Ok(held
            .filter(|h| h.deleted_at.is_none() && h.key().as_deref() == Some(key))
            .map(|h| h.id))
    }

    async fn write_unique(
        &self,
        r: &Record,
        record: aws_sdk_dynamodb::types::builders::PutBuilder,
        old_key: Option<&str>,
        extra: Vec<Write>,
    ) -> Result<(), WriteError> {
        let table = self.table.name();
        let mut items = vec![TransactWriteItem::builder().put(build(record)?).build()];
        let new_key = if r.deleted_at.is_some() {
            None
        } else {
            r.key()
        };
        if new_key.as_deref() != old_key {
            let wanted: Vec<String> = new_key
                .iter()
                .cloned()
                .chain(old_key.map(str::to_owned))
                .collect();
            let markers = self.ids_by_key(&r.tenant, r.entity, &wanted).await?;
            if let Some(key) = &new_key {
                let marker = Put::builder()
                    .table_name(table)
                    .set_item(Some(to_item(&marker(&r.tenant, r.entity, key, &r.id))?));
                let marker = match markers.get(key) {
                    None => marker.condition_expression("attribute_not_exists(pk)"),
                    Some(marked) => {
                        if marked != &r.id
                            && let Some(holder) =
                                self.holder(&r.tenant, r.entity, key, marked).await?
                        {
                            return Err(WriteError::DuplicateKey(holder));
                        }
                        marker
                            .condition_expression("record_id = :marked")
                            .expression_attribute_values(
                                ":marked",
                                AttributeValue::S(marked.to_string()),
                            )
                    }
                };
                items.push(TransactWriteItem::builder().put(build(marker)?).build());
            }
            // The old marker goes only if it is still this record's.
            if let Some(key) = old_key
                && markers.get(key) == Some(&r.id)
            {
                let delete = Delete::builder()
                    .table_name(table)
                    .key("pk", AttributeValue::S(key_partition(&r.tenant, r.entity)))
                    .key("sk", AttributeValue::S(key.to_owned()))
                    .condition_expression("record_id = :me")
                    .expression_attribute_values(":me", AttributeValue::S(r.id.to_string()))
                    .build()
                    .map_err(conversion)?;
                items.push(TransactWriteItem::builder().delete(delete).build());
            }
        }
        for w in extra {
            items.push(transact_item(table, w)?);
        }
        self.table
            .client()
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(|e| {
                let cancelled = e
                    .as_service_error()
                    .is_some_and(|se| se.is_transaction_canceled_exception());
                if cancelled {
                    WriteError::Stale
                } else {
                    WriteError::Store(StoreError::Service(
                        aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
                    ))
                }
            })?;
        Ok(())
    }

    async fn move_marker(&self, r: &Record, old_key: Option<&str>) -> Result<(), StoreError> {
        let new_key = if r.deleted_at.is_some() {
            None
        } else {
            r.key()
        };
        if new_key.as_deref() == old_key {
            return Ok(());
        }
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        if let Some(k) = &new_key {
            puts.push(to_item(&marker(&r.tenant, r.entity, k, &r.id))?);
        }
        if let Some(k) = old_key {
            deletes.push((key_partition(&r.tenant, r.entity), k.to_owned()));
        }
        self.table.batch_write(puts, deletes).await
    }

    /// Writes records no one else can be writing (new records of a pull, with ids
    /// derived from their CRM record) and their key markers, in batches.
    pub async fn put_new(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut puts = Vec::with_capacity(records.len() * 2);
        for r in records {
            puts.push(to_item(&to_stored(r)?)?);
            if let Some(k) = r.key() {
                puts.push(to_item(&marker(&r.tenant, r.entity, &k, &r.id))?);
            }
        }
        self.table.batch_write(puts, Vec::new()).await
    }

    /// Removes a record and its marker for good (after its delete has been handled).
    pub async fn purge(&self, r: &Record) -> Result<(), StoreError> {
        let mut deletes = vec![(partition(&r.tenant, r.entity), r.id.to_string())];
        if let Some(k) = r.key() {
            deletes.push((key_partition(&r.tenant, r.entity), k));
        }
        self.table.batch_write(Vec::new(), deletes).await
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
        let tag = cursor_tag(prefix.as_deref(), q.platform.map(|p| p.provider));
        let cursor = q
            .cursor
            .map(|c| match c.split_once('.') {
                Some((t, rest)) if t == tag => Ok(rest),
                _ => Err(StoreError::BadCursor),
            })
            .transpose()?;
        let (index, pk) = match &prefix {
            Some(_) => (Some("gsi2"), name_partition(tenant, entity)),
            // Deleted records leave the name index; in id order they are filtered out.
            None => (None, partition(tenant, entity)),
        };
        let filter = (prefix.is_none()).then_some("attribute_not_exists(deleted_at)");
        let mut items = Vec::new();
        let mut skipped = Vec::new();
        let mut next = cursor.map(str::to_owned);
        for _ in 0..FILL_ROUNDS {
            let want = q.limit.saturating_sub(items.len() as i32).max(1);
            let page = self
                .table
                .query_lenient::<Item>(
                    index,
                    &pk,
                    QueryOpts {
                        prefix: prefix.as_deref(),
                        limit: Some(want),
                        cursor: next.as_deref(),
                        filter: filter.map(|f| (f, Vec::new())),
                        ..Default::default()
                    },
                )
                .await?;
            let found = readable_records(page.items, &mut skipped);
            items.extend(self.on_platform(tenant, entity, q.platform, found).await?);
            next = page.cursor;
            if next.is_none() || items.len() as i32 >= q.limit {
                break;
            }
        }
        Ok(Listing {
            items,
            cursor: next.map(|c| format!("{tag}.{c}")),
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

    /// A page of every record (deleted too) in id order: what a full push walks.
    pub async fn scan_partition(
        &self,
        tenant: &TenantId,
        entity: Entity,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<Record>, StoreError> {
        let page: Page<Item> = self
            .table
            .query(
                None,
                &partition(tenant, entity),
                QueryOpts {
                    limit: Some(limit),
                    cursor,
                    ..Default::default()
                },
            )
            .await?;
        convert(page)
    }

    /// A page of the change feed: records changed at or after `from` (a change
    /// position), oldest first.
    pub async fn changes(
        &self,
        tenant: &TenantId,
        entity: Entity,
        from: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<Record>, StoreError> {
        let page: Page<Item> = self
            .table
            .query(
                Some("gsi1"),
                &changes_partition(tenant, entity),
                QueryOpts {
                    between: Some((from, "~")),
                    limit: Some(limit),
                    cursor,
                    ..Default::default()
                },
            )
            .await?;
        convert(page)
    }
}

/// What a listing's cursor is bound to: its index, search and platform (FNV-1a), so a
/// cursor of one listing is refused by another instead of confusing the query.
fn cursor_tag(prefix: Option<&str>, platform: Option<&str>) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for part in [
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

fn rev_value(rev: u64) -> AttributeValue {
    AttributeValue::N(rev.to_string())
}

fn conversion(e: impl std::fmt::Display) -> StoreError {
    StoreError::Conversion(e.to_string())
}

fn build(put: aws_sdk_dynamodb::types::builders::PutBuilder) -> Result<Put, StoreError> {
    put.build().map_err(conversion)
}

/// A store write (an audit entry) as an item of a record's transaction.
fn transact_item(table: &str, w: Write) -> Result<TransactWriteItem, StoreError> {
    Ok(match w {
        Write::Insert(item) => TransactWriteItem::builder()
            .put(build(
                Put::builder()
                    .table_name(table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)"),
            )?)
            .build(),
        Write::Replace(item, v) => TransactWriteItem::builder()
            .put(build(
                Put::builder()
                    .table_name(table)
                    .set_item(Some(item))
                    .condition_expression("version = :v")
                    .expression_attribute_values(":v", AttributeValue::N(v.to_string())),
            )?)
            .build(),
        Write::Delete { pk, sk, must_exist } => {
            let mut d = Delete::builder()
                .table_name(table)
                .key("pk", AttributeValue::S(pk))
                .key("sk", AttributeValue::S(sk));
            if must_exist {
                d = d.condition_expression("attribute_exists(pk)");
            }
            TransactWriteItem::builder()
                .delete(d.build().map_err(conversion)?)
                .build()
        }
    })
}

/// The records of a lenient page whose items and bodies convert; the others go to
/// `skipped` by id, logged by key and never by value.
fn readable_records(items: Vec<Readable<Item>>, skipped: &mut Vec<Skipped>) -> Vec<Record> {
    let mut records = Vec::with_capacity(items.len());
    for item in keep_readable(items, "", "record", skipped) {
        let id = item.id.to_string();
        match from_stored(item) {
            Ok(r) => records.push(r),
            Err(e) => {
                tracing::error!(key = %id, what = "record", error = %redacted(&e), "record body unreadable; skipped");
                skipped.push(Skipped {
                    id,
                    reason: SkipReason::Unreadable,
                });
            }
        }
    }
    records
}

fn convert(page: Page<Item>) -> Result<Page<Record>, StoreError> {
    Ok(Page {
        items: page
            .items
            .into_iter()
            .map(from_stored)
            .collect::<Result<_, _>>()?,
        cursor: page.cursor,
    })
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
        let back = from_stored(to_stored(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(r.set("name", None, &src));
        assert!(!r.fields.contains_key("name"));
        assert_eq!(normalise_key(Entity::Contacts, " Ann@X.io "), "ann@x.io");
    }

    #[test]
    fn cursors_are_bound_to_their_listing() {
        let all = cursor_tag(None, None);
        assert!(all.starts_with('i') && !all.contains('.'));
        assert!(cursor_tag(Some("ann"), None).starts_with('n'));
        assert_eq!(cursor_tag(Some("ann"), None), cursor_tag(Some("ann"), None));
        assert_ne!(
            cursor_tag(Some("ann"), None),
            cursor_tag(Some("anna"), None)
        );
        assert_ne!(cursor_tag(None, Some("hubspot")), all);
        assert_ne!(
            cursor_tag(Some("a"), Some("b")),
            cursor_tag(Some("ab"), None)
        );
    }
}
