//! Per-call proof of possession (docs/architecture.md, "The AAT on the wire").
//!
//! An AAT is bound to the agent key (`cnf.jkt`); each tool call carries a fresh proof: a
//! compact JWS with header `{"typ":"aip-pop+jwt","alg":…,"jwk":<agent public key>}` and
//! claims `{jti, iat, aud, ath, method, tool, args_hash}`, where `ath` is the base64url
//! SHA-256 of the AAT and `args_hash` the hex SHA-256 of the RFC 8785 form of
//! `params.arguments` (absent arguments hash as `{}`).
//!
//! Verification, in order: shape and header (`proof_invalid`); the key is the AAT's
//! (`proof_mismatch`); `iat` within 300 s past / 30 s future (`proof_invalid`); `ath`, `aud`,
//! `method`, `tool`, `args_hash` match this call (`proof_mismatch`); the signature
//! (`proof_invalid`); and last the `jti` is recorded as used (`proof_replayed`), so that
//! rejected proofs never occupy the replay cache.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::b64;
use crate::ids::Jti;
use crate::jcs::{self, CanonicalError};
use crate::jws::{self, Compact, Header};
use crate::keys::{Algorithm, Jwk, PublicKey, SignError, Signer};
use crate::replay::{ReplayCache, ReplayError, ReplayScope};
use crate::token::VerifiedAat;

/// The JWS `typ` of a proof.
pub const PROOF_TYP: &str = "aip-pop+jwt";
/// Longest proof accepted; real proofs are about 500 bytes.
pub const MAX_PROOF_LEN: usize = 4096;
/// How old a proof's `iat` may be.
pub const DEFAULT_MAX_AGE_SECS: u64 = 300;
/// How far in the future a proof's `iat` may be.
pub const DEFAULT_MAX_FUTURE_SECS: u64 = 30;

/// The claims of a proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofClaims {
    /// Unique per proof.
    pub jti: Jti,
    /// When the proof was made.
    pub iat: i64,
    /// The proxy or service the call is for (same as the AAT's audience).
    pub aud: String,
    /// Base64url SHA-256 of the AAT.
    pub ath: String,
    /// JSON-RPC method (`tools/call`).
    pub method: String,
    /// Tool name.
    pub tool: String,
    /// Hex SHA-256 of the RFC 8785 arguments.
    pub args_hash: String,
}

/// The call a proof is bound to.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// JSON-RPC method.
    pub method: &'a str,
    /// Tool name (`params.name`).
    pub tool: &'a str,
    /// `params.arguments`, if present.
    pub arguments: Option<&'a Value>,
}

impl<'a> Call<'a> {
    /// A `tools/call` of `tool` with `arguments`.
    pub fn tools_call(tool: &'a str, arguments: Option<&'a Value>) -> Self {
        Self {
            method: "tools/call",
            tool,
            arguments,
        }
    }

    /// Hex SHA-256 of the canonical arguments (`{}` when absent).
    pub fn args_hash(&self) -> Result<String, CanonicalError> {
        static EMPTY: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
        let args = self
            .arguments
            .unwrap_or_else(|| EMPTY.get_or_init(|| Value::Object(serde_json::Map::new())));
        jcs::sha256_hex(args)
    }
}

/// What a proof verifier requires.
#[derive(Clone, Debug)]
pub struct ProofValidation {
    audience: String,
    algorithms: Vec<Algorithm>,
    max_age: u64,
    max_future: u64,
}

impl ProofValidation {
    /// Proofs must name `audience`; EdDSA and ES256 accepted; 300 s past / 30 s future.
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            algorithms: vec![Algorithm::EdDSA, Algorithm::ES256],
            max_age: DEFAULT_MAX_AGE_SECS,
            max_future: DEFAULT_MAX_FUTURE_SECS,
        }
    }

    /// Accepts only these algorithms.
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> Self {
        self.algorithms = algorithms.to_vec();
        self
    }

    /// The required audience.
    pub fn audience(&self) -> &str {
        &self.audience
    }
}

