//! Login attempts per client address, in memory: a fixed window per address. (Per account, a lockout is kept
//! on the user document, so it holds across API processes; this limit is per process, so N API pods allow
//! N times the attempts per address — put a shared limit at the ingress for more.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `max` attempts per address per `window`.
#[derive(Debug)]
pub struct Limiter {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Addresses remembered at most; beyond it, expired windows are swept first, then everything.
const MAX_TRACKED: usize = 100_000;

impl Limiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max, window, seen: Mutex::new(HashMap::new()) }
    }

    /// Counts an attempt from `ip`; `Err(seconds to wait)` when over the limit.
    pub fn attempt(&self, ip: IpAddr) -> Result<(), u64> {
        self.attempt_at(ip, Instant::now())
    }

    fn attempt_at(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= MAX_TRACKED {
            seen.retain(|_, (start, _)| now.duration_since(*start) < self.window);
            if seen.len() >= MAX_TRACKED {
                seen.clear();
            }
        }
        let entry = seen.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.max {
            let wait = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(wait.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_per_window() {
        let l = Limiter::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.attempt_at(a, t0).is_ok());
        }
        assert_eq!(l.attempt_at(a, t0 + Duration::from_secs(20)), Err(40));
        assert!(l.attempt_at(b, t0).is_ok(), "another address has its own budget");
        assert!(l.attempt_at(a, t0 + Duration::from_secs(61)).is_ok(), "a new window");
    }
}
