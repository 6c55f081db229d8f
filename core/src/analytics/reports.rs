//! What reports ask and answer: the query (dates, time zone, filters) with its validation, the metrics, and
//! the shapes of every report. JSON is camelCase; money and ROI are decimal strings.
//!
//! Semantics, the same on every backend (the API's report documentation quotes this):
//! - `clicks` counts every click in the range, trafficback clicks and bots included, each click ID once;
//!   `uniqueClicks` those the traffic service marked unique; `cost` sums the clicks' cost.
//! - Conversions count at their latest revision and on the day of the conversion's own time (`ts`, when it
//!   was first accepted), not the click's. `conversions` are the approved ones; `pendingConversions` and
//!   `rejectedConversions` are reported beside them; `revenue` sums approved conversions only.
//! - `profit = revenue - cost`; `roi = profit / cost`, `null` when cost is zero.

use std::collections::BTreeMap;

use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::AnalyticsError;

/// The longest range one report may cover, in days (a leap year).
pub const MAX_DAYS: u64 = 366;

/// How many days a report covers when the query names no `from`.
pub const DEFAULT_DAYS: u64 = 7;

/// The most ingestion errors one page returns.
pub const MAX_PAGE: u32 = 1000;

/// Which local days a report covers and what it is restricted to.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportQuery {
    /// First local day, inclusive.
    pub from: NaiveDate,
    /// Last local day, inclusive.
    pub to: NaiveDate,
    /// The zone whose local days the report counts in.
    pub tz: Tz,
    pub campaign_id: Option<String>,
    pub team_id: Option<String>,
}

impl ReportQuery {
    /// The days `from..=to` in UTC, unfiltered.
    pub fn new(from: NaiveDate, to: NaiveDate) -> Self {
        Self { from, to, tz: Tz::UTC, campaign_id: None, team_id: None }
    }

    pub fn with_tz(mut self, tz: Tz) -> Self {
        self.tz = tz;
        self
    }

    pub fn with_campaign(mut self, campaign_id: impl Into<String>) -> Self {
        self.campaign_id = Some(campaign_id.into());
        self
    }

    pub fn with_team(mut self, team_id: impl Into<String>) -> Self {
        self.team_id = Some(team_id.into());
        self
    }

    /// `from <= to` and at most [`MAX_DAYS`] days; the error names the offending query parameter.
    pub fn validate(&self) -> Result<(), AnalyticsError> {
        if self.from > self.to {
            return Err(AnalyticsError::invalid("from", format!("{} is after `to` ({})", self.from, self.to)));
        }
        let days = self.to.signed_duration_since(self.from).num_days().unsigned_abs() + 1;
        if days > MAX_DAYS {
            return Err(AnalyticsError::invalid(
                "to",
                format!("the range covers {days} days; at most {MAX_DAYS} are allowed"),
            ));
        }
        Ok(())
    }

    /// Every local day of the range, in order.
    pub fn days(&self) -> impl Iterator<Item = NaiveDate> + use<> {
        let to = self.to;
        self.from.iter_days().take_while(move |d| *d <= to)
    }
}

/// A report's query string as the API receives it (`?from&to&tz&campaignId&teamId`), before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReportParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub tz: Option<String>,
    pub campaign_id: Option<String>,
    pub team_id: Option<String>,
}

impl ReportParams {
    /// A validated query. `to` defaults to today in `tz` (as of `now`), `from` to [`DEFAULT_DAYS`] days ending
    /// with `to`, `tz` to UTC; empty strings count as absent. Errors name the parameter (`from`, `to`, `tz`).
    pub fn into_query(self, now: DateTime<Utc>) -> Result<ReportQuery, AnalyticsError> {
        let present = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let tz = match present(self.tz) {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| AnalyticsError::invalid("tz", format!("`{name}` is not an IANA time zone")))?,
        };
        let date = |field: &'static str, v: String| {
            NaiveDate::parse_from_str(&v, "%Y-%m-%d")
                .map_err(|_| AnalyticsError::invalid(field, format!("`{v}` is not a date (YYYY-MM-DD)")))
        };
        let to = match present(self.to) {
            Some(v) => date("to", v)?,
            None => now.with_timezone(&tz).date_naive(),
        };
        let from = match present(self.from) {
            Some(v) => date("from", v)?,
            None => to.checked_sub_days(Days::new(DEFAULT_DAYS - 1)).unwrap_or(to),
        };
        let query =
            ReportQuery { from, to, tz, campaign_id: present(self.campaign_id), team_id: present(self.team_id) };
        query.validate()?;
        Ok(query)
    }
}

