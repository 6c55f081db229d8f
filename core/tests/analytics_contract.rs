//! The `Analytics` contract: one suite, written once against `Arc<dyn Analytics>`, run on SQLite (a temp file)
//! and on ClickHouse (a fresh database per test, dropped at the end) — twice: on the oldest release supported
//! (`TRAFFOFLEX_TEST_CLICKHOUSE_URL`, 18.16 in CI) and on a current one (`TRAFFOFLEX_TEST_CLICKHOUSE_CURRENT_URL`,
//! chDB behind `scripts/chdb-shim.py` in CI), with the same client and the same SQL. Every case asserts exact
//! numbers from the fixture in `analytics_support` (its table lists the events), so every backend is held to the
//! same answers.

#[macro_use]
mod analytics_support;

use std::collections::BTreeMap;

use analytics_support::{Backend, date, dec, m, ms, postback, seed};
use chrono_tz::{America::Los_Angeles, Asia::Kolkata};
use serde_json::json;
use traffoflex_core::analytics::reports::MAX_PAGE;
use traffoflex_core::analytics::reports::{Day, GroupBy, Grouped, Metrics};
use traffoflex_core::analytics::{AnalyticsError, PostbackLogFilter, PostbackLogPage, ReportQuery};
use traffoflex_core::events::{ClickEvent, Event};

/// The fixture's range: 2025-11-23 ..= 2025-11-26 (the 25th has no events).
fn range() -> ReportQuery {
    ReportQuery::new(date("2025-11-23"), date("2025-11-26"))
}

fn total() -> Metrics {
    m(8, 7, 6, 1, 1, "6.00", "0.45", Some("12.3333"))
}

fn days(report: &[Day]) -> Vec<(String, Metrics)> {
    report.iter().map(|d| (d.date.to_string(), d.metrics.clone())).collect()
}

fn expect_days(rows: &[(&str, Metrics)]) -> Vec<(String, Metrics)> {
    rows.iter().map(|(d, m)| ((*d).to_owned(), m.clone())).collect()
}

/// Rows as (key value, metrics), in the report's order.
fn rows(g: &Grouped, by: GroupBy) -> Vec<(String, Metrics)> {
    for r in &g.rows {
        assert_eq!(r.key.keys().collect::<Vec<_>>(), vec![by.key_name()], "one key field per row");
    }
    g.rows.iter().map(|r| (r.key_value(by.key_name()).to_owned(), r.metrics.clone())).collect()
}

async fn overview_counts_each_event_once(a: Backend) {
    seed(&a).await;
    // Replays (k1, v1, h2), the late pending revision of v2, and events outside the range change nothing.
    assert_eq!(a.overview(&range()).await.unwrap(), total());
    // Storing everything again changes nothing either.
    seed(&a).await;
    assert_eq!(a.overview(&range()).await.unwrap(), total());
    let one_day = ReportQuery::new(date("2025-11-25"), date("2025-11-25"));
    assert_eq!(a.overview(&one_day).await.unwrap(), m(0, 0, 0, 0, 0, "0", "0", None), "roi is null at zero cost");
}

async fn daily_fills_missing_days(a: Backend) {
    seed(&a).await;
    let report = a.daily(&range()).await.unwrap();
    assert_eq!(
        days(&report),
        expect_days(&[
            ("2025-11-23", m(3, 2, 3, 0, 0, "4.00", "0.20", Some("19"))),
            ("2025-11-24", m(3, 3, 1, 1, 1, "0.40", "0.20", Some("1"))),
            ("2025-11-25", m(0, 0, 0, 0, 0, "0", "0", None)),
            ("2025-11-26", m(2, 2, 2, 0, 0, "1.60", "0.05", Some("31"))),
        ])
    );
    // Days before and after the data are there too, as zeros.
    let wide = a.daily(&ReportQuery::new(date("2025-11-01"), date("2025-11-30"))).await.unwrap();
    assert_eq!(wide.len(), 30);
    assert_eq!(wide[0].date, date("2025-11-01"));
    assert_eq!(wide[0].metrics, Metrics::default());
    assert_eq!(wide[21].metrics, m(1, 1, 0, 0, 0, "0", "1.00", Some("-1")), "k0 on the 22nd");
}

