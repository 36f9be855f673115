//! Delegable AATs (`aat+biscuit`) from a running authority (`aip-ca serve` on SQLite): asked for
//! with `aip-ca token --token-format aat+biscuit` (`POST /v1/token`) and with `token_format` on
//! `POST /oauth/token`, verified against the authority's JWKS — whose issuer keys, and only
//! those, are marked as roots — and delegated one step offline with the agent's own key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::process::Command;

use aip_aat::client_assertion::{CLIENT_ASSERTION_TYPE, create_client_assertion};
use aip_aat::clock::{Clock as _, SystemClock};
use aip_aat::delegation::{self, DelegationError, Grant, issuer_roots};
use aip_aat::keys::{ISSUER_ROLE, Jwks, KeyPair, REGISTRY_ROLE};
use aip_tests::{Authority, http_get, ok, run};
use serde_json::Value;

const AUDIENCE: &str = "https://files.example/mcp";

fn now() -> i64 {
    SystemClock.now()
}

/// `POST url` with a form body, with curl: (status, body as JSON).
fn post_form(url: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "-w", "\n%{http_code}", "-X", "POST"]);
    for (name, value) in params {
        cmd.args(["--data-urlencode", &format!("{name}={value}")]);
    }
    let out = cmd.arg(url).output().expect("curl");
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), serde_json::from_str(body).unwrap())
}

