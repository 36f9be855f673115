//! Renewing the issuing CA (`aip-ca ca renew-issuing`), offline: the server is stopped, the
//! root key is unlocked with the passphrase, and a new issuing CA is made under the root.
//!
//! ```text
//! DIR/ca/issuing.pem                 the new issuing CA (what new agent certificates chain to)
//! DIR/keys/issuing-ca.key            its key
//! DIR/ca/retired/<key id>.pem        the issuing CA it replaced, kept until it expires
//! DIR/keys/retired/<key id>.key      its key (encrypted as before): it still signs its CRL
//! ```
//!
//! (`retired/` sits beside wherever `aip.toml` puts the issuing CA's certificate and key.)
//!
//! Nothing changes unless everything can: the new files are written beside their final
//! places, the database records the retirement (certificates signed so far are labelled with
//! the old CA's key id, and an audit record is appended) in one transaction, and only then are
//! the new key and certificate renamed into place. A renewal killed between those two renames
//! leaves the new key beside the old certificate: the server refuses to start, and running the
//! renewal again completes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aip_aat::clock::Clock;
use aip_aat::keyfile::{self, Passphrase, Protection};
use aip_aat::keys::{KeyPair, Signer};
use aip_db::audit::AuditEntry;
use aip_db::{Checkpointer, Database};
use aip_registry::ca::{CaCertificateInfo, CaError, ca_certificate_info, create_issuing_certificate};
use aip_registry::store::{RevocationStore as _, SqlStore};
use serde_json::json;

use crate::config::{CONFIG_FILE, FileConfig};
use crate::error::{AuthorityError, io};
use crate::init::{database_url, exists};
use crate::lock::DirectoryLock;

/// The shortest validity a new issuing CA may have.
pub const MIN_VALIDITY_SECS: i64 = 86_400;
/// The suffix of a new file written beside its final place.
const PENDING: &str = "renewing";

/// A finished renewal.
#[derive(Clone, Debug)]
pub struct Renewed {
    /// The new issuing CA's key id (RFC 7638 thumbprint).
    pub key_id: String,
    /// Its certificate.
    pub certificate: PathBuf,
    /// Start and end of its validity (Unix time).
    pub not_before: i64,
    /// End of its validity (Unix time).
    pub not_after: i64,
    /// The replaced CA: its key id and where its certificate now is (`None` when this run only
    /// completed an interrupted renewal).
    pub retired: Option<Retired>,
}

/// The issuing CA a renewal retired.
#[derive(Clone, Debug)]
pub struct Retired {
    /// Its key id: its CRL is `/v1/crl/{key id}`.
    pub key_id: String,
    /// Its certificate, now under `retired/`.
    pub certificate: PathBuf,
    /// The end of its validity (Unix time): it publishes its CRL until then.
    pub not_after: i64,
    /// How many certificates recorded without an issuer (made before the database recorded
    /// issuers) were recorded as signed by it now.
    pub labelled: u64,
}

/// Where the retired issuing CA with key id `key_id` is kept: its certificate and its key.
pub fn retired_paths(dir: &Path, config: &FileConfig, key_id: &str) -> (PathBuf, PathBuf) {
    (
        retired_dir(dir, &config.keys.issuing_ca_cert).join(format!("{key_id}.pem")),
        retired_dir(dir, &config.keys.issuing_ca_key).join(format!("{key_id}.key")),
    )
}

/// The `retired/` directory beside the file `relative` (relative to `dir`).
pub fn retired_dir(dir: &Path, relative: &Path) -> PathBuf {
    dir.join(relative)
        .parent()
        .map_or_else(|| dir.join("retired"), |p| p.join("retired"))
}

fn pending(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(PENDING);
    PathBuf::from(name)
}

/// Whether an interrupted renewal left the new certificate waiting beside the old one.
pub fn interrupted(dir: &Path, config: &FileConfig) -> bool {
    pending(&dir.join(&config.keys.issuing_ca_cert)).exists()
}

fn key_file_error(path: &Path) -> impl FnOnce(keyfile::KeyFileError) -> AuthorityError + '_ {
    move |source| AuthorityError::KeyFile {
        path: path.to_owned(),
        source,
    }
}

fn read_key(path: &Path, passphrase: Option<&Passphrase>) -> Result<Arc<KeyPair>, AuthorityError> {
    Ok(Arc::new(keyfile::read(path, passphrase).map_err(key_file_error(path))?))
}

