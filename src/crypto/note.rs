//! C2SP [signed notes] and [tlog checkpoints] with Ed25519 keys.
//!
//! This module is byte-compatible with Go's `golang.org/x/mod/sumdb/note` package (the
//! reference implementation used by the Go checksum database, Sigsum, Trillian-tessera and
//! most transparency-log witnesses): notes signed here open with Go's `note.Open`, and notes
//! signed by Go's `note.Sign` with an Ed25519 key open here.
//!
//! # Formats
//!
//! * **Key id.** A key is named (for a log, the name is its origin) and identified by
//!   `keyid4 = SHA-256(name || "\n" || 0x01 || public key)[0..4]`, where `0x01` is the
//!   Ed25519 algorithm byte. Its lowercase hex form is called `hex8` below.
//! * **Verifier key** ("vkey"): `<name>+<hex8>+<base64(0x01 || 32-byte public key)>`.
//! * **Signer key** (Go's private key format, kept in key files):
//!   `PRIVATE+KEY+<name>+<hex8>+<base64(0x01 || 32-byte Ed25519 seed)>`.
//! * **Note:** the text (non-empty UTF-8 ending in `"\n"`), a blank line, then one or more
//!   signature lines `— <name> <base64(keyid4 || 64-byte Ed25519 signature)>\n`. The dash is
//!   U+2014 EM DASH followed by one space; the signature covers exactly the text bytes
//!   (including its final newline, excluding the blank line).
//! * **Checkpoint** (the note text of a transparency log): `<origin>\n<size>\n<root>\n`, the
//!   tree size in decimal without leading zeros and the 32-byte root hash in base64, optionally
//!   followed by non-empty extension lines (accepted and ignored when parsing, never produced).
//!
//! All base64 is the standard alphabet with padding (Go's `base64.StdEncoding`).
//!
//! # Deliberate differences from Go (all stricter, none affect notes Go produces)
//!
//! * Base64 is decoded strictly: non-zero unused low bits in the last character are rejected
//!   (Go ignores them), so every change to the text of a note invalidates it.
//! * Every signature line by the verifier's key is verified; Go skips repeated lines by a key
//!   after the first. Signatures use `verify_strict` (rejects small-order keys and points).
//! * Verifier keys whose 32 bytes are not a valid Edwards point are rejected at parse time
//!   (Go would reject every signature later instead).
//!
//! Like Go, a note must not contain ASCII control characters other than `"\n"`, may carry at
//! most 100 signature lines, and signatures by unknown keys are ignored as long as their lines
//! are well-formed.
//!
//! [signed notes]: https://github.com/C2SP/C2SP/blob/main/signed-note.md
//! [tlog checkpoints]: https://github.com/C2SP/C2SP/blob/main/tlog-checkpoint.md

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// Algorithm byte identifying Ed25519 keys in key ids, vkeys and signer keys.
const ALG_ED25519: u8 = 0x01;

/// Prefix of every signature line: U+2014 EM DASH and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// Separator between the text and the signature block.
const SIG_SPLIT: &str = "\n\n";

/// Prefix of a signer key string (Go's private key format).
const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// Maximum number of signature lines in a note (as in Go).
const MAX_SIGNATURES: usize = 100;

/// Computes the 4-byte key id of an Ed25519 key: the first four bytes of
/// `SHA-256(name || "\n" || 0x01 || public_key)`. As a `u32` it is big-endian.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let digest: [u8; 32] = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', ALG_ED25519])
        .chain_update(public_key)
        .finalize()
        .into();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Errors from parsing keys, signing, opening notes and parsing checkpoints.
