//! The health-check loop every traffic process runs, and the health view the routing engine reads (see the
//! module docs of [`crate::health`] for how one process per slot is chosen).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use traffoflex_core::events::{Event, HealthEvent};
use traffoflex_core::store::{Collection, ConfigStore, Filter, Query, StoreError};
use traffoflex_crds::DestinationSpec;

use super::probe::{AddressPolicy, ProbeResult, probe};
use super::state::{HealthState, Thresholds};
use crate::clicklog::{ClickLog, Record};
use crate::routing::UnhealthySet;

/// How checks run.
#[derive(Debug, Clone, Copy)]
pub struct HealthSettings {
    /// How often the loop looks for destinations that are due.
    pub tick: Duration,
    pub thresholds: Thresholds,
    pub policy: AddressPolicy,
    /// Timeout of a check whose destination doesn't set one.
    pub default_timeout: Duration,
    /// Checks running at once.
    pub concurrency: usize,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(5),
            thresholds: Thresholds::default(),
            policy: AddressPolicy::default(),
            default_timeout: Duration::from_secs(5),
            concurrency: 16,
        }
    }
}

/// The URL a check requests: the health-check URL, else the destination URL with its macros left empty.
pub fn check_url(spec: &DestinationSpec) -> String {
    if let Some(url) = spec.health_check.as_ref().and_then(|h| h.url.as_deref()).filter(|u| !u.is_empty()) {
        return url.to_owned();
    }
    let mut out = String::with_capacity(spec.url.len());
    let mut in_macro = false;
    for c in spec.url.chars() {
        match c {
            '{' => in_macro = true,
            '}' if in_macro => in_macro = false,
            _ if !in_macro => out.push(c),
            _ => {}
        }
    }
    out
}

/// One traffic process's checker.
pub struct HealthChecker {
    store: Arc<dyn ConfigStore>,
    log: Arc<ClickLog>,
    settings: HealthSettings,
}

struct Due {
    id: String,
    team_id: String,
    url: String,
    timeout: Duration,
}

impl HealthChecker {
    pub fn new(store: Arc<dyn ConfigStore>, log: Arc<ClickLog>, settings: HealthSettings) -> Self {
        Self { store, log, settings }
    }

