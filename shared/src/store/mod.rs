//! The DynamoDB adapter: one table, every key prefixed by tenant, and the only code
//! that knows its layout. `keys` spells every key (its module doc lists every item);
//! one submodule per item family holds the family's stored shape, its condition and
//! update expressions and its transactions; domain modules call those typed stores.
//!
//! Items are (de)serialised with serde_dynamo. Writes that must not clobber use
//! conditions: `insert` only creates, `replace` only overwrites the version it read
//! (optimistic concurrency), and `transact` writes several items atomically (used for
//! uniqueness markers and audit entries). Listing is always a Query on a key — never a
//! Scan.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod app_credentials;
pub mod audit;
pub mod budget;
#[cfg(test)]
mod capacity;
pub mod configs;
pub mod connections;
pub mod dispatches;
pub mod idempotency;
pub mod integrations;
pub mod kb;
pub mod keys;
pub mod links;
pub mod oauth;
pub mod records;
pub mod runs;
mod transactions;
pub mod webhooks;

/// An item as DynamoDB holds it (attribute name to value).
pub type Item = HashMap<String, AttributeValue>;

/// A value in a condition, update or filter expression (`:name` placeholders).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    S(String),
    /// A number, in its decimal form.
    N(String),
    /// A boolean.
    Bool(bool),
    /// A string set.
    Ss(Vec<String>),
}

impl Value {
    /// A number.
    pub fn num(n: impl std::fmt::Display) -> Self {
        Self::N(n.to_string())
    }
}

impl From<Value> for AttributeValue {
    fn from(v: Value) -> Self {
        match v {
            Value::S(s) => Self::S(s),
            Value::N(n) => Self::N(n),
            Value::Bool(b) => Self::Bool(b),
            Value::Ss(ss) => Self::Ss(ss),
        }
    }
}

/// Store failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A condition did not hold: the item exists, or changed since it was read.
    #[error("condition failed")]
    ConditionFailed,
    /// A paging cursor was malformed or belongs elsewhere.
    #[error("invalid cursor")]
    BadCursor,
    /// An item could not be converted.
    #[error("item conversion: {0}")]
    Conversion(String),
    /// DynamoDB throttled the request (after the SDK's and our own retries): retry
    /// later (a worker leaves its message for redelivery).
    #[error("dynamodb throttled the request")]
    Throttled,
    /// Another transaction kept writing the same items (after our retries): retry.
    #[error("a concurrent transaction kept writing the same items")]
    Conflict,
    /// DynamoDB refused the request as malformed: a bug, never retried.
    #[error("request refused: {0}")]
    Invalid(String),
    /// DynamoDB failed.
    #[error("dynamodb: {0}")]
    Service(String),
}

impl StoreError {
    /// Whether trying again later can succeed (throttled, conflicting, unavailable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled | Self::Conflict | Self::Service(_))
    }
}

/// A conversion failure without the stored value: serde quotes the offending value
/// in most messages (`invalid type: string "…"`, `unknown variant \`…\``), and an
/// item may hold personal data; what was expected comes from our own types.
fn conversion(e: impl std::fmt::Display) -> StoreError {
    StoreError::Conversion(redacted(&e))
}

fn without_values(msg: &str) -> String {
    if msg.starts_with("missing field") {
        return msg.to_owned();
    }
    match msg.find(", expected") {
        Some(i) => format!("unexpected value{}", &msg[i..]),
        None => "an attribute does not have its expected form".to_owned(),
    }
}

/// A failed call as a store error: throttling that outlasted the SDK's standard
/// retries (which retry `ProvisionedThroughputExceededException` and
/// `ThrottlingException`) is [`StoreError::Throttled`], like a throttled transaction.
pub(crate) fn service<E, R>(e: aws_sdk_dynamodb::error::SdkError<E, R>) -> StoreError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    if transactions::is_throttle(e.code()) {
        tracing::warn!(code = ?e.code(), "dynamodb throttled a request past its retries");
        return StoreError::Throttled;
    }
    StoreError::Service(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
}

/// Waits before a batch call's next try at the items DynamoDB left unprocessed
/// (exponential, from 40 ms); gives up after 8 tries.
async fn back_off(tries: &mut u32, what: &str) -> Result<(), StoreError> {
    *tries += 1;
    if *tries > 8 {
        tracing::warn!(what, "dynamodb kept leaving items unprocessed");
        return Err(StoreError::Throttled);
    }
    tokio::time::sleep(std::time::Duration::from_millis(20 << (*tries).min(5))).await;
    Ok(())
}

/// BatchWriteItem rounds of one `batch_write` in flight at once.
const BATCH_WRITES_IN_FLIGHT: usize = 4;

/// An item with its keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Keyed<T> {
    /// Partition key.
    pub pk: String,
    /// Sort key.
    pub sk: String,
    /// The item's attributes.
    #[serde(flatten)]
    pub item: T,
}

/// One page of a query.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, in key order (or reversed).
    pub items: Vec<T>,
    /// Where the next page starts, if there is one.
    pub cursor: Option<String>,
}

/// An item of a query: converted, or not convertible (named by its sort key, never
/// by its values).
#[derive(Debug, Clone)]
pub enum Readable<T> {
    /// The item.
    Item(T),
    /// An item whose attributes do not have the expected form.
    Unreadable {
        /// Its sort key (of the queried table or index).
        sk: String,
        /// What did not convert, without the stored value.
        error: String,
    },
}

impl<T: DeserializeOwned> Readable<T> {
    fn read(item: HashMap<String, AttributeValue>, sk_attr: &str) -> Self {
        // The table's own sort key names the item (index keys need not hold its id).
        let sk = item
            .get("sk")
            .or_else(|| item.get(sk_attr))
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        match serde_dynamo::from_item(item) {
            Ok(v) => Self::Item(v),
            Err(e) => Self::Unreadable {
                sk,
                error: without_values(&e.to_string()),
            },
        }
    }
}

