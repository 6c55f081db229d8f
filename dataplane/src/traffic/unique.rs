//! First-click detection: whether a visitor (IP + user agent) clicked the campaign before within a window.
//!
//! Sharded maps from a 64-bit visitor hash to the time of its last click, each shard bounded: when a shard is
//! full, expired entries go first, then the whole shard (the cost is a few clicks counted unique twice, never
//! unbounded memory). One short lock per click on one of 64 shards; nothing is held across I/O.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;

const SHARDS: usize = 64;

/// Remembers who clicked what, for `isUnique` and the unique-clicks metric.
pub struct UniqueVisitors {
    shards: Vec<Mutex<HashMap<u64, i64>>>,
    per_shard: usize,
    window_ms: i64,
    hasher: std::collections::hash_map::RandomState,
}

impl UniqueVisitors {
    /// Remembers up to `capacity` visitors for `window_ms` each.
    pub fn new(capacity: usize, window_ms: i64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (capacity / SHARDS).max(1),
            window_ms,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// True when this visitor has not clicked `campaign_id` within the window; records the click either way.
    pub fn first_click(&self, campaign_id: &str, ip: Option<IpAddr>, user_agent: &str, now_ms: i64) -> bool {
        let mut h = self.hasher.build_hasher();
        campaign_id.hash(&mut h);
        ip.hash(&mut h);
        user_agent.hash(&mut h);
        let key = h.finish();
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let unique = map.get(&key).is_none_or(|&last| now_ms - last >= self.window_ms);
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            let window = self.window_ms;
            map.retain(|_, &mut last| now_ms - last < window);
            if map.len() >= self.per_shard {
                map.clear();
            }
        }
        map.insert(key, now_ms);
        unique
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visitor_is_unique_once_per_window_and_campaign() {
        let u = UniqueVisitors::new(1000, 1000);
        let ip = Some("198.51.100.1".parse().unwrap());
        assert!(u.first_click("c1", ip, "ua", 0));
        assert!(!u.first_click("c1", ip, "ua", 500));
        assert!(u.first_click("c2", ip, "ua", 500), "another campaign");
        assert!(u.first_click("c1", ip, "other ua", 500), "another visitor");
        assert!(u.first_click("c1", ip, "ua", 1600), "the window passed");
    }

    #[test]
    fn memory_stays_bounded() {
        let u = UniqueVisitors::new(SHARDS * 10, i64::MAX / 2);
        for i in 0..100_000 {
            u.first_click("c", None, &i.to_string(), 0);
        }
        let total: usize = u.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= SHARDS * 10, "{total}");
    }
}
