//! Close and reopen a sled-backed ledger: the same state, the same checkpoint, a checkpoint
//! that verifies and matches the entries; the signing key file's permissions.

use std::os::unix::fs::PermissionsExt;

use ed25519_dalek::VerifyingKey;
use keyledger::crypto::merkle;
use keyledger::crypto::note::{Checkpoint, NoteVerifier};
use keyledger::crypto::seal;
use keyledger::crypto::secret::SecretSha256;
use keyledger::domain::events::{ActivityCount, CredentialActivity};
use keyledger::domain::{Command, DomainError, Email, KeyChanges, KeyName, Role, State};
use keyledger::ledger::{KEY_FILE, LedgerError};
use uuid::Uuid;

use crate::{
    create_key, initialize, mth, open_ledger, open_store, run, signer_for, stored_entries,
};

/// The parts of the state that must survive a restart.
#[derive(Debug, PartialEq)]
struct Snapshot {
    origin: Option<String>,
    public_key: Option<String>,
    size: u64,
    last_at: Option<keyledger::domain::Timestamp>,
    api_keys: Vec<keyledger::domain::ApiKey>,
    users: Vec<keyledger::domain::User>,
    pats: Vec<keyledger::domain::Pat>,
    key_names: Vec<(String, Uuid)>,
    credentials: Vec<(SecretSha256, keyledger::domain::CredentialRef)>,
    streams: Vec<(keyledger::domain::Stream, u64)>,
}

fn snapshot(s: &State) -> Snapshot {
    let mut api_keys: Vec<_> = s.api_keys.values().cloned().collect();
    api_keys.sort_by_key(|k| k.id);
    let mut users: Vec<_> = s.users.values().cloned().collect();
    users.sort_by_key(|u| u.id);
    let mut pats: Vec<_> = s.pats.values().cloned().collect();
    pats.sort_by_key(|p| p.id);
    let mut key_names: Vec<_> = s.key_names.iter().map(|(n, id)| (n.clone(), *id)).collect();
    key_names.sort();
    let mut credentials: Vec<_> = s.credentials.iter().map(|(h, c)| (*h, *c)).collect();
    credentials.sort_by_key(|(h, _)| *h);
    let mut streams: Vec<_> = s.streams.iter().map(|(st, v)| (*st, *v)).collect();
    streams.sort();
    Snapshot {
        origin: s.origin.clone(),
        public_key: s.public_key.clone(),
        size: s.size,
        last_at: s.last_at,
        api_keys,
        users,
        pats,
        key_names,
        credentials,
        streams,
    }
}

