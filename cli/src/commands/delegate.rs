//! `aip-ca delegate`: hand part of a delegable AAT to a sub-agent, offline, with the holder's
//! own agent key (aip_aat::delegation; docs/decisions.md, "Delegation with biscuits").

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aip_aat::clock::{Clock as _, SystemClock};
use aip_aat::delegation::{self, DelegationError, Grant, issuer_roots};
use aip_aat::ids::AgentId;
use aip_aat::keys::PublicKey;
use serde_json::json;

use crate::agent_dir;
use crate::output::{CliError, EXIT_REJECTED, print_json};
use crate::passphrase::PassphraseArgs;
use crate::remote::{RemoteArgs, api_error};

/// Longest token read.
const MAX_TOKEN: u64 = 64 * 1024;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The delegating agent's directory (`aip-ca register-agent --out-dir`): its key signs the
    /// step, and must be the key the token is held by.
    #[arg(long, value_name = "DIR")]
    agent_dir: PathBuf,
    /// The delegable AAT the agent holds (a file), or `-` to read it from standard input.
    #[arg(long, value_name = "FILE|-")]
    from: String,
    /// The sub-agent: its `agent.json` (in its agent directory), or its agent id, looked up at
    /// the registry.
    #[arg(long, value_name = "AGENT_JSON|AGENT_ID")]
    to: String,
    /// Tools handed on, comma-separated [default: all the holder's].
    #[arg(long, value_name = "TOOLS", value_delimiter = ',')]
    tools: Option<Vec<String>>,
    /// Audience handed on; repeat for several [default: the holder's].
    #[arg(long, value_name = "AUD")]
    audience: Vec<String>,
    /// Lifetime of the delegation in seconds [default: until the holder's ends].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..))]
    ttl: Option<u32>,
    /// Principals a chain may have, the user included (2 to 4).
    #[arg(long, value_name = "N", default_value_t = delegation::DEFAULT_MAX_DEPTH,
          value_parser = clap::value_parser!(u8).range(2..=4))]
    max_depth: u8,
    /// Where to write the delegated token (created with mode 0600; an existing file is refused).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

pub(crate) fn run(args: Args) -> Result<ExitCode, CliError> {
    let token = read_token(&args.from)?;
    let client = args.remote.client()?;
    let runtime = crate::output::runtime()?;
    let jwks = runtime.block_on(client.jwks()).map_err(api_error)?;
    let roots = issuer_roots(&jwks);
    let (delegatee, delegatee_key) = match Path::new(&args.to).is_file() {
        true => {
            let dir = Path::new(&args.to).parent().unwrap_or(Path::new("."));
            let identity = agent_dir::read_identity(dir)?;
            let key = PublicKey::from_jwk(&identity.aid.public_key)
                .map_err(|e| CliError::new(format!("{}: its public key: {e}", args.to)))?;
            (identity.agent_id, key.thumbprint().clone())
        }
        false => {
            let id: AgentId = args.to.parse().map_err(|_| {
                CliError::new(format!("--to {:?} is neither a file nor an agent id", args.to))
                    .hint("give the sub-agent's agent.json, or its id (ag_…)")
            })?;
            let agent = runtime.block_on(client.agent(&id)).map_err(api_error)?;
            (agent.agent_id, agent.public_key_thumbprint)
        }
    };
    let (key, _) = agent_dir::read_key(&args.agent_dir, &args.passphrase)?;
    let now = SystemClock.now();
    // What the holder has, for the defaults: the chain as it is now.
    let held = match delegation::verify(&token, &roots, now, args.max_depth) {
        Ok(chain) => chain,
        Err(e) => return Ok(refused(&e)),
    };
    let holder = held.effective_claims();
    let grant = Grant {
        delegatee: delegatee.clone(),
        delegatee_key: delegatee_key.clone(),
        tools: args.tools.unwrap_or_else(|| holder.capabilities.tools.clone()),
        audience: match args.audience.is_empty() {
            true => holder.aud.as_slice().to_vec(),
            false => args.audience,
        },
        expires_at: args.ttl.map_or(holder.exp, |ttl| now + i64::from(ttl)),
    };
    let delegated = match delegation::delegate(&token, &roots, &key, &grant, now, args.max_depth) {
        Ok(delegated) => delegated,
        Err(e) => return Ok(refused(&e)),
    };
    write_new(&args.out, &delegated)?;
    let chain = delegation::verify(&delegated, &roots, now, args.max_depth)
        .map_err(|e| CliError::new(format!("the delegated token does not verify: {e}")))?;
    print_json(
        &json!({
            "out": args.out,
            "delegatee": delegatee,
            "delegatee_key": delegatee_key,
            "tools": grant.tools,
            "audience": grant.audience,
            "expires_at": grant.expires_at,
            "depth": chain.depth(),
            "agents": chain.agents().collect::<Vec<_>>(),
            "revocation_id": chain.revocation_ids().last(),
        }),
        true,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The token in `from` (a file, or `-` for standard input), trimmed.
fn read_token(from: &str) -> Result<String, CliError> {
    let mut text = String::new();
    let read = if from == "-" {
        std::io::stdin().take(MAX_TOKEN).read_to_string(&mut text)
    } else {
        std::fs::File::open(from).and_then(|f| f.take(MAX_TOKEN).read_to_string(&mut text))
    };
    read.map_err(|e| CliError::new(format!("cannot read the token from {from}: {e}")))?;
    let token = text.trim();
    if !delegation::is_delegable(token) {
        return Err(CliError::new(format!("{from} does not hold a delegable AAT"))
            .hint("ask for one with `aip-ca token --token-format aat+biscuit`"));
    }
    Ok(token.to_owned())
}

/// Writes `text` to a new file `path`, readable by its owner only.
fn write_new(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
}

/// Reports a refused delegation: one line with its `aat_error`, exit status 1 (refused).
fn refused(e: &DelegationError) -> ExitCode {
    CliError::new(format_args!("delegation refused: {}: {e}", e.aat_error()))
        .exit_code(EXIT_REJECTED)
        .report();
    ExitCode::from(EXIT_REJECTED)
}
