//! Dispatch items: a dispatch's state (`DISP#{tenant}#{shard}`, newest first), the
//! event it renders from (`DISPEVT#…`, written once), each integration's log of steps
//! (`INTLOG#{tenant}#{integration}`), and the index of waiting dispatches (gsi1
//! `DISPDUE#{shard}`, present only while a step waits). Every item expires with
//! DynamoDB's TTL after [`RETENTION_DAYS`].
//!
//! An event writes its dispatch about once per step, so the state items are spread
//! over [`keys::RECORD_SHARDS`] partitions like records (a tenant's 10,000-event burst
//! stays far below a partition's 1,000 WCU/s); the state item is kept small (the event
//! lives apart) so each save is one or two write units.
//!
//! Each item keeps what it holds as one JSON document (`doc`, a string attribute) beside
//! the attributes DynamoDB itself reads — the keys, `version` (the saves' condition),
//! `ttl` and the index keys: nothing filters on a dispatch's inner fields in a request
//! (listings filter after reading), and a nested map of a dozen attributes per step
//! cost more to build, encode and free than the calls that carried it (a save was
//! mostly its item). Items written as nested maps before are read as they are.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{
    Keyed, Listing, QueryOpts, Readable, SkRange, Skipped, StoreError, Table, Write, decode_after,
    encode_after, keep_readable, keys, to_item,
};
use crate::dispatch::integration::TriggerEvent;
use crate::dispatch::log::{Dispatch, DispatchStatus, RETENTION_DAYS, Step};
use crate::domain::{DispatchId, IntegrationId, TenantId};

/// An item as written: its content as a JSON document, with its version (for the
/// dispatch's own item), its expiry and, while a step waits, its entry in the index of
/// waiting dispatches.
#[derive(Serialize)]
struct Stored {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    doc: String,
    ttl: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi1pk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi1sk: Option<String>,
}

impl Stored {
    fn of<T: Serialize>(item: &T) -> Result<Self, StoreError> {
        Ok(Stored {
            version: None,
            doc: serde_json::to_string(item).map_err(super::conversion)?,
            ttl: expiry(),
            gsi1pk: None,
            gsi1sk: None,
        })
    }
}

/// An item as read: the document form, or the nested attributes of an item written
/// before it (both carry the same fields).
#[derive(Deserialize)]
#[serde(untagged, bound(deserialize = "T: serde::de::DeserializeOwned"))]
enum Read<T> {
    Doc {
        #[serde(deserialize_with = "json_doc")]
        doc: T,
    },
    Nested(T),
}

impl<T> Read<T> {
    fn into_inner(self) -> T {
        match self {
            Read::Doc { doc } | Read::Nested(doc) => doc,
        }
    }
}

fn json_doc<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    serde_json::from_str(&text).map_err(serde::de::Error::custom)
}

#[derive(Serialize)]
struct EventItem<'a> {
    event: &'a Json,
}

#[derive(Deserialize)]
struct EventRead {
    event: Json,
}

/// [`StepLog`] as written, borrowing what it holds.
#[derive(Serialize)]
struct StepLogRef<'a> {
    dispatch_id: &'a DispatchId,
    event_type: TriggerEvent,
    event_id: &'a str,
    step: &'a Step,
}

/// One step in an integration's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// The dispatch.
    pub dispatch_id: DispatchId,
    /// The event's type.
    pub event_type: TriggerEvent,
    /// The event's id.
    pub event_id: String,
    /// The step as it ended.
    pub step: Step,
}

/// What a dispatch listing keeps.
#[derive(Debug, Clone, Default)]
pub struct DispatchFilter {
    /// Only this event type.
    pub event_type: Option<TriggerEvent>,
    /// Only this status.
    pub status: Option<DispatchStatus>,
    /// Only dispatches with a step of this integration.
    pub integration: Option<IntegrationId>,
    /// Only this assistant's.
    pub assistant: Option<String>,
    /// Events from this time on (Unix ms).
    pub since_ms: Option<u64>,
    /// Events up to this time (Unix ms).
    pub until_ms: Option<u64>,
}

impl DispatchFilter {
    fn keeps(&self, d: &Dispatch) -> bool {
        self.event_type.is_none_or(|t| d.event_type == t)
            && self.status.is_none_or(|s| d.status == s)
            && self
                .integration
                .as_ref()
                .is_none_or(|i| d.steps.iter().any(|s| s.integration_id == *i))
            && self
                .assistant
                .as_ref()
                .is_none_or(|a| d.assistant_id.as_deref() == Some(a.as_str()))
    }
}