/// What a report is grouped by. Each grouping names one key field in the rows' `key` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GroupBy {
    Campaign,
    Stream,
    Destination,
    TrafficSource,
    /// The click's country; a conversion takes its click's (empty when the click is unknown).
    Country,
    /// The click's `sub1`; a conversion takes its click's.
    Sub1,
}

impl GroupBy {
    pub const ALL: [GroupBy; 6] = [
        GroupBy::Campaign,
        GroupBy::Stream,
        GroupBy::Destination,
        GroupBy::TrafficSource,
        GroupBy::Country,
        GroupBy::Sub1,
    ];

    /// The field name in a row's `key` object.
    pub fn key_name(self) -> &'static str {
        match self {
            GroupBy::Campaign => "campaignId",
            GroupBy::Stream => "streamId",
            GroupBy::Destination => "destinationId",
            GroupBy::TrafficSource => "trafficSourceId",
            GroupBy::Country => "country",
            GroupBy::Sub1 => "sub1",
        }
    }

    /// Whether a conversion takes this dimension from its click rather than from itself.
    pub fn from_click(self) -> bool {
        matches!(self, GroupBy::Country | GroupBy::Sub1)
    }
}

/// The metrics of every report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub clicks: u64,
    pub unique_clicks: u64,
    /// Approved conversions.
    pub conversions: u64,
    pub pending_conversions: u64,
    pub rejected_conversions: u64,
    pub revenue: Decimal,
    pub cost: Decimal,
    pub profit: Decimal,
    /// `profit / cost` as a ratio (`1.5` is +150 %), rounded to 4 places; `None` when cost is zero.
    pub roi: Option<Decimal>,
}

impl Default for Metrics {
    fn default() -> Self {
        Totals::default().metrics()
    }
}

/// Sums in exact units (money in millionths), turned into [`Metrics`] at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub clicks: u64,
    pub unique_clicks: u64,
    pub cost_micros: i64,
    pub approved: u64,
    pub pending: u64,
    pub rejected: u64,
    pub revenue_micros: i64,
}

impl Totals {
    pub fn add(&mut self, o: &Totals) {
        self.clicks = self.clicks.saturating_add(o.clicks);
        self.unique_clicks = self.unique_clicks.saturating_add(o.unique_clicks);
        self.cost_micros = self.cost_micros.saturating_add(o.cost_micros);
        self.approved = self.approved.saturating_add(o.approved);
        self.pending = self.pending.saturating_add(o.pending);
        self.rejected = self.rejected.saturating_add(o.rejected);
        self.revenue_micros = self.revenue_micros.saturating_add(o.revenue_micros);
    }

    pub fn metrics(&self) -> Metrics {
        let profit_micros = i128::from(self.revenue_micros) - i128::from(self.cost_micros);
        let roi = (self.cost_micros != 0)
            .then(|| Decimal::from(profit_micros).checked_div(Decimal::from(self.cost_micros)))
            .flatten()
            .map(|r| r.round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero).normalize());
        Metrics {
            clicks: self.clicks,
            unique_clicks: self.unique_clicks,
            conversions: self.approved,
            pending_conversions: self.pending,
            rejected_conversions: self.rejected,
            revenue: money(i128::from(self.revenue_micros)),
            cost: money(i128::from(self.cost_micros)),
            profit: money(profit_micros),
            roi,
        }
    }
}

/// Millionths as a decimal with 2 to 6 places: `"0.05"`, `"12.50"`, `"0.000001"`, `"0.00"`.
pub fn money(micros: i128) -> Decimal {
    let mut d = Decimal::from_i128_with_scale(micros, 6).normalize();
    if d.scale() < 2 {
        d.rescale(2);
    }
    d
}

/// One local day of the daily report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Day {
    pub date: NaiveDate,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// One row of a grouped report: `{"key":{"campaignId":"…"}, …metrics}`. An empty key value means unknown
/// (a click without a country, a conversion whose click is not attributed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRow {
    pub key: BTreeMap<String, String>,
    #[serde(flatten)]
    pub metrics: Metrics,
}

impl GroupRow {
    /// The value of one key field, `""` when absent.
    pub fn key_value(&self, name: &str) -> &str {
        self.key.get(name).map_or("", String::as_str)
    }
}

