//! Proof of possession for requests an agent makes to the registry (registration, key
//! rotation, certificate renewal), in the manner of DPoP (RFC 9449).
//!
//! The request body carries `"proof"`: a compact JWS with header
//! `{"alg", "typ": "aip-req+jwt"}` signed by the agent key, whose claims are
//! `{htm, htu, iat, jti, body_hash}`: the HTTP method, the request path (without scheme or
//! host, which proxies rewrite), the time, a unique id, and the hex SHA-256 of the RFC 8785
//! form of the JSON body with the proof members removed. The server verifies it with the key
//! the request is about and records `jti` (within `iat`'s window) against reuse.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ids::Jti;
use crate::jcs;
use crate::jws::{self, Compact, Header};
use crate::keys::{Algorithm, PublicKey, SignError, Signer};

/// The JWS `typ` of a request proof.
pub const REQUEST_PROOF_TYP: &str = "aip-req+jwt";
/// Longest request proof accepted.
pub const MAX_REQUEST_PROOF_LEN: usize = 4096;
/// How far in the future a proof's `iat` may be.
pub const MAX_FUTURE_SECS: i64 = 30;

/// The claims of a request proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestProofClaims {
    /// HTTP method, upper case.
    pub htm: String,
    /// Request path, e.g. `/v1/agents`.
    pub htu: String,
    /// When the proof was made.
    pub iat: i64,
    /// Unique per proof.
    pub jti: Jti,
    /// Hex SHA-256 of the canonical body without its proof members.
    pub body_hash: String,
}

/// Why a request proof was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestProofError {
    /// Not a compact JWS with the right `typ`, an allowed algorithm and well-formed claims.
    #[error("malformed request proof: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with the key.
    #[error("request proof signature does not verify with the agent key")]
    BadSignature,
    /// The proof is for another method, path or body.
    #[error("request proof does not match this request ({0})")]
    Mismatch(&'static str),
    /// `iat` is outside the accepted window.
    #[error("request proof is expired or from the future")]
    Stale,
}

/// Hex SHA-256 of the canonical form of `body` without the members named in `exclude`.
pub fn body_hash(body: &Value, exclude: &[&str]) -> Result<String, jcs::CanonicalError> {
    let canonical = match body {
        Value::Object(map) if exclude.iter().any(|k| map.contains_key(*k)) => {
            let mut map = map.clone();
            for k in exclude {
                map.remove(*k);
            }
            jcs::to_vec(&Value::Object(map))?
        }
        other => jcs::to_vec(other)?,
    };
    Ok(hex::encode(Sha256::digest(canonical)))
}

/// The request a proof is for.
#[derive(Clone, Copy, Debug)]
pub struct SignedRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
    /// The JSON body.
    pub body: &'a Value,
    /// Members of `body` the proof does not cover (the proofs themselves).
    pub exclude: &'a [&'a str],
}

/// Signs a proof for `request` at time `now`.
pub fn create_request_proof(signer: &dyn Signer, request: &SignedRequest<'_>, now: i64) -> Result<String, SignError> {
    let claims = RequestProofClaims {
        htm: request.method.to_ascii_uppercase(),
        htu: request.path.to_owned(),
        iat: now,
        jti: Jti::random().map_err(SignError::backend)?,
        body_hash: body_hash(request.body, request.exclude).map_err(SignError::backend)?,
    };
    jws::sign(
        REQUEST_PROOF_TYP,
        &serde_json::to_vec(&claims).map_err(SignError::backend)?,
        signer,
        true,
    )
}

/// Signs a proof for `method path` over `body` without the `exclude`d members, and stores it in
/// `body` under `field`.
pub fn add_request_proof(
    signer: &dyn Signer,
    method: &str,
    path: &str,
    body: &mut Value,
    field: &str,
    exclude: &[&str],
    now: i64,
) -> Result<(), SignError> {
    let proof = create_request_proof(
        signer,
        &SignedRequest {
            method,
            path,
            body,
            exclude,
        },
        now,
    )?;
    body[field] = proof.into();
    Ok(())
}

