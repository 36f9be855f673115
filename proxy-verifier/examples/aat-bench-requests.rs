//! Writes what the stdio harness needs to measure `aip-proxy` with full AAT checks, offline:
//! an issuer key and an agent key, an AAT for the agent, the issuer's JWKS, a signed revocation
//! list (`crl` mode, so no registry runs during the measurement), a policy requiring AATs and
//! proofs with the harness's DLP patterns, and N request lines, each a `tools/call` of
//! `read_file` carrying the AAT and a fresh per-call proof.
//!
//! ```text
//! cargo run --release -p aip-proxy-verifier --example aat-bench-requests -- OUT_DIR LINES
//! ```
//!
//! Writes `OUT_DIR/{policy-aat.yaml, jwks.json, revocations.jws, requests.jsonl}`.

#![allow(clippy::print_stderr)] // A command-line tool: its errors go to stderr.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use aip_aat::ids::{AgentId, Jti};
use aip_aat::keys::{Algorithm, Jwks, KeyPair};
use aip_aat::proof::{Call, create_proof};
use aip_aat::revocation::{RevocationList, SignedRevocationList};
use aip_aat::token::{
    AAT_VERSION, AatClaims, AgentClaims, Audience, AuthMethod, Capabilities, Confirmation, ContextClaims,
    DelegationScope, UserBinding, encode_aat,
};

const AUDIENCE: &str = "bench-aat";
const ISSUER: &str = "https://issuer.bench.invalid";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(lines)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok())) else {
        eprintln!("usage: aat-bench-requests OUT_DIR LINES");
        return ExitCode::from(2);
    };
    match write_all(&PathBuf::from(dir), lines) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(dir: &std::path::Path, lines: u64) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let issuer = KeyPair::generate(Algorithm::EdDSA)?;
    let agent = KeyPair::generate(Algorithm::EdDSA)?;
    let agent_id = AgentId::random()?;
    let claims = AatClaims {
        aat_version: AAT_VERSION.into(),
        iss: ISSUER.into(),
        sub: agent_id.clone(),
        aud: Audience::one(AUDIENCE),
        iat: now,
        exp: now + 3_600,
        nbf: None,
        jti: Jti::random()?,
        agent: AgentClaims {
            id: agent_id,
            name: Some("bench agent".into()),
            public_key_thumbprint: agent.key_id().clone(),
            aid_hash: None,
        },
        user_binding: Some(UserBinding {
            user_id: "bench@example.com".into(),
            auth_method: AuthMethod::ApiKey,
            auth_time: now,
            delegation_scope: Some(DelegationScope::Tools),
        }),
        capabilities: Capabilities {
            tools: vec!["read_file".into()],
            ..Capabilities::default()
        },
        context: ContextClaims {
            session_id: "bench-session".into(),
            policy_hash: None,
            registry_id: None,
        },
        cnf: Some(Confirmation {
            jkt: agent.key_id().clone(),
        }),
    };
    let aat = encode_aat(&claims, &issuer)?;
    let jwks = Jwks::from_keys([issuer.public_key()]);
    std::fs::write(dir.join("jwks.json"), serde_json::to_vec_pretty(&jwks)?)?;
    let at = time::OffsetDateTime::from_unix_timestamp(now)?;
    // Valid for a week: longer than any benchmark run.
    let signed = SignedRevocationList::new(RevocationList::empty(1, at), at, at + time::Duration::days(7));
    std::fs::write(dir.join("revocations.jws"), signed.sign(&issuer)?)?;
    std::fs::write(
        dir.join("policy-aat.yaml"),
        format!(
            "apiVersion: aip.io/v1alpha3\nkind: AgentPolicy\nmetadata:\n  name: {AUDIENCE}\nspec:\n  allowed_tools:\n    \
             - read_file\n  dlp:\n    enabled: true\n    patterns:\n      - name: \"Email\"\n        regex: \
             \"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\\\\.[a-zA-Z]{{2,}}\"\n      - name: \"AWS Key\"\n        regex: \
             \"(A3T[A-Z0-9]|AKIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ASIA)[A-Z0-9]{{16}}\"\n      - name: \"Generic \
             Secret\"\n        regex: \"(?i)(password|secret|token|api_key)\\\\s*[:=]\\\\s*['\\\"]?[^\\\\s'\\\"]+['\\\"]?\"\n  \
             registry:\n    enabled: true\n    endpoint: \"https://registry.bench.invalid\"\n    jwks_file: \
             \"{jwks}\"\n    revocation:\n      mode: crl\n      crl_path: \"{crl}\"\n      check_interval: 60s\n  \
             aat:\n    enabled: true\n    require: true\n    trusted_issuers: [\"{ISSUER}\"]\n",
            jwks = dir.join("jwks.json").display(),
            crl = dir.join("revocations.jws").display(),
        ),
    )?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("requests.jsonl"))?);
    let arguments = serde_json::json!({"path": "/tmp/bench.txt"});
    for id in 1..=lines {
        let proof = create_proof(
            &agent,
            &aat,
            &Call::tools_call("read_file", Some(&arguments)),
            AUDIENCE,
            now,
        )?;
        let request = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "tools/call",
            "params": {"name": "read_file", "arguments": arguments, "_aip_aat": aat, "_aip_proof": proof},
        });
        writeln!(out, "{request}")?;
    }
    out.flush()?;
    Ok(())
}
