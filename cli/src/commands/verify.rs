//! `aip-ca verify`: check an AAT offline against a JWKS (spec 7.5.3 steps 1–6).

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use aip_aat::clock::{Clock, FixedClock, SystemClock};
use aip_aat::keys::{JwkSet, Jwks};
use aip_aat::token::{UnverifiedAat, Validation};
use serde_json::{Value, json};

use crate::output::{CliError, EXIT_REJECTED, print_json};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The AAT, or `-` to read it from standard input.
    #[arg(long, value_name = "TOKEN|-")]
    aat: String,
    /// JWK Set file with the issuer's public keys (e.g. a saved `GET /v1/jwks`).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "issuer_url",
        conflicts_with = "issuer_url"
    )]
    jwks: Option<PathBuf>,
    /// Fetch the keys from this authority's `GET /v1/jwks` instead.
    #[arg(long, value_name = "URL")]
    issuer_url: Option<String>,
    /// Trust exactly these CA certificates (PEM) for the authority's TLS certificate.
    #[arg(long, value_name = "FILE", requires = "issuer_url")]
    ca_cert: Option<PathBuf>,
    /// The audience this verifier expects in `aud`.
    #[arg(long, value_name = "AUD")]
    audience: String,
    /// Accept only this issuer (`iss`); repeat for several.
    #[arg(long = "issuer", value_name = "ISS")]
    issuers: Vec<String>,
    /// Evaluate at this Unix time instead of now (e.g. to examine an incident).
    #[arg(long, value_name = "UNIX_SECONDS")]
    at: Option<i64>,
    /// Report failures as JSON on stdout too.
    #[arg(long)]
    json: bool,
}

fn fetch_jwks(url: &str, ca_cert: Option<&std::path::Path>) -> Result<Jwks, CliError> {
    let ca = ca_cert
        .map(|path| std::fs::read(path).map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display()))))
        .transpose()?;
    let client = aip_api::client::Client::with_roots(url, None, ca.as_deref()).map_err(CliError::new)?;
    crate::output::runtime()?
        .block_on(client.jwks())
        .map_err(crate::remote::api_error)
}

pub(crate) fn run(args: Args) -> Result<ExitCode, CliError> {
    let token = if args.aat == "-" {
        let mut text = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| CliError::new(format!("cannot read the AAT from standard input: {e}")))?;
        text
    } else {
        args.aat.clone()
    };
    let (jwks, source) = match (&args.jwks, &args.issuer_url) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?;
            let jwks: Jwks = serde_json::from_str(&text).map_err(|e| {
                CliError::new(format!("{} is not a JWK Set: {e}", path.display()))
                    .hint("expected {\"keys\": [...]}, as served at /v1/jwks")
            })?;
            (jwks, path.display().to_string())
        }
        (None, Some(url)) => (fetch_jwks(url, args.ca_cert.as_deref())?, format!("{url}/v1/jwks")),
        (None, None) => return Err(CliError::new("give --jwks FILE or --issuer-url URL")),
    };
    let keys = JwkSet::from_jwks(&jwks).map_err(|e| CliError::new(format!("{source}: {e}")))?;
    if keys.is_empty() {
        return Err(CliError::new(format!("{source} holds no Ed25519 or P-256 signing key")));
    }
    let mut validation = Validation::new(&args.audience);
    if !args.issuers.is_empty() {
        validation = validation.with_trusted_issuers(args.issuers.iter().cloned());
    }
    let clock: Box<dyn Clock> = match args.at {
        Some(at) => Box::new(FixedClock::new(at)),
        None => Box::new(SystemClock),
    };
    let verified = UnverifiedAat::parse(token.trim()).and_then(|t| t.verify(&keys, &*clock, &validation));
    match verified {
        Ok(aat) => {
            let claims: Value = serde_json::from_slice(aat.payload_json()).map_err(CliError::new)?;
            print_json(&claims, true)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if args.json {
                print_json(
                    &json!({"valid": false, "aat_error": e.aat_error(), "reason": e.to_string()}),
                    false,
                )?;
            }
            CliError::new(format_args!("invalid AAT: {}: {e}", e.aat_error()))
                .exit_code(EXIT_REJECTED)
                .report();
            Ok(ExitCode::from(EXIT_REJECTED))
        }
    }
}
