//! Agent Authentication Tokens: issuing, and verification as a typestate.
//!
//! ```text
//! UnverifiedAat::parse(token)            spec 7.5.3 step 1 (structure, `typ`)
//!     .verify(&keys, &clock, &validation) steps 2–6 (version, issuer, signature, time, audience)
//!     -> VerifiedAat                      claims readable only from here on
//! ```
//!
//! Steps 7–9 (revocation, registry, replay) live in [`crate::validate`], which also offers the
//! whole algorithm as one call.

mod claims;
mod error;

use std::sync::OnceLock;

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use claims::{
    AAT_VERSION, AatClaims, AgentClaims, Audience, AuthMethod, Capabilities, Confirmation, ContextClaims,
    DelegationScope, UserBinding,
};
pub use error::{AatError, RevokedBy};

use crate::b64;
use crate::clock::Clock;
use crate::ids::{AgentId, Jti, KeyId};
use crate::jws::{self, Compact, Header};
use crate::keys::{Algorithm, KeyResolver, PublicKey, SignError, Signer};

/// The JWS `typ` of an AAT (spec 15.3).
pub const AAT_TYP: &str = "aat+jwt";
/// Longest token accepted; real AATs are well under 2 KiB.
pub const MAX_AAT_LEN: usize = 16 * 1024;
/// Hard ceiling on `exp - iat` (spec 14.8.3).
pub const MAX_LIFETIME_SECS: u64 = 24 * 60 * 60;
/// Default allowance for clock differences (spec 3.10 `clock_skew`).
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Largest accepted clock-skew allowance.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// What a verifier requires of an AAT. Safe by default: EdDSA and ES256 only, an audience is
/// mandatory, 30 s of clock skew, at most 24 h of lifetime. The algorithm allowlist comes
/// from here, never from the token's header.
#[derive(Clone, Debug)]
pub struct Validation {
    algorithms: Vec<Algorithm>,
    audience: String,
    trusted_issuers: Option<Vec<String>>,
    leeway: u64,
    max_lifetime: u64,
    max_delegation_depth: u8,
}

impl Validation {
    /// Requires `audience` in `aud`.
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            algorithms: vec![Algorithm::EdDSA, Algorithm::ES256],
            audience: audience.into(),
            trusted_issuers: None,
            leeway: DEFAULT_LEEWAY_SECS,
            max_lifetime: MAX_LIFETIME_SECS,
            max_delegation_depth: 3,
        }
    }

    /// Principals a delegable AAT's chain may have, the user included: 2 to 4 (3 by default,
    /// spec D.7); values outside are brought into that range.
    pub fn with_max_delegation_depth(mut self, depth: u8) -> Self {
        self.max_delegation_depth = depth.clamp(2, 4);
        self
    }

    /// Principals a delegable AAT's chain may have.
    pub fn max_delegation_depth(&self) -> u8 {
        self.max_delegation_depth
    }

    /// Accepts only these algorithms (an empty list accepts nothing).
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> Self {
        self.algorithms = algorithms.to_vec();
        self
    }

    /// Accepts only tokens whose `iss` is one of `issuers` (spec 3.10.4).
    pub fn with_trusted_issuers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, issuers: I) -> Self {
        self.trusted_issuers = Some(issuers.into_iter().map(Into::into).collect());
        self
    }

    /// Clock-skew allowance in seconds, capped at [`MAX_LEEWAY_SECS`].
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.leeway = seconds.min(MAX_LEEWAY_SECS);
        self
    }

    /// Maximum `exp - iat` in seconds, capped at [`MAX_LIFETIME_SECS`].
    pub fn with_max_lifetime(mut self, seconds: u64) -> Self {
        self.max_lifetime = seconds.min(MAX_LIFETIME_SECS);
        self
    }

    /// The required audience.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The clock-skew allowance in seconds.
    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    /// The accepted algorithms.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// The trusted issuers, when restricted.
    pub fn trusted_issuers(&self) -> Option<&[String]> {
        self.trusted_issuers.as_deref()
    }

    fn leeway_i64(&self) -> i64 {
        i64::try_from(self.leeway).unwrap_or(i64::MAX)
    }
}

