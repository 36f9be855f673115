//! Running `aip-proxy`: spawn the MCP server, relay both directions, forward signals, reload the
//! policy on SIGHUP, and exit with the server's status once everything acknowledged is on disk.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;

use aip_aat::clock::{Clock, SystemClock};
use aip_aat::keys::PublicKey;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::audit::{AuditLog, Record};
use crate::dlp::Direction;
use crate::engine::{Engine, SchemaBook};
use crate::hitl::{Hitl, PromptMode};
use crate::identity::{Identity, RevocationSource};
use crate::policy::{Policy, PolicyError, SignaturePolicy};
use crate::registry::{LinkError, RegistryEvent, RegistryLink};
use crate::relay::{Relay, RelayOptions, Sink, sink};
use crate::server::{self, ServerState};
use crate::state::PolicyHandle;

/// Everything `aip-proxy --policy … --target …` needs.
#[derive(Debug)]
pub struct ProxyOptions {
    /// The policy file.
    pub policy: PathBuf,
    /// Key that must have signed the policy.
    pub policy_key: Option<PublicKey>,
    /// The MCP server command: run directly when it is a plain word list, else with `/bin/sh -c`.
    pub target: String,
    /// The audit log file.
    pub audit: Option<PathBuf>,
    /// Address of the HTTP server (approvals, validation, health, metrics).
    pub listen: Option<SocketAddr>,
    /// File holding the HTTP API's bearer token (created when missing).
    pub token_file: Option<PathBuf>,
    /// Desktop approval prompts.
    pub prompt: PromptMode,
    /// Relay settings.
    pub relay: RelayOptions,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The policy was refused.
    #[error("{}: {source}", path.display())]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// Why.
        source: PolicyError,
    },
    /// The audit log could not be opened.
    #[error("audit log {}: {source}", path.display())]
    Audit {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The HTTP server could not start.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The target could not be started.
    #[error("cannot start the target {target:?}: {source}")]
    Spawn {
        /// The command.
        target: String,
        /// Why.
        source: io::Error,
    },
    /// The approval queue could not start.
    #[error("cannot start the approval queue: {0}")]
    Hitl(io::Error),
    /// Signal handling could not be set up.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    /// A reloaded policy changes what only a restart can change.
    #[error("{0}")]
    Reload(String),
    /// The registry the AAT checks need could not be reached.
    #[error("AAT verification cannot start: {0}")]
    Registry(#[from] LinkError),
}

/// Loads the policy at `path` under `key`.
pub fn load_policy(path: &std::path::Path, key: Option<&PublicKey>) -> Result<Policy, RunError> {
    let signature = key.map_or(SignaturePolicy::NoKey, SignaturePolicy::Require);
    Policy::load(path, signature).map_err(|source| RunError::Policy {
        path: path.to_owned(),
        source,
    })
}

/// Runs the proxy until the server exits; returns the exit code to use (the server's, or
/// 128 + signal).
pub fn run(options: ProxyOptions) -> Result<i32, RunError> {
    let policy = load_policy(&options.policy, options.policy_key.as_ref())?;
    tracing::info!(
        policy = policy.name(),
        version = policy.version().unwrap_or("-"),
        hash = policy.hash(),
        "loaded policy; protected paths: {:?}",
        policy.protected_paths()
    );
    if policy.mode() == crate::policy::Mode::Monitor {
        tracing::warn!(
            "policy {} is in monitor mode: violations are logged but NOT blocked",
            policy.name()
        );
    }
    let filter_stderr = policy.dlp().is_some_and(|d| d.settings().filter_stderr);
    let listen = options.listen.or_else(|| {
        policy
            .server()
            .enabled
            .then(|| policy.server().listen.parse().ok())
            .flatten()
    });
    // The wall clock every part of the proxy reads (audit timestamps, holds, AAT checks).
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let hitl =
        Arc::new(Hitl::with_clock(policy.hitl().clone(), options.prompt, Arc::clone(&clock)).map_err(RunError::Hitl)?);
    server::record_policy_hash(policy.name(), policy.hash());
    let audit = match &options.audit {
        Some(path) => AuditLog::open_with_clock(path, Arc::clone(&clock)).map_err(|source| RunError::Audit {
            path: path.clone(),
            source,
        })?,
        None => AuditLog::disabled(),
    };
    let audit = Arc::new(audit);
    let (identity, registry) = match start_identity(&policy, &audit, &clock)? {
        Some((identity, link)) => (Some(identity), Some(link)),
        None => (None, None),
    };
    let handle = Arc::new(PolicyHandle::new(Engine::new(policy)));
    let schemas = Arc::new(SchemaBook::default());

    let server = match listen {
        None => None,
        Some(addr) => {
            let token = server::AdminToken::load(options.token_file.as_deref())
                .map_err(|source| RunError::Listen { addr, source })?;
            let state = ServerState::new(
                Arc::clone(&handle),
                Arc::clone(&schemas),
                Arc::clone(&hitl),
                token,
                server::install_metrics(),
            )
            .with_identity(identity.clone());
            let running = server::spawn(addr, state).map_err(|source| RunError::Listen { addr, source })?;
            tracing::warn!(
                "approval and validation API on http://{} (bearer token from {})",
                running.local_addr(),
                options
                    .token_file
                    .as_ref()
                    .map_or_else(|| server::TOKEN_ENV.to_owned(), |p| p.display().to_string())
            );
            Some(running)
        }
    };

    let mut child = spawn_target(&options.target, filter_stderr)?;
    let child_pid = rustix::process::Pid::from_child(&child);
    let relay = Relay::new(
        Arc::clone(&handle),
        Arc::clone(&schemas),
        Arc::clone(&audit),
        Arc::clone(&hitl),
        identity.clone(),
        options.relay.clone(),
    );
    let client_out: Sink = sink(io::stdout());
    let (server_in, server_out) = match (child.stdin.take(), child.stdout.take()) {
        (Some(stdin), Some(stdout)) => (sink(stdin), stdout),
        _ => {
            return Err(RunError::Spawn {
                target: options.target,
                source: io::Error::other("the target's stdio pipes are missing"),
            });
        }
    };

    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(RunError::Signals)?;
    let signal_handle = signals.handle();
    let policy_path = options.policy.clone();
    let policy_key = options.policy_key;
    let (reload_handle, reload_audit, reload_hitl) = (Arc::clone(&handle), Arc::clone(&audit), Arc::clone(&hitl));
    let signal_thread = thread::spawn(move || {
        for signal in signals.forever() {
            match signal {
                SIGHUP => reload(
                    &policy_path,
                    policy_key.as_ref(),
                    &reload_handle,
                    &reload_audit,
                    &reload_hitl,
                ),
                other => {
                    let sig = if other == SIGINT {
                        rustix::process::Signal::INT
                    } else {
                        rustix::process::Signal::TERM
                    };
                    if let Err(e) = rustix::process::kill_process_group(child_pid, sig) {
                        tracing::warn!("could not forward signal {other} to the target: {e}");
                    }
                }
            }
        }
    });

    if filter_stderr && let Some(stderr) = child.stderr.take() {
        let handle = Arc::clone(&handle);
        thread::spawn(move || filter_stderr_lines(stderr, &handle));
    }

    let upstream = {
        let (relay, client_out, server_in) = (Arc::clone(&relay), Arc::clone(&client_out), Arc::clone(&server_in));
        thread::spawn(move || {
            let stdin = io::stdin().lock();
            if let Err(e) = relay.upstream(BufReader::with_capacity(64 << 10, stdin), &client_out, &server_in) {
                tracing::warn!("client side closed: {e}");
            }
            // Close the server's stdin so it sees the end of the session.
            *server_in.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Box::new(io::sink());
        })
    };
    let downstream_result = relay.downstream(BufReader::with_capacity(64 << 10, server_out), &client_out);
    if let Err(e) = downstream_result {
        tracing::warn!("server side closed: {e}");
    }
    let status = wait(&mut child);
    hitl.shutdown();
    drop(upstream); // Still blocked on our stdin if the client keeps it open; process exit ends it.
    signal_handle.close();
    let _ = signal_thread.join();
    if let Some(server) = server {
        server.shutdown();
    }
    if let Some(registry) = registry {
        registry.shutdown();
    }
    drop(relay);
    // The client side may still hold the log (its thread is blocked reading our stdin until the
    // process exits), so flush through a shared reference: everything recorded so far is on disk.
    if let Err(e) = audit.sync() {
        tracing::error!("audit log could not be flushed: {e}");
    }
    Ok(exit_code(status))
}

fn spawn_target(target: &str, pipe_stderr: bool) -> Result<Child, RunError> {
    if target.trim().is_empty() {
        return Err(RunError::Spawn {
            target: target.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the target command is empty"),
        });
    }
    // A plain command line is started directly, so that signals and the exit status are the
    // server's own; anything that needs a shell runs under /bin/sh -c in its own process group,
    // so that a forwarded signal reaches the server and not only the shell.
    let mut command = match plain_words(target) {
        Some(words) => {
            let mut command = Command::new(words[0]);
            command.args(&words[1..]);
            command
        }
        None => {
            let mut command = Command::new("/bin/sh");
            command.arg("-c").arg(target);
            command
        }
    };
    command
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if pipe_stderr { Stdio::piped() } else { Stdio::inherit() })
        .spawn()
        .map_err(|source| RunError::Spawn {
            target: target.to_owned(),
            source,
        })
}

