//! Delegable AATs (`aat+biscuit`) from a running authority (`aip-ca serve` on SQLite): asked for
//! with `aip-ca token --token-format aat+biscuit` (`POST /v1/token`) and with `token_format` on
//! `POST /oauth/token`, verified against the authority's JWKS — whose issuer keys, and only
//! those, are marked as roots — and delegated one step offline with the agent's own key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
