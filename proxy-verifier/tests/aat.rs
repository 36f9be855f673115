//! AATs and per-call proofs on the real `aip-proxy` binary, offline: the issuer's keys come from
//! a JWKS file and revocation from a signed list file (`crl` mode), both written here with the
//! toolkit, so every refusal of spec 11.2 and of the proof can be provoked on purpose — a stolen
//! AAT, a replayed proof, a proof for other arguments, a revoked agent, stale revocation data.
//! The same checks against a running authority are in `tests/tests/proxy_e2e.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aip_aat::ids::{AgentId, Jti};
use aip_aat::keys::{Algorithm, Jwks, KeyPair};
use aip_aat::proof::{Call, create_proof};
use aip_aat::revocation::{
    RevocationList, RevokedAat, RevokedAgent, RevokedSession, RevokedUser, SignedRevocationList,
};
use aip_aat::token::{
    AAT_VERSION, AatClaims, AgentClaims, Audience, AuthMethod, Capabilities, Confirmation, ContextClaims,
    DelegationScope, UserBinding, encode_aat,
};
use serde_json::{Value, json};
use support::{Fixture, Proxy, error_code, free_port};

const ISSUER: &str = "https://issuer.test.invalid";
const AUDIENCE: &str = "relay-test";

fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// An issuer, an agent, and the files a `crl`-mode proxy reads.
struct Authority {
    issuer: KeyPair,
    agent: KeyPair,
    agent_id: AgentId,
    version: u64,
}

impl Authority {
    fn new(fixture: &Fixture) -> Self {
        let issuer = KeyPair::generate(Algorithm::EdDSA).unwrap();
        let jwks = Jwks::from_keys([issuer.public_key()]);
        std::fs::write(fixture.path("jwks.json"), serde_json::to_vec(&jwks).unwrap()).unwrap();
        let mut authority = Self {
            issuer,
            agent: KeyPair::generate(Algorithm::EdDSA).unwrap(),
            agent_id: AgentId::random().unwrap(),
            version: 0,
        };
        authority.publish(fixture, false);
        authority
    }

    /// Writes a newer signed revocation list, with the agent revoked or not, valid for an hour.
    fn publish(&mut self, fixture: &Fixture, agent_revoked: bool) {
        self.publish_expiring(fixture, agent_revoked, now() + 3_600);
    }

    /// Writes a newer signed revocation list that expires at `expires_at`.
    fn publish_expiring(&mut self, fixture: &Fixture, agent_revoked: bool, expires_at: i64) {
        let agent_id = self.agent_id.clone();
        self.publish_list_expiring(fixture, expires_at, |list, at| {
            if agent_revoked {
                list.revoked_agents.push(RevokedAgent {
                    agent_id,
                    revoked_at: at,
                    reason: Some("test".into()),
                });
            }
        });
    }

    /// Writes a newer signed revocation list, filled in by `edit`, valid for an hour.
    fn publish_list(&mut self, fixture: &Fixture, edit: impl FnOnce(&mut RevocationList, time::OffsetDateTime)) {
        self.publish_list_expiring(fixture, now() + 3_600, edit);
    }

    /// Writes a newer signed revocation list, filled in by `edit`, that expires at `expires_at`.
    fn publish_list_expiring(
        &mut self,
        fixture: &Fixture,
        expires_at: i64,
        edit: impl FnOnce(&mut RevocationList, time::OffsetDateTime),
    ) {
        self.version += 1;
        let at = time::OffsetDateTime::from_unix_timestamp(now()).unwrap();
        let mut list = RevocationList::empty(self.version, at);
        edit(&mut list, at);
        let expires_at = time::OffsetDateTime::from_unix_timestamp(expires_at).unwrap();
        let signed = SignedRevocationList::new(list, at.min(expires_at - time::Duration::seconds(1)), expires_at);
        let tmp = fixture.path("revocations.jws.tmp");
        std::fs::write(&tmp, signed.sign(&self.issuer).unwrap()).unwrap();
        std::fs::rename(&tmp, fixture.path("revocations.jws")).unwrap();
    }

    fn claims(&self, tools: &[&str]) -> AatClaims {
        let now = now();
        AatClaims {
            aat_version: AAT_VERSION.into(),
            iss: ISSUER.into(),
            sub: self.agent_id.clone(),
            aud: Audience::one(AUDIENCE),
            iat: now,
            exp: now + 600,
            nbf: None,
            jti: Jti::random().unwrap(),
            agent: AgentClaims {
                id: self.agent_id.clone(),
                name: Some("test agent".into()),
                public_key_thumbprint: self.agent.key_id().clone(),
                aid_hash: None,
            },
            user_binding: Some(UserBinding {
                user_id: "alice@example.com".into(),
                auth_method: AuthMethod::ApiKey,
                auth_time: now,
                delegation_scope: Some(DelegationScope::Tools),
            }),
            capabilities: Capabilities {
                tools: tools.iter().map(|t| (*t).to_owned()).collect(),
                ..Capabilities::default()
            },
            context: ContextClaims {
                session_id: "session-1".into(),
                policy_hash: None,
                registry_id: None,
            },
            cnf: Some(Confirmation {
                jkt: self.agent.key_id().clone(),
            }),
        }
    }

    fn aat(&self, tools: &[&str]) -> String {
        encode_aat(&self.claims(tools), &self.issuer).unwrap()
    }

