//! The MongoDB configuration store (official `mongodb` driver). Runs unchanged on MongoDB 6+/7 and on
//! FerretDB 1.24 (PostgreSQL backend), so it uses only what both have: CRUD, `$in`/`$gt`/`$ne`/`$and`,
//! sort/skip/limit, `count_documents`, unique and compound unique indexes, `$set`/`$setOnInsert`/`$inc`
//! upserts. No transactions, change streams, TTL or partial indexes, `$expr`, pipeline updates.
//!
//! A document is stored with `_id` = its `id` (the `id` field itself is not stored) and converted
//! JSON <-> BSON field by field (integers become Int64; nothing becomes extended JSON).
//!
//! Compare-and-swap is `replace_one({_id, version})` / `delete_one({_id, version})`; when nothing matched, a
//! read tells `NotFound` from `VersionConflict`. Atomic on MongoDB; FerretDB 1.x re-reads and writes without
//! re-checking the filter, so there CAS holds only without concurrent writers to the same document.

mod errors;

use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Database, IndexModel};
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use super::doc::{self as docs, REVISION_ID};
use super::query::{Condition, Direction};
use super::{Collection, ConfigStore, Filter, INDEXES, Query, Result, StoreError};
use errors::{Classified, classify, index_in_message};

/// Server selection and connect timeouts unless the URI sets its own: an outage becomes `Unavailable` quickly.
const SELECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound of one store call, whatever the driver does.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Database used when neither the caller nor the URI names one.
const DEFAULT_DATABASE: &str = "traffoflex";
/// Attempts of an unconditional replace racing other writers.
const REPLACE_ATTEMPTS: usize = 10;

/// The MongoDB implementation of [`ConfigStore`].
#[derive(Clone)]
pub struct MongoStore {
    client: Client,
    db: Database,
    indexes_ready: std::sync::Arc<OnceCell<()>>,
}

impl MongoStore {
    /// A store on `uri`, in `database` (else the URI's path, else `traffoflex`). Does not wait for the server.
    pub async fn connect(uri: &str, database: Option<&str>) -> Result<Self> {
        let mut options = ClientOptions::parse(uri).await.map_err(|e| match classify(&e) {
            Classified::Other(StoreError::Unavailable(m)) => StoreError::Unavailable(m),
            _ => StoreError::Invalid(format!("MongoDB URI: {e}")),
        })?;
        options.server_selection_timeout.get_or_insert(SELECT_TIMEOUT);
        options.connect_timeout.get_or_insert(SELECT_TIMEOUT);
        options.app_name.get_or_insert_with(|| "traffoflex".into());
        let name = database
            .map(str::to_owned)
            .or_else(|| options.default_database.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE.into());
        let client = Client::with_options(options).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let db = client.database(&name);
        Ok(Self { client, db, indexes_ready: Default::default() })
    }

    /// The database this store uses.
    pub fn database_name(&self) -> &str {
        self.db.name()
    }

    /// Drops the whole database (tests).
    pub async fn drop_database(&self) -> Result<()> {
        timed(async { self.db.drop().await.map_err(|e| simple(&e)) }).await
    }

    /// Closes the connections.
    pub async fn shutdown(self) {
        self.client.shutdown().await;
    }

    fn coll(&self, coll: Collection) -> mongodb::Collection<Document> {
        self.db.collection(coll.name())
    }

    /// One `createIndexes` per index: FerretDB 1.24 panics (and drops the connection) when one call names
    /// several indexes of which some already exist.
    async fn create_indexes(&self) -> Result<()> {
        for spec in INDEXES {
            let mut keys = Document::new();
            for f in spec.fields {
                keys.insert(*f, 1);
            }
            let options = IndexOptions::builder().name(spec.name.to_owned()).unique(spec.unique).build();
            let model = IndexModel::builder().keys(keys).options(options).build();
            self.coll(spec.collection).create_index(model).await.map_err(|e| simple(&e))?;
        }
        Ok(())
    }

    /// Makes sure the indexes exist before this process writes anything.
    async fn ready(&self) -> Result<()> {
        self.indexes_ready.get_or_try_init(|| self.create_indexes()).await.map(|_| ())
    }

