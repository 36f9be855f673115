//! Running `aip-proxy`: spawn the MCP server, relay both directions, forward signals, reload the
//! policy on SIGHUP, and exit with the server's status once everything acknowledged is on disk;
//! or, with `--serve`, the Streamable HTTP front door until a stop signal.
//!
//! # Files
//!
//! - `options` — [`ProxyOptions`], [`RunError`], [`load_policy`];
//! - `identity` — the AAT checks over the registry link, with revocation changes audited;
//! - `reload` — SIGHUP: the policy loaded again;
//! - this file — [`run`]: everything put together, for stdio or the front door.

mod identity;
mod options;
mod reload;

use std::io::{self, BufReader};
use std::sync::Arc;
use std::thread;

use aip_aat::clock::{Clock, SystemClock};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use tokio::sync::Notify;

use crate::audit::AuditLog;
use crate::engine::{Engine, SchemaBook};
use crate::front::{self, FrontDoorOptions};
use crate::hitl::Hitl;
use crate::metrics;
use crate::policy::Policy;
use crate::relay::{Relay, Sink, sink};
use crate::server::{self, ServerState};
use crate::state::PolicyHandle;
use crate::target::{exit_code, filter_stderr_lines, spawn_target, wait};

pub use options::{ProxyOptions, RunError, load_policy};

use identity::start_identity;
use reload::reload;

/// The parts both ways of running share, started.
struct Started {
    hitl: Arc<Hitl>,
    audit: Arc<AuditLog>,
    identity: Option<Arc<crate::identity::Identity>>,
    registry: Option<Arc<crate::registry::RegistryLink>>,
    handle: Arc<PolicyHandle>,
    schemas: Arc<SchemaBook>,
    server: Option<server::ServerHandle>,
}

impl Started {
    /// Stops what runs beside the relay, and flushes the audit log.
    fn finish(self) {
        self.hitl.shutdown();
        if let Some(server) = self.server {
            server.shutdown();
        }
        if let Some(registry) = self.registry {
            registry.shutdown();
        }
        // A relay thread may still hold the log (blocked reading our stdin until the process
        // exits), so flush through a shared reference: everything recorded so far is on disk.
        if let Err(e) = self.audit.sync() {
            tracing::error!("audit log could not be flushed: {e}");
        }
    }
}

/// Runs the proxy until the server exits (stdio) or until SIGINT/SIGTERM (front door); returns
/// the exit code to use (the server's, or 128 + signal; 0 for the front door).
pub fn run(mut options: ProxyOptions) -> Result<i32, RunError> {
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
    match options.front_door.take() {
        Some(front_door) => serve_front_door(options, policy, front_door),
        None => run_stdio(options, policy),
    }
}

/// The shared parts: approvals, the audit log, the AAT checks (for `audience` when given,
/// else the policy's), the policy handle and the optional HTTP API.
fn start(options: &ProxyOptions, policy: Policy, audience: Option<&str>) -> Result<Started, RunError> {
    let listen = options.listen.or_else(|| {
        policy
            .server()
            .enabled
            .then(|| policy.server().listen.parse().ok())
            .flatten()
    });
    // The wall clock every part of the proxy reads (audit timestamps, holds, AAT checks).
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let hitl = Arc::new(
        Hitl::with_clock(policy.hitl().clone(), options.prompt.clone(), Arc::clone(&clock)).map_err(RunError::Hitl)?,
    );
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
    let (identity, registry) = match start_identity(&policy, audience, &audit, &clock)? {
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
    Ok(Started {
        hitl,
        audit,
        identity,
        registry,
        handle,
        schemas,
        server,
    })
}

/// The Streamable HTTP front door until SIGINT or SIGTERM; SIGHUP reloads the policy.
fn serve_front_door(options: ProxyOptions, policy: Policy, front_door: FrontDoorOptions) -> Result<i32, RunError> {
    let bound = front::bind(&front_door)?;
    if let Some(aat) = policy.aat()
        && aat.audience_set
        && aat.audience != bound.resource()
    {
        return Err(RunError::FrontDoor(front::FrontDoorError::Config(format!(
            "spec.aat.audience is {:?}, but AATs for this front door name its resource URI {:?}: \
             leave spec.aat.audience out, or set --public-url",
            aat.audience,
            bound.resource()
        ))));
    }
    let registry = policy.registry().cloned();
    let resource = bound.resource().to_owned();
    let started = start(&options, policy, Some(&resource))?;
    let stop = Arc::new(Notify::new());
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(RunError::Signals)?;
    let signal_handle = signals.handle();
    let signal_thread = {
        let (handle, audit, hitl, stop) = (
            Arc::clone(&started.handle),
            Arc::clone(&started.audit),
            Arc::clone(&started.hitl),
            Arc::clone(&stop),
        );
        let (policy_path, policy_key) = (options.policy.clone(), options.policy_key.clone());
        thread::spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reload(&policy_path, policy_key.as_ref(), &handle, &audit, &hitl);
                } else {
                    tracing::info!("stopping: finishing requests in flight");
                    stop.notify_one();
                }
            }
        })
    };
    let parts = front::Parts {
        policy: Arc::clone(&started.handle),
        schemas: Arc::clone(&started.schemas),
        audit: Arc::clone(&started.audit),
        hitl: Arc::clone(&started.hitl),
        identity: started.identity.clone(),
        relay: options.relay.clone(),
        registry,
    };
    let served = front::serve(bound, front_door, parts, stop);
    signal_handle.close();
    let _ = signal_thread.join();
    started.finish();
    served?;
    Ok(0)
}

/// The stdio relay until the wrapped server exits.
fn run_stdio(options: ProxyOptions, policy: Policy) -> Result<i32, RunError> {
    let filter_stderr = policy.dlp().is_some_and(|d| d.settings().filter_stderr);
    let Some(target) = options.target.clone() else {
        return Err(RunError::Spawn {
            target: String::new(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "no target command"),
        });
    };
    let started = start(&options, policy, None)?;
    let (handle, schemas, audit, hitl, identity) = (
        Arc::clone(&started.handle),
        Arc::clone(&started.schemas),
        Arc::clone(&started.audit),
        Arc::clone(&started.hitl),
        started.identity.clone(),
    );

    let mut child = spawn_target(&target, filter_stderr).map_err(|source| RunError::Spawn {
        target: target.clone(),
        source,
    })?;
    let child_pid = rustix::process::Pid::from_child(&child);
    let relay = Relay::new(
        Arc::clone(&handle),
        Arc::clone(&schemas),
        Arc::clone(&audit),
        Arc::clone(&hitl),
        identity,
        options.relay.clone(),
    );
    let client_out: Sink = sink(io::stdout());
    let (server_in, server_out) = match (child.stdin.take(), child.stdout.take()) {
        (Some(stdin), Some(stdout)) => (sink(stdin), stdout),
        _ => {
            return Err(RunError::Spawn {
                target,
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
    drop(upstream); // Still blocked on our stdin if the client keeps it open; process exit ends it.
    signal_handle.close();
    let _ = signal_thread.join();
    drop(relay);
    started.finish();
    Ok(exit_code(status))
}
