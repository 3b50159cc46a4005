//! Credential secrets: generation, format check, hashing and the masked display form.
//!
//! A secret is `klk_` (API key) or `klp_` (personal access token), then 43 base62
//! characters from the OS CSPRNG (62^43 > 2^256), then 6 base62 characters holding the
//! CRC32 (IEEE) of everything before them. The checksum lets a malformed or mistyped secret
//! be refused before any lookup, and lets secret scanners recognise leaked keyledger secrets.
//!
//! Invariants: a [`PlainSecret`] never prints itself (`Debug` shows a placeholder), is not
//! `Serialize`, and is wiped from memory on drop. Only its SHA-256 ([`SecretSha256`]) is
//! ever stored or put in an event.

use std::fmt;

use rand::TryRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PREFIX_LEN: usize = 4;
const BODY_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
/// Total length of every keyledger secret.
pub const SECRET_LEN: usize = PREFIX_LEN + BODY_LEN + CHECKSUM_LEN;

/// Which kind of credential a secret belongs to, told by its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    /// `klk_`: the API key of a service account.
    ApiKey,
    /// `klp_`: a user's personal access token.
    Pat,
}

impl SecretKind {
    /// The four-character prefix of this kind's secrets.
    pub fn prefix(self) -> &'static str {
        match self {
            SecretKind::ApiKey => "klk_",
            SecretKind::Pat => "klp_",
        }
    }
}

/// Why a presented string is not a keyledger secret. Carries no part of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Wrong length, prefix or alphabet.
    #[error("credential is not a keyledger secret (bad length, prefix or characters)")]
    Malformed,
    /// Well-formed, but the checksum does not match: a typo or a truncated copy.
    #[error("credential checksum does not match")]
    BadChecksum,
    /// The operating system's random source failed.
    #[error("the operating system's random number generator failed")]
    Rng,
}

/// A secret in clear. Shown exactly once, in the response that creates or regenerates it.
pub struct PlainSecret(Zeroizing<String>);

impl PlainSecret {
    /// Draws a new secret of `kind` from the OS CSPRNG.
    pub fn generate(kind: SecretKind) -> Result<Self, SecretError> {
        let mut s = String::with_capacity(SECRET_LEN);
        s.push_str(kind.prefix());
        let mut rng = rand::rngs::SysRng;
        let mut buf = Zeroizing::new([0u8; 64]);
        let mut taken = 0;
        while taken < BODY_LEN {
            rng.try_fill_bytes(buf.as_mut())
                .map_err(|_| SecretError::Rng)?;
            for &b in buf.iter() {
                // Rejection sampling: 248 = 4 * 62, so `b % 62` is uniform below it.
                if b < 248 && taken < BODY_LEN {
                    s.push(char::from(BASE62[usize::from(b % 62)]));
                    taken += 1;
                }
            }
        }
        let checksum = checksum(s.as_bytes());
        s.push_str(&checksum);
        Ok(PlainSecret(Zeroizing::new(s)))
    }

    /// The secret itself, for the one response that reveals it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 under which the secret is stored.
    pub fn sha256(&self) -> SecretSha256 {
        SecretSha256::of(&self.0)
    }

    /// The masked form shown in lists and events, e.g. `klk_****a1B2`.
    pub fn display(&self) -> String {
        display(&self.0)
    }
}

impl fmt::Debug for PlainSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainSecret(<redacted>)")
    }
}

/// The masked form of a secret: its prefix, four stars and its last four characters.
pub fn display(secret: &str) -> String {
    let prefix = secret.get(..PREFIX_LEN).unwrap_or("");
    let tail = secret.get(secret.len().saturating_sub(4)..).unwrap_or("");
    format!("{prefix}****{tail}")
}

/// Checks the format and checksum of a presented secret and tells its kind.
/// Runs before any lookup, so garbage never reaches the credential index.
pub fn parse(presented: &str) -> Result<SecretKind, SecretError> {
    let bytes = presented.as_bytes();
    if bytes.len() != SECRET_LEN {
        return Err(SecretError::Malformed);
    }
    let kind = match bytes.get(..PREFIX_LEN) {
        Some(b"klk_") => SecretKind::ApiKey,
        Some(b"klp_") => SecretKind::Pat,
        _ => return Err(SecretError::Malformed),
    };
    let rest = &bytes[PREFIX_LEN..];
    if !rest.iter().all(u8::is_ascii_alphanumeric) {
        return Err(SecretError::Malformed);
    }
    let (head, sum) = bytes.split_at(PREFIX_LEN + BODY_LEN);
    if checksum(head).as_bytes().ct_eq(sum).into() {
        Ok(kind)
    } else {
        Err(SecretError::BadChecksum)
    }
}

/// Whether free text holds something shaped like a keyledger secret: the `klk_` or `klp_`
/// prefix in any case, or a run of 49 base62 characters that, behind either prefix, carries
/// a valid checksum (a secret pasted without its prefix, or with it altered). Names, emails
/// and reasons are signed into the log forever; a live secret must never get there.
pub fn contains_secret_like(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    if lower.contains("klk_") || lower.contains("klp_") {
        return true;
    }
    let tail = BODY_LEN + CHECKSUM_LEN;
    text.as_bytes()
        .split(|b| !b.is_ascii_alphanumeric())
        .filter(|run| run.len() >= tail)
        .any(|run| {
            run.windows(tail).any(|window| {
                [SecretKind::ApiKey, SecretKind::Pat].iter().any(|kind| {
                    let mut candidate = Vec::with_capacity(SECRET_LEN);
                    candidate.extend_from_slice(kind.prefix().as_bytes());
                    candidate.extend_from_slice(window);
                    let (head, sum) = candidate.split_at(PREFIX_LEN + BODY_LEN);
                    checksum(head).as_bytes() == sum
                })
            })
        })
}

