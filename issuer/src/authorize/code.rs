//! Authorization codes: sealed (see `crate::seal`), so any replica can redeem what another
//! issued, and short-lived ([`CODE_TTL`]). A code names its agent, redirect URI, PKCE
//! challenge, user, granted tools and audience. Single use is the token endpoint's: it
//! records [`RedeemedCode::single_use`] in the issuance transaction, as it records answered
//! challenges (`used_challenges`), so a second redemption fails on any replica.

use aip_aat::token::{AuthMethod, DelegationScope};
use aip_api::issuer::TokenErrorCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::challenge::OpenedChallenge;
use crate::directory::DirectoryAgent;
use crate::seal::Purpose;
use crate::service::{AuthorizedUser, Issuer, IssuerError};

/// How long a code may be redeemed, in seconds.
pub(crate) const CODE_TTL: i64 = 60;
/// What every code starts with.
const CODE_PREFIX: &str = "ac1.";

/// The user a code (or a consent) was made for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SignedInUser {
    pub(crate) id: String,
    pub(crate) method: AuthMethod,
    pub(crate) auth_time: i64,
    pub(crate) tools: Vec<String>,
    pub(crate) scope: DelegationScope,
}

impl From<AuthorizedUser> for SignedInUser {
    fn from(u: AuthorizedUser) -> Self {
        Self {
            id: u.user_id,
            method: u.method,
            auth_time: u.auth_time,
            tools: u.tools,
            scope: u.scope,
        }
    }
}

impl From<SignedInUser> for AuthorizedUser {
    fn from(u: SignedInUser) -> Self {
        Self {
            user_id: u.id,
            method: u.method,
            auth_time: u.auth_time,
            tools: u.tools,
            scope: u.scope,
        }
    }
}

/// What a code carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CodeGrant {
    /// Random, unique per code (base64url of 16 bytes).
    pub(crate) id: String,
    pub(crate) agent: String,
    pub(crate) redirect_uri: String,
    /// The PKCE S256 challenge.
    pub(crate) challenge: String,
    pub(crate) user: SignedInUser,
    pub(crate) tools: Vec<String>,
    pub(crate) audience: String,
    /// Expiry (Unix seconds).
    pub(crate) exp: i64,
}

/// What a redeemed code grants.
#[derive(Debug)]
pub(crate) struct RedeemedCode {
    /// The user the agent acts for.
    pub(crate) user: AuthorizedUser,
    /// The tools granted (requested ∩ the agent's ∩ the user's delegatable ones, as consented).
    pub(crate) tools: Vec<String>,
    /// The audience (the `resource` of the authorization request).
    pub(crate) audience: String,
    /// The code's id, unique per code, and its expiry: record it as used in the issuance.
    pub(crate) single_use: OpenedChallenge,
}