/// The words of a command line that needs no shell: no quoting, expansion, redirection or
/// operators. `None` sends the line to /bin/sh.
fn plain_words(target: &str) -> Option<Vec<&str>> {
    const SHELL: &[char] = &[
        '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '#', '~', '=', '%', '{', '}',
        '!',
    ];
    if target.contains(SHELL) || target.contains('\n') {
        return None;
    }
    const BUILTINS: &[&str] = &[
        "exec", "cd", ".", "source", "export", "set", "unset", "eval", "exit", "ulimit", "umask", "if", "for", "while",
        "until", "case", "trap", "wait",
    ];
    let words: Vec<&str> = target.split_whitespace().collect();
    match words.first() {
        Some(first) if !BUILTINS.contains(first) => Some(words),
        _ => None,
    }
}

fn wait(child: &mut Child) -> Option<ExitStatus> {
    match child.wait() {
        Ok(status) => Some(status),
        Err(e) => {
            tracing::error!("could not wait for the target: {e}");
            None
        }
    }
}

fn exit_code(status: Option<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(status) => status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1),
        None => 1,
    }
}

/// SIGHUP: load the policy again; a bad one keeps the old in force.
/// The AAT verifier and the registry link that feeds it.
type IdentityLink = (Arc<Identity>, Arc<RegistryLink>);

