//! The ingester's metrics: messages in, rows written, ingestion errors, failed writes, batch sizes.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use traffoflex_core::telemetry::Telemetry;

#[derive(Clone)]
pub struct IngestMetrics {
    messages: Counter,
    rows: Counter,
    errors: Counter,
    failed_writes: Counter,
    consume_errors: Counter,
    batch_size: Histogram,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self {
            messages: Counter::default(),
            rows: Counter::default(),
            errors: Counter::default(),
            failed_writes: Counter::default(),
            consume_errors: Counter::default(),
            batch_size: Histogram::new([1.0, 10.0, 100.0, 1_000.0, 10_000.0, 50_000.0, 100_000.0]),
        }
    }
}

impl IngestMetrics {
    pub fn register(&self, telemetry: &Telemetry) {
        telemetry.register("traffoflex_ingest", |r| {
            r.register("messages", "Messages read from Kafka", self.messages.clone());
            r.register("rows", "Rows written to ClickHouse", self.rows.clone());
            r.register("ingestion_errors", "Messages stored as ingestion errors", self.errors.clone());
            r.register("failed_writes", "ClickHouse writes that failed and were retried", self.failed_writes.clone());
            r.register("consume_errors", "Kafka read errors (retried)", self.consume_errors.clone());
            r.register("batch_size", "Messages per batch", self.batch_size.clone());
        });
    }

    pub(super) fn batch(&self, n: usize) {
        self.messages.inc_by(n as u64);
        self.batch_size.observe(n as f64);
    }

    pub(super) fn stored(&self, rows: usize, errors: usize) {
        self.rows.inc_by(rows as u64);
        self.errors.inc_by(errors as u64);
    }

    pub(super) fn failed_write(&self) {
        self.failed_writes.inc();
    }

    pub(super) fn consume_error(&self) {
        self.consume_errors.inc();
    }
}
