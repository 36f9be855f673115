//! Encrypted private-key files.
//!
//! A key file is a small JSON document (format `aip-key`, version 1):
//!
//! ```json
//! {
//!   "format": "aip-key",
//!   "version": 1,
//!   "alg": "EdDSA",
//!   "kid": "<RFC 7638 thumbprint of the public key>",
//!   "protection": {
//!     "type": "argon2id-xchacha20poly1305",
//!     "m_cost": 65536, "t_cost": 3, "p_cost": 1,
//!     "salt": "<16 bytes, base64url>",
//!     "nonce": "<24 bytes, base64url>",
//!     "check": "<16 bytes, base64url>"
//!   },
//!   "key": "<XChaCha20-Poly1305 ciphertext of the PKCS#8 DER key, base64url>",
//!   "checksum": "<hex SHA-256 of the RFC 8785 form of every other member>"
//! }
//! ```
//!
//! Argon2id (RFC 9106; parameters stored in the file) turns the passphrase and salt into 48
//! bytes: the first 32 are the AEAD key, the last 16 the `check` value. The AEAD's associated
//! data is the canonical form of the header (`format` … `protection`), so no header member can
//! be changed unnoticed. Reading distinguishes, in this order: a truncated file, a corrupted or
//! edited file (checksum), a wrong passphrase (`check`), and a file whose checksum was forged
//! to hide tampering (the AEAD tag, or a key that does not match `kid`).
//!
//! `"protection": {"type": "none"}` stores the key unencrypted, for tests and demos only.
//! Files are created with mode 0600 and never overwritten.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use argon2::Argon2;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::b64;
use crate::ids::{KeyId, random_bytes};
use crate::jcs;
use crate::keys::{Algorithm, KeyError, KeyPair};

const FORMAT: &str = "aip-key";
const VERSION: u32 = 1;
/// Larger files are not key files; refuse before parsing.
const MAX_FILE_LEN: u64 = 64 * 1024;
const SALT_LEN: usize = 16;
const CHECK_LEN: usize = 16;
const AEAD_KEY_LEN: usize = 32;

