//! The decisions a user sees: 404s, redirects, trafficback and its loop protection, anti-repeat.

use std::collections::HashMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use traffoflex_crds::CapMetric;

use super::*;
use crate::routing::availability::UnhealthySet;
use crate::routing::fixtures::{PlainIds, campaign, destination, snapshot, source, stream, wednesday};
use crate::routing::select::RoiSample;

const TB: &str = "https://fallback.example/tb?c={campaignKey}&id={clickId}";

fn one_stream(campaign_json: Value, stream_json: Value, dests: &[(&str, Value)]) -> RoutingSnapshot {
    let mut s = stream_json;
    s["campaignId"] = json!("c1");
    if s.get("destinations").is_none() {
        s["destinations"] = dests.iter().map(|(id, _)| json!({"destinationId": id})).collect();
    }
    let mut c = campaign_json;
    c["key"] = json!("k");
    snapshot(
        vec![campaign("c1", c)],
        vec![stream("s1", s)],
        dests
            .iter()
            .map(|(id, extra)| destination(id, &format!("https://{id}.example/?c={{clickId}}"), extra.clone()))
            .collect(),
    )
}

/// Where a click goes: `url`, `tb:<reason>:<url>`, `404:<cause>` or `404`.
fn go(snap: &RoutingSnapshot, ctx: &ClickContext<'_>, inputs: &RouteInputs<'_>) -> String {
    let mut rng = StdRng::seed_from_u64(5);
    describe(route(snap, "k", ctx, wednesday(12), inputs, &mut rng))
}

fn describe(d: RouteDecision<'_>) -> String {
    match d {
        RouteDecision::NotFound => "404".into(),
        RouteDecision::Redirect { url, .. } => url,
        RouteDecision::Trafficback { url, reason, .. } => format!("tb:{reason:?}:{url}"),
        RouteDecision::NoRoute { reason, cause, .. } => format!("404:{reason:?}:{cause:?}"),
    }
}

fn plain<'a>(cache: &'a AntiRepeatCache) -> RouteInputs<'a> {
    RouteInputs::new(cache, &PlainIds)
}

#[test]
fn a_matching_stream_redirects_with_its_click_id() {
    let snap = one_stream(json!({}), json!({"selection": "waterfall"}), &[("d1", json!(null))]);
    let cache = AntiRepeatCache::new(64);
    let mut rng = StdRng::seed_from_u64(1);
    let ctx = ClickContext::default();
    let RouteDecision::Redirect { url, click_id, campaign, stream, destination } =
        route(&snap, "k", &ctx, wednesday(12), &plain(&cache), &mut rng)
    else {
        panic!("no redirect")
    };
    assert_eq!(url, "https://d1.example/?c=ck.c1.s1.d1");
    assert_eq!(click_id, "ck.c1.s1.d1");
    assert_eq!((campaign.id(), stream.id(), destination.id()), ("c1", "s1", "d1"));
}

#[test]
fn unknown_and_paused_campaigns_are_not_found() {
    let snap = one_stream(json!({"status": "paused", "trafficbackUrl": TB}), json!({}), &[("d1", json!(null))]);
    let cache = AntiRepeatCache::new(64);
    assert_eq!(go(&snap, &ClickContext::default(), &plain(&cache)), "404");
    let mut rng = StdRng::seed_from_u64(1);
    let d = route(&snap, "other", &ClickContext::default(), wednesday(12), &plain(&cache), &mut rng);
    assert!(matches!(d, RouteDecision::NotFound));
    let d = route_trafficback(&snap, "k", &ClickContext::default(), wednesday(12), &plain(&cache));
    assert!(matches!(d, RouteDecision::NotFound));
}

#[test]
fn no_matching_stream_goes_to_trafficback() {
    let cond = json!({"conditions": {"field": "country", "op": "eq", "value": "DE"}});
    let snap = one_stream(json!({"trafficbackUrl": TB}), cond, &[("d1", json!(null))]);
    let cache = AntiRepeatCache::new(64);
    let fr = ClickContext::from_query([("country", "FR")]);
    assert_eq!(
        go(&snap, &fr, &plain(&cache)),
        "tb:NoStream:https://fallback.example/tb?c=k&id=ck.c1..&trafficback_depth=1"
    );
    let de = ClickContext::from_query([("country", "DE")]);
    assert_eq!(go(&snap, &de, &plain(&cache)), "https://d1.example/?c=ck.c1.s1.d1");
}

