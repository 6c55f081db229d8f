//! [`Analytics`] on ClickHouse: the aggregations and report queries in SQL that runs on 18.16 and on current
//! releases.
//!
//! Replays never double anything: every read is `FROM <table> FINAL`, so rows with the same sorting key
//! collapse (conversions to their highest `revision`) before WHERE and GROUP BY see them — ClickHouse applies
//! WHERE after FINAL (measured on 18.16; current releases keep WHERE out of PREWHERE with FINAL). Times are
//! bound as Unix seconds (`toDateTime(?)`), so no server time zone is involved; day buckets are
//! `intDiv(toUInt32(ts), ?)` (see [`super::window`]). Every value goes in with `.bind()`. Result columns are
//! named like the row structs' fields and never like a column they aggregate.

use ::clickhouse::Row;
use async_trait::async_trait;
use serde::Deserialize;

use super::aggregate::{AggregateQuery, ClickAggregate, ConversionAggregate};
use super::clickhouse::ch;
use super::reports::{
    CLICK_FACT_COLUMNS, ClickFacts, DestinationHealth, IngestionError, IngestionErrorPage, MAX_PAGE, PostbackLogFilter,
    PostbackLogPage, ReportQuery, utc,
};
use super::rows::{IngestionErrorRow, PostbackLogRow};
use super::window::Window;
use super::{Analytics, AnalyticsError, ClickHouse, GroupBy, InsertCounts};
use crate::events::Event;

/// [`ClickFacts`] as ClickHouse answers them, in [`CLICK_FACT_COLUMNS`] order.
#[derive(Row, Deserialize)]
struct ClickFactsRow {
    campaign_id: String,
    stream_id: String,
    destination_id: String,
    traffic_source_id: String,
    source: String,
    source_click_id: String,
    ip: String,
    country: String,
    utm_source: String,
    utm_medium: String,
    utm_campaign: String,
    utm_content: String,
    utm_term: String,
    subs: Vec<String>,
    cost_micros: i64,
    currency: String,
}

impl From<ClickFactsRow> for ClickFacts {
    fn from(r: ClickFactsRow) -> Self {
        ClickFacts {
            campaign_id: r.campaign_id,
            stream_id: r.stream_id,
            destination_id: r.destination_id,
            traffic_source_id: r.traffic_source_id,
            source: r.source,
            source_click_id: r.source_click_id,
            ip: r.ip,
            country: r.country,
            utm_source: r.utm_source,
            utm_medium: r.utm_medium,
            utm_campaign: r.utm_campaign,
            utm_content: r.utm_content,
            utm_term: r.utm_term,
            subs: r.subs,
            cost_micros: r.cost_micros,
            currency: r.currency,
        }
    }
}

/// A value for one `?`.
enum Arg {
    Str(String),
    Num(u64),
}

/// SQL with its `?` values in order.
#[derive(Default)]
struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn num(&mut self, text: &str, n: impl Into<u64>) -> &mut Self {
        self.args.push(Arg::Num(n.into()));
        self.push(text)
    }

    fn str(&mut self, text: &str, s: &str) -> &mut Self {
        self.args.push(Arg::Str(s.to_owned()));
        self.push(text)
    }

    /// ` AND ts >= … AND ts < …` for a window in Unix seconds.
    fn range(&mut self, start: u32, end: u32) -> &mut Self {
        self.num(" AND ts >= toDateTime(?)", start).num(" AND ts < toDateTime(?)", end)
    }

    fn query(self, client: &::clickhouse::Client) -> ::clickhouse::query::Query {
        self.args.into_iter().fold(client.query(&self.text), |q, arg| match arg {
            Arg::Str(s) => q.bind(s),
            Arg::Num(n) => q.bind(n),
        })
    }
}

/// The click column a dimension reads.
fn click_key(by: Option<GroupBy>) -> &'static str {
    match by {
        None => "''",
        Some(GroupBy::Campaign) => "campaign_id",
        Some(GroupBy::Stream) => "stream_id",
        Some(GroupBy::Destination) => "destination_id",
        Some(GroupBy::TrafficSource) => "traffic_source_id",
        Some(GroupBy::Country) => "country",
        Some(GroupBy::Sub1) => "subs[1]",
    }
}

/// The conversion column a dimension reads; country and sub1 come from the joined click (`k_` columns).
fn conversion_key(by: Option<GroupBy>) -> &'static str {
    match by {
        Some(GroupBy::Country) => "k_country",
        Some(GroupBy::Sub1) => "k_sub1",
        other => click_key(other),
    }
}

fn bucket(sql: &mut Sql, bucket_secs: Option<u32>) {
    match bucket_secs {
        Some(secs) => sql.num("toInt64(intDiv(toUInt32(ts), toUInt32(?))) AS bucket", secs.max(1)),
        None => sql.push("toInt64(0) AS bucket"),
    };
}

