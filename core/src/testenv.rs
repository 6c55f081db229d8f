//! Where integration tests find the real backends started by `scripts/deps.sh`.
//!
//! A test that needs a backend asks for its address here. Outside CI a missing address skips the test with a
//! line saying so; with `CI=true` a missing address is a failure, so a CI run can never pass by skipping.

/// The address of a test backend from the environment variable `name`, e.g. `TRAFFOFLEX_TEST_MONGO_URI`.
///
/// Returns `None` (after printing why) when it is unset outside CI.
///
/// # Panics
/// When it is unset and `CI` is `true`: in CI every integration test must run against its real backend.
pub fn backend(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let in_ci = std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false);
            assert!(
                !in_ci,
                "{name} is not set: CI must run this test against the real backend (start it with scripts/deps.sh start)"
            );
            eprintln!("skipping: {name} is not set (run `scripts/deps.sh start` and source .deps/env)");
            None
        }
    }
}

/// The MongoDB-wire test server (FerretDB in CI).
pub fn mongo_uri() -> Option<String> {
    backend("TRAFFOFLEX_TEST_MONGO_URI")
}

/// The ClickHouse HTTP URL of the test server.
pub fn clickhouse_url() -> Option<String> {
    backend("TRAFFOFLEX_TEST_CLICKHOUSE_URL")
}

/// The Kafka bootstrap servers of the test broker.
pub fn kafka_brokers() -> Option<String> {
    backend("TRAFFOFLEX_TEST_KAFKA_BROKERS")
}

/// A name no other test run uses, for databases, topics and consumer groups.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}
