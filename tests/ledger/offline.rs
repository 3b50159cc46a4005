//! Offline verification of a real export (`keyledger::offline::verify_export` and
//! `keyledger verify`): an untouched file verifies against the vkey and the signed
//! checkpoint; every kind of damage is reported with the first bad seq; a bad vkey or
//! checkpoint is a setup error.

use std::path::Path;
use std::process::{Command as Process, Output};

use keyledger::crypto::merkle;
use keyledger::crypto::note::{Checkpoint, NoteVerifier};
use keyledger::domain::{Command, KeyChanges, KeyName, Role};
use keyledger::ledger::Ledger;
use keyledger::offline::{OfflineError, Report, verify_export};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::{create_key, initialize, mth, open_ledger, run, signer_for, stored_entries};

/// Keys created (then renamed, a third of them disabled): 1 + 160 + 160 + 54 = 375 entries,
/// more than one signature batch (256) of the verifier.
const KEYS: usize = 160;

/// A closed log's export and what an auditor verifies it with.
struct Export {
    _dir: tempfile::TempDir,
    /// Every entry's bytes, index = seq.
    lines: Vec<Vec<u8>>,
    vkey: String,
    /// The latest checkpoint note (covers every line).
    note: String,
    /// A checkpoint note taken after the key creations (covers `early_size` lines).
    early_note: String,
    early_size: u64,
    /// Signs checkpoints for this log (to make a validly signed but wrong one).
    signer: keyledger::crypto::note::NoteSigner,
}

/// Appends commands concurrently (one group commit or a few), each as the system.
async fn run_all(ledger: &Ledger, commands: Vec<Command>) {
    let mut appends = JoinSet::new();
    for command in commands {
        let ledger = ledger.clone();
        appends.spawn(async move { run(&ledger, command).await });
    }
    while let Some(joined) = appends.join_next().await {
        let receipt = joined.expect("append task");
        assert_eq!(receipt.entries.len(), 1);
    }
}

async fn export() -> Export {
    let dir = tempfile::tempdir().expect("temp dir");
    let signer = signer_for(dir.path());
    let ledger = open_ledger(dir.path());
    initialize(&ledger, &signer).await;
    let ids: Vec<Uuid> = (0..KEYS)
        .map(|i| Uuid::from_u128(0x5000 + i as u128))
        .collect();
    let creations = ids
        .iter()
        .enumerate()
        .map(|(i, id)| create_key(*id, &format!("key-{i:03}"), Role::Basic))
        .collect();
    run_all(&ledger, creations).await;
    let early = ledger.checkpoint();
    assert_eq!(early.checkpoint.size, KEYS as u64 + 1);
    let renames = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Command::UpdateApiKey {
            key_id: *id,
            changes: KeyChanges {
                name: Some(KeyName::parse(&format!("renamed-{i:03}")).expect("a valid name")),
                ..KeyChanges::default()
            },
            if_match: None,
        })
        .collect();
    run_all(&ledger, renames).await;
    let disables = ids
        .iter()
        .step_by(3)
        .map(|id| Command::DisableApiKey {
            key_id: *id,
            if_match: None,
        })
        .collect();
    run_all(&ledger, disables).await;
    let latest = ledger.checkpoint();
    let lines: Vec<Vec<u8>> = stored_entries(ledger.store().as_ref())
        .into_iter()
        .enumerate()
        .map(|(i, (seq, bytes))| {
            assert_eq!(seq, i as u64);
            bytes
        })
        .collect();
    assert_eq!(lines.len() as u64, latest.checkpoint.size);
    assert_eq!(lines.len(), 1 + KEYS + KEYS + KEYS.div_ceil(3));
    ledger.shutdown().await;
    Export {
        _dir: dir,
        lines,
        vkey: signer.vkey(),
        note: latest.note.clone(),
        early_note: early.note.clone(),
        early_size: early.checkpoint.size,
        signer,
    }
}

