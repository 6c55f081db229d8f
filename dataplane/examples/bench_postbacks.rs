//! Postbacks per second with dedupe, on SQLite and on the MongoDB-wire store (FerretDB in development),
//! against a baseline run beside it: the store's exactly-once conversion write alone (`record`), with the
//! same concurrency. The postback run goes through HTTP, token authentication, the template, click-ID
//! attribution, the write and the durable event log; one postback in ten repeats an earlier one (answered
//! `duplicate`).
//!
//! `eval "$(scripts/deps.sh start)"; cargo run --release -p traffoflex-dataplane --example bench_postbacks -- 20000 32`
//! (count, concurrency). Without `TRAFFOFLEX_TEST_MONGO_URI` only SQLite runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use rust_decimal::Decimal;
use serde_json::json;
use traffoflex_core::clickid::ClickIdCodec;
use traffoflex_core::events::now_millis;
use traffoflex_core::store::{Collection, ConfigStore, MongoStore, SqliteStore};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_core::testenv;
use traffoflex_crds::ConversionStatus;
use traffoflex_dataplane::clicklog::{Batch, ClickLog, ClickLogSettings, ShipSettings, Sink, SinkError};
use traffoflex_dataplane::postback::config::LivePostbackConfig;
use traffoflex_dataplane::postback::record::{ConversionDoc, record};
use traffoflex_dataplane::postback::server::{PostbackState, router};
use traffoflex_dataplane::traffic::visitor::TrustedProxies;

/// Ships nowhere: the bus is not what is measured.
struct Discard;

#[async_trait]
impl Sink for Discard {
    async fn send(&self, _batch: &Batch) -> Result<(), SinkError> {
        Ok(())
    }
}

struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn summarise(n: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Run {
    latencies.sort();
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)).copied();
    Run {
        per_sec: n as f64 / elapsed.as_secs_f64(),
        p50: at(0.50).unwrap_or_default(),
        p99: at(0.99).unwrap_or_default(),
    }
}

/// Runs `job(i)` for `i in 0..n` with `concurrency` in flight; the rate and latencies.
async fn drive<F, Fut>(n: usize, concurrency: usize, job: F) -> Run
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let latencies: Vec<Duration> = futures::stream::iter(0..n)
        .map(|i| {
            let fut = job(i);
            async move {
                let t = Instant::now();
                fut.await;
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    summarise(n, started.elapsed(), latencies)
}

/// The transaction of the `i`th postback: one in ten repeats the one nine before it (a duplicate).
fn repeat_every_tenth(i: usize) -> usize {
    if i % 10 == 9 { i - 9 } else { i }
}

fn doc(network_id: &str, tx: String) -> ConversionDoc {
    ConversionDoc {
        network_id: network_id.to_owned(),
        network_key: "bench".into(),
        transaction_id: tx.clone(),
        click_id: format!("click-{tx}"),
        status: ConversionStatus::Approved,
        payout: Decimal::new(1250, 2),
        currency: "USD".into(),
        revenue: Decimal::new(1250, 2),
        event_type: String::new(),
        campaign_id: "campaign".into(),
        stream_id: String::new(),
        destination_id: String::new(),
        traffic_source_id: String::new(),
        team_id: "default".into(),
        attributed: true,
        click_ts: 0,
        click: None,
        ts: now_millis(),
        revision: 1,
    }
}

async fn bench(
    name: &str,
    store: Arc<dyn ConfigStore>,
    n: usize,
    concurrency: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    store.ensure_indexes().await?;
    let template = store
        .insert(
            Collection::PostbackTemplates,
            json!({"name": "S2S", "params": {"clickId": "clickid", "transactionId": "txid", "payout": "payout"},
                   "statusMap": {}, "defaultStatus": "approved"}),
        )
        .await?;
    let network = store
        .insert(
            Collection::AffiliateNetworks,
            json!({"key": "bench", "name": "Bench", "postbackTemplateId": template["id"],
                   "auth": {"mode": "token", "token": "t0k"}}),
        )
        .await?;
    let campaign =
        store.insert(Collection::Campaigns, json!({"key": "bench", "name": "Bench", "status": "active"})).await?;
    let campaign_id = campaign["id"].as_str().unwrap_or_default().to_owned();
    store.bump_config_revision().await?;

    // The baseline: the exactly-once write alone.
    let network_id = network["id"].as_str().unwrap_or_default().to_owned();
    let base = drive(n, concurrency, |i| {
        let store = Arc::clone(&store);
        let d = doc(&network_id, format!("base-{}", repeat_every_tenth(i)));
        async move {
            record(store.as_ref(), d).await.expect("record");
        }
    })
    .await;

    let telemetry = Telemetry::new();
    let log = Arc::new(ClickLog::open(ClickLogSettings::new(dir.path().join("postbacklog")), &telemetry)?);
    log.start_shipper(Discard, ShipSettings::default())?;
    let config = Arc::new(LivePostbackConfig::new(Arc::clone(&store)));
    config.refresh(true).await?;
    let codec = ClickIdCodec::single(b"bench key");
    let state =
        PostbackState::new(config, Arc::clone(&log), codec.clone(), TrustedProxies::default(), None, &telemetry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = router(Arc::new(state)).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let click = codec.issue(now_millis(), &campaign_id, "", "");
    let failures = Arc::new(AtomicUsize::new(0));
    let run = drive(n, concurrency, |i| {
        let tx = repeat_every_tenth(i);
        let url = format!("http://{addr}/postback/bench?token=t0k&clickid={click}&txid=pb-{tx}&payout=12.50");
        let req = client.get(url);
        let failures = Arc::clone(&failures);
        async move {
            match req.send().await {
                Ok(r) if r.status().is_success() => {}
                _ => {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
    .await;
    log.close().await;
    let failed = failures.load(Ordering::Relaxed);
    println!(
        "| {name} | store write alone (baseline) | {concurrency} | {:.0} | {:.2} | {:.2} |",
        base.per_sec,
        base.p50.as_secs_f64() * 1e3,
        base.p99.as_secs_f64() * 1e3
    );
    println!(
        "| {name} | postback over HTTP | {concurrency} | {:.0} | {:.2} | {:.2} |",
        run.per_sec,
        run.p50.as_secs_f64() * 1e3,
        run.p99.as_secs_f64() * 1e3
    );
    println!("  {name}: {:.2}x of the baseline, {failed} failed of {n}", run.per_sec / base.per_sec);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20_000);
    let concurrency: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(32);
    println!("{n} postbacks (1 in 10 a duplicate), {concurrency} in flight");
    println!("| store | path | in flight | per second | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(&dir.path().join("config.sqlite")).await?;
    bench("SQLite", Arc::new(sqlite), n, concurrency).await?;
    if let Some(uri) = testenv::mongo_uri() {
        let mongo = MongoStore::connect(&uri, Some(&testenv::unique_name("bench_pb"))).await?;
        bench("FerretDB", Arc::new(mongo), n, concurrency).await?;
    }
    Ok(())
}
