//! Start-up and the serving loop: open the store (sled in the data dir, or a shared
//! PostgreSQL), check and replay the log, create the genesis and the bootstrap admin key on
//! first run (exactly once, whichever node gets there first), then serve until told to stop.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::activity::ActivityTracker;
use crate::crypto::note::{NoteSigner, NoteVerifier};
use crate::crypto::secret::{PlainSecret, SecretKind};
use crate::domain::{Actor, Clock, Command, EventData, KeyName, Role};
use crate::http::{AppState, connections, router};
use crate::ledger::snapshot::SnapshotFile;
use crate::ledger::{self, Ledger, LedgerError, LedgerOptions};
use crate::store::{PgStore, SledStore, Store};

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

/// Where the log lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    /// sled in `<data dir>/log`, this process only (the default).
    Sled,
    /// A PostgreSQL database shared by every node, by its libpq URI.
    Postgres(String),
}

impl StoreChoice {
    /// Parses `--store`: a `postgres://` or `postgresql://` URI (a bare `sled` means the
    /// default).
    pub fn parse(raw: &str) -> anyhow::Result<StoreChoice> {
        let raw = raw.trim();
        if raw.is_empty() || raw == "sled" {
            Ok(StoreChoice::Sled)
        } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Ok(StoreChoice::Postgres(raw.to_string()))
        } else {
            bail!("--store must be a postgres:// or postgresql:// URI (or `sled`, the default)")
        }
    }
}

/// How a node finds its log, its key and its cache.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The data dir: the sled log and the key by default; node-local caches always.
    pub data_dir: PathBuf,
    pub store: StoreChoice,
    /// The signing key file (default `<data dir>/signing.key`).
    pub signing_key: Option<PathBuf>,
    /// The origin of a new log (checked against an existing key's).
    pub origin: Option<String>,
    /// How long a node on a shared store may go without confirming it is current.
    pub max_staleness: Duration,
}

impl NodeConfig {
    /// A sled node in `data_dir` with default settings.
    pub fn sled(data_dir: &Path) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.to_path_buf(),
            store: StoreChoice::Sled,
            signing_key: None,
            origin: None,
            max_staleness: Duration::from_secs(2),
        }
    }

    /// The signing key file.
    pub fn key_path(&self) -> PathBuf {
        self.signing_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join(ledger::KEY_FILE))
    }
}

/// Opens the sled store of `data_dir`, saying why when it cannot (a running server, no
/// write permission, a read-only file system).
pub fn open_sled(data_dir: &Path) -> anyhow::Result<SledStore> {
    let log_dir = data_dir.join(LOG_DIR);
    SledStore::open(&log_dir)
        .map_err(|e| anyhow::anyhow!(ledger::data_dir::explain_open_error(&log_dir, &e)))
}

/// Opens the store a node is configured with. Blocking (and PostgreSQL's client must not
/// run on an async worker): call it from a blocking thread.
pub fn open_store(config: &NodeConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.store {
        StoreChoice::Sled => Arc::new(open_sled(&config.data_dir)?),
        StoreChoice::Postgres(uri) => Arc::new(
            PgStore::connect(uri)
                .with_context(|| "connecting to the PostgreSQL store".to_string())?,
        ),
    })
}

/// Runs blocking work (store access) off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a start-up task failed")?
}

/// The signing key of a node, and whether it is new (not yet on disk).
fn node_signer(config: &NodeConfig) -> anyhow::Result<(NoteSigner, bool)> {
    let path = config.key_path();
    if path.exists() {
        Ok((ledger::load_signer(&path, config.origin.as_deref())?, false))
    } else {
        let origin = config.origin.as_deref().unwrap_or(DEFAULT_ORIGIN);
        Ok((ledger::generate(origin)?, true))
    }
}

