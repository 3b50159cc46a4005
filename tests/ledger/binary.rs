//! The real `keyledger` binary: first start prints a bootstrap secret, the audit routes
//! answer, SIGTERM stops it cleanly, a restart keeps the log, `check` passes.

use std::path::Path;
use std::process::Command as Process;

use keyledger::crypto::note::{Checkpoint, NoteVerifier};
use keyledger::store::Store;

use crate::bin_server::{BinServer, bin_client};

/// Starts `keyledger serve` on `data_dir` (`RUST_LOG=info`, stderr to `log_name` next to
/// the data dir) and panics when it does not start.
fn start(data_dir: &Path, log_name: &str) -> BinServer {
    let stderr_path = data_dir
        .parent()
        .expect("data dir has a parent")
        .join(log_name);
    let server = BinServer::builder(data_dir)
        .rust_log("info")
        .stderr_file(stderr_path)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);
    server
}

async fn fetch_checkpoint(
    client: &reqwest::Client,
    server: &BinServer,
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

async fn fetch_verifier(client: &reqwest::Client, server: &BinServer) -> NoteVerifier {
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
    let client = bin_client();

    // First start: a new log and a bootstrap admin key.
    let mut server = start(&data_dir, "first.stderr");
    let secret = server
        .secret
        .clone()
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
    drop(server);

    // A clean stop may append the open activity window (our authenticated requests), and
    // nothing else; the stopped dir checks.
    let stopped = check_dir(&data_dir, &verifier);
    assert!(
        stopped.size >= checkpoint.size,
        "{stopped:?} < {checkpoint:?}"
    );

    // Second start on the same dir: no banner, and the start itself appends nothing.
    let mut server = start(&data_dir, "second.stderr");
    assert!(
        !server.banner.iter().any(|l| l.contains("secret:")),
        "a restart must not print a new secret: {:?}",
        server.banner
    );
    assert_eq!(server.secret, None);
    let verifier_again = fetch_verifier(&client, &server).await;
    assert_eq!(verifier_again.vkey(), verifier.vkey());
    // The bootstrap secret still works after the restart.
    let again = fetch_checkpoint(&client, &server, &secret, &verifier).await;
    assert_eq!(again, stopped, "a restart must not append");
    let status = server.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    drop(server);

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

/// A SIGTERM sent the moment the server announces itself still shuts it down cleanly: the
/// signal handlers are installed before the listening line is printed. (The race this guards
/// against is narrow, so the test is a probabilistic guard: it caught the bug under load.)
#[test]
fn sigterm_right_after_start_is_a_clean_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 0..30 {
        let mut server = BinServer::start(&dir.path().join("data"), &[]).expect("server starts");
        let status = server.terminate();
        assert!(
            status.success(),
            "round {round}: exit {status:?}, stderr: {}",
            server.stderr()
        );
        drop(server);
    }
}
