//! Start-up and the serving loop: open the data dir, check and replay the log, create the
//! genesis and the bootstrap admin key on first run, then serve until told to stop.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::crypto::secret::{PlainSecret, SecretKind};
use crate::domain::{Actor, Clock, Command, KeyName, Role};
use crate::http::{AppState, ServerConfig, router};
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
    let app = router(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP");
    ledger.shutdown().await;
    served
}

/// Settings of `keyledger serve`.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub origin: Option<String>,
    pub config: ServerConfig,
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests and the last commit");
}
