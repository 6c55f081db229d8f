//! Building snapshots: indexing, ordering, warnings for what can't be used, fingerprints.

use serde_json::json;
use traffoflex_core::clickid::{ClickIdCodec, ClickIdInfo, fingerprint4, fingerprint8};

use super::build::{freeze, index_fp};
use super::*;
use crate::routing::fixtures::{campaign, destination, snapshot, source, stream};

fn ids(c: &CampaignEntry) -> Vec<&str> {
    c.streams().iter().map(StreamEntry::id).collect()
}

fn warned(snap: &RoutingSnapshot, kind: &str, id: &str, text: &str) -> bool {
    snap.warnings().iter().any(|w| w.kind == kind && w.id == id && w.message.contains(text))
}

#[test]
fn campaigns_by_key_and_id_streams_by_priority_then_id() {
    let snap = snapshot(
        vec![campaign("c1", json!({"key": "summer"})), campaign("c2", json!({"key": "winter", "status": "paused"}))],
        vec![
            stream("s-b", json!({"campaignId": "c1", "priority": 5, "destinations": [{"destinationId": "d1"}]})),
            stream("s-a", json!({"campaignId": "c1", "priority": 5, "destinations": [{"destinationId": "d1"}]})),
            stream("s-0", json!({"campaignId": "c1", "priority": 10, "destinations": [{"destinationId": "d1"}]})),
            stream("s-z", json!({"campaignId": "c1", "priority": 1, "destinations": [{"destinationId": "d1"}]})),
            stream("s-off", json!({"campaignId": "c1", "enabled": false, "destinations": [{"destinationId": "d1"}]})),
        ],
        vec![destination("d1", "https://offer.example/", json!(null))],
    );
    let c = snap.campaign("summer").unwrap_or_else(|| panic!("summer"));
    assert_eq!((c.id(), c.key(), c.is_paused()), ("c1", "summer", false));
    assert_eq!(ids(c), ["s-z", "s-a", "s-b", "s-0"], "priority, then ID; disabled dropped");
    assert!(snap.campaign("winter").is_some_and(CampaignEntry::is_paused));
    assert!(snap.campaign_by_id("c2").is_some());
    assert!(snap.campaign("nope").is_none());
    assert_eq!(c.trafficback_max_depth(), 1);
    assert_eq!(snap.campaigns().len(), 2);
}

#[test]
fn the_same_documents_build_the_same_snapshot_in_any_order() {
    let camps = || vec![campaign("c2", json!({"key": "k"})), campaign("c1", json!({"key": "k"}))];
    let streams = || {
        vec![
            stream("s2", json!({"campaignId": "c1", "destinations": [{"destinationId": "d1"}]})),
            stream("s1", json!({"campaignId": "c1", "destinations": [{"destinationId": "d1"}]})),
        ]
    };
    let dests = || vec![destination("d1", "https://o.example/", json!(null))];
    let a = RoutingSnapshot::build(camps(), streams(), dests(), vec![]);
    let mut reversed = camps();
    reversed.reverse();
    let mut s = streams();
    s.reverse();
    let b = RoutingSnapshot::build(reversed, s, dests(), vec![]);
    for snap in [&a, &b] {
        let c = snap.campaign("k").unwrap_or_else(|| panic!("k"));
        assert_eq!(c.id(), "c1", "the lowest ID keeps a duplicated key");
        assert_eq!(ids(c), ["s1", "s2"]);
        assert!(warned(snap, "Campaign", "c2", "key `k` is already campaign c1's"));
    }
}

#[test]
fn dangling_references_are_skipped_with_warnings() {
    let snap = RoutingSnapshot::build(
        vec![campaign("c1", json!({"key": "k", "trafficSourceId": "ts-gone"}))],
        vec![
            stream(
                "s1",
                json!({"campaignId": "c1", "destinations": [{"destinationId": "d1"}, {"destinationId": "gone"}]}),
            ),
            stream("s2", json!({"campaignId": "c1", "destinations": [{"destinationId": "gone"}]})),
            stream("s3", json!({"campaignId": "c-gone", "destinations": [{"destinationId": "d1"}]})),
            stream("s4", json!({"campaignRef": {"name": "c1"}, "destinations": [{"destinationId": "d1"}]})),
            stream("s5", json!({"campaignId": "c1", "destinations": [{"destinationRef": {"name": "d1"}}]})),
        ],
        vec![destination("d1", "https://o.example/", json!(null))],
        vec![],
    );
    let c = snap.campaign("k").unwrap_or_else(|| panic!("k"));
    assert_eq!(ids(c), ["s1"]);
    assert_eq!(c.streams()[0].destination_count(), 1);
    assert!(warned(&snap, "Stream", "s1", "destination gone does not exist"));
    assert!(warned(&snap, "Stream", "s2", "no usable destination"));
    assert!(warned(&snap, "Stream", "s3", "campaign c-gone does not exist"));
    assert!(warned(&snap, "Stream", "s4", "no campaignId"));
    assert!(warned(&snap, "Stream", "s5", "has no destinationId"));
    assert!(warned(&snap, "Campaign", "c1", "traffic source ts-gone does not exist"));
    assert_eq!(c.source_key(), None);
}

