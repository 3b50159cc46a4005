//! The ledger: commands in, signed entries out, through one writer.
//!
//! One writer thread owns every append. It takes whatever commands are waiting (group
//! commit), decides each against its own copy of the state, signs the resulting entries,
//! extends the Merkle tree, signs a checkpoint for the new size, writes the whole batch in
//! one atomic, fsynced store commit, applies the entries to the read model, and only then
//! answers the waiting callers. So:
//! - a successful answer means the entries are on disk;
//! - commands are serialised, which gives per-stream optimistic concurrency for free;
//! - readers never see an entry that is not durable.
//!
//! If a commit fails the writer stops accepting commands for good (until restart): after a
//! failed fsync, what the OS reports about the file can no longer be trusted.

pub mod data_dir;
mod keyfile;
mod open;
mod writer;

pub use keyfile::{KEY_FILE, load_or_create};
pub use open::OpenError;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{mpsc, oneshot};

use crate::crypto::note::{Checkpoint, NoteSigner};
use crate::domain::{Actor, Clock, Command, DomainError, Entry, State};
use crate::metrics::Metrics;
use crate::projections::Projections;
use crate::store::Store;

/// Why a command was not appended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    /// The domain refused the command; nothing was appended.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Storage failed or the ledger is shut down; the command may not be appended.
    #[error("the ledger's storage is unavailable")]
    Unavailable,
}

/// The latest signed checkpoint.
#[derive(Clone, Debug)]
pub struct CheckpointState {
    /// The signed note, as served and exported.
    pub note: String,
    /// Its parsed content.
    pub checkpoint: Checkpoint,
}

/// What a committed command produced.
#[derive(Clone, Debug)]
pub struct Receipt {
    /// The entries appended, in seq order (empty when the command changed nothing).
    pub entries: Vec<Entry>,
}

struct WriteRequest {
    command: Command,
    actor: Actor,
    reply: oneshot::Sender<Result<Receipt, LedgerError>>,
}

enum Message {
    Write(WriteRequest),
    Shutdown(oneshot::Sender<()>),
}

/// State shared between the writer and readers.
struct Shared {
    store: Arc<dyn Store>,
    read_model: RwLock<State>,
    projections: RwLock<Projections>,
    checkpoint: RwLock<Arc<CheckpointState>>,
    available: AtomicBool,
    metrics: Arc<Metrics>,
    origin: String,
    vkey: String,
    public_key: [u8; 32],
}

/// What `keyledger check` found in a sound log.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// Entries checked (the checkpoint's size).
    pub size: u64,
    /// The checkpoint note they match.
    pub checkpoint: String,
}

/// Checks a stopped ledger's store completely, every signature included.
pub fn check(store: &dyn Store, signer: &NoteSigner) -> Result<CheckReport, OpenError> {
    let opened = open::replay(store, signer, true)?;
    Ok(CheckReport {
        size: opened.checkpoint.checkpoint.size,
        checkpoint: opened.checkpoint.note,
    })
}

/// A handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Message>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    clock: Arc<dyn Clock>,
}

/// Entries replayed at start above which a snapshot is saved right away.
pub const SNAPSHOT_AFTER_REPLAYING: u64 = 10_000;

/// Most commands taken into one batch.
pub const MAX_BATCH: usize = 1024;

