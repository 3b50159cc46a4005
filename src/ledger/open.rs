//! Start-up: read the stored log back, check it against its signed checkpoint, and rebuild
//! the state. Nothing is served until this passes. The same code runs on every store.
//!
//! Checked for every entry: the seqs run 0, 1, 2, … without a hole; the leaf hash of its
//! bytes equals the stored leaf (and, for the entries parsed, every Merkle node it completes
//! equals the stored one); for the entries parsed, the bytes are canonical JSON of a
//! well-formed entry whose `seq` is its key, each stream's versions run 1, 2, … and `at`
//! never goes backwards. Then: the entry count equals the checkpoint's size, the recomputed
//! root equals its root, its signature verifies, seq 0 is a genesis naming this log's
//! origin and key, and the last entry's signature verifies. Entries covered by a valid
//! projection snapshot are hashed and compared, not parsed. Every failure names the first
//! bad seq; corrupt data never panics.

use ed25519_dalek::VerifyingKey;

use crate::crypto::merkle::{self, Frontier, Hash};
use crate::crypto::note::{Checkpoint, NoteVerifier};
use crate::crypto::seal;
use crate::domain::{Entry, State, Timestamp, chain};
use crate::projections::Projections;
use crate::store::{Store, StoreError};

use super::CheckpointState;
use super::snapshot::Snapshot;

/// Entries handled per pass: their completed Merkle nodes are checked in one store read.
const CHUNK: usize = 4096;

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

/// What replay produced, handed to the writer and the read side.
pub(super) struct Opened {
    /// Entries parsed and applied (the rest came from the snapshot).
    pub replayed: u64,
    pub state: State,
    pub projections: Projections,
    pub frontier: Frontier,
    pub checkpoint: CheckpointState,
}

/// The checkpoint of an empty log (unsigned: nothing to vouch for).
pub(super) fn empty_checkpoint(origin: &str) -> CheckpointState {
    let checkpoint = Checkpoint {
        origin: origin.to_string(),
        size: 0,
        root: merkle::empty_root(),
    };
    CheckpointState {
        note: String::new(),
        checkpoint,
    }
}

/// Opens and checks a signed checkpoint note against the log's key.
pub(super) fn open_checkpoint(
    note: &str,
    verifier: &NoteVerifier,
) -> Result<CheckpointState, OpenError> {
    let checkpoint =
        Checkpoint::open(note, verifier).map_err(|e| OpenError::Checkpoint(e.to_string()))?;
    Ok(CheckpointState {
        note: note.to_string(),
        checkpoint,
    })
}

/// Reads and checks the whole stored log.
///
/// With `every_signature`, each entry's signature is checked too (as `keyledger check`
/// does) and no snapshot is used; otherwise only the genesis's and the last entry's, which
/// keeps start-up fast while the Merkle checks cover every byte.
pub(super) fn replay(
    store: &dyn Store,
    verifier: &NoteVerifier,
    snapshot: Option<Snapshot>,
    every_signature: bool,
) -> Result<Opened, OpenError> {
    let key = *verifier.verifying_key();
    let head = store.head()?;
    // On a shared store other nodes append while this one reads: the log to check is the
    // one the head read covers, and entries past it are theirs, not damage. A store only
    // this process writes has nothing past its checkpoint unless it was damaged.
    let (end, scan_to) = if store.is_shared() {
        (head.size, head.size)
    } else {
        (store.end()?, u64::MAX)
    };
    let checkpoint = match &head.checkpoint {
        Some(note) => open_checkpoint(note, verifier)?,
        None if end == 0 => empty_checkpoint(verifier.name()),
        None => return Err(bad(0, "entries are stored but no checkpoint covers them")),
    };
    let snapshot = if every_signature {
        None
    } else {
        snapshot.filter(|s| s.size <= checkpoint.checkpoint.size)
    };
    let snapshot_size = snapshot.as_ref().map_or(0, |s| s.size);
    let scanned = match scan(
        store,
        verifier,
        &key,
        &checkpoint.checkpoint,
        snapshot,
        every_signature,
        scan_to,
    ) {
        Err(ScanError::StaleSnapshot) => {
            tracing::warn!(
                size = snapshot_size,
                "the projection snapshot does not match the log; replaying it all"
            );
            scan(
                store,
                verifier,
                &key,
                &checkpoint.checkpoint,
                None,
                every_signature,
                scan_to,
            )
        }
        other => other,
    };
    finish(store, &key, checkpoint, scanned)
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

/// The running position of a scan.
struct Scan<'a> {
    store: &'a dyn Store,
    verifier: &'a NoteVerifier,
    key: &'a VerifyingKey,
    every_signature: bool,
    fast_until: u64,
    snapshot_root: Option<Hash>,
    state: State,
    projections: Projections,
    frontier: Frontier,
    last_at: Option<Timestamp>,
}

