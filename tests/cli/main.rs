//! The admin CLI (`keyledger keys|users|tokens|audit|whoami`) as an operator runs it: the
//! real binary against a real `keyledger serve` started with [`BinServer`], no mocks.
//!
//! Every command's success path (tables for people, `--format json` parsed back and
//! compared with what the API itself answers), every exit code (1 refused, 2 usage, 3 not
//! found, 4 authentication, 5 unreachable), confirmations, secrets shown once, private
//! token files, and the compliance workflow `audit export -o FILE` then `keyledger verify`.
//! A refused command must change nothing: the log's size (`/readyz`) is compared before and
//! after.

#[path = "../common/bin_server.rs"]
mod bin_server;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::bin_server::{BinServer, bin_client};

/// The longest one CLI command may run before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A running server, its bootstrap admin secret and an HTTP client for checking what the
/// CLI did through the API itself.
struct Env {
    server: BinServer,
    admin: String,
    http: reqwest::Client,
    tmp: tempfile::TempDir,
}

impl Env {
    /// A fresh server on a fresh data dir. Activity summaries are appended once a day, so
    /// the log's size changes only when a command changes something.
    fn start() -> Env {
        let tmp = tempfile::tempdir().expect("temp dir");
        let server = BinServer::start(&tmp.path().join("data"), &["--activity-window", "86400"])
            .expect("server starts");
        let admin = server.secret.clone().expect("bootstrap secret");
        Env {
            server,
            admin,
            http: bin_client(),
            tmp,
        }
    }

    fn addr(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// `keyledger ARGS` as the bootstrap admin (KEYLEDGER_ADDR and KEYLEDGER_TOKEN set).
    fn kl(&self, args: &[&str]) -> Run {
        self.kl_as(&self.admin, args)
    }

    /// `keyledger ARGS` with `token` in KEYLEDGER_TOKEN.
    fn kl_as(&self, token: &str, args: &[&str]) -> Run {
        run(keyledger(args)
            .env("KEYLEDGER_ADDR", self.addr())
            .env("KEYLEDGER_TOKEN", token))
    }

    /// `GET path` with `token`: the status, the JSON body and the ETag.
    async fn api_as(&self, token: &str, path: &str) -> (u16, Value, Option<String>) {
        let response = self
            .http
            .get(self.server.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.text().await.expect("body");
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, settled(value), etag)
    }

    /// `GET path` as the admin; must answer 200.
    async fn api(&self, path: &str) -> Value {
        let (status, body, _) = self.api_as(&self.admin, path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `GET path` as the admin, the raw body.
    async fn api_text(&self, path: &str) -> String {
        let response = self
            .http
            .get(self.server.url(path))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.text().await.expect("body")
    }

    /// `POST path` with a JSON body as the admin; must answer 201.
    async fn create(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(self.server.url(path))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status().as_u16(), 201, "POST {path}");
        settled(response.json().await.expect("JSON"))
    }

    /// The log's size, from `/readyz`.
    async fn size(&self) -> u64 {
        let ready: Value = self
            .http
            .get(self.server.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("JSON");
        ready["size"].as_u64().expect("size")
    }
}

/// `value` without its `last_used_at` fields: every request moves its credential's (and
/// its user's), so two reads a moment apart differ there and nowhere else.
fn settled(mut value: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("last_used_at");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

/// `keyledger ARGS` with no `KEYLEDGER_*` or proxy variable from the test's environment.
fn keyledger(args: &[&str]) -> Process {
    let mut command = Process::new(env!("CARGO_BIN_EXE_keyledger"));
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy().to_ascii_lowercase();
        if key_text.starts_with("keyledger_") || key_text.ends_with("_proxy") {
            command.env_remove(key);
        }
    }
    command.args(args);
    command
}

/// What a command did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts the exit code, showing the output when it differs.
    fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "exit code; {self:#?}");
        self
    }

    /// Standard output as JSON (see [`settled`]).
    fn json(&self) -> Value {
        settled(
            serde_json::from_str(&self.stdout)
                .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:#?}")),
        )
    }
}

/// Runs `command` with standard input not a terminal, within [`RUN_LIMIT`].
fn run(command: &mut Process) -> Run {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keyledger");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(RUN_LIMIT) {
        Ok(output) => output.expect("collect the output"),
        Err(_) => {
            let _ = Process::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("{command:?} still running after {RUN_LIMIT:?}");
        }
    };
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A port on 127.0.0.1 that nobody listens on (bound, then released).
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

