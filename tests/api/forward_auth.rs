//! The forward-auth endpoints (`/v1/auth/nginx`, `/v1/auth/forward`, `/v1/auth/envoy/…`):
//! the same decision as `/v1/verify` for every case, path tricks included; identity headers
//! that name the credential; the configured API-key header; activity counted as verify
//! counts it; and nothing of the secret in any answer.

use std::io::{Read, Write};
use std::net::TcpStream;

use keyledger::domain::Clock;
use keyledger::http::ServerConfig;
use keyledger::policy::Policy;
use serde_json::Value;

use crate::helpers::TestApp;

/// One answer of a forward-auth endpoint, read from a raw socket.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `METHOD target` as written, byte for byte (an HTTP client would normalise dot
/// segments away), with `headers`, and reads the whole answer.
fn raw(app: &TestApp, method: &str, target: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = TcpStream::connect(app.addr).expect("connect");
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: keyledger\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read");
    let text = String::from_utf8_lossy(&bytes).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// The three families' answers for `method path` with `secret`, each with its own way of
/// naming the original request.
fn ask_every_family(
    app: &TestApp,
    secret: &str,
    method: &str,
    path: &str,
) -> Vec<(&'static str, Answer)> {
    let bearer = format!("Bearer {secret}");
    let mut answers = vec![
        (
            "nginx",
            raw(
                app,
                "GET",
                "/v1/auth/nginx",
                &[
                    ("Authorization", &bearer),
                    ("X-Original-Method", method),
                    ("X-Original-URI", path),
                ],
            ),
        ),
        (
            "forward",
            raw(
                app,
                "GET",
                "/v1/auth/forward",
                &[
                    ("Authorization", &bearer),
                    ("X-Forwarded-Method", method),
                    ("X-Forwarded-Uri", path),
                ],
            ),
        ),
    ];
    // Envoy appends the original path to its prefix; a fragment never reaches a proxy.
    if !path.contains('#') {
        answers.push((
            "envoy",
            raw(
                app,
                method,
                &format!("/v1/auth/envoy{path}"),
                &[("Authorization", &bearer)],
            ),
        ));
    }
    answers
}

/// The HTTP status a forward-auth endpoint should give for a verify code.
fn status_for(code: &str) -> u16 {
    match code {
        "VALID" => 200,
        "FORBIDDEN" => 403,
        _ => 401,
    }
}

pub async fn every_family_decides_as_verify_does() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.create_key("fa-admin", "admin").await;
    let (_, basic) = app.create_key("fa-basic", "basic").await;
    let (_, limited) = app.create_key("fa-limited", "limited").await;
    let auditor = app.register_user("fa-auditor@example.org", "auditor").await;
    let (_, auditor_pat) = app
        .issue_token(auditor["id"].as_str().expect("id"), "fa")
        .await;
    let basic_user = app.register_user("fa-basic@example.org", "basic").await;
    let (_, basic_pat) = app
        .issue_token(basic_user["id"].as_str().expect("id"), "fa")
        .await;

    let paths = [
        "/search",
        "/admin/users",
        "/manage/admin/x",
        "/manage/connector",
        "/agents/1",
        "/persona/2",
        "/chat/send-message",
        "/chat",
        "/chat/get-chat-session/5",
        // Spellings and tricks: each family must judge them as /v1/verify does.
        "/agents/../admin/users",
        "/agents/%2e%2e/admin/users",
        "/%2e%2e/admin/x",
        "//admin/users",
        "/./admin/x",
        "/ADMIN/users",
        "/Admin/users",
        "/admin%2Fusers",
        "/admin;x/users",
        "/admin%3b/users",
        "/search;/../admin/users",
        "/search/..;/admin/users",
        "/admin./users",
        "/%61dmin/x",
        "/%EF%BD%81dmin/users",
        "/chat/..%2fadmin/x",
        "/chat/%252e%252e/x",
        "/admin/x?y=/chat",
        "/search?next=/admin",
        "/agents/7.",
    ];
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (who, secret) in [
        ("admin", &admin),
        ("basic", &basic),
        ("limited", &limited),
        ("auditor PAT", &auditor_pat),
        ("basic PAT", &basic_pat),
    ] {
        for method in ["GET", "POST", "DELETE"] {
            for path in paths {
                let verdict = app.verify(secret, method, path).await;
                let code = verdict["code"].as_str().expect("code").to_string();
                for (family, answer) in ask_every_family(&app, secret, method, path) {
                    checked += 1;
                    let want = status_for(&code);
                    if answer.status != want
                        || answer.header("x-keyledger-code") != Some(code.as_str())
                        || answer.header("cache-control") != Some("no-store")
                    {
                        wrong.push(format!(
                            "{who} {method} {path} via {family}: verify says {code}, got {} {:?} {}",
                            answer.status,
                            answer.header("x-keyledger-code"),
                            answer.body
                        ));
                    }
                    if answer.status == 200 {
                        let role = verdict["principal"]["role"].as_str();
                        if answer.header("x-keyledger-role") != role {
                            wrong.push(format!("{who} {method} {path} via {family}: role header"));
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 1000, "only {checked} answers compared");
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // The seed's verdicts, spelled out, through one family.
    for (secret, method, path, status) in [
        (&admin, "GET", "/admin/users", 200),
        (&basic, "GET", "/admin/users", 403),
        (&basic, "GET", "/manage/admin/x", 403),
        (&basic, "POST", "/chat/send-message", 200),
        (&limited, "GET", "/agents/1", 200),
        (&limited, "POST", "/chat/send-message", 200),
        (&limited, "GET", "/search", 403),
        (&limited, "GET", "/chat/get-chat-session/5", 403),
        (&auditor_pat, "GET", "/search", 403),
        (&basic, "GET", "/agents/../admin/users", 403),
    ] {
        let answers = ask_every_family(&app, secret, method, path);
        for (family, answer) in answers {
            assert_eq!(answer.status, status, "{method} {path} via {family}");
        }
    }
    app.stop().await;
}

pub async fn allowed_answers_name_the_credential_and_refusals_say_why() {
    let app = TestApp::spawn().await;
    let (key, secret) = app.create_key("fa-ids", "basic").await;
    let user = app.register_user("fa-ids@example.org", "limited").await;
    let (token, pat) = app
        .issue_token(user["id"].as_str().expect("id"), "fa-ids")
        .await;

    let answer = raw(
        &app,
        "GET",
        "/v1/auth/nginx",
        &[
            ("Authorization", &format!("Bearer {secret}")),
            ("X-Original-Method", "GET"),
            ("X-Original-URI", "/search"),
        ],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    // An API key is its own service account: the principal id is the key id.
    assert_eq!(
        answer.header("x-keyledger-principal-id"),
        key["id"].as_str()
    );
    assert_eq!(
        answer.header("x-keyledger-credential-id"),
        key["id"].as_str()
    );
    assert_eq!(
        answer.header("x-keyledger-principal-kind"),
        Some("service_account")
    );
    assert_eq!(answer.header("x-keyledger-role"), Some("basic"));
    let body: Value = serde_json::from_str(&answer.body).expect("json");
    assert_eq!(body["allowed"], true);
    assert_eq!(body["principal"]["name"], "fa-ids");

    let answer = raw(
        &app,
        "POST",
        "/v1/auth/envoy/chat/send-message",
        &[("Authorization", &format!("Bearer {pat}"))],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.header("x-keyledger-principal-id"),
        user["id"].as_str()
    );
    assert_eq!(
        answer.header("x-keyledger-credential-id"),
        token["id"].as_str()
    );
    assert_eq!(answer.header("x-keyledger-principal-kind"), Some("user"));
    assert_eq!(answer.header("x-keyledger-role"), Some("limited"));

    // Refusals: RFC 6750 challenges, the API's error shape, and never the secret.
    let deleted = app.create_key("fa-deleted", "admin").await;
    let response = app
        .delete(
            &format!(
                "/v1/admin/api-keys/{}",
                deleted.0["id"].as_str().expect("id")
            ),
            Some(&app.admin),
        )
        .await;
    assert_eq!(response.status(), 204);
    let unknown = keyledger::crypto::secret::PlainSecret::generate(
        keyledger::crypto::secret::SecretKind::ApiKey,
    )
    .expect("random");
    for (what, authorization, status, code, challenge) in [
        ("none", None, 401, "MISSING", "Bearer realm=\"keyledger\""),
        (
            "malformed",
            Some("Bearer klk_short".to_string()),
            401,
            "MALFORMED",
            "Bearer realm=\"keyledger\", error=\"invalid_token\"",
        ),
        (
            "unknown",
            Some(format!("Bearer {}", unknown.expose())),
            401,
            "NOT_FOUND",
            "Bearer realm=\"keyledger\", error=\"invalid_token\"",
        ),
        (
            "deleted",
            Some(format!("Bearer {}", deleted.1)),
            401,
            "REVOKED",
            "Bearer realm=\"keyledger\", error=\"invalid_token\"",
        ),
        (
            "not bearer",
            Some(format!("Basic {secret}")),
            401,
            "MALFORMED",
            "Bearer realm=\"keyledger\"",
        ),
        (
            "forbidden",
            Some(format!("Bearer {secret}")),
            403,
            "FORBIDDEN",
            "",
        ),
    ] {
        let mut headers = vec![
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", "/admin/x"),
        ];
        if let Some(value) = &authorization {
            headers.push(("Authorization", value.as_str()));
        }
        let answer = raw(&app, "GET", "/v1/auth/forward", &headers);
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        assert_eq!(answer.header("x-keyledger-code"), Some(code), "{what}");
        assert_eq!(answer.header("cache-control"), Some("no-store"), "{what}");
        assert_eq!(
            answer.header("www-authenticate").unwrap_or(""),
            challenge,
            "{what}"
        );
        assert!(answer.header("x-keyledger-role").is_none(), "{what}");
        let body: Value = serde_json::from_str(&answer.body).expect("a JSON body");
        assert!(body["error"]["code"].is_string(), "{what}: {body}");
        for sent in [&secret, &deleted.1, &unknown.expose().to_string()] {
            assert!(
                !answer.body.contains(sent.as_str()),
                "{what}: the body echoes a secret"
            );
            assert!(
                answer
                    .headers
                    .iter()
                    .all(|(_, v)| !v.contains(sent.as_str())),
                "{what}: a header echoes a secret"
            );
        }
    }

    // A proxy that does not say what is asked for gets a refusal naming the mistake.
    let answer = raw(
        &app,
        "GET",
        "/v1/auth/nginx",
        &[("Authorization", &format!("Bearer {secret}"))],
    );
    assert_eq!(answer.status, 403);
    assert!(answer.body.contains("no_original_uri"), "{}", answer.body);
    // Raw non-UTF-8 bytes in the original URI are refused, not misread.
    let mut stream = TcpStream::connect(app.addr).expect("connect");
    let mut request = format!(
        "GET /v1/auth/nginx HTTP/1.1\r\nHost: k\r\nConnection: close\r\nAuthorization: Bearer {secret}\r\nX-Original-URI: /se"
    )
    .into_bytes();
    request.extend_from_slice(b"\xffarch\r\n\r\n");
    stream.write_all(&request).expect("write");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read");
    assert!(
        bytes.starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    app.stop().await;
}

pub async fn the_api_key_header_is_read_first_when_configured() {
    let config = ServerConfig {
        api_key_header: Some(reqwest::header::HeaderName::from_static("x-api-key")),
        ..ServerConfig::default()
    };
    let app = TestApp::spawn_configured(Policy::builtin(), config).await;
    let (_, secret) = app.create_key("fa-header", "basic").await;
    let (_, other) = app.create_key("fa-header-limited", "limited").await;
    let original = [("X-Original-Method", "GET"), ("X-Original-URI", "/search")];
    let ask = |headers: &[(&str, &str)]| {
        let mut all = original.to_vec();
        all.extend_from_slice(headers);
        raw(&app, "GET", "/v1/auth/nginx", &all)
    };
    // The header alone, and the header beside an Authorization meant for the upstream.
    assert_eq!(ask(&[("X-API-Key", &secret)]).status, 200);
    let answer = ask(&[
        ("X-API-Key", &secret),
        ("Authorization", "Basic dXNlcjpwdw=="),
    ]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-keyledger-role"), Some("basic"));
    // Without the header, Authorization: Bearer still works.
    assert_eq!(
        ask(&[("Authorization", &format!("Bearer {secret}"))]).status,
        200
    );
    // When the header is there it is the credential: a valid bearer does not rescue it.
    let answer = ask(&[
        ("X-API-Key", &other),
        ("Authorization", &format!("Bearer {secret}")),
    ]);
    assert_eq!(
        answer.status, 403,
        "the limited key decides: {}",
        answer.body
    );
    assert_eq!(
        ask(&[
            ("X-API-Key", "klk_nope"),
            ("Authorization", &format!("Bearer {secret}"))
        ])
        .status,
        401
    );
    app.stop().await;

    // Not configured: the header is just a header.
    let app = TestApp::spawn().await;
    let (_, secret) = app.create_key("fa-no-header", "basic").await;
    let answer = raw(
        &app,
        "GET",
        "/v1/auth/nginx",
        &[("X-Original-URI", "/search"), ("X-API-Key", &secret)],
    );
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("x-keyledger-code"), Some("MISSING"));
    app.stop().await;
}

pub async fn forward_auth_counts_activity_as_verify_does() {
    let app = TestApp::spawn().await;
    let (key, secret) = app.create_key("fa-activity", "limited").await;
    let bearer = format!("Bearer {secret}");
    for _ in 0..3 {
        let answer = raw(
            &app,
            "GET",
            "/v1/auth/nginx",
            &[("Authorization", &bearer), ("X-Original-URI", "/agents/1")],
        );
        assert_eq!(answer.status, 200);
    }
    let answer = raw(
        &app,
        "GET",
        "/v1/auth/forward",
        &[
            ("Authorization", &bearer),
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", "/search"),
        ],
    );
    assert_eq!(answer.status, 403);
    let answer = raw(
        &app,
        "POST",
        "/v1/auth/envoy/chat/send-message",
        &[("Authorization", &bearer)],
    );
    assert_eq!(answer.status, 200);
    // The same questions through /v1/verify count under the same keys.
    assert_eq!(
        app.verify(&secret, "GET", "/agents/2").await["code"],
        "VALID"
    );

    app.state
        .activity
        .flush(&app.ledger, app.clock.now())
        .await
        .expect("flush");
    let principal = key["id"].as_str().expect("principal id");
    let response = app
        .get(
            &format!("/v1/audit/principals/{principal}/activity"),
            Some(&app.admin),
        )
        .await;
    assert_eq!(response.status(), 200);
    let activity: Value = response.json().await.expect("json");
    let text = activity.to_string();
    let count = |method: &str, route: &str, outcome: &str| -> u64 {
        let mut total = 0;
        walk_counts(&activity, &mut |c| {
            if c["method"] == method && c["route"] == route && c["outcome"] == outcome {
                total += c["count"].as_u64().unwrap_or(0);
            }
        });
        total
    };
    assert_eq!(count("GET", "/agents/**", "VALID"), 4, "{text}");
    assert_eq!(count("POST", "/chat/*/**", "VALID"), 1, "{text}");
    assert_eq!(count("GET", "(no rule)", "FORBIDDEN"), 1, "{text}");
    app.stop().await;
}

/// Calls `f` on every object with a `count` field.
fn walk_counts(value: &Value, f: &mut dyn FnMut(&Value)) {
    match value {
        Value::Object(map) => {
            if map.contains_key("count") && map.contains_key("outcome") {
                f(value);
            }
            for v in map.values() {
                walk_counts(v, f);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| walk_counts(v, f)),
        _ => {}
    }
}
