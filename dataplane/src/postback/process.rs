//! One postback, from request to recorded conversion: the steps between the HTTP handler (which answers
//! and logs) and the store. Every refusal is a [`Failure`] with the HTTP status, a stable code and a message.
//!
//! Click lookup: a click ID that doesn't verify (forged, malformed, another key) or whose campaign this
//! configuration doesn't know is recorded *unattributed* on `failOpen` networks (the default: a conversion is
//! never lost for a late or unknown click) and refused with `422 unknownClick` on `failClosed` ones.
//!
//! Enrichment: when analytics is configured and the click ID verifies, the click itself is looked up there
//! (within [`CLICK_LOOKUP_TIMEOUT`]); its facts (`sub1`…, UTM fields, the source's click ID, IP, country,
//! cost) are kept on the conversion for outbound postback macros, and a click whose campaign this
//! configuration no longer knows is attributed from them. A click analytics doesn't have yet (or an analytics
//! outage) changes nothing else: the conversion is recorded as the click ID alone allows.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use traffoflex_core::analytics::Analytics;
use traffoflex_core::clickid::ClickIdCodec;
use traffoflex_core::events::{self, ConversionEvent, PostbackLogEvent, now_millis};
use traffoflex_core::store::{ConfigStore, Stored};
use traffoflex_crds::affiliate_network::DEFAULT_HMAC_WINDOW_SECONDS;
use traffoflex_crds::{AuthMode, ClickLookupMode, ConversionStatus};

use super::auth::{AuthError, check_signature, check_token, ip_allowed};
use super::config::{NetworkEntry, PostbackSnapshot};
use super::currency::CurrencyRates;
use super::normalize::{Normalized, normalize};
use super::record::{ConversionDoc, RecordError, Recorded, record};
use super::request::{ParamsError, parse_params, redact};

/// Network parameters of `POST /api/postbacks` (the MVP's shape).
const NETWORK_PARAMS: &[&str] = &["network", "network_id", "networkId", "network_key"];

/// A postback as the handler received it.
pub struct Inbound<'a> {
    pub method: &'static str,
    pub path: &'a str,
    /// The network key from the path; `None` on `/api/postbacks`.
    pub key: Option<&'a str>,
    pub ip: IpAddr,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// The body, or `Err` when it was too large or could not be read.
    pub body: Result<Bytes, ()>,
    pub now_secs: i64,
}

/// A refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
    Failure { status, code, message: message.into() }
}

/// What became of a postback: stored, with the conversion event to append (none for a duplicate), or refused.
pub type Outcome = Result<(Recorded, Option<ConversionEvent>), Failure>;

/// How long a postback waits for its click's facts from analytics before going on without them.
pub const CLICK_LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// Where a postback's steps read from.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub store: &'a dyn ConfigStore,
    pub codec: &'a ClickIdCodec,
    pub snapshot: &'a PostbackSnapshot,
    /// Where clicks are looked up for enrichment, when configured.
    pub clicks: Option<&'a dyn Analytics>,
    /// The report currency and the rates revenue is converted at.
    pub rates: &'a CurrencyRates,
}

/// Runs the postback through every step; fills what it learns into `log`.
pub async fn process(from: Sources<'_>, inbound: Inbound<'_>, log: &mut PostbackLogEvent) -> Outcome {
    let recorded = steps(from, inbound, log).await?;
    let event = match &recorded {
        Recorded::Accepted(c) | Recorded::Updated(c) => Some(conversion_event(c)),
        Recorded::Duplicate(_) => None,
    };
    Ok((recorded, event))
}