#[test]
fn the_authority_mints_delegable_aats_rooted_in_its_issuer_keys() {
    let authority = Authority::start(None);
    let planner = authority.register("planner", "ed25519", "read_file,write_file");
    let helper = authority.register("helper", "p256", "read_file");

    // The JWKS says which key is which: the registry's, and the issuer's roots.
    let (status, body) = http_get(&format!("{}/v1/jwks", authority.url), None);
    assert_eq!(status, 200, "{body}");
    let jwks: Jwks = serde_json::from_str(&body).unwrap();
    let roles: Vec<Option<&str>> = jwks.keys.iter().map(|k| k.role.as_deref()).collect();
    assert_eq!(roles.first(), Some(&Some(REGISTRY_ROLE)), "{body}");
    assert!(
        roles[1..].iter().all(|r| *r == Some(ISSUER_ROLE)) && roles.len() > 1,
        "{body}"
    );
    let roots = issuer_roots(&jwks);

    // POST /v1/token, through the CLI.
    let answer: Value = serde_json::from_str(&ok(run(&[
        "token",
        "--json",
        "--issuer",
        &authority.url,
        "--audience",
        AUDIENCE,
        "--agent-dir",
        planner.dir.to_str().unwrap(),
        "--token-format",
        "aat+biscuit",
    ])))
    .unwrap();
    assert_eq!(answer["token_type"], "aat+biscuit", "{answer}");
    let token = answer["aat"].as_str().unwrap();
    assert!(delegation::is_delegable(token), "{token}");
    let chain = delegation::verify(token, &roots, now(), delegation::DEFAULT_MAX_DEPTH).unwrap();
    let held = chain.effective_claims();
    assert_eq!(held.sub.as_str(), planner.id);
    assert_eq!(held.confirmation_thumbprint().as_str(), planner.key_id);
    assert_eq!(held.aud.as_slice(), [AUDIENCE]);
    assert_eq!(held.capabilities.tools, ["read_file", "write_file"]);
    assert_eq!(held.iss, authority.url);
    assert!(chain.steps().is_empty());

    // A key the JWKS does not mark as an issuer key roots nothing.
    let mut unmarked = jwks.clone();
    for key in &mut unmarked.keys {
        key.role = Some(REGISTRY_ROLE.to_owned());
    }
    assert_eq!(
        delegation::verify(token, &issuer_roots(&unmarked), now(), 3).unwrap_err(),
        DelegationError::UnknownRoot
    );

    // The planner hands read_file to the helper, offline, with its own key.
    let planner_key = KeyPair::from_pkcs8_pem(&std::fs::read_to_string(&planner.pem).unwrap()).unwrap();
    let grant = Grant {
        delegatee: helper.id.parse().unwrap(),
        delegatee_key: helper.key_id.parse().unwrap(),
        tools: vec!["read_file".into()],
        audience: vec![AUDIENCE.into()],
        expires_at: held.exp - 60,
    };
    let delegated = delegation::delegate(token, &roots, &planner_key, &grant, now(), 3).unwrap();
    let chain = delegation::verify(&delegated, &roots, now(), 3).unwrap();
    assert_eq!(chain.effective_claims().sub.as_str(), helper.id);
    assert_eq!(
        chain.effective_claims().confirmation_thumbprint().as_str(),
        helper.key_id
    );
    assert_eq!(chain.effective_claims().capabilities.tools, ["read_file"]);
    assert_eq!(chain.steps()[0].delegator.as_str(), planner.id);

    // The same step through `aip-ca delegate`: the sub-agent named by its agent.json, then by
    // its id looked up at the registry.
    let held_file = authority.dir().join("planner.aat");
    std::fs::write(&held_file, token).unwrap();
    let delegate = |to: &str, tools: &str, out: &str| {
        let out = authority.dir().join(out);
        let output = run(&[
            "delegate",
            "--agent-dir",
            planner.dir.to_str().unwrap(),
            "--from",
            held_file.to_str().unwrap(),
            "--to",
            to,
            "--tools",
            tools,
            "--ttl",
            "300",
            "--out",
            out.to_str().unwrap(),
            "--registry",
            &authority.url,
            "--token",
            &authority.admin,
        ]);
        (output, out)
    };
    let agent_json = helper.dir.join("agent.json");
    for (to, out) in [
        (agent_json.to_str().unwrap(), "by-file.aat"),
        (helper.id.as_str(), "by-id.aat"),
    ] {
        let (output, out) = delegate(to, "read_file", out);
        let summary: Value = serde_json::from_str(&ok(output)).unwrap();
        assert_eq!(summary["delegatee"], helper.id.as_str(), "{summary}");
        assert_eq!(summary["depth"], 2, "{summary}");
        let written = std::fs::read_to_string(&out).unwrap();
        let chain = delegation::verify(written.trim(), &roots, now(), 3).unwrap();
        assert_eq!(chain.effective_claims().sub.as_str(), helper.id);
        assert!(chain.effective_claims().exp <= now() + 300);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // `aip-ca verify` reads the chain against the authority's keys.
    let delegated = std::fs::read_to_string(authority.dir().join("by-id.aat")).unwrap();
    let verify = |audience: &str| {
        run(&[
            "verify",
            "--aat",
            delegated.trim(),
            "--issuer-url",
            &authority.url,
            "--audience",
            audience,
            "--json",
        ])
    };
    let verified: Value = serde_json::from_str(&ok(verify(AUDIENCE))).unwrap();
    assert_eq!(verified["token_format"], "aat+biscuit", "{verified}");
    assert_eq!(verified["claims"]["sub"], helper.id.as_str(), "{verified}");
    assert_eq!(verified["issued"]["sub"], planner.id.as_str(), "{verified}");
    assert_eq!(verified["steps"][0]["delegator"], planner.id.as_str(), "{verified}");
    assert_eq!(verified["revocation_ids"].as_array().unwrap().len(), 2, "{verified}");
    let elsewhere = verify("https://elsewhere.example/mcp");
    assert_eq!(elsewhere.status.code(), Some(1), "{elsewhere:?}");
    let refusal: Value = serde_json::from_slice(&elsewhere.stdout).unwrap();
    assert_eq!(refusal["aat_error"], "audience_mismatch", "{refusal}");

    // Widening is refused, not clamped, and writes nothing.
    let (output, out) = delegate(&helper.id, "read_file,delete_file", "widened.aat");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("delegation_widened"),
        "{output:?}"
    );
    assert!(!out.exists());
    // An existing file is not overwritten.
    let (output, _) = delegate(&helper.id, "read_file", "by-id.aat");
    assert!(!output.status.success(), "{output:?}");

    // POST /oauth/token with `token_format`.
    let endpoint = format!("{}/oauth/token", authority.url);
    let assertion = create_client_assertion(&planner_key, &planner.id, &authority.url, now(), 60).unwrap();
    let request = |format: &str| {
        post_form(
            &endpoint,
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", &assertion),
                ("resource", AUDIENCE),
                ("token_format", format),
            ],
        )
    };
    let (status, refused) = request("aat+cbor");
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"], "invalid_request", "{refused}");
    // A refused request uses nothing up: the same assertion works once.
    let (status, answer) = request("aat+biscuit");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["token_format"], "aat+biscuit", "{answer}");
    let token = answer["access_token"].as_str().unwrap();
    let chain = delegation::verify(token, &roots, now(), 3).unwrap();
    assert_eq!(chain.effective_claims().sub.as_str(), planner.id);
    assert_eq!(chain.effective_claims().aud.as_slice(), [AUDIENCE]);
}

