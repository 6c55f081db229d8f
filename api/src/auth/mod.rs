//! Who is calling: sessions (cookie + CSRF token) and bearer API tokens, users, roles and teams.
//!
//! - A session is a random token in the `tf_session` cookie (HttpOnly, SameSite=Strict, `Secure` when
//!   configured); the store keeps its SHA-256, its user, its CSRF token and when it expires. A write (any
//!   method but GET/HEAD/OPTIONS) authenticated by the cookie must send the CSRF token in `X-CSRF-Token`.
//! - An API token (`Authorization: Bearer tfx_…`) is stored as its SHA-256 only; it acts with its user's
//!   current role, needs no CSRF token (browsers do not send it by themselves), and may expire.
//! - Every request re-reads the user: a user rejected or demoted after logging in loses access at once.

pub mod limiter;
pub mod otp;
pub mod secrets;
pub mod smtp;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use traffoflex_core::store::{Collection, ConfigStore, ConfigStoreExt, Filter, StoreError};

use crate::ApiState;
use crate::error::{ApiError, ApiResult};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "tf_session";
/// The header carrying the CSRF token on cookie-authenticated writes.
pub const CSRF_HEADER: &str = "x-csrf-token";
pub use traffoflex_crds::DEFAULT_TEAM;

/// What a user may do. Ordered: an admin can do what a manager can, a manager what a viewer can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Reads objects, reports and logs.
    Viewer,
    /// And writes objects, runs health checks, reloads caches.
    Manager,
    /// And approves, rejects and manages users and teams.
    Admin,
}

/// Where a user's account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UserStatus {
    /// Registered, waiting for an admin: cannot log in.
    Pending,
    Approved,
    /// Refused by an admin: cannot log in.
    Rejected,
}

/// A user as stored (the password hash never leaves the API).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub id: String,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub status: UserStatus,
    pub role: Role,
    pub team_id: String,
    #[serde(default)]
    pub failed_logins: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<DateTime<Utc>>,
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    pub email: String,
    pub name: String,
    pub status: UserStatus,
    pub role: Role,
    pub team_id: String,
}

impl From<&UserRecord> for User {
    fn from(u: &UserRecord) -> Self {
        Self {
            id: u.id.clone(),
            version: u.version,
            created_at: u.created_at.clone(),
            updated_at: u.updated_at.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            status: u.status,
            role: u.role,
            team_id: u.team_id.clone(),
        }
    }
}

/// How the caller authenticated.
#[derive(Debug, Clone)]
pub enum Credential {
    Session { id: String },
    Token { id: String },
}

/// An authenticated, approved caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: UserRecord,
    pub credential: Credential,
}

impl Principal {
    /// `Ok` when the caller's role is at least `role`, else 403.
    pub fn require(&self, role: Role) -> ApiResult<()> {
        if self.user.role >= role {
            Ok(())
        } else {
            let what = match role {
                Role::Admin => "an admin",
                Role::Manager => "a manager or an admin",
                Role::Viewer => "a user",
            };
            Err(ApiError::forbidden("forbidden", format!("only {what} may do this")))
        }
    }

    pub fn team(&self) -> &str {
        &self.user.team_id
    }
}

/// The cookie value named `name` in the request, if any.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        line.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    })
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn expired(doc: &Value, now: DateTime<Utc>) -> bool {
    doc.get("expiresAt")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|t| t <= now)
}

