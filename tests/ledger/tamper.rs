//! Tampering with a closed data dir: the ledger refuses to open and names the first bad
//! seq; `keyledger check` fails the same way; nothing panics.

use std::path::Path;
use std::process::{Command as Process, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyledger::domain::SystemClock;
use keyledger::ledger::{Ledger, OpenError};
use keyledger::store::Store;

use crate::{LOCK_WAIT, closed_data_dir, is_lock_busy, open_store, signer_for};

const KEYS: usize = 19; // 20 entries: seq 0..=19

/// Opens the ledger in `dir`, expecting a refusal; the store is closed afterwards.
fn open_error(dir: &Path) -> OpenError {
    let store: Arc<dyn Store> = open_store(dir);
    match Ledger::open(store, signer_for(dir), Arc::new(SystemClock)) {
        Ok(_) => panic!("a tampered log must not open"),
        Err(e) => e,
    }
}

/// Runs `keyledger check` on `dir`, retrying while our own just-dropped sled handle still
/// holds the lock (see [`crate::open_store`]).
fn check_binary(dir: &Path) -> Output {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let out = Process::new(env!("CARGO_BIN_EXE_keyledger"))
            .arg("check")
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run keyledger check");
        if is_lock_busy(&String::from_utf8_lossy(&out.stderr)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        return out;
    }
}

fn assert_names_seq(err: &OpenError, seq: u64) {
    assert_eq!(err.seq(), Some(seq), "{err}");
    assert!(
        matches!(err, OpenError::BadEntry { seq: s, .. } if *s == seq),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&format!("seq {seq} ")), "{text}");
}

