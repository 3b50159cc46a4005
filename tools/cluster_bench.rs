//! Benchmarks of several nodes on one PostgreSQL, against sled on the same machine, with an
//! independent load generator (`wrk`, Debian's package) for every throughput figure:
//! - durable key creations/s and latency at 64 connections on sled, and on 1, 2 and 3 nodes
//!   sharing one PostgreSQL (the connections split evenly over the nodes);
//! - `POST /v1/verify` requests/s of each node, all three loaded at once;
//! - how long a revocation committed on one node takes to be refused by the two others,
//!   while the cluster takes creations (`wrk`) — measured from the `204` of the `DELETE`
//!   to the first `REVOKED` answer, polling every node every millisecond;
//! - how long a new node with an empty cache takes to join a log of 1,000,000 entries
//!   (process start to `/readyz` 200), and a restart with its snapshot.
//!
//! Run: `cargo build --release && cargo run --release --example cluster_bench`
//! (`-- --quick` uses 100,000 entries for the join; `-- --seconds N` sets each load phase).
//! Needs `wrk` and PostgreSQL's server binaries (Debian's `wrk` and `postgresql`). Traffic
//! goes to 127.0.0.1 only; PostgreSQL runs with `fsync=on` in a temporary directory.

#[path = "../tests/common/postgres.rs"]
mod postgres_server;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyledger::crypto::secret::{PlainSecret, SecretKind};
use keyledger::domain::events::{ActivityCount, CredentialActivity};
use keyledger::domain::{Actor, Clock, Command as LedgerCommand, KeyName, Role, SystemClock};
use postgres_server::Postgres;
use serde_json::{Value, json};
use uuid::Uuid;

/// A running `keyledger serve`.
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

impl Node {
    fn start(binary: &Path, data_dir: &Path, extra: &[&str]) -> Node {
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--shutdown-grace", "0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keyledger");
        let stdout = child.stdout.take().expect("stdout");
        let mut secret = None;
        let mut addr = String::new();
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.expect("read stdout");
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
        assert!(!addr.is_empty(), "keyledger did not start");
        // Keep reading stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Node {
            child,
            addr,
            secret,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// What one `wrk` run printed (the JSON line of the Lua scripts in `tools/wrk/`).
#[derive(Clone, Copy, Debug, Default)]
struct Wrk {
    requests: f64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    bad: f64,
}

fn wrk_command(
    url: &str,
    script: &str,
    args: &[&str],
    connections: usize,
    seconds: u64,
) -> Command {
    let mut command = Command::new("wrk");
    command
        .arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(script)
        .arg(url)
        .arg("--")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

fn wrk_result(child: Child) -> Wrk {
    let out = child.wait_with_output().expect("wrk ran");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("wrk printed no figures: {text}"));
    let v: Value = serde_json::from_str(line).expect("wrk JSON");
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Wrk {
        requests: f("requests"),
        rps: f("rps"),
        p50_ms: f("p50_ms"),
        p99_ms: f("p99_ms"),
        bad: f("non_2xx") + f("errors"),
    }
}

/// Runs one `wrk` per `(node url, connections)` at once; returns each node's figures.
fn wrk_all(
    targets: &[(String, usize)],
    script: &str,
    args: &[Vec<String>],
    seconds: u64,
) -> Vec<Wrk> {
    let children: Vec<Child> = targets
        .iter()
        .zip(args)
        .map(|((url, connections), args)| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            wrk_command(url, script, &args, *connections, seconds)
                .spawn()
                .expect("run wrk (apt-get install wrk)")
        })
        .collect();
    children.into_iter().map(wrk_result).collect()
}

fn script(name: &str) -> String {
    format!("{}/tools/wrk/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Sum of requests/s, and the worst p50/p99 among the nodes.
fn total(results: &[Wrk]) -> Wrk {
    Wrk {
        requests: results.iter().map(|r| r.requests).sum(),
        rps: results.iter().map(|r| r.rps).sum(),
        p50_ms: results.iter().map(|r| r.p50_ms).fold(0.0, f64::max),
        p99_ms: results.iter().map(|r| r.p99_ms).fold(0.0, f64::max),
        bad: results.iter().map(|r| r.bad).sum(),
    }
}

/// `n` nodes over a fresh database of `pg`; the first creates the log.
fn cluster(binary: &Path, pg: &Postgres, dir: &Path, n: usize) -> Vec<Node> {
    let db = pg.create_database();
    let uri = pg.uri(&db);
    let key = dir.join(format!("{db}.key"));
    let key_arg = key.display().to_string();
    (0..n)
        .map(|i| {
            Node::start(
                binary,
                &dir.join(format!("{db}-node{i}")),
                &["--store", &uri, "--signing-key", &key_arg],
            )
        })
        .collect()
}

fn creation_phase(nodes: &[Node], admin: &str, seconds: u64, tag: &str) -> Wrk {
    let per_node = 64 / nodes.len();
    let targets: Vec<(String, usize)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.url(""), per_node + usize::from(i < 64 % nodes.len())))
        .collect();
    let args: Vec<Vec<String>> = (0..nodes.len())
        .map(|i| vec![admin.to_string(), format!("{tag}-{i}")])
        .collect();
    let results = wrk_all(&targets, &script("create-keys.lua"), &args, seconds);
    total(&results)
}

async fn create_key(
    client: &reqwest::Client,
    node: &Node,
    admin: &str,
    name: &str,
) -> (String, String) {
    let response = client
        .post(node.url("/v1/admin/api-keys"))
        .bearer_auth(admin)
        .json(&json!({"name": name, "role": "basic"}))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 201, "create {name}");
    let body: Value = response.json().await.expect("json");
    (
        body["api_key"]["id"].as_str().expect("id").to_string(),
        body["secret"].as_str().expect("secret").to_string(),
    )
}

