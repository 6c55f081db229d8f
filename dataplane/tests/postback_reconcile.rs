//! A postback process that dies between storing a conversion and appending its event: the next start finds
//! the running marker and appends the events of the conversions changed since the last heartbeat.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rust_decimal::Decimal;
use traffoflex_core::events::{self, Event};
use traffoflex_core::store::{ConfigStore, MongoStore, SqliteStore};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_core::testenv;
use traffoflex_crds::ConversionStatus;
use traffoflex_dataplane::clicklog::{Batch, ClickLog, ClickLogSettings, ShipSettings, Sink, SinkError};
use traffoflex_dataplane::postback::reconcile::{beat, clean_stop, replay_since, unclean_since};
use traffoflex_dataplane::postback::record::{ConversionDoc, Recorded, record};

#[derive(Default, Clone)]
struct Collected(Arc<std::sync::Mutex<Vec<Event>>>);

#[async_trait]
impl Sink for Collected {
    async fn send(&self, batch: &Batch) -> Result<(), SinkError> {
        let mut out = self.0.lock().unwrap();
        for r in batch.iter() {
            out.push(events::decode(r.payload).map_err(|e| SinkError::Other(e.to_string()))?);
        }
        Ok(())
    }
}

fn conversion(tx: &str, status: ConversionStatus) -> ConversionDoc {
    ConversionDoc {
        network_id: "net-1".into(),
        network_key: "neta".into(),
        transaction_id: tx.into(),
        click_id: format!("click-{tx}"),
        status,
        payout: Decimal::new(500, 2),
        currency: "USD".into(),
        revenue: Decimal::new(500, 2),
        event_type: String::new(),
        campaign_id: "camp-1".into(),
        stream_id: String::new(),
        destination_id: String::new(),
        traffic_source_id: String::new(),
        team_id: "default".into(),
        attributed: true,
        click_ts: 0,
        click: None,
        ts: events::now_millis(),
        revision: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversions_stored_without_their_event_are_appended_after_an_unclean_stop_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn ConfigStore> =
        Arc::new(SqliteStore::open(&dir.path().join("config.sqlite")).await.expect("store"));
    unclean_stop_scenario(store, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversions_stored_without_their_event_are_appended_after_an_unclean_stop_on_ferretdb() {
    let Some(uri) = testenv::mongo_uri() else { return };
    let mongo = MongoStore::connect(&uri, Some(&testenv::unique_name("tf_reconcile"))).await.expect("connect");
    mongo.ensure_indexes().await.expect("indexes");
    unclean_stop_scenario(Arc::new(mongo), tempfile::tempdir().expect("temp dir")).await;
}

async fn unclean_stop_scenario(store: Arc<dyn ConfigStore>, dir: tempfile::TempDir) {
    let log_dir = dir.path().join("postbacklog");
    std::fs::create_dir_all(&log_dir).expect("dir");

    // The first run: it beats, stores three conversions (one changes status), and dies before any event.
    assert_eq!(unclean_since(&log_dir), None, "a first start is clean");
    beat(&log_dir).expect("beat");
    for tx in ["a", "b", "c"] {
        assert!(matches!(
            record(store.as_ref(), conversion(tx, ConversionStatus::Pending)).await,
            Ok(Recorded::Accepted(_))
        ));
    }
    let updated = record(store.as_ref(), conversion("b", ConversionStatus::Approved)).await.expect("update");
    assert!(matches!(updated, Recorded::Updated(_)));

    // The next start finds the marker and replays.
    let seen = unclean_since(&log_dir).expect("the marker of a run that did not stop cleanly");
    assert!((Utc::now() - seen).num_seconds() < 5);
    let events = Collected::default();
    let log = ClickLog::open(ClickLogSettings::new(log_dir.clone()), &Telemetry::new()).expect("log");
    let ship = ShipSettings { linger: Duration::from_millis(5), ..ShipSettings::default() };
    log.start_shipper(events.clone(), ship).expect("shipper");
    assert_eq!(replay_since(store.as_ref(), &log, seen).await.expect("replay"), 3);
    log.close().await;
    let mut got: Vec<(String, u64, events::ConversionStatus)> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| {
            if let Event::Conversion(c) = e { Some((c.transaction_id.clone(), c.revision, c.status)) } else { None }
        })
        .collect();
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        [
            ("a".to_owned(), 1, events::ConversionStatus::Pending),
            ("b".to_owned(), 2, events::ConversionStatus::Approved),
            ("c".to_owned(), 1, events::ConversionStatus::Pending)
        ],
        "each conversion once, at its latest revision"
    );

    // Conversions older than the last heartbeat (less a margin) are not read again.
    let later = Utc::now() + chrono::Duration::minutes(10);
    let log = ClickLog::open(ClickLogSettings::new(dir.path().join("other")), &Telemetry::new()).expect("log");
    assert_eq!(replay_since(store.as_ref(), &log, later).await.expect("replay"), 0);
    log.close().await;

    clean_stop(&log_dir);
    assert_eq!(unclean_since(&log_dir), None, "a clean stop leaves no marker");
}