/// How soon a revocation must refuse the next call at a proxy following the event stream.
const REVOKED_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Calls (through `call`, ids from `id`) with `token` by `key` until one is refused, which must
/// be within [`REVOKED_WITHIN`]: the refusal.
fn refused_soon(call: &mut impl FnMut(String) -> Value, id: &mut u64, token: &str, key: &KeyPair) -> Value {
    refused_within(call, id, |id| read_file_call(id, token, key, "files-proxy"))
}

/// Sends `make(id)` through `call`, ids from `id`, until one is refused, which must be within
/// [`REVOKED_WITHIN`]: the refusal.
fn refused_within(call: &mut impl FnMut(String) -> Value, id: &mut u64, make: impl Fn(u64) -> String) -> Value {
    let since = std::time::Instant::now();
    loop {
        *id += 1;
        let answer = call(make(*id));
        if answer.get("result").is_none() {
            assert!(
                since.elapsed() < REVOKED_WITHIN,
                "refused only after {:?}",
                since.elapsed()
            );
            eprintln!("refused {:?} after the revocation returned", since.elapsed());
            return answer;
        }
        assert!(
            since.elapsed() < REVOKED_WITHIN,
            "still accepted after {:?}: {answer}",
            since.elapsed()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A `tools/call` of `read_file` carrying `token` and a per-call proof by `key`.
fn read_file_call(id: u64, token: &str, key: &KeyPair, audience: &str) -> String {
    tool_call(
        id,
        "read_file",
        serde_json::json!({"path": "notes.txt"}),
        token,
        key,
        audience,
    )
}

/// A `tools/call` of `tool` with `args`, carrying `token` and a per-call proof by `key` for
/// `audience`.
fn tool_call(id: u64, tool: &str, args: Value, token: &str, key: &KeyPair, audience: &str) -> String {
    let call = aip_aat::proof::Call::tools_call(tool, Some(&args));
    let proof = aip_aat::proof::create_proof(key, token, &call, audience, now()).unwrap();
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": args, "_aip_aat": token, "_aip_proof": proof},
    })
    .to_string()
}

/// The audit record in `log` of the `tools/call` with JSON-RPC id 1.
fn first_call_record(log: &str) -> Value {
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["request_id"] == 1 && r["method"] == "tools/call")
        .unwrap_or_else(|| panic!("no record of call 1 in\n{log}"))
}

