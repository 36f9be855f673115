//! Who is calling: the AAT of `Authorization: DPoP` (with its `DPoP` proof, RFC 9449) or
//! `Authorization: Bearer` (only where the policy says `aat.require_proof: false`), checked
//! before the request is read.
//!
//! A client that must fetch a new token or make a new proof — none sent, malformed, badly
//! signed, expired, for another audience, a Bearer token where proofs are required, a proof
//! that is missing, replayed, for another method or URL, or signed by another key than the
//! token's — is answered 401 with the challenges of [`super::metadata`], and the refusal is
//! audited (`AAT_REJECTED`). Everything else about the token (revocation, the user
//! delegation, session limits, capabilities) is the relay's, answered inside the MCP session.

use std::sync::Arc;

use aip_aat::dpop::{DpopClaims, DpopRequest};
use aip_aat::token::VerifiedAat;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::audit::Record;
use crate::identity::{self, Presented};

use super::headers::single;
use super::metadata::{Fault, Scheme, challenges};
use super::state::Door;

/// The `DPoP` request header.
const DPOP: HeaderName = HeaderName::from_static("dpop");

/// The credentials a request carried, as far as the front door checked them.
#[derive(Debug)]
pub(super) struct Credentials {
    token: String,
    /// The token, verified (`None`: invalid, but AATs are not required, so the relay logs it
    /// and the call is anonymous).
    aat: Option<Arc<VerifiedAat>>,
    /// The verified claims of the request's DPoP proof.
    dpop: Option<DpopClaims>,
}

impl Credentials {
    /// What the relay checks with the call.
    pub(super) fn presented(&self) -> Presented<'_> {
        Presented {
            aat: Some(&self.token),
            proof: None,
            dpop: self.dpop.as_ref(),
            verified: self.aat.as_ref(),
        }
    }

    /// The agent the token was issued to, when it verified.
    pub(super) fn agent(&self) -> Option<&str> {
        self.aat.as_ref().map(|aat| aat.agent_id().as_str())
    }
}

/// Why credentials were refused: what the 401 says and the audit records.
struct Refusal<'a> {
    scheme: Option<Scheme>,
    fault: Fault,
    aat_error: Option<&'static str>,
    why: String,
    token: Option<&'a str>,
    aat: Option<&'a VerifiedAat>,
}

impl Door {
    /// The credentials of a request made with `method`: `Ok(None)` for an anonymous request
    /// the policy lets through, `Err` with the 401 to answer.
    pub(super) fn authenticate(
        &self,
        headers: &HeaderMap,
        method: &Method,
    ) -> Result<Option<Credentials>, Box<Response>> {
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        let settings = identity.settings();
        let refuse = |refusal: Refusal<'_>| Err(Box::new(self.unauthorized(refusal)));
        let authorization = match single(headers, &header::AUTHORIZATION) {
            Ok(Some(value)) => value,
            Ok(None) if settings.require => {
                return refuse(Refusal {
                    scheme: None,
                    fault: Fault::Missing,
                    aat_error: None,
                    why: "an AAT is required".into(),
                    token: None,
                    aat: None,
                });
            }
            Ok(None) => return Ok(None),
            Err(why) => {
                return refuse(Refusal {
                    scheme: None,
                    fault: Fault::Token,
                    aat_error: Some("malformed_aat"),
                    why: format!("Authorization: {why}"),
                    token: None,
                    aat: None,
                });
            }
        };
        let Some((scheme, token)) = parse_authorization(authorization) else {
            return refuse(Refusal {
                scheme: None,
                fault: Fault::Token,
                aat_error: Some("malformed_aat"),
                why: "Authorization must be `DPoP <AAT>` or `Bearer <AAT>`".into(),
                token: None,
                aat: None,
            });
        };
        if scheme == Scheme::Bearer && settings.require_proof {
            return refuse(Refusal {
                scheme: Some(scheme),
                fault: Fault::Token,
                aat_error: Some("proof_missing"),
                why: "this resource accepts only DPoP-bound AATs: send `Authorization: DPoP` and a DPoP proof".into(),
                token: Some(token),
                aat: None,
            });
        }
        let aat = match identity.verify_token(token) {
            Ok(aat) => aat,
            Err(e) if settings.require => {
                return refuse(Refusal {
                    scheme: Some(scheme),
                    fault: Fault::Token,
                    aat_error: Some(e.aat_error()),
                    why: e.to_string(),
                    token: Some(token),
                    aat: None,
                });
            }
            // Not required: the relay logs the failure and evaluates the call as anonymous.
            Err(_) => {
                return Ok(Some(Credentials {
                    token: token.to_owned(),
                    aat: None,
                    dpop: None,
                }));
            }
        };
        let dpop = match scheme {
            Scheme::Bearer => None,
            Scheme::Dpop => {
                let request = DpopRequest {
                    method: method.as_str(),
                    uri: &self.resource,
                    access_token: Some(token),
                };
                let verified = match single(headers, &DPOP) {
                    Ok(Some(proof)) => identity
                        .verify_dpop(&aat, proof, &request)
                        .map_err(|e| (e.aat_error(), e.to_string())),
                    Ok(None) => Err(("proof_missing", "a DPoP proof is required with a DPoP token".to_owned())),
                    Err(why) => Err(("proof_invalid", format!("DPoP: {why}"))),
                };
                match verified {
                    Ok(claims) => Some(claims),
                    Err((aat_error, why)) => {
                        return refuse(Refusal {
                            scheme: Some(scheme),
                            fault: Fault::Proof,
                            aat_error: Some(aat_error),
                            why,
                            token: Some(token),
                            aat: Some(&aat),
                        });
                    }
                }
            }
        };
        Ok(Some(Credentials {
            token: token.to_owned(),
            aat: Some(aat),
            dpop,
        }))
    }

