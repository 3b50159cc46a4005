//! Cryptographic building blocks shared by the ledger and by the offline verifier:
//! RFC 8785 canonical JSON, RFC 6962 Merkle trees, C2SP signed-note checkpoints and
//! credential secrets.

pub mod jcs;
pub mod merkle;
pub mod note;
pub mod seal;
pub mod secret;
