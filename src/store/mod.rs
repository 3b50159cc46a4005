//! Storage of the log: entry bytes by seq, Merkle node hashes, the latest checkpoint and a
//! little metadata, behind one trait so the ledger does not know it runs on sled.
//!
//! Invariants every implementation keeps:
//! - [`Store::commit`] is atomic (all of a batch or none of it) and durable when it returns;
//! - entry bytes come back exactly as they went in;
//! - keys are ordered so that iterating entries yields them in seq order.

mod memory;
mod sled_store;

pub use memory::MemoryStore;
pub use sled_store::SledStore;

/// Name of the snapshot file inside a sled store's directory.
pub fn sled_store_snapshot_file() -> &'static str {
    sled_store::SNAPSHOT_FILE
}

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

/// How long the durable part of a commit took (sled's flush and the fsyncs), for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitTimes {
    /// Time spent making the written batch durable.
    pub sync: std::time::Duration,
}

/// A storage failure. Its text may hold paths and OS errors, never entry contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("sled failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("a previous write failed; the store refuses writes until restarted")]
    Poisoned,
}

/// Entries read back in seq order.
pub type EntryIter<'a> = Box<dyn Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + Send + 'a>;

/// Where the log lives.
pub trait Store: Send + Sync + 'static {
    /// Appends a batch atomically and returns only once it is on stable storage.
    fn commit(&self, batch: &CommitBatch) -> Result<CommitTimes, StoreError>;
    /// The bytes of one entry.
    fn entry(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with `from <= seq < to`, in seq order.
    fn entries(&self, from: u64, to: u64) -> EntryIter<'_>;
    /// Seq of the last stored entry plus one (0 when empty). Not a count: a damaged store
    /// may have holes, which the start-up check finds.
    fn end(&self) -> Result<u64, StoreError>;
    /// The hash of a complete subtree.
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, StoreError>;
    /// The latest checkpoint note.
    fn checkpoint(&self) -> Result<Option<String>, StoreError>;
    /// Stored leaf hashes (level 0) with `from <= index < to`, in order.
    fn leaves(&self, from: u64, to: u64) -> LeafIter<'_>;
    /// The projection snapshot, if one was saved.
    fn load_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the projection snapshot durably (all or nothing).
    fn save_snapshot(&self, bytes: &[u8]) -> Result<(), StoreError>;
}

/// Leaf hashes read back in index order.
pub type LeafIter<'a> = Box<dyn Iterator<Item = Result<(u64, Hash), StoreError>> + Send + 'a>;

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

#[cfg(test)]
mod tests;