fn name(s: &str) -> KeyName {
    KeyName::parse(s).expect("valid name")
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_restores_state_and_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let signer = signer_for(dir);
    let ledger = open_ledger(dir);
    initialize(&ledger, &signer).await;

    let k1 = Uuid::from_u128(0xa1);
    let k2 = Uuid::from_u128(0xa2);
    let k3 = Uuid::from_u128(0xa3);
    let u1 = Uuid::from_u128(0xb1);
    let u2 = Uuid::from_u128(0xb2);
    let p1 = Uuid::from_u128(0xc1);
    let p2 = Uuid::from_u128(0xc2);
    let p3 = Uuid::from_u128(0xc3);
    let now = ledger.clock().now();

    // An admin key left alone, so that demoting "alpha" does not take the last admin.
    run(
        &ledger,
        create_key(Uuid::from_u128(0xa0), "root", Role::Admin),
    )
    .await;
    run(&ledger, create_key(k1, "alpha", Role::Admin)).await;
    run(&ledger, create_key(k2, "beta", Role::Basic)).await;
    run(&ledger, create_key(k3, "gamma", Role::Limited)).await;
    // Rename, role and expiry in one command: three entries.
    let receipt = run(
        &ledger,
        Command::UpdateApiKey {
            key_id: k1,
            changes: KeyChanges {
                name: Some(name("alpha-renamed")),
                role: Some(Role::Basic),
                expires_at: Some(Some(now.plus_seconds(86_400))),
            },
            if_match: Some(1),
        },
    )
    .await;
    assert_eq!(receipt.entries.len(), 3, "rename + role + expiry");
    run(
        &ledger,
        Command::RegenerateApiKey {
            key_id: k2,
            secret_sha256: SecretSha256::of("klk_regenerated_beta"),
            display: "klk_…beta".into(),
            grace_seconds: 3600,
            if_match: None,
        },
    )
    .await;
    run(
        &ledger,
        Command::DisableApiKey {
            key_id: k2,
            if_match: None,
        },
    )
    .await;
    run(
        &ledger,
        Command::EnableApiKey {
            key_id: k2,
            if_match: None,
        },
    )
    .await;
    run(
        &ledger,
        Command::DeleteApiKey {
            key_id: k3,
            if_match: None,
        },
    )
    .await;
    // The deleted key's name is free again.
    run(
        &ledger,
        create_key(Uuid::from_u128(0xa4), "gamma", Role::Basic),
    )
    .await;

    for (id, email, role) in [
        (u1, "ada@example.org", Role::Admin),
        (u2, "bob@example.org", Role::Auditor),
    ] {
        run(
            &ledger,
            Command::RegisterUser {
                user_id: id,
                email: Email::parse(email).expect("valid email"),
                role,
            },
        )
        .await;
    }
    for (token, user, token_name) in [(p1, u1, "laptop"), (p2, u1, "ci"), (p3, u2, "audit")] {
        run(
            &ledger,
            Command::CreatePat {
                token_id: token,
                user_id: user,
                name: name(token_name),
                expires_at: Some(now.plus_seconds(30 * 86_400)),
                secret_sha256: SecretSha256::of(&format!("klp_{token}")),
                display: format!("klp_…{token_name}"),
            },
        )
        .await;
    }
    run(
        &ledger,
        Command::RevokePat {
            token_id: p1,
            owner: Some(u1),
        },
    )
    .await;
    run(
        &ledger,
        Command::ChangeUserRole {
            user_id: u2,
            role: Role::Basic,
            if_match: Some(1),
        },
    )
    .await;
    let receipt = run(
        &ledger,
        Command::DeactivateUser {
            user_id: u1,
            if_match: None,
        },
    )
    .await;
    assert_eq!(
        receipt.entries.len(),
        2,
        "deactivation revokes the one live token"
    );
    run(
        &ledger,
        Command::RecordActivity(CredentialActivity {
            credential_id: k1,
            principal_id: k1,
            window_start: now,
            window_end: now.plus_seconds(60),
            last_used_at: now.plus_seconds(30),
            counts: vec![ActivityCount {
                method: "GET".into(),
                route: "/v1/audit/checkpoint".into(),
                outcome: "ok".into(),
                count: 3,
            }],
        }),
    )
    .await;

    let before = ledger.read(snapshot);
    let checkpoint_before = ledger.checkpoint();
    assert_eq!(before.size, checkpoint_before.checkpoint.size);
    assert!(before.size >= 20, "size {}", before.size);
    assert_eq!(before.api_keys.len(), 5);
    assert_eq!(before.users.len(), 2);
    assert_eq!(before.pats.len(), 3);
    let alpha = ledger.read(|s| s.api_keys[&k1].clone());
    assert_eq!(alpha.name, "alpha-renamed");
    assert_eq!(alpha.version, 4);
    assert_eq!(alpha.last_used_at, Some(now.plus_seconds(30)));

    ledger.shutdown().await;
    // Shut down means shut down: no more writes.
    let refused = ledger
        .execute(
            create_key(Uuid::from_u128(0xff), "late", Role::Basic),
            keyledger::domain::Actor::system(),
        )
        .await;
    assert!(
        matches!(refused, Err(LedgerError::Unavailable)),
        "{refused:?}"
    );
    drop(ledger);

    let ledger = open_ledger(dir);
    let after = ledger.read(snapshot);
    assert_eq!(after, before);
    let checkpoint_after = ledger.checkpoint();
    assert_eq!(checkpoint_after.note, checkpoint_before.note);
    assert_eq!(checkpoint_after.checkpoint, checkpoint_before.checkpoint);

    // The checkpoint verifies with the signer's public verifier key…
    let verifier = NoteVerifier::parse(&signer.vkey()).expect("parse vkey");
    let opened = Checkpoint::open(&checkpoint_after.note, &verifier).expect("checkpoint verifies");
    assert_eq!(opened, checkpoint_after.checkpoint);
    assert_eq!(opened.origin, crate::ORIGIN);
    // …and its root is the RFC 6962 root of the stored entries, each of which verifies.
    let store = ledger.store().clone();
    let entries = stored_entries(store.as_ref());
    assert_eq!(entries.len() as u64, opened.size);
    let key = VerifyingKey::from_bytes(&signer.public_key()).expect("public key");
    let mut leaves = Vec::new();
    for (i, (seq, bytes)) in entries.iter().enumerate() {
        assert_eq!(*seq, i as u64, "stored seqs run without a gap");
        let entry = seal::open(bytes, &key).expect("stored entry verifies");
        assert_eq!(entry.seq, *seq);
        leaves.push(merkle::leaf_hash(bytes));
    }
    assert_eq!(mth(&leaves), opened.root);

    // The reopened ledger keeps writing where it stopped, and keeps the rules.
    let mismatch = ledger
        .execute(
            Command::UpdateApiKey {
                key_id: k1,
                changes: KeyChanges {
                    name: Some(name("stale")),
                    ..KeyChanges::default()
                },
                if_match: Some(1),
            },
            keyledger::domain::Actor::system(),
        )
        .await;
    assert!(
        matches!(
            mismatch,
            Err(LedgerError::Domain(DomainError::VersionMismatch {
                expected: 1,
                actual: 4
            }))
        ),
        "{mismatch:?}"
    );
    let taken = ledger
        .execute(
            create_key(Uuid::from_u128(0xa5), "BETA", Role::Basic),
            keyledger::domain::Actor::system(),
        )
        .await;
    assert!(
        matches!(taken, Err(LedgerError::Domain(DomainError::NameTaken))),
        "{taken:?}"
    );
    let receipt = run(
        &ledger,
        create_key(Uuid::from_u128(0xa6), "delta", Role::Basic),
    )
    .await;
    assert_eq!(receipt.entries[0].seq, before.size);
    assert_eq!(ledger.checkpoint().checkpoint.size, before.size + 1);
    ledger.shutdown().await;
    drop(store);
    drop(ledger);

    // A full check (every signature) passes on the stopped store.
    let store = open_store(dir);
    let report = keyledger::ledger::check(store.as_ref(), signer.verifier()).expect("check passes");
    assert_eq!(report.size, before.size + 1);
    let checked =
        Checkpoint::open(&report.checkpoint, &verifier).expect("report checkpoint verifies");
    assert_eq!(checked.size, before.size + 1);
}

#[test]
fn key_file_is_private_and_a_readable_one_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (signer, created) =
        keyledger::ledger::load_or_create(dir, Some(crate::ORIGIN), "x").expect("create key");
    assert!(created);
    assert_eq!(signer.name(), crate::ORIGIN);
    let path = dir.join(KEY_FILE);
    let mode = std::fs::metadata(&path)
        .expect("stat key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {:o}", mode & 0o777);

    // Loading again gives the same key and does not rewrite it.
    let (again, created) = keyledger::ledger::load_or_create(dir, None, "x").expect("load key");
    assert!(!created);
    assert_eq!(again.vkey(), signer.vkey());

    // Another origin for the existing key is refused.
    assert!(keyledger::ledger::load_or_create(dir, Some("other.example/log"), "x").is_err());

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod 644");
    let err = keyledger::ledger::load_or_create(dir, None, "x")
        .expect_err("a group/world-readable key is refused");
    assert!(format!("{err:#}").contains("chmod 600"), "{err:#}");
    // The refusal did not touch the file.
    let mode = std::fs::metadata(&path)
        .expect("stat key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    let (fixed, _) = keyledger::ledger::load_or_create(dir, None, "x").expect("load key");
    assert_eq!(fixed.vkey(), signer.vkey());
}
