//! Anti-repeat: keep sending a visitor to destinations they haven't been sent to within a window.
//!
//! A stream names what identifies a visitor ([`UserKey`]: `ip` by default, `userAgent`, `sourceClickId`,
//! `sub1`…`sub10`, `utm…`, `query.NAME`). The [`AntiRepeatCache`] remembers, per (stream, visitor), which
//! destinations they were sent to and until when. It is the engine's only shared mutable state besides the
//! round-robin counters: bounded (`capacity` visitors; the oldest-inserted go first when full), sharded
//! (16 short-held locks, touched only by streams with anti-repeat on), and timed by the caller's clock.
//! It lives outside the snapshot, so a configuration reload keeps every visitor's history.
//!
//! Visitors and destinations are stored as 64-bit keyed hashes (SipHash with a per-process random key), not
//! as text: a collision would only merge two histories, and the key makes one impractical to aim for.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Mutex, PoisonError};

use smallvec::SmallVec;
use traffoflex_crds::ExhaustedMode;

use super::context::Facts;

const SHARDS: usize = 16;

/// What identifies a visitor for anti-repeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserKey {
    /// Client IP address.
    Ip,
    /// `User-Agent`.
    UserAgent,
    /// The traffic source's click token.
    SourceClickId,
    /// `sub1` … `sub10`.
    Sub(u8),
    /// `utm_source`.
    UtmSource,
    /// `utm_medium`.
    UtmMedium,
    /// `utm_campaign`.
    UtmCampaign,
    /// `utm_content`.
    UtmContent,
    /// `utm_term`.
    UtmTerm,
    /// A query parameter (`query.NAME` or `param:NAME`).
    Param(Box<str>),
}

impl UserKey {
    /// The key a stream's `antiRepeat.userKey` names.
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(p) = name.strip_prefix("query.").or_else(|| name.strip_prefix("param:")) {
            return (!p.is_empty()).then(|| Self::Param(p.into()));
        }
        if let Some(n) = name.strip_prefix("sub").and_then(|n| n.parse::<u8>().ok())
            && (1..=10).contains(&n)
            && name.len() == if n == 10 { 5 } else { 4 }
        {
            return Some(Self::Sub(n));
        }
        Some(match name {
            "ip" => Self::Ip,
            "userAgent" => Self::UserAgent,
            "sourceClickId" => Self::SourceClickId,
            "utmSource" => Self::UtmSource,
            "utmMedium" => Self::UtmMedium,
            "utmCampaign" => Self::UtmCampaign,
            "utmContent" => Self::UtmContent,
            "utmTerm" => Self::UtmTerm,
            _ => return None,
        })
    }

    /// Feeds the visitor's value to `state`; false when the click doesn't carry it.
    fn hash_value(&self, facts: &Facts<'_>, state: &mut impl Hasher) -> bool {
        let ctx = facts.ctx;
        let text: &str = match self {
            Self::Ip => {
                return ctx.ip.map(|ip| ip.to_canonical().hash(state)).is_some();
            }
            Self::UserAgent => &ctx.user_agent,
            Self::SourceClickId => &ctx.source_click_id,
            Self::Sub(n) => ctx.sub(*n),
            Self::UtmSource => &ctx.utm_source,
            Self::UtmMedium => &ctx.utm_medium,
            Self::UtmCampaign => &ctx.utm_campaign,
            Self::UtmContent => &ctx.utm_content,
            Self::UtmTerm => &ctx.utm_term,
            Self::Param(name) => ctx.param(name).unwrap_or(""),
        };
        text.hash(state);
        !text.is_empty()
    }
}

/// A stream's anti-repeat settings, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AntiRepeatPolicy {
    /// What identifies a visitor.
    pub user_key: UserKey,
    /// How long a visit is remembered, in milliseconds.
    pub window_ms: i64,
    /// What happens once a visitor has seen every available destination.
    pub exhausted: ExhaustedMode,
}

/// `u64` keys that are already hashes.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Visits = SmallVec<[(u64, i64); 4]>;

#[derive(Default)]
struct Shard {
    /// Visitor -> (destination, remembered until ms).
    map: HashMap<u64, Visits, BuildHasherDefault<PreHashed>>,
    /// Visitors in insertion order, for eviction.
    order: VecDeque<u64>,
}

/// Which destinations each visitor of each stream was sent to recently (see the module docs).
pub struct AntiRepeatCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
}

impl std::fmt::Debug for AntiRepeatCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AntiRepeatCache").field("capacity", &(self.per_shard * SHARDS)).finish_non_exhaustive()
    }
}

