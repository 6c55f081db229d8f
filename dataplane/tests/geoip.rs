//! Visitor location and network from MaxMind databases: the lookups themselves, and routing on them over
//! HTTP — with the traffic source's own query parameters and unknown addresses left alone.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde_json::json;
use support::mmdb::{V, write};
use traffoflex_core::clickid::ClickIdCodec;
use traffoflex_core::store::{Collection, ConfigStore, SqliteStore};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_dataplane::clicklog::{ClickLog, ClickLogSettings};
use traffoflex_dataplane::traffic::config::LiveConfig;
use traffoflex_dataplane::traffic::geo::{GeoFacts, GeoIp};
use traffoflex_dataplane::traffic::server::{TrafficState, router};
use traffoflex_dataplane::traffic::visitor::TrustedProxies;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// A city database (Munich, Bavaria, and Vienna over IPv6) and an ASN database, written to `dir`.
fn databases(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let city = |country: &'static str, region: &'static str, name: &'static str| {
        V::Map(vec![
            ("city", V::Map(vec![("geoname_id", V::U32(1)), ("names", V::Map(vec![("en", V::Str(name))]))])),
            ("country", V::Map(vec![("iso_code", V::Str(country))])),
            ("subdivisions", V::Array(vec![V::Map(vec![("iso_code", V::Str(region))])])),
        ])
    };
    let location = write(
        "GeoLite2-City",
        vec![((ip("81.2.69.0"), 24), city("DE", "BY", "Munich")), ((ip("2001:db8::"), 32), city("AT", "9", "Vienna"))],
    );
    let network = write(
        "GeoLite2-ASN",
        vec![(
            (ip("81.2.69.0"), 24),
            V::Map(vec![
                ("autonomous_system_number", V::U32(3320)),
                ("autonomous_system_organization", V::Str("Deutsche Telekom AG")),
            ]),
        )],
    );
    let (l, n) = (dir.join("city.mmdb"), dir.join("asn.mmdb"));
    std::fs::write(&l, location).expect("write");
    std::fs::write(&n, network).expect("write");
    (l, n)
}

#[test]
fn lookups_read_country_region_city_asn_and_isp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (location, network) = databases(dir.path());
    let geo = GeoIp::open(Some(&location), Some(&network)).expect("open");
    assert_eq!(
        geo.lookup(ip("81.2.69.160")),
        GeoFacts {
            country: "DE".into(),
            region: "BY".into(),
            city: "Munich".into(),
            asn: Some(3320),
            isp: "Deutsche Telekom AG".into()
        }
    );
    let vienna = geo.lookup(ip("2001:db8:1::7"));
    assert_eq!((vienna.country.as_str(), vienna.city.as_str(), vienna.asn), ("AT", "Vienna", None));
    assert_eq!(geo.lookup(ip("192.0.2.1")), GeoFacts::default(), "an address the databases don't have");
    let only_location = GeoIp::open(Some(&location), None).expect("open");
    assert_eq!(only_location.lookup(ip("81.2.69.1")).isp, "");

    let err = GeoIp::open(Some(&dir.path().join("missing.mmdb")), None).err().expect("a missing file is an error");
    assert!(err.contains("missing.mmdb"), "{err}");
    std::fs::write(dir.path().join("junk.mmdb"), b"not a database").expect("write");
    assert!(GeoIp::open(None, Some(&dir.path().join("junk.mmdb"))).is_err());
}

