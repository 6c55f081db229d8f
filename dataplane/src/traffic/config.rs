//! The traffic service's configuration: a [`RoutingSnapshot`] loaded from the store, served and reloaded
//! through [`crate::live::Live`] (lock-free reads, atomic swaps, reload on a revision change).

use std::future::Future;

use serde::de::DeserializeOwned;
use traffoflex_core::store::{Collection, ConfigStore, Query, StoreError};
use traffoflex_crds::{CampaignSpec, DestinationSpec, StreamSpec, TrafficSourceSpec};

use crate::live::{Live, Snapshot};
use crate::routing::{RoutingSnapshot, SnapshotBuilder};

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

/// A collection read page by page in ID order, each page as `(id, spec)`; a document that doesn't parse is
/// skipped and logged, so one bad object can't take the others down.
pub(crate) struct Pages<'s> {
    store: &'s dyn ConfigStore,
    coll: Collection,
    after: Option<String>,
    done: bool,
}

impl<'s> Pages<'s> {
    pub(crate) fn new(store: &'s dyn ConfigStore, coll: Collection) -> Self {
        Self { store, coll, after: None, done: false }
    }

    /// The next page; `None` after the last.
    pub(crate) async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<Vec<(String, T)>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let mut query = Query::new().limit(PAGE);
        if let Some(last) = self.after.take() {
            query = query.after(last);
        }
        let page = self.store.find(self.coll, &query).await?;
        self.done = (page.len() as u64) < PAGE;
        let mut out = Vec::with_capacity(page.len());
        for doc in page {
            let id = doc.get("id").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            self.after = Some(id.clone());
            match serde_json::from_value::<T>(doc) {
                Ok(spec) => out.push((id, spec)),
                Err(e) => {
                    tracing::warn!(collection = self.coll.name(), id, error = %e, "skipping a document that does not parse")
                }
            }
        }
        Ok(Some(out))
    }
}

/// Reads every document of a collection (see [`Pages`]).
pub(crate) async fn documents<T: DeserializeOwned>(
    store: &dyn ConfigStore,
    coll: Collection,
) -> Result<Vec<(String, T)>, StoreError> {
    let mut pages = Pages::new(store, coll);
    let mut out = Vec::new();
    while let Some(page) = pages.next().await? {
        out.extend(page);
    }
    Ok(out)
}

/// Loads the whole routing configuration. The revision is read first, so a write racing the load leaves the
/// loaded revision behind the store's and the next check loads again.
///
/// Streams, most of a large configuration, are compiled page by page as they are read: a load holds the
/// documents of one page of streams at a time, not all of them (with 10,000 campaigns of five streams, the
/// heap at the peak of a load went from 100 MiB to 35 MiB, for a snapshot of 20 MiB). The compiling runs on
/// blocking threads: it is CPU
/// work (tens of milliseconds per thousand campaigns) that must not hold up the clicks a runtime worker serves
/// meanwhile.
pub async fn load(store: &dyn ConfigStore) -> Result<Loaded, StoreError> {
    let revision = store.config_revision().await?;
    let campaigns = documents::<CampaignSpec>(store, Collection::Campaigns).await?;
    let destinations = documents::<DestinationSpec>(store, Collection::Destinations).await?;
    let sources = documents::<TrafficSourceSpec>(store, Collection::TrafficSources).await?;
    let mut builder = on_blocking(move || SnapshotBuilder::new(campaigns, destinations, sources)).await?;
    let mut streams = Pages::new(store, Collection::Streams);
    while let Some(page) = streams.next::<StreamSpec>().await? {
        builder = on_blocking(move || {
            for (id, spec) in &page {
                builder.add_stream(id, spec);
            }
            builder
        })
        .await?;
    }
    let snapshot = on_blocking(move || builder.finish()).await?;
    for w in snapshot.warnings() {
        tracing::warn!(warning = ?w, "configuration problem");
    }
    Ok(Loaded { revision, snapshot })
}

async fn on_blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Backend(format!("building the routing snapshot failed: {e}")))
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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use traffoflex_core::store::SqliteStore;

    use super::*;

    async fn id(store: &SqliteStore, coll: Collection, doc: serde_json::Value) -> String {
        store.insert(coll, doc).await.expect("insert")["id"].as_str().expect("an id").to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_read_over_several_pages_load_as_if_read_at_once() {
        let store = SqliteStore::open_in_memory().await.expect("store");
        let dest = json!({"name": "D", "url": "https://d.example/?c={clickId}", "enabled": true});
        let dest = id(&store, Collection::Destinations, dest).await;
        let mut campaigns = Vec::new();
        for c in 0..3 {
            let doc = json!({"key": format!("k{c}"), "name": "C", "status": "active"});
            campaigns.push(id(&store, Collection::Campaigns, doc).await);
        }
        // More than two pages of streams, spread over the campaigns, with repeated priorities and some disabled.
        let count = 2 * PAGE as usize + 201;
        for i in 0..count {
            let doc = json!({"campaignId": campaigns[i % 3], "name": format!("s{i}"), "priority": i % 7,
                "enabled": i % 10 != 0, "selection": "waterfall", "destinations": [{"destinationId": dest}]});
            id(&store, Collection::Streams, doc).await;
        }

        let loaded = load(&store).await.expect("load");
        let at_once = RoutingSnapshot::build(
            documents(&store, Collection::Campaigns).await.expect("campaigns"),
            documents(&store, Collection::Streams).await.expect("streams"),
            documents(&store, Collection::Destinations).await.expect("destinations"),
            Vec::new(),
        );
        for c in 0..3 {
            let ids = |s: &RoutingSnapshot| -> Vec<String> {
                let campaign = s.campaign(&format!("k{c}")).expect("the campaign");
                campaign.streams().iter().map(|s| s.id().to_owned()).collect()
            };
            let enabled = (0..count).filter(|i| i % 3 == c && i % 10 != 0).count();
            assert_eq!(ids(&loaded.snapshot).len(), enabled, "campaign {c} has every enabled stream");
            assert_eq!(ids(&loaded.snapshot), ids(&at_once), "campaign {c}: the same streams in the same order");
        }
    }
}
