//! The whole lifecycle of API keys, users and tokens through the API (SPEC §6), then the
//! log: every change is an event of the right type, in order, and no secret is anywhere but
//! in the one response that revealed it.

use keyledger::crypto::seal;
use keyledger::domain::{Clock, Entry, EventData, Stream};
use reqwest::Method;
use reqwest::header::{ETAG, IF_MATCH};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::TestApp;

/// One answer, read whole.
struct Reply {
    status: u16,
    etag: Option<String>,
    text: String,
    json: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

/// Sends requests and remembers every body that must not hold a secret (all of them but
/// the create and regenerate answers that reveal one).
struct Client<'a> {
    app: &'a TestApp,
    seen: Vec<String>,
}

impl<'a> Client<'a> {
    fn new(app: &'a TestApp) -> Client<'a> {
        Client {
            app,
            seen: Vec::new(),
        }
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        secret: Option<&str>,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Reply {
        let mut request = self.app.client.request(method, self.app.url(path));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(version) = if_match {
            request = request.header(IF_MATCH, version);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        assert!(status < 500, "{path}: server error {status}");
        // A resource's ETag is `"<version>.<body digest>"`: keep `"<version>"`, what
        // If-Match compares, after checking the digest's shape. A list's is the digest
        // alone, and is not kept.
        let etag = response.headers().get(ETAG).and_then(|v| {
            let full = v.to_str().expect("ascii etag").trim_matches('"');
            let (version, digest) = match full.split_once('.') {
                Some((version, digest)) => (Some(version), digest),
                None => (None, full),
            };
            assert!(
                digest.len() == 16 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
                "{full}"
            );
            version.map(|v| format!("\"{v}\""))
        });
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            etag,
            text,
            json,
        }
    }

    /// A request whose answer must not reveal any secret.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        secret: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.call_if(method, path, secret, body, None).await
    }

    async fn call_if(
        &mut self,
        method: Method,
        path: &str,
        secret: Option<&str>,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Reply {
        let reply = self.raw(method, path, secret, body, if_match).await;
        self.seen.push(reply.text.clone());
        reply
    }

    /// A request that reveals a secret (create, regenerate, issue).
    async fn reveal(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Reply {
        self.raw(method, path, Some(&self.app.admin), body, if_match)
            .await
    }

    /// `/v1/verify` for a key and a host call every key role may make.
    async fn verify(&mut self, secret: &str) -> String {
        let reply = self
            .call(
                Method::POST,
                "/v1/verify",
                None,
                Some(json!({"key": secret, "method": "POST", "path": "/chat/x"})),
            )
            .await;
        assert_eq!(reply.status, 200, "verify: {}", reply.text);
        reply.json["code"].as_str().expect("code").to_string()
    }

    /// `GET /v1/me` with a secret; returns the status.
    async fn me(&mut self, secret: &str) -> u16 {
        self.call(Method::GET, "/v1/me", Some(secret), None)
            .await
            .status
    }

    fn assert_no_secret_seen(&self, secrets: &[String]) {
        for secret in secrets {
            for body in &self.seen {
                assert!(
                    !body.contains(secret.as_str()),
                    "a secret appears in a later response: {body}"
                );
            }
        }
    }
}

fn quoted(version: u64) -> String {
    format!("\"{version}\"")
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("id").to_string()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().expect("array").iter().map(id_of).collect()
}

/// Every entry of the log, parsed, with its bytes.
fn log(app: &TestApp) -> Vec<(Entry, Vec<u8>)> {
    app.stored(0)
        .into_iter()
        .map(|(_, bytes)| {
            let (entry, _) = seal::parse(&bytes).expect("parse entry");
            (entry, bytes)
        })
        .collect()
}

/// Event types of one stream, in log order, with their versions.
fn stream_events(log: &[(Entry, Vec<u8>)], stream: Stream) -> Vec<(&'static str, u64)> {
    log.iter()
        .filter(|(e, _)| e.stream == stream)
        .map(|(e, _)| (e.data.event_type(), e.version))
        .collect()
}

fn assert_log_holds_no_secret(log: &[(Entry, Vec<u8>)], secrets: &[String]) {
    for (entry, bytes) in log {
        for secret in secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "entry {} holds a secret",
                entry.seq
            );
        }
    }
}

fn uuid(s: &str) -> Uuid {
    Uuid::parse_str(s).expect("uuid")
}

pub async fn api_key_lifecycle_end_to_end() {
    let app = TestApp::spawn().await;
    let admin = app.admin.clone();
    let mut c = Client::new(&app);
    let mut secrets = vec![admin.clone()];

    // One key of each type; the secret is in the create answer only.
    let mut keys: Vec<(Value, String)> = Vec::new();
    for role in ["admin", "basic", "limited"] {
        let reply = c
            .reveal(
                Method::POST,
                "/v1/admin/api-keys",
                Some(json!({"name": format!("svc-{role}"), "role": role})),
                None,
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let key = reply.json["api_key"].clone();
        let secret = reply.json["secret"].as_str().expect("secret").to_string();
        assert!(secret.starts_with("klk_") && secret.len() == 53, "{secret}");
        assert_eq!(reply.etag.as_deref(), Some("\"1\""));
        assert_eq!(key["version"], 1);
        assert_eq!(key["name"], format!("svc-{role}"));
        assert_eq!(key["role"], role);
        assert_eq!(key["status"], "active");
        assert_eq!(key["expires_at"], Value::Null);
        assert_eq!(key["last_used_at"], Value::Null);
        assert_eq!(key["created_by"], app.admin_id.as_str());
        assert_eq!(key["display"], format!("klk_****{}", &secret[49..]));
        assert!(key.get("secret").is_none() && key.get("secret_sha256").is_none());
        secrets.push(secret.clone());
        keys.push((key, secret));
    }
    let key_ids: Vec<String> = keys.iter().map(|(k, _)| id_of(k)).collect();

    // Before any use, GET shows no last_used_at; after one, it does.
    for (key, secret) in &keys {
        let path = format!("/v1/admin/api-keys/{}", id_of(key));
        let reply = c.call(Method::GET, &path, Some(&admin), None).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json["api_key"]["last_used_at"], Value::Null);
        assert_eq!(reply.json["api_key"]["display"], key["display"]);
        assert_eq!(c.verify(secret).await, "VALID");
        assert_eq!(c.me(secret).await, 200);
        let reply = c.call(Method::GET, &path, Some(&admin), None).await;
        assert_eq!(
            reply.json["api_key"]["last_used_at"],
            app.clock.now().to_rfc3339(),
            "last_used_at after use"
        );
    }

    // /v1/me of an API key.
    let (k0, s0) = &keys[0];
    let reply = c.call(Method::GET, "/v1/me", Some(s0), None).await;
    assert_eq!(
        reply.json,
        json!({
            "principal": {"kind": "service_account", "id": k0["id"], "name": "svc-admin", "role": "admin"},
            "credential": {"kind": "api_key", "id": k0["id"], "display": k0["display"], "expires_at": null},
        })
    );

    // Keys in every status, then the list: by creation, filterable by status.
    let soon = app.clock.now().plus_seconds(10).to_rfc3339();
    let mut extra = Vec::new();
    for (name, body) in [
        (
            "svc-expiring",
            json!({"name": "svc-expiring", "role": "basic", "expires_at": soon}),
        ),
        (
            "svc-disabled",
            json!({"name": "svc-disabled", "role": "basic"}),
        ),
        (
            "svc-deleted",
            json!({"name": "svc-deleted", "role": "basic"}),
        ),
    ] {
        let reply = c
            .reveal(Method::POST, "/v1/admin/api-keys", Some(body), None)
            .await;
        assert_eq!(reply.status, 201, "{name}: {}", reply.text);
        secrets.push(reply.json["secret"].as_str().expect("secret").to_string());
        extra.push(id_of(&reply.json["api_key"]));
    }
    let r = c
        .call(
            Method::POST,
            &format!("/v1/admin/api-keys/{}/disable", extra[1]),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .call(
            Method::DELETE,
            &format!("/v1/admin/api-keys/{}", extra[2]),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    app.clock.advance(20);
    let mut all = vec![app.admin_id.clone()];
    all.extend(key_ids.iter().cloned());
    all.extend(extra.iter().cloned());
    let listed = c
        .call(Method::GET, "/v1/admin/api-keys", Some(&admin), None)
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(ids(&listed.json["api_keys"]), all, "sorted by creation");
    let created: Vec<&str> = listed.json["api_keys"]
        .as_array()
        .expect("array")
        .iter()
        .map(|k| k["created_at"].as_str().expect("created_at"))
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "{created:?}");
    let mut active = vec![app.admin_id.clone()];
    active.extend(key_ids.iter().cloned());
    for (status, want) in [
        ("active", active),
        ("expired", vec![extra[0].clone()]),
        ("disabled", vec![extra[1].clone()]),
        ("deleted", vec![extra[2].clone()]),
    ] {
        let reply = c
            .call(
                Method::GET,
                &format!("/v1/admin/api-keys?status={status}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{status}");
        assert_eq!(ids(&reply.json["api_keys"]), want, "status={status}");
        for key in reply.json["api_keys"].as_array().expect("array") {
            assert_eq!(key["status"], status);
        }
    }
    let expired_secret = secrets[secrets.len() - 3].clone();
    assert_eq!(c.verify(&expired_secret).await, "EXPIRED");
    assert_eq!(c.me(&expired_secret).await, 401);

    // The basic key goes through every change; its ETag follows its version.
    let (kb, s1) = keys[1].clone();
    let kb_id = id_of(&kb);
    let path = format!("/v1/admin/api-keys/{kb_id}");
    let reply = c.call(Method::GET, &path, Some(&admin), None).await;
    assert_eq!(reply.etag.as_deref(), Some("\"1\""));

    let mut version = 1;
    let in_a_day = app.clock.now().plus_seconds(86_400).to_rfc3339();
    for (body, field, value) in [
        (json!({"name": "svc-renamed"}), "name", json!("svc-renamed")),
        (json!({"role": "limited"}), "role", json!("limited")),
        (
            json!({"expires_at": in_a_day}),
            "expires_at",
            json!(in_a_day),
        ),
        (json!({"expires_at": null}), "expires_at", Value::Null),
    ] {
        let reply = c.call(Method::PATCH, &path, Some(&admin), Some(body)).await;
        version += 1;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json["api_key"][field], value);
        assert_eq!(reply.json["api_key"]["version"], version);
        assert_eq!(reply.etag, Some(quoted(version)), "ETag after {field}");
    }
    assert_eq!(version, 5);

    // A stale If-Match is refused and changes nothing.
    let size = app.log_size();
    let stale = quoted(1);
    for (method, p, body) in [
        (Method::PATCH, path.clone(), Some(json!({"name": "stale"}))),
        (Method::POST, format!("{path}/regenerate"), None),
        (Method::POST, format!("{path}/disable"), None),
        (Method::POST, format!("{path}/enable"), None),
        (Method::DELETE, path.clone(), None),
    ] {
        let reply = c
            .call_if(method.clone(), &p, Some(&admin), body, Some(&stale))
            .await;
        assert_eq!(reply.status, 412, "{method} {p}: {}", reply.text);
        assert_eq!(reply.code(), "version_mismatch");
    }
    assert_eq!(app.log_size(), size, "stale If-Match wrote nothing");
    let reply = c.call(Method::GET, &path, Some(&admin), None).await;
    assert_eq!(reply.json["api_key"]["name"], "svc-renamed");
    assert_eq!(reply.etag, Some(quoted(5)));

    // The current version is accepted; a change to nothing writes nothing.
    let reply = c
        .call_if(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(json!({"name": "svc-final"})),
            Some(&quoted(5)),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.etag, Some(quoted(6)));
    let size = app.log_size();
    let reply = c
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(json!({"name": "svc-final", "role": "limited"})),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.etag,
        Some(quoted(6)),
        "a no-op PATCH keeps the version"
    );
    assert_eq!(app.log_size(), size, "a no-op PATCH writes nothing");

    // Regenerate without grace: the old secret is refused at once.
    let reply = c
        .reveal(
            Method::POST,
            &format!("{path}/regenerate"),
            None,
            Some(&quoted(6)),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.etag, Some(quoted(7)));
    let s2 = reply.json["secret"].as_str().expect("secret").to_string();
    secrets.push(s2.clone());
    assert_ne!(s2, s1);
    assert_eq!(
        reply.json["api_key"]["display"],
        format!("klk_****{}", &s2[49..])
    );
    assert_eq!(c.verify(&s1).await, "REVOKED");
    assert_eq!(c.me(&s1).await, 401);
    assert_eq!(c.verify(&s2).await, "VALID");
    assert_eq!(c.me(&s2).await, 200);

    // Regenerate with grace: the old secret works until the grace ends.
    let reply = c
        .reveal(
            Method::POST,
            &format!("{path}/regenerate"),
            Some(json!({"grace_seconds": 300})),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.etag, Some(quoted(8)));
    let s3 = reply.json["secret"].as_str().expect("secret").to_string();
    secrets.push(s3.clone());
    assert_eq!(c.verify(&s2).await, "VALID");
    assert_eq!(c.me(&s2).await, 200);
    app.clock.advance(299);
    assert_eq!(c.verify(&s2).await, "VALID", "1 s before the grace ends");
    assert_eq!(c.me(&s2).await, 200);
    app.clock.advance(2);
    assert_eq!(c.verify(&s2).await, "REVOKED", "after the grace");
    assert_eq!(c.me(&s2).await, 401);
    assert_eq!(c.verify(&s3).await, "VALID");

    // Disable: refused on the very next request; enable: back.
    let reply = c
        .call(Method::POST, &format!("{path}/disable"), Some(&admin), None)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["api_key"]["status"], "disabled");
    assert_eq!(reply.etag, Some(quoted(9)));
    assert_eq!(c.me(&s3).await, 401);
    assert_eq!(c.verify(&s3).await, "DISABLED");
    let reply = c
        .call(Method::POST, &format!("{path}/enable"), Some(&admin), None)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["api_key"]["status"], "active");
    assert_eq!(reply.etag, Some(quoted(10)));
    assert_eq!(c.me(&s3).await, 200);
    assert_eq!(c.verify(&s3).await, "VALID");

    // Delete: refused at once, still readable, frozen, and its name is free again.
    let reply = c
        .call_if(Method::DELETE, &path, Some(&admin), None, Some(&quoted(10)))
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(c.me(&s3).await, 401);
    assert_eq!(c.verify(&s3).await, "REVOKED");
    assert_eq!(c.verify(&s2).await, "REVOKED");
    let reply = c.call(Method::GET, &path, Some(&admin), None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["api_key"]["status"], "deleted");
    assert_eq!(reply.etag, Some(quoted(11)));
    let size = app.log_size();
    for (method, p, body) in [
        (Method::PATCH, path.clone(), Some(json!({"name": "again"}))),
        (Method::POST, format!("{path}/regenerate"), None),
        (Method::POST, format!("{path}/disable"), None),
        (Method::POST, format!("{path}/enable"), None),
        (Method::DELETE, path.clone(), None),
    ] {
        let reply = c.call(method.clone(), &p, Some(&admin), body).await;
        assert_eq!(reply.status, 409, "{method} {p}: {}", reply.text);
        assert_eq!(reply.code(), "key_deleted");
    }
    assert_eq!(app.log_size(), size);
    let reply = c
        .reveal(
            Method::POST,
            "/v1/admin/api-keys",
            Some(json!({"name": "SVC-FINAL", "role": "basic"})),
            None,
        )
        .await;
    assert_eq!(
        reply.status, 201,
        "a deleted key's name is free: {}",
        reply.text
    );
    secrets.push(reply.json["secret"].as_str().expect("secret").to_string());

    // Names are unique among live keys, ignoring case.
    let size = app.log_size();
    let reply = c
        .call(
            Method::POST,
            "/v1/admin/api-keys",
            Some(&admin),
            Some(json!({"name": "Svc-Admin", "role": "basic"})),
        )
        .await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(reply.code(), "name_taken");
    let reply = c
        .call(
            Method::PATCH,
            &format!("/v1/admin/api-keys/{}", key_ids[2]),
            Some(&admin),
            Some(json!({"name": "  SVC-ADMIN "})),
        )
        .await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(reply.code(), "name_taken");
    assert_eq!(app.log_size(), size);

    // The log: every change of the basic key, in order, versions 1 to 11.
    let log = log(&app);
    let events = stream_events(&log, Stream::ApiKey(uuid(&kb_id)));
    let expected: Vec<(&str, u64)> = [
        "api_key.created",
        "api_key.renamed",
        "api_key.role_changed",
        "api_key.expiry_changed",
        "api_key.expiry_changed",
        "api_key.renamed",
        "api_key.regenerated",
        "api_key.regenerated",
        "api_key.disabled",
        "api_key.enabled",
        "api_key.deleted",
    ]
    .into_iter()
    .zip(1..)
    .collect();
    assert_eq!(events, expected);
    let regenerations: Vec<&Entry> = log
        .iter()
        .map(|(e, _)| e)
        .filter(|e| e.stream == Stream::ApiKey(uuid(&kb_id)))
        .filter(|e| matches!(e.data, EventData::ApiKeyRegenerated(_)))
        .collect();
    for (entry, grace) in regenerations.iter().zip([0, 300]) {
        let EventData::ApiKeyRegenerated(d) = &entry.data else {
            unreachable!()
        };
        assert_eq!(d.previous_valid_until, entry.at.plus_seconds(grace));
    }
    for (entry, _) in &log {
        if entry.stream == Stream::ApiKey(uuid(&kb_id)) {
            assert_eq!(entry.actor.id, app.admin_id);
            assert_eq!(
                entry.actor.credential.as_deref(),
                Some(app.admin_id.as_str())
            );
        }
    }
    // The other keys of each status have their own streams.
    for (id, tail) in [
        (&extra[1], vec!["api_key.created", "api_key.disabled"]),
        (&extra[2], vec!["api_key.created", "api_key.deleted"]),
    ] {
        let got: Vec<&str> = stream_events(&log, Stream::ApiKey(uuid(id)))
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(got, tail);
    }

    assert_log_holds_no_secret(&log, &secrets);
    c.assert_no_secret_seen(&secrets);
    app.stop().await;
}

