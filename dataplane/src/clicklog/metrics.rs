//! The click log's metrics, under `traffoflex_clicklog_`: records appended and fsyncs (their ratio is the
//! group-commit size), how long each group commit took, drops, records shipped, ship errors, bytes on disk,
//! records pending and the capacity.
//! [`super::ClickLog::stats`] reads the same numbers.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use traffoflex_core::telemetry::Telemetry;

#[derive(Clone)]
pub(super) struct ClickLogMetrics {
    pub appended: Counter,
    pub fsyncs: Counter,
    /// Seconds from the start of a group commit's write to the end of its fdatasync: what a durable click
    /// waits for at least, beyond the commit already in flight when it arrived.
    pub commit_seconds: Histogram,
    pub dropped: Counter,
    pub shipped: Counter,
    pub ship_errors: Counter,
    /// Bytes of every segment, counting a batch from the moment the writer takes it.
    pub disk_bytes: Gauge,
    /// Records on disk that the sink has not acknowledged yet.
    pub pending: Gauge,
    pub capacity_bytes: Gauge,
}

impl Default for ClickLogMetrics {
    fn default() -> Self {
        Self {
            appended: Counter::default(),
            fsyncs: Counter::default(),
            // 50 µs to 100 ms.
            commit_seconds: Histogram::new(exponential_buckets(50e-6, 2.0, 12)),
            dropped: Counter::default(),
            shipped: Counter::default(),
            ship_errors: Counter::default(),
            disk_bytes: Gauge::default(),
            pending: Gauge::default(),
            capacity_bytes: Gauge::default(),
        }
    }
}

impl ClickLogMetrics {
    pub fn register(&self, telemetry: &Telemetry) {
        telemetry.register("traffoflex_clicklog", |r| {
            r.register("appended", "Records written to the click log and fsynced", self.appended.clone());
            r.register(
                "fsyncs",
                "fdatasync calls of the click log writer (appended / fsyncs = records per group commit)",
                self.fsyncs.clone(),
            );
            r.register(
                "commit_seconds",
                "Time of one group commit: writing a batch and its fdatasync",
                self.commit_seconds.clone(),
            );
            r.register(
                "dropped",
                "Records not stored: log full, record too large, log closed or a failed write",
                self.dropped.clone(),
            );
            r.register("shipped", "Records the sink acknowledged", self.shipped.clone());
            r.register("ship_errors", "Sink deliveries that failed and were retried", self.ship_errors.clone());
            r.register("bytes", "Bytes of click log segments on disk", self.disk_bytes.clone());
            r.register("pending", "Records in the click log not yet acknowledged by the sink", self.pending.clone());
            r.register(
                "capacity_bytes",
                "The most bytes the click log may hold; appends beyond it are dropped",
                self.capacity_bytes.clone(),
            );
        });
    }
}