async fn grouped_by_campaign_stream_destination(a: Backend) {
    seed(&a).await;
    let q = range();
    let g = a.grouped(&q, GroupBy::Campaign).await.unwrap();
    assert_eq!(g.totals, total());
    assert_eq!(
        rows(&g, GroupBy::Campaign),
        expect_days(&[
            ("camp-a", m(5, 4, 3, 0, 1, "3.90", "0.25", Some("14.6"))),
            ("camp-b", m(2, 2, 1, 1, 0, "0.50", "0.20", Some("1.5"))),
            ("camp-c", m(1, 1, 1, 0, 0, "1.00", "0", None)),
            ("", m(0, 0, 1, 0, 0, "0.60", "0", None)),
        ])
    );
    let g = a.grouped(&q, GroupBy::Stream).await.unwrap();
    assert_eq!(g.totals, total());
    assert_eq!(
        rows(&g, GroupBy::Stream),
        expect_days(&[
            ("s-a1", m(3, 2, 2, 0, 0, "3.50", "0.15", Some("22.3333"))),
            ("s-b1", m(2, 2, 1, 1, 0, "0.50", "0.20", Some("1.5"))),
            ("", m(1, 1, 2, 0, 0, "1.00", "0.05", Some("19"))),
            ("s-a2", m(1, 1, 0, 0, 1, "0", "0.05", Some("-1"))),
            ("s-c1", m(1, 1, 1, 0, 0, "1.00", "0", None)),
        ])
    );
    let g = a.grouped(&q, GroupBy::Destination).await.unwrap();
    assert_eq!(g.totals, total());
    assert_eq!(
        rows(&g, GroupBy::Destination),
        expect_days(&[
            ("d1", m(3, 3, 1, 0, 1, "2.00", "0.15", Some("12.3333"))),
            ("d2", m(2, 1, 2, 0, 0, "2.50", "0.05", Some("49"))),
            ("d3", m(2, 2, 1, 1, 0, "0.50", "0.20", Some("1.5"))),
            ("", m(1, 1, 2, 0, 0, "1.00", "0.05", Some("19"))),
        ])
    );
}

async fn grouped_by_source_country_sub1(a: Backend) {
    seed(&a).await;
    let q = range();
    let g = a.grouped(&q, GroupBy::TrafficSource).await.unwrap();
    assert_eq!(g.totals, total());
    assert_eq!(
        rows(&g, GroupBy::TrafficSource),
        expect_days(&[
            ("ts1", m(5, 4, 3, 0, 1, "3.90", "0.25", Some("14.6"))),
            ("ts2", m(3, 3, 2, 1, 0, "1.50", "0.20", Some("6.5"))),
            ("", m(0, 0, 1, 0, 0, "0.60", "0", None)),
        ])
    );
    // Conversions take their click's country, even when the click is before the range (v8 -> k0, FR).
    let g = a.grouped(&q, GroupBy::Country).await.unwrap();
    assert_eq!(g.totals, total());
    assert_eq!(
        rows(&g, GroupBy::Country),
        expect_days(&[
            ("DE", m(3, 3, 1, 0, 1, "2.00", "0.15", Some("12.3333"))),
            ("US", m(3, 2, 3, 0, 0, "2.90", "0.10", Some("28"))),
            ("IN", m(2, 2, 0, 1, 0, "0", "0.20", Some("-1"))),
            ("", m(0, 0, 1, 0, 0, "0.60", "0", None)),
            ("FR", m(0, 0, 1, 0, 0, "0.50", "0", None)),
        ])
    );
    let g = a.grouped(&q, GroupBy::Sub1).await.unwrap();
    assert_eq!(g.totals, total());
    assert_eq!(
        rows(&g, GroupBy::Sub1),
        expect_days(&[
            ("", m(3, 3, 2, 1, 1, "1.00", "0.20", Some("4"))),
            ("x", m(3, 3, 2, 0, 0, "2.50", "0.20", Some("11.5"))),
            ("y", m(2, 1, 2, 0, 0, "2.50", "0.05", Some("49"))),
        ])
    );
}