#[test]
fn a_sub_sub_agent_calls_through_the_proxy_until_a_link_of_its_chain_is_revoked() {
    const PROXY: &str = "files-proxy";
    let authority = Authority::start(None);
    let a = authority.register("planner", "ed25519", "read_file");
    let b = authority.register("helper", "p256", "read_file");
    let c = authority.register("worker", "ed25519", "read_file");
    let key =
        |agent: &aip_tests::Agent| KeyPair::from_pkcs8_pem(&std::fs::read_to_string(&agent.pem).unwrap()).unwrap();
    let (a_key, b_key, c_key) = (key(&a), key(&b), key(&c));
    let (_, body) = http_get(&format!("{}/v1/jwks", authority.url), None);
    let roots = issuer_roots(&serde_json::from_str(&body).unwrap());

    let token_of = |agent: &aip_tests::Agent, format: &str| -> String {
        let answer: Value = serde_json::from_str(&ok(run(&[
            "token",
            "--json",
            "--issuer",
            &authority.url,
            "--audience",
            PROXY,
            "--agent-dir",
            agent.dir.to_str().unwrap(),
            "--token-format",
            format,
        ])))
        .unwrap();
        answer["aat"].as_str().unwrap().to_owned()
    };
    let held_by_a = token_of(&a, "aat+biscuit");
    let a_jwt = token_of(&a, "aat+jwt");
    // One end for every step: a later one may not outlive its parent.
    let until = now() + 600;
    let step = |token: &str, by: &KeyPair, to: &aip_tests::Agent| {
        let grant = Grant {
            delegatee: to.id.parse().unwrap(),
            delegatee_key: to.key_id.parse().unwrap(),
            tools: vec!["read_file".into()],
            audience: vec![PROXY.into()],
            expires_at: until,
        };
        delegation::delegate(token, &roots, by, &grant, now(), 4).unwrap()
    };
    let held_by_b = step(&held_by_a, &a_key, &b);
    let held_by_c = step(&held_by_b, &b_key, &c);

    let policy = authority.dir().join("policy.yaml");
    let policy_text = {
        let max_depth = 3;
        format!(
            "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: {PROXY}\nspec:\n  allowed_tools: \
             [read_file]\n  registry:\n    enabled: true\n    endpoint: \"{}\"\n    auth:\n      type: bearer\n      \
             token: \"{}\"\n    revocation:\n      mode: cached\n      check_interval: 1s\n  aat:\n    enabled: true\n    \
             require: true\n    delegation:\n      max_depth: {max_depth}\n",
            authority.url, authority.reader,
        )
    };
    std::fs::write(&policy, policy_text).unwrap();
    let audit = authority.dir().join("audit.jsonl");
    let server_log = authority.dir().join("server.log");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/mcp_echo.py");
    let aip_tests::Piped {
        mut child,
        mut stdin,
        lines,
    } = stdio_proxy(
        &policy,
        &audit,
        format!("python3 {} {}", script.display(), server_log.display()),
    );
    let mut call = |line: String| -> Value {
        use std::io::Write as _;
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        serde_json::from_str(&lines.recv_timeout(std::time::Duration::from_secs(30)).unwrap()).unwrap()
    };
    let forwarded = |answer: &Value| answer.get("result").is_some();

    // C calls with the chain A → B → C, its own key making the proof.
    let answer = call(read_file_call(1, &held_by_c, &c_key, PROXY));
    assert!(forwarded(&answer), "{answer}");
    // A proof by another key on the chain is refused.
    let answer = call(read_file_call(2, &held_by_c, &b_key, PROXY));
    assert_eq!(answer["error"]["code"], -32016, "{answer}");
    // B and A use what they hold.
    assert!(forwarded(&call(read_file_call(3, &held_by_b, &b_key, PROXY))));
    assert!(forwarded(&call(read_file_call(4, &a_jwt, &a_key, PROXY))));
    // A fourth principal is one more than this proxy's `delegation.max_depth: 3` allows.
    let deeper = step(&held_by_c, &c_key, &a);
    let answer = call(read_file_call(5, &deeper, &a_key, PROXY));
    assert_eq!(answer["error"]["data"]["aat_error"], "delegation_too_deep", "{answer}");

    // C's MCP client, unmodified, through `aip-agent --delegation-file`: the chain and C's
    // proofs are added to its call.
    let c_file = authority.dir().join("worker.aat");
    std::fs::write(&c_file, &held_by_c).unwrap();
    let agent_log = authority.dir().join("agent-server.log");
    let aip_tests::Piped {
        child: mut agent_child,
        stdin: mut agent_in,
        lines: agent_lines,
    } = aip_tests::piped(
        aip_tests::isolated(aip_tests::aip_agent())
            .args(["--agent-dir", c.dir.to_str().unwrap(), "--audience", PROXY])
            .args(["--delegation-file", c_file.to_str().unwrap(), "--"])
            .arg(aip_tests::aip_proxy())
            .args(["--policy", policy.to_str().unwrap(), "--target"])
            .arg(format!("python3 {} {}", script.display(), agent_log.display())),
    );
    {
        use std::io::Write as _;
        let plain = serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "read_file", "arguments": {"path": "notes.txt"}}});
        writeln!(agent_in, "{plain}").unwrap();
        agent_in.flush().unwrap();
        let answer: Value =
            serde_json::from_str(&agent_lines.recv_timeout(std::time::Duration::from_secs(30)).unwrap()).unwrap();
        assert!(forwarded(&answer), "{answer}");
        let seen = std::fs::read_to_string(&agent_log).unwrap();
        assert!(seen.contains("notes.txt") && !seen.contains("_aip_aat"), "{seen}");
    }
    drop(agent_in);
    let _ = agent_child.wait();

    let mut id = 10;
    // A chain that delegates to a suspended agent is refused while it is suspended.
    authority.remote(&["agents", "suspend", &c.id, "--reason", "on hold", "--json"]);
    let refused = refused_soon(&mut call, &mut id, &held_by_c, &c_key);
    assert_eq!(refused["error"]["data"]["aat_error"], "agent_inactive", "{refused}");
    authority.remote(&["agents", "reactivate", &c.id, "--json"]);
    let back = std::time::Instant::now();
    let mut again = 100;
    while !forwarded(&call(read_file_call(again, &held_by_c, &c_key, PROXY))) {
        assert!(back.elapsed() < std::time::Duration::from_secs(5), "not accepted again");
        again += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Revoking B: C's next call fails within a second (the stream pushes the new list); A's
    // own calls go on.
    authority.remote(&["agents", "revoke", &b.id, "--reason", "compromised", "--json"]);
    let refused = refused_soon(&mut call, &mut id, &held_by_c, &c_key);
    assert_eq!(refused["error"]["data"]["aat_error"], "aat_revoked", "{refused}");
    assert!(forwarded(&call(read_file_call(30, &a_jwt, &a_key, PROXY))));
    let _ = child.kill();
    let _ = child.wait();

    // The audit names the whole chain of C's first call.
    let log = std::fs::read_to_string(&audit).unwrap();
    let first = first_call_record(&log);
    assert_eq!(first["agent_id"], c.id.as_str(), "{first}");
    assert_eq!(
        first["delegation_chain"],
        serde_json::json!([a.id, b.id, c.id]),
        "{first}"
    );
    assert_eq!(
        first["delegation_revocation_ids"].as_array().unwrap().len(),
        3,
        "{first}"
    );
    assert!(!log.contains(&held_by_c), "a token was written to the audit log");
}

