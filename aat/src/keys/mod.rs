//! Signing keys: Ed25519 (EdDSA, the default) and P-256 (ES256).
//!
//! * [`PublicKey`] — verification key with its RFC 7638 thumbprint; JWK and SPKI in and out.
//! * [`KeyPair`] — an in-memory secret key, zeroized on drop; PKCS#8 in and out.
//! * [`Signer`] — what every signing operation in the toolkit goes through, so a KMS or HSM
//!   can stand in for [`KeyPair`].
//!
//! Ed25519 signatures are checked with `verify_strict`'s rule (small-order keys and points and
//! non-canonical signatures refused), computed on curve25519-dalek with one field inversion
//! fewer and, for keys in repeated use, precomputed tables (`ed25519.rs`); ES256 signatures with aws-lc-rs through
//! `jsonwebtoken`'s crypto layer, several times faster than a pure-Rust P-256 verify.

mod algorithm;
mod ed25519;
mod jwk;
mod pair;
mod public;
mod set;
mod signer;

pub use algorithm::{Algorithm, KeyError, SignError, SignatureError, x509_signature};
pub use jwk::{ISSUER_ROLE, Jwk, REGISTRY_ROLE, strict_jwk};
pub use pair::KeyPair;
pub use public::PublicKey;
pub use set::{IssuerKeys, JwkSet, JwkSetError, Jwks, root_key_id};
pub use signer::{KeyResolver, Signer};
