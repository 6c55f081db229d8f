//! Per-destination figures for caps and bestRoi: recent sums read from analytics in the background, plus the
//! clicks this process routed itself, answered from memory on the click path.
//!
//! **How usage is counted.** Every `interval` the refresher asks analytics for clicks, cost, approved
//! conversions and revenue per destination over each window the configuration uses (every cap's
//! `windowHours`, every bestRoi stream's window), and swaps the answer in. Analytics lags behind the clicks
//! (the click log, the bus, the ingester), so the process also counts the clicks it routes to capped
//! destinations itself:
//! - `pending`: clicks since the last refresh began, added on top of the analytics figure, so the process
//!   never waits a whole refresh to see its own clicks;
//! - hourly buckets of its own clicks over the last [`LOCAL_HOURS`] hours.
//!
//! The usage of clicks and cost is `max(own clicks in the window, analytics + pending)`. With one traffic
//! process that is exact: its own buckets hold every click it routed, whatever analytics has ingested yet.
//! With several pods each adds the others' clicks once analytics has them, so a cap shared by N pods can
//! overshoot by about what the other N-1 pods route within one refresh interval plus the ingest lag (a
//! second or two at defaults); conversions and revenue come from analytics alone (the postback service
//! records them).
//!
//! **When analytics can't be read** (never answered, or last answered more than [`STALE_AFTER`] ago) the
//! figures count as unknown: conversion and revenue caps fail open, click and cost caps fall back to the
//! process's own clicks, bestRoi uses its fallback. Failures are logged once per outage and counted in
//! `traffoflex_traffic_stats_refreshes{outcome="error"}`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;
use traffoflex_core::analytics::{AggregateQuery, Analytics, AnalyticsError, GroupBy, from_micros, to_micros};
use traffoflex_core::telemetry::Telemetry;
use traffoflex_crds::CapMetric;

use crate::routing::{CapCounters, DestinationEntry, RoiSample, RoiStats, RoutingSnapshot};

/// How many hours of its own clicks a process keeps per capped destination (longer windows rely on analytics).
pub const LOCAL_HOURS: u32 = 7 * 24;

/// Figures older than this count as unknown.
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// The default refresh interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Sums of one destination over one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowTotals {
    pub clicks: u64,
    pub cost_micros: i64,
    pub conversions: u64,
    pub revenue_micros: i64,
}

/// One answer from analytics: window hours -> destination ID -> sums.
#[derive(Debug, Default)]
struct Figures {
    windows: HashMap<u32, HashMap<Box<str>, WindowTotals>>,
    read: Option<Instant>,
}

/// Clicks (and their cost in millionths).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sum {
    clicks: u64,
    cost_micros: i64,
}

impl Sum {
    fn add(&mut self, other: Sum) {
        self.clicks += other.clicks;
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
    }
}

/// This process's own clicks to one destination.
#[derive(Debug, Default)]
struct Own {
    /// `(hour since the epoch, sum)`, oldest first.
    hours: VecDeque<(u32, Sum)>,
    /// Since the refresh in flight began.
    pending: Sum,
    /// Between the start of the last installed refresh and the one in flight (merged back if that one fails).
    inflight: Sum,
}

impl Own {
    fn record(&mut self, hour: u32, sum: Sum) {
        match self.hours.back_mut() {
            Some((h, s)) if *h == hour => s.add(sum),
            _ => self.hours.push_back((hour, sum)),
        }
        while self.hours.front().is_some_and(|(h, _)| h + LOCAL_HOURS <= hour) {
            self.hours.pop_front();
        }
        self.pending.add(sum);
    }

    /// Own clicks in the last `window_hours` hours up to `hour` (whole hours).
    fn within(&self, hour: u32, window_hours: u32) -> Sum {
        let mut total = Sum::default();
        for (h, s) in self.hours.iter().rev() {
            if h + window_hours <= hour {
                break;
            }
            total.add(*s);
        }
        total
    }

    /// Clicks analytics can't have seen when the installed figures were read.
    fn unseen(&self) -> Sum {
        let mut s = self.pending;
        s.add(self.inflight);
        s
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Default)]
struct StatsMetrics {
    refreshes: Family<OutcomeLabel, Counter>,
    age: Gauge,
}

/// Destination figures for [`CapCounters`] and [`RoiStats`] (see the module docs).
pub struct DestinationStats {
    figures: ArcSwap<Figures>,
    own: Mutex<HashMap<Box<str>, Own>>,
    metrics: StatsMetrics,
    failing: std::sync::atomic::AtomicBool,
}

