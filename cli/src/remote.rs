//! How client commands reach the authority: `--registry URL` (default `$AIP_URL`, then
//! `http://127.0.0.1:8443`) and `--token T` (default `$AIP_TOKEN`).

use aip_api::client::{Client, ClientError};

use crate::output::{CliError, EXIT_REJECTED};

/// Default authority URL.
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:8443";

/// Connection flags shared by the client commands.
#[derive(clap::Args, Debug)]
pub(crate) struct RemoteArgs {
    /// Base URL of the authority.
    #[arg(long = "registry", value_name = "URL", env = "AIP_URL", default_value = DEFAULT_URL)]
    url: String,
    /// Bearer token (admin, reader or registration token).
    #[arg(long, value_name = "T", env = "AIP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Trust exactly these CA certificates (PEM) for the authority's TLS certificate, instead
    /// of the system's roots.
    #[arg(long, value_name = "FILE", env = "AIP_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
}

impl RemoteArgs {
    pub(crate) fn client(&self) -> Result<Client, CliError> {
        let ca = match &self.ca_cert {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?)
            }
            None => None,
        };
        Client::with_roots(&self.url, self.token.clone(), ca.as_deref()).map_err(CliError::new)
    }

    pub(crate) fn require_token(&self) -> Result<(), CliError> {
        if self.token.is_none() {
            return Err(CliError::new("no token given").hint(
                "pass --token T or set AIP_TOKEN (aip-ca init, or the first aip-ca serve, prints an admin token)",
            ));
        }
        Ok(())
    }
}

/// Turns a client failure into one line and a hint, and the right exit status.
pub(crate) fn api_error(e: ClientError) -> CliError {
    match e {
        ClientError::Api {
            status,
            error,
            description,
        } => {
            let hint = match status {
                401 => Some("check --token / AIP_TOKEN"),
                403 => Some("this needs a token with more rights (an admin token)"),
                404 if error == "token_not_found" => {
                    Some("check the token id (aip-ca access-token list, aip-ca registration-token list)")
                }
                404 => Some("check the agent id (aip-ca agents list)"),
                _ => None,
            };
            let failure = CliError::new(format!("{error}: {description}")).exit_code(EXIT_REJECTED);
            match hint {
                Some(hint) => failure.hint(hint),
                None => failure,
            }
        }
        e @ ClientError::Transport { .. } => {
            CliError::new(e).hint("is `aip-ca serve` running there? (--registry URL or AIP_URL)")
        }
        e => CliError::new(e),
    }
}
