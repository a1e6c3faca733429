//! Business metrics in CloudWatch's Embedded Metric Format: one JSON line per
//! observation on the function's log stream, which CloudWatch turns into metrics in
//! the `Conduit` namespace with no API call and no extra permission.
//!
//! Rules: dimensions are a closed set ([`Dimension`]: provider, entity, direction), so
//! no tenant, connection or record id ever becomes a dimension (each distinct value is
//! a billed metric, and ids would be unbounded); every line also feeds the same
//! metric without dimensions, which the alarms watch. Ids that say which run or
//! connection a line is about (`log_id`, `connection_id`) are plain properties: kept in
//! the log line for Logs Insights, never metrics. A line carries only counts, those
//! names and ids — never a secret, a token or a tenant's data.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

/// The CloudWatch namespace of Conduit's metrics.
pub const NAMESPACE: &str = "Conduit";

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Records written on either side by a sync chunk (created, updated, deleted).
    RecordsSynced,
    /// Records a sync chunk failed.
    SyncFailures,
    /// OAuth token refreshes that succeeded.
    RefreshOk,
    /// OAuth token refreshes the provider refused or that failed.
    RefreshFailed,
    /// 429 answers from a provider.
    ProviderRateLimited,
    /// Dispatch steps that succeeded.
    DispatchStepsSucceeded,
    /// Dispatch steps that failed for good.
    DispatchStepsFailed,
}

impl Metric {
    /// The metric's name in CloudWatch.
    pub fn name(self) -> &'static str {
        match self {
            Metric::RecordsSynced => "RecordsSynced",
            Metric::SyncFailures => "SyncFailures",
            Metric::RefreshOk => "RefreshOk",
            Metric::RefreshFailed => "RefreshFailed",
            Metric::ProviderRateLimited => "ProviderRateLimited",
            Metric::DispatchStepsSucceeded => "DispatchStepsSucceeded",
            Metric::DispatchStepsFailed => "DispatchStepsFailed",
        }
    }
}

/// The dimensions a metric may carry: low-cardinality by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dimension {
    /// The catalogue provider (`hubspot`, …).
    Provider,
    /// The synced entity (`contacts`, `companies`).
    Entity,
    /// The sync phase (`pull`, `push`).
    Direction,
}

impl Dimension {
    /// The dimension's name in CloudWatch.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Provider => "Provider",
            Dimension::Entity => "Entity",
            Dimension::Direction => "Direction",
        }
    }
}

/// A property that is not a dimension: which run or connection (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The sync log (run) a chunk belongs to.
    LogId,
    /// The connection a refresh or a provider call was for.
    ConnectionId,
}

impl Context {
    /// The property's name in the line.
    pub fn name(self) -> &'static str {
        match self {
            Context::LogId => "log_id",
            Context::ConnectionId => "connection_id",
        }
    }
}

/// The EMF document of one observation at `timestamp_ms` (Unix milliseconds).
pub fn document(
    dimensions: &[(Dimension, &str)],
    values: &[(Metric, u64)],
    context: &[(Context, &str)],
    timestamp_ms: i64,
) -> Value {
    let line = Line {
        dimensions,
        values,
        context,
        timestamp_ms,
    };
    serde_json::to_value(&line).unwrap_or(Value::Null)
}

/// One observation as its EMF line is written: serialised straight from these slices
/// (a step of a dispatch counts one, so no map of values is built for it).
struct Line<'a> {
    dimensions: &'a [(Dimension, &'a str)],
    values: &'a [(Metric, u64)],
    context: &'a [(Context, &'a str)],
    timestamp_ms: i64,
}

