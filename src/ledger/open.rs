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
use crate::crypto::note::{Checkpoint, NoteSigner, NoteVerifier};
use crate::crypto::seal;
use crate::domain::{Entry, EventData, State, Timestamp};
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
    let verifier =
        NoteVerifier::parse(&signer.vkey()).map_err(|e| OpenError::WrongKey(e.to_string()))?;
    let key = VerifyingKey::from_bytes(&signer.public_key())
        .map_err(|e| OpenError::WrongKey(e.to_string()))?;
    let end = store.end()?;
    let (checkpoint, note) = match store.checkpoint()? {
        Some(note) => {
            let checkpoint = Checkpoint::open(&note, &verifier)
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

    let mut state = State::default();
    let mut projections = Projections::default();
    let mut frontier = Frontier::new();
    let mut last_at: Option<Timestamp> = None;
    let mut last: Option<(Entry, Vec<u8>)> = None;
    for item in store.entries(0, u64::MAX) {
        let (seq, bytes) = item?;
        let expected = frontier.size();
        if seq != expected {
            return Err(bad(expected, "entry is missing"));
        }
        if seq >= checkpoint.size {
            return Err(bad(
                seq,
                format!(
                    "entry is not covered by the checkpoint (size {})",
                    checkpoint.size
                ),
            ));
        }
        let (entry, signed) = seal::parse(&bytes).map_err(|e| bad(seq, e))?;
        check_entry(&state, &entry, seq, last_at)?;
        for (level, index, hash) in frontier.push(merkle::leaf_hash(&bytes)) {
            match store.node(level, index)? {
                Some(stored) if stored == hash => {}
                Some(_) => {
                    return Err(bad(seq, "entry bytes do not match the stored Merkle tree"));
                }
                None => return Err(bad(seq, "a Merkle node completed by this entry is missing")),
            }
        }
        // After the Merkle comparison, so a damaged genesis is reported as a bad seq 0
        // rather than as a wrong key.
        if seq == 0 {
            check_genesis(&entry, signer)?;
        }
        if seq == 0 || every_signature {
            seal::verify(&entry, &signed, &key).map_err(|e| bad(seq, e))?;
        }
        state.apply(&entry);
        projections.apply(&entry);
        last_at = Some(entry.at);
        last = Some((entry, signed));
    }
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
    if let Some((entry, signed)) = &last {
        seal::verify(entry, signed, &key).map_err(|e| bad(entry.seq, e))?;
    }
    Ok(Opened {
        state,
        projections,
        frontier,
        checkpoint: CheckpointState { note, checkpoint },
    })
}

/// The structural rules every entry must keep relative to the state before it.
fn check_entry(
    state: &State,
    entry: &Entry,
    seq: u64,
    last_at: Option<Timestamp>,
) -> Result<(), OpenError> {
    if entry.seq != seq {
        return Err(bad(
            seq,
            format!("entry says seq {} but is stored at seq {seq}", entry.seq),
        ));
    }
    let expected_version = state.version(&entry.stream) + 1;
    if entry.version != expected_version {
        return Err(bad(
            seq,
            format!(
                "stream {} jumps to version {} (expected {expected_version})",
                entry.stream.name(),
                entry.version
            ),
        ));
    }
    if last_at.is_some_and(|t| entry.at < t) {
        return Err(bad(seq, "timestamp goes backwards"));
    }
    if (seq == 0) != matches!(entry.data, EventData::LedgerInitialized(_)) {
        return Err(bad(
            seq,
            "ledger.initialized must be exactly the entry at seq 0",
        ));
    }
    Ok(())
}

fn check_genesis(entry: &Entry, signer: &NoteSigner) -> Result<(), OpenError> {
    use base64::Engine;
    let EventData::LedgerInitialized(genesis) = &entry.data else {
        return Err(bad(0, "seq 0 is not ledger.initialized"));
    };
    let ours = base64::engine::general_purpose::STANDARD.encode(signer.public_key());
    if genesis.public_key != ours || genesis.origin != signer.name() {
        return Err(OpenError::WrongKey(
            "signing.key is not the key this log was created with".into(),
        ));
    }
    Ok(())
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