    /// Checks every destination due at `now` whose lease this process wins; returns how many it checked.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut due = Vec::new();
        for doc in self.store.find(Collection::Destinations, &Query::new()).await? {
            let id = doc.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
            let team_id = doc.get("teamId").and_then(Value::as_str).unwrap_or(traffoflex_crds::DEFAULT_TEAM).to_owned();
            let Ok(spec) = serde_json::from_value::<DestinationSpec>(doc) else { continue };
            let Some(hc) = spec.health_check.as_ref().filter(|h| h.enabled && spec.is_switched_on()) else { continue };
            let interval = hc.interval_seconds.max(1);
            let slot = now.timestamp().div_euclid(interval);
            if !self.win_lease(&id, slot).await? {
                continue;
            }
            let timeout = hc
                .timeout_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map_or(self.settings.default_timeout, Duration::from_secs);
            due.push(Due { url: check_url(&spec), id, team_id, timeout });
        }
        let checked = due.len();
        let policy = self.settings.policy;
        let results: Vec<(Due, ProbeResult)> = futures::stream::iter(due)
            .map(|d| async move {
                let r = probe(&d.url, d.timeout, policy).await;
                (d, r)
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        for (d, r) in results {
            self.record(&d, &r, now).await?;
        }
        Ok(checked)
    }

    /// Inserts this slot's lease; false when another process holds it.
    async fn win_lease(&self, destination_id: &str, slot: i64) -> Result<bool, StoreError> {
        let lease = json!({"id": format!("healthLease:{destination_id}:{slot}"), "kind": "healthLease"});
        match self.store.insert(Collection::Meta, lease).await {
            Ok(_) => {
                let previous = format!("healthLease:{destination_id}:{}", slot - 1);
                // Best effort: a lease left behind is harmless, just a stale document.
                let _ = self.store.delete(Collection::Meta, &previous, None).await;
                Ok(true)
            }
            Err(StoreError::Duplicate { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn record(&self, d: &Due, r: &ProbeResult, now: DateTime<Utc>) -> Result<(), StoreError> {
        let existing = self.store.get(Collection::DestinationHealth, &d.id).await?;
        let mut state: HealthState =
            existing.as_ref().and_then(|doc| serde_json::from_value(doc.clone()).ok()).unwrap_or_default();
        let changed = state.observe(r.ok, self.settings.thresholds);
        let doc = json!({
            "id": d.id, "destinationId": d.id,
            "healthy": state.healthy,
            "consecutiveFailures": state.consecutive_failures,
            "consecutiveSuccesses": state.consecutive_successes,
            "lastCheckedAt": now.to_rfc3339(), "lastStatus": r.http_status,
            "lastLatencyMillis": r.latency_millis, "lastError": r.error, "url": d.url,
        });
        match existing {
            Some(_) => self.store.replace(Collection::DestinationHealth, &d.id, None, doc).await?,
            None => match self.store.insert(Collection::DestinationHealth, doc.clone()).await {
                Err(StoreError::Duplicate { .. }) => {
                    self.store.replace(Collection::DestinationHealth, &d.id, None, doc).await?
                }
                other => other?,
            },
        };
        if changed {
            tracing::warn!(destination = %d.id, healthy = state.healthy, error = %r.error, "destination health changed");
        }
        let event = Event::DestinationHealth(HealthEvent {
            id: uuid::Uuid::now_v7().to_string(),
            ts: now.timestamp_millis(),
            destination_id: d.id.clone(),
            team_id: d.team_id.clone(),
            healthy: state.healthy,
            changed,
            http_status: r.http_status,
            latency_millis: r.latency_millis,
            url: d.url.clone(),
            error: r.error.clone(),
        });
        self.log.append(Record::from_event(&event)).await;
        Ok(())
    }

    /// Runs [`HealthChecker::tick`] every `settings.tick` until `shutdown`.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(self.settings.tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                if let Err(e) = self.tick(Utc::now()).await {
                    tracing::warn!(error = %e, "health checks skipped this round");
                }
            }
        })
    }
}

/// The destinations the store says are down.
pub async fn load_unhealthy(store: &dyn ConfigStore) -> Result<UnhealthySet, StoreError> {
    let docs = store.find(Collection::DestinationHealth, &Query::filtered(Filter::all().eq("healthy", false))).await?;
    Ok(UnhealthySet::of(docs.iter().filter_map(|d| d.get("destinationId").and_then(Value::as_str))))
}

/// The health view every click reads: swapped in whole every `every`, never locked.
pub type SharedHealth = Arc<ArcSwap<UnhealthySet>>;

/// Refreshes `shared` from the store every `every` until `shutdown`; on a store error the last view stays.
pub fn spawn_health_view(
    store: Arc<dyn ConfigStore>,
    shared: SharedHealth,
    every: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            match load_unhealthy(store.as_ref()).await {
                Ok(set) => shared.store(Arc::new(set)),
                Err(e) => tracing::debug!(error = %e, "health view not refreshed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_url_drops_macros_unless_one_is_given() {
        let mut spec: DestinationSpec =
            serde_json::from_value(json!({"name": "d", "url": "https://o.example/a?cid={clickId}&s={sub1}"})).unwrap();
        assert_eq!(check_url(&spec), "https://o.example/a?cid=&s=");
        spec = serde_json::from_value(json!({"name": "d", "url": "https://o.example/a", "healthCheck": {"enabled": true, "url": "https://o.example/health"}})).unwrap();
        assert_eq!(check_url(&spec), "https://o.example/health");
    }
}
