//! The ingester under faults: a poison message among good ones, an event ClickHouse refuses among good ones,
//! and ClickHouse unreachable for 30 s while events keep coming. Nothing is lost, nothing is counted twice, and
//! the consumer lag shows in the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use tokio_util::sync::CancellationToken;
use traffoflex_core::analytics::clickhouse::ClickHouse;
use traffoflex_core::analytics::{Analytics, ReportQuery};
use traffoflex_core::bus::Topic;
use traffoflex_core::bus::kafka::{KafkaProducer, create_topics};
use traffoflex_core::events::{ClickEvent, Event, now_millis};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_core::testenv::{self, CutProxy};
use traffoflex_dataplane::ingest::{BatchSettings, Ingester};

fn click(run: &str, i: usize) -> Event {
    Event::Click(ClickEvent {
        click_id: format!("{run}-{i:06}"),
        ts: now_millis(),
        campaign_id: "campaign".into(),
        cost: rust_decimal::Decimal::new(1, 2),
        currency: "USD".into(),
        ..Default::default()
    })
}

fn today() -> ReportQuery {
    let now = Utc::now().date_naive();
    ReportQuery::new(now.checked_sub_days(Days::new(1)).unwrap_or(now), now)
}

struct Setup {
    brokers: String,
    prefix: String,
    sink: ClickHouse,
    producer: KafkaProducer,
}

async fn setup(ch_url: &str, brokers: &str) -> Setup {
    let prefix = format!("{}.", testenv::unique_name("faults"));
    create_topics(brokers, &prefix, 1).await.expect("topics");
    let db = testenv::unique_name("faults");
    let sink = ClickHouse::new(ch_url, &db);
    sink.migrate().await.expect("migrate");
    let producer = KafkaProducer::new(brokers, &prefix).expect("producer");
    Setup { brokers: brokers.to_owned(), prefix, sink, producer }
}

