//! Running `aip-proxy`: spawn the MCP server, relay both directions, forward signals, reload the
//! policy on SIGHUP, and exit with the server's status once everything acknowledged is on disk.
//!
//! # Files
//!
//! - `options` — [`ProxyOptions`], [`RunError`], [`load_policy`];
//! - `target` — the wrapped server's process: start, stderr filter, exit status;
//! - `identity` — the AAT checks over the registry link, with revocation changes audited;
//! - `reload` — SIGHUP: the policy loaded again;
//! - this file — [`run`]: everything put together.

mod identity;
mod options;
mod reload;
mod target;

use std::io::{self, BufReader};
use std::sync::Arc;
use std::thread;

use aip_aat::clock::{Clock, SystemClock};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::audit::AuditLog;
use crate::engine::{Engine, SchemaBook};
use crate::hitl::Hitl;
use crate::metrics;
use crate::relay::{Relay, Sink, sink};
use crate::server::{self, ServerState};
use crate::state::PolicyHandle;

pub use options::{ProxyOptions, RunError, load_policy};

use identity::start_identity;
use reload::reload;
use target::{exit_code, filter_stderr_lines, spawn_target, wait};

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
    let audit = match &options.audit {
        Some(path) => AuditLog::open_signed(path, Arc::clone(&clock), options.audit_key.clone()).map_err(|source| {
            RunError::Audit {
                path: path.clone(),
                source,
            }
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
                metrics::install_metrics(),
            )
            .with_identity(identity.clone())
            .with_audit(Some(Arc::clone(&audit)));
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

    // Recorded once the recorder is installed (`--listen`), so `/metrics` shows the policy from
    // the start, not only after a reload.
    {
        let engine = handle.current();
        metrics::record_policy_hash(engine.policy().name(), engine.policy().hash());
    }

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