impl<T> Readable<T> {
    /// The item, or the conversion error.
    pub fn into_result(self) -> Result<T, StoreError> {
        match self {
            Self::Item(v) => Ok(v),
            Self::Unreadable { error, .. } => Err(StoreError::Conversion(error)),
        }
    }
}

/// An item a listing left out, by id: the rest of the list is still answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The item's id (from its key).
    pub id: String,
    /// Why: `unreadable` (an attribute does not have its form) or `misplaced` (the item
    /// names another tenant or id than its key, e.g. copied from elsewhere).
    pub reason: SkipReason,
}

/// A page of a listing, with the items it left out because they did not convert.
#[derive(Debug, Clone)]
pub struct Listing<T> {
    /// The items, in order.
    pub items: Vec<T>,
    /// Where the next page starts.
    pub cursor: Option<String>,
    /// Items of this page left out, by id.
    pub skipped: Vec<Skipped>,
}

/// Keeps the items of a lenient query that converted; the others (sort keys
/// `{prefix}{id}`) go to `skipped` by id, logged by key and never by value.
pub fn keep_readable<T>(
    items: Vec<Readable<T>>,
    prefix: &str,
    what: &str,
    skipped: &mut Vec<Skipped>,
) -> Vec<T> {
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Readable::Item(v) => kept.push(v),
            Readable::Unreadable { sk, error } => {
                tracing::error!(key = %sk, what, %error, "item unreadable; skipped");
                skipped.push(Skipped {
                    id: id_of(&sk, prefix),
                    reason: SkipReason::Unreadable,
                });
            }
        }
    }
    kept
}

/// A conversion error's message without the values it may quote.
pub fn redacted(error: &impl std::fmt::Display) -> String {
    without_values(&error.to_string())
}

/// Why a listing left an item out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// An attribute does not have its expected form.
    Unreadable,
    /// The item's own tenant or id differ from its key.
    Misplaced,
}

/// Splits a lenient listing of `what` items (sort keys `{prefix}{id}`) into the items
/// that `belongs` accepts (their own tenant and id are their key's) and the rest, named
/// by id and logged by key, never by value.
pub fn split_listing<T>(
    items: Vec<Readable<Keyed<T>>>,
    prefix: &str,
    what: &str,
    belongs: impl Fn(&Keyed<T>) -> bool,
) -> (Vec<T>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let mut kept = Vec::with_capacity(items.len());
    for k in keep_readable(items, prefix, what, &mut skipped) {
        if belongs(&k) {
            kept.push(k.item);
            continue;
        }
        tracing::error!(key = %k.sk, what, "item names another tenant or id than its key; skipped");
        skipped.push(Skipped {
            id: id_of(&k.sk, prefix),
            reason: SkipReason::Misplaced,
        });
    }
    (kept, skipped)
}

/// One page of a listing of `what` items (sort keys `{prefix}{id}` under `pk`), from
/// `cursor`, split as [`split_listing`] does: the paging every short list shares.
pub async fn list_page<T: DeserializeOwned>(
    table: &Table,
    pk: &str,
    prefix: &str,
    page: (i32, Option<&str>),
    what: &str,
    belongs: impl Fn(&Keyed<T>) -> bool,
) -> Result<Listing<T>, StoreError> {
    let (limit, cursor) = page;
    let opts = QueryOpts {
        prefix: Some(prefix),
        limit: Some(limit),
        cursor,
        ..Default::default()
    };
    let page = table.query_lenient::<Keyed<T>>(None, pk, opts).await?;
    let (items, skipped) = split_listing(page.items, prefix, what, belongs);
    Ok(Listing {
        items,
        cursor: page.cursor,
        skipped,
    })
}

/// The id in a sort key `{prefix}{id}`.
fn id_of(sk: &str, prefix: &str) -> String {
    sk.strip_prefix(prefix).unwrap_or(sk).to_owned()
}

/// How to query.
#[derive(Debug, Clone, Default)]
pub struct QueryOpts<'a> {
    /// Only sort keys starting with this.
    pub prefix: Option<&'a str>,
    /// Only sort keys within this inclusive range.
    pub between: Option<(&'a str, &'a str)>,
    /// Only sort keys after this one (exclusive; with neither `prefix` nor `between`).
    pub after: Option<&'a str>,
    /// Page size.
    pub limit: Option<i32>,
    /// Continue after a previous page.
    pub cursor: Option<&'a str>,
    /// Newest (highest sort key) first.
    pub descending: bool,
    /// Only items matching this filter expression (applied after the key condition, so
    /// pages may hold fewer than `limit` items), with its `:value` placeholders.
    pub filter: Option<(&'a str, Vec<(&'a str, Value)>)>,
    /// A strongly consistent read (the table only; an index cannot give one): what
    /// every write finished before the query began is in its answer.
    pub consistent: bool,
}