/// The summed `traffoflex_ingest_lag_messages` of `topic`'s partitions, and how many partitions show one.
fn lag(telemetry: &Telemetry, topic: &str) -> (i64, usize) {
    let label = format!("topic=\"{topic}\"");
    telemetry
        .encode_metrics()
        .lines()
        .filter(|l| l.starts_with("traffoflex_ingest_lag_messages{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .fold((0, 0), |(sum, n), v| (sum + v, n + 1))
}

/// Waits until the lag gauge shows `topic`'s partitions, all at zero: everything read is stored and committed.
async fn wait_for_no_lag(telemetry: &Telemetry, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (behind, partitions) = lag(telemetry, topic);
        if partitions > 0 && behind == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the lag never reached zero: {}", telemetry.encode_metrics());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_clicks(analytics: &dyn Analytics, want: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = analytics.overview(&today()).await.map(|m| m.clicks).unwrap_or(seen);
        if seen >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_becomes_one_ingestion_error_and_the_rest_is_ingested() {
    let (Some(brokers), Some(ch_url)) = (testenv::kafka_brokers(), testenv::clickhouse_url()) else { return };
    let s = setup(&ch_url, &brokers).await;
    let good: Vec<Event> = (0..500).map(|i| click("poison", i)).collect();
    s.producer.publish(&good[..250]).await.expect("publish");
    s.producer
        .publish_raw(&[(Topic::Clicks, b"bad".as_slice(), b"{not an event".as_slice())])
        .await
        .expect("publish poison");
    s.producer.publish(&good[250..]).await.expect("publish");

    let telemetry = Telemetry::new();
    let batch = BatchSettings { max_rows: 100, linger: Duration::from_millis(100) };
    let ingester = Ingester::new(&s.brokers, &s.prefix, &testenv::unique_name("g"), s.sink.clone(), batch, &telemetry)
        .expect("ingester");
    let stop = CancellationToken::new();
    let task = tokio::spawn(ingester.run(stop.clone()));
    let analytics: &dyn Analytics = &s.sink;
    assert_eq!(wait_for_clicks(analytics, 500, Duration::from_secs(60)).await, 500, "every good event is ingested");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut errors = analytics.ingestion_errors(&today(), 10, 0).await.expect("errors");
    while errors.total == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        errors = analytics.ingestion_errors(&today(), 10, 0).await.expect("errors");
    }
    stop.cancel();
    task.await.expect("task").expect("ingester");
    assert_eq!(errors.total, 1, "{errors:?}");
    let e = &errors.rows[0];
    assert_eq!(e.topic, format!("{}clicks", s.prefix));
    assert!(e.error.contains("not a TraffoFlex event envelope"), "{}", e.error);
    assert!(e.payload.contains("{not an event"), "{}", e.payload);
    s.sink.drop_database().await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_clickhouse_refuses_becomes_one_ingestion_error_and_the_rest_is_stored() {
    let (Some(brokers), Some(ch_url)) = (testenv::kafka_brokers(), testenv::clickhouse_url()) else { return };
    let s = setup(&ch_url, &brokers).await;
    // A column that takes two-letter country codes only: ClickHouse refuses a click whose country is longer.
    s.sink
        .client()
        .query("ALTER TABLE clicks ADD COLUMN country_code FixedString(2) MATERIALIZED country")
        .execute()
        .await
        .expect("alter");
    let mut events: Vec<Event> = (0..500)
        .map(|i| match click("refused", i) {
            Event::Click(c) => Event::Click(ClickEvent { country: "DE".into(), ..c }),
            other => other,
        })
        .collect();
    let refused = ClickEvent { click_id: "refused-germany".into(), country: "GERMANY".into(), ..Default::default() };
    events.insert(317, Event::Click(ClickEvent { ts: now_millis(), ..refused }));
    s.producer.publish(&events).await.expect("publish");

    let telemetry = Telemetry::new();
    let batch = BatchSettings { max_rows: 1_000, linger: Duration::from_millis(500) };
    let ingester = Ingester::new(&s.brokers, &s.prefix, &testenv::unique_name("g"), s.sink.clone(), batch, &telemetry)
        .expect("ingester");
    let stop = CancellationToken::new();
    let task = tokio::spawn(ingester.run(stop.clone()));
    let analytics: &dyn Analytics = &s.sink;
    assert_eq!(wait_for_clicks(analytics, 500, Duration::from_secs(60)).await, 500, "every other event is stored");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut errors = analytics.ingestion_errors(&today(), 10, 0).await.expect("errors");
    while errors.total == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        errors = analytics.ingestion_errors(&today(), 10, 0).await.expect("errors");
    }
    // Once the batch is committed, the lag of every partition that had messages is zero.
    let clicks_topic = format!("{}clicks", s.prefix);
    wait_for_no_lag(&telemetry, &clicks_topic).await;
    stop.cancel();
    task.await.expect("task").expect("ingester");

    assert_eq!(errors.total, 1, "{errors:?}");
    let e = &errors.rows[0];
    assert_eq!(e.topic, clicks_topic);
    assert!(e.error.starts_with("ClickHouse refused the event: "), "{}", e.error);
    assert!(e.error.contains("FixedString(2)"), "ClickHouse's reason: {}", e.error);
    assert!(e.payload.contains("refused-germany") && e.payload.contains("GERMANY"), "{}", e.payload);
    // Every other event counted once: no replays, no doubles.
    assert_eq!(s.sink.count_rows("clicks").await.expect("count"), 500);
    let overview = analytics.overview(&today()).await.expect("overview");
    assert_eq!((overview.clicks, overview.cost), (500, rust_decimal::Decimal::new(500, 2)));
    let metrics = telemetry.encode_metrics();
    assert!(metrics.contains("traffoflex_ingest_refused_total 1\n"), "{metrics}");
    assert!(metrics.contains("traffoflex_ingest_ingestion_errors_total 1\n"), "{metrics}");
    assert!(metrics.contains("traffoflex_ingest_rows_total 500\n"), "{metrics}");
    s.sink.drop_database().await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_away_for_thirty_seconds_loses_and_doubles_nothing() {
    let (Some(brokers), Some(ch_url)) = (testenv::kafka_brokers(), testenv::clickhouse_url()) else { return };
    let s = setup(&ch_url, &brokers).await;
    let proxy = CutProxy::start(ch_url.trim_start_matches("http://")).await.expect("proxy");
    let through_proxy = ClickHouse::new(&format!("http://{}", proxy.addr()), s.sink.database());

    let telemetry = Telemetry::new();
    let batch = BatchSettings { max_rows: 1_000, linger: Duration::from_millis(200) };
    let ingester = Ingester::new(&s.brokers, &s.prefix, &testenv::unique_name("g"), through_proxy, batch, &telemetry)
        .expect("ingester");
    let stop = CancellationToken::new();
    let task = tokio::spawn(ingester.run(stop.clone()));

    // 20,000 events over about 40 s; ClickHouse is unreachable from the 5th to the 35th second.
    const TOTAL: usize = 20_000;
    let producer = Arc::new(s.producer.clone());
    let feed = {
        let producer = Arc::clone(&producer);
        tokio::spawn(async move {
            for second in 0..40 {
                let events: Vec<Event> = (second * 500..(second + 1) * 500).map(|i| click("outage", i)).collect();
                producer.publish(&events).await.expect("Kafka takes the events");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.cut();
    let at_cut = s.sink.count_distinct("clicks", "click_id").await.expect("count");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = s.sink.count_distinct("clicks", "click_id").await.expect("count");
    let (behind, partitions) = lag(&telemetry, &format!("{}clicks", s.prefix));
    assert!(partitions > 0 && behind >= 10_000, "the lag shows what waits in Kafka: {behind} in {partitions}");
    // At most the one insert that was in flight when the connection was cut may have landed.
    assert!(during <= at_cut + 1_000, "the outage kept events out ({at_cut} -> {during})");
    assert!(during < TOTAL as u64 - 10_000, "events kept coming during the outage ({during})");
    proxy.restore();
    feed.await.expect("feed");

    let analytics: &dyn Analytics = &s.sink;
    let clicks = wait_for_clicks(analytics, TOTAL as u64, Duration::from_secs(90)).await;
    wait_for_no_lag(&telemetry, &format!("{}clicks", s.prefix)).await;
    stop.cancel();
    task.await.expect("task").expect("ingester");
    assert_eq!(clicks, TOTAL as u64, "nothing lost, nothing doubled in the reports");
    let overview = analytics.overview(&today()).await.expect("overview");
    assert_eq!(overview.cost, rust_decimal::Decimal::new(TOTAL as i64, 2), "cost counted once per click");
    assert!(telemetry.encode_metrics().contains("traffoflex_ingest_failed_writes_total"), "failed writes are visible");
    s.sink.drop_database().await.expect("cleanup");
}
