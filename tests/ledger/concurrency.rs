//! Many concurrent writers against one sled-backed ledger: seqs are unique and gap-free,
//! every success is durable, and optimistic concurrency lets exactly one of two racing
//! updates through.

use std::collections::{BTreeMap, HashSet};

use keyledger::crypto::seal;
use keyledger::domain::{Actor, Command, DomainError, EventData, KeyChanges, KeyName, Role};
use keyledger::ledger::LedgerError;
use uuid::Uuid;

use crate::{create_key, initialize, open_ledger, open_store, run, signer_for, stored_entries};

const TASKS: usize = 64;
const PER_TASK: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_creates_get_unique_gap_free_seqs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let signer = signer_for(dir);
    let ledger = open_ledger(dir);
    initialize(&ledger, &signer).await;

    let mut handles = Vec::new();
    for task in 0..TASKS {
        let ledger = ledger.clone();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..PER_TASK {
                let key_id = Uuid::from_u128((1u128 << 100) | ((task as u128) << 32) | (i as u128));
                let command = create_key(key_id, &format!("t{task:02}-k{i:02}"), Role::Basic);
                out.push((key_id, ledger.execute(command, Actor::system()).await));
            }
            out
        }));
    }
    let mut by_seq: BTreeMap<u64, Uuid> = BTreeMap::new();
    for handle in handles {
        for (key_id, result) in handle.await.expect("task ran") {
            let receipt = result.unwrap_or_else(|e| panic!("create {key_id} failed: {e}"));
            assert_eq!(receipt.entries.len(), 1);
            let entry = &receipt.entries[0];
            assert!(
                matches!(&entry.data, EventData::ApiKeyCreated(d) if d.key_id == key_id),
                "{entry:?}"
            );
            assert_eq!(entry.version, 1);
            let previous = by_seq.insert(entry.seq, key_id);
            assert!(previous.is_none(), "seq {} given twice", entry.seq);
        }
    }
    let n = (TASKS * PER_TASK) as u64;
    assert_eq!(by_seq.len() as u64, n);
    // Receipts' seqs are exactly 1..=n.
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    assert_eq!(ledger.checkpoint().checkpoint.size, n + 1);
    ledger.read(|s| {
        assert_eq!(s.size, n + 1);
        assert_eq!(s.api_keys.len() as u64, n);
        for id in by_seq.values() {
            assert!(s.api_keys.contains_key(id), "key {id} missing from state");
        }
    });

    // The store holds 0..=n, and each receipt's seq holds that receipt's key.
    let store = ledger.store().clone();
    let entries = stored_entries(store.as_ref());
    assert_eq!(
        entries.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (0..=n).collect::<Vec<_>>()
    );
    let mut seen = HashSet::new();
    for (seq, bytes) in &entries[1..] {
        let (entry, _) = seal::parse(bytes).expect("stored entry parses");
        assert_eq!(entry.seq, *seq);
        let EventData::ApiKeyCreated(d) = &entry.data else {
            panic!("seq {seq} is not a key creation");
        };
        assert_eq!(by_seq.get(seq), Some(&d.key_id), "seq {seq}");
        assert!(seen.insert(d.key_id), "key {} stored twice", d.key_id);
    }

    ledger.shutdown().await;
    drop(store);
    drop(ledger);
    let ledger = open_ledger(dir);
    assert_eq!(ledger.checkpoint().checkpoint.size, n + 1);
    assert_eq!(ledger.read(|s| s.api_keys.len() as u64), n);
    ledger.shutdown().await;
    drop(ledger);
    let store = open_store(dir);
    let report =
        keyledger::ledger::check(store.as_ref(), signer.verifier()).expect("full check passes");
    assert_eq!(report.size, n + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_updates_with_same_if_match_one_wins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let signer = signer_for(dir);
    let ledger = open_ledger(dir);
    initialize(&ledger, &signer).await;

    for round in 0..16u128 {
        let key_id = Uuid::from_u128(0xdead_0000 + round);
        run(
            &ledger,
            create_key(key_id, &format!("race-{round}"), Role::Basic),
        )
        .await;
        let version = ledger.read(|s| s.api_keys[&key_id].version);
        assert_eq!(version, 1);
        let rename = |to: String| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                ledger
                    .execute(
                        Command::UpdateApiKey {
                            key_id,
                            changes: KeyChanges {
                                name: Some(KeyName::parse(&to).expect("valid name")),
                                ..KeyChanges::default()
                            },
                            if_match: Some(version),
                        },
                        Actor::system(),
                    )
                    .await
            })
        };
        let a = rename(format!("race-{round}-a"));
        let b = rename(format!("race-{round}-b"));
        let results = [a.await.expect("task a"), b.await.expect("task b")];
        let wins: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(wins.len(), 1, "round {round}: {results:?}");
        let losses: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(losses.len(), 1, "round {round}: {results:?}");
        assert!(
            matches!(
                losses[0],
                LedgerError::Domain(DomainError::VersionMismatch {
                    expected: 1,
                    actual: 2
                })
            ),
            "round {round}: {:?}",
            losses[0]
        );
        let key = ledger.read(|s| s.api_keys[&key_id].clone());
        assert_eq!(key.version, 2);
        let winner_name = match results.iter().position(Result::is_ok) {
            Some(0) => format!("race-{round}-a"),
            _ => format!("race-{round}-b"),
        };
        assert_eq!(key.name, winner_name);
        // The losing name stayed free, the original name is free again.
        ledger.read(|s| {
            assert_eq!(s.key_names.get(&winner_name), Some(&key_id));
            assert_eq!(s.key_names.get(&format!("race-{round}")), None);
        });
    }
    ledger.shutdown().await;
}
