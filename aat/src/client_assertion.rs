//! Client authentication with a signed JWT (RFC 7523 §2.2; `private_key_jwt` in OpenID Connect
//! Core §9): how an agent authenticates to an OAuth endpoint of the authority with its own key,
//! and what the authority checks.
//!
//! The assertion is a compact JWS signed by the agent's registered key (EdDSA or ES256) whose
//! claims are `{iss, sub, aud, exp, jti}` (plus `iat`, `nbf` when the client sends them):
//! `iss` = `sub` = the client (the agent id), `aud` = the authorization server's issuer
//! identifier (or, as older clients send, its token endpoint URL). `typ` may be absent, `JWT`
//! (what the MCP SDKs send) or `client-authentication+jwt` (RFC 7523bis); any other explicit
//! type — an AAT, a DPoP or per-call proof — is refused, so a token of another kind signed by
//! the same key cannot stand in for an assertion. Single use of `jti` is the caller's job.

use serde::{Deserialize, Serialize};

use crate::jws::{self, Compact, Header};
use crate::keys::{Algorithm, PublicKey, SignError, Signer};
use crate::token::Audience;

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The explicit `typ` RFC 7523bis gives client assertions.
pub const CLIENT_ASSERTION_TYP: &str = "client-authentication+jwt";
/// Longest assertion accepted.
pub const MAX_CLIENT_ASSERTION_LEN: usize = 8 * 1024;
/// How far past the verifier's clock `exp` may lie: assertions are short-lived.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 600;
/// Clock skew allowed on `exp`, `iat` and `nbf`.
pub const ASSERTION_LEEWAY_SECS: i64 = 60;
/// Longest `jti` accepted.
pub const MAX_JTI_LEN: usize = 256;

/// The claims of a client assertion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAssertionClaims {
    /// The client.
    pub iss: String,
    /// The client again (RFC 7523 §3: for client authentication, the client id).
    pub sub: String,
    /// The authorization server.
    pub aud: Audience,
    /// Expiry.
    pub exp: i64,
    /// Unique per assertion.
    pub jti: String,
    /// When it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not valid before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

/// Why a client assertion was refused. The messages are safe to return to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientAssertionError {
    /// Not a compact JWS of the right type, with an allowed algorithm and the required claims.
    #[error("malformed client assertion: {0}")]
    Malformed(&'static str),
    /// `iss` and `sub` differ, or name another client than the request does.
    #[error("the client assertion's iss and sub must both be the client id")]
    WrongClient,
    /// The signature does not verify with the client's registered key.
    #[error("the client assertion's signature does not verify with the client's registered key")]
    BadSignature,
    /// `aud` is not this authorization server.
    #[error("the client assertion's aud is not this authorization server's issuer identifier")]
    WrongAudience,
    /// Past `exp`, before `nbf`, or `iat` in the future.
    #[error("the client assertion has expired or is not yet valid")]
    Expired,
    /// `exp` lies too far ahead.
    #[error(
        "the client assertion's exp is more than {MAX_ASSERTION_LIFETIME_SECS} s ahead; assertions must be short-lived"
    )]
    TooLong,
}

fn malformed(e: jws::ShapeError) -> ClientAssertionError {
    ClientAssertionError::Malformed(e.describe())
}

/// A client assertion read but not yet trusted: its header checked, its claims parsed. Read it
/// once per request: [`Self::client`] names the key to verify with (and keys per-client rate
/// limits), [`Self::verify`] checks it with that key.
#[derive(Clone, Debug)]
pub struct ClientAssertion {
    signing_input: String,
    signature: Vec<u8>,
    alg: Algorithm,
    claims: ClientAssertionClaims,
}