/// What about a proof does not match the call it came with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofMismatch {
    /// Signed by a key other than the one the AAT is bound to (e.g. a stolen AAT).
    Key,
    /// Made for another AAT (`ath`).
    Token,
    /// Made for another service (`aud`).
    Audience,
    /// Made for another JSON-RPC method.
    Method,
    /// Made for another tool.
    Tool,
    /// Made for other arguments.
    Arguments,
    /// A DPoP proof made for another HTTP method.
    HttpMethod,
    /// A DPoP proof made for another URL.
    Url,
}

/// Why a call's proof was refused. [`ProofError::aat_error`] gives the `aat_error` string.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// No proof came with the call.
    #[error("proof of possession required")]
    Missing,
    /// The proof is malformed, expired, from the future, or its signature fails.
    #[error("invalid proof: {0}")]
    Invalid(&'static str),
    /// The proof is valid but made for something else.
    #[error("proof does not match this call: {0:?}")]
    Mismatch(ProofMismatch),
    /// The proof's `jti` was used before.
    #[error("proof was already used")]
    Replayed,
    /// The replay cache is full, so the proof's freshness cannot be established.
    #[error("replay cache at capacity; proof freshness cannot be checked")]
    ReplayCacheFull,
    /// The replay store could not be written or reached, so the proof's freshness cannot be
    /// established.
    #[error("replay store unavailable; proof freshness cannot be checked")]
    ReplayStoreUnavailable,
}

impl ProofError {
    /// `proof_missing`, `proof_invalid`, `proof_mismatch` or `proof_replayed`.
    pub fn aat_error(&self) -> &'static str {
        match self {
            Self::Missing => "proof_missing",
            Self::Invalid(_) => "proof_invalid",
            Self::Mismatch(_) => "proof_mismatch",
            // Both tell an honest client the same thing: make a new proof and retry.
            Self::Replayed | Self::ReplayCacheFull | Self::ReplayStoreUnavailable => "proof_replayed",
        }
    }
}

impl From<ReplayError> for ProofError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Replayed => Self::Replayed,
            ReplayError::Full => Self::ReplayCacheFull,
            ReplayError::Unavailable => Self::ReplayStoreUnavailable,
        }
    }
}

/// A proof could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofCreateError {
    /// The arguments have no canonical form.
    #[error(transparent)]
    Arguments(#[from] CanonicalError),
    /// The signer failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The random `jti` could not be drawn.
    #[error("the system random number generator failed")]
    Random,
}

/// Makes a proof for `call` under the AAT `aat` (the compact token), with a random `jti`.
pub fn create_proof(
    signer: &dyn Signer,
    aat: &str,
    call: &Call<'_>,
    audience: &str,
    now: i64,
) -> Result<String, ProofCreateError> {
    let jti = Jti::random().map_err(|_| ProofCreateError::Random)?;
    create_proof_with_jti(signer, aat, call, audience, now, jti)
}

/// As [`create_proof`] with a chosen `jti` (for test vectors).
pub fn create_proof_with_jti(
    signer: &dyn Signer,
    aat: &str,
    call: &Call<'_>,
    audience: &str,
    now: i64,
    jti: Jti,
) -> Result<String, ProofCreateError> {
    let claims = ProofClaims {
        jti,
        iat: now,
        aud: audience.to_owned(),
        ath: b64::encode(Sha256::digest(aat.as_bytes())),
        method: call.method.to_owned(),
        tool: call.tool.to_owned(),
        args_hash: call.args_hash()?,
    };
    let payload = serde_json::to_vec(&claims).map_err(SignError::backend)?;
    Ok(jws::sign(PROOF_TYP, &payload, signer, true)?)
}

