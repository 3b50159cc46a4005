//! The PostgreSQL store on its own: the store contract every backend keeps, and the same
//! tamper detection as the embedded store (start-up and `keyledger check` name the first bad
//! seq of a log changed behind keyledger's back), and exports that independent verifiers
//! accept.

use std::process::Command;

use crate::Cluster;
use crate::postgres_server::Postgres;

#[test]
fn the_postgres_store_keeps_the_store_contract() {
    let pg = Postgres::start();
    let db = pg.create_database();
    let store = keyledger::store::PgStore::connect(&pg.uri(&db)).expect("connect");
    keyledger::store::conformance::check(&store);
    // Connecting again migrates nothing and keeps the data.
    let again = keyledger::store::PgStore::connect(&pg.uri(&db)).expect("reconnect");
    use keyledger::store::Store;
    assert_eq!(again.head().expect("head").size, 303);
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM keyledger.migrations"),
        "1"
    );
}

#[test]
fn a_uri_that_is_not_postgres_or_asks_for_tls_is_refused_clearly() {
    for (uri, said) in [
        (
            "postgres://u@127.0.0.1:1/db?sslmode=require",
            "sslmode=require",
        ),
        (
            "postgres://u@127.0.0.1:1/db?bogus=1",
            "not a PostgreSQL URI",
        ),
    ] {
        let error = keyledger::store::PgStore::connect(uri)
            .err()
            .expect("refused");
        assert!(error.to_string().contains(said), "{uri}: {error}");
    }
    // A database that is not there: an error naming the host, not a hang or a panic.
    let port = crate::postgres_server::free_port();
    let error = keyledger::store::PgStore::connect(&format!("postgres://u@127.0.0.1:{port}/db"))
        .err()
        .expect("refused");
    assert!(error.is_transient(), "{error}");
}

/// Entries changed in the database behind keyledger's back: a node refuses to start naming
/// the seq, and so does `keyledger check --store`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_shared_log_is_refused_naming_the_seq() {
    let mut cluster = Cluster::start(1, &[]);
    let client = crate::bin_client();
    for i in 0..8 {
        let (status, _) = crate::post(
            &client,
            &cluster.url(0, "/v1/admin/api-keys"),
            &cluster.admin,
            serde_json::json!({"name": format!("key-{i}"), "role": "basic"}),
        )
        .await;
        assert_eq!(status, 201);
    }
    let status = cluster.nodes[0].as_mut().expect("node").terminate();
    assert!(status.success());
    let (ok, out) = cluster.check();
    assert!(ok, "{out}");
    // Rename key-4 (seq 6) in its stored bytes.
    cluster.pg.psql(
        &cluster.db,
        "UPDATE keyledger.entries SET bytes = convert_to(replace(convert_from(bytes, 'UTF8'), 'key-4', 'key-X'), 'UTF8') WHERE seq = 6",
    );
    let (ok, out) = cluster.check();
    assert!(!ok, "check must fail on a tampered log");
    assert!(out.contains("seq 6 "), "{out}");
    let refused = cluster
        .spawn(0)
        .err()
        .expect("a tampered log must not be served");
    assert!(refused.contains("seq 6 "), "{refused}");
    // A deleted entry names its seq too.
    cluster.pg.psql(
        &cluster.db,
        "UPDATE keyledger.entries SET bytes = convert_to(replace(convert_from(bytes, 'UTF8'), 'key-X', 'key-4'), 'UTF8') WHERE seq = 6",
    );
    let (ok, out) = cluster.check();
    assert!(ok, "restored: {out}");
    cluster
        .pg
        .psql(&cluster.db, "DELETE FROM keyledger.entries WHERE seq = 3");
    let (ok, out) = cluster.check();
    assert!(!ok && out.contains("seq 3 "), "{out}");
}

/// Exports from two nodes are the same bytes, and the independent Python verifier (only
/// `cryptography` and `rfc8785`) accepts them against the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_from_every_node_are_identical_and_verify_independently() {
    let cluster = Cluster::start(2, &[]);
    let client = crate::bin_client();
    for i in 0..10 {
        let (status, _) = crate::post(
            &client,
            &cluster.url(i % 2, "/v1/admin/api-keys"),
            &cluster.admin,
            serde_json::json!({"name": format!("k{i}"), "role": "limited"}),
        )
        .await;
        assert_eq!(status, 201);
    }
    let export = cluster.converged_export().await;
    let checkpoint = client
        .get(cluster.url(1, "/v1/audit/checkpoint"))
        .bearer_auth(&cluster.admin)
        .send()
        .await
        .expect("checkpoint")
        .text()
        .await
        .expect("text");
    let vkey: serde_json::Value = client
        .get(cluster.url(1, "/v1/audit/public-key"))
        .send()
        .await
        .expect("public key")
        .json()
        .await
        .expect("json");
    let dir = tempfile::tempdir().expect("dir");
    let export_path = dir.path().join("export.ndjson");
    let note_path = dir.path().join("checkpoint.note");
    std::fs::write(&export_path, &export).expect("write export");
    std::fs::write(&note_path, &checkpoint).expect("write note");
    let vkey = vkey["vkey"].as_str().expect("vkey");
    let ours = Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(["verify"])
        .arg(&export_path)
        .args(["--vkey", vkey, "--checkpoint"])
        .arg(&note_path)
        .output()
        .expect("keyledger verify");
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/verify_log.py");
    let python = Command::new("python3")
        .arg(script)
        .arg(&export_path)
        .args(["--vkey", vkey, "--checkpoint"])
        .arg(&note_path)
        .output()
        .expect("python3 (with cryptography and rfc8785, as .ci/run installs them)");
    assert!(
        python.status.success(),
        "verify_log.py refuses a PostgreSQL export: {}{}",
        String::from_utf8_lossy(&python.stdout),
        String::from_utf8_lossy(&python.stderr)
    );
}
