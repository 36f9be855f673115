//! `aip-proxy`: wraps an MCP server and enforces an `AgentPolicy` on every message.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aip_aat::checkpoint::{CheckpointError, TrustedKeys, Unsigned};
use aip_proxy_verifier::client_config::{self, AgentSide, ClientKind, ProxySide};
use aip_proxy_verifier::front::{FrontDoorOptions, HttpUpstream, TlsFiles, Upstream, UpstreamHeader};
use aip_proxy_verifier::hitl::PromptMode;
use aip_proxy_verifier::policy::{self, Policy, SignaturePolicy};
use aip_proxy_verifier::relay::{AuditArgs, DEFAULT_MAX_MESSAGE, RelayOptions};
use aip_proxy_verifier::run::{ProxyOptions, load_policy, run};
use aip_proxy_verifier::{audit, keys};

use clap::{Parser, Subcommand, ValueEnum};

/// Wraps an MCP server: every JSON-RPC message passes the policy, DLP and the audit log. Over
/// stdio (--target), or as a Streamable HTTP front door (--serve) for a remote server
/// (--upstream) or a stdio one.
#[derive(Debug, Parser)]
#[command(name = "aip-proxy", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// The AgentPolicy YAML file.
    #[arg(long, env = "AIP_POLICY")]
    policy: Option<PathBuf>,
    /// The MCP server command, run with /bin/sh -c (with --serve: one process per session).
    #[arg(long, conflicts_with = "upstream")]
    target: Option<String>,
    /// Serve MCP over Streamable HTTP at ADDR (path /mcp) instead of stdio.
    #[arg(long, value_name = "ADDR")]
    serve: Option<SocketAddr>,
    /// The remote MCP server (Streamable HTTP) the front door fronts.
    #[arg(long, value_name = "URL", requires = "serve")]
    upstream: Option<String>,
    /// The front door's canonical resource URI, as clients reach it (behind a load balancer)
    /// [default: http(s)://ADDR/mcp].
    #[arg(long, value_name = "URL", requires = "serve")]
    public_url: Option<String>,
    /// A header sent with every upstream request (its credentials): NAME=file:PATH or
    /// NAME=env:VAR. Repeatable.
    #[arg(long, value_name = "NAME=SOURCE", requires = "upstream", value_parser = UpstreamHeader::parse)]
    upstream_header: Vec<UpstreamHeader>,
    /// The CA (PEM) the upstream's certificate must chain to, instead of the system roots.
    #[arg(long, value_name = "FILE", requires = "upstream")]
    upstream_ca: Option<PathBuf>,
    /// The front door's TLS certificate chain (PEM); required off loopback.
    #[arg(long, value_name = "FILE", requires_all = ["serve", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// The front door's TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A browser origin allowed to call the front door besides its own (`Origin` header).
    /// Repeatable.
    #[arg(long, value_name = "ORIGIN", requires = "serve")]
    allow_origin: Vec<String>,
    /// Append-only, hash-chained audit log (JSON Lines).
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Key file (as `aip-ca keygen` writes it) that signs the audit log's checkpoints.
    #[arg(long, value_name = "FILE", env = "AIP_AUDIT_KEY", requires = "audit")]
    audit_key: Option<PathBuf>,
    /// First line: the passphrase of the audit key file [default: AIP_PASSPHRASE].
    #[arg(long, value_name = "FILE", requires = "audit_key")]
    audit_key_passphrase_file: Option<PathBuf>,
    /// Records between two signed checkpoints of the audit log (besides the one at exit).
    #[arg(long, value_name = "N", default_value_t = audit::DEFAULT_CHECKPOINT_EVERY,
          value_parser = clap::value_parser!(u64).range(1..))]
    audit_checkpoint_every: u64,
    /// Log every decision on stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Check the policy and exit.
    #[arg(long)]
    validate: bool,
    /// Print a complete MCP client configuration that runs this proxy (behind aip-agent when the
    /// policy requires AATs), and exit.
    #[arg(long, value_name = "CLIENT", value_enum)]
    generate_client_config: Option<Client>,
    /// The same as --generate-client-config cursor.
    #[arg(long, conflicts_with = "generate_client_config")]
    generate_cursor_config: bool,
    /// With --generate-client-config, for a policy that requires AATs: the agent directory
    /// (`aip-ca register-agent --out-dir`).
    #[arg(long, value_name = "DIR")]
    agent_dir: Option<PathBuf>,
    /// With --generate-client-config, for a policy that requires AATs: the token issuer's URL.
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// With --generate-client-config, for a policy that requires AATs: the file holding the
    /// user's API key (omit for an autonomous agent).
    #[arg(long, value_name = "FILE")]
    user_api_key_file: Option<PathBuf>,
    /// Ed25519 public key (PEM, JWK or base64) that must have signed the policy.
    #[arg(long, env = "AIP_POLICY_KEY")]
    policy_key: Option<PathBuf>,
    /// Serve approvals, /v1/validate, /health and /metrics on this loopback address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// File holding the bearer token of the HTTP API (created, mode 0600, when missing).
    /// `AIP_PROXY_TOKEN` takes precedence.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Never open desktop approval dialogs (approve over HTTP instead).
    #[arg(long)]
    no_prompt: bool,
    /// Largest accepted message in bytes, each direction.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE)]
    max_message_size: usize,
    /// How tool arguments are recorded in the audit log.
    #[arg(long, value_enum, default_value_t = ArgsMode::Hash)]
    audit_args: ArgsMode,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The MCP clients whose configuration `--generate-client-config` writes.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Client {
    /// Claude Desktop (claude_desktop_config.json) and Claude Code (.mcp.json).
    Claude,
    /// Cursor (~/.cursor/mcp.json).
    Cursor,
    /// VS Code (.vscode/mcp.json).
    Vscode,
}

