#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

// An agent's life over HTTP, on SQLite and PostgreSQL: key rotation, certificate renewal,
// what the certificates contain, suspension and revocation in the CRL, supersession after
// a rotation's grace period, and `openssl verify -crl_check` against what the registry serves.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use aip_aat::clock::Clock as _;
use aip_aat::keys::{Algorithm, KeyPair, PublicKey};
use axum::http::{Method, StatusCode};
use common::{NOW, Reply, TestRegistry, key, rfc3339, rotation, sign_body};
use serde_json::{Value, json};
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::der::asn1::BitString;
use x509_cert::der::oid::AssociatedOid as _;
use x509_cert::der::{Decode, DecodePem, Encode};
use x509_cert::ext::pkix::name::{DirectoryString, DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    BasicConstraints, CrlDistributionPoints, CrlNumber, CrlReason, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName,
};
use x509_cert::name::Name;
use x509_cert::spki::ObjectIdentifier;
use x509_cert::time::Time;

/// id-kp-clientAuth.
const CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
/// Agent certificates are backdated by a minute.
const BACKDATE: i64 = 60;
/// Default agent certificate validity.
const CERT_VALIDITY: i64 = 86_400;
/// Default key grace period and CRL validity.
const HOUR: i64 = 3600;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.error(), code, "{}", reply.text());
}

#[track_caller]
fn assert_invalid_proof(reply: &Reply) {
    assert_error(reply, StatusCode::UNAUTHORIZED, "invalid_proof");
    assert!(reply.headers.contains_key("www-authenticate"));
}

/// Registers `key` as `name`; returns the response.
async fn register(r: &TestRegistry, key: &KeyPair, name: &str) -> Value {
    r.register(key, name).await
}

