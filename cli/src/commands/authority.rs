//! `aip-ca init`, `aip-ca serve` and `aip-ca audit verify`: the commands that work on an
//! authority directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aip_aat::clock::{Clock as _, SystemClock};
use aip_aat::keys::Algorithm;
use aip_issuer::directory::LocalDirectory;
use aip_issuer::store::IssuerStore;
use aip_registry::audit::ChainVerifier;
use aip_registry::authority::{self, AuthorityError, InitOptions, Initialized, Overrides};
use aip_registry::config::{FileConfig, TlsFiles, env};
use aip_registry::store::{SqlStore, Store};
use serde_json::json;

use crate::output::{CliError, EXIT_REJECTED, print_json, print_line, warn};
use crate::passphrase::{Choice, PassphraseArgs};

/// Where the authority lives.
#[derive(clap::Args, Debug)]
pub(crate) struct DirArgs {
    /// Authority directory.
    #[arg(long, value_name = "DIR", env = env::DIR, default_value = "aip-data")]
    pub(crate) dir: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum KeyAlg {
    /// Ed25519 (EdDSA).
    Ed25519,
    /// NIST P-256 (ES256).
    P256,
}

impl KeyAlg {
    pub(crate) fn algorithm(self) -> Algorithm {
        match self {
            Self::Ed25519 => Algorithm::EdDSA,
            Self::P256 => Algorithm::ES256,
        }
    }
}

/// Settings of a new authority.
#[derive(clap::Args, Debug)]
pub(crate) struct NewAuthorityArgs {
    /// SPIFFE trust domain of agent identities.
    #[arg(long, value_name = "D", default_value = "aip.local")]
    trust_domain: String,
    /// Key algorithm of the CA and registry keys.
    #[arg(long, value_enum, default_value = "ed25519")]
    alg: KeyAlg,
    /// Base URL clients will use (default: http://<listen address>).
    #[arg(long, value_name = "URL", env = env::PUBLIC_URL)]
    public_url: Option<String>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    dir: DirArgs,
    #[command(flatten)]
    new: NewAuthorityArgs,
    /// Address `serve` will listen on.
    #[arg(long, value_name = "ADDR", env = env::LISTEN)]
    listen: Option<String>,
    /// PostgreSQL URL instead of the embedded SQLite database.
    #[arg(long, value_name = "URL", env = env::DATABASE_URL)]
    database_url: Option<String>,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    /// Print machine-readable JSON (includes the admin token).
    #[arg(long)]
    json: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start: {e}")))
}

fn authority_error(e: AuthorityError) -> CliError {
    match e {
        e @ AuthorityError::AlreadyInitialized(_) => {
            CliError::new(e).hint("use another --dir; an existing authority is never overwritten")
        }
        e @ AuthorityError::NotInitialized(_) => CliError::new(e),
        AuthorityError::KeyFile {
            path,
            source: aip_aat::keyfile::KeyFileError::WrongPassphrase,
        } => CliError::new(format!("{}: wrong passphrase", path.display()))
            .hint("the keys were encrypted with the passphrase given to `aip-ca init`"),
        AuthorityError::KeyFile {
            path,
            source: aip_aat::keyfile::KeyFileError::PassphraseRequired,
        } => CliError::new(format!("{}: the key is encrypted", path.display()))
            .hint("give the passphrase with --passphrase-file, AIP_PASSPHRASE or at the prompt"),
        e => CliError::new(e),
    }
}

async fn create(
    dir: &std::path::Path,
    new: &NewAuthorityArgs,
    listen: Option<String>,
    database_url: Option<String>,
    choice: &Choice,
) -> Result<Initialized, CliError> {
    let options = InitOptions {
        dir: dir.to_owned(),
        trust_domain: new.trust_domain.clone(),
        algorithm: new.alg.algorithm(),
        listen,
        public_url: new.public_url.clone(),
        database_url,
    };
    let init = authority::init(&options, choice.protection(), Arc::new(SystemClock))
        .await
        .map_err(authority_error)?;
    // The token issuer's first signing key, in the same database.
    let url = authority::database_url(&init.dir, init.config.database_url.as_deref());
    let store = SqlStore::connect(&url)
        .await
        .map_err(|e| CliError::new(format!("cannot open the database: {e}")))?;
    let created = aip_issuer::keys::ensure_key(
        &IssuerStore::new(&store),
        new.alg.algorithm(),
        choice.protection(),
        SystemClock.now(),
    )
    .await;
    store.close().await;
    created.map_err(CliError::new)?;
    Ok(init)
}

fn report_init(init: &Initialized, json: bool) -> Result<(), CliError> {
    let root = init.dir.join(&init.config.keys.root_ca_cert);
    if json {
        return print_json(
            &json!({
                "dir": init.dir,
                "trust_domain": init.config.trust_domain,
                "public_url": init.config.public_url,
                "root_ca": root,
                "admin_token": init.admin_token.expose(),
                "admin_token_id": init.admin_token_id,
            }),
            true,
        );
    }
    print_line(format_args!(
        "created the authority in {} (trust domain {})",
        init.dir.display(),
        init.config.trust_domain
    ))?;
    print_line(format_args!("root CA certificate: {}", root.display()))?;
    print_line(format_args!(
        "admin token (shown only now; keep it safe): {}",
        init.admin_token.expose()
    ))?;
    print_line("use it with: export AIP_TOKEN=<admin token>")
}

pub(crate) fn init(args: InitArgs) -> Result<ExitCode, CliError> {
    if authority::exists(&args.dir.dir) {
        return Err(authority_error(AuthorityError::AlreadyInitialized(format!(
            "{} already holds an authority",
            args.dir.dir.display()
        ))));
    }
    let choice = args.passphrase.for_new_key()?;
    if matches!(choice, Choice::Insecure) {
        warn("the authority's keys are stored without a passphrase; use this for tests and demos only");
    }
    let init = runtime()?.block_on(create(
        &args.dir.dir,
        &args.new,
        args.listen,
        args.database_url,
        &choice,
    ))?;
    report_init(&init, args.json)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Address to listen on (default from aip.toml: 127.0.0.1:8443). Non-loopback needs TLS.
    #[arg(long, value_name = "ADDR", env = env::LISTEN)]
    listen: Option<String>,
    /// Database URL (overrides aip.toml).
    #[arg(long, value_name = "URL", env = env::DATABASE_URL)]
    database_url: Option<String>,
    /// TLS certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PKCS#8 PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Settings used when no authority exists yet and `serve` creates one.
    #[command(flatten)]
    new: NewAuthorityArgs,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

fn absolute(path: PathBuf) -> Result<PathBuf, CliError> {
    std::path::absolute(&path).map_err(|e| CliError::new(format!("{}: {e}", path.display())))
}

pub(crate) fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    crate::logging::init();
    runtime()?.block_on(serve_async(args))
}

async fn serve_async(args: ServeArgs) -> Result<ExitCode, CliError> {
    let dir = args.dir.dir.clone();
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: absolute(cert)?,
            key: absolute(key)?,
        }),
        _ => None,
    };
    let mut choice = None;
    if !authority::exists(&dir) {
        let new_choice = args.passphrase.for_new_key()?;
        if new_choice.passphrase().is_none() {
            warn("the authority's keys are stored without a passphrase; use this for tests and demos only");
        }
        let init = create(
            &dir,
            &args.new,
            args.listen.clone(),
            args.database_url.clone(),
            &new_choice,
        )
        .await?;
        tracing::info!(dir = %init.dir.display(), "created a new authority");
        report_init(&init, false)?;
        choice = Some(new_choice);
    }
    let encrypted = authority::keys_encrypted(&dir).map_err(authority_error)?;
    let choice = match choice {
        Some(choice) => choice,
        None if encrypted => args.passphrase.for_existing_key()?,
        None => Choice::Insecure,
    };
    let overrides = Overrides {
        listen: args.listen,
        database_url: args.database_url,
        public_url: args.new.public_url,
        tls,
    };
    let opened = authority::open(&dir, choice.passphrase(), &overrides, Arc::new(SystemClock))
        .await
        .map_err(authority_error)?;
    let addr: SocketAddr = opened
        .listen
        .parse()
        .map_err(|_| CliError::new(format!("listen address {:?} is not IP:PORT", opened.listen)))?;
    if !addr.ip().is_loopback() && opened.tls.is_none() {
        return Err(CliError::new(format!("refusing to listen on {addr} without TLS"))
            .hint("pass --tls-cert and --tls-key, or listen on a loopback address such as 127.0.0.1:8443"));
    }
    let registry = opened.registry.clone();
    let issuer = start_issuer(&opened, &choice).await?;
    let router = aip_registry::http::router_with(registry.clone(), aip_issuer::http::routes(issuer.clone()));
    let handle = axum_server::Handle::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let background = {
        let mut stop = stop_rx.clone();
        tokio::spawn(registry.clone().run_background(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }))
    };
    let issuer_background = {
        let mut stop = stop_rx.clone();
        tokio::spawn(issuer.run_background(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }))
    };
    tokio::spawn({
        let handle = handle.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing requests in flight");
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
            let _ = stop_tx.send(true);
        }
    });
    let scheme = if opened.tls.is_some() { "https" } else { "http" };
    tokio::spawn({
        let handle = handle.clone();
        async move {
            if let Some(bound) = handle.listening().await {
                tracing::info!(address = %format!("{scheme}://{bound}"), "listening");
            }
        }
    });
    let served = match &opened.tls {
        Some(tls) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(|e| CliError::new(format!("TLS certificate or key: {e}")))?;
            axum_server::bind_rustls(addr, config)
                .handle(handle)
                .serve(router.into_make_service_with_connect_info::<SocketAddr>())
                .await
        }
        None => {
            axum_server::bind(addr)
                .handle(handle)
                .serve(router.into_make_service_with_connect_info::<SocketAddr>())
                .await
        }
    };
    served.map_err(|e| CliError::new(format!("cannot serve on {addr}: {e}")))?;
    let mut stop = stop_rx;
    let _ = stop.wait_for(|stop| *stop).await;
    let _ = background.await;
    let _ = issuer_background.await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The token issuer over the opened authority: same database, keys published by the registry.
