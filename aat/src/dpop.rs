//! DPoP proofs (RFC 9449): a compact JWS by which a client shows, on each HTTP request, that it
//! holds the private key a token is bound to.
//!
//! Header `{"typ": "dpop+jwt", "alg", "jwk"}` — the public key itself (never private
//! members); claims `{jti, htm, htu, iat}`, plus `ath` (base64url SHA-256 of the access token)
//! when the request carries one. The verifier checks the type, an allowed algorithm that fits
//! the key, the signature, the method, the URI (RFC 9449 §4.3: without query and fragment,
//! after syntax-based normalization of scheme, host and default port), `iat` within a window,
//! and `ath`. It returns the key's thumbprint (RFC 7638), which the caller compares with the
//! key the token is or will be bound to (`cnf.jkt`), and `jti`, whose single use is the
//! caller's job.
//!
//! A proof may also bind one MCP call, as the per-call proof does on stdio
//! (docs/architecture.md, "The AAT on the wire"): `mcp_method`, `tool` and `args_hash`, all
//! three or none ([`create_call_dpop_proof`], [`DpopClaims::binds`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::b64;
use crate::ids::KeyId;
use crate::jws::{self, Compact, Header};
use crate::keys::{Algorithm, PublicKey, SignError, Signer};
use crate::proof::{Call, ProofCreateError, ProofMismatch, jwk_describes};

/// The JWS `typ` of a DPoP proof.
pub const DPOP_TYP: &str = "dpop+jwt";
/// Longest proof accepted.
pub const MAX_DPOP_PROOF_LEN: usize = 4 * 1024;
/// How old a proof's `iat` may be, in seconds.
pub const MAX_DPOP_AGE_SECS: i64 = 300;
/// How far in the future a proof's `iat` may be, in seconds.
pub const MAX_DPOP_FUTURE_SECS: i64 = 30;
/// Longest `jti` accepted.
pub const MAX_DPOP_JTI_LEN: usize = 256;

/// The claims of a DPoP proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpopClaims {
    /// Unique per proof.
    pub jti: String,
    /// The request's HTTP method.
    pub htm: String,
    /// The request's URI, without query and fragment.
    pub htu: String,
    /// When the proof was made.
    pub iat: i64,
    /// Base64url SHA-256 of the access token the request carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ath: Option<String>,
    /// A nonce the server handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The call binding: the JSON-RPC method of the request's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_method: Option<String>,
    /// The call binding: the tool called (`""` for other methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The call binding: hex SHA-256 of the RFC 8785 form of `params.arguments` (`{}` when
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_hash: Option<String>,
}

impl DpopClaims {
    /// Whether the proof binds a call (it carries `mcp_method`).
    pub fn is_call_bound(&self) -> bool {
        self.mcp_method.is_some()
    }

    /// Checks the call binding against `call`: `Ok` for a proof that binds no call or binds
    /// this one; otherwise what differs. A binding must name all three of `mcp_method`, `tool`
    /// and `args_hash`.
    pub fn binds(&self, call: &Call<'_>) -> Result<(), ProofMismatch> {
        let (Some(method), Some(tool), Some(args_hash)) = (&self.mcp_method, &self.tool, &self.args_hash) else {
            return match (&self.mcp_method, &self.tool, &self.args_hash) {
                (None, None, None) => Ok(()),
                // A partial binding binds nothing reliably: refused rather than half-checked.
                _ => Err(ProofMismatch::Method),
            };
        };
        if *method != call.method {
            return Err(ProofMismatch::Method);
        }
        if *tool != call.tool {
            return Err(ProofMismatch::Tool);
        }
        match call.args_hash() {
            Ok(hash) if hash == *args_hash => Ok(()),
            _ => Err(ProofMismatch::Arguments),
        }
    }
}

/// A verified proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDpop {
    /// Thumbprint (RFC 7638) of the key that signed it.
    pub jkt: KeyId,
    /// That key.
    pub key: PublicKey,
    /// Its claims.
    pub claims: DpopClaims,
}

