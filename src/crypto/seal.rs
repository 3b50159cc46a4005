//! Signing and opening log entries.
//!
//! Entry bytes are the RFC 8785 canonical JSON of the event object including `sig`; `sig` is
//! the Ed25519 signature over the canonical JSON of the same object without `sig`.
//! Verification works on the parsed JSON value, never on a re-serialised Rust struct: the
//! bytes must already be canonical, the signed form is rebuilt by removing `sig` from the
//! parsed object, and only then is the entry decoded into typed Rust.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use serde_json::Value;

use super::jcs;
use super::note::NoteSigner;
use crate::domain::Entry;

/// Why entry bytes are not a valid signed entry. Messages name what is wrong, never a secret
/// (entries hold none).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("not in RFC 8785 canonical form")]
    NotCanonical,
    #[error("invalid entry: {0}")]
    Invalid(String),
    #[error("sig is not a base64 Ed25519 signature")]
    MalformedSignature,
    #[error("signature does not verify")]
    BadSignature,
    #[error("cannot encode entry: {0}")]
    Encode(String),
}

/// Signs an entry (its `sig` field is ignored and replaced) and returns it with its bytes.
pub fn seal(mut entry: Entry, signer: &NoteSigner) -> Result<(Entry, Vec<u8>), SealError> {
    entry.signer = signer.key_id_hex();
    let unsigned =
        jcs::canonicalize(&entry.to_json(false)).map_err(|e| SealError::Encode(e.to_string()))?;
    let signature = signer.signing_key().sign(&unsigned);
    entry.sig = STANDARD.encode(signature.to_bytes());
    let bytes =
        jcs::canonicalize(&entry.to_json(true)).map_err(|e| SealError::Encode(e.to_string()))?;
    Ok((entry, bytes))
}

/// Parses entry bytes without checking the signature; checks that they are canonical.
/// Returns the typed entry and the bytes that `sig` signs.
pub fn parse(bytes: &[u8]) -> Result<(Entry, Vec<u8>), SealError> {
    let value = parse_canonical(bytes)?;
    let mut unsigned = value.clone();
    if let Value::Object(map) = &mut unsigned {
        map.remove("sig");
    }
    let signed_bytes = jcs::canonicalize(&unsigned).map_err(|_| SealError::NotCanonical)?;
    let entry = Entry::from_json(value).map_err(SealError::Invalid)?;
    Ok((entry, signed_bytes))
}

/// Like [`parse`], for a caller that will not check the signature: skips rebuilding the
/// signed bytes (a second canonicalisation), which replay does for every entry.
pub fn parse_entry(bytes: &[u8]) -> Result<Entry, SealError> {
    Entry::from_json(parse_canonical(bytes)?).map_err(SealError::Invalid)
}

fn parse_canonical(bytes: &[u8]) -> Result<Value, SealError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| SealError::Json(e.to_string()))?;
    let canonical = jcs::canonicalize(&value).map_err(|_| SealError::NotCanonical)?;
    if canonical != bytes {
        return Err(SealError::NotCanonical);
    }
    Ok(value)
}

/// Checks an entry's signature against a public key.
pub fn verify(entry: &Entry, signed_bytes: &[u8], key: &VerifyingKey) -> Result<(), SealError> {
    let signature = decode_signature(&entry.sig)?;
    key.verify_strict(signed_bytes, &signature)
        .map_err(|_| SealError::BadSignature)
}

/// Parses and verifies entry bytes in one step.
pub fn open(bytes: &[u8], key: &VerifyingKey) -> Result<Entry, SealError> {
    let (entry, signed) = parse(bytes)?;
    verify(&entry, &signed, key)?;
    Ok(entry)
}

/// Decodes a `sig` field.
pub fn decode_signature(sig: &str) -> Result<Signature, SealError> {
    let raw = STANDARD
        .decode(sig)
        .map_err(|_| SealError::MalformedSignature)?;
    let raw: [u8; 64] = raw.try_into().map_err(|_| SealError::MalformedSignature)?;
    Ok(Signature::from_bytes(&raw))
}
