//! `aip-ca ca renew-issuing`: a new issuing CA under the root, made offline in the authority
//! directory (docs/registry.md, "Renewing the issuing CA").

use std::process::ExitCode;
use std::sync::Arc;

use aip_aat::clock::SystemClock;
use aip_authority::AuthorityError;
use aip_authority::renew::{self, Renewed};
use serde_json::json;

use super::authority::{DirArgs, authority_error, runtime};
use crate::output::{CliError, print_json, print_line, rfc3339};
use crate::passphrase::{Choice, PassphraseArgs};

#[derive(clap::Subcommand, Debug)]
pub(crate) enum CaCommand {
    /// Make a new issuing CA under the root (the server must be stopped); the old one keeps
    /// publishing the CRL of the certificates it signed until it expires.
    RenewIssuing(RenewArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct RenewArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// How long the new issuing CA is valid, from now (e.g. 1825d); it may not end after the
    /// root CA.
    #[arg(long, value_name = "DURATION", default_value = "1825d", value_parser = parse_validity)]
    validity: i64,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

fn parse_validity(text: &str) -> Result<i64, String> {
    aip_aat::clock::parse_duration(text)
}

pub(crate) fn ca(command: CaCommand) -> Result<ExitCode, CliError> {
    match command {
        CaCommand::RenewIssuing(args) => renew_issuing(args),
    }
}

fn unix(at: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at).map_or_else(|_| at.to_string(), rfc3339)
}

fn renew_issuing(args: RenewArgs) -> Result<ExitCode, CliError> {
    let dir = &args.dir.dir;
    if !aip_authority::init::exists(dir) {
        return Err(authority_error(AuthorityError::NotInitialized(dir.clone())));
    }
    let choice = if aip_authority::init::keys_encrypted(dir).map_err(authority_error)? {
        args.passphrase.for_existing_key()?
    } else {
        Choice::Insecure
    };
    let renewed = runtime()?
        .block_on(renew::renew_issuing(
            dir,
            choice.protection(),
            args.validity,
            Arc::new(SystemClock),
        ))
        .map_err(|e| match e {
            e @ AuthorityError::InvalidValidity(_) => CliError::new(e).hint(
                "a new issuing CA lives from a day up to the root CA's end; to go past the root, rotate the root \
                 first (docs/registry.md, \"Rotating the root\")",
            ),
            e => authority_error(e),
        })?;
    report(&args, &renewed)?;
    Ok(ExitCode::SUCCESS)
}

fn report(args: &RenewArgs, renewed: &Renewed) -> Result<(), CliError> {
    let public_url = aip_authority::config::FileConfig::load(&args.dir.dir)
        .map(|c| c.public_url.trim_end_matches('/').to_owned())
        .map_err(|e| authority_error(e.into()))?;
    if args.json {
        return print_json(
            &json!({
                "key_id": renewed.key_id,
                "certificate": renewed.certificate,
                "not_before": unix(renewed.not_before),
                "not_after": unix(renewed.not_after),
                "crl_uri": format!("{public_url}/v1/crl/{}", renewed.key_id),
                "completed_interrupted_renewal": renewed.retired.is_none(),
                "retired": renewed.retired.as_ref().map(|r| json!({
                    "key_id": r.key_id,
                    "certificate": r.certificate,
                    "not_after": unix(r.not_after),
                    "labelled_certificates": r.labelled,
                    "crl_uri": format!("{public_url}/v1/crl/{}", r.key_id),
                })),
            }),
            true,
        );
    }
    if renewed.retired.is_none() {
        print_line("completed an interrupted renewal of the issuing CA")?;
    }
    print_line(format_args!(
        "new issuing CA {} (valid {} to {}): {}",
        renewed.key_id,
        unix(renewed.not_before),
        unix(renewed.not_after),
        renewed.certificate.display()
    ))?;
    if let Some(retired) = &renewed.retired {
        print_line(format_args!(
            "retired issuing CA {} (valid to {}): {}",
            retired.key_id,
            unix(retired.not_after),
            retired.certificate.display()
        ))?;
        print_line(format_args!(
            "its CRL stays published at {public_url}/v1/crl/{}",
            retired.key_id
        ))?;
    }
    print_line("start the authority again (aip-ca serve): new agent certificates chain to the new issuing CA")
}
