//! What wraps every API answer: a request ID (the `X-Request-Id` header, and the span and log line of the
//! request) and, when origins are configured, CORS for an admin UI served from another origin.

use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use reqwest::Url;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

use crate::auth::CSRF_HEADER;

/// The header carrying the request ID, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request ID kept from a caller.
const MAX_REQUEST_ID: usize = 128;

/// A caller's request ID worth keeping: 1 to 128 printable ASCII characters of a safe set (letters, digits,
/// `-_.:/+=@`), so it can go into logs and headers as it is.
pub fn sane_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=' | b'@'))
}

/// Gives the request an ID (the caller's `X-Request-Id` when sane, else a new UUID v7), runs it inside a
/// span carrying that ID, logs one line when it is answered, and answers the ID in `X-Request-Id`.
pub(crate) async fn request_id(mut req: Request, next: Next) -> Response {
    let name = HeaderName::from_static(REQUEST_ID_HEADER);
    let given = req.headers().get(&name).and_then(|v| v.to_str().ok()).filter(|id| sane_request_id(id));
    let id = given.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    // Handlers (and anything they call) see the ID that is answered.
    req.headers_mut().insert(name.clone(), value.clone());
    let span = tracing::info_span!("api", request_id = %id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(status, millis, "answered");
        } else {
            tracing::info!(status, millis, "answered");
        }
    });
    response.headers_mut().insert(name, value);
    response
}

/// Parses `--cors-origins`: exact origins (`https://admin.example.com`, `http://localhost:5173`), as a browser
/// sends them in `Origin`. A trailing `/` is dropped; a path, query, `*` or anything else is refused.
pub fn parse_cors_origins<S: AsRef<str>>(list: &[S]) -> Result<Vec<HeaderValue>, String> {
    let mut origins = Vec::new();
    for raw in list.iter().map(|s| s.as_ref().trim()).filter(|s| !s.is_empty()) {
        let bad =
            |why: &str| format!("`{raw}` is not an origin ({why}); list origins such as https://admin.example.com");
        if raw == "*" {
            return Err(bad("credentials need exact origins, not *"));
        }
        let url = Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad("an http or https origin"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(bad("scheme, host and port only"));
        }
        let origin = url.origin().ascii_serialization();
        let value = HeaderValue::from_str(&origin).map_err(|e| bad(&e.to_string()))?;
        if !origins.contains(&value) {
            origins.push(value);
        }
    }
    Ok(origins)
}

/// CORS for the listed origins (none: no layer, no CORS headers): credentials (the session cookie) allowed,
/// the methods and headers the API uses, `X-Request-Id`, `Retry-After` and `Location` readable by scripts.
pub(crate) fn cors(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::IF_MATCH,
                HeaderName::from_static(CSRF_HEADER),
                HeaderName::from_static(REQUEST_ID_HEADER),
            ])
            .expose_headers([HeaderName::from_static(REQUEST_ID_HEADER), header::RETRY_AFTER, header::LOCATION])
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_callers_must_be_sane() {
        for ok in ["abc", "0191b7c2-7d1e-7c3a-9d9e-1f2e3d4c5b6a", "req:42/a+b=c@x"] {
            assert!(sane_request_id(ok), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in ["", "has space", "new\nline", "quote\"", "ünï", long.as_str()] {
            assert!(!sane_request_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn origins_are_exact() {
        let got =
            parse_cors_origins(&["https://Admin.Example.com/", " http://localhost:5173 ", "", "https://a.example:443"])
                .unwrap();
        assert_eq!(got, ["https://admin.example.com", "http://localhost:5173", "https://a.example"]);
        for bad in ["*", "admin.example.com", "ftp://a.example", "https://a.example/ui", "https://a.example?x=1"] {
            assert!(parse_cors_origins(&[bad]).is_err(), "{bad}");
        }
        assert!(parse_cors_origins::<&str>(&[]).unwrap().is_empty());
    }
}
