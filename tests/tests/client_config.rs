#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]
//! `aip-proxy --generate-client-config claude|cursor|vscode`: for a policy that requires AATs,
//! each configuration is parsed as the client would read it, and its command and arguments are
//! started by a real MCP client (the official TypeScript SDK over stdio), through `aip-agent`
//! (which reads the user's API key from a file) and `aip-proxy`, against a running authority,
//! until one `tools/call` is answered.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use aip_tests::{Authority, Peer, aip_agent, aip_proxy, isolated, peers_ready, tests_dir};
use serde_json::{Value, json};

const AUDIENCE: &str = "files-proxy";

/// An MCP client of the TypeScript SDK running `command` over stdio (tests/mcp/sdk-client.mjs).
struct SdkClient {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl SdkClient {
    fn start(command: &[String], env: &[(String, String)]) -> Self {
        let mut cmd = isolated(Path::new("node"));
        cmd.arg(tests_dir().join("mcp/sdk-client.mjs"))
            .env("AIP_E2E_COMMAND", serde_json::to_string(command).unwrap())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Self { child, input, output }
    }

    fn ask(&mut self, request: &Value) -> Value {
        writeln!(self.input, "{request}").unwrap();
        self.input.flush().unwrap();
        let mut line = String::new();
        let read = self.output.read_line(&mut line).unwrap();
        assert!(read > 0, "the SDK client exited before answering {request}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

impl Drop for SdkClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `aip-proxy args…`: (exit success, stdout, stderr).
fn proxy(args: &[&str]) -> (bool, String, String) {
    let out = isolated(aip_proxy()).args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The server entry of a configuration in `client`'s format: (command with args, env).
fn server_of(client: &str, config: &Value) -> (Vec<String>, Vec<(String, String)>) {
    let server = match client {
        "vscode" => {
            let server = &config["servers"]["aip-protected-server"];
            assert_eq!(server["type"], "stdio", "{config}");
            server
        }
        _ => &config["mcpServers"]["aip-protected-server"],
    };
    let mut command = vec![
        server["command"]
            .as_str()
            .unwrap_or_else(|| panic!("{config}"))
            .to_owned(),
    ];
    command.extend(
        server["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned()),
    );
    let env = server
        .get("env")
        .and_then(Value::as_object)
        .map(|env| {
            env.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    (command, env)
}

#[test]
fn each_generated_configuration_runs_a_tool_call() {
    if !peers_ready("each_generated_configuration_runs_a_tool_call", &[Peer::Node]) {
        return;
    }
    let authority = Authority::start(None);
    let agent_dir = authority.dir().join("agent");
    let registered = authority.remote(&[
        "register-agent",
        "--name",
        "configured",
        "--capabilities",
        "read_text_file,list_directory",
        "--out-dir",
        agent_dir.to_str().unwrap(),
        "--insecure-no-passphrase",
        "--json",
    ]);
    assert!(registered["agent_id"].is_string(), "{registered}");
    let user = authority.remote(&[
        "users",
        "create",
        "--id",
        "alice",
        "--delegatable",
        "read_text_file,list_directory",
        "--json",
    ]);
    let api_key = user["api_key"].as_str().unwrap().to_owned();
    let key_file = authority.dir().join("alice.key");
    std::fs::write(&key_file, format!("{api_key}\n")).unwrap();

    let files = authority.dir().join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("notes.txt"), "hello from the notes\n").unwrap();
    let policy = authority.dir().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: {AUDIENCE}\nspec:\n  mode: enforce\n  \
             allowed_tools: [read_text_file, list_directory, list_allowed_directories]\n  registry:\n    enabled: true\n    \
             endpoint: \"{url}\"\n    revocation:\n      mode: online\n    auth:\n      type: bearer\n      \
             token: \"{reader}\"\n  aat:\n    enabled: true\n    require: true\n",
            url = authority.url,
            reader = authority.reader,
        ),
    )
    .unwrap();
    let filesystem = tests_dir().join("mcp/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    let target = format!("node {} {}", filesystem.display(), files.display());
    let generate = |flags: &[&str]| {
        let mut args = flags.to_vec();
        args.extend([
            "--policy",
            policy.to_str().unwrap(),
            "--target",
            &target,
            "--agent-dir",
            agent_dir.to_str().unwrap(),
            "--issuer",
            &authority.url,
            "--user-api-key-file",
            key_file.to_str().unwrap(),
        ]);
        proxy(&args)
    };

    for client in ["claude", "cursor", "vscode"] {
        let (ok, stdout, stderr) = generate(&["--generate-client-config", client]);
        assert!(ok, "{client}: {stderr}");
        assert!(!stdout.contains(&api_key), "{client}: the key is in the configuration");
        let config: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{client}: {e}: {stdout}"));
        let (command, env) = server_of(client, &config);
        assert!(command[0].ends_with("aip-agent"), "{client}: {command:?}");
        assert!(Path::new(&command[0]).is_absolute(), "{command:?}");
        let mut client_process = SdkClient::start(&command, &env);
        let answer = client_process.ask(&json!({
            "op": "call",
            "tool": "read_text_file",
            "arguments": {"path": files.join("notes.txt")},
        }));
        assert_eq!(
            answer["result"]["content"][0]["text"], "hello from the notes\n",
            "{client}: {answer}"
        );
        let closed = client_process.ask(&json!({"op": "close"}));
        assert_eq!(closed["closed"], true, "{client}: {closed}");
    }

    // --generate-cursor-config is the same as --generate-client-config cursor.
    let (ok, alias, stderr) = generate(&["--generate-cursor-config"]);
    assert!(ok, "{stderr}");
    assert_eq!(alias, generate(&["--generate-client-config", "cursor"]).1);

    // A flag the agent side needs is missing: a clear refusal, nothing printed.
    let (ok, stdout, stderr) = proxy(&[
        "--generate-client-config",
        "claude",
        "--policy",
        policy.to_str().unwrap(),
        "--target",
        &target,
        "--agent-dir",
        agent_dir.to_str().unwrap(),
    ]);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("spec.aat.require") && stderr.contains("--issuer"),
        "{stderr}"
    );

    // aip-agent refuses an empty key file, naming the file and nothing of its content.
    let empty = authority.dir().join("empty.key");
    std::fs::write(&empty, "\n").unwrap();
    let out = isolated(aip_agent())
        .args(["--agent-dir", agent_dir.to_str().unwrap(), "--issuer", &authority.url])
        .args([
            "--audience",
            AUDIENCE,
            "--user-api-key-file",
            empty.to_str().unwrap(),
            "--",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{} is empty", empty.display())), "{stderr}");
}
