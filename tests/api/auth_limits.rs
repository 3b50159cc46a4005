//! Failed-authentication limits: a client address that keeps presenting unknown or
//! malformed credentials is refused (429 with `Retry-After` on `/v1` and forward-auth,
//! `RATE_LIMITED` from `/v1/verify`) while other clients go on; `X-Forwarded-For` and
//! `client_ip` are believed only from `--trusted-proxy` peers; well-behaved clients are never
//! limited; the refusals are counted in `/metrics`.

use std::time::Duration;

use keyledger::crypto::secret::{PlainSecret, SecretKind};
use keyledger::http::ServerConfig;
use keyledger::http::client_addr::TrustedProxies;
use keyledger::policy::Policy;
use reqwest::Response;
use serde_json::{Value, json};

use crate::helpers::{TestApp, metric};

fn limited_to(per_minute: u32, trusted: &[&str]) -> ServerConfig {
    ServerConfig {
        auth_failures_per_minute: per_minute,
        trusted_proxies: TrustedProxies::parse(trusted).expect("CIDRs"),
        ..ServerConfig::default()
    }
}

fn unknown_secret() -> String {
    PlainSecret::generate(SecretKind::ApiKey)
        .expect("random")
        .expose()
        .to_string()
}

/// `GET /v1/me` with `secret`, as the client `forwarded_for` says (when given).
async fn me(app: &TestApp, secret: &str, forwarded_for: Option<&str>) -> Response {
    let mut request = app.client.get(app.url("/v1/me")).bearer_auth(secret);
    if let Some(xff) = forwarded_for {
        request = request.header("x-forwarded-for", xff);
    }
    request.send().await.expect("request")
}

/// Sends unknown credentials as `forwarded_for` until the server answers 429; returns how
/// many 401s came first.
async fn flood(app: &TestApp, forwarded_for: Option<&str>) -> usize {
    for sent in 0..200 {
        let response = me(app, &unknown_secret(), forwarded_for).await;
        match response.status().as_u16() {
            401 => continue,
            429 => return sent,
            other => panic!("unexpected {other}"),
        }
    }
    panic!("200 unknown credentials were never limited");
}

async fn metrics(app: &TestApp) -> String {
    app.get("/metrics", None)
        .await
        .text()
        .await
        .expect("metrics")
}

