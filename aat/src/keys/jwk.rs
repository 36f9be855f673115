//! JSON Web Keys (RFC 7517) for the two supported key types, as they appear on the wire.

use serde::{Deserialize, Deserializer, Serialize};

use super::algorithm::Algorithm;
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
    /// What the key is for in an AIP authority's JWKS ([`ISSUER_ROLE`], [`REGISTRY_ROLE`]):
    /// only issuer keys may root delegable AATs. Absent elsewhere.
    #[serde(default, rename = "aip_role", skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Set when the JWK carried a private part (`d`); never serialized.
    #[serde(default, rename = "d", skip_serializing, deserialize_with = "present")]
    has_private_part: bool,
}

/// `aip_role` of the keys that sign AATs (and root delegable AATs).
pub const ISSUER_ROLE: &str = "issuer";
/// `aip_role` of the registry's key (certificates, revocation lists).
pub const REGISTRY_ROLE: &str = "registry";

/// The members [`Jwk`] reads (`d` only to refuse it; `aip_role` is the authority's to set, not
/// a client's: not among them).
const MEMBERS: &[&str] = &["kty", "crv", "x", "y", "kid", "use", "alg", "d"];

/// `deserialize_with` for a JWK in a request: a JSON object with the members [`Jwk`] reads and
/// no other. A key a client registers is stored as it is read, so a member the registry would
/// drop (`key_ops`, `x5c`, …) is refused rather than silently lost.
pub fn strict_jwk<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Jwk, D::Error> {
    use serde::de::Error as _;
    let members: serde_json::Map<String, serde_json::Value> = crate::json::object(deserializer)?;
    if let Some(unknown) = members.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
        return Err(D::Error::unknown_field(unknown, MEMBERS));
    }
    serde_json::from_value(serde_json::Value::Object(members)).map_err(D::Error::custom)
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
            role: None,
            has_private_part: false,
        }
    }

    /// This JWK with `aip_role` set to `role`.
    #[must_use]
    pub fn with_role(mut self, role: &str) -> Self {
        self.role = Some(role.to_owned());
        self
    }

    /// `true` when the JWK carried private key material.
    pub fn has_private_part(&self) -> bool {
        self.has_private_part
    }
}
