//! The authorization matrix: every route of the router × every kind of credential, each cell
//! with its exact expected status, derived from the role rules in `src/http/auth.rs`.
//!
//! Mutating routes get a fresh target per cell, so cells never interfere and an allowed
//! cell's 2xx proves that authorization passed. Refused cells must leave the log unchanged.

use keyledger::crypto::secret::{PlainSecret, SecretKind};
use keyledger::domain::{Clock, Role};
use keyledger::http::ServerConfig;
use keyledger::policy::Policy;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// No credential needed; any Authorization header is ignored.
    Public,
    /// `Caller<AuditReader>`: admin or auditor.
    AuditReader,
    /// `Caller<AnyRole>`: any valid credential.
    AnyRole,
    /// `Caller<AnyRole>` plus `user_id()`: any valid PAT; API keys get 403 `users_only`.
    UsersOnly,
    /// `Caller<AdminOnly>`.
    AdminOnly,
    /// A forward-auth endpoint asked about `GET /search` on the host application: 401 for a
    /// refused credential, then the host policy's verdict for the role (admin and basic
    /// allowed, limited and auditor refused).
    HostSearch,
}

/// What a cell's path needs before the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// A fixed path.
    Fixed,
    /// A shared, never-modified API key (read-only routes).
    SharedKey,
    /// A shared user (read-only routes and token issuing).
    SharedUser,
    /// A fresh API key for this cell.
    FreshKey,
    /// A fresh, disabled API key for this cell.
    FreshDisabledKey,
    /// A fresh user for this cell.
    FreshUser,
    /// A fresh token of a shared user, for this cell.
    FreshToken,
    /// A fresh token of the caller (when the caller is a user), for this cell.
    FreshOwnToken,
}

struct Route {
    method: Method,
    /// The router's path, with `{id}` where an id goes.
    template: &'static str,
    rule: Rule,
    /// Status of an authorized call.
    ok: u16,
    target: Target,
}

fn route(method: Method, template: &'static str, rule: Rule, ok: u16, target: Target) -> Route {
    Route {
        method,
        template,
        rule,
        ok,
        target,
    }
}

