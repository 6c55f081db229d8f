//! Outbound postbacks as a traffic source sees them: a conversion accepted by the postback service reaches
//! the source's URL once, rendered and with an `Idempotency-Key`; failures are retried with backoff (across a
//! restart of the worker) up to 5 attempts, each in the job's delivery log; redirects are not followed;
//! private targets are refused unless allowed; a status change is a second delivery, a duplicate is none.
//!
//! Every scenario runs on SQLite and on the MongoDB-wire test server (FerretDB). Two workers sharing one
//! store are tested concurrently on SQLite only: their leases are a compare-and-swap on the job's version,
//! which FerretDB 1.x does not make atomic under concurrency, so there the two workers take turns.

mod postback_support;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use traffoflex_core::analytics::{Analytics, SqliteAnalytics};
use traffoflex_core::events::{self, ClickEvent, Event};
use traffoflex_core::store::{
    Collection, ConfigStore, ConfigStoreExt, Filter, MongoStore, Query, Result as StoreResult, StoreError, Stored,
};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_core::testenv;
use traffoflex_dataplane::egress::AddressPolicy;
use traffoflex_dataplane::postback::outbound::queue::sweep;
use traffoflex_dataplane::postback::outbound::{JobStatus, OutboundJob, OutboundSettings, OutboundWorker};

use postback_support::{Extras, Fixture, sqlite, start, start_with};

/// What the traffic source received.
#[derive(Debug, Clone)]
struct Hit {
    uri: String,
    idempotency_key: String,
}

/// The traffic source's postback endpoint: answers the statuses in `script` in order, then `200`;
/// `/redirect` answers `302` to `/followed`.
#[derive(Clone, Default)]
struct Target {
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    /// Answered once the script is used up.
    fallback: Arc<Mutex<u16>>,
    port: u16,
}

impl Target {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let t = Target { port: listener.local_addr().expect("addr").port(), ..Target::default() };
        *t.fallback.lock().unwrap() = 200;
        let state = t.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let t = state.clone();
            async move { t.answer(&uri, &headers) }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        t
    }

    fn answer(&self, uri: &Uri, headers: &HeaderMap) -> Response {
        let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        self.hits.lock().unwrap().push(Hit { uri: uri.to_string(), idempotency_key: key });
        if uri.path() == "/redirect" {
            return (StatusCode::FOUND, [(header::LOCATION, "/followed")]).into_response();
        }
        let code = self.script.lock().unwrap().pop_front().unwrap_or(*self.fallback.lock().unwrap());
        // A long body: the sender reads at most 4 KiB of it.
        (StatusCode::from_u16(code).expect("status"), "x".repeat(64 << 10)).into_response()
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    fn answer_with(&self, codes: &[u16], then: u16) {
        self.script.lock().unwrap().extend(codes);
        *self.fallback.lock().unwrap() = then;
    }
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    FerretDb,
}

/// A postback service on `backend` whose traffic source reports `statuses` to `url`, or `None` when the
/// backend is not available outside CI.
async fn service(backend: Backend, url: &str, statuses: &[&str]) -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn ConfigStore> = match backend {
        Backend::Sqlite => sqlite(&dir).await,
        Backend::FerretDb => {
            let uri = testenv::mongo_uri()?;
            let mongo = MongoStore::connect(&uri, Some(&testenv::unique_name("tf_outbound"))).await.expect("connect");
            mongo.ensure_indexes().await.expect("indexes");
            Arc::new(mongo)
        }
    };
    let f = start(store, dir).await;
    let mut source = f.store.get(Collection::TrafficSources, &f.source).await.expect("read").expect("source");
    source["outboundPostbackUrl"] = json!(url);
    source["outboundPostbackStatuses"] = json!(statuses);
    f.store.replace(Collection::TrafficSources, &f.source, None, source).await.expect("replace");
    f.store.bump_config_revision().await.expect("revision");
    let r = reqwest::Client::new().post(format!("{}/internal/reload", f.base)).send().await.expect("reload");
    assert_eq!(r.status(), 200);
    Some(f)
}

