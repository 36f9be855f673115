//! AAT claims (spec 7.2–7.3), with `cnf.jkt` binding the token to the agent key.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{AgentId, Jti, KeyId};

/// The only `aat_version` this toolkit issues and accepts.
pub const AAT_VERSION: &str = "aip/v1alpha3";

/// The claims of an Agent Authentication Token.
///
/// Unknown claims are ignored when parsing (the raw verified payload stays available through
/// [`crate::token::VerifiedAat::payload_json`]). Times are integer Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AatClaims {
    /// Always [`AAT_VERSION`].
    pub aat_version: String,
    /// Token issuer identifier (a URI).
    pub iss: String,
    /// The agent: equal to `agent.id`.
    pub sub: AgentId,
    /// Intended recipients.
    pub aud: Audience,
    /// Issued at.
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Unique token id.
    pub jti: Jti,
    /// The agent the token was issued to.
    #[serde(deserialize_with = "crate::json::object")]
    pub agent: AgentClaims,
    /// The user on whose behalf the agent acts; absent for autonomous agents
    /// (`agent_attestation` grant).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::option_object"
    )]
    pub user_binding: Option<UserBinding>,
    /// What the agent may do.
    #[serde(default, deserialize_with = "crate::json::object")]
    pub capabilities: Capabilities,
    /// Session and policy context.
    #[serde(deserialize_with = "crate::json::object")]
    pub context: ContextClaims,
    /// Proof-of-possession confirmation (RFC 7800): the agent key's thumbprint.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::option_object"
    )]
    pub cnf: Option<Confirmation>,
}

impl AatClaims {
    /// The thumbprint of the key the token is bound to: `cnf.jkt`, or
    /// `agent.public_key_thumbprint` for tokens without `cnf` (they are the same in tokens
    /// this toolkit issues, and must be when both are present).
    pub fn confirmation_thumbprint(&self) -> &KeyId {
        self.cnf.as_ref().map_or(&self.agent.public_key_thumbprint, |c| &c.jkt)
    }

    /// Checks the relations between claims that types alone cannot express.
    pub(crate) fn check_consistency(&self) -> Result<(), &'static str> {
        if self.sub != self.agent.id {
            return Err("`sub` differs from `agent.id`");
        }
        if self
            .cnf
            .as_ref()
            .is_some_and(|c| c.jkt != self.agent.public_key_thumbprint)
        {
            return Err("`cnf.jkt` differs from `agent.public_key_thumbprint`");
        }
        if self.exp <= self.iat {
            return Err("`exp` is not after `iat`");
        }
        if self.nbf.is_some_and(|nbf| nbf > self.exp) {
            return Err("`nbf` is after `exp`");
        }
        Ok(())
    }
}

/// The `aud` claim: one or more recipients. Serialized as a string when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audience(Vec<String>);

impl Audience {
    /// A single recipient.
    pub fn one(aud: impl Into<String>) -> Self {
        Self(vec![aud.into()])
    }

    /// Several recipients; `None` when empty.
    pub fn many(auds: impl IntoIterator<Item = String>) -> Option<Self> {
        let auds: Vec<String> = auds.into_iter().collect();
        (!auds.is_empty()).then_some(Self(auds))
    }

    /// Whether `aud` is one of the recipients (exact, case-sensitive match).
    pub fn contains(&self, aud: &str) -> bool {
        self.0.iter().any(|a| a == aud)
    }

    /// The recipients.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl Serialize for Audience {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AudVisitor;
        impl<'de> Visitor<'de> for AudVisitor {
            type Value = Audience;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a non-empty array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Audience, E> {
                Ok(Audience::one(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Audience, A::Error> {
                let mut auds = Vec::new();
                while let Some(aud) = seq.next_element::<String>()? {
                    auds.push(aud);
                }
                Audience::many(auds).ok_or_else(|| de::Error::custom("empty audience"))
            }
        }
        deserializer.deserialize_any(AudVisitor)
    }
}

/// The `agent` claim (spec 7.3.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentClaims {
    /// Agent id from the registry.
    pub id: AgentId,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// RFC 7638 thumbprint of the agent's public key.
    pub public_key_thumbprint: KeyId,
    /// SHA-256 of the agent's identity document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aid_hash: Option<String>,
}

/// The `user_binding` claim (spec 7.3.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserBinding {
    /// User identifier (email, OIDC `sub`, or opaque id).
    pub user_id: String,
    /// How the user authenticated.
    pub auth_method: AuthMethod,
    /// When the user authenticated.
    pub auth_time: i64,
    /// What the user delegated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_scope: Option<DelegationScope>,
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* } $other:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this version does not know; kept verbatim.
            $other(String),
        }

        impl $name {
            /// The wire form.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::$other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)*
                    other => Self::$other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Ok(Self::from(&*s))
            }
        }
    };
}

string_enum!(
    /// `user_binding.auth_method` values (spec 7.3.3).
    AuthMethod {
        /// OpenID Connect.
        Oidc = "oidc",
        /// OAuth 2.0 authorization code flow.
        OAuth2 = "oauth2",
        /// An API key associated with the user.
        ApiKey = "api_key",
        /// Local system user (process owner).
        Local = "local",
        /// SAML assertion.
        Saml = "saml",
        /// Hardware or platform attestation.
        Attestation = "attestation",
    } Other
);

string_enum!(
    /// `user_binding.delegation_scope` values (spec 7.3.3). `custom:<scope>` values are kept
    /// in [`DelegationScope::Other`].
    DelegationScope {
        /// Everything the user could do (not recommended).
        Full = "full",
        /// The tools in `capabilities.tools`.
        Tools = "tools",
        /// Read operations only.
        ReadOnly = "read_only",
        /// This session only.
        Session = "session",
    } Other
);

/// The `capabilities` claim (spec 7.3.4). An absent list grants nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Tools the agent may invoke.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Advisory resource scopes (`repo:read`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_scopes: Vec<String>,
    /// Maximum tool calls in the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls_per_session: Option<u64>,
    /// MCP servers the token is valid for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_servers: Vec<String>,
}

impl Capabilities {
    /// Whether `tool` is granted (exact match).
    pub fn allows_tool(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t == tool)
    }
}

/// The `context` claim (spec 7.3.5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextClaims {
    /// Session id; preserved across refreshes.
    pub session_id: String,
    /// SHA-256 (hex) of the policy the issuer approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// The registry holding the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_id: Option<String>,
}

/// RFC 7800 confirmation claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// RFC 7638 thumbprint of the key that must sign each call's proof.
    pub jkt: KeyId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_forms() {
        let one: Audience = serde_json::from_str("\"proxy\"").unwrap();
        assert!(one.contains("proxy"));
        assert_eq!(serde_json::to_string(&one).unwrap(), "\"proxy\"");
        let many: Audience = serde_json::from_str("[\"a\",\"b\"]").unwrap();
        assert!(many.contains("b") && !many.contains("c"));
        assert_eq!(serde_json::to_string(&many).unwrap(), "[\"a\",\"b\"]");
        assert!(serde_json::from_str::<Audience>("[]").is_err());
        assert!(serde_json::from_str::<Audience>("7").is_err());
    }

    #[test]
    fn string_enums_keep_unknown_values() {
        let scope: DelegationScope = serde_json::from_str("\"read_only\"").unwrap();
        assert_eq!(scope, DelegationScope::ReadOnly);
        let custom: DelegationScope = serde_json::from_str("\"custom:billing\"").unwrap();
        assert_eq!(custom.as_str(), "custom:billing");
        assert_eq!(serde_json::to_string(&AuthMethod::ApiKey).unwrap(), "\"api_key\"");
    }
}
