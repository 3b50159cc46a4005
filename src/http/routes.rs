//! The router: every route of the API, its role rule, and the JSON fallbacks for unknown
//! paths and wrong methods.

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::json;

use super::{ApiError, AppState, MAX_BODY_BYTES};
use crate::access::{self, Principal, VerifyCode};
use crate::domain::Role;

/// Builds the whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/audit/public-key", get(public_key))
        .route("/v1/audit/checkpoint", get(checkpoint))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// An authenticated caller. Extracting it checks the bearer credential.
pub struct Caller(pub Principal);

impl Caller {
    /// Refuses with 403 unless the caller holds one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<&Principal, ApiError> {
        if roles.contains(&self.0.role) {
            Ok(&self.0)
        } else {
            Err(ApiError::forbidden())
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("send a credential as Authorization: Bearer <secret>")
        })?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be Bearer <secret>")
            })?;
        let now = state.ledger.clock().now();
        let outcome = state.ledger.read(|s| access::authenticate(s, secret, now));
        outcome.map(Caller).map_err(|code| {
            let message = match code {
                VerifyCode::Malformed => "the credential is not a keyledger secret",
                VerifyCode::NotFound => "the credential is not known",
                VerifyCode::Disabled => "the credential is disabled",
                VerifyCode::Expired => "the credential has expired",
                VerifyCode::Revoked | VerifyCode::Valid | VerifyCode::Forbidden => {
                    "the credential has been revoked"
                }
            };
            ApiError::unauthorized(message)
        })
    }
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ledger.is_available() {
        let size = state.ledger.checkpoint().checkpoint.size;
        axum::Json(json!({"status": "ready", "size": size})).into_response()
    } else {
        ApiError::unavailable().into_response()
    }
}

async fn public_key(State(state): State<AppState>) -> Response {
    let ledger = &state.ledger;
    axum::Json(json!({
        "origin": ledger.origin(),
        "vkey": ledger.vkey(),
        "public_key": base64::engine::general_purpose::STANDARD.encode(ledger.public_key()),
    }))
    .into_response()
}

async fn checkpoint(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Auditor])?;
    let note = state.ledger.checkpoint().note.clone();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}
