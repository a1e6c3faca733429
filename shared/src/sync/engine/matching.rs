//! Which app record a pulled CRM record is. In order:
//! 1. the app record id it carries in the marker field (Conduit created it);
//! 2. the id derived from its CRM id (an earlier pull of this config created the app
//!    record);
//! 3. an app record with the same key (email / domain) that no other CRM record of
//!    this config is linked to — so a person matched in two CRMs, or created in the
//!    app and then in the CRM, is one app record with two links, not two records. A
//!    record deleted in the app keeps its key for the CRM record linked to it (so a
//!    CRM record without the marker is not brought back as a new record) and matches
//!    nothing else.
//!
//! Otherwise the derived id (the pull creates the record under it). Matching reads the
//! store through [`MatchStore`], a narrow port, so it is tested here with an in-memory
//! store.

use std::collections::{BTreeMap, HashMap};

use crate::domain::{RecordId, TenantId};
use crate::store::StoreError;
use crate::sync::conflict::Values;
use crate::sync::crm::CrmRecord;
use crate::sync::links::{Link, Links};
use crate::sync::records::{Record, Records, normalise_key};
use crate::sync::schema::Entity;

/// What matching reads: app records by id and by key, and this config's links.
pub(crate) trait MatchStore {
    /// The app records with these ids (missing ones left out).
    async fn records(
        &self,
        tenant: &TenantId,
        entity: Entity,
        ids: &[RecordId],
    ) -> Result<Vec<Record>, StoreError>;

    /// The app record holding each key (normalised), where one does.
    async fn ids_by_key(
        &self,
        tenant: &TenantId,
        entity: Entity,
        keys: &[String],
    ) -> Result<HashMap<String, RecordId>, StoreError>;

    /// This config's links of these app records, by record id.
    async fn links(&self, ids: &[RecordId]) -> Result<BTreeMap<String, Link>, StoreError>;
}

/// The store itself (and the bus conflicts are told on): what a pull page reads and
/// writes in DynamoDB.
#[derive(Clone)]
pub(super) struct Stored {
    pub records: Records,
    pub links: Links,
    pub runs: crate::sync::runs::Runs,
    pub events: crate::events::EventPublisher,
    pub task: crate::sync::runs::Task,
}

impl MatchStore for Stored {
    async fn records(
        &self,
        tenant: &TenantId,
        entity: Entity,
        ids: &[RecordId],
    ) -> Result<Vec<Record>, StoreError> {
        self.records.get_many(tenant, entity, ids).await
    }

    async fn ids_by_key(
        &self,
        tenant: &TenantId,
        entity: Entity,
        keys: &[String],
    ) -> Result<HashMap<String, RecordId>, StoreError> {
        self.records.ids_by_key(tenant, entity, keys).await
    }

    async fn links(&self, ids: &[RecordId]) -> Result<BTreeMap<String, Link>, StoreError> {
        self.links.get_many(ids).await
    }
}

/// A page matched.
#[derive(Debug, Default)]
pub(super) struct Matched {
    /// The app record id of each page record, by page index.
    pub candidate: Vec<RecordId>,
    /// The app records that exist, by id.
    pub existing: BTreeMap<String, Record>,
    /// Their links in this config, by record id.
    pub links: BTreeMap<String, Link>,
}

