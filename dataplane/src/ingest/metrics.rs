//! The ingester's metrics: messages in, rows written, ingestion errors, refused events, failed writes, batch
//! sizes, and the consumer lag per partition.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use traffoflex_core::bus::kafka::PartitionLag;
use traffoflex_core::telemetry::Telemetry;

/// The labels of the lag gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone)]
pub struct IngestMetrics {
    messages: Counter,
    rows: Counter,
    errors: Counter,
    refused: Counter,
    failed_writes: Counter,
    consume_errors: Counter,
    commit_errors: Counter,
    batch_size: Histogram,
    lag: Family<PartitionLabels, Gauge>,
    /// The partitions the lag gauge shows now, so partitions that moved away are removed.
    lag_shown: Arc<Mutex<HashSet<PartitionLabels>>>,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self {
            messages: Counter::default(),
            rows: Counter::default(),
            errors: Counter::default(),
            refused: Counter::default(),
            failed_writes: Counter::default(),
            consume_errors: Counter::default(),
            commit_errors: Counter::default(),
            batch_size: Histogram::new([1.0, 10.0, 100.0, 1_000.0, 10_000.0, 50_000.0, 100_000.0]),
            lag: Family::default(),
            lag_shown: Arc::default(),
        }
    }
}

impl IngestMetrics {
    /// A commit Kafka refused.
    pub fn commit_error(&self) {
        self.commit_errors.inc();
    }

    pub fn register(&self, telemetry: &Telemetry) {
        telemetry.register("traffoflex_ingest", |r| {
            r.register("messages", "Messages read from Kafka", self.messages.clone());
            r.register("rows", "Rows written to ClickHouse", self.rows.clone());
            r.register("ingestion_errors", "Messages stored as ingestion errors", self.errors.clone());
            r.register(
                "refused",
                "Events ClickHouse refused for their data, stored as ingestion errors",
                self.refused.clone(),
            );
            r.register("failed_writes", "ClickHouse writes that failed and were retried", self.failed_writes.clone());
            r.register("consume_errors", "Kafka read errors (retried)", self.consume_errors.clone());
            r.register(
                "commit_errors",
                "Offset commits Kafka refused after the batch was stored (its messages are read again, stored once)",
                self.commit_errors.clone(),
            );
            r.register("batch_size", "Messages per batch", self.batch_size.clone());
            r.register(
                "lag_messages",
                "Messages in a partition not yet stored in ClickHouse (high watermark minus committed offset)",
                self.lag.clone(),
            );
        });
    }

    pub(super) fn batch(&self, n: usize) {
        self.messages.inc_by(n as u64);
        self.batch_size.observe(n as f64);
    }

    pub(super) fn stored(&self, rows: usize, errors: usize, refused: usize) {
        self.rows.inc_by(rows as u64);
        self.errors.inc_by(errors as u64);
        self.refused.inc_by(refused as u64);
    }

    pub(super) fn failed_write(&self) {
        self.failed_writes.inc();
    }

    pub(super) fn consume_error(&self) {
        self.consume_errors.inc();
    }

    /// Shows `lags` and removes the partitions no longer among them.
    pub(super) fn lag(&self, lags: &[PartitionLag]) {
        let now: HashSet<PartitionLabels> = lags
            .iter()
            .map(|l| {
                let labels = PartitionLabels { topic: l.topic.clone(), partition: l.partition };
                self.lag.get_or_create(&labels).set(i64::try_from(l.messages()).unwrap_or(i64::MAX));
                labels
            })
            .collect();
        let mut shown = self.lag_shown.lock().unwrap_or_else(|p| p.into_inner());
        for gone in shown.difference(&now) {
            self.lag.remove(gone);
        }
        *shown = now;
    }
}