/// A token that has the shape of an AAT but whose claims have not been checked. Nothing in
/// it can be read until [`UnverifiedAat::verify`] succeeds.
#[derive(Debug)]
pub struct UnverifiedAat {
    alg: String,
    kid: Option<String>,
    /// The claims, or why they do not parse (reported after the version check).
    claims: Result<AatClaims, &'static str>,
    version_ok: bool,
    payload: Vec<u8>,
    signing_input: String,
    signature: Vec<u8>,
    token_hash: [u8; 32],
}

impl UnverifiedAat {
    /// Step 1 of spec 7.5.3: the compact JWS shape, the header, `typ: aat+jwt`, and a JSON
    /// object payload.
    pub fn parse(token: &str) -> Result<Self, AatError> {
        Self::parse_hashed(token, Sha256::digest(token.as_bytes()).into())
    }

    pub(crate) fn parse_hashed(token: &str, token_hash: [u8; 32]) -> Result<Self, AatError> {
        let shape = |e: jws::ShapeError| AatError::Malformed(e.describe());
        let compact = Compact::split(token, MAX_AAT_LEN).map_err(shape)?;
        let header = Header::parse(&compact).map_err(shape)?;
        if !header.typ_is(AAT_TYP) {
            return Err(AatError::Malformed("`typ` is not `aat+jwt`"));
        }
        let signature = compact.signature_bytes().map_err(shape)?;
        let payload = compact.payload_bytes().map_err(shape)?;
        let (claims, version_ok) = match crate::json::from_slice::<AatClaims>(&payload) {
            Ok(claims) => {
                let version_ok = claims.aat_version == AAT_VERSION;
                (Ok(claims), version_ok)
            }
            Err(_) => {
                #[derive(Deserialize)]
                struct Probe {
                    aat_version: Option<serde_json::Value>,
                }
                let probe: Probe = crate::json::from_slice(&payload)
                    .map_err(|_| AatError::Malformed("payload is not a JSON object"))?;
                let version_ok = probe.aat_version.as_ref().and_then(|v| v.as_str()) == Some(AAT_VERSION);
                (Err("required claims are missing or have the wrong type"), version_ok)
            }
        };
        Ok(Self {
            alg: header.alg,
            kid: header.kid,
            claims,
            version_ok,
            payload,
            signing_input: compact.signing_input.to_owned(),
            signature,
            token_hash,
        })
    }

    /// The audience the token *claims*, before anything is verified: only for choosing the
    /// audience to validate against where any audience is acceptable (an issuer introspecting
    /// its own tokens). `None` when the claims do not parse.
    pub fn claimed_audience(&self) -> Option<&Audience> {
        self.claims.as_ref().ok().map(|claims| &claims.aud)
    }