///
/// Messages never contain secret key material.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    /// A key name (or signature line name) is empty, contains whitespace or contains `+`.
    #[error("invalid key name {0:?}: must be non-empty, without whitespace or '+'")]
    InvalidName(String),
    /// A verifier key string is not `<name>+<hex8>+<base64(0x01 || key)>`.
    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(&'static str),
    /// A signer key string is not `PRIVATE+KEY+<name>+<hex8>+<base64(0x01 || seed)>`.
    #[error("malformed signer key: {0}")]
    MalformedSignerKey(&'static str),
    /// The text to sign is not acceptable note text.
    #[error("malformed note text: {0}")]
    MalformedText(&'static str),
    /// A signed note is not `text + "\n" + signature lines`.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// The note has no signature by the verifier's key (name and key id).
    #[error("note has no signature by key {name}+{key_id}")]
    UnknownKey {
        /// Name of the verifier key.
        name: String,
        /// Key id of the verifier key, as `hex8`.
        key_id: String,
    },
    /// A signature line by the verifier's key does not verify.
    #[error("invalid signature by key {name}+{key_id}")]
    BadSignature {
        /// Name of the verifier key.
        name: String,
        /// Key id of the verifier key, as `hex8`.
        key_id: String,
    },
    /// Ed25519 signing failed.
    #[error("signing failed")]
    Signing,
    /// A checkpoint text is not `<origin>\n<size>\n<root>\n[extension lines]`.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// The checkpoint origin differs from the key name that signs or verifies it.
    #[error("checkpoint origin {origin:?} does not match key name {key_name:?}")]
    OriginMismatch {
        /// Origin line of the checkpoint.
        origin: String,
        /// Name of the signer or verifier key.
        key_name: String,
    },
}

/// Whether `name` is a valid key name (Go's `isValidName`): non-empty, no Unicode
/// whitespace, no `+`.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '+')
}

/// Lowercase hex of a key id.
fn hex8(id: [u8; 4]) -> String {
    format!("{:08x}", u32::from_be_bytes(id))
}

/// Parses exactly 8 hex digits (either case, as Go's `strconv.ParseUint(s, 16, 32)` with a
/// length check) into a key id.
fn parse_hex8(s: &str) -> Option<[u8; 4]> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok().map(u32::to_be_bytes)
}

/// Decodes `base64(0x01 || 32 bytes)`, returning the 32 bytes, or the reason it is not.
fn decode_alg_key(b64: &str) -> Result<[u8; 32], &'static str> {
    let raw = STANDARD
        .decode(b64)
        .map_err(|_| "key is not valid base64")?;
    let (alg, key) = raw.split_first().ok_or("key is empty")?;
    if *alg != ALG_ED25519 {
        return Err("unknown key algorithm (want 0x01, Ed25519)");
    }
    key.try_into().map_err(|_| "Ed25519 key is not 32 bytes")
}

/// Encodes `base64(0x01 || key)`.
fn encode_alg_key(key: &[u8; 32]) -> String {
    let mut raw = [0u8; 33];
    raw[0] = ALG_ED25519;
    raw[1..].copy_from_slice(key);
    STANDARD.encode(raw)
}

/// Checks Go's note character rule: no ASCII control characters except `"\n"`.
fn has_forbidden_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 && b != b'\n')
}

/// A note signer: a key name and an Ed25519 signing key.
///
/// `Debug` shows only the name and key id, never the key.
#[derive(Clone)]
pub struct NoteSigner {
    key: SigningKey,
    /// The public half: name, key id and public key, shared with verification.
    verifier: NoteVerifier,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.verifier.name)
            .field("key_id", &self.key_id_hex())
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// Creates a signer. The name must be non-empty and contain no whitespace and no `+`.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidName(name.to_owned()));
        }
        let public = key.verifying_key();
        let verifier = NoteVerifier {
            name: name.to_owned(),
            key_id: key_id(name, public.as_bytes()),
            key: public,
        };
        Ok(Self { key, verifier })
    }

    /// The public half, to verify what this signer signs.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// The key name (for a log signer, the log's origin).
    pub fn name(&self) -> &str {
        self.verifier.name()
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> [u8; 4] {
        self.verifier.key_id()
    }

    /// The key id as 8 lowercase hex digits.
    pub fn key_id_hex(&self) -> String {
        self.verifier.key_id_hex()
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.verifier.public_key()
    }

    /// The verifier key string `<name>+<hex8>+<base64(0x01 || public key)>`.
    pub fn vkey(&self) -> String {
        self.verifier.vkey()
    }

    /// The Ed25519 signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The signer key string `PRIVATE+KEY+<name>+<hex8>+<base64(0x01 || seed)>` (Go's
    /// private key format). It contains the secret key: store it as such.
    pub fn to_private_key_string(&self) -> String {
        format!(
            "{PRIVATE_KEY_PREFIX}{}+{}+{}",
            self.name(),
            self.key_id_hex(),
            encode_alg_key(self.key.as_bytes())
        )
    }

    /// Parses a signer key string (see [`NoteSigner::to_private_key_string`]), checking that
    /// its key id matches the name and the public key derived from the seed.
    pub fn from_private_key_string(s: &str) -> Result<Self, NoteError> {
        let rest = s
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or(NoteError::MalformedSignerKey("missing PRIVATE+KEY+ prefix"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedSignerKey(
                "want PRIVATE+KEY+<name>+<hex8>+<base64 key>",
            ));
        };
        if !is_valid_name(name) {
            return Err(NoteError::MalformedSignerKey("invalid key name"));
        }
        let id =
            parse_hex8(hex).ok_or(NoteError::MalformedSignerKey("key id is not 8 hex digits"))?;
        let seed = decode_alg_key(b64).map_err(NoteError::MalformedSignerKey)?;
        let signer = Self::new(name, SigningKey::from_bytes(&seed))?;
        if signer.key_id() != id {
            return Err(NoteError::MalformedSignerKey(
                "key id does not match the name and key",
            ));
        }
        Ok(signer)
    }

    /// Signs `text` and returns the full note: text, blank line, one signature line.
    ///
    /// The text must be non-empty, end with `"\n"` and contain no ASCII control characters
    /// other than `"\n"` (which Go's `note.Open` would reject).
    pub fn sign_note(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::MalformedText("text must end with a newline"));
        }
        if has_forbidden_control(text) {
            return Err(NoteError::MalformedText(
                "text contains a control character other than newline",
            ));
        }
        let signature = self
            .key
            .try_sign(text.as_bytes())
            .map_err(|_| NoteError::Signing)?;
        let mut payload = [0u8; 4 + 64];
        payload[..4].copy_from_slice(&self.key_id());
        payload[4..].copy_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name(),
            STANDARD.encode(payload)
        ))
    }
}

