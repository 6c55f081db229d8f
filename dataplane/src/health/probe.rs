//! One health check: an HTTP GET with a timeout to an address vetted by [`crate::egress`].

use std::time::{Duration, Instant};

pub use crate::egress::AddressPolicy;
use crate::egress::vet;

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
    let target = match vet(url, timeout, policy).await {
        Ok(t) => t,
        Err(e) => return ProbeResult::failed(started, e.to_string()),
    };
    let client = match target.client(timeout, "TraffoFlex-HealthCheck/1") {
        Ok(c) => c,
        Err(e) => return ProbeResult::failed(started, e),
    };
    match client.get(target.url).send().await {
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

    #[tokio::test]
    async fn a_loopback_target_is_refused_without_being_contacted() {
        let r = probe("http://127.0.0.1:9/", Duration::from_secs(1), AddressPolicy::default()).await;
        assert!(!r.ok);
        assert!(r.error.contains("loopback"), "{}", r.error);
        let r = probe("ftp://example.com/", Duration::from_secs(1), AddressPolicy::default()).await;
        assert!(r.error.contains("unsupported scheme"), "{}", r.error);
    }
}