/// Why a DPoP proof was refused (RFC 9449 `invalid_dpop_proof`). The messages are safe to
/// return to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpopError {
    /// Not a compact JWS of type `dpop+jwt` with an allowed algorithm, a public `jwk` and the
    /// required claims.
    #[error("malformed DPoP proof: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with the proof's own key.
    #[error("the DPoP proof's signature does not verify with its jwk")]
    BadSignature,
    /// The proof is for another method, URI or access token.
    #[error("the DPoP proof is for another {0}")]
    Mismatch(&'static str),
    /// `iat` is outside the accepted window.
    #[error("the DPoP proof is too old or from the future")]
    Stale,
}

fn malformed(e: jws::ShapeError) -> DpopError {
    DpopError::Malformed(e.describe())
}

/// The request a proof must match.
#[derive(Clone, Copy, Debug)]
pub struct DpopRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The request's absolute URI.
    pub uri: &'a str,
    /// The access token the request carries, if any (`ath` must then match it).
    pub access_token: Option<&'a str>,
}

/// `ath` for `access_token`: base64url SHA-256.
pub fn access_token_hash(access_token: &str) -> String {
    b64::encode(Sha256::digest(access_token.as_bytes()))
}

/// Verifies `proof` for `request` at `now`.
pub fn verify_dpop_proof(proof: &str, request: &DpopRequest<'_>, now: i64) -> Result<VerifiedDpop, DpopError> {
    verify(proof, request, now, None)
}

/// As [`verify_dpop_proof`], where the proof is expected to be by `key` (the key a token is
/// bound to): a header `jwk` describing exactly `key` is not parsed again. A proof by another
/// key still verifies, with that key in the result, for the caller to refuse.
pub fn verify_dpop_proof_by(
    proof: &str,
    request: &DpopRequest<'_>,
    now: i64,
    key: &PublicKey,
) -> Result<VerifiedDpop, DpopError> {
    verify(proof, request, now, Some(key))
}

fn verify(
    proof: &str,
    request: &DpopRequest<'_>,
    now: i64,
    expected: Option<&PublicKey>,
) -> Result<VerifiedDpop, DpopError> {
    let compact = Compact::split(proof, MAX_DPOP_PROOF_LEN).map_err(malformed)?;
    let header = Header::parse(&compact).map_err(malformed)?;
    if !header.typ_is(DPOP_TYP) {
        return Err(DpopError::Malformed("`typ` must be dpop+jwt"));
    }
    let alg = Algorithm::from_client_name(&header.alg)
        .ok_or(DpopError::Malformed("`alg` must be EdDSA (Ed25519) or ES256"))?;
    let jwk = header
        .jwk
        .ok_or(DpopError::Malformed("the header needs the public key as `jwk`"))?;
    if jwk.has_private_part() {
        return Err(DpopError::Malformed("the `jwk` must not contain private key members"));
    }
    let key = match expected {
        Some(key) if jwk_describes(&jwk, key) => key.clone(),
        _ => PublicKey::from_jwk(&jwk).map_err(|_| DpopError::Malformed("the `jwk` is not a supported public key"))?,
    };
    let signature = compact.signature_bytes().map_err(malformed)?;
    key.verify(alg, compact.signing_input.as_bytes(), &signature)
        .map_err(|_| DpopError::BadSignature)?;
    let payload = compact.payload_bytes().map_err(malformed)?;
    let claims: DpopClaims =
        crate::json::from_slice(&payload).map_err(|_| DpopError::Malformed("jti, htm, htu and iat are required"))?;
    if claims.jti.is_empty() || claims.jti.len() > MAX_DPOP_JTI_LEN {
        return Err(DpopError::Malformed("`jti` must be 1 to 256 characters"));
    }
    if claims.iat > now.saturating_add(MAX_DPOP_FUTURE_SECS) || claims.iat < now.saturating_sub(MAX_DPOP_AGE_SECS) {
        return Err(DpopError::Stale);
    }
    if claims.htm != request.method {
        return Err(DpopError::Mismatch("HTTP method"));
    }
    if normalized_uri(&claims.htu) != normalized_uri(request.uri) {
        return Err(DpopError::Mismatch("URI"));
    }
    match (request.access_token, &claims.ath) {
        (None, _) => {}
        (Some(token), Some(ath)) if *ath == access_token_hash(token) => {}
        (Some(_), _) => return Err(DpopError::Mismatch("access token")),
    }
    Ok(VerifiedDpop {
        jkt: key.thumbprint().clone(),
        key,
        claims,
    })
}

