//! `traffoflex up --demo` as a newcomer runs it: ready quickly, the demo campaign redirects, the clicks reach
//! the reports, a postback for one of the clicks reaches them as a conversion with its revenue, Ctrl-C loses
//! nothing, and a restart on the same data directory keeps everything.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use traffoflex_core::analytics::{Analytics, ReportQuery, SqliteAnalytics};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

struct Up {
    child: Child,
    lines: Vec<String>,
}

fn up(data: &std::path::Path, addr: SocketAddr, postback: SocketAddr) -> Up {
    up_with(data, addr, postback, &[])
}

/// `up --demo` with extra arguments (backend flags).
fn up_with(data: &std::path::Path, addr: SocketAddr, postback: SocketAddr, extra: &[&str]) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_traffoflex"))
        .args(["up", "--demo", "--data-dir", data.to_str().expect("path"), "--traffic-listen", &addr.to_string()])
        .args(["--postback-listen", &postback.to_string()])
        .args(extra)
        .env_remove("TRAFFOFLEX_MONGO_URI")
        .env_remove("TRAFFOFLEX_CLICKHOUSE_URL")
        .env_remove("TRAFFOFLEX_KAFKA_BROKERS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("up starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read") == 0 {
            break;
        }
        let done = line.contains("is up in");
        lines.push(line);
        if done {
            break;
        }
    }
    assert!(lines.iter().any(|l| l.contains("is up in")), "up printed: {lines:?}");
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = reader.read_to_string(&mut sink);
    });
    Up { child, lines }
}

fn stop(mut up: Up) {
    // SIGINT, as Ctrl-C.
    let pid = up.child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().expect("kill");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = up.child.try_wait().expect("wait") {
            assert!(status.success(), "up exits cleanly on Ctrl-C: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "up did not stop within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A GET over HTTP/1.0; the status line and headers.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut conn = TcpStream::connect(addr).expect("connect");
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: e2e\r\n\r\n").expect("send");
    let mut resp = String::new();
    conn.read_to_string(&mut resp).expect("read");
    resp
}

fn header<'r>(resp: &'r str, name: &str) -> Option<&'r str> {
    resp.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

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
    let addr = free_addr();
    let pb = free_addr();

    let first = up(data.path(), addr, pb);
    let ready = first.lines.last().expect("ready line");
    assert!(
        ready.contains(&format!("traffic http://{addr}")) && ready.contains(&format!("postback http://{pb}")),
        "{ready}"
    );
    assert!(
        first.lines.iter().any(|l| l.contains("/c/demo-summer?country=DE")),
        "example URL printed: {:?}",
        first.lines
    );
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
    stop(first);
    let report = overview(data.path()).await;
    assert_eq!(report.clicks, 5, "every click is in the reports after Ctrl-C");
    assert_eq!(report.conversions, 1, "the postback is a conversion in the reports");
    assert_eq!(report.revenue.normalize().to_string(), "12.5", "its revenue is in the reports");

    let second = up(data.path(), addr, pb);
    assert!(!second.lines.iter().any(|l| l.contains("Demo data seeded")), "demo data is not seeded twice");
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
    let (addr, pb) = (free_addr(), free_addr());
    let analytics = ClickHouse::new(&ch, &name);
    let today = chrono::Utc::now().date_naive();
    let q = ReportQuery::new(today.pred_opt().unwrap_or(today), today);

    let first = up_with(data.path(), addr, pb, &backends);
    assert!(first.lines.last().is_some_and(|l| l.contains("mongodb store, clickhouse analytics")), "{:?}", first.lines);
    let resp = get(addr, "/c/demo-summer?country=DE&sub1=real");
    assert!(resp.contains(" 302 "), "{resp}");
    let id = header(&resp, "x-click-id").expect("X-Click-Id").to_owned();
    let postback = format!("/postback/demo-network?clickid={id}&txid=real-1&payout=7.25&token=demo-token");
    let resp = get(pb, &postback);
    assert!(resp.contains(r#""status":"accepted""#), "{resp}");
    // Within 5 s the click and the conversion are in ClickHouse's reports.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut report = analytics.overview(&q).await.expect("overview");
    while (report.clicks < 1 || report.conversions < 1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = analytics.overview(&q).await.expect("overview");
    }
    assert_eq!((report.clicks, report.conversions), (1, 1), "{report:?}");
    assert_eq!(report.revenue.normalize().to_string(), "7.25");
    stop(first);

    let second = up_with(data.path(), addr, pb, &backends);
    assert!(!second.lines.iter().any(|l| l.contains("Demo data seeded")), "the store kept the demo objects");
    assert!(get(addr, "/c/demo-summer?country=AT").contains(" 302 "));
    stop(second);
    let report = analytics.overview(&q).await.expect("overview");
    assert_eq!(report.conversions, 1, "the conversion is still counted once after a restart");
    assert!(report.clicks >= 1, "{report:?}");
    analytics.drop_database().await.expect("cleanup");
}
