//! Key sets: the JWK Set document ([`Jwks`]) and a parsed set indexed by `kid` ([`JwkSet`],
//! [`IssuerKeys`]), which resolve keys for verification.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::algorithm::KeyError;
use super::jwk::Jwk;
use super::public::PublicKey;
use super::signer::KeyResolver;
use crate::ids::KeyId;

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
    /// The keys published as issuer keys, by the root key id of their `kid`.
    roots: Vec<(u32, PublicKey)>,
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

/// The biscuit root key id naming the issuer key `kid` in delegable AATs: the first four bytes
/// of SHA-256(`kid`), big-endian. Verifiers find the issuer key by it.
pub fn root_key_id(kid: &KeyId) -> u32 {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::digest(kid.as_str().as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
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
            let key = PublicKey::from_jwk(jwk).map_err(|error| JwkSetError::Key { index, error })?;
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
            if jwk.role.as_deref() == Some(super::ISSUER_ROLE) {
                set.roots.push((root_key_id(&kid), key.clone()));
            }
            set.keys.insert(kid, key);
        }
        Ok(set)
    }

    /// A set of exactly these keys, each under its thumbprint.
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a PublicKey>) -> Self {
        let keys = keys.into_iter().map(|k| (k.thumbprint().clone(), k.clone())).collect();
        Self {
            keys,
            roots: Vec::new(),
            skipped: 0,
        }
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

    fn delegation_root(&self, root_key_id: u32) -> Option<PublicKey> {
        self.roots
            .iter()
            .find(|(id, _)| *id == root_key_id)
            .map(|(_, key)| key.clone())
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
