//! `aip-proxy`: wraps an MCP server and enforces an `AgentPolicy` on every message. Its command
//! line is defined in the library (`aip_proxy_verifier::cli`), where `aip-ca man` reads it too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aip_aat::checkpoint::{CheckpointError, TrustedKeys, Unsigned};
use aip_proxy_verifier::cli::{ArgsMode, AuditCommand, Cli, Client, Command, PolicyCommand};
use aip_proxy_verifier::client_config::{self, AgentSide, ClientKind, ProxySide};
use aip_proxy_verifier::front::{FrontDoorOptions, HttpUpstream, TlsFiles, Upstream};
use aip_proxy_verifier::hitl::PromptMode;
use aip_proxy_verifier::policy::{self, Policy, SignaturePolicy};
use aip_proxy_verifier::relay::{AuditArgs, RelayOptions};
use aip_proxy_verifier::run::{ProxyOptions, load_policy, run};
use aip_proxy_verifier::{audit, keys};

use aip_http::logs::{self, LogFormat};
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    match dispatch(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(message) => {
            if logs::json() {
                tracing::error!(target: logs::NOTICE_TARGET, "{message}");
            } else {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "aip-proxy: {message}");
            }
            ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: bool, format: LogFormat) {
    logs::init(format, if verbose { "debug" } else { "warn" });
}

fn dispatch(cli: Cli) -> Result<i32, String> {
    if let Some(shell) = cli.completions {
        aip_proxy_verifier::cli::write_completions(shell, &mut std::io::stdout().lock()).map_err(|e| e.to_string())?;
        return Ok(0);
    }
    if cli.openapi {
        let json = aip_proxy_verifier::openapi::description_json();
        std::io::stdout()
            .lock()
            .write_all(json.as_bytes())
            .map_err(|e| e.to_string())?;
        return Ok(0);
    }
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
