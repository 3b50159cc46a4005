//! Bad input: every refusal is a 4xx JSON error with its documented code, writes nothing to
//! the log, never echoes a secret, and is never a 5xx or an HTML page.

use keyledger::domain::Clock;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, IF_MATCH};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::TestApp;

/// One bad request and what it must get.
struct Case {
    name: String,
    method: Method,
    path: String,
    secret: Option<String>,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
    if_match: Option<String>,
    status: u16,
    code: &'static str,
}

impl Case {
    fn new(name: impl Into<String>, method: Method, path: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            method,
            path: path.into(),
            secret: None,
            content_type: None,
            body: None,
            if_match: None,
            status: 0,
            code: "",
        }
    }

    fn auth(mut self, secret: &str) -> Case {
        self.secret = Some(secret.to_string());
        self
    }

    fn json(mut self, value: Value) -> Case {
        self.content_type = Some("application/json".into());
        self.body = Some(serde_json::to_vec(&value).expect("json"));
        self
    }

    fn raw(mut self, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Case {
        self.content_type = content_type.map(str::to_string);
        self.body = Some(body.into());
        self
    }

    fn if_match(mut self, value: &str) -> Case {
        self.if_match = Some(value.to_string());
        self
    }

    fn expect(mut self, status: u16, code: &'static str) -> Case {
        self.status = status;
        self.code = code;
        self
    }
}

/// What came back.
struct Answer {
    status: u16,
    content_type: String,
    text: String,
}