    async fn read(&self, coll: Collection, id: &str) -> Result<Option<Map<String, Value>>> {
        let found = self.coll(coll).find_one(doc! {"_id": id}).await.map_err(|e| simple(&e))?;
        Ok(found.map(from_bson))
    }

    /// The error for a refused write of `map`: `Duplicate` naming the index (from the message, else by
    /// looking for the document that holds the same values), or what `e` is otherwise.
    async fn write_error(&self, coll: Collection, map: &Map<String, Value>, e: &mongodb::error::Error) -> StoreError {
        let message = match classify(e) {
            Classified::Duplicate(message) => message,
            Classified::Other(other) => return other,
        };
        let index = match index_in_message(&message) {
            Some(index) => index,
            None => self.find_clash(coll, map).await.unwrap_or_else(|| "unknown".into()),
        };
        StoreError::Duplicate { collection: coll.to_string(), index }
    }

    async fn find_clash(&self, coll: Collection, map: &Map<String, Value>) -> Option<String> {
        let id = map.get("id").and_then(Value::as_str)?;
        for spec in coll.unique_indexes() {
            let mut filter = doc! {"_id": {"$ne": id}};
            for f in spec.fields {
                filter.insert(*f, bson::to_bson(docs::lookup(map, f)?).ok()?);
            }
            if let Ok(Some(_)) = self.coll(coll).find_one(filter).await {
                return Some(spec.describe());
            }
        }
        match self.read(coll, id).await {
            Ok(Some(_)) => Some("id".into()),
            _ => None,
        }
    }

    async fn conflict_or_missing(&self, coll: Collection, id: &str, expected: Option<u64>) -> StoreError {
        match self.read(coll, id).await {
            Ok(Some(_)) => match expected {
                Some(expected) => conflict(coll, id, expected),
                None => not_found(coll, id), // deleted and re-created meanwhile
            },
            Ok(None) => not_found(coll, id),
            Err(e) => e,
        }
    }

    async fn replace_inner(&self, coll: Collection, id: &str, expected: Option<u64>, doc: Value) -> Result<Value> {
        docs::precheck_replace(coll, id, &doc)?;
        self.ready().await?;
        for _ in 0..REPLACE_ATTEMPTS {
            let Some(current) = self.read(coll, id).await? else {
                return Err(not_found(coll, id));
            };
            let version = docs::version_of(coll, &current)?;
            if let Some(expected) = expected.filter(|e| *e != version) {
                return Err(conflict(coll, id, expected));
            }
            let created_at = current.get("createdAt").cloned().unwrap_or(Value::Null);
            let map = docs::for_replace(coll, id, doc.clone(), version, created_at)?;
            let result =
                self.coll(coll).replace_one(doc! {"_id": id, "version": to_i64(version)?}, to_bson(&map)?).await;
            match result {
                Ok(r) if r.matched_count > 0 => return Ok(Value::Object(map)),
                Ok(_) if expected.is_some() => {
                    return Err(self.conflict_or_missing(coll, id, expected).await);
                }
                Ok(_) => continue, // someone else replaced it meanwhile: replace the newer one
                Err(e) => return Err(self.write_error(coll, &map, &e).await),
            }
        }
        Err(StoreError::Unavailable(format!(
            "{coll}/{id} kept changing during {REPLACE_ATTEMPTS} attempts to replace it"
        )))
    }

    async fn revision_inner(&self) -> Result<String> {
        if let Some(map) = self.read(Collection::Meta, REVISION_ID).await? {
            return docs::revision_value(&map);
        }
        // A fresh store: make one, unless another process just did.
        let map = docs::revision_doc(&docs::new_id(), 1, &docs::now());
        let inserted = self.coll(Collection::Meta).insert_one(to_bson(&map)?).await;
        if let Err(e) = inserted
            && !matches!(classify(&e), Classified::Duplicate(_))
        {
            return Err(simple(&e));
        }
        match self.read(Collection::Meta, REVISION_ID).await? {
            Some(map) => docs::revision_value(&map),
            None => Err(StoreError::Backend("the configRevision document vanished".into())),
        }
    }