/// A stdio `aip-proxy` with `policy`, writing its audit log to `audit`, in front of the server
/// command `target`.
fn stdio_proxy(policy: &std::path::Path, audit: &std::path::Path, target: String) -> aip_tests::Piped {
    aip_tests::piped(
        aip_tests::isolated(aip_tests::aip_proxy())
            .arg("--policy")
            .arg(policy)
            .arg("--audit")
            .arg(audit)
            .arg("--target")
            .arg(target),
    )
}

/// A `tools/call` of the filesystem server's `read_text_file` for `path`, carrying `token` and
/// a per-call proof by `key`.
fn read_text_call(id: u64, path: &std::path::Path, token: &str, key: &KeyPair) -> String {
    tool_call(
        id,
        "read_text_file",
        serde_json::json!({"path": path}),
        token,
        key,
        "files-proxy",
    )
}

/// A stdio `aip-proxy` with `policy` in front of the official filesystem server serving
/// `files`, its session initialized; and a function that sends one line and returns the answer.
fn filesystem_proxy(
    policy: &std::path::Path,
    audit: &std::path::Path,
    files: &std::path::Path,
) -> (std::process::Child, impl FnMut(String) -> Value + use<>) {
    let server = aip_tests::tests_dir().join("mcp/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    let aip_tests::Piped {
        child,
        mut stdin,
        lines,
    } = stdio_proxy(policy, audit, format!("node {} {}", server.display(), files.display()));
    let mut send = move |line: String, answered: bool| -> Option<Value> {
        use std::io::Write as _;
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        answered
            .then(|| serde_json::from_str(&lines.recv_timeout(std::time::Duration::from_secs(30)).unwrap()).unwrap())
    };
    let initialize = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "delegation-test", "version": "1"}}});
    let answer = send(initialize.to_string(), true).unwrap();
    assert!(answer["result"]["serverInfo"].is_object(), "{answer}");
    send(
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned(),
        false,
    );
    (child, move |line| send(line, true).unwrap())
}