/// A note verifier: a key name, key id and Ed25519 public key, parsed from a vkey string.
#[derive(Clone, Debug)]
pub struct NoteVerifier {
    name: String,
    key_id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key `<name>+<hex8>+<base64(0x01 || public key)>`, checking the
    /// algorithm byte, the key length and point encoding, and that `hex8` is the key id of
    /// the name and key.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedVerifierKey(
                "want <name>+<hex8>+<base64 key>",
            ));
        };
        if !is_valid_name(name) {
            return Err(NoteError::MalformedVerifierKey("invalid key name"));
        }
        let id = parse_hex8(hex).ok_or(NoteError::MalformedVerifierKey(
            "key id is not 8 hex digits",
        ))?;
        let public = decode_alg_key(b64).map_err(NoteError::MalformedVerifierKey)?;
        if key_id(name, &public) != id {
            return Err(NoteError::MalformedVerifierKey(
                "key id does not match the name and key",
            ));
        }
        let key = VerifyingKey::from_bytes(&public).map_err(|_| {
            NoteError::MalformedVerifierKey("public key is not a valid Ed25519 point")
        })?;
        Ok(Self {
            name: name.to_owned(),
            key_id: id,
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The key id as 8 lowercase hex digits.
    pub fn key_id_hex(&self) -> String {
        hex8(self.key_id)
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The Ed25519 key itself, for checking other signatures by the same key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The verifier key string this verifier was parsed from (with a lowercase `hex8`).
    pub fn vkey(&self) -> String {
        format!(
            "{}+{}+{}",
            self.name,
            self.key_id_hex(),
            encode_alg_key(self.key.as_bytes())
        )
    }

    fn unknown_key(&self) -> NoteError {
        NoteError::UnknownKey {
            name: self.name.clone(),
            key_id: self.key_id_hex(),
        }
    }

    fn bad_signature(&self) -> NoteError {
        NoteError::BadSignature {
            name: self.name.clone(),
            key_id: self.key_id_hex(),
        }
    }

    /// Opens a signed note and returns its text (ending with `"\n"`).
    ///
    /// Splits text and signatures at the last `"\n\n"` and requires every signature line to
    /// be well-formed. At least one line must be by this verifier (same name and key id) and
    /// every such line must verify (`verify_strict`) over the text bytes. Lines by other keys
    /// are ignored, as Go does.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        if has_forbidden_control(note) {
            return Err(NoteError::MalformedNote(
                "contains a control character other than newline",
            ));
        }
        let split = note.rfind(SIG_SPLIT).ok_or(NoteError::MalformedNote(
            "no blank line before the signatures",
        ))?;
        // `split` and `split + 1` are the positions of two ASCII newlines, so both slices
        // fall on character boundaries; `get` keeps this panic-free regardless.
        let (Some(text), Some(sigs)) = (note.get(..split + 1), note.get(split + SIG_SPLIT.len()..))
        else {
            return Err(NoteError::MalformedNote("cannot split text and signatures"));
        };
        let sigs = sigs.strip_suffix('\n').ok_or(NoteError::MalformedNote(
            "signature block must end with a newline",
        ))?;

        let mut verified = false;
        for (count, line) in sigs.split('\n').enumerate() {
            if count >= MAX_SIGNATURES {
                return Err(NoteError::MalformedNote("too many signatures"));
            }
            let (name, id, sig) = parse_signature_line(line)?;
            if name != self.name || id != self.key_id {
                continue;
            }
            let sig: &[u8; 64] = sig
                .as_slice()
                .try_into()
                .map_err(|_| self.bad_signature())?;
            self.key
                .verify_strict(text.as_bytes(), &Signature::from_bytes(sig))
                .map_err(|_| self.bad_signature())?;
            verified = true;
        }
        if verified {
            Ok(text)
        } else {
            Err(self.unknown_key())
        }
    }
}

