//! Sealed values: what the authorization-code flow (`crate::authorize`) hands to browsers and agents (the request
//! in progress, the sign-in's state at the identity provider, the consent, the code) is
//! serialized, then encrypted and authenticated with XChaCha20-Poly1305 under a key every
//! replica reads from the shared database. Any replica can open what another sealed; no one
//! without the key can read or alter it. Each kind of value is sealed for its own purpose
//! (the associated data), so one can never be passed off as another.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Length of the sealing key.
pub(crate) const SEAL_KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// The longest sealed value opened, in characters.
pub(crate) const MAX_SEALED_LEN: usize = 8 * 1024;

/// What a sealed value is for; each purpose opens only its own values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The authorization request while the person signs in.
    Request,
    /// The `state` sent to an identity provider.
    Login,
    /// The grant shown on the consent page.
    Consent,
    /// An authorization code.
    Code,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Request => b"aip-authorize-request-v1",
            Self::Login => b"aip-authorize-login-v1",
            Self::Consent => b"aip-authorize-consent-v1",
            Self::Code => b"aip-authorize-code-v1",
        }
    }
}

/// Seals and opens values under one key.
#[derive(Clone)]
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer with `key`.
    pub(crate) fn new(key: &[u8; SEAL_KEY_LEN]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&(*key).into()),
        }
    }

    /// `value` sealed for `purpose`: base64url of a random nonce and the ciphertext.
    pub(crate) fn seal<T: Serialize>(&self, purpose: Purpose, value: &T) -> Result<String, SealError> {
        let mut buffer = serde_json::to_vec(value).map_err(|_| SealError::Serialize)?;
        let mut nonce = [0u8; NONCE_LEN];
        aip_aat::ids::fill_random(&mut nonce).map_err(|_| SealError::Random)?;
        self.cipher
            .encrypt_in_place(&XNonce::from(nonce), purpose.label(), &mut buffer)
            .map_err(|_| SealError::Encrypt)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&buffer);
        Ok(URL_SAFE_NO_PAD.encode(sealed))
    }

    /// The value sealed in `sealed` for `purpose`, or `None` when it was not sealed here for
    /// that purpose, was altered, or does not decode.
    pub(crate) fn open<T: DeserializeOwned>(&self, purpose: Purpose, sealed: &str) -> Option<T> {
        if sealed.len() > MAX_SEALED_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let mut buffer = ciphertext.to_vec();
        self.cipher
            .decrypt_in_place(&XNonce::from(nonce), purpose.label(), &mut buffer)
            .ok()?;
        serde_json::from_slice(&buffer).ok()
    }
}

/// Sealing failed (never expected).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SealError {
    /// The value does not serialize.
    #[error("the value to seal does not serialize")]
    Serialize,
    /// The system's random generator failed.
    #[error("no randomness for the nonce")]
    Random,
    /// Encryption failed.
    #[error("encryption failed")]
    Encrypt,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_purpose_and_key() {
        let sealer = Sealer::new(&[3; SEAL_KEY_LEN]);
        let sealed = sealer.seal(Purpose::Code, &("alice", 7)).unwrap();
        assert_eq!(
            sealer.open::<(String, i64)>(Purpose::Code, &sealed),
            Some(("alice".into(), 7))
        );
        assert_eq!(sealer.open::<(String, i64)>(Purpose::Consent, &sealed), None);
        assert_eq!(
            Sealer::new(&[4; SEAL_KEY_LEN]).open::<(String, i64)>(Purpose::Code, &sealed),
            None
        );
        // Two seals of one value differ (random nonces).
        assert_ne!(sealer.seal(Purpose::Code, &("alice", 7)).unwrap(), sealed);
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            sealer.open::<(String, i64)>(Purpose::Code, &URL_SAFE_NO_PAD.encode(bytes)),
            None
        );
        for junk in ["", "!!", "AAAA", &"A".repeat(MAX_SEALED_LEN + 1)] {
            assert_eq!(sealer.open::<(String, i64)>(Purpose::Code, junk), None);
        }
    }
}