impl Ledger {
    /// Opens the ledger over `store`: checks the stored log against its checkpoint,
    /// rebuilds the state, and starts the writer. An empty store gives an empty ledger,
    /// whose first command must be [`Command::Initialize`].
    pub fn open(
        store: Arc<dyn Store>,
        signer: NoteSigner,
        clock: Arc<dyn Clock>,
    ) -> Result<Ledger, OpenError> {
        let started = std::time::Instant::now();
        let mut opened = open::replay(store.as_ref(), &signer, false)?;
        let replayed = opened.replayed;
        tracing::info!(
            entries = opened.checkpoint.checkpoint.size,
            replayed,
            seconds = started.elapsed().as_secs_f64(),
            "log checked against the checkpoint (entries not replayed came from the snapshot)"
        );
        let projections = std::mem::take(&mut opened.projections);
        let checkpoint = Arc::new(opened.checkpoint.clone());
        let shared = Arc::new(Shared {
            store: store.clone(),
            read_model: RwLock::new(opened.state.clone()),
            projections: RwLock::new(projections),
            checkpoint: RwLock::new(checkpoint),
            available: AtomicBool::new(true),
            metrics: Arc::new(Metrics::default()),
            origin: signer.name().to_string(),
            vkey: signer.vkey(),
            public_key: signer.public_key(),
        });
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let writer = writer::Writer::new(shared.clone(), signer, clock.clone(), opened);
        let handle = std::thread::Builder::new()
            .name("keyledger-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| OpenError::Io(e.to_string()))?;
        let ledger = Ledger {
            shared,
            tx,
            writer: Arc::new(Mutex::new(Some(handle))),
            clock,
        };
        // A long replay (first start after a crash, or a log written by an older build)
        // is paid once: snapshot now so the next start skips it.
        if replayed >= SNAPSHOT_AFTER_REPLAYING {
            if let Err(e) = ledger.save_snapshot() {
                tracing::warn!(error = %e, "could not save the projection snapshot");
            }
        }
        Ok(ledger)
    }

    /// Saves the read side as a snapshot at the current checkpoint. Readers and the writer
    /// go on meanwhile; the snapshot is taken under the read locks, so it is consistent.
    pub fn save_snapshot(&self) -> Result<(), crate::store::StoreError> {
        let bytes = {
            let state = self
                .shared
                .read_model
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let projections = self
                .shared
                .projections
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let checkpoint = self.checkpoint();
            // The writer publishes state, projections, then the checkpoint; holding both
            // read locks, the state can only be at or ahead of the checkpoint we read.
            if state.size != checkpoint.checkpoint.size || projections.audit.len() != state.size {
                return Ok(()); // a commit is being published; the next snapshot will do
            }
            crate::codec::encode(&open::SnapshotRef {
                size: state.size,
                root: checkpoint.checkpoint.root,
                state: &state,
                projections: &projections,
            })
            .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?
        };
        self.shared.store.save_snapshot(&bytes)
    }

    /// Appends the events of `command`, done by `actor`. Returns once they are durable.
    pub async fn execute(&self, command: Command, actor: Actor) -> Result<Receipt, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Message::Write(WriteRequest {
                command,
                actor,
                reply,
            }))
            .await
            .map_err(|_| LedgerError::Unavailable)?;
        answer.await.map_err(|_| LedgerError::Unavailable)?
    }

    /// Reads the current state (every committed entry applied).
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let state = self
            .shared
            .read_model
            .read()
            .unwrap_or_else(|p| p.into_inner());
        f(&state)
    }

    /// Reads the audit projections (every committed entry applied).
    pub fn read_projections<R>(&self, f: impl FnOnce(&Projections) -> R) -> R {
        let projections = self
            .shared
            .projections
            .read()
            .unwrap_or_else(|p| p.into_inner());
        f(&projections)
    }

    /// The latest checkpoint.
    pub fn checkpoint(&self) -> Arc<CheckpointState> {
        self.shared
            .checkpoint
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Process-wide counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Whether the writer can still commit.
    pub fn is_available(&self) -> bool {
        self.shared.available.load(Ordering::SeqCst)
    }

    /// The store, for reads of entries and Merkle nodes.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The clock the ledger stamps entries with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The log's origin (checkpoint name).
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// The verifier key string, `<origin>+<hex8>+<base64>`.
    pub fn vkey(&self) -> &str {
        &self.shared.vkey
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.shared.public_key
    }

    /// Stops the writer after it has committed everything already queued. Idempotent.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Message::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            // The writer is gone, so nothing moves: snapshot for a fast next start.
            let ledger = self.clone();
            let saved = tokio::task::spawn_blocking(move || ledger.save_snapshot()).await;
            if let Ok(Err(e)) = saved {
                tracing::warn!(error = %e, "could not save the projection snapshot");
            }
        }
    }
}
