//! The rules that tie entries into one log, checked in one place by start-up, `keyledger
//! check` and `keyledger verify`: seqs run 0, 1, 2, … without a gap, each stream's versions
//! run 1, 2, …, `at` never goes backwards, and seq 0 — and only seq 0 — is the genesis of
//! this log's origin and key.
//!
//! The callers keep the running position (their state already holds each stream's version);
//! these functions only judge the next entry against it.

use base64::Engine;

use super::{Entry, EventData, Timestamp};

/// Checks that `entry` can follow: it sits at `seq`, its stream was at `stream_version`,
/// and the previous entry was written at `last_at`. The error says what is wrong; the caller
/// names the seq.
pub fn check_next(
    entry: &Entry,
    seq: u64,
    stream_version: u64,
    last_at: Option<Timestamp>,
) -> Result<(), String> {
    if entry.seq != seq {
        return Err(format!(
            "found seq {} where seq {seq} belongs (an entry is missing or out of order)",
            entry.seq
        ));
    }
    let expected = stream_version + 1;
    if entry.version != expected {
        return Err(format!(
            "stream {} has version {} where {expected} belongs",
            entry.stream.name(),
            entry.version
        ));
    }
    if last_at.is_some_and(|t| entry.at < t) {
        return Err("timestamp goes backwards".into());
    }
    match (&entry.data, seq) {
        (EventData::LedgerInitialized(_), 0) => Ok(()),
        (_, 0) => Err("seq 0 is not ledger.initialized".into()),
        (EventData::LedgerInitialized(_), _) => Err("a second ledger.initialized".into()),
        _ => Ok(()),
    }
}

/// Whether a genesis entry names this origin and this Ed25519 public key.
pub fn is_genesis_of(entry: &Entry, origin: &str, public_key: &[u8; 32]) -> bool {
    let EventData::LedgerInitialized(genesis) = &entry.data else {
        return false;
    };
    genesis.origin == origin
        && genesis.public_key == base64::engine::general_purpose::STANDARD.encode(public_key)
}