/// Verifies the proof that came with `call` against the verified AAT and records its `jti`.
pub fn verify_proof(
    proof: &str,
    aat: &VerifiedAat,
    call: &Call<'_>,
    validation: &ProofValidation,
    replay: &dyn ReplayCache,
    now: i64,
) -> Result<ProofClaims, ProofError> {
    let shape = |e: jws::ShapeError| ProofError::Invalid(e.describe());
    let compact = Compact::split(proof, MAX_PROOF_LEN).map_err(shape)?;
    let header = Header::parse(&compact).map_err(shape)?;
    if !header.typ_is(PROOF_TYP) {
        return Err(ProofError::Invalid("`typ` is not aip-pop+jwt"));
    }
    let alg = match Algorithm::from_name(&header.alg) {
        Some(alg) if validation.algorithms.contains(&alg) => alg,
        _ => return Err(ProofError::Invalid("algorithm is not allowed")),
    };
    let jwk = header.jwk.ok_or(ProofError::Invalid("header has no `jwk`"))?;
    if jwk.has_private_part() {
        return Err(ProofError::Invalid("`jwk` contains a private key"));
    }
    let key = bound_key(aat, &jwk)?;
    if key.algorithm() != alg {
        return Err(ProofError::Invalid("algorithm does not match the key"));
    }

    let payload = compact.payload_bytes().map_err(shape)?;
    let claims: ProofClaims = crate::json::from_slice(&payload)
        .map_err(|_| ProofError::Invalid("claims are missing or have the wrong type"))?;
    let max_age = i64::try_from(validation.max_age).unwrap_or(i64::MAX);
    if claims.iat > now.saturating_add(i64::try_from(validation.max_future).unwrap_or(0)) {
        return Err(ProofError::Invalid("`iat` is in the future"));
    }
    if claims.iat < now.saturating_sub(max_age) {
        return Err(ProofError::Invalid("proof is too old"));
    }
    let mismatch = if claims.ath != aat.ath() {
        Some(ProofMismatch::Token)
    } else if claims.aud != validation.audience {
        Some(ProofMismatch::Audience)
    } else if claims.method != call.method {
        Some(ProofMismatch::Method)
    } else if claims.tool != call.tool {
        Some(ProofMismatch::Tool)
    } else if call
        .args_hash()
        .map_err(|_| ProofError::Invalid("arguments have no canonical form"))?
        != claims.args_hash
    {
        Some(ProofMismatch::Arguments)
    } else {
        None
    };
    if let Some(what) = mismatch {
        return Err(ProofError::Mismatch(what));
    }

    let signature = compact.signature_bytes().map_err(shape)?;
    key.verify(alg, compact.signing_input.as_bytes(), &signature)
        .map_err(|_| ProofError::Invalid("signature does not verify"))?;

    replay
        .check_and_record(
            ReplayScope::Proof,
            claims.jti.as_str(),
            claims.iat.saturating_add(max_age),
            now,
        )
        .map_err(ProofError::from)?;
    Ok(claims)
}

/// The proof's key, which must be the one the AAT is bound to. After the first match the
/// parsed key is kept on the AAT, so later calls compare the JWK's members instead of parsing
/// it and hashing its thumbprint again; the same members are checked either way.
fn bound_key(aat: &VerifiedAat, jwk: &Jwk) -> Result<PublicKey, ProofError> {
    if let Some(key) = aat.bound_key().get()
        && jwk_describes(jwk, key)
    {
        return Ok(key.clone());
    }
    let key = PublicKey::from_jwk(jwk).map_err(|_| ProofError::Invalid("`jwk` is not a valid public key"))?;
    if key.thumbprint() != aat.confirmation_thumbprint() {
        return Err(ProofError::Mismatch(ProofMismatch::Key));
    }
    let _ = aat.bound_key().set(key.clone());
    Ok(key)
}

/// Whether `jwk` is exactly `key` and acceptable as `PublicKey::from_jwk` would require:
/// same type, curve and coordinates, `use` absent or `sig`, `alg` absent or the key's.
pub(crate) fn jwk_describes(jwk: &Jwk, key: &PublicKey) -> bool {
    let (kty, crv) = match key.algorithm() {
        Algorithm::EdDSA => ("OKP", "Ed25519"),
        Algorithm::ES256 => ("EC", "P-256"),
    };
    jwk.kty == kty
        && jwk.crv.as_deref() == Some(crv)
        && jwk.use_.as_deref().is_none_or(|u| u == "sig")
        && jwk.alg.as_deref().is_none_or(|a| a == key.algorithm().as_str())
        && key.same_coordinates(jwk.x.as_deref(), jwk.y.as_deref())
}
