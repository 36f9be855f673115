#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

// The life of a credential over HTTP, on SQLite and PostgreSQL: access and registration tokens
// are listed without their secrets, expire, are revoked (audited, idempotent, 404 for an
// unknown id), the last unexpired admin token cannot be revoked, and a token's last use is
// written at most once a minute.

use std::time::Duration;

use aip_aat::secret::digest as token_digest;
use axum::http::{Method, StatusCode};
use common::{NOW, Reply, TestRegistry, key, rfc3339};
use serde_json::{Value, json};

fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.error(), code, "{}", reply.text());
    assert!(
        reply.json()["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
}

/// Creates an access token with `body`; (token, token id).
async fn access_token(r: &TestRegistry, body: Value) -> (String, String) {
    let reply = r
        .call(Method::POST, "/v1/access-tokens", Some(&r.admin), Some(&body))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let body = reply.json();
    (
        body["token"].as_str().unwrap().to_owned(),
        body["token_id"].as_str().unwrap().to_owned(),
    )
}

/// The listed entry of the access token `token_id`, after checking the list's headers and
/// that no secret is in it.
async fn listed(r: &TestRegistry, path: &str, member: &str, token_id: &str, secrets: &[&str]) -> Value {
    let reply = r.call(Method::GET, path, Some(&r.admin), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers["cache-control"], "no-store");
    let text = reply.text();
    for secret in secrets {
        assert!(!text.contains(secret), "the list shows a secret: {text}");
        assert!(!text.contains(&token_digest(secret)), "the list shows a digest: {text}");
    }
    let list = reply.json();
    let entries = list[member].as_array().unwrap();
    for entry in entries {
        assert!(entry.get("token").is_none() && entry.get("digest").is_none(), "{entry}");
    }
    entries
        .iter()
        .find(|e| e["token_id"] == token_id)
        .unwrap_or_else(|| panic!("{token_id} not listed: {list}"))
        .clone()
}

/// Whether `token` may read the agent list now.
async fn reads(r: &TestRegistry, token: &str) -> StatusCode {
    r.call(Method::GET, "/v1/agents", Some(token), None).await.status
}

async fn audited(r: &TestRegistry, action: &str) -> Vec<String> {
    r.store
        .database()
        .audit_records(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|record| record.action == action)
        .map(|record| format!("{} {}", record.actor, record.subject))
        .collect()
}

async fn access_tokens_are_listed_and_revoked(r: TestRegistry) {
    let (reader, reader_id) = access_token(&r, json!({"role": "reader", "label": "proxy one"})).await;
    assert_eq!(reads(&r, &reader).await, StatusCode::OK);

    let entry = listed(
        &r,
        "/v1/access-tokens",
        "access_tokens",
        &reader_id,
        &[&reader, &r.admin],
    )
    .await;
    assert_eq!(entry["role"], "reader");
    assert_eq!(entry["label"], "proxy one");
    assert_eq!(entry["created_at"], rfc3339(NOW));
    assert_eq!(entry["expires_at"], Value::Null);
    assert_eq!(entry["last_used_at"], rfc3339(NOW));
    assert_eq!(entry["revoked_at"], Value::Null);

    // A reader may neither list nor revoke.
    let reply = r.call(Method::GET, "/v1/access-tokens", Some(&reader), None).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");
    let path = format!("/v1/access-tokens/{reader_id}");
    let reply = r.call(Method::DELETE, &path, Some(&reader), None).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");

    // Revoked: refused at once on this replica, and the revocation is audited once.
    r.clock.advance(10);
    let reply = r.call(Method::DELETE, &path, Some(&r.admin), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert_eq!(reply.json()["revoked_at"], rfc3339(NOW + 10));
    assert!(!reply.text().contains(&reader));
    assert_eq!(reads(&r, &reader).await, StatusCode::UNAUTHORIZED);
    let head = r.store.database().audit_head().await.unwrap();

    // Revoking again changes nothing and answers the first revocation.
    r.clock.advance(10);
    let again = r.call(Method::DELETE, &path, Some(&r.admin), None).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.json()["revoked_at"], rfc3339(NOW + 10));
    assert_eq!(r.store.database().audit_head().await.unwrap(), head);
    let entry = listed(&r, "/v1/access-tokens", "access_tokens", &reader_id, &[]).await;
    assert_eq!(entry["revoked_at"], rfc3339(NOW + 10));
    let actions = audited(&r, "access_token.revoke").await;
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(
        actions[0].starts_with("admin:") && actions[0].ends_with(&reader_id),
        "{actions:?}"
    );

    // An unknown id, or one that tries to name another path.
    let before = r.store.database().audit_head().await.unwrap();
    for id in ["at000000000000", "%2E%2E%2Fagents"] {
        let reply = r
            .call(Method::DELETE, &format!("/v1/access-tokens/{id}"), Some(&r.admin), None)
            .await;
        assert_error(&reply, StatusCode::NOT_FOUND, "token_not_found");
    }
    assert_eq!(r.store.database().audit_head().await.unwrap(), before);
}
with_registry!(access_token_lifecycle, access_tokens_are_listed_and_revoked);

async fn expired_access_tokens_are_refused(r: TestRegistry) {
    let (admin, admin_id) = access_token(&r, json!({"role": "admin", "expires_in": 60})).await;
    assert_eq!(reads(&r, &admin).await, StatusCode::OK);
    let entry = listed(&r, "/v1/access-tokens", "access_tokens", &admin_id, &[&admin]).await;
    assert_eq!(entry["expires_at"], rfc3339(NOW + 60));

    // At its expiry instant it no longer works, remembered or not.
    r.clock.advance(60);
    let reply = r.call(Method::GET, "/v1/agents", Some(&admin), None).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
    assert!(reply.text().contains("expired"), "{}", reply.text());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(reads(&r, &admin).await, StatusCode::UNAUTHORIZED);

    // Lifetimes out of range, or not a number, change nothing.
    let before = r.store.database().audit_head().await.unwrap();
    for body in [
        json!({"role": "reader", "expires_in": 59}),
        json!({"role": "reader", "expires_in": 11 * 366 * 86_400}),
        json!({"role": "reader", "expires_in": "1h"}),
        json!({"role": "reader", "expires_in": -1}),
    ] {
        let reply = r
            .call(Method::POST, "/v1/access-tokens", Some(&r.admin), Some(&body))
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert_eq!(r.store.database().audit_head().await.unwrap(), before);
}
with_registry!(expired_access_token, expired_access_tokens_are_refused);

async fn the_last_admin_token_cannot_be_revoked(r: TestRegistry) {
    let first = r.call(Method::GET, "/v1/whoami", Some(&r.admin), None).await.json()["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first_path = format!("/v1/access-tokens/{first}");
    let before = r.store.database().audit_head().await.unwrap();
    let reply = r.call(Method::DELETE, &first_path, Some(&r.admin), None).await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");
    assert!(reply.text().contains("last unexpired admin token"), "{}", reply.text());
    assert_eq!(r.store.database().audit_head().await.unwrap(), before);
    assert_eq!(reads(&r, &r.admin).await, StatusCode::OK);

    // A reader token and an admin token about to expire do not count.
    access_token(&r, json!({"role": "reader"})).await;
    let (short, _) = access_token(&r, json!({"role": "admin", "expires_in": 60})).await;
    r.clock.advance(60);
    let reply = r.call(Method::DELETE, &first_path, Some(&r.admin), None).await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");
    assert_eq!(reads(&r, &short).await, StatusCode::UNAUTHORIZED);

    // With a second admin token, the first can go; then the second is the last.
    let (second, second_id) = access_token(&r, json!({"role": "admin", "label": "ops"})).await;
    let reply = r.call(Method::DELETE, &first_path, Some(&second), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reads(&r, &r.admin).await, StatusCode::UNAUTHORIZED);
    let reply = r
        .call(
            Method::DELETE,
            &format!("/v1/access-tokens/{second_id}"),
            Some(&second),
            None,
        )
        .await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");
    assert_eq!(reads(&r, &second).await, StatusCode::OK);
}
with_registry!(last_admin_token, the_last_admin_token_cannot_be_revoked);

async fn last_used(r: &TestRegistry, token: &str, token_id: &str) -> Value {
    listed(r, "/v1/access-tokens", "access_tokens", token_id, &[token]).await["last_used_at"].clone()
}

async fn last_use_is_written_at_most_once_a_minute(r: TestRegistry) {
    let (reader, reader_id) = access_token(&r, json!({"role": "reader"})).await;
    assert_eq!(last_used(&r, &reader, &reader_id).await, Value::Null);
    assert_eq!(reads(&r, &reader).await, StatusCode::OK);
    assert_eq!(last_used(&r, &reader, &reader_id).await, rfc3339(NOW));

    // Read from the database again (the role is remembered for less than a second), but the
    // last write is not a minute old.
    r.clock.advance(59);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(reads(&r, &reader).await, StatusCode::OK);
    assert_eq!(last_used(&r, &reader, &reader_id).await, rfc3339(NOW));

    r.clock.advance(1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(reads(&r, &reader).await, StatusCode::OK);
    assert_eq!(last_used(&r, &reader, &reader_id).await, rfc3339(NOW + 60));
}
with_registry!(last_use, last_use_is_written_at_most_once_a_minute);

async fn registration_tokens_are_listed_and_revoked(r: TestRegistry) {
    let reply = r
        .call(
            Method::POST,
            "/v1/registration-tokens",
            Some(&r.admin),
            Some(&json!({"uses": 3, "expires_in": 3600, "label": "batch 7"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let token = reply.json()["token"].as_str().unwrap().to_owned();
    let token_id = reply.json()["token_id"].as_str().unwrap().to_owned();

    let registration = r.registration(&key(), "first");
    let reply = r
        .call(Method::POST, "/v1/agents", Some(&token), Some(&registration))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());

    let path = "/v1/registration-tokens";
    let entry = listed(&r, path, "registration_tokens", &token_id, &[&token]).await;
    assert_eq!(entry["label"], "batch 7");
    assert_eq!(entry["uses_remaining"], 2);
    assert_eq!(entry["expires_at"], rfc3339(NOW + 3600));
    assert_eq!(entry["last_used_at"], rfc3339(NOW));
    assert_eq!(entry["revoked_at"], Value::Null);

    let reader = r.reader_token().await;
    let reply = r.call(Method::GET, path, Some(&reader), None).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");

    r.clock.advance(5);
    let revoke = format!("{path}/{token_id}");
    let reply = r.call(Method::DELETE, &revoke, Some(&r.admin), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["revoked_at"], rfc3339(NOW + 5));
    assert_eq!(reply.json()["uses_remaining"], 2);

    // Refused from now on; a second revocation changes nothing.
    let head = r.store.database().audit_head().await.unwrap();
    let registration = r.registration(&key(), "second");
    let reply = r
        .call(Method::POST, "/v1/agents", Some(&token), Some(&registration))
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_token");
    let reply = r.call(Method::DELETE, &revoke, Some(&r.admin), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["revoked_at"], rfc3339(NOW + 5));
    assert_eq!(r.store.database().audit_head().await.unwrap(), head);
    assert_eq!(audited(&r, "registration_token.revoke").await.len(), 1);

    let reply = r
        .call(Method::DELETE, &format!("{path}/rt000000000000"), Some(&r.admin), None)
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "token_not_found");
    assert_eq!(r.store.database().audit_head().await.unwrap(), head);
}
with_registry!(registration_token_lifecycle, registration_tokens_are_listed_and_revoked);
