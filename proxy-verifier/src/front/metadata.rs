//! What clients discover about the front door (RFC 9728): its protected resource metadata, and
//! the `WWW-Authenticate` challenges of its 401 answers, which point there.
//!
//! The MCP SDKs read the first challenge's `resource_metadata` and `scope`, fetch the metadata,
//! compare its `resource` with the URL they connect to and its `authorization_servers` entry
//! with the authority's RFC 8414 `issuer`, both exactly. So the `Bearer` challenge always comes
//! first, and the issuer is the one the authority publishes, fetched rather than assumed.

use axum::http::HeaderValue;
use serde::Serialize;

/// The well-known path prefix of protected resource metadata (RFC 9728 §3).
pub(super) const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// Algorithms accepted for DPoP proofs.
pub(super) const DPOP_ALGS: &[&str] = &["EdDSA", "ES256"];

/// The protected resource metadata document (RFC 9728 §2).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ResourceMetadata<'a> {
    /// The canonical resource URI: the audience the front door's AATs must carry (RFC 8707).
    #[schema(value_type = String)]
    pub(super) resource: &'a str,
    /// The authority's issuer identifier (its RFC 8414 `issuer`).
    #[schema(value_type = Vec<String>)]
    pub(super) authorization_servers: Vec<&'a str>,
    /// The tools the policy allows, as scopes.
    #[schema(value_type = Vec<String>)]
    pub(super) scopes_supported: &'a [String],
    /// `["header"]`.
    #[schema(value_type = Vec<String>)]
    pub(super) bearer_methods_supported: [&'static str; 1],
    /// The policy's `metadata.name`.
    #[schema(value_type = String)]
    pub(super) resource_name: &'a str,
    /// `["EdDSA", "ES256"]`.
    #[schema(value_type = Vec<String>)]
    pub(super) dpop_signing_alg_values_supported: &'static [&'static str],
    /// Whether AATs must be DPoP-bound (`aat.require_proof`).
    pub(super) dpop_bound_access_tokens_required: bool,
}

/// The URL of the metadata of `resource`: the well-known prefix inserted between its
/// authority and its path (RFC 9728 §3.1).
pub(super) fn metadata_url(resource: &str) -> String {
    match reqwest::Url::parse(resource) {
        Ok(url) => {
            let path = url.path().trim_end_matches('/');
            format!("{}{WELL_KNOWN}{path}", url.origin().ascii_serialization())
        }
        Err(_) => format!("{resource}{WELL_KNOWN}"),
    }
}

/// What a 401 says about the credentials it refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// None were sent (RFC 6750 §3.1: no error code).
    Missing,
    /// The token must be replaced (`invalid_token`).
    Token,
    /// The DPoP proof is wrong (`invalid_dpop_proof`, RFC 9449 §7.1).
    Proof,
}

/// The scheme a client used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scheme {
    Bearer,
    Dpop,
}

/// The `WWW-Authenticate` values of a 401: a `Bearer` challenge naming the metadata and the
/// scopes, and a `DPoP` one when proofs are required or the client used DPoP. The error, if
/// any, is in the challenge of the scheme the client used.
pub(super) fn challenges(
    metadata: &str,
    scopes: &str,
    proofs_required: bool,
    used: Option<Scheme>,
    fault: Fault,
    description: &str,
) -> Vec<HeaderValue> {
    let error = match fault {
        Fault::Missing => String::new(),
        Fault::Token => format!(
            ", error=\"invalid_token\", error_description=\"{}\"",
            quoted(description)
        ),
        Fault::Proof => format!(
            ", error=\"invalid_dpop_proof\", error_description=\"{}\"",
            quoted(description)
        ),
    };
    let in_dpop = used == Some(Scheme::Dpop) || fault == Fault::Proof;
    let params = |scheme: String| {
        let mut value = format!("{scheme} resource_metadata=\"{}\"", quoted(metadata));
        if !scopes.is_empty() {
            value.push_str(&format!(", scope=\"{}\"", quoted(scopes)));
        }
        value
    };
    let mut bearer = params("Bearer".into());
    if !in_dpop {
        bearer.push_str(&error);
    }
    let mut values = vec![bearer];
    if proofs_required || in_dpop {
        let mut dpop = params(format!("DPoP algs=\"{}\",", DPOP_ALGS.join(" ")));
        if in_dpop {
            dpop.push_str(&error);
        }
        values.push(dpop);
    }
    values
        .into_iter()
        .filter_map(|v| HeaderValue::from_str(&v).ok())
        .collect()
}

/// `text` as the content of a quoted-string: quotes and backslashes escaped, controls and
/// non-ASCII dropped.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_url_inserts_the_well_known_prefix() {
        assert_eq!(
            metadata_url("http://127.0.0.1:8080/mcp"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("https://tools.example/"),
            "https://tools.example/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn the_bearer_challenge_comes_first_and_errors_go_to_the_scheme_used() {
        let m = "https://t.example/.well-known/oauth-protected-resource/mcp";
        let none = challenges(m, "echo read", false, None, Fault::Missing, "");
        assert_eq!(
            none,
            vec![HeaderValue::from_static(
                "Bearer resource_metadata=\"https://t.example/.well-known/oauth-protected-resource/mcp\", scope=\"echo read\""
            )]
        );
        let expired = challenges(m, "echo", true, Some(Scheme::Bearer), Fault::Token, "AAT \"expired\"");
        assert_eq!(expired.len(), 2);
        let bearer = expired[0].to_str().unwrap();
        assert!(bearer.starts_with("Bearer resource_metadata="), "{bearer}");
        assert!(bearer.ends_with("error=\"invalid_token\", error_description=\"AAT \\\"expired\\\"\""));
        assert!(!expired[1].to_str().unwrap().contains("error="));
        let proof = challenges(m, "", true, Some(Scheme::Dpop), Fault::Proof, "replayed");
        assert!(!proof[0].to_str().unwrap().contains("error="));
        assert!(proof[1].to_str().unwrap().starts_with("DPoP algs=\"EdDSA ES256\""));
        assert!(proof[1].to_str().unwrap().contains("error=\"invalid_dpop_proof\""));
    }
}
