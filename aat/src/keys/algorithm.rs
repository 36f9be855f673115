//! The two signature algorithms, and what can go wrong with keys, signatures and signers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A JWS signature algorithm this toolkit signs and verifies with.
///
/// Deliberately closed: symmetric algorithms (`HS*`) and `none` cannot be expressed, so no
/// configuration can ever allow them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037). The default.
    EdDSA,
    /// ECDSA with P-256 and SHA-256 (RFC 7518 §3.4).
    ES256,
}

impl Algorithm {
    /// The JWA name (`"EdDSA"`, `"ES256"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }

    /// Parses a JWA name, case-sensitively as RFC 7515 requires.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            _ => None,
        }
    }

    /// [`Self::from_name`], also taking `Ed25519`, the fully specified name RFC 9864 gives
    /// EdDSA over Ed25519 (the only EdDSA curve here), which newer JOSE libraries write: for
    /// what clients sign themselves (client assertions, DPoP proofs). What this toolkit signs
    /// keeps `EdDSA`, which every verifier reads.
    pub fn from_client_name(name: &str) -> Option<Self> {
        match name {
            "Ed25519" => Some(Self::EdDSA),
            name => Self::from_name(name),
        }
    }

    /// The names [`Self::from_client_name`] takes, for metadata documents.
    pub const CLIENT_NAMES: [&'static str; 3] = ["EdDSA", "Ed25519", "ES256"];
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;
    /// Accepts the JWA names and the key-type names `ed25519` / `p256` used on command lines.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "EdDSA" | "ed25519" | "Ed25519" => Ok(Self::EdDSA),
            "ES256" | "p256" | "P-256" => Ok(Self::ES256),
            _ => Err(KeyError::UnsupportedAlgorithm),
        }
    }
}

/// A key could not be created, parsed or encoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The algorithm is not EdDSA or ES256.
    #[error("unsupported algorithm: expected EdDSA (ed25519) or ES256 (p256)")]
    UnsupportedAlgorithm,
    /// The key type or curve is not Ed25519 or P-256.
    #[error("unsupported key type: only OKP/Ed25519 and EC/P-256 keys are accepted")]
    UnsupportedKeyType,
    /// A JWK member is missing or malformed.
    #[error("invalid JWK: {0}")]
    InvalidJwk(&'static str),
    /// A private key was supplied where only a public key belongs.
    #[error("JWK contains private key material (`d`); publish only public keys")]
    PrivateKeyInJwk,
    /// The bytes are not a valid point / scalar for the curve.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// A DER or PEM document could not be parsed or produced.
    #[error("invalid {0} encoding")]
    Encoding(&'static str),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// A signature did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature algorithm does not belong to the key.
    #[error("algorithm {0} cannot be used with this key")]
    AlgorithmMismatch(Algorithm),
    /// The signature is not valid for the message and key.
    #[error("signature does not verify")]
    Invalid,
}

/// A [`Signer`] could not produce a signature.
#[derive(Debug, thiserror::Error)]
#[error("the signing key failed to sign")]
pub struct SignError {
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SignError {
    /// Wraps the error of a signing backend (KMS, HSM, …).
    pub fn backend(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            source: Some(source.into()),
        }
    }
}

/// Converts a JWS signature (Ed25519 bytes, or ES256's fixed-width `r || s`) into the form
/// X.509 certificates and CRLs carry: unchanged for Ed25519, a DER `Ecdsa-Sig-Value` for ES256.
pub fn x509_signature(alg: Algorithm, jws_signature: &[u8]) -> Result<Vec<u8>, KeyError> {
    match alg {
        Algorithm::EdDSA => Ok(jws_signature.to_vec()),
        Algorithm::ES256 => p256::ecdsa::Signature::from_slice(jws_signature)
            .map(|s| s.to_der().as_bytes().to_vec())
            .map_err(|_| KeyError::Encoding("ECDSA signature")),
    }
}
