//! The ledger: commands in, signed entries out, whichever store the log lives in.
//!
//! One writer thread per node owns this node's appends. Each turn it takes whatever commands
//! are waiting (group commit), locks the log's head, catches up with entries other nodes
//! appended, decides each command against that latest state, signs the resulting entries,
//! extends the Merkle tree, signs a checkpoint for the new size, writes the batch in one
//! atomic, durable commit, makes it visible to readers, and only then answers the waiting
//! callers. So:
//! - a successful answer means the entries are durable;
//! - commands are serialised across every node (by the head lock), which gives per-stream
//!   optimistic concurrency (`If-Match`) and unique names for free;
//! - readers never see an entry that is not durable.
//!
//! Readers (verify, authentication, audit queries) are served from the read side, in
//! memory. On a store other nodes also append to, a follower thread tails the log and keeps
//! the read side current; the node counts as current only while it has confirmed, within
//! `max_staleness`, that it has applied everything committed. A node that is not current
//! refuses rather than answer from a possibly stale state (fail closed).
//!
//! On sled, a failed commit stops the writer for good (until restart): after a failed fsync
//! what the OS reports about the file can no longer be trusted. On PostgreSQL a failed
//! commit is retried by the next batch once the database is back; a commit whose outcome is
//! unknown is settled by locking the head again and looking.

pub mod data_dir;
mod follower;
mod keyfile;
mod open;
pub mod snapshot;
mod writer;

pub use keyfile::{KEY_FILE, generate, load_or_create, load_signer, write_new_key};
pub use open::OpenError;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::crypto::merkle::{Frontier, Hash};
use crate::crypto::note::{Checkpoint, NoteSigner, NoteVerifier};
use crate::domain::{Actor, Clock, Command, DomainError, Entry, State};
use crate::metrics::Metrics;
use crate::projections::Projections;
use crate::store::Store;
use snapshot::{SnapshotFile, SnapshotRef};

/// Why a command was not appended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    /// The domain refused the command; nothing was appended.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Storage failed or the ledger is shut down; the command was not appended.
    #[error("the ledger's storage is unavailable")]
    Unavailable,
    /// The log's store cannot be reached (or this node cannot confirm it is current); the
    /// command was not appended. Retrying later may succeed.
    #[error("the ledger's store cannot be reached")]
    Unreachable,
    /// The connection to the store failed while the command was being committed, and it
    /// could not be settled whether it was: read before retrying.
    #[error("the outcome of the command is unknown")]
    Unknown,
}

/// The latest signed checkpoint.
#[derive(Clone, Debug)]
pub struct CheckpointState {
    /// The signed note, as served and exported (empty for an empty log).
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

/// Settings of a ledger.
#[derive(Clone, Debug)]
pub struct LedgerOptions {
    /// On a shared store, how long the node may go without confirming it has applied
    /// everything committed before it refuses to answer.
    pub max_staleness: Duration,
    /// Where the node-local projection snapshot lives, if anywhere.
    pub snapshot: Option<SnapshotFile>,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            max_staleness: Duration::from_secs(2),
            snapshot: None,
        }
    }
}

/// What readers see: every committed entry up to the checkpoint applied.
struct ReadSide {
    state: RwLock<State>,
    projections: RwLock<Projections>,
    checkpoint: RwLock<Arc<CheckpointState>>,
    /// The tree at the published size, to check what followers bring against the signed
    /// checkpoint before anyone can see it. Held while publishing, so publications are
    /// serialised.
    frontier: Mutex<Frontier>,
    /// The last entries published, parsed, with their leaf hashes: the writer catches up
    /// from here (already checked against a signed checkpoint) rather than reading and
    /// parsing them from the store a second time.
    recent: Mutex<std::collections::VecDeque<(Arc<Entry>, Hash)>>,
}

/// Entries kept in [`ReadSide::recent`].
const RECENT: usize = 8192;

/// State shared between the writer, the follower and readers.
struct Shared {
    store: Arc<dyn Store>,
    read: ReadSide,
    verifier: NoteVerifier,
    /// Cleared when the writer can no longer commit (sled after a failed fsync).
    available: AtomicBool,
    metrics: Arc<Metrics>,
    /// Milliseconds since `epoch` until which this node counts as current.
    current_until: AtomicU64,
    epoch: Instant,
    max_staleness: Duration,
    shared_store: bool,
    stopping: AtomicBool,
}

impl Shared {
    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Records that at `at` this node had applied everything committed.
    fn confirm_current(&self, at: Instant) {
        let until = self.millis(at + self.max_staleness);
        self.current_until.fetch_max(until, Ordering::SeqCst);
    }

    fn is_current(&self) -> bool {
        !self.shared_store
            || self.millis(Instant::now()) < self.current_until.load(Ordering::SeqCst)
    }

