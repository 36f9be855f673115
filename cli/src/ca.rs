//! `aip-ca`: operate the AIP identity authority. Thin: flags in, library calls, output out.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::commands::{
    agents, authority, backup, delegate, issuer, issuing, keygen, revocations, token, tokens, verify,
};
use crate::manuals;
use crate::output::{CliError, print_line};

/// Operate the AIP identity authority for AI agents.
#[derive(Parser)]
#[command(
    name = "aip-ca",
    version,
    about = "aip-ca: operate the AIP identity authority; key and token tools",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an authority: root and issuing CA, registry key, aip.toml, database, admin token.
    Init(authority::InitArgs),
    /// Run the authority's HTTP API (creates the authority first if there is none).
    Serve(authority::ServeArgs),
    /// Generate an agent key locally and register the agent.
    RegisterAgent(agents::RegisterArgs),
    /// The authority's certificate authority: renew the issuing CA (offline).
    #[command(subcommand)]
    Ca(issuing::CaCommand),
    /// List, inspect, suspend, reactivate, revoke agents; rotate an agent's key.
    #[command(subcommand)]
    Agents(agents::AgentsCommand),
    /// Registration tokens for agent onboarding.
    #[command(subcommand)]
    RegistrationToken(tokens::RegistrationTokenCommand),
    /// Access tokens for operators (admin) and proxies (reader).
    #[command(subcommand)]
    AccessToken(tokens::AccessTokenCommand),
    /// Users who authorize agents with API keys.
    #[command(subcommand)]
    Users(issuer::UsersCommand),
    /// Revoke an AAT, a session, a user, an agent or a delegation.
    Revoke(issuer::RevokeArgs),
    /// Delegations of delegable AATs: revoke one by its revocation id.
    #[command(subcommand)]
    Delegations(issuer::DelegationsCommand),
    /// Fetch an AAT for an agent (as the agent does at startup) and print it.
    Token(token::Args),
    /// Hand part of a delegable AAT to a sub-agent, offline, signed with the agent's own key.
    Delegate(delegate::Args),
    /// The token issuer's AAT signing keys.
    #[command(subcommand)]
    Keys(issuer::KeysCommand),
    /// Fetch the certificate revocation list.
    Crl(tokens::CrlArgs),
    /// Show the current revocation list: revoked agents, users, sessions and AATs, suspended
    /// agents and replaced keys.
    Revocations(revocations::Args),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write one archive of the authority directory while it serves (database copy, keys,
    /// aip.toml).
    Backup(backup::BackupArgs),
    /// Bring an authority back from a backup into a new directory.
    Restore(backup::RestoreArgs),
    /// Generate a key pair and write it to an encrypted key file.
    Keygen(keygen::Args),
    /// Verify an AAT against a JWKS and print its claims; optionally check the authority's
    /// revocation list too.
    Verify(verify::Args),
    /// Print the completion script of aip-ca for a shell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the OpenAPI 3.1 description of the authority's HTTP API (or of aip-proxy's HTTP
    /// listeners), or write both to a directory.
    Openapi {
        /// The description of aip-proxy's listeners (`--serve` and `--listen`) instead of the
        /// authority's.
        #[arg(long, conflicts_with = "out")]
        proxy: bool,
        /// Write `authority.json` and `proxy.json` to this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// Write the manual pages of aip-ca, aip-agent and aip-proxy (one per subcommand too).
    #[command(hide = true)]
    Man {
        /// The directory to write them to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of the audit log.
    Verify(authority::AuditVerifyArgs),
}

/// Runs `aip-ca` on the process's arguments; the exit status to return.
pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => authority::init(args),
        Command::Serve(args) => authority::serve(args),
        Command::RegisterAgent(args) => agents::register(args),
        Command::Ca(command) => issuing::ca(command),
        Command::Agents(command) => agents::agents(command),
        Command::RegistrationToken(command) => tokens::registration_token(command),
        Command::AccessToken(command) => tokens::access_token(command),
        Command::Users(command) => issuer::users(command),
        Command::Revoke(args) => issuer::revoke(args),
        Command::Delegations(command) => issuer::delegations(command),
        Command::Keys(command) => issuer::keys(command),
        Command::Token(args) => token::run(args),
        Command::Delegate(args) => delegate::run(args),
        Command::Crl(args) => tokens::crl(args),
        Command::Revocations(args) => revocations::run(args),
        Command::Audit(AuditCommand::Verify(args)) => authority::audit_verify(args),
        Command::Backup(args) => backup::backup(args),
        Command::Restore(args) => backup::restore(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Completions { shell } => {
            manuals::print_completions(shell, command(), "aip-ca").map(|()| ExitCode::SUCCESS)
        }
        Command::Openapi { proxy, out } => openapi(proxy, out.as_deref()),
        Command::Man { out } => write_manuals(&out),
    };
    match result {
        Ok(code) => code,
        Err(error) => error.report(),
    }
}

/// The definition of `aip-ca`'s command line, for manual pages and completion scripts.
pub fn command() -> clap::Command {
    Cli::command()
}

/// `aip-ca openapi [--proxy | --out DIR]`.
fn openapi(proxy: bool, out: Option<&std::path::Path>) -> Result<ExitCode, CliError> {
    let authority = aip_authority::openapi::description_json;
    let proxy_description = aip_proxy_verifier::openapi::description_json;
    let Some(dir) = out else {
        let json = if proxy { proxy_description() } else { authority() };
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(json.as_bytes())
            .map_err(|e| CliError::new(format!("cannot write the description: {e}")))?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(dir).map_err(|e| CliError::new(format!("cannot create {}: {e}", dir.display())))?;
    for (name, json) in [("authority.json", authority()), ("proxy.json", proxy_description())] {
        let path = dir.join(name);
        std::fs::write(&path, json).map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
        print_line(path.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `aip-ca man --out DIR`: the pages of the three programs; prints the files written, one
/// path a line.
fn write_manuals(dir: &std::path::Path) -> Result<ExitCode, CliError> {
    let programs = [command(), crate::agent::command(), aip_proxy_verifier::cli::command()];
    for path in manuals::write_pages(dir, programs)? {
        print_line(path.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn completions_take_a_known_shell() {
        for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
            assert!(Cli::try_parse_from(["aip-ca", "completions", shell]).is_ok(), "{shell}");
        }
        assert!(Cli::try_parse_from(["aip-ca", "completions", "tcsh"]).is_err());
        assert!(Cli::try_parse_from(["aip-ca", "completions"]).is_err());
    }
}
