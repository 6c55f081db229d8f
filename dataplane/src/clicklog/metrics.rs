//! The click log's metrics, under `traffoflex_clicklog_`: records appended and fsyncs (their ratio is the
//! group-commit size), drops, records shipped, ship errors, bytes on disk, records pending and the capacity.
//! [`super::ClickLog::stats`] reads the same numbers.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use traffoflex_core::telemetry::Telemetry;

#[derive(Clone, Default)]
pub(super) struct ClickLogMetrics {
    pub appended: Counter,
    pub fsyncs: Counter,
    pub dropped: Counter,
    pub shipped: Counter,
    pub ship_errors: Counter,
    /// Bytes of every segment, counting a batch from the moment the writer takes it.
    pub disk_bytes: Gauge,
    /// Records on disk that the sink has not acknowledged yet.
    pub pending: Gauge,
    pub capacity_bytes: Gauge,
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
