//! The connection layer under the router: accepting, limiting and timing out connections,
//! and making sure that even what hyper answers on its own is in the API's JSON shape.
//!
//! - At most [`HttpLimits::max_connections`] connections are served at once; one more is
//!   answered `503 too_many_connections` and closed, so a flood of idle sockets cannot
//!   starve everyone else.
//! - hyper's header read timeout closes a connection that has not sent a complete request
//!   head in time (an idle keep-alive connection too). When part of a request had arrived,
//!   the client is told `408 request_timeout` first. Bodies are timed by the extractors
//!   that read them ([`super::extract::read_body`]), whole requests by a deadline in
//!   [`super::observe`].
//! - hyper answers a request it cannot parse (431, 414, 400) itself, with an empty body and
//!   no hook to change it. [`JsonErrors`] recognises those canned answers on their way to
//!   the socket — keyledger's own errors never have an empty body — and rewrites them into
//!   the JSON error shape.
//! - Half-closed connections (a client that shuts its write side after the request) are
//!   answered: hyper's `half_close` is on.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::metrics::Metrics;

/// Limits of the HTTP layer.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Time a client has to send a complete request head (and the longest a keep-alive
    /// connection may sit idle).
    pub header_read_timeout: Duration,
    /// Time a client has to send a request body, once its head has arrived.
    pub body_read_timeout: Duration,
    /// Longest time from a request's head to its response's head.
    pub request_deadline: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            request_deadline: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

/// Serves `app` on `listener` until `stop` resolves; then stops accepting, lets in-flight
/// requests finish (closing idle connections at once) and returns when every connection
/// is gone, or after `limits.request_deadline` more at most.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Connections watch `closing` to start their graceful shutdown; `stop_tx` is dropped
    // by each connection task when it ends, so `closed()` says when all are gone.
    let (closing_tx, closing_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .half_close(true);
    let builder = Arc::new(builder);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Small answers (a verify, a short export) must not wait on Nagle's algorithm.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.count_http_refusal("too_many_connections");
            tokio::spawn(refuse(stream));
            continue;
        };
        let connection = Connection {
            app: app.clone(),
            builder: builder.clone(),
            metrics: metrics.clone(),
            closing: closing_rx.clone(),
            done: done_rx.clone(),
        };
        tokio::spawn(async move {
            connection.run(stream, peer).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    drop(done_rx);
    if tokio::time::timeout(limits.request_deadline, done_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown deadline; closing them");
    }
}

/// One accepted connection and what it needs.
struct Connection {
    app: Router,
    builder: Arc<hyper::server::conn::http1::Builder>,
    metrics: Arc<Metrics>,
    closing: watch::Receiver<bool>,
    /// Held while the connection lives; the server waits for every copy to be dropped.
    done: watch::Receiver<()>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, peer: SocketAddr) {
        self.metrics.connections(1);
        let timed_out = Arc::new(AtomicBool::new(false));
        let io = JsonErrors::new(stream, timed_out.clone(), self.metrics.clone());
        let app = self.app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let mut connection = Box::pin(self.builder.serve_connection(TokioIo::new(io), service));
        let mut closing = *self.closing.borrow();
        loop {
            if closing {
                connection.as_mut().graceful_shutdown();
            }
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        if e.is_timeout() {
                            self.metrics.count_http_refusal("header_timeout");
                            timed_out.store(true, Ordering::Relaxed);
                        } else {
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        }
                    }
                    break;
                }
                changed = self.closing.changed(), if !closing => {
                    closing = changed.is_err() || *self.closing.borrow();
                }
            }
        }
        // Dropping the connection drops the socket; `JsonErrors` may say 408 on the way.
        drop(connection);
        self.metrics.connections(-1);
        drop(self.done);
    }
}

