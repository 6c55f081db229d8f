//! CONTRACT.md's minimal object shapes, verbatim (with their `kind`), parse, validate and round-trip.

use pretty_assertions::assert_eq;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use traffoflex_crds::*;

const CAMPAIGN: &str = r#"{"kind":"Campaign","key":"summer-sale","name":"Summer sale","status":"active","trafficSourceId":null,
 "trafficbackUrl":"https://fallback.example/tb","costModel":{"type":"cpc","value":"0.05","currency":"USD"}}"#;
const DESTINATION: &str = r#"{"kind":"Destination","name":"Offer A","url":"https://offer.example/a?cid={clickId}&s={sub1}","enabled":true,
 "caps":{"dailyClicks":1000},"schedule":null,"healthCheck":{"enabled":true,"url":null,"intervalSeconds":60}}"#;
const STREAM: &str = r#"{"kind":"Stream","campaignId":"…","name":"DE mobile","priority":10,"enabled":true,
 "conditions":{"all":[{"field":"country","op":"in","values":["DE","AT"]},{"field":"deviceType","op":"eq","value":"mobile"}]},
 "selection":"weighted","destinations":[{"destinationId":"…","weight":70},{"destinationId":"…","weight":30}],
 "antiRepeat":{"enabled":false,"windowSeconds":86400}}"#;
const TRAFFIC_SOURCE: &str = r#"{"kind":"TrafficSource","key":"src1","name":"Source 1",
 "outboundPostbackUrl":"https://source.example/pb?click={sub1}&payout={payout}&status={status}"}"#;
const POSTBACK_TEMPLATE: &str = r#"{"kind":"PostbackTemplate","name":"Generic S2S",
 "params":{"clickId":"clickid","transactionId":"txid","payout":"payout","currency":"currency","status":"status"},
 "statusMap":{"1":"approved","approved":"approved","0":"rejected","pending":"pending"},"defaultStatus":"approved"}"#;
const AFFILIATE_NETWORK: &str = r#"{"kind":"AffiliateNetwork","key":"neta","name":"Network A","postbackTemplateId":"…",
 "auth":{"mode":"token","token":"…"}}"#;