#[test]
fn unusable_documents_are_skipped_with_warnings() {
    let snap = RoutingSnapshot::build(
        vec![
            campaign("c1", json!({"key": "k", "trafficbackUrl": "https://{sub1}.evil.example/"})),
            campaign("c1", json!({"key": "k2"})),
        ],
        vec![
            stream("s1", json!({"campaignId": "c1", "destinations": [{"destinationId": "bad-url"}]})),
            stream(
                "s2",
                json!({"campaignId": "c1", "conditions": {"field": "sub1", "op": "regex", "value": "("},
                "destinations": [{"destinationId": "d1"}]}),
            ),
            stream(
                "s3",
                json!({"campaignId": "c1", "antiRepeat": {"enabled": true, "userKey": "country"},
                "destinations": [{"destinationId": "d1"}]}),
            ),
        ],
        vec![
            destination("bad-url", "javascript:alert(1)", json!(null)),
            destination(
                "d1",
                "https://o.example/",
                json!({"caps": {"rules": [{"metric": "cost", "limit": "lots"}]},
                "schedule": {"timeZone": "Mars/Olympus", "windows": []}}),
            ),
            destination("d1", "https://other.example/", json!(null)),
        ],
        vec![],
    );
    let c = snap.campaign("k").unwrap_or_else(|| panic!("k"));
    assert_eq!(ids(c), ["s3"]);
    assert_eq!(c.trafficback_url(), None);
    assert!(snap.campaign("k2").is_none());
    assert!(snap.destination("bad-url").is_none());
    assert_eq!(snap.destination("d1").map(DestinationEntry::url_template), Some("https://o.example/"));
    assert_eq!(snap.destination("d1").map(|d| d.caps().len()), Some(0));
    for (kind, id, text) in [
        ("Campaign", "c1", "trafficbackUrl"),
        ("Campaign", "c1", "the ID is used twice"),
        ("Destination", "bad-url", "not an absolute http(s) URL"),
        ("Destination", "d1", "the ID is used twice"),
        ("Destination", "d1", "cap limit `lots`"),
        ("Destination", "d1", "unknown time zone"),
        ("Stream", "s1", "no usable destination"),
        ("Stream", "s2", "the regex does not compile"),
        ("Stream", "s3", "using ip"),
    ] {
        assert!(warned(&snap, kind, id, text), "{kind} {id}: {text}: {:?}", snap.warnings());
    }
}

#[test]
fn campaign_defaults_and_policies_are_compiled() {
    let snap = RoutingSnapshot::build(
        vec![campaign(
            "c1",
            json!({"key": "k", "trafficSourceId": "ts1", "trafficbackMaxDepth": 3,
                "costModel": {"type": "cpc", "value": "0.05", "currency": "USD"}}),
        )],
        vec![stream(
            "s1",
            json!({"campaignId": "c1", "selection": "bestRoi",
                "bestRoi": {"windowHours": 48, "minClicks": 10, "fallback": "weighted"},
                "antiRepeat": {"enabled": true, "userKey": "sub2", "windowHours": 2, "exhaustedMode": "noDestination"},
                "destinations": [{"destinationId": "d1", "weight": 7}]}),
        )],
        vec![destination("d1", "https://o.example/", json!({"caps": {"dailyClicks": 5}}))],
        vec![source("ts1", "src-one")],
    );
    assert_eq!(snap.warnings(), &[]);
    let c = snap.campaign("k").unwrap_or_else(|| panic!("k"));
    assert_eq!(c.source_key(), Some("src-one"));
    assert_eq!(c.traffic_source_id(), Some("ts1"));
    assert_eq!(c.cpc_cost(), Some((Decimal::new(5, 2), "USD")));
    assert_eq!(c.trafficback_max_depth(), 3);
    let s = &c.streams()[0];
    assert_eq!((s.name(), s.priority(), s.selection()), ("s1", 0, Selection::BestRoi));
    assert_eq!(s.best_roi, BestRoiPolicy { window_hours: 48, min_clicks: 10, fallback: Selection::Weighted });
    assert_eq!(
        s.anti_repeat,
        Some(AntiRepeatPolicy {
            user_key: crate::routing::UserKey::Sub(2),
            window_ms: 7_200_000,
            exhausted: traffoflex_crds::ExhaustedMode::NoDestination
        })
    );
    assert_eq!(s.destinations[0].weight, 7);
    let d = snap.destination("d1").unwrap_or_else(|| panic!("d1"));
    assert_eq!((d.id(), d.name()), ("d1", "d1"));
    assert_eq!(d.caps()[0].window_hours, 24);
}

