//! Every key of the table, as typed constructors: the only place a key string is
//! spelled. Domain code names the item it wants; how it is keyed is decided here.
//!
//! | item                 | pk                                        | sk                               | index                                   |
//! |----------------------|-------------------------------------------|----------------------------------|-----------------------------------------|
//! | connection           | `T#{tenant}`                              | `CONN#{id}`                      | gsi1 `TOKENDUE#{shard}` / `{due}#{tenant}#{id}` |
//! | provider account entry | `ACCT#{provider}#{account}`             | `{tenant}#{id}`                  |                                         |
//! | account marker       | `T#{tenant}`                              | `CONNKEY#{provider}#v2.{sha256}` |                                         |
//! | app credentials      | `T#{tenant}`                              | `APP#{provider}`                 |                                         |
//! | refresh failure      | `T#{tenant}`                              | `TOKENFAIL#{id}#{at}`            |                                         |
//! | sync config          | `T#{tenant}`                              | `SYNCCFG#{id}`                   |                                         |
//! | entity claim         | `T#{tenant}`                              | `SYNCENT#{connection}#{entity}`  |                                         |
//! | audit entry          | `AUDIT#{tenant}`                          | `{time}#{id}`                    |                                         |
//! | OAuth flow           | `OAUTH#{state hash}`                      | `FLOW`                           |                                         |
//! | rate schedule        | `RATE#{tenant}#{connection}`              | `BUDGET`                         |                                         |
//! | sync log             | `SYNCLOG#{tenant}`                        | `{log id}`                       | gsi1 `SYNCLOGCFG#{tenant}#{config}` / `{log id}` |
//! | run hold             | `SYNC#{tenant}#{config}`                  | `ACTIVE`                         |                                         |
//! | checkpoint           | `SYNC#{tenant}#{config}`                  | `CKPT#{entity}#{phase}`          |                                         |
//! | record error         | `SYNCERR#{tenant}#{log}`                  | `{phase}#{reference}`            |                                         |
//! | conflict             | `SYNCCONF#{tenant}`                       | `{conflict id}`                  |                                         |
//! | record               | `REC#{tenant}#{entity}#{shard(id)}`       | `{id}`                           | gsi3 `RECCHG#{tenant}#{entity}#{shard(id)}` / `{updated}#{id}`; gsi2 `RECNAME#{tenant}#{entity}#{shard(id)}` / `{name}#{id}` |
//! | record key marker    | `RECKEY#{tenant}#{entity}#{shard(key)}`   | `{key}`                          |                                         |
//! | link                 | `LINK#{tenant}#{config}#{entity}#{shard(id)}` | `{record id}`                |                                         |
//! | integration          | `T#{tenant}`                              | `INTEG#{id}`                     |                                         |
//! | assistant settings   | `T#{tenant}`                              | `ASSIST#{assistant}`             |                                         |
//! | dispatch             | `DISP#{tenant}#{shard(id)}`               | `{newest-first time}#{id}`       | gsi1 `DISPDUE#{shard(id)}` / `{due}#{tenant}#{id}` while a step waits |
//! | dispatch event       | `DISPEVT#{tenant}#{shard(id)}`            | `{id}`                           |                                         |
//! | integration log      | `INTLOG#{tenant}#{integration}`           | `{newest-first time}#{dispatch id}` |                                      |
//! | KB source status     | `T#{tenant}`                              | `KBSRC#{integration}`            |                                         |
//! | KB document          | `KBDOC#{tenant}#{shard(id)}`              | `{document id}`                  |                                         |
//! | webhook registration | `T#{tenant}`                              | `HOOKREG#{config}`               |                                         |
//! | webhook changes      | `HOOK#{tenant}#{config}`                  | `{entity}`                       |                                         |
//! | webhook request seen | `HOOKSEEN#{provider}#{digest}`            | `SEEN`                           |                                         |
//! | KB body chunk        | `KBBODY#{tenant}#{document id}#{hash}#{n:04}` | `BODY`                       |                                         |
//!
//! The record families are written at a sync's full rate, so their partitions are
//! spread over [`RECORD_SHARDS`] key values (see README, "Data layout and partition
//! limits").

use crate::domain::{
    ConnectionId, DispatchId, IntegrationId, RecordId, SyncConfigId, SyncLogId, TenantId,
};
use crate::sync::schema::Entity;

