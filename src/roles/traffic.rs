//! `traffoflex traffic`: the public click entry points as their own process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use traffoflex_core::analytics::{Analytics, ClickHouse};
use traffoflex_core::bus::kafka::KafkaProducer;
use traffoflex_core::clickid::ClickIdCodec;
use traffoflex_core::settings::BackendSettings;
use traffoflex_core::telemetry::Telemetry;
use traffoflex_dataplane::clicklog::{ClickLog, ClickLogSettings, Durability, KafkaSink, ShipSettings};
use traffoflex_dataplane::health::checker::{HealthChecker, HealthSettings, SharedHealth, spawn_health_view};
use traffoflex_dataplane::health::probe::AddressPolicy;
use traffoflex_dataplane::traffic::config::LiveConfig;
use traffoflex_dataplane::traffic::geo::GeoIp;
use traffoflex_dataplane::traffic::server::{TrafficState, router};
use traffoflex_dataplane::traffic::stats::DestinationStats;
use traffoflex_dataplane::traffic::visitor::TrustedProxies;

/// Settings of the `traffic` role.
#[derive(Debug, Args)]
pub struct TrafficArgs {
    #[command(flatten)]
    pub backends: BackendSettings,
    /// Where the click entry points, `/healthz`, `/readyz` and `/metrics` answer.
    #[arg(long, env = "TRAFFOFLEX_TRAFFIC_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub shared: ClickSettings,
    #[command(flatten)]
    pub admin: super::api::AdminBootstrap,
}

/// Click settings shared by `traffic` and `up`.
#[derive(Debug, Clone, Args)]
pub struct ClickSettings {
    /// `durable`: a redirect is answered once its click is on disk (group commit). `fast`: at once.
    #[arg(long, env = "TRAFFOFLEX_CLICK_DURABILITY", default_value = "durable")]
    pub click_durability: Durability,
    /// Most bytes the local click log may hold while Kafka is behind; past it clicks are redirected but dropped.
    #[arg(long, env = "TRAFFOFLEX_CLICK_LOG_MAX_BYTES", default_value_t = 2 << 30)]
    pub click_log_max_bytes: u64,
    /// Write each click log segment full of zeros before it is used, so a commit's fdatasync writes no file
    /// metadata. Turn it off on copy-on-write filesystems, where it gains nothing.
    #[arg(long, env = "TRAFFOFLEX_CLICK_LOG_PREALLOCATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub click_log_preallocate: bool,
    /// Secret that signs click IDs. Every traffic and postback process must share it; without one a key is
    /// made once and kept in `<data-dir>/click-id.key`.
    #[arg(long, env = "TRAFFOFLEX_CLICK_ID_KEY", hide_env_values = true)]
    pub click_id_key: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed: comma-separated CIDRs or addresses.
    #[arg(long, env = "TRAFFOFLEX_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// A MaxMind country or city database (`.mmdb`) for the visitor's country, region and city.
    #[arg(long, env = "TRAFFOFLEX_GEOIP_DB")]
    pub geoip_db: Option<std::path::PathBuf>,
    /// A MaxMind ASN or ISP database (`.mmdb`) for the visitor's ASN and ISP.
    #[arg(long, env = "TRAFFOFLEX_GEOIP_ASN_DB")]
    pub geoip_asn_db: Option<std::path::PathBuf>,
    /// How often, in milliseconds, the GeoIP files are checked for a new version (read again when they
    /// changed); 0 reads them at start only.
    #[arg(long, env = "TRAFFOFLEX_GEOIP_RELOAD_INTERVAL_MS", default_value_t = 60_000)]
    pub geoip_reload_interval_ms: u64,
    /// A header a trusted edge sets to the visitor's ISO country code (e.g. `CF-IPCountry`).
    #[arg(long, env = "TRAFFOFLEX_COUNTRY_HEADER")]
    pub country_header: Option<String>,
    /// Bearer token `POST /internal/reload` requires; without one only loopback callers may reload.
    #[arg(long, env = "TRAFFOFLEX_RELOAD_TOKEN", hide_env_values = true)]
    pub reload_token: Option<String>,
    /// Run destination health checks (one process per destination and interval, chosen through the store).
    #[arg(long, env = "TRAFFOFLEX_HEALTH_CHECKS", default_value_t = true, action = clap::ArgAction::Set)]
    pub health_checks: bool,
    /// Let health checks reach private, loopback and link-local addresses.
    #[arg(long, env = "TRAFFOFLEX_HEALTH_ALLOW_PRIVATE")]
    pub health_allow_private: bool,
    /// How often, in milliseconds, the configuration revision is checked (the reload signal's safety net).
    #[arg(long, env = "TRAFFOFLEX_RELOAD_INTERVAL_MS", default_value_t = 1000)]
    pub reload_interval_ms: u64,
    /// How often, in milliseconds, cap usage and bestRoi figures are read from analytics.
    #[arg(long, env = "TRAFFOFLEX_STATS_INTERVAL_MS", default_value_t = 10_000)]
    pub stats_interval_ms: u64,
}

