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

mod ed25519;
mod jwk;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, PrivateKeyInfoRef};
use p256::ecdsa::signature::Signer as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use jwk::{IssuerKeys, Jwk, JwkSet, JwkSetError, Jwks};

use crate::b64;
use crate::ids::KeyId;

/// OID of Ed25519 keys (RFC 8410).
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// OID of elliptic-curve public keys (RFC 5480); the curve is in the parameters.
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

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

/// Resolves issuer signing keys by `kid` (e.g. from a JWKS). Implementations must be cheap:
/// validation calls this for every token it has not seen before.
pub trait KeyResolver: Send + Sync {
    /// The key `issuer` signs with under `kid`, if known.
    fn resolve(&self, issuer: &str, kid: &KeyId) -> Option<PublicKey>;
}

impl KeyResolver for PublicKey {
    /// A single key answers for its own thumbprint.
    fn resolve(&self, _issuer: &str, kid: &KeyId) -> Option<PublicKey> {
        (self.thumbprint() == kid).then(|| self.clone())
    }
}

/// A verification key. Cheap to clone.
#[derive(Clone)]
pub struct PublicKey(Arc<PublicInner>);

struct PublicInner {
    kind: PublicKind,
    thumbprint: KeyId,
    /// Base64url `x` (and `y` for EC) exactly as they appear in the canonical JWK.
    x: String,
    y: Option<String>,
}

enum PublicKind {
    Ed25519(Box<ed25519::Ed25519Key>),
    P256(jsonwebtoken::DecodingKey),
}

impl PublicKey {
    fn from_ed25519(key: ed25519_dalek::VerifyingKey) -> Result<Self, KeyError> {
        if key.is_weak() {
            return Err(KeyError::InvalidKey("Ed25519 key is of small order"));
        }
        Ok(Self::from_ed25519_unchecked(key))
    }

