//! The machine-readable contracts in `schemas/` held to real output (SPEC §8):
//! - every answer of a real server driven through the whole lifecycle matches the OpenAPI
//!   document (status documented, body and headers valid against its schema);
//! - every exported entry matches `entry.schema.json` and its type's `events/*.schema.json`;
//! - the schemas refuse wrong output (extra fields, timestamps without microseconds, floats,
//!   missing fields…), so a passing check means something;
//! - the OpenAPI document and the router list the same routes and methods;
//! - `policy.schema.json` accepts the built-in policy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use jsonschema::{Registry, Validator};
use keyledger::crypto::secret::{PlainSecret, SecretKind};
use keyledger::domain::events::{EVENT_TYPES, SignerRotated};
use keyledger::domain::{Clock, EventData};
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, ETAG, HeaderMap, IF_MATCH, IF_NONE_MATCH};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::TestApp;

/// Where the schemas say they live (`$id`s); nothing is fetched from there.
const BASE: &str = "https://keyledger.dev/schemas/";
/// The URI the OpenAPI document is registered under, so `#/components/...` refs resolve.
const OPENAPI: &str = "https://keyledger.dev/schemas/openapi.json";
/// Methods the router could serve (HEAD and OPTIONS are axum's own).
const METHODS: [&str; 6] = ["get", "post", "put", "patch", "delete", "options"];

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read_json(relative: &str) -> Value {
    let path = repo_file(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn event_file(event_type: &str) -> String {
    format!("schemas/events/{event_type}.schema.json")
}

/// Rewrites the document-local refs (`#/components/...`) of a piece of the OpenAPI document
/// into absolute ones, so the piece can be compiled on its own against the registry.
fn absolutize(value: &Value) -> Value {
    rewrite_refs(value, &|r| {
        if r.starts_with('#') {
            format!("{OPENAPI}{r}")
        } else {
            r.to_string()
        }
    })
}

/// The schemas, loaded from `schemas/` and registered under their `$id`s.
struct Contracts {
    openapi: Value,
    registry: Registry<'static>,
}

impl Contracts {
    fn load() -> Contracts {
        let openapi = read_json("schemas/openapi.json");
        let mut resources = vec![(OPENAPI.to_string(), openapi.clone())];
        let mut files = vec!["schemas/entry.schema.json".to_string()];
        files.extend(EVENT_TYPES.iter().map(|t| event_file(t)));
        for file in files {
            let schema = read_json(&file);
            let id = schema["$id"].as_str().expect("every schema has an $id");
            let expected = format!("{BASE}{}", file.trim_start_matches("schemas/"));
            assert_eq!(id, expected, "{file}: $id must name where the file lives");
            resources.push((id.to_string(), schema));
        }
        let registry = Registry::new()
            .extend(resources)
            .expect("schema URIs are valid")
            .prepare()
            .expect("every $ref of the schemas resolves");
        Contracts { openapi, registry }
    }

    /// Compiles a schema; formats (uuid, date-time, date) are checked, not just annotated.
    fn validator(&self, schema: &Value) -> Validator {
        jsonschema::options()
            .should_validate_formats(true)
            .with_registry(&self.registry)
            .build(schema)
            .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema:#}"))
    }

    fn by_uri(&self, uri: &str) -> Validator {
        self.validator(&json!({"$ref": uri}))
    }

    /// A schema of the OpenAPI document's `components/schemas`.
    fn component(&self, name: &str) -> Validator {
        assert!(
            self.openapi["components"]["schemas"].get(name).is_some(),
            "no component schema {name}"
        );
        self.by_uri(&format!("{OPENAPI}#/components/schemas/{name}"))
    }

    /// `schemas/entry.schema.json`.
    fn entry(&self) -> Validator {
        self.by_uri(&format!("{BASE}entry.schema.json"))
    }

    /// `schemas/events/<type>.schema.json`.
    fn event_data(&self, event_type: &str) -> Validator {
        self.by_uri(&format!("{BASE}events/{event_type}.schema.json"))
    }

    fn paths(&self) -> &serde_json::Map<String, Value> {
        self.openapi["paths"].as_object().expect("paths")
    }

    /// `(path template, method)` of every operation of the document.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.paths() {
            for method in METHODS {
                if item.get(method).is_some() {
                    out.insert((path.clone(), method.to_string()));
                }
            }
        }
        out
    }

    /// The path template a concrete path (without query) falls under.
    fn template_of(&self, path: &str) -> String {
        let segments: Vec<&str> = path.split('/').collect();
        self.paths()
            .keys()
            .find(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                parts.len() == segments.len()
                    && parts
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
            })
            .unwrap_or_else(|| panic!("{path} matches no path of the OpenAPI document"))
            .clone()
    }

    /// The documented response of an operation for a status, its `$ref` followed.
    fn response(&self, template: &str, method: &str, status: u16) -> Option<&Value> {
        let response =
            self.openapi["paths"][template][method]["responses"].get(status.to_string())?;
        match response.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.strip_prefix('#').expect("a local response $ref");
                Some(
                    self.openapi
                        .pointer(pointer)
                        .expect("response $ref resolves"),
                )
            }
            None => Some(response),
        }
    }
}

fn errors_of(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} (at {})", e, e.instance_path()))
        .collect()
}

#[track_caller]
fn assert_valid(validator: &Validator, instance: &Value, what: &str) {
    let errors = errors_of(validator, instance);
    assert!(
        errors.is_empty(),
        "{what} does not match its schema:\n  {}\n{instance:#}",
        errors.join("\n  ")
    );
}

#[track_caller]
fn assert_invalid(validator: &Validator, instance: &Value, what: &str) {
    assert!(
        !validator.is_valid(instance),
        "the schema should refuse {what}: {instance}"
    );
}

/// One answer, read whole.
struct Reply {
    status: u16,
    headers: HeaderMap,
    text: String,
    json: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    fn etag(&self) -> String {
        self.headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .expect("an ETag")
            .to_string()
    }

    #[track_caller]
    fn expect(self, status: u16) -> Reply {
        assert_eq!(self.status, status, "{}", self.text);
        self
    }

    #[track_caller]
    fn expect_error(self, status: u16, code: &str) -> Reply {
        assert_eq!((self.status, self.code()), (status, code), "{}", self.text);
        self
    }

    fn str(&self, pointer: &str) -> String {
        self.json
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string at {pointer} in {}", self.text))
            .to_string()
    }
}

/// A request body.
enum Body {
    None,
    Json(Value),
    /// Raw bytes with an optional Content-Type.
    Raw(Option<&'static str>, Vec<u8>),
}

/// Sends requests to a [`TestApp`] and holds every answer to the OpenAPI document.
struct Checker<'a> {
    app: &'a TestApp,
    contracts: &'a Contracts,
    /// `(path template, method, status)` of every answer checked.
    checked: BTreeSet<(String, String, u16)>,
    /// Compiled response schemas, by JSON pointer into the document.
    validators: BTreeMap<String, Validator>,
}

