//! ClickHouse: connection, migrations, and batched inserts of events.
//!
//! The client talks to every ClickHouse release we support, down to 18.16: row validation is off (old servers
//! lack the metadata it needs), tables are named bare within the configured database, and values go in with
//! `.bind()`.

use ::clickhouse::{Client, Row, RowOwned, RowWrite};
use serde::Deserialize;

use super::AnalyticsError;
pub use super::InsertCounts;
use super::rows::{ClickRow, ConversionRow, HealthRow, IngestionErrorRow, PostbackLogRow};
use super::schema::{MIGRATIONS, MIGRATIONS_TABLE};
use crate::events::Event;

/// The error of a ClickHouse call: [`AnalyticsError::Refused`] when the server refused the data itself, else
/// [`AnalyticsError::ClickHouse`].
pub(crate) fn ch(e: ::clickhouse::error::Error) -> AnalyticsError {
    match &e {
        ::clickhouse::error::Error::BadResponse(message) if is_data_error(message) => {
            AnalyticsError::Refused(message.clone())
        }
        _ => AnalyticsError::ClickHouse(e.to_string()),
    }
}

/// ClickHouse's exception code at the start of an error response (`Code: 131, e.displayText() = …` on 18.16,
/// `Code: 131. DB::Exception: …` on current releases).
pub fn exception_code(message: &str) -> Option<u32> {
    let rest = message.trim_start().strip_prefix("Code:")?.trim_start();
    let digits = rest.find(|c: char| !c.is_ascii_digit()).map_or(rest, |end| &rest[..end]);
    digits.parse().ok()
}

/// Exception codes by which ClickHouse refuses a value it cannot store in its column: the same rows fail the
/// same way every time, so retrying cannot help. Everything else — connection errors, timeouts, overload
/// (too many parts, memory, simultaneous queries), a missing table or column — may pass and is retried.
const DATA_ERRORS: &[(u32, &str)] = &[
    (6, "CANNOT_PARSE_TEXT"),
    (19, "SIZE_OF_FIXED_STRING_DOESNT_MATCH"),
    (26, "CANNOT_PARSE_QUOTED_STRING"),
    (27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED"),
    (38, "CANNOT_PARSE_DATE"),
    (41, "CANNOT_PARSE_DATETIME"),
    (69, "ARGUMENT_OUT_OF_BOUND"),
    (70, "CANNOT_CONVERT_TYPE"),
    (72, "CANNOT_PARSE_NUMBER"),
    (117, "INCORRECT_DATA"),
    (131, "TOO_LARGE_STRING_SIZE"),
    (190, "SIZES_OF_ARRAYS_DOESNT_MATCH"),
    (321, "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"),
    (395, "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO"),
    (469, "VIOLATED_CONSTRAINT"),
    (691, "UNKNOWN_ELEMENT_OF_ENUM"),
];

/// Whether an error response says ClickHouse refused the data (see [`DATA_ERRORS`]). One more case counts:
/// an insert block whose rows fall into too many partitions (`TOO_MANY_PARTS`, 252, with that wording) is refused
/// for its rows' times, and smaller blocks of the same rows go in.
pub fn is_data_error(message: &str) -> bool {
    match exception_code(message) {
        Some(252) => message.contains("Too many partitions for single INSERT block"),
        Some(code) => DATA_ERRORS.iter().any(|(c, _)| *c == code),
        None => false,
    }
}

/// An event ClickHouse refused: its index in the events given, and ClickHouse's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedEvent {
    pub index: usize,
    pub reason: String,
}

/// Events as the rows of their tables, each row with the index of the event it came from.
#[derive(Default)]
pub struct RowBatch {
    clicks: Tagged<ClickRow>,
    conversions: Tagged<ConversionRow>,
    logs: Tagged<PostbackLogRow>,
    health: Tagged<HealthRow>,
}

impl RowBatch {
    pub fn new(events: Vec<Event>) -> Self {
        let mut batch = Self::default();
        for (i, e) in events.into_iter().enumerate() {
            batch.push(i, e);
        }
        batch
    }