/// Signs a proof for `request` at `now`.
pub fn create_dpop_proof(signer: &dyn Signer, request: &DpopRequest<'_>, now: i64) -> Result<String, SignError> {
    sign_claims(signer, &request_claims(request, now)?)
}

/// Signs a proof for `request` at `now` that also binds the MCP `call` the request carries.
pub fn create_call_dpop_proof(
    signer: &dyn Signer,
    request: &DpopRequest<'_>,
    call: &Call<'_>,
    now: i64,
) -> Result<String, ProofCreateError> {
    let mut claims = request_claims(request, now)?;
    claims.mcp_method = Some(call.method.to_owned());
    claims.tool = Some(call.tool.to_owned());
    claims.args_hash = Some(call.args_hash()?);
    Ok(sign_claims(signer, &claims)?)
}

fn request_claims(request: &DpopRequest<'_>, now: i64) -> Result<DpopClaims, SignError> {
    Ok(DpopClaims {
        jti: crate::ids::Jti::random().map_err(SignError::backend)?.to_string(),
        htm: request.method.to_owned(),
        htu: normalized_uri(request.uri),
        iat: now,
        ath: request.access_token.map(access_token_hash),
        nonce: None,
        mcp_method: None,
        tool: None,
        args_hash: None,
    })
}

fn sign_claims(signer: &dyn Signer, claims: &DpopClaims) -> Result<String, SignError> {
    jws::sign(
        DPOP_TYP,
        &serde_json::to_vec(claims).map_err(SignError::backend)?,
        signer,
        true,
    )
}