/// The NDJSON of `lines`: each followed by `\n`.
fn ndjson(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

fn verify(file: &[u8], vkey: &str, note: Option<&str>) -> Result<Report, OfflineError> {
    verify_export(file, vkey, note, |_| {})
}

/// Expects a failure naming `seq`.
#[track_caller]
fn assert_names(result: Result<Report, OfflineError>, seq: u64, what: &str) {
    match result {
        Ok(report) => panic!("{what}: verified anyway: {report:?}"),
        Err(e) => {
            assert_eq!(e.seq(), Some(seq), "{what}: {e}");
            assert!(
                matches!(&e, OfflineError::Entry { seq: s, .. } if *s == seq),
                "{what}: {e:?}"
            );
            assert!(
                e.to_string().starts_with(&format!("seq {seq}: ")),
                "{what}: {e}"
            );
        }
    }
}

/// Expects a setup error (bad vkey or checkpoint).
#[track_caller]
fn assert_setup(result: Result<Report, OfflineError>, what: &str) {
    match result {
        Err(OfflineError::Setup(reason)) => assert!(!reason.is_empty(), "{what}"),
        other => panic!("{what}: expected a setup error, got {other:?}"),
    }
}

/// Changes one digit of the key name in an entry (`key-007` → `key-017`): still canonical
/// JSON of a well-formed entry, but no longer what was signed.
fn tamper_name(line: &[u8]) -> Vec<u8> {
    let at = line
        .windows(4)
        .position(|w| w == b"key-")
        .expect("the entry holds a key name")
        + 5;
    let mut out = line.to_vec();
    assert!(
        out[at].is_ascii_digit(),
        "{}",
        String::from_utf8_lossy(line)
    );
    out[at] = b'0' + (out[at] - b'0' + 1) % 10;
    out
}

#[tokio::test]
async fn an_untouched_export_verifies() {
    let ex = export().await;
    let n = ex.lines.len() as u64;
    let file = ndjson(&ex.lines);
    let verifier = NoteVerifier::parse(&ex.vkey).expect("the vkey parses");
    let checkpoint = Checkpoint::open(&ex.note, &verifier).expect("the checkpoint opens");
    let leaves: Vec<_> = ex.lines.iter().map(|l| merkle::leaf_hash(l)).collect();
    assert_eq!(checkpoint.root, mth(&leaves));

    let mut seen = Vec::new();
    let report = verify_export(&file[..], &ex.vkey, Some(&ex.note), |read| seen.push(read))
        .expect("an untouched export verifies");
    assert_eq!(report.entries, n);
    assert_eq!(report.uncovered, 0);
    assert_eq!(report.checkpoint.as_ref(), Some(&checkpoint));
    assert_eq!(report.root, checkpoint.root);
    assert!(!seen.is_empty());
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "progress only grows");
    assert_eq!(seen.last().copied(), Some(file.len() as u64));

    // Without a checkpoint: the same entries, nothing to compare the root with.
    let report = verify(&file, &ex.vkey, None).expect("verifies without a checkpoint");
    assert_eq!(report.entries, n);
    assert_eq!(report.uncovered, 0);
    assert_eq!(report.checkpoint, None);
    assert_eq!(report.root, checkpoint.root);
}

