//! The real `keyledger` binary: first start prints a bootstrap secret, the audit routes
//! answer, SIGTERM stops it cleanly, a restart keeps the log, `check` passes.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keyledger::crypto::note::{Checkpoint, NoteVerifier};
use keyledger::store::Store;

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running server; killed when dropped (so a failing test leaves no process behind).
struct Server {
    child: Child,
    /// The stdout lines up to and including the `listening` line.
    banner: Vec<String>,
    addr: String,
    stderr_path: std::path::PathBuf,
    /// Keeps the rest of stdout readable (a closed pipe would break a later println).
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(data_dir: &Path, log_name: &str) -> Server {
        let stderr_path = data_dir
            .parent()
            .expect("data dir has a parent")
            .join(log_name);
        let stderr = File::create(&stderr_path).expect("create stderr file");
        let mut command = Process::new(env!("CARGO_BIN_EXE_keyledger"));
        // Settings come from the command line only.
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
            .env("RUST_LOG", "info")
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
        let mut server = Server {
            child,
            banner: Vec::new(),
            addr: String::new(),
            stderr_path,
            lines: rx,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.lines.recv_timeout(left) {
                Ok(line) => {
                    let listening = line
                        .split_once("listening on http://")
                        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_string());
                    server.banner.push(line);
                    if let Some(addr) = listening {
                        server.addr = addr;
                        break;
                    }
                }
                Err(e) => panic!(
                    "no `listening on` line ({e:?}); stdout so far: {:?}; stderr: {}",
                    server.banner,
                    server.stderr()
                ),
            }
        }
        assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);
        server
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The bootstrap secret from the banner, if one was printed.
    fn secret(&self) -> Option<String> {
        self.banner.iter().find_map(|l| {
            l.trim_start()
                .strip_prefix("secret:")
                .map(|s| s.trim().to_string())
        })
    }

    /// Sends SIGTERM and waits for the process to exit.
    fn terminate(mut self) -> ExitStatus {
        let status = Process::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for server") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after SIGTERM; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build HTTP client")
}

async fn fetch_checkpoint(
    client: &reqwest::Client,
    server: &Server,
    secret: &str,
    verifier: &NoteVerifier,
) -> Checkpoint {
    let response = client
        .get(server.url("/v1/audit/checkpoint"))
        .bearer_auth(secret)
        .send()
        .await
        .expect("GET checkpoint");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let note = response.text().await.expect("checkpoint body");
    Checkpoint::open(&note, verifier).expect("checkpoint verifies")
}

async fn fetch_verifier(client: &reqwest::Client, server: &Server) -> NoteVerifier {
    let response = client
        .get(server.url("/v1/audit/public-key"))
        .send()
        .await
        .expect("GET public-key");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("public-key JSON");
    let vkey = body["vkey"].as_str().expect("vkey is a string");
    let verifier = NoteVerifier::parse(vkey).expect("vkey parses");
    assert_eq!(body["origin"].as_str(), Some(verifier.name()));
    verifier
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_sigterm_restart_and_check() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let client = client();

    // First start: a new log and a bootstrap admin key.
    let server = Server::start(&data_dir, "first.stderr");
    let secret = server
        .secret()
        .unwrap_or_else(|| panic!("no secret line in {:?}", server.banner));
    assert!(secret.starts_with("klk_"), "secret {secret:?}");

    let response = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("GET healthz");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("healthz JSON");
    assert_eq!(body, serde_json::json!({"status": "ok"}));

    let verifier = fetch_verifier(&client, &server).await;
    assert_eq!(verifier.name(), keyledger::server::DEFAULT_ORIGIN);
    let checkpoint = fetch_checkpoint(&client, &server, &secret, &verifier).await;
    assert!(
        checkpoint.size >= 2,
        "genesis and bootstrap key: {checkpoint:?}"
    );

    // No credential, and a wrong one: 401 in the JSON error shape.
    let response = client
        .get(server.url("/v1/audit/checkpoint"))
        .send()
        .await
        .expect("GET checkpoint without credential");
    assert_eq!(response.status(), reqwest::StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = response.json().await.expect("error JSON");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let response = client
        .get(server.url("/v1/audit/checkpoint"))
        .bearer_auth("klk_not_a_real_secret")
        .send()
        .await
        .expect("GET checkpoint with a bad credential");
    assert_eq!(response.status(), reqwest::StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = response.json().await.expect("error JSON");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");

    let status = server.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    // A clean stop may append the open activity window (our authenticated requests), and
    // nothing else; the stopped dir checks.
    let stopped = check_dir(&data_dir, &verifier);
    assert!(
        stopped.size >= checkpoint.size,
        "{stopped:?} < {checkpoint:?}"
    );

    // Second start on the same dir: no banner, and the start itself appends nothing.
    let server = Server::start(&data_dir, "second.stderr");
    assert!(
        !server.banner.iter().any(|l| l.contains("secret:")),
        "a restart must not print a new secret: {:?}",
        server.banner
    );
    assert_eq!(server.secret(), None);
    let verifier_again = fetch_verifier(&client, &server).await;
    assert_eq!(verifier_again.vkey(), verifier.vkey());
    // The bootstrap secret still works after the restart.
    let again = fetch_checkpoint(&client, &server, &secret, &verifier).await;
    assert_eq!(again, stopped, "a restart must not append");
    let status = server.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    let last = check_dir(&data_dir, &verifier);
    assert!(last.size >= stopped.size);
    // Opened in this process only now: sled releases its lock lazily, which could make a
    // server started right after fail.
    assert_only_activity_after(&data_dir, checkpoint.size);
}

/// Runs `keyledger check` on a stopped dir; it must pass. Returns the checkpoint it prints.
fn check_dir(data_dir: &Path, verifier: &NoteVerifier) -> Checkpoint {
    let out = Process::new(env!("CARGO_BIN_EXE_keyledger"))
        .arg("check")
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run keyledger check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (first, note) = stdout.split_once('\n').expect("two parts");
    let checkpoint = Checkpoint::open(note, verifier).expect("check prints a valid checkpoint");
    assert!(
        first.starts_with(&format!("ok: {} entries", checkpoint.size)),
        "{stdout}"
    );
    checkpoint
}

/// Entries from `from` on (written after the first start's bootstrap) are all activity
/// summaries.
fn assert_only_activity_after(data_dir: &Path, from: u64) {
    let store = keyledger::store::SledStore::open(&data_dir.join(keyledger::server::LOG_DIR))
        .expect("open the stopped store");
    for item in store.entries(from, u64::MAX) {
        let (seq, bytes) = item.expect("read entry");
        let (entry, _) = keyledger::crypto::seal::parse(&bytes).expect("entry parses");
        assert_eq!(
            entry.data.event_type(),
            "credential.activity",
            "seq {seq} was appended by a stop or restart"
        );
    }
}
