//! `traffoflex ingest` killed with SIGKILL in the middle of 100,000 events and started again: the reports
//! show exactly what was produced — every click, conversion, cent of cost and cent of revenue, once.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use rust_decimal::Decimal;
use traffoflex_core::analytics::clickhouse::ClickHouse;
use traffoflex_core::analytics::{Analytics, ReportQuery};
use traffoflex_core::bus::kafka::{KafkaProducer, create_topics};
use traffoflex_core::events::{ClickEvent, ConversionEvent, ConversionStatus, Event, now_millis};
use traffoflex_core::testenv;

const CLICKS: usize = 90_000;
const CONVERSIONS: usize = 10_000;

fn events() -> Vec<Event> {
    let now = now_millis();
    let mut out = Vec::with_capacity(CLICKS + CONVERSIONS);
    for i in 0..CLICKS {
        out.push(Event::Click(ClickEvent {
            click_id: format!("k-{i:06}"),
            ts: now,
            campaign_id: format!("c{}", i % 10),
            cost: Decimal::new(3, 2),
            currency: "USD".into(),
            is_unique: i % 2 == 0,
            ..Default::default()
        }));
        if i % 9 == 0 && i / 9 < CONVERSIONS {
            out.push(Event::Conversion(ConversionEvent {
                conversion_id: format!("v-{i:06}"),
                ts: now,
                revision: 1,
                network_id: "net".into(),
                transaction_id: format!("tx-{i:06}"),
                click_id: format!("k-{i:06}"),
                status: ConversionStatus::Approved,
                payout: Decimal::new(125, 2),
                revenue: Decimal::new(125, 2),
                currency: "USD".into(),
                campaign_id: format!("c{}", i % 10),
                attributed: true,
                ..Default::default()
            }));
        }
    }
    out
}

fn ingest(brokers: &str, ch: &str, db: &str, prefix: &str, group: &str) -> Child {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    Command::new(env!("CARGO_BIN_EXE_traffoflex"))
        .args(["ingest", "--kafka-brokers", brokers, "--clickhouse-url", ch, "--clickhouse-database", db])
        .args(["--kafka-topic-prefix", prefix, "--group", group, "--batch-rows", "5000", "--linger-ms", "100"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ingest starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ingester_resumes_without_losing_or_doubling() {
    let (Some(brokers), Some(ch_url)) = (testenv::kafka_brokers(), testenv::clickhouse_url()) else { return };
    let name = testenv::unique_name("sigkill");
    let prefix = format!("{name}.");
    create_topics(&brokers, &prefix, 1).await.expect("topics");
    let producer = KafkaProducer::new(&brokers, &prefix).expect("producer");
    let all = events();
    assert_eq!(all.len(), CLICKS + CONVERSIONS);
    for chunk in all.chunks(10_000) {
        producer.publish(chunk).await.expect("Kafka acknowledges");
    }

    let ch = ClickHouse::new(&ch_url, &name);
    let group = format!("{name}-group");
    let mut first = ingest(&brokers, &ch_url, &name, &prefix, &group);
    // Kill it once it is well into the stream.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stored = ch.count_distinct("clicks", "click_id").await.unwrap_or(0);
        if stored >= 20_000 {
            break;
        }
        assert!(Instant::now() < deadline, "the ingester made no progress ({stored})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let at_kill = ch.count_distinct("clicks", "click_id").await.expect("count");
    assert!(at_kill < CLICKS as u64, "killed mid-stream ({at_kill} of {CLICKS})");

    let mut second = ingest(&brokers, &ch_url, &name, &prefix, &group);
    let now = Utc::now().date_naive();
    let q = ReportQuery::new(now.checked_sub_days(Days::new(1)).unwrap_or(now), now);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut overview = ch.overview(&q).await.expect("overview");
    while (overview.clicks < CLICKS as u64 || overview.conversions < CONVERSIONS as u64) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        overview = ch.overview(&q).await.expect("overview");
    }
    second.kill().expect("stop");
    second.wait().expect("reaped");

    assert_eq!(overview.clicks, CLICKS as u64);
    assert_eq!(overview.unique_clicks, CLICKS as u64 / 2);
    assert_eq!(overview.conversions, CONVERSIONS as u64);
    assert_eq!(overview.cost, Decimal::new(3 * CLICKS as i64, 2));
    assert_eq!(overview.revenue, Decimal::new(125 * CONVERSIONS as i64, 2));
    assert_eq!(overview.profit, overview.revenue - overview.cost);
    ch.drop_database().await.expect("cleanup");
}
