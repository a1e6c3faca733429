//! Records and the markers of their keys (email, domain), as items.
//!
//! | item        | pk (table)                               | sk      | gsi3 (changes, KEYS_ONLY)                       | gsi2 (names, KEYS_ONLY)                      |
//! |-------------|------------------------------------------|---------|-------------------------------------------------|----------------------------------------------|
//! | record      | `REC#{tenant}#{entity}#{shard(id)}`      | `{id}`  | `RECCHG#{tenant}#{entity}#{shard(id)}` / `{updated}#{id}` | `RECNAME#{tenant}#{entity}#{shard(id)}` / `{name}#{id}` |
//! | key marker  | `RECKEY#{tenant}#{entity}#{shard(key)}`  | `{key}` |                                                 |                                              |
//!
//! Every family is spread over [`keys::RECORD_SHARDS`] partition-key values so a sync
//! at a provider's full rate stays under a partition's limits (README, "Data layout and
//! partition limits"); listings merge the shards back into one order
//! ([`Table::query_shards`]). The indexes project keys only: a record write costs its
//! indexes one small write when it creates the entry, two when it moves it, and none
//! when neither its change time nor its name changed. Index answers are eventually
//! consistent, so every record found through one is read from the table and checked
//! against what the index said (a name that no longer matches is left out).
//!
//! A record's fields, sources and link summary travel as one JSON attribute (`body`):
//! records are read and written whole, and a compact item is cheap to move.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    Item, Page, Readable, SkRange, SkipReason, Skipped, StoreError, Value, Write, keep_readable,
    keys, redacted, to_item,
};
use crate::domain::{RecordId, TenantId, sortable_time};
use crate::sync::records::{LinkedRecord, Record, Records, Source, WriteError};
use crate::sync::schema::Entity;

