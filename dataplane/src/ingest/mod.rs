//! The ingester: a Kafka consumer group whose batches go into ClickHouse; offsets are committed only after
//! the batch is stored, so a crash re-delivers instead of losing, and the idempotent tables (see
//! `traffoflex_core::analytics::schema`) make the re-delivery harmless.
//!
//! A message that can't be decoded becomes an ingestion error row (topic, partition, offset, why, an excerpt)
//! and never blocks its partition.

mod metrics;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use traffoflex_core::analytics::AnalyticsError;
use traffoflex_core::analytics::clickhouse::ClickHouse;
use traffoflex_core::analytics::rows::IngestionErrorRow;
use traffoflex_core::bus::kafka::{KafkaConsumer, Received};
use traffoflex_core::bus::{BusError, Topic};
use traffoflex_core::events::{self, now_millis};
use traffoflex_core::telemetry::Telemetry;

pub use metrics::IngestMetrics;

/// Batching of the ingester: a batch is written when it has `max_rows` messages or `linger` has passed since
/// its first message.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    pub max_rows: usize,
    pub linger: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self { max_rows: 50_000, linger: Duration::from_millis(500) }
    }
}

/// Why the ingester stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Reads the event topics in a consumer group and writes them to ClickHouse.
pub struct Ingester {
    consumer: KafkaConsumer,
    sink: ClickHouse,
    batch: BatchSettings,
    metrics: IngestMetrics,
}

impl Ingester {
    /// Joins `group` on every event topic under `prefix`.
    pub fn new(
        brokers: &str,
        prefix: &str,
        group: &str,
        sink: ClickHouse,
        batch: BatchSettings,
        telemetry: &Telemetry,
    ) -> Result<Self, IngestError> {
        let topics: Vec<String> = Topic::ALL.iter().map(|t| t.name(prefix)).collect();
        let consumer = KafkaConsumer::new(brokers, group, &topics)?;
        let metrics = IngestMetrics::default();
        metrics.register(telemetry);
        Ok(Self { consumer, sink, batch, metrics })
    }

    /// Runs until `shutdown` is cancelled; the batch in hand is finished (stored and committed) first.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), IngestError> {
        tracing::info!(database = self.sink.database(), "ingester started");
        while !shutdown.is_cancelled() {
            let wait = Duration::from_millis(500);
            let batch = tokio::select! {
                b = self.consumer.next_batch(self.batch.max_rows, wait, self.batch.linger) => b,
                () = shutdown.cancelled() => break,
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    // Nothing was read, so nothing can be skipped: wait a little and read again.
                    self.metrics.consume_error();
                    tracing::warn!(error = %e, "reading from Kafka failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            };
            if batch.is_empty() {
                continue;
            }
            if !self.store(&batch, &shutdown).await {
                // Shutting down before the batch was stored: leave it uncommitted for the next reader.
                break;
            }
            self.consumer.commit(&batch)?;
        }
        tracing::info!("ingester stopped");
        Ok(())
    }

    /// Stores one batch, retrying with backoff while ClickHouse fails. False when shutdown came first.
    async fn store(&self, batch: &[Received], shutdown: &CancellationToken) -> bool {
        let mut good = Vec::with_capacity(batch.len());
        let mut bad = Vec::new();
        for m in batch {
            match events::decode(&m.payload) {
                Ok(e) => good.push(e),
                Err(e) => {
                    tracing::warn!(topic = %m.topic, partition = m.partition, offset = m.offset, error = %e, "undecodable message");
                    bad.push(IngestionErrorRow::new(
                        now_millis(),
                        &m.topic,
                        m.partition,
                        m.offset,
                        e.to_string(),
                        &m.payload,
                    ));
                }
            }
        }
        self.metrics.batch(batch.len());
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.write(good.clone(), &bad).await {
                Ok(rows) => {
                    self.metrics.stored(rows, bad.len());
                    return true;
                }
                Err(e) => {
                    self.metrics.failed_write();
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "ClickHouse insert failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => return false,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn write(&self, good: Vec<events::Event>, bad: &[IngestionErrorRow]) -> Result<usize, AnalyticsError> {
        let counts = self.sink.insert_events(good).await?;
        self.sink.insert_ingestion_errors(bad).await?;
        Ok(counts.total())
    }
}
