//! `POST /v1/verify`: every answer code, always with HTTP 200, on the built-in policy and
//! on a custom one; and a bad `--policy` file stops the binary with the line named.

use std::process::Stdio;
use std::time::{Duration, Instant};

use keyledger::crypto::secret::{PlainSecret, SecretKind};
use keyledger::domain::Clock;
use keyledger::policy::Policy;
use serde_json::{Value, json};

use crate::bin_server::serve_command;
use crate::helpers::TestApp;

/// Checks the whole answer of a verify call.
#[track_caller]
fn assert_answer(answer: &Value, code: &str, context: &str) {
    assert_eq!(answer["code"], code, "{context}: {answer}");
    let valid = code == "VALID" || code == "FORBIDDEN";
    assert_eq!(answer["valid"], valid, "{context}: valid in {answer}");
    assert_eq!(
        answer["allowed"],
        code == "VALID",
        "{context}: allowed in {answer}"
    );
    if valid {
        let principal = &answer["principal"];
        assert!(principal.is_object(), "{context}: principal in {answer}");
        for field in ["kind", "id", "role"] {
            assert!(
                principal[field].is_string(),
                "{context}: principal.{field} in {answer}"
            );
        }
    } else {
        assert!(
            answer["principal"].is_null(),
            "{context}: principal must be null in {answer}"
        );
    }
}

/// Verifies `key` for `method path` and checks the code.
async fn expect(app: &TestApp, key: &str, method: &str, path: &str, code: &str) -> Value {
    let answer = app.verify(key, method, path).await;
    assert_answer(&answer, code, &format!("{method} {path}"));
    answer
}

