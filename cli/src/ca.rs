//! `aip-ca`: operate the AIP identity authority. Thin: flags in, library calls, output out.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{agents, authority, issuer, keygen, token, tokens, verify};

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
    /// Revoke an AAT, a session, a user or an agent.
    Revoke(issuer::RevokeArgs),
    /// Fetch an AAT for an agent (as the agent does at startup) and print it.
    Token(token::Args),
    /// The token issuer's AAT signing keys.
    #[command(subcommand)]
    Keys(issuer::KeysCommand),
    /// Fetch the certificate revocation list.
    Crl(tokens::CrlArgs),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Generate a key pair and write it to an encrypted key file.
    Keygen(keygen::Args),
    /// Verify an AAT against a JWKS and print its claims.
    Verify(verify::Args),
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
        Command::Agents(command) => agents::agents(command),
        Command::RegistrationToken(command) => tokens::registration_token(command),
        Command::AccessToken(command) => tokens::access_token(command),
        Command::Users(command) => issuer::users(command),
        Command::Revoke(args) => issuer::revoke(args),
        Command::Keys(command) => issuer::keys(command),
        Command::Token(args) => token::run(args),
        Command::Crl(args) => tokens::crl(args),
        Command::Audit(AuditCommand::Verify(args)) => authority::audit_verify(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Verify(args) => verify::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => error.report(),
    }
}
