//! `POST /v1/verify`: may this key call `method path` on the host application? And
//! [`judge`], the one decision behind it and behind the forward-auth endpoints.
//!
//! Always 200 for a well-formed request: the answer is in `code` — except on a node that
//! cannot confirm it is current, which answers 503 rather than a possibly stale `VALID`.
//! Every verification of a known credential counts in its activity, keyed by the policy
//! pattern that decided rather than the raw path, so the log grows with rules, not with
//! distinct URLs.

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::client_addr::Client;
use super::failures::Surface;
use super::observe::RequestContext;
use super::{ApiError, AppJson, AppState};
use crate::access::{self, Principal, VerifyCode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    key: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    /// The address of the client that presented the key, as the host application saw it:
    /// failed verifications are counted against it rather than against the host.
    #[serde(default)]
    client_ip: Option<String>,
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

/// What a verification decided.
pub struct Judgement {
    pub code: VerifyCode,
    /// The credential's principal when the credential is valid (`VALID` or `FORBIDDEN`).
    pub principal: Option<Principal>,
    /// With `RATE_LIMITED`: how long until the client may try again.
    pub retry_after: Option<Duration>,
}

/// Authenticates `secret` and, with a `target` (method and path), applies the policy;
/// counts the answer in the metrics and the credential's activity, and failed guesses
/// (`MALFORMED`, `NOT_FOUND`) against `client`. A client over its failure limit is answered
/// `RATE_LIMITED` before its credential is looked at. The caller checks currency first.
pub fn judge(
    state: &AppState,
    context: &RequestContext,
    surface: Surface,
    client: IpAddr,
    secret: &str,
    target: Option<(&str, &str)>,
) -> Judgement {
    if let Some(wait) = state.failures.refused(client) {
        state.ledger.metrics().count_verify(VerifyCode::RateLimited);
        state.ledger.metrics().count_rate_limited(surface.as_str());
        return Judgement {
            code: VerifyCode::RateLimited,
            principal: None,
            retry_after: Some(wait),
        };
    }
    let now = state.ledger.clock().now();
    let outcome = state.ledger.read(|s| access::authenticate(s, secret, now));
    let method = method_label(target.map(|(m, _)| m));
    match outcome {
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
            Judgement {
                code,
                principal: Some(principal),
                retry_after: None,
            }
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
            // A guess (a credential that is no live one's): the one that goes over the
            // limit is already answered RATE_LIMITED.
            let guess = matches!(refusal.code, VerifyCode::Malformed | VerifyCode::NotFound);
            if let Some(wait) = guess.then(|| state.failures.failed(client)).flatten() {
                state.ledger.metrics().count_rate_limited(surface.as_str());
                return Judgement {
                    code: VerifyCode::RateLimited,
                    principal: None,
                    retry_after: Some(wait),
                };
            }
            Judgement {
                code: refusal.code,
                principal: None,
                retry_after: None,
            }
        }
    }
}

pub async fn verify(
    State(state): State<AppState>,
    context: RequestContext,
    caller: Client,
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
    let client_ip = body
        .client_ip
        .as_deref()
        .map(|raw| {
            raw.trim().parse::<IpAddr>().map_err(|_| {
                ApiError::invalid(
                    "invalid_client_ip",
                    "client_ip must be an IPv4 or IPv6 address",
                )
            })
        })
        .transpose()?;
    // Only a trusted host (`--trusted-proxy`) may name the client it asks for: anyone else
    // could name a fresh address per guess, or a victim's to lock it out.
    let client = match client_ip {
        Some(ip) if caller.peer_trusted => ip,
        _ => caller.ip,
    };
    // Fail closed: never a possibly stale VALID (SPEC §9, the one exception to "verify
    // always answers 200").
    if !state.ledger.is_current() {
        return Err(ApiError::ledger_unavailable());
    }
    let judged = judge(&state, &context, Surface::Verify, client, &body.key, target);
    let principal = match &judged.principal {
        Some(p) => json!({
            "kind": p.kind.as_str(),
            "id": p.id,
            "name": p.name,
            "role": p.role,
            "credential_id": p.credential_id,
        }),
        None => Value::Null,
    };
    let mut answer = json!({
        "valid": judged.principal.is_some(),
        "code": judged.code.as_str(),
        "allowed": judged.code == VerifyCode::Valid,
        "principal": principal,
    });
    if let Some(wait) = judged.retry_after {
        answer["retry_after_ms"] = json!(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
    }
    Ok(axum::Json(answer).into_response())
}
