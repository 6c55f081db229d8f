//! [`Analytics`] on SQLite: the embedded backend of `traffoflex up` (`<data_dir>/analytics.sqlite`) and of fast
//! tests (in memory).
//!
//! One connection behind a mutex, used from `spawn_blocking`, as the configuration store does; an insert batch
//! is one transaction. Rows are the ClickHouse rows (`rows.rs`), so both backends store the same values.
//! Replays replace their row (see `sqlite_schema.rs`), so queries read plain tables; conversions are stored at
//! their highest revision only. SQLite has no time zone data, and needs none: local days come from
//! [`super::window`], like on ClickHouse.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, Row, params, params_from_iter};

use super::aggregate::{AggregateQuery, ClickAggregate, ConversionAggregate};
use super::reports::{
    CLICK_FACT_COLUMNS, ClickFacts, DestinationHealth, IngestionError, IngestionErrorPage, MAX_PAGE, PostbackLogFilter,
    PostbackLogPage, ReportQuery, utc,
};
use super::rows::{ClickRow, ConversionRow, HealthRow, IngestionErrorRow, PostbackLogRow};
use super::window::Window;
use super::{Analytics, AnalyticsError, GroupBy, InsertCounts, sqlite_schema};
use crate::events::Event;

/// How long a write waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn sql_err(e: rusqlite::Error) -> AnalyticsError {
    AnalyticsError::Sqlite(e.to_string())
}

/// The SQLite implementation of [`Analytics`].
#[derive(Clone)]
pub struct SqliteAnalytics {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteAnalytics {
    /// The file name inside the data directory.
    pub const FILE_NAME: &'static str = "analytics.sqlite";

    /// Opens (creating if needed) the database file and applies the migrations.
    pub async fn open(path: &Path) -> Result<Self, AnalyticsError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, AnalyticsError> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| AnalyticsError::Sqlite(format!("cannot create {}: {e}", dir.display())))?;
            }
            let conn = Connection::open(&path)
                .map_err(|e| AnalyticsError::Sqlite(format!("cannot open {}: {e}", path.display())))?;
            conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_err)?;
            conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).map_err(sql_err)?;
            conn.execute_batch("PRAGMA synchronous=NORMAL").map_err(sql_err)?;
            Ok(conn)
        })
        .await
        .map_err(|e| AnalyticsError::Sqlite(format!("open task failed: {e}")))??;
        Self::init(conn).await
    }

    /// A private in-memory database (tests, throwaway demos).
    pub async fn open_in_memory() -> Result<Self, AnalyticsError> {
        Self::init(Connection::open_in_memory().map_err(sql_err)?).await
    }

    async fn init(conn: Connection) -> Result<Self, AnalyticsError> {
        let this = Self { conn: Arc::new(Mutex::new(conn)) };
        this.call(sqlite_schema::migrate).await?;
        Ok(this)
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn call<R, F>(&self, f: F) -> Result<R, AnalyticsError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves a usable connection (open transactions roll back on drop).
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| AnalyticsError::Sqlite(format!("analytics task failed: {e}")))?
        .map_err(sql_err)
    }

    /// Runs a grouped query and maps its rows.
    async fn rows<T: Send + 'static>(
        &self,
        sql: String,
        args: Vec<Value>,
        map: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, AnalyticsError> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), map)?;
            rows.collect()
        })
        .await
    }
}

fn int(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

fn count(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(i)?).unwrap_or(0))
}

