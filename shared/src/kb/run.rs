//! A knowledge-base source's import runs in the background: its status item (the run
//! under way with its checkpoint, the cursor the next incremental run starts from, the
//! last run's summary), starting a run, and each worker step.
//!
//! Starting writes the run into the status (conditional on the version read, so two
//! starts cannot both win: the second is refused while a run is under way) and puts
//! `{"kb_import": {tenant, integration_id, run_id}}` on the sync queue. The sync worker
//! runs the import from the stored checkpoint until a deadline, stores the new
//! checkpoint (conditional again), and hands the rest on as the same message — or, when
//! the source asks to slow down, as a delayed one. A message for a run that is no longer
//! the status's current one is dropped. When the run is done, the status takes its
//! summary and the export's end as the next cursor, and `integration.kb.import.completed`
//! goes on the bus with what changed (ids up to [`EVENT_IDS`] each, and whether the list
//! is whole) so the product's ingestion re-indexes only that.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::custom::{Custom, CustomSource};
use super::document::DocumentId;
use super::dynamics::Dynamics;
use super::freshdesk::Freshdesk;
use super::import::{self, Checkpoint, Counts, ImportError, Mode, Phase};
use super::salesforce::Salesforce;
use super::source::{Cursor, Http, Source, SourceError};
use super::zendesk::Zendesk;
use crate::app::App;
use crate::domain::{ConnectionId, IntegrationId, TenantId};
use crate::queue::{Publisher, QueueError};
use crate::store::StoreError;
use crate::store::kb::KbSources;
use crate::sync::message::SyncMessage;

/// The providers a knowledge base is imported from.
pub const SOURCES: [&str; 5] = [
    "zendesk",
    "freshdesk",
    "salesforce",
    "dynamics365",
    "custom_api",
];

/// The provider of `name`, as one of [`SOURCES`].
pub fn source_of(name: &str) -> Option<&'static str> {
    SOURCES.iter().copied().find(|s| *s == name)
}

/// The template action of an integration that imports its provider's knowledge base.
pub const IMPORT_ACTION: &str = "import_kb";

/// Why an integration's import could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The integration does not import a knowledge base (a code's message says why).
    #[error("{0}")]
    NotASource(String),
    /// The run could not start.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Starts an import of `i`'s knowledge base — from the API, its schedule or a
/// `kb_sync` event alike: `mode` or, by default, a full run first and incremental
/// ones after. Refused while one is under way ([`RunError::Busy`]).
pub async fn start_integration(
    app: &App,
    publisher: &Publisher,
    i: &crate::dispatch::integration::Integration,
    mode: Option<Mode>,
) -> Result<SourceStatus, StartError> {
    let Some(source) = source_of(&i.provider) else {
        return Err(StartError::NotASource(format!(
            "knowledge bases are imported from {} integrations; this one is {}",
            SOURCES.join(", "),
            i.provider
        )));
    };
    if i.action != IMPORT_ACTION {
        return Err(StartError::NotASource(format!(
            "the integration's action is {}; an {IMPORT_ACTION} integration imports a knowledge base",
            i.action
        )));
    }
    let Some(connection) = &i.connection_id else {
        return Err(StartError::NotASource(
            "the integration has no connection to read from".into(),
        ));
    };
    let custom = i.kb_source.as_ref().and_then(|k| k.custom.as_ref());
    let body_field = i.kb_source.as_ref().and_then(|k| k.body_field.clone());
    let settings = match (source, custom) {
        ("salesforce", _) => serde_json::json!({ "body_field": body_field }),
        ("custom_api", None) => {
            return Err(StartError::NotASource(
                "describe the Custom API's list (request, paging, mapping) in the integration's kb_source.custom".into(),
            ));
        }
        (_, Some(custom)) => {
            serde_json::to_value(custom).map_err(|e| StartError::NotASource(e.to_string()))?
        }
        (_, None) => serde_json::Value::Null,
    };
    let src = SourceRef {
        tenant: &i.tenant,
        integration: &i.id,
        connection,
        source,
        settings,
    };
    Ok(start(app, publisher, src, mode).await?)
}

