//! What a request tells about its visitor: the client IP behind trusted proxies, device, OS and browser from
//! the user agent, bot signals, and the preferred language.

use std::net::IpAddr;

use ipnet::IpNet;

/// Proxies and load balancers whose `X-Forwarded-For` is believed. Empty: the header is ignored entirely.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses a comma-separated list of CIDRs or addresses (`10.0.0.0/8, 127.0.0.1`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("`{item}` is not an IP address or CIDR"))?;
            nets.push(net);
        }
        Ok(Self(nets))
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }
}

/// The visitor's address: the peer itself unless the peer is a trusted proxy; then `X-Forwarded-For` read from
/// right to left, skipping trusted hops, up to the first address not ours. A header sent by an untrusted peer
/// is ignored, so a visitor can't claim another address.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else { return peer };
    let mut last = peer;
    for hop in header.rsplit(',').map(str::trim) {
        let Some(ip) = parse_hop(hop) else { return last };
        if !trusted.contains(&ip) {
            return ip;
        }
        last = ip;
    }
    last
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry; tolerates `[v6]:port` and `v4:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok().map(canonical);
    }
    let (host, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok().map(canonical)
}

/// Device, OS, browser and bot signal read from a user agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Device {
    /// `desktop`, `mobile`, `tablet`, or empty when unknown.
    pub device_type: &'static str,
    pub os: String,
    pub browser: String,
    pub is_bot: bool,
}

/// Recently read user agents. Reading one (woothee's pattern tables) costs far more than hashing it, and
/// clicks come from comparatively few distinct user agents, so each is read once and shared. Bounded: a shard
/// that fills up starts over.
pub struct DeviceCache {
    shards: Box<[DeviceShard]>,
    per_shard: usize,
}

type DeviceShard = std::sync::Mutex<std::collections::HashMap<Box<str>, std::sync::Arc<Device>>>;

impl DeviceCache {
    const SHARDS: usize = 16;

    /// A cache of about `capacity` user agents.
    pub fn new(capacity: usize) -> Self {
        let shards = (0..Self::SHARDS).map(|_| std::sync::Mutex::default()).collect();
        Self { shards, per_shard: (capacity / Self::SHARDS).max(1) }
    }

    /// What `user_agent` says (see [`device`]).
    pub fn get(&self, user_agent: &str) -> std::sync::Arc<Device> {
        // FNV-1a over the last bytes, where user agents differ most: only picks the shard.
        let tail = &user_agent.as_bytes()[user_agent.len().saturating_sub(32)..];
        let h = tail.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
        let shard = &self.shards[(h as usize) % Self::SHARDS];
        if let Some(d) = shard.lock().unwrap_or_else(|p| p.into_inner()).get(user_agent) {
            return std::sync::Arc::clone(d);
        }
        let d = std::sync::Arc::new(device(user_agent));
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.per_shard {
            map.clear();
        }
        map.insert(user_agent.into(), std::sync::Arc::clone(&d));
        d
    }
}

/// Markers of automated clients that user-agent databases often don't classify as crawlers.
const BOT_MARKERS: &[&str] = &[
    "bot",
    "spider",
    "crawl",
    "slurp",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "go-http-client",
    "java/",
    "okhttp",
    "libwww",
    "httpclient",
    "headlesschrome",
    "phantomjs",
    "scrapy",
    "facebookexternalhit",
];

/// Reads a user agent. An empty user agent is a bot.
pub fn device(user_agent: &str) -> Device {
    if user_agent.trim().is_empty() {
        return Device { is_bot: true, ..Device::default() };
    }
    let lower = user_agent.to_ascii_lowercase();
    let marker = BOT_MARKERS.iter().any(|m| lower.contains(m));
    let Some(ua) = woothee::parser::Parser::new().parse(user_agent) else {
        return Device { is_bot: marker, ..Device::default() };
    };
    let tablet =
        lower.contains("ipad") || (lower.contains("android") && !lower.contains("mobile")) || lower.contains("tablet");
    let device_type = match ua.category {
        _ if tablet && ua.category != "crawler" => "tablet",
        "pc" => "desktop",
        "smartphone" | "mobilephone" => "mobile",
        _ => "",
    };
    let known = |s: &str| if s == "UNKNOWN" { String::new() } else { s.to_owned() };
    Device { device_type, os: known(ua.os), browser: known(ua.name), is_bot: marker || ua.category == "crawler" }
}

/// The visitor's preferred language (primary subtag, lowercase) from `Accept-Language`: the highest `q`, the
/// first of equals; `*` and malformed entries are skipped.
pub fn language(accept_language: &str) -> String {
    let mut best: Option<(&str, f32)> = None;
    for entry in accept_language.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let tag = parts.next().unwrap_or("");
        let q = parts.find_map(|p| p.strip_prefix("q=")).map_or(Some(1.0), |q| q.parse::<f32>().ok()).unwrap_or(0.0);
        let primary = tag.split('-').next().unwrap_or("");
        if primary.is_empty() || primary == "*" || !primary.bytes().all(|b| b.is_ascii_alphabetic()) || q <= 0.0 {
            continue;
        }
        if best.is_none_or(|(_, bq)| q > bq) {
            best = Some((primary, q));
        }
    }
    best.map(|(t, _)| t.to_ascii_lowercase()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_cannot_spoof_their_address() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        assert_eq!(client_ip(ip("203.0.113.7"), Some("1.2.3.4"), &trusted), ip("203.0.113.7"));
        assert_eq!(client_ip(ip("203.0.113.7"), None, &TrustedProxies::default()), ip("203.0.113.7"));
    }

    #[test]
    fn forwarded_for_is_read_right_to_left_past_trusted_hops() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.1").unwrap();
        // The visitor prepended a fake address; the first untrusted hop from the right is the real one.
        let xff = "6.6.6.6, 198.51.100.4, 192.168.1.1";
        assert_eq!(client_ip(ip("10.1.2.3"), Some(xff), &trusted), ip("198.51.100.4"));
        assert_eq!(client_ip(ip("10.1.2.3"), Some("10.9.9.9"), &trusted), ip("10.9.9.9"), "all trusted: the leftmost");
        assert_eq!(client_ip(ip("10.1.2.3"), Some("garbage, 10.0.0.5"), &trusted), ip("10.0.0.5"));
        assert_eq!(client_ip(ip("10.1.2.3"), Some("[2001:db8::1]:443"), &trusted), ip("2001:db8::1"));
        assert_eq!(client_ip(ip("10.1.2.3"), Some("198.51.100.9:5555"), &trusted), ip("198.51.100.9"));
        assert_eq!(client_ip(ip("::ffff:10.0.0.1"), Some("198.51.100.9"), &trusted), ip("198.51.100.9"));
    }

    #[test]
    fn bad_proxy_lists_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/8, nope").unwrap_err().contains("`nope`"));
    }

    #[test]
    fn user_agents_give_device_os_browser() {
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        let cache = DeviceCache::new(2);
        assert_eq!(*cache.get(iphone), device(iphone));
        assert_eq!(*cache.get(iphone), device(iphone), "and again from the cache");
        for i in 0..100 {
            cache.get(&format!("Mozilla/5.0 agent {i}"));
        }
        assert_eq!(*cache.get("Mozilla/5.0 agent 7"), device("Mozilla/5.0 agent 7"), "bounded, still right");
        assert!(cache.shards.iter().all(|s| s.lock().unwrap().len() <= 1), "no shard beyond its share");
        let d = device(iphone);
        assert_eq!((d.device_type, d.os.as_str(), d.browser.as_str(), d.is_bot), ("mobile", "iPhone", "Safari", false));
        let win = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let d = device(win);
        assert_eq!((d.device_type, d.browser.as_str(), d.is_bot), ("desktop", "Chrome", false));
        let ipad = "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.0 Mobile/15E148 Safari/604.1";
        assert_eq!(device(ipad).device_type, "tablet");
        let tab = "Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
        assert_eq!(device(tab).device_type, "tablet");
    }

    #[test]
    fn bots_are_recognised() {
        for ua in [
            "",
            "  ",
            "Googlebot/2.1 (+http://www.google.com/bot.html)",
            "curl/8.4.0",
            "python-requests/2.31",
            "Mozilla/5.0 HeadlessChrome/120",
        ] {
            assert!(device(ua).is_bot, "{ua:?}");
        }
    }

    #[test]
    fn preferred_language_honours_quality() {
        assert_eq!(language("de-DE,de;q=0.9,en;q=0.8"), "de");
        assert_eq!(language("en;q=0.5, FR-ca;q=0.9"), "fr");
        assert_eq!(language("*, en;q=0.1"), "en");
        assert_eq!(language(""), "");
        assert_eq!(language("x1-y;q=1, es;q=0"), "");
    }
}