/// The partition of a tenant's configuration items.
pub fn tenant(t: &TenantId) -> String {
    format!("T#{t}")
}
/// A connection's sort key.
pub fn connection(id: &ConnectionId) -> String {
    format!("CONN#{id}")
}
/// Sort-key prefix of connections.
pub const CONNECTION_PREFIX: &str = "CONN#";
/// DynamoDB's limit on a sort key's size.
pub const MAX_SORT_KEY_BYTES: usize = 1024;
/// The uniqueness marker of a provider account within a tenant (`account` is a
/// fixed-length hash from `Connector::account_key`; the provider a catalogue id).
pub fn account_marker(provider: &str, account: &str) -> String {
    format!("CONNKEY#{provider}#{account}")
}
/// The partition of the connections to one provider account (a HubSpot portal), each
/// an entry written with its connection: where a provider's webhook finds the tenants
/// it is about.
pub fn provider_account(provider: &str, account: &str) -> String {
    format!("ACCT#{provider}#{account}")
}
/// A connection's entry under its provider account.
pub fn provider_account_entry(tenant: &TenantId, id: &ConnectionId) -> String {
    format!("{tenant}#{id}")
}
/// The sort key of a config's webhooks in its CRM (the ones Conduit created).
pub fn webhook_registration(config: &SyncConfigId) -> String {
    format!("HOOKREG#{config}")
}
/// The item of a config's webhook changes waiting for a targeted pull, one per entity.
pub fn webhook_changes(
    tenant: &TenantId,
    config: &SyncConfigId,
    entity: Entity,
) -> (String, String) {
    (format!("HOOK#{tenant}#{config}"), entity.to_string())
}
/// A webhook request already taken (by the digest of its signature), kept while its
/// timestamp is inside the provider's window: a replay finds it.
pub fn webhook_seen(provider: &str, digest: &str) -> (String, String) {
    (format!("HOOKSEEN#{provider}#{digest}"), "SEEN".to_owned())
}
/// A tenant's app credentials for a provider.
pub fn app_credentials(provider: &str) -> String {
    format!("APP#{provider}")
}
/// An idempotency key's item (pk, sk): its own partition per tenant and hashed
/// (route, key), so keys never crowd a tenant's partition.
pub fn idempotency(tenant: &TenantId, hash: &str) -> (String, String) {
    (format!("IDEM#{tenant}#{hash}"), "IDEM".to_owned())
}

/// The partition of a tenant's audit log.
pub fn audit(t: &TenantId) -> String {
    format!("AUDIT#{t}")
}
/// An audit entry's sort key: its sortable time, then its id.
pub fn audit_entry(at: &str, id: &str) -> String {
    format!("{at}#{id}")
}
/// The partition of a pending OAuth flow, by the hash of its state.
pub fn oauth_flow(state_hash: &str) -> String {
    format!("OAUTH#{state_hash}")
}
/// The sort key of a pending OAuth flow.
pub const OAUTH_FLOW_SK: &str = "FLOW";
/// How many partitions the token-refresh index is spread over.
pub const TOKEN_DUE_SHARDS: u32 = 8;
/// A partition of the token-refresh index.
pub fn token_due(shard: u32) -> String {
    format!("TOKENDUE#{shard}")
}
/// The refresh-index shard of a connection (FNV-1a of its id: stable forever).
pub fn token_due_shard(id: &ConnectionId) -> u32 {
    (fnv1a(id.as_str()) % u64::from(TOKEN_DUE_SHARDS)) as u32
}
/// A connection's sort key in the token-refresh index: when it is due, then which.
pub fn token_due_entry(due: &str, tenant: &TenantId, id: &ConnectionId) -> String {
    format!("{due}#{tenant}#{id}")
}
/// A refresh failure of a connection.
pub fn token_failure(id: &ConnectionId, at: &str) -> String {
    format!("TOKENFAIL#{id}#{at}")
}

/// The sort-key prefix of sync configs in a tenant's partition.
pub const SYNC_CONFIG_PREFIX: &str = "SYNCCFG#";
/// A sync config's sort key.
pub fn sync_config(id: &SyncConfigId) -> String {
    format!("{SYNC_CONFIG_PREFIX}{id}")
}
/// The sort-key prefix of entity claims in a tenant's partition.
pub const ENTITY_CLAIM_PREFIX: &str = "SYNCENT#";
/// The claim of a connection's entity by the one config that syncs it.
pub fn entity_claim(connection: &ConnectionId, entity: Entity) -> String {
    format!("{ENTITY_CLAIM_PREFIX}{connection}#{entity}")
}

/// The rate schedule (shared budget) of a connection.
pub fn rate(tenant: &TenantId, connection: &ConnectionId) -> String {
    format!("RATE#{tenant}#{connection}")
}
/// The sort key of a rate schedule.
pub const RATE_SK: &str = "BUDGET";

