//! HubSpot CRM v3: contacts, companies and deals.
//!
//! - **Pull**: a full pass without filters walks `GET /crm/v3/objects/{object}` (100 a
//!   page, `after`, no depth cap; one single-record search first counts them); anything
//!   else searches on the modification time (200 a page, `GTE`, ascending), re-anchored
//!   on the latest time seen before the search's 10,000-result cap.
//! - **Find**: search with one `IN` filter of up to 100 values.
//! - **Write**: `batch/create` / `batch/update` (100 inputs); HubSpot fails a whole batch
//!   for one bad input, so a 400/409 batch is halved until the bad one is found; a
//!   unique-value conflict names the existing record ("Existing ID: 123").
//! - **Marker**: the unique-value property `conduit_id`, defined once per portal (needs
//!   `crm.schemas.{object}.write`; without it creates de-duplicate by email / domain).
//! - **Deletes**: `batch/archive`; deletions are read from the archived list
//!   (`archivedAt`).
//! - **Errors**: `{"status":"error","message","category"}`; 403 `MISSING_SCOPES` names
//!   the scopes in `errors[].context`; a 429 whose policy is `DAILY` is exhaustion; 207
//!   is a batch answer with some failures.
//! - **Deal associations**: the pseudo-fields `associations.companies` and
//!   `associations.contacts` (described with the deal's properties, type id) hold the
//!   CRM id of the deal's company (its primary one, else the lowest id) and contact
//!   (the lowest id). They are read with the associations v4 `batch/read` after each
//!   page, written with the create (`associations` of the input: type 5 "Primary" to
//!   the company, 3 to the contact) or, on update, with v4 `batch/archive` of the old
//!   ones and `batch/create` of the new one.

use std::collections::BTreeMap;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::transport::{RateLimited, Wire};
use super::{
    CrmClient, CrmError, CrmRecord, Cursor, Dialect, PullPage, WriteOutcome, WriteValues, clip,
    parse_time_ms, scalar_text,
};
use crate::sync::config::{Filter, FilterOp};
use crate::sync::schema::{CrmField, Entity, FieldType};

/// HubSpot's search paging cap (results beyond it are a 400).
const SEARCH_CAP: u64 = 10_000;
/// Records per list page.
const LIST_PAGE: usize = 100;
/// Records per search page.
const SEARCH_PAGE: u64 = 200;

/// The HubSpot dialect.
#[derive(Debug)]
pub struct HubSpot;

impl Wire for HubSpot {
    fn provider(&self) -> &'static str {
        "hubspot"
    }

    fn rate_limited(&self, body: &str) -> RateLimited {
        if body.contains("DAILY") {
            RateLimited::Exhausted
        } else {
            RateLimited::Wait
        }
    }

    fn refusal(&self, status: StatusCode, body: Option<&Value>, _text: &str) -> Option<CrmError> {
        missing_scopes(status, body?).map(CrmError::ScopesMissing)
    }

    fn error_message(&self, v: &Value) -> String {
        let category = v.get("category").and_then(Value::as_str).unwrap_or("");
        let message = v.get("message").and_then(Value::as_str).unwrap_or("");
        let text = match v {
            Value::Object(_) if category.is_empty() => message.to_owned(),
            Value::Object(_) => format!("{category}: {message}"),
            other => other.to_string(),
        };
        clip(&text)
    }

    fn answers(&self, status: StatusCode, _body: Option<&Value>) -> bool {
        status == StatusCode::MULTI_STATUS
    }
}

#[async_trait]
impl Dialect for HubSpot {
    async fn describe(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
    ) -> Result<Vec<CrmField>, CrmError> {
        let object = c.kind().object(entity);
        let v = c
            .call(
                Method::GET,
                &format!("/crm/v3/properties/{object}"),
                &[],
                None,
            )
            .await?;
        let mut out = fields(&v)?;
        if entity == Entity::Deals {
            for (name, label) in [
                (ASSOC_COMPANIES, "Associated company"),
                (ASSOC_CONTACTS, "Associated contact"),
            ] {
                out.push(CrmField {
                    name: name.into(),
                    label: label.into(),
                    kind: FieldType::Id,
                    provider_type: "association".into(),
                    required: false,
                    writable: true,
                    options: Vec::new(),
                });
            }
        }
        Ok(out)
    }

