//! `TestApp`: a keyledger server on `127.0.0.1:0` over a fresh temporary data dir (and, for
//! the PostgreSQL runs, a fresh database), with a manual clock, the bootstrap admin secret,
//! and request helpers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use keyledger::domain::{Clock, ManualClock, SystemClock};
use keyledger::http::{AppState, ServerConfig};
use keyledger::ledger::Ledger;
use keyledger::policy::Policy;
use keyledger::server::{self, NodeConfig, StoreChoice};

use crate::postgres_server::Postgres;

/// The store a test's server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Postgres,
}

tokio::task_local! {
    /// The store of the test running in this task (sled when unset).
    pub static BACKEND: Backend;
}

/// The PostgreSQL server of this test binary, started on first use.
pub fn postgres() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(Postgres::start)
}
use reqwest::{Method, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// Secret of the bootstrap admin API key.
    pub admin: String,
    /// Id of the bootstrap admin API key.
    pub admin_id: String,
    pub clock: Arc<ManualClock>,
    pub ledger: Ledger,
    pub state: AppState,
    /// The data dir (inside `dir`).
    pub data_dir: std::path::PathBuf,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// A server with the built-in policy and a 60 s activity window.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(Policy::builtin()).await
    }

    /// A server with the given policy.
    pub async fn spawn_with(policy: Policy) -> TestApp {
        TestApp::spawn_configured(policy, ServerConfig::default()).await
    }

    /// A server with the given policy and settings.
    pub async fn spawn_configured(policy: Policy, config: ServerConfig) -> TestApp {
        let server_config = config;
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let mut config = NodeConfig::sled(&data_dir);
        config.origin = Some("test.keyledger/log".into());
        if BACKEND.try_with(|b| *b) == Ok(Backend::Postgres) {
            let server = tokio::task::spawn_blocking(postgres)
                .await
                .expect("postgres");
            let db = tokio::task::spawn_blocking(|| postgres().create_database())
                .await
                .expect("create database");
            config.store = StoreChoice::Postgres(server.uri(&db));
        }
        let (ledger, bootstrap) = server::open_node(&config, clock.clone())
            .await
            .expect("open ledger");
        let bootstrap = bootstrap.expect("a new data dir has a bootstrap key");
        let state = AppState::new(ledger.clone(), server_config, policy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(
            listener,
            state.clone(),
            server::Shutdown::on(async {
                let _ = rx.await;
            }),
        ));
        TestApp {
            addr,
            client: reqwest::Client::new(),
            admin: bootstrap.secret.expose().to_string(),
            admin_id: bootstrap.key_id.to_string(),
            clock,
            ledger,
            state,
            data_dir,
            dir,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request with an optional bearer secret and optional JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        secret: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    pub async fn get(&self, path: &str, secret: Option<&str>) -> Response {
        self.send(Method::GET, path, secret, None).await
    }

    pub async fn post(&self, path: &str, secret: Option<&str>, body: Value) -> Response {
        self.send(Method::POST, path, secret, Some(body)).await
    }

    pub async fn patch(&self, path: &str, secret: Option<&str>, body: Value) -> Response {
        self.send(Method::PATCH, path, secret, Some(body)).await
    }

    pub async fn delete(&self, path: &str, secret: Option<&str>) -> Response {
        self.send(Method::DELETE, path, secret, None).await
    }

    /// Creates an API key as the bootstrap admin; returns (key object, secret).
    pub async fn create_key(&self, name: &str, role: &str) -> (Value, String) {
        let response = self
            .post(
                "/v1/admin/api-keys",
                Some(&self.admin),
                json!({"name": name, "role": role}),
            )
            .await;
        assert_eq!(response.status(), 201, "creating key {name}");
        let body: Value = response.json().await.expect("json");
        let secret = body["secret"].as_str().expect("secret").to_string();
        (body["api_key"].clone(), secret)
    }

    /// Registers a user as the bootstrap admin; returns the user object.
    pub async fn register_user(&self, email: &str, role: &str) -> Value {
        let response = self
            .post(
                "/v1/admin/users",
                Some(&self.admin),
                json!({"email": email, "role": role}),
            )
            .await;
        assert_eq!(response.status(), 201, "registering {email}");
        let body: Value = response.json().await.expect("json");
        body["user"].clone()
    }

    /// Issues a PAT for a user as the bootstrap admin; returns (token object, secret).
    pub async fn issue_token(&self, user_id: &str, name: &str) -> (Value, String) {
        let response = self
            .post(
                &format!("/v1/admin/users/{user_id}/tokens"),
                Some(&self.admin),
                json!({"name": name}),
            )
            .await;
        assert_eq!(response.status(), 201, "issuing token {name}");
        let body: Value = response.json().await.expect("json");
        let secret = body["secret"].as_str().expect("secret").to_string();
        (body["token"].clone(), secret)
    }

    /// Asks `/v1/verify`; returns the answer.
    pub async fn verify(&self, key: &str, method: &str, path: &str) -> Value {
        let response = self
            .post(
                "/v1/verify",
                None,
                json!({"key": key, "method": method, "path": path}),
            )
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }

    /// Every stored entry from seq `from` on, `(seq, bytes)` in seq order, read from the
    /// store (a blocking call, made off the async workers: PostgreSQL's client needs that).
    pub fn stored(&self, from: u64) -> Vec<(u64, Vec<u8>)> {
        tokio::task::block_in_place(|| {
            self.ledger
                .store()
                .entries(from, u64::MAX)
                .collect::<Result<Vec<_>, _>>()
                .expect("read the stored entries")
        })
    }

    /// Number of entries in the log (the latest checkpoint's size).
    pub fn log_size(&self) -> u64 {
        self.ledger.checkpoint().checkpoint.size
    }

    /// Stops the server cleanly (closing the activity window) and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("join").expect("serve");
        }
    }
}

/// Reads a JSON error body and returns its code.
pub async fn error_code(response: Response) -> String {
    let body: Value = response.json().await.expect("error body is JSON");
    body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_string()
}

/// Asserts that `response` is the JSON error `code` with `status`, its `Content-Type` JSON;
/// returns the body.
pub async fn expect_error(response: Response, status: u16, code: &str) -> Value {
    let got = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = response.text().await.expect("error body");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {got} {text:?}"));
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "answer: {text}"
    );
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?} of {text}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error.message: {text}"
    );
    body
}

/// Asserts a 200 JSON answer and returns its body.
pub async fn json_ok(response: Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).expect("JSON body")
}

/// The value of the sample `series` (name and labels exactly as rendered).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}
