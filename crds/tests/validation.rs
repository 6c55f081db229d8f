//! Validation rejects a bad object of each kind with every field error at its path, and accepts good ones.

use pretty_assertions::assert_eq;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use traffoflex_crds::*;

fn parse<T: DeserializeOwned>(value: Value) -> T {
    from_json_value(value).unwrap_or_else(|e| panic!("does not parse: {e}"))
}

/// The sorted paths of the errors, after checking every message says something.
fn paths(errors: Vec<FieldError>) -> Vec<String> {
    for e in &errors {
        assert!(e.message.len() > 10, "message too short to act on: {e}");
    }
    let mut paths: Vec<String> = errors.into_iter().map(|e| e.path).collect();
    paths.sort();
    paths
}

fn sorted(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn bad_campaign() {
    let c: CampaignSpec = parse(json!({
        "key": "Summer Sale!", "name": "", "trafficSourceRef": {"name": "src"}, "publicToken": "short/1", "publicId": "not an id",
        "trafficbackUrl": "https://{sub1}.fallback.example/tb", "trafficbackMaxDepth": 11,
        "costModel": {"type": "cpc", "value": "0,05", "currency": "usd"},
        "outboundPostbackUrl": "ftp://source.example/pb",
    }));
    assert_eq!(
        paths(c.validate(ValidationContext::Api)),
        sorted(&[
            "key",
            "name",
            "publicId",
            "publicToken",
            "trafficSourceRef",
            "trafficbackUrl",
            "trafficbackMaxDepth",
            "costModel.value",
            "costModel.currency",
            "outboundPostbackUrl",
        ])
    );
}

#[test]
fn bad_stream() {
    let s: StreamSpec = parse(json!({
        "name": "DE", "priority": -1,
        "conditions": {"all": [
            {"field": "country", "op": "in"},
            {"field": "ip", "op": "cidr", "value": "10.0.0.0/33"},
            {"any": []},
            {"not": {"field": "userAgent", "op": "regex", "value": "(unclosed"}},
            {"field": "nope", "op": "eq", "value": "x"},
            {"field": "cost", "op": "gt", "value": "abc"},
            {"field": "country", "op": "exists", "value": "DE"},
            {"field": "deviceType", "op": "in", "values": ["mobile", "phone"]},
            {"field": "country", "op": "lt", "value": 3},
            {"field": "hour", "op": "in", "values": [0, 24]},
        ]},
        "selection": "weighted",
        "destinations": [{"destinationId": "d1", "weight": 0}, {"destinationRef": {"name": "x"}, "weight": -1}],
        "antiRepeat": {"enabled": true, "userKey": "cookie", "windowSeconds": 10, "windowHours": 1},
        "bestRoi": {"fallback": "bestRoi"},
    }));
    assert_eq!(
        paths(s.validate(ValidationContext::Api)),
        sorted(&[
            "campaignId",
            "priority",
            "conditions.all[0].values",
            "conditions.all[1].value",
            "conditions.all[2].any",
            "conditions.all[3].not.value",
            "conditions.all[4].field",
            "conditions.all[5].value",
            "conditions.all[6].value",
            "conditions.all[7].values[1]",
            "conditions.all[8].op",
            "conditions.all[9].values[1]",
            "destinations[1].destinationRef",
            "destinations[1].destinationId",
            "destinations[1].weight",
            "destinations",
            "antiRepeat.userKey",
            "antiRepeat.windowHours",
            "bestRoi.fallback",
        ])
    );
}

#[test]
fn stream_references_follow_the_context() {
    let api_shape: StreamSpec =
        parse(json!({"campaignId": "c1", "name": "s", "destinations": [{"destinationId": "d1"}]}));
    assert_eq!(api_shape.validate(ValidationContext::Api), vec![]);
    assert_eq!(
        paths(api_shape.validate(ValidationContext::Kubernetes)),
        sorted(&["campaignId", "campaignRef", "destinations[0].destinationId", "destinations[0].destinationRef"])
    );
    let mirrored: StreamSpec = parse(json!({
        "campaignId": "c1", "campaignRef": {"name": "sale"}, "name": "s",
        "destinations": [{"destinationId": "d1", "destinationRef": {"name": "offer-a"}}],
    }));
    assert_eq!(mirrored.validate(ValidationContext::Store), vec![], "the store keeps both forms");
    let bad_name: StreamSpec = parse(
        json!({"campaignRef": {"name": "Sale_1"}, "name": "s", "destinations": [{"destinationRef": {"name": "a"}}]}),
    );
    assert_eq!(paths(bad_name.validate(ValidationContext::Kubernetes)), sorted(&["campaignRef.name"]));
}

#[test]
fn bad_destination() {
    let d: DestinationSpec = parse(json!({
        "name": "", "url": "https://{sub1}.offer.example/a?x={nope}",
        "caps": {"dailyClicks": 0, "rules": [
            {"metric": "clicks", "limit": "1.5", "windowHours": 0},
            {"metric": "cost", "limit": "abc"},
        ]},
        "schedule": {"timeZone": "Mars/Base", "windows": [
            {"weekdays": [], "start": "25:00", "end": "02:00"},
            {"weekdays": ["mon", "mon"], "start": "10:00", "end": "10:00"},
        ]},
        "healthCheck": {"enabled": true, "url": "https://health.example/{clickId}", "intervalSeconds": 1},
    }));
    assert_eq!(
        paths(d.validate(ValidationContext::Api)),
        sorted(&[
            "name",
            "url",
            "url",
            "caps.dailyClicks",
            "caps.rules[0].limit",
            "caps.rules[0].windowHours",
            "caps.rules[1].limit",
            "schedule.timeZone",
            "schedule.windows[0].weekdays",
            "schedule.windows[0].start",
            "schedule.windows[1].weekdays[1]",
            "schedule.windows[1].end",
            "healthCheck.url",
            "healthCheck.intervalSeconds",
        ])
    );
}

#[test]
fn destination_urls_keep_macros_out_of_scheme_host_and_port() {
    for (url, ok) in [
        ("https://offer.example/a?cid={clickId}&k={param:kw}", true),
        ("https://offer.example/{campaignKey}/{sub10}#{utmTerm}", true),
        ("{param:url}", false),
        ("https://{param:host}/a", false),
        ("https://offer.example:{param:port}/a", false),
        ("http{sub1}://offer.example/", false),
        ("javascript://offer.example/%0aalert(1)", false),
        ("https://offer.example/a?x={payout}", false),
    ] {
        let d: DestinationSpec = parse(json!({"name": "A", "url": url}));
        assert_eq!(d.validate(ValidationContext::Api).is_empty(), ok, "{url}");
    }
}

#[test]
fn bad_traffic_source() {
    let t: TrafficSourceSpec = parse(json!({
        "key": "", "name": "Source 1",
        "outboundPostbackUrl": "https://source.example/pb?c={clickid2}",
        "outboundPostbackStatuses": ["approved", "approved"],
    }));
    assert_eq!(
        paths(t.validate(ValidationContext::Api)),
        sorted(&["key", "outboundPostbackUrl", "outboundPostbackStatuses[1]"])
    );
}

#[test]
fn bad_postback_template() {
    let p: PostbackTemplateSpec = parse(json!({
        "name": " ",
        "params": {"clickId": "", "transactionId": "tx id", "payout": "p", "currency": "p"},
        "statusMap": {"OK": "approved", "ok": "rejected"},
    }));
    assert_eq!(
        paths(p.validate(ValidationContext::Api)),
        sorted(&["name", "params.clickId", "params.transactionId", "params.currency", "statusMap"])
    );
}

#[test]
fn bad_affiliate_network() {
    let n: AffiliateNetworkSpec = parse(json!({
        "key": "Net A", "name": "",
        "auth": {"mode": "hmac", "secretRef": {"name": "s", "key": "k"}, "tokenParam": "a b"},
        "ipAllowlist": ["10.0.0.0/8", "203.0.113.7", "300.1.1.1"], "preset": "Big Net",
    }));
    assert_eq!(
        paths(n.validate(ValidationContext::Api)),
        sorted(&[
            "key",
            "name",
            "postbackTemplateId",
            "auth.secretRef",
            "auth.secret",
            "auth.tokenParam",
            "ipAllowlist[2]",
            "preset",
        ])
    );
    let k: AffiliateNetworkSpec = parse(json!({
        "key": "neta", "name": "A", "postbackTemplateId": "t1", "auth": {"mode": "token"},
    }));
    assert_eq!(
        paths(k.validate(ValidationContext::Kubernetes)),
        sorted(&["postbackTemplateId", "postbackTemplateRef", "auth.token"])
    );
}

#[test]
fn bad_dataplane() {
    let d: DataPlaneSpec = parse(json!({
        "image": "", "imagePullPolicy": "Sometimes",
        "traffic": {"minReplicas": 5, "maxReplicas": 2},
        "ingest": {"targetRequestsPerSecond": 0},
    }));
    assert_eq!(
        paths(d.validate(ValidationContext::Kubernetes)),
        sorted(&["image", "imagePullPolicy", "traffic.minReplicas", "ingest.targetRequestsPerSecond"])
    );
}

#[test]
fn good_dataplane_and_defaults() {
    let d: DataPlaneSpec = parse(json!({
        "image": "ghcr.io/acme/traffoflex:0.1.0",
        "traffic": {"minReplicas": 3, "maxReplicas": 20, "targetRequestsPerSecond": 5000,
                    "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}}},
        "postback": {"minReplicas": 8},
    }));
    assert_eq!(d.validate(ValidationContext::Kubernetes), vec![]);
    let traffic = d.resolved(dataplane::Component::Traffic);
    assert_eq!((traffic.min_replicas, traffic.max_replicas, traffic.target_requests_per_second), (3, 20, 5000));
    let postback = d.resolved(dataplane::Component::Postback);
    assert_eq!((postback.min_replicas, postback.max_replicas), (8, 8), "max follows a min above the default max");
    assert_eq!(d.resolved(dataplane::Component::Ingest), dataplane::Component::Ingest.defaults());
}

#[test]
fn good_objects_of_every_kind_pass() {
    let stream: StreamSpec = parse(json!({
        "campaignId": "c1", "name": "Everything", "selection": "bestRoi",
        "conditions": {"any": [
            {"all": [{"field": "country", "op": "notIn", "values": ["US"]}, {"field": "isBot", "op": "eq", "value": false}]},
            {"not": {"field": "ip", "op": "cidr", "values": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]}},
            {"field": "query.kw", "op": "prefix", "value": "shoe"},
            {"field": "param:price", "op": "gte", "value": "9.99"},
            {"field": "userAgent", "op": "regex", "value": "(?i)iphone|android"},
            {"field": "dayOfWeek", "op": "in", "values": ["sat", "sun"]},
            {"field": "hour", "op": "lt", "value": 6},
            {"field": "sub3", "op": "notExists"},
            {"field": "trafficbackDepth", "op": "eq", "value": 0},
        ]},
        "destinations": [{"destinationId": "d1", "weight": 0}, {"destinationId": "d2"}],
        "antiRepeat": {"enabled": true, "userKey": "query.uid", "windowHours": 72, "exhaustedMode": "noDestination"},
        "bestRoi": {"windowHours": 168, "minClicks": 50, "fallback": "weighted"},
    }));
    assert_eq!(stream.validate(ValidationContext::Api), vec![]);
    let campaign: CampaignSpec = parse(json!({
        "key": "rev-1", "name": "Revshare", "costModel": {"type": "revshare", "value": "40"}, "publicToken": "Qx7-rev_0001",
        "trafficbackUrl": "https://tb.example/?c={campaignKey}&q={param:q}", "trafficbackMaxDepth": 0,
    }));
    assert_eq!(campaign.validate(ValidationContext::Api), vec![]);
    let network: AffiliateNetworkSpec = parse(json!({
        "key": "netb", "name": "B", "postbackTemplateId": "t", "auth": {"mode": "none"},
        "ipAllowlist": ["198.51.100.0/24"], "preset": "generic", "clickLookup": "failClosed",
    }));
    assert_eq!(network.validate(ValidationContext::Api), vec![]);
}

#[test]
fn parse_errors_carry_the_path() {
    let cases = [
        (json!({"name": "T", "params": {"clickId": "c"}, "statusMap": {"1": "paid"}}), "statusMap.1"),
        (json!({"campaignId": "c", "name": "s", "selection": "random", "destinations": []}), "selection"),
        (
            json!({"campaignId": "c", "name": "s", "destinations": [],
                   "conditions": {"all": [{"field": "country", "op": "like", "value": "DE"}]}}),
            "conditions.all[0].op",
        ),
        (
            json!({"campaignId": "c", "name": "s", "destinations": [],
                   "conditions": {"all": [{"field": "country", "op": "eq", "vaule": "DE"}]}}),
            "conditions.all[0].vaule",
        ),
    ];
    for (i, (value, path)) in cases.into_iter().enumerate() {
        let err = if i == 0 {
            from_json_value::<PostbackTemplateSpec>(value).err()
        } else {
            from_json_value::<StreamSpec>(value).err()
        };
        let err = err.unwrap_or_else(|| panic!("case {i} should not parse"));
        assert_eq!(err.path, path, "{err}");
        assert!(!err.message.contains(" at line "), "{err}");
    }
    let err = from_json_str::<StreamSpec>(
        r#"{"campaignId":"c","name":"s","destinations":[],"conditions":{"all":[],"field":"x"}}"#,
    )
    .err()
    .unwrap_or_else(|| panic!("a group with rule keys should not parse"));
    assert_eq!(err.path, "conditions");
}

#[test]
fn condition_aliases() {
    let s: StreamSpec = parse(json!({
        "campaignId": "c", "name": "s", "destinations": [{"destinationId": "d"}],
        "conditions": [{"field": "country", "operator": "not_in", "values": ["US"]}, {"field": "os", "op": "neq", "value": "ios"}],
    }));
    let Some(Condition::All(list)) = &s.conditions else { panic!("a list means all") };
    let ops: Vec<ConditionOp> =
        list.iter().filter_map(|c| if let Condition::Rule(r) = c { Some(r.op) } else { None }).collect();
    assert_eq!(ops, vec![ConditionOp::NotIn, ConditionOp::Ne]);
    let out = serde_json::to_value(&s.conditions).unwrap_or(Value::Null);
    assert_eq!(out["all"][0]["op"], "notIn", "canonical names on output");
}

#[test]
fn field_errors_serialise_and_nest() {
    let e = FieldError::new("destinations[1].weight", "must be between 0 and 1000000 (got -1)");
    assert_eq!(
        serde_json::to_value(&e).unwrap_or(Value::Null),
        json!({"path": "destinations[1].weight", "message": "must be between 0 and 1000000 (got -1)"})
    );
    assert_eq!(e.clone().under("spec").path, "spec.destinations[1].weight");
    let d: DataPlaneSpec = parse(json!({"image": ""}));
    let err = d.check(ValidationContext::Kubernetes).err().unwrap_or_else(|| panic!("invalid"));
    assert!(err.to_string().starts_with("image: image is required"), "{err}");
}