/// One write of a transaction.
pub enum Write {
    /// Write an item whatever is there.
    Put(HashMap<String, AttributeValue>),
    /// Create an item that must not exist.
    Insert(HashMap<String, AttributeValue>),
    /// Overwrite an item whose `version` is the given one.
    Replace(HashMap<String, AttributeValue>, u64),
    /// Delete an item (that must exist when `must_exist`).
    Delete {
        /// Partition key.
        pk: String,
        /// Sort key.
        sk: String,
        /// Fail unless the item is there.
        must_exist: bool,
    },
    /// Put an item if `condition` holds (with at most one value placeholder).
    PutIf {
        /// The item.
        item: Item,
        /// The condition expression.
        condition: &'static str,
        /// Its value placeholder.
        value: Option<(&'static str, Value)>,
    },
    /// Delete an item if `condition` holds (with at most one value placeholder).
    DeleteIf {
        /// Partition key.
        pk: String,
        /// Sort key.
        sk: String,
        /// The condition expression.
        condition: &'static str,
        /// Its value placeholder.
        value: Option<(&'static str, Value)>,
    },
    /// Update an item with `update` if `condition` holds (as [`Table::update`]).
    UpdateIf {
        /// Partition key.
        pk: String,
        /// Sort key.
        sk: String,
        /// The update expression.
        update: &'static str,
        /// The condition expression.
        condition: &'static str,
        /// Its value placeholders.
        values: Vec<(&'static str, Value)>,
        /// Its name placeholders.
        names: Vec<(&'static str, &'static str)>,
    },
}

/// The table.
///
/// Its calls box the SDK's futures (`Box::pin(….send())`): one is 5–6 KB, and held
/// inline it made every future above it that large — a dispatch step, an invocation's
/// message — and each of those was copied whole wherever it was boxed or queued (5 % of
/// the event-dispatch handler's CPU went to those copies).
#[derive(Clone, Debug)]
pub struct Table {
    client: Client,
    name: String,
}

/// Converts a value to a DynamoDB item.
pub fn to_item<T: Serialize>(value: &T) -> Result<HashMap<String, AttributeValue>, StoreError> {
    serde_dynamo::to_item(value).map_err(conversion)
}

impl Table {
    /// The table `name`.
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The DynamoDB client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
            ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
        ])
    }

    /// Reads an item (strongly consistent).
    pub async fn get<T: DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<Option<T>, StoreError> {
        let out = Box::pin(
            self.client
                .get_item()
                .table_name(&self.name)
                .set_key(Some(Self::key(pk, sk)))
                .consistent_read(true)
                .send(),
        )
        .await
        .map_err(service)?;
        out.item
            .map(|item| serde_dynamo::from_item(item).map_err(conversion))
            .transpose()
    }

    /// Creates an item; fails with `ConditionFailed` if its key is taken.
    pub async fn insert<T: Serialize>(&self, value: &T) -> Result<(), StoreError> {
        Box::pin(
            self.client
                .put_item()
                .table_name(&self.name)
                .set_item(Some(to_item(value)?))
                .condition_expression("attribute_not_exists(pk)")
                .send(),
        )
        .await
        .map_err(condition_or)?;
        Ok(())
    }

    /// Writes an item whatever is there.
    pub async fn put<T: Serialize>(&self, value: &T) -> Result<(), StoreError> {
        Box::pin(
            self.client
                .put_item()
                .table_name(&self.name)
                .set_item(Some(to_item(value)?))
                .send(),
        )
        .await
        .map_err(service)?;
        Ok(())
    }

    /// Writes an item only if `condition` holds (else `ConditionFailed`), with at most
    /// one attribute name and one value placeholder.
    pub async fn put_if(
        &self,
        item: Item,
        condition: &str,
        name: Option<(&str, &str)>,
        value: Option<(&str, Value)>,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression(condition);
        if let Some((k, v)) = name {
            req = req.expression_attribute_names(k, v);
        }
        if let Some((k, v)) = value {
            req = req.expression_attribute_values(k, v.into());
        }
        Box::pin(req.send()).await.map_err(condition_or)?;
        Ok(())
    }

    /// Overwrites an item only if its `version` is still `expected`.
    pub async fn replace<T: Serialize>(&self, value: &T, expected: u64) -> Result<(), StoreError> {
        self.replace_item(to_item(value)?, expected).await
    }

    /// [`Table::replace`] for an item already converted.
    pub async fn replace_item(
        &self,
        item: HashMap<String, AttributeValue>,
        expected: u64,
    ) -> Result<(), StoreError> {
        Box::pin(
            self.client
                .put_item()
                .table_name(&self.name)
                .set_item(Some(item))
                .condition_expression("version = :v")
                .expression_attribute_values(":v", AttributeValue::N(expected.to_string()))
                .send(),
        )
        .await
        .map_err(condition_or)?;
        Ok(())
    }

