#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

// What the registry publishes, on SQLite and PostgreSQL: the revocation list (ETag,
// `If-None-Match`, monotonic versions), its signed form, the Server-Sent Events stream
// (backlog, live events, resumption), and the public documents (`/health`, `/metrics`,
// discovery, JWKS).

use std::time::Duration;

use aip_aat::clock::Clock as _;
use aip_aat::keys::{JwkSet, Jwks, KeyPair};
use aip_aat::revocation::{RevocationList, SignedRevocationList};
use axum::body::{Body, BodyDataStream};
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use common::{NOW, Reply, TestRegistry, key, rfc3339, rotation};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tower::ServiceExt as _;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn register(r: &TestRegistry, name: &str) -> (String, KeyPair) {
    let k = key();
    let id = r.register(&k, name).await["agent_id"].as_str().unwrap().to_owned();
    (id, k)
}

/// Suspends, reactivates or revokes; returns the revocation version of the change.
async fn change(r: &TestRegistry, id: &str, action: &str, body: Option<&Value>) -> u64 {
    let reply = r
        .call(Method::POST, &format!("/v1/agents/{id}/{action}"), Some(&r.admin), body)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{action}: {}", reply.text());
    reply.json()["revocation_version"].as_u64().unwrap()
}

/// `GET /v1/revocations`, optionally with `If-None-Match`.
async fn revocations(r: &TestRegistry, token: &str, if_none_match: Option<&str>) -> Reply {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri("/v1/revocations")
        .header("authorization", format!("Bearer {token}"));
    if let Some(etag) = if_none_match {
        request = request.header("if-none-match", etag);
    }
    r.send(request.body(Body::empty()).unwrap()).await
}

fn etag(reply: &Reply) -> String {
    reply.headers["etag"].to_str().unwrap().to_owned()
}

