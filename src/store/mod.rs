//! The store boundary: where the log lives. Entry bytes by seq, the Merkle nodes they
//! complete, and the head (the latest signed checkpoint), behind one trait, so the deciding,
//! signing and projection code is the same whether the log is in sled on this machine or in
//! PostgreSQL shared by several nodes.
//!
//! Invariants every implementation keeps:
//! - appends go through [`Store::lock_head`]: while a [`HeadLock`] is held no other appender
//!   (thread, process or node) can extend the log, and [`HeadLock::commit`] only ever
//!   extends the head it locked, atomically (all of a batch or none of it) and durably
//!   (it returns once the batch is on stable storage);
//! - entry bytes come back exactly as they went in, and iteration yields them in seq order;
//! - only complete, aligned Merkle subtrees are stored (see [`crate::crypto::merkle`]).
//!
//! The trait is synchronous: sled is, and the PostgreSQL client used is the blocking one.
//! The ledger calls it from its own threads; the HTTP layer only through `spawn_blocking`.

mod memory;
pub mod postgres;
mod sled_store;

pub use memory::MemoryStore;
pub use postgres::PgStore;
pub use sled_store::SledStore;

use std::time::Duration;

use crate::crypto::merkle::{Hash, MerkleError, NodeSource};

/// One group commit: the entries it appends, the Merkle nodes they complete and the
/// checkpoint that covers them.
#[derive(Clone, Debug, Default)]
pub struct CommitBatch {
    /// `(seq, entry bytes)`, in seq order, continuing the log without a gap.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// `(level, index, hash)` of every complete subtree the entries finish.
    pub nodes: Vec<(u8, u64, Hash)>,
    /// The signed checkpoint note for the new tree size.
    pub checkpoint: String,
}

impl CommitBatch {
    /// The tree size after this batch.
    pub fn new_size(&self) -> Option<u64> {
        self.entries.last().map(|(seq, _)| seq + 1)
    }
}

/// How long the durable part of a commit took (sled's flush and the fsyncs, PostgreSQL's
/// `COMMIT`), for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitTimes {
    /// Time spent making the written batch durable.
    pub sync: Duration,
}

/// The committed head of the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// Entries committed (the next seq).
    pub size: u64,
    /// The signed checkpoint note covering them; `None` for an empty log.
    pub checkpoint: Option<String>,
}

/// A storage failure. Its text may hold paths, hosts and backend errors, never entry
/// contents or credentials.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The backend failed in a way that retrying will not fix.
    #[error("{0}")]
    Backend(String),
    /// The backend could not be reached (a connection failed, the database restarted);
    /// retrying later may succeed. Nothing was changed by the call that failed.
    #[error("the store is unreachable: {0}")]
    Unavailable(String),
    /// A commit's outcome is unknown: the connection failed while `COMMIT` was in flight.
    /// Taking the head lock again and looking settles it.
    #[error("the outcome of a commit is unknown: {0}")]
    Ambiguous(String),
    /// Someone else extended the log since the head was locked: a broken lock, never
    /// expected.
    #[error("the log moved under the head lock (expected size {expected}, found {found})")]
    Conflict { expected: u64, found: u64 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("a previous write failed; the store refuses writes until restarted")]
    Poisoned,
}

impl StoreError {
    /// Whether a later retry may succeed without a restart.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Ambiguous(_))
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => StoreError::Io(io),
            sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
            other => StoreError::Backend(format!("sled: {other}")),
        }
    }
}

/// Entries read back in seq order.
pub type EntryIter<'a> = Box<dyn Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + Send + 'a>;

/// Leaf hashes read back in index order.
pub type LeafIter<'a> = Box<dyn Iterator<Item = Result<(u64, Hash), StoreError>> + Send + 'a>;

/// Where the log lives.
pub trait Store: Send + Sync + 'static {
    /// A short description for messages: the kind of store and where it is (no secret).
    fn describe(&self) -> String;
    /// Whether other processes may append to this log, so a node must follow it rather
    /// than trust its own copy.
    fn is_shared(&self) -> bool;
    /// The committed head.
    fn head(&self) -> Result<Head, StoreError>;
    /// The bytes of one entry.
    fn entry(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with `from <= seq < to`, in seq order.
    fn entries(&self, from: u64, to: u64) -> EntryIter<'_>;
    /// The bytes of several entries, by seq (one round trip where the backend is remote).
    fn entries_at(&self, seqs: &[u64]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        seqs.iter().map(|&seq| self.entry(seq)).collect()
    }
    /// Seq of the last stored entry plus one (0 when empty). Not a count: a damaged store
    /// may have holes, which the start-up check finds.
    fn end(&self) -> Result<u64, StoreError>;
    /// The hash of a complete subtree.
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, StoreError>;
    /// Several nodes at once (one round trip where the backend is remote).
    fn nodes(&self, wanted: &[(u8, u64)]) -> Result<Vec<Option<Hash>>, StoreError> {
        wanted
            .iter()
            .map(|&(level, index)| self.node(level, index))
            .collect()
    }
    /// Stored leaf hashes (level 0) with `from <= index < to`, in order.
    fn leaves(&self, from: u64, to: u64) -> LeafIter<'_>;
    /// Takes the head lock for an append; blocks while another appender holds it.
    fn lock_head(&self) -> Result<Box<dyn HeadLock + '_>, StoreError>;
    /// Blocks until the head may have moved past `size` (another node appended), or
    /// `timeout` passes. Spurious wake-ups are allowed; a store nobody else appends to just
    /// sleeps.
    fn wait_for_change(&self, size: u64, timeout: Duration) -> Result<(), StoreError> {
        let _ = size;
        std::thread::sleep(timeout);
        Ok(())
    }
}

