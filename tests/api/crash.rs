//! Crash safety of the real binary: 200 concurrent key creations, SIGKILL part way, restart
//! on the same data dir. Every creation that was answered 201 survives, the log checks, and
//! nothing is half-written.
//!
//! Also holds [`read_log`] and [`check_data_dir`], shared with `activity.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command as Process, Stdio};

use keyledger::crypto::seal;
use keyledger::domain::{Entry, EventData};
use keyledger::store::{SledStore, Store};
use serde_json::{Value, json};

use crate::bin_server::{BinServer, bin_client};

/// Every entry of a stopped server's log, decoded (signatures are `keyledger check`'s job).
pub fn read_log(data_dir: &Path) -> Vec<Entry> {
    let store = SledStore::open(&data_dir.join(keyledger::server::LOG_DIR))
        .expect("open the sled store of a stopped server");
    let mut entries = Vec::new();
    for (expected, item) in store.entries(0, u64::MAX).enumerate() {
        let (seq, bytes) = item.expect("read entry");
        assert_eq!(seq, expected as u64, "a hole in the log");
        let (entry, _) = seal::parse(&bytes).expect("entry parses");
        assert_eq!(entry.seq, seq);
        entries.push(entry);
    }
    entries
}

/// Runs `keyledger check --data-dir` and asserts it passes.
pub fn check_data_dir(data_dir: &Path) {
    let output = Process::new(env!("CARGO_BIN_EXE_keyledger"))
        .arg("check")
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("KEYLEDGER_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run keyledger check");
    assert!(
        output.status.success(),
        "keyledger check failed ({:?}): stdout {} stderr {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What one creation request got back.
struct Created {
    name: String,
    /// `Some(id)` for a 201.
    id: Option<String>,
    /// The status of an answer other than 201.
    status: Option<u16>,
}

/// Fires `count` concurrent creations; SIGKILLs the server once `kill_after` answers are
/// in; returns every request's outcome.
async fn create_and_kill(
    server: &mut BinServer,
    admin: &str,
    round: usize,
    count: usize,
    kill_after: usize,
) -> Vec<Created> {
    let client = bin_client();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Created>();
    for i in 0..count {
        let client = client.clone();
        let tx = tx.clone();
        let url = server.url("/v1/admin/api-keys");
        let admin = admin.to_string();
        tokio::spawn(async move {
            let name = format!("crash-r{round}-k{i}");
            let sent = client
                .post(url)
                .bearer_auth(admin)
                .json(&json!({"name": name, "role": "basic"}))
                .send()
                .await;
            let mut status = None;
            let id = match sent {
                Ok(response) if response.status() == 201 => {
                    match response.json::<Value>().await {
                        Ok(body) => body["api_key"]["id"].as_str().map(str::to_string),
                        // The body did not arrive whole: not an acknowledged creation.
                        Err(_) => None,
                    }
                }
                Ok(response) => {
                    status = Some(response.status().as_u16());
                    None
                }
                Err(_) => None,
            };
            let _ = tx.send(Created { name, id, status });
        });
    }
    drop(tx);
    let mut results = Vec::with_capacity(count);
    let mut killed = false;
    if kill_after == 0 {
        server.kill();
        killed = true;
    }
    while let Some(created) = rx.recv().await {
        results.push(created);
        if !killed && results.len() >= kill_after {
            server.kill();
            killed = true;
        }
    }
    if !killed {
        server.kill();
    }
    assert_eq!(results.len(), count, "every request task reported");
    results
}

/// One crash round on `data_dir`; returns the ids acknowledged in this round.
async fn crash_round(
    data_dir: &Path,
    admin: &str,
    round: usize,
    kill_after: usize,
    acknowledged: &mut HashMap<String, String>,
) {
    const COUNT: usize = 200;
    let mut server = BinServer::start(data_dir, &[]).expect("server starts");
    let results = create_and_kill(&mut server, admin, round, COUNT, kill_after).await;
    drop(server);
    for created in &results {
        // Before the kill the server answers 201; a refusal other than "unavailable" is a bug.
        if let Some(status) = created.status {
            assert!(
                status >= 500,
                "round {round}: creating {} answered {status}",
                created.name
            );
        }
    }
    let acked_now = results.iter().filter(|r| r.id.is_some()).count();
    eprintln!("crash round {round}: kill after {kill_after}, {acked_now}/{COUNT} acknowledged");
    assert!(
        acked_now >= kill_after.min(COUNT),
        "round {round}: {acked_now} creations acknowledged, expected at least {kill_after}"
    );
    for created in results {
        if let Some(id) = created.id {
            acknowledged.insert(id, created.name);
        }
    }

    // Restart on the same dir: it must start (a refusal is a failure).
    let mut server = BinServer::start(data_dir, &[])
        .unwrap_or_else(|e| panic!("round {round} (kill after {kill_after}): restart: {e}"));
    let client = bin_client();
    for (id, name) in acknowledged.iter() {
        let response = client
            .get(server.url(&format!("/v1/admin/api-keys/{id}")))
            .bearer_auth(admin)
            .send()
            .await
            .expect("GET key");
        assert_eq!(
            response.status(),
            200,
            "round {round}: acknowledged key {name} ({id}) is gone after the crash"
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(
            body["api_key"]["name"],
            name.as_str(),
            "round {round}: {id}"
        );
    }
    // Every key, page by page.
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    let mut after = String::new();
    loop {
        let response = client
            .get(server.url(&format!("/v1/admin/api-keys?limit=250&after={after}")))
            .bearer_auth(admin)
            .send()
            .await
            .expect("list keys");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        for k in body["api_keys"].as_array().expect("api_keys") {
            listed.insert(
                k["id"].as_str().expect("id").to_string(),
                k["name"].as_str().expect("name").to_string(),
            );
        }
        match body["next_after"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    let status = server.terminate();
    assert!(
        status.success(),
        "round {round}: SIGTERM exit {status:?}; stderr: {}",
        server.stderr()
    );
    drop(server);

    check_data_dir(data_dir);

    // Nothing half-written: one `api_key.created` per listed key, and no other.
    let entries = read_log(data_dir);
    let mut created: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in &entries {
        if let EventData::ApiKeyCreated(d) = &entry.data {
            created
                .entry(d.key_id.to_string())
                .or_default()
                .push(d.name.clone());
        }
    }
    let created_events: usize = created.values().map(Vec::len).sum();
    assert_eq!(
        created_events,
        listed.len(),
        "round {round}: api_key.created events vs keys listed"
    );
    for (id, name) in &listed {
        assert_eq!(
            created.get(id),
            Some(&vec![name.clone()]),
            "round {round}: created events of listed key {id}"
        );
    }
    for id in acknowledged.keys() {
        assert!(listed.contains_key(id), "round {round}: {id} not listed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_concurrent_creations_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let first = BinServer::start(&data_dir, &[]).expect("first start");
    let admin = first
        .secret
        .clone()
        .expect("bootstrap secret on first start");
    let mut first = first;
    let status = first.terminate();
    assert!(status.success(), "first stop: {status:?}");
    drop(first);

    let mut acknowledged = HashMap::new();
    for (round, kill_after) in [0, 20, 100, 150].into_iter().enumerate() {
        crash_round(&data_dir, &admin, round, kill_after, &mut acknowledged).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_on_a_fresh_dir_right_after_start() {
    // A crash of a brand-new log, with creations in flight, still restarts.
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let first = BinServer::start(&data_dir, &[]).expect("first start");
    let admin = first
        .secret
        .clone()
        .expect("bootstrap secret on first start");
    drop(first); // SIGKILL without any request.
    let mut acknowledged = HashMap::new();
    crash_round(&data_dir, &admin, 0, 50, &mut acknowledged).await;
}