async fn start_issuer(
    opened: &authority::Opened,
    choice: &Choice,
) -> Result<Arc<aip_issuer::service::Issuer>, CliError> {
    let store = IssuerStore::new(&opened.store);
    let now = SystemClock.now();
    // Authorities created before the issuer existed get their first key now.
    aip_issuer::keys::ensure_key(&store, Algorithm::EdDSA, choice.protection(), now)
        .await
        .map_err(CliError::new)?;
    let keys = Arc::new(
        aip_issuer::keys::SigningKeys::load(&store, choice.passphrase(), now)
            .await
            .map_err(CliError::new)?,
    );
    let public_url = opened.registry.settings().public_url.clone();
    let settings = aip_issuer::config::IssuerSettings::from_section(&public_url, &opened.config.issuer, &opened.dir)
        .map_err(|e| {
            CliError::new(format!(
                "{}: {e}",
                opened.dir.join(aip_registry::config::CONFIG_FILE).display()
            ))
        })?;
    let directory = LocalDirectory::new(opened.registry.clone());
    let issuer = aip_issuer::service::Issuer::new(settings, directory, store, keys.clone(), Arc::new(SystemClock))
        .await
        .map_err(CliError::new)?;
    opened.registry.attach_token_issuer(
        keys,
        aip_registry::api::IssuerEndpoints {
            issuer: public_url.clone(),
            challenge_endpoint: format!("{public_url}/v1/challenge"),
            token_endpoint: format!("{public_url}/v1/token"),
            revocation_endpoint: format!("{public_url}/v1/revoke"),
        },
    );
    Ok(Arc::new(issuer))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct AuditVerifyArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Database URL (default: the one the authority directory uses).
    #[arg(long, value_name = "URL", env = env::DATABASE_URL)]
    database_url: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn audit_verify(args: AuditVerifyArgs) -> Result<ExitCode, CliError> {
    runtime()?.block_on(async move {
        let url = match args.database_url {
            Some(url) => url,
            None => {
                let config = FileConfig::load(&args.dir.dir).map_err(CliError::new)?;
                config
                    .database_url
                    .unwrap_or_else(|| SqlStore::sqlite_url(&args.dir.dir.join(authority::DATABASE_FILE)))
            }
        };
        let store = SqlStore::connect(&url)
            .await
            .map_err(|e| CliError::new(format!("cannot open the database: {e}")))?;
        let (head_seq, head_hash) = store.audit_head().await.map_err(CliError::new)?;
        let mut chain = ChainVerifier::default();
        let mut after = 0;
        let outcome = loop {
            let records = store.audit_records(after, 1000).await.map_err(CliError::new)?;
            let Some(last) = records.last().map(|r| r.seq) else {
                break std::mem::take(&mut chain).finish(head_seq, &head_hash);
            };
            if let Some(broken) = records.iter().find_map(|r| chain.push(r).err()) {
                break Err(broken);
            }
            after = last;
        };
        store.close().await;
        match outcome {
            Ok(count) => {
                if args.json {
                    print_json(&json!({"ok": true, "records": count}), false)?;
                } else {
                    print_line(format_args!("audit log intact: {count} records, head {head_hash}"))?;
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(broken) => {
                if args.json {
                    print_json(&json!({"ok": false, "error": broken.to_string()}), false)?;
                }
                Err(CliError::new(format!("audit log broken: {broken}")).exit_code(EXIT_REJECTED))
            }
        }
    })
}
