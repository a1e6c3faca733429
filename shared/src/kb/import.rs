//! One import of a knowledge-base source into a tenant's documents, from a checkpoint
//! to a deadline: what a worker runs, message after message, until the source is done.
//! The source is any [`Source`] (Zendesk, Freshdesk, Salesforce Knowledge, Dynamics 365,
//! a Custom API), read page by page from its own cursor.
//!
//! - **Incremental** (the usual run): the source's changes since the last run's end
//!   (the cursor that run ended with: Zendesk's export `end_time`, Salesforce's last
//!   publish date…). Each article is cleaned and hashed; unchanged ones (same hash) are
//!   skipped without a write; new and changed ones are stored (a new version, conditional
//!   on the one read); drafts are stored unpublished. What the source reports gone
//!   (archived, unpublished for good) is deleted.
//! - **Full**: the whole source from the start, then a sweep: every document of the
//!   integration not seen by this run is deleted — the only way to notice an article
//!   removed at a source that reports no deletions. Unchanged documents seen by such a
//!   run are marked with its id (one small write each), so the sweep can tell. A source
//!   with no changes-since listing (Freshdesk) lists everything every time, so each of
//!   its runs is read and swept this way.
//! - The checkpoint (the source's cursor, the sweep's cursor, the counts so far) is
//!   returned whenever the deadline comes first; a run resumed from it neither repeats
//!   an article's write nor misses one (the cursor moves only after a page's documents
//!   are stored, and storing the same content again is a no-op). A step that crashed
//!   after storing documents but before its checkpoint is redone from the last one:
//!   what it stored is found unchanged but marked as written by this run, so it is
//!   still counted and announced as the run's change, once.

use std::time::Instant;

use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::document::{DocumentId, from_article, id_of};
use super::source::{Cursor, Source, SourceError};
use crate::domain::{IntegrationId, TenantId};
use crate::store::StoreError;
use crate::store::kb::{Filter, KbDocuments};

/// What kind of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Changes since the last run.
    Incremental,
    /// Everything, then a sweep of what the source no longer has.
    Full,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Reading the source's articles.
    Articles,
    /// Deleting what a full run did not see.
    Sweep,
    /// Finished.
    Done,
}

/// What a run did so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Articles (translations) read from the source.
    pub seen: u64,
    /// New documents.
    pub created: u64,
    /// Changed documents.
    pub updated: u64,
    /// Skipped: the same content as stored.
    pub unchanged: u64,
    /// Stored unpublished (drafts).
    pub unpublished: u64,
    /// Deleted: reported gone by the source, or not seen by a run that sweeps.
    pub deleted: u64,
}

/// A run's state between invocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The run's id (full runs mark what they saw with it).
    pub run_id: String,
    /// Full or incremental.
    pub mode: Mode,
    /// Where the run stands.
    pub phase: Phase,
    /// The source's cursor: where its listing goes on from (at the end of the run,
    /// where the next incremental run starts).
    pub cursor: Cursor,
    /// The sweep's position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_cursor: Option<String>,
    /// What the run did so far.
    pub counts: Counts,
}

impl Checkpoint {
    /// A new run from `cursor` (the source's [`Source::start`]).
    pub fn start(run_id: impl Into<String>, mode: Mode, cursor: Cursor) -> Self {
        Self {
            run_id: run_id.into(),
            mode,
            phase: Phase::Articles,
            cursor,
            sweep_cursor: None,
            counts: Counts::default(),
        }
    }
}

/// Why a run stopped short.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The source failed (see [`SourceError::Later`] for what to retry).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one invocation did: the checkpoint to resume from (its phase `Done` when the
/// run is over) and the documents it changed.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Where the run stands now.
    pub checkpoint: Checkpoint,
    /// Documents created or changed (published or not) by this invocation.
    pub changed: Vec<DocumentId>,
    /// Documents deleted by this invocation.
    pub deleted: Vec<DocumentId>,
    /// The source asked to slow down (or was unavailable): go on after this wait,
    /// from `checkpoint` (the pages before it are stored and counted).
    pub wait: Option<std::time::Duration>,
}

/// Documents swept per page.
const SWEEP_PAGE: usize = 200;
/// A page's document writes under way at once.
const WRITES_AT_ONCE: usize = 8;

/// One document write of a page.
enum Write {
    /// Mark an unchanged document seen by this run.
    Seen(Box<super::document::Document>),
    /// Store a new version (over the one read, if any).
    Save(
        Box<(
            super::document::Document,
            super::document::Body,
            Option<super::document::Document>,
        )>,
    ),
}