fn filters(sql: &mut Sql, q: &AggregateQuery) {
    if let Some(c) = &q.campaign_id {
        sql.str(" AND campaign_id = ?", c);
    }
    if let Some(t) = &q.team_id {
        sql.str(" AND team_id = ?", t);
    }
}

#[derive(Row, Deserialize)]
struct ClickSums {
    key: String,
    bucket: i64,
    clicks: u64,
    unique_clicks: u64,
    cost: i64,
}

#[derive(Row, Deserialize)]
struct ConversionSums {
    key: String,
    bucket: i64,
    approved: u64,
    pending: u64,
    rejected: u64,
    revenue: i64,
}

#[derive(Row, Deserialize)]
struct HealthSums {
    destination_id: String,
    checks: u64,
    failures: u64,
    transitions: u64,
    latency_total: u64,
    last_healthy: u8,
    last_http_status: u16,
    last_error: String,
    last_checked: u32,
}

#[derive(Row, Deserialize)]
struct Count {
    n: u64,
}

#[async_trait]
impl Analytics for ClickHouse {
    fn backend_name(&self) -> &'static str {
        "clickhouse"
    }

    async fn ping(&self) -> Result<(), AnalyticsError> {
        ClickHouse::ping(self).await
    }

    async fn migrate(&self) -> Result<Vec<u32>, AnalyticsError> {
        ClickHouse::migrate(self).await
    }

    async fn insert_events(&self, events: Vec<Event>) -> Result<InsertCounts, AnalyticsError> {
        ClickHouse::insert_events(self, events).await
    }

    async fn insert_ingestion_errors(&self, rows: &[IngestionErrorRow]) -> Result<(), AnalyticsError> {
        ClickHouse::insert_ingestion_errors(self, rows).await
    }

    async fn click_facts(&self, click_id: &str, ts_secs: Option<u32>) -> Result<Option<ClickFacts>, AnalyticsError> {
        let mut sql = Sql::default();
        sql.push("SELECT ").push(CLICK_FACT_COLUMNS).str(" FROM clicks WHERE click_id = ?", click_id);
        if let Some(ts) = ts_secs {
            // The click's day, with a day either side for a clock that was a little off.
            sql.range(ts.saturating_sub(86_400), ts.saturating_add(86_400));
        }
        sql.push(" LIMIT 1");
        let row: Option<ClickFactsRow> = sql.query(self.client()).fetch_optional().await.map_err(ch)?;
        Ok(row.map(ClickFacts::from))
    }

    async fn click_aggregates(&self, q: &AggregateQuery) -> Result<Vec<ClickAggregate>, AnalyticsError> {
        let mut sql = Sql::default();
        sql.push("SELECT ").push(click_key(q.by)).push(" AS key, ");
        bucket(&mut sql, q.bucket_secs);
        sql.push(
            ", count() AS clicks, sum(is_unique) AS unique_clicks, sum(cost_micros) AS cost \
             FROM clicks FINAL WHERE 1",
        )
        .range(q.start, q.end);
        filters(&mut sql, q);
        if q.trafficback_only {
            sql.push(" AND trafficback = 1");
        }
        sql.push(" GROUP BY key, bucket");
        let rows: Vec<ClickSums> = sql.query(self.client()).fetch_all().await.map_err(ch)?;
        Ok(rows
            .into_iter()
            .map(|r| ClickAggregate {
                key: r.key,
                bucket: r.bucket,
                clicks: r.clicks,
                unique_clicks: r.unique_clicks,
                cost_micros: r.cost,
            })
            .collect())
    }

    async fn conversion_aggregates(&self, q: &AggregateQuery) -> Result<Vec<ConversionAggregate>, AnalyticsError> {
        let join = q.trafficback_only || q.by.is_some_and(GroupBy::from_click);
        let mut sql = Sql::default();
        sql.push("SELECT ").push(conversion_key(q.by)).push(" AS key, ");
        bucket(&mut sql, q.bucket_secs);
        sql.push(
            ", countIf(status = 'approved') AS approved, countIf(status = 'pending') AS pending, \
             countIf(status = 'rejected') AS rejected, sumIf(revenue_micros, status = 'approved') AS revenue ",
        );
        if join {
            // The conversions' clicks, whenever they happened, joined by click ID (missing ones read as '' and 0).
            sql.push(
                "FROM (SELECT click_id AS c_click, ts, status, revenue_micros, campaign_id, stream_id, \
                 destination_id, traffic_source_id FROM conversions FINAL WHERE 1",
            )
            .range(q.start, q.end);
            filters(&mut sql, q);
            sql.push(
                ") AS c ANY LEFT JOIN (SELECT click_id AS c_click, country AS k_country, subs[1] AS k_sub1, \
                 trafficback AS k_trafficback FROM clicks FINAL \
                 WHERE click_id IN (SELECT click_id FROM conversions WHERE 1",
            )
            .range(q.start, q.end)
            .push(")) AS k USING c_click WHERE 1");
            if q.trafficback_only {
                sql.push(" AND k_trafficback = 1");
            }
        } else {
            sql.push("FROM conversions FINAL WHERE 1").range(q.start, q.end);
            filters(&mut sql, q);
        }
        sql.push(" GROUP BY key, bucket");
        let rows: Vec<ConversionSums> = sql.query(self.client()).fetch_all().await.map_err(ch)?;
        Ok(rows
            .into_iter()
            .map(|r| ConversionAggregate {
                key: r.key,
                bucket: r.bucket,
                approved: r.approved,
                pending: r.pending,
                rejected: r.rejected,
                revenue_micros: r.revenue,
            })
            .collect())
    }

    async fn health(&self, q: &ReportQuery) -> Result<Vec<DestinationHealth>, AnalyticsError> {
        let window = Window::of(q)?;
        let mut sql = Sql::default();
        sql.push(
            "SELECT destination_id, count() AS checks, countIf(healthy = 0) AS failures, \
             sum(changed) AS transitions, sum(latency_millis) AS latency_total, \
             argMax(healthy, (ts, id)) AS last_healthy, argMax(http_status, (ts, id)) AS last_http_status, \
             argMax(error, (ts, id)) AS last_error, max(ts) AS last_checked \
             FROM destination_health FINAL WHERE 1",
        )
        .range(window.start(), window.end());
        if let Some(t) = q.team_id.as_deref().filter(|t| !t.is_empty()) {
            sql.str(" AND team_id = ?", t);
        }
        sql.push(" GROUP BY destination_id ORDER BY destination_id");
        let rows: Vec<HealthSums> = sql.query(self.client()).fetch_all().await.map_err(ch)?;
        Ok(rows
            .into_iter()
            .map(|r| DestinationHealth {
                avg_latency_millis: r.latency_total.checked_div(r.checks).unwrap_or(0),
                destination_id: r.destination_id,
                checks: r.checks,
                failures: r.failures,
                transitions: r.transitions,
                last_healthy: r.last_healthy != 0,
                last_http_status: r.last_http_status,
                last_error: r.last_error,
                last_checked_at: utc(r.last_checked),
            })
            .collect())
    }

    async fn ingestion_errors(
        &self,
        q: &ReportQuery,
        limit: u32,
        offset: u64,
    ) -> Result<IngestionErrorPage, AnalyticsError> {
        let window = Window::of(q)?;
        let mut count = Sql::default();
        count.push("SELECT count() AS n FROM ingestion_errors FINAL WHERE 1").range(window.start(), window.end());
        let total = count.query(self.client()).fetch_one::<Count>().await.map_err(ch)?.n;
        let mut sql = Sql::default();
        sql.push(
            "SELECT ts, topic, `partition`, `offset`, error, payload \
             FROM ingestion_errors FINAL WHERE 1",
        )
        .range(window.start(), window.end())
        .push(" ORDER BY ts DESC, topic, `partition`, `offset`")
        .num(" LIMIT ?", limit.min(MAX_PAGE))
        .num(" OFFSET ?", offset);
        let rows: Vec<IngestionErrorRow> = sql.query(self.client()).fetch_all().await.map_err(ch)?;
        let rows = rows
            .into_iter()
            .map(|r| IngestionError {
                ts: utc(r.ts),
                topic: r.topic,
                partition: r.partition,
                offset: r.offset,
                error: r.error,
                payload: r.payload,
            })
            .collect();
        Ok(IngestionErrorPage { total, rows })
    }

    async fn postback_logs(
        &self,
        q: &ReportQuery,
        filter: &PostbackLogFilter,
        limit: u32,
        offset: u64,
    ) -> Result<PostbackLogPage, AnalyticsError> {
        let window = Window::of(q)?;
        let conditions = filter.conditions(q);
        let scope = |sql: &mut Sql| {
            sql.range(window.start(), window.end());
            for (column, value) in &conditions {
                sql.str(&format!(" AND {column} = ?"), value);
            }
        };
        let mut count = Sql::default();
        count.push("SELECT count() AS n FROM postback_logs FINAL WHERE 1");
        scope(&mut count);
        let total = count.query(self.client()).fetch_one::<Count>().await.map_err(ch)?.n;
        let mut sql = Sql::default();
        sql.push(
            "SELECT id, ts, network_id, network_key, team_id, outcome, http_status, latency_micros, click_id, \
             transaction_id, conversion_id, remote_ip, error, request FROM postback_logs FINAL WHERE 1",
        );
        scope(&mut sql);
        sql.push(" ORDER BY ts DESC, id DESC").num(" LIMIT ?", limit.min(MAX_PAGE)).num(" OFFSET ?", offset);
        let rows: Vec<PostbackLogRow> = sql.query(self.client()).fetch_all().await.map_err(ch)?;
        Ok(PostbackLogPage { total, rows: rows.into_iter().map(PostbackLogRow::into_entry).collect() })
    }
}
