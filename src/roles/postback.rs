//! `traffoflex postback`: the public postback entry points as their own process (and the builder `up` uses).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use traffoflex_core::bus::kafka::KafkaProducer;
use traffoflex_core::settings::BackendSettings;
use traffoflex_core::store::ConfigStore;
use traffoflex_core::telemetry::Telemetry;
use traffoflex_dataplane::clicklog::{ClickLog, ClickLogSettings, Durability, KafkaSink, ShipSettings, Sink};
use traffoflex_dataplane::postback::config::LivePostbackConfig;
use traffoflex_dataplane::postback::server::{PostbackState, router};
use traffoflex_dataplane::traffic::visitor::TrustedProxies;

use super::traffic::{ClickSettings, click_id_codec};

/// Settings of the `postback` role.
#[derive(Debug, Args)]
pub struct PostbackArgs {
    #[command(flatten)]
    pub backends: BackendSettings,
    /// Where the postback entry points, `/healthz`, `/readyz` and `/metrics` answer.
    #[arg(long, env = "TRAFFOFLEX_POSTBACK_LISTEN", default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub shared: PostbackSettings,
}

/// Postback settings (`up` takes them from its click settings, which carry the same flags).
#[derive(Debug, Clone, Args)]
pub struct PostbackSettings {
    /// Secret that verifies click IDs: the traffic processes' `--click-id-key`. Without one the key kept in
    /// `<data-dir>/click-id.key` is used (made if missing).
    #[arg(long, env = "TRAFFOFLEX_CLICK_ID_KEY", hide_env_values = true)]
    pub click_id_key: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed (for IP allowlists): comma-separated CIDRs or addresses.
    #[arg(long, env = "TRAFFOFLEX_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// Bearer token `POST /internal/reload` requires; without one only loopback callers may reload.
    #[arg(long, env = "TRAFFOFLEX_RELOAD_TOKEN", hide_env_values = true)]
    pub reload_token: Option<String>,
    /// How often, in milliseconds, the configuration revision is checked.
    #[arg(long, env = "TRAFFOFLEX_RELOAD_INTERVAL_MS", default_value_t = 1000)]
    pub reload_interval_ms: u64,
    /// Most bytes the local postback event log may hold while Kafka is behind.
    #[arg(long, env = "TRAFFOFLEX_POSTBACK_LOG_MAX_BYTES", default_value_t = 1 << 30)]
    pub postback_log_max_bytes: u64,
}

impl From<&ClickSettings> for PostbackSettings {
    fn from(c: &ClickSettings) -> Self {
        Self {
            click_id_key: c.click_id_key.clone(),
            trusted_proxies: c.trusted_proxies.clone(),
            reload_token: c.reload_token.clone(),
            reload_interval_ms: c.reload_interval_ms,
            postback_log_max_bytes: 1 << 30,
        }
    }
}

/// A started postback service: its router and what must be closed on shutdown.
pub struct Postback {
    pub router: axum::Router,
    pub log: Arc<ClickLog>,
}

/// Builds the postback service on `store`, shipping its event log (`<data-dir>/postbacklog`) to `sink`.
pub async fn build<S: Sink>(
    settings: &PostbackSettings,
    data_dir: &Path,
    store: Arc<dyn ConfigStore>,
    sink: S,
    telemetry: &Telemetry,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Postback> {
    let codec = click_id_codec(settings.click_id_key.as_deref(), data_dir)?;
    let trusted =
        TrustedProxies::parse(&settings.trusted_proxies).map_err(anyhow::Error::msg).context("--trusted-proxies")?;
    let mut log_settings = ClickLogSettings::new(data_dir.join("postbacklog"));
    log_settings.durability = Durability::Durable;
    log_settings.max_bytes = settings.postback_log_max_bytes;
    let log = Arc::new(ClickLog::open(log_settings, telemetry).context("opening the postback event log")?);
    log.start_shipper(sink, ShipSettings::default()).context("starting the postback event log shipper")?;

    let config = Arc::new(LivePostbackConfig::new(store));
    if let Err(e) = config.refresh(true).await {
        tracing::warn!(error = %e, "postback configuration not loaded yet; retrying in the background");
    }
    config.spawn_reloader(Duration::from_millis(settings.reload_interval_ms.max(50)), shutdown);
    let ready = Arc::clone(&config);
    telemetry.readiness_check("configuration", move || {
        let loaded = ready.is_loaded();
        async move { if loaded { Ok(()) } else { Err("configuration not loaded yet".to_owned()) } }
    });
    let state = PostbackState::new(config, Arc::clone(&log), codec, trusted, settings.reload_token.clone(), telemetry);
    Ok(Postback { router: router(Arc::new(state)), log })
}

pub async fn run(args: PostbackArgs) -> anyhow::Result<()> {
    let b = &args.backends;
    let brokers = b.kafka_brokers.as_deref().context(
        "the postback role ships conversions to Kafka: set --kafka-brokers (or TRAFFOFLEX_KAFKA_BROKERS); `traffoflex up` runs without",
    )?;
    let store = traffoflex_core::store::open(b).await.context("opening the configuration store")?;
    let telemetry = Telemetry::new();
    let shutdown = crate::shutdown::on_signal();
    let sink = KafkaSink::new(KafkaProducer::new(brokers, &b.kafka_topic_prefix)?);
    let postback = build(&args.shared, &b.data_dir, store, sink, &telemetry, shutdown.clone()).await?;
    let app = postback.router.merge(telemetry.router());
    crate::serve::serve(args.listen, app, shutdown).await?;
    postback.log.close().await;
    Ok(())
}
