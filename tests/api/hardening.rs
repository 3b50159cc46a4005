//! Hardening of the API's rules, end to end through a real server (`TestApp`):
//!
//! - the last active admin credential — an admin API key or an admin user's token — cannot
//!   be disabled, deleted, demoted, revoked or deactivated away (409 `last_admin`, nothing
//!   appended);
//! - `/metrics` counts exactly what happened (verify codes, requests per route pattern,
//!   commits) in OpenMetrics text;
//! - names and emails refuse anything shaped like a secret and invisible characters,
//!   never echo what was sent, and compare ignoring case and width.
//!
//! The API's conventions (paging, `Location`, challenges, `ETag`s) are in
//! `api_conventions.rs`, the HTTP layer's limits in `http_limits.rs`, the binary's
//! operations in `binary_ops.rs` and the data dir on disk in `data_dir.rs`.

use keyledger::crypto::secret::{PlainSecret, SecretKind};
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_error, json_ok, metric};

// ---------------------------------------------------------------------------------------
// 1. The last admin credential
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_bootstrap_key_cannot_remove_itself_until_another_admin_key_exists() {
    // Arrange: a fresh log, whose only admin credential is the bootstrap key.
    let app = TestApp::spawn().await;
    let me = format!("/v1/admin/api-keys/{}", app.admin_id);
    let size = app.log_size();

    // Act and assert: disabling, deleting and demoting itself are refused.
    let disable = app
        .send(
            Method::POST,
            &format!("{me}/disable"),
            Some(&app.admin),
            None,
        )
        .await;
    let body = expect_error(disable, 409, "last_admin").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("recover-admin")),
        "the message names the way out: {body}"
    );
    expect_error(app.delete(&me, Some(&app.admin)).await, 409, "last_admin").await;
    for role in ["basic", "limited"] {
        let demote = app
            .patch(&me, Some(&app.admin), json!({"role": role}))
            .await;
        expect_error(demote, 409, "last_admin").await;
    }
    assert_eq!(app.log_size(), size, "refusals append nothing");

    // The key still works, still as an active admin.
    let who = json_ok(app.get("/v1/me", Some(&app.admin)).await).await;
    assert_eq!(who["principal"]["role"], "admin");
    let key = json_ok(app.get(&me, Some(&app.admin)).await).await;
    assert_eq!(key["api_key"]["status"], "active");
    assert_eq!(key["api_key"]["role"], "admin");

    // A second admin key that is disabled is no admin credential.
    let (second, second_secret) = app.create_key("second-admin", "admin").await;
    let second_path = format!("/v1/admin/api-keys/{}", second["id"].as_str().expect("id"));
    let disabled = app
        .send(
            Method::POST,
            &format!("{second_path}/disable"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(disabled.status(), 200);
    let size = app.log_size();
    expect_error(app.delete(&me, Some(&app.admin)).await, 409, "last_admin").await;
    assert_eq!(app.log_size(), size);

    // Once it is active, the bootstrap key can go.
    let enabled = app
        .send(
            Method::POST,
            &format!("{second_path}/enable"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(enabled.status(), 200);
    let deleted = app.delete(&me, Some(&app.admin)).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get("/v1/me", Some(&app.admin)).await.status(), 401);

    // And the second key is now the last one.
    let size = app.log_size();
    expect_error(
        app.delete(&second_path, Some(&second_secret)).await,
        409,
        "last_admin",
    )
    .await;
    assert_eq!(app.log_size(), size);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_users_token_counts_as_an_admin_credential() {
    // Arrange: an admin user with one token.
    let app = TestApp::spawn().await;
    let user = app.register_user("root@example.com", "admin").await;
    let user_id = user["id"].as_str().expect("user id").to_string();
    let (token, pat) = app.issue_token(&user_id, "root-laptop").await;
    let token_id = token["id"].as_str().expect("token id").to_string();

    // Act: the bootstrap key can be deleted, since the token is an admin credential.
    let deleted = app
        .delete(
            &format!("/v1/admin/api-keys/{}", app.admin_id),
            Some(&app.admin),
        )
        .await;
    assert_eq!(deleted.status(), 204);

    // Assert: the token is now the last admin credential; every way of taking it away is
    // refused and appends nothing.
    let size = app.log_size();
    let user_path = format!("/v1/admin/users/{user_id}");
    expect_error(
        app.delete(&format!("/v1/admin/tokens/{token_id}"), Some(&pat))
            .await,
        409,
        "last_admin",
    )
    .await;
    expect_error(
        app.delete(&format!("/v1/me/tokens/{token_id}"), Some(&pat))
            .await,
        409,
        "last_admin",
    )
    .await;
    for role in ["basic", "auditor"] {
        expect_error(
            app.patch(&user_path, Some(&pat), json!({"role": role}))
                .await,
            409,
            "last_admin",
        )
        .await;
    }
    expect_error(app.delete(&user_path, Some(&pat)).await, 409, "last_admin").await;
    assert_eq!(app.log_size(), size, "refusals append nothing");

    let who = json_ok(app.get("/v1/me", Some(&pat)).await).await;
    assert_eq!(who["principal"]["role"], "admin");
    assert_eq!(who["credential"]["id"], token_id.as_str());
    let user = json_ok(app.get(&user_path, Some(&pat)).await).await;
    assert_eq!(user["user"]["status"], "active");
    assert_eq!(user["user"]["role"], "admin");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_removals_never_leave_no_admin() {
    // Each round: the one admin key left and two new ones disable each other in a ring, all
    // at once. Whatever order the writer sees them in, at least one admin stays.
    let app = TestApp::spawn().await;
    let mut survivor = (app.admin_id.clone(), app.admin.clone());
    for round in 0..15 {
        // Arrange
        let mut ring = vec![survivor.clone()];
        for i in 0..2 {
            ring.push(create_admin(&app, &survivor.1, &format!("ring-{round}-{i}")).await);
        }

        // Act
        let paths: Vec<String> = (0..ring.len())
            .map(|i| {
                format!(
                    "/v1/admin/api-keys/{}/disable",
                    ring[(i + 1) % ring.len()].0
                )
            })
            .collect();
        let disable = |i: usize| app.send(Method::POST, &paths[i], Some(&ring[i].1), None);
        let (a, b, c) = tokio::join!(disable(0), disable(1), disable(2));
        let answers = [a, b, c];

        // Assert: each one succeeded, was refused as the last admin, or came from a key
        // disabled a moment before.
        let mut done = 0;
        for answer in answers {
            match answer.status().as_u16() {
                200 => done += 1,
                409 => {
                    expect_error(answer, 409, "last_admin").await;
                }
                401 => {
                    expect_error(answer, 401, "unauthorized").await;
                }
                other => panic!("round {round}: {other}: {:?}", answer.text().await),
            }
        }
        let mut alive = Vec::new();
        for (id, secret) in &ring {
            let who = app.get("/v1/me", Some(secret)).await;
            if who.status() == 200 {
                alive.push((id.clone(), secret.clone()));
            }
        }
        assert!(!alive.is_empty(), "round {round}: no admin key left");
        assert_eq!(alive.len() + done, ring.len(), "round {round}");
        // Keep one admin for the next round.
        survivor = alive[0].clone();
        for (id, _) in &alive[1..] {
            let deleted = app
                .delete(&format!("/v1/admin/api-keys/{id}"), Some(&survivor.1))
                .await;
            assert_eq!(deleted.status(), 204);
        }
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 4. Metrics
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_verifications_requests_and_commits_exactly() {
    // Arrange: a fresh server, one basic key, one well-formed secret nobody holds.
    let app = TestApp::spawn().await;
    let before = metrics_text(&app).await;
    let commits_before = metric(&before, "keyledger_commits_total").expect("commits_total");
    let (_, basic) = app.create_key("metrics-basic", "basic").await;
    app.create_key("metrics-other", "limited").await;
    let unknown = PlainSecret::generate(SecretKind::ApiKey).expect("secret");

    // Act: 3 VALID, 2 FORBIDDEN, 4 NOT_FOUND.
    for _ in 0..3 {
        assert_eq!(app.verify(&basic, "GET", "/chat/1").await["code"], "VALID");
    }
    for _ in 0..2 {
        assert_eq!(
            app.verify(&basic, "GET", "/admin/users").await["code"],
            "FORBIDDEN"
        );
    }
    for _ in 0..4 {
        assert_eq!(
            app.verify(unknown.expose(), "GET", "/chat/1").await["code"],
            "NOT_FOUND"
        );
    }
    let response = app.get("/metrics", None).await;

    // Assert
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.expect("metrics body");
    for (code, count) in [("VALID", 3.0), ("FORBIDDEN", 2.0), ("NOT_FOUND", 4.0)] {
        assert_eq!(
            metric(&text, &format!("keyledger_verify_total{{code=\"{code}\"}}")),
            Some(count),
            "{code} in\n{text}"
        );
    }
    let verify_codes = text
        .lines()
        .filter(|l| l.starts_with("keyledger_verify_total{"))
        .count();
    assert_eq!(verify_codes, 3, "only the codes that happened:\n{text}");
    assert_eq!(
        metric(
            &text,
            "keyledger_http_requests_total{method=\"POST\",route=\"/v1/verify\",status=\"200\"}"
        ),
        Some(9.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "keyledger_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/verify\"}"
        ),
        Some(9.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "keyledger_http_requests_total{method=\"POST\",route=\"/v1/admin/api-keys\",status=\"201\"}"
        ),
        Some(2.0),
        "{text}"
    );
    let commits = metric(&text, "keyledger_commits_total").expect("commits_total");
    assert!(
        commits >= commits_before + 1.0 && commits >= 1.0,
        "{commits_before} -> {commits}"
    );
    for histogram in [
        "keyledger_commit_duration_seconds_count",
        "keyledger_commit_sync_duration_seconds_count",
        "keyledger_commit_batch_commands_count",
    ] {
        assert_eq!(
            metric(&text, histogram),
            Some(commits),
            "{histogram}: one observation per commit\n{text}"
        );
    }
    let build = format!(
        "keyledger_build_info{{version=\"{}\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&build) && l.ends_with("} 1")),
        "{build}... 1 in\n{text}"
    );
    for process in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(
            metric(&text, process).is_some_and(|v| v >= 0.0),
            "{process} in\n{text}"
        );
    }
    assert!(
        metric(&text, "process_resident_memory_bytes").is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "ends with # EOF: {text}");
    app.stop().await;
}

#[tokio::test]
async fn methods_a_client_makes_up_do_not_become_metric_labels() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act: 40 made-up methods, on a route and off it.
    for i in 0..20 {
        let method = Method::from_bytes(format!("PROBE{i}").as_bytes()).expect("a method token");
        for path in ["/healthz", "/nowhere"] {
            let response = app
                .client
                .request(method.clone(), app.url(path))
                .send()
                .await
                .expect("request");
            assert!(matches!(response.status().as_u16(), 404 | 405));
        }
    }

    // Assert: the label set stays bounded: made-up methods share one label value.
    let text = metrics_text(&app).await;
    let probes: Vec<&str> = text.lines().filter(|l| l.contains("PROBE")).collect();
    assert!(
        probes.is_empty(),
        "{} series name a made-up method, e.g. {:?}",
        probes.len(),
        probes.first()
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 10. Secrets in free text
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn names_and_emails_shaped_like_a_secret_are_refused_without_echo() {
    // Arrange: a live API key secret and a live token secret.
    let app = TestApp::spawn().await;
    let (holder, live) = app.create_key("holder", "basic").await;
    let holder_path = format!("/v1/admin/api-keys/{}", holder["id"].as_str().expect("id"));
    let user = app.register_user("someone@example.com", "basic").await;
    let user_id = user["id"].as_str().expect("id").to_string();
    let (_, pat) = app.issue_token(&user_id, "laptop").await;
    let generated = PlainSecret::generate(SecretKind::ApiKey).expect("secret");
    let bare = live["klk_".len()..].to_string();
    let bare_pat = pat["klp_".len()..].to_string();
    let names = [
        live.clone(),
        format!("ci key {live}"),
        bare.clone(),
        format!("copy of {bare}"),
        format!("KLK_{bare}"),
        format!("Klp_{bare_pat}"),
        bare_pat.clone(),
        generated.expose().to_string(),
    ];
    let hidden = [
        live.as_str(),
        bare.as_str(),
        pat.as_str(),
        bare_pat.as_str(),
    ];
    let size = app.log_size();

    // Act and assert: key names, on create and rename.
    for name in &names {
        let created = app
            .post(
                "/v1/admin/api-keys",
                Some(&app.admin),
                json!({"name": name, "role": "basic"}),
            )
            .await;
        no_echo(expect_error(created, 422, "invalid_name").await, &hidden);
        let renamed = app
            .patch(&holder_path, Some(&app.admin), json!({"name": name}))
            .await;
        no_echo(expect_error(renamed, 422, "invalid_name").await, &hidden);
    }
    // Token names, issued by an admin or by the user.
    for name in &names {
        let issued = app
            .post(
                &format!("/v1/admin/users/{user_id}/tokens"),
                Some(&app.admin),
                json!({"name": name}),
            )
            .await;
        no_echo(expect_error(issued, 422, "invalid_name").await, &hidden);
        let own = app
            .post("/v1/me/tokens", Some(&pat), json!({"name": name}))
            .await;
        no_echo(expect_error(own, 422, "invalid_name").await, &hidden);
    }
    // Emails.
    for email in [
        "klp_team@example.com".to_string(),
        "Ops.KLK_team@example.com".to_string(),
        format!("{pat}@example.com"),
        format!("ops+{live}@example.com"),
    ] {
        let registered = app
            .post(
                "/v1/admin/users",
                Some(&app.admin),
                json!({"email": email, "role": "basic"}),
            )
            .await;
        no_echo(
            expect_error(registered, 422, "invalid_email").await,
            &hidden,
        );
    }
    assert_eq!(app.log_size(), size, "refusals append nothing");
    let got = json_ok(app.get(&holder_path, Some(&app.admin)).await).await;
    assert_eq!(got["api_key"]["name"], "holder");
    app.stop().await;
}

#[tokio::test]
async fn an_email_holding_a_secret_without_its_prefix_is_refused() {
    // Arrange: a live API key secret, without its prefix.
    let app = TestApp::spawn().await;
    let (_, live) = app.create_key("holder", "basic").await;
    let bare = live["klk_".len()..].to_string();
    let size = app.log_size();

    for email in [
        format!("ops+{bare}@example.com"),
        format!("ops@{bare}.example.com"),
    ] {
        // Act
        let registered = app
            .post(
                "/v1/admin/users",
                Some(&app.admin),
                json!({"email": email, "role": "basic"}),
            )
            .await;

        // Assert
        let body = expect_error(registered, 422, "invalid_email").await;
        no_echo(body, &[&bare, &bare.to_lowercase()]);
    }
    assert_eq!(app.log_size(), size, "refusals append nothing");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// 11. Invisible characters and look-alike names
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn invisible_characters_are_refused_and_look_alike_names_collide() {
    // Arrange
    let app = TestApp::spawn().await;
    let size = app.log_size();

    // Act and assert: format characters are refused.
    for name in [
        "c\u{200b}i",
        "\u{feff}ci",
        "admin\u{202e}gnp.exe",
        "\u{200b}\u{200b}",
    ] {
        let created = app
            .post(
                "/v1/admin/api-keys",
                Some(&app.admin),
                json!({"name": name, "role": "basic"}),
            )
            .await;
        let body = expect_error(created, 422, "invalid_name").await;
        assert!(
            !body.to_string().contains(name),
            "the name is not echoed: {body}"
        );
    }
    assert_eq!(app.log_size(), size);

    // With `ci` live, its case and width variants are taken.
    app.create_key("ci", "basic").await;
    let (other, _) = app.create_key("other", "basic").await;
    let other_path = format!("/v1/admin/api-keys/{}", other["id"].as_str().expect("id"));
    let size = app.log_size();
    for name in ["ｃｉ", "CI", "Ci", " ci "] {
        let created = app
            .post(
                "/v1/admin/api-keys",
                Some(&app.admin),
                json!({"name": name, "role": "basic"}),
            )
            .await;
        expect_error(created, 409, "name_taken").await;
    }
    for name in ["Ｃｉ", "CI"] {
        let renamed = app
            .patch(&other_path, Some(&app.admin), json!({"name": name}))
            .await;
        expect_error(renamed, 409, "name_taken").await;
    }
    assert_eq!(app.log_size(), size, "refusals append nothing");
    let got = json_ok(app.get(&other_path, Some(&app.admin)).await).await;
    assert_eq!(got["api_key"]["name"], "other");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Asserts that an error body holds none of `secrets`.
fn no_echo(body: Value, secrets: &[&str]) {
    let text = body.to_string();
    for secret in secrets {
        assert!(!text.contains(secret), "echoed a secret: {text}");
    }
}

async fn metrics_text(app: &TestApp) -> String {
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status(), 200);
    response.text().await.expect("metrics body")
}

/// Creates an admin API key with `by`'s secret; returns (id, secret).
async fn create_admin(app: &TestApp, by: &str, name: &str) -> (String, String) {
    let response = app
        .post(
            "/v1/admin/api-keys",
            Some(by),
            json!({"name": name, "role": "admin"}),
        )
        .await;
    assert_eq!(response.status(), 201, "creating {name}");
    let body: Value = response.json().await.expect("json");
    (
        body["api_key"]["id"].as_str().expect("id").to_string(),
        body["secret"].as_str().expect("secret").to_string(),
    )
}
