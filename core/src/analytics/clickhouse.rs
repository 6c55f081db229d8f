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

fn ch(e: ::clickhouse::error::Error) -> AnalyticsError {
    AnalyticsError::ClickHouse(e.to_string())
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
