//! API conventions, end to end through a real server (`TestApp`): the admin lists page with
//! `next_after` (every item exactly once), search ignoring case and width, and sort; a `201`
//! carries a `Location` that answers; a `401` carries an RFC 6750 `WWW-Authenticate`
//! challenge; `ETag`s follow the body for `If-None-Match` and the version for `If-Match`; a
//! regenerated key shows exactly when its previous secret stops working; `name_taken` does
//! not repeat the name.

use keyledger::crypto::secret::{PlainSecret, SecretKind};
use keyledger::domain::Clock;
use reqwest::header::{ETAG, HeaderValue, IF_MATCH, IF_NONE_MATCH, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, expect_error, json_ok};

#[tokio::test]
async fn walking_the_key_list_page_by_page_returns_every_key_once() {
    // Arrange: the bootstrap key and ten more.
    let app = TestApp::spawn().await;
    for i in 0..10 {
        let role = ["basic", "limited", "admin"][i % 3];
        app.create_key(&format!("page-{i:02}"), role).await;
    }
    let all = list(&app, &[("limit", "1000")]).await;
    let mut expected: Vec<String> = ids(&all["api_keys"]);
    assert_eq!(expected.len(), 11);
    assert!(all["next_after"].is_null());

    // Act: follow next_after with pages of 3, ascending and descending by name.
    for sort in ["created", "-name"] {
        let mut seen = Vec::new();
        let mut after = String::new();
        let mut pages = 0;
        loop {
            let page = list(
                &app,
                &[("limit", "3"), ("sort", sort), ("after", after.as_str())],
            )
            .await;
            pages += 1;
            let got = ids(&page["api_keys"]);
            assert!(got.len() <= 3, "{page}");
            seen.extend(got);
            match page["next_after"].as_str() {
                Some(next) => {
                    assert_eq!(Some(next), seen.last().map(String::as_str), "{page}");
                    after = next.to_string();
                }
                None => break,
            }
            assert!(pages < 20, "paging does not end");
        }

        // Assert: every key exactly once, in 4 pages.
        assert_eq!(pages, 4, "{sort}");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "{sort}: a key repeated: {seen:?}");
        expected.sort();
        assert_eq!(sorted, expected, "{sort}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_key_list_searches_ignoring_case_and_width_and_sorts_by_name() {
    // Arrange
    let app = TestApp::spawn().await;
    for name in [
        "Alpha-Deploy",
        "ｄｅｐｌｏｙ-wide",
        "unrelated",
        "b-key",
        "C-key",
    ] {
        app.create_key(name, "basic").await;
    }

    // Act and assert: q= matches a folded substring.
    for q in ["DEPLOY", "deploy", "ＤＥＰ", "ｐｌｏｙ"] {
        let page = list(&app, &[("q", q), ("sort", "name")]).await;
        assert_eq!(
            names(&page["api_keys"]),
            vec!["Alpha-Deploy", "ｄｅｐｌｏｙ-wide"],
            "q={q}"
        );
    }
    let page = list(&app, &[("q", "LOY-W")]).await;
    assert_eq!(names(&page["api_keys"]), vec!["ｄｅｐｌｏｙ-wide"]);
    let page = list(&app, &[("q", "nothing-like-this")]).await;
    assert_eq!(page["api_keys"], json!([]));
    assert!(page["next_after"].is_null());

    // sort=-name is descending by folded name, sort=name ascending.
    let descending = names(&list(&app, &[("sort", "-name")]).await["api_keys"]);
    assert_eq!(
        descending,
        vec![
            "unrelated",
            "ｄｅｐｌｏｙ-wide",
            "C-key",
            "bootstrap-admin",
            "b-key",
            "Alpha-Deploy",
        ]
    );
    let mut ascending = names(&list(&app, &[("sort", "name")]).await["api_keys"]);
    ascending.reverse();
    assert_eq!(ascending, descending);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_after_or_bad_list_parameter_is_a_400() {
    let app = TestApp::spawn().await;
    let unknown = Uuid::now_v7().to_string();
    for query in [
        vec![("after", unknown.as_str())],
        vec![("after", "not-a-uuid")],
        vec![("limit", "0")],
        vec![("sort", "size")],
    ] {
        let response = app
            .client
            .get(app.url("/v1/admin/api-keys"))
            .bearer_auth(&app.admin)
            .query(&query)
            .send()
            .await
            .expect("request");
        expect_error(response, 400, "invalid_query").await;
    }
    // The users and tokens lists page the same way.
    let user = app.register_user("pager@example.com", "basic").await;
    let user_id = user["id"].as_str().expect("id");
    for path in [
        "/v1/admin/users".to_string(),
        format!("/v1/admin/users/{user_id}/tokens"),
    ] {
        let response = app
            .get(&format!("{path}?after={unknown}"), Some(&app.admin))
            .await;
        expect_error(response, 400, "invalid_query").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn created_resources_carry_a_location_that_answers() {
    let app = TestApp::spawn().await;

    // An API key.
    let response = app
        .post(
            "/v1/admin/api-keys",
            Some(&app.admin),
            json!({"name": "located", "role": "basic"}),
        )
        .await;
    let (location, body) = created(response).await;
    let key_id = body["api_key"]["id"].as_str().expect("id");
    assert_eq!(location, format!("/v1/admin/api-keys/{key_id}"));
    let got = json_ok(app.get(&location, Some(&app.admin)).await).await;
    assert_eq!(got["api_key"]["id"], key_id);

    // A user.
    let response = app
        .post(
            "/v1/admin/users",
            Some(&app.admin),
            json!({"email": "located@example.com", "role": "basic"}),
        )
        .await;
    let (location, body) = created(response).await;
    let user_id = body["user"]["id"].as_str().expect("id").to_string();
    assert_eq!(location, format!("/v1/admin/users/{user_id}"));
    let got = json_ok(app.get(&location, Some(&app.admin)).await).await;
    assert_eq!(got["user"]["id"], user_id.as_str());

    // A token an admin issued: an admin route.
    let response = app
        .post(
            &format!("/v1/admin/users/{user_id}/tokens"),
            Some(&app.admin),
            json!({"name": "issued"}),
        )
        .await;
    let (location, body) = created(response).await;
    let token_id = body["token"]["id"].as_str().expect("id");
    let pat = body["secret"].as_str().expect("secret").to_string();
    assert_eq!(location, format!("/v1/admin/tokens/{token_id}"));
    let got = json_ok(app.get(&location, Some(&app.admin)).await).await;
    assert_eq!(got["token"]["id"], token_id);

    // A token the user issued to itself: its own route, readable with its own token.
    let response = app
        .post("/v1/me/tokens", Some(&pat), json!({"name": "self-made"}))
        .await;
    let (location, body) = created(response).await;
    let own_id = body["token"]["id"].as_str().expect("id");
    assert_eq!(location, format!("/v1/me/tokens/{own_id}"));
    let got = json_ok(app.get(&location, Some(&pat)).await).await;
    assert_eq!(got["token"]["id"], own_id);
    assert_eq!(got["token"]["user_id"], user_id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn unauthorized_answers_carry_a_bearer_challenge() {
    // Arrange: a disabled key and a well-formed secret nobody holds.
    let app = TestApp::spawn().await;
    let (key, disabled) = app.create_key("to-disable", "admin").await;
    let answer = app
        .send(
            Method::POST,
            &format!(
                "/v1/admin/api-keys/{}/disable",
                key["id"].as_str().expect("id")
            ),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(answer.status(), 200);
    let unknown = PlainSecret::generate(SecretKind::ApiKey).expect("secret");
    let size = app.log_size();

    let plain = "Bearer realm=\"keyledger\"";
    let invalid_token = "Bearer realm=\"keyledger\", error=\"invalid_token\"";
    let invalid_request = "Bearer realm=\"keyledger\", error=\"invalid_request\"";
    let cases: Vec<(&str, Option<HeaderValue>, &str)> = vec![
        ("no credential", None, plain),
        (
            "another scheme",
            Some(HeaderValue::from_static("Basic YWRtaW46YWRtaW4=")),
            plain,
        ),
        (
            "unknown secret",
            Some(bearer_value(unknown.expose())),
            invalid_token,
        ),
        ("disabled key", Some(bearer_value(&disabled)), invalid_token),
        (
            "not a secret",
            Some(HeaderValue::from_static("Bearer hello")),
            invalid_token,
        ),
        (
            "non-ASCII bytes",
            Some(HeaderValue::from_bytes(b"Bearer klk_\xc3\xa9\xff\xfe").expect("obs-text")),
            invalid_request,
        ),
        (
            "no space",
            Some(HeaderValue::from_str(&format!("Bearer{}", app.admin)).expect("value")),
            invalid_request,
        ),
        (
            "scheme only",
            Some(HeaderValue::from_static("Bearer")),
            invalid_request,
        ),
    ];
    for (what, authorization, challenge) in cases {
        // Act
        let mut request = app.client.get(app.url("/v1/me"));
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let response = request.send().await.expect("request");

        // Assert
        let got = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        assert_eq!(got.as_deref(), Some(challenge), "{what}");
        let body = expect_error(response, 401, "unauthorized").await;
        assert!(
            !body.to_string().contains(&app.admin) && !body.to_string().contains(&disabled),
            "{what}: {body}"
        );
    }
    assert_eq!(app.log_size(), size);
    app.stop().await;
}

#[tokio::test]
async fn etags_follow_the_body_for_if_none_match_and_the_version_for_if_match() {
    // Arrange
    let app = TestApp::spawn().await;
    let (key, secret) = app.create_key("etag-key", "basic").await;
    let path = format!("/v1/admin/api-keys/{}", key["id"].as_str().expect("id"));
    let first = app.get(&path, Some(&app.admin)).await;
    assert_eq!(first.status(), 200);
    let tag1 = etag_of(&first);

    // An unchanged key: 304 with no body, the same tag.
    let cached = conditional_get(&app, &path, &tag1).await;
    assert_eq!(cached.status(), 304);
    assert_eq!(etag_of(&cached), tag1);
    assert!(cached.bytes().await.expect("body").is_empty());

    // After a rename: 200 and a new tag.
    let renamed = app
        .patch(&path, Some(&app.admin), json!({"name": "etag-key-2"}))
        .await;
    assert_eq!(renamed.status(), 200);
    let after_rename = conditional_get(&app, &path, &tag1).await;
    assert_eq!(after_rename.status(), 200);
    let tag2 = etag_of(&after_rename);
    assert_ne!(tag2, tag1);
    assert_eq!(conditional_get(&app, &path, &tag2).await.status(), 304);

    // Act: only activity changes — the key is used, the window closes.
    assert_eq!(app.verify(&secret, "GET", "/chat/1").await["code"], "VALID");
    app.state
        .activity
        .flush(&app.ledger, app.clock.now())
        .await
        .expect("flush the activity window");

    // Assert: the body changed (last_used_at), so If-None-Match answers 200 with a new tag...
    let used = conditional_get(&app, &path, &tag2).await;
    assert_eq!(used.status(), 200);
    let tag3 = etag_of(&used);
    assert_ne!(tag3, tag2);
    let body: Value = used.json().await.expect("json");
    assert!(body["api_key"]["last_used_at"].is_string(), "{body}");

    // ...while the version did not move, so If-Match with the old tag still succeeds.
    let patched = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&app.admin)
        .header(IF_MATCH, &tag2)
        .json(&json!({"name": "etag-key-3"}))
        .send()
        .await
        .expect("request");
    assert_eq!(patched.status(), 200, "If-Match {tag2}");
    // And If-Match is enforced: the first tag's version is stale now.
    let size = app.log_size();
    let stale = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&app.admin)
        .header(IF_MATCH, &tag1)
        .json(&json!({"name": "etag-key-4"}))
        .send()
        .await
        .expect("request");
    expect_error(stale, 412, "version_mismatch").await;
    assert_eq!(app.log_size(), size);
    app.stop().await;
}

#[tokio::test]
async fn a_regenerated_key_shows_when_its_previous_secret_stops_working() {
    // Arrange
    let app = TestApp::spawn().await;
    let (rolling, _) = app.create_key("rolling", "basic").await;
    let (steady, _) = app.create_key("steady", "basic").await;
    let rolling_path = format!("/v1/admin/api-keys/{}", rolling["id"].as_str().expect("id"));
    let steady_path = format!("/v1/admin/api-keys/{}", steady["id"].as_str().expect("id"));
    assert!(rolling["previous_valid_until"].is_null(), "{rolling}");
    app.clock.advance(120);
    let at = app.clock.now();

    // Act
    let response = app
        .post(
            &format!("{rolling_path}/regenerate"),
            Some(&app.admin),
            json!({"grace_seconds": 3600}),
        )
        .await;

    // Assert: exactly regenerate time + 3600 s, everywhere the key is shown.
    let body = json_ok(response).await;
    let expected = json!(at.plus_seconds(3600));
    assert_eq!(body["api_key"]["previous_valid_until"], expected, "{body}");
    let got = json_ok(app.get(&rolling_path, Some(&app.admin)).await).await;
    assert_eq!(got["api_key"]["previous_valid_until"], expected);
    let got = json_ok(app.get(&steady_path, Some(&app.admin)).await).await;
    assert!(got["api_key"]["previous_valid_until"].is_null(), "{got}");
    let listed = list(&app, &[("q", "rolling")]).await;
    assert_eq!(listed["api_keys"][0]["previous_valid_until"], expected);
    app.stop().await;
}

#[tokio::test]
async fn name_taken_does_not_repeat_the_name() {
    let app = TestApp::spawn().await;
    let name = "zebra-quartz-7731";
    app.create_key(name, "basic").await;
    let size = app.log_size();
    let again = app
        .post(
            "/v1/admin/api-keys",
            Some(&app.admin),
            json!({"name": name.to_uppercase(), "role": "admin"}),
        )
        .await;
    let body = expect_error(again, 409, "name_taken").await;
    let text = body.to_string().to_lowercase();
    assert!(!text.contains(name), "{body}");
    assert!(!text.contains("zebra"), "{body}");
    assert_eq!(app.log_size(), size);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Asserts a 201 and returns its `Location` and body.
async fn created(response: Response) -> (String, Value) {
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.expect("body");
    assert_eq!(status, 201, "{text}");
    let location = location.unwrap_or_else(|| panic!("a 201 without Location: {text}"));
    (location, serde_json::from_str(&text).expect("JSON body"))
}

/// `GET /v1/admin/api-keys` with query parameters, as the bootstrap admin.
async fn list(app: &TestApp, query: &[(&str, &str)]) -> Value {
    let response = app
        .client
        .get(app.url("/v1/admin/api-keys"))
        .bearer_auth(&app.admin)
        .query(query)
        .send()
        .await
        .expect("list keys");
    json_ok(response).await
}

fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .expect("an array")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect()
}

fn names(items: &Value) -> Vec<String> {
    items
        .as_array()
        .expect("an array")
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_string())
        .collect()
}

fn bearer_value(secret: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {secret}")).expect("header value")
}

fn etag_of(response: &Response) -> String {
    response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .expect("an ETag")
        .to_string()
}

async fn conditional_get(app: &TestApp, path: &str, tag: &str) -> Response {
    app.client
        .get(app.url(path))
        .bearer_auth(&app.admin)
        .header(IF_NONE_MATCH, tag)
        .send()
        .await
        .expect("conditional GET")
}
