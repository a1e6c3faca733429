//! Knowledge-base documents, as items.
//!
//! | item           | pk                                          | sk      |
//! |----------------|---------------------------------------------|---------|
//! | document       | `KBDOC#{tenant}#{shard(id)}`                | `{id}`  |
//! | body chunk     | `KBBODY#{tenant}#{id}#{hash}#{n:04}`        | `BODY`  |
//!
//! A document's metadata is one small item, spread over [`keys::RECORD_SHARDS`]
//! partitions like records (an import writes at its source's full rate). Its body —
//! sanitized HTML and Markdown, as one JSON text — is stored apart, cut into chunks of
//! at most [`CHUNK_BYTES`] (DynamoDB refuses items over 400 KB, and help-centre articles
//! with embedded tables pass that), each chunk in a partition of its own: a partition
//! takes at most 1,000 write units a second, and one 900 KB article is 900 of them —
//! two versions of it in one partition within a second would be throttled (the local
//! stack enforces that limit as DynamoDB does). The metadata names the content hash
//! and the chunk count, so a body is one batch read of known keys.
//!
//! A new version's chunks are written first, then the metadata that names them
//! (conditional on the version read), then the previous version's chunks are deleted:
//! a reader never sees metadata whose chunks are missing. A worker stopped between the
//! first and second write leaves chunks nothing names; its rerun writes the same keys
//! again (same content, same hash) and goes on — only content that changed between the
//! stop and the rerun leaves orphans behind (a few, never read, counted by nothing).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Keyed, Readable, SkRange, Skipped, StoreError, Table, Write, keys, to_item};
use crate::domain::{IntegrationId, TenantId};
use crate::kb::document::{Body, Document, DocumentId};
use crate::kb::run::SourceStatus;

/// The largest chunk of a body's JSON text (bytes): well under DynamoDB's 400 KB item
/// limit with the keys and attribute names.
pub const CHUNK_BYTES: usize = 350_000;

fn shards(tenant: &TenantId) -> Vec<String> {
    (0..keys::RECORD_SHARDS)
        .map(|s| keys::kb_documents(tenant, s))
        .collect()
}

fn keyed(d: &Document) -> Keyed<&Document> {
    Keyed {
        pk: keys::kb_documents(&d.tenant, keys::shard_of(d.id.as_str())),
        sk: d.id.to_string(),
        item: d,
    }
}

/// One chunk of a body.
#[derive(Serialize, Deserialize)]
struct Chunk {
    pk: String,
    sk: String,
    part: String,
}

/// The keys of a document version's chunks.
fn chunk_keys(
    tenant: &TenantId,
    id: &DocumentId,
    hash: &str,
    chunks: u32,
) -> Vec<(String, String)> {
    (0..chunks.max(1))
        .map(|n| {
            (
                keys::kb_body(tenant, id, hash, n),
                keys::KB_BODY_SK.to_owned(),
            )
        })
        .collect()
}

/// What a listing keeps.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this integration's documents.
    pub integration: Option<IntegrationId>,
    /// Only this source's (`zendesk`…).
    pub source: Option<String>,
    /// Only this locale.
    pub locale: Option<String>,
    /// Only documents the source changed at or after this.
    pub updated_since: Option<OffsetDateTime>,
    /// Only titles holding this text (case-insensitive).
    pub title: Option<String>,
}

impl Filter {
    fn keeps(&self, d: &Document) -> bool {
        self.integration
            .as_ref()
            .is_none_or(|i| d.integration_id == *i)
            && self.source.as_ref().is_none_or(|s| d.source == *s)
            && self.locale.as_ref().is_none_or(|l| {
                d.locale
                    .as_deref()
                    .is_some_and(|dl| dl.eq_ignore_ascii_case(l))
            })
            && self
                .updated_since
                .is_none_or(|t| d.updated_at.is_some_and(|u| u >= t))
            && self
                .title
                .as_ref()
                .is_none_or(|q| d.title.to_lowercase().contains(&q.to_lowercase()))
    }
}

/// A page of documents.
#[derive(Debug, Clone)]
pub struct DocumentPage {
    /// The documents (no order across shards).
    pub documents: Vec<Document>,
    /// Where the next page starts.
    pub cursor: Option<String>,
    /// Items left out because they do not convert.
    pub skipped: Vec<Skipped>,
}

