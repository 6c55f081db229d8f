//! Scaling a component on the request rate its pods report (pure).
//!
//! Every scale interval the operator reads each ready pod's request counter from its `/metrics`. A pod's
//! rate is the counter's increase since its previous reading over the time between them; the component's
//! rate is the sum over its pods (a pod seen for the first time, or whose counter went down because it
//! restarted, adds nothing this round). The recommendation is `ceil(rate / targetRequestsPerSecond)` within
//! `minReplicas..=maxReplicas`.
//!
//! Stabilisation, as Kubernetes' HorizontalPodAutoscaler does by default: scaling up follows the
//! recommendation at once; scaling down goes only as low as the highest recommendation of the last
//! stabilisation window (5 minutes by default), so a short lull doesn't shed pods that the next burst needs.
//! Without any reading yet, the replicas stay as they are (at least `minReplicas`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// One reading of a pod's request counter.
#[derive(Clone, Copy, Debug)]
struct Reading {
    total: f64,
    at: Instant,
}

/// What the scaler remembers of one component.
#[derive(Debug, Default)]
pub struct ComponentScaler {
    last: BTreeMap<String, Reading>,
    recommendations: VecDeque<(Instant, i32)>,
}

/// Bounds and target of a component.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    pub min: i32,
    pub max: i32,
    pub target_per_pod: f64,
}

impl ComponentScaler {
    /// Takes this round's counter totals (pod -> total) read at `at`; returns the component's rate, or `None`
    /// when no pod has two readings yet. Pods no longer listed are forgotten.
    pub fn observe(&mut self, totals: &BTreeMap<String, f64>, at: Instant) -> Option<f64> {
        let mut rate = None;
        for (pod, &total) in totals {
            if let Some(prev) = self.last.get(pod) {
                let secs = at.saturating_duration_since(prev.at).as_secs_f64();
                if secs > 0.0 && total >= prev.total {
                    *rate.get_or_insert(0.0) += (total - prev.total) / secs;
                } else if secs > 0.0 {
                    // The counter went back: the pod restarted. Counts from the next reading.
                    rate.get_or_insert(0.0);
                }
            }
        }
        self.last = totals.iter().map(|(pod, &total)| (pod.clone(), Reading { total, at })).collect();
        rate
    }

    /// The replicas to run: the recommendation for `rate` (none: keep `current`), stabilised over `window`.
    pub fn desired(&mut self, rate: Option<f64>, current: i32, bounds: Bounds, window: Duration, now: Instant) -> i32 {
        let floor = bounds.min.max(0);
        let ceiling = bounds.max.max(floor);
        let Some(rate) = rate else { return current.clamp(floor.max(1).min(ceiling), ceiling) };
        let recommended = recommend(rate, bounds.target_per_pod).clamp(floor, ceiling);
        self.recommendations.push_back((now, recommended));
        while self.recommendations.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > window) {
            self.recommendations.pop_front();
        }
        if recommended >= current {
            return recommended;
        }
        let highest = self.recommendations.iter().map(|(_, r)| *r).max().unwrap_or(recommended);
        highest.min(current).max(recommended)
    }
}

/// `ceil(rate / target)`, at least 1 when anything is flowing.
pub fn recommend(rate: f64, target_per_pod: f64) -> i32 {
    if !rate.is_finite() || rate <= 0.0 {
        return 0;
    }
    let target = if target_per_pod.is_finite() && target_per_pod > 0.0 { target_per_pod } else { 1.0 };
    let pods = (rate / target).ceil();
    if pods >= f64::from(i32::MAX) { i32::MAX } else { pods as i32 }
}

/// Sums the samples of the counter `name` (every label set) in a Prometheus text exposition.
pub fn counter_total(metrics: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let value = if let Some(labels) = rest.strip_prefix('{') {
            labels.split_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            // Another metric whose name starts with this one.
            None
        };
        let Some(value) = value.and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        *total.get_or_insert(0.0) += value;
    }
    total
}

/// The `revision` label of the gauge `name` whose value is 1, if the exposition has one.
pub fn label_of(metrics: &str, name: &str, label: &str) -> Option<String> {
    metrics.lines().find_map(|line| {
        let labels = line.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = labels.split_once('}')?;
        if value.trim() != "1" {
            return None;
        }
        let start = labels.find(&format!("{label}=\""))? + label.len() + 2;
        let end = labels[start..].find('"')? + start;
        Some(labels[start..end].to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(p, t)| ((*p).to_owned(), *t)).collect()
    }

    const B: Bounds = Bounds { min: 2, max: 10, target_per_pod: 100.0 };
    const W: Duration = Duration::from_secs(300);

    #[test]
    fn the_rate_is_the_sum_of_each_pods_increase() {
        let mut s = ComponentScaler::default();
        let t0 = Instant::now();
        assert_eq!(s.observe(&totals(&[("a", 100.0), ("b", 50.0)]), t0), None, "one reading is no rate");
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(s.observe(&totals(&[("a", 1100.0), ("b", 2050.0), ("c", 7.0)]), t1), Some(300.0));
        let t2 = t1 + Duration::from_secs(10);
        // `b` restarted (its counter went back): it adds nothing this round; `c` adds its increase.
        assert_eq!(s.observe(&totals(&[("a", 1100.0), ("b", 3.0), ("c", 107.0)]), t2), Some(10.0));
    }

    #[test]
    fn up_at_once_down_only_after_the_window() {
        let mut s = ComponentScaler::default();
        let t = Instant::now();
        assert_eq!(s.desired(None, 0, B, W, t), 2, "no readings: at least the minimum");
        assert_eq!(s.desired(None, 4, B, W, t), 4, "no readings: as it is");
        assert_eq!(s.desired(Some(750.0), 2, B, W, t), 8, "750/s at 100 per pod, up at once");
        assert_eq!(s.desired(Some(5000.0), 8, B, W, t), 10, "capped at the maximum");
        let later = t + Duration::from_secs(60);
        assert_eq!(s.desired(Some(150.0), 10, B, W, later), 10, "a lull inside the window keeps the pods");
        let after = t + Duration::from_secs(400);
        assert_eq!(s.desired(Some(150.0), 10, B, W, after), 2, "down once the window passed: max(2, ceil 1.5)");
        assert_eq!(s.desired(Some(0.0), 2, B, W, after), 2, "never below the minimum");
    }

    #[test]
    fn counters_are_read_from_the_text_format() {
        let text = "# HELP traffoflex_traffic_requests Click requests by outcome\n\
                    # TYPE traffoflex_traffic_requests counter\n\
                    traffoflex_traffic_requests_total{outcome=\"redirect\"} 120\n\
                    traffoflex_traffic_requests_total{outcome=\"notFound\"} 3\n\
                    traffoflex_traffic_requests_total_other 9\n\
                    traffoflex_config_loaded_revision{revision=\"abc:7\"} 1\n";
        assert_eq!(counter_total(text, "traffoflex_traffic_requests_total"), Some(123.0));
        assert_eq!(counter_total(text, "traffoflex_postback_requests_total"), None);
        assert_eq!(label_of(text, "traffoflex_config_loaded_revision", "revision").as_deref(), Some("abc:7"));
        assert_eq!(recommend(1.0, 100.0), 1);
        assert_eq!(recommend(0.0, 100.0), 0);
    }
}
