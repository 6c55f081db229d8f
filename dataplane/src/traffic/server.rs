//! The traffic HTTP service: `GET|HEAD /c/{campaignKey}`, the MVP's `/go/{campaignId}` and
//! `/r/{publicToken}`, the direct trafficback entry `/tb/{campaignKey}`, plus `POST /internal/reload`.
//!
//! Per click: the snapshot in force (no store access) -> the request's facts -> the routing engine -> the
//! click event appended to the click log (in durable mode the redirect waits for its group commit, a fraction
//! of a millisecond shared with every click that arrived meanwhile) -> `302`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use traffoflex_core::bus::Topic;
use traffoflex_core::clickid::ClickIdCodec;
use traffoflex_core::events::ClickRef;
use traffoflex_core::telemetry::Telemetry;

use super::config::LiveConfig;
use super::geo::GeoIp;
use super::stats::DestinationStats;
use super::unique::UniqueVisitors;
use super::visitor::{DeviceCache, TrustedProxies, client_ip, language};
use crate::clicklog::{ClickLog, Record};
use crate::health::checker::SharedHealth;
use crate::routing::text::StackStr;
use crate::routing::{
    AntiRepeatCache, CampaignEntry, ClickContext, RouteDecision, RouteInputs, RoutingSnapshot, route, route_trafficback,
};

/// Everything a click handler needs, shared by all requests.
pub struct TrafficState {
    pub config: Arc<LiveConfig>,
    pub log: Arc<ClickLog>,
    pub click_ids: ClickIdCodec,
    pub trusted_proxies: TrustedProxies,
    /// A header set by a trusted edge with the visitor's country (e.g. `CF-IPCountry`), if any.
    pub country_header: Option<header::HeaderName>,
    /// The bearer token `POST /internal/reload` requires; without one only loopback callers may reload.
    pub reload_token: Option<String>,
    pub anti_repeat: AntiRepeatCache,
    pub unique: UniqueVisitors,
    /// Recently read user agents.
    pub devices: DeviceCache,
    /// Destinations the health checks took out; refreshed in the background, read without a lock.
    pub health: SharedHealth,
    /// Cap usage and bestRoi figures; refreshed from analytics in the background, plus this process's clicks.
    pub stats: Arc<DestinationStats>,
    /// Location and network of visitors from MaxMind databases, when configured.
    pub geo: Arc<GeoIp>,
    metrics: TrafficMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Default)]
struct TrafficMetrics {
    requests: Family<OutcomeLabel, Counter>,
    /// The two outcomes of almost every click, taken out of `requests` once rather than looked up per click.
    redirects: Counter,
    trafficbacks: Counter,
    log_drops: Counter,
}

impl TrafficMetrics {
    fn new() -> Self {
        let requests = Family::<OutcomeLabel, Counter>::default();
        let redirects = requests.get_or_create(&OutcomeLabel { outcome: "redirect" }).clone();
        let trafficbacks = requests.get_or_create(&OutcomeLabel { outcome: "trafficback" }).clone();
        Self { requests, redirects, trafficbacks, log_drops: Counter::default() }
    }
}

impl TrafficState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<LiveConfig>,
        log: Arc<ClickLog>,
        click_ids: ClickIdCodec,
        trusted_proxies: TrustedProxies,
        country_header: Option<header::HeaderName>,
        reload_token: Option<String>,
        telemetry: &Telemetry,
    ) -> Self {
        let metrics = TrafficMetrics::new();
        telemetry.register("traffoflex_traffic", |r| {
            r.register("requests", "Click requests by outcome", metrics.requests.clone());
            r.register(
                "click_log_drops",
                "Clicks redirected but not recorded (click log full)",
                metrics.log_drops.clone(),
            );
        });
        Self {
            config,
            log,
            click_ids,
            trusted_proxies,
            country_header,
            reload_token,
            anti_repeat: AntiRepeatCache::new(1 << 20),
            unique: UniqueVisitors::new(1 << 20, 24 * 3600 * 1000),
            devices: DeviceCache::new(1 << 14),
            health: SharedHealth::default(),
            stats: Arc::new(DestinationStats::new()),
            geo: Arc::new(GeoIp::none()),
            metrics,
        }
    }

    /// Routes around the destinations `health` says are down.
    pub fn with_health(mut self, health: SharedHealth) -> Self {
        self.health = health;
        self
    }

    /// Fills country, region, city, ASN and ISP from `geo` where the request leaves them empty.
    pub fn with_geo(mut self, geo: Arc<GeoIp>) -> Self {
        self.geo = geo;
        self
    }

    /// Reads cap usage and bestRoi figures from `stats`.
    pub fn with_stats(mut self, stats: Arc<DestinationStats>) -> Self {
        self.stats = stats;
        self
    }
}

