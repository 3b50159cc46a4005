//! An in-memory [`Store`] for tests of the ledger that do not need a disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::{CommitBatch, CommitTimes, EntryIter, LeafIter, Store, StoreError};
use crate::crypto::merkle::Hash;

#[derive(Default)]
struct Inner {
    entries: BTreeMap<u64, Vec<u8>>,
    nodes: HashMap<(u8, u64), Hash>,
    checkpoint: Option<String>,
    snapshot: Option<Vec<u8>>,
}

/// A store held in memory; lost when dropped.
#[derive(Default)]
pub struct MemoryStore(Mutex<Inner>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated in a way that
        // matters to tests, so a poisoned lock is simply taken over.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces an entry's bytes, for tamper tests.
    pub fn tamper_entry(&self, seq: u64, bytes: Option<Vec<u8>>) {
        let mut inner = self.lock();
        match bytes {
            Some(b) => inner.entries.insert(seq, b),
            None => inner.entries.remove(&seq),
        };
    }
}

impl Store for MemoryStore {
    fn commit(&self, batch: &CommitBatch) -> Result<CommitTimes, StoreError> {
        let mut inner = self.lock();
        for (seq, bytes) in &batch.entries {
            inner.entries.insert(*seq, bytes.clone());
        }
        for (level, index, hash) in &batch.nodes {
            inner.nodes.insert((*level, *index), *hash);
        }
        inner.checkpoint = Some(batch.checkpoint.clone());
        Ok(CommitTimes::default())
    }

    fn entry(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().entries.get(&seq).cloned())
    }

    fn entries(&self, from: u64, to: u64) -> EntryIter<'_> {
        let items: Vec<_> = self
            .lock()
            .entries
            .range(from..to)
            .map(|(s, b)| Ok((*s, b.clone())))
            .collect();
        Box::new(items.into_iter())
    }

    fn end(&self) -> Result<u64, StoreError> {
        Ok(self.lock().entries.keys().next_back().map_or(0, |s| s + 1))
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, StoreError> {
        Ok(self.lock().nodes.get(&(level, index)).copied())
    }

    fn checkpoint(&self) -> Result<Option<String>, StoreError> {
        Ok(self.lock().checkpoint.clone())
    }

    fn leaves(&self, from: u64, to: u64) -> LeafIter<'_> {
        let inner = self.lock();
        let items: Vec<_> = (from..to)
            .map_while(|i| inner.nodes.get(&(0, i)).map(|h| Ok((i, *h))))
            .collect();
        Box::new(items.into_iter())
    }

    fn load_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().snapshot.clone())
    }

    fn save_snapshot(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.lock().snapshot = Some(bytes.to_vec());
        Ok(())
    }
}