/// The head of the log, locked for one append.
pub trait HeadLock {
    /// The head as locked.
    fn head(&self) -> &Head;
    /// Entries `[from, to)` (below the locked head), read under the lock: how an appender
    /// catches up with what other nodes appended.
    fn entries(&mut self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Appends `batch`, which must continue the locked head without a gap, durably, and
    /// releases the lock. Dropping the lock without committing appends nothing.
    fn commit(self: Box<Self>, batch: &CommitBatch) -> Result<CommitTimes, StoreError>;
}

/// Reads the size out of a checkpoint note's second line, without checking its signature
/// (the caller does that where it matters).
pub fn checkpoint_size(note: &str) -> Result<u64, StoreError> {
    note.lines()
        .nth(1)
        .and_then(|line| line.parse().ok())
        .ok_or_else(|| StoreError::Corrupt("the stored checkpoint has no tree size".into()))
}

/// Key of an entry: big-endian seq, so byte order is seq order.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Reads a seq back from its key.
pub fn seq_from_key(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("entry key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Key of a Merkle node: level, then big-endian index.
pub fn node_key(level: u8, index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = level;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// A store seen as the Merkle module's source of stored nodes.
pub struct StoreNodes<'a>(pub &'a dyn Store);

impl NodeSource for StoreNodes<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, MerkleError> {
        match self.0.node(level, index) {
            Ok(Some(hash)) => Ok(hash),
            Ok(None) => Err(MerkleError::MissingNode { level, index }),
            Err(e) => Err(MerkleError::Store(e.to_string())),
        }
    }
}

/// The contract every [`Store`] keeps, as a check any implementation can be run through
/// (the integration tests run it against PostgreSQL).
#[doc(hidden)]
pub mod conformance {
    use super::{CommitBatch, Store, StoreError};

    /// A batch of `n` fake entries from `from`, with leaf nodes and a checkpoint note.
    pub fn batch(from: u64, n: u64) -> CommitBatch {
        CommitBatch {
            entries: (from..from + n)
                .map(|s| (s, format!("{{\"seq\":{s}}}").into_bytes()))
                .collect(),
            nodes: (from..from + n).map(|s| (0u8, s, [s as u8; 32])).collect(),
            checkpoint: format!("test.example/log\n{}\nroot\n", from + n),
        }
    }

    /// Runs the contract on an empty store; panics on the first breach.
    pub fn check(store: &dyn Store) {
        assert_eq!(store.end().expect("end"), 0);
        assert_eq!(store.head().expect("head").size, 0);
        assert_eq!(store.head().expect("head").checkpoint, None);
        store
            .lock_head()
            .expect("lock")
            .commit(&batch(0, 3))
            .expect("commit");
        // A batch that does not continue the head is refused and changes nothing.
        let refused = store.lock_head().expect("lock").commit(&batch(5, 1));
        assert!(
            matches!(refused, Err(StoreError::Conflict { .. })),
            "{refused:?}"
        );
        // Dropping a lock without committing appends nothing.
        drop(store.lock_head().expect("lock"));
        let mut lock = store.lock_head().expect("lock");
        assert_eq!(lock.head().size, 3);
        assert_eq!(lock.entries(1, 3).expect("entries").len(), 2);
        lock.commit(&batch(3, 300)).expect("commit");
        assert_eq!(store.end().expect("end"), 303);
        let head = store.head().expect("head");
        assert_eq!(head.size, 303);
        assert_eq!(
            head.checkpoint.as_deref(),
            Some("test.example/log\n303\nroot\n")
        );
        assert_eq!(
            store.entry(7).expect("entry"),
            Some(b"{\"seq\":7}".to_vec())
        );
        assert_eq!(store.entry(303).expect("entry"), None);
        assert_eq!(
            store.entries_at(&[9, 400, 2]).expect("entries at"),
            vec![
                Some(b"{\"seq\":9}".to_vec()),
                None,
                Some(b"{\"seq\":2}".to_vec())
            ]
        );
        let seqs: Vec<u64> = store
            .entries(250, 260)
            .map(|r| r.expect("entry").0)
            .collect();
        assert_eq!(seqs, (250..260).collect::<Vec<_>>());
        // Big-endian keys: 256 sorts after 255, not after 2; and a scan spans chunks.
        let all: Vec<u64> = store
            .entries(0, u64::MAX)
            .map(|r| r.expect("entry").0)
            .collect();
        assert_eq!(all, (0..303).collect::<Vec<_>>());
        let leaves: Vec<u64> = store.leaves(100, 200).map(|r| r.expect("leaf").0).collect();
        assert_eq!(leaves, (100..200).collect::<Vec<_>>());
        assert_eq!(store.node(0, 256).expect("node"), Some([0u8; 32]));
        assert_eq!(store.node(1, 0).expect("node"), None);
        assert_eq!(
            store.nodes(&[(0, 5), (1, 0), (0, 6)]).expect("nodes"),
            vec![Some([5u8; 32]), None, Some([6u8; 32])]
        );
    }
}

#[cfg(test)]
mod tests;