/// The partition of a tenant's sync logs.
pub fn sync_logs(tenant: &TenantId) -> String {
    format!("SYNCLOG#{tenant}")
}
/// The gsi1 partition of one config's sync logs.
pub fn sync_logs_of_config(tenant: &TenantId, config: &SyncConfigId) -> String {
    format!("SYNCLOGCFG#{tenant}#{config}")
}
/// The partition of a config's run state (hold and checkpoints).
pub fn sync_state(tenant: &TenantId, config: &SyncConfigId) -> String {
    format!("SYNC#{tenant}#{config}")
}
/// The sort key of a config's run hold.
pub const RUN_HOLD_SK: &str = "ACTIVE";
/// The sort key of an entity's checkpoint for one phase (`pull`, `push`).
pub fn checkpoint(entity: Entity, phase: &str) -> String {
    format!("CKPT#{entity}#{phase}")
}
/// The partition of one log's record errors.
pub fn record_errors(tenant: &TenantId, log: &SyncLogId) -> String {
    format!("SYNCERR#{tenant}#{log}")
}
/// A record error's sort key.
pub fn record_error(phase: &str, reference: &str) -> String {
    format!("{phase}#{reference}")
}
/// The partition of a tenant's conflicts.
pub fn conflicts(tenant: &TenantId) -> String {
    format!("SYNCCONF#{tenant}")
}

/// How many key values each record family (records, their change and name indexes,
/// key markers, links) is spread over; see README, "Data layout and partition limits".
pub const RECORD_SHARDS: u32 = 16;

/// The shard of a record id or a key marker's key (FNV-1a: stable forever).
pub fn shard_of(value: &str) -> u32 {
    (fnv1a(value) % u64::from(RECORD_SHARDS)) as u32
}

/// One shard of a tenant's records of one entity.
pub fn records(tenant: &TenantId, entity: Entity, shard: u32) -> String {
    format!("REC#{tenant}#{entity}#{shard}")
}
/// The partition of a record.
pub fn record(tenant: &TenantId, entity: Entity, id: &RecordId) -> String {
    records(tenant, entity, shard_of(id.as_str()))
}
/// One shard of the change feed (gsi3) of a tenant's records of one entity.
pub fn record_changes(tenant: &TenantId, entity: Entity, shard: u32) -> String {
    format!("RECCHG#{tenant}#{entity}#{shard}")
}
/// One shard of the name index (gsi2) of a tenant's records of one entity.
pub fn record_names(tenant: &TenantId, entity: Entity, shard: u32) -> String {
    format!("RECNAME#{tenant}#{entity}#{shard}")
}
/// The partition of the marker of a record key (email, domain).
pub fn record_key(tenant: &TenantId, entity: Entity, key: &str) -> String {
    format!("RECKEY#{tenant}#{entity}#{}", shard_of(key))
}
/// One shard of one config's links of one entity.
pub fn links(tenant: &TenantId, config: &SyncConfigId, entity: Entity, shard: u32) -> String {
    format!("LINK#{tenant}#{config}#{entity}#{shard}")
}
/// The partition of a record's link under one config.
pub fn link(tenant: &TenantId, config: &SyncConfigId, entity: Entity, id: &str) -> String {
    links(tenant, config, entity, shard_of(id))
}

/// The sort-key prefix of integrations in a tenant's partition.
pub const INTEGRATION_PREFIX: &str = "INTEG#";
/// An integration's sort key.
pub fn integration(id: &IntegrationId) -> String {
    format!("{INTEGRATION_PREFIX}{id}")
}
/// The sort-key prefix of assistants' settings in a tenant's partition.
pub const ASSISTANT_PREFIX: &str = "ASSIST#";
/// An assistant's integration settings' sort key.
pub fn assistant(assistant_id: &str) -> String {
    format!("{ASSISTANT_PREFIX}{assistant_id}")
}
/// One shard of a tenant's dispatches (spread like records: every event writes its
/// dispatch a few times).
pub fn dispatches(tenant: &TenantId, shard: u32) -> String {
    format!("DISP#{tenant}#{shard}")
}
/// The partition of a dispatch.
pub fn dispatch(tenant: &TenantId, id: &DispatchId) -> String {
    dispatches(tenant, shard_of(id.as_str()))
}
/// A sort key that sorts newest first: the time part of a ULID-shaped id (`dsp_…`)
/// counted down from the largest, then the id.
pub fn newest_first(id: &str) -> String {
    let ms = id
        .split_once('_')
        .and_then(|(_, u)| ulid::Ulid::from_string(u).ok())
        .map_or(0, |u| u.timestamp_ms());
    newest_first_at(ms, id)
}
/// [`newest_first`] for a time (Unix ms) and an id: every key of that time or later
/// sorts before `newest_first_at(ms, "")`.
pub fn newest_first_at(ms: u64, id: &str) -> String {
    let max = (1u64 << 48) - 1;
    format!("{:015}#{id}", max.saturating_sub(ms.min(max)))
}
/// The partition of a dispatch's event.
pub fn dispatch_event(tenant: &TenantId, id: &DispatchId) -> String {
    format!("DISPEVT#{tenant}#{}", shard_of(id.as_str()))
}
/// A partition of the index of waiting dispatches (gsi1).
pub fn dispatch_due(shard: u32) -> String {
    format!("DISPDUE#{shard}")
}
/// A waiting dispatch's sort key in that index: when it is due, then which.
pub fn dispatch_due_entry(due_ms: i64, tenant: &TenantId, id: &DispatchId) -> String {
    format!("{:015}#{tenant}#{id}", due_ms.max(0))
}
/// The partition of one integration's log (its steps, newest first).
pub fn integration_log(tenant: &TenantId, id: &IntegrationId) -> String {
    format!("INTLOG#{tenant}#{id}")
}