/// The text of a `tools/call` result.
fn text_of(answer: &Value) -> &str {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {answer}"))
}

/// The whole chain of spec D.7 with a user: alice delegates to agent A (a delegable AAT from
/// the authority), A to sub-agent B, B to sub-sub-agent C, each step offline with the
/// delegator's own key. C reads a file through a stdio `aip-proxy` in front of the official
/// filesystem server, whose policy sets `delegation.max_depth: 4` (in `cached` mode, and a
/// second one in `online` mode); a proxy with the default depth (3) refuses C. The audit
/// record names the three agents and the user. Then each kind of link is revoked in turn, each
/// refusing C's next call within a second, with a new chain after each: B's delegation by its revocation id (`aip-ca delegations revoke`; A's own calls go on),
/// agent B (A's own calls go on), and the user (A's own calls stop too).
#[test]
fn a_users_chain_to_a_sub_sub_agent_works_until_any_link_is_revoked() {
    if !aip_tests::peers_ready(
        "a_users_chain_to_a_sub_sub_agent_works_until_any_link_is_revoked",
        &[aip_tests::Peer::Node],
    ) {
        return;
    }
    const PROXY: &str = "files-proxy";
    const TOOL: &str = "read_text_file";
    const USER: &str = "alice@example.com";
    let authority = Authority::start(None);
    let a = authority.register("planner", "ed25519", TOOL);
    let b = authority.register("helper", "p256", TOOL);
    let c = authority.register("worker", "ed25519", TOOL);
    let key =
        |agent: &aip_tests::Agent| KeyPair::from_pkcs8_pem(&std::fs::read_to_string(&agent.pem).unwrap()).unwrap();
    let (a_key, b_key, c_key) = (key(&a), key(&b), key(&c));
    let user = authority.remote(&["users", "create", "--id", USER, "--delegatable", TOOL, "--json"]);
    let api_key = user["api_key"].as_str().unwrap().to_owned();
    let (_, body) = http_get(&format!("{}/v1/jwks", authority.url), None);
    let roots = issuer_roots(&serde_json::from_str(&body).unwrap());
    let token_of = |format: &str| -> String {
        let answer: Value = serde_json::from_str(&ok(run(&[
            "token",
            "--json",
            "--issuer",
            &authority.url,
            "--audience",
            PROXY,
            "--agent-dir",
            a.dir.to_str().unwrap(),
            "--user-api-key",
            &api_key,
            "--token-format",
            format,
        ])))
        .unwrap();
        answer["aat"].as_str().unwrap().to_owned()
    };
    let held_by_a = token_of("aat+biscuit");
    let a_jwt = token_of("aat+jwt");
    let until = now() + 600;
    let step = |token: &str, by: &KeyPair, to: &aip_tests::Agent| {
        let grant = Grant {
            delegatee: to.id.parse().unwrap(),
            delegatee_key: to.key_id.parse().unwrap(),
            tools: vec![TOOL.into()],
            audience: vec![PROXY.into()],
            expires_at: until,
        };
        delegation::delegate(token, &roots, by, &grant, now(), 4).unwrap()
    };

    let files = authority.dir().join("files");
    std::fs::create_dir(&files).unwrap();
    let notes = files.join("notes.txt");
    std::fs::write(&notes, "read by a sub-sub-agent\n").unwrap();
    let policy = |max_depth: Option<u8>, mode: &str| {
        let path = authority.dir().join(format!("policy-{max_depth:?}-{mode}.yaml"));
        let delegation = max_depth
            .map(|d| format!("    delegation:\n      max_depth: {d}\n"))
            .unwrap_or_default();
        std::fs::write(
            &path,
            format!(
                "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: {PROXY}\nspec:\n  \
                 allowed_tools: [{TOOL}]\n  registry:\n    enabled: true\n    endpoint: \"{}\"\n    auth:\n      \
                 type: bearer\n      token: \"{}\"\n    revocation:\n      mode: {mode}\n      check_interval: 1s\n  \
                 aat:\n    enabled: true\n    require: true\n{delegation}",
                authority.url, authority.reader,
            ),
        )
        .unwrap();
        path
    };
    let audit = authority.dir().join("audit.jsonl");
    let (mut proxy, mut call) = filesystem_proxy(&policy(Some(4), "cached"), &audit, &files);
    // A proxy that asks the registry on every call.
    let (mut online, mut online_call) = filesystem_proxy(
        &policy(Some(4), "online"),
        &authority.dir().join("online.jsonl"),
        &files,
    );
    let forwarded = |answer: &Value| answer.get("result").is_some() && answer["result"]["isError"] != true;

    // user → A → B → C: C reads the file, its own key making the proof.
    let held_by_b = step(&held_by_a, &a_key, &b);
    let held_by_c = step(&held_by_b, &b_key, &c);
    let answer = call(read_text_call(1, &notes, &held_by_c, &c_key));
    assert_eq!(text_of(&answer), "read by a sub-sub-agent\n", "{answer}");
    assert!(forwarded(&online_call(read_text_call(1, &notes, &held_by_c, &c_key))));
    // Four principals are one more than the default depth allows.
    let (mut strict, mut strict_call) =
        filesystem_proxy(&policy(None, "cached"), &authority.dir().join("strict.jsonl"), &files);
    let answer = strict_call(read_text_call(1, &notes, &held_by_c, &c_key));
    assert_eq!(answer["error"]["data"]["aat_error"], "delegation_too_deep", "{answer}");
    assert!(forwarded(&strict_call(read_text_call(2, &notes, &held_by_b, &b_key))));
    let _ = strict.kill();
    let _ = strict.wait();

    // B's delegation, by its revocation id: C and B are refused, A goes on.
    let chain = delegation::verify(&held_by_c, &roots, now(), 4).unwrap();
    let ids: Vec<String> = chain.revocation_ids().map(str::to_owned).collect();
    assert_eq!(ids.len(), 3);
    // Something that is not a revocation id is refused, and nothing is listed.
    let (_, before) = http_get(&format!("{}/v1/revocations", authority.url), Some(&authority.reader));
    let bad = run(&[
        "delegations",
        "revoke",
        "not-a-revocation-id",
        "--registry",
        &authority.url,
        "--token",
        &authority.admin,
    ]);
    assert!(!bad.status.success());
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(said.contains("revocation id"), "{said}");
    let (_, after) = http_get(&format!("{}/v1/revocations", authority.url), Some(&authority.reader));
    assert_eq!(before, after);
    let revoked = authority.remote(&["delegations", "revoke", &ids[1], "--reason", "hand-off ended", "--json"]);
    assert_eq!(revoked["revoked"], "delegation", "{revoked}");
    assert_eq!(revoked["id"], ids[1].as_str(), "{revoked}");
    // `aip-ca verify --check-revocation` says so too, as a proxy would.
    let checked = run(&[
        "verify",
        "--aat",
        &held_by_c,
        "--issuer-url",
        &authority.url,
        "--audience",
        PROXY,
        "--max-depth",
        "4",
        "--check-revocation",
        "--token",
        &authority.reader,
    ]);
    assert_eq!(checked.status.code(), Some(1), "{checked:?}");
    let said = String::from_utf8_lossy(&checked.stderr);
    assert!(said.contains("a delegation on its chain was revoked"), "{said}");
    // The online proxy refuses the very next call.
    let answer = online_call(read_text_call(2, &notes, &held_by_c, &c_key));
    assert_eq!(answer["error"]["data"]["aat_error"], "aat_revoked", "{answer}");
    assert!(forwarded(&online_call(read_text_call(3, &notes, &held_by_a, &a_key))));
    let _ = online.kill();
    let _ = online.wait();
    let mut id = 10;
    let refused = refused_within(&mut call, &mut id, |id| read_text_call(id, &notes, &held_by_c, &c_key));
    assert_eq!(refused["error"]["data"]["aat_error"], "aat_revoked", "{refused}");
    let answer = call(read_text_call(20, &notes, &held_by_b, &b_key));
    assert_eq!(answer["error"]["data"]["aat_error"], "aat_revoked", "{answer}");
    assert!(forwarded(&call(read_text_call(21, &notes, &held_by_a, &a_key))));
    assert!(forwarded(&call(read_text_call(22, &notes, &a_jwt, &a_key))));
    // The list says so, in its JSON form.
    let (_, list) = http_get(&format!("{}/v1/revocations", authority.url), Some(&authority.reader));
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(
        list["revoked_delegations"][0]["revocation_id"],
        ids[1].as_str(),
        "{list}"
    );
    assert_eq!(list["revoked_delegations"][0]["reason"], "hand-off ended", "{list}");

    // A new chain through B works; revoking agent B refuses it, and A goes on.
    let held_by_c = step(&step(&held_by_a, &a_key, &b), &b_key, &c);
    assert!(forwarded(&call(read_text_call(30, &notes, &held_by_c, &c_key))));
    authority.remote(&["agents", "revoke", &b.id, "--reason", "compromised", "--json"]);
    let mut id = 40;
    let refused = refused_within(&mut call, &mut id, |id| read_text_call(id, &notes, &held_by_c, &c_key));
    assert_eq!(refused["error"]["data"]["aat_error"], "aat_revoked", "{refused}");
    assert!(forwarded(&call(read_text_call(50, &notes, &a_jwt, &a_key))));

    // A chain around B; revoking the user refuses it, and A's own calls too.
    let held_by_c = step(&held_by_a, &a_key, &c);
    assert!(forwarded(&call(read_text_call(60, &notes, &held_by_c, &c_key))));
    authority.remote(&["users", "revoke", USER, "--reason", "left", "--json"]);
    let mut id = 70;
    let refused = refused_within(&mut call, &mut id, |id| read_text_call(id, &notes, &held_by_c, &c_key));
    assert_eq!(refused["error"]["code"], -32019, "{refused}");
    assert_eq!(refused["error"]["data"]["aat_error"], "aat_revoked", "{refused}");
    let answer = call(read_text_call(80, &notes, &a_jwt, &a_key));
    assert_eq!(answer["error"]["code"], -32019, "{answer}");
    let _ = proxy.kill();
    let _ = proxy.wait();

    // The audit record of C's first call names the three agents, the user and each block.
    let log = std::fs::read_to_string(&audit).unwrap();
    let first = first_call_record(&log);
    assert_eq!(first["agent_id"], c.id.as_str(), "{first}");
    assert_eq!(first["user_id"], USER, "{first}");
    assert_eq!(
        first["delegation_chain"],
        serde_json::json!([a.id, b.id, c.id]),
        "{first}"
    );
    assert_eq!(first["delegation_revocation_ids"], serde_json::json!(ids), "{first}");
    assert!(!log.contains(&held_by_a[..64]), "a token was written to the audit log");
    // The chain verifies as any other (the proxy was killed: no closing checkpoint).
    let verified = Command::new(aip_tests::aip_proxy())
        .args(["audit", "verify", "--allow-unsigned"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}
