//! `/v1/audit/*` over a log of thousands of entries: event queries (every filter alone and
//! combined, paging), key histories, principal activity per day, exports and Merkle proofs,
//! each checked against an independent reading of the stored log.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyledger::crypto::merkle::{self, Frontier, Hash};
use keyledger::crypto::note::{Checkpoint, NoteVerifier};
use keyledger::crypto::{jcs, seal};
use keyledger::domain::events::{ActivityCount, CredentialActivity};
use keyledger::domain::{
    Actor, ActorKind, Clock, Command, Entry, EventData, KeyChanges, KeyName, Stream, Timestamp,
};
use serde_json::Value;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::helpers::{TestApp, error_code};

/// Service accounts created over HTTP before the bulk appends.
const KEYS: usize = 10;
/// Days the bulk appends span (the clock moves one day between them).
const DAYS: usize = 30;
/// Group commits per day (the clock moves one hour between them).
const ROUNDS: usize = 3;
/// `credential.activity` events per round (plus one lifecycle event per key).
const ACTIVITY_PER_ROUND: usize = 24;
/// Concurrent requests when fetching many proofs.
const WORKERS: usize = 16;

const METHODS: [&str; 3] = ["GET", "POST", "DELETE"];
const OUTCOMES: [&str; 3] = ["VALID", "FORBIDDEN", "DISABLED"];

/// (day, method, route, outcome) → count.
type DayCounts = BTreeMap<(String, String, String, String), u64>;

/// One stored entry: its exact bytes and what they decode to.
struct Stored {
    bytes: Vec<u8>,
    entry: Entry,
}

/// What the `credential.activity` events appended for one principal add up to.
#[derive(Default)]
struct ExpectedActivity {
    counts: DayCounts,
    last_used_at: Option<Timestamp>,
}

/// A server over a log of some 3000 entries, with what was appended.
struct Fixture {
    app: TestApp,
    /// The service accounts created over HTTP, in creation order.
    keys: Vec<Uuid>,
    /// A user registered over HTTP; principal of some activity events.
    user: Uuid,
    /// Credentials (not keys) whose activity is attributed to `user`.
    user_credentials: Vec<Uuid>,
    /// Every stored entry, index = seq.
    stored: Vec<Stored>,
    /// Expected activity per principal, from the `RecordActivity` commands appended.
    activity: BTreeMap<Uuid, ExpectedActivity>,
}

fn uuid_of(value: &Value) -> Uuid {
    value
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .unwrap_or_else(|| panic!("{value} is not a UUID string"))
}

fn service_actor(id: &str) -> Actor {
    Actor {
        kind: ActorKind::ServiceAccount,
        id: id.to_string(),
        credential: Some(id.to_string()),
    }
}

/// Every entry of the app's store, parsed (signatures are the ledger tests' business).
fn read_store(app: &TestApp) -> Vec<Stored> {
    app.stored(0)
        .into_iter()
        .enumerate()
        .map(|(i, (seq, bytes))| {
            assert_eq!(seq, i as u64, "the store has a hole before seq {seq}");
            let (entry, _) = seal::parse(&bytes).expect("a stored entry parses");
            assert_eq!(entry.seq, seq);
            Stored { bytes, entry }
        })
        .collect()
}

