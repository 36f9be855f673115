//! [`KeyPair`]: an in-memory secret key, zeroized on drop; PKCS#8 in and out.

use std::fmt;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, PrivateKeyInfoRef};
use p256::ecdsa::signature::Signer as _;
use zeroize::Zeroizing;

use super::algorithm::{Algorithm, KeyError, SignError};
use super::public::{OID_EC_PUBLIC_KEY, OID_ED25519, PublicKey};
use super::signer::Signer;
use crate::ids::KeyId;

/// An in-memory secret key and its public half. The secret is zeroized on drop and never
/// appears in `Debug` output, which shows the algorithm and key id only.
pub struct KeyPair {
    secret: Secret,
    public: PublicKey,
}

enum Secret {
    // Both types zeroize themselves on drop.
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

impl KeyPair {
    /// Generates a fresh key from the operating system's CSPRNG.
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        loop {
            getrandom::fill(seed.as_mut()).map_err(|_| KeyError::Random)?;
            match alg {
                Algorithm::EdDSA => return Ok(Self::ed25519_from_seed(&seed)),
                // A random 32-byte string is a valid P-256 scalar except with probability
                // about 2^-32; draw again in that case.
                Algorithm::ES256 => match Self::p256_from_scalar(&seed) {
                    Ok(key) => return Ok(key),
                    Err(KeyError::InvalidKey(_)) => continue,
                    Err(e) => return Err(e),
                },
            }
        }
    }

    /// An Ed25519 key from its 32-byte seed (deterministic; for tests and derivations).
    pub fn ed25519_from_seed(seed: &[u8; 32]) -> Self {
        let secret = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = PublicKey::from_ed25519_unchecked(secret.verifying_key());
        Self {
            secret: Secret::Ed25519(secret),
            public,
        }
    }

    /// A P-256 key from its 32-byte big-endian scalar.
    pub fn p256_from_scalar(scalar: &[u8; 32]) -> Result<Self, KeyError> {
        let secret = p256::ecdsa::SigningKey::from_slice(scalar)
            .map_err(|_| KeyError::InvalidKey("scalar is zero or not below the P-256 group order"))?;
        let public = PublicKey::from_p256(secret.verifying_key())?;
        Ok(Self {
            secret: Secret::P256(secret),
            public,
        })
    }

    /// Parses an unencrypted PKCS#8 private key (DER).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = PrivateKeyInfoRef::try_from(der).map_err(|_| KeyError::Encoding("PKCS#8 DER"))?;
        match info.algorithm.oid {
            OID_ED25519 => {
                let secret = ed25519_dalek::SigningKey::from_pkcs8_der(der)
                    .map_err(|_| KeyError::InvalidKey("not a valid Ed25519 private key"))?;
                let public = PublicKey::from_ed25519_unchecked(secret.verifying_key());
                Ok(Self {
                    secret: Secret::Ed25519(secret),
                    public,
                })
            }
            OID_EC_PUBLIC_KEY => {
                let secret = p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| KeyError::UnsupportedKeyType)?;
                let public = PublicKey::from_p256(secret.verifying_key())?;
                Ok(Self {
                    secret: Secret::P256(secret),
                    public,
                })
            }
            _ => Err(KeyError::UnsupportedKeyType),
        }
    }

    /// Parses an unencrypted PEM `PRIVATE KEY` (PKCS#8).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, der) =
            ed25519_dalek::pkcs8::spki::der::pem::decode_vec(pem.as_bytes()).map_err(|_| KeyError::Encoding("PEM"))?;
        let der = Zeroizing::new(der);
        if label != "PRIVATE KEY" {
            return Err(KeyError::Encoding("PEM: expected a PRIVATE KEY block"));
        }
        Self::from_pkcs8_der(&der)
    }

    /// Unencrypted PKCS#8 DER; zeroized when dropped. An Ed25519 key is written in the
    /// RFC 8410 form (version 1, no public key member), which every PKCS#8 reader accepts;
    /// some (OpenSSL 3, Python `cryptography`) refuse the version 2 form with the public key.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let doc = match &self.secret {
            Secret::Ed25519(k) => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: k.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_der(),
            Secret::P256(k) => k.to_pkcs8_der(),
        };
        doc.map(|d| Zeroizing::new(d.as_bytes().to_vec()))
            .map_err(|_| KeyError::Encoding("PKCS#8 DER"))
    }

    /// Unencrypted PEM `PRIVATE KEY` of [`Self::to_pkcs8_der`]; zeroized when dropped.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let der = self.to_pkcs8_der()?;
        ed25519_dalek::pkcs8::spki::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, &der)
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Encoding("PEM"))
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id (RFC 7638 thumbprint).
    pub fn key_id(&self) -> &KeyId {
        self.public.thumbprint()
    }

    /// The algorithm of the key.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// The secret as bytes: the Ed25519 seed or the P-256 big-endian scalar (how keys cross
    /// into the delegation module's other cryptography generation).
    pub(crate) fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(match &self.secret {
            Secret::Ed25519(k) => k.to_bytes(),
            Secret::P256(k) => k.to_bytes().into(),
        })
    }
}

impl Signer for KeyPair {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        Ok(match &self.secret {
            Secret::Ed25519(k) => ed25519_dalek::Signer::sign(k, message).to_bytes().to_vec(),
            Secret::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_bytes().to_vec()
            }
        })
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("alg", &self.algorithm())
            .field("kid", &self.key_id().as_str())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::x509_signature;

    #[test]
    fn raw_bytes_and_x509_signatures() {
        let ed = KeyPair::generate(Algorithm::EdDSA).unwrap();
        assert_eq!(ed.public_key().to_raw_bytes().len(), 32);
        let ec = KeyPair::generate(Algorithm::ES256).unwrap();
        let raw = ec.public_key().to_raw_bytes();
        assert_eq!((raw.len(), raw[0]), (65, 0x04));
        // The SPKI DER ends with the raw key.
        assert!(ec.public_key().to_public_key_der().unwrap().ends_with(&raw));

        let sig = ec.sign(b"m").unwrap();
        let der = x509_signature(Algorithm::ES256, &sig).unwrap();
        assert_eq!(der[0], 0x30, "a DER SEQUENCE");
        let parsed = p256::ecdsa::Signature::from_der(&der).unwrap();
        assert_eq!(parsed.to_bytes().as_slice(), sig.as_slice());
        assert_eq!(x509_signature(Algorithm::EdDSA, &[1, 2]).unwrap(), vec![1, 2]);
        assert!(x509_signature(Algorithm::ES256, &[1, 2]).is_err());
    }
}
