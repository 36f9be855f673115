//! [`PublicKey`]: a verification key with its RFC 7638 thumbprint; JWK and SPKI in and out.

use std::fmt;
use std::sync::Arc;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};
use sha2::{Digest, Sha256};

use super::algorithm::{Algorithm, KeyError, SignatureError};
use super::ed25519;
use super::jwk::Jwk;
use crate::b64;
use crate::ids::KeyId;

/// OID of Ed25519 keys (RFC 8410).
pub(super) const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// OID of elliptic-curve public keys (RFC 5480); the curve is in the parameters.
pub(super) const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

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
    pub(super) fn from_ed25519(key: ed25519_dalek::VerifyingKey) -> Result<Self, KeyError> {
        if key.is_weak() {
            return Err(KeyError::InvalidKey("Ed25519 key is of small order"));
        }
        Ok(Self::from_ed25519_unchecked(key))
    }

    /// For keys derived from a secret: `[s]B` with a clamped scalar is never of small order.
    pub(super) fn from_ed25519_unchecked(key: ed25519_dalek::VerifyingKey) -> Self {
        let x = b64::encode(key.as_bytes());
        let thumbprint = thumbprint_of(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#));
        Self(Arc::new(PublicInner {
            kind: PublicKind::Ed25519(Box::new(ed25519::Ed25519Key::new(key))),
            thumbprint,
            x,
            y: None,
        }))
    }

    pub(super) fn from_p256(key: &p256::ecdsa::VerifyingKey) -> Result<Self, KeyError> {
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
        parse(jwk)
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

    /// A key from its raw form: 32 bytes for Ed25519, a SEC1 point (compressed or not) for
    /// P-256.
    pub(crate) fn from_raw(alg: Algorithm, bytes: &[u8]) -> Result<Self, KeyError> {
        match alg {
            Algorithm::EdDSA => {
                let bytes: &[u8; 32] = bytes
                    .try_into()
                    .map_err(|_| KeyError::InvalidKey("an Ed25519 key is 32 bytes"))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
                    .map_err(|_| KeyError::InvalidKey("not an Ed25519 point"))?;
                Self::from_ed25519(key)
            }
            Algorithm::ES256 => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                    .map_err(|_| KeyError::InvalidKey("not a P-256 point"))?;
                Self::from_p256(&key)
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

/// Builds a [`PublicKey`] from a JWK, checking every member it relies on.
fn parse(jwk: &Jwk) -> Result<PublicKey, KeyError> {
    if jwk.has_private_part() {
        return Err(KeyError::PrivateKeyInJwk);
    }
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err(KeyError::InvalidJwk("`use` must be `sig`"));
    }
    let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("OKP", Some("Ed25519")) => {
            if jwk.y.is_some() {
                return Err(KeyError::InvalidJwk("OKP key must not have `y`"));
            }
            let x = jwk
                .x
                .as_deref()
                .and_then(b64::decode_array::<32>)
                .ok_or(KeyError::InvalidJwk("`x` must be 32 bytes of unpadded base64url"))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
                .map_err(|_| KeyError::InvalidKey("`x` is not an Ed25519 point"))?;
            PublicKey::from_ed25519(key)?
        }
        ("EC", Some("P-256")) => {
            let coordinate = |c: Option<&str>| {
                c.and_then(b64::decode_array::<32>).ok_or(KeyError::InvalidJwk(
                    "`x` and `y` must be 32 bytes of unpadded base64url",
                ))
            };
            let (x, y) = (coordinate(jwk.x.as_deref())?, coordinate(jwk.y.as_deref())?);
            let point = p256::Sec1Point::from_affine_coordinates(&x.into(), &y.into(), false);
            let key = p256::ecdsa::VerifyingKey::from_sec1_point(&point)
                .map_err(|_| KeyError::InvalidKey("`x`,`y` is not a P-256 point"))?;
            PublicKey::from_p256(&key)?
        }
        _ => return Err(KeyError::UnsupportedKeyType),
    };
    if let Some(alg) = jwk.alg.as_deref()
        && Algorithm::from_name(alg) != Some(key.algorithm())
    {
        return Err(KeyError::InvalidJwk("`alg` does not match the key type"));
    }
    Ok(key)
}