pub async fn a_flood_is_limited_and_other_clients_are_not() {
    let app = TestApp::spawn_configured(Policy::builtin(), limited_to(5, &["127.0.0.1/32"])).await;
    let (_, basic) = app.create_key("limits-basic", "basic").await;
    let attacker = Some("203.0.113.7");
    let neighbour = Some("203.0.113.8");

    // The burst is the per-minute limit (more if the bucket refilled meanwhile); the
    // failure that goes over it is refused.
    assert!(flood(&app, attacker).await >= 5);
    let response = me(&app, &app.admin, attacker).await;
    assert_eq!(
        response.status(),
        429,
        "a valid credential is refused during the lock-out"
    );
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_many_failures");
    assert!(!body.to_string().contains(&app.admin));

    // Another client behind the same proxy is not affected.
    assert_eq!(me(&app, &app.admin, neighbour).await.status(), 200);
    assert_eq!(me(&app, &unknown_secret(), neighbour).await.status(), 401);

    // Forward-auth refuses the limited client in each family's terms.
    let nginx = app
        .client
        .get(app.url("/v1/auth/nginx"))
        .bearer_auth(&basic)
        .header("x-original-uri", "/search")
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .expect("nginx");
    assert_eq!(
        nginx.status(),
        403,
        "nginx only understands 2xx, 401 and 403"
    );
    assert_eq!(nginx.headers()["x-keyledger-error"], "too_many_failures");
    assert!(nginx.headers().contains_key("retry-after"));
    let forward = app
        .client
        .get(app.url("/v1/auth/forward"))
        .bearer_auth(&basic)
        .header("x-forwarded-uri", "/search")
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .expect("forward");
    assert_eq!(forward.status(), 429);
    assert!(forward.headers().contains_key("retry-after"));
    let envoy = app
        .client
        .get(app.url("/v1/auth/envoy/search"))
        .bearer_auth(&basic)
        .header("x-forwarded-for", "198.51.100.1, 203.0.113.8")
        .send()
        .await
        .expect("envoy");
    assert_eq!(envoy.status(), 200, "the neighbour passes");

    // /v1/verify from a trusted host names the client: the attacker's checks are limited,
    // the neighbour's are not, and the host itself is never refused.
    let verify = |client_ip: &'static str| {
        let app = &app;
        let basic = basic.clone();
        async move {
            let response = app
                .post(
                    "/v1/verify",
                    None,
                    json!({"key": basic, "method": "GET", "path": "/search", "client_ip": client_ip}),
                )
                .await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("json")
        }
    };
    let answer = verify("203.0.113.7").await;
    assert_eq!(answer["code"], "RATE_LIMITED");
    assert_eq!(answer["allowed"], false);
    assert!(answer["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0));
    assert_eq!(verify("203.0.113.8").await["code"], "VALID");
    assert_eq!(verify("2001:db8::1").await["code"], "VALID");

    let text = metrics(&app).await;
    for surface in ["api", "forward_auth", "verify"] {
        let series = format!("keyledger_auth_rate_limited_total{{surface=\"{surface}\"}}");
        assert!(
            metric(&text, &series).is_some_and(|n| n >= 1.0),
            "{series} in:\n{text}"
        );
    }
    app.stop().await;
}

pub async fn a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    // No trusted proxy, then one that is not the peer: either way the peer is the client.
    for trusted in [&[][..], &["10.0.0.0/8"][..]] {
        let app = TestApp::spawn_configured(Policy::builtin(), limited_to(5, trusted)).await;
        // A new made-up address per guess does not spread the failures.
        let mut limited = false;
        for n in 0..200 {
            let xff = format!("198.51.100.{n}");
            match me(&app, &unknown_secret(), Some(&xff))
                .await
                .status()
                .as_u16()
            {
                401 => continue,
                429 => {
                    limited = true;
                    break;
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert!(
            limited,
            "trusted {trusted:?}: new addresses escaped the limit"
        );
        // And claiming to be someone else does not get the peer out of its lock-out.
        assert_eq!(
            me(&app, &app.admin, Some("192.0.2.1")).await.status(),
            429,
            "trusted {trusted:?}"
        );
        // Nor does naming a client to /v1/verify: an untrusted caller's client_ip is ignored.
        let response = app
            .post(
                "/v1/verify",
                None,
                json!({"key": unknown_secret(), "client_ip": "192.0.2.99"}),
            )
            .await;
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["code"], "RATE_LIMITED", "trusted {trusted:?}");
        app.stop().await;
    }
}

pub async fn well_behaved_clients_are_never_limited() {
    let app = TestApp::spawn_configured(Policy::builtin(), limited_to(3, &[])).await;
    let (key, basic) = app.create_key("limits-good", "basic").await;
    let id = key["id"].as_str().expect("id").to_string();
    // Hundreds of successes, allowed and refused by the policy alike.
    for n in 0..150 {
        assert_eq!(me(&app, &basic, None).await.status(), 200, "request {n}");
        let answer = app.verify(&basic, "GET", "/admin/users").await;
        assert_eq!(answer["code"], "FORBIDDEN");
    }
    // A key that exists but is disabled is no guess: its refusals are in its activity.
    let response = app
        .post(
            &format!("/v1/admin/api-keys/{id}/disable"),
            Some(&app.admin),
            json!({}),
        )
        .await;
    assert_eq!(response.status(), 200);
    for _ in 0..20 {
        assert_eq!(me(&app, &basic, None).await.status(), 401);
        assert_eq!(
            app.verify(&basic, "GET", "/search").await["code"],
            "DISABLED"
        );
    }
    assert_eq!(me(&app, &app.admin, None).await.status(), 200);
    // Requests without any credential are not failures either.
    for _ in 0..20 {
        assert_eq!(app.get("/v1/me", None).await.status(), 401);
    }
    assert_eq!(me(&app, &app.admin, None).await.status(), 200);
    app.stop().await;
}

pub async fn the_lock_out_ends_and_zero_turns_the_limit_off() {
    // 60 a minute: one failure's worth comes back every second.
    let app = TestApp::spawn_configured(Policy::builtin(), limited_to(60, &[])).await;
    flood(&app, None).await;
    let started = std::time::Instant::now();
    loop {
        let status = me(&app, &app.admin, None).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the lock-out never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;

    let app = TestApp::spawn_configured(Policy::builtin(), limited_to(0, &[])).await;
    for _ in 0..300 {
        assert_eq!(me(&app, &unknown_secret(), None).await.status(), 401);
    }
    assert_eq!(me(&app, &app.admin, None).await.status(), 200);
    app.stop().await;
}