/// A passphrase: wiped on drop, never printed.
pub type Passphrase = crate::secret::SecretString;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes over memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// Smallest memory cost accepted when writing (8 MiB).
    pub const MIN_M_COST: u32 = 8 * 1024;
    /// Largest memory cost accepted when reading (1 GiB), so a hostile file cannot exhaust memory.
    pub const MAX_M_COST: u32 = 1024 * 1024;
    /// Largest time cost accepted when reading.
    pub const MAX_T_COST: u32 = 64;
    /// Largest parallelism accepted when reading.
    pub const MAX_P_COST: u32 = 16;

    /// Checks the bounds for writing a new file.
    pub fn new(m_cost: u32, t_cost: u32, p_cost: u32) -> Result<Self, KeyFileError> {
        let params = Self { m_cost, t_cost, p_cost };
        if m_cost < Self::MIN_M_COST || t_cost < 1 || p_cost < 1 {
            return Err(KeyFileError::WeakParameters);
        }
        params.check_readable()?;
        Ok(params)
    }

    fn check_readable(self) -> Result<(), KeyFileError> {
        if self.m_cost > Self::MAX_M_COST || self.t_cost > Self::MAX_T_COST || self.p_cost > Self::MAX_P_COST {
            return Err(KeyFileError::Malformed(
                "Argon2id parameters exceed the accepted maximum",
            ));
        }
        Ok(())
    }

    fn derive(
        self,
        passphrase: &Passphrase,
        salt: &[u8],
    ) -> Result<Zeroizing<[u8; AEAD_KEY_LEN + CHECK_LEN]>, KeyFileError> {
        let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(AEAD_KEY_LEN + CHECK_LEN))
            .map_err(|_| KeyFileError::Malformed("invalid Argon2id parameters"))?;
        let mut out = Zeroizing::new([0u8; AEAD_KEY_LEN + CHECK_LEN]);
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_into(passphrase.expose().as_bytes(), salt, out.as_mut())
            .map_err(|_| KeyFileError::Malformed("invalid Argon2id parameters"))?;
        Ok(out)
    }
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: RFC 9106's second recommended option with one lane, about
    /// a quarter of a second here.
    fn default() -> Self {
        Self {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// How a key is stored.
#[derive(Clone, Copy, Debug)]
pub enum Protection<'a> {
    /// Encrypted under a passphrase.
    Passphrase(&'a Passphrase, KdfParams),
    /// Stored in clear; only for tests and demos (`--insecure-no-passphrase`).
    InsecureNone,
}

/// A key file could not be read or written. The messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Refusing to replace an existing file.
    #[error("refusing to overwrite an existing file")]
    AlreadyExists,
    /// The file ends early.
    #[error("key file is truncated")]
    Truncated,
    /// The file is not a key file this version understands.
    #[error("not a valid key file: {0}")]
    Malformed(&'static str),
    /// The file's format version is newer than this program.
    #[error("unsupported key file version {0}")]
    UnsupportedVersion(u32),
    /// The checksum does not match: the file was edited or damaged.
    #[error("key file is corrupted or was modified (checksum mismatch)")]
    Corrupted,
    /// The passphrase is not the one the file was written with.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The passphrase is right but the contents fail authentication: the file was tampered with.
    #[error("key file was tampered with (authentication failed)")]
    Tampered,
    /// The file is encrypted and no passphrase was supplied.
    #[error("key file is encrypted: a passphrase is required")]
    PassphraseRequired,
    /// Argon2id parameters below the minimum were requested for a new file.
    #[error("Argon2id parameters below the minimum (8 MiB, 1 pass, 1 lane)")]
    WeakParameters,
    /// The key inside could not be encoded or decoded.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// What a key file says about itself, readable without the passphrase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFileInfo {
    /// Key algorithm.
    pub alg: Algorithm,
    /// Key id (thumbprint of the public key).
    pub kid: KeyId,
    /// Whether a passphrase is needed.
    pub encrypted: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    format: String,
    version: u32,
    alg: Algorithm,
    kid: KeyId,
    protection: ProtectionDoc,
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    checksum: Option<String>,
}

impl Drop for FileDoc {
    /// `key` holds the unencrypted key in `--insecure-no-passphrase` files.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum ProtectionDoc {
    #[serde(rename = "argon2id-xchacha20poly1305")]
    Encrypted {
        m_cost: u32,
        t_cost: u32,
        p_cost: u32,
        salt: String,
        nonce: String,
        check: String,
    },
    #[serde(rename = "none")]
    None,
}

/// The header members that the AEAD authenticates.
#[derive(Serialize)]
struct Header<'a> {
    format: &'a str,
    version: u32,
    alg: Algorithm,
    kid: &'a KeyId,
    protection: &'a ProtectionDoc,
}

impl FileDoc {
    fn header(&self) -> Header<'_> {
        Header {
            format: &self.format,
            version: self.version,
            alg: self.alg,
            kid: &self.kid,
            protection: &self.protection,
        }
    }

    fn checksum(&self) -> Result<String, KeyFileError> {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(flatten)]
            header: Header<'a>,
            key: &'a str,
        }
        let body = Body {
            header: self.header(),
            key: &self.key,
        };
        jcs::sha256_hex(&body).map_err(|_| KeyFileError::Malformed("cannot canonicalize"))
    }
}