async fn code(client: &reqwest::Client, node: &Node, secret: &str) -> String {
    match client
        .post(node.url("/v1/verify"))
        .json(&json!({"key": secret}))
        .send()
        .await
    {
        Ok(r) if r.status() == 200 => r.json::<Value>().await.map_or_else(
            |_| "?".into(),
            |v| v["code"].as_str().unwrap_or("?").to_string(),
        ),
        Ok(r) => format!("HTTP {}", r.status().as_u16()),
        Err(_) => "error".into(),
    }
}

/// Delays, in milliseconds, from a revocation's `204` on node 0 to nodes 1 and 2 refusing
/// the key, `samples` times.
async fn propagation(nodes: &[Node], admin: &str, samples: usize) -> Vec<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .build()
        .expect("client");
    let mut delays = Vec::new();
    for i in 0..samples {
        let (id, secret) = create_key(&client, &nodes[0], admin, &format!("revoked-{i}")).await;
        for node in &nodes[1..] {
            while code(&client, node, &secret).await != "VALID" {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let response = client
            .delete(nodes[0].url(&format!("/v1/admin/api-keys/{id}")))
            .bearer_auth(admin)
            .send()
            .await
            .expect("delete");
        assert_eq!(response.status(), 204);
        let acked = Instant::now();
        for node in &nodes[1..] {
            loop {
                let seen = code(&client, node, &secret).await;
                if seen == "REVOKED" {
                    delays.push(acked.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                assert!(seen == "VALID", "unexpected answer {seen}");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    delays
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Fills a fresh database with `entries` entries through the library (one API key per ten
/// entries, the rest activity summaries), as a long-running ledger mostly holds.
async fn build_log(pg: &Postgres, dir: &Path, entries: u64) -> (String, PathBuf) {
    let db = pg.create_database();
    let uri = pg.uri(&db);
    let key = dir.join(format!("{db}.key"));
    let config = keyledger::server::NodeConfig {
        data_dir: dir.join(format!("{db}-builder")),
        store: keyledger::server::StoreChoice::Postgres(uri.clone()),
        signing_key: Some(key.clone()),
        origin: Some("bench.keyledger/log".into()),
        max_staleness: Duration::from_secs(30),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (ledger, _) = keyledger::server::open_node(&config, clock.clone())
        .await
        .expect("open the builder node");
    let mut keys: Vec<Uuid> = Vec::new();
    let mut pending = Vec::new();
    let mut written = ledger.checkpoint().checkpoint.size;
    let mut i = 0u64;
    while written < entries {
        let command = if i % 10 == 0 || keys.is_empty() {
            let secret = PlainSecret::generate(SecretKind::ApiKey).expect("rng");
            let key_id = Uuid::now_v7();
            keys.push(key_id);
            LedgerCommand::CreateApiKey {
                key_id,
                name: KeyName::parse(&format!("load-{i}")).expect("name"),
                role: Role::Basic,
                expires_at: None,
                secret_sha256: secret.sha256(),
                display: secret.display(),
            }
        } else {
            let key = keys[(i as usize * 7919) % keys.len()];
            let now = clock.now();
            LedgerCommand::RecordActivity(CredentialActivity {
                credential_id: key,
                principal_id: key,
                window_start: now,
                window_end: now,
                last_used_at: now,
                counts: vec![ActivityCount {
                    method: "POST".into(),
                    route: "/chat/*/**".into(),
                    outcome: "VALID".into(),
                    count: i % 97 + 1,
                }],
            })
        };
        let ledger2 = ledger.clone();
        pending.push(tokio::spawn(async move {
            ledger2.execute(command, Actor::system()).await
        }));
        written += 1;
        i += 1;
        if pending.len() == 4096 {
            for p in pending.drain(..) {
                p.await.expect("join").expect("append");
            }
        }
    }
    for p in pending {
        p.await.expect("join").expect("append");
    }
    ledger.shutdown().await;
    (uri, key)
}

/// Seconds from process start to the first `/readyz` 200.
async fn time_to_ready(binary: &Path, data_dir: &Path, uri: &str, key: &Path) -> f64 {
    let started = Instant::now();
    let key_arg = key.display().to_string();
    let node = Node::start(
        binary,
        data_dir,
        &[
            "--store",
            uri,
            "--signing-key",
            &key_arg,
            "--max-staleness",
            "30",
        ],
    );
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(node.url("/readyz")).send().await {
            if r.status() == 200 {
                return started.elapsed().as_secs_f64();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let binary = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/release/keyledger"
    ));
    assert!(
        binary.exists(),
        "build the release binary first: cargo build --release"
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(run(binary, quick, seconds));
}

async fn run(binary: PathBuf, quick: bool, seconds: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "# keyledger cluster benchmark ({cpus} CPUs; nodes, PostgreSQL and wrk share them, unpinned)\n"
    );

    // sled, one node, the same load.
    let sled = Node::start(&binary, &dir.path().join("sled"), &[]);
    let admin = sled.secret.clone().expect("bootstrap secret");
    let on_sled = creation_phase(std::slice::from_ref(&sled), &admin, seconds, "sled");
    drop(sled);

    let pg = Postgres::start();
    println!(
        "| durable creations, 64 connections | creations/s | p50 | p99 (worst node) | non-2xx |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| sled, 1 node | {:.0} | {:.2} ms | {:.2} ms | {} |",
        on_sled.rps, on_sled.p50_ms, on_sled.p99_ms, on_sled.bad
    );
    let mut three = Vec::new();
    for n in 1..=3 {
        let nodes = cluster(&binary, &pg, dir.path(), n);
        let admin = nodes[0].secret.clone().expect("bootstrap secret");
        let figures = creation_phase(&nodes, &admin, seconds, &format!("pg{n}"));
        println!(
            "| PostgreSQL, {n} node{} | {:.0} | {:.2} ms | {:.2} ms | {} |",
            if n == 1 { "" } else { "s" },
            figures.rps,
            figures.p50_ms,
            figures.p99_ms,
            figures.bad
        );
        if n == 3 {
            three = nodes;
        }
    }

    // Verify on every node at once.
    let admin = three[0].secret.clone().expect("bootstrap secret");
    let client = reqwest::Client::new();
    let (_, secret) = create_key(&client, &three[0], &admin, "verified").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let targets: Vec<(String, usize)> = three.iter().map(|n| (n.url(""), 16)).collect();
    let args: Vec<Vec<String>> = three.iter().map(|_| vec![secret.clone()]).collect();
    let verify = wrk_all(&targets, &script("verify.lua"), &args, seconds);
    println!(
        "\n| `POST /v1/verify` (policy check), 16 connections per node, 3 nodes at once | requests/s | p50 | p99 |"
    );
    println!("|---|---|---|---|");
    for (i, v) in verify.iter().enumerate() {
        println!(
            "| node {i} | {:.0} | {:.2} ms | {:.2} ms |",
            v.rps, v.p50_ms, v.p99_ms
        );
    }

    // Revocation propagation, under creation load.
    let load_targets: Vec<(String, usize)> = three.iter().map(|n| (n.url(""), 10)).collect();
    let load_args: Vec<Vec<String>> = (0..3)
        .map(|i| vec![admin.clone(), format!("bg-{i}")])
        .collect();
    let load: Vec<Child> = load_targets
        .iter()
        .zip(&load_args)
        .map(|((url, c), a)| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            wrk_command(url, &script("create-keys.lua"), &a, *c, seconds + 30)
                .spawn()
                .expect("wrk")
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = if quick { 50 } else { 200 };
    let delays = propagation(&three, &admin, samples).await;
    let background = load.into_iter().map(wrk_result).collect::<Vec<_>>();
    println!(
        "\nRevocation on node 0 refused by nodes 1 and 2 ({} measurements, under {:.0} creations/s of background load): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        delays.len(),
        total(&background).rps,
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or(0.0)
    );
    drop(three);

    // A new node joining a large log.
    let entries: u64 = if quick { 100_000 } else { 1_000_000 };
    let built = Instant::now();
    let (uri, key) = build_log(&pg, dir.path(), entries).await;
    let build_seconds = built.elapsed().as_secs_f64();
    let joiner = dir.path().join("joiner");
    let cold = time_to_ready(&binary, &joiner, &uri, &key).await;
    // A start that replayed over 10,000 entries saves its snapshot right away, so the
    // restart (after a SIGKILL, which writes nothing) finds it.
    let warm = time_to_ready(&binary, &joiner, &uri, &key).await;
    println!(
        "\nA node joining a log of {entries} entries (built in {build_seconds:.0} s): empty cache {cold:.2} s to ready; restarted with its snapshot {warm:.2} s"
    );
}
