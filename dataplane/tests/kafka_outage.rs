//! Kafka stopped under clicks: redirects keep being answered from the click log, and once the broker is back
//! every click reaches ClickHouse, once.
//!
//! The test runs a Kafka broker of its own (`scripts/deps.sh kafka-broker`, on the jars `scripts/deps.sh`
//! installs) so it can kill it and start it again on the same data; it needs the test ClickHouse too.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use traffoflex_core::analytics::clickhouse::ClickHouse;
use traffoflex_core::bus::kafka::{KafkaProducer, create_topics};
use traffoflex_core::clickid::ClickIdCodec;
use traffoflex_core::store::{Collection, ConfigStore, SqliteStore};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_core::testenv;
use traffoflex_dataplane::clicklog::{ClickLog, ClickLogSettings, KafkaSink, ShipSettings};
use traffoflex_dataplane::ingest::{BatchSettings, Ingester};
use traffoflex_dataplane::traffic::config::LiveConfig;
use traffoflex_dataplane::traffic::server::{TrafficState, router};
use traffoflex_dataplane::traffic::visitor::TrustedProxies;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A broker of the test's own on `dir`.
struct Broker {
    dir: std::path::PathBuf,
    port: u16,
    controller: u16,
    child: Option<Child>,
}

impl Broker {
    fn start(&mut self) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/deps.sh");
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("log file");
        let child = Command::new("bash")
            .arg(script)
            .arg("kafka-broker")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .arg(self.controller.to_string())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the broker");
        self.child = Some(child);
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits until the broker takes metadata requests (topic creation is idempotent).
    async fn ready(&self, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if create_topics(&self.brokers(), prefix, 1).await.is_ok() {
                return;
            }
            let log = std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "the broker did not start:\n{log}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Kills the broker, as a crash or a lost node would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn clicks(addr: SocketAddr, n: usize) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    for i in 0..n {
        let r = client.get(format!("http://{addr}/c/outage?sub1=n{i}")).send().await.expect("click");
        assert_eq!(r.status(), 302, "every click is redirected");
        assert!(r.headers().contains_key("x-click-id"), "and recorded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_stopped_under_clicks_then_every_click_is_counted_in_clickhouse() {
    // The shared broker's presence says the test dependencies (and Kafka's jars) are installed.
    let (Some(_), Some(ch_url)) = (testenv::kafka_brokers(), testenv::clickhouse_url()) else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut broker = Broker { dir: dir.path().join("kafka"), port: free_port(), controller: free_port(), child: None };
    let prefix = format!("{}.", testenv::unique_name("outage"));
    broker.start();
    broker.ready(&prefix).await;

    // The traffic service on a store with one campaign, shipping its click log to this broker.
    let store: Arc<dyn ConfigStore> =
        Arc::new(SqliteStore::open(&dir.path().join("config.sqlite")).await.expect("store"));
    let dest = store
        .insert(Collection::Destinations, json!({"name": "A", "url": "https://offer.example/a", "enabled": true}))
        .await
        .expect("insert");
    let campaign = store
        .insert(Collection::Campaigns, json!({"key": "outage", "name": "Outage", "status": "active"}))
        .await
        .expect("insert");
    store
        .insert(
            Collection::Streams,
            json!({"campaignId": campaign["id"], "name": "all", "priority": 1, "enabled": true,
                   "selection": "waterfall", "destinations": [{"destinationId": dest["id"]}]}),
        )
        .await
        .expect("insert");
    store.bump_config_revision().await.expect("revision");
    let telemetry = Telemetry::new();
    let log = Arc::new(ClickLog::open(ClickLogSettings::new(dir.path().join("clicklog")), &telemetry).expect("log"));
    let sink = KafkaSink::new(KafkaProducer::new(&broker.brokers(), &prefix).expect("producer"));
    log.start_shipper(sink, ShipSettings::default()).expect("shipper");
    let config = Arc::new(LiveConfig::new(Arc::clone(&store)));
    config.refresh(true).await.expect("load");
    let state = TrafficState::new(
        config,
        Arc::clone(&log),
        ClickIdCodec::single(b"k"),
        TrustedProxies::default(),
        None,
        None,
        &telemetry,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(Arc::new(state)).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });

    clicks(addr, 200).await;
    broker.kill();
    let outage = Instant::now();
    clicks(addr, 300).await;
    let during = outage.elapsed();
    assert!(during < Duration::from_secs(20), "300 redirects took {during:?} with Kafka down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = telemetry.encode_metrics();
    let pending = metrics
        .lines()
        .find_map(|l| l.strip_prefix("traffoflex_clicklog_pending "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no pending gauge in\n{metrics}"));
    assert!(pending >= 300.0, "the clicks made while Kafka was down wait in the click log: {pending}");
    broker.start();
    broker.ready(&prefix).await;

    let ch = ClickHouse::new(&ch_url, &testenv::unique_name("outage"));
    ch.migrate().await.expect("migrate");
    let batch = BatchSettings { max_rows: 1_000, linger: Duration::from_millis(200) };
    let ingester =
        Ingester::new(&broker.brokers(), &prefix, &testenv::unique_name("group"), ch.clone(), batch, &telemetry)
            .expect("ingester");
    let stop = CancellationToken::new();
    let task = tokio::spawn(ingester.run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = ch.count_distinct("clicks", "click_id").await.expect("count");
        if stored >= 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(stored, 500, "every click, those made while Kafka was down included");
    // Redelivery after the outage may write a click twice; reports count each click ID once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ch.count_distinct("clicks", "click_id").await.expect("count"), 500);
    let today = chrono::Utc::now().date_naive();
    let report = traffoflex_core::analytics::Analytics::overview(
        &ch,
        &traffoflex_core::analytics::ReportQuery::new(today, today),
    )
    .await
    .expect("overview");
    assert_eq!(report.clicks, 500, "the report counts each click once");
    stop.cancel();
    task.await.expect("ingester task").expect("ingester stops cleanly");
    log.close().await;
    ch.drop_database().await.expect("cleanup");
}