/// Serializes `key` as key-file text (which holds the key in clear for
/// [`Protection::InsecureNone`], hence zeroized on drop).
pub fn encode(key: &KeyPair, protection: Protection<'_>) -> Result<Zeroizing<String>, KeyFileError> {
    let pkcs8 = key.to_pkcs8_der()?;
    let mut doc = FileDoc {
        format: FORMAT.to_owned(),
        version: VERSION,
        alg: key.algorithm(),
        kid: key.key_id().clone(),
        protection: ProtectionDoc::None,
        key: String::new(),
        checksum: None,
    };
    match protection {
        Protection::InsecureNone => doc.key = b64::encode(&*pkcs8),
        Protection::Passphrase(passphrase, params) => {
            let params = KdfParams::new(params.m_cost, params.t_cost, params.p_cost)?;
            let salt = random_bytes::<SALT_LEN>().map_err(|_| KeyError::Random)?;
            let nonce = random_bytes::<24>().map_err(|_| KeyError::Random)?;
            let derived = params.derive(passphrase, &salt)?;
            let (aead_key, check) = derived.split_at(AEAD_KEY_LEN);
            doc.protection = ProtectionDoc::Encrypted {
                m_cost: params.m_cost,
                t_cost: params.t_cost,
                p_cost: params.p_cost,
                salt: b64::encode(salt),
                nonce: b64::encode(nonce),
                check: b64::encode(check),
            };
            let aad = jcs::to_vec(&doc.header()).map_err(|_| KeyFileError::Malformed("cannot canonicalize"))?;
            let cipher =
                XChaCha20Poly1305::new_from_slice(aead_key).map_err(|_| KeyFileError::Malformed("key length"))?;
            let mut buffer = Zeroizing::new(pkcs8.to_vec());
            cipher
                .encrypt_in_place(&XNonce::from(nonce), &aad, &mut *buffer)
                .map_err(|_| KeyFileError::Malformed("encryption failed"))?;
            doc.key = b64::encode(&*buffer);
        }
    }
    doc.checksum = Some(doc.checksum()?);
    let mut text =
        Zeroizing::new(serde_json::to_string_pretty(&doc).map_err(|_| KeyFileError::Malformed("cannot serialize"))?);
    text.push('\n');
    Ok(text)
}

fn parse(text: &str) -> Result<FileDoc, KeyFileError> {
    // Read the version first so a newer file says so instead of failing on unknown members.
    #[derive(Deserialize)]
    struct Probe {
        format: Option<String>,
        version: Option<u32>,
    }
    let probe: Probe = serde_json::from_str(text).map_err(|e| {
        if e.is_eof() {
            KeyFileError::Truncated
        } else {
            KeyFileError::Malformed("not a JSON key file")
        }
    })?;
    if probe.format.as_deref() != Some(FORMAT) {
        return Err(KeyFileError::Malformed("missing `\"format\": \"aip-key\"`"));
    }
    match probe.version {
        Some(VERSION) => {}
        Some(v) => return Err(KeyFileError::UnsupportedVersion(v)),
        None => return Err(KeyFileError::Malformed("missing `version`")),
    }
    let doc: FileDoc = crate::json::from_slice(text.as_bytes())
        .map_err(|_| KeyFileError::Malformed("unexpected or missing members"))?;
    match &doc.checksum {
        Some(sum) if *sum == doc.checksum()? => Ok(doc),
        Some(_) => Err(KeyFileError::Corrupted),
        None => Err(KeyFileError::Malformed("missing `checksum`")),
    }
}

/// Reads the public facts of a key file (algorithm, key id, whether it is encrypted).
pub fn inspect(text: &str) -> Result<KeyFileInfo, KeyFileError> {
    let doc = parse(text)?;
    let encrypted = matches!(doc.protection, ProtectionDoc::Encrypted { .. });
    Ok(KeyFileInfo {
        alg: doc.alg,
        kid: doc.kid.clone(),
        encrypted,
    })
}

