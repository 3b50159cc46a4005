//! Soak test of a three-node cluster under continuous load: SIGKILLs of nodes, crashes and
//! restarts of PostgreSQL, and failovers to a synchronous standby, one after another, while
//! clients create keys on every node. At the end every key that was acknowledged (201) must
//! be in the log, the log must be one gap-free chain, and `keyledger check` must pass on it.
//! Prints the counts of faults and of commands.
//!
//! Run: `cargo build --release && cargo run --release --example cluster_soak`
//! (`-- --kills N --restarts N --failovers N` set the counts; defaults 50, 10, 3).
//! Needs PostgreSQL's server binaries (Debian's `postgresql`); everything runs on 127.0.0.1
//! in temporary directories.

#[path = "../tests/common/postgres.rs"]
mod postgres_server;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use postgres_server::Postgres;
use serde_json::{Value, json};

struct Node {
    child: Child,
    addr: String,
    secret: Option<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(binary: &Path, data_dir: &Path, uri: &str, key: &Path) -> Node {
    let key = key.display().to_string();
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--shutdown-grace", "0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--store",
            uri,
            "--signing-key",
            &key,
            "--max-staleness",
            "1",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keyledger");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut secret = None;
    let mut addr = String::new();
    for line in lines.by_ref() {
        let line = line.expect("stdout");
        if let Some(s) = line.trim().strip_prefix("secret: ") {
            secret = Some(s.to_string());
        }
        if let Some(rest) = line.strip_prefix("keyledger listening on http://") {
            addr = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            break;
        }
    }
    assert!(!addr.is_empty(), "a node did not start");
    std::thread::spawn(move || for _ in lines {});
    Node {
        child,
        addr,
        secret,
    }
}

/// Starts a node, retrying while the database is still coming back.
fn start_node_retrying(binary: &Path, data_dir: &Path, uri: &str, key: &Path) -> Node {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = std::panic::catch_unwind(|| start_node(binary, data_dir, uri, key));
        match attempt {
            Ok(node) => return node,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Waits until the primary replicates synchronously to one standby.
fn wait_sync(primary: &Postgres) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while primary.psql(
        "postgres",
        "SELECT coalesce(string_agg(sync_state, ','), '') FROM pg_stat_replication",
    ) != "sync"
    {
        assert!(
            Instant::now() < deadline,
            "the standby never became synchronous"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn make_synchronous(primary: &Postgres) {
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = 'standby1'",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    wait_sync(primary);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kills = arg(&args, "--kills", 50);
    let restarts = arg(&args, "--restarts", 10);
    let failovers = arg(&args, "--failovers", 3);
    let binary = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/release/keyledger"
    ));
    assert!(
        binary.exists(),
        "build the release binary first: cargo build --release"
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(soak(binary, kills, restarts, failovers));
}

async fn soak(binary: PathBuf, kills: usize, restarts: usize, failovers: usize) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut primary = Postgres::start();
    let db = primary.create_database();
    let mut standby = Postgres::standby_of(&primary, "standby1");
    make_synchronous(&primary);
    let uri = format!(
        "postgres://keyledger@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let key = dir.path().join("signing.key");
    let data = |i: usize| dir.path().join(format!("node{i}"));
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3 {
        nodes.push(start_node(&binary, &data(i), &uri, &key));
    }
    let admin = nodes[0].secret.clone().expect("bootstrap secret");
    let urls = Arc::new(RwLock::new(
        nodes
            .iter()
            .map(|n| format!("http://{}", n.addr))
            .collect::<Vec<_>>(),
    ));

    // The load: 12 clients creating keys round-robin over the nodes.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..12 {
        let (urls, stop, acked, refused, sent, admin) = (
            urls.clone(),
            stop.clone(),
            acked.clone(),
            refused.clone(),
            sent.clone(),
            admin.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(35))
                .build()
                .expect("client");
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let url = {
                    let urls = urls.read().expect("urls");
                    urls[(c + n) % urls.len()].clone()
                };
                sent.fetch_add(1, Ordering::Relaxed);
                let answer = client
                    .post(format!("{url}/v1/admin/api-keys"))
                    .bearer_auth(&admin)
                    .json(&json!({"name": format!("soak-{c}-{n}"), "role": "basic"}))
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == 201 => {
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        if let Some(id) = body["api_key"]["id"].as_str() {
                            acked.lock().expect("acked").push(id.to_string());
                        }
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    let set_urls = |nodes: &[Node]| {
        *urls.write().expect("urls") = nodes.iter().map(|n| format!("http://{}", n.addr)).collect();
    };

    let (mut done_kills, mut done_restarts, mut done_failovers) = (0, 0, 0);
    let rounds = kills.max(restarts).max(failovers);
    for round in 0..rounds {
        if done_kills < kills {
            let i = round % 3;
            // SIGKILL (Node's drop), then a restart that catches up.
            let node = nodes.remove(i);
            drop(node);
            set_urls(&nodes);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (b, d, u, k) = (binary.clone(), data(i), uri.clone(), key.clone());
            let node = tokio::task::spawn_blocking(move || start_node_retrying(&b, &d, &u, &k))
                .await
                .expect("restart");
            nodes.insert(i, node);
            set_urls(&nodes);
            done_kills += 1;
        }
        if done_restarts < restarts && round % (rounds / restarts.max(1)).max(1) == 0 {
            // A crash of the primary (immediate stop), then the same server comes back.
            primary.stop("immediate");
            tokio::time::sleep(Duration::from_millis(500)).await;
            primary.launch();
            wait_sync(&primary);
            done_restarts += 1;
        }
        if done_failovers < failovers && round % (rounds / failovers.max(1)).max(1) == 1 {
            // The primary dies; the synchronous standby takes over; a new standby is made on
            // the old primary's port, so the nodes' two-host URI stays right.
            let old_port = primary.port;
            primary.kill();
            standby.promote();
            drop(primary);
            primary = standby;
            standby = Postgres::standby_of_on(&primary, "standby1", old_port);
            make_synchronous(&primary);
            done_failovers += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.await;
    }

    // Every acknowledged key is in the log, which is one gap-free chain.
    let rows = primary.psql(
        &db,
        "SELECT seq, convert_from(bytes, 'UTF8') FROM keyledger.entries ORDER BY seq",
    );
    let mut created = BTreeSet::new();
    let mut entries = 0u64;
    for (i, line) in rows.lines().enumerate() {
        let (seq, json) = line.split_once('|').expect("seq|json");
        assert_eq!(
            seq.parse::<u64>().expect("seq"),
            i as u64,
            "a gap in the log"
        );
        let entry: Value = serde_json::from_str(json).expect("entry");
        if entry["type"] == "api_key.created" {
            created.insert(entry["data"]["key_id"].as_str().unwrap_or("").to_string());
        }
        entries += 1;
    }
    let acked = acked.lock().expect("acked").clone();
    let lost: Vec<&String> = acked.iter().filter(|id| !created.contains(*id)).collect();
    let check = Command::new(&binary)
        .args(["check", "--store", &uri, "--signing-key"])
        .arg(&key)
        .arg("--data-dir")
        .arg(dir.path().join("checker"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("keyledger check");
    println!(
        "# keyledger cluster soak ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    println!("node SIGKILLs: {done_kills}");
    println!("database crashes and restarts: {done_restarts}");
    println!("failovers to a synchronous standby: {done_failovers}");
    println!(
        "creations sent: {}, acknowledged: {}, refused or failed: {}",
        sent.load(Ordering::Relaxed),
        acked.len(),
        refused.load(Ordering::Relaxed)
    );
    println!("log entries: {entries}");
    println!(
        "acknowledged creations missing from the log: {}",
        lost.len()
    );
    println!(
        "keyledger check: {}",
        String::from_utf8_lossy(&check.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
            + &String::from_utf8_lossy(&check.stderr)
    );
    assert!(lost.is_empty(), "acknowledged creations lost: {lost:?}");
    assert!(check.status.success(), "keyledger check failed");
    drop(nodes);
}
