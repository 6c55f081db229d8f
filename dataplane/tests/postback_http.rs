//! The postback service over HTTP, on a real store: authentication (token, HMAC, allowlist), attribution from a
//! click ID issued by the same codec, duplicates and status updates, malformed input refused with nothing
//! recorded, and a store outage.

mod postback_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use traffoflex_core::events::ConversionStatus;
use traffoflex_dataplane::postback::auth::sign;

use postback_support::{Extras, fixture, sqlite, start_with};
use traffoflex_dataplane::postback::currency::CurrencyRates;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_postbacks_are_attributed_deduplicated_and_updated() {
    let f = fixture().await;
    let cid = f.click_id();

    let (s, b) = f.get(&format!("/postback/neta?clickid={cid}&txid=o-1&payout=12.50&token=wrong")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (s, _) = f.get(&format!("/postback/neta?clickid={cid}&txid=o-1&payout=12.50")).await;
    assert_eq!(s, 401, "a missing token is refused");
    assert_eq!(f.conversion_docs().await, 0);

    let (s, b) = f.get(&format!("/postback/neta?clickid={cid}&txid=o-1&payout=12.50&currency=eur&token=s3cr3t")).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("accepted")), "{b}");
    let id = b["conversionId"].as_str().unwrap().to_owned();
    // The `secret` alias of the MVP carries the token too; a repeat is a duplicate of the same conversion.
    let (s, b) = f.get(&format!("/postback/neta?clickid={cid}&txid=o-1&payout=12.50&secret=s3cr3t")).await;
    assert_eq!((s, b["status"].as_str(), b["conversionId"].as_str()), (200, Some("duplicate"), Some(id.as_str())));

    // pending -> approved is an update with revision 2.
    let (_, b) = f.get(&format!("/postback/neta?clickid={cid}&txid=o-2&payout=3&status=pending&key=s3cr3t")).await;
    assert_eq!(b["status"], "accepted");
    let (s, b) = f.get(&format!("/postback/neta?clickid={cid}&txid=o-2&payout=3&status=1&token=s3cr3t")).await;
    assert_eq!((s, b["status"].as_str(), b["revision"].as_u64()), (200, Some("updated"), Some(2)));
    assert_eq!(f.conversion_docs().await, 2);

    f.shipped(6).await;
    let conv = f.events.conversions();
    assert_eq!(conv.len(), 3, "accepted, accepted, updated: {conv:?}");
    let first = &conv[0];
    assert_eq!(first.conversion_id, id);
    assert!(first.attributed);
    assert_eq!((first.campaign_id.as_str(), first.stream_id.as_str()), (f.campaign.as_str(), f.stream.as_str()));
    assert_eq!(
        (first.destination_id.as_str(), first.traffic_source_id.as_str()),
        (f.destination.as_str(), f.source.as_str())
    );
    assert_eq!(
        (first.payout.to_string(), first.currency.as_str(), first.revenue.to_string()),
        ("12.5".into(), "EUR", "12.5".into())
    );
    assert_eq!((first.revision, first.status), (1, ConversionStatus::Approved));
    assert_eq!((conv[1].revision, conv[1].status), (1, ConversionStatus::Pending));
    assert_eq!((conv[2].revision, conv[2].status), (2, ConversionStatus::Approved));
    assert_eq!(conv[1].conversion_id, conv[2].conversion_id);

    let logs = f.events.logs();
    let outcomes: Vec<(&str, u16)> = logs.iter().map(|l| (l.outcome.as_str(), l.http_status)).collect();
    assert_eq!(
        outcomes,
        [
            ("rejected", 401),
            ("rejected", 401),
            ("accepted", 200),
            ("duplicate", 200),
            ("accepted", 200),
            ("updated", 200)
        ]
    );
    for l in &logs {
        assert!(!l.request.contains("s3cr3t") && !l.request.contains("wrong"), "secrets are redacted: {}", l.request);
        assert_eq!(l.network_key, "neta");
    }
    assert!(logs[2].request.contains("token=***"), "{}", logs[2].request);
    assert_eq!(logs[2].conversion_id, id);

    let metrics = f.telemetry.encode_metrics();
    for (outcome, n) in [("accepted", 2), ("duplicate", 1), ("updated", 1), ("rejected", 2)] {
        let line = format!("traffoflex_postback_requests_total{{outcome=\"{outcome}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_signatures_are_checked_over_the_raw_query_or_body() {
    let f = fixture().await;
    let cid = f.click_id();
    let now = chrono::Utc::now().timestamp();
    let client = reqwest::Client::new();
    let url = |q: &str| format!("{}/postback/signed?{q}", f.base);

    let q = format!("clickid={cid}&txid=h-1&payout=1");
    let (s, b) = f.send(client.get(url(&q)).header("x-signature", sign("hk", now, q.as_bytes()))).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("accepted")), "{b}");

    let body = json!({"clickid": cid, "txid": "h-2", "payout": 2.25, "status": "pending"}).to_string();
    let req = client
        .post(format!("{}/postback/signed", f.base))
        .header("content-type", "application/json")
        .header("x-signature", sign("hk", now, body.as_bytes()))
        .body(body.clone());
    let (s, b) = f.send(req).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("accepted")), "{b}");

    let q = format!("clickid={cid}&txid=h-3&payout=1");
    let cases = [
        ("bad signature", sign("other", now, q.as_bytes())),
        ("signed another query", sign("hk", now, b"clickid=x&txid=h-3")),
        // Well past the 300 s window: the exact edges are unit-tested in `postback::auth`, and the clock
        // moves on while this test runs.
        ("expired", sign("hk", now - 360, q.as_bytes())),
        ("from the future", sign("hk", now + 360, q.as_bytes())),
        ("malformed", "v1=00".to_owned()),
    ];
    for (what, sig) in cases {
        let (s, b) = f.send(client.get(url(&q)).header("x-signature", sig)).await;
        assert_eq!((s, b["error"]["code"].as_str()), (401, Some("unauthorized")), "{what}: {b}");
    }
    let (s, _) = f.get(&format!("/postback/signed?{q}")).await;
    assert_eq!(s, 401, "no signature");
    assert_eq!(f.conversion_docs().await, 2);
    f.shipped(8).await;
    let conv = f.events.conversions();
    assert_eq!(conv.len(), 2);
    assert_eq!((conv[1].payout.to_string(), conv[1].status), ("2.25".into(), ConversionStatus::Pending));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_allowlists_click_lookup_and_aliases() {
    let f = fixture().await;
    let cid = f.click_id();
    let (s, b) = f.get(&format!("/postback/nope?clickid={cid}&txid=1")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("unknownNetwork")));
    let (s, b) = f.get(&format!("/postback/office?clickid={cid}&txid=1")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("ipNotAllowed")));
    let (s, _) = f.get(&format!("/postback/local?clickid={cid}&txid=1")).await;
    assert_eq!(s, 200, "127.0.0.1 is on its allowlist");

    // A forged click ID: refused by a failClosed network, recorded unattributed by a failOpen one.
    let mut forged = cid.clone();
    let last = if forged.ends_with('A') { "B" } else { "A" };
    forged.replace_range(forged.len() - 1.., last);
    let (s, b) = f.get(&format!("/postback/strict?clickid={forged}&txid=f-1")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (422, Some("unknownClick")));
    let (s, b) = f.get(&format!("/postback/strict?clickid={cid}&txid=f-1")).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("accepted")));
    let (s, b) = f.get(&format!("/postback/open?clickid={forged}&txid=f-1")).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("accepted")), "the same transaction of another network is new");

    // The MVP's entry points and parameter names.
    let (s, b) = f.get(&format!("/pb/open?cid={cid}&tid=m-1&sum=4&status=pending&event_type=lead")).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("accepted")));
    let client = reqwest::Client::new();
    let req = client.post(format!("{}/api/postbacks", f.base)).form(&[
        ("network", "neta"),
        ("click_id", cid.as_str()),
        ("order_id", "m-2"),
        ("revenue", "5"),
        ("token", "s3cr3t"),
    ]);
    let (s, b) = f.send(req).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("accepted")), "{b}");
    let req = client.post(format!("{}/api/postbacks", f.base)).json(&json!({"click_id": cid, "transaction_id": "m-3"}));
    let (s, b) = f.send(req).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("missingNetwork")));

    f.shipped(9).await;
    let conv = f.events.conversions();
    let unattributed: Vec<_> = conv.iter().filter(|c| !c.attributed).collect();
    assert_eq!(unattributed.len(), 1);
    assert!(unattributed[0].campaign_id.is_empty());
    assert_eq!(conv.iter().filter(|c| c.attributed).count(), 4);
    let mvp = conv.iter().find(|c| c.transaction_id == "m-1").expect("m-1");
    assert_eq!((mvp.payout.to_string(), mvp.status), ("4".into(), ConversionStatus::Pending));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_postbacks_are_refused_and_record_nothing() {
    let f = fixture().await;
    let cid = f.click_id();
    let ok = format!("clickid={cid}&token=s3cr3t");
    let long = "x".repeat(300);
    let get_cases: Vec<(String, u16, &str)> = vec![
        (ok.clone(), 400, "missingTransactionId"),
        (format!("{ok}&txid="), 400, "missingTransactionId"),
        (format!("{ok}&txid={long}"), 400, "invalidTransactionId"),
        (format!("{ok}&txid=a%01b"), 400, "invalidTransactionId"),
        (format!("{ok}&txid=%20%20"), 400, "invalidTransactionId"),
        ("token=s3cr3t&txid=t".to_owned(), 400, "missingClickId"),
        (format!("token=s3cr3t&txid=t&clickid={long}"), 400, "invalidClickId"),
        (format!("{ok}&txid=t&payout=abc"), 400, "invalidPayout"),
        (format!("{ok}&txid=t&payout=-1"), 400, "invalidPayout"),
        (format!("{ok}&txid=t&payout=NaN"), 400, "invalidPayout"),
        (format!("{ok}&txid=t&payout=inf"), 400, "invalidPayout"),
        (format!("{ok}&txid=t&payout=1e3"), 400, "invalidPayout"),
        (format!("{ok}&txid=t&payout=1000000000000.01"), 400, "invalidPayout"),
        (format!("{ok}&txid=t&payout=1.2.3"), 400, "invalidPayout"),
        (format!("{ok}&txid=t&payout=1%2C5"), 400, "invalidPayout"),
        (format!("{ok}&txid=t&currency=US"), 400, "invalidCurrency"),
        (format!("{ok}&txid=t&currency=EURO"), 400, "invalidCurrency"),
        (format!("{ok}&txid=t&currency=U%24D"), 400, "invalidCurrency"),
        (format!("{ok}&txid=t&currency=123"), 400, "invalidCurrency"),
        (format!("{ok}&txid=t&status={long}"), 400, "invalidParameter"),
    ];
    let mut answered = 0;
    for (q, status, code) in &get_cases {
        let (s, b) = f.get(&format!("/postback/neta?{q}")).await;
        assert_eq!((s, b["error"]["code"].as_str()), (*status, Some(*code)), "{q}: {b}");
        assert!(b["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        answered += 1;
    }
    let client = reqwest::Client::new();
    let post = |ct: &str, body: &str| {
        client.post(format!("{}/postback/neta?token=s3cr3t", f.base)).header("content-type", ct).body(body.to_owned())
    };
    let post_cases = [
        (post("application/json", "{"), 400, "invalidBody"),
        (post("application/json", "[1]"), 400, "invalidBody"),
        (post("application/json", &format!(r#"{{"clickid":"{cid}","txid":{{"a":1}}}}"#)), 400, "invalidBody"),
        (post("application/json", &format!(r#"{{"clickid":"{cid}","txid":"t","payout":-5}}"#)), 400, "invalidPayout"),
        (post("text/plain", "clickid=a&txid=b"), 415, "unsupportedMediaType"),
        (post("application/x-www-form-urlencoded", &format!("clickid={cid}")), 400, "missingTransactionId"),
        (post("application/x-www-form-urlencoded", &"a=b&".repeat(40_000)), 413, "payloadTooLarge"),
    ];
    for (req, status, code) in post_cases {
        let (s, b) = f.send(req).await;
        assert_eq!((s, b["error"]["code"].as_str()), (status, Some(code)), "{b}");
        answered += 1;
    }
    // failClosed: a click ID that isn't ours.
    let (s, b) = f.get("/postback/strict?clickid=not-a-click-id&txid=t").await;
    assert_eq!((s, b["error"]["code"].as_str()), (422, Some("unknownClick")));
    answered += 1;
    assert!(answered >= 20);

    assert_eq!(f.conversion_docs().await, 0, "no conversion document");
    f.shipped(answered).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(f.events.conversions().is_empty(), "no conversion event");
    let logs = f.events.logs();
    assert_eq!(logs.len(), answered);
    assert!(logs.iter().all(|l| l.outcome == "rejected" && (400..500).contains(&l.http_status)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_answers_503_and_records_nothing() {
    let f = fixture().await;
    let cid = f.click_id();
    f.store.down.store(true, Ordering::SeqCst);
    let (s, b) = f.get(&format!("/postback/open?clickid={cid}&txid=d-1&payout=1")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (503, Some("storeUnavailable")));
    f.store.down.store(false, Ordering::SeqCst);
    assert_eq!(f.conversion_docs().await, 0);
    // The network's retry succeeds once the store is back.
    let (s, b) = f.get(&format!("/postback/open?clickid={cid}&txid=d-1&payout=1")).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("accepted")));
    f.shipped(2).await;
    assert_eq!(f.events.conversions().len(), 1);
    let logs = f.events.logs();
    assert_eq!((logs[0].outcome.as_str(), logs[0].http_status), ("error", 503));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_are_recorded_as_revenue_in_the_report_currency() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rates = CurrencyRates::parse(Some("USD"), "EUR=1.10,GBP=1.25").expect("rates");
    let f = start_with(sqlite(&dir).await, dir, Extras { rates, ..Extras::default() }).await;
    let cid = f.click_id();
    for (tx, payout, currency) in
        [("r-1", "10.00", "EUR"), ("r-2", "4", "gbp"), ("r-3", "2.50", "USD"), ("r-4", "7", "CHF")]
    {
        let (s, b) =
            f.get(&format!("/postback/open?clickid={cid}&txid={tx}&payout={payout}&currency={currency}")).await;
        assert_eq!((s, b["status"].as_str()), (200, Some("accepted")), "{tx}: {b}");
    }
    f.shipped(4).await;
    let got: Vec<(String, String, String)> = f
        .events
        .conversions()
        .iter()
        .map(|c| (c.payout.to_string(), c.currency.clone(), c.revenue.normalize().to_string()))
        .collect();
    let want = [("10", "EUR", "11"), ("4", "GBP", "5"), ("2.5", "USD", "2.5"), ("7", "CHF", "7")];
    let want: Vec<(String, String, String)> =
        want.iter().map(|(p, c, r)| ((*p).to_owned(), (*c).to_owned(), (*r).to_owned())).collect();
    assert_eq!(got, want, "payout and currency as reported; revenue converted where a rate exists");
    let metrics = f.telemetry.encode_metrics();
    let line = "traffoflex_postback_unconverted_payouts_total{currency=\"CHF\"} 1";
    assert!(metrics.contains(line), "{line} in\n{metrics}");
}
