//! Logs and operations: postback logs, destination health and manual checks, ingestion errors, the audit
//! trail, and a manual cache reload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query as QueryParams, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use traffoflex_core::analytics::reports::MAX_PAGE;
use traffoflex_core::analytics::{DestinationHealth, IngestionErrorPage, PostbackLogFilter, PostbackLogPage};
use traffoflex_core::store::{Collection, Filter, Query};
use traffoflex_crds::DestinationSpec;
use traffoflex_dataplane::health::checker::check_url;
use traffoflex_dataplane::health::probe::probe;
use traffoflex_dataplane::postback::outbound::queue::OutboundJob;

use crate::ApiState;
use crate::auth::{DEFAULT_TEAM, Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::objects::{AuditEntry, Page, keyset_page, list_limit};
use crate::reports::{paging, report_query};

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/postback-logs", get(postback_logs))
        .route("/destinations/{id}/health", get(destination_health))
        .route("/destinations/{id}/healthcheck", post(health_check))
        .route("/ingestion-errors", get(ingestion_errors))
        .route("/audit-log", get(audit_log))
        .route("/outbound-postbacks", get(outbound_postbacks))
        .route("/cache/reload", post(reload))
}

async fn postback_logs(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> ApiResult<Json<PostbackLogPage>> {
    let q = report_query(&params, &principal)?;
    let (limit, offset) = paging(&params, 100, MAX_PAGE)?;
    let get = |k: &str| params.get(k).cloned();
    let filter = PostbackLogFilter {
        network_id: get("networkId"),
        outcome: get("outcome"),
        click_id: get("clickId"),
        transaction_id: get("transactionId"),
    };
    Ok(Json(state.analytics.postback_logs(&q, &filter, limit, offset).await?))
}

async fn ingestion_errors(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> ApiResult<Json<IngestionErrorPage>> {
    principal.require(Role::Admin)?;
    let q = report_query(&params, &principal)?;
    let (limit, offset) = paging(&params, 100, MAX_PAGE)?;
    Ok(Json(state.analytics.ingestion_errors(&q, limit, offset).await?))
}

/// A destination's health: the state the checkers keep, and what the checks saw within the range.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    pub destination_id: String,
    /// `false` once the destination failed enough checks in a row; `true` when never checked.
    pub healthy: bool,
    /// The latest scheduled check, if any: `lastCheckedAt`, `lastStatus`, `lastError`, `lastLatencyMillis`,
    /// `consecutiveFailures`, `consecutiveSuccesses`.
    pub state: Option<Value>,
    /// The checks within the report range (`from`, `to`, `tz`).
    pub history: Option<DestinationHealth>,
}

async fn destination_in_team(state: &ApiState, principal: &Principal, id: &str) -> ApiResult<Value> {
    match state.store.get(Collection::Destinations, id).await? {
        Some(doc) if doc.get("teamId").and_then(Value::as_str).unwrap_or(DEFAULT_TEAM) == principal.team() => Ok(doc),
        _ => Err(ApiError::not_found(format!("no Destination {id}"))),
    }
}

async fn destination_health(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> ApiResult<Json<HealthView>> {
    destination_in_team(&state, &principal, &id).await?;
    let q = report_query(&params, &principal)?;
    let current = state.store.get(Collection::DestinationHealth, &id).await?;
    let healthy = current.as_ref().and_then(|d| d.get("healthy")).and_then(Value::as_bool).unwrap_or(true);
    let history = state.analytics.health(&q).await?.into_iter().find(|h| h.destination_id == id);
    let state_doc = current.map(|mut d| {
        if let Some(map) = d.as_object_mut() {
            map.remove("id");
        }
        d
    });
    Ok(Json(HealthView { destination_id: id, healthy, state: state_doc, history }))
}

/// The outcome of a manual health check.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub destination_id: String,
    /// The URL requested (the health-check URL, or the destination URL without its macros).
    pub url: String,
    /// A 2xx or 3xx answer within the timeout.
    pub ok: bool,
    /// 0 when nothing answered.
    pub http_status: u16,
    pub latency_millis: u32,
    /// Why it failed; empty when it did not.
    pub error: String,
}

/// Checks a destination now. The result is answered, not recorded: the destination's state changes only
/// through the scheduled checks, so one manual check cannot flip a destination out of rotation.
async fn health_check(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<CheckResult>> {
    principal.require(Role::Manager)?;
    let doc = destination_in_team(&state, &principal, &id).await?;
    let spec: DestinationSpec = serde_json::from_value(doc)
        .map_err(|e| ApiError::conflict("unusable", format!("Destination {id} cannot be read: {e}")))?;
    let url = check_url(&spec);
    let timeout = spec
        .health_check
        .as_ref()
        .and_then(|h| h.timeout_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| (1..=30).contains(s))
        .map_or(Duration::from_secs(5), Duration::from_secs);
    let r = probe(&url, timeout, state.settings.health_policy).await;
    Ok(Json(CheckResult {
        destination_id: id,
        url,
        ok: r.ok,
        http_status: r.http_status,
        latency_millis: r.latency_millis,
        error: r.error,
    }))
}

async fn audit_log(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    principal.require(Role::Manager)?;
    let limit = list_limit(&params)?;
    let mut filter = Filter::all().eq("teamId", principal.team());
    if let Some(object) = params.get("objectId").filter(|s| !s.is_empty()) {
        filter = filter.eq("objectId", object.as_str());
    }
    newest_first(&state, Collection::AuditLog, filter, limit, params.get("cursor")).await
}

/// An outbound postback to a traffic source with its delivery log; `id` is the `Idempotency-Key` it is sent
/// with.
#[derive(Debug, Serialize, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboundDelivery {
    pub id: String,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    #[serde(flatten)]
    pub job: OutboundJob,
}

/// Outbound postbacks of your team, newest first: `?status=pending|delivered|failed`, `?conversionId`, cursor
/// paging.
async fn outbound_postbacks(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> ApiResult<Json<Page<OutboundDelivery>>> {
    let limit = list_limit(&params)?;
    let mut filter = Filter::all().eq("teamId", principal.team());
    if let Some(status) = params.get("status").filter(|s| !s.is_empty()) {
        if !["pending", "delivered", "failed"].contains(&status.as_str()) {
            return Err(ApiError::invalid_field("status", "pending, delivered or failed"));
        }
        filter = filter.eq("status", status.as_str());
    }
    if let Some(conversion) = params.get("conversionId").filter(|s| !s.is_empty()) {
        filter = filter.eq("conversionId", conversion.as_str());
    }
    newest_first(&state, Collection::OutboundPostbacks, filter, limit, params.get("cursor")).await
}

/// A page of `coll`'s documents matching `filter`, newest first, continuing after `cursor`.
async fn newest_first<T: serde::de::DeserializeOwned>(
    state: &ApiState,
    coll: Collection,
    filter: Filter,
    limit: u64,
    cursor: Option<&String>,
) -> ApiResult<Json<Page<T>>> {
    let page = keyset_page(state, coll, Query::filtered(filter).sort_desc("id"), limit, cursor).await?;
    let items = page
        .docs
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<Vec<T>, _>>()
        .map_err(|e| ApiError::internal(format!("a stored {coll} document does not fit its type: {e}")))?;
    Ok(Json(Page { items, next_cursor: page.next_cursor, total: page.total }))
}

/// The configuration revision every data-plane process now loads.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReloadResult {
    pub revision: String,
}

async fn reload(State(state): State<Arc<ApiState>>, principal: Principal) -> ApiResult<Json<ReloadResult>> {
    principal.require(Role::Manager)?;
    state.config_changed().await;
    Ok(Json(ReloadResult { revision: state.store.config_revision().await? }))
}
