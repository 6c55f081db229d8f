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
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AnalyticsError;

/// The longest range one report may cover, in days (a leap year).
pub const MAX_DAYS: u64 = 366;

/// How many days a report covers when the query names no `from`.
pub const DEFAULT_DAYS: u64 = 7;

/// The most rows one page of ingestion errors or postback logs returns; a larger `limit` is cut to this.
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub clicks: u64,
    pub unique_clicks: u64,
    /// Approved conversions.
    pub conversions: u64,
    pub pending_conversions: u64,
    pub rejected_conversions: u64,
    /// Revenue of the approved conversions, a decimal string (`"12.50"`).
    #[schemars(schema_with = "schema::money")]
    pub revenue: Decimal,
    /// Cost of the clicks, a decimal string.
    #[schemars(schema_with = "schema::money")]
    pub cost: Decimal,
    /// `revenue - cost`, a decimal string.
    #[schemars(schema_with = "schema::money")]
    pub profit: Decimal,
    /// `profit / cost` as a ratio (`"1.5"` is +150 %), a decimal string rounded to 4 places; `null` when cost is
    /// zero.
    #[schemars(schema_with = "schema::ratio_or_null")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Day {
    pub date: NaiveDate,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// One row of a grouped report: `{"key":{"campaignId":"…"}, …metrics}`. An empty key value means unknown
/// (a click without a country, a conversion whose click is not attributed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestionErrorPage {
    pub total: u64,
    pub rows: Vec<IngestionError>,
}

/// Which postback logs a page shows (`?networkId&outcome&clickId&transactionId`); each filter is an exact match
/// and applies when present and not empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PostbackLogFilter {
    pub network_id: Option<String>,
    /// `accepted`, `duplicate`, `updated`, `rejected` or `error`.
    pub outcome: Option<String>,
    pub click_id: Option<String>,
    pub transaction_id: Option<String>,
}

impl PostbackLogFilter {
    /// The filters that apply, the query's team included, as (column, value): absent and empty ones left out.
    pub(crate) fn conditions(&self, q: &ReportQuery) -> Vec<(&'static str, String)> {
        [
            ("network_id", &self.network_id),
            ("outcome", &self.outcome),
            ("click_id", &self.click_id),
            ("transaction_id", &self.transaction_id),
            ("team_id", &q.team_id),
        ]
        .into_iter()
        .filter_map(|(column, v)| v.as_deref().filter(|v| !v.is_empty()).map(|v| (column, v.to_owned())))
        .collect()
    }
}

/// One postback as the postback service logged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostbackLogEntry {
    pub id: String,
    /// When the postback arrived (whole seconds).
    pub ts: DateTime<Utc>,
    pub network_id: String,
    pub network_key: String,
    pub team_id: String,
    /// `accepted`, `duplicate`, `updated`, `rejected` or `error`.
    pub outcome: String,
    /// What the postback service answered.
    pub http_status: u16,
    pub latency_micros: u32,
    pub click_id: String,
    pub transaction_id: String,
    /// The conversion it created or changed, empty when none.
    pub conversion_id: String,
    pub remote_ip: String,
    pub error: String,
    /// The request (method, query or body excerpt) with secrets redacted.
    pub request: String,
}

/// One page of postback logs, newest first, and how many match in the range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostbackLogPage {
    pub total: u64,
    pub rows: Vec<PostbackLogEntry>,
}

/// JSON Schemas for values whose serde form differs from their Rust type.
mod schema {
    use schemars::{Schema, SchemaGenerator, json_schema};

    /// A decimal string with 2 to 6 places (see [`super::money`]).
    pub fn money(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^-?[0-9]+\\.[0-9]{2,6}$", "examples": ["12.50"]})
    }

    /// A decimal string, or `null`.
    pub fn ratio_or_null(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": ["string", "null"], "pattern": "^-?[0-9]+(\\.[0-9]+)?$", "examples": ["1.5", null]})
    }
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

/// The JSON Schemas of the report types against the JSON they serialise to.
#[cfg(test)]
mod schema_tests {
    use schemars::JsonSchema;
    use schemars::generate::SchemaSettings;
    use serde_json::{Map, Value, json};