/// Builds the fixture: 10 keys and a user over HTTP, then 30 days × 3 rounds of group
/// commits, each round renaming or toggling every key (as the admin, the system or another
/// service account) and recording 24 activity summaries, with the clock moving between
/// rounds so entries carry different `at`s and activity windows start on different days.
async fn fixture() -> Fixture {
    let app = TestApp::spawn().await;
    let mut keys = Vec::new();
    for i in 0..KEYS {
        let (key, _) = app.create_key(&format!("svc-{i:02}"), "basic").await;
        keys.push(uuid_of(&key["id"]));
    }
    let user = uuid_of(&app.register_user("auditor@example.com", "auditor").await["id"]);
    let user_credentials = vec![Uuid::from_u128(0xa000), Uuid::from_u128(0xa001)];
    let admin = service_actor(&app.admin_id);
    let service = service_actor(&keys[1].to_string());
    let mut disabled = [false; KEYS];
    let mut activity: BTreeMap<Uuid, ExpectedActivity> = BTreeMap::new();
    for day in 0..DAYS {
        app.clock.advance(86_400);
        for round in 0..ROUNDS {
            app.clock.advance(3_600);
            let now = app.clock.now();
            let mut appends = JoinSet::new();
            for (i, &key_id) in keys.iter().enumerate() {
                let command = if (day + round + i) % 2 == 0 {
                    let name = KeyName::parse(&format!("svc-{i:02}-d{day:02}-r{round}"))
                        .expect("a valid key name");
                    Command::UpdateApiKey {
                        key_id,
                        changes: KeyChanges {
                            name: Some(name),
                            ..KeyChanges::default()
                        },
                        if_match: None,
                    }
                } else if disabled[i] {
                    disabled[i] = false;
                    Command::EnableApiKey {
                        key_id,
                        if_match: None,
                    }
                } else {
                    disabled[i] = true;
                    Command::DisableApiKey {
                        key_id,
                        if_match: None,
                    }
                };
                let actor = match i % 3 {
                    0 => admin.clone(),
                    1 => Actor::system(),
                    _ => service.clone(),
                };
                let ledger = app.ledger.clone();
                appends.spawn(async move { ledger.execute(command, actor).await });
            }
            for j in 0..ACTIVITY_PER_ROUND {
                let (credential_id, principal_id) = if j % 8 == 7 {
                    (user_credentials[j % 2], user)
                } else {
                    (keys[j % KEYS], keys[j % KEYS])
                };
                // Windows start up to ~4 hours back, so some start on the previous day.
                let window_start = now.plus_seconds(-600 * j as i64);
                let last_used_at = now.plus_seconds(-(j as i64));
                let counts: Vec<ActivityCount> = (0..2)
                    .map(|c| ActivityCount {
                        method: METHODS[(j + c) % 3].to_string(),
                        route: format!("/v1/things/{}", (j + round + c) % 4),
                        outcome: OUTCOMES[(j + day + c) % 3].to_string(),
                        count: ((day * 7 + round * 5 + j * 3 + c) % 13 + 1) as u64,
                    })
                    .collect();
                let expected = activity.entry(principal_id).or_default();
                for c in &counts {
                    let key = (
                        window_start.day(),
                        c.method.clone(),
                        c.route.clone(),
                        c.outcome.clone(),
                    );
                    *expected.counts.entry(key).or_insert(0) += c.count;
                }
                if expected.last_used_at.is_none_or(|t| t < last_used_at) {
                    expected.last_used_at = Some(last_used_at);
                }
                let command = Command::RecordActivity(CredentialActivity {
                    credential_id,
                    principal_id,
                    window_start,
                    window_end: now,
                    last_used_at,
                    counts,
                });
                let ledger = app.ledger.clone();
                appends.spawn(async move { ledger.execute(command, Actor::system()).await });
            }
            while let Some(joined) = appends.join_next().await {
                let receipt = joined.expect("append task").expect("append");
                assert_eq!(receipt.entries.len(), 1, "each command appends one entry");
            }
        }
    }
    let stored = read_store(&app);
    assert_eq!(
        stored.len(),
        2 + KEYS + 1 + DAYS * ROUNDS * (KEYS + ACTIVITY_PER_ROUND),
        "genesis, bootstrap key, keys, user and the bulk appends"
    );
    assert_eq!(app.log_size(), stored.len() as u64);
    Fixture {
        app,
        keys,
        user,
        user_credentials,
        stored,
        activity,
    }
}

/// A cloneable HTTP client for the audit routes, authenticated as the bootstrap admin.
#[derive(Clone)]
struct Auditor {
    client: reqwest::Client,
    base: String,
    secret: String,
}