/// The dispatch store.
#[derive(Clone, Debug)]
pub struct Dispatches {
    table: Table,
}

fn expiry() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp() + RETENTION_DAYS * 86_400
}

fn stored(d: &Dispatch) -> Result<Keyed<Stored>, StoreError> {
    let shard = keys::shard_of(d.id.as_str());
    Ok(Keyed {
        pk: keys::dispatch(&d.tenant, &d.id),
        sk: keys::newest_first(d.id.as_str()),
        item: Stored {
            version: Some(d.version),
            gsi1pk: d.due_at.map(|_| keys::dispatch_due(shard)),
            gsi1sk: d
                .due_at
                .map(|due| keys::dispatch_due_entry(due, &d.tenant, &d.id)),
            ..Stored::of(d)?
        },
    })
}

fn shards(tenant: &TenantId) -> Vec<String> {
    (0..keys::RECORD_SHARDS)
        .map(|s| keys::dispatches(tenant, s))
        .collect()
}

/// Creations one transaction carries at most (two items each; DynamoDB allows 100).
const CREATE_MAX: usize = 25;
/// Bytes of events one transaction of creations carries at most (DynamoDB allows 4 MB
/// a transaction; an event is at most EventBridge's 256 KB).
const CREATE_BYTES: usize = 3 * 1024 * 1024;

/// The writes creating `d` with its event, and the event's size.
fn creation(d: &Dispatch, event: &Json) -> Result<(Write, Write, usize), StoreError> {
    let event = Keyed {
        pk: keys::dispatch_event(&d.tenant, &d.id),
        sk: d.id.to_string(),
        item: Stored::of(&EventItem { event })?,
    };
    let size = event.item.doc.len();
    Ok((
        Write::Put(to_item(&event)?),
        Write::Insert(to_item(&stored(d)?)?),
        size,
    ))
}