/// The public routes.
pub fn router(state: Arc<TrafficState>) -> Router {
    Router::new()
        .route("/c/{key}", get(click))
        .route("/tb/{key}", get(trafficback_entry))
        .route("/go/{id}", get(by_campaign_id))
        .route("/r/{token}", get(by_public_token))
        .route("/internal/reload", post(reload))
        .with_state(state)
}

#[derive(Clone, Copy)]
enum Entry {
    Campaign,
    Trafficback,
}

/// What a click handler reads of its request, borrowed from it: no copy of the headers, the key or the query.
struct Incoming<'r> {
    key: Cow<'r, str>,
    peer: SocketAddr,
    query: &'r str,
    headers: &'r HeaderMap,
}

impl<'r> Incoming<'r> {
    /// The request of a route `/{prefix}/{key}`. A key that is not UTF-8 once percent-decoded names no campaign
    /// (404); a server that gives no peer address is misconfigured (500).
    fn of(s: &TrafficState, req: &'r Request) -> Result<Self, Box<Response>> {
        let path = req.uri().path();
        let raw = &path[path[1..].find('/').map_or(path.len(), |i| i + 2)..];
        let Ok(key) = percent_encoding::percent_decode_str(raw).decode_utf8() else {
            return Err(Box::new(not_found(s, "notFound", "no active campaign with this key")));
        };
        let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() else {
            let res = (StatusCode::INTERNAL_SERVER_ERROR, "the server gives no peer address").into_response();
            return Err(Box::new(res));
        };
        Ok(Self { key, peer: *peer, query: req.uri().query().unwrap_or(""), headers: req.headers() })
    }
}

async fn click(State(s): State<Arc<TrafficState>>, req: Request) -> Response {
    by_key(&s, req, Entry::Campaign).await
}

async fn trafficback_entry(State(s): State<Arc<TrafficState>>, req: Request) -> Response {
    by_key(&s, req, Entry::Trafficback).await
}

/// The MVP's `/go/{campaignPublicId}`: the campaign by its ID or its `publicId`, routed as `/c/{key}`.
async fn by_campaign_id(State(s): State<Arc<TrafficState>>, req: Request) -> Response {
    by_alias(&s, req, RoutingSnapshot::campaign_for_go, "no active campaign with this ID").await
}

/// The MVP's `/r/{publicToken}`: the campaign by its `publicToken`, routed as `/c/{key}`.
async fn by_public_token(State(s): State<Arc<TrafficState>>, req: Request) -> Response {
    by_alias(&s, req, RoutingSnapshot::campaign_by_token, "no active campaign with this token").await
}

/// A click whose path names the campaign by its key.
async fn by_key(s: &TrafficState, req: Request, entry: Entry) -> Response {
    match Incoming::of(s, &req) {
        Ok(r) => handle(s, entry, &r.key, r.peer, r.query, r.headers).await,
        Err(res) => *res,
    }
}

