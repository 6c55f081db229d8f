//! Choosing one of a stream's available destinations: waterfall, round robin, weighted, best ROI.
//!
//! Each function takes the candidates (available destinations, in the stream's list order) and returns the
//! position of the chosen one. Randomness comes in as an `Rng` so tests are deterministic; the round-robin
//! counter lives in the snapshot's stream; ROI figures come in through [`RoiStats`].
//!
//! **bestRoi** ranks the destinations that have at least `minClicks` clicks in the window by ROI
//! (`(revenue − cost) / cost`; with no cost, a destination that earned anything ranks above every finite
//! ROI, by revenue per click; ties go to list order). To keep learning about the others, an
//! *exploration share* of clicks (default [`DEFAULT_EXPLORE_SHARE`], i.e. epsilon-greedy) goes to the
//! destinations still under `minClicks`, chosen among them by the fallback strategy. While no destination
//! has enough data — or ROI figures can't be read — every click uses the fallback strategy
//! (default `roundRobin`).

use std::cmp::Ordering;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use rand::Rng;
use rust_decimal::Decimal;
use smallvec::SmallVec;
use traffoflex_crds::Selection;

/// The share of bestRoi clicks sent to destinations still under `minClicks` while others are ranked.
pub const DEFAULT_EXPLORE_SHARE: f64 = 0.1;

/// One available destination of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'s> {
    /// The destination's ID.
    pub id: &'s str,
    /// Its weight in the stream.
    pub weight: u64,
}

/// A destination's recent figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoiSample {
    /// Clicks sent to it.
    pub clicks: u64,
    /// What those clicks cost.
    pub cost: Decimal,
    /// Revenue of their conversions.
    pub revenue: Decimal,
}

/// ROI figures per destination, kept in memory by the server.
pub trait RoiStats {
    /// The destination's figures over the last `window_hours`, or `None` when unknown (treated as no data).
    fn roi_stats(&self, destination_id: &str, window_hours: u32) -> Option<RoiSample>;
}

/// No figures at all: bestRoi always uses its fallback.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRoiStats;

impl RoiStats for NoRoiStats {
    fn roi_stats(&self, _destination_id: &str, _window_hours: u32) -> Option<RoiSample> {
        None
    }
}

/// A stream's bestRoi settings, compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BestRoiPolicy {
    /// ROI window in hours.
    pub window_hours: u32,
    /// Clicks a destination needs before it is ranked.
    pub min_clicks: u64,
    /// How to pick while data is thin; never `BestRoi`.
    pub fallback: Selection,
}

impl Default for BestRoiPolicy {
    fn default() -> Self {
        Self { window_hours: 24, min_clicks: 100, fallback: Selection::RoundRobin }
    }
}

