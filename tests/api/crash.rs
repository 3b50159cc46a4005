//! Crash safety of the real binary: 200 concurrent key creations, SIGKILL part way, restart
//! on the same data dir. Every creation that was answered 201 survives, the log checks, and
//! nothing is half-written.
//!
//! Also holds [`BinServer`], the real-binary harness shared with `activity.rs`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keyledger::crypto::seal;
use keyledger::domain::{Entry, EventData};
use keyledger::store::{SledStore, Store};
use serde_json::{Value, json};

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `keyledger serve`; killed (SIGKILL) when dropped, so a failing test leaves no
/// process behind.
pub struct BinServer {
    child: Child,
    /// `127.0.0.1:port`.
    pub addr: String,
    /// The bootstrap admin secret, when this start created the log.
    pub secret: Option<String>,
    stderr_path: PathBuf,
    /// Keeps the rest of stdout drained.
    _lines: mpsc::Receiver<String>,
}

impl BinServer {
    /// Starts `keyledger serve --data-dir <data_dir> --listen 127.0.0.1:0 <extra...>` and
    /// waits for its listening line. `Err` (with stdout and stderr) when it does not start.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Result<BinServer, String> {
        let stderr_path = data_dir.with_extension(format!(
            "stderr.{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let stderr = File::create(&stderr_path).expect("create stderr file");
        let mut command = Process::new(env!("CARGO_BIN_EXE_keyledger"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KEYLEDGER_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn keyledger serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = BinServer {
            child,
            addr: String::new(),
            secret: None,
            stderr_path,
            _lines: rx,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut banner = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match server._lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(secret) = line.trim_start().strip_prefix("secret:") {
                        server.secret = Some(secret.trim().to_string());
                    }
                    let listening = line
                        .split_once("listening on http://")
                        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_string());
                    banner.push(line);
                    if let Some(addr) = listening {
                        server.addr = addr;
                        return Ok(server);
                    }
                }
                Err(e) => {
                    // Give a refusing process a moment to finish writing its error.
                    std::thread::sleep(Duration::from_millis(100));
                    let status = server.child.try_wait().ok().flatten();
                    return Err(format!(
                        "keyledger serve did not start ({e:?}, exit {status:?}); stdout: \
                         {banner:?}; stderr: {}",
                        server.stderr()
                    ));
                }
            }
        }
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends `signal` (e.g. `-KILL`, `-TERM`) with `kill`.
    fn signal(&self, signal: &str) {
        let status = Process::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    fn wait(&mut self, why: &str) -> ExitStatus {
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for server") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after {why}; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        self.wait("SIGKILL");
    }

    /// SIGTERM (a clean shutdown), and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM");
        self.wait("SIGTERM")
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// A client that ignores proxy settings and never hangs for long.
pub fn bin_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build HTTP client")
}

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
    let response = client
        .get(server.url("/v1/admin/api-keys"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("list keys");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let listed: BTreeMap<String, String> = body["api_keys"]
        .as_array()
        .expect("api_keys")
        .iter()
        .map(|k| {
            (
                k["id"].as_str().expect("id").to_string(),
                k["name"].as_str().expect("name").to_string(),
            )
        })
        .collect();
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
