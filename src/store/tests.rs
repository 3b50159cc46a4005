//! The same contract tests against every [`Store`] implementation.

use super::*;

fn batch(from: u64, n: u64, checkpoint: &str) -> CommitBatch {
    CommitBatch {
        entries: (from..from + n)
            .map(|s| (s, format!("{{\"seq\":{s}}}").into_bytes()))
            .collect(),
        nodes: (from..from + n).map(|s| (0u8, s, [s as u8; 32])).collect(),
        checkpoint: checkpoint.to_string(),
    }
}

fn contract(store: &dyn Store) {
    assert_eq!(store.end().expect("end"), 0);
    assert_eq!(store.checkpoint().expect("checkpoint"), None);
    store.commit(&batch(0, 3, "c3")).expect("commit");
    store.commit(&batch(3, 300, "c303")).expect("commit");
    assert_eq!(store.end().expect("end"), 303);
    assert_eq!(
        store.entry(7).expect("entry"),
        Some(b"{\"seq\":7}".to_vec())
    );
    assert_eq!(store.entry(303).expect("entry"), None);
    let seqs: Vec<u64> = store
        .entries(250, 260)
        .map(|r| r.expect("entry").0)
        .collect();
    assert_eq!(seqs, (250..260).collect::<Vec<_>>());
    // Big-endian keys: 256 sorts after 255, not after 2.
    let all: Vec<u64> = store
        .entries(0, u64::MAX)
        .map(|r| r.expect("entry").0)
        .collect();
    assert_eq!(all, (0..303).collect::<Vec<_>>());
    assert_eq!(store.node(0, 256).expect("node"), Some([0u8; 32]));
    assert_eq!(store.node(1, 0).expect("node"), None);
    assert_eq!(
        store.checkpoint().expect("checkpoint").as_deref(),
        Some("c303")
    );
}

#[test]
fn memory_store_keeps_the_contract() {
    contract(&MemoryStore::new());
}

#[test]
fn sled_store_keeps_the_contract_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SledStore::open(dir.path()).expect("open");
        contract(&store);
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(store.end().expect("end"), 303);
    assert_eq!(
        store.entry(302).expect("entry"),
        Some(b"{\"seq\":302}".to_vec())
    );
    assert_eq!(
        store.checkpoint().expect("checkpoint").as_deref(),
        Some("c303")
    );
}