fn settings(allow_private: bool) -> OutboundSettings {
    OutboundSettings {
        poll_interval: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
        lease: Duration::from_secs(10),
        backoff_base: Duration::from_millis(30),
        policy: AddressPolicy { allow_private },
        ..OutboundSettings::default()
    }
}

/// A running worker on the fixture's store.
struct Running {
    id: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(f: &Fixture, allow_private: bool) -> Self {
        let store: Arc<dyn ConfigStore> = f.store.clone();
        let worker = OutboundWorker::new(store, settings(allow_private), &Telemetry::new());
        let stop = CancellationToken::new();
        let id = worker.id().to_owned();
        Running { id, stop: stop.clone(), task: worker.spawn(stop) }
    }

    /// Graceful shutdown: the attempt in flight finishes.
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("stops in time").expect("task");
    }
}

async fn jobs(f: &Fixture) -> Vec<Stored<OutboundJob>> {
    f.store.find_as(Collection::OutboundPostbacks, &Query::new()).await.expect("jobs")
}

/// Waits until `done` holds for the jobs, up to 10 s.
async fn until(f: &Fixture, what: &str, done: impl Fn(&[Stored<OutboundJob>]) -> bool) -> Vec<Stored<OutboundJob>> {
    for _ in 0..500 {
        let j = jobs(f).await;
        if done(&j) {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not reached; jobs: {:#?}", jobs(f).await);
}

async fn postback(f: &Fixture, cid: &str, txid: &str, status: &str) -> Value {
    let (code, body) =
        f.get(&format!("/postback/neta?clickid={cid}&txid={txid}&payout=12.50&status={status}&token=s3cr3t")).await;
    assert_eq!(code, 200, "{body}");
    body
}

fn delivered(j: &[Stored<OutboundJob>], n: usize) -> bool {
    j.len() == n && j.iter().all(|j| j.doc.status == JobStatus::Delivered)
}

const PB_PATH: &str = "/pb?click={clickId}&payout={payout}&status={status}&tx={transactionId}&conv={conversionId}";

async fn a_conversion_reaches_the_source_once(backend: Backend) {
    let target = Target::start().await;
    let Some(f) = service(backend, &target.url(PB_PATH), &["approved"]).await else { return };
    let worker = Running::start(&f, true);
    let cid = f.click_id();
    let b = postback(&f, &cid, "order 1", "approved").await;
    let conv = b["conversionId"].as_str().expect("conversionId").to_owned();
    let j = until(&f, "delivered", |j| delivered(j, 1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hits = target.hits();
    assert_eq!(hits.len(), 1, "exactly one request: {hits:?}");
    assert_eq!(hits[0].uri, format!("/pb?click={cid}&payout=12.5&status=approved&tx=order%201&conv={conv}"));
    assert_eq!(hits[0].idempotency_key, j[0].id, "the job's stable key");
    let job = &j[0].doc;
    assert_eq!((job.conversion_id.as_str(), job.attempts, job.log.len()), (conv.as_str(), 1, 1));
    assert_eq!((job.log[0].http_status, job.log[0].error.as_str()), (200, ""));
    assert_eq!(job.log[0].response.len(), 512, "the logged start of a 64 KiB answer");
    assert_eq!(job.log[0].worker, worker.id);
    assert!(job.delivered_at > 0 && job.lease_owner.is_empty());
    worker.stop().await;
}

async fn retries_until_delivered(backend: Backend) {
    let target = Target::start().await;
    target.answer_with(&[500, 500], 200);
    let Some(f) = service(backend, &target.url("/pb?s={status}"), &["approved"]).await else { return };
    let worker = Running::start(&f, true);
    postback(&f, &f.click_id(), "r-1", "approved").await;
    let j = until(&f, "delivered", |j| delivered(j, 1)).await;
    let job = &j[0].doc;
    let codes: Vec<u16> = job.log.iter().map(|a| a.http_status).collect();
    assert_eq!((job.attempts, codes), (3, vec![500, 500, 200]), "delivered on attempt 3");
    assert_eq!(job.log[0].error, "answered 500 Internal Server Error");
    assert!(job.log.windows(2).all(|w| w[1].at > w[0].at), "attempts in order");
    assert!(job.log[2].at - job.log[1].at >= 120, "the second retry waits 4 × the first: {:?}", job.log);
    let keys: Vec<String> = target.hits().into_iter().map(|h| h.idempotency_key).collect();
    assert_eq!(keys, vec![j[0].id.clone(); 3], "one key for every attempt");
    worker.stop().await;
}

async fn a_retry_survives_a_restart(backend: Backend) {
    let target = Target::start().await;
    target.answer_with(&[], 503);
    let Some(f) = service(backend, &target.url("/pb"), &["approved"]).await else { return };
    let first = Running::start(&f, true);
    postback(&f, &f.click_id(), "restart-1", "approved").await;
    until(&f, "a failed first attempt", |j| j.len() == 1 && j[0].doc.attempts >= 1).await;
    first.stop().await;
    let after_stop = jobs(&f).await;
    assert_eq!(after_stop[0].doc.status, JobStatus::Pending, "still queued after the worker stopped");
    target.answer_with(&[], 200);
    let second = Running::start(&f, true);
    let j = until(&f, "delivered by the new worker", |j| delivered(j, 1)).await;
    let log = &j[0].doc.log;
    assert_eq!(log.last().map(|a| (a.http_status, a.worker.as_str())), Some((200, second.id.as_str())));
    assert!(log.len() >= 2 && log[..log.len() - 1].iter().all(|a| a.http_status == 503), "{log:?}");
    second.stop().await;
}

async fn five_failures_and_the_job_fails(backend: Backend) {
    let target = Target::start().await;
    target.answer_with(&[], 500);
    let Some(f) = service(backend, &target.url("/pb"), &["approved"]).await else { return };
    let worker = Running::start(&f, true);
    postback(&f, &f.click_id(), "f-1", "approved").await;
    let j = until(&f, "failed", |j| j.len() == 1 && j[0].doc.status == JobStatus::Failed).await;
    assert_eq!((j[0].doc.attempts, j[0].doc.log.len()), (5, 5));
    assert_eq!(j[0].doc.last_error, "answered 500 Internal Server Error");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(target.hits().len(), 5, "no 6th request");
    worker.stop().await;
}

async fn redirects_are_not_followed(backend: Backend) {
    let target = Target::start().await;
    let Some(f) = service(backend, &target.url("/redirect?s={status}"), &["approved"]).await else { return };
    let worker = Running::start(&f, true);
    postback(&f, &f.click_id(), "redir-1", "approved").await;
    let j = until(&f, "failed", |j| j.len() == 1 && j[0].doc.status == JobStatus::Failed).await;
    assert!(j[0].doc.log.iter().all(|a| a.http_status == 302), "{:?}", j[0].doc.log);
    assert_eq!(j[0].doc.last_error, "answered 302 Found (redirects are not followed)");
    let hits = target.hits();
    assert!(hits.iter().all(|h| h.uri.starts_with("/redirect")), "/followed never requested: {hits:?}");
    worker.stop().await;
}

async fn private_targets_are_refused_unless_allowed(backend: Backend) {
    let target = Target::start().await;
    let url = format!("http://localhost:{}/pb", target.port);
    let Some(f) = service(backend, &url, &["approved"]).await else { return };
    let worker = Running::start(&f, false);
    postback(&f, &f.click_id(), "priv-1", "approved").await;
    let j = until(&f, "refused", |j| j.len() == 1 && j[0].doc.status == JobStatus::Failed).await;
    assert_eq!(j[0].doc.attempts, 1, "a refused target is not retried");
    assert_eq!(j[0].doc.last_error, "refused: localhost resolves to a loopback address");
    assert_eq!(j[0].doc.log[0].http_status, 0);
    assert!(target.hits().is_empty(), "the target was never contacted");
    worker.stop().await;
}

async fn a_status_change_is_a_second_delivery(backend: Backend) {
    let target = Target::start().await;
    let Some(f) = service(backend, &target.url("/pb?s={status}&tx={transactionId}"), &["pending", "approved"]).await
    else {
        return;
    };
    let worker = Running::start(&f, true);
    let cid = f.click_id();
    postback(&f, &cid, "chg-1", "pending").await;
    until(&f, "pending delivered", |j| delivered(j, 1)).await;
    let b = postback(&f, &cid, "chg-1", "approved").await;
    assert_eq!((b["status"].as_str(), b["revision"].as_u64()), (Some("updated"), Some(2)));
    let j = until(&f, "approved delivered", |j| delivered(j, 2)).await;
    let uris: Vec<String> = target.hits().into_iter().map(|h| h.uri).collect();
    assert_eq!(uris, ["/pb?s=pending&tx=chg-1", "/pb?s=approved&tx=chg-1"]);
    let mut targets: Vec<(u64, &str)> = j.iter().map(|j| (j.doc.revision, j.doc.conversion_status.as_str())).collect();
    targets.sort_unstable();
    assert_eq!(targets, [(1, "pending"), (2, "approved")]);
    assert_eq!(j[0].doc.conversion_id, j[1].doc.conversion_id);
    worker.stop().await;
}

async fn a_duplicate_postback_is_not_delivered_again(backend: Backend) {
    let target = Target::start().await;
    let Some(f) = service(backend, &target.url("/pb?s={status}"), &["approved"]).await else { return };
    let worker = Running::start(&f, true);
    let cid = f.click_id();
    postback(&f, &cid, "dup-1", "approved").await;
    until(&f, "delivered", |j| delivered(j, 1)).await;
    let b = postback(&f, &cid, "dup-1", "approved").await;
    assert_eq!(b["status"], "duplicate");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(jobs(&f).await.len(), 1, "no second job");
    assert_eq!(target.hits().len(), 1, "no second delivery");
    // Not-reported statuses queue nothing.
    postback(&f, &cid, "dup-2", "pending").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(jobs(&f).await.len(), 1, "pending is not in the source's statuses");
    worker.stop().await;
}

/// `n` conversions, two workers on one store: every job is sent exactly once. On SQLite both run at once;
/// on FerretDB (no atomic compare-and-swap under concurrency) they take turns, one poll each.
async fn two_workers_send_each_job_once(backend: Backend, concurrent: bool) {
    let target = Target::start().await;
    let Some(f) = service(backend, &target.url("/pb?tx={transactionId}"), &["approved"]).await else { return };
    let n = 20;
    for i in 0..n {
        postback(&f, &f.click_id(), &format!("two-{i}"), "approved").await;
    }
    assert_eq!(jobs(&f).await.len(), n);
    let worker = |_| {
        let small = OutboundSettings { batch: 3, ..settings(true) };
        OutboundWorker::new(f.store.clone(), small, &Telemetry::new())
    };
    let (a, b) = (worker(0), worker(1));
    let first = a.id().to_owned();
    if concurrent {
        let stop = CancellationToken::new();
        let (ta, tb) = (a.spawn(stop.clone()), b.spawn(stop.clone()));
        until(&f, "all delivered", |j| delivered(j, n)).await;
        stop.cancel();
        ta.await.expect("a");
        tb.await.expect("b");
    } else {
        for _ in 0..n {
            a.tick().await.expect("tick a");
            b.tick().await.expect("tick b");
        }
        until(&f, "all delivered", |j| delivered(j, n)).await;
    }
    let hits = target.hits();
    let mut keys: Vec<&str> = hits.iter().map(|h| h.idempotency_key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!((hits.len(), keys.len()), (n, n), "each job sent once");
    let j = jobs(&f).await;
    assert!(j.iter().all(|j| j.doc.attempts == 1), "one attempt each");
    let by_a = j.iter().filter(|j| j.doc.log[0].worker == first).count();
    if concurrent {
        assert!(by_a > 0 && by_a < n, "both workers took jobs ({by_a} of {n} by the first)");
    }
}

/// A store whose `outboundPostbacks` inserts fail while `queue_down` is set; everything else works.
struct QueueDown {
    inner: Arc<dyn ConfigStore>,
    queue_down: AtomicBool,
}

#[async_trait]
impl ConfigStore for QueueDown {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn ensure_indexes(&self) -> StoreResult<()> {
        self.inner.ensure_indexes().await
    }
    async fn insert(&self, c: Collection, d: Value) -> StoreResult<Value> {
        if c == Collection::OutboundPostbacks && self.queue_down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the queue is switched off by the test".into()));
        }
        self.inner.insert(c, d).await
    }
    async fn get(&self, c: Collection, id: &str) -> StoreResult<Option<Value>> {
        self.inner.get(c, id).await
    }
    async fn find(&self, c: Collection, q: &Query) -> StoreResult<Vec<Value>> {
        self.inner.find(c, q).await
    }
    async fn count(&self, c: Collection, f: &Filter) -> StoreResult<u64> {
        self.inner.count(c, f).await
    }
    async fn replace(&self, c: Collection, id: &str, v: Option<u64>, d: Value) -> StoreResult<Value> {
        self.inner.replace(c, id, v, d).await
    }
    async fn delete(&self, c: Collection, id: &str, v: Option<u64>) -> StoreResult<()> {
        self.inner.delete(c, id, v).await
    }
    async fn config_revision(&self) -> StoreResult<String> {
        self.inner.config_revision().await
    }
    async fn bump_config_revision(&self) -> StoreResult<String> {
        self.inner.bump_config_revision().await
    }
}

/// The conversion is recorded but its job can't be queued: `503 outboundQueueUnavailable` (the conversion
/// event is still emitted), and the network's retry — a duplicate — queues the job, delivered once.
async fn finished_jobs_are_removed_after_their_retention(backend: Backend) {
    let target = Target::start().await;
    let Some(f) = service(backend, &target.url(PB_PATH), &["approved", "pending"]).await else { return };
    let worker = Running::start(&f, true);
    postback(&f, &f.click_id(), "kept-1", "approved").await;
    until(&f, "delivered", |j| delivered(j, 1)).await;
    worker.stop().await;
    // A pending job, due far in the future: never removed.
    postback(&f, &f.click_id(), "kept-2", "pending").await;
    let j = jobs(&f).await;
    let finished = j.iter().find(|j| j.doc.status == JobStatus::Delivered).expect("delivered").doc.next_attempt_at;

    assert_eq!(sweep(f.store.as_ref(), finished, 100).await.expect("sweep"), 0, "not older than its finish");
    assert_eq!(jobs(&f).await.len(), 2);
    let far = events::now_millis() + 3_600_000;
    assert_eq!(sweep(f.store.as_ref(), far, 100).await.expect("sweep"), 1, "the delivered job only");
    let left = jobs(&f).await;
    assert_eq!((left.len(), left[0].doc.status), (1, JobStatus::Pending));
}

/// The click as the traffic service recorded it, in SQLite analytics.
fn recorded_click(f: &Fixture, click_id: &str, campaign: &str) -> Event {
    Event::Click(ClickEvent {
        click_id: click_id.to_owned(),
        ts: events::now_millis(),
        campaign_id: campaign.to_owned(),
        stream_id: f.stream.clone(),
        destination_id: f.destination.clone(),
        traffic_source_id: f.source.clone(),
        source_click_id: "push-778".into(),
        ip: "198.51.100.7".into(),
        country: "AT".into(),
        utm_campaign: "winter sale".into(),
        subs: vec!["zone-12".into(), "creative-3".into()],
        cost: "0.04".parse().expect("cost"),
        currency: "USD".into(),
        ..ClickEvent::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_facts_from_analytics_fill_the_source_url() {
    let target = Target::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let clicks: Arc<dyn Analytics> =
        Arc::new(SqliteAnalytics::open(&dir.path().join("analytics.sqlite")).await.expect("analytics"));
    let f =
        start_with(sqlite(&dir).await, dir, Extras { clicks: Some(Arc::clone(&clicks)), ..Extras::default() }).await;
    let url =
        target.url("/pb?s1={sub1}&s2={s2}&sc={source_click_id}&ip={ip}&geo={country}&cost={cost}&uc={utmCampaign}");
    let mut source = f.store.get(Collection::TrafficSources, &f.source).await.expect("read").expect("source");
    source["outboundPostbackUrl"] = json!(url);
    f.store.replace(Collection::TrafficSources, &f.source, None, source).await.expect("replace");
    f.store.bump_config_revision().await.expect("revision");
    let r = reqwest::Client::new().post(format!("{}/internal/reload", f.base)).send().await.expect("reload");
    assert_eq!(r.status(), 200);
    let worker = Running::start(&f, true);

    // A click analytics has: its facts reach the source.
    let cid = f.click_id();
    clicks.insert_events(vec![recorded_click(&f, &cid, &f.campaign)]).await.expect("insert");
    postback(&f, &cid, "order-1", "approved").await;
    until(&f, "delivered", |j| delivered(j, 1)).await;
    let hits = target.hits();
    assert_eq!(
        hits[0].uri,
        "/pb?s1=zone-12&s2=creative-3&sc=push-778&ip=198.51.100.7&geo=AT&cost=0.04&uc=winter%20sale"
    );

    // A click analytics doesn't have yet: the conversion still counts, the click's macros are empty.
    postback(&f, &f.click_id(), "order-2", "approved").await;
    until(&f, "delivered", |j| delivered(j, 2)).await;
    assert_eq!(target.hits()[1].uri, "/pb?s1=&s2=&sc=&ip=&geo=&cost=&uc=");

    // A genuine click ID whose campaign this configuration no longer knows is attributed from analytics.
    let gone = f.codec.issue(events::now_millis(), "deleted-campaign", "old-stream", "old-destination");
    clicks.insert_events(vec![recorded_click(&f, &gone, "deleted-campaign")]).await.expect("insert");
    let b = postback(&f, &gone, "order-3", "approved").await;
    let conv = f.store.get(Collection::Conversions, b["conversionId"].as_str().expect("id")).await.expect("read");
    let conv = conv.expect("stored");
    assert_eq!((conv["campaignId"].as_str(), conv["attributed"].as_bool()), (Some("deleted-campaign"), Some(true)));
    assert_eq!(conv["click"]["subs"][0], "zone-12");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_enqueue_answers_503_and_the_networks_retry_queues_it() {
    let target = Target::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(QueueDown { inner: sqlite(&dir).await, queue_down: AtomicBool::new(true) });
    let f = start(store.clone(), dir).await;
    let mut source = f.store.get(Collection::TrafficSources, &f.source).await.expect("read").expect("source");
    source["outboundPostbackUrl"] = json!(target.url("/pb?tx={transactionId}"));
    f.store.replace(Collection::TrafficSources, &f.source, None, source).await.expect("replace");
    f.store.bump_config_revision().await.expect("revision");
    reqwest::Client::new().post(format!("{}/internal/reload", f.base)).send().await.expect("reload");
    let worker = Running::start(&f, true);

    let cid = f.click_id();
    let q = format!("/postback/neta?clickid={cid}&txid=q-1&payout=3&token=s3cr3t");
    let (code, b) = f.get(&q).await;
    assert_eq!((code, b["error"]["code"].as_str()), (503, Some("outboundQueueUnavailable")), "{b}");
    let conv = b["conversionId"].as_str().expect("the recorded conversion is named").to_owned();
    assert_eq!(f.conversion_docs().await, 1);
    assert!(jobs(&f).await.is_empty());

    store.queue_down.store(false, Ordering::SeqCst);
    let (code, b) = f.get(&q).await;
    assert_eq!((code, b["status"].as_str(), b["conversionId"].as_str()), (200, Some("duplicate"), Some(conv.as_str())));
    until(&f, "delivered", |j| delivered(j, 1)).await;
    assert_eq!(target.hits().len(), 1);
    f.shipped(2).await;
    assert_eq!(f.events.conversions().len(), 1, "one conversion event, from the first answer");
    worker.stop().await;
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite_store {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(Backend::Sqlite).await;
            })*
        }
        mod ferretdb_store {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(Backend::FerretDb).await;
            })*
        }
    };
}

on_both_backends!(
    a_conversion_reaches_the_source_once,
    retries_until_delivered,
    a_retry_survives_a_restart,
    five_failures_and_the_job_fails,
    redirects_are_not_followed,
    private_targets_are_refused_unless_allowed,
    a_status_change_is_a_second_delivery,
    a_duplicate_postback_is_not_delivered_again,
    finished_jobs_are_removed_after_their_retention,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_workers_send_each_job_once_on_sqlite() {
    two_workers_send_each_job_once(Backend::Sqlite, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_taking_turns_send_each_job_once_on_ferretdb() {
    two_workers_send_each_job_once(Backend::FerretDb, false).await;
}