/// Answers a connection over the limit with a 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let answer = canned(
        "503 Service Unavailable",
        "too_many_connections",
        "the server is at its connection limit; retry shortly",
        Some("retry-after: 1\r\n"),
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A complete HTTP/1.1 response with a JSON error body that closes the connection.
fn canned(status: &str, code: &str, message: &str, extra: Option<&str>) -> Vec<u8> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\ncache-control: no-store\r\n{}\r\n{body}",
        body.len(),
        extra.unwrap_or(""),
    )
    .into_bytes()
}

/// What hyper's own answer to an unparseable request is rewritten into.
fn json_for_hyper_error(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let status_line = text.split("\r\n").next()?;
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
    // hyper's canned answers, and only they, close the connection with an empty body.
    let lower = text.to_ascii_lowercase();
    if !lower.contains("\r\ncontent-length: 0\r\n") || !lower.contains("\r\nconnection: close\r\n")
    {
        return None;
    }
    let (code, message) = match status.get(..3)? {
        "400" => (
            "malformed_request",
            "the request is not valid HTTP/1.1 (request line, a header, or Content-Length)",
        ),
        "414" => ("uri_too_long", "the request URI is too long"),
        "431" => (
            "headers_too_large",
            "the request headers are too large or too many",
        ),
        _ => return None,
    };
    Some(canned(status, code, message, None))
}

/// The socket under hyper, which rewrites hyper's empty-bodied error answers into JSON and
/// says `408` when hyper closes a connection on its header timeout mid-request.
struct JsonErrors {
    inner: TcpStream,
    /// Bytes still to write before anything else: a rewritten answer.
    pending: Vec<u8>,
    written: usize,
    /// Request bytes have arrived since the last answer was written.
    mid_request: bool,
    /// Set by the connection task when hyper gave up waiting for a request head.
    timed_out: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl JsonErrors {
    fn new(inner: TcpStream, timed_out: Arc<AtomicBool>, metrics: Arc<Metrics>) -> JsonErrors {
        JsonErrors {
            inner,
            pending: Vec::new(),
            written: 0,
            mid_request: false,
            timed_out,
            metrics,
        }
    }

    /// Writes what is pending; `Ready(Ok)` once it is all out.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes over `buf` when it is one of hyper's canned error heads.
    fn intercept(&mut self, buf: &[u8]) -> bool {
        if !buf.starts_with(b"HTTP/1.") || !buf.ends_with(b"\r\n\r\n") {
            return false;
        }
        match json_for_hyper_error(buf) {
            Some(replacement) => {
                self.metrics.count_http_refusal("malformed_request");
                self.pending = replacement;
                self.written = 0;
                true
            }
            None => false,
        }
    }
}

impl AsyncRead for JsonErrors {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut this.inner).poll_read(cx, buf));
        if buf.filled().len() > before {
            this.mid_request = true;
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for JsonErrors {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        this.mid_request = false;
        if this.intercept(buf) {
            // The original bytes count as written; the replacement goes out instead.
            let _ = this.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        this.mid_request = false;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if this.intercept(first) {
                let _ = this.poll_pending(cx)?;
                return Poll::Ready(Ok(first.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl Drop for JsonErrors {
    fn drop(&mut self) {
        // hyper closed the connection on its header timeout with part of a request read:
        // tell the client why (best effort, without blocking; the socket's send buffer is
        // empty at this point, since nothing was written since the request began).
        if self.timed_out.load(Ordering::Relaxed) && self.mid_request {
            let answer = canned(
                "408 Request Timeout",
                "request_timeout",
                "the request head did not arrive in time",
                None,
            );
            let _ = self.inner.try_write(&answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_error_heads_become_json() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 18:54:54 GMT\r\n\r\n";
        let out = json_for_hyper_error(head).expect("rewritten");
        let text = String::from_utf8(out).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["error"]["code"], "headers_too_large");
        // keyledger's own answers are left alone.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n";
        assert!(json_for_hyper_error(ours).is_none());
        let ok = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert!(json_for_hyper_error(ok).is_none());
    }
}
