//! One health check: an HTTP GET with a timeout to a vetted address.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How a check may reach its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddressPolicy {
    /// Allow private, loopback, link-local and other reserved addresses (a lab or an internal offer).
    pub allow_private: bool,
}

/// Why an address is refused, or `None` when it is a public one.
pub fn refused_reason(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || o[0] == 0 || o[0] >= 240 {
                Some("reserved")
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                Some("shared (carrier-grade NAT)")
            } else if (o[0] == 192 && o[1] == 0 && o[2] == 0) || (o[0] == 198 && (18..20).contains(&o[1])) {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("reserved")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("private")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else {
                None
            }
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// A 2xx or 3xx answer within the timeout.
    pub ok: bool,
    pub http_status: u16,
    pub latency_millis: u32,
    /// Why it failed; empty when it did not.
    pub error: String,
}

impl ProbeResult {
    fn failed(started: Instant, error: String) -> Self {
        Self { ok: false, http_status: 0, latency_millis: elapsed_ms(started), error }
    }
}

fn elapsed_ms(started: Instant) -> u32 {
    u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// Checks `url`: resolves its host, refuses disallowed addresses, then GETs it from the vetted address with
/// `timeout`, following no redirects.
pub async fn probe(url: &str, timeout: Duration, policy: AddressPolicy) -> ProbeResult {
    let started = Instant::now();
    let parsed = match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        Ok(u) => return ProbeResult::failed(started, format!("unsupported scheme `{}`", u.scheme())),
        Err(e) => return ProbeResult::failed(started, format!("not a URL: {e}")),
    };
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return ProbeResult::failed(started, "the URL has no host".to_owned());
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => return ProbeResult::failed(started, format!("cannot resolve {host}: {e}")),
            Err(_) => return ProbeResult::failed(started, format!("resolving {host} timed out")),
        };
    let Some(addr) = addrs.first().copied() else {
        return ProbeResult::failed(started, format!("{host} has no address"));
    };
    if !policy.allow_private
        && let Some(reason) = addrs.iter().find_map(|a| refused_reason(a.ip()))
    {
        return ProbeResult::failed(started, format!("refused: {host} resolves to a {reason} address"));
    }
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .resolve(&host, addr)
        .user_agent("TraffoFlex-HealthCheck/1")
        .build()
    {
        Ok(c) => c,
        Err(e) => return ProbeResult::failed(started, format!("HTTP client: {e}")),
    };
    match client.get(parsed).send().await {
        Ok(res) => {
            let status = res.status();
            let ok = status.is_success() || status.is_redirection();
            let error = if ok { String::new() } else { format!("answered {status}") };
            ProbeResult { ok, http_status: status.as_u16(), latency_millis: elapsed_ms(started), error }
        }
        Err(e) if e.is_timeout() => ProbeResult::failed(started, format!("no answer within {timeout:?}")),
        Err(e) => ProbeResult::failed(started, format!("request failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_and_public_ones_are_not() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "reserved"),
            ("::1", "loopback"),
            ("fd00::1", "private"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
        ] {
            assert_eq!(refused_reason(ip.parse().unwrap()), Some(why), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert_eq!(refused_reason(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn a_loopback_target_is_refused_without_being_contacted() {
        let r = probe("http://127.0.0.1:9/", Duration::from_secs(1), AddressPolicy::default()).await;
        assert!(!r.ok);
        assert!(r.error.contains("loopback"), "{}", r.error);
        let r = probe("ftp://example.com/", Duration::from_secs(1), AddressPolicy::default()).await;
        assert!(r.error.contains("unsupported scheme"), "{}", r.error);
    }
}