impl Default for DestinationStats {
    fn default() -> Self {
        Self::new()
    }
}

impl DestinationStats {
    /// No figures yet: analytics unknown, own clicks counted from now.
    pub fn new() -> Self {
        Self {
            figures: ArcSwap::from_pointee(Figures::default()),
            own: Mutex::new(HashMap::new()),
            metrics: StatsMetrics::default(),
            failing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Registers `traffoflex_traffic_stats_*`.
    pub fn register(self, telemetry: &Telemetry) -> Self {
        telemetry.register("traffoflex_traffic_stats", |r| {
            r.register(
                "refreshes",
                "Reads of destination figures from analytics, by outcome",
                self.metrics.refreshes.clone(),
            );
            r.register(
                "age_seconds",
                "Seconds since destination figures were last read from analytics",
                self.metrics.age.clone(),
            );
        });
        self
    }

    /// Counts a click this process routed to `dest` (only destinations with a click or cost cap are kept).
    pub fn record(&self, dest: &DestinationEntry, now: DateTime<Utc>, cost: Decimal) {
        if !dest.caps().iter().any(|c| matches!(c.metric, CapMetric::Clicks | CapMetric::Cost)) {
            return;
        }
        let sum = Sum { clicks: 1, cost_micros: to_micros(cost) };
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        match own.get_mut(dest.id()) {
            Some(o) => o.record(hour_of(now), sum),
            None => own.entry(dest.id().into()).or_default().record(hour_of(now), sum),
        }
    }

    fn fresh(&self) -> Option<Arc<Figures>> {
        let f = self.figures.load_full();
        f.read.filter(|at| at.elapsed() < STALE_AFTER).map(|_| f)
    }

    /// Reads the figures for every window `snapshot` uses and installs them. Own clicks routed from the
    /// moment the read begins are kept apart, so none is counted twice or missed.
    pub async fn refresh(&self, analytics: &dyn Analytics, snapshot: &RoutingSnapshot) -> Result<(), AnalyticsError> {
        let started = Instant::now();
        self.each_own(|o| {
            let p = std::mem::take(&mut o.pending);
            o.inflight.add(p);
        });
        // `inflight` now holds every click since the installed figures began; this read covers them.
        let windows = stat_windows(snapshot);
        let read = read_figures(analytics, &windows, Utc::now()).await;
        let outcome = match read {
            Ok(windows) => {
                self.figures.store(Arc::new(Figures { windows, read: Some(started) }));
                self.each_own(|o| o.inflight = Sum::default());
                if self.failing.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    tracing::info!("destination figures read from analytics again; caps and bestRoi use them");
                }
                Ok(())
            }
            Err(e) => {
                if !self.failing.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(error = %e, "can't read destination figures from analytics; caps on conversions and revenue fail open, click and cost caps count this process's clicks only");
                }
                Err(e)
            }
        };
        let label = if outcome.is_ok() { "ok" } else { "error" };
        self.metrics.refreshes.get_or_create(&OutcomeLabel { outcome: label }).inc();
        let age = self.figures.load().read.map_or(-1, |at| i64::try_from(at.elapsed().as_secs()).unwrap_or(i64::MAX));
        self.metrics.age.set(age);
        outcome
    }

    fn each_own(&self, f: impl Fn(&mut Own)) {
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        own.values_mut().for_each(f);
    }

    /// Refreshes every `interval` with the snapshot `current` gives, until `shutdown`.
    pub fn spawn_refresher<F>(
        self: &Arc<Self>,
        analytics: Arc<dyn Analytics>,
        current: F,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> Arc<crate::traffic::config::Loaded> + Send + Sync + 'static,
    {
        let stats = Arc::clone(self);
        crate::live::spawn_every(interval, shutdown, move || {
            let (stats, analytics, loaded) = (Arc::clone(&stats), Arc::clone(&analytics), current());
            async move {
                // Failures are logged and counted by `refresh`.
                let _ = stats.refresh(analytics.as_ref(), &loaded.snapshot).await;
            }
        })
    }

    fn own_usage(&self, destination_id: &str, window_hours: u32) -> Option<(Sum, Sum)> {
        let own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        let o = own.get(destination_id)?;
        Some((o.within(hour_of(Utc::now()), window_hours), o.unseen()))
    }
}

fn hour_of(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp().max(0) / 3600).unwrap_or(u32::MAX)
}