/// A click whose path names the campaign by another name, which `find` looks up; routed as `/c/{key}`, or 404
/// with `unknown` when the name is not a campaign's.
async fn by_alias(
    s: &TrafficState,
    req: Request,
    find: for<'a> fn(&'a RoutingSnapshot, &str) -> Option<&'a CampaignEntry>,
    unknown: &str,
) -> Response {
    let r = match Incoming::of(s, &req) {
        Ok(r) => r,
        Err(res) => return *res,
    };
    let loaded = s.config.current();
    match find(&loaded.snapshot, &r.key) {
        Some(c) => handle(s, Entry::Campaign, c.key(), r.peer, r.query, r.headers).await,
        None => not_found(s, "notFound", unknown),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn handle(
    s: &TrafficState,
    entry: Entry,
    key: &str,
    peer: SocketAddr,
    query: &str,
    headers: &HeaderMap,
) -> Response {
    let loaded = s.config.current();
    let now = Utc::now();
    let now_ms = now.timestamp_millis();
    let ua = header_str(headers, header::USER_AGENT);
    let dev = s.devices.get(ua);
    let mut ctx = ClickContext::from_query(form_urlencoded::parse(query.as_bytes()));
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = client_ip(peer.ip(), forwarded, &s.trusted_proxies);
    ctx.ip = Some(ip);
    ctx.user_agent = ua.into();
    if ctx.device_type.is_empty() {
        ctx.device_type = dev.device_type.into();
    }
    if ctx.os.is_empty() {
        ctx.os = dev.os.as_str().into();
    }
    if ctx.browser.is_empty() {
        ctx.browser = dev.browser.as_str().into();
    }
    ctx.is_bot = dev.is_bot;
    if ctx.language.is_empty() {
        ctx.language = language(header_str(headers, header::ACCEPT_LANGUAGE)).into();
    }
    if let Some(h) = &s.country_header {
        let c = header_str(headers, h.clone());
        if c.len() == 2 {
            ctx.country = c.to_ascii_uppercase().into();
        }
    }
    if s.geo.is_enabled() {
        let g = s.geo.lookup(ip);
        if ctx.country.is_empty() {
            ctx.country = g.country.into();
        }
        if ctx.region.is_empty() {
            ctx.region = g.region.into();
        }
        if ctx.city.is_empty() {
            ctx.city = g.city.into();
        }
        if ctx.isp.is_empty() {
            ctx.isp = g.isp.into();
        }
        if ctx.asn.is_none() {
            ctx.asn = g.asn;
        }
    }
    ctx.referrer = header_str(headers, header::REFERER).into();
    if let Some(c) = loaded.snapshot.campaign(key) {
        ctx.is_unique = s.unique.first_click(c.id(), Some(ip), ua, now_ms);
    }

    let (url, click_id, record, outcome) = match decide(s, entry, &loaded.snapshot, key, &ctx, now) {
        Ok(d) => d,
        Err(res) => return *res,
    };
    let recorded = !s.log.append(record).await.is_dropped();
    if !recorded {
        s.metrics.log_drops.inc();
    }
    outcome.inc();
    redirect(&url, recorded.then_some(click_id.as_str()))
}

/// Routes the click: where it goes, its ID, its event ready for the click log, and the outcome's counter. The
/// engine's borrowed inputs don't outlive this call, so the handler's future stays `Send`.
fn decide<'s>(
    s: &'s TrafficState,
    entry: Entry,
    snapshot: &RoutingSnapshot,
    key: &str,
    ctx: &ClickContext<'_>,
    now: chrono::DateTime<Utc>,
) -> Result<(String, String, Record, &'s Counter), Box<Response>> {
    let now_ms = now.timestamp_millis();
    let health = s.health.load();
    let inputs = RouteInputs {
        health: &**health,
        caps: &*s.stats,
        roi: &*s.stats,
        ..RouteInputs::new(&s.anti_repeat, &s.click_ids)
    };
    let decision = match entry {
        Entry::Campaign => route(snapshot, key, ctx, now, &inputs, &mut rand::rng()),
        Entry::Trafficback => route_trafficback(snapshot, key, ctx, now, &inputs),
    };
    match decision {
        RouteDecision::NotFound => Err(Box::new(not_found(s, "notFound", "no active campaign with this key"))),
        RouteDecision::NoRoute { .. } => {
            Err(Box::new(not_found(s, "noRoute", "no destination is available for this click")))
        }
        RouteDecision::Redirect { url, click_id, campaign, stream, destination } => {
            let ev = ClickFields::new(ctx, campaign);
            s.stats.record(destination, now, ev.cost);
            let record = ev.record(&click_id, now_ms, stream.id(), destination.id(), None);
            Ok((url, click_id, record, &s.metrics.redirects))
        }
        RouteDecision::Trafficback { url, click_id, campaign, stream, .. } => {
            let depth = u8::try_from(ctx.trafficback_depth).unwrap_or(u8::MAX);
            let stream = stream.map_or("", |s| s.id());
            let record = ClickFields::new(ctx, campaign).record(&click_id, now_ms, stream, "", Some(depth));
            Ok((url, click_id, record, &s.metrics.trafficbacks))
        }
    }
}

/// A click's facts and its campaign, with what the campaign fills in where the request left it out.
struct ClickFields<'a> {
    ctx: &'a ClickContext<'a>,
    campaign: &'a CampaignEntry,
    cost: rust_decimal::Decimal,
    currency: &'a str,
    source: &'a str,
}