    /// Deletes an item; with `expected`, only if its version is still that one.
    /// Deleting an absent item succeeds unless a version is expected.
    pub async fn delete(
        &self,
        pk: &str,
        sk: &str,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(Self::key(pk, sk)));
        if let Some(v) = expected {
            req = req
                .condition_expression("version = :v")
                .expression_attribute_values(":v", AttributeValue::N(v.to_string()));
        }
        Box::pin(req.send()).await.map_err(condition_or)?;
        Ok(())
    }

    /// Deletes an item only if `condition` holds, returning the item as it was: the
    /// way to consume a single-use record exactly once. A failed condition (or an
    /// absent item) is `ConditionFailed`.
    pub async fn take<T: DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
        condition: &str,
        values: Vec<(&str, Value)>,
        names: &[(&str, &str)],
    ) -> Result<T, StoreError> {
        let mut req = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(Self::key(pk, sk)))
            .condition_expression(condition)
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld);
        for (name, value) in values {
            req = req.expression_attribute_values(name, value.into());
        }
        for (alias, name) in names {
            req = req.expression_attribute_names(*alias, *name);
        }
        let out = Box::pin(req.send()).await.map_err(condition_or)?;
        let item = out.attributes.ok_or(StoreError::ConditionFailed)?;
        serde_dynamo::from_item(item).map_err(conversion)
    }

    /// Updates an item with `update` only if `condition` holds, returning the item
    /// after the update (read in the same atomic step). A failed condition is
    /// `ConditionFailed`.
    pub async fn update<T: DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
        update: &str,
        condition: &str,
        values: Vec<(&str, Value)>,
        names: &[(&str, &str)],
    ) -> Result<T, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Self::key(pk, sk)))
            .update_expression(update)
            .condition_expression(condition)
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        for (name, value) in values {
            req = req.expression_attribute_values(name, value.into());
        }
        for (alias, name) in names {
            req = req.expression_attribute_names(*alias, *name);
        }
        let out = Box::pin(req.send()).await.map_err(condition_or)?;
        let item = out
            .attributes
            .ok_or_else(|| StoreError::Service("update returned no item".into()))?;
        serde_dynamo::from_item(item).map_err(conversion)
    }

    /// Writes up to 100 items atomically; any failed condition fails them all
    /// (`ConditionFailed`). A transaction cancelled by a conflict or throttling is
    /// tried again (full jitter, a few times), then `Conflict` / `Throttled`.
    pub async fn transact(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.transact_coded(writes).await.map_err(|(e, _)| e)
    }

    /// [`Table::transact`], telling which conditions failed: Ok with no positions when
    /// it is written; when failed conditions cancelled it (nothing written), Ok with
    /// the positions in `writes` of those that did not hold (DynamoDB names a reason
    /// per item).
    pub async fn transact_or_failed(&self, writes: Vec<Write>) -> Result<Vec<usize>, StoreError> {
        match self.transact_coded(writes).await {
            Ok(()) => Ok(Vec::new()),
            Err((StoreError::ConditionFailed, codes)) => {
                let failed: Vec<usize> = codes
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.as_str() == "ConditionalCheckFailed")
                    .map(|(i, _)| i)
                    .collect();
                if failed.is_empty() {
                    Err(StoreError::ConditionFailed)
                } else {
                    Ok(failed)
                }
            }
            Err((e, _)) => Err(e),
        }
    }

    /// [`Table::transact`], with a cancellation's per-item reason codes.
    async fn transact_coded(&self, writes: Vec<Write>) -> Result<(), (StoreError, Vec<String>)> {
        let mut items = Vec::with_capacity(writes.len());
        for w in writes {
            let item = match w {
                Write::Put(item) => TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.name)
                            .set_item(Some(item))
                            .build()
                            .map_err(|e| (conversion(e), Vec::new()))?,
                    )
                    .build(),
                Write::Insert(item) => TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.name)
                            .set_item(Some(item))
                            .condition_expression("attribute_not_exists(pk)")
                            .build()
                            .map_err(|e| (conversion(e), Vec::new()))?,
                    )
                    .build(),
                Write::Replace(item, v) => TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.name)
                            .set_item(Some(item))
                            .condition_expression("version = :v")
                            .expression_attribute_values(":v", AttributeValue::N(v.to_string()))
                            .build()
                            .map_err(|e| (conversion(e), Vec::new()))?,
                    )
                    .build(),
                Write::Delete { pk, sk, must_exist } => {
                    let mut d = Delete::builder()
                        .table_name(&self.name)
                        .set_key(Some(Self::key(&pk, &sk)));
                    if must_exist {
                        d = d.condition_expression("attribute_exists(pk)");
                    }
                    TransactWriteItem::builder()
                        .delete(d.build().map_err(|e| (conversion(e), Vec::new()))?)
                        .build()
                }
                Write::PutIf {
                    item,
                    condition,
                    value,
                } => {
                    let mut p = Put::builder()
                        .table_name(&self.name)
                        .set_item(Some(item))
                        .condition_expression(condition);
                    if let Some((k, v)) = value {
                        p = p.expression_attribute_values(k, v.into());
                    }
                    TransactWriteItem::builder()
                        .put(p.build().map_err(|e| (conversion(e), Vec::new()))?)
                        .build()
                }
                Write::DeleteIf {
                    pk,
                    sk,
                    condition,
                    value,
                } => {
                    let mut d = Delete::builder()
                        .table_name(&self.name)
                        .set_key(Some(Self::key(&pk, &sk)))
                        .condition_expression(condition);
                    if let Some((k, v)) = value {
                        d = d.expression_attribute_values(k, v.into());
                    }
                    TransactWriteItem::builder()
                        .delete(d.build().map_err(|e| (conversion(e), Vec::new()))?)
                        .build()
                }
                Write::UpdateIf {
                    pk,
                    sk,
                    update,
                    condition,
                    values,
                    names,
                } => {
                    let mut u = Update::builder()
                        .table_name(&self.name)
                        .set_key(Some(Self::key(&pk, &sk)))
                        .update_expression(update)
                        .condition_expression(condition);
                    for (k, v) in values {
                        u = u.expression_attribute_values(k, v.into());
                    }
                    for (alias, name) in names {
                        u = u.expression_attribute_names(alias, name);
                    }
                    TransactWriteItem::builder()
                        .update(u.build().map_err(|e| (conversion(e), Vec::new()))?)
                        .build()
                }
            };
            items.push(item);
        }
        // A conflict or a throttle cancels the whole transaction and is gone on a
        // later try: tried again after a jittered wait, a bounded number of times.
        let mut retry = 0;
        loop {
            let e = match Box::pin(
                self.client
                    .transact_write_items()
                    .set_transact_items(Some(items.clone()))
                    .send(),
            )
            .await
            {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(cancelled)) =
                e.as_service_error()
            else {
                return Err((service(e), Vec::new()));
            };
            let codes = transactions::reason_codes(cancelled);
            let meaning = transactions::cancellation(codes.iter().map(String::as_str));
            let again = matches!(
                meaning,
                transactions::Cancellation::Conflict | transactions::Cancellation::Throttled
            );
            if !again || retry + 1 >= transactions::ATTEMPTS {
                if meaning != transactions::Cancellation::ConditionFailed {
                    tracing::warn!(?codes, tries = retry + 1, "transaction cancelled");
                }
                return Err((transactions::error_of(meaning, &codes), codes));
            }
            tokio::time::sleep(transactions::full_jitter(retry)).await;
            retry += 1;
        }
    }

    /// Queries one partition (of the table, or of an index with `index`); one item
    /// that does not convert fails the page (see [`Table::query_lenient`]).
    pub async fn query<T: DeserializeOwned>(
        &self,
        index: Option<&str>,
        pk: &str,
        opts: QueryOpts<'_>,
    ) -> Result<Page<T>, StoreError> {
        let page = self.query_lenient::<T>(index, pk, opts).await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(Readable::into_result)
                .collect::<Result<_, _>>()?,
            cursor: page.cursor,
        })
    }

    /// Queries one partition like [`Table::query`], keeping items that do not convert
    /// as [`Readable::Unreadable`] so a listing can skip them and say which.
    pub async fn query_lenient<T: DeserializeOwned>(
        &self,
        index: Option<&str>,
        pk: &str,
        opts: QueryOpts<'_>,
    ) -> Result<Page<Readable<T>>, StoreError> {
        let (_, sk_attr) = index_keys(index)?;
        let (items, last) = self.query_raw(index, pk, opts).await?;
        let items = items
            .into_iter()
            .map(|i| Readable::read(i, sk_attr))
            .collect::<Vec<Readable<T>>>();
        let cursor = last.map(|k| encode_cursor(&k)).transpose()?;
        Ok(Page { items, cursor })
    }

    /// One page of the same query over several partitions (the shards of one family),
    /// every unfinished shard read side by side from its own position and the answers
    /// joined without merging: for a reader that needs every item once and no order
    /// across shards (a push pass). Each shard is asked for its share of the page, so
    /// nothing is read twice (a merged round reads about twice what it returns) and a
    /// page's writes spread over the shards like the records do. Up to about `want`
    /// items, and where the next page starts (None when every shard is done).
    pub async fn walk_shards(
        &self,
        index: Option<&str>,
        pks: &[String],
        range: SkRange<'_>,
        from: Option<ShardPositions>,
        want: usize,
    ) -> Result<(Vec<Item>, Option<ShardPositions>), StoreError> {
        let (_, sk_attr) = index_keys(index)?;
        let sk = |item: &Item| item.get(sk_attr).and_then(|v| v.as_s().ok()).cloned();
        let at = from.unwrap_or_else(|| ShardPositions(vec![Some(String::new()); pks.len()]));
        if at.0.len() != pks.len() {
            return Err(StoreError::BadCursor);
        }
        // Per shard: what it gave, where it stands (None: done).
        let mut got: Vec<Vec<Item>> = vec![Vec::new(); pks.len()];
        let mut position = at.0.clone();
        // Round one asks every open shard for its share; a shard that ran out leaves
        // the page short, and the shards that answered in full are asked for the rest
        // (a push sends full batches: a page left short near the end of a pass left a
        // tail of a few records after it, too few for a bulk job). A round that does
        // not fill the page had a shard run out, so the page is full (or every shard
        // done) within one round more than there are shards.
        let mut asking: Vec<usize> = (0..pks.len()).filter(|&i| position[i].is_some()).collect();
        for _ in 0..=pks.len() {
            let total: usize = got.iter().map(Vec::len).sum();
            if asking.is_empty() || total >= want {
                break;
            }
            let share = i32::try_from((want - total).div_ceil(asking.len()))
                .unwrap_or(1000)
                .clamp(1, 1000);
            let reads = asking.iter().map(|&i| {
                let after = position[i].clone().unwrap_or_default();
                async move {
                    let (items, last) = self
                        .shard_after(index, &pks[i], range, &after, share, None)
                        .await?;
                    Ok::<_, StoreError>((i, items, last.as_ref().and_then(&sk)))
                }
            });
            let answers = futures::future::try_join_all(reads).await?;
            asking.clear();
            for (i, items, last) in answers {
                // A shard that filled its share may have more.
                if last.is_some() && items.len() == share as usize {
                    asking.push(i);
                }
                position[i] = last;
                got[i].extend(items);
            }
        }
        // Exactly `want` when there is more: the fullest shards give back their last
        // items, their positions moved back to match.
        let mut total: usize = got.iter().map(Vec::len).sum();
        while total > want {
            let Some(i) = (0..got.len()).max_by_key(|&i| got[i].len()) else {
                break;
            };
            got[i].pop();
            total -= 1;
            position[i] = match got[i].last() {
                Some(item) => sk(item),
                None => at.0[i].clone(),
            };
        }
        let items = got.into_iter().flatten().collect();
        let next = ShardPositions(position);
        Ok((items, next.0.iter().any(Option::is_some).then_some(next)))
    }

    /// Up to `limit` items of one shard's partition in `range` after `after` (empty:
    /// from the start) that pass `filter`, and its last evaluated key.
    async fn shard_after(
        &self,
        index: Option<&str>,
        pk: &str,
        range: SkRange<'_>,
        after: &str,
        limit: i32,
        filter: Option<&str>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let (low, high);
        let mut opts = QueryOpts {
            limit: Some(limit),
            filter: filter.map(|f| (f, Vec::new())),
            ..Default::default()
        };
        match (range, (!after.is_empty()).then_some(after)) {
            (SkRange::Prefix(p), None) => opts.prefix = Some(p),
            (SkRange::Prefix(p), Some(a)) => {
                // Keys of the prefix after `a`: those of the prefix sort below it
                // followed by the highest character.
                low = format!("{a}\u{0}");
                high = format!("{p}\u{10FFFF}");
                if low > high {
                    return Ok((Vec::new(), None));
                }
                opts.between = Some((low.as_str(), high.as_str()));
            }
            (SkRange::From(f), None) => opts.between = Some((f, "\u{10FFFF}")),
            (_, Some(a)) => opts.after = Some(a),
            (SkRange::All, None) => {}
        }
        self.query_raw(index, pk, opts).await
    }

    /// One round of the same query over several partitions (the shards of one
    /// family) whose sort keys share one order, merged: up to `want` items in sort-key
    /// order after `after`, and where the next round starts (None when every shard is
    /// done). Items past what some unfinished shard has answered are left for the next
    /// round, so nothing is skipped or repeated; a round may hold fewer than `want`.
    pub async fn query_shards(
        &self,
        index: Option<&str>,
        pks: &[String],
        range: SkRange<'_>,
        after: Option<&str>,
        want: usize,
        filter: Option<&str>,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        let (_, sk_attr) = index_keys(index)?;
        let per_shard = (want.div_ceil(pks.len().max(1)) * 2 + 2).min(1000) as i32;
        let after = after.unwrap_or_default();
        let rounds = pks
            .iter()
            .map(|pk| self.shard_after(index, pk, range, after, per_shard, filter));
        let answers = futures::future::try_join_all(rounds).await?;
        // Only keys up to the lowest point an unfinished shard reached are complete.
        let sk = |item: &Item| item.get(sk_attr).and_then(|v| v.as_s().ok()).cloned();
        let boundary = answers
            .iter()
            .filter_map(|(_, last)| last.as_ref().and_then(&sk))
            .min();
        let mut items: Vec<(String, Item)> = answers
            .into_iter()
            .flat_map(|(items, _)| items)
            .filter_map(|i| sk(&i).map(|k| (k, i)))
            .filter(|(k, _)| boundary.as_ref().is_none_or(|b| k <= b))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let next = if items.len() > want {
            items.truncate(want);
            items.last().map(|(k, _)| k.clone())
        } else {
            boundary
        };
        Ok((items.into_iter().map(|(_, i)| i).collect(), next))
    }

    /// A query's items as DynamoDB answered them, and its last evaluated key.
    async fn query_raw(
        &self,
        index: Option<&str>,
        pk: &str,
        opts: QueryOpts<'_>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let (pk_attr, sk_attr) = index_keys(index)?;
        let mut condition = "#pk = :pk".to_owned();
        let mut req = self
            .client
            .query()
            .table_name(&self.name)
            .set_index_name(index.map(str::to_owned))
            .expression_attribute_names("#pk", pk_attr)
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
            .scan_index_forward(!opts.descending)
            .set_limit(opts.limit)
            .consistent_read(opts.consistent && index.is_none());
        if let Some(prefix) = opts.prefix {
            condition.push_str(" AND begins_with(#sk, :prefix)");
            req = req
                .expression_attribute_names("#sk", sk_attr)
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned()));
        } else if let Some((from, to)) = opts.between {
            condition.push_str(" AND #sk BETWEEN :from AND :to");
            req = req
                .expression_attribute_names("#sk", sk_attr)
                .expression_attribute_values(":from", AttributeValue::S(from.to_owned()))
                .expression_attribute_values(":to", AttributeValue::S(to.to_owned()));
        } else if let Some(after) = opts.after {
            condition.push_str(" AND #sk > :after");
            req = req
                .expression_attribute_names("#sk", sk_attr)
                .expression_attribute_values(":after", AttributeValue::S(after.to_owned()));
        }
        if let Some((expr, values)) = opts.filter {
            req = req.filter_expression(expr);
            for (name, value) in values {
                req = req.expression_attribute_values(name, value.into());
            }
        }
        if let Some(cursor) = opts.cursor {
            let start = decode_cursor(cursor)?;
            check_start(
                &start,
                index.map(|_| (pk_attr, sk_attr)),
                pk,
                (opts.prefix, opts.between),
            )?;
            req = req.set_exclusive_start_key(Some(start));
        }
        let out = Box::pin(req
            .key_condition_expression(condition)
            .send())
            .await
            .map_err(|e| {
                // A start key DynamoDB refuses that the check above let through is
                // still the client's cursor, not our failure.
                use aws_sdk_dynamodb::error::ProvideErrorMetadata;
                let bad_start = opts.cursor.is_some()
                    && e.code() == Some("ValidationException")
                    && e.message()
                        .is_some_and(|m| m.to_ascii_lowercase().contains("start"));
                if bad_start {
                    tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "query start key refused");
                    StoreError::BadCursor
                } else {
                    service(e)
                }
            })?;
        Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
    }

    /// Reads up to 100 items by key in one round (more are read in rounds of 100);
    /// absent items are simply missing from the answer. Eventually consistent unless
    /// `consistent`.
    pub async fn batch_get<T: DeserializeOwned>(
        &self,
        keys: &[(String, String)],
        consistent: bool,
    ) -> Result<Vec<T>, StoreError> {
        self.batch_get_raw(keys, consistent)
            .await?
            .into_iter()
            .map(|item| serde_dynamo::from_item(item).map_err(conversion))
            .collect()
    }

    /// [`Table::batch_get`], the items as DynamoDB answered them.
    pub async fn batch_get_raw(
        &self,
        keys: &[(String, String)],
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let mut out = Vec::with_capacity(keys.len());
        let mut unique: Vec<&(String, String)> = keys.iter().collect();
        unique.sort();
        unique.dedup();
        for chunk in unique.chunks(100) {
            let mut pending: Vec<HashMap<String, AttributeValue>> =
                chunk.iter().map(|(pk, sk)| Self::key(pk, sk)).collect();
            let mut rounds = 0u32;
            while !pending.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(consistent)
                    .build()
                    .map_err(conversion)?;
                let resp = Box::pin(
                    self.client
                        .batch_get_item()
                        .request_items(&self.name, request)
                        .send(),
                )
                .await
                .map_err(service)?;
                for item in resp
                    .responses
                    .and_then(|mut r| r.remove(&self.name))
                    .unwrap_or_default()
                {
                    out.push(item);
                }
                pending = resp
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.name))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if !pending.is_empty() {
                    back_off(&mut rounds, "batch read").await?;
                }
            }
        }
        Ok(out)
    }

    /// Writes and deletes items in rounds of 25, unconditionally (callers use it where
    /// a blind write is safe: items nobody else writes, or content-addressed ones).
    pub async fn batch_write(
        &self,
        puts: Vec<HashMap<String, AttributeValue>>,
        deletes: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};
        let mut requests = Vec::with_capacity(puts.len() + deletes.len());
        for item in puts {
            requests.push(
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .map_err(conversion)?,
                    )
                    .build(),
            );
        }
        for (pk, sk) in deletes {
            requests.push(
                WriteRequest::builder()
                    .delete_request(
                        DeleteRequest::builder()
                            .set_key(Some(Self::key(&pk, &sk)))
                            .build()
                            .map_err(conversion)?,
                    )
                    .build(),
            );
        }
        // Rounds of 25 go out a few at a time (DynamoDB's own advice for bulk writes);
        // each round retries its unprocessed items with backoff.
        let mut rounds: Vec<Vec<WriteRequest>> = Vec::new();
        while !requests.is_empty() {
            let rest = requests.split_off(requests.len().min(25));
            rounds.push(std::mem::replace(&mut requests, rest));
        }
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(rounds.into_iter().map(|round| self.write_round(round)))
            .buffer_unordered(BATCH_WRITES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// One BatchWriteItem round, its unprocessed items retried with backoff.
    async fn write_round(
        &self,
        mut pending: Vec<aws_sdk_dynamodb::types::WriteRequest>,
    ) -> Result<(), StoreError> {
        let mut rounds = 0u32;
        while !pending.is_empty() {
            let resp = Box::pin(
                self.client
                    .batch_write_item()
                    .request_items(&self.name, pending)
                    .send(),
            )
            .await
            .map_err(service)?;
            pending = resp
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.name))
                .unwrap_or_default();
            if !pending.is_empty() {
                back_off(&mut rounds, "batch write").await?;
            }
        }
        Ok(())
    }

    /// Every item of a partition matching `prefix`, following pages.
    pub async fn query_all<T: DeserializeOwned>(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<T>, StoreError> {
        self.query_all_lenient::<T>(pk, prefix)
            .await?
            .into_iter()
            .map(Readable::into_result)
            .collect()
    }

    /// Every item of a partition matching `prefix`, following pages, keeping the
    /// ones that do not convert as [`Readable::Unreadable`].
    pub async fn query_all_lenient<T: DeserializeOwned>(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<Readable<T>>, StoreError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .query_lenient::<T>(
                    None,
                    pk,
                    QueryOpts {
                        // DynamoDB refuses `begins_with(sk, "")`: no prefix is all.
                        prefix: (!prefix.is_empty()).then_some(prefix),
                        cursor: cursor.as_deref(),
                        ..Default::default()
                    },
                )
                .await?;
            all.extend(page.items);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(all),
            }
        }
    }
}

