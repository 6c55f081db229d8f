//! `traffoflex postback`: the public postback entry points as their own process (and the builder `up` uses).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use traffoflex_core::analytics::Analytics;
use traffoflex_core::bus::kafka::KafkaProducer;
use traffoflex_core::settings::BackendSettings;
use traffoflex_core::store::ConfigStore;
use traffoflex_core::telemetry::Telemetry;
use traffoflex_dataplane::clicklog::{ClickLog, ClickLogSettings, Durability, KafkaSink, ShipSettings, Sink};
use traffoflex_dataplane::egress::AddressPolicy;
use traffoflex_dataplane::postback::config::LivePostbackConfig;
use traffoflex_dataplane::postback::currency::CurrencyRates;
use traffoflex_dataplane::postback::outbound::{OutboundSettings, OutboundWorker};
use traffoflex_dataplane::postback::reconcile;
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
    #[command(flatten)]
    pub admin: super::api::AdminBootstrap,
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
    /// Write each postback event log segment full of zeros before it is used, so a commit's fdatasync writes
    /// no file metadata (as the click log does). Turn it off on copy-on-write filesystems.
    #[arg(long, env = "TRAFFOFLEX_POSTBACK_LOG_PREALLOCATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub postback_log_preallocate: bool,
    #[command(flatten)]
    pub outbound: OutboundArgs,
    #[command(flatten)]
    pub currency: CurrencyArgs,
}

/// Revenue in one report currency.
#[derive(Debug, Clone, Args)]
pub struct CurrencyArgs {
    /// Record revenue in this currency (e.g. USD), converting payouts with `--currency-rates`. Without it
    /// revenue is the payout as the network reported it.
    #[arg(long, env = "TRAFFOFLEX_REPORT_CURRENCY")]
    pub report_currency: Option<String>,
    /// What one unit of each currency is worth in the report currency: `EUR=1.08,GBP=1.27`.
    #[arg(long, env = "TRAFFOFLEX_CURRENCY_RATES", default_value = "")]
    pub currency_rates: String,
}

impl CurrencyArgs {
    fn rates(&self) -> anyhow::Result<CurrencyRates> {
        CurrencyRates::parse(self.report_currency.as_deref(), &self.currency_rates)
            .map_err(anyhow::Error::msg)
            .context("--report-currency / --currency-rates")
    }
}

/// Outbound postback delivery (the worker every postback process runs).
#[derive(Debug, Clone, Args)]
pub struct OutboundArgs {
    /// Let outbound postbacks reach private, loopback and link-local addresses (refused by default, after
    /// DNS resolution).
    #[arg(long, env = "TRAFFOFLEX_OUTBOUND_ALLOW_PRIVATE")]
    pub outbound_allow_private: bool,
    /// How often, in milliseconds, the outbound postback queue is checked for due jobs.
    #[arg(long, env = "TRAFFOFLEX_OUTBOUND_POLL_INTERVAL_MS", default_value_t = 1000)]
    pub outbound_poll_interval_ms: u64,
    /// Days delivered and failed outbound postbacks (and their delivery logs) are kept.
    #[arg(long, env = "TRAFFOFLEX_OUTBOUND_RETENTION_DAYS", default_value_t = 30)]
    pub outbound_retention_days: u64,
}

impl OutboundArgs {
    fn settings(&self) -> OutboundSettings {
        OutboundSettings {
            poll_interval: Duration::from_millis(self.outbound_poll_interval_ms.max(10)),
            retention: Duration::from_secs(self.outbound_retention_days.max(1).saturating_mul(24 * 3600)),
            policy: AddressPolicy { allow_private: self.outbound_allow_private },
            ..OutboundSettings::default()
        }
    }
}

impl PostbackSettings {
    /// The settings `up` uses: its click settings' shared flags, and its own outbound flags.
    pub fn for_up(c: &ClickSettings, outbound: &OutboundArgs, currency: &CurrencyArgs) -> Self {
        Self {
            click_id_key: c.click_id_key.clone(),
            trusted_proxies: c.trusted_proxies.clone(),
            reload_token: c.reload_token.clone(),
            reload_interval_ms: c.reload_interval_ms,
            postback_log_max_bytes: 1 << 30,
            // One switch for both logs of the one process.
            postback_log_preallocate: c.click_log_preallocate,
            outbound: outbound.clone(),
            currency: currency.clone(),
        }
    }
}

/// A started postback service: its router and what must be closed on shutdown.
pub struct Postback {
    pub router: axum::Router,
    pub log: Arc<ClickLog>,
    /// The outbound postback worker; it stops on shutdown once its attempts in flight finish.
    pub outbound: tokio::task::JoinHandle<()>,
    /// The event log's directory, where the running marker lives.
    log_dir: std::path::PathBuf,
}

impl Postback {
    /// After the server stopped: waits for the outbound worker, then flushes and closes the event log.
    pub async fn close(self) {
        if let Err(e) = self.outbound.await {
            tracing::error!(error = %e, "the outbound postback worker failed");
        }
        self.log.close().await;
        reconcile::clean_stop(&self.log_dir);
    }
}

