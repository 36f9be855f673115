//! `aip-ca registration-token create`, `aip-ca access-token create` and `aip-ca crl`.

use std::path::PathBuf;
use std::process::ExitCode;

use aip_aat::clock::parse_duration;
use aip_api::registry::{CreateAccessTokenRequest, CreateRegistrationTokenRequest};
use serde_json::json;

use crate::output::{CliError, print_json, print_line, rfc3339, runtime};
use crate::remote::{RemoteArgs, api_error};

#[derive(clap::Subcommand, Debug)]
pub(crate) enum RegistrationTokenCommand {
    /// Create a registration token (shown once).
    Create {
        /// How many agents it may register.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it is valid: 30m, 24h, 7d….
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        expires: String,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum AccessTokenCommand {
    /// Create an access token (shown once): `reader` for proxies, `admin` for operators.
    Create {
        /// `reader` or `admin`.
        #[arg(long, default_value = "reader")]
        role: String,
        /// A label for people.
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn registration_token(command: RegistrationTokenCommand) -> Result<ExitCode, CliError> {
    let RegistrationTokenCommand::Create {
        uses,
        expires,
        remote,
        json,
    } = command;
    remote.require_token()?;
    let expires_in = parse_duration(&expires).map_err(|e| CliError::new(format!("--expires: {e}")))?;
    let request = CreateRegistrationTokenRequest {
        uses,
        expires_in: u64::try_from(expires_in).unwrap_or(0),
    };
    let token = runtime()?
        .block_on(remote.client()?.create_registration_token(&request))
        .map_err(api_error)?;
    if json {
        print_json(&serde_json::to_value(&token).map_err(CliError::new)?, true)?;
    } else {
        print_line(format_args!(
            "registration token {} for {} registration(s), valid until {}",
            token.token_id,
            token.uses,
            rfc3339(token.expires_at)
        ))?;
        print_line(format_args!("token (shown only now): {}", token.token.expose()))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn access_token(command: AccessTokenCommand) -> Result<ExitCode, CliError> {
    let AccessTokenCommand::Create {
        role,
        label,
        remote,
        json,
    } = command;
    remote.require_token()?;
    let token = runtime()?
        .block_on(
            remote
                .client()?
                .create_access_token(&CreateAccessTokenRequest { role, label }),
        )
        .map_err(api_error)?;
    if json {
        print_json(&serde_json::to_value(&token).map_err(CliError::new)?, true)?;
    } else {
        print_line(format_args!(
            "{} token {} (shown only now): {}",
            token.role,
            token.token_id,
            token.token.expose()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub(crate) struct CrlArgs {
    /// Write the CRL here (DER, or PEM when the name ends in .pem); default: PEM to stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write PEM even to a file not ending in .pem.
    #[arg(long)]
    pem: bool,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print machine-readable JSON (the PEM itself when there is no --out).
    #[arg(long)]
    json: bool,
}

pub(crate) fn crl(args: CrlArgs) -> Result<ExitCode, CliError> {
    let der = runtime()?.block_on(args.remote.client()?.crl()).map_err(api_error)?;
    let pem = aip_aat::pem::encode("X509 CRL", &der);
    match &args.out {
        None if args.json => print_json(&json!({"format": "pem", "bytes": der.len(), "pem": pem}), true)?,
        None => print_line(pem.trim_end())?,
        Some(path) => {
            let as_pem = args.pem || path.extension().is_some_and(|e| e == "pem");
            let bytes = if as_pem { pem.into_bytes() } else { der.clone() };
            std::fs::write(path, bytes).map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
            if args.json {
                print_json(
                    &json!({"path": path, "format": if as_pem { "pem" } else { "der" }, "bytes": der.len()}),
                    true,
                )?;
            } else {
                print_line(format_args!("wrote the CRL to {}", path.display()))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