#[tokio::test]
async fn damage_is_reported_with_the_first_bad_seq() {
    let ex = export().await;
    let n = ex.lines.len();
    let last = n as u64 - 1;
    let note = Some(ex.note.as_str());
    let check = |lines: &[Vec<u8>], seq: u64, what: &str| {
        assert_names(verify(&ndjson(lines), &ex.vkey, note), seq, what);
        // Without a checkpoint the same damage is found at the same seq.
        assert_names(verify(&ndjson(lines), &ex.vkey, None), seq, what);
    };

    // One byte of a name, in the first, second and last signature batch positions.
    for seq in [1, 2, 100, 200, 255, 256, 257, 300, KEYS as u64 * 2] {
        let mut lines = ex.lines.clone();
        lines[seq as usize] = tamper_name(&lines[seq as usize]);
        check(&lines, seq, &format!("a name changed at seq {seq}"));
    }
    // One byte of the last entry (a status change, no name).
    let mut lines = ex.lines.clone();
    let text = String::from_utf8(lines[n - 1].clone()).expect("UTF-8");
    assert!(text.contains("\"to\":\"disabled\""), "{text}");
    lines[n - 1] = text
        .replace("\"to\":\"disabled\"", "\"to\":\"disablee\"")
        .into_bytes();
    check(&lines, last, "the last entry changed");
    // A change that breaks canonical form (a space after a colon).
    let mut lines = ex.lines.clone();
    lines[150] = String::from_utf8(lines[150].clone())
        .expect("UTF-8")
        .replacen("\":", "\": ", 1)
        .into_bytes();
    check(&lines, 150, "non-canonical JSON");
    // Not JSON at all.
    let mut lines = ex.lines.clone();
    lines[42] = b"hello".to_vec();
    check(&lines, 42, "a line that is not JSON");
    // An empty line.
    let mut lines = ex.lines.clone();
    lines.insert(7, Vec::new());
    check(&lines, 7, "an empty line");

    // A dropped line.
    for seq in [0, 1, 5, 256, last - 1, last] {
        let mut lines = ex.lines.clone();
        lines.remove(seq as usize);
        if seq == last {
            // The last line gone: the file is one entry shorter than the checkpoint.
            assert_names(
                verify(&ndjson(&lines), &ex.vkey, note),
                seq,
                "the last line dropped",
            );
        } else {
            check(&lines, seq, &format!("line {seq} dropped"));
        }
    }
    // A duplicated line.
    let mut lines = ex.lines.clone();
    lines.insert(11, lines[10].clone());
    check(&lines, 11, "line 10 duplicated");
    // Two lines swapped: the first of them is named.
    for seq in [0, 3, 255, 300, last - 1] {
        let mut lines = ex.lines.clone();
        lines.swap(seq as usize, seq as usize + 1);
        check(&lines, seq, &format!("lines {seq} and {} swapped", seq + 1));
    }

    // A bad signature before a structural failure in the same batch: the signature's seq.
    let mut lines = ex.lines.clone();
    lines[260] = tamper_name(&lines[260]);
    lines.remove(300);
    check(&lines, 260, "a bad signature, then a missing line");
    // And the other way round: the structural failure comes first.
    let mut lines = ex.lines.clone();
    lines.remove(260);
    lines[299] = tamper_name(&lines[299]);
    check(&lines, 260, "a missing line, then a bad signature");

    // Truncations of the last line.
    let full = ndjson(&ex.lines);
    let no_newline = &full[..full.len() - 1];
    assert_names(verify(no_newline, &ex.vkey, note), last, "no final newline");
    assert_names(verify(no_newline, &ex.vkey, None), last, "no final newline");
    let half = full.len() - 1 - ex.lines[n - 1].len() / 2;
    assert_names(
        verify(&full[..half], &ex.vkey, note),
        last,
        "half a last line",
    );
    let mut half_with_newline = full[..half].to_vec();
    half_with_newline.push(b'\n');
    assert_names(
        verify(&half_with_newline, &ex.vkey, note),
        last,
        "half a last line, with a newline",
    );

    // Shorter than the checkpoint: the first missing seq.
    for keep in [0, 1, 100, 256, n - 3, n - 1] {
        assert_names(
            verify(&ndjson(&ex.lines[..keep]), &ex.vkey, note),
            keep as u64,
            &format!("only {keep} lines"),
        );
    }
    // Cut at a line boundary, the shorter file is fine on its own (no checkpoint to hold it to).
    let report = verify(&ndjson(&ex.lines[..100]), &ex.vkey, None).expect("a prefix");
    assert_eq!(report.entries, 100);
}

#[tokio::test]
async fn entries_past_the_checkpoint_are_uncovered() {
    let ex = export().await;
    let n = ex.lines.len() as u64;
    let file = ndjson(&ex.lines);
    let report =
        verify(&file, &ex.vkey, Some(&ex.early_note)).expect("a file longer than its checkpoint");
    assert_eq!(report.entries, n);
    assert_eq!(report.uncovered, n - ex.early_size);
    assert!(report.uncovered > 0);
    let early = report.checkpoint.expect("the checkpoint");
    assert_eq!(early.size, ex.early_size);
    let leaves: Vec<_> = ex.lines.iter().map(|l| merkle::leaf_hash(l)).collect();
    assert_eq!(early.root, mth(&leaves[..ex.early_size as usize]));
    assert_eq!(report.root, mth(&leaves));

    // Exactly the early checkpoint's entries: covered, nothing uncovered.
    let prefix = ndjson(&ex.lines[..ex.early_size as usize]);
    let report = verify(&prefix, &ex.vkey, Some(&ex.early_note)).expect("the covered prefix");
    assert_eq!(report.uncovered, 0);
    assert_eq!(report.entries, ex.early_size);

    // Uncovered entries are still checked.
    let mut lines = ex.lines.clone();
    let seq = ex.early_size as usize + 20;
    lines[seq] = tamper_name(&lines[seq]);
    assert_names(
        verify(&ndjson(&lines), &ex.vkey, Some(&ex.early_note)),
        seq as u64,
        "a bad entry past the checkpoint",
    );
    // Damage inside the covered part is found by its signature first.
    let mut lines = ex.lines.clone();
    lines[9] = tamper_name(&lines[9]);
    assert_names(
        verify(&ndjson(&lines), &ex.vkey, Some(&ex.early_note)),
        9,
        "a bad entry before the checkpoint",
    );
}

