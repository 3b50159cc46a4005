//! Operating the real `keyledger` binary:
//!
//! - `recover-admin` appends a `system`-made admin key to a stopped log (and is refused
//!   while a server runs, or where there is no log);
//! - a start that fails (bad `--listen`, a port in use, a bad policy) exits 1 before
//!   creating the data dir or printing a secret;
//! - JSON logs carry one access line per request, with its request id, route pattern,
//!   status, latency and principal, and never a secret; text logs to a file carry no
//!   colour codes;
//! - SIGTERM drains (`/readyz` 503, everything else still served) then exits 0, and a
//!   second SIGTERM ends the drain early.
//!
//! Also holds the process helpers shared with `data_dir.rs` (`run`, `assert_private`, …).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output, Stdio};
use std::time::{Duration, Instant};

use keyledger::crypto::secret::{PlainSecret, SecretKind};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::bin_server::{BinServer, bin_client, serve_command_with};
use crate::helpers::metric;

/// The longest a one-shot command may run before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// The longest the tests wait for a server to change state or exit.
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// 2. recover-admin
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn recover_admin_adds_a_system_admin_key_only_to_a_stopped_log() {
    // Arrange: a served log with its bootstrap key.
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let mut server = BinServer::start(&data_dir, &[]).expect("server starts");
    let bootstrap = server.secret.clone().expect("bootstrap secret");
    let client = bin_client();
    let size = ready_size(&client, &server).await;

    // Act: recover-admin while the server runs.
    let refused = run(recover_admin(&data_dir, &["--name", "break-glass"]));

    // Assert: refused, no secret printed, nothing appended.
    let stderr = text(&refused.stderr);
    assert!(
        !refused.status.success(),
        "{:?}; stderr {stderr}",
        refused.status
    );
    assert!(
        stderr.contains("server") && stderr.contains("running"),
        "says a server is running: {stderr}"
    );
    assert!(!text(&refused.stdout).contains("secret:"));
    assert_eq!(ready_size(&client, &server).await, size);

    // Act: stop the server (SIGTERM), then recover, once named and once not.
    let status = server.terminate();
    assert!(status.success(), "{status:?}; stderr {}", server.stderr());
    drop(server);
    let named = run(recover_admin(&data_dir, &["--name", "break-glass"]));
    let unnamed = run(recover_admin(&data_dir, &[]));

    // Assert: each prints a banner with the secret on stdout and a warning on stderr.
    let mut recovered = Vec::new();
    for output in [&named, &unnamed] {
        let stdout = text(&output.stdout);
        let stderr = text(&output.stderr);
        assert!(
            output.status.success(),
            "{:?}; stdout {stdout}; stderr {stderr}",
            output.status
        );
        let secret = line_value(&stdout, "secret:").expect("a secret: line");
        let key_id = line_value(&stdout, "key id:").expect("a key id: line");
        assert!(secret.starts_with("klk_"), "{stdout}");
        assert!(stderr.contains("warning"), "{stderr}");
        assert!(!stderr.contains(&secret), "the secret goes to stdout only");
        recovered.push((secret, key_id));
    }

    // A name the API would refuse is refused here too.
    let bad_name = run(recover_admin(&data_dir, &["--name", "c\u{200b}i"]));
    assert_eq!(
        bad_name.status.code(),
        Some(1),
        "{}",
        text(&bad_name.stderr)
    );
    assert!(!text(&bad_name.stdout).contains("secret:"));
    // What recover-admin wrote is as private as what the server writes.
    assert_private(&data_dir);

    // The restarted server knows both keys as admins, made by the system, and nothing
    // else was appended.
    let server = BinServer::start(&data_dir, &[]).expect("restart");
    assert!(server.secret.is_none(), "no second bootstrap key");
    assert_eq!(ready_size(&client, &server).await, size + 2);
    for (i, (secret, key_id)) in recovered.iter().enumerate() {
        let me = get_json(&client, &server, "/v1/me", secret).await;
        assert_eq!(me["principal"]["role"], "admin", "{me}");
        assert_eq!(me["principal"]["kind"], "service_account");
        assert_eq!(me["principal"]["id"], key_id.as_str());
        let name = me["principal"]["name"].as_str().expect("name");
        if i == 0 {
            assert_eq!(name, "break-glass");
        } else {
            assert!(name.starts_with("recovery-admin-"), "{name}");
        }
        let events = get_json(
            &client,
            &server,
            "/v1/audit/events?type=api_key.created&limit=1000",
            secret,
        )
        .await;
        let created: Vec<&Value> = events["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["data"]["key_id"] == key_id.as_str())
            .collect();
        assert_eq!(created.len(), 1, "{events}");
        assert_eq!(created[0]["actor"]["kind"], "system", "{}", created[0]);
        assert!(created[0]["actor"]["credential"].is_null());
        assert_eq!(created[0]["data"]["role"], "admin");
        assert_eq!(created[0]["data"]["name"], name);
    }
    // The old admin key still works.
    let me = get_json(&client, &server, "/v1/me", &bootstrap).await;
    assert_eq!(me["principal"]["role"], "admin");
    drop(server);
}

#[test]
fn recover_admin_refuses_a_dir_without_a_log() {
    // Arrange: an empty private directory.
    let tmp = tempfile::tempdir().expect("temp dir");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("create dir");
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    // Act
    let output = run(recover_admin(&empty, &["--name", "nope"]));

    // Assert: a clear refusal — it names the dir and the missing signing key — and
    // nothing written.
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr {stderr}");
    assert!(stderr.contains(&empty.display().to_string()), "{stderr}");
    assert!(stderr.contains("signing"), "{stderr}");
    assert!(!text(&output.stdout).contains("secret:"));
    assert_eq!(entries(&empty), 0, "nothing created in {}", empty.display());
}

#[test]
fn recover_admin_on_a_missing_dir_creates_nothing() {
    // Arrange
    let tmp = tempfile::tempdir().expect("temp dir");
    let missing = tmp.path().join("typo");

    // Act
    let output = run(recover_admin(&missing, &[]));

    // Assert
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr {stderr}");
    assert!(stderr.contains("signing"), "{stderr}");
    assert!(!missing.exists(), "{} was created", missing.display());
}

// ---------------------------------------------------------------------------------------
// 3. Failed starts
// ---------------------------------------------------------------------------------------

#[test]
fn failed_starts_leave_no_data_dir_and_print_no_secret() {
    // Arrange
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let bad_policy = tmp.path().join("policy.json");
    std::fs::write(&bad_policy, "{\"version\": 1, \"rules\": [").expect("write policy");
    let missing_policy = tmp.path().join("missing.json");
    let bad_policy = bad_policy.display().to_string();
    let missing_policy = missing_policy.display().to_string();
    let cases: [(&str, [&str; 2], &str); 6] = [
        (
            "an unparseable --listen",
            ["--listen", "nonsense"],
            "nonsense",
        ),
        ("a port in use", ["--listen", &taken_addr], &taken_addr),
        ("a bad policy file", ["--policy", &bad_policy], &bad_policy),
        (
            "a missing policy file",
            ["--policy", &missing_policy],
            &missing_policy,
        ),
        (
            "a --trusted-proxy that is no CIDR",
            ["--trusted-proxy", "10.0.0.0/33"],
            "10.0.0.0/33",
        ),
        (
            "Authorization as the API-key header",
            ["--api-key-header", "Authorization"],
            "--api-key-header",
        ),
    ];
    for (what, args, named) in cases {
        // Act
        let output = run(serve_command_with(&data_dir, &args));

        // Assert
        let stdout = text(&output.stdout);
        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{what}: stdout {stdout}; stderr {stderr}"
        );
        assert!(
            !stdout.contains("secret:") && !stdout.contains("klk_") && !stderr.contains("klk_"),
            "{what}: a secret was printed: {stdout}"
        );
        assert!(!stdout.contains("listening"), "{what}: {stdout}");
        assert!(
            stderr.contains(named),
            "{what}: stderr names {named}: {stderr}"
        );
        assert!(
            !data_dir.exists(),
            "{what}: {} was created",
            data_dir.display()
        );
    }

    // A following good start creates the log and prints the bootstrap secret.
    let server = BinServer::start(&data_dir, &[]).expect("a good start");
    let secret = server.secret.clone().expect("a secret: line");
    assert!(secret.starts_with("klk_"), "{secret}");
    drop(server);
    drop(taken);
}