    fn proof(&self, aat: &str, tool: &str, arguments: &Value) -> String {
        create_proof(
            &self.agent,
            aat,
            &Call::tools_call(tool, Some(arguments)),
            AUDIENCE,
            now(),
        )
        .unwrap()
    }
}

/// The policy: registry in `crl` mode over the fixture's files, AATs required.
fn spec(fixture: &Fixture, extra_registry: &str, extra_aat: &str, extra_spec: &str) -> String {
    format!(
        "  allowed_tools: [read_file, list_files, search]\n  registry:\n    enabled: true\n    endpoint: \
         \"https://registry.test.invalid\"\n    jwks_file: \"{}\"\n    revocation:\n      mode: crl\n      \
         crl_path: \"{}\"\n      check_interval: 1s\n{extra_registry}  aat:\n    enabled: true\n    require: true\n    \
         trusted_issuers: [\"{ISSUER}\"]\n{extra_aat}{extra_spec}",
        fixture.path("jwks.json").display(),
        fixture.path("revocations.jws").display(),
    )
}

fn fixture(extra_registry: &str, extra_aat: &str, extra_spec: &str) -> (Fixture, Authority) {
    let fixture = Fixture::new("  allowed_tools: []\n");
    let authority = Authority::new(&fixture);
    fixture.write_policy(&support::policy_yaml(&spec(
        &fixture,
        extra_registry,
        extra_aat,
        extra_spec,
    )));
    (fixture, authority)
}

/// A `tools/call` line carrying `aat` and `proof`.
fn call_line(id: u64, tool: &str, arguments: &Value, aat: Option<&str>, proof: Option<&str>) -> String {
    let mut params = json!({"name": tool, "arguments": arguments});
    if let Some(aat) = aat {
        params["_aip_aat"] = aat.into();
    }
    if let Some(proof) = proof {
        params["_aip_proof"] = proof.into();
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string()
}

fn aat_error(answer: &Value) -> &str {
    answer["error"]["data"]["aat_error"].as_str().unwrap_or_default()
}

/// The proxy refused the call with JSON-RPC `code` and `aat_error`.
#[track_caller]
fn assert_refused(answer: &Value, code: i64, aat_error_code: &str) {
    assert_eq!(
        (error_code(answer), aat_error(answer)),
        (code, aat_error_code),
        "{answer}"
    );
}

fn assert_forwarded(answer: &Value) {
    assert!(answer.get("result").is_some(), "expected the server's answer: {answer}");
}

#[test]
fn a_valid_aat_and_proof_pass_and_never_reach_the_server_or_the_log() {
    let (fixture, authority) = fixture("", "", "");
    let mut proxy = fixture.start(&[]);
    let aat = authority.aat(&["read_file"]);
    let args = json!({"path": "/tmp/a.txt"});
    let proof = authority.proof(&aat, "read_file", &args);
    let answer = proxy.call(&call_line(1, "read_file", &args, Some(&aat), Some(&proof)));
    assert_forwarded(&answer);
    // The server got the call without the credentials.
    let seen = fixture.seen();
    assert!(seen.contains("read_file"), "{seen}");
    assert!(
        !seen.contains("_aip_") && !seen.contains(&aat) && !seen.contains(&proof),
        "{seen}"
    );
    // No AAT at all: -32015.
    let answer = proxy.call(&call_line(2, "read_file", &args, None, None));
    assert_eq!(error_code(&answer), -32015, "{answer}");
    proxy.finish();

    let log = std::fs::read_to_string(fixture.audit()).unwrap();
    assert!(
        !log.contains(&aat) && !log.contains(&proof) && !log.contains("eyJ"),
        "{log}"
    );
    let records = fixture.records();
    let validated = records.iter().find(|r| r["event"] == "AAT_VALIDATED").unwrap();
    assert_eq!(validated["agent_id"], authority.agent_id.as_str());
    assert_eq!(validated["capabilities_granted"], json!(["read_file"]));
    let allowed = records
        .iter()
        .find(|r| r["decision"] == "ALLOW" && r["tool"] == "read_file" && r["event"].is_null())
        .unwrap();
    for field in [
        "agent_id",
        "agent_name",
        "user_id",
        "user_auth_method",
        "delegation_scope",
        "aat_jti",
        "aat_issuer",
    ] {
        assert!(allowed[field].is_string(), "{field} missing in {allowed}");
    }
    assert_eq!(allowed["aat_issuer"], ISSUER);
    assert_eq!(allowed["session_id"], "session-1");
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "REGISTRY_REVOCATION_CHECK" && r["mode"] == "crl")
    );
    let verify = support::run(
        ["audit", "verify", "--allow-unsigned", fixture.audit().to_str().unwrap()],
        None,
    );
    assert!(verify.status.success());
}

