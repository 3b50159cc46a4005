//! Forward-auth: the key check put where host applications already check credentials,
//! their reverse proxy. One endpoint per proxy family, because falling back from one
//! header convention to another would let a client supply the headers itself (Ory
//! Oathkeeper's lesson):
//!
//! - `/v1/auth/nginx` — nginx `auth_request`: the original method and URI in
//!   `X-Original-Method` and `X-Original-URI`;
//! - `/v1/auth/forward` — Traefik `ForwardAuth` and Caddy `forward_auth`: `X-Forwarded-Method`,
//!   `X-Forwarded-Uri` (and `X-Forwarded-Host`, `X-Forwarded-Proto`, which the policy does not
//!   use);
//! - `/v1/auth/envoy/<original path>` — Envoy `ext_authz` over HTTP: the original path
//!   after the prefix, the method the request's own.
//!
//! The credential is `Authorization: Bearer <secret>` or, when the server is started with
//! `--api-key-header NAME`, that header (tried first, so that a client may send its own
//! `Authorization` to the upstream). The decision is [`super::verify::judge`]'s, so it is
//! `/v1/verify`'s, and counts the same activity. Every answer carries `Cache-Control:
//! no-store` and `X-Keyledger-Code` (the verify code, or `MISSING`), never the credential:
//! - 200 allow, body `{"allowed": true, "code": "VALID", "principal": …}`, with
//!   `X-Keyledger-Principal-Id`, `-Principal-Kind`, `-Role` and `-Credential-Id` for the proxy
//!   to pass upstream;
//! - 401 for a missing or refused credential, with `WWW-Authenticate: Bearer` (RFC 6750:
//!   `error="invalid_token"` when one was sent and refused, `error="invalid_request"` when
//!   the header is not a bearer credential, no error when none was sent);
//! - 403 for a valid credential the policy refuses;
//! - 429 with `Retry-After` when the client failed too often; 503 from a node that cannot
//!   confirm it is current.
//!
//! Refusals have the API's error shape, `{"error": {"code", "message"}}`: Traefik and Caddy
//! hand the auth service's refusal to the client as it is. nginx only understands 2xx, 401
//! and 403 from an auth subrequest (anything else becomes a 500 for the client), so
//! `/v1/auth/nginx` answers 429 and 503 as 403 and says why in `X-Keyledger-Error`
//! (`too_many_failures`, `ledger_unavailable`), which `auth_request_set` can log.

use std::borrow::Cow;
use std::net::IpAddr;

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::{bearer, refusal_message};
use super::client_addr::Client;
use super::failures::Surface;
use super::observe::RequestContext;
use super::verify::judge;
use super::{ApiError, AppState};
use crate::access::VerifyCode;

/// Which proxy family asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Nginx,
    Forward,
    Envoy,
}

/// The credential of a request: the configured API-key header, else `Authorization:
/// Bearer`.
fn credential<'a>(state: &AppState, headers: &'a HeaderMap) -> Result<&'a str, ApiError> {
    if let Some(name) = &state.config.api_key_header {
        if let Some(value) = headers.get(name) {
            return value.to_str().map(str::trim).map_err(|_| {
                ApiError::invalid_authorization(format!("the {name} header is not readable text"))
            });
        }
    }
    bearer(headers)
}

/// A header's text. A proxy passes the request line's bytes as they came (nginx's
/// `$request_uri`), which may be raw UTF-8 or not UTF-8 at all; bytes that are not UTF-8
/// become U+FFFD, which the policy refuses like any non-ASCII path unless the host is
/// configured to take such paths literally.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<Cow<'a, str>> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-"))
}

const CODE: HeaderName = HeaderName::from_static("x-keyledger-code");
const ERROR: HeaderName = HeaderName::from_static("x-keyledger-error");