async fn filters_by_campaign_and_team(a: Backend) {
    seed(&a).await;
    let camp_a = m(5, 4, 3, 0, 1, "3.90", "0.25", Some("14.6"));
    assert_eq!(a.overview(&range().with_campaign("camp-a")).await.unwrap(), camp_a);
    let team_2 = m(2, 2, 1, 1, 0, "0.50", "0.20", Some("1.5"));
    assert_eq!(a.overview(&range().with_team("t2")).await.unwrap(), team_2);
    let g = a.grouped(&range().with_campaign("camp-a"), GroupBy::Country).await.unwrap();
    assert_eq!(
        rows(&g, GroupBy::Country),
        expect_days(&[
            ("DE", m(3, 3, 1, 0, 1, "2.00", "0.15", Some("12.3333"))),
            ("US", m(2, 1, 2, 0, 0, "1.90", "0.10", Some("18"))),
        ])
    );
    let daily = a.daily(&range().with_team("t2")).await.unwrap();
    assert_eq!(daily[0].metrics, m(1, 1, 1, 0, 0, "0.50", "0.10", Some("4")));
    assert_eq!(daily.len(), 4);
    let nobody = a.overview(&range().with_campaign("nope")).await.unwrap();
    assert_eq!(nobody, Metrics::default());
}

async fn trafficback_per_campaign(a: Backend) {
    seed(&a).await;
    let g = a.trafficback(&range()).await.unwrap();
    let camp_a = m(1, 1, 1, 0, 0, "0.40", "0.05", Some("7"));
    assert_eq!(rows(&g, GroupBy::Campaign), expect_days(&[("camp-a", camp_a.clone())]));
    assert_eq!(g.totals, camp_a);
    let none = a.trafficback(&range().with_campaign("camp-b")).await.unwrap();
    assert!(none.rows.is_empty());
    assert_eq!(none.totals, Metrics::default());
}

async fn local_days_follow_the_time_zone(a: Backend) {
    seed(&a).await;
    // Kolkata (+05:30): k3 at 23:30 UTC on the 23rd is 05:00 on the 24th.
    let q = range().with_tz(Kolkata);
    assert_eq!(a.overview(&q).await.unwrap(), total());
    assert_eq!(
        days(&a.daily(&q).await.unwrap()),
        expect_days(&[
            ("2025-11-23", m(2, 1, 3, 0, 0, "4.00", "0.10", Some("39"))),
            ("2025-11-24", m(4, 4, 1, 1, 1, "0.40", "0.30", Some("0.3333"))),
            ("2025-11-25", m(0, 0, 0, 0, 0, "0", "0", None)),
            ("2025-11-26", m(2, 2, 2, 0, 0, "1.60", "0.05", Some("31"))),
        ])
    );
    // Los Angeles (-08:00): k4 and v3 early on the 24th UTC are on the 23rd; k9 at midnight UTC on the 27th
    // is on the 26th, inside the range.
    let q = range().with_tz(Los_Angeles);
    assert_eq!(a.overview(&q).await.unwrap(), m(9, 8, 6, 1, 1, "6.00", "0.50", Some("11")));
    assert_eq!(
        days(&a.daily(&q).await.unwrap()),
        expect_days(&[
            ("2025-11-23", m(4, 3, 3, 0, 1, "4.00", "0.25", Some("15"))),
            ("2025-11-24", m(2, 2, 1, 1, 0, "0.40", "0.15", Some("1.6667"))),
            ("2025-11-25", m(0, 0, 0, 0, 0, "0", "0", None)),
            ("2025-11-26", m(3, 3, 2, 0, 0, "1.60", "0.10", Some("15"))),
        ])
    );
    let g = a.grouped(&q, GroupBy::Campaign).await.unwrap();
    assert_eq!(g.row("camp-a").unwrap().metrics, m(6, 5, 3, 0, 1, "3.90", "0.30", Some("12")));
    // UTC's last day ends at midnight UTC, before k9.
    let last = ReportQuery::new(date("2025-11-26"), date("2025-11-26"));
    assert_eq!(a.overview(&last).await.unwrap().clicks, 2);
}

