//! One realistic campaign, many clicks: which destination each click gets.
//!
//! Campaign `summer` (trafficback to fallback.example):
//! - `bots` (priority 0): `isBot` -> `offer-safe`
//! - `disabled` (priority 1, off): would take everything
//! - `de-premium` (5): DE/AT, mobile, Android, cost >= 0.5 -> only `offer-de-capped` (capped)
//! - `de-mobile` (10): DE/AT and mobile -> waterfall `offer-de-night` (open 20:00–06:00 Berlin),
//!   `offer-de-capped` (1000/day, used up), `offer-de-sick` (unhealthy), `offer-de-mobile`
//! - `keyword` (15): `param:kw` matches `^(shoe|boot)s?$` -> `offer-shoes`
//! - `desktop` (20): desktop and not CN -> `offer-desktop`
//! - `catch-all` (100): no conditions -> `offer-global`

use chrono::{DateTime, TimeZone, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use traffoflex_crds::CapMetric;
use traffoflex_dataplane::routing::{
    AntiRepeatCache, CapCounters, ClickContext, ClickIdIssuer, RouteDecision, RouteInputs, RoutingSnapshot,
    UnhealthySet, route,
};

fn stream(id: &str, priority: i32, conditions: Value, dests: &[&str]) -> (String, traffoflex_crds::StreamSpec) {
    let mut spec = json!({
        "campaignId": "c-summer", "name": id, "priority": priority, "selection": "waterfall",
        "destinations": dests.iter().map(|d| json!({"destinationId": d})).collect::<Vec<_>>(),
    });
    if !conditions.is_null() {
        spec["conditions"] = conditions;
    }
    if id == "disabled" {
        spec["enabled"] = json!(false);
    }
    (id.to_string(), serde_json::from_value(spec).unwrap_or_else(|e| panic!("{id}: {e}")))
}

fn destination(id: &str, extra: Value) -> (String, traffoflex_crds::DestinationSpec) {
    let mut spec = if extra.is_null() { json!({}) } else { extra };
    spec["name"] = json!(id);
    spec["url"] = json!(format!("https://{id}.example/lp?cid={{clickId}}&s1={{sub1}}&geo={{country}}"));
    (id.to_string(), serde_json::from_value(spec).unwrap_or_else(|e| panic!("{id}: {e}")))
}

fn snapshot() -> RoutingSnapshot {
    let campaign = serde_json::from_value(json!({
        "key": "summer", "name": "Summer sale", "status": "active",
        "trafficbackUrl": "https://fallback.example/tb?c={campaignKey}&s1={sub1}",
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let de_mobile = json!([
        {"field": "country", "op": "in", "values": ["DE", "AT"]},
        {"field": "deviceType", "op": "eq", "value": "mobile"},
    ]);
    let premium = json!({"all": [
        {"field": "country", "op": "in", "values": ["DE", "AT"]},
        {"field": "deviceType", "op": "eq", "value": "mobile"},
        {"field": "os", "op": "eq", "value": "android"},
        {"field": "cost", "op": "gte", "value": "0.5"},
    ]});
    let desktop = json!({"all": [
        {"field": "deviceType", "op": "eq", "value": "desktop"},
        {"not": {"field": "country", "op": "eq", "value": "CN"}},
    ]});
    let streams = vec![
        stream("catch-all", 100, Value::Null, &["offer-global"]),
        stream("desktop", 20, desktop, &["offer-desktop"]),
        stream(
            "keyword",
            15,
            json!({"field": "param:kw", "op": "regex", "value": "^(shoe|boot)s?$"}),
            &["offer-shoes"],
        ),
        stream("de-mobile", 10, de_mobile, &["offer-de-night", "offer-de-capped", "offer-de-sick", "offer-de-mobile"]),
        stream("de-premium", 5, premium, &["offer-de-capped"]),
        stream("disabled", 1, Value::Null, &["offer-global"]),
        stream("bots", 0, json!({"field": "isBot", "op": "eq", "value": true}), &["offer-safe"]),
    ];
    let night = json!({"schedule": {"timeZone": "Europe/Berlin",
        "windows": [{"weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "20:00", "end": "06:00"}]}});
    let destinations = vec![
        destination("offer-de-night", night),
        destination("offer-de-capped", json!({"caps": {"dailyClicks": 1000}})),
        destination("offer-de-sick", json!({"healthCheck": {"enabled": true}})),
        destination("offer-de-mobile", Value::Null),
        destination("offer-shoes", Value::Null),
        destination("offer-desktop", Value::Null),
        destination("offer-global", Value::Null),
        destination("offer-safe", Value::Null),
    ];
    let snap = RoutingSnapshot::build(vec![("c-summer".into(), campaign)], streams, destinations, vec![]);
    assert_eq!(snap.warnings(), &[]);
    snap
}

struct Counters;
impl CapCounters for Counters {
    fn usage(&self, destination_id: &str, metric: CapMetric, window_hours: u32) -> Option<Decimal> {
        match (destination_id, metric, window_hours) {
            ("offer-de-capped", CapMetric::Clicks, 24) => Some(Decimal::from(1000)),
            _ => Some(Decimal::ZERO),
        }
    }
}

struct Ids;
impl ClickIdIssuer for Ids {
    fn issue(&self, _: i64, _: &str, _: &str, destination: &str) -> String {
        format!("id-{destination}")
    }
}

/// Wednesday 2025-06-04 at `hour`:00 UTC (Berlin is UTC+2 then).
fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 4, hour, 0, 0).single().unwrap_or_else(|| panic!("date"))
}

/// Where a click goes: a destination ID, `tb:<reason>`, `404` or `404:<cause>`.
fn go(snap: &RoutingSnapshot, key: &str, ctx: &ClickContext<'_>, hour: u32) -> (String, String) {
    let cache = AntiRepeatCache::new(64);
    let sick = UnhealthySet::of(["offer-de-sick"]);
    let inputs = RouteInputs { health: &sick, caps: &Counters, ..RouteInputs::new(&cache, &Ids) };
    let mut rng = StdRng::seed_from_u64(1);
    match route(snap, key, ctx, at(hour), &inputs, &mut rng) {
        RouteDecision::Redirect { destination, url, .. } => (destination.id().to_string(), url),
        RouteDecision::Trafficback { reason, url, .. } => (format!("tb:{reason:?}"), url),
        RouteDecision::NoRoute { cause, .. } => (format!("404:{cause:?}"), String::new()),
        RouteDecision::NotFound => ("404".into(), String::new()),
    }
}

/// (what the row shows, query, isBot, UTC hour, expected outcome).
type Row = (&'static str, &'static [(&'static str, &'static str)], bool, u32, &'static str);

#[test]
fn each_click_gets_the_destination_its_facts_call_for() {
    let snap = snapshot();
    #[rustfmt::skip]
    let table: &[Row] = &[
        ("DE mobile skips closed, capped, unhealthy", &[("country", "DE"), ("device", "mobile")], false, 12, "offer-de-mobile"),
        ("AT mobile", &[("country", "AT"), ("device", "mobile")], false, 12, "offer-de-mobile"),
        ("country is case-insensitive", &[("country", "de"), ("device", "Mobile")], false, 12, "offer-de-mobile"),
        ("MVP aliases", &[("geo", "DE"), ("device", "mobile")], false, 12, "offer-de-mobile"),
        ("CH mobile falls to the catch-all", &[("country", "CH"), ("device", "mobile")], false, 12, "offer-global"),
        ("DE desktop", &[("country", "DE"), ("device", "desktop")], false, 12, "offer-desktop"),
        ("FR desktop", &[("country", "FR"), ("device_type", "desktop")], false, 12, "offer-desktop"),
        ("desktop without a country", &[("device", "desktop")], false, 12, "offer-desktop"),
        ("CN desktop is excluded", &[("country", "CN"), ("device", "desktop")], false, 12, "offer-global"),
        ("DE tablet", &[("country", "DE"), ("device", "tablet")], false, 12, "offer-global"),
        ("premium stream has only a capped offer", &[("country", "DE"), ("device", "mobile"), ("os", "Android"), ("cost", "0.6")], false, 12, "tb:NoDestination"),
        ("premium by aliases", &[("country_code", "AT"), ("device", "mobile"), ("platform", "android"), ("cpc", "0.75")], false, 12, "tb:NoDestination"),
        ("cheap Android is not premium", &[("country", "DE"), ("device", "mobile"), ("os", "Android"), ("cost", "0.4")], false, 12, "offer-de-mobile"),
        ("iOS is not premium", &[("country", "DE"), ("device", "mobile"), ("os", "iOS"), ("cost", "0.9")], false, 12, "offer-de-mobile"),
        ("bots first", &[("country", "DE"), ("device", "mobile")], true, 12, "offer-safe"),
        ("keyword", &[("kw", "shoes"), ("device", "tablet")], false, 12, "offer-shoes"),
        ("keyword parameters are case-sensitive", &[("kw", "Shoes")], false, 12, "offer-global"),
        ("keyword outranks desktop", &[("kw", "boot"), ("device", "desktop")], false, 12, "offer-shoes"),
        ("DE mobile outranks keyword", &[("kw", "boot"), ("country", "DE"), ("device", "mobile")], false, 12, "offer-de-mobile"),
        ("empty click", &[], false, 12, "offer-global"),
        ("night window open at 23:00 Berlin", &[("country", "DE"), ("device", "mobile")], false, 21, "offer-de-night"),
        ("night window open at 05:00 Berlin", &[("country", "DE"), ("device", "mobile")], false, 3, "offer-de-night"),
        ("night window closed at 06:00 Berlin", &[("country", "DE"), ("device", "mobile")], false, 4, "offer-de-mobile"),
        ("trafficback only once", &[("country", "DE"), ("device", "mobile"), ("os", "android"), ("cost", "1"), ("trafficback_depth", "1")], false, 12, "404:DepthLimit"),
        ("redirect parameters are ignored", &[("country", "DE"), ("device", "mobile"), ("url", "https://evil.example/"), ("redirect_url", "//evil.example")], false, 12, "offer-de-mobile"),
    ];
    assert!(table.len() >= 20);
    for (name, query, is_bot, hour, want) in table {
        let mut ctx = ClickContext::from_query(query.iter().copied());
        ctx.is_bot = *is_bot;
        assert_eq!(go(&snap, "summer", &ctx, *hour).0, *want, "{name}");
    }
}

#[test]
fn urls_are_rendered_for_the_chosen_destination_and_trafficback() {
    let snap = snapshot();
    let ctx = ClickContext::from_query([("country", "DE"), ("device", "mobile"), ("sub1", "a b&c")]);
    assert_eq!(
        go(&snap, "summer", &ctx, 12).1,
        "https://offer-de-mobile.example/lp?cid=id-offer-de-mobile&s1=a%20b%26c&geo=DE"
    );
    let ctx = ClickContext::from_query([
        ("country", "AT"),
        ("device", "mobile"),
        ("os", "android"),
        ("cost", "2"),
        ("sub1", "x/y"),
    ]);
    assert_eq!(go(&snap, "summer", &ctx, 12).1, "https://fallback.example/tb?c=summer&s1=x%2Fy&trafficback_depth=1");
}

#[test]
fn unknown_campaigns_are_not_found() {
    let snap = snapshot();
    assert_eq!(go(&snap, "winter", &ClickContext::default(), 12).0, "404");
    assert_eq!(go(&snap, "SUMMER", &ClickContext::default(), 12).0, "404", "keys are exact");
}
