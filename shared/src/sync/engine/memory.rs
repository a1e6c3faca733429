//! An in-memory store behind the engine's ports ([`MatchStore`], [`PageStore`]) for
//! the unit tests of matching and of the pull page pipeline: records with their key
//! markers (a deleted record keeps its marker, as in DynamoDB), this config's links,
//! conflicts, and two ways to play another writer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::matching::MatchStore;
use super::pull::PageStore;
use crate::domain::{
    ConnectionId, JobId, MappingId, RecordId, SyncConfigId, SyncLogId, TenantId, UserId, now,
};
use crate::store::StoreError;
use crate::sync::config::{
    ConfigStatus, FieldMapping, Frequency, SyncConfig, SyncDirection, SyncOptions,
};
use crate::sync::conflict::{Direction, Strategy};
use crate::sync::links::Link;
use crate::sync::records::{Record, Source};
use crate::sync::runs::StoredConflict;
use crate::sync::runs::{Phase, Task};
use crate::sync::schema::Entity;

/// The page pipeline's store in memory, with two ways to play another writer.
#[derive(Default)]
pub(super) struct Memory {
    pub records: Mutex<BTreeMap<String, Record>>,
    pub markers: Mutex<BTreeMap<String, RecordId>>,
    pub links: Mutex<BTreeMap<String, Link>>,
    pub conflicts: Mutex<Vec<StoredConflict>>,
    /// Saves that find the record changed first (an API edit of its phone).
    pub interfere: Mutex<usize>,
    /// A record another config's pull creates just before this pull claims its key.
    pub claimed_meanwhile: Mutex<Option<Record>>,
}

/// A lock that a panicking test thread left poisoned still gives its data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Memory {
    pub fn insert(&self, r: Record) {
        if let Some(k) = r.key() {
            lock(&self.markers).insert(k, r.id.clone());
        }
        lock(&self.records).insert(r.id.to_string(), r);
    }

    fn live_holder(&self, key: &str) -> Option<RecordId> {
        let id = lock(&self.markers).get(key).cloned()?;
        let records = lock(&self.records);
        let r = records.get(id.as_str())?;
        (r.deleted_at.is_none() && r.key().as_deref() == Some(key)).then_some(id)
    }

    pub fn record(&self, id: &RecordId) -> Record {
        lock(&self.records)[id.as_str()].clone()
    }
}

impl MatchStore for Memory {
    async fn records(
        &self,
        _tenant: &TenantId,
        _entity: Entity,
        ids: &[RecordId],
    ) -> Result<Vec<Record>, StoreError> {
        let records = lock(&self.records);
        Ok(ids
            .iter()
            .filter_map(|id| records.get(id.as_str()).cloned())
            .collect())
    }

    async fn ids_by_key(
        &self,
        _tenant: &TenantId,
        _entity: Entity,
        keys: &[String],
    ) -> Result<HashMap<String, RecordId>, StoreError> {
        let markers = lock(&self.markers);
        Ok(keys
            .iter()
            .filter_map(|k| Some((k.clone(), markers.get(k)?.clone())))
            .collect())
    }

    async fn links(&self, ids: &[RecordId]) -> Result<BTreeMap<String, Link>, StoreError> {
        let links = lock(&self.links);
        Ok(ids
            .iter()
            .filter_map(|id| Some((id.to_string(), links.get(id.as_str())?.clone())))
            .collect())
    }
}

impl PageStore for Memory {
    async fn put_new(
        &self,
        records: &[Record],
        claiming: bool,
    ) -> Result<Vec<RecordId>, StoreError> {
        if let Some(other) = lock(&self.claimed_meanwhile).take() {
            self.insert(other);
        }
        let mut lost = Vec::new();
        for r in records {
            let held = r.key().and_then(|k| self.live_holder(&k));
            if claiming && held.is_some_and(|h| h != r.id) {
                lost.push(r.id.clone());
            } else {
                self.insert(r.clone());
            }
        }
        Ok(lost)
    }

    async fn save(&self, r: &Record, _old_key: Option<&str>) -> Result<(), StoreError> {
        let mut records = lock(&self.records);
        let stored = records
            .get_mut(r.id.as_str())
            .ok_or(StoreError::ConditionFailed)?;
        {
            let mut interfere = lock(&self.interfere);
            if *interfere > 0 {
                *interfere -= 1;
                let source = Source {
                    origin: "app".into(),
                    config_id: None,
                    at: now(),
                };
                let phone = format!("+1555000{}", *interfere);
                stored.set("phone", Some(phone.as_str()), &source);
                stored.rev += 1;
                stored.version += 1;
                return Err(StoreError::ConditionFailed);
            }
        }
        if stored.rev + 1 != r.rev {
            return Err(StoreError::ConditionFailed);
        }
        *stored = r.clone();
        Ok(())
    }

    async fn put_links(&self, links: &[(RecordId, Link)]) -> Result<(), StoreError> {
        let mut held = lock(&self.links);
        for (id, l) in links {
            held.insert(id.to_string(), l.clone());
        }
        Ok(())
    }

    async fn open_conflict(&self, c: &StoredConflict) -> Result<(), StoreError> {
        lock(&self.conflicts).push(c.clone());
        Ok(())
    }
}

/// The tenant of the tests.
pub fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// A HubSpot contacts config mapping email, first name and phone both ways, creating
/// missing records, last write wins.
pub fn config(direction: SyncDirection) -> SyncConfig {
    let mapping = |field: &str| FieldMapping {
        id: MappingId::generate(),
        entity: Entity::Contacts,
        crm_field: field.into(),
        app_field: field.into(),
        direction: Direction::Bidirectional,
        transform: None,
        push_transform: None,
    };
    SyncConfig {
        id: SyncConfigId::generate(),
        tenant: tenant(),
        connection_id: ConnectionId::generate(),
        provider: "hubspot".into(),
        name: "n".into(),
        direction,
        frequency: Frequency::Manual,
        entities: vec![Entity::Contacts],
        filters: vec![],
        conflict_strategy: Strategy::LastWriteWins,
        options: SyncOptions {
            create_missing: true,
            ..SyncOptions::default()
        },
        status: ConfigStatus::Active,
        mappings: ["email", "first_name", "phone"].map(mapping).to_vec(),
        schedule_name: None,
        last_job: None,
        created_at: now(),
        created_by: UserId::parse("u").unwrap(),
        updated_at: now(),
        version: 1,
    }
}

/// A chunk's task of `config`'s contacts.
pub fn task(config: &SyncConfig, phase: Phase) -> Task {
    Task {
        tenant: tenant(),
        config_id: config.id.clone(),
        job_id: JobId::generate(),
        log_id: SyncLogId::generate(),
        entity: Entity::Contacts,
        phase,
        seq: 0,
        cursor: None,
        push_cursor: None,
        then_push: false,
        only: None,
        gone: Vec::new(),
    }
}

/// An app contact (version and revision 1).
pub fn person(id: RecordId, email: &str, first: &str) -> Record {
    let source = Source {
        origin: "app".into(),
        config_id: None,
        at: now(),
    };
    let mut r = Record::new(id, tenant(), Entity::Contacts, now());
    r.set("email", Some(email), &source);
    r.set("first_name", Some(first), &source);
    r.version = 1;
    r.rev = 1;
    r
}
