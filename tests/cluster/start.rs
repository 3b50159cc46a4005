//! Starting nodes on a shared store: schema and genesis exactly once, the key file written
//! by the node that creates the log, and a node with another key refused.

use std::os::unix::fs::PermissionsExt;

use crate::bin_server::BinServer;
use crate::postgres_server::Postgres;

/// Nodes started together on an empty database, all with the same key file: exactly one
/// genesis, exactly one bootstrap key, printed by exactly one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_make_one_genesis_and_one_bootstrap_key() {
    let pg = Postgres::start();
    let db = pg.create_database();
    let uri = pg.uri(&db);
    let dir = tempfile::tempdir().expect("temp dir");
    // One key, made by the operator beforehand and handed to every node.
    let key = dir.path().join("signing.key");
    let signer = keyledger::ledger::generate("cluster.test/log").expect("key");
    keyledger::ledger::write_new_key(&key, &signer).expect("write key");
    let key_arg = key.display().to_string();

    let starts: Vec<_> = (0..3)
        .map(|i| {
            let data_dir = dir.path().join(format!("node{i}"));
            let uri = uri.clone();
            let key_arg = key_arg.clone();
            std::thread::spawn(move || {
                BinServer::builder(&data_dir)
                    .args(&["--store", &uri, "--signing-key", &key_arg])
                    .start()
            })
        })
        .collect();
    let nodes: Vec<BinServer> = starts
        .into_iter()
        .map(|t| t.join().expect("start thread").expect("every node starts"))
        .collect();

    let secrets: Vec<&String> = nodes.iter().filter_map(|n| n.secret.as_ref()).collect();
    assert_eq!(
        secrets.len(),
        1,
        "exactly one node prints a bootstrap secret"
    );
    let migrations = pg.psql(&db, "SELECT count(*) FROM keyledger.migrations");
    assert_eq!(migrations, "1");
    let kinds = pg.psql(
        &db,
        "SELECT string_agg(convert_from(bytes, 'UTF8')::json->>'type', ',' ORDER BY seq) FROM keyledger.entries",
    );
    assert_eq!(kinds, "ledger.initialized,api_key.created");
    // The printed secret is the admin of every node.
    let client = crate::bin_client();
    for node in &nodes {
        let me: serde_json::Value = client
            .get(node.url("/v1/me"))
            .bearer_auth(secrets[0])
            .send()
            .await
            .expect("me")
            .json()
            .await
            .expect("json");
        assert_eq!(me["principal"]["role"], "admin");
    }
}

/// Without a key file, the node that creates the log writes it (0600); a node that finds
/// the log made by another key refuses to start, says why, and leaves no key file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creating_node_writes_the_key_and_a_foreign_key_is_refused() {
    let pg = Postgres::start();
    let db = pg.create_database();
    let uri = pg.uri(&db);
    let dir = tempfile::tempdir().expect("temp dir");
    let first_dir = dir.path().join("first");
    let first = BinServer::builder(&first_dir)
        .args(&["--store", &uri])
        .start()
        .expect("the first node starts");
    assert!(first.secret.is_some());
    let key = first_dir.join("signing.key");
    let mode = std::fs::metadata(&key)
        .expect("key file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // A second node with no key file of its own.
    let second_dir = dir.path().join("second");
    let refused = BinServer::builder(&second_dir)
        .args(&["--store", &uri])
        .start()
        .err()
        .expect("a node without the log's key must not start");
    assert!(refused.contains("copy"), "{refused}");
    assert!(!second_dir.join("signing.key").exists());

    // A third with a key of its own.
    let third_dir = dir.path().join("third");
    std::fs::create_dir_all(&third_dir).expect("dir");
    std::fs::set_permissions(&third_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let other = keyledger::ledger::generate("keyledger.local/log").expect("key");
    keyledger::ledger::write_new_key(&third_dir.join("signing.key"), &other).expect("write");
    let refused = BinServer::builder(&third_dir)
        .args(&["--store", &uri])
        .start()
        .err()
        .expect("a node with another key must not start");
    assert!(refused.contains("is not the key of the log"), "{refused}");
    assert!(
        third_dir.join("signing.key").exists(),
        "an operator's key file is never removed"
    );
    drop(first);
}

/// A node whose cache (snapshot) is missing, damaged or stale still starts and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_missing_or_stale_cache_catches_up() {
    let mut cluster = crate::Cluster::start(2, &[]);
    let client = crate::bin_client();
    for i in 0..20 {
        let (status, _) = crate::post(
            &client,
            &cluster.url(i % 2, "/v1/admin/api-keys"),
            &cluster.admin,
            serde_json::json!({"name": format!("k{i}"), "role": "basic"}),
        )
        .await;
        assert_eq!(status, 201);
    }
    // A clean stop writes node 1's snapshot; more keys are then made on node 0.
    let status = cluster.nodes[1].as_mut().expect("node").terminate();
    assert!(status.success());
    let snapshot = cluster
        .data_dir(1)
        .join(keyledger::ledger::snapshot::SNAPSHOT_FILE);
    assert!(snapshot.exists(), "a clean stop writes the snapshot");
    for i in 20..30 {
        let (status, _) = crate::post(
            &client,
            &cluster.url(0, "/v1/admin/api-keys"),
            &cluster.admin,
            serde_json::json!({"name": format!("k{i}"), "role": "basic"}),
        )
        .await;
        assert_eq!(status, 201);
    }
    for damage in ["stale", "damaged", "missing"] {
        match damage {
            "damaged" => std::fs::write(&snapshot, b"not a snapshot").expect("damage"),
            "missing" => std::fs::remove_file(&snapshot).expect("remove"),
            _ => {}
        }
        cluster.restart(1);
        let export0 = cluster.export(0).await;
        let export1 = cluster.export(1).await;
        assert_eq!(export0, export1, "after a {damage} cache");
        let listed: serde_json::Value = client
            .get(cluster.url(1, "/v1/admin/api-keys?limit=1000"))
            .bearer_auth(&cluster.admin)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(
            listed["api_keys"].as_array().expect("keys").len(),
            31,
            "after a {damage} cache"
        );
        let status = cluster.nodes[1].as_mut().expect("node").terminate();
        assert!(status.success());
    }
}