pub async fn users_and_tokens_lifecycle_end_to_end() {
    let app = TestApp::spawn().await;
    let admin = app.admin.clone();
    let mut c = Client::new(&app);
    let mut secrets = vec![admin.clone()];

    // Register, list, filter.
    let reply = c
        .call(
            Method::POST,
            "/v1/admin/users",
            Some(&admin),
            Some(json!({"email": "alice@example.org", "role": "basic"})),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.etag, Some(quoted(1)));
    let alice = reply.json["user"].clone();
    let alice_id = id_of(&alice);
    assert_eq!(alice["email"], "alice@example.org");
    assert_eq!(alice["role"], "basic");
    assert_eq!(alice["status"], "active");
    assert_eq!(alice["display"], Value::Null);
    assert_eq!(alice["expires_at"], Value::Null);
    assert_eq!(alice["last_used_at"], Value::Null);
    assert_eq!(alice["created_by"], app.admin_id.as_str());
    assert_eq!(alice["version"], 1);
    let reply = c
        .call(
            Method::POST,
            "/v1/admin/users",
            Some(&admin),
            Some(json!({"email": " Bob@Example.ORG ", "role": "limited"})),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let bob = reply.json["user"].clone();
    let bob_id = id_of(&bob);
    assert_eq!(
        bob["email"], "bob@example.org",
        "emails are trimmed and lowercased"
    );

    let reply = c
        .call(Method::GET, "/v1/admin/users", Some(&admin), None)
        .await;
    assert_eq!(
        ids(&reply.json["users"]),
        vec![alice_id.clone(), bob_id.clone()]
    );
    let reply = c
        .call(
            Method::GET,
            "/v1/admin/users?status=active",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        ids(&reply.json["users"]),
        vec![alice_id.clone(), bob_id.clone()]
    );
    let reply = c
        .call(
            Method::GET,
            "/v1/admin/users?status=deactivated",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(ids(&reply.json["users"]), Vec::<String>::new());

    // Duplicate email (any case): 409, nothing written.
    let size = app.log_size();
    let reply = c
        .call(
            Method::POST,
            "/v1/admin/users",
            Some(&admin),
            Some(json!({"email": "ALICE@example.org", "role": "admin"})),
        )
        .await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(reply.code(), "email_taken");
    assert_eq!(app.log_size(), size);

    // Change role, with ETag and If-Match.
    let alice_path = format!("/v1/admin/users/{alice_id}");
    let reply = c
        .call_if(
            Method::PATCH,
            &alice_path,
            Some(&admin),
            Some(json!({"role": "admin"})),
            Some(&quoted(1)),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["user"]["role"], "admin");
    assert_eq!(reply.etag, Some(quoted(2)));
    let size = app.log_size();
    let reply = c
        .call_if(
            Method::PATCH,
            &alice_path,
            Some(&admin),
            Some(json!({"role": "basic"})),
            Some(&quoted(1)),
        )
        .await;
    assert_eq!(reply.status, 412);
    assert_eq!(reply.code(), "version_mismatch");
    assert_eq!(app.log_size(), size);

    // Tokens issued by an admin.
    let tokens_path = format!("/v1/admin/users/{alice_id}/tokens");
    let now = app.clock.now();
    let reply = c
        .reveal(
            Method::POST,
            &tokens_path,
            Some(json!({"name": "laptop"})),
            None,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let t1 = reply.json["token"].clone();
    let t1_secret = reply.json["secret"].as_str().expect("secret").to_string();
    secrets.push(t1_secret.clone());
    assert!(t1_secret.starts_with("klp_") && t1_secret.len() == 53);
    assert_eq!(t1["user_id"], alice_id.as_str());
    assert_eq!(t1["name"], "laptop");
    assert_eq!(t1["status"], "active");
    assert_eq!(t1["display"], format!("klp_****{}", &t1_secret[49..]));
    assert_eq!(t1["expires_at"], now.plus_seconds(90 * 86_400).to_rfc3339());
    assert!(t1.get("secret").is_none());
    let reply = c
        .reveal(
            Method::POST,
            &tokens_path,
            Some(json!({"name": "ci", "expires_in_days": 7})),
            None,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let t2 = reply.json["token"].clone();
    let t2_secret = reply.json["secret"].as_str().expect("secret").to_string();
    secrets.push(t2_secret.clone());
    assert_eq!(t2["expires_at"], now.plus_seconds(7 * 86_400).to_rfc3339());
    let reply = c.call(Method::GET, &tokens_path, Some(&admin), None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(ids(&reply.json["tokens"]), vec![id_of(&t1), id_of(&t2)]);

    // /v1/me of a PAT.
    let reply = c.call(Method::GET, "/v1/me", Some(&t1_secret), None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json,
        json!({
            "principal": {"kind": "user", "id": alice_id, "email": "alice@example.org", "role": "admin"},
            "credential": {"kind": "pat", "id": t1["id"], "display": t1["display"], "expires_at": t1["expires_at"]},
        })
    );
    let reply = c
        .call(Method::GET, "/v1/admin/users", Some(&admin), None)
        .await;
    assert_eq!(
        reply.json["users"][0]["last_used_at"],
        app.clock.now().to_rfc3339(),
        "a user's last_used_at follows their tokens"
    );

    // Revoke through the admin route.
    let reply = c
        .call(
            Method::DELETE,
            &format!("/v1/admin/tokens/{}", id_of(&t2)),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(c.verify(&t2_secret).await, "REVOKED");
    assert_eq!(c.me(&t2_secret).await, 401);
    let size = app.log_size();
    let reply = c
        .call(
            Method::DELETE,
            &format!("/v1/admin/tokens/{}", id_of(&t2)),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(reply.status, 409);
    assert_eq!(reply.code(), "token_revoked");
    assert_eq!(app.log_size(), size);

    // A user's own tokens.
    let reply = c
        .raw(
            Method::POST,
            "/v1/me/tokens",
            Some(&t1_secret),
            Some(json!({"name": "cli"})),
            None,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let t3 = reply.json["token"].clone();
    let t3_secret = reply.json["secret"].as_str().expect("secret").to_string();
    secrets.push(t3_secret.clone());
    assert_eq!(t3["user_id"], alice_id.as_str());
    assert_eq!(t3["created_by"], alice_id.as_str());
    let (b1, b1_secret) = app.issue_token(&bob_id, "bob-laptop").await;
    secrets.push(b1_secret.clone());
    let reply = c
        .call(Method::GET, "/v1/me/tokens", Some(&t3_secret), None)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        ids(&reply.json["tokens"]),
        vec![id_of(&t1), id_of(&t2), id_of(&t3)],
        "only alice's tokens"
    );
    let reply = c
        .call(Method::GET, "/v1/me/tokens", Some(&b1_secret), None)
        .await;
    assert_eq!(
        ids(&reply.json["tokens"]),
        vec![id_of(&b1)],
        "only bob's tokens"
    );

    let size = app.log_size();
    let reply = c
        .call(
            Method::DELETE,
            &format!("/v1/me/tokens/{}", id_of(&b1)),
            Some(&t1_secret),
            None,
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    assert_eq!(reply.code(), "token_not_found");
    assert_eq!(app.log_size(), size);
    assert_eq!(c.verify(&b1_secret).await, "VALID");
    let reply = c
        .call(
            Method::DELETE,
            &format!("/v1/me/tokens/{}", id_of(&t3)),
            Some(&t1_secret),
            None,
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(c.verify(&t3_secret).await, "REVOKED");
    assert_eq!(c.me(&t3_secret).await, 401);

    // Deactivate: every token of the user stops at once.
    let reply = c
        .call(Method::DELETE, &alice_path, Some(&admin), None)
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert_eq!(c.verify(&t1_secret).await, "REVOKED");
    assert_eq!(c.me(&t1_secret).await, 401);
    assert_eq!(c.verify(&b1_secret).await, "VALID", "bob is untouched");
    let reply = c.call(Method::GET, &tokens_path, Some(&admin), None).await;
    for token in reply.json["tokens"].as_array().expect("array") {
        assert_eq!(token["status"], "revoked", "{token}");
    }
    let reply = c
        .call(
            Method::GET,
            "/v1/admin/users?status=deactivated",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(ids(&reply.json["users"]), vec![alice_id.clone()]);
    assert_eq!(reply.json["users"][0]["status"], "deactivated");
    let size = app.log_size();
    for (method, path, body) in [
        (
            Method::PATCH,
            alice_path.clone(),
            Some(json!({"role": "basic"})),
        ),
        (Method::DELETE, alice_path.clone(), None),
        (
            Method::POST,
            tokens_path.clone(),
            Some(json!({"name": "more"})),
        ),
    ] {
        let reply = c.call(method.clone(), &path, Some(&admin), body).await;
        assert_eq!(reply.status, 409, "{method} {path}: {}", reply.text);
        assert_eq!(reply.code(), "user_deactivated");
    }
    assert_eq!(app.log_size(), size);
    // A deactivated user's email may be registered again.
    let reply = c
        .call(
            Method::POST,
            "/v1/admin/users",
            Some(&admin),
            Some(json!({"email": "alice@example.org", "role": "basic"})),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);

    // The log.
    let log = log(&app);
    let just_types = |stream| -> Vec<&'static str> {
        stream_events(&log, stream)
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    };
    assert_eq!(
        just_types(Stream::User(uuid(&alice_id))),
        vec!["user.registered", "user.role_changed", "user.deactivated"]
    );
    for token in [&t1, &t2, &t3] {
        assert_eq!(
            just_types(Stream::Pat(uuid(&id_of(token)))),
            vec!["pat.created", "pat.revoked"]
        );
    }
    assert_eq!(
        just_types(Stream::Pat(uuid(&id_of(&b1)))),
        vec!["pat.created"]
    );
    let reasons: Vec<(String, String)> = log
        .iter()
        .filter_map(|(e, _)| match &e.data {
            EventData::PatRevoked(d) => Some((d.token_id.to_string(), d.reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            (id_of(&t2), "revoked".to_string()),
            (id_of(&t3), "revoked".to_string()),
            (id_of(&t1), "user_deactivated".to_string()),
        ]
    );
    // Alice made and revoked her own token: the events name her and the token she used.
    for (entry, _) in &log {
        if entry.stream == Stream::Pat(uuid(&id_of(&t3))) {
            assert_eq!(entry.actor.id, alice_id);
            assert_eq!(entry.actor.credential, Some(id_of(&t1)));
        }
    }
    assert_log_holds_no_secret(&log, &secrets);
    c.assert_no_secret_seen(&secrets);
    app.stop().await;
}