async fn health_per_destination(a: Backend) {
    seed(&a).await;
    let h = a.health(&range()).await.unwrap();
    let got: Vec<_> = h
        .iter()
        .map(|d| {
            let at = d.last_checked_at.timestamp_millis();
            (d.destination_id.as_str(), d.checks, d.failures, d.transitions, d.last_healthy, d.last_http_status, at)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("d1", 3, 1, 2, true, 200, ms("2025-11-24T12:00:00Z")),
            // h4 and h6 share a second: the greater ID is the latest.
            ("d2", 2, 1, 2, true, 200, ms("2025-11-25T10:00:00Z")),
        ]
    );
    assert_eq!((h[0].avg_latency_millis, h[1].avg_latency_millis), (200, 3000));
    assert_eq!(h[0].last_error, "");
    let one = a.health(&ReportQuery::new(date("2025-11-24"), date("2025-11-24"))).await.unwrap();
    assert_eq!(one.len(), 1);
    let team = a.health(&range().with_team("t2")).await.unwrap();
    assert_eq!(team.iter().map(|d| d.destination_id.as_str()).collect::<Vec<_>>(), vec!["d2"]);
    let later = a.health(&ReportQuery::new(date("2025-11-28"), date("2025-11-28"))).await.unwrap();
    assert_eq!((later[0].last_healthy, later[0].last_error.as_str()), (false, "after the range"));
}

async fn ingestion_errors_newest_first(a: Backend) {
    seed(&a).await;
    let page = a.ingestion_errors(&range(), 2, 0).await.unwrap();
    assert_eq!(page.total, 3, "e1 was stored twice and counts once");
    let keys = |p: &traffoflex_core::analytics::IngestionErrorPage| -> Vec<(String, i32, i64)> {
        p.rows.iter().map(|r| (r.topic.clone(), r.partition, r.offset)).collect()
    };
    assert_eq!(
        keys(&page),
        vec![("traffoflex.clicks".into(), 2, 7), ("traffoflex.conversions".into(), 1, 5)],
        "same second: by topic"
    );
    assert_eq!(page.rows[1].error, "bad traffoflex.conversions/5");
    assert_eq!(page.rows[1].payload, "not json");
    let rest = a.ingestion_errors(&range(), 2, 2).await.unwrap();
    assert_eq!(keys(&rest), vec![("traffoflex.clicks".into(), 0, 10)]);
    assert_eq!(rest.rows[0].ts.timestamp_millis(), ms("2025-11-24T09:05:00Z"), "the later copy wins");
    assert_eq!(rest.total, 3);
    let none = a.ingestion_errors(&range(), 0, 0).await.unwrap();
    assert_eq!((none.total, none.rows.len()), (3, 0));
}

fn ids(page: &PostbackLogPage) -> Vec<&str> {
    page.rows.iter().map(|r| r.id.as_str()).collect()
}

fn only(f: impl FnOnce(&mut PostbackLogFilter)) -> PostbackLogFilter {
    let mut filter = PostbackLogFilter::default();
    f(&mut filter);
    filter
}