async fn jwk_set(r: &TestRegistry) -> JwkSet {
    let jwks: Jwks = serde_json::from_slice(&r.call(Method::GET, "/v1/jwks", None, None).await.body).unwrap();
    JwkSet::from_jwks(&jwks).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The revocation list
// ---------------------------------------------------------------------------------------------

async fn list_etag_and_versions(r: TestRegistry) {
    let reader = r.reader_token().await;
    let (a, _) = register(&r, "alpha").await;
    let (b, _) = register(&r, "beta").await;
    let (c, _) = register(&r, "gamma").await;

    let first = revocations(&r, &reader, None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.headers["content-type"], "application/json");
    assert_eq!(first.headers["cache-control"], "no-cache");
    let list: RevocationList = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(list.version, 0);
    assert!(list.revoked_agents.is_empty() && list.suspended_agents.is_empty());
    let mut tag = etag(&first);
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");

    // Unchanged: 304 with an empty body, for the tag itself, its weak form, or among others.
    for candidate in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"nope\", {tag}"),
        "*".to_owned(),
    ] {
        let reply = revocations(&r, &reader, Some(&candidate)).await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{candidate}");
        assert!(reply.body.is_empty());
        assert_eq!(etag(&reply), tag);
    }
    let reply = revocations(&r, &reader, Some("\"999\"")).await;
    assert_eq!(reply.status, StatusCode::OK);

    // Registering an agent is not a revocation change.
    register(&r, "delta").await;
    assert_eq!(
        revocations(&r, &reader, Some(&tag)).await.status,
        StatusCode::NOT_MODIFIED
    );

    // Five changes: each gives a new tag and a strictly larger version.
    let mut version = list.version;
    let steps: [(&str, &str, Option<Value>); 5] = [
        (&a, "suspend", Some(json!({"reason": "investigating"}))),
        (&a, "reactivate", None),
        (&b, "suspend", None),
        (&a, "revoke", Some(json!({"reason": "retired"}))),
        (&b, "revoke", Some(json!({"crl_reason": "key_compromise"}))),
    ];
    let mut times = Vec::new();
    for (id, action, body) in &steps {
        r.clock.advance(7);
        times.push(r.clock.now());
        let announced = change(&r, id, action, body.as_ref()).await;
        // The old tag no longer matches.
        let reply = revocations(&r, &reader, Some(&tag)).await;
        assert_eq!(reply.status, StatusCode::OK, "{action}");
        let new_tag = etag(&reply);
        assert_ne!(new_tag, tag);
        let list: RevocationList = serde_json::from_slice(&reply.body).unwrap();
        assert!(
            list.version > version,
            "version went from {version} to {}",
            list.version
        );
        assert_eq!(list.version, announced);
        assert_eq!(list.updated_at.unix_timestamp(), r.clock.now());
        version = list.version;
        tag = new_tag;
        // And the new tag is stable until the next change.
        assert_eq!(
            revocations(&r, &reader, Some(&tag)).await.status,
            StatusCode::NOT_MODIFIED
        );

        match (*id == a.as_str(), *action) {
            (true, "suspend") => {
                assert_eq!(list.suspended_agents.len(), 1);
                assert_eq!(list.suspended_agents[0].agent_id.as_str(), a);
                assert_eq!(list.suspended_agents[0].reason.as_deref(), Some("investigating"));
                assert_eq!(list.suspended_agents[0].suspended_at.unix_timestamp(), r.clock.now());
                assert!(list.revoked_agents.is_empty());
            }
            (true, "reactivate") => {
                assert!(list.suspended_agents.is_empty() && list.revoked_agents.is_empty());
            }
            (false, "suspend") => {
                assert_eq!(list.suspended_agents.len(), 1);
                assert_eq!(list.suspended_agents[0].agent_id.as_str(), b);
                assert_eq!(list.suspended_agents[0].reason, None);
                assert!(list.revoked_agents.is_empty());
            }
            (true, "revoke") => {
                assert_eq!(list.revoked_agents.len(), 1);
                assert_eq!(list.revoked_agents[0].agent_id.as_str(), a);
                assert_eq!(list.revoked_agents[0].reason.as_deref(), Some("retired"));
                assert_eq!(list.revoked_agents[0].revoked_at.unix_timestamp(), r.clock.now());
                assert_eq!(list.suspended_agents.len(), 1);
                assert_eq!(list.suspended_agents[0].agent_id.as_str(), b);
            }
            (false, "revoke") => {
                let mut revoked: Vec<&str> = list.revoked_agents.iter().map(|x| x.agent_id.as_str()).collect();
                revoked.sort_unstable();
                let mut expected = vec![a.as_str(), b.as_str()];
                expected.sort_unstable();
                assert_eq!(revoked, expected);
                assert!(list.suspended_agents.is_empty());
                assert!(!list.revoked_agents.iter().any(|x| x.agent_id.as_str() == c));
            }
            other => panic!("unexpected step {other:?}"),
        }
    }
    assert_eq!(version, 5);
    // Every version in between was used exactly once.
    let events = r.registry.events_after(0, 100).await.unwrap();
    assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(events.iter().map(|e| e.at).collect::<Vec<_>>(), times);

    // A key rotation is published too (it changes the version).
    let (d, dk) = register(&r, "epsilon").await;
    let path = format!("/v1/agents/{d}/rotate-key");
    let reply = r
        .call(
            Method::POST,
            &path,
            None,
            Some(&{
                let new = key();
                rotation(&dk, &new, &new, &path, r.clock.now())
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = revocations(&r, &r.admin, Some(&tag)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let list: RevocationList = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(list.version, 6);

    // Without a token: 401.
    let reply = r.call(Method::GET, "/v1/revocations", None, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "invalid_token");
}
with_registry!(revocation_list, list_etag_and_versions);

async fn signed_list_verifies(r: TestRegistry) {
    let keys = jwk_set(&r).await;
    let (a, _) = register(&r, "alpha").await;
    let (b, _) = register(&r, "beta").await;
    for (id, action) in [(&a, "suspend"), (&b, "revoke")] {
        let before = r.call(Method::GET, "/v1/revocations.jws", Some(&r.admin), None).await;
        change(&r, id, action, None).await;
        let reply = r.call(Method::GET, "/v1/revocations.jws", Some(&r.admin), None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["content-type"], "application/jose");
        assert_ne!(reply.body, before.body);
        let jws = std::str::from_utf8(&reply.body).unwrap();
        let verified = SignedRevocationList::verify(jws, &keys).unwrap();
        let json: RevocationList =
            serde_json::from_slice(&r.call(Method::GET, "/v1/revocations", Some(&r.admin), None).await.body).unwrap();
        assert_eq!(verified.list, json);

        // The header names the registry key.
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jws.split('.').next().unwrap())
            .unwrap();
        let header: Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["typ"], "aip-revocations+jwt");
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(
            header["kid"].as_str(),
            keys.iter().next().map(|k| k.thumbprint().as_str())
        );

        // Tampering with the payload breaks it.
        let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
        let mut payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&parts[1])
            .unwrap();
        let text = String::from_utf8(payload.clone()).unwrap();
        payload = text.replace(a.as_str(), &a.replace('a', "b")).into_bytes();
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload);
        assert!(SignedRevocationList::verify(&parts.join("."), &keys).is_err());
        // And another registry's keys do not verify it.
        let stranger = JwkSet::from_keys([key().public_key()]);
        assert!(SignedRevocationList::verify(jws, &stranger).is_err());
    }
    let verified = SignedRevocationList::verify(
        std::str::from_utf8(
            &r.call(Method::GET, "/v1/revocations.jws", Some(&r.admin), None)
                .await
                .body,
        )
        .unwrap(),
        &keys,
    )
    .unwrap()
    .list;
    assert_eq!(verified.version, 2);
    assert_eq!(verified.suspended_agents[0].agent_id.as_str(), a);
    assert_eq!(verified.revoked_agents[0].agent_id.as_str(), b);
    assert_eq!(verified.updated_at.unix_timestamp(), NOW);
}
with_registry!(signed_list, signed_list_verifies);