/// Where a walk over shards ([`Table::walk_shards`]) stands, per shard: the sort key
/// it continues after (empty: from the start), or None when the shard is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPositions(pub Vec<Option<String>>);

impl ShardPositions {
    /// As a cursor: base64url of the JSON list of positions.
    pub fn encode(&self) -> String {
        encode_after(&serde_json::to_string(&self.0).unwrap_or_default())
    }

    /// A cursor [`ShardPositions::encode`] made; anything else is [`StoreError::BadCursor`].
    pub fn decode(cursor: &str) -> Result<Self, StoreError> {
        let plain = decode_after(cursor)?;
        serde_json::from_str(&plain)
            .map(Self)
            .map_err(|_| StoreError::BadCursor)
    }
}

/// Which sort keys a sharded query reads.
#[derive(Debug, Clone, Copy)]
pub enum SkRange<'a> {
    /// Every key.
    All,
    /// Keys starting with this.
    Prefix(&'a str),
    /// Keys from this one on (inclusive).
    From(&'a str),
}

/// The key attributes of the table (None) or of an index.
fn index_keys(index: Option<&str>) -> Result<(&'static str, &'static str), StoreError> {
    Ok(match index {
        None => ("pk", "sk"),
        Some("gsi1") => ("gsi1pk", "gsi1sk"),
        Some("gsi2") => ("gsi2pk", "gsi2sk"),
        Some("gsi3") => ("gsi3pk", "gsi3sk"),
        Some(other) => return Err(StoreError::Conversion(format!("unknown index {other}"))),
    })
}

/// A failed condition as [`StoreError::ConditionFailed`]; any other failure as a service error.
pub(crate) fn condition_or<E, R>(e: aws_sdk_dynamodb::error::SdkError<E, R>) -> StoreError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    if e.as_service_error().and_then(|se| se.code()) == Some("ConditionalCheckFailedException") {
        StoreError::ConditionFailed
    } else {
        service(e)
    }
}

