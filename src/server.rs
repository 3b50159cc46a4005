//! Start-up and the serving loop: open the data dir, check and replay the log, create the
//! genesis and the bootstrap admin key on first run, then serve until told to stop.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::activity::ActivityTracker;
use crate::crypto::secret::{PlainSecret, SecretKind};
use crate::domain::{Actor, Clock, Command, KeyName, Role};
use crate::http::{AppState, connections, router};
use crate::ledger::{self, Ledger};
use crate::store::SledStore;

/// Name of the sled directory inside the data dir.
pub const LOG_DIR: &str = "log";
/// Origin used when none is given on first start.
pub const DEFAULT_ORIGIN: &str = "keyledger.local/log";
/// Name of the bootstrap admin key.
pub const BOOTSTRAP_KEY_NAME: &str = "bootstrap-admin";

/// The bootstrap admin key made on first start; its secret is shown once.
#[derive(Debug)]
pub struct Bootstrap {
    pub key_id: Uuid,
    pub secret: PlainSecret,
}

/// Opens the sled store of `data_dir`, saying why when it cannot (a running server, no
/// write permission, a read-only file system).
pub fn open_store(data_dir: &Path) -> anyhow::Result<SledStore> {
    let log_dir = data_dir.join(LOG_DIR);
    SledStore::open(&log_dir)
        .map_err(|e| anyhow::anyhow!(ledger::data_dir::explain_open_error(&log_dir, &e)))
}

/// Opens the ledger in `data_dir`, creating key, genesis and bootstrap admin key on first
/// start. Refuses (with the first bad seq) when the stored log does not check, and refuses
/// a data dir that group or others may read.
pub async fn open_ledger(
    data_dir: &Path,
    origin: Option<&str>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Ledger, Option<Bootstrap>)> {
    ledger::data_dir::prepare(data_dir)?;
    let (signer, _created) = ledger::load_or_create(data_dir, origin, DEFAULT_ORIGIN)?;
    let log_dir = data_dir.join(LOG_DIR);
    let store = open_store(data_dir)?;
    let origin = signer.name().to_string();
    let public_key = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        signer.public_key(),
    );
    let ledger = Ledger::open(Arc::new(store), signer, clock).with_context(|| {
        format!(
            "the log in {} does not check; refusing to serve",
            log_dir.display()
        )
    })?;
    if ledger.read(|s| s.origin.is_none()) {
        ledger
            .execute(Command::Initialize { origin, public_key }, Actor::system())
            .await
            .context("writing the genesis entry")?;
    }
    // A log with no key and no user yet (first start, or a crash right after genesis) gets
    // a bootstrap admin key; otherwise nobody could ever administer it.
    let mut bootstrap = None;
    if ledger.read(|s| s.api_keys.is_empty() && s.users.is_empty()) {
        let secret = PlainSecret::generate(SecretKind::ApiKey)?;
        let key_id = Uuid::now_v7();
        ledger
            .execute(
                Command::CreateApiKey {
                    key_id,
                    name: KeyName::parse(BOOTSTRAP_KEY_NAME)?,
                    role: Role::Admin,
                    expires_at: None,
                    secret_sha256: secret.sha256(),
                    display: secret.display(),
                },
                Actor::system(),
            )
            .await
            .context("creating the bootstrap admin key")?;
        bootstrap = Some(Bootstrap { key_id, secret });
    }
    Ok((ledger, bootstrap))
}

