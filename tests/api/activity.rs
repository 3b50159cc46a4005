//! Activity windows: verifications and authenticated requests are counted in memory and
//! summarised as one `credential.activity` event per credential per window, keyed by the
//! policy pattern (or the API route) that decided. Windows close on the timer and on a
//! clean shutdown of the real binary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keyledger::crypto::seal;
use keyledger::domain::events::CredentialActivity;
use keyledger::domain::{Actor, Clock, Entry, EventData, Stream};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::bin_server::{BinServer, bin_client};
use crate::crash::{check_data_dir, read_log};
use crate::helpers::TestApp;

/// `(method, route, outcome) -> count`.
type Counts = BTreeMap<(String, String, String), u64>;

fn counts_of(activity: &CredentialActivity) -> Counts {
    let mut counts = Counts::new();
    for c in &activity.counts {
        let previous = counts.insert(
            (c.method.clone(), c.route.clone(), c.outcome.clone()),
            c.count,
        );
        assert!(previous.is_none(), "a counter appears twice: {activity:?}");
    }
    counts
}

fn expected(items: &[(&str, &str, &str, u64)]) -> Counts {
    items
        .iter()
        .map(|(m, r, o, n)| ((m.to_string(), r.to_string(), o.to_string()), *n))
        .collect()
}

/// Entries of the in-process ledger from `from` on.
fn entries_from(app: &TestApp, from: u64) -> Vec<Entry> {
    app.stored(from)
        .into_iter()
        .map(|(_, bytes)| seal::parse(&bytes).expect("entry parses").0)
        .collect()
}

/// The `credential.activity` events among `entries`, by credential id (asserting exactly
/// one per credential).
fn activity_by_credential(entries: &[Entry]) -> BTreeMap<Uuid, (Entry, CredentialActivity)> {
    let mut found = BTreeMap::new();
    for entry in entries {
        if let EventData::CredentialActivity(d) = &entry.data {
            assert_eq!(entry.stream, Stream::Activity(d.credential_id));
            assert_eq!(entry.actor, Actor::system());
            let previous = found.insert(d.credential_id, (entry.clone(), d.clone()));
            assert!(
                previous.is_none(),
                "two activity events for {} in one window",
                d.credential_id
            );
        }
    }
    found
}