impl<'a> Checker<'a> {
    fn new(app: &'a TestApp, contracts: &'a Contracts) -> Checker<'a> {
        Checker {
            app,
            contracts,
            checked: BTreeSet::new(),
            validators: BTreeMap::new(),
        }
    }

    async fn get(&mut self, path: &str, secret: Option<&str>) -> Reply {
        self.send(Method::GET, path, secret, Body::None, None).await
    }

    /// A GET with `If-None-Match: <tag>`.
    async fn get_unless(&mut self, path: &str, secret: Option<&str>, tag: &str) -> Reply {
        let mut request = self
            .app
            .client
            .get(self.app.url(path))
            .header(IF_NONE_MATCH, tag);
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        let reply = Self::read(request.send().await.expect("request")).await;
        let path_only = path.split('?').next().unwrap_or(path);
        self.check(&Method::GET, path_only, &reply);
        reply
    }

    async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// A request without a body, with extra headers (the forward-auth endpoints).
    async fn ask(
        &mut self,
        method: Method,
        path: &str,
        secret: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.app.client.request(method.clone(), self.app.url(path));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let reply = Self::read(request.send().await.expect("request")).await;
        self.check(&method, path.split('?').next().unwrap_or(path), &reply);
        reply
    }

    async fn post(&mut self, path: &str, secret: Option<&str>, body: Value) -> Reply {
        self.send(Method::POST, path, secret, Body::Json(body), None)
            .await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        secret: Option<&str>,
        body: Body,
        if_match: Option<&str>,
    ) -> Reply {
        let mut request = self.app.client.request(method.clone(), self.app.url(path));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        match body {
            Body::None => {}
            Body::Json(value) => request = request.json(&value),
            Body::Raw(content_type, bytes) => {
                if let Some(content_type) = content_type {
                    request = request.header(CONTENT_TYPE, content_type);
                }
                request = request.body(bytes);
            }
        }
        if let Some(version) = if_match {
            request = request.header(IF_MATCH, version);
        }
        let reply = Self::read(request.send().await.expect("request")).await;
        let path_only = path.split('?').next().unwrap_or(path);
        self.check(&method, path_only, &reply);
        reply
    }

    fn compiled(&mut self, pointer: String, schema: &Value) -> &Validator {
        let contracts = self.contracts;
        self.validators
            .entry(pointer)
            .or_insert_with(|| contracts.validator(&absolutize(schema)))
    }

    /// Holds one answer to the document: its status is documented for the operation, its
    /// media type is, its body matches that media type's schema, and the documented
    /// required headers are present and valid.
    fn check(&mut self, method: &Method, path: &str, reply: &Reply) {
        let template = self.contracts.template_of(path);
        let method = method.as_str().to_ascii_lowercase();
        let what = format!("{} {path} → {}", method.to_uppercase(), reply.status);
        assert!(reply.status < 500, "{what}: server error: {}", reply.text);
        let response = self
            .contracts
            .response(&template, &method, reply.status)
            .unwrap_or_else(|| panic!("{what}: status not documented: {}", reply.text))
            .clone();
        match response.get("content").and_then(Value::as_object) {
            None => assert!(reply.text.is_empty(), "{what}: undocumented body"),
            Some(content) => {
                let media = reply
                    .headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').next())
                    .map(|v| v.trim().to_ascii_lowercase())
                    .unwrap_or_else(|| panic!("{what}: no Content-Type"));
                let documented = content
                    .get(&media)
                    .unwrap_or_else(|| panic!("{what}: media type {media} not documented"));
                let key = format!("{template} {method} {} {media}", reply.status);
                let schema = &documented["schema"];
                match media.as_str() {
                    "application/json" => {
                        let validator = self.compiled(key, schema);
                        assert_valid(validator, &reply.json, &what);
                    }
                    "application/x-ndjson" => {
                        let item = &documented["x-item-schema"];
                        let validator = self.compiled(key, item);
                        for line in reply.text.lines() {
                            let entry: Value = serde_json::from_str(line).expect("a JSON line");
                            assert_valid(validator, &entry, &what);
                        }
                    }
                    _ => {
                        let validator = self.compiled(key, schema);
                        assert_valid(validator, &Value::String(reply.text.clone()), &what);
                    }
                }
            }
        }
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for (name, header) in headers {
                let value = reply
                    .headers
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok());
                match value {
                    None => assert!(
                        header["required"] != json!(true),
                        "{what}: no {name} header"
                    ),
                    Some(value) => {
                        let key = format!("{template} {method} {} header {name}", reply.status);
                        let validator = self.compiled(key, &header["schema"]);
                        assert_valid(validator, &Value::String(value.to_string()), &what);
                    }
                }
            }
        }
        self.checked.insert((template, method, reply.status));
    }
}

fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// Drives a real server through every route, successes and failures, checking each answer
/// against the OpenAPI document; then checks every exported entry against the entry and
/// event schemas, and that each event schema refuses real data with a field missing.
pub async fn real_answers_and_entries_match_the_schemas() {
    let contracts = Contracts::load();
    let app = TestApp::spawn().await;
    let mut c = Checker::new(&app, &contracts);
    let admin = app.admin.clone();
    let a = Some(admin.as_str());

    // Public routes.
    c.get("/healthz", None).await.expect(200);
    c.get("/readyz", None).await.expect(200);
    c.get("/metrics", None).await.expect(200);
    c.get("/v1/audit/public-key", None).await.expect(200);
    for page in ["/", "/ui/app.js", "/ui/app.css"] {
        c.get(page, None).await.expect(200);
    }

    // API keys: create, and every way a create fails.
    let keys = "/v1/admin/api-keys";
    let created = c
        .post(
            keys,
            a,
            json!({"name": "ci bot", "role": "basic", "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await
        .expect(201);
    let key_id = created.str("/api_key/id");
    let mut key_secret = created.str("/secret");
    let mut etag = created.etag();
    c.post(keys, a, json!({"name": "CI BOT", "role": "basic"}))
        .await
        .expect_error(409, "name_taken");
    c.post(keys, a, json!({"name": "x", "role": "auditor"}))
        .await
        .expect_error(422, "invalid_role");
    c.post(keys, a, json!({"name": "   ", "role": "basic"}))
        .await
        .expect_error(422, "invalid_name");
    c.post(
        keys,
        a,
        json!({"name": "x", "role": "basic", "expires_at": "2000-01-01T00:00:00Z"}),
    )
    .await
    .expect_error(422, "expiry_in_past");
    c.post(
        keys,
        a,
        json!({"name": "x", "role": "basic", "expires_at": "yesterday"}),
    )
    .await
    .expect_error(422, "invalid_timestamp");
    c.post(keys, a, json!({"name": "x"}))
        .await
        .expect_error(400, "invalid_body");
    let raw = |ct, text: &str| Body::Raw(ct, text.as_bytes().to_vec());
    c.send(
        Method::POST,
        keys,
        a,
        raw(Some("application/json"), "{"),
        None,
    )
    .await
    .expect_error(400, "malformed_json");
    c.send(
        Method::POST,
        keys,
        a,
        raw(None, r#"{"name":"x","role":"basic"}"#),
        None,
    )
    .await
    .expect_error(415, "unsupported_media_type");
    let big = json!({"name": "x".repeat(70 * 1024), "role": "basic"});
    c.send(Method::POST, keys, a, Body::Json(big), None)
        .await
        .expect_error(413, "body_too_large");
    c.post(keys, None, json!({"name": "x", "role": "basic"}))
        .await
        .expect_error(401, "unauthorized");
    c.post(
        keys,
        Some("klk_nope"),
        json!({"name": "x", "role": "basic"}),
    )
    .await
    .expect_error(401, "unauthorized");

    // Reading keys.
    c.get(keys, a).await.expect(200);
    c.get(&format!("{keys}?status=active"), a).await.expect(200);
    c.get(&format!("{keys}?status=bogus"), a)
        .await
        .expect_error(400, "invalid_query");
    let key = format!("{keys}/{key_id}");
    let got = c.get(&key, a).await.expect(200);
    c.get_unless(&key, a, &got.etag()).await.expect(304);
    c.get_unless(&key, a, "\"1.0000000000000000\"")
        .await
        .expect(200);
    let page = c.get(&format!("{keys}?limit=1"), a).await.expect(200);
    let next = page.str("/next_after");
    c.get(&format!("{keys}?limit=1&after={next}"), a)
        .await
        .expect(200);
    let list_tag = c.get(keys, a).await.expect(200).etag();
    c.get_unless(keys, a, &list_tag).await.expect(304);
    for query in [
        "q=ci&sort=-name",
        "sort=last_used",
        "sort=-created&limit=1000",
    ] {
        c.get(&format!("{keys}?{query}"), a).await.expect(200);
    }
    for query in [
        "sort=size",
        "limit=0",
        "limit=1001",
        "after=not-an-id",
        &format!("after={}", new_id()),
    ] {
        c.get(&format!("{keys}?{query}"), a)
            .await
            .expect_error(400, "invalid_query");
    }
    c.get(&format!("{keys}/{}", new_id()), a)
        .await
        .expect_error(404, "api_key_not_found");
    c.get(&format!("{keys}/not-a-uuid"), a)
        .await
        .expect_error(404, "not_found");

    // Changing a key, with and without a current If-Match.
    let patch = |body: Value| Body::Json(body);
    let changed = c
        .send(
            Method::PATCH,
            &key,
            a,
            patch(json!({"name": "ci bot 2", "role": "limited", "expires_at": null})),
            Some(&etag),
        )
        .await
        .expect(200);
    etag = changed.etag();
    c.send(
        Method::PATCH,
        &key,
        a,
        patch(json!({"expires_at": "2098-01-01T00:00:00Z"})),
        None,
    )
    .await
    .expect(200);
    c.send(
        Method::PATCH,
        &key,
        a,
        patch(json!({"name": "y"})),
        Some(&etag),
    )
    .await
    .expect_error(412, "version_mismatch");
    c.send(
        Method::PATCH,
        &key,
        a,
        patch(json!({"name": "y"})),
        Some("nope"),
    )
    .await
    .expect_error(400, "invalid_if_match");
    c.send(Method::PATCH, &key, a, patch(json!({"role": "root"})), None)
        .await
        .expect_error(422, "invalid_role");

    // Regenerating, disabling, enabling.
    let regenerate = format!("{key}/regenerate");
    let regenerated = c
        .post(&regenerate, a, json!({"grace_seconds": 60}))
        .await
        .expect(200);
    assert_ne!(regenerated.str("/secret"), key_secret);
    c.post(&regenerate, a, json!({"grace_seconds": 10_000_000}))
        .await
        .expect_error(422, "grace_too_long");
    c.send(
        Method::POST,
        &regenerate,
        a,
        raw(Some("text/plain"), "hi"),
        None,
    )
    .await
    .expect_error(415, "unsupported_media_type");
    let big = json!({"grace_seconds": 1, "pad": "x".repeat(70 * 1024)});
    c.send(Method::POST, &regenerate, a, Body::Json(big), None)
        .await
        .expect_error(413, "body_too_large");
    let regenerated = c
        .send(Method::POST, &regenerate, a, Body::None, None)
        .await
        .expect(200);
    key_secret = regenerated.str("/secret");
    etag = regenerated.etag();
    c.send(
        Method::POST,
        &format!("{key}/disable"),
        a,
        Body::None,
        Some(&etag),
    )
    .await
    .expect(200);
    let verify = "/v1/verify";
    let answer = c
        .post(verify, None, json!({"key": key_secret}))
        .await
        .expect(200);
    assert_eq!(answer.str("/code"), "DISABLED");
    c.send(
        Method::POST,
        &format!("{key}/enable"),
        a,
        Body::None,
        Some(&etag),
    )
    .await
    .expect_error(412, "version_mismatch");
    c.send(Method::POST, &format!("{key}/enable"), a, Body::None, None)
        .await
        .expect(200);
    for action in ["disable", "enable", "regenerate"] {
        c.send(
            Method::POST,
            &format!("{keys}/{}/{action}", new_id()),
            a,
            Body::None,
            None,
        )
        .await
        .expect_error(404, "api_key_not_found");
    }

    // Verification, every kind of answer.
    let limited = Some(key_secret.as_str());
    for (method, path, code) in [
        ("GET", "/agents/1", "VALID"),
        ("GET", "/chat/1", "FORBIDDEN"),
    ] {
        let answer = c
            .post(
                verify,
                None,
                json!({"key": key_secret, "method": method, "path": path}),
            )
            .await
            .expect(200);
        assert_eq!(answer.str("/code"), code);
    }
    c.post(verify, None, json!({"key": key_secret}))
        .await
        .expect(200);
    let answer = c
        .post(verify, None, json!({"key": "klk_nope"}))
        .await
        .expect(200);
    assert_eq!(answer.str("/code"), "MALFORMED");
    c.post(verify, None, json!({"key": key_secret, "method": "GET"}))
        .await
        .expect_error(422, "invalid_target");
    c.post(
        verify,
        None,
        json!({"key": key_secret, "client_ip": "10.0.0.256"}),
    )
    .await
    .expect_error(422, "invalid_client_ip");
    c.post(verify, None, json!({"key": 1}))
        .await
        .expect_error(400, "invalid_body");
    c.send(
        Method::POST,
        verify,
        None,
        raw(None, r#"{"key":"x"}"#),
        None,
    )
    .await
    .expect_error(415, "unsupported_media_type");

    // Forward-auth, every family, allowed and refused.
    let nginx = "/v1/auth/nginx";
    let original = |method: &'static str, uri: &'static str| {
        [("x-original-method", method), ("x-original-uri", uri)]
    };
    let answer = c
        .ask(Method::GET, nginx, limited, &original("GET", "/agents/1"))
        .await
        .expect(200);
    assert_eq!(answer.str("/principal/role"), "limited");
    c.ask(Method::GET, nginx, limited, &original("GET", "/chat/1"))
        .await
        .expect_error(403, "forbidden");
    c.ask(Method::GET, nginx, None, &original("GET", "/agents/1"))
        .await
        .expect_error(401, "unauthorized");
    c.ask(
        Method::GET,
        nginx,
        Some("klk_nope"),
        &original("GET", "/agents/1"),
    )
    .await
    .expect_error(401, "unauthorized");
    c.ask(Method::GET, nginx, limited, &[])
        .await
        .expect_error(403, "no_original_uri");
    let forward = "/v1/auth/forward";
    let forwarded = |method: &'static str, uri: &'static str| {
        [("x-forwarded-method", method), ("x-forwarded-uri", uri)]
    };
    c.ask(
        Method::GET,
        forward,
        limited,
        &forwarded("POST", "/chat/send-message"),
    )
    .await
    .expect(200);
    c.ask(
        Method::GET,
        forward,
        limited,
        &forwarded("DELETE", "/agents/1"),
    )
    .await
    .expect_error(403, "forbidden");
    c.ask(Method::GET, forward, None, &forwarded("GET", "/agents/1"))
        .await
        .expect_error(401, "unauthorized");
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        c.ask(method.clone(), "/v1/auth/envoy/agents", a, &[])
            .await
            .expect(200);
        c.ask(method.clone(), "/v1/auth/envoy/", a, &[])
            .await
            .expect(200);
        c.ask(method, "/v1/auth/envoy/admin", Some("klk_nope"), &[])
            .await
            .expect_error(401, "unauthorized");
    }
    c.ask(Method::DELETE, "/v1/auth/envoy/agents", limited, &[])
        .await
        .expect_error(403, "forbidden");

    // Who am I, and what a limited key may not do.
    c.get("/v1/me", limited).await.expect(200);
    c.get("/v1/me", a).await.expect(200);
    c.get("/v1/me", None)
        .await
        .expect_error(401, "unauthorized");
    c.get(keys, limited).await.expect_error(403, "forbidden");
    c.get("/v1/me/tokens", limited)
        .await
        .expect_error(403, "users_only");

    // A key that expires.
    let soon = app.clock.now().plus_seconds(60).to_rfc3339();
    let short = c
        .post(
            keys,
            a,
            json!({"name": "short-lived", "role": "basic", "expires_at": soon}),
        )
        .await
        .expect(201);
    app.clock.advance(120);
    let expired = c
        .get(&format!("{keys}?status=expired"), a)
        .await
        .expect(200);
    assert_eq!(
        expired.json["api_keys"][0]["id"],
        short.json["api_key"]["id"]
    );
    let answer = c
        .post(verify, None, json!({"key": short.str("/secret")}))
        .await
        .expect(200);
    assert_eq!(answer.str("/code"), "EXPIRED");

    // Users.
    let users = "/v1/admin/users";
    let ada = c
        .post(
            users,
            a,
            json!({"email": "Ada@Example.org", "role": "basic"}),
        )
        .await
        .expect(201);
    let ada_id = ada.str("/user/id");
    let ada_etag = ada.etag();
    c.post(
        users,
        a,
        json!({"email": "ada@example.org", "role": "basic"}),
    )
    .await
    .expect_error(409, "email_taken");
    c.post(users, a, json!({"email": "no-at-sign", "role": "basic"}))
        .await
        .expect_error(422, "invalid_email");
    c.post(
        users,
        a,
        json!({"email": "bob@example.org", "role": "root"}),
    )
    .await
    .expect_error(422, "invalid_role");
    c.get(users, a).await.expect(200);
    c.get(&format!("{users}?status=active"), a)
        .await
        .expect(200);
    c.get(&format!("{users}?status=gone"), a)
        .await
        .expect_error(400, "invalid_query");
    let user = format!("{users}/{ada_id}");
    let got = c.get(&user, a).await.expect(200);
    c.get_unless(&user, a, &got.etag()).await.expect(304);
    c.get(&format!("{users}/{}", new_id()), a)
        .await
        .expect_error(404, "user_not_found");
    c.get(&format!("{users}?q=ADA&sort=-email&limit=1"), a)
        .await
        .expect(200);
    let promoted = c
        .send(
            Method::PATCH,
            &user,
            a,
            patch(json!({"role": "admin"})),
            Some(&ada_etag),
        )
        .await
        .expect(200);
    c.send(
        Method::PATCH,
        &user,
        a,
        patch(json!({"role": "basic"})),
        Some(&ada_etag),
    )
    .await
    .expect_error(412, "version_mismatch");
    c.send(
        Method::PATCH,
        &user,
        a,
        patch(json!({"role": "root"})),
        None,
    )
    .await
    .expect_error(422, "invalid_role");
    c.send(
        Method::PATCH,
        &format!("{users}/{}", new_id()),
        a,
        patch(json!({"role": "basic"})),
        None,
    )
    .await
    .expect_error(404, "user_not_found");
    let auditor = c
        .post(
            users,
            a,
            json!({"email": "audrey@example.org", "role": "auditor"}),
        )
        .await
        .expect(201);

    // Tokens, issued by an admin and by the user.
    let ada_tokens = format!("{user}/tokens");
    let laptop = c
        .post(&ada_tokens, a, json!({"name": "laptop"}))
        .await
        .expect(201);
    let pat = laptop.str("/secret");
    let ada_pat = Some(pat.as_str());
    let laptop_path = laptop
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location")
        .to_string();
    assert_eq!(
        laptop_path,
        format!("/v1/admin/tokens/{}", laptop.str("/token/id"))
    );
    let got = c.get(&laptop_path, a).await.expect(200);
    c.get_unless(&laptop_path, a, &got.etag()).await.expect(304);
    c.get(&format!("/v1/admin/tokens/{}", new_id()), a)
        .await
        .expect_error(404, "token_not_found");
    c.post(&ada_tokens, a, json!({"name": "x", "expires_in_days": 0}))
        .await
        .expect_error(422, "invalid_lifetime");
    c.post(
        &format!("{users}/{}/tokens", new_id()),
        a,
        json!({"name": "x"}),
    )
    .await
    .expect_error(404, "user_not_found");
    c.get(&ada_tokens, a).await.expect(200);
    c.get(&format!("{users}/{}/tokens", new_id()), a)
        .await
        .expect_error(404, "user_not_found");
    let audrey_tokens = format!("{users}/{}/tokens", auditor.str("/user/id"));
    let audrey = c
        .post(
            &audrey_tokens,
            a,
            json!({"name": "audit", "expires_in_days": 7}),
        )
        .await
        .expect(201)
        .str("/secret");
    let auditor_pat = Some(audrey.as_str());

    c.get("/v1/me", ada_pat).await.expect(200);
    c.get("/v1/me/tokens", ada_pat).await.expect(200);
    let phone = c
        .post("/v1/me/tokens", ada_pat, json!({"name": "phone"}))
        .await
        .expect(201);
    let phone_path = format!("/v1/me/tokens/{}", phone.str("/token/id"));
    c.get(&phone_path, ada_pat).await.expect(200);
    // Another user's token is no token.
    c.get(&laptop_path.replace("/v1/admin/", "/v1/me/"), auditor_pat)
        .await
        .expect_error(404, "token_not_found");
    c.post("/v1/me/tokens", ada_pat, json!({"name": ""}))
        .await
        .expect_error(422, "invalid_name");
    c.send(Method::DELETE, &phone_path, ada_pat, Body::None, None)
        .await
        .expect(204);
    c.send(Method::DELETE, &phone_path, ada_pat, Body::None, None)
        .await
        .expect_error(409, "token_revoked");
    c.send(
        Method::DELETE,
        &format!("/v1/me/tokens/{}", new_id()),
        ada_pat,
        Body::None,
        None,
    )
    .await
    .expect_error(404, "token_not_found");
    let answer = c
        .post(
            verify,
            None,
            json!({"key": pat, "method": "GET", "path": "/agents"}),
        )
        .await
        .expect(200);
    assert_eq!(answer.str("/code"), "VALID");
    let spare = c
        .post(&ada_tokens, a, json!({"name": "spare"}))
        .await
        .expect(201);
    let spare_path = format!("/v1/admin/tokens/{}", spare.str("/token/id"));
    c.send(Method::DELETE, &spare_path, a, Body::None, None)
        .await
        .expect(204);
    c.send(Method::DELETE, &spare_path, a, Body::None, None)
        .await
        .expect_error(409, "token_revoked");
    c.send(
        Method::DELETE,
        &format!("/v1/admin/tokens/{}", new_id()),
        a,
        Body::None,
        None,
    )
    .await
    .expect_error(404, "token_not_found");
    c.get(users, auditor_pat)
        .await
        .expect_error(403, "forbidden");

    // Close an activity window so the log holds credential.activity events.
    app.state
        .activity
        .flush(&app.ledger, app.clock.now())
        .await
        .expect("activity flush");

    // The audit API, as an admin and as an auditor.
    let events = "/v1/audit/events";
    c.get(events, auditor_pat).await.expect(200);
    let page = c.get(&format!("{events}?limit=2"), a).await.expect(200);
    let next = page.json["next_after"].as_u64().expect("a next page");
    c.get(&format!("{events}?after={next}&limit=1000"), a)
        .await
        .expect(200);
    let newest = c
        .get(&format!("{events}?order=desc&limit=2"), auditor_pat)
        .await
        .expect(200);
    let before = newest.json["next_before"].as_u64().expect("an older page");
    c.get(&format!("{events}?order=desc&before={before}"), a)
        .await
        .expect(200);
    let since = app.clock.now().plus_seconds(-3600).to_rfc3339();
    let until = app.clock.now().plus_seconds(3600).to_rfc3339();
    for query in [
        "type=api_key.created".to_string(),
        format!("stream=api_key/{key_id}"),
        format!("actor={}", app.admin_id),
        format!("since={since}&until={until}"),
    ] {
        c.get(&format!("{events}?{}", query.replace('+', "%2B")), a)
            .await
            .expect(200);
    }
    for query in [
        "limit=0",
        "limit=1001",
        "stream=nope",
        "since=yesterday",
        "bogus=1",
        "after=-1",
        "order=sideways",
    ] {
        c.get(&format!("{events}?{query}"), a)
            .await
            .expect_error(400, "invalid_query");
    }
    c.get(events, limited).await.expect_error(403, "forbidden");
    c.get(events, None).await.expect_error(401, "unauthorized");
    let history = c
        .get(&format!("/v1/audit/api-keys/{key_id}/history"), auditor_pat)
        .await
        .expect(200);
    assert!(
        history.json["events"]
            .as_array()
            .is_some_and(|e| e.len() >= 8)
    );
    c.get(&format!("/v1/audit/api-keys/{}/history", new_id()), a)
        .await
        .expect_error(404, "api_key_not_found");
    let activity = c
        .get(&format!("/v1/audit/principals/{key_id}/activity"), a)
        .await
        .expect(200);
    assert!(
        activity.json["counts"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    c.get(
        &format!("/v1/audit/principals/{ada_id}/activity?since={since}"),
        a,
    )
    .await
    .expect(200);
    c.get(&format!("/v1/audit/principals/{key_id}"), auditor_pat)
        .await
        .expect(200);
    c.get(&format!("/v1/audit/principals/{ada_id}"), a)
        .await
        .expect(200);
    c.get(&format!("/v1/audit/principals/{}", new_id()), a)
        .await
        .expect_error(404, "principal_not_found");
    c.get(&format!("/v1/audit/principals/{}/activity", new_id()), a)
        .await
        .expect_error(404, "principal_not_found");
    c.get(
        &format!("/v1/audit/principals/{key_id}/activity?since=x"),
        a,
    )
    .await
    .expect_error(400, "invalid_query");
    c.get("/v1/audit/export?after=0&until=3", auditor_pat)
        .await
        .expect(200);
    c.get("/v1/audit/export?after=x", a)
        .await
        .expect_error(400, "invalid_query");
    c.get("/v1/audit/checkpoint", a).await.expect(200);
    c.get("/v1/audit/checkpoint", limited)
        .await
        .expect_error(403, "forbidden");
    let proofs = "/v1/audit/proof";
    c.get(&format!("{proofs}/inclusion?seq=0"), a)
        .await
        .expect(200);
    c.get(&format!("{proofs}/inclusion?seq=1&size=3"), auditor_pat)
        .await
        .expect(200);
    for query in ["seq=999999", "", "seq=0&size=0"] {
        c.get(&format!("{proofs}/inclusion?{query}"), a)
            .await
            .expect_error(400, "invalid_query");
    }
    c.get(&format!("{proofs}/consistency?from=1"), a)
        .await
        .expect(200);
    c.get(&format!("{proofs}/consistency?from=2&to=5"), a)
        .await
        .expect(200);
    for query in ["from=0", "from=3&to=2", ""] {
        c.get(&format!("{proofs}/consistency?{query}"), a)
            .await
            .expect_error(400, "invalid_query");
    }

    // The ends of lifecycles.
    c.send(Method::DELETE, &key, a, Body::None, Some("\"1\""))
        .await
        .expect_error(412, "version_mismatch");
    c.send(Method::DELETE, &key, a, Body::None, None)
        .await
        .expect(204);
    c.send(Method::DELETE, &key, a, Body::None, None)
        .await
        .expect_error(409, "key_deleted");
    c.send(Method::PATCH, &key, a, patch(json!({"name": "z"})), None)
        .await
        .expect_error(409, "key_deleted");
    let deleted = c.get(&key, a).await.expect(200);
    assert_eq!(deleted.str("/api_key/status"), "deleted");
    c.send(
        Method::DELETE,
        &format!("{keys}/{}", new_id()),
        a,
        Body::None,
        None,
    )
    .await
    .expect_error(404, "api_key_not_found");
    c.send(Method::DELETE, &user, a, Body::None, Some(&ada_etag))
        .await
        .expect_error(412, "version_mismatch");
    c.send(Method::DELETE, &user, a, Body::None, Some(&promoted.etag()))
        .await
        .expect(204);
    c.send(Method::DELETE, &user, a, Body::None, None)
        .await
        .expect_error(409, "user_deactivated");
    c.send(
        Method::PATCH,
        &user,
        a,
        patch(json!({"role": "basic"})),
        None,
    )
    .await
    .expect_error(409, "user_deactivated");
    c.post(&ada_tokens, a, json!({"name": "late"}))
        .await
        .expect_error(409, "user_deactivated");
    c.send(
        Method::DELETE,
        &format!("{users}/{}", new_id()),
        a,
        Body::None,
        None,
    )
    .await
    .expect_error(404, "user_not_found");
    app.state
        .activity
        .flush(&app.ledger, app.clock.now())
        .await
        .expect("activity flush");
    let export = c.get("/v1/audit/export", a).await.expect(200);

    // A flood of unknown credentials from this address: every surface refuses it, in its
    // documented shape, until the limit lets it try again.
    let unknown = PlainSecret::generate(SecretKind::ApiKey).expect("random");
    let unknown = Some(unknown.expose());
    let mut flooded = false;
    for _ in 0..100 {
        let reply = c.get("/v1/me", unknown).await;
        if reply.status == 429 {
            flooded = true;
            break;
        }
        assert_eq!(reply.status, 401, "{}", reply.text);
    }
    assert!(
        flooded,
        "100 unknown credentials in a row were never limited"
    );
    c.get("/v1/me", a)
        .await
        .expect_error(429, "too_many_failures");
    let answer = c
        .post(verify, None, json!({"key": key_secret}))
        .await
        .expect(200);
    assert_eq!(answer.str("/code"), "RATE_LIMITED");
    assert!(answer.json["retry_after_ms"].as_u64().is_some());
    let reply = c
        .ask(Method::GET, nginx, a, &original("GET", "/agents/1"))
        .await
        .expect_error(403, "too_many_failures");
    assert_eq!(reply.headers["x-keyledger-error"], "too_many_failures");
    c.ask(Method::GET, forward, a, &forwarded("GET", "/agents/1"))
        .await
        .expect_error(429, "too_many_failures");
    c.ask(Method::GET, "/v1/auth/envoy/agents", a, &[])
        .await
        .expect_error(429, "too_many_failures");

    // Every operation's success answer was checked.
    for (template, method) in contracts.operations() {
        let responses = contracts.openapi["paths"][&template][&method]["responses"]
            .as_object()
            .expect("responses");
        for status in responses.keys().filter(|s| s.starts_with('2')) {
            let status: u16 = status.parse().expect("a status");
            assert!(
                c.checked
                    .contains(&(template.clone(), method.clone(), status)),
                "the lifecycle never checked {} {template} → {status}",
                method.to_uppercase()
            );
        }
    }

    check_entries(&contracts, &export.text);
}

/// Every exported entry matches `entry.schema.json` and its type's data schema; every type
/// the server writes occurs; and each data schema refuses the real data with any one field
/// missing, or with one field too many.
fn check_entries(contracts: &Contracts, export: &str) {
    let entry_schema = contracts.entry();
    let data_schemas: BTreeMap<&str, Validator> = EVENT_TYPES
        .iter()
        .map(|t| (*t, contracts.event_data(t)))
        .collect();
    let mut seen = BTreeSet::new();
    for (seq, line) in export.lines().enumerate() {
        let entry: Value = serde_json::from_str(line).expect("an entry is JSON");
        assert_eq!(entry["seq"], json!(seq), "export is in seq order from 0");
        assert_valid(&entry_schema, &entry, &format!("entry {seq}"));
        let event_type = entry["type"].as_str().expect("type").to_string();
        let data_schema = &data_schemas[event_type.as_str()];
        let data = &entry["data"];
        assert_valid(data_schema, data, &format!("data of entry {seq}"));
        if seen.insert(event_type.clone()) {
            let fields = data.as_object().expect("data is an object");
            for field in fields.keys() {
                let mut missing = data.clone();
                missing.as_object_mut().expect("object").remove(field);
                assert_invalid(
                    data_schema,
                    &missing,
                    &format!("{event_type} without {field}"),
                );
                let mut whole = entry.clone();
                whole["data"] = missing;
                assert_invalid(
                    &entry_schema,
                    &whole,
                    &format!("an entry whose {event_type} data lacks {field}"),
                );
            }
            let mut extra = data.clone();
            extra["extra"] = json!(1);
            assert_invalid(
                data_schema,
                &extra,
                &format!("{event_type} with an extra field"),
            );
        }
    }
    let written: BTreeSet<String> = EVENT_TYPES
        .iter()
        .filter(|t| **t != "ledger.signer_rotated")
        .map(|t| t.to_string())
        .collect();
    assert_eq!(
        seen, written,
        "the lifecycle writes every event type the server can"
    );

    // No server route rotates the signer yet: hold the Rust struct's JSON to its schema.
    let public_key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    let rotated = EventData::SignerRotated(SignerRotated {
        from: public_key.to_string(),
        to: public_key.to_string(),
    });
    assert_valid(
        &data_schemas["ledger.signer_rotated"],
        &rotated.to_json(),
        "ledger.signer_rotated data",
    );
}

const KEY_ID: &str = "0190c3c4-5b6a-7cde-8f01-23456789abcd";
const AT: &str = "2026-11-28T21:31:06.123456Z";

fn sample_key() -> Value {
    json!({
        "id": KEY_ID, "name": "ci bot", "role": "basic", "status": "active",
        "display": "klk_****a1B2", "created_at": AT, "created_by": "keyledger",
        "updated_at": AT, "expires_at": null, "last_used_at": null,
        "previous_valid_until": null, "version": 1,
    })
}

fn sample_entry() -> Value {
    json!({
        "v": 1, "seq": 1, "id": "0190c3c4-5b6a-7cde-8f01-000000000001",
        "stream": format!("api_key/{KEY_ID}"), "version": 1, "type": "api_key.created",
        "at": AT, "actor": {"kind": "system", "id": "keyledger", "credential": null},
        "signer": "0a1b2c3d",
        "data": {
            "key_id": KEY_ID, "name": "ci bot", "role": "basic", "display": "klk_****a1B2",
            "secret_sha256": "ab".repeat(32), "expires_at": null,
        },
        "sig": format!("{}Q==", "A".repeat(85)),
    })
}

/// A copy of `value` with the JSON pointer's target replaced (or removed, for `None`).
fn with(value: &Value, pointer: &str, new: Option<Value>) -> Value {
    let mut out = value.clone();
    let (parent, field) = pointer.rsplit_once('/').expect("a pointer");
    let parent = out.pointer_mut(parent).expect("parent exists");
    let map = parent.as_object_mut().expect("parent is an object");
    match new {
        Some(v) => map.insert(field.to_string(), v),
        None => map.remove(field),
    };
    out
}

/// The schemas refuse what the server must never write.
#[test]
fn schemas_refuse_wrong_output() {
    let contracts = Contracts::load();

    let api_key = contracts.component("ApiKey");
    let key = sample_key();
    assert_valid(&api_key, &key, "the sample key");
    for (what, pointer, value) in [
        ("a key with an extra field", "/secret", Some(json!("klk_x"))),
        ("a key without last_used_at", "/last_used_at", None),
        (
            "a timestamp without microseconds",
            "/created_at",
            Some(json!("2026-11-28T21:31:06Z")),
        ),
        (
            "a timestamp with milliseconds",
            "/created_at",
            Some(json!("2026-11-28T21:31:06.123Z")),
        ),
        (
            "a timestamp with an offset",
            "/created_at",
            Some(json!("2026-11-28T21:31:06.123456+00:00")),
        ),
        (
            "an impossible date",
            "/expires_at",
            Some(json!("2026-13-28T21:31:06.123456Z")),
        ),
        ("a float version", "/version", Some(json!(1.5))),
        ("version 0", "/version", Some(json!(0))),
        ("an auditor key", "/role", Some(json!("auditor"))),
        ("an unknown status", "/status", Some(json!("gone"))),
        (
            "a display showing the secret",
            "/display",
            Some(json!(format!("klk_{}", "a".repeat(49)))),
        ),
        (
            "an upper-case id",
            "/id",
            Some(json!(KEY_ID.to_uppercase())),
        ),
        ("a name with a newline", "/name", Some(json!("ci\nbot"))),
        ("an untrimmed name", "/name", Some(json!(" ci bot"))),
    ] {
        assert_invalid(&api_key, &with(&key, pointer, value), what);
    }

    let error = contracts.component("Error");
    let sample = json!({"error": {"code": "not_found", "message": "no such route"}});
    assert_valid(&error, &sample, "the sample error");
    assert_invalid(
        &error,
        &with(&sample, "/error/message", None),
        "an error without message",
    );
    assert_invalid(
        &error,
        &with(&sample, "/error/detail", Some(json!("x"))),
        "an error with detail",
    );
    assert_invalid(
        &error,
        &with(&sample, "/trace", Some(json!("x"))),
        "an error with a trace",
    );
    assert_invalid(
        &error,
        &with(&sample, "/error/code", Some(json!("Not Found"))),
        "a code not in snake_case",
    );

    // The entry: the file schema and the OpenAPI copy agree on all of these.
    let entry = sample_entry();
    for schema in [contracts.entry(), contracts.component("Entry")] {
        assert_valid(&schema, &entry, "the sample entry");
        for (what, pointer, value) in [
            ("an entry with an extra field", "/extra", Some(json!(1))),
            ("an entry without sig", "/sig", None),
            ("a float seq", "/seq", Some(json!(1.5))),
            ("a negative seq", "/seq", Some(json!(-1))),
            ("a float in data", "/data/expires_at", Some(json!(1.5))),
            ("format version 2", "/v", Some(json!(2))),
            ("version 0", "/version", Some(json!(0))),
            ("an unknown type", "/type", Some(json!("api_key.exploded"))),
            (
                "a type of another stream",
                "/type",
                Some(json!("user.registered")),
            ),
            (
                "a stream of another kind",
                "/stream",
                Some(json!(format!("user/{KEY_ID}"))),
            ),
            ("a malformed stream", "/stream", Some(json!("api_key/1"))),
            (
                "`at` without microseconds",
                "/at",
                Some(json!("2026-11-28T21:31:06Z")),
            ),
            (
                "`at` with nanoseconds",
                "/at",
                Some(json!("2026-11-28T21:31:06.123456789Z")),
            ),
            ("an upper-case signer", "/signer", Some(json!("0A1B2C3D"))),
            ("a short signer", "/signer", Some(json!("0a1b2c3"))),
            ("a sig that is not 64 bytes", "/sig", Some(json!("AAAA"))),
            (
                "a sig that is not base64",
                "/sig",
                Some(json!(format!("{}Q==", "!".repeat(85)))),
            ),
            (
                "a system actor with a credential",
                "/actor/credential",
                Some(json!(KEY_ID)),
            ),
            (
                "a system actor with another id",
                "/actor/id",
                Some(json!(KEY_ID)),
            ),
            ("an unknown actor kind", "/actor/kind", Some(json!("robot"))),
            (
                "a service account named keyledger",
                "/actor/kind",
                Some(json!("service_account")),
            ),
            ("data without expires_at", "/data/expires_at", None),
            (
                "data with an extra field",
                "/data/secret",
                Some(json!("klk_x")),
            ),
            (
                "a secret hash in upper case",
                "/data/secret_sha256",
                Some(json!("AB".repeat(32))),
            ),
            ("an auditor API key", "/data/role", Some(json!("auditor"))),
        ] {
            assert_invalid(&schema, &with(&entry, pointer, value), what);
        }
        let by_key = with(
            &with(&entry, "/actor/kind", Some(json!("service_account"))),
            "/actor/id",
            Some(json!(KEY_ID)),
        );
        assert_invalid(
            &schema,
            &by_key,
            "a service account actor without credential",
        );
        assert_valid(
            &schema,
            &with(&by_key, "/actor/credential", Some(json!(KEY_ID))),
            "a service account actor",
        );
        assert_valid(
            &schema,
            &with(&entry, "/data/expires_at", Some(json!(AT))),
            "an entry with an expiry",
        );
    }

    // Each event's data schema: every field is required, nothing else is allowed.
    for event_type in EVENT_TYPES {
        let schema = contracts.event_data(event_type);
        assert_invalid(&schema, &json!({}), &format!("empty {event_type} data"));
        assert_invalid(&schema, &json!(null), &format!("null {event_type} data"));
    }
    let activity = contracts.event_data("credential.activity");
    let counts = json!({
        "credential_id": KEY_ID, "principal_id": KEY_ID, "window_start": AT,
        "window_end": AT, "last_used_at": AT,
        "counts": [{"method": "GET", "route": "/v1/me", "outcome": "VALID", "count": 2}],
    });
    assert_valid(&activity, &counts, "credential.activity data");
    for (what, pointer, value) in [
        ("a float count", "/counts/0/count", Some(json!(2.5))),
        ("a zero count", "/counts/0/count", Some(json!(0))),
        (
            "an unknown outcome",
            "/counts/0/outcome",
            Some(json!("MAYBE")),
        ),
        ("a counter without route", "/counts/0/route", None),
    ] {
        assert_invalid(&activity, &with(&counts, pointer, value), what);
    }
}

/// Walks every schema object below `value`, calling `f` with its JSON pointer.
fn walk(value: &Value, pointer: &str, f: &mut dyn FnMut(&str, &serde_json::Map<String, Value>)) {
    match value {
        Value::Object(map) => {
            f(pointer, map);
            for (k, v) in map {
                walk(v, &format!("{pointer}/{k}"), f);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, &format!("{pointer}/{i}"), f);
            }
        }
        _ => {}
    }
}

/// Objects are closed (`additionalProperties: false`); in what keyledger writes, every
/// property is also required (optional values are written as null, never left out).
fn assert_closed(schema: &Value, name: &str, all_required: bool) {
    walk(schema, "", &mut |pointer, map| {
        // An entry's `data` is closed by its type's schema (the `allOf` branches).
        if map.get("type") != Some(&json!("object")) || pointer == "/properties/data" {
            return;
        }
        assert_eq!(
            map.get("additionalProperties"),
            Some(&json!(false)),
            "{name}{pointer}: objects must be closed"
        );
        if all_required {
            let properties: BTreeSet<&String> = map
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().collect())
                .unwrap_or_default();
            let required: BTreeSet<&String> = map
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .map(|s| {
                            properties
                                .iter()
                                .copied()
                                .find(|p| p.as_str() == s)
                                .unwrap_or_else(|| {
                                    panic!("{name}{pointer}: {s} is required but not a property")
                                })
                        })
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                required, properties,
                "{name}{pointer}: every property is required"
            );
        }
    });
}

/// A copy of `value` with every `$ref` mapped through `f`.
fn rewrite_refs(value: &Value, f: &dyn Fn(&str) -> String) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => (k.clone(), Value::String(f(r))),
                    _ => (k.clone(), rewrite_refs(v, f)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| rewrite_refs(v, f)).collect()),
        other => other.clone(),
    }
}

