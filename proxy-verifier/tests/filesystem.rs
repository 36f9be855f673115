//! The official MCP filesystem server (`@modelcontextprotocol/server-filesystem`, installed by
//! `npm ci --prefix tests/mcp`) behind the real `aip-proxy` binary: a whole MCP session.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;

use serde_json::{Value, json};
use support::{Proxy, error_code, policy_yaml, run};

/// The server's entry point, or `None` (after failing on CI) when it is not installed.
fn filesystem_server() -> Option<PathBuf> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = workspace.join("tests/mcp/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if script.is_file() && node {
        return Some(script);
    }
    let why = if node {
        format!("{} is missing; run `npm ci --prefix tests/mcp`", script.display())
    } else {
        "node is not installed; install Node.js and run `npm ci --prefix tests/mcp`".to_owned()
    };
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    #[allow(clippy::print_stderr)]
    {
        eprintln!("SKIPPED: {why}");
    }
    None
}

/// The response to request `id`, skipping the server's notifications.
fn response(proxy: &Proxy, id: i64) -> Value {
    loop {
        let message = proxy.recv_json();
        if message.get("method").is_some() {
            assert!(message.get("id").is_none(), "unexpected server request: {message}");
            continue;
        }
        assert_eq!(message["id"], id, "{message}");
        return message;
    }
}

fn call(proxy: &mut Proxy, id: i64, tool: &str, arguments: &Value) -> Value {
    let line = json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    });
    proxy.send(&line.to_string());
    response(proxy, id)
}

fn text_of(result: &Value) -> String {
    result["result"]["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no content: {result}"))
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect()
}

const ALLOWED: [&str; 3] = ["list_directory", "read_file", "read_text_file"];

#[test]
fn filesystem_server_session_through_the_proxy() {
    let Some(server) = filesystem_server() else {
        return;
    };
    let home = tempfile::TempDir::new().unwrap();
    let files = home.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let files = std::fs::canonicalize(&files).unwrap();
    std::fs::write(files.join("hello.txt"), "hello from the filesystem server\n").unwrap();
    std::fs::write(
        files.join("creds.txt"),
        "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n",
    )
    .unwrap();
    let policy = home.path().join("policy.yaml");
    std::fs::write(
        &policy,
        policy_yaml(&format!(
            "  allowed_tools: [{}]\n  dlp:\n    patterns:\n      - name: AWS Key\n        regex: \"AKIA[0-9A-Z]{{16}}\"\n",
            ALLOWED.join(", ")
        )),
    )
    .unwrap();
    let audit = home.path().join("audit.jsonl");
    let target = format!("node {} {}", server.display(), files.display());
    let mut proxy = Proxy::spawn(
        [
            "--policy",
            policy.to_str().unwrap(),
            "--target",
            &target,
            "--audit",
            audit.to_str().unwrap(),
        ],
        &[],
    );

    proxy.send(
        &json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "aip-proxy-tests", "version": "1.0.0"}
            }
        })
        .to_string(),
    );
    let init = response(&proxy, 1);
    assert!(init["result"]["serverInfo"]["name"].is_string(), "{init}");
    assert!(init["result"]["capabilities"]["tools"].is_object(), "{init}");
    proxy.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);

    proxy.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    let list = response(&proxy, 2);
    let mut names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ALLOWED, "tools/list must be filtered to the policy's tools");

    let hello = files.join("hello.txt");
    let read = call(&mut proxy, 3, "read_text_file", &json!({"path": hello}));
    assert!(read.get("error").is_none(), "{read}");
    assert!(text_of(&read).contains("hello from the filesystem server"), "{read}");

    let listing = call(&mut proxy, 4, "list_directory", &json!({"path": files}));
    assert!(text_of(&listing).contains("hello.txt"), "{listing}");

    let written = files.join("written.txt");
    let write = call(
        &mut proxy,
        5,
        "write_file",
        &json!({"path": written, "content": "should never be written"}),
    );
    assert_eq!(error_code(&write), -32001, "{write}");
    assert_eq!(write["error"]["data"]["tool"], "write_file");

    let creds = call(
        &mut proxy,
        6,
        "read_text_file",
        &json!({"path": files.join("creds.txt")}),
    );
    let text = text_of(&creds);
    assert!(text.contains("[REDACTED:AWS Key]"), "{creds}");
    assert!(!text.contains("AKIAIOSFODNN7EXAMPLE"), "{creds}");

    let status = proxy.finish();
    assert!(status.success(), "{status:?}; {}", proxy.stderr());
    assert!(!written.exists(), "write_file reached the server");

    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(!log.contains("AKIAIOSFODNN7EXAMPLE"), "the secret is in the audit log");
    assert!(log.contains("DLP_TRIGGERED"), "{log}");
    assert!(log.contains("\"write_file\""), "{log}");
    let verify = run(["audit", "verify", "--allow-unsigned", audit.to_str().unwrap()], None);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}
