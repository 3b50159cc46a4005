//! An in-memory [`Store`] for tests of the ledger that do not need a disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::{
    CommitBatch, CommitTimes, EntryIter, Head, HeadLock, LeafIter, Store, StoreError,
    checkpoint_size,
};
use crate::crypto::merkle::Hash;

#[derive(Default)]
struct Inner {
    entries: BTreeMap<u64, Vec<u8>>,
    nodes: HashMap<(u8, u64), Hash>,
    head: Head,
}

/// A store held in memory; lost when dropped.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// The head lock (held across a whole append, apart from `inner`'s short sections).
    append: Mutex<()>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated in a way that
        // matters to tests, so a poisoned lock is simply taken over.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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

struct MemoryHeadLock<'a> {
    store: &'a MemoryStore,
    head: Head,
    _append: MutexGuard<'a, ()>,
}

impl HeadLock for MemoryHeadLock<'_> {
    fn head(&self) -> &Head {
        &self.head
    }

    fn entries(&mut self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.store.entries(from, to).collect()
    }

    fn commit(self: Box<Self>, batch: &CommitBatch) -> Result<CommitTimes, StoreError> {
        let Some(new_size) = batch.new_size() else {
            return Ok(CommitTimes::default());
        };
        let mut inner = self.store.lock();
        let first = batch.entries.first().map_or(0, |(seq, _)| *seq);
        if first != inner.head.size {
            return Err(StoreError::Conflict {
                expected: inner.head.size,
                found: first,
            });
        }
        for (seq, bytes) in &batch.entries {
            inner.entries.insert(*seq, bytes.clone());
        }
        for (level, index, hash) in &batch.nodes {
            inner.nodes.insert((*level, *index), *hash);
        }
        checkpoint_size(&batch.checkpoint)?;
        inner.head = Head {
            size: new_size,
            checkpoint: Some(batch.checkpoint.clone()),
        };
        Ok(CommitTimes::default())
    }
}

impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn head(&self) -> Result<Head, StoreError> {
        Ok(self.lock().head.clone())
    }

    fn lock_head(&self) -> Result<Box<dyn HeadLock + '_>, StoreError> {
        let append = self.append.lock().unwrap_or_else(|p| p.into_inner());
        let head = self.lock().head.clone();
        Ok(Box::new(MemoryHeadLock {
            store: self,
            head,
            _append: append,
        }))
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

    fn leaves(&self, from: u64, to: u64) -> LeafIter<'_> {
        let inner = self.lock();
        let items: Vec<_> = (from..to)
            .map_while(|i| inner.nodes.get(&(0, i)).map(|h| Ok((i, *h))))
            .collect();
        Box::new(items.into_iter())
    }
}