    /// Steps 2–6 of spec 7.5.3, in order: version, trusted issuer, signature (algorithm from
    /// `validation`, key from `keys` by `kid`), time validity, audience.
    pub fn verify(
        self,
        keys: &dyn KeyResolver,
        clock: &dyn Clock,
        validation: &Validation,
    ) -> Result<VerifiedAat, AatError> {
        // Step 2.
        if !self.version_ok {
            return Err(AatError::UnsupportedVersion);
        }
        let claims = self.claims.map_err(AatError::Malformed)?;
        claims.check_consistency().map_err(AatError::Malformed)?;

        // Step 3.
        if let Some(trusted) = validation.trusted_issuers()
            && !trusted.contains(&claims.iss)
        {
            return Err(AatError::UntrustedIssuer { issuer: claims.iss });
        }

        // Step 4. The allowlist is checked before anything else touches the header's `alg`,
        // so `none`, `HS256` (a public key used as an HMAC secret) and friends never reach a
        // verification routine.
        let alg = match Algorithm::from_name(&self.alg) {
            Some(alg) if validation.algorithms().contains(&alg) => alg,
            _ => return Err(AatError::SignatureInvalid("algorithm is not allowed")),
        };
        let kid = self
            .kid
            .as_deref()
            .and_then(|k| k.parse::<KeyId>().ok())
            .ok_or(AatError::UnknownSigningKey)?;
        let key = keys.resolve(&claims.iss, &kid).ok_or(AatError::UnknownSigningKey)?;
        if key.algorithm() != alg {
            return Err(AatError::SignatureInvalid("algorithm does not match the issuer key"));
        }
        key.verify(alg, self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| AatError::SignatureInvalid("signature does not verify"))?;

        // Steps 5 and 6.
        check_window_and_audience(&claims, clock.now(), validation)?;

        Ok(VerifiedAat {
            alg,
            kid,
            issuer_key: key,
            claims,
            payload: self.payload,
            ath: b64::encode(self.token_hash),
            token_hash: self.token_hash,
            bound_key: OnceLock::new(),
            delegation: None,
        })
    }
}

/// Steps 5 (time window, lifetime) and 6 (audience) of `claims` at `now`.
fn check_window_and_audience(claims: &AatClaims, now: i64, validation: &Validation) -> Result<(), AatError> {
    check_time(claims, now, validation)?;
    let lifetime = claims.exp.saturating_sub(claims.iat);
    if lifetime > i64::try_from(validation.max_lifetime).unwrap_or(i64::MAX) {
        return Err(AatError::LifetimeTooLong {
            lifetime,
            max: validation.max_lifetime,
        });
    }
    if !claims.aud.contains(validation.audience()) {
        return Err(AatError::AudienceMismatch);
    }
    Ok(())
}

/// The chain of a delegable AAT, as verified: what the registry checks must cover besides the
/// last holder, whom the claims name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelegationChain {
    /// Every agent on the chain with the key it held, the issuer's agent first and the last
    /// delegatee (the token's `sub`) last.
    pub agents: Vec<(AgentId, KeyId)>,
    /// The blocks' revocation ids, in hex: the authority block's, then each step's.
    pub revocation_ids: Vec<String>,
    /// Principals on the chain, the user included.
    pub depth: u8,
}

impl VerifiedAat {
    /// A delegable AAT whose chain verified: `claims` are what its last delegatee holds, to be
    /// checked here (steps 2, 3, 5 and 6); `issuer_key` the root's.
    pub(crate) fn delegated(
        claims: AatClaims,
        issuer_key: PublicKey,
        token_hash: [u8; 32],
        chain: DelegationChain,
        now: i64,
        validation: &Validation,
    ) -> Result<Self, AatError> {
        if claims.aat_version != AAT_VERSION {
            return Err(AatError::UnsupportedVersion);
        }
        claims.check_consistency().map_err(AatError::Malformed)?;
        if let Some(trusted) = validation.trusted_issuers()
            && !trusted.contains(&claims.iss)
        {
            return Err(AatError::UntrustedIssuer { issuer: claims.iss });
        }
        if !validation.algorithms().contains(&issuer_key.algorithm()) {
            return Err(AatError::SignatureInvalid("algorithm is not allowed"));
        }
        check_window_and_audience(&claims, now, validation)?;
        let payload = serde_json::to_vec(&claims).map_err(|_| AatError::Malformed("claims cannot be serialized"))?;
        Ok(Self {
            alg: issuer_key.algorithm(),
            kid: issuer_key.thumbprint().clone(),
            issuer_key,
            claims,
            payload,
            ath: b64::encode(token_hash),
            token_hash,
            bound_key: OnceLock::new(),
            delegation: Some(chain),
        })
    }

    /// The delegation chain, for a delegable AAT.
    pub fn delegation(&self) -> Option<&DelegationChain> {
        self.delegation.as_ref()
    }
}