    /// For keys derived from a secret: `[s]B` with a clamped scalar is never of small order.
    fn from_ed25519_unchecked(key: ed25519_dalek::VerifyingKey) -> Self {
        let x = b64::encode(key.as_bytes());
        let thumbprint = thumbprint_of(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#));
        Self(Arc::new(PublicInner {
            kind: PublicKind::Ed25519(Box::new(ed25519::Ed25519Key::new(key))),
            thumbprint,
            x,
            y: None,
        }))
    }

    fn from_p256(key: &p256::ecdsa::VerifyingKey) -> Result<Self, KeyError> {
        let point = key.to_sec1_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            return Err(KeyError::InvalidKey("P-256 point at infinity"));
        };
        let (x, y) = (b64::encode(x), b64::encode(y));
        let decoding = jsonwebtoken::DecodingKey::from_ec_components(&x, &y)
            .map_err(|_| KeyError::InvalidKey("P-256 point rejected"))?;
        let thumbprint = thumbprint_of(&format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#));
        Ok(Self(Arc::new(PublicInner {
            kind: PublicKind::P256(decoding),
            thumbprint,
            x,
            y: Some(y),
        })))
    }

    /// The algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        match self.0.kind {
            PublicKind::Ed25519(_) => Algorithm::EdDSA,
            PublicKind::P256(_) => Algorithm::ES256,
        }
    }

    /// RFC 7638 JWK thumbprint (base64url SHA-256), used as the key id.
    pub fn thumbprint(&self) -> &KeyId {
        &self.0.thumbprint
    }

    /// The public JWK, with `kid` = thumbprint, `use` = `sig` and `alg`.
    pub fn to_jwk(&self) -> Jwk {
        let (kty, crv) = match self.0.kind {
            PublicKind::Ed25519(_) => ("OKP", "Ed25519"),
            PublicKind::P256(_) => ("EC", "P-256"),
        };
        Jwk::public(
            kty,
            crv,
            &self.0.x,
            self.0.y.as_deref(),
            self.thumbprint(),
            self.algorithm(),
        )
    }

    /// Parses a public JWK (OKP/Ed25519 or EC/P-256). Private JWKs are refused; a JWK `alg`,
    /// when present, must be the key's algorithm; `use`, when present, must be `sig`.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        jwk::parse(jwk)
    }

    /// `true` when the JWK's coordinates are exactly this key's (no parsing, no hashing).
    pub(crate) fn same_coordinates(&self, x: Option<&str>, y: Option<&str>) -> bool {
        x == Some(self.0.x.as_str()) && y == self.0.y.as_deref()
    }

    /// The raw public key: 32 bytes for Ed25519, the 65-byte uncompressed SEC1 point for
    /// P-256 (the `subjectPublicKey` of an X.509 SubjectPublicKeyInfo).
    pub fn to_raw_bytes(&self) -> Vec<u8> {
        let x = b64::decode(&self.0.x).unwrap_or_default();
        match &self.0.y {
            None => x,
            Some(y) => {
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&b64::decode(y).unwrap_or_default());
                point
            }
        }
    }

    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_public_key_der(der: &[u8]) -> Result<Self, KeyError> {
        let spki = SubjectPublicKeyInfoRef::try_from(der).map_err(|_| KeyError::Encoding("SPKI DER"))?;
        match spki.algorithm.oid {
            OID_ED25519 => Self::from_ed25519(
                ed25519_dalek::VerifyingKey::from_public_key_der(der)
                    .map_err(|_| KeyError::InvalidKey("not a valid Ed25519 public key"))?,
            ),
            OID_EC_PUBLIC_KEY => Self::from_p256(
                &p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(|_| KeyError::UnsupportedKeyType)?,
            ),
            _ => Err(KeyError::UnsupportedKeyType),
        }
    }

    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub fn from_public_key_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, der) =
            ed25519_dalek::pkcs8::spki::der::pem::decode_vec(pem.as_bytes()).map_err(|_| KeyError::Encoding("PEM"))?;
        if label != "PUBLIC KEY" {
            return Err(KeyError::Encoding("PEM: expected a PUBLIC KEY block"));
        }
        Self::from_public_key_der(&der)
    }

    /// DER SubjectPublicKeyInfo.
    pub fn to_public_key_der(&self) -> Result<Vec<u8>, KeyError> {
        let doc = match &self.0.kind {
            PublicKind::Ed25519(k) => k.verifying_key().to_public_key_der(),
            PublicKind::P256(_) => self.p256_key()?.to_public_key_der(),
        };
        doc.map(|d| d.into_vec()).map_err(|_| KeyError::Encoding("SPKI DER"))
    }

    /// PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub fn to_public_key_pem(&self) -> Result<String, KeyError> {
        let pem = match &self.0.kind {
            PublicKind::Ed25519(k) => k.verifying_key().to_public_key_pem(LineEnding::LF),
            PublicKind::P256(_) => self.p256_key()?.to_public_key_pem(LineEnding::LF),
        };
        pem.map_err(|_| KeyError::Encoding("PEM"))
    }

    fn p256_key(&self) -> Result<p256::ecdsa::VerifyingKey, KeyError> {
        let (Some(x), Some(y)) = (
            b64::decode_array::<32>(&self.0.x),
            self.0.y.as_deref().and_then(b64::decode_array::<32>),
        ) else {
            return Err(KeyError::InvalidKey("P-256 coordinates"));
        };
        let point = p256::Sec1Point::from_affine_coordinates(&x.into(), &y.into(), false);
        p256::ecdsa::VerifyingKey::from_sec1_point(&point).map_err(|_| KeyError::InvalidKey("P-256 point"))
    }

    /// Verifies a JWS-format signature (64 bytes) over `message` with algorithm `alg`.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        if alg != self.algorithm() {
            return Err(SignatureError::AlgorithmMismatch(alg));
        }
        match &self.0.kind {
            PublicKind::Ed25519(key) => key.verify(message, signature),
            PublicKind::P256(key) => {
                if signature.len() != 64 {
                    return Err(SignatureError::Invalid);
                }
                match jsonwebtoken::crypto::verify(
                    &b64::encode(signature),
                    message,
                    key,
                    jsonwebtoken::Algorithm::ES256,
                ) {
                    Ok(true) => Ok(()),
                    _ => Err(SignatureError::Invalid),
                }
            }
        }
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.thumbprint == other.0.thumbprint
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("alg", &self.algorithm())
            .field("kid", &self.0.thumbprint.as_str())
            .finish()
    }
}

/// Base64url SHA-256 of the RFC 7638 canonical member string.
fn thumbprint_of(canonical_members: &str) -> KeyId {
    // 43 base64url characters: always a valid key id.
    KeyId::new_unchecked(b64::encode(Sha256::digest(canonical_members.as_bytes())))
}

/// An in-memory secret key and its public half. The secret is zeroized on drop and never
/// appears in `Debug` output, which shows the algorithm and key id only.
pub struct KeyPair {
    secret: Secret,
    public: PublicKey,
}

enum Secret {
    // Both types zeroize themselves on drop.
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

impl KeyPair {
    /// Generates a fresh key from the operating system's CSPRNG.
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        loop {
            getrandom::fill(seed.as_mut()).map_err(|_| KeyError::Random)?;
            match alg {
                Algorithm::EdDSA => return Ok(Self::ed25519_from_seed(&seed)),
                // A random 32-byte string is a valid P-256 scalar except with probability
                // about 2^-32; draw again in that case.
                Algorithm::ES256 => match Self::p256_from_scalar(&seed) {
                    Ok(key) => return Ok(key),
                    Err(KeyError::InvalidKey(_)) => continue,
                    Err(e) => return Err(e),
                },
            }
        }
    }