async fn postback_logs_newest_first_with_paging(a: Backend) {
    seed(&a).await;
    let all = PostbackLogFilter::default();
    let page = a.postback_logs(&range(), &all, 3, 0).await.unwrap();
    assert_eq!(page.total, 7, "p1 was stored twice and counts once; p0 and p8 are outside the range");
    assert_eq!(ids(&page), vec!["p7", "p6", "p5"], "newest first; p5 and p4 share a second: greater ID first");
    let next = a.postback_logs(&range(), &all, 3, 3).await.unwrap();
    assert_eq!((ids(&next), next.total), (vec!["p4", "p3", "p2"], 7));
    let last = a.postback_logs(&range(), &all, 3, 6).await.unwrap();
    assert_eq!((ids(&last), last.total), (vec!["p1"], 7));
    let past = a.postback_logs(&range(), &all, 3, 100).await.unwrap();
    assert_eq!((past.rows.len(), past.total), (0, 7));
    let none = a.postback_logs(&range(), &all, 0, 0).await.unwrap();
    assert_eq!((none.rows.len(), none.total), (0, 7));

    let p3 = &a.postback_logs(&range(), &all, 1, 4).await.unwrap().rows[0];
    assert_eq!(p3.id, "p3");
    assert_eq!(p3.ts.timestamp_millis(), ms("2025-11-24T04:05:00Z"));
    assert_eq!((p3.network_id.as_str(), p3.network_key.as_str(), p3.team_id.as_str()), ("n1", "key-n1", "t1"));
    assert_eq!((p3.outcome.as_str(), p3.http_status, p3.latency_micros), ("rejected", 403, 1500));
    assert_eq!((p3.click_id.as_str(), p3.transaction_id.as_str(), p3.conversion_id.as_str()), ("", "", ""));
    assert_eq!((p3.remote_ip.as_str(), p3.error.as_str()), ("203.0.113.7", "rejected by the fixture"));
    assert_eq!(p3.request, "GET clickid=&txid=&token=[redacted]");
}

async fn postback_logs_filters(a: Backend) {
    seed(&a).await;
    let q = range();
    let page = |f: PostbackLogFilter, q: ReportQuery| {
        let a = a.clone();
        async move { a.postback_logs(&q, &f, 100, 0).await.unwrap() }
    };
    let n2 = page(only(|f| f.network_id = Some("n2".into())), q.clone()).await;
    assert_eq!((ids(&n2), n2.total), (vec!["p6", "p5", "p4"], 3));
    let accepted = page(only(|f| f.outcome = Some("accepted".into())), q.clone()).await;
    assert_eq!((ids(&accepted), accepted.total), (vec!["p6", "p4", "p1"], 3));
    let k6 = page(only(|f| f.click_id = Some("k6".into())), q.clone()).await;
    assert_eq!(ids(&k6), vec!["p5", "p4"]);
    let t2 = page(only(|f| f.transaction_id = Some("t2".into())), q.clone()).await;
    assert_eq!(ids(&t2), vec!["p2"]);
    let both = PostbackLogFilter { network_id: Some("n1".into()), outcome: Some("accepted".into()), ..all() };
    assert_eq!(ids(&page(both, q.clone()).await), vec!["p1"], "filters combine");
    let blank = PostbackLogFilter {
        network_id: Some(String::new()),
        outcome: Some(String::new()),
        click_id: Some(String::new()),
        transaction_id: Some(String::new()),
    };
    assert_eq!(page(blank, q.clone()).await.total, 7, "empty filters are no filters");
    let nobody = page(only(|f| f.click_id = Some("k1' OR '1'='1".into())), q.clone()).await;
    assert_eq!((nobody.total, nobody.rows.len()), (0, 0));
    // The query's team applies; its campaign does not (a postback log names no campaign).
    let team_2 = page(all(), q.clone().with_team("t2")).await;
    assert_eq!(ids(&team_2), vec!["p6", "p5", "p4"]);
    let team_1_rejected = page(only(|f| f.outcome = Some("rejected".into())), q.clone().with_team("t1")).await;
    assert_eq!(ids(&team_1_rejected), vec!["p3"]);
    assert_eq!(page(all(), q.clone().with_campaign("camp-a")).await.total, 7);
    // The filter reads from a query string as camelCase.
    let parsed: PostbackLogFilter =
        serde_json::from_value(json!({"networkId": "n2", "transactionId": "t4", "clickId": "k6"})).unwrap();
    assert_eq!(ids(&page(parsed, q).await), vec!["p5", "p4"]);
}

