//! Several `keyledger serve` processes sharing one log in a real PostgreSQL server: one
//! gap-free log whichever node takes a command, exactly one winner of every race, revocations
//! refused by every node, fail-closed staleness, and no acknowledged command lost when a
//! node is SIGKILLed, when the database restarts, or when it fails over to a synchronous
//! standby.

#[path = "../common/bin_server.rs"]
mod bin_server;
mod faults;
#[path = "../common/postgres.rs"]
mod postgres_server;
mod races;
mod reads;
mod start;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bin_server::{BinServer, bin_client};
use postgres_server::Postgres;
use serde_json::{Value, json};

/// One PostgreSQL database and the nodes serving it.
pub struct Cluster {
    pub pg: Postgres,
    pub db: String,
    pub uri: String,
    dir: tempfile::TempDir,
    pub nodes: Vec<Option<BinServer>>,
    /// The bootstrap admin secret.
    pub admin: String,
    extra: Vec<String>,
}

impl Cluster {
    /// A fresh database and `n` nodes; the first creates the log (and the shared key file).
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let pg = Postgres::start();
        Cluster::on(pg, n, extra)
    }

    /// `n` nodes on a fresh database of `pg`.
    pub fn on(pg: Postgres, n: usize, extra: &[&str]) -> Cluster {
        let db = pg.create_database();
        let uri = pg.uri(&db);
        Cluster::with_uri(pg, db, uri, n, extra)
    }

    /// `n` nodes on `uri` (a database of `pg`, possibly through several hosts).
    pub fn with_uri(pg: Postgres, db: String, uri: String, n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cluster = Cluster {
            pg,
            db,
            uri,
            dir,
            nodes: Vec::new(),
            admin: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        let first = cluster.spawn(0).expect("the first node starts");
        cluster.admin = first
            .secret
            .clone()
            .expect("the first node creates the log and prints the bootstrap secret");
        cluster.nodes.push(Some(first));
        for i in 1..n {
            let node = cluster.spawn(i).expect("a node starts");
            assert!(
                node.secret.is_none(),
                "only one node prints a bootstrap secret"
            );
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    /// The shared signing key file.
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("signing.key")
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}"))
    }

    /// Starts node `i` (its own data dir, the shared store and key).
    pub fn spawn(&self, i: usize) -> Result<BinServer, String> {
        self.spawn_with(i, &[])
    }

    /// Starts node `i` with more arguments.
    pub fn spawn_with(&self, i: usize, more: &[&str]) -> Result<BinServer, String> {
        let key = self.key_path().display().to_string();
        let mut args: Vec<&str> = vec!["--store", &self.uri, "--signing-key", &key];
        args.extend(self.extra.iter().map(String::as_str));
        args.extend_from_slice(more);
        let data_dir = self.data_dir(i);
        BinServer::builder(&data_dir).args(&args).start()
    }

    /// Restarts node `i` (after it was killed or stopped).
    pub fn restart(&mut self, i: usize) {
        let node = self.spawn(i).expect("the node restarts");
        self.nodes[i] = Some(node);
    }

    pub fn node(&self, i: usize) -> &BinServer {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        self.node(i).url(path)
    }

    /// Every entry of the log, from node `i`'s export.
    pub async fn export(&self, i: usize) -> String {
        let response = bin_client()
            .get(self.url(i, "/v1/audit/export"))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("export");
        assert_eq!(response.status(), 200);
        response.text().await.expect("export body")
    }

    /// The export every running node agrees on once each has caught up with the last
    /// appends (nodes see each other's commits within milliseconds, not at once); panics if
    /// they do not agree within ten seconds.
    pub async fn converged_export(&self) -> String {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect();
        eventually(
            Duration::from_secs(10),
            "every node exports the same log",
            || {
                let running = running.clone();
                async move {
                    let mut exports = Vec::new();
                    for i in running {
                        exports.push(self.export(i).await);
                    }
                    let first = exports.first()?.clone();
                    exports.iter().all(|e| *e == first).then_some(first)
                }
            },
        )
        .await
    }

    /// The log, read straight from the database: `(seq, entry JSON)`.
    pub fn stored_log(&self) -> Vec<(u64, Value)> {
        let rows = self.pg.psql(
            &self.db,
            "SELECT seq, convert_from(bytes, 'UTF8') FROM keyledger.entries ORDER BY seq",
        );
        rows.lines()
            .map(|line| {
                let (seq, json) = line.split_once('|').expect("seq|json");
                (
                    seq.parse().expect("a seq"),
                    serde_json::from_str(json).expect("an entry is JSON"),
                )
            })
            .collect()
    }

    /// Runs `keyledger check --store <uri>` with the shared key; returns (success, output).
    pub fn check(&self) -> (bool, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
            .args(["check", "--store", &self.uri, "--signing-key"])
            .arg(self.key_path())
            .arg("--data-dir")
            .arg(self.dir.path().join("checker"))
            .env("RUST_LOG", "warn")
            .output()
            .expect("run keyledger check");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// `POST` with the admin secret; returns (status, body).
pub async fn post(client: &reqwest::Client, url: &str, secret: &str, body: Value) -> (u16, Value) {
    match client
        .post(url)
        .bearer_auth(secret)
        .json(&body)
        .send()
        .await
    {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Asks node `url` to verify `key`; returns the answer's code, or the HTTP status when the
/// node did not answer 200.
pub async fn verify_code(client: &reqwest::Client, url: &str, key: &str) -> String {
    match client
        .post(url)
        .json(&json!({"key": key, "method": "GET", "path": "/agents/1"}))
        .send()
        .await
    {
        Ok(response) if response.status() == 200 => {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            body["code"].as_str().unwrap_or("?").to_string()
        }
        Ok(response) => format!("HTTP {}", response.status().as_u16()),
        Err(e) => format!("error {e}"),
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks the stored log is one gap-free chain: seq 0, 1, 2, … and each stream's versions
/// 1, 2, …; returns the `api_key.created` entries by key id.
pub fn check_chain(log: &[(u64, Value)]) -> BTreeMap<String, Value> {
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut created = BTreeMap::new();
    for (i, (seq, entry)) in log.iter().enumerate() {
        assert_eq!(*seq, i as u64, "the log has a gap before seq {seq}");
        assert_eq!(entry["seq"], json!(seq));
        let stream = entry["stream"].as_str().expect("stream").to_string();
        let version = versions.entry(stream.clone()).or_insert(0);
        *version += 1;
        assert_eq!(
            entry["version"],
            json!(*version),
            "stream {stream} at seq {seq}"
        );
        if entry["type"] == "api_key.created" {
            let id = entry["data"]["key_id"]
                .as_str()
                .expect("key id")
                .to_string();
            assert!(
                created.insert(id.clone(), entry.clone()).is_none(),
                "key {id} created twice"
            );
        }
    }
    created
}

/// The ids of the keys an export lists as created.
pub fn created_in(export: &str) -> Vec<String> {
    export
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["type"] == "api_key.created")
        .filter_map(|e| e["data"]["key_id"].as_str().map(str::to_string))
        .collect()
}

/// Creates keys named `<prefix>-<n>` from `clients` concurrent workers, spread over the
/// nodes in `urls` round-robin, until `stop` says so or `count` were tried; returns the ids
/// of the keys acknowledged with 201, and how many requests failed.
pub async fn create_load(
    urls: &std::sync::Arc<std::sync::RwLock<Vec<String>>>,
    admin: &str,
    prefix: &str,
    count: usize,
    clients: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<String>, usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let urls = urls.clone();
        let admin = admin.to_string();
        let prefix = prefix.to_string();
        let next = next.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let client = bin_client();
            let mut acked = Vec::new();
            let mut failed = 0;
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= count || stop.load(Ordering::SeqCst) {
                    break;
                }
                let url = {
                    let urls = urls.read().expect("urls");
                    urls[n % urls.len()].clone()
                };
                let (status, body) = post(
                    &client,
                    &format!("{url}/v1/admin/api-keys"),
                    &admin,
                    json!({"name": format!("{prefix}-{n}"), "role": "basic"}),
                )
                .await;
                if status == 201 {
                    acked.push(body["api_key"]["id"].as_str().expect("id").to_string());
                } else {
                    failed += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            (acked, failed)
        });
    }
    let mut acked = Vec::new();
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        let (a, f) = done.expect("load task");
        acked.extend(a);
        failed += f;
    }
    (acked, failed)
}

/// Node base URLs (`http://addr`) of a cluster's running nodes.
pub fn base_urls(cluster: &Cluster) -> Vec<String> {
    cluster.nodes.iter().flatten().map(|n| n.url("")).collect()
}

/// Reads a file, or an empty string.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