/// Six base62 digits of the CRC32 (IEEE) of `head`, most significant first, zero-padded.
fn checksum(head: &[u8]) -> String {
    let mut value = u64::from(crc32fast::hash(head));
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// Hex SHA-256 of a whole secret string: the only form in which a secret is kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretSha256(pub [u8; 32]);

impl SecretSha256 {
    /// Hashes a presented secret.
    pub fn of(secret: &str) -> Self {
        SecretSha256(Sha256::digest(secret.as_bytes()).into())
    }

    /// Constant-time equality, for comparing a presented secret's hash with a stored one.
    pub fn ct_eq(&self, other: &SecretSha256) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Lowercase hex, as written in events.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0])?;
            let lo = hex_digit(pair[1])?;
            out[i] = (hi << 4) | lo;
        }
        Some(SecretSha256(out))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

impl fmt::Debug for SecretSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretSha256({})", self.to_hex())
    }
}

impl Serialize for SecretSha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for SecretSha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretSha256::from_hex(&s).ok_or_else(|| {
            serde::de::Error::custom("secret_sha256 must be 64 lowercase hex digits")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_the_documented_format() {
        for kind in [SecretKind::ApiKey, SecretKind::Pat] {
            let secret = PlainSecret::generate(kind).expect("rng");
            let s = secret.expose();
            assert_eq!(s.len(), 53);
            assert!(s.starts_with(kind.prefix()));
            assert!(s[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(parse(s), Ok(kind));
            assert_eq!(
                secret.display(),
                format!("{}****{}", kind.prefix(), &s[49..])
            );
            assert_eq!(secret.sha256(), SecretSha256::of(s));
        }
    }

    #[test]
    fn checksum_golden() {
        // CRC32("klk_" + 43 zeros) computed independently with Python's zlib.crc32.
        let head = format!("klk_{}", "0".repeat(43));
        let crc = crc32fast::hash(head.as_bytes());
        let mut v = u64::from(crc);
        let mut expected = Vec::new();
        for _ in 0..6 {
            expected.push(BASE62[(v % 62) as usize]);
            v /= 62;
        }
        expected.reverse();
        assert_eq!(checksum(head.as_bytes()).as_bytes(), expected.as_slice());
        assert_eq!(checksum(head.as_bytes()), "4VnRLl");
        assert_eq!(parse(&format!("{head}4VnRLl")), Ok(SecretKind::ApiKey));
    }

    #[test]
    fn any_changed_character_is_refused() {
        let secret = PlainSecret::generate(SecretKind::ApiKey).expect("rng");
        let s = secret.expose().to_string();
        for i in 4..s.len() {
            let mut bytes = s.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(bytes).expect("ascii");
            assert_eq!(
                parse(&changed),
                Err(SecretError::BadChecksum),
                "position {i}"
            );
        }
    }

    #[test]
    fn malformed_strings_are_refused() {
        let good = PlainSecret::generate(SecretKind::Pat).expect("rng");
        let s = good.expose();
        for bad in [
            "",
            "klk_",
            &s[..52],
            &format!("{s}x"),
            &format!("xyz_{}", &s[4..]),
            &format!("klp_{}-", &s[4..52]),
            &format!("klp_{}é", &s[4..51]),
        ] {
            assert_eq!(parse(bad), Err(SecretError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn secret_shaped_text_is_recognised() {
        let key = PlainSecret::generate(SecretKind::ApiKey).expect("rng");
        let pat = PlainSecret::generate(SecretKind::Pat).expect("rng");
        let k = key.expose();
        let p = pat.expose();
        for text in [
            k.to_string(),
            p.to_string(),
            format!("ci key {k} (prod)"),
            k.to_uppercase(),
            format!("KLK_{}", &k[4..]),
            format!("xyz_{}", &k[4..]),
            k[4..].to_string(),
            format!("see:{}!", &p[4..]),
            "klk_".to_string(),
            "my Klp_ token".to_string(),
        ] {
            assert!(contains_secret_like(&text), "{text:?}");
        }
        for text in [
            "ci-bot",
            "chat frontend (prod)",
            &"a".repeat(100),
            &k[4..52],
            "kl k_ klk-",
            "ada@example.org",
        ] {
            assert!(!contains_secret_like(text), "{text:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = PlainSecret::generate(SecretKind::ApiKey).expect("rng");
        let printed = format!("{secret:?}");
        assert!(!printed.contains(&secret.expose()[4..]));
        assert_eq!(printed, "PlainSecret(<redacted>)");
    }

    #[test]
    fn sha256_hex_round_trips_and_compares() {
        let a = SecretSha256::of("klk_example");
        let b = SecretSha256::from_hex(&a.to_hex()).expect("hex");
        assert!(a.ct_eq(&b));
        assert!(!a.ct_eq(&SecretSha256::of("klk_other")));
        assert_eq!(SecretSha256::from_hex("AB"), None);
        assert_eq!(SecretSha256::from_hex(&"G".repeat(64)), None);
    }
}
