//! `traffoflex api`: the admin and automation API as its own process (and the builder `up` uses).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use traffoflex_api::auth::otp::{CodeDelivery, LogDelivery, OtpSettings};
use traffoflex_api::auth::smtp::{SmtpDelivery, SmtpSettingsError};
use traffoflex_api::{ApiSettings, ApiState};
use traffoflex_core::analytics::{Analytics, open_analytics};
use traffoflex_core::settings::BackendSettings;
use traffoflex_core::store::ConfigStore;
use traffoflex_core::telemetry::Telemetry;
use traffoflex_dataplane::health::probe::AddressPolicy;
use traffoflex_dataplane::traffic::visitor::TrustedProxies;

/// Settings of the `api` role.
#[derive(Debug, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub backends: BackendSettings,
    /// Where the API (and the admin UI), `/healthz`, `/readyz` and `/metrics` answer.
    #[arg(long, env = "TRAFFOFLEX_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub api: ApiFlags,
    /// Bearer token the data plane's `POST /internal/reload` requires (sent with reload pushes).
    #[arg(long, env = "TRAFFOFLEX_RELOAD_TOKEN", hide_env_values = true)]
    pub reload_token: Option<String>,
    /// Let manual health checks reach private, loopback and link-local addresses.
    #[arg(long, env = "TRAFFOFLEX_HEALTH_ALLOW_PRIVATE")]
    pub health_allow_private: bool,
    /// Proxies whose `X-Forwarded-For` is believed (for login limits): comma-separated CIDRs or addresses.
    #[arg(long, env = "TRAFFOFLEX_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    #[command(flatten)]
    pub admin: AdminBootstrap,
}

/// API flags `up` shares.
#[derive(Debug, Clone, Args)]
pub struct ApiFlags {
    /// Mark the session cookie `Secure`: set it when users reach the API over HTTPS.
    #[arg(long, env = "TRAFFOFLEX_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// How long a login session lasts, in hours.
    #[arg(long, env = "TRAFFOFLEX_SESSION_HOURS", default_value_t = 12)]
    pub session_hours: u64,
    /// Data-plane reload endpoints (`http://traffic:8081/internal/reload,…`) pushed after every change, on
    /// top of the configuration revision every process polls.
    #[arg(long, env = "TRAFFOFLEX_RELOAD_URLS", value_delimiter = ',')]
    pub reload_urls: Vec<String>,
    /// Passwordless login by e-mail one-time code, beside passwords: `off`, `smtp` (codes are e-mailed; needs
    /// --smtp-url and --smtp-from), or `log` (development: the code is written to the log instead).
    #[arg(long, env = "TRAFFOFLEX_OTP_LOGIN", value_enum, default_value_t = OtpLogin::Off)]
    pub otp_login: OtpLogin,
    /// SMTP server for `--otp-login smtp`: `smtp://user:password@mail.example.com:587` (STARTTLS, required),
    /// `smtps://user:password@mail.example.com:465` (implicit TLS) or `smtp://relay:25?tls=none` (plain, no
    /// credentials: local relays only).
    #[arg(long, env = "TRAFFOFLEX_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender of login-code e-mails: `no-reply@example.com` or `TraffoFlex <no-reply@example.com>`.
    #[arg(long, env = "TRAFFOFLEX_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// How long a login code is valid (and how long before another can be sent to the same address), in
    /// seconds (30 to 3600).
    #[arg(long, env = "TRAFFOFLEX_OTP_TTL_SECONDS", default_value_t = 600)]
    pub otp_ttl_seconds: u64,
    /// Origins of an admin UI served elsewhere (`https://admin.example.com,…`), allowed by CORS with
    /// credentials; none: no CORS headers.
    #[arg(long, env = "TRAFFOFLEX_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
}

/// How login codes reach their users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtpLogin {
    /// No login by code.
    Off,
    /// E-mail codes over SMTP (`--smtp-url`, `--smtp-from`).
    Smtp,
    /// Write codes to the log (development only: whoever reads the log can log in as anyone).
    Log,
}

/// The first admin, made when the store has no user yet.
#[derive(Debug, Clone, Args)]
pub struct AdminBootstrap {
    /// E-mail of the admin created when the store has no user.
    #[arg(long, env = "TRAFFOFLEX_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Password of that admin (10 to 256 characters).
    #[arg(long, env = "TRAFFOFLEX_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
}

impl AdminBootstrap {
    /// [`AdminBootstrap::apply`] for the data-plane roles, which must start even when the store is down: a
    /// failure is logged, and the API (or the next start) makes the admin.
    pub async fn apply_or_warn(&self, store: &dyn ConfigStore) {
        if let Err(e) = self.apply(store).await {
            tracing::warn!(error = %format!("{e:#}"), "bootstrap admin not created");
        }
    }

    /// Creates the admin when both are given and the store has no user. Returns whether it did.
    pub async fn apply(&self, store: &dyn ConfigStore) -> anyhow::Result<bool> {
        match (&self.admin_email, &self.admin_password) {
            (Some(email), Some(password)) => {
                let made = traffoflex_api::auth::bootstrap_admin(store, email, password)
                    .await
                    .context("creating the bootstrap admin")?;
                if made {
                    tracing::info!(email = %email, "bootstrap admin created");
                }
                Ok(made)
            }
            (None, None) => Ok(false),
            _ => anyhow::bail!("give both TRAFFOFLEX_ADMIN_EMAIL and TRAFFOFLEX_ADMIN_PASSWORD, or neither"),
        }
    }
}