/// Loads the user behind a credential and checks they may act.
async fn approved_user(store: &dyn ConfigStore, user_id: &str) -> ApiResult<UserRecord> {
    let user: UserRecord = store
        .get_as(Collection::Users, user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account behind this credential no longer exists"))?;
    match user.status {
        UserStatus::Approved => Ok(user),
        UserStatus::Pending => {
            Err(ApiError::forbidden("notApproved", "this account is waiting for an admin's approval"))
        }
        UserStatus::Rejected => Err(ApiError::forbidden("rejected", "this account was rejected by an admin")),
    }
}

impl FromRequestParts<Arc<ApiState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ApiState>) -> Result<Self, Self::Rejection> {
        let store = state.store.as_ref();
        let now = Utc::now();
        if let Some(token) = bearer(parts) {
            let doc = store
                .find_one(Collection::ApiTokens, &Filter::all().eq("tokenHash", secrets::token_hash(token)))
                .await?
                .ok_or_else(|| ApiError::unauthorized("unknown or revoked API token"))?;
            if expired(&doc, now) {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "tokenExpired",
                    "this API token has expired",
                ));
            }
            let user_id = doc.get("userId").and_then(Value::as_str).unwrap_or_default();
            let user = approved_user(store, user_id).await?;
            let id = doc.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
            return Ok(Principal { user, credential: Credential::Token { id } });
        }
        let Some(token) = cookie(parts, SESSION_COOKIE) else {
            return Err(ApiError::unauthorized("log in first (POST /api/v1/auth/login) or send a bearer API token"));
        };
        let doc = store
            .find_one(Collection::Sessions, &Filter::all().eq("tokenHash", secrets::token_hash(token)))
            .await?
            .ok_or_else(|| ApiError::unauthorized("this session is unknown or was logged out; log in again"))?;
        let id = doc.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        if expired(&doc, now) {
            // Best effort: the expired session is of no use to anyone.
            let _ = store.delete(Collection::Sessions, &id, None).await;
            return Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "sessionExpired",
                "this session has expired; log in again",
            ));
        }
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            let expected = doc.get("csrfToken").and_then(Value::as_str).unwrap_or_default();
            let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if expected.is_empty() || !secrets::same_secret(expected, sent) {
                return Err(ApiError::forbidden(
                    "csrf",
                    "a write with a session cookie needs the X-CSRF-Token header the login answered",
                ));
            }
        }
        let user_id = doc.get("userId").and_then(Value::as_str).unwrap_or_default();
        let user = approved_user(store, user_id).await?;
        Ok(Principal { user, credential: Credential::Session { id } })
    }
}

/// Normalises an e-mail address for lookups: trimmed, lowercase.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A plausible e-mail address: one `@`, something on both sides, a dot in the domain, no spaces.
pub fn plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email.chars().any(char::is_whitespace)
        && email.len() <= 254
}

/// Makes sure the default team exists.
pub async fn ensure_default_team(store: &dyn ConfigStore) -> Result<(), StoreError> {
    if store.get(Collection::Teams, DEFAULT_TEAM).await?.is_some() {
        return Ok(());
    }
    match store.insert(Collection::Teams, json!({"id": DEFAULT_TEAM, "name": "Default"})).await {
        Ok(_) | Err(StoreError::Duplicate { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates an approved admin in the default team when the store has no user yet. Returns whether it did.
///
/// Every role calls this at start with `TRAFFOFLEX_ADMIN_EMAIL` / `TRAFFOFLEX_ADMIN_PASSWORD`; two processes
/// racing both see an empty store, and the unique e-mail index lets only one insert win.
pub async fn bootstrap_admin(store: &dyn ConfigStore, email: &str, password: &str) -> anyhow::Result<bool> {
    ensure_default_team(store).await?;
    if store.count(Collection::Users, &Filter::all()).await? > 0 {
        return Ok(false);
    }
    let email = normalise_email(email);
    anyhow::ensure!(plausible_email(&email), "the bootstrap admin's e-mail `{email}` is not an e-mail address");
    let chars = password.chars().count();
    anyhow::ensure!(
        (secrets::MIN_PASSWORD..=secrets::MAX_PASSWORD).contains(&chars),
        "the bootstrap admin's password must have {} to {} characters",
        secrets::MIN_PASSWORD,
        secrets::MAX_PASSWORD
    );
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || secrets::hash_password(&password)).await?;
    let doc = json!({
        "email": email, "name": "Administrator", "passwordHash": hash, "status": "approved",
        "role": "admin", "teamId": DEFAULT_TEAM, "failedLogins": 0
    });
    match store.insert(Collection::Users, doc).await {
        Ok(_) => Ok(true),
        Err(StoreError::Duplicate { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin > Role::Manager && Role::Manager > Role::Viewer);
        assert_eq!(serde_json::to_value(Role::Manager).unwrap(), json!("manager"));
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@example.org"] {
            assert!(plausible_email(ok), "{ok}");
        }
        for bad in ["", "a", "a@b", "@b.co", "a@.co", "a@b.", "a b@c.de", "a@b@c.de"] {
            assert!(!plausible_email(bad), "{bad}");
        }
        assert_eq!(normalise_email("  Ann@Example.ORG "), "ann@example.org");
    }
}