#[test]
fn no_available_destination_goes_to_trafficback_not_to_the_next_stream() {
    let snap = snapshot(
        vec![campaign("c1", json!({"key": "k", "trafficbackUrl": TB}))],
        vec![
            stream("s1", json!({"campaignId": "c1", "priority": 1, "destinations": [{"destinationId": "off"}]})),
            stream("s2", json!({"campaignId": "c1", "priority": 2, "destinations": [{"destinationId": "d2"}]})),
        ],
        vec![
            destination("off", "https://off.example/", json!({"enabled": false})),
            destination("d2", "https://d2.example/", json!(null)),
        ],
    );
    let cache = AntiRepeatCache::new(64);
    let mut rng = StdRng::seed_from_u64(1);
    let d = route(&snap, "k", &ClickContext::default(), wednesday(12), &plain(&cache), &mut rng);
    let RouteDecision::Trafficback { reason, stream, click_id, .. } = d else { panic!("{d:?}") };
    assert_eq!(
        (reason, stream.map(StreamEntry::id), click_id.as_str()),
        (TrafficbackReason::NoDestination, Some("s1"), "ck.c1..")
    );
}

#[test]
fn no_trafficback_url_is_a_404() {
    let cond = json!({"conditions": {"field": "sub1", "op": "exists"}});
    let snap = one_stream(json!({}), cond, &[("d1", json!({"manualStatus": "paused"}))]);
    let cache = AntiRepeatCache::new(64);
    assert_eq!(go(&snap, &ClickContext::default(), &plain(&cache)), "404:NoStream:NoTrafficbackUrl");
    let with_sub = ClickContext::from_query([("sub1", "x")]);
    assert_eq!(go(&snap, &with_sub, &plain(&cache)), "404:NoDestination:NoTrafficbackUrl");
}

#[test]
fn trafficback_depth_is_limited_to_stop_loops() {
    let cond = json!({"conditions": {"field": "sub1", "op": "exists"}});
    let cache = AntiRepeatCache::new(64);
    let snap = one_stream(json!({"trafficbackUrl": TB}), cond.clone(), &[("d1", json!(null))]);
    let again = ClickContext::from_query([("trafficback_depth", "1")]);
    assert_eq!(go(&snap, &again, &plain(&cache)), "404:NoStream:DepthLimit");
    let d = route_trafficback(&snap, "k", &again, wednesday(12), &plain(&cache));
    assert!(matches!(d, RouteDecision::NoRoute { cause: NoRouteCause::DepthLimit, .. }));

    let deeper =
        one_stream(json!({"trafficbackUrl": TB, "trafficbackMaxDepth": 2}), cond.clone(), &[("d1", json!(null))]);
    assert_eq!(
        go(&deeper, &again, &plain(&cache)),
        "tb:NoStream:https://fallback.example/tb?c=k&id=ck.c1..&trafficback_depth=2"
    );
    let twice = ClickContext::from_query([("trafficback_depth", "2")]);
    assert_eq!(go(&deeper, &twice, &plain(&cache)), "404:NoStream:DepthLimit");

    let never = one_stream(json!({"trafficbackUrl": TB, "trafficbackMaxDepth": 0}), cond, &[("d1", json!(null))]);
    assert_eq!(go(&never, &ClickContext::default(), &plain(&cache)), "404:NoStream:DepthLimit");
}

#[test]
fn the_depth_parameter_replaces_one_in_the_template() {
    let tb = "https://fallback.example/tb?trafficback_depth=9&a=1%202";
    let snap = one_stream(json!({"trafficbackUrl": tb}), json!({"conditions": {"any": []}}), &[("d1", json!(null))]);
    let cache = AntiRepeatCache::new(64);
    let d = route_trafficback(&snap, "k", &ClickContext::default(), wednesday(12), &plain(&cache));
    assert_eq!(describe(d), "tb:Direct:https://fallback.example/tb?a=1+2&trafficback_depth=1");
}

#[test]
fn inbound_redirect_parameters_never_choose_the_destination() {
    let snap = one_stream(json!({"trafficbackUrl": TB}), json!({}), &[("d1", json!(null))]);
    let cache = AntiRepeatCache::new(64);
    let ctx = ClickContext::from_query([
        ("url", "https://evil.example/"),
        ("redirect_url", "https://evil.example/"),
        ("redirect", "//evil.example"),
        ("return", "javascript:alert(1)"),
    ]);
    assert_eq!(go(&snap, &ctx, &plain(&cache)), "https://d1.example/?c=ck.c1.s1.d1");
}

