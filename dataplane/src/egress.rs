//! Outbound HTTP to addresses people configure (destination health checks, outbound postbacks): the host is
//! resolved first, every address it resolves to is vetted, and the request then goes to a vetted address
//! (so a second DNS answer can't swap in another one). Private, loopback, link-local and otherwise reserved
//! addresses are refused unless a setting allows them. No redirect is ever followed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How outbound requests may reach their targets.
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

/// Why a target can't be requested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not an http(s) URL with a host.
    #[error("{0}")]
    Invalid(String),
    /// DNS gave no usable answer in time (may be passing).
    #[error("{0}")]
    Unresolved(String),
    /// The host resolves to an address the policy refuses.
    #[error("refused: {host} resolves to a {reason} address")]
    Refused { host: String, reason: &'static str },
}

/// A target whose address was vetted: request it with [`Vetted::client`].
#[derive(Debug, Clone)]
pub struct Vetted {
    pub url: url::Url,
    pub host: String,
    pub addr: SocketAddr,
}

/// Parses `url`, resolves its host within `timeout` and vets every address it resolves to.
pub async fn vet(url: &str, timeout: Duration, policy: AddressPolicy) -> Result<Vetted, TargetError> {
    let parsed = match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        Ok(u) => return Err(TargetError::Invalid(format!("unsupported scheme `{}`", u.scheme()))),
        Err(e) => return Err(TargetError::Invalid(format!("not a URL: {e}"))),
    };
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return Err(TargetError::Invalid("the URL has no host".to_owned()));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => return Err(TargetError::Unresolved(format!("cannot resolve {host}: {e}"))),
            Err(_) => return Err(TargetError::Unresolved(format!("resolving {host} timed out"))),
        };
    let Some(addr) = addrs.first().copied() else {
        return Err(TargetError::Unresolved(format!("{host} has no address")));
    };
    if !policy.allow_private
        && let Some(reason) = addrs.iter().find_map(|a| refused_reason(a.ip()))
    {
        return Err(TargetError::Refused { host, reason });
    }
    Ok(Vetted { url: parsed, host, addr })
}

impl Vetted {
    /// A client that connects only to the vetted address, follows no redirects and gives up after `timeout`.
    pub fn client(&self, timeout: Duration, user_agent: &str) -> Result<reqwest::Client, String> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .resolve(&self.host, self.addr)
            .user_agent(user_agent)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))
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
    async fn names_are_vetted_after_resolution() {
        let t = Duration::from_secs(2);
        let refused = vet("http://localhost:9/pb", t, AddressPolicy::default()).await;
        assert!(matches!(refused, Err(TargetError::Refused { reason: "loopback", .. })), "{refused:?}");
        let allowed = vet("http://localhost:9/pb", t, AddressPolicy { allow_private: true }).await;
        assert!(allowed.is_ok_and(|v| v.addr.ip().is_loopback() && v.host == "localhost"));
        let bad = vet("ftp://example.com/", t, AddressPolicy::default()).await;
        assert!(matches!(bad, Err(TargetError::Invalid(m)) if m.contains("unsupported scheme")));
    }
}