    async fn ensure_marker(&self, c: &mut CrmClient<'_>, entity: Entity) -> Result<bool, CrmError> {
        // Defining the property answers whether it exists (201, or 409 when it does):
        // one request where a describe and then a create were two. A grant that
        // cannot define it is asked whether someone else did.
        match define_marker(c, entity).await? {
            Some(defined) => Ok(defined),
            None => c.describes_marker(entity).await,
        }
    }

    async fn pull(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        cursor: &Cursor,
        fields: &[String],
        filters: &[&Filter],
    ) -> Result<PullPage, CrmError> {
        let (fields, assoc) = split_associations(fields);
        let mut page = if cursor.since_ms.is_none() && filters.is_empty() {
            list_page(c, entity, cursor, &fields).await?
        } else {
            search_page(c, entity, cursor, &fields, filters).await?
        };
        read_associations(c, &mut page.records, &assoc).await?;
        Ok(page)
    }

    async fn read(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        ids: &[String],
        fields: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let object = c.kind().object(entity);
        let (fields, assoc) = split_associations(fields);
        let body = json!({
            "properties": c.with_system_fields(entity, &fields),
            "inputs": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
        });
        let v = c
            .call(
                Method::POST,
                &format!("/crm/v3/objects/{object}/batch/read"),
                &[("archived", "false".to_owned())],
                Some(&body),
            )
            .await?;
        let mut out = records(&v, c.kind().modified_field(entity))?;
        read_associations(c, &mut out, &assoc).await?;
        Ok(out)
    }

    async fn find_by(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        field: &str,
        values: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let object = c.kind().object(entity);
        let body = json!({
            "filterGroups": [{"filters": [{
                "propertyName": field, "operator": "IN", "values": values
            }]}],
            "properties": [field],
            "limit": SEARCH_PAGE,
        });
        let v = c
            .call(
                Method::POST,
                &format!("/crm/v3/objects/{object}/search"),
                &[],
                Some(&body),
            )
            .await?;
        records(&v, c.kind().modified_field(entity))
    }

    async fn write(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        inputs: &[WriteValues],
        ids: Option<&[String]>,
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        if entity != Entity::Deals {
            return write(c, entity, inputs, ids, &[]).await;
        }
        // Associations leave the properties: a create carries them, an update sets
        // them through the v4 API once the properties are written.
        let mut plain = Vec::with_capacity(inputs.len());
        let mut wanted: Vec<Vec<(&'static str, Option<String>)>> = Vec::new();
        for values in inputs {
            let mut props = values.clone();
            let mut assoc = Vec::new();
            for (field, to) in ASSOCIATIONS {
                if let Some(v) = props.remove(field) {
                    assoc.push((to, v));
                }
            }
            plain.push(props);
            wanted.push(assoc);
        }
        match ids {
            None => {
                let with: Vec<Vec<Value>> = wanted
                    .iter()
                    .map(|assoc| {
                        assoc
                            .iter()
                            .filter_map(|(to, id)| {
                                let id = id.as_deref()?;
                                Some(json!({
                                    "to": {"id": id},
                                    "types": [{
                                        "associationCategory": "HUBSPOT_DEFINED",
                                        "associationTypeId": type_to(to),
                                    }],
                                }))
                            })
                            .collect()
                    })
                    .collect();
                write(c, entity, &plain, None, &with).await
            }
            Some(ids) => {
                let mut out = write(c, entity, &plain, Some(ids), &[]).await?;
                write_associations(c, &mut out, &wanted).await?;
                Ok(out)
            }
        }
    }

    async fn delete(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        ids: &[String],
    ) -> Result<(), CrmError> {
        let object = c.kind().object(entity);
        let body = json!({
            "inputs": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()
        });
        c.call(
            Method::POST,
            &format!("/crm/v3/objects/{object}/batch/archive"),
            &[],
            Some(&body),
        )
        .await?;
        Ok(())
    }

    async fn deleted_since(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        since_ms: i64,
    ) -> Result<Vec<(String, i64)>, CrmError> {
        let object = c.kind().object(entity);
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![
                ("limit", LIST_PAGE.to_string()),
                ("archived", "true".to_owned()),
                ("properties", c.kind().marker().to_owned()),
            ];
            if let Some(a) = &after {
                query.push(("after", a.clone()));
            }
            let v = c
                .call(
                    Method::GET,
                    &format!("/crm/v3/objects/{object}"),
                    &query,
                    None,
                )
                .await?;
            let results = v
                .get("results")
                .and_then(Value::as_array)
                .ok_or_else(|| CrmError::Malformed("list answer without results".into()))?;
            for r in results {
                let id = r.get("id").and_then(Value::as_str);
                let at = r
                    .get("archivedAt")
                    .and_then(Value::as_str)
                    .and_then(parse_time_ms);
                if let (Some(id), Some(at)) = (id, at)
                    && at >= since_ms
                {
                    out.push((id.to_owned(), at));
                }
            }
            after = v
                .pointer("/paging/next/after")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if after.is_none() {
                return Ok(out);
            }
        }
    }
}

