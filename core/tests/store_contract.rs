//! The `ConfigStore` contract: one suite, written once against `Arc<dyn ConfigStore>`, run for SQLite (a temp
//! file) and for MongoDB (FerretDB in CI; a fresh database per test, dropped at the end).
//!
//! FerretDB 1.x is not atomic under concurrency (it reads a document, then writes it back without re-checking
//! the filter; see DESIGN.md), so the compare-and-swap race runs concurrently on SQLite only and sequentially
//! on MongoDB. Unique indexes do hold there, so the concurrent-duplicate test runs on both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use traffoflex_core::store::{
    Collection, ConfigStore, ConfigStoreExt, Filter, MongoStore, Query, SqliteStore, StoreError, Stored,
};
use traffoflex_core::testenv;

type Store = Arc<dyn ConfigStore>;

fn campaign(key: &str) -> Value {
    json!({"kind": "Campaign", "key": key, "name": format!("Campaign {key}"), "status": "active"})
}

fn ids(docs: &[Value]) -> Vec<&str> {
    docs.iter().map(|d| d["id"].as_str().unwrap_or("")).collect()
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|t| t.offset().local_minus_utc() == 0)
}

async fn insert_get_round_trip(store: Store) {
    let stored = store.insert(Collection::Campaigns, campaign("summer")).await.unwrap();
    let id = stored["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "a UUID: {id}");
    assert_eq!(stored["version"], json!(1));
    assert!(is_rfc3339(&stored["createdAt"]), "{stored}");
    assert_eq!(stored["createdAt"], stored["updatedAt"]);
    let got = store.get(Collection::Campaigns, &id).await.unwrap();
    assert_eq!(got.as_ref(), Some(&stored));
    assert!(!got.unwrap().as_object().unwrap().contains_key("_id"));
    assert_eq!(store.get(Collection::Campaigns, "nope").await.unwrap(), None);

    // A caller-given id is kept; nested values, numbers and bools come back as they went in.
    let doc = json!({"id": "dest-1", "name": "A", "enabled": true, "weight": 70, "ratio": 0.25,
                     "caps": {"dailyClicks": 1000}, "tags": ["a", "b"], "schedule": null});
    let stored = store.insert(Collection::Destinations, doc.clone()).await.unwrap();
    assert_eq!(stored["id"], json!("dest-1"));
    let got = store.get(Collection::Destinations, "dest-1").await.unwrap().unwrap();
    for (k, v) in doc.as_object().unwrap() {
        assert_eq!(&got[k], v, "{k}");
    }
    // The same id twice is a duplicate of `id`.
    let again = store.insert(Collection::Destinations, doc).await;
    assert!(matches!(&again, Err(StoreError::Duplicate { index, .. }) if index == "id"), "{again:?}");
    // Not an object, or a unique field missing: invalid, and nothing stored.
    let bad = store.insert(Collection::Streams, json!([1, 2])).await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
    let no_key = store.insert(Collection::Campaigns, json!({"name": "no key"})).await;
    assert!(matches!(no_key, Err(StoreError::Invalid(_))), "{no_key:?}");
    assert_eq!(store.count(Collection::Campaigns, &Filter::all()).await.unwrap(), 1);
}

async fn find_filters_sort_page_count(store: Store) {
    let c = Collection::Streams;
    for (i, (campaign, country, enabled)) in
        [("c1", "DE", true), ("c1", "AT", false), ("c2", "DE", true), ("c1", "FR", true), ("c2", "US", false)]
            .into_iter()
            .enumerate()
    {
        let doc = json!({"id": format!("s{i}"), "campaignId": campaign, "priority": 50 - i as i64 * 10,
                         "enabled": enabled, "target": {"country": country}, "note": null});
        store.insert(c, doc).await.unwrap();
    }
    let find = |q: Query| {
        let store = store.clone();
        async move { store.find(c, &q).await.unwrap() }
    };
    // Default order is by id; equality on strings, bools, numbers, dotted paths.
    assert_eq!(ids(&find(Query::new()).await), ["s0", "s1", "s2", "s3", "s4"]);
    assert_eq!(ids(&find(Query::new().eq("campaignId", "c1")).await), ["s0", "s1", "s3"]);
    assert_eq!(ids(&find(Query::new().eq("campaignId", "c1").eq("enabled", true)).await), ["s0", "s3"]);
    assert_eq!(ids(&find(Query::new().eq("target.country", "DE")).await), ["s0", "s2"]);
    assert_eq!(ids(&find(Query::new().eq("priority", 30)).await), ["s2"]);
    assert_eq!(ids(&find(Query::new().eq("priority", 30.0)).await), ["s2"]);
    assert_eq!(ids(&find(Query::new().eq("id", "s4")).await), ["s4"]);
    // Types are exact: a bool is not a number, a number is not a string.
    assert!(find(Query::new().eq("enabled", 1)).await.is_empty());
    assert!(find(Query::new().eq("priority", "30")).await.is_empty());
    // null matches null and missing.
    assert_eq!(find(Query::new().eq("note", Value::Null)).await.len(), 5);
    assert_eq!(find(Query::new().eq("missing", Value::Null)).await.len(), 5);
    assert!(find(Query::new().eq("missing", "x")).await.is_empty());
    // in.
    assert_eq!(ids(&find(Query::new().is_in("target.country", ["AT", "US", "XX"])).await), ["s1", "s4"]);
    assert!(find(Query::new().is_in("campaignId", Vec::<String>::new())).await.is_empty());
    // Sort, limit, skip.
    assert_eq!(ids(&find(Query::new().sort_asc("priority")).await), ["s4", "s3", "s2", "s1", "s0"]);
    assert_eq!(ids(&find(Query::new().sort_desc("priority").skip(1).limit(2)).await), ["s1", "s2"]);
    assert_eq!(ids(&find(Query::new().eq("campaignId", "c1").sort_asc("target.country")).await), ["s1", "s0", "s3"]);
    // Ties sort by id.
    assert_eq!(ids(&find(Query::new().sort_asc("campaignId")).await), ["s0", "s1", "s3", "s2", "s4"]);
    assert!(find(Query::new().limit(0)).await.is_empty());
    // Cursor paging by id, both directions.
    assert_eq!(ids(&find(Query::new().after("s1").limit(2)).await), ["s2", "s3"]);
    assert_eq!(ids(&find(Query::new().sort_desc("id").after("s2")).await), ["s1", "s0"]);
    // Count.
    assert_eq!(store.count(c, &Filter::all()).await.unwrap(), 5);
    assert_eq!(store.count(c, &Filter::all().eq("enabled", false)).await.unwrap(), 2);
    assert_eq!(store.count(c, &Filter::all().eq("campaignId", "nope")).await.unwrap(), 0);
    // find_one.
    let first = store.find_one(c, &Filter::all().eq("campaignId", "c2")).await.unwrap();
    assert_eq!(first.unwrap()["id"], json!("s2"));
    // Bad paths and values are Invalid.
    for q in [
        Query::new().eq("a b", 1),
        Query::new().eq("x", json!({"$gt": 1})),
        Query::new().sort_asc("$where"),
        Query::new().sort_asc("priority").after("s1"),
    ] {
        let r = store.find(c, &q).await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{q:?}: {r:?}");
    }
}

async fn unique_indexes_are_typed_duplicates(store: Store) {
    store.insert(Collection::Campaigns, campaign("a")).await.unwrap();
    let dup = store.insert(Collection::Campaigns, campaign("a")).await;
    assert_eq!(dup, Err(StoreError::Duplicate { collection: "campaigns".into(), index: "key".into() }));
    // Conversions: (networkId, transactionId) together.
    let conv = |net: &str, tx: &str| json!({"networkId": net, "transactionId": tx, "status": "approved"});
    let conv_coll = Collection::Conversions;
    store.insert(conv_coll, conv("n1", "t1")).await.unwrap();
    store.insert(conv_coll, conv("n2", "t1")).await.unwrap();
    store.insert(conv_coll, conv("n1", "t2")).await.unwrap();
    let dup = store.insert(conv_coll, conv("n1", "t1")).await;
    assert_eq!(
        dup,
        Err(StoreError::Duplicate { collection: "conversions".into(), index: "networkId, transactionId".into() })
    );
    assert_eq!(store.count(conv_coll, &Filter::all()).await.unwrap(), 3);
    // A replace that would collide is a duplicate too, and changes nothing.
    let b = store.insert(Collection::Campaigns, campaign("b")).await.unwrap();
    let b_id = b["id"].as_str().unwrap();
    let clash = store.replace(Collection::Campaigns, b_id, Some(1), campaign("a")).await;
    assert!(
        matches!(&clash, Err(StoreError::Duplicate { collection, index }) if collection == "campaigns" && index == "key"),
        "{clash:?}"
    );
    let b_now = store.get(Collection::Campaigns, b_id).await.unwrap().unwrap();
    assert_eq!(b_now, b);
    // Users by email, tokens by hash.
    store.insert(Collection::Users, json!({"email": "x@example.com"})).await.unwrap();
    let dup = store.insert(Collection::Users, json!({"email": "x@example.com"})).await;
    assert!(matches!(dup, Err(StoreError::Duplicate { .. })), "{dup:?}");
    store.insert(Collection::ApiTokens, json!({"tokenHash": "h1", "userId": "u"})).await.unwrap();
    let dup = store.insert(Collection::ApiTokens, json!({"tokenHash": "h1", "userId": "v"})).await;
    assert!(matches!(dup, Err(StoreError::Duplicate { .. })), "{dup:?}");
}

async fn replace_is_compare_and_swap(store: Store) {
    let c = Collection::Campaigns;
    let v1 = store.insert(c, campaign("cas")).await.unwrap();
    let id = v1["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut next = campaign("cas");
    next["name"] = json!("renamed");
    next["createdAt"] = json!("1999-01-01T00:00:00Z"); // the store owns this
    let v2 = store.replace(c, &id, Some(1), next).await.unwrap();
    assert_eq!(v2["version"], json!(2));
    assert_eq!(v2["name"], json!("renamed"));
    assert_eq!(v2["id"], json!(id));
    assert_eq!(v2["createdAt"], v1["createdAt"]);
    assert!(v2["updatedAt"].as_str() > v1["updatedAt"].as_str(), "{v2}");
    assert_eq!(store.get(c, &id).await.unwrap(), Some(v2.clone()));
    // Fields left out are gone (a replace, not a merge).
    assert!(v2.get("status").is_some());
    let v3 = store.replace(c, &id, Some(2), json!({"key": "cas"})).await.unwrap();
    assert_eq!(v3["version"], json!(3));
    assert_eq!(store.get(c, &id).await.unwrap().unwrap().get("status"), None);
    // Stale version: conflict, nothing changes.
    let stale = store.replace(c, &id, Some(2), campaign("cas")).await;
    assert_eq!(stale, Err(StoreError::VersionConflict { collection: "campaigns".into(), id: id.clone(), expected: 2 }));
    assert_eq!(store.get(c, &id).await.unwrap(), Some(v3));
    // No expected version: replaces whatever is there.
    let v4 = store.replace(c, &id, None, campaign("cas")).await.unwrap();
    assert_eq!(v4["version"], json!(4));
    // Missing: not found, with or without a version.
    for expected in [None, Some(1)] {
        let missing = store.replace(c, "missing", expected, campaign("zz")).await;
        assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
    }
    assert_eq!(store.count(c, &Filter::all()).await.unwrap(), 1);
    // An id in the body must be the same.
    let other = store.replace(c, &id, Some(4), json!({"id": "other", "key": "cas"})).await;
    assert!(matches!(other, Err(StoreError::Invalid(_))), "{other:?}");
}

async fn delete_with_and_without_version(store: Store) {
    let c = Collection::Destinations;
    let a = store.insert(c, json!({"name": "a"})).await.unwrap();
    let b = store.insert(c, json!({"name": "b"})).await.unwrap();
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let stale = store.delete(c, a_id, Some(7)).await;
    assert!(matches!(stale, Err(StoreError::VersionConflict { expected: 7, .. })), "{stale:?}");
    assert!(store.get(c, a_id).await.unwrap().is_some());
    store.delete(c, a_id, Some(1)).await.unwrap();
    assert_eq!(store.get(c, a_id).await.unwrap(), None);
    store.delete(c, b_id, None).await.unwrap();
    for expected in [None, Some(1)] {
        let gone = store.delete(c, a_id, expected).await;
        assert!(matches!(gone, Err(StoreError::NotFound { .. })), "{gone:?}");
    }
    assert_eq!(store.count(c, &Filter::all()).await.unwrap(), 0);
}

async fn config_revision_bumps(store: Store) {
    let r0 = store.config_revision().await.unwrap();
    assert!(!r0.is_empty());
    assert_eq!(store.config_revision().await.unwrap(), r0, "stable until bumped");
    let r1 = store.bump_config_revision().await.unwrap();
    assert_ne!(r1, r0);
    assert_eq!(store.config_revision().await.unwrap(), r1);
    let r2 = store.bump_config_revision().await.unwrap();
    assert!(r2 > r1, "time-ordered: {r1} then {r2}");
    assert_eq!(store.config_revision().await.unwrap(), r2);
    // Concurrent bumps: last writer wins, the value is one of them.
    let bumps: Vec<_> = (0..10)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.bump_config_revision().await })
        })
        .collect();
    let mut values = Vec::new();
    for b in bumps {
        values.push(b.await.unwrap().unwrap());
    }
    let now = store.config_revision().await.unwrap();
    assert!(values.contains(&now), "{now} not among {values:?}");
}

