//! The AIP token toolkit: keys, canonical JSON, Agent Authentication Tokens (AATs), per-call
//! proofs of possession, and the validation algorithm of the Agent Identity Protocol.
//!
//! Everything here is pure computation — no network, no database — so the registry, the token
//! issuer, the proxy and agents share one implementation of every format, including the audit
//! hash chain ([`chain`]) and its signed checkpoints ([`checkpoint`]), and the table of JSON-RPC errors ([`jsonrpc`]). The HTTP API's bodies
//! and its client, the agent's included, are in the `aip-api` crate.
//!
//! ```
//! use std::sync::Arc;
//! use aip_aat::clock::FixedClock;
//! use aip_aat::keys::{Algorithm, JwkSet, KeyPair};
//! use aip_aat::proof::{Call, create_proof};
//! use aip_aat::replay::InMemoryReplayCache;
//! use aip_aat::token::*;
//! use aip_aat::verifier::CallVerifier;
//!
//! let issuer = KeyPair::generate(Algorithm::EdDSA)?;
//! let agent = KeyPair::generate(Algorithm::EdDSA)?;
//! let agent_id = aip_aat::ids::AgentId::random()?;
//! let now = 1_770_000_000;
//! let claims = AatClaims {
//!     aat_version: AAT_VERSION.into(),
//!     iss: "https://issuer.example".into(),
//!     sub: agent_id.clone(),
//!     aud: Audience::one("files-proxy"),
//!     iat: now,
//!     exp: now + 900,
//!     nbf: None,
//!     jti: aip_aat::ids::Jti::random()?,
//!     agent: AgentClaims {
//!         id: agent_id,
//!         name: Some("code reviewer".into()),
//!         public_key_thumbprint: agent.key_id().clone(),
//!         aid_hash: None,
//!     },
//!     user_binding: None,
//!     capabilities: Capabilities { tools: vec!["read_file".into()], ..Default::default() },
//!     context: ContextClaims { session_id: "s-1".into(), policy_hash: None, registry_id: None },
//!     cnf: Some(Confirmation { jkt: agent.key_id().clone() }),
//! };
//! let aat = encode_aat(&claims, &issuer)?;
//!
//! // The agent signs a proof for each call...
//! let args = serde_json::json!({"path": "/etc/hosts"});
//! let call = Call::tools_call("read_file", Some(&args));
//! let proof = create_proof(&agent, &aat, &call, "files-proxy", now)?;
//!
//! // ...and the proxy checks token and proof together.
//! let verifier = CallVerifier::new(
//!     Validation::new("files-proxy"),
//!     Arc::new(JwkSet::from_keys([issuer.public_key()])),
//!     Arc::new(InMemoryReplayCache::new(100_000)),
//! )
//! .with_clock(Arc::new(FixedClock::new(now)));
//! let verified = verifier.verify(Some(&aat), Some(&proof), &call)?;
//! assert_eq!(verified.claims().capabilities.tools, ["read_file"]);
//! // The same proof cannot be used twice.
//! assert!(verifier.verify(Some(&aat), Some(&proof), &call).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aid;
mod b64;
pub mod chain;
pub mod challenge;
pub mod checkpoint;
pub mod client_assertion;
pub mod clock;
pub mod delegation;
pub mod dpop;
pub mod ids;
pub mod jcs;
pub mod json;
pub mod jsonrpc;
pub mod jws;
pub mod keyfile;
pub mod keys;
pub mod pem;
pub mod proof;
pub mod replay;
pub mod request_proof;
pub mod revocation;
pub mod secret;
pub mod token;
pub mod validate;
pub mod verifier;

/// An error and its causes, outermost first, each cause once: transport errors are only
/// useful with their root cause (connection refused, unknown certificate issuer, …).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Every error of the toolkit, for callers that want one type to propagate with `?`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key could not be created, parsed or encoded.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// A JWK set could not be loaded.
    #[error(transparent)]
    JwkSet(#[from] keys::JwkSetError),
    /// A signer failed.
    #[error(transparent)]
    Sign(#[from] keys::SignError),
    /// A key file could not be read or written.
    #[error(transparent)]
    KeyFile(#[from] keyfile::KeyFileError),
    /// JSON could not be canonicalized.
    #[error(transparent)]
    Canonical(#[from] jcs::CanonicalError),
    /// An AAT could not be issued.
    #[error(transparent)]
    Encode(#[from] token::EncodeError),
    /// A call was refused (AAT, proof, capability or delegation).
    #[error(transparent)]
    Call(#[from] jsonrpc::CallError),
    /// A proof could not be made.
    #[error(transparent)]
    ProofCreate(#[from] proof::ProofCreateError),
    /// A signed challenge was refused.
    #[error(transparent)]
    Challenge(#[from] challenge::ChallengeProofError),
    /// An AID attestation failed.
    #[error(transparent)]
    Attestation(#[from] aid::AttestationError),
    /// A signed revocation list failed.
    #[error(transparent)]
    SignedList(#[from] revocation::SignedListError),
}

impl From<token::AatError> for Error {
    fn from(e: token::AatError) -> Self {
        Self::Call(e.into())
    }
}

impl From<proof::ProofError> for Error {
    fn from(e: proof::ProofError) -> Self {
        Self::Call(e.into())
    }
}
