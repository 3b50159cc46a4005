//! `POST /v1/verify`: may this key call `method path` on the host application?
//!
//! Always 200 for a well-formed request: the answer is in `code`. Every verification of a
//! known credential counts in its activity, keyed by the policy pattern that decided rather
//! than the raw path, so the log grows with rules, not with distinct URLs.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::observe::RequestContext;
use super::{ApiError, AppJson, AppState};
use crate::access::{self, VerifyCode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    key: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

/// Activity label for a host method: the method when it is a plain token, else a fixed
/// placeholder, so junk methods cannot grow the counters.
fn method_label(method: Option<&str>) -> String {
    match method {
        Some(m) if (1..=20).contains(&m.len()) && m.bytes().all(|b| b.is_ascii_alphabetic()) => {
            m.to_ascii_uppercase()
        }
        Some(_) => "(invalid)".to_string(),
        None => "(none)".to_string(),
    }
}

pub async fn verify(
    State(state): State<AppState>,
    context: RequestContext,
    AppJson(body): AppJson<VerifyBody>,
) -> Result<Response, ApiError> {
    let target = match (body.method.as_deref(), body.path.as_deref()) {
        (Some(method), Some(path)) => Some((method, path)),
        (None, None) => None,
        _ => {
            return Err(ApiError::invalid(
                "invalid_target",
                "give both method and path, or neither",
            ));
        }
    };
    // Fail closed: never a possibly stale VALID (SPEC §9, the one exception to "verify
    // always answers 200").
    if !state.ledger.is_current() {
        return Err(ApiError::ledger_unavailable());
    }
    let now = state.ledger.clock().now();
    let outcome = state
        .ledger
        .read(|s| access::authenticate(s, &body.key, now));
    let method = method_label(body.method.as_deref());
    let answer = match outcome {
        Ok(principal) => {
            let (code, route) = match target {
                None => (VerifyCode::Valid, "(none)".to_string()),
                Some((method, path)) => {
                    let decision = state.policy.decide(principal.role, method, path);
                    let code = if decision.allowed {
                        VerifyCode::Valid
                    } else {
                        VerifyCode::Forbidden
                    };
                    (
                        code,
                        decision.pattern.unwrap_or_else(|| "(no rule)".to_string()),
                    )
                }
            };
            context.set_principal(principal.id);
            state.ledger.metrics().count_verify(code);
            state.activity.record(
                principal.credential_id,
                principal.id,
                &method,
                &route,
                code,
                now,
            );
            json!({
                "valid": true,
                "code": code.as_str(),
                "allowed": code == VerifyCode::Valid,
                "principal": {
                    "kind": principal.kind.as_str(),
                    "id": principal.id,
                    "name": principal.name,
                    "role": principal.role,
                    "credential_id": principal.credential_id,
                },
            })
        }
        Err(refusal) => {
            state.ledger.metrics().count_verify(refusal.code);
            if let Some((credential, principal)) = refusal.credential {
                context.set_principal(principal);
                state.activity.record(
                    credential,
                    principal,
                    &method,
                    "(refused)",
                    refusal.code,
                    now,
                );
            }
            json!({
                "valid": false,
                "code": refusal.code.as_str(),
                "allowed": false,
                "principal": Value::Null,
            })
        }
    };
    Ok(axum::Json(answer).into_response())
}
