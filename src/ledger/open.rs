//! Start-up: read the stored log back, check it against the last checkpoint, and rebuild
//! the state. Nothing is served until this passes.
//!
//! Checked for every entry: the keys run 0, 1, 2, … without a hole; the bytes are canonical
//! JSON of a well-formed entry whose `seq` is its key; each stream's versions run 1, 2, …;
//! `at` never goes backwards; the leaf hash and every Merkle node the entry completes equal
//! the stored ones. Then: the entry count equals the checkpoint's size, the recomputed root
//! equals its root, its signature verifies, seq 0 is a genesis naming this signing key, and
//! the last entry's signature verifies. Every failure names the first bad seq; corrupt data
//! never panics.

use ed25519_dalek::VerifyingKey;

use crate::crypto::merkle::{self, Frontier};
use crate::crypto::note::{Checkpoint, NoteSigner};
use crate::crypto::seal;
use crate::domain::{Entry, State, Timestamp, chain};
use crate::projections::Projections;
use crate::store::{Store, StoreError};

use super::CheckpointState;

/// Why the stored log cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("log entry seq {seq} is bad: {reason}")]
    BadEntry { seq: u64, reason: String },
    #[error("the stored checkpoint is bad: {0}")]
    Checkpoint(String),
    #[error("the signing key does not match this log: {0}")]
    WrongKey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O failed: {0}")]
    Io(String),
}

impl OpenError {
    /// The first bad seq, when the failure is in an entry.
    pub fn seq(&self) -> Option<u64> {
        match self {
            OpenError::BadEntry { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

fn bad(seq: u64, reason: impl std::fmt::Display) -> OpenError {
    OpenError::BadEntry {
        seq,
        reason: reason.to_string(),
    }
}

/// What replay produced, handed to the writer and the read model.
pub(super) struct Opened {
    /// Entries parsed and applied (the rest came from the snapshot).
    pub replayed: u64,
    pub state: State,
    pub projections: Projections,
    pub frontier: Frontier,
    pub checkpoint: CheckpointState,
}

/// Reads and checks the whole stored log.
///
/// With `every_signature`, each entry's signature is checked too (as `keyledger check`
/// does); otherwise only the genesis's and the last entry's, which keeps start-up fast
/// while the Merkle checks cover every byte.
pub(super) fn replay(
    store: &dyn Store,
    signer: &NoteSigner,
    every_signature: bool,
) -> Result<Opened, OpenError> {
    let verifier = signer.verifier();
    let key = *verifier.verifying_key();
    let end = store.end()?;
    let (checkpoint, note) = match store.checkpoint()? {
        Some(note) => {
            let checkpoint = Checkpoint::open(&note, verifier)
                .map_err(|e| OpenError::Checkpoint(e.to_string()))?;
            (checkpoint, note)
        }
        None if end == 0 => {
            let checkpoint = Checkpoint {
                origin: signer.name().to_string(),
                size: 0,
                root: merkle::empty_root(),
            };
            let note = checkpoint
                .sign(signer)
                .map_err(|e| OpenError::Checkpoint(e.to_string()))?;
            (checkpoint, note)
        }
        None => return Err(bad(0, "entries are stored but no checkpoint covers them")),
    };

    let snapshot = if every_signature {
        None
    } else {
        load_snapshot(store, &checkpoint)
    };
    let snapshot_size = snapshot.as_ref().map_or(0, |s| s.size);
    match scan(store, signer, &key, &checkpoint, snapshot, every_signature) {
        Err(ScanError::StaleSnapshot) => {
            tracing::warn!(
                size = snapshot_size,
                "the projection snapshot does not match the log; replaying it all"
            );
            let scanned = scan(store, signer, &key, &checkpoint, None, every_signature);
            finish(store, &key, checkpoint, note, scanned)
        }
        other => finish(store, &key, checkpoint, note, other),
    }
}

/// A snapshot of the read side at some tree size, so start-up can skip parsing and applying
/// the entries it covers (their bytes are still hashed and checked against the tree).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Snapshot {
    pub size: u64,
    pub root: merkle::Hash,
    pub state: State,
    pub projections: Projections,
}

/// The same layout, borrowed, for writing.
#[derive(serde::Serialize)]
pub(super) struct SnapshotRef<'a> {
    pub size: u64,
    pub root: merkle::Hash,
    pub state: &'a State,
    pub projections: &'a Projections,
}

fn load_snapshot(store: &dyn Store, checkpoint: &Checkpoint) -> Option<Snapshot> {
    let bytes = match store.load_snapshot() {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the projection snapshot; replaying the log");
            return None;
        }
    };
    match crate::codec::decode::<Snapshot>(&bytes) {
        Ok(snapshot)
            if snapshot.size <= checkpoint.size && snapshot.state.size == snapshot.size =>
        {
            Some(snapshot)
        }
        Ok(_) => {
            tracing::warn!("the projection snapshot is ahead of the checkpoint; replaying the log");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "the projection snapshot does not decode; replaying the log");
            None
        }
    }
}

