//! A configuration snapshot loaded from the store and swapped atomically, shared by the traffic and postback
//! services.
//!
//! Requests read the snapshot in force through an `ArcSwap` (no lock, no store access). A reload builds a
//! whole new snapshot beside the old one and swaps it in. Reloads happen when the store's configuration
//! revision differs from the loaded one — checked every interval (the safety net) and at once on
//! `POST /internal/reload` (the signal the API and the operator send after a write). While the store is
//! unreachable the last snapshot keeps serving.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;
use traffoflex_core::store::{ConfigStore, StoreError};
use traffoflex_core::telemetry::Telemetry;

/// A configuration a service serves from.
pub trait Snapshot: Default + Send + Sync + 'static {
    /// What it is, for logs (`routing`, `postback`).
    const WHAT: &'static str;

    /// The store revision it was built from; empty before the first load.
    fn revision(&self) -> &str;

    /// Builds it from the store. Implementations read the revision first, so a write racing the load leaves
    /// the loaded revision behind the store's and the next check loads again.
    fn load(store: &dyn ConfigStore) -> impl Future<Output = Result<Self, StoreError>> + Send;

    /// Takes over what the snapshot in force keeps while serving (e.g. round-robin positions), just before
    /// this one replaces it.
    fn carry_over(&mut self, _previous: &Self) {}
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabel {
    revision: String,
}

/// The snapshot in force, shared by every request.
pub struct Live<T> {
    current: ArcSwap<T>,
    store: Arc<dyn ConfigStore>,
    reload_lock: tokio::sync::Mutex<()>,
}

impl<T: Snapshot> Live<T> {
    /// Starts empty until the first [`Live::refresh`] succeeds.
    pub fn new(store: Arc<dyn ConfigStore>) -> Self {
        Self { current: ArcSwap::from_pointee(T::default()), store, reload_lock: tokio::sync::Mutex::new(()) }
    }

    /// The store the configuration comes from.
    pub fn store(&self) -> &Arc<dyn ConfigStore> {
        &self.store
    }

    /// The snapshot in force now.
    pub fn current(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Whether a configuration has been loaded at least once.
    pub fn is_loaded(&self) -> bool {
        !self.current.load().revision().is_empty()
    }

    /// Reloads when the store's revision differs from the loaded one (or always, with `force`). Returns
    /// whether a new snapshot was swapped in.
    pub async fn refresh(&self, force: bool) -> Result<bool, StoreError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        if !force && self.store.config_revision().await? == self.current.load().revision() {
            return Ok(false);
        }
        let mut loaded = T::load(self.store.as_ref()).await?;
        loaded.carry_over(&self.current.load());
        tracing::info!(what = T::WHAT, revision = %loaded.revision(), "configuration loaded");
        self.current.store(Arc::new(loaded));
        Ok(true)
    }

    /// Exposes the revision in force as `traffoflex_config_loaded_revision{revision="…"} 1` in `telemetry`
    /// (checked every second until `shutdown`), so whoever scrapes the process sees what it serves.
    pub fn spawn_revision_metric(self: &Arc<Self>, telemetry: &Telemetry, shutdown: CancellationToken) {
        let family = Family::<RevisionLabel, Gauge>::default();
        telemetry.register("traffoflex_config", |r| {
            r.register("loaded_revision", "The configuration revision this process serves (the label)", family.clone());
        });
        let live = Arc::clone(self);
        let mut shown = String::new();
        spawn_every(Duration::from_secs(1), shutdown, move || {
            let revision = live.current.load().revision().to_owned();
            if revision != shown {
                family.clear();
                family.get_or_create(&RevisionLabel { revision: revision.clone() }).set(1);
                shown = revision;
            }
            std::future::ready(())
        });
    }

    /// Checks the revision every `interval` until `shutdown`; failures keep the last snapshot and are logged.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let live = Arc::clone(self);
        spawn_every(interval, shutdown, move || {
            let live = Arc::clone(&live);
            async move {
                if let Err(e) = live.refresh(false).await {
                    tracing::warn!(what = T::WHAT, error = %e, "configuration check failed; the loaded snapshot keeps serving");
                }
            }
        })
    }
}

/// Runs `f` now and then every `interval` (a late run delays the next, none is made up) until `shutdown`.
pub fn spawn_every<F, Fut>(interval: Duration, shutdown: CancellationToken, mut f: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            f().await;
        }
    })
}
