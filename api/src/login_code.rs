//! `POST /auth/otp/request` and `POST /auth/otp/verify`: passwordless login by e-mail one-time code, when
//! `ApiSettings::otp` turns it on (see [`crate::auth::otp`] for the codes and how they are kept).
//!
//! A request answers 202 whether or not an approved account has the address, and every address gets the
//! same treatment (one code per validity period, the same limits), so nothing tells which addresses have
//! accounts. A verification that matches answers exactly as `POST /auth/login` does.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{TimeZone, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use traffoflex_core::store::{Collection, ConfigStoreExt, Filter, Query, StoreError};

use crate::auth::otp::{Challenge, OtpSettings, challenge_id, clean_code, new_code};
use crate::auth::{UserRecord, UserStatus, normalise_email, plausible_email};
use crate::error::{ApiError, ApiResult};
use crate::objects::JsonBody;
use crate::users::{check_may_log_in, check_status, open_session, too_many};
use crate::{ApiState, ClientIp};

/// `POST /auth/otp/request`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CodeRequest {
    pub email: String,
}

/// `POST /auth/otp/verify`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CodeVerify {
    pub email: String,
    /// The 6-digit code (spaces are ignored).
    pub code: String,
}

/// The answer to a code request, the same whether or not an account has the address.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CodeRequested {
    /// Always `requested`.
    pub status: String,
    /// How long the code stays valid; no other code is sent to this address meanwhile.
    pub expires_in_seconds: u64,
    pub message: String,
}

fn settings(state: &ApiState) -> ApiResult<&OtpSettings> {
    state.settings.otp.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "notEnabled",
            "login by e-mail code is not enabled on this server (see --otp-login); log in with a password",
        )
    })
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn already_sent(challenge: &Challenge, now: i64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "codeAlreadySent",
        format!(
            "a code was already sent to this address and is valid until {}; use it, or ask for a new one after \
             that (in {} s)",
            rfc3339(challenge.expires_at_ms),
            challenge.seconds_left(now)
        ),
    );
    e.retry_after = Some(challenge.seconds_left(now));
    e
}

async fn approved_account(state: &ApiState, email: &str) -> ApiResult<Option<UserRecord>> {
    let query = Query::filtered(Filter::all().eq("email", email)).limit(1);
    let user: Option<UserRecord> = state.store.find_as(Collection::Users, &query).await?.into_iter().next();
    Ok(user.filter(|u| u.status == UserStatus::Approved))
}

async fn load_challenge(state: &ApiState, email: &str) -> ApiResult<Option<Challenge>> {
    Ok(state.store.get_as(Collection::Meta, &challenge_id(email)).await?)
}