    async fn bump_inner(&self) -> Result<String> {
        let value = docs::new_id();
        let now = docs::now();
        let update = doc! {
            "$set": {"value": &value, "updatedAt": &now},
            "$setOnInsert": {"createdAt": &now},
            "$inc": {"version": 1_i64},
        };
        let meta = self.coll(Collection::Meta);
        let mut result = meta.update_one(doc! {"_id": REVISION_ID}, update.clone()).upsert(true).await;
        if let Err(e) = &result {
            // Two first-ever upserts raced on `_id`; the document exists now, so update it.
            if matches!(classify(e), Classified::Duplicate(_)) {
                result = meta.update_one(doc! {"_id": REVISION_ID}, update).upsert(true).await;
            }
        }
        result.map_err(|e| simple(&e))?;
        Ok(value)
    }
}

fn conflict(coll: Collection, id: &str, expected: u64) -> StoreError {
    StoreError::VersionConflict { collection: coll.to_string(), id: id.to_owned(), expected }
}

fn not_found(coll: Collection, id: &str) -> StoreError {
    StoreError::NotFound { collection: coll.to_string(), id: id.to_owned() }
}

/// A driver error where no duplicate is expected.
fn simple(e: &mongodb::error::Error) -> StoreError {
    match classify(e) {
        Classified::Duplicate(message) => StoreError::Duplicate {
            collection: "unknown".into(),
            index: index_in_message(&message).unwrap_or_else(|| "unknown".into()),
        },
        Classified::Other(other) => other,
    }
}

/// Bounds a call: a server that accepts connections but never answers is an outage too.
async fn timed<T>(call: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!("MongoDB did not answer within {}s", CALL_TIMEOUT.as_secs())))
    })
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::Invalid(format!("{n} is out of range")))
}

/// A JSON value as BSON (integers as Int64).
fn value_to_bson(value: &Value) -> Result<Bson> {
    bson::to_bson(value).map_err(|e| StoreError::Invalid(format!("cannot store as BSON: {e}")))
}

/// A document as BSON, `id` becoming `_id` (first).
fn to_bson(map: &Map<String, Value>) -> Result<Document> {
    let mut out = Document::new();
    if let Some(id) = map.get("id") {
        out.insert("_id", value_to_bson(id)?);
    }
    for (k, v) in map {
        if k != "id" {
            out.insert(k.clone(), value_to_bson(v)?);
        }
    }
    Ok(out)
}

/// A stored document as JSON, `_id` becoming `id`.
fn from_bson(doc: Document) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in doc {
        if k == "_id" {
            let id = match v {
                Bson::String(s) => s,
                Bson::ObjectId(oid) => oid.to_hex(),
                other => other.to_string(),
            };
            out.insert("id".into(), Value::String(id));
        } else {
            out.insert(k, v.into_relaxed_extjson());
        }
    }
    out
}

/// The MongoDB field name of a path.
fn field(path: &str) -> &str {
    if path == "id" { "_id" } else { path }
}