/// The schema files and the document are complete and consistent with each other and with
/// the Rust event types.
#[test]
fn schema_files_are_complete_and_consistent() {
    let contracts = Contracts::load();

    // One data schema per event type, and no other.
    let files: BTreeSet<String> = std::fs::read_dir(repo_file("schemas/events"))
        .expect("schemas/events")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let expected: BTreeSet<String> = EVENT_TYPES
        .iter()
        .map(|t| format!("{t}.schema.json"))
        .collect();
    assert_eq!(files, expected);

    let entry = read_json("schemas/entry.schema.json");
    assert_eq!(
        entry["$schema"],
        json!("https://json-schema.org/draft/2020-12/schema")
    );
    let types: Vec<&str> = entry["properties"]["type"]["enum"]
        .as_array()
        .expect("type enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(types, EVENT_TYPES.to_vec(), "entry type enum = EVENT_TYPES");
    let linked: Vec<&str> = entry["allOf"]
        .as_array()
        .expect("allOf")
        .iter()
        .map(|branch| {
            let t = branch["if"]["properties"]["type"]["const"]
                .as_str()
                .expect("if type");
            assert_eq!(
                branch["then"]["properties"]["data"]["$ref"],
                json!(format!("events/{t}.schema.json"))
            );
            t
        })
        .collect();
    assert_eq!(
        linked,
        EVENT_TYPES.to_vec(),
        "each type links its data schema"
    );
    assert_closed(&entry, "entry.schema.json", true);
    for t in EVENT_TYPES {
        let schema = read_json(&event_file(t));
        assert_eq!(
            schema["$schema"],
            json!("https://json-schema.org/draft/2020-12/schema")
        );
        assert_closed(&schema, &event_file(t), true);
    }

    // The OpenAPI document's Entry and EventData.* are copies of the files.
    let components = &contracts.openapi["components"]["schemas"];
    let strip = |mut schema: Value| {
        let map = schema.as_object_mut().expect("object");
        map.remove("$schema");
        map.remove("$id");
        map.remove("title");
        schema
    };
    let expected = rewrite_refs(&strip(entry.clone()), &|r| {
        let event_type = r
            .strip_prefix("events/")
            .and_then(|r| r.strip_suffix(".schema.json"))
            .expect("entry.schema.json refers only to events/<type>.schema.json");
        format!("#/components/schemas/EventData.{event_type}")
    });
    assert_eq!(
        strip(components["Entry"].clone()),
        expected,
        "components/schemas/Entry = entry.schema.json"
    );
    for t in EVENT_TYPES {
        assert_eq!(
            strip(components[format!("EventData.{t}")].clone()),
            strip(read_json(&event_file(t))),
            "components/schemas/EventData.{t} = {}",
            event_file(t)
        );
    }
    for (name, schema) in components.as_object().expect("components") {
        assert_closed(schema, name, !name.ends_with("Request"));
        contracts.component(name);
    }

    // Every operation: a unique id, its path parameters declared, errors documented.
    assert_eq!(contracts.openapi["openapi"], json!("3.1.0"));
    let mut ids = BTreeSet::new();
    for (template, method) in contracts.operations() {
        let item = &contracts.openapi["paths"][&template];
        let op = &item[&method];
        let what = format!("{} {template}", method.to_uppercase());
        assert!(
            ids.insert(op["operationId"].as_str().expect("operationId")),
            "{what}: duplicate operationId"
        );
        let mut params: Vec<&Value> = Vec::new();
        for list in [&item["parameters"], &op["parameters"]] {
            params.extend(list.as_array().into_iter().flatten());
        }
        for segment in template.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(|c| c == '{' || c == '}');
            assert!(
                params.iter().any(|p| p["in"] == json!("path")
                    && p["name"] == json!(name)
                    && p["required"] == json!(true)),
                "{what}: path parameter {name} not declared"
            );
        }
        let responses = op["responses"].as_object().expect("responses");
        let public = op.get("security") == Some(&json!([]));
        if !public {
            for status in ["401", "403"] {
                let optional_403 = template == "/v1/me" && status == "403";
                assert!(
                    optional_403 || responses.contains_key(status),
                    "{what}: {status} not documented"
                );
            }
        }
        if let Some(body) = op.get("requestBody") {
            assert!(
                body["content"].get("application/json").is_some(),
                "{what}: JSON body"
            );
            for status in ["400", "413", "415"] {
                assert!(
                    responses.contains_key(status),
                    "{what}: {status} not documented"
                );
            }
        }
        for status in responses.keys() {
            let response = contracts
                .response(&template, &method, status.parse().expect("a status"))
                .expect("resolves");
            for (media, content) in response["content"].as_object().into_iter().flatten() {
                contracts.validator(&absolutize(&content["schema"]));
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        media, "application/json",
                        "{what} {status}: errors are JSON"
                    );
                }
            }
        }
    }
}