#[derive(Serialize, Deserialize)]
struct Body {
    fields: BTreeMap<String, String>,
    #[serde(default)]
    sources: BTreeMap<String, Source>,
    #[serde(default)]
    links: BTreeMap<String, LinkedRecord>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    pk: String,
    sk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi3pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi3sk: Option<String>,
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

/// A record's position in the change feed (its gsi3 sort key).
pub fn change_position(r: &Record) -> String {
    format!("{}#{}", sortable_time(r.updated_at), r.id)
}

/// A record's name as the name index holds it (lower case, at most 100 characters).
fn indexed_name(r: &Record) -> String {
    r.name().to_lowercase().chars().take(100).collect()
}

fn to_stored(r: &Record) -> Result<Stored, StoreError> {
    let body = serde_json::to_string(&Body {
        fields: r.fields.clone(),
        sources: r.sources.clone(),
        links: r.links.clone(),
    })
    .map_err(|e| StoreError::Conversion(redacted(&e)))?;
    let shard = keys::shard_of(r.id.as_str());
    let name = indexed_name(r);
    let named = r.deleted_at.is_none() && !name.is_empty();
    Ok(Stored {
        pk: keys::records(&r.tenant, r.entity, shard),
        sk: r.id.to_string(),
        gsi3pk: Some(keys::record_changes(&r.tenant, r.entity, shard)),
        gsi3sk: Some(change_position(r)),
        gsi2pk: named.then(|| keys::record_names(&r.tenant, r.entity, shard)),
        gsi2sk: named.then(|| format!("{name}#{}", r.id)),
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

fn from_stored(i: Stored) -> Result<Record, StoreError> {
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

fn record_item(r: &Record) -> Result<Item, StoreError> {
    to_item(&to_stored(r)?)
}

/// A record's item, for the capacity arithmetic.
#[cfg(test)]
pub(super) fn item_for_test(r: &Record) -> Item {
    record_item(r).unwrap()
}

fn marker(tenant: &TenantId, entity: Entity, key: &str, id: &RecordId) -> Result<Item, StoreError> {
    to_item(&Marker {
        pk: keys::record_key(tenant, entity, key),
        sk: key.to_owned(),
        record_id: id.clone(),
    })
}

/// Every shard of one family's partition.
fn shards(f: impl Fn(u32) -> String) -> Vec<String> {
    (0..keys::RECORD_SHARDS).map(f).collect()
}

/// A record's table key.
fn record_key(tenant: &TenantId, entity: Entity, id: &RecordId) -> (String, String) {
    (keys::record(tenant, entity, id), id.to_string())
}

/// How a record write is conditioned.
enum Guard {
    /// The id must be new.
    New,
    /// The item must be at revision `rev - 1` (read before this write).
    Rev,
}

fn guarded(r: &Record, guard: Guard) -> Result<Write, StoreError> {
    let item = record_item(r)?;
    Ok(match guard {
        Guard::New => Write::Insert(item),
        // The condition is on `rev` (every write), not `version` (field changes only).
        Guard::Rev => Write::PutIf {
            item,
            condition: "rev = :rev",
            value: Some((":rev", Value::num(r.rev.saturating_sub(1)))),
        },
    })
}

impl Records {
    /// One record (deleted ones too).
    pub async fn get(
        &self,
        tenant: &TenantId,
        entity: Entity,
        id: &RecordId,
    ) -> Result<Option<Record>, StoreError> {
        let (pk, sk) = record_key(tenant, entity, id);
        let item: Option<Stored> = self.table.get(&pk, &sk).await?;
        item.map(from_stored).transpose()
    }

    /// Many records by id (absent ones are left out).
    pub async fn get_many(
        &self,
        tenant: &TenantId,
        entity: Entity,
        ids: &[RecordId],
    ) -> Result<Vec<Record>, StoreError> {
        let keys: Vec<(String, String)> = ids
            .iter()
            .map(|id| record_key(tenant, entity, id))
            .collect();
        let items: Vec<Stored> = self.table.batch_get(&keys, true).await?;
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
        let ks: Vec<(String, String)> = keys
            .iter()
            .map(|k| (keys::record_key(tenant, entity, k), k.clone()))
            .collect();
        let markers: Vec<Marker> = self.table.batch_get(&ks, true).await?;
        Ok(markers.into_iter().map(|m| (m.sk, m.record_id)).collect())
    }

    /// Creates a record through the API: fails with `ConditionFailed` if the id is
    /// taken. The key marker follows.
    pub async fn create(&self, r: &Record) -> Result<(), StoreError> {
        self.table.insert(&to_stored(r)?).await?;
        if let Some(key) = r.key() {
            self.table
                .batch_write(vec![marker(&r.tenant, r.entity, &key, &r.id)?], Vec::new())
                .await?;
        }
        Ok(())
    }

    /// Saves a record read at revision `r.rev - 1` (conditional); moves its key marker
    /// when the key changed from `old_key`.
    pub async fn save(&self, r: &Record, old_key: Option<&str>) -> Result<(), StoreError> {
        self.table
            .put_if(
                record_item(r)?,
                "rev = :rev",
                None,
                Some((":rev", Value::num(r.rev.saturating_sub(1)))),
            )
            .await?;
        self.move_marker(r, old_key).await
    }

    /// Creates a record through the API together with its key marker and `extra`
    /// writes (its audit entry), in one transaction: refused with `DuplicateKey` when
    /// another live record holds its key, `Stale` when a concurrent write got there
    /// first (the id is taken, or the marker changed: try again).
    pub async fn create_unique(&self, r: &Record, extra: Vec<Write>) -> Result<(), WriteError> {
        self.write_unique(r, guarded(r, Guard::New)?, None, extra)
            .await
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
        self.write_unique(r, guarded(r, Guard::Rev)?, old_key, extra)
            .await
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
        record: Write,
        old_key: Option<&str>,
        extra: Vec<Write>,
    ) -> Result<(), WriteError> {
        let mut writes = vec![record];
        // A deleted record's marker stays (a tombstone: it holds nothing for
        // uniqueness, see `holder`, and record matching finds the deleted record by it).
        let new_key = if r.deleted_at.is_some() {
            old_key.map(str::to_owned)
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
                let item = marker(&r.tenant, r.entity, key, &r.id)?;
                writes.push(match markers.get(key) {
                    None => Write::Insert(item),
                    Some(marked) => {
                        if marked != &r.id
                            && let Some(holder) =
                                self.holder(&r.tenant, r.entity, key, marked).await?
                        {
                            return Err(WriteError::DuplicateKey(holder));
                        }
                        Write::PutIf {
                            item,
                            condition: "record_id = :marked",
                            value: Some((":marked", Value::S(marked.to_string()))),
                        }
                    }
                });
            }
            // The old marker goes only if it is still this record's.
            if let Some(key) = old_key
                && markers.get(key) == Some(&r.id)
            {
                writes.push(Write::DeleteIf {
                    pk: keys::record_key(&r.tenant, r.entity, key),
                    sk: key.to_owned(),
                    condition: "record_id = :me",
                    value: Some((":me", Value::S(r.id.to_string()))),
                });
            }
        }
        writes.extend(extra);
        match self.table.transact(writes).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed) => Err(WriteError::Stale),
            Err(e) => Err(WriteError::Store(e)),
        }
    }

    async fn move_marker(&self, r: &Record, old_key: Option<&str>) -> Result<(), StoreError> {
        // A deleted record keeps its marker (see `write_unique`).
        let new_key = if r.deleted_at.is_some() {
            old_key.map(str::to_owned)
        } else {
            r.key()
        };
        if new_key.as_deref() == old_key {
            return Ok(());
        }
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        if let Some(k) = &new_key {
            puts.push(marker(&r.tenant, r.entity, k, &r.id)?);
        }
        if let Some(k) = old_key {
            deletes.push((keys::record_key(&r.tenant, r.entity, k), k.to_owned()));
        }
        self.table.batch_write(puts, deletes).await
    }

    /// Writes records no one else can be writing (new records of a pull, with ids
    /// derived from their CRM record) and their key markers, in batches.
    pub async fn put_new(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut puts = Vec::with_capacity(records.len() * 2);
        for r in records {
            puts.push(record_item(r)?);
            if let Some(k) = r.key() {
                puts.push(marker(&r.tenant, r.entity, &k, &r.id)?);
            }
        }
        self.table.batch_write(puts, Vec::new()).await
    }

    /// [`Records::put_new`] where another config's pull may be creating the same person
    /// at the same time (the tenant syncs the entity with several CRMs): each key
    /// marker is claimed first, conditionally (a marker that holds nothing — its record
    /// gone, deleted or keyed otherwise — is taken over), and a record is written only
    /// once its key is its own. Answers the ids of the records not written because a
    /// live record holds their key (the caller matches them to it).
    pub async fn put_new_claiming(&self, records: &[Record]) -> Result<Vec<RecordId>, StoreError> {
        const AT_ONCE: usize = 16;
        let mut puts = Vec::with_capacity(records.len());
        let mut lost = Vec::new();
        for group in records.chunks(AT_ONCE) {
            let claims = futures::future::join_all(
                group
                    .iter()
                    .cloned()
                    .map(|r| async move { (self.claim_key(&r).await, r) }),
            )
            .await;
            for (claim, r) in claims {
                if claim? {
                    puts.push(record_item(&r)?);
                } else {
                    lost.push(r.id);
                }
            }
        }
        self.table.batch_write(puts, Vec::new()).await?;
        Ok(lost)
    }

    /// Claims a new record's key marker: true when the key is (now) this record's.
    async fn claim_key(&self, r: &Record) -> Result<bool, StoreError> {
        let Some(key) = r.key() else {
            return Ok(true);
        };
        let item = marker(&r.tenant, r.entity, &key, &r.id)?;
        let claim = self
            .table
            .put_if(item.clone(), "attribute_not_exists(pk)", None, None)
            .await;
        match claim {
            Ok(()) => return Ok(true),
            Err(StoreError::ConditionFailed) => {}
            Err(e) => return Err(e),
        }
        let marked = self
            .ids_by_key(&r.tenant, r.entity, std::slice::from_ref(&key))
            .await?;
        let Some(marked) = marked.get(&key) else {
            return Ok(false); // claimed and let go meanwhile: matched again
        };
        if marked == &r.id {
            return Ok(true);
        }
        if self
            .holder(&r.tenant, r.entity, &key, marked)
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let taken = self
            .table
            .put_if(
                item,
                "record_id = :marked",
                None,
                Some((":marked", Value::S(marked.to_string()))),
            )
            .await;
        match taken {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes a record and its marker for good (after its delete has been handled).
    pub async fn purge(&self, r: &Record) -> Result<(), StoreError> {
        let mut deletes = vec![record_key(&r.tenant, r.entity, &r.id)];
        if let Some(k) = r.key() {
            deletes.push((keys::record_key(&r.tenant, r.entity, &k), k));
        }
        self.table.batch_write(Vec::new(), deletes).await
    }

    /// One round of records in id order after `after` (live ones only when `live`):
    /// the records, those left out because they do not convert, and where the next
    /// round starts.
    pub(crate) async fn round_by_id(
        &self,
        tenant: &TenantId,
        entity: Entity,
        after: Option<&str>,
        want: usize,
        live: bool,
    ) -> Result<(Vec<Record>, Vec<Skipped>, Option<String>), StoreError> {
        let (items, next) = self
            .table
            .query_shards(
                None,
                &shards(|s| keys::records(tenant, entity, s)),
                SkRange::All,
                after,
                want,
                live.then_some("attribute_not_exists(deleted_at)"),
            )
            .await?;
        let mut skipped = Vec::new();
        let readable = items.into_iter().map(|i| Readable::read(i, "sk")).collect();
        let records = readable_records(readable, &mut skipped);
        Ok((records, skipped, next))
    }

    /// One round of live records whose name starts with `prefix` (lower case), in name
    /// order after `after` (a name index key): the records, those left out, and where
    /// the next round starts. The index may lag: each record is read from the table
    /// and kept only if it still has such a name.
    pub(crate) async fn round_by_name(
        &self,
        tenant: &TenantId,
        entity: Entity,
        prefix: &str,
        after: Option<&str>,
        want: usize,
    ) -> Result<(Vec<Record>, Vec<Skipped>, Option<String>), StoreError> {
        if after.is_some_and(|a| !a.starts_with(prefix)) {
            return Err(StoreError::BadCursor);
        }
        let (found, next) = self
            .table
            .query_shards(
                Some("gsi2"),
                &shards(|s| keys::record_names(tenant, entity, s)),
                SkRange::Prefix(prefix),
                after,
                want,
                None,
            )
            .await?;
        let mut skipped = Vec::new();
        let records = self
            .read_found(found, &mut skipped)
            .await?
            .into_iter()
            .filter(|r| r.deleted_at.is_none() && indexed_name(r).starts_with(prefix))
            .collect();
        Ok((records, skipped, next))
    }

    /// The records an index answered (its keys only), read from the table in the
    /// index's order; gone ones are left out, unreadable ones named in `skipped`.
    async fn read_found(
        &self,
        found: Vec<Item>,
        skipped: &mut Vec<Skipped>,
    ) -> Result<Vec<Record>, StoreError> {
        let key = |i: &Item, a: &str| i.get(a).and_then(|v| v.as_s().ok()).cloned();
        let keys: Vec<(String, String)> = found
            .iter()
            .filter_map(|i| Some((key(i, "pk")?, key(i, "sk")?)))
            .collect();
        let items = self.table.batch_get_raw(&keys, true).await?;
        let readable = items.into_iter().map(|i| Readable::read(i, "sk")).collect();
        let mut by_id: HashMap<String, Record> = readable_records(readable, skipped)
            .into_iter()
            .map(|r| (r.id.to_string(), r))
            .collect();
        Ok(keys.iter().filter_map(|(_, id)| by_id.remove(id)).collect())
    }

    /// A page of every record (deleted too): what a full push walks, every shard side
    /// by side (in id order within a shard; no order across shards).
    pub async fn scan_partition(
        &self,
        tenant: &TenantId,
        entity: Entity,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<Record>, StoreError> {
        let from = cursor.map(super::ShardPositions::decode).transpose()?;
        let want = usize::try_from(limit.max(1)).unwrap_or(1);
        let (items, next) = self
            .table
            .walk_shards(
                None,
                &shards(|s| keys::records(tenant, entity, s)),
                SkRange::All,
                from,
                want,
            )
            .await?;
        let mut skipped = Vec::new();
        let readable = items.into_iter().map(|i| Readable::read(i, "sk")).collect();
        let records = readable_records(readable, &mut skipped);
        push_page(records, &skipped, next)
    }

    /// A page of the change feed: records changed at or after `from` (a change
    /// position), every shard side by side (oldest first within a shard). The feed is an
    /// index and may lag a write: a record is read as it is now, and a record whose
    /// newest change is not in the feed yet is found by the next pass (pushes start
    /// each pass a margin before the last).
    pub async fn changes(
        &self,
        tenant: &TenantId,
        entity: Entity,
        from: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<Record>, StoreError> {
        let position = cursor.map(super::ShardPositions::decode).transpose()?;
        let want = usize::try_from(limit.max(1)).unwrap_or(1);
        let (found, next) = self
            .table
            .walk_shards(
                Some("gsi3"),
                &shards(|s| keys::record_changes(tenant, entity, s)),
                SkRange::From(from),
                position,
                want,
            )
            .await?;
        let mut skipped = Vec::new();
        let records = self.read_found(found, &mut skipped).await?;
        push_page(records, &skipped, next)
    }
}

/// A page a push walks: every record must convert (a push does not skip one).
fn push_page(
    records: Vec<Record>,
    skipped: &[Skipped],
    next: Option<super::ShardPositions>,
) -> Result<Page<Record>, StoreError> {
    if let Some(s) = skipped.first() {
        tracing::error!(key = %s.id, "a record does not convert; the push stops here");
        return Err(StoreError::Conversion("a record does not convert".into()));
    }
    Ok(Page {
        items: records,
        cursor: next.as_ref().map(super::ShardPositions::encode),
    })
}

/// The records of a lenient page whose items and bodies convert; the others go to
/// `skipped` by id, logged by key and never by value.
fn readable_records(items: Vec<Readable<Stored>>, skipped: &mut Vec<Skipped>) -> Vec<Record> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_their_sharded_items() {
        let at = crate::domain::now();
        let tenant = TenantId::parse("acme").unwrap();
        let mut r = Record::new(RecordId::generate(), tenant, Entity::Contacts, at);
        let app = Source {
            origin: "app".into(),
            config_id: None,
            at,
        };
        for (field, value) in [
            ("email", "Ann@X.io"),
            ("first_name", "Ann"),
            ("last_name", "Lee"),
        ] {
            r.set(field, Some(value), &app);
        }
        let stored = to_stored(&r).unwrap();
        let shard = keys::shard_of(r.id.as_str());
        assert_eq!(stored.pk, keys::records(&r.tenant, r.entity, shard));
        assert_eq!(
            stored.gsi2pk.as_deref(),
            Some(keys::record_names(&r.tenant, r.entity, shard).as_str())
        );
        assert_eq!(stored.gsi2sk, Some(format!("ann lee#{}", r.id)));
        assert_eq!(stored.gsi3sk, Some(change_position(&r)));
        assert_eq!(from_stored(stored).unwrap(), r);
        // A deleted record leaves the name index.
        r.deleted_at = Some(at);
        assert_eq!(to_stored(&r).unwrap().gsi2pk, None);
    }
}
