//! Analytics: where events are stored and reports read them. One trait, [`Analytics`], with a ClickHouse
//! implementation ([`ClickHouse`], production) and an embedded SQLite one ([`SqliteAnalytics`], first runs,
//! demos, single-node installs, fast tests); one contract suite (`core/tests/analytics_contract.rs`) asserts
//! the same numbers on both.
//!
//! Both are idempotent in the same way: an event stored twice counts once (clicks by click ID; conversions by
//! network and transaction ID at their highest `revision`; health checks by ID; ingestion errors by topic,
//! partition and offset). Report semantics are in [`reports`]; how local days are computed in [`window`].

mod aggregate;
pub mod clickhouse;
mod clickhouse_reports;
pub mod reports;
pub mod rows;
pub mod schema;
mod sqlite;
mod sqlite_schema;
pub mod window;

use std::sync::Arc;

use async_trait::async_trait;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

pub use self::clickhouse::ClickHouse;
pub use aggregate::{AggregateQuery, ClickAggregate, ConversionAggregate};
pub use reports::{
    ClickFacts, Day, DestinationHealth, GroupBy, GroupRow, Grouped, IngestionError, IngestionErrorPage, Metrics,
    PostbackLogEntry, PostbackLogFilter, PostbackLogPage, ReportParams, ReportQuery,
};
pub use sqlite::SqliteAnalytics;

use crate::events::Event;
use crate::settings::BackendSettings;
use rows::IngestionErrorRow;

/// Why an analytics operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// ClickHouse failed or could not be reached; the same request may succeed later.
    #[error("ClickHouse: {0}")]
    ClickHouse(String),
    /// ClickHouse refused the data itself (a value the column cannot take): sending the same rows again fails
    /// again. See [`clickhouse::is_data_error`].
    #[error("ClickHouse refused the data: {0}")]
    Refused(String),
    #[error("SQLite analytics: {0}")]
    Sqlite(String),
    #[error("migration {version} ({name}) failed: {message}")]
    Migration { version: u32, name: &'static str, message: String },
    /// The report query is wrong; `field` names the query parameter (`from`, `to`, `tz`). The API answers 422.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

impl AnalyticsError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        AnalyticsError::Invalid { field, message: message.into() }
    }
}

/// How many rows of each table one insert wrote (replays included).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InsertCounts {
    pub clicks: usize,
    pub conversions: usize,
    pub postback_logs: usize,
    pub health: usize,
}

impl InsertCounts {
    pub fn total(&self) -> usize {
        self.clicks + self.conversions + self.postback_logs + self.health
    }
}

/// Event storage and the reports over it. Implementations: [`ClickHouse`], [`SqliteAnalytics`].
///
/// Implementations provide storage and two aggregations; the reports (`overview`, `daily`, `grouped`,
/// `trafficback`) are built on those once, in Rust, for every backend.
#[async_trait]
pub trait Analytics: Send + Sync {
    /// `"clickhouse"` or `"sqlite"`, for logs and diagnostics.
    fn backend_name(&self) -> &'static str;

    /// Answers when the backend does (readiness).
    async fn ping(&self) -> Result<(), AnalyticsError>;

    /// Creates the database and tables; idempotent. Returns the migration versions applied now.
    async fn migrate(&self) -> Result<Vec<u32>, AnalyticsError>;

    /// Stores events, each in its table; all or nothing per table. Replays are harmless.
    async fn insert_events(&self, events: Vec<Event>) -> Result<InsertCounts, AnalyticsError>;

    /// Stores messages that could not be ingested, for a person to browse.
    async fn insert_ingestion_errors(&self, rows: &[IngestionErrorRow]) -> Result<(), AnalyticsError>;

    /// Click sums for one [`AggregateQuery`], one row per non-empty (key, bucket).
    async fn click_aggregates(&self, q: &AggregateQuery) -> Result<Vec<ClickAggregate>, AnalyticsError>;

    /// Conversion sums for one [`AggregateQuery`], one row per non-empty (key, bucket).
    async fn conversion_aggregates(&self, q: &AggregateQuery) -> Result<Vec<ConversionAggregate>, AnalyticsError>;

