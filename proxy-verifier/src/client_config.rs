//! MCP client configurations that run `aip-proxy` over a policy (`aip-proxy
//! --generate-client-config claude|cursor|vscode`): complete and runnable, with absolute
//! paths. When the policy requires AATs (`spec.aat.require`), the client runs `aip-agent` in
//! front of the proxy, which fetches and presents the AATs (docs/proxy.md, "MCP clients").

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::policy::Policy;

/// The name of the server in the generated configuration.
pub const SERVER_NAME: &str = "aip-protected-server";

/// Which client's file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// Claude Desktop (`claude_desktop_config.json`) and Claude Code (`.mcp.json`):
    /// `{"mcpServers": {name: {"command", "args"}}}`.
    Claude,
    /// Cursor (`~/.cursor/mcp.json`): the same shape as Claude's.
    Cursor,
    /// VS Code (`.vscode/mcp.json`): `{"servers": {name: {"type": "stdio", "command", "args"}}}`.
    Vscode,
}

/// The agent side, needed when the policy requires AATs.
#[derive(Clone, Debug, Default)]
pub struct AgentSide {
    /// The `aip-agent` executable.
    pub aip_agent: Option<PathBuf>,
    /// The agent directory `aip-ca register-agent --out-dir` wrote.
    pub agent_dir: Option<PathBuf>,
    /// The token issuer's base URL.
    pub issuer: Option<String>,
    /// A file holding the user's API key (none for an autonomous agent).
    pub user_api_key_file: Option<PathBuf>,
}

/// What the proxy runs with.
#[derive(Clone, Debug)]
pub struct ProxySide {
    /// The `aip-proxy` executable.
    pub aip_proxy: PathBuf,
    /// The policy file.
    pub policy: PathBuf,
    /// The key that must have signed the policy, when it is signed.
    pub policy_key: Option<PathBuf>,
    /// The MCP server command.
    pub target: String,
}

