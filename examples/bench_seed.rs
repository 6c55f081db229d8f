//! Seeds a data directory with a realistic routing configuration for the traffic benchmark: N campaigns
//! (`bench-00000` …), each with five streams with conditions over country, device, language, a sub ID and
//! a query parameter, and a catch-all, over a shared pool of destinations.
//!
//! Streams of different campaigns repeat each other's conditions, as streams made from shared templates do;
//! with `distinct` each stream's conditions differ from every other's (an extra rule naming the stream).
//!
//! `cargo run --release --example bench_seed -- DATA_DIR CAMPAIGNS [distinct]`

use std::path::PathBuf;

use serde_json::json;
use traffoflex_core::store::{Collection, ConfigStore, SqliteStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: bench_seed DATA_DIR CAMPAIGNS")?);
    let campaigns: usize = args.next().ok_or("usage: bench_seed DATA_DIR CAMPAIGNS")?.parse()?;
    let distinct = args.next().as_deref() == Some("distinct");
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(&dir.join("config.sqlite")).await?;
    let mut destinations = Vec::new();
    for d in 0..50 {
        let doc = json!({"name": format!("Offer {d}"), "url": format!("https://offer{d}.example/land?cid={{clickId}}&s1={{sub1}}&geo={{country}}"), "enabled": true});
        destinations
            .push(store.insert(Collection::Destinations, doc).await?["id"].as_str().unwrap_or_default().to_owned());
    }
    let countries =
        [["DE", "AT", "CH"], ["US", "CA", "GB"], ["FR", "BE", "LU"], ["ES", "PT", "IT"], ["PL", "CZ", "SK"]];
    for c in 0..campaigns {
        let campaign = json!({"key": format!("bench-{c:05}"), "name": format!("Bench {c}"), "status": "active",
            "trafficbackUrl": "https://fallback.example/tb", "costModel": {"type": "cpc", "value": "0.01", "currency": "USD"}});
        let id = store.insert(Collection::Campaigns, campaign).await?["id"].as_str().unwrap_or_default().to_owned();
        for s in 0..5 {
            let d = |k: usize| destinations[(c * 7 + s * 3 + k) % destinations.len()].clone();
            let mut conditions = match s {
                4 => json!({"all": [{"field": "isBot", "op": "eq", "value": false}]}),
                _ => json!({"all": [
                    {"field": "country", "op": "in", "values": countries[(c + s) % countries.len()]},
                    {"any": [{"field": "deviceType", "op": "eq", "value": if s % 2 == 0 { "mobile" } else { "desktop" }},
                             {"field": "param:vip", "op": "exists"}]},
                    {"not": {"field": "sub2", "op": "startsWith", "value": "test"}}
                ]}),
            };
            if distinct {
                conditions = json!({"all": [conditions, {"field": "sub3", "op": "ne", "value": format!("c{c}-s{s}")}]});
            }
            let stream = json!({"campaignId": id, "name": format!("Stream {s}"), "priority": s * 10, "enabled": true,
                "conditions": conditions, "selection": "weighted",
                "destinations": [{"destinationId": d(0), "weight": 60}, {"destinationId": d(1), "weight": 30}, {"destinationId": d(2), "weight": 10}]});
            store.insert(Collection::Streams, stream).await?;
        }
    }
    store.bump_config_revision().await?;
    println!("seeded {campaigns} campaigns with 5 streams each into {}", dir.display());
    Ok(())
}
