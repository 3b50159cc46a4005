//! keyledger: an event-sourced, Ed25519-signed, Merkle-checkpointed ledger for API keys,
//! service accounts and personal access tokens.

pub mod crypto;
