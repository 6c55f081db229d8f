//! The `traffoflex` binary as a user runs it.

use std::process::Command;

use traffoflex_core::testenv;

fn traffoflex(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_traffoflex")).args(args).env_remove("RUST_LOG").output().expect("the binary runs")
}

#[test]
fn crds_prints_every_kind_as_committed() {
    let out = traffoflex(&["crds"]);
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout).expect("UTF-8");
    for kind in
        ["Campaign", "Stream", "Destination", "TrafficSource", "AffiliateNetwork", "PostbackTemplate", "DataPlane"]
    {
        assert!(yaml.contains(&format!("kind: {kind}\n")), "{kind} missing");
    }
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/generated/crds.yaml"))
        .expect("committed CRDs");
    assert_eq!(
        yaml, committed,
        "crds/generated/crds.yaml is stale: run `cargo run -- crds > crds/generated/crds.yaml`"
    );
}

#[test]
fn api_refuses_half_a_bootstrap_admin() {
    let data = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_traffoflex"))
        .args(["api", "--listen", "127.0.0.1:0", "--data-dir", data.path().to_str().expect("path")])
        .env_remove("TRAFFOFLEX_MONGO_URI")
        .env_remove("TRAFFOFLEX_CLICKHOUSE_URL")
        .env("TRAFFOFLEX_ADMIN_EMAIL", "ops@example.org")
        .env_remove("TRAFFOFLEX_ADMIN_PASSWORD")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give both TRAFFOFLEX_ADMIN_EMAIL and TRAFFOFLEX_ADMIN_PASSWORD"), "{err}");
}

#[test]
fn ingest_without_backends_explains_what_it_needs() {
    let out = Command::new(env!("CARGO_BIN_EXE_traffoflex"))
        .arg("ingest")
        .env_remove("TRAFFOFLEX_KAFKA_BROKERS")
        .env_remove("TRAFFOFLEX_CLICKHOUSE_URL")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --kafka-brokers"));
}

#[test]
fn migrate_prepares_every_backend_and_is_repeatable() {
    let (Some(ch), Some(kafka), Some(mongo)) =
        (testenv::clickhouse_url(), testenv::kafka_brokers(), testenv::mongo_uri())
    else {
        return;
    };
    let name = testenv::unique_name("cli");
    let data = tempfile::tempdir().expect("temp dir");
    let mongo_db = format!("{}{name}", mongo.trim_end_matches('/').to_owned() + "/");
    let prefix = format!("{name}.");
    let args = [
        "migrate",
        "--data-dir",
        data.path().to_str().expect("path"),
        "--clickhouse-url",
        &ch,
        "--clickhouse-database",
        &name,
        "--kafka-brokers",
        &kafka,
        "--kafka-topic-prefix",
        &prefix,
        "--mongo-uri",
        &mongo_db,
    ];
    let first = traffoflex(&args);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&first.stderr));
    assert!(stdout.contains("applied migrations [1]"), "{stdout}");
    assert!(stdout.contains(&format!("\"{name}.clicks\"")), "{stdout}");
    assert!(stdout.contains("mongodb configuration store: indexes in place"), "{stdout}");

    let second = traffoflex(&args);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success());
    assert!(stdout.contains("applied migrations []"), "nothing left to apply: {stdout}");
    assert!(stdout.contains("created topics []"), "topics exist already: {stdout}");

    let tables =
        clickhouse_http(&ch, &format!("SELECT name FROM system.tables WHERE database = '{name}' ORDER BY name"));
    for t in ["clicks", "conversions", "destination_health", "ingestion_errors", "postback_logs", "schema_migrations"] {
        assert!(tables.lines().any(|l| l == t), "table {t} missing: {tables}");
    }
    clickhouse_http(&ch, &format!("DROP DATABASE IF EXISTS `{name}`"));
}

/// A query over ClickHouse's HTTP interface with nothing but the standard library.
fn clickhouse_http(url: &str, sql: &str) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(addr).expect("ClickHouse answers");
    let req = format!("POST / HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{sql}", sql.len());
    conn.write_all(req.as_bytes()).expect("send");
    let mut resp = String::new();
    conn.read_to_string(&mut resp).expect("read");
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    body.to_owned()
}
