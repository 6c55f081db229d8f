//! The TraffoFlex admin and automation API, under `/api/v1` (see CONTRACT.md and `docs/api.md`).
//!
//! One [`router`] over an [`ApiState`]: the configuration store (users, sessions, tokens, teams, the six
//! object kinds, the audit trail) and the analytics backend (reports, logs). Writes to configuration bump the
//! store's configuration revision, which every traffic and postback process polls (and which `POST
//! /internal/reload` on each of them short-cuts), so a change is live everywhere within about a second, with
//! or without Kubernetes.

pub mod auth;
pub mod error;
pub mod layers;
mod login_code;
pub mod objects;
pub mod openapi;
mod ops;
pub mod presets;
mod reports;
mod users;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderValue;
use axum::http::request::Parts;
use traffoflex_core::analytics::Analytics;
use traffoflex_core::store::ConfigStore;
use traffoflex_dataplane::health::probe::AddressPolicy;
use traffoflex_dataplane::traffic::visitor::{TrustedProxies, client_ip};

use crate::auth::limiter::Limiter;
use crate::auth::otp::OtpSettings;
use crate::error::ApiError;

/// How the API behaves.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// How long a session lasts after login.
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (serve the API over HTTPS, directly or behind a proxy).
    pub secure_cookies: bool,
    /// Failed logins in a row that lock an account, and for how long.
    pub lockout_after: u32,
    pub lockout_for: Duration,
    /// Login and registration attempts per client address per minute (per API process).
    pub attempts_per_minute: u32,
    /// `POST /internal/reload` URLs of data-plane processes told to reload after every write, besides the
    /// revision every one of them polls.
    pub reload_urls: Vec<String>,
    /// Bearer token those reload endpoints require.
    pub reload_token: Option<String>,
    /// Whether manual health checks may reach private addresses.
    pub health_policy: AddressPolicy,
    /// Proxies whose `X-Forwarded-For` names the client (for the per-address login limit); without them,
    /// every client behind an ingress would share one budget.
    pub trusted_proxies: TrustedProxies,
    /// Passwordless login by e-mail one-time code (`POST /auth/otp/*`); off when `None`.
    pub otp: Option<OtpSettings>,
    /// Origins of an admin UI served elsewhere, allowed by CORS with credentials (see
    /// [`layers::parse_cors_origins`]); none: no CORS headers.
    pub cors_origins: Vec<HeaderValue>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            lockout_after: 5,
            lockout_for: Duration::from_secs(15 * 60),
            attempts_per_minute: 30,
            reload_urls: Vec::new(),
            reload_token: None,
            health_policy: AddressPolicy::default(),
            trusted_proxies: TrustedProxies::default(),
            otp: None,
            cors_origins: Vec::new(),
        }
    }
}

/// What every handler shares.
pub struct ApiState {
    pub store: Arc<dyn ConfigStore>,
    pub analytics: Arc<dyn Analytics>,
    pub settings: ApiSettings,
    limiter: Limiter,
    http: reqwest::Client,
}

impl ApiState {
    pub fn new(store: Arc<dyn ConfigStore>, analytics: Arc<dyn Analytics>, settings: ApiSettings) -> Self {
        let limiter = Limiter::new(settings.attempts_per_minute.max(1), Duration::from_secs(60));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { store, analytics, settings, limiter, http }
    }

    /// Tells the data plane that configuration changed: a new revision (polled by every traffic and postback
    /// process) and, best effort and in the background, a push to each configured reload URL.
    pub(crate) async fn config_changed(&self) {
        if let Err(e) = self.store.bump_config_revision().await {
            tracing::error!(error = %e, "the configuration revision was not bumped; processes reload at the next change");
        }
        for url in &self.settings.reload_urls {
            let mut req = self.http.post(url);
            if let Some(token) = &self.settings.reload_token {
                req = req.bearer_auth(token);
            }
            let url = url.clone();
            tokio::spawn(async move {
                match req.send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => tracing::warn!(%url, status = %r.status(), "reload push refused"),
                    Err(e) => tracing::debug!(%url, error = %e, "reload push failed; the revision poll catches up"),
                }
            });
        }
    }
}

/// The caller's address: the TCP peer, or behind trusted proxies the address `X-Forwarded-For` names
/// (`0.0.0.0` when the server was not given connect info).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<Arc<ApiState>> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ApiState>) -> Result<Self, Self::Rejection> {
        let peer =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let forwarded = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        Ok(ClientIp(client_ip(peer, forwarded, &state.settings.trusted_proxies)))
    }
}

/// The whole API under `/api/v1`, plus the OpenAPI document at `/api/v1/openapi.json`, every answer with an
/// `X-Request-Id` and, for the configured origins, CORS headers. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so login limits see client addresses.
pub fn router(state: Arc<ApiState>) -> Router {
    let cors = layers::cors(&state.settings.cors_origins);
    let api = Router::new()
        .merge(users::routes())
        .merge(objects::routes())
        .merge(presets::routes())
        .merge(reports::routes())
        .merge(ops::routes())
        .route("/openapi.json", axum::routing::get(openapi::serve))
        .fallback(|| async { ApiError::not_found("no such API endpoint (see /api/v1/openapi.json)") })
        .with_state(state);
    let mut router = Router::new().nest("/api/v1", api);
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    router.layer(axum::middleware::from_fn(layers::request_id))
}
