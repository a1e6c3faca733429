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

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::schema::Entity;
use crate::domain::{RecordId, TenantId, sortable_time};
use crate::store::{Page, QueryOpts, StoreError, Table, to_item};

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

    /// The providers it is linked with, comma-separated (a filterable attribute).
    fn platforms(&self) -> String {
        let mut p: Vec<&str> = self.links.values().map(|l| l.provider.as_str()).collect();
        p.sort_unstable();
        p.dedup();
        format!(",{},", p.join(","))
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
            v.split(['/', '?', '#']).next().unwrap_or_default().to_owned()
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
    platforms: String,
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
        platforms: r.platforms(),
        version: r.version,
        rev: r.rev,
        created_at: r.created_at,
        updated_at: r.updated_at,
        deleted_at: r.deleted_at,
    })
}

fn from_stored(i: Item) -> Result<Record, StoreError> {
    let body: Body =
        serde_json::from_str(&i.body).map_err(|e| StoreError::Conversion(e.to_string()))?;
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

/// How to list records.
#[derive(Debug, Clone, Default)]
pub struct ListQuery<'a> {
    /// A name prefix, or an exact email / domain (contains `@` or `.`).
    pub search: Option<&'a str>,
    /// Only records linked with this provider.
    pub platform: Option<&'a str>,
    /// Page size.
    pub limit: i32,
    /// Continue after a previous page.
    pub cursor: Option<&'a str>,
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
            self.table.put(&marker(&r.tenant, r.entity, &key, &r.id)).await?;
        }
        Ok(())
    }

    /// Saves a record read at revision `r.rev - 1` (conditional); moves its key marker
    /// when the key changed from `old_key`.
    pub async fn save(&self, r: &Record, old_key: Option<&str>) -> Result<(), StoreError> {
        self.table
            .replace(&to_stored(r)?, r.rev.saturating_sub(1))
            .await?;
        self.move_marker(r, old_key).await
    }

    async fn move_marker(&self, r: &Record, old_key: Option<&str>) -> Result<(), StoreError> {
        let new_key = if r.deleted_at.is_some() { None } else { r.key() };
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

    /// A page of live records: by name prefix, exact key, or id order.
    pub async fn list(
        &self,
        tenant: &TenantId,
        entity: Entity,
        q: &ListQuery<'_>,
    ) -> Result<Page<Record>, StoreError> {
        let platform_filter = q.platform.map(|p| {
            (
                "contains(platforms, :platform) AND attribute_not_exists(deleted_at)",
                vec![(":platform", AttributeValue::S(format!(",{p},")))],
            )
        });
        let live = ("attribute_not_exists(deleted_at)", Vec::new());
        if let Some(s) = q.search.map(str::trim).filter(|s| !s.is_empty()) {
            let key = normalise_key(entity, s);
            let looks_like_key = match entity {
                Entity::Contacts => s.contains('@'),
                Entity::Companies => s.contains('.'),
            };
            if looks_like_key {
                let ids = self.ids_by_key(tenant, entity, &[key.clone()]).await?;
                let found = self
                    .get_many(tenant, entity, &ids.into_values().collect::<Vec<_>>())
                    .await?;
                let items = found
                    .into_iter()
                    .filter(|r| r.deleted_at.is_none() && r.key().as_deref() == Some(&key))
                    .filter(|r| {
                        q.platform
                            .is_none_or(|p| r.links.values().any(|l| l.provider == p))
                    })
                    .collect();
                return Ok(Page {
                    items,
                    cursor: None,
                });
            }
            let prefix = s.to_lowercase();
            let page: Page<Item> = self
                .table
                .query(
                    Some("gsi2"),
                    &name_partition(tenant, entity),
                    QueryOpts {
                        prefix: Some(&prefix),
                        limit: Some(q.limit),
                        cursor: q.cursor,
                        filter: platform_filter,
                        ..Default::default()
                    },
                )
                .await?;
            return convert(page);
        }
        let page: Page<Item> = self
            .table
            .query(
                None,
                &partition(tenant, entity),
                QueryOpts {
                    limit: Some(q.limit),
                    cursor: q.cursor,
                    filter: Some(platform_filter.unwrap_or(live)),
                    ..Default::default()
                },
            )
            .await?;
        convert(page)
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
}
