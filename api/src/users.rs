//! `/auth/*`, `/users`, `/teams`: registration, login, sessions, API tokens, approval and roles.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{Duration as ChronoDuration, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use traffoflex_core::store::{Collection, ConfigStoreExt, Filter, Query, StoreError};

use crate::auth::secrets::{self, API_TOKEN_PREFIX, MAX_PASSWORD, MIN_PASSWORD};
use crate::auth::{
    Credential, DEFAULT_TEAM, Principal, Role, SESSION_COOKIE, User, UserRecord, UserStatus, normalise_email,
    plausible_email,
};
use crate::error::{ApiError, ApiResult};
use crate::objects::{JsonBody, RawJson, audit, parse_json};
use crate::{ApiState, ClientIp};

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
        .route("/auth/otp/request", post(crate::login_code::request))
        .route("/auth/otp/verify", post(crate::login_code::verify))
        .route("/auth/tokens", post(create_token).get(list_tokens))
        .route("/auth/tokens/{id}", delete(delete_token))
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user))
        .route("/users/{id}/approve", post(approve))
        .route("/users/{id}/reject", post(reject))
        .route("/teams", get(list_teams).post(create_team))
}

/// `POST /auth/register`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub email: String,
    /// 10 to 256 characters.
    pub password: String,
    pub name: String,
}

/// `POST /auth/login`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// A successful login: send `csrfToken` back as `X-CSRF-Token` on every write made with the session cookie.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    pub csrf_token: String,
    pub user: User,
    /// When the session ends (RFC 3339).
    pub expires_at: String,
}

/// `GET /auth/me`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeResponse {
    pub user: User,
    /// `session` or `token`.
    pub authenticated_by: String,
}

/// `POST /auth/tokens`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    /// What the token is for, e.g. `ci-deploy`.
    pub name: String,
    /// Days until it expires (1–3650); never, when absent.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// An API token as listed (the secret itself is shown once, when created).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub created_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A new API token: `token` is shown this once; send it as `Authorization: Bearer <token>`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewApiToken {
    #[serde(flatten)]
    pub info: ApiToken,
    pub token: String,
}

/// `POST /users/{id}/approve`: optionally the role and team the user gets (default viewer, default team).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApproveRequest {
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub team_id: Option<String>,
}

/// A team: objects and users belong to one.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

/// `POST /teams`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct TeamRequest {
    pub name: String,
}

/// A list of items.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

fn check_password(password: &str) -> ApiResult<()> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(ApiError::invalid_field(
            "password",
            format!("a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ));
    }
    Ok(())
}

async fn hash(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(|e| ApiError::internal(format!("hashing failed: {e}")))
}

async fn verify(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || secrets::verify_password(&password, &stored)).await.unwrap_or(false)
}

pub(crate) fn too_many(wait: u64) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rateLimited", "too many attempts; wait and retry");
    e.retry_after = Some(wait);
    e
}

async fn register(
    State(state): State<Arc<ApiState>>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<User>)> {
    state.limiter.attempt(ip).map_err(too_many)?;
    let email = normalise_email(&body.email);
    if !plausible_email(&email) {
        return Err(ApiError::invalid_field("email", "not an e-mail address"));
    }
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid_field("name", "a name has 1 to 200 characters"));
    }
    check_password(&body.password)?;
    let doc = json!({
        "email": email, "name": name, "passwordHash": hash(body.password).await?,
        "status": "pending", "role": "viewer", "teamId": DEFAULT_TEAM, "failedLogins": 0
    });
    let stored: UserRecord = state.store.insert_as(Collection::Users, &doc).await.map_err(|e| match e {
        StoreError::Duplicate { .. } => ApiError::conflict("duplicate", "an account with this e-mail already exists"),
        other => other.into(),
    })?;
    Ok((StatusCode::CREATED, Json(User::from(&stored))))
}

fn session_cookie(state: &ApiState, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.settings.secure_cookies { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("tf_session=; Max-Age=0"))
}

/// Records a failed password on the account (best effort, compare-and-swap: a concurrent failure may be
/// counted once instead of twice), locking it after too many in a row.
async fn count_failure(state: &ApiState, user: &UserRecord) {
    let mut next = user.clone();
    next.failed_logins += 1;
    if next.failed_logins >= state.settings.lockout_after {
        let until = Utc::now() + ChronoDuration::from_std(state.settings.lockout_for).unwrap_or_default();
        next.locked_until = Some(until);
        next.failed_logins = 0;
        tracing::warn!(user = %user.id, "account locked after repeated failed logins");
    }
    if let Err(e) = state.store.replace_as::<_, Value>(Collection::Users, &user.id, Some(user.version), &next).await {
        tracing::debug!(error = %e, "failed login not counted");
    }
}