/// Every route of `src/http/routes.rs`.
fn routes() -> Vec<Route> {
    use Rule::*;
    use Target::*;
    vec![
        route(Method::GET, "/healthz", Public, 200, Fixed),
        route(Method::GET, "/readyz", Public, 200, Fixed),
        route(Method::GET, "/metrics", Public, 200, Fixed),
        route(Method::GET, "/", Public, 200, Fixed),
        route(Method::GET, "/ui/app.js", Public, 200, Fixed),
        route(Method::GET, "/ui/app.css", Public, 200, Fixed),
        route(Method::GET, "/v1/audit/public-key", Public, 200, Fixed),
        route(Method::POST, "/v1/verify", Public, 200, Fixed),
        route(Method::GET, "/v1/auth/nginx", HostSearch, 200, Fixed),
        route(Method::GET, "/v1/auth/forward", HostSearch, 200, Fixed),
        route(Method::GET, "/v1/auth/envoy/", HostSearch, 200, Fixed),
        route(
            Method::GET,
            "/v1/auth/envoy/{*path}",
            HostSearch,
            200,
            Fixed,
        ),
        route(
            Method::POST,
            "/v1/auth/envoy/{*path}",
            HostSearch,
            200,
            Fixed,
        ),
        route(
            Method::PUT,
            "/v1/auth/envoy/{*path}",
            HostSearch,
            200,
            Fixed,
        ),
        route(
            Method::PATCH,
            "/v1/auth/envoy/{*path}",
            HostSearch,
            200,
            Fixed,
        ),
        route(
            Method::DELETE,
            "/v1/auth/envoy/{*path}",
            HostSearch,
            200,
            Fixed,
        ),
        route(
            Method::OPTIONS,
            "/v1/auth/envoy/{*path}",
            HostSearch,
            200,
            Fixed,
        ),
        route(Method::POST, "/v1/auth/envoy/", HostSearch, 200, Fixed),
        route(Method::PUT, "/v1/auth/envoy/", HostSearch, 200, Fixed),
        route(Method::PATCH, "/v1/auth/envoy/", HostSearch, 200, Fixed),
        route(Method::DELETE, "/v1/auth/envoy/", HostSearch, 200, Fixed),
        route(Method::OPTIONS, "/v1/auth/envoy/", HostSearch, 200, Fixed),
        route(Method::GET, "/v1/audit/checkpoint", AuditReader, 200, Fixed),
        route(Method::GET, "/v1/audit/events", AuditReader, 200, Fixed),
        route(
            Method::GET,
            "/v1/audit/api-keys/{id}/history",
            AuditReader,
            200,
            SharedKey,
        ),
        route(
            Method::GET,
            "/v1/audit/principals/{id}",
            AuditReader,
            200,
            SharedUser,
        ),
        route(
            Method::GET,
            "/v1/audit/principals/{id}/activity",
            AuditReader,
            200,
            SharedUser,
        ),
        route(Method::GET, "/v1/audit/export", AuditReader, 200, Fixed),
        route(
            Method::GET,
            "/v1/audit/proof/inclusion",
            AuditReader,
            200,
            Fixed,
        ),
        route(
            Method::GET,
            "/v1/audit/proof/consistency",
            AuditReader,
            200,
            Fixed,
        ),
        route(Method::GET, "/v1/me", AnyRole, 200, Fixed),
        route(Method::GET, "/v1/me/tokens", UsersOnly, 200, Fixed),
        route(Method::POST, "/v1/me/tokens", UsersOnly, 201, Fixed),
        route(
            Method::GET,
            "/v1/me/tokens/{id}",
            UsersOnly,
            200,
            FreshOwnToken,
        ),
        route(
            Method::DELETE,
            "/v1/me/tokens/{id}",
            UsersOnly,
            204,
            FreshOwnToken,
        ),
        route(Method::POST, "/v1/admin/api-keys", AdminOnly, 201, Fixed),
        route(Method::GET, "/v1/admin/api-keys", AdminOnly, 200, Fixed),
        route(
            Method::GET,
            "/v1/admin/api-keys/{id}",
            AdminOnly,
            200,
            SharedKey,
        ),
        route(
            Method::PATCH,
            "/v1/admin/api-keys/{id}",
            AdminOnly,
            200,
            FreshKey,
        ),
        route(
            Method::DELETE,
            "/v1/admin/api-keys/{id}",
            AdminOnly,
            204,
            FreshKey,
        ),
        route(
            Method::POST,
            "/v1/admin/api-keys/{id}/regenerate",
            AdminOnly,
            200,
            FreshKey,
        ),
        route(
            Method::POST,
            "/v1/admin/api-keys/{id}/disable",
            AdminOnly,
            200,
            FreshKey,
        ),
        route(
            Method::POST,
            "/v1/admin/api-keys/{id}/enable",
            AdminOnly,
            200,
            FreshDisabledKey,
        ),
        route(Method::POST, "/v1/admin/users", AdminOnly, 201, Fixed),
        route(Method::GET, "/v1/admin/users", AdminOnly, 200, Fixed),
        route(
            Method::GET,
            "/v1/admin/users/{id}",
            AdminOnly,
            200,
            SharedUser,
        ),
        route(
            Method::PATCH,
            "/v1/admin/users/{id}",
            AdminOnly,
            200,
            FreshUser,
        ),
        route(
            Method::DELETE,
            "/v1/admin/users/{id}",
            AdminOnly,
            204,
            FreshUser,
        ),
        route(
            Method::POST,
            "/v1/admin/users/{id}/tokens",
            AdminOnly,
            201,
            SharedUser,
        ),
        route(
            Method::GET,
            "/v1/admin/users/{id}/tokens",
            AdminOnly,
            200,
            SharedUser,
        ),
        route(
            Method::GET,
            "/v1/admin/tokens/{id}",
            AdminOnly,
            200,
            FreshToken,
        ),
        route(
            Method::DELETE,
            "/v1/admin/tokens/{id}",
            AdminOnly,
            204,
            FreshToken,
        ),
    ]
}

/// What the server should make of a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    /// Missing, malformed, unknown, disabled, expired, deleted, or past its grace.
    Refused,
    /// An API key with this role.
    Key(Role),
    /// A user's PAT, the user having this role.
    User(Role),
}

struct Cred {
    name: &'static str,
    /// The bearer secret; `None` sends no Authorization header.
    secret: Option<String>,
    auth: Auth,
    /// The user behind a PAT.
    user_id: Option<String>,
}

