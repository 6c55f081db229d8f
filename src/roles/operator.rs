//! `traffoflex operator`: the Kubernetes operator as its own process (one Deployment; replicas elect a leader).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use traffoflex_core::settings::BackendSettings;
use traffoflex_core::telemetry::Telemetry;
use traffoflex_operator::{DataPlaneSettings, LeaseSettings, Settings};

/// Settings of the `operator` role.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    #[command(flatten)]
    pub backends: BackendSettings,
    /// Where `/healthz`, `/readyz` and `/metrics` answer.
    #[arg(long, env = "TRAFFOFLEX_OPERATOR_LISTEN", default_value = "127.0.0.1:8084")]
    pub listen: SocketAddr,
    /// The kubeconfig file; without one, `KUBECONFIG`, `~/.kube/config` or the in-cluster service account.
    #[arg(long, env = "TRAFFOFLEX_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "TRAFFOFLEX_OPERATOR_NAMESPACE")]
    pub namespace: Option<String>,
    /// Namespace of the leader-election Lease (default: the kubeconfig's or the service account's namespace).
    #[arg(long, env = "TRAFFOFLEX_OPERATOR_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader-election Lease; replicas with the same Lease elect one leader.
    #[arg(long, env = "TRAFFOFLEX_OPERATOR_LEASE_NAME", default_value = "traffoflex-operator")]
    pub lease_name: String,
    /// This replica's name in the Lease (default: `POD_NAME` or the host name, with a random suffix).
    #[arg(long, env = "TRAFFOFLEX_OPERATOR_IDENTITY")]
    pub identity: Option<String>,
    /// Bearer token of the data plane's `POST /internal/reload` (the pods' `TRAFFOFLEX_RELOAD_TOKEN`).
    #[arg(long, env = "TRAFFOFLEX_RELOAD_TOKEN", hide_env_values = true)]
    pub reload_token: Option<String>,
    /// How often, in seconds, each DataPlane's pods are measured and its replicas reconsidered.
    #[arg(long, env = "TRAFFOFLEX_SCALE_INTERVAL_SECONDS", default_value_t = 15)]
    pub scale_interval_seconds: u64,
    /// Seconds a lower request rate must last before a component is scaled down.
    #[arg(long, env = "TRAFFOFLEX_SCALE_DOWN_STABILIZATION_SECONDS", default_value_t = 300)]
    pub scale_down_stabilization_seconds: u64,
}

fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "traffoflex-operator".to_owned());
    format!("{host}-{:08x}", rand::random::<u32>())
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let client = traffoflex_operator::client(args.kubeconfig.as_deref()).await.context("connecting to Kubernetes")?;
    if args.backends.mongo_uri.as_deref().is_none_or(|u| u.trim().is_empty()) {
        tracing::warn!(
            data_dir = %args.backends.data_dir.display(),
            "no --mongo-uri: mirroring into an embedded store that only processes on this host can read"
        );
    }
    let store = traffoflex_core::store::open(&args.backends).await.context("opening the configuration store")?;
    let telemetry = Telemetry::new();
    traffoflex_operator::readiness_checks(&telemetry, &client, &store);

    let lease_namespace = args.lease_namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    let identity = args.identity.unwrap_or_else(default_identity);
    tracing::info!(
        identity,
        lease = %format!("{lease_namespace}/{}", args.lease_name),
        namespace = args.namespace.as_deref().unwrap_or("(all)"),
        "operator starting"
    );
    let settings = Settings {
        namespace: args.namespace,
        lease: LeaseSettings::new(lease_namespace, args.lease_name, identity),
        dataplane: DataPlaneSettings {
            scale_interval: Duration::from_secs(args.scale_interval_seconds.max(1)),
            scale_down_window: Duration::from_secs(args.scale_down_stabilization_seconds),
            reload_token: args.reload_token.filter(|t| !t.is_empty()),
        },
    };

    let shutdown = crate::shutdown::on_signal();
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "operator health and metrics");
    let ops = axum::serve(listener, telemetry.router()).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let ops = tokio::spawn(async move { ops.await });
    traffoflex_operator::run(settings, client, store, telemetry, shutdown.clone()).await;
    shutdown.cancel();
    ops.await.context("ops server task")?.context("ops server")?;
    Ok(())
}
