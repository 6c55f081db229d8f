//! The health state machine of one destination.

use serde::{Deserialize, Serialize};

/// Thresholds of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Failures in a row that make a healthy destination unhealthy.
    pub unhealthy_after: u32,
    /// Successes in a row that make an unhealthy destination healthy again.
    pub healthy_after: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { unhealthy_after: 3, healthy_after: 2 }
    }
}

/// What the store keeps per destination (besides the last check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthState {
    pub healthy: bool,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
}

impl Default for HealthState {
    /// A destination is healthy until checks say otherwise.
    fn default() -> Self {
        Self { healthy: true, consecutive_failures: 0, consecutive_successes: 0 }
    }
}

impl HealthState {
    /// Takes one check's outcome; true when it changed `healthy`.
    pub fn observe(&mut self, ok: bool, t: Thresholds) -> bool {
        let before = self.healthy;
        if ok {
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
            if !self.healthy && self.consecutive_successes >= t.healthy_after.max(1) {
                self.healthy = true;
            }
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_successes = 0;
            if self.healthy && self.consecutive_failures >= t.unhealthy_after.max(1) {
                self.healthy = false;
            }
        }
        before != self.healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flapping_needs_runs_of_the_same_outcome() {
        let t = Thresholds { unhealthy_after: 3, healthy_after: 2 };
        let mut s = HealthState::default();
        let seq = [false, false, true, false, false, false, true, false, true, true];
        let changes: Vec<bool> = seq.iter().map(|&ok| s.observe(ok, t)).collect();
        // Two failures then a success: still healthy. Three failures in a row: down. Successes must be two in
        // a row to come back.
        assert_eq!(changes, [false, false, false, false, false, true, false, false, false, true]);
        assert!(s.healthy);
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let t = Thresholds { unhealthy_after: 0, healthy_after: 0 };
        let mut s = HealthState::default();
        assert!(s.observe(false, t));
        assert!(s.observe(true, t));
    }
}