    /// The 401 for `refusal`, audited.
    fn unauthorized(&self, refusal: Refusal<'_>) -> Response {
        let engine = self.policy.current();
        if refusal.fault != Fault::Missing {
            let mut record = Record::new("upstream", "BLOCK", engine.policy().mode().as_str(), true);
            record.event = Some("AAT_REJECTED".into());
            record.reason = Some(format!("HTTP 401: {}", refusal.why));
            record.aat_error = refusal.aat_error.map(str::to_owned);
            record.policy_hash = Some(engine.policy().hash().to_owned());
            match (refusal.aat, refusal.token) {
                (Some(aat), _) => identity::audit_fields(aat, &mut record),
                (None, Some(token)) => identity::unverified_audit_fields(token, &mut record),
                (None, None) => {}
            }
            self.audit.record(record);
        }
        tracing::info!("refused with 401: {}", refusal.why);
        let proofs_required = self.identity.as_ref().is_some_and(|i| i.settings().require_proof);
        // No credentials at all: no error code (RFC 6750 §3.1), in the challenge or the body.
        let code = match refusal.fault {
            Fault::Missing => "unauthorized",
            Fault::Token => "invalid_token",
            Fault::Proof => "invalid_dpop_proof",
        };
        let body = serde_json::json!({"error": code, "error_description": refusal.why});
        let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        for value in challenges(
            &self.metadata_url,
            &self.scopes(),
            proofs_required,
            refusal.scheme,
            refusal.fault,
            &refusal.why,
        ) {
            headers.append(header::WWW_AUTHENTICATE, value);
        }
        headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
        response
    }
}

/// `Bearer <token>` or `DPoP <token>` (schemes compare without case, RFC 9110 §11.1).
fn parse_authorization(value: &str) -> Option<(Scheme, &str)> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((Scheme::Bearer, token))
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Some((Scheme::Dpop, token))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_names_one_of_two_schemes_and_one_token() {
        assert_eq!(parse_authorization("Bearer abc"), Some((Scheme::Bearer, "abc")));
        assert_eq!(parse_authorization("dpop a.b.c"), Some((Scheme::Dpop, "a.b.c")));
        assert_eq!(parse_authorization("Basic abc"), None);
        assert_eq!(parse_authorization("Bearer"), None);
        assert_eq!(parse_authorization("Bearer a b"), None);
    }
}
