//! The agent directory `register-agent --out-dir` writes and `agents rotate-key`,
//! `aip-ca token` and `aip-agent` read: `agent.key` (encrypted key file), `agent.json`
//! (`agent_id`, registry URL, attested AID) and `agent.crt` (certificate chain, PEM).

use std::path::{Path, PathBuf};

use aip_aat::aid::AgentIdentityDocument;
use aip_aat::ids::AgentId;
use serde::{Deserialize, Serialize};

use crate::output::CliError;
use crate::passphrase::{Choice, PassphraseArgs};

/// The key file.
pub(crate) const KEY_FILE: &str = "agent.key";
/// The identity file.
pub(crate) const IDENTITY_FILE: &str = "agent.json";
/// The certificate chain.
pub(crate) const CERTIFICATE_FILE: &str = "agent.crt";

/// `agent.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AgentIdentity {
    pub(crate) agent_id: AgentId,
    pub(crate) registry: String,
    pub(crate) aid: AgentIdentityDocument,
}

pub(crate) fn read_identity(dir: &Path) -> Result<AgentIdentity, CliError> {
    let path = dir.join(IDENTITY_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError::new(format!("cannot read {}: {e}", path.display()))
            .hint("--agent-dir must be a directory written by `aip-ca register-agent`")
    })?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::new(format!("{} is not an agent identity file: {e}", path.display())))
}

/// The agent's key from `dir`, unlocked with the passphrase when it is encrypted; also how it
/// is protected, for keys written next to it.
pub(crate) fn read_key(dir: &Path, passphrase: &PassphraseArgs) -> Result<(aip_aat::keys::KeyPair, Choice), CliError> {
    use aip_aat::keyfile;
    let key_path = dir.join(KEY_FILE);
    let text = keyfile::read_text(&key_path).map_err(|e| CliError::new(format!("{}: {e}", key_path.display())))?;
    let encrypted = keyfile::inspect(&text)
        .map_err(|e| CliError::new(format!("{}: {e}", key_path.display())))?
        .encrypted;
    let choice = if encrypted {
        passphrase.for_existing_key_explained(&format!("The passphrase of the agent's key {}:", key_path.display()))?
    } else {
        Choice::Insecure
    };
    let key = keyfile::decode(&text, choice.passphrase())
        .map_err(|e| CliError::new(format!("{}: {e}", key_path.display())))?;
    Ok((key, choice))
}

pub(crate) fn write_identity(dir: &Path, identity: &AgentIdentity) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(identity).map_err(CliError::new)?;
    write_file(&dir.join(IDENTITY_FILE), &(text + "\n"))
}

pub(crate) fn write_file(path: &Path, text: &str) -> Result<(), CliError> {
    // Write beside, then rename: a reader never sees half a file.
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            CliError::new(format!("cannot write {}: {e}", path.display()))
        })
}

/// Creates `dir` (mode 0700) if needed; refuses a directory that already holds files.
pub(crate) fn create_empty_dir(dir: &Path) -> Result<bool, CliError> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| CliError::new(format!("{}: {e}", dir.display())))?
            .next()
            .is_none();
        if !empty {
            return Err(
                CliError::new(format!("{} already exists and is not empty", dir.display()))
                    .hint("choose another --out-dir; existing agent keys are never overwritten"),
            );
        }
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(|e| CliError::new(format!("cannot create {}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| CliError::new(format!("{}: {e}", dir.display())))?;
    }
    Ok(true)
}