#[test]
fn a_stolen_aat_is_useless_without_the_agent_key() {
    let (fixture, authority) = fixture("", "", "");
    let mut proxy = fixture.start(&[]);
    let aat = authority.aat(&["read_file"]);
    let args = json!({"path": "/tmp/a.txt"});
    // The thief has the token but not the key: no proof, or a proof signed with its own key.
    let answer = proxy.call(&call_line(1, "read_file", &args, Some(&aat), None));
    assert_refused(&answer, -32016, "proof_missing");
    let thief = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let forged = create_proof(
        &thief,
        &aat,
        &Call::tools_call("read_file", Some(&args)),
        AUDIENCE,
        now(),
    )
    .unwrap();
    let answer = proxy.call(&call_line(2, "read_file", &args, Some(&aat), Some(&forged)));
    assert_eq!(error_code(&answer), -32016, "{answer}");
    assert!(
        matches!(aat_error(&answer), "proof_invalid" | "proof_mismatch"),
        "{answer}"
    );
    // A token tampered to grant more fails its signature.
    let mut parts: Vec<String> = aat.split('.').map(str::to_owned).collect();
    let mut claims = authority.claims(&["read_file", "delete_everything"]);
    claims.jti = Jti::random().unwrap();
    parts[1] = base64_url(&serde_json::to_vec(&claims).unwrap());
    let tampered = parts.join(".");
    let proof = authority.proof(&tampered, "read_file", &args);
    let answer = proxy.call(&call_line(3, "read_file", &args, Some(&tampered), Some(&proof)));
    assert_refused(&answer, -32016, "signature_invalid");
    proxy.finish();
    assert!(!fixture.seen().contains("read_file"), "nothing may reach the server");
}

#[test]
fn a_proof_whose_signature_fails_is_refused_first_and_uses_up_nothing() {
    // A proof that fails its signature is refused with `proof_invalid` before DLP or the session
    // limit apply, and counts against neither. DLP blocks requests carrying the secret.
    let (fixture, authority) = fixture(
        "",
        "    max_calls_per_session: 1\n",
        "  dlp:\n    scan_requests: true\n    patterns:\n      - name: AWS Key\n        regex: \"AKIA[0-9A-Z]{16}\"\n",
    );
    let mut proxy = fixture.start(&[]);
    let aat = authority.aat(&["read_file"]);
    let secret = "AKIAABCDEFGHIJKLMNOP";
    let args = json!({"path": format!("/tmp/{secret}")});
    for id in 1..=3 {
        // The agent's genuine proof for this call, with the signature of another of its proofs.
        let proof = authority.proof(&aat, "read_file", &args);
        let other = authority.proof(&aat, "read_file", &json!({}));
        let (signed, _) = proof.rsplit_once('.').unwrap();
        let (_, signature) = other.rsplit_once('.').unwrap();
        let resigned = format!("{signed}.{signature}");
        let answer = proxy.call(&call_line(id, "read_file", &args, Some(&aat), Some(&resigned)));
        assert_refused(&answer, -32016, "proof_invalid");
    }
    // The session's one call is still available; with a valid proof, DLP refuses the secret.
    let proof = authority.proof(&aat, "read_file", &args);
    let answer = proxy.call(&call_line(4, "read_file", &args, Some(&aat), Some(&proof)));
    assert_eq!(error_code(&answer), -32001, "{answer}");
    assert!(
        answer["error"]["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("sensitive data")),
        "{answer}"
    );
    let proof = authority.proof(&aat, "read_file", &args);
    let answer = proxy.call(&call_line(5, "read_file", &args, Some(&aat), Some(&proof)));
    assert_refused(&answer, -32002, "session_call_limit");
    proxy.finish();
    let seen = fixture.seen();
    assert!(!seen.contains("read_file") && !seen.contains(secret), "{seen}");
    let records = fixture.records();
    let rejected: Vec<&Value> = records.iter().filter(|r| r["event"] == "AAT_REJECTED").collect();
    assert_eq!(rejected.len(), 4, "{records:?}");
    assert_eq!(
        rejected.iter().filter(|r| r["aat_error"] == "proof_invalid").count(),
        3,
        "{rejected:?}"
    );
    let dlp: Vec<&Value> = records
        .iter()
        .filter(|r| r["failed_rule"].as_str().is_some_and(|rule| rule.starts_with("dlp:")))
        .collect();
    assert_eq!(dlp.len(), 1, "only call 4 is refused by DLP: {records:?}");
    assert_eq!(dlp[0]["request_id"], 4, "{dlp:?}");
}

#[test]
fn proofs_are_single_use_and_bound_to_their_arguments() {
    let (fixture, authority) = fixture("", "", "");
    let mut proxy = fixture.start(&[]);
    let aat = authority.aat(&["read_file"]);
    let args = json!({"path": "/tmp/a.txt"});
    let proof = authority.proof(&aat, "read_file", &args);
    assert_forwarded(&proxy.call(&call_line(1, "read_file", &args, Some(&aat), Some(&proof))));
    // The same proof again.
    let answer = proxy.call(&call_line(2, "read_file", &args, Some(&aat), Some(&proof)));
    assert_refused(&answer, -32016, "proof_replayed");
    // A fresh proof, but for other arguments.
    let other = authority.proof(&aat, "read_file", &json!({"path": "/tmp/b.txt"}));
    let answer = proxy.call(&call_line(
        3,
        "read_file",
        &json!({"path": "/etc/shadow"}),
        Some(&aat),
        Some(&other),
    ));
    assert_refused(&answer, -32016, "proof_mismatch");
    // A proof for another tool.
    let other_tool = authority.proof(&aat, "list_files", &args);
    let answer = proxy.call(&call_line(4, "read_file", &args, Some(&aat), Some(&other_tool)));
    assert_refused(&answer, -32016, "proof_mismatch");
    proxy.finish();
    assert_eq!(fixture.seen().matches("read_file").count(), 1, "{}", fixture.seen());
}

#[test]
fn capabilities_intersect_with_the_policy_in_calls_and_lists() {
    let (fixture, authority) = fixture("", "", "  tool_rules:\n    - tool: search\n      action: block\n");
    fixture.write_tools(&json!([
        {"name": "read_file"}, {"name": "list_files"}, {"name": "search"}, {"name": "write_file"}
    ]));
    let mut proxy = fixture.start(&[]);
    let aat = authority.aat(&["read_file", "search", "write_file"]);
    // tools/list with the AAT: policy (read_file, list_files) ∩ AAT (read_file, search, write_file).
    let list_proof = create_proof(
        &authority.agent,
        &aat,
        &Call {
            method: "tools/list",
            tool: "",
            arguments: None,
        },
        AUDIENCE,
        now(),
    )
    .unwrap();
    let list = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {"_aip_aat": aat, "_aip_proof": list_proof}});
    let answer = proxy.call(&list.to_string());
    let names: Vec<&str> = answer["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["read_file"], "{answer}");
    // Allowed by the policy, not in the AAT: -32017 with what the AAT grants.
    let args = json!({});
    let proof = authority.proof(&aat, "list_files", &args);
    let answer = proxy.call(&call_line(1, "list_files", &args, Some(&aat), Some(&proof)));
    assert_eq!(error_code(&answer), -32017, "{answer}");
    assert_eq!(
        answer["error"]["data"]["granted_capabilities"],
        json!(["read_file", "search", "write_file"])
    );
    // In the AAT, blocked by the policy: -32001.
    let proof = authority.proof(&aat, "search", &args);
    let answer = proxy.call(&call_line(2, "search", &args, Some(&aat), Some(&proof)));
    assert_eq!(error_code(&answer), -32001, "{answer}");
    proxy.finish();
}