/// The cursor of a merged listing: the last sort key it answered, base64url.
pub fn encode_after(after: &str) -> String {
    B64URL.encode(after.as_bytes())
}

/// The sort key a merged listing's cursor continues after.
pub fn decode_after(cursor: &str) -> Result<String, StoreError> {
    if cursor.is_empty() || cursor.len() > 2048 {
        return Err(StoreError::BadCursor);
    }
    let bytes = B64URL.decode(cursor).map_err(|_| StoreError::BadCursor)?;
    String::from_utf8(bytes).map_err(|_| StoreError::BadCursor)
}

/// Cursors are the last evaluated key's string attributes, as base64url JSON.
fn encode_cursor(key: &HashMap<String, AttributeValue>) -> Result<String, StoreError> {
    let plain: std::collections::BTreeMap<&str, &str> = key
        .iter()
        .filter_map(|(k, v)| v.as_s().ok().map(|s| (k.as_str(), s.as_str())))
        .collect();
    let json = serde_json::to_vec(&plain).map_err(conversion)?;
    Ok(B64URL.encode(json))
}

/// Whether a decoded cursor is a start key DynamoDB takes for this query: exactly the
/// table's key attributes and, on an index, the index's; in the queried partition; and
/// a sort key inside the query's key condition. moto is laxer than DynamoDB here, so a
/// cursor that passes locally but fails in production is refused the same way in both.
fn check_start(
    start: &HashMap<String, AttributeValue>,
    index: Option<(&str, &str)>,
    pk: &str,
    (prefix, between): (Option<&str>, Option<(&str, &str)>),
) -> Result<(), StoreError> {
    let s = |name: &str| {
        start
            .get(name)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
    };
    let mut expected = vec!["pk", "sk"];
    let (pk_attr, sk_attr) = match index {
        Some((p, k)) => {
            expected.extend([p, k]);
            (p, k)
        }
        None => ("pk", "sk"),
    };
    let exact = start.len() == expected.len() && expected.iter().all(|a| s(a).is_some());
    let sk = s(sk_attr).unwrap_or_default();
    let in_range = match (prefix, between) {
        (Some(prefix), _) => sk.starts_with(prefix),
        (None, Some((from, to))) => (from..=to).contains(&sk),
        (None, None) => true,
    };
    if exact && s(pk_attr) == Some(pk) && in_range {
        Ok(())
    } else {
        Err(StoreError::BadCursor)
    }
}