impl AntiRepeatCache {
    /// A cache that remembers about `capacity` visitors (at least 16).
    pub fn new(capacity: usize) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        Self { shards, hasher: RandomState::new(), per_shard: capacity.div_ceil(SHARDS).max(1) }
    }

    /// The visitor of `stream_id` the click is, or `None` when it doesn't carry the policy's user key.
    pub fn visitor(&self, stream_id: &str, policy: &AntiRepeatPolicy, facts: &Facts<'_>) -> Option<u64> {
        let mut state = self.hasher.build_hasher();
        stream_id.hash(&mut state);
        policy.user_key.hash_value(facts, &mut state).then(|| state.finish())
    }

    /// The key a destination is remembered by.
    pub fn destination(&self, destination_id: &str) -> u64 {
        self.hasher.hash_one(destination_id)
    }

    fn shard(&self, visitor: u64) -> &Mutex<Shard> {
        // Bits the shard maps don't use for their buckets.
        &self.shards[((visitor >> 32) as usize) % SHARDS]
    }

    /// The destinations `visitor` was sent to that are still remembered at `now_ms`.
    pub fn seen(&self, visitor: u64, now_ms: i64) -> SmallVec<[u64; 8]> {
        let shard = self.shard(visitor).lock().unwrap_or_else(PoisonError::into_inner);
        shard
            .map
            .get(&visitor)
            .map(|visits| visits.iter().filter(|(_, until)| *until > now_ms).map(|(d, _)| *d).collect())
            .unwrap_or_default()
    }

    /// Remembers that `visitor` was sent to `destination` at `now_ms`, for `window_ms`.
    pub fn record(&self, visitor: u64, destination: u64, now_ms: i64, window_ms: i64) {
        let until = now_ms.saturating_add(window_ms);
        let mut guard = self.shard(visitor).lock().unwrap_or_else(PoisonError::into_inner);
        let shard = &mut *guard;
        if let Some(visits) = shard.map.get_mut(&visitor) {
            visits.retain(|(_, u)| *u > now_ms);
            match visits.iter_mut().find(|(d, _)| *d == destination) {
                Some(visit) => visit.1 = until,
                None => visits.push((destination, until)),
            }
            return;
        }
        while shard.map.len() >= self.per_shard {
            let Some(oldest) = shard.order.pop_front() else { break };
            shard.map.remove(&oldest);
        }
        let mut visits = Visits::new();
        visits.push((destination, until));
        shard.map.insert(visitor, visits);
        shard.order.push_back(visitor);
    }

    /// How many visitors are remembered (expired ones count until they are evicted).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len()).sum()
    }

    /// Whether no visitor is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::context::ClickContext;
    use chrono::Utc;

    fn policy(key: &str) -> AntiRepeatPolicy {
        let user_key = UserKey::parse(key).unwrap_or_else(|| panic!("{key}"));
        AntiRepeatPolicy { user_key, window_ms: 1000, exhausted: ExhaustedMode::AllowRepeat }
    }

    #[test]
    fn user_keys_parse() {
        assert_eq!(UserKey::parse("sub10"), Some(UserKey::Sub(10)));
        assert_eq!(UserKey::parse("query.uid"), Some(UserKey::Param("uid".into())));
        assert_eq!(UserKey::parse("param:uid"), Some(UserKey::Param("uid".into())));
        assert_eq!(UserKey::parse("utmTerm"), Some(UserKey::UtmTerm));
        for bad in ["sub0", "sub11", "sub01", "query.", "country", ""] {
            assert_eq!(UserKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn visitors_differ_by_stream_and_value_and_need_the_value() {
        let cache = AntiRepeatCache::new(100);
        let mut a = ClickContext::from_query([("sub1", "u1"), ("uid", "x")]);
        a.ip = "10.0.0.1".parse().ok();
        let b = ClickContext::from_query([("sub1", "u2")]);
        let now = Utc::now();
        let (fa, fb) = (Facts::new(&a, now), Facts::new(&b, now));
        let p = policy("sub1");
        assert_ne!(cache.visitor("s1", &p, &fa), cache.visitor("s1", &p, &fb));
        assert_ne!(cache.visitor("s1", &p, &fa), cache.visitor("s2", &p, &fa));
        assert_eq!(cache.visitor("s1", &p, &fa), cache.visitor("s1", &p, &fa));
        assert!(cache.visitor("s1", &policy("ip"), &fa).is_some());
        assert!(cache.visitor("s1", &policy("ip"), &fb).is_none());
        assert!(cache.visitor("s1", &policy("query.uid"), &fa).is_some());
        assert!(cache.visitor("s1", &policy("query.uid"), &fb).is_none());
        assert!(cache.visitor("s1", &policy("userAgent"), &fa).is_none());
    }

    #[test]
    fn visits_expire_after_their_window() {
        let cache = AntiRepeatCache::new(100);
        let (d1, d2) = (cache.destination("d1"), cache.destination("d2"));
        cache.record(7, d1, 1_000, 500);
        cache.record(7, d2, 1_200, 500);
        assert_eq!(cache.seen(7, 1_100).as_slice(), &[d1, d2]);
        assert_eq!(cache.seen(7, 1_500).as_slice(), &[d2]);
        assert!(cache.seen(7, 1_700).is_empty());
        assert!(cache.seen(8, 1_100).is_empty());
        // Seeing d1 again renews it.
        cache.record(7, d1, 1_400, 500);
        assert_eq!(cache.seen(7, 1_800).as_slice(), &[d1]);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn capacity_is_a_bound() {
        let cache = AntiRepeatCache::new(32);
        for visitor in 0..10_000u64 {
            cache.record(visitor.wrapping_mul(0x9E37_79B9_7F4A_7C15), 1, 0, 1_000);
        }
        assert!(cache.len() <= 32, "{}", cache.len());
        assert!(!cache.is_empty());
        // The newest visitor is remembered, the first is gone.
        assert_eq!(cache.seen(9_999u64.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0).as_slice(), &[1]);
        assert!(cache.seen(0, 0).is_empty());
    }
}
