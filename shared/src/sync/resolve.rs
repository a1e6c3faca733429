//! Settling a stored conflict: a person picks, per field, the app's value, the CRM's
//! value or a new one (or "always use app / CRM", which also makes that the config's
//! strategy), or sets the conflict aside.
//!
//! Resolving writes the chosen values to the app record and moves the link's base for
//! those fields to the CRM's value as the conflict saw it: the CRM side then reads as
//! unchanged and the app side as changed wherever the choice differs from the CRM, so
//! the push that follows carries exactly the choices to the CRM (and a CRM edit made
//! since is a new conflict, not overwritten). The config is held like a run while this
//! happens, so no worker writes the same link meanwhile.
//!
//! Ignoring keeps the fields out of both directions for that record (both sides keep
//! their values) and the conflict out of the review queue; it can still be resolved.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::config::{Configs, SyncConfig, SyncDirection};
use super::conflict::Strategy;
use super::engine::{self, RunRequest, StartError};
use super::links::Links;
use super::purge::{self, PurgeError};
use super::records::{Records, Source, WriteError};
use super::runs::{Phase, Runs, StoredConflict};
use crate::app::App;
use crate::domain::{ConflictId, JobId, TenantId, now};
use crate::queue::Publisher;
use crate::store::StoreError;

/// The value a field gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The app's value at detection.
    App,
    /// The CRM's value at detection.
    Crm,
    /// Another value (None clears the field), already checked against the field's type.
    Value(Option<String>),
}

/// Which side always wins from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Always {
    /// The app.
    App,
    /// The CRM.
    Crm,
}

/// What a person decided.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// Per field (app field names).
    pub fields: BTreeMap<String, Choice>,
    /// Every field not in `fields` takes this side, and the config's strategy becomes
    /// it.
    pub always: Option<Always>,
}

/// What happened to the CRM side after a resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// The CRM already holds every chosen value.
    NotNeeded,
    /// The config does not push: the CRM keeps its values.
    NotPushed,
    /// A push of this record was started.
    Started(JobId),
    /// A run is in progress; it (or the next run) pushes the record.
    NextRun,
}

/// A settled conflict.
#[derive(Debug, Clone)]
pub struct Settled {
    /// The conflict as stored now.
    pub conflict: StoredConflict,
    /// How the chosen values reach the CRM.
    pub push: Push,
    /// The config's strategy, when "always" changed it.
    pub strategy: Option<Strategy>,
}

