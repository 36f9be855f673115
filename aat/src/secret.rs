//! Secret strings: wiped from memory on drop, never shown by `Debug`; and the high-entropy
//! bearer secrets the authority hands out (access, registration and refresh tokens, user API
//! keys), which are stored only as their SHA-256 digests.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// A secret string (API key, refresh token, passphrase). `Debug` prints `<redacted>`;
/// serde reads and writes the plain string, so only put it where the secret must travel.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Zeroizing::new(secret.into()))
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `true` for the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// A new high-entropy bearer secret: `prefix` and 32 random bytes in base64url. Store only its
/// [`digest`].
pub fn random_secret(prefix: &str) -> Result<SecretString, getrandom::Error> {
    let mut secret = Zeroizing::new([0u8; 32]);
    crate::ids::fill_random(&mut *secret)?;
    Ok(SecretString::new(format!(
        "{prefix}{}",
        crate::b64::encode(secret.as_slice())
    )))
}

/// Hex SHA-256 of a bearer secret: what a database stores and looks it up by.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_stored_as_digests() {
        let a = random_secret("aip_at_").unwrap();
        let b = random_secret("aip_at_").unwrap();
        assert_ne!(a, b);
        assert!(a.expose().starts_with("aip_at_") && a.expose().len() == 7 + 43);
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn debug_is_redacted_and_serde_is_plain() {
        let s = SecretString::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hunter2\"");
        let back: SecretString = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(back.expose(), "hunter2");
    }
}
