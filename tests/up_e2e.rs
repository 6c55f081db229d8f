//! `traffoflex up --demo` as a newcomer runs it: ready quickly, the demo campaign redirects, the clicks reach
//! the reports, a postback for one of the clicks reaches them as a conversion with its revenue, Ctrl-C loses
//! nothing, and a restart on the same data directory keeps everything.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use traffoflex_core::analytics::{Analytics, ReportQuery, SqliteAnalytics};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// The three listen addresses of one `up`.
#[derive(Clone, Copy)]
struct Addrs {
    traffic: SocketAddr,
    postback: SocketAddr,
    api: SocketAddr,
}

fn addrs() -> Addrs {
    Addrs { traffic: free_addr(), postback: free_addr(), api: free_addr() }
}

struct Up {
    child: Child,
    lines: Vec<String>,
}

impl Up {
    /// The demo admin's e-mail and password, from the line `up --demo` prints once.
    fn demo_admin(&self) -> Option<(String, String)> {
        let line = self.lines.iter().find(|l| l.starts_with("Demo admin (shown once): "))?;
        let (email, password) = line.trim_end().rsplit_once(": ")?.1.split_once(" / ")?;
        Some((email.to_owned(), password.to_owned()))
    }
}

fn up(data: &std::path::Path, a: Addrs) -> Up {
    up_with(data, a, &[], &[])
}

/// `up` with extra arguments (backend flags, `--demo`) and environment.
fn up_with(data: &std::path::Path, a: Addrs, extra: &[&str], env: &[(&str, &str)]) -> Up {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_traffoflex"));
    cmd.args(["up", "--data-dir", data.to_str().expect("path")])
        .args(["--traffic-listen", &a.traffic.to_string(), "--postback-listen", &a.postback.to_string()])
        .args(["--api-listen", &a.api.to_string()])
        .args(if extra.is_empty() { &["--demo"][..] } else { extra })
        .env_remove("TRAFFOFLEX_MONGO_URI")
        .env_remove("TRAFFOFLEX_CLICKHOUSE_URL")
        .env_remove("TRAFFOFLEX_KAFKA_BROKERS")
        .env_remove("TRAFFOFLEX_ADMIN_EMAIL")
        .env_remove("TRAFFOFLEX_ADMIN_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("up starts");
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

/// One HTTP/1.0 request with a JSON body; the status, the raw response and the parsed JSON body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, String, Value) {
    let mut conn = TcpStream::connect(addr).expect("connect");
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    conn.write_all(req.as_bytes()).expect("send");
    let mut resp = String::new();
    conn.read_to_string(&mut resp).expect("read");
    let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let json = resp.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    (status, resp, json)
}

/// A logged-in API client: the session cookie and the CSRF token.
struct ApiClient {
    addr: SocketAddr,
    cookie: String,
    csrf: String,
}

impl ApiClient {
    fn login(addr: SocketAddr, email: &str, password: &str) -> Self {
        let (status, raw, body) =
            http(addr, "POST", "/api/v1/auth/login", &[], Some(&json!({"email": email, "password": password})));
        assert_eq!(status, 200, "{raw}");
        let cookie = header(&raw, "set-cookie").expect("cookie").split(';').next().expect("pair").to_owned();
        Self { addr, cookie, csrf: body["csrfToken"].as_str().expect("csrf").to_owned() }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let headers = [("Cookie", self.cookie.as_str()), ("X-CSRF-Token", self.csrf.as_str())];
        let (status, _, json) = http(self.addr, method, &format!("/api/v1{path}"), &headers, body);
        (status, json)
    }

    fn create(&self, path: &str, body: Value) -> String {
        let (status, got) = self.call("POST", path, Some(&body));
        assert_eq!(status, 201, "POST {path}: {got}");
        got["id"].as_str().expect("id").to_owned()
    }

    /// Polls the overview until `done` holds or `within` passes; the last answer.
    fn overview_until(&self, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, report) = self.call("GET", "/reports/overview", None);
            assert_eq!(status, 200, "{report}");
            if done(&report) || Instant::now() >= deadline {
                return report;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
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