async fn steps(from: Sources<'_>, inbound: Inbound<'_>, log: &mut PostbackLogEvent) -> Result<Recorded, Failure> {
    let Sources { store, codec, snapshot, clicks, rates } = from;
    let body = inbound
        .body
        .map_err(|()| fail(StatusCode::PAYLOAD_TOO_LARGE, "payloadTooLarge", "the body is too large or unreadable"))?;
    let content_type = inbound.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let params = parse_params(inbound.query, content_type, &body);
    let network = match inbound.key {
        Some(key) => snapshot.network_by_key_or_id(key),
        None => {
            let params = params.as_ref().map_err(params_failure)?;
            let key = NETWORK_PARAMS
                .iter()
                .find_map(|n| params.iter().find(|(k, v)| k == n && !v.is_empty()).map(|(_, v)| v.as_str()));
            match key {
                Some(key) => {
                    log.network_key = key.to_owned();
                    snapshot.network_by_key_or_id(key)
                }
                // The MVP's form: no network named, the secret says whose postback it is.
                None => Some(snapshot.network_by_token(params).ok_or_else(|| {
                    fail(
                        StatusCode::BAD_REQUEST,
                        "missingNetwork",
                        "name the network in `network` (no single network's token was given either)",
                    )
                })?),
            }
        }
    };
    let network: &NetworkEntry =
        network.ok_or_else(|| fail(StatusCode::NOT_FOUND, "unknownNetwork", "no affiliate network with this key"))?;
    log.network_id.clone_from(&network.id);
    log.team_id = network.spec.team_id.clone().unwrap_or_else(|| traffoflex_crds::DEFAULT_TEAM.to_owned());
    log.network_key.clone_from(&network.spec.key);
    let auth = &network.spec.auth;
    if let Ok(p) = &params {
        log.request = redact(inbound.method, inbound.path, p, auth.token_param.as_deref());
    }
    if !ip_allowed(&network.allowlist, inbound.ip) {
        return Err(fail(
            StatusCode::FORBIDDEN,
            "ipNotAllowed",
            format!("{} is not on the network's allowlist", inbound.ip),
        ));
    }
    if auth.mode == AuthMode::Hmac {
        let payload = if inbound.method == "GET" { inbound.query.as_bytes() } else { &body[..] };
        let signature = inbound.headers.get("x-signature").and_then(|v| v.to_str().ok());
        let window = auth.window_seconds.unwrap_or(DEFAULT_HMAC_WINDOW_SECONDS);
        check_signature(signature, payload, auth.secret.as_deref(), window, inbound.now_secs).map_err(auth_failure)?;
    }
    let params = params.map_err(|e| params_failure(&e))?;
    if auth.mode == AuthMode::Token {
        check_token(&params, auth.token_param.as_deref(), auth.token.as_deref()).map_err(auth_failure)?;
    }
    let n =
        normalize(&params, network.template.as_ref()).map_err(|r| fail(StatusCode::BAD_REQUEST, r.code, r.message))?;
    log.click_id.clone_from(&n.click_id);
    log.transaction_id.clone_from(&n.transaction_id);
    let mut doc = attribute(codec, snapshot, network, n)?;
    doc.revenue = rates.revenue(doc.payout, &doc.currency).amount();
    if let Some(clicks) = clicks {
        enrich(clicks, &mut doc).await;
    }
    record(store, doc).await.map_err(|e| match e {
        RecordError::Unavailable(m) => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "storeUnavailable",
            format!("conversions can't be stored now; retry later ({m})"),
        ),
        RecordError::Contention => fail(StatusCode::SERVICE_UNAVAILABLE, "contention", e.to_string()),
        RecordError::Store(e) => {
            tracing::error!(error = %e, "recording a conversion failed");
            fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the conversion could not be recorded")
        }
    })
}