/// The AAT checks the policy asks for, over a link to its registry that keeps issuer keys and
/// revocation data fresh; every change of revocation data is audited
/// (`REGISTRY_REVOCATION_CHECK`, spec 12.4).
fn start_identity(
    policy: &Policy,
    audit: &Arc<AuditLog>,
    clock: &Arc<dyn Clock>,
) -> Result<Option<IdentityLink>, RunError> {
    let (Some(aat), Some(registry)) = (policy.aat(), policy.registry()) else {
        return Ok(None);
    };
    let policy_mode = policy.mode().as_str();
    let events = Arc::clone(audit);
    let on_event = Box::new(move |event: RegistryEvent| {
        let mut record = Record::new("upstream", "ALLOW", policy_mode, false);
        record.event = Some("REGISTRY_REVOCATION_CHECK".into());
        match event {
            RegistryEvent::ListUpdated {
                mode,
                version,
                source,
                counts,
            } => {
                tracing::info!(mode, version, %source, "revocation list updated");
                record.mode = Some(mode.into());
                record.revocation_list_version = Some(version);
                record.reason = Some(format!(
                    "list version {version} from {source}: {} agents revoked, {} suspended, {} AATs, {} \
                     sessions, {} users",
                    counts.agents_revoked,
                    counts.agents_suspended,
                    counts.aats_revoked,
                    counts.sessions_revoked,
                    counts.users_revoked
                ));
            }
            RegistryEvent::CheckFailed { mode, reason } => {
                tracing::warn!(mode, "revocation check failed: {reason}");
                record.mode = Some(mode.into());
                record.decision = "BLOCK".into();
                record.reason = Some(reason);
            }
            RegistryEvent::KeysRefreshed { count } => {
                tracing::info!(count, "issuer keys loaded");
                return;
            }
            RegistryEvent::KeysFailed { reason } => {
                tracing::warn!("issuer keys could not be reloaded: {reason}");
                return;
            }
        }
        events.record(record);
    });
    let link = RegistryLink::start(registry, on_event)?;
    let fresh_link = Arc::clone(&link);
    let revocation = RevocationSource {
        view: Arc::clone(&link) as _,
        fresh: Arc::new(move || fresh_link.ensure_fresh().map_err(|e| e.to_string())),
    };
    let identity = Identity::with_clock(
        aat,
        policy.server(),
        Arc::clone(&link) as _,
        Some(revocation),
        Arc::clone(clock),
    );
    tracing::info!(
        audience = aat.audience,
        require = aat.require,
        mode = link.status().mode,
        "AAT verification on, keys and revocation from {}",
        registry.endpoint
    );
    Ok(Some((Arc::new(identity), link)))
}