#[test]
fn a_rejected_aat_is_audited_with_the_agent_and_jti_it_claims() {
    let (fixture, authority) = fixture("", "", "");
    let mut proxy = fixture.start(&[]);
    let args = json!({"path": "/tmp/a.txt"});
    // Signed by a key nobody trusts: its claims are read for the record, marked unverified.
    let forged_claims = authority.claims(&["read_file"]);
    let forged = encode_aat(&forged_claims, &KeyPair::generate(Algorithm::EdDSA).unwrap()).unwrap();
    let proof = authority.proof(&forged, "read_file", &args);
    let answer = proxy.call(&call_line(1, "read_file", &args, Some(&forged), Some(&proof)));
    assert_refused(&answer, -32016, "unknown_signing_key");
    // Verified, but the user authenticated too long ago: the claims are verified ones.
    let mut old = authority.claims(&["read_file"]);
    old.user_binding.as_mut().unwrap().auth_time = now() - 2 * 86_400;
    let aat = encode_aat(&old, &authority.issuer).unwrap();
    let proof = authority.proof(&aat, "read_file", &args);
    let answer = proxy.call(&call_line(2, "read_file", &args, Some(&aat), Some(&proof)));
    assert_refused(&answer, -32019, "user_auth_stale");
    // Not a token at all: nothing to name.
    let answer = proxy.call(&call_line(3, "read_file", &args, Some("not-a-token"), None));
    assert_eq!(error_code(&answer), -32016, "{answer}");
    proxy.finish();
    let records = fixture.records();
    let rejected: Vec<&Value> = records.iter().filter(|r| r["event"] == "AAT_REJECTED").collect();
    assert_eq!(rejected.len(), 3, "{records:?}");
    assert_eq!(rejected[0]["agent_id"], authority.agent_id.as_str());
    assert_eq!(rejected[0]["aat_jti"], forged_claims.jti.to_string());
    assert_eq!(rejected[0]["claims_unverified"], true);
    assert_eq!(rejected[0]["request_id"], 1);
    assert_eq!(rejected[1]["agent_id"], authority.agent_id.as_str());
    assert_eq!(rejected[1]["aat_jti"], old.jti.to_string());
    assert!(rejected[1].get("claims_unverified").is_none(), "{}", rejected[1]);
    assert!(rejected[2].get("agent_id").is_none(), "{}", rejected[2]);
}

#[test]
fn token_errors_follow_spec_11_2() {
    let (fixture, authority) = fixture("", "", "");
    let mut proxy = fixture.start(&[]);
    let args = json!({"path": "/tmp/a.txt"});
    let mut id = 0;
    let mut send = |proxy: &mut Proxy, claims: &AatClaims, signer: &KeyPair| {
        id += 1;
        let aat = encode_aat(claims, signer).unwrap();
        let proof = authority.proof(&aat, "read_file", &args);
        proxy.call(&call_line(id, "read_file", &args, Some(&aat), Some(&proof)))
    };
    let mut expired = authority.claims(&["read_file"]);
    expired.iat -= 7200;
    expired.exp = now() - 3600;
    let answer = send(&mut proxy, &expired, &authority.issuer);
    assert_refused(&answer, -32016, "aat_expired");

    let mut elsewhere = authority.claims(&["read_file"]);
    elsewhere.aud = Audience::one("another-proxy");
    let answer = send(&mut proxy, &elsewhere, &authority.issuer);
    assert_refused(&answer, -32016, "audience_mismatch");

    let mut untrusted = authority.claims(&["read_file"]);
    untrusted.iss = "https://evil.invalid".into();
    let answer = send(&mut proxy, &untrusted, &authority.issuer);
    assert_refused(&answer, -32020, "untrusted_issuer");

    let stranger = KeyPair::generate(Algorithm::EdDSA).unwrap();
    let answer = send(&mut proxy, &authority.claims(&["read_file"]), &stranger);
    assert_refused(&answer, -32016, "unknown_signing_key");

    let mut stale_user = authority.claims(&["read_file"]);
    stale_user.user_binding.as_mut().unwrap().auth_time = now() - 2 * 86_400;
    let answer = send(&mut proxy, &stale_user, &authority.issuer);
    assert_refused(&answer, -32019, "user_auth_stale");

    let mut read_only = authority.claims(&["read_file", "write_file"]);
    read_only.user_binding.as_mut().unwrap().delegation_scope = Some(DelegationScope::ReadOnly);
    let answer = send(&mut proxy, &read_only, &authority.issuer);
    assert_forwarded(&answer);
    // A read-only delegation does not cover a write, even one the AAT lists.
    read_only.jti = Jti::random().unwrap();
    let aat = encode_aat(&read_only, &authority.issuer).unwrap();
    let proof = authority.proof(&aat, "write_file", &args);
    let answer = proxy.call(&call_line(99, "write_file", &args, Some(&aat), Some(&proof)));
    assert_refused(&answer, -32017, "delegation_scope_exceeded");
    proxy.finish();
    let records = fixture.records();
    let rejected: Vec<&str> = records
        .iter()
        .filter(|r| r["event"] == "AAT_REJECTED")
        .map(|r| r["aat_error"].as_str().unwrap())
        .collect();
    assert_eq!(
        rejected,
        [
            "aat_expired",
            "audience_mismatch",
            "untrusted_issuer",
            "unknown_signing_key",
            "user_auth_stale",
            "delegation_scope_exceeded"
        ]
    );
}