    /// The click with this ID, if analytics has it. `ts_secs` (from the click ID, when it verified) narrows the
    /// search to the click's day.
    async fn click_facts(&self, click_id: &str, ts_secs: Option<u32>) -> Result<Option<ClickFacts>, AnalyticsError>;

    /// Health checks per destination within the range (by `team_id` when given; `campaign_id` does not apply),
    /// ordered by destination ID.
    async fn health(&self, q: &ReportQuery) -> Result<Vec<DestinationHealth>, AnalyticsError>;

    /// Ingestion errors stored within the range, newest first (then by topic, partition, offset), `limit` (at
    /// most [`reports::MAX_PAGE`]) from `offset`, with the total in the range. Filters do not apply.
    async fn ingestion_errors(
        &self,
        q: &ReportQuery,
        limit: u32,
        offset: u64,
    ) -> Result<IngestionErrorPage, AnalyticsError>;

    /// Postback logs stored within the range, newest first (then by ID, greatest first), `limit` (at most
    /// [`reports::MAX_PAGE`]) from `offset`, with the total that match. The filter's fields and the query's
    /// `team_id` apply when present and not empty; `campaign_id` does not (a postback log names no campaign).
    async fn postback_logs(
        &self,
        q: &ReportQuery,
        filter: &PostbackLogFilter,
        limit: u32,
        offset: u64,
    ) -> Result<PostbackLogPage, AnalyticsError>;

    /// The metrics over the whole range.
    async fn overview(&self, q: &ReportQuery) -> Result<Metrics, AnalyticsError> {
        aggregate::overview(self, q).await
    }

    /// One entry for every local day `from..=to`, days without events zero.
    async fn daily(&self, q: &ReportQuery) -> Result<Vec<Day>, AnalyticsError> {
        aggregate::daily(self, q).await
    }

    /// The metrics per value of `by`, with totals.
    async fn grouped(&self, q: &ReportQuery, by: GroupBy) -> Result<Grouped, AnalyticsError> {
        aggregate::grouped(self, q, by).await
    }

    /// Trafficback clicks (and the conversions that came from them) per campaign.
    async fn trafficback(&self, q: &ReportQuery) -> Result<Grouped, AnalyticsError> {
        aggregate::trafficback(self, q).await
    }
}

/// Opens the analytics backend the settings name: ClickHouse when `clickhouse_url` is set (no connection is
/// made yet: an outage shows in `ping` and the calls; run `migrate` to create tables), else SQLite at
/// `<data_dir>/analytics.sqlite`, created and migrated on open.
pub async fn open_analytics(settings: &BackendSettings) -> Result<Arc<dyn Analytics>, AnalyticsError> {
    match settings.clickhouse_url.as_deref().map(str::trim) {
        Some(url) if !url.is_empty() => Ok(Arc::new(ClickHouse::new(url, &settings.clickhouse_database))),
        _ => Ok(Arc::new(SqliteAnalytics::open(&settings.data_dir.join(SqliteAnalytics::FILE_NAME)).await?)),
    }
}

/// Money in analytics is stored as whole millionths (Int64): exact sums, and a type every ClickHouse release has.
pub const MICROS: i64 = 1_000_000;

/// `value` in millionths, rounded half away from zero; saturates far beyond any real amount.
pub fn to_micros(value: Decimal) -> i64 {
    (value * Decimal::from(MICROS))
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .unwrap_or(if value.is_sign_negative() { i64::MIN } else { i64::MAX })
}

/// Millionths back to a decimal with six places.
pub fn from_micros(micros: i64) -> Decimal {
    Decimal::new(micros, 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_round_trips_through_micros() {
        for s in ["0", "0.05", "12.345678", "-3.5", "1000000.000001"] {
            let d: Decimal = s.parse().unwrap();
            assert_eq!(from_micros(to_micros(d)), d, "{s}");
        }
        assert_eq!(to_micros("0.0000005".parse().unwrap()), 1, "half a millionth rounds away from zero");
    }
}