impl Auditor {
    fn of(app: &TestApp) -> Auditor {
        Auditor {
            client: app.client.clone(),
            base: app.url(""),
            secret: app.admin.clone(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.secret)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GETs `path`, expects 200 and returns the body bytes.
    async fn bytes(&self, path: &str) -> Vec<u8> {
        let response = self.get(path).await;
        let status = response.status();
        let body = response.bytes().await.expect("read the body").to_vec();
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// GETs `path`, expects 200 and returns the JSON body.
    async fn json(&self, path: &str) -> Value {
        let body = self.bytes(path).await;
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// GETs `path`, expects 400 and returns the error code.
    async fn bad_request(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), 400, "GET {path} must be refused");
        error_code(response).await
    }

    /// GETs every path with `WORKERS` requests in flight; returns the JSON bodies in order.
    async fn json_all(&self, paths: Vec<String>) -> Vec<Value> {
        let paths = std::sync::Arc::new(paths);
        let mut workers = JoinSet::new();
        for w in 0..WORKERS {
            let auditor = self.clone();
            let paths = paths.clone();
            workers.spawn(async move {
                let mut out = Vec::new();
                for i in (w..paths.len()).step_by(WORKERS) {
                    out.push((i, auditor.json(&paths[i]).await));
                }
                out
            });
        }
        let mut bodies: Vec<Option<Value>> = vec![None; paths.len()];
        while let Some(joined) = workers.join_next().await {
            for (i, body) in joined.expect("worker") {
                bodies[i] = Some(body);
            }
        }
        bodies
            .into_iter()
            .map(|b| b.expect("every path fetched"))
            .collect()
    }
}

/// A `/v1/audit/events` filter and its independent evaluation.
#[derive(Clone, Debug, Default)]
struct Filter {
    event_type: Option<String>,
    stream: Option<String>,
    actor: Option<String>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
}

impl Filter {
    fn query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.event_type {
            parts.push(format!("type={t}"));
        }
        if let Some(s) = &self.stream {
            parts.push(format!("stream={s}"));
        }
        if let Some(a) = &self.actor {
            parts.push(format!("actor={a}"));
        }
        if let Some(t) = self.since {
            parts.push(format!("since={}", t.to_rfc3339()));
        }
        if let Some(t) = self.until {
            parts.push(format!("until={}", t.to_rfc3339()));
        }
        parts.join("&")
    }

    fn matches(&self, e: &Entry) -> bool {
        self.event_type
            .as_deref()
            .is_none_or(|t| e.data.event_type() == t)
            && self.stream.as_deref().is_none_or(|s| e.stream.name() == s)
            && self.actor.as_deref().is_none_or(|a| e.actor.id == a)
            && self.since.is_none_or(|t| e.at >= t)
            && self.until.is_none_or(|t| e.at < t)
    }

    fn expected(&self, fx: &Fixture) -> Vec<u64> {
        fx.stored
            .iter()
            .filter(|s| self.matches(&s.entry))
            .map(|s| s.entry.seq)
            .collect()
    }
}

/// Checks that an event object returned by the API is exactly the stored entry.
#[track_caller]
fn assert_stored(fx: &Fixture, event: &Value, context: &str) -> u64 {
    let seq = event["seq"].as_u64().expect("event seq");
    let stored = fx
        .stored
        .get(seq as usize)
        .unwrap_or_else(|| panic!("{context}: seq {seq} is not in the log"));
    let bytes = jcs::canonicalize(event).expect("canonicalize an event");
    assert!(
        bytes == stored.bytes,
        "{context}: event {seq} differs from the stored bytes"
    );
    seq
}

/// Walks `/v1/audit/events?<query>` page by page with `limit` (the default when `None`),
/// following `next_after` until it is null; returns the seqs in the order received.
async fn walk(auditor: &Auditor, fx: &Fixture, query: &str, limit: Option<usize>) -> Vec<u64> {
    let page_size = limit.unwrap_or(100);
    let mut seqs = Vec::new();
    let mut after: Option<u64> = None;
    for _ in 0..=fx.stored.len() + 1 {
        let mut params: Vec<String> = Vec::new();
        if !query.is_empty() {
            params.push(query.to_string());
        }
        if let Some(limit) = limit {
            params.push(format!("limit={limit}"));
        }
        if let Some(a) = after {
            params.push(format!("after={a}"));
        }
        let path = format!("/v1/audit/events?{}", params.join("&"));
        let body = auditor.json(&path).await;
        let events = body["events"].as_array().expect("events is an array");
        assert!(events.len() <= page_size, "{path}: more than the limit");
        for event in events {
            seqs.push(assert_stored(fx, event, &path));
        }
        match &body["next_after"] {
            Value::Null => return seqs,
            next => {
                let next = next.as_u64().expect("next_after is a seq or null");
                assert_eq!(events.len(), page_size, "{path}: a short page with a next");
                assert_eq!(Some(next), seqs.last().copied(), "{path}: next_after");
                after = Some(next);
            }
        }
    }
    panic!("{query}: paging does not end");
}

pub async fn events_filters_and_paging_match_the_stored_log() {
    let fx = fixture().await;
    let auditor = Auditor::of(&fx.app);
    let n = fx.stored.len();
    // Entries of one round share their `at`: bounds equal to an entry's time test that
    // `since` is inclusive and `until` exclusive.
    let t_a = fx.stored[n / 3].entry.at;
    let t_b = fx.stored[2 * n / 3].entry.at;
    let between = t_a.plus_seconds(1);
    let admin = fx.app.admin_id.clone();
    let k1 = fx.keys[1].to_string();
    let stream = |s: Stream| Some(s.name());
    let text = |s: &str| Some(s.to_string());
    let cases: Vec<(&str, Filter, bool)> = vec![
        ("everything", Filter::default(), true),
        (
            "type renamed",
            Filter {
                event_type: text("api_key.renamed"),
                ..Filter::default()
            },
            true,
        ),
        (
            "type activity",
            Filter {
                event_type: text("credential.activity"),
                ..Filter::default()
            },
            true,
        ),
        (
            "type disabled",
            Filter {
                event_type: text("api_key.disabled"),
                ..Filter::default()
            },
            true,
        ),
        (
            "type created",
            Filter {
                event_type: text("api_key.created"),
                ..Filter::default()
            },
            true,
        ),
        (
            "type genesis",
            Filter {
                event_type: text("ledger.initialized"),
                ..Filter::default()
            },
            true,
        ),
        (
            "type never used",
            Filter {
                event_type: text("pat.revoked"),
                ..Filter::default()
            },
            false,
        ),
        (
            "type unknown",
            Filter {
                event_type: text("api_key.exploded"),
                ..Filter::default()
            },
            false,
        ),
        (
            "stream of a key",
            Filter {
                stream: stream(Stream::ApiKey(fx.keys[3])),
                ..Filter::default()
            },
            true,
        ),
        (
            "stream of the bootstrap key",
            Filter {
                stream: text(&format!("api_key/{admin}")),
                ..Filter::default()
            },
            true,
        ),
        (
            "stream of a key's activity",
            Filter {
                stream: stream(Stream::Activity(fx.keys[2])),
                ..Filter::default()
            },
            true,
        ),
        (
            "stream of a user's credential activity",
            Filter {
                stream: stream(Stream::Activity(fx.user_credentials[1])),
                ..Filter::default()
            },
            true,
        ),
        (
            "stream ledger",
            Filter {
                stream: text("ledger"),
                ..Filter::default()
            },
            true,
        ),
        (
            "stream of the user",
            Filter {
                stream: stream(Stream::User(fx.user)),
                ..Filter::default()
            },
            true,
        ),
        (
            "stream unknown",
            Filter {
                stream: stream(Stream::ApiKey(Uuid::from_u128(0xdead))),
                ..Filter::default()
            },
            false,
        ),
        (
            "actor admin",
            Filter {
                actor: Some(admin.clone()),
                ..Filter::default()
            },
            true,
        ),
        (
            "actor system",
            Filter {
                actor: text("keyledger"),
                ..Filter::default()
            },
            true,
        ),
        (
            "actor service account",
            Filter {
                actor: Some(k1.clone()),
                ..Filter::default()
            },
            true,
        ),
        (
            "actor unknown",
            Filter {
                actor: text("nobody"),
                ..Filter::default()
            },
            false,
        ),
        (
            "since an entry's time",
            Filter {
                since: Some(t_a),
                ..Filter::default()
            },
            true,
        ),
        (
            "since between rounds",
            Filter {
                since: Some(between),
                ..Filter::default()
            },
            true,
        ),
        (
            "until an entry's time",
            Filter {
                until: Some(t_b),
                ..Filter::default()
            },
            true,
        ),
        (
            "since and until",
            Filter {
                since: Some(t_a),
                until: Some(t_b),
                ..Filter::default()
            },
            true,
        ),
        (
            "since equals until",
            Filter {
                since: Some(t_a),
                until: Some(t_a),
                ..Filter::default()
            },
            false,
        ),
        (
            "since after until",
            Filter {
                since: Some(t_b),
                until: Some(t_a),
                ..Filter::default()
            },
            false,
        ),
        (
            "until before the log",
            Filter {
                until: Some(fx.stored[0].entry.at),
                ..Filter::default()
            },
            false,
        ),
        (
            "since past the log",
            Filter {
                since: Some(fx.stored[n - 1].entry.at.plus_seconds(1)),
                ..Filter::default()
            },
            false,
        ),
        (
            "type and actor",
            Filter {
                event_type: text("api_key.renamed"),
                actor: Some(admin.clone()),
                ..Filter::default()
            },
            true,
        ),
        (
            "type and actor, disjoint",
            Filter {
                event_type: text("credential.activity"),
                actor: Some(admin.clone()),
                ..Filter::default()
            },
            false,
        ),
        (
            "stream and time",
            Filter {
                stream: stream(Stream::ApiKey(fx.keys[5])),
                since: Some(t_a),
                until: Some(t_b),
                ..Filter::default()
            },
            true,
        ),
        (
            "everything combined",
            Filter {
                event_type: text("api_key.disabled"),
                stream: stream(Stream::ApiKey(fx.keys[2])),
                actor: Some(k1.clone()),
                since: Some(t_a),
                until: Some(t_b),
            },
            true,
        ),
        (
            "actor and since",
            Filter {
                actor: text("keyledger"),
                since: Some(between),
                ..Filter::default()
            },
            true,
        ),
        (
            "type and until",
            Filter {
                event_type: text("api_key.enabled"),
                until: Some(t_b),
                ..Filter::default()
            },
            true,
        ),
        (
            "stream and other actor",
            Filter {
                stream: stream(Stream::ApiKey(fx.keys[4])),
                actor: Some(k1.clone()),
                ..Filter::default()
            },
            false,
        ),
    ];
    for (name, filter, nonempty) in &cases {
        let expected = filter.expected(&fx);
        assert_eq!(
            !expected.is_empty(),
            *nonempty,
            "{name}: the fixture does not exercise this case ({} matches)",
            expected.len()
        );
        if *nonempty {
            assert!(expected.len() < n || filter.query().is_empty(), "{name}");
        }
        let query = filter.query();
        let mut limits = vec![Some(1000), Some(7), None];
        if expected.len() <= 200 {
            limits.push(Some(1));
        }
        for limit in limits {
            let got = walk(&auditor, &fx, &query, limit).await;
            assert_eq!(
                got, expected,
                "{name}: ?{query} with limit {limit:?} returns other seqs"
            );
        }
    }

    // The page body is the stored bytes joined, byte for byte.
    let body = auditor.bytes("/v1/audit/events?after=10&limit=5").await;
    let mut expected = b"{\"events\":[".to_vec();
    for (i, seq) in (11..=15).enumerate() {
        if i > 0 {
            expected.push(b',');
        }
        expected.extend_from_slice(&fx.stored[seq].bytes);
    }
    expected.extend_from_slice(b"],\"next_after\":15}");
    assert!(body == expected, "the page is not the stored bytes joined");

    // `after` is exclusive, also combined with filters.
    let renamed = Filter {
        event_type: text("api_key.renamed"),
        ..Filter::default()
    }
    .expected(&fx);
    let pivot = renamed[renamed.len() / 2];
    let page = auditor
        .json(&format!(
            "/v1/audit/events?type=api_key.renamed&after={pivot}&limit=3"
        ))
        .await;
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    let position = renamed.len() / 2;
    assert_eq!(seqs, renamed[position + 1..position + 4].to_vec());
    assert_eq!(page["next_after"], renamed[position + 3]);
    // The last page ends with null even when exactly full.
    let last = renamed[renamed.len() - 2];
    let page = auditor
        .json(&format!(
            "/v1/audit/events?type=api_key.renamed&after={last}&limit=1"
        ))
        .await;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["events"][0]["seq"], renamed[renamed.len() - 1]);
    assert!(page["next_after"].is_null(), "{page}");
    // Past the end: empty, null.
    let page = auditor
        .json(&format!("/v1/audit/events?after={}", n - 1))
        .await;
    assert_eq!(page["events"], Value::Array(Vec::new()));
    assert!(page["next_after"].is_null());
    let page = auditor
        .json(&format!("/v1/audit/events?after={}", u64::MAX))
        .await;
    assert_eq!(page["events"], Value::Array(Vec::new()));

