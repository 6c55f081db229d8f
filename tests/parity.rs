//! Parity with the original TraffoFlex MVP, section by section of its feature list (Traffic, Postbacks,
//! Users and operations): each test quotes the item it proves and drives the built `traffoflex up` on the
//! embedded backends as a user would — objects made through the API, clicks on the traffic port, postbacks
//! on the postback port, reports, logs and metrics read back. Each module starts one `up` that its tests
//! share; every test makes objects with keys of its own.
//!
//! Proven elsewhere: click-log durability (each click fsynced before its redirect, with group commit; a full
//! log drops clicks but keeps redirecting) in `dataplane/tests/clicklog.rs`, and nothing lost on Ctrl-C in
//! `tests/up_e2e.rs`, which is also the one-command smoke test of click -> reports and postback ->
//! conversion -> reports.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Addrs, ApiClient, Recorder, Reply, Up, addrs, enc, eventually, send, up_for_this_run};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const ADMIN_EMAIL: &str = "ops@example.org";
const ADMIN_PASSWORD: &str = "ops-password-1";

/// One `up` shared by the tests of a module, with the bootstrap admin (from the environment) logged in.
struct Running {
    up: Up,
    a: Addrs,
    api: ApiClient,
}

impl Running {
    fn start(extra: &[&str]) -> Self {
        let a = addrs();
        let env = [("TRAFFOFLEX_ADMIN_EMAIL", ADMIN_EMAIL), ("TRAFFOFLEX_ADMIN_PASSWORD", ADMIN_PASSWORD)];
        let up = up_for_this_run(a, extra, &env);
        let api = ApiClient::login(a.api, ADMIN_EMAIL, ADMIN_PASSWORD);
        Self { up, a, api }
    }

    /// Makes every change made so far live on the traffic and postback ports at once, as `--reload-urls`
    /// does for the API (without it a change is live within `--reload-interval-ms`).
    fn go_live(&self) {
        for addr in [self.a.traffic, self.a.postback] {
            let r = send(addr, "POST", "/internal/reload", &[], None);
            assert_eq!(r.status, 200, "{r:?}");
        }
    }

    fn click(&self, path: &str) -> Reply {
        send(self.a.traffic, "GET", path, &[], None)
    }

    /// Where a click goes: the host of its redirect, or `404`.
    fn routed(&self, path: &str) -> String {
        let r = self.click(path);
        match r.status {
            302 => host(r.location()).to_owned(),
            404 => "404".to_owned(),
            _ => panic!("{path}: {r:?}"),
        }
    }

    /// A click that must be redirected; its click ID.
    fn click_id(&self, path: &str) -> String {
        let r = self.click(path);
        assert_eq!(r.status, 302, "{path}: {r:?}");
        r.header("x-click-id").expect("X-Click-Id").to_owned()
    }

    fn postback(&self, path: &str) -> Reply {
        send(self.a.postback, "GET", path, &[], None)
    }

    /// A postback that must be answered 200 with `outcome`; its conversion ID.
    fn converts(&self, path: &str, outcome: &str) -> String {
        let r = self.postback(path);
        let body = r.json();
        assert_eq!((r.status, body["status"].as_str()), (200, Some(outcome)), "{path}: {r:?}");
        body["conversionId"].as_str().expect("conversionId").to_owned()
    }

    /// The campaign's overview, polled until `done` holds (at most 10 s).
    fn overview_until(&self, campaign: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.api.report_until(&format!("/reports/overview?campaignId={campaign}"), Duration::from_secs(10), done)
    }

    /// The Prometheus text of a port's `/metrics`.
    fn metrics(&self, addr: std::net::SocketAddr) -> String {
        let r = send(addr, "GET", "/metrics", &[], None);
        assert_eq!(r.status, 200, "{r:?}");
        r.body
    }
}

/// The value of a metric line (`name value` or `name{labels} value`).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

/// The host (with its port, if any) of an absolute URL.
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

fn dec(v: &Value) -> Decimal {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not a decimal string: {v}"))
}

fn num(v: &str) -> Decimal {
    v.parse().expect("decimal")
}

/// `base` with the fields of `extra` (an object) set on it.
fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// A destination at `https://{name}.example/?cid={clickId}`.
fn destination(api: &ApiClient, name: &str, extra: Value) -> String {
    let url = format!("https://{name}.example/?cid={{clickId}}");
    api.create("/destinations", with(json!({"name": name, "url": url}), extra))
}

/// An active campaign whose trafficback is `https://tb.example/{key}`.
fn campaign(api: &ApiClient, key: &str, extra: Value) -> String {
    let body =
        json!({"key": key, "name": key, "status": "active", "trafficbackUrl": format!("https://tb.example/{key}")});
    api.create("/campaigns", with(body, extra))
}

fn stream(api: &ApiClient, campaign: &str, priority: u32, selection: &str, dests: &[&str], extra: Value) -> String {
    let destinations: Vec<Value> = dests.iter().map(|d| json!({"destinationId": d})).collect();
    let body = json!({"campaignId": campaign, "name": format!("stream {priority}"), "priority": priority,
                      "selection": selection, "destinations": destinations});
    api.create("/streams", with(body, extra))
}

/// A campaign sending every click to one destination, `{key}-offer.example`.
fn offer(api: &ApiClient, key: &str, extra: Value) -> String {
    let d = destination(api, &format!("{key}-offer"), json!({}));
    let c = campaign(api, key, extra);
    stream(api, &c, 1, "waterfall", &[&d], json!({}));
    c
}

/// An affiliate network authenticating with the token `{key}-secret`, read by a template that names only the
/// click ID parameter (`clickid`), so every other parameter is read under the MVP's aliases, and maps the
/// status words `approved`, `pending` and `rejected` to ours.
fn network(api: &ApiClient, key: &str, extra: Value) -> String {
    let statuses = json!({"approved": "approved", "pending": "pending", "rejected": "rejected"});
    let template = api.create(
        "/postback-templates",
        json!({"name": format!("{key} template"), "params": {"clickId": "clickid"}, "statusMap": statuses}),
    );
    let body = json!({"key": key, "name": key, "postbackTemplateId": template,
                      "auth": {"mode": "token", "token": format!("{key}-secret")}});
    api.create("/affiliate-networks", with(body, extra))
}

mod traffic {
    use chrono::{Datelike, Timelike, Utc};

    use super::*;