/// The first candidate.
pub fn waterfall(candidates: &[Candidate<'_>]) -> Option<usize> {
    (!candidates.is_empty()).then_some(0)
}

/// Each candidate in turn, by the stream's shared counter.
pub fn round_robin(candidates: &[Candidate<'_>], counter: &AtomicUsize) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    Some(counter.fetch_add(1, AtomicOrdering::Relaxed) % candidates.len())
}

/// At random in proportion to weight; weight 0 is never chosen, so all-zero gives `None`.
pub fn weighted<R: Rng + ?Sized>(candidates: &[Candidate<'_>], rng: &mut R) -> Option<usize> {
    let total: u64 = candidates.iter().map(|c| c.weight).fold(0, u64::saturating_add);
    if total == 0 {
        return None;
    }
    let mut ticket = rng.random_range(0..total);
    for (i, c) in candidates.iter().enumerate() {
        if ticket < c.weight {
            return Some(i);
        }
        ticket -= c.weight;
    }
    None
}

/// The simple strategies by name; `BestRoi` (never a fallback) reads as `RoundRobin`.
pub fn simple<R: Rng + ?Sized>(
    strategy: Selection,
    candidates: &[Candidate<'_>],
    counter: &AtomicUsize,
    rng: &mut R,
) -> Option<usize> {
    match strategy {
        Selection::Waterfall => waterfall(candidates),
        Selection::Weighted => weighted(candidates, rng),
        Selection::RoundRobin | Selection::BestRoi => round_robin(candidates, counter),
    }
}

/// How good a ranked destination is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Score {
    /// `(revenue − cost) / cost`.
    Roi(Decimal),
    /// No cost but revenue: revenue per click.
    Free(Decimal),
}

impl Score {
    fn of(s: &RoiSample) -> Self {
        if s.cost.is_zero() {
            if s.revenue > Decimal::ZERO {
                return Self::Free(s.revenue.checked_div(Decimal::from(s.clicks.max(1))).unwrap_or(Decimal::MAX));
            }
            return Self::Roi(Decimal::ZERO);
        }
        let profit = s.revenue.checked_sub(s.cost).unwrap_or(Decimal::MIN);
        Self::Roi(profit.checked_div(s.cost).unwrap_or(Decimal::ZERO))
    }

    fn cmp(self, other: Self) -> Ordering {
        match (self, other) {
            (Self::Free(a), Self::Free(b)) | (Self::Roi(a), Self::Roi(b)) => a.cmp(&b),
            (Self::Free(_), Self::Roi(_)) => Ordering::Greater,
            (Self::Roi(_), Self::Free(_)) => Ordering::Less,
        }
    }
}

/// Best ROI with exploration (see the module docs). `explore_share` is clamped to 0–1.
pub fn best_roi<R: Rng + ?Sized>(
    candidates: &[Candidate<'_>],
    policy: &BestRoiPolicy,
    stats: &dyn RoiStats,
    explore_share: f64,
    counter: &AtomicUsize,
    rng: &mut R,
) -> Option<usize> {
    let mut best: Option<(usize, Score)> = None;
    let mut thin: SmallVec<[usize; 8]> = SmallVec::new();
    for (i, c) in candidates.iter().enumerate() {
        match stats.roi_stats(c.id, policy.window_hours) {
            Some(sample) if sample.clicks >= policy.min_clicks => {
                let score = Score::of(&sample);
                if best.is_none_or(|(_, b)| score.cmp(b) == Ordering::Greater) {
                    best = Some((i, score));
                }
            }
            _ => thin.push(i),
        }
    }
    let Some((best, _)) = best else { return simple(policy.fallback, candidates, counter, rng) };
    let share = if explore_share.is_finite() { explore_share.clamp(0.0, 1.0) } else { 0.0 };
    if !thin.is_empty() && rng.random::<f64>() < share {
        let pool: SmallVec<[Candidate<'_>; 8]> = thin.iter().filter_map(|&i| candidates.get(i).copied()).collect();
        if let Some(pick) = simple(policy.fallback, &pool, counter, rng) {
            return thin.get(pick).copied();
        }
    }
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::HashMap;

    fn cands(weights: &[u64]) -> Vec<Candidate<'static>> {
        const IDS: [&str; 5] = ["a", "b", "c", "d", "e"];
        weights.iter().zip(IDS).map(|(&weight, id)| Candidate { id, weight }).collect()
    }

    struct Stats(HashMap<&'static str, RoiSample>);
    impl RoiStats for Stats {
        fn roi_stats(&self, id: &str, window: u32) -> Option<RoiSample> {
            assert_eq!(window, 48);
            self.0.get(id).copied()
        }
    }

    fn sample(clicks: u64, cost: i64, revenue: i64) -> RoiSample {
        RoiSample { clicks, cost: Decimal::from(cost), revenue: Decimal::from(revenue) }
    }

    fn policy(min_clicks: u64, fallback: Selection) -> BestRoiPolicy {
        BestRoiPolicy { window_hours: 48, min_clicks, fallback }
    }

    #[test]
    fn waterfall_takes_the_first() {
        assert_eq!(waterfall(&cands(&[0, 5])), Some(0));
        assert_eq!(waterfall(&[]), None);
    }

    #[test]
    fn round_robin_cycles() {
        let counter = AtomicUsize::new(0);
        let picks: Vec<_> = (0..7).filter_map(|_| round_robin(&cands(&[1, 1, 1]), &counter)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(round_robin(&[], &counter), None);
    }

    #[test]
    fn weighted_follows_weights_and_skips_zero() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            if let Some(i) = weighted(&cands(&[3, 0, 1]), &mut rng) {
                counts[i] += 1;
            }
        }
        assert_eq!(counts[1], 0);
        assert!((7_000..8_000).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 10_000);
        assert_eq!(weighted(&cands(&[0, 0]), &mut rng), None);
        assert_eq!(weighted(&[], &mut rng), None);
    }

    #[test]
    fn best_roi_picks_the_best_ranked() {
        let stats = Stats(HashMap::from([
            ("a", sample(200, 100, 150)), // 0.5
            ("b", sample(200, 100, 300)), // 2.0
            ("c", sample(200, 100, 90)),  // -0.1
        ]));
        let mut rng = StdRng::seed_from_u64(1);
        let counter = AtomicUsize::new(0);
        let p = policy(100, Selection::Waterfall);
        for _ in 0..50 {
            assert_eq!(best_roi(&cands(&[1, 1, 1]), &p, &stats, 0.1, &counter, &mut rng), Some(1));
        }
    }

    #[test]
    fn free_traffic_that_earns_ranks_first_and_ties_go_to_list_order() {
        let stats =
            Stats(HashMap::from([("a", sample(200, 100, 1000)), ("b", sample(200, 0, 5)), ("c", sample(200, 0, 0))]));
        let mut rng = StdRng::seed_from_u64(1);
        let counter = AtomicUsize::new(0);
        assert_eq!(
            best_roi(&cands(&[1, 1, 1]), &policy(1, Selection::Waterfall), &stats, 0.0, &counter, &mut rng),
            Some(1)
        );
        let tie = Stats(HashMap::from([("a", sample(200, 100, 200)), ("b", sample(300, 50, 100))]));
        assert_eq!(best_roi(&cands(&[1, 1]), &policy(1, Selection::Waterfall), &tie, 0.0, &counter, &mut rng), Some(0));
    }

    #[test]
    fn thin_data_uses_the_fallback() {
        let stats = Stats(HashMap::from([("a", sample(99, 10, 100)), ("b", sample(5, 1, 0))]));
        let mut rng = StdRng::seed_from_u64(3);
        let counter = AtomicUsize::new(0);
        let rr = policy(100, Selection::RoundRobin);
        let picks: Vec<_> =
            (0..4).filter_map(|_| best_roi(&cands(&[1, 1, 1]), &rr, &stats, 0.1, &counter, &mut rng)).collect();
        assert_eq!(picks, [0, 1, 2, 0]);
        let wf = policy(100, Selection::Waterfall);
        assert_eq!(best_roi(&cands(&[1, 1]), &wf, &NoRoiStats, 0.1, &counter, &mut rng), Some(0));
        let w = policy(100, Selection::Weighted);
        assert_eq!(best_roi(&cands(&[0, 4]), &w, &NoRoiStats, 0.1, &counter, &mut rng), Some(1));
        assert_eq!(best_roi(&[], &w, &NoRoiStats, 0.1, &counter, &mut rng), None);
    }

    #[test]
    fn a_share_of_clicks_explores_destinations_under_min_clicks() {
        let stats = Stats(HashMap::from([("a", sample(500, 100, 300)), ("b", sample(10, 1, 0))]));
        let mut rng = StdRng::seed_from_u64(11);
        let counter = AtomicUsize::new(0);
        let p = policy(100, Selection::RoundRobin);
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            if let Some(i) = best_roi(&cands(&[1, 1, 1]), &p, &stats, 0.2, &counter, &mut rng) {
                counts[i] += 1;
            }
        }
        // 80 % exploit "a"; 20 % explore "b" and "c" (no figures) in turn.
        assert!((7_700..8_300).contains(&counts[0]), "{counts:?}");
        assert!((850..1_150).contains(&counts[1]) && (850..1_150).contains(&counts[2]), "{counts:?}");
        let mut none = [0usize; 3];
        for _ in 0..1_000 {
            if let Some(i) = best_roi(&cands(&[1, 1, 1]), &p, &stats, 0.0, &counter, &mut rng) {
                none[i] += 1;
            }
        }
        assert_eq!(none, [1_000, 0, 0], "no exploration at share 0");
    }
}
