//! Opening an authority: its configuration, keys and database, and the registry and token
//! issuer wired together over them ([`Authority`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aip_aat::clock::Clock;
use aip_aat::keyfile::{self, Passphrase, Protection};
use aip_aat::keys::{Algorithm, Signer};
use aip_api::registry::IssuerEndpoints;
use aip_db::{Checkpointer, Database};
use aip_issuer::keys::{SigningKeys, ensure_key};
use aip_issuer::service::Issuer;
use aip_issuer::store::IssuerStore;
use aip_registry::ca::{CaCertificates, CaError, CertificateAuthority, ca_certificate_info};
use aip_registry::service::Registry;
use aip_registry::store::SqlStore;

use crate::config::{CONFIG_FILE, FileConfig, TlsFiles};
use crate::directory::{IssuerKeys, LocalDirectory};
use crate::error::{AuthorityError, io};
use crate::init::{database_url, exists};
use crate::lock::DirectoryLock;
use crate::rate_limit::RateLimits;
use crate::renew;
use aip_http::connections::ConnectionSettings;

/// Runtime overrides of the configuration (environment and flags).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Listen address.
    pub listen: Option<String>,
    /// Database URL.
    pub database_url: Option<String>,
    /// Public base URL.
    pub public_url: Option<String>,
    /// TLS certificate and key.
    pub tls: Option<TlsFiles>,
}

/// An opened authority: the registry and the token issuer over one database, ready to serve.
#[derive(Debug)]
pub struct Authority {
    /// The registry.
    pub registry: Arc<Registry>,
    /// The token issuer, reaching the registry in-process.
    pub issuer: Arc<Issuer>,
    /// The database both use.
    pub database: Database,
    /// The authority directory.
    pub dir: PathBuf,
    /// Address to listen on.
    pub listen: String,
    /// TLS files, resolved against the directory.
    pub tls: Option<TlsFiles>,
    /// The configuration as loaded (before overrides).
    pub config: FileConfig,
    /// Bounds on connections (`[connections]`).
    pub connections: ConnectionSettings,
    /// The rate limits (`[rate_limits]`); `None` when they are turned off.
    pub rate_limits: Option<Arc<RateLimits>>,
    /// The shared lock on the directory, held while the authority is open.
    _lock: DirectoryLock,
}

/// The passphrase a protection uses, if any.
fn passphrase<'a>(protection: &Protection<'a>) -> Option<&'a Passphrase> {
    match protection {
        Protection::Passphrase(passphrase, _) => Some(passphrase),
        Protection::InsecureNone => None,
    }
}

