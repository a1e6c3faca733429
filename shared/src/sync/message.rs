//! What the sync queue carries: one tagged enum, one variant per kind of work, each
//! a JSON object with one key — `{"chunk": …}`, `{"purge": …}`, `{"realtime": …}`,
//! `{"kb_import": …}`, `{"webhook": …}`. The sync worker handles each; nothing else is sent there (the
//! queue's publisher takes only a [`SyncMessage`]).

use serde::{Deserialize, Serialize};

use super::purge::Purge;
use super::realtime::FollowUp;
use super::runs::Task;
use super::webhook::HookPull;
use crate::kb::run::StepRef;

/// One message of the sync queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SyncMessage {
    /// A chunk of a run: pages of one entity's pull or push.
    Chunk(Box<Task>),
    /// A page of a deleted config's clean-up.
    Purge(Purge),
    /// A realtime push's follow-up (more changes came while it ran).
    Realtime(FollowUp),
    /// A knowledge-base import step.
    KbImport(StepRef),
    /// A config's webhook changes to pull.
    Webhook(HookPull),
}

impl crate::queue::TenantWork for SyncMessage {
    fn tenant(&self) -> &str {
        match self {
            Self::Chunk(t) => t.tenant.as_str(),
            Self::Purge(p) => p.tenant.as_str(),
            Self::Realtime(f) => f.tenant.as_str(),
            Self::KbImport(s) => s.tenant.as_str(),
            Self::Webhook(h) => h.tenant.as_str(),
        }
    }
}

impl SyncMessage {
    /// Reads a message body. A chunk sent before the tag existed (a bare task, still
    /// in flight while a deploy rolls out) is read as a chunk.
    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body).or_else(|tagged| {
            serde_json::from_str::<Task>(body)
                .map(|t| Self::Chunk(Box::new(t)))
                .map_err(|_| tagged)
        })
    }

    /// What the message is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Chunk(_) => "chunk",
            Self::Purge(_) => "purge",
            Self::Realtime(_) => "realtime",
            Self::KbImport(_) => "kb_import",
            Self::Webhook(_) => "webhook",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{IntegrationId, JobId, SyncConfigId, SyncLogId, TenantId};
    use crate::sync::runs::Phase;
    use crate::sync::schema::Entity;
    use serde_json::json;

    fn task() -> Task {
        Task {
            tenant: TenantId::parse("acme").unwrap(),
            config_id: SyncConfigId::generate(),
            job_id: JobId::generate(),
            log_id: SyncLogId::generate(),
            entity: Entity::Contacts,
            phase: Phase::Pull,
            seq: 3,
            cursor: None,
            push_cursor: None,
            then_push: true,
            only: None,
            gone: Vec::new(),
        }
    }

    #[test]
    fn every_kind_reads_back() {
        let tenant = TenantId::parse("acme").unwrap();
        let config_id = SyncConfigId::generate();
        let messages = [
            SyncMessage::Chunk(Box::new(task())),
            SyncMessage::Purge(Purge {
                tenant: tenant.clone(),
                config_id: config_id.clone(),
                entities: vec![Entity::Contacts],
            }),
            SyncMessage::Realtime(FollowUp {
                tenant: tenant.clone(),
                config_id,
                entity: Entity::Companies,
            }),
            SyncMessage::KbImport(StepRef {
                tenant: tenant.clone(),
                integration_id: IntegrationId::generate(),
                run_id: "run".into(),
            }),
            SyncMessage::Webhook(crate::sync::webhook::HookPull {
                tenant,
                config_id: SyncConfigId::generate(),
                entity: Entity::Contacts,
            }),
        ];
        for m in messages {
            let body = serde_json::to_value(&m).unwrap();
            let tag = body
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>());
            assert_eq!(tag, Some(vec![m.kind().to_owned()]));
            assert_eq!(SyncMessage::parse(&body.to_string()).unwrap(), m);
            assert_eq!(crate::queue::TenantWork::tenant(&m), "acme");
        }
    }

    #[test]
    fn a_bare_task_from_before_the_tag_is_a_chunk_and_strangers_are_refused() {
        let t = task();
        let bare = serde_json::to_string(&t).unwrap();
        assert_eq!(
            SyncMessage::parse(&bare).unwrap(),
            SyncMessage::Chunk(Box::new(t))
        );
        let mut extra = serde_json::to_value(SyncMessage::Chunk(Box::new(task()))).unwrap();
        extra["purge"] = json!({});
        for bad in [
            json!({"purge": {"tenant": "acme"}}),
            json!({"nothing": {}}),
            extra,
            json!([1, 2]),
        ] {
            assert!(SyncMessage::parse(&bad.to_string()).is_err(), "{bad}");
        }
        assert!(SyncMessage::parse("not json").is_err());
    }
}