/// Where a run of `source` starts.
fn start_cursor(source: &str, mode: Mode, since: &Cursor) -> Cursor {
    match source {
        "freshdesk" => Freshdesk::start(mode, since),
        "custom_api" => Custom::start(mode, since),
        "salesforce" => Salesforce::start(mode, since),
        "dynamics365" => Dynamics::start(mode, since),
        _ => Zendesk::start(mode, since),
    }
}

/// Document ids a completed event lists at most, changed and deleted each.
pub const EVENT_IDS: usize = 500;
/// The event a finished import puts on the bus.
pub const IMPORT_COMPLETED: &str = "integration.kb.import.completed";
/// How long one worker step runs before handing on.
pub const STEP: Duration = Duration::from_secs(40);

/// A finished run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Its id.
    pub run_id: String,
    /// Full or incremental.
    pub mode: Mode,
    /// `succeeded` or `failed`.
    pub status: String,
    /// What it did.
    pub counts: Counts,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// Why it failed (a code and a message, never a credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A source's import state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The tenant.
    pub tenant: TenantId,
    /// The integration whose source it is.
    pub integration_id: IntegrationId,
    /// The connection it reads through.
    pub connection_id: ConnectionId,
    /// The source's provider (one of [`SOURCES`]).
    pub source: String,
    /// The source's settings, as the run under way started with them (a Custom API's
    /// request and mapping).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub settings: serde_json::Value,
    /// The run under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Checkpoint>,
    /// When the run under way started.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub run_started_at: Option<OffsetDateTime>,
    /// What the run under way changed so far (up to [`EVENT_IDS`]).
    #[serde(default)]
    pub changed: Vec<DocumentId>,
    /// What it deleted so far (up to [`EVENT_IDS`]).
    #[serde(default)]
    pub deleted: Vec<DocumentId>,
    /// Whether `changed` and `deleted` are every id.
    #[serde(default)]
    pub ids_whole: bool,
    /// Where the next incremental run starts: the source's cursor at the end of the
    /// last successful run (Zendesk: the export's last `end_time`).
    #[serde(default)]
    pub cursor: Cursor,
    /// The last finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunSummary>,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// +1 per change.
    pub version: u64,
}

/// Which run a step belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRef {
    /// The tenant.
    pub tenant: TenantId,
    /// The integration.
    pub integration_id: IntegrationId,
    /// The run.
    pub run_id: String,
}

/// Why a run could not start, or a step must be retried.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A run is under way.
    #[error("an import of this source is under way")]
    Busy,
    /// The status changed meanwhile (another start or step): retry.
    #[error("the source's status changed concurrently")]
    Changed,
    /// The table failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A source's status, if it ever ran.
pub async fn status(
    app: &App,
    tenant: &TenantId,
    integration: &IntegrationId,
) -> Result<Option<SourceStatus>, StoreError> {
    KbSources::new(app.table.clone())
        .get(tenant, integration)
        .await
}

async fn save(app: &App, next: &SourceStatus, prev: Option<u64>) -> Result<(), RunError> {
    match KbSources::new(app.table.clone()).save(next, prev).await {
        Ok(()) => Ok(()),
        Err(StoreError::ConditionFailed) => Err(RunError::Changed),
        Err(e) => Err(e.into()),
    }
}

/// What a run reads: which source, through which connection, with which settings.
#[derive(Debug, Clone)]
pub struct SourceRef<'a> {
    /// The tenant.
    pub tenant: &'a TenantId,
    /// The integration whose source it is.
    pub integration: &'a IntegrationId,
    /// The connection it reads through.
    pub connection: &'a ConnectionId,
    /// The provider (one of [`SOURCES`]).
    pub source: &'static str,
    /// The source's settings.
    pub settings: serde_json::Value,
}