#[tokio::test]
async fn a_bad_vkey_or_checkpoint_is_refused() {
    let ex = export().await;
    let n = ex.lines.len() as u64;
    let file = ndjson(&ex.lines);

    // Another key of the same origin.
    let other_dir = tempfile::tempdir().expect("temp dir");
    let other = signer_for(other_dir.path());
    assert_eq!(other.name(), ex.signer.name());
    assert_ne!(other.vkey(), ex.vkey);
    assert_setup(
        verify(&file, &other.vkey(), Some(&ex.note)),
        "a checkpoint under another vkey",
    );
    // Without a checkpoint, the entries themselves give the other key away at seq 0.
    assert_names(
        verify(&file, &other.vkey(), None),
        0,
        "entries under another vkey",
    );
    // Malformed vkeys.
    let mut flipped = ex.vkey.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ASCII");
    for vkey in ["", "nonsense", "a+b+c", flipped.as_str()] {
        assert_setup(verify(&file, vkey, Some(&ex.note)), vkey);
        assert_setup(verify(&file, vkey, None), vkey);
    }

    // The checkpoint's root changed in the note: its signature no longer holds.
    let verifier = NoteVerifier::parse(&ex.vkey).expect("vkey");
    let checkpoint = Checkpoint::open(&ex.note, &verifier).expect("checkpoint");
    let mut wrong_root = checkpoint.clone();
    wrong_root.root[0] ^= 1;
    let text = checkpoint.text();
    assert!(ex.note.starts_with(&text));
    let edited = ex.note.replacen(&text, &wrong_root.text(), 1);
    assert_ne!(edited, ex.note);
    assert_setup(verify(&file, &ex.vkey, Some(&edited)), "an edited root");
    // A changed size in the note, likewise.
    let mut wrong_size = checkpoint.clone();
    wrong_size.size -= 1;
    let edited = ex.note.replacen(&text, &wrong_size.text(), 1);
    assert_setup(verify(&file, &ex.vkey, Some(&edited)), "an edited size");
    // Not a note at all.
    assert_setup(verify(&file, &ex.vkey, Some("garbage\n")), "garbage");

    // A validly signed checkpoint whose root is not the file's: the last covered seq.
    let signed_wrong = wrong_root.sign(&ex.signer).expect("sign");
    assert_names(
        verify(&file, &ex.vkey, Some(&signed_wrong)),
        n - 1,
        "a signed checkpoint with another root",
    );
    // One covering fewer entries, with the root of another prefix.
    let leaves: Vec<_> = ex.lines.iter().map(|l| merkle::leaf_hash(l)).collect();
    let mismatched = Checkpoint {
        origin: checkpoint.origin.clone(),
        size: 50,
        root: mth(&leaves[..49]),
    }
    .sign(&ex.signer)
    .expect("sign");
    assert_names(
        verify(&file, &ex.vkey, Some(&mismatched)),
        49,
        "a checkpoint of 50 with the root of 49",
    );
    // And a correct one at that size verifies, the rest uncovered.
    let right = Checkpoint {
        origin: checkpoint.origin.clone(),
        size: 50,
        root: mth(&leaves[..50]),
    }
    .sign(&ex.signer)
    .expect("sign");
    let report = verify(&file, &ex.vkey, Some(&right)).expect("a correct past checkpoint");
    assert_eq!(report.uncovered, n - 50);
}

fn run_verify(file: &Path, vkey: &str, checkpoint: &Path) -> Output {
    Process::new(env!("CARGO_BIN_EXE_keyledger"))
        .arg("verify")
        .arg(file)
        .arg("--vkey")
        .arg(vkey)
        .arg("--checkpoint")
        .arg(checkpoint)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run keyledger verify")
}

#[tokio::test]
async fn the_binary_verifies_and_names_the_bad_seq() {
    let ex = export().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let checkpoint = dir.path().join("checkpoint.note");
    std::fs::write(&checkpoint, &ex.note).expect("write the checkpoint");

    let good = dir.path().join("good.ndjson");
    std::fs::write(&good, ndjson(&ex.lines)).expect("write the export");
    let out = run_verify(&good, &ex.vkey, &checkpoint);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.starts_with("ok:"), "stdout: {stdout}");
    assert!(
        stdout.contains(&format!("{} entries", ex.lines.len())),
        "stdout: {stdout}"
    );

    let seq = 123;
    let mut lines = ex.lines.clone();
    lines[seq] = tamper_name(&lines[seq]);
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(&bad, ndjson(&lines)).expect("write the tampered export");
    let out = run_verify(&bad, &ex.vkey, &checkpoint);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_ne!(out.status.code(), Some(101), "must not panic: {stderr}");
    assert!(stderr.contains(&format!("seq {seq}:")), "stderr: {stderr}");
    assert!(!stdout.starts_with("ok:"), "stdout: {stdout}");
}