/// Decrypts key-file text. A passphrase given for an unencrypted file is ignored.
pub fn decode(text: &str, passphrase: Option<&Passphrase>) -> Result<KeyPair, KeyFileError> {
    let doc = parse(text)?;
    let pkcs8 = match &doc.protection {
        ProtectionDoc::None => {
            Zeroizing::new(b64::decode(&doc.key).ok_or(KeyFileError::Malformed("`key` is not base64url"))?)
        }
        ProtectionDoc::Encrypted {
            m_cost,
            t_cost,
            p_cost,
            salt,
            nonce,
            check,
        } => {
            let passphrase = passphrase.ok_or(KeyFileError::PassphraseRequired)?;
            let params = KdfParams {
                m_cost: *m_cost,
                t_cost: *t_cost,
                p_cost: *p_cost,
            };
            params.check_readable()?;
            let salt = b64::decode_array::<SALT_LEN>(salt).ok_or(KeyFileError::Malformed("`salt` must be 16 bytes"))?;
            let nonce = b64::decode_array::<24>(nonce).ok_or(KeyFileError::Malformed("`nonce` must be 24 bytes"))?;
            let check =
                b64::decode_array::<CHECK_LEN>(check).ok_or(KeyFileError::Malformed("`check` must be 16 bytes"))?;
            let mut buffer =
                Zeroizing::new(b64::decode(&doc.key).ok_or(KeyFileError::Malformed("`key` is not base64url"))?);
            let derived = params.derive(passphrase, &salt)?;
            let (aead_key, expected_check) = derived.split_at(AEAD_KEY_LEN);
            // The file is local and the comparison is of a slow-KDF output: no timing oracle.
            if expected_check != check {
                return Err(KeyFileError::WrongPassphrase);
            }
            let aad = jcs::to_vec(&doc.header()).map_err(|_| KeyFileError::Malformed("cannot canonicalize"))?;
            let cipher =
                XChaCha20Poly1305::new_from_slice(aead_key).map_err(|_| KeyFileError::Malformed("key length"))?;
            cipher
                .decrypt_in_place(&XNonce::from(nonce), &aad, &mut *buffer)
                .map_err(|_| KeyFileError::Tampered)?;
            buffer
        }
    };
    let key = KeyPair::from_pkcs8_der(&pkcs8).map_err(|_| KeyFileError::Tampered)?;
    if key.key_id() != &doc.kid || key.algorithm() != doc.alg {
        return Err(KeyFileError::Tampered);
    }
    Ok(key)
}

/// Writes `key` to a new file at `path` with mode 0600. Never replaces an existing file; a
/// partly written file is removed.
pub fn write(path: &Path, key: &KeyPair, protection: Protection<'_>) -> Result<(), KeyFileError> {
    let text = encode(key, protection)?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => KeyFileError::AlreadyExists,
        _ => KeyFileError::Io(e),
    })?;
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(KeyFileError::Io(e));
    }
    Ok(())
}

/// Reads and decrypts the key file at `path`.
pub fn read(path: &Path, passphrase: Option<&Passphrase>) -> Result<KeyPair, KeyFileError> {
    decode(&read_text(path)?, passphrase)
}

