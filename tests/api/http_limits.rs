//! The HTTP layer under the router, over raw TCP: what hyper refuses on its own (huge or
//! too many headers, a huge URI, unreadable header bytes, bad `Content-Length`s) is answered
//! in the API's JSON error shape; slow clients are timed out (a half-sent head gets `408
//! request_timeout`, a half-sent body `408 body_timeout`) and closed; connections over
//! `--max-connections` get `503 too_many_connections` while everyone else is still served;
//! a client that half-closes its side after a complete request still gets the answer.
//!
//! Every raw client here reads until the server closes the connection, and gives up (a
//! failure) after [`WAIT`].

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bin_server::BinServer;
use crate::helpers::{TestApp, metric};

/// The longest a raw client waits for the server to answer or close.
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// 9. hyper's own refusals are JSON
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn requests_hyper_cannot_parse_are_answered_as_json_errors() {
    // Arrange
    let app = TestApp::spawn().await;
    let addr = app.addr.to_string();
    let size = app.log_size();
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let mut many_headers = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..5_000 {
        many_headers.push_str(&format!("X-H-{i}: v\r\n"));
    }
    many_headers.push_str("\r\n");
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let verify = |length_headers: &str| {
        format!(
            "POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             {length_headers}Connection: close\r\n\r\n{{}}"
        )
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("a 1 MiB header", big_header, 431, "headers_too_large"),
        ("5,000 headers", many_headers, 431, "headers_too_large"),
        ("a 100 KB URI", long_uri, 414, "uri_too_long"),
        (
            "Content-Length: -1",
            verify("Content-Length: -1\r\n"),
            400,
            "malformed_request",
        ),
        (
            "Content-Length: 2^64",
            verify("Content-Length: 18446744073709551616\r\n"),
            400,
            "malformed_request",
        ),
        (
            "two different Content-Lengths",
            verify("Content-Length: 2\r\nContent-Length: 3\r\n"),
            400,
            "malformed_request",
        ),
    ];
    for (what, request, status, code) in cases {
        // Act
        let received = exchange_async(&addr, request.into_bytes(), false).await;

        // Assert
        let answer = Answer::parse(&received, what);
        answer.assert_json_error(status, code, what);
    }
    assert_eq!(app.log_size(), size, "nothing appended");
    // Each is counted as a refusal of the HTTP layer.
    let metrics = app
        .get("/metrics", None)
        .await
        .text()
        .await
        .expect("metrics");
    assert_eq!(
        metric(
            &metrics,
            "keyledger_http_refused_total{reason=\"malformed_request\"}"
        ),
        Some(6.0),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn control_bytes_in_authorization_are_answered_as_json() {
    // Arrange
    let app = TestApp::spawn().await;
    let request = b"GET /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x01\x02\r\nConnection: close\r\n\r\n".to_vec();

    // Act
    let received = exchange_async(&app.addr.to_string(), request, false).await;

    // Assert: hyper refuses the header bytes (400); were they let through, the API would
    // refuse the header as unreadable (401). Either way the answer is JSON.
    let answer = Answer::parse(&received, "control bytes in Authorization");
    match answer.status {
        400 => answer.assert_json_error(400, "malformed_request", "control bytes"),
        401 => answer.assert_json_error(401, "unauthorized", "control bytes"),
        other => panic!("expected 400 or 401, got {other}: {}", answer.text()),
    }
    eprintln!("control bytes in Authorization: answered {}", answer.status);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 13. Half-closed connections
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_request_followed_by_a_half_close_is_answered_in_full() {
    // Arrange
    let app = TestApp::spawn().await;
    let size = app.log_size();
    let body = json!({"name": "half-closed", "role": "basic"}).to_string();
    let request = format!(
        "POST /v1/admin/api-keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        app.admin,
        body.len()
    );

    // Act: send it all, shut the write side, then read.
    let received = exchange_async(&app.addr.to_string(), request.into_bytes(), true).await;

    // Assert: a complete 201 with the key, and the key exists.
    let answer = Answer::parse(&received, "half-closed create");
    assert_eq!(answer.status, 201, "{}", answer.text());
    let created = answer.json("half-closed create");
    assert_eq!(created["api_key"]["name"], "half-closed");
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("klk_"))
    );
    let id = created["api_key"]["id"].as_str().expect("id");
    let response = app
        .get(&format!("/v1/admin/api-keys/{id}"), Some(&app.admin))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.log_size(), size + 1);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 8. Read timeouts and the connection limit (the real binary)
// ---------------------------------------------------------------------------------------

#[test]
fn slow_heads_and_bodies_are_answered_408_and_closed() {
    // Arrange
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = BinServer::start(
        &tmp.path().join("data"),
        &[
            "--header-read-timeout",
            "1",
            "--body-read-timeout",
            "1",
            "--max-connections",
            "40",
        ],
    )
    .expect("server starts");
    let addr = server.addr.clone();

    // Act (a): 30 clients send half a request head and stop.
    let mut slow: Vec<TcpStream> = (0..30)
        .map(|_| {
            let mut stream = connect(&addr);
            stream
                .write_all(b"POST /v1/verify HTTP/1.1\r\nHost: x\r\n")
                .expect("send half a head");
            stream
        })
        .collect();
    // A normal client is served meanwhile.
    let healthy = Answer::parse(
        &exchange(&addr, get("/healthz"), false),
        "healthz among slow clients",
    );
    assert_eq!(healthy.status, 200, "{}", healthy.text());

    // Assert (a): each slow client is told 408 request_timeout, then closed.
    for (i, stream) in slow.iter_mut().enumerate() {
        let received = read_until_closed(stream);
        let what = format!("slow head #{i}");
        Answer::parse(&received, &what).assert_json_error(408, "request_timeout", &what);
    }

    // (b) A body that stops after 4 of 100 bytes: 408 body_timeout, then closed.
    let mut stream = connect(&addr);
    stream
        .write_all(
            b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"ke",
        )
        .expect("send a head and 4 body bytes");
    let received = read_until_closed(&mut stream);
    Answer::parse(&received, "slow body").assert_json_error(408, "body_timeout", "slow body");

    // (c) A declared 999,999-byte body that never comes: over the 64 KiB limit (413) or
    // timed out (408), as JSON either way.
    let mut stream = connect(&addr);
    stream
        .write_all(
            b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 999999\r\n\r\n",
        )
        .expect("send a head");
    let received = read_until_closed(&mut stream);
    let answer = Answer::parse(&received, "huge declared body");
    match answer.status {
        413 => answer.assert_json_error(413, "body_too_large", "huge declared body"),
        408 => answer.assert_json_error(408, "body_timeout", "huge declared body"),
        other => panic!("expected 408 or 413, got {other}: {}", answer.text()),
    }
    eprintln!(
        "Content-Length: 999999 with no body: answered {}",
        answer.status
    );

    // The server still serves, and counted each slow head.
    let healthy = Answer::parse(&exchange(&addr, get("/healthz"), false), "healthz after");
    assert_eq!(healthy.status, 200);
    let metrics = Answer::parse(&exchange(&addr, get("/metrics"), false), "metrics");
    assert_eq!(
        metric(
            &metrics.text(),
            "keyledger_http_refused_total{reason=\"header_timeout\"}"
        ),
        Some(30.0),
        "{}",
        metrics.text()
    );
    drop(server);
}

#[test]
fn connections_over_the_limit_get_503_until_idle_ones_time_out() {
    // Arrange: a limit of 40 and a header timeout of 3 s, long enough that the 40 idle
    // connections are surely still held when the 41st arrives.
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = BinServer::start(
        &tmp.path().join("data"),
        &["--header-read-timeout", "3", "--max-connections", "40"],
    )
    .expect("server starts");
    let addr = server.addr.clone();
    let mut idle: Vec<TcpStream> = (0..40).map(|_| connect(&addr)).collect();

    // Act: a 41st connection, which sends nothing.
    let mut extra = connect(&addr);
    let received = read_until_closed(&mut extra);

    // Assert: 503 too_many_connections, with Retry-After.
    let answer = Answer::parse(&received, "41st connection");
    answer.assert_json_error(503, "too_many_connections", "41st connection");
    assert_eq!(answer.header("retry-after"), Some("1"));

    // The idle ones are closed by the header timeout; having sent nothing, they are told
    // nothing.
    for (i, stream) in idle.iter_mut().enumerate() {
        let received = read_until_closed(stream);
        assert!(
            received.is_empty(),
            "idle connection #{i} got {:?}",
            String::from_utf8_lossy(&received)
        );
    }
    // Then a new client is served again.
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = Answer::parse(&exchange(&addr, get("/healthz"), false), "healthz");
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 503, "{}", answer.text());
        assert!(
            Instant::now() < deadline,
            "still refused after {WAIT:?}: {}",
            answer.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = Answer::parse(&exchange(&addr, get("/metrics"), false), "metrics").text();
    let refused = |reason: &str| {
        metric(
            &metrics,
            &format!("keyledger_http_refused_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert!(refused("too_many_connections") >= 1.0, "{metrics}");
    assert!(refused("header_timeout") >= 40.0, "{metrics}");
    drop(server);
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------------------

/// A `GET` that asks the server to close the connection after answering.
fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Reads until the server closes the connection (EOF or reset) and returns what came.
/// Panics when it stays open for [`WAIT`].
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return received,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "the server kept the connection open for {WAIT:?}; received {:?}",
                    String::from_utf8_lossy(&received)
                )
            }
            Err(e) => panic!("reading: {e}"),
        }
    }
}