    // `since` and `until` accept any offset and precision; the instant is what counts.
    let shifted = t_a
        .datetime()
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600 + 30 * 60).expect("a valid offset"));
    let raw = shifted
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
        .replace('+', "%2B");
    let expected = Filter {
        since: Some(t_a),
        until: Some(t_b),
        ..Filter::default()
    }
    .expected(&fx);
    let got = walk(
        &auditor,
        &fx,
        &format!("since={raw}&until={}", t_b.to_rfc3339()),
        Some(1000),
    )
    .await;
    assert_eq!(got, expected, "since with an offset ({raw})");

    fx.app.stop().await;
}

pub async fn events_refuse_bad_queries() {
    let app = TestApp::spawn().await;
    let auditor = Auditor::of(&app);
    let id = Uuid::from_u128(0xabcd_ef01_2345_6789_abcd_ef01_2345_6789);
    let upper = id.hyphenated().to_string().to_uppercase();
    for query in [
        "limit=0".to_string(),
        "limit=1001".to_string(),
        "limit=100000".to_string(),
        "stream=bogus".to_string(),
        "stream=api_key/not-a-uuid".to_string(),
        format!("stream=api_key/{upper}"),
        format!("stream=api_key/{}", id.simple()),
        format!("stream=key/{id}"),
        format!("stream=api_key/{id}/x"),
        "stream=".to_string(),
        "since=yesterday".to_string(),
        "since=2026-02-30T00:00:00Z".to_string(),
        "since=".to_string(),
        "until=2026-01-01".to_string(),
        "until=2026-01-01T00:00:00".to_string(),
        "since=2026-01-01T00:00:00Z&until=soon".to_string(),
    ] {
        let code = auditor
            .bad_request(&format!("/v1/audit/events?{query}"))
            .await;
        assert_eq!(code, "invalid_query", "?{query}");
    }
    for query in [
        "limit=-1",
        "limit=many",
        "after=-1",
        "after=x",
        "after=18446744073709551616",
        "color=red",
    ] {
        let code = auditor
            .bad_request(&format!("/v1/audit/events?{query}"))
            .await;
        assert!(!code.is_empty(), "?{query}");
    }
    for query in [
        "limit=1",
        "limit=1000",
        "type=nonsense",
        "actor=",
        "stream=ledger",
    ] {
        auditor.json(&format!("/v1/audit/events?{query}")).await;
    }
    app.stop().await;
}

