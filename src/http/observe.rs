//! Around every request: its id, its deadline, its metrics and its access-log line.
//!
//! - The request id is the client's `X-Request-Id` when it is a plain token (1–64 of
//!   `A-Z a-z 0-9 . _ : -`), so a proxy's id carries through; otherwise a new UUIDv7. It is
//!   echoed in the response's `X-Request-Id` and named in the access line.
//! - The deadline bounds the time from request head to response head
//!   ([`HttpLimits::request_deadline`](super::connections::HttpLimits)); past it the client
//!   gets `503 deadline_exceeded`.
//! - One access line per request (target `keyledger::access`): id, method, route pattern,
//!   status, latency, client address and the principal that authenticated, if any. Never a
//!   secret (the `Authorization` header is not read here), never a body, never a raw path
//!   (the route pattern stands for it). Probes (`/healthz`, `/readyz`, `/metrics`) log at
//!   debug level so a load balancer does not fill the log.
//! - An answer given before the request's body was read to its end (a 401 before reading,
//!   a 413, a 408) carries `Connection: close`: the server will not read the rest, so the
//!   connection cannot carry another request, and a client must not reuse it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::{ApiError, AppState};

/// Name of the request-id header.
pub const REQUEST_ID: &str = "x-request-id";

/// What handlers and extractors may learn about the request they serve.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The request id, as logged and echoed.
    pub id: Arc<str>,
    /// Longest wait for the body.
    pub body_timeout: Duration,
    /// The principal that authenticated (or was verified), once known.
    principal: Arc<OnceLock<Uuid>>,
}

impl RequestContext {
    fn new(id: Arc<str>, body_timeout: Duration) -> RequestContext {
        RequestContext {
            id,
            body_timeout,
            principal: Arc::new(OnceLock::new()),
        }
    }

    /// Records the principal for the access line (the first one set wins).
    pub fn set_principal(&self, id: Uuid) {
        let _ = self.principal.set(id);
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    /// The request's context; a detached one when the middleware did not run (a router
    /// used without it, as in unit tests).
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_else(|| {
                RequestContext::new(
                    Arc::from("-"),
                    super::connections::HttpLimits::default().body_read_timeout,
                )
            }))
    }
}

/// The client's request id when it is a plain token, else a new one.
fn request_id(headers: &HeaderMap) -> Arc<str> {
    let given = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        });
    match given {
        Some(id) => Arc::from(id),
        None => Arc::from(Uuid::now_v7().to_string()),
    }
}

/// The method as a metric label: the standard ones by name, anything a client made up as
/// `other`, so requests cannot grow the metrics without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The middleware: see the module documentation.
pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let limits = state.config.http;
    let context = RequestContext::new(request_id(request.headers()), limits.body_read_timeout);
    request.extensions_mut().insert(context.clone());
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_string(), |m| m.as_str().to_string());
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let metrics = state.ledger.metrics().clone();
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let finished = Arc::new(AtomicBool::new(!has_body));
    let request = request.map(|body| {
        axum::body::Body::new(Tracked {
            inner: body,
            finished: finished.clone(),
        })
    });
    let mut response = match tokio::time::timeout(limits.request_deadline, next.run(request)).await
    {
        Ok(response) => response,
        Err(_) => {
            metrics.count_http_refusal("deadline");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "deadline_exceeded",
                "the request took longer than the server's deadline; a command may still have \
                 been applied, so read the resource before retrying",
            )
            .into_response()
        }
    };
    if let Ok(value) = HeaderValue::from_str(&context.id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if !finished.load(Ordering::SeqCst) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.count_request(method_label(&method), &route, status, elapsed);
    let principal = context.principal.get().map(Uuid::to_string);
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let client = client.map(|ip| ip.to_string());
    if matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics") {
        tracing::debug!(target: "keyledger::access", request_id = %context.id, method = %method, route = %route, status, latency_ms, client, principal, "request");
    } else {
        tracing::info!(target: "keyledger::access", request_id = %context.id, method = %method, route = %route, status, latency_ms, client, principal, "request");
    }
    response
}

/// A request body that records when it has been read to its end.
struct Tracked {
    inner: axum::body::Body,
    finished: Arc<AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.finished.store(true, Ordering::SeqCst);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_taken_only_when_plain() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(&*request_id(&headers), "abc-123_x.y:z");
        for bad in ["", "has space", "semi;colon", "quote\"", &"x".repeat(65)] {
            let mut headers = HeaderMap::new();
            headers.insert(
                REQUEST_ID,
                HeaderValue::from_str(bad).expect("header value"),
            );
            let id = request_id(&headers);
            assert_ne!(&*id, bad);
            assert!(Uuid::parse_str(&id).is_ok(), "{id}");
        }
    }
}