impl ClientAssertion {
    /// Splits and reads `assertion`: its type and algorithm, `iss` = `sub`, a `jti`.
    pub fn parse(assertion: &str) -> Result<Self, ClientAssertionError> {
        let compact = Compact::split(assertion, MAX_CLIENT_ASSERTION_LEN).map_err(malformed)?;
        let header = Header::parse(&compact).map_err(malformed)?;
        if header.typ.is_some() && !header.typ_is("JWT") && !header.typ_is(CLIENT_ASSERTION_TYP) {
            return Err(ClientAssertionError::Malformed(
                "`typ` must be absent, JWT or client-authentication+jwt",
            ));
        }
        let alg = Algorithm::from_client_name(&header.alg).ok_or(ClientAssertionError::Malformed(
            "`alg` must be EdDSA (Ed25519) or ES256",
        ))?;
        let payload = compact.payload_bytes().map_err(malformed)?;
        let claims: ClientAssertionClaims = crate::json::from_slice(&payload)
            .map_err(|_| ClientAssertionError::Malformed("iss, sub, aud, exp and jti are required"))?;
        if claims.iss != claims.sub {
            return Err(ClientAssertionError::WrongClient);
        }
        if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
            return Err(ClientAssertionError::Malformed("`jti` must be 1 to 256 characters"));
        }
        Ok(Self {
            signing_input: compact.signing_input.to_owned(),
            signature: compact.signature_bytes().map_err(malformed)?,
            alg,
            claims,
        })
    }

    /// The client it names (`iss`, equal to `sub`), not yet verified.
    pub fn client(&self) -> &str {
        &self.claims.iss
    }

    /// Verifies it with the client's registered `key`: the signature, `aud` one of
    /// `audiences`, `exp` in the future but at most [`MAX_ASSERTION_LIFETIME_SECS`] ahead,
    /// `nbf` and `iat` not in the future (each with [`ASSERTION_LEEWAY_SECS`]). Recording `jti`
    /// against reuse is the caller's job.
    pub fn verify(
        &self,
        key: &PublicKey,
        audiences: &[&str],
        now: i64,
    ) -> Result<&ClientAssertionClaims, ClientAssertionError> {
        let claims = &self.claims;
        key.verify(self.alg, self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| ClientAssertionError::BadSignature)?;
        if !audiences.iter().any(|aud| claims.aud.contains(aud)) {
            return Err(ClientAssertionError::WrongAudience);
        }
        let future = now.saturating_add(ASSERTION_LEEWAY_SECS);
        if claims.exp < now.saturating_sub(ASSERTION_LEEWAY_SECS)
            || claims.nbf.is_some_and(|nbf| nbf > future)
            || claims.iat.is_some_and(|iat| iat > future)
        {
            return Err(ClientAssertionError::Expired);
        }
        if claims.exp > now.saturating_add(MAX_ASSERTION_LIFETIME_SECS + ASSERTION_LEEWAY_SECS) {
            return Err(ClientAssertionError::TooLong);
        }
        Ok(claims)
    }
}

/// [`ClientAssertion::parse`], then [`ClientAssertion::verify`].
pub fn verify_client_assertion(
    assertion: &str,
    key: &PublicKey,
    audiences: &[&str],
    now: i64,
) -> Result<ClientAssertionClaims, ClientAssertionError> {
    ClientAssertion::parse(assertion)?.verify(key, audiences, now).cloned()
}