pub async fn key_history_and_principal_activity_match_what_was_appended() {
    let fx = fixture().await;
    let auditor = Auditor::of(&fx.app);

    // History: exactly the key's stream, in order, as stored.
    let admin_id = Uuid::parse_str(&fx.app.admin_id).expect("admin id");
    for key in fx.keys.iter().copied().chain([admin_id]) {
        let path = format!("/v1/audit/api-keys/{key}/history");
        let body = auditor.json(&path).await;
        assert_eq!(body["key_id"], key.to_string(), "{path}");
        let events = body["events"].as_array().expect("events");
        let got: Vec<u64> = events
            .iter()
            .map(|e| assert_stored(&fx, e, &path))
            .collect();
        let expected: Vec<u64> = fx
            .stored
            .iter()
            .filter(|s| s.entry.stream == Stream::ApiKey(key))
            .map(|s| s.entry.seq)
            .collect();
        assert_eq!(got, expected, "{path}");
        assert!(!expected.is_empty());
        assert_eq!(
            events[0]["type"], "api_key.created",
            "{path} starts with the creation"
        );
        let versions: Vec<u64> = events
            .iter()
            .map(|e| e["version"].as_u64().expect("version"))
            .collect();
        assert_eq!(versions, (1..=events.len() as u64).collect::<Vec<_>>());
    }
    // An unknown id, and a user's id (a principal, but not an API key).
    for unknown in [Uuid::from_u128(0xdead), fx.user] {
        let response = fx
            .app
            .get(
                &format!("/v1/audit/api-keys/{unknown}/history"),
                Some(&fx.app.admin),
            )
            .await;
        assert_eq!(response.status(), 404, "history of {unknown}");
        assert_eq!(error_code(response).await, "api_key_not_found");
    }

    // Activity: per (day, method, route, outcome) sums of what was recorded.
    assert!(fx.activity.len() > KEYS / 2);
    for (principal, expected) in &fx.activity {
        let path = format!("/v1/audit/principals/{principal}/activity");
        let body = auditor.json(&path).await;
        assert_eq!(body["principal_id"], principal.to_string(), "{path}");
        let last_used = expected.last_used_at.expect("recorded").to_rfc3339();
        assert_eq!(body["last_used_at"], last_used, "{path}");
        let got = day_counts(&body, &path);
        assert_eq!(&got, &expected.counts, "{path}");
        let days: BTreeSet<&String> = got.keys().map(|k| &k.0).collect();
        assert!(days.len() > DAYS / 2, "{path}: activity spans many days");

        // since/until select whole UTC days, both inclusive.
        let days: Vec<&String> = days.into_iter().collect();
        let (first, last) = (days[5].clone(), days[10].clone());
        let query = format!("since={first}T23:59:59.999Z&until={last}T00:00:00Z");
        let body = auditor.json(&format!("{path}?{query}")).await;
        let got = day_counts(&body, &path);
        let want: DayCounts = expected
            .counts
            .iter()
            .filter(|(k, _)| k.0 >= first && k.0 <= last)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert!(!want.is_empty());
        assert_eq!(got, want, "{path}?{query}");
        // An offset moves the instant, and with it the day: 23:30 at -02:00 is the next day.
        let query = format!("since={first}T23:30:00-02:00");
        let body = auditor.json(&format!("{path}?{query}")).await;
        let got = day_counts(&body, &path);
        let want: DayCounts = expected
            .counts
            .iter()
            .filter(|(k, _)| k.0.as_str() > first.as_str())
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert_eq!(got, want, "{path}?{query}");
        // An empty range.
        let query = format!("since={last}T00:00:00Z&until={first}T00:00:00Z");
        let body = auditor.json(&format!("{path}?{query}")).await;
        assert_eq!(body["counts"], Value::Array(Vec::new()), "{path}?{query}");
    }
    // A key that never had activity recorded: no counts, never used.
    let quiet = fx
        .keys
        .iter()
        .find(|k| !fx.activity.contains_key(k))
        .copied();
    if let Some(quiet) = quiet {
        let body = auditor
            .json(&format!("/v1/audit/principals/{quiet}/activity"))
            .await;
        assert_eq!(body["counts"], Value::Array(Vec::new()));
        assert!(body["last_used_at"].is_null());
    }
    let response = fx
        .app
        .get(
            &format!("/v1/audit/principals/{}/activity", Uuid::from_u128(0xdead)),
            Some(&fx.app.admin),
        )
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "principal_not_found");
    for query in ["since=monday", "until=2026-01-01", "since="] {
        let code = auditor
            .bad_request(&format!(
                "/v1/audit/principals/{}/activity?{query}",
                fx.keys[0]
            ))
            .await;
        assert_eq!(code, "invalid_query", "?{query}");
    }

    // The activity events themselves carry what was recorded.
    let recorded: u64 = fx
        .stored
        .iter()
        .filter_map(|s| match &s.entry.data {
            EventData::CredentialActivity(d) => Some(d.counts.iter().map(|c| c.count).sum::<u64>()),
            _ => None,
        })
        .sum();
    let expected: u64 = fx.activity.values().flat_map(|a| a.counts.values()).sum();
    assert_eq!(recorded, expected);

    fx.app.stop().await;
}

