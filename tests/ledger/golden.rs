//! Golden bytes: a fixed entry sealed with a fixed key must give exactly these bytes,
//! forever. A change here is a change of the log format.

use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use keyledger::crypto::note::NoteSigner;
use keyledger::crypto::seal;
use keyledger::crypto::secret::SecretSha256;
use keyledger::domain::events::{ApiKeyCreated, LedgerInitialized};
use keyledger::domain::{Actor, ActorKind, Entry, EventData, Role, Stream, Timestamp};
use uuid::Uuid;

const ORIGIN: &str = "example.org/log";

const GOLDEN_API_KEY_CREATED: &str = r#"{"actor":{"credential":"01900000-0000-7000-8000-0000000000aa","id":"01900000-0000-7000-8000-0000000000aa","kind":"service_account"},"at":"2026-11-28T21:31:06.123456Z","data":{"display":"klk_…mple","expires_at":null,"key_id":"01900000-0000-7000-8000-000000000001","name":"ci-deploy","role":"basic","secret_sha256":"c33ed073f4792f46b10c734333c2f0869e903146a240c246491d9e2f6887ab6b"},"id":"01900000-0000-7000-8000-000000000005","seq":5,"sig":"SwAemUPpKSBd6AVGEk9T16cspOOKI171A+8t6w5mRcBdetFdiKUqhimsRJLPe3Qo9H3PFklZFdGjdtkPAUT0Bw==","signer":"5e2cef00","stream":"api_key/01900000-0000-7000-8000-000000000001","type":"api_key.created","v":1,"version":1}"#;
const GOLDEN_GENESIS: &str = r#"{"actor":{"credential":null,"id":"keyledger","kind":"system"},"at":"2026-11-28T21:00:00.000000Z","data":{"origin":"example.org/log","public_key":"6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw="},"id":"01900000-0000-7000-8000-000000000000","seq":0,"sig":"cwBHGuGiqPo30XhN3ZWeqScFGrs6zVyVK3oz40yrsWL4UPhQxE1GEEe4BySxuO3kaSL3zJ8s9PuBqaR37lvQCQ==","signer":"5e2cef00","stream":"ledger","type":"ledger.initialized","v":1,"version":1}"#;

fn signer() -> NoteSigner {
    NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[7u8; 32])).expect("valid signer")
}

fn verifying_key() -> VerifyingKey {
    VerifyingKey::from_bytes(&signer().public_key()).expect("valid public key")
}

fn api_key_created_entry() -> Entry {
    let key_id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
    let actor_key = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00aa);
    Entry {
        seq: 5,
        id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0005),
        stream: Stream::ApiKey(key_id),
        version: 1,
        at: Timestamp::parse("2026-11-28T21:31:06.123456Z").expect("valid timestamp"),
        actor: Actor {
            kind: ActorKind::ServiceAccount,
            id: actor_key.to_string(),
            credential: Some(actor_key.to_string()),
        },
        signer: String::new(),
        data: EventData::ApiKeyCreated(ApiKeyCreated {
            key_id,
            name: "ci-deploy".to_string(),
            role: Role::Basic,
            display: "klk_…mple".to_string(),
            secret_sha256: SecretSha256::of("klk_example"),
            expires_at: None,
        }),
        sig: String::new(),
    }
}

fn genesis_entry() -> Entry {
    let public_key = base64::engine::general_purpose::STANDARD.encode(signer().public_key());
    Entry {
        seq: 0,
        id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000),
        stream: Stream::Ledger,
        version: 1,
        // A whole second: must still print six fractional digits.
        at: Timestamp::parse("2026-11-28T21:00:00Z").expect("valid timestamp"),
        actor: Actor::system(),
        signer: String::new(),
        data: EventData::LedgerInitialized(LedgerInitialized {
            origin: ORIGIN.to_string(),
            public_key,
        }),
        sig: String::new(),
    }
}

fn sealed(entry: Entry) -> (Entry, Vec<u8>) {
    seal::seal(entry, &signer()).expect("seal the entry")
}

/// The byte range of the value of top-level key `key` (an object or a scalar).
fn value_span(bytes: &[u8], key: &str) -> std::ops::Range<usize> {
    let needle = format!("\"{key}\":");
    let start = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("no {needle} in entry"))
        + needle.len();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 1 => return start..i + 1,
            b'}' | b']' if depth == 0 => return start..i,
            b'}' | b']' => depth -= 1,
            b',' if depth == 0 => return start..i,
            _ => {}
        }
    }
    panic!("unterminated value of {key}");
}

/// The keys of every JSON object in `bytes`, each object's in the order written; also
/// asserts that no whitespace appears outside strings.
fn object_keys(bytes: &[u8]) -> Vec<Vec<String>> {
    enum Frame {
        Object { expect_key: bool, keys: Vec<String> },
        Array,
    }
    let text = std::str::from_utf8(bytes).expect("entry is UTF-8");
    let mut stack: Vec<Frame> = Vec::new();
    let mut done = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '{' => stack.push(Frame::Object {
                expect_key: true,
                keys: Vec::new(),
            }),
            '[' => stack.push(Frame::Array),
            '}' => match stack.pop() {
                Some(Frame::Object { keys, .. }) => done.push(keys),
                _ => panic!("unbalanced }}"),
            },
            ']' => assert!(matches!(stack.pop(), Some(Frame::Array)), "unbalanced ]"),
            ',' => {
                if let Some(Frame::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = true;
                }
            }
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next().expect("unterminated string") {
                        '"' => break,
                        '\\' => {
                            s.push('\\');
                            s.push(chars.next().expect("escape"));
                        }
                        other => s.push(other),
                    }
                }
                if let Some(Frame::Object { expect_key, keys }) = stack.last_mut() {
                    if *expect_key {
                        keys.push(s);
                        *expect_key = false;
                    }
                }
            }
            c if c.is_whitespace() => panic!("whitespace outside a string in {text}"),
            _ => {}
        }
    }
    assert!(stack.is_empty(), "unbalanced JSON");
    done
}

