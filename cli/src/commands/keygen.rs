//! `aip-ca keygen`: a new key pair in an encrypted key file.

use std::path::PathBuf;
use std::process::ExitCode;

use aip_aat::keyfile::{self, KdfParams, KeyFileError, Protection};
use aip_aat::keys::{Algorithm, KeyPair};
use serde_json::json;

use crate::output::{CliError, print_json, print_line, warn};
use crate::passphrase::{Choice, PassphraseArgs};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Key algorithm.
    #[arg(long, value_enum, default_value = "ed25519")]
    alg: KeyAlg,
    /// Where to write the key file (created with mode 0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum KeyAlg {
    /// Ed25519 (EdDSA).
    Ed25519,
    /// NIST P-256 (ES256).
    P256,
}

pub(crate) fn run(args: Args) -> Result<ExitCode, CliError> {
    let alg = match args.alg {
        KeyAlg::Ed25519 => Algorithm::EdDSA,
        KeyAlg::P256 => Algorithm::ES256,
    };
    if args.out.exists() {
        return Err(CliError::new(format!("{} already exists", args.out.display()))
            .hint("choose another --out path; existing keys are never overwritten"));
    }
    let choice = args.passphrase.for_new_key()?;
    let key = KeyPair::generate(alg).map_err(CliError::new)?;
    let protection = match &choice {
        Choice::Passphrase(p) => Protection::Passphrase(p, KdfParams::default()),
        Choice::Insecure => Protection::InsecureNone,
    };
    keyfile::write(&args.out, &key, protection).map_err(|e| match e {
        KeyFileError::AlreadyExists => CliError::new(format!("{} already exists", args.out.display())),
        e => CliError::new(format!("cannot write {}: {e}", args.out.display())),
    })?;
    let encrypted = matches!(choice, Choice::Passphrase(_));
    let jwk = serde_json::to_value(key.public_key().to_jwk()).map_err(CliError::new)?;
    if args.json {
        print_json(
            &json!({"path": args.out, "alg": alg.as_str(), "kid": key.key_id(), "encrypted": encrypted, "jwk": jwk}),
            true,
        )?;
    } else {
        let how = if encrypted { "encrypted" } else { "UNENCRYPTED" };
        print_line(format_args!(
            "wrote {alg} key to {} ({how}, mode 0600)",
            args.out.display()
        ))?;
        print_line(format_args!("kid: {}", key.key_id()))?;
        print_line(format_args!("jwk: {jwk}"))?;
    }
    if !encrypted {
        warn("the key is stored without a passphrase; use such keys for tests and demos only");
    }
    Ok(ExitCode::SUCCESS)
}