/// Matches a page: `crm_values` are the page's values mapped to app fields (same
/// order); `derive` gives the id a pull creates a CRM record's app record under.
pub(super) async fn match_page(
    store: &impl MatchStore,
    tenant: &TenantId,
    entity: Entity,
    marker: &str,
    page: &[CrmRecord],
    crm_values: &[Values],
    derive: impl Fn(&str) -> RecordId,
) -> Result<Matched, StoreError> {
    let mut candidate: Vec<RecordId> = page
        .iter()
        .map(|rec| {
            rec.values
                .get(marker)
                .and_then(|id| RecordId::parse(id).ok())
                .unwrap_or_else(|| derive(&rec.id))
        })
        .collect();
    let mut lookup: Vec<RecordId> = candidate.clone();
    lookup.sort();
    lookup.dedup();
    let mut links = store.links(&lookup).await?;
    let mut existing: BTreeMap<String, Record> = store
        .records(tenant, entity, &lookup)
        .await?
        .into_iter()
        .map(|r| (r.id.to_string(), r))
        .collect();
    let key_field = entity.key_field();
    let key_of = |i: usize| {
        crm_values
            .get(i)
            .and_then(|v| v.get(key_field?))
            .and_then(|v| v.as_deref())
            .map(|v| normalise_key(entity, v))
            .filter(|k| !k.is_empty())
    };
    let mut want_keys: Vec<String> = (0..page.len())
        .filter(|&i| !existing.contains_key(candidate[i].as_str()))
        .filter_map(key_of)
        .collect();
    if want_keys.is_empty() {
        return Ok(Matched {
            candidate,
            existing,
            links,
        });
    }
    want_keys.sort();
    want_keys.dedup();
    let by_key = store.ids_by_key(tenant, entity, &want_keys).await?;
    if by_key.is_empty() {
        return Ok(Matched {
            candidate,
            existing,
            links,
        });
    }
    let ids: Vec<RecordId> = by_key.values().cloned().collect();
    let found = store.records(tenant, entity, &ids).await?;
    let found_links = store.links(&ids).await?;
    for r in found {
        // Only records not already linked to another CRM record here (a push without
        // the marker field linked its creates to these).
        let linked = found_links
            .get(r.id.as_str())
            .and_then(|l| l.crm_id.as_deref());
        if linked.is_some_and(|c| !page.iter().any(|rec| rec.id == c)) {
            continue;
        }
        let Some(k) = r.key() else { continue };
        if by_key.get(&k) != Some(&r.id) {
            continue;
        }
        // A record deleted in the app keeps its key for the CRM record it is linked to
        // (which a pull must not bring back as a new record), and for no other.
        let only = match (r.deleted_at.is_some(), linked) {
            (false, _) => None,
            (true, Some(crm_id)) => Some(crm_id),
            (true, None) => continue,
        };
        for (i, slot) in candidate.iter_mut().enumerate() {
            if key_of(i).as_deref() == Some(k.as_str())
                && !existing.contains_key(slot.as_str())
                && only.is_none_or(|c| page.get(i).is_some_and(|rec| rec.id == c))
            {
                *slot = r.id.clone();
            }
        }
        existing.insert(r.id.to_string(), r);
    }
    for (k, v) in found_links {
        links.entry(k).or_insert(v);
    }
    Ok(Matched {
        candidate,
        existing,
        links,
    })
}

#[cfg(test)]
mod tests {
    use super::super::memory::Memory;
    use super::*;
    use crate::domain::now;
    use crate::sync::records::Source;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn derive(crm_id: &str) -> RecordId {
        RecordId::derived(&["acme", "scfg", "contacts", crm_id])
    }

    fn app_record(mem: &Memory, email: &str) -> RecordId {
        let id = RecordId::generate();
        let mut r = Record::new(id.clone(), tenant(), Entity::Contacts, now());
        let source = Source {
            origin: "app".into(),
            config_id: None,
            at: now(),
        };
        r.set("email", Some(email), &source);
        mem.insert(r);
        id
    }

    fn crm(id: &str, marker: Option<&RecordId>) -> CrmRecord {
        let mut values = BTreeMap::new();
        if let Some(m) = marker {
            values.insert("conduit_id".to_owned(), m.to_string());
        }
        CrmRecord {
            id: id.into(),
            values,
            modified_ms: 1,
        }
    }

    fn mapped(email: Option<&str>) -> Values {
        let mut v = Values::new();
        v.insert("email".into(), email.map(str::to_owned));
        v
    }