fn assert_canonical_shape(bytes: &[u8]) {
    let objects = object_keys(bytes);
    assert_eq!(objects.len(), 3, "actor, data and the envelope");
    for keys in &objects {
        let mut sorted = keys.clone();
        // RFC 8785 sorts by UTF-16 code units.
        sorted.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
        sorted.dedup();
        assert_eq!(keys, &sorted, "keys not sorted or duplicated");
    }
    let envelope = objects.last().expect("envelope is the last object closed");
    assert_eq!(
        envelope,
        &[
            "actor", "at", "data", "id", "seq", "sig", "signer", "stream", "type", "v", "version"
        ]
    );
    assert_eq!(&bytes[value_span(bytes, "v")], b"1");
    let at = &bytes[value_span(bytes, "at")];
    let at = std::str::from_utf8(at).expect("utf8");
    // "YYYY-MM-DDTHH:MM:SS.ffffffZ" in quotes.
    assert_eq!(at.len(), 2 + 27, "{at}");
    let (_, fraction) = at.split_once('.').expect("fractional seconds");
    assert_eq!(fraction.len(), 6 + 2, "six digits, Z and the quote: {at}");
    assert!(fraction[..6].bytes().all(|b| b.is_ascii_digit()), "{at}");
    assert_eq!(&fraction[6..], "Z\"");
}

/// Flips each byte of `span` with each of a few masks; every variant must be refused.
fn assert_every_flip_refused(bytes: &[u8], span: std::ops::Range<usize>) {
    let key = verifying_key();
    assert!(!span.is_empty());
    for i in span {
        for mask in [0x01u8, 0x20, 0x80] {
            let mut tampered = bytes.to_vec();
            tampered[i] ^= mask;
            assert!(
                seal::open(&tampered, &key).is_err(),
                "flipping byte {i} ({:?}) with {mask:#04x} was accepted",
                char::from(bytes[i])
            );
        }
    }
}

#[test]
fn api_key_created_bytes_are_pinned() {
    let (entry, bytes) = sealed(api_key_created_entry());
    assert_eq!(
        String::from_utf8(bytes.clone()).expect("UTF-8"),
        GOLDEN_API_KEY_CREATED
    );
    assert_eq!(entry.signer, signer().key_id_hex());
    assert_eq!(entry.signer, "5e2cef00");
    // Sealing is deterministic.
    assert_eq!(sealed(api_key_created_entry()).1, bytes);

    let opened = seal::open(GOLDEN_API_KEY_CREATED.as_bytes(), &verifying_key())
        .expect("the pinned entry verifies");
    assert_eq!(opened, entry);
    assert_eq!(opened.seq, 5);
    assert_eq!(opened.version, 1);
    assert_eq!(
        opened.stream.name(),
        "api_key/01900000-0000-7000-8000-000000000001"
    );
    let EventData::ApiKeyCreated(data) = &opened.data else {
        panic!("wrong event type: {opened:?}");
    };
    assert_eq!(data.secret_sha256, SecretSha256::of("klk_example"));
    assert_eq!(data.expires_at, None);
}

#[test]
fn genesis_bytes_are_pinned() {
    let (entry, bytes) = sealed(genesis_entry());
    assert_eq!(String::from_utf8(bytes).expect("UTF-8"), GOLDEN_GENESIS);
    let opened = seal::open(GOLDEN_GENESIS.as_bytes(), &verifying_key())
        .expect("the pinned genesis verifies");
    assert_eq!(opened, entry);
    assert_eq!(opened.stream, Stream::Ledger);
    assert_eq!(opened.actor, Actor::system());
}

#[test]
fn pinned_entries_are_canonical_json() {
    for golden in [GOLDEN_API_KEY_CREATED, GOLDEN_GENESIS] {
        let bytes = golden.as_bytes();
        assert_canonical_shape(bytes);
        // The library's own canonicaliser agrees.
        let value: serde_json::Value = serde_json::from_str(golden).expect("valid JSON");
        assert_eq!(
            keyledger::crypto::jcs::canonicalize(&value).expect("canonicalize"),
            bytes
        );
    }
    assert!(GOLDEN_API_KEY_CREATED.contains(r#""at":"2026-11-28T21:31:06.123456Z""#));
    assert!(GOLDEN_GENESIS.contains(r#""at":"2026-11-28T21:00:00.000000Z""#));
    assert!(GOLDEN_API_KEY_CREATED.contains(r#""expires_at":null"#));
}

#[test]
fn flipping_any_byte_of_data_is_refused() {
    for golden in [GOLDEN_API_KEY_CREATED, GOLDEN_GENESIS] {
        let bytes = golden.as_bytes();
        let span = value_span(bytes, "data");
        assert_eq!(bytes[span.start], b'{');
        assert_eq!(bytes[span.end - 1], b'}');
        assert_every_flip_refused(bytes, span);
    }
}

#[test]
fn flipping_any_byte_anywhere_is_refused() {
    for golden in [GOLDEN_API_KEY_CREATED, GOLDEN_GENESIS] {
        let bytes = golden.as_bytes();
        assert_every_flip_refused(bytes, 0..bytes.len());
    }
}

#[test]
fn another_key_does_not_verify_the_pinned_entry() {
    let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
    assert!(seal::open(GOLDEN_API_KEY_CREATED.as_bytes(), &other).is_err());
    assert!(seal::open(GOLDEN_GENESIS.as_bytes(), &other).is_err());
}
