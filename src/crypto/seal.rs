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
///
/// The entry bytes are the canonical JSON of the unsigned object with `"sig":"…"` added. In
/// RFC 8785's key order `sig` sorts right before `signer`, and no key nested in an entry is
/// named `signer`, so the signed bytes are the unsigned ones with the member spliced in
/// before the last `,"signer":` — one canonicalisation instead of two on the append path.
/// (The golden tests pin the result against a full canonicalisation.)
pub fn seal(mut entry: Entry, signer: &NoteSigner) -> Result<(Entry, Vec<u8>), SealError> {
    entry.signer = signer.key_id_hex();
    let unsigned =
        jcs::canonicalize(&entry.to_json(false)).map_err(|e| SealError::Encode(e.to_string()))?;
    let signature = signer.signing_key().sign(&unsigned);
    entry.sig = STANDARD.encode(signature.to_bytes());
    const SIGNER: &[u8] = b",\"signer\":";
    let at = unsigned
        .windows(SIGNER.len())
        .rposition(|w| w == SIGNER)
        .ok_or_else(|| SealError::Encode("canonical entry without signer".into()))?;
    let mut bytes = Vec::with_capacity(unsigned.len() + entry.sig.len() + 9);
    bytes.extend_from_slice(&unsigned[..at]);
    bytes.extend_from_slice(b",\"sig\":\"");
    bytes.extend_from_slice(entry.sig.as_bytes());
    bytes.push(b'"');
    bytes.extend_from_slice(&unsigned[at..]);
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

/// Parses entry bytes that a signed tree head already vouches for (their leaf hash leads to
/// a checkpoint root checked against the log's key): the signer only ever signs canonical
/// bytes, so the canonical form is not checked again. Followers and appenders catching up
/// with other nodes use it; start-up and `check`, which name the first bad seq, do not.
pub fn parse_authenticated(bytes: &[u8]) -> Result<Entry, SealError> {
    Entry::from_bytes(bytes).map_err(SealError::Invalid)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Both decoders refuse the same malformed envelopes.
    #[test]
    fn both_decoders_refuse_malformed_envelopes() {
        let entry = Entry {
            seq: 1,
            id: uuid::Uuid::from_u128(1),
            stream: crate::domain::Stream::Ledger,
            version: 1,
            at: crate::domain::Timestamp::parse("2026-12-01T00:00:00Z").expect("time"),
            actor: crate::domain::Actor::system(),
            signer: "0a0b0c0d".into(),
            data: crate::domain::EventData::LedgerInitialized(
                crate::domain::events::LedgerInitialized {
                    origin: "o".into(),
                    public_key: "k".into(),
                },
            ),
            sig: "c2ln".into(),
        };
        let good = entry.to_json(true);
        type Mutation = Box<dyn Fn(&mut serde_json::Map<String, Value>)>;
        let mutations: Vec<(&str, Mutation)> = vec![
            (
                "unknown field",
                Box::new(|m| {
                    m.insert("extra".into(), Value::from(1));
                }),
            ),
            (
                "missing sig",
                Box::new(|m| {
                    m.remove("sig");
                }),
            ),
            (
                "v 2",
                Box::new(|m| {
                    m.insert("v".into(), Value::from(2));
                }),
            ),
            (
                "seconds only",
                Box::new(|m| {
                    m.insert("at".into(), Value::from("2026-12-01T00:00:00Z"));
                }),
            ),
            (
                "an offset",
                Box::new(|m| {
                    m.insert("at".into(), Value::from("2026-12-01T01:00:00.000000+01:00"));
                }),
            ),
            (
                "month 13",
                Box::new(|m| {
                    m.insert("at".into(), Value::from("2026-13-01T00:00:00.000000Z"));
                }),
            ),
            (
                "second 60",
                Box::new(|m| {
                    m.insert("at".into(), Value::from("2026-12-01T00:00:60.000000Z"));
                }),
            ),
            (
                "bad stream",
                Box::new(|m| {
                    m.insert("stream".into(), Value::from("api_key/x"));
                }),
            ),
            (
                "stream of another subject",
                Box::new(|m| {
                    m.insert(
                        "stream".into(),
                        Value::from("user/00000000-0000-0000-0000-000000000001"),
                    );
                }),
            ),
            (
                "unknown type",
                Box::new(|m| {
                    m.insert("type".into(), Value::from("api_key.exploded"));
                }),
            ),
            (
                "seq a string",
                Box::new(|m| {
                    m.insert("seq".into(), Value::from("1"));
                }),
            ),
        ];
        for (what, mutate) in mutations {
            let Value::Object(mut map) = good.clone() else {
                unreachable!("an entry is an object")
            };
            mutate(&mut map);
            let bytes = serde_json::to_vec(&Value::Object(map)).expect("json");
            assert!(Entry::from_bytes(&bytes).is_err(), "{what}: from_bytes");
            let value: Value = serde_json::from_slice(&bytes).expect("json");
            assert!(Entry::from_json(value).is_err(), "{what}: from_json");
        }
        let bytes = serde_json::to_vec(&good).expect("json");
        assert_eq!(Entry::from_bytes(&bytes), Ok(entry));
    }
    use crate::crypto::secret::SecretSha256;
    use crate::domain::events::{ApiKeyCreated, PatRevoked};
    use crate::domain::{Actor, EventData, Role, Timestamp};

    fn signer() -> NoteSigner {
        NoteSigner::new(
            "seal.test/log",
            ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]),
        )
        .expect("signer")
    }

    /// The spliced bytes are exactly the canonical form of the signed object, whatever the
    /// data holds (quotes, `"signer":` in a name, non-ASCII, every field order).
    #[test]
    fn sealed_bytes_are_the_canonical_signed_object() {
        let names = [
            "ci",
            "has \"signer\": inside",
            ",\"signer\":\"x\"",
            "Zürich ✓ \\ /",
            "z",
        ];
        for (i, name) in names.iter().enumerate() {
            for data in [
                EventData::ApiKeyCreated(ApiKeyCreated {
                    key_id: uuid::Uuid::from_u128(i as u128),
                    name: name.to_string(),
                    role: Role::Basic,
                    display: "klk_****abcd".into(),
                    secret_sha256: SecretSha256::of(name),
                    expires_at: None,
                }),
                EventData::PatRevoked(PatRevoked {
                    token_id: uuid::Uuid::from_u128(9),
                    user_id: uuid::Uuid::from_u128(10),
                    from: "active".into(),
                    to: "revoked".into(),
                    reason: name.to_string(),
                }),
            ] {
                let entry = Entry {
                    seq: i as u64 * 1000,
                    id: uuid::Uuid::from_u128(77),
                    stream: data.stream(),
                    version: 3,
                    at: Timestamp::parse("2026-12-01T00:00:00Z").expect("time"),
                    actor: Actor::system(),
                    signer: String::new(),
                    data,
                    sig: String::new(),
                };
                let (sealed, bytes) = seal(entry, &signer()).expect("seal");
                // The value-free decoder reads the same entry as the checked one.
                assert_eq!(
                    parse_authenticated(&bytes).expect("authenticated parse"),
                    parse_entry(&bytes).expect("parse")
                );
                let canonical = jcs::canonicalize(&sealed.to_json(true)).expect("jcs");
                assert_eq!(
                    String::from_utf8_lossy(&bytes),
                    String::from_utf8_lossy(&canonical)
                );
                open(&bytes, signer().verifier().verifying_key()).expect("opens");
            }
        }
    }
}