async fn concurrent_duplicate_inserts_have_one_winner(store: Store) {
    store.ensure_indexes().await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                let doc = json!({"networkId": "n", "transactionId": "tx-race", "attempt": i});
                s.insert(Collection::Conversions, doc).await
            })
        })
        .collect();
    let (mut ok, mut dup) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Duplicate { collection, .. }) => {
                assert_eq!(collection, "conversions");
                dup += 1;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((ok, dup), (1, 49));
    let filter = Filter::all().eq("transactionId", "tx-race");
    assert_eq!(store.count(Collection::Conversions, &filter).await.unwrap(), 1);
}

/// Concurrent compare-and-swap: every writer read version 1, exactly one may win.
async fn concurrent_cas_has_one_winner(store: Store) {
    let c = Collection::Destinations;
    let id = store.insert(c, json!({"name": "race"})).await.unwrap()["id"].as_str().unwrap().to_owned();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (s, id) = (store.clone(), id.clone());
            tokio::spawn(async move { s.replace(c, &id, Some(1), json!({"name": format!("w{i}")})).await })
        })
        .collect();
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::VersionConflict { .. }) => conflicts += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 49));
    assert_eq!(store.get(c, &id).await.unwrap().unwrap()["version"], json!(2));
}

/// The same race, one writer after another (FerretDB 1.x is not atomic under concurrency).
async fn sequential_cas_has_one_winner(store: Store) {
    let c = Collection::Destinations;
    let id = store.insert(c, json!({"name": "race"})).await.unwrap()["id"].as_str().unwrap().to_owned();
    let mut ok = 0;
    for i in 0..10 {
        match store.replace(c, &id, Some(1), json!({"name": format!("w{i}")})).await {
            Ok(_) => ok += 1,
            Err(StoreError::VersionConflict { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(store.get(c, &id).await.unwrap().unwrap()["version"], json!(2));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrafficSource {
    key: String,
    name: String,
    outbound_postback_url: Option<String>,
}

async fn typed_helpers(store: Store) {
    let c = Collection::TrafficSources;
    let src = TrafficSource { key: "src1".into(), name: "Source 1".into(), outbound_postback_url: None };
    let stored: Stored<TrafficSource> = store.insert_as(c, &src).await.unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(stored.doc, src);
    let got: Option<Stored<TrafficSource>> = store.get_as(c, &stored.id).await.unwrap();
    assert_eq!(got.as_ref(), Some(&stored));
    let renamed = TrafficSource { name: "Renamed".into(), ..src };
    let v2: Stored<TrafficSource> = store.replace_as(c, &stored.id, Some(1), &renamed).await.unwrap();
    assert_eq!((v2.version, v2.doc.name.as_str()), (2, "Renamed"));
    let all: Vec<TrafficSource> = store.find_as(c, &Query::new()).await.unwrap();
    assert_eq!(all, [renamed]);
    assert!(store.ping().await.is_ok());
}

// ------------------------------------------------------------------------------------------------ harness

async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("config.sqlite")).await.unwrap();
    (Arc::new(store), dir)
}

/// A MongoDB store on a fresh database, or `None` (skip) when no test server is configured.
async fn mongo_store() -> Option<MongoStore> {
    let uri = testenv::mongo_uri()?;
    let name = testenv::unique_name("tf_store");
    let store = MongoStore::connect(&uri, Some(&name)).await.unwrap();
    store.ensure_indexes().await.unwrap();
    Some(store)
}

/// Runs one case on its own database and drops the database afterwards, also when the case fails.
async fn on_mongo<F: Future<Output = ()>>(store: MongoStore, case: impl FnOnce(Store) -> F) {
    use futures::FutureExt;
    let outcome = std::panic::AssertUnwindSafe(case(Arc::new(store.clone()))).catch_unwind().await;
    let dropped = store.drop_database().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    dropped.unwrap();
}

macro_rules! contract {
    (both: [$($both:ident),* $(,)?], sqlite_only: [$($sqlite:ident),* $(,)?], mongo_only: [$($mongo:ident),* $(,)?] $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $both() {
                    let (store, _dir) = super::sqlite_store().await;
                    super::$both(store).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $sqlite() {
                    let (store, _dir) = super::sqlite_store().await;
                    super::$sqlite(store).await;
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $both() {
                    let Some(store) = super::mongo_store().await else { return };
                    super::on_mongo(store, super::$both).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $mongo() {
                    let Some(store) = super::mongo_store().await else { return };
                    super::on_mongo(store, super::$mongo).await;
                }
            )*
        }
    };
}

contract! {
    both: [
        insert_get_round_trip,
        find_filters_sort_page_count,
        unique_indexes_are_typed_duplicates,
        replace_is_compare_and_swap,
        delete_with_and_without_version,
        config_revision_bumps,
        concurrent_duplicate_inserts_have_one_winner,
        sequential_cas_has_one_winner,
        typed_helpers,
    ],
    sqlite_only: [concurrent_cas_has_one_winner],
    mongo_only: [],
}

#[tokio::test]
async fn sqlite_in_memory_and_reopen() {
    let mem = SqliteStore::open_in_memory().await.unwrap();
    mem.insert(Collection::Teams, json!({"name": "t"})).await.unwrap();
    assert_eq!(mem.count(Collection::Teams, &Filter::all()).await.unwrap(), 1);

    // Data survives reopening the file; the revision too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/config.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    store.insert(Collection::Teams, json!({"id": "t1"})).await.unwrap();
    let rev = store.bump_config_revision().await.unwrap();
    drop(store);
    let again = SqliteStore::open(&path).await.unwrap();
    assert!(again.get(Collection::Teams, "t1").await.unwrap().is_some());
    assert_eq!(again.config_revision().await.unwrap(), rev);
}

#[tokio::test]
async fn open_chooses_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let settings =
        traffoflex_core::settings::BackendSettings { data_dir: dir.path().join("data"), ..Default::default() };
    let store = traffoflex_core::store::open(&settings).await.unwrap();
    assert_eq!(store.backend_name(), "sqlite");
    assert!(dir.path().join("data/config.sqlite").exists());
    let settings =
        traffoflex_core::settings::BackendSettings { mongo_uri: Some("mongodb://127.0.0.1:1/x".into()), ..settings };
    let store = traffoflex_core::store::open(&settings).await.unwrap();
    assert_eq!(store.backend_name(), "mongodb");
}

#[tokio::test]
async fn mongo_outage_is_unavailable_quickly() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = MongoStore::connect(&format!("mongodb://127.0.0.1:{port}/x"), None).await.unwrap();
    let started = Instant::now();
    let got = store.get(Collection::Campaigns, "a").await;
    assert!(matches!(got, Err(StoreError::Unavailable(_))), "{got:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "get took {:?}", started.elapsed());
    let started = Instant::now();
    let ins = store.insert(Collection::Streams, json!({})).await;
    assert!(matches!(ins, Err(StoreError::Unavailable(_))), "{ins:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "insert took {:?}", started.elapsed());
    let started = Instant::now();
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_secs(6), "ping took {:?}", started.elapsed());
}