/// Cuts `text` into pieces of at most `max` bytes, at character boundaries.
pub(crate) fn cut(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::with_capacity(text.len() / max + 1);
    let mut rest = text;
    while !rest.is_empty() {
        let mut at = rest.len().min(max);
        while !rest.is_char_boundary(at) {
            at -= 1;
        }
        let (head, tail) = rest.split_at(at);
        out.push(head);
        rest = tail;
    }
    out
}

/// The document store.
#[derive(Clone, Debug)]
pub struct KbDocuments {
    table: Table,
}

impl KbDocuments {
    /// Documents in `table`.
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// One document's metadata.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &DocumentId,
    ) -> Result<Option<Document>, StoreError> {
        let item: Option<Keyed<Document>> = self
            .table
            .get(
                &keys::kb_documents(tenant, keys::shard_of(id.as_str())),
                id.as_str(),
            )
            .await?;
        Ok(item
            .map(|k| k.item)
            .filter(|d| d.tenant == *tenant && d.id == *id))
    }

    /// Several documents' metadata at once (strongly consistent; 100 keys a request),
    /// by id; ids not stored are absent.
    pub async fn get_many(
        &self,
        tenant: &TenantId,
        ids: &[DocumentId],
    ) -> Result<std::collections::HashMap<DocumentId, Document>, StoreError> {
        let wanted: Vec<(String, String)> = ids
            .iter()
            .map(|id| {
                (
                    keys::kb_documents(tenant, keys::shard_of(id.as_str())),
                    id.to_string(),
                )
            })
            .collect();
        let items = self.table.batch_get_raw(&wanted, true).await?;
        let mut out = std::collections::HashMap::with_capacity(items.len());
        for item in items {
            match Readable::<Keyed<Document>>::read(item, "sk") {
                Readable::Item(k) if k.item.tenant == *tenant => {
                    out.insert(k.item.id.clone(), k.item);
                }
                Readable::Item(k) => {
                    tracing::warn!(key = %k.sk, "a document names another tenant than its key");
                }
                Readable::Unreadable { sk, error } => {
                    tracing::warn!(key = %sk, error = %error, "a document does not convert");
                }
            }
        }
        Ok(out)
    }

    /// A document's body (None when its chunks are missing or do not join up).
    pub async fn body(&self, d: &Document) -> Result<Option<Body>, StoreError> {
        let wanted = chunk_keys(&d.tenant, &d.id, &d.hash, d.chunks);
        let items = self.table.batch_get_raw(&wanted, true).await?;
        let mut parts: Vec<Option<String>> = vec![None; wanted.len()];
        for item in items {
            let Ok(c) = serde_dynamo::from_item::<_, Chunk>(item) else {
                return Ok(None);
            };
            if let Some(n) = wanted.iter().position(|(pk, _)| *pk == c.pk) {
                parts[n] = Some(c.part);
            }
        }
        let mut text = String::with_capacity(usize::try_from(d.body_bytes).unwrap_or(0) + 64);
        for p in parts {
            let Some(p) = p else { return Ok(None) };
            text.push_str(&p);
        }
        Ok(serde_json::from_str(&text).ok())
    }

    /// Stores `d` with `body`: a new document when `prev` is None, else over `prev`
    /// (`ConditionFailed` if it changed since it was read). See the module
    /// documentation for the order of the writes.
    pub async fn save(
        &self,
        d: &Document,
        body: &Body,
        prev: Option<&Document>,
    ) -> Result<(), StoreError> {
        let text =
            serde_json::to_string(body).map_err(|e| StoreError::Conversion(e.to_string()))?;
        let mut parts = cut(&text, CHUNK_BYTES);
        if parts.is_empty() {
            parts.push("");
        }
        if u32::try_from(parts.len()).ok() != Some(d.chunks) {
            return Err(StoreError::Conversion(format!(
                "the document says {} chunks, its body makes {}",
                d.chunks,
                parts.len()
            )));
        }
        let chunks = parts
            .into_iter()
            .enumerate()
            .map(|(n, part)| {
                to_item(&Chunk {
                    pk: keys::kb_body(&d.tenant, &d.id, &d.hash, n as u32),
                    sk: keys::KB_BODY_SK.to_owned(),
                    part: part.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.table.batch_write(chunks, Vec::new()).await?;
        let head = to_item(&keyed(d))?;
        match prev {
            None => self.table.transact(vec![Write::Insert(head)]).await?,
            Some(p) => {
                self.table
                    .transact(vec![Write::Replace(head, p.version)])
                    .await?
            }
        }
        if let Some(p) = prev.filter(|p| p.hash != d.hash) {
            self.table
                .batch_write(Vec::new(), chunk_keys(&p.tenant, &p.id, &p.hash, p.chunks))
                .await?;
        }
        Ok(())
    }

    /// Marks `d` (the version read) as seen by full run `run`.
    pub async fn mark_seen(&self, d: &Document, run: &str) -> Result<(), StoreError> {
        let mut next = d.clone();
        next.seen_run = Some(run.to_owned());
        next.version = d.version + 1;
        self.table
            .transact(vec![Write::Replace(to_item(&keyed(&next))?, d.version)])
            .await
    }

    /// Removes a document (the version read: `ConditionFailed` if it changed) and its
    /// body.
    pub async fn delete(&self, d: &Document) -> Result<(), StoreError> {
        let (pk, sk) = {
            let k = keyed(d);
            (k.pk, k.sk)
        };
        self.table
            .transact(vec![Write::DeleteIf {
                pk,
                sk,
                condition: "version = :v",
                value: Some((":v", super::Value::num(d.version))),
            }])
            .await?;
        self.table
            .batch_write(Vec::new(), chunk_keys(&d.tenant, &d.id, &d.hash, d.chunks))
            .await
    }

    /// Up to `limit` documents of a tenant that `filter` keeps, from `cursor`.
    pub async fn page(
        &self,
        tenant: &TenantId,
        limit: usize,
        cursor: Option<&str>,
        filter: &Filter,
    ) -> Result<DocumentPage, StoreError> {
        let pks = shards(tenant);
        let mut from = cursor.map(super::ShardPositions::decode).transpose()?;
        let mut documents = Vec::with_capacity(limit);
        let mut skipped = Vec::new();
        // A filter may keep few of what a round reads: a few rounds fill the page, and
        // a short page with a cursor says there may be more.
        for _ in 0..8 {
            let want = limit - documents.len();
            let (items, next) = self
                .table
                .walk_shards(None, &pks, SkRange::All, from.take(), want)
                .await?;
            for item in items {
                match Readable::<Keyed<Document>>::read(item, "sk") {
                    Readable::Item(k) if k.item.tenant == *tenant => {
                        if filter.keeps(&k.item) {
                            documents.push(k.item);
                        }
                    }
                    Readable::Item(k) => skipped.push(Skipped {
                        id: k.sk,
                        reason: super::SkipReason::Misplaced,
                    }),
                    Readable::Unreadable { sk, error } => {
                        tracing::warn!(key = %sk, error = %error, "a document does not convert");
                        skipped.push(Skipped {
                            id: sk,
                            reason: super::SkipReason::Unreadable,
                        });
                    }
                }
            }
            from = next;
            if from.is_none() || documents.len() >= limit {
                break;
            }
        }
        Ok(DocumentPage {
            documents,
            cursor: from.map(|p| p.encode()),
            skipped,
        })
    }
}

/// Knowledge-base sources' import status, one item per integration in its tenant's
/// partition (`T#{tenant}` / `KBSRC#{integration}`), changed conditionally on the
/// version read.
#[derive(Clone, Debug)]
pub struct KbSources {
    table: Table,
}

impl KbSources {
    /// Statuses in `table`.
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// A source's status, if it ever ran.
    pub async fn get(
        &self,
        tenant: &TenantId,
        integration: &IntegrationId,
    ) -> Result<Option<SourceStatus>, StoreError> {
        let found: Option<Keyed<SourceStatus>> = self
            .table
            .get(&keys::tenant(tenant), &keys::kb_source(integration))
            .await?;
        Ok(found
            .map(|k| k.item)
            .filter(|s| s.tenant == *tenant && s.integration_id == *integration))
    }

    /// Stores `next`: new when `prev` is None, else over that version
    /// (`ConditionFailed` if it moved on).
    pub async fn save(&self, next: &SourceStatus, prev: Option<u64>) -> Result<(), StoreError> {
        let item = to_item(&Keyed {
            pk: keys::tenant(&next.tenant),
            sk: keys::kb_source(&next.integration_id),
            item: next,
        })?;
        let write = match prev {
            None => Write::Insert(item),
            Some(v) => Write::Replace(item, v),
        };
        self.table.transact(vec![write]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_cut_at_character_boundaries_and_join_up() {
        let text = "é".repeat(200_001); // 400,002 bytes of two-byte characters
        let parts = cut(&text, CHUNK_BYTES);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() <= CHUNK_BYTES));
        assert_eq!(parts.concat(), text);
        assert!(cut("", CHUNK_BYTES).is_empty());
        assert_eq!(cut("abc", 2), vec!["ab", "c"]);
    }
}