fn id_of(value: &Value) -> Uuid {
    value["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .expect("a UUID id")
}

/// The version part of an ETag `"<version>.<digest>"`.
fn etag_version(etag: &str) -> &str {
    etag.trim_matches('"').split('.').next().unwrap_or("")
}

async fn get_key(app: &TestApp, id: Uuid) -> (Value, String) {
    let response = app
        .get(&format!("/v1/admin/api-keys/{id}"), Some(&app.admin))
        .await;
    assert_eq!(response.status(), 200);
    let etag = response
        .headers()
        .get("etag")
        .expect("ETag")
        .to_str()
        .expect("ascii ETag")
        .to_string();
    let body: Value = response.json().await.expect("json");
    (body["api_key"].clone(), etag)
}

pub async fn a_window_becomes_one_summary_per_credential() {
    let app = TestApp::spawn().await;
    let (basic, basic_secret) = app.create_key("activity-basic", "basic").await;
    let (limited, limited_secret) = app.create_key("activity-limited", "limited").await;
    let (admin, admin_secret) = app.create_key("activity-admin", "admin").await;
    let (disabled, disabled_secret) = app.create_key("activity-disabled", "basic").await;
    let (idle, _) = app.create_key("activity-idle", "basic").await;
    let user = app.register_user("activity@example.com", "limited").await;
    let user_id = id_of(&user);
    let (pat, pat_secret) = app.issue_token(&user_id.to_string(), "activity").await;
    let response = app
        .post(
            &format!("/v1/admin/api-keys/{}/disable", id_of(&disabled)),
            Some(&app.admin),
            json!({}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let window_opened = app.clock.now();
    let (basic_before, basic_etag_before) = get_key(&app, id_of(&basic)).await;
    assert!(basic_before["last_used_at"].is_null(), "{basic_before}");

    for i in 0..5 {
        // The method is counted upper-cased and the path by the rule that decided, so
        // distinct URLs and spellings share one counter.
        let method = if i == 0 { "post" } else { "POST" };
        let answer = app
            .verify(&basic_secret, method, &format!("/chat/x/{i}"))
            .await;
        assert_eq!(answer["code"], "VALID");
    }
    app.clock.advance(5);
    let basic_last_use = app.clock.now();
    for _ in 0..3 {
        let answer = app.verify(&basic_secret, "GET", "/admin/x").await;
        assert_eq!(answer["code"], "FORBIDDEN");
    }
    for i in 0..4 {
        let answer = app
            .verify(
                &limited_secret,
                "POST",
                &format!("/chat/send-message?n={i}"),
            )
            .await;
        assert_eq!(answer["code"], "VALID");
    }
    for _ in 0..2 {
        let answer = app
            .verify(&limited_secret, "GET", "/chat/get-chat-session/5")
            .await;
        assert_eq!(answer["code"], "FORBIDDEN");
    }
    let answer = app.verify(&limited_secret, "GET", "/agents/3").await;
    assert_eq!(answer["code"], "VALID");
    for _ in 0..2 {
        let response = app.get("/v1/me", Some(&admin_secret)).await;
        assert_eq!(response.status(), 200);
    }
    // Refusals of a known credential count too, with the reason as outcome.
    let answer = app.verify(&disabled_secret, "GET", "/agents").await;
    assert_eq!(answer["code"], "DISABLED");
    let response = app.get("/v1/me", Some(&disabled_secret)).await;
    assert_eq!(response.status(), 401);
    // A PAT counts for its token, acting for its user.
    let answer = app.verify(&pat_secret, "GET", "/persona/1").await;
    assert_eq!(answer["code"], "VALID");
    // A basic key on an admin route of the API itself.
    let response = app.get("/v1/admin/api-keys", Some(&basic_secret)).await;
    assert_eq!(response.status(), 403);
    app.clock.advance(5);

    // Until the window closes, last_used_at is served live, from the counters.
    let (basic_live, _) = get_key(&app, id_of(&basic)).await;
    assert_eq!(basic_live["last_used_at"], json!(basic_last_use));

    let size_before = app.log_size();
    let flushed_at = app.clock.now();
    let written = app
        .state
        .activity
        .flush(&app.ledger, flushed_at)
        .await
        .expect("flush");
    let size_after = app.log_size();
    // A second flush, with nothing counted since, appends nothing.
    let again = app
        .state
        .activity
        .flush(&app.ledger, app.clock.now())
        .await
        .expect("second flush");
    assert_eq!(again, 0, "an empty window writes nothing");
    assert_eq!(app.log_size(), size_after, "an empty window writes nothing");

    let entries = entries_from(&app, size_before);
    assert_eq!(entries.len() as u64, size_after - size_before);
    assert!(
        entries
            .iter()
            .all(|e| matches!(e.data, EventData::CredentialActivity(_))),
        "a flush appends only activity events"
    );
    let found = activity_by_credential(&entries);
    assert_eq!(written, found.len(), "flush reports what it wrote");

    let bootstrap_id = Uuid::parse_str(&app.admin_id).expect("admin id");
    let pat_id = id_of(&pat);
    let mut credentials: Vec<Uuid> = found.keys().copied().collect();
    credentials.sort();
    let mut wanted = vec![
        bootstrap_id,
        id_of(&basic),
        id_of(&limited),
        id_of(&admin),
        id_of(&disabled),
        pat_id,
    ];
    wanted.sort();
    assert_eq!(credentials, wanted, "one summary per used credential");
    assert!(
        !found.contains_key(&id_of(&idle)),
        "an unused key has no summary"
    );

    let summary = |id: Uuid| -> &CredentialActivity { &found[&id].1 };
    assert_eq!(
        counts_of(summary(id_of(&basic))),
        expected(&[
            ("POST", "/**", "VALID", 5),
            ("GET", "/admin/**", "FORBIDDEN", 3),
            ("GET", "/v1/admin/api-keys", "FORBIDDEN", 1),
        ])
    );
    assert_eq!(
        counts_of(summary(id_of(&limited))),
        expected(&[
            ("POST", "/chat/*/**", "VALID", 4),
            ("GET", "(no rule)", "FORBIDDEN", 2),
            ("GET", "/agents/**", "VALID", 1),
        ])
    );
    assert_eq!(
        counts_of(summary(id_of(&admin))),
        expected(&[("GET", "/v1/me", "VALID", 2)])
    );
    assert_eq!(
        counts_of(summary(id_of(&disabled))),
        expected(&[
            ("GET", "(refused)", "DISABLED", 1),
            ("GET", "/v1/me", "DISABLED", 1),
        ])
    );
    assert_eq!(
        counts_of(summary(pat_id)),
        expected(&[("GET", "/persona/**", "VALID", 1)])
    );

    for (id, (entry, activity)) in &found {
        assert_eq!(activity.credential_id, *id);
        assert!(activity.window_start <= activity.window_end, "{activity:?}");
        assert!(
            activity.window_start <= activity.last_used_at,
            "{activity:?}"
        );
        assert!(activity.last_used_at <= activity.window_end, "{activity:?}");
        assert_eq!(activity.window_end, flushed_at, "{activity:?}");
        assert!(activity.window_start <= window_opened, "{activity:?}");
        assert_eq!(entry.version, 1, "first event of {}", entry.stream.name());
        let expected_principal = if *id == pat_id { user_id } else { *id };
        assert_eq!(activity.principal_id, expected_principal);
    }
    // All summaries of one window share its bounds.
    let bounds: Vec<_> = found
        .values()
        .map(|(_, a)| (a.window_start, a.window_end))
        .collect();
    assert!(bounds.windows(2).all(|w| w[0] == w[1]), "{bounds:?}");
    assert_eq!(summary(id_of(&basic)).last_used_at, basic_last_use);

    // The key shows the committed last_used_at; its version, and so the version part of
    // its ETag, did not move (the digest part did: the body changed).
    let (basic_after, basic_etag_after) = get_key(&app, id_of(&basic)).await;
    assert_eq!(
        basic_after["last_used_at"],
        json!(summary(id_of(&basic)).last_used_at)
    );
    assert_eq!(basic_after["version"], basic_before["version"]);
    assert_eq!(
        etag_version(&basic_etag_after),
        etag_version(&basic_etag_before)
    );
    assert_ne!(basic_etag_after, basic_etag_before);
    let (limited_after, _) = get_key(&app, id_of(&limited)).await;
    assert_eq!(
        limited_after["last_used_at"],
        json!(summary(id_of(&limited)).last_used_at)
    );
    assert_eq!(limited_after["version"], limited["version"]);

    // The PAT's and its user's last_used_at come from the same summary.
    let response = app
        .get(
            &format!("/v1/admin/users/{user_id}/tokens"),
            Some(&app.admin),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let token = body["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["id"] == pat["id"])
        .expect("the token is listed")
        .clone();
    assert_eq!(token["last_used_at"], json!(summary(pat_id).last_used_at));
    assert_eq!(token["version"], pat["version"]);
    let response = app.get("/v1/admin/users", Some(&app.admin)).await;
    let body: Value = response.json().await.expect("json");
    let listed = body["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["id"] == user["id"])
        .expect("the user is listed")
        .clone();
    assert_eq!(listed["last_used_at"], json!(summary(pat_id).last_used_at));
    assert_eq!(listed["version"], user["version"]);

    // A later window gets its own summary, as version 2 of the activity stream.
    app.clock.advance(60);
    let answer = app.verify(&basic_secret, "POST", "/chat/x").await;
    assert_eq!(answer["code"], "VALID");
    let size_before = app.log_size();
    app.state
        .activity
        .flush(&app.ledger, app.clock.now())
        .await
        .expect("flush");
    let entries = entries_from(&app, size_before);
    let found = activity_by_credential(&entries);
    let (entry, activity) = &found[&id_of(&basic)];
    assert_eq!(entry.version, 2);
    assert_eq!(
        counts_of(activity),
        expected(&[("POST", "/**", "VALID", 1)])
    );
    // The window opened with the first use after the last close (the admin's reads).
    assert!(activity.window_start >= flushed_at, "{activity:?}");
    assert!(activity.last_used_at > flushed_at, "{activity:?}");
    let (basic_later, etag_later) = get_key(&app, id_of(&basic)).await;
    assert_eq!(basic_later["last_used_at"], json!(activity.last_used_at));
    assert_eq!(etag_version(&etag_later), etag_version(&basic_etag_before));
    app.stop().await;
}

/// The log size from `/readyz` (which is not itself counted as activity).
async fn ready_size(client: &reqwest::Client, server: &BinServer) -> u64 {
    let response = client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("GET readyz");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["size"].as_u64().expect("size")
}

/// Creates a basic key on the binary; returns (id, secret).
async fn bin_create_key(
    client: &reqwest::Client,
    server: &BinServer,
    admin: &str,
    name: &str,
) -> (Uuid, String) {
    let response = client
        .post(server.url("/v1/admin/api-keys"))
        .bearer_auth(admin)
        .json(&json!({"name": name, "role": "basic"}))
        .send()
        .await
        .expect("create key");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    (
        id_of(&body["api_key"]),
        body["secret"].as_str().expect("secret").to_string(),
    )
}

async fn bin_verify(
    client: &reqwest::Client,
    server: &BinServer,
    key: &str,
    method: &str,
    path: &str,
) -> String {
    let response = client
        .post(server.url("/v1/verify"))
        .json(&json!({"key": key, "method": method, "path": path}))
        .send()
        .await
        .expect("verify");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["code"].as_str().expect("code").to_string()
}

/// Sums a credential's counters over every activity event in `entries`.
fn total_counts(entries: &[Entry], credential: Uuid) -> (usize, Counts) {
    let mut events = 0;
    let mut total = Counts::new();
    for entry in entries {
        if let EventData::CredentialActivity(d) = &entry.data {
            if d.credential_id == credential {
                events += 1;
                for (key, n) in counts_of(d) {
                    *total.entry(key).or_insert(0) += n;
                }
            }
        }
    }
    (events, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_closes_windows_on_its_timer() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let mut server = BinServer::start(&data_dir, &["--activity-window", "1"]).expect("start");
    let admin = server.secret.clone().expect("bootstrap secret");
    let client = bin_client();
    let (key, secret) = bin_create_key(&client, &server, &admin, "timer-basic").await;
    // Read before the key is used, so its summary must come after.
    let size = ready_size(&client, &server).await;
    for _ in 0..3 {
        assert_eq!(
            bin_verify(&client, &server, &secret, "POST", "/chat/x").await,
            "VALID"
        );
    }
    assert_eq!(
        bin_verify(&client, &server, &secret, "GET", "/admin/x").await,
        "FORBIDDEN"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut grown = ready_size(&client, &server).await;
    while grown <= size && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        grown = ready_size(&client, &server).await;
    }
    assert!(
        grown > size,
        "the key's window was written without a shutdown: size {size} -> {grown}; \
         stderr: {}",
        server.stderr()
    );
    // Killed, not stopped: what the timer wrote is all there is.
    server.kill();
    drop(server);
    let entries = read_log(&data_dir);
    let (events, counts) = total_counts(&entries, key);
    assert!(events >= 1, "an activity event for the key");
    assert_eq!(
        counts,
        expected(&[
            ("POST", "/**", "VALID", 3),
            ("GET", "/admin/**", "FORBIDDEN", 1),
        ])
    );
    check_data_dir(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_writes_the_open_window() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let mut server = BinServer::start(&data_dir, &["--activity-window", "3600"]).expect("start");
    let admin = server.secret.clone().expect("bootstrap secret");
    let client = bin_client();
    let (key, secret) = bin_create_key(&client, &server, &admin, "shutdown-basic").await;
    for _ in 0..4 {
        assert_eq!(
            bin_verify(&client, &server, &secret, "POST", "/chat/x").await,
            "VALID"
        );
    }
    for _ in 0..2 {
        assert_eq!(
            bin_verify(&client, &server, &secret, "GET", "/manage/admin/users").await,
            "FORBIDDEN"
        );
    }
    let size = ready_size(&client, &server).await;
    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM exit {status:?}; stderr: {}",
        server.stderr()
    );
    drop(server);
    check_data_dir(&data_dir);
    let entries = read_log(&data_dir);
    assert!(
        entries.len() as u64 > size,
        "the shutdown appended the open window"
    );
    let (events, counts) = total_counts(&entries, key);
    assert_eq!(events, 1, "exactly one summary for the one window");
    assert_eq!(
        counts,
        expected(&[
            ("POST", "/**", "VALID", 4),
            ("GET", "/manage/admin/**", "FORBIDDEN", 2),
        ])
    );
    let admin_id = entries
        .iter()
        .find_map(|e| match &e.data {
            EventData::ApiKeyCreated(d) if d.name == keyledger::server::BOOTSTRAP_KEY_NAME => {
                Some(d.key_id)
            }
            _ => None,
        })
        .expect("bootstrap key created");
    let (events, counts) = total_counts(&entries, admin_id);
    assert_eq!(events, 1);
    assert_eq!(
        counts,
        expected(&[("POST", "/v1/admin/api-keys", "VALID", 1)])
    );
}