/// FNV-1a, 64-bit: a hash that never changes between builds or platforms.
fn fnv1a(value: &str) -> u64 {
    value.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A knowledge-base source's import status (in its tenant's partition).
pub fn kb_source(integration: &IntegrationId) -> String {
    format!("KBSRC#{integration}")
}
/// One shard of a tenant's knowledge-base documents.
pub fn kb_documents(tenant: &TenantId, shard: u32) -> String {
    format!("KBDOC#{tenant}#{shard}")
}
/// The partition of one chunk of a document version's body (each chunk its own: a
/// partition takes 1,000 write units a second, a 350 KB chunk 350 of them).
pub fn kb_body(
    tenant: &TenantId,
    id: &crate::kb::document::DocumentId,
    hash: &str,
    n: u32,
) -> String {
    format!("KBBODY#{tenant}#{id}#{hash}#{n:04}")
}
/// A body chunk's sort key.
pub const KB_BODY_SK: &str = "BODY";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_spread_ids_evenly() {
        let mut counts = [0u32; RECORD_SHARDS as usize];
        for _ in 0..20_000 {
            counts[shard_of(RecordId::generate().as_str()) as usize] += 1;
        }
        let fair = 20_000 / RECORD_SHARDS;
        for c in counts {
            assert!(c < fair * 11 / 10 && c > fair * 9 / 10, "{counts:?}");
        }
    }

    /// No key string, item conversion, expression or table call outside this tree: in
    /// the non-test code of the shared crate outside `store/` and of every function, a
    /// `"XYZ#"` literal, an `AttributeValue`, a condition or update expression, a
    /// `store::Value` or a raw `Table` write or query fails.
    #[test]
    fn the_table_layout_lives_in_the_store_tree() {
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut stack = vec![manifest.join("src")];
        let functions = manifest.join("../functions");
        for entry in std::fs::read_dir(&functions).unwrap() {
            stack.push(entry.unwrap().path().join("src"));
        }
        let mut offenders = Vec::new();
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    if !path.ends_with("store") {
                        stack.push(path);
                    }
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for (n, line) in code.lines().enumerate() {
                    // SQS has message attributes too; only DynamoDB's are the store's.
                    let line_ = line.replace("MessageAttributeValue", "");
                    if spells_a_key(line) || STORE_ONLY.iter().any(|t| line_.contains(t)) {
                        offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "outside store/:\n{}",
            offenders.join("\n")
        );
    }

    /// What only the store tree writes: DynamoDB values, expressions (their functions,
    /// clauses and `= :value` placeholders) and the table's raw calls.
    const STORE_ONLY: &[&str] = &[
        "AttributeValue",
        "store::Value",
        "attribute_exists",
        "attribute_not_exists",
        "\"SET ",
        "\"REMOVE ",
        "\"ADD ",
        " = :",
        ".transact(",
        ".put_if(",
        ".replace_item(",
        ".query_lenient",
        ".query_all",
        ".batch_write(",
        ".batch_get",
        ".walk_shards(",
        ".query_shards(",
    ];

    /// A string literal starting with an upper-case word and `#` (`"CONN#`, `"SYNC#`).
    fn spells_a_key(line: &str) -> bool {
        line.match_indices('"').any(|(i, _)| {
            let rest = &line[i + 1..];
            let word = rest.chars().take_while(|c| c.is_ascii_uppercase()).count();
            word >= 2 && rest[word..].starts_with('#')
        })
    }
}