    async fn run(mem: &Memory, page: &[CrmRecord], values: &[Values]) -> Matched {
        match_page(
            mem,
            &tenant(),
            Entity::Contacts,
            "conduit_id",
            page,
            values,
            derive,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_carried_id_wins_over_everything() {
        let mem = Memory::default();
        let mine = app_record(&mem, "ada@example.com");
        let other = app_record(&mem, "grace@example.com");
        let page = [crm("1", Some(&mine))];
        let m = run(&mem, &page, &[mapped(Some("grace@example.com"))]).await;
        assert_eq!(m.candidate, vec![mine.clone()]);
        assert!(m.existing.contains_key(mine.as_str()));
        assert!(!m.existing.contains_key(other.as_str()));
    }

    #[tokio::test]
    async fn a_record_pulled_before_is_found_under_its_derived_id() {
        let mem = Memory::default();
        let id = derive("7");
        let r = Record::new(id.clone(), tenant(), Entity::Contacts, now());
        mem.insert(r);
        let m = run(&mem, &[crm("7", None)], &[mapped(None)]).await;
        assert_eq!(m.candidate, vec![id.clone()]);
        assert!(m.existing.contains_key(id.as_str()));
    }

    #[tokio::test]
    async fn the_same_email_is_one_record_with_another_link_not_a_second_record() {
        let mem = Memory::default();
        let app = app_record(&mem, "Ada@Example.com");
        // Linked in another config (another CRM): links here are this config's only.
        let page = [crm("hs-1", None)];
        let m = run(&mem, &page, &[mapped(Some(" ada@example.COM "))]).await;
        assert_eq!(m.candidate, vec![app.clone()]);
        assert!(m.existing.contains_key(app.as_str()));
    }

    #[tokio::test]
    async fn a_key_already_linked_to_another_crm_record_here_is_not_taken() {
        let mem = Memory::default();
        let app = app_record(&mem, "ada@example.com");
        mem.links.lock().unwrap().insert(
            app.to_string(),
            Link {
                crm_id: Some("sf-OTHER".into()),
                ..Link::default()
            },
        );
        let m = run(
            &mem,
            &[crm("sf-2", None)],
            &[mapped(Some("ada@example.com"))],
        )
        .await;
        assert_eq!(m.candidate, vec![derive("sf-2")]);
        assert!(m.existing.is_empty());
        // …unless that CRM record is on the same page (it is this record's link).
        let page = [crm("sf-OTHER", None), crm("sf-2", None)];
        let values = [
            mapped(Some("ada@example.com")),
            mapped(Some("ada@example.com")),
        ];
        let m = run(&mem, &page, &values).await;
        assert_eq!(m.candidate, vec![app.clone(), app.clone()]);
    }

    #[tokio::test]
    async fn a_record_deleted_in_the_app_is_found_by_its_linked_crm_record_only() {
        let mem = Memory::default();
        let app = app_record(&mem, "ada@example.com");
        if let Some(r) = mem.records.lock().unwrap().get_mut(app.as_str()) {
            r.deleted_at = Some(now());
        }
        mem.links.lock().unwrap().insert(
            app.to_string(),
            Link {
                crm_id: Some("hs-1".into()),
                ..Link::default()
            },
        );
        // Its CRM record, without the marker (pushed without the marker field): the
        // deleted record, which the pull leaves deleted; another CRM record with the
        // same email is a stranger.
        let page = [crm("hs-1", None), crm("hs-2", None)];
        let values = [
            mapped(Some("ada@example.com")),
            mapped(Some("ada@example.com")),
        ];
        let m = run(&mem, &page, &values).await;
        assert_eq!(m.candidate, vec![app.clone(), derive("hs-2")]);
        assert!(m.existing[app.as_str()].deleted_at.is_some());
        // Unlinked, a deleted record matches nothing.
        mem.links.lock().unwrap().clear();
        let m = run(&mem, &page[..1], &values[..1]).await;
        assert_eq!(m.candidate, vec![derive("hs-1")]);
        assert!(m.existing.is_empty());
    }

    #[tokio::test]
    async fn no_key_no_match_and_strangers_get_derived_ids() {
        let mem = Memory::default();
        app_record(&mem, "ada@example.com");
        let page = [crm("1", None), crm("2", None)];
        let m = run(
            &mem,
            &page,
            &[mapped(None), mapped(Some("nobody@example.com"))],
        )
        .await;
        assert_eq!(m.candidate, vec![derive("1"), derive("2")]);
        assert!(m.existing.is_empty());
        // A marker that is not a record id is ignored.
        let mut odd = crm("3", None);
        odd.values.insert("conduit_id".into(), "garbage".into());
        let m = run(&mem, &[odd], &[mapped(None)]).await;
        assert_eq!(m.candidate, vec![derive("3")]);
    }
}