/// Sends `request` on a new connection — from another thread, so that an answer the
/// server gives before reading it all is still heard — optionally half-closes the write
/// side, and reads until the server closes.
fn exchange(addr: &str, request: Vec<u8>, half_close: bool) -> Vec<u8> {
    let mut stream = connect(addr);
    let mut writer = stream.try_clone().expect("clone the socket");
    let sender = std::thread::spawn(move || {
        // The server may close before taking it all: that is what some cases test.
        let _ = writer.write_all(&request);
        if half_close {
            let _ = writer.shutdown(Shutdown::Write);
        }
    });
    let received = read_until_closed(&mut stream);
    let _ = sender.join();
    received
}

/// [`exchange`] off the async runtime, for a server running on it.
async fn exchange_async(addr: &str, request: Vec<u8>, half_close: bool) -> Vec<u8> {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || exchange(&addr, request, half_close))
        .await
        .expect("raw exchange")
}

/// The first HTTP answer in what a connection received.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn parse(received: &[u8], what: &str) -> Answer {
        let shown = String::from_utf8_lossy(received)
            .chars()
            .take(2000)
            .collect::<String>();
        let end = received
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("{what}: no complete answer head in {shown:?}"));
        let head = std::str::from_utf8(&received[..end])
            .unwrap_or_else(|_| panic!("{what}: the head is not UTF-8: {shown:?}"));
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("{what}: bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        let rest = &received[end + 4..];
        let body = match headers.iter().find(|(name, _)| name == "content-length") {
            Some((_, length)) => {
                let length: usize = length.parse().expect("a numeric Content-Length");
                assert!(
                    rest.len() >= length,
                    "{what}: body cut short ({} of {length} bytes): {shown:?}",
                    rest.len()
                );
                rest[..length].to_vec()
            }
            None => rest.to_vec(),
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self, what: &str) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e}): {:?}", self.text()))
    }

    /// Asserts the status, a JSON content type and `{"error":{"code","message"}}`.
    fn assert_json_error(&self, status: u16, code: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.text());
        let content_type = self.header("content-type").unwrap_or("");
        assert!(
            content_type.starts_with("application/json"),
            "{what}: content-type {content_type:?}"
        );
        let body = self.json(what);
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
}
