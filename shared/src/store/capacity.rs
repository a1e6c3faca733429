//! The partition arithmetic behind the key layout (README, "Data layout and partition
//! limits"): per key value, the worst-case units per second a sync at HubSpot's full
//! rate puts on the table and its indexes, from the sizes of real items.
//!
//! DynamoDB's rules: a write costs ceil(size / 1 KB) WCU on the table, and each index
//! whose key or projected attributes change costs its own write (two when its key
//! changes: a delete and a put); a strongly consistent read costs ceil(size / 4 KB)
//! RCU. A partition-key value takes at most 1,000 WCU and 3,000 RCU per second.

use std::collections::BTreeMap;

use super::{Item, keys, to_item};
use crate::domain::{RecordId, SyncConfigId, TenantId, now};
use crate::sync::links::Link;
use crate::sync::records::{LinkedRecord, Record, Source};
use crate::sync::schema::Entity;

/// A partition-key value's write limit (units per second).
const MAX_WCU: f64 = 1_000.0;
/// A partition-key value's read limit (units per second).
const MAX_RCU: f64 = 3_000.0;
/// HubSpot's ceiling: 110 requests per 10 s, 100 records a batch request.
const RECORDS_PER_S: f64 = 1_100.0;
/// Configs of one tenant syncing the same entity at once (each at the full rate of
/// its own connection).
const CONFIGS: f64 = 2.0;

