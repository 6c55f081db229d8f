//! The operator's Prometheus metrics (served on `/metrics` with every role's).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use traffoflex_core::telemetry::Telemetry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Counters of one operator process, under the `traffoflex_operator` prefix.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Reconciliations by kind and outcome (the condition reason).
    pub reconciliations: Family<OutcomeLabels, Counter>,
    /// Reconciliations that failed on the Kubernetes API and are retried.
    pub errors: Family<KindLabel, Counter>,
    /// Writes (inserts, replaces, deletes) to the configuration store, by kind.
    pub store_writes: Family<KindLabel, Counter>,
    /// 1 while this process holds the leader lease and runs the controllers.
    pub leader: Gauge,
    /// Replica changes made through the scale subresource, by component.
    pub scalings: Family<KindLabel, Counter>,
    /// Reload signals sent to data-plane pods, by result (`ok`, `error`).
    pub reload_pushes: Family<KindLabel, Counter>,
}

impl Metrics {
    pub fn new(telemetry: &Telemetry) -> Self {
        let m = Self::default();
        telemetry.register("traffoflex_operator", |r| {
            r.register("reconciliations", "Reconciliations by kind and outcome", m.reconciliations.clone());
            r.register("errors", "Reconciliations that failed on the Kubernetes API, by kind", m.errors.clone());
            r.register("store_writes", "Writes to the configuration store, by kind", m.store_writes.clone());
            r.register("leader", "1 while this process is the leader and runs the controllers", m.leader.clone());
            r.register("scalings", "Replica changes of data-plane Deployments, by component", m.scalings.clone());
            r.register("reload_pushes", "Reload signals sent to data-plane pods, by result", m.reload_pushes.clone());
        });
        m
    }
}