fn params_failure(e: &ParamsError) -> Failure {
    match e {
        ParamsError::Json(_) => fail(StatusCode::BAD_REQUEST, "invalidBody", e.to_string()),
        ParamsError::MediaType(_) => fail(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupportedMediaType", e.to_string()),
    }
}

fn auth_failure(e: AuthError) -> Failure {
    match e {
        AuthError::NotConfigured => fail(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the network's secret is not configured; postbacks are refused",
        ),
        other => fail(StatusCode::UNAUTHORIZED, "unauthorized", other.to_string()),
    }
}

/// The conversion document for `n`, attributed from the click ID when it verifies and its campaign is known.
fn attribute(
    codec: &ClickIdCodec,
    snapshot: &PostbackSnapshot,
    network: &NetworkEntry,
    n: Normalized,
) -> Result<ConversionDoc, Failure> {
    let mut doc = ConversionDoc {
        network_id: network.id.clone(),
        network_key: network.spec.key.clone(),
        transaction_id: n.transaction_id,
        click_id: n.click_id,
        status: n.status,
        payout: n.payout,
        currency: n.currency,
        // In the report currency once converted (see `steps`).
        revenue: n.payout,
        event_type: n.event_type,
        campaign_id: String::new(),
        stream_id: String::new(),
        destination_id: String::new(),
        traffic_source_id: String::new(),
        team_id: network.spec.team_id.clone().unwrap_or_else(|| traffoflex_crds::DEFAULT_TEAM.to_owned()),
        attributed: false,
        click_ts: 0,
        click: None,
        ts: now_millis(),
        revision: 1,
    };
    let fail_closed = network.spec.click_lookup == ClickLookupMode::FailClosed;
    let info = match codec.verify(&doc.click_id) {
        Ok(info) => info,
        Err(e) if fail_closed => return Err(fail(StatusCode::UNPROCESSABLE_ENTITY, "unknownClick", e.to_string())),
        Err(e) => {
            tracing::info!(network = %doc.network_key, error = %e, "recording an unattributed conversion");
            return Ok(doc);
        }
    };
    doc.click_ts = info.ts_millis;
    match snapshot.routing.resolve(&info) {
        Some(a) => {
            doc.attributed = true;
            doc.campaign_id = a.campaign_id.to_owned();
            if let Some(c) = snapshot.routing.campaign_by_id(a.campaign_id) {
                c.team_id().clone_into(&mut doc.team_id);
            }
            doc.stream_id = a.stream_id.unwrap_or_default().to_owned();
            doc.destination_id = a.destination_id.unwrap_or_default().to_owned();
            doc.traffic_source_id = snapshot
                .routing
                .campaign_by_id(a.campaign_id)
                .and_then(|c| c.traffic_source_id())
                .unwrap_or_default()
                .to_owned();
            Ok(doc)
        }
        None if fail_closed => Err(fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknownClick",
            "the click ID is ours but its campaign is not known here",
        )),
        None => Ok(doc),
    }
}

/// Adds the click's facts from analytics to a conversion whose click ID verified (see the module docs).
async fn enrich(clicks: &dyn Analytics, doc: &mut ConversionDoc) {
    if doc.click_ts <= 0 {
        return;
    }
    let ts = u32::try_from(doc.click_ts / 1000).ok();
    let facts = match tokio::time::timeout(CLICK_LOOKUP_TIMEOUT, clicks.click_facts(&doc.click_id, ts)).await {
        Ok(Ok(Some(facts))) => facts,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "click lookup failed; the conversion goes on without the click's facts");
            return;
        }
        Err(_) => {
            tracing::debug!("click lookup timed out; the conversion goes on without the click's facts");
            return;
        }
    };
    if doc.campaign_id.is_empty() && !facts.campaign_id.is_empty() {
        doc.attributed = true;
        doc.campaign_id.clone_from(&facts.campaign_id);
        doc.stream_id.clone_from(&facts.stream_id);
        doc.destination_id.clone_from(&facts.destination_id);
        doc.traffic_source_id.clone_from(&facts.traffic_source_id);
    }
    doc.click = Some(facts);
}

fn event_status(s: ConversionStatus) -> events::ConversionStatus {
    match s {
        ConversionStatus::Approved => events::ConversionStatus::Approved,
        ConversionStatus::Pending => events::ConversionStatus::Pending,
        ConversionStatus::Rejected => events::ConversionStatus::Rejected,
    }
}

/// The conversion event of a stored conversion (its revision included).
pub fn conversion_event(c: &Stored<ConversionDoc>) -> ConversionEvent {
    let d = &c.doc;
    ConversionEvent {
        conversion_id: c.id.clone(),
        ts: d.ts,
        revision: d.revision,
        network_id: d.network_id.clone(),
        transaction_id: d.transaction_id.clone(),
        click_id: d.click_id.clone(),
        click_ts: d.click_ts,
        status: event_status(d.status),
        payout: d.payout,
        currency: d.currency.clone(),
        revenue: d.revenue,
        campaign_id: d.campaign_id.clone(),
        stream_id: d.stream_id.clone(),
        destination_id: d.destination_id.clone(),
        traffic_source_id: d.traffic_source_id.clone(),
        team_id: if d.team_id.is_empty() { traffoflex_crds::DEFAULT_TEAM.to_owned() } else { d.team_id.clone() },
        attributed: d.attributed,
    }
}
