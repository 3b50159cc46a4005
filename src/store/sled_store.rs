//! The sled implementation of [`Store`].
//!
//! Layout, one sled tree per kind of record:
//! - [`ENTRIES`]: big-endian u64 seq → entry bytes (iteration order is seq order);
//! - [`NODES`]: level byte ‖ big-endian u64 index → 32-byte Merkle node hash;
//! - [`META`]: [`CHECKPOINT_KEY`] → the latest checkpoint note.
//!
//! A commit writes all three in one sled transaction, so a crash leaves either the whole
//! batch or none of it. Durability: sled's `flush()` on Linux ends in `sync_file_range`,
//! which neither flushes the drive's write cache nor the file's metadata, and sled never
//! syncs its blob files at all. So after `flush()` we `fsync` sled's log file, every blob
//! file not yet synced and the directories, and only then report the commit durable.
//!
//! sled's `generate_id` is deliberately not used: it skips about two million ids after a
//! crash, and the log's seq must be gap-free. Seqs are assigned by the ledger's writer.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{
    CommitBatch, CommitTimes, EntryIter, Head, HeadLock, LeafIter, Store, StoreError,
    checkpoint_size, node_key, seq_from_key, seq_key,
};
use crate::crypto::merkle::Hash;

/// sled's page cache, in bytes.
pub const SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Tree of entry bytes by seq.
pub const ENTRIES: &str = "entries";
/// Tree of Merkle node hashes.
pub const NODES: &str = "nodes";
/// Tree of metadata.
pub const META: &str = "meta";
/// Key of the latest checkpoint in [`META`].
pub const CHECKPOINT_KEY: &[u8] = b"checkpoint";
/// A log stored in sled on disk.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    entries: sled::Tree,
    nodes: sled::Tree,
    meta: sled::Tree,
    /// Blob files already fsynced (blobs are immutable once written).
    synced_blobs: Mutex<HashSet<std::ffi::OsString>>,
    /// Set after a failed commit: after a failed fsync the page cache can no longer be
    /// trusted to reflect the disk, so no later write may be acknowledged.
    poisoned: AtomicBool,
    /// The committed head, which only this process moves; its mutex is the head lock.
    head: Mutex<Head>,
}

impl SledStore {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            // sled's default page cache is 1 GiB; reading the whole log at start-up or in an
            // export would grow the process to that. The projections hold what serving needs.
            .cache_capacity(SLED_CACHE_BYTES)
            .open()?;
        let entries = db.open_tree(ENTRIES)?;
        let nodes = db.open_tree(NODES)?;
        let meta = db.open_tree(META)?;
        let checkpoint = match meta.get(CHECKPOINT_KEY)? {
            Some(v) => Some(
                String::from_utf8(v.to_vec())
                    .map_err(|_| StoreError::Corrupt("checkpoint is not UTF-8".into()))?,
            ),
            None => None,
        };
        let size = checkpoint.as_deref().map(checkpoint_size).transpose()?;
        let head = Head {
            size: size.unwrap_or(0),
            checkpoint,
        };
        Ok(SledStore {
            path: path.to_path_buf(),
            db,
            entries,
            nodes,
            meta,
            synced_blobs: Mutex::new(HashSet::new()),
            poisoned: AtomicBool::new(false),
            head: Mutex::new(head),
        })
    }

    /// Removes one entry, for tamper tests on a closed data dir.
    pub fn remove_entry_for_test(&self, seq: u64) -> Result<(), StoreError> {
        self.entries.remove(seq_key(seq))?;
        self.sync()
    }

    /// Overwrites one entry's bytes, for tamper tests on a closed data dir.
    pub fn overwrite_entry_for_test(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.entries.insert(seq_key(seq), bytes)?;
        self.sync()
    }

    /// Flushes sled, then fsyncs its files and directories.
    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        File::open(self.path.join("db"))?.sync_all()?;
        let blobs = self.path.join("blobs");
        if blobs.is_dir() {
            let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
            let mut new_blob = false;
            for dirent in std::fs::read_dir(&blobs)? {
                let dirent = dirent?;
                if !synced.contains(&dirent.file_name()) {
                    File::open(dirent.path())?.sync_all()?;
                    synced.insert(dirent.file_name());
                    new_blob = true;
                }
            }
            if new_blob {
                File::open(&blobs)?.sync_all()?;
            }
        }
        File::open(&self.path)?.sync_all()?;
        Ok(())
    }
}

