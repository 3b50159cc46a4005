//! The projection snapshot: a cache that makes start-up skip parsing the entries it covers,
//! and never a source of truth. Each test compares a start with the snapshot to a start
//! without it.

use std::path::{Path, PathBuf};

use keyledger::domain::{Role, State};
use keyledger::ledger::snapshot::SNAPSHOT_FILE;
use keyledger::store::Store;
use uuid::Uuid;

use crate::{closed_data_dir, create_key, open_ledger, open_store, run};

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// What must be identical however the state was rebuilt.
fn fingerprint(state: &State) -> String {
    let mut keys: Vec<_> = state.api_keys.values().map(|k| format!("{k:?}")).collect();
    keys.sort();
    let mut streams: Vec<_> = state
        .streams
        .iter()
        .map(|(s, v)| format!("{s:?}={v}"))
        .collect();
    streams.sort();
    let mut credentials: Vec<_> = state
        .credentials
        .iter()
        .map(|(h, c)| format!("{h:?}={c:?}"))
        .collect();
    credentials.sort();
    format!(
        "size={} last_at={:?}\n{}\n{}\n{}",
        state.size,
        state.last_at,
        keys.join("\n"),
        streams.join("\n"),
        credentials.join("\n")
    )
}

async fn state_of(dir: &Path) -> (String, u64) {
    let ledger = open_ledger(dir);
    let fp = ledger.read(fingerprint);
    let events = ledger.read_projections(|p| p.audit.len());
    ledger.shutdown().await;
    drop(ledger);
    (fp, events)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_shutdown_writes_a_snapshot_that_rebuilds_the_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    closed_data_dir(dir.path(), 30).await;
    let snapshot = snapshot_path(dir.path());
    assert!(snapshot.exists(), "shutdown wrote no snapshot");

    let with_snapshot = state_of(dir.path()).await;
    std::fs::remove_file(&snapshot).expect("remove snapshot");
    let without = state_of(dir.path()).await;
    assert_eq!(with_snapshot, without);
    assert_eq!(with_snapshot.1, 31);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_snapshot_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    closed_data_dir(dir.path(), 20).await;
    let snapshot = snapshot_path(dir.path());
    let expected = {
        let bytes = std::fs::read(&snapshot).expect("read snapshot");
        std::fs::remove_file(&snapshot).expect("remove");
        let expected = state_of(dir.path()).await;
        let mut damaged = bytes.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x40;
        std::fs::write(&snapshot, &damaged).expect("write damaged snapshot");
        expected
    };
    assert_eq!(state_of(dir.path()).await, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_snapshot_is_extended_by_replaying_the_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    closed_data_dir(dir.path(), 10).await;
    let old = std::fs::read(snapshot_path(dir.path())).expect("read snapshot");
    {
        let ledger = open_ledger(dir.path());
        for i in 0..15 {
            run(
                &ledger,
                create_key(
                    Uuid::from_u128(0x9000 + i),
                    &format!("late-{i}"),
                    Role::Limited,
                ),
            )
            .await;
        }
        ledger.shutdown().await;
    }
    let current = state_of(dir.path()).await;
    std::fs::write(snapshot_path(dir.path()), &old).expect("put the old snapshot back");
    assert_eq!(state_of(dir.path()).await, current);
    assert_eq!(current.1, 26);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_of_another_log_is_refused_by_its_root() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    closed_data_dir(a.path(), 12).await;
    // Same size, other content: same key ids, other names.
    {
        let signer = crate::signer_for(b.path());
        let ledger = open_ledger(b.path());
        crate::initialize(&ledger, &signer).await;
        for i in 0..12 {
            run(
                &ledger,
                create_key(
                    Uuid::from_u128(0x1000 + i),
                    &format!("other-{i}"),
                    Role::Admin,
                ),
            )
            .await;
        }
        ledger.shutdown().await;
    }
    let b_state = state_of(b.path()).await;
    std::fs::copy(snapshot_path(a.path()), snapshot_path(b.path())).expect("swap snapshots");
    let opened = state_of(b.path()).await;
    assert_eq!(opened, b_state, "a foreign snapshot must not be believed");
    assert!(opened.0.contains("other-3"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_is_named_with_and_without_a_snapshot() {
    for keep_snapshot in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        closed_data_dir(dir.path(), 20).await;
        if !keep_snapshot {
            std::fs::remove_file(snapshot_path(dir.path())).expect("remove snapshot");
        }
        {
            let store = open_store(dir.path());
            let mut bytes = store.entry(9).expect("read").expect("entry 9");
            let at = bytes
                .windows(6)
                .position(|w| w == b"key-08")
                .expect("name in entry");
            bytes[at + 4] = b'9';
            store.overwrite_entry_for_test(9, &bytes).expect("tamper");
        }
        let error = keyledger::ledger::Ledger::open_with(
            open_store(dir.path()),
            crate::signer_for(dir.path()),
            std::sync::Arc::new(keyledger::domain::SystemClock),
            crate::options_for(dir.path()),
        )
        .err()
        .expect("a tampered log must not open");
        assert_eq!(
            error.seq(),
            Some(9),
            "snapshot kept: {keep_snapshot}: {error}"
        );
    }
}
