//! The analytics contract's fixture — one fixed set of events with known numbers — and the harness that runs
//! each case on SQLite (a temp file) and on ClickHouse (a fresh database, dropped afterwards), both the oldest
//! release supported and a current one.
//!
//! The events, in UTC (clicks k*, conversions v*; campaign camp-b is team t2, the others t1):
//!
//! | id | time (UTC)  | campaign | stream | dest | source | country | sub1 | cost | unique | note |
//! |----|-------------|----------|--------|------|--------|---------|------|------|--------|------|
//! | k0 | 22 10:00    | camp-b   | s-b1   | d3   | ts2    | FR      | x    | 1.00 | yes    | before the range |
//! | k1 | 23 10:00    | camp-a   | s-a1   | d1   | ts1    | DE      | x    | 0.05 | yes    | replayed |
//! | k2 | 23 12:30    | camp-a   | s-a1   | d2   | ts1    | US      | y    | 0.05 | no     | |
//! | k3 | 23 23:30    | camp-b   | s-b1   | d3   | ts2    | IN      | x    | 0.10 | yes    | 24th in Kolkata |
//! | k4 | 24 03:00    | camp-a   | s-a2   | d1   | ts1    | DE      |      | 0.05 | yes    | 23rd in Los Angeles |
//! | k5 | 24 15:00    | camp-a   |        |      | ts1    | US      |      | 0.05 | yes    | trafficback |
//! | k6 | 24 16:00    | camp-b   | s-b1   | d3   | ts2    | IN      | ""   | 0.10 | yes    | bot, sub2 = z |
//! | k7 | 26 09:00    | camp-a   | s-a1   | d1   | ts1    | DE      | x    | 0.05 | yes    | |
//! | k8 | 26 10:00    | camp-c   | s-c1   | d2   | ts2    | US      | y    | 0    | yes    | |
//! | k9 | 27 00:00    | camp-a   | s-a2   | d2   | ts1    | DE      |      | 0.05 | yes    | after the range; 26th in LA |
//!
//! | id | time (UTC) | click | campaign | status | revenue | note |
//! |----|------------|-------|----------|--------|---------|------|
//! | v1 | 23 11:00   | k1    | camp-a   | approved | 2.00 | replayed |
//! | v2 | 23 13:00   | k2    | camp-a   | pending r1 -> approved r2 | 1.50 | r1 replayed after r2 |
//! | v3 | 24 04:00   | k4    | camp-a   | rejected | 3.00 | 23rd in LA |
//! | v4 | 24 17:00   | k6    | camp-b   | pending  | 5.00 | |
//! | v5 | 26 11:00   | k8    | camp-c   | approved | 1.00 | |
//! | v6 | 24 15:30   | k5    | camp-a   | approved | 0.40 | from the trafficback click |
//! | v7 | 26 12:00   | —     | —        | approved | 0.60 | unattributed |
//! | v8 | 23 09:00   | k0    | camp-b   | approved | 0.50 | its click is before the range |
//!
//! Postback logs (network n1 is team t1, n2 is team t2):
//!
//! | id | time (UTC) | network | outcome   | click | transaction | note |
//! |----|------------|---------|-----------|-------|-------------|------|
//! | p0 | 22 23:00   | n1      | accepted  | k0    | t8          | before the range; 23rd in Kolkata |
//! | p1 | 23 10:05   | n1      | accepted  | k1    | t1          | replayed |
//! | p2 | 23 13:05   | n1      | updated   | k2    | t2          | |
//! | p3 | 24 04:05   | n1      | rejected  |       |             | 23rd in Los Angeles |
//! | p4 | 24 17:05   | n2      | accepted  | k6    | t4          | |
//! | p5 | 24 17:05   | n2      | duplicate | k6    | t4          | same second as p4 |
//! | p6 | 26 11:05   | n2      | accepted  | k8    | t5          | |
//! | p7 | 26 23:30   | n1      | error     |       | t9          | 27th in Kolkata |
//! | p8 | 27 00:30   | n1      | accepted  | k9    | t10         | after the range; 26th in Los Angeles |

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate};
use rust_decimal::Decimal;
use traffoflex_core::analytics::reports::Metrics;
use traffoflex_core::analytics::rows::IngestionErrorRow;
use traffoflex_core::analytics::{Analytics, ClickHouse, SqliteAnalytics};
use traffoflex_core::events::{
    ClickEvent, ConversionEvent, ConversionStatus, Event, HealthEvent, PostbackLogEvent, UnixMillis,
};
use traffoflex_core::testenv;

