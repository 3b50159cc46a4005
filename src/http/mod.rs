//! The HTTP API: routes, extractors, and the mapping of every failure to the JSON error
//! shape. Handlers receive already-parsed values and call the ledger; they hold no state of
//! their own.

mod admin;
mod audit;
mod auth;
pub mod client_addr;
mod conditional;
pub mod connections;
pub mod error;
mod extract;
pub mod failures;
mod forward_auth;
mod listing;
mod me;
pub mod observe;
mod routes;
mod ui;
mod verify;
mod views;

pub use auth::{AdminOnly, AnyRole, AuditReader, Caller, RoleRule};
pub use connections::HttpLimits;
pub use error::ApiError;
pub use routes::router;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::activity::ActivityTracker;
use crate::ledger::Ledger;
use crate::policy::Policy;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The ledger: commands and current state.
    pub ledger: Ledger,
    /// Server-wide settings.
    pub config: Arc<ServerConfig>,
    /// Usage counted since the last activity window closed.
    pub activity: Arc<ActivityTracker>,
    /// Which role may call which host-application endpoint.
    pub policy: Arc<Policy>,
    /// Set when a shutdown has begun: `/readyz` answers 503 so load balancers drain.
    pub draining: Arc<AtomicBool>,
    /// Failed authentications per client address.
    pub failures: Arc<failures::FailureLimiter>,
}

impl AppState {
    /// State over a ledger with default settings and the built-in policy.
    pub fn new(ledger: Ledger, config: ServerConfig, policy: Policy) -> AppState {
        AppState {
            ledger,
            activity: Arc::new(ActivityTracker::new()),
            policy: Arc::new(policy),
            draining: Arc::new(AtomicBool::new(false)),
            failures: Arc::new(failures::FailureLimiter::new(
                config.auth_failures_per_minute,
            )),
            config: Arc::new(config),
        }
    }

    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Settings of a running server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long an activity window lasts, in seconds.
    pub activity_window_secs: u64,
    /// Timeouts and the connection limit of the HTTP layer.
    pub http: HttpLimits,
    /// How long the server keeps serving after a shutdown signal, with `/readyz` at 503,
    /// so that load balancers take it out of rotation before it stops.
    pub shutdown_grace: Duration,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: client_addr::TrustedProxies,
    /// A header forward-auth also takes the credential from (e.g. `X-API-Key`).
    pub api_key_header: Option<axum::http::HeaderName>,
    /// Failed authentications allowed per client address and minute (0: no limit).
    pub auth_failures_per_minute: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            activity_window_secs: 60,
            http: HttpLimits::default(),
            shutdown_grace: Duration::ZERO,
            trusted_proxies: client_addr::TrustedProxies::default(),
            api_key_header: None,
            auth_failures_per_minute: 30,
        }
    }
}

/// A JSON object body whose every rejection answers in the API's error shape: 415 without a
/// JSON content type, 413 over the size limit, 400 for malformed JSON, for a body that is not
/// an object (serde would otherwise fill a struct from an array), or one that does not fit.
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let body = extract::read_body(req, state).await?;
        extract::parse_object(&headers, &body).map(AppJson)
    }
}

/// Like [`AppJson`], but an empty body means `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let body = extract::read_body(req, state).await?;
        if body.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        extract::parse_object(&headers, &body).map(OptionalJson)
    }
}
