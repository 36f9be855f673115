//! `aip-ca init`, `aip-ca serve` and `aip-ca audit verify`: the commands that work on an
//! authority directory.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use aip_aat::checkpoint::{CheckpointError, CheckpointReport, TrustedKeys, Unsigned};
use aip_aat::clock::SystemClock;
use aip_aat::keys::Algorithm;
use aip_authority::config::{FileConfig, TlsFiles, env};
use aip_authority::server::ServeError;
use aip_authority::{AuthorityError, InitOptions, Initialized, Overrides};
use aip_db::Database;
use aip_db::audit::AuditError;
use serde_json::json;

use crate::logging::LogArgs;
use crate::output::{CliError, EXIT_REJECTED, print_json, print_line, rfc3339, warn};
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
    /// Print machine-readable JSON (includes the admin token). Without it, the admin token is
    /// printed on a terminal, else written to DIR/admin-token (mode 0600).
    #[arg(long)]
    json: bool,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start: {e}")))
}

pub(crate) fn authority_error(e: AuthorityError) -> CliError {
    match e {
        e @ AuthorityError::InUse(_) => CliError::new(e)
            .hint("stop every `aip-ca serve` using this directory, run the command, then start them again"),
        e @ AuthorityError::InterruptedRenewal(_) => {
            CliError::new(e).hint("run `aip-ca ca renew-issuing` again: it completes the interrupted renewal")
        }
        e @ AuthorityError::AlreadyInitialized(_) => {
            CliError::new(e).hint("use another --dir; an existing authority is never overwritten")
        }
        e @ AuthorityError::NotInitialized(_) => CliError::new(e),
        AuthorityError::KeyFile {
            path,
            source: aip_aat::keyfile::KeyFileError::WrongPassphrase,
        } => CliError::new(format!("{}: wrong passphrase", path.display()))
            .hint("the keys were encrypted with the passphrase chosen when the authority was created (by `aip-ca init` or the first `aip-ca serve`)"),
        AuthorityError::KeyFile {
            path,
            source: aip_aat::keyfile::KeyFileError::PassphraseRequired,
        } => CliError::new(format!("{}: the key is encrypted", path.display()))
            .hint("give the passphrase with --passphrase-file, AIP_PASSPHRASE or at the prompt"),
        e => CliError::new(e),
    }
}

/// What the passphrase of a new authority protects, told before the prompt asks for it twice.
fn new_authority_prompt(dir: &Path) -> String {
    format!(
        "Creating a new authority in {}. Choose a passphrase: it encrypts the authority's CA and \
         registry keys, and `aip-ca serve` asks for it at every start. It is asked twice.",
        dir.display()
    )
}

async fn create(
    dir: &Path,
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
    aip_authority::init(&options, choice.protection(), Arc::new(SystemClock))
        .await
        .map_err(authority_error)
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
    if std::io::stdout().is_terminal() {
        print_line(format_args!(
            "admin token (shown only now; keep it safe): {}",
            init.admin_token.expose()
        ))?;
        return print_line("use it with: export AIP_TOKEN=<admin token>");
    }
    // Output that is not a terminal ends up in logs: the token goes to a file of its own.
    let path = aip_authority::init::save_admin_token(init).map_err(authority_error)?;
    print_line(format_args!(
        "admin token file (readable only by you; the token is shown nowhere else): {}",
        path.display()
    ))?;
    print_line(format_args!(
        "use it with: export AIP_TOKEN=$(cat {}), then keep it safe and delete the file",
        path.display()
    ))
}

pub(crate) fn init(args: InitArgs) -> Result<ExitCode, CliError> {
    if aip_authority::init::exists(&args.dir.dir) {
        return Err(authority_error(AuthorityError::AlreadyInitialized(format!(
            "{} already holds an authority",
            args.dir.dir.display()
        ))));
    }
    let choice = args
        .passphrase
        .for_new_key_explained(&new_authority_prompt(&args.dir.dir))?;
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
    #[command(flatten)]
    log: LogArgs,
}

fn absolute(path: PathBuf) -> Result<PathBuf, CliError> {
    std::path::absolute(&path).map_err(|e| CliError::new(format!("{}: {e}", path.display())))
}