#[test]
fn unavailable_destinations_are_passed_over() {
    let dests = [
        ("sick", json!(null)),
        ("closed", json!({"schedule": {"windows": [{"weekdays": ["mon"], "start": "00:00", "end": "24:00"}]}})),
        ("capped", json!({"caps": {"dailyClicks": 10}})),
        ("ok", json!(null)),
    ];
    let snap = one_stream(json!({}), json!({"selection": "waterfall"}), &dests);
    let cache = AntiRepeatCache::new(64);
    struct Counters;
    impl CapCounters for Counters {
        fn usage(&self, id: &str, metric: CapMetric, _: u32) -> Option<Decimal> {
            (id == "capped" && metric == CapMetric::Clicks).then(|| Decimal::from(10))
        }
    }
    let sick = UnhealthySet::of(["sick"]);
    let inputs = RouteInputs { health: &sick, caps: &Counters, ..plain(&cache) };
    assert_eq!(go(&snap, &ClickContext::default(), &inputs), "https://ok.example/?c=ck.c1.s1.ok");
}

#[test]
fn round_robin_and_weighted_through_the_engine() {
    let dests = [("a", json!(null)), ("b", json!(null)), ("c", json!(null))];
    let snap = one_stream(json!({}), json!({"selection": "roundRobin"}), &dests);
    let cache = AntiRepeatCache::new(64);
    let mut rng = StdRng::seed_from_u64(1);
    let ctx = ClickContext::default();
    let order: Vec<String> = (0..4)
        .map(|_| match route(&snap, "k", &ctx, wednesday(12), &plain(&cache), &mut rng) {
            RouteDecision::Redirect { destination, .. } => destination.id().to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(order, ["a", "b", "c", "a"]);

    let weights = json!({"destinations": [{"destinationId": "a", "weight": 0}, {"destinationId": "b", "weight": 5}]});
    let snap = one_stream(json!({"trafficbackUrl": TB}), weights, &dests[..2]);
    for _ in 0..50 {
        assert_eq!(go(&snap, &ctx, &plain(&cache)), "https://b.example/?c=ck.c1.s1.b");
    }
    let zero = json!({"destinations": [{"destinationId": "a", "weight": 0}]});
    let snap = one_stream(json!({"trafficbackUrl": TB}), zero, &dests[..1]);
    assert!(go(&snap, &ctx, &plain(&cache)).starts_with("tb:NoDestination:"), "weight 0 is never picked");
}

#[test]
fn best_roi_through_the_engine() {
    let dests = [("a", json!(null)), ("b", json!(null))];
    let s = json!({"selection": "bestRoi", "bestRoi": {"minClicks": 10, "windowHours": 24, "fallback": "waterfall"}});
    let snap = one_stream(json!({}), s, &dests);
    let cache = AntiRepeatCache::new(64);
    struct Roi(HashMap<&'static str, RoiSample>);
    impl RoiStats for Roi {
        fn roi_stats(&self, id: &str, _: u32) -> Option<RoiSample> {
            self.0.get(id).copied()
        }
    }
    let sample = |clicks, cost: i64, revenue: i64| RoiSample { clicks, cost: cost.into(), revenue: revenue.into() };
    let roi = Roi(HashMap::from([("a", sample(50, 10, 11)), ("b", sample(50, 10, 30))]));
    let inputs = RouteInputs { roi: &roi, explore_share: 0.0, ..plain(&cache) };
    assert_eq!(go(&snap, &ClickContext::default(), &inputs), "https://b.example/?c=ck.c1.s1.b");
    assert_eq!(
        go(&snap, &ClickContext::default(), &plain(&cache)),
        "https://a.example/?c=ck.c1.s1.a",
        "no data: fallback"
    );
}

fn anti_repeat_snapshot(mode: &str, tb: bool) -> RoutingSnapshot {
    let s = json!({"selection": "waterfall",
        "antiRepeat": {"enabled": true, "userKey": "sub1", "windowSeconds": 60, "exhaustedMode": mode}});
    let c = if tb { json!({"trafficbackUrl": TB}) } else { json!({}) };
    one_stream(c, s, &[("a", json!(null)), ("b", json!(null))])
}

fn dest_at(snap: &RoutingSnapshot, ctx: &ClickContext<'_>, cache: &AntiRepeatCache, secs: i64) -> String {
    let mut rng = StdRng::seed_from_u64(1);
    let now = wednesday(12) + chrono::Duration::seconds(secs);
    match route(snap, "k", ctx, now, &plain(cache), &mut rng) {
        RouteDecision::Redirect { destination, .. } => destination.id().to_string(),
        other => describe(other).split(':').take(2).collect::<Vec<_>>().join(":"),
    }
}

#[test]
fn anti_repeat_sends_a_visitor_to_what_they_have_not_seen() {
    let snap = anti_repeat_snapshot("allowRepeat", false);
    let cache = AntiRepeatCache::new(64);
    let u1 = ClickContext::from_query([("sub1", "u1")]);
    let u2 = ClickContext::from_query([("sub1", "u2")]);
    assert_eq!(dest_at(&snap, &u1, &cache, 0), "a");
    assert_eq!(dest_at(&snap, &u1, &cache, 1), "b");
    assert_eq!(dest_at(&snap, &u2, &cache, 2), "a", "another visitor starts afresh");
    assert_eq!(dest_at(&snap, &u1, &cache, 3), "a", "allowRepeat: everything seen, pick among all");
    assert_eq!(dest_at(&snap, &u1, &cache, 62), "b", "a was seen again at 3 s; b's visit at 1 s expired");
    // Without the user key, anti-repeat can't apply.
    let anon = ClickContext::default();
    assert_eq!((dest_at(&snap, &anon, &cache, 0), dest_at(&snap, &anon, &cache, 1)), ("a".into(), "a".into()));
}

#[test]
fn anti_repeat_no_destination_mode_sends_repeaters_to_trafficback() {
    let snap = anti_repeat_snapshot("noDestination", true);
    let cache = AntiRepeatCache::new(64);
    let u1 = ClickContext::from_query([("sub1", "u1")]);
    assert_eq!(dest_at(&snap, &u1, &cache, 0), "a");
    assert_eq!(dest_at(&snap, &u1, &cache, 1), "b");
    assert_eq!(dest_at(&snap, &u1, &cache, 2), "tb:NoDestination");
    assert_eq!(dest_at(&snap, &u1, &cache, 61), "a", "the window passed");
}

#[test]
fn campaign_source_and_cost_fill_conditions_and_macros() {
    let snap = RoutingSnapshot::build(
        vec![campaign(
            "c1",
            json!({"key": "k", "trafficSourceId": "ts1",
            "costModel": {"type": "cpc", "value": "0.25", "currency": "EUR"}}),
        )],
        vec![stream(
            "s1",
            json!({"campaignId": "c1",
            "conditions": {"all": [{"field": "source", "op": "eq", "value": "src1"}, {"field": "cost", "op": "gt", "value": 0.2}]},
            "destinations": [{"destinationId": "d1"}]}),
        )],
        vec![destination("d1", "https://o.example/?s={source}&c={cost}{currency}", json!(null))],
        vec![source("ts1", "src1")],
    );
    let cache = AntiRepeatCache::new(64);
    assert_eq!(go(&snap, &ClickContext::default(), &plain(&cache)), "https://o.example/?s=src1&c=0.25EUR");
    let own = ClickContext::from_query([("source", "other")]);
    assert_eq!(go(&snap, &own, &plain(&cache)), "404:NoStream:NoTrafficbackUrl");
}

#[test]
fn the_real_codec_issues_verifiable_ids() {
    let snap = one_stream(json!({}), json!({}), &[("d1", json!(null))]);
    let cache = AntiRepeatCache::new(64);
    let codec = traffoflex_core::clickid::ClickIdCodec::single(b"secret");
    let mut rng = StdRng::seed_from_u64(1);
    let d = route(&snap, "k", &ClickContext::default(), wednesday(12), &RouteInputs::new(&cache, &codec), &mut rng);
    let RouteDecision::Redirect { click_id, url, .. } = d else { panic!("{d:?}") };
    assert!(url.ends_with(&click_id));
    let info = codec.verify(&click_id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info.ts_millis, wednesday(12).timestamp_millis());
    let attribution = snap.resolve(&info).unwrap_or_else(|| panic!("unresolved"));
    assert_eq!((attribution.stream_id, attribution.destination_id), (Some("s1"), Some("d1")));
}
