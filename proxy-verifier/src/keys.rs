//! Policy signing keys and the audit key on disk. Keys are the toolkit's
//! ([`aip_aat::keys`], [`aip_aat::keyfile`]); this module only reads and writes the forms
//! operators handle.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aip_aat::keyfile::{self, Passphrase};
use aip_aat::keys::{Algorithm, Jwk, KeyPair, PublicKey, Signer};
use base64::Engine as _;

use crate::policy;

/// Reads the Ed25519 public key that must have signed the policy: SPKI PEM, a JWK
/// (`{"kty":"OKP","crv":"Ed25519","x":…}`), or the 32 raw bytes in base64 / base64url.
pub fn read_policy_key(path: &Path) -> Result<PublicKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let text = text.trim();
    let key = if text.starts_with("-----BEGIN") {
        PublicKey::from_public_key_pem(text).map_err(|e| format!("not a public key PEM: {e}"))?
    } else {
        let jwk: Jwk = if text.starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("not a JWK: {e}"))?
        } else {
            // Raw key bytes: check the length here, since any 32 bytes are a valid encoding.
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
                .map_err(|_| "expected a PEM public key, a JWK or base64 key bytes".to_owned())?;
            if bytes.len() != 32 {
                return Err("an Ed25519 public key is 32 bytes".into());
            }
            let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            serde_json::from_value(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x}))
                .map_err(|e| e.to_string())?
        };
        PublicKey::from_jwk(&jwk).map_err(|e| format!("invalid public key: {e}"))?
    };
    if key.algorithm() != Algorithm::EdDSA {
        return Err("policy signatures are Ed25519 (spec 3.3.1): give an Ed25519 key".into());
    }
    Ok(key)
}

/// Creates a signing key at `path` (PKCS#8 PEM, mode 0600, never overwritten) and returns the
/// public key as SPKI PEM.
pub fn generate_signing_key(path: &Path) -> Result<String, String> {
    let key = KeyPair::generate(Algorithm::EdDSA).map_err(|e| e.to_string())?;
    let pem = key.to_pkcs8_pem().map_err(|e| e.to_string())?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| e.to_string())?;
    file.write_all(pem.as_bytes()).map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())?;
    key.public_key().to_public_key_pem().map_err(|e| e.to_string())
}

/// The `metadata.signature` value for the policy file `policy_file`, signed with the PKCS#8 key
/// at `key_file`.
pub fn sign_policy(key_file: &Path, policy_file: &Path) -> Result<String, String> {
    let pem = std::fs::read_to_string(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let key = KeyPair::from_pkcs8_pem(&pem)
        .ok()
        .filter(|k| k.public_key().algorithm() == Algorithm::EdDSA)
        .ok_or_else(|| format!("{}: not an Ed25519 private key", key_file.display()))?;
    let text = std::fs::read_to_string(policy_file).map_err(|e| format!("{}: {e}", policy_file.display()))?;
    let canonical = policy::canonical_bytes(&text).map_err(|e| format!("{}: {e}", policy_file.display()))?;
    let signature = key.sign(&canonical).map_err(|e| e.to_string())?;
    Ok(format!(
        "ed25519:{}",
        base64::engine::general_purpose::STANDARD.encode(signature)
    ))
}

/// Environment variable holding the passphrase of the audit key file (the one `aip-ca` reads).
pub const PASSPHRASE_ENV: &str = "AIP_PASSPHRASE";

/// Reads the audit key: a key file as `aip-ca keygen` writes it, unlocked with the first line
/// of `passphrase_file`, else with [`PASSPHRASE_ENV`] (a file stored without a passphrase needs
/// neither). The proxy never prompts: its stdin is the MCP client's.
pub fn read_audit_key(path: &Path, passphrase_file: Option<&Path>) -> Result<KeyPair, String> {
    let passphrase = match passphrase_file {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            Some(Passphrase::new(text.lines().next().unwrap_or_default()))
        }
        None => std::env::var(PASSPHRASE_ENV).ok().map(Passphrase::new),
    };
    keyfile::read(path, passphrase.as_ref()).map_err(|e| match e {
        keyfile::KeyFileError::PassphraseRequired => format!(
            "{}: the key is encrypted; give its passphrase with --audit-key-passphrase-file or {PASSPHRASE_ENV}",
            path.display()
        ),
        e => format!("{}: {e}", path.display()),
    })
}