impl From<Client> for ClientKind {
    fn from(client: Client) -> Self {
        match client {
            Client::Claude => Self::Claude,
            Client::Cursor => Self::Cursor,
            Client::Vscode => Self::Vscode,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ArgsMode {
    /// Only a SHA-256 of the canonical arguments.
    Hash,
    /// The arguments with DLP patterns redacted and long strings cut.
    Redacted,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Policy signing tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain and its signed checkpoints; report the first broken link.
    Verify {
        /// The audit log.
        file: PathBuf,
        /// The audit key that signs checkpoints: its public key (PEM or JWK) or its key file
        /// (only its key id is read; no passphrase is needed).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Accept records after the last signed checkpoint (a log still being written).
        #[arg(long)]
        allow_unsigned_tail: bool,
        /// Accept a log without any signed checkpoint (written without an audit key).
        #[arg(long)]
        allow_unsigned: bool,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Create an Ed25519 key pair for signing policies.
    Keygen {
        /// Where to write the private key (PKCS#8 PEM, mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the `metadata.signature` value for a policy.
    Sign {
        /// The private key made by `policy keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The policy file.
        file: PathBuf,
    },
    /// Print the policy hash (spec 5.2).
    Hash {
        /// The policy file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match dispatch(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(message) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "aip-proxy: {message}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: bool) {
    let default = if verbose { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn dispatch(cli: Cli) -> Result<i32, String> {
    match cli.command {
        Some(Command::Audit {
            command:
                AuditCommand::Verify {
                    file,
                    key,
                    allow_unsigned_tail,
                    allow_unsigned,
                    json,
                },
        }) => {
            let unsigned = if allow_unsigned {
                Unsigned::Any
            } else if allow_unsigned_tail {
                Unsigned::Tail
            } else {
                Unsigned::Refused
            };
            return verify_audit(&file, key.as_deref(), unsigned, json);
        }
        Some(Command::Policy { command }) => return policy_command(command),
        None => {}
    }
    let policy_path = cli.policy.clone().ok_or("--policy FILE is required (see --help)")?;
    let key = match &cli.policy_key {
        Some(path) => Some(keys::read_policy_key(path).map_err(|e| format!("{}: {e}", path.display()))?),
        None => None,
    };
    if cli.validate {
        return validate(&policy_path, key.as_ref());
    }
    let front_door = match cli.serve {
        None => None,
        Some(serve) => {
            let upstream = match (cli.upstream, cli.target.clone()) {
                (Some(url), None) => Upstream::Http(HttpUpstream {
                    url,
                    headers: cli.upstream_header,
                    ca_cert: cli.upstream_ca,
                }),
                (None, Some(command)) => Upstream::Stdio(command),
                _ => return Err("--serve needs --upstream URL or --target \"COMMAND\" (see --help)".into()),
            };
            Some(FrontDoorOptions {
                serve,
                public_url: cli.public_url,
                upstream,
                tls: cli.tls_cert.zip(cli.tls_key).map(|(cert, key)| TlsFiles { cert, key }),
                allowed_origins: cli.allow_origin,
            })
        }
    };
    let target = cli.target.clone();
    if front_door.is_none() && target.is_none() {
        return Err("--target \"COMMAND\" (or --serve ADDR) is required (see --help)".into());
    }
    let client = cli
        .generate_client_config
        .or(cli.generate_cursor_config.then_some(Client::Cursor));
    if let Some(client) = client {
        let target = target.ok_or("--generate-client-config needs --target")?;
        let proxy = ProxySide {
            aip_proxy: std::env::current_exe().map_err(|e| format!("cannot locate aip-proxy: {e}"))?,
            policy: policy_path,
            policy_key: cli.policy_key,
            target,
        };
        let agent = AgentSide {
            aip_agent: beside_this("aip-agent"),
            agent_dir: cli.agent_dir,
            issuer: cli.issuer,
            user_api_key_file: cli.user_api_key_file,
        };
        return client_config(client.into(), key.as_ref(), &proxy, &agent);
    }
    let audit_key = match &cli.audit_key {
        Some(path) => Some(audit::CheckpointKey {
            signer: std::sync::Arc::new(keys::read_audit_key(path, cli.audit_key_passphrase_file.as_deref())?),
            every: cli.audit_checkpoint_every,
        }),
        None => None,
    };
    let options = ProxyOptions {
        policy: policy_path,
        policy_key: key,
        target,
        front_door,
        audit: cli.audit,
        audit_key,
        listen: cli.listen,
        token_file: cli.token_file,
        prompt: if cli.no_prompt {
            PromptMode::None
        } else {
            PromptMode::Desktop
        },
        relay: RelayOptions {
            max_message: cli.max_message_size,
            audit_args: match cli.audit_args {
                ArgsMode::Hash => AuditArgs::Hash,
                ArgsMode::Redacted => AuditArgs::Redacted,
            },
        },
    };
    run(options).map_err(|e| e.to_string())
}

fn validate(path: &Path, key: Option<&aip_aat::keys::PublicKey>) -> Result<i32, String> {
    let policy = load_policy(path, key).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let write = |out: &mut std::io::StdoutLock<'_>, line: String| writeln!(out, "{line}").map_err(|e| e.to_string());
    write(
        &mut out,
        format!(
            "policy {} ({}) is valid: {}, mode {}",
            policy.name(),
            policy.version().unwrap_or("no version"),
            policy.api_version().as_str(),
            policy.mode()
        ),
    )?;
    let allowing_rules = policy
        .rules()
        .filter(|(_, r)| r.action != policy::Action::Block)
        .count();
    write(
        &mut out,
        format!(
            "  allowed_tools: {}, tool_rules: {}, protected paths: {}, DLP patterns: {}",
            policy.allowed_tools().len(),
            policy.rules().count(),
            policy.protected_paths().len(),
            policy.dlp().map_or(0, |d| d.patterns().len())
        ),
    )?;
    write(
        &mut out,
        format!(
            "  hash: {}{}",
            policy.hash(),
            if policy.is_signed() {
                " (signature verified)"
            } else {
                ""
            }
        ),
    )?;
    if policy.allowed_tools().is_empty() && allowing_rules == 0 {
        write(
            &mut out,
            "  warning: no tool is allowed; every tools/call will be refused".into(),
        )?;
    }
    if policy.mode() == policy::Mode::Monitor {
        write(
            &mut out,
            "  warning: monitor mode logs violations but does not block them".into(),
        )?;
    }
    Ok(0)
}

/// The file `name` in the directory of this executable, when it exists.
fn beside_this(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    path.is_file().then_some(path)
}

fn client_config(
    kind: ClientKind,
    key: Option<&aip_aat::keys::PublicKey>,
    proxy: &ProxySide,
    agent: &AgentSide,
) -> Result<i32, String> {
    let policy = match key {
        Some(key) => Policy::load(&proxy.policy, SignaturePolicy::Require(key)),
        None => Policy::load(&proxy.policy, SignaturePolicy::NoKey),
    }
    .map_err(|e| match e {
        policy::PolicyError::Signature(_) if key.is_none() => format!(
            "{}: the policy is signed: pass --policy-key, which the configuration passes on",
            proxy.policy.display()
        ),
        e => format!("{}: {e}", proxy.policy.display()),
    })?;
    let (command, args) = client_config::launch(&policy, proxy, agent).map_err(|e| e.to_string())?;
    let config = client_config::render(kind, &command, &args);
    let text = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    writeln!(std::io::stdout().lock(), "{text}").map_err(|e| e.to_string())?;
    Ok(0)
}

fn verify_audit(file: &Path, key: Option<&Path>, unsigned: Unsigned, json: bool) -> Result<i32, String> {
    let trusted = match key {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(TrustedKeys::from_text(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    match audit::verify_signed(file, trusted.as_ref(), unsigned) {
        Ok(report) => {
            let checkpoints = &report.checkpoints;
            let line = if json {
                serde_json::json!({
                    "ok": true,
                    "records": report.records,
                    "head": report.last_hash,
                    "head_file_checked": report.head_checked,
                    "checkpoint": checkpoints.last.as_ref().map(|c| serde_json::json!({
                        "seq": c.seq, "at": c.at, "kid": c.kid, "head": c.head
                    })),
                    "unsigned_tail": checkpoints.unsigned,
                })
                .to_string()
            } else {
                let signed = match &checkpoints.last {
                    Some(c) => format!(
                        "last signed checkpoint: seq {} at {} by key {}",
                        c.seq,
                        audit::timestamp_of(c.at),
                        c.kid
                    ),
                    None => "no signed checkpoint".to_owned(),
                };
                let tail = match checkpoints.unsigned {
                    0 => String::new(),
                    n => format!(", {n} unsigned record(s) after it"),
                };
                format!(
                    "{}: {} records, chain intact{}; {signed}{tail}",
                    file.display(),
                    report.records,
                    if report.head_checked { ", head matches" } else { "" }
                )
            };
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
            Ok(0)
        }
        Err(e) => {
            if json {
                let _ = writeln!(out, "{}", serde_json::json!({"ok": false, "error": e.to_string()}));
            }
            let hint = match &e {
                audit::VerifyError::Checkpoint(CheckpointError::UnsignedTail { .. }) => {
                    " (pass --allow-unsigned-tail to accept records written since)"
                }
                audit::VerifyError::Checkpoint(CheckpointError::NoCheckpoint { .. }) => {
                    " (pass --allow-unsigned for a log written without --audit-key)"
                }
                audit::VerifyError::KeyRequired { .. } => " (pass --key FILE)",
                _ => "",
            };
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{}: {e}{hint}", file.display());
            Ok(1)
        }
    }
}

fn policy_command(command: PolicyCommand) -> Result<i32, String> {
    let mut out = std::io::stdout().lock();
    match command {
        PolicyCommand::Keygen { out: path } => {
            let public = keys::generate_signing_key(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            writeln!(out, "{public}").map_err(|e| e.to_string())?;
        }
        PolicyCommand::Sign { key, file } => {
            let signature = keys::sign_policy(&key, &file).map_err(|e| e.to_string())?;
            writeln!(out, "{signature}").map_err(|e| e.to_string())?;
        }
        PolicyCommand::Hash { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let hash = policy::hash_of(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            writeln!(out, "{hash}").map_err(|e| e.to_string())?;
        }
    }
    Ok(0)
}
