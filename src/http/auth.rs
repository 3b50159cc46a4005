//! Authentication and the role rule of each route, as extractors.
//!
//! A handler states who may call it in its signature — `Caller<AdminOnly>`,
//! `Caller<AuditReader>`, `Caller<AnyRole>` — so the rule sits next to the code it guards
//! and the authorization matrix test can check every route against it. Extraction also
//! counts the request in the credential's activity with its outcome (`VALID`, `FORBIDDEN`,
//! or why the credential was refused).

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};

use super::failures::Surface;
use super::observe::RequestContext;
use super::{ApiError, AppState};
use crate::access::{self, Principal, PrincipalKind, VerifyCode};
use crate::domain::Role;

/// Which roles a route admits.
pub trait RoleRule: Send + Sync + 'static {
    /// The admitted roles.
    const ROLES: &'static [Role];
}

/// Admin only: every `/v1/admin` route.
pub struct AdminOnly;
impl RoleRule for AdminOnly {
    const ROLES: &'static [Role] = &[Role::Admin];
}

/// Admin or auditor: the audit routes.
pub struct AuditReader;
impl RoleRule for AuditReader {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Auditor];
}

/// Any valid credential: `/v1/me` and a user's own tokens.
pub struct AnyRole;
impl RoleRule for AnyRole {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Basic, Role::Limited, Role::Auditor];
}

/// An authenticated caller whose role passed rule `R`.
pub struct Caller<R: RoleRule> {
    pub principal: Principal,
    rule: PhantomData<R>,
}

impl<R: RoleRule> Caller<R> {
    /// The caller's user id; 403 for service accounts (they hold no personal tokens).
    pub fn user_id(&self) -> Result<uuid::Uuid, ApiError> {
        match self.principal.kind {
            PrincipalKind::User => Ok(self.principal.id),
            PrincipalKind::ServiceAccount => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "users_only",
                "only users hold personal access tokens; API keys have none",
            )),
        }
    }
}

impl<R: RoleRule> FromRequestParts<AppState> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let client = state.config.trusted_proxies.client_of(parts);
        let presented = parts.headers.contains_key(header::AUTHORIZATION);
        let limited = |wait| {
            state
                .ledger
                .metrics()
                .count_rate_limited(Surface::Api.as_str());
            ApiError::rate_limited(wait)
        };
        if presented {
            if let Some(wait) = state.failures.refused(client) {
                return Err(limited(wait));
            }
        }
        let secret = match bearer(&parts.headers) {
            Ok(secret) => secret,
            // A credential sent but unreadable is a failed attempt; none at all is not.
            Err(error) => match presented.then(|| state.failures.failed(client)).flatten() {
                Some(wait) => return Err(limited(wait)),
                None => return Err(error),
            },
        };
        // A node that cannot confirm it is current must not let a credential revoked
        // elsewhere in: it refuses rather than authenticate from a stale state.
        if !state.ledger.is_current() {
            return Err(ApiError::ledger_unavailable());
        }
        let now = state.ledger.clock().now();
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or("(unmatched)", MatchedPath::as_str);
        let method = parts.method.as_str();
        let context = parts.extensions.get::<RequestContext>();
        match state.ledger.read(|s| access::authenticate(s, secret, now)) {
            Ok(principal) => {
                if let Some(context) = context {
                    context.set_principal(principal.id);
                }
                let allowed = R::ROLES.contains(&principal.role);
                let outcome = if allowed {
                    VerifyCode::Valid
                } else {
                    VerifyCode::Forbidden
                };
                state.activity.record(
                    principal.credential_id,
                    principal.id,
                    method,
                    route,
                    outcome,
                    now,
                );
                if allowed {
                    Ok(Caller {
                        principal,
                        rule: PhantomData,
                    })
                } else {
                    Err(ApiError::forbidden())
                }
            }
            Err(refusal) => {
                // A guess (a credential that is no live one's): the one that goes over the
                // limit is already answered 429.
                if matches!(refusal.code, VerifyCode::Malformed | VerifyCode::NotFound) {
                    if let Some(wait) = state.failures.failed(client) {
                        return Err(limited(wait));
                    }
                }
                if let Some((credential, principal)) = refusal.credential {
                    if let Some(context) = context {
                        context.set_principal(principal);
                    }
                    state
                        .activity
                        .record(credential, principal, method, route, refusal.code, now);
                }
                Err(ApiError::invalid_token(refusal_message(refusal.code)))
            }
        }
    }
}

/// The human sentence for a refused credential; says why, never what was sent.
pub fn refusal_message(code: VerifyCode) -> &'static str {
    match code {
        VerifyCode::Malformed => "the credential is not a keyledger secret",
        VerifyCode::NotFound => "the credential is not known",
        VerifyCode::Disabled => "the credential is disabled",
        VerifyCode::Expired => "the credential has expired",
        VerifyCode::Revoked => "the credential has been revoked",
        VerifyCode::RateLimited => "too many failed authentications from this address",
        VerifyCode::Valid | VerifyCode::Forbidden => "the credential was refused",
    }
}

pub(super) fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("send a credential as Authorization: Bearer <secret>")
    })?;
    let text = value.to_str().map_err(|_| {
        ApiError::invalid_authorization("the Authorization header must be Bearer <secret>")
    })?;
    let (scheme, secret) = text.split_once(' ').ok_or_else(|| {
        ApiError::invalid_authorization("the Authorization header must be Bearer <secret>")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthorized(
            "the Authorization header must be Bearer <secret>",
        ));
    }
    Ok(secret.trim())
}

/// The version an `If-Match` header asks for: `None` without the header or for `*`.
///
/// Takes the resource's `version` in quotes (`"3"`) or a whole `ETag` as served
/// (`"3.9f86d081884c7d65"`, see [`super::conditional`]), whose version part is what is
/// compared: `If-Match` guards the resource's lifecycle, so a change in `last_used_at`
/// alone never makes a conditional change fail.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid_if_match",
            "If-Match must be a version in quotes, e.g. If-Match: \"3\"",
        )
    };
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(bad)?;
    let inner = match inner.split_once('.') {
        Some((version, digest))
            if !digest.is_empty() && digest.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            version
        }
        Some(_) => return Err(bad()),
        None => inner,
    };
    if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    inner.parse().map(Some).map_err(|_| bad())
}

/// The `ETag` header value of a version.
pub fn etag(version: u64) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}