    fn running() -> &'static Running {
        static UP: OnceLock<Running> = OnceLock::new();
        UP.get_or_init(|| {
            Running::start(&["--stats-interval-ms", "200", "--reload-interval-ms", "200", "--health-allow-private"])
        })
    }

    /// Waits until cap and bestRoi figures were read from analytics twice more, so at least one read began
    /// after whatever reports show now.
    fn figures_refreshed(r: &Running) {
        let refreshes = |r: &Running| {
            metric(&r.metrics(r.a.traffic), "traffoflex_traffic_stats_refreshes_total{outcome=\"ok\"}").unwrap_or(0.0)
        };
        let before = refreshes(r);
        eventually(Duration::from_secs(5), "two figure refreshes", || (refreshes(r) >= before + 2.0).then_some(()));
    }

    /// > Public entry points: `/c/{campaignSlug}`, `/go/{campaignPublicId}`, `/r/{publicToken}`,
    /// > `/tb/{campaignSlug}` (direct trafficback entry).
    ///
    /// The campaign's key, its ID, its MVP public ID (`publicId`) and its `publicToken` each route a click to
    /// its destination with a click ID of its own, and every one of those clicks is in the campaign's reports;
    /// unknown ones answer 404.
    #[test]
    fn campaign_links_by_key_id_and_public_token_route_alike() {
        let r = running();
        let c =
            offer(&r.api, "entry", json!({"publicToken": "Entry_Token-01", "publicId": "64f1c2a9e3b7d51a2c9e0f13"}));
        r.go_live();
        let mut ids = Vec::new();
        for path in [
            "/c/entry?sub1=a".to_owned(),
            format!("/go/{c}?sub1=a"),
            "/go/64f1c2a9e3b7d51a2c9e0f13?sub1=a".to_owned(),
            "/r/Entry_Token-01?sub1=a".to_owned(),
        ] {
            let resp = r.click(&path);
            assert_eq!(resp.status, 302, "{path}: {resp:?}");
            assert_eq!(resp.header("cache-control"), Some("no-store"), "{path}");
            let id = resp.header("x-click-id").expect("X-Click-Id").to_owned();
            assert_eq!(resp.location(), format!("https://entry-offer.example/?cid={id}"), "{path}");
            ids.push(id);
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4, "each click has its own ID");
        for path in ["/c/no-such-key", "/go/no-such-campaign", "/r/NoSuchToken-99"] {
            let resp = r.click(path);
            assert_eq!((resp.status, resp.header("location")), (404, None), "{path}");
        }
        let report = r.overview_until(&c, |m| m["clicks"] == 4);
        assert_eq!(report["clicks"], 4, "{report}");
    }

    /// > Public entry points: … `/tb/{campaignSlug}` (direct trafficback entry).
    ///
    /// `/tb/{key}` sends the click straight to the campaign's trafficback URL, marked as having been there
    /// once, while `/c/{key}` routes it; a click already sent round once is not sent round again.
    #[test]
    fn tb_sends_a_click_straight_to_the_trafficback_url_once() {
        let r = running();
        let c = offer(&r.api, "tb-direct", json!({}));
        r.go_live();
        let resp = r.click("/tb/tb-direct?sub1=x");
        assert_eq!(resp.status, 302, "{resp:?}");
        assert_eq!(resp.location(), "https://tb.example/tb-direct?trafficback_depth=1");
        assert!(resp.header("x-click-id").is_some(), "the trafficback click is recorded: {resp:?}");
        assert_eq!(r.routed("/c/tb-direct?sub1=x"), "tb-direct-offer.example");
        assert_eq!(r.routed("/tb/tb-direct?trafficback_depth=1"), "404", "it already came back once");
        assert_eq!(r.routed("/tb/no-such-key"), "404");
        let report = r.overview_until(&c, |m| m["clicks"] == 2);
        assert_eq!(report["clicks"], 2, "trafficback clicks are clicks too: {report}");
    }

    /// > Query aliases normalised before matching: `country`, `country_code`, `geo` -> country; `region`,
    /// > `state` -> region; `geo_city` -> city; `geo_asn` -> asn; `carrier` -> isp; `device` -> deviceType;
    /// > `platform` -> os; `ua_browser` -> browser.
    ///
    /// One stream per field, each conditioned on that field alone: a click carrying only the alias reaches
    /// the stream of the field the alias stands for.
    #[test]
    fn mvp_query_aliases_are_matched_by_stream_conditions() {
        let r = running();
        let cases: [(&str, Value, &[&str]); 8] = [
            ("country", json!("DE"), &["country=DE", "country_code=DE", "geo=DE"]),
            ("region", json!("Bavaria"), &["region=Bavaria", "state=Bavaria"]),
            ("city", json!("Munich"), &["geo_city=Munich"]),
            ("asn", json!(3320), &["geo_asn=3320", "geo_asn=AS3320"]),
            ("isp", json!("Telekom"), &["carrier=Telekom"]),
            ("deviceType", json!("tablet"), &["device=tablet"]),
            ("os", json!("Android"), &["platform=Android"]),
            ("browser", json!("Opera"), &["ua_browser=Opera"]),
        ];
        let c = campaign(&r.api, "aliases", json!({}));
        for (i, (field, value, _)) in cases.iter().enumerate() {
            let d = destination(&r.api, &format!("alias-{}", field.to_lowercase()), json!({}));
            let rule = json!({"field": field, "op": "eq", "value": value});
            stream(&r.api, &c, i as u32 + 1, "waterfall", &[&d], json!({"conditions": {"all": [rule]}}));
        }
        r.go_live();
        for (field, _, queries) in cases {
            for q in queries {
                let want = format!("alias-{}.example", field.to_lowercase());
                assert_eq!(r.routed(&format!("/c/aliases?{q}")), want, "{q} is {field}");
            }
        }
        assert_eq!(r.routed("/c/aliases?geo=FR"), "tb.example", "the value still has to match");
        assert_eq!(r.routed("/c/aliases?sub1=DE"), "tb.example");
    }

    /// > The traffic source's own click token (`source_click_id`) is kept apart from our click ID and is
    /// > available as a field and a macro.
    #[test]
    fn the_sources_click_id_is_kept_apart_from_ours_as_a_field_and_a_macro() {
        let r = running();
        let url = "https://sci-offer.example/?ours={clickId}&theirs={sourceClickId}";
        let d = r.api.create("/destinations", json!({"name": "sci", "url": url}));
        let c = campaign(&r.api, "source-click", json!({}));
        let rule = json!({"field": "sourceClickId", "op": "startsWith", "value": "tok-"});
        stream(&r.api, &c, 1, "waterfall", &[&d], json!({"conditions": {"all": [rule]}}));
        r.go_live();
        let resp = r.click("/c/source-click?source_click_id=tok-42");
        assert_eq!(resp.status, 302, "{resp:?}");
        let ours = resp.header("x-click-id").expect("X-Click-Id");
        assert!(ours != "tok-42" && ours.len() >= 32, "our own click ID: {ours}");
        assert_eq!(resp.location(), format!("https://sci-offer.example/?ours={ours}&theirs=tok-42"));
        assert_eq!(r.routed("/c/source-click?source_click_id=other-42"), "tb.example", "the field decides");
    }

    /// > Condition operators also include `notContains`, `startsWith`, `endsWith`, `gte`, `lte`, `notExists`;
    /// > fields also include `asn`, `sourceClickId`, `trafficbackDepth`, `cost`, `currency`, `query.<param>`.
    ///
    /// One stream per case (picked by the query parameter `case`): a click that fits the condition reaches
    /// the stream's destination, one that does not goes to trafficback.
    #[test]
    fn the_mvps_extra_operators_and_fields_decide_where_a_click_goes() {
        let r = running();
        let cases = [
            ("not-contains", json!({"field": "sub1", "op": "notContains", "value": "bad"}), "sub1=good", "sub1=so-bad"),
            (
                "starts-with",
                json!({"field": "query.kw", "op": "startsWith", "value": "shoe"}),
                "kw=shoes",
                "kw=red-shoes",
            ),
            (
                "ends-with",
                json!({"field": "sourceClickId", "op": "endsWith", "value": "-vip"}),
                "source_click_id=t1-vip",
                "source_click_id=t1-vip-no",
            ),
            ("gte", json!({"field": "cost", "op": "gte", "value": 0.5}), "cost=0.50", "cost=0.49"),
            ("lte", json!({"field": "asn", "op": "lte", "value": 1000}), "asn=1000", "geo_asn=AS1001"),
            ("not-exists", json!({"field": "sub3", "op": "notExists"}), "sub2=x", "sub3=x"),
            (
                "depth",
                json!({"field": "trafficbackDepth", "op": "gte", "value": 1}),
                "trafficback_depth=1",
                "trafficback_depth=0",
            ),
            ("currency", json!({"field": "currency", "op": "eq", "value": "EUR"}), "currency=EUR", "currency=USD"),
        ];
        let c = campaign(&r.api, "operators", json!({}));
        for (i, (case, rule, _, _)) in cases.iter().enumerate() {
            let d = destination(&r.api, &format!("op-{case}"), json!({}));
            let conditions = json!({"all": [{"field": "query.case", "op": "eq", "value": case}, rule]});
            stream(&r.api, &c, i as u32 + 1, "waterfall", &[&d], json!({"conditions": conditions}));
        }
        r.go_live();
        for (case, rule, yes, no) in &cases {
            assert_eq!(r.routed(&format!("/c/operators?case={case}&{yes}")), format!("op-{case}.example"), "{rule}");
            assert_eq!(r.routed(&format!("/c/operators?case={case}&{no}")), "tb.example", "{rule} with {no}");
        }
    }

    /// > Destination availability, in this order: manual status -> health -> schedule -> caps -> anti-repeat.
    ///
    /// A waterfall of a paused destination, one closed by its schedule, one capped at one click and an open
    /// one, with anti-repeat by `sub1`: the capped one gets the first click, then the open one; anti-repeat
    /// then chooses among what the earlier checks left, so the first visitor has seen it all while a new one
    /// still gets the open destination.
    #[test]
    fn paused_closed_and_capped_destinations_are_skipped_then_anti_repeat_picks_from_the_rest() {
        let r = running();
        let closed_day = Utc::now().weekday().succ().succ().to_string().to_lowercase();
        let schedule =
            json!({"timeZone": "UTC", "windows": [{"weekdays": [closed_day], "start": "00:00", "end": "24:00"}]});
        let paused = destination(&r.api, "avail-paused", json!({"manualStatus": "paused"}));
        let closed = destination(&r.api, "avail-closed", json!({"schedule": schedule}));
        let capped = destination(&r.api, "avail-capped", json!({"caps": {"dailyClicks": 1}}));
        let open = destination(&r.api, "avail-open", json!({}));
        let c = campaign(&r.api, "availability", json!({}));
        let anti = json!({"enabled": true, "userKey": "sub1", "windowHours": 1, "exhaustedMode": "noDestination"});
        stream(&r.api, &c, 1, "waterfall", &[&paused, &closed, &capped, &open], json!({"antiRepeat": anti}));
        r.go_live();
        assert_eq!(r.routed("/c/availability?sub1=v1"), "avail-capped.example", "paused and closed are skipped");
        assert_eq!(r.routed("/c/availability?sub1=v1"), "avail-open.example", "the cap is reached");
        assert_eq!(r.routed("/c/availability?sub1=v1"), "tb.example", "v1 has seen every available destination");
        assert_eq!(r.routed("/c/availability?sub1=v2"), "avail-open.example", "v2 has not");
    }

    /// > Destination availability, in this order: manual status -> health -> …
    ///
    /// A destination whose health checks fail (its offer answers 503) is taken out of rotation, and the
    /// clicks go to the next one.
    #[test]
    fn a_destination_failing_its_health_checks_gets_no_more_clicks() {
        let r = running();
        let down = Recorder::start(503);
        let url = format!("http://{}/offer?cid={{clickId}}", down.addr);
        let check = json!({"enabled": true, "intervalSeconds": 5, "timeoutSeconds": 1});
        let sick = r.api.create("/destinations", json!({"name": "sick", "url": url, "healthCheck": check}));
        let well = destination(&r.api, "health-well", json!({}));
        let c = campaign(&r.api, "health", json!({}));
        stream(&r.api, &c, 1, "waterfall", &[&sick, &well], json!({}));
        r.go_live();
        assert_eq!(r.routed("/c/health"), down.addr.to_string(), "healthy until checked");
        let started = Instant::now();
        while r.routed("/c/health") != "health-well.example" {
            assert!(started.elapsed() < Duration::from_secs(40), "still routed to the failing offer");
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(down.requests().len() >= 3, "taken out after failed checks: {:?}", down.requests());
    }

    /// > Schedules: weekday windows with `HH:MM` start/end in a time zone, overnight windows (Mon 22:00 ->
    /// > Tue 02:00).
    ///
    /// In a zone where it is now between midnight and 1 a.m., yesterday's 22:00 -> 02:00 window is open and
    /// today's is not yet.
    #[test]
    fn an_overnight_window_is_open_after_midnight_on_the_day_after_it_starts() {
        let r = running();
        let now = Utc::now();
        let mut offset = (24 - now.hour() as i64) % 24;
        if offset > 14 {
            offset -= 24;
        }
        // Etc/GMT-N is N hours ahead of UTC.
        let zone = match offset {
            0 => "UTC".to_owned(),
            o if o > 0 => format!("Etc/GMT-{o}"),
            o => format!("Etc/GMT+{}", -o),
        };
        let local_day = (now + chrono::Duration::hours(offset)).weekday();
        let window = |day: chrono::Weekday| {
            let days = [day.to_string().to_lowercase()];
            json!({"timeZone": zone, "windows": [{"weekdays": days, "start": "22:00", "end": "02:00"}]})
        };
        let tonight = destination(&r.api, "night-today", json!({"schedule": window(local_day)}));
        let last_night = destination(&r.api, "night-yesterday", json!({"schedule": window(local_day.pred())}));
        let always = destination(&r.api, "night-always", json!({}));
        let c = campaign(&r.api, "overnight", json!({}));
        stream(&r.api, &c, 1, "waterfall", &[&tonight, &last_night, &always], json!({}));
        r.go_live();
        assert_eq!(r.routed("/c/overnight"), "night-yesterday.example", "local time in {zone} is past midnight");
    }

    /// > Caps on `clicks`, `cost`, `conversions` and `revenue`, each over a custom window in hours (1, 24, 168,
    /// > 72 …); a reached cap makes the destination unavailable.
    ///
    /// Clicks and their cost count at once: two clicks under a 2-click cap over 1 hour, two clicks of 0.60
    /// under a cost cap of 1.00 over 72 hours, then the next destination.
    #[test]
    fn click_and_cost_caps_send_clicks_on_once_reached() {
        let r = running();
        let cases = [
            ("cap-clicks", json!({"metric": "clicks", "limit": 2, "windowHours": 1}), ""),
            ("cap-cost", json!({"metric": "cost", "limit": "1.00", "windowHours": 72}), "cost=0.60"),
        ];
        for (key, rule, _) in &cases {
            let capped = destination(&r.api, &format!("{key}-a"), json!({"caps": {"rules": [rule]}}));
            let spare = destination(&r.api, &format!("{key}-b"), json!({}));
            let c = campaign(&r.api, key, json!({}));
            stream(&r.api, &c, 1, "waterfall", &[&capped, &spare], json!({}));
        }
        r.go_live();
        for (key, rule, query) in &cases {
            let path = format!("/c/{key}?{query}");
            let got: Vec<String> = (0..4).map(|_| r.routed(&path)).collect();
            let (a, b) = (format!("{key}-a.example"), format!("{key}-b.example"));
            assert_eq!(got, [a.as_str(), a.as_str(), b.as_str(), b.as_str()], "{rule}");
        }
    }

    /// > Caps on `clicks`, `cost`, `conversions` and `revenue`, each over a custom window in hours (1, 24, 168,
    /// > 72 …); a reached cap makes the destination unavailable.
    ///
    /// Conversions and revenue count from the reports: a conversion cap of 1 over 168 hours and a revenue
    /// cap of 5.00 over 24 hours take clicks until a postback reaches them, then the next destination does.
    #[test]
    fn conversion_and_revenue_caps_apply_once_a_postback_reaches_the_figures() {
        let r = running();
        network(&r.api, "caps-net", json!({}));
        let cases = [
            ("cap-conversions", json!({"metric": "conversions", "limit": 1, "windowHours": 168}), "1.00"),
            ("cap-revenue", json!({"metric": "revenue", "limit": "5.00", "windowHours": 24}), "5.00"),
        ];
        let mut campaigns = Vec::new();
        for (key, rule, _) in &cases {
            let capped = destination(&r.api, &format!("{key}-a"), json!({"caps": {"rules": [rule]}}));
            let spare = destination(&r.api, &format!("{key}-b"), json!({}));
            let c = campaign(&r.api, key, json!({}));
            stream(&r.api, &c, 1, "waterfall", &[&capped, &spare], json!({}));
            campaigns.push(c);
        }
        r.go_live();
        for (key, _, payout) in &cases {
            let id = r.click_id(&format!("/c/{key}"));
            assert_eq!(r.routed(&format!("/c/{key}")), format!("{key}-a.example"), "no conversion yet");
            r.converts(
                &format!("/postback/caps-net?clickid={id}&txid={key}-1&payout={payout}&token=caps-net-secret"),
                "accepted",
            );
        }
        for c in &campaigns {
            let report = r.overview_until(c, |m| m["conversions"] == 1);
            assert_eq!(report["conversions"], 1, "{report}");
        }
        figures_refreshed(r);
        for (key, rule, _) in &cases {
            assert_eq!(r.routed(&format!("/c/{key}")), format!("{key}-b.example"), "{rule} is reached");
        }
    }

    /// > Anti-repeat: user key chosen per stream (`sourceClickId`, `userAgent`, `sub1`…`sub10`, UTM fields,
    /// > `query.<param>`), a history window in hours, and an exhausted mode (`allowRepeat` | `noDestination`).
    ///
    /// Visitors told apart by `sub1` (all clicks come from one address): each sees both destinations in turn;
    /// then `noDestination` sends the visitor to trafficback while `allowRepeat` (keyed by `query.uid`) sends
    /// them round again.
    #[test]
    fn anti_repeat_by_user_key_sends_a_visitor_somewhere_new_until_exhausted() {
        let r = running();
        for (key, user_key, mode) in
            [("repeat-none", "sub1", "noDestination"), ("repeat-allow", "query.uid", "allowRepeat")]
        {
            let a = destination(&r.api, &format!("{key}-a"), json!({}));
            let b = destination(&r.api, &format!("{key}-b"), json!({}));
            let c = campaign(&r.api, key, json!({}));
            let anti = json!({"enabled": true, "userKey": user_key, "windowHours": 24, "exhaustedMode": mode});
            stream(&r.api, &c, 1, "waterfall", &[&a, &b], json!({"antiRepeat": anti}));
        }
        r.go_live();
        let seen = |path: &str| (0..3).map(|_| r.routed(path)).collect::<Vec<_>>();
        assert_eq!(
            seen("/c/repeat-none?sub1=v1"),
            ["repeat-none-a.example", "repeat-none-b.example", "tb.example"],
            "noDestination"
        );
        assert_eq!(r.routed("/c/repeat-none?sub1=v2"), "repeat-none-a.example", "another visitor");
        assert_eq!(
            seen("/c/repeat-allow?uid=u1"),
            ["repeat-allow-a.example", "repeat-allow-b.example", "repeat-allow-a.example"],
            "allowRepeat"
        );
    }

    /// > bestRoi: ROI over a configurable window, destinations with fewer than `minClicks` ignored, a fallback
    /// > strategy when data is thin.
    ///
    /// Figures come from real clicks (at 0.10 each) and a postback, fed to the two destinations through
    /// campaigns of their own: while `roi-y` has earned 5.00 on one click of the two `minClicks` asks for, it
    /// is not ranked and the fallback (waterfall) picks `roi-x`; once both have enough clicks, every click goes
    /// to `roi-y`, whose ROI is 24 against -1.
    #[test]
    fn best_roi_ignores_destinations_under_min_clicks_and_falls_back_then_picks_the_best() {
        let r = running();
        network(&r.api, "roi-net", json!({}));
        let x = destination(&r.api, "roi-x", json!({}));
        let y = destination(&r.api, "roi-y", json!({}));
        let cost = json!({"costModel": {"type": "cpc", "value": "0.10", "currency": "USD"}});
        let feed = |key: &str, d: &str| {
            let c = campaign(&r.api, key, cost.clone());
            stream(&r.api, &c, 1, "waterfall", &[d], json!({}));
            c
        };
        let (feed_x, feed_y) = (feed("roi-feed-x", &x), feed("roi-feed-y", &y));
        let c = campaign(&r.api, "best-roi", cost);
        let best = json!({"bestRoi": {"windowHours": 24, "minClicks": 2, "fallback": "waterfall"}});
        stream(&r.api, &c, 1, "bestRoi", &[&x, &y], best);
        r.go_live();
        let id = r.click_id("/c/roi-feed-y");
        r.converts(&format!("/postback/roi-net?clickid={id}&txid=roi-1&payout=5.00&token=roi-net-secret"), "accepted");
        r.overview_until(&feed_y, |m| m["conversions"] == 1 && m["clicks"] == 1);
        figures_refreshed(r);
        assert_eq!(r.routed("/c/best-roi"), "roi-x.example", "roi-y has 1 click of 2: not ranked, so the fallback");
        for feed in ["/c/roi-feed-y", "/c/roi-feed-x", "/c/roi-feed-x"] {
            r.click_id(feed);
        }
        r.overview_until(&feed_y, |m| m["clicks"] == 2);
        r.overview_until(&feed_x, |m| m["clicks"] == 2);
        r.overview_until(&c, |m| m["clicks"] == 1);
        figures_refreshed(r);
        let next: Vec<String> = (0..5).map(|_| r.routed("/c/best-roi")).collect();
        assert_eq!(next, ["roi-y.example"; 5], "ROI of roi-y is 24, of roi-x -1");
    }

    /// > bestRoi: … a fallback strategy when data is thin.
    ///
    /// Round robin, the usual fallback, keeps rotating when the configuration changes between two clicks (a
    /// change anywhere, here a new destination of another campaign).
    #[test]
    fn round_robin_keeps_rotating_across_a_configuration_change() {
        let r = running();
        let a = destination(&r.api, "rr-a", json!({}));
        let b = destination(&r.api, "rr-b", json!({}));
        let c = campaign(&r.api, "round-robin", json!({}));
        stream(&r.api, &c, 1, "roundRobin", &[&a, &b], json!({}));
        r.go_live();
        let first = r.routed("/c/round-robin");
        destination(&r.api, "rr-unrelated", json!({}));
        r.go_live();
        let second = r.routed("/c/round-robin");
        assert_ne!(first, second, "the second click goes to the other destination");
    }

    /// > Event producer stats for operators: queue capacity, queued, published, dropped, publish errors.
    ///
    /// The traffic port's `/metrics` shows the click log's capacity (2 GiB by default), records waiting,
    /// records appended and shipped, drops and ship errors; five clicks are appended and shipped.
    #[test]
    fn metrics_show_the_click_logs_capacity_queue_published_dropped_and_errors() {
        let r = running();
        offer(&r.api, "producer-stats", json!({}));
        r.go_live();
        let before = r.metrics(r.a.traffic);
        let appended_before = metric(&before, "traffoflex_clicklog_appended_total").expect("appended");
        for _ in 0..5 {
            r.click_id("/c/producer-stats");
        }
        let after = eventually(Duration::from_secs(10), "five clicks shipped", || {
            let m = r.metrics(r.a.traffic);
            let shipped = metric(&m, "traffoflex_clicklog_shipped_total")?;
            (shipped >= appended_before + 5.0).then_some(m)
        });
        assert_eq!(metric(&after, "traffoflex_clicklog_capacity_bytes"), Some(2_147_483_648.0), "{after}");
        assert!(metric(&after, "traffoflex_clicklog_appended_total") >= Some(appended_before + 5.0), "{after}");
        assert!(metric(&after, "traffoflex_clicklog_pending").is_some(), "{after}");
        assert_eq!(metric(&after, "traffoflex_clicklog_dropped_total"), Some(0.0), "{after}");
        assert_eq!(metric(&after, "traffoflex_clicklog_ship_errors_total"), Some(0.0), "{after}");
    }
}