    use super::*;

    /// Checks `value` against `schema` for the keywords schemars emits for these types; any other keyword fails the
    /// test, so a schema this cannot judge is never waved through. Objects must list every property they serialise
    /// as required, and carry no other keys: the schema describes the JSON exactly.
    fn check(defs: &Map<String, Value>, schema: &Value, value: &Value, at: &str) {
        let Value::Object(s) = schema else { panic!("{at}: schema is not an object: {schema}") };
        for (keyword, arg) in s {
            match keyword.as_str() {
                "$schema" | "title" | "description" | "examples" | "$defs" | "format" => {}
                "$ref" => {
                    let name = arg.as_str().and_then(|r| r.strip_prefix("#/$defs/")).expect("local $ref");
                    check(defs, &defs[name], value, at);
                }
                "type" => {
                    let kinds: Vec<&str> = match arg {
                        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                        other => vec![other.as_str().expect("type name")],
                    };
                    let kind = match value {
                        Value::Null => "null",
                        Value::Bool(_) => "boolean",
                        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
                        Value::Number(_) => "number",
                        Value::String(_) => "string",
                        Value::Array(_) => "array",
                        Value::Object(_) => "object",
                    };
                    let ok = kinds.contains(&kind) || (kind == "integer" && kinds.contains(&"number"));
                    assert!(ok, "{at}: {value} is a {kind}, the schema says {kinds:?}");
                }
                "pattern" => {
                    if let Value::String(v) = value {
                        let re = regex::Regex::new(arg.as_str().expect("pattern")).expect("regex");
                        assert!(re.is_match(v), "{at}: {v:?} does not match {re}");
                    }
                }
                "minimum" => {
                    if let Some(n) = value.as_f64() {
                        assert!(n >= arg.as_f64().expect("number"), "{at}: {n} < {arg}");
                    }
                }
                "maximum" => {
                    if let Some(n) = value.as_f64() {
                        assert!(n <= arg.as_f64().expect("number"), "{at}: {n} > {arg}");
                    }
                }
                "required" => {
                    if let Value::Object(o) = value {
                        for name in arg.as_array().expect("names").iter().filter_map(Value::as_str) {
                            assert!(o.contains_key(name), "{at}: `{name}` is required but missing");
                        }
                    }
                }
                "properties" => {
                    let props = arg.as_object().expect("properties");
                    let required: Vec<&str> = s
                        .get("required")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    for name in props.keys() {
                        assert!(required.contains(&name.as_str()), "{at}: `{name}` is always serialised, so required");
                    }
                    if let Value::Object(o) = value {
                        for (name, v) in o {
                            let sub = props.get(name).unwrap_or_else(|| panic!("{at}: `{name}` is not in the schema"));
                            check(defs, sub, v, &format!("{at}.{name}"));
                        }
                    }
                }
                "additionalProperties" => {
                    if let (Value::Object(o), false) = (value, s.contains_key("properties")) {
                        for (name, v) in o {
                            check(defs, arg, v, &format!("{at}.{name}"));
                        }
                    }
                }
                "items" => {
                    if let Value::Array(a) = value {
                        for (i, v) in a.iter().enumerate() {
                            check(defs, arg, v, &format!("{at}[{i}]"));
                        }
                    }
                }
                other => panic!("{at}: keyword `{other}` is not checked here"),
            }
        }
    }

    /// The schema for reading and the one for writing (what an API response document uses).
    fn schemas<T: JsonSchema>() -> [Value; 2] {
        let settings = SchemaSettings::draft2020_12();
        [settings.clone().into_generator(), settings.for_serialize().into_generator()]
            .map(|g| g.into_root_schema_for::<T>().to_value())
    }

    fn conforms<T: JsonSchema + Serialize>(value: &T) {
        let json = serde_json::to_value(value).unwrap();
        for schema in schemas::<T>() {
            let defs = schema.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default();
            check(&defs, &schema, &json, &T::schema_name());
        }
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
    }

