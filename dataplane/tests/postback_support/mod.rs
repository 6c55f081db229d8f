//! Shared by the postback tests: a postback service on a real store (SQLite, or the MongoDB-wire test server)
//! seeded with a campaign, a template and one network per auth mode, and an in-memory sink collecting what its
//! event log ships.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use traffoflex_core::analytics::Analytics;
use traffoflex_core::clickid::ClickIdCodec;
use traffoflex_core::events::{self, ConversionEvent, Event, PostbackLogEvent};
use traffoflex_core::store::{Collection, ConfigStore, Filter, SqliteStore};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_core::testenv::SwitchableStore;
use traffoflex_dataplane::clicklog::{Batch, ClickLog, ClickLogSettings, ShipSettings, Sink, SinkError};
use traffoflex_dataplane::postback::config::LivePostbackConfig;
use traffoflex_dataplane::postback::currency::CurrencyRates;
use traffoflex_dataplane::postback::server::{PostbackState, router};
use traffoflex_dataplane::traffic::visitor::TrustedProxies;

/// Collects what the event log ships.
#[derive(Default, Clone)]
pub struct Collected(pub Arc<Mutex<Vec<Event>>>);

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

impl Collected {
    pub fn conversions(&self) -> Vec<ConversionEvent> {
        let all = self.0.lock().unwrap();
        all.iter().filter_map(|e| if let Event::Conversion(c) = e { Some(c.clone()) } else { None }).collect()
    }
    pub fn logs(&self) -> Vec<PostbackLogEvent> {
        let all = self.0.lock().unwrap();
        all.iter().filter_map(|e| if let Event::PostbackLog(c) = e { Some(c.clone()) } else { None }).collect()
    }
}

pub struct Fixture {
    pub base: String,
    pub store: Arc<SwitchableStore>,
    pub events: Collected,
    pub codec: ClickIdCodec,
    pub campaign: String,
    pub stream: String,
    pub destination: String,
    pub source: String,
    pub telemetry: Telemetry,
    pub _dir: tempfile::TempDir,
}

pub async fn id_of(store: &dyn ConfigStore, coll: Collection, doc: Value) -> String {
    let stored = store.insert(coll, doc).await.expect("insert");
    stored["id"].as_str().expect("id").to_owned()
}

pub async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn ConfigStore> {
    Arc::new(SqliteStore::open(&dir.path().join("config.sqlite")).await.expect("store"))
}

pub async fn start(inner: Arc<dyn ConfigStore>, dir: tempfile::TempDir) -> Fixture {
    start_with(inner, dir, Extras::default()).await
}

/// What a fixture may add to the postback service.
#[derive(Default)]
pub struct Extras {
    /// Conversions are enriched from the clicks here.
    pub clicks: Option<Arc<dyn Analytics>>,
    /// Revenue is converted at these rates.
    pub rates: CurrencyRates,
}

/// [`start`] with `extras`.
pub async fn start_with(inner: Arc<dyn ConfigStore>, dir: tempfile::TempDir, extras: Extras) -> Fixture {
    let store = Arc::new(SwitchableStore::new(inner));
    let s: &dyn ConfigStore = store.as_ref();
    let source =
        id_of(s, Collection::TrafficSources, json!({"key": "src1", "name": "Source 1", "outboundPostbackUrl": null}))
            .await;
    let destination = id_of(
        s,
        Collection::Destinations,
        json!({"name": "Offer A", "url": "https://offer.example/a?cid={clickId}", "enabled": true}),
    )
    .await;
    let campaign = id_of(
        s,
        Collection::Campaigns,
        json!({"key": "summer-sale", "name": "Summer sale", "status": "active", "trafficSourceId": source}),
    )
    .await;
    let stream = id_of(
        s,
        Collection::Streams,
        json!({"campaignId": campaign, "name": "All", "priority": 10, "enabled": true,
               "selection": "weighted", "destinations": [{"destinationId": destination, "weight": 1}]}),
    )
    .await;
    let template = id_of(s, Collection::PostbackTemplates, json!({
        "name": "Generic S2S",
        "params": {"clickId": "clickid", "transactionId": "txid", "payout": "payout", "currency": "currency", "status": "status"},
        "statusMap": {"1": "approved", "approved": "approved", "0": "rejected", "pending": "pending"},
        "defaultStatus": "approved"
    }))
    .await;
    let network = |key: &str, auth: Value, extra: Value| {
        let mut doc = json!({"key": key, "name": key, "postbackTemplateId": template, "auth": auth});
        if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        doc
    };
    for doc in [
        network("neta", json!({"mode": "token", "token": "s3cr3t"}), json!({})),
        network("open", json!({"mode": "none"}), json!({})),
        network("signed", json!({"mode": "hmac", "secret": "hk", "windowSeconds": 300}), json!({})),
        network("strict", json!({"mode": "none"}), json!({"clickLookup": "failClosed"})),
        network("office", json!({"mode": "none"}), json!({"ipAllowlist": ["10.0.0.0/8"]})),
        network("local", json!({"mode": "none"}), json!({"ipAllowlist": ["127.0.0.1"]})),
    ] {
        id_of(s, Collection::AffiliateNetworks, doc).await;
    }
    s.bump_config_revision().await.expect("revision");

    let telemetry = Telemetry::new();
    let events = Collected::default();
    let log = Arc::new(ClickLog::open(ClickLogSettings::new(dir.path().join("postbacklog")), &telemetry).expect("log"));
    let ship = ShipSettings { linger: Duration::from_millis(5), ..ShipSettings::default() };
    log.start_shipper(events.clone(), ship).expect("shipper");
    let config = Arc::new(LivePostbackConfig::new(store.clone()));
    config.refresh(true).await.expect("first load");
    let codec = ClickIdCodec::single(b"test key");
    let mut state = PostbackState::new(config, log, codec.clone(), TrustedProxies::default(), None, &telemetry)
        .with_rates(extras.rates);
    if let Some(clicks) = extras.clicks {
        state = state.with_clicks(clicks);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(Arc::new(state)).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Fixture {
        base: format!("http://{addr}"),
        store,
        events,
        codec,
        campaign,
        stream,
        destination,
        source,
        telemetry,
        _dir: dir,
    }
}

impl Fixture {
    pub fn click_id(&self) -> String {
        self.codec.issue(events::now_millis(), &self.campaign, &self.stream, &self.destination)
    }
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Client::new().get(format!("{}{path}", self.base))).await
    }
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        assert_eq!(r.headers()["content-type"], "application/json", "every answer is JSON");
        (status, r.json().await.expect("JSON body"))
    }
    pub async fn conversion_docs(&self) -> u64 {
        self.store.count(Collection::Conversions, &Filter::all()).await.expect("count")
    }
    /// Waits until the event log has shipped `logs` postback-log events.
    pub async fn shipped(&self, logs: usize) {
        for _ in 0..400 {
            if self.events.logs().len() >= logs {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("only {} of {logs} postback logs shipped", self.events.logs().len());
    }
}

pub async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = sqlite(&dir).await;
    start(store, dir).await
}