/// Parse, check it is valid for the API, and check serialize -> parse gives the same value.
fn accept<T>(json: &str) -> T
where
    T: DeserializeOwned + Serialize + Validate + PartialEq + std::fmt::Debug,
{
    let spec: T = from_json_str(json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    assert_eq!(spec.validate(ValidationContext::Api), vec![], "{json}");
    assert_eq!(spec.validate(ValidationContext::Store), vec![], "{json}");
    let again: T = from_json_value(serde_json::to_value(&spec).unwrap_or(Value::Null))
        .unwrap_or_else(|e| panic!("round trip: {e}"));
    assert_eq!(again, spec);
    spec
}

#[test]
fn campaign_example() {
    let c: CampaignSpec = accept(CAMPAIGN);
    assert_eq!(c.key, "summer-sale");
    assert_eq!(c.status, CampaignStatus::Active);
    assert_eq!(c.traffic_source_id, None);
    assert_eq!(c.trafficback_max_depth, 1, "trafficback goes round once by default");
    let cost = c.cost_model.unwrap_or_else(|| panic!("cost model"));
    assert_eq!(cost.type_, CostModelType::Cpc);
    assert_eq!(cost.value.to_decimal().map(|d| d.to_string()), Some("0.05".to_string()));
    assert_eq!(cost.currency.as_deref(), Some("USD"));
}

#[test]
fn destination_example() {
    let d: DestinationSpec = accept(DESTINATION);
    assert!(d.is_switched_on());
    let caps = d.caps.unwrap_or_default();
    assert_eq!(caps.daily_clicks, Some(1000));
    let rules = caps.effective_rules();
    assert_eq!(rules.len(), 1);
    assert_eq!((rules[0].metric, rules[0].limit.as_str(), rules[0].window_hours), (CapMetric::Clicks, "1000", 24));
    assert_eq!(d.schedule, None);
    let hc = d.health_check.unwrap_or_else(|| panic!("health check"));
    assert!(hc.enabled);
    assert_eq!((hc.url, hc.interval_seconds), (None, 60));
}

#[test]
fn stream_example() {
    let s: StreamSpec = accept(STREAM);
    assert_eq!(s.campaign_id.as_deref(), Some("…"));
    assert_eq!((s.priority, s.enabled, s.selection), (10, true, Selection::Weighted));
    let weights: Vec<i64> = s.destinations.iter().map(|d| d.weight).collect();
    assert_eq!(weights, vec![70, 30]);
    let Some(Condition::All(all)) = &s.conditions else { panic!("expected an all-condition") };
    let Condition::Rule(country) = &all[0] else { panic!("expected a rule") };
    assert_eq!((country.field.as_str(), country.op), ("country", ConditionOp::In));
    assert_eq!(country.values, Some(vec!["DE".into(), "AT".into()]));
    assert_eq!(country.parsed_field(), Ok(ConditionField::Country));
    let anti = s.anti_repeat.unwrap_or_default();
    assert!(!anti.enabled);
    assert_eq!(anti.effective_window_seconds(), 86_400);
}

#[test]
fn traffic_source_example() {
    let t: TrafficSourceSpec = accept(TRAFFIC_SOURCE);
    assert_eq!(t.key, "src1");
    assert_eq!(t.outbound_postback_statuses, vec![ConversionStatus::Approved], "only approved by default");
}

#[test]
fn postback_template_example() {
    let p: PostbackTemplateSpec = accept(POSTBACK_TEMPLATE);
    assert_eq!(p.params.click_id, "clickid");
    assert_eq!(p.map_status(Some("1")), ConversionStatus::Approved);
    assert_eq!(p.map_status(Some("0")), ConversionStatus::Rejected);
    assert_eq!(p.map_status(Some("PENDING")), ConversionStatus::Pending, "status values are case-insensitive");
    assert_eq!(p.map_status(Some("weird")), ConversionStatus::Approved, "unknown -> defaultStatus");
    assert_eq!(p.map_status(None), ConversionStatus::Approved);
}

#[test]
fn affiliate_network_example() {
    let n: AffiliateNetworkSpec = accept(AFFILIATE_NETWORK);
    assert_eq!(n.auth.mode, AuthMode::Token);
    assert_eq!(n.auth.token.as_deref(), Some("…"));
    assert_eq!(n.click_lookup, ClickLookupMode::FailOpen);
}

#[test]
fn serialized_fields_are_camel_case_and_money_is_a_string() {
    let c: CampaignSpec = accept(CAMPAIGN);
    let v = serde_json::to_value(&c).unwrap_or(Value::Null);
    assert_eq!(v["costModel"], json!({"type": "cpc", "value": "0.05", "currency": "USD"}));
    assert_eq!(v["trafficbackUrl"], "https://fallback.example/tb");
    assert_eq!(v["trafficbackMaxDepth"], 1);
    let s: StreamSpec = accept(STREAM);
    let v = serde_json::to_value(&s).unwrap_or(Value::Null);
    assert_eq!(v["antiRepeat"], json!({"enabled": false, "windowSeconds": 86400, "exhaustedMode": "allowRepeat"}));
    assert_eq!(v["conditions"]["all"][1], json!({"field": "deviceType", "op": "eq", "value": "mobile"}));
}

#[test]
fn kubernetes_shapes_with_refs() {
    let stream: StreamSpec = from_json_value(json!({
        "campaignRef": {"name": "summer-sale"}, "name": "DE mobile",
        "destinations": [{"destinationRef": {"name": "offer-a"}, "weight": 70}, {"destinationRef": {"name": "offer-b"}}],
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stream.validate(ValidationContext::Kubernetes), vec![]);
    assert_eq!(stream.destinations[1].weight, 1, "weight defaults to 1");
    let network: AffiliateNetworkSpec = from_json_value(json!({
        "key": "neta", "name": "Network A", "postbackTemplateRef": {"name": "generic"},
        "auth": {"mode": "hmac", "secretRef": {"name": "neta-auth", "key": "hmac"}},
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(network.validate(ValidationContext::Kubernetes), vec![]);
}

#[test]
fn a_whole_custom_resource_parses_from_yaml() {
    let yaml = r#"
apiVersion: traffoflex.io/v1alpha1
kind: Destination
metadata: {name: offer-a, namespace: ads}
spec:
  name: Offer A
  url: "https://offer.example/a?cid={clickId}"
  caps:
    rules:
      - {metric: cost, limit: "50.00", windowHours: 168}
      - {metric: clicks, limit: 100, windowHours: 1}
  schedule:
    timeZone: Europe/Berlin
    windows: [{weekdays: [mon, tue], start: "22:00", end: "02:00"}]
"#;
    let d: Destination = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.metadata.name.as_deref(), Some("offer-a"));
    assert_eq!(d.spec.validate(ValidationContext::Kubernetes), vec![]);
    let rules = d.spec.caps.map(|c| c.effective_rules()).unwrap_or_default();
    assert_eq!(rules[1].limit.as_str(), "100", "an unquoted number is a limit too");
    assert!(d.spec.schedule.is_some_and(|s| s.enabled && s.tz().is_some()));
}