async fn signed_jws(r: &TestRegistry, keys: &JwkSet) -> SignedRevocationList {
    let reply = r.call(Method::GET, "/v1/revocations.jws", Some(&r.admin), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    SignedRevocationList::verify(std::str::from_utf8(&reply.body).unwrap(), keys).unwrap()
}

/// The signed list carries its issue time and expiry (default validity 1 h), and is signed
/// anew once half of the validity has passed: a copy fetched before the old one runs out
/// always has at least half of the validity left.
async fn signed_list_is_re_signed_before_it_expires(r: TestRegistry) {
    let keys = jwk_set(&r).await;
    let validity = 3_600;
    let first = signed_jws(&r, &keys).await;
    let (issued, expires) = (first.issued_at.unix_timestamp(), first.expires_at.unix_timestamp());
    assert_eq!(expires - issued, validity);
    assert!(issued <= NOW && expires - NOW >= validity / 2, "{issued} {expires}");
    assert!(!first.is_expired(NOW));

    // Within the same half: the same copy.
    r.clock.set(issued + validity / 2 - 1);
    assert_eq!(signed_jws(&r, &keys).await, first);

    // Half-way: a new copy, signed well before the first runs out.
    let mut previous = first;
    for _ in 0..3 {
        r.clock.set(previous.issued_at.unix_timestamp() + validity / 2);
        let now = r.clock.now();
        assert!(!previous.is_expired(now));
        let next = signed_jws(&r, &keys).await;
        assert_eq!(next.list, previous.list);
        assert_eq!(next.issued_at.unix_timestamp(), now);
        assert_eq!(next.expires_at.unix_timestamp(), now + validity);
        assert!(next.expires_at > previous.expires_at);
        previous = next;
    }

    // A change signs at once, issued at the change.
    let (a, _) = register(&r, "alpha").await;
    r.clock.advance(5);
    change(&r, &a, "suspend", None).await;
    let changed = signed_jws(&r, &keys).await;
    assert_eq!(changed.list.suspended_agents.len(), 1);
    assert_eq!(changed.issued_at.unix_timestamp(), r.clock.now());
    assert_eq!(changed.expires_at.unix_timestamp(), r.clock.now() + validity);
}
with_registry!(signed_list_expiry, signed_list_is_re_signed_before_it_expires);

// ---------------------------------------------------------------------------------------------
// The event stream
// ---------------------------------------------------------------------------------------------

/// One Server-Sent Event.
#[derive(Debug)]
struct SseEvent {
    id: String,
    event: String,
    data: Value,
}

/// An open `/v1/revocations/stream`, read incrementally.
struct Sse {
    body: BodyDataStream,
    buffer: Vec<u8>,
}

/// How long to wait for an event that must come.
const EVENT_WAIT: Duration = Duration::from_secs(5);
/// How long to wait to be confident an event does not come.
const QUIET_WAIT: Duration = Duration::from_millis(300);

impl Sse {
    async fn open(r: &TestRegistry, token: &str, last_event_id: Option<&str>) -> Self {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri("/v1/revocations/stream")
            .header("authorization", format!("Bearer {token}"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(
            EVENT_WAIT,
            r.router.clone().oneshot(request.body(Body::empty()).unwrap()),
        )
        .await
        .expect("the stream did not open")
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Self {
            body: response.into_body().into_data_stream(),
            buffer: Vec::new(),
        }
    }

    /// The next event, or `None` if none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_event(std::str::from_utf8(&block).unwrap()) {
                    return Some(event);
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("the event stream ended"),
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk.unwrap()),
            }
        }
    }

    /// The next event, which must come.
    async fn expect(&mut self) -> SseEvent {
        self.next(EVENT_WAIT).await.expect("no event within 5 s")
    }

    /// No further event comes for a while.
    async fn expect_quiet(&mut self) {
        if let Some(event) = self.next(QUIET_WAIT).await {
            panic!("unexpected event {event:?}");
        }
    }
}