/// A refusal in `family`'s terms, with the verify code in `X-Keyledger-Code`.
fn refuse(family: Family, code: &str, error: ApiError) -> Response {
    let narrowed = family == Family::Nginx
        && error.status != StatusCode::UNAUTHORIZED
        && error.status != StatusCode::FORBIDDEN;
    let reason = header_value(error.code);
    let mut response = if narrowed {
        ApiError {
            status: StatusCode::FORBIDDEN,
            ..error
        }
        .into_response()
    } else {
        error.into_response()
    };
    let headers = response.headers_mut();
    if narrowed {
        headers.insert(ERROR, reason);
    }
    headers.insert(CODE, header_value(code));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The decision for `method path`, in `family`'s terms.
fn decide(
    state: &AppState,
    context: &RequestContext,
    family: Family,
    client: IpAddr,
    headers: &HeaderMap,
    method: &str,
    path: Option<&str>,
) -> Response {
    if !state.ledger.is_current() {
        return refuse(family, "LEDGER_UNAVAILABLE", ApiError::ledger_unavailable());
    }
    let Some(path) = path else {
        // The proxy does not say what is asked for: deny, and say why.
        tracing::warn!(
            ?family,
            "forward-auth request without the original URI; check the proxy configuration"
        );
        let error = ApiError::new(
            StatusCode::FORBIDDEN,
            "no_original_uri",
            "the proxy did not send the original request's URI; see examples/ for its configuration",
        );
        return refuse(family, "FORBIDDEN", error);
    };
    let secret = match credential(state, headers) {
        Ok(secret) => secret,
        Err(error) => {
            // A credential sent but unreadable is a failed attempt; none at all is not.
            let sent = headers.contains_key(header::AUTHORIZATION)
                || (state.config.api_key_header.as_ref()).is_some_and(|h| headers.contains_key(h));
            let wait = sent
                .then(|| {
                    let failures = &state.failures;
                    failures.refused(client).or_else(|| failures.failed(client))
                })
                .flatten();
            if let Some(wait) = wait {
                state
                    .ledger
                    .metrics()
                    .count_rate_limited(Surface::ForwardAuth.as_str());
                return refuse(family, "RATE_LIMITED", ApiError::rate_limited(wait));
            }
            let code = if sent { "MALFORMED" } else { "MISSING" };
            return refuse(family, code, error);
        }
    };
    let judged = judge(
        state,
        context,
        Surface::ForwardAuth,
        client,
        secret,
        Some((method, path)),
    );
    let code = judged.code.as_str();
    match (judged.code, judged.principal) {
        (VerifyCode::Valid, Some(p)) => {
            let body = json!({
                "allowed": true,
                "code": code,
                "principal": {
                    "kind": p.kind.as_str(),
                    "id": p.id,
                    "name": p.name,
                    "role": p.role,
                    "credential_id": p.credential_id,
                },
            });
            let mut response = (StatusCode::OK, axum::Json(body)).into_response();
            let headers = response.headers_mut();
            for (name, value) in [
                ("x-keyledger-principal-id", p.id.to_string()),
                ("x-keyledger-principal-kind", p.kind.as_str().to_string()),
                ("x-keyledger-role", p.role.as_str().to_string()),
                ("x-keyledger-credential-id", p.credential_id.to_string()),
            ] {
                headers.insert(HeaderName::from_static(name), header_value(&value));
            }
            headers.insert(CODE, header_value(code));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        (VerifyCode::Valid | VerifyCode::Forbidden, _) => {
            let error = ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the policy does not allow this credential to make this request",
            );
            refuse(family, "FORBIDDEN", error)
        }
        (VerifyCode::RateLimited, _) => {
            let wait = judged.retry_after.unwrap_or_default();
            refuse(family, code, ApiError::rate_limited(wait))
        }
        (refused, _) => refuse(
            family,
            code,
            ApiError::invalid_token(refusal_message(refused)),
        ),
    }
}

/// `GET /v1/auth/nginx` (nginx `auth_request`).
pub async fn nginx(
    State(state): State<AppState>,
    context: RequestContext,
    Client { ip: client, .. }: Client,
    headers: HeaderMap,
) -> Response {
    let method = header_text(&headers, "x-original-method");
    let path = header_text(&headers, "x-original-uri");
    let method = method.as_deref().unwrap_or("GET");
    decide(
        &state,
        &context,
        Family::Nginx,
        client,
        &headers,
        method,
        path.as_deref(),
    )
}

/// `GET /v1/auth/forward` (Traefik `ForwardAuth`, Caddy `forward_auth`).
pub async fn forward(
    State(state): State<AppState>,
    context: RequestContext,
    Client { ip: client, .. }: Client,
    headers: HeaderMap,
) -> Response {
    let method = header_text(&headers, "x-forwarded-method");
    let path = header_text(&headers, "x-forwarded-uri");
    let method = method.as_deref().unwrap_or("GET");
    decide(
        &state,
        &context,
        Family::Forward,
        client,
        &headers,
        method,
        path.as_deref(),
    )
}

/// `/v1/auth/envoy/<original path>` (Envoy `ext_authz`, HTTP service): the original
/// request's method, its path and query after the prefix.
pub async fn envoy(
    State(state): State<AppState>,
    context: RequestContext,
    Client { ip: client, .. }: Client,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let full = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let path = full
        .strip_prefix("/v1/auth/envoy")
        .filter(|p| p.starts_with('/'));
    decide(
        &state,
        &context,
        Family::Envoy,
        client,
        &headers,
        method.as_str(),
        path,
    )
}
