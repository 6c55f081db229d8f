//! Whether a destination can take a click now, in PARITY's order: manual status (`enabled`,
//! `manualStatus`) -> health -> schedule -> caps. Anti-repeat, the last step, is per visitor and lives in
//! [`super::antirepeat`].
//!
//! Health and cap usage come from outside through two small traits, so this stays pure: the server keeps
//! health results and counters in memory (refreshed by its health checker and from analytics) and answers
//! from there, never from a database per click.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use traffoflex_crds::CapMetric;

use super::snapshot::DestinationEntry;

/// Destination health as the health checker last saw it.
pub trait HealthView {
    /// Whether the destination may take traffic. Destinations without health checks should answer `true`.
    fn is_healthy(&self, destination_id: &str) -> bool;
}

/// Every destination is healthy.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllHealthy;

impl HealthView for AllHealthy {
    fn is_healthy(&self, _destination_id: &str) -> bool {
        true
    }
}

/// The IDs of the destinations that are down; every other one is healthy.
#[derive(Clone, Debug, Default)]
pub struct UnhealthySet(pub HashSet<Box<str>>);

impl UnhealthySet {
    /// The set of these IDs.
    pub fn of<'i>(ids: impl IntoIterator<Item = &'i str>) -> Self {
        Self(ids.into_iter().map(Box::from).collect())
    }
}

impl HealthView for UnhealthySet {
    fn is_healthy(&self, destination_id: &str) -> bool {
        !self.0.contains(destination_id)
    }
}

/// How much of a capped metric a destination has used.
pub trait CapCounters {
    /// Usage of `metric` by the destination over the last `window_hours` hours (clicks and conversions as
    /// whole numbers, cost and revenue as money), or `None` when it can't be known right now — the cap then
    /// fails open (the destination stays available). Implementations log or count the unknowns.
    fn usage(&self, destination_id: &str, metric: CapMetric, window_hours: u32) -> Option<Decimal>;
}

/// Nothing is known: every cap fails open.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCounters;

impl CapCounters for NoCounters {
    fn usage(&self, _destination_id: &str, _metric: CapMetric, _window_hours: u32) -> Option<Decimal> {
        None
    }
}

/// One cap of a destination, compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct CapLimit {
    /// What is counted.
    pub metric: CapMetric,
    /// The destination is unavailable once usage reaches this.
    pub limit: Decimal,
    /// Over the last this many hours.
    pub window_hours: u32,
}

/// Why a destination can't take a click.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unavailable {
    /// `enabled: false` or a `manualStatus` other than `active`.
    SwitchedOff,
    /// The health checker says it is down.
    Unhealthy,
    /// Outside its schedule.
    Closed,
    /// A cap is reached.
    Capped,
}