impl<'a> ClickFields<'a> {
    fn new(ctx: &'a ClickContext<'a>, campaign: &'a CampaignEntry) -> Self {
        let cpc = campaign.cpc_cost();
        Self {
            ctx,
            campaign,
            cost: ctx.cost.or_else(|| cpc.map(|(v, _)| v)).unwrap_or_default(),
            currency: if ctx.currency.is_empty() { cpc.map_or("", |(_, c)| c) } else { &ctx.currency },
            source: if ctx.source.is_empty() { campaign.source_key().unwrap_or_default() } else { &ctx.source },
        }
    }

    /// The click (or, with a depth, trafficback) event in its wire form, under its click ID.
    fn record(
        &self,
        click_id: &str,
        ts: i64,
        stream_id: &str,
        destination_id: &str,
        trafficback_depth: Option<u8>,
    ) -> Record {
        let (ctx, campaign) = (self.ctx, self.campaign);
        let ip = ctx.ip.and_then(StackStr::display);
        let mut subs = [""; 10];
        for (slot, s) in subs.iter_mut().zip(&ctx.subs) {
            *slot = s;
        }
        let click = ClickRef {
            click_id,
            ts,
            campaign_id: campaign.id(),
            campaign_key: campaign.key(),
            stream_id,
            destination_id,
            traffic_source_id: campaign.traffic_source_id().unwrap_or_default(),
            team_id: campaign.team_id(),
            trafficback_depth: trafficback_depth.unwrap_or(0),
            source: self.source,
            source_click_id: &ctx.source_click_id,
            ip: ip.as_ref().map_or("", StackStr::as_str),
            country: &ctx.country,
            region: &ctx.region,
            city: &ctx.city,
            isp: &ctx.isp,
            asn: ctx.asn.unwrap_or(0),
            device_type: &ctx.device_type,
            os: &ctx.os,
            browser: &ctx.browser,
            language: &ctx.language,
            user_agent: &ctx.user_agent,
            referrer: &ctx.referrer,
            utm_source: &ctx.utm_source,
            utm_medium: &ctx.utm_medium,
            utm_campaign: &ctx.utm_campaign,
            utm_content: &ctx.utm_content,
            utm_term: &ctx.utm_term,
            subs,
            cost: self.cost,
            currency: self.currency,
            is_bot: ctx.is_bot,
            is_unique: ctx.is_unique,
        };
        Record::new(Topic::Clicks, click_id, click.encode(trafficback_depth.is_some()))
    }
}

fn redirect(url: &str, click_id: Option<&str>) -> Response {
    let Ok(location) = HeaderValue::from_str(url) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "destination URL is not a valid header value").into_response();
    };
    let mut res = StatusCode::FOUND.into_response();
    let h = res.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(id) = click_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        h.insert("x-click-id", id);
    }
    res
}

fn not_found(s: &TrafficState, code: &'static str, message: &str) -> Response {
    s.metrics.requests.get_or_create(&OutcomeLabel { outcome: code }).inc();
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut res = (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn reload(
    State(s): State<Arc<TrafficState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    crate::reload::respond(s.reload_token.as_deref(), peer, &headers, || async {
        s.config.refresh(true).await?;
        Ok(s.config.current().revision.clone())
    })
    .await
}