/// Starts a run of a source — `mode`, or by default a full run first and incremental
/// ones after: refused while one is under way.
pub async fn start(
    app: &App,
    publisher: &Publisher,
    src: SourceRef<'_>,
    mode: Option<Mode>,
) -> Result<SourceStatus, RunError> {
    let SourceRef {
        tenant,
        integration,
        connection,
        source,
        settings,
    } = src;
    let now = OffsetDateTime::now_utc();
    let prev = status(app, tenant, integration).await?;
    if prev.as_ref().is_some_and(|s| s.run.is_some()) {
        return Err(RunError::Busy);
    }
    let mode = mode.unwrap_or(if prev.is_none() {
        Mode::Full
    } else {
        Mode::Incremental
    });
    let run_id = format!("kbr_{}", ulid::Ulid::new().to_string().to_lowercase());
    // A source changed since (another provider) starts over.
    let cursor = prev
        .as_ref()
        .filter(|s| s.source == source)
        .map_or(Cursor::Null, |s| s.cursor.clone());
    let first = start_cursor(source, mode, &cursor);
    let next = SourceStatus {
        tenant: tenant.clone(),
        integration_id: integration.clone(),
        connection_id: connection.clone(),
        source: source.to_owned(),
        settings,
        run: Some(Checkpoint::start(run_id.clone(), mode, first)),
        run_started_at: Some(now),
        changed: Vec::new(),
        deleted: Vec::new(),
        ids_whole: true,
        cursor,
        last_run: prev.as_ref().and_then(|s| s.last_run.clone()),
        updated_at: now,
        version: prev.as_ref().map_or(1, |s| s.version + 1),
    };
    save(app, &next, prev.as_ref().map(|s| s.version)).await?;
    publisher
        .send(&SyncMessage::KbImport(StepRef {
            tenant: tenant.clone(),
            integration_id: integration.clone(),
            run_id,
        }))
        .await?;
    Ok(next)
}

fn keep(list: &mut Vec<DocumentId>, more: Vec<DocumentId>, whole: &mut bool) {
    for id in more {
        if list.contains(&id) {
            continue;
        }
        if list.len() < EVENT_IDS {
            list.push(id);
        } else {
            *whole = false;
        }
    }
}

/// Runs one step of `step`'s run for up to [`STEP`]; hands the rest on.
pub async fn step(app: &App, publisher: &Publisher, step: &StepRef) -> Result<(), RunError> {
    let Some(mut s) = status(app, &step.tenant, &step.integration_id).await? else {
        return Ok(());
    };
    let Some(checkpoint) = s.run.clone().filter(|r| r.run_id == step.run_id) else {
        tracing::info!(run = %step.run_id, "a step of a run that is over");
        return Ok(());
    };
    let prev_version = s.version;
    let tokens = crate::oauth::lifecycle::Tokens::new(app, "kb-import", step.run_id.clone());
    let outcome = match tokens.credentials(&s.tenant, &s.connection_id).await {
        Err(e) => Err(ImportError::Source(SourceError::Connection(e))),
        Ok(creds) => {
            let provider = app.catalogue.provider(&s.source);
            let (interval, tolerance) =
                provider.map_or((Duration::from_millis(100), Duration::ZERO), |p| {
                    (
                        crate::sync::budget::interval_for(p),
                        crate::sync::budget::tolerance_for(p),
                    )
                });
            let mut budget = crate::sync::budget::Budget::new(
                app.table.clone(),
                &s.tenant,
                &s.connection_id,
                interval,
                tolerance,
            );
            let store = crate::store::kb::KbDocuments::new(app.table.clone());
            let run = Run {
                store: &store,
                tenant: &s.tenant,
                integration: &s.integration_id,
                checkpoint: checkpoint.clone(),
                deadline: Instant::now() + STEP,
            };
            match source_of(&s.source) {
                Some(p) => {
                    let http = Http::new(&tokens, creds, &mut budget, p);
                    match p {
                        "freshdesk" => run.with(Freshdesk::new(http)).await,
                        "salesforce" => {
                            let body_field = s.settings["body_field"].as_str().map(str::to_owned);
                            run.with(Salesforce::new(http, body_field)).await
                        }
                        "dynamics365" => run.with(Dynamics::new(http)).await,
                        "custom_api" => {
                            match serde_json::from_value::<CustomSource>(s.settings.clone()) {
                                Ok(spec) => run.with(Custom::new(http, spec)).await,
                                Err(e) => Err(ImportError::Source(SourceError::Malformed(
                                    format!("the Custom API source's description: {e}"),
                                ))),
                            }
                        }
                        _ => run.with(Zendesk::new(http)).await,
                    }
                }
                None => Err(ImportError::Source(SourceError::Malformed(format!(
                    "{} is not a knowledge-base source",
                    s.source
                )))),
            }
        }
    };
    let now = OffsetDateTime::now_utc();
    s.updated_at = now;
    s.version = prev_version + 1;
    let mut again: Option<Duration> = None;
    match outcome {
        Ok(progress) => {
            let mut whole = s.ids_whole;
            keep(&mut s.changed, progress.changed, &mut whole);
            keep(&mut s.deleted, progress.deleted, &mut whole);
            s.ids_whole = whole;
            if progress.checkpoint.phase == Phase::Done {
                finish(&mut s, &progress.checkpoint, None, now);
            } else {
                s.run = Some(progress.checkpoint);
                again = Some(progress.wait.unwrap_or(Duration::ZERO));
            }
        }
        Err(ImportError::Source(SourceError::Later { wait })) => again = Some(wait),
        Err(ImportError::Store(e)) => return Err(e.into()),
        Err(ImportError::Source(e)) => {
            let error = match &e {
                SourceError::Connection(t) => format!("connection_unusable: {t}"),
                SourceError::Refused {
                    status, message, ..
                } => {
                    format!("source_refused: {status} {message}")
                }
                other => format!("source_error: {other}"),
            };
            tracing::warn!(run = %step.run_id, error = %error, "knowledge-base import failed");
            finish(&mut s, &checkpoint, Some(error), now);
        }
    }
    let done = s.run.is_none();
    save(app, &s, Some(prev_version)).await?;
    if let Some(wait) = again {
        let message = SyncMessage::KbImport(step.clone());
        let secs = i32::try_from(wait.as_secs()).unwrap_or(900);
        publisher.send_delayed(&message, secs).await?;
    }
    if done {
        completed(app, &s).await;
    }
    Ok(())
}

