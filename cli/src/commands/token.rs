//! `aip-ca token`: fetch an AAT for an agent, as the agent would at startup; the client flags
//! it shares with `aip-agent`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use aip_aat::secret::SecretString;
use aip_api::agent::{AgentClient, AgentClientConfig, AgentClientError};
use aip_api::issuer::{TokenFormat, UserAuthorization};
use serde_json::json;

use crate::agent_dir;
use crate::output::{CliError, EXIT_REJECTED, print_json, print_line};
use crate::passphrase::PassphraseArgs;
use crate::remote::DEFAULT_URL;

/// Environment variable holding the user's API key.
pub(crate) const ENV_USER_API_KEY: &str = "AIP_USER_API_KEY";

/// How the agent's user authorizes it. `aip-agent` takes the same flags.
#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("user").multiple(false))]
pub(crate) struct UserArgs {
    /// The user's API key (`aip-ca users create`).
    #[arg(
        long,
        value_name = "KEY",
        env = ENV_USER_API_KEY,
        hide_env_values = true,
        group = "user"
    )]
    user_api_key: Option<String>,
    /// A file holding the user's API key: keeps the key out of the command line and out of an
    /// MCP client's configuration.
    #[arg(long, value_name = "FILE", group = "user")]
    user_api_key_file: Option<PathBuf>,
    /// A file holding the user's OpenID Connect ID token.
    #[arg(long, value_name = "FILE", group = "user")]
    oidc_id_token_file: Option<PathBuf>,
    /// The operating-system user running this command (the issuer must enable `local_user`,
    /// and accepts it from loopback only).
    #[arg(long, group = "user")]
    local_user: bool,
}

impl UserArgs {
    /// The `user_authorization` to send; `None` for an autonomous agent.
    pub(crate) fn authorization(&self) -> Result<Option<UserAuthorization>, CliError> {
        if let Some(key) = &self.user_api_key {
            return Ok(Some(UserAuthorization::ApiKey {
                token: SecretString::new(key.trim()),
            }));
        }
        if let Some(path) = &self.user_api_key_file {
            return Ok(Some(UserAuthorization::ApiKey {
                token: SecretString::new(read_secret(path)?.trim()),
            }));
        }
        if let Some(path) = &self.oidc_id_token_file {
            return Ok(Some(UserAuthorization::OidcIdToken {
                token: SecretString::new(read_secret(path)?.trim()),
            }));
        }
        if self.local_user {
            let username = std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .map_err(|_| CliError::new("--local-user: neither USER nor LOGNAME is set"))?;
            return Ok(Some(UserAuthorization::LocalUser {
                uid: None,
                username,
                hostname: None,
            }));
        }
        Ok(None)
    }
}

/// The text of a file holding one secret (an API key, an ID token), not empty. Errors name the
/// file, never its content.
fn read_secret(path: &std::path::Path) -> Result<String, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Err(CliError::new(format!("{} is empty", path.display())));
    }
    Ok(text)
}

/// Which agent asks which issuer for which AAT: the flags `aip-ca token` and `aip-agent` share.
#[derive(clap::Args, Debug)]
pub(crate) struct ClientArgs {
    /// The agent directory `aip-ca register-agent --out-dir` wrote.
    #[arg(long, value_name = "DIR")]
    agent_dir: PathBuf,
    /// The proxy or service the AAT is for.
    #[arg(long, value_name = "AUD")]
    audience: String,
    /// Tools to ask for, comma-separated (default: every tool the agent may have).
    #[arg(long, value_name = "TOOLS", value_delimiter = ',')]
    tools: Option<Vec<String>>,
    #[command(flatten)]
    user: UserArgs,
    /// Base URL of the token issuer.
    #[arg(long = "issuer", value_name = "URL", env = "AIP_URL", default_value = DEFAULT_URL)]
    issuer: String,
    /// Trust exactly these CA certificates (PEM) for the issuer's TLS certificate.
    #[arg(long, value_name = "FILE", env = "AIP_CA_CERT")]
    ca_cert: Option<PathBuf>,
    #[command(flatten)]
    passphrase: PassphraseArgs,
}

