#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

// Bad input over HTTP, on SQLite and PostgreSQL: every client mistake gets a 4xx with a JSON
// `{"error", "error_description"}` body (never a 500, never internal details), 401s carry
// `WWW-Authenticate`, and a failed request changes nothing.

use aip_aat::clock::Clock as _;
use aip_aat::ids::AgentId;
use aip_aat::keys::{Algorithm, KeyPair, Signer};
use aip_aat::request_proof::{SignedRequest, create_request_proof};
use aip_aat::secret::digest as token_digest;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{NOW, Reply, TestRegistry, key, rotation, sign_body};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Substrings that would reveal internals (drivers, panics, source or file-system paths).
const LEAKS: &[&str] = &[
    "sqlx",
    "database",
    "panicked",
    "backtrace",
    ".rs:",
    "src/",
    "/work/",
    "/tmp/",
    "/root/",
    "/home/",
    "/usr/",
    "/var/",
    "/etc/",
    "/proc/",
];

/// No 5xx, and nothing internal in the body.
#[track_caller]
fn assert_clean(reply: &Reply) {
    assert!(
        !reply.status.is_server_error(),
        "{}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    // Error bodies are checked whole; successful ones carry keys, certificates and
    // signatures, whose encodings are left out.
    let text = if reply.status.is_success() {
        readable_text(&reply.body)
    } else {
        String::from_utf8_lossy(&reply.body).into_owned()
    }
    .to_lowercase();
    for leak in LEAKS {
        assert!(!text.contains(leak), "response body leaks {leak:?}: {text}");
    }
}

/// An opaque encoding: PEM, base64, base64url or a compact JWS. Random base64 spells
/// anything now and then (`src/`, `/tmp/`, `sqlx`), so it is left out of the leak check.
fn is_opaque(s: &str) -> bool {
    s.trim_start().starts_with("-----BEGIN")
        || (s.len() >= 16
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-' | b'.')))
}

/// The human-readable parts of a body: for JSON, its member names and its string values
/// other than opaque encodings; otherwise the text, unless it is one opaque encoding.
fn readable_text(body: &[u8]) -> String {
    fn collect(value: &Value, out: &mut String) {
        match value {
            Value::String(s) if !is_opaque(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            Value::Object(members) => {
                for (name, v) in members {
                    out.push_str(name);
                    out.push('\n');
                    collect(v, out);
                }
            }
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(body);
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let mut out = String::new();
            collect(&value, &mut out);
            out
        }
        Err(_) if is_opaque(text.trim()) => String::new(),
        Err(_) => text.into_owned(),
    }
}

/// `reply` is exactly the error `code` with `status`: a JSON object with a non-empty
/// `error_description` and nothing else.
#[track_caller]
fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    assert_eq!(reply.status, status, "{text}");
    assert_eq!(
        reply.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{text}"
    );
    let body = reply.json();
    let members = body.as_object().unwrap_or_else(|| panic!("not an object: {text}"));
    assert_eq!(members.len(), 2, "{text}");
    assert_eq!(body["error"], code, "{text}");
    assert!(
        body["error_description"].as_str().is_some_and(|d| !d.trim().is_empty()),
        "{text}"
    );
    assert_clean(reply);
}

/// A 401 with an OAuth `Bearer` challenge.
#[track_caller]
fn assert_unauthorized(reply: &Reply) {
    assert_error(reply, StatusCode::UNAUTHORIZED, "invalid_token");
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
}

/// A 401 for a bad request proof, with its challenge.
#[track_caller]
fn assert_invalid_proof(reply: &Reply) {
    assert_error(reply, StatusCode::UNAUTHORIZED, "invalid_proof");
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("invalid_proof"), "{challenge}");
}

/// `r.call`, checking that the response leaks nothing.
async fn call(r: &TestRegistry, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
    let reply = r.call(method, path, token, body).await;
    assert_clean(&reply);
    reply
}

/// A request with an arbitrary body and `Content-Type`.
async fn raw(
    r: &TestRegistry,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let reply = r.send(request.body(body.into()).unwrap()).await;
    assert_clean(&reply);
    reply
}

/// A registration body for `key`, edited by `edit`, then signed by `signer` at `iat`.
fn registration_with(key: &KeyPair, signer: &dyn Signer, iat: i64, edit: impl FnOnce(&mut Value)) -> Value {
    let mut body = json!({
        "name": "worker",
        "public_key": key.public_key().to_jwk(),
        "capabilities": ["read_file", "list_directory"],
    });
    edit(&mut body);
    sign_body(signer, &mut body, "/v1/agents", iat);
    body
}

/// A validly signed registration body for `key`, edited before signing.
fn registration(r: &TestRegistry, key: &KeyPair, edit: impl FnOnce(&mut Value)) -> Value {
    registration_with(key, key, r.clock.now(), edit)
}

/// What a failed request must leave untouched.
#[derive(Debug, PartialEq)]
struct Snapshot {
    agents: Value,
    details: Vec<Value>,
    etag: String,
    revocations: Value,
    audit: (i64, String),
}

async fn snapshot(r: &TestRegistry) -> Snapshot {
    let agents = call(r, Method::GET, "/v1/agents", Some(&r.admin), None).await;
    assert_eq!(agents.status, StatusCode::OK);
    let agents = agents.json();
    let mut details = Vec::new();
    for agent in agents["agents"].as_array().unwrap() {
        let id = agent["agent_id"].as_str().unwrap();
        let mut detail = call(r, Method::GET, &format!("/v1/agents/{id}"), Some(&r.admin), None)
            .await
            .json();
        // The AID is re-attested on every read; the rest is the stored state.
        detail.as_object_mut().unwrap().remove("aid");
        details.push(detail);
    }
    let list = call(r, Method::GET, "/v1/revocations", Some(&r.admin), None).await;
    assert_eq!(list.status, StatusCode::OK);
    Snapshot {
        agents,
        details,
        etag: list.headers["etag"].to_str().unwrap().to_owned(),
        revocations: list.json(),
        audit: r.store.database().audit_head().await.unwrap(),
    }
}

/// Registration uses left on the registration token `token`.
async fn uses_left(r: &TestRegistry, token: &str) -> i64 {
    r.registry
        .store()
        .registration_token(&token_digest(token))
        .await
        .unwrap()
        .unwrap()
        .uses_remaining
}

async fn registration_token(r: &TestRegistry, uses: u32, expires_in: u64) -> String {
    let reply = call(
        r,
        Method::POST,
        "/v1/registration-tokens",
        Some(&r.admin),
        Some(&json!({"uses": uses, "expires_in": expires_in})),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.headers["cache-control"], "no-store");
    let body = reply.json();
    assert_eq!(body["uses"], uses);
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("aip_rt_"), "{token}");
    token
}