/// One step's import, whatever the source.
struct Run<'a> {
    store: &'a crate::store::kb::KbDocuments,
    tenant: &'a TenantId,
    integration: &'a IntegrationId,
    checkpoint: Checkpoint,
    deadline: Instant,
}

impl Run<'_> {
    async fn with<S: Source>(self, mut source: S) -> Result<import::Progress, ImportError> {
        import::run(
            self.store,
            &mut source,
            self.tenant,
            self.integration,
            self.checkpoint,
            self.deadline,
        )
        .await
    }
}

/// Ends the run in `s` (failed when `error`).
fn finish(
    s: &mut SourceStatus,
    checkpoint: &Checkpoint,
    error: Option<String>,
    now: OffsetDateTime,
) {
    if error.is_none() {
        s.cursor = checkpoint.cursor.clone();
    }
    s.last_run = Some(RunSummary {
        run_id: checkpoint.run_id.clone(),
        mode: checkpoint.mode,
        status: if error.is_none() {
            "succeeded".into()
        } else {
            "failed".into()
        },
        counts: checkpoint.counts.clone(),
        started_at: s.run_started_at.unwrap_or(now),
        finished_at: now,
        error,
    });
    s.run = None;
    s.run_started_at = None;
}

/// Puts the completed event on the bus (a failure to is logged: the status holds the
/// same summary).
async fn completed(app: &App, s: &SourceStatus) {
    let Some(run) = &s.last_run else { return };
    let detail = serde_json::json!({
        "tenant_id": s.tenant.as_str(),
        "integration_id": s.integration_id.as_str(),
        "source": s.source,
        "run_id": run.run_id,
        "mode": run.mode,
        "status": run.status,
        "counts": run.counts,
        "changed": s.changed,
        "deleted": s.deleted,
        "ids_whole": s.ids_whole,
        "started_at": run.started_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "finished_at": run.finished_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    });
    if let Err(e) = app.events.publish(IMPORT_COMPLETED, &detail).await {
        tracing::error!(run = %run.run_id, error = %e, "import-completed event not published");
    }
}