#[test]
fn session_limits_and_allowed_servers_come_from_the_aat_and_the_policy() {
    let (fixture, authority) = fixture("", "    max_calls_per_session: 2\n", "");
    let mut proxy = fixture.start(&[]);
    let args = json!({});
    let aat = authority.aat(&["read_file"]);
    for id in 1..=2 {
        let proof = authority.proof(&aat, "read_file", &args);
        assert_forwarded(&proxy.call(&call_line(id, "read_file", &args, Some(&aat), Some(&proof))));
    }
    let proof = authority.proof(&aat, "read_file", &args);
    let answer = proxy.call(&call_line(3, "read_file", &args, Some(&aat), Some(&proof)));
    assert_refused(&answer, -32002, "session_call_limit");

    let mut elsewhere = authority.claims(&["read_file"]);
    elsewhere.context.session_id = "session-2".into();
    elsewhere.capabilities.allowed_servers = vec!["mcp://other-server".into()];
    let aat = encode_aat(&elsewhere, &authority.issuer).unwrap();
    let proof = authority.proof(&aat, "read_file", &args);
    let answer = proxy.call(&call_line(4, "read_file", &args, Some(&aat), Some(&proof)));
    assert_refused(&answer, -32017, "server_not_allowed");
    proxy.finish();
}