/// Signs an assertion for `client_id` toward `audience`, valid for `lifetime_secs` from `now`
/// (`typ: client-authentication+jwt`).
pub fn create_client_assertion(
    signer: &dyn Signer,
    client_id: &str,
    audience: &str,
    now: i64,
    lifetime_secs: i64,
) -> Result<String, SignError> {
    let claims = ClientAssertionClaims {
        iss: client_id.to_owned(),
        sub: client_id.to_owned(),
        aud: Audience::one(audience),
        exp: now.saturating_add(lifetime_secs),
        jti: crate::ids::Jti::random().map_err(SignError::backend)?.to_string(),
        iat: Some(now),
        nbf: None,
    };
    let payload = serde_json::to_vec(&claims).map_err(SignError::backend)?;
    let header = serde_json::json!({"alg": signer.algorithm().as_str(), "typ": CLIENT_ASSERTION_TYP});
    jws::sign_raw(
        &serde_json::to_vec(&header).map_err(SignError::backend)?,
        &payload,
        signer,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;
    use serde_json::json;

    const AS: &str = "https://aip.example";

    fn signed(key: &KeyPair, header: serde_json::Value, claims: serde_json::Value) -> String {
        jws::sign_raw(header.to_string().as_bytes(), claims.to_string().as_bytes(), key).unwrap()
    }

    fn claims(now: i64) -> serde_json::Value {
        json!({"iss": "agent-1", "sub": "agent-1", "aud": AS, "exp": now + 60, "iat": now, "jti": "j1"})
    }

    #[test]
    fn a_made_assertion_verifies_for_both_algorithms() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let key = KeyPair::generate(alg).unwrap();
            let assertion = create_client_assertion(&key, "agent-1", AS, 1_000, 60).unwrap();
            assert_eq!(ClientAssertion::parse(&assertion).unwrap().client(), "agent-1");
            let verified = verify_client_assertion(&assertion, key.public_key(), &[AS], 1_000).unwrap();
            assert_eq!(verified.sub, "agent-1");
            let other = KeyPair::generate(alg).unwrap();
            assert_eq!(
                verify_client_assertion(&assertion, other.public_key(), &[AS], 1_000),
                Err(ClientAssertionError::BadSignature)
            );
        }
    }

    #[test]
    fn sdk_shaped_assertions_are_accepted_and_others_refused() {
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let public = key.public_key();
        let now = 5_000;
        let check = |header: serde_json::Value, claims: serde_json::Value| {
            verify_client_assertion(
                &signed(&key, header, claims),
                public,
                &[AS, "https://aip.example/oauth/token"],
                now,
            )
        };
        // As the MCP SDKs send them: typ JWT, aud a string or an array.
        assert!(check(json!({"alg": "EdDSA", "typ": "JWT"}), claims(now)).is_ok());
        // With the fully specified name of RFC 9864.
        assert!(check(json!({"alg": "Ed25519", "typ": "JWT"}), claims(now)).is_ok());
        let mut array = claims(now);
        array["aud"] = json!(["https://aip.example/oauth/token"]);
        assert!(check(json!({"alg": "EdDSA"}), array).is_ok());

        let refused = |header: serde_json::Value, claims: serde_json::Value| check(header, claims).unwrap_err();
        assert!(matches!(
            refused(json!({"alg": "EdDSA", "typ": "dpop+jwt"}), claims(now)),
            ClientAssertionError::Malformed(_)
        ));
        assert!(matches!(
            refused(json!({"alg": "none"}), claims(now)),
            ClientAssertionError::Malformed(_)
        ));
        assert!(matches!(
            refused(json!({"alg": "HS256"}), claims(now)),
            ClientAssertionError::Malformed(_)
        ));
        let with = |member: &str, value: serde_json::Value| {
            let mut c = claims(now);
            c[member] = value;
            c
        };
        let header = || json!({"alg": "EdDSA", "typ": "JWT"});
        assert_eq!(
            refused(header(), with("sub", json!("agent-2"))),
            ClientAssertionError::WrongClient
        );
        assert_eq!(
            refused(header(), with("aud", json!("https://elsewhere"))),
            ClientAssertionError::WrongAudience
        );
        assert_eq!(
            refused(header(), with("exp", json!(now - 61))),
            ClientAssertionError::Expired
        );
        assert_eq!(
            refused(header(), with("iat", json!(now + 61))),
            ClientAssertionError::Expired
        );
        assert_eq!(
            refused(header(), with("nbf", json!(now + 61))),
            ClientAssertionError::Expired
        );
        assert_eq!(
            refused(header(), with("exp", json!(now + 3_600))),
            ClientAssertionError::TooLong
        );
        let mut no_jti = claims(now);
        no_jti.as_object_mut().unwrap().remove("jti");
        assert!(matches!(refused(header(), no_jti), ClientAssertionError::Malformed(_)));
        let mut no_exp = claims(now);
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(matches!(refused(header(), no_exp), ClientAssertionError::Malformed(_)));
    }
}