/// Builds the postback service on `store`, shipping its event log (`<data-dir>/postbacklog`) to `sink`;
/// conversions are enriched with their clicks from `analytics` when there is one.
pub async fn build<S: Sink>(
    settings: &PostbackSettings,
    data_dir: &Path,
    store: Arc<dyn ConfigStore>,
    analytics: Option<Arc<dyn Analytics>>,
    sink: S,
    telemetry: &Telemetry,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Postback> {
    let codec = click_id_codec(settings.click_id_key.as_deref(), data_dir)?;
    let trusted =
        TrustedProxies::parse(&settings.trusted_proxies).map_err(anyhow::Error::msg).context("--trusted-proxies")?;
    let rates = settings.currency.rates()?;
    let log_dir = data_dir.join("postbacklog");
    let mut log_settings = ClickLogSettings::new(log_dir.clone());
    log_settings.durability = Durability::Durable;
    log_settings.max_bytes = settings.postback_log_max_bytes;
    log_settings.preallocate = settings.postback_log_preallocate;
    let log = Arc::new(ClickLog::open(log_settings, telemetry).context("opening the postback event log")?);
    log.start_shipper(sink, ShipSettings::default()).context("starting the postback event log shipper")?;

    let unclean = reconcile::unclean_since(&log_dir);
    if unclean.is_none() {
        reconcile::beat(&log_dir).context("writing the postback event log's running marker")?;
    }
    spawn_reconcile(Arc::clone(&store), Arc::clone(&log), log_dir.clone(), unclean, shutdown.clone());
    let config = Arc::new(LivePostbackConfig::new(store));
    if let Err(e) = config.refresh(true).await {
        tracing::warn!(error = %e, "postback configuration not loaded yet; retrying in the background");
    }
    config.spawn_reloader(Duration::from_millis(settings.reload_interval_ms.max(50)), shutdown.clone());
    config.spawn_revision_metric(telemetry, shutdown.clone());
    let ready = Arc::clone(&config);
    telemetry.readiness_check("configuration", move || {
        let loaded = ready.is_loaded();
        async move { if loaded { Ok(()) } else { Err("configuration not loaded yet".to_owned()) } }
    });
    let worker = OutboundWorker::new(Arc::clone(config.store()), settings.outbound.settings(), telemetry);
    let outbound = worker.spawn(shutdown);
    let mut state =
        PostbackState::new(config, Arc::clone(&log), codec, trusted, settings.reload_token.clone(), telemetry)
            .with_rates(rates);
    if let Some(analytics) = analytics {
        state = state.with_clicks(analytics);
    }
    Ok(Postback { router: router(Arc::new(state)), log, outbound, log_dir })
}

/// After an unclean stop (`unclean` is when the last run was last seen), appends again the events of the
/// conversions changed since, retrying while the store is down; then keeps the heartbeat. The marker keeps
/// the old time until the replay is done, so a second crash meanwhile replays from the first.
fn spawn_reconcile(
    store: Arc<dyn ConfigStore>,
    log: Arc<ClickLog>,
    dir: std::path::PathBuf,
    unclean: Option<reconcile::LastSeen>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        if let Some(since) = unclean {
            tracing::warn!(%since, "the postback service did not stop cleanly; appending the events of conversions changed since");
            loop {
                match reconcile::replay_since(store.as_ref(), &log, since).await {
                    Ok(n) => {
                        tracing::info!(conversions = n, "conversion events appended again after an unclean stop");
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "replaying conversion events failed; retrying in 5 s"),
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    () = shutdown.cancelled() => return,
                }
            }
            if let Err(e) = reconcile::beat(&dir) {
                tracing::warn!(error = %e, "could not write the postback heartbeat");
            }
        }
        reconcile::spawn_heartbeat(dir, shutdown);
    });
}

pub async fn run(args: PostbackArgs) -> anyhow::Result<()> {
    let b = &args.backends;
    let brokers = b.kafka_brokers.as_deref().context(
        "the postback role ships conversions to Kafka: set --kafka-brokers (or TRAFFOFLEX_KAFKA_BROKERS); `traffoflex up` runs without",
    )?;
    let store = traffoflex_core::store::open(b).await.context("opening the configuration store")?;
    args.admin.apply_or_warn(store.as_ref()).await;
    let telemetry = Telemetry::new();
    let shutdown = crate::shutdown::on_signal();
    let sink = KafkaSink::new(KafkaProducer::new(brokers, &b.kafka_topic_prefix)?);
    let analytics = super::traffic::clickhouse_if_configured(b);
    let postback = build(&args.shared, &b.data_dir, store, analytics, sink, &telemetry, shutdown.clone()).await?;
    let app = postback.router.clone().merge(telemetry.router());
    crate::serve::serve(args.listen, app, shutdown).await?;
    postback.close().await;
    Ok(())
}
