//! Offline verification of an exported log (`keyledger verify`): reads NDJSON line by line
//! in constant memory and checks, for every entry, that the line is canonical JSON of a
//! well-formed entry, that seqs run 0, 1, 2, … with no gap, that each stream's versions run
//! 1, 2, …, that the signature verifies under the given verifier key, and that seq 0 is the
//! genesis of that key; then that the Merkle root of the first `size` entries equals a
//! signed checkpoint's. The first failure is reported with its seq.
//!
//! It needs only the file, the vkey string and optionally the checkpoint note: nothing of a
//! running server.

use std::collections::HashMap;
use std::io::BufRead;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::crypto::merkle::{self, Frontier};
use crate::crypto::note::{Checkpoint, NoteVerifier};
use crate::crypto::seal;
use crate::domain::{Stream, Timestamp, chain};

/// Signatures checked together in one batch verification.
const BATCH: usize = 256;

/// Why a file does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OfflineError {
    /// An entry (or the absence of one) at this seq is wrong.
    #[error("seq {seq}: {reason}")]
    Entry { seq: u64, reason: String },
    /// The verifier key or the checkpoint itself is bad.
    #[error("{0}")]
    Setup(String),
    /// Reading the file failed.
    #[error("reading the file failed: {0}")]
    Io(String),
}

impl OfflineError {
    /// The seq named by the failure, if any.
    pub fn seq(&self) -> Option<u64> {
        match self {
            OfflineError::Entry { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

fn bad(seq: u64, reason: impl std::fmt::Display) -> OfflineError {
    OfflineError::Entry {
        seq,
        reason: reason.to_string(),
    }
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Entries in the file.
    pub entries: u64,
    /// The checkpoint the file was checked against, if one was given.
    pub checkpoint: Option<Checkpoint>,
    /// Entries past the checkpoint: verified, but not yet covered by a signed tree head.
    pub uncovered: u64,
    /// Merkle root of all entries in the file.
    pub root: merkle::Hash,
}

struct Pending {
    seq: u64,
    signed: Vec<u8>,
    signature: Signature,
}

/// Verifies an export read from `input`. `progress` is called with the bytes read so far.
pub fn verify_export(
    input: impl BufRead,
    vkey: &str,
    checkpoint_note: Option<&str>,
    progress: impl FnMut(u64),
) -> Result<Report, OfflineError> {
    let verifier =
        NoteVerifier::parse(vkey).map_err(|e| OfflineError::Setup(format!("bad --vkey: {e}")))?;
    let key = *verifier.verifying_key();
    let checkpoint = checkpoint_note
        .map(|note| {
            Checkpoint::open(note, &verifier)
                .map_err(|e| OfflineError::Setup(format!("the checkpoint does not verify: {e}")))
        })
        .transpose()?;
    let mut pending: Vec<Pending> = Vec::with_capacity(BATCH);
    match scan(input, &verifier, &key, checkpoint, progress, &mut pending) {
        Ok(report) => Ok(report),
        // Signatures still waiting for their batch come before the structural failure: check
        // them first so the error names the first bad seq.
        Err(e) => {
            verify_batch(&mut pending, &key)?;
            Err(e)
        }
    }
}

fn scan(
    input: impl BufRead,
    verifier: &NoteVerifier,
    key: &VerifyingKey,
    checkpoint: Option<Checkpoint>,
    mut progress: impl FnMut(u64),
    pending: &mut Vec<Pending>,
) -> Result<Report, OfflineError> {
    let key_hex = verifier.key_id_hex();
    let mut frontier = Frontier::new();
    let mut versions: HashMap<Stream, u64> = HashMap::new();
    let mut last_at: Option<Timestamp> = None;
    let mut read = 0u64;
    let mut input = input;
    let mut line = Vec::with_capacity(1024);
    let mut seq = 0u64;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| OfflineError::Io(e.to_string()))?;
        if n == 0 {
            break;
        }
        if line.pop() != Some(b'\n') {
            return Err(bad(seq, "the last line is truncated (no final newline)"));
        }
        read += n as u64;
        progress(read);
        let (entry, signed) = seal::parse(&line).map_err(|e| bad(seq, e))?;
        let version = versions.get(&entry.stream).copied().unwrap_or(0);
        chain::check_next(&entry, seq, version, last_at).map_err(|e| bad(seq, e))?;
        versions.insert(entry.stream, entry.version);
        last_at = Some(entry.at);
        if entry.signer != key_hex {
            return Err(bad(
                seq,
                format!("signed by key {} but the vkey is {key_hex}", entry.signer),
            ));
        }
        if seq == 0 && !chain::is_genesis_of(&entry, verifier.name(), &verifier.public_key()) {
            return Err(bad(
                0,
                "the genesis names another key or origin than the vkey",
            ));
        }
        let signature = seal::decode_signature(&entry.sig).map_err(|e| bad(seq, e))?;
        pending.push(Pending {
            seq,
            signed,
            signature,
        });
        if pending.len() == BATCH {
            verify_batch(pending, key)?;
        }
        frontier.push(merkle::leaf_hash(&line));
        seq += 1;
        if let Some(cp) = &checkpoint {
            if frontier.size() == cp.size && frontier.root() != cp.root {
                verify_batch(pending, key)?;
                return Err(bad(
                    seq - 1,
                    format!(
                        "the Merkle root of entries 0..={} differs from the checkpoint's",
                        seq - 1
                    ),
                ));
            }
        }
    }
    verify_batch(pending, key)?;
    let entries = frontier.size();
    let uncovered = match &checkpoint {
        Some(cp) if entries < cp.size => {
            return Err(bad(
                entries,
                format!(
                    "missing: the file ends here but the checkpoint covers {} entries",
                    cp.size
                ),
            ));
        }
        Some(cp) => entries - cp.size,
        None => 0,
    };
    Ok(Report {
        entries,
        checkpoint,
        uncovered,
        root: frontier.root(),
    })
}

/// Checks the pending signatures in one batch; on failure, one by one to name the seq.
fn verify_batch(pending: &mut Vec<Pending>, key: &VerifyingKey) -> Result<(), OfflineError> {
    if pending.is_empty() {
        return Ok(());
    }
    let messages: Vec<&[u8]> = pending.iter().map(|p| p.signed.as_slice()).collect();
    let signatures: Vec<Signature> = pending.iter().map(|p| p.signature).collect();
    let keys = vec![*key; pending.len()];
    let batch_ok = ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok();
    // Batch verification is the fast path for bulk checks. It accepts everything
    // `verify_strict` accepts, plus signatures with small-order components that only the
    // holder of the signing key could make; `keyledger check` and start-up use
    // `verify_strict` on each entry. A failed batch is re-checked one by one so the error
    // names the seq.
    for p in pending.iter() {
        if !batch_ok || p.seq == 0 {
            key.verify_strict(&p.signed, &p.signature)
                .map_err(|_| bad(p.seq, "signature does not verify"))?;
        }
    }
    pending.clear();
    Ok(())
}
