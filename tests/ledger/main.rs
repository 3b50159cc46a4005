//! Integration tests of the ledger: pinned entry bytes, reopening, tamper detection,
//! concurrent writers and the real binary.

#[path = "../common/bin_server.rs"]
mod bin_server;
mod binary;
mod concurrency;
mod golden;
mod offline;
mod reopen;
mod snapshot;
mod tamper;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use keyledger::crypto::merkle::{self, Hash};
use keyledger::crypto::note::NoteSigner;
use keyledger::crypto::secret::SecretSha256;
use keyledger::domain::{Actor, Command, KeyName, Role, SystemClock};
use keyledger::ledger::{Ledger, Receipt};
use keyledger::server::LOG_DIR;
use keyledger::store::{SledStore, Store};
use uuid::Uuid;

/// Origin of every ledger these tests create through the library.
pub const ORIGIN: &str = "test.example/log";

/// Loads (or creates) the signing key of `dir`, with the test origin.
pub fn signer_for(dir: &Path) -> NoteSigner {
    let (signer, _created) = keyledger::ledger::load_or_create(dir, Some(ORIGIN), "x")
        .expect("load or create the signing key");
    signer
}

/// Opens the sled store of data dir `dir` (the `log` sub-directory, as the server does).
///
/// sled 0.34 releases its file lock from a background thread some moments after the last
/// handle is dropped (spacejam/sled#1234), so an immediate reopen is retried for a while.
pub fn open_store(dir: &Path) -> Arc<SledStore> {
    let path = dir.join(LOG_DIR);
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match SledStore::open(&path) {
            Ok(store) => return Arc::new(store),
            Err(e) if is_lock_busy(&e.to_string()) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("open the sled store {}: {e}", path.display()),
        }
    }
}

/// How long to wait for sled's file lock to be released.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Whether an error (message) is sled's "another handle holds the lock".
pub fn is_lock_busy(message: &str) -> bool {
    message.contains("could not acquire lock")
}

/// The ledger options of a data dir: its projection snapshot in the data dir.
pub fn options_for(dir: &Path) -> keyledger::ledger::LedgerOptions {
    keyledger::ledger::LedgerOptions {
        snapshot: Some(keyledger::ledger::snapshot::SnapshotFile::in_dir(dir)),
        ..Default::default()
    }
}

/// Opens a ledger over the data dir `dir` (with its snapshot), with the system clock.
pub fn open_ledger(dir: &Path) -> Ledger {
    let store: Arc<dyn Store> = open_store(dir);
    Ledger::open_with(
        store,
        signer_for(dir),
        Arc::new(SystemClock),
        options_for(dir),
    )
    .expect("open the ledger")
}

/// Writes the genesis entry.
pub async fn initialize(ledger: &Ledger, signer: &NoteSigner) {
    let public_key = base64::engine::general_purpose::STANDARD.encode(signer.public_key());
    let receipt = ledger
        .execute(
            Command::Initialize {
                origin: signer.name().to_string(),
                public_key,
            },
            Actor::system(),
        )
        .await
        .expect("initialize the ledger");
    assert_eq!(receipt.entries.len(), 1);
    assert_eq!(receipt.entries[0].seq, 0);
}

/// A `CreateApiKey` command for a fresh key named `name`.
pub fn create_key(key_id: Uuid, name: &str, role: Role) -> Command {
    let secret = format!("klk_test_secret_{key_id}");
    Command::CreateApiKey {
        key_id,
        name: KeyName::parse(name).expect("valid key name"),
        role,
        expires_at: None,
        secret_sha256: SecretSha256::of(&secret),
        display: format!("klk_…{}", &key_id.simple().to_string()[..4]),
    }
}

/// Executes a command as the system and expects success.
pub async fn run(ledger: &Ledger, command: Command) -> Receipt {
    let what = format!("{command:?}");
    ledger
        .execute(command, Actor::system())
        .await
        .unwrap_or_else(|e| panic!("command {what} failed: {e}"))
}

/// Every stored entry, in key order.
pub fn stored_entries(store: &dyn Store) -> Vec<(u64, Vec<u8>)> {
    store
        .entries(0, u64::MAX)
        .collect::<Result<Vec<_>, _>>()
        .expect("read the stored entries")
}

/// RFC 6962 Merkle tree hash of `leaves`, computed independently of the library's
/// frontier (the recursive definition: split at the largest power of two below n).
pub fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => merkle::empty_root(),
        1 => leaves[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            merkle::node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// A data dir with a closed ledger of `1 + keys` entries (genesis and `keys` key
/// creations named `key-00`, `key-01`, …); returns the key ids in seq order.
pub async fn closed_data_dir(dir: &Path, keys: usize) -> Vec<Uuid> {
    let signer = signer_for(dir);
    let ledger = open_ledger(dir);
    initialize(&ledger, &signer).await;
    let mut ids = Vec::new();
    for i in 0..keys {
        let id = Uuid::from_u128(0x1000 + i as u128);
        let receipt = run(&ledger, create_key(id, &format!("key-{i:02}"), Role::Basic)).await;
        assert_eq!(receipt.entries.len(), 1);
        assert_eq!(receipt.entries[0].seq, i as u64 + 1);
        ids.push(id);
    }
    assert_eq!(ledger.checkpoint().checkpoint.size, keys as u64 + 1);
    ledger.shutdown().await;
    drop(ledger);
    ids
}