/// Step 5's window: not before `nbf` (or `iat`), not after `exp`, each with the leeway.
fn check_time(claims: &AatClaims, now: i64, validation: &Validation) -> Result<(), AatError> {
    let leeway = validation.leeway_i64();
    let not_before = claims.nbf.unwrap_or(claims.iat).max(claims.iat);
    if now < not_before.saturating_sub(leeway) {
        return Err(AatError::NotYetValid);
    }
    if now > claims.exp.saturating_add(leeway) {
        return Err(AatError::Expired);
    }
    Ok(())
}

/// An AAT whose structure, version, issuer, signature, time window and audience have been
/// checked. Its claims are readable.
#[derive(Debug)]
pub struct VerifiedAat {
    alg: Algorithm,
    kid: KeyId,
    issuer_key: PublicKey,
    claims: AatClaims,
    payload: Vec<u8>,
    token_hash: [u8; 32],
    ath: String,
    /// The agent key, once a proof has shown it matches `cnf.jkt` (saves re-parsing it).
    bound_key: OnceLock<PublicKey>,
    /// The chain of a delegable AAT (`None` for a JWT).
    delegation: Option<DelegationChain>,
}

impl VerifiedAat {
    /// The verified claims.
    pub fn claims(&self) -> &AatClaims {
        &self.claims
    }

    /// The algorithm the issuer signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The issuer key id that verified the token.
    pub fn key_id(&self) -> &KeyId {
        &self.kid
    }

    /// The issuer key that verified the token.
    pub fn issuer_key(&self) -> &PublicKey {
        &self.issuer_key
    }

    /// The raw JSON payload, including claims this toolkit does not model.
    pub fn payload_json(&self) -> &[u8] {
        &self.payload
    }

    /// SHA-256 of the compact token.
    pub fn token_hash(&self) -> &[u8; 32] {
        &self.token_hash
    }

    /// Base64url SHA-256 of the token: the `ath` a proof must carry.
    pub fn ath(&self) -> &str {
        &self.ath
    }

    /// The token id.
    pub fn jti(&self) -> &Jti {
        &self.claims.jti
    }

    /// The agent.
    pub fn agent_id(&self) -> &AgentId {
        &self.claims.agent.id
    }

    /// Thumbprint of the key that must sign each call's proof.
    pub fn confirmation_thumbprint(&self) -> &KeyId {
        self.claims.confirmation_thumbprint()
    }

    /// Re-checks the time window (for a token verified earlier and cached).
    pub fn check_time(&self, now: i64, validation: &Validation) -> Result<(), AatError> {
        check_time(&self.claims, now, validation)
    }

    pub(crate) fn bound_key(&self) -> &OnceLock<PublicKey> {
        &self.bound_key
    }
}

/// Why claims could not be issued as an AAT.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The claims are inconsistent or outside the protocol's limits.
    #[error("invalid AAT claims: {0}")]
    InvalidClaims(&'static str),
    /// The signer failed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// Signs `claims` as an AAT with header `{"alg", "typ": "aat+jwt", "kid"}`.
///
/// Refuses claims a verifier would reject whatever the clock: wrong `aat_version`, `sub` ≠
/// `agent.id`, `cnf.jkt` ≠ `agent.public_key_thumbprint`, `exp` ≤ `iat`, or a lifetime over 24 h.
pub fn encode_aat(claims: &AatClaims, signer: &dyn Signer) -> Result<String, EncodeError> {
    if claims.aat_version != AAT_VERSION {
        return Err(EncodeError::InvalidClaims("`aat_version` must be aip/v1alpha3"));
    }
    claims.check_consistency().map_err(EncodeError::InvalidClaims)?;
    if claims.exp.saturating_sub(claims.iat) > MAX_LIFETIME_SECS as i64 {
        return Err(EncodeError::InvalidClaims("lifetime exceeds 24 hours"));
    }
    let payload = serde_json::to_vec(claims).map_err(|_| EncodeError::InvalidClaims("not serializable"))?;
    Ok(jws::sign(AAT_TYP, &payload, signer, false)?)
}
