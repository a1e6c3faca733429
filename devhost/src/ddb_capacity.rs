//! The local DynamoDB's hottest-key report: what the moto launcher counted per
//! partition-key value (table and GSIs), fetched from its `/_conduit/ddb/capacity`
//! path, and printed as a table by the dev host and the sync bench.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

/// The launcher's path for the report (GET) and for a fresh count (DELETE).
const CAPACITY_PATH: &str = "/_conduit/ddb/capacity";

/// How many keys a fetched report lists.
const TOP_KEYS: usize = 10;

/// What the local DynamoDB counted since it started (or was reset).
#[derive(Debug, Clone, Deserialize)]
pub struct CapacityReport {
    /// moto's version.
    pub moto_version: String,
    /// Whether the launcher's patches (so the counting) are applied.
    pub patched: bool,
    /// Whether writes and reads over a key's limit are refused.
    pub limits_enforced: bool,
    /// Write units per second per key value.
    pub wcu_limit: f64,
    /// Read units per second per key value.
    pub rcu_limit: f64,
    /// Key values counted.
    pub key_count: u64,
    /// Key values that went over a limit in some second.
    pub keys_over_limit: u64,
    /// Whether any key value went over its limit.
    pub exceeded: bool,
    /// Faults the knobs injected so far, by kind (`conflict`, `throttle`).
    #[serde(default)]
    pub faults_injected: std::collections::BTreeMap<String, u64>,
    /// Requests moto served since the last reset, by `X-Amz-Target`
    /// (`DynamoDB_20120810.GetItem`, `TrentService.Decrypt`, …).
    #[serde(default)]
    pub requests: std::collections::BTreeMap<String, u64>,
    /// The hottest key values, hottest first.
    pub keys: Vec<KeyCapacity>,
}

/// One partition-key value's counters.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyCapacity {
    /// The table.
    pub table: String,
    /// The GSI, or none for the table's own key.
    pub index: Option<String>,
    /// The partition-key value (tenant part kept).
    pub key: String,
    /// Most write units consumed in one second.
    pub peak_wcu: f64,
    /// Most write units asked for in one second (consumed and refused).
    pub peak_wcu_demand: f64,
    /// Most read units consumed in one second.
    pub peak_rcu: f64,
    /// Seconds in which the key went over a limit.
    pub seconds_over: u64,
    /// Requests refused for this key.
    pub throttles: u64,
}

impl CapacityReport {
    /// Fetches the report of the moto at `endpoint` (`http://127.0.0.1:PORT`).
    pub fn fetch(endpoint: &str) -> Result<Self> {
        let body = call(endpoint, "GET", &format!("{CAPACITY_PATH}?top={TOP_KEYS}"))?;
        serde_json::from_str(&body).context("reading the local DynamoDB's capacity report")
    }

    /// Starts counting afresh on the moto at `endpoint` (between bench runs).
    pub fn reset(endpoint: &str) -> Result<()> {
        call(endpoint, "DELETE", CAPACITY_PATH).map(drop)
    }

    /// The report as a text table: the hottest keys, then the verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.patched {
            out.push_str("local DynamoDB unpatched (moto version mismatch): nothing counted\n");
            return out;
        }
        let _ = writeln!(
            out,
            "hottest partition keys (limits {} WCU/s, {} RCU/s per key value, {}):",
            self.wcu_limit,
            self.rcu_limit,
            if self.limits_enforced {
                "enforced"
            } else {
                "counted only"
            }
        );
        let _ = writeln!(
            out,
            "  {:<10} {:<9} {:<52} {:>9} {:>10} {:>9} {:>7} {:>9}",
            "table", "index", "key", "peak WCU", "WCU asked", "peak RCU", "s over", "throttles"
        );
        for key in &self.keys {
            let _ = writeln!(
                out,
                "  {:<10} {:<9} {:<52} {:>9.0} {:>10.0} {:>9.0} {:>7} {:>9}",
                clip(&key.table, 10),
                clip(key.index.as_deref().unwrap_or("-"), 9),
                clip(&key.key, 52),
                key.peak_wcu,
                key.peak_wcu_demand,
                key.peak_rcu,
                key.seconds_over,
                key.throttles
            );
        }
        let _ = writeln!(
            out,
            "  {} of {} key values over a limit{}",
            self.keys_over_limit,
            self.key_count,
            if self.exceeded {
                ": EXCEEDED"
            } else {
                ": none exceeded"
            }
        );
        out
    }
}

/// `text` cut to `width` characters (an ellipsis marks the cut).
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// One HTTP/1.0 request to the launcher (it answers without chunking and closes).
fn call(endpoint: &str, method: &str, path: &str) -> Result<String> {
    let url = url::Url::parse(endpoint).with_context(|| format!("moto endpoint {endpoint}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| anyhow!("moto endpoint {endpoint} has no host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| anyhow!("moto endpoint {endpoint} has no port"))?;
    let mut stream =
        TcpStream::connect((host, port)).with_context(|| format!("connecting to {endpoint}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .context("reading the capacity answer")?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed answer from {endpoint}{path}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!(
            "{method} {endpoint}{path}: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_hottest_keys_and_the_verdict() {
        let report: CapacityReport = serde_json::from_value(serde_json::json!({
            "moto_version": "5.2.5", "patched": true, "limits_enforced": true,
            "wcu_limit": 1000.0, "rcu_limit": 3000.0, "key_count": 3, "keys_over_limit": 1,
            "exceeded": true, "faults": {}, "keys": [{
                "table": "conduit", "index": "gsi1", "key": "RECCHG#T#acme#contacts",
                "peak_wcu": 1000.0, "peak_wcu_demand": 2275.0, "peak_rcu": 0.0,
                "total_wcu": 9000.0, "total_rcu": 0.0, "seconds_over": 9, "throttles": 812
            }]
        }))
        .expect("report");
        let text = report.render();
        assert!(text.contains("RECCHG#T#acme#contacts"), "{text}");
        assert!(text.contains("2275"), "{text}");
        assert!(
            text.contains("1 of 3 key values over a limit: EXCEEDED"),
            "{text}"
        );
    }

    #[test]
    fn clips_long_keys_on_a_character_boundary() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("ééé", 3), "ééé");
    }
}
