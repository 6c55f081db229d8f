//! Several data-plane processes behind one API, without Kubernetes: `traffoflex api`, two `traffoflex
//! traffic` and one `traffoflex postback`, each its own process on FerretDB and Kafka. A campaign made or
//! changed through the API routes in every traffic process within 2 s, and a postback for a click of either
//! traffic process is accepted within 2 s of its network's creation. With polling slowed to ten minutes, the
//! API's reload push (`--reload-urls`, `--reload-token`) alone makes a change live within 2 s.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ApiClient, Reply, enc, free_addr, send};
use serde_json::{Value, json};
use tempfile::TempDir;
use traffoflex_core::testenv;

const ADMIN_EMAIL: &str = "ops@example.org";
const ADMIN_PASSWORD: &str = "ops-password-1";
/// How soon a change made through the API must be served everywhere.
const LIVE_WITHIN: Duration = Duration::from_secs(2);

/// The servers every process shares: one FerretDB database and one set of Kafka topics of this test's own.
struct Backends {
    mongo_db: String,
    kafka: String,
    prefix: String,
}

impl Backends {
    /// `None` (skipped) outside CI without the servers; a failure in CI.
    fn discover(test: &str) -> Option<Self> {
        let (Some(mongo), Some(kafka)) = (testenv::mongo_uri(), testenv::kafka_brokers()) else { return None };
        let name = testenv::unique_name(test);
        Some(Self { mongo_db: format!("{}/{name}", mongo.trim_end_matches('/')), kafka, prefix: format!("{name}.") })
    }

