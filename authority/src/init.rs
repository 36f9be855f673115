//! Creating an authority: what `aip-ca init` (and the first `aip-ca serve`) makes.
//!
//! ```text
//! DIR/aip.toml              configuration (mode 0600)
//! DIR/aip.db                SQLite database (unless database_url names another; mode 0600)
//! DIR/admin-token           the first admin token, when it is not printed (mode 0600)
//! DIR/ca/root.pem           root CA certificate (the trust anchor to distribute)
//! DIR/ca/issuing.pem        issuing CA certificate
//! DIR/keys/root-ca.key      root CA key (needed only by init; may be moved offline)
//! DIR/keys/issuing-ca.key   issuing CA key
//! DIR/keys/registry.key     registry attestation key
//! ```
//!
//! Keys are encrypted key files (see `aip_aat::keyfile`), all under one passphrase; the token
//! issuer's signing key is kept, encrypted under the same passphrase, in the database.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aip_aat::clock::Clock;
use aip_aat::keyfile::{self, Protection};
use aip_aat::keys::{Algorithm, KeyError, KeyPair};
use aip_aat::secret::SecretString;
use aip_api::registry::Role;
use aip_db::{Checkpointer, Database};
use aip_issuer::keys::ensure_key;
use aip_issuer::store::IssuerStore;
use aip_registry::ca::{CertificateAuthority, create_ca_certificates};
use aip_registry::service::Registry;
use aip_registry::store::SqlStore;

use crate::config::{CONFIG_FILE, CONFIG_VERSION, ConfigError, DEFAULT_LISTEN, FileConfig, KeyFiles};
use crate::error::{AuthorityError, io};

/// The SQLite database file in an authority directory.
pub const DATABASE_FILE: &str = "aip.db";
/// The file the first admin token is written to when it is not printed.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

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
    configured.map_or_else(|| Database::sqlite_url(&dir.join(DATABASE_FILE)), str::to_owned)
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

/// Writes `contents` to a new file at `path`, readable and writable by its owner only (0600).
fn write_private(path: &Path, contents: &[u8]) -> Result<(), AuthorityError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io(path))
}

/// Writes the first admin token of the new authority `init` to [`ADMIN_TOKEN_FILE`] in its
/// directory (mode 0600), for when it is not to be printed; returns the file's path.
pub fn save_admin_token(init: &Initialized) -> Result<PathBuf, AuthorityError> {
    let path = init.dir.join(ADMIN_TOKEN_FILE);
    write_private(&path, format!("{}\n", init.admin_token.expose()).as_bytes())?;
    Ok(path)
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

    aip_registry::config::check_trust_domain(&options.trust_domain).map_err(|m| ConfigError::Invalid {
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

    let listen = options.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
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
        connections: Default::default(),
        rate_limits: Default::default(),

        audit: Default::default(),
    };
    let config_path = dir.join(CONFIG_FILE);
    let settings = config.registry_settings(&config_path)?;
    let text = config.to_toml().map_err(|e| ConfigError::Parse {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    write_private(
        &config_path,
        format!("# AIP identity authority configuration\n{text}").as_bytes(),
    )?;

    // The records `init` makes end with a checkpoint signed by the registry key.
    let checkpointer = Checkpointer::new(registry_key.clone(), config.audit.checkpoint_every, clock.clone());
    let db = Database::connect(&database_url(dir, config.database_url.as_deref()))
        .await?
        .with_checkpoints(checkpointer);
    let (seq, _) = db.audit_head().await?;
    if seq > 0 {
        db.close().await;
        return Err(AuthorityError::AlreadyInitialized(
            "the database already holds an authority".into(),
        ));
    }
    let now = clock.now();
    let ca = CertificateAuthority::new(&settings.trust_domain, issuing, certificates)?;
    let registry = Registry::new(Arc::new(SqlStore::new(db.clone())), ca, registry_key, settings, clock);
    let minted = registry
        .issue_access_token(Role::Admin, Some("initial admin".into()), None, "system:init".into())
        .await;
    // The token issuer's first signing key, in the same database, under the same passphrase.
    let issuer_key = match &minted {
        Ok(_) => ensure_key(&IssuerStore::new(&db), options.algorithm, protection, now).await,
        Err(_) => Ok(()),
    };
    let checkpoint = match (&minted, &issuer_key) {
        (Ok(_), Ok(())) => db.checkpoint().await.map(|_| ()),
        _ => Ok(()),
    };
    db.close().await;
    let (admin_token, admin_token_id) = minted?;
    issuer_key?;
    checkpoint?;
    Ok(Initialized {
        dir: dir.to_owned(),
        config,
        admin_token,
        admin_token_id,
    })
}