/// The expected status of one cell, from the role rules.
fn expected(route: &Route, cred: &Cred) -> u16 {
    let allowed = match (route.rule, cred.auth) {
        (Rule::Public, _) => return route.ok,
        (_, Auth::Refused) => return 401,
        (Rule::AuditReader, Auth::Key(role) | Auth::User(role)) => {
            matches!(role, Role::Admin | Role::Auditor)
        }
        (Rule::AnyRole, _) => true,
        (Rule::UsersOnly, Auth::Key(_)) => false,
        (Rule::UsersOnly, Auth::User(_)) => true,
        (Rule::AdminOnly, Auth::Key(role) | Auth::User(role)) => role == Role::Admin,
        (Rule::HostSearch, Auth::Key(role) | Auth::User(role)) => {
            matches!(role, Role::Admin | Role::Basic)
        }
    };
    if allowed { route.ok } else { 403 }
}

/// The expected error code of a refused cell.
fn expected_code(route: &Route, cred: &Cred, status: u16) -> Option<&'static str> {
    match status {
        401 => Some("unauthorized"),
        403 if route.rule == Rule::HostSearch => Some("forbidden"),
        403 if route.rule == Rule::UsersOnly && matches!(cred.auth, Auth::Key(_)) => {
            Some("users_only")
        }
        403 => Some("forbidden"),
        _ => None,
    }
}

async fn create_key_with(app: &TestApp, body: Value) -> (String, String) {
    let response = app.post("/v1/admin/api-keys", Some(&app.admin), body).await;
    assert_eq!(response.status(), 201, "creating a credential key");
    let body: Value = response.json().await.expect("json");
    (
        body["api_key"]["id"].as_str().expect("id").to_string(),
        body["secret"].as_str().expect("secret").to_string(),
    )
}