enum ScanError {
    Open(OpenError),
    StaleSnapshot,
}

impl From<OpenError> for ScanError {
    fn from(e: OpenError) -> Self {
        ScanError::Open(e)
    }
}

impl From<StoreError> for ScanError {
    fn from(e: StoreError) -> Self {
        ScanError::Open(e.into())
    }
}

struct Scanned {
    replayed: u64,
    state: State,
    projections: Projections,
    frontier: Frontier,
}

/// Reads every stored entry. Below the snapshot's size, entries are only hashed and
/// compared with the stored leaves; from there on, each is parsed, checked and applied.
fn scan(
    store: &dyn Store,
    signer: &NoteSigner,
    key: &VerifyingKey,
    checkpoint: &Checkpoint,
    snapshot: Option<Snapshot>,
    every_signature: bool,
) -> Result<Scanned, ScanError> {
    let (fast_until, snapshot_root, mut state, mut projections) = match snapshot {
        Some(s) => (s.size, Some(s.root), s.state, s.projections),
        None => (0, None, State::default(), Projections::default()),
    };
    let mut frontier = Frontier::new();
    let mut last_at: Option<Timestamp> = state.last_at;
    let mut leaves = store.leaves(0, fast_until);
    for item in store.entries(0, u64::MAX) {
        let (seq, bytes) = item?;
        let expected = frontier.size();
        if seq != expected {
            return Err(bad(expected, "entry is missing").into());
        }
        if seq >= checkpoint.size {
            return Err(bad(
                seq,
                format!(
                    "entry is not covered by the checkpoint (size {})",
                    checkpoint.size
                ),
            )
            .into());
        }
        let leaf = merkle::leaf_hash(&bytes);
        if seq < fast_until {
            match leaves.next().transpose()? {
                Some((index, stored)) if index == seq && stored == leaf => {}
                Some((index, _)) if index == seq => {
                    return Err(bad(seq, "entry bytes do not match the stored Merkle tree").into());
                }
                _ => return Err(bad(seq, "the Merkle leaf of this entry is missing").into()),
            }
            frontier.push(leaf);
            if seq == 0 {
                let (entry, signed) = seal::parse(&bytes).map_err(|e| bad(seq, e))?;
                check_genesis(&entry, signer)?;
                seal::verify(&entry, &signed, key).map_err(|e| bad(seq, e))?;
            }
            if frontier.size() == fast_until && Some(frontier.root()) != snapshot_root {
                return Err(ScanError::StaleSnapshot);
            }
            continue;
        }
        // The signed bytes cost a second canonicalisation: rebuilt only when checked.
        let (entry, signed) = if seq == 0 || every_signature {
            let (entry, signed) = seal::parse(&bytes).map_err(|e| bad(seq, e))?;
            (entry, Some(signed))
        } else {
            (seal::parse_entry(&bytes).map_err(|e| bad(seq, e))?, None)
        };
        chain::check_next(&entry, seq, state.version(&entry.stream), last_at)
            .map_err(|e| bad(seq, e))?;
        for (level, index, hash) in frontier.push(leaf) {
            match store.node(level, index)? {
                Some(stored) if stored == hash => {}
                Some(_) => {
                    return Err(bad(seq, "entry bytes do not match the stored Merkle tree").into());
                }
                None => {
                    return Err(bad(seq, "a Merkle node completed by this entry is missing").into());
                }
            }
        }
        // After the Merkle comparison, so a damaged genesis is reported as a bad seq 0
        // rather than as a wrong key.
        if seq == 0 {
            check_genesis(&entry, signer)?;
        }
        if let Some(signed) = &signed {
            seal::verify(&entry, signed, key).map_err(|e| bad(seq, e))?;
        }
        state.apply(&entry);
        projections.apply(&entry);
        last_at = Some(entry.at);
    }
    if frontier.size() < fast_until {
        // The log is shorter than the snapshot: the check below names the missing seq.
        state = State::default();
        projections = Projections::default();
    }
    Ok(Scanned {
        replayed: frontier.size().saturating_sub(fast_until),
        state,
        projections,
        frontier,
    })
}