    /// Makes committed entries visible, in seq order. Entries already applied are skipped;
    /// the rest must continue the published log, and the tree they extend must reach
    /// `checkpoint`'s root, or nothing is applied. Each entry comes with its leaf hash.
    fn publish(
        &self,
        entries: &[(Arc<Entry>, Hash)],
        checkpoint: CheckpointState,
    ) -> Result<(), String> {
        let mut frontier = self.read.frontier.lock().unwrap_or_else(|p| p.into_inner());
        let published = frontier.size();
        if checkpoint.checkpoint.size <= published {
            return Ok(());
        }
        let start = entries.partition_point(|(e, _)| e.seq < published);
        let fresh = &entries[start..];
        if fresh.first().map(|(e, _)| e.seq) != Some(published)
            || published + fresh.len() as u64 != checkpoint.checkpoint.size
        {
            return Err(format!(
                "entries do not continue the published log at {published} up to {}",
                checkpoint.checkpoint.size
            ));
        }
        let mut extended = frontier.clone();
        for (_, leaf) in fresh {
            extended.push(*leaf);
        }
        if extended.root() != checkpoint.checkpoint.root {
            return Err(format!(
                "entries {published}..{} do not reach the signed checkpoint's root",
                checkpoint.checkpoint.size
            ));
        }
        {
            let mut state = self.read.state.write().unwrap_or_else(|p| p.into_inner());
            for (entry, _) in fresh {
                state.apply(entry);
            }
        }
        {
            let mut recent = self.read.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.extend(fresh.iter().cloned());
            while recent.len() > RECENT {
                recent.pop_front();
            }
        }
        {
            let mut projections = self
                .read
                .projections
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for (entry, _) in fresh {
                projections.apply(entry);
            }
        }
        *self
            .read
            .checkpoint
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(checkpoint);
        *frontier = extended;
        Ok(())
    }
}

/// What `keyledger check` found in a sound log.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// Entries checked (the checkpoint's size).
    pub size: u64,
    /// The checkpoint note they match.
    pub checkpoint: String,
}

/// Checks a log completely, every signature included, with the log's public key only.
pub fn check(store: &dyn Store, verifier: &NoteVerifier) -> Result<CheckReport, OpenError> {
    let opened = open::replay(store, verifier, None, true)?;
    Ok(CheckReport {
        size: opened.checkpoint.checkpoint.size,
        checkpoint: opened.checkpoint.note,
    })
}

/// The genesis of a stored log, if it has one: its origin and base64 public key (read
/// without checking anything, to say which key a log wants).
pub fn stored_genesis(store: &dyn Store) -> Result<Option<(String, String)>, OpenError> {
    let Some(bytes) = store.entry(0)? else {
        return Ok(None);
    };
    let entry = crate::crypto::seal::parse_entry(&bytes).map_err(|e| OpenError::BadEntry {
        seq: 0,
        reason: e.to_string(),
    })?;
    match entry.data {
        crate::domain::EventData::LedgerInitialized(g) => Ok(Some((g.origin, g.public_key))),
        _ => Err(OpenError::BadEntry {
            seq: 0,
            reason: "seq 0 is not ledger.initialized".into(),
        }),
    }
}

/// A handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Message>,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
    clock: Arc<dyn Clock>,
    snapshot: Option<SnapshotFile>,
}

/// Entries replayed at start above which a snapshot is saved right away.
pub const SNAPSHOT_AFTER_REPLAYING: u64 = 10_000;

/// Most commands taken into one batch.
pub const MAX_BATCH: usize = 1024;

impl Ledger {
    /// Opens the ledger over `store` with default options (no snapshot).
    pub fn open(
        store: Arc<dyn Store>,
        signer: NoteSigner,
        clock: Arc<dyn Clock>,
    ) -> Result<Ledger, OpenError> {
        Ledger::open_with(store, signer, clock, LedgerOptions::default())
    }