/// Builds the API's router (with `/healthz`, `/readyz`, `/metrics` from `telemetry`).
pub fn build(
    flags: &ApiFlags,
    data_plane: &DataPlaneFlags,
    store: Arc<dyn ConfigStore>,
    analytics: Arc<dyn Analytics>,
    telemetry: &Telemetry,
) -> anyhow::Result<axum::Router> {
    let trusted_proxies =
        TrustedProxies::parse(&data_plane.trusted_proxies).map_err(anyhow::Error::msg).context("--trusted-proxies")?;
    let cors_origins = traffoflex_api::layers::parse_cors_origins(&flags.cors_origins)
        .map_err(anyhow::Error::msg)
        .context("--cors-origins")?;
    let otp = otp_settings(flags)?;
    let settings = ApiSettings {
        session_ttl: Duration::from_secs(flags.session_hours.clamp(1, 24 * 30) * 3600),
        secure_cookies: flags.secure_cookies,
        reload_urls: flags.reload_urls.iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect(),
        reload_token: data_plane.reload_token.clone(),
        health_policy: AddressPolicy { allow_private: data_plane.health_allow_private },
        trusted_proxies,
        otp,
        cors_origins,
        ..ApiSettings::default()
    };
    let ready_store = Arc::clone(&store);
    telemetry.readiness_check("store", move || {
        let store = Arc::clone(&ready_store);
        async move { store.ping().await.map_err(|e| e.to_string()) }
    });
    let state = Arc::new(ApiState::new(store, analytics, settings));
    Ok(traffoflex_api::router(state).merge(telemetry.router()))
}

/// Login by e-mail code as the flags set it; an error when `--otp-login smtp` lacks or mistypes its settings.
fn otp_settings(flags: &ApiFlags) -> anyhow::Result<Option<OtpSettings>> {
    if flags.otp_login != OtpLogin::Smtp && (flags.smtp_url.is_some() || flags.smtp_from.is_some()) {
        tracing::warn!("--smtp-url and --smtp-from are used only with --otp-login smtp: ignored");
    }
    let delivery: Arc<dyn CodeDelivery> = match flags.otp_login {
        OtpLogin::Off => return Ok(None),
        OtpLogin::Smtp => {
            const URL: &str = "--smtp-url (TRAFFOFLEX_SMTP_URL, e.g. smtp://user:password@mail.example.com:587)";
            const FROM: &str = "--smtp-from (TRAFFOFLEX_SMTP_FROM, e.g. no-reply@example.com)";
            let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
            let (url, from) = match (given(&flags.smtp_url), given(&flags.smtp_from)) {
                (Some(url), Some(from)) => (url, from),
                (None, None) => {
                    anyhow::bail!("--otp-login smtp needs the SMTP server and the sender: set {URL} and {FROM}")
                }
                (None, Some(_)) => anyhow::bail!("--otp-login smtp needs the SMTP server: set {URL}"),
                (Some(_), None) => anyhow::bail!("--otp-login smtp needs the sender of its e-mails: set {FROM}"),
            };
            let smtp = SmtpDelivery::new(&url, &from).map_err(|e| match e {
                SmtpSettingsError::Url(m) => anyhow::anyhow!("--smtp-url (TRAFFOFLEX_SMTP_URL): {m}"),
                SmtpSettingsError::From(m) => anyhow::anyhow!("--smtp-from (TRAFFOFLEX_SMTP_FROM): {m}"),
            })?;
            let (server, tls, from) = (smtp.server(), smtp.tls().as_str(), smtp.from());
            tracing::info!(server, tls, %from, "login codes are e-mailed");
            Arc::new(smtp)
        }
        OtpLogin::Log => {
            tracing::warn!("login codes are written to the log (--otp-login log): for development only");
            Arc::new(LogDelivery)
        }
    };
    Ok(Some(OtpSettings {
        ttl: Duration::from_secs(flags.otp_ttl_seconds.clamp(30, 3600)),
        ..OtpSettings::new(delivery)
    }))
}

/// The settings the API shares with the data-plane roles (`up` takes them from its click settings).
#[derive(Debug, Clone, Default)]
pub struct DataPlaneFlags {
    pub reload_token: Option<String>,
    pub health_allow_private: bool,
    pub trusted_proxies: String,
}

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let b = &args.backends;
    let store = traffoflex_core::store::open(b).await.context("opening the configuration store")?;
    traffoflex_api::auth::ensure_default_team(store.as_ref()).await.context("preparing the configuration store")?;
    args.admin.apply(store.as_ref()).await?;
    let analytics = open_analytics(b).await.context("opening analytics")?;
    let telemetry = Telemetry::new();
    let shared = DataPlaneFlags {
        reload_token: args.reload_token.clone(),
        health_allow_private: args.health_allow_private,
        trusted_proxies: args.trusted_proxies.clone(),
    };
    let app = build(&args.api, &shared, store, analytics, &telemetry)?;
    crate::serve::serve(args.listen, app, crate::shutdown::on_signal()).await
}
