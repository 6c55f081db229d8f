//! Test helpers: specs from JSON, a fixed clock, a predictable click-ID issuer.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use traffoflex_crds::{CampaignSpec, DestinationSpec, StreamSpec, TrafficSourceSpec};

use super::engine::ClickIdIssuer;
use super::snapshot::RoutingSnapshot;

/// Reads a spec, panicking with the JSON on error.
macro_rules! parse {
    ($json:expr) => {{
        let json = $json;
        serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{json}: {e}"))
    }};
}

/// A campaign document.
pub fn campaign(id: &str, json: Value) -> (String, CampaignSpec) {
    let mut json = json;
    if json.get("name").is_none() {
        json["name"] = Value::from(id);
    }
    (id.to_string(), parse!(json))
}

/// A stream document.
pub fn stream(id: &str, json: Value) -> (String, StreamSpec) {
    let mut json = json;
    if json.get("name").is_none() {
        json["name"] = Value::from(id);
    }
    (id.to_string(), parse!(json))
}

/// A destination document with `url`, plus more fields from `json`.
pub fn destination(id: &str, url: &str, json: Value) -> (String, DestinationSpec) {
    let mut json = if json.is_null() { serde_json::json!({}) } else { json };
    json["name"] = Value::from(id);
    json["url"] = Value::from(url);
    (id.to_string(), parse!(json))
}

/// A traffic source document.
pub fn source(id: &str, key: &str) -> (String, TrafficSourceSpec) {
    (id.to_string(), parse!(serde_json::json!({"key": key, "name": key})))
}

/// A snapshot; panics on any build warning unless `warnings_ok`.
pub fn snapshot(
    campaigns: Vec<(String, CampaignSpec)>,
    streams: Vec<(String, StreamSpec)>,
    destinations: Vec<(String, DestinationSpec)>,
) -> RoutingSnapshot {
    let snap = RoutingSnapshot::build(campaigns, streams, destinations, vec![]);
    assert_eq!(snap.warnings(), &[], "unexpected build warnings");
    snap
}

/// Wednesday 2025-01-01 at `hour`:00 UTC.
pub fn wednesday(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, hour, 0, 0).single().unwrap_or_else(|| panic!("date"))
}

/// Click IDs that say what they were issued for: `ck.<campaign>.<stream>.<destination>`.
pub struct PlainIds;

impl ClickIdIssuer for PlainIds {
    fn issue(&self, _ts: i64, campaign: &str, stream: &str, destination: &str) -> String {
        format!("ck.{campaign}.{stream}.{destination}")
    }
}