/// Reads the key file at `path` as text, refusing anything larger than a key file can be.
pub fn read_text(path: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    let file = fs::File::open(path)?;
    if file.metadata()?.len() > MAX_FILE_LEN {
        return Err(KeyFileError::Malformed("file is too large to be a key file"));
    }
    let mut text = Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_FILE_LEN), &mut text).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData {
            KeyFileError::Malformed("not UTF-8 text")
        } else {
            KeyFileError::Io(e)
        }
    })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> KdfParams {
        KdfParams::new(KdfParams::MIN_M_COST, 1, 1).unwrap()
    }

    #[test]
    fn round_trip_both_algorithms() {
        let pass = Passphrase::new("correct horse battery staple");
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let key = KeyPair::generate(alg).unwrap();
            let text = encode(&key, Protection::Passphrase(&pass, cheap())).unwrap();
            let back = decode(&text, Some(&pass)).unwrap();
            assert_eq!(back.public_key(), key.public_key());
            let info = inspect(&text).unwrap();
            assert_eq!(
                info,
                KeyFileInfo {
                    alg,
                    kid: key.key_id().clone(),
                    encrypted: true
                }
            );
            assert!(!text.contains(&*b64::encode(&*key.to_pkcs8_der().unwrap())));
        }
    }

    #[test]
    fn distinct_errors() {
        let pass = Passphrase::new("pw");
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let text = encode(&key, Protection::Passphrase(&pass, cheap())).unwrap();

        assert!(matches!(
            decode(&text, Some(&Passphrase::new("nope"))),
            Err(KeyFileError::WrongPassphrase)
        ));
        assert!(matches!(decode(&text, None), Err(KeyFileError::PassphraseRequired)));
        assert!(matches!(
            decode(&text[..text.len() / 2], Some(&pass)),
            Err(KeyFileError::Truncated)
        ));

        // Flip one ciphertext character: the checksum catches it.
        let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let ct = doc["key"].as_str().unwrap().to_owned();
        let flipped = format!("{}{}", if ct.starts_with('A') { 'B' } else { 'A' }, &ct[1..]);
        doc["key"] = flipped.into();
        let edited = serde_json::to_string(&doc).unwrap();
        assert!(matches!(decode(&edited, Some(&pass)), Err(KeyFileError::Corrupted)));

        // An attacker who also recomputes the checksum is caught by the AEAD.
        let forged: FileDoc = serde_json::from_str(&edited).unwrap();
        let mut forged = forged;
        forged.checksum = Some(forged.checksum().unwrap());
        let forged = serde_json::to_string(&forged).unwrap();
        assert!(matches!(decode(&forged, Some(&pass)), Err(KeyFileError::Tampered)));
    }

    #[test]
    fn header_is_authenticated() {
        let pass = Passphrase::new("pw");
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let other = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let text = encode(&key, Protection::Passphrase(&pass, cheap())).unwrap();
        let mut doc: FileDoc = serde_json::from_str(&text).unwrap();
        doc.kid = other.key_id().clone();
        doc.checksum = Some(doc.checksum().unwrap());
        let text = serde_json::to_string(&doc).unwrap();
        assert!(matches!(decode(&text, Some(&pass)), Err(KeyFileError::Tampered)));
    }

    #[test]
    fn unencrypted_files_and_versions() {
        let key = KeyPair::generate(Algorithm::ES256).unwrap();
        let text = encode(&key, Protection::InsecureNone).unwrap();
        assert_eq!(decode(&text, None).unwrap().public_key(), key.public_key());
        assert!(!inspect(&text).unwrap().encrypted);
        let newer = text.replace("\"version\": 1", "\"version\": 2");
        assert!(matches!(decode(&newer, None), Err(KeyFileError::UnsupportedVersion(2))));
        assert!(matches!(decode("{\"hello\":1}", None), Err(KeyFileError::Malformed(_))));
        assert!(matches!(decode("", None), Err(KeyFileError::Truncated)));
    }

    #[test]
    fn refuses_weak_and_hostile_parameters() {
        assert!(matches!(KdfParams::new(1024, 1, 1), Err(KeyFileError::WeakParameters)));
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let pass = Passphrase::new("pw");
        let text = encode(&key, Protection::Passphrase(&pass, cheap())).unwrap();
        let mut doc: FileDoc = serde_json::from_str(&text).unwrap();
        if let ProtectionDoc::Encrypted { m_cost, .. } = &mut doc.protection {
            *m_cost = u32::MAX;
        }
        doc.checksum = Some(doc.checksum().unwrap());
        let text = serde_json::to_string(&doc).unwrap();
        assert!(matches!(decode(&text, Some(&pass)), Err(KeyFileError::Malformed(_))));
    }

    #[cfg(unix)]
    #[test]
    fn written_files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        let key = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let pass = Passphrase::new("pw");
        write(&path, &key, Protection::Passphrase(&pass, cheap())).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(
            write(&path, &key, Protection::InsecureNone),
            Err(KeyFileError::AlreadyExists)
        ));
        assert_eq!(read(&path, Some(&pass)).unwrap().key_id(), key.key_id());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let pass = Passphrase::new("hunter2");
        assert!(!format!("{pass:?}").contains("hunter2"));
    }
}