pub type Backend = Arc<dyn Analytics>;

pub fn ms(rfc3339: &str) -> UnixMillis {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis()
}

/// `2025-11-DD` at `hh:mm` UTC.
fn nov(day_time: &str) -> UnixMillis {
    let (day, time) = day_time.split_once(' ').unwrap();
    ms(&format!("2025-11-{day}T{time}:00Z"))
}

pub fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

pub fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Expected metrics; profit is revenue - cost.
#[allow(clippy::too_many_arguments)]
pub fn m(
    clicks: u64,
    unique: u64,
    conversions: u64,
    pending: u64,
    rejected: u64,
    revenue: &str,
    cost: &str,
    roi: Option<&str>,
) -> Metrics {
    Metrics {
        clicks,
        unique_clicks: unique,
        conversions,
        pending_conversions: pending,
        rejected_conversions: rejected,
        revenue: dec(revenue),
        cost: dec(cost),
        profit: dec(revenue) - dec(cost),
        roi: roi.map(dec),
    }
}

fn team(campaign: &str) -> String {
    if campaign == "camp-b" { "t2".into() } else { "t1".into() }
}

#[allow(clippy::too_many_arguments)]
fn click(
    id: &str,
    at: &str,
    campaign: &str,
    stream: &str,
    dest: &str,
    source: &str,
    country: &str,
    subs: &[&str],
    cost: &str,
    unique: bool,
) -> ClickEvent {
    ClickEvent {
        click_id: id.into(),
        ts: nov(at),
        campaign_id: campaign.into(),
        campaign_key: format!("key-{campaign}"),
        stream_id: stream.into(),
        destination_id: dest.into(),
        traffic_source_id: source.into(),
        team_id: team(campaign),
        country: country.into(),
        subs: subs.iter().map(|s| (*s).to_owned()).collect(),
        cost: dec(cost),
        currency: "USD".into(),
        is_unique: unique,
        ..Default::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn conversion(
    tx: &str,
    at: &str,
    revision: u64,
    click: Option<&ClickEvent>,
    status: ConversionStatus,
    revenue: &str,
) -> ConversionEvent {
    let c = click.cloned().unwrap_or_default();
    ConversionEvent {
        conversion_id: format!("conv-{tx}"),
        ts: nov(at),
        revision,
        network_id: if tx < "t4" { "n1".into() } else { "n2".into() },
        transaction_id: tx.into(),
        click_id: c.click_id.clone(),
        click_ts: c.ts,
        status,
        payout: dec(revenue),
        currency: "USD".into(),
        revenue: dec(revenue),
        campaign_id: c.campaign_id.clone(),
        stream_id: c.stream_id.clone(),
        destination_id: c.destination_id.clone(),
        traffic_source_id: c.traffic_source_id.clone(),
        team_id: if c.campaign_id.is_empty() { String::new() } else { team(&c.campaign_id) },
        attributed: click.is_some(),
    }
}

#[allow(clippy::too_many_arguments)]
fn check(
    id: &str,
    at: &str,
    dest: &str,
    healthy: bool,
    changed: bool,
    status: u16,
    latency: u32,
    error: &str,
) -> Event {
    Event::DestinationHealth(HealthEvent {
        id: id.into(),
        ts: nov(at),
        destination_id: dest.into(),
        team_id: if dest == "d2" { "t2".into() } else { "t1".into() },
        healthy,
        changed,
        http_status: status,
        latency_millis: latency,
        url: format!("https://{dest}.example/health"),
        error: error.into(),
    })
}

/// A postback log of the fixture.
pub fn postback(id: &str, at: &str, network: &str, outcome: &str, click: &str, tx: &str) -> PostbackLogEvent {
    let status = match outcome {
        "rejected" => 403,
        "error" => 500,
        _ => 200,
    };
    PostbackLogEvent {
        id: id.into(),
        ts: nov(at),
        network_id: network.into(),
        network_key: format!("key-{network}"),
        team_id: if network == "n2" { "t2".into() } else { "t1".into() },
        outcome: outcome.into(),
        http_status: status,
        latency_micros: 1500,
        click_id: click.into(),
        transaction_id: tx.into(),
        conversion_id: if tx.is_empty() { String::new() } else { format!("conv-{tx}") },
        remote_ip: "203.0.113.7".into(),
        error: if status == 200 { String::new() } else { format!("{outcome} by the fixture") },
        request: format!("GET clickid={click}&txid={tx}&token=[redacted]"),
    }
}

fn postbacks() -> Vec<PostbackLogEvent> {
    vec![
        postback("p0", "22 23:00", "n1", "accepted", "k0", "t8"),
        postback("p1", "23 10:05", "n1", "accepted", "k1", "t1"),
        postback("p2", "23 13:05", "n1", "updated", "k2", "t2"),
        postback("p3", "24 04:05", "n1", "rejected", "", ""),
        postback("p4", "24 17:05", "n2", "accepted", "k6", "t4"),
        postback("p5", "24 17:05", "n2", "duplicate", "k6", "t4"),
        postback("p6", "26 11:05", "n2", "accepted", "k8", "t5"),
        postback("p7", "26 23:30", "n1", "error", "", "t9"),
        postback("p8", "27 00:30", "n1", "accepted", "k9", "t10"),
    ]
}

/// The fixture's events in three batches: the first, then replays and the status change, then a late replay.
pub fn batches() -> [Vec<Event>; 3] {
    use ConversionStatus::{Approved, Pending, Rejected};
    let k0 = click("k0", "22 10:00", "camp-b", "s-b1", "d3", "ts2", "FR", &["x"], "1.00", true);
    let k1 = click("k1", "23 10:00", "camp-a", "s-a1", "d1", "ts1", "DE", &["x"], "0.05", true);
    let k2 = click("k2", "23 12:30", "camp-a", "s-a1", "d2", "ts1", "US", &["y"], "0.05", false);
    let k3 = click("k3", "23 23:30", "camp-b", "s-b1", "d3", "ts2", "IN", &["x"], "0.10", true);
    let k4 = click("k4", "24 03:00", "camp-a", "s-a2", "d1", "ts1", "DE", &[], "0.05", true);
    let k5 = ClickEvent {
        trafficback_depth: 0,
        ..click("k5", "24 15:00", "camp-a", "", "", "ts1", "US", &[], "0.05", true)
    };
    let k6 = ClickEvent {
        is_bot: true,
        ..click("k6", "24 16:00", "camp-b", "s-b1", "d3", "ts2", "IN", &["", "z"], "0.10", true)
    };
    let k7 = click("k7", "26 09:00", "camp-a", "s-a1", "d1", "ts1", "DE", &["x"], "0.05", true);
    let k8 = click("k8", "26 10:00", "camp-c", "s-c1", "d2", "ts2", "US", &["y"], "0", true);
    let k9 = click("k9", "27 00:00", "camp-a", "s-a2", "d2", "ts1", "DE", &[], "0.05", true);
    let v1 = conversion("t1", "23 11:00", 1, Some(&k1), Approved, "2.00");
    let v2_pending = conversion("t2", "23 13:00", 1, Some(&k2), Pending, "1.50");
    let v2_approved = conversion("t2", "23 13:00", 2, Some(&k2), Approved, "1.50");
    let v3 = conversion("t3", "24 04:00", 1, Some(&k4), Rejected, "3.00");
    let v4 = conversion("t4", "24 17:00", 1, Some(&k6), Pending, "5.00");
    let v5 = conversion("t5", "26 11:00", 1, Some(&k8), Approved, "1.00");
    let v6 = conversion("t6", "24 15:30", 1, Some(&k5), Approved, "0.40");
    let v7 = conversion("t7", "26 12:00", 1, None, Approved, "0.60");
    let v8 = conversion("t8", "23 09:00", 1, Some(&k0), Approved, "0.50");
    let logs = postbacks();
    let mut first = vec![
        Event::Click(k0),
        Event::Click(k1.clone()),
        Event::Click(k2),
        Event::Click(k3),
        Event::Click(k4),
        Event::Trafficback(k5),
        Event::Click(k6),
        Event::Click(k7),
        Event::Click(k8),
        Event::Click(k9),
        Event::Conversion(v1.clone()),
        Event::Conversion(v2_pending.clone()),
        Event::Conversion(v3),
        Event::Conversion(v4),
        Event::Conversion(v5),
        Event::Conversion(v6),
        Event::Conversion(v7),
        Event::Conversion(v8),
        check("h1", "24 10:00", "d1", true, false, 200, 100, ""),
        check("h2", "24 11:00", "d1", false, true, 500, 300, "HTTP 500"),
        check("h3", "24 12:00", "d1", true, true, 200, 200, ""),
        check("h4", "25 10:00", "d2", false, true, 0, 5000, "timeout"),
        check("h6", "25 10:00", "d2", true, true, 200, 1000, ""),
        check("h5", "28 10:00", "d2", false, true, 503, 10, "after the range"),
    ];
    first.extend(logs.iter().cloned().map(Event::PostbackLog));
    let second = vec![
        Event::PostbackLog(logs[1].clone()),
        Event::Click(k1),
        Event::Conversion(v1),
        Event::Conversion(v2_approved),
        check("h2", "24 11:00", "d1", false, true, 500, 300, "HTTP 500"),
    ];
    let third = vec![Event::Conversion(v2_pending)];
    [first, second, third]
}

/// Ingestion errors: three in the range (e1 stored twice, the second time later), one before it.
pub fn ingestion_errors() -> [Vec<IngestionErrorRow>; 2] {
    let row = |at: &str, topic: &str, partition: i32, offset: i64| {
        IngestionErrorRow::new(nov(at), topic, partition, offset, format!("bad {topic}/{offset}"), b"not json")
    };
    [
        vec![
            row("24 09:00", "traffoflex.clicks", 0, 10),
            row("25 08:00", "traffoflex.conversions", 1, 5),
            row("25 08:00", "traffoflex.clicks", 2, 7),
            row("20 08:00", "traffoflex.clicks", 0, 1),
        ],
        vec![row("24 09:05", "traffoflex.clicks", 0, 10)],
    ]
}

/// Stores the whole fixture, batch by batch.
pub async fn seed(a: &Backend) {
    for batch in batches() {
        a.insert_events(batch).await.unwrap();
    }
    for rows in ingestion_errors() {
        a.insert_ingestion_errors(&rows).await.unwrap();
    }
}

pub async fn sqlite() -> (Backend, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let a = SqliteAnalytics::open(&dir.path().join("analytics.sqlite")).await.unwrap();
    (Arc::new(a), dir)
}

/// A migrated ClickHouse database of its own on the oldest release supported (18.16 in CI), or `None` (skip)
/// when no test server is configured.
pub async fn clickhouse() -> Option<ClickHouse> {
    clickhouse_on(testenv::clickhouse_url()?).await
}

/// The same on a current ClickHouse release (chDB behind `scripts/chdb-shim.py` in CI).
pub async fn clickhouse_current() -> Option<ClickHouse> {
    clickhouse_on(testenv::clickhouse_current_url()?).await
}

async fn clickhouse_on(url: String) -> Option<ClickHouse> {
    let ch = ClickHouse::new(&url, &testenv::unique_name("tf_analytics"));
    ch.migrate().await.unwrap();
    Some(ch)
}

/// Runs one case on its own database and drops the database afterwards, also when the case fails.
pub async fn on_clickhouse<F: Future<Output = ()>>(ch: ClickHouse, case: impl FnOnce(Backend) -> F) {
    use futures::FutureExt;
    let outcome = std::panic::AssertUnwindSafe(case(Arc::new(ch.clone()))).catch_unwind().await;
    let dropped = ch.drop_database().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    dropped.unwrap();
}

/// One `#[tokio::test]` per case and backend: `sqlite::case`, `clickhouse::case` (the oldest ClickHouse release
/// supported) and `clickhouse_current::case` (a current release), all with the same client.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (a, _dir) = $crate::analytics_support::sqlite().await;
                    super::$case(a).await;
                }
            )*
        }
        mod clickhouse {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(ch) = $crate::analytics_support::clickhouse().await else { return };
                    $crate::analytics_support::on_clickhouse(ch, super::$case).await;
                }
            )*
        }
        mod clickhouse_current {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(ch) = $crate::analytics_support::clickhouse_current().await else { return };
                    $crate::analytics_support::on_clickhouse(ch, super::$case).await;
                }
            )*
        }
    };
}
