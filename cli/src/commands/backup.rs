//! `aip-ca backup` and `aip-ca restore`: one archive of an authority directory, taken while it
//! serves, and an authority brought back from one.

use std::path::PathBuf;
use std::process::ExitCode;

use aip_aat::clock::{Clock as _, SystemClock};
use aip_authority::backup::{Backend, BackupError, BackupReport, RestoreReport};
use aip_authority::config::env;
use serde_json::json;

use crate::commands::authority::DirArgs;
use crate::output::{CliError, print_json, print_line, runtime, warn};

#[derive(clap::Args, Debug)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// The archive to write (a new file; never replaced).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The database URL, when the authority is served with one other than aip.toml's.
    #[arg(long, value_name = "URL", env = env::DATABASE_URL)]
    database_url: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RestoreArgs {
    /// The archive `aip-ca backup` wrote.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// The directory to restore into (missing or empty).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// For a PostgreSQL authority: the database, already restored with `pg_restore`
    /// (default: the restored aip.toml's).
    #[arg(long, value_name = "URL", env = env::DATABASE_URL)]
    database_url: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

fn now() -> i64 {
    SystemClock.now()
}

fn backup_error(e: BackupError) -> CliError {
    match e {
        e @ BackupError::Exists(_) => CliError::new(e).hint("choose a new file name"),
        e @ BackupError::NotEmpty(_) => CliError::new(e).hint("an existing authority is never overwritten"),
        e @ BackupError::Damaged { .. } => {
            CliError::new(e).hint("nothing was restored; use another copy of the backup")
        }
        e => CliError::new(e),
    }
}

/// `aip-ca backup`.
pub(crate) fn backup(args: BackupArgs) -> Result<ExitCode, CliError> {
    let report = runtime()?
        .block_on(aip_authority::backup::backup(
            &args.dir.dir,
            &args.out,
            args.database_url.as_deref(),
            now(),
        ))
        .map_err(backup_error)?;
    for path in &report.skipped {
        warn(format_args!("{}: not a regular file; left out", path.display()));
    }
    report_backup(&report, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn report_backup(report: &BackupReport, json: bool) -> Result<(), CliError> {
    let manifest = &report.manifest;
    let bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    if json {
        return print_json(
            &json!({
                "out": report.out,
                "backend": manifest.backend,
                "created_at": manifest.created_at,
                "database_included": manifest.database.is_some(),
                "files": manifest.files,
            }),
            false,
        );
    }
    print_line(format_args!(
        "backup written to {}: {} files, {bytes} bytes",
        report.out.display(),
        manifest.files.len()
    ))?;
    match manifest.backend {
        Backend::Sqlite => print_line("the SQLite database is included (a consistent copy taken while serving)"),
        Backend::Postgres => print_line(
            "keys and configuration only: back up the PostgreSQL database with pg_dump \
             (docs/registry.md, \"Backup and restore\")",
        ),
    }
}

/// `aip-ca restore`.
pub(crate) fn restore(args: RestoreArgs) -> Result<ExitCode, CliError> {
    let report = runtime()?
        .block_on(aip_authority::backup::restore(
            &args.from,
            &args.data_dir,
            args.database_url.as_deref(),
            now(),
        ))
        .map_err(backup_error)?;
    report_restore(&report, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn report_restore(report: &RestoreReport, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(
            &json!({
                "dir": report.dir,
                "backend": report.manifest.backend,
                "backup_created_at": report.manifest.created_at,
                "files": report.manifest.files.len(),
                "revocation_version": report.advanced.revocation_version,
                "crl_number": report.advanced.crl_number,
                "moved_by": report.advanced.margin,
            }),
            false,
        );
    }
    print_line(format_args!(
        "restored {} files into {}",
        report.manifest.files.len(),
        report.dir.display()
    ))?;
    print_line(format_args!(
        "revocation list version now {}, CRL number {}: past anything published since the backup",
        report.advanced.revocation_version, report.advanced.crl_number
    ))
}
