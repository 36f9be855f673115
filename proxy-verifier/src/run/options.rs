//! What `aip-proxy` is started with ([`ProxyOptions`]), why it may fail to start
//! ([`RunError`]), and loading the policy under its key.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use aip_aat::keys::PublicKey;

use crate::audit::CheckpointKey;
use crate::front::{FrontDoorError, FrontDoorOptions};
use crate::hitl::PromptMode;
use crate::policy::{Policy, PolicyError, SignaturePolicy};
use crate::registry::LinkError;
use crate::relay::RelayOptions;

/// Everything `aip-proxy --policy … --target …` needs.
#[derive(Debug)]
pub struct ProxyOptions {
    /// The policy file.
    pub policy: PathBuf,
    /// Key that must have signed the policy.
    pub policy_key: Option<PublicKey>,
    /// The MCP server command: run directly when it is a plain word list, else with `/bin/sh -c`.
    /// With the front door, `front_door.upstream` names what is fronted instead.
    pub target: Option<String>,
    /// `--serve`: the Streamable HTTP front door instead of the stdio relay.
    pub front_door: Option<FrontDoorOptions>,
    /// The audit log file.
    pub audit: Option<PathBuf>,
    /// The key that signs the audit log's checkpoints.
    pub audit_key: Option<CheckpointKey>,
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
    /// The front door cannot start or serve.
    #[error(transparent)]
    FrontDoor(#[from] FrontDoorError),
    /// The replay store `aat.replay_store` names cannot be used.
    #[error("AAT verification cannot start: {0} (spec.aat.replay_store chooses where it is kept)")]
    ReplayStore(String),
}

/// Loads the policy at `path` under `key`.
pub fn load_policy(path: &std::path::Path, key: Option<&PublicKey>) -> Result<Policy, RunError> {
    let signature = key.map_or(SignaturePolicy::NoKey, SignaturePolicy::Require);
    Policy::load(path, signature).map_err(|source| RunError::Policy {
        path: path.to_owned(),
        source,
    })
}
