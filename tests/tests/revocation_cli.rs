//! `aip-ca revocations` and `aip-ca verify --check-revocation` against a running authority:
//! what each kind of revocation shows and refuses, suspension and reactivation, and the
//! refusals of bad use (no token, a token without rights, no authority to ask).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Output;

use aip_tests::{Server, command, ok, run};
use serde_json::Value;

/// stdout and stderr of a finished command.
fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

struct Authority {
    server: Server,
    admin: String,
    _tmp: tempfile::TempDir,
    agent_dir: String,
    agent_id: String,
    user_key: String,
}

impl Authority {
    fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("aip");
        let server = Server::start(&["--dir", dir.to_str().unwrap(), "--insecure-no-passphrase"]);
        let admin = server.admin_token();
        let agent_dir = tmp.path().join("agent").to_str().unwrap().to_owned();
        let mut authority = Self {
            server,
            admin,
            _tmp: tmp,
            agent_dir,
            agent_id: String::new(),
            user_key: String::new(),
        };
        let registered: Value = serde_json::from_str(&authority.admin_ok(&[
            "register-agent",
            "--name",
            "checker",
            "--capabilities",
            "read_file",
            "--out-dir",
            &authority.agent_dir.clone(),
            "--insecure-no-passphrase",
            "--json",
        ]))
        .unwrap();
        authority.agent_id = registered["agent_id"].as_str().unwrap().to_owned();
        let user: Value = serde_json::from_str(&authority.admin_ok(&[
            "users",
            "create",
            "--id",
            "bob@example.com",
            "--delegatable",
            "read_file",
            "--json",
        ]))
        .unwrap();
        authority.user_key = user["api_key"].as_str().unwrap().to_owned();
        authority
    }

    fn admin(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--registry", &self.server.url, "--token", &self.admin]);
        run(&all)
    }

    fn admin_ok(&self, args: &[&str]) -> String {
        ok(self.admin(args))
    }

    /// A new AAT for the agent, from the user: (the AAT, its claims).
    fn aat(&self) -> (String, Value) {
        let answer: Value = serde_json::from_str(&ok(run(&[
            "token",
            "--agent-dir",
            &self.agent_dir,
            "--issuer",
            &self.server.url,
            "--audience",
            "files-proxy",
            "--user-api-key",
            &self.user_key,
            "--insecure-no-passphrase",
            "--json",
        ])))
        .unwrap();
        let aat = answer["aat"].as_str().unwrap().to_owned();
        let claims: Value = serde_json::from_str(&ok(run(&[
            "verify",
            "--aat",
            &aat,
            "--issuer-url",
            &self.server.url,
            "--audience",
            "files-proxy",
        ])))
        .unwrap();
        (aat, claims)
    }

    /// `aip-ca verify --check-revocation` with `token`.
    fn check(&self, aat: &str, token: &str, json: bool) -> Output {
        let mut args = vec![
            "verify",
            "--aat",
            aat,
            "--issuer-url",
            &self.server.url,
            "--audience",
            "files-proxy",
            "--check-revocation",
            "--token",
            token,
        ];
        if json {
            args.push("--json");
        }
        run(&args)
    }

    fn list(&self) -> Value {
        serde_json::from_str(&self.admin_ok(&["revocations", "--json"])).unwrap()
    }
}