fn insert_click(conn: &Connection, c: &ClickRow) -> rusqlite::Result<()> {
    let subs = serde_json::to_string(&c.subs).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "INSERT OR REPLACE INTO clicks (click_id, ts, campaign_id, campaign_key, stream_id, destination_id, \
         traffic_source_id, team_id, trafficback, trafficback_depth, source, source_click_id, ip, country, region, \
         city, isp, asn, device_type, os, browser, language, user_agent, referrer, utm_source, utm_medium, \
         utm_campaign, utm_content, utm_term, subs, cost_micros, currency, is_bot, is_unique) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, \
         ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34)",
    )?
    .execute(params![
        c.click_id,
        c.ts,
        c.campaign_id,
        c.campaign_key,
        c.stream_id,
        c.destination_id,
        c.traffic_source_id,
        c.team_id,
        c.trafficback,
        c.trafficback_depth,
        c.source,
        c.source_click_id,
        c.ip,
        c.country,
        c.region,
        c.city,
        c.isp,
        c.asn,
        c.device_type,
        c.os,
        c.browser,
        c.language,
        c.user_agent,
        c.referrer,
        c.utm_source,
        c.utm_medium,
        c.utm_campaign,
        c.utm_content,
        c.utm_term,
        subs,
        c.cost_micros,
        c.currency,
        c.is_bot,
        c.is_unique,
    ])?;
    Ok(())
}

/// Upserts a conversion, keeping the highest revision (the later write on equal revisions, as ClickHouse does).
fn insert_conversion(conn: &Connection, c: &ConversionRow) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO conversions (conversion_id, ts, revision, network_id, transaction_id, click_id, click_ts, \
         status, payout_micros, currency, revenue_micros, campaign_id, stream_id, destination_id, \
         traffic_source_id, team_id, attributed) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
         ON CONFLICT (network_id, transaction_id) DO UPDATE SET conversion_id = excluded.conversion_id, \
         ts = excluded.ts, revision = excluded.revision, click_id = excluded.click_id, \
         click_ts = excluded.click_ts, status = excluded.status, payout_micros = excluded.payout_micros, \
         currency = excluded.currency, revenue_micros = excluded.revenue_micros, \
         campaign_id = excluded.campaign_id, stream_id = excluded.stream_id, \
         destination_id = excluded.destination_id, traffic_source_id = excluded.traffic_source_id, \
         team_id = excluded.team_id, attributed = excluded.attributed \
         WHERE excluded.revision >= conversions.revision",
    )?
    .execute(params![
        c.conversion_id,
        c.ts,
        int(c.revision),
        c.network_id,
        c.transaction_id,
        c.click_id,
        c.click_ts,
        c.status,
        c.payout_micros,
        c.currency,
        c.revenue_micros,
        c.campaign_id,
        c.stream_id,
        c.destination_id,
        c.traffic_source_id,
        c.team_id,
        c.attributed,
    ])?;
    Ok(())
}

fn insert_log(conn: &Connection, p: &PostbackLogRow) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO postback_logs (id, ts, network_id, network_key, team_id, outcome, http_status, \
         latency_micros, click_id, transaction_id, conversion_id, remote_ip, error, request) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        p.id,
        p.ts,
        p.network_id,
        p.network_key,
        p.team_id,
        p.outcome,
        p.http_status,
        p.latency_micros,
        p.click_id,
        p.transaction_id,
        p.conversion_id,
        p.remote_ip,
        p.error,
        p.request,
    ])?;
    Ok(())
}

fn insert_health(conn: &Connection, h: &HealthRow) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO destination_health (id, ts, destination_id, team_id, healthy, changed, \
         http_status, latency_millis, url, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        h.id,
        h.ts,
        h.destination_id,
        h.team_id,
        h.healthy,
        h.changed,
        h.http_status,
        h.latency_millis,
        h.url,
        h.error,
    ])?;
    Ok(())
}

/// The click column a dimension reads (`k.` when it is the conversion's click).
fn click_key(by: Option<GroupBy>, k: &str) -> String {
    match by {
        None => "''".into(),
        Some(GroupBy::Campaign) => format!("{k}campaign_id"),
        Some(GroupBy::Stream) => format!("{k}stream_id"),
        Some(GroupBy::Destination) => format!("{k}destination_id"),
        Some(GroupBy::TrafficSource) => format!("{k}traffic_source_id"),
        Some(GroupBy::Country) => format!("coalesce({k}country, '')"),
        Some(GroupBy::Sub1) => format!("coalesce(json_extract({k}subs, '$[0]'), '')"),
    }
}