fn all() -> PostbackLogFilter {
    PostbackLogFilter::default()
}

async fn postback_logs_follow_the_time_zone(a: Backend) {
    seed(&a).await;
    // Kolkata (+05:30): p0 late on the 22nd UTC is on the 23rd; p7 late on the 26th UTC is on the 27th.
    let kolkata = a.postback_logs(&range().with_tz(Kolkata), &all(), 100, 0).await.unwrap();
    assert_eq!((ids(&kolkata), kolkata.total), (vec!["p6", "p5", "p4", "p3", "p2", "p1", "p0"], 7));
    // Los Angeles (-08:00): p8 just after midnight UTC on the 27th is on the 26th.
    let la = a.postback_logs(&range().with_tz(Los_Angeles), &all(), 100, 0).await.unwrap();
    assert_eq!((ids(&la), la.total), (vec!["p8", "p7", "p6", "p5", "p4", "p3", "p2", "p1"], 8));
    let one_day = ReportQuery::new(date("2025-11-23"), date("2025-11-23")).with_tz(Los_Angeles);
    let la_23 = a.postback_logs(&one_day, &all(), 100, 0).await.unwrap();
    assert_eq!(ids(&la_23), vec!["p3", "p2", "p1"], "p3 at 04:05 UTC on the 24th is the 23rd in Los Angeles");
    let utc_27 = ReportQuery::new(date("2025-11-27"), date("2025-11-27"));
    assert_eq!(ids(&a.postback_logs(&utc_27, &all(), 100, 0).await.unwrap()), vec!["p8"]);
}

async fn postback_logs_pages_are_capped(a: Backend) {
    let n = MAX_PAGE as usize + 5;
    let logs: Vec<Event> = (0..n)
        .map(|i| {
            let at = format!("24 {:02}:{:02}", i / 60 % 24, i % 60);
            Event::PostbackLog(postback(&format!("cap-{i:05}"), &at, "n1", "accepted", "", &format!("x{i}")))
        })
        .collect();
    a.insert_events(logs).await.unwrap();
    let page = a.postback_logs(&range(), &all(), u32::MAX, 0).await.unwrap();
    assert_eq!((page.rows.len(), page.total), (MAX_PAGE as usize, n as u64));
    assert_eq!(page.rows[0].id, format!("cap-{:05}", n - 1));
    let rest = a.postback_logs(&range(), &all(), u32::MAX, u64::from(MAX_PAGE)).await.unwrap();
    assert_eq!(ids(&rest), vec!["cap-00004", "cap-00003", "cap-00002", "cap-00001", "cap-00000"]);
    let far = a.postback_logs(&range(), &all(), 10, u64::MAX).await.unwrap();
    assert_eq!((far.rows.len(), far.total), (0, n as u64), "an offset past the end is an empty page");
}

async fn empty_reports_are_zero(a: Backend) {
    let q = range();
    assert_eq!(a.overview(&q).await.unwrap(), Metrics::default());
    let daily = a.daily(&q).await.unwrap();
    assert_eq!(daily.len(), 4);
    assert!(daily.iter().all(|d| d.metrics == Metrics::default()));
    for by in GroupBy::ALL {
        let g = a.grouped(&q, by).await.unwrap();
        assert!(g.rows.is_empty(), "{by:?}");
        assert_eq!(g.totals, Metrics::default());
    }
    assert!(a.trafficback(&q).await.unwrap().rows.is_empty());
    assert!(a.health(&q).await.unwrap().is_empty());
    assert_eq!(a.ingestion_errors(&q, 10, 0).await.unwrap().total, 0);
    assert_eq!(a.postback_logs(&q, &all(), 10, 0).await.unwrap(), PostbackLogPage::default());
}