/// Verifies `proof` for `request` against `key`, accepting an `iat` up to `max_age_secs`
/// old. Recording `jti` against reuse is the caller's job.
pub fn verify_request_proof(
    proof: &str,
    key: &PublicKey,
    request: &SignedRequest<'_>,
    now: i64,
    max_age_secs: i64,
) -> Result<RequestProofClaims, RequestProofError> {
    let SignedRequest {
        method,
        path,
        body,
        exclude,
    } = *request;
    let malformed = |e: jws::ShapeError| RequestProofError::Malformed(e.describe());
    let compact = Compact::split(proof, MAX_REQUEST_PROOF_LEN).map_err(malformed)?;
    let header = Header::parse(&compact).map_err(malformed)?;
    if !header.typ_is(REQUEST_PROOF_TYP) {
        return Err(RequestProofError::Malformed("`typ` is not aip-req+jwt"));
    }
    let alg = Algorithm::from_name(&header.alg).ok_or(RequestProofError::Malformed("algorithm is not allowed"))?;
    let signature = compact.signature_bytes().map_err(malformed)?;
    key.verify(alg, compact.signing_input.as_bytes(), &signature)
        .map_err(|_| RequestProofError::BadSignature)?;
    let payload = compact.payload_bytes().map_err(malformed)?;
    let claims: RequestProofClaims =
        crate::json::from_slice(&payload).map_err(|_| RequestProofError::Malformed("claims are missing or invalid"))?;
    if claims.iat > now.saturating_add(MAX_FUTURE_SECS) || claims.iat < now.saturating_sub(max_age_secs) {
        return Err(RequestProofError::Stale);
    }
    if !claims.htm.eq_ignore_ascii_case(method) {
        return Err(RequestProofError::Mismatch("method"));
    }
    if claims.htu != path {
        return Err(RequestProofError::Mismatch("path"));
    }
    let expected = body_hash(body, exclude).map_err(|_| RequestProofError::Malformed("body has no canonical form"))?;
    if claims.body_hash != expected {
        return Err(RequestProofError::Mismatch("body"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;
    use serde_json::json;

    #[test]
    fn binds_method_path_body_and_key() {
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let mut body = json!({"name": "agent", "public_key": key.public_key().to_jwk()});
        let request = SignedRequest {
            method: "post",
            path: "/v1/agents",
            body: &body,
            exclude: &["proof"],
        };
        let proof = create_request_proof(&key, &request, 1_000).unwrap();
        body["proof"] = proof.clone().into();

        let check = |b: &Value, m: &str, p: &str, k: &PublicKey, now: i64| {
            let request = SignedRequest {
                method: m,
                path: p,
                body: b,
                exclude: &["proof"],
            };
            verify_request_proof(&proof, k, &request, now, 300)
        };
        assert_eq!(
            check(&body, "POST", "/v1/agents", key.public_key(), 1_010).unwrap().htm,
            "POST"
        );
        let mut changed = body.clone();
        changed["name"] = "other".into();
        assert_eq!(
            check(&changed, "POST", "/v1/agents", key.public_key(), 1_010),
            Err(RequestProofError::Mismatch("body"))
        );
        assert_eq!(
            check(&body, "PUT", "/v1/agents", key.public_key(), 1_010),
            Err(RequestProofError::Mismatch("method"))
        );
        assert_eq!(
            check(&body, "POST", "/v1/other", key.public_key(), 1_010),
            Err(RequestProofError::Mismatch("path"))
        );
        assert_eq!(
            check(&body, "POST", "/v1/agents", key.public_key(), 1_301),
            Err(RequestProofError::Stale)
        );
        assert_eq!(
            check(&body, "POST", "/v1/agents", key.public_key(), 900),
            Err(RequestProofError::Stale)
        );
        let stranger = KeyPair::generate(Algorithm::ES256).unwrap();
        assert_eq!(
            check(&body, "POST", "/v1/agents", stranger.public_key(), 1_010),
            Err(RequestProofError::BadSignature)
        );
    }

    #[test]
    fn body_hash_ignores_member_order_and_excluded_members() {
        let a = json!({"b": 1, "a": 2, "proof": "x"});
        let b = json!({"a": 2, "b": 1});
        assert_eq!(body_hash(&a, &["proof"]).unwrap(), body_hash(&b, &[]).unwrap());
    }
}
