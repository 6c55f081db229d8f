//! The traffic service's configuration: a [`RoutingSnapshot`] loaded from the store and swapped atomically.
//!
//! Clicks never wait for the store: they read the current snapshot through an `ArcSwap` (no lock). A reload
//! builds a whole new snapshot beside the old one and swaps it in. Reloads happen when the store's
//! configuration revision differs from the loaded one — checked every `interval` (the safety net) and at once
//! on `POST /internal/reload` (the signal the API and the operator send after a write). While the store is
//! unreachable the last snapshot keeps serving.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use traffoflex_core::store::{Collection, ConfigStore, Query, StoreError};
use traffoflex_crds::{CampaignSpec, DestinationSpec, StreamSpec, TrafficSourceSpec};

use crate::routing::RoutingSnapshot;

/// One loaded configuration.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The store's revision this snapshot was built from; empty before the first load.
    pub revision: String,
    pub snapshot: RoutingSnapshot,
}

/// How many documents one store query of a reload reads: the JSON of a page is turned into specs and freed
/// before the next page is read, so a reload's transient memory stays bounded however large the configuration.
const PAGE: u64 = 500;

/// Reads every document of a collection as `(id, spec)`, page by page in ID order; a document that doesn't
/// parse is skipped and logged, so one bad object can't take the others down.
pub(crate) async fn documents<T: DeserializeOwned>(
    store: &dyn ConfigStore,
    coll: Collection,
) -> Result<Vec<(String, T)>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = Query::new().limit(PAGE);
        if let Some(last) = after.take() {
            query = query.after(last);
        }
        let page = store.find(coll, &query).await?;
        let full = page.len() as u64 == PAGE;
        for doc in page {
            let id = doc.get("id").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            after = Some(id.clone());
            match serde_json::from_value::<T>(doc) {
                Ok(spec) => out.push((id, spec)),
                Err(e) => {
                    tracing::warn!(collection = coll.name(), id, error = %e, "skipping a document that does not parse")
                }
            }
        }
        if !full {
            return Ok(out);
        }
    }
}

/// Loads the whole routing configuration. The revision is read first, so a write racing the load leaves the
/// loaded revision behind the store's and the next check loads again.
pub async fn load(store: &dyn ConfigStore) -> Result<Loaded, StoreError> {
    let revision = store.config_revision().await?;
    let snapshot = RoutingSnapshot::build(
        documents::<CampaignSpec>(store, Collection::Campaigns).await?,
        documents::<StreamSpec>(store, Collection::Streams).await?,
        documents::<DestinationSpec>(store, Collection::Destinations).await?,
        documents::<TrafficSourceSpec>(store, Collection::TrafficSources).await?,
    );
    for w in snapshot.warnings() {
        tracing::warn!(warning = ?w, "configuration problem");
    }
    Ok(Loaded { revision, snapshot })
}

/// The snapshot in force, shared by every click.
pub struct LiveConfig {
    current: ArcSwap<Loaded>,
    store: Arc<dyn ConfigStore>,
    reload_lock: tokio::sync::Mutex<()>,
}

impl LiveConfig {
    /// Starts empty (every campaign unknown) until the first [`LiveConfig::refresh`] succeeds.
    pub fn new(store: Arc<dyn ConfigStore>) -> Self {
        Self { current: ArcSwap::from_pointee(Loaded::default()), store, reload_lock: tokio::sync::Mutex::new(()) }
    }

    /// The snapshot in force now.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// Whether a configuration has been loaded at least once.
    pub fn is_loaded(&self) -> bool {
        !self.current.load().revision.is_empty()
    }

    /// Reloads when the store's revision differs from the loaded one (or always, with `force`). Returns
    /// whether a new snapshot was swapped in.
    pub async fn refresh(&self, force: bool) -> Result<bool, StoreError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        if !force && self.store.config_revision().await? == self.current.load().revision {
            return Ok(false);
        }
        let loaded = load(self.store.as_ref()).await?;
        tracing::info!(revision = %loaded.revision, campaigns = loaded.snapshot.campaigns().len(), "configuration loaded");
        self.current.store(Arc::new(loaded));
        Ok(true)
    }

    /// Checks the revision every `interval` until `shutdown`; failures keep the last snapshot and are logged.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let live = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                if let Err(e) = live.refresh(false).await {
                    tracing::warn!(error = %e, "configuration check failed; the loaded snapshot keeps serving");
                }
            }
        })
    }
}