async fn send(app: &TestApp, case: &Case) -> Answer {
    let mut request = app.client.request(case.method.clone(), app.url(&case.path));
    if let Some(secret) = &case.secret {
        request = request.bearer_auth(secret);
    }
    if let Some(content_type) = &case.content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    if let Some(body) = &case.body {
        request = request.body(body.clone());
    }
    if let Some(value) = &case.if_match {
        request = request.header(IF_MATCH, value);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: request failed: {e:?}", case.name));
    Answer {
        status: response.status().as_u16(),
        content_type: response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        text: response.text().await.expect("body"),
    }
}

/// Runs one case; returns what is wrong with its answer.
async fn check(app: &TestApp, case: &Case, secrets: &[&str]) -> Vec<String> {
    let mut wrong = Vec::new();
    let size = app.log_size();
    let answer = send(app, case).await;
    let what = format!("{} ({} {})", case.name, case.method, case.path);
    if answer.status != case.status {
        wrong.push(format!(
            "{what}: expected {}, got {}: {}",
            case.status, answer.status, answer.text
        ));
    }
    if !answer.content_type.starts_with("application/json") {
        wrong.push(format!(
            "{what}: content-type {:?}, not JSON: {}",
            answer.content_type, answer.text
        ));
    }
    let body: Value = serde_json::from_str(&answer.text).unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str();
    let message = body["error"]["message"].as_str();
    if code != Some(case.code) {
        wrong.push(format!(
            "{what}: expected code {:?}, got {code:?}: {}",
            case.code, answer.text
        ));
    }
    if message.is_none_or(str::is_empty) {
        wrong.push(format!("{what}: no error.message: {}", answer.text));
    }
    for secret in secrets {
        if answer.text.contains(secret) {
            wrong.push(format!(
                "{what}: the answer echoes a secret: {}",
                answer.text
            ));
        }
    }
    if app.log_size() != size {
        wrong.push(format!(
            "{what}: the log grew from {size} to {}",
            app.log_size()
        ));
    }
    wrong
}

async fn run_all(app: &TestApp, cases: &[Case], secrets: &[&str]) {
    let mut wrong = Vec::new();
    for case in cases {
        assert!(
            case.status >= 400,
            "{}: a bad case expects an error",
            case.name
        );
        wrong.extend(check(app, case, secrets).await);
    }
    assert!(
        wrong.is_empty(),
        "{} problems in {} cases:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

/// A server with one key, one user and one of the user's tokens to aim at.
struct Fixture {
    app: TestApp,
    key_id: String,
    user_id: String,
    /// A PAT of the user.
    pat: String,
}

async fn fixture() -> Fixture {
    let app = TestApp::spawn().await;
    let (key, _) = app.create_key("target", "basic").await;
    let user = app.register_user("target@example.org", "basic").await;
    let user_id = user["id"].as_str().expect("id").to_string();
    let (_, pat) = app.issue_token(&user_id, "target-token").await;
    Fixture {
        key_id: key["id"].as_str().expect("id").to_string(),
        user_id,
        pat,
        app,
    }
}

const KEYS: &str = "/v1/admin/api-keys";
const USERS: &str = "/v1/admin/users";

pub async fn malformed_bodies_are_refused_as_json_and_write_nothing() {
    let f = fixture().await;
    let admin = f.app.admin.as_str();
    let key = format!("{KEYS}/{}", f.key_id);
    let regen = format!("{key}/regenerate");
    let tokens = format!("{USERS}/{}/tokens", f.user_id);
    let user = format!("{USERS}/{}", f.user_id);
    let big = "a".repeat(70 * 1024);
    let json_ct = Some("application/json");
    let cases = vec![
        // Not JSON.
        Case::new("truncated JSON", Method::POST, KEYS)
            .auth(admin)
            .raw(json_ct, r#"{"name": "x","#)
            .expect(400, "malformed_json"),
        Case::new("empty body", Method::POST, KEYS)
            .auth(admin)
            .raw(json_ct, "")
            .expect(400, "malformed_json"),
        Case::new("trailing garbage", Method::POST, KEYS)
            .auth(admin)
            .raw(json_ct, r#"{"name":"x","role":"basic"} x"#)
            .expect(400, "malformed_json"),
        Case::new("not JSON at all", Method::PATCH, key.clone())
            .auth(admin)
            .raw(json_ct, "name=x")
            .expect(400, "malformed_json"),
        Case::new("truncated JSON (verify)", Method::POST, "/v1/verify")
            .raw(json_ct, "{")
            .expect(400, "malformed_json"),
        Case::new("truncated JSON (regenerate)", Method::POST, regen.clone())
            .auth(admin)
            .raw(json_ct, "{")
            .expect(400, "malformed_json"),
        Case::new("truncated JSON (users)", Method::POST, USERS)
            .auth(admin)
            .raw(json_ct, r#"{"email": "a@b.c", "role": "#)
            .expect(400, "malformed_json"),
        // Authentication comes before the body is read.
        Case::new("truncated JSON, no credential", Method::POST, KEYS)
            .raw(json_ct, r#"{"name": "x","#)
            .expect(401, "unauthorized"),
        Case::new("huge body, no credential", Method::POST, KEYS)
            .json(json!({"name": big, "role": "basic"}))
            .expect(401, "unauthorized"),
        Case::new("text/plain, PAT of a basic user", Method::POST, KEYS)
            .auth(&f.pat)
            .raw(Some("text/plain"), "x")
            .expect(403, "forbidden"),
        // Wrong or missing content type.
        Case::new("text/plain", Method::POST, KEYS)
            .auth(admin)
            .raw(Some("text/plain"), r#"{"name":"x","role":"basic"}"#)
            .expect(415, "unsupported_media_type"),
        Case::new("no content type", Method::POST, KEYS)
            .auth(admin)
            .raw(None, r#"{"name":"x","role":"basic"}"#)
            .expect(415, "unsupported_media_type"),
        Case::new("text/plain (regenerate)", Method::POST, regen.clone())
            .auth(admin)
            .raw(Some("text/plain"), "{}")
            .expect(415, "unsupported_media_type"),
        Case::new("form (verify)", Method::POST, "/v1/verify")
            .raw(Some("application/x-www-form-urlencoded"), "key=x")
            .expect(415, "unsupported_media_type"),
        Case::new("xml (patch user)", Method::PATCH, user.clone())
            .auth(admin)
            .raw(Some("application/xml"), "<role>admin</role>")
            .expect(415, "unsupported_media_type"),
        // Missing fields.
        Case::new("no role", Method::POST, KEYS)
            .auth(admin)
            .json(json!({"name": "x"}))
            .expect(400, "invalid_body"),
        Case::new("no name", Method::POST, KEYS)
            .auth(admin)
            .json(json!({"role": "basic"}))
            .expect(400, "invalid_body"),
        Case::new("no user role", Method::POST, USERS)
            .auth(admin)
            .json(json!({"email": "a@b.c"}))
            .expect(400, "invalid_body"),
        Case::new("empty patch of a user", Method::PATCH, user.clone())
            .auth(admin)
            .json(json!({}))
            .expect(400, "invalid_body"),
        Case::new("no token name", Method::POST, tokens.clone())
            .auth(admin)
            .json(json!({}))
            .expect(400, "invalid_body"),
        Case::new("no token name (me)", Method::POST, "/v1/me/tokens")
            .auth(&f.pat)
            .json(json!({"expires_in_days": 3}))
            .expect(400, "invalid_body"),
        Case::new("no key (verify)", Method::POST, "/v1/verify")
            .json(json!({"method": "GET", "path": "/x"}))
            .expect(400, "invalid_body"),
        // Unknown fields.
        Case::new("unknown field", Method::POST, KEYS)
            .auth(admin)
            .json(json!({"name": "x", "role": "basic", "colour": "red"}))
            .expect(400, "invalid_body"),
        Case::new("misspelt field (patch)", Method::PATCH, key.clone())
            .auth(admin)
            .json(json!({"nmae": "x"}))
            .expect(400, "invalid_body"),
        Case::new("unknown field (regenerate)", Method::POST, regen.clone())
            .auth(admin)
            .json(json!({"grace": 5}))
            .expect(400, "invalid_body"),
        Case::new("unknown field (verify)", Method::POST, "/v1/verify")
            .json(json!({"key": admin, "extra": 1}))
            .expect(400, "invalid_body"),
        Case::new("unknown field (users)", Method::POST, USERS)
            .auth(admin)
            .json(json!({"email": "a@b.c", "role": "basic", "name": "A"}))
            .expect(400, "invalid_body"),
        Case::new("unknown field (tokens)", Method::POST, tokens.clone())
            .auth(admin)
            .json(json!({"name": "x", "expires_at": "2030-01-01T00:00:00Z"}))
            .expect(400, "invalid_body"),
        // Wrong types.
        Case::new("name is a number", Method::POST, KEYS)
            .auth(admin)
            .json(json!({"name": 5, "role": "basic"}))
            .expect(400, "invalid_body"),
        Case::new("role is null", Method::POST, KEYS)
            .auth(admin)
            .json(json!({"name": "x", "role": null}))
            .expect(400, "invalid_body"),
        Case::new("body is a string", Method::POST, USERS)
            .auth(admin)
            .json(json!("a@b.c"))
            .expect(400, "invalid_body"),
        Case::new("expires_at is a number", Method::PATCH, key.clone())
            .auth(admin)
            .json(json!({"expires_at": 5}))
            .expect(400, "invalid_body"),
        Case::new("grace is a string", Method::POST, regen.clone())
            .auth(admin)
            .json(json!({"grace_seconds": "10"}))
            .expect(400, "invalid_body"),
        Case::new("grace is negative", Method::POST, regen.clone())
            .auth(admin)
            .json(json!({"grace_seconds": -1}))
            .expect(400, "invalid_body"),
        Case::new("grace is fractional", Method::POST, regen.clone())
            .auth(admin)
            .json(json!({"grace_seconds": 1.5}))
            .expect(400, "invalid_body"),
        Case::new("lifetime is a string", Method::POST, tokens.clone())
            .auth(admin)
            .json(json!({"name": "x", "expires_in_days": "7"}))
            .expect(400, "invalid_body"),
        Case::new("key is a number (verify)", Method::POST, "/v1/verify")
            .json(json!({"key": 5}))
            .expect(400, "invalid_body"),
        // Over 64 KiB.
        Case::new("huge create", Method::POST, KEYS)
            .auth(admin)
            .json(json!({"name": big, "role": "basic"}))
            .expect(413, "body_too_large"),
        Case::new("huge patch", Method::PATCH, key.clone())
            .auth(admin)
            .json(json!({"name": big}))
            .expect(413, "body_too_large"),
        Case::new("huge verify", Method::POST, "/v1/verify")
            .json(json!({"key": big}))
            .expect(413, "body_too_large"),
        Case::new("huge token", Method::POST, "/v1/me/tokens")
            .auth(&f.pat)
            .json(json!({"name": big}))
            .expect(413, "body_too_large"),
    ];
    run_all(&f.app, &cases, &[admin, &f.pat]).await;
    f.app.stop().await;
}

/// `regenerate` reads its optional body itself; an oversized one must still be a JSON 413.
pub async fn oversized_regenerate_body_is_a_json_413() {
    let f = fixture().await;
    let admin = f.app.admin.as_str();
    let regen = format!("{KEYS}/{}/regenerate", f.key_id);
    let cases = vec![
        Case::new("huge regenerate", Method::POST, regen)
            .auth(admin)
            .json(json!({"grace_seconds": 1, "pad": "a".repeat(70 * 1024)}))
            .expect(413, "body_too_large"),
    ];
    run_all(&f.app, &cases, &[admin]).await;
    f.app.stop().await;
}

pub async fn unknown_routes_methods_and_ids_are_json_404_and_405() {
    let f = fixture().await;
    let admin = f.app.admin.as_str();
    let key = format!("{KEYS}/{}", f.key_id);
    let random = Uuid::now_v7().to_string();
    let cases = vec![
        // Unknown routes, with or without a credential.
        Case::new("unknown /v1 route", Method::GET, "/v1/nope").expect(404, "not_found"),
        Case::new("unknown top route", Method::GET, "/nope")
            .auth(admin)
            .expect(404, "not_found"),
        Case::new(
            "unknown sub-route",
            Method::POST,
            format!("{key}/frobnicate"),
        )
        .auth(admin)
        .expect(404, "not_found"),
        Case::new("trailing slash", Method::GET, format!("{KEYS}/"))
            .auth(admin)
            .expect(404, "not_found"),
        // Known routes, wrong methods.
        Case::new("PUT on the key list", Method::PUT, KEYS)
            .auth(admin)
            .expect(405, "method_not_allowed"),
        Case::new("PUT on a key", Method::PUT, key.clone())
            .auth(admin)
            .json(json!({"name": "x"}))
            .expect(405, "method_not_allowed"),
        Case::new("GET verify", Method::GET, "/v1/verify").expect(405, "method_not_allowed"),
        Case::new("DELETE verify", Method::DELETE, "/v1/verify").expect(405, "method_not_allowed"),
        Case::new("POST healthz", Method::POST, "/healthz").expect(405, "method_not_allowed"),
        Case::new("PUT a user", Method::PUT, format!("{USERS}/{}", f.user_id))
            .auth(admin)
            .expect(405, "method_not_allowed"),
        Case::new(
            "GET an unknown token",
            Method::GET,
            format!("/v1/admin/tokens/{random}"),
        )
        .auth(admin)
        .expect(404, "token_not_found"),
        Case::new(
            "PATCH a token",
            Method::PATCH,
            format!("/v1/admin/tokens/{random}"),
        )
        .auth(admin)
        .expect(405, "method_not_allowed"),
        Case::new("GET regenerate", Method::GET, format!("{key}/regenerate"))
            .auth(admin)
            .expect(405, "method_not_allowed"),
        Case::new("DELETE /v1/me", Method::DELETE, "/v1/me")
            .auth(admin)
            .expect(405, "method_not_allowed"),
        // Ids that are not UUIDs.
        Case::new(
            "key id not a UUID",
            Method::GET,
            format!("{KEYS}/not-a-uuid"),
        )
        .auth(admin)
        .expect(404, "not_found"),
        Case::new(
            "key id not a UUID (regenerate)",
            Method::POST,
            format!("{KEYS}/123/regenerate"),
        )
        .auth(admin)
        .expect(404, "not_found"),
        Case::new("user id not a UUID", Method::PATCH, format!("{USERS}/123"))
            .auth(admin)
            .json(json!({"role": "basic"}))
            .expect(404, "not_found"),
        Case::new(
            "user id not a UUID (tokens)",
            Method::GET,
            format!("{USERS}/bob/tokens"),
        )
        .auth(admin)
        .expect(404, "not_found"),
        Case::new(
            "token id not a UUID",
            Method::DELETE,
            "/v1/admin/tokens/xyz",
        )
        .auth(admin)
        .expect(404, "not_found"),
        Case::new(
            "own token id not a UUID",
            Method::DELETE,
            "/v1/me/tokens/xyz",
        )
        .auth(&f.pat)
        .expect(404, "not_found"),
        Case::new(
            "UUID with junk",
            Method::GET,
            format!("{KEYS}/{}x", f.key_id),
        )
        .auth(admin)
        .expect(404, "not_found"),
        // Unknown UUIDs.
        Case::new("unknown key (GET)", Method::GET, format!("{KEYS}/{random}"))
            .auth(admin)
            .expect(404, "api_key_not_found"),
        Case::new(
            "unknown key (PATCH)",
            Method::PATCH,
            format!("{KEYS}/{random}"),
        )
        .auth(admin)
        .json(json!({"name": "x"}))
        .expect(404, "api_key_not_found"),
        Case::new(
            "unknown key (DELETE)",
            Method::DELETE,
            format!("{KEYS}/{random}"),
        )
        .auth(admin)
        .expect(404, "api_key_not_found"),
        Case::new(
            "unknown key (regenerate)",
            Method::POST,
            format!("{KEYS}/{random}/regenerate"),
        )
        .auth(admin)
        .expect(404, "api_key_not_found"),
        Case::new(
            "unknown key (disable)",
            Method::POST,
            format!("{KEYS}/{random}/disable"),
        )
        .auth(admin)
        .expect(404, "api_key_not_found"),
        Case::new(
            "unknown key (enable)",
            Method::POST,
            format!("{KEYS}/{random}/enable"),
        )
        .auth(admin)
        .expect(404, "api_key_not_found"),
        Case::new(
            "unknown user (PATCH)",
            Method::PATCH,
            format!("{USERS}/{random}"),
        )
        .auth(admin)
        .json(json!({"role": "basic"}))
        .expect(404, "user_not_found"),
        Case::new(
            "unknown user (DELETE)",
            Method::DELETE,
            format!("{USERS}/{random}"),
        )
        .auth(admin)
        .expect(404, "user_not_found"),
        Case::new(
            "unknown user (list tokens)",
            Method::GET,
            format!("{USERS}/{random}/tokens"),
        )
        .auth(admin)
        .expect(404, "user_not_found"),
        Case::new(
            "unknown user (issue token)",
            Method::POST,
            format!("{USERS}/{random}/tokens"),
        )
        .auth(admin)
        .json(json!({"name": "x"}))
        .expect(404, "user_not_found"),
        Case::new(
            "unknown token",
            Method::DELETE,
            format!("/v1/admin/tokens/{random}"),
        )
        .auth(admin)
        .expect(404, "token_not_found"),
        Case::new(
            "unknown own token",
            Method::DELETE,
            format!("/v1/me/tokens/{random}"),
        )
        .auth(&f.pat)
        .expect(404, "token_not_found"),
        Case::new(
            "a key id is not a token",
            Method::DELETE,
            format!("/v1/admin/tokens/{}", f.key_id),
        )
        .auth(admin)
        .expect(404, "token_not_found"),
    ];
    run_all(&f.app, &cases, &[admin, &f.pat]).await;
    f.app.stop().await;
}

pub async fn invalid_values_are_422_with_their_code() {
    let f = fixture().await;
    let admin = f.app.admin.as_str();
    let key = format!("{KEYS}/{}", f.key_id);
    let regen = format!("{key}/regenerate");
    let tokens = format!("{USERS}/{}/tokens", f.user_id);
    let user = format!("{USERS}/{}", f.user_id);
    let now = f.app.clock.now();
    let past = now.plus_seconds(-1).to_rfc3339();
    let exactly_now = now.to_rfc3339();
    let create = |name: &str, body: Value, code: &'static str| {
        Case::new(name, Method::POST, KEYS)
            .auth(admin)
            .json(body)
            .expect(422, code)
    };
    let cases = vec![
        // Names: trimmed, 1 to 100 characters, no control characters.
        create(
            "empty name",
            json!({"name": "", "role": "basic"}),
            "invalid_name",
        ),
        create(
            "blank name",
            json!({"name": "   ", "role": "basic"}),
            "invalid_name",
        ),
        create(
            "101 characters",
            json!({"name": "a".repeat(101), "role": "basic"}),
            "invalid_name",
        ),
        create(
            "101 characters after trimming",
            json!({"name": format!("  {}  ", "a".repeat(101)), "role": "basic"}),
            "invalid_name",
        ),
        create(
            "101 two-byte characters",
            json!({"name": "é".repeat(101), "role": "basic"}),
            "invalid_name",
        ),
        create(
            "control character",
            json!({"name": "a\u{0}b", "role": "basic"}),
            "invalid_name",
        ),
        create(
            "tab inside",
            json!({"name": "a\tb", "role": "basic"}),
            "invalid_name",
        ),
        Case::new("empty name (patch)", Method::PATCH, key.clone())
            .auth(admin)
            .json(json!({"name": " "}))
            .expect(422, "invalid_name"),
        Case::new("101 characters (token)", Method::POST, tokens.clone())
            .auth(admin)
            .json(json!({"name": "t".repeat(101)}))
            .expect(422, "invalid_name"),
        Case::new("empty name (own token)", Method::POST, "/v1/me/tokens")
            .auth(&f.pat)
            .json(json!({"name": ""}))
            .expect(422, "invalid_name"),
        // Roles.
        create(
            "unknown role",
            json!({"name": "x", "role": "root"}),
            "invalid_role",
        ),
        create(
            "role in capitals",
            json!({"name": "x", "role": "Admin"}),
            "invalid_role",
        ),
        create(
            "empty role",
            json!({"name": "x", "role": ""}),
            "invalid_role",
        ),
        create(
            "auditor key",
            json!({"name": "x", "role": "auditor"}),
            "invalid_role",
        ),
        Case::new("auditor key (patch)", Method::PATCH, key.clone())
            .auth(admin)
            .json(json!({"role": "auditor"}))
            .expect(422, "invalid_role"),
        Case::new("unknown role (user)", Method::POST, USERS)
            .auth(admin)
            .json(json!({"email": "new@example.org", "role": "superuser"}))
            .expect(422, "invalid_role"),
        Case::new("unknown role (patch user)", Method::PATCH, user.clone())
            .auth(admin)
            .json(json!({"role": "owner"}))
            .expect(422, "invalid_role"),
        // Expiry and timestamps.
        create(
            "expiry in the past",
            json!({"name": "x", "role": "basic", "expires_at": past}),
            "expiry_in_past",
        ),
        create(
            "expiry now",
            json!({"name": "x", "role": "basic", "expires_at": exactly_now}),
            "expiry_in_past",
        ),
        create(
            "expiry long ago",
            json!({"name": "x", "role": "basic", "expires_at": "2000-01-01T00:00:00Z"}),
            "expiry_in_past",
        ),
        Case::new("expiry in the past (patch)", Method::PATCH, key.clone())
            .auth(admin)
            .json(json!({"expires_at": past}))
            .expect(422, "expiry_in_past"),
        create(
            "words for a timestamp",
            json!({"name": "x", "role": "basic", "expires_at": "tomorrow"}),
            "invalid_timestamp",
        ),
        create(
            "date without time",
            json!({"name": "x", "role": "basic", "expires_at": "2099-01-01"}),
            "invalid_timestamp",
        ),
        create(
            "month 13",
            json!({"name": "x", "role": "basic", "expires_at": "2099-13-01T00:00:00Z"}),
            "invalid_timestamp",
        ),
        create(
            "no offset",
            json!({"name": "x", "role": "basic", "expires_at": "2099-01-01T00:00:00"}),
            "invalid_timestamp",
        ),
        Case::new("empty timestamp (patch)", Method::PATCH, key.clone())
            .auth(admin)
            .json(json!({"expires_at": ""}))
            .expect(422, "invalid_timestamp"),
        // Grace.
        Case::new("grace over 7 days", Method::POST, regen.clone())
            .auth(admin)
            .json(json!({"grace_seconds": 604_801}))
            .expect(422, "grace_too_long"),
        Case::new("huge grace", Method::POST, regen.clone())
            .auth(admin)
            .json(json!({"grace_seconds": u64::MAX}))
            .expect(422, "grace_too_long"),
        // Emails.
        Case::new("email without @", Method::POST, USERS)
            .auth(admin)
            .json(json!({"email": "alice.example.org", "role": "basic"}))
            .expect(422, "invalid_email"),
        Case::new("empty email", Method::POST, USERS)
            .auth(admin)
            .json(json!({"email": "", "role": "basic"}))
            .expect(422, "invalid_email"),
        Case::new("nothing after @", Method::POST, USERS)
            .auth(admin)
            .json(json!({"email": "alice@", "role": "basic"}))
            .expect(422, "invalid_email"),
        Case::new("space inside", Method::POST, USERS)
            .auth(admin)
            .json(json!({"email": "a b@example.org", "role": "basic"}))
            .expect(422, "invalid_email"),
        // Token lifetimes.
        Case::new("0 days", Method::POST, tokens.clone())
            .auth(admin)
            .json(json!({"name": "x", "expires_in_days": 0}))
            .expect(422, "invalid_lifetime"),
        Case::new("366 days", Method::POST, tokens.clone())
            .auth(admin)
            .json(json!({"name": "x", "expires_in_days": 366}))
            .expect(422, "invalid_lifetime"),
        Case::new("u64::MAX days", Method::POST, tokens.clone())
            .auth(admin)
            .json(json!({"name": "x", "expires_in_days": u64::MAX}))
            .expect(422, "invalid_lifetime"),
        Case::new("0 days (own)", Method::POST, "/v1/me/tokens")
            .auth(&f.pat)
            .json(json!({"name": "x", "expires_in_days": 0}))
            .expect(422, "invalid_lifetime"),
        Case::new("366 days (own)", Method::POST, "/v1/me/tokens")
            .auth(&f.pat)
            .json(json!({"name": "x", "expires_in_days": 366}))
            .expect(422, "invalid_lifetime"),
        // Verify needs both method and path, or neither.
        Case::new("method without path", Method::POST, "/v1/verify")
            .json(json!({"key": admin, "method": "GET"}))
            .expect(422, "invalid_target"),
        Case::new("path without method", Method::POST, "/v1/verify")
            .json(json!({"key": admin, "path": "/x"}))
            .expect(422, "invalid_target"),
    ];
    run_all(&f.app, &cases, &[admin, &f.pat]).await;
    f.app.stop().await;
}

pub async fn bad_if_match_and_query_are_400() {
    let f = fixture().await;
    let admin = f.app.admin.as_str();
    let key = format!("{KEYS}/{}", f.key_id);
    let user = format!("{USERS}/{}", f.user_id);
    let mut cases = Vec::new();
    for value in [
        "1",
        "W/\"1\"",
        "\"abc\"",
        "\"\"",
        "\"-1\"",
        "\"1",
        "\"99999999999999999999999\"",
    ] {
        cases.push(
            Case::new(format!("If-Match {value}"), Method::PATCH, key.clone())
                .auth(admin)
                .json(json!({"name": "renamed"}))
                .if_match(value)
                .expect(400, "invalid_if_match"),
        );
    }
    for (method, path) in [
        (Method::POST, format!("{key}/disable")),
        (Method::POST, format!("{key}/enable")),
        (Method::POST, format!("{key}/regenerate")),
        (Method::DELETE, key.clone()),
        (Method::DELETE, user.clone()),
    ] {
        cases.push(
            Case::new("If-Match abc", method, path)
                .auth(admin)
                .if_match("abc")
                .expect(400, "invalid_if_match"),
        );
    }
    cases.push(
        Case::new("If-Match 1 (patch user)", Method::PATCH, user.clone())
            .auth(admin)
            .json(json!({"role": "admin"}))
            .if_match("1")
            .expect(400, "invalid_if_match"),
    );
    for query in [
        "status=bogus",
        "status=ACTIVE",
        "status=revoked",
        "colour=red",
        "status=active&status=deleted",
    ] {
        cases.push(
            Case::new(
                format!("keys ?{query}"),
                Method::GET,
                format!("{KEYS}?{query}"),
            )
            .auth(admin)
            .expect(400, "invalid_query"),
        );
    }
    for query in ["status=expired", "status=disabled", "role=admin"] {
        cases.push(
            Case::new(
                format!("users ?{query}"),
                Method::GET,
                format!("{USERS}?{query}"),
            )
            .auth(admin)
            .expect(400, "invalid_query"),
        );
    }
    run_all(&f.app, &cases, &[admin]).await;
    f.app.stop().await;
}

/// A secret pasted into the wrong place is never echoed back.
pub async fn secrets_in_the_wrong_place_are_never_echoed() {
    let f = fixture().await;
    let admin = f.app.admin.as_str();
    let pat = f.pat.as_str();
    let key = format!("{KEYS}/{}", f.key_id);
    let regen = format!("{key}/regenerate");
    let tokens = format!("{USERS}/{}/tokens", f.user_id);
    let user = format!("{USERS}/{}", f.user_id);
    let mut cases = Vec::new();
    for secret in [admin, pat] {
        let mut unknown = serde_json::Map::new();
        unknown.insert("name".into(), json!("x"));
        unknown.insert("role".into(), json!("basic"));
        unknown.insert(secret.to_string(), json!(1));
        let mut quoted_unknown = serde_json::Map::new();
        quoted_unknown.insert(format!("\"{secret}"), json!(1));
        let mut spaced_unknown = serde_json::Map::new();
        spaced_unknown.insert("key".into(), json!(admin));
        spaced_unknown.insert(format!("my key is {secret} ok"), json!(1));
        cases.extend([
            Case::new("secret in an array role", Method::POST, KEYS)
                .auth(admin)
                .json(json!({"name": "x", "role": [secret]}))
                .expect(400, "invalid_body"),
            Case::new("secret as an unknown field", Method::POST, KEYS)
                .auth(admin)
                .json(Value::Object(unknown))
                .expect(400, "invalid_body"),
            Case::new(
                "secret after a quote as a field",
                Method::POST,
                regen.clone(),
            )
            .auth(admin)
            .json(Value::Object(quoted_unknown))
            .expect(400, "invalid_body"),
            Case::new(
                "secret inside a field name (verify)",
                Method::POST,
                "/v1/verify",
            )
            .json(Value::Object(spaced_unknown))
            .expect(400, "invalid_body"),
            Case::new("secret as a map name", Method::POST, KEYS)
                .auth(admin)
                .json(json!({"name": {"k": secret}, "role": "basic"}))
                .expect(400, "invalid_body"),
            Case::new("secret as grace", Method::POST, regen.clone())
                .auth(admin)
                .json(json!({"grace_seconds": secret}))
                .expect(400, "invalid_body"),
            Case::new(
                "secret after an escaped quote as grace",
                Method::POST,
                regen.clone(),
            )
            .auth(admin)
            .json(json!({"grace_seconds": format!("a\" {secret}")}))
            .expect(400, "invalid_body"),
            Case::new("secret as lifetime", Method::POST, tokens.clone())
                .auth(admin)
                .json(json!({"name": "x", "expires_in_days": secret}))
                .expect(400, "invalid_body"),
            Case::new(
                "secret in an array key (verify)",
                Method::POST,
                "/v1/verify",
            )
            .json(json!({"key": [secret]}))
            .expect(400, "invalid_body"),
            Case::new("secret as a role", Method::POST, KEYS)
                .auth(admin)
                .json(json!({"name": "x", "role": secret}))
                .expect(422, "invalid_role"),
            Case::new("secret as a user role", Method::PATCH, user.clone())
                .auth(admin)
                .json(json!({"role": secret}))
                .expect(422, "invalid_role"),
            Case::new("secret as a timestamp", Method::POST, KEYS)
                .auth(admin)
                .json(json!({"name": "x", "role": "basic", "expires_at": secret}))
                .expect(422, "invalid_timestamp"),
            Case::new("secret as an email", Method::POST, USERS)
                .auth(admin)
                .json(json!({"email": secret, "role": "basic"}))
                .expect(422, "invalid_email"),
            Case::new("secrets as a too-long name", Method::POST, KEYS)
                .auth(admin)
                .json(json!({"name": format!("{secret}{secret}"), "role": "basic"}))
                .expect(422, "invalid_name"),
            Case::new(
                "secret with a method only (verify)",
                Method::POST,
                "/v1/verify",
            )
            .json(json!({"key": secret, "method": secret}))
            .expect(422, "invalid_target"),
            Case::new("secret as If-Match", Method::PATCH, key.clone())
                .auth(admin)
                .json(json!({"name": "x"}))
                .if_match(&format!("\"{secret}\""))
                .expect(400, "invalid_if_match"),
            Case::new(
                "secret as a status filter",
                Method::GET,
                format!("{KEYS}?status={secret}"),
            )
            .auth(admin)
            .expect(400, "invalid_query"),
            Case::new(
                "secret as a query name",
                Method::GET,
                format!("{USERS}?{secret}=1"),
            )
            .auth(admin)
            .expect(400, "invalid_query"),
            Case::new("secret as an id", Method::GET, format!("{KEYS}/{secret}"))
                .auth(admin)
                .expect(404, "not_found"),
            Case::new("secret as a route", Method::GET, format!("/v1/{secret}"))
                .expect(404, "not_found"),
            Case::new("secret with junk as a credential", Method::GET, "/v1/me")
                .auth(&format!("{secret}x"))
                .expect(401, "unauthorized"),
        ]);
    }
    run_all(&f.app, &cases, &[admin, pat]).await;
    f.app.stop().await;
}

/// The edges that are valid: exactly 100 characters, 7 days of grace, 1 and 365 days of
/// lifetime, verify with neither method nor path.
pub async fn the_valid_edges_are_accepted() {
    let f = fixture().await;
    let app = &f.app;
    let admin = app.admin.as_str();
    for (i, name) in [
        "a".repeat(100),
        format!("  {}  ", "b".repeat(100)),
        "é".repeat(100),
    ]
    .into_iter()
    .enumerate()
    {
        let response = app
            .post(KEYS, Some(admin), json!({"name": name, "role": "basic"}))
            .await;
        assert_eq!(response.status(), 201, "name #{i}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["api_key"]["name"], name.trim(), "name #{i} is trimmed");
    }
    let response = app
        .post(
            &format!("{KEYS}/{}/regenerate", f.key_id),
            Some(admin),
            json!({"grace_seconds": 604_800}),
        )
        .await;
    assert_eq!(response.status(), 200, "a grace of exactly 7 days");
    for days in [1, 365] {
        let response = app
            .post(
                &format!("{USERS}/{}/tokens", f.user_id),
                Some(admin),
                json!({"name": format!("d{days}"), "expires_in_days": days}),
            )
            .await;
        assert_eq!(response.status(), 201, "{days} days");
        let response = app
            .post(
                "/v1/me/tokens",
                Some(&f.pat),
                json!({"name": format!("own-d{days}"), "expires_in_days": days}),
            )
            .await;
        assert_eq!(response.status(), 201, "{days} days (own)");
    }
    let response = app.post("/v1/verify", None, json!({"key": admin})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "VALID");
    // An empty body to regenerate means "no grace"; so does an empty JSON object.
    let response = app
        .send(
            Method::POST,
            &format!("{KEYS}/{}/regenerate", f.key_id),
            Some(admin),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    f.app.stop().await;
}

/// A body must be a JSON object: serde's derive would otherwise read a JSON array as the
/// struct's fields in order, so `["x", "basic"]` would create a key.
pub async fn array_bodies_are_refused() {
    let f = fixture().await;
    let admin = f.app.admin.as_str();
    let cases = vec![
        Case::new("body is an array (create key)", Method::POST, KEYS)
            .auth(admin)
            .json(json!(["x", "basic"]))
            .expect(400, "invalid_body"),
        Case::new(
            "body is an array (patch user)",
            Method::PATCH,
            format!("{USERS}/{}", f.user_id),
        )
        .auth(admin)
        .json(json!(["admin"]))
        .expect(400, "invalid_body"),
        Case::new("body is an array (register user)", Method::POST, USERS)
            .auth(admin)
            .json(json!(["array@example.org", "basic"]))
            .expect(400, "invalid_body"),
        Case::new(
            "body is an array (own token)",
            Method::POST,
            "/v1/me/tokens",
        )
        .auth(&f.pat)
        .json(json!(["array-token"]))
        .expect(400, "invalid_body"),
        Case::new("body is an array (verify)", Method::POST, "/v1/verify")
            .json(json!([admin]))
            .expect(400, "invalid_body"),
    ];
    run_all(&f.app, &cases, &[admin, &f.pat]).await;
    f.app.stop().await;
}

/// Authorization headers that are not `Bearer <secret>` are a JSON 401.
pub async fn malformed_authorization_headers_are_401() {
    let f = fixture().await;
    let admin = f.app.admin.clone();
    for value in [
        format!("Basic {admin}"),
        format!("Bearer{admin}"),
        admin.clone(),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        format!("Bearer {admin} extra"),
        format!("Token {admin}"),
    ] {
        let size = f.app.log_size();
        let response = f
            .app
            .client
            .get(f.app.url("/v1/me"))
            .header(reqwest::header::AUTHORIZATION, &value)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 401, "Authorization: {value}");
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(content_type.starts_with("application/json"), "{value}");
        let text = response.text().await.expect("body");
        assert!(!text.contains(&admin), "the 401 echoes the secret");
        let body: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(body["error"]["code"], "unauthorized");
        assert_eq!(f.app.log_size(), size);
    }
    // The scheme is case-insensitive and surrounding spaces are ignored.
    for value in [format!("bearer {admin}"), format!("BEARER  {admin} ")] {
        let response = f
            .app
            .client
            .get(f.app.url("/v1/me"))
            .header(reqwest::header::AUTHORIZATION, &value)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "Authorization: {value}");
    }
    f.app.stop().await;
}