/// The windows (in hours) the snapshot's caps and bestRoi streams read.
pub fn stat_windows(snapshot: &RoutingSnapshot) -> BTreeSet<u32> {
    let caps = snapshot.destinations.iter().flat_map(|d| d.caps().iter().map(|c| c.window_hours));
    let roi = snapshot
        .campaigns()
        .iter()
        .flat_map(|c| c.streams().iter())
        .filter(|s| s.selection() == traffoflex_crds::Selection::BestRoi)
        .map(|s| s.best_roi.window_hours);
    caps.chain(roi).filter(|&h| h > 0).collect()
}

async fn read_figures(
    analytics: &dyn Analytics,
    windows: &BTreeSet<u32>,
    now: DateTime<Utc>,
) -> Result<HashMap<u32, HashMap<Box<str>, WindowTotals>>, AnalyticsError> {
    let end = u32::try_from(now.timestamp() + 1).unwrap_or(u32::MAX);
    let mut out = HashMap::with_capacity(windows.len());
    for &hours in windows {
        let q = AggregateQuery {
            start: end.saturating_sub(hours.saturating_mul(3600)),
            end,
            campaign_id: None,
            team_id: None,
            by: Some(GroupBy::Destination),
            bucket_secs: None,
            trafficback_only: false,
        };
        let mut per: HashMap<Box<str>, WindowTotals> = HashMap::new();
        for c in analytics.click_aggregates(&q).await? {
            let t = per.entry(c.key.into()).or_default();
            t.clicks += c.clicks;
            t.cost_micros = t.cost_micros.saturating_add(c.cost_micros);
        }
        for c in analytics.conversion_aggregates(&q).await? {
            let t = per.entry(c.key.into()).or_default();
            t.conversions += c.approved;
            t.revenue_micros = t.revenue_micros.saturating_add(c.revenue_micros);
        }
        per.remove("");
        out.insert(hours, per);
    }
    Ok(out)
}

impl CapCounters for DestinationStats {
    fn usage(&self, destination_id: &str, metric: CapMetric, window_hours: u32) -> Option<Decimal> {
        let figures = self.fresh();
        let read = figures
            .as_ref()
            .map(|f| f.windows.get(&window_hours).and_then(|w| w.get(destination_id)).copied().unwrap_or_default());
        match metric {
            CapMetric::Conversions => read.map(|t| Decimal::from(t.conversions)),
            CapMetric::Revenue => read.map(|t| from_micros(t.revenue_micros)),
            CapMetric::Clicks | CapMetric::Cost => {
                let (within, unseen) = self.own_usage(destination_id, window_hours).unwrap_or_default();
                let shared = read.map(|t| Sum { clicks: t.clicks, cost_micros: t.cost_micros }).map(|mut s| {
                    s.add(unseen);
                    s
                });
                let best = match shared {
                    Some(s) => {
                        Sum { clicks: s.clicks.max(within.clicks), cost_micros: s.cost_micros.max(within.cost_micros) }
                    }
                    None => within,
                };
                Some(match metric {
                    CapMetric::Clicks => Decimal::from(best.clicks),
                    _ => from_micros(best.cost_micros),
                })
            }
        }
    }
}

impl RoiStats for DestinationStats {
    fn roi_stats(&self, destination_id: &str, window_hours: u32) -> Option<RoiSample> {
        let figures = self.fresh()?;
        let t = figures.windows.get(&window_hours)?.get(destination_id).copied().unwrap_or_default();
        Some(RoiSample { clicks: t.clicks, cost: from_micros(t.cost_micros), revenue: from_micros(t.revenue_micros) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_clicks_slide_out_of_their_window_by_the_hour() {
        let mut o = Own::default();
        let one = Sum { clicks: 1, cost_micros: 50_000 };
        o.record(100, one);
        o.record(100, one);
        o.record(110, one);
        assert_eq!(o.within(110, 24).clicks, 3);
        assert_eq!(o.within(110, 10).clicks, 1, "hour 100 is 10 hours before 110: outside a 10-hour window");
        assert_eq!(o.within(110, 11).cost_micros, 150_000);
        o.record(100 + LOCAL_HOURS, one);
        assert_eq!(o.hours.len(), 2, "hour 100 is dropped once it is LOCAL_HOURS old");
        assert_eq!(o.unseen().clicks, 4);
    }
}
