//! The configuration store: one trait, [`ConfigStore`], over named collections of JSON documents, with a
//! MongoDB implementation ([`MongoStore`], production) and an embedded SQLite one ([`SqliteStore`], first runs,
//! demos, single-node installs, fast tests). One contract suite (`core/tests/store_contract.rs`) runs
//! against both.
//!
//! Every stored document is a JSON object with a string `id` (a UUID v7 unless the caller gives one), a
//! `version` (1 on insert, +1 on every replace) and `createdAt`/`updatedAt` (RFC 3339, UTC, milliseconds). The
//! store owns those four fields: whatever a caller puts there is overwritten.
//!
//! Correctness never rests on a read-modify-write inside the store, because FerretDB 1.x (our MongoDB-wire
//! test server) is not atomic under concurrency: dedupe and uniqueness are unique-index inserts (they hold
//! everywhere); `replace`/`delete` with an expected version are compare-and-swap, atomic on SQLite and MongoDB;
//! the configuration revision is a last-writer-wins upsert of a fresh UUID v7.

mod doc;
mod indexes;
mod mongo;
mod query;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::settings::BackendSettings;

pub use indexes::{Collection, INDEXES, IndexSpec};
pub use mongo::MongoStore;
pub use query::{Condition, Direction, Filter, Query, Sort};
pub use sqlite::SqliteStore;

/// What went wrong, in terms a caller can act on (the API maps these to 409, 404, 422 and 503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the write: `index` names its fields (`key`, `networkId, transactionId`, `id`),
    /// or is `unknown` when the backend did not say.
    #[error("a {collection} document with the same {index} already exists")]
    Duplicate { collection: String, index: String },
    /// The document's version is no longer the expected one: someone else changed it first.
    #[error("{collection}/{id} was changed meanwhile: version {expected} is stale")]
    VersionConflict { collection: String, id: String, expected: u64 },
    #[error("{collection}/{id} does not exist")]
    NotFound { collection: String, id: String },
    /// The request itself is wrong (not an object, a bad field path, a missing unique field...).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The backend cannot be reached or did not answer in time; callers answer 503 and retry later.
    #[error("config store unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reported.
    #[error("config store error: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A document store over the [`Collection`]s. Implementations: [`SqliteStore`], [`MongoStore`].
#[async_trait]
pub trait ConfigStore: Send + Sync {
    /// `"sqlite"` or `"mongodb"`, for logs and diagnostics.
    fn backend_name(&self) -> &'static str;

    /// Answers when the backend does (readiness).
    async fn ping(&self) -> Result<()>;

    /// Creates the declared [`INDEXES`]; idempotent. (The stores also do it by themselves — SQLite when
    /// opened, MongoDB before this process's first write — so a forgotten `migrate` cannot let duplicates in.)
    async fn ensure_indexes(&self) -> Result<()>;

    /// Stores a new document and returns it as stored (with `id`, `version` 1, `createdAt`, `updatedAt`).
    /// An `id` the caller gives must be a non-empty string. `Duplicate` when a unique index refuses it.
    async fn insert(&self, coll: Collection, doc: Value) -> Result<Value>;

    /// The document with this ID, if any.
    async fn get(&self, coll: Collection, id: &str) -> Result<Option<Value>>;

    /// The documents matching the query, in its order (see [`query`](Query) for the semantics).
    async fn find(&self, coll: Collection, query: &Query) -> Result<Vec<Value>>;

    /// How many documents match.
    async fn count(&self, coll: Collection, filter: &Filter) -> Result<u64>;

    /// Replaces the whole document (keeping `id` and `createdAt`, bumping `version`) and returns it as stored.
    /// With `expected_version`, only if the stored version is that one (`VersionConflict` otherwise, and
    /// nothing changes). `NotFound` when there is no such document. An `id` in `doc` must equal `id`.
    async fn replace(&self, coll: Collection, id: &str, expected_version: Option<u64>, doc: Value) -> Result<Value>;

    /// Deletes the document; with `expected_version`, only if it still has that version.
    async fn delete(&self, coll: Collection, id: &str, expected_version: Option<u64>) -> Result<()>;

    /// The current configuration revision: an opaque string that changes whenever configuration does. The
    /// data plane reloads its snapshot when it differs from the one it loaded. A fresh store gets one on first
    /// read.
    async fn config_revision(&self) -> Result<String>;

    /// Sets a new revision (a UUID v7, so revisions are time-ordered) and returns it. Last writer wins.
    async fn bump_config_revision(&self) -> Result<String>;

    /// The first document matching `filter`, in `id` order.
    async fn find_one(&self, coll: Collection, filter: &Filter) -> Result<Option<Value>> {
        let query = Query::filtered(filter.clone()).limit(1);
        Ok(self.find(coll, &query).await?.into_iter().next())
    }
}

/// A typed document as stored: the store's own fields plus the caller's type, flattened (camelCase JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored<T> {
    pub id: String,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    #[serde(flatten)]
    pub doc: T,
}

/// Typed access over serde: `store.get_as::<Stored<Campaign>>(Collection::Campaigns, id)`.
#[async_trait]
pub trait ConfigStoreExt: ConfigStore {
    async fn get_as<T: DeserializeOwned>(&self, coll: Collection, id: &str) -> Result<Option<T>> {
        self.get(coll, id).await?.map(from_value).transpose()
    }

    async fn find_as<T: DeserializeOwned>(&self, coll: Collection, query: &Query) -> Result<Vec<T>> {
        self.find(coll, query).await?.into_iter().map(from_value).collect()
    }

    /// Inserts `doc` and returns the stored document as `R` (often `Stored<T>`).
    async fn insert_as<T: Serialize + Sync, R: DeserializeOwned>(&self, coll: Collection, doc: &T) -> Result<R> {
        let stored = self.insert(coll, to_value(doc)?).await?;
        from_value(stored)
    }

    /// Replaces the document with `doc` and returns the stored document as `R`.
    async fn replace_as<T: Serialize + Sync, R: DeserializeOwned>(
        &self,
        coll: Collection,
        id: &str,
        expected_version: Option<u64>,
        doc: &T,
    ) -> Result<R> {
        let stored = self.replace(coll, id, expected_version, to_value(doc)?).await?;
        from_value(stored)
    }
}

impl<S: ConfigStore + ?Sized> ConfigStoreExt for S {}

fn to_value<T: Serialize>(doc: &T) -> Result<Value> {
    serde_json::to_value(doc).map_err(|e| StoreError::Invalid(format!("cannot serialise: {e}")))
}

fn from_value<T: DeserializeOwned>(doc: Value) -> Result<T> {
    serde_json::from_value(doc).map_err(|e| StoreError::Invalid(format!("stored document does not fit the type: {e}")))
}

/// Opens the store the settings name: MongoDB when `mongo_uri` is set, else SQLite at
/// `<data_dir>/config.sqlite` (directory created if missing).
///
/// Opening MongoDB does not wait for the server: an outage shows up as `Unavailable` from the calls (and
/// from `ping`, for readiness) instead of keeping a role from starting.
pub async fn open(settings: &BackendSettings) -> Result<Arc<dyn ConfigStore>> {
    match settings.mongo_uri.as_deref().map(str::trim) {
        Some(uri) if !uri.is_empty() => Ok(Arc::new(MongoStore::connect(uri, None).await?)),
        _ => {
            let path = settings.data_dir.join("config.sqlite");
            Ok(Arc::new(SqliteStore::open(&path).await?))
        }
    }
}
