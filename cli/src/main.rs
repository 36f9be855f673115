//! `aip-ca`: operate the AIP identity authority. Thin: flags in, library calls, output out.

mod commands;
mod output;
mod passphrase;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Operate the AIP identity authority for AI agents.
#[derive(Parser)]
#[command(name = "aip-ca", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a key pair and write it to an encrypted key file.
    Keygen(commands::keygen::Args),
    /// Verify an AAT against a JWKS and print its claims.
    Verify(commands::verify::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => commands::keygen::run(args),
        Command::Verify(args) => commands::verify::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => error.report(),
    }
}