/// Parses one event block; `None` for comments (keep-alives) only.
fn parse_event(block: &str) -> Option<SseEvent> {
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => event = Some(value.to_owned()),
            "data" => data.push(value.to_owned()),
            "retry" => {}
            other => panic!("unexpected SSE field {other:?} in {block:?}"),
        }
    }
    if id.is_none() && event.is_none() && data.is_empty() {
        return None;
    }
    Some(SseEvent {
        id: id.expect("event without id"),
        event: event.expect("event without a name"),
        data: serde_json::from_str(&data.join("\n")).unwrap(),
    })
}

#[track_caller]
fn assert_event(event: &SseEvent, version: u64, kind: &str, agent_id: &str) {
    assert_eq!(event.id, version.to_string(), "{event:?}");
    assert_eq!(event.event, kind, "{event:?}");
    assert_eq!(event.data["version"], version, "{event:?}");
    assert_eq!(event.data["kind"], kind, "{event:?}");
    assert_eq!(event.data["subject"], agent_id, "{event:?}");
    assert_eq!(event.data["data"]["agent_id"], agent_id, "{event:?}");
}

async fn stream_backlog_live_and_resume(r: TestRegistry) {
    // The background pump publishes committed events to open streams. It starts long before
    // the first live event below (registrations and three status changes come first), so it
    // has read the starting version by then.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let pump = tokio::spawn(r.registry.clone().run_background(async {
        let _ = stopped.await;
    }));
    let reader = r.reader_token().await;
    let (a, _) = register(&r, "alpha").await;
    let (b, _) = register(&r, "beta").await;
    let (c, ck) = register(&r, "gamma").await;

    r.clock.advance(5);
    assert_eq!(change(&r, &a, "suspend", Some(&json!({"reason": "checking"}))).await, 1);
    assert_eq!(change(&r, &a, "reactivate", None).await, 2);
    assert_eq!(change(&r, &b, "revoke", None).await, 3);

    // From the start: the backlog, in order.
    let mut stream = Sse::open(&r, &reader, Some("0")).await;
    let first = stream.expect().await;
    assert_event(&first, 1, "agent_suspended", &a);
    assert_eq!(first.data["data"]["status"], "suspended");
    assert_eq!(first.data["data"]["reason"], "checking");
    assert_eq!(first.data["at"], rfc3339(NOW + 5));
    assert_event(&stream.expect().await, 2, "agent_reactivated", &a);
    assert_event(&stream.expect().await, 3, "agent_revoked", &b);
    stream.expect_quiet().await;

    // Live, while the stream is open.
    assert_eq!(change(&r, &c, "suspend", None).await, 4);
    assert_event(&stream.expect().await, 4, "agent_suspended", &c);
    stream.expect_quiet().await;
    drop(stream);

    // Resume after event 2: 3 and 4 once each, then live events (a rotation, a revocation).
    let mut resumed = Sse::open(&r, &r.admin, Some("2")).await;
    assert_event(&resumed.expect().await, 3, "agent_revoked", &b);
    assert_event(&resumed.expect().await, 4, "agent_suspended", &c);
    resumed.expect_quiet().await;
    assert_eq!(change(&r, &c, "reactivate", None).await, 5);
    assert_event(&resumed.expect().await, 5, "agent_reactivated", &c);
    let path = format!("/v1/agents/{c}/rotate-key");
    let reply = r
        .call(
            Method::POST,
            &path,
            None,
            Some(&{
                let new = key();
                rotation(&ck, &new, &new, &path, r.clock.now())
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let rotated = resumed.expect().await;
    assert_event(&rotated, 6, "agent_key_rotated", &c);
    assert_eq!(
        rotated.data["data"]["previous_key"],
        ck.public_key().thumbprint().as_str()
    );
    resumed.expect_quiet().await;

    // Without Last-Event-ID a stream starts at the current version.
    let mut fresh = Sse::open(&r, &reader, None).await;
    fresh.expect_quiet().await;
    // Two subscribers each get the next event once.
    assert_eq!(change(&r, &c, "revoke", None).await, 7);
    assert_event(&fresh.expect().await, 7, "agent_revoked", &c);
    assert_event(&resumed.expect().await, 7, "agent_revoked", &c);
    fresh.expect_quiet().await;
    resumed.expect_quiet().await;

    // Resuming at the latest event: nothing more.
    let mut caught_up = Sse::open(&r, &reader, Some("7")).await;
    caught_up.expect_quiet().await;

    drop((fresh, resumed, caught_up));
    let _ = stop.send(());
    tokio::time::timeout(EVENT_WAIT, pump).await.unwrap().unwrap();
}
with_registry!(event_stream, stream_backlog_live_and_resume);

async fn stream_refuses_bad_requests(r: TestRegistry) {
    let reply = r.call(Method::GET, "/v1/revocations/stream", None, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "invalid_token");
    assert!(
        reply.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let reply = r
        .call(Method::GET, "/v1/revocations/stream", Some("aip_at_unknown"), None)
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "invalid_token");

    for bad in ["abc", "-1", "", "1.5", "0x10", "99999999999999999999999"] {
        let request = Request::builder()
            .method(Method::GET)
            .uri("/v1/revocations/stream")
            .header("authorization", format!("Bearer {}", r.admin))
            .header("last-event-id", bad)
            .body(Body::empty())
            .unwrap();
        let reply = r.send(request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", reply.text());
        assert_eq!(reply.error(), "invalid_request");
    }
}
with_registry!(event_stream_errors, stream_refuses_bad_requests);

// ---------------------------------------------------------------------------------------------
// Health, metrics, discovery, keys
// ---------------------------------------------------------------------------------------------

async fn health_is_ok(r: TestRegistry) {
    let reply = r.call(Method::GET, "/health", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"status": "ok"}));
}
with_registry!(health, health_is_ok);

/// The value of the `aip_http_requests_total` series with these labels, if rendered.
fn requests_total(metrics: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("aip_http_requests_total{"))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
}

