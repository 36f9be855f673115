//! The command line of `aip-proxy`: its flags and subcommands, here rather than in the binary
//! so that `aip-ca man` renders its manual page from the same definitions (and `--completions`
//! its completion scripts).

use std::net::SocketAddr;
use std::path::PathBuf;

use aip_http::logs::{ENV_LOG_FORMAT, LogFormat};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

use crate::audit;
use crate::client_config::ClientKind;
use crate::front::UpstreamHeader;
use crate::relay::DEFAULT_MAX_MESSAGE;

/// Wraps an MCP server: every JSON-RPC message passes the policy, DLP and the audit log. Over
/// stdio (--target), or as a Streamable HTTP front door (--serve) for a remote server
/// (--upstream) or a stdio one.
#[derive(Debug, Parser)]
#[command(name = "aip-proxy", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// The AgentPolicy YAML file.
    #[arg(long, env = "AIP_POLICY")]
    pub policy: Option<PathBuf>,
    /// The MCP server command, run with /bin/sh -c (with --serve: one process per session).
    #[arg(long, conflicts_with = "upstream")]
    pub target: Option<String>,
    /// Serve MCP over Streamable HTTP at ADDR (path /mcp) instead of stdio.
    #[arg(long, value_name = "ADDR")]
    pub serve: Option<SocketAddr>,
    /// The remote MCP server (Streamable HTTP) the front door fronts.
    #[arg(long, value_name = "URL", requires = "serve")]
    pub upstream: Option<String>,
    /// The front door's canonical resource URI, as clients reach it (behind a load balancer)
    /// [default: http(s)://ADDR/mcp].
    #[arg(long, value_name = "URL", requires = "serve")]
    pub public_url: Option<String>,
    /// A header sent with every upstream request (its credentials): NAME=file:PATH or
    /// NAME=env:VAR. Repeatable.
    #[arg(long, value_name = "NAME=SOURCE", requires = "upstream", value_parser = UpstreamHeader::parse)]
    pub upstream_header: Vec<UpstreamHeader>,
    /// The CA (PEM) the upstream's certificate must chain to, instead of the system roots.
    #[arg(long, value_name = "FILE", requires = "upstream")]
    pub upstream_ca: Option<PathBuf>,
    /// The front door's TLS certificate chain (PEM); required off loopback.
    #[arg(long, value_name = "FILE", requires_all = ["serve", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The front door's TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A browser origin allowed to call the front door besides its own (`Origin` header).
    /// Repeatable.
    #[arg(long, value_name = "ORIGIN", requires = "serve")]
    pub allow_origin: Vec<String>,
    /// Append-only, hash-chained audit log (JSON Lines).
    #[arg(long)]
    pub audit: Option<PathBuf>,
    /// Key file (as `aip-ca keygen` writes it) that signs the audit log's checkpoints.
    #[arg(long, value_name = "FILE", env = "AIP_AUDIT_KEY", requires = "audit")]
    pub audit_key: Option<PathBuf>,
    /// First line: the passphrase of the audit key file [default: AIP_PASSPHRASE].
    #[arg(long, value_name = "FILE", requires = "audit_key")]
    pub audit_key_passphrase_file: Option<PathBuf>,
    /// Records between two signed checkpoints of the audit log (besides the one at exit).
    #[arg(long, value_name = "N", default_value_t = audit::DEFAULT_CHECKPOINT_EVERY,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub audit_checkpoint_every: u64,
    /// Log every decision on stderr.
    #[arg(long, short)]
    pub verbose: bool,
    /// Check the policy and exit.
    #[arg(long)]
    pub validate: bool,
    /// Print a complete MCP client configuration that runs this proxy (behind aip-agent when the
    /// policy requires AATs), and exit.
    #[arg(long, value_name = "CLIENT", value_enum)]
    pub generate_client_config: Option<Client>,
    /// The same as --generate-client-config cursor.
    #[arg(long, conflicts_with = "generate_client_config")]
    pub generate_cursor_config: bool,
    /// With --generate-client-config, for a policy that requires AATs: the agent directory
    /// (`aip-ca register-agent --out-dir`).
    #[arg(long, value_name = "DIR")]
    pub agent_dir: Option<PathBuf>,
    /// With --generate-client-config, for a policy that requires AATs: the token issuer's URL.
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// With --generate-client-config, for a policy that requires AATs: the file holding the
    /// user's API key (omit for an autonomous agent).
    #[arg(long, value_name = "FILE")]
    pub user_api_key_file: Option<PathBuf>,
    /// Ed25519 public key (PEM, JWK or base64) that must have signed the policy.
    #[arg(long, env = "AIP_POLICY_KEY")]
    pub policy_key: Option<PathBuf>,
    /// Serve approvals, /v1/validate, /health and /metrics on this loopback address.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token of the HTTP API (created, mode 0600, when missing).
    /// `AIP_PROXY_TOKEN` takes precedence.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Never open desktop approval dialogs (approve over HTTP instead).
    #[arg(long)]
    pub no_prompt: bool,
    /// Largest accepted message in bytes, each direction.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE)]
    pub max_message_size: usize,
    /// How tool arguments are recorded in the audit log.
    #[arg(long, value_enum, default_value_t = ArgsMode::Hash)]
    pub audit_args: ArgsMode,
    /// How log lines are written on stderr: text, or one JSON object per line.
    #[arg(long, value_name = "FORMAT", env = ENV_LOG_FORMAT, default_value = "text",
          value_parser = log_format())]
    pub log_format: LogFormat,
    /// Print the completion script for SHELL and exit (other flags are then ignored).
    #[arg(long, value_name = "SHELL")]
    pub completions: Option<Shell>,
    /// Print the OpenAPI 3.1 description of the proxy's HTTP listeners (the front door of
    /// `--serve` and the HTTP API of `--listen`) and exit (other flags are then ignored).
    #[arg(long)]
    pub openapi: bool,
    /// A tool to run instead of the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The MCP clients whose configuration `--generate-client-config` writes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Client {
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