    /// An Ed25519 key from its 32-byte seed (deterministic; for tests and derivations).
    pub fn ed25519_from_seed(seed: &[u8; 32]) -> Self {
        let secret = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = PublicKey::from_ed25519_unchecked(secret.verifying_key());
        Self {
            secret: Secret::Ed25519(secret),
            public,
        }
    }

    /// A P-256 key from its 32-byte big-endian scalar.
    pub fn p256_from_scalar(scalar: &[u8; 32]) -> Result<Self, KeyError> {
        let secret = p256::ecdsa::SigningKey::from_slice(scalar)
            .map_err(|_| KeyError::InvalidKey("scalar is zero or not below the P-256 group order"))?;
        let public = PublicKey::from_p256(secret.verifying_key())?;
        Ok(Self {
            secret: Secret::P256(secret),
            public,
        })
    }

    /// Parses an unencrypted PKCS#8 private key (DER).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = PrivateKeyInfoRef::try_from(der).map_err(|_| KeyError::Encoding("PKCS#8 DER"))?;
        match info.algorithm.oid {
            OID_ED25519 => {
                let secret = ed25519_dalek::SigningKey::from_pkcs8_der(der)
                    .map_err(|_| KeyError::InvalidKey("not a valid Ed25519 private key"))?;
                let public = PublicKey::from_ed25519_unchecked(secret.verifying_key());
                Ok(Self {
                    secret: Secret::Ed25519(secret),
                    public,
                })
            }
            OID_EC_PUBLIC_KEY => {
                let secret = p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| KeyError::UnsupportedKeyType)?;
                let public = PublicKey::from_p256(secret.verifying_key())?;
                Ok(Self {
                    secret: Secret::P256(secret),
                    public,
                })
            }
            _ => Err(KeyError::UnsupportedKeyType),
        }
    }

    /// Parses an unencrypted PEM `PRIVATE KEY` (PKCS#8).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, der) =
            ed25519_dalek::pkcs8::spki::der::pem::decode_vec(pem.as_bytes()).map_err(|_| KeyError::Encoding("PEM"))?;
        let der = Zeroizing::new(der);
        if label != "PRIVATE KEY" {
            return Err(KeyError::Encoding("PEM: expected a PRIVATE KEY block"));
        }
        Self::from_pkcs8_der(&der)
    }

    /// Unencrypted PKCS#8 DER; zeroized when dropped.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let doc = match &self.secret {
            Secret::Ed25519(k) => k.to_pkcs8_der(),
            Secret::P256(k) => k.to_pkcs8_der(),
        };
        doc.map(|d| Zeroizing::new(d.as_bytes().to_vec()))
            .map_err(|_| KeyError::Encoding("PKCS#8 DER"))
    }

    /// Unencrypted PEM `PRIVATE KEY`; zeroized when dropped.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        match &self.secret {
            Secret::Ed25519(k) => k.to_pkcs8_pem(LineEnding::LF),
            Secret::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
        }
        .map_err(|_| KeyError::Encoding("PEM"))
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id (RFC 7638 thumbprint).
    pub fn key_id(&self) -> &KeyId {
        self.public.thumbprint()
    }

    /// The algorithm of the key.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }
}

impl Signer for KeyPair {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        Ok(match &self.secret {
            Secret::Ed25519(k) => ed25519_dalek::Signer::sign(k, message).to_bytes().to_vec(),
            Secret::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_bytes().to_vec()
            }
        })
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("alg", &self.algorithm())
            .field("kid", &self.key_id().as_str())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_and_x509_signatures() {
        let ed = KeyPair::generate(Algorithm::EdDSA).unwrap();
        assert_eq!(ed.public_key().to_raw_bytes().len(), 32);
        let ec = KeyPair::generate(Algorithm::ES256).unwrap();
        let raw = ec.public_key().to_raw_bytes();
        assert_eq!((raw.len(), raw[0]), (65, 0x04));
        // The SPKI DER ends with the raw key.
        assert!(ec.public_key().to_public_key_der().unwrap().ends_with(&raw));

        let sig = ec.sign(b"m").unwrap();
        let der = x509_signature(Algorithm::ES256, &sig).unwrap();
        assert_eq!(der[0], 0x30, "a DER SEQUENCE");
        let parsed = p256::ecdsa::Signature::from_der(&der).unwrap();
        assert_eq!(parsed.to_bytes().as_slice(), sig.as_slice());
        assert_eq!(x509_signature(Algorithm::EdDSA, &[1, 2]).unwrap(), vec![1, 2]);
        assert!(x509_signature(Algorithm::ES256, &[1, 2]).is_err());
    }
}
