//! Start-up and the serving loop: open the data dir, check and replay the log, create the
//! genesis and the bootstrap admin key on first run, then serve until told to stop.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::activity::ActivityTracker;
use crate::crypto::secret::{PlainSecret, SecretKind};
use crate::domain::{Actor, Clock, Command, KeyName, Role};
use crate::http::{AppState, router};
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

/// Opens the ledger in `data_dir`, creating key, genesis and bootstrap admin key on first
/// start. Refuses (with the first bad seq) when the stored log does not check.
pub async fn open_ledger(
    data_dir: &Path,
    origin: Option<&str>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Ledger, Option<Bootstrap>)> {
    let (signer, _created) = ledger::load_or_create(data_dir, origin, DEFAULT_ORIGIN)?;
    let log_dir = data_dir.join(LOG_DIR);
    let store =
        SledStore::open(&log_dir).with_context(|| format!("opening {}", log_dir.display()))?;
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

/// Serves the API on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish and stops the ledger's writer after its last commit.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
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
    let app = router(state);
    // Small answers (a verify, a short export) must not wait on Nagle's algorithm.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP");
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
    served
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

/// Installs the SIGINT and SIGTERM handlers now and returns a future that resolves on
/// either. Installing them before the server announces itself matters: a signal that arrives
/// between "listening" and the first poll of a lazily-installed handler would kill the
/// process instead of shutting it down cleanly.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutting down: finishing in-flight requests and the last commit");
    })
}