/// `--audit-args`: how tool arguments are recorded in the audit log.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ArgsMode {
    /// Only a SHA-256 of the canonical arguments.
    Hash,
    /// The arguments with DLP patterns redacted and long strings cut.
    Redacted,
}

/// The subcommands (tools that do not run the proxy).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Audit log tools.
    Audit {
        /// Which audit log tool.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Policy signing tools.
    Policy {
        /// Which policy signing tool.
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

/// `aip-proxy audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
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

/// `aip-proxy policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
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

/// The definition of `aip-proxy`'s command line, for manual pages and completion scripts.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Writes the completion script of `aip-proxy` for `shell` to `out`.
pub fn write_completions(shell: Shell, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    completions(shell, command(), "aip-proxy", out)
}

/// Writes the completion script of `command`, the program `name`, for `shell` to `out` (for
/// the three programs: `aip-ca` and `aip-agent` call it too).
///
/// The bash script of a program whose name has a hyphen is corrected: clap_complete (4.6.12)
/// spells a subcommand's state `aip__ca__subcmd__serve` where it sets it and
/// `aip__subcmd__ca__subcmd__serve` where it matches it, so that nothing past the first word
/// would complete (clap issue 6421). The matching side is respelled as the setting side.
pub fn completions(
    shell: Shell,
    mut command: clap::Command,
    name: &str,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    if shell == Shell::Bash && name.contains('-') {
        let text = String::from_utf8_lossy(&script);
        let matched = format!("{}__subcmd__", name.replace('-', "__subcmd__"));
        let set = format!("{}__subcmd__", name.replace('-', "__"));
        script = text.replace(&matched, &set).into_bytes();
    }
    out.write_all(&script)
}

/// `--log-format`: one of [`LogFormat::NAMES`].
fn log_format() -> impl TypedValueParser<Value = LogFormat> {
    PossibleValuesParser::new(LogFormat::NAMES).try_map(|name| name.parse::<LogFormat>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn completions_need_no_policy_and_no_subcommand() {
        let cli = Cli::try_parse_from(["aip-proxy", "--completions", "bash"]).unwrap();
        assert_eq!(cli.completions, Some(Shell::Bash));
        assert!(cli.policy.is_none());
        let with_subcommand = Cli::try_parse_from(["aip-proxy", "--completions", "bash", "policy", "hash", "p.yaml"]);
        assert!(with_subcommand.is_err());
        assert!(Cli::try_parse_from(["aip-proxy", "--completions", "tcsh"]).is_err());
    }

    #[test]
    fn bash_completions_match_the_states_they_set() {
        let mut script = Vec::new();
        write_completions(Shell::Bash, &mut script).unwrap();
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("cmd=\"aip__proxy__subcmd__policy\""), "{script}");
        assert!(script.contains("aip__proxy__subcmd__policy)"), "{script}");
        assert!(!script.contains("aip__subcmd__proxy"), "{script}");
    }

    #[test]
    fn the_log_format_is_text_unless_asked() {
        let cli = Cli::try_parse_from(["aip-proxy", "--target", "cat"]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Text);
        let cli = Cli::try_parse_from(["aip-proxy", "--log-format", "json", "--target", "cat"]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["aip-proxy", "--log-format", "xml", "--target", "cat"]).is_err());
    }
}