/// The checks on the whole: size, root, the last entry's signature.
fn finish(
    store: &dyn Store,
    key: &VerifyingKey,
    checkpoint: Checkpoint,
    note: String,
    scanned: Result<Scanned, ScanError>,
) -> Result<Opened, OpenError> {
    let Scanned {
        replayed,
        state,
        projections,
        frontier,
    } = match scanned {
        Ok(s) => s,
        Err(ScanError::Open(e)) => return Err(e),
        Err(ScanError::StaleSnapshot) => {
            return Err(OpenError::Checkpoint(
                "the snapshot does not match the log".into(),
            ));
        }
    };
    let key = *key;
    if frontier.size() < checkpoint.size {
        return Err(bad(
            frontier.size(),
            format!(
                "entry is missing: the checkpoint covers {} entries",
                checkpoint.size
            ),
        ));
    }
    if frontier.root() != checkpoint.root {
        return Err(first_bad_signature(store, &key)?.unwrap_or_else(|| {
            OpenError::Checkpoint("the recomputed Merkle root differs from the checkpoint's".into())
        }));
    }
    // The last entry's signature (the genesis's was checked in the scan); every entry's
    // bytes are tied to the signed checkpoint by the Merkle root.
    if let Some(seq) = frontier.size().checked_sub(1) {
        let bytes = store
            .entry(seq)?
            .ok_or_else(|| bad(seq, "entry is missing"))?;
        let (entry, signed) = seal::parse(&bytes).map_err(|e| bad(seq, e))?;
        seal::verify(&entry, &signed, &key).map_err(|e| bad(seq, e))?;
    }
    Ok(Opened {
        replayed,
        state,
        projections,
        frontier,
        checkpoint: CheckpointState { note, checkpoint },
    })
}

fn check_genesis(entry: &Entry, signer: &NoteSigner) -> Result<(), OpenError> {
    if chain::is_genesis_of(entry, signer.name(), &signer.public_key()) {
        Ok(())
    } else {
        Err(OpenError::WrongKey(
            "signing.key is not the key this log was created with".into(),
        ))
    }
}

/// On a root mismatch, finds the first entry whose signature fails, to name it.
fn first_bad_signature(
    store: &dyn Store,
    key: &VerifyingKey,
) -> Result<Option<OpenError>, OpenError> {
    for item in store.entries(0, u64::MAX) {
        let (seq, bytes) = item?;
        if let Err(e) = seal::open(&bytes, key) {
            return Ok(Some(bad(seq, e)));
        }
    }
    Ok(None)
}
