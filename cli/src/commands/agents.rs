//! `aip-ca register-agent` and `aip-ca agents list|show|suspend|reactivate|revoke|rotate-key|
//! export-key|set-redirect-uris`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aip_aat::clock::{Clock as _, SystemClock};
use aip_aat::ids::AgentId;
use aip_aat::keyfile;
use aip_aat::keys::KeyPair;
use aip_api::registry::{RedirectUrisRequest, StatusKind, StatusRequest, registration_body, rotation_body};
use serde_json::json;

use super::authority::KeyAlg;
use crate::agent_dir::{self, AgentIdentity, CERTIFICATE_FILE, KEY_FILE};
use crate::output::{CliError, print_json, print_line, rfc3339, runtime, warn};
use crate::passphrase::PassphraseArgs;
use crate::remote::{RemoteArgs, api_error};

#[derive(clap::Args, Debug)]
pub(crate) struct RegisterArgs {
    /// Agent name (certificate subject CN).
    #[arg(long)]
    name: String,
    /// Owner (email or organisation).
    #[arg(long)]
    owner: Option<String>,
    /// What the agent does.
    #[arg(long)]
    description: Option<String>,
    /// Tools the agent may ever be granted, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "a,b")]
    capabilities: Vec<String>,
    /// Allow AATs without a user (autonomous agents).
    #[arg(long)]
    autonomous: bool,
    /// Agent key algorithm.
    #[arg(long, value_enum, default_value = "ed25519")]
    alg: KeyAlg,
    /// Where to write agent.key, agent.json and agent.crt (default: ./<name>).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    /// Print machine-readable JSON (includes agent_id).
    #[arg(long)]
    json: bool,
}

fn default_dir(name: &str) -> PathBuf {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug.trim_matches('-');
    PathBuf::from(if slug.is_empty() { "agent" } else { slug })
}

