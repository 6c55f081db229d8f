//! One delivery attempt: a GET of the rendered URL to a vetted address ([`crate::egress`]) with an
//! `Idempotency-Key` header and a timeout, following no redirect and reading at most 4 KiB of the answer.
//! Only a 2xx answer counts as delivered.

use std::time::{Duration, Instant};

use crate::egress::{AddressPolicy, TargetError, vet};

/// The most of an answer's body that is read.
pub const MAX_RESPONSE_BYTES: usize = 4 << 10;
/// The most of an answer's body kept in the delivery log.
pub const MAX_LOGGED_BODY: usize = 512;
/// The `User-Agent` of outbound postbacks.
pub const USER_AGENT: &str = "TraffoFlex-Postback/1";

/// What one attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// A 2xx answer arrived.
    pub ok: bool,
    /// Retrying can't help (the target is refused or not a usable URL).
    pub permanent: bool,
    /// 0 when no answer came.
    pub http_status: u16,
    pub error: String,
    pub latency_millis: u32,
    /// The start of the body (lossy UTF-8, at most [`MAX_LOGGED_BODY`] bytes).
    pub response: String,
}

impl Delivery {
    fn failed(started: Instant, error: String, permanent: bool) -> Self {
        Self {
            ok: false,
            permanent,
            http_status: 0,
            error,
            latency_millis: elapsed_ms(started),
            response: String::new(),
        }
    }
}

fn elapsed_ms(started: Instant) -> u32 {
    u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// Sends one outbound postback.
pub async fn send(url: &str, idempotency_key: &str, timeout: Duration, policy: AddressPolicy) -> Delivery {
    let started = Instant::now();
    let target = match vet(url, timeout, policy).await {
        Ok(t) => t,
        Err(e @ (TargetError::Invalid(_) | TargetError::Refused { .. })) => {
            return Delivery::failed(started, e.to_string(), true);
        }
        Err(e @ TargetError::Unresolved(_)) => return Delivery::failed(started, e.to_string(), false),
    };
    let client = match target.client(timeout, USER_AGENT) {
        Ok(c) => c,
        Err(e) => return Delivery::failed(started, e, false),
    };
    let request = client.get(target.url).header("Idempotency-Key", idempotency_key);
    // The timeout covers reading the body too.
    match tokio::time::timeout(timeout, exchange(request)).await {
        Ok(Ok((status, body))) => {
            let ok = status.is_success();
            let error = match () {
                () if ok => String::new(),
                () if status.is_redirection() => format!("answered {status} (redirects are not followed)"),
                () => format!("answered {status}"),
            };
            let shown = &body[..body.len().min(MAX_LOGGED_BODY)];
            Delivery {
                ok,
                permanent: false,
                http_status: status.as_u16(),
                error,
                latency_millis: elapsed_ms(started),
                response: String::from_utf8_lossy(shown).into_owned(),
            }
        }
        Ok(Err(e)) if e.is_timeout() => Delivery::failed(started, format!("no answer within {timeout:?}"), false),
        Ok(Err(e)) => Delivery::failed(started, format!("request failed: {e}"), false),
        Err(_) => Delivery::failed(started, format!("no answer within {timeout:?}"), false),
    }
}

/// Sends the request and reads at most [`MAX_RESPONSE_BYTES`] of the body (the rest is never read).
async fn exchange(request: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, Vec<u8>), reqwest::Error> {
    let mut res = request.send().await?;
    let status = res.status();
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE_BYTES {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            // The status already arrived: a broken body doesn't change the outcome.
            Err(_) => break,
        }
    }
    Ok((status, body))
}