pub(crate) fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    args.log.init("info");
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
    if !aip_authority::init::exists(&dir) {
        let new_choice = args.passphrase.for_new_key_explained(&new_authority_prompt(&dir))?;
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
    let encrypted = aip_authority::init::keys_encrypted(&dir).map_err(authority_error)?;
    let choice = match choice {
        Some(choice) => choice,
        None if encrypted => args.passphrase.for_existing_key_explained(&format!(
            "The passphrase of the authority in {} (it decrypts the CA and registry keys):",
            dir.display()
        ))?,
        None => Choice::Insecure,
    };
    let overrides = Overrides {
        listen: args.listen,
        database_url: args.database_url,
        public_url: args.new.public_url,
        tls,
    };
    let authority = aip_authority::open(&dir, choice.protection(), &overrides, Arc::new(SystemClock))
        .await
        .map_err(authority_error)?;
    authority.serve(shutdown_signal()).await.map_err(|e| match e {
        e @ ServeError::NoTls(_) => CliError::new(e)
            .hint("pass --tls-cert and --tls-key, or listen on a loopback address such as 127.0.0.1:8443"),
        e => CliError::new(e),
    })?;
    Ok(ExitCode::SUCCESS)
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
    /// The registry key that signs checkpoints: its public key (PEM or JWK, as in /v1/jwks)
    /// or its key file (default: the authority directory's registry key file; no passphrase
    /// is needed).
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
    /// Accept records after the last signed checkpoint (a log still being written).
    #[arg(long)]
    allow_unsigned_tail: bool,
    /// Accept a log without any signed checkpoint (written before checkpoints existed).
    #[arg(long)]
    allow_unsigned: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

/// The database of the authority in `dir` (or at `url`), migrations applied.
pub(crate) async fn open_database(dir: &Path, url: Option<&str>) -> Result<Database, CliError> {
    aip_authority::open_database(dir, url).await.map_err(|e| match e {
        AuthorityError::Database(e) => CliError::new(format!("cannot open the database: {e}")),
        e => CliError::new(e),
    })
}

/// The key checkpoints must be signed by: `--public-key`, else the registry key file of the
/// authority directory.
fn checkpoint_key(args: &AuditVerifyArgs) -> Result<TrustedKeys, CliError> {
    let path = match &args.public_key {
        Some(path) => path.clone(),
        None => {
            let config = FileConfig::load(&args.dir.dir).map_err(|e| {
                CliError::new(format!("cannot find the registry key: {e}"))
                    .hint("give the registry's public key with --public-key FILE")
            })?;
            args.dir.dir.join(config.keys.registry_key)
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| CliError::new(format!("{}: {e}", path.display())))?;
    TrustedKeys::from_text(&text).map_err(|e| {
        CliError::new(format!("{}: {e}", path.display()))
            .hint("give the registry's public key (PEM or JWK) or its key file")
    })
}

/// The checkpoint part of `audit verify`'s report.
fn checkpoint_json(report: &CheckpointReport) -> serde_json::Value {
    json!({
        "checkpoint": report.last.as_ref().map(|c| json!({"seq": c.seq, "at": c.at, "kid": c.kid, "head": c.head})),
        "unsigned_tail": report.unsigned,
    })
}

fn checkpoint_line(report: &CheckpointReport) -> String {
    let tail = match report.unsigned {
        0 => String::new(),
        n => format!("; {n} unsigned record(s) after it"),
    };
    match &report.last {
        Some(c) => format!(
            "last signed checkpoint: record {} at {} by key {}{tail}",
            c.seq,
            time::OffsetDateTime::from_unix_timestamp(c.at).map_or_else(|_| c.at.to_string(), rfc3339),
            c.kid
        ),
        None => format!("no signed checkpoint{tail}"),
    }
}

fn checkpoint_error(e: &CheckpointError) -> CliError {
    let error = CliError::new(format!("audit log not verified: {e}")).exit_code(EXIT_REJECTED);
    match e {
        CheckpointError::UnsignedTail { .. } => error.hint(
            "the authority signs its head every `audit.checkpoint_every` records and when it stops; \
             pass --allow-unsigned-tail to accept records written since",
        ),
        CheckpointError::NoCheckpoint { .. } => {
            error.hint("pass --allow-unsigned for a log written before the authority signed checkpoints")
        }
        CheckpointError::UntrustedKey { .. } => {
            error.hint("checkpoints must be signed by the registry key; check --public-key")
        }
        _ => error,
    }
}

pub(crate) fn audit_verify(args: AuditVerifyArgs) -> Result<ExitCode, CliError> {
    let trusted = checkpoint_key(&args)?;
    let unsigned = if args.allow_unsigned {
        Unsigned::Any
    } else if args.allow_unsigned_tail {
        Unsigned::Tail
    } else {
        Unsigned::Refused
    };
    runtime()?.block_on(async move {
        let database = open_database(&args.dir.dir, args.database_url.as_deref()).await?;
        let outcome = database.verify_audit(&trusted, unsigned).await;
        database.close().await;
        match outcome {
            Ok(report) => {
                if args.json {
                    let mut out = json!({"ok": true, "records": report.records, "head": report.head});
                    if let (Some(out), serde_json::Value::Object(more)) =
                        (out.as_object_mut(), checkpoint_json(&report.checkpoints))
                    {
                        out.extend(more);
                    }
                    print_json(&out, false)?;
                } else {
                    print_line(format_args!(
                        "audit log intact: {} records, head {}",
                        report.records, report.head
                    ))?;
                    print_line(checkpoint_line(&report.checkpoints))?;
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(AuditError::Broken(broken)) => {
                if args.json {
                    print_json(&json!({"ok": false, "error": broken.to_string()}), false)?;
                }
                Err(CliError::new(format!("audit log broken: {broken}")).exit_code(EXIT_REJECTED))
            }
            Err(AuditError::Checkpoint(e)) => {
                if args.json {
                    print_json(&json!({"ok": false, "error": e.to_string()}), false)?;
                }
                Err(checkpoint_error(&e))
            }
            Err(e) => Err(CliError::new(e)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_authority_prompt_says_what_the_passphrase_protects_and_that_it_is_asked_twice() {
        let text = new_authority_prompt(Path::new("aip-data"));
        assert!(text.contains("aip-data"), "{text}");
        assert!(text.contains("CA and registry keys"), "{text}");
        assert!(text.contains("every start"), "{text}");
        assert!(text.contains("asked twice"), "{text}");
    }
}
