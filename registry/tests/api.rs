//! The registry's HTTP API, in-process, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aip_aat::aid::AgentIdentityDocument;
use aip_aat::keys::{Algorithm, JwkSet, Jwks, KeyPair};
use aip_aat::revocation::{RevocationList, SignedRevocationList};
use axum::http::{Method, StatusCode};
use common::{NOW, TestRegistry};
use serde_json::{Value, json};

async fn registration_lookup_and_revocation(r: TestRegistry) {
    let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let registered = r.register(&key, "code reviewer").await;
    let id = registered["agent_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ag_"));
    assert!(
        registered["certificate"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert_eq!(
        registered["certificate_chain"]
            .as_str()
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );

    // The AID verifies against the registry's JWKS.
    let jwks: Jwks = serde_json::from_slice(&r.call(Method::GET, "/v1/jwks", None, None).await.body).unwrap();
    let keys = JwkSet::from_jwks(&jwks).unwrap();
    let aid = AgentIdentityDocument::verify_attested(&registered["aid"].to_string(), &keys, NOW).unwrap();
    assert_eq!(aid.agent_id.as_str(), id);
    assert_eq!(aid.public_key, key.public_key().to_jwk());

    let shown = r
        .call(Method::GET, &format!("/v1/agents/{id}"), Some(&r.admin), None)
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json()["status"], "active");
    assert_eq!(shown.json()["capabilities"], json!(["read_file", "list_directory"]));

    let list = r.call(Method::GET, "/v1/revocations", Some(&r.admin), None).await;
    assert_eq!(list.status, StatusCode::OK);
    let etag = list.headers["etag"].to_str().unwrap().to_owned();
    let revoked = r
        .call(
            Method::POST,
            &format!("/v1/agents/{id}/revoke"),
            Some(&r.admin),
            Some(&json!({"reason": "retired"})),
        )
        .await;
    assert_eq!(
        revoked.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&revoked.body)
    );
    assert_eq!(revoked.json()["status"], "revoked");

    let list = r.call(Method::GET, "/v1/revocations", Some(&r.admin), None).await;
    assert_ne!(list.headers["etag"].to_str().unwrap(), etag);
    let parsed: RevocationList = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(parsed.revoked_agents[0].agent_id.as_str(), id);
    assert_eq!(parsed.revoked_agents[0].reason.as_deref(), Some("retired"));

    let signed = r.call(Method::GET, "/v1/revocations.jws", Some(&r.admin), None).await;
    let verified = SignedRevocationList::verify(std::str::from_utf8(&signed.body).unwrap(), &keys).unwrap();
    assert_eq!(verified.list, parsed);

    let crl = r.call(Method::GET, "/v1/crl", None, None).await;
    assert_eq!(crl.status, StatusCode::OK);
    assert_eq!(crl.headers["content-type"], "application/pkix-crl");
    let discovery: Value = r
        .call(Method::GET, "/.well-known/aip-configuration", None, None)
        .await
        .json();
    assert_eq!(discovery["crl_uri"], "http://registry.test/v1/crl");
}
with_registry!(flow, registration_lookup_and_revocation);
