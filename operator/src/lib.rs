//! The TraffoFlex Kubernetes operator: mirrors `Campaign`, `Stream`, `Destination`, `TrafficSource`,
//! `AffiliateNetwork` and `PostbackTemplate` custom resources into the configuration store, where the data
//! plane reads them.
//!
//! - [`controller`]: one reconcile for every kind (validate, resolve references, write the store, status,
//!   Events, finalizer).
//! - [`kinds`]: what each kind names and how its store document is made; [`refs`]: store IDs and resolved
//!   references; [`conditions`]: the status each outcome leads to. These three are pure.
//! - [`dataplane`]: the `DataPlane` kind's Deployments and Services, scaled on the request rate
//!   ([`autoscale`]); reload signals to its pods after every change that reached the store ([`pods`]).
//! - [`leader`]: leader election on a Lease; only the leader runs the controllers.
//!
//! Objects it mirrors carry `managedBy: "kubernetes"` in the store and are read-only through the API:
//! Kubernetes wins for the objects it manages.

pub mod autoscale;
pub mod conditions;
pub mod controller;
pub mod dataplane;
pub mod kinds;
pub mod leader;
pub mod metrics;
pub mod pods;
pub mod refs;
#[cfg(test)]
mod testing;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};
use tokio_util::sync::CancellationToken;
use traffoflex_core::store::ConfigStore;
use traffoflex_core::telemetry::Telemetry;

pub use controller::{Context, FINALIZER};
pub use leader::{LeaderElector, LeaseSettings};
pub use metrics::Metrics;

/// The `reportingController` of the operator's Events.
pub const CONTROLLER_NAME: &str = "traffoflex-operator";

/// How one operator process runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// The leader election.
    pub lease: LeaseSettings,
    /// Scaling and reload signals of the data plane.
    pub dataplane: DataPlaneSettings,
}

/// How the operator scales the data plane and tells it to reload.
#[derive(Debug, Clone)]
pub struct DataPlaneSettings {
    /// How often each DataPlane's pods are measured and its replicas reconsidered.
    pub scale_interval: Duration,
    /// Scaling down goes no lower than the highest recommendation of this long.
    pub scale_down_window: Duration,
    /// The bearer token the data plane's `POST /internal/reload` requires (its `TRAFFOFLEX_RELOAD_TOKEN`).
    pub reload_token: Option<String>,
}

impl Default for DataPlaneSettings {
    fn default() -> Self {
        Self {
            scale_interval: Duration::from_secs(15),
            scale_down_window: Duration::from_secs(300),
            reload_token: None,
        }
    }
}

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the kubeconfig {path}: {source}")]
    Kubeconfig { path: String, source: kube::config::KubeconfigError },
    #[error("cannot configure the Kubernetes client: {0}")]
    Config(#[from] kube::config::KubeconfigError),
    #[error("cannot find a Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot make the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A Kubernetes client from the kubeconfig file at `path`, or (without one) from `KUBECONFIG`,
/// `~/.kube/config` or the in-cluster service account.
pub async fn client(path: Option<&Path>) -> Result<Client, Error> {
    let config = match path {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|source| Error::Kubeconfig { path: path.display().to_string(), source })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// Registers the operator's readiness checks: the store and the Kubernetes API answer.
pub fn readiness_checks(telemetry: &Telemetry, client: &Client, store: &Arc<dyn ConfigStore>) {
    let probe = store.clone();
    telemetry.readiness_check("store", move || {
        let probe = probe.clone();
        async move { probe.ping().await.map_err(|e| e.to_string()) }
    });
    let probe = client.clone();
    telemetry.readiness_check("kubernetes", move || {
        let probe = probe.clone();
        async move { probe.apiserver_version().await.map(|_| ()).map_err(|e| e.to_string()) }
    });
}

/// Runs the operator until `stop` is cancelled: takes part in the leader election and, while leading, runs
/// the controllers. On the way out it stops them, then releases the Lease.
pub async fn run(
    settings: Settings,
    client: Client,
    store: Arc<dyn ConfigStore>,
    telemetry: Telemetry,
    stop: CancellationToken,
) {
    let metrics = Metrics::new(&telemetry);
    let reporter = Reporter { controller: CONTROLLER_NAME.into(), instance: Some(settings.lease.identity.clone()) };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context {
        client: client.clone(),
        store,
        recorder,
        metrics: metrics.clone(),
        dataplane: settings.dataplane.clone(),
        scalers: std::sync::Mutex::default(),
        reload_wanted: tokio::sync::Notify::new(),
    });
    let mut elector = LeaderElector::new(client, settings.lease.clone());
    // Controllers must be gone before another replica may take over: within the lease's slack.
    let lease = &settings.lease;
    let stop_grace = lease.lease_duration.saturating_sub(lease.renew_deadline) / 2;
    let mut running: Option<(CancellationToken, tokio::task::JoinHandle<()>)> = None;
    loop {
        let leading = elector.step().await;
        match (leading, running.is_some()) {
            (true, false) => {
                tracing::info!(identity = %lease.identity, "leading: starting the controllers");
                let token = stop.child_token();
                let task = tokio::spawn(controller::run(ctx.clone(), settings.namespace.clone(), token.clone()));
                running = Some((token, task));
                metrics.leader.set(1);
            }
            (false, true) => {
                tracing::warn!(identity = %lease.identity, "no longer leading: stopping the controllers");
                if let Some((token, task)) = running.take() {
                    stop_controllers(token, task, stop_grace).await;
                }
                metrics.leader.set(0);
            }
            _ => {}
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(lease.retry_period) => {}
        }
    }
    if let Some((token, task)) = running.take() {
        stop_controllers(token, task, stop_grace).await;
        metrics.leader.set(0);
    }
    elector.release().await;
}

async fn stop_controllers(token: CancellationToken, mut task: tokio::task::JoinHandle<()>, grace: Duration) {
    token.cancel();
    if tokio::time::timeout(grace, &mut task).await.is_err() {
        tracing::warn!("controllers still busy after {grace:?}: stopping them now");
        task.abort();
        let _ = task.await;
    }
}