fn assert_check_fails_naming(dir: &Path, seq: u64) {
    let out = check_binary(dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check must fail; stderr: {stderr}");
    assert_ne!(
        out.status.code(),
        Some(101),
        "check must not panic: {stderr}"
    );
    assert!(stderr.contains(&format!("seq {seq} ")), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

/// Replaces the bytes of entry `seq` through the store's test hook.
fn overwrite(dir: &Path, seq: u64, f: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let store = open_store(dir);
    let bytes = store
        .entry(seq)
        .expect("read entry")
        .unwrap_or_else(|| panic!("entry {seq} exists"));
    let changed = f(bytes.clone());
    assert_ne!(changed, bytes, "the tamper must change something");
    store
        .overwrite_entry_for_test(seq, &changed)
        .expect("overwrite entry");
}

fn remove(dir: &Path, seq: u64) {
    let store = open_store(dir);
    assert!(store.entry(seq).expect("read entry").is_some());
    store.remove_entry_for_test(seq).expect("remove entry");
}

#[tokio::test(flavor = "multi_thread")]
async fn untouched_dir_checks_and_opens() {
    let tmp = tempfile::tempdir().expect("tempdir");
    closed_data_dir(tmp.path(), KEYS).await;
    let out = check_binary(tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("ok: {} entries", KEYS + 1)),
        "{stdout}"
    );
    // The binary printed the checkpoint note; it is the one the library reports.
    let store = open_store(tmp.path());
    let report =
        keyledger::ledger::check(store.as_ref(), signer_for(tmp.path()).verifier()).expect("check");
    assert!(stdout.contains(&report.checkpoint), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_letter_in_name_names_seq_7() {
    let tmp = tempfile::tempdir().expect("tempdir");
    closed_data_dir(tmp.path(), KEYS).await;
    // seq 7 is the creation of "key-06": make it "kez-06". Still valid, canonical JSON.
    overwrite(tmp.path(), 7, |bytes| {
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(text.contains("\"name\":\"key-06\""), "{text}");
        let changed = text.replace("\"name\":\"key-06\"", "\"name\":\"kez-06\"");
        serde_json::from_str::<serde_json::Value>(&changed).expect("still valid JSON");
        changed.into_bytes()
    });
    let err = open_error(tmp.path());
    assert_names_seq(&err, 7);
    assert_check_fails_naming(tmp.path(), 7);
    // The full check in the library names it too.
    let store = open_store(tmp.path());
    let err = keyledger::ledger::check(store.as_ref(), signer_for(tmp.path()).verifier())
        .expect_err("check fails");
    assert_names_seq(&err, 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_json_names_seq_7() {
    let tmp = tempfile::tempdir().expect("tempdir");
    closed_data_dir(tmp.path(), KEYS).await;
    overwrite(tmp.path(), 7, |mut bytes| {
        // Turn the closing brace into garbage.
        let last = bytes.len() - 1;
        assert_eq!(bytes[last], b'}');
        bytes[last] = b'!';
        assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_err());
        bytes
    });
    let err = open_error(tmp.path());
    assert_names_seq(&err, 7);
    assert_check_fails_naming(tmp.path(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn non_utf8_and_empty_entries_name_their_seq() {
    let tmp = tempfile::tempdir().expect("tempdir");
    closed_data_dir(tmp.path(), KEYS).await;
    overwrite(tmp.path(), 7, |mut bytes| {
        bytes[10] = 0xff;
        bytes
    });
    assert_names_seq(&open_error(tmp.path()), 7);
    overwrite(tmp.path(), 3, |_| Vec::new());
    assert_names_seq(&open_error(tmp.path()), 3);
    assert_check_fails_naming(tmp.path(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn non_canonical_but_equivalent_json_names_seq_7() {
    let tmp = tempfile::tempdir().expect("tempdir");
    closed_data_dir(tmp.path(), KEYS).await;
    overwrite(tmp.path(), 7, |bytes| {
        // Same JSON value, one extra space: not canonical.
        let text = String::from_utf8(bytes).expect("utf8");
        text.replacen(':', ": ", 1).into_bytes()
    });
    assert_names_seq(&open_error(tmp.path()), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn swapped_entries_name_the_first() {
    let tmp = tempfile::tempdir().expect("tempdir");
    closed_data_dir(tmp.path(), KEYS).await;
    let store = open_store(tmp.path());
    let a = store.entry(8).expect("read").expect("entry 8");
    let b = store.entry(9).expect("read").expect("entry 9");
    store.overwrite_entry_for_test(8, &b).expect("overwrite");
    store.overwrite_entry_for_test(9, &a).expect("overwrite");
    drop(store);
    assert_names_seq(&open_error(tmp.path()), 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_last_entry_names_last_seq() {
    let tmp = tempfile::tempdir().expect("tempdir");
    closed_data_dir(tmp.path(), KEYS).await;
    let last = KEYS as u64;
    remove(tmp.path(), last);
    let err = open_error(tmp.path());
    assert_names_seq(&err, last);
    assert_check_fails_naming(tmp.path(), last);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_middle_entry_names_its_seq() {
    let tmp = tempfile::tempdir().expect("tempdir");
    closed_data_dir(tmp.path(), KEYS).await;
    remove(tmp.path(), 11);
    let err = open_error(tmp.path());
    assert_names_seq(&err, 11);
    assert_check_fails_naming(tmp.path(), 11);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_genesis_names_seq_0() {
    let tmp = tempfile::tempdir().expect("tempdir");
    closed_data_dir(tmp.path(), KEYS).await;
    remove(tmp.path(), 0);
    assert_names_seq(&open_error(tmp.path()), 0);
}

/// Changes one letter or digit inside the `data` object, keeping the JSON valid and
/// canonical (same length, same structure).
fn change_one_data_char(bytes: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8(bytes).expect("utf8");
    let start = text.find("\"data\":{").expect("data object") + "\"data\":{".len();
    let mut out = text.into_bytes();
    // Skip the first key and its quotes: `"key":"` then the first value character.
    let value = out[start..]
        .windows(2)
        .position(|w| w == b":\"")
        .expect("a string value in data")
        + start
        + 2;
    let b = out[value];
    out[value] = match b {
        b'0'..=b'8' | b'a'..=b'y' | b'A'..=b'Y' => b + 1,
        b'9' => b'0',
        b'z' => b'a',
        b'Z' => b'A',
        other => panic!("unexpected character {:?}", char::from(other)),
    };
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_tampered_entry_is_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    closed_data_dir(dir, KEYS).await;
    for seq in 1..=KEYS as u64 {
        let store = open_store(dir);
        let original = store.entry(seq).expect("read").expect("entry exists");
        drop(store);
        overwrite(dir, seq, change_one_data_char);
        assert_names_seq(&open_error(dir), seq);
        let store = open_store(dir);
        store
            .overwrite_entry_for_test(seq, &original)
            .expect("restore entry");
        drop(store);
    }
    // Every entry restored: the log opens and checks again.
    let store = open_store(dir);
    keyledger::ledger::check(store.as_ref(), signer_for(dir).verifier())
        .expect("restored log checks");
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_signatures_are_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    closed_data_dir(dir, KEYS).await;
    for seq in [0, 7, KEYS as u64] {
        let store = open_store(dir);
        let original = store.entry(seq).expect("read").expect("entry exists");
        drop(store);
        overwrite(dir, seq, |bytes| {
            let text = String::from_utf8(bytes).expect("utf8");
            let at = text.find("\"sig\":\"").expect("sig") + "\"sig\":\"".len();
            let mut out = text.into_bytes();
            out[at] = if out[at] == b'A' { b'B' } else { b'A' };
            out
        });
        assert_names_seq(&open_error(dir), seq);
        assert_check_fails_naming(dir, seq);
        let store = open_store(dir);
        store
            .overwrite_entry_for_test(seq, &original)
            .expect("restore entry");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_genesis_names_seq_0() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    closed_data_dir(dir, KEYS).await;
    // One letter of the genesis's origin changes: the bytes no longer match the Merkle
    // tree, which is a bad entry at seq 0, not a wrong signing key.
    overwrite(dir, 0, change_one_data_char);
    let err = open_error(dir);
    assert_names_seq(&err, 0);
    assert_check_fails_naming(dir, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn entry_beyond_the_checkpoint_is_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    closed_data_dir(dir, KEYS).await;
    let extra = KEYS as u64 + 1;
    let store = open_store(dir);
    let last = store.entry(KEYS as u64).expect("read").expect("last entry");
    store
        .overwrite_entry_for_test(extra, &last)
        .expect("append an uncovered entry");
    drop(store);
    assert_names_seq(&open_error(dir), extra);
    assert_check_fails_naming(dir, extra);
}

#[test]
fn check_refuses_a_dir_without_a_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = check_binary(tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert!(stderr.contains("signing key"), "{stderr}");
}
