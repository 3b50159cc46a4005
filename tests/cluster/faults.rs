//! Faults under load: a node SIGKILLed while the others serve, PostgreSQL crashing and
//! coming back, and a failover to a synchronous standby. In each, every command that was
//! acknowledged is in the log, the log is one gap-free chain, and nodes recover by
//! themselves (the killed node by a restart, which catches up).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::postgres_server::Postgres;
use crate::{Cluster, base_urls, check_chain, create_load, created_in};

/// Starts creation load in the background; returns its handle and its stop flag.
fn background_load(
    urls: &Arc<RwLock<Vec<String>>>,
    admin: &str,
    prefix: &str,
) -> (
    tokio::task::JoinHandle<(Vec<String>, usize)>,
    Arc<AtomicBool>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let urls = urls.clone();
        let admin = admin.to_string();
        let prefix = prefix.to_string();
        let stop = stop.clone();
        tokio::spawn(
            async move { create_load(&urls, &admin, &prefix, usize::MAX, 16, &stop).await },
        )
    };
    (handle, stop)
}

/// Node 2 is SIGKILLed mid-load while nodes 0 and 1 keep serving; restarted, it catches up
/// and exports the same log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_load_loses_nothing_and_catches_up() {
    let mut cluster = Cluster::start(3, &[]);
    let urls = Arc::new(RwLock::new(base_urls(&cluster)));
    let (load, stop) = background_load(&urls, &cluster.admin, "kill");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.nodes[2].as_mut().expect("node 2").kill();
    let survivors: Vec<String> = base_urls(&cluster);
    *urls.write().expect("urls") = survivors;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.restart(2);
    *urls.write().expect("urls") = base_urls(&cluster);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let (acked, _failed) = load.await.expect("load");
    assert!(acked.len() > 50, "the load made progress: {}", acked.len());

    let created = check_chain(&cluster.stored_log());
    for id in &acked {
        assert!(created.contains_key(id), "acknowledged key {id} is lost");
    }
    // The restarted node caught up: every node exports the same log.
    let export = cluster.converged_export().await;
    assert_eq!(export.lines().count(), cluster.stored_log().len());
    let (ok, out) = cluster.check();
    assert!(ok, "{out}");
}

/// PostgreSQL crashes (`pg_ctl stop -m immediate`) under load and comes back: the nodes
/// answer 503 meanwhile, recover without a restart, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_crash_under_load_loses_nothing_acknowledged() {
    let cluster = Cluster::start(3, &["--max-staleness", "1"]);
    let urls = Arc::new(RwLock::new(base_urls(&cluster)));
    let (load, stop) = background_load(&urls, &cluster.admin, "crash");
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        cluster.pg.stop("immediate");
        tokio::time::sleep(Duration::from_millis(800)).await;
        cluster.pg.launch();
    }
    // Once every node is back, a few more seconds of load.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::SeqCst);
    let (acked, failed) = load.await.expect("load");
    assert!(failed > 0, "the outage was seen by the load");
    assert!(acked.len() > 50, "the load made progress: {}", acked.len());
    let created = check_chain(&cluster.stored_log());
    for id in &acked {
        assert!(created.contains_key(id), "acknowledged key {id} is lost");
    }
    // And the nodes serve again: every node takes a command.
    let client = crate::bin_client();
    for node in 0..3 {
        let url = cluster.url(node, "/v1/admin/api-keys");
        crate::eventually(Duration::from_secs(20), "the node takes commands again", || {
            let client = client.clone();
            let url = url.clone();
            let admin = cluster.admin.clone();
            async move {
                let (status, _) = crate::post(
                    &client,
                    &url,
                    &admin,
                    serde_json::json!({"name": format!("after-{node}-{}", uuid::Uuid::now_v7()), "role": "basic"}),
                )
                .await;
                (status == 201).then_some(())
            }
        })
        .await;
    }
    let (ok, out) = cluster.check();
    assert!(ok, "{out}");
}

/// The primary is SIGKILLed under load and its synchronous standby promoted: the nodes,
/// given both hosts with `target_session_attrs=read-write`, reconnect to the new primary,
/// and every acknowledged command is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_to_a_synchronous_standby_loses_nothing_acknowledged() {
    let primary = Postgres::start();
    let db = primary.create_database();
    let standby = Postgres::standby_of(&primary, "standby1");
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = 'standby1'",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    let client = crate::bin_client();
    crate::eventually(
        Duration::from_secs(20),
        "the standby replicates synchronously",
        || {
            let state = primary.psql(
                "postgres",
                "SELECT coalesce(string_agg(sync_state, ','), '') FROM pg_stat_replication",
            );
            async move { (state == "sync").then_some(()) }
        },
    )
    .await;
    let uri = format!(
        "postgres://keyledger@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let cluster = Cluster::with_uri(primary, db.clone(), uri, 3, &["--max-staleness", "1"]);
    let urls = Arc::new(RwLock::new(base_urls(&cluster)));
    let (load, stop) = background_load(&urls, &cluster.admin, "failover");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.pg.kill();
    standby.promote();
    // Every node takes commands on the new primary.
    for node in 0..3 {
        let url = cluster.url(node, "/v1/admin/api-keys");
        crate::eventually(Duration::from_secs(30), "the node fails over", || {
            let client = client.clone();
            let url = url.clone();
            let admin = cluster.admin.clone();
            async move {
                let (status, _) = crate::post(
                    &client,
                    &url,
                    &admin,
                    serde_json::json!({"name": format!("promoted-{node}-{}", uuid::Uuid::now_v7()), "role": "basic"}),
                )
                .await;
                (status == 201).then_some(())
            }
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let (acked, _failed) = load.await.expect("load");
    assert!(acked.len() > 50, "the load made progress: {}", acked.len());

    // The log on the new primary holds every acknowledged key, in one gap-free chain.
    let stored = standby.psql(
        &db,
        "SELECT convert_from(bytes, 'UTF8') FROM keyledger.entries ORDER BY seq",
    );
    let created: std::collections::BTreeSet<String> = created_in(&stored).into_iter().collect();
    for id in &acked {
        assert!(
            created.contains(id),
            "acknowledged key {id} is lost in the failover"
        );
    }
    // Every node serves that log (once it has caught up with the last appends).
    let stored = format!("{stored}\n");
    for node in 0..3 {
        crate::eventually(
            Duration::from_secs(10),
            "the node exports the stored log",
            || {
                let stored = stored.clone();
                let export = cluster.export(node);
                async move { (export.await == stored).then_some(()) }
            },
        )
        .await;
    }
    let (ok, out) = cluster.check();
    assert!(ok, "{out}");
}