/// Why a conflict could not be settled (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No such conflict for this tenant.
    #[error("no such conflict")]
    NotFound,
    /// It was resolved already.
    #[error("the conflict was already resolved")]
    AlreadyResolved,
    /// A run of its config is in progress.
    #[error("a run of this config is in progress ({0}); resolve when it finishes")]
    Busy(JobId),
    /// The choices do not cover the conflict's fields, or name others.
    #[error("{0}")]
    Invalid(String),
    /// The record or the config is gone.
    #[error("{0}")]
    Gone(&'static str),
    /// The chosen key (email, domain) belongs to another record.
    #[error("another record already has this email / domain")]
    DuplicateKey,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often a write is tried again after a concurrent change.
const ATTEMPTS: usize = 4;

/// Resolves conflict `id` of `tenant` as `resolution` says.
pub async fn resolve(
    app: &App,
    queue: &Publisher,
    tenant: &TenantId,
    id: &ConflictId,
    resolution: &Resolution,
) -> Result<Settled, ResolveError> {
    let runs = Runs::new(app.table.clone());
    let mut conflict = runs
        .conflict(tenant, id)
        .await?
        .ok_or(ResolveError::NotFound)?;
    if conflict.status == "resolved" {
        return Err(ResolveError::AlreadyResolved);
    }
    let finals = final_values(&conflict, resolution)?;
    let configs = Configs::new(app.table.clone());
    let config = configs
        .get(tenant, &conflict.config_id)
        .await?
        .ok_or(ResolveError::Gone("the sync config was deleted"))?;

    // Hold the config like a run: no worker touches this link meanwhile.
    let hold = JobId::generate();
    if runs
        .start_job(tenant, &config.id, &hold, 1)
        .await?
        .is_none()
    {
        let holder = runs
            .active_job(tenant, &config.id)
            .await?
            .unwrap_or_else(|| hold.clone());
        return Err(ResolveError::Busy(holder));
    }
    let outcome = apply(app, &config, &conflict, &finals, resolution.always).await;
    // Write, then check: a config deleted meanwhile gets its purge again, after the
    // link written here (see `purge`).
    let exists = purge::recheck(app, queue, tenant, &config.id, &[conflict.entity]).await;
    if let Err(e) = runs.log_closed(tenant, &config.id, &hold).await {
        tracing::error!(error = %e, "releasing the config after a resolution failed");
    }
    let strategy = outcome?;
    match exists {
        Ok(true) => {}
        Ok(false) => return Err(ResolveError::Gone("the sync config was deleted")),
        Err(PurgeError::Store(e)) => return Err(e.into()),
        Err(e @ PurgeError::Queue(_)) => {
            // Only a deleted config's purge is enqueued; an HTTP retry would not redo it.
            tracing::error!(config = %config.id, error = %e, "could not enqueue the purge of a config deleted during a resolution");
            return Err(ResolveError::Gone("the sync config was deleted"));
        }
    }

    conflict.status = "resolved".into();
    conflict.settled_at = Some(now());
    conflict.resolution = finals
        .iter()
        .map(|(f, (how, _))| (f.clone(), (*how).to_owned()))
        .collect();
    match runs.update_conflict(tenant, &conflict).await {
        Ok(()) => {}
        Err(StoreError::ConditionFailed) => {
            return Err(ResolveError::Gone("the sync config was deleted"));
        }
        Err(e) => return Err(e.into()),
    }

    let differs = finals.iter().any(|(f, (_, v))| {
        conflict
            .fields
            .iter()
            .find(|c| &c.field == f)
            .is_some_and(|c| &c.crm != v)
    });
    let push = if !differs {
        Push::NotNeeded
    } else if !config.direction.pushes() {
        Push::NotPushed
    } else {
        let request = RunRequest {
            direction: Some(SyncDirection::Push),
            entities: Some(vec![conflict.entity]),
            trigger: "resolve".into(),
            only: vec![(Phase::Push, vec![conflict.record_id.to_string()])],
            gone: Vec::new(),
        };
        match engine::start(app, queue, &config, request).await {
            Ok(started) => Push::Started(started.job_id),
            Err(StartError::Busy(_) | StartError::Paused) => Push::NextRun,
            Err(e) => {
                tracing::error!(error = ?e, "starting the push of a resolution failed");
                Push::NextRun
            }
        }
    };
    Ok(Settled {
        conflict,
        push,
        strategy,
    })
}

/// Sets conflict `id` aside: out of the review queue, its fields left as they are on
/// both sides (and not synced for that record) until it is resolved.
pub async fn ignore(
    app: &App,
    tenant: &TenantId,
    id: &ConflictId,
) -> Result<StoredConflict, ResolveError> {
    let runs = Runs::new(app.table.clone());
    let mut conflict = runs
        .conflict(tenant, id)
        .await?
        .ok_or(ResolveError::NotFound)?;
    if conflict.status == "resolved" {
        return Err(ResolveError::AlreadyResolved);
    }
    if conflict.status != "ignored" {
        conflict.status = "ignored".into();
        conflict.settled_at = Some(now());
        // Only while it exists: a deleted config's purge may have removed it.
        match runs.update_conflict(tenant, &conflict).await {
            Ok(()) => {}
            Err(StoreError::ConditionFailed) => return Err(ResolveError::NotFound),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(conflict)
}

/// Per field of the conflict: how it was settled (`app`, `crm`, `custom`) and its value.
type Finals = BTreeMap<String, (&'static str, Option<String>)>;

fn final_values(c: &StoredConflict, r: &Resolution) -> Result<Finals, ResolveError> {
    if let Some(stray) = r
        .fields
        .keys()
        .find(|f| !c.fields.iter().any(|cf| &cf.field == *f))
    {
        let fields: Vec<&str> = c.fields.iter().map(|f| f.field.as_str()).collect();
        return Err(ResolveError::Invalid(format!(
            "{stray:?} is not in conflict; the conflict's fields are: {}",
            fields.join(", ")
        )));
    }
    let mut out = Finals::new();
    let mut missing = Vec::new();
    for f in &c.fields {
        let choice = match (r.fields.get(&f.field), r.always) {
            (Some(choice), _) => choice.clone(),
            (None, Some(Always::App)) => Choice::App,
            (None, Some(Always::Crm)) => Choice::Crm,
            (None, None) => {
                missing.push(f.field.as_str());
                continue;
            }
        };
        let value = match choice {
            Choice::App => ("app", f.app.clone()),
            Choice::Crm => ("crm", f.crm.clone()),
            Choice::Value(v) => ("custom", v),
        };
        out.insert(f.field.clone(), value);
    }
    if !missing.is_empty() {
        return Err(ResolveError::Invalid(format!(
            "choose app, crm or a value for every field in conflict (missing: {}), or \
             give \"always\"",
            missing.join(", ")
        )));
    }
    Ok(out)
}

/// Writes the chosen values to the record, the CRM's values to the link's base, and the
/// rule to the config; the config's new strategy if it changed.
async fn apply(
    app: &App,
    config: &SyncConfig,
    c: &StoredConflict,
    finals: &Finals,
    always: Option<Always>,
) -> Result<Option<Strategy>, ResolveError> {
    let tenant = &config.tenant;
    let records = Records::new(app.table.clone());
    let mut saved = false;
    for _ in 0..ATTEMPTS {
        let mut r = records
            .get(tenant, c.entity, &c.record_id)
            .await?
            .filter(|r| r.deleted_at.is_none())
            .ok_or(ResolveError::Gone("the record was deleted"))?;
        let at = now();
        let old_key = r.key();
        let mut changed = false;
        for (field, (how, value)) in finals {
            let source = source(config, how, at);
            changed |= r.set(field, value.as_deref(), &source);
        }
        if !changed {
            saved = true;
            break;
        }
        r.version += 1;
        r.rev += 1;
        r.updated_at = at;
        match records
            .save_unique(&r, old_key.as_deref(), Vec::new())
            .await
        {
            Ok(()) => {
                saved = true;
                break;
            }
            Err(WriteError::DuplicateKey(_)) => return Err(ResolveError::DuplicateKey),
            Err(WriteError::Stale) => continue,
            Err(WriteError::Store(e)) => return Err(e.into()),
        }
    }
    if !saved {
        return Err(ResolveError::Store(StoreError::ConditionFailed));
    }

    let links = Links::new(app.table.clone(), tenant, &config.id, c.entity);
    let mut found = links.get_many(std::slice::from_ref(&c.record_id)).await?;
    if let Some(mut link) = found.remove(c.record_id.as_str()) {
        for f in &c.fields {
            if finals.contains_key(&f.field) {
                link.base.insert(f.field.clone(), f.crm.clone());
                link.conflicted.remove(&f.field);
            }
        }
        links.put_many(&[(c.record_id.clone(), link)]).await?;
    }

    let Some(side) = always else {
        return Ok(None);
    };
    let strategy = match side {
        Always::App => Strategy::AppWins,
        Always::Crm => Strategy::CrmWins,
    };
    let configs = Configs::new(app.table.clone());
    for _ in 0..ATTEMPTS {
        let Some(mut current) = configs.get(tenant, &config.id).await? else {
            return Err(ResolveError::Gone("the sync config was deleted"));
        };
        if current.conflict_strategy == strategy {
            return Ok(Some(strategy));
        }
        current.conflict_strategy = strategy;
        current.version += 1;
        current.updated_at = now();
        match configs.replace(&current).await {
            Ok(()) => return Ok(Some(strategy)),
            Err(StoreError::ConditionFailed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ResolveError::Store(StoreError::ConditionFailed))
}

fn source(config: &SyncConfig, how: &str, at: OffsetDateTime) -> Source {
    Source {
        origin: if how == "crm" {
            config.provider.clone()
        } else {
            "app".into()
        },
        config_id: (how == "crm").then(|| config.id.to_string()),
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RecordId, SyncConfigId};
    use crate::sync::conflict::FieldConflict;
    use crate::sync::schema::Entity;

    fn conflict() -> StoredConflict {
        StoredConflict {
            id: ConflictId::generate(),
            config_id: SyncConfigId::generate(),
            provider: "hubspot".into(),
            entity: Entity::Contacts,
            record_id: RecordId::generate(),
            crm_id: "101".into(),
            fields: ["phone", "last_name"]
                .iter()
                .map(|f| FieldConflict {
                    field: (*f).into(),
                    base: Some("base".into()),
                    app: Some(format!("app-{f}")),
                    crm: Some(format!("crm-{f}")),
                })
                .collect(),
            status: "open".into(),
            detected_at: now(),
            settled_at: None,
            resolution: BTreeMap::new(),
        }
    }

    #[test]
    fn every_field_needs_a_choice_and_only_those() {
        let c = conflict();
        let mut r = Resolution::default();
        r.fields.insert("phone".into(), Choice::App);
        let err = final_values(&c, &r).unwrap_err().to_string();
        assert!(err.contains("missing: last_name"), "{err}");

        r.fields.insert("email".into(), Choice::Crm);
        let err = final_values(&c, &r).unwrap_err().to_string();
        assert!(err.contains("\"email\" is not in conflict"), "{err}");

        r.fields.remove("email");
        r.fields
            .insert("last_name".into(), Choice::Value(Some("Lovelace".into())));
        let f = final_values(&c, &r).unwrap();
        assert_eq!(f["phone"], ("app", Some("app-phone".into())));
        assert_eq!(f["last_name"], ("custom", Some("Lovelace".into())));
    }

    #[test]
    fn always_fills_the_fields_not_chosen() {
        let c = conflict();
        let mut r = Resolution {
            always: Some(Always::Crm),
            ..Default::default()
        };
        r.fields.insert("phone".into(), Choice::App);
        let f = final_values(&c, &r).unwrap();
        assert_eq!(f["phone"], ("app", Some("app-phone".into())));
        assert_eq!(f["last_name"], ("crm", Some("crm-last_name".into())));
    }
}
