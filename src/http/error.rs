//! The API's one error type and its JSON shape, `{"error":{"code","message"}}`.
//!
//! Every failure of every route, axum's own rejections included, leaves through
//! [`ApiError`]. Internal details are logged, never returned; no message holds a secret.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::DomainError;
use crate::ledger::LedgerError;

/// An error answered as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750 §3).
    pub challenge: Option<&'static str>,
    /// `Retry-After`, in seconds, of a 429.
    pub retry_after: Option<u64>,
}

const CHALLENGE: &str = "Bearer realm=\"keyledger\"";
/// The challenge when the credential sent was refused.
const CHALLENGE_INVALID_TOKEN: &str = "Bearer realm=\"keyledger\", error=\"invalid_token\"";
/// The challenge when the `Authorization` header could not be read.
const CHALLENGE_INVALID_REQUEST: &str = "Bearer realm=\"keyledger\", error=\"invalid_request\"";

impl ApiError {
    /// An error with a status, a snake_case code and a human sentence.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            challenge: None,
            retry_after: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no bearer credential was sent.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            challenge: Some(CHALLENGE),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// 401: the credential sent was refused (unknown, disabled, expired, revoked,
    /// malformed).
    pub fn invalid_token(message: impl Into<String>) -> ApiError {
        ApiError {
            challenge: Some(CHALLENGE_INVALID_TOKEN),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// 401: the `Authorization` header is not a readable `Bearer` credential.
    pub fn invalid_authorization(message: impl Into<String>) -> ApiError {
        ApiError {
            challenge: Some(CHALLENGE_INVALID_REQUEST),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// 403: the credential's role may not do this.
    pub fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your role may not use this endpoint",
        )
    }

    /// 429: the client failed authentication too often; it may try again after `wait`.
    pub fn rate_limited(wait: std::time::Duration) -> ApiError {
        ApiError {
            retry_after: Some(super::failures::retry_after_secs(wait)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                "too many failed authentications from this address; retry later",
            )
        }
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 422: well-formed but invalid values.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 503: the shared store cannot be reached, or this node cannot confirm it is current.
    pub fn ledger_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ledger_unavailable",
            "the ledger cannot confirm it is current (its store is unreachable); nothing was changed, retry shortly",
        )
    }

    /// 503: storage cannot take writes.
    pub fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the ledger's storage is unavailable; nothing was changed",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            if let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        use DomainError as D;
        let message = e.to_string();
        match e {
            D::InvalidName(_) => ApiError::invalid("invalid_name", message),
            D::UnknownRole | D::RoleNotForApiKeys => ApiError::invalid("invalid_role", message),
            D::InvalidEmail | D::UnsafeEmail(_) => ApiError::invalid("invalid_email", message),
            D::InvalidTimestamp => ApiError::invalid("invalid_timestamp", message),
            D::ExpiryInPast => ApiError::invalid("expiry_in_past", message),
            D::GraceTooLong => ApiError::invalid("grace_too_long", message),
            D::InvalidLifetime => ApiError::invalid("invalid_lifetime", message),
            D::NameTaken => ApiError::new(StatusCode::CONFLICT, "name_taken", message),
            D::EmailTaken => ApiError::new(StatusCode::CONFLICT, "email_taken", message),
            D::LastAdmin => ApiError::new(StatusCode::CONFLICT, "last_admin", message),
            D::KeyDeleted => ApiError::new(StatusCode::CONFLICT, "key_deleted", message),
            D::UserDeactivated => ApiError::new(StatusCode::CONFLICT, "user_deactivated", message),
            D::TokenRevoked => ApiError::new(StatusCode::CONFLICT, "token_revoked", message),
            D::AlreadyInitialized => {
                ApiError::new(StatusCode::CONFLICT, "already_initialized", message)
            }
            D::KeyNotFound => ApiError::not_found("api_key_not_found", message),
            D::UserNotFound => ApiError::not_found("user_not_found", message),
            D::TokenNotFound => ApiError::not_found("token_not_found", message),
            D::VersionMismatch { .. } => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, "version_mismatch", message)
            }
            D::NotInitialized => ApiError::unavailable(),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        match e {
            LedgerError::Domain(d) => d.into(),
            LedgerError::Unavailable => ApiError::unavailable(),
            LedgerError::Unreachable => ApiError::ledger_unavailable(),
            LedgerError::Unknown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                "the connection to the store failed while the command was being committed; \
                 read the resource before retrying",
            ),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request(
            "invalid_query",
            format!("bad query parameters: {}", redact(&rejection.body_text())),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> ApiError {
        ApiError::not_found("not_found", "no such resource (ids are UUIDs)")
    }
}

/// Removes what a client sent from a deserialiser's message: quoted values become `"…"`
/// and anything shaped like a keyledger secret becomes `[redacted]`, so a secret pasted into
/// the wrong field is never echoed back or logged.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_quotes = false;
    for ch in message.chars() {
        if ch == '"' {
            if in_quotes {
                out.push_str("\"…\"");
            }
            in_quotes = !in_quotes;
        } else if !in_quotes {
            out.push(ch);
        }
    }
    out.split(' ')
        .map(|word| {
            if word.contains("klk_") || word.contains("klp_") {
                "[redacted]"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_drops_values_and_secrets() {
        let m = r#"name: invalid type: string "klk_abc", expected u64 at line 1"#;
        assert_eq!(
            redact(m),
            r#"name: invalid type: string "…", expected u64 at line 1"#
        );
        assert_eq!(
            redact("unknown field `klk_x`, expected"),
            "unknown field [redacted] expected"
        );
    }
}