/// `uri` without query and fragment, its scheme and host in lower case and a default port
/// (`:443` for https, `:80` for http) removed: the forms RFC 3986 §6.2.2–6.2.3 calls equal.
fn normalized_uri(uri: &str) -> String {
    let uri = uri.split(['?', '#']).next().unwrap_or_default();
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    let mut authority = authority.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => Some(":443"),
        "http" => Some(":80"),
        _ => None,
    };
    if let Some(port) = default_port
        && authority.ends_with(port)
    {
        authority.truncate(authority.len() - port.len());
    }
    let path = if path.is_empty() { "/" } else { path };
    format!("{scheme}://{authority}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;
    use serde_json::json;

    const URI: &str = "https://aip.example/oauth/token";

    fn post(access_token: Option<&str>) -> DpopRequest<'_> {
        DpopRequest {
            method: "POST",
            uri: URI,
            access_token,
        }
    }

    #[test]
    fn a_made_proof_verifies_and_names_its_key() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let key = KeyPair::generate(alg).unwrap();
            let proof = create_dpop_proof(&key, &post(None), 1_000).unwrap();
            let verified = verify_dpop_proof(&proof, &post(None), 1_000).unwrap();
            assert_eq!(&verified.jkt, key.public_key().thumbprint());
            // The same URI written differently, with a query, is the same URI.
            let same = DpopRequest {
                uri: "HTTPS://AIP.example:443/oauth/token?x=1",
                ..post(None)
            };
            assert!(verify_dpop_proof(&proof, &same, 1_000).is_ok());
        }
    }

    #[test]
    fn proofs_for_other_requests_or_times_are_refused() {
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let proof = create_dpop_proof(&key, &post(Some("token-a")), 1_000).unwrap();
        assert!(verify_dpop_proof(&proof, &post(Some("token-a")), 1_000).is_ok());
        assert_eq!(
            verify_dpop_proof(&proof, &post(Some("token-b")), 1_000),
            Err(DpopError::Mismatch("access token"))
        );
        let get = DpopRequest {
            method: "GET",
            ..post(Some("token-a"))
        };
        assert_eq!(
            verify_dpop_proof(&proof, &get, 1_000),
            Err(DpopError::Mismatch("HTTP method"))
        );
        let elsewhere = DpopRequest {
            uri: "https://aip.example/oauth/revoke",
            ..post(Some("token-a"))
        };
        assert_eq!(
            verify_dpop_proof(&proof, &elsewhere, 1_000),
            Err(DpopError::Mismatch("URI"))
        );
        assert_eq!(
            verify_dpop_proof(&proof, &post(Some("token-a")), 1_301),
            Err(DpopError::Stale)
        );
        assert_eq!(
            verify_dpop_proof(&proof, &post(Some("token-a")), 969),
            Err(DpopError::Stale)
        );
    }

    #[test]
    fn a_proof_checked_against_an_expected_key_still_names_the_key_that_signed_it() {
        let bound = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let other = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let by_bound = create_dpop_proof(&bound, &post(None), 1_000).unwrap();
        let verified = verify_dpop_proof_by(&by_bound, &post(None), 1_000, bound.public_key()).unwrap();
        assert_eq!(&verified.jkt, bound.public_key().thumbprint());
        let by_other = create_dpop_proof(&other, &post(None), 1_000).unwrap();
        let verified = verify_dpop_proof_by(&by_other, &post(None), 1_000, bound.public_key()).unwrap();
        assert_eq!(&verified.jkt, other.public_key().thumbprint());
        // The expected key does not stand in for the signature.
        let mut forged: Vec<&str> = by_bound.split('.').collect();
        let foreign = by_other.split('.').nth(2).unwrap();
        forged[2] = foreign;
        assert_eq!(
            verify_dpop_proof_by(&forged.join("."), &post(None), 1_000, bound.public_key()),
            Err(DpopError::BadSignature)
        );
    }

    #[test]
    fn a_call_bound_proof_binds_its_call_only() {
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let args = json!({"path": "/tmp/a"});
        let call = Call::tools_call("read_file", Some(&args));
        let proof = create_call_dpop_proof(&key, &post(Some("t")), &call, 1_000).unwrap();
        let claims = verify_dpop_proof(&proof, &post(Some("t")), 1_000).unwrap().claims;
        assert!(claims.is_call_bound());
        assert_eq!(claims.binds(&call), Ok(()));
        let other_args = json!({"path": "/etc/shadow"});
        assert_eq!(
            claims.binds(&Call::tools_call("read_file", Some(&other_args))),
            Err(ProofMismatch::Arguments)
        );
        assert_eq!(
            claims.binds(&Call::tools_call("write_file", Some(&args))),
            Err(ProofMismatch::Tool)
        );
        let list = Call {
            method: "tools/list",
            tool: "",
            arguments: None,
        };
        assert_eq!(claims.binds(&list), Err(ProofMismatch::Method));
        // A plain proof binds the request only; a partial binding is refused.
        let plain = verify_dpop_proof(
            &create_dpop_proof(&key, &post(None), 1_000).unwrap(),
            &post(None),
            1_000,
        )
        .unwrap()
        .claims;
        assert!(!plain.is_call_bound());
        assert_eq!(plain.binds(&call), Ok(()));
        let partial = DpopClaims {
            tool: Some("read_file".into()),
            ..plain
        };
        assert_eq!(partial.binds(&call), Err(ProofMismatch::Method));
    }

    #[test]
    fn headers_without_a_public_key_or_of_another_type_are_refused() {
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let claims = json!({"jti": "j", "htm": "POST", "htu": URI, "iat": 1_000});
        let sign = |header: serde_json::Value| {
            jws::sign_raw(header.to_string().as_bytes(), claims.to_string().as_bytes(), &key).unwrap()
        };
        let jwk = serde_json::to_value(key.public_key().to_jwk()).unwrap();
        let refused = |header: serde_json::Value| verify_dpop_proof(&sign(header), &post(None), 1_000).unwrap_err();
        assert!(matches!(
            refused(json!({"typ": "JWT", "alg": "EdDSA", "jwk": jwk})),
            DpopError::Malformed(_)
        ));
        assert!(matches!(
            refused(json!({"typ": "dpop+jwt", "alg": "EdDSA"})),
            DpopError::Malformed(_)
        ));
        assert!(matches!(
            refused(json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": jwk})),
            DpopError::Malformed(_)
        ));
        let mut private = jwk.clone();
        private["d"] = json!("AAAA");
        assert!(matches!(
            refused(json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": private})),
            DpopError::Malformed(_)
        ));
        // Another key in the header than the one that signed.
        let other = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let other_jwk = serde_json::to_value(other.public_key().to_jwk()).unwrap();
        assert_eq!(
            refused(json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": other_jwk})),
            DpopError::BadSignature
        );
        assert!(
            verify_dpop_proof(
                &sign(json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk})),
                &post(None),
                1_000
            )
            .is_ok()
        );
    }
}