/// Appends, on a stopped server's log, a `system` event creating a new admin API key, and
/// returns it with its secret (to be shown once): the way back when no admin credential is
/// left, as Vault's `operator generate-root`. Needs the data dir's signing key, so only
/// whoever controls the server's files can do it; sled's lock keeps a running server out.
pub async fn recover_admin(
    data_dir: &Path,
    name: Option<&str>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Bootstrap> {
    ledger::data_dir::prepare(data_dir)?;
    if !data_dir.join(ledger::KEY_FILE).exists() {
        anyhow::bail!(
            "{} has no signing key: not a keyledger data dir",
            data_dir.display()
        );
    }
    let (signer, _) = ledger::load_or_create(data_dir, None, DEFAULT_ORIGIN)?;
    let store = open_store(data_dir)?;
    let log_dir = data_dir.join(LOG_DIR);
    let ledger = Ledger::open(Arc::new(store), signer, clock.clone()).with_context(|| {
        format!(
            "the log in {} does not check; refusing to change it",
            log_dir.display()
        )
    })?;
    if ledger.read(|s| s.origin.is_none()) {
        ledger.shutdown().await;
        anyhow::bail!(
            "the log in {} is empty: start the server once to create it and its bootstrap key",
            log_dir.display()
        );
    }
    let name = match name {
        Some(name) => KeyName::parse(name)?,
        None => KeyName::parse(&format!(
            "recovery-admin-{}",
            clock.now().datetime().format("%Y%m%dT%H%M%SZ")
        ))?,
    };
    let secret = PlainSecret::generate(SecretKind::ApiKey)?;
    let key_id = Uuid::now_v7();
    let created = ledger
        .execute(
            Command::CreateApiKey {
                key_id,
                name,
                role: Role::Admin,
                expires_at: None,
                secret_sha256: secret.sha256(),
                display: secret.display(),
            },
            Actor::system(),
        )
        .await;
    ledger.shutdown().await;
    created.context("creating the recovery admin key")?;
    Ok(Bootstrap { key_id, secret })
}

/// When to stop serving: `drain` starts the shutdown (readiness turns 503 and the server
/// keeps serving for [`ServerConfig::shutdown_grace`](crate::http::ServerConfig)); `now`,
/// if it resolves during the grace period, cuts it short.
pub struct Shutdown {
    drain: Pin<Box<dyn Future<Output = ()> + Send>>,
    now: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Shutdown {
    /// Shuts down when `drain` resolves, after the grace period.
    pub fn on(drain: impl Future<Output = ()> + Send + 'static) -> Shutdown {
        Shutdown {
            drain: Box::pin(drain),
            now: Box::pin(std::future::pending()),
        }
    }

    /// Shuts down on the first SIGINT or SIGTERM, after the grace period; a second signal
    /// ends the grace period at once. The handlers are installed now: a signal that arrived
    /// between "listening" and the first poll of a lazily-installed handler would kill the
    /// process instead of shutting it down cleanly.
    pub fn on_signals() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
        let (second_tx, second_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut first = Some(first_tx);
            let mut second = Some(second_tx);
            loop {
                tokio::select! {
                    _ = terminate.recv() => {},
                    _ = interrupt.recv() => {},
                }
                if let Some(tx) = first.take() {
                    tracing::info!(
                        "shutting down: draining, then finishing in-flight requests and the last commit"
                    );
                    let _ = tx.send(());
                } else if let Some(tx) = second.take() {
                    tracing::info!("second signal: ending the drain period now");
                    let _ = tx.send(());
                    return;
                }
            }
        });
        Ok(Shutdown {
            drain: Box::pin(async move {
                let _ = first_rx.await;
            }),
            now: Box::pin(async move {
                if second_rx.await.is_err() {
                    std::future::pending::<()>().await;
                }
            }),
        })
    }
}

/// Serves the API on `listener` until `shutdown` says so: then `/readyz` turns 503 while the
/// server keeps serving for the grace period, stops accepting, lets in-flight requests
/// finish, closes the open activity window and stops the ledger's writer after its last
/// commit.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let ledger = state.ledger.clone();
    let activity = state.activity.clone();
    let window = std::time::Duration::from_secs(state.config.activity_window_secs.max(1));
    let (stop_windows, stopped) = tokio::sync::oneshot::channel::<()>();
    let windows = tokio::spawn(close_activity_windows(
        ledger.clone(),
        activity.clone(),
        window,
        stopped,
    ));
    let limits = state.config.http;
    let grace = state.config.shutdown_grace;
    let draining = state.draining.clone();
    let Shutdown { drain, now } = shutdown;
    let stop = async move {
        drain.await;
        draining.store(true, std::sync::atomic::Ordering::SeqCst);
        if !grace.is_zero() {
            tracing::info!(
                seconds = grace.as_secs_f64(),
                "draining: /readyz answers 503 while requests are still served"
            );
            tokio::select! {
                () = tokio::time::sleep(grace) => {}
                () = now => {}
            }
        }
    };
    let metrics = ledger.metrics().clone();
    connections::serve(listener, router(state), limits, metrics, stop).await;
    // No request is in flight any more: close the open window, then stop the writer
    // after its last commit.
    // Stop the window task without cancelling a flush it may be in the middle of: its
    // summaries must reach the writer, not vanish with an aborted task.
    let _ = stop_windows.send(());
    let _ = windows.await;
    let now = ledger.clock().now();
    if let Err(e) = activity.flush(&ledger, now).await {
        tracing::error!(error = %e, "could not write the last activity window");
    }
    ledger.shutdown().await;
    Ok(())
}

/// Closes an activity window every `window`, appending its summaries.
async fn close_activity_windows(
    ledger: Ledger,
    activity: Arc<ActivityTracker>,
    window: std::time::Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut ticks = tokio::time::interval(window);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stop => return,
        }
        let now = ledger.clock().now();
        match activity.flush(&ledger, now).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(credentials = n, "activity window closed"),
            Err(e) => tracing::error!(error = %e, "could not write an activity window"),
        }
    }
}