/// The head lock of a sled store: the in-process mutex over its head.
struct SledHeadLock<'a> {
    store: &'a SledStore,
    head: MutexGuard<'a, Head>,
}

impl HeadLock for SledHeadLock<'_> {
    fn head(&self) -> &Head {
        &self.head
    }

    fn entries(&mut self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.store.entries(from, to).collect()
    }

    fn commit(mut self: Box<Self>, batch: &CommitBatch) -> Result<CommitTimes, StoreError> {
        let store = self.store;
        if store.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        let Some(new_size) = batch.new_size() else {
            return Ok(CommitTimes::default());
        };
        let first = batch.entries.first().map_or(0, |(seq, _)| *seq);
        if first != self.head.size {
            return Err(StoreError::Conflict {
                expected: self.head.size,
                found: first,
            });
        }
        // Everything is computed before the transaction: its closure may run more than once.
        let result: Result<(), TransactionError<()>> = (&store.entries, &store.nodes, &store.meta)
            .transaction(|(entries, nodes, meta)| {
                for (seq, bytes) in &batch.entries {
                    entries.insert(&seq_key(*seq), bytes.as_slice())?;
                }
                for (level, index, hash) in &batch.nodes {
                    nodes.insert(&node_key(*level, *index), hash.as_slice())?;
                }
                meta.insert(CHECKPOINT_KEY, batch.checkpoint.as_bytes())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        let outcome = match result {
            Ok(()) => {
                let started = std::time::Instant::now();
                store.sync().map(|()| CommitTimes {
                    sync: started.elapsed(),
                })
            }
            Err(TransactionError::Storage(e)) => Err(e.into()),
            Err(TransactionError::Abort(())) => {
                Err(StoreError::Corrupt("transaction aborted".into()))
            }
        };
        match &outcome {
            Ok(_) => {
                *self.head = Head {
                    size: new_size,
                    checkpoint: Some(batch.checkpoint.clone()),
                };
            }
            // After a failed fsync the page cache can no longer be trusted to reflect the
            // disk (the PostgreSQL "fsyncgate" lesson): no later write is acknowledged.
            Err(_) => store.poisoned.store(true, Ordering::SeqCst),
        }
        outcome
    }
}

impl Store for SledStore {
    fn describe(&self) -> String {
        format!("sled at {}", self.path.display())
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn head(&self) -> Result<Head, StoreError> {
        Ok(self.head.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn lock_head(&self) -> Result<Box<dyn HeadLock + '_>, StoreError> {
        let head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Box::new(SledHeadLock { store: self, head }))
    }

    fn entry(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries.get(seq_key(seq))?.map(|v| v.to_vec()))
    }

    fn entries(&self, from: u64, to: u64) -> EntryIter<'_> {
        if from >= to {
            return Box::new(std::iter::empty());
        }
        Box::new(self.entries.range(seq_key(from)..seq_key(to)).map(|item| {
            let (key, value) = item?;
            Ok((seq_from_key(&key)?, value.to_vec()))
        }))
    }

    fn end(&self) -> Result<u64, StoreError> {
        match self.entries.last()? {
            Some((key, _)) => Ok(seq_from_key(&key)?.saturating_add(1)),
            None => Ok(0),
        }
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, StoreError> {
        match self.nodes.get(node_key(level, index))? {
            Some(v) => {
                let hash: Hash = v.as_ref().try_into().map_err(|_| {
                    StoreError::Corrupt(format!("node ({level}, {index}) is not 32 bytes"))
                })?;
                Ok(Some(hash))
            }
            None => Ok(None),
        }
    }

    fn leaves(&self, from: u64, to: u64) -> LeafIter<'_> {
        if from >= to {
            return Box::new(std::iter::empty());
        }
        Box::new(
            self.nodes
                .range(node_key(0, from)..node_key(0, to))
                .map(|item| {
                    let (key, value) = item?;
                    let index = key
                        .get(1..)
                        .map(seq_from_key)
                        .transpose()?
                        .ok_or_else(|| StoreError::Corrupt("node key too short".into()))?;
                    let hash: Hash = value.as_ref().try_into().map_err(|_| {
                        StoreError::Corrupt(format!("leaf {index} is not 32 bytes"))
                    })?;
                    Ok((index, hash))
                }),
        )
    }
}