async fn admin_ok(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Value {
    let response = app.send(method, path, Some(&app.admin), body).await;
    assert!(
        response.status().is_success(),
        "setup {path}: {}",
        response.status()
    );
    response.json().await.unwrap_or(Value::Null)
}

async fn key_cred(app: &TestApp, name: &'static str, role: Role) -> Cred {
    let (_, secret) = app.create_key(name, role.as_str()).await;
    Cred {
        name,
        secret: Some(secret),
        auth: Auth::Key(role),
        user_id: None,
    }
}

async fn user_cred(app: &TestApp, name: &'static str, role: Role) -> Cred {
    let user = app
        .register_user(&format!("{name}@example.org"), role.as_str())
        .await;
    let user_id = user["id"].as_str().expect("user id").to_string();
    let (_, secret) = app.issue_token(&user_id, name).await;
    Cred {
        name,
        secret: Some(secret),
        auth: Auth::User(role),
        user_id: Some(user_id),
    }
}

/// Builds every credential kind. Advances the clock by 120 s once (expiry and grace).
async fn credentials(app: &TestApp) -> Vec<Cred> {
    let mut creds = vec![
        Cred {
            name: "admin key",
            secret: Some(app.admin.clone()),
            auth: Auth::Key(Role::Admin),
            user_id: None,
        },
        key_cred(app, "basic-key", Role::Basic).await,
        key_cred(app, "limited-key", Role::Limited).await,
        user_cred(app, "admin-user", Role::Admin).await,
        user_cred(app, "basic-user", Role::Basic).await,
        user_cred(app, "limited-user", Role::Limited).await,
        user_cred(app, "auditor-user", Role::Auditor).await,
        Cred {
            name: "no credential",
            secret: None,
            auth: Auth::Refused,
            user_id: None,
        },
        Cred {
            name: "malformed",
            secret: Some("klk_nope".to_string()),
            auth: Auth::Refused,
            user_id: None,
        },
        Cred {
            name: "unknown",
            secret: Some(
                PlainSecret::generate(SecretKind::ApiKey)
                    .expect("random")
                    .expose()
                    .to_string(),
            ),
            auth: Auth::Refused,
            user_id: None,
        },
    ];

    // Every refused key below is an admin key, so its 401 cannot come from its role.
    let (disabled_id, disabled) =
        create_key_with(app, json!({"name": "disabled-key", "role": "admin"})).await;
    admin_ok(
        app,
        Method::POST,
        &format!("/v1/admin/api-keys/{disabled_id}/disable"),
        None,
    )
    .await;
    let expires_at = app.clock.now().plus_seconds(10).to_rfc3339();
    let (_, expired) = create_key_with(
        app,
        json!({"name": "expired-key", "role": "admin", "expires_at": expires_at}),
    )
    .await;
    let (deleted_id, deleted) =
        create_key_with(app, json!({"name": "deleted-key", "role": "admin"})).await;
    let response = app
        .delete(
            &format!("/v1/admin/api-keys/{deleted_id}"),
            Some(&app.admin),
        )
        .await;
    assert_eq!(
        response.status(),
        204,
        "deleting the deleted-key credential"
    );
    let (grace_id, in_grace) =
        create_key_with(app, json!({"name": "in-grace-key", "role": "admin"})).await;
    admin_ok(
        app,
        Method::POST,
        &format!("/v1/admin/api-keys/{grace_id}/regenerate"),
        Some(json!({"grace_seconds": 3600})),
    )
    .await;
    let (past_id, past_grace) =
        create_key_with(app, json!({"name": "past-grace-key", "role": "admin"})).await;
    admin_ok(
        app,
        Method::POST,
        &format!("/v1/admin/api-keys/{past_id}/regenerate"),
        Some(json!({"grace_seconds": 60})),
    )
    .await;

    // Past the expiry (10 s) and the short grace (60 s), well inside the long grace (3600 s)
    // and the PATs' 90 days.
    app.clock.advance(120);

    for (name, secret, auth) in [
        ("disabled key", disabled, Auth::Refused),
        ("expired key", expired, Auth::Refused),
        ("deleted key", deleted, Auth::Refused),
        ("regenerated-old in grace", in_grace, Auth::Key(Role::Admin)),
        ("regenerated-old after grace", past_grace, Auth::Refused),
    ] {
        creds.push(Cred {
            name,
            secret: Some(secret),
            auth,
            user_id: None,
        });
    }
    creds
}

/// Shared fixtures of read-only cells.
struct Shared {
    key_id: String,
    user_id: String,
    /// Owner of the tokens of `FreshToken` cells (and of `FreshOwnToken` cells of keys).
    token_owner: String,
}

/// The headers a forward-auth endpoint reads the original request from: `GET /search`
/// (the Envoy endpoint takes it from its own method and path instead).
fn host_request_headers(template: &str) -> Vec<(&'static str, &'static str)> {
    match template {
        "/v1/auth/nginx" => vec![("x-original-method", "GET"), ("x-original-uri", "/search")],
        "/v1/auth/forward" => vec![
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/search"),
        ],
        _ => Vec::new(),
    }
}

/// Prepares one cell: its concrete path and its body.
async fn prepare(
    app: &TestApp,
    shared: &Shared,
    route: &Route,
    cred: &Cred,
    cell: usize,
) -> (String, Option<Value>) {
    let id = match route.target {
        Target::Fixed => None,
        Target::SharedKey => Some(shared.key_id.clone()),
        Target::SharedUser => Some(shared.user_id.clone()),
        Target::FreshKey | Target::FreshDisabledKey => {
            let (key, _) = app.create_key(&format!("target-{cell}"), "basic").await;
            let id = key["id"].as_str().expect("id").to_string();
            if route.target == Target::FreshDisabledKey {
                admin_ok(
                    app,
                    Method::POST,
                    &format!("/v1/admin/api-keys/{id}/disable"),
                    None,
                )
                .await;
            }
            Some(id)
        }
        Target::FreshUser => {
            let user = app
                .register_user(&format!("target-{cell}@example.org"), "basic")
                .await;
            Some(user["id"].as_str().expect("id").to_string())
        }
        Target::FreshToken | Target::FreshOwnToken => {
            let owner = match (route.target, &cred.user_id) {
                (Target::FreshOwnToken, Some(user_id)) => user_id,
                _ => &shared.token_owner,
            };
            let (token, _) = app.issue_token(owner, &format!("target-{cell}")).await;
            Some(token["id"].as_str().expect("id").to_string())
        }
    };
    let mut path = match id {
        Some(id) => route.template.replace("{id}", &id),
        None => route.template.replace("{*path}", "search"),
    };
    // The proofs need their (valid) query to answer 200.
    match route.template {
        "/v1/audit/proof/inclusion" => path.push_str("?seq=0"),
        "/v1/audit/proof/consistency" => path.push_str("?from=1"),
        _ => {}
    }
    let body = match (route.method.as_str(), route.template) {
        ("POST", "/v1/verify") => Some(json!({"key": app.admin, "method": "GET", "path": "/x"})),
        ("POST", "/v1/me/tokens") => Some(json!({"name": format!("mine-{cell}")})),
        ("POST", "/v1/admin/api-keys") => {
            Some(json!({"name": format!("made-{cell}"), "role": "basic"}))
        }
        ("PATCH", "/v1/admin/api-keys/{id}") => Some(json!({"name": format!("renamed-{cell}")})),
        ("POST", "/v1/admin/api-keys/{id}/regenerate") => Some(json!({"grace_seconds": 0})),
        ("POST", "/v1/admin/users") => Some(json!({
            "email": format!("made-{cell}@example.org"),
            "role": "basic",
        })),
        ("PATCH", "/v1/admin/users/{id}") => Some(json!({"role": "limited"})),
        ("POST", "/v1/admin/users/{id}/tokens") => Some(json!({"name": format!("tok-{cell}")})),
        _ => None,
    };
    (path, body)
}

pub async fn every_route_times_every_credential() {
    // The matrix presents refused credentials hundreds of times from one address: the
    // failed-authentication limit (tested on its own) would end it early.
    let config = ServerConfig {
        auth_failures_per_minute: 0,
        ..ServerConfig::default()
    };
    let app = TestApp::spawn_configured(Policy::builtin(), config).await;
    let (shared_key, _) = app.create_key("shared-key", "basic").await;
    let shared_user = app.register_user("shared@example.org", "basic").await;
    let token_owner = app.register_user("token-owner@example.org", "basic").await;
    let shared = Shared {
        key_id: shared_key["id"].as_str().expect("id").to_string(),
        user_id: shared_user["id"].as_str().expect("id").to_string(),
        token_owner: token_owner["id"].as_str().expect("id").to_string(),
    };
    let creds = credentials(&app).await;
    let routes = routes();
    assert_eq!(creds.len(), 15, "every credential kind is in the matrix");

    let mut failures = Vec::new();
    let mut cells = 0;
    for route in &routes {
        for cred in &creds {
            cells += 1;
            let (path, body) = prepare(&app, &shared, route, cred, cells).await;
            let want = expected(route, cred);
            let size_before = app.log_size();
            let mut request = app.client.request(route.method.clone(), app.url(&path));
            if let Some(secret) = &cred.secret {
                request = request.bearer_auth(secret);
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            for (name, value) in host_request_headers(route.template) {
                request = request.header(name, value);
            }
            let response = request.send().await.expect("request");
            let got = response.status().as_u16();
            let cell = format!("{} {} × {}", route.method, route.template, cred.name);
            let is_json = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if route.rule == Rule::HostSearch {
                let cache = response.headers().get("cache-control");
                if cache.is_none_or(|v| v != "no-store") {
                    failures.push(format!(
                        "{cell}: Cache-Control {cache:?}, expected no-store"
                    ));
                }
            }
            let text = response.text().await.expect("body");
            if got != want {
                failures.push(format!("{cell}: expected {want}, got {got}: {text}"));
                continue;
            }
            if got >= 400 {
                if !is_json {
                    failures.push(format!("{cell}: error is not JSON: {text}"));
                    continue;
                }
                let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let code = value["error"]["code"].as_str();
                if code != expected_code(route, cred, got) {
                    failures.push(format!(
                        "{cell}: expected code {:?}, got {code:?}",
                        expected_code(route, cred, got)
                    ));
                }
                // RFC 6750 §3: every 401 names the Bearer scheme; a refused credential
                // says invalid_token, a missing one says nothing more.
                let want_challenge = match (got, &cred.secret) {
                    (401, None) => Some("Bearer realm=\"keyledger\""),
                    (401, Some(_)) => Some("Bearer realm=\"keyledger\", error=\"invalid_token\""),
                    _ => None,
                };
                if challenge.as_deref() != want_challenge {
                    failures.push(format!(
                        "{cell}: WWW-Authenticate {challenge:?}, expected {want_challenge:?}"
                    ));
                }
                let size_after = app.log_size();
                if size_after != size_before {
                    failures.push(format!(
                        "{cell}: refused, yet the log grew from {size_before} to {size_after}"
                    ));
                }
            }
        }
    }
    assert_eq!(cells, routes.len() * creds.len());
    assert!(
        failures.is_empty(),
        "{} of {cells} cells are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    app.stop().await;
}

/// The matrix's expectation table itself is what the role rules say, spot-checked by hand.
#[test]
fn expectation_table_follows_the_role_rules() {
    let routes = routes();
    let find = |method: Method, template: &str| {
        routes
            .iter()
            .find(|r| r.method == method && r.template == template)
            .expect("route in table")
    };
    let cred = |auth| Cred {
        name: "x",
        secret: None,
        auth,
        user_id: None,
    };
    let checkpoint = find(Method::GET, "/v1/audit/checkpoint");
    let me_tokens = find(Method::GET, "/v1/me/tokens");
    let create_key = find(Method::POST, "/v1/admin/api-keys");
    let healthz = find(Method::GET, "/healthz");
    let nginx = find(Method::GET, "/v1/auth/nginx");
    assert_eq!(expected(nginx, &cred(Auth::Key(Role::Basic))), 200);
    assert_eq!(expected(nginx, &cred(Auth::Key(Role::Limited))), 403);
    assert_eq!(expected(nginx, &cred(Auth::User(Role::Auditor))), 403);
    assert_eq!(expected(nginx, &cred(Auth::Refused)), 401);
    assert_eq!(expected(checkpoint, &cred(Auth::User(Role::Auditor))), 200);
    assert_eq!(expected(checkpoint, &cred(Auth::Key(Role::Basic))), 403);
    assert_eq!(expected(checkpoint, &cred(Auth::Refused)), 401);
    assert_eq!(expected(me_tokens, &cred(Auth::Key(Role::Admin))), 403);
    assert_eq!(expected(me_tokens, &cred(Auth::User(Role::Limited))), 200);
    assert_eq!(expected(create_key, &cred(Auth::User(Role::Admin))), 201);
    assert_eq!(expected(create_key, &cred(Auth::User(Role::Auditor))), 403);
    assert_eq!(expected(healthz, &cred(Auth::Refused)), 200);
}

/// The `.route(` calls of a router source, as `METHOD path`.
fn routes_in_source(source: &str) -> Vec<String> {
    let body = source
        .split_once(".fallback(")
        .map_or(source, |(before, _)| before);
    let mut found = Vec::new();
    for chunk in body.split(".route(").skip(1) {
        // A chunk ends where the next builder call starts.
        let chunk = chunk.split_once(".merge(").map_or(chunk, |(c, _)| c);
        let path = chunk
            .split('"')
            .nth(1)
            .expect("a .route( call starts with its path");
        for method in ["get", "post", "patch", "delete", "put", "options"] {
            let call = format!("{method}(");
            let mut rest = chunk;
            while let Some(at) = rest.find(&call) {
                let before = rest[..at].chars().next_back();
                if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
                    found.push(format!("{} {path}", method.to_uppercase()));
                }
                rest = &rest[at + call.len()..];
            }
        }
    }
    found
}

/// The matrix lists exactly the routes of `src/http/routes.rs` and of the routers it merges
/// (read from their source, so a new route without a row here fails).
#[test]
fn matrix_covers_every_route_of_the_router() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
    let source = std::fs::read_to_string(format!("{dir}/routes.rs")).expect("routes.rs");
    let mut in_router = routes_in_source(&source);
    // `.merge(super::ui::routes())` and the like: the merged module's routes count too.
    for merged in source.split(".merge(super::").skip(1) {
        let module = merged.split("::").next().expect("module name");
        let merged_source =
            std::fs::read_to_string(format!("{dir}/{module}.rs")).expect("merged router module");
        let merged_source = merged_source
            .split_once("#[cfg(test)]")
            .map_or(merged_source.as_str(), |(before, _)| before);
        in_router.extend(routes_in_source(merged_source));
    }
    in_router.sort();
    let mut in_matrix: Vec<String> = routes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.template))
        .collect();
    in_matrix.sort();
    assert_eq!(in_matrix, in_router);
}