/// `(path, method)` of every `.route("PATH", METHOD(handler).METHOD(handler)…)` in
/// src/http/routes.rs and in the modules it merges (`.merge(super::NAME::routes())`): a
/// small parser for the one shape the router is written in, which refuses any other.
fn router_routes() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut files = vec!["routes".to_string()];
    while let Some(module) = files.pop() {
        let path = repo_file(&format!("src/http/{module}.rs"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for merged in text.split(".merge(super::").skip(1) {
            let (name, rest) = merged.split_once("::").expect("merge(super::NAME::…)");
            assert!(
                rest.starts_with("routes())"),
                "{module}.rs merges something other than super::{name}::routes()"
            );
            files.push(name.to_string());
        }
        for other in [".nest(", ".route_service(", "any(", "on(MethodFilter"] {
            assert!(
                !text.contains(other),
                "{module}.rs uses {other}: teach this parser about it"
            );
        }
        parse_routes(&text, &mut out);
    }
    assert!(
        out.len() > 20,
        "the router parsed to too few routes: {out:?}"
    );
    out
}

fn parse_routes(text: &str, out: &mut BTreeSet<(String, String)>) {
    let mut rest = text;
    while let Some(start) = rest.find(".route(") {
        let after = &rest[start + ".route(".len()..];
        let mut depth = 1;
        let mut end = None;
        for (i, ch) in after.char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let end = end.expect("balanced parentheses");
        let args = &after[..end];
        let route = args.split('"').nth(1).expect("a path literal");
        let mut methods = 0;
        for method in METHODS {
            let call = format!("{method}(");
            let called = args.match_indices(&call).any(|(i, _)| {
                !args[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if called {
                out.insert((route.replace("{*path}", "{path}"), method.to_string()));
                methods += 1;
            }
        }
        assert!(methods > 0, "no method found for route {route}");
        rest = &after[end..];
    }
}

/// The document and the router serve the same routes: what routes.rs declares is
/// documented, and every documented operation reaches a handler of the real server (not the
/// router's 404 or 405 fallback), while every undocumented method of a documented path gets
/// the 405 fallback.
#[tokio::test]
async fn openapi_and_router_list_the_same_routes() {
    let contracts = Contracts::load();
    let documented = contracts.operations();
    let declared = router_routes();
    let missing: Vec<_> = declared.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes of routes.rs not in openapi.json: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&declared).collect();
    assert!(
        extra.is_empty(),
        "operations of openapi.json not in routes.rs: {extra:?}"
    );

    let app = TestApp::spawn().await;
    let fallback = app.get("/v1/no-such-route", Some(&app.admin)).await;
    assert_eq!(fallback.status(), 404);
    assert_eq!(crate::helpers::error_code(fallback).await, "not_found");
    for template in contracts.paths().keys() {
        let path = template
            .replace("{id}", &new_id())
            .replace("{path}", "search");
        assert!(!path.contains('{'), "{template}: unknown path parameter");
        for method in METHODS {
            let request_method =
                Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let response = app
                .send(request_method, &path, Some(&app.admin), None)
                .await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let code = body["error"]["code"].as_str().unwrap_or("");
            let what = format!("{} {template} → {status} {code}", method.to_uppercase());
            if documented.contains(&(template.clone(), method.to_string())) {
                assert!(
                    status != 405 && !(status == 404 && code == "not_found"),
                    "{what}: the router does not serve it"
                );
            } else {
                assert_eq!(
                    (status, code),
                    (405, "method_not_allowed"),
                    "{what}: served but not documented"
                );
            }
        }
    }
    app.stop().await;
}

/// `policy.schema.json` accepts the built-in policy and refuses broken ones.
#[test]
fn policy_schema_accepts_the_builtin_policy() {
    let schema = read_json("schemas/policy.schema.json");
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("policy.schema.json compiles");
    let policy = read_json("src/default_policy.json");
    assert_valid(&validator, &policy, "src/default_policy.json");
    let mut broken = policy.clone();
    broken["rules"][0]["effect"] = json!("maybe");
    assert_invalid(&validator, &broken, "a rule with effect maybe");
    let mut broken = policy.clone();
    broken["host"]["strip_matrix_params"] = json!(true);
    assert_invalid(&validator, &broken, "an unknown host option");
    let mut broken = policy.clone();
    broken["host"]["semicolons_are_literal"] = json!("true");
    assert_invalid(&validator, &broken, "a host option that is not a boolean");
    let mut broken = policy;
    broken["rules"][0]["paths"] = json!(["/agents/../admin"]);
    assert_invalid(&validator, &broken, "a path pattern with ..");
}
