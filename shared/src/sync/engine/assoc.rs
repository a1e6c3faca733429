//! Associations (a deal's company and contact): app records hold app ids, CRMs hold
//! their own ids; the config's links of the associated entity translate between them.
//!
//! - **Push**: each association value (an app id) becomes the CRM id of the record the
//!   config links it to. An app id without a live link (its company was not pushed, or
//!   failed) fails the deal for this run with a record error: nothing is written, so
//!   no wrong id reaches the CRM; the run's retry (`POST /v1/sync/logs/{id}/retry`)
//!   pushes it once the company is linked, and so does the deal's next change.
//! - **Pull**: each CRM id becomes the app id linked to it — through the id a pull
//!   derives for it, else the entity's links read once per chunk. A CRM record not yet
//!   linked is pulled first (read from the CRM and, if it passes the config's filters
//!   of its entity, written like a page of that entity), then looked up again. One that still has no app record (gone from the CRM, or its
//!   pull refused) fails the deal with a record error: the deal is not written, so the
//!   app keeps what it had rather than a wrong or lost association.
//! - **Conflict check** of a bidirectional push: CRM ids are translated where a link is
//!   known; an unknown one stays, reads as a CRM-side change and is left to the pull.
//!
//! Association mappings carry no transform (refused when a config is saved).

use std::collections::{BTreeMap, BTreeSet};

use super::store;
use crate::domain::{RecordId, now};
use crate::sync::crm::{CrmError, CrmRecord, passing};
use crate::sync::links::{Link, Links};
use crate::sync::mapping::Mapper;
use crate::sync::records::Record;
use crate::sync::runs::{Phase, RecordError};
use crate::sync::schema::Entity;

/// An entity's association mappings and the ids known on both sides.
#[derive(Debug, Default, Clone)]
pub(super) struct Assoc {
    /// (app field, CRM field, associated entity).
    fields: Vec<(String, String, Entity)>,
    /// Per associated entity: app id → CRM id.
    to_crm: BTreeMap<Entity, BTreeMap<String, String>>,
    /// Per associated entity: CRM id → app id.
    to_app: BTreeMap<Entity, BTreeMap<String, String>>,
    /// Entities whose every link was read (this chunk).
    read_all: BTreeSet<Entity>,
}

impl Assoc {
    /// The association mappings of `entity`'s mapper.
    pub fn of(entity: Entity, mapper: &Mapper) -> Self {
        Self {
            fields: mapper
                .pairs()
                .filter_map(|(app, crm)| {
                    entity
                        .association(app)
                        .map(|e| (app.to_owned(), crm.to_owned(), e))
                })
                .collect(),
            ..Self::default()
        }
    }

    /// Whether the entity maps no association.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Learns the live links of `entity` (record id → link).
    pub fn learn(&mut self, entity: Entity, links: &BTreeMap<String, Link>) {
        for (app_id, link) in links {
            let Some(crm_id) = link
                .crm_id
                .as_ref()
                .filter(|_| !link.crm_deleted && !link.app_deleted)
            else {
                continue;
            };
            self.to_crm
                .entry(entity)
                .or_default()
                .insert(app_id.clone(), crm_id.clone());
            self.to_app
                .entry(entity)
                .or_default()
                .insert(crm_id.clone(), app_id.clone());
        }
    }

    /// Notes that every link of `entity` was learnt (or forgets that, `false`).
    pub fn set_read_all(&mut self, entity: Entity, all: bool) {
        if all {
            self.read_all.insert(entity);
        } else {
            self.read_all.remove(&entity);
        }
    }

    /// Whether every link of `entity` was learnt.
    pub fn has_read_all(&self, entity: Entity) -> bool {
        self.read_all.contains(&entity)
    }

    /// The app ids app records hold in association fields, per entity (push).
    pub fn app_ids(&self, records: &[Record]) -> BTreeMap<Entity, BTreeSet<String>> {
        let mut out: BTreeMap<Entity, BTreeSet<String>> = BTreeMap::new();
        for r in records {
            for (app, _, e) in &self.fields {
                if let Some(id) = r.fields.get(app).filter(|v| !v.is_empty()) {
                    out.entry(*e).or_default().insert(id.clone());
                }
            }
        }
        out
    }

    /// The CRM ids CRM records hold in association fields that no known link
    /// translates, per entity (pull).
    pub fn unknown_crm_ids(&self, records: &[CrmRecord]) -> BTreeMap<Entity, BTreeSet<String>> {
        let mut out: BTreeMap<Entity, BTreeSet<String>> = BTreeMap::new();
        for r in records {
            for (_, crm, e) in &self.fields {
                if let Some(id) = r.values.get(crm).filter(|v| !v.is_empty())
                    && !self.to_app.get(e).is_some_and(|m| m.contains_key(id))
                {
                    out.entry(*e).or_default().insert(id.clone());
                }
            }
        }
        out
    }