fn day_counts(body: &Value, context: &str) -> DayCounts {
    let mut counts = DayCounts::new();
    for c in body["counts"].as_array().expect("counts") {
        let field = |name: &str| {
            c[name]
                .as_str()
                .unwrap_or_else(|| panic!("{context}: {name} in {c}"))
                .to_string()
        };
        let key = (
            field("day"),
            field("method"),
            field("route"),
            field("outcome"),
        );
        let count = c["count"].as_u64().expect("count");
        assert!(count > 0, "{context}: a zero count {c}");
        let previous = counts.insert(key, count);
        assert!(
            previous.is_none(),
            "{context}: a counter appears twice: {c}"
        );
    }
    counts
}

pub async fn export_ranges_are_exact() {
    let fx = fixture().await;
    let auditor = Auditor::of(&fx.app);
    let n = fx.stored.len() as u64;
    // The NDJSON of entries `from..=to`.
    let lines = |from: u64, to: u64| -> Vec<u8> {
        let mut out = Vec::new();
        for s in &fx.stored[from as usize..=to as usize] {
            out.extend_from_slice(&s.bytes);
            out.push(b'\n');
        }
        out
    };

    let response = auditor.get("/v1/audit/export").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    let body = response.bytes().await.expect("export body").to_vec();
    assert!(body == lines(0, n - 1), "the full export is the log");
    assert_eq!(body.iter().filter(|&&b| b == b'\n').count() as u64, n);

    let cases: Vec<(Option<u64>, Option<u64>)> = vec![
        (None, Some(0)),
        (Some(0), Some(0)),
        (Some(0), Some(1)),
        (Some(5), Some(10)),
        (Some(99), Some(1999)),
        (Some(510), Some(1030)),
        (Some(n / 2), None),
        (None, Some(n / 2)),
        (Some(n - 2), None),
        (Some(n - 1), None),
        (Some(n), None),
        (None, Some(n - 1)),
        (None, Some(n)),
        (None, Some(n + 1000)),
        (Some(7), Some(n + 1)),
        (None, Some(u64::MAX)),
        (Some(100), Some(50)),
        (Some(100), Some(100)),
        (Some(100), Some(101)),
        (Some(u64::MAX), None),
    ];
    for (after, until) in cases {
        let mut params = Vec::new();
        if let Some(a) = after {
            params.push(format!("after={a}"));
        }
        if let Some(u) = until {
            params.push(format!("until={u}"));
        }
        let path = format!("/v1/audit/export?{}", params.join("&"));
        let from = after.map_or(0, |a| a.saturating_add(1));
        let to = until.map_or(n - 1, |u| u.min(n - 1));
        let expected = if from <= to && from < n {
            lines(from, to)
        } else {
            Vec::new()
        };
        let body = auditor.bytes(&path).await;
        if body != expected {
            let got_seqs: Vec<u64> = body
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| seal::parse(l).expect("an exported line parses").0.seq)
                .collect();
            panic!(
                "{path}: seqs {:?}..{:?} ({} lines) where {from}..={to} belong",
                got_seqs.first(),
                got_seqs.last(),
                got_seqs.len()
            );
        }
    }
    for query in ["after=-1", "until=x", "from=3"] {
        auditor
            .bad_request(&format!("/v1/audit/export?{query}"))
            .await;
    }
    fx.app.stop().await;
}