    /// Adds one event; `index` is what [`RefusedEvent::index`] reports if ClickHouse refuses it.
    pub fn push(&mut self, index: usize, event: Event) {
        match event {
            Event::Click(c) => self.clicks.push(index, ClickRow::from_event(c, false)),
            Event::Trafficback(c) => self.clicks.push(index, ClickRow::from_event(c, true)),
            Event::Conversion(c) => self.conversions.push(index, ConversionRow::from(c)),
            Event::PostbackLog(p) => self.logs.push(index, PostbackLogRow::from(p)),
            Event::DestinationHealth(h) => self.health.push(index, HealthRow::from(h)),
        }
    }

    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        self.clicks.rows.len() + self.conversions.rows.len() + self.logs.rows.len() + self.health.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rows of one table with the index of the event each came from.
struct Tagged<T> {
    rows: Vec<T>,
    index: Vec<usize>,
}

impl<T> Default for Tagged<T> {
    fn default() -> Self {
        Self { rows: Vec::new(), index: Vec::new() }
    }
}

impl<T> Tagged<T> {
    fn push(&mut self, index: usize, row: T) {
        self.rows.push(row);
        self.index.push(index);
    }
}

/// A ClickHouse database holding TraffoFlex's events.
#[derive(Clone)]
pub struct ClickHouse {
    client: Client,
    server: Client,
    database: String,
}

#[derive(Row, Deserialize)]
struct Applied {
    version: u32,
}

impl ClickHouse {
    /// A client for `database` on the server at `url` (HTTP interface, e.g. `http://127.0.0.1:8123`).
    pub fn new(url: &str, database: &str) -> Self {
        let server = Client::default().with_url(url).with_validation(false);
        let client = server.clone().with_database(database);
        Self { client, server, database: database.to_owned() }
    }

    /// The client bound to our database, for report queries.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// Whether the server answers.
    pub async fn ping(&self) -> Result<(), AnalyticsError> {
        self.server.query("SELECT 1").execute().await.map_err(ch)
    }