/// The `_aws` member: the metric directive.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Aws<'a> {
    timestamp: i64,
    cloud_watch_metrics: [Directive<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Directive<'a> {
    namespace: &'static str,
    /// The dimension set, and the empty set (the same metric without dimensions).
    dimensions: Vec<Vec<&'a str>>,
    metrics: Vec<Named>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Named {
    name: &'static str,
    unit: &'static str,
}

impl Serialize for Line<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names: Vec<&str> = self.dimensions.iter().map(|(d, _)| d.name()).collect();
        let sets = if names.is_empty() {
            vec![Vec::new()]
        } else {
            vec![names, Vec::new()]
        };
        let aws = Aws {
            timestamp: self.timestamp_ms,
            cloud_watch_metrics: [Directive {
                namespace: NAMESPACE,
                dimensions: sets,
                metrics: self
                    .values
                    .iter()
                    .map(|(m, _)| Named {
                        name: m.name(),
                        unit: "Count",
                    })
                    .collect(),
            }],
        };
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("_aws", &aws)?;
        for (d, v) in self.dimensions {
            // A value is a catalogue or enum name; cut anything longer than CloudWatch
            // keeps.
            let cut = v.char_indices().nth(250).map_or(*v, |(at, _)| &v[..at]);
            map.serialize_entry(d.name(), cut)?;
        }
        for (c, v) in self.context {
            map.serialize_entry(c.name(), v)?;
        }
        for (m, n) in self.values {
            map.serialize_entry(m.name(), n)?;
        }
        map.end()
    }
}

/// Writes one observation to the log stream (see [`crate::telemetry`]).
pub fn emit(
    dimensions: &[(Dimension, &str)],
    values: &[(Metric, u64)],
    context: &[(Context, &str)],
) {
    if values.is_empty() {
        return;
    }
    let now = time::OffsetDateTime::now_utc();
    let line = Line {
        dimensions,
        values,
        context,
        timestamp_ms: (now.unix_timestamp_nanos() / 1_000_000) as i64,
    };
    let mut bytes = Vec::with_capacity(320);
    if serde_json::to_writer(&mut bytes, &line).is_err() {
        return;
    }
    bytes.push(b'\n');
    crate::telemetry::write_line(&bytes);
}

/// Counts one `metric` for `provider`, about `connection` when known.
pub fn count(metric: Metric, provider: &str, connection: Option<&str>) {
    let context: Vec<(Context, &str)> = connection
        .map(|c| (Context::ConnectionId, c))
        .into_iter()
        .collect();
    emit(&[(Dimension::Provider, provider)], &[(metric, 1)], &context);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dimension_value_is_cut_to_what_cloudwatch_keeps() {
        let long = "é".repeat(300);
        let doc = document(
            &[(Dimension::Provider, &long)],
            &[(Metric::RefreshOk, 1)],
            &[],
            0,
        );
        assert_eq!(
            doc["Provider"].as_str().map(|v| v.chars().count()),
            Some(250)
        );
    }

    #[test]
    fn the_document_is_embedded_metric_format() {
        let doc = document(
            &[
                (Dimension::Entity, "contacts"),
                (Dimension::Direction, "pull"),
            ],
            &[(Metric::RecordsSynced, 250), (Metric::SyncFailures, 2)],
            &[(Context::LogId, "slog_1")],
            1_700_000_000_123,
        );
        assert_eq!(
            doc,
            json!({
                "_aws": {
                    "Timestamp": 1_700_000_000_123_i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "Conduit",
                        "Dimensions": [["Entity", "Direction"], []],
                        "Metrics": [
                            {"Name": "RecordsSynced", "Unit": "Count"},
                            {"Name": "SyncFailures", "Unit": "Count"},
                        ],
                    }],
                },
                "Entity": "contacts",
                "Direction": "pull",
                "log_id": "slog_1",
                "RecordsSynced": 250,
                "SyncFailures": 2,
            })
        );
    }

    #[test]
    fn every_dimension_and_metric_named_is_a_member_of_the_line() {
        // EMF drops a metric whose name or dimension is not a top-level member.
        let doc = document(
            &[(Dimension::Provider, "hubspot")],
            &[(Metric::RefreshFailed, 1)],
            &[],
            0,
        );
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        for set in directive["Dimensions"].as_array().unwrap() {
            for d in set.as_array().unwrap() {
                assert!(doc.get(d.as_str().unwrap()).is_some(), "{d}");
            }
        }
        for m in directive["Metrics"].as_array().unwrap() {
            assert!(doc[m["Name"].as_str().unwrap()].is_u64());
        }
        let plain = document(&[], &[(Metric::RefreshOk, 1)], &[], 0);
        assert_eq!(
            plain["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]])
        );
    }
}
