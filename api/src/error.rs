//! Every error the API answers: `{"error":{"code","message","fields"}}` with the right status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;
use traffoflex_core::analytics::AnalyticsError;
use traffoflex_core::store::StoreError;
use traffoflex_crds::FieldError;

/// The body of every error response.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine-readable `code`, a `message` for people, and on 422 the fields.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// The invalid fields (422 only), paths relative to the request body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldErrorDoc>,
}

/// One invalid field.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FieldErrorDoc {
    /// Where, e.g. `destinations[1].weight`.
    pub path: String,
    pub message: String,
}

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<FieldError>,
    /// Seconds a client should wait (429, 503).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), fields: Vec::new(), retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "badRequest", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "notFound", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 422 with the invalid fields.
    pub fn invalid(fields: Vec<FieldError>) -> Self {
        let message = match fields.as_slice() {
            [one] if one.path.is_empty() => one.message.clone(),
            [one] => format!("{}: {}", one.path, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        Self { fields, ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message) }
    }

    /// 422 for one field.
    pub fn invalid_field(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError::new(path, message)])
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { retry_after: Some(5), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message) }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Duplicate { index, .. } => {
                let field = index.split(", ").last().unwrap_or("id").to_owned();
                let mut err = ApiError::conflict("duplicate", e.to_string());
                err.fields = vec![FieldError::new(field, "already taken")];
                err
            }
            StoreError::VersionConflict { .. } => ApiError::conflict(
                "versionConflict",
                format!("{e}; read the object again and retry with its current version"),
            ),
            StoreError::NotFound { .. } => ApiError::not_found(e.to_string()),
            StoreError::Invalid(m) => ApiError::invalid_field("", m.clone()),
            StoreError::Unavailable(_) => ApiError::unavailable(e.to_string()),
            StoreError::Backend(_) => {
                tracing::error!(error = %e, "config store error");
                ApiError::internal("the configuration store failed; see the API's log")
            }
        }
    }
}

impl From<AnalyticsError> for ApiError {
    fn from(e: AnalyticsError) -> Self {
        match e {
            AnalyticsError::Invalid { field, message } => ApiError::invalid_field(field, message),
            other => {
                tracing::error!(error = %other, "analytics error");
                ApiError::unavailable(format!("analytics failed: {other}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                fields: self.fields.into_iter().map(|f| FieldErrorDoc { path: f.path, message: f.message }).collect(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