/// Runs the import of `integration` from `source` from `checkpoint` until it is done
/// or `deadline` passes (checked between pages).
pub async fn run<S: Source>(
    store: &KbDocuments,
    source: &mut S,
    tenant: &TenantId,
    integration: &IntegrationId,
    mut checkpoint: Checkpoint,
    deadline: Instant,
) -> Result<Progress, ImportError> {
    let mut changed = Vec::new();
    let mut deleted = Vec::new();
    let mut wait = None;
    let sweeps = checkpoint.mode == Mode::Full || source.lists_everything();
    if checkpoint.phase == Phase::Articles {
        match source.prepare().await {
            Ok(()) => {}
            Err(SourceError::Later { wait }) => {
                return Ok(Progress {
                    checkpoint,
                    changed,
                    deleted,
                    wait: Some(wait),
                });
            }
            Err(e) => return Err(e.into()),
        }
        while Instant::now() < deadline {
            let page = match source.page(&checkpoint.cursor).await {
                Ok(p) => p,
                Err(SourceError::Later { wait: w }) => {
                    wait = Some(w);
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            let now = OffsetDateTime::now_utc();
            let provider = source.provider();
            let cleaned: Vec<_> = page
                .articles
                .iter()
                .map(|a| from_article(tenant, integration, provider, a, now))
                .collect();
            // The page's stored versions in a few batch reads rather than one read each.
            let mut ids: Vec<DocumentId> = cleaned.iter().map(|(d, _)| d.id.clone()).collect();
            let gone: Vec<DocumentId> = page
                .gone
                .iter()
                .map(|g| id_of(integration, &g.external_id, g.locale.as_deref()))
                .collect();
            ids.extend(gone.iter().cloned());
            let mut stored = store.get_many(tenant, &ids).await?;
            // Each document's write is decided first, then the page's writes go out a
            // few at a time (distinct documents: their order does not matter).
            let mut writes = Vec::new();
            for (mut doc, body) in cleaned {
                checkpoint.counts.seen += 1;
                if sweeps {
                    doc.seen_run = Some(checkpoint.run_id.clone());
                }
                doc.written_run = Some(checkpoint.run_id.clone());
                match stored.remove(&doc.id) {
                    // Stored by this run, in a step that crashed before its checkpoint:
                    // still this run's change (the completed event must list it).
                    Some(prev)
                        if prev.hash == doc.hash
                            && prev.written_run.as_deref() == Some(&checkpoint.run_id) =>
                    {
                        if prev.version == 1 {
                            checkpoint.counts.created += 1;
                        } else {
                            checkpoint.counts.updated += 1;
                        }
                        checkpoint.counts.unpublished += u64::from(!prev.published);
                        changed.push(prev.id);
                    }
                    Some(prev) if prev.hash == doc.hash => {
                        checkpoint.counts.unchanged += 1;
                        if sweeps && prev.seen_run.as_deref() != Some(&checkpoint.run_id) {
                            writes.push(Write::Seen(Box::new(prev)));
                        }
                    }
                    Some(prev) => {
                        doc.version = prev.version + 1;
                        checkpoint.counts.updated += 1;
                        checkpoint.counts.unpublished += u64::from(!doc.published);
                        changed.push(doc.id.clone());
                        writes.push(Write::Save(Box::new((doc, body, Some(prev)))));
                    }
                    None => {
                        checkpoint.counts.created += 1;
                        checkpoint.counts.unpublished += u64::from(!doc.published);
                        changed.push(doc.id.clone());
                        writes.push(Write::Save(Box::new((doc, body, None))));
                    }
                }
            }
            let run_id = checkpoint.run_id.as_str();
            futures::stream::iter(writes)
                .map(|w| async move {
                    match w {
                        Write::Seen(prev) => store.mark_seen(&prev, run_id).await,
                        Write::Save(save) => {
                            let (doc, body, prev) = *save;
                            store.save(&doc, &body, prev.as_ref()).await
                        }
                    }
                })
                .buffer_unordered(WRITES_AT_ONCE)
                .try_collect::<Vec<()>>()
                .await?;
            // What the source reports gone (and this page did not store again).
            for id in gone {
                if let Some(prev) = stored.remove(&id) {
                    store.delete(&prev).await?;
                    checkpoint.counts.deleted += 1;
                    deleted.push(id);
                }
            }
            checkpoint.cursor = page.next;
            if page.last {
                checkpoint.phase = if sweeps { Phase::Sweep } else { Phase::Done };
                break;
            }
        }
    }
    while wait.is_none() && checkpoint.phase == Phase::Sweep && Instant::now() < deadline {
        let filter = Filter {
            integration: Some(integration.clone()),
            ..Filter::default()
        };
        let page = store
            .page(
                tenant,
                SWEEP_PAGE,
                checkpoint.sweep_cursor.as_deref(),
                &filter,
            )
            .await?;
        for d in page.documents {
            if d.seen_run.as_deref() != Some(&checkpoint.run_id) {
                store.delete(&d).await?;
                checkpoint.counts.deleted += 1;
                deleted.push(d.id);
            }
        }
        match page.cursor {
            Some(c) => checkpoint.sweep_cursor = Some(c),
            None => checkpoint.phase = Phase::Done,
        }
    }
    Ok(Progress {
        checkpoint,
        changed,
        deleted,
        wait,
    })
}