/// Parses a signature line `— <name> <base64(keyid4 || signature)>` (without its newline)
/// into name, key id and signature bytes (at least one byte, as in Go).
fn parse_signature_line(line: &str) -> Result<(&str, [u8; 4], Vec<u8>), NoteError> {
    let malformed = NoteError::MalformedNote;
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or(malformed("signature line does not start with \"— \""))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or(malformed("signature line has no space after the key name"))?;
    if !is_valid_name(name) {
        return Err(malformed("signature line has an invalid key name"));
    }
    let mut raw = STANDARD
        .decode(b64)
        .map_err(|_| malformed("signature is not valid base64"))?;
    if raw.len() < 5 {
        return Err(malformed("signature is too short"));
    }
    let sig = raw.split_off(4);
    let id: [u8; 4] = raw
        .as_slice()
        .try_into()
        .map_err(|_| malformed("signature is too short"))?;
    Ok((name, id, sig))
}

/// A C2SP tlog checkpoint: the origin (log name), tree size and root hash of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log origin; equals the name of the key that signs the checkpoint.
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// RFC 6962 Merkle tree root hash.
    pub root: [u8; 32],
}

impl Checkpoint {
    /// The checkpoint note text `<origin>\n<size>\n<base64 root>\n`.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Parses checkpoint text. Requires a non-empty origin, a decimal size without sign or
    /// leading zeros that fits in a `u64`, a base64 32-byte root and a final newline.
    /// Non-empty extension lines after the root are accepted and ignored.
    pub fn parse_text(text: &str) -> Result<Self, NoteError> {
        let malformed = NoteError::MalformedCheckpoint;
        let body = text
            .strip_suffix('\n')
            .ok_or(malformed("text must end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(malformed("empty origin line"));
        }
        let size = lines.next().ok_or(malformed("missing tree size line"))?;
        let size = parse_size(size).ok_or(malformed(
            "tree size is not a decimal number without leading zeros",
        ))?;
        let root = lines.next().ok_or(malformed("missing root hash line"))?;
        let root: [u8; 32] = STANDARD
            .decode(root)
            .map_err(|_| malformed("root hash is not valid base64"))?
            .try_into()
            .map_err(|_| malformed("root hash is not 32 bytes"))?;
        if lines.any(str::is_empty) {
            return Err(malformed("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// Signs the checkpoint and returns the note. The signer's name must equal the origin.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, NoteError> {
        if signer.name() != self.origin {
            return Err(NoteError::OriginMismatch {
                origin: self.origin.clone(),
                key_name: signer.name().to_owned(),
            });
        }
        signer.sign_note(&self.text())
    }

    /// Opens a checkpoint note with `verifier` and parses its text; the origin must equal
    /// the verifier's name.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Self, NoteError> {
        let checkpoint = Self::parse_text(verifier.open(note)?)?;
        if checkpoint.origin != verifier.name() {
            return Err(NoteError::OriginMismatch {
                origin: checkpoint.origin,
                key_name: verifier.name().to_owned(),
            });
        }
        Ok(checkpoint)
    }
}

/// Parses a tree size: ASCII digits only, no leading zeros (except `"0"`), fits in `u64`.
fn parse_size(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    const VECTOR_NOTE: &str = include_str!("../../tests/vectors/checkpoint.note");
    const VECTOR_VKEY: &str = include_str!("../../tests/vectors/checkpoint.vkey");
    const VECTOR_ORIGIN: &str = "ledger.example.com/apikeys/v1";
    /// Hex of the vector's root hash `8rSi1HKjqGt+u1Rw7LxTgEm3dNEo8Ab2BG5DX3mJjhg=`.
    const VECTOR_ROOT_HEX: &str =
        "f2b4a2d472a3a86b7ebb5470ecbc538049b774d128f006f6046e435f79898e18";

    fn unhex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn vector_verifier() -> NoteVerifier {
        NoteVerifier::parse(VECTOR_VKEY.trim_end()).unwrap()
    }

    fn signer(seed: u8, name: &str) -> NoteSigner {
        NoteSigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
    }

    fn sample_checkpoint(origin: &str) -> Checkpoint {
        Checkpoint {
            origin: origin.to_owned(),
            size: 12345,
            root: [0x5a; 32],
        }
    }

    #[test]
    fn vector_vkey_parses() {
        let v = vector_verifier();
        assert_eq!(v.name(), VECTOR_ORIGIN);
        assert_eq!(v.key_id_hex(), "e4c7bc7b");
        assert_eq!(v.key_id(), [0xe4, 0xc7, 0xbc, 0x7b]);
        assert_eq!(key_id(v.name(), &v.public_key()), v.key_id());
        assert_eq!(v.vkey(), VECTOR_VKEY.trim_end());
    }

    #[test]
    fn vector_checkpoint_opens() {
        let v = vector_verifier();
        let cp = Checkpoint::open(VECTOR_NOTE, &v).unwrap();
        assert_eq!(cp.origin, VECTOR_ORIGIN);
        assert_eq!(cp.size, 70000);
        assert_eq!(cp.root, unhex32(VECTOR_ROOT_HEX));
        // The text round-trips exactly.
        assert_eq!(v.open(VECTOR_NOTE).unwrap(), cp.text());
    }

    #[test]
    fn vector_rejects_every_single_byte_change() {
        let v = vector_verifier();
        let original = VECTOR_NOTE.as_bytes();
        let mut tested = 0;
        for i in 0..original.len() {
            if !original[i].is_ascii() {
                continue; // part of the em dash: a replacement would not be valid UTF-8
            }
            for replacement in [b'x', b'y', b'0', b'1'] {
                if replacement == original[i] {
                    continue;
                }
                let mut bytes = original.to_vec();
                bytes[i] = replacement;
                let note = String::from_utf8(bytes).unwrap();
                assert!(
                    Checkpoint::open(&note, &v).is_err(),
                    "accepted note with byte {i} changed to {:?}",
                    replacement as char
                );
                tested += 1;
            }
        }
        // Every byte except the three of the em dash was changed at least three ways.
        assert!(tested >= 3 * (original.len() - 3));
    }

    #[test]
    fn vector_rejects_every_decoded_signature_byte_change() {
        let v = vector_verifier();
        let (head, b64) = VECTOR_NOTE.trim_end().rsplit_once(' ').unwrap();
        let raw = STANDARD.decode(b64).unwrap();
        assert_eq!(raw.len(), 68);
        assert_eq!(raw[..4], v.key_id());
        for i in 0..raw.len() {
            for mask in [0x01u8, 0x80] {
                let mut changed = raw.clone();
                changed[i] ^= mask;
                let note = format!("{head} {}\n", STANDARD.encode(&changed));
                let err = Checkpoint::open(&note, &v).unwrap_err();
                if i < 4 {
                    assert!(
                        matches!(err, NoteError::UnknownKey { .. }),
                        "byte {i}: {err}"
                    );
                } else {
                    assert!(
                        matches!(err, NoteError::BadSignature { .. }),
                        "byte {i}: {err}"
                    );
                }
            }
        }
        // A truncated or extended signature by this key is a bad signature too.
        for changed in [&raw[..67], &[raw.as_slice(), &[0]].concat()[..]] {
            let note = format!("{head} {}\n", STANDARD.encode(changed));
            let err = v.open(&note).unwrap_err();
            assert!(matches!(err, NoteError::BadSignature { .. }), "{err}");
        }
    }

    #[test]
    fn vector_rejects_wrong_vkeys() {
        // Same name, different key.
        let other = signer(9, VECTOR_ORIGIN);
        let wrong = NoteVerifier::parse(&other.vkey()).unwrap();
        let err = Checkpoint::open(VECTOR_NOTE, &wrong).unwrap_err();
        assert!(matches!(err, NoteError::UnknownKey { .. }), "{err}");
        // Different name, same public key.
        let v = vector_verifier();
        let renamed = format!(
            "ledger.example.com/apikeys/v2+{}+{}",
            hex8(key_id("ledger.example.com/apikeys/v2", &v.public_key())),
            encode_alg_key(&v.public_key())
        );
        let wrong = NoteVerifier::parse(&renamed).unwrap();
        assert!(Checkpoint::open(VECTOR_NOTE, &wrong).is_err());
        // The vector vkey with a wrong key id does not even parse.
        let bad_id = VECTOR_VKEY.trim_end().replace("e4c7bc7b", "e4c7bc7c");
        assert!(matches!(
            NoteVerifier::parse(&bad_id),
            Err(NoteError::MalformedVerifierKey(_))
        ));
    }

    #[test]
    fn round_trip_sign_and_open() {
        let s = signer(42, "log.example/test");
        let cp = sample_checkpoint("log.example/test");
        let note = cp.sign(&s).unwrap();
        let v = NoteVerifier::parse(&s.vkey()).unwrap();
        assert_eq!(Checkpoint::open(&note, &v).unwrap(), cp);
        assert_eq!(v.public_key(), s.public_key());
        assert_eq!(v.key_id(), s.key_id());
        assert_eq!(v.vkey(), s.vkey());

        // Empty tree and maximum size round-trip too.
        for size in [0, u64::MAX] {
            let cp = Checkpoint { size, ..cp.clone() };
            assert_eq!(Checkpoint::open(&cp.sign(&s).unwrap(), &v).unwrap(), cp);
        }
    }

    #[test]
    fn round_trip_key_strings() {
        let s = signer(42, "log.example/test");
        let private = s.to_private_key_string();
        assert!(private.starts_with("PRIVATE+KEY+log.example/test+"));
        let back = NoteSigner::from_private_key_string(&private).unwrap();
        assert_eq!(back.name(), s.name());
        assert_eq!(back.key_id(), s.key_id());
        assert_eq!(back.public_key(), s.public_key());
        assert_eq!(back.signing_key().to_bytes(), s.signing_key().to_bytes());
        assert_eq!(back.to_private_key_string(), private);
        let v = NoteVerifier::parse(&s.vkey()).unwrap();
        assert_eq!(v.vkey(), s.vkey());
        assert_eq!(v.name(), s.name());
    }

    #[test]
    fn private_key_string_rejects_mismatching_or_malformed() {
        let s = signer(42, "log.example/test");
        let good = s.to_private_key_string();
        let hex = s.key_id_hex();
        let mut wrong = hex.clone().into_bytes();
        wrong[7] = if wrong[7] == b'0' { b'1' } else { b'0' };
        let mismatched = good.replace(&hex, std::str::from_utf8(&wrong).unwrap());
        assert!(matches!(
            NoteSigner::from_private_key_string(&mismatched),
            Err(NoteError::MalformedSignerKey(_))
        ));
        // Key id of another name with the same seed.
        let renamed = good.replace("log.example/test", "log.example/other");
        assert!(NoteSigner::from_private_key_string(&renamed).is_err());
        for bad in [
            "",
            "PRIVATE+KEY+",
            "PRIVATE+KEY+name",
            "PRIVATE+KEY+name+0000000",
            &good[..good.len() - 4],
            &good.replace("PRIVATE+KEY", "PUBLIC+KEY"),
            &s.vkey(),
        ] {
            assert!(NoteSigner::from_private_key_string(bad).is_err(), "{bad:?}");
        }
        // Wrong algorithm byte (with a correct-looking id it still fails on the byte).
        let mut raw = [0u8; 33];
        raw[0] = 0x02;
        let bad_alg = format!("PRIVATE+KEY+n+{hex}+{}", STANDARD.encode(raw));
        assert!(NoteSigner::from_private_key_string(&bad_alg).is_err());
    }

    #[test]
    fn open_with_different_key_fails() {
        let s = signer(1, "log.example/test");
        let note = sample_checkpoint("log.example/test").sign(&s).unwrap();
        let other = NoteVerifier::parse(&signer(2, "log.example/test").vkey()).unwrap();
        let err = Checkpoint::open(&note, &other).unwrap_err();
        assert!(matches!(err, NoteError::UnknownKey { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "note has no signature by key log.example/test+{}",
                other.key_id_hex()
            )
        );
    }

    #[test]
    fn signature_line_with_other_name_is_no_signature_by_this_key() {
        let s = signer(1, "log.example/test");
        let v = NoteVerifier::parse(&s.vkey()).unwrap();
        let note = sample_checkpoint("log.example/test").sign(&s).unwrap();
        let (text, sigs) = note.rsplit_once("\n\n").unwrap();
        let renamed = sigs.replacen("— log.example/test ", "— log.example/fake ", 1);
        assert_ne!(renamed, sigs);
        let err = v.open(&format!("{text}\n\n{renamed}")).unwrap_err();
        assert!(matches!(err, NoteError::UnknownKey { .. }), "{err}");
    }

    #[test]
    fn other_signatures_are_ignored_but_bad_own_lines_fail() {
        let a = signer(1, "log.example/test");
        let b = signer(2, "witness.example");
        let va = NoteVerifier::parse(&a.vkey()).unwrap();
        let vb = NoteVerifier::parse(&b.vkey()).unwrap();
        let text = sample_checkpoint("log.example/test").text();
        let na = a.sign_note(&text).unwrap();
        let nb = b.sign_note(&text).unwrap();
        let line_a = &na[text.len() + 1..];
        let line_b = &nb[text.len() + 1..];
        for both in [
            format!("{text}\n{line_a}{line_b}"),
            format!("{text}\n{line_b}{line_a}"),
        ] {
            assert_eq!(va.open(&both).unwrap(), text);
            assert_eq!(vb.open(&both).unwrap(), text);
        }
        // A second, failing line by the same key is an error, even after a good one.
        let other_text = sample_checkpoint("log.example/other").text();
        let bad_a = &a.sign_note(&other_text).unwrap()[other_text.len() + 1..];
        let err = va.open(&format!("{text}\n{line_a}{bad_a}")).unwrap_err();
        assert!(matches!(err, NoteError::BadSignature { .. }), "{err}");
        // Malformed lines are errors even when they are not by this key.
        let err = va
            .open(&format!("{text}\n{line_a}— witness.example !!!\n"))
            .unwrap_err();
        assert!(matches!(err, NoteError::MalformedNote(_)), "{err}");
    }

    #[test]
    fn malformed_notes_are_rejected() {
        let s = signer(1, "log.example/test");
        let v = NoteVerifier::parse(&s.vkey()).unwrap();
        let text = "hello\n";
        let note = s.sign_note(text).unwrap();
        assert_eq!(v.open(&note).unwrap(), text);
        let line = &note[text.len() + 1..];
        let short = format!("— log.example/test {}", STANDARD.encode([1, 2, 3, 4]));
        let cases = [
            String::new(),
            text.to_owned(),
            note.trim_end().to_owned(),  // no final newline
            format!("{text}{line}"),     // no blank line
            format!("{text}\n"),         // no signatures
            format!("{text}\n{line}\n"), // blank line after signatures
            format!("{text}\n- {}", &line[SIG_PREFIX.len()..]), // ASCII dash
            format!("{text}\n{}", line.replacen(' ', "  ", 1)), // double space
            format!("{text}\n{}", line.replacen(' ', "\t", 2)), // tab
            format!("{text}\n{}", line.replace('=', "")), // unpadded base64
            format!("{text}\n— log.example/test\n"), // no signature
            format!("{text}\n— log.example/test \n"), // empty signature
            format!("{text}\n{short}\n"), // only a key id
            format!("hel\rlo\n\n{line}"), // control character
        ];
        for bad in &cases {
            assert!(v.open(bad).is_err(), "accepted {bad:?}");
        }
        // At most 100 signature lines.
        let other = &signer(2, "x").sign_note(text).unwrap()[text.len() + 1..];
        let many = format!("{text}\n{line}{}", other.repeat(99));
        assert_eq!(v.open(&many).unwrap(), text);
        let too_many = format!("{text}\n{line}{}", other.repeat(100));
        assert!(matches!(
            v.open(&too_many),
            Err(NoteError::MalformedNote(_))
        ));
    }

    #[test]
    fn text_with_blank_lines_opens() {
        let s = signer(1, "log.example/test");
        let v = NoteVerifier::parse(&s.vkey()).unwrap();
        for text in ["\n", "a\n\nb\n", "a\n\n", "x\n\n\n"] {
            assert_eq!(v.open(&s.sign_note(text).unwrap()).unwrap(), text);
        }
    }

    #[test]
    fn sign_note_rejects_bad_text() {
        let s = signer(1, "log.example/test");
        for bad in ["", "no newline", "tab\there\n", "nul\0\n"] {
            assert!(
                matches!(s.sign_note(bad), Err(NoteError::MalformedText(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn signer_name_rules_and_debug() {
        for bad in ["", "a b", "a+b", "a\nb", "a\u{a0}b", "a\u{2028}"] {
            assert!(
                matches!(
                    NoteSigner::new(bad, SigningKey::from_bytes(&[1; 32])),
                    Err(NoteError::InvalidName(_))
                ),
                "{bad:?}"
            );
        }
        let s = signer(7, "example.org/log");
        let debug = format!("{s:?}");
        assert!(debug.contains("example.org/log"));
        assert!(debug.contains(&s.key_id_hex()));
        let private = s.to_private_key_string();
        let seed_b64 = private.rsplit('+').next().unwrap();
        assert!(!debug.contains(seed_b64), "{debug}");
        assert!(!debug.contains("[7, 7"), "{debug}");
        assert!(!debug.contains("7, 7, 7"), "{debug}");
    }

    #[test]
    fn vkey_parse_rejects_malformed() {
        let s = signer(3, "log.example/test");
        let good = s.vkey();
        let hex = s.key_id_hex();
        let mut raw = [0u8; 33];
        raw[0] = 0x02;
        raw[1..].copy_from_slice(&s.public_key());
        let cases = [
            String::new(),
            "log.example/test".to_owned(),
            format!("log.example/test+{hex}"),
            format!("log.example/test+{hex}+"),
            format!("+{hex}+{}", encode_alg_key(&s.public_key())),
            format!(
                "log.example/test+{}+{}",
                &hex[..7],
                encode_alg_key(&s.public_key())
            ),
            format!(
                "log.example/test+0x{}+{}",
                &hex[..6],
                encode_alg_key(&s.public_key())
            ),
            format!("log.example/test+{hex}+{}", STANDARD.encode(raw)), // algorithm 0x02
            format!("log.example/test+{hex}+{}", STANDARD.encode(&raw[..32])), // 31-byte key
            good[..good.len() - 1].to_owned(),
            format!("{good}="),
            format!("{good} "),
            good.replace("log.example/test", "log.example/tesT"),
        ];
        for bad in &cases {
            assert!(
                matches!(
                    NoteVerifier::parse(bad),
                    Err(NoteError::MalformedVerifierKey(_))
                ),
                "accepted {bad:?}"
            );
        }
        // Uppercase hex is accepted, as by Go's strconv.ParseUint.
        let upper = good.replacen(&hex, &hex.to_uppercase(), 1);
        assert_eq!(NoteVerifier::parse(&upper).unwrap().vkey(), good);
    }

    #[test]
    fn checkpoint_parse_text() {
        let root = STANDARD.encode([0xAB; 32]);
        let cp = Checkpoint::parse_text(&format!("o\n0\n{root}\n")).unwrap();
        assert_eq!(
            cp,
            Checkpoint {
                origin: "o".into(),
                size: 0,
                root: [0xAB; 32]
            }
        );
        let ext =
            Checkpoint::parse_text(&format!("o\n18446744073709551615\n{root}\nextra\nmore\n"))
                .unwrap();
        assert_eq!(ext.size, u64::MAX);

        let short_root = STANDARD.encode([0xAB; 31]);
        let long_root = STANDARD.encode([0xAB; 33]);
        let cases = [
            String::new(),
            "\n".to_owned(),
            format!("o\n1\n{root}"),                      // no final newline
            format!("\n1\n{root}\n"),                     // empty origin
            "o\n1\n".to_owned(),                          // missing root
            "o\n".to_owned(),                             // missing size
            format!("o\n\n{root}\n"),                     // empty size
            format!("o\n01\n{root}\n"),                   // leading zero
            format!("o\n00\n{root}\n"),                   // leading zero
            format!("o\n+1\n{root}\n"),                   // sign
            format!("o\n-1\n{root}\n"),                   // sign
            format!("o\n 1\n{root}\n"),                   // space
            format!("o\n1 \n{root}\n"),                   // space
            format!("o\n0x10\n{root}\n"),                 // hex
            format!("o\n18446744073709551616\n{root}\n"), // overflow
            format!("o\n1\n{short_root}\n"),              // 31-byte root
            format!("o\n1\n{long_root}\n"),               // 33-byte root
            format!("o\n1\n{}\n", root.trim_end_matches('=')), // unpadded
            "o\n1\n!!!!\n".to_owned(),                    // not base64
            format!("o\n1\n{root}\n\n"),                  // empty extension line
            format!("o\n1\n{root}\next\n\n"),             // empty extension line
        ];
        for bad in &cases {
            assert!(
                matches!(
                    Checkpoint::parse_text(bad),
                    Err(NoteError::MalformedCheckpoint(_))
                ),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn checkpoint_origin_must_match_key_name() {
        let s = signer(1, "log.example/test");
        let cp = sample_checkpoint("log.example/other");
        assert!(matches!(cp.sign(&s), Err(NoteError::OriginMismatch { .. })));
        // A note whose text names another origin, signed by this key, is rejected on open.
        let note = s.sign_note(&cp.text()).unwrap();
        let v = NoteVerifier::parse(&s.vkey()).unwrap();
        assert_eq!(v.open(&note).unwrap(), cp.text());
        assert!(matches!(
            Checkpoint::open(&note, &v),
            Err(NoteError::OriginMismatch { .. })
        ));
    }

    #[test]
    fn golden_signed_checkpoint() {
        let s = signer(7, "example.org/log");
        assert_eq!(s.vkey(), GOLDEN_VKEY);
        let cp = Checkpoint {
            origin: "example.org/log".into(),
            size: 3,
            root: [0xAB; 32],
        };
        let note = cp.sign(&s).unwrap();
        assert_eq!(note, GOLDEN_NOTE);
        let v = NoteVerifier::parse(GOLDEN_VKEY).unwrap();
        assert_eq!(Checkpoint::open(GOLDEN_NOTE, &v).unwrap(), cp);
    }

    /// Computed independently (Python `cryptography` Ed25519 with seed `[7; 32]`, SHA-256 key
    /// id); its key id is `5e2cef00`.
    const GOLDEN_VKEY: &str =
        "example.org/log+5e2cef00+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs";
    const GOLDEN_NOTE: &str = "example.org/log\n\
        3\n\
        q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n\
        \n\
        — example.org/log XizvANez5uZTyT8A4v26NCArl7UDAZlzDNFiWQixDoHvwUuv6+uXhEOYJEFK27+PuV4moDNqNgNWV4y4VZDb2b/1ZA0=\n";
}