#[test]
fn each_revocation_shows_in_the_list_and_refuses_the_aats_it_covers() {
    let authority = Authority::start();
    let empty = authority.admin_ok(&["revocations"]);
    assert!(empty.contains("nothing is revoked"), "{empty}");

    // One token revoked: that AAT is refused, a newer one is not.
    let (first, claims) = authority.aat();
    let jti = claims["jti"].as_str().unwrap();
    let accepted = authority.check(&first, &authority.admin, false);
    assert!(accepted.status.success(), "{}", text(&accepted));
    let shown: Value = serde_json::from_slice(&accepted.stdout).unwrap();
    assert_eq!(shown["jti"], jti, "the claims are printed as without the check");
    authority.admin_ok(&["revoke", "--jti", jti, "--reason", "leaked"]);
    let list = authority.list();
    assert_eq!(list["revoked_aats"][0]["jti"], jti, "{list}");
    assert!(authority.admin_ok(&["revocations"]).contains("leaked"));
    let refused = authority.check(&first, &authority.admin, true);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let answer: Value = serde_json::from_str(String::from_utf8_lossy(&refused.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(answer["valid"], false);
    assert_eq!(answer["aat_error"], "aat_revoked", "{answer}");
    assert!(text(&refused).contains("revocation list version"), "{}", text(&refused));

    // A reader token is enough to read the list.
    let reader: Value =
        serde_json::from_str(&authority.admin_ok(&["access-token", "create", "--role", "reader", "--json"])).unwrap();
    let reader = reader["token"].as_str().unwrap();
    let (second, _) = authority.aat();
    assert!(authority.check(&second, reader, false).status.success());

    // A suspended agent is refused while suspended, accepted again once reactivated.
    authority.admin_ok(&["agents", "suspend", &authority.agent_id, "--reason", "audit"]);
    let refused = authority.check(&second, reader, false);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("agent_inactive"), "{}", text(&refused));
    assert!(authority.admin_ok(&["revocations"]).contains("suspended"));
    authority.admin_ok(&["agents", "reactivate", &authority.agent_id]);
    assert!(authority.check(&second, reader, false).status.success());

    // The user's delegation revoked: her AATs are refused as such.
    authority.admin_ok(&["users", "revoke", "bob@example.com"]);
    let table = authority.admin_ok(&["revocations"]);
    assert!(table.contains("bob@example.com"), "{table}");
    let refused = authority.check(&second, reader, true);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let answer: Value = serde_json::from_str(String::from_utf8_lossy(&refused.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(answer["aat_error"], "aat_revoked", "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .starts_with("the user's delegation was revoked"),
        "{answer}"
    );

    // The agent revoked: listed with its reason.
    authority.admin_ok(&["agents", "revoke", &authority.agent_id, "--reason", "retired"]);
    let list = authority.list();
    assert_eq!(
        list["revoked_agents"][0]["agent_id"],
        authority.agent_id.as_str(),
        "{list}"
    );
    assert_eq!(list["revoked_agents"][0]["reason"], "retired", "{list}");
}

#[test]
fn bad_use_is_refused_with_a_clear_error() {
    let authority = Authority::start();
    let (aat, _) = authority.aat();

    // No token for the list: refused before anything is fetched.
    let output = command()
        .args([
            "verify",
            "--aat",
            &aat,
            "--issuer-url",
            &authority.server.url,
            "--audience",
            "files-proxy",
            "--check-revocation",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("needs a token"), "{}", text(&output));
    assert!(output.stdout.is_empty(), "no claims are printed: {}", text(&output));

    // A wrong token: the authority's refusal, not a verdict on the AAT.
    let output = authority.check(&aat, "aip_at_not-a-token", false);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("invalid_token"), "{}", text(&output));
    assert!(output.stdout.is_empty(), "no claims are printed: {}", text(&output));
    assert!(
        !text(&output).contains("aip_at_not-a-token"),
        "the token is never echoed"
    );

    // --check-revocation needs the authority's address.
    let output = command()
        .args([
            "verify",
            "--aat",
            &aat,
            "--jwks",
            "keys.json",
            "--audience",
            "files-proxy",
            "--check-revocation",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));

    // `revocations` without a token, or with none of the authority's.
    let output = run(&["revocations", "--registry", &authority.server.url]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("no token given"), "{}", text(&output));
    let output = run(&[
        "revocations",
        "--registry",
        &authority.server.url,
        "--token",
        "aip_at_nope",
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("AIP_TOKEN"),
        "the hint names the token: {}",
        text(&output)
    );

    // Nothing listens there.
    let output = run(&[
        "revocations",
        "--registry",
        "http://127.0.0.1:9",
        "--token",
        &authority.admin,
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("aip-ca serve"), "{}", text(&output));
}