/// `secret` with one character of its body changed: the checksum no longer matches.
fn flip_one_char(secret: &str) -> String {
    let mut chars: Vec<char> = secret.chars().collect();
    chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

pub async fn valid_key_answers_valid_with_its_principal() {
    let app = TestApp::spawn().await;
    let (key, secret) = app.create_key("verify-basic", "basic").await;
    let answer = expect(&app, &secret, "POST", "/chat/send-message", "VALID").await;
    let principal = &answer["principal"];
    assert_eq!(principal["kind"], "service_account");
    assert_eq!(principal["id"], key["id"]);
    assert_eq!(principal["role"], "basic");
    assert_eq!(principal["name"], "verify-basic");
    assert_eq!(principal["credential_id"], key["id"]);

    // Without a target, a known active key is simply VALID.
    let response = app.post("/v1/verify", None, json!({"key": secret})).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_answer(&answer, "VALID", "no target");
    app.stop().await;
}

pub async fn malformed_secrets_answer_malformed() {
    let app = TestApp::spawn().await;
    let (_, secret) = app.create_key("verify-malformed", "basic").await;
    let wrong_prefix = format!("kla_{}", &secret[4..]);
    let pat_prefix = format!("klp_{}", &secret[4..]);
    let cases = [
        ("garbage", "not a secret at all".to_string()),
        ("empty", String::new()),
        ("wrong prefix", wrong_prefix),
        ("pat prefix on a key body", pat_prefix),
        ("bad checksum", flip_one_char(&secret)),
        ("truncated", secret[..secret.len() - 1].to_string()),
        ("extra char", format!("{secret}x")),
    ];
    for (what, key) in cases {
        let answer = app.verify(&key, "GET", "/agents").await;
        assert_answer(&answer, "MALFORMED", what);
    }
    // The real one still works.
    expect(&app, &secret, "GET", "/agents", "VALID").await;
    app.stop().await;
}

pub async fn well_formed_unknown_secrets_answer_not_found() {
    let app = TestApp::spawn().await;
    for kind in [SecretKind::ApiKey, SecretKind::Pat] {
        let never_issued = PlainSecret::generate(kind).expect("generate");
        expect(&app, never_issued.expose(), "GET", "/agents", "NOT_FOUND").await;
    }
    app.stop().await;
}

pub async fn disabled_key_answers_disabled_and_enabled_again_valid() {
    let app = TestApp::spawn().await;
    let (key, secret) = app.create_key("verify-disabled", "basic").await;
    let id = key["id"].as_str().expect("id");
    let response = app
        .post(
            &format!("/v1/admin/api-keys/{id}/disable"),
            Some(&app.admin),
            json!({}),
        )
        .await;
    assert_eq!(response.status(), 200);
    expect(&app, &secret, "GET", "/agents", "DISABLED").await;
    let response = app
        .post(
            &format!("/v1/admin/api-keys/{id}/enable"),
            Some(&app.admin),
            json!({}),
        )
        .await;
    assert_eq!(response.status(), 200);
    expect(&app, &secret, "GET", "/agents", "VALID").await;
    app.stop().await;
}

pub async fn expired_key_answers_expired() {
    let app = TestApp::spawn().await;
    let expires_at = app.clock.now().plus_seconds(10).to_rfc3339();
    let response = app
        .post(
            "/v1/admin/api-keys",
            Some(&app.admin),
            json!({"name": "verify-expiring", "role": "basic", "expires_at": expires_at}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    let secret = body["secret"].as_str().expect("secret").to_string();
    expect(&app, &secret, "GET", "/agents", "VALID").await;
    app.clock.advance(9);
    expect(&app, &secret, "GET", "/agents", "VALID").await;
    app.clock.advance(2);
    expect(&app, &secret, "GET", "/agents", "EXPIRED").await;
    app.stop().await;
}

pub async fn expired_pat_answers_expired() {
    let app = TestApp::spawn().await;
    let user = app
        .register_user("verify-expiring@example.com", "basic")
        .await;
    let user_id = user["id"].as_str().expect("user id");
    let response = app
        .post(
            &format!("/v1/admin/users/{user_id}/tokens"),
            Some(&app.admin),
            json!({"name": "one-day", "expires_in_days": 1}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    let secret = body["secret"].as_str().expect("secret").to_string();
    expect(&app, &secret, "GET", "/agents", "VALID").await;
    app.clock.advance(86_400 - 1);
    expect(&app, &secret, "GET", "/agents", "VALID").await;
    app.clock.advance(1);
    expect(&app, &secret, "GET", "/agents", "EXPIRED").await;
    app.stop().await;
}

pub async fn deleted_key_answers_revoked() {
    let app = TestApp::spawn().await;
    let (key, secret) = app.create_key("verify-deleted", "basic").await;
    let id = key["id"].as_str().expect("id");
    let response = app
        .delete(&format!("/v1/admin/api-keys/{id}"), Some(&app.admin))
        .await;
    assert_eq!(response.status(), 204);
    expect(&app, &secret, "GET", "/agents", "REVOKED").await;
    // The name is free again; the new key works, the deleted one stays revoked.
    let (_, again) = app.create_key("verify-deleted", "basic").await;
    expect(&app, &again, "GET", "/agents", "VALID").await;
    expect(&app, &secret, "GET", "/agents", "REVOKED").await;
    app.stop().await;
}

pub async fn regenerated_without_grace_revokes_the_old_secret_at_once() {
    let app = TestApp::spawn().await;
    let (key, old) = app.create_key("verify-regen-now", "basic").await;
    let id = key["id"].as_str().expect("id");
    let response = app
        .post(
            &format!("/v1/admin/api-keys/{id}/regenerate"),
            Some(&app.admin),
            json!({}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let new = body["secret"].as_str().expect("secret").to_string();
    expect(&app, &old, "GET", "/agents", "REVOKED").await;
    expect(&app, &new, "GET", "/agents", "VALID").await;
    app.stop().await;
}

pub async fn regenerated_old_secret_works_in_grace_then_is_revoked() {
    let app = TestApp::spawn().await;
    let (key, old) = app.create_key("verify-regenerated", "basic").await;
    let id = key["id"].as_str().expect("id");
    let response = app
        .post(
            &format!("/v1/admin/api-keys/{id}/regenerate"),
            Some(&app.admin),
            json!({"grace_seconds": 30}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let new = body["secret"].as_str().expect("secret").to_string();
    assert_ne!(new, old);
    expect(&app, &old, "GET", "/agents", "VALID").await;
    expect(&app, &new, "GET", "/agents", "VALID").await;
    app.clock.advance(31);
    expect(&app, &old, "GET", "/agents", "REVOKED").await;
    expect(&app, &new, "GET", "/agents", "VALID").await;
    app.stop().await;
}

pub async fn revoked_pat_and_pat_of_deactivated_user_answer_revoked() {
    let app = TestApp::spawn().await;
    let user = app.register_user("verify-user@example.com", "basic").await;
    let user_id = user["id"].as_str().expect("user id");
    let (token, revoked) = app.issue_token(user_id, "to-revoke").await;
    let (_, kept) = app.issue_token(user_id, "to-keep").await;

    let answer = expect(&app, &kept, "GET", "/agents", "VALID").await;
    assert_eq!(answer["principal"]["kind"], "user");
    assert_eq!(answer["principal"]["id"], user["id"]);
    assert_eq!(answer["principal"]["role"], "basic");
    assert_eq!(
        answer["principal"]["credential_id"],
        token_id_of(&app, &kept).await
    );

    let token_id = token["id"].as_str().expect("token id");
    let response = app
        .delete(&format!("/v1/admin/tokens/{token_id}"), Some(&app.admin))
        .await;
    assert_eq!(response.status(), 204);
    expect(&app, &revoked, "GET", "/agents", "REVOKED").await;
    expect(&app, &kept, "GET", "/agents", "VALID").await;

    let response = app
        .delete(&format!("/v1/admin/users/{user_id}"), Some(&app.admin))
        .await;
    assert!(
        response.status().is_success(),
        "deactivating: {}",
        response.status()
    );
    expect(&app, &kept, "GET", "/agents", "REVOKED").await;
    app.stop().await;
}

/// The credential id `/v1/me` reports for a secret.
async fn token_id_of(app: &TestApp, secret: &str) -> Value {
    let response = app.get("/v1/me", Some(secret)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["credential"]["id"].clone()
}

pub async fn default_policy_answers_the_seed_cases() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.create_key("verify-admin", "admin").await;
    let (_, basic) = app.create_key("verify-basic", "basic").await;
    let (_, limited) = app.create_key("verify-limited", "limited").await;

    // basic: everything but the admin endpoints.
    let answer = expect(&app, &basic, "GET", "/admin/users", "FORBIDDEN").await;
    assert_eq!(answer["principal"]["role"], "basic");
    expect(&app, &basic, "DELETE", "/admin/users/7", "FORBIDDEN").await;
    expect(&app, &basic, "GET", "/manage/admin/users", "FORBIDDEN").await;
    expect(&app, &basic, "POST", "/chat/send-message", "VALID").await;
    expect(&app, &basic, "GET", "/chat/get-chat-session/5", "VALID").await;
    expect(&app, &basic, "GET", "/agents/3", "VALID").await;
    expect(&app, &basic, "GET", "/manage/search", "VALID").await;
    // Spellings of an admin path are judged as the admin path.
    for path in [
        "/admin",
        "/admin/",
        "//admin/x",
        "/./admin/x",
        "/%61dmin/x",
        "/chat/../admin/x",
        "/admin/x?y=/chat",
        "/admin/x#frag",
    ] {
        expect(&app, &basic, "GET", path, "FORBIDDEN").await;
    }
    // Escapes that could hide a separator or a dot segment are refused outright.
    for path in [
        "/chat/%2e%2e/admin/x",
        "/chat/..%2fadmin/x",
        "/chat/%252e%252e/x",
    ] {
        expect(&app, &basic, "GET", path, "FORBIDDEN").await;
    }

    // limited: read agents, post chat messages, nothing else.
    expect(&app, &limited, "POST", "/chat/send-message", "VALID").await;
    expect(&app, &limited, "GET", "/persona", "VALID").await;
    expect(&app, &limited, "GET", "/agents/3", "VALID").await;
    expect(
        &app,
        &limited,
        "GET",
        "/chat/get-chat-session/5",
        "FORBIDDEN",
    )
    .await;
    let answer = expect(&app, &limited, "GET", "/admin/users", "FORBIDDEN").await;
    assert_eq!(answer["principal"]["role"], "limited");
    expect(&app, &limited, "POST", "/agents/3", "FORBIDDEN").await;
    expect(&app, &limited, "GET", "/manage/admin/users", "FORBIDDEN").await;
    // Path traversal is judged on the normalised path.
    expect(&app, &limited, "GET", "/agents/../admin/x", "FORBIDDEN").await;
    expect(&app, &limited, "GET", "/agents/%2e%2e/admin/x", "FORBIDDEN").await;
    expect(&app, &limited, "GET", "/agents/%2E%2E/admin/x", "FORBIDDEN").await;

    // admin: everything.
    for (method, path) in [
        ("GET", "/admin/users"),
        ("DELETE", "/admin/users/7"),
        ("GET", "/manage/admin/users"),
        ("POST", "/chat/send-message"),
        ("GET", "/chat/get-chat-session/5"),
        ("GET", "/persona"),
        ("PUT", "/agents/3"),
    ] {
        let answer = expect(&app, &admin, method, path, "VALID").await;
        assert_eq!(answer["principal"]["role"], "admin");
    }
    // The bootstrap admin too.
    expect(&app, &app.admin, "GET", "/admin/x", "VALID").await;
    app.stop().await;
}

/// Paths that reach a forbidden route on hosts that strip `;` parameters, ignore case, fold
/// full-width letters or strip trailing dots are forbidden by the built-in policy.
pub async fn host_rewrite_tricks_answer_forbidden() {
    let app = TestApp::spawn().await;
    let (_, basic) = app.create_key("verify-tricks-basic", "basic").await;
    let (_, limited) = app.create_key("verify-tricks-limited", "limited").await;

    for path in [
        "/admin;x/users",
        "/admin%3b/users",
        "/search/..;/admin/users",
        "/Admin/users",
        "/ADMIN/users",
        "/manage/Admin/x",
        "/admin./users",
        "/\u{ff41}dmin/users",
        "/%EF%BD%81dmin/users",
        "/search;jsessionid=1",
    ] {
        let answer = expect(&app, &basic, "GET", path, "FORBIDDEN").await;
        assert_eq!(answer["allowed"], false, "basic GET {path}");
        assert_eq!(answer["principal"]["role"], "basic");
    }
    for (method, path) in [
        ("GET", "/agents/..;/chat/history"),
        ("GET", "/agents/%3B/chat/history"),
        ("GET", "/agents/caf%C3%A9"),
        ("GET", "/agents/7."),
        ("GET", "/Agents/7"),
        ("POST", "/chat"),
        ("POST", "/chat/"),
    ] {
        let answer = expect(&app, &limited, method, path, "FORBIDDEN").await;
        assert_eq!(answer["allowed"], false, "limited {method} {path}");
        assert_eq!(answer["principal"]["role"], "limited");
    }

    // The seed cases still hold.
    for (key, method, path) in [
        (&basic, "GET", "/search"),
        (&basic, "POST", "/chat/send-message"),
        (&basic, "GET", "/manage/connector"),
        (&basic, "POST", "/chat"),
        (&limited, "GET", "/persona/3"),
        (&limited, "GET", "/agents/7"),
        (&limited, "POST", "/chat/send-message"),
    ] {
        expect(&app, key, method, path, "VALID").await;
    }
    expect(&app, &limited, "GET", "/chat/history", "FORBIDDEN").await;
    expect(&app, &basic, "GET", "/admin/users", "FORBIDDEN").await;
    app.stop().await;
}

pub async fn auditor_user_may_call_nothing_on_the_host() {
    let app = TestApp::spawn().await;
    let user = app
        .register_user("verify-auditor@example.com", "auditor")
        .await;
    let user_id = user["id"].as_str().expect("user id");
    let (_, pat) = app.issue_token(user_id, "audit").await;
    let answer = expect(&app, &pat, "GET", "/agents", "FORBIDDEN").await;
    assert_eq!(answer["principal"]["kind"], "user");
    assert_eq!(answer["principal"]["role"], "auditor");
    app.stop().await;
}

pub async fn custom_policy_changes_the_answers() {
    let policy = Policy::from_json(
        r#"{
          "version": 1,
          "rules": [
            {"roles": ["limited"], "methods": ["GET"], "paths": ["/chat/*/history"], "effect": "allow"},
            {"roles": ["basic"], "methods": ["GET"], "paths": ["/admin/reports/**"], "effect": "allow"},
            {"roles": ["basic"], "methods": ["*"], "paths": ["/**"], "effect": "deny"}
          ]
        }"#,
    )
    .expect("custom policy");
    let app = TestApp::spawn_with(policy).await;
    let (_, admin) = app.create_key("custom-admin", "admin").await;
    let (_, basic) = app.create_key("custom-basic", "basic").await;
    let (_, limited) = app.create_key("custom-limited", "limited").await;

    // Allowed by the default policy, denied here.
    expect(&app, &limited, "POST", "/chat/send-message", "FORBIDDEN").await;
    expect(&app, &limited, "GET", "/agents/3", "FORBIDDEN").await;
    expect(&app, &basic, "POST", "/chat/send-message", "FORBIDDEN").await;
    expect(&app, &admin, "GET", "/admin/x", "FORBIDDEN").await;
    // Denied by the default policy, allowed here.
    expect(&app, &limited, "GET", "/chat/5/history", "VALID").await;
    expect(&app, &basic, "GET", "/admin/reports/2024", "VALID").await;
    // Still refused for what the policy does not cover.
    expect(&app, &basic, "POST", "/admin/reports/2024", "FORBIDDEN").await;
    // Credential checks come before the policy.
    let never_issued = PlainSecret::generate(SecretKind::ApiKey).expect("generate");
    expect(
        &app,
        never_issued.expose(),
        "GET",
        "/chat/5/history",
        "NOT_FOUND",
    )
    .await;
    app.stop().await;
}

pub async fn verify_is_always_200_with_a_code() {
    let app = TestApp::spawn().await;
    let (_, basic) = app.create_key("verify-200", "basic").await;
    // Odd methods and paths are judged, not rejected.
    expect(&app, &basic, "get", "/agents", "VALID").await;
    let (_, limited) = app.create_key("verify-200-limited", "limited").await;
    expect(&app, &limited, "get", "/agents/3", "VALID").await;
    expect(&app, &limited, "post", "/agents/3", "FORBIDDEN").await;
    expect(&app, &basic, "G3T", "/agents", "FORBIDDEN").await;
    expect(&app, &basic, "GET", "agents", "FORBIDDEN").await;
    expect(&app, &basic, "GET", "/agents/%2fadmin", "FORBIDDEN").await;
    app.stop().await;
}

#[test]
fn bad_policy_file_stops_the_binary_naming_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        "{\n  \"version\": 1,\n  \"rules\": [\n    {\"roles\": [\"basic\"], \"methods\": [\"GET\"], \"paths\": [\"/x\"], \"effect\": \"allow\"},\n    {\"roles\": [\"root\"], \"methods\": [\"GET\"], \"paths\": [\"/x\"], \"effect\": \"allow\"}\n  ]\n}\n",
    )
    .expect("write policy");
    let syntax = dir.path().join("syntax.json");
    std::fs::write(
        &syntax,
        "{\n  \"version\": 1,\n  \"rules\": [\n    {\"roles\": [\"basic\"],, \"methods\": [\"GET\"]}\n  ]\n}\n",
    )
    .expect("write policy");
    for (file, line) in [(&policy, 5), (&syntax, 4)] {
        let data_dir = dir.path().join("data");
        let mut child = serve_command(&data_dir)
            .arg("--policy")
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyledger");
        // A server that (wrongly) starts would never exit: give up after a while.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "keyledger kept running with a bad policy file {}",
                    file.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "exit status {:?}; stderr: {stderr}",
            output.status
        );
        assert!(
            stderr.contains(&format!("line {line}")),
            "stderr should name line {line}: {stderr}"
        );
        assert!(
            stderr.contains(&file.display().to_string()),
            "stderr should name the file: {stderr}"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            !stdout.contains("listening"),
            "must not listen with a bad policy: {stdout}"
        );
    }
}