fn decode_hash(value: &Value) -> Hash {
    let raw = STANDARD
        .decode(value.as_str().expect("a base64 hash"))
        .expect("valid base64");
    raw.try_into().expect("a 32-byte hash")
}

fn decode_hashes(value: &Value) -> Vec<Hash> {
    value
        .as_array()
        .expect("hashes array")
        .iter()
        .map(decode_hash)
        .collect()
}

fn flipped(hash: &Hash) -> Hash {
    let mut wrong = *hash;
    wrong[7] ^= 0x20;
    wrong
}

pub async fn merkle_proofs_verify_for_every_entry() {
    let fx = fixture().await;
    let auditor = Auditor::of(&fx.app);
    let n = fx.stored.len() as u64;
    assert!(n >= 1000);

    // The signed checkpoint, opened with the published verifier key.
    let public = fx
        .app
        .get("/v1/audit/public-key", None)
        .await
        .json::<Value>()
        .await
        .expect("public key JSON");
    let vkey = public["vkey"].as_str().expect("vkey");
    assert_eq!(vkey, fx.app.ledger.vkey());
    let verifier = NoteVerifier::parse(vkey).expect("the vkey parses");
    let note = String::from_utf8(auditor.bytes("/v1/audit/checkpoint").await).expect("UTF-8");
    let checkpoint = Checkpoint::open(&note, &verifier).expect("the checkpoint verifies");
    assert_eq!(checkpoint.size, n);

    // Independent roots of every prefix.
    let leaves: Vec<Hash> = fx
        .stored
        .iter()
        .map(|s| merkle::leaf_hash(&s.bytes))
        .collect();
    let mut frontier = Frontier::new();
    let mut roots = vec![merkle::empty_root()];
    for leaf in &leaves {
        frontier.push(*leaf);
        roots.push(frontier.root());
    }
    assert_eq!(checkpoint.root, roots[n as usize], "checkpoint root");

    // Inclusion of every entry in the checkpoint's tree.
    let paths: Vec<String> = (0..n)
        .map(|seq| format!("/v1/audit/proof/inclusion?seq={seq}"))
        .collect();
    let proofs = auditor.json_all(paths).await;
    for (seq, proof) in proofs.iter().enumerate() {
        let seq = seq as u64;
        assert_eq!(proof["seq"], seq);
        assert_eq!(proof["size"], n);
        assert_eq!(decode_hash(&proof["root"]), checkpoint.root, "seq {seq}");
        let hashes = decode_hashes(&proof["hashes"]);
        let leaf = &leaves[seq as usize];
        assert!(
            merkle::verify_inclusion(leaf, seq, n, &hashes, &checkpoint.root),
            "inclusion of seq {seq}"
        );
        assert!(
            !merkle::verify_inclusion(leaf, seq, n, &hashes, &flipped(&checkpoint.root)),
            "seq {seq} against a wrong root"
        );
        let other = &leaves[((seq + 1) % n) as usize];
        assert!(
            !merkle::verify_inclusion(other, seq, n, &hashes, &checkpoint.root),
            "seq {seq} with another entry's leaf"
        );
        let tampered =
            merkle::leaf_hash(&[fx.stored[seq as usize].bytes.as_slice(), b" "].concat());
        assert!(
            !merkle::verify_inclusion(&tampered, seq, n, &hashes, &checkpoint.root),
            "seq {seq} with a tampered leaf"
        );
    }

    // Roots at past sizes, as inclusion responses carry them.
    let mut pairs: Vec<(u64, u64)> = Vec::new();
    for from in (1..=n).step_by(37) {
        for to in [from, n, from + (n - from) / 2] {
            pairs.push((from, to));
        }
    }
    pairs.push((n, n));
    pairs.push((1, 2));
    pairs.push((1024, 1025));
    pairs.push((1023, 1024));
    pairs.sort_unstable();
    pairs.dedup();
    let sizes: Vec<u64> = pairs
        .iter()
        .flat_map(|&(a, b)| [a, b])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let paths: Vec<String> = sizes
        .iter()
        .map(|size| {
            let seq = (size * 7919) % size;
            format!("/v1/audit/proof/inclusion?seq={seq}&size={size}")
        })
        .collect();
    let responses = auditor.json_all(paths).await;
    let mut root_at: BTreeMap<u64, Hash> = BTreeMap::new();
    for (&size, proof) in sizes.iter().zip(&responses) {
        assert_eq!(proof["size"], size);
        let root = decode_hash(&proof["root"]);
        assert_eq!(root, roots[size as usize], "root at size {size}");
        let seq = proof["seq"].as_u64().expect("seq");
        let hashes = decode_hashes(&proof["hashes"]);
        assert!(
            merkle::verify_inclusion(&leaves[seq as usize], seq, size, &hashes, &root),
            "inclusion of seq {seq} at size {size}"
        );
        root_at.insert(size, root);
    }

    // Consistency between every pair, against those roots.
    let paths: Vec<String> = pairs
        .iter()
        .map(|(from, to)| format!("/v1/audit/proof/consistency?from={from}&to={to}"))
        .collect();
    let responses = auditor.json_all(paths).await;
    for (&(from, to), proof) in pairs.iter().zip(&responses) {
        assert_eq!(proof["from"], from);
        assert_eq!(proof["to"], to);
        let hashes = decode_hashes(&proof["hashes"]);
        let (old, new) = (root_at[&from], root_at[&to]);
        assert!(
            merkle::verify_consistency(from, to, &old, &new, &hashes),
            "consistency {from} → {to}"
        );
        assert!(
            !merkle::verify_consistency(from, to, &old, &flipped(&new), &hashes),
            "consistency {from} → {to} against a wrong new root"
        );
        assert!(
            !merkle::verify_consistency(from, to, &flipped(&old), &new, &hashes),
            "consistency {from} → {to} against a wrong old root"
        );
    }
    // `to` defaults to the checkpoint's size.
    let proof = auditor.json("/v1/audit/proof/consistency?from=100").await;
    assert_eq!(proof["to"], n);
    assert!(merkle::verify_consistency(
        100,
        n,
        &roots[100],
        &checkpoint.root,
        &decode_hashes(&proof["hashes"])
    ));

    // Out of range.
    for query in [
        format!("inclusion?seq=0&size={}", n + 1),
        format!("inclusion?seq={n}"),
        format!("inclusion?seq={}", n + 10),
        "inclusion?seq=5&size=5".to_string(),
        "inclusion?seq=0&size=0".to_string(),
        "inclusion".to_string(),
        "inclusion?seq=-1".to_string(),
        "consistency?from=0".to_string(),
        "consistency?from=0&to=10".to_string(),
        format!("consistency?from={}", n + 1),
        format!("consistency?from=1&to={}", n + 1),
        "consistency?from=10&to=5".to_string(),
        "consistency".to_string(),
    ] {
        auditor
            .bad_request(&format!("/v1/audit/proof/{query}"))
            .await;
    }
    fx.app.stop().await;
}
