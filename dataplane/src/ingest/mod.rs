//! The ingester: a Kafka consumer group whose batches go into ClickHouse; offsets are committed only after
//! the batch is stored, so a crash re-delivers instead of losing, and the idempotent tables (see
//! `traffoflex_core::analytics::schema`) make the re-delivery harmless.
//!
//! A message that can't be decoded becomes an ingestion error row (topic, partition, offset, why, an excerpt)
//! and never blocks its partition. So does an event ClickHouse refuses for its data (a value its column cannot
//! take): the refused block is bisected until the refused events are alone, those become ingestion errors, the
//! rest is stored and the batch committed. Outages — connection errors, timeouts, an overloaded server — are
//! retried with backoff, the batch uncommitted until it is stored (see `ClickHouse::insert_events_isolating`).
//!
//! A side task publishes the consumer lag of every assigned partition as `traffoflex_ingest_lag_messages`.

mod metrics;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use traffoflex_core::analytics::AnalyticsError;
use traffoflex_core::analytics::clickhouse::{ClickHouse, RowBatch};
use traffoflex_core::analytics::rows::IngestionErrorRow;
use traffoflex_core::bus::kafka::{KafkaConsumer, Received};
use traffoflex_core::bus::{BusError, Topic};
use traffoflex_core::events::{self, now_millis};
use traffoflex_core::telemetry::Telemetry;

pub use metrics::{IngestMetrics, PartitionLabels};

/// How often the consumer lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(2);

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
    consumer: Arc<KafkaConsumer>,
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
        Ok(Self { consumer: Arc::new(consumer), sink, batch, metrics })
    }

    /// Runs until `shutdown` is cancelled; the batch in hand is finished (stored and committed) first.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), IngestError> {
        tracing::info!(database = self.sink.database(), "ingester started");
        let lag = tokio::spawn(watch_lag(Arc::clone(&self.consumer), self.metrics.clone(), shutdown.child_token()));
        let outcome = self.consume(&shutdown).await;
        lag.abort();
        tracing::info!("ingester stopped");
        outcome
    }

    /// Stores batch after batch while a reader task reads and decodes the next one, so Kafka reads, decoding
    /// and ClickHouse inserts overlap. Batches are stored and committed in the order they were read.
    async fn consume(&self, shutdown: &CancellationToken) -> Result<(), IngestError> {
        // One decoded batch waits while one is stored: at most three batches are in memory.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let reader = tokio::spawn(read_ahead(
            Arc::clone(&self.consumer),
            self.batch,
            self.metrics.clone(),
            tx,
            shutdown.child_token(),
        ));
        while let Some(batch) = rx.recv().await {
            if shutdown.is_cancelled() || !self.store(&batch, shutdown).await {
                // Shutting down before the batch was stored: leave it uncommitted for the next reader.
                reader.abort();
                return Ok(());
            }
            if let Err(e) = self.consumer.commit(&batch.messages) {
                // Typically a rebalance took the partitions while the batch was being stored. The batch is in
                // ClickHouse; whoever reads those partitions next reads it again, and the tables keep each
                // event once. Going on keeps the other partitions flowing.
                self.metrics.commit_error();
                tracing::warn!(error = %e, "committing offsets failed after the batch was stored; its messages will be read again");
            }
        }
        // The reader stops by itself only on shutdown, or when it panicked: pass the panic on.
        if let Err(e) = reader.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
        Ok(())
    }

    /// Stores one batch, retrying with backoff while ClickHouse fails. False when shutdown came first.
    async fn store(&self, batch: &Decoded, shutdown: &CancellationToken) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.write(batch).await {
                Ok((rows, refused)) => {
                    self.metrics.stored(rows, batch.bad.len() + refused, refused);
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

    /// Stores the events, and as ingestion errors the undecodable messages and the events ClickHouse refuses.
    /// Returns the rows stored and how many events were refused.
    async fn write(&self, batch: &Decoded) -> Result<(usize, usize), AnalyticsError> {
        let (counts, refused) = self.sink.insert_batch_isolating(&batch.rows).await?;
        let mut errors = batch.bad.clone();
        for r in &refused {
            let m = &batch.messages[r.index];
            let (topic, partition, offset) = (&m.topic, m.partition, m.offset);
            tracing::warn!(%topic, partition, offset, reason = %r.reason, "ClickHouse refused an event");
            errors.push(error_row(m, format!("ClickHouse refused the event: {}", r.reason)));
        }
        self.sink.insert_ingestion_errors(&errors).await?;
        Ok((counts.total(), refused.len()))
    }
}

/// A batch as read from Kafka, its events already rows and its undecodable messages ingestion errors.
struct Decoded {
    messages: Vec<Received>,
    /// The events, tagged with the index of their message.
    rows: RowBatch,
    bad: Vec<IngestionErrorRow>,
}

impl Decoded {
    fn new(messages: Vec<Received>) -> Self {
        let mut rows = RowBatch::default();
        let mut bad = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            match events::decode(&m.payload) {
                Ok(e) => rows.push(i, e),
                Err(e) => {
                    tracing::warn!(topic = %m.topic, partition = m.partition, offset = m.offset, error = %e, "undecodable message");
                    bad.push(error_row(m, e.to_string()));
                }
            }
        }
        Self { messages, rows, bad }
    }
}

/// Reads batches and decodes them (on the blocking pool, beside the inserts) until cancelled or the receiver
/// is gone. A read error is usually passing (a rebalance, a topic not yet known): nothing was read, so nothing
/// is skipped; it waits a second and reads again.
async fn read_ahead(
    consumer: Arc<KafkaConsumer>,
    settings: BatchSettings,
    metrics: IngestMetrics,
    tx: tokio::sync::mpsc::Sender<Decoded>,
    stop: CancellationToken,
) {
    let wait = Duration::from_millis(500);
    loop {
        let batch = tokio::select! {
            b = consumer.next_batch(settings.max_rows, wait, settings.linger) => b,
            () = stop.cancelled() => return,
        };
        let messages = match batch {
            Ok(b) if b.is_empty() => continue,
            Ok(b) => b,
            Err(e) => {
                metrics.consume_error();
                tracing::warn!(error = %e, "reading from Kafka failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        metrics.batch(messages.len());
        let decoded = match tokio::task::spawn_blocking(move || Decoded::new(messages)).await {
            Ok(d) => d,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => return,
        };
        if tx.send(decoded).await.is_err() {
            return;
        }
    }
}

fn error_row(m: &Received, error: String) -> IngestionErrorRow {
    IngestionErrorRow::new(now_millis(), &m.topic, m.partition, m.offset, error, &m.payload)
}

/// Measures the consumer lag every [`LAG_INTERVAL`] until cancelled. The watermark queries block, so they run on
/// the blocking pool.
async fn watch_lag(consumer: Arc<KafkaConsumer>, metrics: IngestMetrics, stop: CancellationToken) {
    loop {
        let c = Arc::clone(&consumer);
        match tokio::task::spawn_blocking(move || c.lag(Duration::from_secs(2))).await {
            Ok(Ok(lags)) => metrics.lag(&lags),
            Ok(Err(e)) => tracing::debug!(error = %e, "measuring the consumer lag failed"),
            Err(e) => tracing::debug!(error = %e, "the lag task failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(LAG_INTERVAL) => {}
            () = stop.cancelled() => return,
        }
    }
}
