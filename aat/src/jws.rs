//! Compact JWS (RFC 7515 §7.1) with the strict rules every token type here shares.
//!
//! Signing goes through a [`Signer`], so any key backend works. Parsing never trusts the
//! header's `alg`: callers compare it against their own allowlist and the key's algorithm.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::b64;
use crate::keys::{Jwk, SignError, Signer};

/// Longest compact JWS accepted anywhere (AATs, proofs, revocation lists are parsed with
/// their own, smaller limits).
pub const MAX_COMPACT_LEN: usize = 1 << 20;

/// The three segments of a compact JWS, borrowed from the input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Compact<'a> {
    /// `BASE64URL(header) '.' BASE64URL(payload)`: the bytes the signature covers.
    pub(crate) signing_input: &'a str,
    pub(crate) header: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) signature: &'a str,
}

/// Why a compact JWS could not be split and decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShapeError {
    TooLong,
    NotThreeSegments,
    NotBase64,
    NotJsonObject,
    CriticalHeader,
}

impl ShapeError {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::TooLong => "token is too long",
            Self::NotThreeSegments => "not a compact JWS (three base64url segments)",
            Self::NotBase64 => "a segment is not unpadded base64url",
            Self::NotJsonObject => "header or payload is not a JSON object",
            Self::CriticalHeader => "header has `crit` extensions, none of which are supported",
        }
    }
}

impl<'a> Compact<'a> {
    pub(crate) fn split(token: &'a str, max_len: usize) -> Result<Self, ShapeError> {
        if token.len() > max_len {
            return Err(ShapeError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ShapeError::NotThreeSegments);
        };
        let signing_input = &token[..header.len() + 1 + payload.len()];
        Ok(Self {
            signing_input,
            header,
            payload,
            signature,
        })
    }

    /// The decoded signature; the empty signature of `alg: none` tokens decodes to nothing.
    pub(crate) fn signature_bytes(&self) -> Result<Vec<u8>, ShapeError> {
        b64::decode(self.signature).ok_or(ShapeError::NotBase64)
    }

    pub(crate) fn header_json<T: for<'de> Deserialize<'de>>(&self) -> Result<T, ShapeError> {
        decode_json(self.header)
    }

    pub(crate) fn payload_bytes(&self) -> Result<Vec<u8>, ShapeError> {
        b64::decode(self.payload).ok_or(ShapeError::NotBase64)
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(segment: &str) -> Result<T, ShapeError> {
    let bytes = b64::decode(segment).ok_or(ShapeError::NotBase64)?;
    crate::json::from_slice(&bytes).map_err(|_| ShapeError::NotJsonObject)
}

/// The header members this toolkit reads. Everything else is ignored, except `crit`, whose
/// presence fails the token (RFC 7515 §4.1.11: unknown critical extensions must be refused).
#[derive(Deserialize)]
pub(crate) struct Header {
    pub(crate) alg: String,
    #[serde(default)]
    pub(crate) typ: Option<String>,
    #[serde(default)]
    pub(crate) kid: Option<String>,
    #[serde(default, deserialize_with = "crate::json::option_object")]
    pub(crate) jwk: Option<Jwk>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

impl Header {
    pub(crate) fn parse(compact: &Compact<'_>) -> Result<Self, ShapeError> {
        let header: Self = compact.header_json()?;
        if header.crit.is_some() {
            return Err(ShapeError::CriticalHeader);
        }
        Ok(header)
    }

    /// RFC 7515 §4.1.9: `typ` is a media type, compared case-insensitively, and the
    /// `application/` prefix may be omitted.
    pub(crate) fn typ_is(&self, expected: &str) -> bool {
        let Some(typ) = self.typ.as_deref() else { return false };
        let typ = match typ.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
            _ => typ,
        };
        typ.eq_ignore_ascii_case(expected)
    }
}

/// Signs `payload` as a compact JWS with header `{"alg", "typ", "kid"}` (plus `jwk` when
/// `embed_key` is set, as proofs of possession require). `alg` and `kid` come from the signer.
///
/// This is the low-level primitive beneath [`crate::token::encode_aat`] and the other typed
/// encoders; it checks nothing about the payload.
pub fn sign(typ: &str, payload: &[u8], signer: &dyn Signer, embed_key: bool) -> Result<String, SignError> {
    let mut header = serde_json::Map::new();
    header.insert("alg".into(), signer.algorithm().as_str().into());
    header.insert("typ".into(), typ.into());
    if embed_key {
        let mut jwk = signer.public_key().to_jwk();
        // The proof's key is identified by value; a kid inside the jwk would be redundant.
        jwk.kid = None;
        header.insert("jwk".into(), serde_json::to_value(jwk).map_err(SignError::backend)?);
    } else {
        header.insert("kid".into(), signer.key_id().as_str().into());
    }
    let header = serde_json::to_vec(&header).map_err(SignError::backend)?;
    sign_raw(&header, payload, signer)
}

/// Signs `payload` under an exact, caller-built header (for tests and interop tooling that
/// need headers this toolkit would never write).
pub fn sign_raw(header_json: &[u8], payload: &[u8], signer: &dyn Signer) -> Result<String, SignError> {
    let mut out = String::with_capacity((header_json.len() + payload.len()) * 4 / 3 + 96);
    b64::encode_into(header_json, &mut out);
    out.push('.');
    b64::encode_into(payload, &mut out);
    let signature = signer.sign(out.as_bytes())?;
    out.push('.');
    b64::encode_into(signature, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_requires_exactly_three_segments() {
        assert!(Compact::split("a.b.c", 100).is_ok());
        assert_eq!(Compact::split("a.b", 100).unwrap_err(), ShapeError::NotThreeSegments);
        assert_eq!(
            Compact::split("a.b.c.d", 100).unwrap_err(),
            ShapeError::NotThreeSegments
        );
        assert_eq!(Compact::split("a.b.c", 4).unwrap_err(), ShapeError::TooLong);
        assert_eq!(Compact::split("hdr.pay.sig", 100).unwrap().signing_input, "hdr.pay");
    }

    #[test]
    fn typ_comparison_follows_rfc7515() {
        let h = |typ: &str| Header {
            alg: "EdDSA".into(),
            typ: Some(typ.into()),
            kid: None,
            jwk: None,
            crit: None,
        };
        assert!(h("aat+jwt").typ_is("aat+jwt"));
        assert!(h("AAT+JWT").typ_is("aat+jwt"));
        assert!(h("application/aat+jwt").typ_is("aat+jwt"));
        assert!(!h("JWT").typ_is("aat+jwt"));
        assert!(!h("aat+jwt ").typ_is("aat+jwt"));
    }
}