/// Checks one destination at `now`, in PARITY's order; the first failing step is the reason.
pub fn check(
    dest: &DestinationEntry,
    now: DateTime<Utc>,
    health: &dyn HealthView,
    caps: &dyn CapCounters,
) -> Result<(), Unavailable> {
    if !dest.switched_on {
        return Err(Unavailable::SwitchedOff);
    }
    if !health.is_healthy(&dest.id) {
        return Err(Unavailable::Unhealthy);
    }
    if let Some(schedule) = &dest.schedule
        && !schedule.is_open_at(now)
    {
        return Err(Unavailable::Closed);
    }
    let reached = |cap: &CapLimit| caps.usage(&dest.id, cap.metric, cap.window_hours).is_some_and(|u| u >= cap.limit);
    if dest.caps.iter().any(reached) {
        return Err(Unavailable::Capped);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::snapshot::RoutingSnapshot;
    use chrono::TimeZone;
    use serde_json::json;
    use traffoflex_crds::DestinationSpec;

    fn dest(spec: serde_json::Value) -> RoutingSnapshot {
        let mut spec = spec;
        spec["name"] = json!("d");
        spec["url"] = json!("https://offer.example/");
        let spec: DestinationSpec = serde_json::from_value(spec).unwrap_or_else(|e| panic!("{e}"));
        RoutingSnapshot::build(vec![], vec![], vec![("d1".into(), spec)], vec![])
    }

    fn at(h: u32) -> DateTime<Utc> {
        // 2025-01-01 was a Wednesday.
        Utc.with_ymd_and_hms(2025, 1, 1, h, 0, 0).single().unwrap_or_else(|| panic!("date"))
    }

    /// Clicks over 24 h and revenue over 72 h.
    struct Usage(Option<Decimal>, Option<Decimal>);
    impl CapCounters for Usage {
        fn usage(&self, id: &str, metric: CapMetric, window: u32) -> Option<Decimal> {
            assert_eq!(id, "d1");
            match (metric, window) {
                (CapMetric::Clicks, 24) => self.0,
                (CapMetric::Revenue, 72) => self.1,
                _ => Some(Decimal::ZERO),
            }
        }
    }

    fn verdict(
        snap: &RoutingSnapshot,
        now: DateTime<Utc>,
        health: &dyn HealthView,
        caps: &dyn CapCounters,
    ) -> Result<(), Unavailable> {
        let d = snap.destination("d1").unwrap_or_else(|| panic!("no d1: {:?}", snap.warnings()));
        check(d, now, health, caps)
    }

    #[test]
    fn switched_off_comes_first() {
        let s = dest(json!({"enabled": false, "schedule": {"windows": []}}));
        assert_eq!(verdict(&s, at(12), &UnhealthySet::of(["d1"]), &NoCounters), Err(Unavailable::SwitchedOff));
        let s = dest(json!({"manualStatus": "paused"}));
        assert_eq!(verdict(&s, at(12), &AllHealthy, &NoCounters), Err(Unavailable::SwitchedOff));
        let s = dest(json!({"manualStatus": "archived"}));
        assert_eq!(verdict(&s, at(12), &AllHealthy, &NoCounters), Err(Unavailable::SwitchedOff));
        let s = dest(json!({"manualStatus": "active"}));
        assert_eq!(verdict(&s, at(12), &AllHealthy, &NoCounters), Ok(()));
    }

    #[test]
    fn health_then_schedule() {
        let s = dest(json!({"schedule": {"windows": [{"weekdays": ["wed"], "start": "09:00", "end": "17:00"}]}}));
        assert_eq!(verdict(&s, at(20), &UnhealthySet::of(["d1"]), &NoCounters), Err(Unavailable::Unhealthy));
        assert_eq!(verdict(&s, at(20), &UnhealthySet::of(["other"]), &NoCounters), Err(Unavailable::Closed));
        assert_eq!(verdict(&s, at(10), &AllHealthy, &NoCounters), Ok(()));
        // An overnight window runs into Thursday.
        let s = dest(json!({"schedule": {"windows": [{"weekdays": ["tue"], "start": "22:00", "end": "02:00"}]}}));
        assert_eq!(verdict(&s, at(1), &AllHealthy, &NoCounters), Ok(()));
        assert_eq!(verdict(&s, at(3), &AllHealthy, &NoCounters), Err(Unavailable::Closed));
        // A disabled schedule is always open.
        let s = dest(json!({"schedule": {"enabled": false, "windows": []}}));
        assert_eq!(verdict(&s, at(3), &AllHealthy, &NoCounters), Ok(()));
    }

    #[test]
    fn caps_are_reached_at_the_limit_and_fail_open() {
        let s = dest(
            json!({"caps": {"dailyClicks": 1000, "rules": [{"metric": "revenue", "limit": "50.5", "windowHours": 72}]}}),
        );
        let d = s.destination("d1").unwrap_or_else(|| panic!("no d1"));
        assert_eq!(d.caps.len(), 2);
        assert_eq!(verdict(&s, at(12), &AllHealthy, &Usage(Some(Decimal::from(999)), None)), Ok(()));
        assert_eq!(verdict(&s, at(12), &AllHealthy, &Usage(Some(Decimal::from(1000)), None)), Err(Unavailable::Capped));
        assert_eq!(verdict(&s, at(12), &AllHealthy, &Usage(None, None)), Ok(()), "unknown usage fails open");
        assert_eq!(verdict(&s, at(12), &AllHealthy, &NoCounters), Ok(()));
        let revenue = Usage(Some(Decimal::ZERO), Some(Decimal::new(505, 1)));
        assert_eq!(verdict(&s, at(12), &AllHealthy, &revenue), Err(Unavailable::Capped));
        // A schedule-closed destination reports Closed even when capped.
        let s = dest(
            json!({"caps": {"dailyClicks": 1}, "schedule": {"windows": [{"weekdays": ["mon"], "start": "00:00", "end": "24:00"}]}}),
        );
        assert_eq!(verdict(&s, at(12), &AllHealthy, &Usage(Some(Decimal::from(5)), None)), Err(Unavailable::Closed));
    }
}