#[test]
fn click_ids_resolve_to_campaign_stream_and_destination() {
    let snap = snapshot(
        vec![campaign("c1", json!({"key": "k"}))],
        vec![
            stream(
                "s1",
                json!({"campaignId": "c1", "destinations": [{"destinationId": "d1"}, {"destinationId": "d2"}]}),
            ),
            stream("s-off", json!({"campaignId": "c1", "enabled": false, "destinations": [{"destinationId": "d3"}]})),
        ],
        vec![
            destination("d1", "https://o.example/1", json!(null)),
            destination("d2", "https://o.example/2", json!(null)),
            destination("d3", "https://o.example/3", json!(null)),
        ],
    );
    let codec = ClickIdCodec::single(b"k");
    let info = codec.verify(&codec.issue(1, "c1", "s1", "d2")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        snap.resolve(&info),
        Some(Attribution { campaign_id: "c1", stream_id: Some("s1"), destination_id: Some("d2") })
    );
    // A stream disabled since the click still attributes.
    let info = codec.verify(&codec.issue(1, "c1", "s-off", "d3")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snap.resolve(&info).and_then(|a| a.destination_id), Some("d3"));
    // Trafficback clicks carry no stream or destination.
    let info = codec.verify(&codec.issue(1, "c1", "", "")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snap.resolve(&info), Some(Attribution { campaign_id: "c1", stream_id: None, destination_id: None }));
    let unknown = ClickIdInfo { ts_millis: 0, campaign: fingerprint8("c9"), stream: [0; 4], destination: [0; 4] };
    assert_eq!(snap.resolve(&unknown), None);
    let stranger =
        ClickIdInfo { ts_millis: 0, campaign: fingerprint8("c1"), stream: fingerprint4("s9"), destination: [1; 4] };
    assert_eq!(snap.resolve(&stranger), Some(Attribution { campaign_id: "c1", stream_id: None, destination_id: None }));
}

#[test]
fn every_stream_and_destination_of_a_large_campaign_resolves() {
    // Enough streams and destinations that the build's per-campaign lists outgrow their tight start.
    let dests: Vec<_> = (0..70).map(|d| destination(&format!("d{d}"), "https://o.example/", json!(null))).collect();
    let streams: Vec<_> = (0..150)
        .map(|s| {
            let targets = [
                json!({"destinationId": format!("d{}", s % 70)}),
                json!({"destinationId": format!("d{}", (s * 7 + 3) % 70)}),
            ];
            stream(&format!("s{s:03}"), json!({"campaignId": "c1", "priority": 150 - s, "destinations": targets}))
        })
        .collect();
    let snap = snapshot(vec![campaign("c1", json!({"key": "k"}))], streams, dests);
    let c = snap.campaign("k").unwrap_or_else(|| panic!("k"));
    assert_eq!(c.streams().len(), 150);
    assert_eq!(c.streams().first().map(StreamEntry::id), Some("s149"), "the lowest priority first");
    let codec = ClickIdCodec::single(b"k");
    for s in 0..150 {
        let (stream_id, dest_id) = (format!("s{s:03}"), format!("d{}", (s * 7 + 3) % 70));
        let info = codec.verify(&codec.issue(1, "c1", &stream_id, &dest_id)).unwrap_or_else(|e| panic!("{e}"));
        let expected = Attribution { campaign_id: "c1", stream_id: Some(&stream_id), destination_id: Some(&dest_id) };
        assert_eq!(snap.resolve(&info), Some(expected), "stream {stream_id} via {dest_id}");
    }
}

#[test]
fn shared_fingerprints_attribute_nothing() {
    let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
    let mut map = Vec::new();
    assert!(index_fp(&mut map, [1; 4], &a));
    assert!(index_fp(&mut map, [2; 4], &b));
    assert!(index_fp(&mut map, [1; 4], &a), "the same ID again is fine");
    assert_eq!(find_fp(&[1; 4], &freeze(map.clone())), Some("a"));
    assert_eq!(find_fp(&[2; 4], &freeze(map.clone())), Some("b"));
    assert!(!index_fp(&mut map, [1; 4], &b));
    assert_eq!(find_fp(&[1; 4], &freeze(map.clone())), None);
    assert!(!index_fp(&mut map, [1; 4], &a), "stays ambiguous");
    assert_eq!(find_fp(&[0; 4], &freeze(map.clone())), None);
    assert_eq!(find_fp(&[2; 4], &freeze(map)), Some("b"));
}
