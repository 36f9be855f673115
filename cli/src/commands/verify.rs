//! `aip-ca verify`: check an AAT offline against a JWKS (spec 7.5.3 steps 1–6); a delegable
//! AAT (`aat+biscuit`) with its whole delegation chain. With `--check-revocation`, then step 7
//! against the authority's current revocation list.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use aip_aat::clock::{Clock, FixedClock, SystemClock};
use aip_aat::keys::{JwkSet, Jwks};
use aip_aat::revocation::RevocationIndex;
use aip_aat::token::{AatError, RevokedBy, UnverifiedAat, Validation, VerifiedAat};
use serde_json::{Value, json};

use crate::output::{CliError, EXIT_FAILURE, EXIT_REJECTED, print_json};

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
    /// For a delegable AAT: principals its chain may have, the user included (2 to 4).
    #[arg(long, value_name = "N", default_value_t = aip_aat::delegation::DEFAULT_MAX_DEPTH,
          value_parser = clap::value_parser!(u8).range(2..=4))]
    max_depth: u8,
    /// After the offline checks, ask the authority at --issuer-url for its current revocation
    /// list: refused when the AAT, its session, its user or an agent on it is revoked (or the
    /// agent suspended). Needs a reader token (or an admin one).
    #[arg(long, requires = "issuer_url")]
    check_revocation: bool,
    /// Bearer token for the revocation list (with --check-revocation).
    #[arg(long, value_name = "T", env = "AIP_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
    if aip_aat::delegation::is_delegable(token.trim()) {
        let validation = validation.with_max_delegation_depth(args.max_depth);
        return verify_delegated(&args, token.trim(), keys, validation, clock.now());
    }
    let verified = UnverifiedAat::parse(token.trim()).and_then(|t| t.verify(&keys, &*clock, &validation));
    let verified = match verified {
        Ok(aat) => match check_revocation(&args, &aat, clock.now())? {
            Some(refusal) => Err(refusal),
            None => Ok(aat),
        },
        Err(e) => Err((e.aat_error(), e.to_string())),
    };
    match verified {
        Ok(aat) => {
            let claims: Value = serde_json::from_slice(aat.payload_json()).map_err(CliError::new)?;
            print_json(&claims, true)?;
            Ok(ExitCode::SUCCESS)
        }
        Err((aat_error, reason)) => reject(&args, aat_error, &reason),
    }
}

/// Reports a refused AAT (as JSON on stdout too with `--json`); the exit status.
fn reject(args: &Args, aat_error: &str, reason: &str) -> Result<ExitCode, CliError> {
    if args.json {
        print_json(
            &json!({"valid": false, "aat_error": aat_error, "reason": reason}),
            false,
        )?;
    }
    CliError::new(format_args!("invalid AAT: {aat_error}: {reason}"))
        .exit_code(EXIT_REJECTED)
        .report();
    Ok(ExitCode::from(EXIT_REJECTED))
}

/// With `--check-revocation`: the authority's current revocation list against `aat` at `now`
/// (spec 7.5.3 step 7). `Some((aat_error, reason))` when it is refused.
fn check_revocation(args: &Args, aat: &VerifiedAat, now: i64) -> Result<Option<(&'static str, String)>, CliError> {
    let Some(url) = args.issuer_url.as_deref().filter(|_| args.check_revocation) else {
        return Ok(None);
    };
    if args.token.is_none() {
        return Err(
            CliError::new("--check-revocation needs a token to read the revocation list")
                .hint("pass --token T or set AIP_TOKEN (a reader token: aip-ca access-token create --role reader)"),
        );
    }
    let ca = args
        .ca_cert
        .as_deref()
        .map(|path| std::fs::read(path).map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display()))))
        .transpose()?;
    let client = aip_api::client::Client::with_roots(url, args.token.clone(), ca.as_deref()).map_err(CliError::new)?;
    // A list that cannot be read is a failure to check, not a verdict on the AAT.
    let list = crate::commands::revocations::fetch(&client).map_err(|e| e.exit_code(EXIT_FAILURE))?;
    let index = RevocationIndex::from(&list);
    Ok(aat.check_revocation(&index, now).err().map(|e| {
        let what = match &e {
            AatError::Revoked(RevokedBy::User) => "the user's delegation was revoked".to_owned(),
            AatError::Revoked(RevokedBy::Token) => "the AAT was revoked".to_owned(),
            AatError::Revoked(RevokedBy::Session) => "its session was revoked".to_owned(),
            AatError::Revoked(RevokedBy::Agent) => "its agent was revoked".to_owned(),
            AatError::Revoked(RevokedBy::Delegation) => "a delegation on its chain was revoked".to_owned(),
            other => other.to_string(),
        };
        (
            e.aat_error(),
            format!("{what} (revocation list version {} of {url})", list.version),
        )
    }))
}

/// A delegable AAT, checked as a proxy checks it (`CallVerifier`: the chain against the issuer
/// keys the JWKS marks, then what the last delegatee holds against `validation` at `now`).
/// Prints the chain.
fn verify_delegated(
    args: &Args,
    token: &str,
    keys: JwkSet,
    validation: Validation,
    now: i64,
) -> Result<ExitCode, CliError> {
    use std::sync::Arc;

    use aip_aat::delegation;
    use aip_aat::keys::KeyResolver as _;
    use aip_aat::replay::InMemoryReplayCache;
    use aip_aat::verifier::CallVerifier;

    let keys = Arc::new(keys);
    let verifier = CallVerifier::new(validation, keys.clone(), Arc::new(InMemoryReplayCache::new(1)))
        .with_clock(Arc::new(FixedClock::new(now)));
    let verified = match verifier.verify_token(token) {
        Ok(aat) => match check_revocation(args, &aat, now)? {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        },
        Err(e) => Err((e.aat_error(), e.to_string())),
    };
    let checked = verified.and_then(|()| {
        // The same chain again, for its steps.
        delegation::verify(token, &|id| keys.delegation_root(id), now, args.max_depth)
            .map_err(|e| (e.aat_error(), e.to_string()))
    });
    match checked {
        Ok(chain) => {
            print_json(
                &json!({
                    "token_format": delegation::TOKEN_FORMAT,
                    "claims": chain.effective_claims(),
                    "issued": chain.root_claims(),
                    "steps": chain.steps().iter().map(|s| json!({
                        "delegator": s.delegator, "delegatee": s.delegatee,
                        "delegatee_key": s.delegatee_key, "tools": s.tools, "audience": s.audience,
                        "expires_at": s.expires_at, "revocation_id": s.revocation_id,
                    })).collect::<Vec<_>>(),
                    "depth": chain.depth(),
                    "revocation_ids": chain.revocation_ids().collect::<Vec<_>>(),
                }),
                true,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err((aat_error, reason)) => reject(args, aat_error, &reason),
    }
}
