//! Commands spread over several nodes at once: one gap-free log holding every acknowledged
//! command, and exactly one winner of every race the domain forbids two winners of.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};

use crate::{Cluster, base_urls, bin_client, check_chain, create_load, post};

/// 300 creations from 30 concurrent clients over 3 nodes: every 2xx is in the log exactly
/// once, the log is gap-free with every stream's versions in order, every node exports the
/// same bytes, and `keyledger check` passes on the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_spread_over_three_nodes_make_one_gap_free_log() {
    let cluster = Cluster::start(3, &[]);
    let urls = Arc::new(RwLock::new(base_urls(&cluster)));
    let (acked, failed) = create_load(
        &urls,
        &cluster.admin,
        "spread",
        300,
        30,
        &Arc::new(AtomicBool::new(false)),
    )
    .await;
    assert_eq!(failed, 0, "every creation is acknowledged");
    assert_eq!(acked.len(), 300);

    let log = cluster.stored_log();
    let created = check_chain(&log);
    for id in &acked {
        assert!(
            created.contains_key(id),
            "acknowledged key {id} is not in the log"
        );
    }
    // The bootstrap key and the 300.
    assert_eq!(created.len(), 301);
    let export = cluster.converged_export().await;
    assert_eq!(export.lines().count(), log.len());
    let (ok, out) = cluster.check();
    assert!(ok, "keyledger check fails: {out}");
    assert!(out.contains(&format!("ok: {} entries", log.len())), "{out}");
}

/// The same name created on three nodes at once, and the same `If-Match` patch sent to
/// three nodes at once: one winner each time, the others refused (409, 412).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_across_nodes_have_exactly_one_winner() {
    let cluster = Cluster::start(3, &[]);
    let client = bin_client();
    for round in 0..10 {
        let name = format!("contested-{round}");
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..3 {
            let url = cluster.url(i, "/v1/admin/api-keys");
            let admin = cluster.admin.clone();
            let client = client.clone();
            let name = name.clone();
            tasks.spawn(async move {
                post(
                    &client,
                    &url,
                    &admin,
                    json!({"name": name, "role": "basic"}),
                )
                .await
                .0
            });
        }
        let mut statuses = Vec::new();
        while let Some(s) = tasks.join_next().await {
            statuses.push(s.expect("task"));
        }
        statuses.sort();
        assert_eq!(statuses, vec![201, 409, 409], "round {round}: same name");

        // One key, three PATCHes with the version it has now.
        let (status, created) = post(
            &client,
            &cluster.url(0, "/v1/admin/api-keys"),
            &cluster.admin,
            json!({"name": format!("patched-{round}"), "role": "basic"}),
        )
        .await;
        assert_eq!(status, 201);
        let id = created["api_key"]["id"].as_str().expect("id").to_string();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..3 {
            let url = cluster.url(i, &format!("/v1/admin/api-keys/{id}"));
            let admin = cluster.admin.clone();
            let client = client.clone();
            tasks.spawn(async move {
                client
                    .patch(url)
                    .bearer_auth(admin)
                    .header("if-match", "\"1\"")
                    .json(&json!({"name": format!("renamed-{round}-{i}")}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            });
        }
        let mut statuses = Vec::new();
        while let Some(s) = tasks.join_next().await {
            statuses.push(s.expect("task"));
        }
        statuses.sort();
        assert_eq!(
            statuses,
            vec![200, 412, 412],
            "round {round}: same If-Match"
        );
    }
    check_chain(&cluster.stored_log());
}

/// The last admin credential is protected across nodes too: two nodes asked at once to
/// delete one each of the only two admin keys leave one standing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_admin_survives_concurrent_deletes_on_two_nodes() {
    let cluster = Cluster::start(2, &[]);
    let client = bin_client();
    let (status, second) = post(
        &client,
        &cluster.url(0, "/v1/admin/api-keys"),
        &cluster.admin,
        json!({"name": "second-admin", "role": "admin"}),
    )
    .await;
    assert_eq!(status, 201);
    let second_id = second["api_key"]["id"].as_str().expect("id").to_string();
    let second_secret = second["secret"].as_str().expect("secret").to_string();
    let me: Value = client
        .get(cluster.url(0, "/v1/me"))
        .bearer_auth(&cluster.admin)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    let first_id = me["principal"]["id"].as_str().expect("id").to_string();
    // Each admin deletes the other, on different nodes, at once.
    let a = client
        .delete(cluster.url(0, &format!("/v1/admin/api-keys/{second_id}")))
        .bearer_auth(&cluster.admin)
        .send();
    let b = client
        .delete(cluster.url(1, &format!("/v1/admin/api-keys/{first_id}")))
        .bearer_auth(&second_secret)
        .send();
    let (a, b) = tokio::join!(a, b);
    let mut statuses = vec![
        a.map(|r| r.status().as_u16()).unwrap_or(0),
        b.map(|r| r.status().as_u16()).unwrap_or(0),
    ];
    statuses.sort();
    // The first delete wins; the second is refused as the last admin, or finds its caller
    // already deleted (401).
    assert_eq!(statuses[0], 204, "{statuses:?}");
    assert!(matches!(statuses[1], 401 | 409), "{statuses:?}");
    let log = cluster.stored_log();
    let deletes = log
        .iter()
        .filter(|(_, e)| e["type"] == "api_key.deleted")
        .count();
    assert_eq!(deletes, 1, "exactly one admin key was deleted");
}
