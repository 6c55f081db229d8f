//! Caps and bestRoi over HTTP, with their figures read from analytics: click caps exact within one process
//! before analytics has a single click, windows in hours, conversion and revenue caps from analytics, fail-open
//! when analytics can't be read, and bestRoi sending traffic where it earns most.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use traffoflex_core::analytics::{Analytics, ClickHouse, ReportQuery, SqliteAnalytics};
use traffoflex_core::clickid::ClickIdCodec;
use traffoflex_core::events::{ClickEvent, ConversionEvent, ConversionStatus, Event};
use traffoflex_core::store::{Collection, ConfigStore, SqliteStore};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_dataplane::analytics_sink::AnalyticsSink;
use traffoflex_dataplane::clicklog::{ClickLog, ClickLogSettings, ShipSettings};
use traffoflex_dataplane::traffic::config::LiveConfig;
use traffoflex_dataplane::traffic::server::{TrafficState, router};
use traffoflex_dataplane::traffic::stats::DestinationStats;
use traffoflex_dataplane::traffic::visitor::TrustedProxies;

struct Fixture {
    base: String,
    store: Arc<dyn ConfigStore>,
    analytics: Arc<dyn Analytics>,
    config: Arc<LiveConfig>,
    stats: Arc<DestinationStats>,
    telemetry: Telemetry,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// The traffic service on a fresh store, its clicks shipped into SQLite analytics.
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn ConfigStore> =
            Arc::new(SqliteStore::open(&dir.path().join("config.sqlite")).await.expect("store"));
        let analytics: Arc<dyn Analytics> =
            Arc::new(SqliteAnalytics::open(&dir.path().join("analytics.sqlite")).await.expect("analytics"));
        let telemetry = Telemetry::new();
        let log =
            Arc::new(ClickLog::open(ClickLogSettings::new(dir.path().join("clicklog")), &telemetry).expect("log"));
        let ship = ShipSettings { linger: Duration::from_millis(5), ..ShipSettings::default() };
        log.start_shipper(AnalyticsSink::new(Arc::clone(&analytics)), ship).expect("shipper");
        let config = Arc::new(LiveConfig::new(Arc::clone(&store)));
        let stats = Arc::new(DestinationStats::new().register(&telemetry));
        let state = TrafficState::new(
            Arc::clone(&config),
            log,
            ClickIdCodec::single(b"test key"),
            TrustedProxies::default(),
            None,
            None,
            &telemetry,
        )
        .with_stats(Arc::clone(&stats));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = router(Arc::new(state)).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base: format!("http://{addr}"), store, analytics, config, stats, telemetry, _dir: dir }
    }

    async fn insert(&self, coll: Collection, doc: Value) -> String {
        let stored = self.store.insert(coll, doc).await.expect("insert");
        stored["id"].as_str().expect("id").to_owned()
    }

    async fn destination(&self, name: &str, caps: Value) -> String {
        let url = format!("https://offer.example/{name}?cid={{clickId}}");
        self.insert(Collection::Destinations, json!({"name": name, "url": url, "enabled": true, "caps": caps})).await
    }

    /// A campaign `key` with one stream over `destinations` (waterfall unless `stream` says otherwise).
    async fn campaign(&self, key: &str, destinations: &[&str], stream: Value) -> String {
        let campaign = self.insert(Collection::Campaigns, json!({"key": key, "name": key, "status": "active"})).await;
        let targets: Vec<Value> = destinations.iter().map(|d| json!({"destinationId": d, "weight": 1})).collect();
        let mut doc = json!({"campaignId": campaign, "name": "all", "priority": 1, "enabled": true,
            "selection": "waterfall", "destinations": targets});
        if let (Some(doc), Some(extra)) = (doc.as_object_mut(), stream.as_object()) {
            doc.extend(extra.clone());
        }
        self.insert(Collection::Streams, doc).await;
        self.store.bump_config_revision().await.expect("revision");
        self.config.refresh(true).await.expect("load");
        campaign
    }

    /// The destination name a click on `/c/{key}` goes to.
    async fn click(&self, key: &str) -> String {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let res = client.get(format!("{}/c/{key}", self.base)).send().await.expect("click");
        assert_eq!(res.status(), 302, "click on {key}");
        let location = res.headers()["location"].to_str().expect("location").to_owned();
        let path = location.strip_prefix("https://offer.example/").expect("an offer URL");
        path.split('?').next().unwrap_or_default().to_owned()
    }

    async fn refresh(&self) {
        let loaded = self.config.current();
        self.stats.refresh(self.analytics.as_ref(), &loaded.snapshot).await.expect("figures read");
    }

    /// Waits until analytics holds `n` clicks today.
    async fn ingested(&self, n: u64) {
        let today = Utc::now().date_naive();
        for _ in 0..200 {
            let m = self.analytics.overview(&ReportQuery::new(today, today)).await.expect("overview");
            if m.clicks >= n {
                assert_eq!(m.clicks, n);
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{n} clicks never reached analytics");
    }
}

fn past_click(id: &str, campaign: &str, destination: &str, hours_ago: i64, cost: &str) -> Event {
    Event::Click(ClickEvent {
        click_id: id.to_owned(),
        ts: Utc::now().timestamp_millis() - hours_ago * 3_600_000,
        campaign_id: campaign.to_owned(),
        destination_id: destination.to_owned(),
        cost: cost.parse().expect("cost"),
        currency: "USD".into(),
        ..ClickEvent::default()
    })
}

fn approved(id: &str, campaign: &str, destination: &str, revenue: &str) -> Event {
    let revenue: Decimal = revenue.parse().expect("revenue");
    Event::Conversion(ConversionEvent {
        conversion_id: id.to_owned(),
        ts: Utc::now().timestamp_millis() - 60_000,
        revision: 1,
        network_id: "net".into(),
        transaction_id: id.to_owned(),
        click_id: format!("click-of-{id}"),
        status: ConversionStatus::Approved,
        payout: revenue,
        currency: "USD".into(),
        revenue,
        campaign_id: campaign.to_owned(),
        destination_id: destination.to_owned(),
        attributed: true,
        ..ConversionEvent::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_click_cap_is_exact_in_one_process_before_analytics_sees_a_click() {
    let f = Fixture::start().await;
    let a = f.destination("a", json!({"dailyClicks": 3})).await;
    let b = f.destination("b", json!(null)).await;
    f.campaign("capped", &[&a, &b], json!({})).await;

    // Analytics has not been read at all: the process's own clicks are the count.
    let mut went = Vec::new();
    for _ in 0..5 {
        went.push(f.click("capped").await);
    }
    assert_eq!(went, ["a", "a", "a", "b", "b"]);

    // Once analytics has the clicks, its figure and the process's own count agree: still capped, not doubled.
    f.ingested(5).await;
    f.refresh().await;
    assert_eq!(f.click("capped").await, "b");
    let metrics = f.telemetry.encode_metrics();
    assert!(metrics.contains("traffoflex_traffic_stats_refreshes_total{outcome=\"ok\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_count_analytics_figures_within_their_window() {
    let f = Fixture::start().await;
    let a = f.destination("a", json!({"rules": [{"metric": "clicks", "limit": 6, "windowHours": 2}]})).await;
    let b = f.destination("b", json!({"rules": [{"metric": "revenue", "limit": "10.00", "windowHours": 24}]})).await;
    let c = f.destination("c", json!({"rules": [{"metric": "cost", "limit": "1.00", "windowHours": 1}]})).await;
    let d = f.destination("d", json!({"rules": [{"metric": "conversions", "limit": 2, "windowHours": 168}]})).await;
    let e = f.destination("e", json!(null)).await;
    let campaign = f.campaign("windows", &[&a, &b, &d, &c, &e], json!({})).await;

    let mut events = Vec::new();
    // `a`: 5 clicks within its 2 hours, 10 more three hours ago that no longer count.
    events.extend((0..5).map(|i| past_click(&format!("a-new-{i}"), &campaign, &a, 1, "0")));
    events.extend((0..10).map(|i| past_click(&format!("a-old-{i}"), &campaign, &a, 3, "0")));
    // `b`: 12.00 of approved revenue today.
    events.push(approved("b-1", &campaign, &b, "12.00"));
    // `c`: 0.60 of cost in the last hour.
    events.push(past_click("c-1", &campaign, &c, 0, "0.60"));
    // `d`: 2 approved conversions this week.
    events.push(approved("d-1", &campaign, &d, "1"));
    events.push(approved("d-2", &campaign, &d, "1"));
    f.analytics.insert_events(events).await.expect("insert");
    f.refresh().await;

    assert_eq!(f.click("windows").await, "a", "5 clicks in the last 2 hours, under 6");
    // Its sixth click in the window reaches the cap; `b` and `d` are capped by analytics' figures.
    for _ in 0..2 {
        assert_eq!(f.click("windows").await, "c", "0.60 + 0.00 of cost, under 1.00");
    }
    // Cost clicks of 0.25 each: 0.60 + 0.25 + 0.25 = 1.10 after two more.
    let e2 = f.destination("e2", json!(null)).await;
    let priced = f
        .insert(
            Collection::Campaigns,
            json!({"key": "priced", "name": "priced", "status": "active",
        "costModel": {"type": "cpc", "value": "0.25", "currency": "USD"}}),
        )
        .await;
    f.insert(
        Collection::Streams,
        json!({"campaignId": priced, "name": "all", "priority": 1, "enabled": true,
        "selection": "waterfall", "destinations": [{"destinationId": c}, {"destinationId": e2}]}),
    )
    .await;
    f.store.bump_config_revision().await.expect("revision");
    f.config.refresh(true).await.expect("load");
    assert_eq!(f.click("priced").await, "c", "0.60 of cost");
    assert_eq!(f.click("priced").await, "c", "0.85 of cost");
    assert_eq!(f.click("priced").await, "e2", "1.10 of cost reaches the 1.00 cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_fail_open_when_analytics_cannot_be_read() {
    let f = Fixture::start().await;
    let a = f.destination("a", json!({"rules": [{"metric": "revenue", "limit": "1", "windowHours": 24}]})).await;
    let b = f.destination("b", json!(null)).await;
    let campaign = f.campaign("open", &[&a, &b], json!({})).await;
    f.analytics.insert_events(vec![approved("a-1", &campaign, &a, "5")]).await.expect("insert");
    f.refresh().await;
    assert_eq!(f.click("open").await, "b", "analytics says `a` earned 5 of its 1");

    // ClickHouse on a port nothing listens on: the figures become unknown once stale, and the cap opens.
    let down = ClickHouse::new("http://127.0.0.1:9", "traffoflex");
    let loaded = f.config.current();
    assert!(f.stats.refresh(&down, &loaded.snapshot).await.is_err());
    assert_eq!(f.click("open").await, "b", "the last figures stand while they are fresh");
    let metrics = f.telemetry.encode_metrics();
    assert!(metrics.contains("traffoflex_traffic_stats_refreshes_total{outcome=\"error\"} 1"), "{metrics}");

    let fresh = Fixture::start().await;
    let a = fresh.destination("a", json!({"rules": [{"metric": "revenue", "limit": "1", "windowHours": 24}]})).await;
    let b = fresh.destination("b", json!(null)).await;
    fresh.campaign("open", &[&a, &b], json!({})).await;
    let loaded = fresh.config.current();
    assert!(fresh.stats.refresh(&down, &loaded.snapshot).await.is_err());
    assert_eq!(fresh.click("open").await, "a", "never read: the revenue cap fails open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_roi_sends_clicks_where_they_earn_most_once_figures_exist() {
    let f = Fixture::start().await;
    let a = f.destination("a", json!(null)).await;
    let b = f.destination("b", json!(null)).await;
    let roi =
        json!({"selection": "bestRoi", "bestRoi": {"windowHours": 24, "minClicks": 10, "fallback": "roundRobin"}});
    let campaign = f.campaign("roi", &[&a, &b], roi).await;

    // No figures: the fallback (round robin) shares the clicks.
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(f.click("roi").await);
    }
    assert_eq!(first.iter().filter(|d| *d == "a").count(), 2, "{first:?}");

    // `a`: 20 clicks costing 1.00 each and 10.00 earned; `b`: 20 clicks at 1.00 and 60.00 earned.
    let mut events = Vec::new();
    events.extend((0..20).map(|i| past_click(&format!("a-{i}"), &campaign, &a, 2, "1.00")));
    events.extend((0..20).map(|i| past_click(&format!("b-{i}"), &campaign, &b, 2, "1.00")));
    events.push(approved("a-sale", &campaign, &a, "10.00"));
    events.push(approved("b-sale", &campaign, &b, "60.00"));
    f.analytics.insert_events(events).await.expect("insert");
    f.refresh().await;
    for _ in 0..20 {
        assert_eq!(f.click("roi").await, "b");
    }
}