/// Opens the authority in `dir`, unlocking its keys with `protection`'s passphrase (ignored
/// for keys stored without one), and wires the registry and the token issuer together. An
/// authority made before the token issuer existed gets its first signing key now, under
/// `protection`.
pub async fn open(
    dir: &Path,
    protection: Protection<'_>,
    overrides: &Overrides,
    clock: Arc<dyn Clock>,
) -> Result<Authority, AuthorityError> {
    if !exists(dir) {
        return Err(AuthorityError::NotInitialized(dir.to_owned()));
    }
    let lock = DirectoryLock::shared(dir)?;
    let passphrase = passphrase(&protection);
    let config = FileConfig::load(dir)?;
    let mut effective = config.clone();
    if let Some(url) = &overrides.public_url {
        effective.public_url.clone_from(url);
    }
    let settings = effective.registry_settings(&dir.join(CONFIG_FILE))?;
    let connections = config.connection_settings(&dir.join(CONFIG_FILE))?;
    let rate_limits = RateLimits::new(&config.rate_limits);
    let read_key = |relative: &Path| -> Result<Arc<dyn Signer>, AuthorityError> {
        let path = dir.join(relative);
        let key = keyfile::read(&path, passphrase).map_err(|source| AuthorityError::KeyFile { path, source })?;
        Ok(Arc::new(key))
    };
    let issuing = read_key(&config.keys.issuing_ca_key)?;
    let registry_key = read_key(&config.keys.registry_key)?;
    let read_pem = |relative: &Path| {
        let path = dir.join(relative);
        std::fs::read_to_string(&path).map_err(io(&path))
    };
    let certificates = CaCertificates {
        root_pem: read_pem(&config.keys.root_ca_cert)?,
        issuing_pem: read_pem(&config.keys.issuing_ca_cert)?,
    };
    let url = overrides
        .database_url
        .clone()
        .unwrap_or_else(|| database_url(dir, config.database_url.as_deref()));
    let checkpointer = Checkpointer::new(registry_key.clone(), config.audit.checkpoint_every, clock.clone());
    let database = Database::connect(&url).await?.with_checkpoints(checkpointer);
    let ca = match CertificateAuthority::new(&settings.trust_domain, issuing, certificates) {
        Err(CaError::KeyMismatch(_)) if renew::interrupted(dir, &config) => {
            return Err(AuthorityError::InterruptedRenewal(
                dir.join(&config.keys.issuing_ca_key),
            ));
        }
        ca => ca?,
    };
    let ca = with_retired(dir, &config, ca, passphrase, clock.now())?;
    let public_url = settings.public_url.clone();
    let registry_store = Arc::new(SqlStore::new(database.clone()));
    registry_store.backfill_name_skeletons().await?;
    let registry = Arc::new(Registry::new(registry_store, ca, registry_key, settings, clock.clone()));

    let store = IssuerStore::new(&database);
    store.backfill_user_skeletons().await?;
    let now = clock.now();
    ensure_key(&store, Algorithm::EdDSA, protection, now).await?;
    let keys = Arc::new(SigningKeys::load(&store, passphrase, now).await?);
    let issuer_settings = effective.issuer_settings(&public_url, dir)?;
    let directory = LocalDirectory::new(registry.clone());
    let issuer = Issuer::new(issuer_settings, directory, store, keys.clone(), clock).await?;
    registry.attach_token_issuer(
        Arc::new(IssuerKeys(keys)),
        IssuerEndpoints {
            issuer: public_url.clone(),
            challenge_endpoint: format!("{public_url}/v1/challenge"),
            token_endpoint: format!("{public_url}/v1/token"),
            revocation_endpoint: format!("{public_url}/v1/revoke"),
            oauth_authorization_server: Some(format!("{public_url}/.well-known/oauth-authorization-server")),
        },
    );

    let tls = overrides.tls.clone().or_else(|| config.tls.clone()).map(|t| TlsFiles {
        cert: dir.join(t.cert),
        key: dir.join(t.key),
    });
    let listen = overrides.listen.clone().unwrap_or_else(|| config.listen.clone());
    Ok(Authority {
        registry,
        issuer: Arc::new(issuer),
        database,
        dir: dir.to_owned(),
        listen,
        tls,
        config,
        connections,
        rate_limits,
        _lock: lock,
    })
}

/// Adds the retired issuing CAs kept in the directory (`retired/` beside the issuing CA's
/// certificate and key) that have not expired yet: they sign the CRLs of the certificates
/// they signed. An expired one is skipped (its certificates have all expired too).
fn with_retired(
    dir: &Path,
    config: &FileConfig,
    mut ca: CertificateAuthority,
    passphrase: Option<&Passphrase>,
    now: i64,
) -> Result<CertificateAuthority, AuthorityError> {
    let retired = renew::retired_dir(dir, &config.keys.issuing_ca_cert);
    let entries = match std::fs::read_dir(&retired) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ca),
        Err(e) => return Err(io(&retired)(e)),
    };
    let mut pems: Vec<PathBuf> = entries
        .map(|entry| entry.map(|e| e.path()).map_err(io(&retired)))
        .collect::<Result<_, _>>()?;
    pems.retain(|p| p.extension().is_some_and(|e| e == "pem"));
    pems.sort();
    for pem_path in pems {
        let pem = std::fs::read_to_string(&pem_path).map_err(io(&pem_path))?;
        let info = ca_certificate_info(&pem, "a retired issuing CA")?;
        if info.not_after <= now {
            tracing::info!(certificate = %pem_path.display(), "a retired issuing CA has expired; its CRL is no longer published");
            continue;
        }
        let Some(key_id) = pem_path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let (_, key_path) = renew::retired_paths(dir, config, key_id);
        let key = keyfile::read(&key_path, passphrase).map_err(|source| AuthorityError::KeyFile {
            path: key_path.clone(),
            source,
        })?;
        ca = ca.with_retired(Arc::new(key), pem)?;
    }
    Ok(ca)
}

/// The database of the authority in `dir`, as its configuration names it (or `url`, when
/// given), for the commands that work on it offline (`audit verify`, `keys`).
pub async fn open_database(dir: &Path, url: Option<&str>) -> Result<Database, AuthorityError> {
    let url = match url {
        Some(url) => url.to_owned(),
        None => database_url(dir, FileConfig::load(dir)?.database_url.as_deref()),
    };
    Ok(Database::connect(&url).await?)
}