/// Reads every stored entry. Below the snapshot's size, entries are only hashed and
/// compared with the stored leaves; from there on, each is parsed, checked and applied.
fn scan(
    store: &dyn Store,
    verifier: &NoteVerifier,
    key: &VerifyingKey,
    checkpoint: &Checkpoint,
    snapshot: Option<Snapshot>,
    every_signature: bool,
    scan_to: u64,
) -> Result<Scanned, ScanError> {
    let (fast_until, snapshot_root, state, projections) = match snapshot {
        Some(s) => (s.size, Some(s.root), s.state, s.projections),
        None => (0, None, State::default(), Projections::default()),
    };
    let mut scan = Scan {
        store,
        verifier,
        key,
        every_signature,
        fast_until,
        snapshot_root,
        last_at: state.last_at,
        state,
        projections,
        frontier: Frontier::new(),
    };
    let mut leaves = store.leaves(0, fast_until);
    let mut chunk: Vec<(u64, Vec<u8>)> = Vec::with_capacity(CHUNK);
    for item in store.entries(0, scan_to) {
        let (seq, bytes) = item?;
        let expected = scan.frontier.size() + chunk.len() as u64;
        if seq != expected {
            scan.run(&mut chunk, &mut leaves)?;
            return Err(bad(expected, "entry is missing").into());
        }
        if seq >= checkpoint.size {
            scan.run(&mut chunk, &mut leaves)?;
            return Err(bad(
                seq,
                format!(
                    "entry is not covered by the checkpoint (size {})",
                    checkpoint.size
                ),
            )
            .into());
        }
        chunk.push((seq, bytes));
        if chunk.len() == CHUNK {
            scan.run(&mut chunk, &mut leaves)?;
        }
    }
    scan.run(&mut chunk, &mut leaves)?;
    let Scan {
        frontier,
        mut state,
        mut projections,
        fast_until,
        ..
    } = scan;
    if frontier.size() < fast_until {
        // The log is shorter than the snapshot: the check of the size names the missing seq.
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

impl Scan<'_> {
    /// Checks and applies one chunk of consecutive entries.
    fn run(
        &mut self,
        chunk: &mut Vec<(u64, Vec<u8>)>,
        leaves: &mut crate::store::LeafIter<'_>,
    ) -> Result<(), ScanError> {
        let mut completed: Vec<(u64, (u8, u64, Hash))> = Vec::new();
        for (seq, bytes) in chunk.drain(..) {
            if let Err(e) = self.entry(seq, &bytes, &mut completed, leaves) {
                // An earlier entry of this chunk (or this one's bytes) may be the first bad
                // one: name it rather than a later symptom.
                self.check_nodes(&completed)?;
                return Err(e);
            }
        }
        self.check_nodes(&completed)?;
        Ok(())
    }

    /// Checks and applies one entry; the nodes it completes are added to `completed`, to be
    /// compared with the stored ones in one read per chunk.
    fn entry(
        &mut self,
        seq: u64,
        bytes: &[u8],
        completed: &mut Vec<(u64, (u8, u64, Hash))>,
        leaves: &mut crate::store::LeafIter<'_>,
    ) -> Result<(), ScanError> {
        let leaf = merkle::leaf_hash(bytes);
        if seq < self.fast_until {
            match leaves.next().transpose()? {
                Some((index, stored)) if index == seq && stored == leaf => {}
                Some((index, _)) if index == seq => {
                    return Err(bad(seq, "entry bytes do not match the stored Merkle tree").into());
                }
                _ => return Err(bad(seq, "the Merkle leaf of this entry is missing").into()),
            }
            self.frontier.push(leaf);
            if seq == 0 {
                let (entry, signed) = seal::parse(bytes).map_err(|e| bad(seq, e))?;
                check_genesis(&entry, self.verifier)?;
                seal::verify(&entry, &signed, self.key).map_err(|e| bad(seq, e))?;
            }
            if self.frontier.size() == self.fast_until
                && Some(self.frontier.root()) != self.snapshot_root
            {
                return Err(ScanError::StaleSnapshot);
            }
            return Ok(());
        }
        for node in self.frontier.push(leaf) {
            completed.push((seq, node));
        }
        // The signed bytes cost a second canonicalisation: rebuilt only when checked.
        let (entry, signed) = if seq == 0 || self.every_signature {
            let (entry, signed) = seal::parse(bytes).map_err(|e| bad(seq, e))?;
            (entry, Some(signed))
        } else {
            (seal::parse_entry(bytes).map_err(|e| bad(seq, e))?, None)
        };
        chain::check_next(&entry, seq, self.state.version(&entry.stream), self.last_at)
            .map_err(|e| bad(seq, e))?;
        if seq == 0 {
            check_genesis(&entry, self.verifier)?;
        }
        if let Some(signed) = &signed {
            seal::verify(&entry, signed, self.key).map_err(|e| bad(seq, e))?;
        }
        self.state.apply(&entry);
        self.projections.apply(&entry);
        self.last_at = Some(entry.at);
        Ok(())
    }

    /// Compares the nodes a chunk completed with the stored ones, naming the first entry
    /// whose node differs or is missing.
    fn check_nodes(&self, completed: &[(u64, (u8, u64, Hash))]) -> Result<(), OpenError> {
        let wanted: Vec<(u8, u64)> = completed.iter().map(|(_, (l, i, _))| (*l, *i)).collect();
        let stored = self.store.nodes(&wanted)?;
        for ((seq, (_, _, hash)), stored) in completed.iter().zip(stored) {
            match stored {
                Some(stored) if stored == *hash => {}
                Some(_) => {
                    return Err(bad(*seq, "entry bytes do not match the stored Merkle tree"));
                }
                None => {
                    return Err(bad(
                        *seq,
                        "a Merkle node completed by this entry is missing",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The checks on the whole: size, root, the last entry's signature.
fn finish(
    store: &dyn Store,
    key: &VerifyingKey,
    checkpoint: CheckpointState,
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
    let size = checkpoint.checkpoint.size;
    if frontier.size() < size {
        return Err(bad(
            frontier.size(),
            format!("entry is missing: the checkpoint covers {size} entries"),
        ));
    }
    if frontier.root() != checkpoint.checkpoint.root {
        return Err(first_bad_signature(store, key)?.unwrap_or_else(|| {
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
        seal::verify(&entry, &signed, key).map_err(|e| bad(seq, e))?;
    }
    Ok(Opened {
        replayed,
        state,
        projections,
        frontier,
        checkpoint,
    })
}

/// Whether `entry` is the genesis of the log `verifier` speaks for.
pub(super) fn check_genesis(entry: &Entry, verifier: &NoteVerifier) -> Result<(), OpenError> {
    if chain::is_genesis_of(entry, verifier.name(), &verifier.public_key()) {
        Ok(())
    } else {
        Err(OpenError::WrongKey(
            "the signing key is not the key this log was created with".into(),
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
