//! `traffoflex up --demo` as a newcomer runs it: ready quickly, the demo campaign redirects, the clicks reach
//! the reports, a postback for one of the clicks reaches them as a conversion with its revenue, Ctrl-C loses
//! nothing, and a restart on the same data directory keeps everything.

mod common;

use std::time::{Duration, Instant};

use common::{ApiClient, addrs, get, header, stop, up, up_with};
use serde_json::json;
use traffoflex_core::analytics::{Analytics, ReportQuery, SqliteAnalytics};

async fn overview(data: &std::path::Path) -> traffoflex_core::analytics::Metrics {
    let analytics = SqliteAnalytics::open(&data.join("analytics.sqlite")).await.expect("analytics file");
    let today = chrono::Utc::now().date_naive();
    analytics.overview(&ReportQuery::new(today, today)).await.expect("overview")
}

async fn clicks_in_reports(data: &std::path::Path) -> u64 {
    overview(data).await.clicks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_demo_redirects_records_and_keeps_data_across_restarts() {
    let data = tempfile::tempdir().expect("temp dir");
    let a = addrs();
    let (addr, pb) = (a.traffic, a.postback);

    let first = up(data.path(), a);
    let ready = first.lines.last().expect("ready line");
    for url in [format!("api http://{}", a.api), format!("traffic http://{addr}"), format!("postback http://{pb}")] {
        assert!(ready.contains(&url), "{url} in {ready}");
    }
    assert!(
        first.lines.iter().any(|l| l.contains("/c/demo-summer?country=DE")),
        "example URL printed: {:?}",
        first.lines
    );
    let (email, password) = first.demo_admin().expect("the demo admin's login is printed");
    let api = ApiClient::login(a.api, &email, &password);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let resp = get(addr, "/c/demo-summer?country=DE&sub1=hello");
        assert!(resp.starts_with("HTTP/1.0 302") || resp.starts_with("HTTP/1.1 302"), "{resp}");
        let location = header(&resp, "location").expect("Location");
        assert!(
            location.starts_with("https://offers.example/a?") || location.starts_with("https://offers.example/b?"),
            "{location}"
        );
        assert!(location.contains("s1=hello&geo=DE"), "{location}");
        ids.push(header(&resp, "x-click-id").expect("X-Click-Id").to_owned());
    }
    let resp = get(addr, "/c/no-such-campaign");
    assert!(resp.contains(" 404 ") && header(&resp, "location").is_none(), "{resp}");
    // The demo network reports a conversion for the second click.
    let postback = format!(
        "/postback/demo-network?clickid={}&txid=order-1&payout=12.50&currency=USD&status=approved&token=demo-token",
        ids[1]
    );
    let resp = get(pb, &postback);
    assert!(resp.contains(" 200 ") && resp.contains(r#""status":"accepted""#), "{resp}");
    let resp = get(pb, &postback.replace("demo-token", "wrong"));
    assert!(resp.contains(" 401 "), "{resp}");
    // Within 5 s, while running, the API's overview shows the clicks, the conversion and its revenue.
    let report = api.overview_until(Duration::from_secs(5), |r| r["clicks"] == 5 && r["conversions"] == 1);
    assert_eq!((report["clicks"].as_u64(), report["conversions"].as_u64()), (Some(5), Some(1)), "{report}");
    assert_eq!(report["revenue"], "12.50");
    let marker = data.path().join("postbacklog").join("running");
    assert!(marker.exists(), "a running postback service keeps its marker");
    stop(first);
    assert!(!marker.exists(), "Ctrl-C is a clean stop: nothing to replay at the next start");
    let report = overview(data.path()).await;
    assert_eq!((report.clicks, report.conversions), (5, 1), "still there after Ctrl-C");

    let second = up(data.path(), a);
    assert!(!second.lines.iter().any(|l| l.contains("Demo data seeded")), "demo data is not seeded twice");
    assert!(second.demo_admin().is_none(), "the admin's password is shown once");
    let api = ApiClient::login(a.api, &email, &password);
    let report = api.overview_until(Duration::ZERO, |_| true);
    assert_eq!((report["clicks"].as_u64(), report["conversions"].as_u64()), (Some(5), Some(1)), "{report}");
    assert_eq!(report["revenue"], "12.50", "the same numbers after a restart");
    let resp = get(addr, "/c/demo-summer?country=AT");
    assert!(resp.contains(" 302 "), "{resp}");
    stop(second);
    assert_eq!(clicks_in_reports(data.path()).await, 6, "the earlier clicks are still there, plus the new one");
}

/// The same journey with the binary pointed at the real servers: FerretDB for the store, Kafka for events
/// and ClickHouse for the reports, with the ingester running inside `up`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_demo_on_mongodb_kafka_and_clickhouse() {
    use traffoflex_core::analytics::clickhouse::ClickHouse;
    use traffoflex_core::testenv;
    let (Some(mongo), Some(ch), Some(kafka)) =
        (testenv::mongo_uri(), testenv::clickhouse_url(), testenv::kafka_brokers())
    else {
        return;
    };
    let name = testenv::unique_name("upe2e");
    let mongo_db = format!("{}/{name}", mongo.trim_end_matches('/'));
    let prefix = format!("{name}.");
    let backends = [
        "--demo",
        "--mongo-uri",
        &mongo_db,
        "--clickhouse-url",
        &ch,
        "--clickhouse-database",
        &name,
        "--kafka-brokers",
        &kafka,
        "--kafka-topic-prefix",
        &prefix,
    ];
    let data = tempfile::tempdir().expect("temp dir");
    let a = addrs();
    let (addr, pb) = (a.traffic, a.postback);
    let analytics = ClickHouse::new(&ch, &name);

    let first = up_with(data.path(), a, &backends, &[]);
    assert!(first.lines.last().is_some_and(|l| l.contains("mongodb store, clickhouse analytics")), "{:?}", first.lines);
    let (email, password) = first.demo_admin().expect("demo admin");
    let api = ApiClient::login(a.api, &email, &password);
    let resp = get(addr, "/c/demo-summer?country=DE&sub1=real");
    assert!(resp.contains(" 302 "), "{resp}");
    let id = header(&resp, "x-click-id").expect("X-Click-Id").to_owned();
    let postback = format!("/postback/demo-network?clickid={id}&txid=real-1&payout=7.25&token=demo-token");
    let resp = get(pb, &postback);
    assert!(resp.contains(r#""status":"accepted""#), "{resp}");
    // Within 5 s the click and the conversion are in ClickHouse's reports, as the API shows them.
    let report = api.overview_until(Duration::from_secs(5), |r| r["clicks"] == 1 && r["conversions"] == 1);
    assert_eq!((report["clicks"].as_u64(), report["conversions"].as_u64()), (Some(1), Some(1)), "{report}");
    assert_eq!(report["revenue"], "7.25");
    stop(first);

    let second = up_with(data.path(), a, &backends, &[]);
    assert!(!second.lines.iter().any(|l| l.contains("Demo data seeded")), "the store kept the demo objects");
    let api = ApiClient::login(a.api, &email, &password);
    let report = api.overview_until(Duration::ZERO, |_| true);
    assert_eq!((report["clicks"].as_u64(), report["conversions"].as_u64()), (Some(1), Some(1)), "{report}");
    assert!(get(addr, "/c/demo-summer?country=AT").contains(" 302 "));
    stop(second);
    let today = chrono::Utc::now().date_naive();
    let q = ReportQuery::new(today.pred_opt().unwrap_or(today), today);
    let report = analytics.overview(&q).await.expect("overview");
    assert_eq!(report.conversions, 1, "the conversion is still counted once after a restart");
    analytics.drop_database().await.expect("cleanup");
}

/// Through the API only, on a store with no demo data: a campaign, a destination and a stream created over
/// HTTP route a click within 2 s, and the click shows in the API's reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_made_through_the_api_route_clicks_within_two_seconds() {
    let data = tempfile::tempdir().expect("temp dir");
    let a = addrs();
    let env = [("TRAFFOFLEX_ADMIN_EMAIL", "ops@example.org"), ("TRAFFOFLEX_ADMIN_PASSWORD", "ops-password-1")];
    let running = up_with(data.path(), a, &["--health-checks", "false"], &env);
    let api = ApiClient::login(a.api, "ops@example.org", "ops-password-1");
    let destination = api.create(
        "/destinations",
        json!({"name": "Offer", "url": "https://offer.example/landing?cid={clickId}&s={sub1}", "enabled": true}),
    );
    let campaign = api.create("/campaigns", json!({"key": "via-api", "name": "Via API", "status": "active"}));
    api.create(
        "/streams",
        json!({"campaignId": campaign, "name": "All", "priority": 1, "selection": "waterfall",
               "destinations": [{"destinationId": destination}]}),
    );
    let created = Instant::now();
    let location = loop {
        let resp = get(a.traffic, "/c/via-api?sub1=api");
        if resp.contains(" 302 ") {
            break header(&resp, "location").expect("Location").to_owned();
        }
        assert!(created.elapsed() < Duration::from_secs(2), "not live within 2 s: {resp}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(location.starts_with("https://offer.example/landing?cid=") && location.ends_with("&s=api"), "{location}");
    let report = api.overview_until(Duration::from_secs(5), |r| r["clicks"] == 1);
    assert_eq!(report["clicks"], 1, "{report}");
    let (status, by_campaign) = api.call("GET", &format!("/reports/campaigns?campaignId={campaign}"), None);
    assert_eq!((status, by_campaign["rows"][0]["key"]["campaignId"].as_str()), (200, Some(campaign.as_str())));
    stop(running);
}
