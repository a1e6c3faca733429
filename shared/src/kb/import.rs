//! One import of a knowledge-base source into a tenant's documents, from a checkpoint
//! to a deadline: what a worker runs, message after message, until the source is done.
//!
//! - **Incremental** (the usual run): the source's changes since the last run's end
//!   (Zendesk's export from the stored `end_time`). Each article is cleaned and hashed;
//!   unchanged ones (same hash) are skipped without a write; new and changed ones are
//!   stored (a new version, conditional on the one read); drafts are stored unpublished.
//! - **Full**: the whole source from the start, then a sweep: every document of the
//!   integration not seen by this run is deleted — the only way to notice an article
//!   archived at a source whose export reports no deletions. Unchanged documents seen by
//!   a full run are marked with its id (one small write each), so the sweep can tell.
//! - The checkpoint (where the export stands, the sweep's cursor, the counts so far)
//!   is returned whenever the deadline comes first; a run resumed from it neither
//!   repeats an article's write nor misses one (the export's `end_time` moves only after
//!   a page's documents are stored, and storing the same content again is a no-op).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::document::{DocumentId, from_article};
use super::zendesk::{SourceError, Zendesk};
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
    /// Deleted by a full run's sweep.
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
    /// Zendesk: the export's next `start_time`.
    pub start_time: i64,
    /// The sweep's position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_cursor: Option<String>,
    /// What the run did so far.
    pub counts: Counts,
}

impl Checkpoint {
    /// A new run: full from the start, or incremental from `since` (the previous run's
    /// end).
    pub fn start(run_id: impl Into<String>, mode: Mode, since: i64) -> Self {
        Self {
            run_id: run_id.into(),
            mode,
            phase: Phase::Articles,
            start_time: if mode == Mode::Full { 0 } else { since },
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

/// Runs the import of `integration` (a Zendesk source) from `checkpoint` until it is
/// done or `deadline` passes (checked between pages).
pub async fn run(
    store: &KbDocuments,
    source: &mut Zendesk<'_>,
    tenant: &TenantId,
    integration: &IntegrationId,
    mut checkpoint: Checkpoint,
    deadline: Instant,
) -> Result<Progress, ImportError> {
    let mut changed = Vec::new();
    let mut deleted = Vec::new();
    let mut wait = None;
    if checkpoint.phase == Phase::Articles {
        let sections = match source.sections().await {
            Ok(s) => s,
            Err(SourceError::Later { wait }) => {
                return Ok(Progress {
                    checkpoint,
                    changed,
                    deleted,
                    wait: Some(wait),
                });
            }
            Err(e) => return Err(e.into()),
        };
        while Instant::now() < deadline {
            let page = match source.export(checkpoint.start_time, &sections).await {
                Ok(p) => p,
                Err(SourceError::Later { wait: w }) => {
                    wait = Some(w);
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            let now = OffsetDateTime::now_utc();
            let cleaned: Vec<_> = page
                .articles
                .iter()
                .map(|a| from_article(tenant, integration, "zendesk", a, now))
                .collect();
            // The page's stored versions in a few batch reads rather than one read each.
            let ids: Vec<DocumentId> = cleaned.iter().map(|(d, _)| d.id.clone()).collect();
            let mut stored = store.get_many(tenant, &ids).await?;
            for (mut doc, body) in cleaned {
                checkpoint.counts.seen += 1;
                let full = checkpoint.mode == Mode::Full;
                if full {
                    doc.seen_run = Some(checkpoint.run_id.clone());
                }
                match stored.remove(&doc.id) {
                    Some(prev) if prev.hash == doc.hash => {
                        checkpoint.counts.unchanged += 1;
                        if full && prev.seen_run.as_deref() != Some(&checkpoint.run_id) {
                            store.mark_seen(&prev, &checkpoint.run_id).await?;
                        }
                    }
                    Some(prev) => {
                        doc.version = prev.version + 1;
                        store.save(&doc, &body, Some(&prev)).await?;
                        checkpoint.counts.updated += 1;
                        checkpoint.counts.unpublished += u64::from(!doc.published);
                        changed.push(doc.id);
                    }
                    None => {
                        store.save(&doc, &body, None).await?;
                        checkpoint.counts.created += 1;
                        checkpoint.counts.unpublished += u64::from(!doc.published);
                        changed.push(doc.id);
                    }
                }
            }
            if let Some(end) = page.end_time {
                checkpoint.start_time = end;
            }
            if page.last {
                checkpoint.phase = if checkpoint.mode == Mode::Full {
                    Phase::Sweep
                } else {
                    Phase::Done
                };
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