    fn metrics() -> [Metrics; 3] {
        let profitable =
            Totals { clicks: 3, cost_micros: 300_000, revenue_micros: 400_000, approved: 1, ..Totals::default() };
        let loss = Totals { clicks: 1, cost_micros: 1_234_567, ..Totals::default() };
        [Metrics::default(), profitable.metrics(), loss.metrics()]
    }

    #[test]
    fn every_report_matches_its_schema() {
        for m in metrics() {
            conforms(&m);
            conforms(&Day { date: "2025-11-24".parse().unwrap(), metrics: m.clone() });
            let row =
                GroupRow { key: BTreeMap::from([("campaignId".to_owned(), "camp-a".to_owned())]), metrics: m.clone() };
            conforms(&Grouped { rows: vec![row.clone(), row], totals: m });
        }
        conforms(&Grouped { rows: vec![], totals: Metrics::default() });
        conforms(&DestinationHealth {
            destination_id: "d1".into(),
            checks: 3,
            failures: 1,
            transitions: 2,
            last_healthy: true,
            last_http_status: 200,
            last_error: String::new(),
            last_checked_at: at("2025-11-24T12:00:00Z"),
            avg_latency_millis: 200,
        });
        conforms(&IngestionErrorPage {
            total: 3,
            rows: vec![IngestionError {
                ts: at("2025-11-24T09:00:00Z"),
                topic: "traffoflex.clicks".into(),
                partition: 2,
                offset: 7,
                error: "bad".into(),
                payload: "not json".into(),
            }],
        });
        conforms(&PostbackLogPage {
            total: 1,
            rows: vec![PostbackLogEntry {
                id: "p1".into(),
                ts: at("2025-11-23T10:05:00Z"),
                network_id: "n1".into(),
                network_key: "key-n1".into(),
                team_id: "t1".into(),
                outcome: "accepted".into(),
                http_status: 200,
                latency_micros: 1500,
                click_id: "k1".into(),
                transaction_id: "t1".into(),
                conversion_id: "conv-t1".into(),
                remote_ip: "203.0.113.7".into(),
                error: String::new(),
                request: "GET".into(),
            }],
        });
    }

    #[test]
    fn money_and_roi_are_strings_in_the_schema() {
        let [schema, _] = schemas::<Metrics>();
        let props = &schema["properties"];
        assert_eq!(props["revenue"]["type"], json!("string"));
        assert_eq!(props["roi"]["type"], json!(["string", "null"]));
        assert_eq!(props["clicks"]["type"], json!("integer"));
        // Day flattens the metrics into its own object.
        let [_, day] = schemas::<Day>();
        assert_eq!(day["properties"]["date"], json!({"type": "string", "format": "date"}));
        assert_eq!(day["properties"]["profit"]["type"], json!("string"));
        // A value the schema does not describe is caught.
        let bad = json!({"clicks": 1, "uniqueClicks": 1, "conversions": 0, "pendingConversions": 0,
                         "rejectedConversions": 0, "revenue": 1.5, "cost": "0.00", "profit": "1.50", "roi": null});
        let caught = std::panic::catch_unwind(|| check(&Map::new(), &schema, &bad, "Metrics"));
        assert!(caught.is_err(), "a number where a decimal string belongs is refused");
    }
}

/// What a postback needs to know about its click: where it went and the visitor facts outbound postback
/// macros carry (`{sub1}`, `{utmSource}`, `{ip}`, `{country}`, `{cost}`, `{sourceClickId}`…).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClickFacts {
    pub campaign_id: String,
    pub stream_id: String,
    pub destination_id: String,
    pub traffic_source_id: String,
    pub source: String,
    pub source_click_id: String,
    pub ip: String,
    pub country: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_content: String,
    pub utm_term: String,
    /// `sub1`…`sub10`, as many as the click had.
    pub subs: Vec<String>,
    pub cost_micros: i64,
    pub currency: String,
}

/// The columns of [`ClickFacts`], in its field order, for both backends.
pub(crate) const CLICK_FACT_COLUMNS: &str = "campaign_id, stream_id, destination_id, traffic_source_id, source, \
     source_click_id, ip, country, utm_source, utm_medium, utm_campaign, utm_content, utm_term, subs, cost_micros, \
     currency";