fn decode_cursor(cursor: &str) -> Result<HashMap<String, AttributeValue>, StoreError> {
    if cursor.len() > 2048 {
        return Err(StoreError::BadCursor);
    }
    let json = B64URL.decode(cursor).map_err(|_| StoreError::BadCursor)?;
    let plain: HashMap<String, String> =
        serde_json::from_slice(&json).map_err(|_| StoreError::BadCursor)?;
    const KEY_ATTRS: [&str; 8] = [
        "pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "gsi3pk", "gsi3sk",
    ];
    if plain.is_empty() || plain.keys().any(|k| !KEY_ATTRS.contains(&k.as_str())) {
        return Err(StoreError::BadCursor);
    }
    Ok(plain
        .into_iter()
        .map(|(k, v)| (k, AttributeValue::S(v)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_errors_never_quote_stored_values() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Item {
            n: u64,
            kind: Kind,
        }
        #[derive(Debug, Deserialize)]
        enum Kind {
            A,
        }
        let item = |n: AttributeValue, kind: &str| {
            HashMap::from([
                ("n".to_owned(), n),
                ("kind".to_owned(), AttributeValue::S(kind.to_owned())),
            ])
        };
        for bad in [
            item(AttributeValue::S("hunter2-secret".into()), "A"),
            item(AttributeValue::N("1".into()), "hunter2-secret"),
        ] {
            let Readable::<Item>::Unreadable { error, .. } = Readable::read(bad, "sk") else {
                panic!("must not convert");
            };
            assert!(!error.contains("hunter2"), "{error}");
            assert!(error.contains("expected"), "{error}");
        }
    }

    #[test]
    fn cursors_must_be_start_keys_of_the_query() {
        let key = |pairs: &[(&str, &str)]| -> HashMap<String, AttributeValue> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), AttributeValue::S((*v).to_owned())))
                .collect()
        };
        let all = (None, None);
        let table = key(&[("pk", "T#a"), ("sk", "x#1")]);
        assert!(check_start(&table, None, "T#a", all).is_ok());
        // The sort key removed, another partition, extra attributes: refused.
        assert!(check_start(&key(&[("pk", "T#a")]), None, "T#a", all).is_err());
        assert!(check_start(&table, None, "T#b", all).is_err());
        let extra = key(&[("pk", "T#a"), ("sk", "x#1"), ("gsi1pk", "T#a")]);
        assert!(check_start(&extra, None, "T#a", all).is_err());
        // An index needs its own keys and the table's.
        let gsi = Some(("gsi1pk", "gsi1sk"));
        let on_index = key(&[("pk", "R"), ("sk", "1"), ("gsi1pk", "F#a"), ("gsi1sk", "5")]);
        assert!(check_start(&on_index, gsi, "F#a", all).is_ok());
        assert!(check_start(&table, gsi, "T#a", all).is_err());
        let no_table_sk = key(&[("pk", "R"), ("gsi1pk", "F#a"), ("gsi1sk", "5")]);
        assert!(check_start(&no_table_sk, gsi, "F#a", all).is_err());
        // Outside the key condition.
        let prefix = (Some("x#"), None);
        assert!(check_start(&table, None, "T#a", prefix).is_ok());
        let other = key(&[("pk", "T#a"), ("sk", "y#1")]);
        assert!(check_start(&other, None, "T#a", prefix).is_err());
        let between = (None, Some(("3", "~")));
        assert!(check_start(&on_index, gsi, "F#a", between).is_ok());
        let before = key(&[("pk", "R"), ("sk", "1"), ("gsi1pk", "F#a"), ("gsi1sk", "2")]);
        assert!(check_start(&before, gsi, "F#a", between).is_err());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let key = HashMap::from([
            ("pk".to_owned(), AttributeValue::S("T#a".into())),
            ("sk".to_owned(), AttributeValue::S("CONN#x".into())),
        ]);
        let c = encode_cursor(&key).unwrap();
        assert_eq!(decode_cursor(&c).unwrap(), key);
        assert!(decode_cursor("!!!").is_err());
        assert!(decode_cursor(&B64URL.encode(br#"{"evil":"x"}"#)).is_err());
        assert!(decode_cursor(&"A".repeat(5000)).is_err());
    }

    #[test]
    fn keyed_items_flatten_into_one_map() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Thing {
            name: String,
            version: u64,
        }
        let k = Keyed {
            pk: "T#a".into(),
            sk: "X#1".into(),
            item: Thing {
                name: "n".into(),
                version: 3,
            },
        };
        let item = to_item(&k).unwrap();
        assert_eq!(item["pk"].as_s().unwrap(), "T#a");
        assert_eq!(item["version"].as_n().unwrap(), "3");
        let back: Keyed<Thing> = serde_dynamo::from_item(item).unwrap();
        assert_eq!(back.item, k.item);
    }
}