/// The click-ID key: the configured secret, or one kept in the data directory.
pub fn click_id_codec(key: Option<&str>, data_dir: &Path) -> anyhow::Result<ClickIdCodec> {
    if let Some(k) = key.filter(|k| !k.is_empty()) {
        return Ok(ClickIdCodec::single(k.as_bytes()));
    }
    let path = data_dir.join("click-id.key");
    if let Ok(existing) = std::fs::read(&path) {
        anyhow::ensure!(existing.len() >= 16, "{} is too short to be a key", path.display());
        return Ok(ClickIdCodec::single(&existing));
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let key: [u8; 32] = rand::random();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, key).with_context(|| format!("writing {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, &path)?;
    tracing::info!(path = %path.display(), "made a click-ID key; set TRAFFOFLEX_CLICK_ID_KEY to share one between processes");
    Ok(ClickIdCodec::single(&key))
}

/// ClickHouse, when `--clickhouse-url` names one: the data-plane roles read figures and clicks there (no
/// connection is made until then).
pub fn clickhouse_if_configured(b: &BackendSettings) -> Option<Arc<dyn Analytics>> {
    match b.clickhouse_url.as_deref().map(str::trim) {
        Some(url) if !url.is_empty() => Some(Arc::new(ClickHouse::new(url, &b.clickhouse_database))),
        _ => None,
    }
}

/// A started traffic service: its router and what must be closed on shutdown.
pub struct Traffic {
    pub router: axum::Router,
    pub log: Arc<ClickLog>,
}

/// Builds the traffic service on `store`, shipping its click log to `sink`. Caps and bestRoi read their
/// figures from `analytics` when there is one (else caps on conversions and revenue fail open, click and cost
/// caps count this process's clicks, bestRoi uses its fallback).
pub async fn build<S: traffoflex_dataplane::clicklog::Sink>(
    settings: &ClickSettings,
    data_dir: &Path,
    store: Arc<dyn traffoflex_core::store::ConfigStore>,
    analytics: Option<Arc<dyn Analytics>>,
    sink: S,
    telemetry: &Telemetry,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Traffic> {
    let codec = click_id_codec(settings.click_id_key.as_deref(), data_dir)?;
    let trusted =
        TrustedProxies::parse(&settings.trusted_proxies).map_err(anyhow::Error::msg).context("--trusted-proxies")?;
    let country_header = match &settings.country_header {
        Some(h) => Some(h.parse::<axum::http::HeaderName>().with_context(|| format!("--country-header {h}"))?),
        None => None,
    };
    let geo = GeoIp::open(settings.geoip_db.as_deref(), settings.geoip_asn_db.as_deref())
        .map_err(anyhow::Error::msg)
        .context("--geoip-db / --geoip-asn-db")?;
    let geo = Arc::new(geo);
    if geo.is_enabled() && settings.geoip_reload_interval_ms > 0 {
        spawn_geoip_reloader(
            Arc::clone(&geo),
            Duration::from_millis(settings.geoip_reload_interval_ms),
            shutdown.clone(),
        );
    }
    let mut log_settings = ClickLogSettings::new(data_dir.join("clicklog"));
    log_settings.durability = settings.click_durability;
    log_settings.max_bytes = settings.click_log_max_bytes;
    log_settings.preallocate = settings.click_log_preallocate;
    let log = Arc::new(ClickLog::open(log_settings, telemetry).context("opening the click log")?);
    log.start_shipper(sink, ShipSettings::default()).context("starting the click log shipper")?;

    let config = Arc::new(LiveConfig::new(Arc::clone(&store)));
    if let Err(e) = config.refresh(true).await {
        tracing::warn!(error = %e, "configuration not loaded yet; retrying in the background (not ready until then)");
    }
    config.spawn_reloader(Duration::from_millis(settings.reload_interval_ms.max(50)), shutdown.clone());
    config.spawn_revision_metric(telemetry, shutdown.clone());
    let ready = Arc::clone(&config);
    telemetry.readiness_check("configuration", move || {
        let loaded = ready.is_loaded();
        async move { if loaded { Ok(()) } else { Err("configuration not loaded yet".to_owned()) } }
    });
    let health = SharedHealth::default();
    spawn_health_view(Arc::clone(&store), Arc::clone(&health), Duration::from_secs(2), shutdown.clone());
    if settings.health_checks {
        let hs = HealthSettings {
            policy: AddressPolicy { allow_private: settings.health_allow_private },
            ..HealthSettings::default()
        };
        HealthChecker::new(Arc::clone(&store), Arc::clone(&log), hs).spawn(shutdown.clone());
    }
    let stats = Arc::new(DestinationStats::new().register(telemetry));
    match analytics {
        Some(analytics) => {
            let live = Arc::clone(&config);
            let interval = Duration::from_millis(settings.stats_interval_ms.max(100));
            stats.spawn_refresher(analytics, move || live.current(), interval, shutdown.clone());
        }
        None => tracing::info!(
            "no analytics configured (--clickhouse-url): caps on conversions and revenue fail open, click and cost caps count this process's clicks, bestRoi uses its fallback"
        ),
    }
    let state = Arc::new(
        TrafficState::new(
            Arc::clone(&config),
            Arc::clone(&log),
            codec,
            trusted,
            country_header,
            settings.reload_token.clone(),
            telemetry,
        )
        .with_health(health)
        .with_stats(stats)
        .with_geo(geo),
    );
    Ok(Traffic { router: router(state), log })
}

pub async fn run(args: TrafficArgs) -> anyhow::Result<()> {
    let b = &args.backends;
    let brokers = b
        .kafka_brokers
        .as_deref()
        .context("the traffic role ships clicks to Kafka: set --kafka-brokers (or TRAFFOFLEX_KAFKA_BROKERS); `traffoflex up` runs without")?;
    let store = traffoflex_core::store::open(b).await.context("opening the configuration store")?;
    args.admin.apply_or_warn(store.as_ref()).await;
    let telemetry = Telemetry::new();
    let shutdown = crate::shutdown::on_signal();
    let sink = KafkaSink::new(KafkaProducer::new(brokers, &b.kafka_topic_prefix)?);
    let traffic =
        build(&args.shared, &b.data_dir, store, clickhouse_if_configured(b), sink, &telemetry, shutdown.clone())
            .await?;
    let app = traffic.router.merge(telemetry.router());
    crate::serve::serve(args.listen, app, shutdown).await?;
    traffic.log.close().await;
    Ok(())
}

/// Checks the GeoIP files every `every` and reads a changed one again, off the runtime's workers (a city
/// database is tens of megabytes).
fn spawn_geoip_reloader(geo: Arc<GeoIp>, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
    traffoflex_dataplane::live::spawn_every(every, shutdown, move || {
        let geo = Arc::clone(&geo);
        async move {
            match tokio::task::spawn_blocking(move || geo.reload_if_changed()).await {
                Ok(Ok(true)) => tracing::info!("GeoIP database reloaded"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "GeoIP database not reloaded; the one loaded before stays in use")
                }
                Err(e) => tracing::warn!(error = %e, "GeoIP reload panicked"),
            }
        }
    });
}