async fn register(r: &TestRegistry, key: &KeyPair, name: &str) -> String {
    let reply = call(
        r,
        Method::POST,
        "/v1/agents",
        Some(&r.admin),
        Some(&registration(r, key, |b| b["name"] = name.into())),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["agent_id"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

async fn missing_and_unknown_credentials(r: TestRegistry) {
    let id = register(&r, &key(), "existing").await;
    let before = snapshot(&r).await;
    let body = registration(&r, &key(), |_| {});
    let protected: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "/v1/agents".into(), Some(body.clone())),
        (Method::GET, "/v1/agents".into(), None),
        (Method::GET, format!("/v1/agents/{id}"), None),
        (Method::POST, format!("/v1/agents/{id}/suspend"), None),
        (Method::POST, format!("/v1/agents/{id}/reactivate"), None),
        (Method::POST, format!("/v1/agents/{id}/revoke"), None),
        (Method::DELETE, format!("/v1/agents/{id}"), None),
        (Method::GET, "/v1/revocations".into(), None),
        (Method::GET, "/v1/revocations.jws".into(), None),
        (Method::GET, "/v1/revocations/stream".into(), None),
        (
            Method::POST,
            "/v1/registration-tokens".into(),
            Some(json!({"uses": 1, "expires_in": 3600})),
        ),
        (Method::POST, "/v1/access-tokens".into(), Some(json!({"role": "admin"}))),
    ];
    for (method, path, body) in &protected {
        // No Authorization header at all.
        let reply = call(&r, method.clone(), path, None, body.as_ref()).await;
        assert_unauthorized(&reply);
        // Tokens that are not ours: garbage, and well-formed prefixes with unknown secrets.
        for token in [
            "garbage",
            "aip_at_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "aip_rt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let reply = call(&r, method.clone(), path, Some(token), body.as_ref()).await;
            assert_unauthorized(&reply);
            assert!(
                reply.headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .contains(r#"error="invalid_token""#)
            );
        }
    }
    // Other schemes and empty bearer tokens.
    for authorization in [
        "Basic YWRtaW46YWRtaW4=",
        "Bearer ",
        "Bearer",
        "Token abc",
        &r.admin.clone(),
    ] {
        let request = Request::builder()
            .method(Method::GET)
            .uri("/v1/agents")
            .header("authorization", authorization)
            .body(Body::empty())
            .unwrap();
        let reply = r.send(request).await;
        assert_unauthorized(&reply);
    }
    // A header value that is not visible ASCII.
    let request = Request::builder()
        .method(Method::GET)
        .uri("/v1/agents")
        .header(
            "authorization",
            axum::http::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    assert_unauthorized(&r.send(request).await);
    assert_eq!(snapshot(&r).await, before);
}
with_registry!(credentials, missing_and_unknown_credentials);

async fn reader_token_reads_but_cannot_write(r: TestRegistry) {
    let reader = r.reader_token().await;
    let id = register(&r, &key(), "watched").await;
    let before = snapshot(&r).await;

    for path in [
        format!("/v1/agents/{id}"),
        "/v1/agents".into(),
        "/v1/revocations".into(),
        "/v1/revocations.jws".into(),
    ] {
        let reply = call(&r, Method::GET, &path, Some(&reader), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    let shown = call(&r, Method::GET, &format!("/v1/agents/{id}"), Some(&reader), None).await;
    assert_eq!(shown.json()["agent_id"], id.as_str());
    let listed = call(&r, Method::GET, "/v1/agents", Some(&reader), None).await;
    assert_eq!(listed.json()["agents"][0]["agent_id"], id.as_str());

    let reply = call(
        &r,
        Method::POST,
        "/v1/agents",
        Some(&reader),
        Some(&registration(&r, &key(), |_| {})),
    )
    .await;
    assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");
    for action in ["suspend", "reactivate", "revoke"] {
        let reply = call(
            &r,
            Method::POST,
            &format!("/v1/agents/{id}/{action}"),
            Some(&reader),
            None,
        )
        .await;
        assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");
    }
    let reply = call(&r, Method::DELETE, &format!("/v1/agents/{id}"), Some(&reader), None).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");
    let reply = call(
        &r,
        Method::POST,
        "/v1/registration-tokens",
        Some(&reader),
        Some(&json!({"uses": 1, "expires_in": 3600})),
    )
    .await;
    assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");
    let reply = call(
        &r,
        Method::POST,
        "/v1/access-tokens",
        Some(&reader),
        Some(&json!({"role": "admin"})),
    )
    .await;
    assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");
    // An admin asking for a role that does not exist.
    let reply = call(
        &r,
        Method::POST,
        "/v1/access-tokens",
        Some(&r.admin),
        Some(&json!({"role": "owner"})),
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(snapshot(&r).await, before);
}
with_registry!(reader, reader_token_reads_but_cannot_write);

async fn registration_token_registers_exactly_once(r: TestRegistry) {
    let token = registration_token(&r, 1, 3600).await;
    let existing_key = key();
    let existing = register(&r, &existing_key, "existing").await;
    assert_eq!(uses_left(&r, &token).await, 1);
    let before = snapshot(&r).await;

    // It cannot read nor administer.
    for path in [
        format!("/v1/agents/{existing}"),
        "/v1/agents".into(),
        "/v1/revocations".into(),
        "/v1/revocations.jws".into(),
        "/v1/revocations/stream".into(),
    ] {
        let reply = call(&r, Method::GET, &path, Some(&token), None).await;
        assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");
    }
    let reply = call(
        &r,
        Method::POST,
        &format!("/v1/agents/{existing}/suspend"),
        Some(&token),
        None,
    )
    .await;
    assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");
    let reply = call(
        &r,
        Method::POST,
        "/v1/registration-tokens",
        Some(&token),
        Some(&json!({"uses": 5, "expires_in": 3600})),
    )
    .await;
    assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");

    // Failed registrations do not consume it: a bad body, a bad proof, and a key already
    // registered (which fails inside the store transaction, after the use was decremented).
    let reply = call(
        &r,
        Method::POST,
        "/v1/agents",
        Some(&token),
        Some(&registration(&r, &key(), |b| b["name"] = "".into())),
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    let k = key();
    let reply = call(
        &r,
        Method::POST,
        "/v1/agents",
        Some(&token),
        Some(&registration_with(&k, &key(), NOW, |_| {})),
    )
    .await;
    assert_invalid_proof(&reply);
    let reply = call(
        &r,
        Method::POST,
        "/v1/agents",
        Some(&token),
        Some(&registration(&r, &existing_key, |_| {})),
    )
    .await;
    assert_error(&reply, StatusCode::CONFLICT, "key_already_registered");
    assert_eq!(uses_left(&r, &token).await, 1);
    assert_eq!(snapshot(&r).await, before);

    // The one use.
    let reply = call(
        &r,
        Method::POST,
        "/v1/agents",
        Some(&token),
        Some(&registration(&r, &key(), |_| {})),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["registration_token_expires_at"], "2026-02-02T03:40:00Z");
    assert_eq!(uses_left(&r, &token).await, 0);

    // Used up.
    let before = snapshot(&r).await;
    let reply = call(
        &r,
        Method::POST,
        "/v1/agents",
        Some(&token),
        Some(&registration(&r, &key(), |_| {})),
    )
    .await;
    assert_unauthorized(&reply);
    assert_eq!(uses_left(&r, &token).await, 0);
    assert_eq!(snapshot(&r).await, before);
}
with_registry!(registration_token_single_use, registration_token_registers_exactly_once);

async fn expired_registration_token_is_refused(r: TestRegistry) {
    let token = registration_token(&r, 5, 60).await;
    r.clock.advance(59);
    let reply = call(
        &r,
        Method::POST,
        "/v1/agents",
        Some(&token),
        Some(&registration(&r, &key(), |_| {})),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(uses_left(&r, &token).await, 4);

    // At its expiry instant it no longer works, nor later.
    r.clock.advance(1);
    let before = snapshot(&r).await;
    for _ in 0..2 {
        let reply = call(
            &r,
            Method::POST,
            "/v1/agents",
            Some(&token),
            Some(&registration(&r, &key(), |_| {})),
        )
        .await;
        assert_unauthorized(&reply);
        r.clock.advance(3600);
    }
    assert_eq!(uses_left(&r, &token).await, 4);
    assert_eq!(snapshot(&r).await, before);
}
with_registry!(expired_registration_token, expired_registration_token_is_refused);

async fn registration_token_requests_are_validated(r: TestRegistry) {
    let before = snapshot(&r).await;
    for body in [
        json!({"uses": 0, "expires_in": 3600}),
        json!({"uses": 10_001, "expires_in": 3600}),
        json!({"uses": -1, "expires_in": 3600}),
        json!({"uses": 1, "expires_in": 59}),
        json!({"uses": 1, "expires_in": 30 * 86_400 + 1}),
        json!({"uses": 1, "expires_in": "1h"}),
        json!({"uses": 1}),
        json!({"uses": 1, "expires_in": 3600, "admin": true}),
    ] {
        let reply = call(&r, Method::POST, "/v1/registration-tokens", Some(&r.admin), Some(&body)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert_eq!(snapshot(&r).await, before);
}
with_registry!(registration_token_validation, registration_token_requests_are_validated);

// ---------------------------------------------------------------------------------------------
// Registration bodies
// ---------------------------------------------------------------------------------------------

/// A change to a registration body.
type Edit = Box<dyn Fn(&mut Value)>;

async fn malformed_registration_bodies(r: TestRegistry) {
    let token = registration_token(&r, 3, 3600).await;
    register(&r, &key(), "existing").await;
    let before = snapshot(&r).await;

    // Not JSON, not an object, duplicate members, not UTF-8, nested too deep.
    let valid = registration(&r, &key(), |_| {}).to_string();
    let duplicate = format!("{{\"name\":\"other\",{}", &valid[1..]);
    assert_eq!(duplicate.matches("\"name\"").count(), 2);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let texts: Vec<Vec<u8>> = vec![
        b"{name: worker}".to_vec(),
        b"{\"name\": \"worker\"".to_vec(),
        valid.as_bytes()[..valid.len() - 1].to_vec(),
        format!("{valid} trailing").into_bytes(),
        b"[]".to_vec(),
        format!("[{valid}]").into_bytes(),
        b"\"worker\"".to_vec(),
        b"null".to_vec(),
        b"42".to_vec(),
        duplicate.into_bytes(),
        b"{\"name\": \"w\xff\xfe\"}".to_vec(),
        deep.into_bytes(),
    ];
    for text in texts {
        for token in [r.admin.as_str(), token.as_str()] {
            let reply = raw(
                &r,
                Method::POST,
                "/v1/agents",
                Some(token),
                Some("application/json"),
                text.clone(),
            )
            .await;
            assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
        }
    }

    // An empty body.
    let reply = raw(
        &r,
        Method::POST,
        "/v1/agents",
        Some(&r.admin),
        Some("application/json"),
        "",
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");

    // A body not declared as JSON.
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let reply = raw(
            &r,
            Method::POST,
            "/v1/agents",
            Some(&r.admin),
            content_type,
            valid.clone(),
        )
        .await;
        assert_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request");
    }
    // `application/json` with parameters is JSON.
    let reply = raw(
        &r,
        Method::POST,
        "/v1/agents",
        Some(&r.admin),
        Some("application/json; charset=utf-8"),
        registration(&r, &key(), |b| b["name"] = "".into()).to_string(),
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");

    // Members: unknown, missing, of the wrong type or out of range. Each body is otherwise
    // valid and validly signed, so the one mistake is what is refused.
    let long = |n: usize| "a".repeat(n);
    let rsa = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
    });
    let edits: Vec<(&str, Edit)> = vec![
        ("unknown member", Box::new(|b| b["colour"] = "blue".into())),
        (
            "missing name",
            Box::new(|b| {
                b.as_object_mut().unwrap().remove("name");
            }),
        ),
        (
            "missing public_key",
            Box::new(|b| {
                b.as_object_mut().unwrap().remove("public_key");
            }),
        ),
        ("empty name", Box::new(|b| b["name"] = "".into())),
        ("whitespace name", Box::new(|b| b["name"] = " \t ".into())),
        ("129-character name", Box::new(move |b| b["name"] = long(129).into())),
        (
            "129-character name (multi-byte)",
            Box::new(|b| b["name"] = "é".repeat(129).into()),
        ),
        ("bell in name", Box::new(|b| b["name"] = "bad\u{7}name".into())),
        ("newline in name", Box::new(|b| b["name"] = "two\nlines".into())),
        ("NUL in name", Box::new(|b| b["name"] = "nul\u{0}".into())),
        ("DEL in name", Box::new(|b| b["name"] = "del\u{7f}".into())),
        ("C1 control in name", Box::new(|b| b["name"] = "c1\u{85}".into())),
        ("name is a number", Box::new(|b| b["name"] = 7.into())),
        ("name is null", Box::new(|b| b["name"] = Value::Null)),
        (
            "1025-character description",
            Box::new(move |b| b["description"] = long(1025).into()),
        ),
        ("empty description", Box::new(|b| b["description"] = "".into())),
        (
            "control in description",
            Box::new(|b| b["description"] = "tab\there".into()),
        ),
        (
            "duplicate capability",
            Box::new(|b| b["capabilities"] = json!(["read_file", "read_file"])),
        ),
        (
            "capability with a space",
            Box::new(|b| b["capabilities"] = json!(["read file"])),
        ),
        ("empty capability", Box::new(|b| b["capabilities"] = json!([""]))),
        (
            "129-character capability",
            Box::new(move |b| b["capabilities"] = json!([long(129)])),
        ),
        (
            "257 capabilities",
            Box::new(|b| b["capabilities"] = (0..257).map(|i| format!("tool_{i}")).collect::<Value>()),
        ),
        (
            "capabilities not a list",
            Box::new(|b| b["capabilities"] = "read_file".into()),
        ),
        ("capability not a string", Box::new(|b| b["capabilities"] = json!([1]))),
        ("RSA public key", Box::new(move |b| b["public_key"] = rsa.clone())),
        (
            "private part in the key",
            Box::new(|b| b["public_key"]["d"] = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A".into()),
        ),
        (
            "malformed x",
            Box::new(|b| b["public_key"]["x"] = "not base64url!".into()),
        ),
        ("short x", Box::new(|b| b["public_key"]["x"] = "AAAA".into())),
        ("x is a number", Box::new(|b| b["public_key"]["x"] = 3.into())),
        ("unknown curve", Box::new(|b| b["public_key"]["crv"] = "X25519".into())),
        (
            "alg of another key type",
            Box::new(|b| b["public_key"]["alg"] = "ES256".into()),
        ),
        (
            "use other than sig",
            Box::new(|b| b["public_key"]["use"] = "enc".into()),
        ),
        (
            "EC key without y",
            Box::new(|b| {
                b["public_key"] =
                    json!({"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"});
            }),
        ),
        (
            "symmetric key",
            Box::new(|b| b["public_key"] = json!({"kty": "oct", "k": "c2VjcmV0"})),
        ),
        (
            "public_key is a string",
            Box::new(|b| b["public_key"] = "ed25519:abc".into()),
        ),
        ("public_key is an array", Box::new(|b| b["public_key"] = json!([]))),
        ("autonomous is a string", Box::new(|b| b["autonomous"] = "yes".into())),
        ("metadata is a string", Box::new(|b| b["metadata"] = "cursor".into())),
        (
            "empty metadata owner",
            Box::new(|b| b["metadata"] = json!({"owner": " "})),
        ),
        (
            "33 tags",
            Box::new(|b| b["metadata"] = json!({"tags": (0..33).map(|i| format!("t{i}")).collect::<Vec<_>>()})),
        ),
        (
            "65-character tag",
            Box::new(move |b| b["metadata"] = json!({"tags": [long(65)]})),
        ),
        (
            "257-character platform",
            Box::new(move |b| b["metadata"] = json!({"platform": long(257)})),
        ),
    ];
    for (what, edit) in &edits {
        let k = key();
        let body = registration(&r, &k, |b| edit(b));
        for token in [r.admin.as_str(), token.as_str()] {
            let reply = call(&r, Method::POST, "/v1/agents", Some(token), Some(&body)).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{what}: {}",
                String::from_utf8_lossy(&reply.body)
            );
            assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
        }
    }
    // A body without a proof is malformed (the proof is a required member of the body).
    let mut unsigned = registration(&r, &key(), |_| {});
    unsigned.as_object_mut().unwrap().remove("proof");
    let reply = call(&r, Method::POST, "/v1/agents", Some(&r.admin), Some(&unsigned)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    unsigned["proof"] = 5.into();
    let reply = call(&r, Method::POST, "/v1/agents", Some(&r.admin), Some(&unsigned)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");

    // Larger than 64 KiB.
    for size in [64 * 1024 + 1, 1024 * 1024] {
        let body = registration(&r, &key(), |b| b["description"] = long(size).into());
        let reply = call(&r, Method::POST, "/v1/agents", Some(&r.admin), Some(&body)).await;
        assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request");
    }

    assert_eq!(uses_left(&r, &token).await, 3);
    assert_eq!(snapshot(&r).await, before);

    // The limits themselves are accepted.
    let reply = call(
        &r,
        Method::POST,
        "/v1/agents",
        Some(&r.admin),
        Some(&registration(&r, &key(), |b| {
            b["name"] = "é".repeat(128).into();
            b["description"] = long(1024).into();
            b["capabilities"] = (0..255)
                .map(|i| format!("tool_{i}"))
                .chain([long(128)])
                .collect::<Value>();
        })),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let id = reply.json()["agent_id"].as_str().unwrap().to_owned();
    let shown = call(&r, Method::GET, &format!("/v1/agents/{id}"), Some(&r.admin), None).await;
    assert_eq!(shown.json()["capabilities"].as_array().unwrap().len(), 256);
    assert_eq!(shown.json()["aid"]["name"], "é".repeat(128));
}
with_registry!(registration_bodies, malformed_registration_bodies);

// ---------------------------------------------------------------------------------------------
// Proofs of possession
// ---------------------------------------------------------------------------------------------

async fn bad_proofs_are_refused(r: TestRegistry) {
    let token = registration_token(&r, 2, 3600).await;
    register(&r, &key(), "existing").await;
    let before = snapshot(&r).await;
    let k = key();
    let now = r.clock.now();

    let mut bodies: Vec<(&str, Value)> = Vec::new();
    // Signed by a key other than public_key.
    bodies.push(("other key", registration_with(&k, &key(), now, |_| {})));
    // The body changed after signing.
    let mut changed = registration(&r, &k, |_| {});
    changed["name"] = "renamed".into();
    bodies.push(("changed body", changed));
    // A member added after signing.
    let mut added = registration(&r, &k, |_| {});
    added["description"] = "added later".into();
    bodies.push(("added member", added));
    // For another path and another method.
    for (method, path) in [
        ("POST", "/v1/agents/other"),
        ("POST", "/v1/agent"),
        ("PUT", "/v1/agents"),
    ] {
        let mut body = json!({"name": "worker", "public_key": k.public_key().to_jwk(), "capabilities": ["read_file"]});
        let request = SignedRequest {
            method,
            path,
            body: &body,
            exclude: &["proof"],
        };
        body["proof"] = create_request_proof(&k, &request, now).unwrap().into();
        bodies.push(("other request", body));
    }
    // Older than 300 s, or too far in the future.
    bodies.push(("stale", registration_with(&k, &k, now - 301, |_| {})));
    bodies.push(("future", registration_with(&k, &k, now + 31, |_| {})));
    // Not a proof at all, or a proof with its signature cut off or swapped.
    let good = registration(&r, &k, |_| {});
    let proof = good["proof"].as_str().unwrap().to_owned();
    let (signing_input, _) = proof.rsplit_once('.').unwrap();
    let other = registration_with(&k, &key(), now, |_| {});
    let (_, other_signature) = other["proof"].as_str().unwrap().rsplit_once('.').unwrap();
    for bad in [
        String::new(),
        "garbage".into(),
        "a.b.c".into(),
        format!("{signing_input}."),
        format!("{signing_input}.{other_signature}"),
        "x".repeat(5000),
    ] {
        let mut body = good.clone();
        body["proof"] = bad.into();
        bodies.push(("malformed proof", body));
    }

    for (what, body) in &bodies {
        for token in [r.admin.as_str(), token.as_str()] {
            let reply = call(&r, Method::POST, "/v1/agents", Some(token), Some(body)).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{what}: {}",
                String::from_utf8_lossy(&reply.body)
            );
            assert_invalid_proof(&reply);
        }
    }
    assert_eq!(uses_left(&r, &token).await, 2);
    assert_eq!(snapshot(&r).await, before);

    // The window's edges are accepted: exactly 300 s old, and 30 s ahead.
    for iat in [now - 300, now + 30] {
        let k = key();
        let reply = call(
            &r,
            Method::POST,
            "/v1/agents",
            Some(&r.admin),
            Some(&registration_with(&k, &k, iat, |_| {})),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }
}
with_registry!(proof_errors, bad_proofs_are_refused);

async fn replayed_proof_and_known_key(r: TestRegistry) {
    let token = registration_token(&r, 3, 3600).await;
    let a = key();
    let body = registration(&r, &a, |_| {});
    let reply = call(&r, Method::POST, "/v1/agents", Some(&r.admin), Some(&body)).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let before = snapshot(&r).await;

    // Replaying the exact request is refused as a replayed proof, not as a duplicate key: the
    // store records the proof's jti before it inserts the key (`Write::nonce` precedes the
    // `agent_keys` insert in `register_agent`), so the nonce check fails first. Either way
    // nothing changes; asserting `invalid_proof` pins down that replays are detected as such.
    for t in [r.admin.as_str(), token.as_str()] {
        let reply = call(&r, Method::POST, "/v1/agents", Some(t), Some(&body)).await;
        assert_invalid_proof(&reply);
        assert!(
            reply.json()["error_description"]
                .as_str()
                .unwrap()
                .contains("already used")
        );
    }
    // Still replayed a little later, within the proof's window.
    r.clock.advance(200);
    let reply = call(&r, Method::POST, "/v1/agents", Some(&r.admin), Some(&body)).await;
    assert_invalid_proof(&reply);
    // And stale once the window has passed.
    r.clock.advance(101);
    let reply = call(&r, Method::POST, "/v1/agents", Some(&r.admin), Some(&body)).await;
    assert_invalid_proof(&reply);
    assert_eq!(uses_left(&r, &token).await, 3);
    assert_eq!(snapshot(&r).await, before);

    // A fresh proof for the same key: the key is taken.
    for t in [r.admin.as_str(), token.as_str()] {
        let fresh = registration(&r, &a, |b| b["name"] = "second".into());
        let reply = call(&r, Method::POST, "/v1/agents", Some(t), Some(&fresh)).await;
        assert_error(&reply, StatusCode::CONFLICT, "key_already_registered");
    }
    // The same key as a P-256 key is still a different key; the same Ed25519 key is not,
    // whatever optional members its JWK carries.
    let fresh = registration(&r, &a, |b| {
        b["public_key"].as_object_mut().unwrap().remove("kid");
        b["public_key"].as_object_mut().unwrap().remove("alg");
        b["public_key"].as_object_mut().unwrap().remove("use");
    });
    let reply = call(&r, Method::POST, "/v1/agents", Some(&r.admin), Some(&fresh)).await;
    assert_error(&reply, StatusCode::CONFLICT, "key_already_registered");
    assert_eq!(uses_left(&r, &token).await, 3);
    assert_eq!(snapshot(&r).await, before);

    // A P-256 agent registers fine.
    let p = KeyPair::generate(Algorithm::ES256).unwrap();
    let reply = call(
        &r,
        Method::POST,
        "/v1/agents",
        Some(&token),
        Some(&registration(&r, &p, |_| {})),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(uses_left(&r, &token).await, 2);
}
with_registry!(replay_and_duplicate_key, replayed_proof_and_known_key);

// ---------------------------------------------------------------------------------------------
// Paths, routes and methods
// ---------------------------------------------------------------------------------------------

async fn bad_paths_and_routes(r: TestRegistry) {
    let id = register(&r, &key(), "existing").await;
    let before = snapshot(&r).await;
    let rotate = json!({"new_public_key": key().public_key().to_jwk(), "new_key_proof": "x", "proof": "y"});
    let renew = json!({"proof": "y"});

    // Ids that are not agent ids.
    for bad in [
        "not-an-id",
        "ag_",
        "ag_123",
        "AG_6f1c2b7e-0000-4000-8000-000000000000",
        "ag_zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
        "%00",
        "ag_6f1c2b7e-0000-4000-8000-000000000000%0A",
    ] {
        let reply = call(&r, Method::GET, &format!("/v1/agents/{bad}"), Some(&r.admin), None).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
        for action in ["suspend", "reactivate", "revoke"] {
            let reply = call(
                &r,
                Method::POST,
                &format!("/v1/agents/{bad}/{action}"),
                Some(&r.admin),
                None,
            )
            .await;
            assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
        }
        let reply = call(&r, Method::DELETE, &format!("/v1/agents/{bad}"), Some(&r.admin), None).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
        let reply = call(
            &r,
            Method::POST,
            &format!("/v1/agents/{bad}/rotate-key"),
            None,
            Some(&rotate),
        )
        .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
        let reply = call(
            &r,
            Method::POST,
            &format!("/v1/agents/{bad}/certificate"),
            None,
            Some(&renew),
        )
        .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    }

    // Well-formed ids nobody has.
    let unknown = AgentId::random().unwrap().to_string();
    assert_ne!(unknown, id);
    let reply = call(&r, Method::GET, &format!("/v1/agents/{unknown}"), Some(&r.admin), None).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "agent_not_found");
    for action in ["suspend", "reactivate", "revoke"] {
        let reply = call(
            &r,
            Method::POST,
            &format!("/v1/agents/{unknown}/{action}"),
            Some(&r.admin),
            None,
        )
        .await;
        assert_error(&reply, StatusCode::NOT_FOUND, "agent_not_found");
    }
    let reply = call(
        &r,
        Method::DELETE,
        &format!("/v1/agents/{unknown}"),
        Some(&r.admin),
        None,
    )
    .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "agent_not_found");
    let reply = call(
        &r,
        Method::POST,
        &format!("/v1/agents/{unknown}/rotate-key"),
        None,
        Some(&rotate),
    )
    .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "agent_not_found");
    let reply = call(
        &r,
        Method::POST,
        &format!("/v1/agents/{unknown}/certificate"),
        None,
        Some(&renew),
    )
    .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "agent_not_found");

    // Unknown routes.
    for path in [
        "/",
        "/v1",
        "/v2/agents",
        "/v1/agent",
        "/v1/agents/x/y/z",
        &format!("/v1/agents/{id}/unknown"),
        "/v1/crl.der",
        "/.well-known/openid-configuration",
        "/../../etc/passwd",
    ] {
        for method in [Method::GET, Method::POST] {
            let reply = call(&r, method, path, Some(&r.admin), None).await;
            assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
        }
    }

    // Query strings of the listing.
    for query in [
        "status=bogus",
        "limit=abc",
        "limit=-1",
        "after=not-an-id",
        "colour=blue",
    ] {
        let reply = call(&r, Method::GET, &format!("/v1/agents?{query}"), Some(&r.admin), None).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    }
    assert_eq!(snapshot(&r).await, before);
}
with_registry!(paths_and_routes, bad_paths_and_routes);

async fn wrong_methods_get_405(r: TestRegistry) {
    let id = register(&r, &key(), "existing").await;
    let before = snapshot(&r).await;
    for (method, path) in [
        (Method::PUT, "/v1/agents".to_owned()),
        (Method::PATCH, format!("/v1/agents/{id}")),
        (Method::GET, format!("/v1/agents/{id}/suspend")),
        (Method::GET, format!("/v1/agents/{id}/rotate-key")),
        (Method::DELETE, format!("/v1/agents/{id}/revoke")),
        (Method::POST, "/v1/jwks".to_owned()),
        (Method::POST, "/v1/crl".to_owned()),
        (Method::DELETE, "/v1/revocations".to_owned()),
        (Method::PUT, "/v1/registration-tokens".to_owned()),
        (Method::GET, "/v1/access-tokens/at000000000000".to_owned()),
        (Method::POST, "/health".to_owned()),
    ] {
        let reply = call(&r, method.clone(), &path, Some(&r.admin), None).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(reply.headers.contains_key("allow"), "{method} {path}");
    }
    assert_eq!(snapshot(&r).await, before);
}
with_registry!(wrong_methods, wrong_methods_get_405);

/// The issue asks for `{"error","error_description"}` on every client mistake; a wrong
/// method is one.
async fn wrong_method_has_a_json_error_body(r: TestRegistry) {
    let reply = call(&r, Method::PUT, "/v1/agents", Some(&r.admin), None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.json()["error"].as_str().map(str::is_empty), Some(false));
    assert_eq!(
        reply.json()["error_description"].as_str().map(str::is_empty),
        Some(false)
    );
}
with_registry!(wrong_method_json, wrong_method_has_a_json_error_body);

// ---------------------------------------------------------------------------------------------
// Status changes
// ---------------------------------------------------------------------------------------------

async fn status(r: &TestRegistry, id: &str, action: &str, body: Option<&Value>) -> Reply {
    call(
        r,
        Method::POST,
        &format!("/v1/agents/{id}/{action}"),
        Some(&r.admin),
        body,
    )
    .await
}

async fn invalid_status_changes(r: TestRegistry) {
    let k = key();
    let id = register(&r, &k, "lifecycle").await;
    let other = register(&r, &key(), "deleted").await;

    // Reactivating an active agent.
    let before = snapshot(&r).await;
    let reply = status(&r, &id, "reactivate", None).await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");
    assert_eq!(snapshot(&r).await, before);

    // Bodies: CRL reasons outside revocation, unknown reasons, long or odd reasons.
    for (action, body) in [
        ("suspend", json!({"crl_reason": "key_compromise"})),
        ("suspend", json!({"crl_reason": "certificate_hold"})),
        ("reactivate", json!({"crl_reason": "unspecified"})),
        ("revoke", json!({"crl_reason": "stolen"})),
        ("revoke", json!({"crl_reason": "certificate_hold"})),
        ("revoke", json!({"crl_reason": "KEY_COMPROMISE"})),
        ("revoke", json!({"crl_reason": 1})),
        ("suspend", json!({"reason": "x".repeat(257)})),
        ("revoke", json!({"reason": "x".repeat(257)})),
        ("suspend", json!({"reason": ""})),
        ("suspend", json!({"reason": "two\nlines"})),
        ("suspend", json!({"reason": 5})),
        ("suspend", json!({"why": "unknown member"})),
        ("suspend", json!([])),
    ] {
        let reply = status(&r, &id, action, Some(&body)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let reply = raw(
        &r,
        Method::POST,
        &format!("/v1/agents/{id}/suspend"),
        Some(&r.admin),
        Some("text/plain"),
        "{}",
    )
    .await;
    assert_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request");
    let reply = raw(
        &r,
        Method::POST,
        &format!("/v1/agents/{id}/suspend"),
        Some(&r.admin),
        Some("application/json"),
        "{\"reason\": \"a\", \"reason\": \"b\"}",
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(snapshot(&r).await, before);

    // Suspend (with a reason at the length limit), then again.
    let reply = status(&r, &id, "suspend", Some(&json!({"reason": "x".repeat(256)}))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["status"], "suspended");
    assert_eq!(reply.json()["previous_status"], "active");
    let before = snapshot(&r).await;
    let reply = status(&r, &id, "suspend", None).await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");
    // A suspended agent can neither rotate its key nor renew its certificate.
    let reply = call(
        &r,
        Method::POST,
        &format!("/v1/agents/{id}/certificate"),
        None,
        Some(&signed(
            &k,
            &json!({}),
            &format!("/v1/agents/{id}/certificate"),
            r.clock.now(),
        )),
    )
    .await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");
    assert_eq!(snapshot(&r).await, before);

    // Reactivate, then again.
    let reply = status(&r, &id, "reactivate", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["status"], "active");
    let before = snapshot(&r).await;
    let reply = status(&r, &id, "reactivate", None).await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");
    assert_eq!(snapshot(&r).await, before);

    // Revoke; then nothing else is possible.
    let reply = status(
        &r,
        &id,
        "revoke",
        Some(&json!({"reason": "retired", "crl_reason": "key_compromise"})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["status"], "revoked");
    let before = snapshot(&r).await;
    for action in ["suspend", "reactivate", "revoke"] {
        let reply = status(&r, &id, action, None).await;
        assert_error(&reply, StatusCode::CONFLICT, "conflict");
    }
    let reply = call(&r, Method::DELETE, &format!("/v1/agents/{id}"), Some(&r.admin), None).await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");
    let path = format!("/v1/agents/{id}/certificate");
    let reply = call(
        &r,
        Method::POST,
        &path,
        None,
        Some(&signed(&k, &json!({}), &path, r.clock.now())),
    )
    .await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");
    let path = format!("/v1/agents/{id}/rotate-key");
    let reply = call(
        &r,
        Method::POST,
        &path,
        None,
        Some(&{
            let new = key();
            rotation(&k, &new, &new, &path, r.clock.now())
        }),
    )
    .await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");
    assert_eq!(snapshot(&r).await, before);

    // DELETE is revoke.
    let reply = call(&r, Method::DELETE, &format!("/v1/agents/{other}"), Some(&r.admin), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["status"], "revoked");
    assert_eq!(reply.json()["previous_status"], "active");
    let shown = call(&r, Method::GET, &format!("/v1/agents/{other}"), Some(&r.admin), None).await;
    assert_eq!(shown.json()["status"], "revoked");
    let list = call(&r, Method::GET, "/v1/revocations", Some(&r.admin), None)
        .await
        .json();
    let revoked: Vec<&str> = list["revoked_agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert!(
        revoked.contains(&other.as_str()) && revoked.contains(&id.as_str()),
        "{list}"
    );
}
with_registry!(status_changes, invalid_status_changes);

/// `body` with a `proof` by `key` for `path`.
fn signed(key: &KeyPair, body: &Value, path: &str, now: i64) -> Value {
    let mut body = body.clone();
    sign_body(key, &mut body, path, now);
    body
}

// ---------------------------------------------------------------------------------------------
// Rotation and renewal input
// ---------------------------------------------------------------------------------------------

async fn bad_rotation_and_renewal_input(r: TestRegistry) {
    let k = key();
    let id = register(&r, &k, "rotating").await;
    let before = snapshot(&r).await;
    let rotate = format!("/v1/agents/{id}/rotate-key");
    let renew = format!("/v1/agents/{id}/certificate");
    let now = r.clock.now();

    // Malformed bodies: 400.
    let new = key();
    let mut unknown = rotation(&k, &new, &new, &rotate, now);
    unknown["extra"] = true.into();
    let mut rsa = json!({"new_public_key": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}});
    let request = SignedRequest {
        method: "POST",
        path: &rotate,
        body: &rsa,
        exclude: &["proof", "new_key_proof"],
    };
    rsa["new_key_proof"] = create_request_proof(&key(), &request, now).unwrap().into();
    sign_body(&k, &mut rsa, &rotate, now);
    let mut same = json!({"new_public_key": k.public_key().to_jwk()});
    let request = SignedRequest {
        method: "POST",
        path: &rotate,
        body: &same,
        exclude: &["proof", "new_key_proof"],
    };
    same["new_key_proof"] = create_request_proof(&k, &request, now).unwrap().into();
    sign_body(&k, &mut same, &rotate, now);
    for body in [json!({}), json!([]), unknown, rsa, same] {
        let reply = call(&r, Method::POST, &rotate, None, Some(&body)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    }
    for body in [json!({}), json!({"proof": 1}), json!({"proof": "x", "extra": 1})] {
        let reply = call(&r, Method::POST, &renew, None, Some(&body)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let reply = raw(&r, Method::POST, &renew, None, Some("application/json"), "").await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");

    // Bad proofs: 401.
    let stranger = key();
    let mut tampered = signed(&k, &json!({}), &renew, now);
    tampered["proof"] = format!("{}x", tampered["proof"].as_str().unwrap()).into();
    for body in [
        signed(&stranger, &json!({}), &renew, now),
        signed(&k, &json!({}), &rotate, now),
        signed(&k, &json!({}), &renew, now - 301),
        tampered,
    ] {
        let reply = call(&r, Method::POST, &renew, None, Some(&body)).await;
        assert_invalid_proof(&reply);
    }
    let new = key();
    // new_key_proof by the current key instead of the new one.
    let mut wrong_new_proof = json!({"new_public_key": new.public_key().to_jwk()});
    let request = SignedRequest {
        method: "POST",
        path: &rotate,
        body: &wrong_new_proof,
        exclude: &["proof", "new_key_proof"],
    };
    wrong_new_proof["new_key_proof"] = create_request_proof(&k, &request, now).unwrap().into();
    sign_body(&k, &mut wrong_new_proof, &rotate, now);
    for body in [
        // Both proofs by the new key.
        rotation(&new, &new, &new, &rotate, now),
        wrong_new_proof,
        // Proofs for another path, or stale.
        rotation(&k, &new, &new, &renew, now),
        rotation(&k, &new, &new, &rotate, now - 301),
    ] {
        let reply = call(&r, Method::POST, &rotate, None, Some(&body)).await;
        assert_invalid_proof(&reply);
    }
    assert_eq!(snapshot(&r).await, before);
}
with_registry!(rotation_and_renewal_input, bad_rotation_and_renewal_input);
