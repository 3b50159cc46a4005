//! Reads served by every node from its own projections: a revocation committed on one node
//! is refused by the others; activity counted by each node sums exactly; a node that
//! cannot confirm it is current answers 503, never a stale VALID, and recovers by itself.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{Cluster, bin_client, eventually, post, verify_code};

/// Every kind of revocation, committed on node 0, is refused by nodes 1 and 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocations_on_one_node_are_refused_by_the_others() {
    let cluster = Cluster::start(3, &[]);
    let client = bin_client();
    let admin = cluster.admin.clone();
    let node0 = |path: &str| cluster.url(0, path);

    // Five credentials, each valid on every node first.
    let mut keys = Vec::new();
    for name in ["deleted", "disabled", "regenerated"] {
        let (status, body) = post(
            &client,
            &node0("/v1/admin/api-keys"),
            &admin,
            json!({"name": name, "role": "basic"}),
        )
        .await;
        assert_eq!(status, 201);
        keys.push((
            body["api_key"]["id"].as_str().expect("id").to_string(),
            body["secret"].as_str().expect("secret").to_string(),
        ));
    }
    let (status, user) = post(
        &client,
        &node0("/v1/admin/users"),
        &admin,
        json!({"email": "ada@example.org", "role": "basic"}),
    )
    .await;
    assert_eq!(status, 201);
    let user_id = user["user"]["id"].as_str().expect("id").to_string();
    let mut tokens = Vec::new();
    for name in ["revoked", "of-deactivated-user"] {
        let (status, body) = post(
            &client,
            &node0(&format!("/v1/admin/users/{user_id}/tokens")),
            &admin,
            json!({"name": name}),
        )
        .await;
        assert_eq!(status, 201);
        tokens.push((
            body["token"]["id"].as_str().expect("id").to_string(),
            body["secret"].as_str().expect("secret").to_string(),
        ));
    }
    let secrets: Vec<String> = keys
        .iter()
        .map(|(_, s)| s.clone())
        .chain(tokens.iter().map(|(_, s)| s.clone()))
        .collect();
    for node in 1..3 {
        for secret in &secrets {
            let url = cluster.url(node, "/v1/verify");
            eventually(Duration::from_secs(5), "a new credential verifies", || {
                let client = client.clone();
                let url = url.clone();
                async move { (verify_code(&client, &url, secret).await == "VALID").then_some(()) }
            })
            .await;
        }
    }

    // The revocations, all on node 0.
    let delete = |path: String| {
        let client = client.clone();
        let admin = admin.clone();
        async move {
            client
                .delete(path)
                .bearer_auth(admin)
                .send()
                .await
                .expect("delete")
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        delete(node0(&format!("/v1/admin/api-keys/{}", keys[0].0))).await,
        204
    );
    let (status, _) = post(
        &client,
        &node0(&format!("/v1/admin/api-keys/{}/disable", keys[1].0)),
        &admin,
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &client,
        &node0(&format!("/v1/admin/api-keys/{}/regenerate", keys[2].0)),
        &admin,
        json!({"grace_seconds": 0}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        delete(node0(&format!("/v1/admin/tokens/{}", tokens[0].0))).await,
        204
    );
    // Deactivating the user revokes the token it still has.
    let (status, _) = post(
        &client,
        &node0(&format!("/v1/admin/users/{user_id}/tokens")),
        &admin,
        json!({"name": "spare"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        delete(node0(&format!("/v1/admin/users/{user_id}"))).await,
        204
    );

    let expected = ["REVOKED", "DISABLED", "REVOKED", "REVOKED", "REVOKED"];
    for node in 1..3 {
        for (secret, code) in secrets.iter().zip(expected) {
            let url = cluster.url(node, "/v1/verify");
            let seen = eventually(
                Duration::from_secs(5),
                "another node refuses a revoked credential",
                || {
                    let client = client.clone();
                    let url = url.clone();
                    async move {
                        let seen = verify_code(&client, &url, secret).await;
                        (seen != "VALID").then_some(seen)
                    }
                },
            )
            .await;
            assert_eq!(seen, code, "node {node}");
        }
    }
}

/// Each node counts what it served and appends its own summaries; the activity query, on
/// any node, sums them exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn activity_counted_on_every_node_sums_exactly() {
    let cluster = Cluster::start(3, &["--activity-window", "1"]);
    let client = bin_client();
    let (status, key) = post(
        &client,
        &cluster.url(0, "/v1/admin/api-keys"),
        &cluster.admin,
        json!({"name": "busy", "role": "limited"}),
    )
    .await;
    assert_eq!(status, 201);
    let id = key["api_key"]["id"].as_str().expect("id").to_string();
    let secret = key["secret"].as_str().expect("secret").to_string();
    let per_node = [7usize, 11, 5];
    for (node, count) in per_node.iter().enumerate() {
        let url = cluster.url(node, "/v1/verify");
        eventually(Duration::from_secs(5), "the key verifies", || {
            let client = client.clone();
            let url = url.clone();
            let secret = secret.clone();
            async move { (verify_code(&client, &url, &secret).await == "VALID").then_some(()) }
        })
        .await;
        // That first VALID counted too.
        for _ in 1..*count {
            assert_eq!(verify_code(&client, &url, &secret).await, "VALID");
        }
    }
    let total: usize = per_node.iter().sum();
    for node in 0..3 {
        let url = cluster.url(node, &format!("/v1/audit/principals/{id}/activity"));
        eventually(
            Duration::from_secs(10),
            "every node's window reaches the log",
            || {
                let client = client.clone();
                let url = url.clone();
                let admin = cluster.admin.clone();
                async move {
                    let body: Value = client
                        .get(url)
                        .bearer_auth(admin)
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                    let valid: u64 = body["counts"]
                        .as_array()?
                        .iter()
                        .filter(|c| c["outcome"] == "VALID")
                        .filter_map(|c| c["count"].as_u64())
                        .sum();
                    (valid == total as u64).then_some(())
                }
            },
        )
        .await;
    }
}

/// With the database gone, every node stops answering VALID within `--max-staleness`
/// (503 `ledger_unavailable`, `/readyz` 503), and serves again once it is back, without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_cannot_confirm_it_is_current_fails_closed_and_recovers() {
    let cluster = Cluster::start(2, &["--max-staleness", "1"]);
    let client = bin_client();
    let (status, key) = post(
        &client,
        &cluster.url(0, "/v1/admin/api-keys"),
        &cluster.admin,
        json!({"name": "k", "role": "basic"}),
    )
    .await;
    assert_eq!(status, 201);
    let secret = key["secret"].as_str().expect("secret").to_string();
    for node in 0..2 {
        let url = cluster.url(node, "/v1/verify");
        eventually(Duration::from_secs(5), "the key verifies", || {
            let client = client.clone();
            let url = url.clone();
            let secret = secret.clone();
            async move { (verify_code(&client, &url, &secret).await == "VALID").then_some(()) }
        })
        .await;
    }

    cluster.pg.stop("fast");
    for node in 0..2 {
        let url = cluster.url(node, "/v1/verify");
        let seen = eventually(Duration::from_secs(10), "the node fails closed", || {
            let client = client.clone();
            let url = url.clone();
            let secret = secret.clone();
            async move {
                let seen = verify_code(&client, &url, &secret).await;
                (seen != "VALID").then_some(seen)
            }
        })
        .await;
        assert_eq!(seen, "HTTP 503", "node {node}");
        let response = client
            .post(cluster.url(node, "/v1/verify"))
            .json(&json!({"key": secret}))
            .send()
            .await
            .expect("verify");
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "ledger_unavailable");
        let ready = client
            .get(cluster.url(node, "/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 503);
        let me = client
            .get(cluster.url(node, "/v1/me"))
            .bearer_auth(&cluster.admin)
            .send()
            .await
            .expect("me");
        assert_eq!(me.status(), 503, "authentication fails closed too");
        // Forward-auth fails closed as well: 503 where the proxy understands it, 403 with
        // the reason for nginx, which turns anything but 2xx, 401 and 403 into a 500.
        for (path, header, status) in [
            ("/v1/auth/forward", "x-forwarded-uri", 503),
            ("/v1/auth/nginx", "x-original-uri", 403),
        ] {
            let response = client
                .get(cluster.url(node, path))
                .bearer_auth(&secret)
                .header(header, "/search")
                .send()
                .await
                .expect("forward-auth");
            assert_eq!(response.status(), status, "{path} on node {node}");
            assert_eq!(response.headers()["x-keyledger-code"], "LEDGER_UNAVAILABLE");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"]["code"], "ledger_unavailable", "{path}");
        }
        let (status, body) = post(
            &client,
            &cluster.url(node, "/v1/admin/api-keys"),
            &cluster.admin,
            json!({"name": format!("down-{node}"), "role": "basic"}),
        )
        .await;
        assert_eq!(status, 503, "{body}");
    }

    cluster.pg.launch();
    for node in 0..2 {
        let url = cluster.url(node, "/v1/verify");
        eventually(Duration::from_secs(20), "the node recovers", || {
            let client = client.clone();
            let url = url.clone();
            let secret = secret.clone();
            async move { (verify_code(&client, &url, &secret).await == "VALID").then_some(()) }
        })
        .await;
        let (status, _) = post(
            &client,
            &cluster.url(node, "/v1/admin/api-keys"),
            &cluster.admin,
            json!({"name": format!("back-{node}"), "role": "basic"}),
        )
        .await;
        assert_eq!(status, 201, "node {node} takes commands again");
    }
    crate::check_chain(&cluster.stored_log());
}
