//! JSON Web Keys (RFC 7517) for the two supported key types, and key sets.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::{Algorithm, KeyError, KeyResolver, PublicKey};
use crate::b64;
use crate::ids::KeyId;

/// A public JSON Web Key as it appears on the wire. Members this toolkit does not use
/// (`key_ops`, `x5c`, …) are ignored; a private key (`d`) is detected and refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Jwk {
    /// Key type: `OKP` or `EC`.
    pub kty: String,
    /// Curve: `Ed25519` or `P-256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// Base64url public key (OKP) or x coordinate (EC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Base64url y coordinate (EC only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended use; `sig` for every key here.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Algorithm the key is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Set when the JWK carried a private part (`d`); never serialized.
    #[serde(default, rename = "d", skip_serializing, deserialize_with = "present")]
    has_private_part: bool,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
}

impl Jwk {
    pub(super) fn public(kty: &str, crv: &str, x: &str, y: Option<&str>, kid: &KeyId, alg: Algorithm) -> Self {
        Self {
            kty: kty.to_owned(),
            crv: Some(crv.to_owned()),
            x: Some(x.to_owned()),
            y: y.map(str::to_owned),
            kid: Some(kid.as_str().to_owned()),
            use_: Some("sig".to_owned()),
            alg: Some(alg.as_str().to_owned()),
            has_private_part: false,
        }
    }

    /// `true` when the JWK carried private key material.
    pub fn has_private_part(&self) -> bool {
        self.has_private_part
    }
}

/// Builds a [`PublicKey`] from a JWK, checking every member it relies on.
pub(super) fn parse(jwk: &Jwk) -> Result<PublicKey, KeyError> {
    if jwk.has_private_part {
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

/// A JWK Set document (RFC 7517 §5): `{"keys":[…]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// A set publishing `keys` with their thumbprints as `kid`.
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a PublicKey>) -> Self {
        Self {
            keys: keys.into_iter().map(PublicKey::to_jwk).collect(),
        }
    }
}

/// A parsed JWK Set, indexed by `kid`, usable as a [`KeyResolver`] for any issuer.
///
/// Keys of types this toolkit does not verify (RSA, symmetric `oct`, other curves) and keys
/// not meant for signatures are skipped rather than failing the whole set, since issuers
/// often publish several kinds; malformed Ed25519/P-256 keys and duplicate `kid`s are errors.
/// A key without `kid` is indexed by its thumbprint.
#[derive(Clone, Debug, Default)]
pub struct JwkSet {
    keys: HashMap<KeyId, PublicKey>,
    skipped: usize,
}

/// A JWK Set could not be loaded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwkSetError {
    /// Key number `index` (from 0) is malformed.
    #[error("key {index} of the JWK set: {error}")]
    Key {
        /// Position in `keys`.
        index: usize,
        /// What is wrong with it.
        error: KeyError,
    },
    /// Two keys share a `kid`.
    #[error("key {index} of the JWK set repeats kid {kid:?}")]
    DuplicateKid {
        /// Position of the second key.
        index: usize,
        /// The repeated id.
        kid: String,
    },
}

impl JwkSet {
    /// Parses every supported key of `jwks`.
    pub fn from_jwks(jwks: &Jwks) -> Result<Self, JwkSetError> {
        let mut set = Self::default();
        for (index, jwk) in jwks.keys.iter().enumerate() {
            let supported = matches!(
                (jwk.kty.as_str(), jwk.crv.as_deref()),
                ("OKP", Some("Ed25519")) | ("EC", Some("P-256"))
            );
            if !supported || jwk.use_.as_deref().is_some_and(|u| u != "sig") {
                set.skipped += 1;
                continue;
            }
            let key = parse(jwk).map_err(|error| JwkSetError::Key { index, error })?;
            let kid = match jwk.kid.as_deref() {
                Some(kid) => kid.parse::<KeyId>().map_err(|_| JwkSetError::Key {
                    index,
                    error: KeyError::InvalidJwk("`kid` must be 1-256 visible ASCII characters"),
                })?,
                None => key.thumbprint().clone(),
            };
            if set.keys.contains_key(&kid) {
                return Err(JwkSetError::DuplicateKid { index, kid: kid.into() });
            }
            set.keys.insert(kid, key);
        }
        Ok(set)
    }

    /// A set of exactly these keys, each under its thumbprint.
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a PublicKey>) -> Self {
        let keys = keys.into_iter().map(|k| (k.thumbprint().clone(), k.clone())).collect();
        Self { keys, skipped: 0 }
    }

    /// The key published under `kid`.
    pub fn get(&self, kid: &KeyId) -> Option<&PublicKey> {
        self.keys.get(kid)
    }

    /// The usable keys.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.values()
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// `true` when no usable key was found.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of keys skipped because this toolkit cannot verify with them.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

impl KeyResolver for JwkSet {
    /// Answers for every issuer: use a `JwkSet` alone only when one issuer is trusted (or all
    /// trusted issuers share the set). With several issuers, use [`IssuerKeys`], or a token
    /// of one issuer could claim another's `iss`.
    fn resolve(&self, _issuer: &str, kid: &KeyId) -> Option<PublicKey> {
        self.keys.get(kid).cloned()
    }
}

/// Key sets per issuer: a token's `kid` is looked up only in the set of the issuer its `iss`
/// names, so trusting several issuers does not let one sign in another's name.
#[derive(Clone, Debug, Default)]
pub struct IssuerKeys {
    by_issuer: HashMap<String, JwkSet>,
}

impl IssuerKeys {
    /// No issuers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `keys` for tokens whose `iss` is `issuer` (replacing any previous set).
    pub fn insert(&mut self, issuer: impl Into<String>, keys: JwkSet) -> &mut Self {
        self.by_issuer.insert(issuer.into(), keys);
        self
    }

    /// The key set of `issuer`.
    pub fn get(&self, issuer: &str) -> Option<&JwkSet> {
        self.by_issuer.get(issuer)
    }
}

impl KeyResolver for IssuerKeys {
    fn resolve(&self, issuer: &str, kid: &KeyId) -> Option<PublicKey> {
        self.by_issuer.get(issuer)?.get(kid).cloned()
    }
}