async fn login(
    State(state): State<Arc<ApiState>>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<LoginRequest>,
) -> ApiResult<Response> {
    state.limiter.attempt(ip).map_err(too_many)?;
    let email = normalise_email(&body.email);
    let found: Option<UserRecord> = state
        .store
        .find_as(Collection::Users, &Query::filtered(Filter::all().eq("email", email)).limit(1))
        .await?
        .into_iter()
        .next();
    let wrong = || ApiError::unauthorized("wrong e-mail or password");
    let Some(user) = found else {
        // As slow as a real check, so timing does not tell which e-mails have accounts.
        verify(body.password, secrets::dummy_hash().to_owned()).await;
        return Err(wrong());
    };
    check_may_log_in(&user)?;
    if !verify(body.password, user.password_hash.clone()).await {
        count_failure(&state, &user).await;
        return Err(wrong());
    }
    check_status(&user)?;
    open_session(&state, user).await
}

/// 429 while the account is locked after repeated failed logins.
pub(crate) fn check_may_log_in(user: &UserRecord) -> ApiResult<()> {
    let now = Utc::now();
    if let Some(until) = user.locked_until.filter(|t| *t > now) {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "locked",
            "this account is locked after repeated failed logins; try again later",
        );
        e.retry_after = Some(u64::try_from((until - now).num_seconds()).unwrap_or(1).max(1));
        return Err(e);
    }
    Ok(())
}

/// 403 unless an admin approved the account.
pub(crate) fn check_status(user: &UserRecord) -> ApiResult<()> {
    match user.status {
        UserStatus::Approved => Ok(()),
        UserStatus::Pending => {
            Err(ApiError::forbidden("notApproved", "this account is waiting for an admin's approval"))
        }
        UserStatus::Rejected => Err(ApiError::forbidden("rejected", "this account was rejected by an admin")),
    }
}

/// Starts a session for an approved `user` who proved who they are: the session cookie and
/// [`LoginResponse`]. Clears the count of failed logins.
pub(crate) async fn open_session(state: &ApiState, mut user: UserRecord) -> ApiResult<Response> {
    let now = Utc::now();
    if user.failed_logins > 0 || user.locked_until.is_some() {
        user.failed_logins = 0;
        user.locked_until = None;
        if let Ok(stored) = state.store.replace_as(Collection::Users, &user.id, Some(user.version), &user).await {
            user = stored;
        }
    }
    let token = secrets::random_token();
    let csrf = secrets::random_token();
    let ttl = ChronoDuration::from_std(state.settings.session_ttl).unwrap_or_else(|_| ChronoDuration::hours(12));
    let expires_at = (now + ttl).to_rfc3339_opts(SecondsFormat::Millis, true);
    let session = json!({
        "tokenHash": secrets::token_hash(&token), "userId": user.id, "csrfToken": csrf, "expiresAt": expires_at,
    });
    state.store.insert(Collection::Sessions, session).await?;
    let body = LoginResponse { csrf_token: csrf, user: User::from(&user), expires_at };
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie(state, &token, ttl.num_seconds()));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn logout(State(state): State<Arc<ApiState>>, principal: Principal) -> ApiResult<Response> {
    if let Credential::Session { id } = &principal.credential {
        match state.store.delete(Collection::Sessions, id, None).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    Ok(response)
}

async fn me(principal: Principal) -> Json<MeResponse> {
    let by = match principal.credential {
        Credential::Session { .. } => "session",
        Credential::Token { .. } => "token",
    };
    Json(MeResponse { user: User::from(&principal.user), authenticated_by: by.to_owned() })
}

async fn create_token(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    JsonBody(body): JsonBody<TokenRequest>,
) -> ApiResult<(StatusCode, Json<NewApiToken>)> {
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid_field("name", "a token name has 1 to 200 characters"));
    }
    let expires_at = match body.expires_in_days {
        None => None,
        Some(days @ 1..=3650) => {
            Some((Utc::now() + ChronoDuration::days(i64::from(days))).to_rfc3339_opts(SecondsFormat::Millis, true))
        }
        Some(_) => return Err(ApiError::invalid_field("expiresInDays", "between 1 and 3650 days")),
    };
    let token = format!("{API_TOKEN_PREFIX}{}", secrets::random_token());
    let doc = json!({
        "name": name, "userId": principal.user.id, "tokenHash": secrets::token_hash(&token), "expiresAt": expires_at,
    });
    let stored: ApiToken = state.store.insert_as(Collection::ApiTokens, &doc).await?;
    audit(&state, &principal, "create", Collection::ApiTokens, &stored.id, 1).await;
    Ok((StatusCode::CREATED, Json(NewApiToken { info: stored, token })))
}