/// A validated filter as a MongoDB query document (`$and` when a field repeats).
fn filter_doc(filter: &Filter) -> Result<Document> {
    let mut parts = Vec::new();
    for cond in &filter.conditions {
        parts.push(match cond {
            Condition::Eq(path, value) => (field(path), value_to_bson(value)?),
            Condition::In(path, values) => {
                let list = values.iter().map(value_to_bson).collect::<Result<Vec<_>>>()?;
                (field(path), Bson::Document(doc! {"$in": list}))
            }
        });
    }
    let mut seen = std::collections::HashSet::new();
    if parts.iter().all(|(k, _)| seen.insert(*k)) {
        return Ok(parts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
    }
    let all: Vec<Bson> = parts.into_iter().map(|(k, v)| Bson::Document(doc! {k: v})).collect();
    Ok(doc! {"$and": all})
}

#[async_trait]
impl ConfigStore for MongoStore {
    fn backend_name(&self) -> &'static str {
        "mongodb"
    }

    async fn ping(&self) -> Result<()> {
        timed(async {
            self.db.run_command(doc! {"ping": 1}).await.map_err(|e| simple(&e))?;
            Ok(())
        })
        .await
    }

    async fn ensure_indexes(&self) -> Result<()> {
        timed(async {
            self.create_indexes().await?;
            let _ = self.indexes_ready.set(());
            Ok(())
        })
        .await
    }

    async fn insert(&self, coll: Collection, doc: Value) -> Result<Value> {
        let map = docs::for_insert(coll, doc)?;
        let bson_doc = to_bson(&map)?;
        timed(async {
            self.ready().await?;
            match self.coll(coll).insert_one(bson_doc).await {
                Ok(_) => Ok(Value::Object(map)),
                Err(e) => Err(self.write_error(coll, &map, &e).await),
            }
        })
        .await
    }

    async fn get(&self, coll: Collection, id: &str) -> Result<Option<Value>> {
        timed(async { Ok(self.read(coll, id).await?.map(Value::Object)) }).await
    }

    async fn find(&self, coll: Collection, query: &Query) -> Result<Vec<Value>> {
        query.validate()?;
        if query.limit == Some(0) {
            return Ok(Vec::new()); // MongoDB reads limit 0 as "no limit"
        }
        let mut filter = filter_doc(&query.filter)?;
        let (sort_field, direction) = query.order();
        let dir = if direction == Direction::Asc { 1 } else { -1 };
        if let Some(after) = &query.after_id {
            let op = if direction == Direction::Asc { "$gt" } else { "$lt" };
            filter = doc! {"$and": [filter, {"_id": {op: after}}]};
        }
        let mut sort = doc! {field(sort_field): dir};
        sort.insert("_id", dir);
        let collection = self.coll(coll);
        let mut find = collection.find(filter).sort(sort);
        if query.skip > 0 {
            find = find.skip(query.skip);
        }
        if let Some(limit) = query.limit {
            find = find.limit(to_i64(limit)?);
        }
        timed(async {
            let cursor = find.await.map_err(|e| simple(&e))?;
            let docs: Vec<Document> = cursor.try_collect().await.map_err(|e| simple(&e))?;
            Ok(docs.into_iter().map(|d| Value::Object(from_bson(d))).collect())
        })
        .await
    }

    async fn count(&self, coll: Collection, filter: &Filter) -> Result<u64> {
        filter.validate()?;
        let filter = filter_doc(filter)?;
        timed(async { self.coll(coll).count_documents(filter).await.map_err(|e| simple(&e)) }).await
    }

    async fn replace(&self, coll: Collection, id: &str, expected_version: Option<u64>, doc: Value) -> Result<Value> {
        timed(self.replace_inner(coll, id, expected_version, doc)).await
    }

    async fn delete(&self, coll: Collection, id: &str, expected_version: Option<u64>) -> Result<()> {
        let mut filter = doc! {"_id": id};
        if let Some(v) = expected_version {
            filter.insert("version", to_i64(v)?);
        }
        timed(async {
            let result = self.coll(coll).delete_one(filter).await.map_err(|e| simple(&e))?;
            if result.deleted_count == 0 {
                return Err(self.conflict_or_missing(coll, id, expected_version).await);
            }
            Ok(())
        })
        .await
    }

    async fn config_revision(&self) -> Result<String> {
        timed(self.revision_inner()).await
    }

    async fn bump_config_revision(&self) -> Result<String> {
        timed(self.bump_inner()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_bson_round_trip() {
        let v = json!({"id": "a", "n": 1, "f": 1.5, "neg": -3, "b": true, "z": null,
                       "o": {"list": [1, "x", {"y": false}]}, "s": "$notAnOperator"});
        let map = v.as_object().unwrap().clone();
        let bson_doc = to_bson(&map).unwrap();
        assert_eq!(bson_doc.keys().next().map(String::as_str), Some("_id"));
        assert!(!bson_doc.contains_key("id"));
        assert_eq!(Value::Object(from_bson(bson_doc)), v);
    }

    #[test]
    fn filters() {
        let f = Filter::all().eq("id", "x").eq("a.b", 1).is_in("s", ["p", "q"]);
        assert_eq!(filter_doc(&f).unwrap(), doc! {"_id": "x", "a.b": 1_i64, "s": {"$in": ["p", "q"]}});
        let repeated = Filter::all().eq("a", 1).eq("a", 2);
        assert_eq!(filter_doc(&repeated).unwrap(), doc! {"$and": [{"a": 1_i64}, {"a": 2_i64}]});
        assert_eq!(filter_doc(&Filter::all()).unwrap(), doc! {});
    }
}