impl ClientArgs {
    /// Reads the agent's identity and key (unlocking it), then fetches the first AAT, of
    /// `format`, on `runtime`: the client that keeps it.
    pub(crate) fn start(
        &self,
        runtime: &tokio::runtime::Runtime,
        format: TokenFormat,
    ) -> Result<AgentClient, CliError> {
        let identity = agent_dir::read_identity(&self.agent_dir)?;
        let (key, _) = agent_dir::read_key(&self.agent_dir, &self.passphrase)?;
        let mut config = AgentClientConfig::new(&self.issuer, identity.agent_id, &self.audience);
        config.token_format = format;
        config.tools.clone_from(&self.tools);
        config.user = self.user.authorization()?;
        if let Some(path) = &self.ca_cert {
            config.ca_pem =
                Some(std::fs::read(path).map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?);
        }
        runtime
            .block_on(AgentClient::start(Arc::new(key), config))
            .map_err(client_error)
    }
}

impl ClientArgs {
    /// The delegated AAT in `path`, the key of the agent of `--agent-dir` (unlocked) that holds
    /// it, and the audience: what `aip-agent --delegation-file` presents.
    pub(crate) fn delegated(&self, path: &std::path::Path) -> Result<aip_api::agent::DelegatedCredentials, CliError> {
        use std::io::Read as _;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(64 * 1024).read_to_string(&mut text))
            .map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?;
        let token = text.trim();
        if !aip_aat::delegation::is_delegable(token) {
            return Err(
                CliError::new(format!("{} does not hold a delegated AAT", path.display()))
                    .hint("write one with `aip-ca delegate --out FILE`"),
            );
        }
        let (key, _) = agent_dir::read_key(&self.agent_dir, &self.passphrase)?;
        aip_api::agent::DelegatedCredentials::new(SecretString::new(token), Arc::new(key), &self.audience)
            .map_err(|e| CliError::new(e.to_string()))
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    client: ClientArgs,
    /// Print the whole response as JSON instead of the AAT alone.
    #[arg(long)]
    json: bool,
    /// The form of AAT: a JWT, or a biscuit the agent can delegate from.
    #[arg(long, value_name = "FORMAT", default_value = "aat+jwt", value_parser = parse_format)]
    token_format: TokenFormat,
}

fn parse_format(value: &str) -> Result<TokenFormat, String> {
    match value {
        "aat+jwt" => Ok(TokenFormat::Jwt),
        "aat+biscuit" => Ok(TokenFormat::Biscuit),
        _ => Err("aat+jwt or aat+biscuit".into()),
    }
}

pub(crate) fn run(args: Args) -> Result<ExitCode, CliError> {
    let runtime = crate::output::runtime()?;
    let client = args.client.start(&runtime, args.token_format)?;
    let issued = client.current();
    if args.json {
        print_json(
            &json!({
                "aat": issued.aat.expose(),
                "token_type": args.token_format.as_str(),
                "expires_in": issued.expires_at - issued.issued_at,
                "capabilities_granted": issued.capabilities_granted,
                "capabilities_denied": issued.capabilities_denied,
            }),
            true,
        )?;
    } else {
        print_line(issued.aat.expose())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One line and a hint for a refused or failed token request.
fn client_error(e: AgentClientError) -> CliError {
    match e {
        e @ AgentClientError::Refused { status: 401, .. } => CliError::new(e)
            .exit_code(EXIT_REJECTED)
            .hint("check the user authorization (--user-api-key, --oidc-id-token-file, --local-user)"),
        e @ AgentClientError::Refused { .. } => CliError::new(e).exit_code(EXIT_REJECTED),
        e @ AgentClientError::Transport { .. } => {
            CliError::new(e).hint("is `aip-ca serve` running there? (--issuer URL or AIP_URL)")
        }
        e => CliError::new(e),
    }
}