    /// CRM values to write (by CRM field) with association app ids made CRM ids; the
    /// record error's message when one has no link.
    pub fn to_crm(&self, values: &mut BTreeMap<String, Option<String>>) -> Result<(), String> {
        for (app, crm, e) in &self.fields {
            let Some(Some(app_id)) = values.get(crm) else {
                continue;
            };
            match self.to_crm.get(e).and_then(|m| m.get(app_id)) {
                Some(crm_id) => {
                    values.insert(crm.clone(), Some(crm_id.clone()));
                }
                None => {
                    return Err(format!(
                        "not pushed: its {app} names app record {app_id}, which is not in the \
                         CRM under this config ({e} not linked yet); a retry pushes it once \
                         that record is linked"
                    ));
                }
            }
        }
        Ok(())
    }

    /// A CRM record's association CRM ids made app ids; the first field and CRM id no
    /// link translates, if any (the record is then left as read).
    pub fn to_app(&self, record: &mut CrmRecord) -> Result<(), (String, Entity, String)> {
        let mut out = record.values.clone();
        for (app, crm, e) in &self.fields {
            let Some(crm_id) = record.values.get(crm).filter(|v| !v.is_empty()) else {
                continue;
            };
            match self.to_app.get(e).and_then(|m| m.get(crm_id)) {
                Some(app_id) => {
                    out.insert(crm.clone(), app_id.clone());
                }
                None => return Err((app.clone(), *e, crm_id.clone())),
            }
        }
        record.values = out;
        Ok(())
    }

    /// CRM values with the association CRM ids a known link translates made app ids
    /// (the others left as they are).
    pub fn to_app_lenient(&self, values: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out = values.clone();
        for (_, crm, e) in &self.fields {
            if let Some(app_id) = values
                .get(crm)
                .and_then(|id| self.to_app.get(e).and_then(|m| m.get(id)))
            {
                out.insert(crm.clone(), app_id.clone());
            }
        }
        out
    }
}