/// An item's size as DynamoDB counts it: attribute names plus values.
fn item_bytes(item: &Item) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    fn value(v: &V) -> usize {
        match v {
            V::S(s) => s.len(),
            // Up to 38 significant digits, two a byte, plus one.
            V::N(n) => n.trim_start_matches('-').len().div_ceil(2) + 1,
            V::Bool(_) | V::Null(_) => 1,
            V::Ss(ss) => ss.iter().map(String::len).sum(),
            V::M(m) => 3 + m.iter().map(|(k, v)| k.len() + value(v) + 1).sum::<usize>(),
            V::L(l) => 3 + l.iter().map(|v| value(v) + 1).sum::<usize>(),
            _ => 0,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

fn read_units(bytes: usize) -> f64 {
    bytes.div_ceil(4096).max(1) as f64
}

/// A pulled contact of a typical mapping (ten fields, each with its source, and a
/// link summary): the 1–2 KB items the sync bench writes.
fn pulled_contact() -> Record {
    let at = now();
    let mut r = Record::new(
        RecordId::generate(),
        TenantId::parse("acme-industries").unwrap(),
        Entity::Contacts,
        at,
    );
    let source = Source {
        origin: "hubspot".into(),
        config_id: Some("scfg_01jdw3y8q4zb3d6h0v5t2m9k7n".into()),
        at,
    };
    for (field, value) in [
        (
            "email",
            "margaret.hamilton-smith@apollo-guidance.example.com",
        ),
        ("first_name", "Margaret"),
        ("last_name", "Hamilton-Smith"),
        ("phone", "+1 (555) 010-2030 ext. 4455"),
        (
            "job_title",
            "Director of Software Engineering, Flight Systems",
        ),
        (
            "company",
            "Apollo Guidance Computer Laboratories Incorporated",
        ),
        ("city", "Cambridge"),
        ("country", "United States of America"),
        ("lifecycle_stage", "marketingqualifiedlead"),
    ] {
        r.set(field, Some(value), &source);
    }
    r.links.insert(
        "scfg_01jdw3y8q4zb3d6h0v5t2m9k7n".into(),
        LinkedRecord {
            provider: "hubspot".into(),
            connection_id: "con_01jdw3y8q4zb3d6h0v5t2m9k7n".into(),
            crm_id: "51234567890".into(),
        },
    );
    r.version = 3;
    r.rev = 7;
    r
}

/// The records of the busiest shard in any one second, per config-second of records,
/// measured over generated ids (the hash is not perfectly even over 2,200 ids).
fn busiest_shard_share() -> f64 {
    let per_second = (RECORDS_PER_S * CONFIGS) as usize;
    let mut worst = 0usize;
    for _ in 0..50 {
        let mut counts = [0usize; keys::RECORD_SHARDS as usize];
        for _ in 0..per_second {
            counts[keys::shard_of(RecordId::generate().as_str()) as usize] += 1;
        }
        worst = worst.max(counts.into_iter().max().unwrap_or(0));
    }
    worst as f64 / per_second as f64
}

#[test]
fn no_key_value_exceeds_a_partitions_limits_at_hubspots_full_rate() {
    let record = pulled_contact();
    let record_bytes = item_bytes(&super::records::item_for_test(&record));
    assert!(
        (1024..=2048).contains(&record_bytes),
        "a typical pulled contact is 1–2 KB: {record_bytes}"
    );
    // Links hold the mapped values both sides agreed on: about the record's fields.
    let link = Link {
        crm_id: Some("51234567890".into()),
        base: record
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect(),
        synced_version: 3,
        crm_modified_ms: 1_733_300_000_000,
        ..Default::default()
    };
    let link_bytes = item_bytes(
        &to_item(&serde_json::json!({
            "pk": keys::link(&record.tenant, &SyncConfigId::generate(), Entity::Contacts, record.id.as_str()),
            "sk": record.id.to_string(),
            "body": serde_json::to_string(&link).unwrap(),
        }))
        .unwrap(),
    );
    // Keys-only index entries: the table's keys and the index's.
    let entry_bytes = 2 * 60 + 100 + 30;
    let (record_wcu, link_wcu, entry_wcu) = (
        write_units(record_bytes.max(1025)),
        write_units(link_bytes),
        write_units(entry_bytes),
    );
    // Records per second on the busiest shard of a family spread by record id (or by
    // record key, equally hashed): every config of the tenant writes into it.
    let tenant_rate = RECORDS_PER_S * CONFIGS * busiest_shard_share();
    // A config's own links see only its own records.
    let config_rate = tenant_rate / CONFIGS;
    let load: BTreeMap<&str, (f64, f64)> = BTreeMap::from([
        // One record write per synced record, one strongly consistent read (a pull reads
        // the records it updates; a push reads what the change feed names).
        (
            "table REC#{tenant}#{entity}#{shard}",
            (
                tenant_rate * record_wcu,
                tenant_rate * read_units(record_bytes),
            ),
        ),
        // Its change-feed entry moves on every change of fields: a delete and a put.
        (
            "gsi3 RECCHG#{tenant}#{entity}#{shard}",
            (tenant_rate * 2.0 * entry_wcu, 0.0),
        ),
        // Its name entry moves at most as often.
        (
            "gsi2 RECNAME#{tenant}#{entity}#{shard}",
            (tenant_rate * 2.0 * entry_wcu, 0.0),
        ),
        // A key marker written (or moved: delete and put) per record with a key, read
        // once by a pull's match on email / domain.
        (
            "table RECKEY#{tenant}#{entity}#{shard}",
            (tenant_rate * 2.0, tenant_rate),
        ),
        // One link write and one read per synced record of the config.
        (
            "table LINK#{tenant}#{config}#{entity}#{shard}",
            (config_rate * link_wcu, config_rate * read_units(link_bytes)),
        ),
    ]);
    let mut report = String::new();
    for (key, (wcu, rcu)) in &load {
        report.push_str(&format!("{key}: {wcu:.0} WCU/s, {rcu:.0} RCU/s\n"));
    }
    println!("record {record_bytes} B, link {link_bytes} B\n{report}");
    for (key, (wcu, rcu)) in &load {
        assert!(
            *wcu <= MAX_WCU && *rcu <= MAX_RCU,
            "{key} over a limit:\n{report}"
        );
    }
    // Unsharded, the table partition alone would be over (what the issue measured).
    assert!(RECORDS_PER_S * CONFIGS * record_wcu > MAX_WCU);
}
