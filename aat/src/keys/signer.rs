//! What signs ([`Signer`]) and what finds verification keys ([`KeyResolver`]).

use super::algorithm::{Algorithm, SignError};
use super::public::PublicKey;
use crate::ids::KeyId;

/// Everything that signs in this toolkit (AATs, proofs, attestations, revocation lists) goes
/// through this trait, so an in-memory [`KeyPair`] can be replaced by a KMS or HSM key.
pub trait Signer: Send + Sync {
    /// The public half, published as a JWK.
    fn public_key(&self) -> &PublicKey;

    /// The algorithm of the key.
    fn algorithm(&self) -> Algorithm {
        self.public_key().algorithm()
    }

    /// The `kid` written into JWS headers; the RFC 7638 thumbprint unless overridden.
    fn key_id(&self) -> &KeyId {
        self.public_key().thumbprint()
    }

    /// Signs `message`, returning the JWS signature bytes (64 bytes for both algorithms:
    /// Ed25519's signature, or ES256's fixed-width `r || s`).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// Resolves issuer signing keys by `kid` (e.g. from a JWKS). Implementations must be cheap:
/// validation calls this for every token it has not seen before.
pub trait KeyResolver: Send + Sync {
    /// The key `issuer` signs with under `kid`, if known.
    fn resolve(&self, issuer: &str, kid: &KeyId) -> Option<PublicKey>;

    /// The issuer signing key whose delegable AATs carry `root_key_id`
    /// ([`crate::delegation::root_key_id`] of its `kid`), if this resolver knows one: only keys
    /// published as issuer keys (`"aip_role": "issuer"`). None by default.
    fn delegation_root(&self, _root_key_id: u32) -> Option<PublicKey> {
        None
    }
}

impl KeyResolver for PublicKey {
    /// A single key answers for its own thumbprint.
    fn resolve(&self, _issuer: &str, kid: &KeyId) -> Option<PublicKey> {
        (self.thumbprint() == kid).then(|| self.clone())
    }
}