impl Dispatches {
    /// Dispatches in `table`.
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// One dispatch of `tenant`.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &DispatchId,
    ) -> Result<Option<Dispatch>, StoreError> {
        let item: Option<Keyed<Read<Dispatch>>> = self
            .table
            .get(
                &keys::dispatch(tenant, id),
                &keys::newest_first(id.as_str()),
            )
            .await?;
        Ok(item
            .map(|k| k.item.into_inner())
            .filter(|d| d.tenant == *tenant && d.id == *id))
    }

    /// Stores a new dispatch with its event, both or neither; false when the dispatch
    /// already exists (another delivery of the same event made it).
    pub async fn create(&self, d: &Dispatch, event: &Json) -> Result<bool, StoreError> {
        let (event, dispatch, _) = creation(d, event)?;
        match self.table.transact(vec![event, dispatch]).await {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Stores new dispatches with their events, as [`Dispatches::create`] does one, in
    /// as few writes as a transaction's limits allow; for each, whether it was created
    /// (false: it already existed, or it came twice and its first copy was created).
    /// A dispatch that exists does not stop the others: DynamoDB names the items whose
    /// condition failed, and the rest are written again without them.
    pub async fn create_many(&self, new: &[(&Dispatch, &Json)]) -> Result<Vec<bool>, StoreError> {
        let mut created = vec![false; new.len()];
        // Each dispatch once: a transaction may not write one item twice.
        let mut seen = std::collections::HashSet::new();
        let mut chunk: Vec<(usize, Write, Write)> = Vec::new();
        let mut bytes = 0;
        for (i, (d, event)) in new.iter().enumerate() {
            if !seen.insert(&d.id) {
                continue;
            }
            let (event, dispatch, size) = creation(d, event)?;
            if !chunk.is_empty() && (chunk.len() >= CREATE_MAX || bytes + size > CREATE_BYTES) {
                self.create_chunk(std::mem::take(&mut chunk), new, &mut created)
                    .await?;
                bytes = 0;
            }
            bytes += size;
            chunk.push((i, event, dispatch));
        }
        if !chunk.is_empty() {
            self.create_chunk(chunk, new, &mut created).await?;
        }
        Ok(created)
    }

    /// One transaction of creations, written again without those that exist.
    async fn create_chunk(
        &self,
        mut chunk: Vec<(usize, Write, Write)>,
        new: &[(&Dispatch, &Json)],
        created: &mut [bool],
    ) -> Result<(), StoreError> {
        loop {
            let indices: Vec<usize> = chunk.iter().map(|(i, ..)| *i).collect();
            let writes = chunk
                .into_iter()
                .flat_map(|(_, event, dispatch)| [event, dispatch])
                .collect();
            let failed = match self.table.transact_or_failed(writes).await {
                // A failed condition the cancellation does not place: each alone.
                Err(StoreError::ConditionFailed) if indices.len() > 1 => {
                    for i in indices {
                        let (d, event) = new[i];
                        created[i] = self.create(d, event).await?;
                    }
                    return Ok(());
                }
                other => other?,
            };
            if failed.is_empty() {
                for i in indices {
                    created[i] = true;
                }
                return Ok(());
            }
            // The writes go in pairs (event, dispatch); a failed condition is a
            // dispatch that exists. The others are built again (the writes were sent).
            let exists: std::collections::HashSet<usize> = failed.iter().map(|w| w / 2).collect();
            chunk = Vec::new();
            for (k, i) in indices.into_iter().enumerate() {
                if exists.contains(&k) {
                    continue;
                }
                let (d, event) = new[i];
                let (event, dispatch, _) = creation(d, event)?;
                chunk.push((i, event, dispatch));
            }
            if chunk.is_empty() {
                return Ok(());
            }
        }
    }

    /// The event a dispatch renders from.
    pub async fn event(
        &self,
        tenant: &TenantId,
        id: &DispatchId,
    ) -> Result<Option<Json>, StoreError> {
        let item: Option<Keyed<Read<EventRead>>> = self
            .table
            .get(&keys::dispatch_event(tenant, id), id.as_str())
            .await?;
        Ok(item.map(|k| k.item.into_inner().event))
    }

    /// Saves `d` over the version `prev_version` (`ConditionFailed` if another
    /// writer saved it meanwhile).
    pub async fn save(&self, d: &Dispatch, prev_version: u64) -> Result<(), StoreError> {
        self.table.replace(&stored(d)?, prev_version).await
    }

    /// Saves `d` over `prev_version` as [`Dispatches::save`] does, with `finished`
    /// (a step that just ended) added to its integration's log in the same write.
    pub async fn save_logged(
        &self,
        d: &Dispatch,
        prev_version: u64,
        finished: Option<&Step>,
    ) -> Result<(), StoreError> {
        let Some(step) = finished else {
            return self.save(d, prev_version).await;
        };
        let log = Keyed {
            pk: keys::integration_log(&d.tenant, &step.integration_id),
            sk: keys::newest_first(d.id.as_str()),
            item: Stored::of(&StepLogRef {
                dispatch_id: &d.id,
                event_type: d.event_type,
                event_id: &d.event_id,
                step,
            })?,
        };
        self.table
            .transact(vec![
                Write::Replace(to_item(&stored(d)?)?, prev_version),
                Write::Put(to_item(&log)?),
            ])
            .await
    }

    /// One page of an integration's log, newest first.
    pub async fn integration_log(
        &self,
        tenant: &TenantId,
        integration: &IntegrationId,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Listing<StepLog>, StoreError> {
        let page = self
            .table
            .query_lenient::<Keyed<Read<StepLog>>>(
                None,
                &keys::integration_log(tenant, integration),
                QueryOpts {
                    limit: Some(limit),
                    cursor,
                    ..Default::default()
                },
            )
            .await?;
        let mut skipped = Vec::new();
        let items = keep_readable(page.items, "", "integration log", &mut skipped)
            .into_iter()
            .map(|k| k.item.into_inner())
            .filter(|l| l.step.integration_id == *integration)
            .collect();
        Ok(Listing {
            items,
            cursor: page.cursor,
            skipped,
        })
    }

    /// One page of a tenant's dispatches, newest first, kept by `filter`, from
    /// `cursor` (a previous page's). A page may hold fewer than `limit` when the filter
    /// leaves out much; its cursor then goes on where the reading stopped.
    pub async fn page(
        &self,
        tenant: &TenantId,
        filter: &DispatchFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Listing<Dispatch>, StoreError> {
        let mut after = cursor.map(decode_after).transpose()?;
        let start = filter.until_ms.map(|ms| keys::newest_first_at(ms, ""));
        let end = filter.since_ms.map(|ms| keys::newest_first_at(ms, "~"));
        let pks = shards(tenant);
        let mut items = Vec::new();
        let mut skipped: Vec<Skipped> = Vec::new();
        let mut rounds = 0;
        loop {
            rounds += 1;
            let range = match (&after, &start) {
                (None, Some(s)) => SkRange::From(s),
                _ => SkRange::All,
            };
            let (found, next) = self
                .table
                .query_shards(
                    None,
                    &pks,
                    range,
                    after.as_deref(),
                    limit - items.len(),
                    None,
                )
                .await?;
            let mut past_end = false;
            let mut last = None;
            for raw in found {
                let read = Readable::<Keyed<Read<Dispatch>>>::read(raw, "sk");
                let sk = match &read {
                    Readable::Item(k) => k.sk.clone(),
                    Readable::Unreadable { sk, .. } => sk.clone(),
                };
                if end.as_ref().is_some_and(|e| sk > *e) {
                    past_end = true;
                    break;
                }
                last = Some(sk);
                for k in keep_readable(vec![read], "", "dispatch", &mut skipped) {
                    let d = k.item.into_inner();
                    if d.tenant == *tenant && filter.keeps(&d) {
                        items.push(d);
                    }
                }
            }
            let more = !past_end && next.is_some();
            after = if more { next.or(last) } else { None };
            if !more || items.len() >= limit || rounds >= 4 {
                break;
            }
        }
        Ok(Listing {
            items,
            cursor: after.map(|a| encode_after(&a)),
            skipped,
        })
    }

    /// The waiting dispatches due by `now_ms`, from every shard of the index (at most
    /// `max`).
    pub async fn due(
        &self,
        now_ms: i64,
        max: usize,
    ) -> Result<Vec<(TenantId, DispatchId)>, StoreError> {
        let upper = format!("{:015}~", now_ms.max(0));
        let mut due = Vec::new();
        for shard in 0..keys::RECORD_SHARDS {
            let page = self
                .table
                .query::<Keyed<Read<Dispatch>>>(
                    Some("gsi1"),
                    &keys::dispatch_due(shard),
                    QueryOpts {
                        between: Some(("0", &upper)),
                        limit: Some(500),
                        ..Default::default()
                    },
                )
                .await?;
            due.extend(
                page.items
                    .into_iter()
                    .map(|k| k.item.into_inner())
                    .map(|d| (d.tenant, d.id)),
            );
            if due.len() >= max {
                due.truncate(max);
                break;
            }
        }
        Ok(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::integration::OnFailure;
    use crate::dispatch::log::StepStatus;
    use crate::dispatch::log::tests::{dispatch, step};

    fn read(
        item: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    ) -> Result<Dispatch, serde_dynamo::Error> {
        serde_dynamo::from_item::<_, Keyed<Read<Dispatch>>>(item).map(|k| k.item.into_inner())
    }

    #[test]
    fn a_dispatch_is_one_document_beside_the_attributes_dynamodb_reads() {
        let mut d = dispatch(vec![
            step(StepStatus::Succeeded, OnFailure::Continue),
            step(StepStatus::Waiting, OnFailure::Stop),
        ]);
        d.due_at = Some(1_700_000_000_000);
        d.version = 7;
        let item = to_item(&stored(&d).unwrap()).unwrap();
        let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            ["doc", "gsi1pk", "gsi1sk", "pk", "sk", "ttl", "version"]
        );
        // The saves' condition reads the version as a number.
        assert_eq!(item["version"].as_n().map(String::as_str), Ok("7"));
        assert!(item["doc"].as_s().is_ok());
        assert_eq!(read(item).unwrap(), d);
    }

    #[test]
    fn an_item_written_as_nested_attributes_still_reads() {
        #[derive(Serialize)]
        struct Nested<'a> {
            #[serde(flatten)]
            item: &'a Dispatch,
            ttl: i64,
        }
        let d = dispatch(vec![step(StepStatus::Succeeded, OnFailure::Continue)]);
        let item = to_item(&Keyed {
            pk: keys::dispatch(&d.tenant, &d.id),
            sk: keys::newest_first(d.id.as_str()),
            item: Nested { item: &d, ttl: 1 },
        })
        .unwrap();
        assert!(item["steps"].as_l().is_ok());
        assert_eq!(read(item).unwrap(), d);
    }

    #[test]
    fn a_document_that_is_not_a_dispatch_is_an_error() {
        let d = dispatch(vec![]);
        let mut item = to_item(&stored(&d).unwrap()).unwrap();
        item.insert(
            "doc".into(),
            aws_sdk_dynamodb::types::AttributeValue::S("{\"id\": 3".into()),
        );
        assert!(read(item).is_err());
    }
}