/// Refuses a key that is not the one the stored log was created with, saying which.
fn check_key_matches(
    store: &dyn Store,
    signer: &NoteSigner,
    new_key: bool,
    key_path: &Path,
) -> anyhow::Result<()> {
    let Some((origin, public_key)) = ledger::stored_genesis(store)? else {
        return Ok(());
    };
    let ours = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        signer.public_key(),
    );
    if new_key {
        bail!(
            "{} holds a log (origin {origin:?}, public key {public_key}) but {} does not exist: \
             copy that log's signing key there (or pass --signing-key)",
            store.describe(),
            key_path.display()
        );
    }
    if origin != signer.name() || public_key != ours {
        bail!(
            "the signing key {} (origin {:?}, key id {}) is not the key of the log in {} \
             (origin {origin:?}, public key {public_key}); refusing to start",
            key_path.display(),
            signer.name(),
            signer.key_id_hex(),
            store.describe()
        );
    }
    Ok(())
}

/// Opens the ledger of a node: its store, its key (created, mode 0600, when the log does
/// not exist yet and the file is absent), the check of the stored log, and on first start
/// the genesis and the bootstrap admin key. Refuses (with the first bad seq) a log that
/// does not check, a key that is not the log's, and a data dir group or others may read.
pub async fn open_node(
    config: &NodeConfig,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Ledger, Option<Bootstrap>)> {
    ledger::data_dir::prepare(&config.data_dir)?;
    let (signer, new_key) = node_signer(config)?;
    let key_path = config.key_path();
    let opened = {
        let config = config.clone();
        let signer = signer.clone();
        let clock = clock.clone();
        let key_path = key_path.clone();
        blocking(move || {
            let store = open_store(&config)?;
            check_key_matches(store.as_ref(), &signer, new_key, &key_path)?;
            if new_key {
                // On disk before any genesis signed with it can exist: a crash can never
                // leave a log whose key is lost.
                ledger::write_new_key(&key_path, &signer)?;
            }
            let options = LedgerOptions {
                max_staleness: config.max_staleness,
                snapshot: Some(SnapshotFile::in_dir(&config.data_dir)),
            };
            let described = store.describe();
            Ledger::open_with(store, signer, clock, options).with_context(|| {
                format!("the log in {described} does not check; refusing to serve")
            })
        })
        .await
    };
    let ledger = match opened {
        Ok(ledger) => ledger,
        Err(e) => {
            forget_new_key(new_key, &key_path);
            return Err(e);
        }
    };
    match bootstrap(&ledger, &signer).await {
        Ok(made) => Ok((ledger, made)),
        Err(e) => {
            ledger.shutdown().await;
            // Another node may have created the log first, with another key.
            let store = ledger.store().clone();
            let theirs = blocking(move || Ok(ledger::stored_genesis(store.as_ref())?)).await;
            if let (true, Ok(Some((origin, public_key)))) = (new_key, theirs) {
                forget_new_key(new_key, &key_path);
                bail!(
                    "another node created this log first (origin {origin:?}, public key \
                     {public_key}); copy its signing key to {}",
                    key_path.display()
                );
            }
            Err(e)
        }
    }
}

/// Removes a key file this start wrote, when the start failed before any log used it.
fn forget_new_key(new_key: bool, path: &Path) {
    if new_key {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(error = %e, path = %path.display(), "could not remove the unused new key file");
        }
    }
}

/// On a log without genesis, or without any key or user yet (a crash right after the
/// genesis), appends what makes it usable and returns the bootstrap key to show once; on a
/// log in use, nothing. Decided under the head lock, so with several nodes starting at
/// once exactly one gets the key.
async fn bootstrap(ledger: &Ledger, signer: &NoteSigner) -> anyhow::Result<Option<Bootstrap>> {
    let needed =
        ledger.read(|s| s.origin.is_none() || (s.api_keys.is_empty() && s.users.is_empty()));
    if !needed {
        return Ok(None);
    }
    let secret = PlainSecret::generate(SecretKind::ApiKey)?;
    let key_id = Uuid::now_v7();
    let command = Command::Bootstrap {
        origin: signer.name().to_string(),
        public_key: base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            signer.public_key(),
        ),
        key_id,
        name: KeyName::parse(BOOTSTRAP_KEY_NAME)?,
        secret_sha256: secret.sha256(),
        display: secret.display(),
    };
    let receipt = ledger
        .execute(command, Actor::system())
        .await
        .context("creating the genesis and the bootstrap admin key")?;
    let made_key = receipt
        .entries
        .iter()
        .any(|e| matches!(&e.data, EventData::ApiKeyCreated(d) if d.key_id == key_id));
    Ok(made_key.then_some(Bootstrap { key_id, secret }))
}

