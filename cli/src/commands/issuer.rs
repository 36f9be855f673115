//! `aip-ca users`, `aip-ca revoke`, `aip-ca delegations` and `aip-ca keys`: the token issuer's administration.

use std::process::ExitCode;

use aip_aat::clock::{Clock as _, SystemClock};
use aip_aat::keyfile;
use aip_api::issuer::{CreateUserRequest, CreateUserResponse, RevokeRequest, RevokeResponse, UserList};
use aip_issuer::keys::{PUBLISH_MARGIN, add_key};
use aip_issuer::store::IssuerStore;
use serde_json::json;

use crate::commands::authority::{DirArgs, KeyAlg, open_database};
use crate::output::{CliError, print_json, print_line, runtime};
use crate::passphrase::{Choice, PassphraseArgs};
use crate::remote::{RemoteArgs, api_error};

#[derive(clap::Subcommand, Debug)]
pub(crate) enum UsersCommand {
    /// Create a user who authorizes agents with an API key (the key is shown once).
    Create {
        /// The user's id (an email address or an opaque id).
        #[arg(long = "id", value_name = "ID")]
        user_id: String,
        /// Tools the user may delegate to agents, comma-separated (`*`: any).
        #[arg(long, value_name = "TOOLS", value_delimiter = ',', required = true)]
        delegatable: Vec<String>,
        /// Mark the user's AATs `delegation_scope: read_only`.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON (includes the API key).
        #[arg(long)]
        json: bool,
    },
    /// List API-key users.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a user (final): every live AAT and session of the user is revoked, and the
    /// issuer refuses the user's authorization from now on.
    Revoke {
        /// The user's id.
        #[arg(value_name = "ID")]
        user_id: String,
        /// Why (published in the revocation list).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn users(command: UsersCommand) -> Result<ExitCode, CliError> {
    match command {
        UsersCommand::Create {
            user_id,
            delegatable,
            read_only,
            remote,
            json,
        } => {
            remote.require_token()?;
            let request = CreateUserRequest {
                user_id,
                delegatable_tools: delegatable,
                delegation_scope: read_only.then(|| "read_only".to_owned()),
            };
            let user: CreateUserResponse = runtime()?
                .block_on(remote.client()?.create_user(&request))
                .map_err(api_error)?;
            if json {
                print_json(&serde_json::to_value(&user).map_err(CliError::new)?, true)?;
            } else {
                print_line(format_args!(
                    "user {} may delegate {} ({})",
                    user.user_id,
                    user.delegatable_tools.join(","),
                    user.delegation_scope
                ))?;
                print_line(format_args!("API key (shown only now): {}", user.api_key.expose()))?;
            }
        }
        UsersCommand::List { remote, json } => {
            remote.require_token()?;
            let (rt, client) = (runtime()?, remote.client()?);
            let mut list = UserList::default();
            loop {
                let page = rt
                    .block_on(client.users(list.next.as_deref(), aip_api::MAX_PAGE))
                    .map_err(api_error)?;
                list.users.extend(page.users);
                list.next = page.next;
                if list.next.is_none() {
                    break;
                }
            }
            if json {
                print_json(&serde_json::to_value(&list).map_err(CliError::new)?, true)?;
            } else {
                for user in &list.users {
                    let state = if user.revoked_at.is_some() { "revoked" } else { "active" };
                    print_line(format_args!(
                        "{}\t{state}\t{}\t{}",
                        user.user_id,
                        user.delegation_scope,
                        user.delegatable_tools.join(",")
                    ))?;
                }
            }
        }
        UsersCommand::Revoke {
            user_id,
            reason,
            remote,
            json,
        } => {
            let request = RevokeRequest {
                user_id: Some(user_id),
                reason,
                ..RevokeRequest::default()
            };
            return send_revoke(&remote, &request, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum DelegationsCommand {
    /// Revoke one delegation of delegable AATs by the revocation id of its block (hex, as
    /// `aip-ca verify` and the proxy's audit records show it): every token derived from it is
    /// refused at every proxy.
    Revoke {
        /// The block's revocation id.
        #[arg(value_name = "REVOCATION_ID")]
        revocation_id: String,
        /// Why (published in the revocation list).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn delegations(command: DelegationsCommand) -> Result<ExitCode, CliError> {
    match command {
        DelegationsCommand::Revoke {
            revocation_id,
            reason,
            remote,
            json,
        } => {
            let request = RevokeRequest {
                delegation: Some(revocation_id),
                reason,
                ..RevokeRequest::default()
            };
            send_revoke(&remote, &request, json)
        }
    }
}

/// `aip-ca revoke`: one AAT, a session, a user, an agent or a delegation.
#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("target").required(true).multiple(false))]
pub(crate) struct RevokeArgs {
    /// An AAT, by `jti`.
    #[arg(long, group = "target", value_name = "JTI")]
    jti: Option<String>,
    /// A session: every AAT of it, and its refresh token.
    #[arg(long, group = "target", value_name = "ID")]
    session: Option<String>,
    /// A user: every session and AAT of the user, for good.
    #[arg(long, group = "target", value_name = "ID")]
    user: Option<String>,
    /// An agent: revoked in the registry, with every session and AAT of it.
    #[arg(long, group = "target", value_name = "AGENT_ID")]
    agent: Option<String>,
    /// A delegation, by the revocation id of its block: every delegable AAT derived from it.
    #[arg(long, group = "target", value_name = "REVOCATION_ID")]
    delegation: Option<String>,
    /// Why (published in the revocation list).
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn revoke(args: RevokeArgs) -> Result<ExitCode, CliError> {
    let agent_id = args
        .agent
        .map(|a| a.parse().map_err(|e| CliError::new(format!("--agent: {e}"))))
        .transpose()?;
    let request = RevokeRequest {
        jti: args.jti,
        session_id: args.session,
        user_id: args.user,
        agent_id,
        delegation: args.delegation,
        reason: args.reason,
    };
    send_revoke(&args.remote, &request, args.json)
}

fn send_revoke(remote: &RemoteArgs, request: &RevokeRequest, json: bool) -> Result<ExitCode, CliError> {
    remote.require_token()?;
    let response: RevokeResponse = runtime()?
        .block_on(remote.client()?.revoke(request))
        .map_err(api_error)?;
    if json {
        print_json(&serde_json::to_value(&response).map_err(CliError::new)?, true)?;
    } else {
        print_line(format_args!(
            "revoked {} {}: {} live AAT(s), {} session(s); revocation list version {}",
            response.revoked, response.id, response.tokens, response.sessions, response.revocation_version
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Add a new AAT signing key. Running servers publish it in /v1/jwks within seconds and
    /// sign with it once restarted; the previous key stays published until every token it
    /// signed has expired.
    Rotate {
        #[command(flatten)]
        dir: DirArgs,
        /// Algorithm of the new key.
        #[arg(long, value_enum, default_value = "ed25519")]
        alg: KeyAlg,
        #[command(flatten)]
        passphrase: PassphraseArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the AAT signing keys.
    List {
        #[command(flatten)]
        dir: DirArgs,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn keys(command: KeysCommand) -> Result<ExitCode, CliError> {
    match command {
        KeysCommand::Rotate {
            dir,
            alg,
            passphrase,
            json,
        } => {
            if !aip_authority::init::exists(&dir.dir) {
                return Err(CliError::new(format!("no authority in {}", dir.dir.display())));
            }
            let encrypted = aip_authority::init::keys_encrypted(&dir.dir).map_err(CliError::new)?;
            let choice = if encrypted {
                passphrase.for_existing_key()?
            } else {
                Choice::Insecure
            };
            let kid = runtime()?.block_on(async {
                let store = open_database(&dir.dir, None).await?;
                let issuer = IssuerStore::new(&store);
                let result = async {
                    // The new key is stored under the passphrase that opens the current one,
                    // so a mistyped passphrase cannot lock the servers out of it.
                    if let Some(current) = issuer.keys().await.map_err(CliError::new)?.first() {
                        keyfile::decode(&current.key_file, choice.passphrase())
                            .map_err(|e| CliError::new(format!("current signing key {}: {e}", current.kid)))?;
                    }
                    add_key(
                        &issuer,
                        alg.algorithm(),
                        choice.protection(),
                        "operator:keys-rotate",
                        SystemClock.now(),
                    )
                    .await
                    .map_err(CliError::new)
                }
                .await;
                store.close().await;
                result
            })?;
            if json {
                print_json(&json!({"kid": kid, "algorithm": alg.algorithm().as_str()}), false)?;
            } else {
                print_line(format_args!(
                    "new signing key {kid}; restart the servers to sign with it (it is published now)"
                ))?;
            }
        }
        KeysCommand::List { dir, json } => {
            let records = runtime()?.block_on(async {
                let store = open_database(&dir.dir, None).await?;
                let records = IssuerStore::new(&store).keys().await.map_err(CliError::new);
                store.close().await;
                records
            })?;
            let now = SystemClock.now();
            let rows: Vec<_> = records
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let state = if i == 0 {
                        "current"
                    } else if r.retired_at.is_none() || r.last_expiry + PUBLISH_MARGIN >= now {
                        "published"
                    } else {
                        "retired"
                    };
                    json!({
                        "kid": r.kid,
                        "algorithm": r.algorithm,
                        "state": state,
                        "created_at": r.created_at,
                        "retired_at": r.retired_at,
                        "last_token_expiry": (r.last_expiry > 0).then_some(r.last_expiry),
                    })
                })
                .collect();
            if json {
                print_json(&json!({"keys": rows}), true)?;
            } else {
                for row in &rows {
                    print_line(format_args!(
                        "{}\t{}\t{}",
                        row["kid"].as_str().unwrap_or_default(),
                        row["algorithm"].as_str().unwrap_or_default(),
                        row["state"].as_str().unwrap_or_default()
                    ))?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
