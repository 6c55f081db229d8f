//! What the tests of the built binary share: free ports, starting `traffoflex up` and stopping it, plain
//! HTTP/1.0 requests, a logged-in API client, and a small HTTP server that records what it is sent.
// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

/// A loopback address nothing listens on, for a server a test starts. Taken below the kernel's ephemeral port
/// range when there is room: a port `bind(0)` hands out comes from the range outgoing connections take theirs
/// from, and once the probe let go of it an outgoing connection (to ClickHouse, Kafka, MongoDB) could take it
/// before the server bound it ("Address already in use"). Each call tries the next port of the process's own
/// sequence, so tests running side by side are not handed the same one.
pub fn free_addr() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(0);
    if ephemeral_from > LOWEST + 1_000 {
        let span = ephemeral_from - LOWEST;
        let start = std::process::id() % span;
        for _ in 0..span {
            let port = LOWEST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            if let Ok(addr) = TcpListener::bind(("127.0.0.1", port as u16)).and_then(|l| l.local_addr()) {
                return addr;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// The three listen addresses of one `up`.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    pub traffic: SocketAddr,
    pub postback: SocketAddr,
    pub api: SocketAddr,
}

pub fn addrs() -> Addrs {
    Addrs { traffic: free_addr(), postback: free_addr(), api: free_addr() }
}

/// A running `up`: what it printed up to its ready line, and its standard output and error, kept in files
/// (a file, unlike a pipe, stays writable when the test binary is gone).
pub struct Up {
    child: Child,
    pub lines: Vec<String>,
    logs: PathBuf,
    _logs_dir: Option<TempDir>,
    /// Held open for as long as the test binary runs (see [`up_for_this_run`]).
    _watchdog: Option<ChildStdin>,
}

impl Up {
    /// The demo admin's e-mail and password, from the line `up --demo` prints once.
    pub fn demo_admin(&self) -> Option<(String, String)> {
        let line = self.lines.iter().find(|l| l.starts_with("Demo admin (shown once): "))?;
        let (email, password) = line.trim_end().rsplit_once(": ")?.1.split_once(" / ")?;
        Some((email.to_owned(), password.to_owned()))
    }

    /// Every whole line written to standard error so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        whole_lines(&self.logs.join("stderr.log"))
    }
}

/// The lines of a file that another process is appending to, without a last line still being written.
fn whole_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = text.rsplit_once('\n').map_or("", |(done, _)| done);
    whole.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

pub fn up(data: &Path, a: Addrs) -> Up {
    up_with(data, a, &[], &[])
}

/// `up` with extra arguments (backend flags, `--demo`) and environment; `--demo` when `extra` is empty.
pub fn up_with(data: &Path, a: Addrs, extra: &[&str], env: &[(&str, &str)]) -> Up {
    let logs = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_traffoflex"));
    cmd.args(up_args(data, a)).args(if extra.is_empty() { &["--demo"][..] } else { extra }).stdin(Stdio::null());
    let mut up = launch(cmd, env, logs.path(), false);
    up._logs_dir = Some(logs);
    up
}

/// `up` on a fresh data directory that runs until the test binary exits, however it exits: a shell between
/// the two waits for the end of its standard input, which closes with the test binary, then stops `up` with
/// SIGINT and removes the directory. For a process shared by the tests of one file.
pub fn up_for_this_run(a: Addrs, extra: &[&str], env: &[(&str, &str)]) -> Up {
    let root = tempfile::Builder::new().prefix("traffoflex-up-").tempdir().expect("temp dir").keep();
    let data = root.join("data");
    let mut cmd = Command::new("sh");
    // A job started with `&` ignores SIGINT unless it handles the signal itself, as `up` does.
    cmd.arg("-c")
        .arg(
            r#"root=$1; shift; "$@" & up=$!; while read -r _; do :; done; kill -INT "$up"; wait "$up"; rm -rf "$root""#,
        )
        .arg("sh")
        .arg(&root)
        .arg(env!("CARGO_BIN_EXE_traffoflex"))
        .args(up_args(&data, a))
        .args(extra)
        .stdin(Stdio::piped());
    launch(cmd, env, &root, true)
}

fn up_args(data: &Path, a: Addrs) -> Vec<String> {
    let data = data.to_str().expect("path").to_owned();
    let mut args = vec!["up".to_owned(), "--data-dir".to_owned(), data];
    for (flag, addr) in [("--traffic-listen", a.traffic), ("--postback-listen", a.postback), ("--api-listen", a.api)] {
        args.extend([flag.to_owned(), addr.to_string()]);
    }
    args
}

/// Starts `cmd` with standard output and error in `logs` and waits (up to 30 s) for the ready line.
fn launch(mut cmd: Command, env: &[(&str, &str)], logs: &Path, keep_stdin: bool) -> Up {
    // Whatever the test runner's environment configures is not what these tests mean to start.
    for (k, _) in std::env::vars() {
        if k.starts_with("TRAFFOFLEX_") {
            cmd.env_remove(k);
        }
    }
    let file = |name: &str| File::create(logs.join(name)).expect("log file");
    cmd.envs(env.iter().copied()).stdout(file("stdout.log")).stderr(file("stderr.log"));
    let mut child = cmd.spawn().expect("up starts");
    let watchdog = if keep_stdin { child.stdin.take() } else { None };
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let lines = whole_lines(&logs.join("stdout.log"));
        if let Some(ready) = lines.iter().position(|l| l.contains("is up in")) {
            break lines[..=ready].to_vec();
        }
        let exited = child.try_wait().ok().flatten().is_some();
        if exited || Instant::now() >= deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let up = Up { child, lines, logs: logs.to_owned(), _logs_dir: None, _watchdog: watchdog };
    assert!(up.lines.iter().any(|l| l.contains("is up in")), "up printed: {:?}\n{:?}", up.lines, up.stderr_lines());
    up
}

pub fn stop(mut up: Up) {
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

/// An HTTP answer: the status, the status line with the headers, and the body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.head, name)
    }

    /// The `Location` header; panics, showing the answer, when there is none.
    pub fn location(&self) -> &str {
        self.header("location").unwrap_or_else(|| panic!("no Location in {self:?}"))
    }

    /// The body as JSON (`null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.0 request with any headers and an optional body of the given content type.
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Reply {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("user-agent")) {
        req.push_str("User-Agent: e2e\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let payload = body.map(|(_, b)| b).unwrap_or_default();
    if let Some((content_type, _)) = body {
        req.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
    conn.write_all(req.as_bytes()).and_then(|()| conn.write_all(payload)).expect("send");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).expect("read");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Reply { status, head: head.to_owned(), body: body.to_owned() }
}

/// A GET over HTTP/1.0; the whole raw answer.
pub fn get(addr: SocketAddr, path: &str) -> String {
    let r = send(addr, "GET", path, &[], None);
    format!("{}\r\n\r\n{}", r.head, r.body)
}

/// One HTTP/1.0 request with a JSON body; the status, the raw response and the parsed JSON body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, String, Value) {
    let body = body.map(Value::to_string);
    let r = send(addr, method, path, headers, body.as_deref().map(|b| ("application/json", b.as_bytes())));
    let json = r.json();
    (r.status, format!("{}\r\n\r\n{}", r.head, r.body), json)
}

/// A logged-in API client: the session cookie and the CSRF token.
pub struct ApiClient {
    pub addr: SocketAddr,
    pub cookie: String,
    pub csrf: String,
}

impl ApiClient {
    pub fn login(addr: SocketAddr, email: &str, password: &str) -> Self {
        let (status, raw, body) =
            http(addr, "POST", "/api/v1/auth/login", &[], Some(&json!({"email": email, "password": password})));
        assert_eq!(status, 200, "{raw}");
        Self::from_login(addr, &raw, &body)
    }

    /// The client of a login answer (`/auth/login` or `/auth/otp/verify`): its cookie and CSRF token.
    pub fn from_login(addr: SocketAddr, raw: &str, body: &Value) -> Self {
        let cookie = header(raw, "set-cookie").expect("cookie").split(';').next().expect("pair").to_owned();
        Self { addr, cookie, csrf: body["csrfToken"].as_str().expect("csrf").to_owned() }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let headers = [("Cookie", self.cookie.as_str()), ("X-CSRF-Token", self.csrf.as_str())];
        let (status, _, json) = http(self.addr, method, &format!("/api/v1{path}"), &headers, body);
        (status, json)
    }

    /// `GET`, expecting 200.
    pub fn get(&self, path: &str) -> Value {
        let (status, got) = self.call("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {got}");
        got
    }

    pub fn create(&self, path: &str, body: Value) -> String {
        let (status, got) = self.call("POST", path, Some(&body));
        assert_eq!(status, 201, "POST {path}: {got}");
        got["id"].as_str().expect("id").to_owned()
    }

    /// Polls the overview until `done` holds or `within` passes; the last answer.
    pub fn overview_until(&self, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        self.report_until("/reports/overview", within, done)
    }

    /// Polls a report (path with its query) until `done` holds or `within` passes; the last answer.
    pub fn report_until(&self, path: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, report) = self.call("GET", path, None);
            assert_eq!(status, 200, "{report}");
            if done(&report) || Instant::now() >= deadline {
                return report;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn header<'r>(resp: &'r str, name: &str) -> Option<&'r str> {
    resp.lines().take_while(|l| !l.trim().is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One request a [`Recorder`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The request target: path and query.
    pub target: String,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The decoded value of a query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?').map_or("", |(_, q)| q);
        query.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| decode(v))
    }
}

/// Percent-decoding of a query value (`+` is a space).
pub fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A small HTTP server on a free local port that answers every request with one status and records it: a
/// traffic source's postback endpoint, or an offer that is down.
#[derive(Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl Recorder {
    pub fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let log = Arc::clone(&log);
                std::thread::spawn(move || answer(conn, status, &log));
            }
        });
        Self { addr, seen }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits up to `within` for a request matching `pick`.
    pub fn wait_for(&self, within: Duration, what: &str, pick: impl Fn(&Recorded) -> bool) -> Recorded {
        let deadline = Instant::now() + within;
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| pick(r)) {
                return r;
            }
            assert!(Instant::now() < deadline, "no request {what} within {within:?}; got {:?}", self.requests());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn answer(mut conn: TcpStream, status: u16, log: &Mutex<Vec<Recorded>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
    if let Ok(mut seen) = log.lock() {
        seen.push(Recorded { target, headers });
    }
    let reply = format!("HTTP/1.1 {status} Answer\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    let _ = conn.write_all(reply.as_bytes());
}

/// Polls `check` until it gives a value or `within` passes; panics naming `what`.
pub fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Percent-encodes a query value (everything but letters, digits and `-._~`).
pub fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
