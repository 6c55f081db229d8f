//! The postback HTTP service: `GET|POST /postback/{networkKey}`, the MVP's aliases `GET|POST /pb/{networkKey}`
//! and `POST /api/postbacks` (network in `network` or `network_id`), and `POST /internal/reload`.
//!
//! Per postback: network (404) -> IP allowlist (403) -> signature or token (401) -> parameters through the
//! template (400) -> attribution from the click ID (422 for `failClosed` networks) -> exactly-once record in
//! the store (503 when it is down: nothing recorded) -> conversion event -> outbound postback queued (503
//! `outboundQueueUnavailable` when that fails, so the network retries: the retry is a duplicate that queues
//! it) -> `200`. Every request, answered any way, leaves a redacted postback-log event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::json;
use traffoflex_core::analytics::Analytics;
use traffoflex_core::clickid::ClickIdCodec;
use traffoflex_core::events::{Event, PostbackLogEvent, now_millis};
use traffoflex_core::telemetry::Telemetry;

use super::config::LivePostbackConfig;
use super::currency::{CurrencyRates, Revenue};
use super::outbound::enqueue_for;
use super::process::{Inbound, Sources, process};
use crate::clicklog::{ClickLog, Record};
use crate::traffic::visitor::{TrustedProxies, client_ip};

/// The largest postback body read; larger ones get `413`.
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// Everything a postback handler needs, shared by all requests.
pub struct PostbackState {
    pub config: Arc<LivePostbackConfig>,
    /// The event log conversions and postback logs are appended to (shipped like clicks).
    pub log: Arc<ClickLog>,
    pub click_ids: ClickIdCodec,
    pub trusted_proxies: TrustedProxies,
    /// The bearer token `POST /internal/reload` requires; without one only loopback callers may reload.
    pub reload_token: Option<String>,
    /// Where clicks are looked up to enrich conversions, when analytics is configured.
    pub clicks: Option<Arc<dyn Analytics>>,
    /// The report currency revenue is converted to.
    pub rates: CurrencyRates,
    metrics: PostbackMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Default)]
struct PostbackMetrics {
    requests: Family<OutcomeLabel, Counter>,
    event_drops: Counter,
    outbound_enqueue_errors: Counter,
    unconverted: Family<CurrencyLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CurrencyLabel {
    currency: String,
}

impl PostbackState {
    pub fn new(
        config: Arc<LivePostbackConfig>,
        log: Arc<ClickLog>,
        click_ids: ClickIdCodec,
        trusted_proxies: TrustedProxies,
        reload_token: Option<String>,
        telemetry: &Telemetry,
    ) -> Self {
        let metrics = PostbackMetrics::default();
        telemetry.register("traffoflex_postback", |r| {
            r.register(
                "requests",
                "Postbacks by outcome (accepted, duplicate, updated, rejected, error)",
                metrics.requests.clone(),
            );
            r.register("event_drops", "Postback events not stored (event log full)", metrics.event_drops.clone());
            r.register(
                "outbound_enqueue_errors",
                "Conversions recorded whose outbound postback could not be queued (answered 503 so the network retries)",
                metrics.outbound_enqueue_errors.clone(),
            );
            r.register(
                "unconverted_payouts",
                "Conversions whose payout currency has no rate to the report currency (revenue left unconverted)",
                metrics.unconverted.clone(),
            );
        });
        let rates = CurrencyRates::none();
        Self { config, log, click_ids, trusted_proxies, reload_token, clicks: None, rates, metrics }
    }

    /// Converts revenue to the report currency of `rates`.
    pub fn with_rates(mut self, rates: CurrencyRates) -> Self {
        self.rates = rates;
        self
    }

    /// Enriches conversions with their clicks' facts from `analytics`.
    pub fn with_clicks(mut self, analytics: Arc<dyn Analytics>) -> Self {
        self.clicks = Some(analytics);
        self
    }
}

/// The public routes.
pub fn router(state: Arc<PostbackState>) -> Router {
    Router::new()
        .route("/postback/{key}", get(by_key_get).post(by_key_post))
        .route("/pb/{key}", get(by_key_get).post(by_key_post))
        .route("/api/postbacks", get(by_param_get).post(by_param_post))
        .route("/internal/reload", post(reload))
        .with_state(state)
}

async fn by_key_get(
    State(s): State<Arc<PostbackState>>,
    Path(key): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    handle(&s, "GET", Some(key), peer, query, &headers, Ok(Bytes::new())).await
}

async fn by_key_post(
    State(s): State<Arc<PostbackState>>,
    Path(key): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| ());
    handle(&s, "POST", Some(key), peer, query, &headers, body).await
}