fn read_pem(path: &Path) -> Result<String, AuthorityError> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// Writes `contents` to a new file at `path` (0600), synced; never over an existing file.
fn write_new(path: &Path, contents: &[u8]) -> Result<(), AuthorityError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io(path))?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(io(path)(e));
    }
    Ok(())
}

/// Syncs the directory holding `path`, so that a rename in it survives a crash.
fn sync_parent(path: &Path) -> Result<(), AuthorityError> {
    match path.parent() {
        Some(parent) => std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io(parent)),
        None => Ok(()),
    }
}

fn private_dir(path: &Path) -> Result<(), AuthorityError> {
    std::fs::create_dir_all(path).map_err(io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io(path))?;
    }
    Ok(())
}

/// Files written so far, removed again if the renewal fails before it takes effect.
#[derive(Default)]
struct Written(Vec<PathBuf>);

impl Written {
    fn write(&mut self, path: PathBuf, contents: &[u8]) -> Result<(), AuthorityError> {
        write_new(&path, contents)?;
        self.0.push(path);
        Ok(())
    }

    fn undo(self) {
        for path in self.0.into_iter().rev() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Renews the issuing CA of the authority in `dir`: a new key (of the old one's algorithm,
/// stored under `protection`) and a certificate signed by the root, valid from now for
/// `validity` seconds; the old CA is retired (it keeps signing the CRL of the certificates it
/// signed until it expires). Refuses while the authority is running, with a wrong passphrase,
/// with a validity shorter than a day or than the agent certificates', or one that would end
/// after the root's; a refusal changes nothing.
pub async fn renew_issuing(
    dir: &Path,
    protection: Protection<'_>,
    validity: i64,
    clock: Arc<dyn Clock>,
) -> Result<Renewed, AuthorityError> {
    if !exists(dir) {
        return Err(AuthorityError::NotInitialized(dir.to_owned()));
    }
    let _lock = DirectoryLock::exclusive(dir)?;
    let config = FileConfig::load(dir)?;
    let settings = config.registry_settings(&dir.join(CONFIG_FILE))?;
    let passphrase = match &protection {
        Protection::Passphrase(passphrase, _) => Some(*passphrase),
        Protection::InsecureNone => None,
    };
    let cert_path = dir.join(&config.keys.issuing_ca_cert);
    let key_path = dir.join(&config.keys.issuing_ca_key);
    let (pending_cert, pending_key) = (pending(&cert_path), pending(&key_path));

    // The root key first: a wrong passphrase stops everything here.
    let root_pem = read_pem(&dir.join(&config.keys.root_ca_cert))?;
    let root_key = read_key(&dir.join(&config.keys.root_ca_key), passphrase)?;
    let old_key = read_key(&key_path, passphrase)?;

    if pending_cert.exists() {
        let waiting = ca_certificate_info(&read_pem(&pending_cert)?, "the new issuing CA")?;
        if !pending_key.exists() && waiting.public_key == old_key.public_key().to_raw_bytes() {
            // Killed between the two renames: the key is in place, the certificate is not.
            std::fs::rename(&pending_cert, &cert_path).map_err(io(&cert_path))?;
            sync_parent(&cert_path)?;
            return Ok(Renewed {
                key_id: old_key.public_key().thumbprint().as_str().to_owned(),
                certificate: cert_path,
                not_before: waiting.not_before,
                not_after: waiting.not_after,
                retired: None,
            });
        }
    }
    // Leftovers of a renewal that never took effect.
    for path in [&pending_cert, &pending_key] {
        if path.exists() {
            std::fs::remove_file(path).map_err(io(path))?;
        }
    }

    if validity < MIN_VALIDITY_SECS || validity < settings.agent_cert_validity {
        return Err(AuthorityError::InvalidValidity(format!(
            "the new issuing CA must be valid for at least a day and at least as long as an agent certificate \
             ({} s); asked for {validity} s",
            settings.agent_cert_validity.max(MIN_VALIDITY_SECS)
        )));
    }
    let old_pem = read_pem(&cert_path)?;
    let old = ca_certificate_info(&old_pem, "the issuing CA")?;
    if old.public_key != old_key.public_key().to_raw_bytes() {
        return Err(AuthorityError::Ca(CaError::KeyMismatch("the issuing CA")));
    }
    let old_key_id = old_key.public_key().thumbprint().as_str().to_owned();
    let now = clock.now();
    let new_key = Arc::new(KeyPair::generate(old_key.algorithm())?);
    let new_pem = create_issuing_certificate(
        &settings.trust_domain,
        &root_pem,
        root_key,
        new_key.clone(),
        now,
        validity,
    )
    .map_err(|e| match e {
        CaError::OutlivesRoot { root_not_after, .. } => AuthorityError::InvalidValidity(format!(
            "the new issuing CA would outlive the root CA, which ends in {} days: give at most --validity {}d",
            (root_not_after - now) / 86_400,
            (root_not_after - now) / 86_400,
        )),
        e => e.into(),
    })?;
    let new: CaCertificateInfo = ca_certificate_info(&new_pem, "the new issuing CA")?;
    let new_key_id = new_key.public_key().thumbprint().as_str().to_owned();

    let mut written = Written::default();
    let prepared = prepare(
        dir,
        &config,
        &mut written,
        (&old_key_id, &old_pem, &key_path),
        (&new_key, &new_pem, protection),
        (&pending_key, &pending_cert),
    );
    let (retired_cert, retired_key) = match prepared {
        Ok(paths) => paths,
        Err(e) => {
            written.undo();
            return Err(e);
        }
    };

    let audit = AuditEntry {
        actor: "system:ca".into(),
        action: "ca.renew_issuing",
        subject: new_key_id.clone(),
        details: json!({
            "previous_key_id": old_key_id,
            "previous_not_after": old.not_after,
            "key_id": new_key_id,
            "not_before": new.not_before,
            "not_after": new.not_after,
        }),
    };
    let labelled = match record(dir, &config, passphrase, clock, &old_key_id, now, &audit).await {
        Ok(labelled) => labelled,
        Err(e) => {
            written.undo();
            return Err(e);
        }
    };

    // The point of no return: the key, then the certificate.
    std::fs::rename(&pending_key, &key_path).map_err(io(&key_path))?;
    if let Err(e) = std::fs::rename(&pending_cert, &cert_path) {
        // Put the old key back so the directory stays as it was.
        let _ = std::fs::copy(&retired_key, &key_path);
        let _ = std::fs::remove_file(&pending_cert);
        return Err(io(&cert_path)(e));
    }
    sync_parent(&key_path)?;
    sync_parent(&cert_path)?;
    Ok(Renewed {
        key_id: new_key_id,
        certificate: cert_path,
        not_before: new.not_before,
        not_after: new.not_after,
        retired: Some(Retired {
            key_id: old_key_id,
            certificate: retired_cert,
            not_after: old.not_after,
            labelled,
        }),
    })
}

/// Writes the retired copies of the old CA and the new key and certificate beside their
/// places; returns where the retired certificate and key are.
fn prepare(
    dir: &Path,
    config: &FileConfig,
    written: &mut Written,
    (old_key_id, old_pem, key_path): (&str, &str, &Path),
    (new_key, new_pem, protection): (&KeyPair, &str, Protection<'_>),
    (pending_key, pending_cert): (&Path, &Path),
) -> Result<(PathBuf, PathBuf), AuthorityError> {
    let (retired_cert, retired_key) = retired_paths(dir, config, old_key_id);
    for path in [&retired_cert, &retired_key] {
        if let Some(parent) = path.parent() {
            private_dir(parent)?;
        }
    }
    // The old key file as it is (encrypted as before), and its certificate.
    let old_key_text = keyfile::read_text(key_path).map_err(key_file_error(key_path))?;
    written.write(retired_key.clone(), old_key_text.as_bytes())?;
    written.write(retired_cert.clone(), old_pem.as_bytes())?;
    let new_key_text = keyfile::encode(new_key, protection).map_err(key_file_error(pending_key))?;
    written.write(pending_key.to_owned(), new_key_text.as_bytes())?;
    written.write(pending_cert.to_owned(), new_pem.as_bytes())?;
    Ok((retired_cert, retired_key))
}

/// Records the retirement in the database: certificates signed so far are labelled as the old
/// CA's, and the audit record, in one transaction (with a signed checkpoint when one is due).
async fn record(
    dir: &Path,
    config: &FileConfig,
    passphrase: Option<&Passphrase>,
    clock: Arc<dyn Clock>,
    old_key_id: &str,
    now: i64,
    audit: &AuditEntry,
) -> Result<u64, AuthorityError> {
    let registry_key: Arc<dyn Signer> = read_key(&dir.join(&config.keys.registry_key), passphrase)?;
    let checkpointer = Checkpointer::new(registry_key, config.audit.checkpoint_every, clock);
    let db = Database::connect(&database_url(dir, config.database_url.as_deref()))
        .await?
        .with_checkpoints(checkpointer);
    let result = SqlStore::new(db.clone())
        .retire_issuing_ca(old_key_id, now, audit)
        .await;
    db.close().await;
    Ok(result.map_err(aip_registry::service::RegistryError::from)?)
}