mod postbacks {
    use super::*;

    struct Fixture {
        r: Running,
        /// The traffic sources' postback endpoint.
        source: Recorder,
    }

    fn fixture() -> &'static Fixture {
        static UP: OnceLock<Fixture> = OnceLock::new();
        UP.get_or_init(|| Fixture {
            source: Recorder::start(200),
            r: Running::start(&[
                "--outbound-allow-private",
                "--outbound-poll-interval-ms",
                "50",
                "--reload-interval-ms",
                "200",
                "--health-checks",
                "false",
                "--report-currency",
                "USD",
                "--currency-rates",
                "EUR=1.10",
            ]),
        })
    }

    /// > `GET /pb/{networkId}` with parameter aliases: click ID (`click_id`, `cid`, `subid`, `sub_id`),
    /// > transaction ID (`transaction_id`, `tx`, `tid`, `order_id`), payout (`payout`, `sum`, `amount`,
    /// > `revenue`), `currency`, `status`, `event_type`; secret in `secret`, `token` or `key`.
    ///
    /// Four postbacks, each naming everything differently, are four conversions with the payouts, currency
    /// and statuses they carried; a wrong secret under any of the three names is refused.
    #[test]
    fn pb_reads_every_mvp_alias_with_the_secret_in_secret_token_or_key() {
        let r = &fixture().r;
        network(&r.api, "alias-net", json!({}));
        let c = offer(&r.api, "pb-aliases", json!({}));
        r.go_live();
        let ids: Vec<String> = (0..4).map(|_| r.click_id("/c/pb-aliases")).collect();
        let s = "alias-net-secret";
        let sent = [
            format!(
                "click_id={}&transaction_id=al-1&payout=1&currency=EUR&status=approved&event_type=lead&secret={s}",
                ids[0]
            ),
            format!("cid={}&tx=al-2&sum=2&token={s}", ids[1]),
            format!("subid={}&tid=al-3&amount=4&status=pending&key={s}", ids[2]),
            format!("sub_id={}&order_id=al-4&revenue=8&token={s}", ids[3]),
        ];
        for q in &sent {
            r.converts(&format!("/pb/alias-net?{q}"), "accepted");
        }
        for (i, bad) in ["secret=wrong", "token=wrong", "key=wrong", "sub2=no-secret"].iter().enumerate() {
            let resp = r.postback(&format!("/pb/alias-net?cid={}&tx=al-bad-{i}&{bad}", ids[0]));
            assert_eq!(resp.status, 401, "{bad}: {resp:?}");
        }
        let report = r.overview_until(&c, |m| m["conversions"] == 3 && m["pendingConversions"] == 1);
        assert_eq!((report["conversions"].as_u64(), report["pendingConversions"].as_u64()), (Some(3), Some(1)));
        assert_eq!(dec(&report["revenue"]), num("11.10"), "1 EUR at 1.10 plus 2 and 8; pending is not revenue yet");
    }

    /// > `GET /pb/{networkId}` …
    ///
    /// The MVP's postback URLs name the network by its ID, so a network's ID works in `/pb/` as it does in
    /// `/api/postbacks`, beside its key.
    #[test]
    fn pb_takes_the_networks_id_as_the_mvps_urls_do() {
        let r = &fixture().r;
        let id = network(&r.api, "pb-by-id", json!({}));
        offer(&r.api, "pb-by-id", json!({}));
        r.go_live();
        let click = r.click_id("/c/pb-by-id");
        r.converts(&format!("/pb/{id}?click_id={click}&transaction_id=by-id-1&secret=pb-by-id-secret"), "accepted");
    }

    /// > `POST /api/postbacks` with form or JSON.
    ///
    /// A form naming the network by key and a JSON object naming it by ID are both conversions in the
    /// reports; the same JSON again is a duplicate.
    #[test]
    fn api_postbacks_takes_a_form_or_a_json_body() {
        let r = &fixture().r;
        let id = network(&r.api, "body-net", json!({}));
        let c = offer(&r.api, "pb-bodies", json!({}));
        r.go_live();
        let (a, b) = (r.click_id("/c/pb-bodies"), r.click_id("/c/pb-bodies"));
        let form = format!("network=body-net&click_id={a}&transaction_id=body-1&payout=3&token=body-net-secret");
        let sent = |content_type: &str, body: &[u8]| {
            let resp = send(r.a.postback, "POST", "/api/postbacks", &[], Some((content_type, body)));
            assert_eq!(resp.status, 200, "{resp:?}");
            resp.json()["status"].as_str().unwrap_or_default().to_owned()
        };
        assert_eq!(sent("application/x-www-form-urlencoded", form.as_bytes()), "accepted");
        let body = json!({"network_id": id, "click_id": b, "transaction_id": "body-2", "payout": "4",
                          "status": "approved", "secret": "body-net-secret"})
        .to_string();
        assert_eq!(sent("application/json", body.as_bytes()), "accepted");
        assert_eq!(sent("application/json", body.as_bytes()), "duplicate");
        // The MVP's form without a network: the secret names it.
        let c3 = r.click_id("/c/pb-bodies");
        let bare = format!("click_id={c3}&transaction_id=body-3&payout=5&secret=body-net-secret");
        assert_eq!(sent("application/x-www-form-urlencoded", bare.as_bytes()), "accepted");
        let unknown = send(
            r.a.postback,
            "POST",
            "/api/postbacks",
            &[],
            Some((
                "application/x-www-form-urlencoded",
                b"click_id=x&transaction_id=body-4&secret=nobodys-secret".as_slice(),
            )),
        );
        assert_eq!((unknown.status, unknown.json()["error"]["code"].as_str()), (400, Some("missingNetwork")));
        let report = r.overview_until(&c, |m| m["conversions"] == 3);
        assert_eq!((report["conversions"].as_u64(), dec(&report["revenue"])), (Some(3), num("12")), "{report}");
    }

    /// > An accepted conversion is durably saved before the response; attribution and analytics delivery are
    /// > retried in the background, so a click that arrives late never rejects a conversion.
    ///
    /// A postback sent right after its click (before the reports have the click) is accepted and is in the
    /// campaign's reports; repeats count once, and a status change (pending -> approved) updates it there.
    /// Durability across a stop is shown in `tests/up_e2e.rs`.
    #[test]
    fn an_accepted_conversion_is_in_the_reports_once_and_a_status_change_updates_it() {
        let r = &fixture().r;
        network(&r.api, "report-net", json!({}));
        let c = offer(&r.api, "pb-reports", json!({}));
        r.go_live();
        let id = r.click_id("/c/pb-reports");
        let pb = format!("/postback/report-net?clickid={id}&txid=rep-1&payout=6&token=report-net-secret&status=");
        let conversion = r.converts(&format!("{pb}pending"), "accepted");
        assert_eq!(r.converts(&format!("{pb}pending"), "duplicate"), conversion);
        let report = r.overview_until(&c, |m| m["pendingConversions"] == 1);
        assert_eq!((report["pendingConversions"].as_u64(), report["conversions"].as_u64()), (Some(1), Some(0)));
        assert_eq!(r.converts(&format!("{pb}approved"), "updated"), conversion);
        let report = r.overview_until(&c, |m| m["conversions"] == 1);
        assert_eq!((report["conversions"].as_u64(), report["pendingConversions"].as_u64()), (Some(1), Some(0)));
        assert_eq!(dec(&report["revenue"]), num("6"), "{report}");
        let rows = r.api.get(&format!("/reports/campaigns?campaignId={c}"));
        assert_eq!(
            (rows["rows"][0]["key"]["campaignId"].as_str(), &rows["rows"][0]["conversions"]),
            (Some(c.as_str()), &json!(1))
        );
    }

    /// > Click lookup behaviour configurable: fail-open or fail-closed.
    ///
    /// A click ID we never issued: a `failOpen` network records the conversion, a `failClosed` one refuses
    /// it (422 `unknownClick`) and still takes real clicks.
    #[test]
    fn fail_open_records_a_conversion_for_an_unknown_click_and_fail_closed_refuses_it() {
        let r = &fixture().r;
        network(&r.api, "lookup-open", json!({"clickLookup": "failOpen"}));
        network(&r.api, "lookup-closed", json!({"clickLookup": "failClosed"}));
        offer(&r.api, "pb-lookup", json!({}));
        r.go_live();
        let forged = "not-a-click-of-ours";
        r.converts(&format!("/postback/lookup-open?clickid={forged}&txid=lk-1&token=lookup-open-secret"), "accepted");
        let resp =
            r.postback(&format!("/postback/lookup-closed?clickid={forged}&txid=lk-1&token=lookup-closed-secret"));
        assert_eq!((resp.status, resp.json()["error"]["code"].as_str()), (422, Some("unknownClick")), "{resp:?}");
        let id = r.click_id("/c/pb-lookup");
        r.converts(&format!("/postback/lookup-closed?clickid={id}&txid=lk-2&token=lookup-closed-secret"), "accepted");
    }

    /// > Network presets (e.g. a preset for a popular network) with a link builder that writes the
    /// > destination URL and the postback URL to paste into the network.
    ///
    /// The generic preset applied, its destination URL used for the campaign's offer, and its postback URL
    /// filled in as the network would: the click converts and the conversion is in the reports.
    #[test]
    fn a_preset_network_takes_postbacks_at_the_url_its_link_builder_writes() {
        let r = &fixture().r;
        let presets = r.api.get("/network-presets");
        let ids: Vec<&str> =
            presets["items"].as_array().expect("items").iter().filter_map(|p| p["id"].as_str()).collect();
        assert!(ids.contains(&"generic"), "{presets}");
        let (status, applied) =
            r.api.call("POST", "/network-presets/generic/apply", Some(&json!({"key": "preset-net", "name": "Preset"})));
        assert_eq!(status, 201, "{applied}");
        let network = applied["affiliateNetwork"]["id"].as_str().expect("network id");
        let c = campaign(&r.api, "preset-campaign", json!({}));
        let base = format!("http://{}", r.a.postback);
        let links = r.api.get(&format!(
            "/affiliate-networks/{network}/links?baseUrl={}&offerUrl={}&campaignId={c}",
            enc(&base),
            enc("https://preset-offer.example/o?id=7")
        ));
        let destination_url = links["destinationUrl"].as_str().expect("destinationUrl");
        assert_eq!(destination_url, "https://preset-offer.example/o?id=7&subid={clickId}", "{links}");
        let d = r.api.create("/destinations", json!({"name": "preset offer", "url": destination_url}));
        stream(&r.api, &c, 1, "waterfall", &[&d], json!({}));
        r.go_live();
        let path = links["campaignPath"].as_str().expect("campaignPath");
        assert_eq!(path, "/c/preset-campaign");
        let resp = r.click(path);
        let id = resp.header("x-click-id").expect("X-Click-Id");
        assert_eq!(resp.location(), format!("https://preset-offer.example/o?id=7&subid={id}"));
        let postback_url = links["postbackUrl"].as_str().expect("postbackUrl");
        let filled = postback_url
            .strip_prefix(&base)
            .unwrap_or_else(|| panic!("{postback_url} is on {base}"))
            .replace("{subid}", id)
            .replace("{txid}", "preset-1")
            .replace("{payout}", "3.50")
            .replace("{currency}", "USD")
            .replace("{status}", "1");
        r.converts(&filled, "accepted");
        let report = r.overview_until(&c, |m| m["conversions"] == 1);
        assert_eq!((report["conversions"].as_u64(), dec(&report["revenue"])), (Some(1), num("3.50")), "{report}");
    }

    /// > Outbound postbacks: scoped to a traffic source and/or campaign …
    ///
    /// Two campaigns of one traffic source: one reports to the source's URL, the other to its own URL,
    /// which takes the place of the source's.
    #[test]
    fn outbound_postbacks_go_to_the_campaigns_url_else_to_its_traffic_sources() {
        let f = fixture();
        let (r, rec) = (&f.r, &f.source);
        let url = format!("http://{}/scope-source?tx={{transaction_id}}", rec.addr);
        let ts =
            r.api.create("/traffic-sources", json!({"key": "scope-src", "name": "Scope", "outboundPostbackUrl": url}));
        network(&r.api, "scope-net", json!({}));
        offer(&r.api, "scope-inherits", json!({"trafficSourceId": ts}));
        let own = format!("http://{}/scope-campaign?tx={{transaction_id}}", rec.addr);
        offer(&r.api, "scope-own", json!({"trafficSourceId": ts, "outboundPostbackUrl": own}));
        r.go_live();
        let mut conversions = Vec::new();
        for key in ["scope-inherits", "scope-own"] {
            let id = r.click_id(&format!("/c/{key}"));
            let pb = format!("/postback/scope-net?clickid={id}&txid={key}-1&token=scope-net-secret");
            conversions.push(r.converts(&pb, "accepted"));
        }
        let within = Duration::from_secs(10);
        rec.wait_for(within, "to the source", |q| q.target == "/scope-source?tx=scope-inherits-1");
        rec.wait_for(within, "to the campaign", |q| q.target == "/scope-campaign?tx=scope-own-1");
        let jobs = r.api.get(&format!("/outbound-postbacks?conversionId={}", conversions[1]));
        assert_eq!(jobs["total"], 1, "the campaign's URL instead of the source's, not both: {jobs}");
        assert!(!rec.requests().iter().any(|q| q.target == "/scope-source?tx=scope-own-1"));
    }

    /// > Outbound postbacks: … case-insensitive macros (`source_click_id`, `click_id`/`cid`, `conversion_id`,
    /// > `transaction_id`, `payout`/`sum`/`revenue`, `currency`, `status`, `event_type`, `network_id`,
    /// > `sub1`…`sub10`, `s1`…`s4`) …
    #[test]
    fn outbound_postback_macros_are_filled_whatever_their_case() {
        let f = fixture();
        let (r, rec) = (&f.r, &f.source);
        let url = format!(
            "http://{}/macros?a={{CLICK_ID}}&b={{cid}}&c={{Source_Click_Id}}&d={{SUB1}}&e={{s2}}&f={{Payout}}\
             &g={{SUM}}&h={{revenue}}&i={{Currency}}&j={{STATUS}}&k={{event_type}}&l={{Transaction_Id}}\
             &m={{conversion_id}}&n={{NETWORK_ID}}",
            rec.addr
        );
        let ts =
            r.api.create("/traffic-sources", json!({"key": "macro-src", "name": "Macros", "outboundPostbackUrl": url}));
        let network_id = network(&r.api, "macro-net", json!({}));
        let c = offer(&r.api, "outbound-macros", json!({"trafficSourceId": ts}));
        r.go_live();
        let id = r.click_id("/c/outbound-macros?sub1=alpha&sub2=beta%20gamma&source_click_id=src-77");
        // The click's facts (subs, the source's click ID) come from the reports' copy of the click.
        r.overview_until(&c, |m| m["clicks"] == 1);
        let pb = format!(
            "/postback/macro-net?clickid={id}&txid=macro-1&payout=2.5&currency=EUR&event_type=sale\
             &token=macro-net-secret"
        );
        let conversion = r.converts(&pb, "accepted");
        let got = rec.wait_for(Duration::from_secs(10), "to /macros", |q| q.target.starts_with("/macros?"));
        let want = [
            ("a", id.as_str()),
            ("b", id.as_str()),
            ("c", "src-77"),
            ("d", "alpha"),
            ("e", "beta gamma"),
            ("f", "2.5"),
            ("g", "2.5"),
            ("h", "2.5"),
            ("i", "EUR"),
            ("j", "approved"),
            ("k", "sale"),
            ("l", "macro-1"),
            ("m", conversion.as_str()),
            ("n", network_id.as_str()),
        ];
        for (param, value) in want {
            assert_eq!(got.param(param).as_deref(), Some(value), "{param} in {}", got.target);
        }
    }

    /// > Outbound postbacks: … only approved/sale/confirmed conversions sent …
    ///
    /// A pending conversion is not reported to the source; when the network approves it, it is.
    #[test]
    fn only_approved_conversions_are_reported_to_the_traffic_source() {
        let f = fixture();
        let (r, rec) = (&f.r, &f.source);
        let url = format!("http://{}/status?tx={{transaction_id}}&st={{status}}", rec.addr);
        let ts = r
            .api
            .create("/traffic-sources", json!({"key": "status-src", "name": "Status", "outboundPostbackUrl": url}));
        network(&r.api, "status-net", json!({}));
        offer(&r.api, "outbound-status", json!({"trafficSourceId": ts}));
        r.go_live();
        let (a, b) = (r.click_id("/c/outbound-status"), r.click_id("/c/outbound-status"));
        let pending = format!("/postback/status-net?clickid={a}&txid=st-1&status=pending&token=status-net-secret");
        let held = r.converts(&pending, "accepted");
        r.converts(&format!("/postback/status-net?clickid={b}&txid=st-2&token=status-net-secret"), "accepted");
        let within = Duration::from_secs(10);
        rec.wait_for(within, "for the approved one", |q| q.target == "/status?tx=st-2&st=approved");
        assert!(!rec.requests().iter().any(|q| q.target.starts_with("/status?tx=st-1")), "{:?}", rec.requests());
        let jobs = r.api.get(&format!("/outbound-postbacks?conversionId={held}"));
        assert_eq!(jobs["total"], 0, "nothing queued for a pending conversion: {jobs}");
        r.converts(&pending.replace("pending", "approved"), "updated");
        rec.wait_for(within, "once approved", |q| q.target == "/status?tx=st-1&st=approved");
    }

    /// > Outbound postbacks: … jobs persisted, unique per (conversion, template) … an `Idempotency-Key`
    /// > header; a delivery log of recent jobs in the admin UI.
    ///
    /// The source receives one request however often the network repeats the postback, with the job's ID as
    /// `Idempotency-Key`; the API's delivery log shows that job delivered on its first attempt with a 200.
    #[test]
    fn an_outbound_postback_carries_an_idempotency_key_and_is_in_the_delivery_log() {
        let f = fixture();
        let (r, rec) = (&f.r, &f.source);
        let url = format!("http://{}/log?tx={{transaction_id}}", rec.addr);
        let ts = r.api.create("/traffic-sources", json!({"key": "log-src", "name": "Log", "outboundPostbackUrl": url}));
        network(&r.api, "log-net", json!({}));
        offer(&r.api, "outbound-log", json!({"trafficSourceId": ts}));
        r.go_live();
        let id = r.click_id("/c/outbound-log");
        let pb = format!("/postback/log-net?clickid={id}&txid=log-1&token=log-net-secret");
        let conversion = r.converts(&pb, "accepted");
        r.converts(&pb, "duplicate");
        let got = rec.wait_for(Duration::from_secs(10), "to /log", |q| q.target == "/log?tx=log-1");
        let key = got.header("idempotency-key").expect("Idempotency-Key").to_owned();
        let jobs = eventually(Duration::from_secs(5), "the job shown delivered", || {
            let page = r.api.get(&format!("/outbound-postbacks?conversionId={conversion}"));
            (page["items"][0]["status"] == "delivered").then_some(page)
        });
        assert_eq!(jobs["total"], 1, "one job for the conversion, repeats included: {jobs}");
        let job = &jobs["items"][0];
        assert_eq!(job["id"].as_str(), Some(key.as_str()), "{job}");
        assert_eq!(job["url"].as_str(), Some(format!("http://{}/log?tx=log-1", rec.addr).as_str()));
        assert_eq!((job["attempts"].as_u64(), job["log"][0]["httpStatus"].as_u64()), (Some(1), Some(200)), "{job}");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(rec.requests().iter().filter(|q| q.target == "/log?tx=log-1").count(), 1, "sent once");
    }
}

