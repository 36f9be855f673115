//! Policy signing keys and the HTTP API token, on disk.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::policy;

/// Reads an Ed25519 public key: SPKI PEM, a JWK (`{"kty":"OKP","crv":"Ed25519","x":…}`), or the
/// 32 raw bytes in base64 / base64url.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(text).map_err(|e| format!("not an Ed25519 public key PEM: {e}"));
    }
    let raw = if text.starts_with('{') {
        let jwk: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not a JWK: {e}"))?;
        if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" {
            return Err("the JWK is not an Ed25519 (OKP) key".into());
        }
        jwk["x"].as_str().ok_or("the JWK has no x")?.to_owned()
    } else {
        text.to_owned()
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(&raw))
        .map_err(|_| "expected a PEM public key, a JWK or base64 key bytes".to_owned())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an Ed25519 public key is 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("invalid Ed25519 public key: {e}"))
}

/// Creates a signing key at `path` (PKCS#8 PEM, mode 0600, never overwritten) and returns the
/// public key as SPKI PEM.
pub fn generate_signing_key(path: &Path) -> Result<String, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| e.to_string())?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| e.to_string())?;
    file.write_all(pem.as_bytes()).map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())?;
    key.verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| e.to_string())
}

/// The `metadata.signature` value for the policy file `policy_file`, signed with the PKCS#8 key
/// at `key_file`.
pub fn sign_policy(key_file: &Path, policy_file: &Path) -> Result<String, String> {
    let pem = std::fs::read_to_string(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let key =
        SigningKey::from_pkcs8_pem(&pem).map_err(|_| format!("{}: not an Ed25519 private key", key_file.display()))?;
    let text = std::fs::read_to_string(policy_file).map_err(|e| format!("{}: {e}", policy_file.display()))?;
    let canonical = policy::canonical_bytes(&text).map_err(|e| format!("{}: {e}", policy_file.display()))?;
    let signature = key.sign(&canonical);
    Ok(format!(
        "ed25519:{}",
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    ))
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The HTTP API token: `AIP_PROXY_TOKEN`, else the content of `path`, which is created with a
/// fresh random token (mode 0600) when it does not exist. Strength is checked by
/// `server::AdminToken::from_secret`.
pub fn api_token(path: Option<&Path>) -> io::Result<String> {
    if let Ok(token) = std::env::var("AIP_PROXY_TOKEN") {
        return Ok(token);
    }
    let Some(path) = path else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--listen needs a token: set AIP_PROXY_TOKEN or pass --token-file FILE",
        ));
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text.trim().to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    let token = hex::encode(bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok(token)
}
