//! Clicks appended to the click log reach Kafka through the `KafkaSink`: every one of them.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use traffoflex_core::bus::Topic;
use traffoflex_core::bus::kafka::{KafkaConsumer, KafkaProducer, create_topics};
use traffoflex_core::events::{self, ClickEvent, Event, now_millis};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_core::testenv;
use traffoflex_dataplane::clicklog::{Appended, ClickLog, ClickLogSettings, KafkaSink, Record, ShipSettings};

const CLICKS: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_logged_clicks_arrive_in_kafka() {
    let Some(brokers) = testenv::kafka_brokers() else { return };
    let prefix = format!("{}.", testenv::unique_name("clicklog"));
    create_topics(&brokers, &prefix, 1).await.expect("topics are created");

    let dir = tempfile::tempdir().unwrap();
    let log = ClickLog::open(ClickLogSettings::new(dir.path()), &Telemetry::new()).expect("the log opens");
    let producer = KafkaProducer::new(&brokers, &prefix).expect("producer");
    log.start_shipper(KafkaSink::new(producer), ShipSettings { max_records: 2_000, ..Default::default() })
        .expect("the shipper starts");

    let appends: Vec<_> = (0..CLICKS)
        .map(|i| {
            let event = Event::Click(ClickEvent {
                click_id: format!("clicklog-{i:05}"),
                ts: now_millis(),
                campaign_id: format!("campaign-{}", i % 5),
                ..Default::default()
            });
            log.append(Record::from_event(&event))
        })
        .collect();
    for outcome in futures::future::join_all(appends).await {
        assert_eq!(outcome, Appended::Durable);
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    while log.stats().pending > 0 {
        assert!(Instant::now() < deadline, "the log was not shipped: {:?}", log.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = log.stats();
    assert_eq!((stats.shipped, stats.dropped), (CLICKS as u64, 0));
    println!("{CLICKS} clicks, {} fsyncs, {} ship errors", stats.fsyncs, stats.ship_errors);
    log.close().await;

    let group = testenv::unique_name("clicklog-reader");
    let consumer = KafkaConsumer::new(&brokers, &group, &[Topic::Clicks.name(&prefix)]).expect("consumer");
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < CLICKS && Instant::now() < deadline {
        let batch = consumer.next_batch(5_000, Duration::from_secs(1), Duration::from_millis(100)).await.expect("read");
        for m in batch {
            match events::decode(&m.payload).expect("a click event") {
                Event::Click(c) => seen.insert(c.click_id),
                other => panic!("unexpected event {other:?}"),
            };
        }
    }
    let expected: HashSet<String> = (0..CLICKS).map(|i| format!("clicklog-{i:05}")).collect();
    assert_eq!(seen.len(), CLICKS, "{} of {CLICKS} distinct clicks arrived", seen.len());
    assert_eq!(seen, expected);
}
