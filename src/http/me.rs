//! `/v1/me`: who the caller is, and a user's own personal access tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

use super::admin::{
    CreateTokenBody, ListQuery, actor, issue_token, list_tokens_of, token_response,
};
use super::auth::{AnyRole, Caller};
use super::extract::{AppPath, AppQuery};
use super::{ApiError, AppJson, AppState};
use crate::access::PrincipalKind;
use crate::crypto::secret::SecretKind;
use crate::domain::Command;

pub async fn me(caller: Caller<AnyRole>) -> Response {
    let p = &caller.principal;
    let principal = match p.kind {
        PrincipalKind::ServiceAccount => json!({
            "kind": "service_account", "id": p.id, "name": p.name, "role": p.role,
        }),
        PrincipalKind::User => json!({
            "kind": "user", "id": p.id, "email": p.name, "role": p.role,
        }),
    };
    let credential = json!({
        "kind": match p.credential_kind { SecretKind::ApiKey => "api_key", SecretKind::Pat => "pat" },
        "id": p.credential_id,
        "display": p.credential_display,
        "expires_at": p.credential_expires_at,
    });
    axum::Json(json!({"principal": principal, "credential": credential})).into_response()
}

pub async fn list_my_tokens(
    State(state): State<AppState>,
    caller: Caller<AnyRole>,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_tokens_of(&state, caller.user_id()?, &query)
}

pub async fn get_my_token(
    State(state): State<AppState>,
    caller: Caller<AnyRole>,
    AppPath(token_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    let user_id = caller.user_id()?;
    token_response(&state, token_id, Some(user_id))
}

pub async fn create_my_token(
    State(state): State<AppState>,
    caller: Caller<AnyRole>,
    AppJson(body): AppJson<CreateTokenBody>,
) -> Result<Response, ApiError> {
    let user_id = caller.user_id()?;
    issue_token(&state, &caller.principal, user_id, body).await
}

pub async fn revoke_my_token(
    State(state): State<AppState>,
    caller: Caller<AnyRole>,
    AppPath(token_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    let user_id = caller.user_id()?;
    let command = Command::RevokePat {
        token_id,
        owner: Some(user_id),
    };
    state
        .ledger
        .execute(command, actor(&caller.principal))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