#[test]
fn a_revocation_in_the_signed_list_refuses_the_next_calls() {
    let (fixture, mut authority) = fixture("", "", "");
    let mut proxy = fixture.start(&[]);
    let aat = authority.aat(&["read_file"]);
    let args = json!({});
    let proof = authority.proof(&aat, "read_file", &args);
    assert_forwarded(&proxy.call(&call_line(1, "read_file", &args, Some(&aat), Some(&proof))));
    authority.publish(&fixture, true);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut id = 1;
    let refusal = loop {
        id += 1;
        let proof = authority.proof(&aat, "read_file", &args);
        let answer = proxy.call(&call_line(id, "read_file", &args, Some(&aat), Some(&proof)));
        if answer.get("error").is_some() {
            break answer;
        }
        assert!(Instant::now() < deadline, "the revocation was not applied");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_refused(&refusal, -32016, "aat_revoked");
    proxy.finish();
}

#[test]
fn a_revoked_users_aat_is_refused_with_32019() {
    let (fixture, mut authority) = fixture("", "", "");
    let mut proxy = fixture.start(&[]);
    let claims = authority.claims(&["read_file"]);
    let aat = encode_aat(&claims, &authority.issuer).unwrap();
    let args = json!({});
    let proof = authority.proof(&aat, "read_file", &args);
    assert_forwarded(&proxy.call(&call_line(1, "read_file", &args, Some(&aat), Some(&proof))));
    // What the issuer publishes when a user is revoked: the user, and their tokens and sessions.
    authority.publish_list(&fixture, |list, at| {
        list.revoked_users.push(RevokedUser {
            user_id: "alice@example.com".into(),
            revoked_at: at,
            reason: None,
        });
        list.revoked_aats.push(RevokedAat {
            jti: claims.jti.clone(),
            revoked_at: at,
            reason: None,
        });
        list.revoked_sessions.push(RevokedSession {
            session_id: claims.context.session_id.clone(),
            revoked_at: at,
            reason: None,
        });
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut id = 1;
    let refusal = loop {
        id += 1;
        let proof = authority.proof(&aat, "read_file", &args);
        let answer = proxy.call(&call_line(id, "read_file", &args, Some(&aat), Some(&proof)));
        if answer.get("error").is_some() {
            break answer;
        }
        assert!(Instant::now() < deadline, "the revocation was not applied");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_refused(&refusal, -32019, "aat_revoked");
    assert_eq!(refusal["error"]["data"]["reason"], "User delegation has been revoked");
    proxy.finish();
}

#[test]
fn stale_revocation_data_fails_closed_unless_failover_says_otherwise() {
    for (failover, passes) in [("fail_closed", false), ("local_policy", true)] {
        let (fixture, authority) = fixture(
            "      max_staleness: 2s\n",
            "",
            &format!("  server:\n    failover_mode: {failover}\n"),
        );
        let mut proxy = fixture.start(&[]);
        let aat = authority.aat(&["read_file"]);
        let args = json!({});
        let proof = authority.proof(&aat, "read_file", &args);
        assert_forwarded(&proxy.call(&call_line(1, "read_file", &args, Some(&aat), Some(&proof))));
        // The signed list is replaced by something that does not verify: the data ages.
        std::fs::write(fixture.path("revocations.jws"), "not a signed list").unwrap();
        std::thread::sleep(Duration::from_millis(3500));
        let proof = authority.proof(&aat, "read_file", &args);
        let answer = proxy.call(&call_line(2, "read_file", &args, Some(&aat), Some(&proof)));
        if passes {
            assert_forwarded(&answer);
        } else {
            assert_refused(&answer, -32016, "revocation_unavailable");
        }
        proxy.finish();
    }
}

#[test]
fn an_expired_signed_list_fails_closed_unless_failover_says_otherwise() {
    for (failover, passes) in [("fail_closed", false), ("fail_open", true), ("local_policy", true)] {
        let (fixture, mut authority) = fixture("", "", &format!("  server:\n    failover_mode: {failover}\n"));
        // A list that verifies but expires in a moment, and a file nobody replaces: the proxy
        // re-reads it every second, and it keeps verifying.
        let expires_at = now() + 3;
        authority.publish_expiring(&fixture, false, expires_at);
        let mut proxy = fixture.start(&[]);
        let aat = authority.aat(&["read_file"]);
        let args = json!({});
        let proof = authority.proof(&aat, "read_file", &args);
        assert_forwarded(&proxy.call(&call_line(1, "read_file", &args, Some(&aat), Some(&proof))));
        while now() <= expires_at {
            std::thread::sleep(Duration::from_millis(200));
        }
        let proof = authority.proof(&aat, "read_file", &args);
        let answer = proxy.call(&call_line(2, "read_file", &args, Some(&aat), Some(&proof)));
        if passes {
            assert_forwarded(&answer);
        } else {
            assert_refused(&answer, -32016, "revocation_unavailable");
            let reason = answer["error"]["data"]["reason"].as_str().unwrap();
            assert!(reason.contains("expired"), "{answer}");
        }
        // A fresh copy of the same list puts it back in force.
        authority.version -= 1;
        authority.publish(&fixture, false);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut id = 2;
        loop {
            id += 1;
            let proof = authority.proof(&aat, "read_file", &args);
            let answer = proxy.call(&call_line(id, "read_file", &args, Some(&aat), Some(&proof)));
            if answer.get("result").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "the fresh copy was not taken: {answer}");
            std::thread::sleep(Duration::from_millis(100));
        }
        proxy.finish();
    }
}

#[test]
fn a_signed_list_that_expired_before_the_start_fails_closed() {
    let (fixture, mut authority) = fixture("", "", "");
    authority.version -= 1;
    authority.publish_expiring(&fixture, false, now() - 60);
    let mut proxy = fixture.start(&[]);
    let aat = authority.aat(&["read_file"]);
    let args = json!({});
    let proof = authority.proof(&aat, "read_file", &args);
    let answer = proxy.call(&call_line(1, "read_file", &args, Some(&aat), Some(&proof)));
    assert_refused(&answer, -32016, "revocation_unavailable");
    proxy.finish();
}

#[test]
fn a_signed_list_without_an_expiry_is_refused() {
    let fixture = Fixture::new("  allowed_tools: []\n");
    let authority = Authority::new(&fixture);
    fixture.write_policy(&support::policy_yaml(&spec(&fixture, "", "", "")));
    // What an earlier registry signed: the bare list.
    let at = time::OffsetDateTime::from_unix_timestamp(now()).unwrap();
    let bare = aip_aat::jcs::to_vec(&RevocationList::empty(1, at)).unwrap();
    let jws = aip_aat::jws::sign("aip-revocations+jwt", &bare, &authority.issuer, false).unwrap();
    std::fs::write(fixture.path("revocations.jws"), jws).unwrap();
    let policy = fixture.policy().display().to_string();
    let out = support::run(["--policy", policy.as_str(), "--target", &fixture.target()], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("issued_at/expires_at"), "{stderr}");
}

#[test]
fn an_optional_aat_that_fails_is_logged_and_the_policy_decides() {
    let (fixture, authority) = fixture("", "", "");
    let text = std::fs::read_to_string(fixture.policy()).unwrap();
    fixture.write_policy(&text.replace("require: true", "require: false\n    require_proof: true"));
    let mut proxy = fixture.start(&[]);
    let args = json!({});
    // No AAT: the policy alone decides.
    assert_forwarded(&proxy.call(&call_line(1, "read_file", &args, None, None)));
    // A broken AAT: logged, evaluated as anonymous.
    assert_forwarded(&proxy.call(&call_line(2, "read_file", &args, Some("not.a.token"), None)));
    // A valid AAT still limits the call to its capabilities (step 0c).
    let aat = authority.aat(&["list_files"]);
    let proof = authority.proof(&aat, "read_file", &args);
    let answer = proxy.call(&call_line(3, "read_file", &args, Some(&aat), Some(&proof)));
    assert_eq!(error_code(&answer), -32017, "{answer}");
    proxy.finish();
    let seen = fixture.seen();
    assert!(!seen.contains("not.a.token"), "{seen}");
    let records = fixture.records();
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "AAT_REJECTED" && r["decision"] == "ALLOW" && r["aat_error"] == "malformed_aat"),
        "{records:?}"
    );
}

#[test]
fn validate_endpoint_checks_the_aat_and_proof_headers() {
    let (fixture, authority) = fixture("", "", "");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let token = "t".repeat(40);
    let mut proxy = fixture.start_with(&["--listen", &listen], &[("AIP_PROXY_TOKEN", &token)]);
    let addr: SocketAddr = listen.parse().unwrap();
    let aat = authority.aat(&["read_file"]);
    let args = json!({"path": "/tmp/a.txt"});
    let body = json!({"tool": "read_file", "arguments": args}).to_string();

    let proof = authority.proof(&aat, "read_file", &args);
    let answer = post_validate(addr, &token, &body, &[("X-AIP-AAT", &aat), ("X-AIP-Proof", &proof)]);
    assert_eq!(answer["decision"], "allow", "{answer}");
    assert_eq!(answer["aat_status"]["valid"], true, "{answer}");
    assert_eq!(answer["aat_status"]["agent_id"], authority.agent_id.as_str());
    assert_eq!(answer["aat_status"]["user_id"], "alice@example.com");
    assert_eq!(answer["aat_status"]["issuer"], ISSUER);
    assert_eq!(answer["aat_status"]["capabilities_checked"], true);

    // The same proof again, and no AAT at all.
    let answer = post_validate(addr, &token, &body, &[("X-AIP-AAT", &aat), ("X-AIP-Proof", &proof)]);
    assert_eq!(answer["decision"], "block", "{answer}");
    assert_eq!(answer["aat_status"]["valid"], false);
    assert_eq!(answer["aat_status"]["aat_error"], "proof_replayed");
    let answer = post_validate(addr, &token, &body, &[]);
    assert_eq!(answer["decision"], "block", "{answer}");
    assert_eq!(answer["violations"][0]["type"], "aat_invalid");
    proxy.finish();
}

fn post_validate(addr: SocketAddr, token: &str, body: &str, headers: &[(&str, &str)]) -> Value {
    let reply = support::http_request(
        addr,
        "POST",
        "/v1/validate",
        Some(token),
        headers,
        Some(("application/json", body.as_bytes())),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// --- one use per proof, whichever proxy process sees it -----------------------------------------

/// Starts a proxy of `fixture` writing its own audit log `audit`, with `envs`.
fn start_process(fixture: &Fixture, audit: &str, envs: &[(&str, &str)]) -> Proxy {
    let args = [
        "--policy".to_owned(),
        fixture.policy().display().to_string(),
        "--target".into(),
        fixture.target(),
        "--audit".into(),
        fixture.path(audit).display().to_string(),
    ];
    Proxy::spawn(args, envs)
}

/// A runtime directory of the user's own (0700), as a login session has.
fn runtime_dir(fixture: &Fixture, name: &str) -> String {
    use std::os::unix::fs::DirBuilderExt;
    let dir = fixture.path(name);
    std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    dir.display().to_string()
}

/// The same captured line to `first`, which forwards it, then to `second`, which refuses it.
fn replayed_across(authority: &Authority, first: &mut Proxy, second: &mut Proxy) {
    let aat = authority.aat(&["read_file"]);
    let args = json!({"path": "/tmp/a.txt"});
    let proof = authority.proof(&aat, "read_file", &args);
    let line = call_line(1, "read_file", &args, Some(&aat), Some(&proof));
    assert_forwarded(&first.call(&line));
    let answer = second.call(&line);
    assert_refused(&answer, -32016, "proof_replayed");
    // A fresh proof for the same call still passes on the second process.
    let fresh = authority.proof(&aat, "read_file", &args);
    assert_forwarded(&second.call(&call_line(2, "read_file", &args, Some(&aat), Some(&fresh))));
}

#[test]
fn a_captured_call_is_refused_by_another_proxy_process_of_the_host() {
    // No replay_store in the policy: the host's default store, under the user's runtime directory.
    let (fixture, authority) = fixture("", "", "");
    let run = runtime_dir(&fixture, "run");
    let env = [("XDG_RUNTIME_DIR", run.as_str())];
    let mut first = start_process(&fixture, "first.jsonl", &env);
    let mut second = start_process(&fixture, "second.jsonl", &env);
    replayed_across(&authority, &mut first, &mut second);
    first.finish();
    second.finish();
    assert_eq!(fixture.seen().matches("read_file").count(), 2, "{}", fixture.seen());
    let store = fixture.path("run/aip-proxy/replay");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&store).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
    let records = std::fs::read_to_string(fixture.path("second.jsonl")).unwrap();
    assert!(records.contains("proof_replayed"), "{records}");
}

#[test]
fn a_proof_stays_used_across_a_proxy_restart() {
    let (fixture, authority) = fixture("", "", "");
    let run = runtime_dir(&fixture, "run");
    let env = [("XDG_RUNTIME_DIR", run.as_str())];
    let aat = authority.aat(&["read_file"]);
    let args = json!({"path": "/tmp/a.txt"});
    let proof = authority.proof(&aat, "read_file", &args);
    let line = call_line(1, "read_file", &args, Some(&aat), Some(&proof));
    let mut before = start_process(&fixture, "before.jsonl", &env);
    assert_forwarded(&before.call(&line));
    assert!(before.finish().success());
    let mut after = start_process(&fixture, "after.jsonl", &env);
    assert_refused(&after.call(&line), -32016, "proof_replayed");
    after.finish();
    assert_eq!(fixture.seen().matches("read_file").count(), 1, "{}", fixture.seen());
}

#[test]
fn a_replay_store_that_cannot_be_written_refuses_calls() {
    let (fixture, authority) = fixture("", "", "");
    let run = runtime_dir(&fixture, "run");
    let env = [("XDG_RUNTIME_DIR", run.as_str())];
    let mut proxy = start_process(&fixture, "audit.jsonl", &env);
    let aat = authority.aat(&["read_file"]);
    let args = json!({"path": "/tmp/a.txt"});
    let proof = authority.proof(&aat, "read_file", &args);
    assert_forwarded(&proxy.call(&call_line(1, "read_file", &args, Some(&aat), Some(&proof))));
    // The store's directory is replaced by a file: nothing can be recorded any more.
    let store = fixture.path("run/aip-proxy/replay");
    std::fs::remove_dir_all(&store).unwrap();
    std::fs::write(&store, "not a directory").unwrap();
    let proof = authority.proof(&aat, "read_file", &args);
    let answer = proxy.call(&call_line(2, "read_file", &args, Some(&aat), Some(&proof)));
    assert_refused(&answer, -32016, "proof_replayed");
    let reason = answer["error"]["data"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("replay store unavailable"), "{answer}");
    proxy.finish();
    assert!(proxy.stderr().contains("cannot be written"), "{}", proxy.stderr());
    assert_eq!(fixture.seen().matches("read_file").count(), 1, "{}", fixture.seen());
}

#[test]
fn a_replay_store_others_can_open_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let store = tempfile::TempDir::new().unwrap();
    std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (fixture, _authority) = fixture("", &format!("    replay_store: \"{}\"\n", store.path().display()), "");
    let mut proxy = start_process(&fixture, "audit.jsonl", &[]);
    assert!(!proxy.wait().success());
    let stderr = proxy.stderr();
    assert!(stderr.contains("replay store") && stderr.contains("700"), "{stderr}");
}

/// `AIP_TEST_REDIS_URL` (a server, e.g. `redis://127.0.0.1:6379`) with database `db`, or `None`
/// after saying the test is skipped — except under `CI`, which must set it.
#[allow(clippy::print_stderr)]
fn redis_url(test: &str, db: u8) -> Option<String> {
    match std::env::var("AIP_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(format!("{}/{db}", url.trim_end_matches('/'))),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "AIP_TEST_REDIS_URL must be set under CI"
            );
            eprintln!("SKIPPED {test}: set AIP_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379) to run it");
            None
        }
    }
}