async fn by_param_get(
    State(s): State<Arc<PostbackState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    handle(&s, "GET", None, peer, query, &headers, Ok(Bytes::new())).await
}

async fn by_param_post(
    State(s): State<Arc<PostbackState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| ());
    handle(&s, "POST", None, peer, query, &headers, body).await
}

async fn handle(
    s: &PostbackState,
    method: &'static str,
    key: Option<String>,
    peer: SocketAddr,
    query: Option<String>,
    headers: &HeaderMap,
    body: Result<Bytes, ()>,
) -> Response {
    let started = Instant::now();
    let snapshot = s.config.current();
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = client_ip(peer.ip(), forwarded, &s.trusted_proxies);
    let path = match &key {
        Some(k) => format!("/postback/{k}"),
        None => "/api/postbacks".to_owned(),
    };
    let mut log = PostbackLogEvent {
        id: uuid::Uuid::now_v7().to_string(),
        ts: now_millis(),
        network_key: key.clone().unwrap_or_default(),
        remote_ip: ip.to_string(),
        request: format!("{method} {path}"),
        ..PostbackLogEvent::default()
    };
    let inbound = Inbound {
        method,
        path: &path,
        key: key.as_deref(),
        ip,
        query: query.as_deref().unwrap_or(""),
        headers,
        body,
        now_secs: chrono::Utc::now().timestamp(),
    };
    let from = Sources {
        store: s.config.store().as_ref(),
        codec: &s.click_ids,
        snapshot: &snapshot,
        clicks: s.clicks.as_deref(),
        rates: &s.rates,
    };
    let outcome = process(from, inbound, &mut log).await;
    let (status, body, outcome_name) = match &outcome {
        Ok((recorded, event)) => {
            if let Some(ev) = event
                && let Revenue::NoRate(_) = s.rates.revenue(ev.payout, &ev.currency)
            {
                s.metrics.unconverted.get_or_create(&CurrencyLabel { currency: ev.currency.clone() }).inc();
                tracing::warn!(conversion = %ev.conversion_id, currency = %ev.currency, "no rate to the report currency; revenue recorded unconverted");
            }
            if let Some(event) = event
                && s.log.append(Record::from_event(&Event::Conversion(event.clone()))).await.is_dropped()
            {
                s.metrics.event_drops.inc();
                tracing::error!(conversion = %event.conversion_id, "conversion stored but its event was dropped (event log full)");
            }
            let c = recorded.conversion();
            log.conversion_id.clone_from(&c.id);
            // A duplicate queues again: the unique (conversion, target) index makes that a no-op, and it
            // queues what a failed enqueue before it left out.
            match enqueue_for(s.config.store().as_ref(), &snapshot.outbound, c).await {
                Ok(_) => {
                    let body = json!({"status": recorded.outcome(), "conversionId": c.id, "revision": c.doc.revision});
                    (StatusCode::OK, body, recorded.outcome())
                }
                Err(e) => {
                    s.metrics.outbound_enqueue_errors.inc();
                    tracing::error!(conversion = %c.id, error = %e, "conversion recorded but its outbound postback not queued");
                    let message = "the conversion is recorded, but its outbound postback could not be queued; retry";
                    log.error = format!("outboundQueueUnavailable: {e}");
                    let body = json!({"error": {"code": "outboundQueueUnavailable", "message": message},
                                      "conversionId": c.id, "revision": c.doc.revision});
                    (StatusCode::SERVICE_UNAVAILABLE, body, "error")
                }
            }
        }
        Err(f) => {
            log.error = format!("{}: {}", f.code, f.message);
            let name = if f.status.is_server_error() { "error" } else { "rejected" };
            (f.status, json!({"error": {"code": f.code, "message": f.message}}), name)
        }
    };
    log.outcome = outcome_name.to_owned();
    log.http_status = status.as_u16();
    log.latency_micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
    if s.log.append(Record::from_event(&Event::PostbackLog(log))).await.is_dropped() {
        s.metrics.event_drops.inc();
    }
    s.metrics.requests.get_or_create(&OutcomeLabel { outcome: outcome_name }).inc();
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    res
}

async fn reload(
    State(s): State<Arc<PostbackState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    crate::reload::respond(s.reload_token.as_deref(), peer, &headers, || async {
        s.config.refresh(true).await?;
        Ok(s.config.current().revision.clone())
    })
    .await
}