    /// Creates the database and applies every migration not yet applied. Returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<u32>, AnalyticsError> {
        let create_db = format!("CREATE DATABASE IF NOT EXISTS `{}`", self.database.replace('`', ""));
        self.server.query(&create_db).execute().await.map_err(ch)?;
        self.client.query(MIGRATIONS_TABLE).execute().await.map_err(ch)?;
        let done: Vec<u32> = self
            .client
            .query("SELECT version FROM schema_migrations FINAL")
            .fetch_all::<Applied>()
            .await
            .map_err(ch)?
            .into_iter()
            .map(|a| a.version)
            .collect();
        let mut applied = Vec::new();
        for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
            for sql in m.statements {
                self.client.query(sql).execute().await.map_err(|e| AnalyticsError::Migration {
                    version: m.version,
                    name: m.name,
                    message: e.to_string(),
                })?;
            }
            self.client
                .query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, now())")
                .bind(m.version)
                .bind(m.name)
                .execute()
                .await
                .map_err(ch)?;
            tracing::info!(version = m.version, name = m.name, database = %self.database, "applied ClickHouse migration");
            applied.push(m.version);
        }
        Ok(applied)
    }

    /// Inserts every event into its table, one INSERT per table. Succeeds only when all are stored.
    pub async fn insert_events(&self, events: Vec<Event>) -> Result<InsertCounts, AnalyticsError> {
        let mut clicks = Vec::new();
        let mut conversions = Vec::new();
        let mut logs = Vec::new();
        let mut health = Vec::new();
        for e in events {
            match e {
                Event::Click(c) => clicks.push(ClickRow::from_event(c, false)),
                Event::Trafficback(c) => clicks.push(ClickRow::from_event(c, true)),
                Event::Conversion(c) => conversions.push(ConversionRow::from(c)),
                Event::PostbackLog(p) => logs.push(PostbackLogRow::from(p)),
                Event::DestinationHealth(h) => health.push(HealthRow::from(h)),
            }
        }
        let counts = InsertCounts {
            clicks: clicks.len(),
            conversions: conversions.len(),
            postback_logs: logs.len(),
            health: health.len(),
        };
        self.insert_rows("clicks", &clicks).await?;
        self.insert_rows("conversions", &conversions).await?;
        self.insert_rows("postback_logs", &logs).await?;
        self.insert_rows("destination_health", &health).await?;
        Ok(counts)
    }

    /// Inserts every event into its table like [`ClickHouse::insert_events`], except that a block ClickHouse
    /// refuses for its data ([`AnalyticsError::Refused`]) is split in halves, and the halves again, until the
    /// refused events are alone: those are returned, every other event is stored. Any other error ends the call;
    /// what was stored by then is stored again harmlessly when the caller retries (replays collapse).
    /// `InsertCounts` counts the stored rows only.
    pub async fn insert_events_isolating(
        &self,
        events: Vec<Event>,
    ) -> Result<(InsertCounts, Vec<RefusedEvent>), AnalyticsError> {
        self.insert_batch_isolating(&RowBatch::new(events)).await
    }

    /// [`ClickHouse::insert_events_isolating`] for events already turned into rows, so a retry reuses them.
    pub async fn insert_batch_isolating(
        &self,
        batch: &RowBatch,
    ) -> Result<(InsertCounts, Vec<RefusedEvent>), AnalyticsError> {
        let mut refused = Vec::new();
        let counts = InsertCounts {
            clicks: self.insert_isolating("clicks", &batch.clicks, &mut refused).await?,
            conversions: self.insert_isolating("conversions", &batch.conversions, &mut refused).await?,
            postback_logs: self.insert_isolating("postback_logs", &batch.logs, &mut refused).await?,
            health: self.insert_isolating("destination_health", &batch.health, &mut refused).await?,
        };
        refused.sort_by_key(|r| r.index);
        Ok((counts, refused))
    }

    /// Inserts `rows`, bisecting refused blocks; returns how many rows were stored.
    async fn insert_isolating<T: RowOwned + RowWrite>(
        &self,
        table: &str,
        rows: &Tagged<T>,
        refused: &mut Vec<RefusedEvent>,
    ) -> Result<usize, AnalyticsError> {
        let mut stored = 0;
        // Ranges still to insert, the next on top.
        let mut pending = Vec::new();
        pending.push(0..rows.rows.len());
        while let Some(range) = pending.pop() {
            if range.is_empty() {
                continue;
            }
            match self.insert_rows(table, &rows.rows[range.clone()]).await {
                Ok(()) => stored += range.len(),
                Err(AnalyticsError::Refused(reason)) if range.len() == 1 => {
                    tracing::debug!(table, %reason, "ClickHouse refused an event");
                    refused.push(RefusedEvent { index: rows.index[range.start], reason });
                }
                Err(AnalyticsError::Refused(reason)) => {
                    tracing::debug!(table, rows = range.len(), %reason, "ClickHouse refused a block; splitting it");
                    let mid = range.start + range.len() / 2;
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(stored)
    }

    /// Stores messages that could not be ingested, for a person to browse.
    pub async fn insert_ingestion_errors(&self, rows: &[IngestionErrorRow]) -> Result<(), AnalyticsError> {
        self.insert_rows("ingestion_errors", rows).await
    }

    async fn insert_rows<T: RowOwned + RowWrite>(&self, table: &str, rows: &[T]) -> Result<(), AnalyticsError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<T>(table).await.map_err(ch)?;
        for row in rows {
            insert.write(row).await.map_err(ch)?;
        }
        insert.end().await.map_err(ch)
    }

    /// Rows in `table` counted once per event ID, whether or not ClickHouse has merged replays yet.
    pub async fn count_distinct(&self, table: &str, id_column: &str) -> Result<u64, AnalyticsError> {
        #[derive(Row, Deserialize)]
        struct N {
            n: u64,
        }
        let sql = format!("SELECT uniqExact({id_column}) AS n FROM {table}");
        Ok(self.client.query(&sql).fetch_one::<N>().await.map_err(ch)?.n)
    }

    /// Every row in `table`, replays included until ClickHouse merges them.
    pub async fn count_rows(&self, table: &str) -> Result<u64, AnalyticsError> {
        #[derive(Row, Deserialize)]
        struct N {
            n: u64,
        }
        let sql = format!("SELECT count() AS n FROM {table}");
        Ok(self.client.query(&sql).fetch_one::<N>().await.map_err(ch)?.n)
    }

    /// Drops the whole database: for tests and `traffoflex migrate --reset` style tooling.
    pub async fn drop_database(&self) -> Result<(), AnalyticsError> {
        let sql = format!("DROP DATABASE IF EXISTS `{}`", self.database.replace('`', ""));
        self.server.query(&sql).execute().await.map_err(ch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_told_from_outages_by_exception_code() {
        let old = "Code: 131, e.displayText() = DB::Exception: String too long for type FixedString(2), e.what() = \
                   DB::Exception";
        let new =
            "Code: 131. DB::Exception: Too large value for FixedString(2). (TOO_LARGE_STRING_SIZE) (version 25.8)";
        assert_eq!((exception_code(old), exception_code(new)), (Some(131), Some(131)));
        assert!(is_data_error(old) && is_data_error(new));
        assert!(is_data_error("Code: 395. DB::Exception: Value passed to 'throwIf' function is non-zero"));
        let parts = "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100).";
        assert!(is_data_error(parts), "smaller blocks of the same rows go in");
        for transient in [
            "Code: 252. DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts",
            "Code: 241. DB::Exception: Memory limit (total) exceeded",
            "Code: 202. DB::Exception: Too many simultaneous queries. Maximum: 100",
            "Code: 60. DB::Exception: Table tf.clicks doesn't exist.",
            "Code: 16. DB::Exception: No such column country_code in table tf.clicks",
            "503 Service Unavailable",
            "",
        ] {
            assert!(!is_data_error(transient), "{transient}");
        }
    }
}