async fn bad_queries_are_typed(a: Backend) {
    let backwards = ReportQuery::new(date("2025-11-26"), date("2025-11-23"));
    let too_long = ReportQuery::new(date("2024-01-01"), date("2025-01-01"));
    for q in [&backwards, &too_long] {
        let errors = [
            a.overview(q).await.err(),
            a.daily(q).await.err(),
            a.grouped(q, GroupBy::Campaign).await.err(),
            a.trafficback(q).await.err(),
            a.health(q).await.err(),
            a.ingestion_errors(q, 10, 0).await.err(),
            a.postback_logs(q, &all(), 10, 0).await.err(),
        ];
        for e in errors {
            assert!(matches!(e, Some(AnalyticsError::Invalid { .. })), "{e:?}");
        }
    }
    let e = a.overview(&backwards).await.unwrap_err();
    assert!(matches!(&e, AnalyticsError::Invalid { field: "from", .. }), "{e:?}");
    let e = a.daily(&too_long).await.unwrap_err();
    assert!(matches!(&e, AnalyticsError::Invalid { field: "to", .. }), "{e:?}");
    assert!(e.to_string().contains("367 days"), "{e}");
}

async fn reports_serialise_as_documented(a: Backend) {
    seed(&a).await;
    let overview = serde_json::to_value(a.overview(&range()).await.unwrap()).unwrap();
    assert_eq!(
        overview,
        json!({"clicks": 8, "uniqueClicks": 7, "conversions": 6, "pendingConversions": 1, "rejectedConversions": 1,
               "revenue": "6.00", "cost": "0.45", "profit": "5.55", "roi": "12.3333"})
    );
    let daily = serde_json::to_value(a.daily(&range()).await.unwrap()).unwrap();
    assert_eq!(daily[2]["date"], "2025-11-25");
    assert_eq!((&daily[2]["revenue"], &daily[2]["roi"]), (&json!("0.00"), &json!(null)));
    let g = serde_json::to_value(a.grouped(&range(), GroupBy::Campaign).await.unwrap()).unwrap();
    assert_eq!(g["rows"][0]["key"], json!({"campaignId": "camp-a"}));
    assert_eq!(g["rows"][0]["cost"], "0.25");
    assert_eq!(g["rows"][2]["roi"], json!(null));
    assert_eq!(g["totals"]["revenue"], "6.00");
    let h = serde_json::to_value(a.health(&range()).await.unwrap()).unwrap();
    assert_eq!(h[0]["destinationId"], "d1");
    assert_eq!(h[0]["lastCheckedAt"], "2025-11-24T12:00:00Z");
    let keys: BTreeMap<String, serde_json::Value> = serde_json::from_value(h[0].clone()).unwrap();
    assert!(keys.contains_key("avgLatencyMillis"));
    assert_eq!(dec("0.05").to_string(), "0.05");
    let logs = a.postback_logs(&range(), &only(|f| f.click_id = Some("k8".into())), 10, 0).await.unwrap();
    assert_eq!(
        serde_json::to_value(logs).unwrap(),
        json!({"total": 1, "rows": [{
            "id": "p6", "ts": "2025-11-26T11:05:00Z", "networkId": "n2", "networkKey": "key-n2", "teamId": "t2",
            "outcome": "accepted", "httpStatus": 200, "latencyMicros": 1500, "clickId": "k8", "transactionId": "t5",
            "conversionId": "conv-t5", "remoteIp": "203.0.113.7", "error": "",
            "request": "GET clickid=k8&txid=t5&token=[redacted]"
        }]})
    );
}