/// Opens the sled ledger in `data_dir` (the single-node default; see [`open_node`]).
pub async fn open_ledger(
    data_dir: &Path,
    origin: Option<&str>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Ledger, Option<Bootstrap>)> {
    let mut config = NodeConfig::sled(data_dir);
    config.origin = origin.map(str::to_string);
    open_node(&config, clock).await
}

/// The verifier for a full check: the key file's public half, or a vkey given.
pub fn check_verifier(config: &NodeConfig, vkey: Option<&str>) -> anyhow::Result<NoteVerifier> {
    match vkey {
        Some(vkey) => NoteVerifier::parse(vkey).context("--vkey is not a verifier key"),
        None => {
            let path = config.key_path();
            if !path.exists() {
                bail!(
                    "{} does not exist: give the log's signing key (--signing-key) or its verifier key (--vkey)",
                    path.display()
                );
            }
            Ok(ledger::load_signer(&path, None)?.verifier().clone())
        }
    }
}

/// Checks a log completely (every entry, signature, node and the root) with its public key.
pub fn check_log(
    config: &NodeConfig,
    verifier: &NoteVerifier,
) -> anyhow::Result<ledger::CheckReport> {
    if config.store == StoreChoice::Sled && !config.data_dir.join(LOG_DIR).exists() {
        bail!(
            "{} has no log: not a keyledger data dir",
            config.data_dir.display()
        );
    }
    let store = open_store(config)?;
    Ok(ledger::check(store.as_ref(), verifier)?)
}

/// Appends a `system` event creating a new admin API key, and returns it with its secret
/// (to be shown once): the way back when no admin credential is left, as Vault's
/// `operator generate-root`. Needs the log's signing key, so only whoever controls the
/// server's files can do it. On sled, the store's lock keeps a running server out; on a
/// shared store the other nodes may keep running.
pub async fn recover_admin(
    config: &NodeConfig,
    name: Option<&str>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Bootstrap> {
    let key_path = config.key_path();
    if !key_path.exists() {
        bail!(
            "{} does not exist: recover-admin needs the log's signing key",
            key_path.display()
        );
    }
    ledger::data_dir::prepare(&config.data_dir)?;
    let signer = ledger::load_signer(&key_path, None)?;
    let ledger = {
        let config = config.clone();
        let clock = clock.clone();
        blocking(move || {
            let store = open_store(&config)?;
            check_key_matches(store.as_ref(), &signer, false, &key_path)?;
            let described = store.describe();
            let options = LedgerOptions {
                max_staleness: config.max_staleness,
                snapshot: None,
            };
            Ledger::open_with(store, signer, clock, options).with_context(|| {
                format!("the log in {described} does not check; refusing to change it")
            })
        })
        .await?
    };
    if ledger.read(|s| s.origin.is_none()) {
        ledger.shutdown().await;
        bail!("the log is empty: start the server once to create it and its bootstrap key");
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
    match created {
        Ok(_) => Ok(Bootstrap { key_id, secret }),
        Err(LedgerError::Domain(e)) => Err(anyhow::anyhow!("{e}")),
        Err(e) => Err(anyhow::anyhow!("creating the recovery admin key: {e}")),
    }
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
    // Forget failed-authentication counts of addresses that stopped failing.
    let pruning = {
        let failures = state.failures.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                ticks.tick().await;
                failures.prune();
            }
        })
    };
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
    pruning.abort();
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
