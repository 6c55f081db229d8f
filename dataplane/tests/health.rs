//! Destination health checks: a destination that starts failing is taken out after three failures in a row
//! and comes back after two successes; two processes never both check the same slot; internal addresses are
//! refused unless allowed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{TimeZone, Utc};
use serde_json::json;
use traffoflex_core::events::{self, Event, HealthEvent};
use traffoflex_core::store::{Collection, ConfigStore, SqliteStore};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_dataplane::clicklog::{Batch, ClickLog, ClickLogSettings, ShipSettings, Sink, SinkError};
use traffoflex_dataplane::health::checker::{HealthChecker, HealthSettings, load_unhealthy};
use traffoflex_dataplane::health::probe::AddressPolicy;
use traffoflex_dataplane::routing::HealthView;

#[derive(Default, Clone)]
struct Collected(Arc<std::sync::Mutex<Vec<HealthEvent>>>);

#[async_trait]
impl Sink for Collected {
    async fn send(&self, batch: &Batch) -> Result<(), SinkError> {
        for r in batch.iter() {
            if let Ok(Event::DestinationHealth(h)) = events::decode(r.payload) {
                self.0.lock().unwrap().push(h);
            }
        }
        Ok(())
    }
}

/// An offer whose health endpoint answers a status the test sets, counting the requests.
async fn offer() -> (SocketAddr, Arc<AtomicU16>, Arc<AtomicUsize>) {
    let status = Arc::new(AtomicU16::new(200));
    let hits = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/health",
            axum::routing::get(|State((s, h)): State<(Arc<AtomicU16>, Arc<AtomicUsize>)>| async move {
                h.fetch_add(1, Ordering::SeqCst);
                StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap()
            }),
        )
        .with_state((status.clone(), hits.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, status, hits)
}

fn checker(
    store: Arc<dyn ConfigStore>,
    dir: &std::path::Path,
    name: &str,
    allow_private: bool,
) -> (HealthChecker, Collected) {
    let telemetry = Telemetry::new();
    let log = Arc::new(ClickLog::open(ClickLogSettings::new(dir.join(name)), &telemetry).unwrap());
    let events = Collected::default();
    log.start_shipper(events.clone(), ShipSettings { linger: Duration::from_millis(5), ..Default::default() }).unwrap();
    let settings = HealthSettings { policy: AddressPolicy { allow_private }, ..HealthSettings::default() };
    (HealthChecker::new(store, log, settings), events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_destinations_are_taken_out_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ConfigStore> = Arc::new(SqliteStore::open(&dir.path().join("c.sqlite")).await.unwrap());
    let (addr, status, hits) = offer().await;
    let dest = store
        .insert(
            Collection::Destinations,
            json!({
                "name": "Offer", "url": "https://offer.example/a?cid={clickId}", "enabled": true,
                "healthCheck": {"enabled": true, "url": format!("http://{addr}/health"), "intervalSeconds": 10}
            }),
        )
        .await
        .unwrap();
    let id = dest["id"].as_str().unwrap().to_owned();
    // Two traffic processes on the same store.
    let (a, events_a) = checker(store.clone(), dir.path(), "a", true);
    let (b, events_b) = checker(store.clone(), dir.path(), "b", true);
    let at = |slot: i64| Utc.timestamp_opt(1_764_000_000 + slot * 10, 0).unwrap();

    let outcomes = [200, 500, 500, 500, 200, 200];
    let mut healthy_after = Vec::new();
    for (slot, code) in outcomes.iter().enumerate() {
        status.store(*code, Ordering::SeqCst);
        let slot = slot as i64;
        let (ca, cb) = tokio::join!(a.tick(at(slot)), b.tick(at(slot)));
        assert_eq!(ca.unwrap() + cb.unwrap(), 1, "exactly one process checks slot {slot}");
        // A second round within the same slot checks nothing.
        assert_eq!(a.tick(at(slot)).await.unwrap() + b.tick(at(slot)).await.unwrap(), 0);
        healthy_after.push(load_unhealthy(store.as_ref()).await.unwrap().is_healthy(&id));
    }
    assert_eq!(hits.load(Ordering::SeqCst), outcomes.len(), "one request per slot across both processes");
    assert_eq!(healthy_after, [true, true, true, false, false, true]);

    let doc = store.get(Collection::DestinationHealth, &id).await.unwrap().unwrap();
    assert_eq!(doc["healthy"], true);
    assert_eq!(doc["lastStatus"], 200);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut all: Vec<HealthEvent> = events_a.0.lock().unwrap().clone();
    all.extend(events_b.0.lock().unwrap().iter().cloned());
    all.sort_by_key(|e| e.ts);
    assert_eq!(all.len(), outcomes.len(), "one health event per check");
    let changes: Vec<(bool, bool)> = all.iter().map(|e| (e.changed, e.healthy)).collect();
    assert_eq!(changes, [(false, true), (false, true), (false, true), (true, false), (false, false), (true, true)]);
    assert_eq!(all[1].http_status, 500);
    assert!(all[1].error.contains("500"), "{}", all[1].error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_targets_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ConfigStore> = Arc::new(SqliteStore::open(&dir.path().join("c.sqlite")).await.unwrap());
    let (addr, _status, hits) = offer().await;
    store
        .insert(
            Collection::Destinations,
            json!({
                "name": "Internal", "url": "https://offer.example/a", "enabled": true,
                "healthCheck": {"enabled": true, "url": format!("http://{addr}/health"), "intervalSeconds": 10}
            }),
        )
        .await
        .unwrap();
    let (strict, events) = checker(store.clone(), dir.path(), "strict", false);
    assert_eq!(strict.tick(Utc::now()).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a loopback target is never contacted");
    let e = events.0.lock().unwrap()[0].clone();
    assert!(!e.healthy || e.error.contains("refused"), "{e:?}");
    assert!(e.error.contains("refused") && e.error.contains("loopback"), "{}", e.error);
}
