//! Weighted selection through the routing engine: 100,000 clicks over weights 70/20/10 land within
//! ±2 percentage points of the weights, and an unavailable destination's share goes to the others.

use std::collections::HashMap;

use chrono::{TimeZone, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use traffoflex_crds::{CampaignSpec, DestinationSpec, StreamSpec};
use traffoflex_dataplane::routing::{
    AntiRepeatCache, ClickContext, ClickIdIssuer, RouteDecision, RouteInputs, RoutingSnapshot, UnhealthySet, route,
};

struct Ids;
impl ClickIdIssuer for Ids {
    fn issue(&self, _: i64, _: &str, _: &str, _: &str) -> String {
        "click".into()
    }
}

fn snapshot() -> RoutingSnapshot {
    let campaign: CampaignSpec =
        serde_json::from_value(json!({"key": "summer", "name": "Summer"})).unwrap_or_else(|e| panic!("{e}"));
    let stream: StreamSpec = serde_json::from_value(json!({
        "campaignId": "c1", "name": "all", "selection": "weighted",
        "destinations": [
            {"destinationId": "a", "weight": 70},
            {"destinationId": "b", "weight": 20},
            {"destinationId": "c", "weight": 10},
        ],
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let dests = ["a", "b", "c"].map(|id| {
        let spec: DestinationSpec =
            serde_json::from_value(json!({"name": id, "url": format!("https://{id}.example/")}))
                .unwrap_or_else(|e| panic!("{e}"));
        (id.to_string(), spec)
    });
    let snap = RoutingSnapshot::build(
        vec![("c1".into(), campaign)],
        vec![("s1".into(), stream)],
        dests.into_iter().collect(),
        vec![],
    );
    assert_eq!(snap.warnings(), &[]);
    snap
}

/// Share of `n` clicks per destination, in percent.
fn shares(inputs: &RouteInputs<'_>, seed: u64, n: u32) -> HashMap<String, f64> {
    let snap = snapshot();
    let mut rng = StdRng::seed_from_u64(seed);
    let ctx = ClickContext::default();
    let now = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).single().unwrap_or_else(|| panic!("date"));
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..n {
        match route(&snap, "summer", &ctx, now, inputs, &mut rng) {
            RouteDecision::Redirect { destination, url, .. } => {
                assert_eq!(url, format!("https://{}.example/", destination.id()));
                *counts.entry(destination.id().to_string()).or_default() += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    counts.into_iter().map(|(id, c)| (id, f64::from(c) * 100.0 / f64::from(n))).collect()
}

#[test]
fn weighted_picks_follow_70_20_10_within_two_points() {
    let cache = AntiRepeatCache::new(16);
    let inputs = RouteInputs::new(&cache, &Ids);
    for seed in [1, 2, 3] {
        let got = shares(&inputs, seed, 100_000);
        for (id, want) in [("a", 70.0), ("b", 20.0), ("c", 10.0)] {
            let share = got.get(id).copied().unwrap_or(0.0);
            assert!((share - want).abs() <= 2.0, "seed {seed}: {id} got {share:.2}% for weight {want}%");
        }
    }
}

#[test]
fn an_unhealthy_destination_s_share_goes_to_the_rest_by_weight() {
    let cache = AntiRepeatCache::new(16);
    let sick = UnhealthySet::of(["a"]);
    let inputs = RouteInputs { health: &sick, ..RouteInputs::new(&cache, &Ids) };
    let got = shares(&inputs, 9, 30_000);
    assert_eq!(got.get("a"), None);
    let b = got.get("b").copied().unwrap_or(0.0);
    assert!((b - 66.67).abs() <= 2.0, "b got {b:.2}% (20 of the 30 remaining weight)");
}
