//! Signing keys and compact JWTs the OpenID Connect and ID-JAG tests make, with jsonwebtoken
//! (the crate's JOSE library) so the tokens do not come from the code under test.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

/// A signing key made for a test, and its public JWK (with `kid`).
pub(crate) struct TestKey {
    pub(crate) alg: Algorithm,
    pub(crate) kid: String,
    pub(crate) encoding: EncodingKey,
    pub(crate) jwk: Value,
}

/// A fresh key from the AAT toolkit (ES256 or EdDSA), exported as PKCS#8 and JWK.
pub(crate) fn aat_key(alg: aip_aat::keys::Algorithm, kid: &str) -> TestKey {
    let pair = aip_aat::keys::KeyPair::generate(alg).unwrap();
    let der = pair.to_pkcs8_der().unwrap();
    let (alg, encoding) = match alg {
        aip_aat::keys::Algorithm::ES256 => (Algorithm::ES256, EncodingKey::from_ec_der(&der)),
        aip_aat::keys::Algorithm::EdDSA => (Algorithm::EdDSA, EncodingKey::from_ed_der(&der)),
    };
    let mut jwk = serde_json::to_value(pair.public_key().to_jwk()).unwrap();
    jwk["kid"] = json!(kid);
    TestKey {
        alg,
        kid: kid.into(),
        encoding,
        jwk,
    }
}

/// A JWKS of `keys`.
pub(crate) fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

/// Base64url of the JSON of `value`.
pub(crate) fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// Signs `claims` under `header` as it stands (so tests can add `crit`, drop `kid`, …).
pub(crate) fn sign_with_header(header: &Value, claims: &Value, key: &TestKey) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, key.alg).unwrap();
    format!("{message}.{signature}")
}
