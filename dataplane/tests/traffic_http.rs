//! The traffic service over HTTP, on a real store: configuration in the store -> reload -> redirects, events,
//! trafficback, 404s, and redirects that go on while the store is down.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use traffoflex_core::clickid::ClickIdCodec;
use traffoflex_core::events::{self, Event};
use traffoflex_core::store::{Collection, ConfigStore, SqliteStore};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_core::testenv::SwitchableStore;
use traffoflex_dataplane::clicklog::{Batch, ClickLog, ClickLogSettings, ShipSettings, Sink, SinkError};
use traffoflex_dataplane::health::checker::SharedHealth;
use traffoflex_dataplane::routing::UnhealthySet;
use traffoflex_dataplane::traffic::config::LiveConfig;
use traffoflex_dataplane::traffic::server::{TrafficState, router};
use traffoflex_dataplane::traffic::visitor::TrustedProxies;

const MOBILE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
const DESKTOP: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

/// Collects what the click log ships.
#[derive(Default, Clone)]
struct Collected(Arc<Mutex<Vec<Event>>>);

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

struct Fixture {
    base: String,
    campaign: String,
    store: Arc<SwitchableStore>,
    events: Collected,
    log: Arc<ClickLog>,
    stream_de: Value,
    dest_a: String,
    dest_b: String,
    codec: ClickIdCodec,
    health: SharedHealth,
    _dir: tempfile::TempDir,
}

