//! An authority directory: what `aip-ca init` creates and `aip-ca serve` opens.
//!
//! ```text
//! DIR/aip.toml              configuration
//! DIR/aip.db                SQLite database (unless database_url names another)
//! DIR/ca/root.pem           root CA certificate (the trust anchor to distribute)
//! DIR/ca/issuing.pem        issuing CA certificate
//! DIR/keys/root-ca.key      root CA key (needed only by init; may be moved offline)
//! DIR/keys/issuing-ca.key   issuing CA key
//! DIR/keys/registry.key     registry attestation key
//! ```
//!
//! Keys are encrypted key files (see `aip_aat::keyfile`), all under one passphrase.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aip_aat::clock::Clock;
use aip_aat::keyfile::{self, KeyFileError, Passphrase, Protection};
use aip_aat::keys::{Algorithm, KeyError, KeyPair, Signer};
use aip_aat::secret::SecretString;

use crate::ca::{CaCertificates, CaError, CertificateAuthority, create_ca_certificates};
use crate::config::{CONFIG_FILE, CONFIG_VERSION, ConfigError, FileConfig, KeyFiles, RegistrySettings, TlsFiles};
use crate::service::{Registry, RegistryError};
use crate::store::{Role, SqlStore, Store, StoreError};

/// The SQLite database file in an authority directory.
pub const DATABASE_FILE: &str = "aip.db";

/// The authority could not be created or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// There is already an authority there.
    #[error("{0}")]
    AlreadyInitialized(String),
    /// No authority there.
    #[error("no authority in {0} (run `aip-ca init`)")]
    NotInitialized(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KeyFileError,
    },
    /// A key could not be generated.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The CA certificates could not be made.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuthorityError + '_ {
    move |source| AuthorityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What `aip-ca init` is asked for.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Where the authority directory goes.
    pub dir: PathBuf,
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// Key algorithm for the CA and registry keys.
    pub algorithm: Algorithm,
    /// Address to listen on (default `127.0.0.1:8443`).
    pub listen: Option<String>,
    /// Public base URL (default `http://<listen>`).
    pub public_url: Option<String>,
    /// Database URL (default: SQLite file in the directory).
    pub database_url: Option<String>,
}

/// A new authority.
#[derive(Debug)]
pub struct Initialized {
    /// Its directory.
    pub dir: PathBuf,
    /// Its configuration.
    pub config: FileConfig,
    /// The first admin token (shown once).
    pub admin_token: SecretString,
    /// Its id.
    pub admin_token_id: String,
}

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

/// An opened authority, ready to serve.
#[derive(Debug)]
pub struct Opened {
    /// The registry.
    pub registry: Arc<Registry>,
    /// Its database, for components that share it (the token issuer).
    pub store: Arc<SqlStore>,
    /// The authority directory.
    pub dir: PathBuf,
    /// Address to listen on.
    pub listen: String,
    /// TLS files, resolved against the directory.
    pub tls: Option<TlsFiles>,
    /// The configuration as loaded (before overrides).
    pub config: FileConfig,
}

/// Whether `dir` holds an authority.
pub fn exists(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).exists()
}

/// Whether the authority's keys need a passphrase.
pub fn keys_encrypted(dir: &Path) -> Result<bool, AuthorityError> {
    let config = FileConfig::load(dir)?;
    let path = dir.join(&config.keys.registry_key);
    let text = keyfile::read_text(&path).map_err(|source| AuthorityError::KeyFile {
        path: path.clone(),
        source,
    })?;
    Ok(keyfile::inspect(&text)
        .map_err(|source| AuthorityError::KeyFile { path, source })?
        .encrypted)
}

/// The database URL of the authority in `dir`: `configured`, else its SQLite file.
pub fn database_url(dir: &Path, configured: Option<&str>) -> String {
    configured.map_or_else(|| SqlStore::sqlite_url(&dir.join(DATABASE_FILE)), str::to_owned)
}

