//! Exactly once under concurrency: 1,000 concurrent copies of one postback are one conversion, on SQLite and
//! on the MongoDB-wire test server (FerretDB: unique-index inserts hold there), and a concurrent status change
//! is one update.

mod postback_support;

use std::sync::Arc;

use serde_json::Value;
use traffoflex_core::store::{ConfigStore, MongoStore};
use traffoflex_core::testenv;

use postback_support::{Fixture, fixture, start};

/// 1,000 concurrent copies of one postback: exactly one is accepted, the rest are duplicates of it.
async fn thousand_copies(f: &Fixture) {
    let cid = f.click_id();
    let client = reqwest::Client::new();
    let url = format!("{}/postback/neta?clickid={cid}&txid=same&payout=9.99&token=s3cr3t", f.base);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let r = client.get(url).send().await.expect("request");
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.expect("JSON")
            })
        })
        .collect();
    let mut accepted = 0;
    let mut duplicate = 0;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let b = t.await.expect("task");
        match b["status"].as_str() {
            Some("accepted") => accepted += 1,
            Some("duplicate") => duplicate += 1,
            other => panic!("unexpected {other:?}: {b}"),
        }
        ids.insert(b["conversionId"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!((accepted, duplicate), (1, 999));
    assert_eq!(ids.len(), 1, "every answer names the same conversion");
    assert_eq!(f.conversion_docs().await, 1);
    f.shipped(1000).await;
    assert_eq!(f.events.conversions().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_copies_are_one_conversion_on_sqlite() {
    let f = fixture().await;
    thousand_copies(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_copies_are_one_conversion_on_ferretdb() {
    let Some(uri) = testenv::mongo_uri() else { return };
    let name = testenv::unique_name("tf_postback");
    let mongo = MongoStore::connect(&uri, Some(&name)).await.expect("connect");
    mongo.ensure_indexes().await.expect("indexes");
    let dir = tempfile::tempdir().expect("temp dir");
    let f = start(Arc::new(mongo.clone()), dir).await;
    use futures::FutureExt;
    let outcome = std::panic::AssertUnwindSafe(thousand_copies(&f)).catch_unwind().await;
    let dropped = mongo.drop_database().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    dropped.expect("drop database");
}

/// A status change arriving 200 times at once is one update (compare-and-swap on the embedded store; on
/// FerretDB CAS is only tested sequentially, as it is not atomic under concurrency there).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_status_change_is_one_update() {
    let f = fixture().await;
    let cid = f.click_id();
    let (_, b) = f.get(&format!("/postback/open?clickid={cid}&txid=c-1&payout=2&status=pending")).await;
    assert_eq!(b["status"], "accepted");
    let client = reqwest::Client::new();
    let url = format!("{}/postback/open?clickid={cid}&txid=c-1&payout=2&status=approved", f.base);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.get(url).send().await.expect("request").json::<Value>().await })
        })
        .collect();
    let mut outcomes = std::collections::BTreeMap::new();
    for t in tasks {
        let b = t.await.expect("task").expect("JSON");
        *outcomes.entry(b["status"].as_str().unwrap_or("?").to_owned()).or_insert(0) += 1;
    }
    assert_eq!(outcomes, [("duplicate".to_owned(), 199), ("updated".to_owned(), 1)].into_iter().collect());
    f.shipped(201).await;
    let revisions: Vec<u64> = f.events.conversions().iter().map(|c| c.revision).collect();
    assert_eq!(revisions, [1, 2]);
}