/// Sends a code to `email` if an approved account has it and no code is valid for it yet.
pub(crate) async fn request(
    State(state): State<Arc<ApiState>>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<CodeRequest>,
) -> ApiResult<(StatusCode, Json<CodeRequested>)> {
    let otp = settings(&state)?.clone();
    state.limiter.attempt(ip).map_err(too_many)?;
    let email = normalise_email(&body.email);
    if !plausible_email(&email) {
        return Err(ApiError::invalid_field("email", "not an e-mail address"));
    }
    let now = now_ms();
    let existing = load_challenge(&state, &email).await?;
    if let Some(current) = existing.as_ref().filter(|c| !c.expired(now)) {
        return Err(already_sent(current, now));
    }
    let user = approved_account(&state, &email).await?;
    let code = user.as_ref().map(|_| new_code());
    let ttl_ms = i64::try_from(otp.ttl.as_millis()).unwrap_or(i64::MAX / 2).max(1);
    let challenge = Challenge::new(&email, code.as_deref(), now.saturating_add(ttl_ms));
    let doc = serde_json::to_value(&challenge).map_err(|e| ApiError::internal(format!("cannot serialise: {e}")))?;
    let written = match &existing {
        None => state.store.insert(Collection::Meta, doc).await.map(drop),
        Some(old) => state.store.replace(Collection::Meta, &old.id, Some(old.version), doc).await.map(drop),
    };
    match written {
        Ok(()) => {}
        // Another request for the same address won the race: its code is the valid one.
        Err(StoreError::Duplicate { .. } | StoreError::VersionConflict { .. } | StoreError::NotFound { .. }) => {
            let current = load_challenge(&state, &email).await?.filter(|c| !c.expired(now)).unwrap_or(challenge);
            return Err(already_sent(&current, now));
        }
        Err(e) => return Err(e.into()),
    }
    tokio::spawn(sweep(Arc::clone(&state), now));
    if let Some(code) = code {
        let (delivery, ttl) = (Arc::clone(&otp.delivery), otp.ttl);
        let send = async move {
            if let Err(e) = delivery.deliver(&email, &code, ttl).await {
                tracing::error!(error = %e, "login code not delivered");
            }
        };
        tokio::spawn(send.instrument(tracing::Span::current()));
    }
    let answer = CodeRequested {
        status: "requested".to_owned(),
        expires_in_seconds: otp.ttl.as_secs().max(1),
        message: "if an approved account has this address, a code was sent to it".to_owned(),
    };
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// Challenges swept per code request at most.
const SWEEP: u64 = 20;

/// Deletes challenges that expired (best effort, a few at a time), so addresses asked about once do not stay
/// in the store.
async fn sweep(state: Arc<ApiState>, now: i64) {
    let query = Query::filtered(Filter::all().eq("kind", "loginCode")).sort_asc("expiresAtMs").limit(SWEEP);
    let Ok(found) = state.store.find_as::<Challenge>(Collection::Meta, &query).await else { return };
    for old in found.iter().filter(|c| c.expired(now)) {
        // A conflict means it was just renewed: leave it.
        let _ = state.store.delete(Collection::Meta, &old.id, Some(old.version)).await;
    }
}

fn wrong_code(left: u32) -> ApiError {
    let message = if left == 0 {
        "wrong or expired code; ask for a new one".to_owned()
    } else {
        format!("wrong or expired code ({left} more tries for this code)")
    };
    ApiError::new(StatusCode::UNAUTHORIZED, "invalidCode", message)
}

/// Logs in with a code: the session cookie and `{"csrfToken",…}`, as `POST /auth/login` answers.
pub(crate) async fn verify(
    State(state): State<Arc<ApiState>>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<CodeVerify>,
) -> ApiResult<Response> {
    let otp = settings(&state)?.clone();
    state.limiter.attempt(ip).map_err(too_many)?;
    let email = normalise_email(&body.email);
    if !plausible_email(&email) {
        return Err(ApiError::invalid_field("email", "not an e-mail address"));
    }
    let code = clean_code(&body.code).ok_or_else(|| ApiError::invalid_field("code", "the 6 digits of the code"))?;
    // Count the try before comparing (compare-and-swap), so parallel guesses cannot exceed the limit.
    let mut tries = 0;
    let challenge = loop {
        let now = now_ms();
        let Some(mut challenge) = load_challenge(&state, &email).await?.filter(|c| !c.expired(now)) else {
            return Err(wrong_code(0));
        };
        if challenge.attempts >= otp.max_attempts {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "tooManyAttempts",
                format!(
                    "too many wrong codes; ask for a new code after this one expires (in {} s)",
                    challenge.seconds_left(now)
                ),
            );
            e.retry_after = Some(challenge.seconds_left(now));
            return Err(e);
        }
        let version = challenge.version;
        challenge.attempts += 1;
        match state.store.replace_as::<_, Challenge>(Collection::Meta, &challenge.id, Some(version), &challenge).await {
            Ok(stored) => break stored,
            Err(StoreError::VersionConflict { .. } | StoreError::NotFound { .. }) if tries < 3 => tries += 1,
            Err(StoreError::VersionConflict { .. } | StoreError::NotFound { .. }) => return Err(wrong_code(0)),
            Err(e) => return Err(e.into()),
        }
    };
    if !challenge.matches(&code) {
        return Err(wrong_code(otp.max_attempts.saturating_sub(challenge.attempts)));
    }
    // Used once: whoever deletes it first logs in.
    match state.store.delete(Collection::Meta, &challenge.id, Some(challenge.version)).await {
        Ok(()) => {}
        Err(StoreError::VersionConflict { .. } | StoreError::NotFound { .. }) => return Err(wrong_code(0)),
        Err(e) => return Err(e.into()),
    }
    // The account may have changed since the code was sent.
    let query = Query::filtered(Filter::all().eq("email", email.as_str())).limit(1);
    let user: UserRecord =
        state.store.find_as(Collection::Users, &query).await?.into_iter().next().ok_or_else(|| wrong_code(0))?;
    check_may_log_in(&user)?;
    check_status(&user)?;
    open_session(&state, user).await
}