fn key_path(id: &str) -> String {
    format!("/v1/admin/api-keys/{id}")
}

// ---------------------------------------------------------------------------------------
// keys
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn keys_commands_change_keys_as_the_api_shows() {
    let env = Env::start();

    // create: the API's object, unchanged, and the key exists as shown.
    let created = env
        .kl(&[
            "keys",
            "create",
            "ci-bot",
            "--role",
            "basic",
            "--expires-at",
            "2098-01-01T00:00:00Z",
            "--format",
            "json",
        ])
        .expect(0)
        .json();
    let id = created["api_key"]["id"].as_str().expect("id").to_string();
    assert_eq!(created["api_key"]["name"], "ci-bot");
    assert_eq!(created["api_key"]["role"], "basic");
    assert!(
        created["secret"]
            .as_str()
            .expect("secret")
            .starts_with("klk_")
    );
    let stored = env.api(&key_path(&id)).await;
    assert_eq!(stored["api_key"], created["api_key"]);

    // show: JSON equals the API's answer; the table names the fields.
    let shown = env.kl(&["keys", "show", &id, "--format", "json"]).expect(0);
    assert_eq!(shown.json(), env.api(&key_path(&id)).await);
    let table = env.kl(&["keys", "show", &id]).expect(0).stdout;
    for expected in [
        id.as_str(),
        "ci-bot",
        "basic",
        "active",
        "2098-01-01T00:00:00Z",
    ] {
        assert!(table.contains(expected), "{expected} in {table}");
    }
    let display = stored["api_key"]["display"].as_str().expect("display");
    assert!(table.contains(display), "the masked secret in {table}");

    // list: a table with a header and one line per key, and JSON equal to the API's.
    let listed = env.kl(&["keys", "list"]).expect(0).stdout;
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "header, bootstrap and ci-bot: {listed}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("NAME"),
        "{listed}"
    );
    let name_column = lines[0].find("NAME").expect("NAME column");
    assert!(
        lines[2][name_column..].starts_with("ci-bot"),
        "aligned columns: {listed}"
    );
    let listed = env
        .kl(&["keys", "list", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(listed, env.api("/v1/admin/api-keys?limit=1000").await);

    // rename, set-role, set-expiry (a time, then never): each answer is the API's key.
    let renamed = env
        .kl(&["keys", "rename", &id, "deploy-bot", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(renamed["api_key"]["name"], "deploy-bot");
    let reroled = env
        .kl(&["keys", "set-role", &id, "limited", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(reroled["api_key"]["role"], "limited");
    let expiring = env
        .kl(&[
            "keys",
            "set-expiry",
            &id,
            "2099-01-01T00:00:00Z",
            "--format",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(
        expiring["api_key"]["expires_at"],
        "2099-01-01T00:00:00.000000Z"
    );
    let never = env
        .kl(&["keys", "set-expiry", &id, "never", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(never["api_key"]["expires_at"], Value::Null);
    assert_eq!(env.api(&key_path(&id)).await["api_key"], never["api_key"]);

    // regenerate with a grace period: a new secret, the previous one valid a while.
    let regenerated = env
        .kl(&[
            "keys",
            "regenerate",
            &id,
            "--grace-seconds",
            "60",
            "--format",
            "json",
        ])
        .expect(0)
        .json();
    assert_ne!(regenerated["secret"], created["secret"]);
    assert!(regenerated["api_key"]["previous_valid_until"].is_string());

    // disable, enable (tables).
    let disabled = env.kl(&["keys", "disable", &id]).expect(0).stdout;
    assert!(disabled.contains("disabled"), "{disabled}");
    assert_eq!(
        env.api(&key_path(&id)).await["api_key"]["status"],
        "disabled"
    );
    env.kl(&["keys", "enable", &id]).expect(0);
    assert_eq!(env.api(&key_path(&id)).await["api_key"]["status"], "active");

    // --if-match: the current ETag (or its bare version) goes through.
    let (_, _, etag) = env.api_as(&env.admin, &key_path(&id)).await;
    let etag = etag.expect("ETag");
    env.kl(&["keys", "rename", &id, "etag-bot", "--if-match", &etag])
        .expect(0);
    let version = env.api(&key_path(&id)).await["api_key"]["version"]
        .as_u64()
        .expect("version");
    env.kl(&[
        "keys",
        "set-role",
        &id,
        "basic",
        "--if-match",
        &version.to_string(),
    ])
    .expect(0);

    // delete --yes: deleted, and said so.
    let deleted = env.kl(&["keys", "delete", &id, "--yes"]).expect(0).stdout;
    assert!(deleted.contains(&id), "{deleted}");
    assert_eq!(
        env.api(&key_path(&id)).await["api_key"]["status"],
        "deleted"
    );
    let deleted_json = env.kl(&["keys", "list", "--status", "deleted", "--format", "json"]);
    let deleted_json = deleted_json.expect(0).json();
    assert_eq!(deleted_json["api_keys"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_list_pages_through_everything_or_gives_one_page() {
    let env = Env::start();
    for name in ["alpha", "bravo", "charlie", "delta", "echo"] {
        env.create("/v1/admin/api-keys", json!({"name": name, "role": "basic"}))
            .await;
    }
    let everything = env.api("/v1/admin/api-keys?limit=1000").await;
    assert_eq!(everything["api_keys"].as_array().map(Vec::len), Some(6));

    // Every page, two at a time: the same keys as one big page, and no cursor left.
    let paged = env
        .kl(&["keys", "list", "--page-size", "2", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(paged, everything);
    let table = env.kl(&["keys", "list", "--page-size", "2"]).expect(0);
    assert_eq!(table.stdout.lines().count(), 7, "{table:#?}");

    // One page with --limit: the API's page, unchanged, cursor included.
    let first = env
        .kl(&["keys", "list", "--limit", "2", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(first, env.api("/v1/admin/api-keys?limit=2").await);
    let next = first["next_after"].as_str().expect("a next page");
    let second = env
        .kl(&[
            "keys", "list", "--limit", "2", "--after", next, "--format", "json",
        ])
        .expect(0)
        .json();
    assert_eq!(
        second,
        env.api(&format!("/v1/admin/api-keys?limit=2&after={next}"))
            .await
    );
    let one_page = env.kl(&["keys", "list", "--limit", "2"]).expect(0);
    assert!(
        one_page.stderr.contains(&format!("--after {next}")),
        "{one_page:#?}"
    );

    // --q, --sort and --status pass through.
    let found = env
        .kl(&["keys", "list", "--q", "HARL", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(found, env.api("/v1/admin/api-keys?q=HARL&limit=1000").await);
    assert_eq!(found["api_keys"][0]["name"], "charlie");
    let sorted = env
        .kl(&["keys", "list", "--sort", "-name", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(
        sorted,
        env.api("/v1/admin/api-keys?sort=-name&limit=1000").await
    );
    assert_eq!(sorted["api_keys"][0]["name"], "echo");
    let id = everything["api_keys"][1]["id"].as_str().expect("id");
    env.kl(&["keys", "disable", id]).expect(0);
    let disabled = env
        .kl(&["keys", "list", "--status", "disabled", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(
        disabled,
        env.api("/v1/admin/api-keys?status=disabled&limit=1000")
            .await
    );
    assert_eq!(disabled["api_keys"].as_array().map(Vec::len), Some(1));
}

// ---------------------------------------------------------------------------------------
// users, tokens, whoami
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn users_tokens_and_whoami_commands_match_the_api() {
    let env = Env::start();

    // users register, show, list, set-role.
    let user = env
        .kl(&[
            "users",
            "register",
            "Ada@Example.org",
            "--role",
            "basic",
            "--format",
            "json",
        ])
        .expect(0)
        .json();
    let user_id = user["user"]["id"].as_str().expect("id").to_string();
    assert_eq!(user["user"]["email"], "ada@example.org");
    let user_path = format!("/v1/admin/users/{user_id}");
    assert_eq!(env.api(&user_path).await, user);
    let shown = env
        .kl(&["users", "show", &user_id, "--format", "json"])
        .expect(0);
    assert_eq!(shown.json(), user);
    let table = env.kl(&["users", "show", &user_id]).expect(0).stdout;
    assert!(
        table.contains("ada@example.org") && table.contains("basic"),
        "{table}"
    );
    let listed = env
        .kl(&["users", "list", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(listed, env.api("/v1/admin/users?limit=1000").await);
    let listed = env.kl(&["users", "list", "--q", "ada"]).expect(0).stdout;
    assert!(
        listed.lines().count() == 2 && listed.contains(&user_id),
        "{listed}"
    );
    let reroled = env
        .kl(&["users", "set-role", &user_id, "auditor", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(reroled["user"]["role"], "auditor");
    assert_eq!(env.api(&user_path).await, reroled);

    // tokens create --user (the secret once), list, show.
    let token = env
        .kl(&[
            "tokens",
            "create",
            "laptop",
            "--user",
            &user_id,
            "--expires-in-days",
            "7",
            "--format",
            "json",
        ])
        .expect(0)
        .json();
    let token_id = token["token"]["id"].as_str().expect("id").to_string();
    let pat = token["secret"].as_str().expect("secret").to_string();
    assert!(pat.starts_with("klp_"));
    let token_path = format!("/v1/admin/tokens/{token_id}");
    assert_eq!(env.api(&token_path).await["token"], token["token"]);
    let shown = env
        .kl(&["tokens", "show", &token_id, "--format", "json"])
        .expect(0);
    assert_eq!(shown.json(), env.api(&token_path).await);
    let listed = env
        .kl(&["tokens", "list", "--user", &user_id, "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(
        listed,
        env.api(&format!("/v1/admin/users/{user_id}/tokens?limit=1000"))
            .await
    );
    let table = env
        .kl(&["tokens", "list", "--user", &user_id])
        .expect(0)
        .stdout;
    assert!(
        table.contains("laptop") && table.contains("klp_****"),
        "{table}"
    );

    // whoami, as the admin key and as the user's token.
    let me = env.kl(&["whoami", "--format", "json"]).expect(0).json();
    assert_eq!(me, env.api("/v1/me").await);
    assert_eq!(me["principal"]["kind"], "service_account");
    let me = env.kl_as(&pat, &["whoami"]).expect(0).stdout;
    assert!(
        me.contains("ada@example.org") && me.contains("auditor") && me.contains(&token_id),
        "{me}"
    );

    // --mine: the user's own tokens.
    let mine = env
        .kl_as(
            &pat,
            &["tokens", "create", "ci", "--mine", "--format", "json"],
        )
        .expect(0)
        .json();
    let mine_id = mine["token"]["id"].as_str().expect("id").to_string();
    let listed = env
        .kl_as(&pat, &["tokens", "list", "--mine", "--format", "json"])
        .expect(0)
        .json();
    let (status, api_list, _) = env.api_as(&pat, "/v1/me/tokens?limit=1000").await;
    assert_eq!(status, 200);
    assert_eq!(listed, api_list);
    assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(2));
    let shown = env
        .kl_as(
            &pat,
            &["tokens", "show", &mine_id, "--mine", "--format", "json"],
        )
        .expect(0)
        .json();
    assert_eq!(shown["token"]["name"], "ci");
    env.kl_as(&pat, &["tokens", "revoke", &mine_id, "--mine", "--yes"])
        .expect(0);
    let (_, revoked, _) = env.api_as(&pat, &format!("/v1/me/tokens/{mine_id}")).await;
    assert_eq!(revoked["token"]["status"], "revoked");

    // tokens revoke (admin) and users deactivate, with --yes.
    let out = env.kl(&["tokens", "revoke", &token_id, "--yes"]).expect(0);
    assert!(out.stdout.contains(&token_id), "{out:#?}");
    assert_eq!(env.api(&token_path).await["token"]["status"], "revoked");
    let out = env
        .kl(&["users", "deactivate", &user_id, "--yes"])
        .expect(0);
    assert!(out.stdout.contains(&user_id), "{out:#?}");
    assert_eq!(env.api(&user_path).await["user"]["status"], "deactivated");
}

// ---------------------------------------------------------------------------------------
// audit
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn audit_commands_match_the_api() {
    let env = Env::start();
    let created = env
        .create(
            "/v1/admin/api-keys",
            json!({"name": "audited", "role": "basic"}),
        )
        .await;
    let id = created["api_key"]["id"].as_str().expect("id").to_string();
    env.kl(&["keys", "rename", &id, "audited-2"]).expect(0);

    // events: one page as the API pages it, newest first, every page, filters.
    let events = env
        .kl(&["audit", "events", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(events, env.api("/v1/audit/events").await);
    let all = env
        .kl(&[
            "audit", "events", "--all", "--limit", "1", "--format", "json",
        ])
        .expect(0)
        .json();
    assert_eq!(all, env.api("/v1/audit/events?limit=1000").await);
    let size = env.size().await;
    assert_eq!(all["events"].as_array().map(|e| e.len() as u64), Some(size));
    let newest = env
        .kl(&[
            "audit", "events", "--order", "desc", "--limit", "2", "--format", "json",
        ])
        .expect(0)
        .json();
    assert_eq!(newest, env.api("/v1/audit/events?order=desc&limit=2").await);
    let newest_all = env
        .kl(&[
            "audit", "events", "--order", "desc", "--all", "--limit", "2", "--format", "json",
        ])
        .expect(0)
        .json();
    assert_eq!(
        newest_all["events"].as_array().map(|e| e.len() as u64),
        Some(size)
    );
    assert_eq!(newest_all["next_before"], Value::Null);
    let typed = env
        .kl(&[
            "audit",
            "events",
            "--type",
            "api_key.renamed",
            "--format",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(
        typed,
        env.api("/v1/audit/events?type=api_key.renamed").await
    );
    assert_eq!(typed["events"].as_array().map(Vec::len), Some(1));
    let table = env.kl(&["audit", "events"]).expect(0).stdout;
    assert!(
        table.starts_with("SEQ")
            && table.contains("ledger.initialized")
            && table.contains("api_key.renamed"),
        "{table}"
    );

    // history: the key's entries.
    let history = env
        .kl(&["audit", "history", &id, "--format", "json"])
        .expect(0);
    assert_eq!(
        history.json(),
        env.api(&format!("/v1/audit/api-keys/{id}/history")).await
    );
    let table = env.kl(&["audit", "history", &id]).expect(0).stdout;
    assert!(table.contains("audited -> audited-2"), "{table}");

    // activity: the principal's counts (none yet: summaries come once a day here).
    let activity = env
        .kl(&["audit", "activity", &id, "--format", "json"])
        .expect(0);
    assert_eq!(
        activity.json(),
        env.api(&format!("/v1/audit/principals/{id}/activity"))
            .await
    );
    let table = env.kl(&["audit", "activity", &id]).expect(0).stdout;
    assert!(table.contains(&id) && table.contains("DAY"), "{table}");

    // checkpoint: the note as served.
    let note = env.kl(&["audit", "checkpoint"]).expect(0).stdout;
    assert_eq!(note, env.api_text("/v1/audit/checkpoint").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_export_to_a_file_then_the_printed_verify_command_passes() {
    let env = Env::start();
    env.create(
        "/v1/admin/api-keys",
        json!({"name": "exported", "role": "basic"}),
    )
    .await;
    let file = env.tmp.path().join("audit.ndjson");
    let file_arg = file.to_str().expect("utf-8 path");

    // Export to a file: private, exactly the API's export, and the follow-up printed.
    let out = env.kl(&["audit", "export", "-o", file_arg]).expect(0);
    let mode = std::fs::metadata(&file)
        .expect("export written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let exported = std::fs::read_to_string(&file).expect("read export");
    assert_eq!(exported, env.api_text("/v1/audit/export").await);
    let size = env.size().await;
    assert_eq!(exported.lines().count() as u64, size);
    let leftovers: Vec<_> = std::fs::read_dir(env.tmp.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary file left: {leftovers:?}"
    );
    let vkey = env.api("/v1/audit/public-key").await["vkey"]
        .as_str()
        .expect("vkey")
        .to_string();
    let expected = format!("keyledger verify {file_arg} --vkey {vkey}");
    let command = out
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("keyledger verify"))
        .unwrap_or_else(|| panic!("a verify command: {out:#?}"));
    assert_eq!(command, expected);

    // The printed command, run as printed: the export verifies.
    let words: Vec<&str> = command.split_whitespace().skip(1).collect();
    let verified = run(&mut keyledger(&words)).expect(0);
    assert!(verified.stdout.starts_with("ok:"), "{verified:#?}");

    // JSON: a summary with the same command; to standard output: the export itself.
    let again = env.tmp.path().join("again.ndjson");
    let again_arg = again.to_str().expect("utf-8 path");
    let summary = env
        .kl(&["audit", "export", "-o", again_arg, "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(summary["entries"], size);
    assert_eq!(summary["vkey"], vkey.as_str());
    assert_eq!(
        summary["verify"],
        format!("keyledger verify {again_arg} --vkey {vkey}")
    );
    let piped = env.kl(&["audit", "export"]).expect(0);
    assert_eq!(piped.stdout, exported);
    assert!(piped.stderr.contains("keyledger verify"), "{piped:#?}");
    let tail = env.kl(&["audit", "export", "--after", "0"]).expect(0);
    assert_eq!(tail.stdout.lines().count() as u64, size - 1);
    assert!(
        tail.stderr.contains("not verifiable on its own"),
        "no verify command for a tail: {tail:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// Exit codes
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn refusals_exit_with_their_code_and_change_nothing() {
    let env = Env::start();
    let basic = env
        .create(
            "/v1/admin/api-keys",
            json!({"name": "taken", "role": "basic"}),
        )
        .await;
    let basic_id = basic["api_key"]["id"].as_str().expect("id").to_string();
    let basic_secret = basic["secret"].as_str().expect("secret").to_string();
    let size = env.size().await;
    let unknown = Uuid::now_v7().to_string();

    // 3: unknown ids.
    for args in [
        vec!["keys", "show", unknown.as_str()],
        vec!["keys", "rename", unknown.as_str(), "x"],
        vec!["keys", "delete", unknown.as_str(), "--yes"],
        vec!["users", "show", unknown.as_str()],
        vec!["tokens", "show", unknown.as_str()],
        vec!["tokens", "list", "--user", unknown.as_str()],
        vec!["audit", "history", unknown.as_str()],
    ] {
        let out = env.kl(&args).expect(3);
        assert!(out.stderr.contains("not_found"), "{args:?}: {out:#?}");
    }

    // 4: a basic key's secret on admin routes (403), a wrong secret (401).
    let out = env.kl_as(&basic_secret, &["keys", "list"]).expect(4);
    assert!(out.stderr.contains("forbidden"), "{out:#?}");
    env.kl_as(
        &basic_secret,
        &["keys", "create", "sneaky", "--role", "admin"],
    )
    .expect(4);
    env.kl_as(&basic_secret, &["audit", "events"]).expect(4);
    let out = env
        .kl_as(
            "klk_notarealsecretatallxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            &["whoami"],
        )
        .expect(4);
    assert!(out.stderr.contains("unauthorized"), "{out:#?}");

    // 1: a name taken, a stale --if-match, an invalid value the server refuses.
    let out = env
        .kl(&["keys", "create", "TAKEN", "--role", "basic"])
        .expect(1);
    assert!(out.stderr.contains("name_taken"), "{out:#?}");
    let out = env
        .kl(&[
            "keys",
            "rename",
            &basic_id,
            "renamed",
            "--if-match",
            "\"7\"",
        ])
        .expect(1);
    assert!(out.stderr.contains("version_mismatch"), "{out:#?}");
    let out = env
        .kl(&["keys", "delete", &basic_id, "--yes", "--if-match", "99"])
        .expect(1);
    assert!(out.stderr.contains("version_mismatch"), "{out:#?}");
    let out = env
        .kl(&["keys", "set-expiry", &basic_id, "2001-01-01T00:00:00Z"])
        .expect(1);
    assert!(out.stderr.contains("HTTP 422"), "{out:#?}");

    // 2: bad flags and arguments, no credential.
    for args in [
        vec!["keys", "create", "x", "--role", "superuser"],
        vec!["keys", "create", "x"],
        vec!["keys", "show", "not-a-uuid"],
        vec!["keys", "frobnicate"],
        vec!["keys", "list", "--limit", "0"],
        vec!["keys", "list", "--sort", "size"],
        vec!["keys", "rename", basic_id.as_str(), "x", "--if-match", "v3"],
        vec!["keys", "list", "--format", "yaml"],
        vec!["tokens", "list"],
        vec!["tokens", "list", "--mine", "--user", basic_id.as_str()],
        vec!["users", "register", "a@b.c", "--role", "root"],
    ] {
        env.kl(&args).expect(2);
    }
    let out = run(keyledger(&["keys", "list"]).env("KEYLEDGER_ADDR", env.addr())).expect(2);
    assert!(out.stderr.contains("KEYLEDGER_TOKEN"), "{out:#?}");
    env.kl(&["keys", "list", "--addr", "ftp://127.0.0.1:1"])
        .expect(2);

    // Nothing above changed the log, and the key is as it was.
    assert_eq!(env.size().await, size);
    assert_eq!(
        env.api(&key_path(&basic_id)).await["api_key"],
        basic["api_key"]
    );
}

#[test]
fn an_unreachable_or_silent_server_exits_5() {
    // Connection refused.
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let out = run(&mut keyledger(&[
        "keys", "list", "--addr", &dead, "--token", "klk_x",
    ]))
    .expect(5);
    assert!(out.stderr.contains("cannot reach"), "{out:#?}");
    run(&mut keyledger(&[
        "whoami", "--addr", &dead, "--token", "klk_x",
    ]))
    .expect(5);

    // A listener that never answers: the timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = format!("http://{}", silent.local_addr().expect("addr"));
    let started = Instant::now();
    let out = run(&mut keyledger(&[
        "keys",
        "list",
        "--addr",
        &addr,
        "--token",
        "klk_x",
        "--timeout",
        "1",
    ]))
    .expect(5);
    assert!(out.stderr.contains("no answer"), "{out:#?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(silent);
}

#[test]
fn a_server_answering_503_exits_5() {
    // A real server at its connection limit answers one more connection 503.
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = BinServer::start(&tmp.path().join("data"), &["--max-connections", "1"])
        .expect("server starts");
    let admin = server.secret.clone().expect("bootstrap secret");
    let held = std::net::TcpStream::connect(&server.addr).expect("hold the one connection");
    std::thread::sleep(Duration::from_millis(200));
    let addr = format!("http://{}", server.addr);

    let out = run(&mut keyledger(&[
        "whoami", "--addr", &addr, "--token", &admin,
    ]))
    .expect(5);

    assert!(
        out.stderr.contains("too_many_connections") && out.stderr.contains("HTTP 503"),
        "{out:#?}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn destructive_commands_without_yes_on_a_non_terminal_exit_2_and_change_nothing() {
    let env = Env::start();
    let key = env
        .create(
            "/v1/admin/api-keys",
            json!({"name": "keep-me", "role": "basic"}),
        )
        .await;
    let key_id = key["api_key"]["id"].as_str().expect("id").to_string();
    let user = env
        .create(
            "/v1/admin/users",
            json!({"email": "keep@example.org", "role": "basic"}),
        )
        .await;
    let user_id = user["user"]["id"].as_str().expect("id").to_string();
    let token = env
        .create(
            &format!("/v1/admin/users/{user_id}/tokens"),
            json!({"name": "keep"}),
        )
        .await;
    let token_id = token["token"]["id"].as_str().expect("id").to_string();
    let size = env.size().await;

    for args in [
        vec!["keys", "delete", key_id.as_str()],
        vec!["users", "deactivate", user_id.as_str()],
        vec!["tokens", "revoke", token_id.as_str()],
    ] {
        let out = env.kl(&args).expect(2);
        assert!(out.stderr.contains("--yes"), "{args:?}: {out:#?}");
        assert!(out.stdout.is_empty(), "{out:#?}");
    }

    assert_eq!(env.size().await, size);
    assert_eq!(
        env.api(&key_path(&key_id)).await["api_key"]["status"],
        "active"
    );
    assert_eq!(
        env.api(&format!("/v1/admin/users/{user_id}")).await["user"]["status"],
        "active"
    );
    assert_eq!(
        env.api(&format!("/v1/admin/tokens/{token_id}")).await["token"]["status"],
        "active"
    );
}

// ---------------------------------------------------------------------------------------
// Secrets and credentials
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_printed_once_on_stdout_and_never_again() {
    let env = Env::start();
    let user = env
        .create(
            "/v1/admin/users",
            json!({"email": "sec@example.org", "role": "basic"}),
        )
        .await;
    let user_id = user["user"]["id"].as_str().expect("id").to_string();

    // Each command that makes a secret, in both formats.
    let mut secrets = Vec::new();
    let mut key_ids = Vec::new();
    for format in ["table", "json"] {
        let name = format!("secret-{format}");
        let created = env
            .kl(&[
                "keys", "create", &name, "--role", "basic", "--format", format,
            ])
            .expect(0);
        let key = env.api(&format!("/v1/admin/api-keys?q={name}")).await["api_keys"][0].clone();
        let id = key["id"].as_str().expect("id").to_string();
        let regenerated = env
            .kl(&["keys", "regenerate", &id, "--format", format])
            .expect(0);
        let token = env
            .kl(&[
                "tokens", "create", &name, "--user", &user_id, "--format", format,
            ])
            .expect(0);
        for out in [created, regenerated, token] {
            let secret = out
                .stdout
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .find(|w| w.len() == 53 && (w.starts_with("klk_") || w.starts_with("klp_")))
                .unwrap_or_else(|| panic!("a secret on stdout: {out:#?}"))
                .to_string();
            assert_eq!(count(&out.stdout, &secret), 1, "once on stdout: {out:#?}");
            assert!(!out.stderr.contains(&secret), "not on stderr: {out:#?}");
            assert!(out.stderr.contains("shown only this once"), "{out:#?}");
            secrets.push(secret);
        }
        key_ids.push(id);
    }
    assert_eq!(secrets.len(), 6);

    // Nothing later shows them again.
    let mut later = Vec::new();
    for format in ["table", "json"] {
        later.push(env.kl(&["keys", "list", "--format", format]).expect(0));
        later.push(
            env.kl(&["tokens", "list", "--user", &user_id, "--format", format])
                .expect(0),
        );
        later.push(
            env.kl(&["audit", "events", "--all", "--format", format])
                .expect(0),
        );
        for id in &key_ids {
            later.push(env.kl(&["keys", "show", id, "--format", format]).expect(0));
        }
    }
    for out in &later {
        for secret in &secrets {
            assert!(
                !out.stdout.contains(secret.as_str()) && !out.stderr.contains(secret.as_str()),
                "a secret shown again: {out:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_files_must_be_private_and_tokens_are_never_printed() {
    let env = Env::start();
    let file = env.tmp.path().join("token");
    std::fs::write(&file, format!("  {}\n\n", env.admin)).expect("write token file");
    let file_arg = file.to_str().expect("utf-8 path");
    let addr = env.addr();

    // 0644: refused before anything is sent, without printing the token.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let size = env.size().await;
    let out = run(&mut keyledger(&[
        "keys",
        "create",
        "via-file",
        "--role",
        "basic",
        "--addr",
        &addr,
        "--token-file",
        file_arg,
    ]))
    .expect(2);
    assert!(
        out.stderr.contains("0644") && out.stderr.contains("chmod 600"),
        "{out:#?}"
    );
    assert!(!out.stderr.contains(&env.admin) && !out.stdout.contains(&env.admin));
    assert_eq!(env.size().await, size);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    run(&mut keyledger(&[
        "whoami",
        "--addr",
        &addr,
        "--token-file",
        file_arg,
    ]))
    .expect(2);

    // 0600: accepted, whitespace stripped; ahead of a wrong KEYLEDGER_TOKEN.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = run(
        keyledger(&["whoami", "--addr", &addr, "--token-file", file_arg])
            .env("KEYLEDGER_TOKEN", "klk_wrong"),
    )
    .expect(0);
    assert!(out.stdout.contains("admin"), "{out:#?}");
    assert!(!out.stdout.contains(&env.admin) && !out.stderr.contains(&env.admin));

    // The token is never shown by --help, errors or debug output.
    for args in [
        vec!["keys", "--help"],
        vec!["keys", "list", "--help"],
        vec!["keys", "show", "not-a-uuid"],
    ] {
        let out = env.kl(&args);
        assert!(
            !out.stdout.contains(&env.admin) && !out.stderr.contains(&env.admin),
            "{args:?}: {out:#?}"
        );
    }
    let refused = env
        .kl(&["keys", "show", &Uuid::now_v7().to_string()])
        .expect(3);
    assert!(!refused.stderr.contains(&env.admin));
}

#[test]
fn help_documents_the_commands_and_exit_codes() {
    let top = run(&mut keyledger(&["--help"])).expect(0).stdout;
    for command in [
        "serve",
        "verify",
        "check",
        "recover-admin",
        "keys",
        "users",
        "tokens",
        "audit",
        "whoami",
    ] {
        assert!(top.contains(command), "{command} in {top}");
    }
    for args in [
        vec!["--help"],
        vec!["keys", "--help"],
        vec!["users", "--help"],
        vec!["tokens", "--help"],
        vec!["audit", "--help"],
        vec!["whoami", "--help"],
    ] {
        let help = run(&mut keyledger(&args)).expect(0).stdout;
        for code in [
            "0  ok",
            "1  the server refused",
            "2  usage",
            "3  not found",
            "4  authentication",
            "5  server unreachable",
        ] {
            assert!(help.contains(code), "{args:?} documents `{code}`: {help}");
        }
    }
    let keys = run(&mut keyledger(&["keys", "--help"])).expect(0).stdout;
    for command in [
        "create",
        "list",
        "show",
        "rename",
        "set-role",
        "set-expiry",
        "regenerate",
        "disable",
        "enable",
        "delete",
    ] {
        assert!(keys.contains(command), "{command} in {keys}");
    }
}