pub(crate) fn register(args: RegisterArgs) -> Result<ExitCode, CliError> {
    args.remote.require_token()?;
    let dir = args.out_dir.clone().unwrap_or_else(|| default_dir(&args.name));
    let choice = args.passphrase.for_new_key_explained(&format!(
        "Choose a passphrase for the agent's key ({}): it encrypts the key, and `aip-ca token` and \
         `aip-agent` ask for it when they use the key. It is asked twice.",
        dir.join(KEY_FILE).display()
    ))?;
    if choice.passphrase().is_none() {
        warn("the agent key is stored without a passphrase; use this for tests and demos only");
    }
    let created_dir = agent_dir::create_empty_dir(&dir)?;
    let key_path = dir.join(KEY_FILE);
    let cleanup = |dir: &Path| {
        let _ = std::fs::remove_file(dir.join(KEY_FILE));
        if created_dir {
            let _ = std::fs::remove_dir(dir);
        }
    };
    let key = KeyPair::generate(args.alg.algorithm()).map_err(CliError::new)?;
    keyfile::write(&key_path, &key, choice.protection())
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", key_path.display())))?;

    let mut fields = json!({"name": args.name, "capabilities": args.capabilities, "autonomous": args.autonomous});
    if let Some(description) = &args.description {
        fields["description"] = description.clone().into();
    }
    if let Some(owner) = &args.owner {
        fields["metadata"] = json!({"owner": owner});
    }
    let registered = registration_body(&key, fields, SystemClock.now())
        .map_err(CliError::new)
        .and_then(|body| {
            let client = args.remote.client()?;
            runtime()?.block_on(client.register_agent(&body)).map_err(api_error)
        });
    let registered = match registered {
        Ok(r) => r,
        Err(e) => {
            cleanup(&dir);
            return Err(e);
        }
    };
    let identity = AgentIdentity {
        agent_id: registered.agent_id.clone(),
        registry: args.remote.client()?.base().to_owned(),
        aid: registered.aid.clone(),
    };
    agent_dir::write_identity(&dir, &identity)?;
    agent_dir::write_file(&dir.join(CERTIFICATE_FILE), &registered.certificate_chain)?;
    if args.json {
        print_json(
            &json!({"agent_id": registered.agent_id, "dir": dir, "key_id": key.key_id(), "aid": registered.aid}),
            true,
        )?;
    } else {
        print_line(format_args!("registered agent {} ({})", registered.agent_id, args.name))?;
        print_line(format_args!(
            "key, identity and certificate written to {}",
            dir.display()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum AgentsCommand {
    /// List agents.
    List {
        /// Only agents in this status (active, suspended, revoked).
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an agent: status, keys, certificates.
    Show {
        /// Agent id.
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Suspend an agent (reversible; its certificates go on hold).
    Suspend(StatusArgs),
    /// Reactivate a suspended agent.
    Reactivate(StatusArgs),
    /// Revoke an agent for good.
    Revoke(RevokeArgs),
    /// Set the redirect URIs of an agent that sends people to /oauth/authorize (admin);
    /// replaces those set before.
    SetRedirectUris {
        /// Agent id.
        id: String,
        /// Absolute https URIs, or http on a loopback host (127.0.0.1, [::1], localhost).
        #[arg(value_name = "URI", required_unless_present = "clear")]
        uris: Vec<String>,
        /// Remove every redirect URI of the agent.
        #[arg(long, conflicts_with = "uris")]
        clear: bool,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rotate an agent's key (run by the agent's owner, with its agent directory).
    RotateKey {
        /// The directory `register-agent` wrote.
        #[arg(long, value_name = "DIR")]
        agent_dir: PathBuf,
        /// Algorithm of the new key.
        #[arg(long, value_enum, default_value = "ed25519")]
        alg: KeyAlg,
        #[command(flatten)]
        remote: RemoteArgs,
        #[command(flatten)]
        passphrase: PassphraseArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write an agent's private key as PKCS#8 PEM, for a standard OAuth client that signs its
    /// own client assertions (`private_key_jwt`). The copy is not encrypted.
    ExportKey {
        /// The directory `register-agent` wrote.
        #[arg(long, value_name = "DIR")]
        agent_dir: PathBuf,
        /// The file to write (created with mode 0600; an existing file is left alone).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub(crate) struct StatusArgs {
    /// Agent id.
    id: String,
    /// Why (recorded and published).
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    status: StatusArgs,
    /// CRL reason: unspecified, key_compromise, affiliation_changed, superseded,
    /// cessation_of_operation (default), privilege_withdrawn.
    #[arg(long)]
    crl_reason: Option<String>,
}

fn agent_id(id: &str) -> Result<AgentId, CliError> {
    id.parse()
        .map_err(|e| CliError::new(e).hint("agent ids look like ag_550e8400-e29b-41d4-a716-446655440000"))
}

pub(crate) fn agents(command: AgentsCommand) -> Result<ExitCode, CliError> {
    let rt = runtime()?;
    match command {
        AgentsCommand::List { status, remote, json } => {
            remote.require_token()?;
            let client = remote.client()?;
            let mut agents = Vec::new();
            let mut after = None;
            loop {
                let page = rt
                    .block_on(client.agents(status.as_deref(), after.as_ref(), aip_api::MAX_PAGE))
                    .map_err(api_error)?;
                agents.extend(page.agents);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            if json {
                print_json(&serde_json::to_value(&agents).map_err(CliError::new)?, true)?;
            } else if agents.is_empty() {
                print_line("no agents")?;
            } else {
                for a in &agents {
                    print_line(format_args!("{}  {:<9}  {}", a.agent_id, a.status, a.name))?;
                }
            }
        }
        AgentsCommand::Show { id, remote, json } => {
            remote.require_token()?;
            let agent = rt
                .block_on(remote.client()?.agent(&agent_id(&id)?))
                .map_err(api_error)?;
            if json {
                print_json(&serde_json::to_value(&agent).map_err(CliError::new)?, true)?;
            } else {
                print_line(format_args!("agent:        {}", agent.agent_id))?;
                print_line(format_args!("name:         {}", agent.aid.name))?;
                print_line(format_args!(
                    "status:       {}{}",
                    agent.status,
                    agent.status_reason.map(|r| format!(" ({r})")).unwrap_or_default()
                ))?;
                print_line(format_args!("key:          {}", agent.public_key_thumbprint))?;
                print_line(format_args!("capabilities: {}", agent.capabilities.join(", ")))?;
                for uri in &agent.redirect_uris {
                    print_line(format_args!("redirect uri: {uri}"))?;
                }
                for k in &agent.previous_keys {
                    print_line(format_args!(
                        "previous key: {} (valid until {})",
                        k.thumbprint,
                        rfc3339(k.valid_until)
                    ))?;
                }
                for c in &agent.certificates {
                    print_line(format_args!(
                        "certificate:  {} {:<10} until {}",
                        c.serial,
                        c.state,
                        rfc3339(c.not_after)
                    ))?;
                }
            }
        }
        AgentsCommand::Suspend(args) => status(&rt, args, StatusKind::Suspend, None)?,
        AgentsCommand::Reactivate(args) => status(&rt, args, StatusKind::Reactivate, None)?,
        AgentsCommand::Revoke(args) => status(&rt, args.status, StatusKind::Revoke, args.crl_reason)?,
        AgentsCommand::SetRedirectUris {
            id,
            uris,
            clear: _,
            remote,
            json,
        } => {
            remote.require_token()?;
            let request = RedirectUrisRequest { redirect_uris: uris };
            let set = rt
                .block_on(remote.client()?.set_redirect_uris(&agent_id(&id)?, &request))
                .map_err(api_error)?;
            if json {
                print_json(&serde_json::to_value(&set).map_err(CliError::new)?, true)?;
            } else if set.redirect_uris.is_empty() {
                print_line(format_args!("agent {} has no redirect URIs", set.agent_id))?;
            } else {
                print_line(format_args!(
                    "agent {} redirect URIs: {}",
                    set.agent_id,
                    set.redirect_uris.join(" ")
                ))?;
            }
        }
        AgentsCommand::RotateKey {
            agent_dir,
            alg,
            remote,
            passphrase,
            json,
        } => rotate(&rt, &agent_dir, alg, &remote, &passphrase, json)?,
        AgentsCommand::ExportKey {
            agent_dir,
            out,
            passphrase,
            json,
        } => export_key(&agent_dir, &out, &passphrase, json)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `agents export-key`: the key as PKCS#8 PEM in a new 0600 file, with a warning that it now
/// exists outside its encrypted file.
fn export_key(dir: &Path, out: &Path, passphrase: &PassphraseArgs, json: bool) -> Result<(), CliError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let identity = agent_dir::read_identity(dir)?;
    let (key, _) = agent_dir::read_key(dir, passphrase)?;
    let pem = key.to_pkcs8_pem().map_err(CliError::new)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| {
            CliError::new(format!("cannot create {}: {e}", out.display()))
                .hint("export-key never overwrites a file: name a new one")
        })?;
    if let Err(e) = file.write_all(pem.as_bytes()).and_then(|()| file.sync_all()) {
        drop(file);
        let _ = std::fs::remove_file(out);
        return Err(CliError::new(format!("cannot write {}: {e}", out.display())));
    }
    warn(format_args!(
        "{} holds the agent's private key unencrypted, outside {}: keep it as safe as the agent itself, \
         and delete it when the client no longer needs it",
        out.display(),
        dir.join(KEY_FILE).display()
    ));
    if json {
        print_json(
            &json!({
                "agent_id": identity.agent_id,
                "algorithm": key.algorithm().as_str(),
                "path": out,
                "public_key": key.public_key().to_jwk(),
            }),
            true,
        )
    } else {
        print_line(format_args!(
            "wrote the {} key of {} to {} (PKCS#8 PEM)",
            key.algorithm(),
            identity.agent_id,
            out.display()
        ))
    }
}

fn status(
    rt: &tokio::runtime::Runtime,
    args: StatusArgs,
    kind: StatusKind,
    crl_reason: Option<String>,
) -> Result<(), CliError> {
    args.remote.require_token()?;
    let id = agent_id(&args.id)?;
    let request = StatusRequest {
        reason: args.reason,
        crl_reason,
    };
    let changed = rt
        .block_on(args.remote.client()?.change_status(&id, kind, &request))
        .map_err(api_error)?;
    if args.json {
        print_json(&serde_json::to_value(&changed).map_err(CliError::new)?, true)
    } else {
        print_line(format_args!(
            "agent {} is {} (was {}); revocation list version {}",
            changed.agent_id, changed.status, changed.previous_status, changed.revocation_version
        ))
    }
}

fn rotate(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    alg: KeyAlg,
    remote: &RemoteArgs,
    passphrase: &PassphraseArgs,
    json: bool,
) -> Result<(), CliError> {
    let identity = agent_dir::read_identity(dir)?;
    let key_path = dir.join(KEY_FILE);
    let (current, choice) = agent_dir::read_key(dir, passphrase)?;
    let new_key = KeyPair::generate(alg.algorithm()).map_err(CliError::new)?;
    let new_path = dir.join("agent.key.new");
    let _ = std::fs::remove_file(&new_path);
    keyfile::write(&new_path, &new_key, choice.protection())
        .map_err(|e| CliError::new(format!("{}: {e}", new_path.display())))?;

    let response = rotation_body(&current, &new_key, &identity.agent_id, SystemClock.now())
        .map_err(CliError::new)
        .and_then(|body| {
            rt.block_on(remote.client()?.rotate_key(&identity.agent_id, &body))
                .map_err(api_error)
        });
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&new_path);
            return Err(e);
        }
    };
    let previous = dir.join("agent.key.previous");
    let _ = std::fs::remove_file(&previous);
    std::fs::rename(&key_path, &previous)
        .and_then(|()| std::fs::rename(&new_path, &key_path))
        .map_err(|e| {
            CliError::new(format!(
                "the key was rotated but {} could not be updated: {e}",
                key_path.display()
            ))
            .hint(format!("the new key is in {}", new_path.display()))
        })?;
    agent_dir::write_identity(
        dir,
        &AgentIdentity {
            aid: response.aid.clone(),
            ..identity
        },
    )?;
    agent_dir::write_file(&dir.join(CERTIFICATE_FILE), &response.certificate_chain)?;
    if json {
        print_json(&serde_json::to_value(&response).map_err(CliError::new)?, true)
    } else {
        print_line(format_args!(
            "rotated the key of {}; the previous key stays valid until {} and is kept in {}",
            response.agent_id,
            response.previous_key_valid_until.map(rfc3339).unwrap_or_default(),
            previous.display()
        ))
    }
}
