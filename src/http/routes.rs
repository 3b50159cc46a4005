//! The router: every route of the API, its role rule, and the JSON fallbacks for unknown
//! paths and wrong methods.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;

use super::{ApiError, AppState, MAX_BODY_BYTES, admin, audit, me, verify};

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
            axum::routing::patch(admin::patch_user).delete(admin::deactivate_user),
        )
        .route(
            "/v1/admin/users/{id}/tokens",
            post(admin::create_user_token).get(admin::list_user_tokens),
        )
        .route("/v1/admin/tokens/{id}", delete(admin::revoke_token))
        .route("/v1/me", get(me::me))
        .route(
            "/v1/me/tokens",
            get(me::list_my_tokens).post(me::create_my_token),
        )
        .route("/v1/me/tokens/{id}", delete(me::revoke_my_token))
        .route("/v1/verify", post(verify::verify))
        .route("/v1/audit/events", get(audit::events))
        .route("/v1/audit/api-keys/{id}/history", get(audit::key_history))
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
    if state.ledger.is_available() {
        let size = state.ledger.checkpoint().checkpoint.size;
        axum::Json(json!({"status": "ready", "size": size})).into_response()
    } else {
        ApiError::unavailable().into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let ledger = &state.ledger;
    let now = ledger.clock().now();
    let mut out = String::with_capacity(2048);
    let checkpoint = ledger.checkpoint();
    out.push_str("# HELP keyledger_log_entries Entries covered by the latest checkpoint.\n");
    out.push_str("# TYPE keyledger_log_entries gauge\n");
    out.push_str(&format!(
        "keyledger_log_entries {}\n",
        checkpoint.checkpoint.size
    ));
    out.push_str("# HELP keyledger_writer_available 1 while the ledger can commit.\n");
    out.push_str("# TYPE keyledger_writer_available gauge\n");
    out.push_str(&format!(
        "keyledger_writer_available {}\n",
        u8::from(ledger.is_available())
    ));
    let (keys, users, tokens) = ledger.read(|s| {
        let mut keys = std::collections::BTreeMap::<&str, u64>::new();
        for k in s.api_keys.values() {
            *keys.entry(k.status(now).as_str()).or_default() += 1;
        }
        let mut users = std::collections::BTreeMap::<&str, u64>::new();
        for u in s.users.values() {
            *users.entry(u.status.as_str()).or_default() += 1;
        }
        let mut tokens = std::collections::BTreeMap::<&str, u64>::new();
        for p in s.pats.values() {
            *tokens.entry(p.status(now).as_str()).or_default() += 1;
        }
        (keys, users, tokens)
    });
    for (name, help, counts) in [
        ("keyledger_api_keys", "API keys by status.", keys),
        ("keyledger_users", "Users by status.", users),
        (
            "keyledger_tokens",
            "Personal access tokens by status.",
            tokens,
        ),
    ] {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (status, count) in counts {
            out.push_str(&format!("{name}{{status=\"{status}\"}} {count}\n"));
        }
    }
    ledger.metrics().render(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