mod users_and_operations {
    use super::*;

    const ADMIN_UI: &str = "http://admin.example.test";

    fn running() -> &'static Running {
        static UP: OnceLock<Running> = OnceLock::new();
        UP.get_or_init(|| {
            Running::start(&[
                "--otp-login",
                "log",
                "--log-format",
                "json",
                "--cors-origins",
                ADMIN_UI,
                "--health-checks",
                "false",
            ])
        })
    }

    fn register(r: &Running, email: &str) -> Value {
        let body = json!({"email": email, "password": "a-long-password-1", "name": email});
        let (status, user) = r.api.call("POST", "/auth/register", Some(&body));
        assert_eq!(status, 201, "{user}");
        user
    }

    fn login(r: &Running, email: &str) -> (u16, String, Value) {
        let body = json!({"email": email, "password": "a-long-password-1"});
        common::http(r.a.api, "POST", "/api/v1/auth/login", &[], Some(&body))
    }

    /// > Admin from environment, approved automatically; others wait for approval; …
    #[test]
    fn the_admin_from_the_environment_is_approved_and_logs_in() {
        let r = running();
        let me = r.api.get("/auth/me");
        assert_eq!(
            (me["user"]["email"].as_str(), me["user"]["status"].as_str(), me["user"]["role"].as_str()),
            (Some(ADMIN_EMAIL), Some("approved"), Some("admin")),
            "{me}"
        );
    }

    /// > … others wait for approval; …
    #[test]
    fn a_registered_user_logs_in_only_once_an_admin_approves() {
        let r = running();
        let user = register(r, "newcomer@example.org");
        assert_eq!(user["status"], "pending", "{user}");
        let (status, _, body) = login(r, "newcomer@example.org");
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("notApproved")), "{body}");
        let id = user["id"].as_str().expect("id");
        let (status, approved) = r.api.call("POST", &format!("/users/{id}/approve"), Some(&json!({})));
        assert_eq!((status, approved["status"].as_str()), (200, Some("approved")), "{approved}");
        let (status, raw, _) = login(r, "newcomer@example.org");
        assert_eq!(status, 200, "{raw}");
    }

    /// > … workspaces (owner scoping of every object and log).
    ///
    /// A user of another team sees none of this team's objects, not even by ID, and this team does not see
    /// theirs.
    #[test]
    fn a_user_of_another_team_does_not_see_this_teams_objects() {
        let r = running();
        let team = r.api.create("/teams", json!({"name": "Agency B"}));
        let user = register(r, "agency-b@example.org");
        let id = user["id"].as_str().expect("id");
        let (status, approved) =
            r.api.call("POST", &format!("/users/{id}/approve"), Some(&json!({"role": "manager", "teamId": team})));
        assert_eq!(status, 200, "{approved}");
        let (_, raw, body) = login(r, "agency-b@example.org");
        let other = ApiClient::from_login(r.a.api, &raw, &body);
        let ours = campaign(&r.api, "team-a-only", json!({}));
        let theirs = campaign(&other, "team-b-only", json!({}));
        let listed = other.get("/campaigns");
        assert_eq!((listed["total"].as_u64(), listed["items"][0]["id"].as_str()), (Some(1), Some(theirs.as_str())));
        assert_eq!(other.call("GET", &format!("/campaigns/{ours}"), None).0, 404);
        assert_eq!(r.api.call("GET", &format!("/campaigns/{theirs}"), None).0, 404);
        assert_eq!(r.api.get("/campaigns?key=team-b-only")["total"], 0);
        let (status, body) =
            other.call("PUT", &format!("/campaigns/{ours}"), Some(&json!({"key": "team-a-only", "name": "taken"})));
        assert_eq!(status, 404, "{body}");
    }

    /// > Optional passwordless login by e-mail one-time code (rate-limited, TTL, no resend while valid; a dev
    /// > mode that prints the code), beside passwords.
    ///
    /// With `--otp-login log` the code appears in the log; it logs in once, and no second code is sent while
    /// it is valid.
    #[test]
    fn a_login_code_printed_in_the_log_logs_in_once() {
        let r = running();
        let request = json!({"email": ADMIN_EMAIL});
        let (status, _, body) = common::http(r.a.api, "POST", "/api/v1/auth/otp/request", &[], Some(&request));
        assert_eq!(status, 202, "{body}");
        let code = eventually(Duration::from_secs(5), "the code in the log", || {
            r.up.stderr_lines().iter().find_map(|l| {
                let line: Value = serde_json::from_str(l).ok()?;
                (line["fields"]["email"] == ADMIN_EMAIL).then(|| line["fields"]["code"].as_str().map(str::to_owned))?
            })
        });
        let (status, _, body) = common::http(r.a.api, "POST", "/api/v1/auth/otp/request", &[], Some(&request));
        assert_eq!((status, body["error"]["code"].as_str()), (429, Some("codeAlreadySent")), "{body}");
        let verify = json!({"email": ADMIN_EMAIL, "code": code});
        let (status, raw, body) = common::http(r.a.api, "POST", "/api/v1/auth/otp/verify", &[], Some(&verify));
        assert_eq!(status, 200, "{raw}");
        let by_code = ApiClient::from_login(r.a.api, &raw, &body);
        assert_eq!(by_code.get("/auth/me")["user"]["email"], ADMIN_EMAIL);
        let (status, _, body) = common::http(r.a.api, "POST", "/api/v1/auth/otp/verify", &[], Some(&verify));
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalidCode")), "used once: {body}");
    }

    /// > `/healthz` (liveness), `/readyz` (dependencies and config loaded), …
    #[test]
    fn every_port_answers_healthz_and_readyz() {
        let r = running();
        for (role, addr) in [("api", r.a.api), ("traffic", r.a.traffic), ("postback", r.a.postback)] {
            for path in ["/healthz", "/readyz", "/metrics"] {
                let resp = send(addr, "GET", path, &[], None);
                assert_eq!(resp.status, 200, "{role} {path}: {resp:?}");
            }
        }
    }

    /// > … JSON logs, …
    ///
    /// With `--log-format json` every line on standard error is one JSON object with a level and a message.
    #[test]
    fn json_logs_are_one_object_per_line() {
        let r = running();
        let lines = r.up.stderr_lines();
        assert!(lines.iter().any(|l| l.contains("bootstrap admin created")), "{lines:?}");
        for line in &lines {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
        }
    }

    /// > … request IDs, …
    ///
    /// The API answers with the caller's `X-Request-Id`, or a new one, and its log lines for the request carry
    /// it.
    #[test]
    fn request_ids_are_answered_and_logged() {
        let r = running();
        let resp = send(r.a.api, "GET", "/api/v1/auth/me", &[("X-Request-Id", "parity-request-42")], None);
        assert_eq!(resp.header("x-request-id"), Some("parity-request-42"), "{resp:?}");
        let one = send(r.a.api, "GET", "/api/v1/auth/me", &[], None);
        let two = send(r.a.api, "GET", "/api/v1/auth/me", &[], None);
        let (one, two) = (one.header("x-request-id").expect("an ID"), two.header("x-request-id").expect("an ID"));
        assert!(one != two && one.len() >= 32, "{one} {two}");
        eventually(Duration::from_secs(5), "a log line of the request", || {
            r.up.stderr_lines().iter().any(|l| l.contains("\"request_id\":\"parity-request-42\"")).then_some(())
        });
    }

    /// > … CORS settings for a separately hosted admin UI.
    #[test]
    fn cors_lets_the_configured_admin_ui_in_and_no_other_origin() {
        let r = running();
        let preflight = |origin: &str| {
            let headers = [("Origin", origin), ("Access-Control-Request-Method", "POST")];
            send(r.a.api, "OPTIONS", "/api/v1/campaigns", &headers, None)
        };
        let allowed = preflight(ADMIN_UI);
        assert_eq!(allowed.header("access-control-allow-origin"), Some(ADMIN_UI), "{allowed:?}");
        assert_eq!(allowed.header("access-control-allow-credentials"), Some("true"), "{allowed:?}");
        let other = preflight("http://elsewhere.example");
        assert_eq!(other.header("access-control-allow-origin"), None, "{other:?}");
        let read = send(r.a.api, "GET", "/api/v1/auth/me", &[("Origin", ADMIN_UI)], None);
        assert_eq!(read.header("access-control-allow-origin"), Some(ADMIN_UI), "{read:?}");
        let exposed = read.header("access-control-expose-headers").unwrap_or_default().to_ascii_lowercase();
        assert!(exposed.contains("x-request-id"), "{read:?}");
    }

    /// > List endpoints return totals for pagination; …
    #[test]
    fn lists_return_the_total_over_all_pages() {
        let r = running();
        for i in 1..=3 {
            campaign(&r.api, &format!("paged-{i}"), json!({"status": "paused"}));
        }
        let first = r.api.get("/campaigns?status=paused&limit=2");
        assert_eq!((first["total"].as_u64(), first["items"].as_array().map(Vec::len)), (Some(3), Some(2)), "{first}");
        let cursor = first["nextCursor"].as_str().expect("nextCursor");
        let second = r.api.get(&format!("/campaigns?status=paused&limit=2&cursor={}", enc(cursor)));
        assert_eq!(
            (second["total"].as_u64(), second["items"].as_array().map(Vec::len)),
            (Some(3), Some(1)),
            "{second}"
        );
        assert!(second["nextCursor"].is_null(), "{second}");
    }

    /// > … report group fields come from a whitelist; time zones validated.
    #[test]
    fn reports_group_only_by_known_fields_and_take_only_real_time_zones() {
        let r = running();
        for group in ["campaigns", "streams", "destinations", "traffic-sources", "countries", "sub1"] {
            let report = r.api.get(&format!("/reports/{group}?tz=Europe/Berlin"));
            assert!(report["rows"].is_array() && report["totals"].is_object(), "{group}: {report}");
        }
        let (status, body) = r.api.call("GET", "/reports/passwordHash", None);
        assert_eq!(status, 404, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap_or_default().contains("campaigns"),
            "names the groups: {body}"
        );
        let (status, body) = r.api.call("GET", "/reports/overview?tz=Mars/Olympus_Mons", None);
        assert_eq!((status, body["error"]["fields"][0]["path"].as_str()), (422, Some("tz")), "{body}");
    }
}