async fn click_facts_by_click_id(a: Backend) {
    let mut c = ClickEvent {
        click_id: "facts-1".into(),
        ts: ms("2025-11-24T10:00:00Z"),
        campaign_id: "camp-x".into(),
        stream_id: "str-x".into(),
        destination_id: "dst-x".into(),
        traffic_source_id: "src-x".into(),
        source: "push".into(),
        source_click_id: "their-42".into(),
        ip: "203.0.113.9".into(),
        country: "DE".into(),
        utm_source: "news".into(),
        utm_term: "shoes & socks".into(),
        subs: vec!["s-one".into(), String::new(), "s-three".into()],
        cost: dec("0.125"),
        currency: "EUR".into(),
        ..ClickEvent::default()
    };
    a.insert_events(vec![Event::Click(c.clone())]).await.unwrap();
    let ts = u32::try_from(c.ts / 1000).unwrap();
    let facts = a.click_facts("facts-1", Some(ts)).await.unwrap().expect("the click is there");
    assert_eq!(
        (facts.campaign_id.as_str(), facts.stream_id.as_str(), facts.destination_id.as_str()),
        ("camp-x", "str-x", "dst-x")
    );
    assert_eq!(
        (facts.source_click_id.as_str(), facts.ip.as_str(), facts.country.as_str()),
        ("their-42", "203.0.113.9", "DE")
    );
    assert_eq!((facts.utm_source.as_str(), facts.utm_term.as_str()), ("news", "shoes & socks"));
    assert_eq!(facts.subs, ["s-one", "", "s-three"]);
    assert_eq!((facts.cost_micros, facts.currency.as_str()), (125_000, "EUR"));
    assert_eq!(a.click_facts("facts-1", None).await.unwrap(), Some(facts), "found without a time too");
    assert_eq!(a.click_facts("facts-2", Some(ts)).await.unwrap(), None);
    c.click_id = "facts-3".into();
    a.insert_events(vec![Event::Click(c)]).await.unwrap();
    assert_eq!(a.click_facts("facts-1'", None).await.unwrap(), None, "no partial match");
}

async fn migrate_is_idempotent(a: Backend) {
    a.ping().await.unwrap();
    assert_eq!(a.migrate().await.unwrap(), Vec::<u32>::new(), "already applied when opened or migrated");
    assert!(["sqlite", "clickhouse"].contains(&a.backend_name()));
}

contract!(
    overview_counts_each_event_once,
    daily_fills_missing_days,
    grouped_by_campaign_stream_destination,
    grouped_by_source_country_sub1,
    filters_by_campaign_and_team,
    trafficback_per_campaign,
    local_days_follow_the_time_zone,
    health_per_destination,
    ingestion_errors_newest_first,
    postback_logs_newest_first_with_paging,
    postback_logs_filters,
    postback_logs_follow_the_time_zone,
    postback_logs_pages_are_capped,
    empty_reports_are_zero,
    bad_queries_are_typed,
    reports_serialise_as_documented,
    click_facts_by_click_id,
    migrate_is_idempotent,
);

#[tokio::test]
async fn open_chooses_the_backend_and_sqlite_keeps_its_data() {
    use traffoflex_core::analytics::{SqliteAnalytics, open_analytics};
    use traffoflex_core::settings::BackendSettings;

    let dir = tempfile::tempdir().unwrap();
    let settings = BackendSettings { data_dir: dir.path().join("data"), ..Default::default() };
    let a = open_analytics(&settings).await.unwrap();
    assert_eq!(a.backend_name(), "sqlite");
    assert!(dir.path().join("data/analytics.sqlite").exists());
    seed(&a).await;
    drop(a);
    let again = open_analytics(&settings).await.unwrap();
    assert_eq!(again.overview(&range()).await.unwrap(), total(), "the file keeps the events");

    let mem: Backend = std::sync::Arc::new(SqliteAnalytics::open_in_memory().await.unwrap());
    seed(&mem).await;
    assert_eq!(mem.overview(&range()).await.unwrap(), total());

    // ClickHouse is chosen by its URL alone; opening makes no connection.
    let settings = BackendSettings { clickhouse_url: Some("http://127.0.0.1:1".into()), ..settings };
    let ch = open_analytics(&settings).await.unwrap();
    assert_eq!(ch.backend_name(), "clickhouse");
    assert!(ch.ping().await.is_err());
}