#[test]
fn a_replaced_database_is_read_again_and_a_broken_one_keeps_the_old() {
    let dir = tempfile::tempdir().expect("temp dir");
    let country = |code: &'static str| V::Map(vec![("country", V::Map(vec![("iso_code", V::Str(code))]))]);
    let db = |code| write("GeoLite2-Country", vec![((ip("81.2.69.0"), 24), country(code))]);
    let path = dir.path().join("country.mmdb");
    // Replaced the way an updater does: a new file renamed over the old one.
    let replace = |bytes: &[u8]| {
        let tmp = dir.path().join("country.mmdb.tmp");
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
    };
    replace(&db("DE"));
    let geo = GeoIp::open(Some(&path), None).expect("open");
    assert_eq!(geo.lookup(ip("81.2.69.1")).country, "DE");
    assert_eq!(geo.reload_if_changed(), Ok(false), "nothing changed");

    replace(&db("FR"));
    assert_eq!(geo.reload_if_changed(), Ok(true));
    assert_eq!(geo.lookup(ip("81.2.69.1")).country, "FR");

    replace(b"half a database");
    let err = geo.reload_if_changed().expect_err("a file that doesn't open");
    assert!(err.contains("country.mmdb"), "{err}");
    assert_eq!(geo.lookup(ip("81.2.69.1")).country, "FR", "the database loaded before stays");
    std::fs::remove_file(&path).expect("remove");
    assert!(geo.reload_if_changed().is_err(), "a missing file");
    assert_eq!(geo.lookup(ip("81.2.69.1")).country, "FR");

    replace(&db("PL"));
    assert_eq!(geo.reload_if_changed(), Ok(true), "the next check tries again");
    assert_eq!(geo.lookup(ip("81.2.69.1")).country, "PL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_are_routed_on_the_visitors_location_and_network() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (location, network) = databases(dir.path());
    let store: Arc<dyn ConfigStore> =
        Arc::new(SqliteStore::open(&dir.path().join("config.sqlite")).await.expect("store"));
    let dest = |name: &str| json!({"name": name, "url": format!("https://offer.example/{name}?c={{country}}"), "enabled": true});
    let munich = store.insert(Collection::Destinations, dest("munich")).await.expect("insert")["id"].clone();
    let vienna = store.insert(Collection::Destinations, dest("vienna")).await.expect("insert")["id"].clone();
    let campaign = store
        .insert(
            Collection::Campaigns,
            json!({"key": "geo", "name": "Geo", "status": "active", "trafficbackUrl": "https://fallback.example/"}),
        )
        .await
        .expect("insert")["id"]
        .clone();
    store
        .insert(Collection::Streams, json!({"campaignId": campaign, "name": "Bavarian Telekom", "priority": 1,
            "conditions": {"all": [
                {"field": "country", "op": "eq", "value": "DE"}, {"field": "region", "op": "eq", "value": "BY"},
                {"field": "city", "op": "eq", "value": "Munich"}, {"field": "isp", "op": "contains", "value": "Telekom"},
                {"field": "asn", "op": "eq", "value": "3320"}]},
            "selection": "waterfall", "destinations": [{"destinationId": munich}]}))
        .await
        .expect("insert");
    store
        .insert(
            Collection::Streams,
            json!({"campaignId": campaign, "name": "Austria", "priority": 2,
            "conditions": {"all": [{"field": "country", "op": "eq", "value": "AT"}]},
            "selection": "waterfall", "destinations": [{"destinationId": vienna}]}),
        )
        .await
        .expect("insert");
    store.bump_config_revision().await.expect("revision");

    let telemetry = Telemetry::new();
    let log = Arc::new(ClickLog::open(ClickLogSettings::new(dir.path().join("clicklog")), &telemetry).expect("log"));
    let config = Arc::new(LiveConfig::new(Arc::clone(&store)));
    config.refresh(true).await.expect("load");
    let geo = GeoIp::open(Some(&location), Some(&network)).expect("open");
    let trusted = TrustedProxies::parse("127.0.0.1").expect("proxies");
    let state = TrafficState::new(config, log, ClickIdCodec::single(b"k"), trusted, None, None, &telemetry)
        .with_geo(Arc::new(geo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(Arc::new(state)).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let go = |visitor: &'static str, query: &'static str| {
        let req = client.get(format!("http://{addr}/c/geo{query}")).header("x-forwarded-for", visitor);
        async move {
            let r = req.send().await.expect("click");
            r.headers()["location"].to_str().expect("location").to_owned()
        }
    };
    assert_eq!(go("81.2.69.160", "").await, "https://offer.example/munich?c=DE");
    assert_eq!(go("2001:db8::5", "").await, "https://offer.example/vienna?c=AT");
    assert_eq!(
        go("81.2.69.160", "?country=AT").await,
        "https://offer.example/vienna?c=AT",
        "the source's country wins"
    );
    assert!(go("192.0.2.7", "").await.starts_with("https://fallback.example/"), "unknown addresses match nothing");
}
