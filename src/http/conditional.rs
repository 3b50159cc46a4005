//! Entity tags and conditional GETs (RFC 9110 §8.8.3, §13.1.2).
//!
//! Every JSON answer that a handler marked with its resource's version (`ETag: "3"`) gets
//! the full tag `"3.<digest>"`, and every other `200` JSON answer to a GET the tag
//! `"<digest>"`, where the digest is the first 16 hex digits of the SHA-256 of the body.
//! The version part keeps `If-Match` about the resource's lifecycle (see
//! [`super::auth::if_match`]); the digest makes the tag change whenever anything shown
//! changes — `last_used_at`, or a status that became `expired` with time — so a GET with
//! `If-None-Match` answers `304 Not Modified` only when the client's copy is still exact.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::crypto::secret::hex;

/// The middleware: see the module documentation.
pub async fn conditional(request: Request, next: Next) -> Response {
    // Probes and the admin page's static files are left alone: they are cheap to send
    // again and sit on load balancers' hot path.
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let wanted = request.headers().get(header::IF_NONE_MATCH).cloned();
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let versioned = response.headers().get(header::ETAG).cloned();
    let cacheable =
        (method == Method::GET || method == Method::HEAD) && response.status() == StatusCode::OK;
    if !is_json || (versioned.is_none() && !cacheable) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // JSON answers are built in memory; buffering them again costs a copy, not a wait.
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return (parts.status, parts.headers).into_response();
    };
    let digest = hex(&Sha256::digest(&bytes)[..8]);
    let tag = match versioned.as_ref().and_then(|v| v.to_str().ok()) {
        Some(version) => format!("\"{}.{digest}\"", version.trim_matches('"')),
        None => format!("\"{digest}\""),
    };
    if let Ok(value) = HeaderValue::from_str(&tag) {
        parts.headers.insert(header::ETAG, value);
    }
    if cacheable && wanted.as_ref().is_some_and(|w| none_match_fails(w, &tag)) {
        let mut headers = HeaderMap::new();
        for name in [header::ETAG, header::CACHE_CONTROL, header::VARY] {
            if let Some(value) = parts.headers.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Whether `If-None-Match: <wanted>` names `tag` (weak comparison: `W/` is ignored), or is
/// `*`.
fn none_match_fails(wanted: &HeaderValue, tag: &str) -> bool {
    let Ok(list) = wanted.to_str() else {
        return false;
    };
    list.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == tag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_uses_weak_comparison_over_a_list() {
        let tag = "\"3.0123456789abcdef\"";
        for matching in [
            "\"3.0123456789abcdef\"",
            "W/\"3.0123456789abcdef\"",
            "\"x\", \"3.0123456789abcdef\"",
            "*",
        ] {
            assert!(
                none_match_fails(&HeaderValue::from_static(matching), tag),
                "{matching}"
            );
        }
        for other in ["\"3\"", "\"3.0123456789abcdee\"", "3.0123456789abcdef", ""] {
            assert!(
                !none_match_fails(&HeaderValue::from_static(other), tag),
                "{other}"
            );
        }
    }
}