fn reload(path: &std::path::Path, key: Option<&PublicKey>, handle: &PolicyHandle, audit: &AuditLog, hitl: &Hitl) {
    let previous = handle.current();
    let mut record = Record::new("upstream", "ALLOW", previous.policy().mode().as_str(), false).stamped(audit.clock());
    record.event = Some("POLICY_RELOADED".into());
    let loaded = load_policy(path, key).and_then(|policy| {
        let before = previous.policy();
        if policy.aat() != before.aat() || policy.registry() != before.registry() || policy.server() != before.server()
        {
            return Err(RunError::Reload(
                "the aat, registry and server sections change only with a restart".into(),
            ));
        }
        Ok(policy)
    });
    match loaded {
        Ok(policy) => {
            record.policy_mode = policy.mode().as_str().into();
            record.policy_hash = Some(policy.hash().to_owned());
            server::record_policy_hash(policy.name(), policy.hash());
            hitl.update_settings(policy.hitl().clone());
            let name = policy.name().to_owned();
            handle.replace(Engine::new(policy));
            // Said once the new policy is in force: a call after this line sees it.
            tracing::warn!(policy = name, hash = record.policy_hash.as_deref(), "policy reloaded");
        }
        Err(e) => {
            tracing::error!("policy reload refused, keeping the previous policy: {e}");
            record.event = Some("POLICY_RELOAD_FAILED".into());
            record.decision = "BLOCK".into();
            record.reason = Some(e.to_string());
            record.policy_hash = Some(previous.policy().hash().to_owned());
        }
    }
    audit.record(record);
}

/// With `dlp.filter_stderr`, the server's stderr lines pass through DLP before reaching ours.
fn filter_stderr_lines(stderr: impl io::Read, handle: &PolicyHandle) {
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let engine = handle.current();
        let out = engine
            .policy()
            .dlp()
            .and_then(|d| d.redact_text(&line, Direction::Response).map(|(t, _)| t));
        let text = out.as_deref().unwrap_or(&line);
        let mut err = io::stderr().lock();
        let _ = io::Write::write_all(&mut err, text.as_bytes());
    }
}