/// A configuration cannot be generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientConfigError {
    /// The policy requires AATs and a flag the agent side needs is missing.
    #[error("the policy requires AATs (spec.aat.require), so the client runs aip-agent: {0}")]
    Missing(&'static str),
    /// A path given does not name what it should.
    #[error("{path}: {why}")]
    Path {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The issuer is not an http(s) URL.
    #[error("--issuer {0:?} is not an http:// or https:// URL")]
    Issuer(String),
}

fn absolute(path: &Path) -> Result<PathBuf, ClientConfigError> {
    std::path::absolute(path).map_err(|_| ClientConfigError::Path {
        path: path.to_owned(),
        why: "cannot be made absolute",
    })
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The command and arguments that run the proxy over `policy`, behind `aip-agent` when the
/// policy requires AATs.
pub fn launch(
    policy: &Policy,
    proxy: &ProxySide,
    agent: &AgentSide,
) -> Result<(String, Vec<String>), ClientConfigError> {
    let mut proxy_args = vec![
        "--target".to_owned(),
        proxy.target.clone(),
        "--policy".to_owned(),
        text(&absolute(&proxy.policy)?),
    ];
    if let Some(key) = &proxy.policy_key {
        proxy_args.extend(["--policy-key".to_owned(), text(&absolute(key)?)]);
    }
    let Some(aat) = policy.aat().filter(|aat| aat.require) else {
        return Ok((text(&proxy.aip_proxy), proxy_args));
    };
    let agent_dir = agent.agent_dir.as_deref().ok_or(ClientConfigError::Missing(
        "--agent-dir DIR (what aip-ca register-agent --out-dir wrote) is missing",
    ))?;
    let issuer = agent.issuer.as_deref().ok_or(ClientConfigError::Missing(
        "--issuer URL (the authority's token issuer) is missing",
    ))?;
    let aip_agent = agent.aip_agent.as_deref().ok_or(ClientConfigError::Missing(
        "aip-agent is not installed beside aip-proxy",
    ))?;
    if !(issuer.starts_with("https://") || issuer.starts_with("http://")) || url::Url::parse(issuer).is_err() {
        return Err(ClientConfigError::Issuer(issuer.to_owned()));
    }
    let agent_dir = absolute(agent_dir)?;
    if !agent_dir.join("agent.json").is_file() {
        return Err(ClientConfigError::Path {
            path: agent_dir,
            why: "not an agent directory (no agent.json; see aip-ca register-agent --out-dir)",
        });
    }
    let mut args = vec![
        "--agent-dir".to_owned(),
        text(&agent_dir),
        "--issuer".to_owned(),
        issuer.to_owned(),
        "--audience".to_owned(),
        aat.audience.clone(),
    ];
    if let Some(file) = &agent.user_api_key_file {
        let file = absolute(file)?;
        if !file.is_file() {
            return Err(ClientConfigError::Path {
                path: file,
                why: "the user's API key file does not exist",
            });
        }
        args.extend(["--user-api-key-file".to_owned(), text(&file)]);
    }
    args.push("--".to_owned());
    args.push(text(&proxy.aip_proxy));
    args.extend(proxy_args);
    Ok((text(aip_agent), args))
}

/// The configuration file's content for `kind`, running `command` with `args`.
pub fn render(kind: ClientKind, command: &str, args: &[String]) -> Value {
    match kind {
        ClientKind::Claude | ClientKind::Cursor => json!({
            "mcpServers": { SERVER_NAME: { "command": command, "args": args, "env": {} } }
        }),
        ClientKind::Vscode => json!({
            "servers": { SERVER_NAME: { "type": "stdio", "command": command, "args": args } }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SignaturePolicy;

    const REQUIRES_AATS: &str = "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: files\n\
        spec:\n  allowed_tools: [read_file]\n  registry:\n    enabled: true\n    endpoint: \"https://aip.example.org\"\n\
        \n  aat:\n    enabled: true\n    require: true\n    audience: files-proxy\n";

    fn proxy() -> ProxySide {
        ProxySide {
            aip_proxy: "/opt/aip/aip-proxy".into(),
            policy: "/etc/aip/files.yaml".into(),
            policy_key: None,
            target: "npx server".into(),
        }
    }

    #[test]
    fn without_aats_the_proxy_is_the_command() {
        let policy = Policy::parse(
            "apiVersion: aip.io/v1alpha1\nkind: AgentPolicy\nmetadata:\n  name: p\nspec:\n  allowed_tools: [a]\n",
            None,
            SignaturePolicy::NoKey,
        )
        .unwrap();
        let (command, args) = launch(&policy, &proxy(), &AgentSide::default()).unwrap();
        assert_eq!(command, "/opt/aip/aip-proxy");
        assert_eq!(args, ["--target", "npx server", "--policy", "/etc/aip/files.yaml"]);
        let vscode = render(ClientKind::Vscode, &command, &args);
        assert_eq!(vscode["servers"][SERVER_NAME]["type"], "stdio");
        let claude = render(ClientKind::Claude, &command, &args);
        assert_eq!(claude["mcpServers"][SERVER_NAME]["command"], "/opt/aip/aip-proxy");
    }

    #[test]
    fn with_aats_each_missing_flag_is_named() {
        let policy = match Policy::parse(REQUIRES_AATS, None, SignaturePolicy::NoKey) {
            Ok(policy) => policy,
            Err(e) => panic!("{e}"),
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.json"), "{}").unwrap();
        let mut agent = AgentSide {
            aip_agent: Some("/opt/aip/aip-agent".into()),
            ..AgentSide::default()
        };
        let err = launch(&policy, &proxy(), &agent).unwrap_err().to_string();
        assert!(err.contains("--agent-dir"), "{err}");
        agent.agent_dir = Some(dir.path().to_owned());
        let err = launch(&policy, &proxy(), &agent).unwrap_err().to_string();
        assert!(err.contains("--issuer"), "{err}");
        agent.issuer = Some("ftp://x".into());
        assert!(matches!(
            launch(&policy, &proxy(), &agent),
            Err(ClientConfigError::Issuer(_))
        ));
        agent.issuer = Some("http://127.0.0.1:8443".into());
        agent.user_api_key_file = Some(dir.path().join("missing"));
        assert!(matches!(
            launch(&policy, &proxy(), &agent),
            Err(ClientConfigError::Path { .. })
        ));
        std::fs::write(dir.path().join("key"), "aip_uk_x").unwrap();
        agent.user_api_key_file = Some(dir.path().join("key"));
        let (command, args) = launch(&policy, &proxy(), &agent).unwrap();
        assert_eq!(command, "/opt/aip/aip-agent");
        let at = args.iter().position(|a| a == "--audience").unwrap();
        assert_eq!(args[at + 1], "files-proxy");
        let sep = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(args[sep + 1], "/opt/aip/aip-proxy");
    }
}
