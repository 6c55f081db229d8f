//! Events produced to Kafka are consumed in a group and stored in ClickHouse: every one, once.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use traffoflex_core::analytics::clickhouse::ClickHouse;
use traffoflex_core::bus::kafka::{KafkaProducer, create_topics};
use traffoflex_core::events::{ClickEvent, Event, now_millis};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_core::testenv;
use traffoflex_dataplane::ingest::{BatchSettings, Ingester};

const EVENTS: usize = 10_000;

fn click(i: usize) -> Event {
    Event::Click(ClickEvent {
        click_id: format!("click-{i:05}"),
        ts: now_millis(),
        campaign_id: format!("campaign-{}", i % 7),
        country: "DE".into(),
        subs: vec![format!("s{i}")],
        cost: rust_decimal::Decimal::new(5, 2),
        currency: "USD".into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_clicks_reach_clickhouse_exactly_once() {
    let (Some(brokers), Some(ch_url)) = (testenv::kafka_brokers(), testenv::clickhouse_url()) else { return };
    let prefix = format!("{}.", testenv::unique_name("it"));
    let db = testenv::unique_name("it");

    create_topics(&brokers, &prefix, 1).await.expect("topics are created");
    let sink = ClickHouse::new(&ch_url, &db);
    assert_eq!(sink.migrate().await.expect("migrations apply"), vec![1]);
    assert!(sink.migrate().await.expect("migrations re-run").is_empty(), "a second migrate applies nothing");

    let producer = KafkaProducer::new(&brokers, &prefix).expect("producer");
    let events: Vec<Event> = (0..EVENTS).map(click).collect();
    for chunk in events.chunks(1_000) {
        producer.publish(chunk).await.expect("Kafka acknowledges every message");
    }

    let telemetry = Telemetry::new();
    let batch = BatchSettings { max_rows: 2_000, linger: Duration::from_millis(200) };
    let group = testenv::unique_name("group");
    let ingester = Ingester::new(&brokers, &prefix, &group, sink.clone(), batch, &telemetry).expect("ingester");
    let stop = CancellationToken::new();
    let task = tokio::spawn(ingester.run(stop.clone()));

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = sink.count_distinct("clicks", "click_id").await.expect("count");
        if stored >= EVENTS as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.cancel();
    task.await.expect("ingester task").expect("ingester stops cleanly");

    assert_eq!(stored, EVENTS as u64, "every produced click is in ClickHouse");
    let rows = sink.count_rows("clicks").await.expect("count rows");
    assert_eq!(rows, EVENTS as u64, "and none twice");
    let metrics = telemetry.encode_metrics();
    assert!(metrics.contains(&format!("traffoflex_ingest_rows_total {EVENTS}")), "{metrics}");
    sink.drop_database().await.expect("cleanup");
}
