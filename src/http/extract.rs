//! Extractors whose rejections answer in the API's JSON error shape.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use super::connections::HttpLimits;
use super::error::redact;
use super::observe::RequestContext;
use super::{ApiError, MAX_BODY_BYTES};

/// `Path` with JSON rejections: a malformed id is a 404, like an unknown one.
pub struct AppPath<T>(pub T);

impl<T, S> FromRequestParts<S> for AppPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(AppPath(value))
    }
}

/// `Query` with JSON rejections (400).
pub struct AppQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(AppQuery(value))
    }
}

/// Most bytes of an over-limit body read (and thrown away) before answering 413, so that a
/// client still sending it sees the answer instead of a reset connection (nginx's
/// "lingering close"). Bodies declared larger than this get the 413 at once.
const DRAIN_LIMIT: usize = 1 << 20;

/// Reads the whole body within [`MAX_BODY_BYTES`] (over it is a JSON 413) and within the
/// request's body timeout (past it, a JSON 408: a client that declares a body and never
/// sends it does not hold the connection).
pub async fn read_body<S: Send + Sync>(req: Request, _state: &S) -> Result<Bytes, ApiError> {
    let timeout = req
        .extensions()
        .get::<RequestContext>()
        .map_or(HttpLimits::default().body_read_timeout, |c| c.body_timeout);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
        return Err(too_large());
    }
    tokio::time::timeout(timeout, collect(req.into_body()))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive in time",
            )
        })?
}

/// Collects a body of at most [`MAX_BODY_BYTES`], reading on (and discarding) up to
/// [`DRAIN_LIMIT`] of a longer one before refusing it.
async fn collect(mut body: axum::body::Body) -> Result<Bytes, ApiError> {
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|_| ApiError::bad_request("invalid_body", "the body could not be read"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= MAX_BODY_BYTES {
            kept.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(Bytes::from(kept))
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "the body is over the 64 KiB limit",
    )
}

/// Parses a JSON object body into `T`.
pub fn parse_object<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .is_some_and(|mime| {
            mime.eq_ignore_ascii_case("application/json")
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        // Valid JSON that is not an object (an array would fill struct fields in order).
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
            return Err(ApiError::bad_request(
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::bad_request("malformed_json", "the body is not valid JSON")
        } else {
            ApiError::bad_request(
                "invalid_body",
                format!("the body does not fit: {}", redact(&e.to_string())),
            )
        }
    })
}