#[test]
fn proxies_on_separate_hosts_share_replay_state_through_redis() {
    let Some(url) = redis_url("proxies_on_separate_hosts_share_replay_state_through_redis", 7) else {
        return;
    };
    let (fixture, authority) = fixture("", &format!("    replay_store: \"{url}\"\n"), "");
    // Each process has a runtime directory of its own, as on two hosts: only Redis is shared.
    let (one, two) = (runtime_dir(&fixture, "one"), runtime_dir(&fixture, "two"));
    let mut first = start_process(&fixture, "first.jsonl", &[("XDG_RUNTIME_DIR", one.as_str())]);
    let mut second = start_process(&fixture, "second.jsonl", &[("XDG_RUNTIME_DIR", two.as_str())]);
    replayed_across(&authority, &mut first, &mut second);
    first.finish();
    second.finish();
    assert!(!fixture.path("one/aip-proxy").exists(), "the local store is not used");
    // And across a restart.
    let aat = authority.aat(&["read_file"]);
    let args = json!({"path": "/tmp/b.txt"});
    let proof = authority.proof(&aat, "read_file", &args);
    let line = call_line(3, "read_file", &args, Some(&aat), Some(&proof));
    let mut before = start_process(&fixture, "before.jsonl", &[("XDG_RUNTIME_DIR", one.as_str())]);
    assert_forwarded(&before.call(&line));
    before.finish();
    let mut after = start_process(&fixture, "after.jsonl", &[("XDG_RUNTIME_DIR", one.as_str())]);
    assert_refused(&after.call(&line), -32016, "proof_replayed");
    after.finish();
}

#[test]
fn an_unreachable_redis_refuses_calls_instead_of_accepting_them() {
    // Nothing listens on this port: every call fails closed, and the proxy says why.
    let url = format!("redis://127.0.0.1:{}", free_port());
    let (fixture, authority) = fixture("", &format!("    replay_store: \"{url}\"\n"), "");
    let mut proxy = start_process(&fixture, "audit.jsonl", &[]);
    let aat = authority.aat(&["read_file"]);
    let args = json!({"path": "/tmp/a.txt"});
    for id in 1..=2 {
        let proof = authority.proof(&aat, "read_file", &args);
        let answer = proxy.call(&call_line(id, "read_file", &args, Some(&aat), Some(&proof)));
        assert_refused(&answer, -32016, "proof_replayed");
        let reason = answer["error"]["data"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("replay store unavailable"), "{answer}");
    }
    proxy.finish();
    assert!(!fixture.seen().contains("read_file"), "{}", fixture.seen());
    assert!(proxy.stderr().contains("unavailable"), "{}", proxy.stderr());
}