/// Defines the `conduit_id` property: Some(true) when it now exists (made or already
/// there), None when this grant may not define properties (an OAuth grant without the
/// object's schema write scope, or an API key refused for it).
async fn define_marker(c: &mut CrmClient<'_>, entity: Entity) -> Result<Option<bool>, CrmError> {
    let object = c.kind().object(entity);
    let schema_write = format!("crm.schemas.{object}.write");
    let creds = c.credentials().await?;
    // An OAuth grant says its scopes; an API key's are unknown: try.
    let lacks =
        creds.connection.token.is_some() && !creds.connection.scopes.contains(&schema_write);
    c.keep_credentials(creds);
    if lacks {
        return Ok(None);
    }
    let group = match entity {
        Entity::Contacts => "contactinformation",
        Entity::Companies => "companyinformation",
        Entity::Deals => "dealinformation",
    };
    let body = json!({
        "name": c.kind().marker(),
        "label": "Conduit ID",
        "type": "string",
        "fieldType": "text",
        "groupName": group,
        "hasUniqueValue": true,
        "description": "The Conduit record this record is synced with.",
    });
    match c
        .call(
            Method::POST,
            &format!("/crm/v3/properties/{object}"),
            &[],
            Some(&body),
        )
        .await
    {
        Ok(_) | Err(CrmError::Rejected { status: 409, .. }) => {
            // A description cached before the property existed lacks it.
            c.forget_description(entity);
            Ok(Some(true))
        }
        Err(CrmError::ScopesMissing(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A page of the list endpoint (a full pass without filters).
async fn list_page(
    c: &mut CrmClient<'_>,
    entity: Entity,
    cursor: &Cursor,
    fields: &[String],
) -> Result<PullPage, CrmError> {
    let object = c.kind().object(entity);
    // The list endpoint tells no total: at the start of the pass, one search of a
    // single record counts them (the run's "of estimated total").
    let total = if cursor.page.is_none() {
        let count = json!({"limit": 1, "properties": ["hs_object_id"]});
        let v = c
            .call(
                Method::POST,
                &format!("/crm/v3/objects/{object}/search"),
                &[],
                Some(&count),
            )
            .await?;
        v.get("total").and_then(Value::as_u64)
    } else {
        None
    };
    let mut query = vec![
        ("limit", LIST_PAGE.to_string()),
        ("properties", c.with_system_fields(entity, fields).join(",")),
        ("archived", "false".to_owned()),
    ];
    if let Some(after) = &cursor.page {
        query.push(("after", after.clone()));
    }
    let v = c
        .call(
            Method::GET,
            &format!("/crm/v3/objects/{object}"),
            &query,
            None,
        )
        .await?;
    let records = records(&v, c.kind().modified_field(entity))?;
    let after = v.pointer("/paging/next/after").and_then(|a| {
        a.as_str()
            .map(str::to_owned)
            .or_else(|| a.as_u64().map(|n| n.to_string()))
    });
    let next = cursor.after(&records, after);
    Ok(PullPage::new(records, next, total))
}

/// A page of the search on the modification time (incremental passes, filters).
async fn search_page(
    c: &mut CrmClient<'_>,
    entity: Entity,
    cursor: &Cursor,
    fields: &[String],
    filters: &[&Filter],
) -> Result<PullPage, CrmError> {
    let object = c.kind().object(entity);
    let modified = c.kind().modified_field(entity);
    let since = cursor.since_ms.unwrap_or(0);
    let offset: u64 = cursor
        .page
        .as_deref()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mut group = vec![json!({
        "propertyName": modified, "operator": "GTE", "value": since.to_string()
    })];
    for f in filters {
        group.push(filter(f));
    }
    let body = json!({
        "filterGroups": [{"filters": group}],
        "sorts": [{"propertyName": modified, "direction": "ASCENDING"}],
        "properties": c.with_system_fields(entity, fields),
        "limit": SEARCH_PAGE,
        "after": offset.to_string(),
    });
    let v = c
        .call(
            Method::POST,
            &format!("/crm/v3/objects/{object}/search"),
            &[],
            Some(&body),
        )
        .await?;
    let records = records(&v, modified)?;
    // The total of the pass's first search (a re-anchored one counts only what is
    // left).
    let total = if cursor.page.is_none() {
        v.get("total").and_then(Value::as_u64)
    } else {
        None
    };
    let mut next = cursor.after(&records, None);
    let after: Option<u64> = v.pointer("/paging/next/after").and_then(|a| {
        a.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| a.as_u64())
    });
    next.page = match after {
        // Re-anchor before the cap: start a new search from the latest time seen
        // (GTE: records sharing that millisecond are seen again, harmlessly).
        Some(a) if a + SEARCH_PAGE > SEARCH_CAP => {
            if next.high_water_ms <= since {
                return Err(CrmError::refused(
                    "more than 10,000 records share one modification time",
                ));
            }
            next.since_ms = Some(next.high_water_ms);
            Some("0".to_owned())
        }
        Some(a) => Some(a.to_string()),
        None => None,
    };
    Ok(PullPage::new(records, next, total))
}

/// The deal pseudo-fields holding associations, and the object each points at.
const ASSOCIATIONS: [(&str, &str); 2] =
    [(ASSOC_COMPANIES, "companies"), (ASSOC_CONTACTS, "contacts")];
/// The deal's company (CRM id).
pub const ASSOC_COMPANIES: &str = "associations.companies";
/// The deal's contact (CRM id).
pub const ASSOC_CONTACTS: &str = "associations.contacts";
/// Most inputs of one associations v4 request.
const ASSOC_BATCH: usize = 1_000;

/// The association type a deal's link to `to` is written with: the primary company
/// (5), a contact (3).
fn type_to(to: &str) -> u64 {
    if to == "companies" { 5 } else { 3 }
}

/// Properties to read, and the association pseudo-fields asked for (their objects).
fn split_associations(fields: &[String]) -> (Vec<String>, Vec<(&'static str, &'static str)>) {
    let assoc = ASSOCIATIONS
        .iter()
        .filter(|(f, _)| fields.iter().any(|x| x == f))
        .copied()
        .collect();
    let plain = fields
        .iter()
        .filter(|f| !ASSOCIATIONS.iter().any(|(a, _)| a == f))
        .cloned()
        .collect();
    (plain, assoc)
}

/// The current associations of `deals` to `to`: deal → [(CRM id, primary)].
async fn current_associations(
    c: &mut CrmClient<'_>,
    deals: &[String],
    to: &str,
) -> Result<BTreeMap<String, Vec<(String, bool)>>, CrmError> {
    let mut out: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for chunk in deals.chunks(ASSOC_BATCH) {
        let body = json!({"inputs": chunk.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()});
        let v = c
            .call(
                Method::POST,
                &format!("/crm/v4/associations/deals/{to}/batch/read"),
                &[],
                Some(&body),
            )
            .await?;
        for r in v
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| CrmError::Malformed("associations answer without results".into()))?
        {
            let Some(from) = r.pointer("/from/id").and_then(scalar_text) else {
                continue;
            };
            for t in r.get("to").and_then(Value::as_array).into_iter().flatten() {
                let Some(id) = t.get("toObjectId").and_then(scalar_text) else {
                    continue;
                };
                let primary = t
                    .get("associationTypes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|a| a.get("typeId").and_then(Value::as_u64) == Some(5));
                out.entry(from.clone()).or_default().push((id, primary));
            }
        }
    }
    Ok(out)
}

/// Adds the asked-for association pseudo-fields to deal records.
async fn read_associations(
    c: &mut CrmClient<'_>,
    records: &mut [CrmRecord],
    assoc: &[(&'static str, &'static str)],
) -> Result<(), CrmError> {
    if records.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    for (field, to) in assoc {
        let current = current_associations(c, &ids, to).await?;
        for r in records.iter_mut() {
            if let Some(id) = current.get(&r.id).and_then(|list| chosen(list)) {
                r.values.insert((*field).to_owned(), id);
            }
        }
    }
    Ok(())
}

/// The one association a deal's field shows: the primary one, else the lowest id.
fn chosen(list: &[(String, bool)]) -> Option<String> {
    let by_number = |id: &String| (id.len(), id.clone());
    list.iter()
        .filter(|(_, p)| *p)
        .map(|(id, _)| id)
        .min_by_key(|id| by_number(id))
        .or_else(|| list.iter().map(|(id, _)| id).min_by_key(|id| by_number(id)))
        .cloned()
}

/// Sets updated deals' associations: those no longer wanted archived, the wanted one
/// created. A deal whose association was refused fails with the CRM's message.
async fn write_associations(
    c: &mut CrmClient<'_>,
    outcomes: &mut [WriteOutcome],
    wanted: &[Vec<(&'static str, Option<String>)>],
) -> Result<(), CrmError> {
    for to in ["companies", "contacts"] {
        // (outcome index, deal id, wanted CRM id)
        let mut deals: Vec<(usize, String, Option<String>)> = Vec::new();
        for (i, (outcome, assoc)) in outcomes.iter().zip(wanted).enumerate() {
            let WriteOutcome::Done(id) = outcome else {
                continue;
            };
            if let Some((_, want)) = assoc.iter().find(|(t, _)| *t == to) {
                deals.push((i, id.clone(), want.clone()));
            }
        }
        if deals.is_empty() {
            continue;
        }
        let ids: Vec<String> = deals.iter().map(|(_, id, _)| id.clone()).collect();
        let current = current_associations(c, &ids, to).await?;
        let mut archive = Vec::new();
        let mut create = Vec::new();
        for (i, deal, want) in &deals {
            let have: Vec<&String> = current
                .get(deal)
                .into_iter()
                .flatten()
                .map(|(id, _)| id)
                .collect();
            let stale: Vec<Value> = have
                .iter()
                .filter(|id| Some(id.as_str()) != want.as_deref())
                .map(|id| json!({"id": id}))
                .collect();
            if !stale.is_empty() {
                archive.push(json!({"from": {"id": deal}, "to": stale}));
            }
            if let Some(w) = want
                && !have.contains(&w)
            {
                create.push((*i, json!({
                    "from": {"id": deal},
                    "to": {"id": w},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_to(to)}],
                })));
            }
        }
        for chunk in archive.chunks(ASSOC_BATCH) {
            c.call(
                Method::POST,
                &format!("/crm/v4/associations/deals/{to}/batch/archive"),
                &[],
                Some(&json!({"inputs": chunk})),
            )
            .await?;
        }
        for chunk in create.chunks(ASSOC_BATCH) {
            let body = json!({"inputs": chunk.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()});
            match c
                .call(
                    Method::POST,
                    &format!("/crm/v4/associations/deals/{to}/batch/create"),
                    &[],
                    Some(&body),
                )
                .await
            {
                Ok(_) => {}
                // One bad target fails the request: each deal of it is tried alone, so
                // only the deal whose target is refused fails.
                Err(CrmError::Rejected {
                    status: 400,
                    message,
                }) if chunk.len() == 1 => {
                    if let Some(o) = outcomes.get_mut(chunk[0].0) {
                        *o = WriteOutcome::Failed(format!("its {to} association: {message}"));
                    }
                }
                Err(CrmError::Rejected { status: 400, .. }) => {
                    for (i, input) in chunk {
                        let one = json!({"inputs": [input]});
                        if let Err(e) = c
                            .call(
                                Method::POST,
                                &format!("/crm/v4/associations/deals/{to}/batch/create"),
                                &[],
                                Some(&one),
                            )
                            .await
                        {
                            match e {
                                CrmError::Rejected {
                                    status: 400,
                                    message,
                                } => {
                                    if let Some(o) = outcomes.get_mut(*i) {
                                        *o = WriteOutcome::Failed(format!(
                                            "its {to} association: {message}"
                                        ));
                                    }
                                }
                                other => return Err(other),
                            }
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// One batch create or update; `associations`: per create input, what it is
/// associated with (deals; empty: none).
async fn write(
    c: &mut CrmClient<'_>,
    entity: Entity,
    inputs: &[WriteValues],
    ids: Option<&[String]>,
    associations: &[Vec<Value>],
) -> Result<Vec<WriteOutcome>, CrmError> {
    let object = c.kind().object(entity);
    let op = if ids.is_some() { "update" } else { "create" };
    let body = json!({
        "inputs": inputs.iter().enumerate().map(|(i, values)| {
            let props: serde_json::Map<String, Value> = values
                .iter()
                .map(|(k, v)| (k.clone(), json!(v.clone().unwrap_or_default())))
                .collect();
            match ids.and_then(|ids| ids.get(i)) {
                Some(id) => json!({"id": id, "properties": props}),
                None => match associations.get(i).filter(|a| !a.is_empty()) {
                    Some(a) => json!({"properties": props, "associations": a}),
                    None => json!({"properties": props}),
                },
            }
        }).collect::<Vec<_>>()
    });
    let result = c
        .call(
            Method::POST,
            &format!("/crm/v3/objects/{object}/batch/{op}"),
            &[],
            Some(&body),
        )
        .await;
    match result {
        Ok(v) => {
            // Results come in no particular order: match creates by their marker
            // (without one, by their unique key: email / domain), updates by id.
            let records = records(&v, c.kind().modified_field(entity))?;
            let field = if c.has_marker(entity) {
                c.kind().marker()
            } else {
                c.kind().key_field(entity).unwrap_or_default()
            };
            let matched =
                |v: Option<&String>| v.map(|s| s.trim().to_lowercase()).unwrap_or_default();
            let mut by_key: BTreeMap<String, String> = BTreeMap::new();
            for r in records {
                let key = match ids {
                    Some(_) => r.id.clone(),
                    None => matched(r.values.get(field)),
                };
                by_key.insert(key, r.id);
            }
            Ok(inputs
                .iter()
                .enumerate()
                .map(|(i, values)| {
                    let key = match ids {
                        Some(ids) => ids.get(i).cloned().unwrap_or_default(),
                        None => matched(values.get(field).and_then(Option::as_ref)),
                    };
                    match by_key.get(&key) {
                        Some(id) => WriteOutcome::Done(id.clone()),
                        None => WriteOutcome::Failed("missing from the CRM's answer".into()),
                    }
                })
                .collect())
        }
        // HubSpot fails a whole batch for one bad input: split it to find which.
        Err(CrmError::Rejected { status, message }) if status == 400 || status == 409 => {
            if inputs.len() == 1 {
                if status == 409 {
                    return Ok(vec![WriteOutcome::Exists(existing_id(&message))]);
                }
                if status == 400 && message.contains("OBJECT_NOT_FOUND") {
                    return Ok(vec![WriteOutcome::Failed("the CRM record is gone".into())]);
                }
                return Ok(vec![WriteOutcome::Failed(message)]);
            }
            let mid = inputs.len() / 2;
            let (left_ids, right_ids) = match ids {
                Some(ids) => (ids.get(..mid), ids.get(mid..)),
                None => (None, None),
            };
            let (left_a, right_a) = if associations.len() > mid {
                associations.split_at(mid)
            } else {
                (associations, &[][..])
            };
            let mut out = Box::pin(write(c, entity, &inputs[..mid], left_ids, left_a)).await?;
            out.extend(Box::pin(write(c, entity, &inputs[mid..], right_ids, right_a)).await?);
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

/// The scopes a refusal says are missing, when it is HubSpot's 403 `MISSING_SCOPES`
/// (naming them in `errors[].context`).
fn missing_scopes(status: StatusCode, body: &Value) -> Option<Vec<String>> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED {
        return None;
    }
    if body.get("category").and_then(Value::as_str) != Some("MISSING_SCOPES") {
        return None;
    }
    let mut scopes: Vec<String> = Vec::new();
    for e in body
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let context = e.get("context");
        for key in ["requiredGranularScopes", "requiredScopes"] {
            for s in context
                .and_then(|c| c.get(key))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !scopes.iter().any(|x| x == s) {
                    scopes.push(clip(s));
                }
            }
        }
    }
    Some(scopes)
}

/// HubSpot names the existing record in a unique-value conflict: "Existing ID: 123".
fn existing_id(message: &str) -> Option<String> {
    let at = message.find("Existing ID:")? + "Existing ID:".len();
    let id: String = message[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!id.is_empty()).then_some(id)
}

fn filter(f: &Filter) -> Value {
    let value = f.value.clone().unwrap_or_default();
    let field = &f.field;
    match f.operator {
        FilterOp::Eq => json!({"propertyName": field, "operator": "EQ", "value": value}),
        FilterOp::Neq => json!({"propertyName": field, "operator": "NEQ", "value": value}),
        FilterOp::Contains => {
            json!({"propertyName": field, "operator": "CONTAINS_TOKEN", "value": value})
        }
        FilterOp::Gt => json!({"propertyName": field, "operator": "GT", "value": value}),
        FilterOp::Gte => json!({"propertyName": field, "operator": "GTE", "value": value}),
        FilterOp::Lt => json!({"propertyName": field, "operator": "LT", "value": value}),
        FilterOp::Lte => json!({"propertyName": field, "operator": "LTE", "value": value}),
        FilterOp::In => json!({"propertyName": field, "operator": "IN", "values": f.values}),
        FilterOp::HasValue => json!({"propertyName": field, "operator": "HAS_PROPERTY"}),
        FilterOp::NoValue => json!({"propertyName": field, "operator": "NOT_HAS_PROPERTY"}),
    }
}

fn records(v: &Value, modified: &str) -> Result<Vec<CrmRecord>, CrmError> {
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| CrmError::Malformed("answer without results".into()))?;
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        let id = r
            .get("id")
            .and_then(|id| {
                id.as_str()
                    .map(str::to_owned)
                    .or_else(|| id.as_u64().map(|n| n.to_string()))
            })
            .ok_or_else(|| CrmError::Malformed("record without id".into()))?;
        let props = r
            .get("properties")
            .and_then(Value::as_object)
            .ok_or_else(|| CrmError::Malformed("record without properties".into()))?;
        let values: BTreeMap<String, String> = props
            .iter()
            .filter_map(|(k, v)| scalar_text(v).map(|t| (k.clone(), t)))
            .collect();
        let modified_ms = values
            .get(modified)
            .and_then(|t| parse_time_ms(t))
            .or_else(|| {
                r.get("updatedAt")
                    .and_then(Value::as_str)
                    .and_then(parse_time_ms)
            })
            .unwrap_or(0);
        out.push(CrmRecord {
            id,
            values,
            modified_ms,
        });
    }
    Ok(out)
}

fn fields(v: &Value) -> Result<Vec<CrmField>, CrmError> {
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| CrmError::Malformed("properties answer without results".into()))?;
    let mut out = Vec::with_capacity(results.len());
    for p in results {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            continue;
        };
        let ptype = p.get("type").and_then(Value::as_str).unwrap_or("string");
        let field_type = p.get("fieldType").and_then(Value::as_str).unwrap_or("text");
        let kind = match (ptype, field_type, name) {
            (_, _, "hs_object_id") => FieldType::Id,
            (_, _, "email") => FieldType::Email,
            (_, "phonenumber", _) => FieldType::Phone,
            ("number", _, _) => FieldType::Number,
            ("bool", _, _) => FieldType::Boolean,
            ("date", _, _) => FieldType::Date,
            ("datetime", _, _) => FieldType::DateTime,
            ("enumeration", "booleancheckbox", _) => FieldType::Boolean,
            ("enumeration", _, _) => FieldType::Enumeration,
            (_, _, "domain" | "website") => FieldType::Url,
            (_, _, "phone" | "mobilephone") => FieldType::Phone,
            _ => FieldType::String,
        };
        let read_only = p
            .pointer("/modificationMetadata/readOnlyValue")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || p.get("calculated")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        out.push(CrmField {
            name: name.to_owned(),
            label: p
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_owned(),
            kind,
            provider_type: format!("{ptype}/{field_type}"),
            required: false,
            writable: !read_only,
            options: p
                .get("options")
                .and_then(Value::as_array)
                .map(|o| {
                    o.iter()
                        .filter_map(|x| x.get("value").and_then(Value::as_str).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_scope_refusals_are_told_from_other_refusals() {
        let refused = json!({
            "status": "error",
            "message": "This app hasn't been granted all required scopes to make this call.",
            "errors": [{"message": "One or more of the following scopes are required.",
                        "context": {"requiredGranularScopes": ["crm.objects.contacts.write"]}}],
            "category": "MISSING_SCOPES",
        });
        assert_eq!(
            missing_scopes(StatusCode::FORBIDDEN, &refused),
            Some(vec!["crm.objects.contacts.write".to_owned()])
        );
        let other = json!({"category": "VALIDATION_ERROR", "message": "bad"});
        assert_eq!(missing_scopes(StatusCode::BAD_REQUEST, &other), None);
        assert_eq!(missing_scopes(StatusCode::FORBIDDEN, &other), None);
        assert!(
            HubSpot
                .refusal(StatusCode::FORBIDDEN, Some(&other), "")
                .is_none()
        );
        assert_eq!(
            HubSpot.error_message(&other),
            "VALIDATION_ERROR: bad".to_owned()
        );
        assert!(!CrmError::ScopesMissing(vec![]).is_transient());
        assert_eq!(
            HubSpot.rate_limited(r#"{"policyName":"DAILY"}"#),
            RateLimited::Exhausted
        );
    }

    #[test]
    fn answers_become_records() {
        let hs = json!({"results": [{"id": "51", "properties": {
            "email": "a@x.io", "firstname": "", "lastmodifieddate": "2024-01-15T09:00:00.000Z"
        }}]});
        let r = records(&hs, "lastmodifieddate").unwrap();
        assert_eq!(r[0].id, "51");
        assert_eq!(r[0].values.get("email").map(String::as_str), Some("a@x.io"));
        assert!(!r[0].values.contains_key("firstname"));
        assert!(r[0].modified_ms > 0);
        assert!(records(&json!({"nope": 1}), "x").is_err());
        assert_eq!(
            existing_id("Contact already exists. Existing ID: 9012"),
            Some("9012".into())
        );
    }
}
