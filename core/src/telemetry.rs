//! Telemetry every role shares: structured logs, Prometheus metrics, and the `/healthz`, `/readyz` and
//! `/metrics` endpoints.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// Log format on standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines.
    #[default]
    Text,
}

/// Starts logging once per process; the level comes from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A log line that can't be written (stderr's reader gone) is dropped: reporting it would itself write to
    // stderr and panic the task that logged, e.g. the one that turns Ctrl-C into a shutdown.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false);
    // A second initialisation (tests, `up` starting several roles) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The metrics registry and the readiness checks of one process.
#[derive(Clone, Default)]
pub struct Telemetry {
    registry: Arc<Mutex<Registry>>,
    checks: Arc<Mutex<Vec<(String, Check)>>>,
}

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers metrics under a prefix, e.g. `telemetry.register("traffoflex_ingest", |r| …)`.
    pub fn register(&self, prefix: &str, f: impl FnOnce(&mut Registry)) {
        let mut root = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        f(root.sub_registry_with_prefix(prefix));
    }

    /// Adds a readiness check: `/readyz` answers 503 while any check fails.
    pub fn readiness_check<F, Fut>(&self, name: &str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let check: Check = Arc::new(move || Box::pin(check()));
        self.checks.lock().unwrap_or_else(|p| p.into_inner()).push((name.to_owned(), check));
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn encode_metrics(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }

    /// Runs every readiness check; the failures, by name.
    pub async fn not_ready(&self) -> Vec<(String, String)> {
        let checks: Vec<(String, Check)> = self.checks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut failing = Vec::new();
        for (name, check) in checks {
            if let Err(why) = check().await {
                failing.push((name, why));
            }
        }
        failing
    }

    /// `/healthz` (the process is alive), `/readyz` (every dependency answers) and `/metrics`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
    }
}

async fn readyz(State(t): State<Telemetry>) -> Response {
    let failing = t.not_ready().await;
    if failing.is_empty() {
        return (StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"}))).into_response();
    }
    let checks: serde_json::Map<String, serde_json::Value> =
        failing.into_iter().map(|(name, why)| (name, serde_json::Value::String(why))).collect();
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "notReady", "failing": checks})))
        .into_response()
}

async fn metrics(State(t): State<Telemetry>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], t.encode_metrics())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;

    async fn get_body(router: Router, path: &str) -> (StatusCode, String) {
        let req = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
        let res = router.oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_names_the_failing_dependency() {
        let t = Telemetry::new();
        t.readiness_check("store", || async { Ok(()) });
        assert_eq!(get_body(t.router(), "/readyz").await.0, StatusCode::OK);
        t.readiness_check("kafka", || async { Err("connection refused".to_owned()) });
        let (status, body) = get_body(t.router(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains(r#""kafka":"connection refused""#), "{body}");
        assert!(!body.contains("store"), "{body}");
        assert_eq!(get_body(t.router(), "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_show_registered_counters() {
        let t = Telemetry::new();
        let c = Counter::<u64>::default();
        t.register("traffoflex_test", |r| r.register("events", "Events seen", c.clone()));
        c.inc_by(3);
        let (status, body) = get_body(t.router(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("traffoflex_test_events_total 3"), "{body}");
    }
}
