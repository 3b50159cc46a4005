//! The store contract, run against the in-process implementations here and against
//! PostgreSQL by the integration tests (through [`super::conformance`]).

use super::*;

#[test]
fn memory_store_keeps_the_contract() {
    conformance::check(&MemoryStore::new());
}

#[test]
fn sled_store_keeps_the_contract_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SledStore::open(dir.path()).expect("open");
        conformance::check(&store);
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(store.end().expect("end"), 303);
    assert_eq!(
        store.entry(302).expect("entry"),
        Some(b"{\"seq\":302}".to_vec())
    );
    assert_eq!(store.head().expect("head").size, 303);
}