// ---------------------------------------------------------------------------------------
// 5. Logs
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_request_ids_route_patterns_and_no_secret() {
    // Arrange
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let mut server = BinServer::builder(&data_dir)
        .rust_log("info")
        .args(&["--log-format", "json"])
        .stderr_file(log.clone())
        .start()
        .expect("server starts");
    let admin = server.secret.clone().expect("bootstrap secret");
    let admin_id = server
        .banner
        .iter()
        .find_map(|l| line_value(l, "key id:"))
        .expect("key id in the banner");
    let client = bin_client();
    let response = client
        .post(server.url("/v1/admin/api-keys"))
        .bearer_auth(&admin)
        .json(&json!({"name": "logged", "role": "basic"}))
        .send()
        .await
        .expect("create key");
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.expect("json");
    let key_id = created["api_key"]["id"].as_str().expect("id").to_string();
    let key_secret = created["secret"].as_str().expect("secret").to_string();
    let response = client
        .post(server.url("/v1/verify"))
        .json(&json!({"key": key_secret, "method": "GET", "path": "/chat/1"}))
        .send()
        .await
        .expect("verify");
    assert_eq!(response.status(), 200);
    let unknown = PlainSecret::generate(SecretKind::ApiKey).expect("secret");
    let response = client
        .get(server.url("/v1/me"))
        .bearer_auth(unknown.expose())
        .send()
        .await
        .expect("GET /v1/me");
    assert_eq!(response.status(), 401);

    // Act: a request with a trace id, and requests with none or an unusable one.
    let traced = client
        .get(server.url(&format!("/v1/admin/api-keys/{key_id}")))
        .bearer_auth(&admin)
        .header("X-Request-Id", "my-trace-1")
        .send()
        .await
        .expect("traced GET");
    assert_eq!(traced.status(), 200);
    assert_eq!(request_id_of(&traced).as_deref(), Some("my-trace-1"));
    let long = "x".repeat(65);
    let mut generated = Vec::new();
    for given in [
        None,
        Some("has space"),
        Some("semi;colon"),
        Some(long.as_str()),
    ] {
        let mut request = client.get(server.url("/v1/me")).bearer_auth(&admin);
        if let Some(id) = given {
            request = request.header("X-Request-Id", id);
        }
        let response = request.send().await.expect("GET /v1/me");
        assert_eq!(response.status(), 200);
        let echoed = request_id_of(&response).expect("an X-Request-Id");
        assert!(Uuid::parse_str(&echoed).is_ok(), "{given:?} -> {echoed}");
        assert_ne!(Some(echoed.as_str()), given);
        generated.push(echoed);
    }
    let status = server.terminate();
    assert!(status.success(), "{status:?}");

    // Assert: every line is a JSON object.
    let stderr = std::fs::read_to_string(&log).expect("read the log");
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(Value::is_object), "{stderr}");
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "keyledger::access")
        .collect();
    let with_id = |id: &str| -> Vec<&Value> {
        access
            .iter()
            .copied()
            .filter(|l| l["request_id"] == id)
            .collect()
    };
    // One access line for the traced request: pattern, not raw path; the caller's id.
    let traced = with_id("my-trace-1");
    assert_eq!(traced.len(), 1, "{stderr}");
    let line = traced[0];
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["route"], "/v1/admin/api-keys/{id}", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert!(
        line["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{line}"
    );
    assert_eq!(line["principal"], admin_id.as_str(), "{line}");
    // The generated ids are the ones logged.
    for id in &generated {
        let lines = with_id(id);
        assert_eq!(lines.len(), 1, "{id}: {stderr}");
        assert_eq!(lines[0]["route"], "/v1/me");
        assert_eq!(lines[0]["principal"], admin_id.as_str());
    }
    // A verify names the verified key; no access line holds a raw path.
    let verify = access
        .iter()
        .find(|l| l["route"] == "/v1/verify")
        .expect("a verify access line");
    assert_eq!(verify["method"], "POST");
    assert_eq!(verify["status"], 200);
    assert_eq!(verify["principal"], key_id.as_str());
    for line in &access {
        let route = line["route"].as_str().unwrap_or("");
        assert!(!route.contains(&key_id), "a raw path was logged: {line}");
    }
    // No secret anywhere, with or without its prefix.
    for secret in [admin.as_str(), key_secret.as_str(), unknown.expose()] {
        assert!(!stderr.contains(secret), "a secret was logged");
        assert!(!stderr.contains(&secret[4..]), "a secret's body was logged");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn text_logs_written_to_a_file_carry_no_colour_codes() {
    // Arrange
    let tmp = tempfile::tempdir().expect("temp dir");
    let log = tmp.path().join("server.log");
    let mut server = BinServer::builder(&tmp.path().join("data"))
        .rust_log("info")
        .args(&["--log-format", "text"])
        .stderr_file(log.clone())
        .start()
        .expect("server starts");
    let admin = server.secret.clone().expect("bootstrap secret");
    let client = bin_client();

    // Act
    get_json(&client, &server, "/v1/me", &admin).await;
    let missing = client
        .get(server.url("/v1/nothing-here"))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");

    // Assert
    let stderr = std::fs::read_to_string(&log).expect("read the log");
    assert!(stderr.contains("keyledger::access"), "{stderr}");
    assert!(!stderr.contains("\u{1b}["), "ANSI escapes in {stderr:?}");
    assert!(
        !stderr.lines().any(|l| l.starts_with('{')),
        "text, not JSON: {stderr}"
    );
    assert!(!stderr.contains(&admin));
}

// ---------------------------------------------------------------------------------------
// 6. Shutdown drain
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_with_readyz_at_503_then_exits_cleanly() {
    // Arrange
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut server = BinServer::start(&tmp.path().join("data"), &["--shutdown-grace", "3"])
        .expect("server starts");
    let admin = server.secret.clone().expect("bootstrap secret");
    let client = bin_client();
    let (status, body) = readyz(&client, &server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(draining_gauge(&client, &server).await, Some(0.0));

    // Act
    server.signal("-TERM");

    // Assert: not ready, still alive, still serving.
    let body = wait_until_draining(&client, &server).await;
    assert_eq!(body["error"]["code"], "draining", "{body}");
    assert_eq!(draining_gauge(&client, &server).await, Some(1.0));
    // A new connection (a fresh client) is still accepted.
    let health = bin_client()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("GET /healthz while draining");
    assert_eq!(health.status(), 200);
    let verify = client
        .post(server.url("/v1/verify"))
        .json(&json!({"key": admin}))
        .send()
        .await
        .expect("verify while draining");
    assert_eq!(verify.status(), 200);
    let answer: Value = verify.json().await.expect("json");
    assert_eq!(answer["code"], "VALID");
    // Then it exits by itself, cleanly.
    let status = server
        .wait_for_exit(WAIT)
        .unwrap_or_else(|| panic!("still running {WAIT:?} after SIGTERM"));
    assert!(status.success(), "{status:?}; stderr {}", server.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_ends_the_drain_early() {
    // Arrange: a 60 s drain, begun.
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut server = BinServer::start(&tmp.path().join("data"), &["--shutdown-grace", "60"])
        .expect("server starts");
    let client = bin_client();
    server.signal("-TERM");
    wait_until_draining(&client, &server).await;

    // Act
    server.signal("-TERM");

    // Assert: it exits cleanly, long before the 60 s are over.
    let limit = Duration::from_secs(15);
    let status = server
        .wait_for_exit(limit)
        .unwrap_or_else(|| panic!("still running {limit:?} after the second SIGTERM"));
    assert!(status.success(), "{status:?}; stderr {}", server.stderr());
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// `keyledger` with no `KEYLEDGER_*` variable from the test's environment.
pub fn keyledger() -> Process {
    let mut command = Process::new(env!("CARGO_BIN_EXE_keyledger"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KEYLEDGER_") {
            command.env_remove(key);
        }
    }
    command
}

fn recover_admin(data_dir: &Path, extra: &[&str]) -> Process {
    let mut command = keyledger();
    command
        .arg("recover-admin")
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra);
    command
}

/// Runs a one-shot command to its end, stdin closed, output captured; kills it (by its
/// pid) and fails when it is still running after [`RUN_LIMIT`] — e.g. a server that
/// should have refused to start.
pub fn run(mut command: Process) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_LIMIT) {
        Ok(output) => output.expect("collect the output"),
        Err(_) => {
            let _ = Process::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("{command:?} still running after {RUN_LIMIT:?}");
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value after `label` on the first line that starts with it (after indentation).
fn line_value(text: &str, label: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(|v| v.trim().to_string())
}

fn request_id_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn get_json(client: &reqwest::Client, server: &BinServer, path: &str, secret: &str) -> Value {
    let response = client
        .get(server.url(path))
        .bearer_auth(secret)
        .send()
        .await
        .expect("GET");
    let status = response.status();
    let body = response.text().await.expect("body");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

async fn readyz(client: &reqwest::Client, server: &BinServer) -> (u16, Value) {
    let response = client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("readyz JSON"))
}

/// The log size `/readyz` reports.
async fn ready_size(client: &reqwest::Client, server: &BinServer) -> u64 {
    let (status, body) = readyz(client, server).await;
    assert_eq!(status, 200, "{body}");
    body["size"].as_u64().expect("size")
}

/// Polls `/readyz` until it answers 503; returns that answer's body.
async fn wait_until_draining(client: &reqwest::Client, server: &BinServer) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = readyz(client, server).await;
        if status == 503 {
            return body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "/readyz still 200 {WAIT:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

pub fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("read dir").count()
}

/// Every entry under `dir`: path, whether it is a directory, permission bits.
pub fn walk(dir: &Path, found: &mut Vec<(PathBuf, bool, u32)>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        found.push((
            path.clone(),
            meta.is_dir(),
            meta.permissions().mode() & 0o777,
        ));
        if meta.is_dir() {
            walk(&path, found);
        }
    }
}

/// Asserts that every directory under `root` is 0700 and every file 0600.
pub fn assert_private(root: &Path) {
    let mut found = Vec::new();
    walk(root, &mut found);
    let files = found.iter().filter(|(_, is_dir, _)| !is_dir).count();
    assert!(files >= 2, "the key and the log: {found:?}");
    let wrong: Vec<String> = found
        .iter()
        .filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .map(|(path, is_dir, mode)| {
            format!("{} ({}) {mode:o}", path.display(), dir_or_file(*is_dir))
        })
        .collect();
    assert!(wrong.is_empty(), "not private: {wrong:#?}");
}

/// `keyledger_draining` from `/metrics`.
async fn draining_gauge(client: &reqwest::Client, server: &BinServer) -> Option<f64> {
    let response = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    metric(
        &response.text().await.expect("metrics"),
        "keyledger_draining",
    )
}

pub fn dir_or_file(is_dir: bool) -> &'static str {
    if is_dir { "dir" } else { "file" }
}