/// Creates an authority in `options.dir`. Refuses if one exists there (or in the database).
/// Everything is built in a staging directory beside it and moved into place at the end.
pub async fn init(
    options: &InitOptions,
    protection: Protection<'_>,
    clock: Arc<dyn Clock>,
) -> Result<Initialized, AuthorityError> {
    let dir = &options.dir;
    if exists(dir) {
        return Err(AuthorityError::AlreadyInitialized(format!(
            "{} already holds an authority",
            dir.display()
        )));
    }
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(AuthorityError::AlreadyInitialized(format!(
            "{} exists and is not empty",
            dir.display()
        )));
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let staging = parent.join(format!(
        ".{}.init-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("aip"),
        aip_aat::ids::Jti::random().map_err(|_| KeyError::Random)?
    ));
    let result = build(options, &staging, protection, clock).await;
    match result {
        Ok(mut done) => {
            if dir.exists() {
                std::fs::remove_dir(dir).map_err(io(dir))?;
            }
            std::fs::rename(&staging, dir).map_err(io(dir))?;
            done.dir.clone_from(dir);
            Ok(done)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
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

async fn build(
    options: &InitOptions,
    dir: &Path,
    protection: Protection<'_>,
    clock: Arc<dyn Clock>,
) -> Result<Initialized, AuthorityError> {
    private_dir(dir)?;
    private_dir(&dir.join("keys"))?;
    std::fs::create_dir_all(dir.join("ca")).map_err(io(dir))?;
    let keys = KeyFiles {
        root_ca_cert: "ca/root.pem".into(),
        root_ca_key: "keys/root-ca.key".into(),
        issuing_ca_cert: "ca/issuing.pem".into(),
        issuing_ca_key: "keys/issuing-ca.key".into(),
        registry_key: "keys/registry.key".into(),
    };
    let generate = |relative: &Path| -> Result<Arc<KeyPair>, AuthorityError> {
        let key = KeyPair::generate(options.algorithm)?;
        let path = dir.join(relative);
        keyfile::write(&path, &key, protection).map_err(|source| AuthorityError::KeyFile { path, source })?;
        Ok(Arc::new(key))
    };
    let root = generate(&keys.root_ca_key)?;
    let issuing = generate(&keys.issuing_ca_key)?;
    let registry_key = generate(&keys.registry_key)?;

    crate::config::check_trust_domain(&options.trust_domain).map_err(|m| ConfigError::Invalid {
        path: dir.join(CONFIG_FILE),
        member: "trust_domain",
        message: m.into(),
    })?;
    let certificates = create_ca_certificates(&options.trust_domain, root, issuing.clone(), clock.now())?;
    for (path, pem) in [
        (&keys.root_ca_cert, &certificates.root_pem),
        (&keys.issuing_ca_cert, &certificates.issuing_pem),
    ] {
        let path = dir.join(path);
        std::fs::write(&path, pem).map_err(io(&path))?;
    }

    let listen = options
        .listen
        .clone()
        .unwrap_or_else(|| crate::config::DEFAULT_LISTEN.to_owned());
    let public_url = options.public_url.clone().unwrap_or_else(|| format!("http://{listen}"));
    let config = FileConfig {
        version: CONFIG_VERSION,
        trust_domain: options.trust_domain.clone(),
        registry_id: public_url.trim_end_matches('/').to_owned(),
        public_url,
        listen,
        database_url: options.database_url.clone(),
        keys,
        certificates: Default::default(),
        agents: Default::default(),
        tls: None,
        issuer: Default::default(),
    };
    let config_path = dir.join(CONFIG_FILE);
    let settings = config.settings(&config_path)?;
    let text = config.to_toml().map_err(|e| ConfigError::Parse {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&config_path, format!("# AIP identity authority configuration\n{text}"))
        .map_err(io(&config_path))?;

    let store = Arc::new(SqlStore::connect(&database_url(dir, config.database_url.as_deref())).await?);
    let (seq, _) = store.audit_head().await?;
    if seq > 0 {
        store.close().await;
        return Err(AuthorityError::AlreadyInitialized(
            "the database already holds an authority".into(),
        ));
    }
    let ca = CertificateAuthority::new(&settings.trust_domain, issuing, certificates);
    let registry = Registry::new(store.clone(), ca, registry_key, settings, clock);
    let minted = registry
        .issue_access_token(Role::Admin, Some("initial admin".into()), "system:init".into())
        .await;
    store.close().await;
    let (admin_token, admin_token_id) = minted?;
    Ok(Initialized {
        dir: dir.to_owned(),
        config,
        admin_token,
        admin_token_id,
    })
}

/// Opens the authority in `dir`, unlocking its keys with `passphrase` (ignored for keys stored
/// without one).
pub async fn open(
    dir: &Path,
    passphrase: Option<&Passphrase>,
    overrides: &Overrides,
    clock: Arc<dyn Clock>,
) -> Result<Opened, AuthorityError> {
    if !exists(dir) {
        return Err(AuthorityError::NotInitialized(dir.to_owned()));
    }
    let config = FileConfig::load(dir)?;
    let mut effective = config.clone();
    if let Some(url) = &overrides.public_url {
        effective.public_url.clone_from(url);
    }
    let settings: RegistrySettings = effective.settings(&dir.join(CONFIG_FILE))?;
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
    let store = Arc::new(SqlStore::connect(&url).await?);
    let ca = CertificateAuthority::new(&settings.trust_domain, issuing, certificates);
    let registry = Arc::new(Registry::new(store.clone(), ca, registry_key, settings, clock));
    let tls = overrides.tls.clone().or_else(|| config.tls.clone()).map(|t| TlsFiles {
        cert: dir.join(t.cert),
        key: dir.join(t.key),
    });
    let listen = overrides.listen.clone().unwrap_or_else(|| config.listen.clone());
    Ok(Opened {
        registry,
        store,
        dir: dir.to_owned(),
        listen,
        tls,
        config,
    })
}