    /// Opens the ledger over `store`: checks the stored log against its checkpoint,
    /// rebuilds the state (from the snapshot where it can), and starts the writer (and, on
    /// a shared store, the follower). An empty store gives an empty ledger, whose first
    /// command must be [`Command::Initialize`] or [`Command::Bootstrap`].
    pub fn open_with(
        store: Arc<dyn Store>,
        signer: NoteSigner,
        clock: Arc<dyn Clock>,
        options: LedgerOptions,
    ) -> Result<Ledger, OpenError> {
        let started = Instant::now();
        let snapshot = options.snapshot.as_ref().and_then(SnapshotFile::load);
        let verifier = signer.verifier().clone();
        let opened = open::replay(store.as_ref(), &verifier, snapshot, false)?;
        let replayed = opened.replayed;
        tracing::info!(
            entries = opened.checkpoint.checkpoint.size,
            replayed,
            seconds = started.elapsed().as_secs_f64(),
            store = %store.describe(),
            "log checked against the checkpoint (entries not replayed came from the snapshot)"
        );
        let shared_store = store.is_shared();
        let shared = Arc::new(Shared {
            store: store.clone(),
            read: ReadSide {
                state: RwLock::new(opened.state.clone()),
                projections: RwLock::new(opened.projections),
                checkpoint: RwLock::new(Arc::new(opened.checkpoint.clone())),
                frontier: Mutex::new(opened.frontier.clone()),
                recent: Mutex::new(std::collections::VecDeque::new()),
            },
            verifier,
            available: AtomicBool::new(true),
            metrics: Arc::new(Metrics::default()),
            current_until: AtomicU64::new(0),
            epoch: Instant::now(),
            max_staleness: options.max_staleness,
            shared_store,
            stopping: AtomicBool::new(false),
        });
        shared.confirm_current(started);
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let writer = writer::Writer::new(
            shared.clone(),
            signer,
            clock.clone(),
            opened.state,
            opened.frontier,
        );
        let mut threads = vec![
            std::thread::Builder::new()
                .name("keyledger-writer".into())
                .spawn(move || writer.run(rx))
                .map_err(|e| OpenError::Io(e.to_string()))?,
        ];
        if shared_store {
            let follower = follower::Follower::new(shared.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("keyledger-follower".into())
                    .spawn(move || follower.run())
                    .map_err(|e| OpenError::Io(e.to_string()))?,
            );
        }
        let ledger = Ledger {
            shared,
            tx,
            threads: Arc::new(Mutex::new(threads)),
            clock,
            snapshot: options.snapshot,
        };
        // A long replay (first start after a crash, a new node, a log written by an older
        // build) is paid once: snapshot now so the next start skips it.
        if replayed >= SNAPSHOT_AFTER_REPLAYING {
            if let Err(e) = ledger.save_snapshot() {
                tracing::warn!(error = %e, "could not save the projection snapshot");
            }
        }
        Ok(ledger)
    }

    /// Saves the read side as a snapshot at the current checkpoint, if the ledger has a
    /// snapshot file. Readers and the writer go on meanwhile; the snapshot is taken under
    /// the read locks, so it is consistent.
    pub fn save_snapshot(&self) -> std::io::Result<()> {
        let Some(file) = &self.snapshot else {
            return Ok(());
        };
        let read = &self.shared.read;
        let state = read.state.read().unwrap_or_else(|p| p.into_inner());
        let projections = read.projections.read().unwrap_or_else(|p| p.into_inner());
        let checkpoint = self.checkpoint();
        // Publication applies state, projections, then the checkpoint; holding both read
        // locks, the state can only be at or ahead of the checkpoint we read.
        if state.size != checkpoint.checkpoint.size || projections.audit.len() != state.size {
            return Ok(()); // a commit is being published; the next snapshot will do
        }
        file.save(&SnapshotRef {
            size: state.size,
            root: checkpoint.checkpoint.root,
            state: &state,
            projections: &projections,
        })
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

    /// Reads the current state (every published entry applied).
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let state = self
            .shared
            .read
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner());
        f(&state)
    }

    /// Reads the audit projections (every published entry applied).
    pub fn read_projections<R>(&self, f: impl FnOnce(&Projections) -> R) -> R {
        let projections = self
            .shared
            .read
            .projections
            .read()
            .unwrap_or_else(|p| p.into_inner());
        f(&projections)
    }

    /// The latest published checkpoint.
    pub fn checkpoint(&self) -> Arc<CheckpointState> {
        self.shared
            .read
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

    /// Whether this node has confirmed, within the allowed staleness, that it has applied
    /// everything committed (always true on a store nobody else appends to).
    pub fn is_current(&self) -> bool {
        self.shared.is_current()
    }

    /// Whether the log is shared with other nodes.
    pub fn is_shared(&self) -> bool {
        self.shared.shared_store
    }

    /// The store, for reads of entries and Merkle nodes (blocking: call it from a blocking
    /// thread).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The clock the ledger stamps entries with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The log's origin (checkpoint name).
    pub fn origin(&self) -> &str {
        self.shared.verifier.name()
    }

    /// The verifier key string, `<origin>+<hex8>+<base64>`.
    pub fn vkey(&self) -> String {
        self.shared.verifier.vkey()
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.shared.verifier.public_key()
    }

    /// Stops the writer after it has committed everything already queued, and the
    /// follower. Idempotent.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Message::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        let threads: Vec<_> =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        if threads.is_empty() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        // The writer is gone, so nothing moves: snapshot for a fast next start.
        let ledger = self.clone();
        let saved = tokio::task::spawn_blocking(move || ledger.save_snapshot()).await;
        if let Ok(Err(e)) = saved {
            tracing::warn!(error = %e, "could not save the projection snapshot");
        }
    }
}
