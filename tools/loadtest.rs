//! HTTP load test of a real `keyledger serve` (release build), in one run:
//! - requests/s and p50/p99 of `POST /v1/verify` with a valid key against `GET /healthz` on
//!   the same server at the same concurrency, and their ratio;
//! - durable key creations/s and p99 at 1, 16 and 64 concurrent clients;
//! - cold start (process start to `/readyz` 200) on logs of 10k, 100k and 1M entries, with
//!   the data dir's size on disk against the exported NDJSON's;
//! - the server's peak resident memory for each.
//!
//! Run: `cargo build --release && cargo run --release --example loadtest`
//! (`-- --quick` skips the 1M-entry log; `-- --seconds N` sets each phase's length).
//! Traffic goes to 127.0.0.1 only.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyledger::crypto::secret::{PlainSecret, SecretKind};
use keyledger::domain::events::{ActivityCount, CredentialActivity};
use keyledger::domain::{Actor, Clock, Command, KeyName, Role, SystemClock};
use serde_json::{Value, json};
use uuid::Uuid;

struct Server {
    child: Child,
    addr: String,
    secret: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(binary: &Path, data_dir: &Path) -> Server {
        let mut child = Process::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keyledger");
        let stdout = child.stdout.take().expect("stdout");
        let mut secret = None;
        let mut addr = String::new();
        for line in BufReader::new(stdout).lines() {
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
        Server {
            child,
            addr,
            secret,
        }
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    fn stop(mut self) {
        let _ = Process::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

struct Stats {
    count: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `request` from `clients` concurrent loops for `seconds`.
async fn load<F, Fut>(clients: usize, seconds: f64, request: F) -> Stats
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = request((c as u64) << 32 | n).await;
                assert!(ok, "a request failed during the load test");
                latencies.push(t.elapsed());
                n += 1;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("join"));
    }
    let elapsed = start.elapsed();
    all.sort();
    Stats {
        count: all.len(),
        elapsed,
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += if meta.is_dir() {
                dir_size(&e.path())
            } else {
                meta.len()
            };
        }
    }
    total
}

/// Builds a data dir holding `entries` entries through the library: one API key per ten
/// entries, the rest activity summaries of those keys (what a long-running ledger mostly
/// holds).
async fn build_log(dir: &Path, entries: u64) -> String {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (ledger, bootstrap) =
        keyledger::server::open_ledger(dir, Some("load.keyledger/log"), clock.clone())
            .await
            .expect("open ledger");
    let admin = bootstrap
        .expect("a new log has a bootstrap key")
        .secret
        .expose()
        .to_string();
    let mut keys: Vec<Uuid> = Vec::new();
    let mut pending = Vec::new();
    let mut written = ledger.checkpoint().checkpoint.size;
    let mut i = 0u64;
    while written < entries {
        let command = if i % 10 == 0 || keys.is_empty() {
            let secret = PlainSecret::generate(SecretKind::ApiKey).expect("rng");
            let key_id = Uuid::now_v7();
            keys.push(key_id);
            Command::CreateApiKey {
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
            Command::RecordActivity(CredentialActivity {
                credential_id: key,
                principal_id: key,
                window_start: now,
                window_end: now,
                last_used_at: now,
                counts: vec![
                    ActivityCount {
                        method: "POST".into(),
                        route: "/chat/**".into(),
                        outcome: "VALID".into(),
                        count: i % 97 + 1,
                    },
                    ActivityCount {
                        method: "GET".into(),
                        route: "/admin/**".into(),
                        outcome: "FORBIDDEN".into(),
                        count: 1,
                    },
                ],
            })
        };
        let ledger2 = ledger.clone();
        pending.push(tokio::spawn(async move {
            ledger2.execute(command, Actor::system()).await
        }));
        written += 1;
        i += 1;
        if pending.len() == 2048 {
            for p in pending.drain(..) {
                p.await.expect("join").expect("append");
            }
        }
    }
    for p in pending {
        p.await.expect("join").expect("append");
    }
    ledger.shutdown().await;
    drop(ledger);
    // sled releases its file lock from a background thread shortly after the last handle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    admin
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let seconds: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let keep = args.iter().any(|a| a == "--keep");
    let cold_only = args.iter().any(|a| a == "--cold-only");
    let binary = std::env::var_os("KEYLEDGER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/keyledger"));
    assert!(
        binary.exists(),
        "{} not found: run `cargo build --release` first",
        binary.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(binary, quick, seconds, keep, cold_only));
}

async fn run(binary: PathBuf, quick: bool, seconds: f64, keep: bool, cold_only: bool) {
    println!(
        "keyledger load test — {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        binary.display()
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    if !cold_only {
        http_phases(&binary, &client, seconds).await;
    }
    cold_starts(&binary, &client, quick, keep).await;
}

async fn http_phases(binary: &Path, client: &reqwest::Client, seconds: f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(binary, dir.path());
    let admin = server.secret.clone().expect("bootstrap secret");
    let base = format!("http://{}", server.addr);
    let created: Value = client
        .post(format!("{base}/v1/admin/api-keys"))
        .bearer_auth(&admin)
        .json(&json!({"name": "load-verify", "role": "basic"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let key = created["secret"].as_str().expect("secret").to_string();

    const CONCURRENCY: usize = 64;
    let (c, b) = (client.clone(), base.clone());
    let health = load(CONCURRENCY, seconds, move |_| {
        let (c, b) = (c.clone(), b.clone());
        async move {
            c.get(format!("{b}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    let (c, b, k) = (client.clone(), base.clone(), key.clone());
    let verify = load(CONCURRENCY, seconds, move |_| {
        let (c, b) = (c.clone(), b.clone());
        let body = json!({"key": k, "method": "POST", "path": "/chat/send-message"});
        async move {
            c.post(format!("{b}/v1/verify"))
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    println!("\n## verify against healthz ({CONCURRENCY} concurrent clients, {seconds} s each)\n");
    println!("| endpoint | requests/s | p50 | p99 |\n|---|---|---|---|");
    println!(
        "| GET /healthz | {:.0} | {} | {} |",
        health.rps(),
        ms(health.p50),
        ms(health.p99)
    );
    println!(
        "| POST /v1/verify | {:.0} | {} | {} |",
        verify.rps(),
        ms(verify.p50),
        ms(verify.p99)
    );
    println!(
        "\nverify / healthz ratio: {:.2}",
        verify.rps() / health.rps()
    );

    println!("\n## durable key creations ({seconds} s each)\n");
    println!("| clients | creations/s | p50 | p99 |\n|---|---|---|---|");
    for clients in [1usize, 16, 64] {
        let (c, b, a) = (client.clone(), base.clone(), admin.clone());
        let stats = load(clients, seconds, move |n| {
            let (c, b, a) = (c.clone(), b.clone(), a.clone());
            async move {
                c.post(format!("{b}/v1/admin/api-keys"))
                    .bearer_auth(a)
                    .json(&json!({"name": format!("load-{clients}-{n}"), "role": "basic"}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 201)
            }
        })
        .await;
        println!(
            "| {clients} | {:.0} | {} | {} |",
            stats.rps(),
            ms(stats.p50),
            ms(stats.p99)
        );
    }
    println!(
        "\nserver peak RSS during the HTTP phases: {} MiB",
        server.peak_rss_kib() / 1024
    );
    server.stop();
}

async fn cold_starts(binary: &Path, client: &reqwest::Client, quick: bool, keep: bool) {
    println!("\n## cold start (process start to /readyz 200), then a full export over HTTP\n");
    println!(
        "| entries | build | cold start | data dir | export (NDJSON) | disk / export | peak RSS after start | export time | peak RSS after export |\n|---|---|---|---|---|---|---|---|---|"
    );
    let sizes: &[u64] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    for &entries in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Instant::now();
        let admin = build_log(dir.path(), entries).await;
        let build = t.elapsed();
        let start = Instant::now();
        let server = Server::start(binary, dir.path());
        let base = format!("http://{}", server.addr);
        loop {
            if client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let cold = start.elapsed();
        let rss = server.peak_rss_kib();
        // Stream the whole export, counting bytes without keeping them.
        let t = Instant::now();
        let mut response = client
            .get(format!("{base}/v1/audit/export"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("export");
        let mut exported = 0u64;
        while let Some(chunk) = response.chunk().await.expect("export chunk") {
            exported += chunk.len() as u64;
        }
        let export_time = t.elapsed();
        let rss_after_export = server.peak_rss_kib();
        server.stop();
        let disk = dir_size(dir.path());
        let export = exported;
        println!(
            "| {entries} | {:.1} s | {:.2} s | {:.1} MiB | {:.1} MiB | {:.2} | {} MiB | {:.2} s | {} MiB |",
            build.as_secs_f64(),
            cold.as_secs_f64(),
            disk as f64 / 1048576.0,
            export as f64 / 1048576.0,
            disk as f64 / export as f64,
            rss / 1024,
            export_time.as_secs_f64(),
            rss_after_export / 1024
        );
        if keep {
            let kept = dir.keep();
            println!("(kept {})", kept.display());
        }
    }
}