async fn id_of(store: &dyn ConfigStore, coll: Collection, doc: Value) -> (String, Value) {
    let stored = store.insert(coll, doc).await.expect("insert");
    (stored["id"].as_str().expect("id").to_owned(), stored)
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite: Arc<dyn ConfigStore> =
        Arc::new(SqliteStore::open(&dir.path().join("config.sqlite")).await.expect("store"));
    let store = Arc::new(SwitchableStore::new(sqlite));
    let s: &dyn ConfigStore = store.as_ref();
    let (dest_a, _) = id_of(
        s,
        Collection::Destinations,
        json!({"name": "Offer A", "url": "https://offer.example/a?cid={clickId}&s={sub1}", "enabled": true}),
    )
    .await;
    let (dest_b, _) = id_of(
        s,
        Collection::Destinations,
        json!({"name": "Offer B", "url": "https://offer.example/b?c={country}&ip={ip}", "enabled": true}),
    )
    .await;
    let (campaign, _) = id_of(s, Collection::Campaigns, json!({"key": "summer-sale", "name": "Summer sale", "status": "active", "publicToken": "Qx7-summer_42", "trafficbackUrl": "https://fallback.example/tb"})).await;
    id_of(s, Collection::Campaigns, json!({"key": "paused-one", "name": "Paused", "status": "paused", "trafficbackUrl": "https://fallback.example/tb"})).await;
    let (_, stream_de) = id_of(
        s,
        Collection::Streams,
        json!({
        "campaignId": campaign, "name": "DACH", "priority": 10, "enabled": true,
        "conditions": {"all": [{"field": "country", "op": "in", "values": ["DE", "AT"]}]},
        "selection": "weighted", "destinations": [{"destinationId": dest_a, "weight": 1}]}),
    )
    .await;
    id_of(
        s,
        Collection::Streams,
        json!({
        "campaignId": campaign, "name": "Desktop", "priority": 20, "enabled": true,
        "conditions": {"all": [{"field": "deviceType", "op": "eq", "value": "desktop"}]},
        "selection": "waterfall", "destinations": [{"destinationId": dest_b}]}),
    )
    .await;
    s.bump_config_revision().await.expect("revision");

    let telemetry = Telemetry::new();
    let events = Collected::default();
    let mut settings = ClickLogSettings::new(dir.path().join("clicklog"));
    settings.durability = Default::default();
    let log = Arc::new(ClickLog::open(settings, &telemetry).expect("click log"));
    let ship = ShipSettings { linger: Duration::from_millis(5), ..ShipSettings::default() };
    log.start_shipper(events.clone(), ship).expect("shipper");
    let config = Arc::new(LiveConfig::new(store.clone()));
    config.refresh(true).await.expect("first load");
    let codec = ClickIdCodec::single(b"test key");
    let health = SharedHealth::default();
    let state =
        TrafficState::new(config, log.clone(), codec.clone(), TrustedProxies::default(), None, None, &telemetry)
            .with_health(health.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(Arc::new(state)).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Fixture {
        base: format!("http://{addr}"),
        campaign,
        store,
        events,
        log,
        stream_de,
        dest_a,
        dest_b,
        codec,
        health,
        _dir: dir,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

async fn click(f: &Fixture, path: &str, ua: &str) -> reqwest::Response {
    client().get(format!("{}{path}", f.base)).header("user-agent", ua).send().await.expect("request")
}

fn location(r: &reqwest::Response) -> String {
    r.headers().get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_are_routed_recorded_and_survive_a_store_outage() {
    let f = start().await;

    // A DACH visitor goes to offer A, with the click ID and sub1 filled in.
    let r = click(&f, "/c/summer-sale?country=DE&sub1=a%20b", MOBILE).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let id = r.headers()["x-click-id"].to_str().unwrap().to_owned();
    assert_eq!(location(&r), format!("https://offer.example/a?cid={id}&s=a%20b"));
    assert!(f.codec.verify(&id).is_ok(), "the click ID is ours and verifies");

    // While health checks say offer A is down, DACH visitors go to trafficback instead.
    f.health.store(Arc::new(UnhealthySet::of([f.dest_a.as_str()])));
    let r = click(&f, "/c/summer-sale?country=DE", MOBILE).await;
    assert_eq!(location(&r), "https://fallback.example/tb?trafficback_depth=1");
    f.health.store(Arc::new(UnhealthySet::default()));

    // A desktop visitor elsewhere goes to offer B; the country alias `geo` is understood.
    let r = click(&f, "/c/summer-sale?geo=FR", DESKTOP).await;
    assert_eq!(location(&r), "https://offer.example/b?c=FR&ip=127.0.0.1");

    // Inbound url/redirect_url never change where a visitor goes.
    let r = click(&f, "/c/summer-sale?country=AT&url=https://evil.example&redirect_url=//evil.example", MOBILE).await;
    assert!(location(&r).starts_with("https://offer.example/a?"), "{}", location(&r));

    // No stream matches -> trafficback, once; a second round trip is not sent round again.
    let r = click(&f, "/c/summer-sale?country=FR", MOBILE).await;
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "https://fallback.example/tb?trafficback_depth=1");
    let r = click(&f, "/c/summer-sale?country=FR&trafficback_depth=1", MOBILE).await;
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("x-click-id").is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "noRoute");

    // Unknown and paused campaigns are 404, with no redirect anywhere.
    for path in ["/c/nope", "/c/paused-one"] {
        let r = click(&f, path, DESKTOP).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.headers().get("location").is_none());
    }

    // The key is read percent-decoded; one that is not UTF-8 names no campaign.
    let r = click(&f, "/c/summer%2Dsale?geo=FR", DESKTOP).await;
    assert_eq!(location(&r), "https://offer.example/b?c=FR&ip=127.0.0.1");
    let r = click(&f, "/c/%FF", DESKTOP).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "notFound");

    // HEAD is answered like GET.
    let r = client().head(format!("{}/c/summer-sale?country=DE", f.base)).send().await.unwrap();
    assert_eq!(r.status(), 302);

    // A configuration change is live after the reload signal.
    let mut stream = f.stream_de.clone();
    stream["destinations"] = json!([{"destinationId": f.dest_b, "weight": 1}]);
    let id = stream["id"].as_str().unwrap().to_owned();
    f.store.replace(Collection::Streams, &id, None, stream).await.expect("update");
    f.store.bump_config_revision().await.expect("revision");
    let r = client().post(format!("{}/internal/reload", f.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = click(&f, "/c/summer-sale?country=DE", MOBILE).await;
    assert_eq!(location(&r), "https://offer.example/b?c=DE&ip=127.0.0.1");

    // The store goes away: reloads fail, clicks keep being routed with the last configuration.
    f.store.down.store(true, Ordering::SeqCst);
    let r = client().post(format!("{}/internal/reload", f.base)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    for _ in 0..20 {
        let r = click(&f, "/c/summer-sale?country=AT", MOBILE).await;
        assert_eq!(r.status(), 302);
    }

    // Every recorded click reached the sink, with its facts.
    let recorded = 3 + 2 + 1 + 1 + 1 + 20; // redirects + trafficbacks + encoded key + HEAD + after reload + outage
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while f.events.0.lock().unwrap().len() < recorded && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = f.events.0.lock().unwrap().clone();
    assert_eq!(events.len(), recorded);
    let Event::Click(first) = &events[0] else { panic!("first event is a click: {:?}", events[0]) };
    assert_eq!((first.country.as_str(), first.device_type.as_str(), first.subs[0].as_str()), ("DE", "mobile", "a b"));
    assert!(first.is_unique);
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Trafficback(_))).count(), 2);
    f.log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mvp_entries_route_by_campaign_id_and_public_token() {
    let f = start().await;
    for path in [format!("/go/{}", f.campaign), "/r/Qx7-summer_42".to_owned()] {
        let r = click(&f, &format!("{path}?country=AT&sub1=x"), MOBILE).await;
        assert_eq!(r.status(), 302, "{path}");
        let id = r.headers()["x-click-id"].to_str().unwrap().to_owned();
        assert_eq!(location(&r), format!("https://offer.example/a?cid={id}&s=x"), "{path} routes as /c/summer-sale");
    }
    for path in ["/go/no-such-id", "/r/no-such-token", "/r/summer-sale"] {
        let r = click(&f, path, MOBILE).await;
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], "notFound", "{path}");
    }
    f.log.close().await;
    let clicks = f.events.0.lock().unwrap().iter().filter(|e| matches!(e, Event::Click(_))).count();
    assert_eq!(clicks, 2, "both clicks recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loaded_revision_is_in_the_metrics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn ConfigStore> =
        Arc::new(SqliteStore::open(&dir.path().join("config.sqlite")).await.expect("store"));
    let config = Arc::new(LiveConfig::new(Arc::clone(&store)));
    config.refresh(true).await.expect("load");
    let telemetry = Telemetry::new();
    let stop = tokio_util::sync::CancellationToken::new();
    config.spawn_revision_metric(&telemetry, stop.clone());
    let line = |revision: &str| format!("traffoflex_config_loaded_revision{{revision=\"{revision}\"}} 1");
    let first = config.current().revision.clone();
    let shows = |want: String| {
        let telemetry = telemetry.clone();
        async move {
            for _ in 0..40 {
                let text = telemetry.encode_metrics();
                if text.contains(&want) {
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{want} not in\n{}", telemetry.encode_metrics());
        }
    };
    shows(line(&first)).await;
    store.bump_config_revision().await.expect("revision");
    config.refresh(false).await.expect("reload");
    let second = config.current().revision.clone();
    assert_ne!(first, second);
    let text = shows(line(&second)).await;
    assert!(!text.contains(&line(&first)), "only the revision in force: {text}");
    stop.cancel();
}