    fn args(&self, data_dir: &Path) -> Vec<String> {
        let data_dir = data_dir.to_str().expect("path").to_owned();
        [
            "--mongo-uri",
            &self.mongo_db,
            "--kafka-brokers",
            &self.kafka,
            "--kafka-topic-prefix",
            &self.prefix,
            "--data-dir",
            &data_dir,
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// One child process with its data directory and its standard output and error in files.
struct Running {
    name: String,
    child: Child,
    dir: TempDir,
}

impl Running {
    fn log(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default()
    }

    /// The last lines of its standard error.
    fn stderr_tail(&self) -> String {
        let text = self.log("stderr.log");
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Every process a test started; all are killed when it ends, whether it passes or fails.
struct Processes {
    backends: Backends,
    running: Vec<Running>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for p in &mut self.running {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        if std::thread::panicking() {
            for p in &self.running {
                eprintln!("----- {} stderr -----\n{}", p.name, p.stderr_tail());
            }
        }
    }
}

impl Processes {
    fn new(backends: Backends) -> Self {
        Self { backends, running: Vec::new() }
    }

    fn command(&self, role: &str, data_dir: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_traffoflex"));
        // What the test runner's environment configures is not what these tests mean to start.
        for (k, _) in std::env::vars() {
            if k.starts_with("TRAFFOFLEX_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg(role)
            .args(self.backends.args(data_dir))
            .args(extra)
            .env("TRAFFOFLEX_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("TRAFFOFLEX_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdin(Stdio::null());
        cmd
    }

    /// `traffoflex migrate`, as a deployment runs it first: the store's indexes and the Kafka topics.
    fn migrate(&self) {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = self.command("migrate", dir.path(), &[]).output().expect("migrate runs");
        assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts `traffoflex <role> --listen <free port> …extra` and waits (up to 30 s) until it is ready.
    fn start(&mut self, role: &str, addr: SocketAddr, extra: &[&str]) -> SocketAddr {
        let dir = tempfile::tempdir().expect("temp dir");
        let data: PathBuf = dir.path().join("data");
        let file = |name: &str| std::fs::File::create(dir.path().join(name)).expect("log file");
        let listen = addr.to_string();
        let child = self
            .command(role, &data, &[&["--listen", listen.as_str()], extra].concat())
            .stdout(file("stdout.log"))
            .stderr(file("stderr.log"))
            .spawn()
            .expect("the process starts");
        let name = format!("{role} on {addr}");
        self.running.push(Running { name: name.clone(), child, dir });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready =
                std::net::TcpStream::connect(addr).is_ok() && send(addr, "GET", "/readyz", &[], None).status == 200;
            if ready {
                return addr;
            }
            let me = self.running.last_mut().expect("just pushed");
            let exited = me.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{name} not ready ({exited:?}):\n{}",
                me.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn traffic(&mut self, key: &str, extra: &[&str]) -> SocketAddr {
        let args = [&["--click-id-key", key, "--health-checks", "false"], extra].concat();
        self.start("traffic", free_addr(), &args)
    }
}

/// Requests `path` from the traffic process at `addr` until it redirects to a URL `wanted` accepts; panics
/// when that takes more than [`LIVE_WITHIN`] from `since`.
fn redirect(addr: SocketAddr, path: &str, since: Instant, wanted: impl Fn(&str) -> bool) -> Reply {
    loop {
        let reply = send(addr, "GET", path, &[], None);
        if reply.status == 302 && wanted(reply.location()) {
            return reply;
        }
        assert!(
            since.elapsed() < LIVE_WITHIN,
            "traffic {addr} {path}: not live within {LIVE_WITHIN:?} of the write; last answer {} {:?}",
            reply.status,
            reply.header("location")
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn click_id(reply: &Reply) -> String {
    reply.header("x-click-id").unwrap_or_else(|| panic!("no X-Click-Id in {reply:?}")).to_owned()
}

/// Creates a destination, a campaign with `key` and a stream sending it to the destination; returns the
/// destination's ID.
fn routed_campaign(api: &ApiClient, key: &str, url: &str) -> String {
    let destination = api.create("/destinations", json!({"name": format!("{key} offer"), "url": url, "enabled": true}));
    let campaign = api.create("/campaigns", json!({"key": key, "name": key, "status": "active"}));
    api.create(
        "/streams",
        json!({"campaignId": campaign, "name": "All", "selection": "waterfall",
               "destinations": [{"destinationId": destination}]}),
    );
    destination
}

/// Changes the destination's URL with the version read; expects 200.
fn change_url(api: &ApiClient, destination: &str, url: &str) {
    let mut body: Value = api.get(&format!("/destinations/{destination}"));
    body["url"] = json!(url);
    let (status, got) = api.call("PUT", &format!("/destinations/{destination}"), Some(&body));
    assert_eq!(status, 200, "{got}");
}

#[test]
fn an_api_change_is_live_in_every_data_plane_process_within_two_seconds() {
    let Some(backends) = Backends::discover("multiproc") else { return };
    let mut procs = Processes::new(backends);
    procs.migrate();
    let key = "shared-click-id-key-for-this-test";
    let api_addr = procs.start("api", free_addr(), &[]);
    let traffic = [procs.traffic(key, &[]), procs.traffic(key, &[])];
    let postback = procs.start("postback", free_addr(), &["--click-id-key", key]);
    let api = ApiClient::login(api_addr, ADMIN_EMAIL, ADMIN_PASSWORD);

    let destination = routed_campaign(&api, "everywhere", "https://first.example/land?cid={clickId}&s={sub1}");
    let written = Instant::now();
    for addr in traffic {
        let reply = redirect(addr, "/c/everywhere?sub1=a", written, |l| l.starts_with("https://first.example/land?"));
        assert!(reply.location().ends_with("&s=a"), "{reply:?}");
    }

    change_url(&api, &destination, "https://second.example/offer?cid={clickId}");
    let written = Instant::now();
    let clicks: Vec<String> = traffic
        .iter()
        .map(|&addr| click_id(&redirect(addr, "/c/everywhere", written, |l| l.starts_with("https://second.example/"))))
        .collect();

    // A network made through the API takes postbacks for the clicks of either traffic process; `failClosed`
    // refuses a click ID that does not verify with the shared key.
    let template = api.create(
        "/postback-templates",
        json!({"name": "S2S", "params": {"clickId": "clickid", "transactionId": "txid", "payout": "payout"}}),
    );
    api.create(
        "/affiliate-networks",
        json!({"key": "net-multi", "name": "Network", "postbackTemplateId": template, "clickLookup": "failClosed",
               "auth": {"mode": "token", "token": "network-token"}}),
    );
    let written = Instant::now();
    let postback_for = |click: &str, tx: &str, token: &str| {
        let path = format!("/postback/net-multi?clickid={}&txid={tx}&payout=3.50&token={token}", enc(click));
        send(postback, "GET", &path, &[], None)
    };
    let first = loop {
        let reply = postback_for(&clicks[0], "order-1", "network-token");
        if reply.status != 404 {
            break reply;
        }
        assert!(written.elapsed() < LIVE_WITHIN, "the network is not live within {LIVE_WITHIN:?}: {reply:?}");
        std::thread::sleep(Duration::from_millis(25));
    };
    assert_eq!((first.status, first.json()["status"].as_str()), (200, Some("accepted")), "{first:?}");
    let second = postback_for(&clicks[1], "order-2", "network-token");
    assert_eq!((second.status, second.json()["status"].as_str()), (200, Some("accepted")), "{second:?}");
    assert_eq!(postback_for(&clicks[0], "order-1", "network-token").json()["status"], "duplicate");
    let wrong_token = postback_for(&clicks[1], "order-3", "not-the-token");
    assert_eq!(wrong_token.status, 401, "{wrong_token:?}");
    let mut forged = clicks[0].clone();
    let last = forged.pop().expect("a click ID");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let refused = postback_for(&forged, "order-4", "network-token");
    assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (422, Some("unknownClick")), "{refused:?}");
}

#[test]
fn the_apis_reload_push_makes_a_change_live_without_polling() {
    let Some(backends) = Backends::discover("reloadpush") else { return };
    let mut procs = Processes::new(backends);
    procs.migrate();
    let (key, token) = ("shared-click-id-key-for-this-test", "shared-reload-token");
    // Ten minutes between revision checks: only a push makes a change live in time.
    let slow = ["--reload-interval-ms", "600000", "--reload-token", token];
    let pushed = procs.traffic(key, &slow);
    let not_pushed = procs.traffic(key, &slow);
    let reload_url = format!("http://{pushed}/internal/reload");
    let api_addr = procs.start("api", free_addr(), &["--reload-urls", &reload_url, "--reload-token", token]);
    let api = ApiClient::login(api_addr, ADMIN_EMAIL, ADMIN_PASSWORD);

    let destination = routed_campaign(&api, "pushed", "https://first.example/p?cid={clickId}");
    let written = Instant::now();
    redirect(pushed, "/c/pushed", written, |l| l.starts_with("https://first.example/p?"));
    let unseen = send(not_pushed, "GET", "/c/pushed", &[], None);
    assert_eq!(unseen.status, 404, "a process the API does not push to waits for its next check: {unseen:?}");

    change_url(&api, &destination, "https://second.example/p?cid={clickId}");
    let written = Instant::now();
    redirect(pushed, "/c/pushed", written, |l| l.starts_with("https://second.example/p?"));

    // The reload endpoint wants the shared token: without it nothing reloads; with it the other process
    // catches up at once.
    let refused = send(not_pushed, "POST", "/internal/reload", &[], None);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(send(not_pushed, "GET", "/c/pushed", &[], None).status, 404);
    let bearer = format!("Bearer {token}");
    let reloaded = send(not_pushed, "POST", "/internal/reload", &[("Authorization", &bearer)], None);
    assert_eq!((reloaded.status, reloaded.json()["status"].as_str()), (200, Some("reloaded")), "{reloaded:?}");
    let now = send(not_pushed, "GET", "/c/pushed", &[], None);
    assert!(now.status == 302 && now.location().starts_with("https://second.example/p?"), "{now:?}");
}
