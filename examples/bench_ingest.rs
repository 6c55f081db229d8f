//! Ingestion throughput: produces N click events to Kafka, then times the ingester storing all of them in
//! ClickHouse (end to end: Kafka read, decode, ClickHouse insert, offset commit).
//!
//! `eval "$(scripts/deps.sh start)"; cargo run --release --example bench_ingest -- 1000000`

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use traffoflex_core::analytics::clickhouse::ClickHouse;
use traffoflex_core::bus::kafka::{KafkaProducer, create_topics};
use traffoflex_core::events::{ClickEvent, Event, now_millis};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_core::testenv;
use traffoflex_dataplane::ingest::{BatchSettings, Ingester};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let brokers = std::env::var("TRAFFOFLEX_TEST_KAFKA_BROKERS")?;
    let ch_url = std::env::var("TRAFFOFLEX_TEST_CLICKHOUSE_URL")?;
    let name = testenv::unique_name("bench");
    let prefix = format!("{name}.");
    create_topics(&brokers, &prefix, 1).await?;
    let sink = ClickHouse::new(&ch_url, &name);
    sink.migrate().await?;
    let producer = KafkaProducer::new(&brokers, &prefix)?;

    let started = Instant::now();
    let now = now_millis();
    for chunk_start in (0..n).step_by(20_000) {
        let events: Vec<Event> = (chunk_start..(chunk_start + 20_000).min(n))
            .map(|i| {
                Event::Click(ClickEvent {
                    click_id: format!("b{i:09}"),
                    ts: now,
                    campaign_id: format!("campaign-{}", i % 1000),
                    stream_id: format!("stream-{}", i % 5000),
                    destination_id: format!("destination-{}", i % 50),
                    country: ["DE", "US", "FR", "ES"][i % 4].into(),
                    device_type: "mobile".into(),
                    user_agent: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148".into(),
                    subs: vec![format!("s{i}")],
                    cost: rust_decimal::Decimal::new(5, 2),
                    currency: "USD".into(),
                    ..Default::default()
                })
            })
            .collect();
        producer.publish(&events).await?;
    }
    let produced = started.elapsed();
    println!("produced {n} events in {produced:.2?} ({:.0}/s)", n as f64 / produced.as_secs_f64());

    let telemetry = Telemetry::new();
    let cpu_before = cpu_seconds();
    let ingester =
        Ingester::new(&brokers, &prefix, &format!("{name}-g"), sink.clone(), BatchSettings::default(), &telemetry)?;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(ingester.run(stop.clone()));
    loop {
        let stored = sink.count_rows("clicks").await?;
        if stored >= n as u64 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {stored} of {n} stored after 10 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ingested = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    stop.cancel();
    task.await??;
    println!(
        "ingested {n} events into ClickHouse in {ingested:.2?} ({:.0}/s, consumer group join included)",
        n as f64 / ingested.as_secs_f64()
    );
    // The ingester's own CPU (this process; Kafka and ClickHouse not included): the cost per event, which
    // other load on the machine does not change as much as the rate.
    println!("ingester CPU {cpu:.2} s ({:.2} µs per event)", cpu * 1e6 / n as f64);
    sink.drop_database().await?;
    Ok(())
}

/// User plus system CPU time of this process so far, in seconds (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which is in parentheses and may hold spaces): utime and stime are the
    // 12th and 13th, in clock ticks of 1/100 s.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
