//! The router: every route of the API, its role rule, and the JSON fallbacks for unknown
//! paths and wrong methods.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::{ApiError, AppState, MAX_BODY_BYTES, admin, audit, forward_auth, me, verify};
use crate::metrics::{Snapshot, StatusCounts};

/// Builds the whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/v1/admin/api-keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route(
            "/v1/admin/api-keys/{id}",
            get(admin::get_key)
                .patch(admin::patch_key)
                .delete(admin::delete_key),
        )
        .route(
            "/v1/admin/api-keys/{id}/regenerate",
            post(admin::regenerate_key),
        )
        .route("/v1/admin/api-keys/{id}/disable", post(admin::disable_key))
        .route("/v1/admin/api-keys/{id}/enable", post(admin::enable_key))
        .route(
            "/v1/admin/users",
            post(admin::register_user).get(admin::list_users),
        )
        .route(
            "/v1/admin/users/{id}",
            get(admin::get_user)
                .patch(admin::patch_user)
                .delete(admin::deactivate_user),
        )
        .route(
            "/v1/admin/users/{id}/tokens",
            post(admin::create_user_token).get(admin::list_user_tokens),
        )
        .route(
            "/v1/admin/tokens/{id}",
            get(admin::get_token).delete(admin::revoke_token),
        )
        .route("/v1/me", get(me::me))
        .route(
            "/v1/me/tokens",
            get(me::list_my_tokens).post(me::create_my_token),
        )
        .route(
            "/v1/me/tokens/{id}",
            get(me::get_my_token).delete(me::revoke_my_token),
        )
        .route("/v1/verify", post(verify::verify))
        .route("/v1/auth/nginx", get(forward_auth::nginx))
        .route("/v1/auth/forward", get(forward_auth::forward))
        // Envoy's ext_authz sends the original request's method.
        .route(
            "/v1/auth/envoy/",
            get(forward_auth::envoy)
                .post(forward_auth::envoy)
                .put(forward_auth::envoy)
                .patch(forward_auth::envoy)
                .delete(forward_auth::envoy)
                .options(forward_auth::envoy),
        )
        .route(
            "/v1/auth/envoy/{*path}",
            get(forward_auth::envoy)
                .post(forward_auth::envoy)
                .put(forward_auth::envoy)
                .patch(forward_auth::envoy)
                .delete(forward_auth::envoy)
                .options(forward_auth::envoy),
        )
        .route("/v1/audit/events", get(audit::events))
        .route("/v1/audit/api-keys/{id}/history", get(audit::key_history))
        .route("/v1/audit/principals/{id}", get(audit::principal))
        .route(
            "/v1/audit/principals/{id}/activity",
            get(audit::principal_activity),
        )
        .route("/v1/audit/export", get(audit::export))
        .route("/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/v1/audit/public-key", get(audit::public_key))
        .route("/v1/audit/proof/inclusion", get(audit::inclusion_proof))
        .route("/v1/audit/proof/consistency", get(audit::consistency_proof))
        .merge(super::ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(super::conditional::conditional))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::observe::observe,
        ))
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

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the server is shutting down; send new requests elsewhere",
        )
        .into_response()
    } else if !state.ledger.is_current() {
        ApiError::ledger_unavailable().into_response()
    } else if state.ledger.is_available() {
        let size = state.ledger.checkpoint().checkpoint.size;
        axum::Json(json!({"status": "ready", "size": size})).into_response()
    } else {
        ApiError::unavailable().into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let ledger = &state.ledger;
    let now = ledger.clock().now();
    let (keys, users, tokens) = ledger.read(|s| {
        let mut keys = std::collections::BTreeMap::<&'static str, u64>::new();
        for k in s.api_keys.values() {
            *keys.entry(k.status(now).as_str()).or_default() += 1;
        }
        let mut users = std::collections::BTreeMap::<&'static str, u64>::new();
        for u in s.users.values() {
            *users.entry(u.status.as_str()).or_default() += 1;
        }
        let mut tokens = std::collections::BTreeMap::<&'static str, u64>::new();
        for p in s.pats.values() {
            *tokens.entry(p.status(now).as_str()).or_default() += 1;
        }
        (keys, users, tokens)
    });
    let snapshot = Snapshot {
        log_entries: ledger.checkpoint().checkpoint.size,
        writer_available: ledger.is_available(),
        draining: state.is_draining(),
        by_status: vec![
            StatusCounts {
                name: "api_keys",
                help: "API keys by status",
                counts: keys.into_iter().collect(),
            },
            StatusCounts {
                name: "users",
                help: "Users by status",
                counts: users.into_iter().collect(),
            },
            StatusCounts {
                name: "tokens",
                help: "Personal access tokens by status",
                counts: tokens.into_iter().collect(),
            },
        ],
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ledger.metrics().render(&snapshot),
    )
        .into_response()
}