impl super::Chunk<'_> {
    /// The links of `entity` in this config.
    fn links_of(&self, entity: Entity) -> Links {
        Links::new(
            self.links.table.clone(),
            &self.task.tenant,
            &self.config.id,
            entity,
        )
    }

    /// Before a push page: the links of the records its association fields name.
    pub(super) async fn associations_to_push(
        &mut self,
        records: &[Record],
    ) -> Result<(), CrmError> {
        if self.assoc.is_empty() {
            return Ok(());
        }
        for (entity, ids) in self.assoc.app_ids(records) {
            let ids: Vec<RecordId> = ids
                .iter()
                .filter_map(|id| RecordId::parse(id).ok())
                .collect();
            let links = self.links_of(entity).get_many(&ids).await.map_err(store)?;
            self.assoc.learn(entity, &links);
        }
        Ok(())
    }

    /// A pulled page with its association CRM ids made app ids (see the module): the
    /// records that cannot be are left out, each with a record error.
    pub(super) async fn associations_pulled(
        &mut self,
        mut records: Vec<CrmRecord>,
    ) -> Result<Vec<CrmRecord>, CrmError> {
        if self.assoc.is_empty() || records.is_empty() {
            return Ok(records);
        }
        for pass in 0..2 {
            let unknown = self.assoc.unknown_crm_ids(&records);
            if unknown.is_empty() {
                break;
            }
            for (entity, ids) in unknown {
                // The ids a pull of this config derives for them, then every link.
                let derived: Vec<RecordId> = ids
                    .iter()
                    .map(|crm_id| {
                        RecordId::derived(&[
                            self.task.tenant.as_str(),
                            self.config.id.as_str(),
                            entity.as_str(),
                            crm_id,
                        ])
                    })
                    .collect();
                let links = self
                    .links_of(entity)
                    .get_many(&derived)
                    .await
                    .map_err(store)?;
                self.assoc.learn(entity, &links);
                let left: Vec<String> = ids
                    .into_iter()
                    .filter(|id| {
                        self.assoc
                            .unknown_crm_ids(&[CrmRecord {
                                id: String::new(),
                                values: self.assoc_probe(entity, id),
                                modified_ms: 0,
                            }])
                            .contains_key(&entity)
                    })
                    .collect();
                if left.is_empty() {
                    continue;
                }
                if !self.assoc.has_read_all(entity) {
                    let all = self.links_of(entity).all().await.map_err(store)?;
                    self.assoc.learn(entity, &all);
                    self.assoc.set_read_all(entity, true);
                }
                if pass == 0 && self.config.entities.contains(&entity) {
                    // Not linked yet: pulled first, as a page of its own entity.
                    let mapper = Mapper::new(self.config.mappings_of(entity));
                    let fields = mapper.crm_fields();
                    let filters: Vec<_> = self.config.filters_of(entity).collect();
                    let found = passing(self.crm.read(entity, &left, &fields).await?, &filters);
                    if !found.is_empty() {
                        let (_, errors) =
                            self.snapshot_for(entity, mapper).pull_page(found).await?;
                        self.errors.extend(errors);
                        // Its new links are read again on the next pass.
                        self.assoc.set_read_all(entity, false);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(records.len());
        for mut r in records.drain(..) {
            match self.assoc.to_app(&mut r) {
                Ok(()) => out.push(r),
                Err((field, entity, crm_id)) => {
                    self.progress.add("failed", 1);
                    self.errors.push(RecordError {
                        phase: Phase::Pull,
                        record_id: None,
                        crm_id: Some(r.id.clone()),
                        message: format!(
                            "not pulled: its {field} is CRM record {crm_id}, which has no app \
                             record under this config ({entity}: {}); the deal is pulled with \
                             its next change, or by a retry once that record is synced",
                            if self.config.entities.contains(&entity) {
                                "not in the CRM, outside the config's filters, or refused"
                            } else {
                                "not synced by this config"
                            }
                        ),
                        at: now(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// A record holding `crm_id` in the association field of `entity` (to ask
    /// [`Assoc::unknown_crm_ids`] about one id).
    fn assoc_probe(&self, entity: Entity, crm_id: &str) -> BTreeMap<String, String> {
        self.assoc
            .fields
            .iter()
            .filter(|(_, _, e)| *e == entity)
            .map(|(_, crm, _)| (crm.clone(), crm_id.to_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MappingId;
    use crate::sync::config::FieldMapping;
    use crate::sync::conflict::Direction;

    fn mapper() -> Mapper {
        let m = |crm: &str, app: &str| FieldMapping {
            id: MappingId::generate(),
            entity: Entity::Deals,
            crm_field: crm.into(),
            app_field: app.into(),
            direction: Direction::Bidirectional,
            transform: None,
            push_transform: None,
        };
        Mapper::new(&[
            m("dealname", "name"),
            m("AccountId", "company_id"),
            m("ContactId", "contact_id"),
        ])
    }

    fn link(crm: &str) -> Link {
        Link {
            crm_id: Some(crm.into()),
            ..Link::default()
        }
    }

    #[test]
    fn ids_cross_through_links_and_unknown_ones_are_refused_not_guessed() {
        let mut a = Assoc::of(Entity::Deals, &mapper());
        assert!(!a.is_empty());
        a.learn(
            Entity::Companies,
            &BTreeMap::from([("app-co".to_owned(), link("001A"))]),
        );
        let mut gone = link("001B");
        gone.crm_deleted = true;
        a.learn(
            Entity::Contacts,
            &BTreeMap::from([("app-gone".to_owned(), gone)]),
        );
        let mut push = BTreeMap::from([
            ("dealname".to_owned(), Some("Big".to_owned())),
            ("AccountId".to_owned(), Some("app-co".to_owned())),
            ("ContactId".to_owned(), None),
        ]);
        a.to_crm(&mut push).unwrap();
        assert_eq!(push["AccountId"].as_deref(), Some("001A"));
        assert_eq!(
            push["ContactId"], None,
            "a cleared association stays cleared"
        );
        let mut bad = BTreeMap::from([("ContactId".to_owned(), Some("app-gone".to_owned()))]);
        let e = a.to_crm(&mut bad).unwrap_err();
        assert!(e.contains("contact_id") && e.contains("app-gone"), "{e}");
        assert_eq!(bad["ContactId"].as_deref(), Some("app-gone"));

        let mut rec = CrmRecord {
            id: "006".into(),
            values: BTreeMap::from([("AccountId".to_owned(), "001A".to_owned())]),
            modified_ms: 1,
        };
        a.to_app(&mut rec).unwrap();
        assert_eq!(rec.values["AccountId"], "app-co");
        let mut other = CrmRecord {
            id: "007".into(),
            values: BTreeMap::from([
                ("AccountId".to_owned(), "001A".to_owned()),
                ("ContactId".to_owned(), "003X".to_owned()),
            ]),
            modified_ms: 1,
        };
        assert_eq!(
            a.unknown_crm_ids(std::slice::from_ref(&other)),
            BTreeMap::from([(Entity::Contacts, BTreeSet::from(["003X".to_owned()]))])
        );
        let err = a.to_app(&mut other).unwrap_err();
        assert_eq!(err, ("contact_id".into(), Entity::Contacts, "003X".into()));
        assert_eq!(other.values["AccountId"], "001A", "left as read");
        let lenient = a.to_app_lenient(&other.values);
        assert_eq!(lenient["AccountId"], "app-co");
        assert_eq!(lenient["ContactId"], "003X");
    }
}