/// A grouped report: rows by clicks (most first, then by key), and the totals over all rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grouped {
    pub rows: Vec<GroupRow>,
    pub totals: Metrics,
}

impl Grouped {
    /// The row whose single key value is `value`.
    pub fn row(&self, value: &str) -> Option<&GroupRow> {
        self.rows.iter().find(|r| r.key.values().next().is_some_and(|v| v == value))
    }
}

/// Health checks of one destination within the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationHealth {
    pub destination_id: String,
    pub checks: u64,
    pub failures: u64,
    /// Checks that changed the destination's state (healthy <-> unhealthy).
    pub transitions: u64,
    /// The state after the latest check in the range.
    pub last_healthy: bool,
    pub last_http_status: u16,
    pub last_error: String,
    pub last_checked_at: DateTime<Utc>,
    /// Mean latency of the checks, whole milliseconds rounded down.
    pub avg_latency_millis: u64,
}

/// A message the ingester could not store as an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestionError {
    pub ts: DateTime<Utc>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub error: String,
    /// The first bytes of the message.
    pub payload: String,
}

/// One page of ingestion errors, newest first, and how many there are in the range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestionErrorPage {
    pub total: u64,
    pub rows: Vec<IngestionError>,
}

/// Seconds (a `DateTime` column) as a UTC time.
pub(crate) fn utc(secs: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(secs), 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn money_has_two_to_six_places() {
        let s = |micros: i128| money(micros).to_string();
        assert_eq!(s(0), "0.00");
        assert_eq!(s(50_000), "0.05");
        assert_eq!(s(12_500_000), "12.50");
        assert_eq!(s(1), "0.000001");
        assert_eq!(s(-1_234_500), "-1.2345");
        assert_eq!(serde_json::to_value(money(7_000_000)).unwrap(), serde_json::json!("7.00"));
    }

    #[test]
    fn roi_is_a_rounded_ratio_and_null_without_cost() {
        let t = Totals { cost_micros: 300_000, revenue_micros: 400_000, ..Totals::default() };
        let m = t.metrics();
        assert_eq!((m.profit.to_string(), m.roi.map(|r| r.to_string())), ("0.10".into(), Some("0.3333".into())));
        let free = Totals { revenue_micros: 1, ..Totals::default() }.metrics();
        assert_eq!(free.roi, None);
        let loss = Totals { cost_micros: 2_000_000, ..Totals::default() }.metrics();
        assert_eq!(loss.roi.map(|r| r.to_string()), Some("-1".into()));
    }

    #[test]
    fn params_default_to_the_last_seven_local_days() {
        let now = at("2025-11-24T20:00:00Z");
        let q = ReportParams::default().into_query(now).unwrap();
        assert_eq!((q.from.to_string(), q.to.to_string(), q.tz), ("2025-11-18".into(), "2025-11-24".into(), Tz::UTC));
        let p = ReportParams { tz: Some("Asia/Kolkata".into()), campaign_id: Some(" ".into()), ..Default::default() };
        let q = p.into_query(now).unwrap();
        assert_eq!(q.to.to_string(), "2025-11-25", "already tomorrow in Kolkata");
        assert_eq!(q.campaign_id, None, "blank filters are no filters");
    }

    #[test]
    fn params_errors_name_the_parameter() {
        let now = at("2025-11-24T20:00:00Z");
        let field = |p: ReportParams| match p.into_query(now) {
            Err(AnalyticsError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(ReportParams { tz: Some("Mars/Base".into()), ..Default::default() }), "tz");
        assert_eq!(field(ReportParams { from: Some("2025-13-01".into()), ..Default::default() }), "from");
        assert_eq!(field(ReportParams { to: Some("yesterday".into()), ..Default::default() }), "to");
        let backwards =
            ReportParams { from: Some("2025-11-25".into()), to: Some("2025-11-24".into()), ..Default::default() };
        assert_eq!(field(backwards), "from");
        let long =
            ReportParams { from: Some("2020-01-01".into()), to: Some("2025-01-01".into()), ..Default::default() };
        assert_eq!(field(long), "to");
    }

    #[test]
    fn query_days_are_inclusive() {
        let q = ReportQuery::new("2025-11-23".parse().unwrap(), "2025-11-26".parse().unwrap());
        assert_eq!(q.days().count(), 4);
        assert_eq!(GroupBy::ALL.map(GroupBy::key_name).len(), 6);
        assert_eq!(serde_json::to_value(GroupBy::TrafficSource).unwrap(), serde_json::json!("trafficSource"));
    }
}
