//! The traffic service's configuration: a [`RoutingSnapshot`] loaded from the store, served and reloaded
//! through [`crate::live::Live`] (lock-free reads, atomic swaps, reload on a revision change).

use std::future::Future;

use serde::de::DeserializeOwned;
use traffoflex_core::store::{Collection, ConfigStore, Query, StoreError};
use traffoflex_crds::{CampaignSpec, DestinationSpec, StreamSpec, TrafficSourceSpec};

use crate::live::{Live, Snapshot};
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
///
/// The snapshot is built on a blocking thread: it is CPU work (tens of milliseconds per thousand campaigns)
/// that must not hold up the clicks a runtime worker serves meanwhile. It also keeps the snapshot's long-lived
/// memory apart from the documents' short-lived memory (the allocator keeps a heap per thread), so the
/// documents' memory goes back to the system whole once they are dropped.
pub async fn load(store: &dyn ConfigStore) -> Result<Loaded, StoreError> {
    let revision = store.config_revision().await?;
    let campaigns = documents::<CampaignSpec>(store, Collection::Campaigns).await?;
    let streams = documents::<StreamSpec>(store, Collection::Streams).await?;
    let destinations = documents::<DestinationSpec>(store, Collection::Destinations).await?;
    let sources = documents::<TrafficSourceSpec>(store, Collection::TrafficSources).await?;
    let snapshot =
        tokio::task::spawn_blocking(move || RoutingSnapshot::build(campaigns, streams, destinations, sources))
            .await
            .map_err(|e| StoreError::Backend(format!("building the routing snapshot failed: {e}")))?;
    for w in snapshot.warnings() {
        tracing::warn!(warning = ?w, "configuration problem");
    }
    Ok(Loaded { revision, snapshot })
}

impl Snapshot for Loaded {
    const WHAT: &'static str = "routing";

    fn revision(&self) -> &str {
        &self.revision
    }

    fn load(store: &dyn ConfigStore) -> impl Future<Output = Result<Self, StoreError>> + Send {
        load(store)
    }

    fn carry_over(&mut self, previous: &Self) {
        self.snapshot.carry_over(&previous.snapshot);
    }
}

/// The routing snapshot in force, shared by every click.
pub type LiveConfig = Live<Loaded>;