async fn list_tokens(State(state): State<Arc<ApiState>>, principal: Principal) -> ApiResult<Json<Items<ApiToken>>> {
    let query = Query::filtered(Filter::all().eq("userId", principal.user.id.as_str()));
    Ok(Json(Items { items: state.store.find_as(Collection::ApiTokens, &query).await? }))
}

async fn delete_token(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let doc = state.store.get(Collection::ApiTokens, &id).await?;
    let mine = doc.as_ref().and_then(|d| d.get("userId")).and_then(Value::as_str) == Some(principal.user.id.as_str());
    if !mine {
        return Err(ApiError::not_found(format!("you have no API token {id}")));
    }
    state.store.delete(Collection::ApiTokens, &id, None).await?;
    audit(&state, &principal, "delete", Collection::ApiTokens, &id, 0).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_users(State(state): State<Arc<ApiState>>, principal: Principal) -> ApiResult<Json<Items<User>>> {
    principal.require(Role::Admin)?;
    let users: Vec<UserRecord> = state.store.find_as(Collection::Users, &Query::new()).await?;
    Ok(Json(Items { items: users.iter().map(User::from).collect() }))
}

async fn load_user(state: &ApiState, id: &str) -> ApiResult<UserRecord> {
    state.store.get_as(Collection::Users, id).await?.ok_or_else(|| ApiError::not_found(format!("no user {id}")))
}

async fn get_user(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<User>> {
    if principal.user.id != id {
        principal.require(Role::Admin)?;
    }
    Ok(Json(User::from(&load_user(&state, &id).await?)))
}

async fn set_status(
    state: &ApiState,
    principal: &Principal,
    id: &str,
    status: UserStatus,
    approve: ApproveRequest,
) -> ApiResult<User> {
    principal.require(Role::Admin)?;
    if id == principal.user.id {
        return Err(ApiError::conflict("self", "an admin cannot approve or reject their own account"));
    }
    let mut user = load_user(state, id).await?;
    let version = user.version;
    user.status = status;
    if let Some(role) = approve.role {
        user.role = role;
    }
    if let Some(team) = approve.team_id {
        if state.store.get(Collection::Teams, &team).await?.is_none() {
            return Err(ApiError::invalid_field("teamId", format!("no team {team}")));
        }
        user.team_id = team;
    }
    let stored: UserRecord = state.store.replace_as(Collection::Users, id, Some(version), &user).await?;
    if status == UserStatus::Rejected {
        // End the user's sessions and tokens now, not at their next request.
        for coll in [Collection::Sessions, Collection::ApiTokens] {
            for doc in state.store.find(coll, &Query::filtered(Filter::all().eq("userId", id))).await? {
                if let Some(sid) = doc.get("id").and_then(Value::as_str) {
                    let _ = state.store.delete(coll, sid, None).await;
                }
            }
        }
    }
    let action = if status == UserStatus::Approved { "approve" } else { "reject" };
    audit(state, principal, action, Collection::Users, id, stored.version).await;
    Ok(User::from(&stored))
}

async fn approve(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    Path(id): Path<String>,
    RawJson(body): RawJson,
) -> ApiResult<Json<User>> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { ApproveRequest::default() } else { parse_json(&body)? };
    Ok(Json(set_status(&state, &principal, &id, UserStatus::Approved, body).await?))
}

async fn reject(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<User>> {
    Ok(Json(set_status(&state, &principal, &id, UserStatus::Rejected, ApproveRequest::default()).await?))
}

async fn list_teams(State(state): State<Arc<ApiState>>, principal: Principal) -> ApiResult<Json<Items<Team>>> {
    let teams: Vec<Team> = state.store.find_as(Collection::Teams, &Query::new()).await?;
    let visible = if principal.user.role == Role::Admin {
        teams
    } else {
        teams.into_iter().filter(|t| t.id == principal.user.team_id).collect()
    };
    Ok(Json(Items { items: visible }))
}

async fn create_team(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    JsonBody(body): JsonBody<TeamRequest>,
) -> ApiResult<(StatusCode, Json<Team>)> {
    principal.require(Role::Admin)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid_field("name", "a team name has 1 to 200 characters"));
    }
    let team: Team = state.store.insert_as(Collection::Teams, &json!({"name": name})).await?;
    audit(&state, &principal, "create", Collection::Teams, &team.id, 1).await;
    Ok((StatusCode::CREATED, Json(team)))
}