async fn show(r: &TestRegistry, id: &str) -> Value {
    let reply = r
        .call(Method::GET, &format!("/v1/agents/{id}"), Some(&r.admin), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

async fn status(r: &TestRegistry, id: &str, action: &str, body: Option<&Value>) -> Value {
    let reply = r
        .call(Method::POST, &format!("/v1/agents/{id}/{action}"), Some(&r.admin), body)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{action}: {}", reply.text());
    reply.json()
}

/// The agent's stored state, the audit head and the revocation version: what a refused
/// request must leave as it was.
async fn state(r: &TestRegistry, id: &str) -> (Value, (i64, String), u64) {
    let mut agent = show(r, id).await;
    agent.as_object_mut().unwrap().remove("aid");
    (
        agent,
        r.store.database().audit_head().await.unwrap(),
        r.registry.revocation_version().await.unwrap(),
    )
}

async fn rotate(r: &TestRegistry, id: &str, body: &Value) -> Reply {
    r.call(Method::POST, &format!("/v1/agents/{id}/rotate-key"), None, Some(body))
        .await
}

/// A renewal body signed by `key`.
fn renewal(key: &KeyPair, id: &str, now: i64) -> Value {
    let mut body = json!({});
    sign_body(key, &mut body, &format!("/v1/agents/{id}/certificate"), now);
    body
}

async fn renew(r: &TestRegistry, id: &str, body: &Value) -> Reply {
    r.call(Method::POST, &format!("/v1/agents/{id}/certificate"), None, Some(body))
        .await
}

fn unix(t: &Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap()
}

fn cert(pem: &str) -> Certificate {
    Certificate::from_pem(pem.as_bytes()).unwrap()
}

fn common_name(name: &Name) -> String {
    match name.common_name().unwrap().unwrap() {
        DirectoryString::Utf8String(s) => s,
        DirectoryString::PrintableString(s) => s.to_string(),
        other => panic!("unexpected CN encoding {other:?}"),
    }
}

/// A serial number as the registry writes it: 16 bytes of lowercase hex. DER drops leading
/// zero bytes and adds one when the top bit is set, so the encoding is 15–17 bytes long.
fn serial_hex(bytes: &[u8]) -> String {
    assert!(
        !bytes.is_empty() && bytes.len() <= 17,
        "serial of {} bytes",
        bytes.len()
    );
    if bytes.len() == 17 {
        assert_eq!(bytes[0], 0, "17-byte serial without a sign byte");
        assert!(bytes[1] >= 0x80, "needless leading zero in the serial");
    } else {
        assert!(bytes[0] < 0x80, "negative serial");
    }
    let digits: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    assert!(digits.len() <= 16, "serial above 128 bits");
    let mut out = [0u8; 16];
    out[16 - digits.len()..].copy_from_slice(&digits);
    hex::encode(out)
}

/// `tbs` carries a valid signature by `issuer`'s key.
#[track_caller]
fn assert_signed_by(tbs: &[u8], signature: &BitString, issuer: &Certificate) {
    let spki = issuer.tbs_certificate().subject_public_key_info().to_der().unwrap();
    let key = PublicKey::from_public_key_der(&spki).unwrap();
    assert_eq!(key.algorithm(), Algorithm::EdDSA);
    key.verify(key.algorithm(), tbs, signature.raw_bytes())
        .expect("signature does not verify");
}

#[track_caller]
fn assert_cert_signed_by(cert: &Certificate, issuer: &Certificate) {
    assert_eq!(cert.tbs_certificate().issuer(), issuer.tbs_certificate().subject());
    assert_signed_by(&cert.tbs_certificate().to_der().unwrap(), cert.signature(), issuer);
}

fn root(r: &TestRegistry) -> Certificate {
    cert(r.registry.ca().root_pem())
}

fn issuing(r: &TestRegistry) -> Certificate {
    cert(r.registry.ca().issuing_pem())
}

/// Checks everything an agent certificate must hold; returns its serial (hex).
#[track_caller]
fn check_agent_certificate(
    r: &TestRegistry,
    pem: &str,
    agent_id: &str,
    name: &str,
    key: &KeyPair,
    issued_at: i64,
) -> String {
    let c = cert(pem);
    let tbs = c.tbs_certificate();
    assert_eq!(tbs.version(), x509_cert::Version::V3);
    assert_cert_signed_by(&c, &issuing(r));
    assert_eq!(common_name(tbs.subject()), name);
    // SAN: exactly the SPIFFE ID.
    let (_, san) = tbs.get_extension::<SubjectAltName>().unwrap().expect("no SAN");
    let uris: Vec<String> = san
        .0
        .iter()
        .map(|n| match n {
            GeneralName::UniformResourceIdentifier(uri) => uri.to_string(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect();
    assert_eq!(uris, [format!("spiffe://aip.test/agent/{agent_id}")]);
    // digitalSignature only.
    let (critical, usage) = tbs.get_extension::<KeyUsage>().unwrap().expect("no key usage");
    assert!(critical, "key usage should be critical");
    assert_eq!(
        usage.0,
        x509_cert::der::flagset::FlagSet::from(KeyUsages::DigitalSignature)
    );
    // clientAuth only.
    let (_, eku) = tbs.get_extension::<ExtendedKeyUsage>().unwrap().expect("no EKU");
    assert_eq!(eku.0, [CLIENT_AUTH]);
    // Not a CA.
    if let Some((_, bc)) = tbs.get_extension::<BasicConstraints>().unwrap() {
        assert!(!bc.ca);
        assert_eq!(bc.path_len_constraint, None);
    }
    // The CRL distribution point.
    let (_, dps) = tbs
        .get_extension::<CrlDistributionPoints>()
        .unwrap()
        .expect("no CRL distribution point");
    assert_eq!(dps.0.len(), 1);
    match &dps.0[0].distribution_point {
        Some(DistributionPointName::FullName(names)) => {
            assert_eq!(names.len(), 1);
            match &names[0] {
                GeneralName::UniformResourceIdentifier(uri) => {
                    assert_eq!(uri.to_string(), "http://registry.test/v1/crl");
                }
                other => panic!("unexpected distribution point {other:?}"),
            }
        }
        other => panic!("unexpected distribution point {other:?}"),
    }
    // Validity: 24 h from issuance, backdated by a minute.
    assert_eq!(unix(&tbs.validity().not_before), issued_at - BACKDATE);
    assert_eq!(unix(&tbs.validity().not_after), issued_at + CERT_VALIDITY);
    // The agent's key.
    let spki = tbs.subject_public_key_info();
    assert_eq!(spki.subject_public_key.raw_bytes(), key.public_key().to_raw_bytes());
    serial_hex(tbs.serial_number().as_bytes())
}

/// A parsed CRL.
struct Crl {
    number: u64,
    this_update: i64,
    next_update: i64,
    /// Serial (hex) → (revocation time, reason).
    entries: BTreeMap<String, (i64, CrlReason)>,
}

fn parse_crl(r: &TestRegistry, der: &[u8]) -> Crl {
    let crl: CertificateList = CertificateList::from_der(der).unwrap();
    let tbs = &crl.tbs_cert_list;
    assert_eq!(tbs.version, x509_cert::Version::V2);
    let issuing = issuing(r);
    assert_eq!(&tbs.issuer, issuing.tbs_certificate().subject());
    assert_signed_by(&tbs.to_der().unwrap(), &crl.signature, &issuing);
    let extensions = tbs.crl_extensions.as_ref().expect("no CRL extensions");
    let number = extensions
        .iter()
        .find(|e| e.extn_id == CrlNumber::OID)
        .expect("no CRL number");
    let number = CrlNumber::from_der(number.extn_value.as_bytes()).unwrap();
    let number = number
        .0
        .as_bytes()
        .iter()
        .fold(0u64, |n, b| n.checked_mul(256).unwrap() + u64::from(*b));
    let mut entries = BTreeMap::new();
    for entry in tbs.revoked_certificates.iter().flatten() {
        let reason = entry
            .crl_entry_extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == CrlReason::OID)
            .map(|e| CrlReason::from_der(e.extn_value.as_bytes()).unwrap())
            // RFC 5280 §5.3.1: an absent reason code means unspecified.
            .unwrap_or(CrlReason::Unspecified);
        let serial = serial_hex(entry.serial_number.as_bytes());
        assert!(
            entries
                .insert(serial.clone(), (unix(&entry.revocation_date), reason))
                .is_none(),
            "{serial} listed twice"
        );
    }
    Crl {
        number,
        this_update: unix(&tbs.this_update),
        next_update: unix(tbs.next_update.as_ref().expect("no nextUpdate")),
        entries,
    }
}

/// `GET /v1/crl`, parsed and checked; also checks `/v1/crl.pem` is the same CRL.
async fn fetch_crl(r: &TestRegistry) -> Crl {
    let reply = r.call(Method::GET, "/v1/crl", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/pkix-crl");
    let pem = r.call(Method::GET, "/v1/crl.pem", None, None).await;
    assert_eq!(pem.status, StatusCode::OK);
    let from_pem: CertificateList = CertificateList::from_pem(&pem.body).unwrap();
    assert_eq!(from_pem.to_der().unwrap(), reply.body);
    let crl = parse_crl(r, &reply.body);
    assert_eq!(crl.this_update, r.clock.now());
    assert_eq!(crl.next_update - crl.this_update, HOUR);
    crl
}

// ---------------------------------------------------------------------------------------------
// Key rotation
// ---------------------------------------------------------------------------------------------

async fn key_rotation(r: TestRegistry) {
    let old = key();
    let registered = register(&r, &old, "rotator").await;
    let id = registered["agent_id"].as_str().unwrap().to_owned();
    let first_serial = show(&r, &id).await["certificates"][0]["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = key();
    let other_id = register(&r, &other, "bystander").await["agent_id"]
        .as_str()
        .unwrap()
        .to_owned();
    r.clock.advance(10);
    let now = r.clock.now();
    let path = format!("/v1/agents/{id}/rotate-key");
    let new = key();
    let before = state(&r, &id).await;

    // Proofs by the new key only.
    let reply = rotate(&r, &id, &rotation(&new, &new, &new, &path, now)).await;
    assert_invalid_proof(&reply);
    // new_key_proof by the old key.
    let reply = rotate(&r, &id, &rotation(&old, &old, &new, &path, now)).await;
    assert_invalid_proof(&reply);
    assert!(
        reply.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("new_key_proof")
    );
    // new_key_proof missing. The brief expected 401, but a body without a required member is
    // malformed and strict parsing refuses it first, as for a registration without `proof`:
    // 400 invalid_request, and nothing changes either way.
    let mut missing = json!({"new_public_key": new.public_key().to_jwk()});
    sign_body(&old, &mut missing, &path, now);
    let reply = rotate(&r, &id, &missing).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    // `proof` missing.
    let mut missing = rotation(&old, &new, &new, &path, now);
    missing.as_object_mut().unwrap().remove("proof");
    let reply = rotate(&r, &id, &missing).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    // To a key another agent holds.
    let reply = rotate(&r, &id, &rotation(&old, &other, &other, &path, now)).await;
    assert_error(&reply, StatusCode::CONFLICT, "key_already_registered");
    // To its own current key.
    let reply = rotate(&r, &id, &rotation(&old, &old, &old, &path, now)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(state(&r, &id).await, before);

    // The rotation.
    let body = rotation(&old, &new, &new, &path, now);
    let reply = rotate(&r, &id, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let rotated = reply.json();
    assert_eq!(rotated["agent_id"], id.as_str());
    assert_eq!(rotated["previous_key_valid_until"], rfc3339(now + HOUR));
    assert_eq!(rotated["aid"]["public_key"], json!(new.public_key().to_jwk()));
    let new_serial = rotated["serial"].as_str().unwrap().to_owned();
    assert_ne!(new_serial, first_serial);
    let parsed = check_agent_certificate(&r, rotated["certificate"].as_str().unwrap(), &id, "rotator", &new, now);
    assert_eq!(parsed, new_serial);
    assert_eq!(r.registry.revocation_version().await.unwrap(), before.2 + 1);

    let shown = show(&r, &id).await;
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["public_key"], json!(new.public_key().to_jwk()));
    assert_eq!(shown["public_key_thumbprint"], new.public_key().thumbprint().as_str());
    assert_eq!(
        shown["previous_keys"],
        json!([{"thumbprint": old.public_key().thumbprint().as_str(), "valid_until": rfc3339(now + HOUR)}])
    );
    let certificates = shown["certificates"].as_array().unwrap();
    assert_eq!(certificates.len(), 2, "{shown}");
    assert_eq!(certificates[0]["serial"], new_serial.as_str());
    assert_eq!(
        certificates[0]["key_thumbprint"],
        new.public_key().thumbprint().as_str()
    );
    assert_eq!(certificates[0]["state"], "valid");
    assert_eq!(certificates[1]["serial"], first_serial.as_str());
    assert_eq!(
        certificates[1]["key_thumbprint"],
        old.public_key().thumbprint().as_str()
    );
    assert_eq!(certificates[1]["state"], "valid");

    // The revocation list names the rotated-out key and the end of its grace, so that
    // verifiers without agent lookups refuse AATs bound to it afterwards.
    let list = r
        .call(Method::GET, "/v1/revocations", Some(&r.admin), None)
        .await
        .json();
    assert_eq!(
        list["superseded_keys"],
        json!([{"agent_id": id.as_str(), "key_thumbprint": old.public_key().thumbprint().as_str(), "valid_until": rfc3339(now + HOUR)}])
    );

    // The request cannot be replayed.
    let before = state(&r, &id).await;
    // (The old key that signed it is no longer current, so its proof no longer verifies.)
    assert_invalid_proof(&rotate(&r, &id, &body).await);
    // The old key no longer speaks for the agent, and may never be registered again.
    let reply = renew(&r, &id, &renewal(&old, &id, now)).await;
    assert_invalid_proof(&reply);
    let reply = rotate(&r, &id, &rotation(&old, &key(), &key(), &path, now)).await;
    assert_invalid_proof(&reply);
    let reply = rotate(&r, &id, &rotation(&new, &old, &old, &path, now)).await;
    assert_error(&reply, StatusCode::CONFLICT, "key_already_registered");
    assert_eq!(state(&r, &id).await, before);
    let reply = r
        .call(
            Method::POST,
            "/v1/agents",
            Some(&r.admin),
            Some(&r.registration(&old, "again")),
        )
        .await;
    assert_error(&reply, StatusCode::CONFLICT, "key_already_registered");
    // The new key does.
    let reply = renew(&r, &id, &renewal(&new, &id, now)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // After the grace period the old key is gone and its certificate superseded.
    r.clock.advance(HOUR + 1);
    let shown = show(&r, &id).await;
    assert_eq!(shown["previous_keys"], json!([]));
    let states: BTreeMap<String, String> = shown["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["serial"].as_str().unwrap().to_owned(),
                c["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(states[&first_serial], "superseded");
    assert_eq!(states[&new_serial], "valid");

    // A suspended agent cannot rotate; once reactivated it can.
    status(&r, &other_id, "suspend", None).await;
    let other_path = format!("/v1/agents/{other_id}/rotate-key");
    let replacement = key();
    let before = state(&r, &other_id).await;
    let body = rotation(&other, &replacement, &replacement, &other_path, r.clock.now());
    let reply = rotate(&r, &other_id, &body).await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");
    assert_eq!(state(&r, &other_id).await, before);
    status(&r, &other_id, "reactivate", None).await;
    let body = rotation(&other, &replacement, &replacement, &other_path, r.clock.now());
    let reply = rotate(&r, &other_id, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}
with_registry!(rotation, key_rotation);

// ---------------------------------------------------------------------------------------------
// Certificate renewal
// ---------------------------------------------------------------------------------------------

async fn certificate_renewal(r: TestRegistry) {
    let k = key();
    let registered = register(&r, &k, "renewer").await;
    let id = registered["agent_id"].as_str().unwrap().to_owned();
    let first = check_agent_certificate(&r, registered["certificate"].as_str().unwrap(), &id, "renewer", &k, NOW);
    r.clock.advance(100);
    let now = r.clock.now();

    let before = state(&r, &id).await;
    for body in [
        renewal(&key(), &id, now),
        {
            let mut b = json!({});
            sign_body(&k, &mut b, &format!("/v1/agents/{id}/rotate-key"), now);
            b
        },
        renewal(&k, &id, now - 301),
    ] {
        assert_invalid_proof(&renew(&r, &id, &body).await);
    }
    assert_eq!(state(&r, &id).await, before);

    let body = renewal(&k, &id, now);
    let reply = renew(&r, &id, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let renewed = reply.json();
    assert_eq!(renewed["agent_id"], id.as_str());
    assert_eq!(renewed["not_after"], rfc3339(now + CERT_VALIDITY));
    assert!(renewed.get("previous_key_valid_until").is_none(), "{renewed}");
    let serial = renewed["serial"].as_str().unwrap().to_owned();
    assert_ne!(serial, first);
    assert_eq!(
        check_agent_certificate(&r, renewed["certificate"].as_str().unwrap(), &id, "renewer", &k, now),
        serial
    );
    // Renewal is not a revocation event.
    assert_eq!(r.registry.revocation_version().await.unwrap(), before.2);

    // Replaying the renewal is refused.
    let before = state(&r, &id).await;
    assert_invalid_proof(&renew(&r, &id, &body).await);
    assert_eq!(state(&r, &id).await, before);

    let shown = show(&r, &id).await;
    let certificates = shown["certificates"].as_array().unwrap();
    assert_eq!(certificates.len(), 2, "{shown}");
    assert_eq!(certificates[0]["serial"], serial.as_str());
    assert_eq!(certificates[0]["not_after"], rfc3339(now + CERT_VALIDITY));
    assert_eq!(certificates[1]["serial"], first.as_str());
    assert_eq!(certificates[1]["not_after"], rfc3339(NOW + CERT_VALIDITY));
    for c in certificates {
        assert_eq!(c["state"], "valid");
        assert_eq!(c["key_thumbprint"], k.public_key().thumbprint().as_str());
    }

    // Revoking the agent lists both certificates.
    status(&r, &id, "revoke", None).await;
    let crl = fetch_crl(&r).await;
    assert_eq!(crl.entries.get(&first), Some(&(now, CrlReason::CessationOfOperation)));
    assert_eq!(crl.entries.get(&serial), Some(&(now, CrlReason::CessationOfOperation)));
    let shown = show(&r, &id).await;
    for c in shown["certificates"].as_array().unwrap() {
        assert_eq!(c["state"], "revoked");
    }
}
with_registry!(renewal, certificate_renewal);

// ---------------------------------------------------------------------------------------------
// Certificate contents
// ---------------------------------------------------------------------------------------------

async fn certificate_contents(r: TestRegistry) {
    // The CA certificates.
    let root = root(&r);
    let issuing = issuing(&r);
    let rt = root.tbs_certificate();
    assert_eq!(rt.issuer(), rt.subject(), "root is not self-issued");
    assert_cert_signed_by(&root, &root);
    assert_eq!(common_name(rt.subject()), "aip.test AIP Root CA");
    let (critical, bc) = rt
        .get_extension::<BasicConstraints>()
        .unwrap()
        .expect("root: no basic constraints");
    assert!(critical);
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(1));
    let (_, usage) = rt.get_extension::<KeyUsage>().unwrap().expect("root: no key usage");
    assert!(usage.key_cert_sign() && usage.crl_sign() && !usage.digital_signature());

    let it = issuing.tbs_certificate();
    assert_cert_signed_by(&issuing, &root);
    assert_ne!(it.subject(), rt.subject());
    assert_eq!(common_name(it.subject()), "aip.test AIP Issuing CA");
    let (critical, bc) = it
        .get_extension::<BasicConstraints>()
        .unwrap()
        .expect("issuing: no basic constraints");
    assert!(critical);
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let (_, usage) = it.get_extension::<KeyUsage>().unwrap().expect("issuing: no key usage");
    assert!(usage.key_cert_sign() && usage.crl_sign());
    assert!(unix(&it.validity().not_before) <= NOW && unix(&it.validity().not_after) > NOW + 365 * 86_400);

    // Every certificate the registry emits for an agent: at registration, renewal, rotation.
    let k = key();
    let registered = register(&r, &k, "code reviewer").await;
    let id = registered["agent_id"].as_str().unwrap().to_owned();
    let mut serials = vec![];
    let mut emitted = vec![(registered.clone(), k.clone_pair(), NOW)];
    r.clock.advance(30);
    let reply = renew(&r, &id, &renewal(&k, &id, r.clock.now())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    emitted.push((reply.json(), k.clone_pair(), r.clock.now()));
    r.clock.advance(30);
    let new = key();
    let path = format!("/v1/agents/{id}/rotate-key");
    let reply = rotate(&r, &id, &rotation(&k, &new, &new, &path, r.clock.now())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    emitted.push((reply.json(), new.clone_pair(), r.clock.now()));

    for (response, key, issued_at) in &emitted {
        let pem = response["certificate"].as_str().unwrap();
        let serial = check_agent_certificate(&r, pem, &id, "code reviewer", key, *issued_at);
        if let Some(reported) = response.get("serial") {
            assert_eq!(reported, serial.as_str());
        }
        // The chain: the certificate, then the issuing CA.
        let chain = Certificate::load_pem_chain(response["certificate_chain"].as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0], cert(pem));
        assert_eq!(chain[1], issuing);
        serials.push(serial);
    }
    let distinct: std::collections::BTreeSet<&String> = serials.iter().collect();
    assert_eq!(distinct.len(), serials.len(), "{serials:?}");

    // The registry's view of them matches.
    let shown = show(&r, &id).await;
    let listed: Vec<&str> = shown["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_str().unwrap())
        .collect();
    assert_eq!(listed, serials.iter().rev().map(String::as_str).collect::<Vec<_>>());
    for (c, (_, _, issued_at)) in shown["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .zip(emitted.iter().rev())
    {
        assert_eq!(c["not_before"], rfc3339(issued_at - BACKDATE));
        assert_eq!(c["not_after"], rfc3339(issued_at + CERT_VALIDITY));
    }

    // Names that need UTF-8 survive into the CN.
    let k = key();
    let registered = register(&r, &k, "Prüfer für Verträge").await;
    let id = registered["agent_id"].as_str().unwrap();
    check_agent_certificate(
        &r,
        registered["certificate"].as_str().unwrap(),
        id,
        "Prüfer für Verträge",
        &k,
        r.clock.now(),
    );

    // A P-256 agent key is certified as such.
    let p = KeyPair::generate(Algorithm::ES256).unwrap();
    let registered = register(&r, &p, "p256").await;
    let id = registered["agent_id"].as_str().unwrap();
    check_agent_certificate(
        &r,
        registered["certificate"].as_str().unwrap(),
        id,
        "p256",
        &p,
        r.clock.now(),
    );
}
with_registry!(certificates, certificate_contents);

/// `KeyPair` is not `Clone`; a copy through PKCS #8.
trait ClonePair {
    fn clone_pair(&self) -> KeyPair;
}

impl ClonePair for KeyPair {
    fn clone_pair(&self) -> KeyPair {
        KeyPair::from_pkcs8_der(&self.to_pkcs8_der().unwrap()).unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// Suspension, revocation and the CRL
// ---------------------------------------------------------------------------------------------

/// `crl` has a larger number than the last one and lists exactly `expected`.
#[track_caller]
fn step(last: &mut u64, expected: &BTreeMap<String, (i64, CrlReason)>, crl: Crl) {
    assert!(crl.number > *last, "CRL number went from {last} to {}", crl.number);
    *last = crl.number;
    assert_eq!(&crl.entries, expected);
}

async fn suspension_and_revocation_in_the_crl(r: TestRegistry) {
    let a = register(&r, &key(), "suspended").await;
    let a_id = a["agent_id"].as_str().unwrap().to_owned();
    let a_serial = show(&r, &a_id).await["certificates"][0]["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = register(&r, &key(), "live").await;
    let b_id = b["agent_id"].as_str().unwrap().to_owned();
    let c = register(&r, &key(), "deleted").await;
    let c_id = c["agent_id"].as_str().unwrap().to_owned();
    let c_serial = show(&r, &c_id).await["certificates"][0]["serial"]
        .as_str()
        .unwrap()
        .to_owned();

    let crl = fetch_crl(&r).await;
    assert!(crl.entries.is_empty());
    let mut last = crl.number;
    // Unchanged state: the same CRL.
    assert_eq!(fetch_crl(&r).await.number, last);

    r.clock.advance(10);
    let suspended_at = r.clock.now();
    status(&r, &a_id, "suspend", Some(&json!({"reason": "investigating"}))).await;
    step(
        &mut last,
        &BTreeMap::from([(a_serial.clone(), (suspended_at, CrlReason::CertificateHold))]),
        fetch_crl(&r).await,
    );
    assert_eq!(show(&r, &a_id).await["certificates"][0]["state"], "on_hold");

    r.clock.advance(10);
    status(&r, &a_id, "reactivate", None).await;
    step(&mut last, &BTreeMap::new(), fetch_crl(&r).await);
    assert_eq!(show(&r, &a_id).await["certificates"][0]["state"], "valid");

    r.clock.advance(10);
    let suspended_again = r.clock.now();
    status(&r, &a_id, "suspend", None).await;
    step(
        &mut last,
        &BTreeMap::from([(a_serial.clone(), (suspended_again, CrlReason::CertificateHold))]),
        fetch_crl(&r).await,
    );

    // Revoking a suspended agent replaces the hold with the revocation reason.
    r.clock.advance(10);
    let revoked_at = r.clock.now();
    status(
        &r,
        &a_id,
        "revoke",
        Some(&json!({"reason": "key leaked", "crl_reason": "key_compromise"})),
    )
    .await;
    step(
        &mut last,
        &BTreeMap::from([(a_serial.clone(), (revoked_at, CrlReason::KeyCompromise))]),
        fetch_crl(&r).await,
    );
    assert_eq!(show(&r, &a_id).await["certificates"][0]["state"], "revoked");

    // DELETE: cessationOfOperation by default.
    r.clock.advance(10);
    let deleted_at = r.clock.now();
    let reply = r
        .call(Method::DELETE, &format!("/v1/agents/{c_id}"), Some(&r.admin), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut expected = BTreeMap::from([
        (a_serial.clone(), (revoked_at, CrlReason::KeyCompromise)),
        (c_serial.clone(), (deleted_at, CrlReason::CessationOfOperation)),
    ]);
    step(&mut last, &expected, fetch_crl(&r).await);

    // Other revocation reasons map to their CRL codes.
    for (name, reason) in [
        ("unspecified", CrlReason::Unspecified),
        ("affiliation_changed", CrlReason::AffiliationChanged),
        ("superseded", CrlReason::Superseded),
        ("cessation_of_operation", CrlReason::CessationOfOperation),
        ("privilege_withdrawn", CrlReason::PrivilegeWithdrawn),
    ] {
        let registered = register(&r, &key(), name).await;
        let id = registered["agent_id"].as_str().unwrap();
        let serial = show(&r, id).await["certificates"][0]["serial"]
            .as_str()
            .unwrap()
            .to_owned();
        r.clock.advance(1);
        status(&r, id, "revoke", Some(&json!({"crl_reason": name}))).await;
        expected.insert(serial, (r.clock.now(), reason));
        step(&mut last, &expected, fetch_crl(&r).await);
    }

    // The live agent was never listed; a CRL is remade half-way to nextUpdate, with a higher
    // number, even without changes.
    let b_serial = show(&r, &b_id).await["certificates"][0]["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!fetch_crl(&r).await.entries.contains_key(&b_serial));
    let unchanged = fetch_crl(&r).await;
    assert_eq!(unchanged.number, last);
    r.clock.advance(HOUR / 2);
    step(&mut last, &expected, fetch_crl(&r).await);
}
with_registry!(crl_status, suspension_and_revocation_in_the_crl);

async fn rotation_supersedes_after_the_grace_period(r: TestRegistry) {
    let old = key();
    let registered = register(&r, &old, "rotating").await;
    let id = registered["agent_id"].as_str().unwrap().to_owned();
    let old_serial = show(&r, &id).await["certificates"][0]["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    r.clock.advance(10);
    let rotated_at = r.clock.now();
    let new = key();
    let path = format!("/v1/agents/{id}/rotate-key");
    let reply = rotate(&r, &id, &rotation(&old, &new, &new, &path, rotated_at)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let new_serial = reply.json()["serial"].as_str().unwrap().to_owned();

    // Within the grace period the old certificate is still good.
    let crl = fetch_crl(&r).await;
    assert!(crl.entries.is_empty(), "{:?}", crl.entries);
    let mut last = crl.number;
    r.clock.advance(HOUR - 1);
    let crl = fetch_crl(&r).await;
    assert!(crl.entries.is_empty(), "{:?}", crl.entries);
    assert!(crl.number >= last);
    last = crl.number;

    // Once it is over, the old certificate is superseded, from the end of the grace period.
    r.clock.set(rotated_at + HOUR + 1);
    let crl = fetch_crl(&r).await;
    assert!(crl.number > last);
    assert_eq!(
        crl.entries,
        BTreeMap::from([(old_serial.clone(), (rotated_at + HOUR, CrlReason::Superseded))])
    );
    assert!(!crl.entries.contains_key(&new_serial));
    let shown = show(&r, &id).await;
    assert_eq!(shown["certificates"][1]["serial"], old_serial.as_str());
    assert_eq!(shown["certificates"][1]["state"], "superseded");
    assert_eq!(shown["certificates"][0]["state"], "valid");
}
with_registry!(supersession, rotation_supersedes_after_the_grace_period);

// ---------------------------------------------------------------------------------------------
// openssl verify -crl_check
// ---------------------------------------------------------------------------------------------

/// Runs `openssl verify -crl_check` on `agent.pem` in `dir`; returns (success, output).
fn openssl_verify(dir: &std::path::Path) -> (bool, String) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args([
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "issuing.pem",
            "-crl_check",
            "-CRLfile",
            "crl.pem",
            "agent.pem",
        ])
        .output()
        .expect("cannot run openssl (is it installed?)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

async fn write_crl(r: &TestRegistry, dir: &std::path::Path) {
    let reply = r.call(Method::GET, "/v1/crl.pem", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/x-pem-file");
    assert!(reply.body.starts_with(b"-----BEGIN X509 CRL-----\n"));
    std::fs::write(dir.join("crl.pem"), &reply.body).unwrap();
}

async fn openssl_accepts_live_and_rejects_revoked(r: TestRegistry) {
    // openssl checks validity against the real clock.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    r.clock.set(i64::try_from(now).unwrap());

    let registered = register(&r, &key(), "openssl agent").await;
    let id = registered["agent_id"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.pem"), r.registry.ca().root_pem()).unwrap();
    std::fs::write(dir.path().join("issuing.pem"), r.registry.ca().issuing_pem()).unwrap();
    std::fs::write(
        dir.path().join("agent.pem"),
        registered["certificate"].as_str().unwrap(),
    )
    .unwrap();

    write_crl(&r, dir.path()).await;
    let (ok, output) = openssl_verify(dir.path());
    assert!(ok, "{output}");
    assert!(output.contains("agent.pem: OK"), "{output}");

    // Suspended: on hold, refused; reactivated: accepted again.
    status(&r, &id, "suspend", None).await;
    write_crl(&r, dir.path()).await;
    let (ok, output) = openssl_verify(dir.path());
    assert!(!ok, "{output}");
    assert!(output.contains("certificate revoked"), "{output}");
    status(&r, &id, "reactivate", None).await;
    write_crl(&r, dir.path()).await;
    let (ok, output) = openssl_verify(dir.path());
    assert!(ok, "{output}");

    // Revoked.
    status(&r, &id, "revoke", Some(&json!({"crl_reason": "key_compromise"}))).await;
    write_crl(&r, dir.path()).await;
    let (ok, output) = openssl_verify(dir.path());
    assert!(!ok, "{output}");
    assert!(output.contains("certificate revoked"), "{output}");
}
with_registry!(openssl, openssl_accepts_live_and_rejects_revoked);