async fn metrics_count_requests(r: TestRegistry) {
    // The exporter installs on first use; requests before that are not counted.
    let reply = r.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let health = ["route=\"/health\"", "status=\"200\"", "method=\"GET\""];
    let before = requests_total(&reply.text(), &health).unwrap_or(0.0);
    for _ in 0..3 {
        assert_eq!(r.call(Method::GET, "/health", None, None).await.status, StatusCode::OK);
    }
    assert_eq!(
        r.call(Method::GET, "/no/such/route", None, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        r.call(Method::GET, "/v1/agents", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );

    let reply = r.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let metrics = reply.text();
    assert!(metrics.contains("aip_http_requests_total"), "{metrics}");
    // Other tests in this binary may call /health concurrently: at least our three.
    let after = requests_total(&metrics, &health).expect("no /health series");
    assert!(after >= before + 3.0, "{before} -> {after}");
    assert!(
        requests_total(&metrics, &["status=\"404\""]).is_some(),
        "no 404 series: {metrics}"
    );
    assert!(
        requests_total(&metrics, &["route=\"/v1/agents\"", "status=\"401\""]).is_some(),
        "no 401 series for /v1/agents: {metrics}"
    );
    assert!(metrics.contains("aip_http_request_duration_seconds"), "{metrics}");
}
with_registry!(metrics, metrics_count_requests);

async fn discovery_lists_the_endpoints(r: TestRegistry) {
    let reply = r.call(Method::GET, "/.well-known/aip-configuration", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let discovery = reply.json();
    assert_eq!(discovery["trust_domain"], "aip.test");
    assert!(!discovery["registry_id"].as_str().unwrap().is_empty());
    assert_eq!(discovery["algorithms"], json!(["EdDSA", "ES256"]));
    assert!(!discovery["aid_version"].as_str().unwrap().is_empty());
    for (member, path) in [
        ("agents_endpoint", "/v1/agents"),
        ("jwks_uri", "/v1/jwks"),
        ("crl_uri", "/v1/crl"),
        ("revocations_uri", "/v1/revocations"),
        ("revocations_jws_uri", "/v1/revocations.jws"),
        ("revocations_stream_uri", "/v1/revocations/stream"),
    ] {
        assert_eq!(discovery[member], format!("http://registry.test{path}"), "{member}");
        // Each one is served here (the stream is checked in its own tests).
        if member != "revocations_stream_uri" {
            let reply = r.call(Method::GET, path, Some(&r.admin), None).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}");
        }
    }
}
with_registry!(discovery, discovery_lists_the_endpoints);

async fn jwks_is_public_with_thumbprint_kid(r: TestRegistry) {
    let reply = r.call(Method::GET, "/v1/jwks", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    let jwks = reply.json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    let jwk = &keys[0];
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["use"], "sig");
    assert!(jwk.get("d").is_none());
    let x = jwk["x"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(x)
            .unwrap()
            .len(),
        32
    );
    // RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    assert_eq!(jwk["kid"], thumbprint.as_str());

    // It is the key that attests AIDs.
    let registered = r.register(&key(), "attested").await;
    assert_eq!(registered["aid"]["registry_attestation"]["kid"], thumbprint.as_str());
}
with_registry!(jwks, jwks_is_public_with_thumbprint_kid);
