//! keyledger: an event-sourced, Ed25519-signed, Merkle-checkpointed ledger for API keys,
//! service accounts and personal access tokens.

pub mod access;
pub mod activity;
pub mod cli;
pub mod codec;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod offline;
pub mod policy;
pub mod projections;
pub mod server;
pub mod store;