/// `bucket` and the window, campaign and team filters on table alias `t`; returns (bucket SQL, WHERE SQL).
fn scope(q: &AggregateQuery, t: &str, args: &mut Vec<Value>) -> (String, String) {
    let bucket = match q.bucket_secs {
        Some(secs) => {
            args.push(Value::Integer(i64::from(secs.max(1))));
            format!("{t}ts / ?{}", args.len())
        }
        None => "0".into(),
    };
    args.push(Value::Integer(i64::from(q.start)));
    args.push(Value::Integer(i64::from(q.end)));
    let mut filter = format!("{t}ts >= ?{} AND {t}ts < ?{}", args.len() - 1, args.len());
    for (column, value) in [("campaign_id", &q.campaign_id), ("team_id", &q.team_id)] {
        if let Some(v) = value {
            args.push(Value::Text(v.clone()));
            filter.push_str(&format!(" AND {t}{column} = ?{}", args.len()));
        }
    }
    (bucket, filter)
}

#[async_trait]
impl Analytics for SqliteAnalytics {
    fn backend_name(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), AnalyticsError> {
        self.call(|conn| conn.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn migrate(&self) -> Result<Vec<u32>, AnalyticsError> {
        self.call(sqlite_schema::migrate).await
    }

    async fn insert_events(&self, events: Vec<Event>) -> Result<InsertCounts, AnalyticsError> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let mut counts = InsertCounts::default();
            for e in events {
                match e {
                    Event::Click(c) => insert_click(&tx, &ClickRow::from_event(c, false)).map(|_| counts.clicks += 1),
                    Event::Trafficback(c) => {
                        insert_click(&tx, &ClickRow::from_event(c, true)).map(|_| counts.clicks += 1)
                    }
                    Event::Conversion(c) => insert_conversion(&tx, &c.into()).map(|_| counts.conversions += 1),
                    Event::PostbackLog(p) => insert_log(&tx, &p.into()).map(|_| counts.postback_logs += 1),
                    Event::DestinationHealth(h) => insert_health(&tx, &h.into()).map(|_| counts.health += 1),
                }?;
            }
            tx.commit()?;
            Ok(counts)
        })
        .await
    }

    async fn insert_ingestion_errors(&self, rows: &[IngestionErrorRow]) -> Result<(), AnalyticsError> {
        let rows = rows.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            for r in &rows {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO ingestion_errors (ts, topic, \"partition\", \"offset\", error, payload) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![r.ts, r.topic, r.partition, r.offset, r.error, r.payload])?;
            }
            tx.commit()
        })
        .await
    }

    async fn click_facts(&self, click_id: &str, _ts_secs: Option<u32>) -> Result<Option<ClickFacts>, AnalyticsError> {
        // `click_id` is the primary key here: the time adds nothing.
        let sql = format!("SELECT {CLICK_FACT_COLUMNS} FROM clicks WHERE click_id = ?1");
        let rows = self
            .rows(sql, vec![Value::Text(click_id.to_owned())], |r| {
                let subs: String = r.get(13)?;
                Ok(ClickFacts {
                    campaign_id: r.get(0)?,
                    stream_id: r.get(1)?,
                    destination_id: r.get(2)?,
                    traffic_source_id: r.get(3)?,
                    source: r.get(4)?,
                    source_click_id: r.get(5)?,
                    ip: r.get(6)?,
                    country: r.get(7)?,
                    utm_source: r.get(8)?,
                    utm_medium: r.get(9)?,
                    utm_campaign: r.get(10)?,
                    utm_content: r.get(11)?,
                    utm_term: r.get(12)?,
                    subs: serde_json::from_str(&subs).unwrap_or_default(),
                    cost_micros: r.get(14)?,
                    currency: r.get(15)?,
                })
            })
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn click_aggregates(&self, q: &AggregateQuery) -> Result<Vec<ClickAggregate>, AnalyticsError> {
        let mut args = Vec::new();
        let (bucket, mut filter) = scope(q, "", &mut args);
        if q.trafficback_only {
            filter.push_str(" AND trafficback = 1");
        }
        let sql = format!(
            "SELECT {} AS key, {bucket} AS bucket, count(*), coalesce(sum(is_unique), 0), \
             coalesce(sum(cost_micros), 0) FROM clicks WHERE {filter} GROUP BY 1, 2",
            click_key(q.by, "")
        );
        self.rows(sql, args, |r| {
            Ok(ClickAggregate {
                key: r.get(0)?,
                bucket: r.get(1)?,
                clicks: count(r, 2)?,
                unique_clicks: count(r, 3)?,
                cost_micros: r.get(4)?,
            })
        })
        .await
    }

    async fn conversion_aggregates(&self, q: &AggregateQuery) -> Result<Vec<ConversionAggregate>, AnalyticsError> {
        let mut args = Vec::new();
        let (bucket, mut filter) = scope(q, "c.", &mut args);
        let key = match q.by {
            Some(by) if by.from_click() => click_key(Some(by), "k."),
            other => click_key(other, "c."),
        };
        if q.trafficback_only {
            filter.push_str(" AND k.trafficback = 1");
        }
        let join = if q.trafficback_only || q.by.is_some_and(GroupBy::from_click) {
            "LEFT JOIN clicks k ON k.click_id = c.click_id"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {key} AS key, {bucket} AS bucket, coalesce(sum(c.status = 'approved'), 0), \
             coalesce(sum(c.status = 'pending'), 0), coalesce(sum(c.status = 'rejected'), 0), \
             coalesce(sum(CASE WHEN c.status = 'approved' THEN c.revenue_micros ELSE 0 END), 0) \
             FROM conversions c {join} WHERE {filter} GROUP BY 1, 2"
        );
        self.rows(sql, args, |r| {
            Ok(ConversionAggregate {
                key: r.get(0)?,
                bucket: r.get(1)?,
                approved: count(r, 2)?,
                pending: count(r, 3)?,
                rejected: count(r, 4)?,
                revenue_micros: r.get(5)?,
            })
        })
        .await
    }

    async fn health(&self, q: &ReportQuery) -> Result<Vec<DestinationHealth>, AnalyticsError> {
        let window = Window::of(q)?;
        let mut args = vec![Value::Integer(window.start().into()), Value::Integer(window.end().into())];
        let mut filter = "ts >= ?1 AND ts < ?2".to_owned();
        if let Some(t) = q.team_id.as_deref().filter(|t| !t.is_empty()) {
            args.push(Value::Text(t.to_owned()));
            filter.push_str(" AND team_id = ?3");
        }
        // The latest check is the greatest (ts, id), as ClickHouse's argMax(…, (ts, id)) picks it.
        let sql = format!(
            "SELECT destination_id, count(*), sum(healthy = 0), sum(changed), sum(latency_millis), \
             max(CASE WHEN rn = 1 THEN healthy END), max(CASE WHEN rn = 1 THEN http_status END), \
             max(CASE WHEN rn = 1 THEN error END), max(ts) \
             FROM (SELECT *, row_number() OVER (PARTITION BY destination_id ORDER BY ts DESC, id DESC) AS rn \
                   FROM destination_health WHERE {filter}) \
             GROUP BY destination_id ORDER BY destination_id"
        );
        self.rows(sql, args, |r| {
            let checks = count(r, 1)?;
            Ok(DestinationHealth {
                destination_id: r.get(0)?,
                checks,
                failures: count(r, 2)?,
                transitions: count(r, 3)?,
                avg_latency_millis: count(r, 4)?.checked_div(checks).unwrap_or(0),
                last_healthy: r.get::<_, i64>(5)? != 0,
                last_http_status: r.get(6)?,
                last_error: r.get(7)?,
                last_checked_at: utc(r.get(8)?),
            })
        })
        .await
    }

    async fn ingestion_errors(
        &self,
        q: &ReportQuery,
        limit: u32,
        offset: u64,
    ) -> Result<IngestionErrorPage, AnalyticsError> {
        let window = Window::of(q)?;
        let (start, end) = (window.start(), window.end());
        let limit = limit.min(MAX_PAGE);
        let offset = int(offset);
        self.call(move |conn| {
            let total: i64 = conn.query_row(
                "SELECT count(*) FROM ingestion_errors WHERE ts >= ?1 AND ts < ?2",
                params![start, end],
                |r| r.get(0),
            )?;
            let mut stmt = conn.prepare_cached(
                "SELECT ts, topic, \"partition\", \"offset\", error, payload FROM ingestion_errors \
                 WHERE ts >= ?1 AND ts < ?2 ORDER BY ts DESC, topic, \"partition\", \"offset\" LIMIT ?3 OFFSET ?4",
            )?;
            let rows = stmt.query_map(params![start, end, limit, offset], |r| {
                Ok(IngestionError {
                    ts: utc(r.get(0)?),
                    topic: r.get(1)?,
                    partition: r.get(2)?,
                    offset: r.get(3)?,
                    error: r.get(4)?,
                    payload: r.get(5)?,
                })
            })?;
            Ok(IngestionErrorPage { total: u64::try_from(total).unwrap_or(0), rows: rows.collect::<Result<_, _>>()? })
        })
        .await
    }

    async fn postback_logs(
        &self,
        q: &ReportQuery,
        filter: &PostbackLogFilter,
        limit: u32,
        offset: u64,
    ) -> Result<PostbackLogPage, AnalyticsError> {
        let window = Window::of(q)?;
        let mut args = vec![Value::Integer(window.start().into()), Value::Integer(window.end().into())];
        let conditions = filter.conditions(q);
        let mut scope = "ts >= ?1 AND ts < ?2".to_owned();
        for (column, value) in conditions {
            args.push(Value::Text(value));
            scope.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
        let count_sql = format!("SELECT count(*) FROM postback_logs WHERE {scope}");
        let sql = format!(
            "SELECT id, ts, network_id, network_key, team_id, outcome, http_status, latency_micros, click_id, \
             transaction_id, conversion_id, remote_ip, error, request FROM postback_logs WHERE {scope} \
             ORDER BY ts DESC, id DESC LIMIT ?{} OFFSET ?{}",
            args.len() + 1,
            args.len() + 2
        );
        let page_args: Vec<Value> = args
            .iter()
            .cloned()
            .chain([Value::Integer(limit.min(MAX_PAGE).into()), Value::Integer(int(offset))])
            .collect();
        self.call(move |conn| {
            let total = conn.query_row(&count_sql, params_from_iter(args), |r| count(r, 0))?;
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(page_args), |r| {
                Ok(PostbackLogRow {
                    id: r.get(0)?,
                    ts: r.get(1)?,
                    network_id: r.get(2)?,
                    network_key: r.get(3)?,
                    team_id: r.get(4)?,
                    outcome: r.get(5)?,
                    http_status: r.get(6)?,
                    latency_micros: r.get(7)?,
                    click_id: r.get(8)?,
                    transaction_id: r.get(9)?,
                    conversion_id: r.get(10)?,
                    remote_ip: r.get(11)?,
                    error: r.get(12)?,
                    request: r.get(13)?,
                }
                .into_entry())
            })?;
            Ok(PostbackLogPage { total, rows: rows.collect::<Result<_, _>>()? })
        })
        .await
    }
}
