//! `aip-ca registration-token create|list|revoke`, `aip-ca access-token create|list|revoke`
//! and `aip-ca crl`.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use aip_aat::clock::parse_duration;
use aip_api::client::{Client, ClientError};
use aip_api::registry::{CreateAccessTokenRequest, CreateRegistrationTokenRequest};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

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
        /// A label for people.
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// List registration tokens (never their secrets).
    List {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a registration token by its id.
    Revoke {
        /// The token's id (from `list` or `create`).
        token_id: String,
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
        /// How long it is valid: 30m, 24h, 90d… (default: until revoked).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// List access tokens (never their secrets).
    List {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an access token by its id; every replica refuses it within a second.
    Revoke {
        /// The token's id (from `list` or `create`).
        token_id: String,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `--expires` in seconds.
fn lifetime(expires: &str) -> Result<u64, CliError> {
    let seconds = parse_duration(expires).map_err(|e| CliError::new(format!("--expires: {e}")))?;
    Ok(u64::try_from(seconds).unwrap_or(0))
}

/// A time of a token, or `-`.
fn when(t: Option<OffsetDateTime>) -> String {
    t.map_or_else(|| "-".to_owned(), rfc3339)
}

/// Sends one request with the token given and prints its answer: as JSON with `--json`, else
/// as `text` writes it.
fn answer<T: Serialize, F: Future<Output = Result<T, ClientError>>>(
    remote: &RemoteArgs,
    json: bool,
    request: impl FnOnce(Client) -> F,
    text: impl FnOnce(&T) -> Result<(), CliError>,
) -> Result<ExitCode, CliError> {
    remote.require_token()?;
    let client = remote.client()?;
    let value = runtime()?.block_on(request(client)).map_err(api_error)?;
    if json {
        print_json(&serde_json::to_value(&value).map_err(CliError::new)?, true)?;
    } else {
        text(&value)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn registration_token(command: RegistrationTokenCommand) -> Result<ExitCode, CliError> {
    match command {
        RegistrationTokenCommand::Create {
            uses,
            expires,
            label,
            remote,
            json,
        } => {
            let request = CreateRegistrationTokenRequest {
                uses,
                expires_in: lifetime(&expires)?,
                label,
            };
            answer(
                &remote,
                json,
                |client| async move { client.create_registration_token(&request).await },
                |token| {
                    print_line(format_args!(
                        "registration token {} for {} registration(s), valid until {}",
                        token.token_id,
                        token.uses,
                        rfc3339(token.expires_at)
                    ))?;
                    print_line(format_args!("token (shown only now): {}", token.token.expose()))
                },
            )
        }
        RegistrationTokenCommand::List { remote, json } => answer(
            &remote,
            json,
            |client| async move { client.registration_tokens().await },
            |list| {
                if list.registration_tokens.is_empty() {
                    return print_line("no registration tokens");
                }
                print_line(
                    "ID              USES  EXPIRES               LAST USED             REVOKED               LABEL",
                )?;
                for t in &list.registration_tokens {
                    print_line(format_args!(
                        "{:<14}  {:>4}  {:<20}  {:<20}  {:<20}  {}",
                        t.token_id,
                        t.uses_remaining,
                        rfc3339(t.expires_at),
                        when(t.last_used_at),
                        when(t.revoked_at),
                        t.label.as_deref().unwrap_or("-"),
                    ))?;
                }
                Ok(())
            },
        ),
        RegistrationTokenCommand::Revoke { token_id, remote, json } => answer(
            &remote,
            json,
            |client| async move { client.revoke_registration_token(&token_id).await },
            |token| {
                print_line(format_args!(
                    "registration token {} revoked at {}",
                    token.token_id,
                    when(token.revoked_at)
                ))
            },
        ),
    }
}

pub(crate) fn access_token(command: AccessTokenCommand) -> Result<ExitCode, CliError> {
    match command {
        AccessTokenCommand::Create {
            role,
            label,
            expires,
            remote,
            json,
        } => {
            let request = CreateAccessTokenRequest {
                role,
                label,
                expires_in: expires.as_deref().map(lifetime).transpose()?,
            };
            answer(
                &remote,
                json,
                |client| async move { client.create_access_token(&request).await },
                |token| {
                    let until = token
                        .expires_at
                        .map_or_else(String::new, |t| format!(", valid until {}", rfc3339(t)));
                    print_line(format_args!(
                        "{} token {}{until} (shown only now): {}",
                        token.role,
                        token.token_id,
                        token.token.expose()
                    ))
                },
            )
        }
        AccessTokenCommand::List { remote, json } => answer(
            &remote,
            json,
            |client| async move { client.access_tokens().await },
            |list| {
                print_line(
                    "ID              ROLE    CREATED               EXPIRES               LAST USED             REVOKED               LABEL",
                )?;
                for t in &list.access_tokens {
                    print_line(format_args!(
                        "{:<14}  {:<6}  {:<20}  {:<20}  {:<20}  {:<20}  {}",
                        t.token_id,
                        t.role,
                        rfc3339(t.created_at),
                        when(t.expires_at),
                        when(t.last_used_at),
                        when(t.revoked_at),
                        t.label.as_deref().unwrap_or("-"),
                    ))?;
                }
                Ok(())
            },
        ),
        AccessTokenCommand::Revoke { token_id, remote, json } => answer(
            &remote,
            json,
            |client| async move { client.revoke_access_token(&token_id).await },
            |token| {
                print_line(format_args!(
                    "{} token {} revoked at {}",
                    token.role,
                    token.token_id,
                    when(token.revoked_at)
                ))
            },
        ),
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct CrlArgs {
    /// Write the CRL here (DER, or PEM when the name ends in .pem); default: PEM to stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write PEM even to a file not ending in .pem.
    #[arg(long)]
    pem: bool,
    /// The CRL of this issuing CA, current or retired, by its key id (as `aip-ca ca
    /// renew-issuing` prints it); default: the current issuing CA's.
    #[arg(long, value_name = "KEY_ID", value_parser = parse_key_id)]
    issuer: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print machine-readable JSON (the PEM itself when there is no --out).
    #[arg(long)]
    json: bool,
}

/// A key id is an RFC 7638 thumbprint: 43 base64url characters.
fn parse_key_id(text: &str) -> Result<String, String> {
    if text.len() == 43
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a key id (43 base64url characters)"))
    }
}

pub(crate) fn crl(args: CrlArgs) -> Result<ExitCode, CliError> {
    let client = args.remote.client()?;
    let der = runtime()?
        .block_on(async {
            match &args.issuer {
                Some(key_id) => client.issuer_crl(key_id).await,
                None => client.crl().await,
            }
        })
        .map_err(api_error)?;
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
