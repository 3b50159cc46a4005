//! The one place binary encodings live: the projection snapshot.
//!
//! Layout: one format-version byte, the CRC32 of the payload (big-endian u32), then the
//! payload in bincode 2 (standard configuration, through serde). Encoded types avoid serde's
//! `flatten`, `tag`, `untagged` and `skip_serializing_if`, which bincode cannot round-trip.
//! A snapshot of another version, or one whose checksum fails, is ignored and the log is
//! replayed instead: a snapshot is only ever a cache of what the log says.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Format version of snapshots written by this build. 2: key names are indexed under their
/// NFKC + case-folded form, so a format-1 snapshot (lowercased only) is replayed instead.
pub const SNAPSHOT_FORMAT: u8 = 2;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("snapshot format {0} is not the supported {SNAPSHOT_FORMAT}")]
    Version(u8),
    #[error("snapshot is truncated")]
    Truncated,
    #[error("snapshot checksum does not match")]
    Checksum,
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    #[error("value does not encode: {0}")]
    Encode(String),
}

/// Encodes a value with the version byte and checksum.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let payload = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(SNAPSHOT_FORMAT);
    out.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes what [`encode`] wrote.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, rest) = bytes.split_first().ok_or(CodecError::Truncated)?;
    if version != SNAPSHOT_FORMAT {
        return Err(CodecError::Version(version));
    }
    if rest.len() < 4 {
        return Err(CodecError::Truncated);
    }
    let (crc, payload) = rest.split_at(4);
    if crc32fast::hash(payload).to_be_bytes() != crc {
        return Err(CodecError::Checksum);
    }
    let (value, used) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(CodecError::Decode("trailing bytes".into()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let value = (42u64, "name".to_string(), vec![[7u8; 32]]);
        let bytes = encode(&value).expect("encode");
        assert_eq!(bytes[0], SNAPSHOT_FORMAT);
        assert_eq!(decode::<(u64, String, Vec<[u8; 32]>)>(&bytes), Ok(value));
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x01;
            assert!(
                decode::<(u64, String, Vec<[u8; 32]>)>(&damaged).is_err(),
                "byte {i}"
            );
        }
        assert_eq!(decode::<u64>(&bytes[..3]), Err(CodecError::Truncated));
        assert_eq!(decode::<u64>(&[]), Err(CodecError::Truncated));
    }
}