/// A PKCE `code_verifier` or S256 `code_challenge` (RFC 7636 §4.1–4.2): 43–128 characters of
/// `A-Z a-z 0-9 - . _ ~`.
pub(crate) fn pkce_value_ok(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The S256 challenge of `verifier`.
pub(crate) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A new random id (base64url of 16 bytes).
pub(crate) fn random_id() -> Result<String, IssuerError> {
    let mut bytes = [0u8; 16];
    aip_aat::ids::fill_random(&mut bytes).map_err(|_| IssuerError::internal(aip_aat::keys::KeyError::Random))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

impl Issuer {
    /// A code for `grant`.
    pub(crate) fn issue_code(&self, grant: &CodeGrant) -> Result<String, IssuerError> {
        Ok(format!(
            "{CODE_PREFIX}{}",
            self.sealer.seal(Purpose::Code, grant).map_err(IssuerError::internal)?
        ))
    }

    /// Checks `code` for `agent` (issued to it, unexpired, `redirect_uri` equal to the one it
    /// was issued for, PKCE S256 of `code_verifier` equal to the challenge).
    pub(crate) async fn redeem_code(
        &self,
        agent: &DirectoryAgent,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
        now: i64,
    ) -> Result<RedeemedCode, IssuerError> {
        let refused = |m: &str| IssuerError::token(TokenErrorCode::InvalidGrant, m);
        let grant: CodeGrant = code
            .strip_prefix(CODE_PREFIX)
            .and_then(|sealed| self.sealer.open(Purpose::Code, sealed))
            .ok_or_else(|| refused("the authorization code is not valid"))?;
        if grant.agent != agent.agent_id.as_str() {
            return Err(refused("the authorization code was not issued to this client"));
        }
        if now > grant.exp {
            return Err(refused("the authorization code has expired"));
        }
        if grant.redirect_uri != redirect_uri {
            return Err(refused(
                "redirect_uri differs from the one the authorization code was issued for",
            ));
        }
        if !pkce_value_ok(code_verifier) {
            return Err(refused(
                "code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~",
            ));
        }
        if !bool::from(s256(code_verifier).as_bytes().ct_eq(grant.challenge.as_bytes())) {
            return Err(refused("code_verifier does not match the code_challenge"));
        }
        Ok(RedeemedCode {
            user: grant.user.into(),
            tools: grant.tools,
            audience: grant.audience,
            single_use: OpenedChallenge {
                // The expiry leads, as in challenge ids, so recorded ids arrive in order.
                id: format!("{:016x}.code.{}", grant.exp, grant.id),
                expires_at: grant.exp,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aip_aat::aid::AgentStatus;
    use aip_aat::clock::FixedClock;
    use aip_aat::keys::{Algorithm, KeyPair};

    use super::*;
    use crate::config::IssuerSettings;
    use crate::test_support::{EmptyDirectory, issuer};

    const NOW: i64 = 1_800_000_000;
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn agent(n: u8) -> DirectoryAgent {
        DirectoryAgent {
            agent_id: format!("ag_550e8400-e29b-41d4-a716-4466554400{n:02}").parse().unwrap(),
            name: "helper".into(),
            status: AgentStatus::Active,
            public_key: KeyPair::generate(Algorithm::EdDSA).unwrap().public_key().clone(),
            capabilities: vec!["read_file".into()],
            autonomous: false,
            redirect_uris: vec!["https://app.example/cb".into()],
        }
    }

    fn grant(agent: &DirectoryAgent) -> CodeGrant {
        CodeGrant {
            id: random_id().unwrap(),
            agent: agent.agent_id.to_string(),
            redirect_uri: "https://app.example/cb".into(),
            challenge: s256(VERIFIER),
            user: SignedInUser {
                id: "alice".into(),
                method: AuthMethod::Oidc,
                auth_time: NOW - 5,
                tools: vec!["*".into()],
                scope: DelegationScope::Tools,
            },
            tools: vec!["read_file".into()],
            audience: "https://mcp.example/mcp".into(),
            exp: NOW + CODE_TTL,
        }
    }

    fn refusal(result: Result<RedeemedCode, IssuerError>) -> String {
        match result {
            Err(IssuerError::Token {
                code: TokenErrorCode::InvalidGrant,
                description,
                ..
            }) => description,
            other => panic!("expected invalid_grant, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn codes_redeem_only_for_their_agent_redirect_uri_and_verifier() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = issuer(
            dir.path(),
            IssuerSettings::new("https://aip.example"),
            Arc::new(EmptyDirectory::default()),
            Arc::new(FixedClock::new(NOW)),
        )
        .await;
        let (a, b) = (agent(1), agent(2));
        let issued = grant(&a);
        let code = issuer.issue_code(&issued).unwrap();
        assert!(code.starts_with(CODE_PREFIX));

        // The RFC 7636 appendix B pair.
        assert_eq!(s256(VERIFIER), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        let redeemed = issuer
            .redeem_code(&a, &code, "https://app.example/cb", VERIFIER, NOW)
            .await
            .unwrap();
        assert_eq!(redeemed.user.user_id, "alice");
        assert_eq!(redeemed.user.method, AuthMethod::Oidc);
        assert_eq!(redeemed.tools, vec!["read_file".to_owned()]);
        assert_eq!(redeemed.audience, "https://mcp.example/mcp");
        assert_eq!(redeemed.single_use.expires_at, NOW + CODE_TTL);
        assert!(redeemed.single_use.id.ends_with(&issued.id));
        // The same code always has the same single-use id; another code another.
        let again = issuer
            .redeem_code(&a, &code, "https://app.example/cb", VERIFIER, NOW + CODE_TTL)
            .await
            .unwrap();
        assert_eq!(again.single_use, redeemed.single_use);
        let other = issuer.issue_code(&grant(&a)).unwrap();
        let other = issuer
            .redeem_code(&a, &other, "https://app.example/cb", VERIFIER, NOW)
            .await
            .unwrap();
        assert_ne!(other.single_use.id, redeemed.single_use.id);

        // Another agent.
        let e = refusal(
            issuer
                .redeem_code(&b, &code, "https://app.example/cb", VERIFIER, NOW)
                .await,
        );
        assert!(e.contains("not issued to this client"), "{e}");
        // A wrong verifier, a malformed one.
        let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK";
        let e = refusal(
            issuer
                .redeem_code(&a, &code, "https://app.example/cb", wrong, NOW)
                .await,
        );
        assert!(e.contains("does not match"), "{e}");
        let e = refusal(
            issuer
                .redeem_code(&a, &code, "https://app.example/cb", "short", NOW)
                .await,
        );
        assert!(e.contains("43-128"), "{e}");
        // Another redirect URI, even a registered-looking variant.
        let e = refusal(
            issuer
                .redeem_code(&a, &code, "https://app.example/cb/", VERIFIER, NOW)
                .await,
        );
        assert!(e.contains("redirect_uri"), "{e}");
        // Expired.
        let e = refusal(
            issuer
                .redeem_code(&a, &code, "https://app.example/cb", VERIFIER, NOW + CODE_TTL + 1)
                .await,
        );
        assert!(e.contains("expired"), "{e}");
        // Altered, truncated, without its prefix, or sealed for another purpose.
        let mut altered = code.clone().into_bytes();
        let at = altered.len() - 5;
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        for bad in [
            altered.as_str(),
            &code[..code.len() - 1],
            &code[CODE_PREFIX.len()..],
            "",
            "ac1.",
        ] {
            let e = refusal(
                issuer
                    .redeem_code(&a, bad, "https://app.example/cb", VERIFIER, NOW)
                    .await,
            );
            assert_eq!(e, "the authorization code is not valid");
        }
        let consent = format!(
            "{CODE_PREFIX}{}",
            issuer.sealer.seal(Purpose::Consent, &issued).unwrap()
        );
        let e = refusal(
            issuer
                .redeem_code(&a, &consent, "https://app.example/cb", VERIFIER, NOW)
                .await,
        );
        assert_eq!(e, "the authorization code is not valid");
    }
}
