//! `/reports/*`: the report layer of `traffoflex_core::analytics` (ClickHouse or the embedded store), always
//! restricted to the caller's team.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query as QueryParams, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use schemars::JsonSchema;
use serde::Serialize;
use traffoflex_core::analytics::{
    Day, DestinationHealth, GroupBy, Metrics, ReportParams, ReportQuery, reports::MAX_PAGE,
};

use crate::ApiState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};

/// Every report name under `/reports/`.
pub const REPORTS: [&str; 11] = [
    "overview",
    "daily",
    "campaigns",
    "streams",
    "destinations",
    "traffic-sources",
    "countries",
    "sub1",
    "trafficback",
    "health",
    "ingestion-errors",
];

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/reports/{name}", get(report))
}

/// The daily report: one row per local day, days without events included.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DailyReport {
    pub rows: Vec<Day>,
    pub totals: Metrics,
}

/// Destination health checks within the range.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthReport {
    pub rows: Vec<DestinationHealth>,
}

/// The report query of a request: `from`, `to`, `tz`, `campaignId`, scoped to the caller's team.
pub(crate) fn report_query(params: &HashMap<String, String>, principal: &Principal) -> ApiResult<ReportQuery> {
    let get = |k: &str| params.get(k).cloned();
    let p = ReportParams {
        from: get("from"),
        to: get("to"),
        tz: get("tz"),
        campaign_id: get("campaignId"),
        team_id: Some(principal.team().to_owned()),
    };
    Ok(p.into_query(Utc::now())?)
}

/// `limit` (1..=`max`, default `default`) and `offset` of a paged request.
pub(crate) fn paging(params: &HashMap<String, String>, default: u32, max: u32) -> ApiResult<(u32, u64)> {
    let limit = match params.get("limit").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => default,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::invalid_field("limit", format!("a whole number from 1 to {max}")))?,
    };
    let offset = match params.get("offset").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => 0,
        Some(s) => s.parse::<u64>().map_err(|_| ApiError::invalid_field("offset", "a whole number from 0"))?,
    };
    Ok((limit, offset))
}

async fn report(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    Path(name): Path<String>,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> ApiResult<Response> {
    if !REPORTS.contains(&name.as_str()) {
        return Err(ApiError::not_found(format!("no report `{name}`; there are: {}", REPORTS.join(", "))));
    }
    let q = report_query(&params, &principal)?;
    let a = state.analytics.as_ref();
    let q = &q;
    let grouped = |by| async move { a.grouped(q, by).await };
    Ok(match name.as_str() {
        "overview" => Json(a.overview(q).await?).into_response(),
        "daily" => {
            let rows = a.daily(q).await?;
            let totals = a.overview(q).await?;
            Json(DailyReport { rows, totals }).into_response()
        }
        "campaigns" => Json(grouped(GroupBy::Campaign).await?).into_response(),
        "streams" => Json(grouped(GroupBy::Stream).await?).into_response(),
        "destinations" => Json(grouped(GroupBy::Destination).await?).into_response(),
        "traffic-sources" => Json(grouped(GroupBy::TrafficSource).await?).into_response(),
        "countries" => Json(grouped(GroupBy::Country).await?).into_response(),
        "sub1" => Json(grouped(GroupBy::Sub1).await?).into_response(),
        "trafficback" => Json(a.trafficback(q).await?).into_response(),
        "health" => Json(HealthReport { rows: a.health(q).await? }).into_response(),
        _ => {
            principal.require(crate::auth::Role::Admin)?;
            let (limit, offset) = paging(&params, 100, MAX_PAGE)?;
            Json(a.ingestion_errors(q, limit, offset).await?).into_response()
        }
    })
}
